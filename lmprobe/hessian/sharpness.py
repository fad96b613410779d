"""One call a training loop makes every N steps: sharpness, its threshold, and what it cost."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch.distributed as dist
from torch import nn

from lmprobe.hessian.lanczos import lanczos
from lmprobe.hessian.operator import HessianOperator, LossFn
from lmprobe.hessian.optimizers import group_lr, is_adam, unwrap_optimizer
from lmprobe.hessian.precondition import PreconditionedOperator, adam_preconditioner
from lmprobe.hessian.thresholds import StabilityThreshold, gd_threshold, optimizer_threshold


def measure_sharpness(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[Any],
    *,
    k: int = 1,
    block: str | None = None,
    optimizer: Any = None,
    lr: float | None = None,
    tol: float = 1e-3,
    max_iter: int = 100,
    seed: int = 0,
    train: bool = True,
    cache_graph: bool | None = None,
    process_group: dist.ProcessGroup | None = None,
) -> dict[str, Any]:
    """Top-k Hessian eigenvalues of the loss averaged over fixed `batches`, by Lanczos.

    Measured in train mode by default, over the same fixed ("ghost") batches each time: batch norm
    then uses each batch's own statistics, as in the edge-of-stability literature (PyHessian
    measures in eval mode instead; pass train=False for that). Dropout is off, batch-norm running
    statistics, train/eval flags and `.grad` are left exactly as they were found.

    In a distributed run every process passes its own shard of batches and gets the same result.
    With an Adam/AdamW `optimizer` the preconditioned sharpness (top eigenvalue of P^-1 H, from the
    optimizer state) and its threshold 38/lr-style are added; with SGD the threshold follows its
    momentum. `lr` overrides the optimizer's learning rate (e.g. the scheduled value now).

    Keys: sharpness, eigenvalues, residuals, converged, n_products, seconds, n_params, n_batches,
    block, lr, gd_threshold (2/lr), threshold and threshold_rule (for `sharpness`; None under Adam),
    and under Adam: preconditioned_sharpness, preconditioned_eigenvalues,
    preconditioned_converged, preconditioned_threshold.
    """
    start = time.perf_counter()
    operator = HessianOperator(
        model, loss_fn, batches, block=block, train=train, cache_graph=cache_graph, process_group=process_group
    )
    if lr is None and optimizer is not None:
        lr = group_lr(unwrap_optimizer(optimizer).param_groups[0])
    preconditioner = None
    if optimizer is not None and is_adam(optimizer):  # read before the costly part: fail fast on missing state
        named = list(zip(operator.param_names, operator.params))
        preconditioner = adam_preconditioner(optimizer, named, lr=lr, dtype=operator.dtype)
    result = lanczos(operator, k, max_iter=max_iter, tol=tol, seed=seed, return_eigenvectors=False)
    if optimizer is not None:
        stability = optimizer_threshold(optimizer, lr)
    else:
        stability = StabilityThreshold(gd_threshold(lr), "gd") if lr else None
    for_sharpness = stability is not None and not stability.preconditioned
    report: dict[str, Any] = {
        "sharpness": result.eigenvalues[0],
        "eigenvalues": result.eigenvalues,
        "residuals": result.residuals,
        "converged": result.converged,
        "n_params": operator.dim,
        "n_batches": operator.n_batches,
        "block": block,
        "lr": lr,
        "gd_threshold": gd_threshold(lr) if lr else None,
        "threshold": stability.value if for_sharpness else None,
        "threshold_rule": stability.rule if for_sharpness else None,
    }
    if preconditioner is not None:
        preconditioned = lanczos(
            PreconditionedOperator(operator, preconditioner.inverse_sqrt),
            k,
            max_iter=max_iter,
            tol=tol,
            seed=seed,
            return_eigenvectors=False,
        )
        report.update(
            preconditioned_sharpness=preconditioned.eigenvalues[0],
            preconditioned_eigenvalues=preconditioned.eigenvalues,
            preconditioned_converged=preconditioned.converged,
            preconditioned_threshold=stability.value if stability else None,
        )
    report["n_products"] = operator.n_products
    report["seconds"] = time.perf_counter() - start
    return report

