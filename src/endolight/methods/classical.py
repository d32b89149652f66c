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


def histogram_equalisation(image: np.ndarray) -> np.ndarray:
    """OpenCV global histogram equalisation of the L channel of CIELAB (colours kept)."""
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    lab[..., 0] = cv2.equalizeHist(np.ascontiguousarray(lab[..., 0]))
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def _surround(channel: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian surround with a large ``sigma``: blurred on a shrunk copy (the surround is
    low-frequency), then resized back, ~100x cheaper than a full-size 250 px blur."""
    h, w = channel.shape[:2]
    f = max(1.0, sigma / 8)
    small = cv2.resize(channel, (max(1, round(w / f)), max(1, round(h / f))), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / f, borderType=cv2.BORDER_REFLECT)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def simplest_colour_balance(image: np.ndarray, low: float = 1.0, high: float = 1.0) -> np.ndarray:
    """Per channel, clip ``low`` / ``high`` percent of the pixels and stretch to [0, 255]."""
    out = np.empty(image.shape, np.uint8)
    for c in range(image.shape[2]):
        lo, hi = np.percentile(image[..., c], (low, 100 - high))
        out[..., c] = np.clip((image[..., c] - lo) / max(hi - lo, 1e-6) * 255 + 0.5, 0, 255)
    return out


def msrcr(
    image: np.ndarray,
    sigmas: tuple[float, ...] = (15.0, 80.0, 250.0),
    alpha: float = 125.0,
    beta: float = 46.0,
    ref_side: int = 512,
) -> np.ndarray:
    """Multi-scale Retinex with colour restoration (Jobson, Rahman & Woodell 1997), followed by the
    simplest colour balance (1 % clipping) as in Petro, Sbert & Morel (IPOL 2014).

    ``MSR_c = mean_s (log I_c - log G_s * I_c)``, ``C_c = beta (log(alpha I_c) - log sum_c I_c)``,
    output = balance(``C * MSR``). Scales are the classic 15/80/250 px for a ``ref_side`` px frame,
    scaled with the frame so the result does not depend on resolution. Hand-written: no
    maintained library implements MSRCR.
    """
    x = image.astype(np.float32) + 1.0
    scale = max(image.shape[:2]) / ref_side
    log_x = np.log(x)
    msr = np.mean([log_x - np.log(_surround(x, s * scale)) for s in sigmas], axis=0)
    colour = beta * (np.log(alpha * x) - np.log(x.sum(axis=2, keepdims=True)))
    return simplest_colour_balance(colour * msr)


def lime(
    image: np.ndarray,
    alpha: float = 0.15,
    gamma: float = 0.8,
    sigma: float = 2.0,
    eps: float = 1e-3,
    solve_side: int = 256,
) -> np.ndarray:
    """LIME-style enhancement (Guo, Li & Ling, IEEE TIP 2017): illumination map ``T`` refined from
    the max over RGB, then ``R = I / T ** gamma``.

    ``T`` minimises ``||T - T0||^2 + alpha * sum_d W_d (d T)^2`` (the paper's sped-up solver),
    with Strategy-III weights ``W_d = 1 / (|G_sigma * d T0| + eps)``. The sparse system is solved
    (scipy) on a copy shrunk to ``solve_side`` px on the longer side and ``T`` is resized back;
    the optional BM3D denoising step is left out. Hand-written: no maintained library implements
    LIME.
    """
    from scipy.sparse import diags, identity
    from scipy.sparse.linalg import spsolve

    x = image.astype(np.float32) / 255
    t0_full = x.max(axis=2)
    h, w = t0_full.shape
    f = max(1.0, max(h, w) / solve_side)
    sh, sw = max(2, round(h / f)), max(2, round(w / f))
    t0 = cv2.resize(t0_full, (sw, sh), interpolation=cv2.INTER_AREA).astype(np.float64)
    dx = np.diff(t0, axis=1, append=t0[:, -1:])
    dy = np.diff(t0, axis=0, append=t0[-1:, :])
    wx = 1 / (np.abs(cv2.GaussianBlur(dx, (0, 0), sigma)) + eps)
    wy = 1 / (np.abs(cv2.GaussianBlur(dy, (0, 0), sigma)) + eps)
    wx[:, -1] = 0  # no coupling across the right and bottom edges
    wy[-1, :] = 0
    n = sh * sw
    # Forward differences as sparse operators on the row-major flattened image.
    ones = np.ones(n)
    d_x = diags([-ones, ones[:-1]], [0, 1], shape=(n, n), format="csr")
    d_y = diags([-ones, ones[: n - sw]], [0, sw], shape=(n, n), format="csr")
    lap = d_x.T @ diags(wx.ravel()) @ d_x + d_y.T @ diags(wy.ravel()) @ d_y
    t = spsolve((identity(n, format="csr") + alpha * lap).tocsc(), t0.ravel()).reshape(sh, sw)
    t = cv2.resize(t.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    t = np.maximum(t, eps) ** gamma
    out = np.clip(x / t[..., None], 0, 1)
    return (out * 255 + 0.5).astype(np.uint8)
