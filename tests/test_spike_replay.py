"""Spike replay: the same batches reproduce the logged losses; without the spike's batches a
spike planted in the data vanishes, and one built by the state (lr past the edge) persists."""

import json

import numpy as np
import pytest

from lmprobe.cli import main as lmprobe_main
from lmprobe.errors import LmprobeError
from lmprobe.events.replay import replay_spike
from lmprobe.train.metrics_log import read_metrics
from lmprobe.train.sampler import StepSampler
from tests.planted_toy import train_toy

SPIKE_INDEX = 9  # the optimizer step whose batch holds the poisoned example: logged step 10


@pytest.fixture(scope="module")
def poisoned_run(tmp_path_factory, one_thread):
    poison = int(StepSampler(64, 8, 0).global_batch(SPIKE_INDEX, 0, 1)[0])
    return train_toy(tmp_path_factory.mktemp("poison") / "run", [f"data.poison={poison}"])


def test_replay_reproduces_the_logged_losses_and_finds_a_data_spike(poisoned_run):
    logged = {r["step"]: r["loss"] for r in read_metrics(poisoned_run / "metrics.jsonl")}
    spike = SPIKE_INDEX + 1
    assert logged[spike] > 10 * np.median(list(logged.values()))  # the planted spike is there
    result = replay_spike(poisoned_run, spike)
    assert result.checkpoint_step == 8 and result.replaced_steps == [SPIKE_INDEX]
    np.testing.assert_allclose(result.same, [logged[s] for s in result.steps], rtol=1e-5)
    assert result.reproduced
    assert result.other[:-1] == result.same[:-1]  # identical until the replaced batch
    assert result.other[-1] < 0.1 * result.same[-1]
    assert result.verdict == "data", result.explanation


def test_a_spike_of_the_state_happens_with_any_batches(tmp_path, one_thread):
    # lr 0.3 is past 2 / sharpness (about 2 / 16): the loss grows whatever the batch
    run = train_toy(tmp_path / "unstable", ["optim.lr=0.3", "train.steps=10"])
    result = replay_spike(run, 10, window=2)
    assert result.reproduced and result.replaced_steps == [8, 9]
    assert result.verdict == "state", result.explanation


def test_replay_on_a_text_run_and_through_the_cli(tiny_run, capsys, one_thread):
    result = replay_spike(tiny_run, 8)
    assert result.checkpoint_step == 4 and result.steps == [5, 6, 7, 8]
    logged = [v for v in result.logged if v is not None]
    assert len(logged) == 2 and result.max_reproduction_error < 1e-4
    assert result.other[-1] != pytest.approx(result.same[-1], rel=1e-6)  # other batches: another loss
    assert lmprobe_main(["events", str(tiny_run), "--replay", "8", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["spike_step"] == 8 and data["verdict"] in {"data", "state", "both", "no spike"}


def test_replay_errors_are_one_line(poisoned_run, tiny_vision_run):
    with pytest.raises(LmprobeError, match="no logged loss"):
        replay_spike(poisoned_run, 1000)
    with pytest.raises(LmprobeError, match="full-batch GD"):
        replay_spike(tiny_vision_run, 8)
