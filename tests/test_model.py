"""The network: slicing against a slow reference, Retinex bounds, gradients, any resolution."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from endolight.model import DeepUPE, ModelConfig
from endolight.model.denoise import (
    binomial3,
    box_mean,
    denoise,
    guided_coefficients,
    half_mean,
    lowres_size,
    luma,
    shrink,
    upsample,
)
from endolight.model.net import luma_histogram
from endolight.model.slicing import (
    EPS,
    LEVEL0,
    apply_affine,
    dequantise,
    grey_grid,
    illumination,
    slice_grid,
    slice_grid_gather,
)


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


@pytest.fixture(scope="module", ids=lambda p: "-".join(p),
                params=[("grey", "sigmoid"), ("rgb", "sigmoid"), ("grey", "power"), ("rgb", "power")])
def model(request) -> DeepUPE:
    torch.manual_seed(0)
    illumination, curve = request.param
    m = DeepUPE(ModelConfig(illumination=illumination, curve=curve))
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


def test_luma_histogram_counts_each_pixel_once_between_its_two_nearest_bins():
    # 4 bins, centres 0.125, 0.375, 0.625, 0.875. Luma 0.5 (grey) lies halfway between bins 1
    # and 2; 0.125 exactly on bin 0; black and white below / above the end centres: wholly in
    # the end bins. Each pixel adds 1/4 of the frame (2x2 frame).
    grey = [0.5, 0.125, 0.0, 1.0]
    frame = torch.tensor(grey, dtype=torch.float64).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    got = luma_histogram(frame, 4)
    torch.testing.assert_close(got, torch.tensor([[0.25 + 0.25, 0.125, 0.125, 0.25]], dtype=torch.float64))
    # Luma, not one channel: pure red (luma 0.299) lies 0.304 of the way from bin 0 to bin 1.
    red = torch.zeros(1, 3, 1, 1, dtype=torch.float64)
    red[:, 0] = 1
    torch.testing.assert_close(luma_histogram(red, 4), torch.tensor([[1 - 0.696, 0.696, 0, 0]],
                                                                    dtype=torch.float64))
    assert ModelConfig(global_hist=16).global_hist == 16
    with pytest.raises(ValueError, match="global_hist"):
        ModelConfig(global_hist=-1)


# --------------------------------------------------------------------------- each step by hand
# (float64 tensors: the references below are the documented formulas, computed independently)


def test_illumination_is_the_documented_smooth_map():
    rng = np.random.default_rng(3)
    image = rng.uniform(size=(2, 3, 2, 3))
    logits = rng.normal(scale=2.0, size=(2, 3, 2, 3))
    image[0, :, 0, 0], logits[0, :, 0, 0] = 0.0, -40.0  # black, S -> 0: the EPS floor
    sig = 1 / (1 + np.exp(-logits))
    got = illumination(torch.from_numpy(logits), torch.from_numpy(image)).numpy()
    np.testing.assert_allclose(got, np.maximum(image + (1 - image) * sig, EPS), rtol=1e-12)
    assert got[0, 0, 0, 0] == EPS
    # Grey: one S from the mean logit over the channels and the largest channel of the pixel.
    m, grey_sig = image.max(1, keepdims=True), 1 / (1 + np.exp(-logits.mean(1, keepdims=True)))
    got = illumination(torch.from_numpy(logits), torch.from_numpy(image), grey=True).numpy()
    np.testing.assert_allclose(got, np.maximum(m + (1 - m) * grey_sig, EPS), rtol=1e-12)


def test_power_curve_is_a_per_pixel_gamma():
    rng = np.random.default_rng(4)
    image = rng.uniform(size=(2, 3, 2, 3))
    logits = rng.normal(scale=2.0, size=(2, 3, 2, 3))
    image[0, :, 0, 0] = 0.0  # black: the floor before the power
    sig = 1 / (1 + np.exp(-logits))
    got = illumination(torch.from_numpy(logits), torch.from_numpy(image), curve="power").numpy()
    np.testing.assert_allclose(got, np.maximum(image, EPS) ** (1 - sig), rtol=1e-12)
    assert np.all(got >= image) and np.all(got <= 1)
    m, grey_sig = image.max(1, keepdims=True), 1 / (1 + np.exp(-logits.mean(1, keepdims=True)))
    got = illumination(torch.from_numpy(logits), torch.from_numpy(image), grey=True, curve="power").numpy()
    np.testing.assert_allclose(got, np.maximum(m, EPS) ** (1 - grey_sig), rtol=1e-12)
    # One logit undoes a whole-frame gamma exactly (the paper protocol's darkening): sigmoid(a)
    # = 1 / gamma gives R = I / S = (T ** gamma) ** (1 / gamma) = T, however dark T is (down to
    # the EPS floor: T ** 4 >= 1e-4 here).
    target = torch.from_numpy(rng.uniform(0.1, 1.0, size=(1, 3, 4, 5)))
    for gamma in (1.5, 2.5, 4.0):
        logit = torch.full_like(target, -np.log(gamma - 1))  # sigmoid = 1 / gamma
        dim = target**gamma
        torch.testing.assert_close(dim / illumination(logit, dim, curve="power"), target, rtol=1e-9, atol=0)
    with pytest.raises(ValueError, match="curve must be one of"):
        ModelConfig(curve="cubic")


@pytest.mark.parametrize("curve", ["sigmoid", "power"])
def test_dequantise_reads_level_0_as_the_middle_of_what_rounds_to_it(curve):
    torch.manual_seed(5)
    plain = DeepUPE(ModelConfig(illumination="rgb", curve=curve)).eval()
    torch.nn.init.normal_(plain.coeffs.pred.weight, std=0.5)
    deq = DeepUPE(ModelConfig(illumination="rgb", curve=curve, dequantise=True)).eval()
    deq.load_state_dict(plain.state_dict())
    x = torch.rand(1, 3, 128, 192) * 0.2 + 0.02
    x[:, 2, 8:120, 16:96] = 0.0  # dark tissue: blue rounded to 0, red and green lit
    x[:, :, 8:120, 96:184] = 0.0  # no light at all (a border)
    with torch.no_grad():
        a, b = plain(x), deq(x)
    lit = (a.denoised.amax(1, keepdim=True) > 0).expand_as(x)
    zero = a.denoised == 0  # away from the patches' edges the denoised value is 0 too
    assert (zero & lit).float().mean() > 0.05 and (zero & ~lit).float().mean() > 0.05
    # R = D / S keeps 0 at 0 whatever S; the dequantised model reads a lit pixel's 0 as LEVEL0,
    # lifted by S like any dark value, and leaves the black pixels black.
    assert float(a.output[zero].abs().max()) == 0.0
    floored = zero & lit
    torch.testing.assert_close(b.denoised[floored], torch.full_like(b.denoised[floored], LEVEL0))
    torch.testing.assert_close(b.output[floored], (LEVEL0 / b.illumination[floored]).clamp(max=1.0))
    assert float(b.output[floored].min()) > LEVEL0
    assert float(b.output[zero & ~lit].abs().max()) == 0.0
    # Above the floor both models are the same function.
    above = (a.denoised > LEVEL0).all(1, keepdim=True).expand_as(x)
    torch.testing.assert_close(b.output[above], a.output[above])


def test_grey_grid_is_the_mean_affine_row():
    grid = torch.from_numpy(np.random.default_rng(4).normal(size=(2, 13, 3, 2, 5)))
    grey = grey_grid(grid)
    assert grey.shape == (2, 5, 3, 2, 5)
    for j in range(4):  # A[0, j], A[1, j], A[2, j] are channels j, 4 + j, 8 + j
        torch.testing.assert_close(grey[:, j], (grid[:, j] + grid[:, 4 + j] + grid[:, 8 + j]) / 3)
    assert torch.equal(grey[:, 4], grid[:, 12])  # the denoising strength passes unchanged
    assert grey_grid(grid[:, :12]).shape == (2, 4, 3, 2, 5)


def test_apply_affine_per_pixel_on_a_batch():
    # Per pixel and per batch item (H != W, so a swapped axis shows), for 3 rows and for 1.
    rng = np.random.default_rng(5)
    image = rng.uniform(size=(2, 3, 2, 3))
    for n in (3, 1):
        a = rng.normal(size=(2, n, 4, 2, 3))
        got = apply_affine(torch.from_numpy(a.reshape(2, 4 * n, 2, 3)), torch.from_numpy(image)).numpy()
        want = np.einsum("bnjhw,bjhw->bnhw", a[:, :, :3], image) + a[:, :, 3]
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_slice_matches_slow_reference_per_batch_item():
    rng = np.random.default_rng(6)
    grid = rng.normal(size=(2, 5, 3, 4, 2))  # Gh != Gw, D = 3
    guide = rng.uniform(size=(2, 5, 6))
    fast = slice_grid(torch.from_numpy(grid), torch.from_numpy(guide)[:, None]).numpy()
    for i in range(2):
        np.testing.assert_allclose(fast[i], slow_slice(grid[i], guide[i]), atol=1e-10)


def test_lowres_size_luma_and_shrink():
    assert lowres_size(10, 7, 4) == (3, 2)  # rounded up
    assert lowres_size(8, 8, 4) == (2, 2) and lowres_size(1, 1, 4) == (1, 1)
    rgb = torch.eye(3, dtype=torch.float64)[None, :, :, None]  # pure red, green, blue pixels
    assert luma(rgb)[0, 0, :, 0].tolist() == [0.299, 0.587, 0.114]
    image = torch.full((1, 3, 10, 7), 200, dtype=torch.uint8)
    small = shrink(image, 4)
    assert small.dtype == torch.float32 and small.shape == (1, 3, 3, 2)
    torch.testing.assert_close(small, torch.full_like(small, 200 / 255))
    # Float input stays float: a ramp along x is read at the output pixels' centres (half-pixel:
    # (j + 0.5) * 4 - 0.5), away from the edges where the antialiasing window is cut.
    ramp = torch.arange(16, dtype=torch.float64).expand(1, 3, 8, 16)
    small = shrink(ramp, 4)
    assert small.dtype == torch.float64 and small.shape == (1, 3, 2, 4)
    want = torch.tensor([5.5, 9.5], dtype=torch.float64).expand(1, 3, 2, 2)
    torch.testing.assert_close(small[..., 1:3], want)


def test_box_mean_counts_only_pixels_inside_the_image():
    x = torch.from_numpy(np.random.default_rng(7).normal(size=(1, 2, 4, 5)))
    for radius in (1, 2):
        got = box_mean(x, radius).numpy()
        for y in range(4):
            for xx in range(5):
                window = x[0, :, max(0, y - radius):y + radius + 1, max(0, xx - radius):xx + radius + 1]
                np.testing.assert_allclose(got[0, :, y, xx], window.mean((1, 2)).numpy(), rtol=1e-12)


def test_binomial3_is_the_3x3_binomial_with_edges_replicated():
    x = np.random.default_rng(3).normal(size=(1, 2, 5, 6))
    k = np.outer([1, 2, 1], [1, 2, 1]) / 16
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    want = sum(k[i, j] * padded[..., i:i + 5, j:j + 6] for i in range(3) for j in range(3))
    np.testing.assert_allclose(binomial3(torch.from_numpy(x)).numpy(), want, rtol=1e-12)


def test_half_mean_is_the_mean_of_each_2x2_block():
    x = np.random.default_rng(4).normal(size=(2, 3, 6, 8))
    want = x.reshape(2, 3, 3, 2, 4, 2).mean((3, 5))
    np.testing.assert_allclose(half_mean(torch.from_numpy(x)).numpy(), want, rtol=1e-12)


def _slow_guided(small: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter coefficients, window by window (each channel guided by luma)."""
    _, h, w = small.shape
    y = 0.299 * small[0] + 0.587 * small[1] + 0.114 * small[2]

    def win(t, i, j):
        return t[..., max(0, i - radius):i + radius + 1, max(0, j - radius):j + radius + 1]

    a, b = np.zeros((3, h, w)), np.zeros((3, h, w))
    for i in range(h):
        for j in range(w):
            wy, wi = win(y, i, j), win(small, i, j)
            var = (wy * wy).mean() - wy.mean() ** 2
            cov = (wy * wi).mean((1, 2)) - wy.mean() * wi.mean((1, 2))
            a[:, i, j] = cov / (max(var, 0) + eps)
            b[:, i, j] = wi.mean((1, 2)) - a[:, i, j] * wy.mean()
    out = np.zeros((6, h, w))
    for i in range(h):
        for j in range(w):
            out[:3, i, j], out[3:, i, j] = win(a, i, j).mean((1, 2)), win(b, i, j).mean((1, 2))
    return out


def test_guided_coefficients_match_the_window_by_window_filter():
    small = np.random.default_rng(8).uniform(size=(3, 5, 6))
    for eps in (1e-3, 0.05):
        got = guided_coefficients(torch.from_numpy(small)[None], 1, eps)[0].numpy()
        np.testing.assert_allclose(got, _slow_guided(small, 1, eps), rtol=1e-9, atol=1e-12)
    # eps = inf (the box filter): a = 0 and b the box mean of the box mean.
    got = guided_coefficients(torch.from_numpy(small)[None], 1, float("inf"))
    assert torch.all(got[:, :3] == 0)
    x = torch.from_numpy(small)[None]
    torch.testing.assert_close(got[:, 3:], box_mean(box_mean(x, 1), 1))


def test_denoise_is_the_documented_blend():
    rng = np.random.default_rng(9)
    image = torch.from_numpy(rng.uniform(size=(1, 3, 4, 6)))
    coeffs = torch.from_numpy(rng.normal(size=(1, 6, 4, 6)))  # full size: no upsampling
    lam = torch.from_numpy(rng.uniform(size=(1, 1, 4, 6)))
    y = luma(image)
    want = image + lam * (coeffs[:, :3] * y + coeffs[:, 3:] - image)
    torch.testing.assert_close(denoise(image, coeffs, lam), want)
    # Coefficients of one cell (1 x 1) apply to every pixel.
    one = coeffs[:, :, :1, :1]
    torch.testing.assert_close(denoise(image, one, lam), image + lam * (one[:, :3] * y + one[:, 3:] - image))
    up = upsample(torch.arange(4.0).reshape(1, 1, 2, 2), 4, 4)  # half-pixel bilinear, edge-clamped
    torch.testing.assert_close(up[0, 0, 0], torch.tensor([0.0, 0.25, 0.75, 1.0]))


def _composed(model: DeepUPE, x: torch.Tensor, strength: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(D, S) of DeepUPE.render written out from the parts tested above: slice the grid (the mean
    row for a grey S), denoise with the sliced strength scaled by min(k, 1), S ** k."""
    grey = model.cfg.illumination == "grey"
    grid = model.grid(x)
    coeffs = slice_grid(grey_grid(grid) if grey else grid, model.guide(x))
    n = 4 if grey else 12
    d = x
    if model.cfg.denoise:
        lam = torch.sigmoid(coeffs[:, n:n + 1]) * min(strength, 1.0)
        small = shrink(x, model.cfg.denoise_factor)
        d = denoise(x, guided_coefficients(small, model.cfg.denoise_radius, model.cfg.denoise_eps), lam)
        d = d.clamp(0, 1)
    if model.cfg.dequantise:
        d = dequantise(d)
    s = illumination(apply_affine(coeffs[:, :n], d), d, grey=grey, curve=model.cfg.curve) ** strength
    return d, s


@pytest.mark.parametrize("cfg", [ModelConfig(), ModelConfig(illumination="rgb", denoise=False),
                                 ModelConfig(illumination="rgb", denoise=False, curve="power"),
                                 ModelConfig(illumination="rgb", curve="power", dequantise=True)],
                         ids=["grey-denoise", "rgb-plain", "rgb-power", "rgb-power-dequantise"])
def test_render_is_the_composition_of_its_steps(cfg):
    torch.manual_seed(3)
    model = DeepUPE(cfg).eval()
    torch.nn.init.normal_(model.coeffs.pred.weight, std=0.5)  # a grid far from the init
    x = torch.rand(1, 3, 40, 56)
    with torch.no_grad():
        for k in (1.0, 0.5, 2.0):
            p = model(x, strength=k)
            d, s = _composed(model, x, k)
            torch.testing.assert_close(p.denoised, d)
            torch.testing.assert_close(p.illumination, s)
            torch.testing.assert_close(p.output, (d / s).clamp(0, 1))
            assert p.grid.shape == (1, cfg.n_coeffs, 8, 16, 16) and p.guide.shape == (1, 1, 40, 56)
        if cfg.denoise:  # the denoised frame really differs from the input (strength > 0)
            assert float((p.denoised - x).abs().mean()) > 1e-3
        else:
            assert torch.equal(p.denoised, x)


def test_denoise_threshold_and_lowres_input():
    model = DeepUPE(ModelConfig(denoise_eps=2e-3))
    assert model.denoise_threshold() == pytest.approx(2e-3)  # exp(log eps), learned from there
    assert isinstance(model.denoise_threshold(), float)
    assert DeepUPE(ModelConfig(denoise_filter="box")).denoise_threshold() == float("inf")
    x = torch.rand(1, 3, 256, 256)
    assert model.lowres(x) is x  # already the network's size: no resampling
    y = torch.rand(2, 3, 100, 300)
    torch.testing.assert_close(model.lowres(y), torch.nn.functional.interpolate(
        y, size=(256, 256), mode="bilinear", antialias=True, align_corners=False))


def test_config_rules_and_old_checkpoints():
    for lowres, grid in ((192, 16), (256, 256), (256, 512)):  # ratio 12, 1, below 1
        with pytest.raises(ValueError, match=f"power of two >= 2, got {lowres}/{grid}"):
            ModelConfig(lowres=lowres, grid_size=grid)
    assert ModelConfig(lowres=32, grid_size=16).n_splat == 1  # ratio 2: the smallest allowed
    assert ModelConfig(lowres=512, grid_size=16).n_splat == 5
    with pytest.raises(ValueError, match="denoise_filter must be one of"):
        ModelConfig(denoise_filter="median")
    for lee in (-1e-4, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="denoise_lee must be a finite variance >= 0"):
            ModelConfig(denoise_lee=lee)
    # The guide's Lee step: the kernels' guide row is then the whole guide, weighed 1.
    assert ModelConfig(denoise_blur=0.7).guide_weight == 0.7
    assert ModelConfig(denoise_blur=0.7, denoise_lee=4e-4).guide_weight == 1.0
    assert ModelConfig(denoise=False, denoise_blur=0.7, denoise_lee=4e-4).guide_weight == 0.0
    assert ModelConfig().n_coeffs == 13 and ModelConfig(denoise=False).n_coeffs == 12
    # Low-res maps (planar video, fast export graph) hold one grey S through the sigmoid only.
    assert ModelConfig().fits_maps
    assert not ModelConfig(curve="power").fits_maps and not ModelConfig(illumination="rgb").fits_maps
    assert not ModelConfig(dequantise=True).fits_maps
    text = ModelConfig(grid_depth=4, denoise_filter="box").to_json()
    assert json.loads(text) == {**dataclasses.asdict(ModelConfig()), "grid_depth": 4, "denoise_filter": "box"}
    assert list(json.loads(text)) == sorted(json.loads(text))  # sorted keys: one text per config
    # An old checkpoint: no denoising and per-channel S unless it says so; unknown keys ignored.
    old = ModelConfig.from_json('{"grid_depth": 4, "dropout": 0.1}')
    assert old == ModelConfig(grid_depth=4, illumination="rgb", denoise=False)
    assert ModelConfig.from_json(text) == ModelConfig(grid_depth=4, denoise_filter="box")


# --- the guide, the coefficient network and the gather slice, on hand numbers --------------


def _slow_guide(guide, image: np.ndarray) -> np.ndarray:
    """``clamp(sum_c mix_c * sum_k slope_ck * relu(M_c . rgb + b_c - shift_ck) + m0, 0, 1)``
    pixel by pixel, in float64."""
    m, b = guide.ccm.detach().double().numpy(), guide.ccm_bias.detach().double().numpy()
    shifts, slopes = guide.shifts.detach().double().numpy(), guide.slopes.detach().double().numpy()
    mix, m0 = guide.mix.detach().double().numpy(), float(guide.mix_bias.detach())
    _, h, w = image.shape
    out = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            v = m @ image[:, y, x] + b
            curves = [(slopes[c] * np.maximum(v[c] - shifts[c], 0)).sum() for c in range(3)]
            out[y, x] = min(max(float(mix @ np.array(curves)) + m0, 0.0), 1.0)
    return out


# Rising curves with a bend at every knot (4 knots per channel).
SLOPES = torch.tensor([[0.8, 0.5, -0.6, 0.4], [1.2, -0.5, 0.3, -0.2], [0.6, 0.4, 0.2, -0.5]])


def _set_guide(guide, gen: torch.Generator) -> None:
    with torch.no_grad():
        guide.ccm.copy_(torch.tensor([[0.9, 0.3, -0.1], [-0.2, 1.1, 0.2], [0.1, -0.3, 0.8]]))
        guide.ccm_bias.copy_(torch.tensor([0.05, -0.1, 0.02]))
        guide.shifts.add_(torch.rand(guide.shifts.shape, generator=gen) * 0.1)
        guide.slopes.copy_(SLOPES)
        guide.mix.copy_(torch.tensor([0.5, 0.3, 0.4]))
        guide.mix_bias.fill_(0.1)


def test_guide_starts_as_the_channel_mean_and_is_the_documented_curve():
    from endolight.model.guide import GuideMap

    guide = GuideMap(ModelConfig(guide_knots=4))
    torch.testing.assert_close(guide.ccm.data, torch.eye(3))
    assert not guide.ccm_bias.any() and not guide.mix_bias.any()
    torch.testing.assert_close(guide.shifts.data, torch.tensor([[0.0, 0.25, 0.5, 0.75]] * 3))
    torch.testing.assert_close(guide.slopes.data, torch.tensor([[1.0, 0, 0, 0]] * 3))
    torch.testing.assert_close(guide.mix.data, torch.full((3,), 1 / 3))
    image = torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    # The identity curve: the guide is the mean of R, G and B.
    torch.testing.assert_close(guide(image), image.mean(1, keepdim=True))
    _set_guide(guide, torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = guide(image)
    assert got.shape == (2, 1, 5, 7)
    for i in range(2):
        want = _slow_guide(guide, image[i].double().numpy())
        assert ((want > 0) & (want < 1)).mean() > 0.9  # the curve, not its clamp, is compared
        np.testing.assert_allclose(got[i, 0].numpy(), want, atol=1e-5)
    # The clamp to [0, 1] at both ends.
    with torch.no_grad():
        guide.mix_bias.fill_(5.0)
        assert torch.equal(guide(image), torch.ones(2, 1, 5, 7))
        assert torch.equal(guide.lookup(image), torch.ones(2, 1, 5, 7))
        guide.mix_bias.fill_(-5.0)
        assert torch.equal(guide(image), torch.zeros(2, 1, 5, 7))
        assert torch.equal(guide.lookup(image), torch.zeros(2, 1, 5, 7))


def test_guide_lookup_table_equals_the_curve():
    from endolight.model.guide import LUT_NODES, GuideMap

    assert LUT_NODES == 4096
    gen = torch.Generator().manual_seed(2)
    image = torch.rand(2, 3, 6, 9, generator=gen)
    image[0, :, 0, 0], image[0, :, 0, 1] = 0.0, 1.0  # black and white: both ends of the table
    # The eight corners of the RGB cube: each channel's M @ rgb + b reaches both ends of the
    # table's range there.
    corners = torch.tensor([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)], dtype=torch.float32)
    image[1, :, 2, :8] = corners.T
    guide = GuideMap(ModelConfig(guide_knots=4))
    with torch.no_grad():
        # Identity colour matrix, knots on the table's nodes (range [0, 1], 4 cells): the
        # piecewise linear curve is exactly its table, interpolated.
        guide.slopes.copy_(SLOPES)
        guide.mix.copy_(torch.tensor([0.5, 0.3, 0.4]))
        guide.mix_bias.fill_(0.05)
        torch.testing.assert_close(guide.lookup(image, nodes=4), guide(image), atol=1e-6, rtol=0)
        # Any matrix, bias and knots: within 1e-3 of the guide's range with the default table
        # (the docstring's bound; measured 1.2e-7 here), and 0.04 from it with a 4-cell table.
        _set_guide(guide, gen)
        guide.shifts[:, 0] = -0.4  # a knot below 0: the curves also bend where M @ rgb + b < 0
        guide.mix.copy_(torch.tensor([0.3, 0.2, 0.2]))
        guide.mix_bias.fill_(0.0)
        ref = guide(image)
        assert 0 < float(ref.min()) and float(ref.max()) < 1  # no clamp hides a difference
        assert float((guide.lookup(image) - ref).abs().max()) < 1e-3
        assert float((guide.lookup(image, nodes=4) - ref).abs().max()) > 1e-2


def test_coefficient_net_layers_and_output():
    from endolight.model.net import N_AFFINE, CoefficientNet

    assert N_AFFINE == 12
    cfg = ModelConfig(lowres=64, grid_size=8, grid_depth=4, channel_mult=1, fc_width=32)
    net = CoefficientNet(cfg)
    convs = [m for m in net.splat.modules() if isinstance(m, torch.nn.Conv2d)]
    # lowres / grid = 8: three stride-2 3x3 convs, 8, 16, 32 channels, each with a ReLU.
    assert [(c.in_channels, c.out_channels, c.stride, c.kernel_size, c.padding) for c in convs] == [
        (3, 8, (2, 2), (3, 3), (1, 1)), (8, 16, (2, 2), (3, 3), (1, 1)), (16, 32, (2, 2), (3, 3), (1, 1))]
    assert [type(m).__name__ for m in net.splat[0]] == ["Conv2d", "ReLU"]
    # Local path: two stride-1 convs to 64 channels, the second linear (no ReLU).
    assert [type(m).__name__ for m in net.local[0]] == ["Conv2d", "ReLU"]
    assert [type(m).__name__ for m in net.local[1]] == ["Conv2d"]
    assert [(s[0].in_channels, s[0].out_channels, s[0].stride) for s in net.local] == [(32, 64, (1, 1)),
                                                                                      (64, 64, (1, 1))]
    # Global path: grid 8 -> bit_length 4 - 3 = one stride-2 conv (8 -> 4), then 64*4*4 -> 32 ->
    # 16 -> 64 fully connected.
    assert [(s[0].in_channels, s[0].stride) for s in net.global_conv] == [(32, (2, 2))]
    fcs = [m for m in net.global_fc if isinstance(m, torch.nn.Linear)]
    assert [(f.in_features, f.out_features) for f in fcs] == [(64 * 16, 32), (32, 16), (16, 64)]
    # A ReLU after each global conv and between the fully connected layers, none after the last
    # (two linear layers in a row would be one linear map).
    assert [type(m).__name__ for m in net.global_conv[0]] == ["Conv2d", "ReLU"]
    assert [type(m).__name__ for m in net.global_fc] == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    assert net.pred.out_channels == 13 * 4 and net.pred.kernel_size == (1, 1)
    # A grid of 16: two global convs (16 -> 4).
    assert len(CoefficientNet(ModelConfig(lowres=64, grid_size=16, fc_width=32)).global_conv) == 2
    assert len(CoefficientNet(ModelConfig(lowres=32, grid_size=4, fc_width=32)).global_conv) == 1
    # The prediction starts small: zero bias, weights of standard deviation 1e-3.
    assert not net.pred.bias.any()
    assert 0.5e-3 < float(net.pred.weight.detach().std()) < 2e-3
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = net(x)
        feats = net.splat(x)
        glob = net.global_fc(net.global_conv(feats).flatten(1))[:, :, None, None]
        fused = torch.relu(net.local(feats) + glob)
        want = net.pred(fused).view(2, 13, 4, 8, 8)
    assert out.shape == (2, 13, 4, 8, 8)
    torch.testing.assert_close(out, want)
    # The two images of the batch get their own grids (the global path is per image).
    with torch.no_grad():
        torch.testing.assert_close(net(x[1:]), out[1:])
    assert CoefficientNet(ModelConfig(lowres=64, grid_size=8, denoise=False, fc_width=32))(x).shape[1] == 12


@pytest.mark.parametrize(("grid_shape", "size"), [
    ((2, 5, 3, 4, 6), (7, 11)),  # two images, image larger than the grid
    ((1, 13, 8, 16, 16), (9, 5)),  # image smaller than the grid
    ((1, 4, 1, 3, 5), (6, 8)),  # one depth bin
    ((2, 4, 3, 3, 1), (6, 8)),  # one grid column
    ((1, 4, 2, 1, 1), (4, 4)),  # one grid cell
    ((1, 3, 2, 2, 2), (5, 7)),  # two of each: the upper taps are the last cell
])
def test_slice_grid_gather_equals_slice_grid(grid_shape, size):
    from endolight.model.slicing import slice_grid_gather

    gen = torch.Generator().manual_seed(4)
    grid = torch.randn(grid_shape, generator=gen)
    guide = torch.rand(grid_shape[0], 1, *size, generator=gen)
    guide[0, 0, 0, 0], guide[0, 0, 0, 1], guide[-1, 0, -1, -1] = 0.0, 1.0, 1.0  # depth ends
    got = slice_grid_gather(grid, guide)
    assert got.shape == (grid_shape[0], grid_shape[1], *size)
    torch.testing.assert_close(got, slice_grid(grid, guide), atol=1e-5, rtol=1e-5)


def test_guide_lookup_table_spans_each_rows_range():
    # The table of channel c covers [lo_c, lo_c + span_c]: lo_c the sum of row c's negative
    # entries plus its bias, span_c the sum of its absolute values (the range M @ rgb + b takes
    # on the RGB cube). Rows with negative entries and spans of 0.75, 1.75 and 1.25, knots on
    # their own table's nodes (4 cells): the lookup is exactly the curve again. A range summed
    # over the whole matrix, or a span floored at 1, moves the nodes off the knots.
    from endolight.model.guide import GuideMap

    ccm = torch.tensor([[0.5, -0.25, 0.0], [-0.5, 1.0, 0.25], [0.25, 0.25, -0.75]])
    bias = torch.tensor([0.1, 0.0, 0.2])
    lo = ccm.clamp(max=0).sum(1) + bias  # -0.15, -0.5, -0.55 by hand
    span = ccm.abs().sum(1)  # 0.75, 1.75, 1.25
    assert lo.tolist() == pytest.approx([-0.15, -0.5, -0.55]) and span.tolist() == [0.75, 1.75, 1.25]
    guide = GuideMap(ModelConfig(guide_knots=4))
    image = torch.rand(1, 3, 5, 8, generator=torch.Generator().manual_seed(4))
    image[0, :, 0, :8] = torch.tensor([[i >> 2 & 1, i >> 1 & 1, i & 1] for i in range(8)]).T  # corners
    with torch.no_grad():
        guide.ccm.copy_(ccm)
        guide.ccm_bias.copy_(bias)
        guide.shifts.copy_(lo[:, None] + span[:, None] * torch.arange(4) / 4)
        guide.slopes.copy_(SLOPES)
        guide.mix.copy_(torch.tensor([0.3, 0.2, 0.2]))
        guide.mix_bias.fill_(0.3)
        ref = guide(image)
        assert 0 < float(ref.min()) and float(ref.max()) < 1  # no clamp hides a difference
        torch.testing.assert_close(guide.lookup(image, nodes=4), ref, atol=1e-6, rtol=0)


def test_forward_defaults_to_the_reference_path(monkeypatch):
    # Training and evaluation call the model plainly: the guide's curve and the grid_sample
    # slice, not the deployment path (the guide's lookup table and the gather slice, equal to
    # within 1/255 only); `render`'s own defaults are strength 1 and that same path. With a
    # non-identity guide the two guides differ (the table interpolates across the knots); the
    # plain call must give exactly the reference guide and output. Which slice runs is
    # recorded through the module's name for the gather slice (wrapped, not replaced).
    import endolight.model.deepupe as deepupe

    gathers = []

    def gather(*args):
        gathers.append(1)
        return slice_grid_gather(*args)

    monkeypatch.setattr(deepupe, "slice_grid_gather", gather)
    cfg = ModelConfig(lowres=32, grid_size=4, fc_width=32, guide_knots=4)
    model = DeepUPE(cfg).eval()
    _set_guide(model.guide, torch.Generator().manual_seed(6))
    x = torch.rand(1, 3, 20, 28, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        plain, grid = model(x), model.grid(x)
        ref = model.render(grid, x)
        assert not gathers
        dep = model.render(grid, x, deploy=True)
        assert len(gathers) == 1
    assert torch.equal(dep.guide, model.guide.lookup(x))
    assert not torch.equal(dep.guide, ref.guide)  # the checks below can tell them apart
    assert torch.equal(plain.guide, ref.guide) and torch.equal(plain.output, ref.output)


def test_render_clamps_the_denoised_frame_to_0_1():
    # The guided filter overshoots at sharp edges: on a frame of black and white pixels it
    # alone gives -0.085 to 1.089 (measured, full strength). The denoised frame render divides
    # by S is clamped to [0, 1] at both ends.
    torch.manual_seed(0)
    model = DeepUPE(ModelConfig(lowres=32, grid_size=4, fc_width=32)).eval()
    x = (torch.rand(1, 3, 24, 32) > 0.5).float()
    with torch.no_grad():
        raw = denoise(x, model.denoise_coeffs(x), torch.ones(1, 1, 24, 32))
        got = model.render(model.grid(x), x).denoised
    assert float(raw.min()) < -0.05 and float(raw.max()) > 1.05  # the clamp below binds
    assert float(got.min()) == 0.0 and float(got.max()) == 1.0
