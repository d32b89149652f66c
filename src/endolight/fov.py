"""Field-of-view mask: the lit, round content area of an endoscope frame (vs. black borders)."""

from __future__ import annotations

import cv2
import numpy as np

BLACK_LEVEL = 6  # 8-bit max-channel value at or below which a border pixel counts as black


def fov_mask(image: np.ndarray, black_level: int = BLACK_LEVEL) -> np.ndarray:
    """Boolean ``(H, W)`` mask, True inside the field of view.

    The border is the set of near-black pixels connected to the frame's edge (after a median
    filter, so sensor noise does not break it up); everything else is content, including dark
    tissue enclosed by the view. A frame without such a border is all True. OpenCV does the
    filtering and the flood fill; the rule itself (edge-connected black) is endoscope-specific.

    Args:
        image: ``(H, W, 3)`` uint8 RGB.
    """
    level = cv2.medianBlur(np.ascontiguousarray(image.max(axis=2)), 5)
    black = (level <= black_level).astype(np.uint8)
    n, labels = cv2.connectedComponents(black, connectivity=8)
    if n <= 1:
        return np.ones(image.shape[:2], dtype=bool)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    edge = edge[edge > 0]
    border = np.isin(labels, edge)
    return ~border
