"""Where a method's error is: exposure (low frequencies) or detail (the rest).

Each output's squared error against the target is split at a Gaussian blur of the frame: the
error of the blurred output against the blurred target (how much light each region was given)
and the error of what the blur leaves (texture, edges, noise). The two add up to the whole
error but for their cross term. Prints, over the synthesized held-out pairs (``endolight eval``'s
pairs), the PSNR of each part's mean squared error, overall and per organ, for each method.
With ``--exposure``, instead: each method's PSNR, the PSNR it would have if every output were
scaled in linear light to its target's mean inside the view (an oracle of the frame's exposure,
nothing else changed), and the mean of that scale's log2 (positive: the outputs are too dark).

    python scripts/error_bands.py --methods endolight,dped
    python scripts/error_bands.py --methods endolight --weights runs/default/best.safetensors
    python scripts/error_bands.py --methods endolight,dped --exposure

``--runs-dir``: where ``endolight compare`` keeps trained comparators (``METHOD.safetensors``);
``--weights``: our model's weights (default: the shipped ones). ``--sigma`` is a fraction of the
frame's longer side (1/64: 6 px at 384 px).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import cv2
import kornia
import numpy as np
import torch

from endolight.fov import fov_mask
from endolight.methods.registry import COMPARE_RUNS, get_methods
from endolight.pairs import heldout_pairs


def bands(output: np.ndarray, target: np.ndarray, sigma: float) -> tuple[float, float]:
    """Mean squared error of the low-pass part and of the rest, ``(H, W, 3)`` uint8 frames."""
    out, tgt = output.astype(np.float64) / 255, target.astype(np.float64) / 255
    low_out, low_tgt = (cv2.GaussianBlur(x, (0, 0), sigma) for x in (out, tgt))
    low = float(np.mean((low_out - low_tgt) ** 2))
    detail = float(np.mean(((out - low_out) - (tgt - low_tgt)) ** 2))
    return low, detail


def exposure_matched(output: np.ndarray, target: np.ndarray) -> tuple[float, float, float]:
    """Squared errors of ``output`` and of ``output`` scaled in linear light to ``target``'s mean
    inside the view (the border kept), and that scale's log2; ``(H, W, 3)`` uint8 frames."""
    view = fov_mask(target)
    out, tgt = (torch.from_numpy(x).permute(2, 0, 1).double() / 255 for x in (output, target))
    lin_out, lin_tgt = kornia.color.rgb_to_linear_rgb(out), kornia.color.rgb_to_linear_rgb(tgt)
    inside = torch.from_numpy(view)
    gain = float(lin_tgt[:, inside].mean() / lin_out[:, inside].mean().clamp_min(1e-6))
    scaled = kornia.color.linear_rgb_to_rgb((lin_out * gain).clamp(0, 1))
    scaled = torch.where(inside, (scaled * 255).round() / 255, out)
    return float(((out - tgt) ** 2).mean()), float(((scaled - tgt) ** 2).mean()), float(np.log2(gain))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="endolight,dped")
    ap.add_argument("--runs-dir", type=Path, default=COMPARE_RUNS)
    ap.add_argument("--weights", default=None)
    ap.add_argument("--max-side", type=int, default=384)
    ap.add_argument("--sigma", type=float, default=1 / 64)
    ap.add_argument("--exposure", action="store_true", help="the exposure oracle's table instead")
    args = ap.parse_args()
    names = args.methods.split(",")
    methods = get_methods(names, args.weights, args.runs_dir, "cpu")
    errors: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for pair in heldout_pairs(args.max_side):
        sigma = args.sigma * max(pair.target.shape[:2])
        for name, method in methods.items():
            output = method(pair.dim)
            split = (exposure_matched(output, pair.target) if args.exposure
                     else bands(output, pair.target, sigma))
            errors[(name, pair.organ)].append(split)
            errors[(name, "all")].append(split)
    organs = sorted({organ for _, organ in errors}, key=lambda o: (o == "all", o))

    def db(mse: float) -> str:
        return f"{10 * np.log10(1 / mse):.2f}"

    head = "PSNR / exposure matched (dB) / log2 scale" if args.exposure else "low-pass / detail / both (dB)"
    print("| organ | " + " | ".join(f"{n}: {head}" for n in names) + " |")
    print("|---|" + "---|" * len(names))
    for organ in organs:
        cells = []
        for name in names:
            rows = np.array(errors[(name, organ)])
            if args.exposure:  # PSNR per frame, then the mean (as endolight eval)
                cells.append(" / ".join(f"{np.mean(10 * np.log10(1 / rows[:, k])):.2f}" for k in (0, 1))
                             + f" / {rows[:, 2].mean():+.2f}")
            else:
                low, detail = rows.mean(axis=0)
                cells.append(f"{db(low)} / {db(detail)} / {db(low + detail)}")
        print(f"| {organ} ({len(errors[(names[0], organ)])}) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
