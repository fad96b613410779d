"""Per-example statistics benchmark: streaming `example_statistics` against plain numpy.

(a) 10^6 examples x 50 records in memory (float32): the streaming pass and the plain numpy
    computation of the same statistics on the whole matrix, each in its own child process
    (time, and peak resident memory above the process's resident size once the matrix exists);
    the two results are checked to agree.
(b) a float16 trace of 10^6 examples x 1000 records = 10^9 cells (2 GB) written with
    TraceWriter, its pages dropped from the page cache (posix_fadvise DONTNEED), then in
    fresh child processes: a plain sequential read of losses.bin, and `example_statistics`
    on `read_trace(...)`'s memmap (time, peak RSS). Plain numpy is not run here: the matrix
    alone is 4 GB as float32 and its computation needs several matrix-sized temporaries.
    The file is deleted afterwards.

    python benchmarks/example_stats.py            # both parts
    python benchmarks/example_stats.py --part a
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from lmprobe.dynamics import example_statistics  # noqa: E402


def rss_mib(field: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return math.nan


def reset_peak() -> None:
    """Start VmHWM afresh from the current resident size (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def synthetic_rows(n_examples: int, n_records: int, seed: int = 0):
    """Rows of a plausible trace: per-example learning curves (random speed and floor) in
    log step, plus noise from a reused pool, so generating 10^9 cells stays cheap."""
    rng = np.random.default_rng(seed)
    start = rng.uniform(6, 10, n_examples).astype(np.float32)
    floor = rng.exponential(1.0, n_examples).astype(np.float32)
    midpoint = rng.uniform(0.5, 3.5, n_examples).astype(np.float32)  # log10 step of learning
    pool = rng.normal(0, 0.3, n_examples + 4099).astype(np.float32)
    for t in range(n_records):
        log_step = 3.5 * t / max(1, n_records - 1)
        curve = floor + (start - floor) / (1 + np.exp(4 * (log_step - midpoint)))
        offset = (t * 7919) % 4099
        yield np.abs(curve + pool[offset: offset + n_examples])


def plain_numpy(x: np.ndarray, steps: np.ndarray, threshold: float = math.log(2), smooth: int = 5) -> dict:
    """The same statistics on the whole matrix at once (float64), as one would write them."""
    x = x.astype(np.float64)
    n_records = len(x)
    edge = min(5, max(1, n_records // 10))
    p = np.exp(-x)
    learned = x <= threshold
    out = {"confidence": p.mean(0), "variability": p.std(0), "learned_share": learned.mean(0),
           "forgetting_events": (learned[:-1] & ~learned[1:]).sum(0), "never_learned": ~learned.any(0),
           "start_loss": x[:edge].mean(0), "end_loss": x[-edge:].mean(0), "final_loss": x[-1].copy(),
           "min_loss": x.min(0), "mean_loss": x.mean(0), "loss_std": x.std(0)}
    del p
    late = min(n_records, max(2, math.ceil(n_records / 4)))
    out["late_loss_std"] = x[-late:].std(0)
    out["first_learned_step"] = np.where(learned.any(0), steps[learned.argmax(0)], -1)
    del learned
    h = smooth // 2
    cumulative = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(x, 0)])
    t = np.arange(n_records)
    lo, hi = np.maximum(0, t - h), np.minimum(n_records, t + h + 1)
    smoothed = (cumulative[hi] - cumulative[lo]) / (hi - lo)[:, None]
    del cumulative
    mid = (out["start_loss"] + out["end_loss"]) / 2
    below = (smoothed <= mid) & (out["end_loss"] < out["start_loss"])
    first = below.argmax(0)
    cols = np.arange(x.shape[1])
    before = smoothed[np.maximum(first - 1, 0), cols]
    after = smoothed[first, cols]
    log_steps = np.log1p(steps.astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = (before - mid) / (before - after)
    log_before = log_steps[np.maximum(first - 1, 0)]
    log_aoa = np.where(first == 0, log_steps[0], log_before + frac * (log_steps[first] - log_before))
    dropped = out["start_loss"] - out["end_loss"] > 2 * out["late_loss_std"]
    out["aoa_step"] = np.where(below.any(0) & dropped, np.expm1(log_aoa), np.nan)
    return out


def child_in_memory(method: str, n_examples: int, n_records: int) -> dict:
    x = np.empty((n_records, n_examples), dtype=np.float32)
    for t, row in enumerate(synthetic_rows(n_examples, n_records)):
        x[t] = row
    steps = np.round(np.logspace(0, 3.5, n_records)).astype(np.int64) + np.arange(n_records)
    base = rss_mib()
    reset_peak()
    begin = time.perf_counter()
    if method == "stream":
        stats = example_statistics(x, steps)
        result = {k: v for k, v in stats.columns().items()}
    else:
        result = plain_numpy(x, steps)
    seconds = time.perf_counter() - begin
    extra = rss_mib("VmHWM") - base
    np.savez(os.environ["BENCH_OUT"], **{k: v for k, v in result.items() if k in plain_keys()})
    return {"seconds": seconds, "extra_peak_mib": extra, "matrix_mib": x.nbytes / 2**20}


def plain_keys() -> tuple[str, ...]:
    return ("confidence", "variability", "learned_share", "forgetting_events", "never_learned",
            "start_loss", "end_loss", "final_loss", "min_loss", "mean_loss", "loss_std",
            "late_loss_std", "first_learned_step", "aoa_step")


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def child_read(path: str) -> dict:
    drop_cache(Path(path))
    buffer = bytearray(64 << 20)
    view = memoryview(buffer)
    total = 0
    begin = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while True:
            got = f.readinto(view)
            if not got:
                break
            total += got
    seconds = time.perf_counter() - begin
    return {"seconds": seconds, "bytes": total, "peak_rss_mib": rss_mib("VmHWM")}


def child_trace(run_dir: str) -> dict:
    from lmprobe.trace import read_trace

    drop_cache(Path(run_dir) / "trace" / "losses.bin")
    base = rss_mib()
    begin = time.perf_counter()
    trace = read_trace(run_dir)
    stats = example_statistics(trace.losses, trace.steps)
    seconds = time.perf_counter() - begin
    return {"seconds": seconds, "cells": int(trace.losses.size), "peak_rss_mib": rss_mib("VmHWM"),
            "rss_before_mib": base, "with_aoa": float(np.isfinite(stats.aoa_step).mean()),
            "class_shares": stats.class_shares, "mean_forgetting": float(stats.forgetting_events.mean())}


def run_child(*args: str, out: str | None = None) -> dict:
    env = dict(os.environ, BENCH_OUT=out or "")
    done = subprocess.run([sys.executable, __file__, "--child", *args], env=env, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def part_a(n_examples: int, n_records: int, work: Path) -> None:
    results = {}
    for method in ("stream", "numpy"):
        results[method] = run_child("memory", method, str(n_examples), str(n_records),
                                    out=str(work / f"{method}.npz"))
    stream, plain = np.load(work / "stream.npz"), np.load(work / "numpy.npz")
    worst = 0.0
    for key in plain_keys():
        a, b = stream[key].astype(np.float64), plain[key].astype(np.float64)
        both = np.isfinite(a) & np.isfinite(b)
        assert np.array_equal(np.isfinite(a), np.isfinite(b)), key
        worst = max(worst, float(np.max(np.abs(a[both] - b[both]) / (1 + np.abs(b[both])), initial=0)))
    cells = n_examples * n_records
    print(f"\n(a) {n_examples:,} examples x {n_records} records (float32, {results['stream']['matrix_mib']:.0f} MiB"
          f" in memory); results agree to {worst:.1e} (max |diff| / (1 + |value|)), same NaN pattern")
    print("| computation | seconds | Mcells/s | peak memory beyond the matrix (MiB) |")
    print("|---|---:|---:|---:|")
    for name, key in (("example_statistics (streaming, 1 thread)", "stream"), ("plain numpy, whole matrix", "numpy")):
        r = results[key]
        print(f"| {name} | {r['seconds']:.2f} | {cells / r['seconds'] / 1e6:.0f} | {r['extra_peak_mib']:.0f} |")


def part_b(n_examples: int, n_records: int, work: Path) -> None:
    from lmprobe.trace import TraceWriter

    run_dir = work / "run"
    begin = time.perf_counter()
    writer = TraceWriter(run_dir / "trace", n_examples=n_examples, dtype="float16")
    steps = np.round(np.logspace(0, 3.5, n_records)).astype(np.int64) + np.arange(n_records)
    for step, row in zip(steps, synthetic_rows(n_examples, n_records)):
        writer.append(int(step), row)
    losses = run_dir / "trace" / "losses.bin"
    size = losses.stat().st_size
    print(f"\n(b) wrote {n_examples:,} x {n_records} float16 = {n_examples * n_records:.3g} cells,"
          f" {size / 2**30:.2f} GiB, in {time.perf_counter() - begin:.0f} s")
    read = run_child("read", str(losses))
    stats = run_child("trace", str(run_dir))
    cells = n_examples * n_records
    print("| computation (page cache dropped first) | seconds | MB/s of trace | Mcells/s | peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|")
    print(f"| plain sequential read of losses.bin (64 MiB reads) | {read['seconds']:.1f} |"
          f" {size / read['seconds'] / 1e6:.0f} | {cells / read['seconds'] / 1e6:.0f} | {read['peak_rss_mib']:.0f} |")
    seconds = stats["seconds"]
    print(f"| example_statistics on read_trace(run) (1 thread) | {seconds:.1f} |"
          f" {size / seconds / 1e6:.0f} | {cells / seconds / 1e6:.0f} | {stats['peak_rss_mib']:.0f} |")
    print(f"RSS before the pass {stats['rss_before_mib']:.0f} MiB (python + numpy + lmprobe imports);"
          f" with AoA {stats['with_aoa']:.1%}; class shares {stats['class_shares']};"
          f" mean forgetting events {stats['mean_forgetting']:.2f}")
    print(f"plain numpy: not run — 10^9 cells are {cells * 4 / 2**30:.1f} GiB as float32 and"
          f" {cells * 8 / 2**30:.1f} GiB per float64 temporary (it makes several)")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, *rest = sys.argv[2:]
        if kind == "memory":
            result = child_in_memory(rest[0], int(rest[1]), int(rest[2]))
        elif kind == "read":
            result = child_read(rest[0])
        else:
            result = child_trace(rest[0])
        print(json.dumps(result))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--part", choices=("a", "b", "both"), default="both")
    parser.add_argument("--examples", type=int, default=1_000_000)
    parser.add_argument("--records-a", type=int, default=50)
    parser.add_argument("--records-b", type=int, default=1000)
    parser.add_argument("--dir", default=None, help="where to write the (b) trace (default: a temp dir)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="example_stats_", dir=args.dir))
    try:
        print(f"numpy {np.__version__}, 1 thread, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        if args.part in ("a", "both"):
            part_a(args.examples, args.records_a, work)
        if args.part in ("b", "both"):
            part_b(args.examples, args.records_b, work)
        print(f"load average after: {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
