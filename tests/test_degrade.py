"""The endoscope degradation model: reproducible per seed, darker at the periphery."""

from __future__ import annotations

from dataclasses import replace

import kornia
import numpy as np
import pytest
import torch

from endolight.degrade import (
    PROTOCOLS,
    DegradeConfig,
    DegradeParams,
    degrade,
    falloff_map,
    noise_peak,
    protocol_config,
    quantise,
    sample_params,
)
from endolight.fov import detect_fov
from endolight.pairs import make_pair


def test_same_seed_same_pair_different_seed_different(real_frames):
    frame = real_frames[0]
    a, pa = make_pair(frame, 7, DegradeConfig())
    b, pb = make_pair(frame, 7, DegradeConfig())
    c, _ = make_pair(frame, 8, DegradeConfig())
    assert np.array_equal(a, b) and pa == pb
    assert not np.array_equal(a, c)


def test_periphery_darkened_more_than_centre():
    # A flat grey frame, so any centre/periphery difference comes from the degradation.
    target = torch.full((3, 120, 160), 0.6)
    cfg = DegradeConfig(centre_offset=0.0)
    for seed in range(5):
        p = sample_params(cfg, np.random.default_rng(seed))
        dim = degrade(target, p, torch.Generator().manual_seed(seed))
        ratio = dim / target
        centre = ratio[:, 50:70, 70:90].mean()
        corners = torch.stack([ratio[:, :15, :15].mean(), ratio[:, -15:, -15:].mean()]).mean()
        assert corners < 0.7 * centre, (seed, float(corners), float(centre))
        assert float(dim.max()) <= 1.0 and float(dim.min()) >= 0.0


def test_darkens_real_frames_and_keeps_black_borders_dark(real_frames):
    # Noise off: the degradation only takes light away, so no pixel (the black border included)
    # ends brighter than the target, beyond 8-bit rounding. With sensor noise on (the default),
    # the border's mean rises only by the noise floor: measured at most 5.9 levels (8-bit) over
    # seeds 0-7 on these frames (read noise up to 0.005 in linear light is ~6 sRGB levels once
    # clamped at black), so 10 levels leaves a margin; a lifted black level (+0.01 linear, +25
    # levels) fails it. The view itself is at most 0.65 of its target's mean there.
    clean = replace(DegradeConfig(), read_noise=(0.0, 0.0), peak=(1e12, 1e12), jpeg_prob=0.0)
    bordered = 0
    for i, frame in enumerate(real_frames):
        fov = detect_fov(frame)
        for cfg in (clean, PROTOCOLS["paper"]):
            dim, _ = make_pair(frame, i, cfg)
            assert (dim.astype(int) <= frame.astype(int) + 1).all(), cfg.mode
        dim, _ = make_pair(frame, i, DegradeConfig())
        assert dim[fov].mean() < 0.8 * frame[fov].mean()
        black = ~fov & (frame.max(axis=2) <= 3)  # the black border (not overlay text)
        if black.mean() > 0.05:
            bordered += 1
            assert dim[black].mean() <= frame[black].mean() + 10, (i, dim[black].mean())
    assert bordered >= 3  # sinus, fetoscopy and laparoscopy views have black borders


def test_falloff_peaks_at_centre_and_respects_floor():
    p = sample_params(DegradeConfig(), np.random.default_rng(3))
    f = falloff_map(p, 90, 160)[0, 0]
    y, x = np.unravel_index(int(torch.argmax(f)), f.shape)
    assert abs((x + 0.5) / 160 - p.centre_x) < 0.02 and abs((y + 0.5) / 90 - p.centre_y) < 0.03
    assert float(f.min()) >= p.falloff_floor - 1e-6 and float(f.max()) <= 1.0


def test_darkening_keeps_hue_and_saturation():
    # Noise-free, so only the darkening acts: a dimmer light changes brightness, not colour.
    from endolight.metrics import hue_shift

    rng = np.random.default_rng(0)
    target = torch.from_numpy(rng.uniform(0.15, 0.95, (3, 8, 8))).float()
    target = torch.nn.functional.interpolate(target[None], size=(96, 128), mode="nearest")
    cfg = DegradeConfig(peak=(1e9, 1e9), read_noise=(0.0, 0.0))
    p = sample_params(cfg, np.random.default_rng(1))
    dim = degrade(target, p)
    lifted = torch.ones(1, 1, 96, 128, dtype=torch.bool)
    assert float(hue_shift(dim, target, lifted, min_chroma=5)[0]) < 1.5
    # Linear-light chromaticity r/(r+g+b) is kept up to 8-bit rounding in the darkest pixels.
    lin_t, lin_d = (kornia.color.rgb_to_linear_rgb(x) for x in (target, dim))
    bright = lin_d.sum(1) > 0.05
    chroma = lambda x: (x / x.sum(1, keepdim=True))[:, :, bright[0]]  # noqa: E731
    assert float((chroma(lin_d) - chroma(lin_t)).abs().max()) < 0.02


# --- Mutation-testing gaps (docs/testing.md): each test below pins a behaviour that a surviving
# mutant of degrade.py showed no test looked at.

# Noise off and no JPEG: the degradation is then a deterministic function of frame and params.
NOISELESS = replace(DegradeConfig(), read_noise=(0.0, 0.0), peak=(1e12, 1e12), jpeg_prob=0.0)


def _params(**kw) -> DegradeParams:
    base = dict(gamma_centre=1.2, gamma_edge=2.5, falloff_floor=0.2, falloff_radius=0.5, falloff_power=2.0,
                centre_x=0.4, centre_y=0.6, angle=0.6, anisotropy=0.7, exposure=0.6, peak=1e12,
                read_noise=0.0, jpeg_quality=0)
    return DegradeParams(**(base | kw))


def test_bad_mode_and_unknown_protocol_are_named_errors():
    with pytest.raises(ValueError, match="mode must be one of"):
        DegradeConfig(mode="dark")
    assert protocol_config("paper") is PROTOCOLS["paper"]
    assert protocol_config("endoscope") is PROTOCOLS["endoscope"]
    with pytest.raises(ValueError, match="unknown protocol 'dark'; choose from endoscope, paper"):
        protocol_config("dark")


def test_parameters_cover_their_ranges():
    # 4000 draws of the default protocol from one seeded generator (deterministic). Measured:
    # exposure 0.1000-0.9997, median 0.321; peak 50.05-1999.8, median 329; JPEG on 25.25 % of the
    # draws, quality 50-95 (each end drawn 17 and 24 times); centres 0.3000-0.6998; angle
    # 0.002-3.1416. Each bound below is one a wrong range or a dropped end fails by far.
    rng = np.random.default_rng(0)
    ps = [sample_params(DegradeConfig(), rng) for _ in range(4000)]
    exposure, peak = np.array([p.exposure for p in ps]), np.array([p.peak for p in ps])
    assert 0.1 <= exposure.min() < 0.11 and 0.9 < exposure.max() <= 1.0
    # Log-uniform: the median is the geometric mean sqrt(0.1 * 1) = 0.316 (uniform would give 0.55);
    # the sampling error of the median of 4000 draws is ~2 % here, the bound 25 %.
    assert abs(np.log(np.median(exposure) / np.sqrt(0.1))) < 0.25
    assert 50 <= peak.min() < 55 and 1800 < peak.max() <= 2000
    assert abs(np.log(np.median(peak) / np.sqrt(50 * 2000))) < 0.25
    quality = np.array([p.jpeg_quality for p in ps])
    assert 0.22 < (quality > 0).mean() < 0.28  # jpeg_prob 0.25 (binomial sd 0.007)
    assert quality[quality > 0].min() == 50 and quality[quality > 0].max() == 95  # both ends inclusive
    for key in ("centre_x", "centre_y"):
        c = np.array([getattr(p, key) for p in ps])
        assert 0.3 <= c.min() < 0.31 and 0.69 < c.max() <= 0.7, key  # 0.5 +- centre_offset 0.2
    angle = np.array([p.angle for p in ps])
    assert 0 <= angle.min() < 0.02 and np.pi - 0.02 < angle.max() <= np.pi


@pytest.mark.parametrize(("height", "width"), [(90, 160), (120, 90)])
def test_falloff_is_the_documented_cone_in_pixels(height, width):
    # The cone written independently in pixel units: offset (dx, dy) from the light centre,
    # rotated by the angle, the short radius scaled by the anisotropy, both in units of the
    # half-diagonal (so an isotropic cone is round in pixels at any aspect ratio). float32
    # against float64: agreement to 1e-5 (measured ~1e-7); a half-pixel shift of the grid alone
    # moves it by ~1e-2.
    p = _params()
    f = falloff_map(p, height, width)[0, 0].double().numpy()
    yy, xx = np.mgrid[0:height, 0:width] + 0.5
    dx, dy = xx - p.centre_x * width, yy - p.centre_y * height
    half_diag = np.hypot(height, width) / 2
    u = (np.cos(p.angle) * dx + np.sin(p.angle) * dy) / half_diag
    v = (-np.sin(p.angle) * dx + np.cos(p.angle) * dy) / half_diag / p.anisotropy
    r = np.hypot(u, v) / p.falloff_radius
    expected = p.falloff_floor + (1 - p.falloff_floor) * np.exp(-(r**p.falloff_power))
    assert np.abs(f - expected).max() < 1e-5


def _srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def _linear_to_srgb(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.abs(x) ** (1 / 2.4) - 0.055)


def test_noiseless_degradation_is_the_documented_formula():
    # Two colour-patch frames as one batch, degraded without noise, against the module
    # docstring's steps in float64: gamma shaped by the light on the sRGB-encoded Rec.709
    # luminance, the colour scaled by the same factor in linear light, times exposure * F, then
    # 8 bits. Measured: at most 1 level apart (float32 rounding at a .5 boundary), mean 0.003
    # levels; Rec.601 luminance weights instead of Rec.709 move the mean by ~1 level.
    rng = np.random.default_rng(5)
    target = torch.from_numpy(rng.uniform(0.05, 1.0, (2, 3, 6, 8))).float()
    target = torch.nn.functional.interpolate(target, size=(48, 64), mode="nearest")
    p = _params()
    dim = degrade(target, p).double().numpy()
    f = falloff_map(p, 48, 64).double().numpy()
    gamma = p.gamma_centre * f + p.gamma_edge * (1 - f)
    lin = _srgb_to_linear(target.double().numpy())
    lum = np.einsum("bchw,c->bhw", lin, [0.2126, 0.7152, 0.0722])[:, None]
    dim_lum = _srgb_to_linear(_linear_to_srgb(lum) ** gamma)
    expected = np.round(_linear_to_srgb(lin * dim_lum / lum * p.exposure * f) * 255)
    diff = np.abs(np.round(dim * 255) - expected)
    assert diff.max() <= 1 and diff.mean() < 0.05, (diff.max(), diff.mean())
    # One frame alone gives the same as in the batch (up to a level where the residual
    # 1e-6 noise of peak 1e12 tips a rounding).
    alone = degrade(target[1], p).double().numpy()
    assert np.abs(alone - dim[1]).max() <= 1 / 255 + 1e-6 and (alone == dim[1]).mean() > 0.99


def test_out_of_range_input_is_clamped_first():
    # A float frame a little outside [0, 1] (e.g. after resampling) is degraded like its clamped
    # copy, in both protocols (a paper gamma of a negative value would be NaN).
    rng = np.random.default_rng(1)
    target = torch.from_numpy(rng.uniform(-0.3, 1.3, (3, 32, 40))).float()
    for p in (_params(), _params(mode="paper", gamma_edge=2.2)):
        assert torch.equal(degrade(target, p), degrade(target.clamp(0, 1), p)), p.mode


@pytest.mark.parametrize(("peak", "read"), [(50.0, 0.0), (1000.0, 0.02)])
def test_sensor_noise_has_the_documented_variance(peak, read):
    # Flat grey 0.5 with no falloff (floor 1), gamma 1 and exposure 1: the linear level is
    # x = 0.214 everywhere, so the noise is N(0, x / peak + read^2): sd 0.0654 (shot noise only)
    # and 0.0248 (read noise dominant). Measured on 196608 samples in linear light (8-bit
    # rounding adds ~0.001 in quadrature, clipping at 0 is < 0.1 %): within 1 % of that; bound 5 %.
    # A read-noise term subtracted instead of added gives 0.0134 (or NaN) in the second case.
    target = torch.full((3, 256, 256), 0.5)
    p = _params(falloff_floor=1.0, gamma_centre=1.0, gamma_edge=1.0, exposure=1.0, peak=peak,
                read_noise=read)
    out = degrade(target, p, torch.Generator().manual_seed(0)).double().numpy()
    lin = _srgb_to_linear(out)
    x = float(_srgb_to_linear(np.array(0.5)))
    sd = np.sqrt(x / peak + read**2)
    assert lin.std() == pytest.approx(sd, rel=0.05), (lin.std(), sd)
    assert lin.mean() == pytest.approx(x, abs=0.1 * sd)  # zero-mean noise


def test_quantise_rounds_to_8_bits_and_clamps():
    levels = torch.arange(256.0).view(1, 1, 16, 16).expand(1, 3, 16, 16) / 255
    assert torch.equal(quantise(levels), levels)  # already on the 8-bit grid: unchanged
    assert torch.equal(quantise(levels + 0.4 / 255), levels)  # rounded to the nearest level
    x = torch.tensor([-0.3, 0.0, 1.0, 1.4]).view(1, 1, 2, 2).expand(1, 3, 2, 2)
    assert quantise(x).flatten().tolist()[:4] == [0.0, 0.0, 1.0, 1.0]


def test_jpeg_quantisation_keeps_colours_and_follows_quality():
    # Smooth colour ramps (red left, blue right) under a fine luma texture. Measured mean error
    # to the plain 8-bit frame: 0.71 levels at quality 95, 1.86 at 50, 15.1 at 1; per channel at
    # most 2.0 at 95 and 50 (red and blue swapped would be ~60 off). The output stays on the
    # 8-bit grid.
    h, w = 64, 96
    ramp = torch.linspace(0, 1, w).expand(h, w)
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    texture = 0.1 * torch.sin(xx / 2.5) * torch.cos(yy / 5 * 1.3)
    colours = torch.stack([0.85 - 0.7 * ramp, 0.3 + 0.2 * ramp, 0.15 + 0.7 * ramp])
    image = (colours + texture).clamp(0, 1)[None]
    plain = quantise(image)
    err = {}
    for q in (95, 50, 1):
        out = quantise(image, q)
        assert out.shape == plain.shape and torch.equal(out * 255, torch.round(out * 255)), q
        err[q] = float((out - plain).abs().mean() * 255)
        if q > 1:
            for c in range(3):  # each channel stays its own colour
                assert float((out[:, c] - plain[:, c]).abs().mean() * 255) < 5, (q, c)
    assert err[95] < 1.5 and err[95] * 1.5 < err[50] and err[50] * 3 < err[1], err


@pytest.mark.parametrize("mode", ["endoscope", "paper"])
def test_jpeg_is_applied_last_to_the_8_bit_frame(mode):
    # The drawn quality is used in both protocols: the frame degraded with JPEG is the same
    # degradation (same noise seed) passed through quantise at that quality.
    rng = np.random.default_rng(3)
    target = torch.nn.functional.interpolate(torch.from_numpy(rng.uniform(0, 1, (1, 3, 8, 8))).float(),
                                             size=(64, 64), mode="bilinear", align_corners=False)
    p = _params(mode=mode, jpeg_quality=40, peak=300.0, read_noise=0.003)
    with_jpeg = degrade(target, p, torch.Generator().manual_seed(4))
    without = degrade(target, replace(p, jpeg_quality=0), torch.Generator().manual_seed(4))
    assert not torch.equal(with_jpeg, without)
    assert torch.equal(with_jpeg, quantise(without, 40))


def test_noise_peak_is_reported_only_where_the_protocol_adds_noise():
    rng = np.random.default_rng(0)
    for name in PROTOCOLS:
        params = sample_params(protocol_config(name), rng).to_dict()
        assert params["peak"] > 0  # both protocols draw one...
        # ...but the paper protocol never adds noise, so its pairs have no noise level.
        assert noise_peak(params) == (None if name == "paper" else params["peak"])
    assert noise_peak({"mode": "endoscope", "peak": 120}) == 120.0
    assert noise_peak({"mode": "endoscope"}) is None  # e.g. a manifest row without noise parameters
