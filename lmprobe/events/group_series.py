"""Mean loss change per interval of a few chosen groups, in one streamed pass over the trace.

Used for the pairs whose swings are tested against spikes: only their members' columns are
summed, in blocks of at most `chunk_cells` values, so the trace is never held in memory.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from lmprobe.mining.inputs import TraceWindow
from lmprobe.mining.stream import DEFAULT_CHUNK_CELLS, plan_chunks, row_blocks


def group_mean_changes(window: TraceWindow, members: Sequence[np.ndarray], *,
                       chunk_cells: int = DEFAULT_CHUNK_CELLS) -> np.ndarray:
    """[intervals, len(members)]: mean change of each member set's (finite) losses per interval."""
    plan = plan_chunks(window.n_examples, chunk_cells)
    sums = np.zeros((window.n_records, len(members)))
    counts = np.zeros((window.n_records, len(members)))
    members = [np.sort(np.asarray(m, dtype=np.int64)) for m in members]
    done = window.row_start  # rows before this one are already summed (blocks overlap by one row)
    for r0, r1 in row_blocks(window.row_start, window.row_stop, plan.rows_per_block):
        fresh = max(r0, done)
        for c0, c1 in plan.col_chunks:
            block: Any = None
            for j, cols in enumerate(members):
                inside = cols[(cols >= c0) & (cols < c1)] - c0
                if inside.size == 0:
                    continue
                if block is None:
                    block = np.asarray(window.losses[fresh:r1, c0:c1], dtype=np.float64)
                values = block[:, inside]
                finite = np.isfinite(values)
                rows = slice(fresh - window.row_start, r1 - window.row_start)
                sums[rows, j] += np.where(finite, values, 0.0).sum(axis=1)
                counts[rows, j] += finite.sum(axis=1)
        done = r1
    with np.errstate(all="ignore"):
        mean = sums / counts
    return np.diff(mean, axis=0)
