"""The Hessian of a loss over a fixed list of batches, as a symmetric linear operator.

The loss is the average of the per-batch mean losses returned by `loss_fn(model, batch)`, over
every batch of every process; so H = (1/B) * sum_b H_b, and a product is Σ_b H_b v summed over
processes with one `all_reduce`, divided by the global batch count B. Products use double
backward (reverse over reverse): it measured faster than torch.func forward-over-reverse on
GPT-2 (see BENCHMARKS.md, "## Hessian").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn

from lmprobe.errors import LmprobeError
from lmprobe.hessian.blocks import flatten, select_parameters, unflatten
from lmprobe.hessian.distributed import all_reduce_sum, rank_and_world_size, unwrap_model
from lmprobe.hessian.modes import measurement_mode

LossFn = Callable[[nn.Module, Any], torch.Tensor]


class LinearOperator(Protocol):
    """What the solvers need: a symmetric map on flat vectors that counts its products."""

    dim: int
    dtype: torch.dtype
    device: torch.device

    @property
    def n_products(self) -> int: ...

    def matvec(self, vector: torch.Tensor) -> torch.Tensor: ...


class DenseOperator:
    """A dense symmetric matrix behind the LinearOperator interface: the reference the solvers
    are tested and benchmarked against (a Hessian from torch.autograd.functional.hessian, a
    matrix with a chosen spectrum)."""

    def __init__(self, matrix: torch.Tensor) -> None:
        self.matrix, self.dim, self.dtype, self.device = matrix, matrix.shape[0], matrix.dtype, matrix.device
        self._n_products = 0

    @property
    def n_products(self) -> int:
        return self._n_products

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        self._n_products += 1
        return self.matrix @ vector

    __matmul__ = matvec


class NonFiniteProductError(LmprobeError):
    """A Hessian-vector product came out inf/NaN; solvers add their iteration to the message."""

    def __init__(self, batch_index: int | None, rank: int, world_size: int) -> None:
        self.batch_index = batch_index
        self.rank = rank
        self.world_size = world_size
        super().__init__(f"non-finite Hessian-vector product {self.where()}")

    def where(self) -> str:
        if self.batch_index is None:
            return "on another process" if self.world_size > 1 else "(every batch was finite: the vector was not)"
        on_rank = f" of process {self.rank}'s shard" if self.world_size > 1 else ""
        return f"at batch index {self.batch_index}{on_rank}"


def checked_matvec(operator: LinearOperator, vector: torch.Tensor, *, solver: str, iteration: int) -> torch.Tensor:
    """operator.matvec(vector), with a non-finite product reported as a one-line user error."""
    try:
        return operator.matvec(vector)
    except NonFiniteProductError as exc:
        raise LmprobeError(
            f"non-finite Hessian-vector product in {solver} iteration {iteration}, {exc.where()}: "
            "the loss or its curvature overflowed there; check that batch's loss, lower the learning rate, "
            "or measure in float64"
        ) from None


def _check_autograd_available() -> None:
    if torch.is_inference_mode_enabled():
        raise LmprobeError(
            "Hessian-vector products were requested inside torch.inference_mode() (eval-only form); "
            "call the Hessian code outside inference_mode"
        )


class HessianOperator:
    """H v for the loss averaged over `batches` (this process's shard), w.r.t. one parameter block.

    The operator is a definition, not a snapshot: each product uses the parameters as they are now.
    Gradient graphs: a product needs each batch's gradient built with `create_graph=True`, then one
    double-backward pass through it. With `cache_graph=True` those graphs are built once and reused
    (measured ~1.4x faster per product, see BENCHMARKS.md) and rebuilt if a parameter is modified in
    place; the cost is holding every local batch's graph at once. The default (None) caches exactly
    when this process has one batch: then the cache costs no memory beyond a single product's peak.
    `loss_fn` receives the unwrapped model (DDP forward hooks stay quiet) and must move the batch
    to the right device itself. `train=True` measures in train mode (see `lmprobe.hessian.modes`).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        batches: Sequence[Any],
        *,
        block: str | None = None,
        train: bool = True,
        cache_graph: bool | None = None,
        process_group: dist.ProcessGroup | None = None,
    ) -> None:
        _check_autograd_available()
        self.model = unwrap_model(model)
        self.loss_fn = loss_fn
        self.batches = list(batches)
        self.cache_graph = len(self.batches) == 1 if cache_graph is None else cache_graph
        self.block = block
        self.train = train
        self.process_group = process_group
        named = select_parameters(self.model, block)
        self.param_names = [name for name, _ in named]
        self.params = [p for _, p in named]
        self.dim = sum(p.numel() for p in self.params)
        self.dtype = torch.promote_types(self.params[0].dtype, torch.float32)
        self.device = self.params[0].device
        self.rank, self.world_size = rank_and_world_size(process_group)
        count = torch.tensor([float(len(self.batches))], dtype=torch.float64, device=self.device)
        self.n_batches = int(all_reduce_sum(count, process_group).item())
        if self.n_batches == 0:
            raise LmprobeError("no batches to take the Hessian over; pass a non-empty list of batches")
        self._n_products = 0
        self._graphs: list[tuple[torch.Tensor, ...]] | None = None
        self._graph_versions: list[int] = []

    @property
    def n_products(self) -> int:
        """Hessian-vector products taken so far (one product covers all batches)."""
        return self._n_products

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        """H @ vector for a flat vector of length `dim`; returns a flat vector of `dtype`."""
        _check_autograd_available()
        if vector.shape != (self.dim,):
            raise LmprobeError(f"vector has shape {tuple(vector.shape)}, expected ({self.dim},); flatten it first")
        pieces = unflatten(vector.to(self.device), self.params)
        total = torch.zeros(self.dim, dtype=self.dtype, device=self.device)
        finite_flags = []
        with torch.enable_grad(), measurement_mode(self.model, self.train):
            for index in range(len(self.batches)):
                product = flatten(self._batch_product(index, pieces), self.dtype)
                finite_flags.append(torch.isfinite(product).all())
                total += product
        all_reduce_sum(total, self.process_group)
        total /= self.n_batches
        self._n_products += 1
        if not bool(torch.isfinite(total).all()):
            bad = [i for i, ok in enumerate(finite_flags) if not bool(ok)]
            raise NonFiniteProductError(bad[0] if bad else None, self.rank, self.world_size)
        return total

    __matmul__ = matvec

    def _batch_gradient(self, index: int) -> tuple[torch.Tensor, ...]:
        loss = self.loss_fn(self.model, self.batches[index])
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise LmprobeError(
                f"loss_fn returned {type(loss).__name__} of shape {tuple(getattr(loss, 'shape', ()))} for batch "
                f"index {index}; it must return the batch's mean loss as a scalar tensor"
            )
        if not loss.requires_grad:
            raise LmprobeError(
                f"loss_fn's loss for batch index {index} does not depend on the selected parameters "
                "(computed under no_grad or detached?); return the loss with its autograd graph"
            )
        grads = torch.autograd.grad(loss.reshape(()), self.params, create_graph=True, allow_unused=True)
        return tuple(g if g is not None else torch.zeros_like(p) for g, p in zip(grads, self.params))

    def _gradient_graph(self, index: int) -> tuple[torch.Tensor, ...]:
        if not self.cache_graph:
            return self._batch_gradient(index)
        versions = [p._version for p in self.params]
        if self._graphs is None or versions != self._graph_versions:
            self._graphs = [self._batch_gradient(i) for i in range(len(self.batches))]
            self._graph_versions = versions
        return self._graphs[index]

    def _batch_product(self, index: int, pieces: list[torch.Tensor]) -> list[torch.Tensor]:
        grads = self._gradient_graph(index)
        live = [(g, v) for g, v in zip(grads, pieces) if g.requires_grad]
        if not live:  # the loss is linear in every selected parameter
            return [torch.zeros_like(p) for p in self.params]
        products = torch.autograd.grad(
            [g for g, _ in live],
            self.params,
            grad_outputs=[v for _, v in live],
            retain_graph=self.cache_graph,
            allow_unused=True,
            materialize_grads=True,
        )
        return list(products)
