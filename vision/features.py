"""Cheap per-image keys for real images, where nothing is planted: background colour, brightness.

Why: the opposing signals of the paper on CIFAR-10 are backgrounds shared across classes
(a blue-sky top in planes, ships and birds; grass under deer, horses and frogs). Grouping
images by class x background colour lets the miner test exactly those pairs. Three keys:

  * "top": the mean colour of the top rows, named by hue/lightness ("top=blue", "top=white"):
    fixed bins, the same for every subset, and the natural "feature" key for sky;
  * "border": a seeded k-means cluster (k ~ 8) of the mean colour of the image's outer ring,
    ordered dark to light and named by its centre ("border=blue 96,128,170");
  * "bright": mean luminance in three fixed bins ("dark", "mid", "bright").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lmprobe.errors import LmprobeError

COLOUR_NAMES = ("black", "grey", "white", "red", "orange", "brown", "yellow", "green", "cyan", "blue", "purple")
BRIGHTNESS_NAMES = ("dark", "mid", "bright")
BRIGHTNESS_EDGES = (85.0, 150.0)  # mean luminance on the 0..255 scale
TOP_ROWS = 8
BORDER = 3


@dataclass
class ImageFeatures:
    keys: dict[str, np.ndarray]  # key name -> int64 value per image
    names: dict[str, dict[int, str]]  # key name -> value -> human-readable label
    border_centers: np.ndarray  # [k, 3] RGB cluster centres: pass to label other images alike


def image_features(x_uint8: np.ndarray, *, k: int = 8, seed: int = 0,
                   border_centers: np.ndarray | None = None) -> ImageFeatures:
    """Keys for uint8 [N, H, W, 3] images; border clusters are fitted here unless centres are given."""
    x = np.asarray(x_uint8)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3 or min(x.shape[1:3]) <= 2 * BORDER:
        raise LmprobeError(f"image_features expects uint8 images [N, H, W, 3], got {x.dtype} {x.shape}")
    xf = x.astype(np.float64)
    top = xf[:, :TOP_ROWS].mean(axis=(1, 2))
    ring = np.ones(x.shape[1:3], bool)
    ring[BORDER:-BORDER, BORDER:-BORDER] = False
    border = xf[:, ring].mean(axis=1)
    luminance = (xf @ np.array([0.299, 0.587, 0.114])).mean(axis=(1, 2))

    if border_centers is None:
        border_centers = kmeans(border, k, seed)
    border_centers = np.asarray(border_centers, dtype=np.float64)
    border_ids = _nearest(border, border_centers)
    top_ids = colour_ids(top)
    bright_ids = np.searchsorted(np.array(BRIGHTNESS_EDGES), luminance, side="right")
    keys = {"top": top_ids, "border": border_ids, "bright": bright_ids.astype(np.int64)}
    names = {
        "top": {i: f"top={n}" for i, n in enumerate(COLOUR_NAMES)},
        "border": {i: f"border={colour_name(c)} {','.join(str(int(round(v))) for v in c)}"
                   for i, c in enumerate(border_centers)},
        "bright": dict(enumerate(BRIGHTNESS_NAMES)),
    }
    return ImageFeatures(keys=keys, names=names, border_centers=border_centers)


def colour_ids(rgb: np.ndarray) -> np.ndarray:
    """Index into COLOUR_NAMES for each RGB row (0..255): grey levels by lightness, else by hue."""
    rgb = np.asarray(rgb, dtype=np.float64).reshape(-1, 3)
    hi, lo = rgb.max(1), rgb.min(1)
    value = hi / 255.0
    saturation = np.where(hi > 0, (hi - lo) / np.maximum(hi, 1e-9), 0.0)
    r, g, b = rgb.T
    delta = np.maximum(hi - lo, 1e-9)
    hue = np.where(hi == r, ((g - b) / delta) % 6, np.where(hi == g, (b - r) / delta + 2, (r - g) / delta + 4)) * 60
    ids = np.select(
        [hue < 20, hue < 45, hue < 70, hue < 160, hue < 200, hue < 260, hue < 330],
        [3, 4, 6, 7, 8, 9, 10], default=3)
    ids = np.where(((ids == 4) & (value < 0.6)) | ((ids == 6) & (value < 0.5)), 5, ids)  # dark orange/yellow
    grey = np.where(value < 0.25, 0, np.where(value > 0.75, 2, 1))
    ids = np.where(saturation < 0.2, grey, ids)
    return np.where(value < 0.2, 0, ids).astype(np.int64)  # very dark reads as black whatever the hue


def colour_name(rgb) -> str:
    return COLOUR_NAMES[int(colour_ids(np.asarray(rgb))[0])]


def kmeans(points: np.ndarray, k: int, seed: int, iterations: int = 50) -> np.ndarray:
    """Seeded k-means++ then Lloyd; centres sorted dark to light so ids are stable across seeds."""
    points = np.asarray(points, dtype=np.float64)
    if len(points) == 0:
        raise LmprobeError("image_features needs at least one image")
    k = max(1, min(k, len(np.unique(points, axis=0))))
    rng = np.random.default_rng(seed)
    centers = [points[rng.integers(len(points))]]
    for _ in range(1, k):
        d2 = np.min(((points[:, None, :] - np.array(centers)[None]) ** 2).sum(-1), axis=1)
        centers.append(points[rng.choice(len(points), p=d2 / d2.sum())])
    centers = np.array(centers)
    for _ in range(iterations):
        assign = _nearest(points, centers)
        new = np.array([points[assign == j].mean(0) if np.any(assign == j) else centers[j] for j in range(k)])
        if np.allclose(new, centers):
            break
        centers = new
    return centers[np.argsort(centers.sum(1), kind="stable")]


def _nearest(points: np.ndarray, centers: np.ndarray) -> np.ndarray:
    d2 = ((points[:, None, :] - centers[None, :, :]) ** 2).sum(-1)
    return np.argmin(d2, axis=1).astype(np.int64)
