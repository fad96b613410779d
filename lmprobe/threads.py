"""How many CPU threads torch uses, chosen once per process for training and analysis.

`accelerate launch` runs a CPU-only script with OMP_NUM_THREADS=1 unless told otherwise (with
`--cpu` it uses the physical cores), so the plain `accelerate launch cli/train_lm.py` trained on one
core of the machine. lmprobe chooses instead, in this order:

  1. `train.threads` in the run config (training only);
  2. a number the user asked the launcher for: `accelerate launch --num_cpu_threads_per_process N`,
     or OMP_NUM_THREADS set in the environment the launcher (or the command) was started from;
  3. on a GPU (or another accelerator) nothing: the launcher's setting stands;
  4. otherwise the physical cores this process may run on, divided among the local processes
     (at least 1).

The launcher passes its default and an explicit `--num_cpu_threads_per_process` the same way (as
OMP_NUM_THREADS), so the two are told apart by reading the launcher's own command line and
environment (psutil, which Accelerate depends on). Where the launcher cannot be read, a value other
than the launcher's two defaults (1, or the physical cores / local processes) counts as a request.

The choice is recorded in launches.jsonl (`launch_record`) and printed once, on stderr, when it
changes what the process started with.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from lmprobe.errors import LmprobeError

FLAG = "--num_cpu_threads_per_process"
#: variables `accelerate launch` sets in every process it starts (their presence marks such a process)
ACCELERATE_MARKERS = ("ACCELERATE_DYNAMO_BACKEND", "ACCELERATE_MIXED_PRECISION")
#: how many processes share this machine, as torchrun/Accelerate and MPI launchers say it
LOCAL_SIZE_VARS = ("LOCAL_WORLD_SIZE", "MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "MV2_COMM_WORLD_LOCAL_SIZE")


@dataclass(frozen=True)
class Launcher:
    """The process that started this one: `accelerate launch` or torchrun, its argv and environment."""

    kind: str  # "accelerate" or "torchrun"
    argv: tuple[str, ...]
    env: dict[str, str] | None  # None: not readable


@dataclass(frozen=True)
class ThreadChoice:
    threads: int | None  # None: leave torch as it is
    source: str


# ----------------------------------------------------------------------------- the machine
def allowed_cpus() -> list[int]:
    """The logical CPUs this process may run on (its affinity mask, e.g. under taskset or a cpuset)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return list(range(os.cpu_count() or 1))


def _read(path: Path) -> str:
    return path.read_text().strip()


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs granted by a cgroup quota (a container's `--cpus`), or None when unlimited or unknown."""
    try:  # cgroup v2: "max 100000" or "200000 100000"
        quota, period = _read(root / "cpu.max").split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    for folder in ("cpu", "cpu,cpuacct"):  # cgroup v1
        try:
            quota = int(_read(root / folder / "cpu.cfs_quota_us"))
            period = int(_read(root / folder / "cpu.cfs_period_us"))
            return None if quota <= 0 or period <= 0 else quota / period
        except (OSError, ValueError):
            continue
    return None


def physical_cores(cpus: list[int] | None = None, sysfs: Path = Path("/sys/devices/system/cpu"),
                   quota: float | None | bool = True) -> int:
    """Physical cores among the CPUs this process may use (hyperthread siblings count once), capped
    by a cgroup CPU quota; at least 1. `quota=True` reads the quota; a number or None is used as given."""
    cpus = allowed_cpus() if cpus is None else cpus
    cores: set[tuple[str, str]] | None = set()
    for cpu in cpus:
        topology = sysfs / f"cpu{cpu}" / "topology"
        try:
            cores.add((_read(topology / "physical_package_id"), _read(topology / "core_id")))
        except OSError:
            cores = None
            break
    if cores:
        count = len(cores)
    else:  # no sysfs topology (macOS, Windows, some containers): the machine's ratio, from psutil
        try:
            import psutil

            logical, physical = psutil.cpu_count(logical=True), psutil.cpu_count(logical=False)
        except ImportError:
            logical = physical = None
        count = round(len(cpus) * physical / logical) if logical and physical else len(cpus)
    limit = cgroup_cpu_limit() if quota is True else quota
    if limit:
        count = min(count, math.floor(limit))
    return max(1, count)


def local_processes(env: dict[str, str] | None = None) -> int:
    """Processes of this launch on this machine (1 when not launched as several)."""
    env = os.environ if env is None else env
    for name in LOCAL_SIZE_VARS:
        try:
            return max(1, int(env[name]))
        except (KeyError, ValueError):
            continue
    return 1


# ----------------------------------------------------------------------------- the launcher
def launcher_kind(argv: list[str] | tuple[str, ...]) -> str | None:
    """"accelerate" for `accelerate launch ...` (console script or `python -m accelerate.commands.launch`),
    "torchrun" for torchrun / `python -m torch.distributed.run`, else None."""
    head = list(argv[:4])
    for i, arg in enumerate(head):
        name, following = os.path.basename(arg), head[i + 1] if i + 1 < len(head) else None
        if name in ("accelerate", "accelerate.commands.accelerate_cli") and following == "launch":
            return "accelerate"
        if name == "accelerate-launch" or arg == "accelerate.commands.launch" or arg.replace(
                os.sep, "/").endswith("accelerate/commands/launch.py"):
            return "accelerate"
        if name == "torchrun" or arg in ("torch.distributed.run", "torch.distributed.launch"):
            return "torchrun"
    return None


def find_launcher(max_depth: int = 4) -> Launcher | None:
    """The nearest ancestor process that is a launcher, or None (not launched, or not readable)."""
    try:
        import psutil

        parents = psutil.Process().parents()[:max_depth]
    except Exception:  # psutil missing, or the process table not readable
        return None
    for parent in parents:
        try:
            argv = tuple(parent.cmdline())
        except Exception:
            continue
        kind = launcher_kind(argv)
        if kind is None:
            continue
        try:
            env = dict(parent.environ())
        except Exception:
            env = None
        return Launcher(kind, argv, env)
    return None


def flag_value(argv: tuple[str, ...] | list[str]) -> int | None:
    """N from `--num_cpu_threads_per_process N` (or `=N`, or with hyphens) in a launcher's argv."""
    for i, arg in enumerate(argv):
        name, _, value = arg.partition("=")
        if name.replace("-", "_") != FLAG.replace("-", "_"):
            continue
        if not value and i + 1 < len(argv):
            value = argv[i + 1]
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _positive(text: str | None) -> int | None:
    try:
        value = int(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and value >= 1 else None


def requested(env: dict[str, str] | None = None, launcher: Launcher | None | bool = True,
              cores: int | None = None, local: int | None = None) -> tuple[int, str] | None:
    """A thread count the user asked for outside the config: (count, where it came from), or None."""
    env = os.environ if env is None else env
    launcher = find_launcher() if launcher is True else launcher
    omp = _positive(env.get("OMP_NUM_THREADS"))
    if launcher is not None:
        flag = flag_value(launcher.argv) if launcher.kind == "accelerate" else None
        if flag is not None and flag >= 1:
            return (omp if omp is not None else flag), FLAG
        if launcher.env is not None:
            asked = _positive(launcher.env.get("OMP_NUM_THREADS"))
            return (omp if omp is not None else asked, "OMP_NUM_THREADS") if asked is not None else None
    if omp is None:
        return None
    if launcher is not None or any(name in env for name in ACCELERATE_MARKERS):
        # launched, but the launcher could not be read: its defaults are 1 and (with --cpu) the
        # physical cores per local process; anything else was asked for
        cores = physical_cores() if cores is None else cores
        local = local_processes(env) if local is None else local
        return None if omp in (1, max(1, cores // local)) else (omp, "OMP_NUM_THREADS")
    return omp, "OMP_NUM_THREADS"


# ----------------------------------------------------------------------------- the choice
def check_threads(value, key: str = "train.threads") -> int | None:
    """A configured thread count: a positive whole number, or None (choose)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LmprobeError(f"{key}={value!r} must be a whole number of at least 1 "
                           f"(or null: the physical cores divided among the local processes)")
    return value


def choose(config_threads: int | None = None, *, on_accelerator: bool = False, device_type: str = "cpu",
           env: dict[str, str] | None = None, launcher: Launcher | None | bool = True,
           cores: int | None = None, local: int | None = None, key: str = "train.threads") -> ThreadChoice:
    """The thread count for this process and why (see the module docstring for the order)."""
    configured = check_threads(config_threads, key)
    if configured is not None:
        return ThreadChoice(configured, key)
    env = os.environ if env is None else env
    asked = requested(env, launcher, cores, local)
    if asked is not None:
        return ThreadChoice(*asked)
    if on_accelerator:
        return ThreadChoice(None, f"unchanged: the process runs on {device_type}")
    cores = physical_cores() if cores is None else cores
    local = local_processes(env) if local is None else local
    return ThreadChoice(max(1, cores // local),
                        f"default: {cores} physical core{'s' * (cores != 1)} / "
                        f"{local} local process{'es' * (local != 1)}")


def accelerator_type() -> str | None:
    """The accelerator torch would use here ("cuda", "xpu", "mps"), or None on a CPU-only process."""
    import torch

    if os.environ.get("ACCELERATE_USE_CPU", "").strip().lower() in ("1", "y", "yes", "t", "true", "on"):
        return None  # as Accelerate reads the flag (`accelerate launch --cpu`), without importing it
    if torch.cuda.is_available():
        return "cuda"
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        return "xpu"
    mps = getattr(getattr(torch, "backends", None), "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return None


_chosen: dict | None = None  # this process's choice, for launches.jsonl


def use_threads(config_threads: int | None = None, *, device=None, announce: bool | None = None,
                key: str = "train.threads") -> ThreadChoice:
    """Choose and apply this process's torch thread count (call before heavy work starts).

    `device`: the torch.device the process computes on (None: find out); `announce`: print the
    line on stderr (None: on the process of rank 0). Prints only when the count changes."""
    global _chosen
    import torch

    if device is not None:
        kind = None if torch.device(device).type == "cpu" else torch.device(device).type
    else:
        kind = accelerator_type()
    choice = choose(config_threads, on_accelerator=kind is not None, device_type=kind or "cpu", key=key)
    before = torch.get_num_threads()
    if choice.threads is not None:
        torch.set_num_threads(choice.threads)
        if torch.get_num_interop_threads() != choice.threads:
            try:  # allowed only before any inter-op parallel work (and only once)
                torch.set_num_interop_threads(choice.threads)
            except RuntimeError:
                pass
    now = torch.get_num_threads()
    _chosen = {"threads": now, "threads_source": choice.source}
    if announce is None:
        announce = os.environ.get("RANK", "0") == "0"
    if announce and now != before:
        print(f"threads: {now} torch thread{'s' * (now != 1)} per process ({choice.source}; "
              f"the process started with {before})", file=sys.stderr, flush=True)
    return choice


def launch_record() -> dict:
    """{"threads", "threads_source"} for launches.jsonl: the torch threads in use now, and why."""
    import torch

    now = torch.get_num_threads()
    if _chosen is None:
        return {"threads": now, "threads_source": "not chosen by lmprobe (its caller's setting)"}
    if _chosen["threads"] != now:
        return {"threads": now, "threads_source": "changed in-process after lmprobe chose "
                                                  f"{_chosen['threads']} ({_chosen['threads_source']})"}
    return dict(_chosen)
