"""The largest probe events whatever their sign: intervals where per-example losses moved most.

A swing of two small opposing groups barely moves the mean loss (the issue's example: the 1%
that rose most rose by 2.6 nats, the 1% that fell most fell by 3.0, the mean moved -0.09),
so events are ranked by an aggregate of the *spread* of the changes, never their mean. The
default, tail_spread = (mean change of the top 1%) - (mean change of the bottom 1%), is blind
to a shift of every loss (early training lowers them all) and grows with any concentrated
swing. Each event also gets a robust z of its movement against all intervals (median, MAD).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lmprobe.events.intervals import IntervalStats
from lmprobe.events.spikes import MAD_TO_STD


@dataclass
class ProbeEvent:
    """One interval of the trace ranked by how much its per-example losses moved."""

    interval: int  # index of the interval (record interval -> interval + 1) in the window
    step_from: int
    step_to: int
    movement: float
    z: float  # robust z of `movement` among all intervals
    mean: float  # mean change (small for a pure swing)
    top_rise: float  # mean change of the 1% that rose most
    top_fall: float  # mean change of the 1% that fell most

    def to_dict(self) -> dict[str, Any]:
        return {"interval": int(self.interval), "step_from": int(self.step_from), "step_to": int(self.step_to),
                "movement": float(self.movement), "z": float(self.z), "mean": float(self.mean),
                "top_rise": float(self.top_rise), "top_fall": float(self.top_fall)}


def largest_probe_events(stats: IntervalStats, n: int = 5, *, movement: str = "tail_spread",
                         skip_first: int = 0) -> list[ProbeEvent]:
    """The `n` intervals with the largest movement, largest first. `skip_first` leaves out the
    first intervals (the opening of training moves everything)."""
    score = stats.movement(movement)
    usable = np.isfinite(score)
    usable[: max(0, skip_first)] = False
    if not usable.any():
        return []
    centre = float(np.median(score[usable]))
    scale = max(MAD_TO_STD * float(np.median(np.abs(score[usable] - centre))), 1e-12 * (1 + abs(centre)))
    order = np.flatnonzero(usable)[np.argsort(-score[usable], kind="stable")][:n]
    return [ProbeEvent(int(i), int(stats.step_from[i]), int(stats.step_to[i]), float(score[i]),
                       float((score[i] - centre) / scale), float(stats.mean[i]),
                       float(stats.top_rise[i]), float(stats.top_fall[i])) for i in order]
