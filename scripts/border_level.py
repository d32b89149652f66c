"""Where each method's SSIM comes from: inside the field of view, and the black border outside it.

Table 1's SSIM is over the whole frame, and a sinus frame is half border. Outside the view the
target is the scope's black (1-2 levels), and SSIM's luminance term at such levels moves with a
level or two (its constant ``C1`` is 6.5 squared 8-bit levels). For each synthesized held-out pair
(``endolight eval``'s pairs) this prints each method's SSIM over the whole frame, inside the
target's view and outside it, and the mean level of its border against the target's. For our
model (the first method, an ``endolight`` row) it also rewrites the border's noise pixels
(``endolight.border``: those the enhancer flattens) with two other colours, and once more with
the target's view, ad hoc:

* ``median``: the median of those pixels in the dim frame, per channel: the border's level
  without the noise (the built fill is their mean, which noise clipped at 0 lifts);
* ``target``: the median of the same pixels in the *target* (an oracle: the scope's own black);
* ``border median, target's view``: our model given the *target's* field of view (an oracle: the dark
  ring at the view's edge, which the dim frame's detection leaves in the border, is enhanced as
  view), its border's noise pixels written in their median colour in the dim frame.

    python scripts/border_level.py --organ sinus --methods endolight,dped
    python scripts/border_level.py --organ all
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
from organ_gap import _tensor, organ_methods  # this folder's sibling script

from endolight.border import border_fill, border_noise
from endolight.fov import fov_mask
from endolight.metrics import SSIM_WINDOW, ssim
from endolight.pairs import Pair, heldout_pairs

FILLS = ("median", "target")
VIEW_ORACLE = "border median, target's view"


def split_ssim(output: np.ndarray, target: np.ndarray, view: np.ndarray) -> tuple[float, float, float]:
    """SSIM of ``(H, W, 3)`` uint8 ``output`` against ``target``: whole frame, inside ``view``,
    outside it (NaN where no SSIM window is centred outside it: no border, or a few pixels)."""
    out, tgt, inside = _tensor(output), _tensor(target), torch.from_numpy(view)[None, None]
    whole, within = float(ssim(out, tgt)[0]), float(ssim(out, tgt, inside)[0])
    r = SSIM_WINDOW // 2
    centred = ~view[r:-r, r:-r]
    return whole, within, float(ssim(out, tgt, ~inside)[0]) if centred.any() else float("nan")


def flattened(pair: Pair, view: np.ndarray | None = None) -> np.ndarray | None:
    """``(H, W)`` bool: the pixels the enhancer flattens (its border found on the dim frame, as
    :func:`endolight.border.border_noise`, or outside ``view``), or None where it copies the
    border."""
    border = ~(fov_mask(pair.dim) if view is None else view)
    fill = border_fill(pair.dim, border)
    return None if fill is None else border_noise(pair.dim, border, fill)


def refilled(output: np.ndarray, noise: np.ndarray | None, source: np.ndarray) -> np.ndarray:
    """``output`` with the ``noise`` pixels written in their median colour in ``source`` (the dim
    frame or the target)."""
    if noise is None:
        return output
    out = output.copy()
    out[noise] = np.median(source[noise], axis=0).round().astype(np.uint8)
    return out


def main() -> None:
    args, names, methods = organ_methods(__doc__, "its border refilled",
                                         "an organ of the held-out split, or 'all'")
    if not names[0].startswith("endolight"):
        raise SystemExit(f"error: the first method must be an endolight row (ours), got {names[0]!r}")
    rows = [*names, *(f"{names[0]}, border {f}" for f in FILLS), f"{names[0]}, {VIEW_ORACLE}"]
    print("| frame | read noise | target border | " + " | ".join(
        f"{n}: SSIM whole / view / border, border level" for n in rows) + " |")
    print("|---|---|---|" + "---|" * len(rows))
    totals: dict[str, list[np.ndarray]] = defaultdict(list)
    for pair in heldout_pairs(args.max_side):
        if args.organ not in ("all", pair.organ):
            continue
        view = fov_mask(pair.target)
        outs = {n: method(pair.dim) for n, method in methods.items()}
        noise, sources = flattened(pair), {"median": pair.dim, "target": pair.target}
        outs.update({f"{names[0]}, border {f}": refilled(outs[names[0]], noise, sources[f]) for f in FILLS})
        # an endolight row is an Enhancer's enhance_array (get_method), which takes a view
        oracle = methods[names[0]](pair.dim, fov=view)
        outs[f"{names[0]}, {VIEW_ORACLE}"] = refilled(oracle, flattened(pair, view), pair.dim)
        cells = []
        for n in rows:
            s = split_ssim(outs[n], pair.target, view)
            level = float(outs[n][~view].mean()) if not view.all() else float("nan")
            totals[f"{pair.organ} | {n}"].append(np.array(s))
            cells.append(f"{s[0]:.3f} / {s[1]:.3f} / {s[2]:.3f}, {level:.1f}")
        tgt_level = f"{pair.target[~view].mean():.1f}" if not view.all() else "—"
        read = pair.params.get("read_noise", 0.0)
        print(f"| {pair.name} | {read:.4f} | {tgt_level} | " + " | ".join(cells) + " |")
    print("\n| organ | method | frames | SSIM whole | inside the view | outside |\n|---|---|---|---|---|---|")
    for key, values in totals.items():
        stacked = np.stack(values)
        outside = stacked[:, 2][~np.isnan(stacked[:, 2])]
        mean = [*stacked[:, :2].mean(axis=0), outside.mean() if len(outside) else float("nan")]
        print(f"| {key} | {len(values)} | {mean[0]:.3f} | {mean[1]:.3f} | {mean[2]:.3f} |")


if __name__ == "__main__":
    main()
