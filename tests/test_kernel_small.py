"""Each CPU kernel (endolight.kernels: common.py, fused.py, planar.py) on small random and
hand-made inputs, against its PyTorch reference (``DeepUPE.render``, ``slice_grid``,
``GuideMap``, ``guided_coefficients``, the I420 graph's ``render_i420``) or the documented
formula in NumPy, to the rounding of the output: a kernel's uint8 is the reference's value
rounded, give or take float32 error (the bound allows 0.02 of a level; none of 100 random cases
went past half a level).

Frames of a few pixels a side: these tests also run in a second with numba's JIT off
(``NUMBA_DISABLE_JIT=1``: the kernels' mutation testing runs them as plain Python, docs/testing.md).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from endolight.io.yuv import CB_B, CB_G, CR_G, CR_R, TO_YCC
from endolight.kernels import clear_stale_cache
from endolight.kernels.common import along_x, axis_taps, guide_row, sigmoid
from endolight.kernels.fused import GuideParams, render_uint8
from endolight.kernels.planar import (
    ALIGN,
    _span,
    box_mean_np,
    guided_fit,
    map_terms,
    planar_terms,
    render_planes,
    slice_lowres,
    view_spans,
)
from endolight.model import DeepUPE, ModelConfig
from endolight.model.denoise import box_mean, guided_coefficients
from endolight.model.maps import in_levels, render_i420
from endolight.model.slicing import EPS, slice_grid

# How far (in 8-bit levels) a kernel's rounded output may sit from the reference's exact value:
# half a level (the rounding) plus float32 error: the sigmoid's polynomial (1e-5 relative at
# most, the largest part) moves R = I / S by at most 255e-5 = 0.0026 of a level. Measured on 100
# random cases of these sizes: never past half a level. A term off by a level is caught.
ROUNDED = 0.5 + 0.02


def _raw_guide(p: GuideParams, rgb: np.ndarray) -> np.ndarray:
    """The guide map's formula (``GuideMap`` before its clamp to [0, 1]) in float64, for ``rgb``
    (3, ...): ``sum_c mix_c sum_k slope_ck relu(ccm_c . rgb + b_c - shift_ck) + m0``."""
    v = np.tensordot(p.ccm.astype(np.float64), rgb, 1) + p.ccm_bias.reshape(3, *[1] * (rgb.ndim - 1))
    ramps = np.maximum(v[:, None] - p.shifts.reshape(*p.shifts.shape, *[1] * (rgb.ndim - 1)), 0)
    return np.tensordot(p.mix, np.einsum("ck,ck...->c...", p.slopes, ramps), 1) + p.mix_bias[0]


def _model(seed: int, **cfg) -> DeepUPE:
    """A model whose guide is far from its identity start (every term of the guide matters),
    rescaled so that colours in [0, 1] give guide values from -0.25 to 1.25: the kernels' clamps
    of the guide to [0, 1] and of the grid depth at both ends all come into play."""
    torch.manual_seed(seed)
    model = DeepUPE(ModelConfig(guide_knots=4, **cfg)).eval()
    colours = np.random.default_rng(seed).uniform(0, 1, (3, 500))
    colours[:, :2] = [[0, 1]] * 3  # black and white
    with torch.no_grad():
        for p in model.guide.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        raw = _raw_guide(GuideParams.from_module(model.guide), colours)
        scale = 1.5 / (raw.max() - raw.min())
        model.guide.mix.mul_(scale)
        model.guide.mix_bias.mul_(scale).add_(-0.25 - scale * raw.min())
    return model


def _frame(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    frame.reshape(-1, 3)[:2] = [[0, 0, 0], [255, 255, 255]]  # black and white: the eps floor, clamps
    return frame


# ---------------------------------------------------------------------------- common.py


def test_sigmoid_is_the_logistic_function_clamped_at_16():
    v = np.concatenate([np.linspace(-15.99, 15.99, 401), [-1e-3, 0.0, 1e-3]]).astype(np.float32)
    got = np.array([sigmoid(x) for x in v], np.float64)
    exact = 1 / (1 + np.exp(-v.astype(np.float64)))
    # Documented: exp's polynomial within 1e-5 relative (measured 8.6e-6), so the sigmoid
    # within s (1 - s) 1e-5 <= 2.5e-6; measured 2.1e-6.
    assert np.abs(got - exact).max() < 3e-6
    assert np.all(np.abs(got - exact) <= 1e-5 * exact * (1 - exact) + 1e-7)
    assert sigmoid(np.float32(0.0)) == np.float32(0.5)
    # Beyond +-16 the input is clamped: exactly the value at +-16.
    for far in (16.5, 40.0, 1e4):
        assert sigmoid(np.float32(far)) == sigmoid(np.float32(16.0))
        assert sigmoid(np.float32(-far)) == sigmoid(np.float32(-16.0))
    assert sigmoid(np.float32(-15.5)) > sigmoid(np.float32(-16.0)) > 0
    assert sigmoid(np.float32(15.5)) < sigmoid(np.float32(16.0)) <= 1


def test_guide_row_is_the_guide_map_over_its_span():
    # g[x] = sum_c mix_c sum_k slope_ck relu(ccm_c . rgb + b_c - shift_ck) + m0 (GuideMap, not
    # clamped), written for x in [ua, ub) only.
    rng = np.random.default_rng(0)
    guide = _model(0).guide
    p = GuideParams.from_module(guide)
    img = rng.uniform(-1.0, 3.0, (3, 9)).astype(np.float32)
    g = np.full(9, 7.0, np.float32)
    guide_row(img, p.ccm, p.ccm_bias, p.shifts, p.slopes, p.mix, p.mix_bias, np.uint64(2), np.uint64(7), g)
    want = _raw_guide(p, img)
    np.testing.assert_allclose(g[2:7], want[2:7], atol=1e-5)
    assert np.all(g[:2] == 7.0) and np.all(g[7:] == 7.0)
    assert want[2:7].min() < 0 or want[2:7].max() > 1  # unclamped values are checked too
    with torch.no_grad():  # and it is GuideMap's value where that is inside [0, 1]
        ref = guide(torch.from_numpy(img[:, None, 2:7])[None])[0, 0, 0].numpy()
    np.testing.assert_allclose(ref, np.clip(g[2:7], 0, 1), atol=1e-5)


def test_along_x_is_a_half_pixel_bilinear_resize_of_rows():
    rng = np.random.default_rng(1)
    maps = rng.normal(size=(2, 3, 4)).astype(np.float32)
    for width in (9, 4, 2):
        got = along_x(maps, width)
        ref = F.interpolate(torch.from_numpy(maps)[None], size=(3, width), mode="bilinear",
                            align_corners=False)[0].numpy()
        assert got.shape == (2, 3, width) and got.dtype == np.float32
        np.testing.assert_allclose(got, ref, atol=1e-5)


# ----------------------------------------------------------------------------- fused.py

# illumination, learned denoising (None: off; else the guide's blur), strength, frame (h, w),
# grid (depth, Gh, Gw)
RENDER_CASES = [
    ("rgb", None, 1.0, (7, 11), (4, 3, 4)),
    ("grey", None, 0.5, (9, 6), (2, 4, 3)),
    ("rgb", None, 2.0, (5, 8), (1, 1, 2)),  # one depth bin, one grid row
    ("grey", 0.0, 1.0, (8, 12), (4, 2, 3)),
    ("grey", 0.7, 1.0, (8, 12), (4, 2, 3)),
    ("rgb", 0.0, 0.5, (6, 9), (2, 3, 1)),  # one grid column
    ("grey", 1.0, 2.0, (3, 10), (3, 2, 5)),
    ("rgb", 0.7, 1.0, (1, 7), (2, 2, 2)),  # a one-row frame
    ("grey", 0.5, 1.0, (9, 1), (2, 2, 2)),  # a one-column frame
]


@pytest.mark.parametrize("offset", [0.0, 0.055])
@pytest.mark.parametrize(("illumination", "blur", "strength", "size", "cells"), RENDER_CASES)
def test_render_uint8_is_deepupe_render_rounded(illumination, blur, strength, size, cells, offset):
    depth, gh, gw = cells
    denoise = blur is not None
    model = _model(len(size) + depth, grid_depth=depth, illumination=illumination, denoise=denoise,
                   denoise_factor=2, denoise_radius=1, denoise_blur=blur or 0.0, black_offset=offset)
    rng = np.random.default_rng(depth * 100 + gh * 10 + gw)
    frame = _frame(rng, *size)
    grid = rng.normal(0.0, 2.0, (1, 13 if denoise else 12, depth, gh, gw)).astype(np.float32)
    grid = torch.from_numpy(grid)
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        ref = model.render(grid, x, strength).output[0].permute(1, 2, 0).numpy() * 255
        dn = model.denoise_coeffs(x) if denoise else None
    out = render_uint8(frame, grid, GuideParams.from_module(model.guide), EPS, strength,
                       grey=illumination == "grey", denoise=dn, blur=blur or 0.0, offset=offset)
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert np.abs(out - ref).max() <= ROUNDED
    assert np.abs(out.astype(int) - frame).max() > 20  # the grid did change the frame


@pytest.mark.parametrize(("strength", "offset"), [(1.0, 0.0), (0.5, 0.055)])
def test_render_uint8_chroma_curve_is_deepupe_render_rounded(strength, offset):
    # ModelConfig.chroma_knots: the output's chroma scaled by sigma(S), a knot above 1 (the clamp
    # at 255 comes into play) and knots below.
    model = _model(9, denoise_factor=2, denoise_radius=1, denoise_blur=0.7, black_offset=offset,
                   chroma_knots=4)
    with torch.no_grad():
        model.chroma_curve.copy_(torch.tensor([0.3, -0.4, -0.2]))
    rng = np.random.default_rng(9)
    frame = _frame(rng, 7, 11)
    grid = torch.from_numpy(rng.normal(0.0, 2.0, (1, 13, 4, 2, 3)).astype(np.float32))
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        ref = model.render(grid, x, strength).output[0].permute(1, 2, 0).numpy() * 255
        dn = model.denoise_coeffs(x)
        gains = model.chroma_gains()
    guide = GuideParams.from_module(model.guide)
    kwargs = {"grey": True, "denoise": dn, "blur": 0.7, "offset": offset}
    out = render_uint8(frame, grid, guide, EPS, strength, chroma=gains, **kwargs)
    assert np.abs(out - ref).max() <= ROUNDED
    plain = render_uint8(frame, grid, guide, EPS, strength, **kwargs)
    assert np.abs(out.astype(int) - plain).max() >= 5  # the curve did change the colours
    with pytest.raises(ValueError, match="^a chroma curve needs the grey illumination"):
        render_uint8(frame, grid, guide, EPS, chroma=gains, denoise=dn)


# The guide's Lee step (ModelConfig.denoise_lee): its threshold spans the random frames' local
# luma variances (about 0.002-0.1), so some pixels take the 3x3 mean and some keep the guide;
# frames of one row and of one column replicate the edges. The filter's coefficients are a = 1,
# b = 0 at full strength, so D is the guide itself.
@pytest.mark.parametrize(("blur", "lee", "size"), [
    (0.7, 0.02, (8, 12)), (0.0, 0.01, (9, 7)), (1.0, 0.05, (1, 7)), (0.5, 0.02, (9, 1)),
])
def test_render_uint8_lee_guide_is_deepupe_render_rounded(blur, lee, size):
    rng = np.random.default_rng(int(lee * 1000))
    frame = _frame(rng, *size)
    grid = torch.from_numpy(rng.normal(0.0, 2.0, (1, 13, 4, 2, 3)).astype(np.float32))
    grid[:, 12] = 12.0
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
    small = (-(-size[0] // 2), -(-size[1] // 2))
    dn = torch.cat([torch.ones(1, 3, *small), torch.zeros(1, 3, *small)], dim=1)
    outs = []
    for step in (lee, 0.0):
        model = _model(5, denoise_factor=2, denoise_radius=1, denoise_blur=blur, denoise_lee=step)
        model.denoise_coeffs = lambda image: dn
        with torch.no_grad():
            ref = model.render(grid, x).output[0].permute(1, 2, 0).numpy() * 255
        out = render_uint8(frame, grid, GuideParams.from_module(model.guide), EPS, grey=True, denoise=dn,
                           blur=blur, lee=step)
        assert np.abs(out - ref).max() <= ROUNDED
        outs.append(out.astype(int))
    assert np.abs(outs[0] - outs[1]).max() >= 10  # the step did change the frame


# With a blurred guide (blur > 0) a row's span also reads the luma of the rows above and below it,
# one column beyond the span (from a luma plane made once a frame).
@pytest.mark.parametrize(("denoise", "blur", "lee"), [(False, 0.0, 0.0), (True, 0.0, 0.0), (True, 0.7, 0.0),
                                                     (True, 0.7, 0.02)])
def test_render_uint8_keep_mask_spans(denoise, blur, lee):
    rng = np.random.default_rng(2)
    frame = _frame(rng, 6, 10)
    model = _model(2, denoise=denoise, denoise_factor=2, denoise_radius=1)
    guide, grid = GuideParams.from_module(model.guide), torch.randn(1, 12 + denoise, 8, 2, 3) * 2
    dn = None
    if denoise:
        # D = the guide itself (a = 1, b = 0, full strength): every guide pixel shows in the output.
        dn = np.concatenate([np.ones((3, 3, 5)), np.zeros((3, 3, 5))]).astype(np.float32)
        grid[:, 12] = 12.0
    keep = np.zeros((6, 10), bool)
    keep[0] = True  # a whole row
    keep[1, :3] = keep[2, -2:] = True  # a left span, a right span
    # Both, and a pixel inside the computed span (columns 1-5; column 5 would join the right span).
    keep[3, :1] = keep[3, -4:] = keep[3, 4] = True
    out = np.zeros_like(frame)
    masked = render_uint8(frame, grid, guide, EPS, keep=keep, out=out, denoise=dn, blur=blur, lee=lee)
    plain = render_uint8(frame, grid, guide, EPS, denoise=dn, blur=blur, lee=lee)
    assert masked is out
    np.testing.assert_array_equal(masked[keep], frame[keep])
    np.testing.assert_array_equal(masked[~keep], plain[~keep])
    assert (plain[keep] != frame[keep]).any(axis=-1).mean() > 0.5  # the mask did change things
    with pytest.raises(ValueError, match=r"^keep mask must be \(6, 10\), got \(5, 10\)$"):
        render_uint8(frame, grid, guide, EPS, keep=keep[1:], denoise=dn)


@pytest.mark.parametrize("grey", [False, True])
def test_render_uint8_eps_floors_the_illumination(grey):
    # Black pixels denoised up to D = lam b = 0.5 * 4e-5 (a = 0; strength channel 0: lam 0.5),
    # logit -30: S = max(D + (1 - D) sigmoid(-30), eps) = eps, so R = D / eps = 0.2 (51 levels),
    # not D / D = 1.
    frame = np.zeros((2, 3, 3), np.uint8)
    grid = np.zeros((13, 2, 1, 1), np.float32)
    grid[3:12:4] = -30.0
    dn = np.zeros((6, 1, 2), np.float32)
    dn[3:] = 4e-5
    out = render_uint8(frame, grid, GuideParams.from_module(_model(8).guide), EPS, grey=grey, denoise=dn)
    assert np.abs(out - 0.5 * 4e-5 / EPS * 255).max() <= ROUNDED


def test_render_uint8_grid_and_frame_shapes():
    rng = np.random.default_rng(3)
    frame = _frame(rng, 4, 5)
    model = _model(3)
    guide = GuideParams.from_module(model.guide)
    grid = rng.normal(size=(13, 2, 2, 2)).astype(np.float32)
    dn = rng.uniform(0, 0.5, (6, 2, 3)).astype(np.float32)
    # A 4-D grid and a 5-D batch of one, a 3-D and a 4-D denoiser fit, lists: the same.
    out = render_uint8(frame, grid, guide, EPS, denoise=dn)
    np.testing.assert_array_equal(render_uint8(frame, torch.from_numpy(grid)[None], guide, EPS,
                                               denoise=dn[None]), out)
    np.testing.assert_array_equal(render_uint8(frame, grid.tolist(), guide, EPS, denoise=dn.tolist()), out)
    with pytest.raises(ValueError, match=r"^grid must be \(12, D, Gh, Gw\), got \(13, 2, 2, 2\)$"):
        render_uint8(frame, grid, guide, EPS)
    with pytest.raises(ValueError, match=r"^grid must be \(13, D, Gh, Gw\), got \(12, 2, 2, 2\)$"):
        render_uint8(frame, grid[:12], guide, EPS, denoise=dn)
    with pytest.raises(ValueError, match=r"^grid must be \(12, D, Gh, Gw\), got \(12, 2, 2\)$"):
        render_uint8(frame, grid[:12, 0], guide, EPS)
    for bad in (frame.astype(np.float32), frame[..., 0], frame[..., :2]):
        with pytest.raises(ValueError, match=r"^frame must be \(H, W, 3\) uint8, got \("):
            render_uint8(bad, grid[:12], guide, EPS)


def test_render_uint8_hand_computed_illumination():
    # Affine rows 0 with offset c: logit c everywhere, so (rgb) S = I + (1 - I) sigmoid(c),
    # R = I / S; strength k: S ** k; eps floors S (a black pixel stays 0).
    frame = np.array([[[0, 40, 200], [255, 128, 3]]], np.uint8)
    guide = GuideParams.from_module(_model(4).guide)
    i = frame / 255.0
    for c, k in ((0.0, 1.0), (-2.0, 0.5), (3.0, 2.0), (-30.0, 1.0)):
        grid = np.zeros((12, 2, 1, 1), np.float32)
        grid[3::4] = c
        s = 1 / (1 + np.exp(-c))
        want = np.clip(i / np.maximum(i + (1 - i) * s, EPS) ** k, 0, 1) * 255
        assert np.abs(render_uint8(frame, grid, guide, EPS, k) - want).max() <= ROUNDED
        # grey: S = m + (1 - m) sigmoid(c), m the largest channel, one S for all three
        m = i.max(axis=-1, keepdims=True)
        want = np.clip(i / np.maximum(m + (1 - m) * s, EPS) ** k, 0, 1) * 255
        assert np.abs(render_uint8(frame, grid, guide, EPS, k, grey=True) - want).max() <= ROUNDED


# ---------------------------------------------------------------------------- planar.py


def test_slice_lowres_is_slice_grid_with_the_guide_map():
    rng = np.random.default_rng(5)
    model = _model(5)
    image = rng.uniform(0, 1, (3, 7, 9)).astype(np.float32)
    image[:, 0, :2] = [0, 1]  # black and white
    for depth, gh, gw in ((4, 3, 4), (1, 1, 2), (2, 5, 1)):
        grid = rng.normal(size=(1, 5, depth, gh, gw)).astype(np.float32)
        cells = grid[0].transpose(2, 3, 1, 0)  # (Gh, Gw, D, C)
        guide = GuideParams.from_module(model.guide)
        raw = _raw_guide(guide, image)
        assert raw.min() < 0 and raw.max() > 1  # the guide's clamps at both ends
        got = slice_lowres(image, cells, guide)
        with torch.no_grad():
            t = torch.from_numpy(image)[None]
            ref = slice_grid(torch.from_numpy(grid), model.guide(t))[0].numpy()
        assert got.shape == (5, 7, 9) and got.dtype == np.float32
        np.testing.assert_allclose(got, ref, atol=1e-5)


@pytest.mark.parametrize("eps", [1e-2, float("inf")])
def test_guided_fit_is_guided_coefficients(eps):
    rng = np.random.default_rng(6)
    small = rng.uniform(0, 1, (3, 9, 11)).astype(np.float32)
    small[:, :4, :4] = 0.3  # a flat patch: no variance, a = 0 there
    for radius in (1, 2):
        got = guided_fit(small, radius, eps)
        ref = guided_coefficients(torch.from_numpy(small)[None], radius, eps)[0].numpy()
        assert got.shape == (6, 9, 11) and got.dtype == np.float32
        np.testing.assert_allclose(got, ref, atol=2e-5)
    if eps == float("inf"):  # a = 0 and b the box blur of the box blur
        np.testing.assert_array_equal(got[:3], 0)


@pytest.mark.parametrize("twice", [False, True])
def test_map_terms_are_planar_terms_of_the_fit_in_ycbcr(twice):
    # The one-pass map kernel against the same formulas on whole arrays: the strength is
    # scale * sigmoid(co[4]); the fit's R, G, B coefficients (averaged over each 2x2 block when
    # the fit is twice the maps' size) are turned to Y'CbCr; a missing fit means no denoising.
    rng = np.random.default_rng(8)
    h, w = 5, 7
    co = rng.normal(0, 2, (5, h, w)).astype(np.float32)
    fit = rng.normal(0, 1, (6, 2 * h, 2 * w) if twice else (6, h, w)).astype(np.float32)
    per_map = fit.reshape(6, h, 2, w, 2).mean((2, 4)) if twice else fit
    lam = 0.7 / (1 + np.exp(-co[4].astype(np.float64)))
    a, b = np.einsum("ij,jhw->ihw", TO_YCC, per_map[:3]), np.einsum("ij,jhw->ihw", TO_YCC, per_map[3:])
    luma, chroma = map_terms(co, fit, 0.7, 0.6)  # a blurred guide: the fourth map
    want_luma, want_chroma = planar_terms(lam, a, b, co[:4], 0.6)
    assert np.abs(luma[3]).max() > 0.1
    assert luma.shape == (4, h, w) and chroma.shape == (8, h, w) and luma.dtype == chroma.dtype == np.float32
    np.testing.assert_allclose(luma, np.stack(want_luma), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(chroma, np.stack(want_chroma), rtol=1e-5, atol=1e-5)
    plain_luma, plain_chroma = map_terms(co[:4], None, 0.7)  # no denoising: D = I
    zero = np.zeros((3, h, w))
    want_luma, want_chroma = planar_terms(0.0, zero, zero, co[:4])
    np.testing.assert_allclose(plain_luma, np.stack(np.broadcast_arrays(*want_luma)), atol=1e-6)
    np.testing.assert_allclose(plain_chroma, np.stack(np.broadcast_arrays(*want_chroma)), atol=1e-6)
    assert np.all(plain_luma[0] == 1) and np.all(plain_chroma[0] == 1)
    # float64 inputs are taken as float32 (the same bits), and maps one row high still denoise.
    f64_luma, f64_chroma = map_terms(co.astype(np.float64), fit.astype(np.float64), 0.7, 0.6)
    np.testing.assert_array_equal(f64_luma, luma)
    np.testing.assert_array_equal(f64_chroma, chroma)
    row = map_terms(co[:, :1], fit[:, : 2 if twice else 1], 0.7, 0.6)[0]
    np.testing.assert_allclose(row, luma[:, :1], rtol=1e-6, atol=1e-6)
    for bad_co, bad_fit in ((co, fit[:, :-1]), (co[:4], fit), (co, fit[:5])):
        with pytest.raises(ValueError, match="fit"):
            map_terms(bad_co, bad_fit, 0.7)


def test_box_mean_np_of_several_channels_and_radii():
    x = torch.rand(3, 6, 7)
    for radius in (0, 1, 3, 5):  # 5: the box is larger than the image
        np.testing.assert_allclose(box_mean_np(x.numpy(), radius), box_mean(x[None], radius)[0], atol=1e-5)


def test_float64_inputs_are_taken_as_float32():
    # The kernels compute in float32 whatever they are given: a float64 input gives the float32
    # input's result to the bit (not a more precise one).
    rng = np.random.default_rng(7)
    image = rng.uniform(0, 1, (3, 5, 6))
    cells = rng.normal(size=(2, 3, 4, 5))
    guide = GuideParams.from_module(_model(7).guide)
    np.testing.assert_array_equal(slice_lowres(image, cells, guide),
                                  slice_lowres(image.astype(np.float32), cells.astype(np.float32), guide))
    np.testing.assert_array_equal(guided_fit(image, 1, 1e-2), guided_fit(image.astype(np.float32), 1, 1e-2))
    np.testing.assert_array_equal(box_mean_np(image, 1), box_mean_np(image.astype(np.float32), 1))
    wide = along_x(image, 9)  # the maps the kernels read are float32 whatever came in
    assert wide.dtype == np.float32
    np.testing.assert_array_equal(wide, along_x(image.astype(np.float32), 9))


def test_span_of_two_rows_widened_to_whole_blocks():
    keep = np.zeros((2, 10), bool)
    assert _span(keep, 0, 1, 10) == (0, 10)
    keep[0, :3] = keep[0, 8:] = keep[1, :2] = keep[1, 9:] = True
    assert _span(keep, 0, 1, 10) == (2, 10)  # from column 2 (row 1) to 9 (row 1), widened
    keep[1, :4] = keep[1, 7:] = keep[0, :5] = keep[0, 6:] = True
    assert _span(keep, 0, 1, 10) == (4, 8)  # row 0's column 5 and row 1's 4..6: blocks 4..7
    keep[1, 4:7] = True
    assert _span(keep, 0, 1, 10) == (4, 6)  # row 0's column 5: block 4..5
    keep[0, 5] = True
    a, b = _span(keep, 0, 1, 10)
    assert a >= b  # all kept: nothing to compute
    keep[0, 0] = keep[1, 3] = False  # column 0 of row 0 (column 1 kept), column 3 of row 1
    assert _span(keep, 0, 1, 10) == (0, 4)


def _sigmoid(v):
    return 1 / (1 + np.exp(-v))


def _planes_reference(y, u, v, luma, chroma, strength, keep=None, offset=0.0, gains=None):
    """The planar kernel's documented formulas in float64 (kernels/planar.py's docstring), on
    maps already interpolated along x: ``luma`` (4, hl, W), ``chroma`` (8, hl, W / 2). Returns
    the unrounded Y', Cb', Cr' (before rounding and clamping)."""
    h, w = y.shape
    hl = luma.shape[1]

    def rows(maps, n):  # interpolated along y with the kernels' taps
        lo, wt = axis_taps(n, hl)
        hi = np.minimum(lo + 1, hl - 1)
        return (1 - wt[:, None]) * maps[:, lo] + wt[:, None] * maps[:, hi]

    p, q, lc = rows(luma.astype(np.float64), h)[:3]  # R (the blurred guide) not used without blur
    c = rows(chroma.astype(np.float64), h // 2)
    yn = (y - 16.0) / 219
    cbn, crn = (u - 128.0) / 224, (v - 128.0) / 224
    ybar = yn.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    d_cb = c[0] * cbn + c[1] * ybar + c[2]
    d_cr = c[0] * crn + c[3] * ybar + c[4]
    bterm = c[5] * d_cb + c[6] * d_cr + c[7]
    cmax = np.maximum(np.maximum(CR_R * d_cr, -CB_G * d_cb - CR_G * d_cr), CB_B * d_cb)

    def up(a):  # per 2x2 block -> per pixel
        return a.repeat(2, axis=0).repeat(2, axis=1)

    d_y = p * yn + q
    m = (np.clip(d_y + up(cmax), 0, 1) + offset) / (1 + offset)
    s = np.maximum(m + (1 - m) * _sigmoid(lc * d_y + up(bterm)), EPS) ** strength
    oy = 16 + 219 * ((d_y + offset) / s - offset)
    inv = 1 / s
    if keep is not None:
        oy = np.where(keep, y, oy)
        inv = np.where(keep, 1.0, inv)
    g = inv.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    if gains is not None:  # the chroma curve at the block's S = 1 / mean(1 / S)
        g = g * np.interp(np.minimum(1 / g, 1), np.linspace(0, 1, len(gains)), gains)
    ou, ov = 128 + 224 * d_cb * g, 128 + 224 * d_cr * g
    if keep is not None:
        block_kept = keep.reshape(h // 2, 2, w // 2, 2).all(axis=(1, 3))
        ou, ov = np.where(block_kept, u, ou), np.where(block_kept, v, ov)
    return oy, ou, ov


def _planes_case(seed, h, w, hl, wl):
    """Random planes and low-res maps (P near 1, Q near 0: a plausible denoiser; wide logits)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(16, 236, (h, w), dtype=np.uint8)
    u, v = (rng.integers(60, 200, (h // 2, w // 2), dtype=np.uint8) for _ in range(2))
    y.flat[0], y.flat[1] = 0, 255  # out of the limited range: the clamps
    luma = np.stack([rng.uniform(0.6, 1.3, (hl, wl)), rng.uniform(-0.1, 0.1, (hl, wl)),
                     rng.normal(0, 3, (hl, wl)), np.zeros((hl, wl))]).astype(np.float32)  # R: no blur
    chroma = np.stack([rng.uniform(0.5, 1, (hl, wl)), *rng.normal(0, 0.1, (4, hl, wl)),
                       *rng.normal(0, 2, (3, hl, wl))]).astype(np.float32)
    return y, u, v, luma, chroma


def _render_planes(y, u, v, luma, chroma, strength=1.0, **kwargs):
    return render_planes(y, u, v, luma, chroma, EPS, strength, **kwargs)


@pytest.mark.parametrize(("seed", "strength", "size", "low", "offset"), [
    (0, 1.0, (8, 12), (3, 4), 0.0), (1, 0.5, (6, 10), (2, 3), 0.0), (2, 2.0, (4, 6), (1, 2), 0.0),
    (3, 1.0, (2, 14), (2, 5), 0.0), (4, 1.0, (8, 12), (3, 4), 0.055), (1, 0.5, (6, 10), (2, 3), 0.1),
    (5, 1.0, (8, 16), (3, 4), 0.0), (6, 0.7, (12, 32), (4, 4), 0.0)])  # x by an even factor: per cell
def test_render_planes_is_the_i420_graph(seed, strength, size, low, offset):
    y, u, v, luma, chroma = _planes_case(seed, *size, *low)
    h, w = size
    got = _render_planes(y, u, v, luma, chroma, strength, offset=offset)
    ref = _planes_reference(y, u, v, along_x(luma, w), along_x(chroma, w // 2), strength, offset=offset)
    if offset:  # the offset space does move the luma
        plain = _planes_reference(y, u, v, along_x(luma, w), along_x(chroma, w // 2), strength)
        assert np.abs(np.clip(ref[0], 0, 255) - np.clip(plain[0], 0, 255)).max() > 5
    for plane, want in zip(got, ref, strict=True):
        assert np.abs(plane - np.clip(want, 0, 255)).max() <= ROUNDED
    if seed == 0:  # this case needs both luma clamps
        assert (ref[0] > 255.5).any() and (ref[0] < -0.5).any()
    # The reference is the I420 graph's (PyTorch, maps in 8-bit levels): rounded the same but
    # where float32 and float64 part at a tie.
    lum, chrom = in_levels(list(torch.from_numpy(luma.astype(np.float64))[None].split(1, dim=1)),
                           list(torch.from_numpy(chroma.astype(np.float64))[None].split(1, dim=1)))
    yt = torch.from_numpy(y).double()[None, None]
    uv = torch.from_numpy(np.stack([u, v])).double()[None]
    ry, ruv = render_i420(torch.cat(lum, 1), torch.cat(chrom, 1), yt, F.avg_pool2d(yt, 2), uv, strength,
                          offset=offset)
    graph = (ry[0, 0].numpy(), ruv[0, 0].numpy(), ruv[0, 1].numpy())
    for want, g in zip(ref, graph, strict=True):
        rounded = np.clip(np.floor(want + 0.5), 0, 255)
        assert np.abs(rounded - g).max() <= 1 and (rounded == g).mean() > 0.95


@pytest.mark.parametrize(("seed", "strength"), [(8, 1.0), (9, 0.5)])
def test_render_planes_chroma_curve_is_the_i420_graph(seed, strength):
    # ModelConfig.chroma_knots: each block's chroma gain times sigma at the block's S; the luma
    # is untouched.
    y, u, v, luma, chroma = _planes_case(seed, 8, 12, 3, 4)
    gains = np.array([0.6, 1.4, 0.8, 1.0], np.float32)
    got = _render_planes(y, u, v, luma, chroma, strength, gains=gains)
    ref = _planes_reference(y, u, v, along_x(luma, 12), along_x(chroma, 6), strength, gains=gains)
    for plane, want in zip(got, ref, strict=True):
        assert np.abs(plane - np.clip(want, 0, 255)).max() <= ROUNDED
    lum, chrom = in_levels(list(torch.from_numpy(luma.astype(np.float64))[None].split(1, dim=1)),
                           list(torch.from_numpy(chroma.astype(np.float64))[None].split(1, dim=1)))
    yt = torch.from_numpy(y).double()[None, None]
    uv = torch.from_numpy(np.stack([u, v])).double()[None]
    ry, ruv = render_i420(torch.cat(lum, 1), torch.cat(chrom, 1), yt, F.avg_pool2d(yt, 2), uv, strength,
                          gains=torch.from_numpy(gains).double())
    for plane, g in zip(got, (ry[0, 0].numpy(), ruv[0, 0].numpy(), ruv[0, 1].numpy()), strict=True):
        assert np.abs(plane.astype(float) - g).max() <= 1 and (plane == g).mean() > 0.95
    plain = _render_planes(y, u, v, luma, chroma, strength)
    np.testing.assert_array_equal(got[0], plain[0])
    assert min(np.abs(got[k].astype(int) - plain[k]).max() for k in (1, 2)) >= 3


@pytest.mark.parametrize(("seed", "blur", "lee", "size", "low"), [
    (5, 0.7, 0.0, (8, 12), (3, 4)), (6, 1.0, 0.0, (6, 10), (2, 3)), (7, 0.5, 0.0, (2, 14), (2, 5)),
    (8, 0.7, 0.03, (8, 12), (3, 4)), (9, 0.0, 0.02, (6, 10), (2, 3)), (10, 0.5, 0.05, (2, 14), (2, 5))])
def test_render_planes_blurred_guide_is_the_i420_graph(seed, blur, lee, size, low):
    # The denoiser's blurred guide (ModelConfig.denoise_blur) and its Lee step (denoise_lee): the
    # kernel against the I420 graph's float64 evaluation (model.maps.render_i420), and the blur
    # (the Lee step) must change the output.
    y, u, v, luma, chroma = _planes_case(seed, *size, *low)
    chroma[1:5] *= 5  # a strong guided filter: the guide's blur shows in the chroma too
    luma[3] = np.random.default_rng(seed).normal(0, 0.5, luma.shape[1:])  # R: the blurred guide's part
    got = _render_planes(y, u, v, luma, chroma, blur=blur, lee=lee)
    lum, chrom = in_levels(list(torch.from_numpy(luma.astype(np.float64))[None].split(1, dim=1)),
                           list(torch.from_numpy(chroma.astype(np.float64))[None].split(1, dim=1)))
    yt = torch.from_numpy(y).double()[None, None]
    uv = torch.from_numpy(np.stack([u, v])).double()[None]
    h, w = size
    ry, ruv = render_i420(torch.cat(lum, 1), torch.cat(chrom, 1), yt, F.avg_pool2d(yt, 2), uv, blur=blur,
                          lee=lee)
    graph = (ry[0, 0].numpy(), ruv[0, 0].numpy(), ruv[0, 1].numpy())
    for plane, g in zip(got, graph, strict=True):
        assert np.abs(plane.astype(float) - g).max() <= 1 and (plane == g).mean() > 0.95
    plain = _render_planes(y, u, v, luma, chroma, blur=blur) if lee else _render_planes(y, u, v, luma, chroma)
    for plane, p0 in zip(got, plain, strict=True):
        assert np.abs(plane.astype(int) - p0).max() >= 2


def test_render_planes_lee_step_inside_the_view_is_the_whole_frames():
    # The planar kernel makes the Lee step's source rows once per work item (64 rows), over the
    # columns of all its rows' spans: inside a round view the output must be the unmasked run's,
    # on a frame wider than a few ALIGN runs and taller than two work items.
    h, w = 140, 200
    y, u, v, luma, chroma = _planes_case(11, h, w, 5, 7)
    chroma[1:5] *= 5
    luma[3] = np.random.default_rng(11).normal(0, 0.5, luma.shape[1:])
    yy, xx = np.mgrid[:h, :w]
    keep = (yy - 70) ** 2 + (xx - 110) ** 2 > 66**2
    got = _render_planes(y, u, v, luma, chroma, keep=keep, blur=0.7, lee=0.02)
    plain = _render_planes(y, u, v, luma, chroma, blur=0.7, lee=0.02)
    np.testing.assert_array_equal(got[0][~keep], plain[0][~keep])
    inside = ~keep.reshape(h // 2, 2, w // 2, 2).any(axis=(1, 3))  # blocks with no kept pixel
    for k in (1, 2):
        np.testing.assert_array_equal(got[k][inside], plain[k][inside])
    without = _render_planes(y, u, v, luma, chroma, keep=keep, blur=0.7)
    assert np.abs(got[0][~keep].astype(int) - without[0][~keep]).max() >= 2  # the step did act


def test_render_planes_keep_mask_and_out_planes():
    y, u, v, luma, chroma = _planes_case(4, 8, 12, 3, 4)
    keep = np.zeros((8, 12), bool)
    keep[0:2] = True  # a whole block row
    keep[2, :3] = keep[3, :2] = True  # a left span (block 0 whole, block 1 half kept)
    keep[4:6, -4:] = keep[5, -5] = True  # a right span
    keep[6, 7] = True  # a pixel inside the computed span
    keep[6:8, 4:6] = True  # a whole block inside the span: its chroma is kept
    keep[6, 8:10] = keep[7, 0:2] = True  # blocks with their top or bottom pair kept only
    out = tuple(np.zeros_like(p) for p in (y, u, v))
    got = _render_planes(y, u, v, luma, chroma, keep=keep, out=out)
    assert all(g is o for g, o in zip(got, out, strict=True))
    ref = _planes_reference(y, u, v, along_x(luma, 12), along_x(chroma, 6), 1.0, keep)
    for plane, want in zip(got, ref, strict=True):
        assert np.abs(plane - np.clip(want, 0, 255)).max() <= ROUNDED
    np.testing.assert_array_equal(got[0][keep], y[keep])
    plain = _render_planes(y, u, v, luma, chroma)
    assert (plain[0][keep] != y[keep]).mean() > 0.5  # the mask changed something
    # A half-kept block's chroma differs from the unmasked one (its kept pixels count S = 1).
    assert got[1][1, 1] != plain[1][1, 1] or got[2][1, 1] != plain[2][1, 1]
    with pytest.raises(ValueError, match=r"^keep mask must be \(8, 12\), got \(8, 10\)$"):
        _render_planes(y, u, v, luma, chroma, keep=keep[:, 2:])


def test_view_spans_per_block_row_with_holes():
    keep = np.ones((6, 10), bool)  # block row 0: all kept
    keep[2, 3:7] = keep[3, 2:8] = False  # block row 1: a convex view, columns 2..7
    keep[4, 1:9] = keep[5, 1:9] = False
    keep[5, 5] = True  # block row 2: a kept pixel inside its span
    spans = view_spans(keep)
    assert spans.shape == (3, 7) and spans.dtype == np.int64
    assert spans[0, 0] >= spans[0, 1] and spans[0, 2] >= spans[0, 3] and spans[0, 6] == 0
    assert spans[1].tolist() == [2, 8, 3, 7, 2, 8, 0]  # row 2's kept columns 2 and 7: its edge
    assert spans[2].tolist() == [0, 10, 1, 9, 1, 9, 1]  # 1..8 widened to whole blocks; a hole
    keep[4:6] = True
    keep[4, 1:3] = keep[5, 6:9] = False  # two rows' spans apart: block 3..4 kept whole
    assert view_spans(keep)[2].tolist() == [0, 10, 1, 3, 6, 9, 1]
    with pytest.raises(ValueError, match=r"^need an \(H, W\) mask with H even, got \(5, 10\)$"):
        view_spans(keep[1:])


@pytest.mark.parametrize("fill", [None, (20, 120, 130, 24)])
def test_render_planes_round_view_off_the_vector_grid(fill):
    # Wider than the kernel's ALIGN runs, so each block row computes from a run's start before
    # its view (overwritten after) to a run's end past it; a hole inside the view is kept.
    h, w = 40, 5 * ALIGN + 6
    y, u, v, luma, chroma = _planes_case(9, h, w, 4, 11)
    yy, xx = np.mgrid[:h, :w]
    keep = (yy - h / 2) ** 2 + ((xx - w / 2) / 4) ** 2 > (h / 2 - 3) ** 2
    keep[20, 81] = keep[24:26, 100:102] = True
    assert (view_spans(keep)[:, 0] % ALIGN != 0).any() and view_spans(keep)[:, 6].sum() == 2
    got = _render_planes(y, u, v, luma, chroma, keep=keep,
                         fill=None if fill is None else np.array(fill, np.int32))
    ref = _planes_reference(y, u, v, along_x(luma, w), along_x(chroma, w // 2), 1.0, keep)
    blocks = keep.reshape(h // 2, 2, w // 2, 2).all(axis=(1, 3))
    for plane, want, mask in zip(got, ref, (~keep, ~blocks, ~blocks), strict=True):
        assert np.abs(plane[mask] - np.clip(want[mask], 0, 255)).max() <= ROUNDED
    if fill is None:
        np.testing.assert_array_equal(got[0][keep], y[keep])
        np.testing.assert_array_equal(got[1][blocks], u[blocks])
    else:  # below the fill's threshold the fill's level, else the input
        np.testing.assert_array_equal(got[0][keep], np.where(y[keep] < fill[3], fill[0], y[keep]))
    with pytest.raises(ValueError, match=r"^spans must be \(20, 7\), got \(19, 7\)$"):
        _render_planes(y, u, v, luma, chroma, keep=keep, spans=view_spans(keep[2:]))


def test_render_planes_eps_floors_the_illumination():
    # A flat, nearly black view: D_Y = Q = 2e-5 (P = 0), no chroma terms (m = D_Y), logit -30:
    # S = max(D_Y + (1 - D_Y) sigmoid(-30), eps) = eps, so Y' = 16 + 219 D_Y / eps = 59.8 (not 16
    # + 219 D_Y / D_Y). Strength 0.5: S = eps ** 0.5, Y' = 16.4. Cb and Cr stay at 128.
    y = np.full((2, 4), 16, np.uint8)
    u = v = np.full((1, 2), 128, np.uint8)
    luma = np.zeros((4, 1, 1), np.float32)
    luma[1] = 2e-5
    chroma = np.zeros((8, 1, 1), np.float32)
    chroma[0], chroma[7] = 1.0, -30.0
    for k, want in ((1.0, 60), (0.5, 16)):
        oy, ou, ov = render_planes(y, u, v, luma, chroma, EPS, k)
        assert np.all(oy == want) and np.all(ou == 128) and np.all(ov == 128)


def test_render_planes_rejects_bad_shapes():
    y, u, v, luma, chroma = _planes_case(5, 4, 6, 2, 3)
    lx, cx = luma, chroma
    planes = r"^need even-sized 4:2:0 planes, got Y \(\d+, \d+\), Cb \(\d+, \d+\), Cr \(\d+, \d+\)$"
    for bad in ((y[:3], u, v), (y[:, :5], u, v), (y, u[:1], v), (y, u, v[:, :2]), (y, u[:, :2], v[:, :2]),
                (y[:3], u[:1], v[:1]), (y[:, :5], u[:, :2], v[:, :2])):  # odd, with matching chroma
        with pytest.raises(ValueError, match=planes):
            render_planes(*bad, lx, cx, EPS)
    with pytest.raises(ValueError, match=r"^luma maps must be \(4, h, w\), got \(2, 2, 3\)$"):
        render_planes(y, u, v, lx[:2], cx, EPS)
    with pytest.raises(ValueError, match=r"^luma maps must be \(4, h, w\), got \(4, 3\)$"):
        render_planes(y, u, v, lx[:, 0], cx, EPS)
    with pytest.raises(ValueError, match=r"^chroma maps must be \(8, 2, 3\), got \(8, 1, 3\)$"):
        render_planes(y, u, v, lx, cx[:, :1], EPS)
    with pytest.raises(ValueError, match=r"^chroma maps must be \(8, 2, 3\), got \(8, 2, 2\)$"):
        render_planes(y, u, v, lx, cx[:, :, :2], EPS)
    with pytest.raises(ValueError, match=r"^chroma maps must be \(8, 2, 3\), got \(7, 2, 3\)$"):
        render_planes(y, u, v, lx, cx[1:], EPS)


def test_a_changed_helper_clears_numba_cached_kernels(tmp_path):
    helper, cache = tmp_path / "common.py", tmp_path / "__pycache__"
    helper.write_text("A = 1\n")
    cache.mkdir()
    cached = [cache / "planar._kernel-1.py311.nbi", cache / "planar._kernel-1.py311.1.nbc"]

    def fill():
        for p in cached:
            p.write_bytes(b"machine code")

    fill()
    (cache / "other.cpython-311.pyc").write_bytes(b"")
    assert clear_stale_cache(cache, (helper,))  # no digest yet: cleared
    assert sorted(p.name for p in cache.iterdir()) == ["kernels.dependencies", "other.cpython-311.pyc"]
    fill()
    assert not clear_stale_cache(cache, (helper,)) and all(p.exists() for p in cached)  # unchanged
    helper.write_text("A = 2\n")
    assert clear_stale_cache(cache, (helper,)) and not any(p.exists() for p in cached)
