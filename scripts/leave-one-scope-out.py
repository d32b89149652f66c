"""Leave-one-scope-out base model for docs/adapt.md: train from scratch on the train/val split
without one organ, so ``endolight adapt`` can then be measured on a scope the model never saw.

    python scripts/leave-one-scope-out.py fetoscopy runs/loso-fetoscopy --epochs 4

Writes OUT_DIR/{best,last}.safetensors and log.csv like ``endolight train``.
"""

from __future__ import annotations

import argparse

from endolight.data import list_frames
from endolight.train import load_config, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("organ", help="organ left out, e.g. fetoscopy")
    parser.add_argument("out_dir")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--max-side", type=int, default=320)
    parser.add_argument("--crop", type=int, default=192)
    args = parser.parse_args()
    cfg = load_config(None, out_dir=args.out_dir, epochs=args.epochs, repeats=args.repeats,
                      max_side=args.max_side, crop=args.crop, val_max_side=args.max_side, device="cpu")
    train_refs = [r for r in list_frames("train") if r.organ != args.organ]
    # Every 4th validation frame: here validation only reports progress (CPU is scarce).
    val_refs = [r for r in list_frames("val") if r.organ != args.organ][::4]

    def on_step(step: int, total: int, stats: dict[str, float]) -> None:
        print(f"  step {step}/{total}: loss {stats['loss']:.4f}", flush=True)

    def on_epoch(log) -> None:
        print(f"epoch {log.epoch}: val PSNR {log.val_psnr:.2f} dB, SSIM {log.val_ssim:.4f} "
              f"({log.seconds:.0f} s)", flush=True)

    print(f"{len(train_refs)} training and {len(val_refs)} validation frames without {args.organ}",
          flush=True)
    train(cfg, on_step=on_step, on_epoch=on_epoch, train_refs=train_refs, val_refs=val_refs)


if __name__ == "__main__":
    main()
