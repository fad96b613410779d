"""One call a training loop makes every N steps: sharpness, its threshold, and what it cost."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch.distributed as dist
from torch import nn

from lmprobe.errors import LmprobeError
from lmprobe.hessian.lanczos import lanczos
from lmprobe.hessian.operator import HessianOperator, LinearOperator, LossFn
from lmprobe.hessian.optimizers import group_lr, is_adam, unwrap_optimizer
from lmprobe.hessian.precondition import PreconditionedOperator, adam_preconditioner
from lmprobe.hessian.results import EigenResult
from lmprobe.hessian.thresholds import StabilityThreshold, gd_threshold, optimizer_threshold

# (kind, operator) -> result, kind being "plain" or "preconditioned"
Solver = Callable[[str, LinearOperator], EigenResult]


@dataclass
class SharpnessProblem:
    """The operators one measurement solves, and the thresholds its values are compared with."""

    operator: HessianOperator
    preconditioned: PreconditionedOperator | None
    lr: float | None
    stability: StabilityThreshold | None
    block: str | None

    @property
    def plain_threshold(self) -> float | None:
        """The threshold for the plain sharpness (None under Adam, whose threshold is preconditioned)."""
        stability = self.stability
        return stability.value if stability is not None and not stability.preconditioned else None


def sharpness_problem(
    model: nn.Module,
    loss_fn: LossFn,
    batches: Sequence[Any],
    *,
    block: str | None = None,
    optimizer: Any = None,
    lr: float | None = None,
    train: bool = True,
    cache_graph: bool | None = None,
    process_group: dist.ProcessGroup | None = None,
) -> SharpnessProblem:
    """Build the Hessian operator (and Adam's preconditioned one) and read the thresholds."""
    operator = HessianOperator(
        model, loss_fn, batches, block=block, train=train, cache_graph=cache_graph, process_group=process_group
    )
    if lr is None and optimizer is not None:
        lr = group_lr(unwrap_optimizer(optimizer).param_groups[0])
    check_lr(lr)
    preconditioned = None
    if optimizer is not None and is_adam(optimizer):  # read before the costly part: fail fast on missing state
        named = list(zip(operator.param_names, operator.params))
        preconditioner = adam_preconditioner(optimizer, named, lr=lr, dtype=operator.dtype)
        preconditioned = PreconditionedOperator(operator, preconditioner.inverse_sqrt)
    if optimizer is not None:
        stability = optimizer_threshold(optimizer, lr)
    else:
        stability = StabilityThreshold(gd_threshold(lr), "gd") if lr else None
    return SharpnessProblem(operator, preconditioned, lr, stability, block)


def check_lr(lr: float | None) -> None:
    """The thresholds (2/lr, 38/lr, ...) and Adam's preconditioner need a positive, finite lr."""
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise LmprobeError(f"the learning rate is {lr}, but the stability thresholds (2/lr, ...) and Adam's "
                           f"preconditioner need a positive finite one; pass the lr to quote them at")


def check_solver_settings(k: int, tol: float, max_iter: int) -> None:
    """What every top-k solve needs: k and max_iter at least 1, tol a positive relative accuracy."""
    if k < 1:
        raise LmprobeError(f"k must be at least 1 eigenvalue, got {k}")
    if not (math.isfinite(tol) and tol > 0):
        raise LmprobeError(f"tol must be a positive relative accuracy (e.g. 1e-3), got {tol}; at {tol} no "
                           f"eigenvalue can ever be certified")
    if max_iter < 1:
        raise LmprobeError(f"max_iter must be at least 1 Hessian-vector product, got {max_iter}")


def check_k_within(k: int, operator: LinearOperator, block: str | None) -> None:
    """A Hessian over n parameters has n eigenvalues: refuse more (Lanczos would quietly return n)."""
    if k > operator.dim:
        where = f"block {block!r}" if block else "the model"
        raise LmprobeError(f"k={k} eigenvalues asked of {where}, which has only {operator.dim:,} parameters "
                           f"(so {operator.dim:,} eigenvalues); ask for at most {operator.dim:,} (--k)")


def solve_and_report(problem: SharpnessProblem, solve: Solver, start: float) -> dict[str, Any]:
    """Run `solve` on the plain (and preconditioned) operator and build measure_sharpness's dict."""
    operator, stability, lr = problem.operator, problem.stability, problem.lr
    result = solve("plain", operator)
    plain_threshold = problem.plain_threshold
    report: dict[str, Any] = {
        "sharpness": result.eigenvalues[0],
        "eigenvalues": result.eigenvalues,
        "residuals": result.residuals,
        "error_bounds": result.error_bounds,
        "bound_kinds": result.bound_kinds,
        "converged": result.converged,
        "n_params": operator.dim,
        "n_batches": operator.n_batches,
        "block": problem.block,
        "lr": lr,
        "gd_threshold": gd_threshold(lr) if lr else None,
        "threshold": plain_threshold,
        "threshold_rule": stability.rule if plain_threshold is not None else None,
    }
    if problem.preconditioned is not None:
        preconditioned = solve("preconditioned", problem.preconditioned)
        report.update(
            preconditioned_sharpness=preconditioned.eigenvalues[0],
            preconditioned_eigenvalues=preconditioned.eigenvalues,
            preconditioned_residuals=preconditioned.residuals,
            preconditioned_error_bounds=preconditioned.error_bounds,
            preconditioned_converged=preconditioned.converged,
            preconditioned_threshold=stability.value if stability else None,
        )
    report["n_products"] = operator.n_products
    report["seconds"] = time.perf_counter() - start
    return report


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
    """Top-k Hessian eigenvalues of the loss averaged over fixed `batches`, by Lanczos, each
    certified to relative error `tol` (see lmprobe.hessian.lanczos) or reported converged=False.

    Measured in train mode by default, over the same fixed ("ghost") batches each time: batch norm
    then uses each batch's own statistics, as in the edge-of-stability literature (PyHessian
    measures in eval mode instead; pass train=False for that). Dropout is off, batch-norm running
    statistics, train/eval flags and `.grad` are left exactly as they were found.

    In a distributed run every process passes its own shard of batches and gets the same result.
    With an Adam/AdamW `optimizer` the preconditioned sharpness (top eigenvalue of P^-1 H, from the
    optimizer state) and its threshold 38/lr-style are added; with SGD the threshold follows its
    momentum. `lr` overrides the optimizer's learning rate (e.g. the scheduled value now).

    Keys: sharpness, eigenvalues, residuals, error_bounds (|eigenvalue - truth| <= bound, kind in
    bound_kinds), converged, n_products, seconds, n_params, n_batches, block, lr, gd_threshold
    (2/lr), threshold and threshold_rule (for `sharpness`; None under Adam), and under Adam:
    preconditioned_sharpness, preconditioned_eigenvalues, preconditioned_residuals,
    preconditioned_error_bounds, preconditioned_converged, preconditioned_threshold.
    For a measurement every step, `SharpnessTracker` returns the same dict for far fewer products.
    """
    start = time.perf_counter()
    check_solver_settings(k, tol, max_iter)
    problem = sharpness_problem(
        model, loss_fn, batches, block=block, optimizer=optimizer, lr=lr, train=train,
        cache_graph=cache_graph, process_group=process_group,
    )
    check_k_within(k, problem.operator, block)

    def solve(kind: str, operator: LinearOperator) -> EigenResult:
        return lanczos(operator, k, max_iter=max_iter, tol=tol, seed=seed, return_eigenvectors=False)

    return solve_and_report(problem, solve, start)
