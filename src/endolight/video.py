"""Enhance a video stream in real time: decode | enhance | encode, overlapped in threads.

A reader thread decodes (and shrinks the decoder's planes to the planner's small copy: it has
the time, the planner has not at 720p); a planner thread does the enhancer's low-resolution half
(network, slice, denoiser fit: :func:`endolight.planar.plan_planes`) one frame ahead of the calling
thread, which runs the full-resolution kernel and the temporal filter; a writer thread encodes.
NumPy, OpenCV, PyTorch and the kernels release the GIL, so the stages share the cores. Bounded
queues between them keep memory flat for a video of any length. Whatever happens part-way
(Ctrl-C, a truncated file, a stream that fails, a fault in a frame), every frame enhanced so far
is written and the output file is finished cleanly; the report says what stopped it. A live
stream's end (its sender closed it, or no data for the time-out) is a normal end, not a fault.
"""

from __future__ import annotations

import math
import queue
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from endolight.device import torch_threads
from endolight.enhancer import Enhancer
from endolight.fov import FovTracker
from endolight.io.images import InputError
from endolight.io.sinks import DEFAULT_CRF, Sink, WindowSink, open_sink
from endolight.io.sources import (
    STREAM_TIMEOUT,
    FolderSource,
    Frame,
    Source,
    SourceError,
    VideoSource,
    is_live,
    open_source,
)
from endolight.io.yuv import as_rgb, rgb_thumbnail, rgb_to_i420, thumbnail, ycc_to_rgb
from endolight.planar import PlanarPlan, render_plan, small_planes
from endolight.temporal import GridSmoother, TemporalConfig, TemporalDenoiser

_END = object()  # end of stream marker on a queue
LATENCY_WINDOW = 100_000  # frames (over an hour at 25 fps) kept for the latency percentiles
# Low latency on a live source: frames may wait this long (3 frames at 25-30 fps) before the
# oldest is dropped. A scheduling hiccup on a busy machine is absorbed; only an enhancer that
# stays slower than the source loses frames, and the added latency stays bounded.
LIVE_BACKLOG_S = 0.1


@dataclass(frozen=True)
class VideoOptions:
    """How a stream is processed.

    Attributes:
        side_by_side: write input | output side by side (for review).
        low_latency: short queues and no frame buffering in decoder or encoder; a live source
            drops its oldest waiting frame (counted) only when more than ``LIVE_BACKLOG_S``
            of frames wait, i.e. when the enhancer falls behind the source.
        temporal: grid smoothing and temporal noise reduction (``TemporalConfig.denoise``; 0:
            off); ``None`` enhances every frame on its own.
        queue_depth: frames buffered between the stages (ignored in low-latency mode).
        max_frames: stop after this many frames (``None``: the whole source).
        timeout: seconds without data that end a live stream (normally, once frames arrived).
        crf: x264's constant rate factor for a video file: 18 (default) is visually lossless;
            23, x264's own default, writes smaller files and costs the encoder less.
    """

    side_by_side: bool = False
    low_latency: bool = False
    temporal: TemporalConfig | None = field(default_factory=TemporalConfig)
    queue_depth: int = 4
    max_frames: int | None = None
    timeout: float = STREAM_TIMEOUT
    crf: int = DEFAULT_CRF


@dataclass
class VideoReport:
    """What a run did. ``latency_ms``: per frame, from decoded to written (the last
    ``LATENCY_WINDOW`` frames, so a stream of any length keeps flat memory). ``ended``: why a
    live stream ended normally; ``corrupt``: its packets the decoder rejected and skipped."""

    decoded: int = 0
    enhanced: int = 0
    written: int = 0
    dropped: int = 0
    cuts: int = 0
    seconds: float = 0.0
    latency_ms: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    outputs: list[Path] = field(default_factory=list)
    interrupted: bool = False
    error: str | None = None
    ended: str | None = None
    corrupt: int = 0

    @property
    def fps(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0

    def latency(self, q: float) -> float:
        """Latency percentile ``q`` in [0, 100], milliseconds."""
        return float(np.percentile(self.latency_ms, q)) if self.latency_ms else float("nan")


class VideoError(RuntimeError):
    """A run stopped by a fault after some frames; ``report`` says what was written."""

    def __init__(self, message: str, report: VideoReport) -> None:
        super().__init__(message)
        self.report = report


@contextmanager
def stream_threads(enhancer: Enhancer) -> Iterator[None]:
    """One PyTorch thread and one OpenCV thread while a fused-path stream runs (restored after).

    There PyTorch only runs the low-res net and the cut detector, ~2 ms a frame; with more
    threads its OpenMP barriers stall whenever the decoder or encoder holds a core, which
    measured 100x slower on a busy 2-core machine. OpenCV only resizes and filters small maps
    there: on two threads `endolight video` at 1080p spent ~1 CPU-ms a frame more (35-36 against
    34-35, 18.4-19.1 against 18.1-18.4 ms a frame). The full-res kernel keeps all cores.
    """
    if enhancer.guide_params is None:
        yield
        return
    cv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with torch_threads(1):
            yield
    finally:
        cv2.setNumThreads(cv_threads)


def _put(q: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Blocking put that gives up when ``stop`` is set (so no thread hangs on a full queue)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _read(source: Source, q: queue.Queue, stop: threading.Event, drop_late: bool,
          max_frames: int | None, report: VideoReport,
          shrink: Callable[[np.ndarray], tuple[np.ndarray, ...]] | None) -> None:
    """The reader thread: each decoded frame, with its planes' small copy
    (``planar.small_planes``) when the planar path takes them (``shrink`` given and the
    decoder gave planes; else ``None``), and the time it was decoded. The reader makes the copy
    while it would otherwise wait on a full queue, off the planner's thread."""
    try:
        for frame in source:
            if stop.is_set() or (max_frames is not None and report.decoded >= max_frames):
                break
            t0 = time.perf_counter()
            item = (frame, shrink(frame.planes) if shrink and frame.planes is not None else None, t0)
            if drop_late:
                # Live and low latency: the queue is full only when the enhancer has fallen
                # behind by LIVE_BACKLOG_S; the oldest waiting frame makes room (counted).
                try:
                    q.put_nowait(item)
                except queue.Full:
                    try:
                        q.get_nowait()
                        report.dropped += 1
                    except queue.Empty:
                        pass
                    q.put_nowait(item)
            elif not _put(q, item, stop):
                break
            report.decoded += 1
    except (SourceError, InputError) as exc:
        report.error = str(exc)
    except Exception as exc:  # noqa: BLE001 - any decoder fault must still end the stream cleanly
        report.error = f"{source.info.name}: decoding failed ({type(exc).__name__}: {exc})"
    finally:
        _put(q, _END, stop)


def _write(sinks: list[Sink], q: queue.Queue, report: VideoReport, failed: threading.Event,
           on_frame: Callable[[VideoReport], None] | None) -> None:
    while True:
        item = q.get()
        if item is _END:
            return
        frame, image, t0 = item
        try:
            for sink in sinks:
                sink.write(frame, image)
        except Exception as exc:  # noqa: BLE001 - a disk or encoder fault ends the run cleanly
            report.error = f"writing the output failed after {report.written} frames ({exc})"
            failed.set()
            return
        report.written += 1
        report.latency_ms.append((time.perf_counter() - t0) * 1e3)
        if on_frame:
            on_frame(report)


def _items(q: queue.Queue, failed: threading.Event) -> Iterator[tuple]:
    """The items of ``q`` in order, up to its end marker or until ``failed`` is set."""
    while not failed.is_set():
        try:
            item = q.get(timeout=0.1)
        except queue.Empty:
            continue
        if item is _END:
            return
        yield item


def redetects_at(count: int) -> bool:
    """Whether a scene's view is re-derived once its ``count``-th frame is added: frames 1, 2,
    4, 8, 16, 32 (a doubling schedule; detection costs more than enhancing)."""
    return count & (count - 1) == 0


class _SceneView:
    """The field of view in force for each frame of a stream, tracked per scene (a new scope
    may follow a cut). The first frames of a scene are accumulated (``FovTracker``), so a view
    edge that is dark in one frame shows in their average; the mask is re-derived on a doubling
    schedule (:func:`redetects_at`), not per frame. A scene's first frame is detected at once
    (there is nothing else to use); the later detections run in :meth:`refine`, once the frame
    that calls for one has been handed on, in the planner's idle time before the next frame,
    which is the first to use it: detection (5-15 ms at 1080p) then adds to no frame's latency
    but a scene's first. A cut is known once the grid smoother has seen the frame that made it,
    so the tracker restarts on the frame after it (the cut's first frame still has the previous
    scene's view)."""

    def __init__(self, smoother: GridSmoother | None) -> None:
        self.smoother, self.tracker, self.scene_cuts, self.fov = smoother, FovTracker(), 0, None
        self._due = False  # the frames added call for a detection that refine() has not run

    def __call__(self, frame: Frame, small: np.ndarray | None = None) -> np.ndarray | None:
        """The mask for ``frame``; ``small``: its planar small copy when made already (the
        thumbnail is then shrunk from it instead of from the full planes)."""
        cuts = self.smoother.cuts if self.smoother else 0
        if self.tracker.shape != frame.shape:  # the first frame: the smoother will count it as a cut
            self.tracker.reset()
            self.scene_cuts = cuts + (1 if self.smoother else 0)
        elif cuts > self.scene_cuts:
            self.tracker.reset()
            self.scene_cuts = cuts
        tracker = self.tracker
        if tracker.count < tracker.max_frames:
            size = tracker.work_size(*frame.shape)
            if small is not None and small.shape[2] >= size[0] and small.shape[1] >= size[1]:
                tracker.add(rgb_thumbnail(small, size), frame.shape)
            elif frame.planes is not None:  # a thumbnail straight from the planes
                tracker.add(thumbnail(frame.planes, size), frame.shape)
            else:
                tracker.add(frame.image)
            if tracker.count == 1:
                self.fov, self._due = tracker.mask, False
            else:
                self._due = redetects_at(tracker.count)
        return self.fov

    def refine(self) -> None:
        """Run the detection the last frame called for, for the frames after it; none after a
        cut (the next frame starts the new scene's view)."""
        if self._due and not (self.smoother and self.smoother.cuts > self.scene_cuts):
            self.fov = self.tracker.mask
        self._due = False


def _plan(q_in: queue.Queue, q_plan: queue.Queue, enhancer: Enhancer, temporal: TemporalConfig | None,
          stop: threading.Event, failed: threading.Event, report: VideoReport) -> None:
    """The planner thread: field of view, grid smoothing and the low-resolution half of each
    frame (the whole enhancement on the RGB path), in order, for :func:`_render`."""
    smoother = GridSmoother(temporal) if temporal else None
    scene = _SceneView(smoother) if enhancer.keep_border else None
    fov, planned = None, 0
    try:
        for frame, ycc, t0 in _items(q_in, failed):
            # The decoder's planes when it gave them (no RGB frame is ever made), else RGB: the
            # reader made the small copy exactly when the planar path runs.
            planar = ycc is not None
            small = ycc_to_rgb(*ycc) if planar else None
            if scene is not None:
                fov = scene(frame, small)
            if planar:
                work = enhancer.plan_planes(frame.planes, grid_filter=smoother, fov=fov, small=small)
            else:
                work = enhancer.enhance_array(frame.image, grid_filter=smoother, fov=fov)
            report.cuts = smoother.cuts if smoother else 0
            planned += 1
            # The small luma goes on to the temporal filter's motion map.
            if not _put(q_plan, (frame, work, fov, ycc[0] if planar else None, t0), stop):
                return
            if scene is not None:
                scene.refine()
    except KeyboardInterrupt:
        report.interrupted = True
    except Exception as exc:  # noqa: BLE001 - a fault in one frame still finishes the file
        report.error = f"enhancing failed after {planned} frames ({type(exc).__name__}: {exc})"
    finally:
        _put(q_plan, _END, stop)


def _render(q_plan: queue.Queue, q_out: queue.Queue, enhancer: Enhancer, temporal: TemporalConfig | None,
            side_by_side: bool, stop: threading.Event, failed: threading.Event, report: VideoReport) -> None:
    """The calling thread's loop: the full-resolution half of each planned frame and the
    temporal noise reduction, in order, for the writer."""
    denoiser = TemporalDenoiser(temporal) if temporal and temporal.denoise > 0 else None
    for frame, work, fov, shrunk, t0 in _items(q_plan, failed):
        if isinstance(work, PlanarPlan):
            out, source, spans = render_plan(work), frame.planes, work.spans
        else:
            out, source, spans = work, frame.image, None
        if denoiser:
            out = denoiser(source, out, fov if enhancer.keep_border else None, shrunk, spans)
        if side_by_side:
            out = np.concatenate([frame.image, as_rgb(out)], axis=1)
        report.enhanced += 1
        if not _put(q_out, (frame, out, t0), stop):
            return


def live_backlog(fps: float) -> int:
    """Frames a low-latency live stream may queue between two stages (at least 2)."""
    return max(2, math.ceil(LIVE_BACKLOG_S * float(fps)))


_WARM: weakref.WeakSet[Enhancer] = weakref.WeakSet()


def warm_up(enhancer: Enhancer) -> None:
    """Run one small frame through ``enhancer`` once, as a stream does (loads the compiled
    kernels, the grid smoother's included, and makes the network's ONNX Runtime session). Before
    a live source opens: loading holds the GIL for seconds, which would stall the reader."""
    if enhancer in _WARM:
        return
    tiny = np.full((64, 64, 3), 40, np.uint8)
    fov = np.ones(tiny.shape[:2], bool)
    pairs = [(tiny, enhancer.enhance_array(tiny, fov=fov, grid_filter=GridSmoother()))]
    if enhancer.planar:
        planes = rgb_to_i420(tiny)
        pairs.append((planes, enhancer.enhance_planes(planes, fov=fov, grid_filter=GridSmoother())))
    for frame, out in pairs:
        denoiser = TemporalDenoiser()
        for _ in range(2):
            denoiser(frame, out, fov)
    _WARM.add(enhancer)


def process(
    source: Source,
    sinks: list[Sink],
    enhancer: Enhancer,
    options: VideoOptions | None = None,
    on_frame: Callable[[VideoReport], None] | None = None,
) -> VideoReport:
    """Run ``source`` through ``enhancer`` into ``sinks`` (which this function closes).

    ``on_frame`` is called from the writer thread after each frame is written. Ctrl-C stops
    decoding, writes what was enhanced and finishes the outputs (``report.interrupted``).

    Returns:
        the report; ``report.error`` says what ended the stream early (a decoding, enhancing or
        writing fault); the frames before it are in the outputs.
    """
    opts = options or VideoOptions()
    depth = live_backlog(source.info.fps) if opts.low_latency else max(1, opts.queue_depth)
    q_in: queue.Queue = queue.Queue(depth)
    q_out: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    report, failed = VideoReport(), threading.Event()
    drop_late = opts.low_latency and source.info.live
    shrink = (lambda planes: small_planes(enhancer.model, planes)) if enhancer.planar else None
    reader = threading.Thread(target=_read, args=(source, q_in, stop, drop_late, opts.max_frames, report,
                                                  shrink), daemon=True)
    writer = threading.Thread(target=_write, args=(sinks, q_out, report, failed, on_frame), daemon=True)
    start = time.perf_counter()
    reader.start()
    writer.start()
    # One frame planned ahead: the planner's low-res work runs beside the kernel (both release
    # the GIL), the two halves of the enhancer on two cores.
    q_plan: queue.Queue = queue.Queue(1)
    planner = threading.Thread(target=_plan, daemon=True,
                               args=(q_in, q_plan, enhancer, opts.temporal, stop, failed, report))
    try:
        with stream_threads(enhancer):
            planner.start()
            _render(q_plan, q_out, enhancer, opts.temporal, opts.side_by_side, stop, failed, report)
    except KeyboardInterrupt:
        report.interrupted = True
    except Exception as exc:  # noqa: BLE001 - a fault in one frame still finishes the file
        report.error = f"enhancing failed after {report.enhanced} frames ({type(exc).__name__}: {exc})"
    finally:
        stop.set()  # the reader stops decoding; frames already enhanced are still written
        planner.join(timeout=opts.timeout + 5)
        while writer.is_alive():
            try:
                q_out.put(_END, timeout=0.1)
                break
            except queue.Full:
                continue
        writer.join()
        reader.join(timeout=opts.timeout + 5)  # a live stream's read times out within opts.timeout
        if not reader.is_alive():
            source.close()
        if isinstance(source, VideoSource):
            report.ended, report.corrupt = source.ended, source.corrupt
        report.seconds = time.perf_counter() - start
        for sink in sinks:
            try:
                path = sink.close()
            except Exception as exc:  # noqa: BLE001 - reported, the other sinks still close
                report.error = f"finishing the output failed ({exc})"
                continue
            if path is not None:
                report.outputs.append(path)
    return report


def enhance_video(
    source: str | int | Path,
    output: str | Path | None,
    enhancer: Enhancer,
    options: VideoOptions | None = None,
    show: bool = False,
    on_start: Callable[[Source], None] | None = None,
    on_frame: Callable[[VideoReport], None] | None = None,
) -> VideoReport:
    """Enhance ``source`` (file, folder or glob of frames, camera index, stream URL) into
    ``output`` (a video file for a video suffix, else a folder of frames) and/or a window.

    Raises:
        InputError: the source or output cannot be used (nothing is written), or the source
            holds no frame.
        VideoError: a fault part-way; the frames before it were written (``.report``).
    """
    opts = options or VideoOptions()
    if output is None and not show:
        raise InputError("nothing to do: give an output (-o) or --show")
    if is_live(source):
        warm_up(enhancer)
    src = open_source(source, low_latency=opts.low_latency, timeout=opts.timeout)
    info = src.info
    sinks: list[Sink] = []
    try:
        width = info.width * (2 if opts.side_by_side else 1)
        protect = src.files if isinstance(src, FolderSource) else [src.path] if src.path else []
        if output is not None:
            audio = info.name if info.audio else None
            sinks.append(open_sink(output, width, info.height, info.fps, info.time_base,
                                   audio_from=audio, low_latency=opts.low_latency, crf=opts.crf,
                                   protect=protect))
        if show:
            sinks.append(WindowSink(f"endolight: {info.name}"))
    except BaseException:
        src.close()
        for sink in sinks:
            sink.close()
        raise
    if on_start:
        on_start(src)
    report = process(src, sinks, enhancer, opts, on_frame)
    if report.decoded == 0 and not report.interrupted:
        why = report.error or report.ended
        reason = f" ({why})" if why else ""
        raise InputError(f"{info.name}: no video frames decoded{reason}")
    if report.error:
        where = f"; the {report.written} frames before it were written" if report.outputs else ""
        raise VideoError(f"{report.error}{where}", report)
    return report
