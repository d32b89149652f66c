"""Temporal noise reduction (temporal.TemporalDenoiser): noise down on still tissue, no trail
behind motion, the border untouched; measured with the benchmark's own measures."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from endolight.bench import denoise_row, flat_regions, moving_clip, noise_sigma, static_clip
from endolight.data import FrameRef, load_frame
from endolight.enhancer import Enhancer
from endolight.fov import fov_mask
from endolight.io.images import expand_sources
from endolight.io.yuv import i420_planes, i420_to_rgb, rgb_to_i420
from endolight.temporal import TemporalConfig, TemporalDenoiser, _median, colour_histogram

FIXED = TemporalConfig(still=1e3, moving=1e3 + 1)  # every change counts as noise: a plain recursive filter


@pytest.fixture(scope="module")
def enhancer() -> Enhancer:
    return Enhancer(device="cpu")  # the shipped model: its per-frame output is what is filtered


def _noisy(clean: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, clean.shape)
    return np.clip(clean + noise, 0, 255).astype(np.uint8)


def test_noise_down_on_a_static_real_clip(data_root, enhancer):
    dims, targets = static_clip(data_root, 16, width=320)
    row = denoise_row(enhancer, dims, targets, "static")
    # Measured with the first grey model (no denoising of its own): sigma 10.2 per frame -> 5.6
    # filtered (0.55). The shipped noise-aware model already denoises each frame: 3.42 -> 2.98
    # (0.87), warping error 0.76 (input) -> 0.12. What is left per frame is mostly the
    # quantisation and texture the temporal filter must keep, so the bound asks for a real
    # further drop (0.93) rather than the first model's halving.
    assert row.noise_tnr < 0.93 * row.noise_frame
    # Warping error: input 0.76, per-frame 0.133, filtered 0.118 (0.89 of per-frame; the clip and
    # its noise are seeded, so the figures are deterministic for the shipped weights).
    assert row.warp_tnr < 0.8 * row.warp_input and row.warp_tnr < row.warp_frame


def test_less_ghosting_than_a_plain_recursive_filter_on_a_moving_real_clip(data_root, enhancer):
    dims, targets = moving_clip(data_root, 16, width=320)
    adaptive = denoise_row(enhancer, dims, targets, "moving")
    fixed = denoise_row(enhancer, dims, targets, "moving", FIXED)
    # Measured: where the instruments moved, |filtered - per-frame| is 13.8 levels (adaptive)
    # against 22.0 for the same filter blind to motion; where nothing moved both take out the
    # same noise (8.4 and 8.8). The difference above the still level is the trail: 5.4 vs 13.2.
    assert adaptive.ghost_moving < 0.8 * fixed.ghost_moving
    trail, fixed_trail = adaptive.ghost_moving - adaptive.ghost_still, fixed.ghost_moving - fixed.ghost_still
    assert trail < 0.6 * fixed_trail
    assert adaptive.noise_tnr < 0.75 * adaptive.noise_frame  # still parts are still denoised


LAYOUTS = {"rgb": (lambda f: f, lambda f: f), "i420": (rgb_to_i420, i420_to_rgb)}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_no_trail_behind_a_moving_bar(data_root, layout):
    # A bright instrument-like bar crosses a still, noisy real frame, 12 px a frame. Where it has
    # just left, the output must show the tissue again at once (no trail), while the still
    # tissue beside it is denoised. The filter is given the frames themselves as "output", as
    # RGB or as the video path's I420 planes (measured after converting back).
    to, back = LAYOUTS[layout]
    image = load_frame(FrameRef(expand_sources(data_root / "sinus/clip-a")[0], "sinus"), 320)
    fov, clean = fov_mask(image), image.astype(np.float32)
    h, w = clean.shape[:2]
    rows = slice(h // 2 - 10, h // 2 + 10)
    denoiser, fixed = TemporalDenoiser(), TemporalDenoiser(FIXED)
    left_behind, fixed_left, raw_error, still_noise, raw_noise = [], [], [], [], []
    flat = flat_regions(image, fov)
    flat[rows] = False
    for t in range(14):
        scene = clean.copy()
        x0 = 80 + 12 * t
        scene[rows, x0:x0 + 24] = 230.0
        planes = to(_noisy(scene, 6.0, t))
        frame = back(planes)
        out, out_fixed = back(denoiser(planes, planes, fov)), back(fixed(planes, planes, fov))
        if t >= 6:
            vacated = (rows, slice(x0 - 12, x0))  # the bar covered it in the previous frame
            left_behind.append(np.abs(out[vacated].astype(float) - clean[vacated]).mean())
            fixed_left.append(np.abs(out_fixed[vacated].astype(float) - clean[vacated]).mean())
            raw_error.append(np.abs(frame[vacated].astype(float) - clean[vacated]).mean())
            still_noise.append(noise_sigma(out, flat))
            raw_noise.append(noise_sigma(frame, flat))
    # No trail: the vacated strip is as far from the clean tissue as the noisy frame itself
    # (measured 4.8 vs 4.8 levels; I420: 5.3 vs 5.3), where a filter blind to motion keeps much
    # of the bar (51 in both layouts).
    assert np.mean(left_behind) < 1.3 * np.mean(raw_error), left_behind
    assert np.mean(fixed_left) > 5 * np.mean(raw_error)
    # Still tissue beside it is denoised: measured sigma 3.9 -> 2.5 (0.65; I420 3.8 -> 2.3, 0.61).
    assert np.mean(still_noise) < 0.8 * np.mean(raw_noise)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_border_passes_through_and_a_new_size_restarts(data_root, layout):
    to, _ = LAYOUTS[layout]
    clean = load_frame(FrameRef(expand_sources(data_root / "sinus/clip-a")[0], "sinus"), 320)
    fov = fov_mask(clean)
    denoiser = TemporalDenoiser()
    frames = [to(_noisy(clean.astype(np.float32), 8.0, s)) for s in range(4)]
    first = denoiser(frames[0], frames[0], fov)
    np.testing.assert_array_equal(first, frames[0])  # no past: the frame as it is
    for f in frames[1:]:
        out = denoiser(f, f, fov)
        if layout == "i420":  # the luma plane by pixel, chroma by 2x2 block wholly outside
            (oy, ou, _), (fy, fu, _) = i420_planes(out), i420_planes(f)
            h, w = fov.shape
            outside = (~fov).reshape(h // 2, 2, w // 2, 2).all(axis=(1, 3))
            np.testing.assert_array_equal(ou[outside], fu[outside])
            out, f = oy, fy
        np.testing.assert_array_equal(out[~fov], f[~fov])  # the border, to the byte
        assert np.abs(out[fov].astype(int) - f[fov]).mean() > 1  # inside: filtered
    small = frames[0][:200, :300] if layout == "rgb" else rgb_to_i420(clean[:200, :300])
    np.testing.assert_array_equal(denoiser(small, small), small)  # another size: a new stream
    with pytest.raises(ValueError, match="denoise"):
        TemporalConfig(denoise=1.0)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_grown_view_takes_no_past_from_its_old_border(data_root, layout):
    # Video's view grows over a scene's first frames (FovTracker). Where the view has just grown,
    # the filter's memory is the unenhanced border: blending it in darkened that ring (by 3/4 of
    # the lift on a still scene) until the past faded. The new ring must be this frame's output.
    to, back = LAYOUTS[layout]
    clean = load_frame(FrameRef(expand_sources(data_root / "sinus/clip-a")[0], "sinus"), 320)
    h, w = clean.shape[:2]
    small_view, big_view = np.zeros((h, w), bool), np.zeros((h, w), bool)
    small_view[40:140, 60:260], big_view[20:160, 30:290] = True, True

    def lifted(view: np.ndarray) -> np.ndarray:  # an "enhanced" frame: the view brightened by 80
        out = clean.copy()
        out[view] = np.clip(clean[view].astype(int) + 80, 0, 255)
        return out

    denoiser = TemporalDenoiser()
    for _ in range(3):  # a still scene: the past is trusted fully (weight cfg.denoise)
        denoiser(to(clean), to(lifted(small_view)), small_view)
    got = back(denoiser(to(clean), to(lifted(big_view)), big_view))
    ring = big_view & ~small_view
    want = back(to(lifted(big_view)))
    # Within one level (the 4:2:0 round trip rounds); before the fix the ring sat ~60 lower.
    assert np.abs(got[ring].astype(int) - want[ring]).mean() < 1.0


def test_histogram_and_median_helpers_equal_their_references(data_root):
    # The grid smoother's histogram and the motion map's median are one-pass rewrites: they must
    # give the reference numbers exactly (PyTorch's scatter of clamp(v) * bins, np.median).
    clean = load_frame(FrameRef(expand_sources(data_root / "sinus/clip-a")[0], "sinus"), 320)
    x = torch.from_numpy(clean).permute(2, 0, 1)[None].float() / 255
    x = torch.cat([x, x * 1.3 - 0.1])  # values beyond [0, 1] and exactly on bin edges
    x[0, 0, 0, :4] = torch.tensor([0.0, 1.0, 1 / 32, 31 / 32])
    idx = (x.clamp(0, 1) * 32).long().clamp_max(31).flatten(2)
    ones = torch.ones_like(idx, dtype=torch.float32)
    ref = torch.zeros(2, 3, 32).scatter_add_(2, idx, ones) / idx.shape[-1]
    assert torch.equal(colour_histogram(x, 32), ref)
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 100, 101, 32000):
        levels = rng.integers(0, rng.integers(1, 256), n).astype(np.uint8)
        assert _median(levels) == float(np.median(levels)), n
    assert _median(clean[..., 1]) == float(np.median(clean[..., 1]))
