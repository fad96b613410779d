"""Groups that no key names: clusters of examples whose detrended loss changes move together.

1. Candidates: the `cluster_top` examples with the largest idiosyncratic movement — the std of
   their per-interval loss change after regressing out the global mean change — computed from
   sums gathered in the streaming pass, so only these columns are ever read again.
2. Their changes are detrended the same way, scaled to unit length, projected on their top
   32-dimensional principal subspace (denoising, and k-means cost no longer grows with the
   number of intervals) and clustered with k-means (Euclidean distance on unit vectors = correlation
   distance; anti-phased examples land in different clusters).
3. Each cluster is described by the key values significantly enriched in it:
   enrichment = (count in cluster / cluster size) / (count among all kept examples / kept),
   with a one-sided hypergeometric p-value (Fisher's exact test: drawing the cluster's members
   from all kept examples, at least `count` of them carry the value), Bonferroni-adjusted over
   every (cluster, key, value) tested — values seen at least `min_count` times in a cluster.
   Only values with adjusted p <= ENRICHMENT_ALPHA are listed, most significant first. A
   cluster is "dominated" by a key when that key's most significant value holds at least
   DOMINANT_SHARE of its members: a cluster dominated by feature and target is one keyed
   group; by feature alone, a feature whose targets move together; none: "mixed".

Opposing cluster pairs need care: clusters are cut out of the very noise a test would look
at, so two clusters of pure noise come out anti-correlated. The intervals are therefore split
into alternating blocks (about n/8 long): k-means sees only the even blocks, and cluster
pairs are tested (same rule as key groups: detrended against the examples outside both,
Bartlett-Fisher z, Bonferroni) on the odd blocks, less their edge intervals, whose noise the
clustering never saw. Alternating blocks keep both halves spread over the
whole run, so a swing confined to one phase of training still reaches both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from lmprobe.mining.inputs import TraceWindow
from lmprobe.mining.kmeans import kmeans
from lmprobe.mining.opposing import DEFAULT_ALPHA, MIN_INTERVALS, SWING_Z, PairTest, Swing, pair_strength
from lmprobe.mining.stats import (
    bonferroni_threshold,
    pair_z,
    regress_out,
    regress_out_each,
    swing_intervals,
    trend_without,
    unit_columns,
    winsorise,
)
from lmprobe.mining.topk import top_k_rows

ENRICHED_PER_KEY = 3
ENRICHMENT_ALPHA = 0.01
DOMINANT_SHARE = 0.5
EXAMPLES_PER_CLUSTER = 5
FOLD_BLOCKS = 8
CLUSTER_CELLS = 1 << 21  # intervals x candidates gathered at most (tens of MiB of work arrays)
PRINCIPAL_COMPONENTS = 32


@dataclass
class Enrichment:
    """A key value over-represented in a cluster."""

    value: int
    count: int  # members of the cluster with this value
    total: int  # kept examples with this value
    enrichment: float  # (count / cluster size) / (total / kept examples)
    p_value: float = 1.0  # one-sided hypergeometric (Fisher) p-value
    p_adjusted: float = 1.0  # Bonferroni over every (cluster, key, value) tested
    share: float = 0.0  # count / cluster size

    def to_dict(self) -> dict[str, Any]:
        return {"value": int(self.value), "count": int(self.count), "total": int(self.total),
                "enrichment": float(self.enrichment), "p_value": float(self.p_value),
                "p_adjusted": float(self.p_adjusted), "share": float(self.share)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Enrichment":
        return cls(int(data["value"]), int(data["count"]), int(data["total"]),
                   float(data["enrichment"]), float(data.get("p_value", 1.0)),
                   float(data.get("p_adjusted", 1.0)), float(data.get("share", 0.0)))


@dataclass
class Dominance:
    """A key whose most significant value holds at least DOMINANT_SHARE of a cluster."""

    key: str
    value: int
    share: float

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "value": int(self.value), "share": float(self.share)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Dominance":
        return cls(str(data["key"]), int(data["value"]), float(data["share"]))


@dataclass
class Cluster:
    """Examples with similar detrended loss-change trajectories."""

    id: int
    size: int
    members: np.ndarray  # int64 example indices, ascending
    mean_change: np.ndarray  # float64 [intervals]: members' mean detrended loss change
    examples: np.ndarray  # members closest to the cluster centre, closest first
    enriched: dict[str, list[Enrichment]] = field(default_factory=dict)
    dominant: list[Dominance] = field(default_factory=list)  # empty: "mixed"

    @property
    def dominated_by(self) -> str:
        """The key kinds that dominate the cluster, e.g. "feature+target", or "mixed"."""
        return "+".join(d.key for d in self.dominant) or "mixed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": int(self.id), "size": int(self.size),
            "members": [int(i) for i in self.members],
            "mean_change": [float(v) for v in self.mean_change],
            "examples": [int(i) for i in self.examples],
            "enriched": {k: [e.to_dict() for e in v] for k, v in self.enriched.items()},
            "dominated_by": self.dominated_by,
            "dominant": [d.to_dict() for d in self.dominant],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Cluster":
        return cls(
            id=int(data["id"]), size=int(data["size"]),
            members=np.asarray(data["members"], dtype=np.int64),
            mean_change=np.asarray(data["mean_change"], dtype=np.float64),
            examples=np.asarray(data["examples"], dtype=np.int64),
            enriched={k: [Enrichment.from_dict(e) for e in v] for k, v in data["enriched"].items()},
            dominant=[Dominance.from_dict(d) for d in data.get("dominant", [])],
        )


@dataclass
class ClusterPair:
    """Two clusters whose mean detrended changes are anti-correlated on held-out intervals."""

    cluster_a: int
    cluster_b: int
    size_a: int
    size_b: int
    corr: float  # on the held-out intervals
    z: float
    score: float  # sqrt(-cov) on the held-out intervals, loss units per interval
    swings: list[Swing] = field(default_factory=list)  # over all intervals
    strength: float = 0.0  # score * sqrt(smaller size): the ranking key, as for key pairs

    def to_dict(self) -> dict[str, Any]:
        return {"cluster_a": int(self.cluster_a), "cluster_b": int(self.cluster_b),
                "size_a": int(self.size_a), "size_b": int(self.size_b),
                "corr": float(self.corr), "z": float(self.z), "score": float(self.score),
                "strength": float(self.strength), "swings": [s.to_dict() for s in self.swings]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ClusterPair":
        score, size_a, size_b = float(data["score"]), int(data["size_a"]), int(data["size_b"])
        return cls(int(data["cluster_a"]), int(data["cluster_b"]), size_a, size_b,
                   float(data["corr"]), float(data["z"]), score,
                   [Swing.from_dict(s) for s in data["swings"]],
                   float(data.get("strength", pair_strength(score, size_a, size_b))))


@dataclass
class Clusters:
    """The clustering of the top movers and the opposing pairs among its clusters."""

    clusters: list[Cluster]
    pairs: list[ClusterPair]
    test: PairTest
    n_candidates: int
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"clusters": [c.to_dict() for c in self.clusters],
                "pairs": [p.to_dict() for p in self.pairs],
                "test": self.test.to_dict(), "n_candidates": int(self.n_candidates),
                "note": self.note}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Clusters":
        return cls([Cluster.from_dict(c) for c in data["clusters"]],
                   [ClusterPair.from_dict(p) for p in data["pairs"]],
                   PairTest.from_dict(data["test"]), int(data["n_candidates"]),
                   str(data.get("note", "")))


def idiosyncratic_variance(
    weighted_sum: np.ndarray,
    weighted_sq_sum: np.ndarray,
    weighted_trend_sum: np.ndarray,
    trend: np.ndarray,
    scale: np.ndarray,
) -> np.ndarray:
    """Per-example residual sum of squares of its changes, regressed on [1, trend] by weighted
    least squares with weights 1 / scale^2 — from the sums the streaming pass collected."""
    weight = 1.0 / scale**2
    total, mean_trend = weight.sum(), (weight @ trend) / weight.sum()
    spread = float(weight @ (trend - mean_trend) ** 2)
    # Residual sum of squares = centred sum of squares - the part the trend explains.
    centred_sq = weighted_sq_sum - weighted_sum**2 / total
    if spread <= 0:
        return np.maximum(centred_sq, 0.0)
    centred_cross = weighted_trend_sum - mean_trend * weighted_sum
    return np.maximum(centred_sq - centred_cross**2 / spread, 0.0)


def select_candidates(movement: np.ndarray, keep: np.ndarray, count: int) -> np.ndarray:
    """The `count` kept examples that move most (ties to the lower index), ascending."""
    kept = np.flatnonzero(keep)
    count = min(count, kept.size)
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    positions, _ = top_k_rows(movement[kept][None, :], count, largest=True)
    return np.sort(kept[positions[0]])


def gather_columns(window: TraceWindow, columns: np.ndarray, chunk_cells: int) -> np.ndarray:
    """Loss trajectories [records, len(columns)] of a few examples (ascending), in blocks."""
    out = np.empty((window.n_records, columns.size), dtype=np.float32)
    width = max(1, min(window.n_examples, chunk_cells))
    rows = max(1, chunk_cells // width)
    starts = range(0, window.n_examples, width)
    for start in range(0, window.n_records, rows):
        stop = min(start + rows, window.n_records)
        for col in starts:
            lo, hi = np.searchsorted(columns, [col, col + width])
            if hi == lo:
                continue
            block = window.losses[window.row_start + start : window.row_start + stop, col : col + width]
            out[start:stop, lo:hi] = np.asarray(block, dtype=np.float32)[:, columns[lo:hi] - col]
    return out


def principal_subspace(points: np.ndarray, count: int, seed: int, power_steps: int = 3) -> np.ndarray:
    """Coordinates of the (centred) rows of `points` in their top-`count` principal subspace.

    Randomised subspace iteration (Halko, Martinsson & Tropp 2011): a few products and thin
    orthonormalisations instead of an eigendecomposition, which costs O(cols^3) and is very
    slow in a multithreaded LAPACK on a busy machine. Any orthonormal basis of the subspace gives the
    same distances, so the coordinates are as good as the principal components for k-means.
    """
    centred = points - points.mean(axis=0)
    rows, cols = centred.shape
    if cols <= count:
        return centred
    sketch = centred @ np.random.default_rng(seed).standard_normal((cols, count))
    for _ in range(power_steps):
        sketch = centred @ (centred.T @ orthonormal_columns(sketch))
    basis = orthonormal_columns(centred.T @ orthonormal_columns(sketch))
    return centred @ basis


def orthonormal_columns(matrix: np.ndarray) -> np.ndarray:
    """Gram-Schmidt with re-orthogonalisation (CGS2) on a thin matrix, in plain numpy.

    Equivalent to the Q of a QR factorisation for the few columns used here; LAPACK's QR runs
    two orders of magnitude slower when its threads compete with other work on the machine.
    Columns that turn out dependent are left as zeros.
    """
    basis = np.zeros_like(matrix, dtype=np.float64)
    for j in range(matrix.shape[1]):
        vector = matrix[:, j].astype(np.float64)
        for _ in range(2):
            vector = vector - basis[:, :j] @ np.einsum("ij,i->j", basis[:, :j], vector)
        norm = np.sqrt(vector @ vector)
        if norm > 1e-12 * max(1.0, np.sqrt(np.einsum("i,i->", matrix[:, j], matrix[:, j]))):
            basis[:, j] = vector / norm
    return basis


def fold_of_intervals(n_intervals: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held_out) masks over intervals: alternating blocks of about n/8 intervals.

    Held-out intervals next to a fit interval are dropped too: the two changes share a
    record, so with independent noise per record they are correlated (-0.5) and would carry
    the noise the clustering was fitted to into the test.
    """
    length = max(1, n_intervals // FOLD_BLOCKS)
    fit = (np.arange(n_intervals) // length) % 2 == 0
    touches_fit = np.zeros(n_intervals, dtype=bool)
    touches_fit[1:] |= fit[:-1]
    touches_fit[:-1] |= fit[1:]
    return fit, ~fit & ~touches_fit


def enrichment_tests(
    clusters: list[np.ndarray], keys: Mapping[str, np.ndarray], keep: np.ndarray, min_count: int
) -> list[dict[str, list[Enrichment]]]:
    """Every value seen >= min_count times in a cluster, with its hypergeometric p-value and the
    Bonferroni adjustment over all of them; per cluster and key, most significant first."""
    from scipy.stats import hypergeom

    n_kept = int(keep.sum())
    found: list[dict[str, list[Enrichment]]] = [{} for _ in clusters]
    for name, values in keys.items():
        overall_values, overall_counts = np.unique(values[keep], return_counts=True)
        for c, members in enumerate(clusters):
            seen, counts = np.unique(values[members], return_counts=True)
            totals = overall_counts[np.searchsorted(overall_values, seen)]
            eligible = counts >= min_count
            seen, counts, totals = seen[eligible], counts[eligible], totals[eligible]
            p = hypergeom.sf(counts - 1, n_kept, totals, members.size)
            ratio = (counts / members.size) / (totals / n_kept)
            found[c][name] = [Enrichment(int(v), int(k), int(t), float(r), float(q), 1.0, k / members.size)
                              for v, k, t, r, q in zip(seen, counts, totals, ratio, p)]
    n_tests = sum(len(e) for per_cluster in found for e in per_cluster.values())
    for per_cluster in found:
        for name, entries in per_cluster.items():
            for e in entries:
                e.p_adjusted = min(1.0, e.p_value * n_tests)
            entries.sort(key=lambda e: (e.p_value, -e.enrichment, e.value))
    return found


def describe_cluster(
    tested: dict[str, list[Enrichment]], size: int
) -> tuple[dict[str, list[Enrichment]], list[Dominance]]:
    """The significant enrichments of one cluster (a few per key) and the keys dominating it."""
    enriched = {name: [e for e in entries if e.p_adjusted <= ENRICHMENT_ALPHA][:ENRICHED_PER_KEY]
                for name, entries in tested.items()}
    dominant = [Dominance(name, found[0].value, found[0].count / size)
                for name, found in enriched.items()
                if found and found[0].count / size >= DOMINANT_SHARE]
    dominant.sort(key=lambda d: (-d.share, d.key))
    return enriched, dominant


def cluster_movers(
    window: TraceWindow,
    trend: np.ndarray,
    scale: np.ndarray,
    movement: np.ndarray,
    keep: np.ndarray,
    keys: Mapping[str, np.ndarray],
    *,
    n_clusters: int = 8,
    cluster_top: int = 2000,
    seed: int = 0,
    alpha: float = DEFAULT_ALPHA,
    min_count: int = 3,
    chunk_cells: int = 1 << 21,
) -> Clusters:
    """Cluster the top movers on detrended, unit-scaled change trajectories (module docstring).

    trend: [intervals] global mean change; scale: [intervals] noise scale standardising each
    interval; movement: [examples] idiosyncratic variance used to pick the candidates
    (`idiosyncratic_variance`).
    """
    n_intervals = window.n_intervals
    n_kept = int(keep.sum())
    affordable = max(1, CLUSTER_CELLS // max(1, n_intervals))
    candidates = select_candidates(movement, keep, min(cluster_top, affordable))
    capped = (f"candidates capped at {affordable} (of cluster_top={cluster_top}) to bound memory"
              f" over {n_intervals} intervals" if affordable < min(cluster_top, n_kept) else "")
    empty_test = PairTest(n_intervals, 0, alpha, bonferroni_threshold(alpha, 1))
    if n_clusters < 2 or candidates.size < 2 * n_clusters:
        note = f"no clustering: {candidates.size} candidate example(s) for {n_clusters} cluster(s)"
        return Clusters([], [], empty_test, int(candidates.size), note)

    losses = gather_columns(window, candidates, chunk_cells)
    if not np.isfinite(losses).all():  # the caller drops non-finite examples first
        raise ValueError("non-finite losses among cluster candidates")
    changes = np.diff(losses, axis=0).astype(np.float64)
    del losses
    fit, held_out = fold_of_intervals(n_intervals)
    standardised = winsorise(regress_out(changes, trend, scale)[fit])  # [fit intervals, C]
    unit, _ = unit_columns(standardised - standardised.mean(axis=0))
    del standardised
    points = principal_subspace(unit.T, PRINCIPAL_COMPONENTS, seed)
    del unit
    labels, centres, _ = kmeans(points, n_clusters, seed=seed)

    clusters, raw_means = [], []
    ids = [cid for cid in range(centres.shape[0]) if np.any(labels == cid)]
    tested = enrichment_tests([candidates[labels == cid] for cid in ids], keys, keep, min_count)
    for cid, tests in zip(ids, tested):
        inside = np.flatnonzero(labels == cid)
        distance = np.sum((points[inside] - centres[cid]) ** 2, axis=1)
        closest = inside[np.lexsort((candidates[inside], distance))][:EXAMPLES_PER_CLUSTER]
        members = candidates[inside]
        raw_means.append(changes[:, inside].mean(axis=1))
        enriched, dominant = describe_cluster(tests, int(inside.size))
        clusters.append(Cluster(
            id=cid, size=int(inside.size), members=members,
            # Regression is linear: the mean of members' residuals is the mean's residual.
            mean_change=regress_out(raw_means[-1][:, None], trend)[:, 0],
            examples=candidates[closest], enriched=enriched, dominant=dominant,
        ))
    raw_means = np.stack(raw_means, axis=1)
    pairs, test = _opposing_clusters(clusters, raw_means, trend * n_kept, n_kept, scale,
                                     held_out, window.steps, alpha)
    return Clusters(clusters, pairs, test, int(candidates.size), capped)


def _opposing_clusters(
    clusters: list[Cluster],
    raw_means: np.ndarray,
    total_change: np.ndarray,
    n_total: int,
    scale: np.ndarray,
    held_out: np.ndarray,
    steps: np.ndarray,
    alpha: float,
) -> tuple[list[ClusterPair], PairTest]:
    """Test cluster pairs on held-out intervals; raw_means: [intervals, clusters] mean changes.

    As for key groups, each pair is detrended against the examples outside both clusters.
    """
    n_held = int(held_out.sum())
    n_tests = len(clusters) * (len(clusters) - 1) // 2
    threshold = bonferroni_threshold(alpha, n_tests)
    if n_held < MIN_INTERVALS:
        return [], PairTest(n_held, 0, alpha, threshold,
                            f"no cluster pairs tested: {n_held} held-out interval(s),"
                            f" the test needs at least {MIN_INTERVALS}")
    if n_tests == 0:
        return [], PairTest(n_held, 0, alpha, threshold, "no cluster pairs: fewer than 2 clusters")
    a, b = np.triu_indices(len(clusters), 1)
    sizes = np.array([c.size for c in clusters])
    trends = trend_without(total_change, n_total, [raw_means[:, a], raw_means[:, b]], [sizes[a], sizes[b]])
    corr, z, std_a, std_b = pair_z(raw_means[:, a], raw_means[:, b], trends, scale, rows=held_out)
    pairs = []
    for k in np.flatnonzero((z < -threshold) & (corr < 0)):
        raw_a = regress_out_each(raw_means[:, a[k], None], trends[:, k, None])[:, 0]
        raw_b = regress_out_each(raw_means[:, b[k], None], trends[:, k, None])[:, 0]
        swings = [Swing(int(steps[i]), int(steps[i + 1]), float(raw_a[i]), float(raw_b[i]))
                  for i in swing_intervals(std_a[:, k], std_b[:, k], SWING_Z)]
        held_a = raw_a[held_out] - raw_a[held_out].mean()
        held_b = raw_b[held_out] - raw_b[held_out].mean()
        score = math.sqrt(max(0.0, -float(np.mean(held_a * held_b))))
        ca, cb = clusters[a[k]], clusters[b[k]]
        pairs.append(ClusterPair(ca.id, cb.id, ca.size, cb.size, float(corr[k]), float(z[k]),
                                 score, swings, pair_strength(score, ca.size, cb.size)))
    pairs.sort(key=lambda p: (-p.strength, p.cluster_a, p.cluster_b))
    return pairs, PairTest(n_held, n_tests, alpha, threshold)
