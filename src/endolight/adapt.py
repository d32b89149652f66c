"""Fit the model to a user's own scope from well-lit footage: ``endolight adapt``.

1. **Frames**: the usable frames of the footage (:mod:`endolight.frames`), shrunk to
   ``max_side`` and written to the work folder; the last ``holdout`` of them in time are held
   out (never a random split: neighbouring frames are near-copies).
2. **Plan**: a few timed training steps set how many steps fit the time budget.
3. **Fine-tune**: :func:`endolight.train.train` from the starting weights on pairs made by the
   degradation model (``protocol``), validated on the held-out frames each epoch; resumable.
4. **Report**: start vs adapted weights on the held-out frames (PSNR, SSIM, ΔE2000), a
   Markdown report and a contact sheet. The output is the last epoch's weights: choosing the
   best epoch on the held-out frames would flatter the reported numbers.

The library never prints: progress goes through ``on_progress(stage, done, total)``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from endolight.checkpoint import (
    load_model,
    load_trainer_state,
    read_metadata,
    resolve_weights,
    save_weights,
)
from endolight.data import FrameRef
from endolight.degrade import DEFAULT_PROTOCOL, protocol_config
from endolight.evaluate import evaluate, summarize
from endolight.frames import FrameCriteria, Selection, select_frames
from endolight.io.atomic import write_text
from endolight.io.images import expand_sources, write_image
from endolight.io.sources import SourceError, open_source
from endolight.losses import LossWeights, total_loss
from endolight.methods import get_method
from endolight.model import DeepUPE, ModelConfig
from endolight.pairs import EVAL_SEED, Pair, synthesized_pairs
from endolight.train import TrainConfig, train

MIN_FRAMES = 5  # at least 4 to train on and 1 held out
MARKER = "adapt.json"  # marks a work folder as adapt's own (safe to clear for a fresh run)
Progress = Callable[[str, int, int | None], None]


class AdaptError(ValueError):
    """Input adapt cannot use; the message is one line meant for the user."""


class _OutOfTime(Exception):
    """Training reached the time budget at the end of an epoch."""


@dataclass(frozen=True)
class AdaptConfig:
    """One adaptation run. ``minutes`` is the training budget; frame selection (about a minute
    for a minute of 1080p video on 2 CPU cores) and the final evaluation come on top."""

    source: str
    output: str
    work_dir: str | None = None  # default: OUTPUT's name + ".adapt" beside it
    weights: str | None = None  # starting weights: a file or a shipped name; default: shipped
    protocol: str = DEFAULT_PROTOCOL
    minutes: float = 6.0
    steps: int | None = None  # a fixed number of training steps instead of the time budget
    max_frames: int = 60
    max_side: int = 512
    holdout: float = 0.2
    epochs: int = 5
    batch_size: int = 4
    crop: int = 256
    lr: float = 2e-4  # fine-tuning: below the 5e-4 of training from scratch
    device: str = "auto"
    seed: int = 0
    criteria: FrameCriteria = field(default_factory=FrameCriteria)

    @property
    def work(self) -> Path:
        out = Path(self.output)
        return Path(self.work_dir) if self.work_dir else out.with_name(out.stem + ".adapt")

    @property
    def start_weights(self) -> Path:
        return resolve_weights(self.weights)


@dataclass
class AdaptResult:
    selection: str  # what was kept and dropped
    n_train: int
    n_heldout: int
    plan: dict[str, float]
    table: str  # Markdown: start vs adapted on the held-out frames
    means: dict[str, dict[str, float]]  # method -> metric -> mean
    report: Path
    seconds: float
    stopped: str  # why training stopped before the plan's last epoch ("" when it did not)
    steps: int  # training steps run (all epochs, with a resumed run's earlier ones)


# -- checks before any work ----------------------------------------------------------------------

def _inputs(source: str) -> tuple[list[Path], list[Path]]:
    """The source's files and folders (a folder's or a glob's frames; a video file)."""
    p = Path(source)
    if p.is_dir():
        return expand_sources(p), [p]
    if p.is_file() or not any(c in source for c in "*?["):
        return [p], []
    files = expand_sources(source)
    return files, sorted({f.parent for f in files})


def _probe_writable(folder: Path) -> None:
    """Fail now, not after ten minutes of training, if ``folder`` cannot be created or written."""
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise AdaptError(f"{folder}: cannot write there ({existing} is not a folder)")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".endolight-probe.", dir=existing)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise AdaptError(f"{folder}: cannot write there ({exc.strerror or exc})") from exc


def check_paths(cfg: AdaptConfig) -> None:
    """Refuse an output or work folder that is, or lies inside, an input; or is not writable.

    Raises:
        AdaptError, InputError: with a one-line reason; nothing has been written.
    """
    files, folders = _inputs(cfg.source)
    out, work = Path(cfg.output).resolve(), cfg.work.resolve()
    for f in files:
        if f.resolve() in (out, work):
            raise AdaptError(f"{cfg.output}: is an input of adapt ({f}); choose another output path")
    for d in folders:
        for p, what in ((out, "output"), (work, "work folder")):
            if p.is_relative_to(d.resolve()):
                raise AdaptError(f"{p}: the {what} lies inside the input folder {d}; adapt never writes "
                                 "into its input (its frames would be read back as footage)")
    if out.is_dir():
        raise AdaptError(f"{cfg.output}: is a folder; give a file name such as my-scope.safetensors")
    if work.exists() and any(work.iterdir()) and not (work / MARKER).is_file():
        raise AdaptError(f"{work}: exists and is not an adapt work folder; choose another --work-dir")
    _probe_writable(out.parent)
    _probe_writable(work)


# -- frames ----------------------------------------------------------------------------------------

def choose_frames(cfg: AdaptConfig, on_progress: Progress | None = None) -> Selection:
    """Read the source and keep its usable frames.

    Raises:
        AdaptError, InputError: unreadable, corrupt or truncated source; too few usable frames.
    """
    src = open_source(cfg.source)
    total = src.info.frames
    try:
        sel = select_frames(src, cfg.max_side, cfg.max_frames, cfg.criteria,
                            lambda n: on_progress("frames", n, total) if on_progress else None)
    except SourceError as exc:
        raise AdaptError(str(exc)) from exc
    finally:
        src.close()
    if len(sel.kept) < MIN_FRAMES:
        raise AdaptError(f"{cfg.source}: too few usable frames: {sel.summary()}; adapt needs at least "
                         f"{MIN_FRAMES} well-exposed, sharp, distinct frames")
    return sel


def split(n: int, holdout: float) -> int:
    """Number of frames trained on: the first ones in time; the rest (at least one) are held out."""
    return min(n - 1, max(1, round(n * (1 - holdout))))


def _write_frames(sel: Selection, cfg: AdaptConfig) -> dict[str, list[str]]:
    n_train = split(len(sel.kept), cfg.holdout)
    names: dict[str, list[str]] = {"train": [], "heldout": []}
    for i, k in enumerate(sel.kept):
        part = "train" if i < n_train else "heldout"
        rel = f"frames/{part}/{k.index:06d}.png"
        write_image(cfg.work / rel, k.image)
        names[part].append(rel)
    return names


def _refs(work: Path, names: list[str], organ: str) -> list[FrameRef]:
    return [FrameRef(work / n, organ) for n in names]


# -- plan --------------------------------------------------------------------------------------------

def step_seconds(model_cfg: ModelConfig, batch: int, crop: int, device: str, steps: int = 1) -> float:
    """Seconds per training step on this machine (after one warm-up step)."""
    from endolight.device import resolve_device

    dev = resolve_device(device)
    model = DeepUPE(model_cfg).to(dev).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-6)
    gen = torch.Generator().manual_seed(0)
    dim = torch.rand(batch, 3, crop, crop, generator=gen).to(dev)
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        pred = model(dim * 0.3)
        loss = total_loss(dim * 0.3, pred.illumination, pred.output, dim, LossWeights(),
                          offset=model.cfg.black_offset)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return float(np.mean(times[1:]))


def plan(cfg: AdaptConfig, n_train: int, step_s: float) -> dict[str, float]:
    """Epochs, repeats and steps so that training takes about ``cfg.minutes``.

    An epoch sees every training frame at least once (``repeats`` random crops of each), so a
    small budget means fewer epochs (down to one) rather than a partial pass.
    """
    steps = cfg.steps or int(cfg.minutes * 60 / step_s)
    epochs = max(1, min(cfg.epochs, steps // max(1, n_train // cfg.batch_size)))
    repeats = max(math.ceil(cfg.batch_size / n_train), round(steps / epochs * cfg.batch_size / n_train))
    per_epoch = n_train * repeats // cfg.batch_size
    return {"epochs": epochs, "repeats": repeats, "steps_per_epoch": per_epoch,
            "steps": per_epoch * epochs, "step_seconds": round(step_s, 3)}


def train_config(cfg: AdaptConfig, p: dict[str, float]) -> TrainConfig:
    """The :class:`TrainConfig` of the fine-tuning run: the start model's shape, the protocol's pairs."""
    model_cfg = ModelConfig.from_json(read_metadata(cfg.start_weights)["model_config"])
    return TrainConfig(
        out_dir=str(cfg.work / "train"), epochs=int(p["epochs"]), batch_size=cfg.batch_size, crop=cfg.crop,
        max_side=cfg.max_side, repeats=int(p["repeats"]), lr=cfg.lr, lr_min=cfg.lr / 20,
        val_max_side=cfg.max_side, seed=cfg.seed, device=cfg.device, protocol=cfg.protocol,
        init_weights=str(cfg.start_weights), model=model_cfg, degrade=protocol_config(cfg.protocol),
    )


# -- the run ------------------------------------------------------------------------------------------

def _prepare(cfg: AdaptConfig, on_progress: Progress | None) -> dict:
    """Frames, split and plan of a fresh run, recorded in the work folder's marker file."""
    sel = choose_frames(cfg, on_progress)
    if cfg.work.exists():  # an earlier run of ours (check_paths saw the marker): start afresh
        shutil.rmtree(cfg.work)
    names = _write_frames(sel, cfg)
    model_cfg = ModelConfig.from_json(read_metadata(cfg.start_weights)["model_config"])
    if on_progress:
        on_progress("plan", 0, 1)
    step_s = 0.0 if cfg.steps else step_seconds(model_cfg, cfg.batch_size, cfg.crop, cfg.device)
    p = plan(cfg, len(names["train"]), step_s)
    state = {"config": {k: v for k, v in asdict(cfg).items() if k != "criteria"},
             "selection": sel.summary(), "frames": names, "plan": p}
    write_text(cfg.work / MARKER, json.dumps(state, indent=1))
    return state


def run_adapt(cfg: AdaptConfig, resume: bool = False, on_progress: Progress | None = None,
              on_epoch: Callable[[object], None] | None = None) -> AdaptResult:
    """Choose frames, fine-tune, evaluate and report; ``resume`` continues the run in the work folder.

    Raises:
        AdaptError, InputError: bad source or paths, too few usable frames (nothing written).
        ValueError: unknown protocol.
    """
    t0 = time.time()
    protocol_config(cfg.protocol)  # an unknown protocol fails before any work
    if not cfg.start_weights.is_file():
        raise AdaptError(f"weights file {cfg.start_weights} not found")
    check_paths(cfg)
    marker = cfg.work / MARKER
    if resume and marker.is_file():
        state = json.loads(marker.read_text())
        kept = ("max_side", "epochs", "batch_size", "crop", "lr", "seed", "protocol", "weights", "steps")
        cfg = replace(cfg, **{k: state["config"][k] for k in kept})
    else:
        state = _prepare(cfg, on_progress)
    p, names = state["plan"], state["frames"]
    tcfg = train_config(cfg, p)
    state_file = Path(tcfg.out_dir) / "last.state.pt"
    done = 0
    if resume and state_file.is_file():
        done = load_trainer_state(state_file)["epoch"] * int(p["steps_per_epoch"])
    total = int(p["steps"])

    def on_step(step: int, per_epoch: int, stats: dict[str, float]) -> None:
        if on_progress:
            on_progress("adapt", done + step, total)

    t_train = time.time()

    def epoch_done(log) -> None:
        nonlocal done
        done = log.epoch * int(p["steps_per_epoch"])
        if on_epoch:
            on_epoch(log)
        # The plan came from a few timed steps; a machine that got busier stops at the budget
        # (after the epoch's checkpoint, so --resume continues from here).
        late = time.time() - t_train + log.seconds > cfg.minutes * 60 * 1.1
        if late and not cfg.steps and log.epoch < p["epochs"]:
            raise _OutOfTime(f"stopped at the time budget after epoch {log.epoch} of {p['epochs']} "
                             "(--resume continues)")

    try:
        train(tcfg, resume=resume, on_step=on_step, on_epoch=epoch_done,
              train_refs=_refs(cfg.work, names["train"], "train"),
              val_refs=_refs(cfg.work, names["heldout"], "heldout"))
        state["stopped"] = ""
    except _OutOfTime as exc:
        state["stopped"] = str(exc)
    adapted = load_model(Path(tcfg.out_dir) / "last.safetensors")
    save_weights(adapted, cfg.output, {"adapted_from": str(cfg.start_weights), "source": cfg.source,
                                       "protocol": cfg.protocol, "frames": len(names["train"])})
    table, means, pairs, outputs = _before_after(cfg, names["heldout"], on_progress)
    report = _write_report(cfg, state, table, pairs, outputs, time.time() - t0)
    return AdaptResult(state["selection"], len(names["train"]), len(names["heldout"]), p, table, means,
                       report, time.time() - t0, state["stopped"], done)


def _labels(cfg: AdaptConfig) -> tuple[str, str]:
    start = "shipped" if cfg.weights is None else f"start ({Path(cfg.weights).name})"
    return start, "adapted"


def _before_after(cfg: AdaptConfig, heldout: list[str], on_progress: Progress | None
                  ) -> tuple[str, dict[str, dict[str, float]], list[Pair], dict[str, list[np.ndarray]]]:
    """Input, start and adapted weights on the held-out pairs (same protocol, fixed seeds)."""
    start, adapted = _labels(cfg)
    methods = {"input": get_method("identity"),
               start: get_method("endolight", cfg.start_weights, cfg.device),
               adapted: get_method("endolight", cfg.output, cfg.device)}
    refs = _refs(cfg.work, heldout, "heldout")
    pairs = list(synthesized_pairs(refs, EVAL_SEED, protocol_config(cfg.protocol)))
    outputs: dict[str, list[np.ndarray]] = {}

    def recording(name: str):
        def run(image: np.ndarray) -> np.ndarray:
            out = methods[name](image)
            outputs.setdefault(name, []).append(out)
            return out
        return run

    n = 0

    def step(_: str) -> None:
        nonlocal n
        n += 1
        if on_progress:
            on_progress("eval", n, len(pairs))

    rows = evaluate({m: recording(m) for m in methods}, pairs, step, tissue=False)
    means = summarize(rows)["all"]
    lines = [f"| held-out frames (n = {len(pairs)}) | PSNR ↑ | SSIM ↑ | ΔE2000 ↓ |", "|---|---|---|---|"]
    for m, v in means.items():
        lines.append(f"| {m} | {v['psnr']:.2f} | {v['ssim']:.4f} | {v['delta_e']:.2f} |")
    return "\n".join(lines) + "\n", means, pairs, outputs


def contact_sheet(rows: list[list[np.ndarray]], labels: list[str], width: int = 256) -> np.ndarray:
    """A grid of ``(H, W, 3)`` uint8 frames, one row per example, each column headed by its label."""
    cells = []
    for row in rows:
        h = round(row[0].shape[0] * width / row[0].shape[1])
        cells.append(np.hstack([cv2.resize(im, (width, h), interpolation=cv2.INTER_AREA) for im in row]))
    head = np.full((28, width * len(labels), 3), 255, np.uint8)
    for i, label in enumerate(labels):
        cv2.putText(head, label, (i * width + 6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return np.vstack([head, *cells])


def _write_report(cfg: AdaptConfig, state: dict, table: str, pairs: list[Pair],
                  outputs: dict[str, list[np.ndarray]], seconds: float) -> Path:
    start, adapted = _labels(cfg)
    picks = sorted(set(np.linspace(0, len(pairs) - 1, min(4, len(pairs))).round().astype(int)))
    rows = [[pairs[i].dim, outputs[start][i], outputs[adapted][i], pairs[i].target] for i in picks]
    sheet = contact_sheet(rows, ["input (dim)", start, adapted, "target"])
    write_image(cfg.work / "contact-sheet.png", sheet)
    p = state["plan"]
    stopped = f"; {state['stopped']}" if state["stopped"] else ""
    text = "\n".join([
        "# endolight adapt", "",
        f"- source: `{cfg.source}`",
        f"- frames: {state['selection']}; {len(state['frames']['train'])} trained on, the last "
        f"{len(state['frames']['heldout'])} in time held out",
        f"- start weights: `{cfg.start_weights}`; output: `{cfg.output}`",
        f"- training: protocol `{cfg.protocol}`, {p['epochs']} epochs x {p['steps_per_epoch']} steps "
        f"(batch {cfg.batch_size}, crop {cfg.crop}, frames shrunk to {cfg.max_side} px), "
        + (f"{p['step_seconds']:.2f} s a step when planned" if p["step_seconds"] else "a fixed --steps")
        + stopped,
        f"- total time of this call: {seconds:.0f} s", "",
        "Held-out frames, dimmed by the same protocol (fixed seeds):", "", table,
        "![input | start | adapted | target](contact-sheet.png)", "",
    ])
    return write_text(cfg.work / "report.md", text)

