"""`lmprobe mine --checkpoint PATH`: opposing signals in a run, shown the way the paper shows them.

PATH may be
  * a run directory: its recorded probe trace is mined; a run that recorded none is replayed
    by evaluating the probe at each of its checkpoints;
  * a checkpoint of a run: the probe is evaluated at it and its neighbouring checkpoints;
  * a checkpoint with no neighbours (one of ours, or any GPT-2 save_pretrained folder with
    --data): K lookahead steps are taken from it and the loss changes they cause are mined
    (see lmprobe.lm.replay).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from lmprobe.commands.sources import Subject, load_checked_model, resolve_subject
from lmprobe.errors import LmprobeError
from lmprobe.lm.probe import TextProbe
from lmprobe.trace import has_trace, read_trace
from lmprobe.train.checkpoint import list_checkpoints

BY_CHOICES = ("feature-target", "target", "feature2-feature-target", "cluster")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("mine", help="find opposing groups of examples in a run or checkpoint",
                              description=__doc__.split("\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--checkpoint", required=True, metavar="PATH", help="a run directory or a checkpoint folder")
    p.add_argument("--by", default="feature-target", choices=BY_CHOICES,
                   help="group by target, by (last context token, target), by a longer suffix, or cluster")
    p.add_argument("--top", type=int, default=10, help="pairs (and movers) to show")
    p.add_argument("--steps", metavar="A:B", help="only records with A <= step <= B")
    p.add_argument("--min-size", type=int, default=5, help="smallest group considered")
    p.add_argument("--json", action="store_true", help="print the full result as JSON")
    p.add_argument("--csv", metavar="FILE", help="also write one row per opposing pair to FILE")
    p.add_argument("--data", help="probe source for a checkpoint outside a run (sample, a file or folder)")
    p.add_argument("--neighbours", type=int, default=8, help="checkpoints each side of PATH to replay")
    p.add_argument("--lookahead", type=int, default=16, help="lookahead steps for a lone checkpoint")
    p.add_argument("--lr", type=float, default=None, help="lookahead learning rate (default: the run's)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run)


def parse_steps(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        a, b = text.split(":")
        lo = int(a) if a else np.iinfo(np.int64).min
        hi = int(b) if b else np.iinfo(np.int64).max
    except ValueError:
        raise LmprobeError(f"--steps {text!r} must look like A:B (e.g. 100:500, or 100: for 'from 100')") from None
    return lo, hi


def run(args: argparse.Namespace, console) -> int:
    from lmprobe.mining import mine
    from lmprobe.report.mining_table import clusters_table, render, to_csv, to_json

    window = parse_steps(args.steps)
    subject = resolve_subject(args.checkpoint, args.data, seed=args.seed)
    losses, steps, source = load_losses(subject, args, console)
    by = "feature-target" if args.by == "cluster" else args.by
    result = mine(losses, steps, subject.probe.keys(), by=by, window=window, top=args.top,
                  min_size=args.min_size, seed=args.seed)
    describe, key_label = describers(subject.probe, subject.tokenizer)
    if args.csv:
        to_csv(result, describe, args.csv, key_label)
    if args.json:
        print(to_json(result, describe, indent=1))
        return 0
    console.print(f"[bold]{source}[/]: {len(steps)} records x {losses.shape[1]:,} probe examples",
                  highlight=False, soft_wrap=True)
    if args.by == "cluster":
        console.print(clusters_table(result, describe, key_label))
    else:
        render(result, describe, key_label, console=console, max_pairs=args.top)
    return 0


def load_losses(subject: Subject, args, console) -> tuple[np.ndarray, np.ndarray, str]:
    """The loss matrix to mine for PATH, and a line saying where it came from."""
    from lmprobe.lm import replay

    located = subject.located
    if located.kind == "run":
        run_dir = located.run_dir
        trace = read_trace(run_dir) if has_trace(run_dir) else None
        if trace is not None and trace.n_records >= 2:
            if trace.incomplete:
                console.print(f"[yellow]warning:[/] the trace of {run_dir} ends in an incomplete record "
                              f"(an interrupted run?); mining its {trace.n_records} complete records",
                              soft_wrap=True)
            return trace.losses, trace.steps, f"trace of {run_dir}"
        checkpoints = list_checkpoints(run_dir)
        if len(checkpoints) < 2:
            raise LmprobeError(
                f"{run_dir} recorded no trace and has {len(checkpoints)} checkpoint(s); mining needs "
                f"at least 2 records: train with trace.every > 0, or give a checkpoint to mine by lookahead"
            )
        trace = replay.trace_from_checkpoints(run_dir, checkpoints, subject.probe, _progress(console, "replaying checkpoints"))
        return trace.losses, trace.steps, f"{len(checkpoints)} checkpoints of {run_dir}"

    neighbours = _neighbours(subject, args.neighbours)
    if len(neighbours) >= 2 and args.data is None:
        trace = replay.trace_from_checkpoints(located.run_dir, neighbours, subject.probe,
                                              _progress(console, "replaying neighbouring checkpoints"))
        return trace.losses, trace.steps, f"checkpoints {neighbours[0][0]}..{neighbours[-1][0]} around {subject.checkpoint.name}"
    return _lookahead(subject, args, console)


def _neighbours(subject: Subject, each_side: int) -> list[tuple[int, Path]]:
    if subject.located.run_dir is None:
        return []
    checkpoints = list_checkpoints(subject.located.run_dir)
    paths = [p.resolve() for _, p in checkpoints]
    here = paths.index(subject.checkpoint.resolve())
    return checkpoints[max(0, here - each_side) : here + each_side + 1]


def _lookahead(subject: Subject, args, console) -> tuple[np.ndarray, np.ndarray, str]:
    import torch

    from lmprobe.commands.sharpness import restore_optimizer
    from lmprobe.lm import replay

    torch.manual_seed(args.seed)
    model = load_checked_model(subject)
    optimizer, run_lr = restore_optimizer(subject, model)
    lr = args.lr if args.lr is not None else (run_lr or 1e-3)
    batches = lookahead_batches(subject, args)
    if optimizer is not None:
        from lmprobe.config import LMConfig, load_config
        from lmprobe.train.optim import build_optimizer

        optim_cfg = load_config(LMConfig, subject.located.run_dir / "config.yaml").optim
        make = replay.optimizer_factory(optimizer.state_dict(), lambda m: build_optimizer(m, optim_cfg), lr)
        how = f"{optim_cfg.name} steps at lr {lr:.3g}"
    else:
        make = replay.optimizer_factory(None, None, lr)
        how = f"SGD steps at lr {lr:.3g}"
    losses, steps = replay.lookahead_trace(model, subject.probe, batches, make,
                                           _progress(console, "lookahead steps"))
    return losses, steps, f"{len(batches)} independent lookahead {how} from {subject.checkpoint}"


def lookahead_batches(subject: Subject, args) -> list[dict]:
    """K batches, disjoint from the probe: from --data (or the run's data source)."""
    import torch

    from lmprobe.data import prepare_lm_data

    source = args.data
    if source is None:
        from lmprobe.config import LMConfig, load_config

        source = load_config(LMConfig, subject.located.run_dir / "config.yaml").data.source
    block = subject.probe.sequences.shape[1]
    data = prepare_lm_data(source, subject.tokenizer, block_size=block, val_fraction=0.1, seed=args.seed)
    batch_size = 8
    needed = args.lookahead * batch_size
    if len(data.train) < needed:
        raise LmprobeError(f"--data gave {len(data.train)} training blocks; {args.lookahead} lookahead "
                           f"steps of {batch_size} need {needed}")
    order = np.random.default_rng(args.seed).permutation(len(data.train))[:needed]
    return [{"input_ids": torch.from_numpy(data.train[order[i : i + batch_size]].astype(np.int64))}
            for i in range(0, needed, batch_size)]


def describers(probe: TextProbe, tokenizer):
    """Text for the report: `describe(i) -> (context tail, target)` and token-id labels."""
    def describe(index: int) -> tuple[str, str]:
        context, target = probe.context(index)
        return tokenizer.decode(context.tolist()), tokenizer.decode([target])

    def key_label(name: str, value: int) -> str:
        from lmprobe.report.mining_table import visible_token

        return "∅" if value < 0 else f"[{visible_token(tokenizer.decode([value]))}]" if name == "target" \
            else visible_token(tokenizer.decode([value]))

    return describe, key_label


def _progress(console, what: str):
    """Progress goes to stderr, so --json output stays clean."""
    from rich.console import Console

    stderr = Console(stderr=True)

    def report(done: int, total: int) -> None:
        stderr.print(f"{what}: {done}/{total}", end="\r" if done < total else "\n", highlight=False)

    return report
