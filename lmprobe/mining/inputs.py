"""Check and normalise what the miner is handed: the loss matrix, its steps, the example keys.

Every mistake a user can make here becomes a one-line `LmprobeError` that says what to do,
so the miner itself can assume a well-formed window of at least two records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from lmprobe.errors import LmprobeError

BY_SEPARATOR = "-"


@dataclass(frozen=True)
class TraceWindow:
    """The rows [row_start, row_stop) of `losses` that mining looks at, with their steps.

    `losses` is kept as handed in (often an np.memmap); nothing here reads its values.
    """

    losses: Any
    row_start: int
    row_stop: int
    steps: np.ndarray  # int64, one per selected row
    n_examples: int

    @property
    def n_records(self) -> int:
        return self.row_stop - self.row_start

    @property
    def n_intervals(self) -> int:
        return self.n_records - 1


def _as_2d(losses: Any) -> Any:
    """Keep arrays (and memmaps) as they are; turn nested lists into an array."""
    if not hasattr(losses, "shape") or not hasattr(losses, "__getitem__"):
        losses = np.asarray(losses, dtype=np.float32)
    if len(losses.shape) != 2:
        raise LmprobeError(
            f"the loss matrix must be 2-D [records x examples], got shape {tuple(losses.shape)}"
        )
    return losses


def select_window(
    losses: Any, steps: Any, window: tuple[int, int] | None = None, *, needs: str = "mining needs"
) -> TraceWindow:
    """Pick the complete records (rows present in both losses and steps) inside `window`.

    `needs` names the caller in error messages ("mining needs", "per-example statistics need").

    A record counts only when both its loss row and its step exist: the trainer appends the
    loss row first, so a reader may see one more loss row than steps while a run is going.
    `window=(A, B)` keeps rows with A <= step <= B; None for either end leaves it open.
    """
    losses = _as_2d(losses)
    steps = np.asarray(steps).reshape(-1)
    if steps.size and not np.issubdtype(steps.dtype, np.integer):
        raise LmprobeError(f"steps must be integers, got dtype {steps.dtype}")
    steps = steps.astype(np.int64, copy=False)
    n_records = min(int(losses.shape[0]), int(steps.size))
    n_examples = int(losses.shape[1])
    if n_records < 2:
        raise LmprobeError(
            f"the trace has {n_records} record(s); {needs} at least 2 to take a change"
            " — train longer or record the trace more often (trace.every)"
        )
    if n_examples < 1:
        raise LmprobeError(f"the trace has no examples (0 columns); {needs} at least one")
    steps = steps[:n_records]
    if np.any(np.diff(steps) <= 0):
        bad = int(np.flatnonzero(np.diff(steps) <= 0)[0])
        raise LmprobeError(
            f"trace steps must increase row by row, but step {steps[bad + 1]} follows"
            f" {steps[bad]} (row {bad + 1}); was the trace appended to by two runs?"
        )
    row_start, row_stop = 0, n_records
    if window is not None:
        try:
            lo, hi = (None if v is None else int(v) for v in window)
        except (TypeError, ValueError):
            raise LmprobeError(f"window must be a pair of steps (A, B), got {window!r}") from None
        row_start = 0 if lo is None else int(np.searchsorted(steps, lo, side="left"))
        row_stop = n_records if hi is None else int(np.searchsorted(steps, hi, side="right"))
        selected = max(0, row_stop - row_start)
        if selected < 2:
            shown = f"({'' if lo is None else lo}, {'' if hi is None else hi})"
            raise LmprobeError(
                f"the window steps={shown} selects {selected} record(s) (the trace covers"
                f" steps {steps[0]}..{steps[-1]}); {needs} at least 2 — widen the window"
            )
    return TraceWindow(
        losses=losses,
        row_start=row_start,
        row_stop=row_stop,
        steps=steps[row_start:row_stop].copy(),
        n_examples=n_examples,
    )


def validate_keys(keys: Mapping[str, Any], n_examples: int) -> dict[str, np.ndarray]:
    """Return the keys as int64 arrays, one value per example, or say what is wrong."""
    if not isinstance(keys, Mapping) or not keys:
        raise LmprobeError("keys must be a non-empty dict of name -> one integer per example")
    checked: dict[str, np.ndarray] = {}
    for name, values in keys.items():
        array = np.asarray(values)
        if array.ndim != 1 or array.shape[0] != n_examples:
            raise LmprobeError(
                f"key {name!r} has shape {array.shape}; it needs one value per example"
                f" ({n_examples}), the trace's number of columns"
            )
        if not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
            raise LmprobeError(f"key {name!r} must hold integers, got dtype {array.dtype}")
        checked[str(name)] = array.astype(np.int64, copy=False)
    return checked


def parse_by(by: str, keys: Mapping[str, np.ndarray]) -> tuple[str, ...]:
    """Split a grouping spec like "feature-target" into key names, all of which must exist."""
    names = tuple(by.split(BY_SEPARATOR)) if isinstance(by, str) and by else ()
    if not names or any(name not in keys for name in names) or len(set(names)) != len(names):
        available = sorted(keys)
        examples = [n for n in ("target", "feature-target", "feature2-feature-target")
                    if all(part in keys for part in n.split(BY_SEPARATOR))]
        raise LmprobeError(
            f"unknown grouping by={by!r}: use key names joined by '-', e.g. "
            + ", ".join(repr(e) for e in examples or available)
            + f" (available keys: {', '.join(available)})"
        )
    return names
