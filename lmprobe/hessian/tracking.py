"""Sharpness every training step for a few products: Lanczos warm-started from the last eigenvectors.

Between two nearby steps the top eigenvectors barely turn, so a Krylov space started from the
previous ones (their sum, for k > 1) holds the new ones to within the small rotation after a
product or two; the stopping rule (certified relative error `tol`, settled over two products, see
`lmprobe.hessian.lanczos`) then ends the measurement early. The first call, any call after the
parameter count changed, and every `refresh_every`-th call start cold from a seeded random vector.

Eigenvalues cross: the vector followed can stop being the top one. `guard` more Ritz vectors (the
next ones below the k wanted, not certified) are kept and put into the next start when their value
was within GUARD_GAP of the lowest wanted one, so the
Krylov space holds the branch that overtakes and the top Ritz value is the larger of the two; the
products stay few because only the k wanted values must pass the stopping rule.

`follow_above=f` follows every eigenvalue above f * threshold (e.g. 0.75 * 2/lr = 1.5/lr, as in the
"central flows" analysis), not only the top k: the count found above the cut last time, plus one
guard below it, is measured; when all of them still lie above the cut the count doubles (up to
`max_k`) until one falls below. The plain Hessian uses the plain threshold (2/lr, momentum rules);
the preconditioned one (Adam) uses the preconditioned threshold.

Distributed: every process holds the same vectors (products are all-reduced, everything after is
deterministic) and random vectors come from `seeded_vector`, so processes stay in lock step. The
state is only the last eigenvectors, in memory: nothing to save, and a resumed run starts cold.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from lmprobe.errors import LmprobeError
from lmprobe.hessian.lanczos import lanczos
from lmprobe.hessian.operator import LinearOperator, LossFn
from lmprobe.hessian.results import EigenResult, seeded_vector
from lmprobe.hessian.sharpness import (SharpnessProblem, check_k_within, check_solver_settings, sharpness_problem,
                                       solve_and_report)

KINDS = ("plain", "preconditioned")
# A guard vector joins the start only when its Ritz value was within this fraction of the lowest
# wanted one: only then can it cross it by the next step, and otherwise it would cost products.
GUARD_GAP = 0.1


class SharpnessTracker:
    """Measure sharpness repeatedly, each time warm-started from the previous eigenvectors.

        tracker = SharpnessTracker(k=1, tol=1e-3)
        report = tracker.measure(model, loss_fn, batches, optimizer=opt, lr=lr)   # every step

    `report` is measure_sharpness's dict (eigenvalues with error_bounds), plus "warm" (whether this
    measurement was warm-started) and, with `follow_above`, "follow_cut" and "n_above_cut" (and their
    "preconditioned_" twins under Adam).
    """

    def __init__(
        self,
        *,
        k: int = 1,
        block: str | None = None,
        tol: float = 1e-3,
        max_iter: int = 100,
        follow_above: float | None = None,
        max_k: int = 32,
        refresh_every: int | None = None,
        guard: int = 1,
        seed: int = 0,
        train: bool = True,
        cache_graph: bool | None = None,
        process_group: dist.ProcessGroup | None = None,
    ) -> None:
        if k < 1 or max_k < k:
            raise LmprobeError(f"SharpnessTracker needs 1 <= k <= max_k, got k={k}, max_k={max_k}; fix k or max_k")
        check_solver_settings(k, tol, max_iter)
        if follow_above is not None and not follow_above > 0:
            raise LmprobeError(f"follow_above must be a positive fraction of the threshold, got {follow_above}")
        if refresh_every is not None and refresh_every < 1:
            raise LmprobeError(f"refresh_every must be at least 1 (or None for never), got {refresh_every}")
        self.k, self.block, self.tol, self.max_iter = k, block, tol, max_iter
        self.follow_above, self.max_k, self.refresh_every = follow_above, max_k, refresh_every
        self.guard = guard
        self.seed, self.train, self.cache_graph, self.process_group = seed, train, cache_graph, process_group
        self.n_measurements = 0
        self._vectors: dict[str, torch.Tensor] = {}
        self._n_above: dict[str, int] = {}
        self._values: dict[str, tuple[list[float], list[float]]] = {}

    def eigenvectors(self, kind: str = "plain") -> torch.Tensor | None:
        """The last measurement's wanted eigenvectors as unit columns [dim, k], best first (None
        before the first); over the parameters `select_parameters(model, block)` lists."""
        vectors = self._vectors.get(kind)
        return None if vectors is None else vectors[:, : len(self._values[kind][0])]

    def reset(self) -> None:
        """Forget the previous eigenvectors: the next measurement starts cold."""
        self._vectors.clear()
        self._n_above.clear()
        self._values.clear()

    def measure(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        batches: Sequence[Any],
        *,
        optimizer: Any = None,
        lr: float | None = None,
    ) -> dict[str, Any]:
        """One measurement; the same arguments and report as `measure_sharpness`, plus bounds."""
        start = time.perf_counter()
        problem = sharpness_problem(
            model, loss_fn, batches, block=self.block, optimizer=optimizer, lr=lr, train=self.train,
            cache_graph=self.cache_graph, process_group=self.process_group,
        )
        check_k_within(self.k, problem.operator, self.block)
        if self.refresh_every is not None and self.n_measurements % self.refresh_every == 0:
            self.reset()
        if any(v.shape[0] != problem.operator.dim for v in self._vectors.values()):
            self.reset()
        warm = bool(self._vectors)
        extras: dict[str, Any] = {"warm": warm}

        def solve(kind: str, operator: LinearOperator) -> EigenResult:
            result, cut, n_above = self._solve(kind, operator, self._cut(kind, problem))
            if cut is not None:
                prefix = "" if kind == "plain" else "preconditioned_"
                extras[prefix + "follow_cut"] = cut
                extras[prefix + "n_above_cut"] = n_above
            return result

        report = solve_and_report(problem, solve, start)
        self.n_measurements += 1
        report.update(extras)
        report["seconds"] = time.perf_counter() - start
        return report

    def _cut(self, kind: str, problem: SharpnessProblem) -> float | None:
        if self.follow_above is None:
            return None
        if kind == "plain":
            threshold = problem.plain_threshold
        else:
            threshold = problem.stability.value if problem.stability is not None else None
        return None if threshold is None else self.follow_above * threshold

    def _solve(self, kind: str, operator: LinearOperator, cut: float | None) -> tuple[EigenResult, float | None, int]:
        previous = self._vectors.get(kind)
        k = self.k if cut is None else max(self.k, min(self._n_above.get(kind, 0) + 1, self.max_k))
        seed = self.seed + self.n_measurements
        result = self._lanczos(operator, k, previous, seed, self._values.get(kind))
        while cut is not None and len(result.eigenvalues) == k < self.max_k and min(result.eigenvalues) > cut:
            k = min(2 * k, self.max_k)  # everything measured is above the cut: there may be more
            result = self._lanczos(operator, k, result.eigenvectors, seed, None)
        n_above = sum(value > cut for value in result.eigenvalues) if cut is not None else 0
        self._vectors[kind] = result.eigenvectors
        self._values[kind] = (result.eigenvalues, result.extra_eigenvalues)
        self._n_above[kind] = n_above
        return result, cut, n_above

    def _lanczos(
        self, operator: LinearOperator, k: int, previous: torch.Tensor | None, seed: int,
        values: tuple[list[float], list[float]] | None,
    ) -> EigenResult:
        """Lanczos from the sum of the previous vectors; with fewer of them than k, a seeded random
        unit vector joins the sum so that the missing eigenvectors can enter the Krylov space."""
        start = None
        if previous is not None:
            start = previous[:, :k + self.guard].clone()
            top, below = values or ([], [])
            for column, value in enumerate(below[: start.shape[1] - k]):
                near = bool(top) and value >= (1 - GUARD_GAP) * top[-1]
                start[:, k + column] *= 1.0 if near else 0.0
            if start.shape[1] < k + self.guard:
                extra = seeded_vector(operator.dim, seed, start.dtype, start.device)
                start = torch.cat([start, (extra / extra.norm()).unsqueeze(1)], dim=1)
        return lanczos(operator, k, max_iter=self.max_iter, tol=self.tol, seed=seed, start=start,
                       extra_vectors=self.guard)
