"""Field of view, step by step: each helper of endolight.fov on hand-made levels and frames.

The real-frame tests of the detection as a whole are in test_fidelity.py; these pin what each
step computes (thresholds at their boundary, the shapes and offsets of the morphology), on
arrays small enough that every test runs in milliseconds.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from endolight.fov import (
    FovConfig,
    FovTracker,
    _brought_to_exposure,
    _dark_border,
    _edge_connected,
    _edge_pixels,
    _fit_ellipse,
    _flat_overlays,
    _hull,
    _large_components,
    _level,
    _sharp_boundary,
    _tissue_coloured,
    detect_fov,
    max_channel,
)

# The two rule tests built at the edge of a level threshold (a 2-level fade under the sharp
# gradient of 3) take their levels as given: their tissue peaks at 100, so detection would first
# lift them 1.5x (test_a_dim_frame_is_brought_to_the_exposure_the_thresholds_assume).
AS_GIVEN = FovConfig(max_gain=1.0)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_max_channel_is_the_per_pixel_maximum():
    image = np.array([[[9, 2, 3], [1, 8, 3]], [[1, 2, 7], [5, 5, 4]]], np.uint8)
    got = max_channel(image)
    assert got.dtype == np.uint8
    assert got.tolist() == [[9, 8], [7, 5]]


def test_level_is_the_area_mean_then_a_5x5_median():
    # Shrunk 4x: one pixel of 160 in each 4 x 4 block (in a different channel per block) is an
    # area mean of exactly 10 everywhere; a bilinear shrink (which samples the block's middle)
    # would give 0. The median of a constant map is the constant.
    frame = np.zeros((32, 48, 3), np.uint8)
    for i, (y, x) in enumerate((y, x) for y in range(0, 32, 4) for x in range(0, 48, 4)):
        frame[y, x, i % 3] = 160
    level = _level(frame, (12, 8))
    assert level.dtype == np.float32 and level.shape == (8, 12)
    assert np.array_equal(level, np.full((8, 12), 10, np.float32))
    # At its own size nothing is shrunk, and a short bright streak (noise) is removed by the
    # median.
    flat = np.full((20, 30, 3), 50, np.uint8)
    flat[10, 11:14] = 255
    assert np.array_equal(_level(flat, (30, 20)), np.full((20, 30), 50, np.float32))


def test_edge_pixels_are_a_two_pixel_frame():
    a = np.arange(5 * 6).reshape(5, 6)
    yy, xx = np.mgrid[0:5, 0:6]
    near_row = (yy < 2) | (yy >= 3)
    near_col = (xx < 2) | (xx >= 4)
    # Rows 0-1 and 3-4 whole, columns 0-1 and 4-5 whole: the corners come twice.
    expected = np.concatenate([a[near_row], a[near_col]])
    assert np.array_equal(np.sort(_edge_pixels(a)), np.sort(expected))
    assert np.array_equal(np.sort(_edge_pixels(a, 1)),
                          np.sort(np.concatenate([a[0], a[4], a[:, 0], a[:, 5]])))


def test_edge_connected_keeps_the_parts_touching_the_frame_edge():
    mask = np.zeros((12, 12), bool)
    mask[0:3, 0:3] = True  # touches the edge (label 1: first in raster order)
    mask[3, 3] = True  # joins it diagonally (8-way)
    mask[1:4, 8:11] = True  # one pixel in from the edge: not connected to it
    mask[6:8, 5:7] = True  # in the middle
    mask[9:12, 10] = True  # touches the bottom edge
    got = _edge_connected(mask)
    expected = np.zeros_like(mask)
    expected[0:3, 0:3] = expected[3, 3] = True
    expected[9:12, 10] = True
    assert got.dtype == bool and np.array_equal(got, expected)
    # A single part touching the edge (two labels: background and it) is kept.
    one = np.zeros((12, 12), bool)
    one[5:9, 0:4] = True
    assert np.array_equal(_edge_connected(one), one)
    empty = _edge_connected(np.zeros((12, 12), bool))
    assert empty.shape == (12, 12) and empty.dtype == bool and not empty.any()


def _ring_level(ring_values: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """A 40 x 40 level whose 2-pixel edge frame (320 values with the corners twice; 304
    pixels) is filled from ``ring_values`` in raster order and whose inside is ``inside``."""
    level = np.zeros((40, 40), np.float32)
    level[2:-2, 2:-2] = inside
    edge = np.ones((40, 40), bool)
    edge[2:-2, 2:-2] = False
    level[edge] = ring_values
    return level


def test_dark_border_threshold_on_a_clean_black_border():
    # Border at 0: level 0, noise 0, threshold max(black_level 6, 0 + 3) = 6. A ramp from the
    # border inwards (1 level per pixel) is border up to 6 inclusive.
    inside = np.zeros((36, 36), np.float32)
    inside[:, :] = 200
    inside[10:26, 0:12] = np.arange(12, dtype=np.float32)  # a ramp touching the left border
    level = _ring_level(np.zeros(304, np.float32), inside)
    dark, sigma = _dark_border(level, FovConfig())
    assert sigma == 0.0
    assert np.array_equal(dark, _edge_connected(level <= 6))
    assert dark[12, 2 + 6] and not dark[12, 2 + 7]
    # A border at 20: threshold 20 + max(3, 5 * 0) = 23 (the black level is below it).
    level = _ring_level(np.full(304, 20, np.float32), inside + 20 * (inside < 12))
    dark, sigma = _dark_border(level, FovConfig())
    assert sigma == 0.0
    assert dark[12, 2 + 3] and not dark[12, 2 + 4]  # ramp 20 + 3 = 23 in, 24 out


def test_dark_border_noise_is_the_mad_of_the_lower_half():
    # Ring of 304 pixels: 150 at 10, 50 at 8, 50 at 12, 30 at 18, 24 at 17. 5th percentile: 8;
    # near pixels (<= 8 + 8 = 16): the 8s, 10s and 12s; their median 10. Deviations of those at
    # or below it: 50 x 2 and 150 x 0, median 0 -> noise 0, threshold 10 + 3 = 13.
    ring = np.repeat(np.array([10, 8, 12, 18, 17], np.float32), [150, 50, 50, 30, 24])
    inside = np.full((36, 36), 200, np.float32)
    inside[10:26, 0:30] = np.arange(30, dtype=np.float32)  # ramp 0..29 from the left border
    dark, sigma = _dark_border(_ring_level(ring, inside), FovConfig())
    assert sigma == 0.0
    assert dark[12, 2 + 13] and not dark[12, 2 + 14]
    # 100 at 8, 40 at 10, 30 at 12, 60 at 16, 74 at 17. 5th percentile 8; near (<= 16, so the
    # 16s are in and the 17s out): 230 pixels, median 10 (without the 16s it would be 8, with
    # the 17s 12). At or below it: 100 at 8 (deviation 2), 40 at 10 (0): median deviation 2 ->
    # noise 2 x 1.4826 = 2.9652, threshold 10 + 5 x 2.9652 = 24.826.
    ring = np.repeat(np.array([8, 10, 12, 16, 17], np.float32), [100, 40, 30, 60, 74])
    dark, sigma = _dark_border(_ring_level(ring, inside), FovConfig())
    assert sigma == pytest.approx(2 * 1.4826)
    assert dark[12, 2 + 24] and not dark[12, 2 + 25]


def test_dark_border_none_above_the_maximum_border_level():
    inside = np.full((36, 36), 200, np.float32)
    # Darkest edge pixels at 48: still a border (threshold 51).
    dark, sigma = _dark_border(_ring_level(np.full(304, 48, np.float32), inside), FovConfig())
    assert sigma == 0.0 and dark[0].all() and not dark[20, 20]
    # At 49: no border, and no noise measured.
    dark, sigma = _dark_border(_ring_level(np.full(304, 49, np.float32), inside), FovConfig())
    assert dark.shape == (40, 40) and dark.dtype == bool and not dark.any() and sigma == 0.0


def test_large_components_keeps_parts_of_at_least_the_minimum_area():
    # 20 x 20 = 400 pixels, minimum 0.1: 40 pixels. Parts in raster order: 39 pixels (dropped),
    # two 4 x 5 blocks touching at a corner (one 8-way part of 40: kept), 60 pixels (kept).
    mask = np.zeros((20, 20), bool)
    mask[0:3, 0:13] = True
    mask[6:10, 0:5] = True
    mask[10:14, 5:10] = True
    mask[15:20, 8:20] = True
    got = _large_components(mask, 0.1)
    expected = mask.copy()
    expected[0:3] = False
    assert got.dtype == bool and np.array_equal(got, expected)
    # The 39-pixel part is kept with a 39-pixel minimum.
    assert np.array_equal(_large_components(mask, 39 / 400), mask)
    assert not _large_components(mask, 0.5).any()


def test_hull_fills_the_convex_polygon_of_the_mask():
    mask = np.zeros((12, 12), bool)
    mask[2, 2] = mask[2, 8] = mask[8, 2] = True
    yy, xx = np.mgrid[0:12, 0:12]
    triangle = (xx >= 2) & (yy >= 2) & (xx + yy <= 10)
    got = _hull(mask)
    assert got.dtype == bool and np.array_equal(got, triangle)


def test_hull_of_an_empty_mask_and_of_one_row():
    assert not _hull(np.zeros((5, 6), bool)).any()
    row = np.zeros((5, 6), bool)
    row[2, 1] = row[2, 4] = True
    want = np.zeros((5, 6), bool)
    want[2, 1:5] = True
    assert np.array_equal(_hull(row), want)


def _outline(top: int, bottom: int, left: int, right: int, shape=(40, 40)) -> np.ndarray:
    out = np.zeros(shape, bool)
    out[top, left:right + 1] = out[bottom, left:right + 1] = True
    out[top:bottom + 1, left] = out[top:bottom + 1, right] = True
    return out


def test_sharp_boundary_outline_and_its_pixels_near_a_step():
    # Content: a square from row/column 2 to 37 of a 40 x 40 level, so its one-pixel outline
    # lies exactly on the 2-pixel margin kept from the frame edge. A vertical step of 80 levels
    # between columns 19 and 20: the Sobel gradient / 8 is 40 on those two columns (80 over the
    # 2-pixel central difference), 0 elsewhere; within radius 3 of it lie columns 16-23.
    content = np.zeros((40, 40), bool)
    content[2:38, 2:38] = True
    outline = _outline(2, 37, 2, 37)
    near = np.zeros((40, 40), bool)
    near[:, 16:24] = True
    level = np.zeros((40, 40), np.float32)
    level[:, 20:] = 80
    boundary, sharp = _sharp_boundary(level, content, 3, 40.0)
    assert np.array_equal(boundary, outline)
    assert np.array_equal(sharp, outline & near)  # the top and bottom sides, columns 16-23
    assert not _sharp_boundary(level, content, 3, 40.5)[1].any()  # the gradient is 40, not more
    # The same across a horizontal step (rows 16-23 of the left and right sides), radius 2.
    _, sharp = _sharp_boundary(level.T.copy(), content, 2, 40.0)
    assert np.array_equal(sharp, outline & near.T & (np.arange(40)[:, None] >= 17)
                          & (np.arange(40)[:, None] <= 22))
    # A ramp of 3 levels per pixel has a gradient of 3 everywhere (first derivative, not the
    # second): with a minimum of 3 the whole outline is sharp, with 3.01 none of it.
    ramp = np.tile(np.arange(40, dtype=np.float32) * 3, (40, 1))
    assert np.array_equal(_sharp_boundary(ramp, content, 3, 3.0)[1], outline)
    assert not _sharp_boundary(ramp, content, 3, 3.01)[1].any()
    assert np.array_equal(_sharp_boundary(ramp.T.copy(), content, 3, 3.0)[1], outline)


def test_sharp_boundary_ignores_the_frame_margin():
    # Content up to the frame edge: its outline on the edge rows and columns is not a view edge.
    content = np.zeros((40, 40), bool)
    content[0:30, 0:30] = True
    level = np.zeros((40, 40), np.float32)
    boundary, sharp = _sharp_boundary(level, content, 3, 3.0)
    expected = np.zeros((40, 40), bool)
    expected[29, 2:30] = expected[2:30, 29] = True
    assert np.array_equal(boundary, expected) and not sharp.any()


def _tissue(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Reddish textured tissue: no two neighbouring pixels within the flat tolerance."""
    rng = np.random.default_rng(seed)
    return np.clip(np.array([150, 80, 70]) + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8)


def test_flat_overlays_are_edge_connected_flat_rectangles():
    # 32 x 32 tissue with a status bar: the top two rows in one flat colour. With a minimum area
    # of 1/16 of the frame (64 pixels, the bar's area exactly) and a fill of 1.0 (the bar fills
    # its box exactly), the bar is found, the 3 x 3 median keeping its two rows intact.
    small = _tissue(32, 32)
    small[0:2] = (30, 60, 120)
    cfg = FovConfig(flat_min_area=1 / 16, flat_fill=1.0)
    no_dark = np.zeros((32, 32), bool)
    expected = np.zeros((32, 32), bool)
    expected[0:2] = True
    got = _flat_overlays(small, no_dark, cfg)
    assert got.dtype == bool and np.array_equal(got, expected)
    # One pixel less of bar (a 2 x 31 bar plus one tissue column): below the minimum area.
    small[0:2, 31] = _tissue(2, 1, 1)[:, 0]
    assert not _flat_overlays(small, no_dark, cfg).any()


def test_flat_overlays_rules():
    # 64 x 64 tissue (minimum area 0.005 x 4096 = 20.5 pixels, fill 0.85), with:
    small = _tissue(64, 64)
    want = np.zeros((64, 64), bool)
    # one-pixel bars along each edge, away from the corners (only the seeds on that edge's
    # own row or column reach them; the median keeps all but each end pixel);
    small[0, 6:58] = (40, 90, 160)
    want[0, 7:57] = True
    small[63, 6:58] = (90, 40, 160)
    want[63, 7:57] = True
    small[6:58, 0] = (30, 200, 200)
    want[7:57, 0] = True
    small[6:58, 63] = (20, 140, 60)
    want[7:57, 63] = True
    got = _flat_overlays(small, np.zeros((64, 64), bool), FovConfig())
    assert np.array_equal(got, want)
    # a flat triangle touching the edge (it fills about half its box: tissue-shaped, not a bar);
    tri = _tissue(64, 64, 2)
    yy, xx = np.mgrid[0:64, 0:64]
    tri[(yy < 24) & (xx >= 20 + yy) & (xx < 44)] = (60, 60, 60)
    assert not _flat_overlays(tri, np.zeros((64, 64), bool), FovConfig()).any()
    # a flat box inside the frame, not touching the edge (a caption: not found here), a flat
    # region at 250 (saturated: never an overlay), a flat black border marked dark (its seeds
    # are skipped) and, last in scan order, a bar along the bottom edge.
    img = _tissue(64, 64, 3)
    dark = np.zeros((64, 64), bool)
    img[:, 0:6] = 0
    dark[:, 0:6] = True
    img[0:8, 10:40] = 250
    img[20:40, 20:40] = (70, 70, 200)
    img[60:64, 10:60] = (100, 100, 30)
    want = np.zeros((64, 64), bool)
    want[60:64, 10:60] = True
    want[60, 10] = want[60, 59] = False  # corners of the bar lost to the median
    assert np.array_equal(_flat_overlays(img, dark, FovConfig()), want)


def test_flat_overlays_whose_boxes_overlap():
    # 64 x 64 tissue (minimum area 20.5 pixels, fill 0.85). A bar that fills 93 % of its box
    # (rows 0-19, columns 52-63), its top-left notch taken by a second flat region, flooded
    # first (its seed comes first in scan order):
    bars = _tissue(64, 64, 4)
    bars[0:20, 52:64] = (40, 90, 160)
    bars[0:3, 0:56] = (90, 40, 160)  # a bar along the top edge, into the first one's box
    got = _flat_overlays(bars, np.zeros((64, 64), bool), FovConfig())
    assert got[1, 1:55].all() and got[5:19, 53:63].all()  # both found: neither clears the other
    patch = _tissue(64, 64, 5)
    patch[0:20, 52:64] = (40, 90, 160)
    patch[0:4, 52:56] = (200, 200, 40)  # a 16-pixel flat patch: too small to be an overlay
    got = _flat_overlays(patch, np.zeros((64, 64), bool), FovConfig())
    assert got[5:19, 53:63].all() and not got[0:3, 52:55].any()


def _disc_frame(h: int = 120, w: int = 160, r: float = 50, seed: int = 0, border_noise: int = 4,
                bar: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A textured reddish disc of radius ``r`` centred in an ``(h, w)`` frame on a black border
    with noise in [0, border_noise); with ``bar``, a flat grey status bar over the top 10 rows.
    Returns the frame and the disc (the view drawn)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    disc = (yy - h / 2 + 0.5) ** 2 + (xx - w / 2 + 0.5) ** 2 < r**2
    frame = rng.integers(0, border_noise, (h, w, 3)).astype(np.uint8)
    tissue = np.array([170, 80, 70]) + rng.normal(0, 10, (h, w, 1))
    frame[disc] = np.clip(tissue[disc], 0, 255).astype(np.uint8)
    if bar:
        frame[:10] = (110, 110, 110)
    return frame, disc


def test_tracker_work_size():
    tracker = FovTracker()
    assert tracker.work_size(1080, 1920) == (384, 216)  # longer side to 384
    assert tracker.work_size(100, 200) == (200, 100)  # never enlarged
    assert tracker.work_size(2000, 40) == (16, 384)  # 7.68 -> at least 16
    assert tracker.work_size(40, 2000) == (384, 16)
    assert FovTracker(FovConfig(work_side=100)).work_size(400, 300) == (75, 100)


def test_tracker_counts_resets_and_checks_sizes():
    frame, disc = _disc_frame()
    tracker = FovTracker()
    assert tracker.count == 0 and tracker.shape == (0, 0)
    with pytest.raises(ValueError, match="no frame added yet"):
        _ = tracker.mask
    for _ in range(33):
        tracker.add(frame)
    assert tracker.count == 32 and tracker.shape == (120, 160)  # 32 frames at most by default
    assert np.array_equal(tracker.mask, detect_fov(frame))
    with pytest.raises(ValueError, match=r"frame size changed from \(120, 160\) to \(60, 80\)"):
        tracker.add(frame[:60, :80])
    tracker.reset()
    assert tracker.count == 0 and tracker.shape == (0, 0)
    with pytest.raises(ValueError, match="no frame added yet"):
        _ = tracker.mask
    tracker.add(frame[:60, :80])  # any size after a reset
    assert tracker.count == 1 and tracker.shape == (60, 80)
    # A shrunk copy (video path) must have the work size; the error names both, as (w, h).
    big = cv2.resize(frame, (800, 600), interpolation=cv2.INTER_NEAREST)
    tracker = FovTracker()
    with pytest.raises(ValueError, match=r"must be \(384, 288\) \(w, h\), got \(160, 120\)"):
        tracker.add(frame, shape=(600, 800))
    small = cv2.resize(big, (384, 288), interpolation=cv2.INTER_AREA)
    tracker.add(small, shape=(600, 800))
    assert tracker.shape == (600, 800) and tracker.mask.shape == (600, 800)
    assert _iou(tracker.mask, detect_fov(big)) > 0.99  # deterministic: measured 1.0


def test_tracker_averages_its_frames():
    frame, disc = _disc_frame(bar=True)
    alone = detect_fov(frame)
    assert _iou(alone, disc) > 0.95 and not alone[:10].any()  # deterministic: measured 0.987
    # The same frame twice: the mean is the frame.
    tracker = FovTracker()
    tracker.add(frame)
    tracker.add(frame)
    assert np.array_equal(tracker.mask, alone)
    # Then a black frame: the mean is the frame at half its level, whose view and bar are still
    # found (the mean of the last frame alone, or a difference, would be black: no view).
    tracker = FovTracker()
    tracker.add(frame)
    tracker.add(np.zeros_like(frame))
    assert _iou(tracker.mask, disc) > 0.95 and not tracker.mask[:10].any()  # measured 0.987
    # A custom tuning is used (an implausibly large minimum view: the full frame).
    tracker = FovTracker(FovConfig(min_area=0.9))
    tracker.add(frame)
    assert tracker.mask.all()


def test_detect_fov_of_a_clip():
    frame, disc = _disc_frame()
    flat = np.full_like(frame, 120)  # no border at all
    clip = [frame] * 32 + [flat] * 32
    # Every frame of the clip counts (not only the first 32): the mean has no dark border.
    assert detect_fov(clip).all()
    assert _iou(detect_fov(clip[:32]), disc) > 0.95  # deterministic: measured 0.991
    # A clip as one (N, H, W, 3) array is the same as a list of its frames.
    stacked = np.stack([frame, frame // 2])
    assert np.array_equal(detect_fov(stacked), detect_fov([frame, frame // 2]))
    assert detect_fov(frame, FovConfig(min_area=0.9)).all()


@pytest.mark.parametrize(("colour", "tissue"), [
    ((40, 20, 20), True),  # red leads by 20 > max(3, 0.2 x 40 = 8)
    ((40, 31, 20), True),  # by 9 > 8
    ((40, 32, 20), False),  # by 8: not more than 0.2 x red
    ((40, 20, 32), False),  # blue counts as much as green
    ((10, 6, 6), True),  # a dark band: by 4 > max(3, 2)
    ((10, 7, 6), False),  # by 3: not more than the 3-level margin
    ((3, 3, 3), False),  # neutral black
])
def test_tissue_coloured_reads_the_band_just_outside_the_view(colour, tissue):
    # A 60 x 60 view in a 100 x 120 frame: the band is 2 to 5 (0.05 x 100) pixels out. The
    # first pixel ring is red (a bleed of the view, never counted), rings 2-6 have the colour
    # under test, the rest of the border is red and the view green: only the band decides.
    yy, xx = np.mgrid[0:100, 0:120]
    out = np.maximum(np.maximum(20 - yy, yy - 79), np.maximum(20 - xx, xx - 79))
    hull = out <= 0
    small = np.zeros((100, 120, 3), np.uint8)
    small[hull] = (0, 200, 0)
    small[out == 1] = (200, 0, 0)
    small[(out >= 2) & (out <= 6)] = colour
    small[out >= 7] = (200, 0, 0)
    assert bool(_tissue_coloured(small, hull, FovConfig())) == tissue
    # A view filling the frame leaves no band: not tissue-coloured.
    assert not _tissue_coloured(small, np.ones((100, 120), bool), FovConfig())


def test_fit_ellipse_residual_and_outlier_tolerances():
    # A 200 x 300 frame: tolerance 0.008 x 300 = 2.4 px on the median residual (in pixels),
    # outliers beyond 2 x 2.4 = 4.8 px dropped before a refit.
    shape, cfg = (200, 300), FovConfig()
    t = np.linspace(0, 2 * np.pi, 80, endpoint=False)
    for zigzag, accepted in ((2.0, True), (3.0, False)):
        # A circle of radius 60 whose points alternate zigzag px in and out: every residual is
        # about zigzag px (measured: median 2.0 and 3.0, at most 2.17 and 3.37).
        r = 60 + zigzag * np.where(np.arange(80) % 2, 1, -1)
        points = np.stack([150 + r * np.cos(t), 100 + r * np.sin(t)], 1)
        assert (_fit_ellipse(points, shape, cfg) is not None) == accepted, zigzag
    # An ellipse of 240 exact points and 4 points 6.5 px below its bottom (residuals measured
    # 5.84-5.89 px in the first fit: beyond 4.8, within 3 x 2.4): they are dropped, so the
    # result is the fit of the exact points alone.
    t = np.linspace(0, 2 * np.pi, 240, endpoint=False)
    exact = np.stack([150 + 90 * np.cos(t), 100 + 60 * np.sin(t)], 1)
    below = np.stack([np.full(4, 150.0) + 90 * np.cos(np.pi / 2 + np.linspace(-0.1, 0.1, 4)),
                      100 + 66.5 * np.sin(np.pi / 2 + np.linspace(-0.1, 0.1, 4))], 1)
    clean = _fit_ellipse(exact, shape, cfg)
    assert clean is not None and np.array_equal(_fit_ellipse(np.r_[exact, below], shape, cfg), clean)


def test_flat_overlays_allow_the_tolerance_but_not_a_ramp():
    # 64 x 64 tissue, minimum overlay area 20.5 pixels. A one-pixel bar along the top edge
    # (columns 17-46, 28 pixels after the median) whose halves differ by one level: one overlay
    # within the tolerance of 2 (each half alone, 14 pixels, would be too small).
    small = _tissue(64, 64, 4)
    small[0, 17:32] = (30, 100, 200)
    small[0, 32:47] = (30, 101, 200)
    want = np.zeros((64, 64), bool)
    want[0, 18:46] = True
    assert np.array_equal(_flat_overlays(small, np.zeros((64, 64), bool), FovConfig()), want)
    # A bar whose green rises one level per pixel is not one colour: from any seed only the
    # pixels within 2 levels of the seed's own colour (5 pixels) are filled, too few.
    ramp = _tissue(64, 64, 5)
    ramp[0, 7:57] = np.stack([np.full(50, 30), 100 + np.arange(50), np.full(50, 200)], 1)
    assert not _flat_overlays(ramp, np.zeros((64, 64), bool), FovConfig()).any()


def test_sharp_boundary_reach_is_a_disk():
    # A bright spot 4 rows above the content's top side: its gradient of 20 (Sobel / 8) lies on
    # its 4 side neighbours (14.1 on the diagonal ones, below the minimum of 15). A disk of
    # radius 3 from the lower neighbour reaches the row below only straight down (the disk's
    # bottom row is its centre pixel): one sharp pixel. A square would reach 7.
    level = np.zeros((40, 40), np.float32)
    level[20, 20] = 80
    content = np.zeros((40, 40), bool)
    content[24:38, 2:38] = True
    boundary, sharp = _sharp_boundary(level, content, 3, 15.0)
    assert np.array_equal(boundary, _outline(24, 37, 2, 37))
    assert list(zip(*np.nonzero(sharp), strict=True)) == [(24, 20)]


def test_flat_overlays_touching_the_edge_along_4_pixels_are_found():
    # Seeds every 4 pixels along each edge: a 4 x 10 box meeting an edge along 4 pixels holds
    # one seed wherever it is. Here each box holds exactly one (columns 41-44 of the top edge:
    # seed 44; 21-24 of the bottom: 24; rows 21-24 of the left edge: 24; 41-44 of the right:
    # 44). The 3 x 3 median takes each box's two inner corners (38 pixels left, >= 20.5).
    small = _tissue(64, 64, 6)
    boxes = [(slice(0, 10), slice(41, 45)), (slice(54, 64), slice(21, 25)),
             (slice(21, 25), slice(0, 10)), (slice(41, 45), slice(54, 64))]
    for i, box in enumerate(boxes):
        small[box] = (30 + 40 * i, 110, 200)
    got = _flat_overlays(small, np.zeros((64, 64), bool), FovConfig())
    for box in boxes:
        assert got[box].sum() == 38
    assert got.sum() == 4 * 38


def test_a_view_edge_hidden_by_dark_tissue_is_restored_by_the_ellipse():
    # A disc view (radius 50) on a flat dark grey border at 10 (threshold 10 + 3 = 13, black
    # level 6), whose tissue fades from 100 at column 60 by 2 levels a pixel down to 9: its
    # right part is as dark as the border, with no edge to see (2 levels a pixel is below the
    # sharp gradient of 3). The left arc's sharp edge is 76 % of the boundary (< 80 %: the hull
    # is not trusted); the ellipse through it restores the view (measured IoU with the disc
    # 0.987), where the hull alone is the lit part only (IoU about 0.78).
    h, w = 120, 160
    yy, xx = np.mgrid[0:h, 0:w]
    disc = (yy - 59.5) ** 2 + (xx - 79.5) ** 2 < 50**2
    rng = np.random.default_rng(0)
    frame = np.full((h, w, 3), 10, np.uint8)
    level = np.clip(100 - (xx - 60).clip(0) * 2, 9, 170).astype(float)
    tissue = np.stack([level, level * 0.5, level * 0.45], -1) + rng.normal(0, 1, (h, w, 1))
    frame[disc] = np.clip(tissue[disc], 0, 255).astype(np.uint8)
    mask = detect_fov(frame, AS_GIVEN)
    assert _iou(mask, disc) > 0.95
    lit = disc & (level > 13)
    assert _iou(lit, disc) < 0.85  # what the hull alone would cover: the check above bites


def test_a_dark_periphery_without_an_edge_is_tissue():
    # Tissue that darkens smoothly (at most about 2 levels a pixel) to a flat 3 at the frame's
    # edges: a dark "border" with no sharp step to the view is dark tissue, so the whole frame
    # is kept; with a flat status bar over the top 10 rows, everything but the bar.
    h, w = 120, 160
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(yy - 59.5, xx - 79.5) / np.hypot(59.5, 79.5)
    level = np.maximum(100 * np.clip(1 - r / 0.55, 0, 1), 3)
    noise = np.random.default_rng(0).normal(0, 0.5, (h, w, 1)) * (level > 3)[..., None]
    frame = np.clip(np.stack([level, level * 0.55, level * 0.5], -1) + noise, 0, 255).round().astype(np.uint8)
    assert detect_fov(frame, AS_GIVEN).all()
    frame[:10] = (110, 110, 110)
    mask = detect_fov(frame, AS_GIVEN)
    assert not mask[:10].any() and mask[10:].all()


def test_a_sharp_edged_view_in_a_tissue_coloured_band_is_not_trusted():
    # The textured disc (radius 50) of _disc_frame with its whole edge sharp (the trusted-hull
    # branch: at least 80 % of the boundary sharp), on a border of (10, 4, 4) plus noise in
    # [0, 2): red leads by about 6 > max(3, 0.2 x 10.5), so the band outside is dim tissue, the
    # hull is refused, and so are the ellipse and the plain hull after it: the whole frame is
    # kept (measured: all of it). The same disc on a neutral border of 3 is the view (measured
    # IoU 0.991). Pins the tissue-colour check of the trusted branch (`_detect_small` 101,
    # the check inverted, returned the disc for the red border).
    h, w = 120, 160
    yy, xx = np.mgrid[0:h, 0:w]
    disc = (yy - 59.5) ** 2 + (xx - 79.5) ** 2 < 50**2
    rng = np.random.default_rng(0)
    for border, tissue in [((10, 4, 4), True), ((3, 3, 3), False)]:
        frame = (np.array(border) + rng.integers(0, 2, (h, w, 3))).astype(np.uint8)
        lit = np.array([170, 80, 70]) + rng.normal(0, 10, (h, w, 1))
        frame[disc] = np.clip(lit[disc], 0, 255).astype(np.uint8)
        mask = detect_fov(frame)
        if tissue:
            assert mask.all()
        else:
            assert _iou(mask, disc) > 0.95


def test_flat_overlays_tolerance_is_both_ways_from_the_seed():
    # Two bars two pixels high whose blue steps by one level every 2 columns, so that after
    # the 3 x 3 median their edge rows keep the steps and the seeds (every 4th column) all sit
    # on one level: on the top bar the higher (201, the next two columns 200), on the bottom bar
    # the lower (200, then 201); their inner rows become 200. Both are one overlay: the
    # tolerance of 2 reaches down from the top bar's seeds and up from the bottom bar's (a
    # one-sided tolerance leaves pieces of 2 pixels, or a region that fills 3/4 of its box).
    small = _tissue(64, 64, 7)
    step = np.isin(np.arange(6, 58) % 4, (2, 3))
    small[0:2, 6:58] = np.stack([np.full(52, 30), np.full(52, 110), np.where(step, 200, 201)], 1)
    small[62:64, 6:58] = np.stack([np.full(52, 110), np.full(52, 30), np.where(step, 201, 200)], 1)
    want = np.zeros((64, 64), bool)
    want[0, 6:58] = want[63, 6:58] = True
    want[1, 7:57] = want[62, 7:57] = True  # the inner rows' end pixels go to the median
    assert np.array_equal(_flat_overlays(small, np.zeros((64, 64), bool), FovConfig()), want)


def test_a_dim_frame_is_brought_to_the_exposure_the_thresholds_assume():
    cfg = FovConfig()  # 90th percentile to 150, gain at most 4
    level = np.tile(np.arange(100, dtype=np.float32), (10, 1))  # 90th percentile 89.1
    small = np.full((10, 100, 3), 60, np.uint8)
    small[0, 0], small[0, 1] = 0, 200  # black stays black; 200 x 1.68 saturates, never wraps
    lifted, lifted_small = _brought_to_exposure(level, small, cfg)
    gain = 150 / np.percentile(level, 90)
    np.testing.assert_allclose(lifted, level * gain, rtol=1e-6)
    # The colour checks see the same frame, lifted: 60 -> 101, 0 -> 0, 200 -> 255.
    assert (lifted_small[1:] == round(60 * gain)).all()
    assert (lifted_small[0, 0] == 0).all() and (lifted_small[0, 1] == 255).all()
    same, same_small = _brought_to_exposure(level * 2, small, cfg)  # 178 > 150: left alone
    assert np.array_equal(same, level * 2) and same_small is small
    dark, _ = _brought_to_exposure(level / 10, small, cfg)  # would need 16.8x: capped at 4
    np.testing.assert_allclose(dark, level / 10 * 4, rtol=1e-6)
