"""How dark should the enhancer write a noisy border? The floor ``endolight.border.BORDER_BLACK``.

Outside the view the enhancer writes the border's noise as one colour (``endolight.border``).
For each pair of a split (384 px) this renders the shipped model once, then writes the pixels
the enhancer flattens (``scripts/border_level.py``'s ``flattened``) with each candidate colour,
computed from all of those pixels in the dim frame:

* ``mean``: their mean colour (the rule before ``BORDER_BLACK``: noise clipped at 0 lifts it);
* ``median, floor C``: their median per channel, at least ``C`` levels (``C`` = 0: the border's
  level without its noise).

It prints the mean PSNR, SSIM over the whole frame and SSIM inside the target's view (its
windows near the view's edge see the border too) per organ and overall, the enhancer's own
output (``shipped``) first, and the floor with the best overall SSIM on the first split. The
targets' borders are the scopes' blacks (0-1.5 levels on five scopes, 11-16 on two), which the
synthetic darkening scales towards 0, and SSIM's luminance term follows a level or two there
(its constant ``C1`` is 6.5 squared levels). Frames of the training and validation splits are
degraded with seeds ``--seed + i``, the held-out ones as ``endolight eval``'s.

    python scripts/border_black.py [--splits train,val,heldout] [--floors 0,1,2,3]
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
from border_level import flattened, split_ssim  # this folder's sibling scripts
from organ_gap import _tensor

from endolight.data import list_frames
from endolight.enhancer import Enhancer
from endolight.fov import fov_mask
from endolight.metrics import psnr
from endolight.pairs import Pair, heldout_pairs, synthesized_pairs

SHIPPED = "shipped"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--splits", default="train,val,heldout",
                    help="train, val and/or heldout; the first chooses the floor")
    ap.add_argument("--floors", default="0,1,2,3", help="candidate floors (8-bit levels)")
    ap.add_argument("--seed", type=int, default=777,
                    help="degradation seed of the training and validation frames")
    ap.add_argument("--max-side", type=int, default=384)
    args = ap.parse_args()
    floors = [int(f) for f in args.floors.split(",")]
    splits = args.splits.split(",")
    if unknown := set(splits) - {"train", "val", "heldout"}:
        raise SystemExit(f"error: unknown split(s) {sorted(unknown)}: choose from train, val, heldout")
    enhancer = Enhancer(device="cpu")
    best = None
    for split in splits:
        pairs = (heldout_pairs(args.max_side) if split == "heldout"
                 else synthesized_pairs(list_frames(split), args.seed, max_side=args.max_side))
        scores: dict[tuple[str, str], list[tuple[float, float, float]]] = defaultdict(list)
        for pair in pairs:
            # the dim frame's view found once, for the enhancer and for the pixels it flattens
            dim_view, view = fov_mask(pair.dim), fov_mask(pair.target)
            out = enhancer.enhance_array(pair.dim, fov=dim_view)
            for name, rendered in refills(pair, out, dim_view, floors).items():
                whole, inside, _ = split_ssim(rendered, pair.target, view)
                row = (float(psnr(_tensor(rendered), _tensor(pair.target))[0]), whole, inside)
                scores[(pair.organ, name)].append(row)
                scores[("all", name)].append(row)
        print_table(split, scores)
        if best is None:
            best = max(floors, key=lambda f: np.mean(scores[("all", f"median, floor {f}")], axis=0)[1])
            print(f"\nbest floor on the {split} split: {best}")


def print_table(split: str, scores: dict[tuple[str, str], list[tuple[float, float, float]]]) -> None:
    """One row per border colour, one column per organ (``all`` first)."""
    organs = ["all", *sorted({o for o, _ in scores} - {"all"})]
    names = list(dict.fromkeys(n for _, n in scores))
    print(f"\n{split} (PSNR / SSIM whole frame / SSIM in view)\n\n| border written as | " + " | ".join(
        f"{o} ({len(scores[(o, SHIPPED)])})" for o in organs) + " |\n|---|" + "---|" * len(organs))
    for name in names:
        cells = ("{:.2f} / {:.4f} / {:.4f}".format(*np.mean(scores[(o, name)], axis=0)) for o in organs)
        print(f"| {name} | " + " | ".join(cells) + " |")


def refills(pair: Pair, out: np.ndarray, dim_view: np.ndarray, floors: list[int]) -> dict[str, np.ndarray]:
    """The enhancer's output (given ``dim_view``, the dim frame's view) and its refilled twins
    (module docstring), by name."""
    noise = flattened(pair, dim_view)
    names = ["mean", *(f"median, floor {f}" for f in floors)]
    if noise is None:  # a clean border (or none): every candidate copies it, as the enhancer does
        return {SHIPPED: out, **dict.fromkeys(names, out)}
    pixels = pair.dim[noise]
    colours = [pixels.mean(axis=0), *(np.maximum(np.median(pixels, axis=0), f) for f in floors)]
    rendered = {SHIPPED: out}
    for name, colour in zip(names, colours, strict=True):
        rendered[name] = out.copy()
        rendered[name][noise] = np.floor(colour + 0.5).astype(np.uint8)
    return rendered


if __name__ == "__main__":
    main()
