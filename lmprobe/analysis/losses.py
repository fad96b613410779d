"""The loss matrix to mine for a run view: its trace, its checkpoints replayed, or lookahead steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from lmprobe.domain import RunView
from lmprobe.errors import LmprobeError
from lmprobe.trace import has_trace, read_trace
from lmprobe.train.checkpoint import list_checkpoints

Progress = Callable[[str], Callable[[int, int], None]]


@dataclass
class LossMatrix:
    losses: np.ndarray  # [records, n_examples], often a memmap
    steps: np.ndarray  # int64 [records]
    source: str  # a line saying where the rows came from
    warnings: list[str] = field(default_factory=list)


def load_losses(view: RunView, *, neighbours: int = 8, lookahead: int = 16, lookahead_batch_size: int = 8,
                lr: float | None = None, seed: int = 0, progress: Progress | None = None) -> LossMatrix:
    """A run's recorded trace; else its checkpoints replayed; for a checkpoint, its neighbours
    replayed; for a lone checkpoint, `lookahead` independent steps from it."""
    from lmprobe.analysis import replay

    progress = progress or (lambda what: None)
    located = view.located
    if located.kind == "run":
        run_dir = located.run_dir
        trace = read_trace(run_dir) if has_trace(run_dir) else None
        if trace is not None:
            check_trace_fits(trace, view.probe.n_examples, run_dir)
        if trace is not None and trace.n_records >= 2:
            warnings = []
            if trace.incomplete:
                warnings.append(f"the trace of {run_dir} ends in an incomplete record (an interrupted run?); "
                                f"mining its {trace.n_records} complete records")
            return LossMatrix(trace.losses, trace.steps, f"trace of {run_dir}", warnings)
        checkpoints = list_checkpoints(run_dir)
        if len(checkpoints) < 2:
            raise LmprobeError(
                f"{run_dir} recorded no trace and has {len(checkpoints)} checkpoint(s); mining needs "
                f"at least 2 records: train with trace.every > 0, or give a checkpoint to mine by lookahead"
            )
        trace = replay.trace_from_checkpoints(view, checkpoints, progress("replaying checkpoints"))
        return LossMatrix(trace.losses, trace.steps, f"{len(checkpoints)} checkpoints of {run_dir}")

    around = checkpoint_neighbours(view, neighbours)
    if len(around) >= 2:
        trace = replay.trace_from_checkpoints(view, around, progress("replaying neighbouring checkpoints"))
        return LossMatrix(trace.losses, trace.steps,
                          f"checkpoints {around[0][0]}..{around[-1][0]} around {view.checkpoint.name}")
    return lookahead_losses(view, lookahead, lookahead_batch_size, lr, seed, progress)


def check_trace_fits(trace, n_examples: int, run_dir: Path) -> None:
    """A trace's rows must have one loss per probe example, or every column would be misread."""
    if trace.n_examples != n_examples:
        raise LmprobeError(
            f"{run_dir / 'trace' / 'meta.json'} says n_examples {trace.n_examples:,} but the run's probe has "
            f"{n_examples:,} examples; restore meta.json, or delete the trace folder to replay the run's checkpoints"
        )


def checkpoint_neighbours(view: RunView, each_side: int) -> list[tuple[int, Path]]:
    if view.run_dir is None or view.located.kind != "checkpoint":
        return []
    checkpoints = list_checkpoints(view.run_dir)
    paths = [p.resolve() for _, p in checkpoints]
    if view.checkpoint.resolve() not in paths:
        raise LmprobeError(incomplete_checkpoint_message(view.checkpoint, checkpoints))
    here = paths.index(view.checkpoint.resolve())
    return checkpoints[max(0, here - each_side) : here + each_side + 1]


def incomplete_checkpoint_message(checkpoint: Path, complete: list[tuple[int, Path]]) -> str:
    """`checkpoint` sits in a run's checkpoints/ but is not listed among them (no lmprobe.json)."""
    from lmprobe.train.checkpoint import INFO_FILE

    what = f"{checkpoint} is an incomplete checkpoint (it has no {INFO_FILE}, so the run does not list it)"
    if not complete:
        return f"{what} and the run has no complete checkpoint; mine the run itself if it recorded a trace"
    names = ", ".join(path.name for _, path in complete)
    return f"{what}; use a complete one instead ({names}), e.g. {complete[-1][1]}"


def lookahead_losses(view: RunView, k: int, batch_size: int, lr: float | None, seed: int,
                     progress: Progress) -> LossMatrix:
    import torch

    from lmprobe.analysis import replay
    from lmprobe.analysis.optim import restore_optimizer, run_optim_config
    from lmprobe.train.optim import build_optimizer

    torch.manual_seed(seed)
    model = view.load_model(view.checkpoint)
    optimizer, run_lr = restore_optimizer(view, model)
    lr = lr if lr is not None else (run_lr or 1e-3)
    batches = view.train_batches(k, batch_size)
    if optimizer is not None:
        optim_cfg = run_optim_config(view.run_dir)
        make = replay.optimizer_factory(optimizer.state_dict(), lambda m: build_optimizer(m, optim_cfg), lr)
        how = f"{optim_cfg.name} steps at lr {lr:.3g}"
    else:
        make = replay.optimizer_factory(None, None, lr)
        how = f"SGD steps at lr {lr:.3g}"
    losses, steps = replay.lookahead_trace(view, model, batches, make, progress("lookahead steps"))
    return LossMatrix(losses, steps, f"{len(batches)} independent lookahead {how} from {view.checkpoint}")
