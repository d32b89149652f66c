"""Enhancement on the decoder's own Y′CbCr 4:2:0 planes: video without full-resolution RGB.

A decoder delivers Y′ at full resolution and Cb, Cr at a quarter, and the encoder takes the same.
This path never builds the full-res RGB frame: it shrinks the planes to the denoiser's fitting
size (``1 / cfg.denoise_factor``) and converts only that small copy to RGB. There the guided
filter is fitted; the guide, the grid slice and the denoising strength are computed at half
that size again (``COARSEN``); together they become low-res maps (:func:`planar_maps`). The
network's own input is shrunk from the planes. The planar kernel (:mod:`endolight.kernels.planar`)
interpolates the maps and applies them per pixel: a few operations per luma pixel, fewer per
chroma pixel. :func:`plan_planes` and :func:`render_plan` are the two
halves (video runs them in two threads).

What differs from the RGB reference (``DeepUPE.render``): the guide and slice are evaluated on the
low-res frame and interpolated (the affine rows are applied to each full-res pixel, so edges stay
sharp), the denoising strength likewise, and chroma is handled per 2x2 block. The test suite
holds it to the RGB path on real frames (``tests/test_planar.py``). BT.601 limited range, the
convention of the rest of the video path (decoded RGB, the written stream's tag).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from endolight.border import border_fill_planes
from endolight.io.yuv import i420_planes, shrunk_planes, ycc_to_rgb
from endolight.kernels.fused import GuideParams
from endolight.kernels.planar import guided_fit, map_terms, render_planes, slice_lowres
from endolight.model import DeepUPE
from endolight.model.config import FITS_MAPS
from endolight.model.denoise import lowres_size
from endolight.model.slicing import EPS, grey_grid
from endolight.network_runtime import Network
from endolight.temporal import GridSmoother

# (grid (1, C, D, Gh, Gw), the frame as the filter sees it (1, 3, h, w)) -> grid, e.g.
# temporal.GridSmoother (which measures the change between frames on it)
GridFilter = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def filtered_grid(network: Network, make_input: Callable[[], torch.Tensor], seen: torch.Tensor,
                  grid_filter: GridFilter | None) -> torch.Tensor:
    """The grid ``network`` (a model's ``coeffs`` or its :mod:`~endolight.network_runtime` twin)
    makes of its input, through ``grid_filter``; a smoother that holds a grid for this frame
    (:meth:`GridSmoother.held`) spares the network, and ``make_input`` is called only when the
    network runs. ``seen`` is the copy of the frame ``grid_filter`` sees: the same kind of copy
    on every frame of a stream (the network's input on the RGB path, :func:`seen_copy` here)."""
    if isinstance(grid_filter, GridSmoother):
        held = grid_filter.held(seen)
        if held is not None:
            return held
    grid = network(make_input())
    return grid if grid_filter is None else grid_filter(grid, seen)

# The maps are made at half the guided filter's fitting size (1/8 of the frame): measured on
# real frames nearly as close to the RGB path as at 1/4 (47.2 vs 47.4 dB at 1080p, with an
# earlier small copy) for a third less time; at 1/16 it dropped by 3-5 dB.
COARSEN = 2

# From 1280x720 up, the guided filter is fitted on a 1/8 copy of the frame (the maps' own) with
# half the box radius, not on the 1/4 copy: a quarter of the work (1080p: 2.9 of the planner's
# ~12 CPU-ms a frame inside a stream; 720p: 1.4 -> 0.35 of ~7). Measured against the RGB path on
# real frames (the frames of tests/test_planar.py), 1/8 and radius 1 against 1/4 and radius 2:
# sinus 1920x1080 49.0 against 50.1 dB, gastroscopy 1280x1024 42.3 against 44.4, five frames of
# the 1280x720 laparoscopy clip 43.3-43.4 against 46.4-46.6, laparoscopy 960x540 42.1 against
# 45.8, larynx 512x512 33.4 against 38.7. The smaller the frame the coarser its 1/8 copy: below
# 720p the loss grows (and the time saved shrinks), so those keep the 1/4 fit.
COARSE_FIT_PIXELS = 1280 * 720

# From 3840x2160 up the maps are made at 1/16 of the frame (the guided filter still fitted at
# 1/8): the maps then have as many pixels as a 1080p frame's, and their cost (the slice, the
# terms, the interpolation along x) stops growing with the frame: the planner's 21.3 -> 17.1
# CPU-ms a 4K frame (scripts/enhancer_cpu.py). Measured against the RGB path on real frames
# upscaled to 4K: sinus 46.3 against 49.6 dB, gastroscopy 40.2 against 44.1, two frames of the
# benchmark's laparoscopy clip 43.3-43.4 against 47.2-47.4.
COARSER_MAPS_PIXELS = 3840 * 2160


def network_input(y: np.ndarray, u: np.ndarray, v: np.ndarray, side: int,
                  small: np.ndarray | None = None) -> torch.Tensor:
    """The network's ``(1, 3, side, side)`` input from the planes, with the antialiased bilinear
    resize of the RGB path (``Enhancer.grid``): the grid is sensitive to how its input was
    shrunk.

    When ``small`` (the frame's :func:`small_copy`) is at least ``side`` on both axes (from
    1080p up) it is resized instead of the planes: measured closer to the RGB path's input
    (sinus 1920x1080 55.8 against 54.7 dB, the laparoscopy frame upscaled to 1920x1080 53.5
    against 52.8, sinus upscaled to 3840x2160 59.0 against 55.3) for half the time (0.6 against
    1.1-1.2 CPU-ms at 1080p, 1.4 against 2.6 at 4K); the planar path's output against the RGB
    path's moved by -0.5 to +0.2 dB on those frames (sinus 48.95 -> 48.47, laparoscopy 45.69 ->
    45.87, sinus at 4K 46.31 -> 45.97, gastroscopy upscaled to 1920x1536 43.46 -> 43.55).

    Else, when the chroma planes are at least 5/4 of the input's size, the luma is first
    averaged over 2x2 blocks (exact area, a quarter of the pixels to resize); below that every
    plane is resized from its full size.
    Measured, the planar path against the RGB path on real frames (with the 1/4 fit): 1280x720
    46.4-46.6 dB against 46.6-46.9 without it (0.6 against 1.3 CPU-ms a frame); at 512x512 it
    would cost 0.6 dB (38.1 against 38.7)."""
    # Uint8 pixel-interleaved (channels-last) images: PyTorch's vectorised antialiased resize,
    # 3-4x faster than on single planes or float32, and the same numbers per channel.
    if small is not None and min(small.shape[1:]) >= side:
        rgb = _resize3(cv2.merge([cv2.convertScaleAbs(c, alpha=255.0) for c in small]), side)
        rgb = torch.from_numpy(rgb).to(torch.float32, memory_format=torch.contiguous_format)
        return rgb.mul_(1 / 255)[None]
    if 4 * min(u.shape) >= 5 * side:
        y, u, v = _resize3(cv2.merge([cv2.resize(y, u.shape[::-1], interpolation=cv2.INTER_AREA), u, v]),
                           side)
    else:
        y, (u, v, _) = _resize3(cv2.merge([y, y, y]), side)[0], _resize3(cv2.merge([u, v, u]), side)
    return torch.from_numpy(ycc_to_rgb(y, u, v))[None]


def _resize3(hwc: np.ndarray, side: int) -> np.ndarray:
    """``(h, w, 3)`` uint8 -> ``(3, side, side)`` uint8, bilinear with antialiasing."""
    return F.interpolate(torch.from_numpy(hwc).permute(2, 0, 1)[None], size=(side, side), mode="bilinear",
                         antialias=True, align_corners=False)[0].numpy()


def seen_copy(small: np.ndarray, side: int) -> torch.Tensor:
    """What a video's grid filter sees of a frame on the planar path: its ``(3, h, w)`` small copy
    as ``(1, 3, h', w')``, every ``n``-th pixel on each axis so that it has at most about as many
    pixels as the network's ``side x side`` input (the smoother's histograms then cost what
    they did on that input, and the input need not be made on the frames it holds)."""
    n = max(1, math.ceil(math.sqrt(small.shape[1] * small.shape[2] / side**2)))
    return torch.from_numpy(small[:, ::n, ::n])[None]


@torch.no_grad()
def planar_maps(model: DeepUPE, guide: GuideParams, grid: torch.Tensor, small: np.ndarray,
                strength: float = 1.0, coarsen: int = 1, denoise: bool = True,
                coarse_fit: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The model's smooth per-pixel quantities on the low-res frame, as the planar kernel's maps.

    Args:
        model: a grey-illumination model.
        guide: its guide map's weights as arrays (``GuideParams.from_module(model.guide)``).
        grid: its bilateral grid ``(1, C, D, Gh, Gw)`` for this frame.
        small: ``(3, h, w)`` float32 RGB frame at ``1 / cfg.denoise_factor`` (``shrunk_rgb``).
        strength: ``k``; the denoising strength is scaled by ``min(k, 1)``.
        coarsen: the maps are made at ``1 / coarsen`` of ``small``'s size (the guided filter is
            still fitted on ``small``, as the model was trained, then area-averaged).
        denoise: ``False`` leaves out the model's learned denoising (benchmarks measure its cost).
        coarse_fit: fit the guided filter on ``small`` shrunk by 2 with half the box radius
            (``COARSE_FIT_PIXELS``) instead of on ``small``.

    Returns:
        ``(3, h', w')`` luma maps ``P, Q, L`` and ``(8, h, w)`` chroma maps (see
        :mod:`endolight.kernels.planar`), float32.
    """
    if not model.cfg.fits_maps:
        raise ValueError(f"the planar path needs {FITS_MAPS}")
    if coarse_fit and coarsen < 2:
        raise ValueError(f"coarse_fit fits at half the small copy: maps at 1/{coarsen} would be finer")
    cells = grey_grid(grid)[0].permute(2, 3, 1, 0).numpy()  # (Gh, Gw, D, 4 [+ 1])
    size = lowres_size(*small.shape[1:], coarsen)
    shrunk = _shrink(small, size)
    co = slice_lowres(shrunk, cells, guide)  # (4 [+ 1], h', w')
    fit = None
    if model.cfg.denoise and denoise:
        radius, source = model.cfg.denoise_radius, small
        if coarse_fit:
            radius = max(radius // 2, 1)
            source = shrunk if coarsen == 2 else _shrink(small, lowres_size(*small.shape[1:], 2))
        fit = guided_fit(source, radius, model.denoise_threshold())  # a_rgb, b_rgb
        if fit.shape[1:] not in (size, (2 * size[0], 2 * size[1])):  # odd sizes: OpenCV's area weights
            fit = _shrink(fit, size)
    return map_terms(co, fit, min(strength, 1.0), model.cfg.guide_weight if fit is not None else 0.0)


def _shrink(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``(C, h, w)`` float32 maps area-averaged to ``size = (h', w')``."""
    if maps.shape[1:] == size:
        return maps
    return np.stack([cv2.resize(m, size[::-1], interpolation=cv2.INTER_AREA) for m in maps])


@dataclass(frozen=True)
class PlanarPlan:
    """What the low-resolution half of the planar path made for one frame: everything
    :func:`render_plan` needs to write its full-resolution output. The two halves can run in
    two threads, one frame apart (video)."""

    buf: np.ndarray  # the (3H/2, W) I420 input
    luma: np.ndarray  # (4, h, w) low-res maps (the kernel interpolates them)
    chroma: np.ndarray  # (8, h, w)
    strength: float
    keep: np.ndarray | None
    fill: np.ndarray | None = None  # the border's fill (endolight.border.border_fill_planes)
    blur: float = 0.0  # the denoiser's guide blur (ModelConfig.denoise_blur)
    offset: float = 0.0  # the division's beta (ModelConfig.black_offset)
    spans: np.ndarray | None = None  # keep's kernels.planar.view_spans (made by the kernel if None)
    gains: np.ndarray | None = None  # the chroma curve's knots (DeepUPE.chroma_gains)
    lee: float = 0.0  # the guide's Lee step (ModelConfig.denoise_lee)


def chroma_table(model: DeepUPE) -> np.ndarray | None:
    """The model's chroma curve (``DeepUPE.chroma_gains``) as the kernels take it: ``(K,)``
    float32 knot values, ``None`` without a curve."""
    gains = model.chroma_gains()
    return None if gains is None else gains.detach().cpu().numpy().astype(np.float32)


def small_copy(model: DeepUPE, buf: np.ndarray) -> np.ndarray:
    """The ``(3, h, w)`` float32 RGB copy of a ``(3H/2, W)`` I420 frame that the planar path
    works from: :func:`small_planes` in RGB."""
    return ycc_to_rgb(*small_planes(model, buf))


def small_planes(model: DeepUPE, buf: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Area averages of each full plane of a ``(3H/2, W)`` I420 frame at ``1 / cfg.denoise_factor``
    of each side, ``(h, w)`` float32 levels of Y′, Cb, Cr (a detour through a rounded half-size
    luma measured 2 dB further from the RGB path). Video keeps the luma for the temporal filter's
    motion map."""
    h, w = i420_planes(buf)[0].shape
    hs, ws = lowres_size(h, w, model.cfg.denoise_factor)
    return shrunk_planes(buf, (ws, hs))


@torch.no_grad()
def plan_planes(model: DeepUPE, guide: GuideParams, buf: np.ndarray, strength: float = 1.0,
                keep: np.ndarray | None = None, grid_filter: GridFilter | None = None,
                denoise: bool = True, small: np.ndarray | None = None,
                network: Network | None = None, spans: np.ndarray | None = None,
                gains: np.ndarray | None = None) -> PlanarPlan:
    """The low-resolution half of the planar path for one ``(3H/2, W)`` uint8 I420 frame
    (network, slice, guided-filter fit).

    Args:
        model: a grey-illumination model (on the CPU).
        guide: its guide map's weights as arrays.
        strength: ``k`` in ``S ** k``.
        keep: optional ``(H, W)`` bool mask of the black border: not enhanced, its noise
            flattened (:mod:`endolight.border`).
        grid_filter: sees the grid before it is used (temporal smoothing).
        denoise: as in :func:`planar_maps`.
        small: the frame's :func:`small_copy` when the caller has made it already.
        network: what runs ``model.coeffs`` (default: the module itself).
        spans: ``keep``'s ``view_spans`` when the caller keeps them from frame to frame.
        gains: the model's :func:`chroma_table` when the caller keeps it (made here otherwise).
    """
    y, u, v = i420_planes(buf)
    h, w = y.shape
    small = small_copy(model, buf) if small is None else small
    # The network's input is made only when it runs; the smoother sees the small copy.
    grid = filtered_grid(network or model.coeffs, lambda: network_input(y, u, v, model.cfg.lowres, small),
                         seen_copy(small, model.cfg.lowres), grid_filter)
    coarsen = 2 * COARSEN if h * w >= COARSER_MAPS_PIXELS else COARSEN
    luma, chroma = planar_maps(model, guide, grid, small, strength, coarsen, denoise,
                               coarse_fit=h * w >= COARSE_FIT_PIXELS)
    # Without the denoiser the kernel skips the guide.
    blur, lee = (model.cfg.guide_blur, model.cfg.guide_lee) if denoise else (0.0, 0.0)
    fill = None if keep is None else border_fill_planes(y, u, v, keep)
    return PlanarPlan(buf, luma, chroma, strength, keep, fill, blur, model.cfg.black_offset, spans,
                      chroma_table(model) if gains is None else gains, lee)


def render_plan(plan: PlanarPlan, out: np.ndarray | None = None) -> np.ndarray:
    """The full-resolution half: the planar kernel writes the enhanced I420 frame (into ``out``
    when given) from the plan's low-resolution maps."""
    y, u, v = i420_planes(plan.buf)
    out = np.empty_like(plan.buf) if out is None else out
    render_planes(y, u, v, plan.luma, plan.chroma, EPS, plan.strength, plan.keep, plan.fill,
                  out=i420_planes(out), blur=plan.blur, offset=plan.offset, spans=plan.spans,
                  gains=plan.gains, lee=plan.lee)
    return out
