"""The fused CPU kernel against the differentiable PyTorch path (DeepUPE.render), within 1/255,
with and without the learned denoising."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from endolight.data import list_frames, load_frame
from endolight.degrade import DegradeConfig
from endolight.enhancer import Enhancer
from endolight.io.tensors import to_tensor, to_uint8
from endolight.kernels.common import axis_taps
from endolight.kernels.fused import GuideParams, render_uint8
from endolight.kernels.planar import box_mean_np
from endolight.model import DeepUPE, ModelConfig
from endolight.model.config import CURVES
from endolight.model.denoise import box_mean
from endolight.model.slicing import EPS, LEVEL0
from endolight.pairs import make_pair


def _render(frame, grid, guide, *args, **kwargs) -> np.ndarray:
    return render_uint8(frame, grid, guide, EPS, *args, **kwargs)


def _model(seed: int, cfg: ModelConfig | None = None) -> DeepUPE:
    """A DeepUPE whose guide is far from its identity start (so every term of it matters)."""
    torch.manual_seed(seed)
    model = DeepUPE(cfg or ModelConfig(denoise=False)).eval()
    with torch.no_grad():
        for p in model.guide.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


def _reference(model: DeepUPE, frame: np.ndarray, grid: torch.Tensor, strength: float) -> np.ndarray:
    with torch.no_grad():
        return to_uint8(model.render(grid, to_tensor(frame)[None], strength).output[0])


def _with_black(rng: np.random.Generator, frame: np.ndarray) -> np.ndarray:
    """``frame`` with a third of its pixels' channels at level 0, where ``D`` is floored for a
    ``ModelConfig.dequantise`` model (and with a lifting ``S`` that floor is tens of levels)."""
    frame[rng.random(frame.shape) < 0.3] = 0
    return frame


def _max_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


@pytest.mark.parametrize("curve", CURVES)
def test_random_frames_and_grids_match_pytorch(curve):
    # Property test: random sizes (odd, 1-pixel, wider than tall), grids, depths and strengths.
    rng = np.random.default_rng(0)
    checked = 0
    for case in range(24):
        depth = int(rng.choice([1, 2, 8]))
        grey = case % 2 == 0  # both illumination modes
        dequantise = case % 3 == 0
        model = _model(case, ModelConfig(grid_depth=depth, guide_knots=int(rng.choice([4, 16])),
                                         illumination="grey" if grey else "rgb", denoise=False,
                                         curve=curve, dequantise=dequantise))
        h, w = int(rng.integers(1, 90)), int(rng.integers(1, 130))
        frame = _with_black(rng, rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        grid = torch.randn(1, 12, depth, int(rng.choice([1, 4, 16])), int(rng.choice([1, 8, 16])))
        grid *= float(rng.uniform(0.1, 8.0))  # up to saturating logits
        strength = float(rng.choice([1.0, 0.5, 0.0]))
        ref = _reference(model, frame, grid, strength)
        out = _render(frame, grid, GuideParams.from_module(model.guide), strength, grey=grey,
                      power=curve == "power", floor=LEVEL0 if dequantise else 0.0)
        assert out.shape == frame.shape and out.dtype == np.uint8
        assert _max_diff(out, ref) <= 1, (case, h, w, depth, strength, grey, dequantise)
        checked += 1
    assert checked == 24


def test_strength_zero_returns_the_input_exactly():
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (33, 47, 3), dtype=np.uint8)
    out = _render(frame, torch.randn(1, 12, 8, 16, 16), GuideParams.from_module(_model(1).guide), 0.0)
    np.testing.assert_array_equal(out, frame)


@pytest.fixture(scope="module")
def dim_real_frames(data_root) -> list[np.ndarray]:
    """Real held-out frames, one per organ, shrunk to 480 px, darkened by the project's
    degradation model (dim pixels are where R = I / S amplifies errors most)."""
    seen, frames = set(), []
    for i, ref in enumerate(list_frames("heldout", data_root)):
        if ref.organ not in seen:
            seen.add(ref.organ)
            frames.append(make_pair(load_frame(ref, 480), 100 + i, DegradeConfig())[0])
    return frames


@pytest.mark.parametrize("curve", CURVES)
@pytest.mark.parametrize("illumination", ["grey", "rgb"])
def test_real_frames_match_pytorch(dim_real_frames, illumination, curve):
    model = _model(3, ModelConfig(illumination=illumination, denoise=False, curve=curve))
    with torch.no_grad():
        torch.nn.init.normal_(model.coeffs.pred.weight, std=0.05)  # varied, input-driven grids
    guide, grey = GuideParams.from_module(model.guide), illumination == "grey"
    for frame in dim_real_frames:
        for grid in (model.grid(to_tensor(frame)[None]).detach(), torch.randn(1, 12, 8, 16, 16) * 3):
            out = _render(frame, grid, guide, grey=grey, power=curve == "power")
            assert _max_diff(out, _reference(model, frame, grid, 1.0)) <= 1


def test_keep_mask_copies_the_input_and_leaves_the_rest():
    rng = np.random.default_rng(2)
    frame = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    guide, grid = GuideParams.from_module(_model(2).guide), torch.randn(1, 12, 8, 16, 16)
    keep = np.zeros((40, 60), bool)
    keep[:, :15] = keep[:, -7:] = keep[-5:] = True  # left and right spans, whole rows
    keep[10, 30] = True  # and a pixel inside the computed span
    plain, masked = _render(frame, grid, guide), _render(frame, grid, guide, keep=keep)
    np.testing.assert_array_equal(masked[keep], frame[keep])
    np.testing.assert_array_equal(masked[~keep], plain[~keep])
    assert (plain[keep] != frame[keep]).any()  # the mask changed something
    with pytest.raises(ValueError, match="keep mask"):
        _render(frame, grid, guide, keep=keep[1:])


def test_bad_arguments_are_rejected():
    guide = GuideParams.from_module(_model(0).guide)
    with pytest.raises(ValueError, match="grid"):
        _render(np.zeros((8, 8, 3), np.uint8), torch.zeros(1, 11, 8, 16, 16), guide)
    with pytest.raises(ValueError, match="uint8"):
        _render(np.zeros((8, 8, 3), np.float32), torch.zeros(1, 12, 8, 16, 16), guide)


def test_enhancer_cpu_uses_the_kernel_and_agrees_with_the_pytorch_path(dim_real_frames):
    model = _model(4)
    with torch.no_grad():
        torch.nn.init.normal_(model.coeffs.pred.weight, std=0.05)
    fused = Enhancer(model=model, device="cpu", keep_border=False)
    plain = Enhancer(model=model, device="cpu", keep_border=False, fused=False)
    assert fused.guide_params is not None and plain.guide_params is None
    for frame in dim_real_frames:
        # Same grid: the full-res stage alone, within 1/255.
        grid, low = plain.grid(frame)
        assert _max_diff(fused.render(frame, grid), plain.render(frame, grid)) <= 1
        # End to end the fused path also resizes the uint8 frame for the low-res net (within
        # 1/255 of the float resize there); the looser stated bound is 2/255, and 1/255 for
        # 99.9 % of the pixels.
        low_fused = fused.grid(frame)[1]
        assert float((low_fused - low).abs().max()) <= 1 / 255 + 1e-6
        diff = np.abs(fused.enhance_array(frame).astype(np.int16) - plain.enhance_array(frame))
        assert diff.max() <= 2 and (diff > 1).mean() <= 1e-3


def _denoise_reference(model: DeepUPE, frame: np.ndarray, grid: torch.Tensor,
                       strength: float = 1.0) -> tuple[np.ndarray, torch.Tensor]:
    """PyTorch output and the denoiser's coefficients (both from the float frame)."""
    x = to_tensor(frame)[None]
    with torch.no_grad():
        return to_uint8(model.render(grid, x, strength).output[0]), model.denoise_coeffs(x)


@pytest.mark.parametrize("curve", CURVES)
def test_denoising_kernel_matches_pytorch_on_random_frames_and_grids(curve):
    rng = np.random.default_rng(5)
    for case in range(16):
        depth = int(rng.choice([1, 2, 8]))
        grey = case % 2 == 0
        dequantise = case % 3 == 0
        model = _model(case, ModelConfig(grid_depth=depth, illumination="grey" if grey else "rgb",
                                         denoise=True, denoise_factor=int(rng.choice([2, 4])), curve=curve,
                                         dequantise=dequantise))
        h, w = int(rng.integers(1, 90)), int(rng.integers(1, 130))
        frame = _with_black(rng, rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        grid = torch.randn(1, 13, depth, int(rng.choice([1, 4, 16])), int(rng.choice([1, 8, 16])))
        grid *= float(rng.uniform(0.1, 8.0))
        strength = float(rng.choice([1.0, 0.5, 0.0, 2.0]))  # 2: the exposure solver's range
        ref, dn = _denoise_reference(model, frame, grid, strength)
        out = _render(frame, grid, GuideParams.from_module(model.guide), strength, grey=grey, denoise=dn,
                      power=curve == "power", floor=LEVEL0 if dequantise else 0.0)
        assert _max_diff(out, ref) <= 1, (case, h, w, depth, grey, strength, dequantise)
        if strength == 0.0:
            np.testing.assert_array_equal(out, frame)


def test_denoising_kernel_matches_pytorch_on_real_dim_frames(dim_real_frames):
    model = _model(6, ModelConfig(denoise=True))
    with torch.no_grad():
        torch.nn.init.normal_(model.coeffs.pred.weight, std=0.05)
    guide = GuideParams.from_module(model.guide)
    for frame in dim_real_frames:
        grid = model.grid(to_tensor(frame)[None]).detach()
        grid[:, 12] = 4.0  # strong denoising everywhere: the filter's every term shows
        ref, dn = _denoise_reference(model, frame, grid)
        out = _render(frame, grid, guide, grey=True, denoise=dn)
        assert _max_diff(out, ref) <= 1
        # and the denoising did something: without it the output differs
        assert _max_diff(out, _render(frame, grid[:, :12], guide, grey=True)) > 5


def test_denoising_grid_needs_its_thirteenth_channel():
    guide = GuideParams.from_module(_model(0).guide)
    with pytest.raises(ValueError, match=r"\(13, D"):
        _render(np.zeros((8, 8, 3), np.uint8), torch.zeros(1, 12, 8, 16, 16), guide,
                denoise=np.zeros((6, 2, 2), np.float32))


def test_axis_taps_hand_computed_and_clamped_inside_the_grid():
    # Pixel i of 8 reads coordinate (i + 0.5) / 8 * 2 - 0.5 of a 2-cell axis, clamped to
    # [0, 1]: -0.375, -0.125 (clamped to 0), 0.125 ... 0.875, 1.125, 1.375 (clamped to 1). The
    # lower index stays at 0 (cells - 2) so the kernels' upper tap (index + 1) never reads past
    # the grid: the last pixels get index 0 and weight 1, not index 1 and weight 0.
    lo, w = axis_taps(8, 2)
    np.testing.assert_array_equal(lo, np.zeros(8))
    np.testing.assert_array_equal(w, np.array([0, 0, 0.125, 0.375, 0.625, 0.875, 1, 1], np.float32))
    lo, w = axis_taps(3, 1)  # one cell: index 0, weight 0 everywhere
    assert lo.tolist() == [0, 0, 0] and w.tolist() == [0, 0, 0]


def test_box_mean_of_one_channel():
    # OpenCV drops the trailing axis of a one-channel image; the mean must not care.
    x = torch.rand(1, 1, 19, 23)
    np.testing.assert_allclose(box_mean_np(x[0].numpy(), 2), box_mean(x, 2)[0], atol=1e-5, rtol=0)
