"""Where a method's error is: exposure (low frequencies) or detail (the rest).

Each output's squared error against the target is split at a Gaussian blur of the frame: the
error of the blurred output against the blurred target (how much light each region was given)
and the error of what the blur leaves (texture, edges, noise). The two add up to the whole
error but for their cross term. Prints, over the synthesized held-out pairs (``endolight eval``'s
pairs), the PSNR of each part's mean squared error, overall and per organ, for each method.

    python scripts/error_bands.py --methods endolight,dped
    python scripts/error_bands.py --methods endolight --weights runs/default/best.safetensors

``--runs-dir``: where ``endolight compare`` keeps trained comparators (``METHOD.safetensors``);
``--weights``: our model's weights (default: the shipped ones). ``--sigma`` is a fraction of the
frame's longer side (1/64: 6 px at 384 px).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

from endolight.methods.registry import COMPARE_RUNS, get_methods
from endolight.pairs import heldout_pairs


def bands(output: np.ndarray, target: np.ndarray, sigma: float) -> tuple[float, float]:
    """Mean squared error of the low-pass part and of the rest, ``(H, W, 3)`` uint8 frames."""
    out, tgt = output.astype(np.float64) / 255, target.astype(np.float64) / 255
    low_out, low_tgt = (cv2.GaussianBlur(x, (0, 0), sigma) for x in (out, tgt))
    low = float(np.mean((low_out - low_tgt) ** 2))
    detail = float(np.mean(((out - low_out) - (tgt - low_tgt)) ** 2))
    return low, detail


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="endolight,dped")
    ap.add_argument("--runs-dir", type=Path, default=COMPARE_RUNS)
    ap.add_argument("--weights", default=None)
    ap.add_argument("--max-side", type=int, default=384)
    ap.add_argument("--sigma", type=float, default=1 / 64)
    args = ap.parse_args()
    names = args.methods.split(",")
    methods = get_methods(names, args.weights, args.runs_dir, "cpu")
    errors: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for pair in heldout_pairs(args.max_side):
        sigma = args.sigma * max(pair.target.shape[:2])
        for name, method in methods.items():
            split = bands(method(pair.dim), pair.target, sigma)
            errors[(name, pair.organ)].append(split)
            errors[(name, "all")].append(split)
    organs = sorted({organ for _, organ in errors}, key=lambda o: (o == "all", o))

    def db(mse: float) -> str:
        return f"{10 * np.log10(1 / mse):.2f}"

    print("| organ | " + " | ".join(f"{n}: low-pass / detail / both (dB)" for n in names) + " |")
    print("|---|" + "---|" * len(names))
    for organ in organs:
        cells = []
        for name in names:
            low, detail = np.mean(errors[(name, organ)], axis=0)
            cells.append(f"{db(low)} / {db(detail)} / {db(low + detail)}")
        print(f"| {organ} ({len(errors[(names[0], organ)])}) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
