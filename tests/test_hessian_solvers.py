"""Solvers on explicit matrices, Adam's preconditioned sharpness, and the stability thresholds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "hessian_scripts"))
import hessian_problems as problems  # noqa: E402

from lmprobe.hessian import (  # noqa: E402
    DenseOperator,
    HessianOperator,
    PreconditionedOperator,
    adam_preconditioner,
    adam_threshold,
    gd_threshold,
    heavy_ball_threshold,
    lanczos,
    measure_sharpness,
    nesterov_threshold,
    optimizer_threshold,
    power_iteration,
    select_parameters,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def symmetric_with_spectrum(spectrum: torch.Tensor, seed: int = 0) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(len(spectrum), len(spectrum), generator=torch.Generator().manual_seed(seed),
                                       dtype=torch.float64))
    return q @ torch.diag(spectrum) @ q.T


def test_lanczos_finds_largest_smallest_and_largest_magnitude():
    spectrum = torch.cat([torch.tensor([10.0, 9.0, 7.5, -12.0]), torch.linspace(-3, 3, 196)]).double()
    operator = DenseOperator(symmetric_with_spectrum(spectrum))
    top = lanczos(operator, k=3, tol=1e-10)
    assert top.eigenvalues == pytest.approx([10.0, 9.0, 7.5], rel=1e-9)
    assert lanczos(operator, k=2, which="SA", tol=1e-10).eigenvalues == pytest.approx([-12.0, -3.0], rel=1e-9)
    assert lanczos(operator, k=1, which="LM", tol=1e-10).eigenvalues == pytest.approx([-12.0], rel=1e-9)
    assert top.n_products < 100 and top.converged


def test_lanczos_full_reorthogonalisation_gives_no_ghost_copies():
    spectrum = torch.cat([torch.tensor([100.0]), torch.linspace(0, 1, 299)]).double()
    operator = DenseOperator(symmetric_with_spectrum(spectrum, seed=3))
    result = lanczos(operator, k=2, tol=1e-12, max_iter=150)
    assert result.eigenvalues[0] == pytest.approx(100.0, rel=1e-10)
    assert result.eigenvalues[1] == pytest.approx(1.0, abs=1e-6)  # not a second copy of 100


def test_lanczos_stops_when_krylov_space_is_exhausted():
    spectrum = torch.tensor([5.0, 5.0, 2.0, 0.0, 0.0, 0.0]).double()
    operator = DenseOperator(symmetric_with_spectrum(spectrum))
    result = lanczos(operator, k=2, tol=1e-12, max_iter=50)
    assert result.converged and result.n_products <= 4
    assert result.eigenvalues == pytest.approx([5.0, 2.0], rel=1e-10)


def test_lanczos_needs_far_fewer_products_than_power_iteration_with_a_small_gap():
    spectrum = torch.cat([torch.tensor([1.0, 0.97]), torch.linspace(0, 0.9, 398)]).double()
    operator = DenseOperator(symmetric_with_spectrum(spectrum))
    fast = lanczos(operator, k=1, tol=1e-4)
    slow = power_iteration(operator, tol=1e-6, max_iter=1000)
    assert abs(fast.eigenvalues[0] - 1.0) < 1e-6 and abs(slow.eigenvalues[0] - 1.0) < 1e-3
    assert 3 * fast.n_products < slow.n_products


def _adam_problem(amsgrad: bool = False, second_group_lr: float | None = None, fused_adamw: bool = False):
    model, loss_fn, batches = problems.mlp(), problems.classification_loss, problems.mlp_batches()
    params = list(model.parameters())
    groups = [{"params": params[:2]}, {"params": params[2:]}]
    if second_group_lr is not None:
        groups[1]["lr"] = second_group_lr
    if fused_adamw:  # what lmprobe's trainer builds: step counts live in tensors
        optimizer = torch.optim.AdamW(groups, lr=0.01, betas=(0.9, 0.99), eps=1e-3, amsgrad=amsgrad, fused=True)
    else:
        optimizer = torch.optim.Adam(groups, lr=0.01, betas=(0.9, 0.99), eps=1e-3, amsgrad=amsgrad)
    for step in range(3):
        optimizer.zero_grad()
        loss_fn(model, batches[step % len(batches)]).backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model, loss_fn, batches, optimizer


def _dense_preconditioned(model, loss_fn, batches, optimizer, lr):
    names = [n for n, _ in model.named_parameters()]
    hessian = problems.dense_hessian(model, loss_fn, batches, names).detach()
    diagonal = []
    for group in optimizer.param_groups:
        beta2, eps = group["betas"][1], group["eps"]
        for p in group["params"]:
            state = optimizer.state[p]
            second = state["max_exp_avg_sq"] if group["amsgrad"] else state["exp_avg_sq"]
            v_hat = second / (1 - beta2 ** float(state["step"]))
            diagonal.append((group["lr"] / lr / (v_hat.sqrt() + eps)).reshape(-1))
    p_inverse = torch.cat(diagonal)
    return hessian, p_inverse


@pytest.mark.parametrize(
    "amsgrad, second_group_lr, fused_adamw", [(False, None, False), (True, 0.003, False), (False, None, True)]
)
def test_preconditioned_eigenvalues_match_dense(amsgrad, second_group_lr, fused_adamw):
    model, loss_fn, batches, optimizer = _adam_problem(amsgrad, second_group_lr, fused_adamw)
    hessian, p_inverse = _dense_preconditioned(model, loss_fn, batches, optimizer, lr=0.01)
    symmetric = p_inverse.sqrt()[:, None] * hessian * p_inverse.sqrt()[None, :]
    expected = torch.linalg.eigvalsh(symmetric).flip(0)[:3]
    # the same spectrum from the non-symmetric P^-1 H, as a check on the symmetric form itself
    nonsymmetric = torch.linalg.eigvals(p_inverse[:, None] * hessian).real.sort(descending=True).values[:3]
    torch.testing.assert_close(nonsymmetric, expected, rtol=1e-8, atol=1e-10)

    preconditioner = adam_preconditioner(optimizer, select_parameters(model), dtype=torch.float64)
    assert preconditioner.lr == 0.01 and preconditioner.beta1 == 0.9
    operator = PreconditionedOperator(HessianOperator(model, loss_fn, batches), preconditioner.inverse_sqrt)
    result = lanczos(operator, k=3, tol=1e-9, max_iter=200)
    torch.testing.assert_close(torch.tensor(result.eigenvalues, dtype=torch.float64), expected, rtol=1e-4, atol=0)


def test_measure_sharpness_with_adam_adds_preconditioned_sharpness_and_38_over_lr():
    model, loss_fn, batches, optimizer = _adam_problem()
    hessian, p_inverse = _dense_preconditioned(model, loss_fn, batches, optimizer, lr=0.01)
    symmetric = p_inverse.sqrt()[:, None] * hessian * p_inverse.sqrt()[None, :]
    report = measure_sharpness(model, loss_fn, batches, optimizer=optimizer, tol=1e-8, max_iter=150)
    assert report["sharpness"] == pytest.approx(float(torch.linalg.eigvalsh(hessian)[-1]), rel=1e-4)
    assert report["preconditioned_sharpness"] == pytest.approx(float(torch.linalg.eigvalsh(symmetric)[-1]), rel=1e-4)
    assert report["preconditioned_threshold"] == pytest.approx(38 / 0.01)
    assert report["threshold"] is None and report["gd_threshold"] == pytest.approx(200.0)
    assert report["preconditioned_converged"] and report["converged"]
    assert all(p.grad is None for p in model.parameters())


def _final_distance(run, curvature: float, steps: int = 500) -> float:
    """|x| after `steps` steps on the 1-D quadratic f(x) = curvature x^2 / 2 from x = 1."""
    return abs(run(curvature, steps))


def _torch_optimizer_on_quadratic(make_optimizer):
    def run(curvature: float, steps: int) -> float:
        x = torch.nn.Parameter(torch.ones((), dtype=torch.float64))
        optimizer = make_optimizer([x])
        for _ in range(steps):
            optimizer.zero_grad()
            (0.5 * curvature * x**2).backward()
            optimizer.step()
        return float(x.detach())

    return run


def _adam_with_frozen_preconditioner(lr: float, beta1: float, p: float):
    """Adam's update lr * m / p with m an EMA of gradients and p held fixed (the EoS regime)."""
    def run(curvature: float, steps: int) -> float:
        x, m = 1.0, 0.0
        for _ in range(steps):
            m = beta1 * m + (1 - beta1) * curvature * x
            x -= lr * m / p
        return x

    return run


@pytest.mark.parametrize(
    "name, threshold, run",
    [
        ("gd", gd_threshold(0.1), _torch_optimizer_on_quadratic(lambda p: torch.optim.SGD(p, lr=0.1))),
        ("heavy_ball", heavy_ball_threshold(0.1, 0.9),
         _torch_optimizer_on_quadratic(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9))),
        ("dampened", heavy_ball_threshold(0.1, 0.8, dampening=0.5),
         _torch_optimizer_on_quadratic(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.8, dampening=0.5))),
        ("nesterov", nesterov_threshold(0.1, 0.9),
         _torch_optimizer_on_quadratic(lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True))),
        # the threshold is on the preconditioned curvature curvature / p
        ("adam", adam_threshold(0.1, 0.9) * 2.0, _adam_with_frozen_preconditioner(0.1, 0.9, p=2.0)),
    ],
)
def test_thresholds_separate_convergence_from_divergence(name, threshold, run):
    assert _final_distance(run, 0.98 * threshold) < 1e-3
    assert _final_distance(run, 1.02 * threshold) > 1e3


def test_threshold_values_and_optimizer_dispatch():
    assert adam_threshold(1.0, 0.9) == pytest.approx(38.0)
    assert heavy_ball_threshold(0.5, 0.9) == pytest.approx(7.6)
    params = [torch.nn.Parameter(torch.zeros(1))]
    assert optimizer_threshold(torch.optim.SGD(params, lr=0.1)).rule == "gd"
    assert optimizer_threshold(torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True)).rule == "nesterov"
    adam = optimizer_threshold(torch.optim.AdamW(params, lr=0.1), lr=0.05)
    assert adam.preconditioned and adam.value == pytest.approx(38 / 0.05)
    assert optimizer_threshold(torch.optim.Adagrad(params, lr=0.1)) is None
