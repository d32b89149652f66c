"""What the enhancer writes outside the field of view: the border's sensor noise flattened to
its level without the noise, the processor's overlays (text, status bars) kept.

The border is not lifted (that would make it glow), and copying it as it is kept the dim
frame's sensor noise next to a denoised view. Where the border is noisy, a border pixel whose
luma is less than ``BORDER_NOISE`` levels above the border's median is taken for that noise and
written as the noise's median colour, no darker than ``BORDER_BLACK``; anything brighter (an
overlay) is copied. The median, not the mean: noise clipped at 0 lifts a black border's mean to
grey (4-16 levels on the noisiest held-out pairs). The floor: a scope's black is rarely 0 (the
training targets' borders: 0-1.5 levels on five scopes, 11-16 on two), and a dimmer light does
not darken a real sensor's black, but the synthetic darkening scales it towards 0; one level is
the floor that scores best on the training split (``scripts/border_black.py``). A clean border
(no noise to speak of: neighbouring pixels differ by under ``NOISE_MIN`` levels on average) is
copied as it is, since flattening would only erase its detail. docs/fidelity.md ("The border's
noise, flattened") has the measurements behind each choice.

A fill is four integers, what the kernels take (``endolight.kernels``): the colour, and the
luma (Rec. 601 in 1/256 levels for RGB, ``77 R + 150 G + 29 B``, exact in integers; Y′ for
planes) below which a border pixel takes it.
"""

from __future__ import annotations

import numpy as np

from endolight.kernels.common import LUMA8

BORDER_NOISE = 16.0  # levels above the border's median luma still taken for its noise
BORDER_BLACK = 1  # the fill's floor, per RGB channel (8-bit levels): scripts/border_black.py
NOISE_MIN = 0.5  # mean |difference| of neighbouring noise pixels (levels) below which a border is clean
SAMPLES = 16384  # the border is measured on a grid of about this many pixels of the frame
Y_LEVEL = 219 / 255  # one 8-bit level in Y′ (limited range)
Y_BLACK = 16 + round(BORDER_BLACK * Y_LEVEL)  # the floor in Y′


def _grid(border: np.ndarray) -> tuple[int, np.ndarray] | None:
    """The sampling grid's (even) step, ~``SAMPLES`` points over the frame, and the border on
    it (the columns that have a right-hand neighbour); a step of 2 where that grid misses the
    border (a thin one); None without a border."""
    for step in (2 * max(1, round((border.size / SAMPLES) ** 0.5 / 2)), 2):
        sampled = border[::step, : border.shape[1] - 1 : step]
        if sampled.any():
            return step, sampled
    return None


def _sample(plane: np.ndarray, step: int, sampled: np.ndarray, scale: int = 1, shift: int = 0) -> np.ndarray:
    """``plane``'s values on the border's grid points (``shift``: 1 for their right-hand
    neighbours; ``scale``: 2 for a chroma plane, whose grid step is half the luma's)."""
    s = step // scale
    return plane[::s, shift::s][: sampled.shape[0], : sampled.shape[1]][sampled]


def _median(values: np.ndarray) -> int:
    """The (lower) median of non-negative integer ``values``, from their histogram (a fifth of
    np.partition's time on a 1080p border's samples)."""
    cdf = np.cumsum(np.bincount(values))
    return int(np.searchsorted(cdf, (len(values) - 1) // 2 + 1))


def _mean(values: np.ndarray, picked: np.ndarray, count: int) -> float:
    """Mean of ``values`` where ``picked``: a dot product, 1/7 of ``values[picked].mean()``'s time."""
    return float(np.dot(values.astype(np.int32), picked)) / count


def _noisy(luma: np.ndarray, right: np.ndarray, below: int, level: float) -> np.ndarray | None:
    """The grid points taken for noise (both they and their neighbours below ``below``), or
    None when they are too few or their neighbours differ by under ``NOISE_MIN`` levels (of
    ``level`` luma units) on average: a clean border."""
    noise = (luma < below) & (right < below)
    count = int(noise.sum())
    if count < 16:
        return None
    diffs = np.abs(luma.astype(np.int32) - right.astype(np.int32))
    return noise if _mean(diffs, noise, count) >= NOISE_MIN * level else None


def border_fill(image: np.ndarray, border: np.ndarray) -> np.ndarray | None:
    """The fill of one frame's border: ``(4,)`` int32 ``R, G, B, luma threshold x 256``; the
    threshold is ``BORDER_NOISE`` levels above the border's median luma, the colour the median
    of the noise below it per channel, at least ``BORDER_BLACK`` (an overlay counts in neither).

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        border: ``(H, W)`` bool, True outside the field of view.

    Returns:
        the fill, or None when the frame has no border or a clean one (copied as it is).
    """
    grid = _grid(border)
    if grid is None:
        return None
    pixels, right = _sample(image, *grid), _sample(image, *grid, shift=1)
    weights = np.array(LUMA8, np.int32)
    luma, luma_right = pixels.astype(np.int32) @ weights, right.astype(np.int32) @ weights
    below = _median(luma) + round(256 * BORDER_NOISE)
    noise = _noisy(luma, luma_right, below, 256)
    if noise is None:
        return None
    colour = (max(_median(pixels[noise, c]), BORDER_BLACK) for c in range(3))
    return np.array([*colour, below], dtype=np.int32)


def border_fill_planes(y: np.ndarray, u: np.ndarray, v: np.ndarray, border: np.ndarray) -> np.ndarray | None:
    """The fill of one 4:2:0 frame's border, as :func:`border_fill`: ``(4,)`` int32 ``Y′, Cb,
    Cr, Y′ threshold`` (``BORDER_NOISE`` x 219 / 255 Y′ levels above the median).

    Args:
        y: ``(H, W)`` uint8 Y′ (limited range); ``u``, ``v``: ``(H/2, W/2)`` Cb, Cr.
        border: ``(H, W)`` bool, True outside the field of view.

    Returns:
        the fill, or None when the frame has no border or a clean one.
    """
    grid = _grid(border)
    if grid is None:
        return None
    luma, right = _sample(y, *grid), _sample(y, *grid, shift=1)
    below = _median(luma) + round(BORDER_NOISE * Y_LEVEL)
    noise = _noisy(luma, right, below, Y_LEVEL)
    if noise is None:
        return None
    chroma = (_sample(c, *grid, scale=2) for c in (u, v))
    colour = (max(_median(luma[noise]), Y_BLACK), *(_median(c[noise]) for c in chroma))
    return np.array([*colour, below], dtype=np.int32)


def border_noise(frame: np.ndarray, border: np.ndarray, fill: np.ndarray) -> np.ndarray:
    """``(H, W)`` bool: the pixels of ``border`` in the ``(H, W, 3)`` uint8 RGB ``frame`` that
    take ``fill``'s colour (luma below its threshold), as the fused kernel decides."""
    return border & (frame.astype(np.int32) @ np.array(LUMA8, np.int32) < fill[3])


def write_border(out: np.ndarray, frame: np.ndarray, border: np.ndarray,
                 fill: np.ndarray | None) -> np.ndarray:
    """Write ``frame``'s border into ``out`` (both ``(H, W, 3)`` uint8 RGB) in place, as the
    fused kernel does with ``fill`` (:func:`border_fill` of this frame and border; None: a clean
    border, copied): its noise flattened, overlays copied. Returns ``out``."""
    np.copyto(out, frame, where=border[..., None])
    if fill is not None:
        out[border_noise(frame, border, fill)] = fill[:3].astype(np.uint8)
    return out


def fill_border(out: np.ndarray, frame: np.ndarray, border: np.ndarray) -> np.ndarray:
    """:func:`write_border` with the frame's own fill, measured here."""
    return write_border(out, frame, border, border_fill(frame, border))
