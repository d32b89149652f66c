"""Model v2: degradation protocols, the learned denoiser, the deployable graph, and one output for
one frame whichever entry point computes it."""

from __future__ import annotations

import cv2
import kornia
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import endolight
from endolight.checkpoint import SHIPPED_WEIGHTS, default_weights_path, load_model, resolve_weights
from endolight.cli import app
from endolight.data import degraded_pair, list_frames, load_frame
from endolight.degrade import PROTOCOLS, DegradeParams, degrade, protocol_config, sample_params
from endolight.enhancer import Enhancer
from endolight.io.images import read_image, write_image
from endolight.io.tensors import to_tensor, to_uint8
from endolight.kernels.planar import box_mean_np
from endolight.metrics import noise_sigma
from endolight.model import DeepUPE, ModelConfig
from endolight.model.denoise import box_mean, denoise, filter_guide, guided_coefficients, luma, shrink
from endolight.model.slicing import divide, illumination
from endolight.video import VideoOptions, enhance_video

LARYNX = "larynx/patient2/seq5"  # held-out: tissue, instrument edges, flat mucosa


@pytest.fixture(scope="module")
def target(data_root) -> torch.Tensor:
    ref = next(r for r in list_frames("heldout", data_root) if str(r.path).count(LARYNX))
    return to_tensor(load_frame(ref, 384))


# --------------------------------------------------------------------------- protocols


@pytest.mark.parametrize("name", list(PROTOCOLS))
def test_protocols_are_reproducible_per_seed(target, name):
    cfg = protocol_config(name)
    a, _, pa = degraded_pair(target, 7, cfg)
    b, _, pb = degraded_pair(target, 7, cfg)
    c, _, _ = degraded_pair(target, 8, cfg)
    assert torch.equal(a, b) and pa == pb
    assert (a - c).abs().max() > 0.02  # another seed, another degradation
    assert pa["mode"] == cfg.mode


def test_paper_protocol_is_a_noise_free_per_channel_gamma(target):
    params = sample_params(protocol_config("paper"), np.random.default_rng(3))
    assert 1.5 <= params.gamma_edge <= 4.0
    noise_a = degrade(target, params, torch.Generator().manual_seed(1))
    noise_b = degrade(target, params, torch.Generator().manual_seed(2))
    assert torch.equal(noise_a, noise_b)  # no sensor noise: the generator does not matter
    expected = torch.round(target ** params.gamma_edge * 255) / 255
    assert torch.equal(noise_a, expected)


def test_endoscope_protocol_spans_exposure_and_noise():
    rng = np.random.default_rng(0)
    drawn = [sample_params(protocol_config("endoscope"), rng) for _ in range(400)]
    exposure = np.array([p.exposure for p in drawn])
    peak = np.array([p.peak for p in drawn])
    # Log-uniform on [0.1, 1] and [50, 2000]: every decade is visited.
    assert exposure.min() < 0.13 and exposure.max() > 0.8 and np.median(exposure) < 0.45
    assert peak.min() < 70 and peak.max() > 1500
    assert 0.15 < np.mean([p.jpeg_quality > 0 for p in drawn]) < 0.35  # JPEG on ~a quarter


def test_unknown_protocol_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown protocol 'gamma'; choose from endoscope, paper"):
        protocol_config("gamma")
    result = CliRunner().invoke(app, ["eval", "--protocol", "gamma", "-o", "unused"])
    assert result.exit_code == 2 and "unknown protocol" in result.output


# --------------------------------------------------------------------------- the offset space


@pytest.mark.parametrize("exposure", [0.05, 0.2])
def test_a_dimmer_light_is_undone_by_a_grey_illumination_only_in_the_offset_space(target, exposure):
    # A weaker light scales linear light, and sRGB's "-0.055" makes the dim R'G'B' more
    # saturated: with the ideal grey S of each pixel (matching the target's largest channel),
    # R = I / S keeps that saturation; R = (I + beta) / S - beta (beta = 0.055) undoes it.
    lin = kornia.color.rgb_to_linear_rgb(target[None])
    dim = kornia.color.linear_rgb_to_rgb(lin * exposure)
    m_dim, m_target = dim.amax(1, keepdim=True), target[None].amax(1, keepdim=True)
    tissue = (m_target > 0.1).expand(-1, 3, -1, -1)
    errors = {}
    for beta in (0.0, 0.055):
        ideal = (m_dim + beta) / (m_target + beta)
        # illumination()'s range, from logits far below to far above 0, admits the ideal S
        low, high = (illumination(torch.full_like(dim, v), dim, grey=True, offset=beta)
                     for v in (-30.0, 30.0))
        assert (low <= ideal + 1e-6)[tissue[:, :1]].all() and torch.allclose(high, torch.ones_like(high))
        errors[beta] = (divide(dim, ideal, beta).clamp(0, 1) - target[None]).abs()[tissue].mean().item()
    errors = {k: round(v, 4) for k, v in errors.items()}
    assert errors[0.055] < 0.01 < errors[0.0] and 5 * errors[0.055] < errors[0.0], errors


# --------------------------------------------------------------------------- the denoiser


def _noisy(target: torch.Tensor) -> torch.Tensor:
    """A strong, deterministic endoscope degradation of one frame (low exposure, 60 e- at white)."""
    params = DegradeParams(gamma_centre=1.2, gamma_edge=2.0, falloff_floor=0.4, falloff_radius=0.7,
                           falloff_power=2.0, centre_x=0.5, centre_y=0.5, angle=0.0, anisotropy=1.0,
                           exposure=0.5, peak=60.0, read_noise=0.003, jpeg_quality=0)
    return degrade(target[None], params, torch.Generator().manual_seed(0))


def _edges(target: torch.Tensor) -> torch.Tensor:
    """The strongest 5 % gradients of the clean frame's luma: instrument and tissue edges."""
    y = target[None].mean(1, keepdim=True)
    grad = (y[..., 1:-1, 2:] - y[..., 1:-1, :-2]).abs() + (y[..., 2:, 1:-1] - y[..., :-2, 1:-1]).abs()
    return grad > torch.quantile(grad.flatten(), 0.95)


def _gradient_energy(image: torch.Tensor, where: torch.Tensor) -> float:
    y = image.mean(1, keepdim=True)
    grad = (y[..., 1:-1, 2:] - y[..., 1:-1, :-2]).abs() + (y[..., 2:, 1:-1] - y[..., :-2, 1:-1]).abs()
    return float(grad[where].mean())


def test_guided_denoiser_lowers_flat_noise_and_keeps_edges(target):
    dim = _noisy(target)
    coeffs = guided_coefficients(shrink(dim, 4), 2, 1e-3)
    out = denoise(dim, coeffs, torch.ones_like(dim[:, :1]))
    box = torch.nn.functional.avg_pool2d(dim, 9, 1, 4, count_include_pad=False)  # same support
    # Flat: where the clean frame is smooth.
    y = target[None].mean(1, keepdim=True)
    smooth = (y[..., 1:-1, 2:] - y[..., 1:-1, :-2]).abs() < 0.005
    flat = torch.nn.functional.pad(smooth, (1, 1, 1, 1))
    before, after = float(noise_sigma(dim, flat)), float(noise_sigma(out, flat))
    # Measured: 12.7 -> 3.9 levels (0.31x); the bound asks for 0.45x.
    assert after < 0.45 * before
    # Edges (the clean frame's strongest 5 % gradients): measured gradient energy 0.127 against
    # the clean dim frame's 0.208 (61 %); a box blur of the same support keeps 0.028 (13 %).
    edges = _edges(target)
    kept, blurred = _gradient_energy(out, edges), _gradient_energy(box, edges)
    assert kept > 0.45 * _gradient_energy(dim, edges)
    assert kept > 3 * blurred


def test_lee_step_of_the_guide_lowers_flat_noise_and_keeps_edges(target):
    # ModelConfig.denoise_lee: the guide's flat regions go to their 3x3 mean, its edges stay.
    y = luma(_noisy(target))
    clean = luma(target[None])
    flat = torch.nn.functional.pad((clean[..., 1:-1, 2:] - clean[..., 1:-1, :-2]).abs() < 0.005, (1, 1, 1, 1))
    edges = _edges(target)
    blurred, lee = (filter_guide(y, 0.7, step).repeat(1, 3, 1, 1) for step in (0.0, 4e-4))
    # Measured: flat noise 4.11 -> 2.47 levels (0.60x), edge gradient energy 0.165 -> 0.157 (95 %).
    assert float(noise_sigma(lee, flat)) < 0.7 * float(noise_sigma(blurred, flat))
    assert _gradient_energy(lee, edges) > 0.9 * _gradient_energy(blurred, edges)
    assert torch.equal(filter_guide(y, 0.7, 0.0), filter_guide(y, 0.7))


def test_strength_zero_of_the_denoiser_is_the_identity(target):
    dim = _noisy(target)
    coeffs = guided_coefficients(shrink(dim, 4), 2, 1e-3)
    assert torch.equal(denoise(dim, coeffs, torch.zeros_like(dim[:, :1])), dim)


def test_opencv_box_equals_the_differentiable_one():
    x = torch.rand(8, 37, 53)
    for radius in (1, 2, 5):
        fast = torch.from_numpy(box_mean_np(x.numpy(), radius))
        assert torch.allclose(box_mean(x[None], radius)[0], fast, atol=1e-5)


def test_deploy_graph_matches_the_reference(target):
    torch.manual_seed(0)
    for cfg in (ModelConfig(), ModelConfig(illumination="rgb", denoise=False)):
        model = DeepUPE(cfg).eval()
        with torch.no_grad():
            model.coeffs.pred.weight.normal_(std=0.3)  # a strongly varying grid
            for p in model.guide.parameters():
                p.add_(torch.randn_like(p) * 0.3)
            ref, dep = model(_noisy(target)).output, model(_noisy(target), deploy=True).output
        assert float((ref - dep).abs().max()) < 0.5 / 255


# --------------------------------------------------------------------------- shipped weights


def test_paper_preset_loads_by_name():
    assert resolve_weights("paper") == default_weights_path("paper")
    assert set(SHIPPED_WEIGHTS) == {"default", "paper"}
    if not default_weights_path("paper").is_file():
        pytest.skip("paper preset not shipped in this checkout")
    paper = load_model("paper")
    # The paper's per-channel S, with the power curve, the learned denoising and level 0 read as
    # the middle of what rounds to it (README).
    assert paper.cfg.illumination == "rgb" and paper.cfg.curve == "power" and paper.cfg.denoise
    assert paper.cfg.dequantise
    assert Enhancer(weights="paper").model.cfg == paper.cfg
    default = load_model()
    assert default.cfg.illumination == "grey" and default.cfg.denoise


def test_the_paper_preset_reads_level_0_alike_in_the_kernel_and_in_pytorch(target):
    # A frame darkened by gamma 4 on each channel, as the paper protocol's steepest: the weaker
    # channels of its dark tissue round to 0, and the preset reads them as LEVEL0 (dequantise).
    dim = to_uint8(torch.round(target**4 * 255) / 255)
    lit_zero = (dim == 0) & (dim.max(axis=2, keepdims=True) > 0)
    assert lit_zero.mean() > 0.05
    fused = Enhancer(weights="paper", device="cpu", keep_border=False).enhance_array(dim)
    reference = Enhancer(weights="paper", device="cpu", keep_border=False, fused=False).enhance_array(dim)
    assert int(np.abs(fused.astype(np.int16) - reference.astype(np.int16)).max()) <= 4
    assert float(fused[lit_zero].mean()) > 20  # lifted, not kept black


@pytest.mark.parametrize("weights", sorted(SHIPPED_WEIGHTS))
def test_every_entry_point_gives_the_same_output(data_root, tmp_path, weights):
    """Enhancer (fused kernel and PyTorch), endolight.enhance(), `endolight enhance`, the video
    pipeline, the viewer's API and the exported ONNX model, on each shipped model and one
    real dim frame."""
    frame = read_image(data_root / "bronchoscopy" / "edinburgh" / "edinburgh_00.png")
    fused = Enhancer(weights=weights, device="cpu", keep_border=False)
    torch_path = Enhancer(weights=weights, device="cpu", keep_border=False, fused=False)
    ref = fused.enhance_array(frame)

    def max_diff(a: np.ndarray) -> int:
        return int(np.abs(a.astype(np.int16) - ref.astype(np.int16)).max())

    # The fused path fits the denoiser (and the grid) on a uint8 shrink, the PyTorch and ONNX
    # paths on a float one: measured at most 3 levels apart on this frame with the shipped
    # weights (the kernel itself is within 1 of PyTorch on the same inputs, test_kernel.py).
    float_tol = 4
    assert max_diff(torch_path.enhance_array(frame)) <= float_tol
    if weights == "default":  # endolight.enhance() runs the default model
        api = Enhancer(device="cpu")  # keep_border on: equal inside the view
        assert np.array_equal(endolight.enhance(frame), api.enhance_array(frame))
    out = torch_path(to_tensor(frame)[None])[0]
    assert max_diff(to_uint8(out)) <= float_tol
    src = tmp_path / "in.png"
    write_image(src, frame)
    result = CliRunner().invoke(app, ["enhance", str(src), "-o", str(tmp_path / "out"), "--no-keep-border",
                                      "--device", "cpu", "--weights", weights])
    assert result.exit_code == 0, result.output
    assert max_diff(read_image(tmp_path / "out" / "in.png")) == 0
    # The video pipeline (a one-frame folder, per-frame: no temporal filtering) and the viewer.
    (tmp_path / "clip").mkdir()
    write_image(tmp_path / "clip" / "0000.png", frame)
    enhance_video(tmp_path / "clip", tmp_path / "frames", fused, VideoOptions(temporal=None))
    assert max_diff(read_image(next((tmp_path / "frames").glob("*.png")))) == 0
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from endolight.serve.app import create_app

    png = (tmp_path / "in.png").read_bytes()
    reply = TestClient(create_app(fused)).post("/api/enhance", content=png,
                                               headers={"Content-Type": "image/png"})
    assert reply.status_code == 200
    served = cv2.imdecode(np.frombuffer(reply.content, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    assert max_diff(served) == 0
    pytest.importorskip("onnxruntime")
    from endolight.export import export_model, max_abs_difference, run_onnx

    # The exact graph, within 1/255 of the PyTorch path; the default fast one is held to the
    # enhancer in test_export.py.
    model = load_model(weights)
    path = export_model(model, tmp_path / "m.onnx", graph="exact")
    assert max_diff(run_onnx(path, frame[None])[0]) <= float_tol
    assert max_abs_difference(path, model, frame, graph="exact") <= 1
