"""The endoscope degradation model: how a well-lit frame becomes a dim, unevenly lit one.

One function used by ``endolight synth`` (pairs on disk), by training (pairs on the fly) and
by evaluation (the synthesized held-out split), so all three always agree.

Steps, in order (each parameter is drawn per image from the range in ``DegradeConfig``):

1. **Light falloff** ``F(x, y)`` in ``[floor, 1]``: an endoscope lights the scene from its tip,
   so the centre is bright and the periphery dark. ``F = floor + (1 - floor) * exp(-(r/r0)^p)``
   where ``r`` is an anisotropic (two radii, rotated) distance from an off-centre point.
2. **Gamma darkening shaped like the light**, on luminance only: the sRGB-encoded luminance
   ``Y`` becomes ``Y ** gamma(x, y)`` with ``gamma = gamma_centre * F + gamma_edge * (1 - F)``, so
   the periphery is darkened by a stronger gamma than the centre. The colour is scaled by the
   same factor in linear light, so the chromaticity (hue and saturation) is unchanged: a dimmer
   light does not change tissue colour. (A per-channel ``T ** gamma`` would oversaturate the
   dim frame, and a model trained on it learns to desaturate.)
3. **Exposure**: the frame is multiplied by ``exposure * F`` in linear light.
4. **Sensor noise**: Poisson-Gaussian in linear light, ``y = x + N(0, x / peak + read^2)``
   (the Gaussian approximation of Poisson shot noise at ``peak`` photo-electrons for white).
5. **Quantisation**: to 8 bits, optionally through JPEG at a random quality.

Two protocols (``PROTOCOLS``), both through :func:`degrade`:

* ``endoscope`` (the default): the steps above over the whole range users meet, exposure in
  linear light from 1 down to 0.1, sensor noise from nearly clean (2000 photo-electrons at white)
  to strong (50), and JPEG compression on a quarter of the frames.
* ``paper``: DeepUPE's recipe, the whole frame darkened by one gamma on each channel,
  ``T ** gamma`` with gamma from 1.5 to 4, no light cone, no noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import cv2
import kornia
import numpy as np
import torch

# Bumped whenever degrade() changes what it makes of a frame: caches of models trained on its
# pairs (endolight compare) are keyed on it. 2: luminance-only gamma (1: per channel).
# 3: protocols (``mode``), exposure drawn log-uniformly.
DEGRADE_VERSION = 3
MODES = ("endoscope", "paper")

REC709 = torch.tensor([0.2126, 0.7152, 0.0722])  # sRGB primaries' luminance weights (linear light)


@dataclass(frozen=True)
class DegradeConfig:
    """Ranges ``(low, high)`` from which each image's parameters are drawn uniformly (``exposure``
    and ``peak`` log-uniformly: each halving of the light matters alike). ``mode`` picks the
    recipe: ``"endoscope"`` (light cone, exposure, noise) or ``"paper"`` (a whole-frame gamma on
    each channel, drawn from ``gamma_edge``; the other fields are unused)."""

    mode: str = "endoscope"

    gamma_centre: tuple[float, float] = (1.0, 1.4)  # gamma at the centre of the light cone
    gamma_edge: tuple[float, float] = (1.6, 3.0)  # gamma at the darkest periphery
    falloff_floor: tuple[float, float] = (0.15, 0.5)  # relative light left at the periphery
    falloff_radius: tuple[float, float] = (0.35, 0.9)  # r0, fraction of the half-diagonal
    falloff_power: tuple[float, float] = (1.5, 3.0)  # p, sharpness of the cone's edge
    centre_offset: float = 0.2  # max offset of the light centre, fraction of each side
    anisotropy: tuple[float, float] = (0.7, 1.0)  # ratio of the short to the long radius
    exposure: tuple[float, float] = (0.1, 1.0)  # global exposure scale in linear light (log-uniform)
    peak: tuple[float, float] = (50.0, 2000.0)  # photo-electrons at white (log-uniform)
    read_noise: tuple[float, float] = (0.0, 0.005)  # read noise std in linear light
    jpeg_prob: float = 0.25  # probability of JPEG quantisation (else plain 8-bit)
    jpeg_quality: tuple[int, int] = (50, 95)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")


PROTOCOLS: dict[str, DegradeConfig] = {
    "endoscope": DegradeConfig(),
    "paper": DegradeConfig(mode="paper", gamma_edge=(1.5, 4.0), jpeg_prob=0.0),
}
DEFAULT_PROTOCOL = "endoscope"


def protocol_config(name: str) -> DegradeConfig:
    """The :class:`DegradeConfig` of a named protocol (``PROTOCOLS``).

    Raises:
        ValueError: unknown name.
    """
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; choose from {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


@dataclass(frozen=True)
class DegradeParams:
    """The parameters drawn for one image (written to the synth manifest)."""

    gamma_centre: float
    gamma_edge: float
    falloff_floor: float
    falloff_radius: float
    falloff_power: float
    centre_x: float
    centre_y: float
    angle: float
    anisotropy: float
    exposure: float
    peak: float
    read_noise: float
    jpeg_quality: int  # 0: no JPEG
    mode: str = "endoscope"

    def to_dict(self) -> dict[str, float | str]:
        return asdict(self)


def sample_params(cfg: DegradeConfig, rng: np.random.Generator) -> DegradeParams:
    """Draw one image's parameters from ``cfg`` with ``rng``."""

    def u(r: tuple[float, float]) -> float:
        return float(rng.uniform(*r))

    def log_u(r: tuple[float, float]) -> float:
        return float(math.exp(rng.uniform(math.log(r[0]), math.log(r[1]))))

    jpeg = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
    use_jpeg = rng.uniform() < cfg.jpeg_prob
    return DegradeParams(
        gamma_centre=u(cfg.gamma_centre),
        gamma_edge=u(cfg.gamma_edge),
        falloff_floor=u(cfg.falloff_floor),
        falloff_radius=u(cfg.falloff_radius),
        falloff_power=u(cfg.falloff_power),
        centre_x=0.5 + u((-cfg.centre_offset, cfg.centre_offset)),
        centre_y=0.5 + u((-cfg.centre_offset, cfg.centre_offset)),
        angle=u((0.0, math.pi)),
        anisotropy=u(cfg.anisotropy),
        exposure=log_u(cfg.exposure),
        peak=log_u(cfg.peak),
        read_noise=u(cfg.read_noise),
        jpeg_quality=jpeg if use_jpeg else 0,
        mode=cfg.mode,
    )


def noise_peak(params: Mapping[str, float | str]) -> float | None:
    """The sensor noise's ``peak`` (photo-electrons at white) of a pair's parameters
    (:meth:`DegradeParams.to_dict`), or None where the protocol adds no noise (``paper``: it
    draws a ``peak`` and never uses it)."""
    if params.get("mode") == "paper" or "peak" not in params:
        return None
    return float(params["peak"])


def falloff_map(p: DegradeParams, height: int, width: int) -> torch.Tensor:
    """Relative light ``F`` of shape ``(1, 1, H, W)`` in ``[floor, 1]``, 1 at the light's centre."""
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) / height - p.centre_y
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width - p.centre_x
    # Distances in units of the half-diagonal so the cone looks alike at any aspect ratio.
    aspect = width / height
    y, x = ys[:, None] / math.hypot(1.0, aspect) * 2, xs[None, :] * aspect / math.hypot(1.0, aspect) * 2
    c, s = math.cos(p.angle), math.sin(p.angle)
    u, v = c * x + s * y, (-s * x + c * y) / p.anisotropy
    r = torch.sqrt(u * u + v * v) / p.falloff_radius
    f = p.falloff_floor + (1 - p.falloff_floor) * torch.exp(-(r**p.falloff_power))
    return f[None, None]


def degrade(
    target: torch.Tensor, params: DegradeParams, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Darken a well-lit frame the way an endoscope fails.

    Args:
        target: ``(1, 3, H, W)`` or ``(3, H, W)`` sRGB float in [0, 1].
        params: drawn by :func:`sample_params`.
        generator: seeds the sensor noise.

    Returns:
        The dim frame, same shape, quantised to multiples of 1/255.
    """
    squeeze = target.dim() == 3
    t = target[None] if squeeze else target
    if params.mode == "paper":
        out = quantise(t.clamp(0, 1) ** params.gamma_edge, params.jpeg_quality)
        return out[0] if squeeze else out
    f = falloff_map(params, t.shape[-2], t.shape[-1]).to(t.device)
    gamma = params.gamma_centre * f + params.gamma_edge * (1 - f)
    lin = kornia.color.rgb_to_linear_rgb(t.clamp(0, 1))
    lum = kornia.color.rgb_to_grayscale(lin, REC709).clamp_min(1e-6)  # relative luminance
    # kornia's sRGB transfer functions want 3 channels; the grey triple carries the luminance.
    grey = lum.expand(-1, 3, -1, -1)
    dim_lum = kornia.color.rgb_to_linear_rgb(kornia.color.linear_rgb_to_rgb(grey) ** gamma)[:, :1]
    lin = lin * (dim_lum / lum) * (params.exposure * f)
    std = torch.sqrt(lin / params.peak + params.read_noise**2)
    noise = torch.randn(lin.shape, generator=generator, dtype=lin.dtype, device="cpu").to(lin.device)
    lin = (lin + std * noise).clamp(0, 1)
    out = kornia.color.linear_rgb_to_rgb(lin)
    out = quantise(out, params.jpeg_quality)
    return out[0] if squeeze else out


def quantise(image: torch.Tensor, jpeg_quality: int = 0) -> torch.Tensor:
    """Round ``(B, 3, H, W)`` to 8 bits; with ``jpeg_quality > 0`` pass it through JPEG."""
    q = torch.round(image.clamp(0, 1) * 255)
    if jpeg_quality <= 0:
        return q / 255
    frames = []
    for frame in q.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy():
        ok, buf = cv2.imencode(".jpg", frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality])
        frames.append(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].copy())
    arr = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255
    return arr.to(image.device)
