"""The sharpness of which loss: the hook's sample, and how much a value depends on it (--spread)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from lmprobe.cli import main
from lmprobe.errors import LmprobeError
from lmprobe.hessian.spread import sharpness_spread, split_parts, spread_summary
from lmprobe.train.train_sample import hessian_indices, random_hessian_indices, read_train_sample


class Diagonal(nn.Module):
    """loss(w) = mean_i 0.5 * sum_j a_ij w_j^2: the Hessian of a part is diag(mean of its a_i)."""

    def __init__(self, dim: int):
        super().__init__()
        self.w = nn.Parameter(torch.ones(dim, dtype=torch.float64))


def quadratic_loss(model: Diagonal, batch: dict) -> torch.Tensor:
    return 0.5 * (batch["a"] * model.w**2).sum(dim=1).mean()


def test_spread_of_a_quadratic_matches_the_per_part_hessians():
    # 6 examples in batches of 2; 3 parts of 2 examples: means [2,0,0], [0,8,0], [1,1,5]
    a = torch.tensor([[1, 0, 0], [3, 0, 0],
                      [0, 10, 0], [0, 6, 0],
                      [2, 0, 4], [0, 2, 6]], dtype=torch.float64)
    batches = [{"a": a[i : i + 2]} for i in range(0, 6, 2)]
    result = sharpness_spread(Diagonal(3), quadratic_loss, batches, 3, tol=1e-6, max_iter=10)
    assert result["values"] == pytest.approx([2.0, 8.0, 5.0], rel=1e-6)
    assert (result["min"], result["median"], result["max"]) == pytest.approx((2.0, 5.0, 8.0), rel=1e-6)
    assert result["relative_spread"] == pytest.approx((8 - 2) / 5, rel=1e-6)
    assert result["examples_per_part"] == 2 and result["parts"] == 3 and all(result["converged"])

    # 2 parts of 3 examples, regrouped into equal batches of 1 (3 is not a multiple of 2):
    # means [4/3, 10/3, 0] and [2/3, 8/3, 10/3]
    halves = sharpness_spread(Diagonal(3), quadratic_loss, batches, 2, tol=1e-6, max_iter=10)
    assert halves["values"] == pytest.approx([10 / 3, 10 / 3], rel=1e-6)
    assert halves["relative_spread"] == pytest.approx(0.0, abs=1e-6)
    assert halves["batches_per_part"] == 3


def test_split_parts_is_disjoint_and_equal():
    x = torch.arange(10).reshape(10, 1)
    parts = split_parts([{"x": x[:4]}, {"x": x[4:8]}, {"x": x[8:]}], 3)
    seen = [int(v) for part in parts for batch in part for v in batch["x"].flatten()]
    assert sorted(seen) == list(range(9)) and len(set(seen)) == 9  # one left over
    assert all(len(b["x"]) == len(part[0]["x"]) for part in parts for b in part)
    with pytest.raises(LmprobeError, match="at least 2 parts"):
        split_parts([{"x": x}], 1)
    with pytest.raises(LmprobeError, match="too few"):
        split_parts([{"x": x[:2]}], 3)
    assert spread_summary([3.0, 1.0, 2.0])["relative_spread"] == pytest.approx(1.0)


def test_random_hessian_sample_is_seeded_and_disjoint_from_nothing_it_should_not_be():
    first = random_hessian_indices(4, 8, 1000, seed=0)
    again = random_hessian_indices(4, 8, 1000, seed=0)
    other = random_hessian_indices(4, 8, 1000, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    flat = np.concatenate(first)
    assert len(set(flat.tolist())) == 32 and flat.max() < 1000  # without replacement, in range
    assert not np.array_equal(flat, np.concatenate(other))
    assert not np.array_equal(flat, np.concatenate(hessian_indices(4, 8, 1000)))  # not the first examples
    with pytest.raises(LmprobeError, match="lower them"):
        random_hessian_indices(4, 8, 20, seed=0)


def test_cli_spread_gives_k_values_and_the_json_fields(tiny_run, capsys):
    code = main(["sharpness", str(tiny_run), "--batch-size", "2", "--block", "transformer.h.0",
                 "--spread", "4", "--max-iter", "30", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    report = json.loads(out.out)
    spread = report["spread"]
    assert report["n_examples"] == 8 and spread["parts"] == 4 and spread["examples_per_part"] == 2
    assert len(spread["values"]) == 4 and all(v > 0 for v in spread["values"])
    assert spread["min"] <= spread["median"] <= spread["max"]
    assert spread["relative_spread"] == pytest.approx((spread["max"] - spread["min"]) / spread["median"])
    code = main(["sharpness", str(tiny_run), "--batch-size", "4", "--block", "transformer.h.0", "--spread", "2"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "2 disjoint parts of 4" in out.out and "relative spread" in out.out
    assert main(["sharpness", str(tiny_run), "--spread", "9"]) == 2  # 8 examples: a one-line error
    assert "too few" in capsys.readouterr().err


def test_hook_measures_a_random_sample_under_adam_and_the_gd_batch_under_gd(tiny_config, tiny_run, tmp_path):
    from lmprobe.lm.train_cli import main as train

    def short(name: str, *overrides: str):
        argv = ["--config", str(tiny_config), "--name", name, "--no-progress", f"out_dir={tmp_path}",
                "train.steps=2", "train.checkpoint_every=2", "train.eval_every=2", "sharpness.every=2",
                "sharpness.max_iter=5", "sharpness.alignment=false", "sharpness.block=transformer.h.0",
                "sharpness.n_batches=1", "sharpness.batch_size=8", *overrides]
        assert train(argv) == 0
        return read_train_sample(tmp_path / name / "probe").hessian

    first = read_train_sample(tiny_run / "probe").hessian  # no hook: the first 8 training examples
    adam = short("adam")
    assert adam[0]["input_ids"].shape == first[0]["input_ids"].shape
    assert not torch.equal(adam[0]["input_ids"], first[0]["input_ids"])
    gd = short("gd", "optim.name=gd", "optim.gd_batches=1", "optim.schedule=constant", "optim.warmup_steps=0")
    assert torch.equal(gd[0]["input_ids"], first[0]["input_ids"])  # the GD batch itself
