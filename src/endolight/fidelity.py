"""Fidelity steps around the model: specular highlights, masked low-res statistics, hue
preservation and an exposure target (denoising is inside the model: endolight.model.denoise).

Each is a small functional op on ``(H, W, 3)`` uint8 RGB frames (the enhancer's I/O type) or on
the low-res tensor the network sees; :class:`~endolight.enhancer.Enhancer` chains them before
and after the model, so they work with any rendering backend. OpenCV does the filtering,
inpainting and colour conversion.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from endolight.fov import detect_fov, max_channel

# Rec. 601 luma, as kornia.color.rgb_to_grayscale and OpenCV's RGB2GRAY.
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@dataclass(frozen=True)
class HighlightConfig:
    """What counts as a specular highlight: a small, bright, nearly white spot."""

    max_saturation: float = 0.3  # HSV saturation; reflections of the white light are not coloured
    rel_level: float = 0.8  # level at least this fraction of the frame's white level...
    min_level: int = 48  # ...and at least this (8-bit): a dark frame has no reflections
    max_area: float = 0.01  # a larger bright white region (fraction of the frame) is lit tissue
    contrast: float = 0.08  # brighter than its surroundings (white top-hat) by this x white level
    spot_size: float = 0.06  # top-hat window, fraction of the shorter side (spots are smaller)
    grow: float = 0.004  # spots are dilated by this fraction of the shorter side (their halo)


def highlight_mask(image: np.ndarray, fov: np.ndarray | None = None,
                   cfg: HighlightConfig | None = None) -> np.ndarray:
    """Boolean ``(H, W)`` mask of specular highlights (dilated over their halo).

    A pixel is a candidate when it is nearly white (HSV saturation low), close to the frame's
    white level (its 99.9th-percentile max-channel level inside ``fov``, so spots are found in
    dim frames too) and brighter than its surroundings (a white top-hat: a wide bright region
    of pale tissue is not a reflection); connected spots larger than ``max_area`` are dropped.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
        fov: optional ``(H, W)`` bool field of view; nothing outside it is a highlight.
    """
    cfg = cfg or HighlightConfig()
    h, w = image.shape[:2]
    v = cv2.medianBlur(max_channel(image), 5)  # noise specks are not spots
    sat = cv2.medianBlur(cv2.cvtColor(image, cv2.COLOR_RGB2HSV)[..., 1], 5)
    inside = v[fov] if fov is not None else v
    if inside.size == 0:
        return np.zeros((h, w), bool)
    white = max(float(np.percentile(inside, 99.9)), cfg.min_level / cfg.rel_level)
    k = max(3, round(cfg.spot_size * min(h, w)) | 1)
    # Outside the view counts as white, so the view's own bright rim is not "brighter than
    # its surroundings" (a black border would be).
    vv = v if fov is None else np.where(fov, v, 255).astype(np.uint8)
    # A square window: OpenCV's square morphology costs the same at any size (separable).
    tophat = cv2.morphologyEx(vv, cv2.MORPH_TOPHAT, cv2.getStructuringElement(cv2.MORPH_RECT, (k, k)))
    cand = (v >= cfg.rel_level * white) & (sat <= cfg.max_saturation * 255)
    cand &= tophat >= cfg.contrast * white
    if fov is not None:
        cand &= fov
    n, labels, stats, _ = cv2.connectedComponentsWithStats(cand.astype(np.uint8), connectivity=8)
    small = np.nonzero(stats[1:, cv2.CC_STAT_AREA] <= cfg.max_area * h * w)[0] + 1
    spots = np.isin(labels, small).astype(np.uint8)
    r = max(1, round(cfg.grow * min(h, w)))
    spots = cv2.dilate(spots, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    return spots > 0 if fov is None else (spots > 0) & fov


def tissue_weights(target: torch.Tensor) -> torch.Tensor:
    """``(B, 1, H, W)`` float loss weights of ``(B, 3, H, W)`` well-lit targets in [0, 1]: 1 on
    tissue, 0 outside the field of view and on specular highlights (neither has a colour for
    the model to restore)."""
    frames = (target.detach().clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    masks = []
    for frame in frames:
        fov = detect_fov(frame)
        masks.append(fov & ~highlight_mask(frame, fov))
    return torch.from_numpy(np.stack(masks))[:, None].to(target.device, target.dtype)


def masked_lowres(frame: np.ndarray, exclude: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """The network's low-res input with excluded pixels (border, highlights) left out.

    The same antialiased bilinear resize as :meth:`DeepUPE.lowres`, but normalised over the
    kept pixels only (a weighted average), so excluded pixels do not bias the statistics; cells
    with nothing kept (e.g. the corners outside a round view) are inpainted from their
    surroundings (OpenCV Telea) rather than left black.

    Args:
        frame: ``(H, W, 3)`` uint8 RGB.
        exclude: ``(H, W)`` bool, True where a pixel must not count.
        size: ``(h, w)`` of the output.

    Returns:
        ``(1, 3, h, w)`` float in [0, 1].
    """
    keep = ~exclude
    x = torch.from_numpy(np.ascontiguousarray(frame * keep[..., None])).permute(2, 0, 1)[None]
    k = torch.from_numpy(keep.astype(np.uint8) * 255)[None, None]

    def down(t: torch.Tensor) -> torch.Tensor:
        return F.interpolate(t, size=size, mode="bilinear", antialias=True, align_corners=False).float()

    weight = down(k) / 255
    low = down(x) / 255 / weight.clamp_min(1e-3)
    hole = (weight[0, 0] < 0.05).numpy().astype(np.uint8)
    if not hole.any():
        return low.clamp(0, 1)
    if hole.all():
        return down(torch.from_numpy(frame).permute(2, 0, 1)[None]) / 255
    u8 = (low[0].permute(1, 2, 0).clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    filled = cv2.inpaint(u8, hole, 3, cv2.INPAINT_TELEA)
    out = torch.from_numpy(filled).permute(2, 0, 1)[None].float() / 255
    return torch.where(torch.from_numpy(hole.astype(bool))[None, None], out, low.clamp(0, 1))


def cap_highlights(output: np.ndarray, frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Keep highlights from being stretched: inside ``mask``, cap each pixel's gain so the spot's
    brightest pixel just reaches white and its profile is not clipped into a bigger blob.

    Args:
        output: ``(H, W, 3)`` uint8 enhanced frame.
        frame: ``(H, W, 3)`` uint8 input.
        mask: ``(H, W)`` bool highlight mask (:func:`highlight_mask`).

    Returns:
        ``(H, W, 3)`` uint8, equal to ``output`` outside ``mask``.
    """
    if not mask.any():
        return output
    v = max_channel(frame)
    peak = cv2.dilate(np.where(mask, v, 0).astype(np.uint8), np.ones((15, 15), np.uint8))
    gain = 255.0 / np.maximum(peak, 1).astype(np.float32)
    capped = np.minimum(output.astype(np.float32), frame.astype(np.float32) * gain[..., None])
    out = output.copy()
    np.copyto(out, np.round(capped).astype(np.uint8), where=mask[..., None])
    return out


def luminance_gain(output: np.ndarray, frame: np.ndarray, sigma: float = 0.01) -> np.ndarray:
    """Smooth per-pixel gain ``Y(out) / Y(in)`` of a rendered frame, ``(H, W)`` float32 >= 1.

    Both lumas are Gaussian-blurred (``sigma`` as a fraction of the shorter side) before the
    ratio, on a 1/4-size copy for speed: the gain of a Retinex output is ``1 / S``, which is
    smooth, while a per-pixel ratio would be dominated by noise in dark pixels.
    """
    h, w = frame.shape[:2]
    size = (max(8, w // 4), max(8, h // 4))
    s = max(0.5, sigma * min(size))

    def luma(img: np.ndarray) -> np.ndarray:
        small = cv2.resize(img, size, interpolation=cv2.INTER_AREA).astype(np.float32) @ LUMA
        return cv2.GaussianBlur(small, (0, 0), s)

    gain = (luma(output) + 1.0) / (luma(frame) + 1.0)
    return np.maximum(cv2.resize(gain, (w, h), interpolation=cv2.INTER_LINEAR), 1.0)


def preserve_hue(output: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Take the output's brightness and the input's colour: ``I * Y(out) / Y(I)`` per pixel.

    A per-pixel scalar gain keeps the RGB ratios, hence the hue (and, for the gamma-encoded
    values' power law, the CIELAB hue angle); the gain is capped so no channel clips, which
    would shift the hue again. Where the model deliberately changes colour (undoing a colour
    cast), this option undoes that too.
    """
    x = frame.astype(np.float32)
    y_in = cv2.transform(x, LUMA[None])  # OpenCV: several times faster than a numpy matmul here
    y_out = cv2.transform(output.astype(np.float32), LUMA[None])
    gain = np.where(y_in > 0, y_out / np.maximum(y_in, 1e-6), 1.0)
    gain = np.minimum(gain, 255.0 / np.maximum(max_channel(x), 1.0))
    return np.clip(x * gain[..., None] + 0.5, 0, 255).astype(np.uint8)


def solve_exposure(brightness: Callable[[float], float], target: float, k_max: float = 3.0,
                   iters: int = 12) -> float:
    """Strength ``k`` whose output has mean brightness ``target``, by bisection on [0, k_max].

    ``brightness(k)`` must be non-decreasing in ``k`` (true for ``R = I / S**k`` with ``S <= 1``).
    A target below ``brightness(0)`` gives 0 (the input: Retinex never darkens); one above
    ``brightness(k_max)`` gives ``k_max``.
    """
    lo, hi = 0.0, k_max
    if brightness(lo) >= target:
        return lo
    if brightness(hi) <= target:
        return hi
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if brightness(mid) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class FidelityConfig:
    """Optional steps of :class:`~endolight.enhancer.Enhancer` around the model (all off by
    default: each costs time per frame, see docs/fidelity.md for what each buys)."""

    mask_stats: bool = False  # the network's low-res input ignores the border (and highlights)
    highlights: bool = False  # detect specular highlights: kept out of the statistics, gain capped
    preserve_hue: bool = False  # brightness from the model, colour (RGB ratios) from the input
    exposure: float | None = None  # target mean brightness (luma, 0-1) of the view; sets strength

    def __post_init__(self) -> None:
        if self.exposure is not None and not 0.0 < self.exposure < 1.0:
            raise ValueError(f"exposure must be in (0, 1), got {self.exposure}")
