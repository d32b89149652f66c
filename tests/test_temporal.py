"""Temporal noise reduction (temporal.TemporalDenoiser): noise down on still tissue, no trail
behind motion, the border untouched; measured with the benchmark's own measures."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from endolight.bench import denoise_row, flat_regions, moving_clip, noise_sigma, static_clip
from endolight.data import FrameRef, load_frame
from endolight.enhancer import Enhancer
from endolight.fov import fov_mask
from endolight.io.images import expand_sources
from endolight.io.yuv import i420_planes, i420_to_rgb, rgb_to_i420
from endolight.kernels.common import axis_taps
from endolight.kernels.planar import ALIGN, view_spans
from endolight.planar import small_planes
from endolight.temporal import (
    _NO_SPANS,
    _NONE,
    GridSmoother,
    TemporalConfig,
    TemporalDenoiser,
    _across,
    _blend,
    _border_weights,
    _borders,
    _median,
    colour_histogram,
    histogram_distance,
)

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
    # filtered (0.55). The noise-aware model already denoises each frame: 3.42 -> 2.98 (0.87),
    # warping error 0.76 (input) -> 0.12; with the blurred guide 1.67 -> 1.44 (0.87); with the
    # guide's Lee step 0.81 -> 0.75 (0.93; deterministic: seeded clip, CPU). What is left per
    # frame is mostly the quantisation and texture the temporal filter must keep, so the bound
    # asks for a real further drop (0.96; a filter that does nothing scores 1) rather than the
    # first model's halving.
    assert row.noise_tnr < 0.96 * row.noise_frame
    # Warping error: input 0.76, per-frame 0.133, filtered 0.118 (0.89 of per-frame; the clip and
    # its noise are seeded, so the figures are deterministic for the shipped weights; with the
    # guide's Lee step 0.079 and 0.071).
    assert row.warp_tnr < 0.8 * row.warp_input and row.warp_tnr < row.warp_frame


def test_less_ghosting_than_a_plain_recursive_filter_on_a_moving_real_clip(data_root, enhancer):
    dims, targets = moving_clip(data_root, 16, width=320)
    adaptive = denoise_row(enhancer, dims, targets, "moving")
    fixed = denoise_row(enhancer, dims, targets, "moving", FIXED)
    # Measured with the first grey model: where the instruments moved, |filtered - per-frame| is
    # 13.8 levels (adaptive) against 22.0 for the same filter blind to motion; where nothing
    # moved both take out the same noise (8.4 and 8.8); the trail (above the still level) 5.4 vs
    # 13.2: ratios 0.63 and 0.41, for which the bounds 0.8 and 0.6 were set. With the shipped
    # weights (blurred filter guide; deterministic: seeded clip, CPU) moving 1.57 vs 13.73, still
    # 1.75 vs 2.34, trail -0.18 vs 11.40: ratios 0.11 and below 0. The bounds are left where the
    # first model needed them; a filter blind to motion scores 1 on both.
    assert adaptive.ghost_moving < 0.8 * fixed.ghost_moving
    trail, fixed_trail = adaptive.ghost_moving - adaptive.ghost_still, fixed.ghost_moving - fixed.ghost_still
    assert trail < 0.6 * fixed_trail
    # Still parts are still denoised: measured sigma 1.57 -> 1.12 (0.72, weights with the blurred
    # filter guide, deterministic; the weights before it: 3.58 -> 2.48, 0.69; with the guide's
    # Lee step 0.83 -> 0.66, 0.79, and the motion-blind filter 0.49): the model itself leaves
    # less noise for the temporal filter to take. Bound 0.85 (a filter that does nothing: 1).
    assert adaptive.noise_tnr < 0.85 * adaptive.noise_frame


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
    if layout == "i420":  # video hands over the spans the plan made of the view: the same output
        made, given = TemporalDenoiser(), TemporalDenoiser()
        rng = np.random.default_rng(0)
        for view in (small_view, small_view, big_view, big_view):
            noise = rng.integers(-3, 4, clean.shape)  # a noisy still scene: the filter blends
            frame, out = (to(np.clip(x + noise, 0, 255).astype(np.uint8)) for x in (clean, lifted(view)))
            filtered = made(frame, out, view)
            np.testing.assert_array_equal(given(frame, out, view, fov_spans=view_spans(~view)), filtered)
        assert (filtered != out).mean() > 0.05  # the filter blended (0.08 of the samples)


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


def test_config_rejects_each_out_of_range_value():
    # Each bound of TemporalConfig at and just beyond its edge: the edge itself is allowed where
    # the docstring's interval is closed (alpha 0, denoise 0) and refused where it is open.
    for ok in (dict(alpha=0.0), dict(alpha=0.999), dict(cut=1e-6), dict(denoise=0.0), dict(denoise=0.999),
               dict(still=1e-6, moving=2e-6), dict(network_every=1), dict(hold=0.0)):
        TemporalConfig(**ok)
    for bad, name in ((dict(alpha=1.0), "alpha"), (dict(alpha=-1e-6), "alpha"), (dict(cut=0.0), "cut"),
                      (dict(cut=-0.1), "cut"), (dict(denoise=-1e-6), "denoise"),
                      (dict(denoise=1.0), "denoise"), (dict(still=0.0), "still"),
                      (dict(still=4.0, moving=4.0), "still"), (dict(still=5.0, moving=4.0), "still"),
                      (dict(network_every=0), "network_every"), (dict(hold=-1e-6), "hold")):
        with pytest.raises(ValueError, match=name) as err:
            TemporalConfig(**bad)
        assert str(next(iter(bad.values()))) in str(err.value)  # the message names the value given


def _lowres(moved_rows: int, channels=(0, 1, 2)) -> torch.Tensor:
    # An 8 x 8 low-res frame at 0.1 with `moved_rows` rows at 0.9 in the given channels: each
    # moved row moves 8 / 64 of those channels' histograms to another bin.
    x = torch.full((1, 3, 8, 8), 0.1)
    for c in channels:
        x[0, c, :moved_rows] = 0.9
    return x


def test_histogram_distance_is_half_the_l1_averaged_over_channels():
    base = colour_histogram(_lowres(0))
    # 2 rows of 8 in all channels: 1/4 of every histogram moved, total variation 0.25 exactly.
    assert float(histogram_distance(base, colour_histogram(_lowres(2)))) == 0.25
    # The same in one channel of three: the channel mean, 0.25 / 3.
    one = histogram_distance(base, colour_histogram(_lowres(2, (0,))))
    assert float(one) == pytest.approx(0.25 / 3, abs=1e-7)
    assert float(histogram_distance(base, colour_histogram(_lowres(8)))) == 1.0  # disjoint
    # One distance per batch item.
    both = torch.cat([colour_histogram(_lowres(0)), colour_histogram(_lowres(8))])
    torch.testing.assert_close(histogram_distance(both, torch.cat([base, base])), torch.tensor([0.0, 1.0]))


def test_grid_smoother_hand_computed():
    # Grids of constant values, frames whose histogram change is known exactly (above): the
    # output must be the documented lerp with weight alpha * (1 - change / cut), and a change
    # of at least `cut` (or a new shape) must restart from the frame's own grid.
    cfg = TemporalConfig(alpha=0.8, cut=0.5)
    smoother = GridSmoother(cfg)
    assert smoother.weight(0.0) == pytest.approx(0.8) and smoother.weight(0.25) == pytest.approx(0.4)
    assert smoother.weight(0.5) == 0.0 and smoother.weight(0.9) == 0.0  # never negative
    grid = lambda v: torch.full((1, 12, 8, 4, 4), float(v))  # noqa: E731
    first = grid(10)
    out = smoother(first, _lowres(0))
    assert torch.equal(out, first) and out is not first  # a copy: the caller may reuse its grid
    assert smoother.cuts == 1 and smoother.last_change == 1.0
    first.fill_(-1)  # the smoother's memory must not follow the caller's buffer
    out = smoother(grid(20), _lowres(0))  # no change: weight 0.8 on the past
    torch.testing.assert_close(out, grid(0.8 * 10 + 0.2 * 20))  # 12
    assert smoother.cuts == 1 and smoother.last_change == 0.0
    out = smoother(grid(0), _lowres(2))  # change 0.25 = cut / 2: weight 0.4
    torch.testing.assert_close(out, grid(0.4 * 12))
    assert smoother.last_change == 0.25
    out = smoother(grid(0), _lowres(2))  # the change is measured from the previous frame: 0
    torch.testing.assert_close(out, grid(0.8 * 0.4 * 12))
    smoother = GridSmoother(TemporalConfig(alpha=0.8, cut=0.25))
    smoother(grid(10), _lowres(0))
    assert torch.equal(smoother(grid(30), _lowres(2)), grid(30))  # change == cut: a cut
    assert smoother.cuts == 2
    small = torch.full((1, 12, 8, 2, 2), 5.0)
    assert torch.equal(smoother(small, _lowres(2)), small)
    assert smoother.cuts == 3  # another grid shape: a new stream
    smoother.reset()
    assert smoother.cuts == 0 and smoother.last_change == 0.0
    assert torch.equal(smoother(grid(7), _lowres(2)), grid(7)) and smoother.cuts == 1
    assert GridSmoother().cfg == TemporalConfig()  # the default tuning


def test_grid_smoother_holds_its_grid_on_alternate_still_frames():
    # network_every=2: after each frame the network ran on, one still frame (a histogram change
    # below `hold`) gets the smoothed grid back without the network; a frame that changed more,
    # or the frame after a held one, does not.
    smoother = GridSmoother(TemporalConfig(alpha=0.8, cut=0.5, network_every=2, hold=0.1))
    grid = lambda v: torch.full((1, 12, 8, 4, 4), float(v))  # noqa: E731
    assert smoother.held(_lowres(0)) is None  # nothing to hold yet
    smoother(grid(10), _lowres(0))
    held = smoother.held(_lowres(0))
    assert held is not None and torch.equal(held, grid(10)) and smoother.last_change == 0.0
    assert smoother.held(_lowres(0)) is None  # held once: the network runs on the next frame
    torch.testing.assert_close(smoother(grid(20), _lowres(0)), grid(12))
    assert smoother.held(_lowres(1)) is None  # change 0.125 >= hold: not still
    assert smoother.last_change == 0.0  # ...and nothing was recorded for the refused frame
    out = smoother(grid(20), _lowres(1))  # weight 0.8 * (1 - 0.125 / 0.5) = 0.6 on the past
    assert smoother.last_change == 0.125  # the change was measured against the last frame
    torch.testing.assert_close(out, grid(0.6 * 12 + 0.4 * 20))
    assert torch.equal(smoother.held(_lowres(1)), out)  # still again: held
    assert smoother.cuts == 1
    # A hold at or above the cut never holds a cut.
    smoother = GridSmoother(TemporalConfig(cut=0.25, hold=1.0, network_every=4))
    smoother(grid(10), _lowres(0))
    assert smoother.held(_lowres(2)) is None
    smoother = GridSmoother(TemporalConfig(network_every=1))  # the network on every frame
    smoother(grid(10), _lowres(0))
    assert smoother.held(_lowres(0)) is None


def test_motion_weights_hand_computed():
    # The weight of the present per quarter-size pixel: with the default still = 2 and moving = 4
    # noise levels, a change d against the noise level n is still by clip((4 - d / n) / 2, 0, 1),
    # widened by a 3 x 3 erosion (motion reaches one pixel further), and the weight is
    # 128 * (1 - 0.75 * still), rounded: 32 (still), 56 (d = 2.5 n), 80 (3 n), 128 (>= 4 n).
    base = np.full((12, 12), 100, np.uint8)
    d = np.full((12, 12), 2, np.uint8)  # the noise: median change 2
    d[2, 2], d[9, 2], d[11, 11] = 8, 12, 8  # motion (4 n and beyond), one on the frame's corner
    d[2, 9], d[6, 6] = 6, 5  # half still, a quarter still
    d[9, 9] = 0  # no change at all: still as much as noise (the clip at 1)
    denoiser = TemporalDenoiser()
    denoiser._small = base
    got = denoiser._present_weight(base + d, None)
    want = np.full((12, 12), 32, np.uint8)
    want[1:4, 1:4] = want[8:11, 1:4] = 128
    want[10:12, 10:12] = 128  # the erosion stops at the frame's edge
    want[1:4, 8:11] = 80
    want[5:8, 5:8] = 56
    np.testing.assert_array_equal(got, want)
    assert denoiser.noise == 2.0  # a new stream takes the first level as it is

    # The level is followed: it may rise by a fifth a frame, it falls at once, floor 0.25.
    assert np.all(denoiser._present_weight(base + 2 * d, None)[5:8, 5:8] == 128)  # d = 10 vs n = 2.4
    assert denoiser.noise == pytest.approx(2.4)
    denoiser._present_weight(base + d // 2, None)  # median change 1
    assert denoiser.noise == 1.0
    assert np.all(denoiser._present_weight(base, None) == 32)  # no change: all still
    assert denoiser.noise == 0.25

    # With a view, the level is the median inside it: outside, everything moved (50 levels).
    view = np.zeros((12, 12), bool)
    view[3:9, 3:9] = True
    moved = np.where(view, base + 2, base + 50).astype(np.uint8)
    denoiser = TemporalDenoiser()
    denoiser._small = base
    got = denoiser._present_weight(moved, view)
    assert denoiser.noise == 2.0
    assert np.all(got[4:8, 4:8] == 32) and np.all(got[~view] == 128)
    denoiser = TemporalDenoiser()
    denoiser._small = base
    denoiser._present_weight(moved, np.zeros((12, 12), bool))  # an empty view: the whole frame
    assert denoiser.noise == 50.0

    # Another tuning: denoise 0.5 gives 128 * (1 - 0.5) = 64 on still pixels.
    denoiser = TemporalDenoiser(TemporalConfig(denoise=0.5))
    denoiser._small = base
    assert np.all(denoiser._present_weight(base + 2, None) == 64)


@pytest.mark.parametrize("layout", ["rgb", "i420"])
def test_static_blend_hand_computed(layout):
    # A still input (no change: the floor noise level, every pixel still, weight 32 / 128): each
    # output sample becomes prev + 32 / 128 * (out - prev), rounded half away from zero:
    # 100 -> 140 gives 110 (10.0 exactly), 100 -> 60 gives 90, 100 -> 102 gives 101 (0.5 rounds
    # up), 100 -> 98 gives 99 (and down), 100 -> 101 stays 100 (0.25). The same per sample for
    # RGB values and for the I420 planes (luma and chroma samples alike).
    h, w = 32, 48
    shape = (h, w, 3) if layout == "rgb" else (h * 3 // 2, w)
    frame = np.full(shape, 90, np.uint8)
    prev = np.full(shape, 100, np.uint8)
    out, want = prev.copy(), prev.copy()
    for rows, value, filtered in ((slice(0, 8), 140, 110), (slice(8, 16), 60, 90), (slice(16, 24), 102, 101),
                                  (slice(24, None), 98, 99)):
        out[rows], want[rows] = value, filtered
    out[24:, :8], want[24:, :8] = 101, 100
    denoiser = TemporalDenoiser()
    assert denoiser(frame, prev) is prev  # the first frame: no past
    got = denoiser(frame, out)
    np.testing.assert_array_equal(got, want)
    # The filtered frame is the next frame's past: 110 -> 140 again moves 7.5 -> 8 further.
    again = denoiser(frame, out)
    assert np.all(again[:8] == 118) and np.all(again[8:16] == 82)  # 90 -> 60: -7.5 -> -8


def test_histogram_defaults_and_dtype_and_median_edges():
    x = _lowres(2).double()
    hist = colour_histogram(x)
    assert hist.shape == (1, 3, 32) and hist.dtype == torch.float64  # 32 bins, the frame's dtype
    assert hist[0, 0, 3] == 0.75 and hist[0, 0, 28] == 0.25  # 0.1 * 32 = 3.2, 0.9 * 32 = 28.8
    # GridSmoother bins by its config: 0.1 and 0.2 share a bin of 4 (not of 32), so a frame
    # moving between them is no change at all and the past keeps its full weight.
    smoother = GridSmoother(TemporalConfig(alpha=0.5, cut=0.5, bins=4))
    smoother(torch.zeros(1, 12, 8, 4, 4), torch.full((1, 3, 8, 8), 0.1))
    out = smoother(torch.ones(1, 12, 8, 4, 4), torch.full((1, 3, 8, 8), 0.2))
    assert smoother.last_change == 0.0 and torch.allclose(out, torch.full_like(out, 0.5))
    # The median counts every level, 255 included, and is NaN for no level at all.
    assert _median(np.array([255, 255, 0], np.uint8)) == 255.0
    assert _median(np.array([255, 255, 0, 0], np.uint8)) == 127.5
    assert np.isnan(_median(np.array([], np.uint8)))


def test_border_weights_at_odd_sizes():
    # Luma: ONE outside the view. Chroma: one weight per whole 2 x 2 block (the odd last row
    # and column have no chroma sample), ONE only where the whole block is outside.
    view = np.zeros((5, 7), bool)
    view[1:4, 2:5] = True
    full, chroma = _border_weights(view)
    np.testing.assert_array_equal(full, np.where(view, 0, 128).astype(np.uint8))
    assert chroma.shape == (2, 3) and chroma.dtype == np.uint8
    np.testing.assert_array_equal(chroma, [[128, 0, 0], [128, 0, 0]])
    # One pixel of view in any of a block's four places keeps the block's chroma.
    view = np.zeros((2, 10), bool)
    view[0, 2] = view[0, 5] = view[1, 6] = view[1, 9] = True
    np.testing.assert_array_equal(_border_weights(view)[1], [[128, 0, 0, 0, 0]])


def test_denoiser_motion_map_view_and_new_layout():
    rng = np.random.default_rng(0)
    h, w = 32, 48
    fov = np.zeros((h, w), bool)
    fov[5:27, 9:39] = True  # edges off the 4-pixel grid
    denoiser = TemporalDenoiser()
    # The view at the motion map's size is the nearest quarter-size pixel of the view (4 x 4
    # blocks here: their top-left pixel).
    view, border = denoiser._masks(fov, (w // 4, h // 4))[:2]
    np.testing.assert_array_equal(view, fov[::4, ::4])
    np.testing.assert_array_equal(border, np.where(fov, 0, 128))
    assert denoiser._masks(fov, (w // 4, h // 4))[0] is view  # derived once per mask
    # The motion map is the 4 x 4 average of the luma (the noise of a difference cut by 4).
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    denoiser = TemporalDenoiser()
    denoiser(frame, frame, fov)
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(float)
    np.testing.assert_allclose(denoiser._small, grey.reshape(h // 4, 4, w // 4, 4).mean((1, 3)), atol=0.5)
    # The noise level is measured inside the view: outside it (the border, an overlay) the
    # input changes by 60 levels a frame, inside by 2; the border is most of the frame.
    fov = np.zeros((h, w), bool)
    fov[8:24, 16:32] = True
    still = np.full((h, w, 3), 100, np.uint8)
    moved = np.repeat(np.where(fov[..., None], 102, 160), 3, axis=2).astype(np.uint8)
    denoiser = TemporalDenoiser()
    denoiser(still, still, fov)
    denoiser(moved, moved, fov)
    assert denoiser.noise == 2.0
    # The same frame size in another layout (RGB, then I420) starts a new stream: no past.
    denoiser = TemporalDenoiser()
    denoiser(still, still)
    planes = np.full((h * 3 // 2, w), 100, np.uint8)
    assert denoiser(planes, planes) is planes


def test_denoiser_takes_the_small_luma_video_made(data_root):
    # Video hands the filter the planar path's small luma (small_planes): the filtered stream is
    # the one the filter makes from the planes itself; a copy of another size is not used.
    enhancer = Enhancer(weights="default")
    frames = [rgb_to_i420(f) for f in static_clip(data_root, 4, 160)[0]]
    made, given, wrong = TemporalDenoiser(), TemporalDenoiser(), TemporalDenoiser()
    for planes in frames:
        out = enhancer.enhance_planes(planes)
        luma = small_planes(enhancer.model, planes)[0]
        h, w = i420_planes(planes)[0].shape
        assert luma.shape == (-(-h // 4), w // 4)  # the motion map's size
        want = made(planes, out)
        np.testing.assert_array_equal(given(planes, out, shrunk=luma), want)
        np.testing.assert_array_equal(wrong(planes, out, shrunk=luma[1:]), want)
    assert (want != out).any()  # the filter did something on the last frame


def test_blend_with_row_spans_is_the_blend_with_border_weights():
    # Spans (the view's columns per row, and whether a border pixel lies inside) give the
    # filter's output byte for byte as the border weights do: the rows are blended over whole
    # runs of ALIGN columns from before the view's start, the border outside written after.
    rng = np.random.default_rng(3)
    h, w = 24, 3 * ALIGN + 10
    image, past = (rng.integers(0, 256, (h, w), dtype=np.uint8) for _ in range(2))
    view = np.zeros((h, w), bool)
    for y in range(h):
        view[y, ALIGN + 5 + y % 3:w - 4 - y % 5] = True  # edges off the run grid, row by row
    view[6, 60:63] = view[7, 61] = False  # border pixels inside the view
    view[20:22] = False  # whole rows of border
    border = np.where(view, 0, 128).astype(np.uint8)
    spans = np.zeros((h, 3), np.int64)
    for y in range(h):
        cols = np.flatnonzero(view[y])
        a, b = (cols[0], cols[-1] + 1) if cols.size else (w, w)
        spans[y] = a, b, not view[y, a:b].all()
    weight = rng.integers(0, 129, (6, w // 4), dtype=np.uint8)
    taps = axis_taps(h, 6)
    want, got = np.empty_like(image), np.empty_like(image)
    _blend(image, past, _across(weight, w), *taps, border, _NO_SPANS, want)
    _blend(image, past, _across(weight, w), *taps, border, spans, got)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got[~view], image[~view])
    assert (got[view] != image[view]).mean() > 0.5  # the past counted inside


def test_border_spans_agree_with_the_border_weights():
    # Per luma row and per chroma row: ONE outside the span, and inside it the border weights
    # are all 0 unless the row is flagged (a round view with a notch, a hole, an odd edge).
    h, w = 40, 90
    yy, xx = np.mgrid[:h, :w]
    view = (yy - 20) ** 2 + ((xx - 45) / 2) ** 2 < 17**2
    view[18:23, 40:44] = False  # a hole
    view[2:12, 44:47] = False  # a notch from the top
    view[30, 20:70] = True  # a one-row spur
    border, border_c, spans, spans_c = _borders(view)
    assert spans.shape == (h, 3) and spans_c.shape == (h // 2, 3)
    for weights, rows in ((border, spans), (border_c, spans_c)):
        cols = np.arange(weights.shape[1])
        for y, (a, b, holes) in enumerate(rows):
            inside = (cols >= a) & (cols < b)
            assert (weights[y, ~inside] == 128).all()
            assert holes or (weights[y, inside] == 0).all()
    assert spans[:, 2].any() and not spans[:, 2].all()
    assert _borders(view[1:])[2].shape == (0, 3)  # an odd height: the weights only


@pytest.mark.parametrize("layout", ["rgb", "i420"])
def test_blend_weights_are_the_motion_map_upsampled_bilinearly(layout):
    # With the past at 0 and the present at ONE (128) levels, each output sample is its weight
    # of the present: the quarter-size map interpolated bilinearly (half-pixel centres, edges
    # clamped, as OpenCV's resize) and rounded, per luma and per chroma sample alike, the same
    # for the three values of an RGB pixel, and ONE wherever the border says so.
    rng = np.random.default_rng(1)
    weight = rng.integers(32, 129, (9, 13), dtype=np.uint8)
    planes = [(36, 52)] if layout == "rgb" else [(36, 52), (18, 26)]
    per_pixel = 3 if layout == "rgb" else 1
    for h, w in planes:
        shape = (h, w * per_pixel)
        got = np.empty(shape, np.uint8)
        border = np.zeros(shape, np.uint8)
        border[:, -5:] = 128  # e.g. the view's right edge
        for edge in (_NONE, border):
            _blend(np.full(shape, 128, np.uint8), np.zeros(shape, np.uint8), _across(weight, w, per_pixel),
                   *axis_taps(h, weight.shape[0]), edge, _NO_SPANS, got)
            want = cv2.resize(weight.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
            want = np.repeat(np.floor(want + 0.5), per_pixel, axis=1)
            if edge is border:
                want = np.maximum(want, border)
            # float32 rounding may move a sample at an exact half by one step, nothing more
            assert np.abs(got.astype(int) - want).max() <= 1 and (got == want).mean() > 0.99
            assert got.min() >= 32 and (got[:, -5:] == 128).all() == (edge is border)
