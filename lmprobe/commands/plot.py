"""`lmprobe plot RUN`: PNG figures of a run — training curves with sharpness against its
threshold, the loss trajectories of the top opposing pairs, and (for image domains) a grid of
each pair's images."""

from __future__ import annotations

import argparse

from lmprobe.commands.common import add_path_arguments, non_negative, open_run_writing, parse_steps, positive


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("plot", help="figures: training curves, sharpness, opposing pairs",
                              description=__doc__.split("\n\n")[0])
    add_path_arguments(p, "a run directory")
    p.add_argument("--out", help="folder for the PNG files (default: RUN/figures)")
    p.add_argument("--by", help="grouping (default: the domain's first)")
    p.add_argument("--top", type=positive, default=4, help="opposing pairs to draw")
    p.add_argument("--steps", metavar="A:B")
    p.add_argument("--seed", type=non_negative, default=0, help="the miner's seed (as in lmprobe mine)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, console) -> int:
    from lmprobe.analysis.losses import load_losses
    from lmprobe.commands.mine import report_written, write_group_grids
    from lmprobe.mining import mine
    from lmprobe.report import figures
    from lmprobe.report.mining_table import group_label
    from lmprobe.train.metrics_log import read_metrics

    view, out = open_run_writing(args, "draws a whole run", "figures")
    written = [figures.training_curves(read_metrics(view.run_dir / "metrics.jsonl"), out / "training.png")]
    matrix = load_losses(view)
    by = args.by if args.by and args.by != "cluster" else view.groupings[0]
    result = mine(matrix.losses, matrix.steps, view.keys(), by=by, window=parse_steps(args.steps),
                  top=args.top, seed=args.seed, n_clusters=0)

    def label(group: int) -> str:
        return group_label(result.key_names, result.groups[group].key, view.key_label)

    written.append(figures.opposing_pairs(result, label, out / "opposing_pairs.png", top=args.top))
    written += write_group_grids(view, result, args.top, out_dir=out)
    report_written(written, console, to_stderr=False)
    return 0
