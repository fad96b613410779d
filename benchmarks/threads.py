"""The default runs as a user launches them, at one torch thread and at lmprobe's default, side by side.

`accelerate launch cli/train_<domain>.py` on a CPU-only machine (no `--cpu`) starts the script with
OMP_NUM_THREADS=1; lmprobe now uses the physical cores per local process unless a number was asked
for (lmprobe/threads.py). This runs the text default (configs/lm/default.yaml) and the vision default
(configs/vision/default.yaml) through the same `accelerate launch` command at train.threads=1 (what
the command used to get) and at the default, alternating the two in each round so drift in machine
load hits both alike, and reports wall times (the launch to the exit, as a user waits for it), the
median training-step throughput from metrics.jsonl, the threads recorded in launches.jsonl, and the
ratios. Each domain is first run untimed for one step (tokenizer and data caches, page cache).

    python benchmarks/threads.py                 # the full default runs (about 25 min on 2 cores)
    python benchmarks/threads.py --steps 5       # a smoke check
    python benchmarks/threads.py --write         # also write the section of BENCHMARKS.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOMAINS = {"text": ROOT / "cli" / "train_lm.py", "vision": ROOT / "cli" / "train_vision.py"}
CONFIGS = {"text": "configs/lm/default.yaml", "vision": "configs/vision/default.yaml"}
TITLE = "Training threads"


def launch_env() -> dict[str, str]:
    """The environment of a user's shell: no thread count exported, nothing of an earlier launch."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") and not k.startswith("ACCELERATE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    return env


def run_once(domain: str, out: Path, name: str, overrides: list[str]) -> dict:
    """`accelerate launch cli/train_<domain>.py` (the default config) with overrides; wall time and records."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", str(DOMAINS[domain]), "--name", name,
           "--no-progress", f"out_dir={out}", *overrides]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=launch_env(), capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{domain} run {name} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    run = out / name
    launch = json.loads((run / "launches.jsonl").read_text().splitlines()[-1])
    rates = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        rates += [v for k, v in record.items() if k.endswith("_per_s") and isinstance(v, (int, float))]
    unit = next((k for k in json.loads((run / "metrics.jsonl").read_text().splitlines()[0]) if k.endswith("_per_s")),
                "per_s")
    return {"wall": wall, "threads": launch.get("threads"), "source": launch.get("threads_source"),
            "rate": statistics.median(rates) if rates else float("nan"), "unit": unit.removesuffix("_per_s")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="train.steps (default: the config's)")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds per domain (medians)")
    parser.add_argument("--domains", default="text,vision", help="comma-separated: text, vision")
    parser.add_argument("--write", action="store_true", help="write the section of BENCHMARKS.md")
    parser.add_argument("--keep", type=Path, default=None, metavar="DIR",
                        help="keep the run directories in DIR (default: a temporary folder, removed)")
    args = parser.parse_args()
    domains = [d.strip() for d in args.domains.split(",") if d.strip()]
    for domain in domains:
        if domain not in DOMAINS:
            parser.error(f"--domains: unknown domain {domain!r}; use text, vision")
    steps = [f"train.steps={args.steps}"] if args.steps else []
    contenders = {"1 thread": ["train.threads=1"], "default": []}
    results: dict[tuple[str, str], list[dict]] = {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp)
        for domain in domains:
            run_once(domain, out, f"{domain}-warmup", ["train.steps=1"])
            for r in range(args.rounds):
                order = list(contenders) if r % 2 == 0 else list(reversed(contenders))
                for label in order:
                    result = run_once(domain, out, f"{domain}-{label.replace(' ', '')}-{r}", steps + contenders[label])
                    results.setdefault((domain, label), []).append(result)
                    print(f"{domain:6s} {label:8s} round {r}: {result['wall']:7.1f} s, threads {result['threads']} "
                          f"({result['source']}), {result['rate']:,.0f} {result['unit']}/s", file=sys.stderr)
    lines = table(domains, results, args, (load_before, os.getloadavg()[0]))
    print("\n".join(lines))
    if args.write:
        sys.path.insert(0, str(ROOT))
        from benchmarks.record import write_section

        write_section(TITLE, lines, " ".join(["python benchmarks/threads.py", *sys.argv[1:]]))


def table(domains: list[str], results: dict, args, load: tuple[float, float]) -> list[str]:
    cores = os.cpu_count()
    lines = [f"Each run: `accelerate launch cli/train_<domain>.py` (no --cpu, no OMP_NUM_THREADS exported), the "
             f"default config{f' at train.steps={args.steps}' if args.steps else ''}; `1 thread` adds "
             f"train.threads=1 (what the command got before lmprobe chose), `default` is lmprobe's choice. "
             f"{args.rounds} alternating round(s), medians; wall time is the launch to the exit, step "
             f"throughput the median of metrics.jsonl's. Speed-up: 1-thread time / default time. Machine: "
             f"{cores} logical CPUs, 1-min load average {load[0]:.1f} before and {load[1]:.1f} after the runs.", "",
             "| run | threads (1 / default) | wall s, 1 thread | wall s, default | wall speed-up | "
             "step throughput, 1 thread | default | throughput speed-up |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for domain in domains:
        one, default = results[(domain, "1 thread")], results[(domain, "default")]
        wall1, wall_d = (statistics.median(r["wall"] for r in rs) for rs in (one, default))
        rate1, rate_d = (statistics.median(r["rate"] for r in rs) for rs in (one, default))
        unit = one[0]["unit"]
        lines.append(f"| {domain} ({CONFIGS[domain]}) | {one[0]['threads']} / {default[0]['threads']} "
                     f"({default[0]['source']}) | {wall1:.1f} | {wall_d:.1f} | {wall1 / wall_d:.2f}x | "
                     f"{rate1:,.0f} {unit}/s | {rate_d:,.0f} {unit}/s | {rate_d / rate1:.2f}x |")
    return lines


if __name__ == "__main__":
    main()
