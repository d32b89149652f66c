"""A video source played through the enhancer for the browser: side-by-side JPEG frames + stats.

One background thread decodes and enhances while at least one viewer is connected; every viewer
gets the latest ``before | after`` frame (the page draws the split). The thread stops when the
last viewer leaves, so an idle server does not burn the CPU.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from endolight.enhancer import Enhancer
from endolight.io.sources import open_source
from endolight.serve.uploads import encode_jpeg
from endolight.temporal import GridSmoother

FrameSource = Callable[[], Iterator[np.ndarray]]


def source_frames(spec: str, loop: bool = True) -> Iterator[np.ndarray]:
    """``(H, W, 3)`` uint8 RGB frames of anything :func:`endolight.io.sources.open_source` opens.

    A file (or frame folder) is paced at its own frame rate (frames are skipped when enhancing
    is slower, so the view stays live) and restarts at its end when ``loop``; cameras and streams
    are live already.

    Raises:
        InputError: the source cannot be opened.
    """
    while True:
        source = open_source(spec, low_latency=True)
        try:
            start, live = time.perf_counter(), source.info.live
            for frame in source:
                if not live:
                    delay = start + frame.time - time.perf_counter()
                    if delay < -0.1:  # more than 100 ms behind: drop this frame
                        continue
                    time.sleep(max(delay, 0.0))
                yield frame.image
        finally:
            source.close()
        if live or not loop:
            return


def shrink(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Resize so the longer side is at most ``max_side`` (area filter); smaller frames pass."""
    h, w = image.shape[:2]
    if not max_side or max(h, w) <= max_side:
        return image
    scale = max_side / max(h, w)
    return cv2.resize(image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)


@dataclass
class LiveStats:
    """What the page shows: enhanced frames per second and per-frame latency (decode excluded)."""

    frames: int = 0
    fps: float = 0.0
    latency_ms: float = 0.0
    width: int = 0
    height: int = 0
    running: bool = False
    error: str | None = None


class LiveStream:
    """Plays ``source`` through ``enhancer`` while someone watches (:meth:`viewer`); each viewer
    polls :meth:`next_frame` for the latest ``before | after`` JPEG.

    Args:
        source: a callable that opens the source and yields RGB uint8 frames.
        enhancer: the one :class:`endolight.Enhancer` of the server.
        max_side: frames are shrunk to this longer side before enhancing (keeps it live on CPU).
        quality: JPEG quality of the streamed frames.
        strength: initial strength; the page changes it with :meth:`set_strength`.
    """

    def __init__(self, source: FrameSource, enhancer: Enhancer, max_side: int | None = 720,
                 quality: int = 85, strength: float = 1.0) -> None:
        self._source, self._enhancer = source, enhancer
        self._max_side, self._quality = max_side, quality
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._viewers, self._seq, self._jpeg = 0, 0, b""
        self._closed = False
        self.strength = strength
        self._stats = LiveStats()
        self._times: deque[float] = deque(maxlen=20)  # publish times of the last frames, for fps

    def set_strength(self, strength: float) -> None:
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        self.strength = strength

    def stats(self) -> dict:
        with self._cond:
            return asdict(self._stats)

    def close(self) -> None:
        """Stop the worker and release every waiting viewer (server shutdown)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @contextmanager
    def viewer(self) -> Iterator[None]:
        """Hold the stream open (starting the worker if needed) while a viewer is connected."""
        with self._cond:
            self._viewers += 1
            if self._thread is None and not self._closed:
                self._stats = LiveStats(running=True)
                self._times.clear()
                self._thread = threading.Thread(target=self._run, name="endolight-live", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._cond:
                self._viewers -= 1

    @property
    def seq(self) -> int:
        """Number of the latest frame (0 before the first)."""
        return self._seq

    def next_frame(self, after: int, timeout: float = 0.5) -> tuple[int, bytes] | None:
        """The first ``before | after`` JPEG newer than frame ``after``, as ``(seq, jpeg)``.

        Waits at most ``timeout`` seconds (so a caller can notice a closed connection); returns
        None on timeout.

        Raises:
            EOFError: the source ended or failed (see :meth:`stats`), or the stream was closed.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._seq != after or self._closed or self._thread is None, timeout)
            if self._seq != after:
                return self._seq, self._jpeg
            if self._closed or self._thread is None:
                raise EOFError("live source ended")
            return None

    def _run(self) -> None:
        frames = self._source()
        smoother = GridSmoother()  # the same temporal smoothing as `endolight video`
        try:
            for frame in frames:
                with self._cond:
                    if self._viewers == 0 or self._closed:
                        break
                t0 = time.perf_counter()
                before = shrink(frame, self._max_side)
                after = self._enhancer.enhance_array(before, self.strength, grid_filter=smoother)
                jpeg = encode_jpeg(np.hstack([before, after]), self._quality)
                self._publish(jpeg, before.shape, time.perf_counter() - t0)
        except Exception as exc:  # noqa: BLE001 - any source failure ends the stream, reported to the page
            with self._cond:
                self._stats.error = f"{type(exc).__name__}: {exc}".splitlines()[0]
        finally:
            if hasattr(frames, "close"):
                frames.close()
            with self._cond:
                self._thread = None
                self._stats.running = False
                self._cond.notify_all()

    def _publish(self, jpeg: bytes, shape: tuple[int, ...], seconds: float) -> None:
        with self._cond:
            s = self._stats
            self._times.append(time.perf_counter())
            span = self._times[-1] - self._times[0]
            s.fps = (len(self._times) - 1) / span if span > 0 else 0.0
            s.latency_ms = 1000 * seconds if s.frames == 0 else 0.8 * s.latency_ms + 200 * seconds
            s.frames += 1
            s.height, s.width = shape[:2]
            self._seq += 1
            self._jpeg = jpeg
            self._cond.notify_all()
