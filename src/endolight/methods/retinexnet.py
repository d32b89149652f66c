"""RetinexNet (Wei et al., "Deep Retinex Decomposition for Low-Light Enhancement", BMVC 2018).

Decom-Net splits an image into reflectance ``R`` (3 ch) and illumination ``L`` (1 ch) with
``R * L = I``; Enhance-Net, an encoder-decoder with multi-scale fusion, predicts a brighter
illumination from ``(R, L)``; the output is ``R * L_hat``. Training follows the authors' code:
first Decom-Net on (dim, well-lit) pairs (reconstruction, invariable reflectance and
structure-aware smoothness losses), then Enhance-Net with Decom-Net frozen (relighting
reconstruction + smoothness); here each phase gets half of the step budget. Widths are halved
(32 instead of 64 channels) so it trains on a CPU; the optional BM3D denoising of ``R`` is left out,
and ``L_hat`` goes through a sigmoid (the authors' last conv is linear) so it stays in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from endolight.methods.learned import JsonConfig, cosine_lr


@dataclass(frozen=True)
class Config(JsonConfig):
    channels: int = 32
    decom_layers: int = 5  # 3x3 conv + ReLU layers between Decom-Net's 9x9 input and output convs


def _gray(x: torch.Tensor) -> torch.Tensor:
    return x.mean(1, keepdim=True)


class DecomNet(nn.Module):
    """``(B, 3, H, W)`` -> reflectance ``(B, 3, H, W)`` and illumination ``(B, 1, H, W)``, in [0, 1]."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        c = cfg.channels
        layers: list[nn.Module] = [nn.Conv2d(4, c, 9, padding=4)]
        for _ in range(cfg.decom_layers):
            layers += [nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(c, 4, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # The authors feed the max over RGB as a fourth channel (a first guess of illumination).
        out = torch.sigmoid(self.body(torch.cat([x.amax(1, keepdim=True), x], 1)))
        return out[:, :3], out[:, 3:]


class EnhanceNet(nn.Module):
    """``(R, L)`` -> enhanced illumination ``(B, 1, H, W)`` (three stride-2 stages, nearest
    up-sampling with skip sums, then the three decoder scales fused at full resolution)."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        c = cfg.channels
        self.inp = nn.Conv2d(4, c, 3, padding=1)
        self.down = nn.ModuleList(nn.Conv2d(c, c, 3, stride=2, padding=1) for _ in range(3))
        self.up = nn.ModuleList(nn.Conv2d(c, c, 3, padding=1) for _ in range(3))
        self.fuse = nn.Conv2d(3 * c, c, 1)
        self.out = nn.Conv2d(c, 1, 3, padding=1)

    def forward(self, r: torch.Tensor, l: torch.Tensor) -> torch.Tensor:  # noqa: E741
        x = self.inp(torch.cat([r, l], 1))
        skips = [x]
        for conv in self.down:
            x = F.relu(conv(x))
            skips.append(x)
        decoded = []
        for conv, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            x = F.relu(conv(F.interpolate(x, size=skip.shape[-2:], mode="nearest"))) + skip
            decoded.append(x)
        size = decoded[-1].shape[-2:]
        multi = torch.cat([F.interpolate(d, size=size, mode="nearest") for d in decoded], 1)
        return torch.sigmoid(self.out(self.fuse(multi)))


class Net(nn.Module):
    def __init__(self, cfg: Config | None = None) -> None:
        super().__init__()
        self.cfg = cfg or Config()
        self.decom = DecomNet(self.cfg)
        self.enhance = EnhanceNet(self.cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r, l = self.decom(x)  # noqa: E741
        return (r * self.enhance(r, l)).clamp(0, 1)


def _grad(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dx = F.pad(x[..., :, 1:] - x[..., :, :-1], (0, 1, 0, 0))
    dy = F.pad(x[..., 1:, :] - x[..., :-1, :], (0, 0, 0, 1))
    return dx.abs(), dy.abs()


def smoothness(illum: torch.Tensor, reflect: torch.Tensor) -> torch.Tensor:
    """Structure-aware smoothness: ``mean(|grad L| * exp(-10 |grad gray(R)|))``."""
    lx, ly = _grad(illum)
    rx, ry = _grad(_gray(reflect))
    return torch.mean(lx * torch.exp(-10 * rx) + ly * torch.exp(-10 * ry))


def decom_loss(net: Net, dim: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    r_lo, l_lo = net.decom(dim)
    r_hi, l_hi = net.decom(target)
    recon = F.l1_loss(r_lo * l_lo, dim) + F.l1_loss(r_hi * l_hi, target)
    mutual = F.l1_loss(r_hi * l_lo, dim) + F.l1_loss(r_lo * l_hi, target)
    equal_r = F.l1_loss(r_lo, r_hi)
    smooth = smoothness(l_lo, r_lo) + smoothness(l_hi, r_hi)
    return recon + 0.001 * mutual + 0.01 * equal_r + 0.1 * smooth  # the authors' weights


def relight_loss(net: Net, dim: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        r, l = net.decom(dim)  # noqa: E741
    l_hat = net.enhance(r, l)
    return F.l1_loss(r * l_hat, target) + 3 * smoothness(l_hat, r)


class Trainer:
    """Half the steps train Decom-Net, the other half Enhance-Net (Decom-Net frozen)."""

    def __init__(self, net: Net, steps: int, lr: float = 1e-3) -> None:
        self.net, self.steps, self.i = net, steps, 0
        self.switch = steps // 2
        self.opts = [torch.optim.Adam(net.decom.parameters(), lr=lr),
                     torch.optim.Adam(net.enhance.parameters(), lr=lr)]
        self.scheds = [cosine_lr(self.opts[0], self.switch), cosine_lr(self.opts[1], steps - self.switch)]

    def step(self, dim: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        phase = int(self.i >= self.switch)
        loss = (decom_loss if phase == 0 else relight_loss)(self.net, dim, target)
        self.opts[phase].zero_grad(set_to_none=True)
        loss.backward()
        self.opts[phase].step()
        self.scheds[phase].step()
        self.i += 1
        return {"loss": loss.item(), "phase": float(phase)}
