"""Key-free discovery, the parts without a model: bounded-memory clustering, mirror clusters,
the default features hook (lmprobe.discovery, lmprobe.analysis.view_base)."""

import tracemalloc

import numpy as np
import pytest
import torch
from torch import nn

from lmprobe.discovery.cluster import axial_kmeans, fit_projection, minibatch_kmeans
from lmprobe.discovery.repr_keys import cluster_features
from lmprobe.discovery.sharp_keys import mirror_clusters


def blobs(n: int, d: int, k: int, seed: int = 0, spread: float = 0.3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (k, d))
    truth = rng.integers(0, k, n)
    return (centres[truth] + rng.normal(0, spread, (n, d))).astype(np.float32), truth


def agreement(labels: np.ndarray, truth: np.ndarray) -> float:
    """Share of examples in their cluster's majority true class."""
    total = 0
    for c in np.unique(labels):
        total += np.bincount(truth[labels == c]).max()
    return total / len(labels)


def on_disk(tmp_path, array: np.ndarray) -> np.memmap:
    mm = np.memmap(tmp_path / "features.f32", dtype=np.float32, mode="w+", shape=array.shape)
    mm[:] = array
    mm.flush()
    return np.memmap(tmp_path / "features.f32", dtype=np.float32, mode="r", shape=array.shape)


def test_clustering_recovers_blobs_and_is_deterministic_given_the_seed(tmp_path):
    x, truth = blobs(20_000, 24, 6)
    features = on_disk(tmp_path, x)
    first = cluster_features(features, 6, seed=3, chunk_rows=1000)
    again = cluster_features(features, 6, seed=3, chunk_rows=1000)
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert agreement(first[0], truth) >= 0.99
    sizes = np.bincount(first[0])
    assert list(sizes) == sorted(sizes, reverse=True)  # renumbered largest first
    other = cluster_features(features, 6, seed=4, chunk_rows=1000)[0]
    assert agreement(other, truth) >= 0.99  # another seed: the same partition, maybe renamed


def test_clustering_a_memory_mapped_probe_larger_than_the_chunk_stays_in_bounded_memory(tmp_path):
    n, d, chunk = 60_000, 64, 2048
    x, truth = blobs(n, d, 8, seed=1)
    features = on_disk(tmp_path, x)
    del x
    assert n > 10 * chunk
    workdir = tmp_path / "work"
    workdir.mkdir()
    tracemalloc.start()
    try:
        labels, distances, info = cluster_features(features, 8, seed=0, chunk_rows=chunk, workdir=workdir)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    array_bytes = n * d * 4
    # labels and distances are 12 bytes per example; everything else is chunks, samples and d x d sums
    assert peak < 12 * n + array_bytes // 3, f"peak {peak / 1e6:.1f} MB for a {array_bytes / 1e6:.1f} MB probe"
    assert agreement(labels, truth) >= 0.99
    assert info["n_clusters"] == 8 and distances.shape == (n,)
    assert not (workdir / "projected.f32").exists()  # the projected copy is scratch


def test_projection_is_not_decided_by_a_few_huge_dimensions():
    """A transformer's massive-activation dimensions: huge, structureless spread in 2 of 40 dimensions."""
    x, truth = blobs(4000, 40, 4, seed=2)
    rng = np.random.default_rng(0)
    x[:, :2] += rng.normal(0, 500.0, (4000, 2)).astype(np.float32)
    projection = fit_projection(x, 8)
    labels = minibatch_kmeans(projection.apply(x).astype(np.float32), 4, seed=0).labels
    assert agreement(labels, truth) >= 0.95


def test_tiny_inputs_give_one_line_errors():
    from lmprobe.errors import LmprobeError

    with pytest.raises(LmprobeError, match="at least 2 examples"):
        fit_projection(np.zeros((1, 3), np.float32))
    labels = minibatch_kmeans(np.zeros((3, 2), np.float32), 5, seed=0).labels  # k > n: capped, constant rows
    assert labels.shape == (3,)


def test_mirror_clusters_pair_the_two_sides_of_each_sharp_axis():
    """Slopes along 3 sharp directions: two groups pulled +/- along axis u, two along w, and a
    mass of examples with (almost) no pull."""
    rng = np.random.default_rng(0)
    u, w = np.array([1.0, 0.5, 0.0]), np.array([0.0, 0.3, 1.0])
    u, w = u / np.linalg.norm(u), w / np.linalg.norm(w)
    parts = [3.0 * u, -1.5 * u, 2.0 * w, -2.5 * w]
    truth, rows = [], []
    for g, centre in enumerate(parts):
        rows.append(centre + rng.normal(0, 0.1, (50, 3)))
        truth += [g] * 50
    rows.append(rng.normal(0, 1e-6, (100, 3)))
    truth += [-1] * 100
    g = np.concatenate(rows).T  # [k, n]
    truth = np.array(truth)
    key, axis, side, norm = mirror_clusters(g, 2, seed=0)
    assert (key[truth == -1] == -1).all()
    for a, b in ((0, 1), (2, 3)):
        ka, kb = np.unique(key[truth == a]), np.unique(key[truth == b])
        assert ka.size == 1 and kb.size == 1  # each group one cluster...
        assert ka[0] // 2 == kb[0] // 2 and ka[0] != kb[0]  # ...the two sides of one axis
    heavy = key[truth == 0][0]
    assert heavy % 2 == 0  # side 0 (+) carries the larger pull
    again = mirror_clusters(g, 2, seed=0)[0]
    assert np.array_equal(key, again)


def test_axial_kmeans_ignores_the_sign_of_a_direction():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(200, 4))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    line, side, axes = axial_kmeans(np.concatenate([v, -v]), np.ones(400), 3, seed=0)
    assert np.array_equal(line[:200], line[200:]) and np.array_equal(side[:200], 1 - side[200:])
    assert np.allclose(np.linalg.norm(axes, axis=1), 1.0)


def test_default_features_hook_reads_the_input_of_the_last_linear_head():
    from lmprobe.analysis.view_base import RunViewBase, head_inputs

    class Probe:
        n_examples = 6

        def losses(self, model, batch):
            return model(batch["x"]).sum(dim=1)

    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    view = RunViewBase.__new__(RunViewBase)
    view.probe = Probe()
    x = torch.randn(6, 3)
    got = view.features(model, {"x": x})
    assert torch.allclose(got, torch.tanh(model[0](x)))
    chunks = head_inputs(model, lambda: [model(x[:2]), model(x[2:])])  # a head run in slabs
    assert torch.allclose(chunks, got)
