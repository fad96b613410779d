"""Series out of metrics.jsonl records: one signal's (steps, values), and the stability pair.

metrics.jsonl holds one dict per logged step, and not every record has every key (sharpness
is measured every N steps, eval metrics every M); a signal's series is the records that have
it with a finite number. Records with the same step keep the last value.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from lmprobe.errors import LmprobeError

# (value key, threshold key): the sharpness that the run's optimizer is judged by, in order of
# preference. Under Adam `sharpness_threshold` is None and the preconditioned pair applies.
STABILITY_PAIRS = (
    ("sharpness", "sharpness_threshold"),
    ("preconditioned_sharpness", "preconditioned_threshold"),
    ("sharpness", "two_over_lr"),
)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def check_metrics(metrics: Any) -> list[dict[str, Any]]:
    if metrics is None:
        return []
    if not isinstance(metrics, Iterable) or isinstance(metrics, (str, bytes, dict)):
        raise LmprobeError("metrics must be a list of dicts (the records of metrics.jsonl)")
    records = list(metrics)
    for i, record in enumerate(records):
        if not isinstance(record, dict) or "step" not in record:
            raise LmprobeError(f"metrics record {i} is not a dict with a 'step'; pass read_metrics(run/metrics.jsonl)")
    return records


def metric_series(metrics: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps int64, values float64) of the records holding a finite `key`, sorted by step."""
    found: dict[int, float] = {}
    for record in metrics:
        value = _number(record.get(key))
        if value is not None:
            found[int(record["step"])] = value
    steps = np.array(sorted(found), dtype=np.int64)
    return steps, np.array([found[s] for s in steps], dtype=np.float64)


def stability_series(metrics: list[dict[str, Any]]) -> tuple[str, str, np.ndarray, np.ndarray, np.ndarray] | None:
    """(value key, threshold key, steps, sharpness, threshold) for the first pair of
    STABILITY_PAIRS logged together at some step; None when the run logged no sharpness."""
    for value_key, threshold_key in STABILITY_PAIRS:
        rows = [(int(r["step"]), _number(r.get(value_key)), _number(r.get(threshold_key))) for r in metrics]
        rows = [(s, v, t) for s, v, t in rows if v is not None and t is not None]
        if rows:
            merged = {s: (v, t) for s, v, t in rows}
            steps = np.array(sorted(merged), dtype=np.int64)
            return (value_key, threshold_key, steps, np.array([merged[s][0] for s in steps]),
                    np.array([merged[s][1] for s in steps]))
    return None


def last_at_or_before(steps: np.ndarray, values: np.ndarray, step: int) -> float | None:
    """The latest value logged at or before `step`, or None."""
    at = int(np.searchsorted(steps, step, side="right")) - 1
    return float(values[at]) if at >= 0 else None


def forward_fill(source_steps: np.ndarray, source_values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """The latest source value at or before each grid step (NaN before the first)."""
    at = np.searchsorted(source_steps, grid, side="right") - 1
    out = np.full(grid.shape, np.nan)
    ok = at >= 0
    out[ok] = source_values[at[ok]]
    return out
