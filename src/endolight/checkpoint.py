"""Checkpoints: weights in safetensors with the model config in its metadata, plus trainer state."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, safe_open, save_file

from endolight.io.atomic import atomic_write
from endolight.model import DeepUPE, ModelConfig

DEFAULT_WEIGHTS = "endolight-default.safetensors"
# Weights shipped in the package, selectable by name wherever a weights path is accepted.
SHIPPED_WEIGHTS = {
    "default": DEFAULT_WEIGHTS,  # noise-aware model, endoscope protocol (configs/default.toml)
    # DeepUPE's per-channel model, paper protocol (configs/paper-dequantise.toml)
    "paper": "endolight-paper.safetensors",
}


def save_weights(model: DeepUPE, path: str | Path, meta: dict[str, Any] | None = None) -> None:
    """Write the model's weights and config (and any ``meta``, JSON-encoded) atomically."""
    metadata = {"model_config": model.cfg.to_json()}
    metadata.update({k: json.dumps(v) for k, v in (meta or {}).items()})
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a weights file, JSON-decoded (``model_config`` stays a JSON string)."""
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    return {k: v if k == "model_config" else json.loads(v) for k, v in meta.items()}


def default_weights_path(name: str = "default") -> Path:
    """A weights file shipped inside the package (``SHIPPED_WEIGHTS``)."""
    return Path(str(resources.files("endolight") / "weights" / SHIPPED_WEIGHTS[name]))


def resolve_weights(path: str | Path | None) -> Path:
    """A weights path: ``None`` is the shipped default, a name of ``SHIPPED_WEIGHTS`` (``"paper"``)
    that is not an existing file is that shipped file, anything else a path."""
    if not path:
        return default_weights_path()
    name = str(path)
    if name in SHIPPED_WEIGHTS and not Path(name).exists():
        return default_weights_path(name)
    return Path(path)


def load_model(path: str | Path | None = None, device: str | torch.device = "cpu") -> DeepUPE:
    """Build a :class:`DeepUPE` from a weights file or a shipped name (default: the shipped
    default weights; ``"paper"``: the paper preset), in eval mode.

    Raises:
        FileNotFoundError: the weights file does not exist.
    """
    p = resolve_weights(path)
    if not p.is_file():
        raise FileNotFoundError(f"weights file {p} not found")
    cfg = ModelConfig.from_json(read_metadata(p)["model_config"])
    model = DeepUPE(cfg)
    model.load_state_dict(load_file(str(p)))
    return model.to(device).eval()


def save_trainer_state(state: dict[str, Any], path: str | Path) -> None:
    """Optimizer, scheduler and progress, for ``--resume`` (torch pickle, written atomically)."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_trainer_state(path: str | Path) -> dict[str, Any]:
    return torch.load(str(path), map_location="cpu", weights_only=False)
