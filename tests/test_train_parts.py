"""The pieces of the training loop that are pure functions or plain files."""

import numpy as np
import pytest
import torch

from lmprobe.config import OptimConfig, TrainConfig
from lmprobe.train.checkpoint import latest_checkpoint, list_checkpoints, load_training_state, save_checkpoint
from lmprobe.train.metrics_log import MetricsLog, read_metrics
from lmprobe.train.optim import learning_rate
from lmprobe.train.sampler import StepSampler, shard


def test_sampler_is_a_function_of_seed_and_step():
    a, b = StepSampler(10, 4, seed=3), StepSampler(10, 4, seed=3)
    seen = [a.global_batch(s, 0, 1) for s in range(5)]
    assert all((x == b.global_batch(s, 0, 1)).all() for s, x in enumerate(seen))
    # each epoch is a permutation: the first 10 draws cover every example once
    assert sorted(np.concatenate(seen)[:10].tolist()) == list(range(10))
    assert not (StepSampler(10, 4, seed=4).global_batch(0, 0, 1) == seen[0]).all()


def test_full_batch_sampler_repeats():
    s = StepSampler(100, 4, seed=0, full_batch=8)
    assert s.global_batch(0, 1, 2).tolist() == s.global_batch(7, 1, 2).tolist() == [4, 5, 6, 7]


def test_shard_splits_contiguously():
    idx = np.arange(8)
    assert shard(idx, 1, 2).tolist() == [4, 5, 6, 7]
    with pytest.raises(ValueError):
        shard(np.arange(5), 0, 2)


def test_cosine_schedule_with_warmup():
    optim, train = OptimConfig(lr=1.0, warmup_steps=10, min_lr_ratio=0.1), TrainConfig(steps=110)
    assert learning_rate(0, optim, train) == pytest.approx(0.1)
    assert learning_rate(10, optim, train) == pytest.approx(1.0)
    assert learning_rate(110, optim, train) == pytest.approx(0.1)
    const = OptimConfig(lr=0.5, schedule="constant")
    assert learning_rate(50, const, train) == 0.5


def test_checkpoints_are_atomic_and_listed(tmp_path):
    def write_model(folder):
        (folder / "model.bin").write_text("weights")

    save_checkpoint(tmp_path, 4, write_model, {"x": torch.ones(2)})
    # a kill in the middle of a save leaves a hidden temporary, never a half checkpoint
    (tmp_path / "checkpoints" / ".step-000008.tmp-999").mkdir()
    (tmp_path / "checkpoints" / "step-000012").mkdir()  # no info file: incomplete
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4]
    save_checkpoint(tmp_path, 8, write_model, {"x": torch.zeros(2)}, keep=1)
    step, path = latest_checkpoint(tmp_path)
    assert step == 8 and not (tmp_path / "checkpoints" / ".step-000008.tmp-999").exists()
    assert [s for s, _ in list_checkpoints(tmp_path)] == [8]
    assert load_training_state(path)["x"].tolist() == [0.0, 0.0]


def test_metrics_log_rewinds(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in (2, 4, 6):
        log.write({"step": step, "loss": float(step)})
    with open(log.path, "a") as f:
        f.write('{"step": 8, "lo')  # torn line from a kill
    log.truncate_after(4)
    assert [r["step"] for r in read_metrics(log.path)] == [2, 4]
    log.write({"step": 6, "loss": float("nan")})
    assert read_metrics(log.path)[-1]["loss"] is None


def test_probe_losses_at_masked_positions_equal_the_full_computation():
    """The probe path (head only at masked positions, in chunks, logsumexp - logit) is exact."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from lmprobe.lm import losses as lm_task

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=97, n_positions=40,
                                       bos_token_id=0, eos_token_id=0)).eval()
    ids = torch.randint(0, 97, (5, 40))
    mask = torch.rand(5, 39) > 0.3
    full = lm_task.token_losses(model, ids)
    hf = model(input_ids=ids, labels=ids).loss
    old_chunk, lm_task.HEAD_CHUNK = lm_task.HEAD_CHUNK, 7  # several chunks, a ragged last one
    try:
        masked = lm_task.token_losses(model, ids, mask)
    finally:
        lm_task.HEAD_CHUNK = old_chunk
    assert full.shape == (5, 39)
    torch.testing.assert_close(masked, full[mask], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(full.mean(), hf, rtol=1e-5, atol=1e-5)
