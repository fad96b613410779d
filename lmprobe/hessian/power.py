"""Power iteration as PyHessian runs it, kept as the baseline Lanczos is measured against.

Normalise v, take Hv, read the Rayleigh quotient v.Hv, set v = Hv/||Hv||, and stop when the
quotient changes by less than `tol` relative to the previous one (or after `max_iter` products).
It finds the eigenvalue of largest magnitude, and converges at rate |lambda_2 / lambda_1|: a
small relative change per step is not the same as a small error when that ratio is near 1.

It is a baseline, kept to compare against, with one fix: PyHessian's rule still decides when to
stop, but `converged` is reported True only when the residual ||Hv - theta v|| (some eigenvalue
lies within it of theta) is also at most `tol * |theta|`, so a stall on a slowly converging
estimate is never reported as converged. `error_bounds` holds that residual.
"""

from __future__ import annotations

import time

import torch

from lmprobe.hessian.accumulate import FLOAT64, dot64, norm64
from lmprobe.hessian.operator import LinearOperator, checked_matvec
from lmprobe.hessian.results import EigenResult, seeded_vector


def power_iteration(
    operator: LinearOperator,
    *,
    max_iter: int = 100,
    tol: float = 1e-3,
    seed: int = 0,
) -> EigenResult:
    """Largest-magnitude eigenvalue and its eigenvector by PyHessian-style power iteration."""
    start_time = time.perf_counter()
    start_products = operator.n_products
    v = seeded_vector(operator.dim, seed, operator.dtype, operator.device)
    v /= torch.linalg.vector_norm(v)
    previous: float | None = None
    estimate, residual = 0.0, 0.0
    history: list[list[float]] = []
    stopped = False
    for iteration in range(1, max_iter + 1):
        hv = checked_matvec(operator, v, solver="power iteration", iteration=iteration).to(operator.dtype)
        estimate = dot64(v, hv)
        hv_norm = norm64(hv)
        residual = norm64(hv.to(FLOAT64) - estimate * v.to(FLOAT64))  # ||Hv - (v.Hv) v|| for unit v
        history.append([estimate])
        eigenvector = v
        if hv_norm == 0.0:  # v lies in the null space: H has no larger eigenvalue to find from it
            stopped = True
            break
        v = hv / hv_norm
        if previous is not None and abs(estimate - previous) / (abs(previous) + 1e-6) < tol:
            stopped = True
            break
        previous = estimate
    return EigenResult(
        eigenvalues=[estimate],
        residuals=[residual],
        n_products=operator.n_products - start_products,
        converged=stopped and (hv_norm == 0.0 or residual <= tol * abs(estimate)),
        seconds=time.perf_counter() - start_time,
        eigenvectors=eigenvector.unsqueeze(1),
        history=history,
        error_bounds=[residual],
        bound_kinds=["residual"],
    )
