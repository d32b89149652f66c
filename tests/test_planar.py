"""The video path on the decoder's Y′CbCr 4:2:0 planes (endolight.planar, kernels/planar.py):
held to the RGB path on real frames, the kernel's formula on known numbers, the border, the
strength, and the video pipeline using it end to end."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest
import torch

from endolight import planar as planar_module
from endolight.border import border_fill_planes
from endolight.data import FrameRef, load_frame
from endolight.enhancer import Enhancer
from endolight.fov import fov_mask
from endolight.io.images import expand_sources
from endolight.io.sources import open_source
from endolight.io.yuv import i420_planes, i420_to_rgb, rgb_thumbnail, rgb_to_i420, shrunk_plane, thumbnail
from endolight.kernels.common import sigmoid
from endolight.kernels.planar import guided_fit, render_planes
from endolight.metrics import psnr
from endolight.model import DeepUPE, ModelConfig
from endolight.model.slicing import EPS
from endolight.planar import (
    COARSE_FIT_PIXELS,
    COARSEN,
    COARSER_MAPS_PIXELS,
    network_input,
    plan_planes,
    planar_maps,
    small_copy,
)
from endolight.temporal import GridSmoother, TemporalConfig
from endolight.video import VideoOptions, enhance_video


@pytest.fixture(scope="module")
def enhancer() -> Enhancer:
    return Enhancer(device="cpu")  # the shipped model


def _dim(image: np.ndarray) -> np.ndarray:
    """A dim, unevenly exposed copy (exposure 0.2 in linear light), even-sized."""
    h, w = image.shape[:2]
    lin = (image[: h // 2 * 2, : w // 2 * 2] / 255.0) ** 2.2 * 0.2
    return (255 * lin ** (1 / 2.2) + 0.5).astype(np.uint8)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(psnr(torch.from_numpy(a).float()[None] / 255, torch.from_numpy(b).float()[None] / 255))


# Frame, PSNR bound (dB) of the planar path against the RGB path. Measured (3 Dec, the small
# copy as exact area means, the shipped weights with the blurred filter guide): sinus 1920x1080
# 50.7, gastroscopy 1280x1024 43.8, laparoscopy 960x540 45.5, larynx 512x512 38.8 (38.3 before
# the blur, 40.2 with the 14-epoch weights). The maps are made at 1/8 of the frame, so the
# smaller the frame the coarser they are; the bounds sit 1.8-4.7 dB under the measurements (a
# broken map, tap or chroma term costs 10+ dB).
FRAMES = {"sinus/clip-a": 46.0, "gastroscopy-fujifilm/LCI_GA": 41.0,
          "laparoscopy/laparoscopic-view-960x540.png": 41.0, "larynx/patient1/seq1": 37.0}


@pytest.mark.parametrize("where", FRAMES)
def test_planar_path_matches_the_rgb_path_on_real_frames(data_root, enhancer, where):
    dim = _dim(load_frame(FrameRef(expand_sources(data_root / where)[0], where.split("/")[0])))
    planes = rgb_to_i420(dim)
    rgb_in = i420_to_rgb(planes)  # what the RGB path sees of the same decoded frame
    fov = fov_mask(rgb_in)
    # The RGB path's output as it is written to a 4:2:0 video.
    reference = i420_to_rgb(rgb_to_i420(enhancer.enhance_array(rgb_in, fov=fov)))
    got = i420_to_rgb(enhancer.enhance_planes(planes, fov=fov))
    assert _psnr(reference, rgb_in) < 20  # the enhancement itself is large (measured 9-14 dB)...
    assert _psnr(got, reference) > FRAMES[where]  # ...and the planar path reproduces it


def test_guided_fit_equals_the_model_reference(data_root, enhancer):
    image = load_frame(FrameRef(expand_sources(data_root / "sinus/clip-a")[0], "sinus"), 480)
    small = np.ascontiguousarray((image / 255.0).astype(np.float32).transpose(2, 0, 1))
    eps = enhancer.model.denoise_threshold()
    with torch.no_grad():
        ref = enhancer.model.fit_denoiser(torch.from_numpy(small)[None])[0].numpy()  # the PyTorch reference
    got = guided_fit(small, enhancer.model.cfg.denoise_radius, eps)
    # Measured: at most 3.6e-5 apart (coefficients up to 1.2): float32 rounding of the two box
    # sums (running sums vs pooling), amplified by cov / (var + eps) where the variance is tiny.
    # A wrong moment, radius or eps moves them by 1e-2 and more.
    np.testing.assert_allclose(got, ref, atol=2e-4)


def test_kernel_formula_on_a_uniform_frame():
    # Flat maps: D_Y = P Yn + Q, logit = L D_Y + L_0 (grey input: no chroma terms), S = m + (1 -
    # m) sigmoid(logit) with m = D_Y, Y' = 16 + 219 D_Y / S. Chroma (128) stays 128 for any S.
    h, w, level = 8, 12, 70
    y = np.full((h, w), level, np.uint8)
    u = np.full((h // 2, w // 2), 128, np.uint8)
    v = u.copy()
    p, q, lc, l0 = 0.9, 0.02, 1.5, -0.7
    luma = np.zeros((4, 2, 3), np.float32)  # R = 0: no blurred guide
    luma[0], luma[1], luma[2] = p, q, lc
    chroma = np.zeros((8, 2, 3), np.float32)
    chroma[0], chroma[7] = 1.0, l0
    oy, ou, ov = render_planes(y, u, v, luma, chroma, EPS)
    d = p * (level - 16) / 219 + q
    s = d + (1 - d) * float(sigmoid(np.float32(lc * d + l0)))
    assert np.all(oy == int(16 + 219 * d / s + 0.5))
    assert oy[0, 0] > level + 20  # lifted
    assert np.all(ou == 128) and np.all(ov == 128)
    # Strength k: S ** k (k = 0: S = 1, only the denoising term P, Q remains).
    oy0, _, _ = render_planes(y, u, v, luma, chroma, EPS, strength=0.0)
    assert np.all(oy0 == int(16 + 219 * d + 0.5))


def test_border_kept_and_strength(data_root, enhancer):
    dim = _dim(load_frame(FrameRef(expand_sources(data_root / "sinus/clip-a")[0], "sinus"), 640))
    # Noise-free, the border is clean and copied to the byte.
    clean = rgb_to_i420(dim)
    fov = fov_mask(i420_to_rgb(clean))
    assert 0.2 < (~fov).mean() < 0.8  # a round view with a real border
    np.testing.assert_array_equal(i420_planes(enhancer.enhance_planes(clean, fov=fov))[0][~fov],
                                  i420_planes(clean)[0][~fov])
    noise = np.random.default_rng(0).normal(0, 3, dim.shape)
    planes = rgb_to_i420(np.clip(dim + noise, 0, 255).astype(np.uint8))
    y = i420_planes(planes)[0]
    y[1:12, 1:40] = 200  # an overlay in the border's corner, across 2x2 blocks
    out = enhancer.enhance_planes(planes, fov=fov)
    (oy, ou, ov), (y, u, v) = i420_planes(out), i420_planes(planes)
    # The border, to the byte: its noise flattened to the fill (endolight.border), the rest copied.
    fy, fu, fv, below = border_fill_planes(y, u, v, ~fov)
    noise = ~fov & (y < below)
    assert 0.9 < noise.sum() / (~fov).sum() < 1  # the noise, not the overlay
    assert np.all(oy[noise] == fy) and np.all(oy[~fov & ~noise] == y[~fov & ~noise])
    assert np.all(oy[1:12, 1:40] == 200)
    h, w = fov.shape
    blocks = lambda m: m.reshape(h // 2, 2, w // 2, 2).all(axis=(1, 3))  # noqa: E731
    flat, outside = blocks(noise), blocks(~fov)
    assert np.all(ou[flat] == fu) and np.all(ov[flat] == fv)
    np.testing.assert_array_equal(ou[outside & ~flat], u[outside & ~flat])
    np.testing.assert_array_equal(ov[outside & ~flat], v[outside & ~flat])
    lifted = float(oy[fov].mean()) - float(y[fov].mean())
    assert lifted > 30  # measured +60 levels inside the view; strength 0.5 gives 0.34 of it
    np.testing.assert_array_equal(enhancer.enhance_planes(planes, strength=0.0, fov=fov), planes)
    half = i420_planes(enhancer.enhance_planes(planes, strength=0.5, fov=fov))[0]
    assert y[fov].mean() + 0.2 * lifted < half[fov].mean() < y[fov].mean() + 0.9 * lifted


def test_a_new_view_array_gets_its_own_spans(data_root, enhancer):
    # The planner keeps what it derives from a fov array while the same array comes back (a
    # stream's mask); a new array, as a re-detected view is, is derived afresh.
    dim = _dim(load_frame(FrameRef(expand_sources(data_root / "sinus/clip-a")[0], "sinus"), 640))
    planes = rgb_to_i420(dim)
    y = i420_planes(planes)[0]
    fov = fov_mask(i420_to_rgb(planes))
    half = fov.copy()
    half[:, : fov.shape[1] // 2] = False  # the view's left half is border now
    first = enhancer.enhance_planes(planes, fov=fov)
    out = i420_planes(enhancer.enhance_planes(planes, fov=half))[0]
    np.testing.assert_array_equal(out[~half], y[~half])  # noise-free: the border copied
    assert (out[half] != y[half]).mean() > 0.5
    np.testing.assert_array_equal(enhancer.enhance_planes(planes, fov=fov), first)


def test_video_runs_on_the_decoders_planes(tmp_path, data_root):
    # An ordinary H.264 file decodes to limited-range 4:2:0: its frames carry their planes, and
    # `video` writes what the planar path gives for them (the RGB frame is never made).
    src = open_source(data_root / "laparoscopy/cholecystectomy-720p.mp4")
    frames = [f for f, _ in zip(src, range(6), strict=False)]
    src.close()
    assert all(f.planes is not None and f._image is None for f in frames)
    enhancer = Enhancer(device="cpu", keep_border=False)  # the border follows the tracked view
    out = tmp_path / "out.mp4"
    report = enhance_video(data_root / "laparoscopy/cholecystectomy-720p.mp4", out, enhancer,
                           VideoOptions(temporal=None, max_frames=6))
    assert report.written == 6
    with av.open(str(out)) as container:
        written = [vf.to_ndarray() for vf in container.decode(video=0)]
    for frame, got in zip(frames, written, strict=True):
        want = enhancer.enhance_planes(frame.planes)
        # x264 at CRF 18 is the only difference (measured 44.1-46.7 dB); an unenhanced frame is
        # 16 dB away.
        assert _psnr(i420_to_rgb(got), i420_to_rgb(want)) > 38


@pytest.mark.parametrize("k", [2, 4, 8, 16])
def test_shrunk_plane_is_the_area_average_of_whole_blocks(k):
    rng = np.random.default_rng(k)
    h, w = 3, 5
    plane = rng.integers(0, 256, (h * k, w * k), dtype=np.uint8)
    plane[:k, :k] = 255  # a block of 255s: its sum still fits (16 x 16 x 255 < 2^16)
    got = shrunk_plane(plane, (w, h))
    assert got.dtype == np.float32 and got[0, 0] == 255.0
    want = plane.reshape(h, k, w, k).astype(np.float64).mean((1, 3))
    np.testing.assert_array_equal(got, want.astype(np.float32))
    # Exactly OpenCV's area resize of the plane as float; and any other ratio goes to OpenCV.
    def area(a: np.ndarray) -> np.ndarray:
        return cv2.resize(a.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)

    np.testing.assert_array_equal(got, area(plane))
    odd = plane[:, : w * k - 1]
    np.testing.assert_allclose(shrunk_plane(odd, (w, h)), area(odd), atol=1e-4)


def test_held_grids_halve_the_network_runs_and_keep_the_output(data_root, enhancer, monkeypatch):
    # Six consecutive 1080p sinus frames (8 source frames apart: real motion, histogram changes
    # 0.008-0.041 on the small copies the smoother sees, 0.008-0.040 on the network's inputs,
    # below the default hold 0.05), as video plans them: with the smoother's default
    # network_every=2 the network runs on every other frame, its input is made only then, and
    # the output stays within 40 dB of running it on every frame (measured here 43.9-54.0 dB,
    # 43.7-54.0 when the smoother saw the network's input; on 80 frames of the 1080p benchmark
    # clip 50.6 median, 45.5 worst; reusing another scene's grid costs far more).
    frames = [rgb_to_i420(_dim(load_frame(FrameRef(p, "sinus"))))
              for p in expand_sources(data_root / "sinus/clip-a")[5:11]]
    fov = fov_mask(i420_to_rgb(frames[0]))
    runs, network, inputs = [], enhancer.network, []
    enhancer.network = lambda x: runs.append(1) or network(x)  # the same network, its runs counted
    make_input = planar_module.network_input
    monkeypatch.setattr(planar_module, "network_input", lambda *a: inputs.append(1) or make_input(*a))
    try:
        outs = {}
        for every in (1, 2):
            smoother, before = GridSmoother(TemporalConfig(network_every=every)), len(runs)
            outs[every] = [enhancer.enhance_planes(p, grid_filter=smoother, fov=fov) for p in frames]
            outs[every, "runs"] = len(runs) - before
    finally:
        enhancer.network = network
    assert outs[1, "runs"] == 6 and outs[2, "runs"] == 3 and len(inputs) == 9
    psnrs = [_psnr(i420_to_rgb(a), i420_to_rgb(b)) for a, b in zip(outs[1], outs[2], strict=True)]
    assert min(psnrs) > 40
    assert psnrs[0] > 90 and max(psnrs[1:]) < 90  # the same first frame; then the held grids show


@pytest.mark.parametrize("width, coarse, coarsen", [(640, False, COARSEN), (1280, True, COARSEN),
                                                   (1920, True, COARSEN), (3840, True, 2 * COARSEN)])
def test_plan_picks_the_fit_and_the_maps_size_by_frame_size(data_root, enhancer, width, coarse, coarsen):
    # From COARSE_FIT_PIXELS (720p) up the guided filter is fitted on the 1/8 copy (half the
    # radius), below on the 1/4 copy; from COARSER_MAPS_PIXELS (4K) up the maps are made at 1/16
    # instead of 1/8. plan_planes must pick both by the frame's size: its maps equal planar_maps
    # with the expected pair, and no other.
    model, guide = enhancer.model, enhancer.guide_params
    image = load_frame(FrameRef(expand_sources(data_root / "sinus/clip-a")[3], "sinus"))  # 1920x1080
    planes = rgb_to_i420(_dim(cv2.resize(image, (width, width * 9 // 16), interpolation=cv2.INTER_CUBIC)))
    h, w = i420_planes(planes)[0].shape
    assert (h * w >= COARSE_FIT_PIXELS, h * w >= COARSER_MAPS_PIXELS) == (coarse, coarsen > COARSEN)
    plan = plan_planes(model, guide, planes)
    small, same = small_copy(model, planes), []
    with torch.no_grad():
        grid = model.coeffs(network_input(*i420_planes(planes), model.cfg.lowres, small))
    for fit in (True, False):
        for c in (COARSEN, 2 * COARSEN):
            luma, _ = planar_maps(model, guide, grid, small, 1.0, c, coarse_fit=fit)
            if luma.shape == plan.luma.shape and np.array_equal(luma, plan.luma):
                same.append((fit, c))
    assert same == [(coarse, coarsen)]


@pytest.mark.parametrize("width", [640, 1280, 1920, 3840])
def test_network_input_from_the_planes_matches_the_rgb_paths(data_root, enhancer, width):
    # The grid is sensitive to how its 256 px input was shrunk. From the planes (the luma first
    # averaged over 2x2 blocks from 720p up; from 1080p up the small copy) it stays within 50 dB
    # of the RGB path's input (measured 54.2-55.8 dB, at most 4.7 levels); a swapped plane or a
    # wrong scale costs 20+ dB, and the small copy below 1080p (upsampled) 33-44 dB.
    image = load_frame(FrameRef(expand_sources(data_root / "sinus/clip-a")[0], "sinus"))
    planes = rgb_to_i420(_dim(cv2.resize(image, (width, width * 9 // 16), interpolation=cv2.INTER_AREA)))
    small = small_copy(enhancer.model, planes)
    got = network_input(*i420_planes(planes), enhancer.model.cfg.lowres, small)
    want = enhancer.lowres(i420_to_rgb(planes))
    assert got.shape == want.shape == (1, 3, 256, 256)
    assert float(psnr(got, want)) > 50
    from_planes = network_input(*i420_planes(planes), enhancer.model.cfg.lowres)
    # From 1080p up the small copy is resized, and it is the closer of the two (measured
    # 1920: 55.8 against 54.7 dB, 3840: 58.8 against 55.5); below, the planes.
    assert torch.equal(got, from_planes) == (width < 1920)
    if width >= 1920:
        assert float(psnr(got, want)) > float(psnr(from_planes, want))


def test_field_of_view_thumbnail_from_the_small_copy(data_root, enhancer):
    # Video's field-of-view tracker takes its 384 px thumbnail from the planner's 1/4 copy instead
    # of shrinking the full planes again: the two differ by a fraction of a level on average
    # (measured here 0.17, at most 14; on 1080p laparoscopy frames 0.67, up to 48 at a sharp edge).
    planes = rgb_to_i420(_dim(load_frame(FrameRef(expand_sources(data_root / "sinus/clip-a")[0], "sinus"))))
    size = (384, 216)
    direct, shared = thumbnail(planes, size), rgb_thumbnail(small_copy(enhancer.model, planes), size)
    assert direct.shape == shared.shape == (216, 384, 3) and shared.dtype == np.uint8
    assert np.abs(direct.astype(int) - shared).mean() < 1.0
    grey = np.full((3, 216, 384), 0.5, np.float32)  # a copy at the size is only rounded to levels
    assert np.all(rgb_thumbnail(grey, size) == 128)


def test_only_the_grey_sigmoid_model_takes_the_planar_path(enhancer):
    # The planar kernel holds one form of S: a per-channel model, the power curve or a
    # dequantised frame goes through the RGB path (video checks `planar`), and asking for the
    # planes directly is a clear error.
    assert enhancer.planar
    planes = np.full((48, 64), 128, np.uint8)
    for cfg in (ModelConfig(curve="power"), ModelConfig(illumination="rgb"), ModelConfig(dequantise=True)):
        other = Enhancer(model=DeepUPE(cfg).eval(), device="cpu")
        assert not other.planar
        with pytest.raises(ValueError, match="grey model with the sigmoid curve"):
            other.plan_planes(planes)
