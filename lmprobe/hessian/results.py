"""What an eigen-solver returns, and the random start vectors every process agrees on."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class EigenResult:
    """Eigenvalue estimates, best first, with the cost of getting them.

    `eigenvectors` holds unit vectors as columns (dim x k), or None when not requested.
    `residuals[i]` is ||H y_i - theta_i y_i||, an upper bound on the distance from theta_i to the
    nearest true eigenvalue. `history[j]` holds the estimates after product j+1 (for convergence
    plots and for counting products to a given accuracy).
    """

    eigenvalues: list[float]
    residuals: list[float]
    n_products: int
    converged: bool
    seconds: float
    eigenvectors: torch.Tensor | None = None
    history: list[list[float]] = field(default_factory=list)


def seeded_vector(
    dim: int, seed: int, dtype: torch.dtype, device: torch.device, kind: str = "gaussian"
) -> torch.Tensor:
    """A random vector drawn on the CPU from a private generator: identical on every process
    (so distributed solvers stay in lock step) and independent of the global RNG state."""
    generator = torch.Generator().manual_seed(seed)
    if kind == "gaussian":
        vector = torch.randn(dim, generator=generator, dtype=torch.float64)
    elif kind == "rademacher":
        vector = torch.randint(0, 2, (dim,), generator=generator).to(torch.float64) * 2 - 1
    else:
        raise ValueError(f"unknown random vector kind {kind!r}")
    return vector.to(device=device, dtype=dtype)
