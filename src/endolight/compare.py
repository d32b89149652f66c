"""The paper's comparison, re-run on the real frames: Table 1, the Figure-3 loss ablation, the
Figure-4 side-by-side, and no-reference measures on real dim frames.

Every learned method (the comparators and a retrain of our own model) is trained here under one
:class:`~endolight.methods.learned.Budget` on the same on-the-fly pairs, cached under
``runs_dir`` so a re-run (or a resumed one) only trains what is missing; every row of every
table is the same ``Method`` call on the same frames, scored by ``endolight.metrics``.
The library never prints: progress goes to ``on_progress(task, done, total)``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, is_dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from safetensors.torch import load_file

from endolight.checkpoint import SHIPPED_WEIGHTS, default_weights_path, read_metadata
from endolight.data import FrameRef, PairDataset, list_frames, load_frame
from endolight.degrade import DEGRADE_VERSION, DegradeConfig, protocol_config
from endolight.device import resolve_device
from endolight.enhancer import Enhancer
from endolight.evaluate import (
    BINNED,
    FOV,
    HIGHER_BETTER,
    METRICS,
    NOREF_FMT,
    NOREF_NOTE,
    NOTE,
    binned_markdown,
    evaluate,
    evaluate_no_reference,
    noref_markdown,
    noref_summary,
    organ_cell,
    summarize,
)
from endolight.figures import brightness_plot, contact_sheet, figure_grid, loss_curves
from endolight.io.atomic import read_csv, write_csv, write_text
from endolight.io.images import expand_sources, write_image
from endolight.methods import LEARNED, METHODS, Method
from endolight.methods import ours as ours_module
from endolight.methods.learned import Budget, NetMethod, count_parameters, fit, save_net
from endolight.model import ModelConfig
from endolight.pairs import EVAL_SEED, Pair, heldout_pairs, pairs_from_dir
from endolight.train import seed_everything

Progress = Callable[[str, int, int], None]
PROTOCOL_TEXT = {
    "endoscope": "the light cone's falloff, exposure down to 0.1, Poisson-Gaussian sensor noise, JPEG",
    "paper": "DeepUPE's whole-frame gamma on each channel, no noise",
}
OURS_TEXT = {"endoscope": "the noise-aware grey-illumination model",
             "paper": "the paper's per-channel model, with the power curve, the learned denoising and "
                      "level 0 read as the middle of what rounds to it"}
# The command that trained each protocol's shipped weights (the default's first stage; README).
TRAINING_CONFIG = {"endoscope": "configs/default.toml", "paper": "configs/paper-dequantise.toml"}
# How each protocol's shipped weights are made (README, 'Training the shipped weights').
SHIPPED_RECIPE = {
    "endoscope": f"the chain of `endolight train` stages from `{TRAINING_CONFIG['endoscope']}` (two "
                 "stages' start and end averaged by `endolight soup` on the way)",
    "paper": f"`endolight train --config {TRAINING_CONFIG['paper']}`",
}
# The paper's Table 1 as the project brief quotes it (PSNR dB, SSIM): its own test set, so a
# reference point for the ordering, not a number these frames can reproduce.
PAPER_TABLE1 = {"DeepUPE (the paper)": (24.58, 0.886), "DPED (in the paper)": (23.46, 0.885)}
SAME_BUDGET, SHIPPED = "endolight (same budget)", "endolight (shipped)"
ABLATION_PREFIX = "ours: "

@dataclass(frozen=True)
class CompareConfig:
    """Everything one comparison depends on; written beside its results."""

    budget: Budget = field(default_factory=Budget)
    train_max_side: int = 640  # training frames are shrunk to this longer side (as endolight.train)
    train_frames: int | None = None  # use only N training frames (quick runs)
    eval_max_side: int = 384  # held-out and dim frames are shrunk to this longer side
    heldout_per_organ: int | None = None  # None: the whole held-out split
    dim_per_set: int | None = None  # None: every real dim frame
    timing_size: tuple[int, int] = (1920, 1080)
    timing_repeats: int = 3
    figure_rows: int = 6
    runs_dir: str = "runs/compare"
    out_dir: str = "results"
    ours_weights: str | None = None  # None: shipped weights, else runs/default/best.safetensors
    device: str = "cpu"
    data_root: str | None = None  # None: endolight.data.default_data_root() ($ENDOLIGHT_DATA)
    pairs_dir: str | None = None  # evaluate on these (dim/, target/) pairs instead of the held-out split
    dim_dir: str | None = None  # no-reference measures on these frames instead of the dim split
    protocol: str = "endoscope"  # degradation of training and held-out pairs (endolight.degrade)

    @property
    def degrade(self) -> DegradeConfig:
        return protocol_config(self.protocol)

    @property
    def ours_config(self) -> ModelConfig:
        """Our same-budget model: the shipped default's, or the paper preset's under its protocol."""
        name = "paper" if self.protocol == "paper" else "default"
        return ModelConfig.from_json(read_metadata(default_weights_path(name))["model_config"])


def for_protocol(cfg: CompareConfig, protocol: str) -> CompareConfig:
    """``cfg`` under ``protocol``. A protocol other than the default gets its own checkpoint cache
    and results folder (``runs/compare-paper``, ``results/paper``): one protocol's run never
    retrains or overwrites the other's."""
    if protocol == CompareConfig.protocol:
        return replace(cfg, protocol=protocol)
    return replace(cfg, protocol=protocol, runs_dir=f"{cfg.runs_dir}-{protocol}",
                   out_dir=f"{cfg.out_dir}/{protocol}")


def report_path(protocol: str) -> Path:
    """Where ``endolight compare`` writes its report for ``protocol`` by default."""
    return Path("docs/results.md" if protocol == CompareConfig.protocol else f"docs/results-{protocol}.md")


QUICK = CompareConfig(
    budget=Budget(steps=6, batch_size=2, crop=96), train_max_side=320, train_frames=6,
    eval_max_side=256, heldout_per_organ=1, dim_per_set=2, timing_size=(320, 180), timing_repeats=1,
    figure_rows=3, runs_dir="runs/compare-quick", out_dir="results/quick",
)


@dataclass
class Trained:
    net: torch.nn.Module
    seconds: float
    loss_start: float  # mean "loss" over the first 10 % of steps
    loss_end: float  # ... and over the last 10 %
    cached: bool


# --------------------------------------------------------------------------- training


def _learned_specs(cfg: CompareConfig) -> dict[str, tuple[Any, Any, dict[str, Any]]]:
    """Checkpoint key -> (module, config, extra trainer kwargs), comparators then our retrains."""
    specs: dict[str, tuple[Any, Any, dict[str, Any]]] = {
        name: (spec.module, spec.config, {}) for name, spec in LEARNED.items()
    }
    for variant, weights in ours_module.ABLATION.items():
        specs[_ours_key(variant)] = (ours_module, cfg.ours_config, {"weights": weights})
    return specs


def _ours_key(variant: str) -> str:
    return "ours-" + "".join(c if c.isalnum() else "-" for c in variant.lower()).strip("-")


def _same_config(cached: str | None, config: Any) -> bool:
    """Whether a checkpoint's saved config is ``config``, read as a config (a checkpoint from
    before a new option was added carries no value for it, and reads as the old behaviour)."""
    try:
        return cached is not None and type(config).from_json(cached) == config
    except (TypeError, ValueError):
        return False


def _run_key(extra: dict[str, Any], cfg: CompareConfig) -> dict[str, Any]:
    """What a training run is, besides its model config: saved with its checkpoint, and matched
    against a cached one."""
    return {"budget": asdict(cfg.budget), "trainer": _jsonable(extra), "pairs": _pairs_key(cfg),
            "train_max_side": cfg.train_max_side, "train_frames": cfg.train_frames}


def _checkpoint_matches(path: Path, config: Any, extra: dict[str, Any], cfg: CompareConfig) -> bool:
    if not path.is_file():
        return False
    meta = read_metadata(path)
    meta["trainer"] = _with_defaults(meta.get("trainer"), extra)
    return (_same_config(meta.get("model_config"), config)
            and all(meta.get(k) == v for k, v in _run_key(extra, cfg).items()))


def _with_defaults(cached: Any, extra: dict[str, Any]) -> Any:
    """A saved trainer key with the fields its settings lack (an option added since, e.g. a new
    loss term) at their defaults: it reads as the old behaviour, as :func:`_same_config` reads
    model configs. Unknown fields stay, so they never match."""
    if not isinstance(cached, dict):
        return cached
    defaults = _jsonable({k: type(v)() for k, v in extra.items() if is_dataclass(v)})
    return {k: {**defaults[k], **v} if k in defaults and isinstance(v, dict) else v
            for k, v in cached.items()}


def _pairs_key(cfg: CompareConfig) -> dict[str, Any]:
    """What makes the training pairs: a cached model trained on other pairs is retrained."""
    return _jsonable({"degrade_version": DEGRADE_VERSION, "degrade": cfg.degrade})


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps({k: asdict(v) if hasattr(v, "__dataclass_fields__") else v
                                  for k, v in d.items()}))


def _train_refs(cfg: CompareConfig) -> list[FrameRef]:
    refs = list_frames("train", Path(cfg.data_root) if cfg.data_root else None)
    if cfg.train_frames:
        refs = refs[:: max(1, len(refs) // cfg.train_frames)][: cfg.train_frames]
    return refs


def train_all(cfg: CompareConfig, on_progress: Progress | None = None) -> dict[str, Trained]:
    """Train every learned method under ``cfg.budget`` (or load its cached checkpoint)."""
    runs = Path(cfg.runs_dir)
    runs.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    dataset: PairDataset | None = None
    out: dict[str, Trained] = {}
    for key, (module, config, extra) in _learned_specs(cfg).items():
        path = runs / f"{key}.safetensors"
        if _checkpoint_matches(path, config, extra, cfg):
            net = module.Net(config)
            net.load_state_dict(load_file(str(path)))
            meta = read_metadata(path)
            out[key] = Trained(net.eval(), meta["seconds"], meta["loss_start"], meta["loss_end"], True)
            continue
        if dataset is None:  # loaded once, only when something must train
            dataset = PairDataset(_train_refs(cfg), cfg.budget.crop, cfg.train_max_side, cfg.degrade,
                                  cfg.budget.seed)
        seed_everything(cfg.budget.seed)
        net = module.Net(config).to(device)
        trainer = module.Trainer(net, cfg.budget.steps, **extra)
        step_cb = None
        if on_progress:
            def step_cb(i: int, _terms: dict[str, float], k: str = key) -> None:
                on_progress(f"train {k}", i, cfg.budget.steps)
        meta = _run_key(extra, cfg)
        # A long budget is resumable: a stopped run goes on from its last snapshot.
        snapshot = runs / f"{key}.snapshot.pt"
        fitted = fit(trainer, dataset, cfg.budget, device, step_cb, snapshot,
                     json.dumps({**meta, "model_config": config.to_json()}, sort_keys=True))
        losses = [t["loss"] for t in fitted.log]
        tenth = max(1, len(losses) // 10)
        trained = Trained(net.cpu().eval(), fitted.seconds, float(np.mean(losses[:tenth])),
                          float(np.mean(losses[-tenth:])), False)
        write_csv(runs / f"{key}.log.csv", [{"step": i + 1, **t} for i, t in enumerate(fitted.log)])
        save_net(net, path, key, {**meta, "seconds": fitted.seconds, "loss_start": trained.loss_start,
                                  "loss_end": trained.loss_end})
        snapshot.unlink(missing_ok=True)
        out[key] = trained
    return out


# --------------------------------------------------------------------------- methods


def ours_weights_path(cfg: CompareConfig) -> Path:
    """``cfg.ours_weights``, else the shipped weights when they exist, else
    ``runs/default/best.safetensors``.

    Raises:
        FileNotFoundError: none of them exists.
    """
    if cfg.ours_weights:
        if not Path(cfg.ours_weights).is_file():
            raise FileNotFoundError(f"weights file {cfg.ours_weights} not found")
        return Path(cfg.ours_weights)
    shipped = default_weights_path("paper" if cfg.protocol == "paper" else "default")
    if shipped.is_file():
        return shipped
    fallback = Path("runs/default/best.safetensors")
    if fallback.is_file():
        return fallback
    raise FileNotFoundError(f"no weights for our model: neither {shipped} nor {fallback} exists")


def ours_label(path: Path) -> str:
    """Row name of our trained weights: "endolight (shipped)" for the shipped file, else its path."""
    shipped = {default_weights_path(name).resolve() for name in SHIPPED_WEIGHTS}
    return SHIPPED if path.resolve() in shipped else f"endolight ({path.as_posix()})"


def build_methods(
    cfg: CompareConfig, trained: dict[str, Trained]
) -> tuple[dict[str, Method], dict[str, int]]:
    """Table-1 rows then ablation rows, name -> ``Method``; and parameter counts."""
    device = resolve_device(cfg.device)
    methods: dict[str, Method] = dict(METHODS)
    params: dict[str, int] = {}
    for name in LEARNED:
        methods[name] = NetMethod(trained[name].net, device)
        params[name] = count_parameters(trained[name].net)
    same = trained[_ours_key("full")].net
    methods[SAME_BUDGET] = Enhancer(model=same, device=cfg.device).enhance_array
    params[SAME_BUDGET] = count_parameters(same)
    path = ours_weights_path(cfg)
    shipped = Enhancer(path, device=cfg.device)
    methods[ours_label(path)] = shipped.enhance_array
    params[ours_label(path)] = count_parameters(shipped.model)
    for variant in ours_module.ABLATION:
        if variant != "full":
            methods[ABLATION_PREFIX + variant] = Enhancer(model=trained[_ours_key(variant)].net,
                                                          device=cfg.device).enhance_array
    return methods, params


def ablation_rows() -> dict[str, str]:
    """Ablation variant -> the method name whose rows hold it."""
    return {v: SAME_BUDGET if v == "full" else ABLATION_PREFIX + v for v in ours_module.ABLATION}


# --------------------------------------------------------------------------- data


def _first_per_group(items: Iterable[Any], group: Callable[[Any], str], n: int | None) -> Iterator[Any]:
    seen: dict[str, int] = defaultdict(int)
    for item in items:
        g = group(item)
        if n is None or seen[g] < n:
            seen[g] += 1
            yield item


def eval_pairs(cfg: CompareConfig) -> list[Pair]:
    """The user's pairs (``cfg.pairs_dir``, as written by ``endolight synth``, used as they are),
    else the project's synthesized held-out split shrunk to ``cfg.eval_max_side``."""
    root = Path(cfg.data_root) if cfg.data_root else None
    source = (pairs_from_dir(Path(cfg.pairs_dir)) if cfg.pairs_dir
              else heldout_pairs(cfg.eval_max_side, root, cfg.degrade))
    return list(_first_per_group(source, lambda p: p.organ, cfg.heldout_per_organ))


def dim_frames(cfg: CompareConfig) -> list[tuple[FrameRef, np.ndarray]]:
    """The user's dim frames (``cfg.dim_dir``: file, folder or glob), else the real dim split."""
    if cfg.dim_dir:
        refs = [FrameRef(p, p.parent.name) for p in expand_sources(cfg.dim_dir)]
    else:
        refs = list_frames("dim", Path(cfg.data_root) if cfg.data_root else None)
    refs = list(_first_per_group(refs, lambda r: r.organ, cfg.dim_per_set))
    return [(r, load_frame(r, cfg.eval_max_side)) for r in refs]


# --------------------------------------------------------------------------- measurements


def time_methods(
    methods: dict[str, Method], frame: np.ndarray, repeats: int, on_item: Callable[[], None] | None = None
) -> dict[str, float]:
    """Median wall time (ms) of one call per method on ``frame``, after one warm-up call; methods
    slower than 2 s per call are timed once."""
    out = {}
    for name, method in methods.items():
        t0 = time.perf_counter()
        method(frame)
        first = time.perf_counter() - t0
        times = []
        for _ in range(repeats if first < 2.0 else 1):
            t0 = time.perf_counter()
            method(frame)
            times.append(time.perf_counter() - t0)
        out[name] = 1000 * float(np.median(times))
        if on_item:
            on_item()
    return out


def timing_frame(
    cfg: CompareConfig, frames: list[tuple[FrameRef, np.ndarray]], pairs: list[Pair]
) -> np.ndarray:
    """A real frame at ``cfg.timing_size``: a dim frame at full resolution when there is one."""
    frame = load_frame(frames[-1][0]) if frames else pairs[0].dim
    return cv2.resize(frame, cfg.timing_size, interpolation=cv2.INTER_AREA) \
        if frame.shape[1::-1] != cfg.timing_size else frame


# --------------------------------------------------------------------------- figures


def _figure_pairs(pairs: list[Pair], n: int) -> list[Pair]:
    return list(_first_per_group(pairs, lambda p: p.organ, 1))[:n]


# --------------------------------------------------------------------------- report


PER_ORGAN = ("psnr", "ssim", "delta_e")  # the per-organ table's columns (no LOE per organ)
FMT = {"psnr": "{:.2f}", "ssim": "{:.4f}", "delta_e": "{:.2f}", "loe": "{:.1f}", **NOREF_FMT}


def table1_rows(summary: dict[str, dict[str, float]], names: list[str], ms: dict[str, float],
                params: dict[str, int]) -> list[dict[str, Any]]:
    return [{"method": n, **{m: summary[n][m] for m in METRICS}, "ms_per_frame": ms[n],
             "params": params.get(n, 0)} for n in names]


def table1_markdown(rows: list[dict[str, Any]], timing_size: tuple[int, int]) -> str:
    best = {m: (max if HIGHER_BETTER[m] else min)(r[m] for r in rows) for m in METRICS}
    head = (f"| method | PSNR ↑ | SSIM ↑ | ΔE2000 ↓ | LOE ↓ | ms / {timing_size[0]}x{timing_size[1]} frame | "
            "parameters |")
    lines = [head, "|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [f"**{FMT[m].format(r[m])}**" if r[m] == best[m] else FMT[m].format(r[m]) for m in METRICS]
        params = f"{r['params']:,}" if r["params"] else "—"
        lines.append(f"| {r['method']} | " + " | ".join(cells) + f" | {r['ms_per_frame']:.0f} | {params} |")
    return "\n".join(lines) + "\n"


def organ_markdown(summary: dict[str, dict[str, dict[str, float]]], names: list[str],
                   counts: dict[str, int], suffix: str = "") -> str:
    """The per-organ table (``suffix`` :data:`~endolight.evaluate.FOV`: inside the field of view)."""
    organs = sorted(g for g in summary if g != "all")
    lines = ["| method | " + " | ".join(f"{o} ({counts[o]})" for o in organs) + " |",
             "|---|" + "---|" * len(organs)]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(organ_cell(summary[o][n], suffix) for o in organs) + " |")
    return "\n".join(lines) + "\n"


def organs_not_won(summary: dict[str, dict[str, dict[str, float]]], ours: str,
                   names: list[str], suffix: str = "") -> list[str]:
    """:func:`where_not_best` on each organ (PSNR, SSIM, ΔE2000: the per-organ table's
    columns; ``suffix`` :data:`~endolight.evaluate.FOV`: inside the field of view), one line per
    organ where some row beats ``ours``."""
    lines = []
    for organ in sorted(g for g in summary if g != "all"):
        miss = where_not_best(summary[organ], ours, names, tuple(m + suffix for m in PER_ORGAN))
        if miss:
            lines.append(f"- {organ}: " + "; ".join(m.removeprefix("- ") for m in miss))
    return lines


def where_not_best(summary: dict[str, dict[str, float]], ours: str, names: list[str],
                   metrics: tuple[str, ...] = METRICS) -> list[str]:
    """One line per metric on which some row beats ``ours``, with the margins (a metric inside
    the field of view is named as the whole frame's)."""
    lines = []
    for m in metrics:
        base = m.removesuffix(FOV)
        sign = 1 if HIGHER_BETTER[base] else -1
        better = [(n, sign * (summary[n][m] - summary[ours][m])) for n in names
                  if n != ours and sign * (summary[n][m] - summary[ours][m]) > 0]
        if better:
            better.sort(key=lambda t: -t[1])
            lines.append(f"- {base.upper() if base != 'delta_e' else 'ΔE2000'}: " + ", ".join(
                f"{n} by {FMT[base].format(d)}" for n, d in better))
    return lines


# --------------------------------------------------------------------------- the whole run


def run(cfg: CompareConfig, on_progress: Progress | None = None, command: str = "endolight compare",
        doc: Path | None = None) -> str:
    """Train (or load) every method, measure everything, write ``cfg.out_dir``; returns the
    Markdown report, written to ``cfg.out_dir/results.md`` and, if given, to ``doc`` (figure
    links relative to each file)."""
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    progress = on_progress or (lambda *_: None)
    started = time.perf_counter()
    ours_weights_path(cfg)  # fail before hours of training, not after

    trained = train_all(cfg, on_progress)
    methods, params = build_methods(cfg, trained)
    table_names = [n for n in methods if not n.startswith(ABLATION_PREFIX)]

    pairs = eval_pairs(cfg)
    if not pairs:
        raise FileNotFoundError("no held-out frames found")
    done = iter(range(1, len(pairs) + 1))
    samples: dict = {}
    rows = evaluate(methods, pairs, on_item=lambda _: progress("held-out pairs", next(done), len(pairs)),
                    samples=samples)
    summary = summarize(rows)
    counts: dict[str, int] = defaultdict(int)
    for p in pairs:
        counts[p.organ] += 1

    frames = dim_frames(cfg)
    done = iter(range(1, len(frames) + 1))
    noref_names = ["identity", *[n for n in table_names if n != "identity"]]
    nrows = evaluate_no_reference({n: methods[n] for n in noref_names}, frames,
                                  lambda: progress("real dim frames", next(done), len(frames)))
    nsum = noref_summary(nrows) if nrows else {}

    frame = timing_frame(cfg, frames, pairs)
    done = iter(range(1, len(table_names) + 1))
    ms = time_methods({n: methods[n] for n in table_names}, frame, cfg.timing_repeats,
                      lambda: progress("timing", next(done), len(table_names)))

    # Figures: the same crop of the first frame of each organ, every method side by side.
    fig_pairs = _figure_pairs(pairs, cfg.figure_rows)
    shown = [n for n in table_names if n != "identity"]
    write_image(out / "figure4.png", figure_grid(
        [[p.dim, *[methods[n](p.dim) for n in shown], p.target] for p in fig_pairs],
        ["input", *shown, "ground truth"]))
    write_image(out / "contact_sheet.png", contact_sheet(samples, methods=shown))
    write_image(out / "psnr_vs_brightness.png", brightness_plot(rows, methods=shown))
    abl = ablation_rows()
    write_image(out / "figure3.png", figure_grid(
        [[p.dim, *[methods[abl[v]](p.dim) for v in abl], p.target] for p in fig_pairs],
        ["input", *abl, "ground truth"], cell=200))
    if frames:
        dim_fig = list(_first_per_group(frames, lambda f: f[0].organ, 2))
        write_image(out / "figure_dim.png", figure_grid(
            [[f, *[methods[n](f) for n in shown]] for _, f in dim_fig], ["input", *shown], crop=False,
            cell=120))

    t1 = table1_rows(summary["all"], table_names, ms, params)
    write_csv(out / "table1.csv", t1)
    write_csv(out / "per_image.csv", rows)
    abl_t = [{"variant": v, **{m: summary["all"][n][m] for m in METRICS},
              "loss_start": trained[_ours_key(v)].loss_start, "loss_end": trained[_ours_key(v)].loss_end}
             for v, n in abl.items()]
    write_csv(out / "ablation.csv", abl_t)
    if nrows:
        write_csv(out / "noref_per_image.csv", nrows)
        write_csv(out / "noref.csv", [{"method": n, **nsum["all"][n]} for n in noref_names])
    train_rows = [{"method": k, "seconds": t.seconds, "loss_start": t.loss_start, "loss_end": t.loss_end,
                   "cached": t.cached} for k, t in trained.items()]
    write_csv(out / "training.csv", train_rows)
    write_text(out / "config.json", json.dumps(asdict(cfg), indent=2, sort_keys=True))

    write_text(out / "table1.md", table1_markdown(t1, cfg.timing_size) + "\n" + NOTE + "\n")
    logs = {k: Path(cfg.runs_dir) / f"{k}.log.csv" for k in trained}
    write_image(out / "training_curves.png", loss_curves({k: read_csv(p) if p.is_file() else []
                                                          for k, p in logs.items()}))
    args = (cfg, command, pairs, counts, frames, rows, summary, t1, table_names, abl, abl_t, nsum,
            noref_names, train_rows, time.perf_counter() - started)
    report = _report(*args, base=out)
    write_text(out / "results.md", report)
    if doc:
        write_text(doc, _report(*args, base=doc.parent))
    return report


def _report(cfg: CompareConfig, command: str, pairs: list[Pair], counts: dict[str, int],
            frames: list[tuple[FrameRef, np.ndarray]], rows: list[dict[str, Any]], summary: dict[str, Any],
            t1: list[dict[str, Any]],
            names: list[str], abl: dict[str, str], abl_t: list[dict[str, Any]], nsum: dict[str, Any],
            noref_names: list[str], train_rows: list[dict[str, Any]], seconds: float, base: Path) -> str:
    b = cfg.budget
    ours_path = ours_weights_path(cfg)
    ours = ours_label(ours_path)
    shown_path = ours_path.resolve()
    if shown_path.is_relative_to(Path.cwd().resolve()):
        shown_path = shown_path.relative_to(Path.cwd().resolve())
    cached = [r for r in train_rows if r["cached"]]
    any_cached, all_cached = bool(cached), len(cached) == len(train_rows)
    train_s = sum(r["seconds"] for r in cached)
    meta = read_metadata(ours_path)
    trained_for = (f", epoch {meta['epoch']} of its run (val PSNR {meta['val_psnr']:.2f} dB)"
                   if "epoch" in meta and "val_psnr" in meta else "")
    def fig(name: str) -> str:
        return Path(os.path.relpath(Path(cfg.out_dir) / name, base)).as_posix()

    sets: dict[str, int] = defaultdict(int)
    for r, _ in frames:
        sets[r.organ] += 1
    lines = [
        "# Comparison with the paper's peers on real endoscope frames",
        "",
        "<!-- Generated by `endolight compare`; do not edit the numbers by hand, re-run the command. -->",
        "",
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `{command}` on {platform.machine()} CPU "
        f"({os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}, "
        f"Python {platform.python_version()}): {seconds / 60:.1f} min for this run, plus "
        f"{train_s / 60:.1f} min of training ({'all' if all_cached else 'partly'} cached from an earlier run "
        "of the same command; see the training table)." if any_cached else
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `{command}` on {platform.machine()} CPU "
        f"({os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}, "
        f"Python {platform.python_version()}) in {seconds / 60:.1f} min, training included.",
        "",
        "## Setup",
        "",
        f"- **Held-out pairs** (never trained on): {len(pairs)} " + (
            f"pairs from `{cfg.pairs_dir}` ({', '.join(f'{o} {n}' for o, n in sorted(counts.items()))}), "
            "used as they are." if cfg.pairs_dir else
            f"real frames of the project's held-out split "
            f"({', '.join(f'{o} {n}' for o, n in sorted(counts.items()))}), shrunk to {cfg.eval_max_side} "
            f"px on the longer side and darkened by the `{cfg.protocol}` protocol "
            f"({PROTOCOL_TEXT[cfg.protocol]}; `endolight.degrade`), frame *i* with seed {EVAL_SEED} + *i* "
            "(`endolight.pairs.heldout_pairs`)."),
        f"- **Real dim frames** (no ground truth): {len(frames)} frames "
        f"({', '.join(f'{s} {n}' for s, n in sorted(sets.items()))}), same size limit.",
        f"- **Training budget, the same for every learned method**: {b.steps} steps, batch {b.batch_size}, "
        f"{b.crop}x{b.crop} crops of on-the-fly pairs (`endolight.data.PairDataset` over the train split, "
        f"frames shrunk to {cfg.train_max_side} px, same degradation, same seed {b.seed}, so every method "
        "sees the same batches in the same order); Adam with a cosine decay to 5 % of the start rate. "
        "Zero-DCE/Zero-DCE++ see only the dim half of each pair (zero-reference).",
        f"- **{ours}**: `{shown_path.as_posix()}`{trained_for} — our model trained by "
        f"{SHIPPED_RECIPE[cfg.protocol]} "
        "(256 px crops for many epochs: a far larger budget; README, 'Training the shipped weights'). "
        f"**{SAME_BUDGET}**: the same model ({OURS_TEXT[cfg.protocol]}) and losses retrained here under "
        "the common budget: the fair row against the comparators.",
        "- Our rows leave pixels outside the field of view unenhanced, a noisy border's noise flattened "
        "(`endolight.border`, as `endolight enhance` does); the "
        "comparators run as published, on the whole frame.",
        f"- Speed: median wall time of one call on a {cfg.timing_size[0]}x{cfg.timing_size[1]} real frame, "
        "uint8 in and out, after a warm-up call, on this CPU while other jobs shared it (indicative only).",
        "",
        "## Table 1 — held-out pairs",
        "",
        table1_markdown(t1, cfg.timing_size),
        NOTE + " Best value per column in bold. Parameters: learned weights used at inference "
        "(DPED's discriminator is training-only and not counted).",
        "",
    ]
    for row in (ours, SAME_BUDGET):
        miss = where_not_best(summary["all"], row, names)
        lines += [f"**Where {row} does not win** (margin by which others beat it):", ""]
        lines += miss or ["- nowhere: it is best on every metric."]
        lines.append("")
    if cfg.protocol == "paper":
        lines += [
            "**The paper's own figures** (its Table 1, on its own data, not these frames): "
            + ", ".join(f"{n} {v[0]:.2f} dB / {v[1]:.3f}" for n, v in PAPER_TABLE1.items())
            + ". Here, under its protocol on endoscope frames: " + ", ".join(
                f"{n} {summary['all'][n]['psnr']:.2f} dB / {summary['all'][n]['ssim']:.3f}"
                for n in (ours, SAME_BUDGET, *LEARNED) if n in summary["all"]) + ".",
            "",
        ]
    if nsum:
        learned = [n for n in (*LEARNED, ours, SAME_BUDGET) if n in nsum["all"]]
        lines += [
            "**Noise left where each learned method lifts real dim frames** (8-bit σ, no-reference table "
            "below): " + ", ".join(f"{n} {nsum['all'][n]['lifted_noise']:.2f}" for n in learned)
            + "; the dim input's own: " + f"{nsum['all']['identity']['lifted_noise']:.2f}.",
            "",
        ]
    peers = [n for n in names if n != SAME_BUDGET]  # the rows the organ lists hold ours against
    lines += [
        "### PSNR / SSIM / ΔE2000 per organ", "", organ_markdown(summary, names, counts),
        f"**Organs where {ours} does not beat every comparator** (our same-budget row aside; margin "
        "by which others beat it):", "",
        *(organs_not_won(summary, ours, peers) or ["- none: it is best on every organ."]), "",
        "### The same inside the field of view", "",
        "A frame's border, outside the view, is half of a sinus frame, a quarter to a third of a "
        "fetoscopy one and up to a fifth of the others': there the target is the scope's black (a few "
        "levels; sinus 1-2), and SSIM follows a level or two of it (`python "
        "scripts/border_level.py --organ all` splits each method's SSIM). Inside the view "
        "(`endolight.fov.detect_fov` on the target):", "",
        organ_markdown(summary, names, counts, FOV),
        f"**Organs where {ours} does not beat every comparator inside the view** (our same-budget row "
        "aside):", "",
        *(organs_not_won(summary, ours, peers, FOV) or ["- none: it is best on every organ."]), "",
        *[t for key in BINNED if (t := binned_markdown([r for r in rows if r["method"] in names], key))],
        "## Figure 3 — loss ablation of our model (same budget)", "",
        "Each variant is the same DeepUPE model trained under the common budget with only the loss changed: "
        "`Lm` = ‖I/S − T‖², `Ls` = edge-aware smoothness of S (weighted by the input's log-luminance "
        "gradients), `MAE + SSIM` = `Lt` alone, `full` = the project's default `Lm + 0.5 Lt + 0.002 Ls`. "
        "Our `Ls` has its own scale, so `2Ls` means twice the default smoothness weight (0.004).", "",
        "| loss | PSNR ↑ | SSIM ↑ | ΔE2000 ↓ | LOE ↓ | training loss, first → last 10 % |",
        "|---|---|---|---|---|---|",
    ]
    for r in abl_t:
        lines.append(f"| {r['variant']} | " + " | ".join(FMT[m].format(r[m]) for m in METRICS)
                     + f" | {r['loss_start']:.4f} → {r['loss_end']:.4f} |")
    lines += ["", f"![Figure 3]({fig('figure3.png')})", ""]
    if nsum:
        lines += [
            "## No-reference measures on real dim frames", "",
            NOREF_NOTE, "",
            noref_markdown(nsum, noref_names),
            f"![Real dim frames]({fig('figure_dim.png')})", "",
        ]
    lines += [
        "## Figure 4 — side by side (held-out, same crop in every column)", "",
        f"![Figure 4]({fig('figure4.png')})", "",
        "Whole frames, one per organ (input | each method | target), and PSNR against the dim "
        "input's mean brightness:", "",
        f"![Contact sheet]({fig('contact_sheet.png')})", "",
        f"![PSNR vs brightness]({fig('psnr_vs_brightness.png')})", "",
        "## Training of the learned methods", "",
        "| method | seconds | loss, first → last 10 % of steps | cached |", "|---|---|---|---|",
        *[f"| {r['method']} | {r['seconds']:.0f} | {r['loss_start']:.4f} → {r['loss_end']:.4f} | "
          f"{'yes' if r['cached'] else 'no'} |" for r in train_rows],
        "",
        "Training loss of each run against its step, as a percentage of its mean over the first 10 % "
        "of steps (a moving mean over 5 % of the steps): where a line still falls at the right, that "
        "method had not reached its plateau under this budget.", "",
        f"![Training curves]({fig('training_curves.png')})", "",
        "## The methods", "",
        "- **identity**: the dim input. **gamma**: global gamma to mean 0.45. **he**: histogram equalisation "
        "of CIELAB L (OpenCV). **clahe**: CLAHE on CIELAB L (OpenCV, clip 2, 8x8 tiles). **msrcr**: "
        "multi-scale Retinex with colour restoration (15/80/250 px surrounds at 512 px) + 1 % simplest "
        "colour balance. **lime**: LIME's max-RGB illumination refined by its weighted least-squares "
        "problem (solved at 256 px), γ = 0.8, no BM3D.",
        "- **retinexnet** (Wei et al. 2018): Decom-Net + Enhance-Net, trained in two phases (half the "
        "budget each), 32 channels instead of 64, no BM3D.",
        "- **feqe** (Vu et al. 2018): desubpixel down-sampling, 20 residual blocks with instance norm at "
        "1/4 resolution, sub-pixel up-sampling, global skip; MSE + 0.1 (1 − SSIM).",
        "- **dped** (Ignatov et al. 2017): residual generator (32 channels, 4 blocks), grayscale texture "
        "discriminator; colour (blurred MSE) + texture (adversarial) + content + TV. The content loss "
        "compares ImageNet VGG-19 features in the paper; no pretrained VGG is available offline, so "
        "content = 1 − SSIM: it scores local structure and contrast (what the content loss protects) "
        "without trained weights, unlike a random-feature loss that depends on an arbitrary init.",
        "- **zero-dce** / **zero-dce++** (Guo et al. 2020 / Li et al. 2021): curve estimation trained "
        "without references (spatial, exposure E = 0.6, colour and smoothness losses); ++ uses "
        "depthwise-separable convs, one shared curve map, estimated at 160 px.",
        "",
        "## Reproduce", "",
        "```",
        command,
        "```",
        "",
        f"Outputs in `{cfg.out_dir}/`: `table1.md` / `table1.csv`, `per_image.csv`, `ablation.csv`, "
        "`noref.csv`, `noref_per_image.csv`, `training.csv`, `config.json`, and the figures. Trained "
        f"comparators are cached in `{cfg.runs_dir}/` (delete it to retrain).",
        "",
    ]
    return "\n".join(lines)
