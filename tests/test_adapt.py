"""endolight adapt: usable-frame selection, the time split, resume, a real run, and bad input."""

from __future__ import annotations

import csv
import hashlib
import shutil
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from endolight.adapt import AdaptConfig, AdaptError, run_adapt, split
from endolight.checkpoint import load_model, read_metadata, save_weights
from endolight.cli import app
from endolight.frames import BLURRED, DUPLICATE, THINNED, TOO_DARK, select_frames
from endolight.io.sources import Frame
from endolight.model import DeepUPE, ModelConfig

runner = CliRunner()
SMALL = ModelConfig(lowres=32, grid_size=8, fc_width=32)  # a fast model: these tests check plumbing


def texture(seed: int, size: int = 128) -> np.ndarray:
    """A well-exposed (mean luma ~0.46), sharp (sharpness ~200), tissue-coloured random frame."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.random((size, size, 3)).astype(np.float32), (0, 0), 2.0)
    image = ((noise - noise.mean()) * 4 + 0.45) * np.array([1.0, 0.75, 0.7], np.float32) / 0.8
    return np.clip(image * 255, 0, 255).astype(np.uint8)


def dark(image: np.ndarray) -> np.ndarray:
    return (image * 0.2).astype(np.uint8)


def blurred(image: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), 3)


def _frames(images: list[np.ndarray]) -> list[Frame]:
    return [Frame(im, i, i, Fraction(1, 25)) for i, im in enumerate(images)]


def _folder(path: Path, images: list[np.ndarray]) -> Path:
    path.mkdir(parents=True)
    for i, im in enumerate(images):
        cv2.imwrite(str(path / f"f{i:03d}.png"), im[..., ::-1])
    return path


def _video(path: Path, images: list[np.ndarray]) -> Path:
    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = images[0].shape[1], images[0].shape[0], "yuv420p"
        for im in images:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(im, format="rgb24")))
        out.mux(stream.encode())
    return path


def _digest(root: Path) -> dict[str, str]:
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "small.safetensors"
    save_weights(DeepUPE(SMALL), path)
    return path


def test_selection_drops_dark_blurred_and_duplicates_with_reasons():
    good = [texture(s) for s in range(6)]
    images = [good[0], good[0].copy(), dark(good[1]), good[1], blurred(good[2]), good[2], good[3],
              np.clip(good[3].astype(int) + 1, 0, 255).astype(np.uint8), good[4], good[5]]
    sel = select_frames(_frames(images), max_side=96)
    assert [k.index for k in sel.kept] == [0, 3, 5, 6, 8, 9]
    assert sel.total == 10
    assert sel.dropped == {DUPLICATE: 2, TOO_DARK: 1, BLURRED: 1}
    assert sel.summary() == "kept 6 of 10 frames (dropped: 2 near-duplicate, 1 too dark, 1 blurred)"
    assert max(sel.kept[0].image.shape[:2]) == 96


def test_selection_drops_motion_blur_relative_to_the_footage_and_thins_evenly():
    images = [texture(s) for s in range(9)]
    images[4] = cv2.GaussianBlur(images[4], (0, 0), 2.0)  # sharpness 26: above the floor, < 1/4 of the rest
    sel = select_frames(_frames(images), max_side=128, max_frames=4)
    assert sel.dropped[BLURRED] == 1 and sel.dropped[THINNED] == 4
    assert [k.index for k in sel.kept] == [0, 2, 6, 8]  # 4 of the 8 sharp ones, evenly from first to last


def test_split_holds_out_the_last_fifth_and_never_nothing():
    assert split(60, 0.2) == 48
    assert split(5, 0.2) == 4
    assert split(2, 0.2) == 1


def test_resume_continues_after_an_interruption(tmp_path, small_weights):
    source = _folder(tmp_path / "scope", [texture(s) for s in range(8)])
    cfg = AdaptConfig(source=str(source), output=str(tmp_path / "out" / "mine.safetensors"),
                      weights=str(small_weights), epochs=3, batch_size=2, crop=64, max_side=96,
                      steps=9, device="cpu")

    def stop_after_first(log) -> None:
        if log.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_adapt(cfg, on_epoch=stop_after_first)
    assert not Path(cfg.output).exists()
    epochs_seen = []
    result = run_adapt(cfg, resume=True, on_epoch=lambda log: epochs_seen.append(log.epoch))
    assert epochs_seen == [2, 3]  # epoch 1 is not trained again
    with open(cfg.work / "train" / "log.csv") as fh:
        assert [int(r["epoch"]) for r in csv.DictReader(fh)] == [1, 2, 3]
    assert load_model(cfg.output).cfg == SMALL
    assert result.n_train == 6 and result.n_heldout == 2
    assert result.steps == result.plan["steps"] == 9  # 3 epochs of 3, epoch 1's counted once


def test_real_footage_adapts_and_the_weights_work_everywhere(tmp_path, data_root):
    """A short real run on 20 consecutive colonoscopy frames (tiny budget: 1 epoch)."""
    source = data_root / "colonoscopy-cvc"
    before = _digest(source)
    out = tmp_path / "cvc.safetensors"
    cfg = AdaptConfig(source=str(source), output=str(out), epochs=1, batch_size=2, crop=96,
                      max_side=128, steps=4, device="cpu")
    result = run_adapt(cfg)
    assert _digest(source) == before
    assert load_model(out).cfg == load_model(None).cfg  # the shipped shape, fine-tuned
    assert read_metadata(out)["frames"] == result.n_train
    report = (cfg.work / "report.md").read_text()
    assert "contact-sheet.png" in report and "| adapted |" in report
    sheet = cv2.imread(str(cfg.work / "contact-sheet.png"))
    assert sheet.shape[1] == 4 * 256
    assert set(result.means) == {"input", "shipped", "adapted"}
    # Restoring beats the dim input on the held-out frames: the comparison measures something.
    assert result.means["shipped"]["psnr"] > result.means["input"]["psnr"] + 1
    train_idx = [int(Path(n).stem) for n in _state(cfg)["frames"]["train"]]
    held_idx = [int(Path(n).stem) for n in _state(cfg)["frames"]["heldout"]]
    assert max(train_idx) < min(held_idx) and len(held_idx) == round(0.2 * (len(train_idx) + len(held_idx)))
    r = runner.invoke(app, ["enhance", str(source / sorted(p.name for p in source.iterdir())[0]),
                            "-o", str(tmp_path / "enh"), "--weights", str(out)])
    assert r.exit_code == 0, r.output


def _state(cfg: AdaptConfig) -> dict:
    import json

    return json.loads((cfg.work / "adapt.json").read_text())


def _fails(source: Path | str, output: Path, keys: str | tuple[str, ...], weights: Path) -> None:
    """One ``error:`` line naming the problem, non-zero exit, no weights, no work folder."""
    watched = Path(str(source).split("*")[0])  # a glob's folder
    inputs = _digest(watched)
    r = runner.invoke(app, ["adapt", str(source), "-o", str(output), "--weights", str(weights),
                            "--minutes", "0.1", "--device", "cpu"])
    assert r.exit_code != 0
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    keys = (keys,) if isinstance(keys, str) else keys
    assert len(errors) == 1 and all(k in errors[0] for k in keys), r.output
    assert "Traceback" not in r.output
    assert not output.exists() or str(output) in inputs  # no weights written; an input stays as it was
    assert not output.with_name(output.stem + ".adapt").exists()
    assert _digest(watched) == inputs


@pytest.mark.parametrize("kind, key", [("dark", "6 too dark"), ("blurred", "6 blurred"),
                                       ("few", "kept 3 of 3"), ("duplicates", "5 near-duplicate")])
def test_no_usable_frames(tmp_path, small_weights, kind, key):
    good = [texture(s) for s in range(6)]
    images = {"dark": [dark(g) for g in good], "blurred": [blurred(g) for g in good], "few": good[:3],
              "duplicates": [good[0]] * 6}[kind]
    source = _folder(tmp_path / "scope", images)
    _fails(source, tmp_path / "mine.safetensors", ("too few usable frames", key), small_weights)


def test_corrupt_and_truncated_videos(tmp_path, small_weights):
    noise = tmp_path / "noise.mp4"
    noise.write_bytes(np.random.default_rng(0).bytes(5000))
    _fails(noise, tmp_path / "a.safetensors", "corrupt, truncated or not a video", small_weights)
    full = _video(tmp_path / "full.mp4", [texture(s) for s in range(12)])
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size * 2 // 3])
    _fails(cut, tmp_path / "b.safetensors", "truncated", small_weights)


def test_output_that_is_or_lies_in_an_input(tmp_path, small_weights):
    video = _video(tmp_path / "clip.mp4", [texture(s) for s in range(6)])
    _fails(video, video, "is an input", small_weights)
    source = _folder(tmp_path / "scope", [texture(s) for s in range(6)])
    _fails(source, source / "mine.safetensors", "inside the input folder", small_weights)
    shutil.copy(video, source / "clip.mp4")  # a glob matching the output's name
    _fails(f"{source}/*", source / "clip.mp4", "is an input", small_weights)


def test_unwritable_output_folder(tmp_path, small_weights):
    source = _folder(tmp_path / "scope", [texture(s) for s in range(6)])
    _fails(source, Path("/proc/endolight/mine.safetensors"), "cannot write there", small_weights)
    (tmp_path / "file").write_text("x")
    _fails(source, tmp_path / "file" / "mine.safetensors", "is not a folder", small_weights)


def test_library_errors_before_any_work(tmp_path, small_weights):
    source = _folder(tmp_path / "scope", [texture(s) for s in range(6)])
    cfg = AdaptConfig(source=str(source), output=str(tmp_path / "o.safetensors"), weights=str(small_weights))
    with pytest.raises(ValueError, match="unknown protocol"):
        run_adapt(replace(cfg, protocol="nope"))
    with pytest.raises(AdaptError, match="not found"):
        run_adapt(replace(cfg, weights=str(tmp_path / "missing.safetensors")))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(AdaptError, match="not an adapt work folder"):
        run_adapt(replace(cfg, work_dir=str(tmp_path / "busy")))
    assert not (tmp_path / "o.safetensors").exists()
