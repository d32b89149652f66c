"""The Python API: ``endolight.enhance()`` and ``Enhancer.__call__`` on numpy and torch frames, and
the frame-size limit (API and CLI)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import endolight
from endolight.cli import app
from endolight.degrade import DegradeConfig
from endolight.enhancer import Enhancer
from endolight.io.images import MAX_PIXELS, InputError
from endolight.io.tensors import to_tensor, to_uint8
from endolight.pairs import make_pair


@pytest.fixture(scope="module")
def dim(real_frames) -> np.ndarray:
    """A dim real frame with a black border (the sinus view), so keep_border has work to do."""
    frame = next(f for f in real_frames if (f.max(axis=2) <= 3).mean() > 0.2)
    return make_pair(frame, 3, DegradeConfig())[0]


@pytest.fixture(scope="module")
def shipped() -> Enhancer:
    return Enhancer(device="cpu")


def test_enhance_on_numpy_equals_the_enhancer(dim, shipped):
    out = endolight.enhance(dim)
    assert out.dtype == np.uint8 and out.shape == dim.shape
    assert np.array_equal(out, shipped.enhance_array(dim))
    assert out.mean() > dim.mean() + 10  # it did enhance (shipped weights lift a dim frame)
    assert np.array_equal(endolight.enhance(dim, strength=0.5), shipped.enhance_array(dim, 0.5))
    assert np.array_equal(endolight.enhance(dim, strength=0.0), dim)
    assert np.array_equal(shipped(dim), out)  # Enhancer.__call__ dispatches numpy to enhance_array


def test_enhance_on_3d_and_4d_tensors_equals_the_enhancer(dim, shipped):
    x = to_tensor(dim)
    out3 = endolight.enhance(x)
    assert out3.shape == x.shape and out3.dtype == x.dtype
    assert torch.equal(out3, shipped.enhance_tensor(x[None])[0])
    assert torch.equal(shipped(x), out3)
    # A batch: each frame as if alone (no mixing across the batch), same shape back.
    batch = torch.stack([x, x.flip(-1)])
    out4 = endolight.enhance(batch)
    assert out4.shape == batch.shape
    assert torch.equal(out4, shipped.enhance_tensor(batch))
    torch.testing.assert_close(out4[0], out3, atol=1e-6, rtol=0)
    torch.testing.assert_close(out4[1], endolight.enhance(x.flip(-1)), atol=1e-6, rtol=0)
    # The tensor path agrees with the uint8 path (fused kernel): equal on most values (measured
    # 91 %), else one 8-bit level, plus what the lift does to the uint8 path's one rounding: it
    # fits the denoiser on a uint8 copy of the frame (Enhancer.denoise_coeffs; the full-res
    # frame is never converted to float), half a level off at most, times the pixel's gain
    # (two levels where the sixteenth stage's weights lift a level-5 pixel to 37).
    array = shipped.enhance_array(dim).astype(int)
    diff = np.abs(to_uint8(out3).astype(int) - array)
    gain = np.maximum(array, 1) / np.maximum(dim.astype(int), 1)
    assert (diff <= 1 + 0.5 * gain).all() and (diff > 0).mean() < 0.15
    assert torch.equal(endolight.enhance(x, strength=0.0), x)


def test_enhance_rejects_a_frame_over_the_pixel_limit():
    # 8001 x 8001 is just over 64 MP; a broadcast view costs no memory and fails before any work.
    big = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (8001, 8001, 3))
    assert 8001 * 8001 > MAX_PIXELS >= 8000 * 8000
    with pytest.raises(InputError, match="8001x8001 exceeds the 64 MP limit"):
        endolight.enhance(big)


def test_cli_enhance_over_the_pixel_limit_is_one_error_line(tmp_path):
    src = tmp_path / "huge.png"
    cv2.imwrite(str(src), np.zeros((8001, 8001, 3), np.uint8))  # a few hundred kB: all black
    r = CliRunner().invoke(app, ["enhance", str(src), "-o", str(tmp_path / "out"), "--device", "cpu"])
    assert r.exit_code == 1
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "exceeds the 64 MP limit" in errors[0], r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "out" / "huge.png").exists()
