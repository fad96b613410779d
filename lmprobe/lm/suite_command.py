"""`lmprobe suite`: a run directory from a series of checkpoints of any causal LM.

    lmprobe suite --model EleutherAI/pythia-70m --revisions step1000,step2000,step3000 --data sample --out runs/pythia70m
    lmprobe suite --checkpoints ckpt-100 ckpt-200 ckpt-300 --data corpus.jsonl --out runs/mine
    accelerate launch -m lmprobe.cli suite ...      # each process evaluates its share of checkpoints

Steps come from "step(N)" in revision names or a trailing number in folder names (else --steps,
else the order given). The probe is drawn from --data in the models' own tokenizer. Rerunning
the same command resumes: checkpoints already in the trace are skipped, and more checkpoints
may follow the last one. A checkpoint whose weights equal an earlier one's is reported and
gets no row (--keep-duplicates records it anyway). Then: lmprobe mine RUN, lmprobe examples RUN.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

from lmprobe.commands.common import check_output_folder, non_negative, positive, warn
from lmprobe.errors import LmprobeError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("suite", help="build a run directory from a series of checkpoints of any causal LM",
                              description=__doc__.split("\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n", 2)[2])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", metavar="HUB_ID", help="a Hugging Face model id (with --revisions)")
    source.add_argument("--checkpoints", nargs="+", metavar="FOLDER", help="local save_pretrained folders")
    p.add_argument("--revisions", nargs="+", metavar="REV", help="revisions of --model, comma- or space-separated")
    p.add_argument("--steps", metavar="N,N,...", help="the step of each checkpoint, in the order given")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="the run directory to build (or resume)")
    p.add_argument("--data", default="sample", help="probe text: sample, openwebtext, a .txt/.jsonl file or folder")
    p.add_argument("--block-size", type=positive, default=128, help="probe block length (at most the model's positions)")
    p.add_argument("--n-sequences", type=positive, default=64, help="held-out probe blocks")
    p.add_argument("--positions", type=positive, default=None, help="probe positions per block (default: all)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of documents held out for the probe")
    p.add_argument("--max-tokens", type=positive, default=None, help="tokens read from --data (streamed: 1M)")
    p.add_argument("--seed", type=non_negative, default=0, help="seed of the probe's choice of held-out blocks")
    p.add_argument("--batch-size", type=positive, default=16, help="probe blocks per forward pass")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16", "auto"),
                   help="weights dtype for evaluation")
    p.add_argument("--tokenizer", help="tokenizer folder, when the checkpoints carry none")
    p.add_argument("--keep-duplicates", action="store_true",
                   help="record a row for a checkpoint identical to an earlier one (default: report it, no row)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, console) -> int:
    from accelerate import Accelerator

    accelerator = Accelerator()
    try:
        result = build(args, accelerator)
    except LmprobeError:
        if accelerator.is_main_process:
            raise
        return 2  # the main process says it once
    finally:
        from lmprobe.train.launch import shut_down

        shut_down(accelerator)
    if not accelerator.is_main_process:
        return 0
    if result.rows < 2:
        warn(f"{result.run_dir} has {result.rows} trace row(s); mining needs at least 2 distinct checkpoints")
    from lmprobe.commands.mine import report_written

    if args.json:
        print(json.dumps(summary(result), indent=1))
    else:
        console.print(suite_table(result))
        console.print(f"next: [bold]lmprobe mine {result.run_dir}[/]", highlight=False, soft_wrap=True)
    report_written([str(p) for p in result.files], console, to_stderr=args.json)
    return 0


def build(args: argparse.Namespace, accelerator):
    from rich.console import Console

    from lmprobe.lm.suites import SuiteOptions, build_suite, hub_series, local_series
    from lmprobe.lm.suites.series import parse_step_list

    check_output_folder(args.out, "--out")
    steps = parse_step_list(args.steps)
    if args.model:
        if not args.revisions:
            raise LmprobeError("--model needs --revisions (e.g. --revisions step1000,step2000); "
                               "for local folders use --checkpoints")
        revisions = [r for text in args.revisions for r in text.split(",")]
        series = hub_series(args.model, revisions, steps)
    else:
        if args.revisions:
            raise LmprobeError("--revisions goes with --model; local --checkpoints take --steps")
        series = local_series(args.checkpoints, steps)
    if not 0 < args.val_fraction < 1:
        raise LmprobeError(f"--val-fraction must be between 0 and 1, got {args.val_fraction}")
    options = SuiteOptions(data=args.data, block_size=args.block_size, n_sequences=args.n_sequences,
                           positions_per_sequence=args.positions, val_fraction=args.val_fraction, seed=args.seed,
                           max_tokens=args.max_tokens, batch_size=args.batch_size, dtype=args.dtype,
                           keep_duplicates=args.keep_duplicates, tokenizer=args.tokenizer)
    stderr = Console(stderr=True)
    return build_suite(series, args.out, options, accelerator,
                       log=lambda message: stderr.print(message, highlight=False, soft_wrap=True))


def status_text(entry, new: bool) -> str:
    if entry.status == "duplicate":
        return f"identical to step {entry.duplicate_of}: skipped"
    flag = f" (identical to step {entry.duplicate_of})" if entry.duplicate_of is not None else ""
    return ("recorded" if new else "recorded earlier") + flag


def suite_table(result):
    from rich.table import Table

    new = set(result.new_steps)
    table = Table(title=f"suite {result.run_dir}: {result.rows} trace rows x {result.n_examples:,} probe examples",
                  caption=f"{len(result.evaluated)} checkpoints, {len(result.duplicates)} identical to an earlier one, "
                          f"{sum(e.step in new and e.row is not None for e in result.evaluated)} rows written now")
    for column in ("step", "checkpoint", "sha256", "row", "status"):
        table.add_column(column, justify="right" if column in ("step", "row") else "left")
    for entry in result.evaluated:
        style = "yellow" if entry.status == "duplicate" else None
        table.add_row(str(entry.step), entry.label, entry.sha256[:12], "" if entry.row is None else str(entry.row),
                      status_text(entry, entry.step in new), style=style)
    return table


def summary(result) -> dict:
    new = set(result.new_steps)
    return {
        "run_dir": str(result.run_dir),
        "settings": dataclasses.asdict(result.settings),
        "n_examples": result.n_examples,
        "rows": result.rows,
        "rows_written": sum(e.step in new and e.row is not None for e in result.evaluated),
        "checkpoints": [dict(dataclasses.asdict(e), new=e.step in new) for e in result.evaluated],
        "duplicates": [{"step": e.step, "label": e.label, "identical_to_step": e.duplicate_of}
                       for e in result.evaluated if e.duplicate_of is not None],
        "files": [str(p) for p in result.files],
    }
