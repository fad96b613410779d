"""Key-free discovery: the representation pass against one probe evaluation, side by side.

On a run (default: runs/default, 12,192 text probe examples) and its analysed checkpoint, in
alternating rounds (the order flips every round, so drift in machine load hits both alike):
  * "probe eval": one trace row, `view_probe_losses` (what the trainer records);
  * "features": the representation pass `lmprobe mine --by repr` makes, every probe example's
    features written to a float32 file (lmprobe.discovery.repr_keys.write_probe_features);
then, once, the clustering of those features (one-pass projection + mini-batch k-means).
Reported: median seconds of each and the ratio features / probe eval. Figures in BENCHMARKS.md.

    python benchmarks/discovery.py [RUN] [--rounds 5] [--batch-size 64] [--clusters 10]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", nargs="?", default="runs/default")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--clusters", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from lmprobe.discovery.repr_keys import cluster_features, open_features, write_probe_features
    from lmprobe.domain import open_view, view_probe_losses

    view = open_view(args.run)
    model = view.load_model(view.checkpoint)
    n = view.probe.n_examples
    times: dict[str, list[float]] = {"probe eval": [], "features": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)

        def probe_eval() -> None:
            view_probe_losses(view, model, args.batch_size)

        def features() -> None:
            n_rows, d = write_probe_features(view, model, folder / "features.f32", batch_size=args.batch_size)
            (folder / "meta.json").write_text(f'{{"n": {n_rows}, "d": {d}}}')

        contenders = {"probe eval": probe_eval, "features": features}
        probe_eval(), features()  # warm-up: first-call costs out of the timings
        for r in range(args.rounds):
            order = list(contenders) if r % 2 == 0 else list(contenders)[::-1]
            for name in order:
                start = time.perf_counter()
                contenders[name]()
                times[name].append(time.perf_counter() - start)
        start = time.perf_counter()
        labels, _, info = cluster_features(open_features(folder), args.clusters, seed=0, workdir=folder)
        cluster_seconds = time.perf_counter() - start
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{args.run}: {n:,} probe examples, checkpoint {view.checkpoint.name}, batch size {args.batch_size}, "
          f"{torch.get_num_threads()} torch threads, {args.rounds} alternating rounds (medians)")
    for name, value in med.items():
        print(f"  {name:<11s} {value:8.3f} s   ({n / value:,.0f} examples/s)")
    print(f"  ratio features / probe eval: {med['features'] / med['probe eval']:.2f}")
    print(f"  clustering ({info['dims']} principal axes, "
          f"{args.clusters} clusters): {cluster_seconds:.3f} s")


if __name__ == "__main__":
    main()
