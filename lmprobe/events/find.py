"""`find_events`: spikes of a logged series and the largest probe events, each attributed,
plus the paper's coincidences tested — one call for the `lmprobe events` command.

Data flow: metrics.jsonl records -> spikes of `series` (detector of choice) and OLMo 2 spike
scores; trace -> per-interval movement (`intervals.scan_intervals`) -> largest probe events.
Every spike that falls inside the trace (step_from < spike step <= step_to) and every probe
event is an `Event`, attributed by `attribution.attribute_interval`, with the first mover of
the logged signals and the sharpness / threshold logged at or before it. Coincidences
(`coincidence`): spikes vs EoS windows when sharpness was logged, and swings of the pairs
found at the largest probe events vs spikes (pairs chosen from the trace alone, never from
the spike times, so the test's null holds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from lmprobe.events.attribution import DEFAULT_MIN_SIZE, Attribution, EventPair, attribute_interval, build_groupings
from lmprobe.events.coincidence import Coincidence, coincidence, spikes_in_state, steps_to_intervals, swing_indicator
from lmprobe.events.instability import InstabilityReport, analyse_instabilities
from lmprobe.events.group_series import group_mean_changes
from lmprobe.events.intervals import IntervalStats, scan_intervals
from lmprobe.events.lead_lag import SIGNALS, SignalLead, which_moved_first
from lmprobe.events.probe_events import ProbeEvent, largest_probe_events
from lmprobe.events.series import check_metrics, last_at_or_before, metric_series, stability_series
from lmprobe.events.spikes import SpikeEvent, detect_spikes, spike_score
from lmprobe.mining.inputs import select_window, validate_keys
from lmprobe.mining.stream import DEFAULT_CHUNK_CELLS

DEFAULT_BY = ("target", "feature-target")
PROBE_SERIES = "probe"  # series= this name: spikes of the probe's mean loss (from the trace)


@dataclass
class Event:
    """One attributed interval of the trace: a spike of the series, a probe event, or both."""

    interval: int
    kinds: list[str]  # "spike" and/or "probe"
    spike: SpikeEvent | None  # the largest spike inside the interval
    probe: ProbeEvent | None
    attribution: Attribution
    leads: list[SignalLead]
    sharpness: float | None  # logged at or before step_to (None when not logged)
    threshold: float | None

    @property
    def step(self) -> int:
        return self.spike.step if self.spike is not None else self.attribution.step_to

    @property
    def pair(self) -> EventPair | None:
        return self.attribution.pairs[0] if self.attribution.pairs else None

    def to_dict(self) -> dict[str, Any]:
        return {"interval": int(self.interval), "step": int(self.step), "kinds": list(self.kinds),
                "spike": None if self.spike is None else self.spike.to_dict(),
                "probe": None if self.probe is None else self.probe.to_dict(),
                "attribution": self.attribution.to_dict(), "leads": [s.to_dict() for s in self.leads],
                "sharpness": self.sharpness, "threshold": self.threshold}


@dataclass
class EventsReport:
    series: str
    detector: str
    by: tuple[str, ...]
    spikes: list[SpikeEvent]  # every spike of the series, in step order
    spike_scores: dict[str, float]  # OLMo 2 spike score (percent) of loss and grad_norm
    intervals: IntervalStats
    probe_events: list[ProbeEvent]
    events: list[Event]  # in step order
    baseline_share_top1: float  # median over intervals that are not events
    baseline_share_top5: float
    baseline_excess_share_top1: float
    baseline_excess_share_top5: float
    stability: tuple[str, str] | None  # (sharpness key, threshold key) used, if logged
    coincidences: list[Coincidence]
    notes: list[str] = field(default_factory=list)
    # the spikes of the series against the sharpness's instabilities (rows, lag profile, the
    # spike-triggered average), and the same for each tested pair's group-loss spikes
    instability: InstabilityReport | None = None
    group_instability: list[InstabilityReport] = field(default_factory=list)


def _median(values: np.ndarray) -> float:
    return float(np.nanmedian(values)) if np.isfinite(values).any() else float("nan")


def _probe_series(window, stats: IntervalStats) -> tuple[np.ndarray, np.ndarray]:
    """Mean probe loss per record: first row's mean plus the cumulated mean changes."""
    first = np.asarray(window.losses[window.row_start], dtype=np.float64)
    start = float(np.nanmean(first)) if np.isfinite(first).any() else 0.0
    return window.steps, start + np.concatenate([[0.0], np.cumsum(stats.mean)])


def find_events(
    metrics: Sequence[Mapping[str, Any]] | None,
    losses: Any,
    steps: Any,
    keys: Mapping[str, Any],
    *,
    by: Sequence[str] | str | None = None,
    detector: str = "mad",
    series: str = "loss",
    z: float | None = None,
    spike_window: int | None = None,
    n_probe_events: int = 5,
    movement: str = "tail_spread",
    skip_first: int = 1,
    max_spike_events: int = 20,
    min_size: int = DEFAULT_MIN_SIZE,
    top_groups: int = 5,
    n_pairs: int = 5,
    examples: int = 3,
    signals: Sequence[str] = SIGNALS,
    lookback: int | None = None,
    lead_z: float = 5.0,
    eos_fraction: float = 1.0,
    n_test_pairs: int = 3,
    swing_z: float = 1.0,
    window: tuple[int, int] | None = None,
    chunk_cells: int = DEFAULT_CHUNK_CELLS,
    alignment: tuple[Any, Any] | None = None,
) -> EventsReport:
    """Spikes of `series` (a metrics key, or "probe" for the trace's mean loss) found by
    `detector` ("mad", "olmo" or "ratio"; see `spikes`), the `n_probe_events` largest probe
    events, their attribution by each grouping in `by` (default: "target" and
    "feature-target" when the keys allow), and the coincidence tests.

    losses: [records, examples] (an np.memmap is fine); steps: one int per record; keys: name
    -> one int per example. alignment: (measurement steps, [measurements, examples] derivatives
    along the top Hessian eigenvector) when the run recorded them (run_dir/alignment), for the
    two sides of the sharp direction at each instability. `lookback` (steps) bounds the search for which signal moved first
    (default: 10 logging intervals of the series); `skip_first` leaves the first intervals out
    of the probe events (the opening of training moves everything).
    """
    records = check_metrics(metrics)
    win = select_window(losses, steps, window)
    checked = validate_keys(keys, win.n_examples)
    if by is None:
        by = [spec for spec in DEFAULT_BY if all(part in checked for part in spec.split("-"))] or [sorted(checked)[0]]
    by = [by] if isinstance(by, str) else list(by)
    groupings = build_groupings(checked, by, min_size)
    notes: list[str] = []

    all_steps = np.asarray(steps).reshape(-1).astype(np.int64)
    stats = scan_intervals(win.losses, all_steps, window=window, chunk_cells=chunk_cells)
    if int(stats.n_nonfinite.sum()):
        notes.append(f"{int(stats.n_nonfinite.sum())} non-finite loss changes in the trace were counted as 0")

    if series == PROBE_SERIES:
        series_steps, series_values = _probe_series(win, stats)
    else:
        series_steps, series_values = metric_series(records, series)
    spikes = detect_spikes(series_values, series_steps, detector=detector, z=z, window=spike_window) \
        if series_values.size else []
    if not series_values.size:
        notes.append(f"metrics hold no {series!r} values: no spikes to find (pass series='probe' to use the trace)")
    spike_scores = {}
    for name in ("loss", "grad_norm"):
        _, values = metric_series(records, name)
        if values.size:
            spike_scores[name] = spike_score(values)

    probe_events = largest_probe_events(stats, n_probe_events, movement=movement, skip_first=skip_first)
    spike_intervals: dict[int, SpikeEvent] = {}
    outside = 0
    for spike in sorted(spikes, key=lambda s: -abs(s.z))[:max_spike_events]:
        i = int(np.searchsorted(win.steps, spike.step, side="left")) - 1
        if 0 <= i < win.n_intervals:
            spike_intervals.setdefault(i, spike)
        else:
            outside += 1
    if outside:
        notes.append(f"{outside} spike(s) fall outside the trace's steps {win.steps[0]}..{win.steps[-1]}: not attributed")
    if len(spikes) > max_spike_events:
        notes.append(f"{len(spikes)} spikes found; the {max_spike_events} largest are attributed")

    if lookback is None:
        spacing = int(np.median(np.diff(series_steps))) if series_steps.size > 1 else 1
        lookback = 10 * max(1, spacing)
    stability = stability_series(records)
    probe_by_interval = {p.interval: p for p in probe_events}
    events = []
    for i in sorted(set(spike_intervals) | set(probe_by_interval)):
        spike, probe = spike_intervals.get(i), probe_by_interval.get(i)
        attribution = attribute_interval(win.losses, win.row_start + i, all_steps, groupings,
                                         top_groups=top_groups, n_pairs=n_pairs, examples=examples,
                                         chunk_cells=chunk_cells)
        event_step = spike.step if spike is not None else int(win.steps[i + 1])
        sharp = thr = None
        if stability is not None:
            sharp = last_at_or_before(stability[2], stability[3], int(win.steps[i + 1]))
            thr = last_at_or_before(stability[2], stability[4], int(win.steps[i + 1]))
        events.append(Event(i, [k for k, v in (("spike", spike), ("probe", probe)) if v is not None], spike, probe,
                            attribution, which_moved_first(records, event_step, signals=signals,
                                                           lookback=lookback, z=lead_z) if records else [],
                            sharp, thr))

    ordinary = np.ones(stats.n_intervals, dtype=bool)
    ordinary[[e.interval for e in events]] = False
    baselines = [_median(values[ordinary]) for values in (stats.share_top1, stats.share_top5,
                                                           stats.excess_share_top1, stats.excess_share_top5)]

    coincidences: list[Coincidence] = []
    instability = None
    group_instability: list[InstabilityReport] = []
    attributions = {e.interval: e.attribution for e in events}
    chosen = _chosen_pairs(groupings, [attributions[p.interval] for p in probe_events], n_test_pairs)
    changes = _pair_changes(win, groupings, chosen, chunk_cells) if chosen else None
    if stability is None:
        notes.append("no sharpness in metrics: the instability and in-state tests need sharpness logged"
                     " (sharpness.every)")
    elif series_values.size and series != PROBE_SERIES:
        sharp_steps, sharp, threshold = stability[2], stability[3], stability[4]
        pair_sets = None
        if chosen:
            pair = chosen[0]
            up, down = _pair_members(groupings, pair)
            pair_sets = (f"pair {pair.by} {pair.up.key} / {pair.down.key}", ("up", "down"), up, down)
        instability = analyse_instabilities(spikes, series_steps, sharp_steps, sharp, threshold,
                                            losses=win.losses[win.row_start:win.row_stop], trace_steps=win.steps,
                                            alignment=alignment, pair_sets=pair_sets,
                                            name=f"{series} spikes follow instabilities")
        if chosen:
            instability.pair = {"by": chosen[0].by, "up": tuple(int(v) for v in chosen[0].up.key),
                                "down": tuple(int(v) for v in chosen[0].down.key)}
        if instability.test is not None:
            coincidences.append(instability.test)
        coincidences.append(spikes_in_state([s.step for s in spikes], series_steps, sharp_steps, sharp, threshold,
                                            fraction=eos_fraction))
        for j, pair in enumerate(chosen):
            group_spikes = _group_spikes(win, changes[:, 2 * j], changes[:, 2 * j + 1], detector, z, spike_window)
            found = analyse_instabilities(group_spikes, win.steps, sharp_steps, sharp, threshold,
                                          name=f"pair {pair.by} {pair.up.key} / {pair.down.key} group-loss spikes"
                                               " follow instabilities")
            if found.test is not None:
                found.test.pair = {"by": pair.by, "up": tuple(int(v) for v in pair.up.key),
                                   "down": tuple(int(v) for v in pair.down.key), "kind": "instability"}
                coincidences.append(found.test)
            group_instability.append(found)
    if spikes and series != PROBE_SERIES:
        coincidences += _pair_swings_at_spikes(win, chosen, changes, spikes, swing_z)
    elif spikes:
        notes.append("pair swings are not tested against spikes of the probe's own mean loss (not independent)")
    return EventsReport(
        series=series, detector=detector, by=tuple(by), spikes=spikes, spike_scores=spike_scores,
        intervals=stats, probe_events=probe_events, events=events, baseline_share_top1=baselines[0],
        baseline_share_top5=baselines[1], baseline_excess_share_top1=baselines[2],
        baseline_excess_share_top5=baselines[3], stability=None if stability is None else stability[:2],
        coincidences=coincidences, notes=notes, instability=instability, group_instability=group_instability,
    )


def _chosen_pairs(groupings, probe_attributions: list[Attribution], n_test_pairs: int) -> list[EventPair]:
    """The top pair of each of the largest probe events (from the trace alone, never from the
    spike times or the sharpness, so the tests' nulls hold), first `n_test_pairs` distinct."""
    chosen: dict[tuple, EventPair] = {}
    for attribution in probe_attributions:
        for pair in attribution.pairs[:1]:  # the same two groups, whichever rose, are one pair
            chosen.setdefault((pair.by, frozenset((pair.up.key, pair.down.key))), pair)
    return list(chosen.values())[:n_test_pairs]


def _pair_members(groupings, pair: EventPair) -> tuple[np.ndarray, np.ndarray]:
    index = groupings[pair.by]
    out = []
    for move in (pair.up, pair.down):
        gid = int(np.flatnonzero(np.all(index.keys == np.asarray(move.key), axis=1))[0])
        out.append(np.flatnonzero(index.group_of == gid))
    return out[0], out[1]


def _pair_changes(win, groupings, chosen_pairs: list[EventPair], chunk_cells) -> np.ndarray:
    """[intervals, 2 x pairs]: mean change of each pair's up group and down group."""
    members = [m for pair in chosen_pairs for m in _pair_members(groupings, pair)]
    return group_mean_changes(win, members, chunk_cells=chunk_cells)


def _group_spikes(win, change_a: np.ndarray, change_b: np.ndarray, detector, z, spike_window) -> list[SpikeEvent]:
    """Spikes (same detector) of either group's mean loss on the trace's steps, in step order,
    each placed at its onset (the first flagged record): a swing often shifts a group's level
    for many records, and the detector's peak then lands late."""
    from dataclasses import replace

    found: dict[int, SpikeEvent] = {}
    for change in (change_a, change_b):
        level = np.concatenate([[0.0], np.cumsum(np.where(np.isfinite(change), change, 0.0))])
        for spike in detect_spikes(level, win.steps, detector=detector, z=z, window=spike_window):
            onset = replace(spike, step=spike.start_step)
            if onset.step not in found or abs(onset.z) > abs(found[onset.step].z):
                found[onset.step] = onset
    return [found[k] for k in sorted(found)]


def _pair_swings_at_spikes(win, chosen_pairs: list[EventPair], changes, spikes, swing_z) -> list[Coincidence]:
    """Do the top pairs of the largest probe events swing at the intervals holding spikes?"""
    if not chosen_pairs:
        return []
    at_spike = steps_to_intervals([s.step for s in spikes], win.steps)
    swings = [swing_indicator(changes[:, 2 * j], changes[:, 2 * j + 1], swing_z) for j in range(len(chosen_pairs))]
    out = [coincidence("top pairs swing at spikes", at_spike, np.any(swings, axis=0),
                       note=f"any of {len(chosen_pairs)} pair(s) from the largest probe events swings"
                            f" (opposite moves > {swing_z:g} robust sd)")]
    for pair, swing in zip(chosen_pairs, swings):
        test = coincidence(f"pair {pair.by} {pair.up.key} / {pair.down.key} swings at spikes", at_spike, swing)
        test.pair = {"by": pair.by, "up": tuple(int(v) for v in pair.up.key),
                     "down": tuple(int(v) for v in pair.down.key)}
        out.append(test)
    return out
