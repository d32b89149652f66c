"""The shipped default's validation curve across its whole chain of training stages.

Each stage (README, 'Training the shipped weights') continues the previous stage's best weights
with its own schedule, so no single run's ``curve.png`` shows whether the training as a whole has
flattened. This joins the stages' logs (kept in docs/ as ``training-log*.csv``) end to end on one
epoch axis, draws validation PSNR per epoch, one line per stage, and prints each stage's best
validation PSNR / SSIM and its gain over the stage before.

    python scripts/training_chain.py [STAGE_LOG ...] [-o docs/img/training-chain.png]

Without arguments: the shipped chain, in order (``CHAIN``).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from endolight.figures import line_plot
from endolight.io.images import write_image

CHAIN = [Path(f"docs/training-log{s}.csv") for s in (
    "", "-blur", "-continued", "-stage4-colour", "-stage5-colour", "-stage6-colour",
    "-stage7-colour", "-stage8-colour", "-stage9-colour", "-stage10-colour")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", nargs="*", type=Path, default=CHAIN, help="stage logs, in order")
    parser.add_argument("-o", "--out", type=Path, default=Path("docs/img/training-chain.png"))
    args = parser.parse_args()
    curves, offset, previous = {}, 0, None
    print("| stage (log) | epochs | best validation PSNR / SSIM | gain over the stage before |")
    print("|---|---|---|---|")
    for path in args.logs:
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
