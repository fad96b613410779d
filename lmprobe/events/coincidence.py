"""Event-vs-state coincidence tests with effect sizes and circular-shift p-values: spikes while
sharpness >= its threshold (the in-state test), spikes within the windows of the sharpness's
instabilities (`lmprobe.events.instability`, the paper's claim as stated), and the top
opposing pairs swinging at spikes.

Each is a test of an event indicator e_t (spikes) against a state series s_t (sharpness >= its
threshold; within a lag window of an instability; a pair swings). Statistic: T = sum_t e_t s_t, the number of events that
fall in the state. Effect sizes: rate of events inside the state vs outside (ratio and
difference), and the share of events in the state next to the share of time in it.

Null distribution: circular shifts. T_k = sum_t e_{t-k mod n} s_t for every shift k = 0..n-1
(all at once by FFT: O(n log n)). Rotating one series against the other keeps the time
structure of both — the clustering of spikes, the long autocorrelated EoS windows — and only
breaks their alignment, so autocorrelation cannot fake a coincidence the way it does for a
test that shuffles time points. Under independence with a stationary (rotation-invariant)
event series, T_0 is exchangeable with the T_k. T is a small count, so ties are many:
`p_conservative` = #{k: T_k >= T_0} / n is valid but conservative (measured false-positive
rate 0.018-0.030 at alpha 0.05 for 5-10 spikes in 200-300 steps), so the reported `p` is the
mid-p, #{T_k > T_0} / n + #{T_k = T_0} / 2n (Lancaster), measured at 0.038-0.047 in those
settings and 0.07 with 40 spikes in 200 steps (1,000 AR(1)-sharpness null traces each). The
smallest p possible is about 1/n: a run needs ~200 time points before p < 0.01 can show.
tests/test_events.py checks the rate over 1,000 null traces (measured 0.037-0.049, three seeds).

Selection caveat for the pair test: the pairs must be chosen without looking at the spike
times (here: at the largest *probe* events, from the trace alone), and the spikes must come
from a logged series (training loss), not from the same trace — otherwise the null is not
independent of the state and the p-value is optimistic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from lmprobe.errors import LmprobeError
from lmprobe.events.series import forward_fill
from lmprobe.events.spikes import MAD_TO_STD


@dataclass
class ShiftTest:
    statistic: float  # T_0
    null: np.ndarray  # T_k for every shift k (k = 0 included)
    p: float  # mid-p: ties count half
    p_conservative: float  # ties count fully against


@dataclass
class Coincidence:
    """How often events fall in a state, against circular shifts of the events."""

    name: str
    n: int  # time points tested
    n_events: int
    hits: int  # events in the state
    time_in_state: float  # share of time points in the state
    events_in_state: float  # share of events in the state (NaN without events)
    rate_in: float  # events per time point inside the state
    rate_out: float  # ... and outside it
    ratio: float  # rate_in / rate_out (inf when rate_out is 0)
    difference: float  # rate_in - rate_out
    p: float  # one-sided (more events in the state than chance) circular-shift mid-p-value
    p_conservative: float  # the same with ties counted fully against
    n_shifts: int
    note: str = ""
    pair: dict[str, Any] | None = None  # for a pair test: {"by": key names, "up": key, "down": key}, for labels

    def to_dict(self) -> dict[str, Any]:
        def num(v):
            return None if v is None or not np.isfinite(v) else float(v)

        return {"name": self.name, "n": int(self.n), "n_events": int(self.n_events), "hits": int(self.hits),
                "time_in_state": num(self.time_in_state), "events_in_state": num(self.events_in_state),
                "rate_in": num(self.rate_in), "rate_out": num(self.rate_out),
                "ratio": (None if np.isnan(self.ratio) else ("inf" if np.isinf(self.ratio) else float(self.ratio))),
                "difference": num(self.difference), "p": num(self.p),
                "p_conservative": num(self.p_conservative), "n_shifts": int(self.n_shifts),
                "note": self.note,
                "pair": None if self.pair is None else {"by": self.pair["by"], "up": list(self.pair["up"]),
                                                         "down": list(self.pair["down"])}}


def circular_shift_test(events: Any, state: Any, *, alternative: str = "greater", min_shift: int = 0) -> ShiftTest:
    """p-value of T = sum(events * state) against every circular shift of `events`.

    alternative: "greater" (more overlap than chance), "less", or "two-sided" (distance of
    T from the mean of the null). min_shift: the null leaves out the shifts 0 < |k| <= min_shift
    (a shift smaller than the width of a lag window keeps the events inside it, so it is no
    null draw: counted, those near-copies of T_0 put a floor of about min_shift / n under the
    p-value whatever the data); `null` then holds shift 0 and the shifts kept."""
    e = np.asarray(events, dtype=np.float64).reshape(-1)
    s = np.asarray(state, dtype=np.float64).reshape(-1)
    if e.size != s.size:
        raise LmprobeError(f"event and state series differ in length ({e.size} vs {s.size}); align them first")
    n = e.size
    if n < 2:
        raise LmprobeError("the coincidence test needs at least 2 time points")
    # T_k = sum_t e[t - k] s[t] = ifft(conj(E) * S)[k]: a circular cross-correlation.
    null = np.fft.irfft(np.conj(np.fft.rfft(e)) * np.fft.rfft(s), n)
    integral = np.all(e == np.round(e)) and np.all(s == np.round(s))
    null = np.round(null) if integral else null
    observed = float(np.dot(e, s))
    null[0] = observed
    if min_shift > 0:
        k = np.arange(n)
        keep = (k == 0) | (np.minimum(k, n - k) > min_shift)
        if keep.sum() < 2:
            raise LmprobeError(f"no shift of {n} time points is larger than min_shift={min_shift}")
        null = null[keep]
    tol = 0.0 if integral else 1e-9 * max(1.0, float(np.abs(null).max()))
    if alternative == "greater":
        beyond, tied = null > observed + tol, np.abs(null - observed) <= tol
    elif alternative == "less":
        beyond, tied = null < observed - tol, np.abs(null - observed) <= tol
    elif alternative == "two-sided":
        distance, seen = np.abs(null - null.mean()), abs(observed - float(null.mean()))
        beyond, tied = distance > seen + tol, np.abs(distance - seen) <= tol
    else:
        raise LmprobeError(f"alternative must be 'greater', 'less' or 'two-sided', got {alternative!r}")
    return ShiftTest(observed, null, float(np.mean(beyond) + 0.5 * np.mean(tied)),
                     float(np.mean(beyond) + np.mean(tied)))


def coincidence(name: str, events: Any, state: Any, *, note: str = "", min_shift: int = 0) -> Coincidence:
    """Effect sizes and circular-shift p-value of boolean `events` falling in boolean `state`
    (min_shift: see `circular_shift_test`)."""
    e = np.asarray(events, dtype=bool).reshape(-1)
    s = np.asarray(state, dtype=bool).reshape(-1)
    test = circular_shift_test(e, s, min_shift=min_shift)
    n, n_events, hits, n_in = e.size, int(e.sum()), int((e & s).sum()), int(s.sum())
    with np.errstate(all="ignore"):
        rate_in = hits / n_in if n_in else float("nan")
        rate_out = (n_events - hits) / (n - n_in) if n - n_in else float("nan")
        ratio = rate_in / rate_out if rate_out > 0 else (float("inf") if rate_in > 0 else float("nan"))
    return Coincidence(name, n, n_events, hits, n_in / n, hits / n_events if n_events else float("nan"),
                       rate_in, rate_out, ratio, rate_in - rate_out, test.p, test.p_conservative, int(test.null.size),
                       note)


def steps_to_grid(event_steps: Any, grid: np.ndarray) -> np.ndarray:
    """Boolean [len(grid)]: which grid steps hold an event step."""
    return np.isin(grid, np.asarray(event_steps, dtype=np.int64))


def steps_to_intervals(event_steps: Any, record_steps: np.ndarray) -> np.ndarray:
    """Boolean [records - 1]: interval i holds an event when steps[i] < step <= steps[i + 1]."""
    record_steps = np.asarray(record_steps, dtype=np.int64)
    flags = np.zeros(max(0, record_steps.size - 1), dtype=bool)
    for step in np.asarray(event_steps, dtype=np.int64).reshape(-1):
        i = int(np.searchsorted(record_steps, step, side="left")) - 1
        if 0 <= i < flags.size:
            flags[i] = True
    return flags


IN_STATE_NAME = "spikes while sharpness >= threshold (in-state)"


def spikes_in_state(spike_steps: Any, grid: np.ndarray, sharpness_steps: np.ndarray, sharpness: np.ndarray,
                    threshold: np.ndarray, *, fraction: float = 1.0, name: str = IN_STATE_NAME) -> Coincidence:
    """Do spikes (steps of a series logged on `grid`) fall where sharpness >= fraction * threshold?

    This measures the *state*, not the claim that spikes follow the instabilities of the
    sharpness (crest, spike, fall: `lmprobe.events.instability`): on a run that sits at the edge
    most of the time the state covers most steps, and spikes exactly at the crests need not fall
    in it more often than chance. The state at a grid step is that of the latest sharpness
    measurement at or before it; grid steps before the first measurement, or more than one
    measurement interval after the last, are left out."""
    grid = np.asarray(grid, dtype=np.int64)
    in_eos = (np.asarray(sharpness) >= fraction * np.asarray(threshold)).astype(np.float64)
    state = forward_fill(np.asarray(sharpness_steps), in_eos, grid)
    gap = int(np.median(np.diff(sharpness_steps))) if len(sharpness_steps) > 1 else 0
    usable = np.isfinite(state) & (grid <= int(sharpness_steps[-1]) + gap)
    events = steps_to_grid(spike_steps, grid)
    note = f"state: sharpness >= {fraction:g} x threshold, forward-filled from {len(sharpness_steps)} measurements"
    return coincidence(name, events[usable], state[usable] > 0.5, note=note)


spikes_in_eos = spikes_in_state  # the earlier name


def swing_indicator(change_a: np.ndarray, change_b: np.ndarray, swing_z: float = 1.0) -> np.ndarray:
    """Intervals where two groups' mean changes have opposite signs and each exceeds `swing_z`
    robust standard deviations (1.4826 MAD) of its own changes."""
    out = np.ones(np.asarray(change_a).size, dtype=bool)
    for series in (change_a, change_b):
        series = np.asarray(series, dtype=np.float64)
        scale = MAD_TO_STD * np.median(np.abs(series - np.median(series)))
        out &= np.abs(series) >= swing_z * max(scale, 1e-12)
    return out & (np.sign(change_a) * np.sign(change_b) < 0)
