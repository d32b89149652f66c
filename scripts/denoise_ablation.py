"""Which denoiser inside the model? The same short training of each variant, then the validation
split: no denoising, a blend towards the local mean (box), the guided filter (shipped).

    python scripts/denoise_ablation.py [--steps 400] [-o docs/denoise-ablation.md]
    python scripts/denoise_ablation.py --blur-sweep WEIGHTS [-o docs/guide-blur.md]

Prints the table (validation PSNR / SSIM, noise in flat dark patches) and writes it as Markdown.
Every variant sees the same batches (seed 0) of the `endoscope` protocol's pairs. With
``--blur-sweep``, no training: the given weights on the same validation pairs with each blur of
the guided filter's guide (``ModelConfig.denoise_blur``).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from endolight.checkpoint import load_model
from endolight.data import PairDataset, list_frames
from endolight.io.atomic import write_text
from endolight.losses import LossWeights
from endolight.methods import ours
from endolight.methods.learned import Budget, fit
from endolight.metrics import flat_dark_mask, noise_sigma, psnr, ssim
from endolight.model import DeepUPE, ModelConfig
from endolight.train import TrainConfig, seed_everything, validation_pairs

VARIANTS = {
    "none": ModelConfig(denoise=False),
    "box (local mean)": ModelConfig(denoise_filter="box"),
    "guided filter (shipped)": ModelConfig(),
}


@torch.no_grad()
def measure(model: DeepUPE, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    model.eval()
    rows = []
    for dim, target in pairs:
        out = model(dim).output
        flat = flat_dark_mask(dim, target)
        rows.append((float(psnr(out, target)[0]), float(ssim(out, target)[0]),
                     float(noise_sigma(out, flat)[0]), float(noise_sigma(dim, flat)[0])))
    psnr_, ssim_, noise, noise_in = np.mean(rows, axis=0)
    return {"PSNR": psnr_, "SSIM": ssim_, "noise": noise, "noise_in": noise_in}


BLURS = (0.0, 0.3, 0.5, 0.7, 0.85, 1.0)


def blur_sweep(weights: Path, output: Path) -> None:
    """The validation table of one model with each blur of its filter's guide."""
    trained = load_model(weights)
    pairs = validation_pairs(TrainConfig())
    lines = ["| guide blur | val PSNR | val SSIM | flat-dark noise (input) |", "|---|---|---|---|"]
    for blur in tqdm(BLURS, desc="guide blur"):
        net = DeepUPE(dataclasses.replace(trained.cfg, denoise_blur=blur))
        net.load_state_dict(trained.state_dict())
        m = measure(net, pairs)
        noise = f"{m['noise']:.2f} ({m['noise_in']:.2f})"
        lines.append(f"| {blur:g} | {m['PSNR']:.2f} | {m['SSIM']:.4f} | {noise} |")
    table = "\n".join(lines)
    note = (f"The weights {weights} (trained with blur {trained.cfg.denoise_blur:g}) on the {len(pairs)} "
            "fixed validation pairs (384 px); the guide is `Y + blur * (binomial3x3(Y) - Y)`.\n")
    command = f"python scripts/denoise_ablation.py --blur-sweep {weights} -o {output}"
    write_text(output, f"# The guided filter's guide, blurred\n\n`{command}`\n\n{table}\n\n{note}")
    print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--blur-sweep", type=Path, metavar="WEIGHTS", help="sweep the guide's blur instead")
    parser.add_argument("-o", "--output", type=Path, default=None)
    args = parser.parse_args()
    if args.blur_sweep:
        blur_sweep(args.blur_sweep, args.output or Path("docs/guide-blur.md"))
        return
    args.output = args.output or Path("docs/denoise-ablation.md")
    budget = Budget(steps=args.steps, batch_size=8, crop=args.crop)
    cfg = TrainConfig()  # the endoscope protocol and the validation split of endolight.train
    dataset = PairDataset(list_frames("train"), budget.crop, cfg.max_side, cfg.degrade, budget.seed)
    pairs = validation_pairs(cfg)
    lines = ["| denoiser | val PSNR | val SSIM | flat-dark noise (input) | train s |",
             "|---|---|---|---|---|"]
    for name, model_cfg in VARIANTS.items():
        seed_everything(budget.seed)
        net = DeepUPE(model_cfg)
        trainer = ours.Trainer(net, budget.steps, weights=LossWeights())
        bar = tqdm(total=budget.steps, desc=name)
        t0 = time.perf_counter()
        fit(trainer, dataset, budget, torch.device("cpu"), lambda i, _t, b=bar: b.update())
        bar.close()
        m = measure(net, pairs)
        lines.append(f"| {name} | {m['PSNR']:.2f} | {m['SSIM']:.4f} | {m['noise']:.2f} ({m['noise_in']:.2f}) "
                     f"| {time.perf_counter() - t0:.0f} |")
        tqdm.write(lines[-1])
    table = "\n".join(lines)
    note = (f"Each variant: {budget.steps} steps of batch {budget.batch_size}, {budget.crop}-px crops, "
            f"seed {budget.seed}, same batches; validation: {len(pairs)} pairs of the fixed validation "
            "split (384 px). Noise: Immerkaer sigma (8-bit levels) in flat dark patches.\n")
    command = f"python scripts/denoise_ablation.py --steps {args.steps}"
    write_text(args.output, f"# Denoiser ablation\n\n`{command}`\n\n{table}\n\n{note}")
    print(table)


if __name__ == "__main__":
    main()
