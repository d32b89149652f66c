"""The low-res network in ONNX Runtime (endolight.network_runtime), its graph cache, and its use
by the enhancer's fused CPU path."""

from __future__ import annotations

import os

import pytest
import torch

from endolight import Enhancer
from endolight import network_runtime as runtime
from endolight.checkpoint import load_model
from endolight.network_runtime import OnnxNetwork, onnx_network

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


def test_the_fused_cpu_path_runs_the_network_in_onnx_runtime_and_the_pytorch_path_the_module(
        real_frames, model):
    fused = Enhancer(model=model, device="cpu")
    assert isinstance(fused.network, OnnxNetwork)
    assert fused.network is onnx_network(model.coeffs, model.cfg.lowres)  # made once, then kept
    pytorch = Enhancer(model=model, device="cpu", fused=False)
    assert pytorch.network is model.coeffs
    # The two grids of a real frame: within float rounding, so the fused path's frames move by at
    # most a level of rounding (tests/test_model_v2.py holds every entry point to the fused one).
    x = fused.lowres(real_frames[0])
    with torch.no_grad():
        assert (fused.network(x) - pytorch.network(x)).abs().max().item() < 1e-4


def test_a_later_process_loads_the_graph_from_the_cache(model, tmp_path, monkeypatch):
    monkeypatch.setenv("ENDOLIGHT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(runtime, "_SESSIONS", {})
    first = onnx_network(model.coeffs, model.cfg.lowres)
    (graph,) = (tmp_path / "cache").glob("network-*.onnx")
    assert graph.stat().st_size > 100_000  # the network's weights are in it
    # A new process (no session in memory) must not export again: the cached graph is loaded.
    monkeypatch.setattr(runtime, "_SESSIONS", {})
    monkeypatch.setattr(runtime, "export_graph", lambda *a: pytest.fail("exported again"))
    second = onnx_network(model.coeffs, model.cfg.lowres)
    assert second is not first
    x = torch.full((1, 3, model.cfg.lowres, model.cfg.lowres), 0.4)
    assert torch.equal(first(x), second(x))


def test_a_damaged_cache_is_exported_again_and_an_unwritable_one_passed_over(model, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("ENDOLIGHT_CACHE", str(cache))
    monkeypatch.setattr(runtime, "_SESSIONS", {})
    onnx_network(model.coeffs, model.cfg.lowres)
    (graph,) = cache.glob("network-*.onnx")
    good = graph.read_bytes()
    graph.write_bytes(b"not an onnx graph")
    monkeypatch.setattr(runtime, "_SESSIONS", {})
    network = onnx_network(model.coeffs, model.cfg.lowres)
    x = torch.full((1, 3, model.cfg.lowres, model.cfg.lowres), 0.4)
    with torch.no_grad():
        assert (network(x) - model.coeffs(x)).abs().max().item() < 1e-4
    assert graph.read_bytes() == good  # written again, whole
    # A cache path that cannot be a folder (a file is in the way): the session is still made.
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv("ENDOLIGHT_CACHE", str(blocked / "cache"))
    monkeypatch.setattr(runtime, "_SESSIONS", {})
    assert isinstance(onnx_network(model.coeffs, model.cfg.lowres), OnnxNetwork)


def test_the_cache_keeps_the_graphs_used_last(model, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("ENDOLIGHT_CACHE", str(cache))
    monkeypatch.setattr(runtime, "_SESSIONS", {})
    monkeypatch.setattr(runtime, "MAX_CACHED", 3)
    for i in range(4):  # older graphs of other weights, the oldest first
        stale = cache / f"network-old{i}-256.onnx"
        stale.write_bytes(b"x")
        os.utime(stale, (1000 + i, 1000 + i))
    onnx_network(model.coeffs, model.cfg.lowres)
    kept = sorted(p.name for p in cache.glob("network-*.onnx"))
    assert len(kept) == 3 and "network-old3-256.onnx" in kept and "network-old2-256.onnx" in kept
    assert not any(name.startswith("network-old0") or name.startswith("network-old1") for name in kept)
