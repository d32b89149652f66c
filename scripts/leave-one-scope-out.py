"""Leave-one-scope-out experiment of docs/adapt.md.

    # 1. a base model trained from scratch on the train/val split without one organ
    python scripts/leave-one-scope-out.py train fetoscopy runs/loso-fetoscopy --epochs 4
    # 2. endolight adapt it on that organ's training frames (see docs/adapt.md), then
    # 3. PSNR / SSIM / ΔE2000 of several weights on pairs written by `endolight synth`
    python scripts/leave-one-scope-out.py table PAIRS shipped=default base=B.safetensors adapted=A.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

from endolight.data import list_frames
from endolight.enhancer import Enhancer
from endolight.io.tensors import to_tensor
from endolight.metrics import delta_e2000, psnr, ssim
from endolight.pairs import pairs_from_dir
from endolight.train import load_config, train


def train_without(organ: str, out_dir: str, epochs: int, max_side: int, crop: int) -> None:
    cfg = load_config(None, out_dir=out_dir, epochs=epochs, repeats=1, max_side=max_side, crop=crop,
                      val_max_side=max_side, device="cpu")
    train_refs = [r for r in list_frames("train") if r.organ != organ]
    # Every 4th validation frame: here validation only reports progress (CPU is scarce).
    val_refs = [r for r in list_frames("val") if r.organ != organ][::4]

    def on_step(step: int, total: int, stats: dict[str, float]) -> None:
        print(f"  step {step}/{total}: loss {stats['loss']:.4f}", flush=True)

    def on_epoch(log) -> None:
        print(f"epoch {log.epoch}: val PSNR {log.val_psnr:.2f} dB, SSIM {log.val_ssim:.4f} "
              f"({log.seconds:.0f} s)", flush=True)

    print(f"{len(train_refs)} training and {len(val_refs)} validation frames without {organ}", flush=True)
    train(cfg, on_step=on_step, on_epoch=on_epoch, train_refs=train_refs, val_refs=val_refs)


def table(pairs_dir: str, named_weights: list[str]) -> None:
    """One Markdown row per weights (``name=path``; the first row is the dim input)."""
    pairs = list(pairs_from_dir(Path(pairs_dir)))
    print(f"| fetoscopy held-out (n = {len(pairs)}) | PSNR ↑ | SSIM ↑ | ΔE2000 ↓ |\n|---|---|---|---|")
    for name, weights in [("input (dim)", None), *(w.split("=", 1) for w in named_weights)]:
        enh = Enhancer(weights, device="cpu") if weights else None
        sums = [0.0, 0.0, 0.0]
        for p in pairs:
            out = to_tensor(enh.enhance_array(p.dim) if enh else p.dim)[None]
            tgt = to_tensor(p.target)[None]
            for i, f in enumerate((psnr, ssim, delta_e2000)):
                sums[i] += float(f(out, tgt)[0]) / len(pairs)
        print(f"| {name} | {sums[0]:.2f} | {sums[1]:.4f} | {sums[2]:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="base model without one organ")
    t.add_argument("organ", help="organ left out, e.g. fetoscopy")
    t.add_argument("out_dir")
    t.add_argument("--epochs", type=int, default=4)
    t.add_argument("--max-side", type=int, default=320)
    t.add_argument("--crop", type=int, default=192)
    m = sub.add_parser("table", help="metrics of several weights on synthesized pairs")
    m.add_argument("pairs")
    m.add_argument("weights", nargs="+", help="name=path (or a shipped name: default, paper)")
    args = parser.parse_args()
    if args.cmd == "train":
        train_without(args.organ, args.out_dir, args.epochs, args.max_side, args.crop)
    else:
        table(args.pairs, args.weights)


if __name__ == "__main__":
    main()
