"""Command line: one verb per job. Thin: parse, call the library, report progress and errors."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

app = typer.Typer(
    add_completion=False,
    rich_markup_mode="markdown",  # reflows the docstrings' paragraphs to the terminal's width
    no_args_is_help=True,
    help="Restore dim, unevenly lit endoscope images and surgical video.",
)


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


# A weights file, or the name of shipped weights (endolight.checkpoint.SHIPPED_WEIGHTS).
Weights = Annotated[Path | None, typer.Option(
    help="Weights file, or a shipped name: default (the shipped model) or paper (the DeepUPE preset).")]

# The degradation protocol of synthesized pairs (endolight.degrade.PROTOCOLS), shared by synth,
# train, eval and compare.
Protocol = Annotated[str, typer.Option(
    help="Degradation of the pairs: 'endoscope' (light cone, exposure down to 0.1, sensor noise, "
         "JPEG) or 'paper' (DeepUPE's whole-frame gamma on each channel, no noise).")]


def _protocol(name: str):
    from endolight.degrade import protocol_config

    try:
        return protocol_config(name)
    except ValueError as exc:
        _fail(str(exc))


# Fidelity options shared by enhance and video (endolight.fidelity.FidelityConfig, docs/fidelity.md).
Exposure = Annotated[float | None, typer.Option(
    min=0.01, max=0.99, help="Target mean brightness (0-1) of the view; sets the strength per frame.")]
PreserveHue = Annotated[bool, typer.Option(help="Keep the input's colours; brightness from the model.")]
Highlights = Annotated[bool, typer.Option(help="Detect specular highlights; keep them from being stretched.")]
KeepBorder = Annotated[bool, typer.Option(
    help="Leave the black border outside the view unenhanced (its noise flattened, overlays kept).")]


def _fidelity(exposure: float | None, preserve_hue: bool, highlights: bool):
    from endolight.fidelity import FidelityConfig

    return FidelityConfig(highlights=highlights, preserve_hue=preserve_hue,
                          exposure=exposure)


@app.command()
def enhance(
    source: Annotated[str, typer.Argument(help="Image file, folder (recursive) or glob pattern.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output folder.")],
    weights: Weights = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N.")] = "auto",
    strength: Annotated[float, typer.Option(min=0.0, max=1.0, help="0 = input, 1 = full.")] = 1.0,
    keep_border: KeepBorder = True,
    exposure: Exposure = None,
    preserve_hue: PreserveHue = False,
    highlights: Highlights = False,
) -> None:
    """Enhance images; outputs keep their file names under OUTPUT (inputs are never overwritten).

    The model denoises what it lifts (its learned denoiser, the same in every entry point).

    A bad file (unreadable, not an image, grayscale, alpha, 16-bit, too small or too large) is
    reported on one line; the rest of the batch continues and the exit code is 1.
    """
    from endolight.enhancer import Enhancer
    from endolight.io.images import InputError, expand_sources, read_image, write_image

    try:
        files = expand_sources(source)
        enhancer = Enhancer(weights, device=device, strength=strength, keep_border=keep_border,
                            fidelity=_fidelity(exposure, preserve_hue, highlights))
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
    jpeg_prob: Annotated[float | None, typer.Option(
        min=0.0, max=1.0, help="Probability of JPEG quantisation (default: the protocol's).")] = None,
    protocol: Protocol = "endoscope",
) -> None:
    """Make (dim, target) training pairs with the endoscope degradation model.

    Writes OUTPUT/dim/NAME.png, OUTPUT/target/NAME.png and a manifest (CSV + JSON) of every
    parameter drawn per image. The ranges are documented in endolight.degrade.DegradeConfig.
    """
    from dataclasses import replace

    from endolight.data import FrameRef
    from endolight.io.images import InputError, expand_sources
    from endolight.pairs import synthesized_pairs, write_pairs

    try:
        files = expand_sources(source)
    except InputError as exc:
        _fail(str(exc))
    cfg = _protocol(protocol)
    if jpeg_prob is not None:
        cfg = replace(cfg, jpeg_prob=jpeg_prob)
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
    protocol: Annotated[str | None, typer.Option(
        help="Override the config's degradation protocol (endoscope or paper).")] = None,
) -> None:
    """Train the model on on-the-fly pairs from the real frames (never the held-out split).

    Writes OUT_DIR/{best,last}.safetensors, last.state.pt (optimizer, for --resume),
    config.json and log.csv (one row per epoch).
    """
    from endolight.train import load_config
    from endolight.train import train as run

    try:
        cfg = load_config(config, out_dir=out_dir, epochs=epochs, seed=seed, device=device,
                          max_frames=max_frames, protocol=protocol)
    except (OSError, ValueError, TypeError) as exc:
        _fail(str(exc))
    # Under torchrun only rank 0 reports (the library calls back on rank 0 only).
    main_rank = int(os.environ.get("RANK", "0")) == 0
    bar = tqdm(desc="epoch 1", unit="step", disable=not main_rank)

    def on_step(step: int, total: int, stats: dict[str, float]) -> None:
        bar.total = total
        bar.update()
        bar.set_postfix(loss=f"{stats['loss']:.4f}", psnr=f"{stats['psnr']:.2f}")

    def on_epoch(log) -> None:
        tqdm.write(f"epoch {log.epoch}: train loss {log.train_loss:.4f}  val loss {log.val_loss:.4f}"
                   f"  val PSNR {log.val_psnr:.2f} dB  SSIM {log.val_ssim:.4f}  ({log.seconds:.0f} s)")
        _plot_curve(Path(cfg.out_dir))
        bar.reset()
        bar.set_description(f"epoch {log.epoch + 1}")

    run(cfg, resume=resume, on_step=on_step, on_epoch=on_epoch)
    bar.close()
    if main_rank:
        typer.echo(f"checkpoints in {cfg.out_dir}")


@app.command()
def soup(
    weights: Annotated[list[Path], typer.Argument(help="Two or more weights files of one model.")],
    output: Annotated[Path, typer.Option("--output", "-o",
                                         help="Where the averaged weights go (.safetensors).")],
    config: Annotated[Path | None, typer.Option(
        help="Training config whose validation pairs score each file and the average first.")] = None,
) -> None:
    """Average the weights of several runs of one model (a "model soup", Wortsman et al. 2022):
    runs fine-tuned from the same weights, or a run and the weights it started from. The shipped
    default weights are made this way (README, "Training the shipped weights").
    """
    from endolight.checkpoint import save_weights
    from endolight.soup import average, load_all

    if output.suffix != ".safetensors":
        _fail(f"{output}: the output must be a .safetensors file")
    if any(output.resolve() == w.resolve() for w in weights):
        _fail(f"{output} is one of the inputs; write the average elsewhere")
    try:
        models = load_all(weights)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    model = average(models)
    meta: dict[str, object] = {"soup": [str(w) for w in weights]}
    if config is not None:
        import torch

        from endolight.train import load_config, validate, validation_pairs

        try:
            cfg = load_config(config)
        except (OSError, ValueError, TypeError) as exc:
            _fail(str(exc))
        pairs = validation_pairs(cfg)

        def score(name: str, net) -> tuple[float, float]:
            _, val_psnr, val_ssim = validate(net, pairs, cfg, torch.device("cpu"))
            typer.echo(f"{name}: val PSNR {val_psnr:.3f} dB  SSIM {val_ssim:.4f}")
            return val_psnr, val_ssim

        for w, net in zip(weights, models, strict=True):
            score(str(w), net)
        val_psnr, val_ssim = score("average", model)
        meta.update(val_psnr=val_psnr, val_ssim=val_ssim)
    save_weights(model, output, meta)
    typer.echo(f"averaged weights in {output}")


@app.command()
def adapt(
    source: Annotated[str, typer.Argument(help="Well-lit footage of your scope: video file, or folder or "
                                               "glob of frames in time order.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Weights file to write "
                                                                "(e.g. my-scope.safetensors).")],
    weights: Annotated[Path | None, typer.Option(help="Starting weights (default: shipped).")] = None,
    protocol: Protocol = "endoscope",
    minutes: Annotated[float, typer.Option(min=0.1, help="Training time budget; frame selection "
                                                         "and the final evaluation come on top.")] = 6.0,
    steps: Annotated[int | None, typer.Option(min=1, help="A fixed number of training steps instead of "
                                                          "the time budget (reproducible runs).")] = None,
    max_frames: Annotated[int, typer.Option(min=5, help="Usable frames kept at most, evenly in time.")] = 60,
    max_side: Annotated[int, typer.Option(min=64, help="Frames are shrunk to this longer side.")] = 512,
    work_dir: Annotated[Path | None, typer.Option(
        help="Frames, checkpoints and report (default: OUTPUT's name + .adapt beside it).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its work folder.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda.")] = "auto",
) -> None:
    """Fine-tune the model to your own scope from well-lit footage, in one command.

    Keeps the usable frames (well exposed, sharp, no near-duplicates) and says why it dropped
    the rest, holds out the last 20 % in time, dims the others with the degradation model
    (--protocol) and fine-tunes the starting weights for about --minutes. Then it compares
    the starting and adapted weights on the held-out frames, and writes a report with a
    contact sheet in the work folder. Use the result with any command's --weights. See
    docs/adapt.md.
    """
    from endolight.adapt import AdaptConfig, AdaptError, run_adapt
    from endolight.io.images import InputError

    cfg = AdaptConfig(source=source, output=str(output), work_dir=str(work_dir) if work_dir else None,
                      weights=str(weights) if weights else None, protocol=protocol, minutes=minutes,
                      steps=steps, max_frames=max_frames, max_side=max_side, device=device)
    bars: dict[str, tqdm] = {}

    def on_progress(stage: str, done: int, total: int | None) -> None:
        if stage not in bars:
            for bar in bars.values():
                bar.close()
            bars[stage] = tqdm(total=total, desc=stage, unit="step" if stage == "adapt" else "frame")
        bars[stage].update(done - bars[stage].n)

    def on_epoch(log) -> None:
        tqdm.write(f"epoch {log.epoch}: held-out PSNR {log.val_psnr:.2f} dB, SSIM {log.val_ssim:.4f}")

    try:
        try:
            result = run_adapt(cfg, resume=resume, on_progress=on_progress, on_epoch=on_epoch)
        finally:  # the bars end their lines before any error is printed
            for bar in bars.values():
                bar.close()
    except (AdaptError, InputError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail(f"interrupted: run the same command with --resume to continue from the last epoch "
              f"(kept in {cfg.work})", code=130)
    typer.echo(result.selection)
    if result.stopped:
        typer.echo(result.stopped)
    planned = int(result.plan["steps"])
    of = f" of {planned} planned" if result.steps != planned else ""
    typer.echo(f"{result.n_train} frames trained on, {result.n_heldout} held out (the last in time); "
               f"{result.steps}{of} steps")
    typer.echo(result.table)
    typer.echo(f"weights: {output}\nreport: {result.report} ({result.seconds:.0f} s in all)")


def _plot_curve(run_dir: Path) -> None:
    """RUN_DIR/curve.png: the validation curve so far (from RUN_DIR/log.csv)."""
    from endolight.figures import training_curves
    from endolight.io.atomic import read_csv
    from endolight.io.images import write_image

    write_image(run_dir / "curve.png", training_curves({run_dir.name: read_csv(run_dir / "log.csv")}))


@app.command("eval")
def evaluate_cmd(
    pairs: Annotated[Path | None, typer.Option(help="Folder with dim/ and target/ (from synth). "
                                                     "Default: the synthesized held-out split.")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Where metrics.csv/.md go.")] = Path(
        "results/eval"
    ),
    weights: Weights = None,
    methods: Annotated[str, typer.Option(help="Comma-separated methods.")] = (
        "identity,gamma,clahe,endolight"),
    max_side: Annotated[int | None, typer.Option(help="Shrink frames to this longer side.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda.")] = "auto",
    protocol: Protocol = "endoscope",
    real_dim: Annotated[bool, typer.Option(
        "--real-dim", help="No-reference measures on the real dim frames (capsule, nasal-dim) instead "
                           "of pairs: brightness, uniformity, noise, colourfulness, hue shift.")] = False,
) -> None:
    """PSNR, SSIM, ΔE2000 and LOE per image and on average, for our model and references; then
    inside the field of view: PSNR, SSIM, ΔE2000, hue shift, uniformity and noise (docs/fidelity.md);
    PSNR / SSIM per input-brightness and noise-level bin. Also writes contact_sheet.png (input |
    each method | target, one frame per organ) and psnr_vs_brightness.png to OUTPUT.

    METHODS: identity, gamma, clahe, he, msrcr, lime, a trained comparator (retinexnet, feqe,
    dped, zero-dce, zero-dce++), or endolight with fidelity options as suffixes, e.g.
    endolight+hue+highlights (hue, highlights, mask_stats).
    """
    from endolight.data import list_frames, load_frame
    from endolight.evaluate import evaluate, evaluate_no_reference, write_noref_report, write_report
    from endolight.io.images import InputError
    from endolight.methods import get_method
    from endolight.pairs import Pair, heldout_pairs, pairs_from_dir

    try:
        chosen = {m: get_method(m, weights, device) for m in methods.split(",")}
        if real_dim:
            frames = [(r, load_frame(r, max_side)) for r in list_frames("dim")]
        elif pairs:
            items: Iterable[Pair] = list(pairs_from_dir(pairs))
            total = len(items)
        else:  # made as they are scored, on the calling thread while the scoring threads work
            items, total = heldout_pairs(max_side, cfg=_protocol(protocol)), len(list_frames("heldout"))
    except (KeyError, InputError, FileNotFoundError) as exc:
        _fail(str(exc).strip("'\""))
    if real_dim:
        bar = tqdm(total=len(frames), desc="real dim", unit="img")
        nrows = evaluate_no_reference(chosen, frames, bar.update)
        bar.close()
        typer.echo(write_noref_report(nrows, output))
        typer.echo(f"per-image measures: {output / 'noref.csv'}")
        return
    bar = tqdm(total=total, desc="eval", unit="img")
    samples: dict = {}
    rows = evaluate(chosen, items, on_item=lambda _: bar.update(), samples=samples)
    bar.close()
    typer.echo(write_report(rows, output, samples))
    typer.echo(f"per-image metrics: {output / 'metrics.csv'}")
    typer.echo(f"pictures: {output / 'contact_sheet.png'} (input | each method | target, per organ), "
               f"{output / 'psnr_vs_brightness.png'}")


@app.command("export")
def export_cmd(
    output: Annotated[Path, typer.Option("-o", "--output", help="File to write (.onnx, .pt).")],
    fmt: Annotated[str, typer.Option("--format", help="onnx or torchscript.")] = "onnx",
    weights: Weights = None,
    layout: Annotated[str, typer.Option(
        help="nhwc: (N,H,W,3) RGB frames; nchw: (N,3,H,W); i420: (N,3H/2,W) Y'CbCr 4:2:0 buffers as "
             "video decoders give them (BT.601 limited range, even H and W; fast graph).")] = "nhwc",
    strength: Annotated[float, typer.Option(min=0.0, max=1.0, help="Baked-in strength.")] = 1.0,
    graph: Annotated[str | None, typer.Option(
        help="fast: guide, slice and denoiser fitted on a 1/8 copy, a few operations per pixel "
             "(real time on a CPU); exact: every pixel sliced (the Python enhancer within 1/255, "
             "about 1 s per 1080p frame in ONNX Runtime). Default: fast for a grey-illumination "
             "model with the sigmoid curve, exact otherwise (the paper preset).")] = None,
    check: Annotated[bool, typer.Option(help="Compare the file with PyTorch on a 480x640 frame.")] = True,
) -> None:
    """Export a deployable model: uint8 frame 'frame' in, enhanced uint8 frame 'enhanced' out.

    Batch, height and width are dynamic; the whole pipeline (low-res net, guide, slicing,
    denoising, D/S, rounding) is in the graph. ONNX uses opset 20. See docs/deploy.md.
    """
    from endolight.checkpoint import load_model
    from endolight.export import FORMATS, GRAPHS, LAYOUTS, example_frame, export_model, max_abs_difference

    if fmt not in FORMATS or layout not in LAYOUTS or graph not in (*GRAPHS, None):
        _fail(f"--format must be one of {', '.join(FORMATS)}, --layout one of {', '.join(LAYOUTS)} "
              f"and --graph one of {', '.join(GRAPHS)}")
    try:
        model = load_model(weights)
        path = export_model(model, output, fmt, layout, strength, graph)  # type: ignore[arg-type]
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    except ImportError as exc:
        _fail(f"{exc.name or exc}: ONNX export needs onnx and onnxscript (pip install 'endolight[export]')")
    typer.echo(f"{fmt} model written to {path} ({path.stat().st_size / 1e6:.1f} MB)")
    if not check:
        return
    frame = example_frame("nhwc", 480, 640, seed=1)[0].numpy()
    try:
        diff = max_abs_difference(path, model, frame, fmt, layout, strength, graph)  # type: ignore[arg-type]
    except ImportError:
        typer.echo("check skipped: onnxruntime is not installed (pip install 'endolight[export]')")
        return
    typer.echo(f"check: max |exported - PyTorch| = {diff}/255 on a 480x640 frame")
    if diff > 1:
        _fail(f"exported model differs from PyTorch by {diff}/255 (> 1/255)", code=1)


@app.command()
def serve(
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port.")] = 8000,
    host: Annotated[str, typer.Option(help="Interface; the default serves this machine only.")] = "127.0.0.1",
    source: Annotated[str | None, typer.Option(help="Live source: video file, frame folder, camera "
                                                    "index (0) or stream URL (rtsp://...).")] = None,
    weights: Weights = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N.")] = "auto",
    strength: Annotated[float, typer.Option(min=0.0, max=1.0, help="Initial strength.")] = 1.0,
    keep_border: KeepBorder = True,
    max_upload_mb: Annotated[float, typer.Option(min=0.1, help="Largest accepted upload.")] = 32.0,
    live_max_side: Annotated[int, typer.Option(min=64, help="Shrink live frames to this side.")] = 720,
) -> None:
    """Before/after viewer in the browser: drop an image, or play a live source through the model.

    Open http://HOST:PORT/ (no internet needed: the page ships with the package). See docs/deploy.md.
    """
    try:
        import uvicorn

        from endolight.serve import ServeConfig, create_app
    except ImportError as exc:
        _fail(f"{exc.name}: the viewer needs the serve extra (pip install 'endolight[serve]')")
    from endolight.enhancer import Enhancer
    from endolight.io.images import InputError
    from endolight.io.sources import open_source

    try:
        if source:
            open_source(source).close()  # a bad source fails here, not in the browser
        enhancer = Enhancer(weights, device=device, strength=strength, keep_border=keep_border)
    except (InputError, FileNotFoundError, ValueError, RuntimeError) as exc:
        _fail(str(exc))
    cfg = ServeConfig(max_upload_mb=max_upload_mb, source=source, live_max_side=live_max_side,
                      strength=strength)
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"warning: serving on {host}: anyone who can reach this port can use the viewer", err=True)
    web = create_app(enhancer, cfg)

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            if web.state.live:  # end open live streams, or shutdown would wait for them
                web.state.live.close()
            super().handle_exit(sig, frame)

    typer.echo(f"endolight viewer on http://{host}:{port}/  (Ctrl+C to stop)")
    Server(uvicorn.Config(web, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)).run()


@app.command()
def compare(
    quick: Annotated[bool, typer.Option(help="Tiny CI version: few steps, frames and figure rows.")] = False,
    steps: Annotated[int | None, typer.Option(help="Training steps of every learned method.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size of every learned method.")] = None,
    crop: Annotated[int | None, typer.Option(help="Training crop side of every learned method.")] = None,
    max_side: Annotated[int | None, typer.Option(help="Evaluation frames' longer side.")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Results folder (default: results, "
                                                                      "results/paper).")] = None,
    runs_dir: Annotated[Path | None, typer.Option(help="Checkpoint cache of trained methods (default: "
                                                        "runs/compare, runs/compare-paper); a stopped "
                                                        "run resumes from its snapshots there.")] = None,
    doc: Annotated[Path | None, typer.Option(help="Also write the report here "
                                                  "(default: docs/results.md, docs/results-paper.md under "
                                                  "--protocol paper; none with --quick).")] = None,
    weights: Annotated[Path | None, typer.Option(help="Our model's weights (default: shipped).")] = None,
    pairs: Annotated[Path | None, typer.Option(help="Evaluate on these pairs (dim/ + target/, from "
                                                    "synth) instead of the held-out split.")] = None,
    dim: Annotated[str | None, typer.Option(help="Real dim frames (file, folder, glob) for the "
                                                 "no-reference table instead of the dim split.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda.")] = "cpu",
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads (default: torch's).")] = None,
    protocol: Protocol = "endoscope",
) -> None:
    """Re-run the paper's comparison: Table 1, Figures 3 and 4, no-reference measures.

    Trains every learned comparator (RetinexNet, FEQE, DPED, Zero-DCE, Zero-DCE++) and our model
    under one budget on the same pairs (cached in RUNS_DIR: a re-run only trains what is missing),
    evaluates them with the classical methods on the held-out pairs and real dim frames, and
    writes tables (Markdown + CSV), figures and a report. See docs/results.md.
    """
    import shlex
    from dataclasses import replace

    import torch

    from endolight.compare import QUICK, CompareConfig, for_protocol, report_path, run

    if threads:
        torch.set_num_threads(threads)
    cfg = QUICK if quick else CompareConfig()
    budget = replace(cfg.budget, **{k: v for k, v in
                                    {"steps": steps, "batch_size": batch_size, "crop": crop}.items() if v})
    _protocol(protocol)  # a clear error for an unknown name
    cfg = replace(for_protocol(cfg, protocol), budget=budget, device=device,
                  **{k: str(v) if isinstance(v, Path) else v for k, v in
                     {"eval_max_side": max_side, "out_dir": output, "runs_dir": runs_dir,
                      "ours_weights": weights, "pairs_dir": pairs, "dim_dir": dim}.items() if v is not None})
    doc = doc or (None if quick else report_path(protocol))
    bars: dict[str, tqdm] = {}

    def on_progress(task: str, done: int, total: int) -> None:
        if task not in bars:
            for bar in bars.values():
                bar.close()
            # A resumed training reports its first step past the snapshot: the rate counts from there.
            bars[task] = tqdm(total=total, desc=task, unit="it", initial=max(0, done - 1))
        bars[task].update(done - bars[task].n)

    # NUMBA_NUM_THREADS is part of the recipe: after the fused kernel runs, numba's idle threads
    # otherwise compete with torch and slow every later step (it must be set before start-up).
    env = f"NUMBA_NUM_THREADS={os.environ['NUMBA_NUM_THREADS']} " if "NUMBA_NUM_THREADS" in os.environ else ""
    command = f"{env}endolight compare " + shlex.join(sys.argv[2:])
    try:
        run(cfg, on_progress, command=command.strip(), doc=doc)
    except (FileNotFoundError, ValueError) as exc:  # InputError is a ValueError
        _fail(str(exc))
    finally:
        for bar in bars.values():
            bar.close()
    typer.echo(f"results in {cfg.out_dir}/" + (f", report {doc}" if doc else ""))


def _passive_openmp() -> None:
    """Idle OpenMP threads sleep instead of spinning (before torch and numba load OpenMP): in a
    video stream the decoder and encoder need those cycles (measured 63 -> 55 CPU ms a 1080p
    frame). An OMP_WAIT_POLICY set by the user wins."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@app.command()
def video(
    source: Annotated[str, typer.Argument(help="Video file, folder or glob of frames, camera index (0) "
                                               "or stream URL (rtsp://, http://, udp://...).")],
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="Video file (.mp4, .mkv, .mov, .avi, .ts) or folder of frames.")] = None,
    weights: Weights = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N.")] = "auto",
    strength: Annotated[float, typer.Option(min=0.0, max=1.0, help="0 = input, 1 = full.")] = 1.0,
    keep_border: KeepBorder = True,
    temporal: Annotated[bool, typer.Option(help="Smooth the illumination over time (cut-aware).")] = True,
    temporal_denoise: Annotated[bool, typer.Option(
        help="Temporal noise reduction: average still tissue over frames, never moving parts.")] = True,
    side_by_side: Annotated[bool, typer.Option(help="Write input | output side by side.")] = False,
    low_latency: Annotated[bool, typer.Option(help="Short queues, no decoder/encoder buffering; a live "
                                                   "source drops frames (counted) only when the enhancer "
                                                   "falls behind.")] = False,
    timeout: Annotated[float, typer.Option(min=0.1, help="Camera/stream: seconds without data that end "
                                                         "the stream (a normal end once frames arrived); "
                                                         "limits each wait, not the session.")] = 5.0,
    show: Annotated[bool, typer.Option(help="Also show a live window (needs a display).")] = False,
    crf: Annotated[int, typer.Option(min=0, max=51, help="H.264 quality of a video output (x264 CRF): "
                                                         "18 visually lossless; 23 (x264's default) "
                                                         "smaller files, less encoder CPU.")] = 18,
    exposure: Exposure = None,
    preserve_hue: PreserveHue = False,
    highlights: Highlights = False,
) -> None:
    """Enhance a video or live stream: H.264 output keeps frame rate, timestamps, frame count and
    audio. Ctrl-C (or a fault part-way) still leaves a playable file up to the last frame.
    """
    _passive_openmp()
    from endolight.enhancer import Enhancer
    from endolight.io.images import InputError
    from endolight.temporal import TemporalConfig
    from endolight.video import VideoError, VideoOptions, enhance_video

    opts = VideoOptions(side_by_side=side_by_side, low_latency=low_latency,
                        temporal=TemporalConfig(denoise=TemporalConfig.denoise if temporal_denoise else 0.0)
                        if temporal else None, timeout=timeout, crf=crf)

    def on_start(src) -> None:
        bar.total = src.info.frames
        bar.refresh()

    def on_frame(report) -> None:
        bar.update(report.written - bar.n)
        if report.written % 10 == 0:
            bar.set_postfix(fps=f"{report.written / max(bar.format_dict['elapsed'], 1e-9):.1f}")

    try:
        enhancer = Enhancer(weights, device=device, strength=strength, keep_border=keep_border,
                            fidelity=_fidelity(exposure, preserve_hue, highlights))
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    except (RuntimeError, AssertionError) as exc:  # torch: no such device / not built with CUDA
        _fail(f"device {device}: {str(exc).splitlines()[0]}")
    bar = tqdm(desc="video", unit="frame", disable=None)
    try:
        report = enhance_video(source, output, enhancer, opts, show=show, on_start=on_start,
                               on_frame=on_frame)
    except (InputError, FileNotFoundError, ValueError) as exc:
        bar.close()
        _fail(str(exc))
    except VideoError as exc:
        bar.close()
        _fail(str(exc), code=1)
    bar.close()
    where = ", ".join(str(p) for p in report.outputs) or "the window"
    ended = f"stream ended ({report.ended}): " if report.ended else ""
    corrupt = f", {report.corrupt} corrupt packets skipped" if report.corrupt else ""
    typer.echo(f"{ended}{report.decoded} frames received, {report.written} written to {where}, "
               f"{report.dropped} dropped{corrupt}; {report.seconds:.1f} s ({report.fps:.1f} fps); latency "
               f"(decoded -> written) p50 {report.latency(50):.1f} ms, p99 {report.latency(99):.1f} ms")
    if report.interrupted:
        typer.echo("interrupted: the output ends at the last frame enhanced", err=True)
        raise typer.Exit(130)


@app.command()
def bench(
    quick: Annotated[bool, typer.Option(help="CI size: 720p and 1080p, a few frames each.")] = False,
    weights: Weights = None,
    output: Annotated[Path | None, typer.Option("-o", "--output",
                                                help="Also write the tables here (.md).")] = None,
    rounds: Annotated[int | None, typer.Option(
        min=1, help="Rounds of the bare codec and endolight alternated per clip, their median "
                    "ratio reported (default 3; --quick 1). Single rounds spread by ~0.1.")] = None,
) -> None:
    """Video speed (ms/frame, fps, peak RSS, latency) at 720p, 1080p and 4K, compute-only and
    file -> file, for the fused CPU kernel and the plain PyTorch path; and flicker with and
    without temporal smoothing. Numbers are for this machine: stop other work first.
    """
    _passive_openmp()
    from dataclasses import replace

    from endolight.bench import QUICK, BenchConfig, CodecRow, DenoiseRow, FlickerRow, StageRow, markdown, run
    from endolight.io.atomic import write_text

    def on_row(row) -> None:
        if isinstance(row, FlickerRow):
            tqdm.write(f"flicker  {row.clip}, smoothing {'on' if row.temporal else 'off'}: "
                       f"{row.flicker:.3f}  PSNR {row.psnr:.2f} dB")
        elif isinstance(row, CodecRow):
            tqdm.write(f"{row.size:>5} bare decode+encode {row.ms_per_frame:8.1f} ms/frame "
                       f"{row.fps:7.1f} fps, endolight / bare {row.ratio:.2f} "
                       f"(rounds {row.per_round}; CPU stolen by the host {100 * row.stolen:.0f} %)")
        elif isinstance(row, StageRow):
            tqdm.write(f"{row.size} full-res stage: {row.render_ms:.1f} CPU ms with the learned denoising "
                       f"(its coefficients {row.coeffs_ms:.1f}), {row.no_denoise_ms:.1f} without; planar "
                       f"path {row.planar_plan_ms:.1f} low-res ({row.planar_plan_no_denoise_ms:.1f} without "
                       f"denoising) + {row.planar_kernel_ms:.1f} kernel")
        elif isinstance(row, DenoiseRow):
            tqdm.write(f"temporal denoise  {row.clip}: noise {row.noise_frame:.2f} -> {row.noise_tnr:.2f}, "
                       f"warping error input {row.warp_input:.4f} per-frame {row.warp_frame:.4f} filtered "
                       f"{row.warp_tnr:.4f}, ghosting moving {row.ghost_moving:.2f} "
                       f"still {row.ghost_still:.2f}")
        else:
            rss = f"  peak RSS {row.peak_rss_mb:.0f} MB" if row.mode == "end-to-end" else ""
            tqdm.write(f"{row.size:>5} {row.path:<7} {row.mode:<10} {row.ms_per_frame:8.1f} ms/frame "
                       f"{row.fps:7.1f} fps{rss}")

    cfg = QUICK if quick else BenchConfig()
    try:
        result = run(cfg if rounds is None else replace(cfg, rounds=rounds), weights, on_row)
    except (FileNotFoundError, RuntimeError) as exc:
        _fail(str(exc))
    table = markdown(result)
    typer.echo("")
    typer.echo(table)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        write_text(output, table + "\n")


def main() -> None:
    from endolight.allocator import configure

    configure()
    app()


if __name__ == "__main__":
    main()
