"""Zero-DCE (Guo et al., "Zero-Reference Deep Curve Estimation for Low-Light Image Enhancement",
CVPR 2020) and Zero-DCE++ (Li, Guo, Loy, TPAMI 2021): one model, two settings.

DCE-Net (7 convs, 32 channels, symmetric skip concatenations) predicts per-pixel curve
parameters ``A``; the image is brightened by iterating the quadratic light-enhancement curve
``x <- x + A * (x^2 - x)`` 8 times. Training needs no target: spatial consistency, exposure control
(well-exposedness level ``E = 0.6`` on 16x16 patches), colour constancy and curve smoothness
(the authors' weights: 1, 10, 5, 200; Zero-DCE++ uses 1600 on smoothness).

Zero-DCE++ (``plus=True``) replaces the convs with depthwise-separable ones, shares one curve map
over the 8 iterations (3 channels instead of 24) and estimates it on a shrunk copy of the frame
(longer side ``plus_side`` px; the authors shrink 12x), up-sampling the map to full size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from endolight.methods.learned import JsonConfig, cosine_lr

ITERATIONS = 8


@dataclass(frozen=True)
class Config(JsonConfig):
    plus: bool = False
    channels: int = 32
    plus_side: int = 160  # Zero-DCE++: curve estimation on a copy with this longer side
    exposure: float = 0.6
    w_spa: float = 1.0
    w_exp: float = 10.0
    w_col: float = 5.0
    w_tv: float = 200.0  # Zero-DCE++: 1600

    @classmethod
    def plus_defaults(cls) -> Config:
        return cls(plus=True, w_tv=1600.0)


def _conv(cin: int, cout: int, separable: bool) -> nn.Module:
    if not separable:
        return nn.Conv2d(cin, cout, 3, padding=1)
    return nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1, groups=cin), nn.Conv2d(cin, cout, 1))


class Net(nn.Module):
    """``(B, 3, H, W)`` -> enhanced ``(B, 3, H, W)`` in [0, 1]."""

    def __init__(self, cfg: Config | None = None) -> None:
        super().__init__()
        self.cfg = cfg or Config()
        c, sep = self.cfg.channels, self.cfg.plus
        out = 3 if sep else 3 * ITERATIONS
        self.convs = nn.ModuleList([
            _conv(3, c, sep), _conv(c, c, sep), _conv(c, c, sep), _conv(c, c, sep),
            _conv(2 * c, c, sep), _conv(2 * c, c, sep), _conv(2 * c, out, sep),
        ])

    def curves(self, x: torch.Tensor) -> torch.Tensor:
        """Curve parameters in [-1, 1]: ``(B, 24, H, W)`` (Zero-DCE) or ``(B, 3, H, W)`` (++)."""
        small = x
        if self.cfg.plus and max(x.shape[-2:]) > self.cfg.plus_side:
            scale = self.cfg.plus_side / max(x.shape[-2:])
            small = F.interpolate(x, scale_factor=scale, mode="bilinear", antialias=True)
        c = self.convs
        x1 = F.relu(c[0](small))
        x2 = F.relu(c[1](x1))
        x3 = F.relu(c[2](x2))
        x4 = F.relu(c[3](x3))
        x5 = F.relu(c[4](torch.cat([x3, x4], 1)))
        x6 = F.relu(c[5](torch.cat([x2, x5], 1)))
        a = torch.tanh(c[6](torch.cat([x1, x6], 1)))
        if a.shape[-2:] != x.shape[-2:]:
            a = F.interpolate(a, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return a

    def apply(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        maps = a.split(3, 1) if a.shape[1] > 3 else [a] * ITERATIONS
        for m in maps:
            x = x + m * (x * x - x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(x, self.curves(x)).clamp(0, 1)


def spatial_consistency(out: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """Differences between 4x4-region means and their 4 neighbours must be kept."""
    o = F.avg_pool2d(out.mean(1, keepdim=True), 4)
    i = F.avg_pool2d(image.mean(1, keepdim=True), 4)

    def diffs(t: torch.Tensor) -> list[torch.Tensor]:
        p = F.pad(t, (1, 1, 1, 1), mode="replicate")
        return [t - p[..., 1:-1, :-2], t - p[..., 1:-1, 2:], t - p[..., :-2, 1:-1], t - p[..., 2:, 1:-1]]

    return sum(torch.mean((do.abs() - di.abs()) ** 2) for do, di in zip(diffs(o), diffs(i), strict=True))


def exposure_control(out: torch.Tensor, level: float) -> torch.Tensor:
    return torch.mean((F.avg_pool2d(out.mean(1, keepdim=True), 16) - level) ** 2)


def colour_constancy(out: torch.Tensor) -> torch.Tensor:
    """The paper's sum of squared differences between the channel means (gray-world)."""
    r, g, b = out.mean((2, 3)).unbind(1)
    return torch.mean((r - g) ** 2 + (r - b) ** 2 + (g - b) ** 2)


def curve_smoothness(a: torch.Tensor) -> torch.Tensor:
    """The authors' TV loss: ``2 * (sum_c mean dA_h^2 + sum_c mean dA_w^2)``, summed over curve
    channels, so 200 (24 maps) and 1600 (3 maps) give the same weight per map."""
    dh = ((a[..., 1:, :] - a[..., :-1, :]) ** 2).mean((0, 2, 3)).sum()
    dw = ((a[..., :, 1:] - a[..., :, :-1]) ** 2).mean((0, 2, 3)).sum()
    return 2 * (dh + dw)


class Trainer:
    """Zero-reference: the target of each pair is ignored."""

    def __init__(self, net: Net, steps: int, lr: float = 1e-4) -> None:
        self.net = net
        self.opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)  # the authors' optimiser
        self.sched = cosine_lr(self.opt, steps)

    def step(self, dim: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        cfg = self.net.cfg
        a = self.net.curves(dim)
        out = self.net.apply(dim, a)
        loss = (cfg.w_spa * spatial_consistency(out, dim) + cfg.w_exp * exposure_control(out, cfg.exposure)
                + cfg.w_col * colour_constancy(out) + cfg.w_tv * curve_smoothness(a))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        return {"loss": loss.item()}
