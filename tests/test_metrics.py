"""The float32 torch metrics give the numbers of the scikit-image reference they replaced
(eval's tables before the speed-up), on real held-out pairs and on the methods' real outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.color import deltaE_ciede2000, rgb2lab
from skimage.metrics import structural_similarity

from endolight.data import list_frames, load_frame
from endolight.degrade import DegradeConfig
from endolight.fov import detect_fov
from endolight.io.tensors import to_tensor
from endolight.methods import get_method
from endolight.metrics import delta_e2000, hue_shift, psnr, reference_metrics, ssim
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
