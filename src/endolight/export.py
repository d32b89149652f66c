"""Deployment export: one self-contained model from a uint8 frame to the enhanced uint8 frame.

The exported graph is the whole pipeline (resize to the low-res input, coefficient network, guide
map, slicing, denoising, affine, ``R = D / S``, rounding), so a device team feeds camera frames
straight in. Two graphs (``GRAPHS``):

* ``"fast"`` (default for grey-illumination models): the guide, the slice and the denoiser's
  coefficients on a 1/8 copy, upsampled as maps, and a few operations per full-resolution pixel
  (:mod:`endolight.model.maps`, the design of the planar video path). On RGB frames eleven maps
  per pixel; on I420 buffers (``layout="i420"``) three on the luma and the chroma at a quarter:
  real time at 1080p in ONNX Runtime on 2 CPU cores. Measured against the exact graph on real
  frames (``tests/test_export.py``, docs/deploy.md).
* ``"exact"``: ``DeepUPE(deploy=True)``, every pixel sliced: the guide through lookup tables and
  the slice as row interpolation plus gathers (ONNX Runtime runs 5-D ``GridSample`` at ~1.9 s
  per 1080p frame on 2 CPU cores); within 1/255 of :class:`~endolight.Enhancer`, about a second
  per 1080p frame in ONNX Runtime.

Either file is within 1/255 of its PyTorch twin (:class:`FrameModel`). ONNX opset 20.

Interface (both formats):

* input ``frame``: uint8, ``(N, H, W, 3)`` RGB for ``layout="nhwc"`` (what OpenCV/PyAV give) or
  ``(N, 3, H, W)`` for ``layout="nchw"``; ``N``, ``H`` and ``W`` are dynamic.
* output ``enhanced``: uint8, same shape and layout as ``frame``.

The field-of-view border mask of :class:`endolight.Enhancer` (``keep_border``) is not part of the
graph (it is a connected-component flood fill); the export matches ``Enhancer(keep_border=False)``.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from endolight.io.atomic import atomic_write
from endolight.io.images import MIN_SIDE
from endolight.model import DeepUPE
from endolight.model.config import FITS_MAPS
from endolight.model.denoise import half_mean, shrink
from endolight.model.maps import i420_maps, render_i420, render_maps, rgb_maps

INPUT_NAME = "frame"
OUTPUT_NAME = "enhanced"
ONNX_OPSET = 20  # the opset the project exports and tests
FORMATS = ("onnx", "torchscript")
LAYOUTS = ("nhwc", "nchw", "i420")
GRAPHS = ("fast", "exact")

Format = Literal["onnx", "torchscript"]
Layout = Literal["nhwc", "nchw", "i420"]
Graph = Literal["fast", "exact"]


class FrameModel(nn.Module):
    """uint8 frame in, enhanced uint8 frame out: :class:`DeepUPE` wrapped for deployment.

    Args:
        model: the trained network.
        layout: ``"nhwc"`` for ``(N, H, W, 3)`` RGB frames, ``"nchw"`` for ``(N, 3, H, W)``,
            ``"i420"`` for ``(N, 3H/2, W)`` Y′CbCr 4:2:0 buffers (BT.601 limited range, as
            :mod:`endolight.io.yuv`; even ``H`` and ``W``; fast graph only).
        strength: illumination strength baked into the graph (0 returns the input, 1 full).
        graph: ``"fast"`` (low-res maps) or ``"exact"`` (every pixel sliced; ``deploy`` picks
            the gathers ONNX runs fast over ``grid_sample``).
    """

    def __init__(self, model: DeepUPE, layout: Layout = "nhwc", strength: float = 1.0,
                 graph: Graph = "fast", deploy: bool = True) -> None:
        super().__init__()
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
        if graph not in GRAPHS:
            raise ValueError(f"graph must be one of {GRAPHS}, got {graph!r}")
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        if graph == "fast" and not model.cfg.fits_maps:
            raise ValueError(f"the fast graph needs {FITS_MAPS}; use graph='exact'")
        if layout == "i420" and graph != "fast":
            raise ValueError("the i420 layout has the fast graph only")
        self.model = model.eval()
        self.layout = layout
        self.strength = strength
        self.graph = graph
        self.deploy = deploy

    def forward(self, frame: torch.Tensor) -> torch.Tensor:
        if self.graph == "fast":
            return self._fast(frame)
        x = frame.permute(0, 3, 1, 2) if self.layout == "nhwc" else frame
        out = self.model(x.float() / 255, strength=self.strength, deploy=self.deploy).output
        # Same rounding as endolight.data.to_uint8; floor makes the uint8 cast exact in any runtime.
        out = torch.floor(out * 255 + 0.5).to(torch.uint8)
        return out.permute(0, 2, 3, 1) if self.layout == "nhwc" else out

    def _fast(self, frame: torch.Tensor) -> torch.Tensor:
        if self.layout == "i420":
            return self._i420(frame)
        # Colour planes taken by index, never by a transpose: ONNX Runtime's layout optimiser
        # would push a transpose into the per-pixel products (see render_maps).
        nhwc = self.layout == "nhwc"
        planes = [(frame[..., k].unsqueeze(1) if nhwc else frame[:, k:k + 1]).float() for k in range(3)]
        # Each plane halved on its own (no full-resolution concatenation): one full-resolution read.
        half = torch.cat([shrink(p, 2) for p in planes], dim=1) / 255  # 8-bit levels until here
        maps = rgb_maps(self.model, half, self.strength)
        rendered = render_maps(maps, planes, self.strength, self.model.cfg.guide_blur,
                               self.model.cfg.black_offset, self.model.chroma_gains(),
                               self.model.cfg.guide_lee)
        out = [torch.floor(p + 0.5).to(torch.uint8) for p in rendered]
        return torch.stack([p[:, 0] for p in out], dim=-1) if nhwc else torch.cat(out, dim=1)

    def _i420(self, frame: torch.Tensor) -> torch.Tensor:
        n, rows, w = frame.shape
        h = rows // 3 * 2
        y = frame[:, :h].unsqueeze(1).float()
        uv = frame[:, h:].reshape(n, 2, h // 2, w // 2).float()  # the Cb plane, then Cr
        y2 = half_mean(y)
        luma, chroma = i420_maps(self.model, y2, uv, self.strength)
        y_out, uv_out = render_i420(luma, chroma, y, y2, uv, self.strength, self.model.cfg.guide_blur,
                                     self.model.cfg.black_offset, self.model.chroma_gains(),
                                     self.model.cfg.guide_lee)
        return torch.cat([y_out.to(torch.uint8).reshape(n, h, w),
                          uv_out.to(torch.uint8).reshape(n, h // 2, w)], dim=1)


def default_graph(model: DeepUPE) -> Graph:
    """``"fast"`` where the maps hold the model (``ModelConfig.fits_maps``), else ``"exact"``."""
    return "fast" if model.cfg.fits_maps else "exact"


def example_frame(
    layout: Layout = "nhwc", height: int = 240, width: int = 320, seed: int = 0, batch: int = 1
) -> torch.Tensor:
    """Random uint8 frames ``(batch, ...)`` of the given layout, for tracing and parity checks."""
    gen = torch.Generator().manual_seed(seed)
    if layout == "i420":
        return torch.randint(0, 256, (batch, height * 3 // 2, width), dtype=torch.uint8, generator=gen)
    frame = torch.randint(0, 256, (batch, height, width, 3), dtype=torch.uint8, generator=gen)
    return frame if layout == "nhwc" else frame.permute(0, 3, 1, 2).contiguous()


def export_model(
    model: DeepUPE,
    path: str | Path,
    fmt: Format = "onnx",
    layout: Layout = "nhwc",
    strength: float = 1.0,
    graph: Graph | None = None,
) -> Path:
    """Write ``model`` as a frame-to-frame ONNX (opset 20) or TorchScript file, atomically.

    ``graph`` defaults to ``"fast"`` where ``ModelConfig.fits_maps`` and ``"exact"`` otherwise
    (the fast graph's maps assume one illumination for the three channels, sigmoid curve).

    Raises:
        ValueError: unknown format, layout or graph, strength outside [0, 1], the fast graph
            of a model it does not fit.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    # The exact ONNX graph gets gathers and lookup tables (fast in ONNX Runtime); TorchScript
    # keeps grid_sample, which libtorch runs well and whose trace keeps the frame size dynamic.
    graph = graph or default_graph(model)
    wrapped = FrameModel(copy.deepcopy(model).cpu(), layout, strength, graph, deploy=fmt == "onnx").eval()
    example = example_frame(layout, batch=2)  # torch.export would freeze a batch of 1
    dest = Path(path)
    atomic_write(dest, partial(_export_onnx if fmt == "onnx" else _export_torchscript, wrapped, example))
    return dest


def _export_onnx(wrapped: FrameModel, example: torch.Tensor, path: str) -> None:
    batch = torch.export.Dim("N", min=1)
    if wrapped.layout == "i420":  # (N, 3H/2, W): H and W even
        half_h, half_w = (torch.export.Dim(name, min=MIN_SIDE // 2) for name in ("H_2", "W_2"))
        dims = {0: batch, 1: 3 * half_h, 2: 2 * half_w}
    else:
        h_axis, w_axis = (1, 2) if wrapped.layout == "nhwc" else (2, 3)
        dims = {0: batch, h_axis: torch.export.Dim("H", min=MIN_SIDE),
                w_axis: torch.export.Dim("W", min=MIN_SIDE)}
    with quiet_exporter():
        torch.onnx.export(
            wrapped, (example,), path, dynamo=True, opset_version=ONNX_OPSET, verbose=False,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_shapes={INPUT_NAME: dims}, external_data=False,
        )


@contextmanager
def quiet_exporter() -> Iterator[None]:
    """``torch.onnx.export`` without its messages, under ``torch.no_grad``. The exporter warns
    about its own internals (optional torchvision ops, pytree deprecations); none concern our
    graphs, and the library does not print."""
    registry_log = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registry_log.level
    registry_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.simplefilter("ignore", category=DeprecationWarning)  # the TorchScript exporter's
            yield
    finally:
        registry_log.setLevel(level)


def _export_torchscript(wrapped: FrameModel, example: torch.Tensor, path: str) -> None:
    # torch.jit is deprecated in favour of torch.export, but TorchScript is still what C++
    # (libtorch) deployments load. Tracing records sizes symbolically, so H and W stay dynamic;
    # the one shape test it freezes (skip the resize when the frame is already low-res) is
    # harmless: an antialiased resize to the same size is the identity.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        with torch.no_grad():
            traced = torch.jit.trace(wrapped, (example,), strict=False)
    traced.save(path)


def run_onnx(path: str | Path, frame: np.ndarray) -> np.ndarray:
    """Run an exported ONNX file with ONNX Runtime (CPU) on one uint8 frame batch."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run([OUTPUT_NAME], {INPUT_NAME: frame})[0]


def max_abs_difference(path: str | Path, model: DeepUPE, frame: np.ndarray, fmt: Format = "onnx",
                       layout: Layout = "nhwc", strength: float = 1.0, graph: Graph | None = None) -> int:
    """Largest difference, in 8-bit levels, between an exported file and PyTorch.

    Args:
        frame: one ``(H, W, 3)`` uint8 RGB frame (converted to the layout's I420 buffer for
            ``"i420"``); the reference is, for the fast graph, its PyTorch twin
            (:class:`FrameModel`) and for the exact one (``graph`` as in :func:`export_model`)
            ``Enhancer(model=model, strength=strength, keep_border=False)`` on it.
    """
    from endolight.enhancer import Enhancer
    from endolight.io.yuv import rgb_to_i420

    if layout == "i420":
        batch = rgb_to_i420(frame)
    else:
        batch = frame.transpose(2, 0, 1) if layout == "nchw" else frame
    batch = np.ascontiguousarray(batch[None])
    if fmt == "onnx":
        got = run_onnx(path, batch)[0]
    else:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", category=DeprecationWarning)  # torch.jit, see above
            got = torch.jit.load(str(path))(torch.from_numpy(batch)).numpy()[0]
    if (graph or default_graph(model)) == "fast":
        with torch.no_grad():
            # A copy: FrameModel puts its model in eval mode, and the caller's stays as it was.
            twin = FrameModel(copy.deepcopy(model).cpu(), layout, strength, "fast")
            ref = twin(torch.from_numpy(batch))[0].numpy()
    else:
        # fused=False: the PyTorch graph itself, not the CPU kernel (also within 1/255).
        ref = Enhancer(model=model, device="cpu", strength=strength, keep_border=False,
                       fused=False).enhance_array(frame)
        got = got if layout == "nhwc" else got.transpose(1, 2, 0)
    if got.shape != ref.shape or got.dtype != np.uint8:
        raise ValueError(f"exported model returned {got.dtype} {got.shape}, expected uint8 {ref.shape}")
    return int(np.abs(got.astype(np.int16) - ref.astype(np.int16)).max())
