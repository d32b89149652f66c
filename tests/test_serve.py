"""The viewer's HTTP API (FastAPI TestClient): enhance, upload checks, static page, live stream."""

from __future__ import annotations

import struct
import tempfile
import zlib

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="pip install 'endolight[serve]'")
from fastapi.testclient import TestClient  # noqa: E402

from endolight.checkpoint import default_weights_path  # noqa: E402
from endolight.enhancer import Enhancer  # noqa: E402
from endolight.io.sinks import VideoSink  # noqa: E402
from endolight.io.sources import open_source  # noqa: E402
from endolight.model import DeepUPE  # noqa: E402
from endolight.serve import ServeConfig, create_app  # noqa: E402
from endolight.serve.live import shrink  # noqa: E402

FRAME = "bronchoscopy/edinburgh/edinburgh_00.png"  # real, dim and unevenly lit, 480x480
CLIP = "laparoscopy/cholecystectomy-720p.mp4"


@pytest.fixture(scope="module")
def enhancer() -> Enhancer:
    """The shipped weights when present, else an untrained network (which already brightens:
    S = (1 + I) / 2 gives R = 2I / (1 + I))."""
    if default_weights_path().is_file():
        return Enhancer(device="cpu")
    torch.manual_seed(0)
    return Enhancer(model=DeepUPE(), device="cpu")


@pytest.fixture(scope="module")
def client(enhancer: Enhancer) -> TestClient:
    with TestClient(create_app(enhancer, ServeConfig(max_upload_mb=1.0))) as c:
        yield c


@pytest.fixture(scope="module")
def png_bytes(data_root) -> bytes:
    return (data_root / FRAME).read_bytes()


def _decode(body: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]


def test_page_and_assets_are_served_without_outside_resources(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert "http://" not in page.text and "https://" not in page.text
    for name, kind in (("viewer.js", "text/javascript"), ("viewer.css", "text/css")):
        res = client.get(f"/static/{name}")
        assert res.status_code == 200 and res.headers["content-type"].startswith(kind)
        assert "https://" not in res.text
    # Names are looked up in memory, never joined to a path.
    for bad in ("../app.py", "..%2Fapp.py", "%2e%2e/%2e%2e/cli.py", "index.htm"):
        assert client.get(f"/static/{bad}").status_code == 404


def test_enhance_returns_the_enhancers_frame(client: TestClient, enhancer: Enhancer,
                                             png_bytes: bytes) -> None:
    res = client.post("/api/enhance?strength=0.7", content=png_bytes,
                      headers={"content-type": "text/plain"})  # the declared type is ignored
    assert res.status_code == 200, res.text
    assert res.headers["content-type"] == "image/png" and float(res.headers["x-enhance-ms"]) > 0
    frame = _decode(png_bytes)
    assert res.headers["x-image-size"] == f"{frame.shape[1]}x{frame.shape[0]}"
    np.testing.assert_array_equal(_decode(res.content), enhancer.enhance_array(frame, 0.7))


def test_strength_zero_returns_the_input(client: TestClient, png_bytes: bytes) -> None:
    res = client.post("/api/enhance?strength=0", content=png_bytes)
    np.testing.assert_array_equal(_decode(res.content), _decode(png_bytes))


def test_other_image_formats_are_recognised_by_content(client: TestClient, png_bytes: bytes) -> None:
    frame = _decode(png_bytes)
    for ext in (".jpg", ".bmp", ".tiff", ".webp"):
        body = cv2.imencode(ext, frame[::4, ::4, ::-1])[1].tobytes()
        assert client.post("/api/enhance", content=body).status_code == 200, ext


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _fake_png(width: int, height: int) -> bytes:
    """A PNG claiming ``width x height`` RGB whose pixel data is a few kB of zeros: opens fine,
    never decodes (a decompression bomb when the size is huge, a truncated file otherwise)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(bytes(100_000))) + _png_chunk(b"IEND", b""))


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"", 400, "empty upload"),
        (b"just some text, not an image" * 10, 415, "unsupported content"),
        (b"%PDF-1.7\n" + bytes(500), 415, "unsupported content"),
        (b"GIF89a" + bytes(100), 415, "unsupported content"),
        (_fake_png(9000, 9000), 413, "exceeds the 64 MP limit"),  # a decompression bomb
        (_fake_png(640, 480), 422, "not a readable image"),
        (cv2.imencode(".png", np.full((32, 32), 90, np.uint8))[1].tobytes(), 422, "grayscale"),
        (cv2.imencode(".png", np.full((32, 32, 4), 90, np.uint8))[1].tobytes(), 422, "alpha"),
        (cv2.imencode(".png", np.full((4, 32, 3), 90, np.uint8))[1].tobytes(), 422, "too small"),
    ],
    ids=["empty", "text", "pdf", "gif", "bomb", "truncated", "gray", "alpha", "tiny"],
)
@pytest.mark.parametrize("as_form", [False, True], ids=["raw", "form"])
def test_bad_uploads_get_a_clear_4xx(client: TestClient, body: bytes, status: int, message: str,
                                     as_form: bool) -> None:
    # A form's file goes through the same checks as a raw body.
    if as_form:
        res = client.post("/api/enhance", files={"file": ("x.png", body, "image/png")})
    else:
        res = client.post("/api/enhance", content=body, headers={"content-type": "image/png"})
    assert res.status_code == status
    detail = res.json()["detail"]
    assert message in detail and "\n" not in detail


def test_too_large_uploads_are_refused(client: TestClient) -> None:
    big = b"\x89PNG\r\n\x1a\n" + bytes(1_200_000)  # over the 1 MB limit of this client
    res = client.post("/api/enhance", content=big)
    assert res.status_code == 413 and "1 MB limit" in res.json()["detail"]
    # Without a Content-Length (chunked), the body is cut off while it is read.
    res = client.post("/api/enhance", content=(big[i : i + 65536] for i in range(0, len(big), 65536)))
    assert res.status_code == 413


def test_form_uploads_are_enhanced_like_raw_bodies(client: TestClient, enhancer: Enhancer,
                                                   png_bytes: bytes) -> None:
    # What browsers' forms, curl -F and requests' files= send: any field name, file name and type.
    res = client.post("/api/enhance?strength=0.7", files={"image": ("scan.bin", png_bytes, "text/plain")},
                      data={"note": "a text field beside the file is ignored"})
    assert res.status_code == 200, res.text
    assert res.headers["content-type"] == "image/png"
    np.testing.assert_array_equal(_decode(res.content), enhancer.enhance_array(_decode(png_bytes), 0.7))


def test_form_upload_limits_and_malformed_forms(client: TestClient, png_bytes: bytes) -> None:
    big = b"\x89PNG\r\n\x1a\n" + bytes(1_020_000)  # over this client's 1 MB limit by 2 %
    res = client.post("/api/enhance", files={"file": ("big.png", big, "image/png")})
    assert res.status_code == 413 and "1 MB limit" in res.json()["detail"]
    text_only = b'--xyz\r\nContent-Disposition: form-data; name="note"\r\n\r\nhi\r\n--xyz--\r\n'
    res = client.post("/api/enhance", content=text_only,
                      headers={"content-type": "multipart/form-data; boundary=xyz"})
    assert res.status_code == 400 and "without a file" in res.json()["detail"]
    two = {"a": ("a.png", png_bytes, "image/png"), "b": ("b.png", png_bytes, "image/png")}
    res = client.post("/api/enhance", files=two)
    assert res.status_code == 400 and "malformed form" in res.json()["detail"]
    res = client.post("/api/enhance", content=b"no boundary here",
                      headers={"content-type": "multipart/form-data"})
    assert res.status_code == 400 and "\n" not in res.json()["detail"]


def test_bad_strength_is_one_line_422(client: TestClient, png_bytes: bytes) -> None:
    res = client.post("/api/enhance?strength=1.5", content=png_bytes)
    assert res.status_code == 422
    assert res.json()["detail"] == "strength: Input should be less than or equal to 1"


def test_no_live_source_is_404(client: TestClient) -> None:
    assert client.get("/api/info").json()["live"] is False
    res = client.get("/api/live/stats")
    assert res.status_code == 404 and "--source" in res.json()["detail"]


def test_live_stream_plays_a_video_through_the_enhancer(enhancer: Enhancer, data_root) -> None:
    cfg = ServeConfig(source=str(data_root / CLIP), live_max_side=160)
    with TestClient(create_app(enhancer, cfg)) as c:
        assert c.get("/api/info").json()["live"] is True
        assert c.put("/api/live/strength", json={"strength": 0.8}).json() == {"strength": 0.8}
        assert c.put("/api/live/strength", json={"strength": 2}).status_code == 422
        with c.stream("GET", "/api/live.mjpg?frames=2") as res:
            assert res.headers["content-type"].startswith("multipart/x-mixed-replace")
            body = b"".join(res.iter_bytes())
        stats = c.get("/api/live/stats").json()
    parts = [p for p in body.split(b"--endolightframe") if p.strip()]
    assert len(parts) == 2
    jpeg = parts[0].split(b"\r\n\r\n", 1)[1].rstrip(b"\r\n")
    frame = _decode(jpeg).astype(float)
    assert frame.shape == (90, 320, 3)  # 1280x720 shrunk to 160x90, before | after
    before, after = frame[:, :160], frame[:, 160:]
    assert after.mean() > before.mean() + 5
    assert stats["frames"] >= 2 and stats["fps"] > 0 and stats["latency_ms"] > 0 and stats["error"] is None
    assert (stats["width"], stats["height"], stats["strength"]) == (160, 90, 0.8)


def test_a_broken_live_source_reports_its_error(enhancer: Enhancer, tmp_path) -> None:
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"not a video at all" * 100)
    with TestClient(create_app(enhancer, ServeConfig(source=str(bad)))) as c:
        with c.stream("GET", "/api/live.mjpg") as res:
            assert b"".join(res.iter_bytes()) == b""  # the stream ends instead of hanging
        assert c.get("/api/live/stats").json()["error"]


def make_clip(data_root, path, frames: int = 6, side: int = 160):
    """The first ``frames`` frames of the real laparoscopy clip, shrunk, as an H.264 MP4."""
    source = open_source(data_root / CLIP)
    sink = None
    for frame, _ in zip(source, range(frames), strict=False):
        small = shrink(frame.image, side)
        sink = sink or VideoSink(path, small.shape[1], small.shape[0], source.info.fps, source.info.time_base)
        sink.write(frame, small)
    source.close()
    return sink.close()


def _decode_clip(body: bytes) -> list[np.ndarray]:
    import io

    import av

    with av.open(io.BytesIO(body)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def test_a_short_clip_comes_back_enhanced(client: TestClient, data_root, tmp_path, monkeypatch) -> None:
    clip = make_clip(data_root, tmp_path / "clip.mp4")
    body = clip.read_bytes()
    spool = tmp_path / "spool"  # where the server's temporary folders go during this test
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    res = client.post("/api/enhance?strength=0.8", content=body)
    assert res.status_code == 200, res.text
    assert res.headers["content-type"] == "video/mp4" and res.headers["x-frames"] == "6"
    before, after = _decode_clip(body), _decode_clip(res.content)
    assert len(after) == 6 and after[0].shape == before[0].shape == (90, 160, 3)
    assert np.mean(after) > np.mean(before) + 5
    assert not list(spool.iterdir())  # the upload's folder is gone once the reply is sent


def test_clip_limits_and_unsafe_containers(enhancer: Enhancer, data_root, tmp_path) -> None:
    body = make_clip(data_root, tmp_path / "clip.mp4", frames=13).read_bytes()  # 0.52 s at 25 fps
    with TestClient(create_app(enhancer, ServeConfig(max_clip_seconds=0.4))) as c:
        res = c.post("/api/enhance", content=body)
        assert res.status_code == 413 and "longer than" in res.json()["detail"]
        # A playlist would make FFmpeg open the files it names: refused by content.
        playlist = b"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile:///etc/hostname\n#EXT-X-ENDLIST\n"
        assert c.post("/api/enhance", content=playlist).status_code == 415
        res = c.post("/api/enhance", content=body[:3000])  # an MP4 cut short
        detail = res.json()["detail"]
        assert res.status_code == 422 and "upload" in detail and "/tmp" not in detail
