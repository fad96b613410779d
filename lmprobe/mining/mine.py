"""`mine`: one call from a loss trace and example keys to movers, groups, pairs and clusters."""

from __future__ import annotations

import warnings
from typing import Any, Mapping

import numpy as np

from lmprobe.errors import LmprobeError
from lmprobe.mining.clusters import cluster_movers, idiosyncratic_variance
from lmprobe.mining.groups import Group, GroupIndex, group_examples
from lmprobe.mining.histogram import Histogram, sample_edges
from lmprobe.mining.inputs import TraceWindow, parse_by, select_window, validate_keys
from lmprobe.mining.movers import Movers, window_movers
from lmprobe.mining.opposing import DEFAULT_ALPHA, PairTest, find_opposing_pairs
from lmprobe.mining.stats import bonferroni_threshold
from lmprobe.mining.result import MiningResult
from lmprobe.mining.stream import DEFAULT_CHUNK_CELLS, TraceScan, scan_trace
from lmprobe.mining.transient import choose_window

EXAMPLES_PER_GROUP = 5
CLUSTER_MODE = "cluster"
GROUP_CELLS = 1 << 25  # records x groups of per-record group sums kept at most (256 MiB)


def _check_settings(top: int, min_size: int, alpha: float, bins: int, chunk_cells: int,
                    n_clusters: int, cluster_top: int) -> None:
    problems = []
    if top < 1:
        problems.append(f"top={top} (needs >= 1)")
    if min_size < 1:
        problems.append(f"min_size={min_size} (needs >= 1)")
    if not 0 < alpha < 1:
        problems.append(f"alpha={alpha} (needs 0 < alpha < 1)")
    if bins < 1:
        problems.append(f"bins={bins} (needs >= 1)")
    if chunk_cells < 2:
        problems.append(f"chunk_cells={chunk_cells} (needs >= 2)")
    if n_clusters < 0 or cluster_top < 0:
        problems.append(f"n_clusters={n_clusters}, cluster_top={cluster_top} (need >= 0)")
    if problems:
        raise LmprobeError("bad mining setting: " + "; ".join(problems))


def scan_finite(
    window: TraceWindow,
    keys: Mapping[str, np.ndarray],
    key_names: tuple[str, ...],
    *,
    min_size: int,
    max_groups: int | None,
    top: int,
    edges: np.ndarray,
    chunk_cells: int,
) -> tuple[np.ndarray, GroupIndex, TraceScan]:
    """Scan the window, rescanning once without the examples whose loss is not finite."""
    keep = np.ones(window.n_examples, dtype=bool)
    for _ in range(2):
        index = group_examples(keys, key_names, min_size=min_size, include=keep, max_groups=max_groups)
        scan = scan_trace(window, keep=keep, group_of=index.group_of, n_groups=index.n_groups,
                          top=top, hist_edges=edges, chunk_cells=chunk_cells)
        if scan.complete:
            return keep, index, scan
        keep = keep & ~scan.nonfinite
        if not keep.any():
            raise LmprobeError(
                f"every one of the {window.n_examples} examples has a non-finite loss in steps"
                f" {window.steps[0]}..{window.steps[-1]}; the run diverged — mine an earlier window"
            )
    raise AssertionError("a rescan without the non-finite columns found non-finite values")


def _group_examples_to_show(index: GroupIndex, movement: np.ndarray) -> list[np.ndarray]:
    """Each group's members ordered by how much they move (most first), a few per group."""
    grouped = np.flatnonzero(index.group_of >= 0)
    order = grouped[np.lexsort((grouped, -movement[grouped], index.group_of[grouped]))]
    bounds = np.cumsum(index.sizes)[:-1]
    return [part[:EXAMPLES_PER_GROUP] for part in np.split(order, bounds)] if index.n_groups else []


def find_movers(
    losses: Any,
    steps: Any,
    *,
    window: tuple[int, int] | None = None,
    top: int = 20,
    bins: int = 64,
    chunk_cells: int = DEFAULT_CHUNK_CELLS,
) -> tuple[Movers, Histogram]:
    """Only the movers and the histogram of loss changes: no keys needed, one streaming pass."""
    _check_settings(top, 1, 0.5, bins, chunk_cells, 0, 0)
    trace = select_window(losses, steps, window)
    keys = {"example": np.arange(trace.n_examples)}
    edges = sample_edges(trace, bins)
    keep, _, scan = scan_finite(trace, keys, ("example",), min_size=trace.n_examples + 1,
                                max_groups=None, top=top, edges=edges, chunk_cells=chunk_cells)
    if not keep.all():
        warnings.warn(f"skipped {int((~keep).sum())} of {trace.n_examples} example(s) whose loss"
                      " is not finite somewhere in the window", RuntimeWarning, stacklevel=2)
    movers = Movers(
        step_from=trace.steps[:-1].copy(), step_to=trace.steps[1:].copy(),
        riser_index=scan.riser_index, riser_change=scan.riser_change,
        faller_index=scan.faller_index, faller_change=scan.faller_change,
        **window_movers(trace, scan, keep, top),
    )
    return movers, scan.histogram


def mine(
    losses: Any,
    steps: Any,
    keys: Mapping[str, Any],
    *,
    by: str = "feature-target",
    window: tuple[int, int] | None = None,
    top: int = 20,
    min_size: int = 5,
    alpha: float = DEFAULT_ALPHA,
    n_clusters: int = 8,
    cluster_top: int = 2000,
    max_groups: int | None = None,
    bins: int = 64,
    chunk_cells: int = DEFAULT_CHUNK_CELLS,
    seed: int = 0,
    skip_transient: bool = True,
) -> MiningResult:
    """Mine a loss trace [records x examples] for movers, groups, opposing pairs and clusters.

    losses: 2-D array-like (an np.memmap is read in blocks of `chunk_cells`, never whole);
    steps: training step of each row; keys: name -> one integer per example ("target",
    "feature", ...). by: key names joined by "-" that define groups; window=(A, B) keeps
    records with A <= step <= B. top: movers per interval; min_size: smallest group kept;
    alpha: family-wise error rate of the pair tests; n_clusters=0 switches clustering off.
    Without a window the initial loss collapse is left out (`transient`; skip_transient=False
    keeps it); `result.window_choice` says which window was mined and why.
    by="cluster": no keyed groups or pairs, only the clustering (n_clusters >= 2 needed).
    Memory: O(chunk_cells + examples + records x groups); groups beyond GROUP_CELLS / records
    (largest kept) and cluster candidates beyond CLUSTER_CELLS / intervals are dropped, with
    a note in `warnings`.
    """
    _check_settings(top, min_size, alpha, bins, chunk_cells, n_clusters, cluster_top)
    trace = select_window(losses, steps, window)
    keys = validate_keys(keys, trace.n_examples)
    mode = CLUSTER_MODE if by == CLUSTER_MODE else "groups"
    if mode == CLUSTER_MODE and n_clusters < 2:
        raise LmprobeError(f"by='cluster' needs n_clusters >= 2, got {n_clusters}")
    key_names = parse_by(by, keys) if mode == "groups" else ()
    trace, window_choice = choose_window(trace, window, skip_transient)
    edges = sample_edges(trace, bins)
    group_budget = max(1, GROUP_CELLS // trace.n_records)
    # Cluster mode groups nothing: one key of its own, no group reaching the minimum size.
    keep, index, scan = scan_finite(trace, keys if key_names else {"example": np.arange(trace.n_examples)},
                                    key_names or ("example",),
                                    min_size=min_size if key_names else trace.n_examples + 1,
                                    max_groups=min(max_groups or group_budget, group_budget),
                                    top=top, edges=edges, chunk_cells=chunk_cells)
    notes = []
    if index.n_groups == group_budget and (max_groups is None or max_groups > group_budget):
        notes.append(f"kept only the {group_budget} largest groups: {trace.n_records} records x"
                     f" more groups would exceed the memory budget (pass max_groups, or a window)")
    skipped = np.flatnonzero(~keep)
    if skipped.size:
        notes.append(f"skipped {skipped.size} of {trace.n_examples} example(s) whose loss is not"
                     f" finite somewhere in steps {trace.steps[0]}..{trace.steps[-1]}")
        warnings.warn(notes[-1], RuntimeWarning, stacklevel=2)

    mean_loss = scan.group_sum  # in place: records x groups may be the largest array here
    mean_loss /= np.maximum(index.sizes, 1)[None, :]
    movement = idiosyncratic_variance(scan.weighted_sum, scan.weighted_sq_sum,
                                      scan.weighted_trend_sum, scan.trend, scan.scale)
    shown = _group_examples_to_show(index, movement)
    groups = [
        Group(key=tuple(int(v) for v in index.keys[g]), size=int(index.sizes[g]),
              members=members, mean_loss=mean_loss[:, g], examples=shown[g])
        for g, members in enumerate(index.members())
    ]
    if mode == CLUSTER_MODE:
        pairs, pair_test = [], PairTest(trace.n_intervals, 0, alpha, bonferroni_threshold(alpha, 1),
                                        "cluster mode: no keyed groups (see clusters)")
    else:
        pairs, pair_test = find_opposing_pairs(mean_loss, scan.trend, index.keys, index.sizes,
                                               key_names, trace.steps, scan.scale,
                                               n_total=scan.n_kept, alpha=alpha)
    clusters = None
    if n_clusters > 0:
        clusters = cluster_movers(trace, scan.trend, scan.scale, movement, keep, keys,
                                  n_clusters=n_clusters,
                                  cluster_top=cluster_top, seed=seed, alpha=alpha,
                                  chunk_cells=chunk_cells)
    movers = Movers(
        step_from=trace.steps[:-1].copy(), step_to=trace.steps[1:].copy(),
        riser_index=scan.riser_index, riser_change=scan.riser_change,
        faller_index=scan.faller_index, faller_change=scan.faller_change,
        **window_movers(trace, scan, keep, top),
    )
    return MiningResult(
        by=by, mode=mode, window_choice=window_choice,
        key_names=key_names, steps=trace.steps, n_examples=trace.n_examples,
        skipped=skipped, global_mean_loss=scan.kept_sum / scan.n_kept,
        movers=movers, histogram=scan.histogram, groups=groups, pairs=pairs,
        pair_test=pair_test, clusters=clusters,
        settings={"top": top, "min_size": min_size, "alpha": alpha, "n_clusters": n_clusters,
                  "cluster_top": cluster_top, "max_groups": max_groups, "bins": bins,
                  "chunk_cells": chunk_cells, "seed": seed, "skip_transient": skip_transient},
        warnings=notes,
    )
