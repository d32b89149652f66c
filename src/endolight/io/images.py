"""Image files in and out: validated reads, atomic writes that never replace an input."""

from __future__ import annotations

import glob
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from endolight.io.atomic import atomic_write

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MIN_SIDE = 8  # smaller frames carry no usable content; they are rejected, not upscaled
MAX_PIXELS = 64_000_000  # ~8K x 8K: beyond this a frame is almost surely not an endoscope frame


class InputError(ValueError):
    """A frame or path the enhancer cannot use; the message is one line meant for the user."""


def read_image(path: str | Path) -> np.ndarray:
    """Read an 8-bit RGB image as ``(H, W, 3)`` uint8.

    Raises:
        InputError: missing, empty, unreadable, non-image, too small or too large, grayscale,
            with alpha, or not 8-bit. The message says which and what to do.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: empty file")
    data = np.fromfile(p, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise InputError(f"{p}: not a readable image (corrupt, truncated or not an image)")
    return validate_frame(image, str(p), bgr=True)


def validate_frame(image: np.ndarray, name: str = "frame", bgr: bool = False) -> np.ndarray:
    """Check a decoded frame and return it as contiguous RGB ``(H, W, 3)`` uint8."""
    if image.dtype != np.uint8:
        raise InputError(f"{name}: {image.dtype} samples; only 8-bit images are supported "
                         "(convert, e.g. with OpenCV: (img / 257).astype('uint8'))")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        raise InputError(f"{name}: grayscale image; endoscope frames must be colour (RGB)")
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise InputError(f"{name}: unsupported shape {image.shape}; expected H x W x 3")
    if image.shape[2] == 4:
        raise InputError(f"{name}: image has an alpha channel; save it as RGB without alpha")
    h, w = image.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise InputError(f"{name}: {w}x{h} is too small (minimum side {MIN_SIDE} px)")
    if h * w > MAX_PIXELS:
        raise InputError(f"{name}: {w}x{h} exceeds the {MAX_PIXELS // 1_000_000} MP limit")
    rgb = image[..., ::-1] if bgr else image
    return np.ascontiguousarray(rgb)


def write_image(path: str | Path, image: np.ndarray, protect: Iterable[Path] = ()) -> Path:
    """Write ``(H, W, 3)`` uint8 RGB to ``path`` atomically (temp file + rename).

    Args:
        protect: input files that must never be replaced; writing onto one raises ``InputError``.
    """
    p = Path(path)
    target = p.resolve()
    if any(target == Path(q).resolve() for q in protect):
        raise InputError(f"{p}: refusing to overwrite an input file")
    suffix = p.suffix.lower() if p.suffix.lower() in IMAGE_SUFFIXES else ".png"
    ok, buf = cv2.imencode(suffix, np.ascontiguousarray(image[..., ::-1]))
    if not ok:
        raise InputError(f"{p}: could not encode as {suffix}")
    return atomic_write(p, lambda tmp: Path(tmp).write_bytes(buf.tobytes()))


def expand_sources(source: str | Path) -> list[Path]:
    """Resolve a file, folder (sorted, recursive) or glob pattern to a list of files.

    Raises:
        InputError: nothing matches.
    """
    s = str(source)
    p = Path(s)
    if p.is_dir():
        files = sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
    elif p.is_file():
        files = [p]
    else:
        files = sorted(Path(q) for q in glob.glob(s, recursive=True) if Path(q).is_file())
    if not files:
        what = "folder has no images" if p.is_dir() else "no such file, folder or matching images"
        raise InputError(f"{s}: {what}")
    return files
