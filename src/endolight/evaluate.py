"""Metrics over pairs for several methods -> per-image CSV and a Markdown summary table."""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch

from endolight.data import to_tensor
from endolight.fov import detect_fov
from endolight.methods import Method
from endolight.metrics import (
    brightness_uniformity,
    flat_dark_mask,
    full_reference,
    noise_sigma,
    tissue_metrics,
)
from endolight.pairs import Pair

METRICS = ("psnr", "ssim", "delta_e", "loe")
HIGHER_BETTER = {"psnr": True, "ssim": True, "delta_e": False, "loe": False}
NOTE = ("PSNR (dB) and SSIM with data range 1; SSIM by kornia, 11x11 Gaussian window, "
        "padding='valid' (Wang et al. settings); ΔE2000 mean over pixels (scikit-image); "
        "LOE against the target's lightness order, images shrunk to 50 px on the short side.")
# Inside the field of view (endolight.metrics.tissue_metrics); *_gt: the target's own values.
TISSUE = ("psnr_fov", "ssim_fov", "delta_e_fov", "hue_fov", "uniformity", "noise")
TISSUE_GT = ("uniformity_gt", "noise_gt")
TISSUE_HIGHER = {"psnr_fov": True, "ssim_fov": True, "delta_e_fov": False, "hue_fov": False}
TISSUE_NOTE = ("Inside the field of view, detected on the target (endolight.fov.detect_fov). Hue: mean "
               "|Δh| (CIELAB hue angle, degrees) vs the target where both chromas are ≥ 5. Uniformity: "
               "periphery / centre mean luma (1 = even light). Noise: Immerkær σ of the luma "
               "(8-bit levels) in flat dark patches (darkest quarter of the dim input where the "
               "target is flat).")


def evaluate(
    methods: dict[str, Method],
    pairs: Iterable[Pair],
    on_item: Callable[[str], None] | None = None,
    tissue: bool = True,
) -> list[dict[str, float | str]]:
    """Run every method on every pair; one row per (method, image) with all metrics.

    With ``tissue``, also the field-of-view metrics (``TISSUE``) and the target's own
    uniformity and noise in the same patches (``TISSUE_GT``), the reference for those two.
    """
    rows: list[dict[str, float | str]] = []
    for pair in pairs:
        target = to_tensor(pair.target)[None]
        extra: dict[str, float] = {}
        if tissue:
            dim = to_tensor(pair.dim)[None]
            fov = torch.from_numpy(detect_fov(pair.target))[None, None]
            extra = {"uniformity_gt": float(brightness_uniformity(target, fov)[0]),
                     "noise_gt": float(noise_sigma(target, flat_dark_mask(dim, target, fov))[0])}
        for name, method in methods.items():
            out = to_tensor(method(pair.dim))[None]
            vals = full_reference(out, target)
            if tissue:
                vals |= tissue_metrics(out, target, dim, fov)
            rows.append({"method": name, "organ": pair.organ, "image": pair.name,
                         **{k: float(v[0]) for k, v in vals.items()}, **extra})
        if on_item:
            on_item(pair.name)
    return rows


def summarize(rows: list[dict[str, float | str]]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean of each metric per organ and ``"all"``: ``{group: {method: {metric: mean}}}``."""
    acc: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    for r in rows:
        for group in ("all", str(r["organ"])):
            for m in (*METRICS, *TISSUE, *TISSUE_GT):
                if m in r:
                    acc[group][str(r["method"])][m].append(float(r[m]))
    # nanmean: the hue shift is undefined (NaN) on a frame without chroma.
    return {g: {meth: {m: float(np.nanmean(v)) for m, v in ms.items()} for meth, ms in d.items()}
            for g, d in acc.items()}


def markdown_table(summary: dict[str, dict[str, dict[str, float]]], counts: dict[str, int]) -> str:
    """Overall table (best per column in bold) followed by PSNR/SSIM per organ."""
    overall = summary["all"]
    lines = ["| method | PSNR ↑ | SSIM ↑ | ΔE2000 ↓ | LOE ↓ |", "|---|---|---|---|---|"]
    best = {m: (max if HIGHER_BETTER[m] else min)(v[m] for v in overall.values()) for m in METRICS}
    fmt = {"psnr": "{:.2f}", "ssim": "{:.4f}", "delta_e": "{:.2f}", "loe": "{:.1f}"}
    for meth, vals in overall.items():
        cells = []
        for m in METRICS:
            s = fmt[m].format(vals[m])
            cells.append(f"**{s}**" if vals[m] == best[m] else s)
        lines.append(f"| {meth} | " + " | ".join(cells) + " |")
    organs = sorted(g for g in summary if g != "all")
    if len(organs) > 1:
        methods = list(overall)
        lines += ["", "PSNR / SSIM per organ (held-out frames):", "",
                  "| organ (n) | " + " | ".join(methods) + " |",
                  "|---|" + "---|" * len(methods)]
        for g in organs:
            cells = [f"{summary[g][m]['psnr']:.2f} / {summary[g][m]['ssim']:.3f}" for m in methods]
            lines.append(f"| {g} ({counts.get(g, 0)}) | " + " | ".join(cells) + " |")
    lines += ["", NOTE]
    if all(m in v for v in overall.values() for m in TISSUE):
        lines += ["", *_tissue_table(overall), "", TISSUE_NOTE]
    return "\n".join(lines) + "\n"


def _tissue_table(overall: dict[str, dict[str, float]]) -> list[str]:
    """The field-of-view table (best of the full-reference columns in bold)."""
    lines = ["| method | PSNR FOV ↑ | SSIM FOV ↑ | ΔE2000 FOV ↓ | hue shift (°) ↓ | uniformity | noise |",
             "|---|---|---|---|---|---|---|"]
    best = {m: (max if hi else min)(v[m] for v in overall.values()) for m, hi in TISSUE_HIGHER.items()}
    fmt = {"psnr_fov": "{:.2f}", "ssim_fov": "{:.4f}", "delta_e_fov": "{:.2f}", "hue_fov": "{:.2f}",
           "uniformity": "{:.3f}", "noise": "{:.2f}"}
    for meth, vals in overall.items():
        cells = []
        for m in TISSUE:
            c = fmt[m].format(vals[m])
            cells.append(f"**{c}**" if m in best and vals[m] == best[m] else c)
        lines.append(f"| {meth} | " + " | ".join(cells) + " |")
    gt = next(iter(overall.values()))
    if all(m in gt for m in TISSUE_GT):
        lines.append(f"| *target (ground truth)* | | | | | {gt['uniformity_gt']:.3f} | "
                     f"{gt['noise_gt']:.2f} |")
    return lines


def write_report(rows: list[dict[str, float | str]], out_dir: Path) -> str:
    """Write ``metrics.csv`` (per image) and ``metrics.md`` (summary); returns the Markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "metrics.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    counts: dict[str, int] = defaultdict(int)
    for r in rows:
        if r["method"] == rows[0]["method"]:
            counts[str(r["organ"])] += 1
    md = markdown_table(summarize(rows), counts)
    (out_dir / "metrics.md").write_text(md)
    return md


