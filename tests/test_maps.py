"""The fast graph's maps (endolight.model.maps) run in PyTorch, without an export: the RGB and
I420 graphs held to the exact enhancer on real frames, strength 0 as the identity, and the
colour conversions against endolight.io.yuv. (tests/test_export.py holds the exported files to
these same PyTorch graphs within 1/255; these run in a fraction of a second, so they also serve
mutation testing of maps.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from endolight.checkpoint import load_model
from endolight.data import FrameRef, load_frame
from endolight.enhancer import Enhancer
from endolight.export import FrameModel
from endolight.io.images import expand_sources
from endolight.io.yuv import CB_B, CB_G, CR_G, CR_R, TO_YCC, i420_planes, i420_to_rgb, rgb_to_i420
from endolight.io.yuv import ycc_to_rgb as ycc_to_rgb_np
from endolight.model import DeepUPE
from endolight.model.config import ModelConfig
from endolight.model.denoise import LUMA, lowres_size
from endolight.model.maps import (
    _to_ycc,
    i420_maps,
    in_levels,
    planar_terms,
    render_i420,
    render_maps,
    rgb_maps,
    ycc_to_rgb,
)
from endolight.model.slicing import EPS
from test_planar import _dim, _psnr  # the planar path's darkening and PSNR on uint8 frames

# Frame -> PSNR bounds (dB) of the fast graph against the exact enhancer (keep_border=False):
# (RGB graph at strength 1, at 0.5, I420 graph at 1, at 0.5), as written to a 4:2:0 video for
# the I420 graph. Measured with the shipped weights (blurred filter guide): bronchoscopy
# 480x480 41.9, 52.8, 41.1, 47.8; laparoscopy 960x540 43.4, 52.2, 42.6, 48.1; larynx 512x512
# 38.6, 47.9, 39.4, 46.5 (the 1/8 maps are coarse on small frames; before the blur larynx gave
# 40.2, 48.4, 35.0, 43.1). The bounds sit 1.5-7 dB under; the enhancement itself
# moves these frames 10-12 dB at strength 1, 19-20 dB at 0.5, and a lost term (the
# denoising, a chroma map, the strength) costs 5+ dB.
BOUNDS = {"bronchoscopy/edinburgh": (39.0, 48.0, 38.5, 44.5),
          "laparoscopy/laparoscopic-view-960x540.png": (40.0, 48.5, 39.0, 45.0),
          "larynx/patient1/seq1": (37.0, 45.0, 32.0, 40.0)}


@pytest.fixture(scope="module")
def model() -> DeepUPE:
    return load_model()  # the shipped weights


def _run(model: DeepUPE, layout: str, strength: float, frame: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return FrameModel(model, layout, strength)(torch.from_numpy(frame)[None])[0].numpy()  # type: ignore[arg-type]


def _exact(model: DeepUPE, frame: np.ndarray, strength: float) -> np.ndarray:
    return Enhancer(model=model, device="cpu", keep_border=False, fused=False,
                    strength=strength).enhance_array(frame)


@pytest.mark.parametrize("where", BOUNDS)
@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_fast_graphs_stay_close_to_the_exact_enhancer(model, data_root, where, strength):
    dim = _dim(load_frame(FrameRef(expand_sources(data_root / where)[0], where.split("/")[0])))
    rgb_bound, i420_bound = BOUNDS[where][0:3:2] if strength == 1.0 else BOUNDS[where][1:4:2]
    ref = _exact(model, dim, strength)
    assert _psnr(ref, dim) < 21  # the enhancement is large (measured 10-20 dB)...
    assert _psnr(_run(model, "nhwc", strength, dim), ref) > rgb_bound  # ...and the RGB graph has it
    planes = rgb_to_i420(dim)
    rgb_in = i420_to_rgb(planes)
    ref = i420_to_rgb(rgb_to_i420(_exact(model, rgb_in, strength)))
    got = _run(model, "i420", strength, planes)
    assert got.shape == planes.shape and got.dtype == np.uint8
    assert _psnr(i420_to_rgb(got), ref) > i420_bound


@pytest.mark.parametrize("layout", ["nhwc", "i420"])
def test_strength_zero_returns_the_input_exactly(model, data_root, layout):
    # lam = 0 (no denoising) and S ** 0 = 1: both graphs must give back every level unchanged.
    dim = _dim(load_frame(FrameRef(expand_sources(data_root / "bronchoscopy/edinburgh")[0], "bronchoscopy")))
    frame = rgb_to_i420(dim) if layout == "i420" else dim
    np.testing.assert_array_equal(_run(model, layout, 0.0, frame), frame)


def test_colour_conversions_are_bt601_limited_range():
    rng = np.random.default_rng(0)
    ycc = rng.uniform(0, 255, (3, 6, 7)).astype(np.float32)
    ycc[:, 0, :3] = [[16, 235, 16], [128, 128, 240], [128, 128, 16]]  # black, white, saturated
    got = ycc_to_rgb(torch.from_numpy(ycc)[None])[0].numpy()
    np.testing.assert_allclose(got, ycc_to_rgb_np(*ycc), atol=1e-6)
    assert got.min() == 0.0 and got.max() == 1.0  # clamped, as the decoder's conversion
    rgb = rng.uniform(-1, 1, (1, 3, 5, 4)).astype(np.float32)
    want = np.einsum("ij,bjhw->bihw", TO_YCC, rgb)
    np.testing.assert_allclose(_to_ycc(torch.from_numpy(rgb)).numpy(), want, atol=1e-6)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


# A chroma curve (ModelConfig.chroma_knots) with a knot above 1, below 1 and the last at 1.
GAINS = np.array([0.7, 1.3, 0.8, 1.0])


def _sigma(s: np.ndarray) -> np.ndarray:
    """The chroma curve ``GAINS`` at ``S`` (piecewise linear over ``S = 0, 1/3, 2/3, 1``)."""
    return np.interp(np.clip(s, 0, 1), np.linspace(0, 1, len(GAINS)), GAINS)


@pytest.mark.parametrize(("strength", "offset", "curve"), [
    (None, 0.0, False), (0.6, 0.0, False), (None, 0.055, False), (0.6, 0.1, False), (None, 0.0, True),
    (0.6, 0.055, True)])
def test_render_maps_is_the_documented_formula(strength, offset, curve):
    # Maps at the frame's own size (their upsampling is then the identity), every value hand
    # computed in float64: D = A I + B_c Y + C_c clamped to [0, 1], S = max(m + (1 - m)
    # sigmoid(L . D + L0), EPS) ** k with m = (max_c D + beta) / (1 + beta),
    # out = 255 ((D + beta) / S - beta). None: the default, full strength.
    rng = np.random.default_rng(1)
    h, w = 6, 9
    planes = rng.integers(0, 256, (3, h, w)).astype(np.float64)
    planes[:, 0, :3] = [[0, 255, 255], [0, 255, 10], [0, 255, 10]]  # black, white, a bright red
    maps = np.concatenate([rng.uniform(0.3, 1.3, (1, h, w)), rng.normal(0, 0.5, (3, h, w)),
                           rng.normal(0, 0.2, (3, h, w)), rng.normal(0, 2, (4, h, w))])
    maps[4:7, 0, :3] = 0.5  # D above 1 at the white pixel: the upper clamp
    kwargs = {"offset": offset} if offset else {}
    if curve:
        kwargs["gains"] = torch.from_numpy(GAINS)
    got = render_maps(torch.from_numpy(maps)[None], [torch.from_numpy(p)[None, None] for p in planes],
                      *([] if strength is None else [strength]), **kwargs)
    x = planes / 255
    y = LUMA[0] * x[0] + LUMA[1] * x[1] + LUMA[2] * x[2]
    d = np.clip(maps[0] * x + maps[1:4] * y + maps[4:7], 0, 1)
    assert (maps[0] * x + maps[1:4] * y + maps[4:7] > 1).any() and (d == 0).any()  # both clamps used
    m = (d.max(0) + offset) / (1 + offset)
    s = np.maximum(m + (1 - m) * _sigmoid((maps[7:10] * d).sum(0) + maps[10]), EPS)
    s = s ** (1.0 if strength is None else strength)
    want = 255 * ((d + offset) / s - offset)
    if curve:  # the chroma (each channel minus the luma) times sigma(S), clamped to [0, 255]
        luma = 255 * ((LUMA[0] * d[0] + LUMA[1] * d[1] + LUMA[2] * d[2] + offset) / s - offset)
        want = np.clip(luma + _sigma(s) * (want - luma), 0, 255)
        assert (want == 255).any() and (_sigma(s) > 1).any() and (_sigma(s) < 0.9).any()
    np.testing.assert_allclose(np.stack([g[0, 0].numpy() for g in got]), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("strength", "offset", "curve"), [
    (None, 0.0, False), (0.6, 0.0, False), (None, 0.055, False), (0.6, 0.1, False), (None, 0.0, True)])
def test_render_i420_is_the_documented_formula(strength, offset, curve):
    # Spatially constant maps (their upsampling is exact), random planes with sub-black and
    # super-white luma: each output level against a float64 evaluation of the docstring of
    # endolight.kernels.planar (the same formula in 8-bit levels).
    rng = np.random.default_rng(2)
    h, w = 8, 12
    y = rng.integers(0, 256, (h, w)).astype(np.float64)
    y[:2] = rng.integers(0, 6, (2, w))  # sub-black rows: negative D_Y, the output clamps at 0
    uv = rng.integers(96, 160, (2, h // 2, w // 2)).astype(np.float64)
    luma = np.array([1.1 / 219, -16 / 219 - 0.01, 2.5, 0.0])  # P, Q, L, R in levels (R: no blur)
    chroma = np.array([1 / 224, 0.2 / 219, -128 / 224, -0.1 / 219, -128 / 224, 0.8, -0.6, -0.4])
    y2 = y.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    got_y, got_uv = render_i420(torch.from_numpy(luma)[None, :, None, None],
                                torch.from_numpy(chroma)[None, :, None, None],
                                torch.from_numpy(y)[None, None], torch.from_numpy(y2)[None, None],
                                torch.from_numpy(uv)[None], *([] if strength is None else [strength]),
                                **({"offset": offset} if offset else {}),
                                **({"gains": torch.from_numpy(GAINS)} if curve else {}))
    c = chroma
    d_cb, d_cr = c[0] * uv[0] + c[1] * y2 + c[2], c[0] * uv[1] + c[3] * y2 + c[4]
    bterm = c[5] * d_cb + c[6] * d_cr + c[7]
    cmax = np.maximum(np.maximum(CR_R * d_cr, -CB_G * d_cb - CR_G * d_cr), CB_B * d_cb)
    d_y = luma[0] * y + luma[1]
    up = np.ones((2, 2))
    m = (np.clip(d_y + np.kron(cmax, up), 0, 1) + offset) / (1 + offset)
    s = np.maximum(m + (1 - m) * _sigmoid(luma[2] * d_y + np.kron(bterm, up)), EPS)
    gain = 219 / s ** (1.0 if strength is None else strength)
    want_y = np.clip(np.floor((d_y + offset) * gain + 16.5 - 219 * offset), 0, 255)
    g = gain.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)) * (224 / 219)
    if curve:  # the chroma curve at each block's S: 1 / the mean of its four 1 / S
        g = g * _sigma(224 / g)
        assert (_sigma(224 / g) < 0.95).any()
    want_uv = np.clip(np.floor(np.stack([d_cb, d_cr]) * g + 128.5), 0, 255)
    # the clamps are used (the offset space lifts the sub-black rows a little: fewer reach 0)
    assert (d_y + np.kron(cmax, up) < 0).any() and (want_y == 0).sum() >= (1 if offset else w)
    np.testing.assert_array_equal(got_y[0, 0].numpy(), want_y)
    np.testing.assert_array_equal(got_uv[0].numpy(), want_uv)


def test_planar_terms_are_the_rgb_affine_in_ycbcr():
    # D = (1 - lam) I + lam (a Y + b) and the logit L . D + L0 in RGB, against the planar maps
    # on the pixel's Y'CbCr, normalised (planar_terms) and in 8-bit levels (in_levels).
    rng = np.random.default_rng(3)
    n = 50
    rgb = rng.uniform(0, 1, (3, n))
    lam, a_rgb, b_rgb = rng.uniform(0, 1, n), rng.normal(0, 1, (3, n)), rng.normal(0, 0.3, (3, n))
    affine = rng.normal(0, 2, (4, n))
    luma_y = np.asarray(LUMA) @ rgb
    d_rgb = (1 - lam) * rgb + lam * (a_rgb * luma_y + b_rgb)
    logit = (affine[:3] * d_rgb).sum(0) + affine[3]
    to_ycc = TO_YCC.astype(np.float64)
    ycc, d_ycc = to_ycc @ rgb, to_ycc @ d_rgb
    luma, chroma = planar_terms(lam, list(to_ycc @ a_rgb), list(to_ycc @ b_rgb), list(affine))
    d_y = luma[0] * ycc[0] + luma[1]
    d_cb = chroma[0] * ycc[1] + chroma[1] * ycc[0] + chroma[2]
    d_cr = chroma[0] * ycc[2] + chroma[3] * ycc[0] + chroma[4]
    np.testing.assert_allclose(np.stack([d_y, d_cb, d_cr]), d_ycc, atol=1e-5)
    np.testing.assert_allclose(luma[2] * d_y + chroma[5] * d_cb + chroma[6] * d_cr + chroma[7], logit,
                               atol=1e-4)
    levels = 16 + 219 * ycc[0], 128 + 224 * ycc[1], 128 + 224 * ycc[2]
    lv, cv = in_levels(luma, chroma)
    np.testing.assert_allclose(lv[0] * levels[0] + lv[1], d_y, atol=1e-6)
    np.testing.assert_allclose(lv[2], luma[2])
    np.testing.assert_allclose(cv[0] * levels[1] + cv[1] * levels[0] + cv[2], d_cb, atol=1e-6)
    np.testing.assert_allclose(cv[0] * levels[2] + cv[3] * levels[0] + cv[4], d_cr, atol=1e-6)
    np.testing.assert_allclose(cv[5:], chroma[5:])
    # With a blurred guide G = Yn + blur (Bn - Yn) (any Bn): D_Y = P Yn + Q + R Bn, in levels too.
    bn, blur = ycc[0] + rng.normal(0, 0.05, n), 0.7
    luma_b, _ = planar_terms(lam, list(to_ycc @ a_rgb), list(to_ycc @ b_rgb), list(affine), blur)
    a_y, b_y = (to_ycc @ a_rgb)[0], (to_ycc @ b_rgb)[0]
    want = (1 - lam) * ycc[0] + lam * (a_y * (ycc[0] + blur * (bn - ycc[0])) + b_y)
    np.testing.assert_allclose(luma_b[0] * ycc[0] + luma_b[1] + luma_b[3] * bn, want, atol=1e-6)
    assert np.abs(luma_b[3]).max() > 0.1  # the blurred part is there
    lvb, _ = in_levels(luma_b, chroma)
    np.testing.assert_allclose(lvb[0] * levels[0] + lvb[1] + lvb[3] * (16 + 219 * bn), want, atol=1e-6)


def test_fast_graphs_of_a_model_without_the_denoiser(data_root):
    # A grey model without the learned denoising (random weights, a strongly varying grid):
    # its maps are the identity's (A = 1, no B or C) and the fast graphs still follow its exact
    # render. Measured on this 480 px frame (which it moves by 20.3 dB): RGB graph 63.5 dB,
    # I420 48.3 dB from the exact render (a random grid varies less than a trained one); the
    # bounds sit 3 dB and more under.
    torch.manual_seed(0)
    net = DeepUPE(ModelConfig(denoise=False))
    with torch.no_grad():
        net.coeffs.pred.weight.normal_(std=0.3)
    net.eval()
    dim = _dim(load_frame(FrameRef(expand_sources(data_root / "bronchoscopy/edinburgh")[0], "bronchoscopy")))
    half = torch.from_numpy(dim).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        maps = rgb_maps(net, half)
    assert maps.shape[1] == 11
    assert (maps[:, 0] == 1).all() and (maps[:, 1:7] == 0).all() and maps[:, 7:].abs().sum() > 0
    ref = _exact(net, dim, 1.0)
    assert _psnr(ref, dim) < 25
    assert _psnr(_run(net, "nhwc", 1.0, dim), ref) > 55.0
    planes = rgb_to_i420(dim)
    rgb_in = i420_to_rgb(planes)
    ref = i420_to_rgb(rgb_to_i420(_exact(net, rgb_in, 1.0)))
    assert _psnr(i420_to_rgb(_run(net, "i420", 1.0, planes)), ref) > 45.0


@pytest.mark.parametrize("where", ["bronchoscopy/edinburgh", "laparoscopy/laparoscopic-view-960x540.png"])
def test_i420_maps_are_the_rgb_maps_in_ycbcr(model, data_root, where):
    # The I420 graph's maps, at 1/8 of the frame, against the RGB graph's maps of the same
    # half-size frame rewritten per the planar kernel's formulas (A = 1 - lam, B = lam a,
    # C = lam b and the affine row, in Y'CbCr and 8-bit levels). The two differ only where
    # converting to RGB clamps before or after a resize: measured mean relative differences
    # per map <= 0.0003 (luma) and 0.0023 (chroma) on these frames; a wrong term or scale is O(1).
    dim = _dim(load_frame(FrameRef(expand_sources(data_root / where)[0], where.split("/")[0])))
    y, u, v = i420_planes(rgb_to_i420(dim))
    y2 = F.avg_pool2d(torch.from_numpy(y).float()[None, None], 2)
    uv = torch.from_numpy(np.stack([u, v])).float()[None]
    with torch.no_grad():
        luma, chroma = i420_maps(model, y2, uv)
        rgb = rgb_maps(model, ycc_to_rgb(torch.cat([y2, uv], 1)))[0].double()
    assert luma.shape[-2:] == chroma.shape[-2:] == lowres_size(*y.shape, 8)
    to_ycc = torch.from_numpy(TO_YCC).double()
    a, b, c, (lr, lg, lb, l0) = rgb[0], to_ycc @ rgb[1:4].flatten(1), to_ycc @ rgb[4:7].flatten(1), rgb[7:11]
    b, c = b.view(3, *a.shape), c.view(3, *a.shape)
    affine_c = [CB_B * lb - CB_G * lg, CR_R * lr - CR_G * lg, l0]
    r = model.cfg.guide_weight * b[0]  # the guide row's part: blur lam a_Y (lam a_Y with the Lee step)
    want_luma, want_chroma = in_levels([a + b[0] - r, c[0], lr + lg + lb, r],
                                       [a, b[1], c[1], b[2], c[2], *affine_c])
    for got, want in zip([*luma[0].double(), *chroma[0].double()], [*want_luma, *want_chroma], strict=True):
        assert (got - want).abs().mean() < 0.01 * want.abs().mean()
