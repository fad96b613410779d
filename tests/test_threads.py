"""CPU threads: training and analysis use the physical cores per local process unless a number was asked for."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lmprobe import threads
from lmprobe.errors import LmprobeError
from lmprobe.threads import FLAG, Launcher, choose, physical_cores

ROOT = Path(__file__).resolve().parent.parent
TRAIN_LM = ROOT / "cli" / "train_lm.py"

ACCELERATE = Launcher("accelerate", ("python", "/venv/bin/accelerate", "launch", "cli/train_lm.py"), {})
LAUNCHED = {"OMP_NUM_THREADS": "1", "ACCELERATE_DYNAMO_BACKEND": "NO", "ACCELERATE_MIXED_PRECISION": "no"}


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


# ----------------------------------------------------------------------------- the machine
def _fake_sysfs(root: Path, topology: dict[int, tuple[int, int]]) -> Path:
    for cpu, (package, core) in topology.items():
        folder = root / f"cpu{cpu}" / "topology"
        folder.mkdir(parents=True)
        (folder / "physical_package_id").write_text(f"{package}\n")
        (folder / "core_id").write_text(f"{core}\n")
    return root


def test_physical_cores_count_hyperthread_siblings_once_and_respect_affinity_and_quota(tmp_path):
    sysfs = _fake_sysfs(tmp_path, {0: (0, 0), 1: (0, 1), 2: (0, 0), 3: (0, 1), 4: (1, 0), 5: (1, 0)})
    assert physical_cores([0, 1, 2, 3, 4, 5], sysfs, quota=None) == 3  # two sockets, core ids repeat
    assert physical_cores([0, 2], sysfs, quota=None) == 1  # siblings of one core (taskset -c 0,2)
    assert physical_cores([0, 1, 4], sysfs, quota=1.5) == 1  # a container's --cpus 1.5
    assert physical_cores([0, 1, 4], sysfs, quota=0.2) == 1  # never below 1
    assert physical_cores([0], tmp_path / "missing", quota=None) >= 1  # no sysfs: psutil's ratio


def test_cgroup_quota_v2_and_v1(tmp_path):
    assert threads.cgroup_cpu_limit(tmp_path) is None
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert threads.cgroup_cpu_limit(tmp_path) is None
    (tmp_path / "cpu.max").write_text("250000 100000\n")
    assert threads.cgroup_cpu_limit(tmp_path) == 2.5
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert threads.cgroup_cpu_limit(v1) is None
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("300000\n")
    assert threads.cgroup_cpu_limit(v1) == 3.0


def test_local_processes():
    assert threads.local_processes({}) == 1
    assert threads.local_processes({"LOCAL_WORLD_SIZE": "4"}) == 4
    assert threads.local_processes({"LOCAL_WORLD_SIZE": "x", "OMPI_COMM_WORLD_LOCAL_SIZE": "2"}) == 2


# ----------------------------------------------------------------------------- the launcher
@pytest.mark.parametrize("argv, kind", [
    (["/v/bin/python", "/v/bin/accelerate", "launch", "cli/train_lm.py"], "accelerate"),
    (["accelerate", "launch", "--cpu", "x.py"], "accelerate"),
    (["/usr/bin/python3", "-m", "accelerate.commands.launch", "--multi_gpu", "x.py"], "accelerate"),
    (["python", "/v/lib/python3.11/site-packages/accelerate/commands/launch.py", "x.py"], "accelerate"),
    (["/v/bin/python", "/v/bin/accelerate-launch", "x.py"], "accelerate"),
    (["/v/bin/python", "/v/bin/torchrun", "--nproc_per_node", "2", "x.py"], "torchrun"),
    (["python", "-m", "torch.distributed.run", "x.py"], "torchrun"),
    (["/v/bin/python", "/v/bin/accelerate", "config"], None),
    (["bash"], None),
    (["python", "-m", "pytest", "tests/test_threads.py"], None),
])
def test_launcher_kind(argv, kind):
    assert threads.launcher_kind(argv) == kind


@pytest.mark.parametrize("argv, value", [
    (["accelerate", "launch", FLAG, "3", "x.py"], 3),
    (["accelerate", "launch", f"{FLAG}=5", "x.py"], 5),
    (["accelerate", "launch", "--num-cpu-threads-per-process", "2", "x.py"], 2),
    (["accelerate", "launch", "--num-cpu-threads-per-process=7", "x.py"], 7),
    (["accelerate", "launch", "--num_processes", "2", "x.py"], None),
    (["accelerate", "launch", FLAG, "many", "x.py"], None),
])
def test_flag_value(argv, value):
    assert threads.flag_value(argv) == value


# ----------------------------------------------------------------------------- the choice
def test_the_launchers_default_is_overridden_by_the_cores():
    choice = choose(None, env=LAUNCHED, launcher=ACCELERATE, cores=2, local=1)
    assert choice == threads.ThreadChoice(2, "default: 2 physical cores / 1 local process")
    choice = choose(None, env={**LAUNCHED, "LOCAL_WORLD_SIZE": "2"}, launcher=ACCELERATE, cores=8)
    assert choice == threads.ThreadChoice(4, "default: 8 physical cores / 2 local processes")
    assert choose(None, env={}, launcher=ACCELERATE, cores=2, local=4).threads == 1  # at least one


def test_an_explicit_launcher_count_is_honoured_even_where_it_equals_the_default():
    flagged = Launcher("accelerate", ("python", "accelerate", "launch", FLAG, "1", "x.py"), {})
    assert choose(None, env=LAUNCHED, launcher=flagged, cores=2, local=1) == threads.ThreadChoice(1, FLAG)
    # the user's own OMP_NUM_THREADS reached the launcher, which passed it on
    exported = Launcher("accelerate", ACCELERATE.argv, {"OMP_NUM_THREADS": "1"})
    assert choose(None, env=LAUNCHED, launcher=exported, cores=2, local=1) == threads.ThreadChoice(1, "OMP_NUM_THREADS")


def test_train_threads_wins_and_is_validated():
    flagged = Launcher("accelerate", ("accelerate", "launch", FLAG, "1", "x.py"), {})
    assert choose(3, env=LAUNCHED, launcher=flagged, cores=2, local=1) == threads.ThreadChoice(3, "train.threads")
    assert choose(3, on_accelerator=True, device_type="cuda", env={}, launcher=None) == threads.ThreadChoice(
        3, "train.threads")
    for bad in (0, -2, True, 2.5, "4"):
        with pytest.raises(LmprobeError, match=r"train\.threads=.* must be a whole number of at least 1") as err:
            choose(bad, env={}, launcher=None, cores=2, local=1)
        assert "\n" not in str(err.value)


def test_an_unreadable_launcher_is_judged_by_the_value():
    unreadable = Launcher("accelerate", ACCELERATE.argv, None)
    for launcher in (unreadable, None):  # None with the launcher's variables: not found at all
        assert choose(None, env=LAUNCHED, launcher=launcher, cores=4, local=1).threads == 4  # 1: its default
        assert choose(None, env={**LAUNCHED, "OMP_NUM_THREADS": "4"}, launcher=launcher, cores=4,
                      local=1).source.startswith("default")  # --cpu's default
        assert choose(None, env={**LAUNCHED, "OMP_NUM_THREADS": "3"}, launcher=launcher, cores=4,
                      local=1) == threads.ThreadChoice(3, "OMP_NUM_THREADS")


def test_not_launched_the_environment_is_a_request():
    assert choose(None, env={"OMP_NUM_THREADS": "1"}, launcher=None, cores=4, local=1) == threads.ThreadChoice(
        1, "OMP_NUM_THREADS")
    assert choose(None, env={}, launcher=None, cores=4, local=1).threads == 4
    assert choose(None, env={"OMP_NUM_THREADS": "zero"}, launcher=None, cores=4, local=1).threads == 4


def test_on_a_gpu_only_an_explicit_request_changes_anything():
    assert choose(None, on_accelerator=True, device_type="cuda", env=LAUNCHED, launcher=ACCELERATE,
                  cores=8, local=1) == threads.ThreadChoice(None, "unchanged: the process runs on cuda")
    flagged = Launcher("accelerate", ("accelerate", "launch", f"{FLAG}=2", "x.py"), {})
    assert choose(None, on_accelerator=True, device_type="cuda", env={**LAUNCHED, "OMP_NUM_THREADS": "2"},
                  launcher=flagged, cores=8, local=1) == threads.ThreadChoice(2, FLAG)


def test_use_threads_applies_records_and_prints_once(monkeypatch, capsys, restore_threads):
    monkeypatch.setattr(threads, "find_launcher", lambda: ACCELERATE)
    monkeypatch.setattr(threads, "physical_cores", lambda: 3)
    for name, value in LAUNCHED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    torch.set_num_threads(1)
    threads.use_threads(None, device="cpu", announce=True)
    assert torch.get_num_threads() == 3
    assert threads.launch_record() == {"threads": 3, "threads_source": "default: 3 physical cores / 1 local process"}
    threads.use_threads(None, device="cpu", announce=True)  # nothing changes: nothing printed
    err = capsys.readouterr().err
    assert err.count("threads: 3 torch threads per process (default: 3 physical cores / 1 local process; "
                     "the process started with 1)") == 1 and err.count("\n") == 1
    threads.use_threads(None, device="cuda", announce=True)  # a GPU process keeps what it has
    assert torch.get_num_threads() == 3 and capsys.readouterr().err == ""
    assert threads.launch_record()["threads_source"] == "unchanged: the process runs on cuda"
    torch.set_num_threads(2)
    assert threads.launch_record()["threads_source"].startswith("changed in-process after lmprobe chose 3")


def test_the_analysis_command_uses_the_cores_under_a_launcher(monkeypatch, capsys, tmp_path, restore_threads):
    from lmprobe.cli import main

    monkeypatch.setattr(threads, "find_launcher", lambda: ACCELERATE)
    monkeypatch.setattr(threads, "accelerator_type", lambda: None)
    for name, value in LAUNCHED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    torch.set_num_threads(1)
    assert main(["mine", "--checkpoint", str(tmp_path / "missing")]) == 2  # fails after choosing
    assert torch.get_num_threads() == physical_cores()
    if physical_cores() > 1:
        assert "torch threads per process (default:" in capsys.readouterr().err


@pytest.mark.parametrize("value, message", [("0", "must be a whole number of at least 1"), ("two", "expects int")])
def test_a_bad_train_threads_is_one_line_and_writes_nothing(value, message, tiny_config, tmp_path, capsys):
    from lmprobe.lm.train_cli import main

    assert main(["--config", str(tiny_config), "--name", "bad", "--no-progress", f"out_dir={tmp_path}",
                 f"train.threads={value}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err
    assert not (tmp_path / "bad").exists()


# ----------------------------------------------------------------------------- through `accelerate launch`
def _launch(launcher: list[str], tiny_config: Path, out: Path, name: str, *overrides: str):
    """`accelerate launch [flags] cli/train_lm.py` as a user types it: no --cpu, no OMP_NUM_THREADS."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
           and not k.startswith("ACCELERATE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    cmd = [*launcher, str(TRAIN_LM), "--config", str(tiny_config), "--name", name, "--no-progress",
           f"out_dir={out}", "train.steps=2", "train.checkpoint_every=2", "train.eval_every=2", *overrides]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in (out / name / "launches.jsonl").read_text().splitlines()]
    return records[-1], done.stderr


def _accelerate() -> list[str]:
    script = Path(sys.executable).parent / "accelerate"
    return [str(script)] if script.is_file() else [shutil.which("accelerate") or "accelerate"]


needs_cores = pytest.mark.skipif((os.cpu_count() or 1) < 2 or physical_cores() < 2,
                                 reason="needs at least 2 physical cores")
cpu_only = pytest.mark.skipif(threads.accelerator_type() is not None, reason="a GPU run keeps the launcher's setting")


@needs_cores
@cpu_only
def test_accelerate_launch_without_cpu_uses_more_than_one_thread(tiny_config, tmp_path):
    record, err = _launch([*_accelerate(), "launch"], tiny_config, tmp_path, "default")
    cores = physical_cores()
    assert record["threads"] == cores > 1
    assert record["threads_source"] == f"default: {cores} physical cores / 1 local process"
    assert err.count("threads: ") == 1 and f"threads: {cores} torch threads per process" in err


@needs_cores
@cpu_only
@pytest.mark.parametrize("flags, overrides, threads_used, source", [
    ([FLAG, "1"], [], 1, FLAG),
    ([], ["train.threads=3"], 3, "train.threads"),
])
def test_an_explicit_count_is_used_exactly(flags, overrides, threads_used, source, tiny_config, tmp_path):
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", *flags]
    record, _ = _launch(launcher, tiny_config, tmp_path, "explicit", *overrides)
    assert (record["threads"], record["threads_source"]) == (threads_used, source)
