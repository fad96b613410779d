"""Plain k-means (k-means++ seeding, Lloyd iterations) in numpy, deterministic given a seed.

The products here are thin (k is small), a shape where multithreaded BLAS can be 10x slower
than numpy's own einsum loops on a busy machine, so einsum and masked sums are used instead.
"""

from __future__ import annotations

import numpy as np


def _squared_distances(points: np.ndarray, centres: np.ndarray, point_norms: np.ndarray) -> np.ndarray:
    cross = np.einsum("nd,kd->nk", points, centres)
    d = point_norms[:, None] - 2.0 * cross + np.einsum("ij,ij->i", centres, centres)[None, :]
    return np.maximum(d, 0.0)


def _cluster_sums(points: np.ndarray, labels: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return np.stack([points[labels == j].sum(axis=0) for j in range(counts.size)])


def _plus_plus(points: np.ndarray, k: int, rng: np.random.Generator, point_norms: np.ndarray) -> np.ndarray:
    n = points.shape[0]
    centres = np.empty((k, points.shape[1]))
    centres[0] = points[rng.integers(n)]
    closest = _squared_distances(points, centres[:1], point_norms)[:, 0]
    for j in range(1, k):
        total = closest.sum()
        pick = rng.choice(n, p=closest / total) if total > 0 else rng.integers(n)
        centres[j] = points[pick]
        closest = np.minimum(closest, _squared_distances(points, centres[j : j + 1], point_norms)[:, 0])
    return centres


def kmeans(
    points: np.ndarray, k: int, *, seed: int = 0, n_init: int = 4, max_iter: int = 100
) -> tuple[np.ndarray, np.ndarray, float]:
    """Cluster rows of `points`: (labels, centres, inertia) of the best of n_init runs.

    Labels are renumbered by cluster size (largest first) so the output does not depend on
    which run happened to find the clustering.
    """
    points = np.asarray(points, dtype=np.float64)
    n = points.shape[0]
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    point_norms = np.einsum("ij,ij->i", points, points)
    best = None
    for _ in range(n_init):
        centres = _plus_plus(points, k, rng, point_norms)
        labels = np.full(n, -1)
        for _ in range(max_iter):
            distances = _squared_distances(points, centres, point_norms)
            new_labels = distances.argmin(axis=1)
            if np.array_equal(new_labels, labels):
                break
            labels = new_labels
            counts = np.bincount(labels, minlength=k)
            sums = _cluster_sums(points, labels, counts)
            for j in np.flatnonzero(counts == 0):  # re-seed an empty cluster at the worst-fit point
                far = int(distances[np.arange(n), labels].argmax())
                sums[j], counts[j] = points[far], 1
                labels[far] = j
            centres = sums / counts[:, None]
        inertia = float(_squared_distances(points, centres, point_norms)[np.arange(n), labels].sum())
        if best is None or inertia < best[2] - 1e-12:
            best = (labels, centres, inertia)
    labels, centres, inertia = best
    counts = np.bincount(labels, minlength=k)
    order = np.lexsort((np.arange(k), -counts))
    rename = np.empty(k, dtype=np.int64)
    rename[order] = np.arange(k)
    return rename[labels], centres[order], inertia
