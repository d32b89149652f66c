"""Low-resolution coefficient network: 256x256 frame -> bilateral grid of affine transforms."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from endolight.model.config import ModelConfig

N_AFFINE = 12  # a 3x4 affine colour transform per grid cell (ModelConfig.n_coeffs may add more)


def _conv(cin: int, cout: int, stride: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, stride=stride, padding=1)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def luma_histogram(image: torch.Tensor, bins: int) -> torch.Tensor:
    """Soft histogram of the luma (BT.601 weights) of ``(B, 3, H, W)`` in [0, 1]: ``(B, bins)``.

    Each pixel spreads over its two nearest bin centres with triangular weights, so the
    histogram is differentiable, sums to 1 and exports as plain arithmetic.
    """
    luma = 0.299 * image[:, 0] + 0.587 * image[:, 1] + 0.114 * image[:, 2]
    # Pixels below the first centre or above the last belong wholly to the end bins.
    luma = luma.flatten(1).clamp(0.5 / bins, 1 - 0.5 / bins)
    centres = (torch.arange(bins, dtype=image.dtype, device=image.device) + 0.5) / bins
    weights = F.relu(1 - (luma[:, None, :] - centres[None, :, None]).abs() * bins)
    return weights.mean(2)


class _ResidualBlock(nn.Module):
    """``relu -> conv -> relu -> conv`` at grid resolution, its last conv zero at start."""

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.conv1(F.relu(x))))


class CoefficientNet(nn.Module):
    """HDRNet low-res stream: splat convs, local and global paths, fusion, linear prediction.

    Input ``(B, 3, lowres, lowres)`` float in [0, 1]; output grid ``(B, C, D, Gh, Gw)`` with
    ``C = cfg.n_coeffs`` (12 affine coefficients, then the denoising strength's logit).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        cm, lb = cfg.channel_mult, 8
        splat, cin = [], 3
        for i in range(cfg.n_splat):
            cout = cm * (2**i) * lb
            splat.append(_conv(cin, cout, stride=2))
            cin = cout
        self.splat = nn.Sequential(*splat)
        feat = cm * 8 * lb  # 64 channels at the grid resolution
        self.local = nn.Sequential(_conv(cin, feat), _conv(feat, feat, act=False))
        self.local_blocks = nn.ModuleList(_ResidualBlock(feat, 2**i) for i in range(cfg.local_blocks))
        # Global path: two more stride-2 convs then fully connected layers.
        n_global = max(self.cfg.grid_size.bit_length() - 3, 1)  # 16 -> 4x4 spatial
        glob, gin = [], cin
        for _ in range(n_global):
            glob.append(_conv(gin, feat, stride=2))
            gin = feat
        self.global_conv = nn.Sequential(*glob)
        side = cfg.grid_size // 2**n_global
        self.global_fc = nn.Sequential(
            nn.Linear(feat * side * side, cfg.fc_width),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.fc_width, cfg.fc_width // 2),
            nn.ReLU(inplace=True),
            nn.Linear(cfg.fc_width // 2, feat),
        )
        self.hist = nn.Linear(cfg.global_hist, feat) if cfg.global_hist else None
        if self.hist is not None:
            nn.init.zeros_(self.hist.weight)
            nn.init.zeros_(self.hist.bias)
        self.pred = nn.Conv2d(feat, cfg.n_coeffs * cfg.grid_depth, 1)
        self._init_pred()

    def _init_pred(self) -> None:
        # Start from a smooth, input-following illumination: small weights, neutral bias, so
        # the first steps already give finite, moderate gains everywhere.
        nn.init.normal_(self.pred.weight, std=1e-3)
        nn.init.zeros_(self.pred.bias)

    def forward(self, lowres: torch.Tensor) -> torch.Tensor:
        x = self.splat(lowres)
        local = self.local(x)
        for block in self.local_blocks:
            local = local + block(local)
        g = self.global_conv(x).flatten(1)
        g = self.global_fc(g)
        if self.hist is not None:
            g = g + self.hist(luma_histogram(lowres, self.cfg.global_hist))
        g = g[:, :, None, None]
        fused = F.relu(local + g)
        coeffs = self.pred(fused)  # (B, 12*D, Gh, Gw)
        b, _, gh, gw = coeffs.shape
        return coeffs.view(b, self.cfg.n_coeffs, self.cfg.grid_depth, gh, gw)
