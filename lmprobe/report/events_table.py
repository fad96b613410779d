"""Events for people and scripts: rich tables of spikes / probe events and of the coincidence
tests, and plain-dict JSON.

Domain-agnostic like `mining_table`: examples are shown through `describe(i) -> (context,
target)` and key values through `key_label(name, value) -> str` (default "name=value").
"""

from __future__ import annotations

import io
import json
import math
from typing import Any

from rich.console import Console, Group as RichGroup
from rich.table import Table
from rich.text import Text

from lmprobe.errors import LmprobeError
from lmprobe.events.attribution import GroupMove
from lmprobe.events.find import Event, EventsReport
from lmprobe.events.instability import STA_BAND
from lmprobe.train.alignment import ALIGN_KEY, align_label
from lmprobe.report.mining_table import Describe, KeyLabel, example_text, group_label, visible_text


STA_BAND_TEXT = f"{STA_BAND[0]:g}-{STA_BAND[1]:g}%"


def _num(value: float | None, fmt: str = ".3g") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value, fmt)


def _group_cell(names: tuple[str, ...], move: GroupMove | None, describe: Describe | None,
                key_label: KeyLabel | None, examples: int) -> Text:
    if move is None:
        return Text("-")
    cell = Text(visible_text(group_label(names, move.key, key_label)), style="bold")
    cell.append(f"  (n={move.size}, mean {move.mean:+.3g}, sum {move.sum:+.3g}, {100 * move.share:.0f}% of rise)")
    if describe is not None:
        for index in move.examples[:examples]:
            cell.append("\n")
            cell.append(example_text(describe, index))
    return cell


def _top(moves: dict[str, list[GroupMove]], by: str) -> GroupMove | None:
    found = moves.get(by) or []
    return found[0] if found else None


def _first_mover(event: Event) -> str:
    moved = [s for s in event.leads if s.lead is not None]
    if not moved:
        return "-"
    return ", ".join(f"{s.signal} {s.lead:+d}" for s in moved[:3])


def events_table(report: EventsReport, describe: Describe | None = None, key_label: KeyLabel | None = None,
                 *, by: str | None = None, examples: int = 2, max_events: int = 20) -> Table:
    """One row per event: where, how big, who rose and fell most (by `by`, default the last
    grouping), how concentrated the rise was, the opposing pair, sharpness, first movers."""
    by = by or report.by[-1]
    if by not in report.by:
        raise LmprobeError(f"the events were attributed by {', '.join(report.by)}, not {by!r}; pick one of those")
    caption = (f"share = of the probe's loss increase beyond the mean change, carried by the top 1% / 5%"
               f" of examples (median at ordinary intervals: {_num(100 * report.baseline_excess_share_top1, '.0f')}% /"
               f" {_num(100 * report.baseline_excess_share_top5, '.0f')}%); first moved = steps before the event"
               f" at which a logged signal left its baseline")
    table = Table(title=f"Events: {report.series} spikes ({report.detector}) and largest probe events",
                  caption=caption, show_lines=True)
    for name, justify in (("step", "right"), ("kind", "left"), ("size / z", "right"), (f"rose most ({by})", "left"),
                          (f"fell most ({by})", "left"), ("share 1% / 5%", "right"), ("opposing pair", "left"),
                          ("sharpness / thr", "right"), ("first moved", "left")):
        table.add_column(name, justify=justify, overflow="fold")
    for event in report.events[:max_events]:
        att = event.attribution
        if event.spike is not None:
            size = f"{event.spike.size:+.3g}\nz {event.spike.z:.1f}"
        else:
            size = f"{event.probe.movement:.3g}\nz {event.probe.z:.1f}"
        pair = next((p for p in att.pairs if p.by == by), event.pair)
        pair_cell = Text("-")
        if pair is not None:
            names = att.key_names[pair.by]
            pair_cell = Text(visible_text(group_label(names, pair.up.key, key_label)) + " ↑\n"
                             + visible_text(group_label(names, pair.down.key, key_label)) + " ↓")
            pair_cell.append(f"\nscore {pair.score:.3g}, t {pair.t:.1f}")
        table.add_row(
            f"{att.step_from}→{att.step_to}" + (f"\n(spike {event.spike.step})" if event.spike is not None else ""),
            "+".join(event.kinds), size,
            _group_cell(att.key_names[by], _top(att.up, by), describe, key_label, examples),
            _group_cell(att.key_names[by], _top(att.down, by), describe, key_label, examples),
            f"{_num(100 * att.excess_share_top1, '.0f')}% / {_num(100 * att.excess_share_top5, '.0f')}%",
            pair_cell,
            f"{_num(event.sharpness)} / {_num(event.threshold)}" if event.sharpness is not None else "-",
            _first_mover(event),
        )
    return table


def coincidence_name(c, key_label: KeyLabel | None) -> str:
    """A pair test named by its groups' labels ("pair top=grey automobile / top=grey bird ...")."""
    if c.pair is None or key_label is None:
        return c.name
    names = c.pair["by"].split("-") if isinstance(c.pair["by"], str) else list(c.pair["by"])

    def label(key) -> str:
        return " ".join(key_label(n, int(v)) for n, v in zip(names, key))

    what = "group-loss spikes follow instabilities" if c.pair.get("kind") == "instability" else "swings at spikes"
    return f"pair {label(c.pair['up'])} / {label(c.pair['down'])} {what}"


def coincidence_table(report: EventsReport, key_label: KeyLabel | None = None) -> Table:
    """The coincidence tests: counts, effect sizes, circular-shift p-values."""
    table = Table(title="Coincidences (circular-shift permutation test, one-sided mid-p)")
    for name, justify in (("test", "left"), ("events", "right"), ("in state", "right"), ("time in state", "right"),
                          ("rate in / out", "right"), ("ratio", "right"), ("p", "right")):
        table.add_column(name, justify=justify, overflow="fold")
    for c in report.coincidences:
        table.add_row(
            coincidence_name(c, key_label), str(c.n_events), f"{c.hits} ({_num(100 * c.events_in_state, '.0f')}%)",
            f"{_num(100 * c.time_in_state, '.0f')}%", f"{_num(c.rate_in)} / {_num(c.rate_out)}",
            "inf" if math.isinf(c.ratio) else _num(c.ratio), _num(c.p, ".2g"),
        )
    return table


def render_events(report: EventsReport, describe: Describe | None = None, key_label: KeyLabel | None = None,
                  *, console: Console | None = None, by: str | None = None) -> None:
    """Print notes, the spike scores, the events table and the coincidence table."""
    console = console or Console()
    for note in report.notes:
        console.print(Text(f"note: {note}", style="yellow"))
    if report.spike_scores:
        console.print(Text("OLMo 2 spike score (% of values >= 7 sd from the rolling mean of 1,000): "
                           + ", ".join(f"{k} {v:.3g}%" for k, v in report.spike_scores.items())))
    parts: list[Any] = [events_table(report, describe, key_label, by=by)]
    if ALIGN_KEY in report.by:
        parts.append(alignment_table(report))
    if report.coincidences:
        parts.append(coincidence_table(report, key_label))
    console.print(RichGroup(*parts))
    if report.instability is not None:
        render_instability(report.instability, console=console, key_label=key_label,
                           group_reports=report.group_instability)


def _pair_label(pair, key_label: KeyLabel | None) -> str:
    if pair is None:
        return "up / down group"
    names = pair["by"].split("-")

    def label(key) -> str:
        return " ".join((key_label(n, int(v)) if key_label else f"{n}={int(v)}") for n, v in zip(names, key))

    return f"{label(pair['up'])} / {label(pair['down'])}"


def _side_cell(side) -> Text:
    if side is None:
        return Text("-")
    cell = Text(f"{side.mean_a:+.3g} / {side.mean_b:+.3g}\n{side.difference:+.3g} [{side.low:+.3g}, {side.high:+.3g}]\n")
    cell.append("opposite" if side.opposite else "same way", style="bold" if side.opposite else "")
    if side.opposite and side.significant:
        cell.append(", interval excludes 0")
    return cell


def lag_profile_text(found) -> str:
    """'lag profile (spike - crest, steps): +0 x2, +3 x1; 3 of 4 spikes aligned; 3 of 5 instabilities followed'."""
    profile = sorted(found.lag_profile.items())
    lags = ", ".join(f"{lag:+d} x{count}" for lag, count in profile) or "none"
    if len(profile) > 12:  # e.g. a group loss that oscillates every step: --json has every lag
        lags = f"{len(profile)} lags from {profile[0][0]:+d} to {profile[-1][0]:+d}"
    return (f"lag profile (spike - crest sample, steps): {lags}; {found.aligned} of {found.n_spikes} spikes within"
            f" [-{found.window.before}, +{found.window.after}] steps of a crest; {found.followed} of"
            f" {len(found.instabilities)} instabilities followed by a spike")


def instability_table(found, key_label: KeyLabel | None = None) -> Table:
    """One row per instability: crest, fall, aligned spikes (lags) and, over its trace interval,
    the two sides of the sharp direction and the top pair's two groups (mean changes a / b,
    difference with its Welch 95% interval, opposite directions or not)."""
    table = Table(title="Instabilities of the sharpness (crest, then fall) and what moved at each",
                  caption=found.rule, show_lines=True)
    for name, justify in (("crest step", "right"), ("crest / thr", "right"), ("fall seen", "right"),
                          ("spike lags", "left"), ("interval", "right"),
                          ("sharp direction: +v / -v\ndiff [95% CI]", "right"),
                          (f"top pair: {_pair_label(found.pair, key_label)}\ndiff [95% CI]", "right")):
        table.add_column(name, justify=justify, overflow="fold")
    for row in found.instabilities:
        inst = row.instability
        sides = {s.what == "sharp direction": s for s in row.sides}
        span = row.sides[0] if row.sides else None
        table.add_row(str(inst.crest_step), f"{inst.crest_ratio:.3g}", f"{inst.fall_ratio:.3g} at {inst.fall_step}",
                      ", ".join(f"{lag:+d}" for lag in row.spike_lags) or "-",
                      f"{span.step_from}→{span.step_to}" if span is not None else "-",
                      _side_cell(sides.get(True)), _side_cell(sides.get(False)))
    return table


def sta_table(found) -> Table:
    """The spike-triggered average of sharpness / threshold at lags that are multiples of the
    sampling interval, against the pointwise null band of the circular shifts."""
    sta = found.sta
    table = Table(title=f"Spike-triggered average of sharpness / threshold ({sta.n_spikes} spikes; null band"
                        f" {STA_BAND_TEXT} over circular shifts)")
    for name in ("lag (steps)", "mean", "null band", ""):
        table.add_column(name, justify="right")
    step = max(1, found.window.interval)
    for lag, mean, low, high in zip(sta.lags, sta.mean, sta.low, sta.high):
        if lag % step:
            continue
        flag = "above" if mean > high else ("below" if mean < low else "")
        table.add_row(f"{int(lag):+d}", _num(mean), f"{_num(low)} - {_num(high)}", flag)
    return table


def render_instability(found, *, console: Console, key_label: KeyLabel | None = None,
                       group_reports=()) -> None:
    """The instability rows, the lag profile and the spike-triggered average."""
    parts: list[Any] = []
    if found.instabilities:
        parts.append(instability_table(found, key_label))
    if found.sta is not None and found.sta.n_spikes:
        parts.append(sta_table(found))
    if parts:
        console.print(RichGroup(*parts))
    console.print(Text(lag_profile_text(found)), soft_wrap=True)
    for group in group_reports:
        if group.test is not None:
            console.print(Text(f"{coincidence_name(group.test, key_label)}: " + lag_profile_text(group)),
                          soft_wrap=True)
    for note in found.notes:
        console.print(Text(f"note: {note}", style="yellow"))


def alignment_table(report: EventsReport) -> Table:
    """Per event: how the examples pulling each way along the top eigenvector (at the last
    measurement) moved. Opposing signals at a spike: one side rises while the other falls."""
    table = Table(title="Along the sharp direction: mean loss change of each side at each event")
    table.add_column("step", justify="right")
    values = (1, 0, -1)
    for value in values:
        table.add_column(align_label(value), justify="right")
    for event in report.events:
        att = event.attribution
        moves = {m.key[0]: m for m in att.up.get(ALIGN_KEY, []) + att.down.get(ALIGN_KEY, [])}
        cells = [f"{moves[v].mean:+.3g} (n={moves[v].size})" if v in moves else "-" for v in values]
        table.add_row(f"{att.step_from}→{att.step_to}", *cells)
    return table


def render_replay(result, *, console: Console | None = None) -> None:
    """A spike replay (lmprobe.events.replay.ReplayResult): both runs' losses and the verdict."""
    console = console or Console()
    table = Table(title=f"Replay of the spike at step {result.spike_step} from checkpoint {result.checkpoint_step}"
                        f" (left out: batches of steps {result.replaced_steps[0]}..{result.replaced_steps[-1]})",
                  caption=f"baseline {result.baseline:.4g} (median of the logged losses before), robust sd "
                          f"{result.scale:.3g}; reproduction error {_num(result.max_reproduction_error, '.2g')}")
    for name in ("step", "logged", "same batches", "other batches"):
        table.add_column(name, justify="right")
    for step, logged, same, other in zip(result.steps, result.logged, result.same, result.other):
        table.add_row(str(step), _num(logged, ".5g"), format(same, ".5g"), format(other, ".5g"))
    console.print(table)
    console.print(f"spike's batch at the state the other batches reached: {result.spike_batch_at_other_state:.5g}; "
                  f"the other batch at the spike's state: {result.other_batch_at_spike_state:.5g}",
                  highlight=False, soft_wrap=True)
    console.print(Text(f"verdict: {result.verdict}", style="bold"), Text(f" — {result.explanation}"), sep="")
    for note in result.notes:
        console.print(Text(f"note: {note}", style="yellow"))


def render_events_to_text(report: EventsReport, describe: Describe | None = None,
                          key_label: KeyLabel | None = None, *, width: int = 200) -> str:
    buffer = io.StringIO()
    render_events(report, describe, key_label, console=Console(file=buffer, width=width, color_system=None))
    return buffer.getvalue()


def _clean(value: Any) -> Any:
    """JSON-safe: non-finite floats become None (or "inf"), numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def events_to_json(report: EventsReport, describe: Describe | None = None) -> dict[str, Any]:
    """The report as plain, JSON-serialisable dicts (`json.dumps` takes it as is; non-finite
    numbers become None); with `describe`, each shown example gets its context and target."""
    data = {
        "series": report.series, "detector": report.detector, "by": list(report.by),
        "spikes": [s.to_dict() for s in report.spikes], "spike_scores": dict(report.spike_scores),
        "probe_events": [p.to_dict() for p in report.probe_events],
        "events": [e.to_dict() for e in report.events],
        "baseline_share_top1": report.baseline_share_top1, "baseline_share_top5": report.baseline_share_top5,
        "baseline_excess_share_top1": report.baseline_excess_share_top1,
        "baseline_excess_share_top5": report.baseline_excess_share_top5,
        "stability": None if report.stability is None else list(report.stability),
        "coincidences": [c.to_dict() for c in report.coincidences],
        "notes": list(report.notes),
        "instability": None if report.instability is None else report.instability.to_dict(),
        "group_instability": [g.to_dict() for g in report.group_instability],
    }
    if describe is not None:
        for event in data["events"]:
            att = event["attribution"]
            for moves in (*att["up"].values(), *att["down"].values(),
                          *([p["up"], p["down"]] for p in att["pairs"])):
                for move in moves:
                    move["described"] = [dict(zip(("index", "context", "target"), (i, *describe(i))))
                                         for i in move["examples"]]
    return _clean(data)


def events_json_text(report: EventsReport, describe: Describe | None = None, *, indent: int | None = None) -> str:
    """`events_to_json` as JSON text."""
    return json.dumps(events_to_json(report, describe), indent=indent, ensure_ascii=False)
