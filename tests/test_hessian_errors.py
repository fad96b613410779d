"""Bad input to the Hessian code fails with one-line LmprobeErrors that say what to do."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "hessian_scripts"))
import hessian_problems as problems  # noqa: E402

from lmprobe.errors import LmprobeError  # noqa: E402
from lmprobe.hessian import (  # noqa: E402
    HessianOperator,
    adam_preconditioner,
    hutchinson_trace,
    lanczos,
    measure_sharpness,
    power_iteration,
    select_parameters,
)


def raises_one_line(match: str):
    class _Checker:
        def __enter__(self):
            self._context = pytest.raises(LmprobeError, match=match)
            self._info = self._context.__enter__()
            return self._info

        def __exit__(self, *exc):
            handled = self._context.__exit__(*exc)
            assert "\n" not in str(self._info.value)
            return handled

    return _Checker()


def test_model_without_trainable_parameters():
    model = problems.mlp().requires_grad_(False)
    with raises_one_line(r"no parameters with requires_grad=True \(eval-only form\).*requires_grad_\(True\)"):
        measure_sharpness(model, problems.classification_loss, problems.mlp_batches())


def test_inside_inference_mode():
    model, batches = problems.mlp(), problems.mlp_batches()
    with torch.inference_mode(), raises_one_line(r"inside torch.inference_mode\(\).*outside inference_mode"):
        HessianOperator(model, problems.classification_loss, batches)
    operator = HessianOperator(model, problems.classification_loss, batches)
    with torch.inference_mode(), raises_one_line("inference_mode"):
        operator.matvec(torch.ones(operator.dim, dtype=torch.float64))


def test_model_built_under_inference_mode():
    with torch.inference_mode():
        model = problems.mlp()
    with raises_one_line("created under torch.inference_mode"):
        HessianOperator(model, problems.classification_loss, problems.mlp_batches())


def test_block_matching_nothing_lists_valid_prefixes():
    model = problems.tiny_gpt2()
    with raises_one_line(r"block 'decoder' matches no trainable parameter.*'transformer.wte'.*'transformer.h.0'") as info:
        measure_sharpness(model, problems.lm_loss, problems.token_batches(), block="decoder")
    assert "'embeddings'" in str(info.value) and "re:" in str(info.value)
    with raises_one_line("not a valid regular expression"):
        select_parameters(model, "re:h.(")


def _nan_batches():
    batches = problems.mlp_batches(n=3)
    batches[1][0][0, 0] = float("nan")
    return batches


@pytest.mark.parametrize(
    "solver, name",
    [
        (lambda op: lanczos(op, k=2), "Lanczos"),
        (lambda op: power_iteration(op), "power iteration"),
        (lambda op: hutchinson_trace(op, n_probes=5), "Hutchinson"),
    ],
)
def test_non_finite_product_names_solver_iteration_and_batch(solver, name):
    operator = HessianOperator(problems.mlp(), problems.classification_loss, _nan_batches())
    with raises_one_line(rf"non-finite Hessian-vector product in {name} iteration 1, at batch index 1"):
        solver(operator)


def test_non_finite_product_reports_the_iteration_it_happened_in():
    calls = []

    def loss_turning_infinite(model, batch):
        calls.append(1)
        loss = problems.classification_loss(model, batch)
        return loss * float("inf") if len(calls) == 4 else loss  # iteration 2, batch index 1

    operator = HessianOperator(problems.mlp(), loss_turning_infinite, problems.mlp_batches(n=2))
    with raises_one_line("Lanczos iteration 2, at batch index 1"):
        lanczos(operator, k=1)


def test_loss_fn_must_return_a_scalar_with_a_graph():
    model, batches = problems.mlp(), problems.mlp_batches()
    operator = HessianOperator(model, lambda m, b: m(b[0]), batches)
    with raises_one_line(r"loss_fn returned Tensor of shape \(10, 3\) for batch index 0.*scalar tensor"):
        operator.matvec(torch.ones(operator.dim, dtype=torch.float64))
    detached = HessianOperator(model, lambda m, b: problems.classification_loss(m, b).detach(), batches)
    with raises_one_line("does not depend on the selected parameters"):
        detached.matvec(torch.ones(detached.dim, dtype=torch.float64))


def test_empty_batches_and_wrong_vector_shape():
    with raises_one_line("no batches"):
        HessianOperator(problems.mlp(), problems.classification_loss, [])
    operator = HessianOperator(problems.mlp(), problems.classification_loss, problems.mlp_batches())
    with raises_one_line(rf"expected \({operator.dim},\)"):
        operator.matvec(torch.ones(3, dtype=torch.float64))


def test_adam_preconditioner_needs_adam_state():
    model = problems.mlp()
    adam = torch.optim.Adam(model.parameters(), lr=0.01)
    with raises_one_line(r"no Adam state for parameter '0.weight'; take at least one optimizer step"):
        measure_sharpness(model, problems.classification_loss, problems.mlp_batches(), optimizer=adam)
    with raises_one_line("needs an Adam or AdamW optimizer, got SGD"):
        adam_preconditioner(torch.optim.SGD(model.parameters(), lr=0.1), select_parameters(model))
    other = problems.mlp(seed=1)
    with raises_one_line("not in the optimizer's parameter groups"):
        adam_preconditioner(adam, select_parameters(other))
