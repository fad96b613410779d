"""`lmprobe mine PATH`: opposing signals in a run, shown the way the paper shows them.

PATH may be
  * a run directory (of any domain): its recorded probe trace is mined; a run that recorded
    none is replayed by evaluating the probe at each of its checkpoints;
  * a checkpoint of a run: the probe is evaluated at it and its neighbouring checkpoints;
  * a checkpoint with no neighbours (a lone save_pretrained folder, with --data): K lookahead
    steps are taken from it and the loss changes they cause are mined (see lmprobe.analysis.replay).
"""

from __future__ import annotations

import argparse

from lmprobe.errors import LmprobeError

from lmprobe.discovery.command import add_arguments as add_discovery_arguments
from lmprobe.discovery.command import prepare as prepare_discovery

from lmprobe.commands.common import (add_path_arguments, check_output_file, non_negative, open_path, parse_steps,
                                     positive, positive_float, stderr_progress, warn)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("mine", help="find opposing groups of examples in a run or checkpoint",
                              description=__doc__.split("\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    add_path_arguments(p)
    p.add_argument("--by", help="grouping: key names joined by '-' (text: feature-target, target, "
                                "feature2-feature-target; vision: feature-target, target, ...), 'cluster' (loss "
                                "trajectories), 'repr' / 'repr-target' (the model's own features), 'sharp' / "
                                "'sharp-target' (slopes along the top Hessian eigenvectors); default: the domain's "
                                "first grouping")
    p.add_argument("--top", type=positive, default=10, help="pairs (and movers) to show")
    p.add_argument("--steps", metavar="A:B", help="only records with A <= step <= B")
    p.add_argument("--min-size", type=positive, default=5, help="smallest group considered")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("--csv", metavar="FILE", help="also write one row per opposing pair to FILE")
    p.add_argument("--data", help="probe source for a checkpoint outside a run (text: sample, a file or folder)")
    p.add_argument("--neighbours", type=non_negative, default=8, help="checkpoints each side of PATH to replay")
    p.add_argument("--lookahead", type=positive, default=16, help="lookahead steps for a lone checkpoint")
    p.add_argument("--lr", type=positive_float, default=None, help="lookahead learning rate (default: the run's)")
    p.add_argument("--seed", type=non_negative, default=0, help="seed of the lookahead replay and the miner")
    p.add_argument("--log", action="store_true",
                   help="also send the top pairs as a table to the run's TensorBoard log (train.report_to=tensorboard)")
    add_discovery_arguments(p)  # key-free discovery: --by repr, repr-target, sharp, sharp-target (lmprobe.discovery)
    p.set_defaults(run=run)


def run(args: argparse.Namespace, console) -> int:
    from lmprobe.analysis.losses import load_losses
    from lmprobe.mining import mine
    from lmprobe.report.mining_table import render, to_csv, to_json

    window = parse_steps(args.steps)
    check_output_file(args.csv, "--csv", "pairs.csv")
    view = open_path(args, args.data)
    if args.log:
        from lmprobe.report.tensorboard_images import tracker_dir

        if view.run_dir is None:
            raise LmprobeError("--log needs a run directory with a TensorBoard log, not a lone checkpoint")
        tracker_dir(view.run_dir)  # one line now, not after the mining
    matrix = load_losses(view, neighbours=args.neighbours, lookahead=args.lookahead, lr=args.lr,
                         seed=args.seed, progress=stderr_progress)
    for message in matrix.warnings:
        warn(message)
    view, relabel = prepare_discovery(view, args, console, progress=stderr_progress)  # --by repr/sharp
    keys = view.keys()
    result = mine(matrix.losses, matrix.steps, keys, by=args.by or view.groupings[0], window=window,
                  top=args.top, min_size=args.min_size, seed=args.seed,
                  ladder=None if args.by == "cluster" else complexity_ladder(view.groupings, keys))
    result = relabel(result)  # discovered keys named as asked (lmprobe.discovery)
    written = []
    if args.csv:
        to_csv(result, view.describe, args.csv, view.key_label)
        written.append(args.csv)
    written += write_group_grids(view, result, args.top)
    if args.json:
        print(to_json(result, view.describe, indent=1, key_label=view.key_label))
    else:
        console.print(f"[bold]{matrix.source}[/]: {len(matrix.steps)} records x {matrix.losses.shape[1]:,} "
                      f"probe examples", highlight=False, soft_wrap=True)
        render(result, view.describe, view.key_label, console=console, max_pairs=args.top)
    report_written(written, console, to_stderr=args.json)
    if args.log:
        log_pairs(view, result, args.top, matrix.steps)
    return 0


def log_pairs(view, result, top: int, steps) -> None:
    """The top pairs as a text table in the run's TensorBoard log (lmprobe/mine/pairs)."""
    from lmprobe.report.mining_table import side_label, window_text
    from lmprobe.report.tensorboard_images import log_table

    rows = [(rank, side_label(result, pair, "a", view.key_label), side_label(result, pair, "b", view.key_label),
             f"{pair.corr:.2f}", f"{pair.strength:.3g}", window_text(pair))
            for rank, pair in enumerate(result.pairs[:top], start=1)]
    log_table(view.run_dir, f"lmprobe/mine/pairs-by-{result.by}", ("#", "group 1", "group 2", "corr", "strength", "steps"),
              rows, step=int(steps[-1]) if len(steps) else 0)


def complexity_ladder(groupings, keys) -> list[str]:
    """Groupings whose complexity over training is measured, coarse to fine: the domain's
    keyed groupings of data keys (not align, repr, sharp or cluster) by their number of keys; when several share the
    finest order (vision's colour keys with the target), their union is added as the finest."""
    derived = {"align", "repr", "sharp"}  # keys measured from a model, not of the data: not on the ladder
    plain = [g for g in groupings if g != "cluster" and not derived & set(g.split("-"))
             and all(part in keys for part in g.split("-"))]
    plain.sort(key=lambda g: len(g.split("-")))
    if not plain:
        return []
    top = len(plain[-1].split("-"))
    finest = [g for g in plain if len(g.split("-")) == top]
    if top > 1 and len(finest) > 1:
        names = list(dict.fromkeys(part for g in finest for part in g.split("-") if part != "target"))
        plain.append("-".join(names + ["target"]))
    return plain


def report_written(paths: list, console, *, to_stderr: bool) -> None:
    """Name every file a command wrote: on stdout with a table, on stderr when stdout is JSON."""
    from rich.console import Console

    target = Console(stderr=True) if to_stderr else console
    for path in paths:
        target.print(f"wrote {path}", highlight=False, soft_wrap=True)


def write_group_grids(view, result, top: int, out_dir=None, formats=()) -> list[str]:
    """For domains with images: one PNG grid per reported pair, beside the run (or checkpoint)."""
    from lmprobe.report.figures import example_grid
    from lmprobe.report.mining_table import side_examples, side_label

    if not result.pairs or view.images([0]) is None:  # a domain without images
        return []
    out_dir = out_dir or (view.run_dir or view.checkpoint) / "figures"
    written = []
    for rank, pair in enumerate(result.pairs[:top], start=1):
        rows = []
        for side in ("a", "b"):
            members = side_examples(result, pair, side)[:8]
            titles = [view.describe(i)[0] for i in members]
            rows.append((side_label(result, pair, side, view.key_label), view.images(members), titles))
        first = formats[0] if formats else "png"
        written.append(str(example_grid(rows, out_dir / f"pair-{rank:02d}.{first}", formats)))
    return written
