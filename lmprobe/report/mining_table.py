"""Mining results for people and scripts: rich tables in the paper's style, JSON and CSV.

Domain-agnostic: the caller passes `describe(example_index) -> (context_tail, target)` and
optionally `key_label(key_name, value) -> str` (e.g. decoding token ids). An example is shown
as `context [target]`, as in the paper: "Enter your email address: [\\n]", "obvious: [␣the]".

Invisible characters are made visible: a newline is printed as the two characters "\\n", a
tab as "\\t", a carriage return as "\\r", and each leading space of a token as "␣" (U+2423,
OPEN BOX) — GPT-2 tokens carry their leading space, and " the" vs "the" matters. Text is
rendered as rich `Text`, never markup, so brackets in contexts print as they are.
"""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any, Callable, TextIO

from rich.console import Console, Group as RichGroup
from rich.table import Table
from rich.text import Text

from lmprobe.mining.result import MiningResult

Describe = Callable[[int], tuple[str, str]]
KeyLabel = Callable[[str, int], str]

LEADING_SPACE = "\u2423"  # ␣
_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def visible_text(text: str) -> str:
    """Newlines, tabs and carriage returns as backslash escapes; everything else unchanged."""
    return "".join(_ESCAPES.get(ch, ch) for ch in text)


def visible_token(token: str) -> str:
    """A token with its invisible parts shown: " the" -> "␣the", "\\n" -> "\\\\n" (backslash-n)."""
    stripped = token.lstrip(" ")
    return LEADING_SPACE * (len(token) - len(stripped)) + visible_text(stripped)


def example_text(describe: Describe, index: int) -> str:
    """`context [target]`, both made visible."""
    context, target = describe(int(index))
    return f"{visible_text(context)} [{visible_token(target)}]"


def default_key_label(name: str, value: int) -> str:
    return f"{name}={value}"


def group_label(key_names: tuple[str, ...], key: tuple[int, ...], key_label: KeyLabel | None) -> str:
    label = key_label or default_key_label
    return "  ".join(label(name, int(value)) for name, value in zip(key_names, key))


def _group_cell(title: str, size: int, examples: list[int], describe: Describe) -> Text:
    cell = Text(f"{title}  (n={size})", style="bold")
    for index in examples:
        cell.append("\n")
        cell.append(example_text(describe, index))
    return cell


def _steps_text(swings: list[Any], limit: int = 6) -> str:
    shown = ", ".join(str(s.step_to) for s in swings[:limit])
    more = f" (+{len(swings) - limit})" if len(swings) > limit else ""
    return (shown + more) or "-"


def pairs_table(
    result: MiningResult,
    describe: Describe,
    key_label: KeyLabel | None = None,
    *,
    max_pairs: int = 20,
    examples_per_group: int = 3,
) -> Table:
    """The opposing pairs, best first: two groups side by side with example contexts."""
    test = result.pair_test
    caption = (
        f"{len(result.pairs)} significant of {test.n_tested} candidate pairs over"
        f" {test.n_intervals} intervals (one-sided Bartlett-Fisher z < -{test.z_threshold:.2f},"
        f" family-wise alpha {test.alpha:g}); score = sqrt(-cov) of detrended changes"
    )
    if test.note:
        caption += f"; {test.note}"
    table = Table(title=f"Opposing signals (by {result.by}, steps {result.window[0]}..{result.window[1]})",
                  caption=caption, show_lines=True)
    for name, justify in (("#", "right"), ("Group 1", "left"), ("Group 2", "left"),
                          ("corr", "right"), ("score", "right"), ("swings at steps", "left")):
        table.add_column(name, justify=justify, overflow="fold")
    for rank, pair in enumerate(result.pairs[:max_pairs], start=1):
        group_a, group_b = result.groups[pair.group_a], result.groups[pair.group_b]
        table.add_row(
            str(rank),
            _group_cell(group_label(result.key_names, pair.key_a, key_label), pair.size_a,
                        list(group_a.examples[:examples_per_group]), describe),
            _group_cell(group_label(result.key_names, pair.key_b, key_label), pair.size_b,
                        list(group_b.examples[:examples_per_group]), describe),
            f"{pair.corr:+.2f}",
            f"{pair.score:.3g}",
            _steps_text(pair.swings),
        )
    return table


def movers_table(
    result: MiningResult, describe: Describe, *, interval: int | None = None, top: int = 10
) -> Table:
    """Examples whose loss rose / fell most: over the window, or in one interval (by index)."""
    movers = result.movers
    if interval is None:
        title = f"Largest one-interval loss changes, steps {result.window[0]}..{result.window[1]}"
        rise = zip(movers.window_riser_index, movers.window_riser_change, movers.window_riser_step_to)
        fall = zip(movers.window_faller_index, movers.window_faller_change, movers.window_faller_step_to)
    else:
        step_from, step_to = int(movers.step_from[interval]), int(movers.step_to[interval])
        title = f"Loss changes from step {step_from} to {step_to}"
        rise = ((i, c, step_to) for i, c in zip(movers.riser_index[interval], movers.riser_change[interval]))
        fall = ((i, c, step_to) for i, c in zip(movers.faller_index[interval], movers.faller_change[interval]))
    table = Table(title=title)
    table.add_column("#", justify="right")
    for side in ("rose most", "fell most"):
        table.add_column(side, overflow="fold")
        table.add_column("change", justify="right")
        table.add_column("at step", justify="right")
    for rank, (up, down) in enumerate(zip(list(rise)[:top], list(fall)[:top]), start=1):
        table.add_row(
            str(rank),
            Text(example_text(describe, up[0])), f"{float(up[1]):+.3g}", str(int(up[2])),
            Text(example_text(describe, down[0])), f"{float(down[1]):+.3g}", str(int(down[2])),
        )
    return table


def histogram_table(result: MiningResult, *, width: int = 40) -> Table:
    """The distribution of per-example loss changes as a text bar chart."""
    hist = result.histogram
    table = Table(title=f"Loss changes ({hist.n_changes} example-intervals)")
    table.add_column("change from", justify="right")
    table.add_column("to", justify="right")
    table.add_column("count", justify="right")
    table.add_column("", no_wrap=True)
    peak = max(1, int(hist.counts.max())) if hist.counts.size else 1
    for lo, hi, count in zip(hist.edges[:-1], hist.edges[1:], hist.counts):
        table.add_row(f"{lo:+.3g}", f"{hi:+.3g}", str(int(count)), "█" * round(width * int(count) / peak))
    return table


def clusters_table(
    result: MiningResult,
    describe: Describe,
    key_label: KeyLabel | None = None,
    *,
    examples: int = 3,
) -> Table:
    """Clusters of the top movers: enriched key values, example contexts, opposing clusters."""
    clusters = result.clusters
    label = key_label or default_key_label
    notes = [clusters.note, clusters.test.note] if clusters is not None else []
    table = Table(title="Clusters of top movers (by detrended loss-change trajectory)",
                  caption="; ".join(n for n in notes if n) or None, show_lines=True)
    for name in ("cluster", "size", "enriched keys (x enrichment, count/total)", "examples", "opposes"):
        table.add_column(name, overflow="fold")
    if clusters is None:
        return table
    opposes: dict[int, list[str]] = {}
    for pair in clusters.pairs:
        opposes.setdefault(pair.cluster_a, []).append(f"{pair.cluster_b} ({pair.corr:+.2f})")
        opposes.setdefault(pair.cluster_b, []).append(f"{pair.cluster_a} ({pair.corr:+.2f})")
    for cluster in clusters.clusters:
        enriched = Text()
        for name, found in cluster.enriched.items():
            for e in found:
                if enriched:
                    enriched.append("\n")
                enriched.append(f"{visible_text(label(name, e.value))} x{e.enrichment:.1f} ({e.count}/{e.total})")
        shown = Text("\n".join(example_text(describe, i) for i in cluster.examples[:examples]))
        table.add_row(str(cluster.id), str(cluster.size), enriched, shown,
                      ", ".join(opposes.get(cluster.id, [])) or "-")
    return table


def render(
    result: MiningResult,
    describe: Describe,
    key_label: KeyLabel | None = None,
    *,
    console: Console | None = None,
    max_pairs: int = 20,
) -> None:
    """Print the pairs, movers and clusters tables (and any warnings) to a console."""
    console = console or Console()
    for note in result.warnings:
        console.print(Text(f"warning: {note}", style="yellow"))
    parts = [pairs_table(result, describe, key_label, max_pairs=max_pairs), movers_table(result, describe)]
    if result.clusters is not None:
        parts.append(clusters_table(result, describe, key_label))
    console.print(RichGroup(*parts))


def _described(describe: Describe, indices) -> list[dict[str, Any]]:
    out = []
    for index in indices:
        context, target = describe(int(index))
        out.append({"index": int(index), "context": context, "target": target})
    return out


def to_dict(result: MiningResult, describe: Describe | None = None) -> dict[str, Any]:
    """`result.to_dict()` plus, when `describe` is given, the text of every example shown."""
    data = result.to_dict()
    if describe is None:
        return data
    for pair in data["pairs"]:
        for side in ("a", "b"):
            group = result.groups[pair[f"group_{side}"]]
            pair[f"examples_{side}"] = _described(describe, group.examples)
    for group_data, group in zip(data["groups"], result.groups):
        group_data["described"] = _described(describe, group.examples)
    if result.clusters is not None:
        for cluster_data, cluster in zip(data["clusters"]["clusters"], result.clusters.clusters):
            cluster_data["described"] = _described(describe, cluster.examples)
    movers = data["movers"]
    movers["window_riser_described"] = _described(describe, result.movers.window_riser_index)
    movers["window_faller_described"] = _described(describe, result.movers.window_faller_index)
    return data


def to_json(result: MiningResult, describe: Describe | None = None, *, indent: int | None = None) -> str:
    """JSON text of the result with example texts; `MiningResult.from_dict(json.loads(...))`
    rebuilds the result (the added texts are ignored)."""
    return json.dumps(to_dict(result, describe), indent=indent, ensure_ascii=False)


CSV_FIELDS_FIXED = ["rank", "group_a", "group_b", "size_a", "size_b", "corr", "z", "score",
                    "amp_a", "amp_b", "swing_steps", "examples_a", "examples_b"]


def to_csv(
    result: MiningResult,
    describe: Describe,
    path_or_file: str | os.PathLike | TextIO,
    key_label: KeyLabel | None = None,
    *,
    examples_per_group: int = 5,
) -> None:
    """One row per opposing pair: labels and raw key values of both groups, sizes, corr, z,
    score, amplitudes, swing steps (';'-joined) and example texts (' | '-joined)."""
    key_fields = [f"{side}_{name}" for side in ("a", "b") for name in result.key_names]
    fields = CSV_FIELDS_FIXED[:3] + key_fields + CSV_FIELDS_FIXED[3:]
    own = isinstance(path_or_file, (str, os.PathLike))
    handle = open(path_or_file, "w", newline="", encoding="utf-8") if own else path_or_file
    try:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for rank, pair in enumerate(result.pairs, start=1):
            row = {
                "rank": rank,
                "group_a": group_label(result.key_names, pair.key_a, key_label),
                "group_b": group_label(result.key_names, pair.key_b, key_label),
                "size_a": pair.size_a, "size_b": pair.size_b,
                "corr": f"{pair.corr:.6g}", "z": f"{pair.z:.6g}", "score": f"{pair.score:.6g}",
                "amp_a": f"{pair.amp_a:.6g}", "amp_b": f"{pair.amp_b:.6g}",
                "swing_steps": ";".join(str(s.step_to) for s in pair.swings),
                "examples_a": " | ".join(example_text(describe, i) for i in
                                         result.groups[pair.group_a].examples[:examples_per_group]),
                "examples_b": " | ".join(example_text(describe, i) for i in
                                         result.groups[pair.group_b].examples[:examples_per_group]),
            }
            for name, a, b in zip(result.key_names, pair.key_a, pair.key_b):
                row[f"a_{name}"], row[f"b_{name}"] = a, b
            writer.writerow(row)
    finally:
        if own:
            handle.close()


def render_to_text(result: MiningResult, describe: Describe, key_label: KeyLabel | None = None,
                   *, width: int = 160) -> str:
    """The rendered tables as plain text (for logs and tests)."""
    buffer = io.StringIO()
    render(result, describe, key_label, console=Console(file=buffer, width=width, color_system=None))
    return buffer.getvalue()
