"""Bounded-memory clustering of many feature rows (a memory-mapped [examples, d] array).

Two steps, each reading the rows `chunk_rows` at a time, so memory is O(chunk_rows x d + d^2 +
k x dims) whatever the number of examples:

1. `fit_projection`: one pass gathers the mean, the per-dimension spread and X^T X; the rows are
   centred, the few dimensions whose spread exceeds OUTLIER_SPREAD x the median spread are
   brought to the median spread (a transformer's "massive activation" dimensions would
   otherwise decide every distance), and projected on the top `dims` principal axes (denoising; k-means then costs
   O(dims) per distance). Dimensions are not standardised: that would give the many
   dimensions that barely vary (a corner the model hardly looks at) as much say as those that
   carry what the model sees; measured on a planted corner patch, full standardisation hid the
   patch cluster (purity 0.2-0.3) where this found it (1.0).
2. `minibatch_kmeans`: k-means++ and Lloyd on a seeded sample (lmprobe.mining.kmeans), then
   mini-batch updates over the whole array (Sculley 2010: per-centre step 1/count), then a few
   full Lloyd passes, each a chunked sum per centre. Every random draw comes from one seeded
   generator and every sum runs in a fixed order: the same seed gives the same labels.

Labels are renumbered by cluster size, largest first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from lmprobe.errors import LmprobeError
from lmprobe.mining.kmeans import kmeans

CHUNK_ROWS = 1 << 14
DIMS = 32
SAMPLE_PER_CLUSTER = 256  # rows of the seeding sample per cluster (at least SAMPLE_MIN)
SAMPLE_MIN = 8192
MINIBATCH = 4096
MINIBATCH_STEPS = 50
POLISH_PASSES = 3
OUTLIER_SPREAD = 10.0


@dataclass
class Projection:
    mean: np.ndarray  # [d]
    scale: np.ndarray  # [d] divisor per dimension: 1, more for an outlier dimension, inf for a constant one
    components: np.ndarray  # [d, dims] orthonormal principal axes of the standardised rows
    explained: float  # share of the standardised variance the axes keep

    def apply(self, rows: np.ndarray) -> np.ndarray:
        return ((np.asarray(rows, dtype=np.float64) - self.mean) / self.scale) @ self.components


def _chunks(n: int, chunk_rows: int):
    for start in range(0, n, chunk_rows):
        yield start, min(n, start + chunk_rows)


def fit_projection(x: Any, dims: int = DIMS, *, chunk_rows: int = CHUNK_ROWS) -> Projection:
    """Principal axes of the centred rows of `x` ([n, d], an array or np.memmap), in one pass."""
    n, d = int(x.shape[0]), int(x.shape[1])
    if n < 2:
        raise LmprobeError(f"clustering needs at least 2 examples, got {n}")
    total = np.zeros(d)
    gram = np.zeros((d, d))
    shift = np.asarray(x[0], dtype=np.float64)  # shifted sums: no cancellation for far-from-zero features
    for a, b in _chunks(n, chunk_rows):
        rows = np.asarray(x[a:b], dtype=np.float64) - shift
        total += rows.sum(axis=0)
        gram += rows.T @ rows
    mean_shifted = total / n
    cov = gram / n - np.outer(mean_shifted, mean_shifted)
    std = np.sqrt(np.maximum(np.diag(cov), 0.0))
    alive = std > 1e-6 * max(float(std.max()), 1e-30)
    typical = max(float(np.median(std[alive])) if alive.any() else 1.0, 1e-30)
    outlier = std > OUTLIER_SPREAD * typical
    scale = np.where(alive, np.where(outlier, std / typical, 1.0), np.inf)  # outliers brought to the median spread
    finite_scale = np.where(alive, scale, 1.0)
    corr = cov / np.outer(finite_scale, finite_scale)
    corr[~alive, :] = 0.0
    corr[:, ~alive] = 0.0
    values, vectors = np.linalg.eigh(corr)
    order = np.argsort(values)[::-1][: max(1, min(dims, int(alive.sum()) or 1))]
    kept = np.maximum(values[order], 0.0)
    explained = float(kept.sum() / max(float(np.maximum(values, 0.0).sum()), 1e-30))
    components = vectors[:, order]
    # fix each axis's sign (eigh's is arbitrary across platforms): largest |entry| positive
    flip = np.sign(components[np.abs(components).argmax(axis=0), np.arange(components.shape[1])])
    components = components * np.where(flip == 0, 1.0, flip)
    return Projection(shift + mean_shifted, scale, components, explained)


def project_to(x: Any, projection: Projection, out: np.ndarray, *, chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """Write projection.apply(x) into `out` ([n, dims], an array or np.memmap), chunk by chunk."""
    for a, b in _chunks(int(x.shape[0]), chunk_rows):
        out[a:b] = projection.apply(x[a:b])
    return out


def _nearest(rows: np.ndarray, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = (np.einsum("nd,nd->n", rows, rows)[:, None] - 2.0 * rows @ centres.T
         + np.einsum("kd,kd->k", centres, centres)[None, :])
    labels = d.argmin(axis=1)
    return labels, np.maximum(d[np.arange(len(rows)), labels], 0.0)


@dataclass
class KMeansResult:
    labels: np.ndarray  # int64 [n], 0 = largest cluster
    centres: np.ndarray  # [k, dims]
    sizes: np.ndarray  # int64 [k]
    inertia: float
    distances: np.ndarray  # float32 [n] squared distance of each row to its centre


def minibatch_kmeans(points: Any, k: int, *, seed: int = 0, chunk_rows: int = CHUNK_ROWS,
                     batch_size: int = MINIBATCH, steps: int = MINIBATCH_STEPS, polish: int = POLISH_PASSES,
                     progress: Callable[[str], None] | None = None) -> KMeansResult:
    """Cluster the rows of `points` ([n, dims], array or np.memmap) into k, reading chunks only."""
    n = int(points.shape[0])
    if n < 1:
        raise LmprobeError("clustering needs at least one example")
    k = max(1, min(int(k), n))
    rng = np.random.default_rng([seed, 0xC1A5])
    size = min(n, max(SAMPLE_MIN, SAMPLE_PER_CLUSTER * k))
    sample_rows = np.sort(rng.choice(n, size=size, replace=False)) if size < n else np.arange(n)
    sample = np.asarray(points[sample_rows], dtype=np.float64)
    _, centres, _ = kmeans(sample, k, seed=int(rng.integers(1 << 31)), n_init=4)
    k = centres.shape[0]
    if size < n:  # mini-batch updates over the whole array
        counts = np.zeros(k)
        for _ in range(steps):
            rows = np.asarray(points[np.sort(rng.integers(0, n, size=min(batch_size, n)))], dtype=np.float64)
            labels, _ = _nearest(rows, centres)
            for j in np.unique(labels):
                members = rows[labels == j]
                counts[j] += len(members)
                centres[j] += (members.sum(axis=0) - len(members) * centres[j]) / counts[j]
    for p in range(max(1, polish)):  # full Lloyd passes, chunked
        sums = np.zeros_like(centres)
        sizes = np.zeros(k)
        for a, b in _chunks(n, chunk_rows):
            rows = np.asarray(points[a:b], dtype=np.float64)
            labels, _ = _nearest(rows, centres)
            np.add.at(sums, labels, rows)
            sizes += np.bincount(labels, minlength=k)
        moved = np.where(sizes[:, None] > 0, sums / np.maximum(sizes, 1)[:, None], centres)
        done = np.allclose(moved, centres, rtol=0, atol=1e-9)
        centres = moved
        if progress:
            progress(f"k-means pass {p + 1}/{polish}")
        if done:
            break
    labels = np.empty(n, dtype=np.int64)
    distances = np.empty(n, dtype=np.float32)
    for a, b in _chunks(n, chunk_rows):
        labels[a:b], distances[a:b] = _nearest(np.asarray(points[a:b], dtype=np.float64), centres)
    inertia = float(distances.sum(dtype=np.float64))
    sizes = np.bincount(labels, minlength=k)
    order = np.lexsort((np.arange(k), -sizes))
    rename = np.empty(k, dtype=np.int64)
    rename[order] = np.arange(k)
    return KMeansResult(rename[labels], centres[order], sizes[order].astype(np.int64), inertia, distances)


def axial_kmeans(directions: np.ndarray, weights: np.ndarray, k: int, *, seed: int = 0,
                 iterations: int = 100) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cluster unit vectors up to sign ("lines" through the origin): (line [n], side [n] in {0: +, 1: -},
    unit axes [k, dims]). A line's two sides are mirror images: examples pulled in opposite
    directions along the same axis. Weighted spherical k-means on sign-aligned vectors, seeded
    k-means++ on 1 - cos^2; axes renumbered by weight, largest first; each axis oriented so
    that its + side carries the larger weight."""
    u = np.asarray(directions, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    n = len(u)
    k = max(1, min(int(k), n))
    rng = np.random.default_rng([seed, 0xA71A])
    axes = [u[int(np.argmax(w))]]  # the strongest pull seeds the first axis
    for _ in range(1, k):
        dist = 1.0 - np.max((u @ np.array(axes).T) ** 2, axis=1)
        p = np.maximum(dist, 0.0) * w
        if p.sum() <= 0:
            break
        axes.append(u[rng.choice(n, p=p / p.sum())])
    axes = np.array(axes)
    line = np.full(n, -1)
    for _ in range(iterations):
        cos = u @ axes.T
        new = np.abs(cos).argmax(axis=1)
        if np.array_equal(new, line):
            break
        line = new
        signed = np.sign(cos[np.arange(n), line])
        signed[signed == 0] = 1.0
        for j in range(len(axes)):
            members = line == j
            if members.any():
                v = ((signed[members] * w[members])[:, None] * u[members]).sum(axis=0)
                norm = np.linalg.norm(v)
                if norm > 0:
                    axes[j] = v / norm
    cos = u @ axes.T
    line = np.abs(cos).argmax(axis=1)
    side = (cos[np.arange(n), line] < 0).astype(np.int64)
    for j in range(len(axes)):  # + side = the heavier one
        members = line == j
        if w[members & (side == 1)].sum() > w[members & (side == 0)].sum():
            axes[j] = -axes[j]
            side[members] = 1 - side[members]
    totals = np.bincount(line, weights=w, minlength=len(axes))
    order = np.lexsort((np.arange(len(axes)), -totals))
    rename = np.empty(len(axes), dtype=np.int64)
    rename[order] = np.arange(len(axes))
    return rename[line], side, axes[order]
