"""FEQE (Vu et al., "Fast and Efficient Image Quality Enhancement via Desubpixel Convolutional
Neural Networks", ECCV Workshops 2018).

Desubpixel down-sampling (space-to-depth, twice x2, each followed by a conv) so the body runs at
1/4 resolution; residual blocks with instance normalisation; sub-pixel up-sampling (conv +
depth-to-space, twice x2); a global skip adds the input. Loss: MSE plus a structure term; the
paper's perceptual term uses ImageNet VGG-19 features, which are not available offline, so it is
replaced by ``1 - SSIM`` (``losses.ssim_map``), the same substitute as the DPED content loss (see ``dped``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from endolight.losses import ssim_map
from endolight.methods.learned import JsonConfig, ResBlock, cosine_lr


@dataclass(frozen=True)
class Config(JsonConfig):
    channels: int = 16
    blocks: int = 20
    ssim_weight: float = 0.1  # weight of the 1 - SSIM stand-in for the perceptual term (our choice)


class Net(nn.Module):
    """``(B, 3, H, W)`` -> ``(B, 3, H, W)``; any size (padded to a multiple of 4 internally)."""

    def __init__(self, cfg: Config | None = None) -> None:
        super().__init__()
        self.cfg = cfg or Config()
        c = self.cfg.channels
        self.down = nn.Sequential(
            nn.PixelUnshuffle(2), nn.Conv2d(12, c // 2, 3, padding=1),
            nn.PixelUnshuffle(2), nn.Conv2d(2 * c, c, 3, padding=1),
        )
        self.body = nn.Sequential(*(ResBlock(c) for _ in range(self.cfg.blocks)))
        self.up = nn.Sequential(
            nn.Conv2d(c, 4 * c, 3, padding=1), nn.PixelShuffle(2),
            nn.Conv2d(c, 12, 3, padding=1), nn.PixelShuffle(2),
        )

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        xp = F.pad(x, (0, -w % 4, 0, -h % 4), mode="replicate")
        f = self.down(xp)
        return self.up(f + self.body(f))[..., :h, :w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.residual(x)).clamp(0, 1)


class Trainer:
    def __init__(self, net: Net, steps: int, lr: float = 5e-4) -> None:
        self.net = net
        self.opt = torch.optim.Adam(net.parameters(), lr=lr)
        self.sched = cosine_lr(self.opt, steps)

    def step(self, dim: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        out = dim + self.net.residual(dim)  # unclamped, so the loss keeps a gradient past [0, 1]
        mse = F.mse_loss(out, target)
        ssim = ssim_map(out.clamp(0, 1), target).mean()
        loss = mse + self.net.cfg.ssim_weight * (1 - ssim)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        return {"loss": loss.item(), "mse": mse.item()}
