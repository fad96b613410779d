"""One streamed pass over the probe trace: how every recorded interval moved the losses.

Per interval (record i -> i+1) it keeps the mean change, the mean |change|, the spread, the
gross increase (sum of positive changes), the share of that increase carried by the top 1%
and 5% of examples, the mean change of the 1% that rose most and of the 1% that fell most,
and the share of examples whose loss rose. The gross increase depends on the trend: early in
training almost every loss falls, and the few that rise carry all of a tiny increase. So the
shares are also given for the *excess* change (change minus the interval's mean change): the
top 1%'s share of the summed positive excess, about 0.05 for Gaussian noise, near 1 when a
few examples jump against the rest.

The trace may be an np.memmap larger than memory: it is read in blocks of at most
`chunk_cells` values (whole rows when they fit, else column chunks of a pair of rows; see
`lmprobe.mining.stream.plan_chunks`), and the top-k candidates of an interval are merged
across column chunks, so every number is exact whatever the chunking. Non-finite changes
count as 0 and are tallied in `n_nonfinite`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lmprobe.errors import LmprobeError
from lmprobe.mining.inputs import select_window
from lmprobe.mining.stream import DEFAULT_CHUNK_CELLS, plan_chunks, row_blocks

TAIL = 0.01
WIDE_TAIL = 0.05


def tail_count(n: int, fraction: float) -> int:
    """How many examples the top `fraction` holds (at least one)."""
    return max(1, int(round(fraction * n)))


def _top(values: np.ndarray, k: int, largest: bool) -> np.ndarray:
    """Row-wise k largest (or smallest) values, unsorted."""
    k = min(k, values.shape[1])
    if k == values.shape[1]:
        return values
    if largest:
        return np.partition(values, values.shape[1] - k, axis=1)[:, -k:]
    return np.partition(values, k - 1, axis=1)[:, :k]


def _merge(kept: np.ndarray | None, new: np.ndarray, k: int, largest: bool) -> np.ndarray:
    return _top(new if kept is None else np.concatenate([kept, new], axis=1), k, largest)


@dataclass
class IntervalStats:
    """Movement of the per-example losses at every recorded interval, [intervals] each."""

    step_from: np.ndarray
    step_to: np.ndarray
    n_examples: int
    mean: np.ndarray  # mean change
    abs_mean: np.ndarray  # mean |change|
    std: np.ndarray  # cross-sectional std of the changes
    rise: np.ndarray  # gross increase: sum of the positive changes
    top_rise: np.ndarray  # mean change of the 1% that rose most
    top_fall: np.ndarray  # mean change of the 1% that fell most (negative when they fell)
    share_top1: np.ndarray  # share of `rise` carried by the top 1% (NaN when nothing rose)
    share_top5: np.ndarray
    excess_share_top1: np.ndarray  # the same for changes relative to the interval's mean change
    excess_share_top5: np.ndarray  # (what a few examples carry beyond the common trend)
    frac_rose: np.ndarray  # share of examples whose loss rose
    n_nonfinite: np.ndarray  # int: changes that were not finite (counted as 0)

    @property
    def n_intervals(self) -> int:
        return int(self.step_from.size)

    def movement(self, kind: str = "tail_spread") -> np.ndarray:
        """Aggregate movement whatever its sign. tail_spread: top_rise - top_fall (how far apart
        the 1% tails moved; a common shift of every loss cancels); abs: mean |change|; std."""
        if kind == "tail_spread":
            return self.top_rise - self.top_fall
        if kind == "abs":
            return self.abs_mean
        if kind == "std":
            return self.std
        raise LmprobeError(f"unknown movement {kind!r}: use tail_spread, abs or std")

    def row(self, i: int) -> dict[str, Any]:
        return {
            "step_from": int(self.step_from[i]), "step_to": int(self.step_to[i]),
            "mean": float(self.mean[i]), "abs_mean": float(self.abs_mean[i]), "std": float(self.std[i]),
            "rise": float(self.rise[i]), "top_rise": float(self.top_rise[i]), "top_fall": float(self.top_fall[i]),
            "share_top1": float(self.share_top1[i]), "share_top5": float(self.share_top5[i]),
            "excess_share_top1": float(self.excess_share_top1[i]),
            "excess_share_top5": float(self.excess_share_top5[i]),
            "frac_rose": float(self.frac_rose[i]),
        }


def _changes(losses: Any, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
    return np.diff(np.asarray(losses[r0:r1, c0:c1], dtype=np.float64), axis=0)


def scan_intervals(losses: Any, steps: Any, *, tail: float = TAIL, wide_tail: float = WIDE_TAIL,
                   chunk_cells: int = DEFAULT_CHUNK_CELLS, window: tuple[int, int] | None = None) -> IntervalStats:
    """Movement statistics of every interval of the trace (within `window`), in one pass."""
    win = select_window(losses, steps, window)
    n, m = win.n_examples, win.n_intervals
    k1, k5 = tail_count(n, tail), tail_count(n, wide_tail)
    k_top = max(k1, k5)
    total, abs_total, sq_total, rise = (np.zeros(m) for _ in range(4))
    rose, nonfinite = np.zeros(m, np.int64), np.zeros(m, np.int64)
    top_rise, top_fall, share1, share5, excess1, excess5 = (np.full(m, np.nan) for _ in range(6))
    plan = plan_chunks(n, chunk_cells)
    for r0, r1 in row_blocks(win.row_start, win.row_stop, plan.rows_per_block):
        first = r0 - win.row_start
        rows = slice(first, first + r1 - r0 - 1)
        highs = lows = None
        for c0, c1 in plan.col_chunks:
            change = _changes(win.losses, r0, r1, c0, c1)
            finite = np.isfinite(change)
            if not finite.all():
                nonfinite[rows] += (~finite).sum(axis=1)
                change = np.where(finite, change, 0.0)
            total[rows] += change.sum(axis=1)
            abs_total[rows] += np.abs(change).sum(axis=1)
            sq_total[rows] += (change * change).sum(axis=1)
            rise[rows] += np.maximum(change, 0.0).sum(axis=1)
            rose[rows] += (change > 0).sum(axis=1)
            highs = _merge(highs, _top(change, k_top, True), k_top, True)
            lows = _merge(lows, _top(change, k1, False), k1, False)
        highs = -np.sort(-highs, axis=1)
        centre = total[rows] / n
        # sum of positive deviations from the mean = half the sum of absolute deviations; exact
        # in the same pass when a block holds whole rows, else a second read of the block.
        spread = np.zeros(r1 - r0 - 1)
        for c0, c1 in plan.col_chunks:
            change = change if len(plan.col_chunks) == 1 else _changes(win.losses, r0, r1, c0, c1)
            spread += np.abs(np.where(np.isfinite(change), change, 0.0) - centre[:, None]).sum(axis=1)
        excess = highs - centre[:, None]
        with np.errstate(all="ignore"):
            excess1[rows] = np.where(spread > 0, np.maximum(excess[:, :k1], 0).sum(axis=1) / (spread / 2), np.nan)
            excess5[rows] = np.where(spread > 0, np.maximum(excess[:, :k5], 0).sum(axis=1) / (spread / 2), np.nan)
            top_rise[rows] = highs[:, :k1].mean(axis=1)
            top_fall[rows] = lows.mean(axis=1)
            gross = rise[rows]
            share1[rows] = np.where(gross > 0, np.maximum(highs[:, :k1], 0).sum(axis=1) / gross, np.nan)
            share5[rows] = np.where(gross > 0, np.maximum(highs[:, :k5], 0).sum(axis=1) / gross, np.nan)
    mean = total / n
    return IntervalStats(
        step_from=win.steps[:-1].copy(), step_to=win.steps[1:].copy(), n_examples=n,
        mean=mean, abs_mean=abs_total / n, std=np.sqrt(np.maximum(sq_total / n - mean * mean, 0.0)),
        rise=rise, top_rise=top_rise, top_fall=top_fall, share_top1=share1, share_top5=share5,
        excess_share_top1=excess1, excess_share_top5=excess5,
        frac_rose=rose / n, n_nonfinite=nonfinite,
    )
