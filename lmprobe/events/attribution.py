"""Who carried an event: attribution of one interval's loss changes to examples and groups.

For the interval record i -> i+1 of the trace, streamed over column chunks (two rows at a
time, so a memmap of any width is fine):

* concentration — the share of the probe's gross loss increase (sum of the positive changes;
  the net change of a swing is near zero) carried by the top 1% and 5% of examples, the same
  for the excess over the interval's mean change (see `intervals`), and the share of examples
  whose loss rose. Compare with the same shares at ordinary intervals
  (`IntervalStats.share_top1`): the paper's claim is that a few examples carry the spike;
* groups — for each grouping (by "target", "feature-target", ...) the groups whose summed
  change rose most and fell most, with size, mean, sum, share of the gross increase and a
  t-statistic of the mean (mean / standard error of the members' changes);
* opposing pairs at the event — a group that rose and a group that fell that agree on every
  key but "target" (as in `lmprobe.mining.opposing.candidate_blocks`), scored by
  min(sum_up, -sum_down): the loss both sides moved, so a pair needs size *and* strength on
  both sides. Welch's t of the two means is reported alongside.

`lmprobe.events.lead_lag` answers the last question of an event: which logged signal moved first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from lmprobe.errors import LmprobeError
from lmprobe.events.intervals import TAIL, WIDE_TAIL, _merge, _top, tail_count
from lmprobe.mining.groups import GroupIndex, group_examples
from lmprobe.mining.inputs import parse_by
from lmprobe.mining.opposing import TARGET, candidate_blocks
from lmprobe.mining.stream import DEFAULT_CHUNK_CELLS

DEFAULT_MIN_SIZE = 5


@dataclass
class GroupMove:
    """How one group moved at the event."""

    by: str
    key: tuple[int, ...]
    size: int
    mean: float  # mean change of its members
    sum: float  # summed change (its contribution to the probe's total change)
    share: float  # its members' positive changes / the probe's gross increase
    t: float  # mean / standard error
    examples: list[int] = field(default_factory=list)  # members that moved most its way

    def to_dict(self, key_names: tuple[str, ...]) -> dict[str, Any]:
        return {"by": self.by, "key": {n: int(v) for n, v in zip(key_names, self.key)}, "size": int(self.size),
                "mean": float(self.mean), "sum": float(self.sum), "share": float(self.share),
                "t": float(self.t), "examples": [int(i) for i in self.examples]}


@dataclass
class EventPair:
    """A group that rose and one that fell at the event, agreeing on every key but the target."""

    by: str
    up: GroupMove
    down: GroupMove
    score: float  # min(sum_up, -sum_down)
    t: float  # Welch t of mean_up - mean_down

    def to_dict(self, key_names: tuple[str, ...]) -> dict[str, Any]:
        return {"by": self.by, "up": self.up.to_dict(key_names), "down": self.down.to_dict(key_names),
                "score": float(self.score), "t": float(self.t)}


@dataclass
class Attribution:
    """Everything said about one interval of the trace."""

    row: int  # record index of the interval's start in the loss matrix
    step_from: int
    step_to: int
    n_examples: int
    mean: float
    rise: float  # gross increase: sum of positive changes
    share_top1: float  # of `rise`, carried by the top 1% / 5% of examples
    share_top5: float
    excess_share_top1: float  # the same shares of the increase beyond the mean change
    excess_share_top5: float  # (see `intervals`): comparable between early and late training
    frac_rose: float
    key_names: dict[str, tuple[str, ...]]  # by -> key names
    up: dict[str, list[GroupMove]]  # by -> groups that rose most, largest sum first
    down: dict[str, list[GroupMove]]  # by -> groups that fell most
    pairs: list[EventPair]  # best score first, over every grouping with a target

    def to_dict(self) -> dict[str, Any]:
        return {
            "row": int(self.row), "step_from": int(self.step_from), "step_to": int(self.step_to),
            "n_examples": int(self.n_examples), "mean": float(self.mean), "rise": float(self.rise),
            "share_top1": float(self.share_top1), "share_top5": float(self.share_top5),
            "excess_share_top1": float(self.excess_share_top1),
            "excess_share_top5": float(self.excess_share_top5),
            "frac_rose": float(self.frac_rose),
            "up": {by: [g.to_dict(self.key_names[by]) for g in moves] for by, moves in self.up.items()},
            "down": {by: [g.to_dict(self.key_names[by]) for g in moves] for by, moves in self.down.items()},
            "pairs": [p.to_dict(self.key_names[p.by]) for p in self.pairs],
        }


def build_groupings(keys: Mapping[str, np.ndarray], by: Sequence[str] | str,
                    min_size: int = DEFAULT_MIN_SIZE) -> dict[str, GroupIndex]:
    """One GroupIndex per grouping spec ("target", "feature-target", ...)."""
    specs = [by] if isinstance(by, str) else list(by)
    return {spec: group_examples(keys, parse_by(spec, keys), min_size=min_size) for spec in specs}


def _interval_columns(losses: Any, row: int, chunk_cols: int):
    n = int(losses.shape[1])
    for c0 in range(0, n, chunk_cols):
        c1 = min(n, c0 + chunk_cols)
        block = np.asarray(losses[row : row + 2, c0:c1], dtype=np.float64)
        change = block[1] - block[0]
        yield c0, c1, np.where(np.isfinite(change), change, 0.0)


def _welch_t(mean_a, var_a, n_a, mean_b, var_b, n_b) -> float:
    se = np.sqrt(var_a / n_a + var_b / n_b)
    return float((mean_a - mean_b) / se) if se > 0 else float(np.sign(mean_a - mean_b) * np.inf)


class _GroupTotals:
    """Per-group sums of change, squared change and positive change for one grouping."""

    def __init__(self, index: GroupIndex):
        self.index = index
        g = index.n_groups
        self.sum, self.sq, self.pos = np.zeros(g), np.zeros(g), np.zeros(g)

    def add(self, c0: int, c1: int, change: np.ndarray) -> None:
        gid = self.index.group_of[c0:c1]
        ok = gid >= 0
        if not ok.any():
            return
        g, d, size = gid[ok], change[ok], self.index.n_groups
        self.sum += np.bincount(g, weights=d, minlength=size)
        self.sq += np.bincount(g, weights=d * d, minlength=size)
        self.pos += np.bincount(g, weights=np.maximum(d, 0.0), minlength=size)

    def stats(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(mean, variance of members' changes (ddof 1), t of the mean)."""
        n = self.index.sizes.astype(np.float64)
        mean = self.sum / np.maximum(n, 1)
        var = np.maximum(self.sq - n * mean * mean, 0.0) / np.maximum(n - 1, 1)
        with np.errstate(all="ignore"):
            t = np.where(var > 0, mean / np.sqrt(var / n), np.sign(mean) * np.inf)
        return mean, var, t


def attribute_interval(
    losses: Any,
    row: int,
    steps: Sequence[int],
    groupings: Mapping[str, GroupIndex],
    *,
    top_groups: int = 5,
    n_pairs: int = 5,
    per_block: int = 3,
    examples: int = 3,
    tail: float = TAIL,
    wide_tail: float = WIDE_TAIL,
    chunk_cells: int = DEFAULT_CHUNK_CELLS,
) -> Attribution:
    """Attribute the loss changes from record `row` to `row + 1` of `losses` ([records,
    examples]; `steps` holds one step per record). `groupings` comes from `build_groupings`."""
    n = int(losses.shape[1])
    records = min(int(losses.shape[0]), len(steps))
    if not 0 <= row < records - 1:
        raise LmprobeError(f"interval start record {row} is outside the trace: it has {records} records,"
                           f" so intervals start at 0..{records - 2}")
    k1, k5 = tail_count(n, tail), tail_count(n, wide_tail)
    k_top = max(k1, k5)
    totals = {by: _GroupTotals(index) for by, index in groupings.items()}
    total = rise = 0.0
    rose = 0
    highs = None
    for c0, c1, change in _interval_columns(losses, row, max(1, chunk_cells // 2)):
        total += float(change.sum())
        rise += float(np.maximum(change, 0.0).sum())
        rose += int((change > 0).sum())
        highs = _merge(highs, _top(change[None, :], k_top, True), k_top, True)
        for acc in totals.values():
            acc.add(c0, c1, change)
    highs = -np.sort(-highs[0])
    share1 = float(np.maximum(highs[:k1], 0).sum() / rise) if rise > 0 else float("nan")
    share5 = float(np.maximum(highs[:k5], 0).sum() / rise) if rise > 0 else float("nan")
    centre = total / n
    excess_rise = 0.5 * sum(float(np.abs(change - centre).sum())
                            for _, _, change in _interval_columns(losses, row, max(1, chunk_cells // 2)))
    excess = highs - centre
    excess1 = float(np.maximum(excess[:k1], 0).sum() / excess_rise) if excess_rise > 0 else float("nan")
    excess5 = float(np.maximum(excess[:k5], 0).sum() / excess_rise) if excess_rise > 0 else float("nan")

    def move(by: str, gid: int, mean, t) -> GroupMove:
        index, acc = groupings[by], totals[by]
        return GroupMove(by, tuple(int(v) for v in index.keys[gid]), int(index.sizes[gid]), float(mean[gid]),
                         float(acc.sum[gid]), float(acc.pos[gid] / rise) if rise > 0 else float("nan"),
                         float(t[gid]))

    up, down, pairs = {}, {}, []
    for by, acc in totals.items():
        index = groupings[by]
        mean, var, t = acc.stats()
        rising = np.flatnonzero(acc.sum > 0)
        falling = np.flatnonzero(acc.sum < 0)
        up[by] = [move(by, int(g), mean, t) for g in rising[np.argsort(-acc.sum[rising], kind="stable")][:top_groups]]
        down[by] = [move(by, int(g), mean, t) for g in falling[np.argsort(acc.sum[falling], kind="stable")][:top_groups]]
        for a, b in _best_pairs(index, acc.sum, n_pairs, per_block):
            ga, gb = move(by, a, mean, t), move(by, b, mean, t)
            pairs.append(EventPair(by, ga, gb, min(ga.sum, -gb.sum),
                                   _welch_t(mean[a], var[a], index.sizes[a], mean[b], var[b], index.sizes[b])))
    pairs.sort(key=lambda p: -p.score)
    pairs = pairs[:n_pairs]
    _attach_examples(losses, row, groupings, [*(g for v in up.values() for g in v),
                                              *(g for v in down.values() for g in v),
                                              *(g for p in pairs for g in (p.up, p.down))], examples)
    return Attribution(
        row=int(row), step_from=int(steps[row]), step_to=int(steps[row + 1]), n_examples=n, mean=total / n,
        rise=rise, share_top1=share1, share_top5=share5, excess_share_top1=excess1, excess_share_top5=excess5,
        frac_rose=rose / n,
        key_names={by: index.key_names for by, index in groupings.items()}, up=up, down=down, pairs=pairs,
    )


def _best_pairs(index: GroupIndex, sums: np.ndarray, n_pairs: int, per_block: int) -> list[tuple[int, int]]:
    """(up group, down group) pairs sharing every key but the target, best min(sum_up, -sum_down)
    first. Only the n_pairs blocks with the best possible pair can hold the n_pairs best pairs."""
    if TARGET not in index.key_names:
        return []
    blocks = candidate_blocks(index.keys, index.key_names)
    if not blocks:
        return []
    members = np.concatenate(blocks)
    starts = np.cumsum([0] + [b.size for b in blocks[:-1]])
    best = np.minimum(np.maximum(np.maximum.reduceat(sums[members], starts), 0.0),
                      np.maximum(-np.minimum.reduceat(sums[members], starts), 0.0))
    found = []
    for k in np.argsort(-best, kind="stable")[:n_pairs]:
        if best[k] <= 0:
            break
        block = blocks[k]
        ups = block[sums[block] > 0]
        downs = block[sums[block] < 0]
        ups = ups[np.argsort(-sums[ups], kind="stable")][:per_block]
        downs = downs[np.argsort(sums[downs], kind="stable")][:per_block]
        found += [(int(a), int(b), min(sums[a], -sums[b])) for a in ups for b in downs]
    found.sort(key=lambda x: -x[2])
    return [(a, b) for a, b, _ in found[:n_pairs]]


def _attach_examples(losses: Any, row: int, groupings: Mapping[str, GroupIndex], moves: list[GroupMove],
                     count: int) -> None:
    """Give each shown group the members that moved most in its direction."""
    if count <= 0:
        return
    cache: dict[tuple[str, tuple[int, ...]], list[int]] = {}
    for move in moves:
        if (move.by, move.key) not in cache:
            index = groupings[move.by]
            gid = int(np.flatnonzero(np.all(index.keys == np.asarray(move.key), axis=1))[0])
            members = np.flatnonzero(index.group_of == gid)
            before = np.asarray(losses[row][members], dtype=np.float64)
            after = np.asarray(losses[row + 1][members], dtype=np.float64)
            change = np.where(np.isfinite(after - before), after - before, 0.0)
            order = np.argsort(-change if move.sum >= 0 else change, kind="stable")[:count]
            cache[(move.by, move.key)] = [int(i) for i in members[order]]
        move.examples = cache[(move.by, move.key)]
