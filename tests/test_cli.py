"""The command line on files, folders, globs and bad input."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from endolight.checkpoint import save_weights
from endolight.cli import app
from endolight.model import DeepUPE

runner = CliRunner()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "w.safetensors"
    save_weights(DeepUPE(), path)
    return path


@pytest.fixture
def frames(tmp_path, data_root):
    src = tmp_path / "in"
    src.mkdir()
    for p in sorted((data_root / "larynx" / "patient2" / "seq5").glob("*.png"))[:2]:
        shutil.copy(p, src / p.name)
    return src


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_enhance_folder_keeps_names_and_brightens(frames, tmp_path, weights):
    out = tmp_path / "out"
    before = {p.name: p.read_bytes() for p in frames.iterdir()}
    r = _run("enhance", frames, "-o", out, "--weights", weights)
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == sorted(before)
    for name, data in before.items():
        assert (frames / name).read_bytes() == data  # inputs untouched
        src = cv2.imread(str(frames / name))
        dst = cv2.imread(str(out / name))
        assert dst.shape == src.shape and dst.mean() > src.mean()


def test_enhance_writes_the_enhancers_output_and_has_no_post_filter(frames, tmp_path, weights):
    from endolight.enhancer import Enhancer

    first = sorted(frames.iterdir())[0]
    image = cv2.imread(str(first))[..., ::-1]
    assert _run("enhance", first, "-o", tmp_path / "d", "--weights", weights).exit_code == 0
    written = cv2.imread(str(tmp_path / "d" / first.name))[..., ::-1]
    assert np.array_equal(written, Enhancer(weights, device="cpu").enhance_array(image))
    # The old bilateral post-filter is gone: the model denoises (endolight.model.denoise).
    r = _run("enhance", first, "-o", tmp_path / "p", "--weights", weights, "--denoise", "0")
    assert r.exit_code == 2 and "No such option" in r.output
    assert not (tmp_path / "p").exists()


def test_enhance_single_file_and_glob(frames, tmp_path, weights):
    first = sorted(frames.iterdir())[0]
    assert _run("enhance", first, "-o", tmp_path / "o1", "--weights", weights).exit_code == 0
    assert (tmp_path / "o1" / first.name).is_file()
    assert _run("enhance", f"{frames}/*.png", "-o", tmp_path / "o2", "--weights", weights).exit_code == 0
    assert len(list((tmp_path / "o2").iterdir())) == 2


def test_refuses_to_overwrite_input(frames, weights):
    before = {p.name: p.read_bytes() for p in frames.iterdir()}
    r = _run("enhance", frames, "-o", frames, "--weights", weights)
    assert r.exit_code == 1
    assert "overwrite an input" in r.output
    assert {p.name: p.read_bytes() for p in frames.iterdir()} == before


def test_bad_inputs_each_one_line_and_batch_continues(frames, tmp_path, weights):
    bad = {
        "empty.png": b"",
        "text.png": b"this is not an image\n",
        "truncated.png": (frames / sorted(p.name for p in frames.iterdir())[0]).read_bytes()[:200],
    }
    for name, data in bad.items():
        (frames / name).write_bytes(data)
    cv2.imwrite(str(frames / "tiny.png"), np.zeros((1, 1, 3), np.uint8))
    cv2.imwrite(str(frames / "gray.png"), np.full((32, 32), 128, np.uint8))
    cv2.imwrite(str(frames / "rgba.png"), np.full((32, 32, 4), 128, np.uint8))
    cv2.imwrite(str(frames / "deep.png"), np.full((32, 32, 3), 30000, np.uint16))
    out = tmp_path / "out"
    r = _run("enhance", frames, "-o", out, "--weights", weights)
    assert r.exit_code == 1
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 7, r.output
    for key in ("empty", "not a readable", "too small", "grayscale", "alpha", "8-bit"):
        assert any(key in e for e in errors), (key, errors)
    assert "Traceback" not in r.output
    written = sorted(p.name for p in out.iterdir())
    assert len(written) == 2 and not any(n.endswith(".part") or n.startswith(".") for n in written)


def test_missing_source_and_weights_are_one_line_errors(tmp_path, frames, weights):
    r = _run("enhance", tmp_path / "nope", "-o", tmp_path / "o", "--weights", weights)
    assert r.exit_code == 2 and "no such file" in r.output
    (tmp_path / "empty").mkdir()
    r = _run("enhance", tmp_path / "empty", "-o", tmp_path / "o", "--weights", weights)
    assert r.exit_code == 2 and "folder has no images" in r.output
    r = _run("enhance", frames, "-o", tmp_path / "o", "--weights", tmp_path / "missing.safetensors")
    assert r.exit_code == 2 and "not found" in r.output


def test_synth_then_eval_table(tmp_path, frames, weights):
    pairs = tmp_path / "pairs"
    r = _run("synth", frames, "-o", pairs, "--seed", "3")
    assert r.exit_code == 0, r.output
    assert len(list((pairs / "dim").iterdir())) == 2 and (pairs / "manifest.csv").is_file()
    r = _run("eval", "--pairs", pairs, "-o", tmp_path / "ev", "--weights", weights)
    assert r.exit_code == 0, r.output
    for name in ("identity", "gamma", "clahe", "endolight"):
        assert f"| {name} |" in r.output
    assert "padding='valid'" in r.output
    assert (tmp_path / "ev" / "metrics.csv").read_text().count("\n") == 1 + 2 * 4
    r = _run("eval", "--pairs", pairs, "-o", tmp_path / "ev", "--methods", "endolight+sharpen")
    assert r.exit_code == 2 and "unknown endolight option 'sharpen'" in r.output


def test_eval_real_dim_frames(tmp_path):
    # No-reference measures on the real dim split; the hue option keeps the input's hue.
    import csv

    r = _run("eval", "--real-dim", "--methods", "identity,endolight+hue", "--max-side", "128",
             "-o", tmp_path / "rd")
    assert r.exit_code == 0, r.output
    assert "| endolight+hue |" in r.output and "hue shift vs input" in r.output
    rows = list(csv.DictReader((tmp_path / "rd" / "noref.csv").open()))
    ident = [x for x in rows if x["method"] == "identity"]
    ours = [x for x in rows if x["method"] == "endolight+hue"]
    assert len(ident) == len(ours) >= 20
    assert all(float(x["hue_shift_input"]) == 0.0 for x in ident)
    def mean(rows, key):
        return np.mean([float(x[key]) for x in rows])

    # Shipped weights, the 32 real dim frames at 128 px, CPU: deterministic. Measured (the
    # weights with the blurred filter guide) mean hue shift 0.46 (max 0.71) with the hue option,
    # 2.59 without it (plain endolight): the bound 1.5 sits 3x above the first and 1.7x under the
    # second, so an option that is ignored fails. Brightness measured 0.380 -> 0.608 (+0.228);
    # bound +0.1.
    assert mean(ours, "hue_shift_input") < 1.5
    assert mean(ours, "brightness") > mean(ident, "brightness") + 0.1
