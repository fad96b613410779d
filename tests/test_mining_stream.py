"""Chunked mining equals one-shot mining, on arrays and on np.memmap files."""

import numpy as np
import pytest

from lmprobe.mining import mine
from lmprobe.mining.stream import plan_chunks, row_blocks
from lmprobe.mining.synthetic import planted_trace

BIG = 10**12


def assert_same_result(a, b):
    ma, mb = a.movers, b.movers
    for name in ma.__dataclass_fields__:
        np.testing.assert_array_equal(getattr(ma, name), getattr(mb, name), err_msg=name)
    np.testing.assert_array_equal(a.histogram.edges, b.histogram.edges)
    np.testing.assert_array_equal(a.histogram.counts, b.histogram.counts)
    np.testing.assert_allclose(a.global_mean_loss, b.global_mean_loss, rtol=1e-12)
    assert [g.key for g in a.groups] == [g.key for g in b.groups]
    for ga, gb in zip(a.groups, b.groups):
        np.testing.assert_array_equal(ga.members, gb.members)
        np.testing.assert_array_equal(ga.examples, gb.examples)
        np.testing.assert_allclose(ga.mean_loss, gb.mean_loss, rtol=1e-12)
    assert [(p.key_a, p.key_b) for p in a.pairs] == [(p.key_a, p.key_b) for p in b.pairs]
    for pa, pb in zip(a.pairs, b.pairs):
        assert pa.corr == pytest.approx(pb.corr, abs=1e-9)
        assert pa.score == pytest.approx(pb.score, rel=1e-9)
        assert [s.step_to for s in pa.swings] == [s.step_to for s in pb.swings]
    if a.clusters is not None:
        assert [c.members.tolist() for c in a.clusters.clusters] == [
            c.members.tolist() for c in b.clusters.clusters
        ]
        assert [(p.cluster_a, p.cluster_b) for p in a.clusters.pairs] == [
            (p.cluster_a, p.cluster_b) for p in b.clusters.pairs
        ]


@pytest.fixture(scope="module")
def planted():
    return planted_trace(40, 3000, n_pairs=4, n_cluster_features=2, seed=21)


@pytest.mark.parametrize("chunk_cells", [3 * 3000, 7 * 3000 + 5, 1000])
def test_chunk_size_does_not_change_the_result(planted, chunk_cells):
    kwargs = dict(n_clusters=4, cluster_top=400, top=7)
    one = mine(planted.losses, planted.steps, planted.keys, chunk_cells=BIG, **kwargs)
    chunked = mine(planted.losses, planted.steps, planted.keys, chunk_cells=chunk_cells, **kwargs)
    assert one.pairs, "the planted pairs should be found"
    assert_same_result(one, chunked)


def test_tiny_chunks_on_a_small_matrix():
    trace = planted_trace(12, 150, n_pairs=1, min_pair_size=5, seed=2)
    one = mine(trace.losses, trace.steps, trace.keys, chunk_cells=BIG, top=4, n_clusters=2, cluster_top=40)
    for chunk_cells in (2, 3, 17):
        tiny = mine(trace.losses, trace.steps, trace.keys, chunk_cells=chunk_cells, top=4,
                    n_clusters=2, cluster_top=40)
        assert_same_result(one, tiny)


def test_memmap_trace_matches_in_memory(planted, tmp_path):
    path = tmp_path / "losses.bin"
    planted.losses.tofile(path)
    mapped = np.memmap(path, dtype=np.float32, mode="r", shape=planted.losses.shape)
    kwargs = dict(n_clusters=4, cluster_top=400)
    from_disk = mine(mapped, planted.steps, planted.keys, chunk_cells=5 * 3000, **kwargs)
    in_memory = mine(planted.losses, planted.steps, planted.keys, chunk_cells=BIG, **kwargs)
    assert_same_result(in_memory, from_disk)


def test_float16_ties_are_broken_the_same_way_in_every_chunking():
    rng = np.random.default_rng(0)
    losses = rng.integers(0, 6, size=(9, 400)).astype(np.float16)  # many equal changes
    keys = {"target": rng.integers(0, 4, 400), "feature": rng.integers(0, 3, 400)}
    one = mine(losses, np.arange(9), keys, chunk_cells=BIG, top=15, n_clusters=0)
    for chunk_cells in (5, 64, 900):
        assert_same_result(one, mine(losses, np.arange(9), keys, chunk_cells=chunk_cells,
                                     top=15, n_clusters=0))


def test_row_blocks_overlap_by_one_row_and_cover_everything():
    blocks = list(row_blocks(3, 20, 5))
    assert blocks[0] == (3, 8) and blocks[-1][1] == 20
    assert all(b[0] == a[1] - 1 for a, b in zip(blocks, blocks[1:]))
    intervals = [i for start, stop in blocks for i in range(start, stop - 1)]
    assert intervals == list(range(3, 19))  # every change exactly once


def test_plan_keeps_blocks_within_budget():
    for n_examples, cells in [(10, 1000), (1000, 1000), (5000, 1000), (7, 2)]:
        plan = plan_chunks(n_examples, cells)
        widths = [b - a for a, b in plan.col_chunks]
        assert sum(widths) == n_examples
        assert max(widths) * plan.rows_per_block <= max(cells, 2 * max(widths))
        assert plan.rows_per_block >= 2
