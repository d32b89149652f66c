"""Paired frames (dim input, well-lit target) for evaluation: on disk or synthesized."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from endolight.data import FrameRef, degraded_pair, list_frames, load_frame
from endolight.degrade import DegradeConfig
from endolight.io.images import InputError, expand_sources, read_image, write_image
from endolight.io.tensors import to_tensor, to_uint8

EVAL_SEED = 2026  # the held-out split's degradations: frame i uses seed EVAL_SEED + i


@dataclass
class Pair:
    name: str
    organ: str
    dim: np.ndarray  # (H, W, 3) uint8 RGB
    target: np.ndarray  # (H, W, 3) uint8 RGB
    params: dict[str, float]


def make_pair(target: np.ndarray, seed: int, cfg: DegradeConfig) -> tuple[np.ndarray, dict[str, float]]:
    """Degrade one uint8 frame with a seed; returns the uint8 dim frame and its parameters."""
    dim, _, params = degraded_pair(to_tensor(target), seed, cfg)
    return to_uint8(dim), params


def synthesized_pairs(
    refs: list[FrameRef], seed: int = EVAL_SEED, cfg: DegradeConfig | None = None,
    max_side: int | None = None,
) -> Iterator[Pair]:
    """Pairs made on the fly from real frames, frame ``i`` degraded with seed ``seed + i``."""
    cfg = cfg or DegradeConfig()
    for i, ref in enumerate(refs):
        target = load_frame(ref, max_side)
        dim, params = make_pair(target, seed + i, cfg)
        yield Pair(ref.name, ref.organ, dim, target, {"seed": seed + i, **params})


def heldout_pairs(max_side: int | None = None, root: Path | None = None,
                  cfg: DegradeConfig | None = None) -> Iterator[Pair]:
    """The project's fixed synthesized held-out pairs (never trained on), degraded with ``cfg``
    (default: the ``endoscope`` protocol)."""
    return synthesized_pairs(list_frames("heldout", root), EVAL_SEED, cfg or DegradeConfig(), max_side)


def write_pairs(
    pairs: Iterator[Pair], out_dir: Path, on_item: Callable[[str], None] | None = None
) -> int:
    """Write ``dim/NAME.png``, ``target/NAME.png`` and ``manifest.csv`` (+ JSON) to ``out_dir``."""
    rows = []
    for pair in pairs:
        write_image(out_dir / "dim" / f"{pair.name}.png", pair.dim)
        write_image(out_dir / "target" / f"{pair.name}.png", pair.target)
        rows.append({"name": pair.name, "organ": pair.organ, **pair.params})
        if on_item:
            on_item(pair.name)
    if rows:
        with (out_dir / "manifest.csv").open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        (out_dir / "manifest.json").write_text(json.dumps(rows, indent=1))
    return len(rows)


def pairs_from_dir(folder: Path) -> Iterator[Pair]:
    """Read pairs written by :func:`write_pairs` (or any ``dim/`` + ``target/`` of same names).

    Raises:
        InputError: the folder lacks ``dim/`` or ``target/``, or a dim frame has no target.
    """
    dim_dir, tgt_dir = folder / "dim", folder / "target"
    if not dim_dir.is_dir() or not tgt_dir.is_dir():
        raise InputError(f"{folder}: expected sub-folders dim/ and target/ (as written by synth)")
    organs = {}
    manifest = folder / "manifest.csv"
    if manifest.is_file():
        with manifest.open() as fh:
            organs = {r["name"]: r.get("organ", "all") for r in csv.DictReader(fh)}
    for path in expand_sources(dim_dir):
        targets = sorted(tgt_dir.glob(path.stem + ".*"))
        if not targets:
            raise InputError(f"{path}: no target frame named {path.stem}.* in {tgt_dir}")
        dim, target = read_image(path), read_image(targets[0])
        if dim.shape != target.shape:
            raise InputError(f"{path}: size {dim.shape} differs from its target {target.shape}")
        yield Pair(path.stem, organs.get(path.stem, "all"), dim, target, {})
