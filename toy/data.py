"""The toy data models (see toy.config), with each example's keys for the miner.

Keys (int64, one per example): "feature" = 1 where the large feature is present, -1 where it is
absent (a negative value means "no such feature": examples without it share nothing, see
lmprobe.mining.opposing); "target" = what the two groups of a pair differ in: for "opposing" the
label (0: y = -1, 1: y = +1), for "polynomial" the side of the curve (0: below, 1: above, 2: on it).
So `lmprobe mine --by feature-target` groups (feature, target), and the planted pair is
(feature=1, target=1) against (feature=1, target=0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lmprobe.errors import LmprobeError
from toy.config import ToyDataConfig

FEATURE_NAMES = {1: "feature", -1: "no feature"}
TARGET_NAMES = {
    "opposing": {0: "y=-1", 1: "y=+1"},
    "polynomial": {0: "below", 1: "above", 2: "on curve"},
}


@dataclass
class ToySplit:
    x: np.ndarray  # float32 [n, d]
    y: np.ndarray  # float32 [n]
    keys: dict[str, np.ndarray]  # "feature", "target" -> int64 [n]


@dataclass
class ToyData:
    kind: str
    train: ToySplit
    val: ToySplit
    value_names: dict[str, dict[int, str]] = field(default_factory=dict)

    @property
    def n_inputs(self) -> int:
        return int(self.train.x.shape[1])

    def summary(self) -> dict:
        keys = self.train.keys
        planted = {}
        for t, name in self.value_names["target"].items():
            size = int(((keys["feature"] == 1) & (keys["target"] == t)).sum())
            if size:
                planted[name] = size
        return {"kind": self.kind, "n_train": len(self.train.y), "n_val": len(self.val.y),
                "n_inputs": self.n_inputs, "planted_groups": planted}


def make_data(cfg: ToyDataConfig, seed: int) -> ToyData:
    """Train and validation splits of `cfg.kind`, deterministic in (cfg, seed)."""
    check(cfg)
    if cfg.kind == "opposing":
        train, val = opposing_split(cfg, cfg.n_train, seed, 0), opposing_split(cfg, cfg.n_val, seed, 1)
    else:  # the validation grid sits between the training points
        train, val = polynomial_split(cfg, cfg.n_train, 0.0), polynomial_split(cfg, cfg.n_val, 0.5)
    return ToyData(cfg.kind, train, val, {"feature": dict(FEATURE_NAMES), "target": dict(TARGET_NAMES[cfg.kind])})


def check(cfg: ToyDataConfig) -> None:
    if cfg.n_train < 4 or cfg.n_val < 4:
        raise LmprobeError(f"data.n_train and data.n_val must be at least 4 (got {cfg.n_train}, {cfg.n_val})")
    if not 0.0 < cfg.feature_fraction <= 1.0:
        raise LmprobeError(f"data.feature_fraction must be in (0, 1], got {cfg.feature_fraction}")
    if not 0.0 <= cfg.agree_fraction <= 1.0:
        raise LmprobeError(f"data.agree_fraction must be in [0, 1], got {cfg.agree_fraction}")
    if cfg.dim < 1:
        raise LmprobeError(f"data.dim must be at least 1, got {cfg.dim}")
    coefficients(cfg.coefficients)


def coefficients(text: str) -> np.ndarray:
    try:
        values = np.array([float(c) for c in text.split(",")], dtype=np.float64)
    except ValueError:
        raise LmprobeError(f"data.coefficients must be comma-separated numbers (constant term first), "
                           f"got {text!r}") from None
    return values


def _balanced_signs(n: int, rng: np.random.Generator) -> np.ndarray:
    signs = np.where(np.arange(n) % 2 == 0, 1.0, -1.0)
    return signs[rng.permutation(n)]


def opposing_split(cfg: ToyDataConfig, n: int, seed: int, part: int) -> ToySplit:
    """x = (x0, x1): x0 = y * signal * u / |u| + noise for all; x1 = feature_scale for the feature
    examples (the same value for both labels), 0 otherwise. Of the feature examples a fraction
    agree_fraction has y = +1; the others are balanced."""
    rng = np.random.default_rng([seed, part, 0x70E])
    n_feature = int(round(cfg.feature_fraction * n))
    present = np.zeros(n, dtype=bool)
    present[rng.permutation(n)[:n_feature]] = True
    y = np.empty(n)
    n_agree = int(round(cfg.agree_fraction * n_feature))
    y[present] = rng.permutation(np.where(np.arange(n_feature) < n_agree, 1.0, -1.0))
    y[~present] = _balanced_signs(int((~present).sum()), rng)
    direction = np.ones(cfg.dim) / np.sqrt(cfg.dim)
    x0 = y[:, None] * cfg.signal * direction + cfg.noise * rng.standard_normal((n, cfg.dim))
    x1 = np.where(present, cfg.feature_scale, 0.0)[:, None]
    keys = {"feature": np.where(present, 1, -1).astype(np.int64), "target": (y > 0).astype(np.int64)}
    return ToySplit(np.concatenate([x0, x1], axis=1).astype(np.float32), y.astype(np.float32), keys)


def polynomial_split(cfg: ToyDataConfig, n: int, shift: float) -> ToySplit:
    """n grid points of [-1, 1] (shifted by `shift` grid steps), inputs (x, z), targets p(x); every
    k-th point carries z = feature_scale and a target `offset` above the curve, alternating with below."""
    step = 2.0 / (n - 1)
    x = np.clip(-1.0 + step * (np.arange(n) + shift), -1.0, 1.0)
    curve = np.polynomial.polynomial.polyval(x, coefficients(cfg.coefficients))
    n_feature = max(2, int(round(cfg.feature_fraction * n)))
    chosen = np.unique(np.linspace(0, n - 1, n_feature).round().astype(np.int64))
    side = np.zeros(n)
    side[chosen] = np.where(np.arange(len(chosen)) % 2 == 0, 1.0, -1.0)
    present = side != 0
    z = np.where(present, cfg.feature_scale, 0.0)
    y = curve + cfg.offset * side
    target = np.where(side > 0, 1, np.where(side < 0, 0, 2)).astype(np.int64)
    keys = {"feature": np.where(present, 1, -1).astype(np.int64), "target": target}
    return ToySplit(np.stack([x, z], axis=1).astype(np.float32), y.astype(np.float32), keys)
