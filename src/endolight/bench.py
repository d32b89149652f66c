"""Speed, memory and flicker benchmark of the video path (``endolight bench``).

A script, not a test: it measures on the machine it runs on and returns rows of numbers; the
CLI prints them. Clips: the real 720p laparoscopy clip, and 1080p / 4K clips encoded (to a
temporary folder) from the real 1920x1080 sinus frames, as no real clip of those sizes exists.
Every configuration runs twice in one process, with the fused CPU kernel and with the plain
PyTorch path, so the speed-up is a ratio measured in one run on one machine.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import islice
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from endolight.data import CLIP, CLIP_HELDOUT, default_data_root
from endolight.degrade import DegradeConfig, degrade, sample_params
from endolight.enhancer import Enhancer
from endolight.fov import fov_mask
from endolight.io.images import expand_sources, read_image
from endolight.io.sinks import VideoSink
from endolight.io.sources import Frame, open_source
from endolight.io.tensors import to_tensor
from endolight.metrics import flicker, psnr
from endolight.temporal import GridSmoother, TemporalConfig
from endolight.video import VideoOptions, enhance_video, torch_threads_for

SINUS = "sinus/clip-a"  # real 1920x1080 frames: the source of the synthetic 1080p and 4K clips
SIZES = {"720p": (1280, 720), "1080p": (1920, 1080), "4K": (3840, 2160)}


@dataclass(frozen=True)
class BenchConfig:
    """How much to run. ``quick`` sizes suit CI; the defaults give stable numbers."""

    sizes: tuple[str, ...] = ("720p", "1080p", "4K")
    frames: int = 120  # frames per end-to-end clip (fused path)
    compute_frames: int = 30  # frames timed compute-only (fused path)
    torch_frames: int = 12  # frames per clip for the slow PyTorch path (4K: a third, at least 2)
    flicker_frames: int = 40  # frames of the static and moving flicker clips
    quick: bool = False


QUICK = BenchConfig(sizes=("720p", "1080p"), frames=16, compute_frames=6, torch_frames=3, flicker_frames=10,
                    quick=True)


@dataclass
class SpeedRow:
    size: str
    path: str  # "fused" or "pytorch"
    mode: str  # "compute" or "end-to-end"
    frames: int
    ms_per_frame: float
    fps: float
    peak_rss_mb: float = float("nan")  # end-to-end only: the peak of a fresh process
    latency_p50: float = float("nan")
    latency_p99: float = float("nan")


@dataclass
class FlickerRow:
    clip: str
    temporal: bool
    flicker: float
    psnr: float


@dataclass
class BenchResult:
    speed: list[SpeedRow] = field(default_factory=list)
    flicker: list[FlickerRow] = field(default_factory=list)
    machine: str = ""


def _sinus_frames(root: Path) -> list[np.ndarray]:
    return [read_image(p) for p in expand_sources(root / SINUS)]


def write_clip(frames: list[np.ndarray], path: Path, size: tuple[int, int], n: int, fps: int = 25) -> Path:
    """Encode ``n`` frames (cycling through ``frames``, resized to ``size``) as a typical
    recorder's H.264 (x264 veryfast, CRF 20) at ``fps``."""
    sink = VideoSink(path, size[0], size[1], Fraction(fps), Fraction(1, fps), preset="veryfast", crf=20)
    tb = Fraction(1, fps)
    for i in range(n):
        img = frames[i % len(frames)]
        if img.shape[1::-1] != size:
            img = cv2.resize(img, size, interpolation=cv2.INTER_CUBIC)
        sink.write(Frame(img, i, i, tb), img)
    sink.close()
    return path


def _decoded(path: Path, n: int) -> list[np.ndarray]:
    src = open_source(path)
    try:
        return [f.image for f, _ in zip(src, range(n), strict=False)]
    finally:
        src.close()


def _compute_only(enhancer: Enhancer, frames: list[np.ndarray], n: int) -> float:
    """Milliseconds per frame of enhancing decoded frames as the video path does (per-clip field
    of view, temporal smoothing), after one warm-up frame."""
    fov = fov_mask(frames[0]) if enhancer.keep_border else None
    smoother = GridSmoother()
    with torch_threads_for(enhancer):
        enhancer.enhance_array(frames[0], grid_filter=smoother, fov=fov)
        t0 = time.perf_counter()
        for i in range(n):
            enhancer.enhance_array(frames[i % len(frames)], grid_filter=smoother, fov=fov)
        return (time.perf_counter() - t0) * 1e3 / n


def end_to_end(clip: str | Path, out: str | Path, n: int, fused: bool, weights: str | Path | None) -> dict:
    """File -> file (decode, enhance, encode) of ``n`` frames, as ``endolight video`` does, after
    loading the model and the kernel; the report's numbers and this process's peak RSS (MB)."""
    enhancer = Enhancer(weights, device="cpu", fused=fused)
    enhancer.enhance_array(np.zeros((64, 64, 3), np.uint8), fov=np.ones((64, 64), bool))  # load
    report = enhance_video(clip, out, enhancer, VideoOptions(max_frames=n))
    Path(out).unlink(missing_ok=True)
    return {"frames": report.written, "seconds": report.seconds, "p50": report.latency(50),
            "p99": report.latency(99), "peak_rss_mb": _peak_rss_mb()}


def _peak_rss_mb() -> float:
    """This process's peak resident memory. Linux's ``VmHWM`` belongs to the process image, so
    a fresh child reports its own peak; ``ru_maxrss`` would also count the forking parent."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _end_to_end_process(clip: Path, out: Path, n: int, fused: bool, weights: str | Path | None) -> dict:
    """:func:`end_to_end` in a fresh Python process, so its peak RSS is its own (a process's
    heap does not shrink back after a bigger run)."""
    code = ("import json, sys; from endolight.bench import end_to_end; "
            "print(json.dumps(end_to_end(*json.loads(sys.argv[1]))))")
    args = json.dumps([str(clip), str(out), n, fused, str(weights) if weights else None])
    proc = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"end-to-end run failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_speed(cfg: BenchConfig, enhancers: dict[str, Enhancer], weights: str | Path | None, root: Path,
              tmp: Path, on_row: Callable[[SpeedRow], None]) -> list[SpeedRow]:
    rows = []
    sinus = None
    for size in cfg.sizes:
        if size == "720p":
            clip = root / CLIP
        else:
            sinus = sinus if sinus is not None else _sinus_frames(root)
            clip = write_clip(sinus, tmp / f"sinus-{size}.mp4", SIZES[size], cfg.frames)
        decoded = _decoded(clip, min(cfg.compute_frames, 10))
        for path, enhancer in enhancers.items():
            slow = path == "pytorch"
            n_e2e = cfg.frames if not slow else max(2, cfg.torch_frames // (3 if size == "4K" else 1))
            n_comp = cfg.compute_frames if not slow else n_e2e
            ms = _compute_only(enhancer, decoded, n_comp)
            rows.append(SpeedRow(size, path, "compute", n_comp, ms, 1e3 / ms))
            on_row(rows[-1])
            e2e = _end_to_end_process(clip, tmp / f"out-{size}-{path}.mp4", n_e2e, not slow, weights)
            ms = e2e["seconds"] * 1e3 / e2e["frames"]
            rows.append(SpeedRow(size, path, "end-to-end", e2e["frames"], ms, 1e3 / ms, e2e["peak_rss_mb"],
                                 e2e["p50"], e2e["p99"]))
            on_row(rows[-1])
        del decoded
    return rows


def _darken(target: np.ndarray, params, seed: int) -> np.ndarray:
    dim = degrade(to_tensor(target), params, torch.Generator().manual_seed(seed))
    return (dim.permute(1, 2, 0) * 255 + 0.5).to(torch.uint8).numpy()


def _heldout_clip_frames(root: Path, n: int, width: int | None) -> list[np.ndarray]:
    """Held-out frames 200.. of the real laparoscopy clip, decoded one by one (no whole-clip
    cache), shrunk to ``width`` px wide."""
    src = open_source(root / CLIP)
    try:
        frames = [f.image for f in islice(src, CLIP_HELDOUT.start, CLIP_HELDOUT.start + n)]
    finally:
        src.close()
    if width and frames[0].shape[1] > width:
        size = (width, round(frames[0].shape[0] * width / frames[0].shape[1]))
        frames = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]
    return frames


def static_clip(root: Path, n: int, width: int | None = None, seed: int = 7
                ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A still scene through a dim, noisy scope: one real held-out frame (laparoscopy clip frame
    200), one fixed degradation, fresh sensor noise in every frame. Returns (dim frames, targets)."""
    target = _heldout_clip_frames(root, 1, width)[0]
    params = sample_params(DegradeConfig(), np.random.default_rng(seed))
    return [_darken(target, params, seed * 1000 + i) for i in range(n)], [target] * n


def moving_clip(root: Path, n: int, width: int | None = None, seed: int = 7
                ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Held-out frames 200.. of the real laparoscopy clip, one fixed degradation, fresh noise."""
    params = sample_params(DegradeConfig(), np.random.default_rng(seed))
    targets = _heldout_clip_frames(root, n, width)
    return [_darken(t, params, seed * 1000 + i) for i, t in enumerate(targets)], targets


def _small(frames: list[np.ndarray], side: int = 320) -> torch.Tensor:
    """``(T, 3, h, w)`` float clip shrunk to ``side`` px wide (keeps the flicker metric light)."""
    h, w = frames[0].shape[:2]
    size = (side, round(h * side / w))
    return torch.stack([to_tensor(cv2.resize(f, size, interpolation=cv2.INTER_AREA)) for f in frames])


def flicker_rows(enhancer: Enhancer, dims: list[np.ndarray], targets: list[np.ndarray], name: str,
                 flow: bool) -> list[FlickerRow]:
    """Flicker (relative to the input) and mean PSNR against the targets, per-frame vs smoothed."""
    rows = []
    fov = fov_mask(dims[0]) if enhancer.keep_border else None
    for temporal in (False, True):
        smoother = GridSmoother(TemporalConfig()) if temporal else None
        outs = [enhancer.enhance_array(d, grid_filter=smoother, fov=fov) for d in dims]
        quality = torch.cat([psnr(to_tensor(o)[None], to_tensor(t)[None])
                             for o, t in zip(outs, targets, strict=True)])
        fl = float(flicker(_small(dims), _small(outs), flow=flow))
        rows.append(FlickerRow(name, temporal, fl, float(quality.mean())))
    return rows


def run(cfg: BenchConfig, weights: str | Path | None = None, on_row: Callable[[object], None] | None = None,
        root: Path | None = None) -> BenchResult:
    """Run the whole benchmark on CPU.

    Raises:
        FileNotFoundError: the data folder or the weights are missing.
    """
    root = Path(root) if root else default_data_root()
    if not (root / CLIP).is_file():
        raise FileNotFoundError(f"benchmark clip {root / CLIP} not found (set ENDOLIGHT_DATA)")
    note = on_row or (lambda _: None)
    fused = Enhancer(weights, device="cpu")
    enhancers = {"fused": fused, "pytorch": Enhancer(weights, device="cpu", fused=False)}
    result = BenchResult(machine=f"{os.cpu_count()} CPU cores, torch {torch.__version__} "
                                 f"({torch.get_num_threads()} threads), PyAV {av.__version__}")
    with tempfile.TemporaryDirectory(prefix="endolight-bench-") as tmp:
        result.speed = run_speed(cfg, enhancers, weights, root, Path(tmp), note)
    for name, (dims, targets), flow in (
        ("static (laparoscopy frame 200)", static_clip(root, cfg.flicker_frames), False),
        ("moving (laparoscopy 200+, flow-warped)", moving_clip(root, cfg.flicker_frames), True),
    ):
        for row in flicker_rows(fused, dims, targets, name, flow):
            result.flicker.append(row)
            note(row)
    return result


def markdown(result: BenchResult) -> str:
    """The benchmark as Markdown tables, with the speed-up of the fused path per size."""
    lines = [f"Machine: {result.machine}", "",
             "| size | path | mode | frames | ms/frame | fps | peak RSS MB | latency p50 ms | p99 ms |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in result.speed:
        extra = (f"{r.peak_rss_mb:.0f} | {r.latency_p50:.0f} | {r.latency_p99:.0f}" if r.mode == "end-to-end"
                 else "- | - | -")
        lines.append(f"| {r.size} | {r.path} | {r.mode} | {r.frames} | {r.ms_per_frame:.1f} | {r.fps:.1f} | "
                     f"{extra} |")
    by = {(r.size, r.path, r.mode): r for r in result.speed}
    lines += ["", "| size | speed-up compute | speed-up end-to-end |", "|---|---:|---:|"]
    for size in dict.fromkeys(r.size for r in result.speed):
        ratios = []
        for mode in ("compute", "end-to-end"):
            f, p = by.get((size, "fused", mode)), by.get((size, "pytorch", mode))
            ratios.append(f"{p.ms_per_frame / f.ms_per_frame:.1f}x" if f and p else "-")
        lines.append(f"| {size} | {ratios[0]} | {ratios[1]} |")
    if result.flicker:
        lines += ["", "| clip | temporal smoothing | flicker (1 = as steady as the input) | PSNR dB |",
                  "|---|---|---:|---:|"]
        for r in result.flicker:
            lines.append(f"| {r.clip} | {'on' if r.temporal else 'off'} | {r.flicker:.3f} | {r.psnr:.2f} |")
    return "\n".join(lines)

