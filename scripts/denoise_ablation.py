"""Which denoiser inside the model? The same short training of each variant, then the validation
split: no denoising, a blend towards the local mean (box), the guided filter (shipped).

    python scripts/denoise_ablation.py [--steps 400] [-o docs/denoise-ablation.md]

Prints the table (validation PSNR / SSIM, noise in flat dark patches) and writes it as Markdown.
Every variant sees the same batches (seed 0) of the `endoscope` protocol's pairs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from endolight.data import PairDataset, list_frames
from endolight.io.atomic import write_text
from endolight.losses import LossWeights
from endolight.methods import ours
from endolight.methods.learned import Budget, batches, fit
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/denoise-ablation.md"))
    args = parser.parse_args()
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
        fit(trainer, batches(dataset, budget), torch.device("cpu"), lambda i, _t, b=bar: b.update())
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
