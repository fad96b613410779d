"""The last fault cases (issue 20): each ends in one line or a warning, and nothing recorded is lost.

Two starts with one --name, a config change the saved state cannot take, a full disk or a file-size
limit while a checkpoint is written, temporaries a killed writer leaves, checkpoint file modes, and
analysis of a run whose training state is damaged."""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lmprobe.lm.train_cli import main
from lmprobe.trace import read_trace
from lmprobe.train.checkpoint import list_checkpoints
from lmprobe.train.loop import MEASURED_KEYS
from lmprobe.train.metrics_log import read_metrics
from tests.conftest import TINY_STEPS

ROOT = Path(__file__).resolve().parent.parent
LAST = f"step-{TINY_STEPS:06d}"


def _fails(argv: list[str], capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err and "Traceback" not in err, err
    return err


def _copy(run: Path, tmp_path: Path, name: str = "copy") -> Path:
    target = tmp_path / name
    shutil.copytree(run, target)
    return target


def _records(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in MEASURED_KEYS} for r in read_metrics(run / "metrics.jsonl")]


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under `folder`: its content hash and modification time."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _dead_pid() -> int:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


# ----------------------------------------------------------------------------- two starts, one --name
def test_a_second_start_with_the_same_name_leaves_the_finished_run_alone(tiny_run, tiny_config, tmp_path, capsys,
                                                                         monkeypatch):
    """The second start passes the "already exists" check, prepares its data, and meanwhile the first
    finishes: once it holds the lock it refuses, and the finished run is left as it was."""
    import lmprobe.train.launch as launch

    run, resolve, before = tmp_path / "same", launch.resolve_run, {}

    def first_start_finishes_meanwhile(*args, **kwargs):
        resolved = resolve(*args, **kwargs)  # no directory yet: the check passes
        shutil.copytree(tiny_run, run)  # the first start (same --name) trains to the end
        before.update(_snapshot(run))
        return resolved

    monkeypatch.setattr(launch, "resolve_run", first_start_finishes_meanwhile)
    err = _fails(["--config", str(tiny_config), "--name", "same", "--no-progress", f"out_dir={tmp_path}",
                  "optim.lr=0.01"], capsys)
    assert f"run directory {run} holds a run" in err and "--resume" in err and "another --name" in err
    assert _snapshot(run) == before  # config, probe, trace, metrics, checkpoints, even the lock file


def test_a_folder_no_start_made_is_never_taken(tiny_config, tmp_path, capsys):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "todo.txt").write_text("mine\n")
    err = _fails(["--config", str(tiny_config), "--name", "notes", "--no-progress", f"out_dir={tmp_path}"], capsys)
    assert "already exists" in err and "another --name" in err
    assert [p.name for p in folder.iterdir()] == ["todo.txt"]


def test_a_killed_start_is_still_reused(tiny_config, tmp_path, one_thread):
    """A start killed after writing its probe (token, probe/, no config.yaml) is taken by the next one."""
    from lmprobe.train.rundir import START_FILE, claim_start, is_unfinished_start

    half = tmp_path / "half"
    half.mkdir()
    claim_start(half)
    (half / "probe").mkdir()
    (half / ".config.yaml.tmp-{}".format(_dead_pid())).write_text("name: half\n")  # killed mid-write
    assert is_unfinished_start(half) and (half / START_FILE).is_file()
    assert main(["--config", str(tiny_config), "--name", "half", "--no-progress", f"out_dir={tmp_path}",
                 "train.steps=2", "train.checkpoint_every=2", "train.eval_every=2"]) == 0
    assert [s for s, _ in list_checkpoints(half)] == [2]
    assert not list(half.glob(".*.tmp-*"))


# ----------------------------------------------------------------------------- a change the state cannot take
def test_a_config_change_the_saved_state_cannot_take_writes_nothing(tiny_run, tmp_path, capsys, one_thread):
    run = _copy(tiny_run, tmp_path)
    config = (run / "config.yaml").read_bytes()
    err = _fails(["--resume", str(run), "--no-progress", "--allow-config-change", "optim.weight_decay=0.1"], capsys)
    assert "does not fit this run" in err
    assert (run / "config.yaml").read_bytes() == config
    assert not (run / "config_changes.jsonl").exists()
    assert main(["--resume", str(run), "--no-progress"]) == 0  # what the refusal suggests works
    assert _records(run) == _records(tiny_run)


# ----------------------------------------------------------------------------- a full disk, a file-size limit
@contextlib.contextmanager
def _file_size_limit(limit: int):
    """RLIMIT_FSIZE in this process, with SIGXFSZ ignored so a write past it fails with EFBIG."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


@pytest.mark.parametrize("library", ["torch", "safetensors"])
def test_a_library_write_error_of_a_checkpoint_is_an_os_error(library, tmp_path):
    import errno

    import torch
    from safetensors.torch import save_file

    from lmprobe.errors import os_error_message
    from lmprobe.train.checkpoint import checkpoint_writes, staging_folder

    staging = staging_folder(tmp_path, 4)
    staging.mkdir(parents=True)
    tensors = {"w": torch.zeros(100_000)}
    with pytest.raises(OSError) as raised, _file_size_limit(50_000), checkpoint_writes(staging):
        if library == "torch":  # what Accelerate's save_state writes with
            torch.save(tensors, staging / "optimizer.bin")
        else:
            save_file(tensors, str(staging / "model.safetensors"))
    assert raised.value.errno == errno.EFBIG
    message = os_error_message(raised.value)
    assert message.startswith(f"cannot use {staging}: File too large;") and "--resume" in message
    assert not staging.exists()  # the unfinished checkpoint's space is freed


def test_other_errors_while_a_checkpoint_is_written_pass_through(tmp_path):
    from lmprobe.train.checkpoint import checkpoint_writes

    with pytest.raises(RuntimeError, match="size mismatch"), checkpoint_writes(tmp_path):
        raise RuntimeError("size mismatch for transformer.wte.weight")
    with pytest.raises(KeyError), checkpoint_writes(tmp_path):
        raise KeyError("state")
    assert tmp_path.is_dir()


def test_a_file_size_limit_while_a_checkpoint_is_written_is_one_line_and_the_run_resumes(tiny_run, tmp_path,
                                                                                          one_thread):
    """setrlimit(RLIMIT_FSIZE) in the training process (a full disk without root): the limit lies
    between the sizes of the checkpoint's files, so Accelerate's save_state cannot write the
    optimizer state (torch.save's RuntimeError; safetensors' error is the test above)."""
    failing = "resume/optimizer.bin"
    run = _copy(tiny_run, tmp_path)
    for step, ckpt in list_checkpoints(run):
        if step > 8:
            shutil.rmtree(ckpt)
    sizes = {str(p.relative_to(run / "checkpoints" / "step-000008")): p.stat().st_size
             for p in (run / "checkpoints" / "step-000008").rglob("*") if p.is_file()}
    smaller = [size for name, size in sizes.items() if size < sizes[failing]]
    limit = (max(smaller) + sizes[failing]) // 2
    assert sizes["model.safetensors"] < sizes["resume/optimizer.bin"]

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "cli" / "train_lm.py"), "--resume", str(run), "--no-progress"],
                          env=env, preexec_fn=limited, capture_output=True, text=True, timeout=300)
    err = done.stderr.strip()
    assert done.returncode == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("error: cannot use ") and "File too large" in err and "--resume" in err
    assert [s for s, _ in list_checkpoints(run)] == [4, 8]  # nothing lost, nothing half-written listed
    assert not list((run / "checkpoints").glob(".step-*"))
    assert main(["--resume", str(run), "--no-progress"]) == 0
    assert _records(run) == _records(tiny_run)
    np.testing.assert_array_equal(np.asarray(read_trace(run).losses), np.asarray(read_trace(tiny_run).losses))


def test_enospc_and_efbig_say_what_to_do():
    import errno

    from lmprobe.errors import os_error_message, write_failure

    full = write_failure(RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"),
                         "runs/x/checkpoints/.step-000004.tmp")
    assert full.errno == errno.ENOSPC and "free disk space" in os_error_message(full)
    assert "ulimit -f" in os_error_message(OSError(errno.EFBIG, "File too large", "x"))
    assert write_failure(RuntimeError("shape '[2, 3]' is invalid for input of size 5"), "x") is None
    assert write_failure(ValueError("I/O error"), "x") is None  # only the libraries' write errors


# ----------------------------------------------------------------------------- temporaries of killed writers
def test_temporaries_of_killed_writers_are_removed_when_their_folder_is_next_used(tmp_path):
    from lmprobe.cache import cached_folder, host_tag
    from lmprobe.train.rundir import RunLock, write_atomic

    dead, alive = _dead_pid(), os.getppid()
    cache = tmp_path / "tokenizers"
    cache.mkdir()
    killed = cache / f".bpe-512-0123456789abcdef.tmp-{dead}@{host_tag()}-k2j3h4g5"
    running = cache / f".bpe-512-0123456789abcdef.tmp-{alive}@{host_tag()}-a1b2c3d4"
    elsewhere = cache / f".bpe-512-0123456789abcdef.tmp-{dead}@00000000-q9w8e7r6"  # another machine's pid
    old, recent = cache / ".bpe-512-fedcba9876543210.x7y6z5w4", cache / ".bpe-512-fedcba9876543210.m1n2b3v4"
    for folder in (killed, running, elsewhere, old, recent):
        folder.mkdir()
        (folder / "vocab.json").write_text("{}")
    for path in (old, old / "vocab.json"):  # an unnamed temporary of an older lmprobe, untouched for two days
        os.utime(path, (0, os.path.getmtime(path) - 2 * 86400))
    cached_folder(cache / "bpe-512-0123456789abcdef", lambda f: (f / "vocab.json").write_text("{}"))
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        ["bpe-512-0123456789abcdef", running.name, elsewhere.name, recent.name])

    run = tmp_path / "run"
    run.mkdir()
    (run / f".config.yaml.tmp-{dead}").write_text("half")
    (run / f".data.json.tmp-{alive}").write_text("being written")
    RunLock(run).acquire().release()  # the next process to take the run
    assert not (run / f".config.yaml.tmp-{dead}").exists() and (run / f".data.json.tmp-{alive}").exists()
    (run / f".config.yaml.tmp-{dead}").write_text("half")
    write_atomic(run / "config.yaml", "name: run\n")  # the next write of that file
    assert sorted(p.name for p in run.iterdir()) == sorted([".lock", "config.yaml", f".data.json.tmp-{alive}"])


def test_a_tokenizer_training_killed_before_its_rename_is_cleaned_up(tiny_corpus, tmp_path):
    from lmprobe.cache import host_tag
    from lmprobe.lm.data import load_tokenizer

    folder = tmp_path / "tokenizers"
    folder.mkdir()
    left = folder / f".bpe-300-0123456789abcdef.tmp-{_dead_pid()}@{host_tag()}-k2j3h4g5"
    left.mkdir()
    (left / "tokenizer.json").write_text("{")
    load_tokenizer("bpe-300", source=str(tiny_corpus), cache_dir=tmp_path)
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []
    assert len(list(folder.iterdir())) == 1


# ----------------------------------------------------------------------------- file modes
def test_checkpoint_files_get_the_mode_the_umask_gives(tiny_run):
    umask = os.umask(0)
    os.umask(umask)
    files = [p for p in (tiny_run / "checkpoints").rglob("*") if p.is_file()]
    assert any(p.name == "model.safetensors" for p in files)
    assert {str(p.relative_to(tiny_run)): oct(p.stat().st_mode & 0o777) for p in files} == {
        str(p.relative_to(tiny_run)): oct(0o666 & ~umask) for p in files}


def test_a_commit_follows_the_umask(tmp_path):
    from lmprobe.train.checkpoint import begin_checkpoint, commit_checkpoint

    staging = begin_checkpoint(tmp_path, 4)
    fd = os.open(staging / "model.safetensors", os.O_CREAT | os.O_WRONLY, 0o600)  # as safetensors writes it
    os.close(fd)
    before = os.umask(0o027)
    try:
        final = commit_checkpoint(tmp_path, 4)
    finally:
        os.umask(before)
    assert oct((final / "model.safetensors").stat().st_mode & 0o777) == oct(0o640)
    assert oct((final / "lmprobe.json").stat().st_mode & 0o777) == oct(0o640)


# ----------------------------------------------------------------------------- analysis needs only the weights
@pytest.mark.parametrize("damage", ["optimizer", "rng"])
def test_sharpness_of_a_run_whose_training_state_is_damaged_uses_the_weights(damage, tiny_run, tmp_path, capsys,
                                                                            one_thread):
    from lmprobe.cli import main as lmprobe_main

    run = _copy(tiny_run, tmp_path)
    resume = run / "checkpoints" / LAST / "resume"
    if damage == "optimizer":
        (resume / "optimizer.bin").write_bytes(np.random.default_rng(0).bytes(4096))
    else:
        (resume / "random_states_0.pkl").unlink()
    with pytest.warns(UserWarning, match=f"the training state of {run / 'checkpoints' / LAST} is unreadable") as seen:
        assert lmprobe_main(["sharpness", str(run), "--json", "--max-iter", "20"]) == 0
    assert len(seen) == 1 and "\n" not in str(seen[0].message)
    out, err = capsys.readouterr()
    assert f'"checkpoint": "{run / "checkpoints" / LAST}"' in out and "error" not in err
