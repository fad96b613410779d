"""Bad input gets a one-line LmprobeError that says what to do; non-finite losses are skipped."""

import warnings

import numpy as np
import pytest

from lmprobe.errors import LmprobeError
from lmprobe.mining import mine


def keys_for(n, seed=0):
    rng = np.random.default_rng(seed)
    return {"target": rng.integers(0, 3, n), "feature": rng.integers(0, 2, n)}


def one_line(error):
    return "\n" not in str(error.value)


@pytest.mark.parametrize("n_records", [0, 1])
def test_fewer_than_two_records(n_records):
    losses = np.ones((n_records, 10), np.float32)
    with pytest.raises(LmprobeError, match=rf"the trace has {n_records} record\(s\); mining needs at least 2") as err:
        mine(losses, np.arange(n_records), keys_for(10))
    assert "trace.every" in str(err.value) and one_line(err)


def test_only_complete_records_count():
    # Three loss rows, but only one step written so far: one complete record.
    with pytest.raises(LmprobeError, match=r"has 1 record\(s\)"):
        mine(np.ones((3, 10), np.float32), np.array([0]), keys_for(10))


def test_keys_of_the_wrong_length():
    with pytest.raises(LmprobeError, match="key 'target' has shape \\(9,\\); it needs one value per example \\(10\\)") as err:
        mine(np.ones((4, 10), np.float32), np.arange(4), {"target": np.zeros(9, int), "feature": np.zeros(10, int)})
    assert one_line(err)


def test_keys_must_be_integers():
    with pytest.raises(LmprobeError, match="must hold integers"):
        mine(np.ones((4, 10), np.float32), np.arange(4), {"target": np.zeros(10), "feature": np.zeros(10, int)})


def test_window_selecting_fewer_than_two_records():
    with pytest.raises(LmprobeError, match=r"window steps=\(15, 25\) selects 1 record\(s\) \(the trace covers steps 0\.\.30\)") as err:
        mine(np.ones((4, 10), np.float32), np.array([0, 10, 20, 30]), keys_for(10), window=(15, 25))
    assert one_line(err)
    with pytest.raises(LmprobeError, match=r"selects 0 record"):
        mine(np.ones((4, 10), np.float32), np.array([0, 10, 20, 30]), keys_for(10), window=(40, 50))


def test_unknown_grouping_names_the_valid_ones():
    with pytest.raises(LmprobeError, match=r"unknown grouping by='token'.*'target', 'feature-target'.*available keys: feature, target") as err:
        mine(np.ones((4, 10), np.float32), np.arange(4), keys_for(10), by="token")
    assert one_line(err)


def test_steps_must_increase():
    with pytest.raises(LmprobeError, match="must increase"):
        mine(np.ones((3, 10), np.float32), np.array([0, 10, 10]), keys_for(10))


def test_loss_matrix_must_be_2d():
    with pytest.raises(LmprobeError, match="2-D"):
        mine(np.ones(10, np.float32), np.arange(10), keys_for(10))


def test_bad_settings():
    with pytest.raises(LmprobeError, match="top=0"):
        mine(np.ones((4, 10), np.float32), np.arange(4), keys_for(10), top=0)
    with pytest.raises(LmprobeError, match="alpha=2"):
        mine(np.ones((4, 10), np.float32), np.arange(4), keys_for(10), alpha=2)


def test_non_finite_examples_are_skipped_with_a_warning():
    rng = np.random.default_rng(1)
    losses = rng.gamma(2.0, 1.0, size=(12, 200)).astype(np.float32)
    keys = keys_for(200, seed=1)
    bad = [3, 50, 51, 199]
    dirty = losses.copy()
    dirty[2, 3] = np.nan
    dirty[7, 50] = np.inf
    dirty[11, 51] = -np.inf
    dirty[0, 199] = np.nan
    with pytest.warns(RuntimeWarning, match="skipped 4 of 200 example"):
        result = mine(dirty, np.arange(12), keys, min_size=2, n_clusters=2, cluster_top=50, chunk_cells=300)
    assert result.n_skipped == 4 and result.skipped.tolist() == bad
    assert any("skipped 4" in w for w in result.warnings)
    # Same as mining the matrix without those columns (indices shifted accordingly).
    kept = np.setdiff1d(np.arange(200), bad)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clean = mine(losses[:, kept], np.arange(12), {k: v[kept] for k, v in keys.items()},
                     min_size=2, n_clusters=2, cluster_top=50)
    assert [g.key for g in result.groups] == [g.key for g in clean.groups]
    for g_dirty, g_clean in zip(result.groups, clean.groups):
        np.testing.assert_array_equal(g_dirty.members, kept[g_clean.members])
        np.testing.assert_allclose(g_dirty.mean_loss, g_clean.mean_loss, rtol=1e-9)
    np.testing.assert_array_equal(result.movers.riser_index, kept[clean.movers.riser_index])
    assert result.histogram.n_changes == 11 * kept.size
    for movers in (result.movers.riser_index, result.movers.window_faller_index):
        assert not np.isin(movers, bad).any()


def test_all_examples_non_finite():
    losses = np.full((3, 5), np.nan, np.float32)
    with pytest.raises(LmprobeError, match="every one of the 5 examples has a non-finite loss"):
        mine(losses, np.arange(3), keys_for(5))


def test_memory_caps_keep_the_largest_groups_and_say_so(monkeypatch):
    mine_module = __import__("sys").modules["lmprobe.mining.mine"]
    import lmprobe.mining.clusters as clusters

    from lmprobe.mining.synthetic import planted_trace

    trace = planted_trace(20, 2000, n_pairs=2, seed=4)
    full = mine(trace.losses, trace.steps, trace.keys, n_clusters=2, cluster_top=300)
    monkeypatch.setattr(mine_module, "GROUP_CELLS", 20 * 10)
    monkeypatch.setattr(clusters, "CLUSTER_CELLS", 19 * 100)
    capped = mine(trace.losses, trace.steps, trace.keys, n_clusters=2, cluster_top=300)
    assert len(full.groups) > 10 and len(capped.groups) == 10
    assert [g.key for g in capped.groups] == [g.key for g in full.groups[:10]]
    assert any("kept only the 10 largest groups" in w for w in capped.warnings)
    assert capped.clusters.n_candidates == 100 and "capped at 100" in capped.clusters.note


def test_open_ended_window():
    losses = np.random.default_rng(0).random((5, 10)).astype(np.float32)
    steps = np.array([0, 10, 20, 30, 40])
    assert mine(losses, steps, keys_for(10), window=(20, None), n_clusters=0).steps.tolist() == [20, 30, 40]
    assert mine(losses, steps, keys_for(10), window=(None, 10), n_clusters=0).steps.tolist() == [0, 10]
    with pytest.raises(LmprobeError, match=r"window steps=\(40, \) selects 1 record"):
        mine(losses, steps, keys_for(10), window=(40, None))
