"""Per held-out frame of one organ: where our model trails another method, and by what.

For each synthesized held-out pair of ``--organ`` (``endolight eval``'s pairs) prints the
degradation's noise level (``peak``, photo-electrons at white: fewer is noisier) and exposure,
each method's PSNR / SSIM, its mean error per channel inside the target's field of view (8-bit
levels: too dark, or a colour cast), and the SSIM of our output after OpenCV's non-local means
(``h = 10``): a full-resolution denoiser far too slow for the model's budget, as a bound on what
removing the noise left in our output would give.

    python scripts/organ_gap.py --organ sinus --methods endolight,dped
    python scripts/organ_gap.py --organ larynx --weights runs/default/best.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from endolight.fov import fov_mask
from endolight.methods.registry import COMPARE_RUNS, Method, get_methods
from endolight.metrics import psnr, ssim
from endolight.pairs import heldout_pairs


def _tensor(frame: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float() / 255


def scores(output: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """PSNR (dB) and SSIM of two ``(H, W, 3)`` uint8 frames."""
    out, tgt = _tensor(output), _tensor(target)
    return float(psnr(out, tgt)[0]), float(ssim(out, tgt)[0])


def organ_methods(doc: str, first: str, organ: str = "an organ of the held-out split"
                  ) -> tuple[argparse.Namespace, list[str], dict[str, Method]]:
    """The per-organ scripts' options (``--organ``, ``--methods``, ``--runs-dir``, ``--weights``,
    ``--max-side``) parsed, the method names, and the methods (``first``: what the script does
    with the first one, ours)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--organ", default="sinus", help=organ)
    ap.add_argument("--methods", default="endolight,dped", help=f"the first is ours ({first})")
    ap.add_argument("--runs-dir", type=Path, default=COMPARE_RUNS)
    ap.add_argument("--weights", default=None)
    ap.add_argument("--max-side", type=int, default=384)
    args = ap.parse_args()
    names = args.methods.split(",")
    return args, names, get_methods(names, args.weights, args.runs_dir, "cpu")


def main() -> None:
    args, names, methods = organ_methods(__doc__, "denoised bound")
    print("| frame | peak | exposure | " + " | ".join(f"{n}: PSNR / SSIM / error R, G, B" for n in names)
          + f" | {names[0]} + NL-means SSIM |")
    print("|---|---|---|" + "---|" * (len(names) + 1))
    totals = np.zeros((len(names) + 1, 2))
    pairs = [p for p in heldout_pairs(args.max_side) if p.organ == args.organ]
    for pair in pairs:
        view = fov_mask(pair.target)
        cells, ours = [], None
        for k, method in enumerate(methods.values()):
            out = method(pair.dim)
            ours = out if k == 0 else ours
            p, s = scores(out, pair.target)
            totals[k] += p, s
            bias = (out[view].astype(float) - pair.target[view]).mean(axis=0)
            cells.append(f"{p:.2f} / {s:.3f} / {', '.join(f'{b:+.1f}' for b in bias)}")
        assert ours is not None
        denoised = scores(cv2.fastNlMeansDenoisingColored(ours, None, 10, 10, 7, 21), pair.target)
        totals[-1] += denoised
        print(f"| {pair.name} | {pair.params['peak']:.0f} | {pair.params['exposure']:.2f} | "
              + " | ".join(cells) + f" | {denoised[1]:.3f} |")
    mean = totals / max(len(pairs), 1)
    print(f"| mean ({len(pairs)}) | | | " + " | ".join(f"{p:.2f} / {s:.3f}" for p, s in mean[:-1])
          + f" | {mean[-1, 1]:.3f} |")


if __name__ == "__main__":
    main()
