"""Movers: the examples whose loss rose most and fell most between consecutive records.

This is the paper's selection criterion — the largest positive / negative per-example loss
change across one recorded interval. Per interval the top-k lists come straight from the
streaming pass; over the whole window an example is ranked by its single largest rise (or
fall) within it, with the interval where that happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from lmprobe.mining.inputs import TraceWindow
from lmprobe.mining.stream import TraceScan, locate_extreme
from lmprobe.mining.topk import top_k_rows


@dataclass
class Movers:
    """Top risers and fallers per interval and over the window.

    Per interval i (from record i to i+1): `riser_index[i]` are example indices, largest rise
    first, with their changes in `riser_change[i]`; fallers likewise, most negative first.
    Over the window: `window_riser_index` ranks examples by their largest one-interval rise,
    `window_riser_step_to` says at which record it ended.
    """

    step_from: np.ndarray  # int64 [intervals]
    step_to: np.ndarray  # int64 [intervals]
    riser_index: np.ndarray  # int64 [intervals, top]
    riser_change: np.ndarray  # float [intervals, top]
    faller_index: np.ndarray
    faller_change: np.ndarray
    window_riser_index: np.ndarray  # int64 [top]
    window_riser_change: np.ndarray
    window_riser_step_to: np.ndarray
    window_faller_index: np.ndarray
    window_faller_change: np.ndarray
    window_faller_step_to: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {
            name: np.asarray(getattr(self, name)).tolist()
            for name in self.__dataclass_fields__
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Movers":
        values = {}
        for name in cls.__dataclass_fields__:
            is_change = name.endswith("change")
            values[name] = np.asarray(data[name], dtype=np.float64 if is_change else np.int64)
        return cls(**values)


def window_movers(window: TraceWindow, scan: TraceScan, keep: np.ndarray, top: int) -> dict[str, np.ndarray]:
    """Rank kept examples by their largest single-interval rise and fall in the window."""
    kept = np.flatnonzero(keep)
    top = min(top, kept.size)
    found: dict[str, np.ndarray] = {}
    for prefix, values, block, largest in (
        ("window_riser", scan.max_rise, scan.max_rise_block, True),
        ("window_faller", scan.max_fall, scan.max_fall_block, False),
    ):
        positions, change = top_k_rows(values[kept][None, :], top, largest)
        index = kept[positions[0]]
        interval = np.array([locate_extreme(window, int(i), int(block[i]), scan.block_intervals, largest)
                             for i in index], dtype=np.int64)
        found[f"{prefix}_index"] = index
        found[f"{prefix}_change"] = change[0].astype(np.float64)
        found[f"{prefix}_step_to"] = window.steps[interval + 1].astype(np.int64)
    return found
