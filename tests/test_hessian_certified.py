"""Certified eigenvalues where the most negative eigenvalue dominates, warm-started tracking, Hutch++.

Ground truth: dense float64 Hessians (torch.autograd.functional.hessian) and eigvalsh.
"""

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
    SharpnessTracker,
    adam_preconditioner,
    hutch_plus_plus_trace,
    hutchinson_trace,
    lanczos,
    measure_sharpness,
    select_parameters,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def dense_spectrum(model, loss_fn, batches) -> torch.Tensor:
    names = [n for n, _ in model.named_parameters()]
    return torch.linalg.eigvalsh(problems.dense_hessian(model, loss_fn, batches, names).detach()).flip(0)


def assert_within_bounds(result, truth: torch.Tensor) -> None:
    for value, bound, expected in zip(result.eigenvalues, result.error_bounds, truth.tolist()):
        assert abs(value - expected) <= bound + 1e-12, (value, expected, bound)


@pytest.fixture(scope="module")
def wrong_mlp():
    model, batches, optimizer = problems.confidently_wrong_mlp()
    return model, batches, optimizer, dense_spectrum(model, problems.classification_loss, batches)


@pytest.fixture(scope="module")
def wrong_gpt2():
    model, batches = problems.confidently_wrong_gpt2()
    model.eval()
    return model, batches, dense_spectrum(model, problems.lm_loss, batches)


def test_mlp_negative_eigenvalue_dominates(wrong_mlp):
    *_, spectrum = wrong_mlp
    assert -spectrum[-1] > 20 * spectrum[0] > 0


@pytest.mark.parametrize("k", [1, 5])
def test_mlp_top_eigenvalues_within_their_bounds(wrong_mlp, k):
    model, batches, _, spectrum = wrong_mlp
    result = lanczos(HessianOperator(model, problems.classification_loss, batches), k=k, tol=1e-3)
    assert result.converged and len(result.eigenvalues) == k
    assert_within_bounds(result, spectrum[:k])
    assert all(e <= 1e-3 for e in result.relative_errors())
    assert all(r <= b <= r + 1e-12 for b, r in zip(result.error_bounds, result.residuals))  # + rounding
    assert result.bound_kinds == ["residual"] * k and len(result.gap_error_estimates) == k


def test_old_rule_would_have_stopped_on_wrong_values(wrong_mlp):
    """The top-5 at tol 1e-3 against max|Ritz| was off by 3.6e-2 here; the new rule is not."""
    model, batches, _, spectrum = wrong_mlp
    result = lanczos(HessianOperator(model, problems.classification_loss, batches), k=5, tol=1e-3)
    errors = (torch.tensor(result.eigenvalues, dtype=torch.float64) - spectrum[:5]).abs()
    assert float(errors.max()) <= 1e-3 * float(spectrum[4])
    assert result.n_products > 14  # the old rule stopped after 14


def test_too_few_products_is_reported_not_converged(wrong_mlp):
    model, batches, _, spectrum = wrong_mlp
    result = lanczos(HessianOperator(model, problems.classification_loss, batches), k=1, tol=1e-3, max_iter=4)
    assert not result.converged and result.n_products == 4
    assert result.residuals[0] > 1e-3 * abs(result.eigenvalues[0])


def test_preconditioned_eigenvalue_from_adamw_state_within_bound(wrong_mlp):
    model, batches, optimizer, _ = wrong_mlp
    preconditioner = adam_preconditioner(optimizer, select_parameters(model), dtype=torch.float64)
    d = preconditioner.inverse_sqrt
    names = [n for n, _ in model.named_parameters()]
    hessian = problems.dense_hessian(model, problems.classification_loss, batches, names).detach()
    truth = torch.linalg.eigvalsh(d[:, None] * hessian * d[None, :]).flip(0)
    operator = PreconditionedOperator(HessianOperator(model, problems.classification_loss, batches), d)
    result = lanczos(operator, k=2, tol=1e-3)
    assert result.converged
    assert_within_bounds(result, truth[:2])


def test_gpt2_negative_eigenvalue_dominates_and_top_is_within_bound(wrong_gpt2):
    model, batches, spectrum = wrong_gpt2
    assert -spectrum[-1] > 4 * spectrum[0] > 0
    report = measure_sharpness(model, problems.lm_loss, batches, k=3, tol=1e-3, lr=0.1, train=False)
    assert report["converged"]
    for value, bound, expected in zip(report["eigenvalues"], report["error_bounds"], spectrum[:3].tolist()):
        assert abs(value - expected) <= bound <= 1e-3 * abs(value)


def test_float32_gpt2_top_eigenvalue_within_bound(wrong_gpt2):
    model, batches, spectrum = wrong_gpt2
    model32 = problems.confidently_wrong_gpt2(dtype=torch.float32)[0].eval()
    result = lanczos(HessianOperator(model32, problems.lm_loss, batches, train=False), k=1, tol=1e-4)
    assert result.converged and result.eigenvectors.dtype == torch.float32
    assert abs(result.eigenvalues[0] - float(spectrum[0])) <= 1e-4 * float(spectrum[0])


def test_measure_sharpness_reports_bounds_under_adamw(wrong_mlp):
    model, batches, optimizer, spectrum = wrong_mlp
    report = measure_sharpness(model, problems.classification_loss, batches, optimizer=optimizer, tol=1e-3)
    for key in ("sharpness", "eigenvalues", "residuals", "converged", "n_products", "seconds", "n_params",
                "n_batches", "block", "lr", "gd_threshold", "threshold", "threshold_rule", "error_bounds",
                "preconditioned_sharpness", "preconditioned_eigenvalues", "preconditioned_converged",
                "preconditioned_threshold", "preconditioned_error_bounds"):
        assert key in report, key
    assert abs(report["sharpness"] - float(spectrum[0])) <= report["error_bounds"][0]
    assert report["converged"] and report["preconditioned_converged"]


def _sgd_sequence(tracker, steps=8, lr=0.01, read_adamw=False):
    """Measure, check against the dense truth, take a small SGD step; return products per
    measurement. With `read_adamw`, the AdamW state (frozen: SGD takes the steps) gives the
    preconditioned operator, which then changes as slowly as the Hessian."""
    model, batches, adamw = problems.confidently_wrong_mlp()
    sgd = torch.optim.SGD(model.parameters(), lr=lr)
    products = []
    for _ in range(steps):
        report = tracker.measure(
            model, problems.classification_loss, batches, optimizer=adamw if read_adamw else sgd, lr=lr
        )
        truth = dense_spectrum(model, problems.classification_loss, batches)
        assert report["converged"]
        assert abs(report["sharpness"] - float(truth[0])) <= report["error_bounds"][0] <= 1e-3 * report["sharpness"]
        products.append(report["n_products"])
        sgd.zero_grad()
        problems.classification_loss(model, batches[0]).backward()
        sgd.step()
    sgd.zero_grad(set_to_none=True)
    return products, report


def test_tracker_warm_start_needs_at_most_three_products_on_average():
    products, report = _sgd_sequence(SharpnessTracker(tol=1e-3))
    assert report["warm"] and products[0] >= 8
    assert sum(products[1:]) / len(products[1:]) <= 3.0


def test_tracker_follows_preconditioned_operator_under_adamw():
    tracker = SharpnessTracker(tol=1e-3)
    products, report = _sgd_sequence(tracker, steps=5, read_adamw=True)
    assert "preconditioned_sharpness" in report and report["preconditioned_converged"]
    assert report["preconditioned_error_bounds"][0] <= 1e-3 * report["preconditioned_sharpness"]
    assert sum(products[1:]) / len(products[1:]) <= 6.5  # two warm operators: measured 7, 6, 6, 6


def test_tracker_follows_every_eigenvalue_above_the_cut(wrong_mlp):
    model, batches, _, spectrum = wrong_mlp
    cut = float(spectrum[2] + spectrum[3]) / 2  # three eigenvalues above it
    lr = 0.75 * 2.0 / cut  # so that 0.75 * (2 / lr) == cut
    tracker = SharpnessTracker(tol=1e-3, follow_above=0.75)
    for _ in range(2):
        report = tracker.measure(model, problems.classification_loss, batches, lr=lr)
        assert report["follow_cut"] == pytest.approx(cut) and report["n_above_cut"] == 3
        above = [v for v in report["eigenvalues"] if v > cut]
        for value, bound, expected in zip(above, report["error_bounds"], spectrum[:3].tolist()):
            assert abs(value - expected) <= bound


def test_tracker_starts_cold_after_reset_and_when_the_block_changes(wrong_mlp):
    model, batches, _, _ = wrong_mlp
    tracker = SharpnessTracker(tol=1e-3)
    assert not tracker.measure(model, problems.classification_loss, batches)["warm"]
    assert tracker.measure(model, problems.classification_loss, batches)["warm"]
    tracker.block = "0"
    assert not tracker.measure(model, problems.classification_loss, batches)["warm"]
    tracker.reset()
    assert not tracker.measure(model, problems.classification_loss, batches)["warm"]


def test_hutch_plus_plus_beats_hutchinson_at_equal_products():
    generator = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(300, 300, generator=generator, dtype=torch.float64))
    spectrum = 1.0 / torch.arange(1, 301, dtype=torch.float64) ** 1.5  # decaying
    operator = DenseOperator(q @ torch.diag(spectrum) @ q.T)
    exact = float(spectrum.sum())
    plain = torch.tensor([hutchinson_trace(operator, n_probes=30, seed=100 * s).estimate for s in range(20)])
    plus = [hutch_plus_plus_trace(operator, n_products=30, seed=100 * s) for s in range(20)]
    estimates = torch.tensor([e.estimate for e in plus])
    assert all(e.n_products == 30 and e.method == "hutch++" for e in plus)
    assert abs(float(estimates.mean()) - exact) <= 3 * float(estimates.std()) / 20**0.5
    assert float(estimates.std()) < 0.5 * float(plain.std())
    assert float(torch.tensor([e.stderr for e in plus]).mean()) < 0.5 * float(plain.std())
