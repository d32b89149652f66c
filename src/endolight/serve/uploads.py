"""Uploads: size limit while reading, type decided by content, images decoded in memory.

An upload is the raw request body or the file of a ``multipart/form-data`` form; either way
the name or declared content type of the file is never used. A video clip is written to a
fresh temporary folder under a fixed name (FFmpeg reads files), enhanced there by
:func:`endolight.video.enhance_video`, and the folder is deleted once the reply is sent.
"""

from __future__ import annotations

import copy
import io
import tempfile
import warnings
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from endolight.enhancer import Enhancer
from endolight.io.images import MAX_PIXELS, InputError, validate_frame

# Pillow format name (identified from the file's leading bytes) -> media type of the reply.
IMAGE_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "BMP": "image/bmp", "TIFF": "image/tiff",
               "WEBP": "image/webp"}


class UploadError(Exception):
    """An upload the server refuses; ``status`` is the HTTP code, the message one line."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# A form's boundaries and part headers, allowed on top of the file's own size limit.
FORM_OVERHEAD = 64 * 1024


def is_form(headers: Headers) -> bool:
    """Whether the request is a ``multipart/form-data`` form (browsers' forms, ``curl -F``,
    requests' ``files=``) rather than the raw file as its body."""
    return headers.get("content-type", "").lower().startswith("multipart/form-data")


def check_declared_size(headers: Headers, limit: int) -> None:
    """Refuse (413) before reading a body whose declared ``Content-Length`` is over the limit."""
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + (FORM_OVERHEAD if is_form(headers) else 0):
        raise UploadError(413, f"upload larger than the {limit / 1e6:.0f} MB limit")


async def read_limited(chunks: AsyncIterator[bytes], limit: int, slack: int = 0) -> bytes:
    """Collect a request body, refusing it (413) as soon as it grows past ``limit + slack`` bytes."""
    buf = bytearray()
    async for chunk in chunks:
        buf += chunk
        if len(buf) > limit + slack:
            raise UploadError(413, f"upload larger than the {limit / 1e6:.0f} MB limit")
    if not buf:
        raise UploadError(400, "empty upload: send the image file as the request body")
    return bytes(buf)


async def read_upload(headers: Headers, chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The uploaded file's bytes: the raw request body, or the single file of a form.

    Either way the file may be at most ``limit`` bytes (a form's body gets ``FORM_OVERHEAD``
    more) and its content is checked afterwards exactly alike.

    Raises:
        UploadError: 413 over the limit; 400 empty, a form without exactly one file, or a
            malformed form.
    """
    if not is_form(headers):
        return await read_limited(chunks, limit)
    body = await read_limited(chunks, limit, FORM_OVERHEAD)

    async def once() -> AsyncIterator[bytes]:
        yield body

    try:
        form = await MultiPartParser(headers, once(), max_files=1, max_fields=32).parse()
    except MultiPartException as exc:
        raise UploadError(400, f"malformed form upload: {exc.message}") from exc
    try:
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise UploadError(400, "form upload without a file: send the image as a file field "
                                   "(e.g. curl -F file=@image.png)")
        data = await files[0].read()
    finally:
        await form.close()
    if len(data) > limit:
        raise UploadError(413, f"upload larger than the {limit / 1e6:.0f} MB limit")
    if not data:
        raise UploadError(400, "empty upload: the form's file is empty")
    return data


def sniff_image(data: bytes) -> str:
    """The Pillow format name of an image's bytes, from its header alone (no pixel decoding).

    Raises:
        UploadError: 415 for anything but PNG, JPEG, BMP, TIFF or WebP; 413 for more pixels than
            :data:`endolight.io.images.MAX_PIXELS` (checked before decoding, against bombs).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                fmt, (w, h) = img.format, img.size
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning,
            OSError, ValueError):
        fmt, w, h = None, 0, 0
    if fmt not in IMAGE_TYPES:
        raise UploadError(415, "unsupported content: send a PNG, JPEG, BMP, TIFF or WebP image, "
                               "or an MP4/MOV, MKV/WebM or AVI clip")
    if w * h > MAX_PIXELS:
        raise UploadError(413, f"{w}x{h} exceeds the {MAX_PIXELS // 1_000_000} MP limit")
    return fmt


def decode_image(data: bytes) -> np.ndarray:
    """Decode an uploaded image to ``(H, W, 3)`` uint8 RGB (same rules as ``read_image``).

    Raises:
        UploadError: 415 / 413 from :func:`sniff_image`; 422 for an image the enhancer cannot
            use (corrupt, grayscale, alpha, 16-bit, too small), with ``read_image``'s message.
    """
    sniff_image(data)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise UploadError(422, "upload: not a readable image (corrupt or truncated)")
    try:
        return validate_frame(image, "upload", bgr=True)
    except InputError as exc:
        raise UploadError(422, str(exc)) from exc


def encode_png(image: np.ndarray) -> bytes:
    """``(H, W, 3)`` uint8 RGB -> PNG bytes (fast compression: the reply is for viewing)."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise UploadError(500, "could not encode the result as PNG")
    return buf.tobytes()


def encode_jpeg(image: np.ndarray, quality: int = 85) -> bytes:
    """``(H, W, 3)`` uint8 RGB -> JPEG bytes."""
    bgr = np.ascontiguousarray(image[..., ::-1])
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise UploadError(500, "could not encode the frame as JPEG")
    return buf.tobytes()


def sniff_video(data: bytes) -> str | None:
    """The FFmpeg demuxer for an MP4/MOV, Matroska/WebM or AVI clip, from its leading bytes.

    Written out rather than left to FFmpeg's probing on purpose: probing also accepts playlist
    and concat formats, which would open other files or URLs named inside an upload.
    """
    if data[4:8] == b"ftyp":
        return "mp4"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"
    if data[:4] == b"RIFF" and data[8:12] == b"AVI ":
        return "avi"
    return None


@dataclass
class Clip:
    """An enhanced clip: ``path`` lies in ``folder``; call ``folder.cleanup()`` when it is sent."""

    path: Path
    folder: tempfile.TemporaryDirectory
    frames: int
    seconds: float


def enhance_clip(data: bytes, demuxer: str, enhancer: Enhancer, strength: float, max_seconds: float) -> Clip:
    """Enhance an uploaded clip to H.264 MP4 (temporal smoothing on, audio copied).

    Raises:
        UploadError: 413 longer than ``max_seconds``; 422 a clip that cannot be decoded.
    """
    import av

    from endolight.video import VideoError, enhance_video

    folder = tempfile.TemporaryDirectory(prefix="endolight-upload-")
    try:
        src = Path(folder.name) / "clip"
        src.write_bytes(data)
        try:
            with av.open(str(src), format=demuxer) as container:
                if not container.streams.video:
                    raise UploadError(422, "upload: the clip has no video stream")
                stream = container.streams.video[0]
                if container.duration:
                    seconds = container.duration / av.time_base
                else:
                    seconds = (stream.frames or 0) / float(stream.average_rate or 25)
        except av.error.FFmpegError as exc:
            raise UploadError(422, "upload: not a readable video clip (corrupt or truncated)") from exc
        if seconds > max_seconds:
            raise UploadError(413, f"clip of {seconds:.0f} s is longer than the {max_seconds:.0f} s limit")
        out = Path(folder.name) / "enhanced.mp4"
        clip_enhancer = copy.copy(enhancer)  # shares the model; only the strength differs
        clip_enhancer.strength = strength
        try:
            report = enhance_video(src, out, clip_enhancer)
        except (InputError, VideoError) as exc:
            raise UploadError(422, str(exc).replace(str(src), "upload")) from exc
        return Clip(out, folder, report.written, report.seconds)
    except BaseException:
        folder.cleanup()
        raise
