"""The low-res network in ONNX Runtime (endolight.network_runtime) and its use by video streams."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from endolight import Enhancer
from endolight.checkpoint import load_model
from endolight.network_runtime import OnnxNetwork, onnx_network
from endolight.video import stream_network

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def model():
    return load_model(None).eval()


@pytest.fixture(scope="module")
def lowres(real_frames) -> torch.Tensor:
    """The network's inputs of real frames, one per organ."""
    enhancer = Enhancer(device="cpu")
    return torch.cat([enhancer.lowres(frame) for frame in real_frames])


def test_the_onnx_network_makes_the_modules_grid(model, lowres):
    network = onnx_network(model.coeffs, model.cfg.lowres)
    assert isinstance(network, OnnxNetwork)
    with torch.no_grad():
        for x in lowres:
            want = model.coeffs(x[None])
            got = network(x[None])
            assert got.shape == want.shape and got.dtype == torch.float32
            # Float rounding of another library's convolutions, far below what reaches a pixel.
            assert (got - want).abs().max().item() < 1e-4
            assert (want - want.mean()).abs().max().item() > 0.1  # a grid that varies, not zeros


def test_one_session_per_set_of_weights(model):
    same = load_model(None).eval()
    first = onnx_network(model.coeffs, model.cfg.lowres)
    assert onnx_network(same.coeffs, same.cfg.lowres) is first  # another load, the same weights
    other = load_model(None).eval()
    with torch.no_grad():
        next(other.coeffs.parameters()).mul_(0.5)
    changed = onnx_network(other.coeffs, other.cfg.lowres)
    assert changed is not first
    x = torch.full((1, 3, model.cfg.lowres, model.cfg.lowres), 0.3)
    with torch.no_grad():
        assert (changed(x) - other.coeffs(x)).abs().max().item() < 1e-4
        assert (changed(x) - first(x)).abs().max().item() > 1e-3


def test_the_onnx_network_refuses_another_input_size(model):
    network = onnx_network(model.coeffs, model.cfg.lowres)
    with pytest.raises(ValueError, match="takes"):
        network(torch.zeros(1, 3, 128, 128))


def test_a_fused_stream_runs_the_network_in_onnx_runtime_then_gives_the_module_back(real_frames):
    enhancer = Enhancer(device="cpu")
    assert enhancer.network is enhancer.model.coeffs
    frame = real_frames[0]
    with stream_network(enhancer):
        assert isinstance(enhancer.network, OnnxNetwork)
        streamed = enhancer.enhance_array(frame)
    assert enhancer.network is enhancer.model.coeffs
    plain = enhancer.enhance_array(frame)
    # The same output up to a rounding flip: the grids differ by < 1e-4.
    assert np.abs(streamed.astype(int) - plain.astype(int)).max() <= 1
    pytorch = Enhancer(model=enhancer.model, device="cpu", fused=False)
    with stream_network(pytorch):
        assert pytorch.network is pytorch.model.coeffs  # the PyTorch path keeps the module


def test_endolight_video_runs_its_frames_with_the_onnx_network(real_frames, tmp_path):
    import cv2

    from endolight.video import enhance_video

    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"{i}.png"), cv2.cvtColor(real_frames[1], cv2.COLOR_RGB2BGR))
    enhancer = Enhancer(device="cpu")
    seen = []
    report = enhance_video(frames, tmp_path / "out", enhancer,
                           on_frame=lambda _: seen.append(isinstance(enhancer.network, OnnxNetwork)))
    assert report.written == 3 and seen == [True, True, True]
    assert enhancer.network is enhancer.model.coeffs
