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
        g = self.global_conv(x).flatten(1)
        g = self.global_fc(g)[:, :, None, None]
        fused = F.relu(local + g)
        coeffs = self.pred(fused)  # (B, 12*D, Gh, Gw)
        b, _, gh, gw = coeffs.shape
        return coeffs.view(b, self.cfg.n_coeffs, self.cfg.grid_depth, gh, gw)
