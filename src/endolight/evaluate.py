"""Metrics over pairs for several methods -> per-image CSV and a Markdown summary table."""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from endolight.data import to_tensor
from endolight.methods import Method
from endolight.metrics import full_reference
from endolight.pairs import Pair

METRICS = ("psnr", "ssim", "delta_e", "loe")
HIGHER_BETTER = {"psnr": True, "ssim": True, "delta_e": False, "loe": False}
NOTE = ("PSNR (dB) and SSIM with data range 1; SSIM by kornia, 11x11 Gaussian window, "
        "padding='valid' (Wang et al. settings); ΔE2000 mean over pixels (scikit-image); "
        "LOE against the target's lightness order, images shrunk to 50 px on the short side.")


def evaluate(
    methods: dict[str, Method],
    pairs: Iterable[Pair],
    on_item: Callable[[str], None] | None = None,
) -> list[dict[str, float | str]]:
    """Run every method on every pair; one row per (method, image) with all metrics."""
    rows: list[dict[str, float | str]] = []
    for pair in pairs:
        target = to_tensor(pair.target)[None]
        for name, method in methods.items():
            out = to_tensor(method(pair.dim))[None]
            vals = full_reference(out, target)
            rows.append({"method": name, "organ": pair.organ, "image": pair.name,
                         **{k: float(v[0]) for k, v in vals.items()}})
        if on_item:
            on_item(pair.name)
    return rows


def summarize(rows: list[dict[str, float | str]]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean of each metric per organ and ``"all"``: ``{group: {method: {metric: mean}}}``."""
    acc: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    for r in rows:
        for group in ("all", str(r["organ"])):
            for m in METRICS:
                acc[group][str(r["method"])][m].append(float(r[m]))
    return {g: {meth: {m: float(np.mean(v)) for m, v in ms.items()} for meth, ms in d.items()}
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
    return "\n".join(lines) + "\n\n" + NOTE + "\n"


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


