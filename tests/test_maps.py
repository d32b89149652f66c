"""The fast graph's maps (endolight.model.maps) run in PyTorch, without an export: the RGB and
I420 graphs held to the exact enhancer on real frames, strength 0 as the identity, and the
colour conversions against endolight.io.yuv. (tests/test_export.py holds the exported files to
these same PyTorch graphs within 1/255; these run in a fraction of a second, so they also serve
mutation testing of maps.py.)"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from endolight.checkpoint import load_model
from endolight.data import FrameRef, load_frame
from endolight.enhancer import Enhancer
from endolight.export import FrameModel
from endolight.io.images import expand_sources
from endolight.io.yuv import TO_YCC, i420_to_rgb, rgb_to_i420
from endolight.io.yuv import ycc_to_rgb as ycc_to_rgb_np
from endolight.model import DeepUPE
from endolight.model.maps import _to_ycc, ycc_to_rgb
from test_planar import _dim, _psnr  # the planar path's darkening and PSNR on uint8 frames

# Frame -> PSNR bounds (dB) of the fast graph against the exact enhancer (keep_border=False):
# (RGB graph at strength 1, at 0.5, I420 graph at 1, at 0.5), as written to a 4:2:0 video for
# the I420 graph. Measured with the shipped weights: bronchoscopy 480x480 42.2, 51.4, 41.6,
# 47.7; laparoscopy 960x540 43.1, 51.7, 42.3, 48.0; larynx 512x512 40.2, 48.4, 35.0, 43.1 (the
# 1/8 maps are coarse on small frames). The bounds sit 3 dB under; the enhancement itself
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
