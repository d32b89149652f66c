"""Leave-one-scope-out experiment of docs/adapt.md.

    # 1. a base model trained from scratch by the shipped recipe (configs/default.toml) on the
    #    train/val split without one organ
    python scripts/leave-one-scope-out.py train larynx runs/loso-larynx --epochs 8
    # 2. endolight adapt it on that organ's training frames (see docs/adapt.md), and the control:
    #    the same fine-tuning (adapt's recipe, as many steps) on the other organs' training frames
    python scripts/leave-one-scope-out.py control larynx runs/loso-larynx/last.safetensors C.st --steps 240
    # 3. PSNR / SSIM / ΔE2000 of several weights on pairs written by `endolight synth`
    python scripts/leave-one-scope-out.py table PAIRS shipped=default base=B.safetensors adapted=A.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path

from endolight.adapt import AdaptConfig, train_config
from endolight.checkpoint import load_model, save_weights
from endolight.data import FrameRef, list_frames
from endolight.enhancer import Enhancer
from endolight.io.tensors import to_tensor
from endolight.metrics import delta_e2000, psnr, ssim
from endolight.pairs import pairs_from_dir
from endolight.train import load_config, train


def _without(organ: str) -> tuple[list[FrameRef], list[FrameRef]]:
    """The split's training frames of every other organ, and every 4th of their validation
    frames (here validation only reports progress: CPU is scarce)."""
    return ([r for r in list_frames("train") if r.organ != organ],
            [r for r in list_frames("val") if r.organ != organ][::4])


def train_without(organ: str, out_dir: str, config: str, epochs: int) -> None:
    cfg = load_config(config, out_dir=out_dir, epochs=epochs, device="cpu")
    train_refs, val_refs = _without(organ)

    def on_step(step: int, total: int, stats: dict[str, float]) -> None:
        print(f"  step {step}/{total}: loss {stats['loss']:.4f}", flush=True)

    def on_epoch(log) -> None:
        print(f"epoch {log.epoch}: val PSNR {log.val_psnr:.2f} dB, SSIM {log.val_ssim:.4f} "
              f"({log.seconds:.0f} s)", flush=True)

    print(f"{len(train_refs)} training and {len(val_refs)} validation frames without {organ}", flush=True)
    train(cfg, resume=True, on_step=on_step, on_epoch=on_epoch,
          train_refs=train_refs, val_refs=val_refs)


def control(organ: str, weights: str, output: str, steps: int) -> None:
    """The base fine-tuned by adapt's recipe (lr, batch, crop, frame size) for about ``steps``
    steps on the training frames of every organ but ``organ``: what the same extra training
    gives without the new scope's frames."""
    refs, val = _without(organ)
    cfg = AdaptConfig(source="", output=output, weights=weights, device="cpu")
    per_epoch = len(refs) // cfg.batch_size  # one crop of each frame an epoch
    epochs = max(1, round(steps / per_epoch))
    tcfg = train_config(cfg, {"epochs": epochs, "repeats": 1})
    print(f"{len(refs)} frames without {organ}: {epochs} epochs of {per_epoch} steps", flush=True)
    train(tcfg, train_refs=refs, val_refs=val)
    save_weights(load_model(Path(tcfg.out_dir) / "last.safetensors"), output, {"control_for": organ})


def table(pairs_dir: str, named_weights: list[str], title: str) -> None:
    """One Markdown row per weights (``name=path``; the first row is the dim input)."""
    pairs = list(pairs_from_dir(Path(pairs_dir)))
    print(f"| {title} (n = {len(pairs)}) | PSNR ↑ | SSIM ↑ | ΔE2000 ↓ |\n|---|---|---|---|")
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
    t.add_argument("--config", default="configs/default.toml",
                   help="training recipe (default: the shipped one)")
    t.add_argument("--epochs", type=int, default=8)
    c = sub.add_parser("control", help="the base fine-tuned like adapt, on the other organs")
    c.add_argument("organ")
    c.add_argument("weights", help="the base model")
    c.add_argument("output")
    c.add_argument("--steps", type=int, required=True, help="as many as the adapt run's")
    m = sub.add_parser("table", help="metrics of several weights on synthesized pairs")
    m.add_argument("pairs")
    m.add_argument("weights", nargs="+", help="name=path (or a shipped name: default, paper)")
    m.add_argument("--title", default="held-out pairs", help="the table's first header cell")
    args = parser.parse_args()
    if args.cmd == "train":
        train_without(args.organ, args.out_dir, args.config, args.epochs)
    elif args.cmd == "control":
        control(args.organ, args.weights, args.output, args.steps)
    else:
        table(args.pairs, args.weights, args.title)


if __name__ == "__main__":
    main()
