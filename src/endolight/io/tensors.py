"""Frame conversions between the uint8 arrays of files and video and the float tensors of the model."""

from __future__ import annotations

import numpy as np
import torch


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(3, H, W)`` float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` float in [0, 1] -> ``(H, W, 3)`` uint8, rounded."""
    arr = (image.detach().clamp(0, 1) * 255 + 0.5).to(torch.uint8)
    return arr.permute(1, 2, 0).cpu().numpy()
