"""Numeric pieces shared by the fused CPU kernels: interpolation taps, a vectorisable sigmoid,
numba's settings. Plain numeric code (numpy and numba only)."""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
from numba import njit

ROW_CHUNK = 16  # rows per parallel work item
LUMA = (0.299, 0.587, 0.114)  # Rec. 601: the denoiser's guide (endolight.model.denoise.LUMA)
LUMA8 = (77, 150, 29)  # the same in 1/256, summing to 256: the border's noise test (endolight.border)


@lru_cache(maxsize=32)
def axis_taps(n: int, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower grid index and weight of each of ``n`` pixels along one axis of ``cells`` cells
    (cached: a stream asks for the same few each frame; do not modify them).

    HDRNet half-pixel convention with border clamping, as ``grid_sample(align_corners=False,
    padding_mode='border')``: pixel ``i`` reads coordinate ``(i + 0.5) / n * cells - 0.5``.
    """
    pos = np.clip((np.arange(n, dtype=np.float64) + 0.5) / n * cells - 0.5, 0.0, cells - 1)
    lo = np.minimum(np.floor(pos).astype(np.int64), max(cells - 2, 0))
    return lo, (pos - lo).astype(np.float32)


def along_x(maps: np.ndarray, width: int) -> np.ndarray:
    """``(C, h, w)`` float32 maps linearly interpolated along x to ``(C, h, width)``, rows left as
    they are: the x half of a bilinear upsampling (half-pixel convention, edges clamped, as
    :func:`axis_taps`), done once per frame by OpenCV so the kernels' per-row work is the y half
    with unit-stride loads."""
    c, h, w = maps.shape
    flat = np.ascontiguousarray(maps, dtype=np.float32).reshape(c * h, w)
    return cv2.resize(flat, (width, c * h), interpolation=cv2.INTER_LINEAR).reshape(c, h, width)


# error_model="numpy" drops numba's per-division zero checks, whose branches stop LLVM from
# vectorising the kernels' unit-stride row loops. fastmath "contract" only lets LLVM fuse a
# multiply and an add into one FMA instruction (one rounding instead of two; no reordering, no
# assumptions about NaN or infinity): the planar kernel took 15-20 % less CPU at 1080p (one
# thread, 40 real frames: 22.5-22.9 -> 17.8-20.0 ms), every kernel test unchanged.
JIT_OPTIONS = {"nogil": True, "fastmath": {"contract"}, "cache": True, "error_model": "numpy"}


@njit(**JIT_OPTIONS)
def sigmoid(v):  # pragma: no cover - compiled
    """``1 / (1 + exp(-v))`` for float32 ``v`` in a form LLVM vectorises.

    libm's ``expf`` is an opaque call that keeps the loop scalar (10x slower here). ``v`` is
    clamped to +-16 (the sigmoid is then within 1.2e-7 of 0 or 1) and ``exp(-v)`` is a degree-7
    Taylor polynomial at ``t = -v / 32`` (``|t| <= 0.5``) squared five times: relative error
    below 1e-5 (measured 8.6e-6). The sigmoid's error is ``s (1 - s)`` times that, and
    ``R = I / S`` moves by at most a quarter of it: far below 1/255.
    """
    lim = np.float32(16.0)
    t = (lim if -v > lim else (-lim if -v < -lim else -v)) * np.float32(1.0 / 32.0)
    e = np.float32(1.0 / 5040.0) + t * np.float32(1.0 / 40320.0)
    e = np.float32(1.0 / 720.0) + t * e
    e = np.float32(1.0 / 120.0) + t * e
    e = np.float32(1.0 / 24.0) + t * e
    e = np.float32(1.0 / 6.0) + t * e
    e = np.float32(1.0 / 2.0) + t * e
    e = np.float32(1.0) + t * e
    e = np.float32(1.0) + t * e
    e = e * e
    e = e * e
    e = e * e
    e = e * e
    e = e * e
    return np.float32(1.0) / (np.float32(1.0) + e)


@njit(**JIT_OPTIONS)
def chroma_curve(s, gains, ua, ub, out):  # pragma: no cover - compiled
    """``out[i] = sigma(s[i])`` over ``[ua, ub)``: the chroma curve, piecewise linear over the
    ``(K,)`` float32 ``gains`` at ``S = k / (K - 1)``, ``s`` clamped to [0, 1]
    (``endolight.model.slicing.chroma_gain``).

    Summed segment by segment, ``gains[0] + sum_k (gains[k + 1] - gains[k]) clamp(p - k, 0, 1)``
    with ``p = (K - 1) S``: loops LLVM vectorises. A lookup of each pixel's segment stayed
    scalar (the planar kernel +2.0 CPU-ms a 1080p frame, one thread, against +0.6 this way)."""
    one, zero = np.float32(1.0), np.float32(0.0)
    top = gains.shape[0] - 1
    pos = np.empty(s.shape[0], dtype=np.float32)
    for i in range(ua, ub):
        pos[i] = min(max(s[i], zero), one) * np.float32(top)
        out[i] = gains[0]
    for k in range(top):
        step, fk = gains[k + 1] - gains[k], np.float32(k)
        for i in range(ua, ub):
            out[i] += step * min(max(pos[i] - fk, zero), one)


@njit(**JIT_OPTIONS)
def guide_row(img, ccm, ccm_bias, shifts, slopes, mix, mix_bias, ua, ub, g):  # pragma: no cover
    """The guide map (``GuideMap``) of one row: ``g[x] = sum_c mix_c * curve_c(ccm @ rgb + b) +
    m0`` for ``x`` in ``[ua, ub)``, from planar float ``img`` (3, W); ``g`` (W,) is written.
    Not clamped (the caller's depth clamp does it). Knots outside the pixel loop, so that loop
    stays unit-stride and vectorised."""
    w = img.shape[1]
    zero = np.float32(0.0)
    for x in range(ua, ub):
        g[x] = mix_bias[0]
    v = np.empty(w, dtype=np.float32)
    curve = np.empty(w, dtype=np.float32)
    for c in range(3):
        m0, m1, m2, b = ccm[c, 0], ccm[c, 1], ccm[c, 2], ccm_bias[c]
        for x in range(ua, ub):
            v[x] = m0 * img[0, x] + m1 * img[1, x] + m2 * img[2, x] + b
            curve[x] = zero
        for k in range(shifts.shape[1]):
            sh, sl = shifts[c, k], slopes[c, k]
            for x in range(ua, ub):
                curve[x] += sl * max(v[x] - sh, zero)
        mc = mix[c]
        for x in range(ua, ub):
            g[x] += mc * curve[x]


@njit(**JIT_OPTIONS)
def row_span(keep, y, w):  # pragma: no cover - compiled
    """Columns ``[a, b)`` of row ``y`` of the ``(H, W)`` bool mask ``keep`` from its first to its
    last pixel not kept (``a >= b``: the whole row is kept). The kernels compute only there and
    copy the input on either side (the black border around a round view)."""
    a, b = 0, w
    while a < w and keep[y, a]:
        a += 1
    while b > a and keep[y, b - 1]:
        b -= 1
    return a, b


@njit(**JIT_OPTIONS)
def border_span(src, dst, a, b, fill):  # pragma: no cover - compiled
    """Pixels ``[a, b)`` of a flat ``(3 W,)`` uint8 RGB row outside the view
    (:mod:`endolight.border`): the fill's colour where a pixel's luma x 256 is below ``fill[3]``
    (the border's noise), else the input (an overlay). Flat unsigned indices and selects, no
    branch: the loop vectorises (0.74 ms per 1.2 Mpx, one thread, against 66 for a call per
    pixel on row views)."""
    f0, f1, f2, below = np.uint8(fill[0]), np.uint8(fill[1]), np.uint8(fill[2]), fill[3]
    u1, u2, u3 = np.uint64(1), np.uint64(2), np.uint64(3)
    for i in range(np.uint64(a), np.uint64(b)):
        k = i * u3
        s0, s1, s2 = src[k], src[k + u1], src[k + u2]
        noise = LUMA8[0] * np.int32(s0) + LUMA8[1] * np.int32(s1) + LUMA8[2] * np.int32(s2) < below
        dst[k] = f0 if noise else s0
        dst[k + u1] = f1 if noise else s1
        dst[k + u2] = f2 if noise else s2


@njit(**JIT_OPTIONS)
def binomial3_row(above, here, below, xa, xb, out):  # pragma: no cover - compiled
    """``out[x]`` for ``x`` in ``[xa, xb)``: the 3x3 binomial blur (``[1, 2, 1]^T [1, 2, 1] / 16``)
    at row ``here`` given the rows above and below it (any numeric dtype, 1-D), columns beyond
    the row's ends replicated. Reads columns ``xa - 1`` to ``xb`` of the three rows."""
    w = here.shape[0]
    quarter, halfw = np.float32(0.25), np.float32(0.5)
    lo, hi = max(xa - 1, 0), min(xb + 1, w)
    col = np.empty(w + 2, dtype=np.float32)  # the column blur, one replicated column each side
    # Shifted views, not ``col[x + 1]``: a uint64 index plus an int literal is an int64 in numba,
    # whose negative-index check kept both loops scalar (measured 5x slower).
    mid, right = col[1:], col[2:]
    for x in range(np.uint64(lo), np.uint64(hi)):
        mid[x] = (quarter * np.float32(above[x]) + halfw * np.float32(here[x])
                  + quarter * np.float32(below[x]))
    col[0], col[w + 1] = col[1], col[w]
    for x in range(np.uint64(xa), np.uint64(xb)):
        out[x] = quarter * col[x] + halfw * mid[x] + quarter * right[x]


@njit(**JIT_OPTIONS)
def blurred_guide_row(luma, y, xa, xb, blur, out):  # pragma: no cover - compiled
    """The guided filter's blurred guide on columns ``[xa, xb)`` of row ``y`` of an ``(H, W)``
    luma plane (in [0, 1], or Y' levels): ``Y + blur * (B - Y)``, ``B`` its 3x3 binomial blur (rows beyond the
    edges replicated; :func:`binomial3_row`; ``endolight.model.denoise.filter_guide``). Reads
    columns ``xa - 1`` to ``xb`` of rows ``y - 1`` to ``y + 1``."""
    h = luma.shape[0]
    here = luma[y]
    binomial3_row(luma[max(y - 1, 0)], here, luma[min(y + 1, h - 1)], xa, xb, out)
    for x in range(np.uint64(xa), np.uint64(xb)):
        v = np.float32(here[x])  # any numeric plane (uint8 Y' in the planar kernel)
        out[x] = v + blur * (out[x] - v)


@njit(**JIT_OPTIONS)
def lee_source_row(plane, y, lo, hi, blur, g, sq):  # pragma: no cover - compiled
    """The Lee step's source on columns ``[lo, hi)`` of row ``y`` (clamped to the plane) of an
    ``(H, W)`` plane: ``g = G = Y + blur (B - Y)`` (``B`` the 3x3 binomial blur) and ``sq = G^2``,
    float32 rows. Reads columns ``lo - 1`` to ``hi`` of rows ``y - 1`` to ``y + 1``."""
    blurred_guide_row(plane, min(max(y, 0), plane.shape[0] - 1), lo, hi, blur, g)
    for x in range(np.uint64(lo), np.uint64(hi)):
        sq[x] = g[x] * g[x]


@njit(**JIT_OPTIONS)
def lee_step_row(g0, g1, g2, s0, s1, s2, xa, xb, lee, col_m, col_s, out):  # pragma: no cover
    """One row of the guide with its Lee step on columns ``[xa, xb)``: ``M + V / (V + lee) (G -
    M)``, ``M, V`` the 3x3 binomial mean and variance of ``G`` from the rows above, at and below
    (``g0, g1, g2``: :func:`lee_source_row`'s ``G``, ``s0, s1, s2`` its ``G^2``; read on columns
    ``xa - 1`` to ``xb``, the row's ends replicated). ``col_m, col_s``: ``(W + 2,)`` float32
    scratch. Both column blurs in one loop and both row blurs with the step in another: fewer
    passes than two ``binomial3_row`` calls (the planar kernel at 1080p: 9.6 -> 9.2 CPU-ms)."""
    w = g1.shape[0]
    zero, quarter, halfw = np.float32(0.0), np.float32(0.25), np.float32(0.5)
    mid_m, mid_s, right_m, right_s = col_m[1:], col_s[1:], col_m[2:], col_s[2:]
    for x in range(np.uint64(max(xa - 1, 0)), np.uint64(min(xb + 1, w))):
        mid_m[x] = quarter * g0[x] + halfw * g1[x] + quarter * g2[x]
        mid_s[x] = quarter * s0[x] + halfw * s1[x] + quarter * s2[x]
    col_m[0], col_m[w + 1], col_s[0], col_s[w + 1] = col_m[1], col_m[w], col_s[1], col_s[w]
    for x in range(np.uint64(xa), np.uint64(xb)):
        mean = quarter * col_m[x] + halfw * mid_m[x] + quarter * right_m[x]
        var = max(quarter * col_s[x] + halfw * mid_s[x] + quarter * right_s[x] - mean * mean, zero)
        out[x] = mean + var / (var + lee) * (g1[x] - mean)


@njit(**JIT_OPTIONS)
def lee_guide_row(plane, y, xa, xb, blur, lee, out):  # pragma: no cover - compiled
    """The guided filter's guide with its Lee step (``endolight.model.denoise.filter_guide``) on
    columns ``[xa, xb)`` of row ``y`` of an ``(H, W)`` plane: ``M + V / (V + lee) (G - M)``,
    ``G = Y + blur (B - Y)``, ``M, V`` the 3x3 binomial mean and variance of ``G`` (rows and
    columns beyond the edges replicated; ``lee`` in the plane's units squared). Reads columns
    ``xa - 2`` to ``xb + 1`` of rows ``y - 2`` to ``y + 2``."""
    w = plane.shape[1]
    g = np.empty((3, w), dtype=np.float32)
    sq = np.empty((3, w), dtype=np.float32)
    lo, hi = max(xa - 1, 0), min(xb + 1, w)
    for k in range(3):
        lee_source_row(plane, y - 1 + k, lo, hi, blur, g[k], sq[k])
    lee_step_row(g[0], g[1], g[2], sq[0], sq[1], sq[2], xa, xb, lee, np.empty(w + 2, dtype=np.float32),
                 np.empty(w + 2, dtype=np.float32), out)
