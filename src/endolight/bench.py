"""Speed, memory and flicker benchmark of the video path (``endolight bench``).

A script, not a test: it measures on the machine it runs on and returns rows of numbers; the
CLI prints them. Clips: the real 720p laparoscopy clip, and 1080p / 4K clips encoded (to a
temporary folder) from the real 1920x1080 sinus frames, as no real clip of those sizes exists.
Every configuration runs twice in one process, with the fused CPU kernel and with the plain
PyTorch path, so the speed-up is a ratio measured in one run on one machine.
"""

from __future__ import annotations

import os
import resource
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from endolight.data import CLIP, FrameRef, default_data_root, load_frame, to_tensor
from endolight.degrade import DegradeConfig, degrade, sample_params
from endolight.enhancer import Enhancer
from endolight.fov import fov_mask
from endolight.io.images import expand_sources, read_image
from endolight.io.sinks import VideoSink
from endolight.io.sources import Frame, open_source
from endolight.metrics import flicker, psnr
from endolight.temporal import GridSmoother, TemporalConfig
from endolight.video import VideoOptions, VideoReport, enhance_video

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
    peak_rss_mb: float
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


def _rss_mb() -> float:
    """Resident memory now (Linux ``/proc``), else the process's peak so far."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def _peak_rss() -> Iterator[list[float]]:
    """Samples the resident memory every 5 ms while the block runs; yields ``[peak MB]``."""
    peak, done = [_rss_mb()], threading.Event()

    def sample() -> None:
        while not done.wait(0.005):
            peak[0] = max(peak[0], _rss_mb())

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield peak
    finally:
        done.set()
        t.join()
        peak[0] = max(peak[0], _rss_mb())


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


def _compute_only(enhancer: Enhancer, frames: list[np.ndarray], n: int) -> tuple[float, float]:
    """Milliseconds per frame of enhancing decoded frames as the video path does (per-clip field
    of view, temporal smoothing), after one warm-up frame; and the peak RSS in MB."""
    fov = fov_mask(frames[0]) if enhancer.keep_border else None
    smoother = GridSmoother()
    enhancer.enhance_array(frames[0], grid_filter=smoother, fov=fov)
    with _peak_rss() as peak:
        t0 = time.perf_counter()
        for i in range(n):
            enhancer.enhance_array(frames[i % len(frames)], grid_filter=smoother, fov=fov)
        ms = (time.perf_counter() - t0) * 1e3 / n
    return ms, peak[0]


def _end_to_end(enhancer: Enhancer, clip: Path, out: Path, n: int) -> tuple[VideoReport, float]:
    """File -> file: decode, enhance, encode ``n`` frames; the report and the peak RSS in MB."""
    with _peak_rss() as peak:
        report = enhance_video(clip, out, enhancer, VideoOptions(max_frames=n))
    out.unlink(missing_ok=True)
    return report, peak[0]


def run_speed(cfg: BenchConfig, enhancers: dict[str, Enhancer], root: Path, tmp: Path,
              on_row: Callable[[SpeedRow], None]) -> list[SpeedRow]:
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
            ms, rss = _compute_only(enhancer, decoded, n_comp)
            row = SpeedRow(size, path, "compute", n_comp, ms, 1e3 / ms, rss)
            rows.append(row)
            on_row(row)
            report, rss = _end_to_end(enhancer, clip, tmp / f"out-{size}-{path}.mp4", n_e2e)
            row = SpeedRow(size, path, "end-to-end", report.written, report.seconds * 1e3 / report.written,
                           report.fps, rss, report.latency(50), report.latency(99))
            rows.append(row)
            on_row(row)
    return rows


def _darken(target: np.ndarray, params, seed: int) -> np.ndarray:
    dim = degrade(to_tensor(target), params, torch.Generator().manual_seed(seed))
    return (dim.permute(1, 2, 0) * 255 + 0.5).to(torch.uint8).numpy()


def static_clip(root: Path, n: int, max_side: int | None = None, seed: int = 7
                ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A still scene through a dim, noisy scope: one real held-out frame (laparoscopy clip frame
    200), one fixed degradation, fresh sensor noise in every frame. Returns (dim frames, targets)."""
    target = load_frame(FrameRef(root / CLIP, "laparoscopy", 200), max_side)
    params = sample_params(DegradeConfig(), np.random.default_rng(seed))
    return [_darken(target, params, seed * 1000 + i) for i in range(n)], [target] * n


def moving_clip(root: Path, n: int, max_side: int | None = None, seed: int = 7
                ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Held-out frames 200.. of the real laparoscopy clip, one fixed degradation, fresh noise."""
    params = sample_params(DegradeConfig(), np.random.default_rng(seed))
    targets = [load_frame(FrameRef(root / CLIP, "laparoscopy", 200 + i), max_side) for i in range(n)]
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
        result.speed = run_speed(cfg, enhancers, root, Path(tmp), note)
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
        lat = f"{r.latency_p50:.0f} | {r.latency_p99:.0f}" if r.mode == "end-to-end" else "- | -"
        lines.append(f"| {r.size} | {r.path} | {r.mode} | {r.frames} | {r.ms_per_frame:.1f} | {r.fps:.1f} | "
                     f"{r.peak_rss_mb:.0f} | {lat} |")
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

