"""Differentiable bilateral-grid slicing and affine application (the PyTorch reference)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-4  # smallest illumination, keeps R = I / S finite on black pixels


def slice_grid(grid: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
    """Trilinearly sample per-pixel coefficients from a bilateral grid.

    HDRNet's half-pixel convention: pixel ``x`` of ``W`` reads grid coordinate
    ``(x + 0.5) / W * Gw - 0.5`` and guide value ``g`` reads depth ``g * D - 0.5``, with
    border clamping. That is exactly ``grid_sample(align_corners=False, padding_mode='border')``.

    Args:
        grid: ``(B, C, D, Gh, Gw)`` coefficients.
        guide: ``(B, 1, H, W)`` in [0, 1].

    Returns:
        ``(B, C, H, W)`` sliced coefficients.
    """
    b, _, h, w = guide.shape
    ys = (torch.arange(h, dtype=guide.dtype, device=guide.device) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, dtype=guide.dtype, device=guide.device) + 0.5) / w * 2 - 1
    gy, gx = ys[:, None].expand(h, w), xs[None, :].expand(h, w)
    gz = guide[:, 0] * 2 - 1
    coords = torch.stack([gx.expand(b, h, w), gy.expand(b, h, w), gz], dim=-1)[:, None]
    out = F.grid_sample(grid, coords, mode="bilinear", padding_mode="border", align_corners=False)
    return out[:, :, 0]


def apply_affine(coeffs: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Apply per-pixel 3x4 affine transforms: ``out_c = sum_j A[c, j] * I_j + A[c, 3]``.

    Args:
        coeffs: ``(B, 12, H, W)``, row-major 3x4 matrices.
        image: ``(B, 3, H, W)``.

    Returns:
        ``(B, 3, H, W)``.
    """
    b, _, h, w = coeffs.shape
    a = coeffs.reshape(b, 3, 4, h, w)
    return torch.einsum("bcjhw,bjhw->bchw", a[:, :, :3], image) + a[:, :, 3]


def illumination(logits: torch.Tensor, image: torch.Tensor, grey: bool = False) -> torch.Tensor:
    """Map affine outputs to an illumination ``S`` with ``I <= S <= 1`` by construction.

    ``S = I + (1 - I) * sigmoid(logits)``: a smooth map, so no gradient dies at the bounds
    (a hard clamp to ``[I, 1]`` stops learning wherever it clips). ``S`` is floored at ``EPS``.
    With ``grey`` one ``S`` serves all channels: ``S = m + (1 - m) * sigmoid(mean_c logits)``
    with ``m`` the pixel's largest channel, so ``I / S`` keeps the RGB ratios and stays <= 1.

    Args:
        logits: ``(B, 3, H, W)`` affine outputs.
        image: ``(B, 3, H, W)`` input in [0, 1].

    Returns:
        ``(B, 3, H, W)``, or ``(B, 1, H, W)`` with ``grey``.
    """
    if grey:
        logits, image = logits.mean(1, keepdim=True), image.amax(1, keepdim=True)
    return torch.clamp(image + (1 - image) * torch.sigmoid(logits), min=EPS)
