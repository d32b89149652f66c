"""Classical reference enhancers (no learning): each ``(H, W, 3)`` uint8 RGB -> same."""

from __future__ import annotations

import cv2
import numpy as np


def identity(image: np.ndarray) -> np.ndarray:
    """The input unchanged: the floor every method must beat."""
    return image.copy()


def auto_gamma(image: np.ndarray, target_mean: float = 0.45) -> np.ndarray:
    """Global gamma curve ``I ** g`` with ``g`` chosen so the mean brightness becomes ``target_mean``.

    Only the image itself decides ``g`` (no reference), the fair automatic form of the
    "plain global gamma" reference.
    """
    x = image.astype(np.float32) / 255
    mean = float(np.clip(x.mean(), 1e-3, 0.999))
    g = np.log(target_mean) / np.log(mean)
    lut = np.clip(np.round((np.arange(256) / 255) ** g * 255), 0, 255).astype(np.uint8)
    return cv2.LUT(image, lut)


def clahe(image: np.ndarray, clip_limit: float = 2.0, tiles: int = 8) -> np.ndarray:
    """OpenCV CLAHE on the L channel of CIELAB (colours kept, lightness equalised locally)."""
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    op = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles, tiles))
    lab[..., 0] = op.apply(np.ascontiguousarray(lab[..., 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
