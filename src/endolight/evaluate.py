"""Metrics over pairs for several methods -> per-image CSV and a Markdown summary table."""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from endolight.data import FrameRef
from endolight.degrade import noise_peak
from endolight.device import torch_threads
from endolight.figures import bin_index, brightness_bins, brightness_plot, contact_sheet
from endolight.fov import detect_fov, fov_mask
from endolight.io.atomic import write_csv, write_text
from endolight.io.images import write_image
from endolight.io.tensors import to_tensor
from endolight.methods import Method
from endolight.metrics import mean_brightness, no_reference, reference_metrics
from endolight.pairs import Pair

METRICS = ("psnr", "ssim", "delta_e", "loe")
HIGHER_BETTER = {"psnr": True, "ssim": True, "delta_e": False, "loe": False}
NOTE = ("PSNR (dB) and SSIM with data range 1; SSIM with an 11x11 Gaussian window (σ 1.5), "
        "padding='valid' (Wang et al. settings); ΔE2000 mean over pixels (CIEDE2000 as in scikit-image); "
        "LOE against the target's lightness order, images shrunk to 50 px on the short side.")
# Inside the field of view (endolight.metrics.reference_metrics); *_gt: the target's own values.
FOV = "_fov"  # the suffix of the field-of-view measures
TISSUE = ("psnr_fov", "ssim_fov", "delta_e_fov", "hue_fov", "uniformity", "noise")
TISSUE_GT = ("uniformity_gt", "noise_gt")
TISSUE_HIGHER = {"psnr_fov": True, "ssim_fov": True, "delta_e_fov": False, "hue_fov": False}
TISSUE_NOTE = ("Inside the field of view, detected on the target (endolight.fov.detect_fov). Hue: mean "
               "|Δh| (CIELAB hue angle, degrees) vs the target where both chromas are ≥ 5. Uniformity: "
               "periphery / centre mean luma (1 = even light). Noise: Immerkær σ of the luma "
               "(8-bit levels) in flat dark patches (darkest quarter of the dim input where the "
               "target is flat).")

# The dim input, each method's result and the target, of one frame per organ (uint8 RGB).
Sample = tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]
# Rows of the per-bin tables: the binned per-image quantity and how its bins are described.
BINNED = {
    "input_brightness": ("PSNR / SSIM by the dim input's mean brightness (luma in [0, 1], whole "
                         "frame; bins of equal frame counts):", "{:.3f}"),
    "peak": ("PSNR / SSIM by noise level: the degradation's `peak` (photo-electrons at white; fewer "
             "is noisier; bins of equal frame counts):", "{:.0f}"),
}
PICTURES = ("contact_sheet.png", "psnr_vs_brightness.png")

# No-reference measures on real dim frames (endolight.metrics.no_reference), with their formats.
NOREF_FMT = {"brightness": "{:.3f}", "uniformity": "{:.3f}", "loe_input": "{:.1f}", "lifted_noise": "{:.2f}",
             "colourfulness": "{:.1f}", "entropy": "{:.2f}", "hue_shift_input": "{:.2f}"}
NOREF = tuple(NOREF_FMT)
NOREF_NOTE = (
    "Means over the real dim frames, inside the field of view (`endolight.fov.fov_mask` of the "
    "input). brightness: mean luma in [0, 1]; uniformity: mean luma of the periphery (radius "
    "> 0.7 of the ellipse inscribed in the field of view) over the centre (< 0.35), 1 = even; "
    "LOE against the input's lightness order (Wang et al. 2013, flipped pairs per pixel); noise: "
    "Immerkær σ of the output luma in the darkest quarter of the input (8-bit levels: lifting "
    "dark regions amplifies noise); colourfulness: Hasler & Süsstrunk; entropy of the luma "
    "histogram; hue shift: mean CIELAB hue-angle difference from the input where both have "
    "chroma >= 10 (brightening should not recolour). None of these is \"higher is better\" "
    "on its own: they show how bright, even, noisy and colourful each method leaves real dim frames.")


def evaluate(
    methods: dict[str, Method],
    pairs: Iterable[Pair],
    on_item: Callable[[str], None] | None = None,
    tissue: bool = True,
    samples: dict[str, Sample] | None = None,
    workers: int = 2,
) -> list[dict[str, float | str]]:
    """Run every method on every pair; one row per (method, image) with all metrics.

    Each row also carries the dim input's mean brightness (``input_brightness``, for the
    per-brightness tables) and the degradation's ``peak`` (photo-electrons at white: the noise
    level) where the pair carries it. With ``tissue``, also the field-of-view metrics (``TISSUE``)
    and the target's own uniformity and noise in the same patches (``TISSUE_GT``), the
    reference for those two. All methods' results for one frame are scored as one batch.
    ``samples``, when given, receives the first pair of each organ with every method's result
    (for :func:`endolight.figures.contact_sheet`).

    The methods run one pair at a time on the calling thread; the scoring (most of the time)
    runs on ``workers`` threads, a pair each, so both cores are busy. Rows come in pair order.
    """
    rows: list[dict[str, float | str]] = []
    pending: deque[tuple[str, Future[list[dict[str, float | str]]]]] = deque()

    def collect(n_left: int) -> None:
        while len(pending) > n_left:
            name, future = pending.popleft()
            rows.extend(future.result())
            if on_item:
                on_item(name)

    # One PyTorch thread per operator: the workers and this thread already keep the cores busy
    # (measured on the held-out split, 640 px: 22.3-23.0 s instead of 25.3-26.4 s).
    with ThreadPoolExecutor(workers) as pool, torch_threads(1 if workers > 1 else None):
        for pair in pairs:
            results = {name: method(pair.dim) for name, method in methods.items()}
            if samples is not None and pair.organ not in samples:
                samples[pair.organ] = (pair.dim, results, pair.target)
            pending.append((pair.name, pool.submit(_score, pair, results, tissue)))
            collect(workers)
        collect(0)
    return rows


def _score(pair: Pair, results: dict[str, np.ndarray], tissue: bool) -> list[dict[str, float | str]]:
    """One row per method of one pair: :func:`endolight.metrics.reference_metrics` and extras."""
    target, dim = to_tensor(pair.target)[None], to_tensor(pair.dim)[None]
    extra: dict[str, float] = {"input_brightness": float(mean_brightness(dim)[0])}
    if (peak := noise_peak(pair.params)) is not None:
        extra["peak"] = peak
    fov = torch.from_numpy(detect_fov(pair.target))[None, None] if tissue else None
    vals = reference_metrics(torch.stack([to_tensor(r) for r in results.values()]), target, dim, fov)
    return [{"method": name, "organ": pair.organ, "image": pair.name,
             **{k: float(v[i]) for k, v in vals.items()}, **extra} for i, name in enumerate(results)]


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
    lines += _organ_table(summary, counts, "PSNR / SSIM / ΔE2000 per organ (held-out frames):")
    lines += ["", NOTE]
    if all(m in v for v in overall.values() for m in TISSUE):
        lines += ["", *_tissue_table(overall), "", TISSUE_NOTE]
        lines += _organ_table(summary, counts, "PSNR / SSIM / ΔE2000 per organ inside the field of view "
                              "(a frame's border, outside it, is half of some scopes' frames):", FOV)
    return "\n".join(lines) + "\n"


def _organ_table(summary: dict[str, dict[str, dict[str, float]]], counts: dict[str, int], title: str,
                 suffix: str = "") -> list[str]:
    """The per-organ table's lines (:func:`organ_cell` of each method), none for a single organ."""
    organs = sorted(g for g in summary if g != "all")
    if len(organs) < 2:
        return []
    methods = list(summary["all"])
    lines = ["", title, "", "| organ (n) | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for g in organs:
        cells = [organ_cell(summary[g][m], suffix) for m in methods]
        lines.append(f"| {g} ({counts.get(g, 0)}) | " + " | ".join(cells) + " |")
    return lines


def organ_cell(means: dict[str, float], suffix: str = "") -> str:
    """One method's ``PSNR / SSIM / ΔE2000`` on one organ, as the per-organ tables print it
    (``suffix`` :data:`FOV`: the field-of-view measures)."""
    return f"{means['psnr' + suffix]:.2f} / {means['ssim' + suffix]:.3f} / {means['delta_e' + suffix]:.2f}"


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


def binned_markdown(rows: list[dict[str, float | str]], key: str, n_bins: int = 4) -> str:
    """PSNR / SSIM of each method per bin of a per-image quantity (``input_brightness`` or
    ``peak``, see ``BINNED``); empty when the rows do not carry it."""
    if not rows or any(key not in r for r in rows):
        return ""
    title, fmt = BINNED[key]
    edges = brightness_bins([float(r[key]) for r in rows], n_bins)
    methods = list(dict.fromkeys(str(r["method"]) for r in rows))
    acc: dict[tuple[int, str], list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        acc[bin_index(float(r[key]), edges), str(r["method"])].append((float(r["psnr"]), float(r["ssim"])))
    lines = [title, "", f"| {key} (n) | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for b in range(len(edges) - 1):
        n = len(acc[b, methods[0]])
        if not n:
            continue
        cells = [f"{np.mean([v[0] for v in acc[b, m]]):.2f} / {np.mean([v[1] for v in acc[b, m]]):.3f}"
                 for m in methods]
        label = f"{fmt.format(edges[b])}–{fmt.format(edges[b + 1])} ({n})"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(rows: list[dict[str, float | str]], out_dir: Path,
                 samples: dict[str, Sample] | None = None) -> str:
    """Write ``metrics.csv`` (per image), ``metrics.md`` (summary, and PSNR / SSIM per input
    brightness and noise level), ``psnr_vs_brightness.png`` and, from ``samples``,
    ``contact_sheet.png``; returns the Markdown."""
    write_csv(out_dir / "metrics.csv", rows)
    counts: dict[str, int] = defaultdict(int)
    for r in rows:
        if r["method"] == rows[0]["method"]:
            counts[str(r["organ"])] += 1
    md = markdown_table(summarize(rows), counts)
    for key in BINNED:
        table = binned_markdown(rows, key)
        md += f"\n{table}" if table else ""
    if all("input_brightness" in r for r in rows):
        write_image(out_dir / PICTURES[1], brightness_plot(rows))
    if samples:
        write_image(out_dir / PICTURES[0], contact_sheet(samples))
    write_text(out_dir / "metrics.md", md)
    return md


def evaluate_no_reference(
    methods: dict[str, Method],
    frames: list[tuple[FrameRef, np.ndarray]],
    on_item: Callable[[], None] | None = None,
) -> list[dict[str, float | str]]:
    """No-reference measures of every method on real dim frames (inside the field of view)."""
    rows: list[dict[str, float | str]] = []
    for ref, frame in frames:
        image = to_tensor(frame)[None]
        mask = torch.from_numpy(fov_mask(frame))[None, None]
        for name, method in methods.items():
            vals = no_reference(to_tensor(method(frame))[None], image, mask)
            rows.append({"method": name, "set": ref.organ, "image": ref.name,
                         **{k: float(v[0]) for k, v in vals.items()}})
        if on_item:
            on_item()
    return rows


def noref_summary(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Means of :func:`evaluate_no_reference` rows: ``{"all" or set: {method: {measure: mean}}}``."""
    acc: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list)))
    for r in rows:
        for g in ("all", r["set"]):
            for k in NOREF:
                acc[g][r["method"]][k].append(float(r[k]))
    return {g: {n: {k: float(np.mean(v)) for k, v in d.items()} for n, d in gd.items()}
            for g, gd in acc.items()}


def noref_markdown(summary: dict[str, dict[str, dict[str, float]]], names: list[str]) -> str:
    """The overall row of each method in ``names`` as a Markdown table."""
    lines = ["| method | brightness | uniformity (periphery / centre) | LOE vs input ↓ | "
             "noise in lifted regions (8-bit σ) ↓ | colourfulness | entropy (bits) | "
             "hue shift vs input (°) ↓ |",
             "|---|---|---|---|---|---|---|---|"]
    for n in names:
        cells = (NOREF_FMT[k].format(summary["all"][n][k]) for k in NOREF)
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_noref_report(rows: list[dict[str, Any]], out_dir: Path) -> str:
    """Write ``noref.csv`` (per image) and ``noref.md`` (means) of :func:`evaluate_no_reference`
    rows; returns the Markdown."""
    write_csv(out_dir / "noref.csv", rows)
    names = list(dict.fromkeys(str(r["method"]) for r in rows))
    md = noref_markdown(noref_summary(rows), names) + "\n" + NOREF_NOTE + "\n"
    write_text(out_dir / "noref.md", md)
    return md
