"""How far would choosing the denoiser's strength per frame take each organ's SSIM?

The shipped denoiser has two thresholds, one constant each for every frame: the guided filter's
edge threshold ``eps`` (learned) and the guide's Lee step ``ModelConfig.denoise_lee``. Each
held-out pair (``endolight eval``'s, 384 px) is rendered with both scaled by each of
``--scales`` (the shipped weights otherwise; the enhancer on its PyTorch path, border flattened).
Per organ the script prints PSNR, then SSIM over the whole frame and inside the target's view:

* ``eps xA, lee xB``: every frame at those scales;
* ``per-frame oracle``: each frame at the pair of scales with its best SSIM inside the view
  (an oracle: it reads the target), a ceiling for a strength the model chose per frame;
* ``blur``: the shipped output blurred (Gaussian, ``--blur`` px) inside the detected view;
* DPED (``endolight compare``'s cached weights) for reference.

With ``--validation`` it first prints the validation split's PSNR / SSIM (``train.validate``,
the training's own pairs) for the Lee step scaled by each of ``--scales`` alone.

    python scripts/threshold_oracle.py [--organ sinus] [--scales 1,4,16] [--validation]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
from collections import defaultdict

import cv2
import numpy as np
import torch
from border_level import split_ssim  # this folder's sibling scripts
from organ_gap import _tensor

from endolight.checkpoint import default_weights_path, load_model
from endolight.enhancer import Enhancer
from endolight.fov import fov_mask
from endolight.methods.registry import COMPARE_RUNS, comparator_weights, get_method
from endolight.metrics import psnr
from endolight.model.deepupe import DeepUPE
from endolight.pairs import heldout_pairs
from endolight.train import load_config, validate, validation_pairs

ORACLE, DPED = "per-frame oracle", "dped"


def scaled(weights: str, eps_k: float, lee_k: float) -> DeepUPE:
    """The model of ``weights`` with its filter's ``eps`` and its Lee threshold scaled."""
    model = load_model(weights)
    model.cfg = dataclasses.replace(model.cfg, denoise_lee=model.cfg.denoise_lee * lee_k)
    with torch.no_grad():
        model.log_eps += math.log(eps_k)
    return model


def print_validation(weights: str, config: str, scales: list[float]) -> None:
    """PSNR / SSIM on ``config``'s validation pairs with the Lee threshold scaled by each of
    ``scales``."""
    cfg = load_config(config)
    pairs = validation_pairs(cfg)
    print(f"validation split ({len(pairs)} pairs): Lee threshold scale -> PSNR / SSIM")
    for k in scales:
        _, p, s = validate(scaled(weights, 1.0, k), pairs, cfg, torch.device("cpu"))
        print(f"  lee x{k:g}: {p:.2f} / {s:.4f}")


def scores(output: np.ndarray, target: np.ndarray, view: np.ndarray) -> np.ndarray:
    """PSNR, SSIM whole, SSIM inside ``view``."""
    whole, inside, _ = split_ssim(output, target, view)
    return np.array([float(psnr(_tensor(output), _tensor(target))[0]), whole, inside])


def blurred(output: np.ndarray, view: np.ndarray, sigma: float) -> np.ndarray:
    """``output`` blurred by a Gaussian of ``sigma`` px inside ``view``."""
    out = output.copy()
    out[view] = cv2.GaussianBlur(output, (0, 0), sigma)[view]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default=str(default_weights_path("default")))
    ap.add_argument("--organ", default="all", help="an organ of the held-out split, or 'all'")
    ap.add_argument("--scales", default="1,4,16", help="scales of both thresholds, comma-separated")
    ap.add_argument("--blur", type=float, default=0.7, help="σ (px) of the blurred row")
    ap.add_argument("--validation", action="store_true", help="the Lee scales on the validation split first")
    ap.add_argument("--config", default="configs/default-stage27-recolour.toml",
                    help="the training config whose validation pairs --validation scores")
    args = ap.parse_args()
    scales = [float(s) for s in args.scales.split(",")]
    if args.validation:
        print_validation(args.weights, args.config, scales)
    combos = list(itertools.product(scales, scales))
    names = [f"eps x{e:g}, lee x{k:g}" for e, k in combos]
    enhancers = [Enhancer(model=scaled(args.weights, e, k), fused=False, device="cpu") for e, k in combos]
    dped_weights = comparator_weights(DPED, COMPARE_RUNS)
    dped = get_method(DPED, dped_weights, "cpu") if dped_weights.exists() else None  # compare's cache
    rows: dict[str, dict[str, list[np.ndarray]]] = defaultdict(lambda: defaultdict(list))
    shipped = combos.index((1.0, 1.0)) if (1.0, 1.0) in combos else None  # its render, blurred
    for pair in heldout_pairs(384):
        if args.organ not in ("all", pair.organ):
            continue
        view = fov_mask(pair.target)
        outs = [enh.enhance_array(pair.dim) for enh in enhancers]
        got = [scores(o, pair.target, view) for o in outs]
        cells = rows[pair.organ]
        for name, s in zip(names, got, strict=True):
            cells[name].append(s)
        cells[ORACLE].append(max(got, key=lambda s: s[2]))
        if shipped is not None:
            cells[f"blur {args.blur:g}"].append(
                scores(blurred(outs[shipped], fov_mask(pair.dim), args.blur), pair.target, view))
        if dped is not None:
            cells[DPED].append(scores(dped(pair.dim), pair.target, view))
    if not rows:
        raise SystemExit(f"error: no held-out pair of organ {args.organ!r}")
    columns = list(next(iter(rows.values())))
    print("\n| organ | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
    for organ, cells in rows.items():
        means = [np.mean(cells[c], axis=0) for c in columns]
        print(f"| {organ} ({len(cells[columns[0]])}) | "
              + " | ".join(f"{m[0]:.2f} / {m[1]:.4f} / {m[2]:.4f}" for m in means) + " |")


if __name__ == "__main__":
    main()
