"""Would the denoiser close the noisy frames' gap if it knew each frame's sensor noise?

The held-out frames that lose SSIM to DPED are those with the most read noise (README, Results):
a signal-independent noise in linear light, which sRGB's steep toe makes largest in the darkest
regions, where the model's thresholds are one constant for every level. Each variant here gives
the model's denoiser an oracle of the noise: the variance of the dim frame's luma at its local
level ``m``, from the frame's own degradation parameters (``peak``, ``read_noise``),

    var(m) = 0.446 * (d sRGB / d lin)^2 * (lin(m) / peak + read^2)

(0.446: the sum of the squared luma weights, channels' noise independent), and uses it as

* ``lee=K``: the guide's Lee threshold, ``max(lee, K var(M))`` per pixel (``M`` the guide's 3x3
  binomial mean) instead of the constant ``ModelConfig.denoise_lee``;
* ``eps=K``: the guided filter's edge threshold, ``eps + K var(m) / 16`` per shrunk pixel (the
  shrink by 4 averages ~16 pixels' noise).

Prints PSNR / SSIM overall and per organ on the synthesized held-out pairs (384 px), the model
run by its PyTorch reference (without the enhancer's border flattening, so a little below
``endolight eval``'s figures), no training.

    python scripts/noise_oracle.py [--weights W] [--variants none,lee=1,eps=1,lee=1+eps=1]
"""

from __future__ import annotations

import argparse
from contextlib import contextmanager
from pathlib import Path

import torch
from guide_oracle import guided_by, print_table, score  # this folder's sibling script

import endolight.model.deepupe as deepupe
from endolight.checkpoint import default_weights_path, load_model
from endolight.io.tensors import to_tensor
from endolight.model.denoise import (
    binomial_moments,
    box_mean,
    filter_guide,
    guided_coefficients,
    luma,
)
from endolight.pairs import heldout_pairs


def noise_variance(m: torch.Tensor, peak: float, read: float) -> torch.Tensor:
    """The sRGB luma's noise variance at sRGB level ``m`` of the endoscope protocol's
    Poisson-Gaussian noise (``endolight.degrade``: ``N(0, lin / peak + read^2)`` in linear light)."""
    m = m.clamp(0, 1)
    lin = torch.where(m > 0.04045, ((m + 0.055) / 1.055) ** 2.4, m / 12.92).clamp_min(1e-5)
    slope = torch.where(lin > 0.0031308, 1.055 / 2.4 * lin ** (1 / 2.4 - 1), torch.full_like(lin, 12.92))
    return 0.446 * slope**2 * (lin / peak + read**2)


@contextmanager
def told_the_noise(peak_read: dict[str, float], lee_k: float, eps_k: float):
    """The model's denoiser (its guide, ``deepupe.guided_coefficients``) with thresholds
    from :func:`noise_variance` of the frame whose ``peak`` and ``read`` are in ``peak_read``."""

    def guide(y, blur, lee):
        if lee_k == 0:
            return filter_guide(y, blur, lee)
        g = filter_guide(y, blur)
        mean, var = binomial_moments(g)
        threshold = torch.clamp_min(lee_k * noise_variance(mean, **peak_read), lee)
        return mean + var / (var + threshold) * (g - mean)

    def fit(small, radius, eps, box=box_mean):
        if eps_k:
            eps = eps + eps_k * noise_variance(box(luma(small), radius), **peak_read) / 16
        return guided_coefficients(small, radius, eps, box)

    shipped = deepupe.guided_coefficients
    deepupe.guided_coefficients = fit
    try:
        with guided_by(guide):
            yield
    finally:
        deepupe.guided_coefficients = shipped


def parse_variant(name: str) -> tuple[float, float]:
    """``none``, ``lee=K``, ``eps=K`` or ``lee=K+eps=K`` -> ``(lee_k, eps_k)``."""
    ks = {"lee": 0.0, "eps": 0.0}
    for part in name.split("+"):
        if part != "none":
            key, _, value = part.partition("=")
            if key not in ks:
                raise SystemExit(f"error: unknown variant {name!r} (none, lee=K, eps=K, lee=K+eps=K)")
            ks[key] = float(value)
    return ks["lee"], ks["eps"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", type=Path, default=default_weights_path("default"))
    ap.add_argument("--variants", default="none,lee=0.5,lee=1,lee=2,eps=1,eps=4,lee=1+eps=1")
    args = ap.parse_args()
    model = load_model(args.weights).eval()
    pairs = [(p.organ, to_tensor(p.dim)[None], to_tensor(p.target)[None], p.params)
             for p in heldout_pairs(384)]
    peak_read: dict[str, float] = {}

    def tell(pair: tuple) -> None:
        peak_read.update(peak=pair[3]["peak"], read=pair[3]["read_noise"])

    results = {}
    for name in args.variants.split(","):
        with told_the_noise(peak_read, *parse_variant(name)):
            results[name] = score(model, pairs, tell)
    print_table(args.weights, results)


if __name__ == "__main__":
    main()
