"""The float32 torch metrics give the numbers of the scikit-image reference they replaced
(eval's tables before the speed-up), on real held-out pairs and on the methods' real outputs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from skimage.color import deltaE_ciede2000, lab2rgb, rgb2lab
from skimage.measure import shannon_entropy
from skimage.metrics import structural_similarity

from endolight.data import FrameRef, list_frames, load_frame
from endolight.degrade import DegradeConfig
from endolight.fov import detect_fov
from endolight.io.tensors import to_tensor
from endolight.methods import get_method
from endolight.metrics import (
    _quantile,
    _warp_previous,
    brightness_uniformity,
    delta_e2000,
    entropy,
    flat_dark_mask,
    flicker,
    hue_difference,
    hue_shift,
    lab,
    lifted_noise,
    lightness_order_error,
    mean_brightness,
    no_reference,
    noise_sigma,
    psnr,
    reference_metrics,
    ssim,
)
from endolight.pairs import EVAL_SEED, make_pair

# The acceptance bounds of the speed-up (issue 11): 0.01 dB, 0.001 SSIM, 0.01 ΔE2000.
PSNR_TOL, SSIM_TOL, DE_TOL, HUE_TOL = 0.01, 1e-3, 0.01, 0.01


@pytest.fixture(scope="module")
def scored(data_root):
    """Per organ, one held-out still degraded like eval's pairs, at 160 px (the float64
    reference is slow), with three methods' outputs ``(3, 3, H, W)`` (the dim input itself,
    gamma, CLAHE), its target and field of view."""
    seen, out = set(), []
    for i, ref in enumerate(list_frames("heldout", data_root)):
        if ref.index is not None or ref.organ in seen:
            continue
        seen.add(ref.organ)
        target = load_frame(ref, 160)
        dim, _ = make_pair(target, EVAL_SEED + i, DegradeConfig())
        outputs = torch.stack([to_tensor(get_method(m)(dim)) for m in ("identity", "gamma", "clahe")])
        fov = torch.from_numpy(detect_fov(target))[None, None]
        out.append((outputs, to_tensor(target)[None], to_tensor(dim)[None], fov))
    assert len(out) >= 5
    return out


def _lab(x: torch.Tensor) -> np.ndarray:
    return rgb2lab(x.permute(1, 2, 0).double().numpy())


def reference_delta_e(lab_out: np.ndarray, lab_tgt: np.ndarray, mask: np.ndarray | slice) -> float:
    """The former implementation: scikit-image's rgb2lab and deltaE_ciede2000 in float64."""
    return float(np.mean(deltaE_ciede2000(lab_tgt, lab_out)[mask]))


def reference_hue(lo: np.ndarray, lr: np.ndarray, mask: np.ndarray, min_chroma: float) -> float:
    """The former hue measure (NaN where no pixel has the chroma)."""
    ok = (np.hypot(lo[..., 1], lo[..., 2]) >= min_chroma) & (np.hypot(lr[..., 1], lr[..., 2]) >= min_chroma)
    dh = np.arctan2(lo[..., 2], lo[..., 1]) - np.arctan2(lr[..., 2], lr[..., 1])
    sel = np.abs(np.rad2deg(np.angle(np.exp(1j * dh))))[ok & mask]
    return float(sel.mean()) if sel.size else float("nan")


def test_colour_metrics_match_scikit_image(scored):
    diffs = []
    for outputs, target, _, fov in scored:
        lab_tgt, inside = _lab(target[0]), fov[0, 0].numpy()
        for out in outputs:
            o, lab_out = out[None], _lab(out)
            ref_all = reference_delta_e(lab_out, lab_tgt, slice(None))
            ref_fov = reference_delta_e(lab_out, lab_tgt, inside)
            assert float(delta_e2000(o, target)[0]) == pytest.approx(ref_all, abs=DE_TOL)
            assert float(delta_e2000(o, target, fov)[0]) == pytest.approx(ref_fov, abs=DE_TOL)
            for min_chroma in (5.0, 10.0):
                ref_hue = reference_hue(lab_out, lab_tgt, inside, min_chroma)
                new_hue = float(hue_shift(o, target, fov, min_chroma)[0])
                assert new_hue == pytest.approx(ref_hue, abs=HUE_TOL, nan_ok=True)
            diffs.append(ref_all)
    # Real differences of several ΔE units, not a trivially equal 0 (dim inputs are far off).
    assert max(diffs) > 5 and min(diffs) > 0.5


def test_ssim_and_psnr_match_scikit_image(scored):
    for outputs, target, _, _ in scored:
        t = target[0].permute(1, 2, 0).double().numpy()
        for out in outputs:
            o = out.permute(1, 2, 0).double().numpy()
            ref = structural_similarity(o, t, data_range=1, channel_axis=-1, gaussian_weights=True,
                                        sigma=1.5, use_sample_covariance=False)
            assert float(ssim(out[None], target)[0]) == pytest.approx(ref, abs=SSIM_TOL)
            ref_psnr = 10 * np.log10(1 / np.mean((o - t) ** 2))
            assert float(psnr(out[None], target)[0]) == pytest.approx(ref_psnr, abs=PSNR_TOL)


def test_batched_scores_equal_one_image_at_a_time(scored):
    """eval scores all methods' outputs for a frame as one batch: the same numbers per image."""
    outputs, target, dim, fov = scored[0]
    batch = reference_metrics(outputs, target, dim, fov)
    for i, out in enumerate(outputs):
        single = reference_metrics(out[None], target, dim, fov)
        for k, v in single.items():
            assert float(batch[k][i]) == pytest.approx(float(v[0]), abs=1e-5), k
    assert float(batch["psnr_fov"][0]) == pytest.approx(float(psnr(outputs[:1], target, fov)[0]), abs=1e-4)
    assert float(batch["ssim_fov"][2]) == pytest.approx(float(ssim(outputs[2:], target, fov)[0]), abs=1e-5)
    # The methods differ: the batch did not score one image three times.
    assert len({round(float(v), 3) for v in batch["psnr"]}) == 3


# --- Mutation-testing gaps (docs/testing.md): the masked and batched behaviour of each measure,
# against hand computations in numpy / scikit-image. No data needed, so they are fast.


def _coloured(seed: int, n: int = 2, h: int = 40, w: int = 48) -> torch.Tensor:
    """``(n, 3, h, w)`` smooth colour fields with noise: every measure has something to see."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 5, 6, generator=g) * 0.8 + 0.1
    x = torch.nn.functional.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    return (x + 0.03 * torch.randn(n, 3, h, w, generator=g)).clamp(0, 1)


def _disc_mask(n: int = 2, h: int = 40, w: int = 48) -> torch.Tensor:
    """A centred disc for the first image and the left third for the others: different views."""
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    m = torch.zeros(n, 1, h, w, dtype=torch.bool)
    m[0, 0] = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (0.4 * h) ** 2
    m[1:, :, :, : w // 3] = True
    return m


def _luma601(x: torch.Tensor) -> np.ndarray:
    r, g, b = x.double().numpy().transpose(1, 0, 2, 3)
    return 0.299 * r + 0.587 * g + 0.114 * b


def test_batch_scores_are_per_image():
    # A batch of two different pairs scores each image on its own (PSNR, SSIM, with a mask too):
    # a score pooled over the batch, or a per-pixel error broadcast across it, fails.
    out, tgt = _coloured(1), _coloured(2)
    mask = _disc_mask()
    for fn in (psnr, ssim, delta_e2000, hue_shift):
        for m in (None, mask):
            batch = fn(out, tgt, m)
            single = [float(fn(out[i : i + 1], tgt[i : i + 1], None if m is None else m[i : i + 1])[0])
                      for i in range(2)]
            assert batch.shape == (2,) and abs(single[0] - single[1]) > 1e-3, fn.__name__
            assert batch.tolist() == pytest.approx(single, abs=1e-5), fn.__name__


def test_no_reference_measures_follow_the_mask():
    # Every no-reference measure, computed by hand over the mask (each image its own), and the
    # dictionary's keys as eval writes them.
    out, image, mask = _coloured(3), _coloured(4) * 0.4, _disc_mask()
    got = no_reference(out, image, mask)
    assert set(got) == {"brightness", "uniformity", "loe_input", "lifted_noise", "colourfulness", "entropy",
                        "hue_shift_input"}
    y = _luma601(out)
    m = mask[:, 0].numpy()
    brightness = [y[i][m[i]].mean() for i in range(2)]
    assert got["brightness"].tolist() == pytest.approx(brightness, rel=1e-5)
    torch.testing.assert_close(got["uniformity"], brightness_uniformity(out, mask))
    torch.testing.assert_close(got["loe_input"], lightness_order_error(out, image))
    torch.testing.assert_close(got["lifted_noise"], lifted_noise(out, image, mask))
    torch.testing.assert_close(got["hue_shift_input"], hue_shift(out, image, mask, min_chroma=10))
    # Colourfulness (Hasler & Suesstrunk) over the mask, on the 8-bit scale.
    rgb = out.double().numpy() * 255
    for i in range(2):
        r, g, b = (c[m[i]] for c in rgb[i])
        rg, yb = r - g, 0.5 * (r + g) - b
        cf = np.sqrt(rg.var() + yb.var()) + 0.3 * np.hypot(rg.mean(), yb.mean())
        assert float(got["colourfulness"][i]) == pytest.approx(cf, rel=1e-4)
        levels = np.round(y[i][m[i]] * 255).astype(np.uint8)
        assert float(got["entropy"][i]) == pytest.approx(shannon_entropy(levels, base=2), abs=1e-6)
    # The mask matters for each of them on these frames.
    whole = no_reference(out, image)
    for key in ("brightness", "uniformity", "lifted_noise", "colourfulness", "entropy", "hue_shift_input"):
        assert not torch.allclose(whole[key], got[key], rtol=1e-3), key


def test_entropy_counts_every_8_bit_level():
    # All 256 grey levels once each (4 pixels per level): exactly 8 bits; a rounding that merges
    # two neighbouring levels (at black or at white) gives less. Half of them under a mask: 7 bits.
    levels = torch.arange(256.0).repeat_interleave(4) / 255
    grey = levels.view(1, 1, 32, 32).expand(1, 3, 32, 32)
    assert float(entropy(grey)[0]) == pytest.approx(8.0, abs=1e-9)
    half = torch.zeros(1, 1, 32, 32, dtype=torch.bool)
    half[..., :16, :] = True
    assert float(entropy(grey, half)[0]) == pytest.approx(7.0, abs=1e-9)


def test_lifted_noise_per_image_and_empty_mask():
    # Noise only in the dark left half of the input: sigma 4 levels on image 0, 8 on image 1;
    # image 2 has no view at all (empty mask) and scores 0 rather than failing.
    g = torch.Generator().manual_seed(5)
    image = torch.full((3, 3, 48, 64), 0.6)
    image[..., :32] = 0.05
    out = image.clone()
    for i, sigma in ((0, 4), (1, 8)):
        out[i, :, :, :32] += (torch.randn(1, 48, 32, generator=g) * sigma / 255).expand(3, 48, 32)
    mask = torch.ones(3, 1, 48, 64, dtype=torch.bool)
    mask[2] = False
    got = lifted_noise(out, image, mask, quantile=0.4)
    # Immerkaer's estimate of sigma (measured within 5 %; bound 15 %); 0 on the empty view.
    assert got.tolist() == pytest.approx([4.0, 8.0, 0.0], rel=0.15)
    # A view covering only the bright half: no lifted noise there.
    bright = torch.zeros(3, 1, 48, 64, dtype=torch.bool)
    bright[..., 36:] = True
    assert lifted_noise(out, image, bright).tolist() == pytest.approx([0.0, 0.0, 0.0], abs=1e-4)


def test_hue_shift_default_minimum_chroma_is_5():
    # Two pixels of CIELAB chroma 5.5: hue 45 -> 135 degrees (a 90-degree change) and 0 -> 180
    # (a 180-degree change); both count at the default minimum chroma (5), so the mean is 135;
    # at 6 none does (NaN). The mask picks the first. A chroma test on the wrong channels counts
    # one pixel twice (120). A pair across the -180/180 seam (170 -> 190 degrees) is 20 apart.
    c = 5.5 / np.sqrt(2)
    lab_ref = np.array([[[60, c, c], [60, 5.5, 0.0]]])
    lab_out = np.array([[[60, -c, c], [60, -5.5, 0.0]]])
    ref, out = (torch.from_numpy(lab2rgb(x)).permute(2, 0, 1)[None].float() for x in (lab_ref, lab_out))
    assert float(hue_shift(out, ref)[0]) == pytest.approx(135.0, abs=1.0)
    assert float(hue_difference(lab(out), lab(ref))[0]) == pytest.approx(135.0, abs=1.0)
    left = torch.tensor([[[[True, False]]]])
    assert float(hue_shift(out, ref, left)[0]) == pytest.approx(90.0, abs=1.0)
    assert np.isnan(float(hue_shift(out, ref, min_chroma=6.0)[0]))
    seam = [np.array([[[60, 8 * np.cos(a), 8 * np.sin(a)]]]) for a in np.radians([170.0, 190.0])]
    seam = [torch.from_numpy(lab2rgb(x)).permute(2, 0, 1)[None].float() for x in seam]
    assert float(hue_shift(seam[1], seam[0])[0]) == pytest.approx(20.0, abs=1.0)


def _block_change(clip: np.ndarray, cells: int, cells_x: int | None = None) -> float:
    """mean |change| of the cells x cells block means between consecutive frames, over the mean."""
    t, c, h, w = clip.shape
    cx = cells if cells_x is None else cells_x
    a = clip.reshape(t, c, cells, h // cells, cx, w // cx).mean((3, 5))
    return float(np.abs(a[1:] - a[:-1]).mean() / a[1:].mean())


def _moving_clip() -> torch.Tensor:
    """Six 64 x 64 frames of a smooth random texture panning 2 px per frame, steady light."""
    rng = np.random.default_rng(0)
    big = cv2.GaussianBlur(rng.uniform(0, 1, (120, 140, 3)).astype(np.float32), (0, 0), 3)
    big = (big - big.min()) / (big.max() - big.min()) * 0.6 + 0.2
    frames = [big[10:74, 10 + 2 * t : 74 + 2 * t] for t in range(6)]
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()


def test_flicker_is_the_documented_ratio_and_flow_removes_motion():
    inputs = _moving_clip()
    wobble = (inputs * torch.tensor([1.0, 1.06, 0.95, 1.05, 0.94, 1.04])[:, None, None, None]).clamp(0, 1)
    # Without flow: the ratio of the clips' relative changes on 16 x 16 cells (4 x 4 px here),
    # computed by hand; other cell counts give other values on this clip.
    expected = _block_change(wobble.numpy(), 16) / _block_change(inputs.numpy(), 16)
    assert float(flicker(inputs, wobble)) == pytest.approx(expected, rel=1e-4)
    assert float(flicker(inputs, wobble, cells=8)) == pytest.approx(
        _block_change(wobble.numpy(), 8) / _block_change(inputs.numpy(), 8), rel=1e-4)
    assert abs(float(flicker(inputs, wobble, cells=8)) - expected) > 0.05
    # A strip 8 px high: 8 x 16 cells (fewer rows than cells), not 8 x 8.
    strip_in, strip_out = inputs[..., 20:28, :], wobble[..., 20:28, :]
    assert float(flicker(strip_in, strip_out)) == pytest.approx(
        _block_change(strip_out.numpy(), 8, 16) / _block_change(strip_in.numpy(), 8, 16), rel=1e-4)
    # A steady gain is as steady as the input, with or without flow (measured 1.0000 both).
    for flow in (False, True):
        assert float(flicker(inputs, inputs * 1.4, flow=flow)) == pytest.approx(1.0, abs=1e-3), flow
    # With flow the panning no longer counts as change, so the same wobble stands out: measured
    # 21.8 with flow against 2.2 without; a warp that does not follow the motion stays near 2.
    with_flow = float(flicker(inputs, wobble, flow=True))
    assert with_flow > 10 and with_flow > 4 * expected, (with_flow, expected)


def test_warp_follows_a_sub_pixel_flow():
    # The previous frame sampled bilinearly at (x + 0.5, y + 0.25): a constant flow of half a
    # pixel across and a quarter down, checked by hand on the interior.
    clip = _moving_clip()[:2]
    flow = np.zeros((64, 64, 2), np.float32)
    flow[..., 0], flow[..., 1] = 0.5, 0.25
    warped = _warp_previous(clip, [flow])[0].numpy()
    p = clip[0].numpy()
    expected = (0.75 * 0.5 * (p[:, :-1, :-1] + p[:, :-1, 1:]) + 0.25 * 0.5 * (p[:, 1:, :-1] + p[:, 1:, 1:]))
    assert np.abs(warped[:, :-1, :-1] - expected).max() < 1e-3
    assert np.abs(warped - p).max() > 0.01  # the warp did move it


def test_flicker_needs_two_frames_of_one_shape():
    clip = _moving_clip()
    assert float(flicker(clip[:2], clip[:2] * 1.2)) == pytest.approx(1.0, abs=1e-4)  # two frames suffice
    for a, b in ((clip[:1], clip[:1]), (clip, clip[:5]), (clip[0], clip[0])):
        with pytest.raises(ValueError, match="T >= 2"):
            flicker(a, b)


def test_reference_metrics_columns_are_the_measures_over_the_view():
    # A round view on a dark border: each column equals its measure (inside the view for the
    # *_fov columns and the target's own uniformity and noise), and the view changes each of
    # them on this frame, so a column computed over the whole frame, or against the wrong
    # image, fails.
    h, w = 64, 80
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot((yy + 0.5 - h / 2) / (h / 2), (xx + 0.5 - w / 2) / (w / 2))
    fov = torch.from_numpy(r < 0.9)[None, None]
    g = torch.Generator().manual_seed(6)
    light = torch.from_numpy(0.9 - 0.5 * r**2).float().clamp(0, 1)
    tissue = torch.tensor([0.8, 0.45, 0.4])[:, None, None] * light
    tissue[..., 40:] += 0.1 * torch.sin(torch.arange(40.0))  # texture on the right
    border = torch.tensor([0.2, 0.08, 0.06])[:, None, None].expand(3, h, w)  # a dark red-tinted border
    target = torch.where(fov[0], tissue, border).clamp(0, 1)[None]
    dim = (target * 0.3 + 0.01 * torch.randn(1, 1, h, w, generator=g)).clamp(0, 1)
    outputs = torch.cat([(target * 0.9 + 0.02 * torch.randn(1, 1, h, w, generator=g)).clamp(0, 1),
                         (dim * 2.5).clamp(0, 1)])
    outputs[..., :5, :] = torch.tensor([0.05, 0.2, 0.1])[:, None, None]  # a green border band
    got = reference_metrics(outputs, target, dim, fov)
    err = ((outputs - target) ** 2).mean(1).double().numpy()
    assert got["psnr"].tolist() == pytest.approx([10 * np.log10(1 / e.mean()) for e in err], abs=1e-4)
    inside = fov[0, 0].numpy()
    psnr_fov = [10 * np.log10(1 / e[inside].mean()) for e in err]
    assert got["psnr_fov"].tolist() == pytest.approx(psnr_fov, abs=1e-4)
    patches = flat_dark_mask(dim, target, fov)
    assert not torch.equal(patches, flat_dark_mask(dim, None, fov))  # the target's flatness counts
    expected = {
        "ssim_fov": ssim(outputs, target, fov), "delta_e_fov": delta_e2000(outputs, target, fov),
        "hue_fov": hue_shift(outputs, target, fov), "uniformity": brightness_uniformity(outputs, fov),
        "noise": noise_sigma(outputs, patches),
        "uniformity_gt": brightness_uniformity(target, fov).expand(2),
        "noise_gt": noise_sigma(target, patches),
    }
    whole = {
        "ssim_fov": ssim(outputs, target), "delta_e_fov": delta_e2000(outputs, target),
        "hue_fov": hue_shift(outputs, target), "uniformity": brightness_uniformity(outputs),
        "noise": noise_sigma(outputs, flat_dark_mask(dim, target)),
        "uniformity_gt": brightness_uniformity(target).expand(2),
        "noise_gt": noise_sigma(target, flat_dark_mask(dim, None, fov)),
    }
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value.expand(2), rtol=1e-5, atol=1e-6, msg=key)
        assert not torch.allclose(got[key], whole[key].expand(2), rtol=1e-3), key
    # Without the view or without the dim input: the whole-frame columns only.
    for kw in ({"dim": dim}, {"fov": fov}):
        assert set(reference_metrics(outputs, target, **kw)) == {"psnr", "ssim", "delta_e", "loe"}


def test_flat_dark_mask_is_the_documented_rule():
    # Dark: the dim frame's smoothed luma (Rec.601, 9 x 9 Gaussian, sigma 2) in its lowest
    # quartile; flat: the target's smoothed gradient (Sobel / 8, replicated border) at most its
    # median. Written independently with OpenCV: measured identical on all 3072 pixels; the bound
    # allows 6 to differ (ties at a quantile), a sigma of 3 on one axis moves 16-20.
    g = torch.Generator().manual_seed(7)
    up = torch.nn.functional.interpolate
    dim = up(torch.rand(1, 3, 6, 8, generator=g), size=(48, 64), mode="bilinear", align_corners=False)
    dim = (dim + 0.05 * torch.randn(1, 3, 48, 64, generator=g)).clamp(0, 1)
    target = up(torch.rand(1, 3, 6, 8, generator=g), size=(48, 64), mode="bicubic", align_corners=False)
    target = target.clamp(0, 1)

    def smooth_luma(x: torch.Tensor) -> np.ndarray:
        y = (0.299 * x[0, 0] + 0.587 * x[0, 1] + 0.114 * x[0, 2]).double().numpy()
        return cv2.GaussianBlur(y, (9, 9), 2.0, borderType=cv2.BORDER_REFLECT_101)

    y, t = smooth_luma(dim), smooth_luma(target)
    grad = np.hypot(*(cv2.Sobel(t, cv2.CV_64F, dx, 1 - dx, ksize=3, borderType=cv2.BORDER_REPLICATE) / 8
                      for dx in (1, 0)))
    expected = (y <= np.quantile(y, 0.25)) & (grad <= np.quantile(grad, 0.5))
    got = flat_dark_mask(dim, target)[0, 0].numpy()
    assert (got != expected).sum() <= 6 and 0.05 < got.mean() < 0.25
    # A perfectly flat target is flat everywhere (its gradient's median is 0): the patches are
    # then exactly the dark quartile.
    flat = flat_dark_mask(dim, torch.full_like(target, 0.5))[0, 0].numpy()
    assert np.array_equal(flat, y <= np.quantile(y, 0.25))


def test_masked_means_of_one_pixel_and_of_no_pixel():
    # A view of one pixel averages that pixel alone; a view of none gives 0 (not NaN), for the
    # mean brightness and for the uniformity ratio (no centre, no periphery).
    image = _coloured(8, n=1)
    one = torch.zeros(1, 1, 40, 48, dtype=torch.bool)
    one[..., 13, 29] = True
    luma = 0.299 * image[0, 0, 13, 29] + 0.587 * image[0, 1, 13, 29] + 0.114 * image[0, 2, 13, 29]
    assert float(mean_brightness(image, one)[0]) == pytest.approx(float(luma), rel=1e-5)
    none = torch.zeros_like(one)
    assert float(mean_brightness(image, none)[0]) == 0.0
    assert float(brightness_uniformity(image, none)[0]) == 0.0


def test_noise_sigma_of_an_impulse_is_exact():
    # Immerkaer's response to one grey pixel raised by a levels on flat grey: 4a at it, 2a at its
    # 4 neighbours, a at its 4 diagonals, 0 elsewhere: sigma = sqrt(pi / 2) / 6 * 16 a / N over
    # the N = (H - 2)(W - 2) valid pixels (or over the masked ones).
    a = 20
    image = torch.full((1, 3, 18, 22), 100 / 255)
    image[..., 9, 11] = (100 + a) / 255
    n = 16 * 20
    expected = np.sqrt(np.pi / 2) / 6 * 16 * a / n
    assert float(noise_sigma(image)[0]) == pytest.approx(expected, rel=1e-4)
    around = torch.zeros(1, 1, 18, 22, dtype=torch.bool)
    around[..., 8:11, 10:13] = True  # the 3 x 3 pixels the response covers
    assert float(noise_sigma(image, around)[0]) == pytest.approx(expected * n / 9, rel=1e-4)


def test_quantile_by_selection_is_torch_quantile(data_root):
    # flat_dark_mask's thresholds: the same float32 number as torch.quantile (no sort), on a real
    # frame's luma (ties, a 640 px frame) and on edge sizes and quantiles.
    path = sorted((data_root / "sinus" / "clip-a").iterdir())[0]
    frame = to_tensor(load_frame(FrameRef(path, "sinus"), 640))
    luma = (0.299 * frame[0] + 0.587 * frame[1] + 0.114 * frame[2]).reshape(-1)
    cases = [luma, luma[:1], luma[:2], luma[:7], torch.rand(1001, generator=torch.Generator().manual_seed(0))]
    for values in cases:
        for q in (0.0, 0.25, 0.37, 0.5, 1.0):
            assert _quantile(values, q).item() == torch.quantile(values, q).item(), (len(values), q)


def test_quantile_by_selection_on_ties_and_edge_sizes():
    # The same check without data (in the mutation selection): 8-bit levels, so with many ties,
    # and off-grid values, at 1, 2, 3 and 7 values, with q at both ends, at a rank exactly on a
    # value (0.5 of 7 values: the 4th) and between two (0.37, 0.9); each against torch.quantile,
    # to the bit.
    g = torch.Generator().manual_seed(3)
    levels = torch.randint(0, 256, (1000,), generator=g).float() / 255
    cases = [levels, levels[:1], levels[:2], levels[:3], levels[:7], torch.rand(1001, generator=g) * 5 - 2,
             torch.tensor([0.5, 0.25])]
    for values in cases:
        for q in (0.0, 0.25, 0.37, 0.5, 0.9, 1.0):
            got = _quantile(values, q)
            want = torch.quantile(values, q)
            assert got.dtype == torch.float32 and got.item() == want.item(), (len(values), q)
    # By hand: 3 values sorted (1, 2, 4): q = 0.75 is rank 1.5, halfway from 2 to 4.
    assert _quantile(torch.tensor([4.0, 1.0, 2.0]), 0.75).item() == 3.0


# --- The colour and structure ports on their own (no data: fast), against scikit-image on
# inputs that reach every branch: grey pixels, hue wrap-around, both mean-hue cases, the blue
# rotation term, high chroma; 8-bit and off-grid colours; shared and per-image SSIM targets.


def _lab_pairs() -> tuple[np.ndarray, np.ndarray]:
    """``(N, 3)`` CIELAB pairs: Sharma et al.'s kinds of cases, and random ones."""
    rng = np.random.default_rng(5)
    hand = [
        ((50, 0, 0), (50, 0, 0)), ((50, 0, 0), (60, 0, 0)),  # grey: no hue at all
        ((50, 0, 0), (55, 10, -20)), ((40, -15, 12), (40, 0, 0)),  # one grey side
        ((50, 30, -1), (52, 28, 2)),  # hues either side of 0: the difference wraps
        ((50, -30, -1), (52, -28, 2)),  # either side of 180 degrees: no wrap
        ((60, 10, -60), (62, 5, -65)), ((60, 2, -40), (58, -3, -45)),  # blue, hue near 275
        ((70, 80, 60), (68, 90, 40)), ((30, -70, 50), (35, -60, 70)),  # high chroma
        ((50, 40, -10), (50, -10, 40)), ((50, -40, -10), (50, 10, 40)),  # big hue differences
        ((50, 2.5, 0), (73, 25, -18)), ((50, 2.5, 0), (50, 3.1736, 0.5854)),  # Sharma 17, 21
        # Chromas of exactly 1, opposite hues: c1 c2 = 1 is not grey (scikit-image 1.971; read as
        # grey, 0). Hues 0 and exactly pi apart: no wrap at |h2 - h1| = pi (2.9589; 2.9521 with
        # the wrap, the mean hue then 270 instead of 90 degrees).
        ((50, 0, 1), (50, 0, -1)), ((50, 1, 0), (50, -1, 0)),
    ]
    ref = np.array([p[0] for p in hand], float)
    cmp = np.array([p[1] for p in hand], float)
    r1 = np.c_[rng.uniform(0, 100, 200), rng.uniform(-100, 100, (200, 2))]
    r2 = np.c_[rng.uniform(0, 100, 200), rng.uniform(-100, 100, (200, 2))]
    return np.r_[ref, r1], np.r_[cmp, r2]


def test_delta_e2000_map_is_scikit_images_ciede2000():
    from endolight.metrics import delta_e2000_map

    ref, cmp = _lab_pairs()
    want = deltaE_ciede2000(ref, cmp)
    # As (B, 3, H, W): the pairs along W of one image, and in a batch of two images.
    a = torch.from_numpy(ref.T.astype(np.float32))[None, :, None]
    b = torch.from_numpy(cmp.T.astype(np.float32))[None, :, None]
    got = delta_e2000_map(a, b)
    assert got.shape == (1, 1, 1, len(ref))
    np.testing.assert_allclose(got[0, 0, 0].numpy(), want, atol=2e-3, rtol=1e-4)
    assert float(delta_e2000_map(a, a).abs().max()) == 0.0
    half = len(ref) // 2
    batch = delta_e2000_map(torch.cat([a[..., :half], a[..., half:2 * half]]),
                            torch.cat([b[..., :half], b[..., half:2 * half]]))
    np.testing.assert_allclose(batch[:, 0, 0].numpy(), want[:2 * half].reshape(2, half), atol=2e-3, rtol=1e-4)
    # Sharma et al.'s published values for pairs 17 and 21.
    assert float(got[0, 0, 0, 12]) == pytest.approx(27.1492, abs=1e-3)
    assert float(got[0, 0, 0, 13]) == pytest.approx(1.0000, abs=1e-3)


def test_lab_is_scikit_images_rgb2lab():
    rng = np.random.default_rng(6)
    levels = rng.integers(0, 256, (2, 3, 5, 7)).astype(np.float32) / 255  # the 8-bit table
    levels[0, :, 0, 0], levels[0, :, 0, 1] = 0.0, 1.0  # black and white
    levels[1, :, 0, 0] = [10 / 255, 0.0, 5 / 255]  # below the sRGB curve's knee (linear part)
    off = rng.uniform(0, 1, (2, 3, 5, 7)).astype(np.float32)  # between 8-bit levels
    off[0, :, 0, 0] = [0.02, 0.03, 0.01]  # off-grid below the knee
    for x in (levels, off):
        got = lab(torch.from_numpy(x))
        assert got.dtype == torch.float32 and got.shape == x.shape
        want = np.stack([rgb2lab(img.transpose(1, 2, 0).astype(np.float64)).transpose(2, 0, 1) for img in x])
        np.testing.assert_allclose(got.numpy(), want, atol=2e-4)
    # Values outside [0, 1] are clamped first.
    wide = torch.tensor([[[[-0.5]], [[1.5]], [[0.5]]]])
    np.testing.assert_allclose(lab(wide).numpy(), lab(wide.clamp(0, 1)).numpy())


def test_ssim_map_is_scikit_images_ssim():
    from endolight.metrics import _ssim_map

    out, target = _coloured(7, n=3, h=30, w=36), _coloured(8, n=1, h=30, w=36)
    per_image = _coloured(9, n=3, h=30, w=36)

    def sk(o: torch.Tensor, t: torch.Tensor) -> tuple[float, np.ndarray]:
        mean, full = structural_similarity(
            o.permute(1, 2, 0).double().numpy(), t.permute(1, 2, 0).double().numpy(), data_range=1,
            channel_axis=-1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True)
        return mean, full.mean(-1)[5:-5, 5:-5]

    shared = _ssim_map(out, target)  # one target for the batch
    own = _ssim_map(out, per_image)  # one target per image
    assert shared.shape == own.shape == (3, 1, 20, 26) and shared.dtype == torch.float32
    for i in range(3):
        mean, full = sk(out[i], target[0])
        np.testing.assert_allclose(shared[i, 0].numpy(), full, atol=2e-5)
        assert float(ssim(out[i:i + 1], target)[0]) == pytest.approx(mean, abs=2e-5)
        np.testing.assert_allclose(own[i, 0].numpy(), sk(out[i], per_image[i])[1], atol=2e-5)
    # Masked: the mean of the map over the windows centred in the mask (cropped by 5 pixels).
    mask = _disc_mask(3, 30, 36)
    got = ssim(out, target, mask)
    for i in range(3):
        inner = mask[i, 0, 5:-5, 5:-5]
        assert float(got[i]) == pytest.approx(float(shared[i, 0][inner].mean()), abs=1e-6)


def test_lightness_order_error_hand_computed():
    # 2 x 2 images at side 2 (no shrinking): the lightness (max of R, G, B) of the reference
    # rises over the four pixels, the output's falls: every one of the 12 ordered pairs of
    # distinct pixels flips, 12 / 4 = 3 per pixel. A brightened output keeps the order: 0.
    ref = torch.zeros(1, 3, 2, 2)
    ref[0, 1] = torch.tensor([[0.1, 0.2], [0.3, 0.4]])
    rev = torch.zeros(1, 3, 2, 2)
    rev[0, 2] = torch.tensor([[0.4, 0.3], [0.2, 0.1]])
    swap = ref.clone()
    swap[0, 1, 0, 0], swap[0, 1, 0, 1] = 0.2, 0.1  # one pair swapped: 2 ordered pairs flip
    outputs = torch.cat([rev, ref * 2, swap])
    got = lightness_order_error(outputs, ref, side=2)
    assert got.tolist() == pytest.approx([3.0, 0.0, 0.5])
    # One reference per output.
    refs = torch.cat([ref, rev, ref])
    assert lightness_order_error(outputs, refs, side=2).tolist() == pytest.approx([3.0, 3.0, 0.5])
    # Shrunk by area to side 2 (4 x 6 -> 2 x 3): 2 x 2 block means, then compared.
    blocks = (torch.arange(6.0) / 10).reshape(1, 1, 2, 3).expand(1, 3, 2, 3)
    big_ref = blocks.repeat_interleave(2, -2).repeat_interleave(2, -1)
    big_out = big_ref.flip(-1)
    # Block lightness: reference [[0, .1, .2], [.3, .4, .5]], output each row reversed: the
    # pairs within a row flip (3 pairs x 2 orders x 2 rows = 12), across rows none: 12 / 6 = 2.
    assert lightness_order_error(big_out, big_ref, side=2).tolist() == pytest.approx([2.0])


def test_lightness_order_error_default_side_is_50():
    # Wang et al. shrink to 50 px on the shorter side. A 100 x 160 grey ramp whose columns come
    # in equal pairs (80 levels) shrinks by area to 50 x 80 with one level per column; the
    # output is the ramp reversed, so every pixel's order flips against every pixel outside its
    # column: 4000 - 50 = 3950 pairs per pixel, by hand.
    ramp = (torch.arange(80.0) / 100).repeat_interleave(2).expand(1, 3, 100, 160)
    got = lightness_order_error(ramp.flip(-1), ramp)
    assert got.tolist() == [3950.0]


def test_lightness_order_error_shrinks_by_area_means():
    # A 2 x 4 pair shrunk at side 1 to 1 x 2, two 2 x 2 blocks: the reference's blocks are 0.1
    # and 0.2; the output's first block is 0.5 in its top-left pixel and 0 elsewhere (mean
    # 0.125), its second 0.3: the block means keep the reference's order, LOE 0 (by hand). Read
    # by nearest pixel instead, 0.5 > 0.3 flips both ordered pairs: 1; kept 2 px high, the
    # 1 x 2 halves of the first block differ (0.25, 0) where the reference's are equal: 0.25.
    # The same transposed (4 x 2 to 2 x 1) for the width.
    ref = torch.tensor([[0.1, 0.1, 0.2, 0.2], [0.1, 0.1, 0.2, 0.2]]).expand(1, 3, 2, 4)
    out = torch.tensor([[0.5, 0.0, 0.3, 0.3], [0.0, 0.0, 0.3, 0.3]]).expand(1, 3, 2, 4)
    assert lightness_order_error(out, ref, side=1).tolist() == [0.0]
    assert lightness_order_error(out.transpose(-1, -2), ref.transpose(-1, -2), side=1).tolist() == [0.0]
