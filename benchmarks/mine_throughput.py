"""Mining throughput on synthetic memory-mapped traces of growing size.

Writes float32 traces [1000 records x N examples] to a temporary directory (row by row, so the
generator itself never holds the matrix), mines each one from an np.memmap and reports
cells/second, a linear fit of time against cells (R^2, and time per cell at every size), and
the peak of numpy/Python heap allocations during mining (tracemalloc) next to the matrix size.
The trace has text-like keys (Zipf feature and target ids) and a few planted opposing pairs.

    PYTHONPATH=. python benchmarks/mine_throughput.py            # 1e6 .. 3e7 cells
    PYTHONPATH=. python benchmarks/mine_throughput.py --sizes 1e6 1e7 --repeats 1
    PYTHONPATH=. python benchmarks/mine_throughput.py --sizes 2.5e8 --repeats 1 --limit-heap-mb 320

`--limit-heap-mb` re-runs the largest size in a child process whose private memory is capped
with RLIMIT_DATA (Linux: heap and anonymous mappings, OpenBLAS buffers included; a read-only
file mapping is not counted), demonstrating that a trace larger than the allowed memory mines.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from lmprobe.mining import mine

RECORDS = 1000


def write_trace(path: Path, n_records: int, n_examples: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A synthetic trace on disk plus its keys: decaying losses, noise, 5 planted pairs."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, 2001) ** 0.9
    feature = rng.choice(2000, n_examples, p=weights / weights.sum())
    target = (feature * 7 + rng.choice(2000, n_examples, p=weights / weights.sum())) % 5000
    start = rng.uniform(2.0, 7.0, n_examples).astype(np.float32)
    floor = (start * rng.uniform(0.2, 0.7, n_examples)).astype(np.float32)
    rate = rng.uniform(5.0, 40.0, n_examples).astype(np.float32)
    planted = []
    for f in range(5):  # the two biggest targets of the five most common features
        targets, counts = np.unique(target[feature == f], return_counts=True)
        a, b = targets[np.argsort(-counts)[:2]]
        planted.append((np.flatnonzero((feature == f) & (target == a)),
                        np.flatnonzero((feature == f) & (target == b)),
                        rng.normal(0, 0.1, n_records) * (rng.random(n_records) < 0.3)))
    out = np.memmap(path, dtype=np.float32, mode="w+", shape=(n_records, n_examples))
    for r in range(n_records):
        row = floor + (start - floor) * np.exp(-r / rate)
        row += rng.normal(0.0, 0.05, n_examples).astype(np.float32)
        for members_a, members_b, swing in planted:
            row[members_a] += swing[r]
            row[members_b] -= swing[r]
        out[r] = row
    out.flush()
    del out
    keys = {"feature": feature.astype(np.int64), "target": target.astype(np.int64)}
    np.savez(path.with_suffix(".keys.npz"), **keys)
    return keys


def timed_mine(losses, steps, keys, repeats: int, **kwargs):
    """Best wall time of `repeats` runs, the last result, and the traced heap peak of one run."""
    best = np.inf
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        result = mine(losses, steps, keys, **kwargs)
        best = min(best, time.perf_counter() - t0)
    gc.collect()
    tracemalloc.start()
    mine(losses, steps, keys, **kwargs)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return best, result, peak


def heap_limited_child(path: Path, n_examples: int, limit_mb: int) -> None:
    """Run in a child: cap private memory, then mine the trace at `path`."""
    limit = limit_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    keys = dict(np.load(path.with_suffix(".keys.npz")))
    losses = np.memmap(path, dtype=np.float32, mode="r", shape=(RECORDS, n_examples))
    t0 = time.perf_counter()
    result = mine(losses, np.arange(RECORDS), keys, n_clusters=8)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{time.perf_counter() - t0:.2f} {len(result.pairs)} {peak_kb}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", type=float, default=[1e6, 3e6, 1e7, 3e7])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--limit-heap-mb", type=int, default=0)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        heap_limited_child(Path(args.child[0]), int(args.child[1]), int(args.child[2]))
        return

    console = Console(width=150)
    rows = []
    with tempfile.TemporaryDirectory(prefix="lmprobe-bench-") as tmp:
        for cells in args.sizes:
            n_examples = int(round(cells / RECORDS))
            path = Path(tmp) / f"losses-{n_examples}.bin"
            keys = write_trace(path, RECORDS, n_examples)
            losses = np.memmap(path, dtype=np.float32, mode="r", shape=(RECORDS, n_examples))
            steps = np.arange(RECORDS) * 10
            mine(losses, steps, keys, n_clusters=0)  # warm the page cache once
            seconds, result, peak = timed_mine(losses, steps, keys, args.repeats, n_clusters=0)
            cluster_seconds, clustered, _ = timed_mine(losses, steps, keys, 1, n_clusters=8)
            rows.append(dict(cells=RECORDS * n_examples, examples=n_examples, seconds=seconds,
                             cluster_seconds=cluster_seconds, peak=peak, groups=len(result.groups),
                             tested=result.pair_test.n_tested, pairs=len(result.pairs)))
            console.log(f"{RECORDS * n_examples:.2g} cells: {seconds:.2f} s, {len(result.pairs)} pairs")
            if args.limit_heap_mb and cells == args.sizes[-1]:
                child = subprocess.run(
                    [sys.executable, __file__, "--child", str(path), str(n_examples), str(args.limit_heap_mb)],
                    capture_output=True, text=True, env=dict(os.environ))
                if child.returncode == 0:
                    t, pairs, maxrss = child.stdout.split()
                    console.print(f"RLIMIT_DATA={args.limit_heap_mb} MiB, trace {path.stat().st_size / 2**20:.0f} MiB:"
                                  f" mined in {float(t):.2f} s, {pairs} pairs (max RSS incl. file pages"
                                  f" {int(maxrss) / 1024:.0f} MiB)")
                else:
                    console.print(f"heap-limited run failed: {child.stderr.strip().splitlines()[-1:]}")
            del losses

    cells = np.array([r["cells"] for r in rows], dtype=float)
    seconds = np.array([r["seconds"] for r in rows])
    fit_line = ""
    if len(rows) >= 3:
        slope, intercept = np.polyfit(cells, seconds, 1)
        fitted = slope * cells + intercept
        r2 = 1 - np.sum((seconds - fitted) ** 2) / np.sum((seconds - seconds.mean()) ** 2)
        fit_line = (f"linear fit: time = {slope * 1e9:.0f} ns/cell x cells + {intercept:.3f} s,"
                    f" R^2 = {r2:.4f}; ns per cell, largest / smallest size:"
                    f" {seconds[-1] / cells[-1] / (seconds[0] / cells[0]):.2f}")

    table = Table(title=f"lmprobe.mining.mine on np.memmap traces ({RECORDS} records x N examples, float32)")
    for name in ("cells", "examples", "groups", "pairs tested", "pairs found", "mine s",
                 "Mcells/s", "ns/cell", "with clustering s", "heap peak MiB", "matrix MiB"):
        table.add_column(name, justify="right")
    for r in rows:
        table.add_row(f"{r['cells']:.2g}", str(r["examples"]), str(r["groups"]), str(r["tested"]),
                      str(r["pairs"]), f"{r['seconds']:.2f}", f"{r['cells'] / r['seconds'] / 1e6:.1f}",
                      f"{1e9 * r['seconds'] / r['cells']:.0f}", f"{r['cluster_seconds']:.2f}",
                      f"{r['peak'] / 2**20:.0f}", f"{r['cells'] * 4 / 2**20:.0f}")
    console.print(table)
    if fit_line:
        console.print(fit_line)


if __name__ == "__main__":
    main()
