"""Enhancement on the decoder's own Y′CbCr 4:2:0 planes: video without full-resolution RGB.

A decoder delivers Y′ at full resolution and Cb, Cr at a quarter, and the encoder takes the same.
This path never builds the full-res RGB frame: it shrinks the planes to the denoiser's fitting
size (``1 / cfg.denoise_factor``), converts only that small copy to RGB, and there runs
everything that is smooth — the network's input, the guide, the grid slice, the guided filter's
fit, the denoising strength — as low-res maps (:func:`planar_maps`). The maps are interpolated
along x once (OpenCV), and the planar kernel (:mod:`endolight.kernels.planar`) applies them per
pixel: a few operations per luma pixel, fewer per chroma pixel.

What differs from the RGB reference (``DeepUPE.render``): the guide and slice are evaluated on the
low-res frame and interpolated (the affine rows are applied to each full-res pixel, so edges stay
sharp), the denoising strength likewise, and chroma is handled per 2x2 block. The test suite
holds it to the RGB path on real frames (``tests/test_planar.py``). BT.601 limited range, the
convention of the rest of the video path (decoded RGB, the written stream's tag).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from endolight.io.yuv import i420_planes
from endolight.kernels.common import axis_taps
from endolight.kernels.fused import GuideParams
from endolight.kernels.planar import CB_B, CB_G, CR_G, CR_R, render_planes, slice_lowres
from endolight.model import DeepUPE
from endolight.model.denoise import LUMA, box_mean_cv2, lowres_size
from endolight.model.slicing import EPS, grey_grid

# (grid (1, C, D, Gh, Gw), low-res frame (1, 3, h, w)) -> grid, e.g. temporal.GridSmoother
GridFilter = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Weights of Y, Cb, Cr (normalised) in R, G, B: rows Y, Cb, Cr (Cb = (B - Y) / 1.772...).
TO_YCC = np.array([LUMA,
                   [-LUMA[0] / CB_B, -LUMA[1] / CB_B, (1 - LUMA[2]) / CB_B],
                   [(1 - LUMA[0]) / CR_R, -LUMA[1] / CR_R, -LUMA[2] / CR_R]], dtype=np.float32)


def _ycc_to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> torch.Tensor:
    """Float Y′, Cb, Cr planes in 8-bit levels -> ``(1, 3, h, w)`` RGB in [0, 1]."""
    yn, cb, cr = (y - 16) / 219, (cb - 128) / 224, (cr - 128) / 224
    rgb = np.stack([yn + CR_R * cr, yn - CB_G * cb - CR_G * cr, yn + CB_B * cb])
    return torch.from_numpy(np.clip(rgb, 0.0, 1.0))[None]


def small_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """The planes shrunk to ``size = (h, w)`` (area averages) as ``(1, 3, h, w)`` RGB in [0, 1]."""
    h, w = size
    planes = [cv2.resize(p, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) for p in (y, u, v)]
    return _ycc_to_rgb(*planes)


def network_input(y: np.ndarray, u: np.ndarray, v: np.ndarray, side: int) -> torch.Tensor:
    """The network's ``(1, 3, side, side)`` input from the planes, with the same antialiased
    bilinear resize as the RGB path (``Enhancer.grid``): the grid is sensitive to how the
    input was shrunk (an area average instead measured up to 3.7 levels off on larynx frames)."""
    def shrink(p: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(p)[None, None]
        return F.interpolate(t, size=(side, side), mode="bilinear", antialias=True, align_corners=False)[0, 0]

    return _ycc_to_rgb(*(shrink(p).float().numpy() for p in (y, u, v)))


@torch.no_grad()
def planar_maps(model: DeepUPE, guide: GuideParams, grid: torch.Tensor, small: torch.Tensor,
                strength: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """The model's smooth per-pixel quantities on the low-res frame, as the planar kernel's maps.

    Args:
        model: a grey-illumination model.
        guide: its guide map's weights as arrays (``GuideParams.from_module(model.guide)``).
        grid: its bilateral grid ``(1, C, D, Gh, Gw)`` for this frame.
        small: ``(1, 3, h, w)`` RGB frame at ``1 / cfg.denoise_factor`` (:func:`small_rgb`).
        strength: ``k``; the denoising strength is scaled by ``min(k, 1)``.

    Returns:
        ``(3, h, w)`` luma maps ``P, Q, L`` and ``(8, h, w)`` chroma maps (see
        :mod:`endolight.kernels.planar`), float32.
    """
    if model.cfg.illumination != "grey":
        raise ValueError("the planar path needs a grey-illumination model")
    cells = grey_grid(grid)[0].permute(2, 3, 1, 0).numpy()  # (Gh, Gw, D, 4 [+ 1])
    co = torch.from_numpy(slice_lowres(small[0].numpy(), cells, guide))  # (4 [+ 1], h, w)
    ar, ag, ab, a0 = co[0], co[1], co[2], co[3]
    h, w = small.shape[-2:]
    to_ycc = torch.from_numpy(TO_YCC)
    if model.cfg.denoise:
        lam = torch.sigmoid(co[4]) * min(strength, 1.0)
        dn = model.fit_denoiser(small, box=box_mean_cv2)[0]  # a_rgb, b_rgb: (6, h, w)
        a = torch.einsum("ij,jhw->ihw", to_ycc, dn[:3])  # a_Y, a_Cb, a_Cr
        b = torch.einsum("ij,jhw->ihw", to_ycc, dn[3:])
    else:
        lam, a, b = torch.zeros(h, w), torch.zeros(3, h, w), torch.zeros(3, h, w)
    # D_Y = P Yn + Q; logit = L D_Y + (L_cb D_cb + L_cr D_cr + L_0); D_C = (1 - lam) Cn +
    # lam a_C Ybar + lam b_C.
    luma = torch.stack([1 - lam + lam * a[0], lam * b[0], ar + ag + ab])
    chroma = torch.stack([1 - lam, lam * a[1], lam * b[1], lam * a[2], lam * b[2],
                          CB_B * ab - CB_G * ag, CR_R * ar - CR_G * ag, a0])
    return luma.float().numpy(), chroma.float().numpy()


def _along_x(maps: np.ndarray, width: int) -> np.ndarray:
    """``(C, h, w)`` maps linearly interpolated along x to ``(C, h, width)`` (half-pixel
    convention, edges clamped, as the kernels' taps); rows are left as they are."""
    c, h, w = maps.shape
    flat = np.ascontiguousarray(maps).reshape(c * h, w)
    out = cv2.resize(flat, (width, c * h), interpolation=cv2.INTER_LINEAR)
    return out.reshape(c, h, width)


@torch.no_grad()
def enhance_planes(model: DeepUPE, guide: GuideParams, buf: np.ndarray, strength: float = 1.0,
                   keep: np.ndarray | None = None, grid_filter: GridFilter | None = None,
                   out: np.ndarray | None = None) -> np.ndarray:
    """Enhance one ``(3H/2, W)`` uint8 I420 frame; returns the same layout.

    Args:
        model: a grey-illumination model (on the CPU).
        guide: its guide map's weights as arrays.
        strength: ``k`` in ``S ** k``; 0 returns a copy.
        keep: optional ``(H, W)`` bool mask of pixels left as they are (the black border).
        grid_filter: sees the grid before it is used (temporal smoothing).
        out: optional ``(3H/2, W)`` uint8 buffer to write into.
    """
    y, u, v = i420_planes(buf)
    h, w = y.shape
    if strength == 0.0:
        return buf.copy()
    size = lowres_size(h, w, model.cfg.denoise_factor)
    small = small_rgb(y, u, v, size)
    lowres = network_input(y, u, v, model.cfg.lowres)
    grid = model.coeffs(lowres)
    if grid_filter is not None:
        grid = grid_filter(grid, lowres)
    luma, chroma = planar_maps(model, guide, grid, small, strength)
    out = np.empty_like(buf) if out is None else out
    render_planes(y, u, v, _along_x(luma, w), _along_x(chroma, w // 2), axis_taps(h, size[0]),
                  axis_taps(h // 2, size[0]), EPS, strength, keep, out=i420_planes(out))
    return out
