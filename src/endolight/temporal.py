"""Temporal stability for video: smooth the bilateral grid over time, reset at scene cuts.

Per-frame enhancement flickers because the low-res network's grid (the illumination estimate)
jitters with sensor noise and small content changes even when the scene is still. The grid is
tiny (12 x D x 16 x 16), so smoothing it costs nothing and leaves the full-res detail alone:
edges and motion stay sharp, only the illumination follows slowly. A cut (a new scene, the
scope pulled out, a light switched) must not be smeared: the colour histograms of consecutive
low-res frames tell how much the scene changed, and the smoothing weight falls with that change,
to zero (a reset) at a cut.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TemporalConfig:
    """Tuning of :class:`GridSmoother`.

    Attributes:
        alpha: weight of the past on a still scene (exponential moving average); the grid's
            time constant is ``1 / (1 - alpha)`` frames (0.8: 5 frames, 0.2 s at 25 fps).
        cut: histogram distance (total variation, in [0, 1]) at and above which a frame starts
            a new scene; below it the past's weight falls linearly from ``alpha`` to 0.
        bins: histogram bins per colour channel.
    """

    alpha: float = 0.8
    cut: float = 0.3
    bins: int = 32

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha < 1.0:
            raise ValueError(f"alpha must be in [0, 1), got {self.alpha}")
        if self.cut <= 0.0:
            raise ValueError(f"cut must be > 0, got {self.cut}")


def colour_histogram(image: torch.Tensor, bins: int = 32) -> torch.Tensor:
    """Per-channel normalised histograms of ``(B, 3, H, W)`` in [0, 1] -> ``(B, 3, bins)``."""
    idx = (image.clamp(0, 1) * bins).long().clamp_max(bins - 1).flatten(2)  # (B, 3, H*W)
    hist = torch.zeros(*idx.shape[:2], bins, dtype=image.dtype, device=image.device)
    hist.scatter_add_(2, idx, torch.ones_like(idx, dtype=image.dtype))
    return hist / idx.shape[-1]


def histogram_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Total variation distance of ``(B, 3, bins)`` histograms, averaged over channels: ``(B,)``.

    0 for identical colour statistics, 1 for disjoint ones.
    """
    return 0.5 * (a - b).abs().sum(-1).mean(-1)


class GridSmoother:
    """Scene-cut-aware exponential smoothing of the bilateral grid, one stream at a time.

    Call it on each frame's grid and low-res input, in order; it returns the grid to render
    with. :meth:`reset` starts a new stream. ``cuts`` counts the resets so far (the first frame
    included).
    """

    def __init__(self, cfg: TemporalConfig | None = None) -> None:
        self.cfg = cfg or TemporalConfig()
        self.reset()

    def reset(self) -> None:
        self._grid: torch.Tensor | None = None
        self._hist: torch.Tensor | None = None
        self.cuts = 0
        self.last_change = 0.0

    def weight(self, change: float) -> float:
        """Weight of the past for a histogram ``change`` since the previous frame."""
        return self.cfg.alpha * max(0.0, 1.0 - change / self.cfg.cut)

    def __call__(self, grid: torch.Tensor, lowres: torch.Tensor) -> torch.Tensor:
        """Smoothed grid.

        Args:
            grid: ``(1, 12, D, Gh, Gw)`` the network's grid for this frame.
            lowres: ``(1, 3, h, w)`` in [0, 1], the low-res frame the grid came from.
        """
        hist = colour_histogram(lowres, self.cfg.bins)
        first = self._grid is None or self._hist is None or self._grid.shape != grid.shape
        self.last_change = 1.0 if first else float(histogram_distance(hist, self._hist).max())
        if first or self.last_change >= self.cfg.cut:
            self.cuts += 1
            self._grid = grid.clone()
        else:
            self._grid = torch.lerp(grid, self._grid, self.weight(self.last_change))
        self._hist = hist
        return self._grid
