"""Exact top-k per row with a fixed tie rule, so chunked and one-shot mining agree.

`np.argpartition` is O(n) but picks arbitrarily among equal values; traces stored as float16
produce many equal loss changes, so ties are resolved by the lower example index, and results
from several column chunks can be merged into exactly what one big chunk would have given.
"""

from __future__ import annotations

import numpy as np


def _order(values: np.ndarray, index: np.ndarray, largest: bool) -> np.ndarray:
    """Row-wise order: best value first, lower index first among equals."""
    primary = -values if largest else values
    return np.lexsort((index, primary), axis=-1)


def _exact(values: np.ndarray, positions: np.ndarray, k: int, largest: bool) -> tuple[np.ndarray, np.ndarray]:
    """Fix up an argpartition pick where the k-th value ties with one left out; sort best first."""
    chosen = np.take_along_axis(values, positions, axis=1)
    if positions.shape[1] < values.shape[1]:
        cut = chosen.min(axis=1) if largest else chosen.max(axis=1)
        at_cut = (values == cut[:, None]).sum(axis=1)
        chosen_at_cut = (chosen == cut[:, None]).sum(axis=1)
        tied = np.flatnonzero(at_cut != chosen_at_cut)
        if tied.size:
            positions = positions.copy()
            for row in tied:
                line = values[row]
                better = np.flatnonzero(line > cut[row] if largest else line < cut[row])
                equal = np.flatnonzero(line == cut[row])[: k - better.size]
                positions[row] = np.concatenate([better, equal])
            chosen = np.take_along_axis(values, positions, axis=1)
    order = _order(chosen, positions, largest)
    return (
        np.take_along_axis(positions, order, axis=1).astype(np.int64),
        np.take_along_axis(chosen, order, axis=1),
    )


def top_k_rows(values: np.ndarray, k: int, largest: bool) -> tuple[np.ndarray, np.ndarray]:
    """The k largest (or smallest) entries of each row: (column positions, values), best first.

    values: [rows, n] finite floats. Returns arrays of shape [rows, min(k, n)].
    """
    rows, n = values.shape
    k = min(k, n)
    if k == n:
        return _exact(values, np.broadcast_to(np.arange(n), (rows, n)), k, largest)
    kth = n - k if largest else k - 1
    part = np.argpartition(values, kth, axis=1)
    return _exact(values, part[:, kth:] if largest else part[:, : kth + 1], k, largest)


def top_and_bottom_k_rows(values: np.ndarray, k: int):
    """`top_k_rows` for both ends. (Two single-kth argpartitions: measured faster than one
    argpartition with both kth, which numpy's introselect handles less efficiently.)"""
    return top_k_rows(values, k, True), top_k_rows(values, k, False)


def merge_top_k(
    index_a: np.ndarray,
    value_a: np.ndarray,
    index_b: np.ndarray,
    value_b: np.ndarray,
    k: int,
    largest: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Merge two row-wise top-k candidate lists (global indices) into the top k of their union."""
    index = np.concatenate([index_a, index_b], axis=1)
    value = np.concatenate([value_a, value_b], axis=1)
    order = _order(value, index, largest)[:, :k]
    return np.take_along_axis(index, order, axis=1), np.take_along_axis(value, order, axis=1)
