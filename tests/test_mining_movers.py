"""Movers, histogram and group statistics against brute-force numpy on small matrices."""

import numpy as np
import pytest

from lmprobe.mining import group_examples, mine
from lmprobe.mining.stats import regress_out, regress_out_each
from lmprobe.mining.topk import top_k_rows


def brute_top(values, k, largest):
    """Indices sorted by value (best first), ties to the lower index."""
    order = np.lexsort((np.arange(values.size), -values if largest else values))
    return order[:k]


@pytest.fixture
def small():
    rng = np.random.default_rng(4)
    losses = rng.gamma(2.0, 1.0, size=(9, 60)).astype(np.float32)
    steps = np.array([0, 5, 10, 20, 30, 45, 60, 80, 100])
    keys = {"target": rng.integers(0, 3, 60), "feature": rng.integers(0, 2, 60)}
    return losses, steps, keys


def test_per_interval_movers_match_brute_force(small):
    losses, steps, keys = small
    result = mine(losses, steps, keys, top=6, n_clusters=0, chunk_cells=50)
    changes = np.diff(losses, axis=0)
    for i, change in enumerate(changes):
        np.testing.assert_array_equal(result.movers.riser_index[i], brute_top(change, 6, True))
        np.testing.assert_array_equal(result.movers.faller_index[i], brute_top(change, 6, False))
        np.testing.assert_array_equal(result.movers.riser_change[i], change[brute_top(change, 6, True)])
    np.testing.assert_array_equal(result.movers.step_from, steps[:-1])
    np.testing.assert_array_equal(result.movers.step_to, steps[1:])


def test_window_movers_match_brute_force(small):
    losses, steps, keys = small
    result = mine(losses, steps, keys, window=(10, 80), top=5, n_clusters=0)
    rows = (steps >= 10) & (steps <= 80)
    changes = np.diff(losses[rows], axis=0)
    window_steps = steps[rows]
    np.testing.assert_array_equal(result.steps, window_steps)
    best_rise, best_fall = changes.max(axis=0), changes.min(axis=0)
    risers = brute_top(best_rise, 5, True)
    fallers = brute_top(best_fall, 5, False)
    np.testing.assert_array_equal(result.movers.window_riser_index, risers)
    np.testing.assert_array_equal(result.movers.window_faller_index, fallers)
    np.testing.assert_allclose(result.movers.window_riser_change, best_rise[risers])
    np.testing.assert_array_equal(result.movers.window_riser_step_to,
                                  window_steps[changes[:, risers].argmax(axis=0) + 1])
    np.testing.assert_array_equal(result.movers.window_faller_step_to,
                                  window_steps[changes[:, fallers].argmin(axis=0) + 1])
    assert result.movers.riser_index.shape == (rows.sum() - 1, 5)


def test_histogram_counts_every_finite_change(small):
    losses, steps, keys = small
    losses = losses.copy()
    losses[3, 7] = np.nan  # example 7 is skipped entirely
    with pytest.warns(RuntimeWarning, match="skipped 1 of 60"):
        result = mine(losses, steps, keys, n_clusters=0, bins=10)
    hist = result.histogram
    kept = np.delete(losses, 7, axis=1)
    changes = np.diff(kept, axis=0)
    assert hist.counts.sum() == hist.n_changes == changes.size
    assert hist.edges[0] <= changes.min() and hist.edges[-1] >= changes.max()
    assert hist.min_change == pytest.approx(changes.min()) and hist.counts.size == 10
    # Interior bins hold exactly the changes that fall inside them.
    inner = (changes >= hist.edges[1]) & (changes < hist.edges[2])
    assert hist.counts[1] == inner.sum()


def test_group_mean_trajectories_and_sizes(small):
    losses, steps, keys = small
    result = mine(losses, steps, keys, by="feature-target", min_size=4, n_clusters=0)
    assert result.key_names == ("feature", "target")
    seen = set()
    for group in result.groups:
        feature, target = group.key
        members = np.flatnonzero((keys["feature"] == feature) & (keys["target"] == target))
        np.testing.assert_array_equal(group.members, members)
        assert group.size == members.size >= 4
        np.testing.assert_allclose(group.mean_loss, losses[:, members].mean(axis=1), rtol=1e-6)
        assert set(group.examples) <= set(members) and len(group.examples) == min(5, members.size)
        seen.add(group.key)
    all_keys = {(f, t) for f, t in zip(keys["feature"], keys["target"])}
    big = {k for k in all_keys
           if ((keys["feature"] == k[0]) & (keys["target"] == k[1])).sum() >= 4}
    assert seen == big
    sizes = [g.size for g in result.groups]
    assert sizes == sorted(sizes, reverse=True)


def test_group_by_target_only_and_min_size():
    keys = {"target": np.array([1, 1, 1, 2, 2, 3, 3, 3, 3]), "feature": np.zeros(9, np.int64)}
    index = group_examples(keys, ("target",), min_size=3)
    assert index.keys.tolist() == [[3], [1]]
    assert index.sizes.tolist() == [4, 3]
    assert index.group_of.tolist() == [1, 1, 1, -1, -1, 0, 0, 0, 0]


def test_top_k_with_ties_prefers_lower_index():
    values = np.array([[1.0, 3.0, 3.0, 2.0, 3.0, 0.0]])
    positions, chosen = top_k_rows(values, 2, largest=True)
    assert positions.tolist() == [[1, 2]] and chosen.tolist() == [[3.0, 3.0]]
    positions, _ = top_k_rows(values, 3, largest=False)
    assert positions.tolist() == [[5, 0, 3]]


def test_regression_detrend_removes_any_multiple_of_the_trend():
    rng = np.random.default_rng(0)
    trend = rng.normal(size=30)
    noise = rng.normal(size=(30, 3))
    changes = noise + np.outer(trend, [0.5, 1.0, 3.0]) + 2.0
    residuals = regress_out(changes, trend)
    np.testing.assert_allclose(residuals.T @ trend, 0, atol=1e-9)
    np.testing.assert_allclose(residuals.sum(axis=0), 0, atol=1e-9)
    np.testing.assert_allclose(residuals, regress_out(noise, trend), atol=1e-9)
    each = regress_out_each(changes, np.repeat(trend[:, None], 3, axis=1))
    np.testing.assert_allclose(each, residuals, atol=1e-9)


def test_streamed_movement_equals_the_weighted_residual_sum_of_squares():
    from lmprobe.mining.clusters import idiosyncratic_variance

    rng = np.random.default_rng(1)
    changes, trend, scale = rng.normal(size=(30, 6)), rng.normal(size=30), rng.uniform(0.5, 2, 30)
    weight = 1 / scale**2
    streamed = idiosyncratic_variance(weight @ changes, weight @ changes**2, (weight * trend) @ changes,
                                      trend, scale)
    residuals = regress_out(changes, trend, scale)
    np.testing.assert_allclose(streamed, (residuals**2).sum(axis=0), rtol=1e-9)


def test_orthonormal_columns_span_the_input():
    from lmprobe.mining.clusters import orthonormal_columns

    matrix = np.random.default_rng(2).normal(size=(50, 6))
    basis = orthonormal_columns(matrix)
    np.testing.assert_allclose(basis.T @ basis, np.eye(6), atol=1e-12)
    np.testing.assert_allclose(basis @ (basis.T @ matrix), matrix, atol=1e-10)


def test_find_movers_needs_no_keys_and_agrees_with_mine(small):
    from lmprobe.mining import find_movers

    losses, steps, keys = small
    movers, histogram = find_movers(losses, steps, top=4, chunk_cells=40)
    full = mine(losses, steps, keys, top=4, n_clusters=0)
    np.testing.assert_array_equal(movers.riser_index, full.movers.riser_index)
    np.testing.assert_array_equal(movers.window_faller_index, full.movers.window_faller_index)
    np.testing.assert_array_equal(histogram.counts, full.histogram.counts)
