"""Video sinks: an H.264 file (PyAV), a folder of frames, or a live window.

A video file is written to a hidden temporary file beside the target and renamed onto it when
closed: the target is either absent or a complete, playable file (also after Ctrl-C or a
decoding fault part-way, which close the file up to the last frame), never a corrupt one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from endolight.io.images import InputError, write_image
from endolight.io.sources import VIDEO_SUFFIXES, Frame
from endolight.io.yuv import as_rgb, is_i420, rgb_to_i420

OUTPUT_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".ts")  # containers that hold H.264
BT601, LIMITED_RANGE = 6, 1  # FFmpeg's AVCOL_SPC_SMPTE170M and AVCOL_RANGE_MPEG
DEFAULT_CRF = 18  # x264's constant rate factor for video outputs: visually lossless


def _check_target(path: Path, protect: Iterable[Path]) -> None:
    target = path.resolve()
    if any(target == Path(q).resolve() for q in protect):
        raise InputError(f"{path}: refusing to overwrite an input file")


class VideoSink:
    """H.264 (libx264) in an mp4/mkv/mov/avi container, keeping the source's timestamps.

    Frame ``pts`` values are written in the source's time base, so frame rate, timestamps
    (also variable ones) and frame count carry over. Even sizes are encoded as yuv420p (plays
    everywhere); H.264 4:2:0 cannot hold odd sizes, so those keep their exact size as yuv444p.

    Args:
        path: output file; its suffix picks the container.
        width, height: frame size.
        fps: nominal frame rate (encoder rate control and container metadata).
        time_base: unit of the frames' ``pts``.
        audio_from: a media file whose first audio stream is copied (no re-encoding) up to the
            end of the video written.
        preset, crf: x264 speed preset and quality (18: visually lossless).
        low_latency: x264 ``tune=zerolatency`` (no frame buffering in the encoder).
        faststart: put the mp4/mov index first (web playback; costs a rewrite when closing).
        protect: input files that must never be replaced.
    """

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        fps: Fraction,
        time_base: Fraction,
        audio_from: str | Path | None = None,
        preset: str = "ultrafast",
        crf: int = DEFAULT_CRF,
        low_latency: bool = False,
        faststart: bool = False,
        protect: Iterable[Path] = (),
    ) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in OUTPUT_SUFFIXES:
            raise InputError(f"{self.path}: cannot write H.264 to this file type; use one of "
                             f"{', '.join(OUTPUT_SUFFIXES)}")
        _check_target(self.path, protect)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.stem}.", suffix=f".part{self.path.suffix}",
                                   dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        self.frames = 0
        self._end = 0.0  # seconds: end of the last frame written
        self._frame_dur = float(1 / fps)
        self._audio_in = self._audio_out = self._audio_packets = self._pending = None
        try:
            opts = {"movflags": "+faststart"} if faststart else {}
            self._out = av.open(str(self._tmp), "w", container_options=opts)  # format from the suffix
            options = {"preset": preset, "crf": str(crf)}
            if low_latency:
                options["tune"] = "zerolatency"
            st = self._out.add_stream("libx264", rate=fps, options=options)
            st.width, st.height = width, height
            st.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
            # Both conversions below use BT.601 limited range: say so, so players invert it.
            st.codec_context.colorspace, st.codec_context.color_range = BT601, LIMITED_RANGE
            st.time_base = time_base
            st.codec_context.time_base = time_base
            # Opened now, not on the first frame: x264's start-up (~20 ms at 720p) would add to
            # a live stream's first latency.
            st.codec_context.open()
            self._stream = st
            if audio_from is not None:
                self._open_audio(Path(audio_from))
        except BaseException:
            self._discard()
            raise

    def _open_audio(self, src: Path) -> None:
        inp = av.open(str(src))
        if not inp.streams.audio:
            inp.close()
            return
        self._audio_in = inp
        self._audio_out = self._out.add_stream_from_template(inp.streams.audio[0])
        self._audio_packets = inp.demux(inp.streams.audio[0])

    def _mux_audio(self, until: float) -> None:
        """Copy audio packets that start before ``until`` seconds (interleaved with the video)."""
        if self._audio_packets is None:
            return
        try:
            while True:
                pkt = self._pending or next(self._audio_packets, None)
                self._pending = None
                if pkt is None:
                    self._audio_packets = None
                    return
                if pkt.dts is None:  # the demuxer's final empty packet
                    continue
                if float(pkt.pts * pkt.time_base) >= until:
                    self._pending = pkt
                    return
                pkt.stream = self._audio_out
                self._out.mux(pkt)
        except av.error.FFmpegError:
            self._audio_packets = None  # a damaged audio track never costs the video

    def write(self, frame: Frame, image: np.ndarray) -> None:
        """Encode one ``(H, W, 3)`` uint8 RGB image or ``(3H/2, W)`` I420 frame at ``frame``'s
        timestamp."""
        if self._stream.pix_fmt == "yuv420p":
            # OpenCV's RGB -> I420 is ~10x cheaper than the encoder's swscale conversion (1 ms vs
            # 10 ms at 1080p, a sixth of the whole per-frame budget), same BT.601 matrix.
            yuv = image if is_i420(image) else rgb_to_i420(image)
            # The encoder reads the array itself (x264 copies the picture before encode
            # returns; nothing writes a frame's array after it is handed here): the writer's
            # thread 2.06-2.14 -> 1.22-1.25 CPU-ms a real 1080p frame, the same bytes written.
            vf = (av.VideoFrame.from_numpy_buffer(yuv, format="yuv420p") if yuv.flags.c_contiguous
                  else av.VideoFrame.from_ndarray(yuv, format="yuv420p"))
        else:
            vf = av.VideoFrame.from_ndarray(as_rgb(image), format="rgb24")
        vf.pts, vf.time_base = frame.pts, frame.time_base
        for pkt in self._stream.encode(vf):
            self._out.mux(pkt)
        self.frames += 1
        self._end = frame.time + self._frame_dur
        self._mux_audio(self._end)

    def close(self) -> Path | None:
        """Flush and finish the file; returns its path, or None (nothing kept) with no frames."""
        if self.frames == 0:
            self._discard()
            return None
        try:
            for pkt in self._stream.encode():
                self._out.mux(pkt)
            self._mux_audio(self._end)
            self._out.close()
        except BaseException:
            self._discard()
            raise
        finally:
            if self._audio_in is not None:
                self._audio_in.close()
        os.replace(self._tmp, self.path)
        return self.path

    def _discard(self) -> None:
        for closer in (getattr(self, "_out", None), self._audio_in):
            if closer is not None:
                try:
                    closer.close()
                except av.error.FFmpegError:
                    pass
        self._tmp.unlink(missing_ok=True)


class FolderSink:
    """One PNG per frame, ``frame_000000.png``... in a folder (each written atomically)."""

    def __init__(self, folder: str | Path, protect: Iterable[Path] = ()) -> None:
        self.path = Path(folder)
        self._protect = list(protect)
        self.frames = 0

    def write(self, frame: Frame, image: np.ndarray) -> None:
        write_image(self.path / f"frame_{frame.index:06d}.png", as_rgb(image), protect=self._protect)
        self.frames += 1

    def close(self) -> Path | None:
        return self.path if self.frames else None


class WindowSink:
    """A live OpenCV window; needs a display and an OpenCV build with GUI support."""

    def __init__(self, title: str = "endolight") -> None:
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise InputError("--show needs a display (DISPLAY is not set)")
        self.title = title
        self.frames = 0
        try:
            cv2.namedWindow(title, cv2.WINDOW_NORMAL)
        except cv2.error as exc:
            raise InputError("--show needs OpenCV with GUI support: pip install opencv-python "
                             "(the -headless build has no windows)") from exc

    def write(self, frame: Frame, image: np.ndarray) -> None:
        cv2.imshow(self.title, np.ascontiguousarray(as_rgb(image)[..., ::-1]))
        cv2.waitKey(1)
        self.frames += 1

    def close(self) -> Path | None:
        cv2.destroyWindow(self.title)
        return None


Sink = VideoSink | FolderSink | WindowSink


def open_sink(
    output: str | Path,
    width: int,
    height: int,
    fps: Fraction,
    time_base: Fraction,
    audio_from: str | Path | None = None,
    low_latency: bool = False,
    crf: int = DEFAULT_CRF,
    protect: Iterable[Path] = (),
) -> VideoSink | FolderSink:
    """A video file for a video suffix (``.mp4``, ``.mkv``...), else a folder of PNG frames
    (``low_latency`` and ``crf``: as :class:`VideoSink`'s)."""
    p = Path(output)
    if p.suffix.lower() in VIDEO_SUFFIXES:
        return VideoSink(p, width, height, fps, time_base, audio_from=audio_from,
                         low_latency=low_latency, crf=crf, protect=protect)
    if p.suffix:
        raise InputError(f"{p}: not a video file name ({', '.join(VIDEO_SUFFIXES)}) nor a folder")
    return FolderSink(p, protect=protect)

