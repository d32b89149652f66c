"""Learned full-resolution guidance map (HDRNet): colour matrix, per-channel curve, mix."""

from __future__ import annotations

import torch
from torch import nn

from endolight.model.config import ModelConfig

LUT_NODES = 4096  # samples per channel curve in GuideMap.lookup


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

    def lookup(self, image: torch.Tensor, nodes: int = LUT_NODES) -> torch.Tensor:
        """The same guide through a lookup table of each channel's curve (for deployment).

        The curve is piecewise linear, so a table of ``nodes + 1`` samples over the range
        ``M @ rgb + b`` can take on ``[0, 1]^3``, linearly interpolated, differs from it only in
        the few cells holding a knot (measured below 1e-3 of the guide's range). It needs no
        ``(B, 3, K, H, W)`` ramps: two gathers and a lerp per channel, which is what ONNX
        Runtime runs fast at full resolution.
        """
        # Explicit multiply-adds: ONNX Runtime's Einsum is slow at full resolution.
        m = self.ccm[None, :, :, None, None]
        x = (m[:, :, 0] * image[:, None, 0] + m[:, :, 1] * image[:, None, 1] + m[:, :, 2] * image[:, None, 2]
             + self.ccm_bias[None, :, None, None])
        lo = self.ccm.clamp(max=0).sum(1) + self.ccm_bias
        span = (self.ccm.clamp(min=0).sum(1) + self.ccm_bias - lo).clamp_min(1e-8)
        at = lo[:, None] + span[:, None] * torch.linspace(0, 1, nodes + 1, device=image.device)[None]
        ramps = torch.relu(at[:, :, None] - self.shifts[:, None, :])  # (3, nodes + 1, K)
        table = self.mix[:, None] * (self.slopes[:, None, :] * ramps).sum(-1)
        pos = ((x - lo[None, :, None, None]) / span[None, :, None, None] * nodes).clamp(0, nodes)
        i0 = pos.floor().clamp(max=nodes - 1)
        frac = pos - i0
        offsets = (torch.arange(3, device=image.device) * (nodes + 1))[None, :, None, None]
        idx = (i0.long() + offsets).reshape(-1)
        flat = table.reshape(-1)
        # index_select exports as ONNX Gather (fast); advanced indexing would become GatherND.
        a = torch.index_select(flat, 0, idx).reshape(x.shape)
        b = torch.index_select(flat, 0, idx + 1).reshape(x.shape)
        g = (a + frac * (b - a)).sum(1, keepdim=True) + self.mix_bias
        return g.clamp(0.0, 1.0)
