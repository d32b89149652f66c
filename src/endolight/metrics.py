"""Image quality metrics: every table in the project takes its numbers from here.

Full-reference metrics take ``(B, 3, H, W)`` float tensors in [0, 1] (data range 1) and return
one value per image ``(B,)``.
"""

from __future__ import annotations

import kornia
import numpy as np
import torch
from skimage.color import deltaE_ciede2000, rgb2lab

SSIM_WINDOW = 11  # Wang et al. 2004: 11x11 Gaussian, sigma 1.5, 'valid' borders


def psnr(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PSNR in dB with data range 1, per image."""
    mse = torch.mean((output - target) ** 2, dim=(1, 2, 3)).clamp_min(1e-12)
    return 10 * torch.log10(1.0 / mse)


def ssim(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SSIM (kornia, ``padding='valid'``, data range 1; equals skimage's Wang et al. settings)."""
    m = kornia.metrics.ssim(output, target, window_size=SSIM_WINDOW, max_val=1.0, padding="valid")
    return m.mean(dim=(1, 2, 3))


def delta_e2000(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean CIEDE2000 colour difference per image (scikit-image's implementation)."""
    vals = []
    for o, t in zip(output, target, strict=True):
        lab_o = rgb2lab(o.permute(1, 2, 0).double().cpu().numpy())
        lab_t = rgb2lab(t.permute(1, 2, 0).double().cpu().numpy())
        vals.append(float(np.mean(deltaE_ciede2000(lab_t, lab_o))))
    return torch.tensor(vals)


def lightness_order_error(output: torch.Tensor, reference: torch.Tensor, side: int = 50) -> torch.Tensor:
    """LOE (Wang et al. 2013): how often the lightness order of two pixels flips, x 1e3 scale.

    Lightness is the max over RGB. Both images are shrunk so the shorter side is ``side`` px, as
    in the original, because LOE compares all pixel pairs (O(N^2)). No library implements LOE,
    hence this hand-written version. Returns the mean number of flipped pairs per pixel.
    """
    vals = []
    for o, r in zip(output, reference, strict=True):
        h, w = o.shape[-2:]
        scale = side / min(h, w)
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        lo = torch.nn.functional.interpolate(o[None], size=size, mode="area").amax(1).flatten()
        lr = torch.nn.functional.interpolate(r[None], size=size, mode="area").amax(1).flatten()
        flips = (lo[:, None] >= lo[None, :]) ^ (lr[:, None] >= lr[None, :])
        vals.append(float(flips.sum()) / lo.numel())
    return torch.tensor(vals)


def full_reference(output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """PSNR, SSIM, ΔE2000 and LOE, all against the well-lit target.

    LOE is taken against the target's lightness order (not the dim input's, as in no-reference
    use): with a reference available, order flips relative to the truth are what matter, and
    leaving the input unchanged would otherwise score a perfect 0.
    """
    return {
        "psnr": psnr(output, target),
        "ssim": ssim(output, target),
        "delta_e": delta_e2000(output, target),
        "loe": lightness_order_error(output, target),
    }
