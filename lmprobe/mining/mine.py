"""`mine`: one call from a loss trace and example keys to movers, groups, pairs and clusters."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from lmprobe.errors import LmprobeError
from lmprobe.mining.clusters import cluster_movers, idiosyncratic_variance
from lmprobe.mining.groups import Group, GroupIndex, group_examples
from lmprobe.mining.histogram import Histogram, sample_edges
from lmprobe.mining.inputs import TraceWindow, parse_by, select_window, validate_keys
from lmprobe.mining.movers import Movers, window_movers
from lmprobe.mining.opposing import DEFAULT_ALPHA, TARGET, PairTest, RestBlocks, find_opposing_pairs
from lmprobe.mining.stats import bonferroni_threshold
from lmprobe.mining.result import MiningResult
from lmprobe.mining.stream import DEFAULT_CHUNK_CELLS, TraceScan, scan_trace
from lmprobe.mining.transient import choose_window
from lmprobe.mining.windows import Rung, complexity_over_windows, order_of, windowed_pairs

EXAMPLES_PER_GROUP = 5
REST_TARGETS = 20  # rest targets kept per one-vs-rest pair (the count of all is kept too)
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
    def build(keep):
        index = group_examples(keys, key_names, min_size=min_size, include=keep, max_groups=max_groups)
        return index.group_of, index.n_groups, index

    keep, index, scan = scan_layers(window, build, top=top, edges=edges, chunk_cells=chunk_cells)
    return keep, index, scan


def scan_layers(window: TraceWindow, build, *, top: int, edges: np.ndarray, chunk_cells: int):
    """Scan the window with the group layout `build(keep) -> (group_of, n_columns, payload)`,
    rescanning once without the examples whose loss is not finite; -> (keep, payload, scan)."""
    keep = np.ones(window.n_examples, dtype=bool)
    for _ in range(2):
        group_of, n_columns, payload = build(keep)
        scan = scan_trace(window, keep=keep, group_of=group_of, n_groups=n_columns,
                          top=top, hist_edges=edges, chunk_cells=chunk_cells)
        if scan.complete:
            return keep, payload, scan
        keep = keep & ~scan.nonfinite
        if not keep.any():
            raise LmprobeError(
                f"every one of the {window.n_examples} examples has a non-finite loss in steps"
                f" {window.steps[0]}..{window.steps[-1]}; the run diverged — mine an earlier window"
            )
    raise AssertionError("a rescan without the non-finite columns found non-finite values")


@dataclass
class _Layer:
    """One grouping laid out for the scan: its groups (columns offset..offset+G of the group
    sums) and, when it has a feature to share, the feature blocks for one-vs-rest."""

    by: str
    key_names: tuple[str, ...]
    index: GroupIndex
    offset: int
    blocks: GroupIndex | None = None  # feature blocks holding a kept group (ids renumbered)
    block_of_group: np.ndarray | None = None
    block_offset: int = 0


def _feature_blocks(keys, key_names, index: GroupIndex, include) -> tuple[GroupIndex, np.ndarray] | None:
    """Blocks of examples sharing every key but the target (with every shared value >= 0) that
    hold at least one kept group, and the block of each kept group (-1: none)."""
    shared = tuple(n for n in key_names if n != TARGET)
    if TARGET not in key_names or not shared or index.n_groups == 0:
        return None
    blocks = group_examples(keys, shared, min_size=1, include=include)
    grouped = np.flatnonzero(index.group_of >= 0)
    _, first = np.unique(index.group_of[grouped], return_index=True)
    block_of_group = blocks.group_of[grouped[first]]
    valid = (blocks.keys >= 0).all(axis=1)
    block_of_group = np.where(valid[block_of_group], block_of_group, -1)
    used = np.unique(block_of_group[block_of_group >= 0])
    renumber = np.full(blocks.n_groups + 1, -1, dtype=np.int64)
    renumber[used] = np.arange(used.size)
    group_of = renumber[blocks.group_of]  # -1 maps to renumber[-1] = -1
    kept = GroupIndex(shared, blocks.keys[used], blocks.sizes[used], group_of)
    return kept, np.where(block_of_group >= 0, renumber[block_of_group], -1)


def _build_layers(keys, specs, include, min_size, max_groups, one_vs_rest, rung_groups):
    """Group sums for several groupings in one scan: a [layers, examples] id matrix. The first
    grouping keeps up to max_groups groups, the others up to rung_groups each."""
    layers, rows, offset = [], [], 0
    for i, (by, key_names) in enumerate(specs):
        index = group_examples(keys, key_names, min_size=min_size, include=include,
                               max_groups=max_groups if i == 0 else rung_groups)
        layer = _Layer(by, key_names, index, offset)
        rows.append(np.where(index.group_of >= 0, index.group_of + offset, -1))
        offset += index.n_groups
        found = _feature_blocks(keys, key_names, index, include) if one_vs_rest else None
        if found is not None and found[0].n_groups:
            layer.blocks, layer.block_of_group = found
            layer.block_offset = offset
            rows.append(np.where(found[0].group_of >= 0, found[0].group_of + offset, -1))
            offset += found[0].n_groups
        layers.append(layer)
    return np.stack(rows), offset, layers


def _group_examples_to_show(index: GroupIndex, movement: np.ndarray) -> list[np.ndarray]:
    """Each group's members ordered by how much they move (most first), a few per group."""
    grouped = np.flatnonzero(index.group_of >= 0)
    order = grouped[np.lexsort((grouped, -movement[grouped], index.group_of[grouped]))]
    bounds = np.cumsum(index.sizes)[:-1]
    return [part[:EXAMPLES_PER_GROUP] for part in np.split(order, bounds)] if index.n_groups else []


def _describe_rests(pairs, layer: _Layer | None, keys, movement: np.ndarray) -> None:
    """Fill in a one-vs-rest pair's rest: its targets (largest first) and members to show."""
    if layer is None or layer.blocks is None:
        return
    target = keys[TARGET]
    for pair in pairs:
        if not pair.is_one_vs_rest:
            continue
        members = np.flatnonzero((layer.blocks.group_of == pair.block) & (layer.index.group_of != pair.group_a))
        values, counts = np.unique(target[members], return_counts=True)
        order = np.lexsort((values, -counts))
        pair.rest_targets = [int(v) for v in values[order][:REST_TARGETS]]
        pair.rest_n_targets = int(values.size)
        shown = members[np.lexsort((members, -movement[members]))]
        pair.rest_examples = [int(i) for i in shown[:EXAMPLES_PER_GROUP]]


def rest_members(result: MiningResult, pair: Any, keys: Mapping[str, Any]) -> np.ndarray:
    """A one-vs-rest pair's rest: every kept example sharing group a's feature (every key but the
    target) whose example is not in group a, as the miner tested it; ascending indices."""
    group = result.groups[pair.group_a]
    inside = np.ones(result.n_examples, dtype=bool)
    for name, value in zip(result.key_names, group.key):
        if name != TARGET:
            inside &= np.asarray(keys[name])[: result.n_examples] == value
    inside[group.members] = False
    inside[np.asarray(result.skipped, dtype=np.int64)] = False
    return np.flatnonzero(inside)

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
    windows: bool = True,
    one_vs_rest: bool = True,
    ladder: Sequence[str] | None = None,
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
    windows: also test pairs over sliding windows (`windows`; corrected for); one_vs_rest: also
    test each group against the rest of its feature (`opposing`); ladder: groupings of
    increasing order (e.g. "target", "feature-target", "feature2-feature-target") whose
    complexity over windows of training is measured (`result.complexity`; None: not measured).
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
    specs = []
    if key_names:
        specs.append((by, key_names))
        for rung_by in ladder or ():
            rung_names = parse_by(rung_by, keys)
            if rung_names not in [names for _, names in specs]:
                specs.append((rung_by, rung_names))
    limit = min(max_groups or group_budget, group_budget)
    # The ladder's other groupings share one more budget; feature blocks never outnumber their
    # grouping's groups: the group sums stay below 4 x GROUP_CELLS cells in all.
    rung_limit = max(1, group_budget // max(1, len(specs) - 1))
    if key_names:
        def build(include):
            group_of, n_columns, layers = _build_layers(keys, specs, include, min_size, limit, one_vs_rest,
                                                        rung_limit)
            return group_of, n_columns, layers

        keep, layers, scan = scan_layers(trace, build, top=top, edges=edges, chunk_cells=chunk_cells)
        index = layers[0].index
    else:  # cluster mode groups nothing: one key of its own, no group reaching the minimum size
        keep, index, scan = scan_finite(trace, {"example": np.arange(trace.n_examples)}, ("example",),
                                        min_size=trace.n_examples + 1, max_groups=limit, top=top,
                                        edges=edges, chunk_cells=chunk_cells)
        layers = []
    notes = []
    if index.n_groups == group_budget and (max_groups is None or max_groups > group_budget):
        notes.append(f"kept only the {group_budget} largest groups: {trace.n_records} records x"
                     f" more groups would exceed the memory budget (pass max_groups, or a window)")
    skipped = np.flatnonzero(~keep)
    if skipped.size:
        notes.append(f"skipped {skipped.size} of {trace.n_examples} example(s) whose loss is not"
                     f" finite somewhere in steps {trace.steps[0]}..{trace.steps[-1]}")
        warnings.warn(notes[-1], RuntimeWarning, stacklevel=2)

    sums = scan.group_sum  # in place: records x groups may be the largest array here
    means, rests = [], []
    for layer in layers:
        columns = slice(layer.offset, layer.offset + layer.index.n_groups)
        sums[:, columns] /= np.maximum(layer.index.sizes, 1)[None, :]
        means.append(sums[:, columns])
        rest = None
        if layer.blocks is not None:
            block_columns = slice(layer.block_offset, layer.block_offset + layer.blocks.n_groups)
            sums[:, block_columns] /= np.maximum(layer.blocks.sizes, 1)[None, :]
            rest = RestBlocks(sums[:, block_columns], layer.blocks.sizes, layer.block_of_group, min_size)
        rests.append(rest)
    mean_loss = means[0] if layers else sums
    movement = idiosyncratic_variance(scan.weighted_sum, scan.weighted_sq_sum,
                                      scan.weighted_trend_sum, scan.trend, scan.scale)
    shown = _group_examples_to_show(index, movement)
    groups = [
        Group(key=tuple(int(v) for v in index.keys[g]), size=int(index.sizes[g]),
              members=members, mean_loss=mean_loss[:, g], examples=shown[g])
        for g, members in enumerate(index.members())
    ]
    complexity = None
    if mode == CLUSTER_MODE:
        pairs, pair_test = [], PairTest(trace.n_intervals, 0, alpha, bonferroni_threshold(alpha, 1),
                                        "cluster mode: no keyed groups (see clusters)")
    else:
        if windows:
            pairs, pair_test = windowed_pairs(mean_loss, scan.trend, scan.scale, index.keys, index.sizes,
                                              key_names, trace.steps, n_total=scan.n_kept, alpha=alpha,
                                              rest=rests[0])
        else:
            pairs, pair_test = find_opposing_pairs(mean_loss, scan.trend, index.keys, index.sizes,
                                                   key_names, trace.steps, scan.scale,
                                                   n_total=scan.n_kept, alpha=alpha, rest=rests[0])
        _describe_rests(pairs, layers[0], keys, movement)
        if ladder:
            wanted = [parse_by(b, keys) for b in ladder]
            rungs = []
            for layer, means_l, rest in zip(layers, means, rests):
                if layer.key_names not in wanted:
                    continue
                rungs.append(Rung(
                    by="-".join(layer.key_names), order=order_of(layer.by), key_names=layer.key_names,
                    mean_loss=means_l, keys=layer.index.keys, sizes=layer.index.sizes, rest=rest))
            rungs.sort(key=lambda r: wanted.index(r.key_names))
            complexity = complexity_over_windows(rungs, scan.trend, scan.scale, trace.steps,
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
        pair_test=pair_test, clusters=clusters, complexity=complexity,
        settings={"top": top, "min_size": min_size, "alpha": alpha, "n_clusters": n_clusters,
                  "cluster_top": cluster_top, "max_groups": max_groups, "bins": bins,
                  "chunk_cells": chunk_cells, "seed": seed, "skip_transient": skip_transient,
                  "windows": windows, "one_vs_rest": one_vs_rest,
                  "ladder": None if ladder is None else list(ladder)},
        warnings=notes,
    )
