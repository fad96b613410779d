"""Lanczos with full reorthogonalisation: the top-k eigenpairs of a symmetric operator.

Each iteration costs one product. Full reorthogonalisation (two passes of Gram-Schmidt against
every basis vector) keeps the basis orthonormal in float32, so no spurious copies of converged
eigenvalues appear; it costs one stored vector per iteration (grown as needed, never
preallocated), which is why `max_iter` stays modest. Convergence is judged on residuals: the Ritz pair (theta, y) has
||H y - theta y|| = beta_j |s_j|, computed for free from the tridiagonal matrix, and we stop when
that is below `tol` times the largest |Ritz value| for each of the k wanted pairs. The
eigenvalue error is then at most that residual (and usually about its square over the gap).
"""

from __future__ import annotations

import time

import torch

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
    T = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if betas:
        off = torch.tensor(betas, dtype=torch.float64)
        T += torch.diag(off, 1) + torch.diag(off, -1)
    return T


def lanczos(
    operator: LinearOperator,
    k: int = 1,
    *,
    max_iter: int = 100,
    tol: float = 1e-4,
    which: str = "LA",
    seed: int = 0,
    return_eigenvectors: bool = True,
) -> EigenResult:
    """Top-k eigenvalues (and unit eigenvectors) of a symmetric operator, best first.

    `which`: "LA" largest algebraic (sharpness), "SA" smallest algebraic, "LM" largest magnitude.
    Stops after `max_iter` products, when the k wanted residuals are below `tol` (relative), or
    when the Krylov space is exhausted (then fewer than k values may come back, all exact).
    """
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    if k < 1:
        raise ValueError("k must be at least 1")
    start_time = time.perf_counter()
    start_products = operator.n_products
    dim, dtype, device = operator.dim, operator.dtype, operator.device
    steps = min(max_iter, dim)
    q = seeded_vector(dim, seed, dtype, device)
    basis = [q / torch.linalg.vector_norm(q)]
    alphas: list[float] = []
    betas: list[float] = []
    history: list[list[float]] = []
    converged = False
    theta = S = wanted = residuals = None
    for j in range(steps):
        w = checked_matvec(operator, basis[j], solver="Lanczos", iteration=j + 1).to(dtype)
        alpha = float(torch.dot(basis[j], w))
        w -= alpha * basis[j]
        if j > 0:
            w -= betas[-1] * basis[j - 1]
        for _ in range(2):  # modified Gram-Schmidt, twice: no stacked copy of the basis
            for q in basis:
                w -= torch.dot(q, w) * q
        beta = float(torch.linalg.vector_norm(w))
        alphas.append(alpha)
        theta, S = torch.linalg.eigh(_tridiagonal(alphas, betas))
        wanted = _wanted(theta, k, which)
        residuals = (beta * S[-1, wanted].abs()).tolist()
        history.append(theta[wanted].tolist())
        scale = max(float(theta.abs().max()), torch.finfo(dtype).tiny)
        exhausted = beta <= 10 * torch.finfo(dtype).eps * scale
        if exhausted or (len(alphas) >= k and all(r <= tol * scale for r in residuals)):
            converged = True
            break
        if j + 1 < steps:
            betas.append(beta)
            basis.append(w / beta)
    n = len(alphas)
    eigenvectors = None
    if return_eigenvectors:
        coefficients = S[:, wanted].to(device=device, dtype=dtype)
        eigenvectors = torch.zeros(dim, len(wanted), dtype=dtype, device=device)
        for i in range(n):
            eigenvectors += basis[i][:, None] * coefficients[i]
        eigenvectors /= torch.linalg.vector_norm(eigenvectors, dim=0, keepdim=True)
    return EigenResult(
        eigenvalues=theta[wanted].tolist(),
        residuals=residuals,
        n_products=operator.n_products - start_products,
        converged=converged,
        seconds=time.perf_counter() - start_time,
        eigenvectors=eigenvectors,
        history=history,
    )
