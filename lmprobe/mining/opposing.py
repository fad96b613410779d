"""Opposing pairs: groups that share an input feature, differ in target, and move apart.

Candidates are pairs of groups whose keys agree on every component except "target" (for
by="feature-target": same feature, different next token; for by="target" every pair of
targets). A shared key must be present: a negative value means "no such feature" (text: no second
context token; images: no planted or detected feature), and two groups that merely both lack a
feature do not share one. Each group's per-interval mean loss change is detrended by regression on the mean
change of all examples outside the pair (see `stats`), and a pair is kept only if its
residuals are significantly anti-correlated (Bartlett-corrected Fisher z, Bonferroni over all
candidates tested).

Score: sqrt(-cov(x_a, x_b)), the covariance of the two residual series, in loss units per
recorded interval. If x_a = s + noise_a and x_b = -k*s + noise_b, then -cov = k * var(s):
the score is the geometric mean of the two groups' shared, opposed swing amplitudes, and the
members' idiosyncratic noise (large for small groups) adds nothing to it in expectation —
unlike raw amplitude, which rewards noisy small groups, or correlation, which ignores size of
the swing.

Ranking: by strength = score * sqrt(min(size_a, size_b)), not by score. Two reasons.
(1) Selection: among pairs that pass the test, a small group's score is inflated — its noisy
covariance had to come out large to pass — while a large group's is not; ranking by score put
an 8-member pair of noisy examples above a 150-member pair with a clear swing. (2) Meaning: an
opposing signal matters for optimisation through the summed gradient of its examples, and a
pair is only as strong as its weaker side. The smaller group's summed opposed swing grows like
n * a while its members' noise grows like sqrt(n) * sigma, so score * sqrt(n_min) is that side's
signal-to-noise ratio in units of per-example noise: it grows with size and amplitude and does
not reward noise. The square root (not n) keeps a 10x larger group from outranking a 3x
larger swing. Correlation, z and amplitudes are reported alongside; significance is the
test's job, the order is the strength's.

One-vs-rest pairs (the paper's "sky: planes vs non-planes"). Besides every pair of groups
sharing a feature, each group a is tested against the rest of its feature: every other example
sharing the feature, whatever its target (kept groups and examples in groups below min_size
alike), as one series of mean loss changes. A feature shared by one target and several small
ones is otherwise cut into small pairs that rank low. Each such candidate counts in the
Bonferroni correction (n_tested = pairs + one-vs-rest candidates). A candidate exists when the
rest holds at least min_size examples and is not just one kept group (then it is the ordinary
pair). It is reported when it is significant AND stronger than its parts: its strength
score * sqrt(min(n_a, n_rest)) exceeds the strength of every pairwise candidate (a, b) with b
a kept group in the rest, measured on the same intervals whether or not (a, b) is significant
(`parts_strength` is the largest of them). Otherwise the pairs already say it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from lmprobe.mining.stats import (
    PARTIAL_DOF,
    bonferroni_threshold,
    pair_z,
    regress_out,
    regress_out_each,
    swing_intervals,
    trend_without,
    unit_columns,
    winsorise,
)

TARGET = "target"
PAIR = "pair"
ONE_VS_REST = "one-vs-rest"
MIN_INTERVALS = 8
DEFAULT_ALPHA = 0.01
SWING_Z = 1.0
_TILE = 512
_SMALL_BLOCK = 64  # blocks up to this many groups are screened as one list of pairs
EXACT_BUDGET = 1 << 21  # pairs x intervals tested exactly without a screen
SCREEN_FRACTION = 0.5  # screen at half the threshold...
HEAVY_PAIR = 0.02  # ...and always test pairs holding more than 2% of the examples exactly
_BATCH_CELLS = 1 << 18  # intervals x pairs per vectorised batch


@dataclass
class Swing:
    """One recorded interval in which the two series moved apart."""

    step_from: int
    step_to: int
    change_a: float  # detrended mean loss change of the first series
    change_b: float

    def to_dict(self) -> dict[str, Any]:
        return {"step_from": int(self.step_from), "step_to": int(self.step_to),
                "change_a": float(self.change_a), "change_b": float(self.change_b)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Swing":
        return cls(int(data["step_from"]), int(data["step_to"]),
                   float(data["change_a"]), float(data["change_b"]))


@dataclass
class OpposingPair:
    """Two groups with anti-correlated detrended loss changes; `group_a` is the larger one."""

    group_a: int  # index into MiningResult.groups
    group_b: int
    key_a: tuple[int, ...]
    key_b: tuple[int, ...]
    size_a: int
    size_b: int
    corr: float  # correlation of detrended, interval-standardised mean loss changes (tested)
    z: float  # Bartlett-corrected Fisher z (negative)
    amp_a: float  # std of group a's detrended changes, loss units
    amp_b: float
    score: float  # sqrt(-cov): opposed swing amplitude, loss units per interval
    swings: list[Swing] = field(default_factory=list)
    strength: float = 0.0  # score * sqrt(min(size_a, size_b)): the ranking key (module docstring)
    kind: str = PAIR  # PAIR, or ONE_VS_REST: group_a against every other example of its feature
    block: int = -1  # one-vs-rest: the feature's block (index into the miner's blocks)
    parts_strength: float = 0.0  # one-vs-rest: strongest pairwise part (a, b), b in the rest
    rest_targets: list[int] = field(default_factory=list)  # one-vs-rest: the rest's targets, largest first
    rest_n_targets: int = 0  # one-vs-rest: how many distinct targets the rest holds
    rest_examples: list[int] = field(default_factory=list)  # one-vs-rest: a few rest members to show
    window: tuple[int, int] | None = None  # steps of the window it was found in; None: the whole mined window
    windows: list[tuple[int, int]] = field(default_factory=list)  # every window where it was significant

    @property
    def is_one_vs_rest(self) -> bool:
        return self.kind == ONE_VS_REST

    def to_dict(self, key_names: tuple[str, ...]) -> dict[str, Any]:
        return {
            "kind": self.kind, "block": int(self.block), "parts_strength": float(self.parts_strength),
            "rest_targets": [int(t) for t in self.rest_targets], "rest_n_targets": int(self.rest_n_targets),
            "rest_examples": [int(i) for i in self.rest_examples],
            "window": None if self.window is None else [int(v) for v in self.window],
            "windows": [[int(a), int(b)] for a, b in self.windows],
            "group_a": int(self.group_a), "group_b": int(self.group_b),
            "key_a": {n: int(v) for n, v in zip(key_names, self.key_a)},
            "key_b": {n: int(v) for n, v in zip(key_names, self.key_b)},
            "size_a": int(self.size_a), "size_b": int(self.size_b),
            "corr": float(self.corr), "z": float(self.z),
            "amp_a": float(self.amp_a), "amp_b": float(self.amp_b),
            "score": float(self.score), "strength": float(self.strength),
            "swings": [s.to_dict() for s in self.swings],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], key_names: tuple[str, ...]) -> "OpposingPair":
        return cls(
            group_a=int(data["group_a"]), group_b=int(data["group_b"]),
            key_a=tuple(int(data["key_a"][n]) for n in key_names),
            key_b=tuple(int(data["key_b"][n]) for n in key_names),
            size_a=int(data["size_a"]), size_b=int(data["size_b"]),
            corr=float(data["corr"]), z=float(data["z"]),
            amp_a=float(data["amp_a"]), amp_b=float(data["amp_b"]),
            score=float(data["score"]),
            swings=[Swing.from_dict(s) for s in data["swings"]],
            strength=float(data.get("strength", pair_strength(float(data["score"]), int(data["size_a"]),
                                                              int(data["size_b"])))),
            kind=str(data.get("kind", PAIR)), block=int(data.get("block", -1)),
            parts_strength=float(data.get("parts_strength", 0.0)),
            rest_targets=[int(t) for t in data.get("rest_targets", [])],
            rest_n_targets=int(data.get("rest_n_targets", 0)),
            rest_examples=[int(i) for i in data.get("rest_examples", [])],
            window=None if data.get("window") is None else (int(data["window"][0]), int(data["window"][1])),
            windows=[(int(a), int(b)) for a, b in data.get("windows", [])],
        )


@dataclass
class PairTest:
    """How the pairs were tested, so a reader can judge an empty list."""

    n_intervals: int
    n_tested: int
    alpha: float  # family-wise error rate of the whole search (all windows together)
    z_threshold: float  # pairs need z < -z_threshold (over the whole mined window)
    note: str = ""
    n_one_vs_rest: int = 0  # of n_tested, one-vs-rest candidates
    n_windows: int = 1  # the whole window plus the sliding windows tested (see `windows`)
    window_z_threshold: float | None = None  # pairs in a sliding window need z < -this

    def to_dict(self) -> dict[str, Any]:
        return {"n_intervals": int(self.n_intervals), "n_tested": int(self.n_tested),
                "alpha": float(self.alpha), "z_threshold": float(self.z_threshold),
                "note": self.note, "n_one_vs_rest": int(self.n_one_vs_rest),
                "n_windows": int(self.n_windows),
                "window_z_threshold": None if self.window_z_threshold is None else float(self.window_z_threshold)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PairTest":
        wz = data.get("window_z_threshold")
        return cls(int(data["n_intervals"]), int(data["n_tested"]), float(data["alpha"]),
                   float(data["z_threshold"]), str(data.get("note", "")),
                   int(data.get("n_one_vs_rest", 0)), int(data.get("n_windows", 1)),
                   None if wz is None else float(wz))


def pair_strength(score: float, size_a: int, size_b: int) -> float:
    """The ranking key of a pair: score * sqrt(smaller group's size) (module docstring)."""
    return float(score) * math.sqrt(max(0, min(int(size_a), int(size_b))))


def candidate_blocks(group_keys: np.ndarray, key_names: tuple[str, ...]) -> list[np.ndarray]:
    """Group indices that agree on every key but the target, one array per shared key (>= 2)."""
    if TARGET not in key_names or group_keys.shape[0] < 2:
        return []
    shared = [p for p, name in enumerate(key_names) if name != TARGET]
    if not shared:
        return [np.arange(group_keys.shape[0])]
    columns = group_keys[:, shared]
    order = np.lexsort(tuple(columns[:, p] for p in range(columns.shape[1] - 1, -1, -1)))
    ordered = columns[order]
    breaks = np.flatnonzero(np.any(ordered[1:] != ordered[:-1], axis=1)) + 1
    blocks = np.split(order, breaks)
    # a negative key value means the example has no such feature (no second context token, no
    # planted feature): the absence of a feature is not a feature two groups can share
    return [np.sort(b) for b in blocks if b.size >= 2 and (columns[b[0]] >= 0).all()]


def _pairs_within(blocks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (a, b), a before b, inside each block — vectorised over many small blocks."""
    if not blocks:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    members = np.concatenate(blocks)
    sizes = np.array([b.size for b in blocks])
    block_end = np.repeat(np.cumsum(sizes), sizes)  # one past the block's last position
    position = np.arange(members.size)
    partners = block_end - position - 1
    first = np.repeat(position, partners)
    offset = np.arange(first.size) - np.repeat(np.cumsum(partners) - partners, partners)
    return members[first].astype(np.int64), members[first + 1 + offset].astype(np.int64)


def _screen(changes: np.ndarray, trend: np.ndarray, scale: np.ndarray, blocks: list[np.ndarray],
            *, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs (a < b) whose common-trend Fisher z, without Bartlett's factor, is
    below `cutoff`. Bartlett's factor only ever shrinks |z|, so leaving it out lets through a
    superset of the pairs that pass with it; the exact test decides afterwards.

    Groups are detrended and standardised a batch at a time (every step is per column), small
    blocks of equal size stacked and handled with batched products, large blocks in tiles of
    at most _TILE x _TILE pairs: memory stays O(intervals x batch) for any number of groups.
    float32 suffices: a pair near the screen's cutoff is far from the test's threshold.
    """
    n_intervals = changes.shape[0]

    def unit_of(groups: np.ndarray) -> np.ndarray:  # [intervals, len(groups)]
        standardised = winsorise(regress_out(changes[:, groups], trend, scale))
        return unit_columns(standardised)[0].astype(np.float32)

    corr_cutoff = np.float32(np.tanh(cutoff / np.sqrt(max(1, n_intervals - PARTIAL_DOF))))
    found_a, found_b = [], []
    by_size: dict[int, list[np.ndarray]] = {}
    for block in blocks:
        if block.size <= _SMALL_BLOCK:
            by_size.setdefault(block.size, []).append(block)
    for size, same in by_size.items():
        upper_r, upper_c = np.triu_indices(size, 1)
        step = max(1, _BATCH_CELLS // (size * max(size, n_intervals)))
        for start in range(0, len(same), step):
            groups = np.stack(same[start : start + step])  # [blocks, size]
            vectors = unit_of(groups.ravel()).T.reshape(groups.shape[0], size, n_intervals)
            corr = np.matmul(vectors, vectors.transpose(0, 2, 1))[:, upper_r, upper_c]
            hit = corr < corr_cutoff
            found_a.append(groups[:, upper_r][hit])
            found_b.append(groups[:, upper_c][hit])
    for block in (b for b in blocks if b.size > _SMALL_BLOCK):
        for row_start in range(0, block.size - 1, _TILE):
            rows = block[row_start : row_start + _TILE]
            row_unit = unit_of(rows)
            for col_start in range(row_start + 1, block.size, _TILE):
                cols = block[col_start : col_start + _TILE]
                # Pair (row i, col j) is new only if col j comes after row i in the block.
                wanted = (col_start + np.arange(cols.size))[None, :] > (row_start + np.arange(rows.size))[:, None]
                wanted &= (row_unit.T @ unit_of(cols)) < corr_cutoff
                hit_r, hit_c = np.nonzero(wanted)
                found_a.append(rows[hit_r])
                found_b.append(cols[hit_c])
    if not found_a:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(found_a).astype(np.int64), np.concatenate(found_b).astype(np.int64)


@dataclass
class RestBlocks:
    """The features of a grouping (every key but the target) for one-vs-rest candidates.

    mean_loss: [records, blocks] mean loss of ALL kept examples sharing the block's feature
    (including those in groups below min_size); sizes: [blocks]; block_of_group: [groups] the
    block of each kept group (-1: it shares no feature); min_size: smallest rest tested.
    """

    mean_loss: np.ndarray
    sizes: np.ndarray
    block_of_group: np.ndarray
    min_size: int

    def rows(self, start: int, stop: int) -> "RestBlocks":
        return RestBlocks(self.mean_loss[start:stop], self.sizes, self.block_of_group, self.min_size)


def one_vs_rest_candidates(rest: RestBlocks | None, group_sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(group, block) of every one-vs-rest candidate: the rest holds >= min_size examples and is
    not exactly one kept group (that candidate is an ordinary pair)."""
    if rest is None or rest.sizes.size == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    sizes = np.asarray(group_sizes, dtype=np.int64)
    groups = np.flatnonzero(rest.block_of_group >= 0)
    blocks = rest.block_of_group[groups]
    n_blocks = rest.sizes.size
    kept_count = np.bincount(blocks, minlength=n_blocks)
    kept_size = np.bincount(blocks, weights=sizes[groups], minlength=n_blocks).astype(np.int64)
    rest_size = rest.sizes[blocks] - sizes[groups]
    only_a_pair = (kept_count[blocks] == 2) & (rest.sizes[blocks] == kept_size[blocks])
    ok = (rest_size >= max(1, rest.min_size)) & ~only_a_pair
    return groups[ok].astype(np.int64), blocks[ok].astype(np.int64)


def pair_scores(changes_a: np.ndarray, changes_b: np.ndarray, trends: np.ndarray) -> np.ndarray:
    """Score sqrt(-cov) of each column pair, detrended on its own trend (loss units)."""
    raw_a = regress_out_each(changes_a, trends)
    raw_b = regress_out_each(changes_b, trends)
    return np.sqrt(np.maximum(0.0, -np.mean(raw_a * raw_b, axis=0)))


def _make_pair(ga: int, gb: int, key_a, key_b, size_a: int, size_b: int, change_a: np.ndarray,
               change_b: np.ndarray, trend: np.ndarray, corr: float, z: float, std_a: np.ndarray,
               std_b: np.ndarray, steps: np.ndarray, swing_z: float, **extra) -> OpposingPair:
    raw_a = regress_out_each(change_a[:, None], trend[:, None])[:, 0]
    raw_b = regress_out_each(change_b[:, None], trend[:, None])[:, 0]
    swings = [Swing(int(steps[i]), int(steps[i + 1]), float(raw_a[i]), float(raw_b[i]))
              for i in swing_intervals(std_a, std_b, swing_z)]
    score = math.sqrt(max(0.0, -float(np.mean(raw_a * raw_b))))
    return OpposingPair(
        group_a=ga, group_b=gb, key_a=tuple(int(v) for v in key_a), key_b=tuple(int(v) for v in key_b),
        size_a=int(size_a), size_b=int(size_b), corr=float(corr), z=float(z),
        amp_a=float(raw_a.std()), amp_b=float(raw_b.std()), score=score, swings=swings,
        strength=pair_strength(score, size_a, size_b), **extra,
    )


def _one_vs_rest_pairs(changes, total_change, n_total, sizes, group_keys, key_names, steps, scale,
                       rest: RestBlocks, cand_a, cand_j, threshold, swing_z) -> list[OpposingPair]:
    """Test each (group a, rest of its feature) candidate; keep the significant ones stronger
    than all their pairwise parts (module docstring)."""
    out = []
    target_col = key_names.index(TARGET)
    block_changes_all = np.diff(rest.mean_loss, axis=0)
    batch = max(1, _BATCH_CELLS // max(1, changes.shape[0]))
    for start in range(0, cand_a.size, batch):
        a, j = cand_a[start : start + batch], cand_j[start : start + batch]
        size_a = sizes[a].astype(np.float64)
        size_block = rest.sizes[j].astype(np.float64)
        size_rest = size_block - size_a
        change_a = changes[:, a]
        block_changes = block_changes_all[:, j]
        change_rest = (block_changes * size_block - change_a * size_a) / size_rest
        trends = trend_without(total_change, n_total, [block_changes], [size_block])
        corr, z, std_a, std_r = pair_z(change_a, change_rest, trends, scale)
        for k in np.flatnonzero((z < -threshold) & (corr < 0)):
            ga, block = int(a[k]), int(j[k])
            parts = np.flatnonzero(rest.block_of_group == block)
            parts = parts[parts != ga]
            parts_strength = 0.0
            if parts.size:
                pa = np.repeat(changes[:, ga, None], parts.size, axis=1)
                part_trends = trend_without(total_change, n_total, [pa, changes[:, parts]],
                                            [np.full(parts.size, sizes[ga]), sizes[parts]])
                part_scores = pair_scores(pa, changes[:, parts], part_trends)
                parts_strength = float(max(pair_strength(sc, sizes[ga], sizes[b])
                                           for sc, b in zip(part_scores, parts)))
            key_rest = list(int(v) for v in group_keys[ga])
            key_rest[target_col] = -1
            pair = _make_pair(ga, -1, group_keys[ga], key_rest, int(size_a[k]), int(size_rest[k]),
                              change_a[:, k], change_rest[:, k], trends[:, k], corr[k], z[k],
                              std_a[:, k], std_r[:, k], steps, swing_z,
                              kind=ONE_VS_REST, block=block, parts_strength=parts_strength)
            if pair.strength > parts_strength:
                out.append(pair)
    return out


def find_opposing_pairs(
    mean_loss: np.ndarray,
    trend: np.ndarray,
    group_keys: np.ndarray,
    group_sizes: np.ndarray,
    key_names: tuple[str, ...],
    steps: np.ndarray,
    scale: np.ndarray | None = None,
    *,
    n_total: int | None = None,
    alpha: float = DEFAULT_ALPHA,
    swing_z: float = SWING_Z,
    rest: RestBlocks | None = None,
    family: int = 1,
    exact_budget: int | None = None,
) -> tuple[list[OpposingPair], PairTest]:
    """Significant opposing pairs among groups, strongest first (`pair_strength`).

    mean_loss: [records, groups] mean loss of each group; trend: [intervals] mean change of all
    n_total kept examples (default: the groups' examples only); group_keys: [groups,
    len(key_names)]; steps: [records]; scale: [intervals] noise scale standardising intervals
    for the test (`stats.interval_scale`; None: unweighted). rest: the grouping's features, for
    one-vs-rest candidates (None: pairs only). family: the Bonferroni correction counts
    family x (pairs + one-vs-rest candidates) tests — the sliding windows' share of alpha
    (`windows`). exact_budget: pairs x intervals tested without a screen (default EXACT_BUDGET;
    the windowed searches split it over their windows, so their exact work stays that of one).

    Each pair is detrended against the mean change of the examples outside both groups, so
    that big groups (ten CIFAR classes, say) are not anti-correlated by construction. Testing
    all pairs that way costs O(pairs x intervals); when that exceeds EXACT_BUDGET, pairs are
    first screened with one shared trend at half the threshold. The shared trend shifts a
    pair's z only through the pair's own share of the trend, so pairs holding more than
    HEAVY_PAIR of the examples skip the screen and are always tested exactly. One-vs-rest
    candidates (at most one per group) are always tested exactly.
    """
    n_intervals = mean_loss.shape[0] - 1
    blocks = candidate_blocks(group_keys, key_names)
    n_pairs = int(sum(b.size * (b.size - 1) // 2 for b in blocks))
    has_shared = TARGET in key_names and len(key_names) > 1
    ovr_a, ovr_j = one_vs_rest_candidates(rest if has_shared else None, group_sizes)
    n_tested = n_pairs + int(ovr_a.size)
    threshold = bonferroni_threshold(alpha, n_tested * max(1, int(family)))

    def test(note: str = "") -> PairTest:
        return PairTest(n_intervals, n_tested if not note else 0, alpha, threshold, note,
                        n_one_vs_rest=0 if note else int(ovr_a.size))

    if TARGET not in key_names:
        return [], test("no pairs: grouping has no 'target' key to differ in")
    if n_intervals < MIN_INTERVALS:
        return [], test(f"no pairs tested: {n_intervals} interval(s) in the window,"
                        f" the test needs at least {MIN_INTERVALS}")
    if n_tested == 0:
        return [], test("no pairs tested: no two groups share a feature")

    scale = np.ones(n_intervals) if scale is None else np.asarray(scale, dtype=np.float64)
    sizes = np.asarray(group_sizes, dtype=np.int64)
    n_total = int(sizes.sum()) if n_total is None else int(n_total)
    changes = np.diff(mean_loss, axis=0)
    total_change = np.asarray(trend, dtype=np.float64) * n_total
    if n_pairs * n_intervals <= (EXACT_BUDGET if exact_budget is None else exact_budget):
        pair_a, pair_b = _pairs_within(blocks)
    else:
        pair_a, pair_b = _screen(changes, trend, scale, blocks, cutoff=-SCREEN_FRACTION * threshold)
        heavy = [b for b in blocks if b.size > 1 and (np.sort(sizes[b])[-2:].sum() > HEAVY_PAIR * n_total)]
        if heavy:
            heavy_a, heavy_b = _pairs_within(heavy)
            keep = sizes[heavy_a] + sizes[heavy_b] > HEAVY_PAIR * n_total
            merged = np.unique(np.stack([np.concatenate([pair_a, heavy_a[keep]]),
                                         np.concatenate([pair_b, heavy_b[keep]])]), axis=1)
            pair_a, pair_b = merged[0], merged[1]

    pairs = []
    batch = max(1, _BATCH_CELLS // n_intervals)
    for start in range(0, pair_a.size, batch):
        a, b = pair_a[start : start + batch], pair_b[start : start + batch]
        trends = trend_without(total_change, n_total, [changes[:, a], changes[:, b]], [sizes[a], sizes[b]])
        corr, z, std_a, std_b = pair_z(changes[:, a], changes[:, b], trends, scale)
        for k in np.flatnonzero((z < -threshold) & (corr < 0)):
            ga, gb = int(a[k]), int(b[k])
            pairs.append(_make_pair(ga, gb, group_keys[ga], group_keys[gb], sizes[ga], sizes[gb],
                                    changes[:, ga], changes[:, gb], trends[:, k], corr[k], z[k],
                                    std_a[:, k], std_b[:, k], steps, swing_z))
    if ovr_a.size:
        pairs += _one_vs_rest_pairs(changes, total_change, n_total, sizes, group_keys, key_names, steps,
                                    scale, rest, ovr_a, ovr_j, threshold, swing_z)
    pairs.sort(key=lambda p: (-p.strength, p.group_a, p.group_b))
    return pairs, test()
