"""Synthetic 32x32 images with planted opposing signals: the offline default, with a known answer.

Each class is a foreground pattern (stripes, checkerboard, ring, ...) drawn in a random colour
at a jittered position over a background, with pixel noise. On top of that, planted
features: a large background ("sky", a bright blue gradient over the whole image) goes with
most images of one class (90% of class 0) and with a few of another (15% of class 1); every
other image gets a random non-blue, non-green background. Early in training the net learns
"sky => class 0", the cheapest feature there is, so class-1 images with sky get worse while
class-0 images with sky get better; as the net learns the patterns and the step size pushes it
to the edge of stability, the two groups keep swinging against each other. A second,
smaller plant ("grass": a green lower half, 90% of class 2 and 15% of class 3) gives the miner
a second pair to find when there are at least 4 classes.

Per-image keys: the label ("target") and `feature` (0 none, 1 sky, 2 grass); the planted pairs
are (feature=1, target=0) vs (feature=1, target=1) and (feature=2, target=2) vs (2, 3).
Give feature 0 to the miner as "no feature" (a negative key): "plain background" is itself
shared, unevenly, by the classes (it mostly means 1 or 3), so (0, 1) vs (0, 3) also swings.

Measured (full-batch GD, cross-entropy, 1000 images, 4 classes, one thread): per-interval mean
loss changes of the planted groups, detrended on the other images, correlate at -0.82..-0.87
(sky) and -0.80..-0.84 (grass) for the tanh MLP (lr 0.1, 200 steps, seeds 0-4) and -0.83..-0.96
/ -0.95..-0.98 for the small CNN (width 32, lr 0.05, 150 steps, seeds 0-3); lmprobe's miner
finds exactly the two planted pairs in all of them.
"""

from __future__ import annotations

import numpy as np

from lmprobe.errors import LmprobeError
from vision.images import ImageData, channel_stats, per_class_counts

PATTERNS = ("hstripes", "vstripes", "checker", "ring", "cross", "diagonal", "disc", "xmark", "frame", "dots")
FEATURE_NAMES = {0: "none", 1: "sky", 2: "grass"}
SKY, GRASS = 1, 2
MAJORITY, MINORITY = 0.9, 0.15  # share of the main / the opposing class that carries a planted feature
PATCH = 14  # pattern size in pixels
JITTER = 5  # the pattern's top-left corner moves by up to this many pixels from centred
NOISE = 24.0  # pixel noise, std on the 0..255 scale
DEFAULT_CLASSES = 4


def make_synthetic(n_train: int, n_val: int, seed: int = 0,
                   n_classes: int = DEFAULT_CLASSES) -> tuple[ImageData, dict]:
    """(images, planted): a seeded class-balanced set and the description of its planted pairs."""
    if not 2 <= n_classes <= len(PATTERNS):
        raise LmprobeError(f"synthetic data has 2 to {len(PATTERNS)} classes, got {n_classes}")
    pairs = [(SKY, 0, 1)] + ([(GRASS, 2, 3)] if n_classes >= 4 else [])
    train = _make_split(n_train, n_classes, pairs, np.random.default_rng([seed, 0]))
    val = _make_split(n_val, n_classes, pairs, np.random.default_rng([seed, 1]))
    planted = {
        "key": "feature",
        "feature_names": {str(k): FEATURE_NAMES[k] for k in sorted({0, *[p[0] for p in pairs]})},
        "pairs": [{"feature": f, "feature_name": FEATURE_NAMES[f], "classes": [a, b],
                   "class_names": [PATTERNS[a], PATTERNS[b]], "shares": [MAJORITY, MINORITY]}
                  for f, a, b in pairs],
    }
    mean, std = channel_stats(train[0])
    data = ImageData(
        train_x=train[0], train_y=train[1], val_x=val[0], val_y=val[1], class_names=list(PATTERNS[:n_classes]),
        train_ids=np.arange(n_train, dtype=np.int64), val_ids=np.arange(n_val, dtype=np.int64),
        source=f"synthetic (seed {seed}, {n_classes} classes, planted sky{'/grass' if len(pairs) > 1 else ''})",
        mean=mean, std=std, train_feature=train[2], val_feature=val[2],
        feature_names={int(k): v for k, v in planted["feature_names"].items()}, planted=planted)
    return data, planted


def _make_split(n: int, n_classes: int, pairs, rng: np.random.Generator):
    labels = np.repeat(np.arange(n_classes), per_class_counts(n, n_classes))
    labels = labels[rng.permutation(n)]
    feature = np.zeros(n, np.int64)
    for value, major, minor in pairs:
        for cls, share in ((major, MAJORITY), (minor, MINORITY)):
            members = np.flatnonzero(labels == cls)
            feature[rng.permutation(members)[: int(round(share * len(members)))]] = value
    images = np.empty((n, 32, 32, 3), np.float32)
    for i in range(n):
        images[i] = _background(feature[i], rng)
        _paint_pattern(images[i], PATTERNS[labels[i]], rng)
    images += rng.normal(0.0, NOISE, images.shape).astype(np.float32)
    return np.clip(np.rint(images), 0, 255).astype(np.uint8), labels.astype(np.int64), feature


def _background(feature: int, rng: np.random.Generator) -> np.ndarray:
    """32x32x3 float background: sky (blue gradient), grass (green lower half) or plain random."""
    rows = np.linspace(0.0, 1.0, 32, dtype=np.float32)[:, None, None]
    base = _plain_colour(rng)
    if feature == SKY:
        top = np.array([70, 130, 235], np.float32) + rng.normal(0, 8, 3)
        bottom = np.array([170, 210, 250], np.float32) + rng.normal(0, 8, 3)
        return np.broadcast_to(top * (1 - rows) + bottom * rows, (32, 32, 3)).copy()
    image = np.broadcast_to(base, (32, 32, 3)).copy()
    if feature == GRASS:
        image[16:] = np.array([60, 150, 50], np.float32) + rng.normal(0, 8, 3)
    return image


def _plain_colour(rng: np.random.Generator) -> np.ndarray:
    """A random colour that is neither sky-blue nor grass-green (red/yellow/grey/brown/purple)."""
    while True:
        colour = rng.uniform(30, 230, 3).astype(np.float32)
        r, g, b = colour
        if b > r + 20 and b > g - 10:  # bluish
            continue
        if g > r + 20 and g > b + 20:  # greenish
            continue
        return colour


def _paint_pattern(image: np.ndarray, pattern: str, rng: np.random.Generator) -> None:
    mask = _mask(pattern)
    top, left = (32 - PATCH) // 2 + rng.integers(-JITTER, JITTER + 1, 2)
    top, left = int(np.clip(top, 0, 32 - PATCH)), int(np.clip(left, 0, 32 - PATCH))
    colour = rng.uniform(0, 255, 3).astype(np.float32)
    window = image[top:top + PATCH, left:left + PATCH]
    window[mask] = colour


_MASKS: dict[str, np.ndarray] = {}


def _mask(pattern: str) -> np.ndarray:
    if pattern not in _MASKS:
        y, x = np.mgrid[0:PATCH, 0:PATCH]
        c = (PATCH - 1) / 2
        r = np.hypot(y - c, x - c)
        masks = {
            "hstripes": (y // 2) % 2 == 0,
            "vstripes": (x // 2) % 2 == 0,
            "checker": ((y // 3) + (x // 3)) % 2 == 0,
            "ring": (r > PATCH * 0.28) & (r < PATCH * 0.48),
            "cross": (np.abs(y - c) < 2) | (np.abs(x - c) < 2),
            "diagonal": ((x + y) // 2) % 2 == 0,
            "disc": r < PATCH * 0.4,
            "xmark": (np.abs(y - x) < 2) | (np.abs(y + x - 2 * c) < 2),
            "frame": (np.minimum(np.minimum(y, x), np.minimum(PATCH - 1 - y, PATCH - 1 - x)) < 2),
            "dots": (y % 4 < 2) & (x % 4 < 2),
        }
        _MASKS.update(masks)
    return _MASKS[pattern]
