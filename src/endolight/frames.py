"""Usable frames of a user's own footage (``endolight adapt``): well exposed, sharp, distinct.

A well-lit frame becomes a training target, so it must be one: not dark (that is what the model
restores), not blown out, not blurred (motion or defocus), and not a near-copy of the frame kept
before it (a clip's consecutive frames teach nothing new and would make the held-out frames
near-copies of training frames). Every measure is taken inside the field of view, on a copy
shrunk to a fixed size, so the thresholds do not depend on the footage's resolution.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import cv2
import numpy as np

from endolight.fov import fov_mask
from endolight.io.sources import Frame

ANALYSIS_SIDE = 384  # longer side of the copy every measure is taken on
FOV_SIDE = 128  # the field of view is found on a smaller copy still (8 ms instead of 55)
THUMB_SIDE = 64  # near-duplicates are compared on grey thumbnails this size

# Drop reasons, in the order they are tested.
TOO_DARK, OVEREXPOSED, BLURRED, DUPLICATE, THINNED = (
    "too dark", "overexposed", "blurred", "near-duplicate", "thinned to --max-frames")


@dataclass(frozen=True)
class FrameCriteria:
    """Thresholds of a usable frame. Set on the project's data (docs/adapt.md): every
    well-exposed set has a mean view luma of 0.22-0.71 and a sharpness of 13-1600; a Gaussian
    blur of 2 px at the analysis size brings every set under 27."""

    min_luma: float = 0.18  # mean luma (0-1) inside the view
    max_luma: float = 0.85
    max_clipped: float = 0.2  # fraction of the view at white (luma > 0.98)
    min_sharpness: float = 12.0  # variance of the Laplacian of the luma (x 1e4) inside the view
    rel_sharpness: float = 0.25  # ...and at least this fraction of the footage's median
    min_change: float = 0.03  # mean |difference| of grey thumbnails vs the last frame kept


@dataclass(frozen=True)
class FrameStats:
    luma: float
    clipped: float
    sharpness: float
    thumb: np.ndarray  # (h, w) float32 grey thumbnail


@dataclass
class KeptFrame:
    index: int  # position in the footage
    time: float  # seconds
    image: np.ndarray  # (H, W, 3) uint8 RGB, shrunk to the selection's max_side
    sharpness: float


@dataclass
class Selection:
    """The usable frames, in footage order, and why every other frame was dropped."""

    kept: list[KeptFrame]
    total: int
    dropped: Counter = field(default_factory=Counter)

    def summary(self) -> str:
        """E.g. ``kept 48 of 1500 frames (dropped: 1200 near-duplicate, 30 blurred)``."""
        why = ", ".join(f"{n} {reason}" for reason, n in self.dropped.most_common())
        return f"kept {len(self.kept)} of {self.total} frames" + (f" (dropped: {why})" if why else "")


def _shrink(image: np.ndarray, side: int) -> np.ndarray:
    h, w = image.shape[:2]
    if max(h, w) <= side:
        return image
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def frame_stats(image: np.ndarray) -> FrameStats:
    """Exposure, clipping and sharpness inside the field of view of one ``(H, W, 3)`` uint8 frame."""
    small = _shrink(image, ANALYSIS_SIDE)
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255
    view = fov_mask(_shrink(small, FOV_SIDE)).astype(np.uint8)
    view = cv2.resize(view, grey.shape[::-1], interpolation=cv2.INTER_NEAREST)
    # The view's own edge is the sharpest thing in an endoscope frame: measure well inside it.
    inner = cv2.erode(view, np.ones((9, 9), np.uint8)).astype(bool)
    lap = cv2.Laplacian(grey, cv2.CV_32F, ksize=3)
    inside = grey[view.astype(bool)] if view.any() else grey.ravel()
    return FrameStats(
        luma=float(inside.mean()),
        clipped=float((inside > 0.98).mean()),
        sharpness=float(lap[inner].var() * 1e4) if inner.any() else 0.0,
        thumb=_shrink(grey, THUMB_SIDE),
    )


def _rejection(stats: FrameStats, last_thumb: np.ndarray | None, crit: FrameCriteria) -> str | None:
    if stats.luma < crit.min_luma:
        return TOO_DARK
    if stats.luma > crit.max_luma or stats.clipped > crit.max_clipped:
        return OVEREXPOSED
    if stats.sharpness < crit.min_sharpness:
        return BLURRED
    if (last_thumb is not None and last_thumb.shape == stats.thumb.shape
            and float(np.abs(stats.thumb - last_thumb).mean()) < crit.min_change):
        return DUPLICATE
    return None


def select_frames(
    frames: Iterable[Frame],
    max_side: int,
    max_frames: int | None = None,
    criteria: FrameCriteria | None = None,
    on_frame: Callable[[int], None] | None = None,
) -> Selection:
    """Keep the usable frames of a footage, shrunk to ``max_side``, in footage order.

    Frames failing a threshold of ``criteria`` are dropped, then those much blurrier than the
    footage's median (motion blur in a sharp clip), then, beyond ``max_frames``, frames evenly
    spread in time are kept. ``on_frame(n)`` is called after each frame read.
    """
    crit = criteria or FrameCriteria()
    kept: list[KeptFrame] = []
    dropped: Counter = Counter()
    last_thumb, total = None, 0
    for frame in frames:
        total += 1
        stats = frame_stats(frame.image)
        reason = _rejection(stats, last_thumb, crit)
        if reason:
            dropped[reason] += 1
        else:
            kept.append(KeptFrame(frame.index, frame.time, _shrink(frame.image, max_side), stats.sharpness))
            last_thumb = stats.thumb
        if on_frame:
            on_frame(total)
    if kept:
        floor = crit.rel_sharpness * float(np.median([k.sharpness for k in kept]))
        sharp = [k for k in kept if k.sharpness >= floor]
        if len(sharp) < len(kept):
            dropped[BLURRED] += len(kept) - len(sharp)
        kept = sharp
    if max_frames and len(kept) > max_frames:
        picks = np.unique(np.linspace(0, len(kept) - 1, max_frames).round().astype(int))
        dropped[THINNED] += len(kept) - len(picks)
        kept = [kept[i] for i in picks]
    return Selection(kept, total, dropped)
