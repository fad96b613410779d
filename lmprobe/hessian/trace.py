"""Hutchinson's trace estimator: tr(H) = E[z.Hz] for Rademacher z, with its standard error."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from lmprobe.hessian.operator import LinearOperator, checked_matvec
from lmprobe.hessian.results import seeded_vector


@dataclass
class TraceEstimate:
    """Mean of the probe values and its standard error (sample std / sqrt(n_probes))."""

    estimate: float
    stderr: float
    n_probes: int
    n_products: int
    seconds: float
    samples: list[float] = field(default_factory=list)


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
        samples.append(float(torch.dot(z, hz.to(operator.dtype))))
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
