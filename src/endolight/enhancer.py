"""The one place a frame is enhanced: weights, device, field-of-view mask, strength.

Every user-facing path (``enhance``, ``eval``, ``video``, the Python API) goes through
:class:`Enhancer`; none re-implements a step of it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from endolight.checkpoint import load_model
from endolight.data import to_tensor, to_uint8
from endolight.fov import fov_mask
from endolight.io.images import validate_frame
from endolight.model import DeepUPE
from endolight.train import resolve_device


class Enhancer:
    """Restore dim, unevenly lit endoscope frames.

    Args:
        weights: a ``.safetensors`` file written by ``endolight train``; default: shipped weights.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        strength: 0 returns the input, 1 the full model (illumination ``S ** strength``).
        keep_border: leave pixels outside the field of view (black borders) untouched.
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        device: str = "auto",
        strength: float = 1.0,
        keep_border: bool = True,
        model: DeepUPE | None = None,
    ) -> None:
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        self.device = resolve_device(device)
        self.model = (model or load_model(weights)).to(self.device).eval()
        self.strength = strength
        self.keep_border = keep_border

    @torch.no_grad()
    def enhance_tensor(self, image: torch.Tensor, strength: float | None = None) -> torch.Tensor:
        """Enhance ``(B, 3, H, W)`` float in [0, 1]; returns the same shape, float in [0, 1]."""
        k = self.strength if strength is None else strength
        if k == 0.0:
            return image.clone()
        x = image.to(self.device, torch.float32)
        return self.model(x, strength=k).output.to(image.device, image.dtype)

    def enhance_array(self, image: np.ndarray, strength: float | None = None) -> np.ndarray:
        """Enhance one ``(H, W, 3)`` uint8 RGB frame; returns ``(H, W, 3)`` uint8 RGB."""
        frame = validate_frame(image)
        out = to_uint8(self.enhance_tensor(to_tensor(frame)[None], strength)[0])
        if self.keep_border:
            outside = ~fov_mask(frame)
            out[outside] = frame[outside]
        return out

    def __call__(self, image: np.ndarray | torch.Tensor, strength: float | None = None):
        """Enhance a numpy ``(H, W, 3)`` uint8 frame or a torch ``(B, 3, H, W)``/``(3, H, W)`` float
        tensor in [0, 1]; returns the same type and shape."""
        if isinstance(image, np.ndarray):
            return self.enhance_array(image, strength)
        if image.dim() == 3:
            return self.enhance_tensor(image[None], strength)[0]
        return self.enhance_tensor(image, strength)


_DEFAULT: Enhancer | None = None


def enhance(image: np.ndarray | torch.Tensor, strength: float = 1.0):
    """Enhance one frame with the shipped weights (numpy uint8 HWC or torch float tensor in,
    same type out). The model is loaded once and cached."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Enhancer()
    return _DEFAULT(image, strength)
