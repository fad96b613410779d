"""The Hessian operator and its solvers against dense Hessians of small models."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent / "hessian_scripts"))
import hessian_problems as problems  # noqa: E402

from lmprobe.hessian import (  # noqa: E402
    HessianOperator,
    hutchinson_trace,
    lanczos,
    measure_sharpness,
    power_iteration,
    select_parameters,
    unwrap_model,
)
from lmprobe.hessian.blocks import block_matches  # noqa: E402

RTOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")


def _case(name: str):
    """(model, loss_fn, batches, block, dense Hessian) for a named small problem."""
    if name == "mlp":
        model, loss_fn, batches, block = problems.mlp(), problems.classification_loss, problems.mlp_batches(), None
    elif name == "cnn_batchnorm":
        model, loss_fn, batches, block = problems.cnn(), problems.classification_loss, problems.cnn_batches(), None
    else:
        model, loss_fn, batches = problems.tiny_gpt2(), problems.lm_loss, problems.token_batches()
        block = "transformer.h.0.mlp"
    names = [n for n, _ in select_parameters(model, block)]
    was_training = model.training
    model.train(name == "cnn_batchnorm")  # batch statistics for BN; GPT-2's dropout must be off
    dense = problems.dense_hessian(model, loss_fn, batches, names).detach()
    model.train(was_training)
    return model, loss_fn, batches, block, dense


CASES = {}


def case(name: str):
    if name not in CASES:
        CASES[name] = _case(name)
    return CASES[name]


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("name", ["mlp", "cnn_batchnorm", "gpt2_block"])
def test_lanczos_top_eigenvalues_match_dense(name):
    model, loss_fn, batches, block, dense = case(name)
    operator = HessianOperator(model, loss_fn, batches, block=block)
    assert operator.dim == dense.shape[0]
    result = lanczos(operator, k=3, tol=1e-8, max_iter=200)
    expected = torch.linalg.eigvalsh(dense).flip(0)[:3]
    assert result.converged
    assert result.n_products == operator.n_products == len(result.history)
    torch.testing.assert_close(torch.tensor(result.eigenvalues, dtype=torch.float64), expected, rtol=RTOL, atol=0)
    residual = dense @ result.eigenvectors - result.eigenvectors * torch.tensor(result.eigenvalues)
    assert float(residual.norm(dim=0).max()) < 1e-4 * float(expected[0])


@pytest.mark.parametrize("name", ["mlp", "gpt2_block"])
def test_matvec_equals_dense_product(name):
    model, loss_fn, batches, block, dense = case(name)
    operator = HessianOperator(model, loss_fn, batches, block=block)
    vector = torch.randn(operator.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(operator.matvec(vector), dense @ vector, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("name", ["mlp", "gpt2_block"])
def test_power_iteration_matches_dense_top_eigenvalue(name):
    model, loss_fn, batches, block, dense = case(name)
    spectrum = torch.linalg.eigvalsh(dense)
    largest_magnitude = spectrum[spectrum.abs().argmax()]
    result = power_iteration(HessianOperator(model, loss_fn, batches, block=block), max_iter=2000, tol=1e-10)
    error = abs(result.eigenvalues[0] - float(largest_magnitude))
    assert error <= RTOL * abs(float(largest_magnitude))
    assert error <= result.error_bounds[0] == result.residuals[0]
    # PyHessian's rule stopped it (relative change < 1e-10), but its residual does not support 1e-10
    assert result.n_products < 2000 and not result.converged


def test_power_iteration_stops_on_relative_change():
    model, loss_fn, batches, block, _ = case("mlp")
    result = power_iteration(HessianOperator(model, loss_fn, batches), max_iter=100, tol=1e-3)
    last, before = result.history[-1][0], result.history[-2][0]
    assert abs(last - before) / (abs(before) + 1e-6) < 1e-3
    assert result.n_products == len(result.history) < 100
    # stopped by the relative change, yet not certified: its residual is above 1e-3 * |estimate|
    assert result.residuals[0] > 1e-3 * abs(last) and not result.converged


@pytest.mark.parametrize("name", ["mlp", "gpt2_block"])
def test_hutchinson_trace_within_four_standard_errors(name):
    model, loss_fn, batches, block, dense = case(name)
    estimate = hutchinson_trace(HessianOperator(model, loss_fn, batches, block=block), n_probes=60, seed=11)
    exact = float(torch.trace(dense))
    assert estimate.n_probes == estimate.n_products == 60
    assert 0 < estimate.stderr < abs(exact)
    assert abs(estimate.estimate - exact) <= 4 * estimate.stderr


def test_hutchinson_stops_early_at_requested_relative_error():
    model, loss_fn, batches, block, _ = case("mlp")
    estimate = hutchinson_trace(HessianOperator(model, loss_fn, batches), n_probes=500, rtol=0.2, min_probes=10)
    assert 10 <= estimate.n_probes < 500
    assert estimate.stderr <= 0.2 * abs(estimate.estimate)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("name", ["mlp", "gpt2_block"])
def test_operator_is_symmetric(name, dtype, tolerance):
    if name == "mlp":
        model, loss_fn = problems.mlp(dtype=dtype), problems.classification_loss
        batches, block = [(x.to(dtype), y) for x, y in problems.mlp_batches()], None
    else:
        model, loss_fn, batches = problems.tiny_gpt2(dtype=dtype), problems.lm_loss, problems.token_batches()
        block = "transformer.h.0"
    operator = HessianOperator(model, loss_fn, batches, block=block)
    generator = torch.Generator().manual_seed(7)
    u, v = (torch.randn(operator.dim, generator=generator).to(dtype) for _ in range(2))
    hu, hv = operator.matvec(u), operator.matvec(v)
    assert hu.dtype == dtype
    scale = float(u.norm() * hv.norm() + v.norm() * hu.norm())
    assert abs(float(u @ hv) - float(v @ hu)) <= tolerance * scale


def test_float32_lanczos_matches_float64_dense():
    model, loss_fn, batches, _, dense = case("mlp")
    model32 = problems.mlp(dtype=torch.float32)
    batches32 = [(x.float(), y) for x, y in batches]
    result = lanczos(HessianOperator(model32, loss_fn, batches32), k=3, tol=1e-6)
    assert result.eigenvectors.dtype == torch.float32
    expected = torch.linalg.eigvalsh(dense).flip(0)[:3]
    torch.testing.assert_close(torch.tensor(result.eigenvalues, dtype=torch.float64), expected, rtol=RTOL, atol=0)


def test_cached_graph_gives_same_products_and_follows_parameter_updates():
    model, loss_fn, batches, _, _ = case("mlp")
    model = problems.mlp()
    vector = torch.randn(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    plain = HessianOperator(model, loss_fn, batches)
    cached = HessianOperator(model, loss_fn, batches, cache_graph=True)
    torch.testing.assert_close(cached.matvec(vector), plain.matvec(vector), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(cached.matvec(vector), plain.matvec(vector), rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        model[0].weight.mul_(1.5)
    torch.testing.assert_close(cached.matvec(vector), plain.matvec(vector), rtol=1e-12, atol=1e-12)


def test_batchnorm_measured_in_train_mode_without_touching_running_stats_or_grads():
    model, loss_fn, batches, _, dense = case("cnn_batchnorm")
    model.eval()
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    report = measure_sharpness(model, loss_fn, batches, k=2, tol=1e-8, lr=0.1)
    torch.testing.assert_close(
        torch.tensor(report["eigenvalues"], dtype=torch.float64),
        torch.linalg.eigvalsh(dense).flip(0)[:2], rtol=RTOL, atol=0,
    )
    assert not model.training and not any(m.training for m in model.modules())
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, buffers[name]), name
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in model.parameters())
    assert all(m.track_running_stats for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert report["threshold"] == pytest.approx(20.0) and report["threshold_rule"] == "gd"


def test_dropout_is_off_during_products_and_restored_after():
    model = problems.tiny_gpt2()
    model.train()
    batches = problems.token_batches()
    operator = HessianOperator(model, problems.lm_loss, batches, block="transformer.h.0.attn")
    vector = torch.randn(operator.dim, dtype=torch.float64)
    assert torch.equal(operator.matvec(vector), operator.matvec(vector))
    rng_before = torch.get_rng_state()
    measure_sharpness(model, problems.lm_loss, batches, block="transformer.h.0.attn", max_iter=5)
    assert torch.equal(torch.get_rng_state(), rng_before)
    assert model.training and all(m.training for m in model.modules())
    assert all(m.p == 0.1 for m in model.modules() if isinstance(m, nn.Dropout))
    assert all(p.grad is None for p in model.parameters())


def test_measure_sharpness_reports_eigenvalues_cost_and_thresholds():
    model, loss_fn, batches, block, dense = case("gpt2_block")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    report = measure_sharpness(model, loss_fn, batches, k=2, block=block, optimizer=optimizer, tol=1e-8)
    torch.testing.assert_close(
        torch.tensor(report["eigenvalues"], dtype=torch.float64),
        torch.linalg.eigvalsh(dense).flip(0)[:2], rtol=RTOL, atol=0,
    )
    assert report["sharpness"] == report["eigenvalues"][0]
    assert report["n_params"] == dense.shape[0] and report["n_batches"] == len(batches)
    assert report["n_products"] > 0 and report["seconds"] > 0 and report["converged"]
    assert report["lr"] == 0.05 and report["gd_threshold"] == pytest.approx(40.0)
    assert report["threshold_rule"] == "heavy_ball" and report["threshold"] == pytest.approx(3.8 / 0.05)
    assert "preconditioned_sharpness" not in report


def test_block_rules():
    model = problems.tiny_gpt2()
    embeddings = [n for n, _ in select_parameters(model, "embeddings")]
    assert embeddings == ["transformer.wte.weight", "transformer.wpe.weight"]
    assert [n for n, _ in select_parameters(model, "re:ln_\\d\\.bias$")] == [
        "transformer.h.0.ln_1.bias", "transformer.h.0.ln_2.bias"
    ]
    assert all(n.startswith("transformer.h.0.") for n, _ in select_parameters(model, "transformer.h.0"))
    assert block_matches("transformer.h.1.mlp.c_fc.weight", "transformer.h.1")
    assert not block_matches("transformer.h.10.mlp.c_fc.weight", "transformer.h.1")
    model.transformer.wpe.weight.requires_grad_(False)
    assert [n for n, _ in select_parameters(model, "embeddings")] == ["transformer.wte.weight"]


def test_wrapped_models_are_unwrapped():
    model, loss_fn, batches, _, _ = case("mlp")
    wrapped = nn.DataParallel(model)
    assert unwrap_model(wrapped) is model
    vector = torch.ones(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    torch.testing.assert_close(
        HessianOperator(wrapped, loss_fn, batches).matvec(vector), HessianOperator(model, loss_fn, batches).matvec(vector)
    )


def test_gpt2_in_eval_mode_uses_the_math_attention_kernel():
    """transformers' default SDPA attention has no double backward through the fused CPU kernel;
    the operator runs products under the math kernel, so eval mode works too."""
    model, loss_fn, batches, block, dense = case("gpt2_block")
    assert model.config._attn_implementation == "sdpa"
    operator = HessianOperator(model, loss_fn, batches, block=block, train=False)
    vector = torch.randn(operator.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(operator.matvec(vector), dense @ vector, rtol=1e-7, atol=1e-9)


def test_works_when_called_under_no_grad():
    model, loss_fn, batches, _, dense = case("mlp")
    with torch.no_grad():
        report = measure_sharpness(model, loss_fn, batches, tol=1e-8)
    assert report["sharpness"] == pytest.approx(float(torch.linalg.eigvalsh(dense)[-1]), rel=RTOL)
