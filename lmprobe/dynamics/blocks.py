"""Reading a loss matrix in bounded blocks.

A trace's np.memmap read by slicing maps every page it touches into the process, so its
resident size grows with the file (the pages are reclaimable, but they count as the process's
memory and crowd out others'). A C-ordered memmap is therefore read with plain `preadv` calls
into one reused buffer; any other array (numpy, h5py-like) is sliced.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

DEFAULT_CHUNK_CELLS = 1 << 22  # 16 MiB of float32 per block


@dataclass(frozen=True)
class BlockPlan:
    """Column chunks [start, stop) and how many rows of a chunk one block holds."""

    col_chunks: tuple[tuple[int, int], ...]
    rows_per_block: int


def plan_blocks(n_examples: int, chunk_cells: int) -> BlockPlan:
    """Whole rows per block when a row fits in `chunk_cells`, else column chunks of one row."""
    cols = max(1, min(n_examples, int(chunk_cells)))
    rows = max(1, int(chunk_cells) // cols)
    chunks = tuple((c, min(c + cols, n_examples)) for c in range(0, n_examples, cols))
    return BlockPlan(col_chunks=chunks, rows_per_block=rows)


def row_ranges(row_start: int, row_stop: int, rows_per_block: int) -> Iterator[tuple[int, int]]:
    for start in range(row_start, row_stop, rows_per_block):
        yield start, min(start + rows_per_block, row_stop)


class BlockReader:
    """`read(r0, r1, c0, c1)` -> float32 [r1 - r0, c1 - c0], a fresh array each call."""

    def __init__(self, losses: Any):
        self.losses = losses
        self.dtype = np.dtype(losses.dtype)
        self.n_columns = int(losses.shape[1])
        self._fd = None
        if (isinstance(losses, np.memmap) and getattr(losses, "filename", None)
                and losses.flags.c_contiguous and hasattr(os, "preadv")):
            self._fd = os.open(losses.filename, os.O_RDONLY)
            self._offset = int(losses.offset)
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        self._buffer = np.empty(0, dtype=self.dtype)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "BlockReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def read(self, r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        if self._fd is None:
            return np.asarray(self.losses[r0:r1, c0:c1], dtype=np.float32)
        rows, cols = r1 - r0, c1 - c0
        if self.dtype == np.float32:  # read straight into the array handed out
            raw = np.empty((rows, cols), dtype=self.dtype)
        else:  # float16 and others: one reused buffer, converted into a fresh float32 array
            if self._buffer.size < rows * cols:
                self._buffer = np.empty(rows * cols, dtype=self.dtype)
            raw = self._buffer[: rows * cols].reshape(rows, cols)
        item = self.dtype.itemsize
        if cols == self.n_columns:  # whole rows: one contiguous read
            self._pread(raw.reshape(-1), self._offset + r0 * cols * item)
        else:
            for i in range(rows):
                self._pread(raw[i], self._offset + ((r0 + i) * self.n_columns + c0) * item)
        return raw if raw.dtype == np.float32 else raw.astype(np.float32)

    def _pread(self, out: np.ndarray, offset: int) -> None:
        view = memoryview(out).cast("B")
        done = 0
        while done < len(view):
            got = os.preadv(self._fd, [view[done:]], offset + done)
            if got <= 0:
                raise OSError(f"short read of {self.losses.filename} at byte {offset + done}")
            done += got
