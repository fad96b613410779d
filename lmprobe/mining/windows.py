"""Opposing pairs over sliding windows of training, and the complexity of the winning grouping.

Windowed search. A pair that opposes only between, say, steps 50 and 150 of a 250-step run is
diluted over the whole window (its quiet stretches add noise, not signal) and can fail the
test. So pairs are tested on the whole mined window AND on sliding windows: level k = 1, 2, ...
cuts the intervals into windows of n / 2^k intervals (at least MIN_WINDOW), 2^(k+1) - 1 of them
per level, overlapping by half (at most MAX_LEVELS levels). Multiple testing: weighted
Bonferroni over every (candidate, window) test. The whole window keeps 1 - WINDOW_ALPHA_SHARE of
the family-wise alpha over its candidates (so a trace with no sliding windows is tested exactly
as before); the sliding windows share WINDOW_ALPHA_SHARE of alpha evenly, i.e. each window's
candidates are tested at alpha * share / (windows x candidates). The family-wise error over the
whole search stays <= alpha. A pair is reported once: with its whole-window statistics when it
is significant there, otherwise with those of the window where it is strongest; `window` says
which (None: the whole window) and `windows` lists every sliding window where it passed. All
windows reuse the per-record group sums of the one streaming pass: nothing re-reads the trace,
and the windows share one EXACT_BUDGET of exactly tested pairs x intervals (beyond it pairs are
screened first, as in `opposing`), so the windows cost about what the whole window costs.

Complexity over training (the paper's claim 5: outlier groups grow more complex). Groupings
form a ladder of increasing order (order = number of keys: text target = 1, feature-target = 2,
feature2-feature-target = 3; vision target, then the colour keys with the target, then all of
them combined). The mined window is cut into K consecutive, non-overlapping windows of at
least COMPLEXITY_MIN intervals (K <= COMPLEXITY_MAX). In each, every grouping's pairs and
one-vs-rest pairs are tested (Bonferroni: alpha split evenly over groupings x windows, then over
each grouping's candidates). The significant pairs of all groupings are pooled and sorted into
nests: the strongest pair claims every pooled pair nested in it (each side inside one of its
sides: a finer split of the same opposition) or containing it (a coarser, diluted version),
ties going to the coarser grouping; so one opposition counts once, for the grouping that shows
it strongest. Of the window's COMPLEXITY_TOP strongest nests, share_g = the strength of those
won by grouping g / their summed strength, and the window's complexity index is
sum_g order_g x share_g: the strength-weighted mean order of the groupings that best explain
its strongest opposing pairs (undefined in a window with no significant pair).
The trend is Kendall's tau between window index and complexity index over the defined
windows, with its exact two-sided p-value (tau > 0: complexity rises over training).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from lmprobe.mining.opposing import (
    EXACT_BUDGET,
    MIN_INTERVALS,
    TARGET,
    OpposingPair,
    PairTest,
    RestBlocks,
    find_opposing_pairs,
)

MIN_WINDOW = 16  # intervals in a sliding window, at least
MAX_LEVELS = 3  # halves, quarters, eighths
WINDOW_ALPHA_SHARE = 0.5
COMPLEXITY_MIN = 12  # intervals per complexity window, at least
COMPLEXITY_MAX = 8  # complexity windows, at most
COMPLEXITY_TOP = 5  # strongest pooled pairs per window that the shares are taken over


def sliding_windows(n_intervals: int) -> list[tuple[int, int]]:
    """Interval ranges [start, stop) of the sliding windows (the whole window not included)."""
    out: list[tuple[int, int]] = []
    for level in range(1, MAX_LEVELS + 1):
        length = n_intervals // 2 ** level
        if length < max(MIN_WINDOW, MIN_INTERVALS):
            break
        count = 2 ** (level + 1) - 1
        for start in np.round(np.linspace(0, n_intervals - length, count)).astype(int):
            window = (int(start), int(start) + length)
            if window not in out:
                out.append(window)
    return out


def pair_identity(pair: OpposingPair) -> tuple:
    return (pair.kind, pair.group_a, pair.group_b, pair.block)


def windowed_pairs(
    mean_loss: np.ndarray,
    trend: np.ndarray,
    scale: np.ndarray,
    group_keys: np.ndarray,
    group_sizes: np.ndarray,
    key_names: tuple[str, ...],
    steps: np.ndarray,
    *,
    n_total: int,
    alpha: float,
    rest: RestBlocks | None = None,
) -> tuple[list[OpposingPair], PairTest]:
    """Pairs of the whole window and of the sliding windows, merged (module docstring)."""
    n_intervals = mean_loss.shape[0] - 1
    windows = sliding_windows(n_intervals)
    whole_alpha = alpha * (1.0 - WINDOW_ALPHA_SHARE) if windows else alpha
    pairs, test = find_opposing_pairs(mean_loss, trend, group_keys, group_sizes, key_names, steps, scale,
                                      n_total=n_total, alpha=whole_alpha, rest=rest)
    if not windows or test.n_tested == 0:
        return pairs, test
    found = {pair_identity(p): p for p in pairs}
    window_threshold = None
    for start, stop in windows:
        rows = slice(start, stop + 1)
        window_pairs, window_test = find_opposing_pairs(
            mean_loss[rows], trend[start:stop], group_keys, group_sizes, key_names, steps[rows],
            scale[start:stop], n_total=n_total, alpha=alpha * WINDOW_ALPHA_SHARE, family=len(windows),
            rest=None if rest is None else rest.rows(start, stop + 1), exact_budget=EXACT_BUDGET // len(windows))
        window_threshold = window_test.z_threshold
        span = (int(steps[start]), int(steps[stop]))
        for pair in window_pairs:
            pair.window = span
            known = found.get(pair_identity(pair))
            if known is None:
                pair.windows = [span]
                found[pair_identity(pair)] = pair
                continue
            known.windows.append(span)
            if known.window is not None and pair.strength > known.strength:
                pair.windows = known.windows
                found[pair_identity(pair)] = pair
    merged = sorted(found.values(), key=lambda p: (-p.strength, p.group_a, p.group_b))
    test.alpha = alpha  # family-wise, over the whole window and the sliding windows together
    test.n_windows = 1 + len(windows)
    test.window_z_threshold = window_threshold
    return merged, test


@dataclass
class Rung:
    """One grouping of the complexity ladder, with its per-record group sums."""

    by: str
    order: int
    key_names: tuple[str, ...]
    mean_loss: np.ndarray  # [records, groups]
    keys: np.ndarray  # [groups, len(key_names)]
    sizes: np.ndarray
    rest: RestBlocks | None = None


@dataclass
class Complexity:
    """Which grouping explains the strongest opposing pairs, window by window, and its trend."""

    groupings: list[str]
    orders: list[int]
    windows: list[tuple[int, int]]  # steps (from, to)
    shares: list[list[float]]  # [window][grouping]: share of the top pairs' strength (0s if none)
    n_significant: list[list[int]]  # [window][grouping]: nests of significant pairs it explains
    index: list[float | None]  # complexity index per window (None: no significant pair)
    tau: float | None  # Kendall's tau of index vs window number
    p_value: float | None  # exact two-sided p of tau
    alpha: float
    note: str = ""

    @property
    def trend(self) -> str:
        if self.tau is None:
            return "no trend (too few windows with pairs)"
        direction = "rises" if self.tau > 0 else "falls" if self.tau < 0 else "is flat"
        return f"{direction} (Kendall tau {self.tau:+.2f}, p = {self.p_value:.2g})"

    def to_dict(self) -> dict[str, Any]:
        return {"groupings": list(self.groupings), "orders": [int(o) for o in self.orders],
                "windows": [[int(a), int(b)] for a, b in self.windows],
                "shares": [[float(v) for v in row] for row in self.shares],
                "n_significant": [[int(v) for v in row] for row in self.n_significant],
                "index": [None if v is None else float(v) for v in self.index],
                "tau": None if self.tau is None else float(self.tau),
                "p_value": None if self.p_value is None else float(self.p_value),
                "alpha": float(self.alpha), "note": self.note, "trend": self.trend}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Complexity":
        return cls(list(data["groupings"]), [int(o) for o in data["orders"]],
                   [(int(a), int(b)) for a, b in data["windows"]],
                   [[float(v) for v in row] for row in data["shares"]],
                   [[int(v) for v in row] for row in data["n_significant"]],
                   [None if v is None else float(v) for v in data["index"]],
                   None if data.get("tau") is None else float(data["tau"]),
                   None if data.get("p_value") is None else float(data["p_value"]),
                   float(data["alpha"]), str(data.get("note", "")))


def complexity_windows(n_intervals: int) -> list[tuple[int, int]]:
    count = min(COMPLEXITY_MAX, n_intervals // COMPLEXITY_MIN)
    if count < 1:
        return []
    edges = np.round(np.linspace(0, n_intervals, count + 1)).astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _sides(rung: Rung, pair: OpposingPair) -> tuple[dict[str, int], dict[str, int]]:
    """The two sides of a pair as key dicts; a one-vs-rest side has target -1 ("any other")."""
    return dict(zip(rung.key_names, pair.key_a)), dict(zip(rung.key_names, pair.key_b))


def _covers(outer: dict[str, int], outer_other: dict[str, int], inner: dict[str, int]) -> bool:
    """Whether the side `outer` (of a pair whose other side is `outer_other`) holds every
    example of the side `inner`, a grouping with at least outer's keys."""
    for name, value in outer.items():
        if name not in inner:
            return False
        if name == TARGET and value < 0:  # the rest: any target but the other side's
            if inner[name] < 0 or inner[name] == outer_other[TARGET]:
                return False
        elif inner[name] != value:
            return False
    return True


def nested(coarse: tuple[dict, dict], fine: tuple[dict, dict]) -> bool:
    """Whether the pair `fine` splits the pair `coarse`: each of its sides lies inside one side
    of `coarse` (a different one each)."""
    (ca, cb), (fa, fb) = coarse, fine
    return ((_covers(ca, cb, fa) and _covers(cb, ca, fb)) or (_covers(ca, cb, fb) and _covers(cb, ca, fa)))


def explained(pooled: list[tuple[int, float, tuple[dict, dict]]], orders: list[int]) -> list[tuple[int, float]]:
    """Nests of pooled pairs (rung, strength, sides), strongest first: the strongest pair
    claims every pooled pair nested in it or containing it; ties go to the coarser grouping."""
    ranked = sorted(pooled, key=lambda item: (-float(f"{item[1]:.9g}"), orders[item[0]]))
    taken = [False] * len(ranked)
    out = []
    for i, (rung, strength, sides) in enumerate(ranked):
        if taken[i]:
            continue
        out.append((rung, strength))
        for j in range(i + 1, len(ranked)):
            if not taken[j]:
                other = ranked[j][2]
                if nested(sides, other) or nested(other, sides):
                    taken[j] = True
    return out


def kendall(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Kendall's tau of `values` against their position, with its exact two-sided p-value."""
    if len(values) < 3 or len(set(values)) < 2:
        return None, None
    from scipy.stats import kendalltau

    x = np.arange(len(values))
    method = "exact" if len(set(values)) == len(values) else "auto"
    result = kendalltau(x, np.asarray(values, dtype=np.float64), method=method)
    return float(result.statistic), float(result.pvalue)


def complexity_over_windows(
    rungs: list[Rung],
    trend: np.ndarray,
    scale: np.ndarray,
    steps: np.ndarray,
    *,
    n_total: int,
    alpha: float,
) -> Complexity:
    """The complexity index per window and its trend (module docstring)."""
    n_intervals = steps.size - 1
    windows = complexity_windows(n_intervals)
    names, orders = [r.by for r in rungs], [r.order for r in rungs]
    spans = [(int(steps[a]), int(steps[b])) for a, b in windows]
    if len(windows) < 3 or len(rungs) < 2:
        why = (f"{len(rungs)} grouping(s): the ladder needs two or more" if len(rungs) < 2 else
               f"{n_intervals} intervals make {len(windows)} window(s) of >= {COMPLEXITY_MIN}; a trend needs 3")
        return Complexity(names, orders, spans, [], [], [], None, None, alpha, "no complexity trend: " + why)
    family = len(windows) * len(rungs)
    shares, counts, index = [], [], []
    for start, stop in windows:
        rows = slice(start, stop + 1)
        pooled = []  # (rung, strength, sides)
        for rung, rung_obj in enumerate(rungs):
            pairs, _ = find_opposing_pairs(rung_obj.mean_loss[rows], trend[start:stop], rung_obj.keys,
                                           rung_obj.sizes, rung_obj.key_names, steps[rows], scale[start:stop],
                                           n_total=n_total, alpha=alpha, family=family,
                                           rest=None if rung_obj.rest is None else rung_obj.rest.rows(start, stop + 1),
                                           exact_budget=EXACT_BUDGET // family)
            pooled += [(rung, pair.strength, _sides(rung_obj, pair)) for pair in pairs]
        nests = explained(pooled, orders)
        count = [0] * len(rungs)
        for rung, _ in nests:
            count[rung] += 1
        top = nests[:COMPLEXITY_TOP]
        share = [0.0] * len(rungs)
        total = sum(s for _, s in top)
        for rung, strength in top:
            share[rung] += strength / total if total > 0 else 0.0
        shares.append(share)
        counts.append(count)
        index.append(sum(o * s for o, s in zip(orders, share)) if top and total > 0 else None)
    defined = [v for v in index if v is not None]
    tau, p = kendall(defined)
    note = "" if tau is not None else "no complexity trend: fewer than 3 windows with significant pairs (or all equal)"
    return Complexity(names, orders, spans, shares, counts, index, tau, p, alpha, note)


def order_of(by: str) -> int:
    return len(by.split("-"))
