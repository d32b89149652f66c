"""Each loss is zero (or minimal) where it should be and positive otherwise."""

from __future__ import annotations

import torch

from endolight.losses import LossWeights, reconstruction_loss, smoothness_loss, ssim_mae_loss, total_loss


def test_reconstruction_zero_for_exact_illumination():
    target = torch.rand(2, 3, 32, 32) * 0.8 + 0.1
    illum = torch.rand(2, 3, 32, 32) * 0.5 + 0.5
    image = target * illum  # I = S * R exactly
    assert reconstruction_loss(image, illum, target) < 1e-12
    assert reconstruction_loss(image, illum.clamp(max=0.9) * 0.9, target) > 1e-4


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
