"""Learned full-resolution guidance map (HDRNet): colour matrix, per-channel curve, mix."""

from __future__ import annotations

import torch
from torch import nn

from endolight.model.config import ModelConfig


class GuideMap(nn.Module):
    """Per-pixel guide ``g = clamp(sum_c mix_c * curve_c(M @ rgb + b) + m0, 0, 1)``.

    Pointwise ops are written as ``einsum`` rather than 1x1 ``conv2d``, which is ~10x slower on
    CPU at full resolution. Input ``(B, 3, H, W)`` in [0, 1]; output ``(B, 1, H, W)`` in [0, 1].
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        k = cfg.guide_knots
        self.ccm = nn.Parameter(torch.eye(3))
        self.ccm_bias = nn.Parameter(torch.zeros(3))
        # Knot positions spread over [0, 1); the curve starts as the identity.
        self.shifts = nn.Parameter(torch.linspace(0, 1, k + 1)[:-1].repeat(3, 1))
        slopes = torch.zeros(3, k)
        slopes[:, 0] = 1.0
        self.slopes = nn.Parameter(slopes)
        self.mix = nn.Parameter(torch.full((3,), 1.0 / 3.0))
        self.mix_bias = nn.Parameter(torch.zeros(1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = torch.einsum("ij,bjhw->bihw", self.ccm, image) + self.ccm_bias[None, :, None, None]
        # (B, 3, K, H, W): every knot's ReLU ramp, weighted by its slope and summed.
        ramps = torch.relu(x[:, :, None] - self.shifts[None, :, :, None, None])
        curved = torch.einsum("ck,bckhw->bchw", self.slopes, ramps)
        g = torch.einsum("c,bchw->bhw", self.mix, curved)[:, None] + self.mix_bias
        return g.clamp(0.0, 1.0)
