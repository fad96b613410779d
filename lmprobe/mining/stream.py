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
from lmprobe.mining.topk import merge_top_k, top_k_rows

DEFAULT_CHUNK_CELLS = 1 << 21


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
    group_ids: np.ndarray  # group id of each segment

    @classmethod
    def build(cls, start: int, stop: int, keep: np.ndarray, group_of: np.ndarray) -> "_Chunk":
        kept = np.flatnonzero(keep[start:stop])
        local = None if kept.size == stop - start else kept
        columns = start + kept
        gid = group_of[columns]
        grouped = np.flatnonzero(gid >= 0)
        order = grouped[np.argsort(gid[grouped], kind="stable")]
        sorted_gid = gid[order]
        boundaries = np.flatnonzero(np.diff(sorted_gid)) + 1 if order.size else np.zeros(0, int)
        starts = np.concatenate([[0], boundaries]).astype(np.int64) if order.size else boundaries
        return cls(start, stop, local, columns, order, starts, sorted_gid[starts])

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
    max_rise_interval: np.ndarray  # int64 [examples]
    max_fall: np.ndarray  # float32 [examples] (most negative change); +inf for left-out
    max_fall_interval: np.ndarray
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
    """Stream over the window's rows once (see the module docstring)."""
    n = window.n_examples
    n_records, n_intervals = window.n_records, window.n_intervals
    n_kept = int(keep.sum())
    plan = plan_chunks(max(1, n), chunk_cells)
    chunks = [_Chunk.build(a, b, keep, group_of) for a, b in plan.col_chunks]
    top = max(0, min(int(top), n_kept))

    nonfinite = np.zeros(n, dtype=bool)
    kept_sum = np.zeros(n_records)
    sq_sum = np.zeros(n_intervals)
    group_sum = np.zeros((n_records, n_groups))
    # Placeholders sort last in a merge, so a chunk narrower than `top` cannot leak them.
    riser_index = np.full((n_intervals, top), -1, np.int64)
    riser_change = np.full((n_intervals, top), -np.inf, np.float32)
    faller_index = np.full((n_intervals, top), -1, np.int64)
    faller_change = np.full((n_intervals, top), np.inf, np.float32)
    counter = HistogramCounter(hist_edges)
    max_rise = np.full(n, -np.inf, np.float32)
    max_fall = np.full(n, np.inf, np.float32)
    max_rise_interval = np.zeros(n, np.int64)
    max_fall_interval = np.zeros(n, np.int64)
    weighted_sum = np.zeros(n)
    weighted_sq_sum = np.zeros(n)
    weighted_trend_sum = np.zeros(n)
    complete = True

    for row_start, row_stop in row_blocks(window.row_start, window.row_stop, plan.rows_per_block):
        first_row = row_start - window.row_start  # record index of the block's first row
        new_from = 0 if row_start == window.row_start else 1  # skip the overlap row
        # One chunk: read once and reuse. Several: a profiling sweep first, then a second read.
        blocks = [chunks[0].read(window.losses, row_start, row_stop)] if len(chunks) == 1 else None
        if not complete:
            _mark_nonfinite(chunks, blocks, window.losses, row_start, row_stop, nonfinite)
            continue
        row_sums, block_sq = _block_profile(chunks, blocks, window.losses, row_start, row_stop)
        if not (np.isfinite(row_sums).all() and np.isfinite(block_sq).all()):
            complete = False
            _mark_nonfinite(chunks, blocks, window.losses, row_start, row_stop, nonfinite)
            continue

        records = slice(first_row + new_from, first_row + row_stop - row_start)
        intervals = slice(first_row, first_row + row_stop - row_start - 1)
        kept_sum[records] = row_sums[new_from:]
        sq_sum[intervals] = block_sq
        trend = np.diff(row_sums) / max(1, n_kept)
        weight = 1.0 / interval_scale(block_sq, trend, n_kept) ** 2
        for i, chunk in enumerate(chunks):
            block = blocks[i] if blocks else chunk.read(window.losses, row_start, row_stop)
            if chunk.group_order.size:
                group_sum[records, chunk.group_ids] += np.add.reduceat(
                    block[new_from:, chunk.group_order], chunk.group_starts, axis=1, dtype=np.float64
                )
            change = block[1:] - block[:-1]
            if change.shape[1] == 0:
                continue
            counter.add(change)
            _update_movers(change, chunk.columns, top, intervals, len(chunks) > 1,
                           riser_index, riser_change, faller_index, faller_change)
            _update_extremes(change, chunk.columns, first_row,
                             max_rise, max_rise_interval, max_fall, max_fall_interval)
            change64 = change.astype(np.float64)
            weighted = weight[:, None] * change64
            weighted_sum[chunk.columns] += weighted.sum(axis=0)
            weighted_sq_sum[chunk.columns] += np.einsum("ij,ij->j", weighted, change64)
            weighted_trend_sum[chunk.columns] += trend @ weighted

    trend_all = np.diff(kept_sum) / max(1, n_kept)
    return TraceScan(
        complete=complete,
        nonfinite=nonfinite,
        n_kept=n_kept,
        kept_sum=kept_sum,
        group_sum=group_sum,
        trend=trend_all,
        scale=interval_scale(sq_sum, trend_all, n_kept),
        riser_index=riser_index,
        riser_change=riser_change,
        faller_index=faller_index,
        faller_change=faller_change,
        histogram=counter.result(),
        max_rise=max_rise,
        max_rise_interval=max_rise_interval,
        max_fall=max_fall,
        max_fall_interval=max_fall_interval,
        weighted_sum=weighted_sum,
        weighted_sq_sum=weighted_sq_sum,
        weighted_trend_sum=weighted_trend_sum,
    )


def _mark_nonfinite(chunks, blocks, losses, row_start, row_stop, nonfinite) -> None:
    for i, chunk in enumerate(chunks):
        block = blocks[i] if blocks else chunk.read(losses, row_start, row_stop)
        nonfinite[chunk.columns[~np.isfinite(block).all(axis=0)]] = True


def _update_movers(change, columns, top, intervals, merge,
                   riser_index, riser_change, faller_index, faller_change) -> None:
    """Per-interval top risers / fallers of this chunk, merged into the running lists."""
    if top == 0:
        return
    for largest, index_out, change_out in (
        (True, riser_index, riser_change),
        (False, faller_index, faller_change),
    ):
        positions, values = top_k_rows(change, top, largest)
        found = columns[positions]
        if merge:
            found, values = merge_top_k(
                index_out[intervals], change_out[intervals], found, values, top, largest
            )
        width = found.shape[1]
        index_out[intervals, :width] = found
        change_out[intervals, :width] = values


def _update_extremes(change, columns, first_interval,
                     max_rise, max_rise_interval, max_fall, max_fall_interval) -> None:
    """Keep each example's largest rise and fall so far (earliest interval on ties)."""
    for values_out, where_out, pick, better in (
        (max_rise, max_rise_interval, np.argmax, np.greater),
        (max_fall, max_fall_interval, np.argmin, np.less),
    ):
        at = pick(change, axis=0)
        value = np.take_along_axis(change, at[None, :], axis=0)[0]
        improve = better(value, values_out[columns])
        values_out[columns[improve]] = value[improve]
        where_out[columns[improve]] = first_interval + at[improve]
