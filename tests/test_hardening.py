"""Resume and start hardening: every fault ends in one line (or a warned fallback), nothing recorded is lost."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from lmprobe.lm.train_cli import main
from lmprobe.trace import read_trace
from lmprobe.train.checkpoint import list_checkpoints
from lmprobe.train.loop import MEASURED_KEYS
from lmprobe.train.metrics_log import read_metrics
from lmprobe.train.rundir import RunLock
from tests.conftest import TINY_STEPS

ROOT = Path(__file__).resolve().parent.parent
TIMING_KEYS = set(MEASURED_KEYS)  # timings and memory: differ between identical runs


def _fails(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err
    return err


def _copy(run: Path, tmp_path: Path, name: str = "copy") -> Path:
    target = tmp_path / name
    shutil.copytree(run, target)
    return target


def _records(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in read_metrics(run / "metrics.jsonl")]


# ----------------------------------------------------------------------------- starting
@pytest.mark.parametrize("override, message", [
    ("train.steps=0", "train.steps=0"),
    ("train.batch_size=0", "train.batch_size=0"),
    ("optim.lr=-0.1", "optim.lr=-0.1"),
    ("train.eval_batches=0", "train.eval_batches=0"),
    ("optim.lr=.nan", "must be a finite number"),
    ("trace.batch_size=0", "trace.batch_size=0"),
    ("train.log_every=-1", "train.log_every=-1 must not be negative"),
    ("trace.every=-2", "trace.every=-2"),
    ("train.keep_checkpoints=0", "train.keep_checkpoints=0"),
    ("train.seed=-1", "train.seed=-1"),
    ("optim.beta1=1.5", "optim.beta1=1.5"),
    ("optim.eps=-1", "optim.eps=-1"),
    ("optim.momentum=-1", "optim.momentum=-1"),
    ("optim.grad_clip=-1", "optim.grad_clip=-1"),
    ("optim.weight_decay=.nan", "must be a finite number"),
    ("model.dropout=2", "model.dropout=2"),
])
def test_impossible_values_are_refused_before_any_directory(override, message, tiny_config, tmp_path, capsys):
    err = _fails(["--config", str(tiny_config), "--name", "bad", "--no-progress", f"out_dir={tmp_path}",
                  override], capsys)
    assert message in err
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("argv", [["sharpness", "RUN", "--k", "0"], ["sharpness", "RUN", "--max-iter", "0"],
                                  ["mine", "RUN", "--top", "0"], ["mine", "RUN", "--seed", "-1"],
                                  ["no-such-command"], ["train", "--bogus"]])
def test_usage_mistakes_are_one_line(argv, tiny_run, capsys):
    from lmprobe.cli import main as lmprobe_main

    argv = [str(tiny_run) if a == "RUN" else a for a in argv]
    with pytest.raises(SystemExit) as done:
        main(argv[1:]) if argv[0] == "train" else lmprobe_main(argv)
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "--help" in err


@pytest.mark.parametrize("override, message", [
    ("trace.n_sequences=100000", "trace.n_sequences=100000 but the held-out split has"),
    ("trace.positions_per_sequence=500", "trace.positions_per_sequence=500 but a block has 31"),
])
def test_a_probe_larger_than_the_data_is_refused_not_capped(override, message, tiny_config, tmp_path, capsys):
    err = _fails(["--config", str(tiny_config), "--name", "big", "--no-progress", f"out_dir={tmp_path}", override],
                 capsys)
    assert message in err and not (tmp_path / "big").exists()


def test_a_start_that_fails_late_removes_its_directory(tiny_config, tmp_path, capsys, monkeypatch):
    from lmprobe.errors import LmprobeError
    from lmprobe.train.loop import Trainer

    def broken_fit(self, resume=False):
        raise LmprobeError("disk full (simulated)")

    monkeypatch.setattr(Trainer, "fit", broken_fit)
    err = _fails(["--config", str(tiny_config), "--name", "late", "--no-progress", f"out_dir={tmp_path}"], capsys)
    assert "disk full" in err and not (tmp_path / "late").exists()


def test_an_interrupted_start_is_reused_by_a_fresh_start_and_the_summary_goes_to_stdout(tiny_config, tmp_path, capsys,
                                                                                       one_thread):
    (tmp_path / "half").mkdir()  # killed between mkdir and config.yaml
    assert "start a new run without --resume" in _fails(["--resume", str(tmp_path / "half"), "--no-progress"], capsys)
    assert main(["--config", str(tiny_config), "--name", "half", "--no-progress", f"out_dir={tmp_path}",
                 "train.steps=2", "train.checkpoint_every=2", "train.eval_every=2"]) == 0
    out, err = capsys.readouterr()
    assert "val_loss" in out and "val_loss" not in err  # the result table is stdout; logs stay on stderr
    assert [s for s, _ in list_checkpoints(tmp_path / "half")] == [2]
    assert (tmp_path / "half" / "launches.jsonl").is_file()


def test_a_locked_run_cannot_be_trained_twice(tiny_run, tmp_path, capsys):
    run = _copy(tiny_run, tmp_path)
    lock = RunLock(run).acquire()
    try:
        err = _fails(["--resume", str(run), "--no-progress"], capsys)
    finally:
        lock.release()
    assert "in use by another training process" in err and str(os.getpid()) in err


# ----------------------------------------------------------------------------- resuming
def test_resume_without_checkpoints_is_refused_and_keeps_the_record(tiny_run, tmp_path, capsys):
    run = _copy(tiny_run, tmp_path)
    shutil.rmtree(run / "checkpoints")
    before = (run / "metrics.jsonl").read_bytes(), read_trace(run).losses.copy()
    err = _fails(["--resume", str(run), "--no-progress"], capsys)
    assert "restarting at step 0 would overwrite" in err
    assert (run / "metrics.jsonl").read_bytes() == before[0]
    np.testing.assert_array_equal(np.asarray(read_trace(run).losses), before[1])


def test_resume_with_a_changed_config_names_the_keys(tiny_run, tiny_config, tmp_path, capsys):
    run = _copy(tiny_run, tmp_path)
    config_before = (run / "config.yaml").read_bytes()
    err = _fails(["--resume", str(run), "--no-progress", "train.steps=20", "optim.lr=0.01"], capsys)
    assert "train.steps (16 -> 20)" in err and "optim.lr" in err and "--allow-config-change" in err
    other = tmp_path / "other.yaml"
    other.write_text(tiny_config.read_text().replace("lr: 3.0e-3", "lr: 1.0e-3"))
    err = _fails(["--config", str(other), "--resume", str(run), "--no-progress"], capsys)
    assert "optim.lr (0.003 -> 0.001)" in err
    assert (run / "config.yaml").read_bytes() == config_before


def test_resume_keeps_run_files_and_an_allowed_change_is_recorded(tiny_run, tmp_path, one_thread):
    run = _copy(tiny_run, tmp_path)
    kept = {name: (run / name).stat().st_mtime_ns for name in ("config.yaml", "data.json", "probe/probe.npz")}
    assert main(["--resume", str(run), "--no-progress"]) == 0
    assert {name: (run / name).stat().st_mtime_ns for name in kept} == kept  # not rewritten
    assert main(["--resume", str(run), "--no-progress", "--allow-config-change", "train.log_every=4"]) == 0
    assert "log_every: 4" in (run / "config.yaml").read_text()
    assert '"train.log_every": {"was": 2, "now": 4}' in (run / "config_changes.jsonl").read_text()


def test_a_full_disk_mid_run_is_one_line_and_the_run_resumes(tiny_config, tiny_run, tmp_path, capsys, monkeypatch):
    import errno

    import lmprobe.train.loop as loop

    commit = loop.commit_checkpoint

    def full_at_step_8(run_dir, step, *args, **kwargs):
        if step == 8:
            raise OSError(errno.ENOSPC, "No space left on device", str(run_dir))
        return commit(run_dir, step, *args, **kwargs)

    monkeypatch.setattr(loop, "commit_checkpoint", full_at_step_8)
    err = _fails(["--config", str(tiny_config), "--name", "full", "--no-progress", f"out_dir={tmp_path}"], capsys)
    assert "No space left on device" in err and "--resume" in err
    run = tmp_path / "full"
    assert [s for s, _ in list_checkpoints(run)] == [4]  # kept: it has trained
    monkeypatch.setattr(loop, "commit_checkpoint", commit)
    assert main(["--resume", str(run), "--no-progress"]) == 0
    assert _records(run) == _records(tiny_run)
    np.testing.assert_array_equal(np.asarray(read_trace(run).losses), np.asarray(read_trace(tiny_run).losses))


def test_a_read_only_run_directory_is_one_line(tiny_run, tmp_path, capsys, monkeypatch):
    """Root ignores chmod, so the refusal a read-only mount gives is simulated where it happens."""
    import errno

    from lmprobe.cli import main as lmprobe_main

    run = _copy(tiny_run, tmp_path)

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self.path))

    monkeypatch.setattr(RunLock, "acquire", read_only)
    err = _fails(["--resume", str(run), "--no-progress"], capsys)
    assert "Read-only file system" in err and ".lock" in err

    real_mkdir = Path.mkdir

    def no_new_folders(self, *args, **kwargs):
        if str(self).startswith(str(run)):
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", no_new_folders)
    assert lmprobe_main(["plot", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Read-only file system" in err


@pytest.mark.parametrize("bad_line", ['{"step": 5, "lo', '{"step": null, "loss": 1}', '[1, 2]'])
def test_a_malformed_metrics_line_loses_nothing_after_it(bad_line, tiny_run, tmp_path, one_thread):
    run = _copy(tiny_run, tmp_path)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines[:2] + [bad_line] + lines[2:]) + "\n")
    with pytest.warns(UserWarning, match="malformed"):
        assert main(["--resume", str(run), "--no-progress"]) == 0
    assert _records(run) == _records(tiny_run)
    assert (run / "metrics.jsonl.malformed").read_text() == bad_line + "\n"  # moved aside, not lost


@pytest.mark.parametrize("damage", ["truncated-safetensors", "random-state", "missing-rng", "pickle-state"])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(damage, tiny_run, tmp_path, capsys, one_thread):
    run = _copy(tiny_run, tmp_path)
    latest = run / "checkpoints" / f"step-{TINY_STEPS:06d}"
    if damage == "truncated-safetensors":
        data = (latest / "model.safetensors").read_bytes()
        (latest / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "random-state":
        (latest / "resume" / "optimizer.bin").write_bytes(np.random.default_rng(0).bytes(4096))
    elif damage == "missing-rng":
        (latest / "resume" / "random_states_0.pkl").unlink()
    else:
        import pickle

        (latest / "resume" / "random_states_0.pkl").write_bytes(pickle.dumps({"optimizer": object}))
    assert main(["--resume", str(run), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "warning:" in err and "Traceback" not in err and "step-000016.damaged" in err
    assert (run / "checkpoints" / "step-000016.damaged").is_dir()
    assert [s for s, _ in list_checkpoints(run)] == [4, 8, 12, 16]  # retrained from 12
    np.testing.assert_array_equal(np.asarray(read_trace(run).losses), np.asarray(read_trace(tiny_run).losses))
    assert _records(run) == _records(tiny_run)


def test_a_trace_written_for_another_probe_is_one_line_on_resume(tiny_run, tmp_path, capsys):
    import json

    run = _copy(tiny_run, tmp_path)
    meta = run / "trace" / "meta.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "n_examples": 5}))
    err = _fails(["--resume", str(run), "--no-progress"], capsys)
    assert "was written as" in err and "start a new run" in err


def test_an_incomplete_checkpoint_is_set_aside_not_overwritten(tiny_run, tmp_path, capsys, one_thread):
    run = _copy(tiny_run, tmp_path)
    (run / "checkpoints" / "step-000016" / "lmprobe.json").unlink()
    assert main(["--resume", str(run), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "step-000016 has no lmprobe.json" in err and "step-000016.damaged" in err
    assert (run / "checkpoints" / "step-000016.damaged" / "model.safetensors").is_file()  # kept for inspection
    assert _records(run) == _records(tiny_run)


@pytest.mark.parametrize("config, message", [("folder", "is a folder"), ("binary", "is not text")])
def test_a_config_that_is_no_yaml_file_is_one_line(config, message, tmp_path, capsys):
    path = tmp_path / "cfg"
    if config == "folder":
        path.mkdir()
    else:
        path.write_bytes(bytes(range(128, 256)))
    err = _fails(["--config", str(path), "--name", "x", "--no-progress", f"out_dir={tmp_path}"], capsys)
    assert message in err


def test_every_checkpoint_damaged_is_one_line(tiny_run, tmp_path, capsys):
    run = _copy(tiny_run, tmp_path)
    for _, ckpt in list_checkpoints(run):
        (ckpt / "model.safetensors").write_bytes(b"not a safetensors file")
    err = _fails(["--resume", str(run), "--no-progress"], capsys)
    assert "every checkpoint is damaged" in err


def test_sigterm_saves_and_stops_with_one_line_then_resumes_identically(tiny_config, tiny_run, tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "cli" / "train_lm.py"), "--config", str(tiny_config), "--name", "term",
           "--no-progress", f"out_dir={tmp_path}"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    run = tmp_path / "term"
    deadline = time.time() + 120
    while not (run / "checkpoints" / "step-000004").exists():
        assert proc.poll() is None and time.time() < deadline, "training ended before it could be stopped"
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1].strip()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "SIGTERM at step" in err and len(err.splitlines()) == 1
    stopped = list_checkpoints(run)[-1][0]
    if stopped < TINY_STEPS:
        assert read_metrics(run / "metrics.jsonl")[-1]["step"] <= stopped
    assert main(["--resume", str(run), "--no-progress"]) == 0
    np.testing.assert_array_equal(np.asarray(read_trace(run).losses), np.asarray(read_trace(tiny_run).losses))
    assert _records(run) == _records(tiny_run)


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().decode(errors="replace"):
                found.append(int(cmdline.parent.name))
        except (OSError, ValueError):
            continue
    return found


def _kill_processes_mentioning(text: str) -> None:
    for pid in _processes_mentioning(text):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue


@pytest.mark.parametrize("processes", [1, 2])
def test_killing_the_launcher_stops_its_workers_with_a_checkpoint(processes, tiny_config, tmp_path):
    """SIGKILL of `accelerate launch` (its simple launcher for one process, torchrun's agent for two)
    leaves its workers re-parented: they save and stop at the next step instead of training on as
    orphans that hold the run lock."""
    from lmprobe.errors import LmprobeError
    from tests.conftest import two_process_launch

    args = [str(ROOT / "cli" / "train_lm.py"), "--config", str(tiny_config), "--name", "orphan", "--no-progress",
            f"out_dir={tmp_path}", "train.steps=100000"]
    cmd, env = two_process_launch(*args)
    if processes == 1:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "1",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *args]
    launcher = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)  # no pipes: orphans would hold them open
    run = tmp_path / "orphan"
    deadline = time.time() + 120
    while not (run / "checkpoints" / "step-000004").exists():
        assert launcher.poll() is None and time.time() < deadline, "the run never reached its first checkpoint"
        time.sleep(0.05)
    launcher.kill()
    launcher.wait()
    deadline = time.time() + 60
    while True:  # the lock frees when the last worker exits
        try:
            RunLock(run).acquire().release()
            break
        except LmprobeError:
            if time.time() > deadline:
                _kill_processes_mentioning(str(tmp_path))  # torch elastic gives workers their own session
                pytest.fail("the workers trained on after their launcher was killed")
            time.sleep(0.2)
    deadline = time.time() + 30
    while _processes_mentioning(str(tmp_path)) and time.time() < deadline:  # exited, not just unlocked
        time.sleep(0.2)
    leftover = _processes_mentioning(str(tmp_path))
    _kill_processes_mentioning(str(tmp_path))
    assert not leftover, "workers lingered after releasing the run lock"
    stopped = list_checkpoints(run)[-1][0]
    assert stopped > 4 and stopped < 100000
    assert max(r["step"] for r in read_metrics(run / "metrics.jsonl")) <= stopped


def test_a_training_state_that_does_not_fit_the_optimizer_is_one_line(tiny_run, tmp_path, capsys):
    run = _copy(tiny_run, tmp_path)
    err = _fails(["--resume", str(run), "--no-progress", "--allow-config-change", "optim.weight_decay=0.1"], capsys)
    assert "does not fit this run" in err  # two parameter groups now, one saved


def test_more_processes_than_saved_resume_with_a_warning(tiny_run, tmp_path):
    """A one-process checkpoint resumed by two: the data order holds, the extra process reuses
    process 0's random state, and the run says that dropout draws now differ."""
    from tests.conftest import accelerate_two_processes

    run = _copy(tiny_run, tmp_path)
    for step, ckpt in list_checkpoints(run):
        if step > 8:
            shutil.rmtree(ckpt)
    done = accelerate_two_processes(str(ROOT / "cli" / "train_lm.py"), "--resume", str(run), "--no-progress")
    assert "was saved by 1 process(es) and resumes with 2" in done.stderr
    assert [s for s, _ in list_checkpoints(run)] == [4, 8, 12, 16]
    resumed, reference = _records(run), _records(tiny_run)
    assert [r["step"] for r in resumed] == [r["step"] for r in reference]
    np.testing.assert_allclose([r["loss"] for r in resumed], [r["loss"] for r in reference], rtol=1e-4)


def test_os_errors_are_one_line_with_what_to_do():
    import errno

    from lmprobe.errors import os_error_message

    full = os_error_message(OSError(errno.ENOSPC, "No space left on device", "runs/x/trace/losses.bin"))
    assert full.startswith("cannot use runs/x/trace/losses.bin: No space left on device;") and "--resume" in full
    moved = os_error_message(OSError(errno.EROFS, "Read-only file system", "a.tmp", None, "a"))
    assert "a.tmp -> a" in moved
    network = os_error_message(OSError("We couldn't connect to 'https://huggingface.co'.\nCheck your connection"))
    assert network == "We couldn't connect to 'https://huggingface.co'." and "writable" not in network


def test_only_a_launcher_parent_is_watched(monkeypatch):
    """A run started from a shell (nohup) must not stop when the shell exits."""
    from lmprobe.train.loop import launcher_pid

    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    assert launcher_pid() is None  # pytest's parent is no launcher
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    assert launcher_pid() == os.getppid()


# ----------------------------------------------------------------------------- optimiser state
def test_weight_decay_skips_biases_norms_and_embeddings():
    from transformers import GPT2Config, GPT2LMHeadModel

    from lmprobe.train.optim import parameter_groups

    model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=8, n_embd=8, n_layer=1, n_head=2))
    names = {id(p): n for n, p in model.named_parameters()}
    decay, no_decay = parameter_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    skipped = {names[id(p)] for p in no_decay["params"]}
    assert {"transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight",
            "transformer.h.0.ln_1.bias", "transformer.h.0.attn.c_attn.bias"} <= skipped
    assert {names[id(p)] for p in decay["params"]} == {n for n, p in model.named_parameters() if p.ndim == 2} - {
        "transformer.wte.weight", "transformer.wpe.weight"}
    with_embeddings = {names[id(p)] for p in parameter_groups(model, 0.1, decay_embeddings=True)[0]["params"]}
    assert "transformer.wte.weight" in with_embeddings

    from lmprobe.config import OptimConfig
    from lmprobe.train.optim import build_optimizer

    groups = build_optimizer(model, OptimConfig(weight_decay=0.1)).param_groups
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0] and len(groups[1]["params"]) == len(skipped)
    assert len(build_optimizer(model, OptimConfig(weight_decay=0.0)).param_groups) == 1  # as older checkpoints hold

