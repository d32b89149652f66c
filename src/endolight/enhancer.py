"""The one place a frame is enhanced: weights, device, field-of-view mask, strength.

Every user-facing path (``enhance``, ``eval``, ``video``, the Python API) goes through
:class:`Enhancer`; none re-implements a step of it.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from endolight.border import border_fill, border_noise, write_border
from endolight.checkpoint import load_model
from endolight.device import resolve_device
from endolight.fidelity import (
    FidelityConfig,
    cap_highlights,
    highlight_mask,
    masked_lowres,
    preserve_hue,
    solve_exposure,
)
from endolight.fov import fov_mask
from endolight.io.images import validate_frame
from endolight.io.tensors import to_tensor, to_uint8
from endolight.io.yuv import i420_to_rgb
from endolight.kernels.fused import GuideParams, render_uint8
from endolight.kernels.planar import guided_fit, view_spans
from endolight.metrics import mean_brightness
from endolight.model import DeepUPE
from endolight.model.config import FITS_MAPS
from endolight.model.denoise import shrink
from endolight.model.slicing import EPS, LEVEL0
from endolight.network_runtime import Network, onnx_network
from endolight.planar import GridFilter, PlanarPlan, chroma_table, filtered_grid, plan_planes, render_plan

EXPOSURE_TOL = 0.005  # exposure target met to within this mean luma (data range 1)



class Enhancer:
    """Restore dim, unevenly lit endoscope frames.

    Args:
        weights: a ``.safetensors`` file written by ``endolight train``; default: shipped weights.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        strength: 0 returns the input, 1 the full model (illumination ``S ** strength``).
        keep_border: leave pixels outside the field of view (black borders) unenhanced: a
            noisy border's noise flattened to its median colour (at least
            ``endolight.border.BORDER_BLACK`` levels), overlays kept
            (:mod:`endolight.border`).
        fused: render uint8 frames with the fused CPU kernel; default: on CPU only.
        fidelity: optional steps around the model for uint8 frames (highlights, hue,
            exposure target; see :class:`~endolight.fidelity.FidelityConfig`).
    """

    def __init__(
        self,
        weights: str | Path | None = None,
        device: str = "auto",
        strength: float = 1.0,
        keep_border: bool = True,
        model: DeepUPE | None = None,
        fused: bool | None = None,
        fidelity: FidelityConfig | None = None,
    ) -> None:
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        self.device = resolve_device(device)
        self.model = (model or load_model(weights)).to(self.device).eval()
        self.strength = strength
        self.keep_border = keep_border
        self.fidelity = fidelity or FidelityConfig()
        # On CPU a fused numba kernel renders the full-res stage of uint8 frames (within 1/255 of
        # the PyTorch path, same weights); on a GPU the PyTorch path is already fast.
        if fused and self.device.type != "cpu":
            raise ValueError("the fused kernel runs on CPU only")
        use_fused = self.device.type == "cpu" if fused is None else fused
        self.guide_params = GuideParams.from_module(self.model.guide) if use_fused else None
        self.chroma_gains = chroma_table(self.model)  # the kernels' copy, made once
        self._network: Network | None = None if use_fused else self.model.coeffs
        self._view: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # see _kept
        if model is None and self.device.type == "cpu":
            # oneDNN's convolutions run the low-res network 30 % faster on channels-last
            # weights (measured 3.2 -> 2.3 ms a frame, one thread; outputs within 3e-6). Only
            # on a model of our own: a caller's model is left as it is.
            self.model.coeffs.to(memory_format=torch.channels_last)

    @torch.no_grad()
    def enhance_tensor(self, image: torch.Tensor, strength: float | None = None) -> torch.Tensor:
        """Enhance ``(B, 3, H, W)`` float in [0, 1]; returns the same shape, float in [0, 1].

        With ``keep_border`` each image's field of view is detected (on its 8-bit copy) and the
        pixels outside it are not enhanced, their noise flattened (:mod:`endolight.border`), as
        :meth:`enhance_array` does. The ``fidelity`` steps are uint8-only and do not apply here.
        """
        k = self.strength if strength is None else strength
        if k == 0.0:
            return image.clone()
        x = image.to(self.device, torch.float32)
        out = self.model(x, strength=k).output.to(image.device, image.dtype)
        if self.keep_border:
            for i, frame in enumerate(to_uint8(im) for im in image.detach().cpu()):
                border = ~fov_mask(frame)
                out[i] = torch.where(torch.from_numpy(border).to(out.device), image[i], out[i])
                fill = border_fill(frame, border)
                if fill is not None:
                    noise = torch.from_numpy(border_noise(frame, border, fill)).to(out.device)
                    colour = torch.from_numpy(fill[:3] / 255).to(out)[:, None]
                    out[i][:, noise] = colour.expand(3, int(noise.sum()))
        return out

    @property
    def network(self) -> Network:
        """What runs the low-res network: on the fused CPU path its ONNX Runtime twin
        (:mod:`endolight.network_runtime`: 1.5 against 2.65 CPU-ms a run; made on first use,
        from a cached graph or exported, ~0.9 s), else, or without ONNX Runtime, the module."""
        if self._network is None:
            self._network = onnx_network(self.model.coeffs, self.model.cfg.lowres) or self.model.coeffs
        return self._network

    @network.setter
    def network(self, network: Network) -> None:
        """Another runtime for the same network (``(1, 3, L, L)`` low-res frame -> grid)."""
        self._network = network

    @torch.no_grad()
    def grid(self, frame: np.ndarray, exclude: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Bilateral grid ``(1, 12, D, Gh, Gw)`` of a ``(H, W, 3)`` uint8 frame, and the low-res
        ``(1, 3, h, w)`` float frame the network saw (:meth:`lowres`)."""
        lowres = self.lowres(frame, exclude)
        return self.network(lowres), lowres

    def lowres(self, frame: np.ndarray, exclude: np.ndarray | None = None) -> torch.Tensor:
        """The network's ``(1, 3, h, w)`` float input from a ``(H, W, 3)`` uint8 frame; pixels
        where the ``(H, W)`` bool mask ``exclude`` is True do not count in it
        (:func:`~endolight.fidelity.masked_lowres`)."""
        if exclude is not None and exclude.any():
            size = (self.model.cfg.lowres, self.model.cfg.lowres)
            lowres = masked_lowres(frame, exclude, size).to(self.device)
        elif self.guide_params is None:
            lowres = self.model.lowres(to_tensor(frame)[None].to(self.device))
        else:
            # The same antialiased resize on the uint8 frame: ~10x cheaper than converting the
            # full-res frame to float first, and within 1/255 of it at low res.
            size = (self.model.cfg.lowres, self.model.cfg.lowres)
            lowres = F.interpolate(torch.from_numpy(frame).permute(2, 0, 1)[None], size=size,
                                   mode="bilinear", antialias=True, align_corners=False).float() / 255
        return lowres

    @torch.no_grad()
    def denoise_coeffs(self, frame: np.ndarray) -> torch.Tensor:
        """The learned denoiser's low-res coefficients ``(1, 6, h, w)`` of a ``(H, W, 3)`` uint8
        frame, from a shrunk uint8 copy (as the grid's low-res input: the full-res frame is
        never converted to float), fitted by the numba twin of the model's guided filter."""
        cfg = self.model.cfg
        small = shrink(torch.from_numpy(frame).permute(2, 0, 1)[None], cfg.denoise_factor)[0].numpy()
        return torch.from_numpy(guided_fit(small, cfg.denoise_radius, self.model.denoise_threshold()))[None]

    @torch.no_grad()
    def render(self, frame: np.ndarray, grid: torch.Tensor, strength: float | None = None,
               keep: np.ndarray | None = None) -> np.ndarray:
        """Full-res stage for a given grid: ``(H, W, 3)`` uint8 frame -> uint8 output; pixels
        where the ``(H, W)`` bool mask ``keep`` is True (the border) are not enhanced, their
        noise flattened (:mod:`endolight.border`)."""
        return self._render(frame, grid, strength, keep, None if keep is None else border_fill(frame, keep))

    def _render(self, frame: np.ndarray, grid: torch.Tensor, strength: float | None, keep: np.ndarray | None,
                fill: np.ndarray | None) -> np.ndarray:
        """:meth:`render` with the border's fill given (``border_fill`` of ``frame`` and ``keep``,
        measured once per frame by :meth:`enhance_array` for every render and the last restore)."""
        k = self.strength if strength is None else strength
        if self.guide_params is not None:
            dn = self.denoise_coeffs(frame) if self.model.cfg.denoise else None
            return render_uint8(frame, grid, self.guide_params, EPS, k, keep=keep, fill=fill,
                                grey=self.model.cfg.illumination == "grey", denoise=dn,
                                blur=self.model.cfg.guide_blur, lee=self.model.cfg.guide_lee,
                                offset=self.model.cfg.black_offset, power=self.model.cfg.curve == "power",
                                floor=LEVEL0 if self.model.cfg.dequantise else 0.0, chroma=self.chroma_gains)
        x = to_tensor(frame)[None].to(self.device)
        out = to_uint8(self.model.render(grid, x, k).output[0])
        return out if keep is None else write_border(out, frame, keep, fill)

    def enhance_array(self, image: np.ndarray, strength: float | None = None,
                      grid_filter: GridFilter | None = None, fov: np.ndarray | None = None) -> np.ndarray:
        """Enhance one ``(H, W, 3)`` uint8 RGB frame; returns ``(H, W, 3)`` uint8 RGB.

        ``grid_filter`` sees each frame's grid before rendering (video: temporal smoothing);
        ``fov`` is a field-of-view mask detected beforehand (video: once per scene). With an
        exposure target (``fidelity.exposure``) the strength is solved per frame instead.
        """
        frame = validate_frame(image)
        k = self.strength if strength is None else strength
        fid = self.fidelity
        if k == 0.0 and fid.exposure is None:
            return frame.copy()
        if fov is None and (self.keep_border or fid.mask_stats or fid.exposure is not None):
            fov = fov_mask(frame)
        keep = ~fov if self.keep_border else None
        fill = None if keep is None else border_fill(frame, keep)
        # Fidelity steps before the model: highlights and border out of the low-res statistics.
        spots = highlight_mask(frame, fov) if fid.highlights else None
        exclude = None
        if fid.mask_stats or spots is not None:
            exclude = np.zeros(frame.shape[:2], bool) if spots is None else spots.copy()
            if fid.mask_stats and fov is not None:
                exclude |= ~fov
        lowres = self.lowres(frame, exclude)
        grid = filtered_grid(self.network, lambda: lowres, lowres, grid_filter)
        if fid.exposure is None:
            out = self._render(frame, grid, k, keep, fill)
        else:
            out = self._render_exposure(frame, grid, fov, keep, fill, fid.exposure)
        return self._finish(out, frame, spots, keep, fill)

    @property
    def planar(self) -> bool:
        """:meth:`enhance_planes` can run: the fused CPU path, a grey model with the sigmoid
        curve (``ModelConfig.fits_maps``), no fidelity steps."""
        return (self.guide_params is not None and self.model.cfg.fits_maps
                and self.fidelity == FidelityConfig())

    def enhance_planes(self, planes: np.ndarray, strength: float | None = None,
                       grid_filter: GridFilter | None = None, fov: np.ndarray | None = None) -> np.ndarray:
        """Enhance one ``(3H/2, W)`` uint8 I420 frame (a decoder's planes; see
        :mod:`endolight.planar`) without converting it to RGB; returns the same layout.

        ``grid_filter`` and ``fov`` as in :meth:`enhance_array`. Needs :attr:`planar`.
        """
        k = self.strength if strength is None else strength
        if k == 0.0:
            return planes.copy()
        return render_plan(self.plan_planes(planes, k, grid_filter, fov))

    def plan_planes(self, planes: np.ndarray, strength: float | None = None,
                    grid_filter: GridFilter | None = None, fov: np.ndarray | None = None,
                    small: np.ndarray | None = None) -> PlanarPlan:
        """The low-resolution half of :meth:`enhance_planes`; ``endolight.planar.render_plan``
        is the other (video runs them in two threads). ``small``: the frame's
        ``endolight.planar.small_copy`` when the caller has made it already. What the kernel
        derives from ``fov`` is kept while the same array comes back (a stream's mask): pass a
        new array, not the old one changed in place, when the view changes."""
        if not self.planar:
            raise ValueError(f"the planar path needs the fused CPU path, no fidelity steps and {FITS_MAPS}")
        k = self.strength if strength is None else strength
        keep = spans = None
        if self.keep_border:
            keep, spans = self._kept(fov_mask(i420_to_rgb(planes)) if fov is None else fov)
        return plan_planes(self.model, self.guide_params, planes, k, keep, grid_filter, small=small,
                           network=self.network, spans=spans, gains=self.chroma_gains)

    def _kept(self, fov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The border mask of a field of view and its ``view_spans``, kept while a stream passes
        the same mask (it changes only at a scene's first frames)."""
        view = self._view
        if view is None or view[0] is not fov:
            keep = ~fov
            view = self._view = (fov, keep, view_spans(keep))
        return view[1], view[2]

    def _render_exposure(self, frame: np.ndarray, grid: torch.Tensor, fov: np.ndarray | None,
                         keep: np.ndarray | None, fill: np.ndarray | None, target: float) -> np.ndarray:
        """Render at the strength that meets the exposure target: solved on a small copy, then
        once more with the target corrected by the full-res render's measured offset (noise and
        clipping make the small copy's mean differ slightly)."""
        mask = None if fov is None else torch.from_numpy(fov)[None, None]
        k = self.exposure_strength(frame, grid, fov, target)
        out = self._render(frame, grid, k, keep, fill)
        got = float(mean_brightness(to_tensor(out)[None], mask)[0])
        if abs(got - target) > EXPOSURE_TOL:
            # The small copy met the target, so the full-res offset is got - target.
            k = self.exposure_strength(frame, grid, fov, target, offset=got - target)
            out = self._render(frame, grid, k, keep, fill)
        return out

    def _finish(self, out: np.ndarray, frame: np.ndarray, spots: np.ndarray | None,
                keep: np.ndarray | None, fill: np.ndarray | None) -> np.ndarray:
        """Fidelity steps after the model (highlight gain cap, hue); the border is
        restored last, since filters reach across the view's edge."""
        fid = self.fidelity
        if spots is not None:
            out = cap_highlights(out, frame, spots)
        if fid.preserve_hue:
            out = preserve_hue(out, frame)
        if keep is not None and (spots is not None or fid.preserve_hue):
            write_border(out, frame, keep, fill)
        return out

    @torch.no_grad()
    def exposure_strength(self, frame: np.ndarray, grid: torch.Tensor, fov: np.ndarray | None,
                          target: float, offset: float = 0.0) -> float:
        """Strength ``k`` (possibly above 1) whose output has mean brightness ``target`` inside
        ``fov``, by bisection on a copy of the frame shrunk to 128 px (the grid and the guide do
        not depend on the resolution); ``offset`` is the full-res mean minus the small copy's."""
        h, w = frame.shape[:2]
        scale = min(1.0, 128 / max(h, w))
        size = (max(8, round(w * scale)), max(8, round(h * scale)))
        x = to_tensor(cv2.resize(frame, size, interpolation=cv2.INTER_AREA))[None].to(self.device)
        mask = None
        if fov is not None:
            small = cv2.resize(fov.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
            mask = torch.from_numpy(small)[None, None].to(self.device)
        def level(k: float) -> float:
            # The whole render per k (the denoising strength follows k too); cheap at 128 px.
            return float(mean_brightness(self.model.render(grid, x, k).output, mask)[0]) + offset

        return solve_exposure(level, target)

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
