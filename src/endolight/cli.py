"""Command line: one verb per job. Thin: parse, call the library, report progress and errors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Restore dim, unevenly lit endoscope images and surgical video.",
)


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@app.command()
def enhance(
    source: Annotated[str, typer.Argument(help="Image file, folder (recursive) or glob pattern.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output folder.")],
    weights: Annotated[Path | None, typer.Option(help="Weights file (default: shipped).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N.")] = "auto",
    strength: Annotated[float, typer.Option(min=0.0, max=1.0, help="0 = input, 1 = full.")] = 1.0,
    keep_border: Annotated[bool, typer.Option(help="Leave black borders untouched.")] = True,
) -> None:
    """Enhance images; outputs keep their file names under OUTPUT (inputs are never overwritten).

    A bad file (unreadable, not an image, grayscale, alpha, 16-bit, too small or too large) is
    reported on one line; the rest of the batch continues and the exit code is 1.
    """
    from endolight.enhancer import Enhancer
    from endolight.io.images import InputError, expand_sources, read_image, write_image

    try:
        files = expand_sources(source)
        enhancer = Enhancer(weights, device=device, strength=strength, keep_border=keep_border)
    except (InputError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    root = Path(source) if Path(source).is_dir() else None
    failed = 0
    for path in tqdm(files, desc="enhance", unit="img", disable=len(files) < 2):
        rel = path.relative_to(root) if root else Path(path.name)
        dest = output / rel
        try:
            write_image(dest, enhancer.enhance_array(read_image(path)), protect=files)
        except InputError as exc:
            failed += 1
            tqdm.write(f"error: {exc}", file=sys.stderr)
    typer.echo(f"{len(files) - failed}/{len(files)} images written to {output}")
    if failed:
        raise typer.Exit(1)


@app.command()
def synth(
    source: Annotated[str, typer.Argument(help="Folder, file or glob of well-lit frames.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output folder for the pairs.")],
    seed: Annotated[int, typer.Option(help="Frame i is degraded with seed SEED + i.")] = 0,
    jpeg_prob: Annotated[float, typer.Option(help="Probability of JPEG quantisation.")] = 0.0,
) -> None:
    """Make (dim, target) training pairs with the endoscope degradation model.

    Writes OUTPUT/dim/NAME.png, OUTPUT/target/NAME.png and a manifest (CSV + JSON) of every
    parameter drawn per image. The ranges are documented in endolight.degrade.DegradeConfig.
    """
    from dataclasses import replace

    from endolight.data import FrameRef
    from endolight.degrade import DegradeConfig
    from endolight.io.images import InputError, expand_sources
    from endolight.pairs import synthesized_pairs, write_pairs

    try:
        files = expand_sources(source)
    except InputError as exc:
        _fail(str(exc))
    cfg = replace(DegradeConfig(), jpeg_prob=jpeg_prob)
    refs = [FrameRef(p, p.parent.name) for p in files]
    bar = tqdm(total=len(refs), desc="synth", unit="img")
    try:
        n = write_pairs(synthesized_pairs(refs, seed, cfg), output, on_item=lambda _: bar.update())
    except InputError as exc:
        _fail(str(exc))
    bar.close()
    typer.echo(f"{n} pairs written to {output}")


@app.command()
def train(
    config: Annotated[Path | None, typer.Option(help="TOML config (see configs/default.toml).")] = None,
    out_dir: Annotated[str | None, typer.Option(help="Override the config's out_dir.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Override the number of epochs.")] = None,
    seed: Annotated[int | None, typer.Option(help="Override the seed.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda.")] = None,
    max_frames: Annotated[int | None, typer.Option(help="Use only N training frames.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from OUT_DIR/last.*.")] = False,
) -> None:
    """Train the model on on-the-fly pairs from the real frames (never the held-out split).

    Writes OUT_DIR/{best,last}.safetensors, last.state.pt (optimizer, for --resume),
    config.json and log.csv (one row per epoch).
    """
    from endolight.train import load_config
    from endolight.train import train as run

    try:
        cfg = load_config(config, out_dir=out_dir, epochs=epochs, seed=seed, device=device,
                          max_frames=max_frames)
    except (OSError, ValueError, TypeError) as exc:
        _fail(str(exc))
    bar = tqdm(desc="epoch 1", unit="step")

    def on_step(step: int, total: int, stats: dict[str, float]) -> None:
        bar.total = total
        bar.update()
        bar.set_postfix(loss=f"{stats['loss']:.4f}", psnr=f"{stats['psnr']:.2f}")

    def on_epoch(log) -> None:
        tqdm.write(f"epoch {log.epoch}: train loss {log.train_loss:.4f}  val loss {log.val_loss:.4f}"
                   f"  val PSNR {log.val_psnr:.2f} dB  SSIM {log.val_ssim:.4f}  ({log.seconds:.0f} s)")
        bar.reset()
        bar.set_description(f"epoch {log.epoch + 1}")

    run(cfg, resume=resume, on_step=on_step, on_epoch=on_epoch)
    bar.close()
    typer.echo(f"checkpoints in {cfg.out_dir}")


@app.command("eval")
def evaluate_cmd(
    pairs: Annotated[Path | None, typer.Option(help="Folder with dim/ and target/ (from synth). "
                                                     "Default: the synthesized held-out split.")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Where metrics.csv/.md go.")] = Path(
        "results/eval"
    ),
    weights: Annotated[Path | None, typer.Option(help="Weights file (default: shipped).")] = None,
    methods: Annotated[str, typer.Option(help="Comma-separated methods.")] = "identity,gamma,clahe,endolight",
    max_side: Annotated[int | None, typer.Option(help="Shrink frames to this longer side.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda.")] = "auto",
) -> None:
    """PSNR, SSIM, ΔE2000 and LOE per image and on average, for our model and references."""
    from endolight.evaluate import evaluate, write_report
    from endolight.io.images import InputError
    from endolight.methods import get_method
    from endolight.pairs import heldout_pairs, pairs_from_dir

    try:
        chosen = {m: get_method(m, weights, device) for m in methods.split(",")}
        items = list(pairs_from_dir(pairs) if pairs else heldout_pairs(max_side))
    except (KeyError, InputError, FileNotFoundError) as exc:
        _fail(str(exc).strip("'\""))
    bar = tqdm(total=len(items), desc="eval", unit="img")
    rows = evaluate(chosen, items, on_item=lambda _: bar.update())
    bar.close()
    typer.echo(write_report(rows, output))
    typer.echo(f"per-image metrics: {output / 'metrics.csv'}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
