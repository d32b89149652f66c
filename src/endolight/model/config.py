"""Model configuration: a dataclass saved inside every checkpoint."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

ILLUMINATIONS = ("grey", "rgb")
CURVES = ("sigmoid", "power")
DENOISE_FILTERS = ("guided", "box")
# What ModelConfig.fits_maps asks of a model, for the errors of the paths that need it.
FITS_MAPS = "a grey model with the sigmoid curve and no dequantise (ModelConfig.fits_maps)"


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the bilateral-grid Retinex network (DeepUPE / HDRNet).

    Attributes:
        lowres: side of the square low-resolution input of the coefficient network.
        grid_size: spatial side of the bilateral grid; ``lowres / grid_size`` must be a power
            of two, and its log2 is the number ``ns`` of stride-2 splat convolutions.
        grid_depth: number of luminance bins ``d`` of the grid.
        channel_mult: channel multiplier of the splat/local/global convolutions.
        fc_width: width of the first fully connected layer of the global path.
        guide_knots: number of ReLU knots of the per-channel guidance curve.
        illumination: ``"grey"``: one illumination ``S`` per pixel for all three channels
            (the mean of the affine outputs), bounded below by the pixel's largest channel, so
            ``R = I / S`` scales R, G and B alike: hue and saturation are kept exactly and no
            channel clips. ``"rgb"``: DeepUPE's per-channel ``S``, free to change colours (a
            model trained on endoscopy turns out-of-range colours, e.g. a blue chart patch,
            towards tissue pink; docs/fidelity.md).
        curve: how the affine output ``a`` (a logit) becomes ``S`` between the pixel's bound
            ``m`` (see ``illumination``) and 1. ``"sigmoid"`` (DeepUPE): ``S = m + (1 - m)
            sigmoid(a)``. ``"power"``: ``S = m ** (1 - sigmoid(a))``, so ``R = D / S`` is
            ``D ** sigmoid(a)``: a per-pixel gamma, which undoes a gamma darkening with a constant
            ``a`` however steep the curve is near black (the sigmoid form needs ``a`` to follow
            ``log m`` there, which one affine per grid cell cannot).
        denoise: the model divides a denoised frame: a fast guided filter (fitted on a copy
            shrunk by ``denoise_factor`` with a box of radius ``denoise_radius`` there, edge
            threshold a learned luma variance starting at ``denoise_eps``) blended in with a
            per-pixel strength from a 13th grid channel (``endolight.model.denoise``).
            ``denoise_filter = "box"`` blends towards the plain local mean instead (the
            filter with an infinite edge threshold): the ablation's baseline.
            ``denoise_blur`` (beta) guides the filter at full resolution by
            ``Y + beta * (binomial3x3(Y) - Y)`` instead of the noisy luma ``Y`` itself: where the
            filter keeps the guide (edges, texture), less of the pixel noise passes.
            ``denoise_lee`` (a luma variance; 0: none) adds a Lee step to that guide,
            ``M + V / (V + lee) (G - M)`` with ``M, V`` its 3x3 binomial mean and variance: flat
            regions take ``M``, edges keep ``G`` (``endolight.model.denoise.filter_guide``).
        local_blocks: residual blocks (conv-ReLU-conv, dilations 1, 2, 4, ...) added to the
            local path at grid resolution: a wider view of the neighbouring cells for a few
            million multiply-adds (the grid is 16x16). Their last convolution starts at zero, so
            weights trained without them load and give the same output (``init_weights``).
        global_hist: bins of a histogram of the low-res input's luma fed to the global path
            (0: none) through one linear layer that starts at zero (weights trained without it
            load and give the same output): the frame's brightness distribution as a direct
            input to the per-frame exposure estimate. A soft (triangular) histogram, so it is
            differentiable and exports to ONNX.
        black_offset: ``beta``: the model divides in an offset space, ``R = (D + beta) / S -
            beta`` with ``S`` bounded below by ``(D + beta) / (1 + beta)`` (so ``R <= 1``). sRGB
            encodes linear light ``x`` as ``1.055 x^(1/2.4) - 0.055``: dimming the light by ``k``
            scales ``e + 0.055``, not ``e``, by ``k^(1/2.4)``. With ``beta = 0.055`` a grey ``S``
            undoes a dimmer light exactly (above sRGB's linear toe), saturation included; with
            0 (checkpoints from before the option) the division keeps the dim frame's R'G'B'
            ratios, which a dimmer light does not (the dim frame is more saturated).
        dequantise: the model reads a channel at level 0 as the middle of the values that
            round to it, ``0.25 / 255`` (``endolight.model.slicing.dequantise``), where the
            pixel has light in another channel: ``R = D / S`` keeps a true 0 at 0 however far
            ``S`` lifts it, and a frame darkened by a steep curve rounds the dark tissue's
            weaker channels to 0 (under the ``paper`` protocol 16 % of tissue pixels have a
            channel there; ``scripts/paper_ceiling.py``). Pixels black in all channels (the
            border) stay 0.
        chroma_knots: ``K > 0`` (grey illumination only) scales the output's chroma (each
            channel minus the luma) by a learned curve of the illumination, ``sigma(S)``,
            piecewise linear over ``K`` knots at ``S = 0, 1 / (K - 1), ..., 1``, ``sigma(1) = 1``
            (``endolight.model.slicing.chroma_gain``; the other knots start at 1, so weights
            trained without the curve load and give the same output). A grey ``S`` keeps the dim
            frame's R'G'B' ratios, and a dimmer light (a scale in linear light) changes them:
            the dim frame is more saturated, most in sRGB's linear toe. The offset space
            (``black_offset``) undoes this exactly only above the toe; the curve learns how much
            to take back at each gain. The hue stays (chroma is scaled, not turned).
    """

    lowres: int = 256
    grid_size: int = 16
    grid_depth: int = 8
    channel_mult: int = 1
    fc_width: int = 256
    guide_knots: int = 16
    illumination: str = "grey"
    curve: str = "sigmoid"
    denoise: bool = True
    denoise_factor: int = 4
    denoise_radius: int = 2
    denoise_eps: float = 1e-3
    denoise_filter: str = "guided"
    denoise_blur: float = 0.0
    denoise_lee: float = 0.0
    black_offset: float = 0.0
    local_blocks: int = 0
    global_hist: int = 0
    dequantise: bool = False
    chroma_knots: int = 0

    def __post_init__(self) -> None:
        if self.denoise_filter not in DENOISE_FILTERS:
            raise ValueError(f"denoise_filter must be one of {DENOISE_FILTERS}, got {self.denoise_filter!r}")
        if not 0.0 <= self.denoise_blur <= 1.0:
            raise ValueError(f"denoise_blur must be in [0, 1], got {self.denoise_blur}")
        if not 0.0 <= self.denoise_lee < float("inf"):
            raise ValueError(f"denoise_lee must be a finite variance >= 0, got {self.denoise_lee}")
        if not 0.0 <= self.black_offset <= 0.5:
            raise ValueError(f"black_offset must be in [0, 0.5], got {self.black_offset}")
        if not 0 <= self.local_blocks <= 4:
            raise ValueError(f"local_blocks must be in 0..4, got {self.local_blocks}")
        if not 0 <= self.global_hist <= 256:
            raise ValueError(f"global_hist must be in 0..256, got {self.global_hist}")
        if self.curve not in CURVES:
            raise ValueError(f"curve must be one of {CURVES}, got {self.curve!r}")
        if self.illumination not in ILLUMINATIONS:
            raise ValueError(f"illumination must be one of {ILLUMINATIONS}, got {self.illumination!r}")
        if self.chroma_knots and not (2 <= self.chroma_knots <= 64 and self.illumination == "grey"):
            raise ValueError(f"chroma_knots must be 0, or 2..64 with the grey illumination, "
                             f"got {self.chroma_knots}")
        ratio = self.lowres // self.grid_size
        if self.lowres % self.grid_size or ratio & (ratio - 1) or ratio < 2:
            raise ValueError(
                f"lowres/grid_size must be a power of two >= 2, got {self.lowres}/{self.grid_size}"
            )

    @property
    def n_coeffs(self) -> int:
        """Channels of a grid cell: a 3x4 affine, plus the denoising strength."""
        return 13 if self.denoise else 12

    @property
    def fits_maps(self) -> bool:
        """``S`` can be made from low-resolution maps, as the planar video path and the fast export
        graph make it: one grey illumination for the three channels, through the sigmoid curve,
        of the frame as it is (no :attr:`dequantise`)."""
        return self.illumination == "grey" and self.curve == "sigmoid" and not self.dequantise

    @property
    def guide_blur(self) -> float:
        """The denoiser's guide blur in effect: ``denoise_blur``, 0 without the denoiser."""
        return self.denoise_blur if self.denoise else 0.0

    @property
    def guide_lee(self) -> float:
        """The denoiser's guide's Lee step in effect: ``denoise_lee``, 0 without the denoiser."""
        return self.denoise_lee if self.denoise else 0.0

    @property
    def guide_weight(self) -> float:
        """What the low-resolution maps weigh the kernels' guide row by (``planar_terms``'
        ``blur``): the row is ``binomial3(Y)`` blended in by :attr:`guide_blur`, or with the Lee
        step the whole guide, weighed 1."""
        return 1.0 if self.guide_lee else self.guide_blur

    @property
    def n_splat(self) -> int:
        """Number ``ns`` of stride-2 convolutions from ``lowres`` down to ``grid_size``."""
        return (self.lowres // self.grid_size).bit_length() - 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        data = json.loads(text)
        data.setdefault("illumination", "rgb")  # checkpoints from before the option were per channel
        data.setdefault("denoise", False)  # ...and those from before the learned denoising had none
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
