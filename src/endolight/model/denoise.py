"""Learned denoising inside the model: a fast guided filter whose strength the grid predicts.

``R = I / S`` lifts the sensor noise of dark regions with their signal. The model therefore
divides a denoised frame ``D`` instead of ``I``:

* a guided filter (He et al., TPAMI 2013) of each colour channel, guided by the frame's luma,
  computed the "fast" way (He & Sun 2015): the local linear coefficients ``q_c = a_c * Y + b_c``
  are fitted on a copy shrunk by ``factor`` with a ``(2 radius + 1)`` box, then bilinearly
  upsampled, so full resolution costs one multiply-add per channel. Flat regions (local luma
  variance below ``eps``) become their local mean; edges (variance above ``eps``) keep the pixel.
  Every channel is guided by the same luma, so colour noise goes too and edges stay in place.
* a per-pixel strength ``lam`` in [0, 1], sliced from a 13th channel of the bilateral grid:
  the network decides where to denoise (dark, lifted cells) and where to keep texture.

``D = I + lam * (q - I)``. All heavy work is at low resolution; the fused CPU kernel
(``endolight.kernels.fused``) does the full-resolution part in the same pass as the slice.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

# Rec. 601 luma weights (as kornia.color.rgb_to_grayscale): the guide of the filter.
LUMA = (0.299, 0.587, 0.114)
N_GUIDED = 6  # a_r, a_g, a_b, b_r, b_g, b_b


def lowres_size(height: int, width: int, factor: int) -> tuple[int, int]:
    """Size ``(h, w)`` of the shrunk copy the filter's coefficients are fitted on (rounded up;
    non-negative integer arithmetic, so exported graphs keep the frame size dynamic and ONNX's
    truncating integer division agrees with Python's)."""
    return (height + factor - 1) // factor, (width + factor - 1) // factor


def luma(image: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` -> ``(B, 1, H, W)`` Rec. 601 luma."""
    return LUMA[0] * image[:, 0:1] + LUMA[1] * image[:, 1:2] + LUMA[2] * image[:, 2:3]


def shrink(image: torch.Tensor, factor: int) -> torch.Tensor:
    """Antialiased bilinear shrink by ``factor`` (also works on uint8; returns float in [0, 1]
    for uint8 input)."""
    size = lowres_size(image.shape[-2], image.shape[-1], factor)
    out = F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)
    return out.float() / 255 if image.dtype == torch.uint8 else out


Box = Callable[[torch.Tensor, int], torch.Tensor]


def box_mean(t: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean of each ``(B, C, h, w)`` pixel's ``(2 radius + 1)^2`` box, over the pixels inside the
    image (differentiable; the reference)."""
    # Box sums as two 1-D depthwise convolutions of the zero-padded frame, divided by the
    # in-image counts (they factor per axis): the numbers of an average pool without the padding
    # counted, and ONNX Runtime runs them 3-4x faster than its AveragePool (8 channels at
    # 270x480: 5 ms against 15), PyTorch's training a quarter faster.
    h, w = t.shape[-2:]
    c, k = t.shape[1], 2 * radius + 1
    sums = F.conv2d(F.pad(t, (radius, radius, radius, radius)), t.new_ones(c, 1, k, 1), groups=c)
    sums = F.conv2d(sums, t.new_ones(c, 1, 1, k), groups=c)
    return sums / (_in_image(h, radius, t)[:, None] * _in_image(w, radius, t))


def _in_image(n: int, radius: int, like: torch.Tensor) -> torch.Tensor:
    """``(n,)``: how many of the ``2 radius + 1`` positions around each index lie in ``[0, n)``."""
    i = torch.arange(n, dtype=like.dtype, device=like.device)
    return torch.clamp(i + radius, max=n - 1) - torch.clamp(i - radius, min=0) + 1


def guided_coefficients(small: torch.Tensor, radius: int, eps: torch.Tensor | float,
                        box: Box = box_mean) -> torch.Tensor:
    """Guided-filter coefficients of a shrunk frame, each channel guided by the luma.

    Args:
        small: ``(B, 3, h, w)`` float in [0, 1] (:func:`shrink` of the frame).
        radius: box radius in shrunk pixels.
        eps: regulariser (a luma variance): the edge/flat threshold.
        box: the box mean (:func:`box_mean`; ``endolight.kernels.planar.guided_fit`` is the
            OpenCV/numba twin of this whole function for CPU inference).

    Returns:
        ``(B, 6, h, w)``: ``a_r, a_g, a_b, b_r, b_g, b_b``, box-averaged as in He et al.
    """
    y = luma(small)
    # One box call for all eight statistics (mean Y, mean I, mean Y^2, mean Y*I).
    stats = box(torch.cat([y, small, y * y, y * small], dim=1), radius)
    mean_y, mean_i, mean_yy, mean_yi = stats[:, :1], stats[:, 1:4], stats[:, 4:5], stats[:, 5:8]
    var_y = mean_yy - mean_y * mean_y
    cov = mean_yi - mean_y * mean_i
    a = cov / (var_y.clamp_min(0) + eps)  # eps = inf: a = 0, q = the local mean (a box blur)
    b = mean_i - a * mean_y
    return box(torch.cat([a, b], dim=1), radius)


def upsample(coeffs: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear (half-pixel, edge-clamped) upsampling of ``(B, C, h, w)`` to ``(B, C, H, W)``."""
    return F.interpolate(coeffs, size=(height, width), mode="bilinear", align_corners=False)


def binomial3(t: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` blurred by the 3x3 binomial kernel ``[1, 2, 1]^T [1, 2, 1] / 16``, edges
    replicated: ``[1, 2, 1]`` down the columns, then along the rows, as sums of shifted slices.
    (ONNX Runtime, the 1080p luma alone: 20 ms, against 61 for two 2x2 mean pools, which
    run on one thread for one channel, and 32 for a 3x3 convolution.)"""
    t = F.pad(t, (1, 1, 1, 1), mode="replicate")
    t = t[..., :-2, :] + 2 * t[..., 1:-1, :] + t[..., 2:, :]
    return (t[..., :-2] + 2 * t[..., 1:-1] + t[..., 2:]) * (1 / 16)


def half_mean(t: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` with even ``H, W`` -> the means of its 2x2 blocks ``(B, C, H/2, W/2)``,
    as a bilinear resize to half size: each output samples its block's centre, so the same
    numbers as ``avg_pool2d(t, 2)``, and ONNX Runtime runs it 2x faster (1080p luma: 2.4 ms
    against 5.3)."""
    return F.interpolate(t, scale_factor=0.5, mode="bilinear", align_corners=False)


def filter_guide(y: torch.Tensor, blur: float, lee: float = 0.0) -> torch.Tensor:
    """The guided filter's full-resolution guide: ``G = Y + blur * (binomial3(Y) - Y)``, then,
    with ``lee > 0``, a Lee step ``M + V / (V + lee) * (G - M)``.

    Where the filter keeps its guide (``a`` near 1: edges, texture) the guide's own noise passes
    into ``D``; a slightly blurred guide passes less of it and keeps the edge (weights trained on
    the plain luma, validation split: SSIM 0.674 -> 0.698 at ``blur = 0.7``, PSNR 21.47 -> 21.50;
    docs/guide-blur.md). The Lee step (a local Wiener filter; ``M, V``: the 3x3 binomial mean and
    variance of ``G``, ``lee`` a variance in ``y``'s units squared, ``ModelConfig.denoise_lee``)
    takes flat regions further, to ``M``, and keeps ``G`` at edges (docs/model.md, "The guide's
    Lee step").

    Args:
        y: ``(B, 1, H, W)`` luma.
    """
    g = y if blur == 0.0 else y + blur * (binomial3(y) - y)
    if lee == 0.0:
        return g
    mean, var = binomial_moments(g)
    return mean + var / (var + lee) * (g - mean)


def binomial_moments(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 3x3 binomial mean and variance (clamped at 0) of ``(B, 1, H, W)``, edges replicated
    (:func:`binomial3`)."""
    moments = binomial3(torch.cat([t, t * t], dim=1))
    mean = moments[:, :1]
    return mean, (moments[:, 1:] - mean * mean).clamp_min(0)


def denoise(image: torch.Tensor, coeffs: torch.Tensor, lam: torch.Tensor, blur: float = 0.0,
            lee: float = 0.0) -> torch.Tensor:
    """``D = I + lam * (a * G + b - I)`` at full resolution, ``G`` the guide (:func:`filter_guide`).

    Args:
        image: ``(B, 3, H, W)`` float in [0, 1].
        coeffs: ``(B, 6, h, w)`` from :func:`guided_coefficients`.
        lam: ``(B, 1, H, W)`` strength in [0, 1].
        blur: the guide's blur (``ModelConfig.denoise_blur``).
        lee: the guide's Lee step (``ModelConfig.denoise_lee``; 0: none).

    Returns:
        ``(B, 3, H, W)`` denoised frame (not clamped; within [0, 1] up to the filter's overshoot).
    """
    up = upsample(coeffs, image.shape[-2], image.shape[-1])
    q = up[:, :3] * filter_guide(luma(image), blur, lee) + up[:, 3:]
    return image + lam * (q - image)
