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

    save_checkpoint(tmp_path, 4, write_model)
    # a kill in the middle of a save leaves a hidden staging folder, never a half checkpoint
    (tmp_path / "checkpoints" / ".step-000008.tmp").mkdir()
    (tmp_path / "checkpoints" / ".step-000008.tmp-999").mkdir()  # as lmprobe before save_state named them
    (tmp_path / "checkpoints" / "step-000012").mkdir()  # no info file: incomplete
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4]
    save_checkpoint(tmp_path, 8, write_model, keep=1)
    step, path = latest_checkpoint(tmp_path)
    assert step == 8 and (path / "model.bin").read_text() == "weights"
    assert not [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]
    assert [s for s, _ in list_checkpoints(tmp_path)] == [8]


def _adam_after_one_step():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.ones(4, 3)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_training_state_is_accelerates_save_state_read_back_weights_only(tmp_path):
    """What Accelerate's save_state writes into resume/ reads back as optimizer + RNGs, and a
    restore replays the same random numbers (python, numpy, torch)."""
    import random

    import numpy as np
    from accelerate import Accelerator

    from lmprobe.train.checkpoint import restore_rng

    accelerator = Accelerator(cpu=True)
    model, optimizer = accelerator.prepare(*_adam_after_one_step())
    accelerator.register_save_state_pre_hook(lambda models, weights, folder: weights.clear())
    path = save_checkpoint(tmp_path, 1, lambda folder: accelerator.save_state(str(folder / "resume")))
    first = torch.rand(3), np.random.rand(3), random.random()
    state = load_training_state(path)
    assert state["format"] == "accelerate" and len(state["rng"]) == 1
    assert not (path / "resume" / "model.safetensors").exists()  # the weights live once, in the Hub folder
    saved_avg = state["optimizer"]["state"][0]["exp_avg"]
    assert torch.equal(saved_avg, optimizer.state_dict()["state"][0]["exp_avg"])
    restore_rng(state["rng"][0])
    again = torch.rand(3), np.random.rand(3), random.random()
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2] == again[2]


@pytest.mark.parametrize("damage", ["no-rng", "no-optimizer", "garbage"])
def test_a_damaged_training_state_is_one_line(damage, tmp_path):
    from accelerate import Accelerator

    from lmprobe.errors import LmprobeError

    accelerator = Accelerator(cpu=True)
    accelerator.prepare(*_adam_after_one_step())
    path = save_checkpoint(tmp_path, 1, lambda folder: accelerator.save_state(str(folder / "resume")))
    if damage == "no-rng":
        (path / "resume" / "random_states_0.pkl").unlink()
    elif damage == "no-optimizer":
        (path / "resume" / "optimizer.bin").unlink()
    else:
        (path / "resume" / "optimizer.bin").write_bytes(b"\x80\x04 not a torch file")
    with pytest.raises(LmprobeError, match="cannot be resumed from") as err:
        load_training_state(path)
    assert "\n" not in str(err.value)


def test_a_legacy_training_state_reads_in_the_same_layout(tmp_path):
    """Checkpoints of lmprobe before save_state (resume/training_state.pt) still resume and replay."""
    import numpy as np

    _, optimizer = _adam_after_one_step()
    numpy_state = np.random.get_state(legacy=False)
    legacy_rng = {"torch": torch.get_rng_state(), "python": __import__("random").getstate(),
                  "numpy": {"key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                            "pos": int(numpy_state["state"]["pos"]), "has_gauss": 0, "gauss": 0.0}}
    folder = tmp_path / "checkpoints" / "step-000001"
    (folder / "resume").mkdir(parents=True)
    torch.save({"optimizer": optimizer.state_dict(), "rng": [legacy_rng]}, folder / "resume" / "training_state.pt")
    state = load_training_state(folder)
    assert state["format"] == "legacy" and state["optimizer"]["state"][0]["step"] == 1
    assert torch.equal(state["rng"][0]["torch_manual_seed"], legacy_rng["torch"])
    expected = np.random.rand(2)
    np.random.seed(0)
    from lmprobe.train.checkpoint import restore_rng

    restore_rng(state["rng"][0])
    assert np.array_equal(np.random.rand(2), expected)


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
