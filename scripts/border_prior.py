"""Could the model learn the targets' border black from the dim frame, as DPED learns its border?

Outside the view the target is the scope's own black or grey, which the synthetic darkening
erases from the dim frame. This fits a predictor of each target's median border level (8-bit
levels, its target's view detected) from what the model computes of the dim frame: ``global``,
the network's global-path features, or ``pooled``, its grid averaged per channel and depth. It
fits on the training split's frames, each degraded with ``--seeds`` (pairs whose target has a
border), by ridge regression (features standardised) and by k nearest neighbours (median of
their levels), and prints, per held-out organ, the mean prediction, its range over the frames
and the targets' mean.

    python scripts/border_prior.py [--seeds 777,5000,9000]
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Iterable

import numpy as np
import torch

from endolight.data import list_frames
from endolight.enhancer import Enhancer
from endolight.fov import fov_mask
from endolight.pairs import Pair, heldout_pairs, synthesized_pairs

RIDGE = (1.0, 10.0, 100.0)
NEIGHBOURS = (1, 5, 15)


def features(enhancer: Enhancer, pairs: Iterable[Pair]
             ) -> tuple[dict[str, np.ndarray], np.ndarray, list[str]]:
    """Both feature sets ``(N, F)``, the targets' median border level ``(N,)`` and the organs,
    over the pairs whose target has a border."""
    net, seen = enhancer.model.coeffs, {}
    hook = net.global_fc.register_forward_hook(lambda _m, _i, out: seen.update(g=out[0]))
    rows: dict[str, list[np.ndarray]] = defaultdict(list)
    levels, organs = [], []
    try:
        for pair in pairs:
            view = fov_mask(pair.target)
            if view.all():
                continue
            with torch.no_grad():
                grid = net(enhancer.lowres(pair.dim, None))
            rows["global"].append(seen["g"].numpy())
            rows["pooled"].append(grid[0].mean((2, 3)).flatten().numpy())
            levels.append(float(np.median(pair.target[~view], axis=0).mean()))
            organs.append(pair.organ)
    finally:
        hook.remove()
    return {k: np.stack(v) for k, v in rows.items()}, np.array(levels), organs


def ridge(x: np.ndarray, y: np.ndarray, x_new: np.ndarray, lam: float) -> np.ndarray:
    a = np.c_[x, np.ones(len(x))]
    w = np.linalg.solve(a.T @ a + lam * np.eye(a.shape[1]), a.T @ y)
    return np.c_[x_new, np.ones(len(x_new))] @ w


def neighbours(x: np.ndarray, y: np.ndarray, x_new: np.ndarray, k: int) -> np.ndarray:
    d = ((x_new[:, None] - x[None]) ** 2).sum(-1)
    return np.median(y[np.argsort(d, axis=1)[:, :k]], axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="777,5000,9000", help="degradation seeds of the training frames")
    ap.add_argument("--max-side", type=int, default=384)
    args = ap.parse_args()
    enhancer = Enhancer(device="cpu")
    refs = list_frames("train")
    seeds = [int(s) for s in args.seeds.split(",")]
    train = (p for s in seeds for p in synthesized_pairs(refs, s, max_side=args.max_side))
    x_train, y_train, train_organs = features(enhancer, train)
    x_held, y_held, organs = features(enhancer, heldout_pairs(args.max_side))
    print(f"{len(y_train)} training pairs with a border; their targets' median border level per organ:")
    for organ in sorted(set(train_organs)):
        picked = np.array(train_organs) == organ
        print(f"  {organ}: {y_train[picked].mean():.2f}")
    held = {organ: np.array(organs) == organ for organ in sorted(set(organs))}
    print("\n| features | predictor | " + " | ".join(held) + " |\n|---|---|" + "---|" * len(held))
    predictors = {**{f"ridge {lam:g}": (ridge, lam) for lam in RIDGE},
                  **{f"{k} nearest": (neighbours, k) for k in NEIGHBOURS}}
    for name, x in x_train.items():
        mu, sd = x.mean(0), x.std(0) + 1e-6
        z, z_held = (x - mu) / sd, (x_held[name] - mu) / sd
        for label, (fit, arg) in predictors.items():
            pred = fit(z, y_train, z_held, arg)
            cells = [f"{pred[m].mean():.2f} [{pred[m].min():.1f}, {pred[m].max():.1f}] "
                     f"(target {y_held[m].mean():.2f})" for m in held.values()]
            print(f"| {name} | {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
