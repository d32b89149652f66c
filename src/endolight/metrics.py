"""Image quality metrics: every table in the project takes its numbers from here.

Full-reference metrics take ``(B, 3, H, W)`` float tensors in [0, 1] (data range 1) and return
one value per image ``(B,)``. Those with a ``mask`` argument (``(B, 1, H, W)`` bool, e.g. the
field of view) average over the masked pixels only; ``None`` means the whole frame.
"""

from __future__ import annotations

import math

import cv2
import kornia
import numpy as np
import torch
import torch.nn.functional as F
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.measure import shannon_entropy

SSIM_WINDOW = 11  # Wang et al. 2004: 11x11 Gaussian, sigma 1.5, 'valid' borders


def psnr(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """PSNR in dB with data range 1, per image (MSE over ``mask`` when given)."""
    mse = _masked_mean(((output - target) ** 2).mean(1, keepdim=True), _mask_or_all(output, mask))
    mse = mse.clamp_min(1e-12)
    return 10 * torch.log10(1.0 / mse)


def ssim(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """SSIM (kornia, ``padding='valid'``, data range 1; equals skimage's Wang et al. settings).

    With ``mask``, the SSIM map is averaged over the windows centred on masked pixels.
    """
    m = kornia.metrics.ssim(output, target, window_size=SSIM_WINDOW, max_val=1.0, padding="valid")
    if mask is None:
        return m.mean(dim=(1, 2, 3))
    r = SSIM_WINDOW // 2
    return _masked_mean(m.mean(1, keepdim=True), mask[..., r : mask.shape[-2] - r, r : mask.shape[-1] - r])


def _lab(image: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` sRGB in [0, 1] -> ``(H, W, 3)`` CIELAB (D65, scikit-image)."""
    return rgb2lab(image.permute(1, 2, 0).double().cpu().numpy())


def _pixels(mask: torch.Tensor | None, i: int) -> np.ndarray | slice:
    return slice(None) if mask is None else mask[i, 0].cpu().numpy()


def delta_e2000(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean CIEDE2000 colour difference per image (scikit-image's implementation), over ``mask``."""
    vals = []
    for i, (o, t) in enumerate(zip(output, target, strict=True)):
        vals.append(float(np.mean(deltaE_ciede2000(_lab(t), _lab(o))[_pixels(mask, i)])))
    return torch.tensor(vals)


def hue_shift(output: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor | None = None,
              min_chroma: float = 5.0) -> torch.Tensor:
    """Mean absolute CIELAB hue-angle difference ``|h_out - h_ref|`` in degrees (0-180), per image.

    Only pixels where both chromas are at least ``min_chroma`` count (a grey pixel's hue is
    undefined and noise there is meaningless); NaN when no pixel qualifies.
    """
    vals = []
    for i, (o, r) in enumerate(zip(output, reference, strict=True)):
        lo, lr = _lab(o), _lab(r)
        ok = np.hypot(lo[..., 1], lo[..., 2]) >= min_chroma
        ok &= np.hypot(lr[..., 1], lr[..., 2]) >= min_chroma
        ok &= np.ones(ok.shape, bool) if mask is None else mask[i, 0].cpu().numpy()
        dh = np.arctan2(lo[..., 2], lo[..., 1]) - np.arctan2(lr[..., 2], lr[..., 1])
        dh = np.abs(np.rad2deg(np.angle(np.exp(1j * dh))))  # wrapped to [0, 180]
        vals.append(float(dh[ok].mean()) if ok.any() else float("nan"))
    return torch.tensor(vals)


def flat_dark_mask(dim: torch.Tensor, target: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                   quantile: float = 0.25) -> torch.Tensor:
    """``(B, 1, H, W)`` bool: flat, dark patches, where lifting a frame shows its noise.

    Dark: the dim input's smoothed luma is in its lowest ``quantile`` within ``mask``. Flat: the
    smoothed gradient of ``target`` (the noise-free reference; the dim input when ``None``) is
    below its median within ``mask``, so texture is not mistaken for noise.
    """
    def smooth_luma(x: torch.Tensor) -> torch.Tensor:
        return kornia.filters.gaussian_blur2d(kornia.color.rgb_to_grayscale(x), (9, 9), (2.0, 2.0))

    if mask is None:
        mask = torch.ones_like(dim[:, :1], dtype=torch.bool)
    y = smooth_luma(dim)
    grad = kornia.filters.sobel(smooth_luma(dim if target is None else target))
    out = torch.zeros_like(mask)
    for i in range(dim.shape[0]):
        m = mask[i]
        dark = y[i] <= torch.quantile(y[i][m], quantile)
        flat = grad[i] <= torch.quantile(grad[i][m], 0.5)
        out[i] = dark & flat & m
    return out


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


def tissue_metrics(output: torch.Tensor, target: torch.Tensor, dim: torch.Tensor,
                   mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Metrics inside the field of view ``mask``: PSNR, SSIM, ΔE2000 and hue shift against the
    target; the output's brightness uniformity; and the output's noise (8-bit levels) in the
    flat dark patches of :func:`flat_dark_mask` (where the dim input needed lifting)."""
    patches = flat_dark_mask(dim, target, mask)
    return {
        "psnr_fov": psnr(output, target, mask),
        "ssim_fov": ssim(output, target, mask),
        "delta_e_fov": delta_e2000(output, target, mask),
        "hue_fov": hue_shift(output, target, mask),
        "uniformity": brightness_uniformity(output, mask),
        "noise": noise_sigma(output, patches),
    }


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


def _warp_previous(clip: torch.Tensor, flows: list[np.ndarray]) -> torch.Tensor:
    """Frames ``0..T-2`` of ``(T, 3, H, W)`` warped onto frames ``1..T-1`` along ``flows``."""
    h, w = clip.shape[-2:]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    out = []
    for prev, fl in zip(clip[:-1], flows, strict=True):
        img = np.ascontiguousarray(prev.permute(1, 2, 0).cpu().numpy())
        warped = cv2.remap(img, gx + fl[..., 0], gy + fl[..., 1], cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
        out.append(torch.from_numpy(warped).permute(2, 0, 1))
    return torch.stack(out).to(clip)


def flicker(inputs: torch.Tensor, outputs: torch.Tensor, cells: int = 16, flow: bool = False) -> torch.Tensor:
    """Temporal flicker of an enhanced clip relative to its input; scalar tensor, 1 = as steady.

    ``(mean |dO| / mean O) / (mean |dI| / mean I)`` where ``d`` is the change between
    consecutive frames of the ``(T, 3, H, W)`` clips in [0, 1], taken on the means of
    ``cells`` x ``cells`` regions (the bilateral grid's resolution): flicker is a change of
    regional brightness, not per-pixel grain, which averages out there. Each change is
    relative to the clip's mean level, so a steady gain scores 1 and extra frame-to-frame
    wobble of the enhancement scores above 1. With ``flow``, each previous frame is first warped
    onto the next by dense optical flow of the input (OpenCV Farneback), so motion does not
    count (the warping error of Lai et al., ECCV 2018, normalised the same way).
    """
    if inputs.shape != outputs.shape or inputs.dim() != 4 or inputs.shape[0] < 2:
        raise ValueError(f"need two (T >= 2, 3, H, W) clips of one shape, got {tuple(inputs.shape)} "
                         f"and {tuple(outputs.shape)}")
    prev_in, prev_out = inputs[:-1], outputs[:-1]
    if flow:
        gray = [cv2.cvtColor(np.ascontiguousarray((f.permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)),
                             cv2.COLOR_RGB2GRAY) for f in inputs]
        flows = [cv2.calcOpticalFlowFarneback(cur, prev, None, 0.5, 3, 15, 3, 5, 1.2, 0)
                 for prev, cur in zip(gray[:-1], gray[1:], strict=True)]
        prev_in, prev_out = _warp_previous(inputs, flows), _warp_previous(outputs, flows)
    size = (min(cells, inputs.shape[-2]), min(cells, inputs.shape[-1]))

    def change(cur: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        a, b = F.adaptive_avg_pool2d(cur, size), F.adaptive_avg_pool2d(prev, size)
        return (a - b).abs().mean() / a.mean().clamp_min(1e-6)

    return change(outputs[1:], prev_out) / change(inputs[1:], prev_in).clamp_min(1e-12)


# --- No-reference metrics (real dim frames have no ground truth) ---------------------------
# Each takes ``(B, 3, H, W)`` float [0, 1] and an optional ``mask`` ``(B, 1, H, W)`` bool (the
# field of view, e.g. from ``endolight.fov.fov_mask``; default: every pixel) and returns ``(B,)``.


def _luma(image: torch.Tensor) -> torch.Tensor:
    return kornia.color.rgb_to_grayscale(image)


def _mask_or_all(image: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return torch.ones_like(image[:, :1], dtype=torch.bool) if mask is None else mask.bool()


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(x.dtype)
    return (x * m).sum((1, 2, 3)) / m.sum((1, 2, 3)).clamp_min(1)


def mean_brightness(image: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean luma (ITU-R 601, kornia) inside the mask."""
    return _masked_mean(_luma(image), _mask_or_all(image, mask))


def brightness_uniformity(
    image: torch.Tensor, mask: torch.Tensor | None = None, centre: float = 0.35, periphery: float = 0.7
) -> torch.Tensor:
    """Periphery-to-centre luma ratio: 1 is even light, below 1 a dark periphery (the endoscope's
    falloff), above 1 a periphery brighter than the centre.

    Radius is measured in the ellipse inscribed in the mask's bounding box (the field of view's
    own outline for a round view; the frame's without a mask), 1 at its edge: centre is
    ``r < centre``, periphery ``r > periphery``, both inside the mask.
    """
    m = _mask_or_all(image, mask)
    r = torch.empty(m.shape, dtype=image.dtype, device=image.device)
    for b in range(m.shape[0]):
        rows, cols = torch.nonzero(m[b, 0].any(1))[:, 0], torch.nonzero(m[b, 0].any(0))[:, 0]
        if not len(rows):
            rows, cols = torch.arange(m.shape[-2]), torch.arange(m.shape[-1])
        y0, h = int(rows[0]), int(rows[-1]) + 1 - int(rows[0])
        x0, w = int(cols[0]), int(cols[-1]) + 1 - int(cols[0])
        ys = (torch.arange(m.shape[-2], device=image.device) - y0 + 0.5) / h * 2 - 1
        xs = (torch.arange(m.shape[-1], device=image.device) - x0 + 0.5) / w * 2 - 1
        r[b, 0] = torch.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2)
    y = _luma(image)
    return _masked_mean(y, m & (r > periphery)) / _masked_mean(y, m & (r < centre)).clamp_min(1e-6)


def noise_sigma(image: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Noise standard deviation of the luma, in 8-bit levels, inside the mask.

    Immerkaer's estimator (CVIU 1996): ``sigma = sqrt(pi / 2) / 6 * mean |I * N|`` with ``N`` the
    3x3 difference-of-Laplacians kernel, which cancels smooth structure. Hand-written because
    scikit-image's ``estimate_sigma`` works on whole images only, and this one is needed on a mask.
    """
    kernel = torch.tensor([[1.0, -2.0, 1.0], [-2.0, 4.0, -2.0], [1.0, -2.0, 1.0]], device=image.device)
    resp = F.conv2d(_luma(image) * 255, kernel[None, None]).abs()
    m = _mask_or_all(image, mask)[..., 1:-1, 1:-1]
    return math.sqrt(math.pi / 2) / 6 * _masked_mean(resp, m)


def lifted_noise(
    output: torch.Tensor, image: torch.Tensor, mask: torch.Tensor | None = None, quantile: float = 0.25
) -> torch.Tensor:
    """Noise (:func:`noise_sigma`, 8-bit levels) of the output where the enhancer lifts most: the
    darkest ``quantile`` of the input's luma inside the mask."""
    m = _mask_or_all(image, mask)
    y = _luma(image)
    dark = torch.zeros_like(m)
    for b in range(y.shape[0]):
        level = torch.quantile(y[b][m[b]].float(), quantile) if m[b].any() else y.new_tensor(0.0)
        dark[b] = m[b] & (y[b] <= level)
    return noise_sigma(output, dark)


def colourfulness(image: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Hasler & Suesstrunk (2003) colourfulness on the 8-bit scale, inside the mask:
    ``sqrt(var(rg) + var(yb)) + 0.3 sqrt(mean(rg)^2 + mean(yb)^2)``, ``rg = R - G``,
    ``yb = (R + G) / 2 - B``."""
    m = _mask_or_all(image, mask)
    r, g, b = (image * 255).unbind(1)
    rg, yb = (r - g)[:, None], (0.5 * (r + g) - b)[:, None]
    mu_rg, mu_yb = _masked_mean(rg, m), _masked_mean(yb, m)
    var_rg = _masked_mean(rg**2, m) - mu_rg**2
    var_yb = _masked_mean(yb**2, m) - mu_yb**2
    return torch.sqrt((var_rg + var_yb).clamp_min(0)) + 0.3 * torch.sqrt(mu_rg**2 + mu_yb**2)


def entropy(image: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Shannon entropy (bits) of the 8-bit luma histogram inside the mask (scikit-image)."""
    m = _mask_or_all(image, mask)
    y = (_luma(image) * 255 + 0.5).clamp(0, 255).to(torch.uint8)
    return torch.tensor([float(shannon_entropy(y[b][m[b]].cpu().numpy(), base=2)) for b in range(len(y))])


def no_reference(output: torch.Tensor, image: torch.Tensor, mask: torch.Tensor | None = None
                 ) -> dict[str, torch.Tensor]:
    """Every no-reference measure of an enhanced frame ``output`` of the dim ``image``; LOE is
    against the input's lightness order (the enhancer should not reorder it)."""
    return {
        "brightness": mean_brightness(output, mask),
        "uniformity": brightness_uniformity(output, mask),
        "loe_input": lightness_order_error(output, image),
        "lifted_noise": lifted_noise(output, image, mask),
        "colourfulness": colourfulness(output, mask),
        "entropy": entropy(output, mask),
        # Brightening should not recolour: hue against the input's, where both are coloured.
        "hue_shift_input": hue_shift(output, image, mask, min_chroma=10),
    }
