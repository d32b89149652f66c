"""Y′CbCr 4:2:0 frames as decoders and encoders hold them: one ``(3H/2, W)`` uint8 I420 buffer
(Y′ rows, then Cb, then Cr; PyAV's ``yuv420p`` arrays and OpenCV's ``COLOR_*_I420`` layout),
BT.601 limited range, the convention of the whole video path."""

from __future__ import annotations

import cv2
import numpy as np
from numba import njit

# BT.601 R'G'B' from normalised Y'CbCr (Yn = (Y' - 16) / 219, Cn = (C - 128) / 224; Kr = 0.299,
# Kb = 0.114): R = Yn + CR_R Crn, G = Yn - CB_G Cbn - CR_G Crn, B = Yn + CB_B Cbn.
KR, KB = 0.299, 0.114
CR_R, CB_G, CR_G, CB_B = 1.402, 0.344136, 0.714136, 1.772
# And back: rows Yn, Cbn, Crn of R'G'B' (Cb = (B - Y) / CB_B, Cr = (R - Y) / CR_R).
TO_YCC = np.array([[KR, 1 - KR - KB, KB],
                   [-KR / CB_B, -(1 - KR - KB) / CB_B, (1 - KB) / CB_B],
                   [(1 - KR) / CR_R, -(1 - KR - KB) / CR_R, -KB / CR_R]], dtype=np.float32)


def is_i420(image: np.ndarray) -> bool:
    """A 2-D uint8 array is an I420 frame here (RGB frames are ``(H, W, 3)``)."""
    return image.ndim == 2 and image.dtype == np.uint8


def i420_planes(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views ``(Y′ (H, W), Cb (H/2, W/2), Cr (H/2, W/2))`` of a contiguous ``(3H/2, W)`` buffer."""
    h, w = buf.shape[0] * 2 // 3, buf.shape[1]
    if buf.ndim != 2 or buf.dtype != np.uint8 or h % 2 or w % 2 or buf.shape[0] != h * 3 // 2:
        raise ValueError(f"need a (3H/2, W) uint8 I420 buffer with even H and W, got {buf.shape} {buf.dtype}")
    if not buf.flags.c_contiguous:
        raise ValueError("the I420 buffer must be C-contiguous")
    flat = buf.reshape(-1)
    n, q = h * w, h * w // 4
    return flat[:n].reshape(h, w), flat[n:n + q].reshape(h // 2, w // 2), flat[n + q:].reshape(h // 2, w // 2)


def i420_to_rgb(buf: np.ndarray) -> np.ndarray:
    """``(3H/2, W)`` I420 -> ``(H, W, 3)`` uint8 RGB."""
    return cv2.cvtColor(buf, cv2.COLOR_YUV2RGB_I420)


def rgb_to_i420(image: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB with even sides -> ``(3H/2, W)`` I420."""
    return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2YUV_I420)


def as_rgb(image: np.ndarray) -> np.ndarray:
    """An RGB ``(H, W, 3)`` frame as it is; an I420 frame converted."""
    return i420_to_rgb(image) if is_i420(image) else image


def ycc_to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    """Y′, Cb, Cr planes of one size, in 8-bit levels (any numeric dtype) -> ``(3, h, w)`` float32
    RGB in [0, 1] (BT.601 limited range, as ``COLOR_YUV2RGB_I420``)."""
    out = np.empty((3, *y.shape), np.float32)
    _ycc_to_rgb(y, cb, cr, out)
    return out


@njit(cache=True, nogil=True, error_model="numpy")
def _ycc_to_rgb(y, cb, cr, out):  # pragma: no cover - compiled
    """One pass (NumPy took a dozen full-size temporaries: ~1 ms of each video frame)."""
    zero, one = np.float32(0.0), np.float32(1.0)
    ys, cs = np.float32(1.0 / 219.0), np.float32(1.0 / 224.0)
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            yn = (np.float32(y[i, j]) - np.float32(16.0)) * ys
            cbn = (np.float32(cb[i, j]) - np.float32(128.0)) * cs
            crn = (np.float32(cr[i, j]) - np.float32(128.0)) * cs
            out[0, i, j] = min(max(yn + np.float32(CR_R) * crn, zero), one)
            out[1, i, j] = min(max(yn - np.float32(CB_G) * cbn - np.float32(CR_G) * crn, zero), one)
            out[2, i, j] = min(max(yn + np.float32(CB_B) * cbn, zero), one)


def shrunk_rgb(buf: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An I420 frame shrunk to ``size = (w, h)`` (area averages of each full plane) as
    ``(3, h, w)`` float32 RGB in [0, 1], without the full-resolution RGB frame."""
    return ycc_to_rgb(*shrunk_planes(buf, size))


def shrunk_planes(buf: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each plane of an I420 frame area-averaged to ``size = (w, h)`` (:func:`shrunk_plane`):
    ``(h, w)`` float32 levels of Y′, Cb, Cr."""
    y, u, v = i420_planes(buf)
    return shrunk_plane(y, size), shrunk_plane(u, size), shrunk_plane(v, size)


def shrunk_plane(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A ``(H, W)`` uint8 plane area-averaged to ``size = (w, h)``: ``(h, w)`` float32 levels,
    not rounded (as ``cv2.resize(..., INTER_AREA)`` of the plane as float32).

    Blocks of ``k x k`` pixels, ``k`` = 2, 4, 8 or 16 (``H = k h``, ``W = k w``), are summed
    exactly by repeated 2x2 sums in numba: OpenCV's uint8 area resize is fast only for ``k = 2``
    and rounds (a 1080p luma shrunk by 4: 3 ms there, 0.4 ms here). Other ratios go to OpenCV.
    """
    w, h = size
    k = plane.shape[1] // w if w > 0 else 0
    if plane.dtype != np.uint8 or k not in (2, 4, 8, 16) or plane.shape != (h * k, w * k):
        return cv2.resize(plane.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    sums = plane
    while sums.shape[1] > w:  # 16 x 16 x 255 still fits in uint16
        halved = np.empty((sums.shape[0] // 2, sums.shape[1] // 2), np.uint16)
        _pair_sums(sums, halved)
        sums = halved
    return np.multiply(sums, np.float32(1.0 / (k * k)), dtype=np.float32)  # exact: a power of 2


# On the calling thread: a few hundred microseconds of work, where waking numba's other thread
# while the decoder and encoder hold the cores costs more.
@njit(cache=True, nogil=True, error_model="numpy")
def _pair_sums(src, out):  # pragma: no cover - compiled
    """``out[j, i]`` = the sum of ``src``'s 2x2 block ``(j, i)``, uint16."""
    for j in range(out.shape[0]):
        a, b, o = src[2 * j], src[2 * j + 1], out[j]
        for i in range(out.shape[1]):
            o[i] = ((np.uint16(a[2 * i]) + np.uint16(a[2 * i + 1]))
                    + (np.uint16(b[2 * i]) + np.uint16(b[2 * i + 1])))


def thumbnail(buf: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """:func:`shrunk_rgb` as ``(h, w, 3)`` uint8 RGB."""
    return rgb_thumbnail(shrunk_rgb(buf, size), size)


def rgb_thumbnail(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(3, h, w)`` float RGB in [0, 1] area-averaged to ``size = (w, h)`` as ``(h, w, 3)`` uint8
    (e.g. from the planar path's small copy: at 1080p ~1.0 ms against ~2.6 from the planes)."""
    hwc = np.ascontiguousarray(rgb.transpose(1, 2, 0), dtype=np.float32)
    if hwc.shape[1::-1] != size:
        hwc = cv2.resize(hwc, size, interpolation=cv2.INTER_AREA)
    return (hwc * 255 + 0.5).astype(np.uint8)
