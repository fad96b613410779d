"""End to end: train a tiny GPT-2 on a corpus with planted opposing pairs (tests/mining_corpus.py)
through the real trainer, then `lmprobe mine --checkpoint RUN --json` with default flags must
report every planted pair — a rare target and a 75/25 split among them — and little else."""

import json
import warnings

import pytest

from tests.mining_corpus import PAIRS, write_corpus

STEPS = 240
CONFIG = """
model: {{n_layer: 1, n_head: 2, n_embd: 48}}
data: {{source: {corpus}, tokenizer: bpe-300, block_size: 64}}
optim: {{name: adamw, lr: 3.0e-3, warmup_steps: 5, schedule: constant}}
train: {{steps: {steps}, batch_size: 8, log_every: 50, eval_every: 100000, eval_batches: 1, checkpoint_every: 100000}}
trace: {{every: 2, n_sequences: 48, batch_size: 48}}
"""


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory, one_thread):
    from lmprobe.lm.train_cli import main

    root = tmp_path_factory.mktemp("planted")
    corpus = write_corpus(root / "corpus.jsonl")
    config = root / "planted.yaml"
    config.write_text(CONFIG.format(corpus=corpus, steps=STEPS))
    with warnings.catch_warnings():  # bpe-300 splits ' the' and says so; this corpus has none
        warnings.simplefilter("ignore", UserWarning)
        assert main(["--config", str(config), "--name", "x", "--no-progress", f"out_dir={root}"]) == 0
    return root / "x"


def test_default_mining_recovers_every_planted_pair(planted_run, capsys):
    from lmprobe.cli import main

    assert main(["mine", "--checkpoint", str(planted_run), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["mode"] == "groups"
    # The run starts with a loss collapse (ln 300 ~ 5.7 -> ~0.3 nats in ~50 steps): left out.
    assert data["window_choice"]["how"] == "after transient"
    assert 10 <= data["window"][0] <= STEPS // 2

    def words(pair):
        examples = pair["examples_a"] + pair["examples_b"]
        return {e["target"].strip() for e in examples}

    reported = [words(p) for p in data["pairs"]]
    planted = [{p.first, p.second} for p in PAIRS]
    for pair in planted:
        assert pair in reported, f"planted pair {pair} not reported; got {reported}"
    precision = sum(r in planted for r in reported) / len(reported)
    assert precision >= 0.8, reported
    for pair in data["pairs"]:
        if words(pair) == {"Hi", "Lo"}:  # the 75/25 pair: sizes about 3 to 1
            assert 2.0 <= pair["size_a"] / pair["size_b"] <= 5.0
    strengths = [p["strength"] for p in data["pairs"]]
    assert strengths == sorted(strengths, reverse=True)


def test_the_whole_run_with_its_collapse_still_yields_every_planted_pair(planted_run, capsys):
    """`--steps 0:` keeps the initial collapse in, where the planted pairs are not learned yet:
    with the sliding windows (and half of alpha for the whole window) every planted pair is
    still reported, each with the window fields (measured: all five in the whole window)."""
    from lmprobe.cli import main

    assert main(["mine", "--checkpoint", str(planted_run), "--steps", "0:", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["window"][0] == 0 and data["pair_test"]["n_windows"] > 1

    def words(pair):
        return {e["target"].strip() for e in pair["examples_a"] + pair["examples_b"]}

    planted = [{p.first, p.second} for p in PAIRS]
    reported = [words(p) for p in data["pairs"] if p["kind"] == "pair"]
    assert all(pair in reported for pair in planted), reported
    for pair in data["pairs"]:
        assert "window" in pair and "windows" in pair and "window_label" in pair
        if pair["window"] is not None:
            assert pair["window"][0] >= 0 and pair["window"][1] > pair["window"][0]
    assert data["complexity"]["groupings"] == ["target", "feature-target", "feature2-feature-target"]
