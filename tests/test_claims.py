"""`lmprobe claims` on a tiny toy study (2 seeds, 200 steps): every column, intervals equal to
hand-computed ones, finished runs reused, a killed run resumed, verdict rules that flip with
their input."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from scipy import stats as scipy_stats

from lmprobe.claims import rules
from lmprobe.claims.stats import mean_interval
from lmprobe.claims.studies import Model
from lmprobe.cli import main as cli_main

TINY = Model("tiny-toy", "linear toy, 200 steps", "cli/train_toy.py", "configs/toy/linear-opposing.yaml",
             quick=True, overrides=("train.steps=200", "train.checkpoint_every=100", "sharpness.every=5"))


def launches(run: Path) -> int:
    return len((run / "launches.jsonl").read_text().splitlines())


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    import lmprobe.claims.optimizers as optimizers
    import lmprobe.claims.studies as studies

    patch = pytest.MonkeyPatch()
    patch.setattr(studies, "MODELS", (TINY,))
    patch.setattr(optimizers, "STUDY_MODELS", ())  # the optimizer study has its own tests
    out = tmp_path_factory.mktemp("claims")
    yield out
    patch.undo()


def claims(out: Path, capsys, *more: str):
    code = cli_main(["claims", "--quick", "--seeds", "2", "--out", str(out), "--no-progress", *more])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return captured.out, json.loads((out / "claims.json").read_text())


def test_every_claim_gets_every_column_and_the_interval_of_its_seeds(study, capsys):
    out, data = claims(study, capsys)
    # every claim, but the SGD one only where some seed trained by mini-batch SGD (not this GD toy)
    assert {r["claim"] for r in data["claims"]} == {c.name for c in rules.CLAIMS if not c.where_measured}
    for row in data["claims"]:
        assert set(row) >= {"claim", "title", "model", "statistic", "per_seed", "mean", "low", "high", "n", "rule",
                            "verdict"}
        assert row["model"] == "tiny-toy" and len(row["per_seed"]) == 2
        assert row["verdict"] in (rules.HOLDS, rules.PARTLY, rules.FAILS, rules.NOT_MEASURED)
        seeds = [v for v in row["per_seed"] if v is not None]
        if len(seeds) == 2:  # the 95% t interval, by hand
            mean = sum(seeds) / 2
            half = scipy_stats.t.ppf(0.975, 1) * scipy_stats.sem(seeds)
            assert row["mean"] == pytest.approx(mean)
            if half > 0:
                assert mean - row["low"] == pytest.approx(half, rel=1e-3)
                assert row["high"] - mean == pytest.approx(half, rel=1e-3)
    runs = data["runs"]["tiny-toy"]
    assert [r["seed"] for r in runs] == [0, 1]
    sharp = next(r for r in data["claims"] if r["claim"] == "sharpness")
    assert sharp["per_seed"] == [r["median_ratio_after_crossing"] for r in runs]
    for name in ("claims.md", "claims.png"):
        assert (study / name).stat().st_size > 200
    assert "Claims over 2 seed(s)" in " ".join(out.split())
    assert [u["verdict"] for u in data["unmeasured"]] == [rules.NOT_MEASURED] * len(rules.UNMEASURED)


def test_a_second_call_reuses_the_runs_and_a_killed_run_resumes(study, capsys):
    claims(study, capsys)
    seed0, seed1 = study / "tiny-toy-seed0", study / "tiny-toy-seed1"
    before = launches(seed0), launches(seed1)
    _, first = claims(study, capsys)
    assert (launches(seed0), launches(seed1)) == before  # nothing trained again
    # a run killed after its step-100 checkpoint: the last checkpoint never got written
    shutil.rmtree(seed1 / "checkpoints" / "step-000200")
    _, again = claims(study, capsys)
    assert launches(seed0) == before[0] and launches(seed1) == before[1] + 1
    resumed = json.loads((seed1 / "launches.jsonl").read_text().splitlines()[-1])
    assert resumed["resume"] is True and (seed1 / "checkpoints" / "step-000200").is_dir()
    assert again["runs"] == first["runs"]  # the resumed run ends where the uninterrupted one did


def test_only_filters_and_a_bad_name_is_one_line(study, capsys):
    _, data = claims(study, capsys, "--only", "pairs")
    assert {r["claim"] for r in data["claims"]} == {"pairs"}
    code = cli_main(["claims", "--quick", "--out", str(study), "--only", "nosuch"])
    err = capsys.readouterr().err
    assert code == 2 and "not a model, claim or study" in err and "\n" not in err.strip()


def test_the_t_interval_matches_scipy():
    values = [0.2, 0.5, 0.9, 0.4]
    got = mean_interval(values + [None])
    half = scipy_stats.t.ppf(0.975, 3) * scipy_stats.sem(values)
    assert (got.n, got.missing) == (4, 1)
    assert got.mean - got.low == pytest.approx(half, rel=1e-3) and got.high - got.mean == pytest.approx(half, rel=1e-3)
    assert math.isnan(mean_interval([None]).mean)


def seeds(**numbers):
    keys = list(numbers)
    return [{k: numbers[k][i] for k in keys} for i in range(len(numbers[keys[0]]))]


def verdict(name, planted):
    claim = next(c for c in rules.CLAIMS if c.name == name)
    return claim.verdict(planted, mean_interval([s.get(claim.statistic) for s in planted]))


@pytest.mark.parametrize("name, holds, fails", [
    ("sharpness", seeds(sharpness_logged=[True] * 3, crossed=[True] * 3, median_ratio_after_crossing=[1.0, 1.1, 0.95]),
     seeds(sharpness_logged=[True] * 3, crossed=[False] * 3, median_ratio_after_crossing=[None] * 3)),
    ("follow", seeds(share_aligned=[1.0, 0.8, 0.7], p_follow=[0.01, 0.02, 0.2]),
     seeds(share_aligned=[0.1, 0.0, 0.2], p_follow=[0.5, 0.7, 0.4])),
    ("pairs", seeds(n_pairs=[2, 1, 3], top_pair_corr=[-0.9, -0.6, -0.7]), seeds(n_pairs=[0, 0], top_pair_corr=[None, None])),
    ("sides", seeds(sides_apart_share=[1.0, 0.5, 1.0]), seeds(sides_apart_share=[0.0, 0.0, 0.0])),
    ("half", seeds(frac_rose_median=[0.45, 0.5, 0.4]), seeds(frac_rose_median=[0.05, 0.1, 0.08])),
    ("top1", seeds(top1_share_at_spikes=[0.3, 0.2, 0.25]), seeds(top1_share_at_spikes=[0.01, 0.02, 0.01])),
    ("complexity", seeds(complexity_tau=[0.8, 0.7, 0.9], complexity_p=[0.01, 0.02, 0.03]),
     seeds(complexity_tau=[-0.5, -0.2, -0.4], complexity_p=[0.2, 0.5, 0.3])),
    ("blocks", seeds(sharpest_block_depth=[0.0, 0.25, 0.0]), seeds(sharpest_block_depth=[1.0, 0.75, 1.0])),
    ("sgd", seeds(sgd_variance_share=[0.7, 0.6, 0.8], sgd_example_share=[0.1, 0.1, 0.1]),
     seeds(sgd_variance_share=[0.1, 0.12, 0.1], sgd_example_share=[0.1, 0.1, 0.1])),
])
def test_each_rule_flips_with_its_input(name, holds, fails):
    assert verdict(name, holds) == rules.HOLDS
    assert verdict(name, fails) == rules.FAILS


def test_a_where_measured_claim_has_a_row_only_for_models_that_measure_it():
    from lmprobe.claims.evaluate import evaluate

    sgd = next(c for c in rules.CLAIMS if c.name == "sgd")
    numbers = {"gd-model": [{"sgd_variance_share": None}] * 2,
               "sgd-model": [{"sgd_variance_share": 0.6, "sgd_example_share": 0.1},
                             {"sgd_variance_share": 0.7, "sgd_example_share": 0.1}]}
    rows = evaluate(numbers, [sgd])
    assert [r.model for r in rows] == ["sgd-model"] and rows[0].verdict == rules.HOLDS


def test_variance_share_of_a_partition_sums_to_one_and_finds_the_movers():
    import numpy as np

    from lmprobe.claims.measure import variance_share

    rng = np.random.default_rng(0)
    losses = 1.0 + rng.normal(0, 0.001, (50, 100)).cumsum(axis=0)
    losses[:, :10] += 0.5 * (-1.0) ** np.arange(50)[:, None]  # ten examples swing the mean loss
    movers, share_of_examples = variance_share(losses, np.arange(10))
    rest, _ = variance_share(losses, np.arange(10, 100))
    assert movers + rest == pytest.approx(1.0)
    assert movers > 0.95 and share_of_examples == pytest.approx(0.1)


def test_depth_blocks_split_every_model_from_input_to_output():
    from transformers import GPT2Config, GPT2LMHeadModel

    from lmprobe.claims.blocks import depth_blocks
    from toy.models import build_model as toy_model
    from vision.models import build_model as vision_model

    gpt = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=8, n_head=2, vocab_size=50, n_positions=16))
    assert depth_blocks(gpt) == ["transformer.wte", "transformer.wpe", "transformer.h.0", "transformer.h.1",
                                 "transformer.ln_f"]
    assert depth_blocks(toy_model("mlp", 3, 4, 2, "tanh", 1.0)) == ["net.0", "net.2", "net.4"]
    assert depth_blocks(vision_model("cnn", 10, width=4)) == ["net.0", "net.3", "net.7"]


def test_block_sharpness_is_measured_once_and_read_back(study, capsys):
    from lmprobe.claims.blocks import CACHE, block_sharpness

    run = study / "tiny-toy-seed0"
    first = json.loads((run / CACHE).read_text())  # written by the claims runs above
    assert first["blocks"] == ["hidden", "out"] and len(first["sharpness"]) == 2
    assert first["sharpest_depth"] == first["blocks"].index(first["sharpest"])  # two blocks: depth 0 or 1
    assert block_sharpness(run) == first


def test_the_grid_puts_each_claims_verdict_and_mean_under_its_model():
    from lmprobe.claims.evaluate import evaluate
    from lmprobe.claims.report import grid

    half = next(c for c in rules.CLAIMS if c.name == "half")
    sgd = next(c for c in rules.CLAIMS if c.name == "sgd")
    numbers = {"a": [{"frac_rose_median": 0.4}, {"frac_rose_median": 0.5}],
               "b": [{"frac_rose_median": 0.1, "sgd_variance_share": 0.7}, {"frac_rose_median": 0.1, "sgd_variance_share": 0.6}]}
    lines = grid(evaluate(numbers, [half, sgd]))
    assert lines[0] == "| claim | a | b |"
    assert lines[2] == f"| {half.title} | holds (0.45) | does not hold (0.1) |"
    assert lines[3] == f"| {sgd.title} |  | holds (0.65) |"  # not measured on a: an empty cell


def test_under_sgd_the_sharpness_claim_reads_the_batch_sharpness():
    from lmprobe.claims.measure import sharpness_numbers

    gd = [{"step": s, "sharpness": v, "sharpness_threshold": 10.0} for s, v in ((10, 5.0), (20, 11.0), (30, 9.0))]
    assert sharpness_numbers(gd)["median_ratio_after_crossing"] == pytest.approx(1.0)
    sgd = [dict(r, batch_sharpness=2 * r["sharpness"]) for r in gd]  # the step's mini-batch is sharper
    found = sharpness_numbers(sgd)
    assert found["batch_sharpness"] and found["median_ratio_after_crossing"] == pytest.approx(1.8)  # 20, 22, 18 / 10 from step 10
