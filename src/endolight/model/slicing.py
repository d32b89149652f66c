"""Differentiable bilateral-grid slicing and affine application (the PyTorch reference)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from endolight.model.denoise import luma

EPS = 1e-4  # smallest illumination, keeps R = I / S finite on black pixels
LEVEL0 = 0.25 / 255  # the middle of [0, 0.5 / 255), what an 8-bit 0 stands for (ModelConfig.dequantise)


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


def slice_grid_gather(grid: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
    """:func:`slice_grid` as row interpolation plus four gathers (for deployment).

    The grid is first interpolated to every image row (small: ``H x Gw x D`` cells), then each
    pixel reads its two columns and two depths: what the fused CPU kernel does. ONNX Runtime
    runs these gathers far faster than its 5-D ``GridSample`` (1.9 s per 1080p frame here).
    Same arguments, result and convention as :func:`slice_grid`.
    """
    b, c, d, gh, gw = grid.shape
    h, w = guide.shape[-2:]
    rows = F.interpolate(grid.reshape(b, c * d, gh, gw), size=(h, gw), mode="bilinear",
                         align_corners=False)
    table = rows.reshape(b, c, d, h, gw).permute(1, 0, 3, 4, 2).reshape(c, b * h * gw * d)
    xs = ((torch.arange(w, dtype=guide.dtype, device=guide.device) + 0.5) * (gw / w) - 0.5).clamp(0, gw - 1)
    x0 = xs.floor().clamp(max=max(gw - 2, 0))
    wx = xs - x0
    z = (guide[:, 0] * d - 0.5).clamp(0, d - 1)
    z0 = z.floor().clamp(max=max(d - 2, 0))
    wz = (z - z0)[:, None]
    ys = torch.arange(b * h, device=guide.device).reshape(b, h, 1)
    idx = ((ys * gw + x0.long()[None, None]) * d + z0.long()).reshape(-1)
    dx, dz = (d if gw > 1 else 0), (1 if d > 1 else 0)

    def tap(offset: int) -> torch.Tensor:
        # index_select exports as ONNX Gather (fast); advanced indexing would become GatherND.
        return torch.index_select(table, 1, idx + offset).reshape(c, b, h, w).permute(1, 0, 2, 3)

    v00, v01, v10, v11 = tap(0), tap(dz), tap(dx), tap(dx + dz)
    left, right = v00 + wz * (v01 - v00), v10 + wz * (v11 - v10)
    return left + wx * (right - left)


def grey_grid(grid: torch.Tensor) -> torch.Tensor:
    """Collapse a ``(B, C, D, Gh, Gw)`` grid's three affine rows to their mean (4 channels, then
    channels 12+ unchanged): a grey illumination only uses the mean logit, and the mean of
    the rows' outputs is the output of their mean row."""
    b, c, d, gh, gw = grid.shape
    mean_row = grid[:, :12].reshape(b, 3, 4, d, gh, gw).mean(1)
    return torch.cat([mean_row, grid[:, 12:]], dim=1)


def apply_affine(coeffs: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Apply per-pixel nx4 affine transforms: ``out_c = sum_j A[c, j] * I_j + A[c, 3]``.

    Args:
        coeffs: ``(B, 4n, H, W)``, row-major nx4 matrices (n = 3, or 1 for a grey grid).
        image: ``(B, 3, H, W)``.

    Returns:
        ``(B, n, H, W)``.
    """
    b, _, h, w = coeffs.shape
    a = coeffs.reshape(b, -1, 4, h, w)
    # Explicit multiply-adds rather than einsum: as fast in PyTorch, and ONNX Runtime's Einsum
    # is several times slower at full resolution.
    return (a[:, :, 0] * image[:, None, 0] + a[:, :, 1] * image[:, None, 1] + a[:, :, 2] * image[:, None, 2]
            + a[:, :, 3])


def illumination(logits: torch.Tensor, image: torch.Tensor, grey: bool = False,
                 offset: float = 0.0, curve: str = "sigmoid") -> torch.Tensor:
    """Map affine outputs to an illumination ``S`` with ``I <= S <= 1`` by construction.

    ``S = I + (1 - I) * sigmoid(logits)``: a smooth map, so no gradient dies at the bounds
    (a hard clamp to ``[I, 1]`` stops learning wherever it clips). ``S`` is floored at ``EPS``.
    With ``grey`` one ``S`` serves all channels: ``S = m + (1 - m) * sigmoid(mean_c logits)``
    with ``m`` the pixel's largest channel, so ``I / S`` keeps the RGB ratios and stays <= 1.
    With an ``offset`` beta the bound is ``(I + beta) / (1 + beta)``, the one
    :func:`divide` needs to stay <= 1. With ``curve="power"`` the same bound ``m`` gives
    ``S = max(m, EPS) ** (1 - sigmoid(logits))`` (``ModelConfig.curve``).

    Args:
        logits: ``(B, 3, H, W)`` affine outputs.
        image: ``(B, 3, H, W)`` input in [0, 1].
        offset: ``ModelConfig.black_offset``.

    Returns:
        ``(B, 3, H, W)``, or ``(B, 1, H, W)`` with ``grey``.
    """
    if grey:
        logits, image = logits.mean(1, keepdim=True), image.amax(1, keepdim=True)
    image = offset_floor(image, offset)
    if curve == "power":
        # The floor before the power: 0 ** x has no gradient; EPS ** (1 - a) >= EPS.
        return image.clamp(min=EPS) ** (1 - torch.sigmoid(logits))
    return torch.clamp(image + (1 - image) * torch.sigmoid(logits), min=EPS)


def offset_floor(m: torch.Tensor, offset: float) -> torch.Tensor:
    """The illumination's lower bound ``(m + beta) / (1 + beta)`` for a pixel value ``m`` (its
    largest channel, for a grey ``S``); ``m`` itself for beta = 0, with no operation added (an
    exported graph would carry the no-op passes at full resolution)."""
    return (m + offset) * (1 / (1 + offset)) if offset else m


def dequantise(image: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` -> the same with the channels at 0 of every pixel that has light in
    another channel read as :data:`LEVEL0` (``ModelConfig.dequantise``); a pixel black in all
    three (the border around an endoscope's view, which the enhancer keeps as it is) stays 0."""
    return torch.maximum(image, LEVEL0 * (image.amax(1, keepdim=True) > 0).to(image.dtype))


def divide(image: torch.Tensor, s: torch.Tensor, offset: float = 0.0) -> torch.Tensor:
    """The Retinex division in the offset space, ``R = (I + beta) / S - beta`` (``I / S`` for
    beta = 0), not clamped.

    Args:
        image: ``(B, 3, H, W)``; s: ``(B, 1 or 3, H, W)`` from :func:`illumination`.
        offset: beta, ``ModelConfig.black_offset``.
    """
    return (image + offset) / s - offset if offset else image / s


def chroma_gains(log_gains: torch.Tensor) -> torch.Tensor:
    """``(K - 1,)`` learned log gains -> the ``(K,)`` knot values of :func:`chroma_gain`:
    ``exp(log_gains)``, then 1 at ``S = 1`` (an unlifted pixel keeps its colour, so
    ``strength`` 0 still returns the input)."""
    return torch.cat([log_gains.exp(), log_gains.new_ones(1)])


def chroma_gain(s: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
    """``sigma(S)`` (``ModelConfig.chroma_knots``): piecewise linear over the ``K`` knots
    ``gains`` (:func:`chroma_gains`) at ``S = i / (K - 1)``.

    Args:
        s: ``(B, 1, H, W)`` grey illumination in ``(0, 1]``.
        gains: ``(K,)``.

    Returns:
        ``(B, 1, H, W)``.
    """
    pos = s.clamp(0.0, 1.0) * (gains.shape[0] - 1)
    lo = pos.floor().clamp(max=gains.shape[0] - 2)
    # Knot values and slopes gathered by a flat index, a plain ONNX Gather: indexing by the
    # (B, 1, H, W) index itself exports as GatherND, which the exported graphs keep out
    # (tests/test_export.py).
    i = lo.long().reshape(-1)
    base = gains.index_select(0, i).reshape(s.shape)
    slope = (gains[1:] - gains[:-1]).index_select(0, i).reshape(s.shape)
    return base + (pos - lo) * slope


def scale_chroma(image: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` with each channel's difference from the Rec. 601 luma scaled by ``sigma``
    ``(B, 1, H, W)``: ``Y + sigma (c - Y)``. In Y'CbCr (BT.601) it scales Cb and Cr alone."""
    y = luma(image)
    return y + sigma * (image - y)
