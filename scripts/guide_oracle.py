"""Would an edge-aware step on the denoiser's full-resolution guide close the noisy frames' gap?

The guided filter's output is ``a * G + b``: where ``a`` is near 1 (edges, texture) the guide
``G = Y + blur (B - Y)`` passes into the denoised frame noise included (``B``: the 3x3 binomial
blur of the luma ``Y``). Each variant here replaces ``G`` at full resolution, nothing else:

* ``lee``: a Lee (local Wiener) step on ``G``, ``M + k (G - M)`` with ``M, V`` the 3x3 binomial
  mean and variance of ``G`` and ``k = V / (V + eps)``: flat regions take ``M``, edges keep ``G``
  (shipped since: ``ModelConfig.denoise_lee``, ``filter_guide``'s ``lee``).
* ``adaptive``: the blur per pixel, ``B + k (G - B)`` with ``k`` from the binomial variance of
  ``Y`` itself (no second pass over ``G``).
* ``coring``: ``B + k (G - B)`` with ``k = d^2 / (d^2 + eps)``, ``d = Y - B`` (no variance at all).

Prints PSNR / SSIM overall and per organ on the synthesized held-out pairs (384 px), the model
run by its PyTorch reference (without the enhancer's border flattening, so a little below
``endolight eval``'s figures), each variant in place of the weights' own guide (weights trained
without the Lee step: ``shipped`` is their guide).

    python scripts/guide_oracle.py --weights W [--variants shipped,lee]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
import torch

import endolight.model.denoise as denoise_module
from endolight.checkpoint import load_model
from endolight.io.tensors import to_tensor
from endolight.metrics import psnr, ssim
from endolight.model.denoise import binomial3, binomial_moments, filter_guide
from endolight.pairs import heldout_pairs

Guide = Callable[[torch.Tensor, float], torch.Tensor]


def adaptive(y: torch.Tensor, blur: float, eps: float) -> torch.Tensor:
    mean, var = binomial_moments(y)
    return mean + var / (var + eps) * (filter_guide(y, blur) - mean)


def coring(y: torch.Tensor, blur: float, eps: float) -> torch.Tensor:
    b = binomial3(y)
    d2 = (y - b) ** 2
    return b + d2 / (d2 + eps) * (filter_guide(y, blur) - b)


VARIANTS: dict[str, Guide] = {
    "shipped": filter_guide,
    "lee": partial(filter_guide, lee=4e-4),
    "adaptive": partial(adaptive, eps=1.6e-3),
    "coring": partial(coring, eps=1.6e-3),
}


@contextmanager
def guided_by(guide: Callable[[torch.Tensor, float, float], torch.Tensor]):
    """The model's full-resolution denoising (``endolight.model.denoise.denoise``) with
    ``guide(y, blur, lee)`` in place of :func:`filter_guide` (``denoise`` looks it up by its
    module-level name at each call)."""
    shipped = denoise_module.filter_guide
    denoise_module.filter_guide = guide
    try:
        yield
    finally:
        denoise_module.filter_guide = shipped


@torch.no_grad()
def score(model: torch.nn.Module, pairs: list, before: Callable[[tuple], None] | None = None
          ) -> dict[str, tuple[float, float]]:
    """Mean PSNR / SSIM of ``model``'s output per organ and ``"all"`` over ``(organ, dim,
    target, ...)`` pairs; ``before(pair)`` runs ahead of each (scripts/noise_oracle.py)."""
    per: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for pair in pairs:
        if before is not None:
            before(pair)
        organ, dim, target = pair[:3]
        out = model(dim).output
        row = (float(psnr(out, target)[0]), float(ssim(out, target)[0]))
        per[organ].append(row)
        per["all"].append(row)
    return {k: tuple(np.mean(v, axis=0)) for k, v in per.items()}


def print_table(weights: Path, results: dict[str, dict[str, tuple[float, float]]]) -> None:
    """One column per variant, one row per organ, ``"all"`` last."""
    names = list(results)
    organs = sorted(results[names[0]], key=lambda o: (o == "all", o))
    print(f"Weights: {weights}. PSNR / SSIM, held-out pairs at 384 px.\n")
    print("| organ | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for organ in organs:
        print(f"| {organ} | " + " | ".join(f"{results[n][organ][0]:.2f} / {results[n][organ][1]:.3f}"
                                          for n in names) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, required=True, help="weights trained without the Lee step")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    args = ap.parse_args()
    model = load_model(args.weights).eval()
    if model.cfg.guide_lee:
        raise SystemExit(f"{args.weights}: its guide already takes the Lee step; give weights without it")
    pairs = [(p.organ, to_tensor(p.dim)[None], to_tensor(p.target)[None]) for p in heldout_pairs(384)]
    results = {}
    for name in args.variants.split(","):
        # lee: 0 for the weights this takes (checked above)
        with guided_by(lambda y, blur, lee, variant=VARIANTS[name]: variant(y, blur)):
            results[name] = score(model, pairs)
    print_table(args.weights, results)


if __name__ == "__main__":
    main()
