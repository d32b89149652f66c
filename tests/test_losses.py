"""Each loss is zero (or minimal) where it should be and positive otherwise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from endolight.losses import (
    LossWeights,
    reconstruction_loss,
    smoothness_loss,
    ssim_mae_loss,
    ssim_map,
    total_loss,
)


def test_reconstruction_zero_for_exact_illumination():
    target = torch.rand(2, 3, 32, 32) * 0.8 + 0.1
    illum = torch.rand(2, 3, 32, 32) * 0.5 + 0.5
    image = target * illum  # I = S * R exactly
    assert reconstruction_loss(image, illum, target) < 1e-12
    assert reconstruction_loss(image, illum.clamp(max=0.9) * 0.9, target) > 1e-4


def test_reconstruction_measures_the_models_division_in_the_offset_space():
    # With black_offset beta the model outputs (I + beta) / S - beta: Lm is zero for the S that
    # makes that exact, and not for the plain I / S's.
    target = torch.rand(2, 3, 32, 32) * 0.8 + 0.1
    illum = torch.rand(2, 1, 32, 32) * 0.5 + 0.5
    beta = 0.055
    image = (target + beta) * illum - beta  # (I + beta) / S - beta = T exactly
    assert reconstruction_loss(image, illum, target, offset=beta) < 1e-12
    assert reconstruction_loss(image, illum, target) > 1e-4
    assert total_loss(image, illum, target, target, LossWeights(), offset=beta)["lm"] < 1e-12


def test_smoothness_zero_for_constant_and_prefers_edges_of_input():
    image = torch.rand(1, 3, 32, 32)
    assert smoothness_loss(torch.full((1, 3, 32, 32), 0.7), image) == 0
    # A step in S costs far less where the input has the same step than where it is flat.
    step = torch.zeros(1, 3, 32, 32)
    step[..., 16:] = 1.0
    s = 0.3 + 0.5 * step
    flat_input = torch.full((1, 3, 32, 32), 0.5)
    edge_input = 0.1 + 0.8 * step
    assert smoothness_loss(s, edge_input) > 0
    assert smoothness_loss(s, edge_input) < smoothness_loss(s, flat_input) / 100


def test_ssim_mae_zero_on_identical_and_grows_with_error():
    t = torch.rand(1, 3, 48, 48)
    assert ssim_mae_loss(t, t) < 1e-6
    small = ssim_mae_loss((t + 0.02 * torch.randn_like(t)).clamp(0, 1), t)
    large = ssim_mae_loss((t + 0.2 * torch.randn_like(t)).clamp(0, 1), t)
    assert 0 < small < large


def test_total_is_weighted_sum():
    t = torch.rand(1, 3, 32, 32) * 0.8 + 0.1
    s = torch.rand(1, 3, 32, 32) * 0.5 + 0.5
    i = t * s * 0.9
    out = (i / s).clamp(0, 1)
    w = LossWeights(wm=2.0, wt=0.3, ws=0.01)
    terms = total_loss(i, s, out, t, w)
    expected = 2.0 * terms["lm"] + 0.3 * terms["lt"] + 0.01 * terms["ls"]
    torch.testing.assert_close(terms["loss"], expected)
    assert all(terms[k] > 0 for k in ("lm", "lt", "ls"))


# --- Values, not just signs (mutation testing, docs/testing.md): each loss against its formula
# computed independently in numpy / scikit-image, with and without a mask.


def _frames(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(2, 3, 24, 32, generator=g) * 0.8 + 0.1
    illum = torch.rand(2, 3, 24, 32, generator=g) * 0.5 + 0.5
    image = (target * illum * 0.9 + 0.02 * torch.rand(2, 3, 24, 32, generator=g)).clamp(0, 1)
    mask = torch.zeros(2, 1, 24, 32, dtype=torch.bool)
    mask[0, :, 4:20, 6:30] = True
    mask[1, :, :, :10] = True
    return image, illum, target, mask


def test_reconstruction_loss_is_the_masked_mean_square_error():
    image, illum, target, mask = _frames()
    err = ((image / illum - target) ** 2).double().numpy()
    assert float(reconstruction_loss(image, illum, target)) == pytest.approx(err.mean(), rel=1e-5)
    m = np.broadcast_to(mask.numpy(), err.shape)  # every channel of a masked pixel counts
    assert float(reconstruction_loss(image, illum, target, mask)) == pytest.approx(err[m].mean(), rel=1e-5)
    # An empty mask gives 0, not NaN.
    assert float(reconstruction_loss(image, illum, target, torch.zeros_like(mask))) == 0.0


def _smoothness_reference(illum, image, alpha, lam, eps) -> float:
    rgb = image.double().numpy()
    y = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]  # kornia's grayscale (Rec.601)
    log_l = np.log(y + 1e-4)[:, None]
    wx = lam / (np.abs(np.diff(log_l, axis=3)) ** alpha + eps)
    wy = lam / (np.abs(np.diff(log_l, axis=2)) ** alpha + eps)
    s = illum.double().numpy()
    return float((wx * np.diff(s, axis=3) ** 2).mean() + (wy * np.diff(s, axis=2) ** 2).mean())


def test_smoothness_loss_is_the_weighted_least_squares_formula():
    image, illum, _, _ = _frames(1)
    w = LossWeights()
    # Defaults are DeepUPE's (the same as LossWeights'): alpha 1.2, lambda 1.5, eps 1e-4.
    expected = _smoothness_reference(illum, image, 1.2, 1.5, 1e-4)
    assert float(smoothness_loss(illum, image)) == pytest.approx(expected, rel=1e-4)
    tuned = smoothness_loss(illum, image, w.smooth_alpha, w.smooth_lambda, w.smooth_eps)
    assert float(tuned) == pytest.approx(expected, rel=1e-4)
    other = _smoothness_reference(illum, image, 0.8, 2.0, 1e-2)
    assert abs(other - expected) > 0.1 * expected  # the parameters matter on this frame
    assert float(smoothness_loss(illum, image, 0.8, 2.0, 1e-2)) == pytest.approx(other, rel=1e-4)


def _ssim_map(output, target) -> np.ndarray:
    """Per-pixel SSIM (channel mean) of Wang et al.'s 11 x 11 Gaussian window, 'valid' part only."""
    maps = []
    for o, t in zip(output.double().numpy(), target.double().numpy(), strict=True):
        _, full = structural_similarity(o, t, data_range=1, channel_axis=0, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False, full=True)
        maps.append(full.mean(0)[5:-5, 5:-5])
    return np.stack(maps)[:, None]


def test_ssim_mae_loss_is_the_weighted_mix_over_the_mask():
    image, illum, target, mask = _frames(2)
    output = (image / illum).clamp(0, 1)
    output[..., 16:] = 1 - output[..., 16:]  # a large error on the right half only
    ssim_map = _ssim_map(output, target)
    mae = (output - target).abs().double().numpy()
    expected = 0.84 * (1 - ssim_map.mean()) + 0.16 * mae.mean()
    assert float(ssim_mae_loss(output, target)) == pytest.approx(expected, rel=1e-3)
    assert float(ssim_mae_loss(output, target, 0.3)) == pytest.approx(
        0.3 * (1 - ssim_map.mean()) + 0.7 * mae.mean(), rel=1e-3)
    # Masked: SSIM over the windows centred on masked pixels, MAE over the masked pixels.
    inner = mask.numpy()[..., 5:-5, 5:-5]
    m = np.broadcast_to(mask.numpy(), mae.shape)
    masked = 0.84 * (1 - ssim_map[inner].mean()) + 0.16 * mae[m].mean()
    assert abs(masked - expected) > 1e-3  # the mask matters here
    assert float(ssim_mae_loss(output, target, mask=mask)) == pytest.approx(masked, rel=1e-3)


def test_total_loss_masks_lm_and_lt_but_not_ls():
    image, illum, target, mask = _frames(3)
    output = (image / illum).clamp(0, 1)
    w = LossWeights()
    terms = total_loss(image, illum, output, target, w, mask)
    torch.testing.assert_close(terms["lm"], reconstruction_loss(image, illum, target, mask))
    torch.testing.assert_close(terms["lt"], ssim_mae_loss(output, target, w.ssim_alpha, mask))
    torch.testing.assert_close(terms["ls"], smoothness_loss(illum, image))
    torch.testing.assert_close(terms["loss"], terms["lm"] + 0.5 * terms["lt"] + 0.002 * terms["ls"])
    assert float(terms["lm"]) != pytest.approx(float(reconstruction_loss(image, illum, target)), rel=1e-3)


def test_total_loss_uses_every_smoothness_weight():
    # Non-default smoothness parameters reach Ls (alpha, lambda and eps each change it here).
    image, illum, target, _ = _frames(4)
    output = (image / illum).clamp(0, 1)
    w = LossWeights(smooth_alpha=1.0, smooth_lambda=2.0, smooth_eps=1e-2)
    ls = total_loss(image, illum, output, target, w)["ls"]
    torch.testing.assert_close(ls, smoothness_loss(illum, image, 1.0, 2.0, 1e-2))
    for other in ((1.2, 2.0, 1e-2), (1.0, 1.5, 1e-2), (1.0, 2.0, 1e-4)):
        assert abs(float(smoothness_loss(illum, image, *other)) - float(ls)) > 1e-3 * float(ls), other


def test_ssim_map_equals_kornia_in_values_and_gradients():
    """The loss's one-convolution SSIM is kornia's 'valid' SSIM, per channel, and trains the same."""
    import kornia

    image, illum, target, _ = _frames(2)
    output = (image / illum).clamp(0, 1)
    output[:, 1, :, :20] = 1 - output[:, 1, :, :20]  # an error in one channel only
    mine = output.clone().requires_grad_()
    theirs = output.clone().requires_grad_()
    ours = ssim_map(mine, target)
    ref = kornia.metrics.ssim(theirs, target, 11, max_val=1.0, padding="valid")
    assert ours.shape == ref.shape == (2, 3, target.shape[2] - 10, target.shape[3] - 10)
    values = ref.detach()
    assert float((ours.detach() - values).abs().max()) < 1e-5
    assert float(values[:, 1].mean()) < float(values[:, 0].mean()) - 0.1  # the channels are kept apart
    double = ssim_map(output.double(), target.double())  # the window follows the images' dtype
    assert double.dtype == torch.float64 and float((double - values).abs().max()) < 1e-5
    (ours * torch.linspace(0, 1, ours.shape[-1])).sum().backward()
    (ref * torch.linspace(0, 1, ref.shape[-1])).sum().backward()
    assert float(mine.grad.abs().max()) > 1e-3
    torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-4, atol=1e-6)


def test_colour_loss_weighs_a_regions_brightness_not_its_texture():
    # DPED's colour loss (LossWeights.wc): a checkerboard of +-0.1 on the target (texture) is
    # nearly invisible after the 3 px blur, a region 0.1 too bright is not. Lm sees both alike.
    # Against a blur computed independently (OpenCV, same kernel size), masked as the others.
    import cv2

    from endolight.losses import colour_loss

    image, illum, target, mask = _frames(3)
    yy, xx = np.mgrid[:24, :32]
    texture = torch.from_numpy(np.where((yy + xx) % 2, 0.1, -0.1)).float()
    brighter = target.clone()
    brighter[..., :, :16] += 0.1
    assert colour_loss(target + texture, target) < 1e-4 < 0.004 < colour_loss(brighter, target)
    assert abs(float(reconstruction_loss(target + texture, torch.ones(1), target)) - 0.01) < 1e-6
    out = (image / illum).clamp(0, 1)

    def blur(x):
        return np.stack([cv2.GaussianBlur(c, (19, 19), 3.0, borderType=cv2.BORDER_REFLECT_101)
                         for c in x.reshape(-1, 24, 32).numpy()]).reshape(x.shape)

    err = (blur(out) - blur(target)) ** 2
    m = np.broadcast_to(mask.numpy(), err.shape)
    torch.testing.assert_close(colour_loss(out, target, 3.0, mask).double(),
                               torch.tensor(err[m].mean(), dtype=torch.float64), rtol=1e-4, atol=1e-7)
    terms = total_loss(image, illum, out, target, LossWeights(wc=5.0))
    torch.testing.assert_close(terms["loss"], terms["lm"] + 0.5 * terms["lt"] + 0.002 * terms["ls"]
                               + 5.0 * terms["lc"])
    assert "lc" not in total_loss(image, illum, out, target, LossWeights())
