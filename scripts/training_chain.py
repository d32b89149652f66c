"""The shipped default's validation curve across its whole chain of training stages.

Each stage (README, 'Training the shipped weights') continues the previous stage's best weights
with its own schedule, so no single run's ``curve.png`` shows whether the training as a whole has
flattened. Given the last stage's config, this follows each config's ``init_weights`` back to the
config whose run wrote them (among ``configs/*.toml``) until a stage starts from scratch, joins
those stages' logs (kept in docs/ as ``training-log-<run>.csv``) end to end on one epoch axis,
draws validation PSNR per epoch, one line per stage, and prints each stage's best validation
PSNR / SSIM and its gain over the stage before.

    python scripts/training_chain.py configs/default-stage10-colour.toml [-o docs/img/training-chain.png]
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from endolight.figures import line_plot
from endolight.io.images import write_image
from endolight.train import TrainConfig, load_config


def chain(last: Path) -> list[TrainConfig]:
    """The stages that end in the config ``last``, first stage first."""
    by_run = {f"{c.out_dir}/best.safetensors": c for c in map(load_config, Path("configs").glob("*.toml"))}
    stages = [load_config(last)]
    while (start := stages[-1].init_weights) is not None:
        if start not in by_run:
            raise SystemExit(f"error: no config in configs/ writes {start}")
        stages.append(by_run[start])
    return stages[::-1]


def stage_log(cfg: TrainConfig) -> Path:
    """Where docs/ keeps a run's ``log.csv``: ``runs/default`` -> ``training-log.csv``,
    ``runs/default-blur`` -> ``training-log-blur.csv``."""
    stage = Path(cfg.out_dir).name.removeprefix("default").removeprefix("-")
    return Path("docs") / (f"training-log-{stage}.csv" if stage else "training-log.csv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("last", type=Path, help="the last stage's config")
    parser.add_argument("-o", "--out", type=Path, default=Path("docs/img/training-chain.png"))
    args = parser.parse_args()
    curves, offset, previous = {}, 0, None
    print("| stage (log) | epochs | best validation PSNR / SSIM | gain over the stage before |")
    print("|---|---|---|---|")
    for cfg in chain(args.last):
        path = stage_log(cfg)
        if not path.is_file():
            raise SystemExit(f"error: {path} not found (each stage's log.csv is copied there)")
        with path.open() as f:
            rows = list(csv.DictReader(f))
        name = path.stem.removeprefix("training-log").lstrip("-") or "first"
        epochs = [offset + int(r["epoch"]) for r in rows]
        curves[name] = (epochs, [float(r["val_psnr"]) for r in rows])
        best = max(rows, key=lambda r: float(r["val_psnr"]))
        psnr = float(best["val_psnr"])
        gain = "" if previous is None else f"{psnr - previous:+.3f} dB"
        print(f"| {name} | {offset + 1}-{epochs[-1]} | {psnr:.3f} / {float(best['val_ssim']):.4f} | {gain} |")
        offset, previous = epochs[-1], psnr
    image = line_plot(curves, "validation PSNR (dB) per epoch, each stage from the last one's best",
                      "epoch (stages end to end)", (900, 440))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_image(args.out, image)
    print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
