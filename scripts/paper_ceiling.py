"""What any per-pixel curve can reach under the ``paper`` protocol: the oracle inverse gamma.

The ``paper`` protocol darkens a frame by ``T ** gamma`` on each channel and rounds to 8 bits.
Inverting it with the true ``gamma`` of each frame (which no method is told) is the best any
global curve can do; what it still misses is what the 8-bit rounding of the dark frame destroyed.
Two more columns: ``I / S bound``, the target itself except where a channel of the dim frame
rounded to 0, which is 0 there: a model of DeepUPE's form ``R = I / S`` (the paper preset) outputs
0 there whatever ``S``, so this bounds its PSNR (and, short of errors elsewhere that happen to
raise a window's structure term, its SSIM); and ``dequantised``, each level mapped to
the middle of the targets that round to it, level 0 included (but not in the black border):
what a model with an additive term could reach. Prints PSNR / SSIM of each over the held-out
pairs, as ``endolight eval --protocol paper`` scores them (same pairs, same metrics), overall
and per organ, and the share of tissue pixels (``endolight.fov.detect_fov`` on the target) with
a channel at level 0.

    python scripts/paper_ceiling.py [--max-side 640]
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
import torch

from endolight.degrade import PROTOCOLS
from endolight.fov import detect_fov
from endolight.io.tensors import to_tensor
from endolight.metrics import psnr, ssim
from endolight.pairs import heldout_pairs


def oracle(dim: np.ndarray, gamma: float, dequantise: bool = False) -> np.ndarray:
    """The exact inverse of ``T ** gamma`` on 8-bit levels; with ``dequantise``, each level goes
    to the middle of the range of ``T`` that rounds to it."""
    levels = np.arange(256.0)
    if dequantise:
        low, high = np.clip(levels - 0.5, 0, 255) / 255, np.clip(levels + 0.5, 0, 255) / 255
        curve = (low ** (1 / gamma) + high ** (1 / gamma)) / 2
    else:
        curve = (levels / 255) ** (1 / gamma)
    return np.clip(np.round(curve * 255), 0, 255).astype(np.uint8)[dim]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-side", type=int, default=640, help="as endolight eval --max-side")
    args = parser.parse_args()
    scores: dict[str, list[list[float]]] = defaultdict(list)
    zeros = []
    for pair in heldout_pairs(args.max_side, cfg=PROTOCOLS["paper"]):
        target, fov = to_tensor(pair.target)[None], detect_fov(pair.target)
        bound = pair.target.copy()
        bound[pair.dim == 0] = 0
        score = []
        for out in (oracle(pair.dim, pair.params["gamma_edge"]),
                    oracle(pair.dim, pair.params["gamma_edge"], dequantise=True), bound):
            out[(pair.dim == 0) & ~fov[..., None]] = 0  # the black border stays black
            out = to_tensor(out)[None]
            score += [float(psnr(out, target)[0]), float(ssim(out, target)[0])]
        scores["all"].append(score)
        scores[pair.organ].append(score)
        zeros.append(float(((pair.dim == 0).any(axis=2) & fov).sum() / fov.sum()))
    print("| pairs | oracle inverse gamma: PSNR | SSIM | dequantised: PSNR | SSIM "
          "| I / S bound: PSNR | SSIM |")
    print("|---|---|---|---|---|---|---|")
    for group in ["all", *sorted(k for k in scores if k != "all")]:
        cells = " | ".join(f"{v:.2f}" if i % 2 == 0 else f"{v:.4f}"
                           for i, v in enumerate(torch.tensor(scores[group]).mean(0).tolist()))
        print(f"| {group} ({len(scores[group])}) | {cells} |")
    print(f"\ntissue pixels with a channel at level 0: {100 * np.mean(zeros):.1f} %")


if __name__ == "__main__":
    main()
