"""Properties that hold for any frame (Hypothesis): the degradation is monotone in exposure and
never brightens, the model's illumination is bounded ``D <= S <= 1`` (``D``: the frame it
divides, the input after the model's own denoising) with a finite output, and
strength 0 is the identity. Few, small examples and no deadline, so the suite stays fast on a
busy CPU."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from endolight.degrade import PROTOCOLS, DegradeConfig, degrade, sample_params
from endolight.enhancer import Enhancer
from endolight.model import DeepUPE, ModelConfig
from endolight.model.slicing import EPS

# No example database: nothing is written into the working tree.
FEW = settings(max_examples=20, deadline=None, database=None)
# No read noise, no JPEG; the shot noise is switched off per draw (peak = inf, below): a finite
# peak, however large, still adds a random draw that can flip an 8-bit rounding between two
# calls (CI caught it: equal exposures, one level apart).
CLEAN = replace(DegradeConfig(), read_noise=(0.0, 0.0), peak=(1e12, 1e12), jpeg_prob=0.0)


@st.composite
def frames(draw, min_side: int = 8, max_side: int = 40) -> np.ndarray:
    """``(H, W, 3)`` uint8 frames of any content: noise, flat, black, white, or a mix."""
    h = draw(st.integers(min_side, max_side))
    w = draw(st.integers(min_side, max_side))
    kind = draw(st.sampled_from(["noise", "flat", "mixed"]))
    if kind == "flat":
        return np.full((h, w, 3), draw(st.sampled_from([0, 1, 128, 254, 255])), np.uint8)
    image = draw(arrays(np.uint8, (h, w, 3)))
    if kind == "mixed":  # saturated and black regions beside random content
        image[: h // 3] = 255
        image[-(h // 3):] = 0
    return image


def _float(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).float() / 255


@FEW
@given(frame=frames(), seed=st.integers(0, 2**16), lo=st.floats(0.05, 1.0), hi=st.floats(0.05, 1.0))
def test_degradation_is_monotone_in_exposure_and_never_brightens(frame, seed, lo, hi):
    lo, hi = sorted((lo, hi))
    p = replace(sample_params(CLEAN, np.random.default_rng(seed)), peak=math.inf)  # noise-free
    t = _float(frame)
    dim_lo, dim_hi = (degrade(t, replace(p, exposure=e)) for e in (lo, hi))
    assert torch.all(dim_lo <= dim_hi)  # more light never darkens a pixel
    assert torch.all(dim_hi <= t + 1 / 255 + 1e-6)  # and the dim frame never outshines the target
    assert float(dim_lo.min()) >= 0 and float(dim_hi.max()) <= 1


@FEW
@given(frame=frames(), seed=st.integers(0, 2**16))
def test_paper_protocol_never_brightens(frame, seed):
    t = _float(frame)
    dim = degrade(t, sample_params(PROTOCOLS["paper"], np.random.default_rng(seed)))
    assert torch.all(dim <= t + 1 / 255 + 1e-6)


@pytest.fixture(scope="module", params=["grey", "rgb"])
def model(request) -> DeepUPE:
    torch.manual_seed(0)
    m = DeepUPE(ModelConfig(illumination=request.param))
    torch.nn.init.normal_(m.coeffs.pred.weight, std=0.5)  # far from the near-identity init
    return m.eval()


@FEW
@given(frame=frames(), strength=st.floats(0.0, 1.0))
def test_illumination_bounded_and_output_finite_for_any_frame(model, frame, strength):
    x = _float(frame)[None]
    with torch.no_grad():
        p = model(x, strength=strength)
    # S bounds the frame it divides: the model's denoised input D (I itself without denoise).
    s, d = p.illumination, p.denoised
    bound = d.clamp(min=EPS) if s.shape[1] == 3 else d.amax(1, keepdim=True).clamp(min=EPS)
    assert torch.all(s >= bound - 1e-6) and torch.all(s <= 1 + 1e-6)
    assert torch.isfinite(p.output).all()
    assert float(p.output.min()) >= 0 and float(p.output.max()) <= 1


@pytest.fixture(scope="module")
def enhancer() -> Enhancer:
    torch.manual_seed(0)
    return Enhancer(model=DeepUPE(), device="cpu")


@FEW
@given(frame=frames(min_side=8, max_side=64))
def test_strength_zero_is_the_identity(enhancer, model, frame):
    assert np.array_equal(enhancer.enhance_array(frame, strength=0.0), frame)
    x = _float(frame)[None]
    assert torch.equal(enhancer.enhance_tensor(x, strength=0.0), x)
    with torch.no_grad():
        torch.testing.assert_close(model(x, strength=0.0).output, x, atol=1e-6, rtol=0)
