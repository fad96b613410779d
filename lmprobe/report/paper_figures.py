"""The figures a researcher puts in a paper, each saved in the asked formats with the data it
plots beside it (NAME.json), so what a figure shows can be checked against the run.

Every function takes plain series (already computed by the events and mining code the
commands share) and returns a `Drawn`: the files written and a one-line summary. Nothing here
computes a statistic of its own beyond arranging what it is given.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lmprobe.report.figures import _pyplot

SPIKE_STYLE = {"color": "tab:red", "linestyle": ":", "linewidth": 1.0}
CREST_STYLE = {"color": "tab:purple", "alpha": 0.15}


@dataclass
class Series:
    """One plotted line: its legend label and its (step, value) points."""

    label: str
    steps: Sequence[float]
    values: Sequence[float]

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "steps": _clean(self.steps), "values": _clean(self.values)}


@dataclass
class Drawn:
    name: str
    summary: str
    paths: list[Path] = field(default_factory=list)


def save(fig, out_dir: Path, name: str, formats: Sequence[str], data: dict[str, Any], summary: str) -> Drawn:
    """NAME.<format> for each format and NAME.json with the plotted data (and the summary)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out_dir / f"{name}.{fmt}"
        fig.savefig(path, dpi=120, bbox_inches="tight")  # no empty margins (the context tables)
        paths.append(path)
    data_path = out_dir / f"{name}.json"
    data_path.write_text(json.dumps({"figure": name, "summary": summary, **data}, indent=1))
    _pyplot().close(fig)
    return Drawn(name, summary, paths + [data_path])


# --------------------------------------------------------------------------- the paper's figure
def paper_figure(loss: Series, groups: Sequence[Series], ratio: Series | None, spikes: Sequence[int],
                 crests: Sequence[int], out_dir: Path, formats: Sequence[str], title: str) -> Drawn:
    """Training loss and the top pairs' group losses on one time axis, sharpness / threshold on a
    twin axis, loss spikes (dotted red) and instability crests (shaded) marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 4.6))
    ax.plot(loss.steps, loss.values, color="black", linewidth=1.4, label=loss.label)
    for series in groups:
        ax.plot(series.steps, series.values, linewidth=1.0, label=series.label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats; squared error for MSE runs)")
    handles, labels = ax.get_legend_handles_labels()
    if ratio is not None and len(ratio.steps):
        twin = ax.twinx()
        twin.plot(ratio.steps, ratio.values, color="tab:blue", marker=".", linestyle="--", linewidth=1.0,
                  label=ratio.label)
        twin.axhline(1.0, color="tab:blue", linewidth=0.6, alpha=0.6)
        twin.set_ylabel("sharpness / threshold")
        more_h, more_l = twin.get_legend_handles_labels()
        handles, labels = handles + more_h, labels + more_l
    for step in spikes:
        ax.axvline(step, **SPIKE_STYLE)
    for step in crests:
        ax.axvspan(step - 0.5, step + 0.5, **CREST_STYLE)
    if spikes:
        handles.append(plt.Line2D([], [], **SPIKE_STYLE))
        labels.append(f"loss spike ({len(spikes)})")
    if crests:
        handles.append(plt.Rectangle((0, 0), 1, 1, **CREST_STYLE))
        labels.append(f"instability crest ({len(crests)})")
    ax.legend(handles, labels, fontsize=7, loc="upper right")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    summary = (f"training loss, {len(groups)} group losses of the top pairs, "
               f"{'sharpness / threshold, ' if ratio is not None else ''}{len(spikes)} spike(s), "
               f"{len(crests)} instability crest(s)")
    data = {"loss": loss.to_dict(), "groups": [g.to_dict() for g in groups],
            "sharpness_ratio": None if ratio is None else ratio.to_dict(),
            "spikes": [int(s) for s in spikes], "instability_crests": [int(s) for s in crests]}
    return save(fig, out_dir, "paper", formats, data, summary)


# --------------------------------------------------------------------------- sharpness
def sharpness_figure(curves: Sequence[tuple[Series, Series | None, Series | None]], out_dir: Path,
                     formats: Sequence[str]) -> Drawn:
    """Each logged sharpness (value, its threshold, its error bound) against its threshold; the
    bound is drawn as a band around the value."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    parts = []
    for value, threshold, bound in curves:
        line, = ax.plot(value.steps, value.values, marker=".", label=value.label)
        if bound is not None and len(bound.steps):
            at = {s: b for s, b in zip(bound.steps, bound.values)}
            steps = [s for s in value.steps if s in at]
            v = np.array([val for s, val in zip(value.steps, value.values) if s in at], dtype=float)
            b = np.array([at[s] for s in steps], dtype=float)
            ax.fill_between(steps, v - b, v + b, color=line.get_color(), alpha=0.25, label=bound.label)
        if threshold is not None and len(threshold.steps):
            ax.plot(threshold.steps, threshold.values, linestyle="--", color=line.get_color(), label=threshold.label)
        parts.append(value.label)
    if curves:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("top Hessian eigenvalue (loss / parameter²)")
    ax.set_title("Sharpness against its stability threshold", fontsize=10)
    if curves:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no sharpness logged (train with sharpness.every > 0)", ha="center", va="center",
                transform=ax.transAxes)
    fig.tight_layout()
    ratios = [np.asarray(v.values, float) / np.asarray(t.values, float) for v, t, _ in curves
              if t is not None and len(t.values) == len(v.values) and len(v.values)]
    summary = ", ".join(f"{label}: max {r.max():.2f}x, last {r[-1]:.2f}x its threshold"
                        for label, r in zip(parts, ratios)) or "no sharpness logged"
    data = {"curves": [{"value": v.to_dict(), "threshold": None if t is None else t.to_dict(),
                        "error_bound": None if b is None else b.to_dict()} for v, t, b in curves]}
    return save(fig, out_dir, "sharpness", formats, data, summary)


# --------------------------------------------------------------------------- loss changes
def change_histogram(event_changes: np.ndarray, event_label: str, ordinary_changes: np.ndarray, ordinary_label: str,
                     out_dir: Path, formats: Sequence[str], bins: int = 60,
                     intervals: Sequence[tuple[int, int]] = ()) -> Drawn:
    """Per-example loss changes at the largest event and at an ordinary interval, on shared bins
    (log counts), each with its top-1% cut (the largest 1% of rises) marked."""
    plt = _pyplot()
    both = np.concatenate([event_changes, ordinary_changes])
    both = both[np.isfinite(both)]
    edges = np.linspace(both.min(), both.max(), bins + 1) if both.size else np.linspace(-1, 1, bins + 1)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    data: dict[str, Any] = {"edges": _clean(edges), "sets": [], "intervals": [[int(a), int(b)] for a, b in intervals]}
    lines = []
    for changes, label, color in ((event_changes, event_label, "tab:red"), (ordinary_changes, ordinary_label, "tab:grey")):
        changes = changes[np.isfinite(changes)]
        counts, _ = np.histogram(changes, bins=edges)
        ax.stairs(counts, edges, color=color, label=label, fill=color == "tab:grey", alpha=0.5 if color == "tab:grey" else 1)
        cut = float(np.quantile(changes, 0.99)) if changes.size else float("nan")
        ax.axvline(cut, color=color, linestyle="--", linewidth=1, label=f"top 1% cut ({cut:+.3g})")
        rose = float(np.mean(changes > 0)) if changes.size else float("nan")
        data["sets"].append({"label": label, "counts": [int(c) for c in counts], "top1_cut": cut,
                             "n": int(changes.size), "share_rose": rose})
        lines.append(f"{label}: {rose:.0%} rose")
    ax.set_yscale("symlog", linthresh=1)
    ax.set_xlabel("per-example loss change over the interval (nats)")
    ax.set_ylabel("examples")
    ax.set_title("Per-example loss changes: the largest event against an ordinary interval", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, out_dir, "loss_changes", formats, data, "; ".join(lines))


# --------------------------------------------------------------------------- around spikes
def triggered_figure(panels: Sequence[tuple[str, str, Any]], n_spikes: int, out_dir: Path,
                     formats: Sequence[str]) -> Drawn:
    """Peri-event averages around the loss spikes (TriggeredAverage-like: lags, mean, low, high),
    one panel each, with the circular-shift null band (2.5-97.5%)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5.2 * max(1, len(panels)), 3.8), squeeze=False)
    data: dict[str, Any] = {"n_spikes": int(n_spikes), "panels": []}
    outside = []
    for ax, (title, ylabel, avg) in zip(axes[0], panels):
        lags = np.asarray(avg.lags, float)
        ax.fill_between(lags, avg.low, avg.high, color="tab:grey", alpha=0.3, label="null band (circular shifts)")
        ax.plot(lags, avg.mean, marker=".", color="tab:blue", label=f"mean over {n_spikes} spike(s)")
        ax.axvline(0, **SPIKE_STYLE, label="spike")
        ax.set_xlabel("lag from the spike (steps)")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        mean, low, high = (np.asarray(a, float) for a in (avg.mean, avg.low, avg.high))
        with np.errstate(invalid="ignore"):
            out = int(np.sum((mean > high) | (mean < low)))
        outside.append(f"{title}: {out} of {lags.size} lags outside the null band")
        data["panels"].append({"title": title, "ylabel": ylabel, "lags": _clean(lags), "mean": _clean(mean),
                               "null_low": _clean(low), "null_high": _clean(high)})
    if not panels:
        ax = axes[0, 0]
        ax.text(0.5, 0.5, "no loss spike to average around", ha="center", va="center", transform=ax.transAxes)
        ax.set_title("Peri-event averages around loss spikes", fontsize=9)
        ax.set_xlabel("lag from the spike (steps)")
        ax.set_ylabel("sharpness / threshold")
    fig.tight_layout()
    return save(fig, out_dir, "around_spikes", formats, data, "; ".join(outside) or "no spike to average around")


# --------------------------------------------------------------------------- turnover
def turnover_figure(complexity, out_dir: Path, formats: Sequence[str]) -> Drawn:
    """Which grouping explains the strongest opposing pairs in each window of training (stacked
    shares), with the complexity index on a twin axis."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.2))
    labels = [f"{a}..{b}" for a, b in complexity.windows]
    x = np.arange(len(labels))
    bottom = np.zeros(len(labels))
    shares = np.asarray(complexity.shares, float).reshape(len(labels), len(complexity.groupings))
    for j, (grouping, order) in enumerate(zip(complexity.groupings, complexity.orders)):
        ax.bar(x, shares[:, j], bottom=bottom, label=f"{grouping} (order {order})")
        bottom += shares[:, j]
    ax.set_xticks(x, labels, rotation=30, fontsize=7)
    ax.set_xlabel("window of training (steps)")
    ax.set_ylabel("share of the top pairs' strength")
    ax.set_ylim(0, 1.05)
    index = [np.nan if v is None else v for v in complexity.index]
    twin = ax.twinx()
    twin.plot(x, index, color="black", marker="o", label="complexity index")
    twin.set_ylabel("complexity index (mean order)")
    twin.set_ylim(0.5, max(complexity.orders) + 0.5)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = twin.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left")
    ax.set_title(f"Group turnover: the groupings behind the strongest pairs; trend {complexity.trend}", fontsize=9)
    fig.tight_layout()
    data = {"groupings": list(complexity.groupings), "orders": [int(o) for o in complexity.orders],
            "windows": [[int(a), int(b)] for a, b in complexity.windows], "shares": shares.tolist(),
            "index": _clean(index), "tau": complexity.tau, "p_value": complexity.p_value}
    return save(fig, out_dir, "turnover", formats, data, f"{len(labels)} windows; complexity {complexity.trend}")


# --------------------------------------------------------------------------- text pairs
def contexts_figure(rank: int, title: str, sides: Sequence[tuple[str, Sequence[str]]], out_dir: Path,
                    formats: Sequence[str]) -> Drawn:
    """A text pair's two groups as a small table: a column per side, a few contexts each."""
    plt = _pyplot()
    depth = max(1, max(len(rows) for _, rows in sides))
    cells = [[(rows[i] if i < len(rows) else "") for _, rows in sides] for i in range(depth)]
    fig, ax = plt.subplots(figsize=(11, 0.3 * depth + 0.6))
    ax.axis("off")
    table = ax.table(cellText=cells, colLabels=[label for label, _ in sides], loc="center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    table.scale(1, 1.3)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    data = {"rank": rank, "title": title, "sides": [{"label": label, "contexts": list(rows)} for label, rows in sides]}
    return save(fig, out_dir, f"pair-{rank:02d}-contexts", formats, data, title)


def _clean(values) -> list[float | None]:
    return [None if v is None or not np.isfinite(float(v)) else float(v) for v in np.asarray(values, dtype=float)]
