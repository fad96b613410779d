"""Sweep the opposing feature's scale: one toy run per scale, then sharpness against scale.

    python -m toy.sweep                                   # linear-opposing, scales 1,2,4,8
    python -m toy.sweep --scales 1,2,3,4,6 --config configs/toy/polynomial.yaml
    python -m toy.sweep --scales 2,4 train.steps=500      # any config key, as for cli/train_toy.py

Each scale is an ordinary run (OUT/scale-S, minable with `lmprobe mine`), trained in this process
on one CPU process. Prints a table (scale, sharpness at the end, its maximum, the mean of the last
fifth of the measurements, 2/lr, and the correlation of the two planted groups' loss changes) and
writes OUT/sweep.json and OUT/sharpness_vs_scale.png.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

import numpy as np

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "toy" / "linear-opposing.yaml"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from lmprobe.errors import OneLineArgumentParser

    parser = OneLineArgumentParser(prog="python -m toy.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help=f"toy YAML config (default: {DEFAULT_CONFIG.name})")
    parser.add_argument("--scales", default="1,2,4,8", help="comma-separated data.feature_scale values (default: 1,2,4,8)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the runs and results (default: runs/toy-sweep-<config>-<time>)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    return parser.parse_args(argv)


def scales_of(text: str) -> list[float]:
    from lmprobe.errors import LmprobeError

    try:
        scales = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise LmprobeError(f"--scales must be comma-separated numbers, got {text!r}") from None
    if not scales:
        raise LmprobeError("--scales is empty")
    return scales


def summarise(run_dir: Path) -> dict:
    """Sharpness numbers from metrics.jsonl and the planted groups' loss-change correlation from the trace."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    measured = [(r["step"], r["sharpness"]) for r in rows if r.get("sharpness") is not None]
    thresholds = [r["two_over_lr"] for r in rows if r.get("two_over_lr") is not None]
    steps, sharp = (np.array(v, dtype=np.float64) for v in zip(*measured)) if measured else (np.zeros(0), np.zeros(0))
    tail = sharp[-max(1, len(sharp) // 5):] if len(sharp) else sharp
    return {
        "sharpness_end": float(sharp[-1]) if len(sharp) else None,
        "sharpness_max": float(sharp.max()) if len(sharp) else None,
        "sharpness_tail_mean": float(tail.mean()) if len(tail) else None,
        "two_over_lr": float(thresholds[-1]) if thresholds else None,
        "final_loss": next((r["loss"] for r in reversed(rows) if "loss" in r), None),
        "planted_corr": planted_correlation(run_dir),
        "steps": steps.tolist(), "sharpness": sharp.tolist(),
    }


def planted_correlation(run_dir: Path) -> float | None:
    """Correlation of the step-to-step mean loss changes of the two planted groups
    (feature present, target 1 vs target 0), over the whole trace."""
    from lmprobe.trace import read_trace
    from toy.probe import ToyProbe

    probe = ToyProbe.load(run_dir / "probe")
    losses = read_trace(run_dir).losses
    feature, target = probe.extra_keys["feature"], probe.extra_keys["target"]
    a, b = (feature == 1) & (target == 1), (feature == 1) & (target == 0)
    if not a.any() or not b.any() or len(losses) < 3:
        return None
    da, db = np.diff(np.asarray(losses[:, a], dtype=np.float64).mean(1)), np.diff(np.asarray(losses[:, b], dtype=np.float64).mean(1))
    if da.std() == 0 or db.std() == 0:
        return None
    return float(np.corrcoef(da, db)[0, 1])


def plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for r in results:
        left.plot(r["steps"], r["sharpness"], label=f"scale {r['scale']:g}")
    threshold = next((r["two_over_lr"] for r in results if r["two_over_lr"]), None)
    if threshold:
        left.axhline(threshold, ls="--", c="k", lw=1, label="2/lr")
        right.axhline(threshold, ls="--", c="k", lw=1, label="2/lr")
    left.set(xlabel="step", ylabel="sharpness (top Hessian eigenvalue)", yscale="log", title=title)
    left.legend(fontsize=8)
    scales = [r["scale"] for r in results]
    right.plot(scales, [r["sharpness_max"] for r in results], "o-", label="max")
    right.plot(scales, [r["sharpness_end"] for r in results], "s-", label="end")
    right.plot(scales, [r["sharpness_tail_mean"] for r in results], "^:", label="mean of last fifth")
    right.set(xlabel="opposing feature scale (data.feature_scale)", ylabel="sharpness", xscale="log",
              yscale="log", title="sharpness against the feature's scale")
    right.legend(fontsize=8)
    from matplotlib.ticker import ScalarFormatter

    for axis in (right.xaxis, right.yaxis, left.yaxis):
        axis.set_major_formatter(ScalarFormatter())
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.table import Table

    from lmprobe.errors import LmprobeError
    from lmprobe.train import launch
    from lmprobe.train.rundir import timestamp

    args = parse_args(argv)
    console = Console(stderr=True)
    try:
        scales = scales_of(args.scales)
        out = args.out or Path("runs") / f"toy-sweep-{args.config.stem}-{timestamp()}"
        results = []
        for scale in scales:
            name = f"scale-{scale:g}"
            console.print(f"training {out / name} (data.feature_scale={scale:g})", highlight=False)
            quiet = io.StringIO()
            with contextlib.redirect_stdout(quiet):  # each run's summary table; the sweep's table follows
                code = launch.main(["--config", str(args.config), "--name", name, "--no-progress",
                                    f"out_dir={out}", *args.overrides, f"data.feature_scale={scale}"],
                                   domain="toy", default_config=DEFAULT_CONFIG)
            if code != 0:
                return code
            results.append({"scale": scale, "run": str(out / name), **summarise(out / name)})
    except LmprobeError as err:
        console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        return 2
    table = Table(title=f"sharpness against the opposing feature's scale ({args.config.stem})",
                  caption="sharpness at the end, its maximum and its mean over the last fifth of the run; "
                          "corr A,B: the planted groups' step-to-step loss changes; loss: the final training loss")
    for column in ("scale", "end", "max", "last 5th", "2/lr", "max/(2/lr)", "corr A,B", "loss"):
        table.add_column(column, justify="right")

    def fmt(value, spec=".3g"):
        return "-" if value is None else format(value, spec)

    for r in results:
        ratio = r["sharpness_max"] / r["two_over_lr"] if r["sharpness_max"] and r["two_over_lr"] else None
        table.add_row(fmt(r["scale"], "g"), fmt(r["sharpness_end"]), fmt(r["sharpness_max"]),
                      fmt(r["sharpness_tail_mean"]), fmt(r["two_over_lr"]), fmt(ratio, ".2f"),
                      fmt(r["planted_corr"], "+.2f"), fmt(r["final_loss"], ".4f"))
    Console().print(table)
    (out / "sweep.json").write_text(json.dumps(
        [{k: v for k, v in r.items() if k not in ("steps", "sharpness")} for r in results], indent=1))
    plot(results, out / "sharpness_vs_scale.png", args.config.stem)
    console.print(f"wrote {out / 'sweep.json'} and {out / 'sharpness_vs_scale.png'}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
