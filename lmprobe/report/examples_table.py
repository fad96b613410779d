"""Per-example training dynamics for people and scripts: rich tables and JSON.

Same conventions as `mining_table`: the caller passes `describe(example_index) -> (context,
target)` and optionally `key_label(key_name, value) -> str`, both already readable (the text
domain escapes its tokens itself); an example is shown as `context [target]`, each cell kept
on one line. Nothing here knows the domain.

API for the `lmprobe examples` command:
  render_examples(stats, describe, key_label=None, keys=None, console=None, top=10, *, by=None)
  examples_to_dict(stats, describe=None, key_label=None, keys=None, top=10, *, by=None) -> dict
  examples_to_json(...same..., indent=None) -> str
  render_examples_to_text(...same..., width=160) -> str
The parts (summary_table, classes_table, most_forgotten_table, latest_learned_table,
groups_table) are public too. `by` names the key to summarise groups by (default "target"
when present, else the first key); groups smaller than `min_group_size` are skipped.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from rich.console import Console, Group as RichGroup
from rich.table import Table
from rich.text import Text

from lmprobe.dynamics.stats import RHO1_CLASSES, ExampleStats
from lmprobe.errors import LmprobeError
from lmprobe.report.mining_table import Describe, KeyLabel, default_key_label, example_text, visible_text

CLASS_MEANING = {"H->H": "high loss at start and end", "L->H": "low at start, high at end",
                 "H->L": "high at start, low at end (learned)", "L->L": "low at start and end"}
MIN_GROUP_SIZE = 5


def most_forgotten(stats: ExampleStats, top: int) -> np.ndarray:
    """Indices of the examples with most forgetting events (ties: lower index first)."""
    counts = np.where(stats.finite, stats.forgetting_events, 0)
    candidates = np.flatnonzero(counts > 0)
    order = np.lexsort((candidates, -counts[candidates]))
    return candidates[order[:top]]


def latest_learned(stats: ExampleStats, top: int) -> np.ndarray:
    """Indices of the examples with the largest finite age of acquisition."""
    aoa = stats.aoa_step
    candidates = np.flatnonzero(np.isfinite(aoa))
    order = np.lexsort((candidates, -aoa[candidates]))
    return candidates[order[:top]]


@dataclass
class GroupRow:
    value: int
    label: str
    size: int
    mean_forgetting: float
    forgotten_share: float
    never_learned_share: float
    median_aoa: float
    mean_final_loss: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in vars(self).items()}


def _pick_key(keys: Mapping[str, np.ndarray] | None, by: str | None, n: int) -> str | None:
    if not keys:
        if by is not None:
            raise LmprobeError(f"by={by!r} needs keys (one integer per example); none were given")
        return None
    name = by if by is not None else ("target" if "target" in keys else next(iter(keys)))
    if name not in keys:
        raise LmprobeError(f"unknown key by={name!r}; available keys: {', '.join(sorted(keys))}")
    if np.asarray(keys[name]).shape != (n,):
        raise LmprobeError(f"key {name!r} needs one value per example ({n}), got shape {np.shape(keys[name])}")
    return name


def group_rows(stats: ExampleStats, keys: Mapping[str, np.ndarray] | None, by: str | None = None,
               key_label: KeyLabel | None = None, *, top: int = 10,
               min_group_size: int = MIN_GROUP_SIZE) -> tuple[str | None, list[GroupRow]]:
    """Groups of examples sharing the `by` key, most forgetting events on average first."""
    name = _pick_key(keys, by, stats.n_examples)
    if name is None:
        return None, []
    f = stats.finite
    values, inverse = np.unique(np.asarray(keys[name])[f], return_inverse=True)
    size = np.bincount(inverse, minlength=len(values))
    forgets = stats.forgetting_events[f]
    mean_forgetting = np.bincount(inverse, forgets, len(values)) / np.maximum(size, 1)
    forgotten = np.bincount(inverse, forgets > 0, len(values)) / np.maximum(size, 1)
    never = np.bincount(inverse, stats.never_learned[f], len(values)) / np.maximum(size, 1)
    final = np.bincount(inverse, stats.final_loss[f], len(values)) / np.maximum(size, 1)
    eligible = np.flatnonzero(size >= min_group_size)
    order = eligible[np.lexsort((values[eligible], -mean_forgetting[eligible]))][:top]
    label = key_label or default_key_label
    aoa = stats.aoa_step[f]
    rows = []
    for g in order:
        member_aoa = aoa[inverse == g]
        member_aoa = member_aoa[np.isfinite(member_aoa)]
        rows.append(GroupRow(int(values[g]), visible_text(label(name, int(values[g]))), int(size[g]),
                             float(mean_forgetting[g]), float(forgotten[g]), float(never[g]),
                             float(np.median(member_aoa)) if member_aoa.size else math.nan,
                             float(final[g])))
    return name, rows


def _fmt(value: float, spec: str = ".3g") -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def summary_table(stats: ExampleStats) -> Table:
    """Window, thresholds and the headline shares."""
    s = stats.summary()
    start, end = stats.window
    table = Table(title=f"Per-example dynamics: {stats.n_examples:,} examples, {stats.n_records} records,"
                        f" steps {start}..{end}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    rows = [
        ("learned = loss <=", f"{stats.learned_threshold:.4g} (p >= {math.exp(-stats.learned_threshold):.3g})"),
        ("learned at the last record", f"{s['learned_at_end']:.1%}"),
        ("never learned", f"{s['never_learned']:.1%}"),
        ("unforgettable (learned, never forgotten)", f"{s['unforgettable']:.1%}"),
        ("forgotten at least once", f"{s['forgotten_at_least_once']:.1%}"),
        ("mean forgetting events", _fmt(s["mean_forgetting_events"])),
        ("with an age of acquisition", f"{s['with_aoa']:.1%}"),
        ("median age of acquisition (step)", _fmt(s["median_aoa_step"], ".4g")),
        ("mean confidence (mean p)", _fmt(s["mean_confidence"])),
        ("mean final loss", _fmt(s["mean_final_loss"])),
    ]
    if s["n_finite"] < stats.n_examples:
        rows.append(("left out (non-finite loss)", f"{stats.n_examples - s['n_finite']:,}"))
    for row in rows:
        table.add_row(*row)
    return table


def classes_table(stats: ExampleStats) -> Table:
    """Rho-1 classes with their shares and mean start / end losses."""
    t_start, t_end = stats.rho1_thresholds
    table = Table(title="Rho-1 classes (start -> end loss)",
                  caption=f"H = above, L = at/below the threshold: start {t_start:.4g},"
                          f" end {t_end:.4g} (start = mean of the first {stats.edge_records} records,"
                          f" end = mean of the last {stats.edge_records})")
    for name, justify in (("class", "left"), ("meaning", "left"), ("share", "right"), ("count", "right"),
                          ("mean start loss", "right"), ("mean end loss", "right")):
        table.add_column(name, justify=justify)
    counts = stats.class_counts
    for code, name in enumerate(RHO1_CLASSES):
        members = stats.rho1_code == code
        table.add_row(name, CLASS_MEANING[name], f"{stats.class_shares[name]:.1%}", f"{counts[name]:,}",
                      _fmt(float(stats.start_loss[members].mean()) if counts[name] else math.nan),
                      _fmt(float(stats.end_loss[members].mean()) if counts[name] else math.nan))
    return table


def most_forgotten_table(stats: ExampleStats, describe: Describe, *, top: int = 10) -> Table:
    table = Table(title="Most forgotten examples (learned -> not learned transitions)")
    for name, justify in (("#", "right"), ("example", "left"), ("forgetting events", "right"),
                          ("learned share", "right"), ("first learned at", "right"),
                          ("final loss", "right"), ("class", "left")):
        table.add_column(name, justify=justify, overflow="fold")
    for rank, i in enumerate(most_forgotten(stats, top), start=1):
        table.add_row(str(rank), Text(example_text(describe, i)), str(int(stats.forgetting_events[i])),
                      f"{stats.learned_share[i]:.0%}", str(int(stats.first_learned_step[i])),
                      _fmt(float(stats.final_loss[i])), RHO1_CLASSES[stats.rho1_code[i]])
    return table


def latest_learned_table(stats: ExampleStats, describe: Describe, *, top: int = 10) -> Table:
    table = Table(title="Latest-learned examples (largest age of acquisition)")
    for name, justify in (("#", "right"), ("example", "left"), ("AoA step", "right"),
                          ("start -> end loss", "right"), ("forgetting events", "right"), ("class", "left")):
        table.add_column(name, justify=justify, overflow="fold")
    for rank, i in enumerate(latest_learned(stats, top), start=1):
        table.add_row(str(rank), Text(example_text(describe, i)), f"{stats.aoa_step[i]:.4g}",
                      f"{stats.start_loss[i]:.3g} -> {stats.end_loss[i]:.3g}",
                      str(int(stats.forgetting_events[i])), RHO1_CLASSES[stats.rho1_code[i]])
    return table


def groups_table(stats: ExampleStats, keys: Mapping[str, np.ndarray] | None, by: str | None = None,
                 key_label: KeyLabel | None = None, *, top: int = 10,
                 min_group_size: int = MIN_GROUP_SIZE) -> Table | None:
    name, rows = group_rows(stats, keys, by, key_label, top=top, min_group_size=min_group_size)
    if name is None:
        return None
    table = Table(title=f"Groups by {name} with the most forgetting (groups of >= {min_group_size})")
    for column, justify in (("group", "left"), ("n", "right"), ("mean forgetting events", "right"),
                            ("forgotten >= once", "right"), ("never learned", "right"),
                            ("median AoA step", "right"), ("mean final loss", "right")):
        table.add_column(column, justify=justify, overflow="fold")
    for row in rows:
        table.add_row(Text(row.label), f"{row.size:,}", f"{row.mean_forgetting:.3g}",
                      f"{row.forgotten_share:.0%}", f"{row.never_learned_share:.0%}",
                      _fmt(row.median_aoa, ".4g"), _fmt(row.mean_final_loss))
    return table


def render_examples(stats: ExampleStats, describe: Describe, key_label: KeyLabel | None = None,
                    keys: Mapping[str, np.ndarray] | None = None, console: Console | None = None,
                    top: int = 10, *, by: str | None = None, min_group_size: int = MIN_GROUP_SIZE) -> None:
    """Print the summary, the Rho-1 classes, the most forgotten and latest-learned examples and,
    with keys, the groups with most forgetting."""
    console = console or Console()
    for note in stats.warnings:
        console.print(Text(f"warning: {note}", style="yellow"))
    parts = [summary_table(stats), classes_table(stats), most_forgotten_table(stats, describe, top=top),
             latest_learned_table(stats, describe, top=top)]
    groups = groups_table(stats, keys, by, key_label, top=top, min_group_size=min_group_size)
    if groups is not None:
        parts.append(groups)
    console.print(RichGroup(*parts))


def render_examples_to_text(stats: ExampleStats, describe: Describe, key_label: KeyLabel | None = None,
                            keys: Mapping[str, np.ndarray] | None = None, top: int = 10, *,
                            by: str | None = None, width: int = 160) -> str:
    """The rendered tables as plain text (for logs and tests)."""
    buffer = io.StringIO()
    render_examples(stats, describe, key_label, keys,
                    Console(file=buffer, width=width, color_system=None), top, by=by)
    return buffer.getvalue()


def _example_dict(stats: ExampleStats, i: int, describe: Describe | None) -> dict[str, Any]:
    row: dict[str, Any] = {"index": int(i)}
    if describe is not None:
        row["context"], row["target"] = describe(int(i))
    for name, values in stats.columns().items():
        if name in ("example", "finite"):
            continue
        value = values[i].item()
        if name == "rho1_class":
            value = RHO1_CLASSES[value] if value >= 0 else None
        elif isinstance(value, float) and not math.isfinite(value):
            value = None
        row[name] = value
    return row


def examples_to_dict(stats: ExampleStats, describe: Describe | None = None, key_label: KeyLabel | None = None,
                     keys: Mapping[str, np.ndarray] | None = None, top: int = 10, *,
                     by: str | None = None, min_group_size: int = MIN_GROUP_SIZE) -> dict[str, Any]:
    """Parameters, definitions, summary, class shares, the top examples (with texts when
    `describe` is given) and the group summary, as plain JSON-ready values. The full
    per-example columns go to parquet (`lmprobe.dynamics.write_parquet`), not here."""
    from lmprobe.dynamics.stats import DEFINITIONS

    summary = stats.summary()
    for key, value in list(summary.items()):
        if isinstance(value, float) and math.isnan(value):
            summary[key] = None
    name, rows = group_rows(stats, keys, by, key_label, top=top, min_group_size=min_group_size)
    return {
        "parameters": stats.parameters(),
        "definitions": DEFINITIONS,
        "summary": summary,
        "class_counts": stats.class_counts,
        "most_forgotten": [_example_dict(stats, i, describe) for i in most_forgotten(stats, top)],
        "latest_learned": [_example_dict(stats, i, describe) for i in latest_learned(stats, top)],
        "groups": None if name is None else {"by": name, "min_size": min_group_size,
                                             "rows": [r.to_dict() for r in rows]},
        "warnings": list(stats.warnings),
    }


def examples_to_json(stats: ExampleStats, describe: Describe | None = None, key_label: KeyLabel | None = None,
                     keys: Mapping[str, np.ndarray] | None = None, top: int = 10, *,
                     by: str | None = None, min_group_size: int = MIN_GROUP_SIZE,
                     indent: int | None = None) -> str:
    """JSON text of `examples_to_dict(...)`."""
    return json.dumps(examples_to_dict(stats, describe, key_label, keys, top, by=by,
                                       min_group_size=min_group_size), indent=indent, ensure_ascii=False)
