"""What every learned comparator shares: config serialisation, the step-based training loop on
the project's on-the-fly pairs, checkpoints, and the wrapper that makes a network a ``Method``.

A learned comparator lives in its own module (``retinexnet``, ``feqe``, ``dped``, ``zero_dce``)
and provides ``Config`` (a dataclass with :class:`JsonConfig`), ``Net`` (an ``nn.Module`` whose
``forward`` maps ``(B, 3, H, W)`` float [0, 1] to an enhanced image of the same shape, in [0, 1])
and ``Trainer`` (``Trainer(net, steps, lr)``; ``step(dim, target) -> dict`` runs one optimisation
step and returns its loss terms, the objective under ``"loss"``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader

from endolight.checkpoint import read_metadata, save_weights
from endolight.data import PairDataset
from endolight.io.atomic import atomic_write
from endolight.io.images import validate_frame
from endolight.io.tensors import to_tensor, to_uint8


class JsonConfig:
    """``to_json`` / ``from_json`` for a dataclass config, so it travels inside the checkpoint
    (the same contract as :class:`endolight.model.ModelConfig`, which ``save_weights`` uses)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)  # type: ignore[call-overload]

    @classmethod
    def from_json(cls, text: str) -> Any:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known})


class ResBlock(nn.Module):
    """Residual block ``x + body(x)``, body = conv3x3-IN-ReLU-conv3x3-IN: FEQE's block; DPED's
    ends with one more ReLU (``relu_out``). One class, so the layer indices (and checkpoint
    keys) are the same for both."""

    def __init__(self, c: int, relu_out: bool = False) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1), nn.InstanceNorm2d(c, affine=True), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, padding=1), nn.InstanceNorm2d(c, affine=True),
            *([nn.ReLU(inplace=True)] if relu_out else []),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Trainer(Protocol):
    net: nn.Module

    def step(self, dim: torch.Tensor, target: torch.Tensor) -> dict[str, float]: ...


def cosine_lr(
    opt: torch.optim.Optimizer, steps: int, floor: float = 0.05
) -> torch.optim.lr_scheduler.LambdaLR:
    """Every learned method's schedule: cosine from the base rate to ``floor`` x base over ``steps``."""

    def factor(i: int) -> float:
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(i, steps) / max(steps, 1)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@dataclass(frozen=True)
class Budget:
    """The training budget every learned method gets: same steps, batch, crop and pairs."""

    # Ten times the first release's 200: every method's training-loss curve is flat at the end
    # (docs/results.md), at 4.4 h of one-thread CPU training for the whole table.
    steps: int = 2000
    batch_size: int = 8
    crop: int = 128
    seed: int = 0


def batches(dataset: PairDataset, budget: Budget,
            start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches ``start + 1`` to ``budget.steps`` of one sequence, the same for every method (seeded
    per epoch). The skipped batches are never built: only their indices are drawn."""
    done, epoch = 0, 0
    while done < budget.steps:
        dataset.epoch = epoch
        # The indices, drawn as a shuffling loader over the dataset would draw them.
        shuffle = torch.Generator().manual_seed(budget.seed * 7919 + epoch)
        order = [b.tolist() for b in DataLoader(range(len(dataset)), batch_size=budget.batch_size,
                                                shuffle=True, drop_last=True, generator=shuffle)]
        if not order:
            raise ValueError(f"{len(dataset)} training pairs make no batch of {budget.batch_size}")
        order = order[: budget.steps - done]
        skip = min(len(order), max(0, start - done))
        if skip < len(order):
            yield from DataLoader(dataset, batch_sampler=order[skip:])
        done += len(order)
        epoch += 1


SNAPSHOT_EVERY = 100  # steps between the resumable snapshots of :func:`fit`


@dataclass
class Fitted:
    log: list[dict[str, float]]  # every step's loss terms
    seconds: float  # training time, over every resumed part


def trainer_state(trainer: Trainer) -> dict[str, Any]:
    """What a trainer carries from step to step: its networks, optimisers and schedules (and
    lists of them), and plain counters."""
    state: dict[str, Any] = {}
    for name, value in vars(trainer).items():
        if hasattr(value, "state_dict"):
            state[name] = value.state_dict()
        elif isinstance(value, list) and value and all(hasattr(v, "state_dict") for v in value):
            state[name] = [v.state_dict() for v in value]
        elif isinstance(value, int | float):  # e.g. RetinexNet's step counter
            state[name] = value
    return state


def load_trainer_state(trainer: Trainer, state: dict[str, Any]) -> None:
    """Restore what :func:`trainer_state` saved."""
    for name, value in state.items():
        current = getattr(trainer, name)
        if isinstance(value, list):
            for obj, saved in zip(current, value, strict=True):
                obj.load_state_dict(saved)
        elif hasattr(current, "load_state_dict"):
            current.load_state_dict(value)
        else:
            setattr(trainer, name, value)


def fit(
    trainer: Trainer,
    dataset: PairDataset,
    budget: Budget,
    device: torch.device,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    snapshot: Path | None = None,
    tag: str = "",
    every: int = SNAPSHOT_EVERY,
) -> Fitted:
    """Run ``trainer.step`` on every batch of :func:`batches`.

    With ``snapshot``, the trainer's state and the log so far are written there (atomically)
    every ``every`` steps, and a run that finds a snapshot with the same ``tag`` (what the
    caller's run is: its config) goes on from it. The result is the uninterrupted run's (tested
    for every trainer; none draws random numbers in a step). The caller removes the snapshot
    once it has saved the result.
    """
    trainer.net.to(device).train()
    log: list[dict[str, float]] = []
    before = 0.0
    if snapshot is not None and snapshot.is_file():
        saved = torch.load(snapshot, map_location=device, weights_only=True)
        if saved["tag"] == tag:
            load_trainer_state(trainer, saved["trainer"])
            log, before = saved["log"], saved["seconds"]
    t0 = time.perf_counter()
    for i, (dim, target) in enumerate(batches(dataset, budget, len(log)), start=len(log)):
        terms = trainer.step(dim.to(device), target.to(device))
        if not all(np.isfinite(v) for v in terms.values()):
            raise FloatingPointError(f"non-finite loss at step {i + 1}: {terms}")
        log.append(terms)
        if snapshot is not None and (i + 1) % every == 0 and i + 1 < budget.steps:
            state = {"tag": tag, "trainer": trainer_state(trainer), "log": log,
                     "seconds": before + time.perf_counter() - t0}
            atomic_write(snapshot, lambda tmp, s=state: torch.save(s, tmp))
        if on_step:
            on_step(i + 1, terms)
    trainer.net.eval()
    return Fitted(log, before + time.perf_counter() - t0)


def save_net(net: nn.Module, path: str | Path, method: str, meta: dict[str, Any] | None = None) -> None:
    """Weights + config (+ ``meta``) of a comparator, atomically (reuses ``save_weights``)."""
    save_weights(net, path, {"method": method, **(meta or {})})  # type: ignore[arg-type]


def load_net(path: str | Path, config_cls: type, net_cls: type) -> nn.Module:
    """Rebuild a comparator saved by :func:`save_net`, in eval mode."""
    cfg = config_cls.from_json(read_metadata(path)["model_config"])
    net = net_cls(cfg)
    net.load_state_dict(load_file(str(path)))
    return net.eval()


class NetMethod:
    """A comparator network as a ``Method``: ``(H, W, 3)`` uint8 RGB in, same out."""

    def __init__(self, net: nn.Module, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> np.ndarray:
        x = to_tensor(validate_frame(image))[None].to(self.device)
        return to_uint8(self.net(x)[0].cpu())
