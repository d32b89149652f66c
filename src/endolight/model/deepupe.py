"""The full enhancer network: low-res coefficients + full-res guide, slice, denoise, apply, divide."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from endolight.model.config import ModelConfig
from endolight.model.denoise import Box, box_mean, denoise, guided_coefficients, shrink
from endolight.model.guide import GuideMap
from endolight.model.net import N_AFFINE, CoefficientNet
from endolight.model.slicing import (
    apply_affine,
    chroma_gain,
    chroma_gains,
    dequantise,
    divide,
    grey_grid,
    illumination,
    scale_chroma,
    slice_grid,
    slice_grid_gather,
)


@dataclass
class Prediction:
    """What one forward pass returns, all ``(B, C, H, W)`` at the input's resolution."""

    illumination: torch.Tensor  # S, D <= S <= 1: 1 channel (grey) or 3 (rgb)
    output: torch.Tensor  # R = (D + beta) / S - beta (beta: cfg.black_offset), clamped to [0, 1]
    grid: torch.Tensor  # (B, C, D, Gh, Gw), C = cfg.n_coeffs
    guide: torch.Tensor  # (B, 1, H, W)
    denoised: torch.Tensor  # D: the frame the illumination divides (the input without denoise)


class DeepUPE(nn.Module):
    """Retinex enhancer: predicts the illumination ``S`` of a frame ``I``; output ``R = D / S``
    with ``D`` the frame denoised by the model (``I`` itself without ``cfg.denoise``)."""

    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or ModelConfig()
        self.coeffs = CoefficientNet(self.cfg)
        self.guide = GuideMap(self.cfg)
        if self.cfg.denoise:
            # The filter's edge threshold (a luma variance), learned on a log scale.
            self.log_eps = nn.Parameter(torch.tensor(math.log(self.cfg.denoise_eps)))
        if self.cfg.chroma_knots:
            # log sigma(S) at S = i / (K - 1) below 1: zero, no change, at the start.
            self.chroma_curve = nn.Parameter(torch.zeros(self.cfg.chroma_knots - 1))

    def denoise_coeffs(self, image: torch.Tensor, box: Box = box_mean) -> torch.Tensor:
        """Guided-filter coefficients ``(B, 6, h, w)`` of a ``(B, 3, H, W)`` frame (float in
        [0, 1], or uint8), fitted at ``1 / cfg.denoise_factor`` of its size."""
        return self.fit_denoiser(shrink(image, self.cfg.denoise_factor), box)

    def fit_denoiser(self, small: torch.Tensor, box: Box = box_mean) -> torch.Tensor:
        """Guided-filter coefficients ``(B, 6, h, w)`` of a frame already shrunk by
        ``cfg.denoise_factor`` (``(B, 3, h, w)`` float in [0, 1])."""
        return guided_coefficients(small, self.cfg.denoise_radius, self.denoise_eps(), box)

    def denoise_eps(self) -> torch.Tensor | float:
        """The guided filter's edge threshold (a luma variance; ``inf`` for the plain box
        filter, whose coefficients ``a`` are then 0)."""
        return self.log_eps.exp() if self.cfg.denoise_filter == "guided" else float("inf")

    def denoise_threshold(self) -> float:
        """:meth:`denoise_eps` as a plain number, for inference outside autograd."""
        eps = self.denoise_eps()
        return float(eps.detach()) if isinstance(eps, torch.Tensor) else eps

    def chroma_gains(self) -> torch.Tensor | None:
        """The chroma curve's ``(K,)`` knot values (``ModelConfig.chroma_knots``), ``None``
        without one."""
        return chroma_gains(self.chroma_curve) if self.cfg.chroma_knots else None

    def lowres(self, image: torch.Tensor) -> torch.Tensor:
        """Resize ``(B, 3, H, W)`` to the network's square low-res input (antialiased)."""
        size = (self.cfg.lowres, self.cfg.lowres)
        if image.shape[-2:] == size:
            return image
        return F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)

    def grid(self, image: torch.Tensor) -> torch.Tensor:
        """Bilateral grid ``(B, 12, D, Gh, Gw)`` for a full-res ``(B, 3, H, W)`` frame."""
        return self.coeffs(self.lowres(image))

    def render(self, grid: torch.Tensor, image: torch.Tensor, strength: float = 1.0,
               deploy: bool = False) -> Prediction:
        """Full-res stage for a given grid: guide, slice, denoise, apply, ``S``, ``R = D / S``.

        ``strength`` k blends the illumination towards 1 as ``S**k`` and scales the denoising
        strength by ``min(k, 1)``: 0 returns the input.
        ``deploy`` computes the same with the guide's lookup table and gathers instead of the
        5-D ``grid_sample`` (what exported graphs run fast; within 1/255, tested).
        """
        grey = self.cfg.illumination == "grey"
        guide = self.guide.lookup(image) if deploy else self.guide(image)
        cells = grey_grid(grid) if grey else grid
        coeffs = (slice_grid_gather if deploy else slice_grid)(cells, guide)
        n_affine = 4 if grey else N_AFFINE
        x = image
        if self.cfg.denoise:
            lam = torch.sigmoid(coeffs[:, n_affine:n_affine + 1]) * min(strength, 1.0)
            x = denoise(image, self.denoise_coeffs(image), lam, self.cfg.denoise_blur,
                        self.cfg.denoise_lee).clamp(0.0, 1.0)
        if self.cfg.dequantise:
            x = dequantise(x)
        logits = apply_affine(coeffs[:, :n_affine], x)
        s = illumination(logits, x, grey=grey, offset=self.cfg.black_offset, curve=self.cfg.curve)
        if strength != 1.0:
            s = s**strength
        out = divide(x, s, self.cfg.black_offset)
        if self.cfg.chroma_knots:
            out = scale_chroma(out, chroma_gain(s, self.chroma_gains()))
        out = out.clamp(0.0, 1.0)
        return Prediction(illumination=s, output=out, grid=grid, guide=guide, denoised=x)

    def forward(self, image: torch.Tensor, strength: float = 1.0, deploy: bool = False) -> Prediction:
        return self.render(self.grid(image), image, strength, deploy)
