"""`lmprobe sharpness --checkpoint CKPT`: the top Hessian eigenvalues of a checkpoint's loss,
next to the step size's stability threshold (2/lr; 38/lr preconditioned for Adam)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from lmprobe.commands.sources import load_checked_model, probe_batches, resolve_subject
from lmprobe.errors import LmprobeError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("sharpness", help="top Hessian eigenvalues of a checkpoint",
                              description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="a run directory (its latest checkpoint) or a checkpoint folder")
    p.add_argument("--k", type=int, default=1, help="how many top eigenvalues")
    p.add_argument("--block", help="restrict to parameters matching this name or alias (e.g. embeddings, transformer.h.0)")
    p.add_argument("--batches", type=int, default=2, help="fixed batches the loss is averaged over")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--data", help="draw batches from this source instead of the run's probe set")
    p.add_argument("--lr", type=float, help="learning rate for the thresholds (default: the checkpoint's)")
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--max-iter", type=int, default=60)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, console) -> int:
    subject = resolve_subject(args.checkpoint, args.data)
    model = load_checked_model(subject)
    batches = probe_batches(subject.probe, args.batch_size, args.batches)
    optimizer, lr = restore_optimizer(subject, model)
    lr = args.lr if args.lr is not None else lr
    from lmprobe.hessian import measure_sharpness
    from lmprobe.lm.task import lm_loss

    report = measure_sharpness(model, lm_loss, batches, k=args.k, block=args.block, optimizer=optimizer,
                               lr=lr, tol=args.tol, max_iter=args.max_iter)
    report["checkpoint"] = str(subject.checkpoint)
    if args.json:
        print(json.dumps(report, default=float, indent=1))
    else:
        console.print(sharpness_table(report))
    return 0


def restore_optimizer(subject, model) -> tuple[Any, float | None]:
    """The run's optimizer with its saved state (for Adam's preconditioner), and the lr then."""
    located = subject.located
    if located.run_dir is None or not (subject.checkpoint / "training_state.pt").is_file():
        return None, None
    from lmprobe.config import LMConfig, load_config
    from lmprobe.train.checkpoint import load_training_state, read_info
    from lmprobe.train.optim import build_optimizer

    cfg = load_config(LMConfig, located.run_dir / "config.yaml")
    optimizer = build_optimizer(model, cfg.optim)
    try:
        optimizer.load_state_dict(load_training_state(subject.checkpoint)["optimizer"])
    except (KeyError, ValueError) as exc:
        raise LmprobeError(f"optimizer state in {subject.checkpoint} does not fit the model: {exc}") from None
    return optimizer, read_info(subject.checkpoint).get("lr")


def sharpness_table(report: dict):
    from rich.table import Table

    table = Table(title=f"sharpness of {report['checkpoint']}", show_header=False)
    rows = [
        ("block", report.get("block") or "all parameters"),
        ("parameters", f"{report['n_params']:,}"),
        ("top eigenvalues", ", ".join(f"{v:.4g}" for v in report["eigenvalues"])),
        ("converged", str(report["converged"])),
    ]
    if report.get("lr"):
        rows.append(("lr", f"{report['lr']:.3g}"))
        rows.append(("2/lr (GD edge of stability)", f"{report['gd_threshold']:.4g}"))
    if report.get("threshold") is not None:
        rows.append((f"threshold ({report['threshold_rule']})", f"{report['threshold']:.4g}"))
    if report.get("preconditioned_sharpness") is not None:
        rows.append(("preconditioned sharpness (P^-1 H)", f"{report['preconditioned_sharpness']:.4g}"))
        rows.append(("Adam threshold (2+2b1)/(lr(1-b1))", f"{report['preconditioned_threshold']:.4g}"))
    rows.append(("Hessian-vector products", str(report["n_products"])))
    rows.append(("seconds", f"{report['seconds']:.1f}"))
    for key, value in rows:
        table.add_row(key, value)
    return table
