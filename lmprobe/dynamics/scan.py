"""One streaming pass that turns a loss matrix into per-example running sums.

Per column chunk: the first and last `edge` records are read first (they give start_loss,
end_loss and so the age-of-acquisition midpoint), then the chunk's rows are streamed in
blocks. Everything is a running per-example quantity — shifted sums for means and standard
deviations, counts, the previous record's learned state, the last rows needed by the centred
moving average — so a block is dropped as soon as it is used.

Sums are float64 of float32 block values. Squares are taken of values shifted by a per-example
constant near the data (the start/end midpoint; for the late part, end_loss), which keeps
E[d^2] - E[d]^2 accurate without float64 blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lmprobe.dynamics.blocks import BlockReader, plan_blocks, row_ranges

TILE_COLS = 1 << 14  # columns of one work tile
TILE_CELLS = 1 << 16  # values of one work tile (256 KiB of float32: stays in L2)


@dataclass(frozen=True)
class ScanSettings:
    learned_threshold: float
    edge: int  # records averaged for start_loss / end_loss
    smooth: int  # odd width of the centred moving average
    late_records: int  # records in the late part (for late_loss_std)


def float32_at_most(value: float) -> np.float32:
    """The largest float32 <= value, so that float32 x <= it exactly when x <= value
    (comparing with a Python float rounds it to float32, which may round it up)."""
    rounded = np.float32(value)
    return np.nextafter(rounded, np.float32(-np.inf)) if float(rounded) > value else rounded


class Sums:
    """Per-example accumulators over all examples; a chunk works on slices (views) of them."""

    def __init__(self, n: int):
        f64 = lambda: np.zeros(n)  # noqa: E731
        self.start, self.end, self.final = f64(), f64(), f64()
        self.p_shift, self.p_sum, self.p_sq = f64(), f64(), f64()
        self.x_shift, self.x_sum, self.x_sq = f64(), f64(), f64()
        self.late_sum, self.late_sq = f64(), f64()
        self.min = np.full(n, np.inf)
        self.learned = np.zeros(n, np.int64)
        self.forgets = np.zeros(n, np.int64)
        self.first_learned = np.full(n, -1, np.int64)  # record index
        self.aoa_log = np.full(n, np.nan)  # log(1 + step)


class _ChunkState:
    """What streaming one tile of columns carries from one block of rows to the next."""

    def __init__(self, sums: Sums, c0: int, c1: int, first: np.ndarray, last: np.ndarray):
        cols = slice(c0, c1)
        self.s = {name: value[cols] for name, value in vars(sums).items()}
        start = first.mean(axis=0, dtype=np.float64)
        end = last.mean(axis=0, dtype=np.float64)
        self.s["start"][:] = start
        self.s["end"][:] = end
        self.s["final"][:] = last[-1]
        self.mid = (start + end) / 2
        self.x_shift32 = self.mid.astype(np.float32)
        self.p_shift32 = np.exp(-self.x_shift32)
        self.end32 = end.astype(np.float32)
        self.s["x_shift"][:] = self.x_shift32
        self.s["p_shift"][:] = self.p_shift32
        self.searching = end < start  # AoA is looked for only where the curve drops
        self.prev_learned = np.zeros(c1 - c0, dtype=bool)
        self.cum = np.zeros((1, c1 - c0))  # running sums C_j = x_0 + ... + x_{j-1}, j = cum_from..
        self.cum_from = 0
        self.next_smoothed = 0  # first record whose smoothed value is not computed yet
        self.prev_smoothed = np.full(c1 - c0, np.nan)


def scan(losses: Any, row_start: int, row_stop: int, log_steps: np.ndarray,
         settings: ScanSettings, chunk_cells: int) -> Sums:
    """Stream rows [row_start, row_stop) of `losses` once per column chunk.

    I/O blocks are large (whole rows when they fit in `chunk_cells`); each is then worked
    through in tiles of about TILE_CELLS values, so the dozen element-wise passes per value
    run in cache rather than against memory.
    """
    n = int(losses.shape[1])
    n_records = row_stop - row_start
    sums = Sums(n)
    plan = plan_blocks(n, chunk_cells)
    edge = settings.edge
    with BlockReader(losses) as reader, np.errstate(invalid="ignore", over="ignore"):
        for c0, c1 in plan.col_chunks:
            first = reader.read(row_start, row_start + edge, c0, c1)
            last = reader.read(row_stop - edge, row_stop, c0, c1)
            width = min(c1 - c0, TILE_COLS)
            tiles = [(a - c0, min(a + width, c1) - c0) for a in range(c0, c1, width)]
            states = [_ChunkState(sums, c0 + a, c0 + b, first[:, a:b], last[:, a:b]) for a, b in tiles]
            sub_rows = max(1, TILE_CELLS // width)
            del first, last
            for r0, r1 in row_ranges(row_start, row_stop, plan.rows_per_block):
                block = reader.read(r0, r1, c0, c1)
                for state, (a, b) in zip(states, tiles):
                    for s0, s1 in row_ranges(0, r1 - r0, sub_rows):
                        _add_block(state, block[s0:s1, a:b], r0 - row_start + s0, n_records,
                                   log_steps, settings)
    return sums


def _add_block(state: _ChunkState, x: np.ndarray, t0: int, n_records: int,
               log_steps: np.ndarray, settings: ScanSettings) -> None:
    """Fold records t0 .. t0 + len(x) - 1 (window-relative) of one tile into the sums."""
    s = state.s
    d = x - state.x_shift32
    s["x_sum"] += d.sum(axis=0, dtype=np.float64)
    np.multiply(d, d, out=d)
    s["x_sq"] += d.sum(axis=0, dtype=np.float64)
    np.minimum(s["min"], x.min(axis=0), out=s["min"])

    p = np.negative(x)
    np.exp(p, out=p)
    p -= state.p_shift32
    s["p_sum"] += p.sum(axis=0, dtype=np.float64)
    np.multiply(p, p, out=p)
    s["p_sq"] += p.sum(axis=0, dtype=np.float64)
    del p, d

    late_from = n_records - settings.late_records
    if t0 + len(x) > late_from:
        late = x[max(0, late_from - t0):] - state.end32
        s["late_sum"] += late.sum(axis=0, dtype=np.float64)
        np.multiply(late, late, out=late)
        s["late_sq"] += late.sum(axis=0, dtype=np.float64)

    _add_learned(state, x <= float32_at_most(settings.learned_threshold), t0)
    _add_smoothed(state, x, t0, n_records, log_steps, settings.smooth // 2)


def _add_learned(state: _ChunkState, learned: np.ndarray, t0: int) -> None:
    s = state.s
    s["learned"] += np.count_nonzero(learned, axis=0)
    forgot = state.prev_learned & ~learned[0]
    if len(learned) > 1:
        forgot = forgot.astype(np.int64) + np.count_nonzero(learned[:-1] & ~learned[1:], axis=0)
    s["forgets"] += forgot
    state.prev_learned = learned[-1].copy()
    new = np.flatnonzero((s["first_learned"] < 0) & learned.any(axis=0))
    if new.size:
        s["first_learned"][new] = t0 + learned[:, new].argmax(axis=0)


def _add_smoothed(state: _ChunkState, x: np.ndarray, t0: int, n_records: int,
                  log_steps: np.ndarray, h: int) -> None:
    """Centred moving averages of every record whose window is now complete, then crossings.

    S_t = (C_hi - C_lo) / (hi - lo), lo = max(0, t - h), hi = min(R, t + h + 1), from the
    running sums C; only the last 2h + 1 of them are carried between blocks.
    """
    t1 = t0 + len(x)
    t_hi = n_records - 1 if t1 == n_records else t1 - 1 - h
    t_lo = state.next_smoothed
    if h == 0:
        _find_crossings(state, x.astype(np.float64), t0, log_steps)
        state.next_smoothed = t1
        return
    cum = np.empty((len(state.cum) + len(x), x.shape[1]))
    cum[: len(state.cum)] = state.cum
    _running_sums(x, cum[len(state.cum) - 1:])
    if t_hi >= t_lo:
        t = np.arange(t_lo, t_hi + 1)
        lo = np.maximum(0, t - h)
        hi = np.minimum(n_records, t + h + 1)
        smoothed = cum[hi - state.cum_from]
        smoothed -= cum[lo - state.cum_from]
        smoothed /= (hi - lo)[:, None]
        _find_crossings(state, smoothed, t_lo, log_steps)
        state.next_smoothed = t_hi + 1
    keep_from = max(0, state.next_smoothed - h)
    state.cum = cum[keep_from - state.cum_from:].copy()
    state.cum_from = keep_from


def _running_sums(x: np.ndarray, cum: np.ndarray) -> None:
    """cum[i + 1] = cum[i] + x[i] in float64. A row-by-row loop beats np.cumsum along axis 0
    on wide arrays (numpy walks that axis with a stride) by about 10x."""
    if x.shape[1] < 512:
        np.cumsum(x, axis=0, dtype=np.float64, out=cum[1:])
        cum[1:] += cum[0]
    else:
        for i in range(len(x)):
            np.add(cum[i], x[i], out=cum[i + 1])


def _find_crossings(state: _ChunkState, smoothed: np.ndarray, t_lo: int, log_steps: np.ndarray) -> None:
    """First record at which the smoothed curve reaches the midpoint, log-interpolated."""
    searching = state.searching
    if searching.any():
        below = smoothed <= state.mid
        below &= searching
        cols = np.flatnonzero(below.any(axis=0))
        if cols.size:
            first = below[:, cols].argmax(axis=0)
            t = t_lo + first
            after = smoothed[first, cols]
            before = np.where(first > 0, smoothed[np.maximum(first - 1, 0), cols],
                              state.prev_smoothed[cols])
            with np.errstate(invalid="ignore", divide="ignore"):
                frac = (before - state.mid[cols]) / (before - after)
            log_before = log_steps[np.maximum(t - 1, 0)]
            interpolated = log_before + frac * (log_steps[t] - log_before)
            state.s["aoa_log"][cols] = np.where(t == 0, log_steps[0], interpolated)
            searching[cols] = False
    state.prev_smoothed = smoothed[-1]
