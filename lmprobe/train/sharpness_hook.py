"""Sharpness during training: the top Hessian eigenvalue on fixed batches, every N steps.

The batches are the first `n_batches * batch_size` training examples, the same at every
measurement, so the curve shows the loss landscape changing and not the sample. Each process
measures its share of them; the Hessian module sums the products across processes.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

from lmprobe.config import OptimConfig, SharpnessConfig
from lmprobe.hessian import measure_sharpness, shard_batches

METRIC_KEYS = {  # measure_sharpness key -> metrics.jsonl key
    "sharpness": "sharpness",
    "threshold": "sharpness_threshold",
    "gd_threshold": "two_over_lr",
    "preconditioned_sharpness": "preconditioned_sharpness",
    "preconditioned_threshold": "preconditioned_threshold",
    "n_products": "hessian_products",
    "seconds": "hessian_seconds",
}


def fixed_batches(task, cfg: SharpnessConfig) -> list[dict[str, torch.Tensor]]:
    n = cfg.n_batches * cfg.batch_size
    if n > task.n_train():
        raise ValueError(f"sharpness needs {n} training examples, the task has {task.n_train()}")
    return [task.train_batch(np.arange(b * cfg.batch_size, (b + 1) * cfg.batch_size))
            for b in range(cfg.n_batches)]


def sharpness_hook(task, cfg: SharpnessConfig, optim: OptimConfig, trainer) -> Callable[..., dict[str, Any]]:
    """A `(model, step, lr) -> metrics` callable for `Trainer.sharpness_fn`."""
    mine = [trainer._to_device(b) for b in shard_batches(fixed_batches(task, cfg))]

    def measure(model: torch.nn.Module, step: int, lr: float) -> dict[str, Any]:
        report = measure_sharpness(
            model, task.loss, mine, k=cfg.k, block=cfg.block, optimizer=trainer.optimizer,
            lr=lr, tol=cfg.tol, max_iter=cfg.max_iter, seed=step,
        )
        out = {METRIC_KEYS[k]: report[k] for k in METRIC_KEYS if report.get(k) is not None}
        if cfg.k > 1:
            out["eigenvalues"] = report["eigenvalues"]
        return out

    return measure
