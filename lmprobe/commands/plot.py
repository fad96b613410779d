"""`lmprobe plot RUN`: the figures of a run, for any domain, each with the data it plots beside
it (NAME.json) and a one-line summary:

  paper          training loss and the top pairs' group losses (one-vs-rest: the rest as one
                 series) on one time axis, sharpness / threshold on a twin axis, loss spikes and
                 instability crests marked (the paper's figure)
  sharpness      each logged sharpness against its threshold (2/lr GD, 2(1+beta)/lr momentum,
                 38/lr preconditioned Adam; batch sharpness under SGD), its error bound as a band
  loss_changes   per-example loss changes at the largest event and at an ordinary interval,
                 the top-1% cut marked
  around_spikes  peri-event averages around loss spikes: sharpness / threshold and the top
                 pair's loss gap, with the circular-shift null band
  turnover       which grouping explains the strongest pairs in each window (the complexity
                 statistic of `lmprobe mine`)
  training, opposing_pairs, pair-NN (image grids), pair-NN-contexts (text tables)

The spikes, instabilities and null bands are those `lmprobe events` reports; the pairs and the
turnover those `lmprobe mine` reports (same defaults). --log also sends the figures to the run's
TensorBoard log (train.report_to=tensorboard)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lmprobe.commands.common import add_path_arguments, non_negative, open_run_writing, parse_steps, positive
from lmprobe.errors import LmprobeError

FORMATS = ("png", "svg", "pdf")
PAPER_PAIRS = 2  # pairs whose group losses go on the paper figure (4 lines beside the loss)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("plot", help="figures: the paper's figure, sharpness, loss changes, spikes, turnover, pairs",
                              description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_path_arguments(p, "a run directory")
    p.add_argument("--out", help="folder for the figures (default: RUN/figures)")
    p.add_argument("--format", default="png", help=f"comma-separated: {', '.join(FORMATS)} (default: png)")
    p.add_argument("--by", help="grouping (default: the domain's first)")
    p.add_argument("--top", type=positive, default=4, help="opposing pairs to draw")
    p.add_argument("--steps", metavar="A:B")
    p.add_argument("--seed", type=non_negative, default=0, help="the miner's seed (as in lmprobe mine)")
    p.add_argument("--log", action="store_true", help="also write the figures as images to the run's TensorBoard log")
    p.set_defaults(run=run)


def parse_formats(text: str) -> list[str]:
    formats = [f.strip().lower().lstrip(".") for f in text.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise LmprobeError(f"--format {text!r}: use one or more of {', '.join(FORMATS)}, comma-separated (e.g. png,svg)")
    return list(dict.fromkeys(formats))


def run(args: argparse.Namespace, console) -> int:
    from lmprobe.analysis.losses import load_losses
    from lmprobe.commands.events import compute_events
    from lmprobe.commands.mine import complexity_ladder, report_written, write_group_grids
    from lmprobe.mining import mine
    from lmprobe.report import figures
    from lmprobe.report.mining_table import group_label
    from lmprobe.train.metrics_log import read_metrics

    formats = parse_formats(args.format)
    view, out = open_run_writing(args, "draws a whole run", "figures")
    if args.log:
        from lmprobe.report.tensorboard_images import tracker_dir

        tracker_dir(view.run_dir)  # fail before drawing when the run has no TensorBoard log
    metrics = read_metrics(view.run_dir / "metrics.jsonl")
    first = formats[0]
    written = [figures.training_curves(metrics, out / f"training.{first}", formats)]
    matrix = load_losses(view)
    keys = view.keys()
    by = args.by if args.by and args.by != "cluster" else view.groupings[0]
    result = mine(matrix.losses, matrix.steps, keys, by=by, window=parse_steps(args.steps),
                  top=args.top, seed=args.seed, n_clusters=0, ladder=complexity_ladder(view.groupings, keys))

    def label(group: int) -> str:
        return group_label(result.key_names, result.groups[group].key, view.key_label)

    written.append(figures.opposing_pairs(result, label, out / f"opposing_pairs.{first}", top=args.top,
                                          formats=formats))
    written += write_group_grids(view, result, args.top, out_dir=out, formats=formats)
    report, trace, _ = compute_events(view, window=parse_steps(args.steps))
    drawn = draw_paper_figures(view, metrics, report, trace, result, matrix, keys, label, out, formats, args.top)
    written = [Path(p).with_suffix(f".{fmt}") for p in written for fmt in formats]  # every format of each
    for item in drawn:
        console.print(f"[bold]{item.name}[/]: {item.summary}", highlight=False, soft_wrap=True)
        written += [p for p in item.paths if p.suffix != ".json"]
    report_written([str(p) for p in written], console, to_stderr=False)
    if args.log:
        from lmprobe.report.tensorboard_images import log_images

        logged = log_images(view.run_dir, [p for p in written if str(p).endswith(".png")],
                            step=int(metrics[-1]["step"]) if metrics else 0)
        console.print(f"logged {len(logged)} figure(s) to {logged[0].parent if logged else view.run_dir}",
                      highlight=False, soft_wrap=True)
    return 0


def draw_paper_figures(view, metrics, report, trace, result, matrix, keys, label, out, formats, top):
    """The figures of lmprobe.report.paper_figures from the events report and the mining result."""
    from lmprobe.report import paper_figures as pf

    spikes = [int(s.step) for s in report.spikes]
    crests = [int(r.instability.crest_step) for r in report.instability.instabilities] if report.instability else []
    loss = pf.Series("train loss", [m["step"] for m in metrics if m.get("loss") is not None],
                     [m["loss"] for m in metrics if m.get("loss") is not None])
    pair_lines = pair_loss_series(result, keys, matrix, label, PAPER_PAIRS)
    ratio = sharpness_ratio(metrics)
    drawn = [pf.paper_figure(loss, [s for pair in pair_lines for s in pair], ratio, spikes, crests, out, formats,
                             title=f"{view.run_dir.name}: training loss, the top opposing groups and sharpness")]
    drawn.append(pf.sharpness_figure(sharpness_curves(metrics), out, formats))
    drawn.append(loss_change_figure(report, trace, out, formats))
    drawn.append(around_spikes_figure(report, metrics, pair_lines[0] if pair_lines else None, out, formats))
    if result.complexity is not None and result.complexity.windows:
        drawn.append(pf.turnover_figure(result.complexity, out, formats))
    if view.images([0]) is None:
        drawn += context_tables(view, result, top, out, formats)
    return drawn


def pair_loss_series(result, keys, matrix, label, n_pairs):
    """(group a, group b) mean-loss series of the top pairs; a one-vs-rest pair's b is its rest."""
    from lmprobe.mining import rest_members
    from lmprobe.report.paper_figures import Series

    steps = np.asarray(result.steps)
    rows = np.searchsorted(np.asarray(matrix.steps), steps)
    lines = []
    for pair in result.pairs[:n_pairs]:
        a = result.groups[pair.group_a]
        first = Series(f"{label(pair.group_a)} (n={a.size})", steps, a.mean_loss)
        if pair.is_one_vs_rest:
            members = rest_members(result, pair, keys)
            values = np.nanmean(np.asarray(matrix.losses[rows][:, members], dtype=np.float64), axis=1)
            second = Series(f"rest of its feature (n={members.size})", steps, values)
        else:
            b = result.groups[pair.group_b]
            second = Series(f"{label(pair.group_b)} (n={b.size})", steps, b.mean_loss)
        lines.append((first, second))
    return lines


def sharpness_ratio(metrics):
    from lmprobe.events.series import stability_series
    from lmprobe.report.paper_figures import Series

    found = stability_series(metrics)
    if found is None:
        return None
    value_key, threshold_key, steps, value, threshold = found
    return Series(f"{value_key} / {threshold_key}", steps, value / threshold)


CURVES = (("sharpness", "sharpness_threshold", "sharpness_error_bound"),
          ("preconditioned_sharpness", "preconditioned_threshold", "preconditioned_error_bound"),
          ("batch_sharpness", "sharpness_threshold", None))


def sharpness_curves(metrics):
    """(value, threshold, error bound) series of each sharpness the run logged."""
    def points(key, steps=None):
        return [(m["step"], m[key]) for m in metrics
                if m.get(key) is not None and (steps is None or m["step"] in steps)]

    curves = []
    for value_key, threshold_key, bound_key in CURVES:
        value = points_series(value_key.replace("_", " "), points(value_key))
        if value is None:
            continue
        threshold = points_series(threshold_key.replace("_", " "), points(threshold_key, set(value.steps)))
        bound = points_series("error bound", points(bound_key)) if bound_key else None
        curves.append((value, threshold, bound))
    return curves


def points_series(name, points):
    from lmprobe.report.paper_figures import Series

    return Series(name, [p[0] for p in points], [p[1] for p in points]) if points else None


def loss_change_figure(report, trace, out, formats):
    """The per-example changes at the event interval that moved most and at the ordinary interval
    whose mean |change| is the median of the non-event intervals."""
    from lmprobe.report.paper_figures import change_histogram

    stats = report.intervals
    event_intervals = sorted({e.interval for e in report.events})
    ordinary = np.setdiff1d(np.arange(stats.n_intervals), event_intervals)
    biggest = max(event_intervals, key=lambda i: stats.abs_mean[i]) if event_intervals else int(np.argmax(stats.abs_mean))
    pool = ordinary if ordinary.size else np.arange(stats.n_intervals)
    middle = pool[int(np.argmin(np.abs(stats.abs_mean[pool] - np.median(stats.abs_mean[pool]))))]

    def changes(i):
        steps = np.asarray(trace.steps)
        a, b = np.searchsorted(steps, [stats.step_from[i], stats.step_to[i]])
        return np.asarray(trace.losses[b], np.float64) - np.asarray(trace.losses[a], np.float64)

    return change_histogram(changes(biggest), f"largest event, steps {stats.step_from[biggest]}->{stats.step_to[biggest]}",
                            changes(middle), f"ordinary interval, steps {stats.step_from[middle]}->{stats.step_to[middle]}",
                            out, formats, intervals=[(stats.step_from[i], stats.step_to[i]) for i in (biggest, middle)])


def around_spikes_figure(report, metrics, top_pair, out, formats):
    """Sharpness / threshold (from `lmprobe events`) and the top pair's swing (the change of group
    a's loss minus group b's per trace record, the same circular-shift null) around the spikes."""
    from lmprobe.events.instability import spike_triggered_average
    from lmprobe.report.paper_figures import triggered_figure

    panels = []
    sta = report.instability.sta if report.instability is not None else None
    spikes = [s.step for s in report.spikes]
    grid = np.array([m["step"] for m in metrics if m.get("loss") is not None], dtype=np.int64)
    if sta is not None and sta.n_spikes:
        panels.append(("sharpness / threshold around loss spikes", "sharpness / threshold", sta))
        half_width = int(np.max(np.abs(sta.lags)))
    else:
        half_width = 10 * max(1, int(np.median(np.diff(grid)))) if grid.size > 1 else 10
    if top_pair is not None and spikes:
        a, b = top_pair
        swing = np.diff(np.asarray(a.values, float) - np.asarray(b.values, float))  # per trace record
        avg = spike_triggered_average(spikes, grid, np.asarray(a.steps[1:], np.int64), swing, np.ones_like(swing),
                                      half_width)
        if avg.n_spikes:
            panels.append((f"swing of the top pair: change of {a.label} minus {b.label}"[:100],
                           "change of the loss gap per record (nats)", avg))
    n = max((p[2].n_spikes for p in panels), default=0)
    return triggered_figure(panels, n, out, formats)


def context_tables(view, result, top, out, formats):
    """Text pairs as small tables of their contexts (the image domains get grids instead)."""
    from lmprobe.report.escape import visible_text
    from lmprobe.report.mining_table import side_examples, side_label
    from lmprobe.report.paper_figures import contexts_figure

    drawn = []
    for rank, pair in enumerate(result.pairs[:top], start=1):
        sides = []
        for side in ("a", "b"):
            rows = []
            for i in side_examples(result, pair, side)[:5]:
                context, target = view.describe(i)
                rows.append(f"{visible_text(context)[-48:]} [{target}]")
            sides.append((side_label(result, pair, side, view.key_label), rows))
        drawn.append(contexts_figure(rank, f"pair {rank}: corr {pair.corr:.2f}, strength {pair.strength:.3g}",
                                     sides, out, formats))
    return drawn
