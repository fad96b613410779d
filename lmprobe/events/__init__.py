"""Loss-spike events, who carried them, and the paper's headline claim as a statistic.

Rosenfeld & Risteski (2024) claim the loss spikes and oscillations of the edge of stability
coincide with small groups of outliers with opposing signals swinging against each other, and
that those few examples carry the spike. The miner (`lmprobe.mining`) finds pairs whose losses
are anti-correlated over a whole window; a one-off swing escapes it. This package looks at
single intervals instead, domain-agnostically (arrays in, dataclasses out):

* `spikes` — spikes of a 1-D series (training loss, probe mean loss, grad norm): a trailing
  robust z (median / MAD), OLMo 2's spike rule and spike score, a gradient-norm ratio rule;
* `intervals`, `probe_events` — one streamed pass over the trace measuring how each interval
  moved the per-example losses, and the intervals that moved them most whatever the sign;
* `attribution` — for one interval: share of the gross loss increase carried by the top
  1% / 5% of examples, the groups that rose / fell most, the opposing pairs at that event;
  `lead_lag` — which logged signal left its baseline first;
* `coincidence` — spikes vs edge-of-stability windows and pair swings vs spikes, with effect
  sizes and circular-shift p-values calibrated on autocorrelated nulls;
* `find.find_events` — all of it in one call, returning an `EventsReport`
  (`lmprobe.report.events_table` renders it).
"""

from lmprobe.events.attribution import Attribution, EventPair, GroupMove, attribute_interval, build_groupings
from lmprobe.events.coincidence import (
    Coincidence,
    ShiftTest,
    circular_shift_test,
    coincidence,
    spikes_in_eos,
    steps_to_intervals,
    swing_indicator,
)
from lmprobe.events.find import Event, EventsReport, find_events
from lmprobe.events.intervals import IntervalStats, scan_intervals
from lmprobe.events.lead_lag import SignalLead, which_moved_first
from lmprobe.events.probe_events import ProbeEvent, largest_probe_events
from lmprobe.events.spikes import SpikeEvent, detect_spikes, grad_norm_spike_score, robust_z, score_series, spike_score

__all__ = [
    "Attribution", "Coincidence", "Event", "EventPair", "EventsReport", "GroupMove", "IntervalStats",
    "ProbeEvent", "ShiftTest", "SignalLead", "SpikeEvent", "attribute_interval", "build_groupings",
    "circular_shift_test", "coincidence", "detect_spikes", "find_events", "grad_norm_spike_score",
    "largest_probe_events", "robust_z", "scan_intervals", "score_series", "spike_score", "spikes_in_eos",
    "steps_to_intervals", "swing_indicator", "which_moved_first",
]
