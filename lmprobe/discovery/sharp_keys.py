"""Sharp-direction keys: examples clustered by how their losses move along the top-k Hessian eigenvectors.

At a checkpoint, the top `k` eigenvectors v_1..v_k of the training loss's Hessian (Lanczos on the
run's fixed sharpness batches, train mode, as the training hook measures) give each probe
example a vector g_i = (d/dt loss_i(theta + t v_j))_j: its loss's slope along each sharp
direction, the per-example "align" data of lmprobe.train.alignment extended to k directions.
When the run recorded k alignment rows at that very step they are read instead of recomputed.

POLCA's observation is that these vectors form mirror-image clusters: groups pulled one way
along a sharp axis and groups pulled the opposite way, i.e. opposing signals. Here the
directions g_i / |g_i| are clustered up to sign into axes (weighted by |g_i|, so strong pulls
define them: lmprobe.discovery.cluster.axial_kmeans); each axis has two sides, and the two sides
of one axis are a mirror pair. Key "sharp" = 2 x axis + side (side 0: the heavier, "+"),
-1 where an example has no pull (|g_i| at most NEGLIGIBLE of the largest).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from lmprobe.discovery.cluster import axial_kmeans
from lmprobe.discovery.repr_keys import DEFAULT_BATCH, DiscoveredKeys, analysis_device
from lmprobe.discovery.store import Store, checkpoint_fingerprint, choose_checkpoint, read_json, write_json
from lmprobe.errors import LmprobeError
from lmprobe.train.alignment import NEGLIGIBLE, has_alignment, read_alignment, vector_folder

from lmprobe.discovery.names import DEFAULT_DIRECTIONS, SHARP_KEY
MAX_ITER = 60
TOL = 1e-3


def recorded_derivatives(run_dir: Path | None, step: int | None, k: int, n: int) -> np.ndarray | None:
    """[k, n] from run_dir/alignment when all k eigenvectors were recorded at `step`, else None."""
    if run_dir is None or step is None or not has_alignment(run_dir):
        return None
    rows = []
    for j in range(1, k + 1):
        if not (vector_folder(run_dir, j) / "steps.bin").is_file():
            return None
        trace = read_alignment(run_dir, j)
        steps = np.asarray(trace.steps)[: trace.n_records]
        hit = np.flatnonzero(steps == step)
        if trace.n_examples != n or hit.size == 0:
            return None
        rows.append(np.asarray(trace.losses[int(hit[-1])], dtype=np.float64))
    return np.stack(rows)


def computed_derivatives(view, checkpoint: Path, k: int, *, seed: int, batch_size: int, device: str | None,
                         max_iter: int = MAX_ITER, tol: float = TOL,
                         progress: Callable[[str], None] | None = None) -> tuple[np.ndarray, list[float]]:
    """([k, n] slopes of every probe loss along the top-k eigenvectors, their eigenvalues)."""
    from lmprobe.hessian.lanczos import lanczos
    from lmprobe.hessian.sharpness import check_k_within, sharpness_problem
    from lmprobe.train.alignment import directional_derivatives, orient_rows

    model = view.load_model(checkpoint).to(analysis_device(device))
    dev = next(model.parameters()).device
    batches = [{key: v.to(dev) for key, v in b.items()} for b in view.hessian_batches()]
    problem = sharpness_problem(model, view.loss, batches, train=True)
    check_k_within(k, problem.operator, None)
    if progress:
        progress(f"top-{k} Hessian eigenvectors at {checkpoint.name} (Lanczos)")
    result = lanczos(problem.operator, k, max_iter=max_iter, tol=tol, seed=seed, return_eigenvectors=True)
    named = list(zip(problem.operator.param_names, problem.operator.params))
    probe = view.probe
    parts = []
    n_batches = probe.n_batches(batch_size)
    for b in range(n_batches):
        batch = {key: v.to(dev) for key, v in probe.batch(b, batch_size).items()}
        parts.append(directional_derivatives(model, probe.losses, [batch], named, result.eigenvectors[:, :k]))
        if progress and (b + 1) % max(1, n_batches // 10) == 0:
            progress(f"slopes along the sharp directions: batch {b + 1}/{n_batches}")
    rows = np.concatenate(parts, axis=1)
    return orient_rows(rows, {}), [float(v) for v in result.eigenvalues[:k]]


def mirror_clusters(derivatives: np.ndarray, n_axes: int, *, seed: int = 0,
                    negligible: float = NEGLIGIBLE) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(key [n] = 2 x axis + side or -1, axis [n], side [n], norm [n]) from [k, n] slopes."""
    g = np.asarray(derivatives, dtype=np.float64).T
    finite = np.isfinite(g).all(axis=1)
    norm = np.where(finite, np.linalg.norm(np.where(finite[:, None], g, 0.0), axis=1), 0.0)
    top = float(norm.max()) if norm.size else 0.0
    active = finite & (norm > negligible * top) & (norm > 0)
    key = np.full(len(g), -1, dtype=np.int64)
    axis = np.full(len(g), -1, dtype=np.int64)
    side = np.full(len(g), -1, dtype=np.int64)
    if active.sum() >= 2:
        line, s, _ = axial_kmeans(g[active] / norm[active, None], norm[active], n_axes, seed=seed)
        axis[active], side[active] = line, s
        key[active] = 2 * line + s
    return key, axis, side, norm


def sharp_keys(view, *, step: int | None = None, k: int = DEFAULT_DIRECTIONS, n_axes: int | None = None,
               seed: int = 0, batch_size: int = DEFAULT_BATCH, device: str | None = None,
               progress: Callable[[str], None] | None = None) -> DiscoveredKeys:
    """Mirror-image clusters of the probe's slopes along the top-k sharp directions at `step`."""
    if k < 1:
        raise LmprobeError(f"sharp-direction keys need at least 1 direction, got {k}")
    n_axes = n_axes or k
    checkpoint, found_step = choose_checkpoint(view, step)
    n = view.probe.n_examples
    store = Store.for_view(view)
    recorded = recorded_derivatives(view.run_dir, found_step, k, n)
    parts = {"what": "sharp", "checkpoint": checkpoint_fingerprint(checkpoint), "k": k, "seed": seed,
             "n": n, "recorded": recorded is not None, "version": 1}

    def build(folder: Path) -> None:
        start = time.perf_counter()
        if recorded is not None:
            rows, eigenvalues, source = recorded, [], "recorded alignment"
        else:
            rows, eigenvalues = computed_derivatives(view, checkpoint, k, seed=seed, batch_size=batch_size,
                                                     device=device, progress=progress)
            source = "computed"
        np.save(folder / "derivatives.npy", rows.astype(np.float32))
        write_json(folder / "meta.json", {"source": source, "eigenvalues": eigenvalues,
                                          "seconds": time.perf_counter() - start})

    with store.entry(f"sharp-{Path(checkpoint).name}-k{k}", parts, build) as (folder, hit):
        rows = np.load(folder / "derivatives.npy").astype(np.float64)
        meta = read_json(folder / "meta.json")
    key, axis, side, norm = mirror_clusters(rows, n_axes, seed=seed)
    info = dict(meta, k=k, n_axes=n_axes, seed=seed, cached=bool(hit),
                sizes=np.bincount(key[key >= 0], minlength=2 * n_axes).tolist())
    return DiscoveredKeys(SHARP_KEY, key, checkpoint, found_step, info, order=-norm,
                          extra={"axis": axis, "side": side, "derivatives": rows})
