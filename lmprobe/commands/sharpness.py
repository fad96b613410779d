"""`lmprobe sharpness PATH`: the top Hessian eigenvalues of a checkpoint's training loss,
next to the step size's stability threshold (2/lr; 38/lr preconditioned for Adam).

By default the loss is the one the training hook measures, on the same fixed training batches
(saved in run_dir/probe/train_sample.npz), so this number and metrics.jsonl's can be compared."""

from __future__ import annotations

import argparse
import json

from lmprobe.commands.common import add_path_arguments, open_path, positive, positive_float
from lmprobe.errors import LmprobeError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("sharpness", help="top Hessian eigenvalues of a checkpoint",
                              description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n")[1])
    add_path_arguments(p, "a run directory (its latest checkpoint) or a checkpoint folder")
    p.add_argument("--k", type=positive, default=1, help="how many top eigenvalues")
    p.add_argument("--block", help="restrict to parameters matching this name, alias or re:PATTERN "
                                   "(e.g. embeddings, transformer.h.0)")
    p.add_argument("--batches", type=positive, help="fixed batches the loss is averaged over (default: the hook's)")
    p.add_argument("--batch-size", type=positive, help="examples per batch (default: the hook's)")
    p.add_argument("--data", help="draw batches from this source (a checkpoint outside a run)")
    p.add_argument("--lr", type=positive_float, help="learning rate for the thresholds (default: the checkpoint's)")
    p.add_argument("--tol", type=positive_float, default=1e-3,
                   help="relative accuracy wanted (certified by the residual)")
    p.add_argument("--max-iter", type=positive, default=60, help="most Hessian-vector products per solve")
    p.add_argument("--spread", type=positive, metavar="K",
                   help="also measure the top eigenvalue on K disjoint parts of the sample (min, median, max, "
                        "relative spread): how much the value depends on which examples were drawn")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, console) -> int:
    from lmprobe.analysis.optim import restore_optimizer
    from lmprobe.hessian import measure_sharpness

    if args.k > args.max_iter:
        raise LmprobeError(f"--k {args.k} eigenvalues need more than --max-iter {args.max_iter} Hessian-vector "
                           f"products; lower --k or raise --max-iter")
    view = open_path(args, args.data)
    model = view.load_model(view.checkpoint)
    batches = view.hessian_batches(args.batches, args.batch_size)
    optimizer, lr = restore_optimizer(view, model)
    if args.lr is None and lr is not None and not lr > 0:
        raise LmprobeError(f"{view.checkpoint} was saved at learning rate {lr} (the end of its schedule?), where "
                           f"the stability thresholds (2/lr, ...) are undefined; pass --lr LR to quote them at")
    lr = args.lr if args.lr is not None else lr
    report = measure_sharpness(model, view.loss, batches, k=args.k, block=args.block, optimizer=optimizer,
                               lr=lr, tol=args.tol, max_iter=args.max_iter)
    report["checkpoint"] = str(view.checkpoint)
    report["n_examples"] = sum(len(next(iter(batch.values()))) for batch in batches)
    if args.spread:
        from lmprobe.hessian.spread import sharpness_spread

        report["spread"] = sharpness_spread(model, view.loss, batches, args.spread, block=args.block,
                                            tol=args.tol, max_iter=args.max_iter)
    if args.json:
        print(json.dumps(report, default=float, indent=1))
    else:
        console.print(sharpness_table(report))
    return 0


def sharpness_table(report: dict):
    from rich.table import Table

    table = Table(title=f"sharpness of {report['checkpoint']}", show_header=False)
    rows = [
        ("block", report.get("block") or "all parameters"),
        ("parameters", f"{report['n_params']:,}"),
        ("batches", f"{report.get('n_batches')} ({report['n_examples']} examples)" if report.get("n_examples")
                    else str(report.get("n_batches"))),
        ("top eigenvalues", ", ".join(f"{v:.4g}" for v in report["eigenvalues"])),
    ]
    if report.get("error_bounds") is not None:
        rows.append(("error bounds (certified)", ", ".join(f"{v:.2g}" for v in report["error_bounds"])))
    rows.append(("converged", str(report["converged"])))
    if report.get("lr"):
        rows.append(("lr", f"{report['lr']:.3g}"))
        rows.append(("2/lr (GD edge of stability)", f"{report['gd_threshold']:.4g}"))
    if report.get("threshold") is not None:
        rows.append((f"threshold ({report['threshold_rule']})", f"{report['threshold']:.4g}"))
    if report.get("preconditioned_sharpness") is not None:
        rows.append(("preconditioned sharpness (P^-1 H)", f"{report['preconditioned_sharpness']:.4g}"))
        if report.get("preconditioned_error_bounds") is not None:
            rows.append(("  error bound", f"{report['preconditioned_error_bounds'][0]:.2g}"))
        rows.append(("  converged", str(report.get("preconditioned_converged"))))
        rows.append(("Adam threshold (2+2b1)/(lr(1-b1))", f"{report['preconditioned_threshold']:.4g}"))
    spread = report.get("spread")
    if spread is not None:
        rows.append((f"spread: {spread['parts']} disjoint parts of {spread['examples_per_part']}",
                     ", ".join(f"{v:.4g}" for v in spread["values"])))
        rows.append(("  min / median / max", f"{spread['min']:.4g} / {spread['median']:.4g} / {spread['max']:.4g}"))
        rows.append(("  relative spread (max-min)/median", f"{spread['relative_spread']:.1%}"))
    rows.append(("Hessian-vector products", str(report["n_products"] + (spread or {}).get("n_products", 0))))
    rows.append(("seconds", f"{report['seconds'] + (spread or {}).get('seconds', 0.0):.1f}"))
    for key, value in rows:
        table.add_row(key, value)
    return table
