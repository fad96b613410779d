"""Which window to mine: leave out the initial loss collapse unless the user chose a window.

Early in training every loss falls together (GPT-2 from ~9 to ~1 nats in tens of steps). Those
intervals are not noise the test can absorb: each group collapses at its own pace (rare
targets last), so after regressing out the global trend every group keeps a large, smooth
residual there. Those residuals dominate correlations and autocorrelations (Bartlett's factor
then shrinks every z), and real opposing pairs that a window starting after the collapse finds
go missing (measured: 2 of 5 planted rare-target pairs found over the whole run, 5 of 5 after).

Rule: with g_i the mean change of all examples per interval and s_i the cross-sectional spread
of the changes (both per step, smoothed by a running median of 5 against single spikes), an
interval belongs to the transient while

    |g_i| > max(LATER_MULTIPLE * L, SPREAD_SHARE * s_i),    L = median |g| over the last half,

i.e. while the shared fall is both far above its later level and a sizeable share of how much
examples move. The window starts at the first interval where that stops holding (a loss
spike later on does not move it), and never leaves out more than half of the intervals or
fewer than 2 * MIN_INTERVALS intervals' worth of data. The profile is measured on at most
PROFILE_COLUMNS columns (evenly spaced contiguous slices, finite throughout), enough for a
cross-sectional mean, so this costs a small fraction of the mining pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from lmprobe.mining.inputs import TraceWindow

LATER_MULTIPLE = 20.0
SPREAD_SHARE = 0.5
SMOOTH = 5
PROFILE_COLUMNS = 1 << 13
PROFILE_SLICES = 8
MIN_KEPT_INTERVALS = 16  # 2 x the pair test's MIN_INTERVALS


@dataclass
class WindowChoice:
    """The window that was mined and why: requested by the user, the whole trace, or the trace
    after its initial loss collapse."""

    start_step: int
    stop_step: int
    how: str  # "requested", "whole trace", "after transient"
    reason: str  # one sentence for people
    transient_end_step: int | None = None  # first step after the collapse, when one was found

    def to_dict(self) -> dict[str, Any]:
        return {"start_step": int(self.start_step), "stop_step": int(self.stop_step),
                "how": self.how, "reason": self.reason,
                "transient_end_step": None if self.transient_end_step is None else int(self.transient_end_step)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "WindowChoice":
        end = data.get("transient_end_step")
        return cls(int(data["start_step"]), int(data["stop_step"]), str(data["how"]),
                   str(data["reason"]), None if end is None else int(end))


def profile_columns(n_examples: int) -> list[tuple[int, int]]:
    """Contiguous column slices, evenly spread, PROFILE_COLUMNS columns in all (or every column)."""
    if n_examples <= PROFILE_COLUMNS:
        return [(0, n_examples)]
    width = PROFILE_COLUMNS // PROFILE_SLICES
    starts = np.linspace(0, n_examples - width, PROFILE_SLICES).astype(np.int64)
    return [(int(s), int(s) + width) for s in starts]


def change_profile(window: TraceWindow) -> tuple[np.ndarray, np.ndarray] | None:
    """(mean change, spread of changes) per interval over a column sample; None if no sampled
    column is finite throughout."""
    parts = [np.asarray(window.losses[window.row_start : window.row_stop, a:b], dtype=np.float64)
             for a, b in profile_columns(window.n_examples)]
    losses = np.concatenate(parts, axis=1)
    losses = losses[:, np.isfinite(losses).all(axis=0)]
    if losses.shape[1] == 0:
        return None
    changes = np.diff(losses, axis=0)
    return changes.mean(axis=1), changes.std(axis=1)


def running_median(values: np.ndarray, width: int) -> np.ndarray:
    half = width // 2
    padded = np.pad(values, half, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)
    return np.median(windows, axis=1)


def transient_end(mean_change: np.ndarray, spread: np.ndarray, steps: np.ndarray) -> int:
    """Index of the first interval after the initial collapse (0: none found), see the module."""
    n = mean_change.size
    if n < 2 * MIN_KEPT_INTERVALS:
        return 0
    gap = np.diff(steps).astype(np.float64)
    fall = running_median(np.abs(mean_change) / gap, SMOOTH)
    spread = running_median(spread / gap, SMOOTH)
    later = float(np.median(np.abs(mean_change[n // 2 :]) / gap[n // 2 :]))
    transient = fall > np.maximum(LATER_MULTIPLE * later, SPREAD_SHARE * spread)
    if not transient[0]:
        return 0
    calm = np.flatnonzero(~transient)
    end = int(calm[0]) if calm.size else n
    return min(end, n // 2, n - MIN_KEPT_INTERVALS)


def choose_window(
    window: TraceWindow, requested: tuple | None, skip_transient: bool
) -> tuple[TraceWindow, WindowChoice]:
    """The window to mine: as requested, else the trace less its initial collapse."""
    steps = window.steps
    if requested is not None:
        lo, hi = requested
        shown = f"{'' if lo is None else lo}:{'' if hi is None else hi}"
        return window, WindowChoice(int(steps[0]), int(steps[-1]), "requested",
                                    f"steps {shown} as requested")
    whole = WindowChoice(int(steps[0]), int(steps[-1]), "whole trace", "the whole trace")
    if not skip_transient:
        return window, whole
    profile = change_profile(window)
    if profile is None:
        return window, whole
    cut = transient_end(*profile, steps)
    if cut == 0:
        whole.reason = "the whole trace (no initial loss collapse found)"
        return window, whole
    trimmed = TraceWindow(window.losses, window.row_start + cut, window.row_stop, steps[cut:].copy(),
                          window.n_examples)
    reason = (f"from step {steps[cut]}: steps {steps[0]}..{steps[cut]}, where the mean loss fell"
              f" far faster than later, left out (pass a window / --steps to override)")
    return trimmed, WindowChoice(int(steps[cut]), int(steps[-1]), "after transient", reason,
                                 int(steps[cut]))
