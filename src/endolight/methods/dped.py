"""DPED (Ignatov et al., "DSLR-Quality Photos on Mobile Devices with Deep Convolutional
Networks", ICCV 2017).

Generator: a 9x9 conv, four residual blocks (3x3 conv, instance norm, ReLU), two 3x3 convs and a
9x9 conv to RGB through ``0.58 * tanh + 0.5`` (the authors' output mapping). A discriminator sees
grayscale images (so it judges texture, not colour) and tells enhanced from well-lit ones.
Generator loss = content + colour + texture (adversarial) + total variation, as in the paper:

* colour: MSE between Gaussian-blurred output and target (texture removed, colour kept);
* texture: the adversarial term from the grayscale discriminator;
* content: the paper compares ImageNet VGG-19 features; no pretrained VGG exists offline, so
  this uses ``1 - SSIM`` (``losses.ssim_map``). The content loss is there to keep the image's structure
  (edges, local contrast) while the colour loss handles colour; SSIM measures exactly local
  structure and contrast, needs no trained weights, and, unlike a random-conv feature loss, is
  not at the mercy of an arbitrary initialisation;
* total variation: mean squared gradient of the output.

The term weights are the paper's balance re-set for these mean-normalised terms (our choice,
listed in ``Config``); widths are halved (32 channels) so it trains on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import kornia
import torch
import torch.nn.functional as F
from torch import nn

from endolight.losses import colour_loss, ssim_map
from endolight.methods.learned import JsonConfig, ResBlock, cosine_lr


@dataclass(frozen=True)
class Config(JsonConfig):
    channels: int = 32
    blocks: int = 4
    w_content: float = 1.0
    w_colour: float = 10.0
    w_texture: float = 0.01
    w_tv: float = 0.1
    blur_sigma: float = 3.0  # the paper's colour-loss Gaussian


class Net(nn.Module):
    """The generator: ``(B, 3, H, W)`` -> ``(B, 3, H, W)`` in [0, 1]."""

    def __init__(self, cfg: Config | None = None) -> None:
        super().__init__()
        self.cfg = cfg or Config()
        c = self.cfg.channels
        self.body = nn.Sequential(
            nn.Conv2d(3, c, 9, padding=4), nn.ReLU(inplace=True),
            *(ResBlock(c, relu_out=True) for _ in range(self.cfg.blocks)),
            nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c, 3, 9, padding=4),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (0.58 * torch.tanh(self.body(x)) + 0.5).clamp(0, 1)


class Discriminator(nn.Module):
    """Grayscale ``(B, 1, H, W)`` -> real/fake logit ``(B,)``; global pooling before the dense
    layers (the paper's fixed 100x100 patches need none) so it takes any crop size."""

    def __init__(self, widths: tuple[int, ...] = (24, 64, 96, 96, 64)) -> None:
        super().__init__()  # the paper's (48, 128, 192, 192, 128), halved
        kernels, strides = (11, 5, 3, 3, 3), (4, 2, 1, 1, 2)
        layers: list[nn.Module] = []
        cin = 1
        for i, (c, k, s) in enumerate(zip(widths, kernels, strides, strict=True)):
            layers.append(nn.Conv2d(cin, c, k, stride=s, padding=k // 2))
            if i:
                layers.append(nn.InstanceNorm2d(c, affine=True))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            cin = c
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(cin, 512), nn.LeakyReLU(0.2, inplace=True), nn.Linear(512, 1))

    def forward(self, gray: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(gray).mean((2, 3)))[:, 0]


def _gray(x: torch.Tensor) -> torch.Tensor:
    return kornia.color.rgb_to_grayscale(x)


class Trainer:
    """Alternating updates: discriminator on (target, detached output), then the generator."""

    def __init__(self, net: Net, steps: int, lr: float = 5e-4) -> None:
        self.net = net
        self.disc = Discriminator().to(next(net.parameters()).device)
        self.opt_g = torch.optim.Adam(net.parameters(), lr=lr)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=lr)
        self.scheds = [cosine_lr(self.opt_g, steps), cosine_lr(self.opt_d, steps)]

    def step(self, dim: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        cfg = self.net.cfg
        self.disc.to(dim.device).train()
        out = self.net(dim)
        real, fake = self.disc(_gray(target)), self.disc(_gray(out.detach()))
        d_loss = (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                  + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()

        fooled = self.disc(_gray(out))
        texture = F.binary_cross_entropy_with_logits(fooled, torch.ones_like(fooled))
        colour = colour_loss(out, target, cfg.blur_sigma)
        content = 1 - ssim_map(out, target).mean()
        tv = torch.mean((out[..., 1:, :] - out[..., :-1, :]) ** 2) + torch.mean(
            (out[..., :, 1:] - out[..., :, :-1]) ** 2)
        fidelity = cfg.w_content * content + cfg.w_colour * colour + cfg.w_tv * tv
        g_loss = fidelity + cfg.w_texture * texture
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        for s in self.scheds:
            s.step()
        # "loss" is the generator objective; the adversarial terms are a game and need not fall.
        return {"loss": g_loss.item(), "fidelity": fidelity.item(), "texture": texture.item(),
                "disc": d_loss.item()}
