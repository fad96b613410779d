"""The distribution of per-example loss changes, counted in one streaming pass.

Bin edges must be fixed before the pass, so they come from a small deterministic sample of
the window (evenly spaced record pairs, strided columns): uniform bins between the sample's
0.1% and 99.9% quantiles. Every change is counted — values beyond the sampled range fall in
the first or last bin, whose outer edge is then moved to the exact minimum / maximum seen.
So `counts.sum()` is the number of changes counted, and every change lies inside the edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lmprobe.mining.inputs import TraceWindow

SAMPLE_RECORD_PAIRS = 32
SAMPLE_CELLS = 1 << 18
TAIL_QUANTILE = 0.001


@dataclass
class Histogram:
    """Counts of loss changes (loss[t+1] - loss[t], per example) in bins with these edges."""

    edges: np.ndarray  # float64 [bins + 1]
    counts: np.ndarray  # int64 [bins]
    n_changes: int
    min_change: float
    max_change: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "edges": [float(e) for e in self.edges],
            "counts": [int(c) for c in self.counts],
            "n_changes": int(self.n_changes),
            "min_change": float(self.min_change),
            "max_change": float(self.max_change),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Histogram":
        return cls(
            edges=np.asarray(data["edges"], dtype=np.float64),
            counts=np.asarray(data["counts"], dtype=np.int64),
            n_changes=int(data["n_changes"]),
            min_change=float(data["min_change"]),
            max_change=float(data["max_change"]),
        )


def sample_edges(window: TraceWindow, bins: int) -> np.ndarray:
    """Uniform edges over the robust range of a deterministic sample of loss changes."""
    n_intervals = window.n_intervals
    pairs = np.unique(
        np.linspace(0, n_intervals - 1, min(SAMPLE_RECORD_PAIRS, n_intervals)).round().astype(int)
    )
    stride = max(1, int(np.ceil(pairs.size * window.n_examples / SAMPLE_CELLS)))
    samples = []
    for interval in pairs:
        row = window.row_start + int(interval)
        rows = np.asarray(window.losses[row : row + 2, ::stride], dtype=np.float32)
        change = rows[1] - rows[0]
        samples.append(change[np.isfinite(change)])
    sample = np.concatenate(samples) if samples else np.zeros(0, np.float32)
    if sample.size == 0:
        lo, hi = -1.0, 1.0
    else:
        lo, hi = (float(q) for q in np.quantile(sample, [TAIL_QUANTILE, 1 - TAIL_QUANTILE]))
    if not hi > lo:
        half = max(abs(lo), 1.0) * 1e-3
        lo, hi = lo - half, hi + half
    return np.linspace(lo, hi, bins + 1)


class HistogramCounter:
    """Accumulates bin counts block by block; fixed edges, open-ended outer bins."""

    def __init__(self, edges: np.ndarray):
        self.edges = np.asarray(edges, dtype=np.float64)
        self.bins = self.edges.size - 1
        self._lo = np.float32(self.edges[0])
        self._scale = np.float32(self.bins / (self.edges[-1] - self.edges[0]))
        self.counts = np.zeros(self.bins, dtype=np.int64)
        self.n_changes = 0
        self.min_change = np.inf
        self.max_change = -np.inf

    def add(self, changes: np.ndarray) -> None:
        """Count a block of finite float32 changes."""
        if changes.size == 0:
            return
        position = (changes - self._lo) * self._scale
        np.clip(position, 0, self.bins - 1, out=position)
        self.counts += np.bincount(
            position.astype(np.int32).ravel(), minlength=self.bins
        )
        self.n_changes += changes.size
        self.min_change = min(self.min_change, float(changes.min()))
        self.max_change = max(self.max_change, float(changes.max()))

    def result(self) -> Histogram:
        edges = self.edges.copy()
        if self.n_changes:
            edges[0] = min(edges[0], self.min_change)
            edges[-1] = max(edges[-1], self.max_change)
        return Histogram(
            edges=edges,
            counts=self.counts.copy(),
            n_changes=int(self.n_changes),
            min_change=float(self.min_change) if self.n_changes else 0.0,
            max_change=float(self.max_change) if self.n_changes else 0.0,
        )
