"""Lanczos with full reorthogonalisation: the top-k eigenpairs of a symmetric operator.

Each iteration costs one product. The basis is stored in the operator's dtype (one vector per
iteration, grown as needed, never preallocated, which is why `max_iter` stays modest); the
three-term recurrence, every inner product and the two passes of Gram-Schmidt against the whole
basis run in float64 (`lmprobe.hessian.accumulate`), so a float32 basis stays orthonormal to
float32 rounding and no spurious copies of converged eigenvalues appear.

Stopping rule, on the wanted eigenvalues themselves: the Ritz pair (theta_i, y_i) has residual
r_i = ||H y_i - theta_i y_i|| = beta_j |s_ji|, free from the tridiagonal matrix, and some eigenvalue
of H lies within r_i of theta_i (quoted as error bound: r_i + 10 eps(dtype) max|theta|, the second
term covering rounding in the products themselves). We stop when, for every one of the k wanted Ritz values,

    r_i <= max(tol * |theta_i|, atol)                    (certified: relative error <= tol)
    |theta_i - theta_i(previous product)| <= tol * |theta_i|  over the last `settle` products

or when the Krylov space is exhausted (beta ~ 0: the Ritz values are exact eigenvalues). The
residual is relative to theta_i itself, never to the largest |Ritz value|: a Ritz value near zero
cannot pass because a large negative eigenvalue dominates the spectrum. The second condition
guards against stopping on an accurate eigenvalue that is not yet the wanted one (a Krylov space
only certifies "an" eigenvalue; the top one emerges as the space grows). When `max_iter` runs out
first, `converged` is False and the bounds say how far off the values may be.
"""

from __future__ import annotations

import time

import torch

from lmprobe.hessian.accumulate import FLOAT64, dot64, norm64, orthogonalize_
from lmprobe.hessian.operator import LinearOperator, checked_matvec
from lmprobe.hessian.results import EigenResult, seeded_vector

WHICH = ("LA", "SA", "LM")  # largest algebraic, smallest algebraic, largest magnitude


def _wanted(theta: torch.Tensor, k: int, which: str) -> torch.Tensor:
    """Indices of the k wanted Ritz values, best first."""
    if which == "LA":
        order = torch.argsort(theta, descending=True)
    elif which == "SA":
        order = torch.argsort(theta)
    else:
        order = torch.argsort(theta.abs(), descending=True)
    return order[:k]


def _tridiagonal(alphas: list[float], betas: list[float]) -> torch.Tensor:
    T = torch.diag(torch.tensor(alphas, dtype=FLOAT64))
    if betas:
        off = torch.tensor(betas, dtype=FLOAT64)
        T += torch.diag(off, 1) + torch.diag(off, -1)
    return T


def ritz_bounds(theta: torch.Tensor, residuals: torch.Tensor, wanted: torch.Tensor) -> tuple[list[float], list[float]]:
    """For each wanted Ritz value: the certified bound (its residual) and the Kato-Temple estimate
    r^2 / gap, the gap being the distance to the nearest other Ritz value less both residuals (inf
    when there is no other Ritz value or the gap does not exceed r). The estimate is not certified:
    an eigenvalue the Krylov space has not resolved yet may lie closer than any Ritz value, and in
    warm-started runs it was seen to undershoot the true error 7x; hence bounds are residuals."""
    bounds, estimates = [], []
    for i in wanted.tolist():
        r = float(residuals[i])
        others = [j for j in range(len(theta)) if j != i]
        gap = min((abs(float(theta[i] - theta[j])) - r - float(residuals[j]) for j in others), default=0.0)
        bounds.append(r)
        estimates.append(r * r / gap if gap > r else float("inf"))
    return bounds, estimates


def start_vector(dim: int, seed: int, device: torch.device, start: torch.Tensor | None) -> torch.Tensor:
    """Unit float64 start: `start` (a vector, or the sum of a matrix's columns) or a seeded Gaussian."""
    if start is None:
        q = seeded_vector(dim, seed, FLOAT64, device)
    else:
        q = start.to(device=device, dtype=FLOAT64)
        q = q.sum(dim=1) if q.dim() == 2 else q.clone()
        if q.shape != (dim,):
            raise ValueError(f"start has {q.shape[0]} rows, expected {dim}")
    norm = norm64(q)
    if not norm > 0.0:
        raise ValueError("start vector is zero")
    return q / norm


def settled(history: list[list[float]], tol: float, settle: int) -> bool:
    """Whether each wanted value moved by at most tol (relative) over the last `settle` products."""
    if len(history) < settle:
        return False
    recent = history[-settle:]
    if any(len(values) != len(recent[-1]) for values in recent):
        return False
    for now, before in zip(recent[1:], recent[:-1]):
        if any(abs(a - b) > tol * abs(a) for a, b in zip(now, before)):
            return False
    return True


def lanczos(
    operator: LinearOperator,
    k: int = 1,
    *,
    max_iter: int = 100,
    tol: float = 1e-4,
    which: str = "LA",
    seed: int = 0,
    return_eigenvectors: bool = True,
    start: torch.Tensor | None = None,
    atol: float = 0.0,
    settle: int = 2,
    extra_vectors: int = 0,
) -> EigenResult:
    """Top-k eigenvalues (and unit eigenvectors) of a symmetric operator, best first.

    `which`: "LA" largest algebraic (sharpness), "SA" smallest algebraic, "LM" largest magnitude.
    Stops on the rule in this module's docstring, after `max_iter` products (converged=False), or
    when the Krylov space is exhausted (then fewer than k values may come back, all exact).
    `start` warm-starts from a vector, or from the sum of a matrix's columns (e.g. the previous
    measurement's eigenvectors); by default the start is `seeded_vector(dim, seed)`, the same on
    every process. `atol` is an absolute floor for the residual test (for eigenvalues near zero).
    `extra_vectors` appends the Ritz vectors of that many next Ritz values (not certified, not in
    `eigenvalues`) to `eigenvectors`: the tracker's guard against an eigenvalue crossing the top.
    """
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    if k < 1:
        raise ValueError("k must be at least 1")
    if settle < 1:
        raise ValueError("settle must be at least 1")
    start_time = time.perf_counter()
    start_products = operator.n_products
    dim, dtype, device = operator.dim, operator.dtype, operator.device
    steps = min(max_iter, dim)
    basis = [start_vector(dim, seed, device, start).to(dtype)]
    alphas: list[float] = []
    betas: list[float] = []
    history: list[list[float]] = []
    converged = False
    theta = S = wanted = all_residuals = None
    for j in range(steps):
        w = checked_matvec(operator, basis[j], solver="Lanczos", iteration=j + 1).to(FLOAT64)
        alpha = dot64(basis[j], w)
        w.sub_(basis[j].to(FLOAT64), alpha=alpha)
        if j > 0:
            w.sub_(basis[j - 1].to(FLOAT64), alpha=betas[-1])
        orthogonalize_(w, basis)
        beta = norm64(w)
        alphas.append(alpha)
        theta, S = torch.linalg.eigh(_tridiagonal(alphas, betas))
        wanted = _wanted(theta, k, which)
        all_residuals = beta * S[-1].abs()
        history.append(theta[wanted].tolist())
        scale = max(float(theta.abs().max()), torch.finfo(dtype).tiny)
        exhausted = beta <= 10 * torch.finfo(dtype).eps * scale
        certified = len(alphas) >= k and all(
            float(all_residuals[i]) <= max(tol * abs(float(theta[i])), atol) for i in wanted.tolist()
        )
        if exhausted or (certified and settled(history, tol, settle)):
            converged = True
            break
        if j + 1 < steps:
            betas.append(beta)
            basis.append((w / beta).to(dtype))
    eigenvectors = None
    if return_eigenvectors:
        chosen = _wanted(theta, k + extra_vectors, which)
        coefficients = S[:, chosen].to(device=device)
        vectors = torch.zeros(dim, len(chosen), dtype=FLOAT64, device=device)
        for i in range(len(alphas)):
            vectors += basis[i].to(FLOAT64)[:, None] * coefficients[i]
        vectors /= torch.linalg.vector_norm(vectors, dim=0, keepdim=True)
        eigenvectors = vectors.to(dtype)
    bounds, estimates = ritz_bounds(theta, all_residuals, wanted)
    roundoff = 10 * torch.finfo(dtype).eps * float(theta.abs().max())  # what products in dtype resolve
    bounds = [b + roundoff for b in bounds]
    return EigenResult(
        eigenvalues=theta[wanted].tolist(),
        residuals=all_residuals[wanted].tolist(),
        n_products=operator.n_products - start_products,
        converged=converged,
        seconds=time.perf_counter() - start_time,
        eigenvectors=eigenvectors,
        history=history,
        error_bounds=bounds,
        bound_kinds=["residual"] * len(bounds),
        gap_error_estimates=estimates,
        extra_eigenvalues=theta[_wanted(theta, k + extra_vectors, which)][k:].tolist() if extra_vectors else [],
    )
