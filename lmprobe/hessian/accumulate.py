"""Inner products and Gram-Schmidt accumulated in float64, on vectors stored in any dtype.

A float32 dot product over millions of entries loses about sqrt(n) * 6e-8 of relative accuracy,
which caps what a float32 Lanczos basis can certify near 1e-4. Solvers here keep their stored
vectors in the operator's dtype (memory) and do every reduction in float64 (accuracy).
"""

from __future__ import annotations

import torch

FLOAT64 = torch.float64


def dot64(a: torch.Tensor, b: torch.Tensor) -> float:
    """a . b summed in float64."""
    return float(torch.dot(a.to(FLOAT64), b.to(FLOAT64)))


def norm64(a: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a.to(FLOAT64)))


def orthogonalize_(w: torch.Tensor, basis: list[torch.Tensor], passes: int = 2) -> torch.Tensor:
    """Remove from the float64 vector `w`, in place, its components along `basis` (orthonormal
    vectors in any dtype), by modified Gram-Schmidt repeated `passes` times ("twice is enough")."""
    for _ in range(passes):
        for q in basis:
            q64 = q.to(FLOAT64)
            w.sub_(q64, alpha=float(torch.dot(q64, w)))
    return w
