"""Speed, memory and flicker benchmark of the video path (``endolight bench``).

A script, not a test: it measures on the machine it runs on and returns rows of numbers; the
CLI prints them. Clips: the real 720p laparoscopy clip, the same clip upscaled to 1080p and 4K
(little border: what a scope shows), and a 1080p clip of the real sinus frames (a round view,
56 % border); the upscaled clips are encoded to a temporary folder. Every configuration runs with
the fused CPU kernel and with the plain PyTorch path, and the bare decode + encode rate of the
same file (a plain PyAV loop) is measured in the same run: the ratios are what carry over to
another machine.
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
from endolight.io.yuv import rgb_to_i420
from endolight.kernels.fused import render_uint8
from endolight.metrics import flicker, psnr
from endolight.model.slicing import EPS
from endolight.planar import plan_planes, render_plan
from endolight.temporal import GridSmoother, TemporalConfig, TemporalDenoiser
from endolight.video import VideoOptions, enhance_video, stream_threads, warm_up

SINUS = "sinus/clip-a"  # real 1920x1080 frames, round view: the "1080p sinus" clip
# name -> (source, frame size; None: the file as it is)
SIZES = {"720p": ("laparoscopy", None), "1080p": ("laparoscopy", (1920, 1080)),
         "4K": ("laparoscopy", (3840, 2160)), "1080p sinus": ("sinus", (1920, 1080))}


@dataclass(frozen=True)
class BenchConfig:
    """How much to run. ``quick`` sizes suit CI; the defaults give stable numbers."""

    sizes: tuple[str, ...] = ("720p", "1080p", "4K", "1080p sinus")
    # Frames per end-to-end clip (fused path): 200 as scripts/video_ratio.py (the clip has 250).
    # At 120 a run's start (the first frames' new buffers, the field of view's first 32 frames:
    # ~150 ms at 1080p) weighed ~1.2 ms a frame of the ~19 (6 Dec: 1080p 0.74 of the bare codec
    # against 0.78-0.82 over 200 frames).
    frames: int = 200
    compute_frames: int = 30  # frames timed compute-only (fused path)
    torch_frames: int = 12  # frames per clip for the slow PyTorch path (4K: a third, at least 2)
    flicker_frames: int = 40  # frames of the static and moving flicker clips
    # The ratio to the bare codec: bare loop and endolight alternated this many times per clip,
    # the median ratio reported. One pair is a coin toss at the 0.8 line: the bare loop alone
    # varies by 10-15 % between consecutive runs (1080p: 14.3-16.7 ms a frame, 6 Dec).
    rounds: int = 3
    quick: bool = False


QUICK = BenchConfig(sizes=("720p", "1080p"), frames=16, compute_frames=6, torch_frames=3, flicker_frames=10,
                    rounds=1, quick=True)


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
class CodecRow:
    """The bare decode + encode of a clip (:func:`bare_codec`) and endolight's file -> file time
    on it (the fused path), milliseconds a frame, in alternated rounds."""

    size: str
    frames: int
    bare_ms: list[float] = field(default_factory=list)
    endolight_ms: list[float] = field(default_factory=list)
    stolen: float = float("nan")  # share of the machine's CPU time the host took meanwhile

    @property
    def ms_per_frame(self) -> float:
        """The bare loop's median."""
        return float(np.median(self.bare_ms))

    @property
    def fps(self) -> float:
        return 1e3 / self.ms_per_frame

    @property
    def endolight_fps(self) -> float:
        """endolight's median rate."""
        return 1e3 / float(np.median(self.endolight_ms))

    @property
    def ratios(self) -> list[float]:
        """endolight's rate over the bare loop's, per round."""
        return [b / e for b, e in zip(self.bare_ms, self.endolight_ms, strict=True)]

    @property
    def ratio(self) -> float:
        """The median of :attr:`ratios`."""
        return float(np.median(self.ratios))

    @property
    def per_round(self) -> str:
        """:attr:`ratios` as printed: ``"0.82, 0.79, 0.80"``."""
        return ", ".join(f"{r:.2f}" for r in self.ratios)


@dataclass
class FlickerRow:
    clip: str
    temporal: bool
    flicker: float
    psnr: float


@dataclass
class DenoiseRow:
    """Temporal noise reduction on one clip (``TemporalDenoiser``), per-frame output vs filtered.

    noise: sigma (8-bit levels) in flat regions of the view, per-frame and filtered.
    warp: relative warping error (Lai et al. 2018) of the input, per-frame and filtered output.
    ghost: mean |filtered - per-frame| (levels) where the scene moved (a trail shows here) and
        where it stood still (the noise taken out), on frames after the first.
    ms: CPU milliseconds of the filter per frame at this clip's size.
    """

    clip: str
    noise_frame: float
    noise_tnr: float
    warp_input: float
    warp_frame: float
    warp_tnr: float
    ghost_moving: float
    ghost_still: float
    ms: float


@dataclass
class StageRow:
    """CPU milliseconds per frame, one thread. RGB path (images; the grid given): the
    full-resolution stage ``Enhancer.render`` with the model's learned denoising (its low-res
    coefficients included, ``coeffs_ms`` of it), and the same kernel without the denoising.
    Planar path (video, :mod:`endolight.planar`): its low-resolution half (network included)
    with and without the denoiser's fit, and its full-resolution kernel (whose denoising is two
    interpolated maps and a multiply-add per luma pixel, not separable)."""

    size: str
    render_ms: float
    coeffs_ms: float
    no_denoise_ms: float
    planar_plan_ms: float = float("nan")
    planar_plan_no_denoise_ms: float = float("nan")
    planar_kernel_ms: float = float("nan")


@dataclass
class BenchResult:
    speed: list[SpeedRow] = field(default_factory=list)
    codec: list[CodecRow] = field(default_factory=list)
    flicker: list[FlickerRow] = field(default_factory=list)
    denoise: list[DenoiseRow] = field(default_factory=list)
    stages: list[StageRow] = field(default_factory=list)
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


def cpu_ticks() -> tuple[int, int] | None:
    """``(stolen, all)`` CPU ticks of the whole machine so far (Linux ``/proc/stat``), or ``None``
    elsewhere. On a virtual machine the host may run other guests on our cores ("steal"): timings
    taken meanwhile are slowed, not all by the same amount, which a benchmark should say."""
    try:
        with open("/proc/stat") as fh:
            ticks = [int(v) for v in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return (ticks[7], sum(ticks)) if len(ticks) == 8 else None


def stolen_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float:
    """Share of the CPU time between two :func:`cpu_ticks` readings that the host took (NaN
    where unknown)."""
    if before is None or after is None or after[1] <= before[1]:
        return float("nan")
    return (after[0] - before[0]) / (after[1] - before[1])


def bare_codec(clip: Path, out: Path, n: int) -> tuple[int, float]:
    """Frames and milliseconds per frame of a plain PyAV loop over ``n`` frames of ``clip``: the
    floor any file -> file enhancer pays (decode with threads, ``to_ndarray('rgb24')``,
    ``VideoFrame.from_ndarray``, libx264 ``ultrafast``)."""
    with av.open(str(clip)) as inp, av.open(str(out), "w") as dst:
        src = inp.streams.video[0]
        src.thread_type = "AUTO"
        st = dst.add_stream("libx264", rate=src.average_rate or 25, options={"preset": "ultrafast"})
        st.width, st.height, st.pix_fmt = src.codec_context.width, src.codec_context.height, "yuv420p"
        frames, t0 = 0, time.perf_counter()
        for vf in islice(inp.decode(src), n):
            img = vf.to_ndarray(format="rgb24")
            for pkt in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                dst.mux(pkt)
            frames += 1
        for pkt in st.encode():
            dst.mux(pkt)
        ms = (time.perf_counter() - t0) * 1e3 / frames
    out.unlink(missing_ok=True)
    return frames, ms


def bench_clip(size: str, root: Path, tmp: Path, n: int) -> Path:
    """The benchmark clip ``size`` (see ``SIZES``); upscaled ones are encoded once into ``tmp``,
    named by their frame count (a shorter clip cached for another run must not stand in for it)."""
    source, frame_size = SIZES[size]
    if frame_size is None:
        return root / CLIP
    path = tmp / f"{size.replace(' ', '-')}-{n}.mp4"
    if not path.exists():
        frames = _sinus_frames(root) if source == "sinus" else [f.image for f in _decoded(root / CLIP, n)]
        write_clip(frames, path, frame_size, n)
    return path


# Where the scripts in scripts/ keep the encoded benchmark clips between runs (they compare runs).
CLIP_CACHE = Path(tempfile.gettempdir()) / "endolight-bench"


def cached_clip(size: str, n: int) -> Path:
    """:func:`bench_clip` of the default data, encoded once into ``CLIP_CACHE``."""
    CLIP_CACHE.mkdir(exist_ok=True)
    return bench_clip(size, default_data_root(), CLIP_CACHE, n)


def _decoded(path: Path, n: int) -> list[Frame]:
    src = open_source(path)
    try:
        return [f for f, _ in zip(src, range(n), strict=False)]
    finally:
        src.close()


def _compute_only(enhancer: Enhancer, frames: list[Frame], n: int) -> float:
    """Milliseconds per frame of enhancing decoded frames as the video path does (its planes
    when the decoder gave them, per-clip field of view, temporal smoothing; one thread after
    the other, not the video's two), after one warm-up frame."""
    planar = frames[0].planes is not None and enhancer.planar
    fov = fov_mask(frames[0].image) if enhancer.keep_border else None
    smoother = GridSmoother()

    def one(frame: Frame) -> np.ndarray:
        if planar:
            return enhancer.enhance_planes(frame.planes, grid_filter=smoother, fov=fov)
        return enhancer.enhance_array(frame.image, grid_filter=smoother, fov=fov)

    with stream_threads(enhancer):
        one(frames[0])
        t0 = time.perf_counter()
        for i in range(n):
            one(frames[i % len(frames)])
        return (time.perf_counter() - t0) * 1e3 / n


def end_to_end(clip: str | Path, out: str | Path, n: int, fused: bool, weights: str | Path | None,
               crf: int = VideoOptions.crf) -> dict:
    """File -> file (decode, enhance, encode) of ``n`` frames, as ``endolight video`` does, after
    loading the model and the kernel; the report's numbers and this process's peak RSS (MB)."""
    enhancer = Enhancer(weights, device="cpu", fused=fused)
    warm_up(enhancer)  # compiled kernels and the network's session made before the clock starts
    report = enhance_video(clip, out, enhancer, VideoOptions(max_frames=n, crf=crf))
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
    code = ("import json, sys; from endolight.allocator import configure; "
            "from endolight.bench import end_to_end; configure(); "  # as the command line does
            "print(json.dumps(end_to_end(*json.loads(sys.argv[1]))))")
    args = json.dumps([str(clip), str(out), n, fused, str(weights) if weights else None])
    proc = subprocess.run([sys.executable, "-c", code, args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"end-to-end run failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_speed(cfg: BenchConfig, enhancers: dict[str, Enhancer], weights: str | Path | None, root: Path,
              tmp: Path, on_row: Callable[[object], None]) -> tuple[list[SpeedRow], list[CodecRow]]:
    rows, codec = [], []
    for size in cfg.sizes:
        clip = bench_clip(size, root, tmp, cfg.frames)
        ticks = cpu_ticks()
        frames, ms = bare_codec(clip, tmp / "bare.mp4", cfg.frames)
        codec.append(CodecRow(size, frames, [ms]))
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
            if path == "fused":
                codec[-1].endolight_ms.append(ms)
                _more_rounds(codec[-1], cfg.rounds - 1, clip, tmp, weights)
                codec[-1].stolen = stolen_share(ticks, cpu_ticks())
                on_row(codec[-1])
        del decoded
    return rows, codec


def _more_rounds(row: CodecRow, rounds: int, clip: Path, tmp: Path, weights: str | Path | None) -> None:
    """``rounds`` more pairs of the bare loop and endolight's fused path on ``clip``, into ``row``."""
    for _ in range(rounds):
        row.bare_ms.append(bare_codec(clip, tmp / "bare.mp4", row.frames)[1])
        e2e = _end_to_end_process(clip, tmp / "out-rounds.mp4", row.frames, True, weights)
        row.endolight_ms.append(e2e["seconds"] * 1e3 / e2e["frames"])


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


def _luma(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)


def flat_regions(target: np.ndarray, fov: np.ndarray, share: float = 0.3) -> np.ndarray:
    """The flattest ``share`` of the view of a clean frame (lowest smoothed gradient), away from
    the view's edge: where noise is measured without mistaking texture for it."""
    g = cv2.GaussianBlur(_luma(target), (0, 0), 2)
    grad = cv2.magnitude(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))
    inner = cv2.erode(fov.astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
    return inner & (grad <= np.quantile(grad[inner], share))


def noise_sigma(image: np.ndarray, mask: np.ndarray) -> float:
    """Noise sigma of a frame's luma inside ``mask`` (Immerkaer 1996: the mean absolute response
    of a kernel that cancels planes and ramps, scaled to a Gaussian's sigma)."""
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    response = np.abs(cv2.filter2D(_luma(image), cv2.CV_32F, kernel))
    return float(np.sqrt(np.pi / 2) / 6 * response[mask].mean())


def flows(targets: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per consecutive pair: the sampling map that warps frame t-1 onto frame t (DIS optical flow
    of the clean frames) and the pixels where the flow is consistent both ways (not occluded)."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    grey = [_luma(t).astype(np.uint8) for t in targets]
    h, w = grey[0].shape
    base = np.stack(np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32)), -1)
    out = []
    for prev, cur in zip(grey[:-1], grey[1:], strict=True):
        back = dis.calc(cur, prev, None)  # where each pixel of t was in t-1
        fwd = dis.calc(prev, cur, None)
        where = base + back
        round_trip = back + cv2.remap(fwd, where[..., 0], where[..., 1], cv2.INTER_LINEAR)
        valid = np.linalg.norm(round_trip, axis=-1) < 0.5 + 0.05 * np.linalg.norm(back, axis=-1)
        out.append((where, valid))
    return out


def warping_error(frames: list[np.ndarray], flow: list[tuple[np.ndarray, np.ndarray]],
                  fov: np.ndarray | None = None) -> float:
    """Warping error (Lai et al., ECCV 2018): RMS difference between each frame and the previous
    one warped onto it along the flow, over non-occluded pixels, relative to the mean level (so
    a dim input and its brightened output compare)."""
    errors, levels = [], []
    for (where, valid), prev, cur in zip(flow, frames[:-1], frames[1:], strict=True):
        warped = cv2.remap(prev, where[..., 0], where[..., 1], cv2.INTER_LINEAR).astype(np.float32)
        m = valid if fov is None else valid & fov
        errors.append(np.mean((cur.astype(np.float32) - warped)[m] ** 2))
        levels.append(cur[m].mean())
    return float(np.sqrt(np.mean(errors)) / np.mean(levels))


def denoise_row(enhancer: Enhancer, dims: list[np.ndarray], targets: list[np.ndarray], name: str,
                cfg: TemporalConfig | None = None) -> DenoiseRow:
    """Measure :class:`TemporalDenoiser` on a clip: per-frame outputs (grid smoothing on, as in
    ``video``) against the same outputs filtered."""
    fov = fov_mask(dims[0])
    smoother, denoiser = GridSmoother(cfg), TemporalDenoiser(cfg)
    per_frame = [enhancer.enhance_array(d, grid_filter=smoother, fov=fov) for d in dims]
    denoiser(dims[0], per_frame[0], fov)  # loads the kernel before the clock starts
    denoiser.reset()
    t0 = time.process_time()
    filtered = [denoiser(d, o, fov) for d, o in zip(dims, per_frame, strict=True)]
    ms = (time.process_time() - t0) * 1e3 / len(dims)
    flat = flat_regions(targets[0], fov)
    settled = slice(len(dims) // 4, None)  # the filter has filled its memory by then
    noise = [float(np.mean([noise_sigma(o, flat) for o in outs[settled]])) for outs in (per_frame, filtered)]
    flow = flows(targets)
    warp = [warping_error(x, flow, fov) for x in (dims, per_frame, filtered)]
    moved, still = [], []
    for prev, cur, a, b in zip(targets[:-1], targets[1:], per_frame[1:], filtered[1:], strict=True):
        change = cv2.GaussianBlur(np.abs(_luma(cur) - _luma(prev)), (0, 0), 2)
        diff = np.abs(a.astype(np.float32) - b).mean(-1)
        moving = fov & (change > 12)  # the clean frames changed by 12 levels: motion, not noise
        if moving.any():
            moved.append(diff[moving].mean())
        still.append(diff[fov & (change < 2)].mean())
    return DenoiseRow(name, *noise, *warp, float(np.mean(moved)) if moved else float("nan"),
                      float(np.mean(still)), ms)


def stage_row(enhancer: Enhancer, frame: np.ndarray, size: str, repeats: int = 5) -> StageRow:
    """Time the full-res stage (``Enhancer.render``) of one frame in CPU time, median of
    ``repeats``, with numba on one thread (CPU milliseconds, robust to other load)."""
    import numba

    if enhancer.guide_params is None or not enhancer.model.cfg.denoise:
        raise ValueError("the stage timing needs the fused kernel and a denoising model")
    grid, _ = enhancer.grid(frame)
    grey = enhancer.model.cfg.illumination == "grey"

    def cpu_ms(fn: Callable[[], object]) -> float:
        fn()
        times = []
        for _ in range(repeats):
            t0 = time.process_time()
            fn()
            times.append(time.process_time() - t0)
        return float(np.median(times)) * 1e3

    threads = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        with torch.no_grad():
            render = cpu_ms(lambda: enhancer.render(frame, grid))
            coeffs = cpu_ms(lambda: enhancer.denoise_coeffs(frame))
            # The same kernel on the affine channels alone: the model's render without denoising.
            plain = cpu_ms(lambda: render_uint8(frame, grid[:, :12], enhancer.guide_params, EPS, grey=grey))
            planar = ()
            if enhancer.planar and frame.shape[0] % 2 == 0 and frame.shape[1] % 2 == 0:
                planes = rgb_to_i420(frame)
                model, guide = enhancer.model, enhancer.guide_params
                net = enhancer.network  # as video runs it
                plan = plan_planes(model, guide, planes, network=net)
                planar = (cpu_ms(lambda: plan_planes(model, guide, planes, network=net)),
                          cpu_ms(lambda: plan_planes(model, guide, planes, denoise=False, network=net)),
                          cpu_ms(lambda: render_plan(plan)))
    finally:
        numba.set_num_threads(threads)
    return StageRow(size, render, coeffs, plain, *planar)


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
        result.speed, result.codec = run_speed(cfg, enhancers, weights, root, Path(tmp), note)
    if fused.model.cfg.denoise:
        result.stages.append(stage_row(fused, read_image(expand_sources(root / SINUS)[0]), "1080p sinus"))
        note(result.stages[-1])
    for name, (dims, targets), flow in (
        ("static (laparoscopy frame 200)", static_clip(root, cfg.flicker_frames), False),
        ("moving (laparoscopy 200+, flow-warped)", moving_clip(root, cfg.flicker_frames), True),
    ):
        for row in flicker_rows(fused, dims, targets, name, flow):
            result.flicker.append(row)
            note(row)
        result.denoise.append(denoise_row(fused, dims, targets, name))
        note(result.denoise[-1])
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
    if result.stages:
        lines += ["", "Full-resolution stage alone (fused kernel, grid given, 1 thread, CPU ms a frame):", "",
                  "| size | with learned denoising | of which: its coefficients | without denoising |",
                  "|---|---:|---:|---:|"]
        lines += [f"| {r.size} | {r.render_ms:.1f} | {r.coeffs_ms:.1f} | {r.no_denoise_ms:.1f} |"
                  for r in result.stages]
        lines += ["", "Video's planar path (Y'CbCr 4:2:0 planes, 1 thread, CPU ms a frame):", "",
                  "| size | low-res half, with denoising | without | full-res half (maps along x, kernel) "
                  "| whole |",
                  "|---|---:|---:|---:|---:|"]
        lines += [f"| {r.size} | {r.planar_plan_ms:.1f} | {r.planar_plan_no_denoise_ms:.1f} | "
                  f"{r.planar_kernel_ms:.1f} | {r.planar_plan_ms + r.planar_kernel_ms:.1f} |"
                  for r in result.stages]
    lines += ["", "| size | speed-up compute | speed-up end-to-end |", "|---|---:|---:|"]
    for size in dict.fromkeys(r.size for r in result.speed):
        ratios = []
        for mode in ("compute", "end-to-end"):
            f, p = by.get((size, "fused", mode)), by.get((size, "pytorch", mode))
            ratios.append(f"{p.ms_per_frame / f.ms_per_frame:.1f}x" if f and p else "-")
        lines.append(f"| {size} | {ratios[0]} | {ratios[1]} |")
    if result.codec:
        lines += ["", "Against the bare decode + encode of the same file, same run (plain PyAV loop: "
                  "threaded decode, rgb24, libx264 ultrafast), the two alternated in rounds (medians; "
                  "endolight's first round is the fused end-to-end row above):", "",
                  "| clip | frames | bare ms/frame | bare fps | endolight fps | endolight / bare | "
                  "per round | CPU stolen by the host |",
                  "|---|---:|---:|---:|---:|---:|---|---:|"]
        for c in result.codec:
            lines.append(f"| {c.size} | {c.frames} | {c.ms_per_frame:.1f} | {c.fps:.1f} | "
                         f"{c.endolight_fps:.1f} | {c.ratio:.2f} | {c.per_round} | {100 * c.stolen:.0f} % |")
    if result.flicker:
        lines += ["", "| clip | temporal smoothing | flicker (1 = as steady as the input) | PSNR dB |",
                  "|---|---|---:|---:|"]
        for r in result.flicker:
            lines.append(f"| {r.clip} | {'on' if r.temporal else 'off'} | {r.flicker:.3f} | {r.psnr:.2f} |")
    if result.denoise:
        lines += ["", "Temporal noise reduction (per-frame output -> filtered; warping error relative to the "
                  "level, Lai et al. 2018, DIS flow of the clean frames):", "",
                  "| clip | noise sigma (flat) | warping error: input | per-frame | filtered | "
                  "ghosting, moving / still (levels) | filter CPU ms/frame |",
                  "|---|---|---:|---:|---:|---|---:|"]
        for r in result.denoise:
            lines.append(f"| {r.clip} | {r.noise_frame:.2f} -> {r.noise_tnr:.2f} | {r.warp_input:.4f} | "
                         f"{r.warp_frame:.4f} | {r.warp_tnr:.4f} | {r.ghost_moving:.2f} / "
                         f"{r.ghost_still:.2f} | {r.ms:.1f} |")
    return "\n".join(lines)

