"""Temporal stability for video: a smoothed illumination, and temporal noise reduction.

Per-frame enhancement flickers because the low-res network's grid (the illumination estimate)
jitters with sensor noise and small content changes even when the scene is still. The grid is
tiny (12 x D x 16 x 16), so smoothing it costs nothing and leaves the full-res detail alone:
edges and motion stay sharp, only the illumination follows slowly. A cut (a new scene, the
scope pulled out, a light switched) must not be smeared: the colour histograms of consecutive
low-res frames tell how much the scene changed, and the smoothing weight falls with that change,
to zero (a reset) at a cut.

Lifting a dark frame lifts its sensor noise, which changes from frame to frame.
:class:`TemporalDenoiser` is the motion-adaptive recursive filter of endoscope processors ("3D
noise reduction"): each output pixel is blended with the previous filtered one where the scene
is still, and left as it is where it moved, so still tissue is averaged over several frames and
a moving instrument leaves no trail. Motion is the change of the input between frames, measured
on a quarter-size copy and relative to its noise level.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from numba import njit, prange

from endolight.io.yuv import i420_planes, is_i420, shrunk_plane
from endolight.kernels.common import ROW_CHUNK, along_x, axis_taps
from endolight.kernels.planar import ALIGN, view_spans


@dataclass(frozen=True)
class TemporalConfig:
    """Tuning of :class:`GridSmoother`.

    Attributes:
        alpha: weight of the past on a still scene (exponential moving average); the grid's
            time constant is ``1 / (1 - alpha)`` frames (0.8: 5 frames, 0.2 s at 25 fps).
        cut: histogram distance (total variation, in [0, 1]) at and above which a frame starts
            a new scene; below it the past's weight falls linearly from ``alpha`` to 0.
        bins: histogram bins per colour channel.
        network_every: on a still scene the network runs on one frame in this many; the frames
            between reuse the last smoothed grid (:meth:`GridSmoother.held`; 1: every frame).
        hold: histogram changes since the previous frame below this (and below ``cut``) count
            as a still scene.

        denoise: weight of the past in :class:`TemporalDenoiser` on still pixels (0: off). 0.75
            averages ~7 frames: noise sigma / 2.6 on still tissue.
        still, moving: motion thresholds of the denoiser, in multiples of the typical (median)
            frame-to-frame change of the quarter-size input: at most ``still`` counts as noise
            (full weight), at least ``moving`` as motion (no weight), linear between.
    """

    alpha: float = 0.8
    cut: float = 0.3
    bins: int = 32
    network_every: int = 2
    hold: float = 0.05
    denoise: float = 0.75
    still: float = 2.0
    moving: float = 4.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha < 1.0:
            raise ValueError(f"alpha must be in [0, 1), got {self.alpha}")
        if self.cut <= 0.0:
            raise ValueError(f"cut must be > 0, got {self.cut}")
        if self.network_every < 1:
            raise ValueError(f"network_every must be >= 1, got {self.network_every}")
        if self.hold < 0.0:
            raise ValueError(f"hold must be >= 0, got {self.hold}")
        if not 0.0 <= self.denoise < 1.0:
            raise ValueError(f"denoise must be in [0, 1), got {self.denoise}")
        if not 0.0 < self.still < self.moving:
            raise ValueError(f"need 0 < still < moving, got {self.still}, {self.moving}")


def colour_histogram(image: torch.Tensor, bins: int = 32) -> torch.Tensor:
    """Per-channel normalised histograms of ``(B, C, H, W)`` in [0, 1] -> ``(B, C, bins)``."""
    # Contiguous, so the kernel has one signature: a stream's small copy is a strided view,
    # the warm-up's tiny frame is not, and loading the second one cost the first frame ~10 ms.
    x = np.ascontiguousarray(image.detach().float().cpu().numpy())
    counts = np.zeros((*x.shape[:2], bins), np.float32)
    _count(x, np.int64(bins), counts)
    return (torch.from_numpy(counts) / (x.shape[2] * x.shape[3])).to(image.dtype).to(image.device)


@njit(cache=True, nogil=True, error_model="numpy")
def _count(x, bins, counts):  # pragma: no cover - compiled
    """Bin ``clamp(v, 0, 1) * bins`` (the top value in the last bin): one pass, where PyTorch's
    index tensor and scatter took 1.6 ms of each video frame."""
    scale = np.float32(bins)
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            for i in range(x.shape[2]):
                for j in range(x.shape[3]):
                    k = int(min(max(x[b, c, i, j], np.float32(0.0)), np.float32(1.0)) * scale)
                    counts[b, c, min(k, bins - 1)] += 1


def histogram_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Total variation distance of ``(B, 3, bins)`` histograms, averaged over channels: ``(B,)``.

    0 for identical colour statistics, 1 for disjoint ones.
    """
    return 0.5 * (a - b).abs().sum(-1).mean(-1)


class GridSmoother:
    """Scene-cut-aware exponential smoothing of the bilateral grid, one stream at a time.

    Call it on each frame's grid and low-res input, in order; it returns the grid to render
    with. Before the network runs, :meth:`held` may offer a grid for the frame instead (the
    network then need not run). :meth:`reset` starts a new stream. ``cuts`` counts the resets
    so far (the first frame included).
    """

    def __init__(self, cfg: TemporalConfig | None = None) -> None:
        self.cfg = cfg or TemporalConfig()
        self.reset()

    def reset(self) -> None:
        self._grid: torch.Tensor | None = None
        self._hist: torch.Tensor | None = None
        self._measured: tuple[torch.Tensor, torch.Tensor] | None = None  # (lowres, its histogram)
        self._held = 0  # frames since the network last ran
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
        hist = self._histogram(lowres)
        self._held = 0
        first = self._grid is None or self._hist is None or self._grid.shape != grid.shape
        self.last_change = 1.0 if first else float(histogram_distance(hist, self._hist).max())
        if first or self.last_change >= self.cfg.cut:
            self.cuts += 1
            self._grid = grid.clone()
        else:
            self._grid = torch.lerp(grid, self._grid, self.weight(self.last_change))
        self._hist = hist
        return self._grid

    def held(self, lowres: torch.Tensor) -> torch.Tensor | None:
        """The last smoothed grid, for a frame of a still scene (a histogram change below
        ``cfg.hold``) within ``cfg.network_every`` frames of the network's last run; else
        ``None``, and the caller runs the network and calls the smoother as usual.

        The grid follows the illumination slowly anyway (its time constant is several frames),
        so reusing it on alternate frames saves the network's CPU for little change (measured in
        docs/video.md); a change in the scene always gets the network.
        """
        if self._grid is None or self._hist is None or self._held + 1 >= self.cfg.network_every:
            return None
        hist = self._histogram(lowres)
        change = float(histogram_distance(hist, self._hist).max())
        if change >= min(self.cfg.hold, self.cfg.cut):
            return None
        self._held += 1
        self._hist, self.last_change = hist, change
        return self._grid

    def _histogram(self, lowres: torch.Tensor) -> torch.Tensor:
        """The colour histogram of ``lowres``, measured once when :meth:`held` and the call
        that follows it see the same frame."""
        if self._measured is not None and self._measured[0] is lowres:
            return self._measured[1]
        hist = colour_histogram(lowres, self.cfg.bins)
        self._measured = (lowres, hist)
        return hist


SCALE = 4  # the motion map's downscale: a 4x4 average cuts the noise of the difference by 4
ONE = 128  # weights in 1/128: a weight times a difference of levels is an exact float32 integer


@njit(parallel=True, nogil=True, cache=True, error_model="numpy")
def _blend(image, prev, across, y_lo, y_w, border, spans, out):  # pragma: no cover - compiled
    """``out = prev + present / ONE * (image - prev)`` on ``(H, C)`` uint8 rows, rounded half
    away from zero (no drift up or down). ``present`` is the weight map, already interpolated
    along x (``across``, ``(h, C)`` float32), interpolated here along y (row ``r`` reads rows
    ``y_lo[r]`` and the next at weight ``y_w[r]``), rounded, and raised to ``border``
    (``(H, C)`` uint8; ``(0, 0)``: none). No frame-sized weight buffer is made. The integer
    arithmetic runs in float32 lanes, exactly (every value is an integer below 2**24; the
    division by ONE is by a power of two): numba widens int16 arithmetic to int64, which kept
    this loop from vectorising (measured: the filter 2.2 -> 1.9 CPU-ms a 1080p frame, output
    byte-identical).

    ``spans`` (``(H, 3)`` int64, or ``(0, 3)``: none): per row the columns ``[a, b)`` inside the
    view and whether a border pixel lies among them; the row is blended there (over whole runs
    of ``ALIGN`` columns) and is the present outside (what a border weight of ONE gives), and
    ``border`` is read only on the rows with such a pixel."""
    hl = across.shape[0]
    use_border = border.shape[0] == image.shape[0]
    use_spans = spans.shape[0] == image.shape[0]
    one, zero = np.float32(1.0), np.float32(0.0)
    n = image.shape[1]
    # A work item is ROW_CHUNK rows sharing one scratch row: with one made per row the filter
    # took 5.05-5.22 against 4.67-5.00 CPU-ms a 1080p frame (one thread, 20 real frames).
    for c in prange(-(-image.shape[0] // ROW_CHUNK)):
        present = np.empty(n, np.float32)
        for y in range(c * ROW_CHUNK, min(c * ROW_CHUNK + ROW_CHUNK, image.shape[0])):
            a, b, holes = 0, n, use_border
            if use_spans:
                a, b, holes = spans[y, 0], spans[y, 1], use_border and spans[y, 2] != 0
            va, vb = np.uint64(a), np.uint64(b)
            # Unsigned bounds: no negative-index checks, vectorised loops.
            ua, ub = np.uint64((a // ALIGN) * ALIGN), np.uint64(min(-(-b // ALIGN) * ALIGN, n))
            if a >= b:
                ua = ub
            r0, fy = y_lo[y], y_w[y]
            r1 = min(r0 + 1, hl - 1)
            a0, a1 = across[r0], across[r1]
            for i in range(ua, ub):
                present[i] = np.float32(np.int32((one - fy) * a0[i] + fy * a1[i] + np.float32(0.5)))
            if holes:
                edge = border[y]
                for i in range(va, vb):
                    present[i] = max(present[i], np.float32(edge[i]))
            src, past, o = image[y], prev[y], out[y]
            for i in range(ua, ub):
                p = np.float32(past[i])
                d = np.float32(src[i]) - p
                q = np.int32((present[i] * abs(d) + np.float32(ONE // 2)) * np.float32(1.0 / ONE))
                o[i] = np.uint8(np.int32(p) + (q if d >= zero else -q))
            if use_spans:  # outside the view: the present
                for i in range(min(va, vb)):
                    o[i] = src[i]
                for i in range(vb, np.uint64(n)):
                    o[i] = src[i]


_NO_SPANS = np.zeros((0, 3), np.int64)
_NONE = np.zeros((0, 0), np.uint8)


def _across(weight: np.ndarray, width: int, per_pixel: int = 1) -> np.ndarray:
    """The ``(h, w)`` uint8 weight map interpolated along x to ``width`` pixels of ``per_pixel``
    values each (3 for RGB): ``(h, width * per_pixel)`` float32, for :func:`_blend`."""
    across = along_x(weight[None].astype(np.float32), width)[0]
    return np.repeat(across, per_pixel, axis=1) if per_pixel > 1 else across


def _median(levels: np.ndarray) -> float:
    """``np.median`` of uint8 values from their histogram (no sort or partition: 10x faster)."""
    cum = np.cumsum(np.bincount(levels.ravel(), minlength=256))
    n = int(cum[-1])
    if n == 0:
        return float("nan")
    upper = int(np.searchsorted(cum, n // 2 + 1))  # the (n // 2)-th value, counted from 0
    lower = upper if n % 2 else int(np.searchsorted(cum, n // 2))
    return (lower + upper) / 2


def _border_weights(view: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ONE outside ``view`` (0 inside), at full and at chroma resolution (a 2x2 block is border
    when all its pixels are), uint8."""
    h, w = view.shape
    outside = ~view
    # The four pixels of each block as strided views (a reduction over a reshaped array's
    # axes took ~10 ms at 720p).
    blocks = outside[0:h - 1:2, 0:w - 1:2] & outside[0:h - 1:2, 1::2]
    blocks &= outside[1::2, 0:w - 1:2] & outside[1::2, 1::2]
    return outside.astype(np.uint8) * np.uint8(ONE), blocks.astype(np.uint8) * np.uint8(ONE)


def _borders(view: np.ndarray, spans: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """The border of ``view`` as the filter reads it: :func:`_border_weights`, and for an even
    height :func:`_blend`'s spans per luma row and per chroma row of an I420 frame (from
    ``view_spans``: outside a block row's span every block is border; inside, only where it
    counts a border pixel). Blending only inside the view, the border weights read only on such
    rows: the filter 4.1-4.3 -> 3.6-3.7 CPU-ms a 1080p frame with the benchmark clip's border.
    ``spans``: ``view_spans(~view)`` when the caller has them (1.6 ms at 1080p)."""
    border, border_c = _border_weights(view)
    h = view.shape[0]
    if h % 2:
        return border, border_c, _NO_SPANS, _NO_SPANS
    spans = view_spans(~view) if spans is None else spans
    luma = np.empty((h, 3), np.int64)
    luma[0::2, :2], luma[1::2, :2] = spans[:, 2:4], spans[:, 4:6]
    luma[0::2, 2] = luma[1::2, 2] = spans[:, 6]
    return border, border_c, luma, np.stack([spans[:, 0] // 2, spans[:, 1] // 2, spans[:, 6]], axis=1)


def _within(spans: np.ndarray) -> np.ndarray:
    """Row spans that read the border weights on every row: valid for any border that holds
    the spans' own (a smaller view's)."""
    spans = spans.copy()
    spans[:, 2] = 1
    return spans


class TemporalDenoiser:
    """Motion-adaptive recursive noise reduction of an enhanced stream, one stream at a time.

    Call it on each ``(input, output)`` pair of uint8 frames, in order; it returns the filtered
    output. The weight of the past per pixel is ``cfg.denoise`` where the input did not change
    beyond its noise since the previous frame, falling to 0 where it did (motion, a cut, a
    change of light), so nothing moving is smeared. The noise level is the median change of the
    quarter-size input inside the view, followed over time (it may rise by at most a fifth a
    frame: a frame where most of the view moves does not pass for noise).
    """

    def __init__(self, cfg: TemporalConfig | None = None) -> None:
        self.cfg = cfg or TemporalConfig()
        self.reset()

    def reset(self) -> None:
        self._small: np.ndarray | None = None
        self._prev: np.ndarray | None = None
        self._fov: tuple[np.ndarray | None, ...] = (None,)
        self.noise = 0.0  # the followed median change (levels of the quarter-size luma)

    def _present_weight(self, small: np.ndarray, view: np.ndarray | None) -> np.ndarray:
        """Weight of the present per quarter-size (uint8) pixel, in 1/ONE (uint8)."""
        cfg = self.cfg
        diff = cv2.absdiff(small, self._small)  # uint8 levels
        inside = diff[view] if view is not None and view.any() else diff
        level = max(_median(inside[::2]), 0.25)  # a noiseless (synthetic) clip: a floor
        self.noise = level if self.noise == 0.0 else min(level, 1.2 * self.noise)
        # The weight of each change level (a table: two passes over the map instead of ~10).
        levels = np.arange(256, dtype=np.float32)
        still = np.clip((cfg.moving - levels / np.float32(self.noise)) / (cfg.moving - cfg.still), 0.0, 1.0)
        weight = cv2.LUT(diff, (ONE * (1.0 - cfg.denoise * still) + 0.5).astype(np.uint8))
        # Motion reaches one quarter-size pixel further, so the upsampled weight is full all over a
        # moved part's full-size edge instead of blending across it. The weight falls as the
        # stillness rises, so its 3x3 maximum is the stillness's 3x3 minimum, exactly.
        return cv2.dilate(weight, np.ones((3, 3), np.uint8))

    def _masks(self, fov: np.ndarray, size: tuple[int, int],
               spans: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        """The view at the motion map's size, and the border as weights (ONE: no past) at full
        and at chroma resolution with its spans (:func:`_borders`): derived once per mask (a
        stream's mask changes only at its first frames and cuts).

        On the frame where the mask changes, what was border before gets no past either: the
        filter's memory there is the unenhanced border, which would darken the ring a view has
        just grown by (measured ~60 levels on a still scene, tests/test_temporal.py). That frame
        reads the border of the two views' intersection within the new view's spans (the
        intersection's own spans would cost another 1.6 ms at 1080p; the output is the same)."""
        if self._fov[0] is fov:
            return self._fov[1:]
        previous = self._fov[0]
        self._fov = (fov, cv2.resize(fov.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0,
                     *_borders(fov, spans))
        view, _, _, luma, chroma = self._fov[1:]
        if previous is not None and previous.shape == fov.shape:
            return view, *_border_weights(fov & previous), _within(luma), _within(chroma)
        return self._fov[1:]

    def __call__(self, frame: np.ndarray, out: np.ndarray, fov: np.ndarray | None = None,
                 shrunk: np.ndarray | None = None, fov_spans: np.ndarray | None = None) -> np.ndarray:
        """Filtered output, in the layout of ``out``. It is also the filter's memory of the past:
        do not modify it in place.

        Args:
            frame: the input frame, where motion is measured: ``(H, W, 3)`` uint8 RGB, or the
                ``(3H/2, W)`` I420 planes (:mod:`endolight.io.yuv`) when ``out`` is I420.
            out: the enhanced frame to filter, RGB or I420.
            fov: ``(H, W)`` bool field of view; pixels outside it pass through from ``out``
                (the border), and the noise level is measured inside it.
            shrunk: the I420 input's Y′ already area-averaged to the motion map's size (``(H/4,
                W/4)`` rounded up, float32 levels; video's small copy makes it, ~0.4 CPU-ms a
                1080p frame spared); made here when absent or of another size.
            fov_spans: ``kernels.planar.view_spans(~fov)`` when the caller has them (the planar
                path's plan keeps them), for a mask the filter has not seen.
        """
        planar = is_i420(out)
        luma = i420_planes(frame)[0] if planar else cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        h, w = luma.shape
        size = (max(2, -(-w // SCALE)), max(2, -(-h // SCALE)))
        if shrunk is None or not planar or shrunk.shape != size[::-1]:
            shrunk = shrunk_plane(luma, size)
        small = np.rint(shrunk).astype(np.uint8)  # as OpenCV's uint8 resize
        if self._small is None or self._small.shape != small.shape or self._prev.shape != out.shape:
            self._small, self._prev = small, out  # a new stream: no past
            return out
        view, border, border_c, spans, spans_c = (self._masks(fov, size, fov_spans) if fov is not None else
                                                  (None, None, None, _NO_SPANS, _NO_SPANS))
        weight = self._present_weight(small, view)
        result = np.empty_like(out)
        if planar:
            # One weight per plane sample: luma at full size, chroma at a quarter.
            across = (_across(weight, w), *(2 * [_across(weight, w // 2)]))
            borders = (_NONE, _NONE, _NONE) if border is None else (border, border_c, border_c)
            planes = zip(i420_planes(out), i420_planes(self._prev), i420_planes(result), strict=True)
            for (plane, past, filtered), row_weights, edge, row_spans in zip(
                    planes, across, borders, (spans, spans_c, spans_c), strict=True):
                _blend(plane, past, row_weights, *axis_taps(plane.shape[0], small.shape[0]), edge, row_spans,
                       filtered)
        else:
            edge = _NONE if border is None else np.repeat(border, 3, axis=1)
            _blend(out.reshape(h, -1), self._prev.reshape(h, -1), _across(weight, w, 3),
                   *axis_taps(h, small.shape[0]), edge, _NO_SPANS, result.reshape(h, -1))
        self._small, self._prev = small, result
        return result
