"""Training losses of DeepUPE: reconstruction ``Lm``, smoothness ``Ls`` and ``Lt`` (SSIM + MAE).

All take ``(B, C, H, W)`` float tensors in [0, 1] and return a scalar; each is a pure function.
"""

from __future__ import annotations

from dataclasses import dataclass

import kornia
import torch
import torch.nn.functional as F

from endolight.model.slicing import divide


@dataclass(frozen=True)
class LossWeights:
    """``L = wm * Lm + wt * Lt + ws * Ls + wc * Lc``. Defaults were chosen on the validation split.

    ``Lc`` (off by default; not in the paper) is DPED's colour loss: the squared error of the
    output and target blurred by a Gaussian of ``colour_sigma`` px, i.e. how much light each
    region got. At the defaults SSIM dominates ``L`` and barely weighs a region's brightness.
    """

    wm: float = 1.0
    wt: float = 0.5
    ws: float = 0.002
    wc: float = 0.0
    colour_sigma: float = 3.0
    ssim_alpha: float = 0.84  # Zhao et al. 2017's mix of (1 - SSIM) and MAE
    smooth_alpha: float = 1.2  # DeepUPE's exponent on the log-luminance gradient
    smooth_lambda: float = 1.5  # DeepUPE's scale of the smoothness weight
    smooth_eps: float = 1e-4


def _weighted_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``(B, C, H, W)`` values, weighted per pixel by a ``(B, 1, H, W)`` mask if given."""
    if mask is None:
        return values.mean()
    m = mask.to(values.dtype)
    return (values * m).sum() / (m.sum() * values.shape[1]).clamp_min(1.0)


def reconstruction_loss(image: torch.Tensor, illum: torch.Tensor, target: torch.Tensor,
                        mask: torch.Tensor | None = None, offset: float = 0.0) -> torch.Tensor:
    """``Lm = mean(|| I / S - T ||^2)`` (over the pixels of an optional ``(B, 1, H, W)`` ``mask``:
    the field of view without specular highlights, see ``TrainConfig.loss_mask``); with the
    model's ``offset`` beta (``ModelConfig.black_offset``) its division ``(I + beta) / S - beta``.

    The form DeepUPE's authors train with: the error is measured on the enhanced output the user
    sees, so dark regions (small ``S``) count as much as bright ones. ``|| I - S * T ||^2``
    would down-weight them by ``S^2``, which is exactly where endoscope frames need the most care.
    ``I / S`` is not clamped here so the loss keeps a gradient when it overshoots 1.
    """
    return _weighted_mean((divide(image, illum, offset) - target) ** 2, mask)


def _log_luminance(image: torch.Tensor) -> torch.Tensor:
    y = kornia.color.rgb_to_grayscale(image)
    return torch.log(y + 1e-4)


def smoothness_loss(
    illum: torch.Tensor,
    image: torch.Tensor,
    alpha: float = 1.2,
    lam: float = 1.5,
    eps: float = 1e-4,
) -> torch.Tensor:
    """``Ls``: weighted least squares smoothness of ``S`` (Farbman et al. 2008).

    ``sum_p  w_x(p) (dS/dx)^2 + w_y(p) (dS/dy)^2`` averaged over pixels, with
    ``w = lam / (|dL|^alpha + eps)`` and ``L`` the input's log-luminance: ``S`` may change
    across the input's edges but must be flat where the input is flat. Zero for constant ``S``.
    """
    log_l = _log_luminance(image)
    wx = lam / (torch.abs(log_l[..., :, 1:] - log_l[..., :, :-1]) ** alpha + eps)
    wy = lam / (torch.abs(log_l[..., 1:, :] - log_l[..., :-1, :]) ** alpha + eps)
    dx = illum[..., :, 1:] - illum[..., :, :-1]
    dy = illum[..., 1:, :] - illum[..., :-1, :]
    return torch.mean(wx * dx**2) + torch.mean(wy * dy**2)


def ssim_map(output: torch.Tensor, target: torch.Tensor, window: int = 11, sigma: float = 1.5
             ) -> torch.Tensor:
    """Differentiable ``(B, C, H - window + 1, W - window + 1)`` SSIM map (data range 1, Wang et
    al.'s Gaussian window, 'valid' borders): equal to ``kornia.metrics.ssim(padding='valid')``.

    kornia pads by reflection, then crops that border away, and filters each of the five moments
    by itself; here one depthwise convolution without padding filters all five at once. Same
    values, a third of the time forward and backward on a CPU, where the loss bounded a step.
    """
    c = output.shape[1]
    k = kornia.filters.get_gaussian_kernel1d(window, sigma, device=output.device, dtype=output.dtype)
    moments = torch.cat([output, target, output * output, target * target, output * target], 1)
    n = moments.shape[1]
    blurred = F.conv2d(moments, k.view(1, 1, 1, -1).expand(n, 1, 1, -1), groups=n)
    blurred = F.conv2d(blurred, k.view(1, 1, -1, 1).expand(n, 1, -1, 1), groups=n)
    mu_x, mu_y, xx, yy, xy = blurred.split(c, 1)
    mu_xy, mu_xx, mu_yy = mu_x * mu_y, mu_x * mu_x, mu_y * mu_y
    c1, c2 = 0.01**2, 0.03**2
    num = (2 * mu_xy + c1) * (2 * (xy - mu_xy) + c2)
    den = (mu_xx + mu_yy + c1) * ((xx - mu_xx) + (yy - mu_yy) + c2)
    return num / (den + 1e-12)


def ssim_mae_loss(output: torch.Tensor, target: torch.Tensor, alpha: float = 0.84,
                  mask: torch.Tensor | None = None) -> torch.Tensor:
    """``Lt = alpha * (1 - SSIM) + (1 - alpha) * MAE``, SSIM by :func:`ssim_map` (11x11 Gaussian
    window); with ``mask``, both averaged over the masked pixels (SSIM: windows centred on them)."""
    ssim = ssim_map(output, target)
    inner = None if mask is None else mask[..., 5:-5, 5:-5]
    mae = _weighted_mean((output - target).abs(), mask)
    return alpha * (1 - _weighted_mean(ssim, inner)) + (1 - alpha) * mae


def colour_loss(output: torch.Tensor, target: torch.Tensor, sigma: float = 3.0,
                mask: torch.Tensor | None = None) -> torch.Tensor:
    """``Lc``: mean squared error of the Gaussian-blurred (``sigma`` px) output and target; with
    ``mask``, over the masked pixels (the blur sees the whole crop)."""
    k = 2 * round(3 * sigma) + 1
    blurred = kornia.filters.gaussian_blur2d(torch.cat([output, target]), (k, k), (sigma, sigma))
    out, tgt = blurred.chunk(2)
    return _weighted_mean((out - tgt) ** 2, mask)


def total_loss(
    image: torch.Tensor,
    illum: torch.Tensor,
    output: torch.Tensor,
    target: torch.Tensor,
    w: LossWeights,
    mask: torch.Tensor | None = None,
    offset: float = 0.0,
) -> dict[str, torch.Tensor]:
    """All terms and their weighted sum under key ``"loss"``; ``mask`` restricts ``Lm`` and ``Lt``
    (``Ls`` keeps every pixel: the illumination must stay smooth across the mask's edge);
    ``offset``: the model's ``black_offset``, the division ``Lm`` measures."""
    lm = reconstruction_loss(image, illum, target, mask, offset)
    lt = ssim_mae_loss(output, target, w.ssim_alpha, mask)
    ls = smoothness_loss(illum, image, w.smooth_alpha, w.smooth_lambda, w.smooth_eps)
    terms = {"lm": lm, "lt": lt, "ls": ls}
    loss = w.wm * lm + w.wt * lt + w.ws * ls
    if w.wc:
        terms["lc"] = colour_loss(output, target, w.colour_sigma, mask)
        loss = loss + w.wc * terms["lc"]
    return {"loss": loss, **terms}
