"""Fused CPU kernel for the full-resolution stage of :class:`~endolight.model.DeepUPE`.

``DeepUPE.render`` (guide map, trilinear slice, 3x4 apply, illumination, ``R = I / S``) run as
PyTorch ops makes a dozen full-resolution float tensors per frame; at 1080p that is memory
bound and far from real time on a few cores. This kernel does the whole stage in one pass from
the uint8 frame to the uint8 output, rows in parallel. It is hand-written because no library
fuses this particular chain; it must match the PyTorch reference within 1/255 (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import torch
from numba import njit, prange

from endolight.model.guide import GuideMap
from endolight.model.slicing import EPS


@dataclass(frozen=True)
class GuideParams:
    """The :class:`GuideMap` weights as contiguous float32 arrays (``K`` = number of knots)."""

    ccm: np.ndarray  # (3, 3)
    ccm_bias: np.ndarray  # (3,)
    shifts: np.ndarray  # (3, K)
    slopes: np.ndarray  # (3, K)
    mix: np.ndarray  # (3,)
    mix_bias: np.ndarray  # (1,)

    @classmethod
    def from_module(cls, guide: GuideMap) -> GuideParams:
        def arr(t: torch.Tensor) -> np.ndarray:
            return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)

        return cls(arr(guide.ccm), arr(guide.ccm_bias), arr(guide.shifts), arr(guide.slopes),
                   arr(guide.mix), arr(guide.mix_bias))


def _axis_taps(n: int, cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower grid index and weight of each of ``n`` pixels along one axis of ``cells`` cells.

    HDRNet half-pixel convention with border clamping, as ``grid_sample(align_corners=False,
    padding_mode='border')``: pixel ``i`` reads coordinate ``(i + 0.5) / n * cells - 0.5``.
    """
    pos = np.clip((np.arange(n, dtype=np.float64) + 0.5) / n * cells - 0.5, 0.0, cells - 1)
    lo = np.minimum(np.floor(pos).astype(np.int64), max(cells - 2, 0))
    return lo, (pos - lo).astype(np.float32)


# error_model="numpy" drops numba's per-division zero checks, whose branches stop LLVM from
# vectorising the unit-stride row loops below.
_JIT = {"nogil": True, "fastmath": False, "cache": True, "error_model": "numpy"}


@njit(**_JIT)
def _sigmoid(v):  # pragma: no cover - compiled
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


@njit(parallel=True, **_JIT)
def _render_kernel(frame, grid, ccm, ccm_bias, shifts, slopes, mix, mix_bias, y_lo, y_w, x_lo, x_w,
                   strength, grey, keep, out):  # pragma: no cover - compiled
    h, w = frame.shape[0], frame.shape[1]
    gh, gw, depth = grid.shape[0], grid.shape[1], grid.shape[2]
    knots = shifts.shape[1]
    one = np.float32(1.0)
    zero = np.float32(0.0)
    f255 = np.float32(255.0)
    half = np.float32(0.5)
    eps = np.float32(EPS)
    dmax = np.float32(depth - 1)
    fdepth = np.float32(depth)
    z0_max = max(depth - 2, 0)
    x1_max = gw - 1
    cell = np.uint64(depth * 12)
    dz = np.uint64(12 if depth > 1 else 0)
    u1, u2, u3 = np.uint64(1), np.uint64(2), np.uint64(3)
    use_pow = strength != one
    use_keep = keep.shape[0] == h
    for y in prange(h):
        # Only the span of the row that holds field of view is computed; the rest (often half
        # an endoscope frame: the black border around a round view) is a copy of the input.
        xa, xb = 0, w
        if use_keep:
            while xa < w and keep[y, xa]:
                xa += 1
            while xb > xa and keep[y, xb - 1]:
                xb -= 1
            for x in range(xa):
                out[y, x, 0], out[y, x, 1], out[y, x, 2] = frame[y, x, 0], frame[y, x, 1], frame[y, x, 2]
            for x in range(xb, w):
                out[y, x, 0], out[y, x, 1], out[y, x, 2] = frame[y, x, 0], frame[y, x, 1], frame[y, x, 2]
            if xa == xb:
                continue
        # Unsigned bounds: numba then knows x >= 0 and drops its negative-index wraparound
        # checks, whose branches would stop the loops below from vectorising.
        ua, ub = np.uint64(xa), np.uint64(xb)
        # Grid rows interpolated to this image row once, flat (Gw, D, 12): each pixel then only
        # interpolates along x and depth.
        r0, wy = y_lo[y], y_w[y]
        r1 = min(r0 + 1, gh - 1)
        row = np.empty(gw * depth * 12, dtype=np.float32)
        for gx in range(gw):
            for d in range(depth):
                for c in range(12):
                    row[(gx * depth + d) * 12 + c] = (one - wy) * grid[r0, gx, d, c] + wy * grid[r1, gx, d, c]
        # Stage 1: planar float input of this row.
        img = np.empty((3, w), dtype=np.float32)
        for x in range(ua, ub):
            img[0, x] = np.float32(frame[y, x, 0]) / f255
            img[1, x] = np.float32(frame[y, x, 1]) / f255
            img[2, x] = np.float32(frame[y, x, 2]) / f255
        # Stage 2: guide = clamp(sum_c mix_c * curve_c(ccm @ rgb + b) + m0, 0, 1); knots outside
        # the pixel loop so that loop stays unit-stride and vectorised.
        g = np.full(w, mix_bias[0], dtype=np.float32)
        v = np.empty(w, dtype=np.float32)
        curve = np.empty(w, dtype=np.float32)
        for c in range(3):
            m0, m1, m2, b = ccm[c, 0], ccm[c, 1], ccm[c, 2], ccm_bias[c]
            for x in range(ua, ub):
                v[x] = m0 * img[0, x] + m1 * img[1, x] + m2 * img[2, x] + b
                curve[x] = zero
            for k in range(knots):
                sh, sl = shifts[c, k], slopes[c, k]
                for x in range(ua, ub):
                    curve[x] += sl * max(v[x] - sh, zero)
            mc = mix[c]
            for x in range(ua, ub):
                g[x] += mc * curve[x]
        # Stage 3: trilinear taps (x from the column tables, depth from the guide) and the
        # per-pixel 3x4 affine: logit_c = A[c, :3] . I + A[c, 3].
        # Taps first (a vectorised loop), then one gather loop per output channel.
        p = np.empty(w, dtype=np.uint64)
        q = np.empty(w, dtype=np.uint64)
        wt = np.empty((4, w), dtype=np.float32)
        for x in range(ua, ub):
            z = min(max(min(max(g[x], zero), one) * fdepth - half, zero), dmax)
            z0 = min(np.int64(z), z0_max)
            wz = z - np.float32(z0)
            wx = x_w[x]
            # Unsigned offsets: numba then skips its negative-index wraparound on every load.
            p[x] = np.uint64(x_lo[x]) * cell + np.uint64(z0 * 12)
            q[x] = np.uint64(min(x_lo[x] + 1, x1_max)) * cell + np.uint64(z0 * 12)
            wt[0, x] = (one - wx) * (one - wz)
            wt[1, x] = (one - wx) * wz
            wt[2, x] = wx * (one - wz)
            wt[3, x] = wx * wz
        logit = np.empty((3, w), dtype=np.float32)
        for c in range(3):
            for x in range(ua, ub):
                i0, i1, i2 = img[0, x], img[1, x], img[2, x]
                a = p[x] + np.uint64(4 * c)
                b = a + dz
                logit[c, x] = wt[0, x] * (row[a] * i0 + row[a + u1] * i1 + row[a + u2] * i2 + row[a + u3])
                logit[c, x] += wt[1, x] * (row[b] * i0 + row[b + u1] * i1 + row[b + u2] * i2 + row[b + u3])
                a = q[x] + np.uint64(4 * c)
                b = a + dz
                logit[c, x] += wt[2, x] * (row[a] * i0 + row[a + u1] * i1 + row[a + u2] * i2 + row[a + u3])
                logit[c, x] += wt[3, x] * (row[b] * i0 + row[b + u1] * i1 + row[b + u2] * i2 + row[b + u3])
        # Stage 4: S = max(I + (1 - I) * sigmoid(logit), eps) ** k, R = clamp(I / S, 0, 1);
        # grey: one S = max(m + (1 - m) * sigmoid(mean_c logit), eps) ** k, m = max_c I.
        if grey:
            third = np.float32(1.0 / 3.0)
            s = np.empty(w, dtype=np.float32)
            for x in range(ua, ub):
                m = max(img[0, x], max(img[1, x], img[2, x]))
                s[x] = max(m + (one - m) * _sigmoid((logit[0, x] + logit[1, x] + logit[2, x]) * third), eps)
            if use_pow:
                for x in range(ua, ub):
                    s[x] = s[x] ** strength
            for c in range(3):
                for x in range(ua, ub):
                    logit[c, x] = min(max(img[c, x] / s[x], zero), one)
        else:
            for c in range(3):
                for x in range(ua, ub):
                    logit[c, x] = max(img[c, x] + (one - img[c, x]) * _sigmoid(logit[c, x]), eps)
                if use_pow:  # a separate loop: the powf call would keep the common one scalar
                    for x in range(ua, ub):
                        logit[c, x] = logit[c, x] ** strength
                for x in range(ua, ub):
                    logit[c, x] = min(max(img[c, x] / logit[c, x], zero), one)
        for x in range(ua, ub):
            for c in range(3):
                out[y, x, c] = np.uint8(logit[c, x] * f255 + half)
        if use_keep:
            for x in range(ua, ub):
                if keep[y, x]:
                    out[y, x, 0], out[y, x, 1], out[y, x, 2] = frame[y, x, 0], frame[y, x, 1], frame[y, x, 2]


_NO_KEEP = np.zeros((0, 0), dtype=np.bool_)
ROW_CHUNK = 16  # rows per parallel work item


def render_uint8(
    frame: np.ndarray,
    grid: torch.Tensor | np.ndarray,
    guide: GuideParams,
    strength: float = 1.0,
    keep: np.ndarray | None = None,
    out: np.ndarray | None = None,
    grey: bool = False,
) -> np.ndarray:
    """The full-res stage of ``DeepUPE.render`` in one pass, uint8 in and out.

    Args:
        frame: ``(H, W, 3)`` uint8 RGB.
        grid: one bilateral grid ``(12, D, Gh, Gw)`` (or ``(1, 12, D, Gh, Gw)``).
        guide: the guide map's weights.
        strength: ``k`` in ``S ** k``.
        keep: optional ``(H, W)`` bool mask of pixels copied from ``frame`` unchanged (e.g.
            the black border outside the field of view).
        out: optional ``(H, W, 3)`` uint8 buffer to write into.
        grey: one illumination for all channels (``ModelConfig.illumination == "grey"``).

    Returns:
        ``(H, W, 3)`` uint8 RGB output ``R = I / S``, rounded like :func:`endolight.data.to_uint8`.
    """
    g = grid.detach().cpu().numpy() if isinstance(grid, torch.Tensor) else np.asarray(grid)
    if g.ndim == 5:
        g = g[0]
    if g.ndim != 4 or g.shape[0] != 12:
        raise ValueError(f"grid must be (12, D, Gh, Gw), got {g.shape}")
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
    h, w = frame.shape[:2]
    _, _, gh, gw = g.shape
    # (Gh, Gw, D, 12): the 12 coefficients of a cell are adjacent in memory.
    cells = np.ascontiguousarray(g.transpose(2, 3, 1, 0), dtype=np.float32)
    y_lo, y_w = _axis_taps(h, gh)
    x_lo, x_w = _axis_taps(w, gw)
    if keep is None:
        keep = _NO_KEEP
    elif keep.shape != (h, w):
        raise ValueError(f"keep mask must be {(h, w)}, got {keep.shape}")
    if out is None:
        out = np.empty_like(frame)
    # Rows are handed out in small chunks, not one static half per thread: when a decoder or
    # encoder thread takes a core for a while, the other thread picks up the remaining rows.
    with numba.parallel_chunksize(ROW_CHUNK):
        _render_kernel(np.ascontiguousarray(frame), cells, guide.ccm, guide.ccm_bias, guide.shifts,
                       guide.slopes, guide.mix, guide.mix_bias, y_lo, y_w, x_lo, x_w,
                       np.float32(strength), grey, np.ascontiguousarray(keep, dtype=np.bool_), out)
    return out

