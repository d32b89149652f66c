"""One registry of enhancers, so every row of a comparison table is the same call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from endolight.fidelity import FidelityConfig
from endolight.methods import classical, dped, feqe, retinexnet, zero_dce

Method = Callable[[np.ndarray], np.ndarray]

METHODS: dict[str, Method] = {
    "identity": classical.identity,
    "gamma": classical.auto_gamma,
    "he": classical.histogram_equalisation,
    "clahe": classical.clahe,
    "msrcr": classical.msrcr,
    "lime": classical.lime,
}


@dataclass(frozen=True)
class Learned:
    """A learned comparator: its module (``Config``, ``Net``, ``Trainer``) and its settings."""

    module: ModuleType
    config: Any

    def build(self) -> Any:
        return self.module.Net(self.config)


LEARNED: dict[str, Learned] = {
    "retinexnet": Learned(retinexnet, retinexnet.Config()),
    "feqe": Learned(feqe, feqe.Config()),
    "dped": Learned(dped, dped.Config()),
    "zero-dce": Learned(zero_dce, zero_dce.Config()),
    "zero-dce++": Learned(zero_dce, zero_dce.Config.plus_defaults()),
}
COMPARE_RUNS = Path("runs/compare")  # where `endolight compare` caches trained comparators


# Method-name suffixes -> FidelityConfig fields, so option rows of eval/compare are one name each.
FIDELITY_OPTIONS: dict[str, dict[str, Any]] = {
    "hue": {"preserve_hue": True},
    "highlights": {"highlights": True},
    "mask_stats": {"mask_stats": True},
}


def fidelity_options(name: str) -> FidelityConfig:
    """The :class:`~endolight.fidelity.FidelityConfig` named by ``"endolight+opt+opt"``.

    Raises:
        KeyError: an unknown option.
    """
    fields: dict[str, Any] = {}
    for opt in name.split("+")[1:]:
        if opt not in FIDELITY_OPTIONS:
            raise KeyError(f"unknown endolight option {opt!r} in {name!r}; "
                           f"choose from {list(FIDELITY_OPTIONS)}")
        fields.update(FIDELITY_OPTIONS[opt])
    return FidelityConfig(**fields)


def comparator_weights(name: str, runs_dir: str | Path = COMPARE_RUNS) -> Path:
    return Path(runs_dir) / f"{name}.safetensors"


def get_method(name: str, weights: str | Path | None = None, device: str = "auto") -> Method:
    """Look up a method by name; ``"endolight"`` is our model (``weights``: default shipped), with
    fidelity options as ``+`` suffixes (``"endolight+hue+highlights"``, see :data:`FIDELITY_OPTIONS`); a
    learned comparator loads ``weights`` (default: its checkpoint from ``endolight compare``).

    Raises:
        KeyError: unknown name.
        FileNotFoundError: a learned method's weights file is missing.
    """
    if name.split("+")[0] == "endolight":
        from endolight.enhancer import Enhancer

        return Enhancer(weights, device=device, fidelity=fidelity_options(name)).enhance_array
    if name in LEARNED:
        from endolight.device import resolve_device
        from endolight.methods.learned import NetMethod, load_net

        path = Path(weights) if weights else comparator_weights(name)
        if not path.is_file():
            raise FileNotFoundError(f"{name}: weights {path} not found (run `endolight compare` first)")
        spec = LEARNED[name]
        return NetMethod(load_net(path, spec.module.Config, spec.module.Net), resolve_device(device))
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; choose from {['endolight', *METHODS, *LEARNED]} "
                       f"(endolight takes options: {'+'.join(['endolight', *FIDELITY_OPTIONS])})")
    return METHODS[name]


def get_methods(names: list[str], ours: str | Path | None = None, runs_dir: str | Path = COMPARE_RUNS,
                device: str = "auto") -> dict[str, Method]:
    """:func:`get_method` of each name: learned comparators from ``runs_dir`` (``endolight
    compare``'s cache), our model's rows (``"endolight..."``) with the weights ``ours``."""
    def weights(name: str) -> str | Path | None:
        if name in LEARNED:
            return comparator_weights(name, runs_dir)
        return ours if name.startswith("endolight") else None

    return {name: get_method(name, weights(name), device) for name in names}
