"""What any per-pixel curve can reach under the ``paper`` protocol: the oracle inverse gamma.

The ``paper`` protocol darkens a frame by ``T ** gamma`` on each channel and rounds to 8 bits.
Inverting it with the true ``gamma`` of each frame (which no method is told) is the best any
global curve can do; what it still misses is what the 8-bit rounding of the dark frame destroyed.
Prints PSNR / SSIM of that oracle over the held-out pairs, as ``endolight eval --protocol paper``
scores them (same pairs, same metrics), overall and per organ.

    python scripts/paper_ceiling.py [--max-side 640]
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
import torch

from endolight.degrade import PROTOCOLS
from endolight.io.tensors import to_tensor
from endolight.metrics import psnr, ssim
from endolight.pairs import heldout_pairs


def oracle(dim: np.ndarray, gamma: float) -> np.ndarray:
    """The exact inverse of ``T ** gamma`` on 8-bit levels."""
    lut = np.clip(np.round((np.arange(256) / 255) ** (1 / gamma) * 255), 0, 255).astype(np.uint8)
    return lut[dim]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-side", type=int, default=640, help="as endolight eval --max-side")
    args = parser.parse_args()
    scores: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for pair in heldout_pairs(args.max_side, cfg=PROTOCOLS["paper"]):
        out = to_tensor(oracle(pair.dim, pair.params["gamma_edge"]))[None]
        target = to_tensor(pair.target)[None]
        score = (float(psnr(out, target)[0]), float(ssim(out, target)[0]))
        scores["all"].append(score)
        scores[pair.organ].append(score)
    print("| pairs | oracle inverse gamma: PSNR | SSIM |\n|---|---|---|")
    for group in ["all", *sorted(k for k in scores if k != "all")]:
        p, s = torch.tensor(scores[group]).mean(0).tolist()
        print(f"| {group} ({len(scores[group])}) | {p:.2f} | {s:.4f} |")


if __name__ == "__main__":
    main()
