"""Trace estimators: Hutchinson (tr(H) = E[z.Hz], z Rademacher) and Hutch++ (Meyer et al. 2021).

Hutch++ spends a third of its products sketching the top of the spectrum (Q = orth(H S)), takes
tr(Q^T H Q) exactly with another third, and runs Hutchinson on the deflated rest (I - QQ^T) H
(I - QQ^T) with the last third. When the spectrum decays, the rest is small and so is the error.
All inner products are accumulated in float64; stored vectors stay in the operator's dtype.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from lmprobe.hessian.accumulate import FLOAT64, dot64, orthogonalize_
from lmprobe.hessian.operator import LinearOperator, checked_matvec
from lmprobe.hessian.results import seeded_vector


@dataclass
class TraceEstimate:
    """The estimate and its standard error (sample std of the probe values / sqrt(n_probes)).

    For Hutch++, `estimate` = `low_rank` (the exact trace over the sketched subspace) + the mean of
    `samples` (the deflated probes), `n_probes` counts the deflated probes and `stderr` is theirs.
    """

    estimate: float
    stderr: float
    n_probes: int
    n_products: int
    seconds: float
    samples: list[float] = field(default_factory=list)
    method: str = "hutchinson"
    low_rank: float = 0.0


def hutchinson_trace(
    operator: LinearOperator,
    *,
    n_probes: int = 100,
    seed: int = 0,
    rtol: float | None = None,
    min_probes: int = 10,
) -> TraceEstimate:
    """Estimate tr(H) from up to `n_probes` Rademacher probes (one product each).

    With `rtol`, stop early once stderr <= rtol * |estimate| (after at least `min_probes`).
    Probe i is drawn from seed + i, so the estimate is reproducible and identical on every process.
    """
    if n_probes < 2:
        raise ValueError("n_probes must be at least 2 to estimate a standard error")
    start_time = time.perf_counter()
    start_products = operator.n_products
    samples: list[float] = []
    mean = stderr = 0.0
    for i in range(n_probes):
        z = seeded_vector(operator.dim, seed + i, operator.dtype, operator.device, kind="rademacher")
        hz = checked_matvec(operator, z, solver="Hutchinson", iteration=i + 1)
        samples.append(dot64(z, hz))
        if len(samples) >= 2:
            values = torch.tensor(samples, dtype=torch.float64)
            mean = float(values.mean())
            stderr = float(values.std(unbiased=True)) / math.sqrt(len(samples))
            if rtol is not None and len(samples) >= min_probes and stderr <= rtol * abs(mean):
                break
    return TraceEstimate(
        estimate=mean,
        stderr=stderr,
        n_probes=len(samples),
        n_products=operator.n_products - start_products,
        seconds=time.perf_counter() - start_time,
        samples=samples,
    )


def hutch_plus_plus_trace(operator: LinearOperator, *, n_products: int = 30, seed: int = 0) -> TraceEstimate:
    """Estimate tr(H) by Hutch++ with `n_products` products (a multiple of 3 is used, at least 6).

    Sketch S and probes G are Rademacher vectors from seeds seed, seed + 1, ... (same on every
    process). Q is orthonormalised by Gram-Schmidt in float64 and stored in the operator's dtype.
    """
    third = n_products // 3
    if third < 2:
        raise ValueError("Hutch++ needs n_products >= 6 (two deflated probes for a standard error)")
    start_time = time.perf_counter()
    start_products = operator.n_products
    dim, dtype, device = operator.dim, operator.dtype, operator.device

    def product(vector: torch.Tensor, iteration: int) -> torch.Tensor:
        return checked_matvec(operator, vector, solver="Hutch++", iteration=iteration).to(FLOAT64)

    def rademacher(index: int) -> torch.Tensor:
        return seeded_vector(dim, seed + index, dtype, device, kind="rademacher")

    basis: list[torch.Tensor] = []
    for i in range(third):
        w = orthogonalize_(product(rademacher(i), i + 1), basis)
        norm = float(torch.linalg.vector_norm(w))
        if norm > 0.0:
            basis.append((w / norm).to(dtype))
    low_rank = sum(dot64(q, product(q, third + i + 1)) for i, q in enumerate(basis))
    samples = []
    for i in range(third):
        g = orthogonalize_(rademacher(third + i).to(FLOAT64), basis, passes=1)
        samples.append(dot64(g, product(g.to(dtype), 2 * third + i + 1)))
    values = torch.tensor(samples, dtype=FLOAT64)
    return TraceEstimate(
        estimate=low_rank + float(values.mean()),
        stderr=float(values.std(unbiased=True)) / math.sqrt(len(samples)),
        n_probes=len(samples),
        n_products=operator.n_products - start_products,
        seconds=time.perf_counter() - start_time,
        samples=samples,
        method="hutch++",
        low_rank=low_rank,
    )
