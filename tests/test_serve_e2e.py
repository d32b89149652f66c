"""End to end: Debian's Chromium (headless, driven by Playwright) uses the viewer like a person.

It loads the page, uploads a real dim frame, drags the split, turns the strength knob, downloads
the results and checks the periphery came back brighter; a second test plays the real clip as
the live source. Screenshots go to $ENDOLIGHT_ARTIFACTS (default tests/artifacts/).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="pip install 'endolight[serve]'")
playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download)")
import uvicorn  # noqa: E402
from playwright.sync_api import expect  # noqa: E402

from endolight.checkpoint import default_weights_path  # noqa: E402
from endolight.enhancer import Enhancer  # noqa: E402
from endolight.fov import fov_mask  # noqa: E402
from endolight.io.images import read_image  # noqa: E402
from endolight.io.sources import open_source  # noqa: E402
from endolight.model import DeepUPE  # noqa: E402
from endolight.serve import ServeConfig, create_app  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
FRAME = "bronchoscopy/edinburgh/edinburgh_00.png"  # real, dim and unevenly lit, 480x480
CLIP = "laparoscopy/cholecystectomy-720p.mp4"
TIMEOUT_MS = 90_000  # the CPU is shared with training runs: enhancing may take seconds

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"{CHROMIUM} missing (apt-get install chromium)")


@pytest.fixture(scope="module")
def enhancer() -> Enhancer:
    if default_weights_path().is_file():
        return Enhancer(device="cpu")
    torch.manual_seed(0)
    return Enhancer(model=DeepUPE(), device="cpu")  # untrained: already brightens, R = 2I/(1+I)


@pytest.fixture(scope="module")
def artifacts() -> Path:
    folder = Path(os.environ.get("ENDOLIGHT_ARTIFACTS", Path(__file__).parent / "artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _serve(app) -> Iterator[str]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                           timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture
def url(enhancer: Enhancer) -> Iterator[str]:
    yield from _serve(create_app(enhancer))


def _periphery(image: np.ndarray, fov: np.ndarray) -> float:
    """Mean grey level of the outer part of the field of view (beyond 60 % of its radius)."""
    ys, xs = np.nonzero(fov)
    cy, cx = ys.mean(), xs.mean()
    yy, xx = np.mgrid[: fov.shape[0], : fov.shape[1]]
    r = np.hypot(yy - cy, xx - cx)
    ring = fov & (r > 0.6 * r[fov].max())
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(float)
    return float(grey[ring].mean())


def _download(page, tmp_path: Path, name: str) -> np.ndarray:
    with page.expect_download() as info:
        page.click("#download")
    path = tmp_path / name
    info.value.save_as(path)
    return read_image(path)


def test_upload_split_knob_download(browser, url: str, enhancer: Enhancer, data_root, artifacts: Path,
                                    tmp_path: Path) -> None:
    frame_path = data_root / FRAME
    original = read_image(frame_path)
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    page.set_default_timeout(TIMEOUT_MS)
    outside = []
    page.on("request", lambda r: None if r.url.startswith(url) or r.url.startswith("blob:")
            else outside.append(r.url))
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    page.goto(url)
    page.wait_for_selector("body[data-ready=true]")
    assert "device cpu" in page.inner_text("#device")

    page.set_input_files("#file", str(frame_path))
    page.wait_for_selector('#after[data-strength="1.00"]', state="attached")
    full = _download(page, tmp_path, "full.png")
    # The page shows exactly what the library makes.
    np.testing.assert_array_equal(full, enhancer.enhance_array(original, 1.0))
    assert page.inner_text("#size") == "480x480" and "ms" in page.inner_text("#latency")
    assert float(page.inner_text("#fps")) > 0

    # Drag the split from the middle to a quarter of the way across.
    box = page.locator("#stage").bounding_box()
    y = box["y"] + box["height"] / 2
    page.mouse.move(box["x"] + box["width"] / 2, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.25, y, steps=5)
    page.mouse.up()
    assert abs(int(page.input_value("#split")) - 25) <= 1
    assert "25%" in page.eval_on_selector("#after", "el => getComputedStyle(el).clipPath")

    # Turn the knob down to 0.50 with the keyboard, as a person would.
    page.focus("#strength")
    for _ in range(10):
        page.keyboard.press("ArrowLeft")
    assert page.inner_text("#strength-value") == "0.50"
    page.wait_for_selector('#after[data-strength="0.50"]', state="attached")
    half = _download(page, tmp_path, "half.png")
    np.testing.assert_array_equal(half, enhancer.enhance_array(original, 0.5))
    page.screenshot(path=str(artifacts / "viewer-image.png"))

    fov = fov_mask(original)
    before, at_half, at_full = (_periphery(x, fov) for x in (original, half, full))
    assert at_full > at_half > before + 5, (before, at_half, at_full)
    assert not errors and not outside, (errors, outside)
    page.close()


def test_clip_upload_and_download(browser, url: str, data_root, tmp_path: Path) -> None:
    from test_serve import make_clip

    clip = make_clip(data_root, tmp_path / "clip.mp4")
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]")
    page.set_input_files("#file", str(clip))
    page.wait_for_selector('#after-video[data-strength="1.00"]', state="attached")
    assert page.inner_text("#size") == "6 frames"
    with page.expect_download() as info:
        page.click("#download")
    assert info.value.suggested_filename == "clip-endolight-k1.00.mp4"
    out = tmp_path / "enhanced.mp4"
    info.value.save_as(out)
    source, result = open_source(clip), open_source(out)
    before, after = [f.image for f in source], [f.image for f in result]
    source.close()
    result.close()
    assert len(after) == 6 and np.mean(after) > np.mean(before) + 5
    page.close()


def test_unsupported_file_shows_the_servers_message(browser, url: str, tmp_path: Path) -> None:
    fake = tmp_path / "notes.png"  # the name says PNG, the content does not
    fake.write_text("meeting notes, not an image\n" * 20)
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]")
    page.set_input_files("#file", str(fake))
    page.wait_for_selector("#status.error")
    assert "unsupported content" in page.inner_text("#status")
    assert page.locator("#download").is_hidden()
    page.close()


def test_live_source_plays_in_the_page(browser, enhancer: Enhancer, data_root, artifacts: Path) -> None:
    app = create_app(enhancer, ServeConfig(source=str(data_root / CLIP), live_max_side=192))
    for base in _serve(app):
        page = browser.new_page(viewport={"width": 1000, "height": 600})
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(base)
        page.wait_for_selector("body[data-ready=true]")
        page.click("#live")
        # Stats arrive from the server; the canvases receive the two halves of the stream.
        expect(page.locator("#live-after")).to_have_attribute("width", "192", timeout=TIMEOUT_MS)
        expect(page.locator("#size")).to_have_text("192x108", timeout=TIMEOUT_MS)
        assert float(page.inner_text("#fps")) > 0
        means = page.evaluate("""() => ['live-before', 'live-after'].map(id => {
            const c = document.getElementById(id);
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i] + d[i + 1] + d[i + 2];
            return s / (d.length / 4) / 3; })""")
        assert means[1] > means[0] + 5 > 5, means
        page.screenshot(path=str(artifacts / "viewer-live.png"))
        page.click("#live")  # stop: the stream closes
        page.close()
