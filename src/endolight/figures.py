"""Pictures of an evaluation: a labelled contact sheet and a PSNR-against-input-brightness plot.

Drawn with OpenCV (already a dependency) so evaluation needs no plotting library. Images are
``(H, W, 3)`` uint8 RGB.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import cv2
import numpy as np

WHITE, BLACK, GREY = (255, 255, 255), (0, 0, 0), (200, 200, 200)
# Line colours (RGB) for the plot: distinct at a glance, cycled past eight methods.
COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
FONT = cv2.FONT_HERSHEY_SIMPLEX


def _label(text: str, width: int, height: int = 22) -> np.ndarray:
    bar = np.full((height, width, 3), 255, np.uint8)
    scale = min(0.45, 0.45 * width / max(1, 8.2 * len(text)))
    cv2.putText(bar, text, (3, height - 7), FONT, scale, BLACK, 1, cv2.LINE_AA)
    return bar


def _crop(image: np.ndarray, frac: float = 0.6) -> np.ndarray:
    """The same centred square (``frac`` of the shorter side) of every column of a figure row."""
    h, w = image.shape[:2]
    s = int(min(h, w) * frac)
    y0, x0 = (h - s) // 2, (w - s) // 2
    return image[y0 : y0 + s, x0 : x0 + s]


def figure_grid(
    rows: list[list[np.ndarray]], labels: list[str], cell: int = 160, crop: bool = True,
    row_labels: Sequence[str] | None = None,
) -> np.ndarray:
    """Rows of images (each cropped alike, resized to ``cell`` px high) under a label header,
    with an optional label at the left of each row."""
    tiles = []
    for row in rows:
        ims = [_crop(im) if crop else im for im in row]
        ims = [cv2.resize(im, (cell if crop else max(1, round(im.shape[1] * cell / im.shape[0])), cell),
                          interpolation=cv2.INTER_AREA) for im in ims]
        tiles.append(ims)
    widths = [max(r[i].shape[1] for r in tiles) for i in range(len(labels))]
    gap = 4
    header = np.concatenate([np.concatenate([_label(t, w), np.full((22, gap, 3), 255, np.uint8)], 1)
                             for t, w in zip(labels, widths, strict=True)], 1)
    body = []
    for r in tiles:
        cells = [np.pad(im, ((0, 0), (0, w - im.shape[1] + gap), (0, 0)), constant_values=255)
                 for im, w in zip(r, widths, strict=True)]
        body += [np.concatenate(cells, 1), np.full((gap, header.shape[1], 3), 255, np.uint8)]
    grid = np.concatenate([header, *body], 0)
    if not row_labels:
        return grid
    side = max(_text_width(t) for t in row_labels) + 10
    column = np.full((grid.shape[0], side, 3), 255, np.uint8)
    for i, text in enumerate(row_labels):
        y = 22 + i * (cell + gap) + cell // 2
        cv2.putText(column, text, (4, y), FONT, 0.45, BLACK, 1, cv2.LINE_AA)
    return np.concatenate([column, grid], 1)


def _text_width(text: str, scale: float = 0.45) -> int:
    return cv2.getTextSize(text, FONT, scale, 1)[0][0]


def contact_sheet(samples: dict[str, tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]],
                  cell: int = 160, methods: Sequence[str] | None = None) -> np.ndarray:
    """One row per organ: the dim input, each method's result, the well-lit target (whole frames,
    ``cell`` px high), columns labelled with the method names and rows with the organs.

    ``samples`` maps an organ to ``(dim, {method: output}, target)``, as
    :func:`endolight.evaluate.evaluate` collects them; ``methods`` picks and orders the columns
    (default: all).
    """
    methods = list(methods or next(iter(samples.values()))[1])
    rows = [[dim, *[outs[m] for m in methods], target] for dim, outs, target in samples.values()]
    return figure_grid(rows, ["input", *methods, "target"], cell=cell, crop=False, row_labels=list(samples))


def brightness_bins(values: Sequence[float], n: int) -> np.ndarray:
    """Edges of up to ``n`` bins holding about equally many of ``values`` (quantiles), so each
    bin's mean rests on several frames; fewer bins when values repeat (one when all are equal)."""
    edges = np.unique(np.quantile(np.asarray(values, float), np.linspace(0, 1, n + 1)))
    return edges if len(edges) > 1 else np.repeat(edges, 2)


def bin_index(value: float, edges: np.ndarray) -> int:
    """The bin of ``value`` among ``edges`` (the last bin includes its upper edge)."""
    return int(np.clip(np.searchsorted(edges, value, side="right") - 1, 0, len(edges) - 2))


def psnr_by_brightness(rows: list[dict], n_bins: int = 5, methods: Sequence[str] | None = None
                       ) -> tuple[np.ndarray, dict[str, list[float]]]:
    """Bin edges of the dim inputs' mean brightness and each method's mean PSNR per bin (NaN for
    an empty bin) from :func:`endolight.evaluate.evaluate` rows (``methods``: default all)."""
    rows = [r for r in rows if methods is None or r["method"] in methods]
    per_image = {(r["organ"], r["image"]): float(r["input_brightness"]) for r in rows}
    edges = brightness_bins(list(per_image.values()), n_bins)
    acc: dict[str, list[list[float]]] = defaultdict(lambda: [[] for _ in range(len(edges) - 1)])
    for r in rows:
        acc[str(r["method"])][bin_index(float(r["input_brightness"]), edges)].append(float(r["psnr"]))
    return edges, {m: [float(np.mean(v)) if v else float("nan") for v in b] for m, b in acc.items()}


def brightness_plot(rows: list[dict], n_bins: int = 5, size: tuple[int, int] = (760, 440),
                    methods: Sequence[str] | None = None) -> np.ndarray:
    """PSNR (dB) against the dim input's mean brightness: one line per method, a point at the
    middle of each brightness bin (equal-count bins), with axes, grid and a legend."""
    edges, curves = psnr_by_brightness(rows, n_bins, methods)
    mids = (edges[:-1] + edges[1:]) / 2
    return line_plot({m: (mids, ys) for m, ys in curves.items()},
                     "PSNR (dB) against the dim input's mean brightness",
                     "mean luma of the dim input (bin edges: equal numbers of frames)", size, x_ticks=edges)


def training_curves(logs: dict[str, list[dict]], size: tuple[int, int] = (760, 440)) -> np.ndarray:
    """Validation PSNR per epoch of training runs, ``name -> rows of log.csv``."""
    curves = {name: ([float(r["epoch"]) for r in rows], [float(r["val_psnr"]) for r in rows])
              for name, rows in logs.items()}
    return line_plot(curves, "validation PSNR (dB) per epoch", "epoch", size)


def loss_curves(logs: dict[str, list[dict]], size: tuple[int, int] = (760, 440)) -> np.ndarray:
    """Training loss against the step of each run (``name -> rows with "step" and "loss"``), as a
    percentage of its mean over the first 10 % of steps, smoothed by a moving mean over 5 % of the
    steps (each point at the last step of its window). Runs without rows are left out."""
    curves = {}
    for name, rows in logs.items():
        if not rows:
            continue
        loss = np.array([float(r["loss"]) for r in rows])
        start = abs(float(loss[: max(1, len(loss) // 10)].mean())) or 1.0
        k = max(1, len(loss) // 20)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        curves[name] = ([float(rows[i + k - 1]["step"]) for i in range(len(smooth))], 100 * smooth / start)
    return line_plot(curves, "training loss, % of its mean over the first 10 % of steps", "step", size,
                     markers=False)


def line_plot(curves: dict[str, tuple[Sequence[float], Sequence[float]]], title: str, x_label: str,
              size: tuple[int, int] = (760, 440), x_ticks: Sequence[float] | None = None,
              markers: bool = True) -> np.ndarray:
    """Lines ``name -> (xs, ys)`` with axes, a grid and a legend (NaN points are skipped);
    ``x_ticks``: vertical grid lines (default: five, evenly spaced)."""
    w, h = size
    img = np.full((h, w, 3), 255, np.uint8)
    left, right, top, bottom = 60, 170, 36, 50
    values = [float(v) for _, ys in curves.values() for v in ys if np.isfinite(v)]
    lo, hi = np.floor(min(values)) - 1, np.ceil(max(values)) + 1
    xs_all = [float(x) for xs, _ in curves.values() for x in xs]
    x0, x1 = min(xs_all), max(xs_all)
    if x_ticks is not None:
        x0, x1 = min(x0, float(x_ticks[0])), max(x1, float(x_ticks[-1]))
    span = max(x1 - x0, 1e-6)
    ticks = np.linspace(x0, x1, 5) if x_ticks is None else np.asarray(x_ticks, float)

    def px(x: float, y: float) -> tuple[int, int]:
        return (round(left + (x - x0) / span * (w - left - right)),
                round(h - bottom - (y - lo) / (hi - lo) * (h - top - bottom)))

    step = max(1.0, float(np.ceil((hi - lo) / 6)))
    for y in np.arange(lo, hi + 1e-6, step):
        cv2.line(img, px(x0, y), px(x1, y), GREY, 1)
        cv2.putText(img, f"{y:.0f}", (8, px(x0, y)[1] + 5), FONT, 0.45, BLACK, 1, cv2.LINE_AA)
    for e in ticks:
        cv2.line(img, px(e, lo), px(e, hi), GREY, 1)
        # Enough decimals that neighbouring ticks of a narrow range read apart.
        text = f"{e:.0f}" if span >= 10 else f"{e:.2f}" if span >= 0.2 else f"{e:.3f}"
        cv2.putText(img, text, (px(e, lo)[0] - 16, h - bottom + 18), FONT, 0.42, BLACK, 1, cv2.LINE_AA)
    cv2.rectangle(img, px(x0, hi), px(x1, lo), BLACK, 1)
    for i, (name, (xs, ys)) in enumerate(curves.items()):
        colour = COLOURS[i % len(COLOURS)]
        pts = [px(float(x), float(y)) for x, y in zip(xs, ys, strict=True) if np.isfinite(y)]
        cv2.polylines(img, [np.array(pts, np.int32)], False, colour, 2, cv2.LINE_AA)
        for p in pts if markers else []:
            cv2.circle(img, p, 4, colour, -1, cv2.LINE_AA)
        ly = top + 12 + 22 * i
        cv2.line(img, (w - right + 12, ly), (w - right + 36, ly), colour, 2, cv2.LINE_AA)
        cv2.putText(img, name, (w - right + 42, ly + 5), FONT, 0.42, BLACK, 1, cv2.LINE_AA)
    cv2.putText(img, title, (left, 22), FONT, 0.55, BLACK, 1, cv2.LINE_AA)
    cv2.putText(img, x_label, (left, h - 10), FONT, 0.45, BLACK, 1, cv2.LINE_AA)
    return img
