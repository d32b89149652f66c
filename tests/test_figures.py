"""Evaluation pictures: the contact sheet's layout, the PSNR-vs-brightness numbers and plot, the
per-bin tables, and eval writing all of them on real pairs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from endolight.cli import app
from endolight.data import list_frames, load_frame
from endolight.degrade import DegradeConfig
from endolight.evaluate import binned_markdown
from endolight.figures import COLOURS, brightness_plot, contact_sheet, psnr_by_brightness
from endolight.pairs import Pair, make_pair, write_pairs


def _flat(value: tuple[int, int, int], h: int = 40, w: int = 60) -> np.ndarray:
    return np.broadcast_to(np.array(value, np.uint8), (h, w, 3)).copy()


def test_contact_sheet_puts_input_methods_target_in_labelled_rows() -> None:
    red, green, blue, dark, grey = (220, 0, 0), (0, 220, 0), (0, 0, 220), (20, 20, 20), (128, 128, 128)
    samples = {"larynx": (_flat(dark), {"a": _flat(red), "b": _flat(green)}, _flat(grey)),
               "sinus": (_flat(dark, 80, 60), {"a": _flat(blue, 80, 60), "b": _flat(red, 80, 60)},
                         _flat(grey, 80, 60))}
    sheet = contact_sheet(samples, cell=50)
    # Header 22 px, then a 50 px row per organ with 4 px gaps; 4 columns after the row labels.
    assert sheet.shape[0] == 22 + 2 * (50 + 4)
    row1, row2 = sheet[22 + 8], sheet[22 + 54 + 8]  # above the row labels' text
    colours = [tuple(int(c) for c in px) for px in row1]
    # Left to right in the first row: input (dark), a (red), b (green), target (grey).
    firsts = [colours.index(c) for c in (dark, red, green, grey)]
    assert firsts == sorted(firsts)
    # The second row has its own images: a is blue there (the whole frame, taller, resized).
    assert 220 in row2[:, 2] and 220 not in row1[:, 2]
    # Labels are drawn: dark text in the header and in the row-label column.
    assert (sheet[:22] < 100).any() and (sheet[22:, : firsts[0]] < 100).any()
    only_b = contact_sheet(samples, cell=50, methods=["b"])
    assert only_b.shape[1] < sheet.shape[1]


def _rows(brightness: list[float], psnrs: dict[str, list[float]]) -> list[dict]:
    return [{"method": m, "organ": "x", "image": f"i{i}", "input_brightness": b, "psnr": p[i], "ssim": 0.5,
             "peak": 100.0 * (i + 1)}
            for m, p in psnrs.items() for i, b in enumerate(brightness)]


def test_psnr_by_brightness_means_per_equal_count_bin() -> None:
    brightness = [0.05, 0.10, 0.20, 0.25, 0.40, 0.45]
    rows = _rows(brightness, {"flat": [20.0] * 6, "rising": [10, 12, 20, 22, 30, 32]})
    edges, curves = psnr_by_brightness(rows, n_bins=3)
    assert edges[0] == 0.05 and edges[-1] == 0.45 and len(edges) == 4
    assert curves["flat"] == [20.0, 20.0, 20.0]
    assert curves["rising"] == [11.0, 21.0, 31.0]
    plot = brightness_plot(rows, n_bins=3)
    assert plot.shape == (440, 760, 3)
    for colour in COLOURS[:2]:  # each method's line is drawn in its colour
        assert (np.abs(plot.astype(int) - colour).sum(-1) == 0).sum() > 50


def test_binned_tables_by_brightness_and_noise_level() -> None:
    rows = _rows([0.05, 0.10, 0.20, 0.25], {"m": [10.0, 14.0, 20.0, 22.0], "n": [30.0] * 4})
    table = binned_markdown(rows, "input_brightness", n_bins=2)
    lines = table.splitlines()
    assert lines[2] == "| input_brightness (n) | m | n |"
    assert lines[4].startswith("| 0.050–0.150 (2) | 12.00 / 0.500 | 30.00 / 0.500")
    assert lines[5].startswith("| 0.150–0.250 (2) | 21.00 / 0.500")
    noise = binned_markdown(rows, "peak", n_bins=2).splitlines()
    assert "noise level" in noise[0] and noise[4].startswith("| 100–250 (2) | 12.00")
    # Pairs without the degradation's parameters (e.g. from a folder) get no noise table.
    assert binned_markdown([{k: v for k, v in r.items() if k != "peak"} for r in rows], "peak") == ""


def test_eval_writes_pictures_and_bin_tables_on_real_pairs(data_root, tmp_path) -> None:
    refs = [r for r in list_frames("heldout", data_root) if r.index is None][::12][:4]
    pairs = []
    for i, ref in enumerate(refs):
        target = load_frame(ref, 128)
        dim, params = make_pair(target, 7 + i, DegradeConfig())
        pairs.append(Pair(ref.name, ref.organ, dim, target, params))
    write_pairs(iter(pairs), tmp_path / "pairs")
    out = tmp_path / "eval"
    res = CliRunner().invoke(app, ["eval", "--pairs", str(tmp_path / "pairs"), "--methods", "identity,gamma",
                                   "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert f"pictures: {out / 'contact_sheet.png'}" in res.output
    md = (out / "metrics.md").read_text()
    assert "by the dim input's mean brightness" in md
    sheet = cv2.imread(str(out / "contact_sheet.png"))
    organs = {p.organ for p in pairs}
    assert sheet.shape[0] == 22 + len(organs) * (160 + 4)  # one row per organ
    plot = cv2.imread(str(out / "psnr_vs_brightness.png"))
    assert plot is not None and plot.shape[:2] == (440, 760)


def test_noise_level_is_reported_only_where_the_protocol_adds_noise() -> None:
    from endolight.degrade import protocol_config
    from endolight.evaluate import evaluate

    rng = np.random.default_rng(3)
    target = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    rows = {}
    for name in ("endoscope", "paper"):
        dim, params = make_pair(target, 5, protocol_config(name))
        rows[name] = evaluate({"identity": lambda x: x}, [Pair("f", "o", dim, target, params)], tissue=False)
    assert rows["endoscope"][0]["peak"] > 0
    # The paper protocol draws a peak but adds no noise: no noise-level table for it.
    assert "peak" not in rows["paper"][0]


@pytest.mark.parametrize("n_bins", [1, 4])
def test_equal_brightness_makes_one_bin(n_bins: int) -> None:
    rows = _rows([0.2, 0.2, 0.2], {"m": [10.0, 11.0, 12.0]})
    edges, curves = psnr_by_brightness(rows, n_bins)
    assert list(edges) == [0.2, 0.2] and curves["m"] == [11.0]
    assert brightness_plot(rows, n_bins).shape == (440, 760, 3)
