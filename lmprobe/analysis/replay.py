"""Loss traces for runs that recorded none: replayed from checkpoints, or from lookahead steps.

* From checkpoints: the probe is evaluated at each saved checkpoint, one row per checkpoint,
  by the probe's own code (the code the trainer records the trace with), cached in
  run_dir/analysis/checkpoint-trace (the trace format) so a second look is free.
* Lookahead, for a checkpoint with no neighbours: from the checkpoint's weights, K independent
  single optimiser steps, each on its own training batch and each starting again from the same
  weights. Interval k of the returned trace holds the per-example loss change caused by step k
  alone, so the miner's intervals are K samples of how one step moves every example; groups whose
  responses to the same steps are anti-correlated are opposing signals at this point of training.
  The step is the run's own optimiser when its state was saved (e.g. Adam's update at its learning
  rate), else plain SGD at `lr`.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from lmprobe.domain import RunView, view_probe_losses
from lmprobe.trace import Trace, TraceWriter, read_trace_dir

REPLAY_DIR = Path("analysis") / "checkpoint-trace"
Progress = Callable[[int, int], None]


def trace_from_checkpoints(view: RunView, checkpoints: list[tuple[int, Path]],
                           progress: Progress | None = None) -> Trace:
    """Probe losses at each checkpoint, from the cache when it holds exactly these steps."""
    out = view.run_dir / REPLAY_DIR
    wanted = [step for step, _ in checkpoints]
    n_examples = view.probe.n_examples
    if (out / "meta.json").is_file():
        cached = read_trace_dir(out)
        if cached.steps.tolist() == wanted and cached.n_examples == n_examples:
            return cached
    shutil.rmtree(out, ignore_errors=True)
    writer = TraceWriter(out, n_examples)
    for i, (step, path) in enumerate(checkpoints):
        writer.append(step, view_probe_losses(view, view.load_model(path)))
        if progress:
            progress(i + 1, len(checkpoints))
    return read_trace_dir(out)


def lookahead_trace(view: RunView, model: torch.nn.Module, batches: list[dict[str, torch.Tensor]],
                    make_optimizer: Callable[[torch.nn.Module], torch.optim.Optimizer],
                    progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(losses [K+1, n_examples], steps 0..K): row k = base + the changes of steps 1..k,
    each step taken alone from the starting weights (see the module docstring)."""
    start = copy.deepcopy(model.state_dict())
    base = view_probe_losses(view, model)
    rows = [base]
    for k, batch in enumerate(batches):
        model.load_state_dict(start)
        optimizer = make_optimizer(model)
        model.train()
        view.loss(model, batch).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.eval()
        rows.append(rows[-1] + (view_probe_losses(view, model) - base))
        if progress:
            progress(k + 1, len(batches))
    model.load_state_dict(start)
    return np.stack(rows).astype(np.float32), np.arange(len(rows), dtype=np.int64)


def optimizer_factory(saved_state: dict[str, Any] | None, build: Callable[[torch.nn.Module], torch.optim.Optimizer],
                      lr: float) -> Callable[[torch.nn.Module], torch.optim.Optimizer]:
    """A fresh optimizer per lookahead step: the run's (with its saved state) or SGD at lr."""
    def make(model: torch.nn.Module) -> torch.optim.Optimizer:
        if saved_state is None:
            return torch.optim.SGD(model.parameters(), lr=lr)
        optimizer = build(model)
        optimizer.load_state_dict(copy.deepcopy(saved_state))
        for group in optimizer.param_groups:
            group["lr"] = lr
        return optimizer

    return make
