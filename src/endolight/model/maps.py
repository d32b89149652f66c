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
on small frames the 1/8 maps are coarse where the view meets its black border (32-45 dB on
240-512 px frames), where the exact graph costs little anyway.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from endolight.model.denoise import LUMA, shrink, upsample
from endolight.model.slicing import EPS, grey_grid, slice_grid_gather

# The maps are made at 1 / (COARSEN * cfg.denoise_factor) of each side. Measured at 1080p in
# ONNX Runtime: 1/4 gives 53.5 dB from render at 158 ms a frame, 1/8 47.2 dB at 121 ms.
COARSEN = 2


def lowres_maps(model: torch.nn.Module, grid: torch.Tensor, small: torch.Tensor,
                strength: float = 1.0) -> torch.Tensor:
    """The ``(B, 11, h', w')`` maps of a frame from its grid and its shrunk copy.

    Args:
        model: a grey-illumination :class:`~endolight.model.DeepUPE`.
        grid: its bilateral grid ``(B, C, D, Gh, Gw)`` for the frame.
        small: ``(B, 3, h, w)`` the frame shrunk by ``cfg.denoise_factor``, float in [0, 1].
        strength: ``k``; the denoising strength is scaled by ``min(k, 1)``.
    """
    coarse = shrink(small, COARSEN)
    co = slice_grid_gather(grey_grid(grid), model.guide.lookup(coarse))  # (B, 4 [+ 1], h', w')
    affine = co[:, :4]
    if not model.cfg.denoise:
        a = torch.ones_like(affine[:, :1])
        return torch.cat([a, torch.zeros_like(affine[:, :3]).repeat(1, 2, 1, 1), affine], dim=1)
    lam = torch.sigmoid(co[:, 4:5]) * min(strength, 1.0)
    fit = shrink(model.fit_denoiser(small), COARSEN)  # a_rgb, b_rgb
    return torch.cat([1 - lam, lam * fit[:, :3], lam * fit[:, 3:], affine], dim=1)


def render_maps(maps: torch.Tensor, planes: Sequence[torch.Tensor],
                strength: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``255 R = 255 D / S`` from a frame's :func:`lowres_maps`, one plane per colour.

    Args:
        maps: ``(B, 11, h', w')``.
        planes: R, G, B, each ``(B, 1, H, W)`` float in 8-bit levels (0-255).

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
    y = LUMA[0] * planes[0] + LUMA[1] * planes[1] + LUMA[2] * planes[2]
    d = [(up[0] * x + up[1 + k] * y + up[4 + k]).clamp(0.0, 1.0) for k, x in enumerate(planes)]
    logit = up[7] * d[0] + up[8] * d[1] + up[9] * d[2] + up[10]
    m = torch.maximum(torch.maximum(d[0], d[1]), d[2])
    s = torch.clamp(m + (1 - m) * torch.sigmoid(logit), min=EPS)
    if strength != 1.0:
        s = s**strength
    gain = 255 / s
    return d[0] * gain, d[1] * gain, d[2] * gain
