"""One registry of enhancers, so every row of a comparison table is the same call."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from endolight.methods import classical

Method = Callable[[np.ndarray], np.ndarray]

METHODS: dict[str, Method] = {
    "identity": classical.identity,
    "gamma": classical.auto_gamma,
    "clahe": classical.clahe,
}


def get_method(name: str, weights: str | Path | None = None, device: str = "auto") -> Method:
    """Look up a method by name; ``"endolight"`` is our model (``weights``: default shipped).

    Raises:
        KeyError: unknown name.
    """
    if name == "endolight":
        from endolight.enhancer import Enhancer

        return Enhancer(weights, device=device).enhance_array
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; choose from {['endolight', *METHODS]}")
    return METHODS[name]
