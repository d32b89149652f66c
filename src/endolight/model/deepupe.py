"""The full enhancer network: low-res coefficients + full-res guide, slice, apply, divide."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from endolight.model.config import ModelConfig
from endolight.model.guide import GuideMap
from endolight.model.net import CoefficientNet
from endolight.model.slicing import apply_affine, illumination, slice_grid


@dataclass
class Prediction:
    """What one forward pass returns, all ``(B, C, H, W)`` at the input's resolution."""

    illumination: torch.Tensor  # S, I <= S <= 1: 1 channel (grey) or 3 (rgb)
    output: torch.Tensor  # R = I / S, clamped to [0, 1]
    grid: torch.Tensor  # (B, 12, D, Gh, Gw)
    guide: torch.Tensor  # (B, 1, H, W)


class DeepUPE(nn.Module):
    """Retinex enhancer: predicts the illumination ``S`` of a frame ``I``; output ``R = I / S``."""

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or ModelConfig()
        self.coeffs = CoefficientNet(self.cfg)
        self.guide = GuideMap(self.cfg)

    def lowres(self, image: torch.Tensor) -> torch.Tensor:
        """Resize ``(B, 3, H, W)`` to the network's square low-res input (antialiased)."""
        size = (self.cfg.lowres, self.cfg.lowres)
        if image.shape[-2:] == size:
            return image
        return F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)

    def grid(self, image: torch.Tensor) -> torch.Tensor:
        """Bilateral grid ``(B, 12, D, Gh, Gw)`` for a full-res ``(B, 3, H, W)`` frame."""
        return self.coeffs(self.lowres(image))

    def render(self, grid: torch.Tensor, image: torch.Tensor, strength: float = 1.0) -> Prediction:
        """Full-res stage for a given grid: guide, slice, apply, ``S``, ``R = I / S``.

        ``strength`` k blends the illumination towards 1 as ``S**k``: 0 returns the input.
        """
        guide = self.guide(image)
        logits = apply_affine(slice_grid(grid, guide), image)
        s = illumination(logits, image, grey=self.cfg.illumination == "grey")
        if strength != 1.0:
            s = s**strength
        out = (image / s).clamp(0.0, 1.0)
        return Prediction(illumination=s, output=out, grid=grid, guide=guide)

    def forward(self, image: torch.Tensor, strength: float = 1.0) -> Prediction:
        return self.render(self.grid(image), image, strength)
