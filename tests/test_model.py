"""The network: slicing against a slow reference, Retinex bounds, gradients, any resolution."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from endolight.model import DeepUPE, ModelConfig
from endolight.model.slicing import EPS, apply_affine, slice_grid


def slow_slice(grid: np.ndarray, guide: np.ndarray) -> np.ndarray:
    """HDRNet slicing written out pixel by pixel: tent weights over every grid cell."""
    c, d, gh, gw = grid.shape
    h, w = guide.shape
    out = np.zeros((c, h, w))
    for y in range(h):
        for x in range(w):
            # Half-pixel centres, coordinates clamped to the grid (border padding).
            cy = np.clip((y + 0.5) / h * gh - 0.5, 0, gh - 1)
            cx = np.clip((x + 0.5) / w * gw - 0.5, 0, gw - 1)
            cz = np.clip(guide[y, x] * d - 0.5, 0, d - 1)
            for k in range(d):
                wz = max(1 - abs(cz - k), 0)
                for i in range(gh):
                    wy = max(1 - abs(cy - i), 0)
                    for j in range(gw):
                        wgt = wz * wy * max(1 - abs(cx - j), 0)
                        if wgt:
                            out[:, y, x] += wgt * grid[:, k, i, j]
    return out


def test_slice_matches_slow_reference():
    rng = np.random.default_rng(0)
    grid = rng.normal(size=(12, 4, 3, 5))
    guide = rng.uniform(size=(7, 9))
    guide[0, 0], guide[1, 1] = 0.0, 1.0  # the depth borders
    fast = slice_grid(torch.from_numpy(grid)[None], torch.from_numpy(guide)[None, None])[0]
    np.testing.assert_allclose(fast.numpy(), slow_slice(grid, guide), atol=1e-10)


def test_apply_affine_is_matrix_times_rgb_plus_offset():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(3, 4))
    rgb = rng.uniform(size=3)
    coeffs = torch.from_numpy(a.reshape(12))[None, :, None, None]
    out = apply_affine(coeffs, torch.from_numpy(rgb)[None, :, None, None])
    np.testing.assert_allclose(out[0, :, 0, 0].numpy(), a[:, :3] @ rgb + a[:, 3])


@pytest.fixture(scope="module", params=["grey", "rgb"])
def model(request) -> DeepUPE:
    torch.manual_seed(0)
    m = DeepUPE(ModelConfig(illumination=request.param))
    # Random, not-tiny prediction weights so the bounds are exercised away from the init.
    torch.nn.init.normal_(m.coeffs.pred.weight, std=0.5)
    return m.eval()


@pytest.mark.parametrize("kind", ["black", "white", "random"])
def test_illumination_bounds_and_finite_output(model, kind):
    torch.manual_seed(1)
    x = {"black": torch.zeros(1, 3, 96, 128), "white": torch.ones(1, 3, 96, 128),
         "random": torch.rand(1, 3, 96, 128)}[kind]
    with torch.no_grad():
        p = model(x)
    s = p.illumination
    # The illumination bounds the frame it divides: the denoised one (the input without denoise).
    assert torch.all(s >= torch.clamp(p.denoised, min=EPS) - 1e-6)
    assert torch.all(s <= 1 + 1e-6)
    assert torch.isfinite(p.output).all()
    assert p.output.min() >= 0 and p.output.max() <= 1
    if kind == "black":
        assert torch.all(p.output == 0)  # black stays black: R = 0 / S


def test_gradients_reach_grid_and_guide(model):
    x = torch.rand(1, 3, 64, 80)
    grid = model.grid(x).detach().requires_grad_(True)
    p = model.render(grid, x)
    p.output.mean().backward()
    assert grid.grad is not None and grid.grad.abs().sum() > 0
    guide_grads = [q.grad for q in model.guide.parameters()]
    assert all(g is not None for g in guide_grads)
    assert sum(float(g.abs().sum()) for g in guide_grads) > 0
    model.zero_grad()


@pytest.mark.parametrize("size", [(37, 53), (256, 256), (300, 1000), (1081, 1921)])
def test_any_resolution_and_aspect(model, size):
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        p = model(x)
    channels = 1 if model.cfg.illumination == "grey" else 3
    assert p.output.shape == x.shape and p.illumination.shape == (1, channels, *size)
    assert p.grid.shape == (1, model.cfg.n_coeffs, 8, 16, 16)  # 12 affine (+ denoising strength)


def test_strength_zero_is_identity_and_monotone(model):
    x = torch.rand(1, 3, 48, 64) * 0.5
    with torch.no_grad():
        outs = [model(x, strength=k).output for k in (0.0, 0.25, 0.5, 1.0)]
    torch.testing.assert_close(outs[0], x)
    means = [float(o.mean()) for o in outs]
    assert means == sorted(means) and means[-1] > means[0]


def test_grey_illumination_keeps_rgb_ratios_and_never_clips():
    torch.manual_seed(2)
    m = DeepUPE(ModelConfig(illumination="grey")).eval()
    torch.nn.init.normal_(m.coeffs.pred.weight, std=0.5)
    x = torch.rand(1, 3, 48, 64) * 0.9 + 0.05
    with torch.no_grad():
        p = m(x)
    gain = p.output / p.denoised  # one gain per pixel for all three channels of the divided frame
    torch.testing.assert_close(gain, gain[:, :1].expand_as(gain))
    assert float(gain.min()) >= 1 - 1e-6 and float(p.output.max()) <= 1
    assert float(gain.max()) > 1.05  # it does brighten


def test_config_validates_grid_ratio():
    with pytest.raises(ValueError):
        ModelConfig(lowres=256, grid_size=24)
    assert ModelConfig(lowres=256, grid_size=16).n_splat == 4
    assert ModelConfig.from_json(ModelConfig(grid_depth=4).to_json()).grid_depth == 4
    with pytest.raises(ValueError, match="illumination"):
        ModelConfig(illumination="hsv")
    # A checkpoint written before the option existed was trained with per-channel S.
    assert ModelConfig.from_json('{"grid_depth": 8}').illumination == "rgb"
    assert ModelConfig.from_json(ModelConfig().to_json()).illumination == "grey"
