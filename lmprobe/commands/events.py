"""`lmprobe events PATH`: the loss spikes of a run, who carried them, and whether they coincide
with the edge of stability and with opposing groups swinging.

PATH is a run directory (any domain) with a trace and metrics.jsonl. Each event (a spike of
--series, or one of the largest probe events) is shown with the groups whose loss rose and fell
most, the share of the rise carried by the top 1% / 5% of examples, the opposing pair at that
interval and the sharpness / threshold logged there; then the coincidence tests, each against
circular shifts of the spike train (one-sided mid-p):

* spikes follow instabilities (the paper's claim, when sharpness was logged). Rule, fixed in
  lmprobe/events/instability.py: an instability is a sharpness sample with sharpness/threshold
  >= 1.0 that is a local maximum of the samples and is followed within 2 samples by a fall of
  >= 10% of its value; a spike is aligned with it when it lies within [-1, +2] sharpness
  sampling intervals of the crest sample ([-5, +10] steps when sharpness is measured every 5
  steps: the true crest is known only to the sampling resolution, and the loss peaks while the
  sharpness falls). Statistic: the spikes inside the windows, against every circular shift
  larger than the window;
  the same for spikes of the top pairs' group losses (trace steps). Then one row per
  instability: its spikes' lags and, over its trace interval, the mean loss change of the
  examples on each side of the top eigenvector (when the run recorded it) and of the top pair's
  two groups, the difference with a Welch 95% interval, and whether they moved in opposite
  directions; the lag profile; and the spike-triggered average of sharpness/threshold at lags
  -5..+5 sampling intervals with its null band (2.5-97.5% over the shifts);
* spikes while sharpness >= threshold (in-state): how often spikes fall in the state, not the
  claim (a run at the edge spends most steps in it);
* pair swings at spikes.

--replay STEP reruns the steps up to the spike at logged step STEP from the checkpoint before
it, with the run's batches and without the spike's batches, and says whether the spike comes
from the data, from the state, or both (lmprobe.events.replay).
"""

from __future__ import annotations

import argparse

from lmprobe.commands.common import (add_path_arguments, open_path, parse_steps, positive, positive_float,
                                     stderr_progress, warn)
from lmprobe.errors import LmprobeError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("events", help="loss spikes, who carried them, and their coincidences",
                              description=__doc__.split("\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    add_path_arguments(p, "a run directory")
    p.add_argument("--by", action="append", help="grouping(s) to attribute events by (repeatable; default: the "
                                                 "run's groupings that its keys allow)")
    p.add_argument("--detector", choices=("mad", "olmo", "ratio"), default="mad",
                   help="spike rule: rolling median/MAD z (mad), OLMo 2's 7 sd rule (olmo), grad-norm ratio (ratio)")
    p.add_argument("--series", default="loss", help="what spikes are found in: a metrics.jsonl key (loss, "
                                                    "grad_norm, ...) or 'probe' (the trace's mean loss)")
    p.add_argument("--z", type=positive_float, default=None, help="spike threshold (default: the detector's)")
    p.add_argument("--top", type=positive, default=5, help="groups and pairs per event, and probe events")
    p.add_argument("--steps", metavar="A:B", help="only trace records with A <= step <= B")
    p.add_argument("--min-size", type=positive, default=5, help="smallest group considered")
    p.add_argument("--json", action="store_true", help="print the report as JSON (warnings go to stderr)")
    p.add_argument("--replay", type=positive, metavar="STEP",
                   help="replay the spike at logged step STEP with and without its batches")
    p.add_argument("--window", type=positive, default=None,
                   help="with --replay: batches to leave out, ending at the spike (default: the logged interval)")
    p.set_defaults(run=run)


def usable_groupings(view, keys) -> list[str]:
    """The view's groupings whose keys this run has (e.g. no feature2 in a short-context probe)."""
    return [g for g in view.groupings if all(part in keys for part in g.split("-"))]


def run(args: argparse.Namespace, console) -> int:
    view = open_path(args)
    if view.run_dir is None:
        raise LmprobeError(f"{view.checkpoint} is a lone checkpoint: events need a run directory with a trace and "
                           "metrics.jsonl (the folder cli/train_*.py wrote)")
    if args.replay is not None:
        return replay(args, view, console)
    from lmprobe.report.events_table import events_json_text, render_events

    report, trace, metrics = compute_events(view, by=args.by, detector=args.detector, series=args.series, z=args.z,
                                            top=args.top, window=parse_steps(args.steps), min_size=args.min_size)
    run_dir = view.run_dir
    label = view.key_label
    if args.json:
        for note in report.notes:
            warn(note)
        print(events_json_text(report, view.describe, indent=1))
    else:
        console.print(f"[bold]{run_dir}[/]: {trace.n_records} trace records x {trace.n_examples:,} probe examples, "
                      f"{len(metrics or [])} logged steps", highlight=False, soft_wrap=True)
        render_events(report, view.describe, label, console=console, by=report.by[0])
    return 0


def compute_events(view, *, by=None, detector: str = "mad", series: str = "loss", z: float | None = None,
                   top: int = 5, window=None, min_size: int = 5):
    """The events report of a run directory, as `lmprobe events` prints it (shared with `lmprobe
    plot`, so a figure shows the same spikes, instabilities and pairs): (report, trace, metrics)."""
    from lmprobe.analysis.losses import check_trace_fits
    from lmprobe.events import find_events
    from lmprobe.trace import has_trace, read_trace
    from lmprobe.train.alignment import has_alignment, read_alignment
    from lmprobe.train.metrics_log import read_metrics

    run_dir = view.run_dir
    if not has_trace(run_dir):
        raise LmprobeError(f"{run_dir} recorded no trace (trace.every was 0): events need per-example losses; "
                           "train with trace.every > 0")
    metrics_path = run_dir / "metrics.jsonl"
    metrics = read_metrics(metrics_path) if metrics_path.is_file() else None
    if metrics is None:
        warn(f"{metrics_path} is missing: spikes are looked for in the probe's mean loss")
    trace = read_trace(run_dir)
    check_trace_fits(trace, view.probe.n_examples, run_dir)
    if trace.incomplete:
        warn("the trace ends in a partial row (a run cut short); it was left out")
    keys = view.keys()
    by = by or usable_groupings(view, keys)
    series = series if metrics is not None else "probe"
    alignment = None
    if has_alignment(run_dir):
        recorded = read_alignment(run_dir)
        if recorded.n_records and recorded.n_examples == trace.n_examples:
            alignment = (recorded.steps, recorded.losses)
    report = find_events(metrics, trace.losses, trace.steps, keys, by=by, detector=detector, series=series,
                         z=z, n_probe_events=top, top_groups=top, n_pairs=top, window=window, min_size=min_size,
                         alignment=alignment)
    return report, trace, metrics


def replay(args: argparse.Namespace, view, console) -> int:
    import json

    from lmprobe.events.replay import replay_spike
    from lmprobe.report.events_table import render_replay

    result = replay_spike(view.run_dir, args.replay, window=args.window, progress=stderr_progress("replaying"))
    if args.json:
        from lmprobe.report.events_table import _clean

        for note in result.notes:
            warn(note)
        print(json.dumps(_clean(result.to_dict()), indent=1))
    else:
        render_replay(result, console=console)
    return 0
