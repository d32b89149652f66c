"""Fused CPU kernel for the full-resolution stage of :class:`~endolight.model.DeepUPE`.

``DeepUPE.render`` (guide map, trilinear slice, denoise, 3x4 apply, illumination, ``R = D / S``) run as
PyTorch ops makes a dozen full-resolution float tensors per frame; at 1080p that is memory
bound and far from real time on a few cores. This kernel does the whole stage in one pass from
the uint8 frame to the uint8 output, rows in parallel. It is hand-written because no library
fuses this particular chain; it must match the PyTorch reference within 1/255 (tested).
Plain numeric code: numpy arrays in and out, no model or torch imports; the caller passes the
weights as arrays (:class:`GuideParams`), the grid, the denoiser's low-res coefficients and the
model's illumination floor ``eps``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
from numba import njit, prange

from endolight.kernels.common import (
    JIT_OPTIONS,
    LUMA,
    ROW_CHUNK,
    along_x,
    axis_taps,
    blurred_guide_row,
    border_span,
    chroma_curve,
    guide_row,
    lee_guide_row,
    row_span,
    sigmoid,
)


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
    def from_module(cls, guide: Any) -> GuideParams:
        """From a ``GuideMap`` module (its parameters carry the same names as the fields)."""
        arrays = {name: np.ascontiguousarray(p.detach().cpu().numpy(), dtype=np.float32)
                  for name, p in guide.named_parameters()}
        return cls(**arrays)


@njit(parallel=True, **JIT_OPTIONS)
def _luma_plane(frame, l0, l1, l2, out):  # pragma: no cover - compiled
    """The luma in [0, 1] (weights ``l0, l1, l2``) of an ``(H, W, 3)`` uint8 frame, into ``out``.

    Once a frame, for the blurred guide: made per row, the three rows' luma took three passes
    over the interleaved bytes (the render of a 1080p sinus frame, one thread: 47.4-47.7 CPU-ms
    then, 42.8-42.9 now). Every pixel, the border's too: limiting it to the rows' spans cost
    more in finding them (three per row) than it saved.
    """
    h, w = frame.shape[0], frame.shape[1]
    f255 = np.float32(255.0)
    c0, c1, c2 = l0 / f255, l1 / f255, l2 / f255
    for y in prange(h):
        src, dst = frame[y], out[y]
        for x in range(np.uint64(0), np.uint64(w)):
            dst[x] = c0 * np.float32(src[x, 0]) + c1 * np.float32(src[x, 1]) + c2 * np.float32(src[x, 2])


@njit(parallel=True, **JIT_OPTIONS)
def _render_kernel(frame, grid, ccm, ccm_bias, shifts, slopes, mix, mix_bias, y_lo, y_w, x_lo, x_w, strength,
                   grey, keep, fill, eps, dn, dy_lo, dy_w, blur, lee, luma, offset, power, floor, chroma,
                   out):  # pragma: no cover
    h, w = frame.shape[0], frame.shape[1]
    gh, gw, depth, nc = grid.shape[0], grid.shape[1], grid.shape[2], grid.shape[3]
    one = np.float32(1.0)
    zero = np.float32(0.0)
    f255 = np.float32(255.0)
    half = np.float32(0.5)
    eps = np.float32(eps)
    # The division's offset space (ModelConfig.black_offset): S >= (I + beta) / (1 + beta),
    # R = (I + beta) / S - beta.
    beta = np.float32(offset)
    lift = one / (one + beta)
    dmax = np.float32(depth - 1)
    fdepth = np.float32(depth)
    z0_max = max(depth - 2, 0)
    x1_max = gw - 1
    cell = np.uint64(depth * nc)
    dz = np.uint64(nc if depth > 1 else 0)
    u1, u2, u3 = np.uint64(1), np.uint64(2), np.uint64(3)
    # Grey grids arrive collapsed to the mean affine row (render_uint8): one logit per pixel.
    n_logit = 1 if grey else 3
    lam_off = np.uint64(4 * n_logit)  # the denoising strength follows the affine rows
    use_dn = dn.shape[0] == 6
    dh = dn.shape[1]
    l0, l1, l2 = np.float32(LUMA[0]), np.float32(LUMA[1]), np.float32(LUMA[2])
    use_pow = strength != one
    use_keep = keep.shape[0] == h
    use_fill = fill.shape[0] == 4
    n_knots = chroma.shape[0]
    for y in prange(h):
        # Only the span of the row that holds field of view is computed; the rest (often half
        # an endoscope frame: the black border around a round view) is a copy of the input.
        xa, xb = 0, w
        if use_keep:
            xa, xb = row_span(keep, y, w)
            # The border, on the row's flat, unsigned bytes: flattened (endolight.border) or
            # copied (a per-pixel copy of three channels stayed scalar: 1.1-1.3 CPU-ms more a
            # 1080p sinus frame, one thread).
            src, dst = frame[y].reshape(3 * w), out[y].reshape(3 * w)
            if use_fill:
                border_span(src, dst, 0, min(xa, xb), fill)
                border_span(src, dst, xb, w, fill)
            else:
                for i in range(np.uint64(0), np.uint64(3 * min(xa, xb))):
                    dst[i] = src[i]
                for i in range(np.uint64(3 * xb), np.uint64(3 * w)):
                    dst[i] = src[i]
            if xa >= xb:
                continue
        # Unsigned bounds: numba then knows x >= 0 and drops its negative-index wraparound
        # checks, whose branches would stop the loops below from vectorising.
        ua, ub = np.uint64(xa), np.uint64(xb)
        # Grid rows interpolated to this image row once, flat (Gw, D, C): each pixel then only
        # interpolates along x and depth.
        r0, wy = y_lo[y], y_w[y]
        r1 = min(r0 + 1, gh - 1)
        row = np.empty(gw * depth * nc, dtype=np.float32)
        for gx in range(gw):
            for d in range(depth):
                for c in range(nc):
                    row[(gx * depth + d) * nc + c] = (one - wy) * grid[r0, gx, d, c] + wy * grid[r1, gx, d, c]
        # Stage 1: planar float input of this row.
        img = np.empty((3, w), dtype=np.float32)
        for x in range(ua, ub):
            img[0, x] = np.float32(frame[y, x, 0]) / f255
            img[1, x] = np.float32(frame[y, x, 1]) / f255
            img[2, x] = np.float32(frame[y, x, 2]) / f255
        # Stage 2: the guide.
        g = np.empty(w, dtype=np.float32)
        guide_row(img, ccm, ccm_bias, shifts, slopes, mix, mix_bias, ua, ub, g)
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
            p[x] = np.uint64(x_lo[x]) * cell + np.uint64(z0 * nc)
            q[x] = np.uint64(min(x_lo[x] + 1, x1_max)) * cell + np.uint64(z0 * nc)
            wt[0, x] = (one - wx) * (one - wz)
            wt[1, x] = (one - wx) * wz
            wt[2, x] = wx * (one - wz)
            wt[3, x] = wx * wz
        if use_dn:
            gl = np.empty(w, dtype=np.float32)
            if lee > zero:
                lee_guide_row(luma, y, xa, xb, blur, lee, gl)
            elif blur == zero:
                for x in range(ua, ub):
                    gl[x] = l0 * img[0, x] + l1 * img[1, x] + l2 * img[2, x]
            else:
                blurred_guide_row(luma, y, xa, xb, blur, gl)
            _denoise_row(img, row, p, q, wt, dn, dy_lo[y], dy_w[y], dz, lam_off, ua, ub, gl, dh,
                         min(strength, one))
        if floor > zero:  # ModelConfig.dequantise: see endolight.model.slicing.dequantise
            for x in range(ua, ub):
                lo = floor if max(img[0, x], max(img[1, x], img[2, x])) > zero else zero
                img[0, x] = max(img[0, x], lo)
                img[1, x] = max(img[1, x], lo)
                img[2, x] = max(img[2, x], lo)
        logit = np.empty((3, w), dtype=np.float32)
        for c in range(n_logit):
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
        # Stage 4: S = max(I' + (1 - I') * sigmoid(logit), eps) ** k, R = clamp((I + beta) / S -
        # beta, 0, 1) with I' = (I + beta) / (1 + beta); grey: one S = max(m' + (1 - m') *
        # sigmoid(mean_c logit), eps) ** k, m' = (max_c I + beta) / (1 + beta) (the mean of the
        # three logits is the one logit of the collapsed grid).
        s = np.empty(w, dtype=np.float32)
        if grey:
            if power:
                for x in range(ua, ub):
                    s[x] = max((max(img[0, x], max(img[1, x], img[2, x])) + beta) * lift, eps)
                _power_curve(s, logit[0], ua, ub, s)
            else:
                for x in range(ua, ub):
                    m = (max(img[0, x], max(img[1, x], img[2, x])) + beta) * lift
                    s[x] = max(m + (one - m) * sigmoid(logit[0, x]), eps)
            if use_pow:
                for x in range(ua, ub):
                    s[x] = s[x] ** strength
            if n_knots:
                _chroma_scaled(img, s, chroma, beta, ua, ub, logit)
            else:
                for c in range(3):
                    for x in range(ua, ub):
                        logit[c, x] = min(max((img[c, x] + beta) / s[x] - beta, zero), one)
        else:
            for c in range(3):
                if power:
                    for x in range(ua, ub):
                        s[x] = max((img[c, x] + beta) * lift, eps)
                    _power_curve(s, logit[c], ua, ub, logit[c])
                else:
                    for x in range(ua, ub):
                        m = (img[c, x] + beta) * lift
                        logit[c, x] = max(m + (one - m) * sigmoid(logit[c, x]), eps)
                if use_pow:  # a separate loop: the powf call would keep the common one scalar
                    for x in range(ua, ub):
                        logit[c, x] = logit[c, x] ** strength
                for x in range(ua, ub):
                    logit[c, x] = min(max((img[c, x] + beta) / logit[c, x] - beta, zero), one)
        for x in range(ua, ub):
            for c in range(3):
                out[y, x, c] = np.uint8(logit[c, x] * f255 + half)
        if use_keep:
            for x in range(ua, ub):
                if keep[y, x]:
                    if use_fill:
                        border_span(src, dst, x, x + 1, fill)
                    else:
                        k = 3 * x
                        dst[k], dst[k + 1], dst[k + 2] = src[k], src[k + 1], src[k + 2]


@njit(**JIT_OPTIONS)
def _chroma_scaled(img, s, gains, beta, ua, ub, out):  # pragma: no cover - compiled
    """``out[c] = clamp(Y_R + sigma(S) (R_c - Y_R), 0, 1)`` over ``[ua, ub)``: the division
    ``R = (D + beta) / S - beta`` with its chroma (each channel minus the Rec. 601 luma) scaled
    by the chroma curve (:func:`~endolight.kernels.common.chroma_curve`). ``img``: ``D`` (3, W)."""
    one, zero = np.float32(1.0), np.float32(0.0)
    l0, l1, l2 = np.float32(LUMA[0]), np.float32(LUMA[1]), np.float32(LUMA[2])
    sigma = np.empty(s.shape[0], dtype=np.float32)
    chroma_curve(s, gains, ua, ub, sigma)
    for x in range(ua, ub):
        g = one / s[x]
        yd = l0 * img[0, x] + l1 * img[1, x] + l2 * img[2, x]
        yo = (yd + beta) * g - beta
        cg = sigma[x] * g
        r = yo + cg * (img[0, x] - yd)
        gr = yo + cg * (img[1, x] - yd)
        b = yo + cg * (img[2, x] - yd)
        out[0, x] = min(max(r, zero), one)
        out[1, x] = min(max(gr, zero), one)
        out[2, x] = min(max(b, zero), one)


@njit(**JIT_OPTIONS)
def _power_curve(m, logit, ua, ub, out):  # pragma: no cover - compiled
    """``out = m ** (1 - sigmoid(logit))`` over ``[ua, ub)`` (``out`` may be ``m`` or ``logit``;
    ``logit`` is overwritten): ``ModelConfig.curve = "power"``, ``m`` already floored at ``eps``.
    libm's ``powf`` keeps its loop scalar, so the sigmoid has a loop of its own; only models
    trained with this curve pay for it."""
    one = np.float32(1.0)
    for x in range(ua, ub):
        logit[x] = one - sigmoid(logit[x])
    for x in range(ua, ub):
        out[x] = m[x] ** logit[x]


@njit(**JIT_OPTIONS)
def _denoise_row(img, row, p, q, wt, dn, r0, wy, dz, lam_off, ua, ub, luma, dh,
                 scale):  # pragma: no cover - compiled
    """``D = clamp(I + lam * (a * G + b - I), 0, 1)`` in place on one row's planar ``img``:
    ``lam`` the sigmoid of the grid's channel ``lam_off`` (same taps as the affine) times
    ``scale`` (the strength, at most 1), ``G`` the row's guide ``luma`` (:func:`blurred_guide_row`),
    ``a, b`` the guided filter's low-res coefficients ``dn`` (6, h, W), already interpolated
    along x, here between two of its rows (unit-stride loads: gathers from the low-res maps
    cost ~4x more)."""
    one, zero = np.float32(1.0), np.float32(0.0)
    w = img.shape[1]
    r1 = min(r0 + 1, dh - 1)
    lam = np.empty(w, dtype=np.float32)
    # The taps' gathers first, then the sigmoid in a loop of its own: in one loop with the
    # gathers the sigmoid's polynomial stayed scalar.
    for x in range(ua, ub):
        a = p[x] + lam_off
        b = q[x] + lam_off
        lam[x] = wt[0, x] * row[a] + wt[1, x] * row[a + dz] + wt[2, x] * row[b] + wt[3, x] * row[b + dz]
    for x in range(ua, ub):
        lam[x] = sigmoid(lam[x]) * scale
    for c in range(3):
        a0, a1, b0, b1 = dn[c, r0], dn[c, r1], dn[c + 3, r0], dn[c + 3, r1]
        for x in range(ua, ub):
            av = (one - wy) * a0[x] + wy * a1[x]
            bv = (one - wy) * b0[x] + wy * b1[x]
            v = img[c, x] + lam[x] * (av * luma[x] + bv - img[c, x])
            img[c, x] = min(max(v, zero), one)


_NO_KEEP = np.zeros((0, 0), dtype=np.bool_)
_NO_FILL = np.zeros(0, dtype=np.int32)
_NO_DENOISE = np.zeros((0, 1, 1), dtype=np.float32)
_NO_LUMA = np.zeros((0, 0), dtype=np.float32)
_NO_CHROMA = np.zeros(0, dtype=np.float32)


def render_uint8(
    frame: np.ndarray,
    grid: Any,
    guide: GuideParams,
    eps: float,
    strength: float = 1.0,
    keep: np.ndarray | None = None,
    fill: np.ndarray | None = None,
    out: np.ndarray | None = None,
    grey: bool = False,
    denoise: Any = None,
    blur: float = 0.0,
    lee: float = 0.0,
    offset: float = 0.0,
    power: bool = False,
    floor: float = 0.0,
    chroma: Any = None,
) -> np.ndarray:
    """The full-res stage of ``DeepUPE.render`` in one pass, uint8 in and out.

    Args:
        frame: ``(H, W, 3)`` uint8 RGB.
        grid: one bilateral grid ``(C, D, Gh, Gw)`` (or ``(1, C, D, Gh, Gw)``), array-like;
            ``C`` = 12 (affine), or 13 with ``denoise`` (the denoising strength's logit).
        guide: the guide map's weights.
        eps: the illumination's floor (``endolight.model.slicing.EPS``).
        strength: ``k`` in ``S ** k``; the denoising strength is scaled by ``min(k, 1)``.
        keep: optional ``(H, W)`` bool mask of pixels copied from ``frame`` unchanged (e.g.
            the black border outside the field of view).
        fill: optional ``(4,)`` int32 (``endolight.border.border_fill``): ``keep`` pixels below
            its luma threshold take its colour instead (the border's noise flattened).
        out: optional ``(H, W, 3)`` uint8 buffer to write into.
        grey: one illumination for all channels (``ModelConfig.illumination == "grey"``).
        denoise: the guided filter's low-res coefficients ``(6, h, w)`` (or ``(1, 6, h, w)``,
            ``DeepUPE.denoise_coeffs``), array-like; needs a 13-channel grid.
        blur: the filter's guide is ``Y + blur * (binomial3x3(Y) - Y)`` (``ModelConfig.denoise_blur``).
        lee: the guide's Lee step, a variance of the luma in [0, 1] (``ModelConfig.denoise_lee``;
            0: none).
        offset: the division's ``beta`` (``ModelConfig.black_offset``).
        power: the illumination's power curve (``ModelConfig.curve == "power"``).
        floor: the value a channel of ``D`` at 0 takes where another channel is not
            (``endolight.model.slicing.LEVEL0`` for a ``ModelConfig.dequantise`` model; 0: none).
        chroma: the chroma curve's ``(K,)`` knot values (``DeepUPE.chroma_gains``; grey only),
            array-like; ``None``: none.

    Returns:
        ``(H, W, 3)`` uint8 RGB output ``R = (D + beta) / S - beta``, rounded like
        ``endolight.io.tensors.to_uint8``.
    """
    g = np.asarray(grid, dtype=np.float32)
    if g.ndim == 5:
        g = g[0]
    want = 12 if denoise is None else 13
    if g.ndim != 4 or g.shape[0] != want:
        raise ValueError(f"grid must be ({want}, D, Gh, Gw), got {g.shape}")
    dn = _NO_DENOISE
    if denoise is not None:
        dn = np.ascontiguousarray(np.asarray(denoise, dtype=np.float32).reshape(6, *np.shape(denoise)[-2:]))
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be (H, W, 3) uint8, got {frame.shape} {frame.dtype}")
    h, w = frame.shape[:2]
    _, _, gh, gw = g.shape
    gains = _NO_CHROMA
    if chroma is not None:
        gains = np.ascontiguousarray(np.asarray(chroma, dtype=np.float32).ravel())
        if not grey or gains.shape[0] < 2:
            raise ValueError(f"a chroma curve needs the grey illumination and 2 or more knots, "
                             f"got {gains.shape[0]}")
    # (Gh, Gw, D, C): the coefficients of a cell are adjacent in memory.
    cells = g.transpose(2, 3, 1, 0)
    if grey:
        # Grey S needs only the mean of the three affine rows (the mean logit): averaging the
        # rows once per grid cell saves two thirds of the per-pixel affine work.
        mean_row = cells[..., :12].reshape(*cells.shape[:3], 3, 4).mean(axis=3)
        cells = np.concatenate([mean_row, cells[..., 12:]], axis=-1)
    cells = np.ascontiguousarray(cells, dtype=np.float32)
    y_lo, y_w = axis_taps(h, gh)
    x_lo, x_w = axis_taps(w, gw)
    dy_lo, dy_w = axis_taps(h, dn.shape[1])
    if denoise is not None:
        dn = along_x(dn, w)
    if keep is None:
        keep = _NO_KEEP
    elif keep.shape != (h, w):
        raise ValueError(f"keep mask must be {(h, w)}, got {keep.shape}")
    frame, keep = np.ascontiguousarray(frame), np.ascontiguousarray(keep, dtype=np.bool_)
    luma = _NO_LUMA
    if denoise is not None and (blur != 0 or lee != 0):
        luma = np.empty((h, w), dtype=np.float32)
        with numba.parallel_chunksize(ROW_CHUNK):
            _luma_plane(frame, *(np.float32(v) for v in LUMA), luma)
    if out is None:
        out = np.empty_like(frame)
    # Rows are handed out in small chunks, not one static half per thread: when a decoder or
    # encoder thread takes a core for a while, the other thread picks up the remaining rows.
    with numba.parallel_chunksize(ROW_CHUNK):
        _render_kernel(frame, cells, guide.ccm, guide.ccm_bias, guide.shifts, guide.slopes, guide.mix,
                       guide.mix_bias, y_lo, y_w, x_lo, x_w, np.float32(strength), grey, keep,
                       _NO_FILL if fill is None else np.asarray(fill, dtype=np.int32),
                       np.float32(eps), dn, dy_lo, dy_w, np.float32(blur), np.float32(lee), luma,
                       np.float32(offset), power,
                       np.float32(floor), gains, out)
    return out

