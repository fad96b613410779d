"""Representation keys: the probe examples clustered by the model's own features at a checkpoint.

The features are what the domain's `features` hook returns (vision: the penultimate layer; text:
the last hidden state at the predicted position). They are written batch by batch to a float32
file (RUN/analysis/discovery/features-<checkpoint>-<hash>/features.f32), read back as a memory
map and clustered in bounded memory (lmprobe.discovery.cluster): standardised, projected on
their top principal axes, mini-batch k-means. The cluster id is the key "repr"; examples the
model represents alike share it whether or not any key we thought of names what they share.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from lmprobe.discovery.cluster import CHUNK_ROWS, DIMS, fit_projection, minibatch_kmeans, project_to
from lmprobe.discovery.store import Store, checkpoint_fingerprint, choose_checkpoint, read_json, write_json
from lmprobe.errors import LmprobeError

from lmprobe.discovery.names import DEFAULT_CLUSTERS, REPR_KEY
FEATURES_FILE = "features.f32"
PROJECTED_FILE = "projected.f32"
DEFAULT_BATCH = 64


@dataclass
class DiscoveredKeys:
    """Cluster ids of every probe example (-1: in none), and how they were found."""

    kind: str  # "repr" | "sharp"
    labels: np.ndarray  # int64 [n]
    checkpoint: Path
    step: int | None
    info: dict[str, Any] = field(default_factory=dict)  # settings, sizes, seconds, cached
    order: np.ndarray | None = None  # float [n]: how typical each example is of its cluster (smaller: more)
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # sharp: "line", "side"

    @property
    def n_clusters(self) -> int:
        return int(self.labels.max()) + 1 if (self.labels >= 0).any() else 0

    def members(self, cluster: int) -> np.ndarray:
        return np.flatnonzero(self.labels == cluster)

    def typical(self, cluster: int, count: int) -> np.ndarray:
        """Up to `count` members, most typical first (closest to the centre / strongest pull)."""
        members = self.members(cluster)
        if self.order is None:
            return members[:count]
        return members[np.lexsort((members, self.order[members]))][:count]


def analysis_device(device: str | None = None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.inference_mode()
def write_probe_features(view, model, path: Path, *, batch_size: int = DEFAULT_BATCH,
                         progress: Callable[[str], None] | None = None) -> tuple[int, int]:
    """Every probe example's features, in probe order, appended batch by batch to `path` as float32
    rows; -> (n, d). Memory: one batch of features at a time."""
    probe = view.probe
    device = next(model.parameters()).device
    n, d = 0, None
    n_batches = probe.n_batches(batch_size)
    with open(path, "wb") as out:
        for b in range(n_batches):
            batch = {k: v.to(device) for k, v in probe.batch(b, batch_size).items()}
            rows = view.features(model, batch).float().cpu().numpy()
            if rows.ndim != 2 or (d is not None and rows.shape[1] != d):
                raise LmprobeError(f"the {view.domain} features hook returned shape {rows.shape} for probe batch {b}; "
                                   f"it must return [examples in the batch, d] with one d for every batch")
            d = rows.shape[1]
            out.write(np.ascontiguousarray(rows, dtype=np.float32).tobytes())
            n += rows.shape[0]
            if progress and (b + 1) % max(1, n_batches // 10) == 0:
                progress(f"features: batch {b + 1}/{n_batches}")
    if n != probe.n_examples:
        raise LmprobeError(f"the {view.domain} features hook gave {n} rows for {probe.n_examples} probe examples; "
                           f"it must return one row per example a probe batch holds, in probe order")
    return n, int(d or 0)


def open_features(folder: Path) -> np.memmap:
    meta = read_json(folder / "meta.json")
    return np.memmap(folder / FEATURES_FILE, dtype=np.float32, mode="r", shape=(meta["n"], meta["d"]))


def probe_features_folder(view, checkpoint: Path, store: Store, *, batch_size: int, device: str | None,
                          progress=None):
    """Context manager -> (folder holding features.f32 + meta.json, hit)."""
    parts = {"what": "features", "checkpoint": checkpoint_fingerprint(checkpoint), "domain": view.domain,
             "n": view.probe.n_examples, "version": 1}

    def build(folder: Path) -> None:
        start = time.perf_counter()
        model = view.load_model(checkpoint).to(analysis_device(device))
        loaded = time.perf_counter()
        n, d = write_probe_features(view, model, folder / FEATURES_FILE, batch_size=batch_size, progress=progress)
        write_json(folder / "meta.json", {"n": n, "d": d, "checkpoint": str(checkpoint),
                                          "load_seconds": loaded - start,
                                          "seconds": time.perf_counter() - loaded})

    return store.entry(f"features-{Path(checkpoint).name}", parts, build)


def cluster_features(features: Any, n_clusters: int, *, seed: int = 0, dims: int = DIMS,
                     chunk_rows: int = CHUNK_ROWS, workdir: Path | None = None,
                     progress=None) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(labels, squared distance to centre, info) for the rows of `features` ([n, d], memmap or array)."""
    start = time.perf_counter()
    projection = fit_projection(features, dims, chunk_rows=chunk_rows)
    n, p = int(features.shape[0]), projection.components.shape[1]
    if workdir is not None:
        projected = np.memmap(workdir / PROJECTED_FILE, dtype=np.float32, mode="w+", shape=(n, p))
    else:
        projected = np.empty((n, p), dtype=np.float32)
    project_to(features, projection, projected, chunk_rows=chunk_rows)
    fit = minibatch_kmeans(projected, n_clusters, seed=seed, chunk_rows=chunk_rows, progress=progress)
    info = {"n_clusters": int(fit.sizes.size), "dims": int(p), "explained": projection.explained,
            "sizes": fit.sizes.tolist(), "inertia": fit.inertia, "seed": seed,
            "cluster_seconds": time.perf_counter() - start}
    labels, distances = fit.labels, fit.distances
    del projected
    if workdir is not None:
        (workdir / PROJECTED_FILE).unlink(missing_ok=True)
    return labels, distances, info


def representation_keys(view, *, step: int | None = None, n_clusters: int = DEFAULT_CLUSTERS, seed: int = 0,
                        dims: int = DIMS, batch_size: int = DEFAULT_BATCH, chunk_rows: int = CHUNK_ROWS,
                        device: str | None = None, progress: Callable[[str], None] | None = None) -> DiscoveredKeys:
    """Cluster the probe by the model's features at checkpoint `step` (default: the view's)."""
    if n_clusters < 2:
        raise LmprobeError(f"representation clusters need at least 2 clusters, got {n_clusters}")
    checkpoint, found_step = choose_checkpoint(view, step)
    store = Store.for_view(view)
    with probe_features_folder(view, checkpoint, store, batch_size=batch_size, device=device,
                               progress=progress) as (features_dir, features_hit):
        meta = read_json(features_dir / "meta.json")
        parts = {"what": "repr", "features": features_dir.name, "k": n_clusters, "seed": seed, "dims": dims,
                 "version": 1}

        def build(folder: Path) -> None:
            features = open_features(features_dir)
            labels, distances, info = cluster_features(features, n_clusters, seed=seed, dims=dims,
                                                       chunk_rows=chunk_rows, workdir=folder, progress=progress)
            np.save(folder / "labels.npy", labels)
            np.save(folder / "distances.npy", distances)
            write_json(folder / "meta.json", info)

        with store.entry(f"repr-{Path(checkpoint).name}-k{n_clusters}", parts, build) as (folder, hit):
            labels = np.load(folder / "labels.npy")
            distances = np.load(folder / "distances.npy")
            info = read_json(folder / "meta.json")
    info.update(features_d=meta["d"], features_seconds=meta.get("seconds"), cached=bool(features_hit and hit),
                features_cached=bool(features_hit))
    return DiscoveredKeys(REPR_KEY, labels.astype(np.int64), checkpoint, found_step, info, order=distances)
