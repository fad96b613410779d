"""`lmprobe examples PATH`: every probe example's story over training, from the run's trace.

Per example (definitions follow the papers; `lmprobe.dynamics` states them exactly):
  confidence, variability   mean and std over records of p = exp(-loss) (Dataset Cartography)
  forgetting events         learned -> not learned between records, learned = loss <= ln 2 (Toneva et al.)
  age of acquisition        the step the smoothed loss curve, in log step, first crosses halfway
                            from its start to its end (after Chang, Tu & Bergen 2024)
  Rho-1 class               High/Low loss at the start -> at the end: H->H, L->H, H->L, L->L (Lin et al.)
  final loss, late std      the last record's loss; its std over the last quarter of the records
Prints class shares, the most forgotten and the latest-learned examples and the groups with most
forgetting; writes one row per example as parquet (with the probe's keys) and a data map PNG.
"""

from __future__ import annotations

import argparse

from lmprobe.commands.common import add_path_arguments, open_run_writing, parse_steps, positive, warn


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("examples", help="per-example statistics: forgetting, acquisition, Rho-1 classes",
                              description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    add_path_arguments(p, "a run directory (with a trace)")
    p.add_argument("--out", metavar="DIR", help="folder for examples.parquet and data_map.png (default: RUN/examples)")
    p.add_argument("--steps", metavar="A:B", help="only records with A <= step <= B")
    p.add_argument("--by", help="key to summarise groups by (default: target)")
    p.add_argument("--top", type=positive, default=10, help="examples and groups to show")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, console) -> int:
    from lmprobe.analysis.losses import load_losses
    from lmprobe.commands.mine import report_written
    from lmprobe.dynamics import data_map_figure, example_statistics, write_parquet
    from lmprobe.report.examples_table import examples_to_json, render_examples

    view, out = open_run_writing(args, "reads a run's trace", "examples")
    matrix = load_losses(view)
    for message in matrix.warnings:
        warn(message)
    stats = example_statistics(matrix.losses, matrix.steps, window=parse_steps(args.steps))
    keys = view.keys()
    written = [write_parquet(stats, out / "examples.parquet", keys=keys), data_map_figure(stats, out / "data_map.png")]
    if args.json:
        print(examples_to_json(stats, view.describe, view.key_label, keys, args.top, by=args.by, indent=1))
    else:
        console.print(f"[bold]{matrix.source}[/]: {len(stats.steps)} records x {matrix.losses.shape[1]:,} "
                      f"probe examples", highlight=False, soft_wrap=True)
        render_examples(stats, view.describe, view.key_label, keys, console, args.top, by=args.by)
    report_written(written, console, to_stderr=args.json)
    return 0
