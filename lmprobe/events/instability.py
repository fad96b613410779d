"""The paper's claim 2 as a statistic: loss spikes *follow the instabilities* of the sharpness.

Rosenfeld & Risteski say the edge of stability "exactly coincides" with the loss spikes: the
sharpness crests above its threshold, the loss spikes, the sharpness falls (a catapult). Being
*in* the state sharpness >= threshold is not that claim — on a run that hovers at the edge the
state covers most of the steps and spikes fall in it no more often than chance, however exactly
they sit at the crests (`coincidence.spikes_in_state` still measures it, under that name).
This module tests the claim itself. The rule was fixed before looking at any real run:

* **Instability** (`find_instabilities`): on the sampled ratio r_j = sharpness_j / threshold_j
  (sharpness is measured every Δ steps), sample j is a crest when r_j >= CREST_RATIO (1.0),
  r_j > r_{j-1} and r_j >= r_{j+1} (a local maximum; the first sample of a plateau), and it
  is followed by a fall: min(r_{j+1}, ..., r_{j+FALL_SAMPLES}) <= (1 - FALL_FRACTION) r_j
  (a fall of at least 10% of its value within the next 2 samples). The first and last samples
  are never crests (no neighbour to compare with).
* **Aligned**: a spike at step s is aligned with the crest sampled at step c when
  c - LAG_BEFORE x Δ <= s <= c + LAG_AFTER x Δ, i.e. [-5, +10] steps for Δ = 5. Why: the true
  crest lies anywhere between the neighbouring samples (c - Δ, c + Δ) — known only to the
  sampling resolution — and in a catapult the loss peaks while the sharpness falls, shortly
  after the true crest; so the window covers one sampling interval before the crest sample and
  two after. Δ is the median interval between sharpness samples.
* **Statistic**: T = the number of spikes that fall in the union of the windows; share T / n
  spikes; the null by circular shift of the spike train against the (fixed) windows over every
  step from the first to the last sharpness sample (`coincidence.coincidence`: FFT, mid-p,
  one-sided), so the time structure of both series is kept and only their alignment broken.
  Shifts no larger than the window's width (before + after) are left out of the null: they
  keep the spikes inside their windows, so they are near-copies of the observed count, not null
  draws, and counted they floor the p-value at about width / (2 n) — 0.02 on a 300-step run,
  whatever the data. The false-positive rate with them left out is measured in
  tests/test_instability.py.
  Also reported: the instabilities followed by at least one spike, and the lag profile (how
  many spikes at each lag s - c to the nearest crest). The same test runs on the spikes of the
  top pairs' group losses (`find.find_events`: the mean loss of each group on the trace's
  steps, same detector, each spike placed at its onset, since a swing often shifts a group's
  level for many records). Those pairs are picked at the largest probe events, which a
  catapult tends to be: read that row as descriptive, not as an independent test.
* **Spike-triggered average** (`spike_triggered_average`): the mean of r (linearly interpolated
  between samples) at lags -W..W steps around the spikes, W = STA_HALF_WIDTH x Δ, with
  pointwise null bands (2.5-97.5 percentiles) from every circular shift of the spike train.
  A catapult shows as a crest above 1 just before lag 0 and a trough after it.
* **Opposing signals at each instability** (`sides_at`): over the trace interval of the
  instability (the interval holding its largest aligned spike, else crest sample -> next
  sample), the difference of the mean loss changes of two example sets — the two sides of the
  top Hessian eigenvector (sign of d loss_i / d v at the crest's measurement, when the run
  recorded it) and the top opposing pair's two groups — with a Welch t 95% interval, and
  whether the two means move in opposite directions.

Sparse sampling in numbers: with Δ = 5 the crest step is known to ±5 steps, so a lag window of
a few steps would miss true coincidences; [-Δ, +2Δ] is 3Δ + 1 steps wide per instability.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from lmprobe.errors import LmprobeError
from lmprobe.events.coincidence import Coincidence, coincidence, steps_to_grid
from lmprobe.events.spikes import quiet_nan_warnings

CREST_RATIO = 1.0  # r0: a crest is a sample with sharpness / threshold >= r0 that is a local max ...
FALL_FRACTION = 0.10  # f: ... followed by a fall to <= (1 - f) x its ratio ...
FALL_SAMPLES = 2  # ... within this many following samples
LAG_BEFORE = 1  # a: aligned when crest - a*Δ <= spike step <= crest + b*Δ (Δ = sampling interval, steps)
LAG_AFTER = 2  # b
STA_HALF_WIDTH = 5  # spike-triggered average over lags -W..W steps, W = this many sampling intervals
STA_BAND = (2.5, 97.5)  # pointwise null band of the spike-triggered average, percentiles over shifts
MAX_STA_CELLS = 20_000_000  # shifts x spikes x lags held at once for the band; beyond, shifts are subsampled
CONFIDENCE = 0.95  # of the Welch intervals at each instability

RULE_TEXT = (f"instability = a sharpness sample with sharpness/threshold >= {CREST_RATIO:g} that is a local maximum"
             f" and is followed within {FALL_SAMPLES} samples by a fall of >= {100 * FALL_FRACTION:.0f}% of its value;"
             f" a spike is aligned with it when it lies within [-{LAG_BEFORE}, +{LAG_AFTER}] sharpness intervals"
             f" of the crest sample")


@dataclass
class Instability:
    crest_step: int  # the step of the crest sample
    crest_ratio: float  # sharpness / threshold there
    fall_step: int  # the first later sample that shows the fall
    fall_ratio: float  # the ratio at that sample
    sample: int  # index of the crest among the sharpness samples
    lowest_ratio: float = float("nan")  # the lowest ratio within FALL_SAMPLES samples after the crest

    def to_dict(self) -> dict[str, Any]:
        return {"crest_step": int(self.crest_step), "crest_ratio": float(self.crest_ratio),
                "fall_step": int(self.fall_step), "fall_ratio": float(self.fall_ratio), "sample": int(self.sample),
                "lowest_ratio": float(self.lowest_ratio)}


@dataclass
class Window:
    """The lag window in steps: [crest - before, crest + after]."""

    before: int
    after: int
    interval: int  # Δ, the median interval between sharpness samples

    def to_dict(self) -> dict[str, int]:
        return {"before": int(self.before), "after": int(self.after), "sampling_interval": int(self.interval)}


@dataclass
class SideComparison:
    """Two example sets' mean loss changes over one interval, and their difference."""

    what: str  # "sharp direction" or "pair <up> / <down>"
    labels: tuple[str, str]
    step_from: int
    step_to: int
    mean_a: float
    mean_b: float
    n_a: int
    n_b: int
    difference: float  # mean_a - mean_b
    low: float  # Welch t interval of the difference
    high: float
    opposite: bool  # the two means have opposite signs

    @property
    def significant(self) -> bool:
        return bool(np.isfinite(self.low) and (self.low > 0 or self.high < 0))

    def to_dict(self) -> dict[str, Any]:
        return {"what": self.what, "labels": list(self.labels), "step_from": int(self.step_from),
                "step_to": int(self.step_to), "mean_a": float(self.mean_a), "mean_b": float(self.mean_b),
                "n_a": int(self.n_a), "n_b": int(self.n_b), "difference": float(self.difference),
                "interval": [float(self.low), float(self.high)], "confidence": CONFIDENCE,
                "opposite": bool(self.opposite), "significant": self.significant}


@dataclass
class InstabilityRow:
    instability: Instability
    spike_lags: list[int]  # lags (spike - crest, steps) of the spikes aligned with it
    sides: list[SideComparison] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**self.instability.to_dict(), "spike_lags": [int(v) for v in self.spike_lags],
                "sides": [s.to_dict() for s in self.sides]}


@dataclass
class TriggeredAverage:
    lags: np.ndarray  # steps
    mean: np.ndarray  # mean sharpness / threshold at each lag over the spikes
    low: np.ndarray  # null band over circular shifts
    high: np.ndarray
    n_spikes: int

    def to_dict(self) -> dict[str, Any]:
        def clean(a):
            return [None if not np.isfinite(v) else float(v) for v in a]

        return {"lags": [int(v) for v in self.lags], "mean": clean(self.mean), "null_low": clean(self.low),
                "null_high": clean(self.high), "band_percentiles": list(STA_BAND), "n_spikes": int(self.n_spikes)}


@dataclass
class InstabilityReport:
    rule: str
    window: Window
    instabilities: list[InstabilityRow]
    n_spikes: int  # spikes inside the tested steps
    aligned: int  # of them, within a window
    followed: int  # instabilities with at least one aligned spike
    lag_profile: dict[int, int]  # lag -> spikes at that lag to their nearest crest (within the window)
    test: Coincidence | None
    sta: TriggeredAverage | None
    notes: list[str] = field(default_factory=list)
    pair: dict[str, Any] | None = None  # the pair compared at each instability: {"by", "up", "down"}

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "pair": None if self.pair is None else
                {"by": self.pair["by"], "up": list(self.pair["up"]), "down": list(self.pair["down"])}, "constants": {"crest_ratio": CREST_RATIO, "fall_fraction": FALL_FRACTION,
                                                 "fall_samples": FALL_SAMPLES, "lag_before": LAG_BEFORE,
                                                 "lag_after": LAG_AFTER, "sta_half_width": STA_HALF_WIDTH},
                "window": self.window.to_dict(), "instabilities": [r.to_dict() for r in self.instabilities],
                "n_spikes": int(self.n_spikes), "aligned": int(self.aligned), "followed": int(self.followed),
                "lag_profile": {str(k): int(v) for k, v in sorted(self.lag_profile.items())},
                "test": None if self.test is None else self.test.to_dict(),
                "spike_triggered_average": None if self.sta is None else self.sta.to_dict(),
                "notes": list(self.notes)}


# --------------------------------------------------------------------------- the rule
def sampling_interval(sharpness_steps: Any) -> int:
    steps = np.asarray(sharpness_steps, dtype=np.int64)
    return max(1, int(np.median(np.diff(steps)))) if steps.size > 1 else 1


def default_window(sharpness_steps: Any) -> Window:
    delta = sampling_interval(sharpness_steps)
    return Window(LAG_BEFORE * delta, LAG_AFTER * delta, delta)


def find_instabilities(sharpness_steps: Any, sharpness: Any, threshold: Any, *, crest_ratio: float = CREST_RATIO,
                       fall_fraction: float = FALL_FRACTION, fall_samples: int = FALL_SAMPLES) -> list[Instability]:
    """Crests of sharpness / threshold at or above `crest_ratio` that are local maxima of the
    samples and are followed within `fall_samples` samples by a fall of >= `fall_fraction`."""
    steps = np.asarray(sharpness_steps, dtype=np.int64).reshape(-1)
    ratio = np.asarray(sharpness, dtype=np.float64).reshape(-1) / np.asarray(threshold, dtype=np.float64).reshape(-1)
    if steps.size != ratio.size:
        raise LmprobeError(f"sharpness has {ratio.size} values but {steps.size} steps")
    found = []
    for j in range(1, ratio.size - 1):
        r = ratio[j]
        if not (np.isfinite(r) and r >= crest_ratio and r > ratio[j - 1] and r >= ratio[j + 1]):
            continue
        after = ratio[j + 1: j + 1 + fall_samples]
        fell = np.flatnonzero(after <= (1.0 - fall_fraction) * r)
        if fell.size:
            found.append(Instability(int(steps[j]), float(r), int(steps[j + 1 + fell[0]]),
                                     float(after[fell[0]]), j, float(np.nanmin(after))))
    return found


def window_state(grid: np.ndarray, crests: Sequence[int], window: Window) -> np.ndarray:
    """Boolean [len(grid)]: grid steps within [crest - before, crest + after] of some crest."""
    grid = np.asarray(grid, dtype=np.int64)
    state = np.zeros(grid.size, dtype=bool)
    for c in crests:
        state |= (grid >= c - window.before) & (grid <= c + window.after)
    return state


def spike_lags(spike_steps: Sequence[int], crests: Sequence[int], window: Window) -> list[tuple[int | None, bool]]:
    """Per spike, (lag = spike - crest, aligned): the nearest crest whose window holds the spike
    when one does (aligned), else the nearest crest (ties: the earlier crest); (None, False)
    without crests."""
    crests = np.asarray(sorted(crests), dtype=np.int64)
    out: list[tuple[int | None, bool]] = []
    for s in spike_steps:
        if crests.size == 0:
            out.append((None, False))
            continue
        lag = int(s) - crests
        inside = (lag >= -window.before) & (lag <= window.after)
        pool = lag[inside] if inside.any() else lag
        out.append((int(pool[int(np.argmin(np.abs(pool) * 2 + (pool < 0)))]), bool(inside.any())))
    return out


def tested_grid(grid: Any, sharpness_steps: Any) -> np.ndarray:
    """The steps of `grid` from the first to the last sharpness sample (where crests can be seen)."""
    grid = np.asarray(grid, dtype=np.int64)
    steps = np.asarray(sharpness_steps, dtype=np.int64)
    return grid[(grid >= steps[0]) & (grid <= steps[-1])] if steps.size else grid[:0]


def spikes_after_instabilities(name: str, spike_steps: Sequence[int], grid: Any, sharpness_steps: Any,
                               instabilities: Sequence[Instability], window: Window) -> Coincidence:
    """The circular-shift test of spikes falling within the windows of the instabilities."""
    grid = tested_grid(grid, sharpness_steps)
    state = window_state(grid, [i.crest_step for i in instabilities], window)
    events = steps_to_grid(spike_steps, grid)
    min_shift = window.before + window.after
    if grid.size <= 2 * min_shift + 2:
        min_shift = 0
    note = (f"{len(instabilities)} instabilities; window [-{window.before}, +{window.after}] steps around each crest"
            f" (sharpness sampled every {window.interval} steps); null: circular shifts by more than"
            f" {min_shift} steps")
    return coincidence(name, events, state, note=note, min_shift=min_shift)


# --------------------------------------------------------------------------- spike-triggered average
def spike_triggered_average(spike_steps: Sequence[int], grid: Any, sharpness_steps: Any, sharpness: Any,
                            threshold: Any, half_width: int) -> TriggeredAverage:
    """Mean sharpness / threshold at lags -half_width..half_width around the spikes (linear
    interpolation between samples; NaN outside the sampled range), with a pointwise null band
    over every circular shift of the spike train on `grid` (the tested steps)."""
    grid = tested_grid(grid, sharpness_steps)
    steps = np.asarray(sharpness_steps, dtype=np.int64)
    ratio = np.asarray(sharpness, dtype=np.float64) / np.asarray(threshold, dtype=np.float64)
    lags = np.arange(-half_width, half_width + 1)
    at = np.flatnonzero(steps_to_grid(spike_steps, grid))
    nan = np.full(lags.size, np.nan)
    if at.size == 0 or grid.size == 0:
        return TriggeredAverage(lags, nan, nan.copy(), nan.copy(), 0)

    def profile(positions: np.ndarray) -> np.ndarray:  # [shifts, lags]
        where = grid[positions][..., None] + lags  # steps, [shifts, spikes, lags]
        values = np.interp(where, steps, ratio)
        values[(where < steps[0]) | (where > steps[-1])] = np.nan
        with np.errstate(all="ignore"), quiet_nan_warnings():
            return np.nanmean(values, axis=-2)

    shifts = np.arange(grid.size)
    if shifts.size * at.size * lags.size > MAX_STA_CELLS:  # a long run: an even subsample of the shifts
        shifts = np.unique(np.linspace(0, grid.size - 1, max(2, MAX_STA_CELLS // (at.size * lags.size))).astype(int))
    positions = (at[None, :] + shifts[:, None]) % grid.size
    null = profile(positions)
    with quiet_nan_warnings():
        low, high = np.nanpercentile(null, STA_BAND, axis=0)
    return TriggeredAverage(lags, null[0], low, high, int(at.size))


# --------------------------------------------------------------------------- opposing signals at an instability
def compare_sets(losses: Any, row_from: int, row_to: int, set_a: np.ndarray, set_b: np.ndarray, *, what: str,
                 labels: tuple[str, str], steps: np.ndarray) -> SideComparison | None:
    """Mean loss change of each set from record row_from to row_to, difference and Welch interval."""
    from scipy import stats

    changes = []
    for members in (set_a, set_b):
        members = np.asarray(members, dtype=np.int64)
        if members.size < 2:
            return None
        before = np.asarray(losses[row_from], dtype=np.float64)[members]
        after = np.asarray(losses[row_to], dtype=np.float64)[members]
        change = after - before
        change = change[np.isfinite(change)]
        if change.size < 2:
            return None
        changes.append(change)
    a, b = changes
    diff = float(a.mean() - b.mean())
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    se = float(np.sqrt(va + vb))
    if se > 0:
        df = (va + vb) ** 2 / (va**2 / (a.size - 1) + vb**2 / (b.size - 1))
        half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, df)) * se
    else:
        half = 0.0
    return SideComparison(what, labels, int(steps[row_from]), int(steps[row_to]), float(a.mean()), float(b.mean()),
                          int(a.size), int(b.size), diff, diff - half, diff + half,
                          bool(np.sign(a.mean()) * np.sign(b.mean()) < 0))


def instability_rows(losses: Any, steps: np.ndarray, instabilities: Sequence[Instability], window: Window,
                     spikes: Sequence[Any], *, alignment: tuple[np.ndarray, Any] | None = None,
                     pair_sets: tuple[str, tuple[str, str], np.ndarray, np.ndarray] | None = None,
                     ) -> list[InstabilityRow]:
    """One row per instability: its aligned spikes (lags) and, over its trace interval, the two
    sides of the sharp direction and the top pair's groups compared.

    Trace interval: the one holding the largest (|z|) aligned spike (steps[i] < spike <=
    steps[i+1]); without one, from the last record at or before the crest sample to the first
    at or after the next sample. alignment: (measurement steps, [measurements, examples]
    derivatives along the top eigenvector); the sides are the signs at the latest measurement
    at or before the crest (|derivative| <= NEGLIGIBLE x the row's largest: neither side)."""
    from lmprobe.train.alignment import alignment_signs

    steps = np.asarray(steps, dtype=np.int64)
    rows = []
    for inst in instabilities:
        near = [s for s in spikes if inst.crest_step - window.before <= s.step <= inst.crest_step + window.after]
        row = InstabilityRow(inst, [int(s.step - inst.crest_step) for s in near])
        rows.append(row)
        if steps.size < 2:
            continue
        if near:
            spike = max(near, key=lambda s: abs(s.z))
            i = int(np.searchsorted(steps, spike.step, side="left")) - 1
            r0, r1 = i, i + 1
        else:
            r0 = int(np.searchsorted(steps, inst.crest_step, side="right")) - 1
            r1 = int(np.searchsorted(steps, inst.crest_step + window.interval, side="left"))
        if not (0 <= r0 < r1 < steps.size):
            continue
        if alignment is not None:
            a_steps, a_values = alignment
            m = int(np.searchsorted(np.asarray(a_steps), inst.crest_step, side="right")) - 1
            if m >= 0:
                signs = alignment_signs(np.asarray(a_values[m], dtype=np.float64))
                found = compare_sets(losses, r0, r1, np.flatnonzero(signs == 1), np.flatnonzero(signs == 0),
                                     what="sharp direction", labels=("along +v", "along -v"), steps=steps)
                if found is not None:
                    row.sides.append(found)
        if pair_sets is not None:
            what, labels, set_a, set_b = pair_sets
            found = compare_sets(losses, r0, r1, set_a, set_b, what=what, labels=labels, steps=steps)
            if found is not None:
                row.sides.append(found)
    return rows


def analyse_instabilities(spikes: Sequence[Any], grid: Any, sharpness_steps: Any, sharpness: Any, threshold: Any, *,
                          losses: Any = None, trace_steps: Any = None,
                          alignment: tuple[np.ndarray, Any] | None = None,
                          pair_sets: tuple[str, tuple[str, str], np.ndarray, np.ndarray] | None = None,
                          name: str = "spikes follow instabilities") -> InstabilityReport:
    """Everything above for one spike train (SpikeEvent-like: .step, .z) logged on `grid`."""
    sharpness_steps = np.asarray(sharpness_steps, dtype=np.int64)
    window = default_window(sharpness_steps)
    instabilities = find_instabilities(sharpness_steps, sharpness, threshold)
    tested = tested_grid(grid, sharpness_steps)
    inside = [s for s in spikes if tested.size and tested[0] <= s.step <= tested[-1]]
    notes = []
    if len(inside) < len(spikes):
        notes.append(f"{len(spikes) - len(inside)} spike(s) outside the sharpness samples' steps: not tested")
    crests = [i.crest_step for i in instabilities]
    lags = spike_lags([s.step for s in inside], crests, window)
    aligned = [lag for lag, ok in lags if ok]
    profile: dict[int, int] = {}
    for lag in aligned:
        profile[lag] = profile.get(lag, 0) + 1
    test = spikes_after_instabilities(f"{name} (within [-{window.before}, +{window.after}] steps of a crest)",
                                      [s.step for s in inside], grid, sharpness_steps, instabilities, window) \
        if tested.size >= 2 else None
    sta = spike_triggered_average([s.step for s in inside], grid, sharpness_steps, sharpness, threshold,
                                  STA_HALF_WIDTH * window.interval) if tested.size >= 2 else None
    rows = instability_rows(losses, np.asarray(trace_steps), instabilities, window, inside, alignment=alignment,
                            pair_sets=pair_sets) if losses is not None else \
        [InstabilityRow(i, [int(s.step - i.crest_step) for s in inside
                            if i.crest_step - window.before <= s.step <= i.crest_step + window.after])
         for i in instabilities]
    return InstabilityReport(RULE_TEXT, window, rows, len(inside), len(aligned),
                             sum(1 for r in rows if r.spike_lags), profile, test, sta, notes)
