"""Fused CPU kernel for the full-resolution stage on the decoder's own Y′CbCr 4:2:0 planes.

A video decoder delivers Y′ at full resolution and Cb, Cr at a quarter; the encoder wants the
same. Converting to RGB and back costs more than the whole enhancer may. The grey illumination
is one scalar ``S`` per pixel and Y′CbCr is linear in R′G′B′, so ``R = D / S`` is exactly
``Yn' = D_Y / S`` and ``Cn' = D_C / S`` on the normalised planes ``Yn = (Y - 16) / 219``,
``Cn = (C - 128) / 224`` (BT.601 limited range; the same holds for any matrix). Everything smooth
(the sliced affine rows, the denoiser's coefficients and strength) arrives as low-resolution
maps; per pixel this kernel only interpolates three maps (four with the blurred guide) and evaluates

    D_Y = P * Yn + Q + R * Bn                (the learned guided-filter denoising; Bn: the 3x3
                                              binomial blur of Yn, R = 0 without the blurred guide)
    S   = max(m + (1 - m) * sigmoid(L * D_Y + B), eps) ** k,
          m = (clamp(D_Y + cmax, 0, 1) + beta) / (1 + beta)
    Y'  = 16 + 219 * ((D_Y + beta) / S - beta)

with ``B`` (the chroma part of the affine row), ``cmax`` (the largest of R, G, B minus luma)
and ``D_Cb, D_Cr`` computed once per 2x2 block at chroma resolution; the block's chroma is
divided by the mean of its four ``1 / S`` (what averaging the RGB reference's chroma gives), and
with a chroma curve (``ModelConfig.chroma_knots``) multiplied by ``sigma`` at the block's ``S``.
The division's offset ``beta`` (``ModelConfig.black_offset``: ``R = (D + beta) / S - beta``) is
grey, so it cancels from the chroma and only the luma carries it.
Hand-written for the same reason as :mod:`endolight.kernels.fused`: no library fuses this chain.
Plain numeric code: numpy arrays in and out.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import cv2
import numba
import numpy as np
from numba import njit, prange

from endolight.io.yuv import CB_B, CB_G, CR_G, CR_R, TO_YCC  # numeric constants only
from endolight.kernels.common import (
    JIT_OPTIONS,
    LUMA,
    ROW_CHUNK,
    axis_taps,
    binomial3_row,
    chroma_curve,
    guide_row,
    lee_source_row,
    lee_step_row,
    row_span,
    sigmoid,
)

N_LUMA_MAPS = 4  # P, Q, L, R
N_CHROMA_MAPS = 8  # 1 - lam, lam*a_cb, lam*b_cb, lam*a_cr, lam*b_cr, L_cb, L_cr, L_0


def planar_terms(lam: Any, a: Sequence[Any], b: Sequence[Any], affine: Sequence[Any], blur: Any = 0.0
                 ) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The planar kernel's four luma and eight chroma maps, for the normalised planes
    ``Yn = (Y - 16) / 219``, ``Cn = (C - 128) / 224``:

        D_Y = P Yn + Q + R Bn,   logit = L D_Y + (L_cb D_cb + L_cr D_cr + L_0),
        D_C = (1 - lam) Cn + lam a_C Gbar + lam b_C   (Gbar: the 2x2 block's mean guide)

    with the filter's guide ``G = Yn + blur (Bn - Yn)``, ``Bn`` the 3x3 binomial blur of ``Yn``:
    its blurred part weighs ``R = blur lam a_Y`` (made here, at low resolution, so that per pixel
    it is one more map).

    Arithmetic only, so the same formulas serve one pixel's numbers (compiled,
    :func:`map_terms`), NumPy arrays and PyTorch tensors (the I420 graph,
    ``endolight.model.maps``).

    Args:
        lam: the denoising strength.
        a, b: the guided filter's coefficients on Yn, Cbn, Crn (three each).
        affine: the grey affine row's R, G, B weights and offset (four).
        blur: the guide's blur (``ModelConfig.denoise_blur``).
    """
    ar, ag, ab, a0 = affine
    r = blur * lam * a[0]
    luma = (1 - lam + lam * a[0] - r, lam * b[0], ar + ag + ab, r)
    chroma = (1 - lam, lam * a[1], lam * b[1], lam * a[2], lam * b[2],
              CB_B * ab - CB_G * ag, CR_R * ar - CR_G * ag, a0)
    return luma, chroma


# The same formulas compiled for the map kernel (defined in this file, so that numba's cache of
# the kernel is rebuilt when they change).
_planar_terms = njit(**JIT_OPTIONS)(planar_terms)


def map_terms(co: np.ndarray, fit: np.ndarray | None, scale: float, blur: float = 0.0
              ) -> tuple[np.ndarray, np.ndarray]:
    """The planar kernel's maps from the sliced grid and the denoiser's fit, in one pass.

    Args:
        co: ``(4 [+ 1], h, w)`` float32: the grey affine row, and the denoising strength's logit.
        fit: ``(6, h, w)`` or ``(6, 2h, 2w)`` float32 guided-filter coefficients on R, G, B
            (``a_rgb, b_rgb``; averaged over each 2x2 block in the second case); ``None``: no
            denoising (``lam = 0``).
        scale: the denoising strength is ``scale * sigmoid(co[4])``.
        blur: the guide's blur (``ModelConfig.denoise_blur``).

    Returns:
        ``(4, h, w)`` luma and ``(8, h, w)`` chroma maps (:func:`planar_terms`), float32.
    """
    h, w = co.shape[1:]
    sizes = ((h, w), (2 * h, 2 * w))
    if fit is not None and (co.shape[0] < 5 or fit.shape[0] != 6 or fit.shape[1:] not in sizes):
        raise ValueError(f"need a (5, h, w) slice and a (6, h, w) or (6, 2h, 2w) fit, got {co.shape}, "
                         f"{fit.shape}")
    luma = np.empty((N_LUMA_MAPS, h, w), np.float32)
    chroma = np.empty((N_CHROMA_MAPS, h, w), np.float32)
    _map_kernel(np.ascontiguousarray(co, dtype=np.float32),
                _NO_FIT if fit is None else np.ascontiguousarray(fit, dtype=np.float32),
                TO_YCC, np.float32(scale), np.float64(blur), luma, chroma)
    return luma, chroma


_NO_FIT = np.zeros((6, 0, 0), np.float32)
_NO_GAINS = np.zeros(0, np.float32)


@njit(**JIT_OPTIONS)  # small maps: on the calling thread (waking another costs more than it saves)
def _map_kernel(co, fit, to_ycc, scale, blur, luma, chroma):  # pragma: no cover - compiled
    """Per map pixel: the fit's coefficients (their 2x2 block's mean when the fit is twice the
    maps' size) in Y'CbCr, the strength ``scale * sigmoid``, and :func:`planar_terms` (NumPy
    did this in ~20 passes over small arrays: ~4 ms of a 1080p frame inside a stream)."""
    h, w = co.shape[1:]
    denoise = fit.shape[1] > 0
    two = denoise and fit.shape[1] == 2 * h
    one, quarter = np.float32(1.0), np.float32(0.25)
    for y in range(h):
        rgb = np.zeros(6, np.float32)  # a_rgb, b_rgb
        ycc = np.zeros(6, np.float64)  # a_ycc, b_ycc
        for x in range(w):
            lam = 0.0
            if denoise:
                lam = np.float64(scale / (one + np.exp(-co[4, y, x])))
                for c in range(6):
                    if two:
                        top, bottom = fit[c, 2 * y], fit[c, 2 * y + 1]
                        rgb[c] = (top[2 * x] + top[2 * x + 1] + bottom[2 * x] + bottom[2 * x + 1]) * quarter
                    else:
                        rgb[c] = fit[c, y, x]
                for r in range(3):
                    for c in range(2):
                        ycc[3 * c + r] = (to_ycc[r, 0] * rgb[3 * c] + to_ycc[r, 1] * rgb[3 * c + 1]
                                          + to_ycc[r, 2] * rgb[3 * c + 2])
            # In float64 throughout: the terms are then one tuple type, indexable in the loops.
            v = np.float64
            lm, ch = _planar_terms(lam, (ycc[0], ycc[1], ycc[2]), (ycc[3], ycc[4], ycc[5]),
                                   (v(co[0, y, x]), v(co[1, y, x]), v(co[2, y, x]), v(co[3, y, x])), blur)
            for c in range(N_LUMA_MAPS):
                luma[c, y, x] = lm[c]
            for c in range(N_CHROMA_MAPS):
                chroma[c, y, x] = ch[c]


@njit(**JIT_OPTIONS)
def _span(keep, y0, y1, w):  # pragma: no cover - compiled
    """Columns ``[a, b)`` of rows ``y0, y1`` that hold field of view (:func:`row_span` of each),
    widened to whole blocks."""
    a, b = w, 0
    for y in (y0, y1):
        ra, rb = row_span(keep, y, w)
        if ra < rb:  # a row wholly kept adds nothing
            a, b = min(a, ra), max(b, rb)
    return (a // 2) * 2, min(w, ((b + 1) // 2) * 2)


ALIGN = 32  # the kernel's row loops run over whole runs of this many pixels (a vector's multiple)
SPAN_FIELDS = 7  # view_spans' columns


def view_spans(keep: np.ndarray) -> np.ndarray:
    """Where the planar kernel computes in each block row (two rows) of an ``(H, W)`` bool mask
    of kept pixels (the border): ``(H / 2, 7)`` int64 rows ``a, b, a0, b0, a1, b1, holes``:
    the block row's columns ``[a, b)`` holding view (:func:`_span`), each of its two rows' own
    (:func:`row_span`), and 1 where a kept pixel lies elsewhere than before or after its row's
    own span (a view that is not convex there, handled pixel by pixel). Derived once per mask
    (a stream's mask seldom changes): the kernel's own pass over the mask cost ~0.7 CPU-ms a
    1080p frame."""
    if keep.ndim != 2 or keep.shape[0] % 2:
        raise ValueError(f"need an (H, W) mask with H even, got {keep.shape}")
    spans = np.empty((keep.shape[0] // 2, SPAN_FIELDS), np.int64)
    _view_spans(np.ascontiguousarray(keep, dtype=np.bool_), spans)
    return spans


@njit(**JIT_OPTIONS)
def _view_spans(keep, out):  # pragma: no cover - compiled
    w = keep.shape[1]
    for j in range(keep.shape[0] // 2):
        out[j, 0], out[j, 1] = _span(keep, 2 * j, 2 * j + 1, w)
        holes = False
        for t in range(2):
            a, b = row_span(keep, 2 * j + t, w)
            out[j, 2 + 2 * t], out[j, 3 + 2 * t] = a, b
            for x in range(a, b):
                holes |= keep[2 * j + t, x]
        a0, b0, a1, b1 = out[j, 2], out[j, 3], out[j, 4], out[j, 5]
        # Two rows' spans apart: a block between them may be kept whole.
        holes |= a0 < b0 and a1 < b1 and max(a0, a1) >= min(b0, b1)
        out[j, 6] = holes


@njit(**JIT_OPTIONS)
def _border_luma(row_in, row_out, a, b, fill):  # pragma: no cover - compiled
    """Y′ of columns ``[a, b)`` outside the view (:mod:`endolight.border`): the fill's where the
    input is below its threshold (the border's noise), else the input (an overlay)."""
    fy, below = np.uint8(fill[0]), fill[3]
    for x in range(np.uint64(a), np.uint64(b)):
        v = row_in[x]
        row_out[x] = fy if np.int32(v) < below else v


@njit(**JIT_OPTIONS)
def _border_chroma(ya, yb, ur, vr, uo, vo, a, b, fill):  # pragma: no cover - compiled
    """Cb, Cr of the 2x2 blocks ``[a, b)`` outside the view: the fill's where all four of the
    block's Y′ (rows ``ya``, ``yb``) are below its threshold, else the input."""
    fu, fv, below = np.uint8(fill[1]), np.uint8(fill[2]), fill[3]
    u1 = np.uint64(1)
    for i in range(np.uint64(a), np.uint64(b)):
        e = i + i
        e1 = e + u1
        if np.int32(max(max(ya[e], ya[e1]), max(yb[e], yb[e1]))) < below:
            uo[i], vo[i] = fu, fv
        else:
            uo[i], vo[i] = ur[i], vr[i]


@njit(**JIT_OPTIONS)
def _maps_along_x(maps, r_lo, r_hi, x_lo, x_w, phase, out):  # pragma: no cover - compiled
    """Rows ``[r_lo, r_hi]`` of ``(C, h, w)`` maps interpolated along x into ``out``, ``(C, r_hi -
    r_lo + 1, W)``: :func:`~endolight.kernels.common.along_x` of the rows one work item reads, so
    the frame's maps at full width (8 MB at 1080p) are never written out and read back.

    ``x_lo, x_w``: ``axis_taps(W, w)``. ``phase``: the x weights of one cell, ``(W / w,)``, when
    ``W`` is an even multiple of ``w`` (every cell's pixels then have the same weights: per cell
    one run of ``W / w`` pixels, which LLVM vectorises); else empty, and each pixel gathers its
    two taps."""
    one = np.float32(1.0)
    w, n = maps.shape[2], out.shape[2]
    s = phase.shape[0]
    for k in range(maps.shape[0]):
        for r in range(r_lo, r_hi + 1):
            src, dst = maps[k, r], out[k, r - r_lo]
            if s == 0:  # x_taps: no phase for an odd or fractional factor, or one column
                for x in range(n):
                    i = x_lo[x]
                    f = x_w[x]
                    dst[x] = (one - f) * src[i] + f * src[min(i + 1, w - 1)]
                continue
            half = s // 2
            for x in range(half):  # left of the first cell's centre: clamped
                dst[x] = src[0]
            for i in range(w - 1):
                a, b = src[i], src[i + 1]
                run = dst[half + s * i: half + s * (i + 1)]
                for t in range(s):
                    run[t] = (one - phase[t]) * a + phase[t] * b
            for x in range(half + s * (w - 1), n):
                dst[x] = src[w - 1]


@njit(**JIT_OPTIONS)
def _aligned(xa, xb, w):  # pragma: no cover - compiled
    """The span ``[xa, xb)`` widened to whole runs of ``ALIGN`` pixels within ``[0, w)``: the
    kernel computes its rows over these (what lies outside the view is overwritten after). A
    span starting mid-vector slowed every row loop (measured: the kernel 7.9 -> 6.9 CPU-ms a
    1080p frame with the benchmark clip's border, one thread)."""
    return (xa // ALIGN) * ALIGN, min(-(-xb // ALIGN) * ALIGN, w)


@njit(parallel=True, **JIT_OPTIONS)
def _planar_kernel(y_in, u_in, v_in, luma_maps, chroma_maps, ly_lo, ly_w, lc_lo, lc_w, lx, cx, keep, spans,
                   fill, eps, strength, blur, lee, offset, gains, y_out, u_out, v_out):  # pragma: no cover
    h, w = y_in.shape
    hl = luma_maps.shape[1]
    one, zero, half = np.float32(1.0), np.float32(0.0), np.float32(0.5)
    quarter = np.float32(0.25)
    y_scale, c_scale = np.float32(1.0 / 219.0), np.float32(1.0 / 224.0)
    cr_r, cb_g, cr_g, cb_b = np.float32(CR_R), np.float32(CB_G), np.float32(CR_G), np.float32(CB_B)
    eps = np.float32(eps)
    beta = np.float32(offset)
    lift = one / (one + beta)
    use_pow = strength != one
    use_keep = keep.shape[0] == h
    use_fill = fill.shape[0] == 4
    use_lee = lee > zero
    use_blur = blur != zero or use_lee
    # What the chroma's mean guide weighs the guide row by: the row is B (blended in by blur), or
    # with the Lee step the whole guide.
    weight = one if use_lee else blur
    top = gains.shape[0] - 1  # the chroma curve's last knot (-1: none)
    # Block rows per work item: they share one set of scratch rows, and the map rows they read
    # are interpolated along x once per item. render_plan, one thread, 20 real frames, against
    # the maps interpolated along x by OpenCV beforehand: 1080p 6.65 against 7.50-7.55 CPU-ms,
    # 4K 22.7 against 27.1, 720p level (3.19 against 3.15); with 8 block rows 7.36, with 16 6.85-6.94.
    rows = 2 * ROW_CHUNK
    for c in prange(-(-(h // 2) // rows)):
        maps = np.empty((8, w // 2), dtype=np.float32)
        dcb = np.empty(w // 2, dtype=np.float32)
        dcr = np.empty(w // 2, dtype=np.float32)
        bterm = np.empty(w, dtype=np.float32)  # per luma column (each block's value twice)
        cmax = np.empty(w, dtype=np.float32)
        blurred = np.empty((2, w), dtype=np.float32)  # read only where written (use_blur)
        # The Lee step's source rows G, G^2, a ring keyed by row (each made once per work item,
        # over the columns of all its rows' spans), and its column blurs.
        lee_g = np.empty((4, w), dtype=np.float32)
        lee_sq = np.empty((4, w), dtype=np.float32)
        lee_row = np.full(4, -9, dtype=np.int64)
        lee_m = np.empty(w + 2, dtype=np.float32)
        lee_s = np.empty(w + 2, dtype=np.float32)
        inv = np.empty((2, w), dtype=np.float32)  # read only where written ([wa, wb))
        p = np.empty(w, dtype=np.float32)
        q = np.empty(w, dtype=np.float32)
        lc = np.empty(w, dtype=np.float32)
        r = np.empty(w, dtype=np.float32)
        s = np.empty(w, dtype=np.float32)
        cg = np.empty(w // 2, dtype=np.float32)  # each block's chroma gain: the mean of its 1 / S
        j0, j1 = c * rows, min(c * rows + rows, h // 2)
        # The map rows this work item's rows read (the taps rise with the row), along x.
        l_lo, c_lo = ly_lo[2 * j0], lc_lo[j0]
        l_hi, c_hi = min(ly_lo[2 * j1 - 1] + 1, hl - 1), min(lc_lo[j1 - 1] + 1, hl - 1)
        luma_x = np.empty((luma_maps.shape[0], l_hi - l_lo + 1, w), dtype=np.float32)
        chroma_x = np.empty((chroma_maps.shape[0], c_hi - c_lo + 1, w // 2), dtype=np.float32)
        _maps_along_x(luma_maps, l_lo, l_hi, lx[0], lx[1], lx[2], luma_x)
        _maps_along_x(chroma_maps, c_lo, c_hi, cx[0], cx[1], cx[2], chroma_x)
        g_lo, g_hi = 0, w
        if use_lee and use_keep:
            g_lo, g_hi = w, 0
            for j in range(j0, j1):
                if spans[j, 0] < spans[j, 1]:
                    wa, wb = _aligned(spans[j, 0], spans[j, 1], w)
                    g_lo, g_hi = min(g_lo, wa - 1), max(g_hi, wb + 1)
            g_lo, g_hi = max(g_lo, 0), min(g_hi, w)
        for j in range(j0, j1):
            y0, y1 = 2 * j, 2 * j + 1
            xa, xb, holes = 0, w, False
            if use_keep:
                xa, xb, holes = spans[j, 0], spans[j, 1], spans[j, 6] != 0
                if xa >= xb:
                    _outside(y_in, u_in, v_in, y_out, u_out, v_out, j, spans[j], fill, use_fill)
                    continue
            wa, wb = _aligned(xa, xb, w)
            ca, cb = xa // 2, xb // 2
            uc, ud = np.uint64(wa // 2), np.uint64(wb // 2)
            # Chroma resolution: the block's denoised chroma, its affine term and colour maximum.
            r0, wy = lc_lo[j], lc_w[j]
            r1 = min(r0 + 1, hl - 1)
            r0, r1 = r0 - c_lo, r1 - c_lo
            for k in range(8):
                c0, c1, mk = chroma_x[k, r0], chroma_x[k, r1], maps[k]
                for i in range(uc, ud):
                    mk[i] = (one - wy) * c0[i] + wy * c1[i]
            # The 3x3 binomial blur of Y' on both rows, in levels (the filter's blurred guide), or
            # the whole guide with its Lee step.
            if use_lee:
                for ry in range(y0 - 1, y0 + 3):
                    slot = ry % 4
                    if lee_row[slot] != ry:
                        lee_source_row(y_in, ry, g_lo, g_hi, blur, lee_g[slot], lee_sq[slot])
                        lee_row[slot] = ry
                for t in range(2):
                    ka, kb, kc = (y0 - 1 + t) % 4, (y0 + t) % 4, (y0 + 1 + t) % 4
                    lee_step_row(lee_g[ka], lee_g[kb], lee_g[kc], lee_sq[ka], lee_sq[kb], lee_sq[kc], wa, wb,
                                 lee, lee_m, lee_s, blurred[t])
            elif use_blur:
                for t in range(2):
                    y = y0 + t
                    binomial3_row(y_in[max(y - 1, 0)], y_in[y], y_in[min(y + 1, h - 1)], wa, wb, blurred[t])
            # A block's two columns as unsigned ``e`` and ``e + u1`` of the same row: ``e + 1`` would
            # be an int64 in numba, whose negative-index check keeps a loop scalar, and a view shifted
            # by one hides the stride-2 pair from LLVM's interleaved loads (measured: the kernel 8.4
            # -> 6.3 CPU-ms a 1080p frame, one thread, output byte-identical).
            ya, yb, ur, vr = y_in[y0], y_in[y1], u_in[j], v_in[j]
            ba, bb = blurred[0], blurred[1]
            u1 = np.uint64(1)
            for i in range(uc, ud):
                e = i + i
                e1 = e + u1
                ybar = (np.float32(ya[e]) + np.float32(ya[e1])
                        + np.float32(yb[e]) + np.float32(yb[e1])) * quarter
                if use_blur:  # the block's mean guide: Ybar + blur (Bbar - Ybar), or its row's mean
                    ybar += weight * ((ba[e] + ba[e1] + bb[e] + bb[e1]) * quarter - ybar)
                ybar = (ybar - np.float32(16.0)) * y_scale
                cbn = (np.float32(ur[i]) - np.float32(128.0)) * c_scale
                crn = (np.float32(vr[i]) - np.float32(128.0)) * c_scale
                d_cb = maps[0, i] * cbn + maps[1, i] * ybar + maps[2, i]
                d_cr = maps[0, i] * crn + maps[3, i] * ybar + maps[4, i]
                dcb[i], dcr[i] = d_cb, d_cr
                bt = maps[5, i] * d_cb + maps[6, i] * d_cr + maps[7, i]
                cm = max(cr_r * d_cr, max(-cb_g * d_cb - cr_g * d_cr, cb_b * d_cb))
                bterm[e], bterm[e1] = bt, bt
                cmax[e], cmax[e1] = cm, cm
            # Luma resolution, both rows of the block row: three maps interpolated per row.
            # Unsigned bounds and 1-D row views: numba then drops its negative-index checks, whose
            # branches would stop these loops from vectorising.
            ua, ub = np.uint64(wa), np.uint64(wb)
            for t in range(2):
                y = y0 + t
                s0, sw = ly_lo[y], ly_w[y]
                s1 = min(s0 + 1, hl - 1)
                s0, s1 = s0 - l_lo, s1 - l_lo
                p0, p1 = luma_x[0, s0], luma_x[0, s1]
                q0, q1 = luma_x[1, s0], luma_x[1, s1]
                l0, l1 = luma_x[2, s0], luma_x[2, s1]
                row_in, row_out, row_inv, row_b = y_in[y], y_out[y], inv[t], blurred[t]
                for x in range(ua, ub):
                    p[x] = (one - sw) * p0[x] + sw * p1[x]
                    q[x] = (one - sw) * q0[x] + sw * q1[x]
                    lc[x] = (one - sw) * l0[x] + sw * l1[x]
                if use_blur:  # the guide's blurred part: Q + R Bn
                    r0, r1 = luma_x[3, s0], luma_x[3, s1]
                    for x in range(ua, ub):
                        r[x] = (one - sw) * r0[x] + sw * r1[x]
                    for x in range(ua, ub):
                        q[x] += r[x] * ((row_b[x] - np.float32(16.0)) * y_scale)
                # Short loops, each over few arrays: LLVM vectorises them (one long loop over all
                # of them stays scalar, measured 3x slower).
                for x in range(ua, ub):
                    p[x] = p[x] * ((np.float32(row_in[x]) - np.float32(16.0)) * y_scale) + q[x]  # D_Y
                for x in range(ua, ub):
                    q[x] = lc[x] * p[x] + bterm[x]  # the logit
                for x in range(ua, ub):
                    s[x] = sigmoid(q[x])
                for x in range(ua, ub):
                    m = (min(max(p[x] + cmax[x], zero), one) + beta) * lift
                    s[x] = max(m + (one - m) * s[x], eps)
                if use_pow:  # a separate loop: the powf call would keep the common one scalar
                    for x in range(ua, ub):
                        s[x] = s[x] ** strength
                for x in range(ua, ub):  # one division a pixel: the quotient is times its 1 / S
                    g = one / s[x]
                    v = np.float32(16.0) + np.float32(219.0) * ((p[x] + beta) * g - beta) + half
                    row_out[x] = np.uint8(min(max(v, zero), np.float32(255.0)))
                    row_inv[x] = g
                if use_keep:  # the row's kept pixels before and after its own span count S = 1
                    ra, rb = spans[j, 2 + 2 * t], spans[j, 3 + 2 * t]
                    row_inv[ua:min(ra, wb)] = one
                    row_inv[rb:ub] = one
                if holes:  # kept pixels inside the span (a view that is not convex)
                    row_keep = keep[y]
                    for x in range(np.uint64(xa), np.uint64(xb)):
                        if row_keep[x]:
                            if use_fill:
                                _border_luma(row_in, row_out, x, x + u1, fill)
                            else:
                                row_out[x] = row_in[x]
                            row_inv[x] = one
            i0, i1, uo, vo = inv[0], inv[1], u_out[j], v_out[j]
            for i in range(uc, ud):
                e = i + i
                e1 = e + u1
                cg[i] = (i0[e] + i0[e1] + i1[e] + i1[e1]) * quarter
            if top > 0:  # the chroma curve at each block's S, the harmonic mean of its four (s and
                # r, the luma rows' scratch, are free again)
                for i in range(uc, ud):
                    s[i] = one / cg[i]
                chroma_curve(s, gains, uc, ud, r)
                for i in range(uc, ud):
                    cg[i] *= r[i]
            for i in range(uc, ud):
                g = cg[i]
                cu = np.float32(128.0) + np.float32(224.0) * dcb[i] * g + half
                cv = np.float32(128.0) + np.float32(224.0) * dcr[i] * g + half
                uo[i] = np.uint8(min(max(cu, zero), np.float32(255.0)))
                vo[i] = np.uint8(min(max(cv, zero), np.float32(255.0)))
            if holes:  # a block whose four pixels are kept keeps its chroma
                k0, k1 = keep[y0], keep[y1]
                for i in range(np.uint64(ca), np.uint64(cb)):
                    e = i + i
                    e1 = e + u1
                    if k0[e] & k0[e1] & k1[e] & k1[e1]:
                        if use_fill:
                            _border_chroma(ya, yb, ur, vr, uo, vo, i, i + u1, fill)
                        else:
                            uo[i], vo[i] = ur[i], vr[i]
            if use_keep:
                _outside(y_in, u_in, v_in, y_out, u_out, v_out, j, spans[j], fill, use_fill)


@njit(**JIT_OPTIONS)
def _outside(y_in, u_in, v_in, y_out, u_out, v_out, j, span, fill, use_fill):  # pragma: no cover - compiled
    """Block row ``j`` outside its view (``span``: its :func:`view_spans` row): each row's luma
    before and after the row's own span, the chroma before and after the block row's; the
    input, its noise flattened with a fill (:mod:`endolight.border`) when given."""
    y0, y1 = 2 * j, 2 * j + 1
    w = y_in.shape[1]
    xa, xb = span[0], span[1]
    for t in range(2):
        ra, rb = span[2 + 2 * t], span[3 + 2 * t]
        if use_fill:
            _border_luma(y_in[y0 + t], y_out[y0 + t], 0, min(ra, rb), fill)
            _border_luma(y_in[y0 + t], y_out[y0 + t], rb, w, fill)
        else:
            y_out[y0 + t, :ra] = y_in[y0 + t, :ra]
            y_out[y0 + t, rb:] = y_in[y0 + t, rb:]
    if use_fill:
        xl = min(xa, xb)
        for a, b in ((0, xl // 2), (xb // 2, w // 2)):
            _border_chroma(y_in[y0], y_in[y1], u_in[j], v_in[j], u_out[j], v_out[j], a, b, fill)
    else:
        u_out[j, :xa // 2] = u_in[j, :xa // 2]
        u_out[j, xb // 2:] = u_in[j, xb // 2:]
        v_out[j, :xa // 2] = v_in[j, :xa // 2]
        v_out[j, xb // 2:] = v_in[j, xb // 2:]


# This and the guided filter's kernels run on the calling thread: on maps of 1/8 (1/4) of a
# frame, waking numba's other thread costs more than it saves while the decoder and encoder hold
# the cores (measured: `endolight video` at 1080p 19.6-20.0 -> 18.4-18.9 ms a frame, 37 -> 35
# CPU-ms; scripts/video_ratio.py).
@njit(**JIT_OPTIONS)
def _slice_kernel(img, cells, ccm, ccm_bias, shifts, slopes, mix, mix_bias, y_lo, y_w, x_lo, x_w,
                  out):  # pragma: no cover - compiled
    h, w = img.shape[1], img.shape[2]
    gh, gw, depth, nc = cells.shape
    one, zero, half = np.float32(1.0), np.float32(0.0), np.float32(0.5)
    fdepth, dmax = np.float32(depth), np.float32(depth - 1)
    for y in range(h):
        r0, wy = y_lo[y], y_w[y]
        r1 = min(r0 + 1, gh - 1)
        row = np.empty((gw, depth, nc), dtype=np.float32)  # the grid interpolated to this row
        for gx in range(gw):
            for d in range(depth):
                for c in range(nc):
                    row[gx, d, c] = (one - wy) * cells[r0, gx, d, c] + wy * cells[r1, gx, d, c]
        g = np.empty(w, dtype=np.float32)
        guide_row(img[:, y], ccm, ccm_bias, shifts, slopes, mix, mix_bias, 0, w, g)
        for x in range(w):
            z = min(max(min(max(g[x], zero), one) * fdepth - half, zero), dmax)
            z0 = min(int(z), max(depth - 2, 0))
            z1 = min(z0 + 1, depth - 1)
            wz, wx = z - np.float32(z0), x_w[x]
            x0 = x_lo[x]
            x1 = min(x0 + 1, gw - 1)
            for c in range(nc):
                left = (one - wz) * row[x0, z0, c] + wz * row[x0, z1, c]
                right = (one - wz) * row[x1, z0, c] + wz * row[x1, z1, c]
                out[c, y, x] = (one - wx) * left + wx * right


def slice_lowres(image: np.ndarray, cells: np.ndarray, guide: Any) -> np.ndarray:
    """The bilateral grid sliced at every pixel of a small frame, with its guide map.

    Args:
        image: ``(3, h, w)`` float32 RGB in [0, 1].
        cells: ``(Gh, Gw, D, C)`` float32 grid, a cell's coefficients adjacent.
        guide: the guide map's weights (``endolight.kernels.fused.GuideParams``).

    Returns:
        ``(C, h, w)`` float32, as ``slice_grid(grid, GuideMap(image))`` (HDRNet's half-pixel,
        border-clamped convention).
    """
    _, h, w = image.shape
    gh, gw = cells.shape[:2]
    out = np.empty((cells.shape[3], h, w), dtype=np.float32)
    y_lo, y_w = axis_taps(h, gh)
    x_lo, x_w = axis_taps(w, gw)
    image = np.ascontiguousarray(image, dtype=np.float32)
    _slice_kernel(image, np.ascontiguousarray(cells, dtype=np.float32), guide.ccm, guide.ccm_bias,
                  guide.shifts, guide.slopes, guide.mix, guide.mix_bias, y_lo, y_w, x_lo, x_w, out)
    return out


def box_mean_np(src: np.ndarray, radius: int) -> np.ndarray:
    """Mean of each pixel's ``(2 radius + 1)^2`` box over the pixels inside the image, per
    channel of ``src`` (C, h, w) float32: ``endolight.model.denoise.box_mean`` (OpenCV's running
    sums, normalised by the in-image count)."""
    return _box_means(np.ascontiguousarray(src.transpose(1, 2, 0), dtype=np.float32), radius)


def _box_means(src: np.ndarray, radius: int) -> np.ndarray:
    """:func:`box_mean_np` of pixel-interleaved ``(h, w, C)`` float32, returned as ``(C, h, w)``."""
    h, w, c = src.shape
    out = np.empty((c, h, w), np.float32)
    _scale(_box_sums(src, radius), _inverse_counts(h, w, 2 * radius + 1), out)
    return out


def _box_sums(src: np.ndarray, radius: int) -> np.ndarray:
    """``(h, w, C)`` sums over each pixel's box (zero outside the image), all channels in one
    OpenCV call (faster than one a channel)."""
    k = 2 * radius + 1
    sums = cv2.boxFilter(src, -1, (k, k), normalize=False, borderType=cv2.BORDER_CONSTANT)
    return sums.reshape(src.shape)  # OpenCV drops a trailing axis of one channel


@lru_cache(maxsize=8)
def _inverse_counts(h: int, w: int, k: int) -> np.ndarray:
    """``(h, w)``: 1 / the number of a ``k x k`` box's pixels inside an ``h x w`` image."""
    ones = np.ones((h, w), np.float32)
    return np.float32(1.0) / cv2.boxFilter(ones, -1, (k, k), normalize=False, borderType=cv2.BORDER_CONSTANT)


@njit(**JIT_OPTIONS)
def _scale(sums, inv, out):  # pragma: no cover - compiled
    """``out[c, y, x] = sums[y, x, c] * inv[y, x]``: box sums to means, back to planes."""
    for y in range(sums.shape[0]):
        for x in range(sums.shape[1]):
            for c in range(sums.shape[2]):
                out[c, y, x] = sums[y, x, c] * inv[y, x]


@njit(**JIT_OPTIONS)
def _guided_stats(small, out):  # pragma: no cover - compiled
    """``out`` (h, w, 8): luma Y, R, G, B, Y^2, Y R, Y G, Y B of ``small`` (3, h, w)."""
    l0, l1, l2 = np.float32(LUMA[0]), np.float32(LUMA[1]), np.float32(LUMA[2])
    for y in range(small.shape[1]):
        for x in range(small.shape[2]):
            r, g, b = small[0, y, x], small[1, y, x], small[2, y, x]
            v = l0 * r + l1 * g + l2 * b
            o = out[y, x]
            o[0], o[1], o[2], o[3] = v, r, g, b
            o[4], o[5], o[6], o[7] = v * v, v * r, v * g, v * b


@njit(**JIT_OPTIONS)
def _guided_ab(sums, inv, eps, out):  # pragma: no cover - compiled
    """``out`` (h, w, 6): ``a_c = cov(Y, c) / (var Y + eps)``, ``b_c = mean c - a_c mean Y``, from
    the box sums of :func:`_guided_stats` and the inverse counts."""
    zero = np.float32(0.0)
    for y in range(sums.shape[0]):
        for x in range(sums.shape[1]):
            o, n = out[y, x], inv[y, x]
            my = sums[y, x, 0] * n
            inv_var = np.float32(1.0) / (max(sums[y, x, 4] * n - my * my, zero) + eps)
            for c in range(3):
                mc = sums[y, x, 1 + c] * n
                a = (sums[y, x, 5 + c] * n - my * mc) * inv_var
                o[c] = a
                o[3 + c] = mc - a * my


def guided_fit(small: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Guided-filter coefficients of a shrunk frame, every channel guided by its luma: the same
    as ``endolight.model.denoise.guided_coefficients`` (its PyTorch reference; tested equal),
    without PyTorch's per-op overhead at this small size.

    Args:
        small: ``(3, h, w)`` float32 RGB in [0, 1].
        radius: box radius. eps: the regulariser (``inf``: a plain box blur).

    Returns:
        ``(6, h, w)`` float32: ``a_r, a_g, a_b, b_r, b_g, b_b``.
    """
    small = np.ascontiguousarray(small, dtype=np.float32)
    h, w = small.shape[1:]
    stats = np.empty((h, w, 8), np.float32)
    _guided_stats(small, stats)
    coeffs = np.empty((h, w, 6), np.float32)
    _guided_ab(_box_sums(stats, radius), _inverse_counts(h, w, 2 * radius + 1), np.float32(eps), coeffs)
    return _box_means(coeffs, radius)


_NO_KEEP = np.zeros((0, 0), dtype=np.bool_)
_NO_FILL = np.zeros(0, dtype=np.int32)
_NO_SPANS = np.zeros((0, SPAN_FIELDS), dtype=np.int64)


@lru_cache(maxsize=32)
def x_taps(n: int, cells: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How :func:`_maps_along_x` interpolates ``cells`` map columns to ``n`` pixels:
    ``axis_taps(n, cells)`` and one cell's weights when ``n`` is an even multiple of ``cells``
    (else empty). Cached; do not modify."""
    lo, weight = axis_taps(n, cells)
    scale = n // cells
    even = cells >= 2 and n == scale * cells and scale % 2 == 0
    phase = weight[scale // 2: scale // 2 + scale].copy() if even else np.zeros(0, np.float32)
    return lo, weight, phase


def render_planes(
    y: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    luma_maps: np.ndarray,
    chroma_maps: np.ndarray,
    eps: float,
    strength: float = 1.0,
    keep: np.ndarray | None = None,
    fill: np.ndarray | None = None,
    out: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    blur: float = 0.0,
    offset: float = 0.0,
    spans: np.ndarray | None = None,
    gains: np.ndarray | None = None,
    lee: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The full-res stage on 4:2:0 planes, uint8 in and out.

    Args:
        y: ``(H, W)`` uint8 Y′ (limited range), ``H`` and ``W`` even.
        u, v: ``(H / 2, W / 2)`` uint8 Cb, Cr.
        luma_maps: ``(4, h, w)`` float32: ``P, Q, L, R`` at low resolution.
        chroma_maps: ``(8, h, w)`` float32 (see ``N_CHROMA_MAPS``), on the same grid (each is
            interpolated bilinearly to the plane that reads it, as ``axis_taps`` on each axis).
        eps: the illumination's floor. strength: ``k`` in ``S ** k``.
        keep: optional ``(H, W)`` bool mask of pixels left as they are (the black border); a
            2x2 block keeps its chroma when all four of its pixels are kept.
        fill: optional ``(4,)`` int32 (``endolight.border.border_fill_planes``): ``keep``
            pixels below its Y′ threshold take its Y′, and kept blocks whose four pixels do its
            Cb, Cr (the border's noise flattened).
        out: optional output planes to write into.
        blur: the denoiser's guide is ``Y + blur * (binomial3x3(Y) - Y)``
            (``ModelConfig.denoise_blur``; the luma and the 2x2 means the chroma is guided by).
        offset: the division's ``beta`` (``ModelConfig.black_offset``).
        spans: ``keep``'s :func:`view_spans` when the caller has them (made here otherwise).
        gains: the chroma curve's ``(K,)`` knots (``DeepUPE.chroma_gains``): each block's
            chroma gain ``mean(1 / S)`` times the curve at ``S = 1 / mean(1 / S)``; ``None``: none.
        lee: the guide's Lee step, a variance of the luma in [0, 1] (``ModelConfig.denoise_lee``;
            0: none); the maps then weigh the guide row by 1 (``ModelConfig.guide_weight``).

    Returns:
        the enhanced ``(Y′, Cb, Cr)`` planes.
    """
    h, w = y.shape
    if h % 2 or w % 2 or u.shape != (h // 2, w // 2) or v.shape != u.shape:
        raise ValueError(f"need even-sized 4:2:0 planes, got Y {y.shape}, Cb {u.shape}, Cr {v.shape}")
    if luma_maps.ndim != 3 or luma_maps.shape[0] != N_LUMA_MAPS:
        raise ValueError(f"luma maps must be ({N_LUMA_MAPS}, h, w), got {luma_maps.shape}")
    want = (N_CHROMA_MAPS, *luma_maps.shape[1:])
    if chroma_maps.shape != want:
        raise ValueError(f"chroma maps must be {want}, got {chroma_maps.shape}")
    if keep is None:
        keep, spans = _NO_KEEP, _NO_SPANS
    elif keep.shape != (h, w):
        raise ValueError(f"keep mask must be {(h, w)}, got {keep.shape}")
    elif spans is None:
        spans = view_spans(keep)
    elif spans.shape != (h // 2, SPAN_FIELDS):
        raise ValueError(f"spans must be ({h // 2}, {SPAN_FIELDS}), got {spans.shape}")
    if out is None:
        out = (np.empty_like(y), np.empty_like(u), np.empty_like(v))
    fill = _NO_FILL if fill is None else np.asarray(fill, dtype=np.int32)
    hl, wl = luma_maps.shape[1:]
    with numba.parallel_chunksize(1):  # one work item: one of the kernel's blocks of rows
        _planar_kernel(y, u, v, np.ascontiguousarray(luma_maps, dtype=np.float32),
                       np.ascontiguousarray(chroma_maps, dtype=np.float32), *axis_taps(h, hl),
                       *axis_taps(h // 2, hl), x_taps(w, wl), x_taps(w // 2, wl),
                       np.ascontiguousarray(keep, dtype=np.bool_),
                       np.ascontiguousarray(spans, dtype=np.int64), fill,
                       np.float32(eps), np.float32(strength), np.float32(blur),
                       np.float32(lee * 219.0**2), np.float32(offset),  # Y' levels squared
                       _NO_GAINS if gains is None else np.ascontiguousarray(gains, dtype=np.float32), *out)
    return out
