"""The training loop: on-the-fly pairs from real frames, validation each epoch, resumable.

The library never prints: progress goes through ``on_step`` / ``on_epoch`` callbacks, which the
CLI turns into a progress bar.

Under ``torchrun`` (``WORLD_SIZE > 1`` in the environment) the same call trains with
DistributedDataParallel: gloo on CPU, nccl on CUDA (one GPU per process, ``cuda:LOCAL_RANK``), a
DistributedSampler gives each process its share of every epoch (``batch_size`` is per process),
and only rank 0 validates, writes checkpoints and logs, and calls the callbacks.
"""

from __future__ import annotations

import csv
import os
import random
import time
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler

from endolight.checkpoint import load_trainer_state, save_trainer_state, save_weights
from endolight.data import (
    FrameRef,
    PairDataset,
    check_crop_area,
    degraded_pair,
    list_frames,
    load_frame,
)
from endolight.degrade import DEFAULT_PROTOCOL, DegradeConfig, protocol_config
from endolight.device import resolve_device
from endolight.fidelity import tissue_weights
from endolight.io.tensors import to_tensor
from endolight.losses import LossWeights, total_loss
from endolight.metrics import psnr, ssim
from endolight.model import DeepUPE, ModelConfig

VAL_SEED = 12345  # fixed degradations of the validation frames, the same every epoch and run


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; saved beside its checkpoints."""

    out_dir: str = "runs/default"
    data_root: str | None = None
    epochs: int = 30
    batch_size: int = 8
    crop: int = 256
    max_side: int = 640  # training frames are shrunk to this longer side once, at load
    repeats: int = 4  # each training frame gives this many random crops per epoch
    crop_area: tuple[float, float] = (0.3, 1.0)  # each crop's share of the frame's area, drawn uniformly
    frame_aspect: bool = False  # crops' aspect ratios around the frame's own (data.crop_box)
    wide_crop_area: tuple[float, float] | None = None  # crop_area for frames wider than 5:4 (None: crop_area)
    transpose_square: bool = False  # square frames' crops also transposed at random (90° turns)
    # Targets' brightness and colour varied in linear light (data.recolour): log2 half-ranges of
    # a gain shared by the channels and of each channel's own; (0, 0) leaves them as filmed.
    recolour: tuple[float, float] = (0.0, 0.0)
    lr: float = 5e-4
    lr_min: float = 1e-5  # cosine schedule from lr to lr_min over all epochs
    # The chroma curve's start rate (ModelConfig.chroma_knots; None: lr): a few log gains that
    # move by tenths, where the network's weights move by thousandths. With lr = lr_min = 0 the
    # network is frozen and only the curve trains (no backward pass through the network).
    chroma_lr: float | None = None
    weight_decay: float = 0.0
    # Decay per step of an exponential moving average of the weights (0: none). With one, the
    # average is what is validated and kept as best / last (single epochs' weights scatter by
    # ~0.3 dB of validation PSNR around the plateau). Measured at 0.998 on the twentieth stage:
    # smooth, but below averaging a stage's end with its start (README, training).
    ema: float = 0.0
    val_max_side: int = 384
    seed: int = 0
    device: str = "auto"
    max_frames: int | None = None  # use only the first N training frames (tests, smoke runs)
    loss_mask: bool = False  # Lm and Lt over the target's field of view minus specular highlights
    protocol: str = "endoscope"  # the degradation protocol of the pairs (endolight.degrade.PROTOCOLS)
    init_weights: str | None = None  # fine-tune: start from these weights (ignored on --resume)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossWeights = field(default_factory=LossWeights)
    degrade: DegradeConfig = field(default_factory=DegradeConfig)

    def __post_init__(self) -> None:
        check_crop_area(self.crop_area)  # a bad config fails when loaded, not mid-run
        if self.wide_crop_area is not None:
            check_crop_area(self.wide_crop_area)
        if not all(0.0 <= r < float("inf") for r in self.recolour) or len(self.recolour) != 2:
            raise ValueError(f"recolour must be two finite log2 half-ranges >= 0, got {self.recolour}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")


def _build(cls: type, data: dict[str, Any]) -> Any:
    names = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    conv = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**conv)


def _read_toml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file's keys on top of those of the config it names as ``base`` (a path relative
    to it; bases may have bases): a stage states only what differs from the stage it repeats.
    Top-level keys replace the base's; a section (``[model]``, ...) replaces key by key."""
    if path.resolve() in seen:
        raise ValueError(f"config base cycle: {' -> '.join(str(p) for p in (*seen, path.resolve()))}")
    with open(path, "rb") as fh:
        data = tomllib.load(fh)
    base = data.pop("base", None)
    if base is None:
        return data
    merged = _read_toml(path.parent / base, (*seen, path.resolve()))
    for key, value in data.items():
        both_tables = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = {**merged[key], **value} if both_tables else value
    return merged


def load_config(path: str | Path | None, **overrides: Any) -> TrainConfig:
    """Read a TOML config (sections ``[model]``, ``[loss]``, ``[degrade]``; the rest is top level;
    ``base = "other.toml"`` starts from another config's keys, see :func:`_read_toml`).

    The pairs follow the named ``protocol`` (top level, or the ``protocol`` override); a
    ``[degrade]`` section changes single fields of that protocol's :class:`DegradeConfig`.
    """
    data = _read_toml(Path(path)) if path else {}
    protocol = overrides.pop("protocol", None) or data.get("protocol", DEFAULT_PROTOCOL)
    data["protocol"] = protocol
    section = data.pop("degrade", {})
    checked = _build(DegradeConfig, section)  # unknown keys and bad values fail here
    sub = {
        "model": _build(ModelConfig, data.pop("model", {})),
        "loss": _build(LossWeights, data.pop("loss", {})),
        "degrade": replace(protocol_config(protocol), **{k: getattr(checked, k) for k in section}),
    }
    cfg = _build(TrainConfig, {**data, **sub})
    return replace(cfg, **{k: v for k, v in overrides.items() if v is not None})


def _init_distributed(device: torch.device) -> tuple[torch.device, int, int]:
    """Join the ``torchrun`` process group if there is one; returns ``(device, rank, world_size)``.

    A single process (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) is left alone: rank 0 of 1.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return device, 0, 1
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, dist.get_rank(), dist.get_world_size()


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    val_loss: float
    val_psnr: float
    val_ssim: float
    lr: float
    seconds: float


def validation_pairs(
    cfg: TrainConfig, refs: list[FrameRef] | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The fixed validation pairs: whole val frames (default: the val split), shrunk, degraded
    with fixed seeds."""
    if refs is None:
        refs = list_frames("val", Path(cfg.data_root) if cfg.data_root else None)
        if cfg.max_frames:
            refs = refs[: max(2, cfg.max_frames // 4)]
    pairs = []
    for i, ref in enumerate(refs):
        target = to_tensor(load_frame(ref, cfg.val_max_side))
        dim, target, _ = degraded_pair(target, VAL_SEED + i, cfg.degrade)
        pairs.append((dim[None], target[None]))
    return pairs


@torch.no_grad()
def validate(model: DeepUPE, pairs: list[tuple[torch.Tensor, torch.Tensor]], cfg: TrainConfig,
             device: torch.device) -> tuple[float, float, float]:
    """Mean (loss, PSNR, SSIM) over the validation pairs."""
    model.eval()
    losses, psnrs, ssims = [], [], []
    for dim, target in pairs:
        dim, target = dim.to(device), target.to(device)
        pred = model(dim)
        mask = tissue_weights(target) if cfg.loss_mask else None
        terms = total_loss(pred.denoised, pred.illumination, pred.output, target, cfg.loss, mask,
                           cfg.model.black_offset)
        losses.append(float(terms["loss"]))
        psnrs.append(float(psnr(pred.output, target)[0]))
        ssims.append(float(ssim(pred.output, target)[0]))
    model.train()
    return float(np.mean(losses)), float(np.mean(psnrs)), float(np.mean(ssims))


def train(
    cfg: TrainConfig,
    resume: bool = False,
    on_step: Callable[[int, int, dict[str, float]], None] | None = None,
    on_epoch: Callable[[EpochLog], None] | None = None,
    train_refs: list[FrameRef] | None = None,
    val_refs: list[FrameRef] | None = None,
) -> list[EpochLog]:
    """Train (or resume) a model; writes ``last``/``best`` checkpoints and ``log.csv`` in ``out_dir``.

    ``train_refs`` / ``val_refs`` replace the fixed split's train / val frames (e.g. a user's own
    footage in ``endolight adapt``); ``max_frames`` then does not apply.

    Returns the log of the epochs run by this call (on rank 0; other ``torchrun`` ranks get ``[]``).
    """
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device, rank, world = _init_distributed(resolve_device(cfg.device))
    try:
        return _train(cfg, out, device, rank, world, resume, on_step, on_epoch, train_refs, val_refs)
    finally:
        if world > 1:
            dist.destroy_process_group()


# What a grown model adds (ModelConfig.local_blocks, global_hist, chroma_knots): zero updates at
# the start.
GROWN = ("coeffs.local_blocks.", "coeffs.hist.", "chroma_curve")


def _load_init_weights(model: DeepUPE, path: str, device: torch.device) -> None:
    """Load ``path`` into ``model``; only the layers a grown model adds (``GROWN``) may be missing.

    They start as zero updates, so the grown model starts from the same output as the weights
    it was given.
    """
    try:
        missing, unexpected = model.load_state_dict(load_file(path, device=str(device)), strict=False)
    except RuntimeError as err:  # a tensor of another shape
        raise ValueError(f"init_weights {path} do not fit the model: {err}") from None
    foreign = [k for k in missing if not k.startswith(GROWN)] + list(unexpected)
    if foreign:
        raise ValueError(f"init_weights {path} do not fit the model: {', '.join(foreign[:4])}")


def _param_groups(model: DeepUPE, cfg: TrainConfig) -> list[dict[str, Any]]:
    """The optimiser's groups: the network at ``lr``, the chroma curve at ``chroma_lr``; the
    network frozen when ``lr`` and ``lr_min`` are 0."""
    curve = [p for n, p in model.named_parameters() if n == "chroma_curve"]
    rest = [p for n, p in model.named_parameters() if n != "chroma_curve"]
    if cfg.lr == 0.0 and cfg.lr_min == 0.0 and curve:
        for p in rest:
            p.requires_grad_(False)
        rest = []
    groups = [{"params": rest, "lr": cfg.lr}] if rest else []
    if curve:
        groups.append({"params": curve, "lr": cfg.lr if cfg.chroma_lr is None else cfg.chroma_lr})
    return groups


def _train(
    cfg: TrainConfig,
    out: Path,
    device: torch.device,
    rank: int,
    world: int,
    resume: bool,
    on_step: Callable[[int, int, dict[str, float]], None] | None,
    on_epoch: Callable[[EpochLog], None] | None,
    train_refs: list[FrameRef] | None = None,
    val_refs: list[FrameRef] | None = None,
) -> list[EpochLog]:
    seed_everything(cfg.seed)
    model = DeepUPE(cfg.model).to(device)
    opt = torch.optim.Adam(_param_groups(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs, eta_min=cfg.lr_min)
    start, best = 0, -float("inf")
    state_path = out / "last.state.pt"
    state = load_trainer_state(state_path) if resume and state_path.is_file() else None
    if state is not None:
        last = load_file(str(out / "last.safetensors"), device=str(device))
        model.load_state_dict(state.get("raw", last))  # with an average, last holds the average
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        # Resuming with another ``epochs`` continues on a cosine schedule that ends there (the
        # saved T_max would otherwise win); unchanged ``epochs`` leaves the schedule as it was.
        sched.T_max = cfg.epochs
        start, best = state["epoch"], state["best_psnr"]
        torch.set_rng_state(state["torch_rng"])
    elif cfg.init_weights:
        _load_init_weights(model, cfg.init_weights, device)
    net = model  # the bare network; ``model`` is what trains
    average = None
    if cfg.ema:
        average = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema))
        if state is not None and "raw" in state:
            average.module.load_state_dict(last)
            average.n_averaged.fill_(state["averaged"])
    kept = net if average is None else average.module  # what is validated and saved
    if world > 1:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    main = rank == 0
    if not main:
        on_step = on_epoch = None

    refs = train_refs
    if refs is None:
        refs = list_frames("train", Path(cfg.data_root) if cfg.data_root else None)
        if cfg.max_frames:
            refs = refs[:: max(1, len(refs) // cfg.max_frames)][: cfg.max_frames]
    dataset = PairDataset(refs, cfg.crop, cfg.max_side, cfg.degrade, cfg.seed, cfg.repeats, cfg.crop_area,
                          frame_aspect=cfg.frame_aspect, transpose_square=cfg.transpose_square,
                          wide_crop_area=cfg.wide_crop_area, recolour=cfg.recolour)
    val_pairs = validation_pairs(cfg, val_refs) if main else []
    logs: list[EpochLog] = []
    if main:
        (out / "config.json").write_text(_config_json(cfg))
    for epoch in range(start, cfg.epochs):
        t0 = time.time()
        dataset.epoch = epoch
        if world > 1:
            sampler = DistributedSampler(dataset, world, rank, shuffle=True, seed=cfg.seed * 7919,
                                         drop_last=True)
            sampler.set_epoch(epoch)
            loader = DataLoader(dataset, batch_size=cfg.batch_size, sampler=sampler, drop_last=True)
        else:
            loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                generator=torch.Generator().manual_seed(cfg.seed * 7919 + epoch))
        model.train()
        run_loss = []
        for step, (dim, target) in enumerate(loader):
            dim, target = dim.to(device), target.to(device)
            pred = model(dim)
            mask = tissue_weights(target) if cfg.loss_mask else None
            terms = total_loss(pred.denoised, pred.illumination, pred.output, target, cfg.loss, mask,
                               cfg.model.black_offset)
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            opt.step()
            if average is not None:
                average.update_parameters(net)
            run_loss.append(terms["loss"].item())
            if on_step:
                with torch.no_grad():
                    p = float(psnr(pred.output, target).mean())
                on_step(step + 1, len(loader), {"loss": run_loss[-1], "psnr": p})
        lr = opt.param_groups[0]["lr"]
        sched.step()
        train_loss = float(np.mean(run_loss))
        if world > 1:
            mean = torch.tensor([train_loss], dtype=torch.float64, device=device)
            dist.all_reduce(mean)
            train_loss = float(mean) / world
        if not main:
            continue
        v_loss, v_psnr, v_ssim = validate(kept, val_pairs, cfg, device)
        log = EpochLog(epoch + 1, train_loss, v_loss, v_psnr, v_ssim, lr, time.time() - t0)
        meta = {"epoch": epoch + 1, "val_psnr": v_psnr, "val_ssim": v_ssim}
        if v_psnr > best:
            best = v_psnr
            save_weights(kept, out / "best.safetensors", meta)
        save_weights(kept, out / "last.safetensors", meta)
        trainer = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch + 1,
                   "best_psnr": best, "torch_rng": torch.get_rng_state()}
        if average is not None:  # the training weights themselves, to resume from
            trainer.update(raw=net.state_dict(), averaged=int(average.n_averaged))
        save_trainer_state(trainer, state_path)
        _append_csv(out / "log.csv", log)
        logs.append(log)
        if on_epoch:
            on_epoch(log)
    return logs


def _config_json(cfg: TrainConfig) -> str:
    import json

    return json.dumps(asdict(cfg), indent=2, sort_keys=True)


def _append_csv(path: Path, log: EpochLog) -> None:
    row = asdict(log)
    new = not path.exists()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
