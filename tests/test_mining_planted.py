"""The miner finds planted opposing groups and clusters, and nothing in pure noise."""

import numpy as np
import pytest

from lmprobe.mining import mine
from lmprobe.mining.synthetic import planted_trace

SEEDS = [0, 1, 2, 3, 4]


def _pair_set(pairs):
    return {frozenset([p.key_a, p.key_b]) for p in pairs}


def _truth(trace):
    # Group keys follow the by spec "feature-target": (feature, target).
    return {frozenset([a, b]) for a, b in trace.pairs}


@pytest.mark.parametrize("seed", SEEDS)
def test_planted_pairs_are_recovered(seed):
    trace = planted_trace(60, 5000, n_pairs=6, seed=seed)
    result = mine(trace.losses, trace.steps, trace.keys, by="feature-target", n_clusters=0)
    found, truth = _pair_set(result.pairs), _truth(trace)
    assert len(truth) == 6
    true_found = len(found & truth)
    precision = true_found / max(1, len(found))
    recall = true_found / len(truth)
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)
    for pair in result.pairs:
        assert pair.corr < 0 and pair.z < -result.pair_test.z_threshold
        assert pair.score > 0 and pair.size_a >= pair.size_b >= 5
        assert pair.key_a[0] == pair.key_b[0] and pair.key_a[1] != pair.key_b[1]


def test_weak_planted_pairs_mostly_recovered_without_false_positives():
    """Harder setting: smaller swings. Recall drops, precision must not."""
    found_true = found_all = planted = 0
    for seed in SEEDS:
        trace = planted_trace(60, 5000, n_pairs=6, pair_scale=0.06, seed=seed)
        result = mine(trace.losses, trace.steps, trace.keys, n_clusters=0)
        found, truth = _pair_set(result.pairs), _truth(trace)
        found_true += len(found & truth)
        found_all += len(found)
        planted += len(truth)
    assert found_true == found_all
    assert found_true / planted >= 0.6


@pytest.mark.parametrize("seed", [10, 11, 12, 13, 14])
def test_pure_noise_yields_no_pair(seed):
    trace = planted_trace(60, 5000, n_pairs=0, seed=seed)
    result = mine(trace.losses, trace.steps, trace.keys, n_clusters=8, cluster_top=1000, seed=seed)
    assert result.pair_test.n_tested > 500  # the guard was really exercised
    assert result.pairs == []
    assert result.clusters.pairs == []


def test_global_trend_alone_makes_no_pair():
    """Fast and slow learners sharing a feature are not opposing signals (regression detrend)."""
    rng = np.random.default_rng(3)
    n_records, per_group = 60, 50
    t = np.arange(n_records)[:, None]
    trend = np.exp(-t / 8.0)
    fast = 4.0 * trend + 0.5 + rng.normal(0, 0.02, (n_records, per_group))
    slow = 1.0 * trend + 2.0 + rng.normal(0, 0.02, (n_records, per_group))
    losses = np.concatenate([fast, slow], axis=1).astype(np.float32)
    keys = {"feature": np.zeros(2 * per_group, np.int64),
            "target": np.repeat([1, 2], per_group).astype(np.int64)}
    result = mine(losses, np.arange(n_records), keys, n_clusters=0)
    assert result.pair_test.n_tested == 1
    assert result.pairs == []


def test_planted_clusters_are_found_and_described():
    trace = planted_trace(60, 5000, n_pairs=0, n_cluster_features=4, seed=0)
    result = mine(trace.losses, trace.steps, trace.keys, n_clusters=8, cluster_top=1000, seed=0)
    feature = trace.keys["feature"]
    clusters = result.clusters.clusters
    assert sum(c.size for c in clusters) == result.clusters.n_candidates == 1000
    best_cluster = {}
    for planted in trace.cluster_features:
        # The cluster where this feature is the top enriched value holds most of its members.
        matches = [c for c in clusters if c.enriched["feature"] and c.enriched["feature"][0].value == planted]
        assert matches, f"feature {planted} is no cluster's top enriched value"
        cluster = max(matches, key=lambda c: c.enriched["feature"][0].count)
        top = cluster.enriched["feature"][0]
        assert top.count / cluster.size >= 0.8  # purity
        assert top.count / (feature == planted).sum() >= 0.6  # recall among all its examples
        assert top.enrichment > 10
        assert top.total == (feature == planted).sum()
        assert np.all(np.isin(cluster.examples, cluster.members))
        best_cluster[planted] = cluster.id
    # Clusters 2k+1 were planted as mirror images of clusters 2k: opposing cluster pairs.
    found = {frozenset([p.cluster_a, p.cluster_b]) for p in result.clusters.pairs}
    planted = trace.cluster_features
    for a, b in ((planted[0], planted[1]), (planted[2], planted[3])):
        assert frozenset([best_cluster[a], best_cluster[b]]) in found
    for pair in result.clusters.pairs:
        assert pair.corr < 0 and pair.score > 0


def test_clustering_is_deterministic_for_a_seed():
    trace = planted_trace(40, 3000, n_pairs=0, n_cluster_features=2, seed=5)
    runs = [mine(trace.losses, trace.steps, trace.keys, n_clusters=5, cluster_top=600, seed=7)
            for _ in range(2)]
    assert runs[0].clusters.to_dict() == runs[1].clusters.to_dict()


def test_screened_pair_search_matches_the_exhaustive_one(monkeypatch):
    """Above EXACT_BUDGET pairs are screened first; the screen must not lose planted pairs."""
    import lmprobe.mining.opposing as opposing

    trace = planted_trace(60, 5000, n_pairs=6, pair_scale=0.06, seed=1)
    exhaustive = mine(trace.losses, trace.steps, trace.keys, n_clusters=0)
    monkeypatch.setattr(opposing, "EXACT_BUDGET", 0)
    screened = mine(trace.losses, trace.steps, trace.keys, n_clusters=0)
    assert exhaustive.pairs
    assert [(p.key_a, p.key_b, p.z) for p in screened.pairs] == [(p.key_a, p.key_b, p.z) for p in exhaustive.pairs]
