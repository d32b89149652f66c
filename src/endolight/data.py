"""The real endoscopy frames in ``../shared/data``: the fixed split and on-the-fly training pairs.

The split follows the data README so numbers stay comparable across the project:

* ``heldout`` — never trained on: ``gastroscopy-fujifilm/*/5.png``, frames 200–249 of the
  laparoscopy clip, ``laparoscopy/laparoscopic-view-960x540.png``, ``larynx/patient2/seq5``,
  ``sinus/clip-b``, ``fetoscopy/other``, ``bronchoscopy/edinburgh``.
* ``val`` — chosen per sequence or clip (consecutive frames are near-duplicates, so never
  per frame): ``gastroscopy-fujifilm/*/4.png``, ``larynx/patient1/seq4``, the 320x240
  laparoscopy sequence, frames 160–199 of the clip, and the last 20 % (a contiguous block) of
  each remaining single-sequence folder.
* ``train`` — everything else among the well-exposed sets.
* ``dim`` — ``capsule`` and ``nasal-dim``: real dim frames with no reference.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import kornia
import numpy as np
import torch
from torch.utils.data import Dataset

from endolight.degrade import DegradeConfig, degrade, sample_params
from endolight.io.images import IMAGE_SUFFIXES, read_image
from endolight.io.tensors import to_tensor

SPLITS = ("train", "val", "heldout", "dim")
CLIP = "laparoscopy/cholecystectomy-720p.mp4"
# Consecutive clip frames are near-duplicates: train and validate on every 4th one.
CLIP_TRAIN, CLIP_VAL, CLIP_HELDOUT = range(0, 160, 4), range(160, 200, 4), range(200, 250)
# Folders that are one sequence: their last 20 % is validation, a contiguous block.
TAIL_VAL = ("sinus/clip-a", "fetoscopy/mosaic-sequence", "bronchoscopy/bi2k", "colonoscopy-cvc")
HELDOUT_DIRS = (
    "larynx/patient2/seq5", "sinus/clip-b", "fetoscopy/other", "bronchoscopy/edinburgh",
)
VAL_DIRS = ("larynx/patient1/seq4", "laparoscopy/sequence-320x240")
DIM_DIRS = ("capsule", "nasal-dim")


def default_data_root() -> Path:
    """``$ENDOLIGHT_DATA``, else ``../shared/data`` beside the repository or the working dir."""
    env = os.environ.get("ENDOLIGHT_DATA")
    if env:
        return Path(env)
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        cand = base.parent / "shared" / "data"
        if cand.is_dir():
            return cand
    return Path.cwd().parent / "shared" / "data"


@dataclass(frozen=True)
class FrameRef:
    """One real frame: an image file, or frame ``index`` of a video file."""

    path: Path
    organ: str
    index: int | None = None

    @property
    def name(self) -> str:
        return f"{self.path.stem}_{self.index:04d}" if self.index is not None else self.path.stem


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def _rel(root: Path, p: Path) -> str:
    return p.relative_to(root).as_posix()


def _split_of(root: Path, p: Path) -> str:
    rel = _rel(root, p)
    if rel.startswith(DIM_DIRS):
        return "dim"
    if rel.startswith(HELDOUT_DIRS) or rel == "laparoscopy/laparoscopic-view-960x540.png":
        return "heldout"
    if rel.startswith("gastroscopy-fujifilm/"):
        return {"5": "heldout", "4": "val"}.get(p.stem, "train")
    if rel.startswith(VAL_DIRS):
        return "val"
    for folder in TAIL_VAL:
        if rel.startswith(folder + "/"):
            files = _images(root / folder)
            return "val" if files.index(p) >= int(len(files) * 0.8) else "train"
    return "train"


def list_frames(split: str, root: Path | None = None) -> list[FrameRef]:
    """All frames of one split, in a fixed order.

    Raises:
        FileNotFoundError: the data folder is missing.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {SPLITS}")
    root = Path(root) if root else default_data_root()
    if not root.is_dir():
        raise FileNotFoundError(f"data folder {root} not found (set ENDOLIGHT_DATA)")
    refs = [
        FrameRef(p, _rel(root, p).split("/")[0]) for p in _images(root) if _split_of(root, p) == split
    ]
    clip = root / CLIP
    if clip.is_file():
        frames = {"val": CLIP_VAL, "heldout": CLIP_HELDOUT, "train": CLIP_TRAIN}
        refs += [FrameRef(clip, "laparoscopy", i) for i in frames.get(split, ())]
    return refs


@functools.lru_cache(maxsize=2)
def _video_frames(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def load_frame(ref: FrameRef, max_side: int | None = None) -> np.ndarray:
    """Load a frame as ``(H, W, 3)`` uint8 RGB, shrunk so its longer side is at most ``max_side``."""
    image = _video_frames(ref.path)[ref.index] if ref.index is not None else read_image(ref.path)
    if max_side and max(image.shape[:2]) > max_side:
        scale = max_side / max(image.shape[:2])
        size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return image


def degraded_pair(
    target: torch.Tensor, seed: int, cfg: DegradeConfig
) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """Deterministic ``(dim, target, params)`` for one ``(3, H, W)`` target and one seed."""
    rng = np.random.default_rng(seed)
    params = sample_params(cfg, rng)
    gen = torch.Generator().manual_seed(seed)
    return degrade(target, params, gen), target, params.to_dict()


def recolour(target: torch.Tensor, rng: np.random.Generator, gain: float, tint: float) -> torch.Tensor:
    """A ``(3, H, W)`` target in [0, 1] scaled in linear light by ``2^(u + t_c)`` per channel,
    ``u`` uniform in ``[-gain, gain]`` and each ``t_c`` in ``[-tint, tint]`` (log2 half-ranges;
    clipped at white). A scene of another brightness and colour, as another clip of the same
    organ shows: the exposure a model infers from a dim frame then leans less on the training
    frames' own (docs/model.md, "What DPED still keeps: sinus")."""
    if gain == 0.0 and tint == 0.0:
        return target
    log2 = rng.uniform(-gain, gain) + rng.uniform(-tint, tint, size=3)
    scale = torch.from_numpy(np.exp2(log2)).to(target.dtype)[:, None, None]
    lin = kornia.color.rgb_to_linear_rgb(target) * scale
    return kornia.color.linear_rgb_to_rgb(lin.clamp(0.0, 1.0))


def check_crop_area(crop_area: tuple[float, float]) -> None:
    """Raise ValueError unless ``(low, high)`` is a range of area fractions, ``0 < low <= high <= 1``."""
    low, high = crop_area
    if not 0.0 < low <= high <= 1.0:
        raise ValueError(f"crop_area must satisfy 0 < low <= high <= 1, got {crop_area}")


def crop_box(
    rng: np.random.Generator, h: int, w: int, crop_area: tuple[float, float], frame_aspect: bool
) -> tuple[int, int, int, int]:
    """A random crop ``(y0, x0, height, width)`` of an ``h x w`` frame for a square training input.

    Its area is a uniform share ``crop_area`` of the frame's; its aspect ratio (width / height) is
    log-uniform in 3/4 to 4/3, times the frame's own with ``frame_aspect``. The network sees every
    frame squashed to a square, a 16:9 one by 16/9: with ``frame_aspect`` its training crops are
    squashed as whole frames are at inference.
    """
    # A large crop (default 30-100 % of the area) keeps the light cone's global shape in view.
    area = rng.uniform(*crop_area) * h * w
    aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    if frame_aspect:
        aspect *= w / h
    ch = int(min(h, round(np.sqrt(area / aspect))))
    cw = int(min(w, round(np.sqrt(area * aspect))))
    return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw


class PairDataset(Dataset):
    """On-the-fly training pairs from real frames: random crop, flips, endoscope degradation.

    Each item is ``(dim, target)``, both ``(3, crop, crop)`` float in [0, 1]. Frames are loaded
    once (shrunk to ``max_side``) and kept in memory; ``epoch`` reseeds the augmentations so a
    run is reproducible for a given ``seed``.
    """

    def __init__(
        self,
        refs: list[FrameRef],
        crop: int = 256,
        max_side: int = 640,
        degrade_cfg: DegradeConfig | None = None,
        seed: int = 0,
        repeats: int = 1,
        crop_area: tuple[float, float] = (0.3, 1.0),
        frame_aspect: bool = False,
        transpose_square: bool = False,
        wide_crop_area: tuple[float, float] | None = None,
        recolour: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        if not refs:
            raise ValueError("no training frames")
        check_crop_area(crop_area)
        if wide_crop_area is not None:
            check_crop_area(wide_crop_area)
        self.frames = [load_frame(r, max_side) for r in refs]
        self.crop, self.seed, self.repeats, self.crop_area = crop, seed, repeats, crop_area
        self.frame_aspect, self.transpose_square = frame_aspect, transpose_square
        self.wide_crop_area, self.recolour = wide_crop_area, recolour
        self.degrade_cfg = degrade_cfg or DegradeConfig()
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.frames) * self.repeats

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        seed = (self.seed * 1_000_003 + self.epoch) * 100_003 + idx
        rng = np.random.default_rng(seed)
        image = self.frames[idx % len(self.frames)]
        h, w = image.shape[:2]
        # Frames wider than 5:4 (16:9 laparoscopy and sinus) may draw their crops from a range of
        # their own (tried with whole-frame-like crops: README, training).
        wide = self.wide_crop_area is not None and 4 * w > 5 * h
        area = self.wide_crop_area if wide else self.crop_area
        y0, x0, ch, cw = crop_box(rng, h, w, area, self.frame_aspect)
        patch = cv2.resize(image[y0 : y0 + ch, x0 : x0 + cw], (self.crop, self.crop),
                           interpolation=cv2.INTER_AREA)
        if rng.uniform() < 0.5:
            patch = patch[:, ::-1]
        if rng.uniform() < 0.5:
            patch = patch[::-1]
        # A scope rolls, so a square view's content has no up (within 5 %: bronchoscopy's 479x475);
        # a wider frame's squash to the square input has an axis, which a transpose would turn.
        if self.transpose_square and abs(h - w) <= max(h, w) // 20 and rng.uniform() < 0.5:
            patch = patch.transpose(1, 0, 2)
        target = recolour(to_tensor(patch), rng, *self.recolour)
        dim, target, _ = degraded_pair(target, seed, self.degrade_cfg)
        return dim, target
