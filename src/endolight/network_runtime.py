"""The low-res coefficient network run by ONNX Runtime, for the enhancer's fused CPU path.

A video stream runs the network on one thread, every frame or every other one. PyTorch runs its
16x16 convolutions on a reference path and the dilated ones on ``slow_conv_dilated2d``: 2.65 ms
a 256x256 input on this project's CPU (one thread), against 1.50 ms for the same graph in ONNX
Runtime (its MLAS kernels; the grids agree within 1e-5). The graph is exported from the model in
memory once per set of weights and kept in a cache folder (:func:`onnx_network`), and the
network stays in PyTorch where ONNX Runtime or ``onnx`` is not installed (the ``export`` extra).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from endolight.io.atomic import atomic_write

Network = Callable[[torch.Tensor], torch.Tensor]  # (1, 3, L, L) low-res frame -> grid

MAX_SESSIONS = 4  # sessions kept per process, the oldest dropped first (a few MB each)
MAX_CACHED = 16  # graphs kept in the cache folder (2.5 MB each for the shipped network)
_SESSIONS: dict[tuple[str, int], OnnxNetwork] = {}


class OnnxNetwork:
    """An ONNX graph of the network (:func:`export_graph`) as an ONNX Runtime session on one
    thread, for ``(1, 3, side, side)`` float32 inputs; called like the module (under
    ``torch.no_grad``), it returns the same tensor."""

    def __init__(self, graph: bytes, side: int) -> None:
        import onnxruntime as ort

        self.side = side
        options = ort.SessionOptions()
        # One thread that never spins: a stream's other stages need the cores.
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])

    def __call__(self, lowres: torch.Tensor) -> torch.Tensor:
        if lowres.shape != (1, 3, self.side, self.side):
            raise ValueError(f"the network takes (1, 3, {self.side}, {self.side}), got {tuple(lowres.shape)}")
        x = np.ascontiguousarray(lowres.numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {"lowres": x})[0])


def export_graph(net: nn.Module, side: int) -> bytes:
    """``net`` as an ONNX graph for ``(1, 3, side, side)`` inputs named ``lowres``."""
    from endolight.export import quiet_exporter

    graph = io.BytesIO()
    # The TorchScript-based exporter, deprecated by PyTorch but kept up to 2.14 (the pinned
    # range): it adds 40 MB to the process and takes 0.7 s, the dynamo exporter 197 MB
    # (onnxscript and torch.export stay loaded) and 3.4 s, for the same graph and numbers.
    with quiet_exporter():
        torch.onnx.export(net, (torch.zeros(1, 3, side, side),), graph, dynamo=False,
                          input_names=["lowres"], output_names=["grid"])
    return graph.getvalue()


def cache_dir() -> Path:
    """Where exported graphs are kept between processes: ``$ENDOLIGHT_CACHE``, else
    ``$XDG_CACHE_HOME/endolight``, else ``~/.cache/endolight``."""
    if os.environ.get("ENDOLIGHT_CACHE"):
        return Path(os.environ["ENDOLIGHT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "endolight"


def onnx_network(net: nn.Module, side: int) -> Network | None:
    """``net`` in ONNX Runtime (:class:`OnnxNetwork`), made once per set of weights in a process
    (two enhancers of the same weights share it; weights changed in place get their own);
    ``None`` where ONNX Runtime or the exporter is missing.

    The graph is exported once per set of weights and kept in :func:`cache_dir` (keyed by a
    hash of the weights and PyTorch's version): a later process loads it in ~0.1 s instead of
    exporting again (~0.9 s). A cache that cannot be read or written is passed over."""
    digest = _digest(net)
    key = (digest, side)
    if key not in _SESSIONS:
        path = cache_dir() / f"network-{digest}-{side}-torch{torch.__version__}.onnx"
        try:
            session = _cached_session(net, side, path)
        except (ImportError, torch.onnx.OnnxExporterError):  # no onnxruntime, or no onnx to export
            return None
        if len(_SESSIONS) >= MAX_SESSIONS:
            _SESSIONS.pop(next(iter(_SESSIONS)))
        _SESSIONS[key] = session
    return _SESSIONS[key]


def _cached_session(net: nn.Module, side: int, path: Path) -> OnnxNetwork:
    try:
        session = OnnxNetwork(path.read_bytes(), side)
    except ImportError:
        raise
    except Exception:  # noqa: BLE001 - absent, unreadable or damaged: export it again
        session = None
    if session is not None:
        with contextlib.suppress(OSError):  # a read-only cache is still read
            os.utime(path)  # used now: pruned last
        return session
    graph = export_graph(net, side)
    session = OnnxNetwork(graph, side)  # only a graph that loads is kept
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(graph))
        _prune(path.parent)
    except OSError:
        pass  # a read-only home: every process exports
    return session


def _prune(folder: Path) -> None:
    """Keep the ``MAX_CACHED`` graphs used last (evaluating many checkpoints adds one each)."""
    graphs = sorted(folder.glob("network-*.onnx"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in graphs[MAX_CACHED:]:
        old.unlink(missing_ok=True)


def _digest(net: nn.Module) -> str:
    """A hash of ``net``'s parameters and buffers, names and shapes (~2 ms for the shipped
    network)."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in net.state_dict().items():
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
