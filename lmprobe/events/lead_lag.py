"""Which logged signal moved first: for an event step, when each signal left its own baseline.

Each signal (grad_norm, update_norm, sharpness, loss, ... — whatever metrics.jsonl holds) is
scored with the trailing robust z of `spikes.robust_z` (median and MAD of its own previous
`window` values, so its own trend and scale are its baseline). Among its logged steps within
[event - lookback, event + lookahead] where |z| >= `z`, the one nearest the event (at or before
it if any, else the first after) is followed back through consecutive departures to the
start of that run — an earlier, separate spike inside the lookback does not count. Lead =
event step - that step (positive: it moved before the event; OLMo 2 saw gradient-norm spikes precede
loss spikes). Signals are logged at different cadences, so a lead is only as fine as the
signal's own logging interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from lmprobe.events.series import metric_series
from lmprobe.events.spikes import MIN_HISTORY, robust_z

SIGNALS = ("grad_norm", "update_norm", "sharpness", "preconditioned_sharpness", "loss")


@dataclass
class SignalLead:
    """When one signal left its baseline around an event (None: it did not, or was not logged)."""

    signal: str
    first_step: int | None
    lead: int | None  # event step - first_step
    z: float | None  # its robust z at first_step
    logged: bool  # whether the signal had any values in the lookback window

    def to_dict(self) -> dict[str, Any]:
        return {"signal": self.signal, "first_step": self.first_step, "lead": self.lead,
                "z": None if self.z is None else float(self.z), "logged": self.logged}


def which_moved_first(
    metrics: list[dict[str, Any]],
    event_step: int,
    *,
    signals: Sequence[str] = SIGNALS,
    lookback: int = 20,
    lookahead: int | None = None,
    z: float = 5.0,
    window: int = 50,
    min_history: int = MIN_HISTORY,
) -> list[SignalLead]:
    """Departure of each signal around `event_step`, earliest first (signals that did not
    move, or were not logged, last). `lookahead` defaults to `lookback`."""
    lookahead = lookback if lookahead is None else lookahead
    lo, hi = event_step - lookback, event_step + lookahead
    found = []
    for name in signals:
        steps, values = metric_series(metrics, name)
        inside = (steps >= lo) & (steps <= hi)
        if not inside.any():
            found.append(SignalLead(name, None, None, None, False))
            continue
        _, score = robust_z(values, window, min_history)
        hits = np.flatnonzero(inside & np.isfinite(score) & (np.abs(score) >= z))
        if hits.size == 0:
            found.append(SignalLead(name, None, None, None, True))
            continue
        before = hits[steps[hits] <= event_step]
        first = int(before[-1]) if before.size else int(hits[0])
        hit_set = set(hits.tolist())
        while first - 1 in hit_set:  # back to the start of the run of departures it belongs to
            first -= 1
        found.append(SignalLead(name, int(steps[first]), int(event_step - steps[first]), float(score[first]), True))
    found.sort(key=lambda s: (s.lead is None, -(s.lead or 0)))
    return found
