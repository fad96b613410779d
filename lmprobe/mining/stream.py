"""One bounded-memory pass over the loss matrix that gathers everything mining needs.

The matrix may be an np.memmap far larger than RAM. It is read in blocks of at most
`chunk_cells` values: whole rows when a row fits (contiguous reads of the row-major file),
otherwise column chunks of a pair of rows. Consecutive blocks overlap by one row so every
change loss[t+1] - loss[t] is taken exactly once and nothing ever differences the whole
matrix. Per block it accumulates:

  * per-record loss sums of every group and of all kept examples (float64, exact enough that
    chunk size changes only the last bits);
  * per-interval top-k risers and fallers (exact, ties to the lower index; merged across
    column chunks);
  * histogram counts of the changes (edges fixed beforehand);
  * per-interval sums of squared changes (the cross-sectional spread used to standardise
    intervals, see `stats.interval_scale`);
  * per-example running extremes of the change (largest rise / fall and when), and the
    weighted sums needed to regress each example's changes on the global mean change later.

Non-finite losses: the pass is optimistic. A block's float64 row sums and squared-change sums
are finite exactly when all its values are, so the common all-finite case costs one check. When a non-finite
value turns up the scan only collects the offending columns for the rest of the way and
reports itself incomplete; the caller then rescans with those examples left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from lmprobe.mining.histogram import Histogram, HistogramCounter
from lmprobe.mining.inputs import TraceWindow
from lmprobe.mining.stats import interval_scale
from lmprobe.mining.topk import merge_top_k, top_and_bottom_k_rows

DEFAULT_CHUNK_CELLS = 1 << 19


@dataclass(frozen=True)
class ChunkPlan:
    """How the matrix is cut: row blocks (overlapping by one row) x column chunks."""

    rows_per_block: int
    col_chunks: tuple[tuple[int, int], ...]


def plan_chunks(n_examples: int, chunk_cells: int) -> ChunkPlan:
    """Whole rows per block when at least two rows fit in `chunk_cells`, else column chunks."""
    chunk_cells = max(2, int(chunk_cells))
    cols = min(n_examples, max(1, chunk_cells // 2))
    rows = max(2, chunk_cells // cols)
    chunks = tuple((c, min(c + cols, n_examples)) for c in range(0, n_examples, cols))
    return ChunkPlan(rows_per_block=rows, col_chunks=chunks)


def row_blocks(row_start: int, row_stop: int, rows_per_block: int) -> Iterator[tuple[int, int]]:
    """Blocks [start, stop) covering the rows, each starting on the previous block's last row."""
    start = row_start
    while True:
        stop = min(start + rows_per_block, row_stop)
        yield start, stop
        if stop >= row_stop:
            return
        start = stop - 1


@dataclass
class _Chunk:
    """A column chunk with the kept examples and the group layout inside it."""

    start: int
    stop: int
    local: np.ndarray | None  # kept positions inside the chunk; None = all kept
    columns: np.ndarray  # global example index of each kept column
    group_order: np.ndarray  # kept positions sorted by group (grouped examples only)
    group_starts: np.ndarray  # segment starts in group_order
    group_ids: np.ndarray  # group id of each segment (unique: layers use disjoint ids)

    @classmethod
    def build(cls, start: int, stop: int, keep: np.ndarray, group_of: np.ndarray) -> "_Chunk":
        kept = np.flatnonzero(keep[start:stop])
        local = None if kept.size == stop - start else kept
        columns = start + kept
        orders, starts, ids, offset = [], [], [], 0
        # One layer per grouping (group ids disjoint across layers): the segments of every
        # layer are concatenated, so one reduceat gives all groups' sums.
        for layer in np.atleast_2d(group_of):
            gid = layer[columns]
            grouped = np.flatnonzero(gid >= 0)
            order = grouped[np.argsort(gid[grouped], kind="stable")]
            if not order.size:
                continue
            sorted_gid = gid[order]
            seg = np.concatenate([[0], np.flatnonzero(np.diff(sorted_gid)) + 1]).astype(np.int64)
            orders.append(order)
            starts.append(seg + offset)
            ids.append(sorted_gid[seg])
            offset += order.size
        if not orders:
            empty = np.zeros(0, np.int64)
            return cls(start, stop, local, columns, empty, empty, empty)
        return cls(start, stop, local, columns, np.concatenate(orders), np.concatenate(starts),
                   np.concatenate(ids))

    @property
    def target(self) -> slice | np.ndarray:
        """Where this chunk's columns go in per-example arrays: a slice (a view, cheap) when
        every column is kept, else the index array."""
        return slice(self.start, self.stop) if self.local is None else self.columns

    def read(self, losses, row_start: int, row_stop: int) -> np.ndarray:
        block = np.asarray(losses[row_start:row_stop, self.start : self.stop], dtype=np.float32)
        return block if self.local is None else block[:, self.local]


@dataclass
class TraceScan:
    """Everything one pass collects. Arrays over examples use global example indices.

    The per-example sums are weighted by w_i = 1 / scale_i^2 (see `stats.interval_scale`), so an
    example's movement can later be measured in noise-standardised units without a re-read.
    """

    complete: bool  # False when non-finite values were found: the statistics are not valid
    nonfinite: np.ndarray  # bool [examples]: columns holding a non-finite loss in the window
    n_kept: int
    kept_sum: np.ndarray  # float64 [records]: sum of losses of all kept examples
    group_sum: np.ndarray  # float64 [records, groups]
    trend: np.ndarray  # float64 [intervals]: mean change over kept examples
    scale: np.ndarray  # float64 [intervals]: spread of the changes around the trend
    riser_index: np.ndarray  # int64 [intervals, top]
    riser_change: np.ndarray  # float32 [intervals, top]
    faller_index: np.ndarray
    faller_change: np.ndarray
    histogram: Histogram
    max_rise: np.ndarray  # float32 [examples]; -inf for left-out examples
    max_rise_block: np.ndarray  # int64 [examples]: first interval of the block it happened in
    max_fall: np.ndarray  # float32 [examples] (most negative change); +inf for left-out
    max_fall_block: np.ndarray
    block_intervals: int  # intervals per row block (see `locate_extreme`)
    weighted_sum: np.ndarray  # float64 [examples]: sum_i w_i d_i
    weighted_sq_sum: np.ndarray  # sum_i w_i d_i^2
    weighted_trend_sum: np.ndarray  # sum_i w_i d_i g_i


def _block_profile(chunks: list[_Chunk], blocks: list[np.ndarray] | None, losses,
                   row_start: int, row_stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Row sums [rows] and sums of squared changes [rows - 1] over all kept columns."""
    row_sums = np.zeros(row_stop - row_start)
    sq_sums = np.zeros(row_stop - row_start - 1)
    for i, chunk in enumerate(chunks):
        block = blocks[i] if blocks else chunk.read(losses, row_start, row_stop)
        row_sums += block.sum(axis=1, dtype=np.float64)
        change = (block[1:] - block[:-1]).astype(np.float64)
        sq_sums += np.einsum("ij,ij->i", change, change)
    return row_sums, sq_sums


class _Accumulators:
    """The running per-example and per-interval results of a scan."""

    def __init__(self, n: int, n_records: int, n_intervals: int, n_groups: int, top: int,
                 hist_edges: np.ndarray):
        self.kept_sum = np.zeros(n_records)
        self.sq_sum = np.zeros(n_intervals)
        self.group_sum = np.zeros((n_records, n_groups))
        # Placeholders sort last in a merge, so a chunk narrower than `top` cannot leak them.
        self.riser_index = np.full((n_intervals, top), -1, np.int64)
        self.riser_change = np.full((n_intervals, top), -np.inf, np.float32)
        self.faller_index = np.full((n_intervals, top), -1, np.int64)
        self.faller_change = np.full((n_intervals, top), np.inf, np.float32)
        self.counter = HistogramCounter(hist_edges)
        self.max_rise = np.full(n, -np.inf, np.float32)
        self.max_fall = np.full(n, np.inf, np.float32)
        self.max_rise_block = np.zeros(n, np.int64)
        self.max_fall_block = np.zeros(n, np.int64)
        self.weighted_sum = np.zeros(n)
        self.weighted_sq_sum = np.zeros(n)
        self.weighted_trend_sum = np.zeros(n)
        self.top = top

    def add_changes(self, change: np.ndarray, change64: np.ndarray, chunk: _Chunk,
                    intervals: slice, merge: bool, weight: np.ndarray, trend: np.ndarray) -> None:
        """Everything that depends on one chunk's changes [block intervals, kept columns]."""
        self.counter.add(change)
        self._movers(change, chunk.columns, intervals, merge)
        target = chunk.target
        for best, where, reduce, better in ((self.max_rise, self.max_rise_block, np.max, np.greater),
                                           (self.max_fall, self.max_fall_block, np.min, np.less)):
            value = reduce(change, axis=0)
            current = best[target]
            improve = better(value, current)
            np.copyto(current, value, where=improve)
            if isinstance(target, slice):
                where[target][improve] = intervals.start
            else:
                best[target] = current
                where[target[improve]] = intervals.start
        weighted = weight[:, None] * change64
        self.weighted_sum[target] += weighted.sum(axis=0)
        self.weighted_sq_sum[target] += np.einsum("ij,ij->j", weighted, change64)
        self.weighted_trend_sum[target] += np.einsum("i,ij->j", trend, weighted)

    def _movers(self, change, columns, intervals, merge) -> None:
        """Per-interval top risers / fallers of this chunk, merged into the running lists."""
        if self.top == 0:
            return
        rising, falling = top_and_bottom_k_rows(change, self.top)
        for largest, (positions, values), index_out, change_out in (
            (True, rising, self.riser_index, self.riser_change),
            (False, falling, self.faller_index, self.faller_change),
        ):
            found = columns[positions]
            if merge:
                found, values = merge_top_k(index_out[intervals], change_out[intervals],
                                            found, values, self.top, largest)
            width = found.shape[1]
            index_out[intervals, :width] = found
            change_out[intervals, :width] = values


def scan_trace(
    window: TraceWindow,
    *,
    keep: np.ndarray,
    group_of: np.ndarray,
    n_groups: int,
    top: int,
    hist_edges: np.ndarray,
    chunk_cells: int = DEFAULT_CHUNK_CELLS,
) -> TraceScan:
    """Stream over the window's rows once (see the module docstring).

    group_of: [examples] group id per example (-1: none), or [layers, examples] when an example
    belongs to one group in each of several groupings (ids disjoint across layers, all below
    n_groups): every layer's sums come from the same read of the rows.
    """
    n = window.n_examples
    n_kept = int(keep.sum())
    plan = plan_chunks(max(1, n), chunk_cells)
    chunks = [_Chunk.build(a, b, keep, group_of) for a, b in plan.col_chunks]
    top = max(0, min(int(top), n_kept))
    acc = _Accumulators(n, window.n_records, window.n_intervals, n_groups, top, hist_edges)
    nonfinite = np.zeros(n, dtype=bool)
    complete = True

    for row_start, row_stop in row_blocks(window.row_start, window.row_stop, plan.rows_per_block):
        first_row = row_start - window.row_start  # record index of the block's first row
        new_from = 0 if row_start == window.row_start else 1  # skip the overlap row
        records = slice(first_row + new_from, first_row + row_stop - row_start)
        intervals = slice(first_row, first_row + row_stop - row_start - 1)
        if len(chunks) == 1:  # the common case: whole rows, read once
            block = chunks[0].read(window.losses, row_start, row_stop)
            change = block[1:] - block[:-1]
            change64 = change.astype(np.float64)
            row_sums = block.sum(axis=1, dtype=np.float64)
            block_sq = np.einsum("ij,ij->i", change64, change64)
        else:  # too wide: profile the rows in a first sweep, then read chunk by chunk
            block = None
            row_sums, block_sq = _block_profile(chunks, None, window.losses, row_start, row_stop)
        if not complete or not (np.isfinite(row_sums).all() and np.isfinite(block_sq).all()):
            complete = False
            _mark_nonfinite(chunks, None if block is None else [block], window.losses,
                            row_start, row_stop, nonfinite)
            continue

        acc.kept_sum[records] = row_sums[new_from:]
        acc.sq_sum[intervals] = block_sq
        trend = np.diff(row_sums) / max(1, n_kept)
        weight = 1.0 / interval_scale(block_sq, trend, n_kept) ** 2
        for chunk in chunks:
            if len(chunks) > 1:
                block = chunk.read(window.losses, row_start, row_stop)
                change = block[1:] - block[:-1]
                change64 = change.astype(np.float64)
            if chunk.group_order.size:
                acc.group_sum[records, chunk.group_ids] += np.add.reduceat(
                    block[new_from:, chunk.group_order], chunk.group_starts, axis=1, dtype=np.float64
                )
            if change.shape[1]:
                acc.add_changes(change, change64, chunk, intervals, len(chunks) > 1,
                                weight, trend)

    trend_all = np.diff(acc.kept_sum) / max(1, n_kept)
    return TraceScan(
        complete=complete,
        nonfinite=nonfinite,
        n_kept=n_kept,
        kept_sum=acc.kept_sum,
        group_sum=acc.group_sum,
        trend=trend_all,
        scale=interval_scale(acc.sq_sum, trend_all, n_kept),
        riser_index=acc.riser_index,
        riser_change=acc.riser_change,
        faller_index=acc.faller_index,
        faller_change=acc.faller_change,
        histogram=acc.counter.result(),
        max_rise=acc.max_rise,
        max_rise_block=acc.max_rise_block,
        max_fall=acc.max_fall,
        max_fall_block=acc.max_fall_block,
        block_intervals=plan.rows_per_block - 1,
        weighted_sum=acc.weighted_sum,
        weighted_sq_sum=acc.weighted_sq_sum,
        weighted_trend_sum=acc.weighted_trend_sum,
    )


def locate_extreme(window: TraceWindow, example: int, block_start: int, block_intervals: int,
                   largest: bool) -> int:
    """The interval of an example's largest rise (or fall), given the block it happened in.

    The scan keeps only the value and the block; reading one column of one block is enough
    to recover the interval, for the handful of examples that get reported.
    """
    first = window.row_start + block_start
    stop = min(first + block_intervals + 1, window.row_stop)
    column = np.asarray(window.losses[first:stop, example], dtype=np.float32)
    change = column[1:] - column[:-1]
    return block_start + int(change.argmax() if largest else change.argmin())


def _mark_nonfinite(chunks, blocks, losses, row_start, row_stop, nonfinite) -> None:
    for i, chunk in enumerate(chunks):
        block = blocks[i] if blocks else chunk.read(losses, row_start, row_stop)
        nonfinite[chunk.columns[~np.isfinite(block).all(axis=0)]] = True
