"""Weight averaging: one model from several trained weights files of the same model.

A "model soup" (Wortsman et al., ICML 2022): runs fine-tuned from the same weights stay in one
basin of the loss, where the average of their weights scores above each of them; averaging a
fine-tuned model with the weights it started from (WiSE-FT, Wortsman et al., CVPR 2022) keeps
part of what the start generalised to. The shipped default weights are such an average (README,
"Training the shipped weights").
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from safetensors import SafetensorError

from endolight.checkpoint import load_model
from endolight.model import DeepUPE


def load_all(paths: Sequence[str | Path]) -> list[DeepUPE]:
    """The models in ``paths`` (files or shipped names), checked to be two or more of one model.

    Raises:
        ValueError: fewer than two files, a file that is not a weights file, or files of
            different model configurations.
        FileNotFoundError: a file does not exist.
    """
    if len(paths) < 2:
        raise ValueError(f"averaging needs at least two weights files, got {len(paths)}")
    models = [_load(p) for p in paths]
    for path, model in zip(paths[1:], models[1:], strict=True):
        if model.cfg != models[0].cfg:
            raise ValueError(f"{path} is another model than {paths[0]} (model configs differ)")
    return models


def average(models: Sequence[DeepUPE]) -> DeepUPE:
    """A new model whose weights are the uniform average of ``models``' (one configuration),
    summed and divided in float64 and rounded to float32 once."""
    states = [m.state_dict() for m in models]
    out = DeepUPE(models[0].cfg).eval()
    out.load_state_dict({k: (sum(s[k].double() for s in states) / len(states)).to(v.dtype)
                         for k, v in states[0].items()})
    return out


def average_weights(paths: Sequence[str | Path]) -> DeepUPE:
    """:func:`average` of :func:`load_all` (its errors)."""
    return average(load_all(paths))


def _load(path: str | Path) -> DeepUPE:
    """:func:`load_model`, a file that is not one of its weights files said so."""
    try:
        return load_model(path)
    except (SafetensorError, KeyError, RuntimeError) as exc:  # not safetensors, no config, other tensors
        raise ValueError(f"{path}: not a weights file of this project ({exc})") from None
