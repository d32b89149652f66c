"""Video sources: a file, a folder or glob of frames, a camera or a stream URL -> RGB frames.

Everything is decoded by FFmpeg through PyAV (files, cameras via V4L2, rtsp/http/udp streams);
frame folders are read with :func:`endolight.io.images.read_image`. A source yields
:class:`Frame` objects one at a time (no frame list: a video of any length runs in flat
memory). Problems before the first frame raise :class:`InputError`; a fault in the middle (a
truncated or corrupt file, a stream that fails) raises :class:`SourceError` after every frame
decoded up to it has been yielded, so the caller can still write them. A live stream ends
normally when its sender closes it or when no data arrives for the time-out (UDP has no end
marker): :attr:`VideoSource.ended` then says which.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from endolight.io.images import (
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    MIN_SIDE,
    InputError,
    expand_sources,
    read_image,
    validate_frame,
)
from endolight.io.yuv import i420_to_rgb

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".ts", ".wmv")
URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt", "rtp")
DEFAULT_FPS = Fraction(25)
JPEG_RANGE = 2  # FFmpeg's AVCOL_RANGE_JPEG: full-range Y′CbCr
STREAM_TIMEOUT = 5.0  # seconds without data after which a live source ends (or, before any data, fails)


class SourceError(RuntimeError):
    """Decoding failed part-way; every frame before the fault has already been yielded."""


class Frame:
    """One decoded frame, ``pts`` counting ``time_base``.

    ``image`` is the ``(H, W, 3)`` uint8 RGB frame. ``planes`` is the decoder's own
    ``(3H/2, W)`` I420 buffer when it decoded limited-range 4:2:0 with even sides (the usual
    video), else ``None``. A decoded frame's RGB is converted (by FFmpeg, as always) on first use
    only, so a path that works on the planes never pays for it.
    """

    __slots__ = ("_decoded", "_image", "index", "planes", "pts", "time_base")

    def __init__(self, image: np.ndarray | None, index: int, pts: int, time_base: Fraction,
                 planes: np.ndarray | None = None, decoded: av.VideoFrame | None = None) -> None:
        if image is None and decoded is None and planes is None:
            raise ValueError("a frame needs an image, planes or a decoded frame")
        self._image, self._decoded = image, decoded
        self.index, self.pts, self.time_base, self.planes = index, pts, time_base, planes

    @property
    def image(self) -> np.ndarray:
        if self._image is None:
            if self._decoded is not None:
                self._image = validate_frame(self._decoded.to_ndarray(format="rgb24"), f"frame {self.index}")
            else:
                self._image = i420_to_rgb(self.planes)
        return self._image

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, W)``."""
        if self.planes is not None:
            return self.planes.shape[0] * 2 // 3, self.planes.shape[1]
        return self.image.shape[:2]

    @property
    def time(self) -> float:
        """Presentation time in seconds."""
        return float(self.pts * self.time_base)


@dataclass(frozen=True)
class SourceInfo:
    """What is known before decoding: size, rate, length (``None`` when unknown)."""

    name: str
    width: int
    height: int
    fps: Fraction
    time_base: Fraction
    frames: int | None
    live: bool  # a camera or stream: frames arrive in real time and may be dropped when late
    audio: bool  # a file with an audio stream the output can copy


def _is_url(spec: str) -> bool:
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://", spec)
    return bool(m) and m.group(1).lower() in URL_SCHEMES


def is_live(spec: str | int | Path) -> bool:
    """A camera index or a stream URL: frames arrive in real time."""
    s = str(spec)
    return isinstance(spec, int) or s.isdigit() or _is_url(s)


def _is_planar(vf: av.VideoFrame) -> bool:
    """The decoder's frame can be used as it is (:attr:`Frame.planes`): 4:2:0 limited range
    (``yuvj420p`` is full range), even sides."""
    even = vf.width % 2 == 0 and vf.height % 2 == 0
    return vf.format.name == "yuv420p" and even and vf.color_range != JPEG_RANGE


def _av_message(exc: Exception) -> str:
    """FFmpeg's reason without PyAV's errno and file name decorations."""
    text = getattr(exc, "strerror", None) or str(exc)
    return str(text).split(":")[0].strip().rstrip(".").lower() or type(exc).__name__


class VideoSource:
    """A video file, camera or stream decoded by PyAV.

    Args:
        spec: file path, camera index (``0`` for ``/dev/video0``) or stream URL.
        low_latency: decode frame by frame (no frame-threading delay), for live use.
        timeout: live sources: seconds without data that end the stream (a normal end once
            frames have arrived, an :class:`InputError` before the first data). It bounds each
            wait for data, never the length of the session.

    Attributes:
        ended: why a live stream ended normally (the sender closed it, or no data for
            ``timeout`` seconds); ``None`` while running and for files.
        corrupt: packets of a live stream the decoder rejected and skipped (lost UDP data).
    """

    def __init__(self, spec: str | int | Path, low_latency: bool = False,
                 timeout: float = STREAM_TIMEOUT) -> None:
        s = str(spec)
        self.path: Path | None = None
        self.timeout = timeout
        self.ended: str | None = None
        self.corrupt = 0
        options: dict[str, str] = {}
        open_kw: dict = {}
        if isinstance(spec, int) or s.isdigit():
            url, fmt, live = f"/dev/video{int(s)}", "v4l2", True
            if not Path(url).exists():
                raise InputError(f"camera {s}: not found ({url} does not exist)")
            # PyAV restarts the read time-out before every packet: "no data for N s".
            open_kw["timeout"] = (timeout, timeout)
        elif _is_url(s):
            url, fmt, live = s, None, True
            open_kw["timeout"] = (timeout, timeout)
            if s.lower().startswith("rtsp"):
                options["rtsp_transport"] = "tcp"  # UDP loses packets on busy networks
        else:
            self.path = Path(s)
            url, fmt, live = s, None, False
            if not self.path.is_file():
                raise InputError(f"{s}: no such file")
            if self.path.stat().st_size == 0:
                raise InputError(f"{s}: empty file")
        if live and low_latency:
            # FFmpeg otherwise reads 20 frames to measure the frame rate before handing out the
            # first, which then arrive in one stale burst (measured: 20 frames in 40 ms, 0.9 s
            # after opening); the codec's own rate (H.264 timing info) stands in below.
            options["fpsprobesize"] = "0"
        self.name = s
        try:
            self._container = av.open(url, format=fmt, options=options, **open_kw)
        except av.error.ExitError as exc:  # the time-out's interrupt: nothing arrived
            raise InputError(f"{s}: no data within {timeout:g} s (is the sender running?)") from exc
        except av.error.FFmpegError as exc:
            what = "corrupt, truncated or not a video" if self.path else "cannot open"
            raise InputError(f"{s}: {what} ({_av_message(exc)})") from exc
        if not self._container.streams.video:
            self._container.close()
            raise InputError(f"{s}: no video stream")
        self._stream = self._container.streams.video[0]
        ctx = self._stream.codec_context
        if ctx is None or not ctx.width or not ctx.height:
            self._container.close()
            raise InputError(f"{s}: unsupported video codec or unknown frame size")
        if min(ctx.width, ctx.height) < MIN_SIDE or ctx.width * ctx.height > MAX_PIXELS:
            self._container.close()
            raise InputError(f"{s}: {ctx.width}x{ctx.height} frames are outside the supported sizes "
                             f"(minimum side {MIN_SIDE} px, at most {MAX_PIXELS // 1_000_000} MP)")
        self._stream.thread_type = "SLICE" if low_latency else "AUTO"
        rate = self._stream.average_rate or ctx.framerate or self._stream.guessed_rate or DEFAULT_FPS
        self.info = SourceInfo(
            name=s, width=ctx.width, height=ctx.height, fps=Fraction(rate),
            time_base=Fraction(self._stream.time_base or 1 / Fraction(rate)),
            frames=self._stream.frames or None, live=live,
            audio=bool(self._container.streams.audio) and not live,
        )

    def __iter__(self) -> Iterator[Frame]:
        tb, step = self.info.time_base, 1 / (self.info.fps * self.info.time_base)
        index, last_pts = 0, None
        try:
            for vf in self._decode():
                planar = _is_planar(vf)
                if (vf.width, vf.height) != (self.info.width, self.info.height):
                    raise SourceError(f"{self.name}: the frame size changed from {self.info.width}x"
                                      f"{self.info.height} to {vf.width}x{vf.height} after {index} frames")
                planes = vf.to_ndarray() if planar else None
                where = f"{self.name} frame {index}"
                # The RGB frame of a planar one is made only if it is asked for (Frame.image).
                image = None if planar else validate_frame(vf.to_ndarray(format="rgb24"), where)
                # Missing or repeated timestamps (some streams): continue at the nominal rate.
                pts = vf.pts if vf.pts is not None else (0 if last_pts is None else last_pts + round(step))
                if last_pts is not None and pts <= last_pts:
                    pts = last_pts + max(1, round(step))
                last_pts = pts
                yield Frame(image, index, pts, tb, planes, vf if planar else None)
                index += 1
        except av.error.FFmpegError as exc:
            what = "stream failed" if self.info.live else "decoding failed (truncated or corrupt file?)"
            raise SourceError(f"{self.name}: {what} after {index} frames ({_av_message(exc)})") from exc
        if self.info.frames and not self.info.live and index < self.info.frames:
            raise SourceError(f"{self.name}: truncated: decoded {index} of {self.info.frames} frames")

    def _decode(self) -> Iterator[av.VideoFrame]:
        """Decoded frames. A live stream's end (sender closed, or silent for the time-out) is a
        normal end, recorded in :attr:`ended`; a packet its decoder rejects (data lost in
        transit) is skipped and counted, as a player would, instead of ending the session."""
        live, codec = self.info.live, self._stream.codec_context
        try:
            for packet in self._container.demux(self._stream):
                try:
                    yield from packet.decode()
                except av.error.InvalidDataError:
                    if not live:
                        raise
                    self.corrupt += 1
        except av.error.ExitError:
            if not live:
                raise
            self.ended = f"no data for {self.timeout:g} s"
            yield from codec.decode(None)  # frames still inside a frame-threaded decoder
            return
        if live:
            self.ended = "the sender closed the stream"

    def close(self) -> None:
        self._container.close()


class FolderSource:
    """A folder (sorted, recursive) or glob pattern of image files, played at ``fps``."""

    def __init__(self, spec: str | Path, fps: float = float(DEFAULT_FPS)) -> None:
        self.name = str(spec)
        self.files = expand_sources(spec)
        first = read_image(self.files[0])
        rate = Fraction(fps).limit_denominator(1001)
        self.info = SourceInfo(name=self.name, width=first.shape[1], height=first.shape[0], fps=rate,
                               time_base=1 / rate, frames=len(self.files), live=False, audio=False)

    def __iter__(self) -> Iterator[Frame]:
        for index, path in enumerate(self.files):
            try:
                image = read_image(path)
            except InputError as exc:
                raise SourceError(f"{exc} (after {index} frames)") from exc
            if image.shape[:2] != (self.info.height, self.info.width):
                raise SourceError(f"{path}: {image.shape[1]}x{image.shape[0]} differs from the first "
                                  f"frame's {self.info.width}x{self.info.height} (after {index} frames)")
            yield Frame(image, index, index, self.info.time_base)

    def close(self) -> None:
        pass


Source = VideoSource | FolderSource


def open_source(spec: str | int | Path, low_latency: bool = False, fps: float = float(DEFAULT_FPS),
                timeout: float = STREAM_TIMEOUT) -> Source:
    """Open any supported source: video file, camera index, stream URL, image folder or glob.

    Args:
        fps: frame rate given to image folders (videos keep their own).
        timeout: seconds without data that end a camera or stream (:class:`VideoSource`).

    Raises:
        InputError: missing, empty, unreadable or unsupported, with a one-line reason.
    """
    s = str(spec)
    if is_live(spec):
        return VideoSource(spec, low_latency, timeout)
    p = Path(s)
    pattern = not p.exists() and any(c in s for c in "*?[")
    if (p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES) or p.is_dir() or pattern:
        return FolderSource(s, fps)
    return VideoSource(p, low_latency)
