"""Mining results for people and scripts: rich tables in the paper's style, JSON and CSV.

Domain-agnostic: the caller passes `describe(example_index) -> (context_tail, target)` and
optionally `key_label(key_name, value) -> str` (e.g. decoding token ids), both already in the
form people should read: the text domain escapes tokens (`lmprobe.lm.display.visible_token`:
" the" -> "␣the") in its own describe / key_label. An example is shown as `context [target]`,
as in the paper: "Enter your email address: [\\n]", "obvious: [␣the]". The report only keeps
each cell on one line (newline, tab, carriage return as backslash escapes, which leaves
already-escaped text unchanged). Text is rendered as rich `Text`, never markup, so brackets in
contexts print as they are.

Every table says which window was mined and why (`MiningResult.window_choice`), and a table
cut at `max_pairs` says how many rows it left out.
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

from lmprobe.report.escape import visible_text
from lmprobe.mining.clusters import Cluster
from lmprobe.mining.result import MiningResult

Describe = Callable[[int], tuple[str, str]]
KeyLabel = Callable[[str, int], str]


def example_text(describe: Describe, index: int) -> str:
    """`context [target]`, each kept on one line."""
    context, target = describe(int(index))
    return f"{visible_text(context)} [{visible_text(target)}]"


def default_key_label(name: str, value: int) -> str:
    return f"{name}={value}"


def group_label(key_names: tuple[str, ...], key: tuple[int, ...], key_label: KeyLabel | None) -> str:
    label = key_label or default_key_label
    return "  ".join(label(name, int(value)) for name, value in zip(key_names, key))


def rest_label(key_names: tuple[str, ...], pair: Any, key_label: KeyLabel | None, limit: int = 3) -> str:
    """The rest side of a one-vs-rest pair: "feature=sky  [rest: cat, bird, +2]"."""
    label = key_label or default_key_label
    shared = [label(name, int(value)) for name, value in zip(key_names, pair.key_b) if name != "target"]
    names = [visible_text(label("target", int(t))) for t in pair.rest_targets[:limit]]
    more = pair.rest_n_targets - len(names)
    rest = "rest: " + ", ".join(names + ([f"+{more}"] if more > 0 else []))
    return "  ".join(shared + [f"[{rest}]"])


def side_label(result: MiningResult, pair: Any, side: str, key_label: KeyLabel | None) -> str:
    """A pair's group label; the rest of a one-vs-rest pair lists its largest targets."""
    if side == "b" and pair.is_one_vs_rest:
        return rest_label(result.key_names, pair, key_label)
    return group_label(result.key_names, pair.key_a if side == "a" else pair.key_b, key_label)


def side_examples(result: MiningResult, pair: Any, side: str) -> list[int]:
    """Members shown for a side: the group's movers, or the rest's for a one-vs-rest pair."""
    if side == "b" and pair.is_one_vs_rest:
        return list(pair.rest_examples)
    return list(result.groups[pair.group_a if side == "a" else pair.group_b].examples)


def window_text(pair: Any) -> str:
    """Where a pair was found: "all" (the whole window) or "50..150", "+k" more windows."""
    if pair.window is None:
        return "all" + (f" (+{len(pair.windows)} windows)" if pair.windows else "")
    others = len(pair.windows) - 1
    return f"{pair.window[0]}..{pair.window[1]}" + (f" (+{others})" if others > 0 else "")


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


def _window_title(result: MiningResult) -> str:
    choice = result.window_choice
    if choice is not None and choice.how == "after transient":
        return f"steps {result.window[0]}..{result.window[1]}, initial loss collapse left out"
    return f"steps {result.window[0]}..{result.window[1]}"


def _window_note(result: MiningResult) -> str:
    choice = result.window_choice
    return f"window: {choice.reason}" if choice is not None else ""


def more_rows_note(total: int, shown: int, what: str = "pairs") -> str:
    """"... and 2 more pairs; --top 12 shows them" when a table was cut, else ""."""
    left = total - shown
    return f"... and {left} more {what}; --top {total} shows them" if left > 0 else ""


def _caption(*parts: str) -> str | None:
    return "\n".join(p for p in parts if p) or None


def pairs_table(
    result: MiningResult,
    describe: Describe,
    key_label: KeyLabel | None = None,
    *,
    max_pairs: int = 20,
    examples_per_group: int = 3,
) -> Table:
    """The opposing pairs, strongest first: two groups side by side with example contexts."""
    test = result.pair_test
    counts = (f"{test.n_tested - test.n_one_vs_rest} pairs + {test.n_one_vs_rest} one-vs-rest"
              if test.n_one_vs_rest else f"{test.n_tested} pairs")
    n_ovr = sum(p.is_one_vs_rest for p in result.pairs)
    windows = ""
    if test.n_windows > 1 and test.window_z_threshold is not None:
        windows = (f" and on {test.n_windows - 1} sliding windows (z < -{test.window_z_threshold:.2f});"
                   f" half of alpha for the whole window, half split over the windows")
    summary = (
        f"{len(result.pairs)} significant ({n_ovr} one-vs-rest) of {test.n_tested} candidates ({counts})"
        f" over {test.n_intervals} intervals (one-sided Bartlett-Fisher z < -{test.z_threshold:.2f}"
        f"{windows}; family-wise alpha {test.alpha:g}); score = sqrt(-cov) of"
        f" detrended changes, ranked by strength = score x sqrt(smaller group's size); a one-vs-rest"
        f" pair is shown when stronger than every pair it subsumes"
    )
    if test.note:
        summary += f"; {test.note}"
    shown = result.pairs[:max_pairs]
    table = Table(title=f"Opposing signals (by {result.by}, {_window_title(result)})",
                  caption=_caption(summary, _window_note(result)),
                  show_lines=True)
    for name, justify in (("#", "right"), ("Group 1", "left"), ("Group 2", "left"),
                          ("corr", "right"), ("score", "right"), ("strength", "right"),
                          ("steps", "left"), ("swings at steps", "left")):
        table.add_column(name, justify=justify, overflow="fold")
    for rank, pair in enumerate(shown, start=1):
        table.add_row(
            str(rank),
            _group_cell(side_label(result, pair, "a", key_label), pair.size_a,
                        side_examples(result, pair, "a")[:examples_per_group], describe),
            _group_cell(side_label(result, pair, "b", key_label), pair.size_b,
                        side_examples(result, pair, "b")[:examples_per_group], describe),
            f"{pair.corr:+.2f}",
            f"{pair.score:.3g}",
            f"{pair.strength:.3g}",
            window_text(pair),
            _steps_text(pair.swings),
        )
    if len(result.pairs) > len(shown):
        table.add_row("...", Text(more_rows_note(len(result.pairs), len(shown))), "", "", "", "", "", "")
    return table


def complexity_table(result: MiningResult) -> Table:
    """Per window of training: the share of the strongest opposing pairs' strength explained by
    each grouping, the complexity index (strength-weighted mean order), and its trend."""
    c = result.complexity
    table = Table(title="Complexity of the opposing groups over training",
                  caption=_caption(f"complexity {c.trend}" if c.tau is not None else c.note,
                                   "share: of the strength of each window's strongest opposing pairs"
                                   " (nested pairs counted once, for the grouping showing them strongest),"
                                   " per grouping; index = sum of order x share"))
    table.add_column("steps")
    for name, order in zip(c.groupings, c.orders):
        table.add_column(f"{name} ({order})", justify="right")
    table.add_column("index", justify="right")
    for (a, b), shares, counts, index in zip(c.windows, c.shares, c.n_significant, c.index):
        cells = [f"{100 * v:.0f}% ({n})" if n else "-" for v, n in zip(shares, counts)]
        table.add_row(f"{a}..{b}", *cells, "-" if index is None else f"{index:.2f}")
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


def _percent(share: float) -> str:
    return f"{100 * share:.0f}%"


def dominance_text(cluster: Cluster, key_label: KeyLabel | None = None) -> str:
    """"feature ␣# 99%, target Yes 99%" (the keys dominating the cluster), or "mixed"."""
    label = key_label or default_key_label
    return ", ".join(f"{visible_text(label(d.key, d.value))} {_percent(d.share)}"
                     for d in cluster.dominant) or "mixed"


def clusters_table(
    result: MiningResult,
    describe: Describe,
    key_label: KeyLabel | None = None,
    *,
    examples: int = 3,
) -> Table:
    """Clusters of the top movers: which key dominates each, its significantly enriched key
    values (with Bonferroni-adjusted hypergeometric p), example contexts, opposing clusters."""
    clusters = result.clusters
    label = key_label or default_key_label
    notes = [clusters.note, clusters.test.note] if clusters is not None else []
    table = Table(title=f"Clusters of top movers (by detrended loss-change trajectory, {_window_title(result)})",
                  caption=_caption("; ".join(n for n in notes if n),
                                   "enriched: x enrichment, count/total, Bonferroni-adjusted"
                                   " hypergeometric p; dominated by: a key whose top value holds"
                                   " >= 50% of the cluster",
                                   _window_note(result)),
                  show_lines=True)
    for name in ("cluster", "size", "dominated by", "enriched keys", "examples", "opposes"):
        table.add_column(name, overflow="fold")
    if clusters is None:
        return table
    opposes: dict[int, list[str]] = {}
    for pair in clusters.pairs:
        opposes.setdefault(pair.cluster_a, []).append(f"{pair.cluster_b} ({pair.corr:+.2f})")
        opposes.setdefault(pair.cluster_b, []).append(f"{pair.cluster_a} ({pair.corr:+.2f})")
    for cluster in clusters.clusters:
        enriched = Text()
        found = [(e.p_value, name, e) for name, entries in cluster.enriched.items() for e in entries]
        for _, name, e in sorted(found, key=lambda item: (item[0], item[1], item[2].value)):
            if enriched:
                enriched.append("\n")
            enriched.append(f"{visible_text(label(name, e.value))} x{e.enrichment:.1f}"
                            f" ({e.count}/{e.total}, p={e.p_adjusted:.1g})")
        shown = Text("\n".join(example_text(describe, i) for i in cluster.examples[:examples]))
        table.add_row(str(cluster.id), str(cluster.size), Text(dominance_text(cluster, key_label)),
                      enriched or Text("-"), shown, ", ".join(opposes.get(cluster.id, [])) or "-")
    return table


def cluster_pairs_table(
    result: MiningResult,
    describe: Describe,
    key_label: KeyLabel | None = None,
    *,
    max_pairs: int = 20,
    examples: int = 3,
) -> Table:
    """Opposing cluster pairs, strongest first, each cluster with what dominates it and examples."""
    clusters = result.clusters
    pairs = clusters.pairs if clusters is not None else []
    shown = pairs[:max_pairs]
    summary = ""
    if clusters is not None:
        test = clusters.test
        summary = (f"{len(pairs)} significant of {test.n_tested} cluster pairs, tested on"
                   f" {test.n_intervals} intervals held out from the clustering (z <"
                   f" -{test.z_threshold:.2f}, family-wise alpha {test.alpha:g})")
        if test.note:
            summary += f"; {test.note}"
    table = Table(title=f"Opposing clusters ({_window_title(result)})",
                  caption=_caption(summary), show_lines=True)
    for name, justify in (("#", "right"), ("Cluster 1", "left"), ("Cluster 2", "left"),
                          ("corr", "right"), ("score", "right"), ("strength", "right"),
                          ("swings at steps", "left")):
        table.add_column(name, justify=justify, overflow="fold")
    by_id = {c.id: c for c in clusters.clusters} if clusters is not None else {}
    for rank, pair in enumerate(shown, start=1):
        cells = []
        for cid in (pair.cluster_a, pair.cluster_b):
            cluster = by_id[cid]
            cells.append(_group_cell(f"cluster {cid}: {dominance_text(cluster, key_label)}", cluster.size,
                                     list(cluster.examples[:examples]), describe))
        table.add_row(str(rank), *cells, f"{pair.corr:+.2f}", f"{pair.score:.3g}",
                      f"{pair.strength:.3g}", _steps_text(pair.swings))
    if len(pairs) > len(shown):
        table.add_row("...", Text(more_rows_note(len(pairs), len(shown))), "", "", "", "", "")
    return table


def render(
    result: MiningResult,
    describe: Describe,
    key_label: KeyLabel | None = None,
    *,
    console: Console | None = None,
    max_pairs: int = 20,
) -> None:
    """Print the tables of the result's mode (and any warnings) to a console: pairs, movers and
    clusters for keyed groups; clusters, opposing clusters and movers in cluster mode."""
    console = console or Console()
    for note in result.warnings:
        console.print(Text(f"warning: {note}", style="yellow"))
    if result.mode == "cluster":
        parts = [clusters_table(result, describe, key_label),
                 cluster_pairs_table(result, describe, key_label, max_pairs=max_pairs),
                 movers_table(result, describe)]
    else:
        parts = [pairs_table(result, describe, key_label, max_pairs=max_pairs)]
        if result.complexity is not None:
            parts.append(complexity_table(result))
        parts.append(movers_table(result, describe))
        if result.clusters is not None:
            parts += [clusters_table(result, describe, key_label),
                      cluster_pairs_table(result, describe, key_label, max_pairs=max_pairs)]
    console.print(RichGroup(*parts))


def _described(describe: Describe, indices) -> list[dict[str, Any]]:
    out = []
    for index in indices:
        context, target = describe(int(index))
        out.append({"index": int(index), "context": context, "target": target})
    return out


def _labelled(key_names, key: dict[str, int], key_label: KeyLabel | None) -> str:
    return group_label(tuple(key_names), tuple(key[n] for n in key_names), key_label)


def to_dict(result: MiningResult, describe: Describe | None = None,
            key_label: KeyLabel | None = None) -> dict[str, Any]:
    """`result.to_dict()` plus, when `describe` is given, the text of every example shown (and,
    with `key_label`, a label for every group key, enriched value and dominant key).

    "mode" says what the result holds: "groups" (keyed pairs first, then clusters if any) or
    "cluster" (clusters and their opposing pairs only; "groups" and "pairs" are empty).
    """
    data = result.to_dict()
    if describe is None and key_label is None:
        return data
    label = key_label or default_key_label
    names = result.key_names
    for pair, pair_obj in zip(data["pairs"], result.pairs):
        pair["label_a"] = side_label(result, pair_obj, "a", key_label)
        pair["label_b"] = side_label(result, pair_obj, "b", key_label)
        pair["window_label"] = window_text(pair_obj)
        if pair_obj.is_one_vs_rest:
            pair["rest_target_labels"] = [label("target", t) for t in pair_obj.rest_targets]
        if describe is not None:
            for side in ("a", "b"):
                pair[f"examples_{side}"] = _described(describe, side_examples(result, pair_obj, side))
    for group_data, group in zip(data["groups"], result.groups):
        group_data["label"] = _labelled(names, group_data["key"], key_label)
        if describe is not None:
            group_data["described"] = _described(describe, group.examples)
    if result.clusters is not None:
        by_id = {}
        for cluster_data, cluster in zip(data["clusters"]["clusters"], result.clusters.clusters):
            cluster_data["dominance_label"] = dominance_text(cluster, key_label)
            for name, found in cluster_data["enriched"].items():
                for e in found:
                    e["label"] = label(name, e["value"])
            if describe is not None:
                cluster_data["described"] = _described(describe, cluster.examples)
            by_id[cluster.id] = cluster_data
        for pair in data["clusters"]["pairs"]:
            for side in ("a", "b"):
                cluster_data = by_id[pair[f"cluster_{side}"]]
                pair[f"dominance_label_{side}"] = cluster_data["dominance_label"]
                if describe is not None:
                    pair[f"examples_{side}"] = cluster_data["described"]
    if describe is not None:
        movers = data["movers"]
        movers["window_riser_described"] = _described(describe, result.movers.window_riser_index)
        movers["window_faller_described"] = _described(describe, result.movers.window_faller_index)
    return data


def to_json(result: MiningResult, describe: Describe | None = None, *, indent: int | None = None,
            key_label: KeyLabel | None = None) -> str:
    """JSON text of the result (its "mode" says which parts matter) with example texts;
    `MiningResult.from_dict(json.loads(...))` rebuilds the result (the added texts are ignored)."""
    return json.dumps(to_dict(result, describe, key_label), indent=indent, ensure_ascii=False)


CSV_FIELDS_FIXED = ["rank", "group_a", "group_b", "size_a", "size_b", "corr", "z", "score",
                    "strength", "amp_a", "amp_b", "swing_steps", "examples_a", "examples_b",
                    "kind", "window", "windows", "rest_targets"]
CSV_CLUSTER_FIELDS = ["rank", "cluster_a", "cluster_b", "dominated_a", "dominated_b", "size_a", "size_b",
                      "corr", "z", "score", "strength", "swing_steps", "examples_a", "examples_b"]


def to_csv(
    result: MiningResult,
    describe: Describe,
    path_or_file: str | os.PathLike | TextIO,
    key_label: KeyLabel | None = None,
    *,
    examples_per_group: int = 5,
) -> None:
    """One row per opposing pair: labels and raw key values of both groups, sizes, corr, z,
    score, strength, amplitudes, swing steps (';'-joined) and example texts (' | '-joined),
    then kind ("pair" / "one-vs-rest": b's target is -1 and rest_targets lists its targets,
    largest first), window (A:B steps; empty: the whole window) and every window it passed in.
    In cluster mode, one row per opposing cluster pair (CSV_CLUSTER_FIELDS)."""
    own = isinstance(path_or_file, (str, os.PathLike))
    handle = open(path_or_file, "w", newline="", encoding="utf-8") if own else path_or_file
    try:
        if result.mode == "cluster":
            _cluster_rows(result, describe, handle, key_label, examples_per_group)
            return
        key_fields = [f"{side}_{name}" for side in ("a", "b") for name in result.key_names]
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS_FIXED[:3] + key_fields + CSV_FIELDS_FIXED[3:])
        writer.writeheader()
        for rank, pair in enumerate(result.pairs, start=1):
            row = {
                "rank": rank,
                "group_a": side_label(result, pair, "a", key_label),
                "group_b": side_label(result, pair, "b", key_label),
                "kind": pair.kind,
                "window": "" if pair.window is None else f"{pair.window[0]}:{pair.window[1]}",
                "windows": ";".join(f"{a}:{b}" for a, b in pair.windows),
                "rest_targets": ";".join(str(t) for t in pair.rest_targets),
                "size_a": pair.size_a, "size_b": pair.size_b,
                "corr": f"{pair.corr:.6g}", "z": f"{pair.z:.6g}", "score": f"{pair.score:.6g}",
                "strength": f"{pair.strength:.6g}",
                "amp_a": f"{pair.amp_a:.6g}", "amp_b": f"{pair.amp_b:.6g}",
                "swing_steps": ";".join(str(s.step_to) for s in pair.swings),
                "examples_a": " | ".join(example_text(describe, i) for i in
                                         side_examples(result, pair, "a")[:examples_per_group]),
                "examples_b": " | ".join(example_text(describe, i) for i in
                                         side_examples(result, pair, "b")[:examples_per_group]),
            }
            for name, a, b in zip(result.key_names, pair.key_a, pair.key_b):
                row[f"a_{name}"], row[f"b_{name}"] = a, b
            writer.writerow(row)
    finally:
        if own:
            handle.close()


def _cluster_rows(result: MiningResult, describe: Describe, handle: TextIO,
                  key_label: KeyLabel | None, examples: int) -> None:
    writer = csv.DictWriter(handle, fieldnames=CSV_CLUSTER_FIELDS)
    writer.writeheader()
    if result.clusters is None:
        return
    by_id = {c.id: c for c in result.clusters.clusters}
    for rank, pair in enumerate(result.clusters.pairs, start=1):
        a, b = by_id[pair.cluster_a], by_id[pair.cluster_b]
        writer.writerow({
            "rank": rank, "cluster_a": a.id, "cluster_b": b.id,
            "dominated_a": dominance_text(a, key_label), "dominated_b": dominance_text(b, key_label),
            "size_a": pair.size_a, "size_b": pair.size_b,
            "corr": f"{pair.corr:.6g}", "z": f"{pair.z:.6g}", "score": f"{pair.score:.6g}",
            "strength": f"{pair.strength:.6g}",
            "swing_steps": ";".join(str(s.step_to) for s in pair.swings),
            "examples_a": " | ".join(example_text(describe, i) for i in a.examples[:examples]),
            "examples_b": " | ".join(example_text(describe, i) for i in b.examples[:examples]),
        })


def render_to_text(result: MiningResult, describe: Describe, key_label: KeyLabel | None = None,
                   *, width: int = 160, max_pairs: int = 20) -> str:
    """The rendered tables as plain text (for logs and tests)."""
    buffer = io.StringIO()
    render(result, describe, key_label, console=Console(file=buffer, width=width, color_system=None),
           max_pairs=max_pairs)
    return buffer.getvalue()
