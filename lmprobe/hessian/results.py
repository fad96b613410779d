"""What an eigen-solver returns, and the random start vectors every process agrees on."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class EigenResult:
    """Eigenvalue estimates, best first, with the cost of getting them.

    `eigenvectors` holds unit vectors as columns (dim x k), or None when not requested.
    `residuals[i]` is ||H y_i - theta_i y_i||: some eigenvalue of H lies within it of theta_i, always.
    `error_bounds[i]` is the certified bound quoted for theta_i and `bound_kinds[i]` says which it
    is: "residual" (r_i plus 10 eps(dtype) max|Ritz value| for rounding, valid always). `gap_error_estimates[i]` is the tighter Kato-Temple-style
    r_i^2 / gap_i with gap_i from the other Ritz values: usually the real error's size, but not
    certified (an eigenvalue the Krylov space has not resolved may be closer than the Ritz gap).
    `converged` is True only when the solver's stopping
    rule was met (never because it ran out of products). `history[j]` holds the estimates after
    product j+1 (for convergence plots and for counting products to a given accuracy).
    """

    eigenvalues: list[float]
    residuals: list[float]
    n_products: int
    converged: bool
    seconds: float
    eigenvectors: torch.Tensor | None = None
    history: list[list[float]] = field(default_factory=list)
    error_bounds: list[float] = field(default_factory=list)
    bound_kinds: list[str] = field(default_factory=list)
    gap_error_estimates: list[float] = field(default_factory=list)
    extra_eigenvalues: list[float] = field(default_factory=list)  # Ritz values of the extra vectors

    def relative_errors(self) -> list[float]:
        """error_bounds[i] / |eigenvalues[i]| (inf for a zero eigenvalue)."""
        return [b / abs(v) if v else float("inf") for b, v in zip(self.error_bounds, self.eigenvalues)]


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
