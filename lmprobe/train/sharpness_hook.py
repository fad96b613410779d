"""Sharpness during training: the top Hessian eigenvalue on fixed batches, every N steps.

The batches are the first `n_batches * batch_size` training examples (saved in
probe/train_sample.npz, where `lmprobe sharpness` reads them too), the same at every measurement,
so the curve shows the loss landscape changing and not the sample. Each process measures its share
of them; the Hessian module sums the products across processes.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from lmprobe.config import SharpnessConfig
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


def sharpness_hook(task, cfg: SharpnessConfig, batches: list[dict[str, torch.Tensor]],
                   trainer) -> Callable[..., dict[str, Any]]:
    """A `(model, step, lr) -> metrics` callable for `Trainer.sharpness_fn`."""
    mine = [trainer._to_device(b) for b in shard_batches(batches)]

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
