"""The full-resolution stage from low-resolution maps: the planar video path's design in RGB,
as plain PyTorch operations (what the ONNX export runs in real time on a CPU).

:meth:`DeepUPE.render` evaluates the guide and slices the grid at every pixel: dozens of
operations per pixel, which ONNX Runtime executes one full-resolution pass each (about a second
per 1080p frame on 2 cores). Everything it slices is smooth except through the guide, so here
the guide, the slice and the guided filter's coefficients are evaluated on a copy shrunk by
``2 * cfg.denoise_factor`` (1/8 of each side: the planar path's ``COARSEN``), and become eleven
maps. At full resolution a pixel only gets the maps bilinearly upsampled and

    D = A * I + B * Y + C                  (the learned denoising: A = 1 - lam, B = lam a, C = lam b)
    S = max(m + (1 - m) * sigmoid(L . D + L0), EPS) ** k,   m = max_c D_c
    R = D / S

The affine row ``L`` is applied to each full-resolution pixel, so edges stay sharp; what is
interpolated is the choice of row (the guide's depth). Measured against ``render`` (the shipped
weights, ``scripts/onnx_speed.py`` and ``tests/test_export.py``): 47 dB PSNR on real 1080p frames;
on small frames the 1/8 maps are coarse where the view meets its black border (32-39 dB on
240-512 px frames), where the exact graph costs little anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from endolight.io.yuv import CB_B, CB_G, CR_G, CR_R, TO_YCC  # numeric constants only
from endolight.kernels.planar import planar_terms
from endolight.model.denoise import LUMA, binomial3, filter_guide, half_mean, shrink, upsample
from endolight.model.slicing import EPS, chroma_gain, grey_grid, offset_floor, slice_grid_gather

# The maps are made at 1 / (COARSEN * cfg.denoise_factor) of each side. Measured at 1080p in
# ONNX Runtime (RGB graph): 1/4 gives 53.5 dB from render at 158 ms a frame, 1/8 47.2 dB at 121 ms.
COARSEN = 2


def _sliced(model: torch.nn.Module, grid: torch.Tensor, small: torch.Tensor, strength: float
            ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The grey affine row ``(B, 4, h', w')`` sliced on the 1/8 copy, and when the model denoises,
    its strength ``lam`` ``(B, 1, h', w')`` and guided-filter coefficients ``(B, 6, h', w')``."""
    co = slice_grid_gather(grey_grid(grid), model.guide.lookup(shrink(small, COARSEN)))
    if not model.cfg.denoise:
        return co[:, :4], None, None
    lam = torch.sigmoid(co[:, 4:5]) * min(strength, 1.0)
    return co[:, :4], lam, shrink(model.fit_denoiser(small), COARSEN)


def rgb_maps(model: torch.nn.Module, half: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
    """The ``(B, 11, h', w')`` maps of an RGB frame from its half-size copy.

    Args:
        model: a grey-illumination :class:`~endolight.model.DeepUPE`.
        half: ``(B, 3, H/2, W/2)`` the frame halved, float in [0, 1]. The network's input and
            the denoiser's copy are shrunk from it (from the 1/4 copy instead, the network's
            input measured 17 dB further from the exact graph on a 512 px larynx frame:
            upsampled to 256, it is blurred).
        strength: ``k``; the denoising strength is scaled by ``min(k, 1)``.
    """
    grid = model.coeffs(model.lowres(half))
    affine, lam, fit = _sliced(model, grid, shrink(half, model.cfg.denoise_factor // 2), strength)
    if lam is None or fit is None:
        a = torch.ones_like(affine[:, :1])
        return torch.cat([a, torch.zeros_like(affine[:, :3]).repeat(1, 2, 1, 1), affine], dim=1)
    return torch.cat([1 - lam, lam * fit[:, :3], lam * fit[:, 3:], affine], dim=1)


def render_maps(maps: torch.Tensor, planes: Sequence[torch.Tensor], strength: float = 1.0,
                blur: float = 0.0, offset: float = 0.0, gains: torch.Tensor | None = None,
                lee: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``255 R = 255 ((D + beta) / S - beta)`` from a frame's :func:`rgb_maps`, one plane per colour.

    Args:
        maps: ``(B, 11, h', w')``.
        planes: R, G, B, each ``(B, 1, H, W)`` float in 8-bit levels (0-255).
        blur: the denoiser's guide blur (``ModelConfig.denoise_blur``).
        offset: the division's beta (``ModelConfig.black_offset``).
        gains: the chroma curve's knots (``DeepUPE.chroma_gains``; ``None``: none).
        lee: the guide's Lee step, a luma variance in [0, 1] (``ModelConfig.denoise_lee``).

    Returns:
        R, G, B of ``255 R`` in [0, 255] (``D <= max_c D_c <= S``), not rounded.
    """
    # Written for ONNX Runtime, which runs each operation as its own full-resolution pass and
    # whose layout optimiser turns a transposed frame into broadcasts along a last axis of 3
    # (several times slower): here every full-resolution tensor is one plane, each map is
    # upsampled on its own (no full-resolution split), the 1/255 scalings are folded into the
    # low-res maps, and no clamp is needed at the end (D / S <= 1 by construction).
    h, w = planes[0].shape[-2:]
    scale = torch.tensor([1 / 255] * 4 + [1.0] * 7, dtype=maps.dtype, device=maps.device)
    up = [upsample(m, h, w) for m in (maps * scale[:, None, None]).split(1, dim=1)]
    y = filter_guide(LUMA[0] * planes[0] + LUMA[1] * planes[1] + LUMA[2] * planes[2], blur, lee * 255**2)
    d = [(up[0] * x + up[1 + k] * y + up[4 + k]).clamp(0.0, 1.0) for k, x in enumerate(planes)]
    logit = up[7] * d[0] + up[8] * d[1] + up[9] * d[2] + up[10]
    m = offset_floor(torch.maximum(torch.maximum(d[0], d[1]), d[2]), offset)
    s = torch.clamp(m + (1 - m) * torch.sigmoid(logit), min=EPS)
    if strength != 1.0:
        s = s**strength
    gain = 255 / s
    # 255 beta (1 / S - 1) for each channel: the offset space's grey lift
    lift = offset * (gain - 255) if offset else None
    if gains is not None:  # the luma's quotient, plus each channel's chroma times sigma(S) / S
        yd = LUMA[0] * d[0] + LUMA[1] * d[1] + LUMA[2] * d[2]
        base = yd * gain if lift is None else yd * gain + lift
        cg = chroma_gain(s, gains) * gain
        return tuple((base + cg * (x - yd)).clamp(0.0, 255.0) for x in d)
    if lift is not None:
        return d[0] * gain + lift, d[1] * gain + lift, d[2] * gain + lift
    return d[0] * gain, d[1] * gain, d[2] * gain


# Y′CbCr 4:2:0 (I420) frames, as video decoders deliver them: the planar video path's maps
# (endolight.planar, endolight.kernels.planar) as operations on planes. Only the luma plane is
# touched at full resolution: three maps and about twenty operations per pixel; the chroma
# works at a quarter.

def ycc_to_rgb(ycc: torch.Tensor) -> torch.Tensor:
    """``(B, 3, h, w)`` Y′, Cb, Cr in 8-bit levels -> RGB in [0, 1] (BT.601 limited range, as
    :func:`endolight.io.yuv.ycc_to_rgb`)."""
    yn = (ycc[:, 0:1] - 16) / 219
    cb, cr = (ycc[:, 1:2] - 128) / 224, (ycc[:, 2:3] - 128) / 224
    return torch.cat([yn + CR_R * cr, yn - CB_G * cb - CR_G * cr, yn + CB_B * cb], dim=1).clamp(0.0, 1.0)


def _to_ycc(rgb: torch.Tensor) -> torch.Tensor:
    """``(B, 3, h, w)`` linear combinations of R, G, B -> the same of Yn, Cbn, Crn (``TO_YCC``)."""
    r, g, b = rgb[:, 0:1], rgb[:, 1:2], rgb[:, 2:3]
    return torch.cat([float(m[0]) * r + float(m[1]) * g + float(m[2]) * b for m in TO_YCC], dim=1)


def i420_maps(model: torch.nn.Module, y2: torch.Tensor, uv: torch.Tensor,
              strength: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Luma maps ``(B, 4, h', w')`` and chroma maps ``(B, 8, h', w')`` of an I420 frame, in
    8-bit levels of the planes they multiply (the ``(Y - 16) / 219``, ``(C - 128) / 224``
    normalisations folded in).

    Args:
        model: a grey-illumination :class:`~endolight.model.DeepUPE`.
        y2: ``(B, 1, H/2, W/2)`` the luma averaged over 2x2 blocks (8-bit levels, float).
        uv: ``(B, 2, H/2, W/2)`` Cb, Cr (8-bit levels, float).
        strength: ``k``; the denoising strength is scaled by ``min(k, 1)``.
    """
    half = torch.cat([y2, uv], dim=1)
    small = ycc_to_rgb(shrink(half, model.cfg.denoise_factor // 2))
    grid = model.coeffs(ycc_to_rgb(model.lowres(half)))
    affine, lam, fit = _sliced(model, grid, small, strength)
    if lam is None or fit is None:
        lam = torch.zeros_like(affine[:, :1])
        a = b = torch.zeros_like(affine[:, :3])
    else:
        a, b = _to_ycc(fit[:, :3]), _to_ycc(fit[:, 3:])
    split = (t.split(1, dim=1) for t in (a, b, affine))
    luma, chroma = in_levels(*planar_terms(lam, *split, model.cfg.guide_weight))
    return torch.cat(luma, dim=1), torch.cat(chroma, dim=1)


def in_levels(luma: Sequence[Any], chroma: Sequence[Any]) -> tuple[list[Any], list[Any]]:
    """:func:`planar_terms`' maps for planes in 8-bit levels: the ``(Y - 16) / 219`` and
    ``(C - 128) / 224`` normalisations folded into them (no full-resolution pass left for it)."""
    p, q, lc, r = luma
    keep, a_cb, b_cb, a_cr, b_cr = chroma[:5]
    return ([p / 219, q - (p + r) * (16 / 219), lc, r / 219],
            [keep / 224, a_cb / 219, b_cb - a_cb * (16 / 219) - keep * (128 / 224),
             a_cr / 219, b_cr - a_cr * (16 / 219) - keep * (128 / 224), *chroma[5:]])


def render_i420(luma: torch.Tensor, chroma: torch.Tensor, y: torch.Tensor, y2: torch.Tensor,
                uv: torch.Tensor, strength: float = 1.0, blur: float = 0.0, offset: float = 0.0,
                gains: torch.Tensor | None = None, lee: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The enhanced planes from :func:`i420_maps`: ``(B, 1, H, W)`` luma and ``(B, 2, H/2, W/2)``
    chroma, rounded 8-bit levels (float; cast them). ``blur``: the denoiser's guide blur
    (``ModelConfig.denoise_blur``), as the planar kernel applies it; ``offset``: the division's
    beta (``ModelConfig.black_offset``; grey, so only the luma carries it); ``gains``: the chroma
    curve's knots (``DeepUPE.chroma_gains``), applied at each block's ``S = 1 / mean(1 / S)``;
    ``lee``: the guide's Lee step (``ModelConfig.denoise_lee``), whose whole guide is then the
    fourth map's row."""
    h, w = y.shape[-2:]
    p, q, lc = (upsample(m, h, w) for m in luma[:, :3].split(1, dim=1))
    c = [upsample(m, h // 2, w // 2) for m in chroma.split(1, dim=1)]
    d_y = p * y + q
    if blur != 0.0 or lee:  # the guide's blurred part (the fourth map), and the chroma's mean guide
        b = filter_guide(y, blur, lee * 219**2) if lee else binomial3(y)
        d_y = d_y + upsample(luma[:, 3:4], h, w) * b
        y2 = y2 + (1.0 if lee else blur) * (half_mean(b) - y2)
    d_cb = c[0] * uv[:, 0:1] + c[1] * y2 + c[2]
    d_cr = c[0] * uv[:, 1:2] + c[3] * y2 + c[4]
    # Per 2x2 block: the affine row's chroma part and the largest of R, G, B minus luma.
    bterm = c[5] * d_cb + c[6] * d_cr + c[7]
    cmax = torch.maximum(torch.maximum(CR_R * d_cr, -CB_G * d_cb - CR_G * d_cr), CB_B * d_cb)
    logit = lc * d_y + F.interpolate(bterm, scale_factor=2.0, mode="nearest")
    m = offset_floor((d_y + F.interpolate(cmax, scale_factor=2.0, mode="nearest")).clamp(0.0, 1.0), offset)
    s = torch.clamp(m + (1 - m) * torch.sigmoid(logit), min=EPS)
    if strength != 1.0:
        s = s**strength
    gain = 219 / s
    y_out = torch.floor((d_y + offset) * gain + (16.5 - 219 * offset)).clamp(0.0, 255.0)
    # A block's chroma is divided by the mean of its four 1 / S.
    g = half_mean(gain) * (224 / 219)
    if gains is not None:
        g = g * chroma_gain(224 / g, gains)
    uv_out = torch.floor(torch.cat([d_cb, d_cr], dim=1) * g + 128.5).clamp(0.0, 255.0)
    return y_out, uv_out
