"""Adam's preconditioner and the preconditioned Hessian P^-1/2 H P^-1/2.

Adam steps by lr * m_hat / (sqrt(v_hat) + eps), so near a minimum it is heavy-ball momentum on
P^-1 H with P = diag(sqrt(v_hat) + eps), v_hat = exp_avg_sq / (1 - beta2^step). P^-1 H is not
symmetric but is similar to the symmetric P^-1/2 H P^-1/2, which has the same eigenvalues and
which Lanczos can use. Parameter groups with their own learning rate fold lr_group / lr into P^-1,
so the threshold is quoted for one reference lr. Left out: the bias correction of m (tends to 1)
and AdamW's decoupled weight decay (adds lr * weight_decay to the effective curvature).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from lmprobe.errors import LmprobeError
from lmprobe.hessian.operator import LinearOperator
from lmprobe.hessian.optimizers import group_lr, is_adam, unwrap_optimizer


@dataclass
class AdamPreconditioner:
    """diag(P^-1/2) as a flat vector over a parameter block, with the lr and beta1 it refers to."""

    inverse_sqrt: torch.Tensor
    lr: float
    beta1: float


def adam_preconditioner(
    optimizer: Any,
    named_params: list[tuple[str, nn.Parameter]],
    *,
    lr: float | None = None,
    dtype: torch.dtype = torch.float32,
) -> AdamPreconditioner:
    """Read P from an Adam/AdamW optimizer's state for the given (name, parameter) block."""
    optimizer = unwrap_optimizer(optimizer)
    if not is_adam(optimizer):
        raise LmprobeError(
            f"preconditioned sharpness needs an Adam or AdamW optimizer, got {type(optimizer).__name__}; "
            "pass the Adam optimizer or drop the preconditioned measurement"
        )
    group_of = {id(p): group for group in optimizer.param_groups for p in group["params"]}
    first_group = group_of.get(id(named_params[0][1]))
    reference_lr = lr if lr is not None else (group_lr(first_group) if first_group else None)
    pieces = []
    for name, param in named_params:
        group = group_of.get(id(param))
        if group is None:
            raise LmprobeError(
                f"parameter {name!r} is not in the optimizer's parameter groups; "
                "pass the optimizer that trains this model"
            )
        state = optimizer.state.get(param, {})
        if "exp_avg_sq" not in state or "step" not in state:
            raise LmprobeError(
                f"the optimizer has no Adam state for parameter {name!r}; take at least one optimizer step "
                "before measuring preconditioned sharpness"
            )
        step = float(state["step"])
        beta2 = float(group["betas"][1])
        second_moment = state["max_exp_avg_sq"] if group.get("amsgrad", False) else state["exp_avg_sq"]
        denominator = (second_moment.detach().to(torch.float64) / (1.0 - beta2**step)).sqrt() + float(group["eps"])
        scale = group_lr(group) / reference_lr
        pieces.append((scale / denominator).sqrt().reshape(-1))
    inverse_sqrt = torch.cat(pieces).to(dtype)
    beta1 = float((first_group or optimizer.param_groups[0])["betas"][0])
    return AdamPreconditioner(inverse_sqrt=inverse_sqrt, lr=reference_lr, beta1=beta1)


class PreconditionedOperator:
    """v -> D H D v with D = diag(P^-1/2): symmetric, with the eigenvalues of P^-1 H."""

    def __init__(self, operator: LinearOperator, inverse_sqrt: torch.Tensor) -> None:
        if inverse_sqrt.shape != (operator.dim,):
            raise ValueError(f"preconditioner has shape {tuple(inverse_sqrt.shape)}, expected ({operator.dim},)")
        self.operator = operator
        self.dim = operator.dim
        self.dtype = operator.dtype
        self.device = operator.device
        self.inverse_sqrt = inverse_sqrt.to(device=operator.device, dtype=operator.dtype)

    @property
    def n_products(self) -> int:
        return self.operator.n_products

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        return self.inverse_sqrt * self.operator.matvec(self.inverse_sqrt * vector.to(self.dtype))

    __matmul__ = matvec
