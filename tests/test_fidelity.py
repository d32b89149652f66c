"""Endoscope-aware fidelity: field of view, highlights, strength and exposure, colour, metrics."""

from __future__ import annotations

import cv2
import kornia
import numpy as np
import pytest
import torch
from skimage.color import lab2rgb
from typer.testing import CliRunner

from endolight.border import fill_border
from endolight.checkpoint import default_weights_path, save_weights
from endolight.cli import app
from endolight.data import FrameRef, list_frames, load_frame
from endolight.degrade import DegradeConfig
from endolight.enhancer import Enhancer
from endolight.evaluate import TISSUE, evaluate, markdown_table, summarize
from endolight.fidelity import (
    FidelityConfig,
    cap_highlights,
    highlight_mask,
    luminance_gain,
    masked_lowres,
    preserve_hue,
    solve_exposure,
    tissue_weights,
)
from endolight.fov import FovConfig, FovTracker, _fit_ellipse, detect_fov, fov_box, fov_mask
from endolight.io.images import read_image, write_image
from endolight.io.tensors import to_tensor, to_uint8
from endolight.losses import LossWeights, total_loss
from endolight.methods.classical import auto_gamma
from endolight.metrics import (
    brightness_uniformity,
    delta_e2000,
    flat_dark_mask,
    hue_shift,
    mean_brightness,
    noise_sigma,
    psnr,
    ssim,
)
from endolight.model import DeepUPE, ModelConfig
from endolight.pairs import EVAL_SEED, Pair, make_pair, synthesized_pairs

# (folder, file) of one real frame per kind of scope, and the plausible area of its view
# (fraction of the frame; checked by eye on overlays, see docs/fidelity.md).
VIEWS = [
    ("gastroscopy-fujifilm/WLI_normal", "1.png", 0.78, 0.86),  # round view, overlay text, status bar
    ("sinus/clip-b", None, 0.40, 0.52),  # ellipse on a noisy dark surround
    ("fetoscopy/other", None, 0.64, 0.78),  # ellipse on green-tinted noise
    ("colonoscopy-cvc", None, 0.70, 0.78),  # octagon on dark grey (JPEG)
    ("nasal-dim", None, 0.42, 0.50),  # naturally dim, ellipse with a logo
    ("capsule/normal", None, 0.85, 0.95),  # circle clipped by the frame
    ("larynx/patient2/seq5", None, 1.0, 1.0),  # full frame: no border to find
    ("bronchoscopy/edinburgh", None, 1.0, 1.0),  # full frame, dark periphery is tissue
]

# CIEDE2000 test pairs 17-21 of Sharma, Wu & Dalal (2005), all inside the sRGB gamut.
SHARMA = [((50, 2.5, 0), (73, 25, -18), 27.1492), ((50, 2.5, 0), (61, -5, 29), 22.8977),
          ((50, 2.5, 0), (56, -27, -3), 31.9030), ((50, 2.5, 0), (58, 24, 15), 19.4535),
          ((50, 2.5, 0), (50, 3.1736, 0.5854), 1.0000)]

# sRGB of the 24 patches of the classic colour checker.
CHART = np.array([
    [115, 82, 68], [194, 150, 130], [98, 122, 157], [87, 108, 67], [133, 128, 177], [103, 189, 170],
    [214, 126, 44], [80, 91, 166], [193, 90, 99], [94, 60, 108], [157, 188, 64], [224, 163, 46],
    [56, 61, 150], [70, 148, 73], [175, 54, 60], [231, 199, 31], [187, 86, 149], [8, 133, 161],
    [243, 243, 242], [200, 200, 200], [160, 160, 160], [122, 122, 121], [85, 85, 85], [52, 52, 52]],
    np.uint8)


def _frame(data_root, folder: str, name: str | None, max_side: int = 512) -> np.ndarray:
    files = sorted(p for p in (data_root / folder).iterdir() if p.suffix in {".png", ".jpg"})
    path = data_root / folder / name if name else files[0]
    return load_frame(FrameRef(path, folder.split("/")[0]), max_side)


def _dim(frame: np.ndarray, seed: int) -> np.ndarray:
    return make_pair(frame, seed, DegradeConfig())[0]


# The previous release's milder ranges: a dim frame whose view is still detectable and whose
# exposure the model can still reach, for tests of the border copy and the exposure solver
# (the default protocol goes down to exposure 0.1, where neither is the point of those tests).
MILD = DegradeConfig(exposure=(0.7, 1.0), peak=(100.0, 1000.0), jpeg_prob=0.0)


def _mildly_dim(frame: np.ndarray, seed: int) -> np.ndarray:
    return make_pair(frame, seed, MILD)[0]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


@pytest.fixture(scope="module")
def views(data_root):
    return {folder: _frame(data_root, folder, name) for folder, name, _, _ in VIEWS}


@pytest.fixture(scope="module")
def enhancer():
    torch.manual_seed(0)
    return Enhancer(model=DeepUPE(), device="cpu")


# --- field of view ---------------------------------------------------------------------------


@pytest.mark.parametrize(("folder", "lo", "hi"), [(f, lo, hi) for f, _, lo, hi in VIEWS])
def test_fov_area_on_real_frames(views, folder, lo, hi):
    mask = detect_fov(views[folder])
    assert mask.shape == views[folder].shape[:2]
    assert lo - 1e-9 <= mask.mean() <= hi + 1e-9


@pytest.mark.parametrize("folder", [
    "sinus/clip-b", "fetoscopy/other", "colonoscopy-cvc", "larynx/patient2/seq5", "capsule/normal",
    pytest.param("gastroscopy-fujifilm/WLI_normal", marks=pytest.mark.xfail(
        strict=True, reason="known limit: dimmed, the dark right half of this view fades into the "
                            "border with no visible edge: the full frame is kept (seeds 8, 9), or "
                            "the view is cut on other seeds (docs/fidelity.md)")),
])
def test_fov_survives_dimming_and_noise(views, folder):
    # The enhancer sees dim, noisy frames: their view must match the well-lit frame's. Measured
    # with the endoscope protocol (exposure down to 0.1), IoU for seeds 7, 8, 9 (medians), since
    # dim frames are brought to a common exposure first (4 Dec): sinus 0.915, 0.908, 0.461
    # (0.908; seed 9 falls back to the full frame); fetoscopy 0.986, 0.972, 0.961 (0.972);
    # colonoscopy 0.928, 0.944, 0.903 (0.928); larynx 1.0; capsule 0.996, 0.994, 0.981 (0.994;
    # before: 0.90, the fallback, an xfail); the gastroscopy view (the known limit, xfail), 0.86,
    # 0.82, 0.82 (0.82). Seeds 0-9 go down to 0.46 on the darkest draws, hence a median of
    # three. The bound (deterministic for these seeds) sits between the cut view and the lowest
    # good one.
    clean = detect_fov(views[folder])
    ious = [_iou(detect_fov(_dim(views[folder], seed)), clean) for seed in (7, 8, 9)]
    assert float(np.median(ious)) >= 0.85, ious
    # A detection that falls back to the full frame scores the view's own area: sinus 0.455,
    # fetoscopy 0.741, colonoscopy 0.739, but capsule 0.900 and gastroscopy 0.820, which the
    # bound above would let through: gastroscopy's 0.82 (8, 9) is exactly that fallback. So
    # where there is a border, the median must also beat the fallback by 0.02 (sinus,
    # fetoscopy, colonoscopy and capsule clear it by 0.09 or more); larynx has no border (the
    # full frame is its view).
    if not clean.all():
        assert float(np.median(ious)) >= clean.mean() + 0.02, (ious, float(clean.mean()))


@pytest.mark.parametrize(("index", "lost_before"), [(74, 0.401), (78, 0.401), (83, 0.197)])
def test_fov_of_a_dim_heldout_frame_keeps_its_dark_tissue(data_root, index, lost_before):
    # Held-out pairs of `endolight eval` (the laparoscopy clip, exposure near 0.1): with the
    # thresholds' absolute levels the dark liver fell under the black floor and the view was cut
    # to the lit tissue (measured: 40 %, 40 % and 20 % of the frame lost, tissue the kernel then
    # leaves black). Brought to a common exposure first: 6.8 %, 0 % and 0.1 % lost.
    refs = list_frames("heldout", data_root)
    pair = next(synthesized_pairs(refs[index:index + 1], EVAL_SEED + index, max_side=384))
    clean = detect_fov(pair.target)
    lost = float((clean & ~detect_fov(pair.dim)).mean())
    assert lost < 0.1
    assert float((clean & ~detect_fov(pair.dim, FovConfig(max_gain=1.0))).mean()) == pytest.approx(
        lost_before, abs=0.01)  # the levels as given: the cut this test is about


def test_fov_tracker_accumulates_a_clip(data_root):
    refs = [r for r in list_frames("heldout", data_root) if r.index is not None][:12]
    clean = [load_frame(r, 480) for r in refs]
    reference = detect_fov(clean)
    assert 0.75 < reference.mean() < 0.9  # the clip's round view is clipped at top and bottom
    tracker = FovTracker(max_frames=8)
    for i, frame in enumerate(clean):
        mask = tracker.update(_dim(frame, 100 + i))
    assert tracker.count == 8
    # Deterministic (fixed frames and noise seeds): measured IoU 0.991, view 0.827 of the frame;
    # bound 0.97 is under the measured value by 2 %, and a full-frame fallback scores 0.83.
    assert _iou(mask, reference) >= 0.97
    with pytest.raises(ValueError, match="size changed"):
        tracker.add(np.zeros((64, 64, 3), np.uint8))


def test_fov_box_is_the_masks_bounding_box():
    mask = np.zeros((30, 40), bool)
    mask[3:8, 12:21] = True
    mask[9, 10] = True  # an outlier widens the box
    assert fov_box(mask) == (slice(3, 10), slice(10, 21))
    corner = np.zeros((30, 40), bool)
    corner[-1, -1] = True
    assert fov_box(corner) == (slice(29, 30), slice(39, 40))
    corner[0, 0] = True
    assert fov_box(corner) == (slice(0, 30), slice(0, 40))
    assert fov_box(np.zeros((30, 40), bool)) == (slice(0, 30), slice(0, 40))  # empty: whole frame


def test_fov_mask_is_detect_fov_of_one_frame():
    # A textured reddish disc on a black, slightly noisy border: the view is found (about the
    # disc's area, pi 50^2 / (120 x 160) = 0.41), and the tuning passed in is used (an
    # implausibly large minimum view falls back to the full frame).
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:120, 0:160]
    disc = (yy - 60) ** 2 + (xx - 80) ** 2 < 50**2
    frame = rng.integers(0, 4, (120, 160, 3)).astype(np.uint8)
    tissue = np.array([170, 80, 70]) + rng.normal(0, 10, (120, 160, 1))
    frame[disc] = np.clip(tissue[disc], 0, 255).astype(np.uint8)
    mask = fov_mask(frame)
    assert np.array_equal(mask, detect_fov(frame))
    # Deterministic: measured area 0.411, IoU 0.991 (the full frame would score 0.41).
    assert 0.36 < mask.mean() < 0.46 and _iou(mask, disc) > 0.9
    assert fov_mask(frame, FovConfig(min_area=0.9)).all()


def _ellipse_points(cx: float, cy: float, rx: float, ry: float, n: int) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)


def test_fit_ellipse_accepts_plausible_views_only():
    # A 300 x 200 frame. Points on an ellipse of radii 100 x 60 centred in the frame: the filled
    # ellipse comes back (IoU with the drawn one, measured 0.99+; bound 0.97). Rejected (None):
    # fewer than 20 points, a centre outside the frame, a view narrower than 0.3 of the frame's
    # shorter side (60 px; this one is 50) or wider than 3 times its longer side (900 px).
    shape, cfg = (200, 300), FovConfig()
    yy, xx = np.mgrid[0:200, 0:300]
    drawn = ((xx - 150) / 100) ** 2 + ((yy - 100) / 60) ** 2 <= 1
    got = _fit_ellipse(_ellipse_points(150, 100, 100, 60, 60), shape, cfg)
    assert got is not None and _iou(got, drawn) > 0.97
    # 20 points are enough (on a small view, so they also cover 30 % of its outline), 19 not.
    assert _fit_ellipse(_ellipse_points(150, 100, 40, 35, 20), shape, cfg) is not None
    assert _fit_ellipse(_ellipse_points(150, 100, 40, 35, 19), shape, cfg) is None
    arc = _ellipse_points(-30, 100, 100, 90, 120)
    assert _fit_ellipse(arc[arc[:, 0] >= 0], shape, cfg) is None  # centre left of the frame
    assert _fit_ellipse(_ellipse_points(150, 100, 25, 25, 60), shape, cfg) is None  # too small
    assert _fit_ellipse(_ellipse_points(150, 100, 500, 500, 200), shape, cfg) is None  # too large
    # Exact points on a fifth of the outline: the fit is right, but they cover less than the
    # 30 % of the outline a view's edge must show (min_arc), so it is not trusted.
    arc = _ellipse_points(150, 100, 100, 60, 300)[:60]
    assert _fit_ellipse(arc, shape, cfg) is None
    assert _fit_ellipse(arc, shape, FovConfig(min_arc=0.1)) is not None


@pytest.mark.parametrize("fidelity", [FidelityConfig(),
                                      FidelityConfig(highlights=True, preserve_hue=True, mask_stats=True),
                                      FidelityConfig(exposure=0.5)])
def test_border_pixels_not_enhanced_to_the_byte(views, enhancer, fidelity):
    # With every fidelity step the border is what endolight.border writes: the input, its
    # noise flattened (the gastroscopy frames' text kept).
    enhancer.fidelity = fidelity
    try:
        for folder in ("gastroscopy-fujifilm/WLI_normal", "sinus/clip-b", "colonoscopy-cvc"):
            dim = _mildly_dim(views[folder], 3)
            fov = detect_fov(dim)
            assert 0.3 < fov.mean() < 0.95  # a real border, so the check below is not vacuous
            out = enhancer.enhance_array(dim)
            expected = fill_border(np.zeros_like(dim), dim, ~fov)
            assert np.array_equal(out[~fov], expected[~fov])
            assert not np.array_equal(out[fov], dim[fov])
    finally:
        enhancer.fidelity = FidelityConfig()



def test_tensor_path_keeps_the_border_too(views, enhancer):
    # The torch API (float batches) honours keep_border like the uint8 path, and agrees with it.
    dims = [_dim(views[f], 4) for f in ("sinus/clip-b", "colonoscopy-cvc")]
    for dim in dims:
        x = to_tensor(dim)[None]
        out = enhancer.enhance_tensor(x)
        border = ~detect_fov(dim)
        outside = torch.from_numpy(border)[None, None].expand_as(x)
        assert outside.float().mean() > 0.05
        expected = to_tensor(fill_border(np.zeros_like(dim), dim, border))[None]
        assert torch.allclose(out[outside], expected[outside], atol=1e-6)
        assert np.abs(to_uint8(out[0]).astype(int) - enhancer.enhance_array(dim)).max() <= 1


# --- specular highlights ---------------------------------------------------------------------


def _tissue_with_spots(level: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Reddish textured tissue with three white spots, a wide pale region and a saturated
    yellow spot; returns the frame and the spots' centres mask."""
    rng = np.random.default_rng(0)
    h, w = 240, 320
    img = np.zeros((h, w, 3), np.float32)
    img[:] = (170, 80, 70)
    img += rng.normal(0, 6, (h, w, 1))
    yy, xx = np.mgrid[0:h, 0:w]
    centres = np.zeros((h, w), bool)
    for cy, cx in ((60, 60), (120, 200), (180, 100)):  # Gaussian profiles, peak at white
        a = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 3.0**2))[..., None]
        img = img * (1 - a) + np.array([252, 250, 248], np.float32) * a
        centres |= (yy - cy) ** 2 + (xx - cx) ** 2 <= 4
    img[150:230, 220:310] = (235, 225, 220)  # wide pale region: lit tissue, not a reflection
    img[(yy - 40) ** 2 + (xx - 260) ** 2 <= 16] = (250, 220, 20)  # saturated yellow: not white
    return np.clip(img * level, 0, 255).astype(np.uint8), centres


@pytest.mark.parametrize("level", [1.0, 0.45])
def test_highlight_mask_finds_spots_only(level):
    img, centres = _tissue_with_spots(level)
    mask = highlight_mask(img)
    assert mask[centres].all()
    assert mask[160:220, 230:300].mean() == 0  # the pale region
    assert not mask[36:45, 256:265].any()  # the yellow spot
    assert mask.mean() < 0.02


def test_highlights_excluded_from_lowres_and_not_stretched(enhancer):
    img, centres = _tissue_with_spots(0.5)
    spots = highlight_mask(img)
    low = masked_lowres(img, spots, (64, 64))
    plain = torch.nn.functional.interpolate(to_tensor(img)[None], size=(64, 64), mode="bilinear",
                                            antialias=True, align_corners=False)
    tissue = float(plain[0, :, 5, 30].max())  # a low-res cell of plain tissue
    for cy, cx in ((60, 60), (120, 200), (180, 100)):  # each spot's low-res cell
        y, x = cy * 64 // 240, cx * 64 // 320
        bright, kept = float(plain[0, :, y, x].max()), float(low[0, :, y, x].max())
        assert bright > tissue + 0.05  # a spot brightens its cell...
        assert kept - tissue < 0.5 * (bright - tissue)  # ...far less once left out (halo remains)
    # Pushed bright, a spot's profile would clip into a white blob; with highlights on, its gain
    # is capped so only its peak reaches white.
    clipped = {}
    for on in (False, True):
        enhancer.fidelity = FidelityConfig(highlights=on, exposure=0.8)
        try:
            out = enhancer.enhance_array(img)
        finally:
            enhancer.fidelity = FidelityConfig()
        clipped[on] = int((out[spots].max(axis=1) >= 254).sum())
    assert clipped[True] <= 3 * 3  # about the peak pixel of each of the three spots
    assert clipped[False] >= 10 * clipped[True]


# --- strength and exposure -------------------------------------------------------------------


def test_strength_zero_is_input_and_brightness_monotone(views, enhancer):
    dim = _dim(views["sinus/clip-b"], 11)
    assert np.array_equal(enhancer.enhance_array(dim, strength=0.0), dim)
    fov = torch.from_numpy(detect_fov(dim))[None, None]
    levels = [float(mean_brightness(to_tensor(enhancer.enhance_array(dim, strength=k))[None], fov)[0])
              for k in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert all(b > a for a, b in zip(levels, levels[1:], strict=False))


@pytest.mark.parametrize("target", [0.35, 0.55])
def test_exposure_target_is_met(views, enhancer, target):
    dim = _mildly_dim(views["gastroscopy-fujifilm/WLI_normal"], 5)
    fov = detect_fov(dim)
    enhancer.fidelity = FidelityConfig(exposure=target)
    try:
        out = enhancer.enhance_array(dim)
    finally:
        enhancer.fidelity = FidelityConfig()
    got = float(mean_brightness(to_tensor(out)[None], torch.from_numpy(fov)[None, None])[0])
    assert got == pytest.approx(target, abs=0.01)


# --- colour ----------------------------------------------------------------------------------


def _dimmed_chart() -> tuple[np.ndarray, np.ndarray]:
    """A colour chart and its copy under an endoscope's light falloff (linear light, so the
    chromaticity is unchanged: only the illumination is)."""
    chart = np.zeros((240, 360, 3), np.uint8)
    for i, c in enumerate(CHART):
        r, col = divmod(i, 6)
        chart[r * 60 : (r + 1) * 60, col * 60 : (col + 1) * 60] = c
    yy, xx = np.mgrid[0:240, 0:360]
    rr = np.hypot((yy - 120) / 120, (xx - 180) / 180)
    light = torch.from_numpy((0.6 * (0.15 + 0.85 * np.exp(-((rr / 0.8) ** 2)))).astype(np.float32))
    lin = kornia.color.rgb_to_linear_rgb(to_tensor(chart)[None]) * light
    return chart, to_uint8(kornia.color.linear_rgb_to_rgb(lin)[0])


HUE_BOUND = 2.0  # degrees: the bound on a chart and on real dim frames (option and shipped model)


def _chart_hue_shift(enhance) -> float:
    """Hue shift (degrees) of ``enhance``'s output of the dimmed chart against the chart."""
    chart, dim = _dimmed_chart()
    out = enhance(dim)
    assert luminance_gain(out, dim).mean() > 1.3  # it did lift the chart
    return float(hue_shift(to_tensor(out)[None], to_tensor(chart)[None], min_chroma=10)[0])


def _real_dim_hue_shifts(enhance, data_root) -> list[float]:
    """Every 8th real dim frame: hue shift (degrees) of the lifted regions (gain >= 1.5), of the
    tissue's local colour: input and output both Gaussian-blurred (sigma 2 px) first. A dim
    frame's per-pixel hue is largely sensor noise (random colour in dark pixels), and the
    model's denoiser removes that noise, which a per-pixel comparison with the noisy input
    counts as a hue shift (shipped model: 2.1 deg per pixel, 1.6 deg on the local colour); a
    real recolouring moves the local colour too (the tinted model below: > 10 deg either way)."""
    shifts = []
    for ref in list_frames("dim", data_root)[::8]:
        frame = load_frame(ref, 384)
        out = enhance(frame)
        lifted = torch.from_numpy(detect_fov(frame) & (luminance_gain(out, frame) >= 1.5))[None, None]
        assert lifted.float().mean() > 0.1
        blur_out, blur_in = (cv2.GaussianBlur(x, (0, 0), 2.0) for x in (out, frame))
        shift = hue_shift(to_tensor(blur_out)[None], to_tensor(blur_in)[None], lifted, min_chroma=10)
        shifts.append(float(shift[0]))
    return shifts


def _tint(grid: torch.Tensor, _lowres: torch.Tensor) -> torch.Tensor:
    """A grid filter that turns a per-channel model into a recolouring one: red lifted less,
    green more (offsets of the 3x4 rows), as the first release's model did to tissue."""
    g = grid.clone()
    g[:, 3] += 1.5
    g[:, 7] -= 1.5
    return g


@pytest.fixture(scope="module")
def recolouring():
    torch.manual_seed(0)
    enh = Enhancer(model=DeepUPE(ModelConfig(illumination="rgb")), device="cpu", keep_border=False)
    return enh, lambda image: enh.enhance_array(image, grid_filter=_tint)


def test_preserve_hue_keeps_chart_hue(recolouring):
    # A deliberate stand-in (random per-channel net plus a tint): the claim is about the option,
    # which needs a model that recolours. Deterministic; measured 71.7 degrees without the
    # option (bound > 20), 0.86 with it (bound HUE_BOUND = 2.0, 2.3x the measured value).
    enh, enhance = recolouring
    assert _chart_hue_shift(enhance) > 20  # the model alone recolours the chart
    enh.fidelity = FidelityConfig(preserve_hue=True)
    try:
        assert _chart_hue_shift(enhance) < HUE_BOUND
    finally:
        enh.fidelity = FidelityConfig()


def test_preserve_hue_on_real_dim_frames(data_root, recolouring):
    # The same stand-in, deterministic: measured at least 52.5 degrees without the option
    # (bound > 10), at most 0.79 with it (0.67-0.79; bound 2.0, 2.5x the largest).
    enh, enhance = recolouring
    assert min(_real_dim_hue_shifts(enhance, data_root)) > 10  # the model alone recolours them
    enh.fidelity = FidelityConfig(preserve_hue=True)
    try:
        assert max(_real_dim_hue_shifts(enhance, data_root)) < HUE_BOUND
    finally:
        enh.fidelity = FidelityConfig()


needs_weights = pytest.mark.skipif(not default_weights_path().is_file(), reason="shipped weights not present")


def heldout_psnr(data_root, enhance, step: int = 4, side: int = 160) -> dict[str, float]:
    """Mean PSNR (dB) of identity, auto-gamma and ``enhance`` on every ``step``-th held-out still
    (the clip's frames are left out: decoding the clip costs more than the rest), shrunk to
    ``side`` px and degraded by the default protocol with the evaluation seeds."""
    refs = [r for r in list_frames("heldout", data_root) if r.index is None][::step]
    methods = {"identity": lambda x: x.copy(), "gamma": auto_gamma, "model": enhance}
    scores: dict[str, list[float]] = {name: [] for name in methods}
    for pair in synthesized_pairs(refs, max_side=side):
        target = to_tensor(pair.target)[None]
        for name, method in methods.items():
            scores[name].append(float(psnr(to_tensor(method(pair.dim))[None], target)[0]))
    return {name: float(np.mean(v)) for name, v in scores.items()}


@needs_weights
def test_shipped_model_beats_the_baselines_on_heldout_pairs(data_root, record_property):
    # About the weights, not the architecture: a model that learned nothing (or the wrong
    # thing) scores near the identity. Measured with the shipped grey model of 2 Dec (trained
    # before the endoscope protocol was widened) on these 13 pairs: identity 11.66 dB, gamma
    # 15.60 dB, model 16.96 dB (+5.3 and +1.36 dB; on all 52 held-out stills +5.2 and +1.0).
    # The bounds keep well under those margins (3 and 0.5 dB), so the noise-aware model that
    # replaces it should pass with room, and one that falls to a global gamma curve's level fails.
    got = heldout_psnr(data_root, Enhancer(device="cpu").enhance_array)
    record_property("heldout_psnr", got)  # in the JUnit report: the figures behind the bounds
    assert got["model"] > got["identity"] + 3.0, got
    assert got["model"] > got["gamma"] + 0.5, got


@needs_weights
def test_shipped_model_keeps_hue_on_real_dim_frames(data_root):
    assert max(_real_dim_hue_shifts(Enhancer(device="cpu").enhance_array, data_root)) < HUE_BOUND


# --- metrics ---------------------------------------------------------------------------------


def test_delta_e_matches_sharma_pairs_and_mask():
    lab = np.array([[p[0] for p in SHARMA], [p[1] for p in SHARMA]], float)  # (2, 5, 3)
    a = torch.from_numpy(lab2rgb(lab[:1])).permute(2, 0, 1)[None].float()
    b = torch.from_numpy(lab2rgb(lab[1:])).permute(2, 0, 1)[None].float()
    expected = np.array([p[2] for p in SHARMA])
    assert float(delta_e2000(b, a)[0]) == pytest.approx(expected.mean(), abs=2e-3)
    mask = torch.zeros(1, 1, 1, 5, dtype=torch.bool)
    mask[..., [1, 4]] = True
    assert float(delta_e2000(b, a, mask)[0]) == pytest.approx(expected[[1, 4]].mean(), abs=2e-3)


def test_uniformity_hand_computed():
    # Grey frames, so luma equals the value. Centre r < 0.35 and periphery r > 0.7, with r
    # measured in the ellipse inscribed in the mask's bounding box.
    h, w = 120, 200
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot((yy + 0.5) / h * 2 - 1, (xx + 0.5) / w * 2 - 1)
    img = np.full((h, w), 0.5, np.float32)
    img[r < 0.35], img[r > 0.7] = 0.8, 0.2
    t = torch.from_numpy(img)[None, None].repeat(1, 3, 1, 1)
    assert float(brightness_uniformity(t)[0]) == pytest.approx(0.2 / 0.8, rel=1e-5)
    # The same view inside a larger frame with a bright border: the border is ignored and the
    # radius follows the view, not the frame.
    big = torch.ones(1, 3, 200, 400)
    big[..., 40:160, 100:300] = t
    mask = torch.zeros(1, 1, 200, 400, dtype=torch.bool)
    mask[..., 40:160, 100:300] = torch.from_numpy(r <= 1)
    assert float(brightness_uniformity(big, mask)[0]) == pytest.approx(0.2 / 0.8, rel=1e-5)


def test_masked_psnr_ssim_and_flat_dark_noise():
    rng = torch.Generator().manual_seed(0)
    target = torch.full((1, 3, 64, 128), 0.5)
    target[..., 64:] += 0.2 * torch.sin(torch.arange(64.0) / 2)[None, None, None, :]  # texture
    out = target.clone()
    out[..., :64] += torch.randn(1, 1, 64, 64, generator=rng) * 4 / 255  # noise, left half only
    left = torch.zeros(1, 1, 64, 128, dtype=torch.bool)
    left[..., :64] = True
    mse = float(((out - target) ** 2)[..., :64].mean())
    assert float(psnr(out, target, left)[0]) == pytest.approx(10 * np.log10(1 / mse), abs=1e-3)
    assert float(psnr(out, target, ~left)[0]) > 100
    far = torch.zeros_like(left)
    far[..., 64 + 5 :] = True  # SSIM windows (11 x 11) centred here see no noise
    assert float(ssim(out, target, far)[0]) == pytest.approx(1.0, abs=1e-6)
    assert float(ssim(out, target, left)[0]) < 0.99
    # Flat dark patches: the darker half of the dim frame where the target is flat.
    dim = target * torch.cat([torch.full((64,), 0.2), torch.full((64,), 0.6)])
    patches = flat_dark_mask(dim, target, quantile=0.4)
    assert patches[..., :64].float().mean() > 0.5 and not patches[..., 70:].any()
    assert float(noise_sigma(out, patches)[0]) == pytest.approx(4.0, rel=0.15)


def test_eval_reports_field_of_view_metrics(views):
    # Every field-of-view column must ignore what a method does outside the view: a method that
    # paints the border scores the same there as the identity, while the whole-frame PSNR drops.
    frame = views["colonoscopy-cvc"]
    dim = _dim(frame, 1)
    fov = detect_fov(frame)  # evaluate() measures inside the target's view
    assert 0.5 < fov.mean() < 0.9
    # SSIM windows (11 x 11) and the noise estimator (3 x 3) centred inside the view reach 5 px
    # past its edge, so the second painter leaves that band alone.
    band = cv2.dilate(fov.astype(np.uint8), np.ones((13, 13), np.uint8)) > 0

    def painter(outside: np.ndarray):
        rng = np.random.default_rng(0)

        def paint(x: np.ndarray) -> np.ndarray:
            out = x.copy()
            out[outside] = rng.integers(0, 256, (int(outside.sum()), 3), dtype=np.uint8)
            return out

        return paint

    methods = {"identity": lambda x: x.copy(), "all": painter(~fov), "far": painter(~band)}
    rows = {r["method"]: r for r in evaluate(methods, [Pair("cvc", "colonoscopy-cvc", dim, frame, {})])}
    ident = rows["identity"]
    for key in ("psnr", "psnr_fov", "ssim_fov", "delta_e_fov", "hue_fov", "uniformity", "noise",
                "uniformity_gt", "noise_gt"):
        assert np.isfinite(ident[key]), key
    for key in ("psnr_fov", "delta_e_fov", "hue_fov", "uniformity"):  # per-pixel measures
        assert rows["all"][key] == pytest.approx(ident[key], rel=1e-6, abs=1e-9), key
    for key in TISSUE:
        assert rows["far"][key] == pytest.approx(ident[key], rel=1e-6, abs=1e-9), key
    for name in ("all", "far"):
        assert rows[name]["psnr"] < ident["psnr"] - 1  # the painted border does count there
    assert ident["psnr_fov"] != ident["psnr"]  # the border really is left out
    md = markdown_table(summarize(list(rows.values())), {"colonoscopy-cvc": 1})
    assert "PSNR FOV" in md and "target (ground truth)" in md


def test_loss_mask_ignores_masked_pixels(views):
    target = to_tensor(views["colonoscopy-cvc"][:256, :256])[None]
    weights = tissue_weights(target)
    assert 0.5 < float(weights.mean()) < 1.0  # the octagon's corners are out
    image = target * 0.5
    illum = torch.full_like(target, 0.5)
    out = (image / illum).clamp(0, 1)
    base = total_loss(image, illum, out, target, LossWeights(), weights)
    spoilt = target.clone()
    spoilt[weights.expand_as(target) == 0] = 1.0  # change the target only outside the mask
    moved = total_loss(image, illum, out, spoilt, LossWeights(), weights)
    assert float(base["lm"]) == pytest.approx(float(moved["lm"]), abs=1e-7)
    assert float(total_loss(image, illum, out, spoilt, LossWeights())["lm"]) > float(base["lm"]) + 1e-3


def _cli_enhance(tmp_path, image: np.ndarray, weights, *options: str) -> np.ndarray:
    """``endolight enhance`` of one frame with ``options``; returns the written frame."""
    tmp_path.mkdir(exist_ok=True)
    src = tmp_path / "in.png"
    if not src.exists():
        write_image(src, image)
    out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
    r = CliRunner().invoke(app, ["enhance", str(src), "-o", str(out), "--weights", str(weights),
                                 "--device", "cpu", *options])
    assert r.exit_code == 0, r.output
    return read_image(out / "in.png")


@pytest.fixture(scope="module")
def rgb_weights(tmp_path_factory):
    """A per-channel model with large random prediction weights: it recolours, so the hue
    option has something to undo."""
    torch.manual_seed(0)
    model = DeepUPE(ModelConfig(illumination="rgb"))
    torch.nn.init.normal_(model.coeffs.pred.weight, std=0.5)
    path = tmp_path_factory.mktemp("w") / "rgb.safetensors"
    save_weights(model, path)
    return path


def test_cli_fidelity_options(tmp_path, data_root, rgb_weights):
    # Each option of `endolight enhance` changes the written frame the way it promises.
    dim = _dim(_frame(data_root, "sinus/clip-b", None, 384), 11)
    fov = detect_fov(dim)
    mask = torch.from_numpy(fov)[None, None]
    x = to_tensor(dim)[None]

    def run(*options):
        return _cli_enhance(tmp_path, dim, rgb_weights, *options)

    def brightness(out):
        return float(mean_brightness(to_tensor(out)[None], mask)[0])

    plain = run()
    # --exposure: the view's mean brightness meets the target (solved to 0.005 per frame).
    assert abs(brightness(plain) - 0.5) > 0.05
    assert brightness(run("--exposure", "0.5")) == pytest.approx(0.5, abs=0.01)
    # --preserve-hue: this model recolours the view; with the option its hue stays the input's.
    # Measured: 7.3 degrees without, 2.9 with (noise and clipping keep it above 0); the bound
    # asks for the option to remove at least 40 % of the shift, and the CLI to equal the API.
    kept = run("--preserve-hue")
    fid = FidelityConfig(preserve_hue=True)
    assert np.array_equal(kept, Enhancer(rgb_weights, device="cpu", fidelity=fid).enhance_array(dim))
    hue = [float(hue_shift(to_tensor(out)[None], x, mask, min_chroma=10)[0]) for out in (plain, kept)]
    assert hue[0] > 5 and hue[1] < 0.6 * hue[0], hue
    # --strength 0 is the input; --no-keep-border brightens the border the default keeps.
    assert np.array_equal(run("--strength", "0"), dim)
    assert np.array_equal(plain[~fov], fill_border(np.zeros_like(dim), dim, ~fov)[~fov])
    assert luminance_gain(run("--no-keep-border"), dim)[~fov].mean() > 1.2
    # --highlights: specular spots pushed to exposure 0.8 no longer clip into white blobs.
    spots_img, _ = _tissue_with_spots(0.5)
    spots = highlight_mask(spots_img)
    clipped = [int((_cli_enhance(tmp_path / name, spots_img, rgb_weights, "--exposure", "0.8", *opt)[spots]
                    .max(axis=1) >= 254).sum()) for name, opt in (("s0", ()), ("s1", ("--highlights",)))]
    assert clipped[1] * 4 <= clipped[0], clipped
    bad = CliRunner().invoke(app, ["enhance", str(tmp_path / "in.png"), "-o", str(tmp_path / "o"),
                                   "--exposure", "1.5"])
    assert bad.exit_code == 2


# --- the fidelity steps one by one (mutation-tested: docs/testing.md) --------------------------


def test_fidelity_config_exposure_must_be_strictly_inside_0_1():
    for bad in (0.0, 1.0, -0.2, 1.5):
        with pytest.raises(ValueError, match=r"exposure must be in \(0, 1\)"):
            FidelityConfig(exposure=bad)
    assert FidelityConfig(exposure=0.01).exposure == 0.01 and FidelityConfig(exposure=0.99).exposure == 0.99
    assert FidelityConfig().exposure is None


def test_solve_exposure_bisects_twelve_times_on_0_3():
    # brightness(k) = k / 3 on [0, 3]: the target 1/3 is met at k = 1. Twelve halvings of [0, 3]
    # leave an interval of 3 / 4096 whose midpoint is returned (1.000122: within 3 / 8192).
    calls = []

    def linear(k: float) -> float:
        calls.append(k)
        return k / 3

    k = solve_exposure(linear, 1 / 3)
    assert abs(k - 1.0) <= 3 / 8192 and k != 1.0
    assert len(calls) == 2 + 12 and calls[:3] == [0.0, 3.0, 1.5]
    assert all(0.0 < c < 3.0 for c in calls[2:])
    calls.clear()
    assert solve_exposure(linear, 0.5, k_max=2.0, iters=3) == pytest.approx(1.5 - 0.125)  # [1.25, 1.5]
    assert len(calls) == 2 + 3
    # Out of reach: a target at or below brightness(0) is the input (k = 0, no search); one at or
    # above brightness(k_max) is k_max.
    assert solve_exposure(linear, 0.0) == 0.0 and solve_exposure(lambda k: 0.4 + k, 0.3) == 0.0
    assert solve_exposure(linear, 1.0) == 3.0 and solve_exposure(linear, 2.0) == 3.0
    assert solve_exposure(linear, 1.0, k_max=3.5) == pytest.approx(3.0, abs=3.5 / 8192)


def test_preserve_hue_hand_computed():
    # Per pixel: gain = Y(out) / Y(in) (Rec. 601 luma), capped at 255 / max channel, applied to
    # the input and rounded. (100, 50, 25): Y 62.1, out Y 150, gain 2.4155 -> (242, 121, 60).
    # (200, 20, 20) to 200: gain 2.71 capped at 1.275 -> (255, 26, 26) (hue kept, no clipping).
    # Black stays black; a darker output darkens (gain 0.5); (1, 0, 0) to white: capped at 255.
    # (0, 0, 1) to 200: Y 0.114, gain 1754 capped at 255. (200, 150, 20) to white: gain 1.70
    # capped at 1.275 -> (255, 191, 26) (150 x 1.275 = 191.25).
    frame = np.array([[[100, 50, 25], [200, 20, 20], [0, 0, 0], [10, 10, 10], [1, 0, 0], [0, 0, 1],
                       [200, 150, 20]]], np.uint8)
    out = np.array([[[150, 150, 150], [200, 200, 200], [90, 40, 10], [5, 5, 5], [255, 255, 255],
                     [200, 200, 200], [255, 255, 255]]], np.uint8)
    got = preserve_hue(out, frame)
    assert got.dtype == np.uint8
    assert got.tolist() == [[[242, 121, 60], [255, 26, 26], [0, 0, 0], [5, 5, 5], [255, 0, 0], [0, 0, 255],
                             [255, 191, 26]]]


def test_cap_highlights_hand_computed():
    # Inside the mask each pixel's gain is capped at 255 / (the brightest masked max-channel
    # level within 7 px, a 15 x 15 window), so the spot's peak just reaches white. Here the
    # output is twice the input; the spot's peak is 200 (gain cap 1.275).
    f = np.full((20, 30, 3), 61, np.uint8)
    f[10, 10] = (200, 181, 170)  # the spot's peak
    f[10, 3] = f[10, 17] = f[10, 18] = (101, 101, 101)  # masked, 7 px left, 7 px and 8 px right
    f[10, 22] = (250, 250, 250)  # bright but not masked: does not set any cap
    f[2, 27] = (1, 0, 0)  # a masked pixel of its own, peak 1: gain up to 255
    f[18, 10] = (101, 101, 101)  # masked, 8 px below the peak
    out = np.minimum(f.astype(int) * 2, 255).astype(np.uint8)
    out[2, 27] = (200, 200, 200)
    mask = np.zeros((20, 30), bool)
    mask[9:12, 9:12] = True
    mask[10, [3, 17, 18]] = True
    mask[[3, 18], 10] = True  # 7 px above (tissue, 61), 8 px below
    mask[2, 27] = True
    got = cap_highlights(out, f, mask)
    assert got[10, 10].tolist() == [255, 231, 217]  # (200, 181, 170) x 1.275, rounded
    assert got[9, 9].tolist() == [78, 78, 78]  # 61 x 1.275 = 77.8
    assert got[10, 3].tolist() == got[10, 17].tolist() == [129, 129, 129]  # 101 x 1.275 = 128.8
    assert got[10, 18].tolist() == got[18, 10].tolist() == [202, 202, 202]  # 8 px away: own peak
    assert got[3, 10].tolist() == [78, 78, 78]
    assert got[2, 27].tolist() == [200, 0, 0]  # min(output, input x 255)
    assert np.array_equal(got[~mask], out[~mask])  # e.g. (10, 8) keeps 122 beside the spot
    assert np.array_equal(cap_highlights(out, f, np.zeros((20, 30), bool)), out)


def test_luminance_gain_hand_computed():
    # gain = (Y(out) + 1) / (Y(in) + 1) of the blurred lumas, at least 1, full size.
    grey = np.full((40, 64, 3), 50, np.uint8)
    gain = luminance_gain(np.full_like(grey, 101), grey)
    assert gain.shape == (40, 64) and gain.dtype == np.float32
    assert np.allclose(gain, 2.0, atol=1e-5)  # 102 / 51
    assert np.allclose(luminance_gain(grey, np.full_like(grey, 101)), 1.0)  # never below 1
    # A step edge (40 | 160) lifted to a flat 200: the gain is 201/41 on the dark side and
    # 201/161 on the bright side, and goes from one to the other over 10 px (10-90 %) at
    # 400 x 600: the lumas are blurred by 1 % of the shorter side (sigma 1 px of the quarter-size
    # copy, 4 px here) before the ratio. Measured 10 px across a vertical edge and 10 px across
    # a horizontal one; the bound allows 1 px either way. A 1/5-size copy gives 8 and 12, a
    # sigma of 1.5 px (the floor raised) 15, 2 % of the side 20, no vertical blur 4.
    step = np.full((400, 600, 3), 40, np.uint8)
    step[:, 300:] = 160

    def width(profile: np.ndarray) -> int:
        t = (profile - 201 / 161) / (201 / 41 - 201 / 161)
        return int(((t > 0.1) & (t < 0.9)).sum())

    gain = luminance_gain(np.full_like(step, 200), step)
    assert gain.shape == (400, 600)
    assert gain[200, 0] == pytest.approx(201 / 41, abs=1e-4)
    assert gain[200, -1] == pytest.approx(201 / 161, abs=1e-4)
    assert 9 <= width(gain[200]) <= 11
    assert np.allclose(gain, gain[:1])  # no change down the columns
    step = np.ascontiguousarray(step.transpose(1, 0, 2))  # 600 x 400, the edge across
    gain = luminance_gain(np.full_like(step, 200), step)
    assert 9 <= width(gain[:, 200]) <= 11
    # Fine texture is averaged, not sampled: 1 px dark columns (40) every 4 px on 160, lifted to
    # 200, give the mean's gain 201 / 131 everywhere (a sampling resize picks 160: 201 / 161).
    stripes = np.full((400, 600, 3), 160, np.uint8)
    stripes[:, 0::4] = 40
    assert np.allclose(luminance_gain(np.full_like(stripes, 200), stripes), 201 / 131, atol=1e-4)


def _lowres_u8(frame: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """The enhancer's plain low-res input of a uint8 frame (antialiased bilinear, in [0, 1])."""
    return torch.nn.functional.interpolate(torch.from_numpy(frame).permute(2, 0, 1)[None], size=size,
                                           mode="bilinear", antialias=True, align_corners=False).float() / 255


def test_masked_lowres_on_a_real_view(data_root):
    # The sinus frame's ellipse view (45 % of the frame) and its highlights left out.
    frame = _frame(data_root, "sinus/clip-b", None, 384)
    fov = detect_fov(frame)
    exclude = ~fov | highlight_mask(frame, fov)
    size = (48, 64)
    low = masked_lowres(frame, exclude, size)
    assert low.shape == (1, 3, 48, 64) and low.dtype == torch.float32
    assert float(low.min()) >= 0 and float(low.max()) <= 1
    # What is left out does not count at all: any values there give the same input.
    junk = frame.copy()
    junk[exclude] = np.random.default_rng(0).integers(0, 256, (int(exclude.sum()), 3), dtype=np.uint8)
    assert torch.equal(masked_lowres(junk, exclude, size), low)
    # Nothing left out: the plain input; everything left out: the plain input too (no view).
    assert torch.equal(masked_lowres(frame, np.zeros_like(exclude), size), _lowres_u8(frame, size))
    assert torch.equal(masked_lowres(frame, np.ones_like(exclude), size), _lowres_u8(frame, size))


def test_masked_lowres_of_a_uniform_view_is_its_colour():
    # A uniform (180, 90, 80) view on random values, the surround left out: every cell, kept or
    # inpainted, is the view's colour. Cells at least half kept: measured within 1.3 levels
    # (the uint8 resize's rounding, divided by the kept fraction); bound 1.5. Cells barely kept
    # amplify that rounding most (up to 12 levels at 5 % kept, the hole threshold) and the
    # holes (1209 of 4096 cells) are filled from them: measured within 8.1 levels, bound 9.
    # The unmasked resize puts 0-255 noise and black into those cells.
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:240, 0:320]
    view = ((yy - 120) / 110) ** 2 + ((xx - 160) / 150) ** 2 <= 1
    frame = rng.integers(0, 256, (240, 320, 3)).astype(np.uint8)
    frame[view] = (180, 90, 80)
    low = masked_lowres(frame, ~view, (64, 64))[0]
    err = (low - torch.tensor([180, 90, 80])[:, None, None] / 255).abs().amax(0) * 255
    kept = _lowres_u8(view.astype(np.uint8)[..., None].repeat(3, 2) * 255, (64, 64))[0, 0]
    hole = kept < 0.05
    assert 1000 < int(hole.sum()) < 1400  # the corners outside the ellipse
    assert float(err[kept >= 0.5].max()) < 1.5
    assert float(err[hole].max()) < 9.0
    assert float(err.max()) < 13.0  # measured 12.0, in a cell 5 % kept
    # At full scale and zero ((255, 0, 255)) that rounding cancels: every cell, kept or filled,
    # is exactly the view's colour (the holes' 8-bit fill included).
    frame[view] = (255, 0, 255)
    low = masked_lowres(frame, ~view, (64, 64))
    assert torch.equal(low, torch.tensor([1.0, 0.0, 1.0])[None, :, None, None].expand(1, 3, 64, 64))


def test_tissue_weights_are_the_view_less_its_highlights(data_root):
    # Two real colonoscopy frames (octagon view on dark grey, 226 and 65 highlight pixels) as
    # one batch: each frame's weights are its own view minus its own highlights, 1 or 0. The
    # float targets sit 0.4 of a level below the 8-bit values, the border is pushed below 0 and
    # the highlights above 1, as a float target may be: all are read as the 8-bit frame they
    # round and clamp to.
    files = sorted(p for p in (data_root / "colonoscopy-cvc").iterdir() if p.suffix in {".png", ".jpg"})[:2]
    frames = [load_frame(FrameRef(p, "colonoscopy-cvc"), 384) for p in files]
    targets = []
    want = []
    for frame in frames:
        fov = detect_fov(frame)
        frame[~fov] = 0
        over = highlight_mask(frame, fov)  # its highlights are pushed above 1 (saturated: 255)
        frame[over] = 255
        fov = detect_fov(frame)
        spots = highlight_mask(frame, fov)
        assert spots.sum() > 50 and 0.6 < fov.mean() < 0.9
        want.append(fov & ~spots)
        t = to_tensor(frame) - 0.4 / 255
        t[:, torch.from_numpy(~fov)] = -0.2
        t[:, torch.from_numpy(over)] = 1.3
        targets.append(t)
    weights = tissue_weights(torch.stack(targets).double())
    assert weights.shape == (2, 1, 288, 384) and weights.dtype == torch.float64
    for i in range(2):
        assert torch.equal(weights[i, 0], torch.from_numpy(want[i]).double()), i
    assert not torch.equal(weights[0], weights[1])


def _flat_tissue(h: int, w: int) -> np.ndarray:
    """Float reddish tissue with mild sensor noise (no spots)."""
    rng = np.random.default_rng(1)
    img = np.zeros((h, w, 3), np.float32)
    img[:] = (170, 80, 70)
    return img + rng.normal(0, 6, (h, w, 1))


def _boxes(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(x, y, width, height) of each connected region of a mask, in OpenCV's label order."""
    _, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return [tuple(int(v) for v in s[:4]) for s in stats[1:]]


def test_highlight_mask_sizes_and_halo():
    # 240 x 320: the top-hat window is 15 px (6 % of 240), the size limit 768 px (1 % of the
    # frame) and the halo 1 px (0.4 % of 240, at least 1). White (245) patches on tissue:
    # a 12 px square is a spot; a 20 px square is wider than the window (lit tissue); a 3 x 300
    # streak (900 px) is over the size limit, a 3 x 200 one (600 px) is not. Each spot comes
    # back grown by exactly the halo: the 12 px square at (40, 40) as 14 px from (39, 39).
    img = _flat_tissue(240, 320)
    img[40:52, 40:52] = 245
    img[40:60, 120:140] = 245
    img[150:153, 10:310] = 245
    img[200:203, 10:210] = 245
    img[60:120, 200:260] = 235  # pale tissue with a 6 px bump 10 levels brighter: under the
    img[85:91, 225:231] = 245  # contrast needed (8 % of the white level 245: 19.6)
    mask = highlight_mask(np.clip(img, 0, 255).astype(np.uint8))
    assert mask.dtype == bool and mask.shape == (240, 320)
    boxes = _boxes(mask)
    assert boxes[0] == (39, 39, 14, 14)
    # Its corners rounded by the 5 px median (132 px), grown by a 1 px disc (a cross): 172 px
    # (a 3 x 3 square would give 184).
    assert int(mask[30:60, 30:60].sum()) == 172
    assert not mask[60:120, 200:260].any()
    assert len(boxes) == 2 and boxes[1][:2] == (11, 199) and boxes[1][3] == 5  # the short streak only
    assert not mask[40:60, 120:140].any() and not mask[150:153].any()
    # 400 x 400: the halo is 2 px (0.004 x 400 = 1.6, rounded), the window 25 px.
    img = _flat_tissue(400, 400)
    img[100:112, 100:112] = 245
    img[200:220, 200:220] = 245  # 20 px: a spot now (the window is 25 px)
    boxes = _boxes(highlight_mask(np.clip(img, 0, 255).astype(np.uint8)))
    assert boxes == [(98, 98, 16, 16), (198, 198, 24, 24)]


def test_highlight_mask_needs_a_white_level_of_at_least_60():
    # A dark frame has no reflections: the white level is at least 48 / 0.8 = 60, so spots
    # must reach 48. The test frame's spots peak at 50 when dimmed to 0.2 (none found) and
    # at 63 when dimmed to 0.25 (all found).
    img, centres = _tissue_with_spots(0.2)
    assert img.max() == 50 and not highlight_mask(img).any()
    img, centres = _tissue_with_spots(0.25)
    assert img.max() == 63 and highlight_mask(img)[centres].all()


def test_highlight_mask_inside_the_view_only():
    # The spots frame at 0.45 (spots peak at 113) in a view that ends at x = 250, black beyond,
    # with white overlay text (255) in the border. With the view given, the white level is the
    # view's, so the spots are found (over the whole frame the text sets it and they are not);
    # a spot centred on the view's edge is kept on the view's side only; nothing outside the
    # view is a spot, and an empty view has none.
    img, centres = _tissue_with_spots(0.45)
    fov = np.zeros(img.shape[:2], bool)
    fov[:, :250] = True
    img[~fov] = 0
    edge_spot = img.copy()
    img[2:14, 260:310] = 255  # overlay text
    yy, xx = np.mgrid[0:240, 0:320]
    a = np.exp(-((yy - 20) ** 2 + (xx - 249) ** 2) / (2 * 3.0**2))[..., None] * fov[..., None]
    img = (img * (1 - a) + np.array([113, 112, 111]) * a).astype(np.uint8)
    mask = highlight_mask(img, fov)
    assert mask[centres].all()
    assert mask[19:22, 246:250].all() and not (mask & ~fov).any()
    assert not highlight_mask(img)[centres].any()  # the whole frame's white level: the text's
    empty = highlight_mask(img, np.zeros_like(fov))
    assert empty.dtype == bool and empty.shape == fov.shape and not empty.any()
    # A pale band (110) along the view's edge, 3 px wide over the frame's height (690 px: under
    # the size limit), is no reflection: outside the view counts as white, so the band is not
    # brighter than its surroundings. Were the black border counted, it would be a 3 px peak
    # (measured: 656 px flagged along it); on the real views the two agree (their edges are
    # dim), hence this synthetic edge.
    edge_spot[:, 247:250] = (110, 106, 104)
    mask = highlight_mask(edge_spot, fov)
    assert mask[centres].all() and not mask[:, 240:].any()
