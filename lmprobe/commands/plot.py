"""`lmprobe plot --checkpoint RUN`: PNG figures of a run — training curves with sharpness
against its threshold, and the loss trajectories of the top opposing pairs."""

from __future__ import annotations

import argparse
from pathlib import Path

from lmprobe.commands.mine import BY_CHOICES, describers, load_losses, parse_steps
from lmprobe.commands.sources import resolve_subject
from lmprobe.errors import LmprobeError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("plot", help="figures: training curves, sharpness, opposing pairs",
                              description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, metavar="RUN", help="a run directory")
    p.add_argument("--out", help="folder for the PNG files (default: RUN/figures)")
    p.add_argument("--by", default="feature-target", choices=BY_CHOICES[:-1])
    p.add_argument("--top", type=int, default=4, help="opposing pairs to draw")
    p.add_argument("--steps", metavar="A:B")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run, data=None, neighbours=8, lookahead=16, lr=None)


def run(args: argparse.Namespace, console) -> int:
    from lmprobe.mining import mine
    from lmprobe.report import figures
    from lmprobe.report.mining_table import group_label
    from lmprobe.train.metrics_log import read_metrics

    subject = resolve_subject(args.checkpoint, None, seed=args.seed)
    if subject.located.kind != "run":
        raise LmprobeError(f"{args.checkpoint} is a checkpoint; `lmprobe plot` draws a whole run: give its run directory")
    run_dir = subject.located.run_dir
    out = Path(args.out) if args.out else run_dir / "figures"
    written = [figures.training_curves(read_metrics(run_dir / "metrics.jsonl"), out / "training.png")]
    losses, steps, _ = load_losses(subject, args, console)
    result = mine(losses, steps, subject.probe.keys(), by=args.by, window=parse_steps(args.steps),
                  top=args.top, seed=args.seed, n_clusters=0)
    _, key_label = describers(subject.probe, subject.tokenizer)

    def label(group: int) -> str:
        return group_label(result.key_names, result.groups[group].key, key_label)

    written.append(figures.opposing_pairs(result, label, out / "opposing_pairs.png", top=args.top))
    for path in written:
        console.print(f"wrote {path}", highlight=False, soft_wrap=True)
    return 0
