"""The claims table (rich, Markdown, JSON) and its figure: one panel per claim, the seeds of each
model as points with the mean and its 95% interval."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from lmprobe.claims.evaluate import ClaimRow
from lmprobe.claims.rules import FAILS, HOLDS, PARTLY

COLOURS = {HOLDS: "green", PARTLY: "orange", FAILS: "red"}
FIGURE = "claims.png"


def render(rows: Sequence[ClaimRow], unmeasured: Sequence[dict[str, str]], console, title: str) -> None:
    from rich.table import Table

    table = Table(title=title, show_lines=True)
    for name, style in (("claim", "bold"), ("model", ""), ("statistic", ""), ("mean [95% CI]", ""),
                        ("seeds", ""), ("rule", "dim"), ("verdict", ""), ("figure", "")):
        table.add_column(name, style=style, overflow="fold", justify="right" if name == "seeds" else "left")
    for row in rows:
        colour = COLOURS.get(row.verdict, "dim")
        table.add_row(row.claim.title, row.model, row.claim.unit, row.interval.text(), seeds_text(row),
                      row.claim.rule, f"[{colour}]{row.verdict}[/]", f"{FIGURE}: {row.claim.name}")
    for item in unmeasured:
        table.add_row(item["title"], "-", "-", "-", "-", item["why"], "[dim]not measured[/]", "-")
    console.print(table)


def seeds_text(row: ClaimRow) -> str:
    return f"{row.interval.n}" + (f" (+{row.interval.missing} without)" if row.interval.missing else "")


def grid(rows: Sequence[ClaimRow]) -> list[str]:
    """The verdicts at a glance: one row per claim, one column per model, "verdict (mean)" in each
    cell; '' where a claim is not measured on a model (e.g. the SGD claim on GD runs)."""
    models = list(dict.fromkeys(r.model for r in rows))
    claims = list(dict.fromkeys(r.claim.name for r in rows))
    cell = {(r.claim.name, r.model): r for r in rows}
    lines = ["| claim | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for name in claims:
        title = next(r.claim.title for r in rows if r.claim.name == name)
        cells = []
        for model in models:
            row = cell.get((name, model))
            cells.append("" if row is None else row.verdict + ("" if not row.interval.n else f" ({row.interval.mean:.2g})"))
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return lines


def markdown(rows: Sequence[ClaimRow], unmeasured: Sequence[dict[str, str]], header: str) -> str:
    lines = [header, "", *grid(rows), "", "| claim | model | statistic | mean [95% CI] | seeds | rule | verdict |",
             "|---|---|---|---|---:|---|---|"]
    for row in rows:
        lines.append(f"| {row.claim.title} | {row.model} | {row.claim.unit} | {row.interval.text()} | "
                     f"{seeds_text(row)} | {row.claim.rule} | **{row.verdict}** |")
    for item in unmeasured:
        lines.append(f"| {item['title']} | - | - | - | - | {item['why']} | not measured |")
    return "\n".join(lines) + "\n"


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=1, default=float))


def figure(rows: Sequence[ClaimRow], path: Path) -> Path:
    """One panel per claim: each model's seeds (points), mean and 95% interval (bar)."""
    from lmprobe.report.figures import _pyplot

    plt = _pyplot()
    claims = list(dict.fromkeys(r.claim.name for r in rows))
    n_cols = min(4, max(1, len(claims)))
    n_rows = -(-max(1, len(claims)) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.6 * n_cols, 3.4 * n_rows), squeeze=False)
    for ax in axes.flat[len(claims):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, claims):
        mine = [r for r in rows if r.claim.name == name]
        for x, row in enumerate(mine):
            seeds = [v for v in row.per_seed if v is not None]
            ax.scatter([x] * len(seeds), seeds, s=14, color="grey", zorder=3, label="a seed" if x == 0 else None)
            if row.interval.n:
                low, high = row.interval.low, row.interval.high
                err = [[row.interval.mean - low], [high - row.interval.mean]] if row.interval.n > 1 else None
                ax.errorbar([x], [row.interval.mean], yerr=err, fmt="o", color=COLOURS.get(row.verdict, "black"),
                            capsize=4, label="mean, 95% CI" if x == 0 else None)
        ax.set_xticks(range(len(mine)), [r.model for r in mine], rotation=30, fontsize=7)
        ax.set_title(f"{mine[0].claim.title}", fontsize=7, wrap=True)
        ax.set_xlabel("model")
        ax.set_ylabel(mine[0].claim.statistic.replace("_", " "), fontsize=7)
        if not any(r.interval.n for r in mine):
            ax.text(0.5, 0.5, "not measured", ha="center", va="center", transform=ax.transAxes, color="grey")
        ax.legend(fontsize=6)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


# ---------------------------------------------------------------- the optimizer study

STUDY_FIGURE = "optimizers.png"
DAMPING_COLOURS = {"yes": "green", "partly": "orange", "no": "red"}


def render_study(rows, console, title: str) -> None:
    from rich.table import Table

    from lmprobe.claims.optimizers import COLUMNS

    table = Table(title=f"{title}\nmean [95% interval] over seeds", show_lines=False)
    table.add_column("model", style="bold", overflow="fold")
    table.add_column("optimizer", overflow="fold")
    for _, header in COLUMNS:
        table.add_column(header, overflow="fold")
    table.add_column("damps the swings?", overflow="fold")
    for row in rows:
        damps = "" if row.damps is None else f"[{DAMPING_COLOURS.get(row.damps, 'dim')}]{row.damps}[/]"
        table.add_row(row.model, row.variant, *(row.intervals[key].text() for key, _ in COLUMNS), damps)
    console.print(table)


def study_markdown(rows, header: str, diverged: Sequence[str] = ()) -> str:
    from lmprobe.claims.optimizers import COLUMNS

    lines = [header, "", "| model | optimizer | " + " | ".join(h for _, h in COLUMNS) + " | damps the swings? |",
             "|---|---|" + "---|" * len(COLUMNS) + "---|"]
    for row in rows:
        cells = " | ".join(row.intervals[key].text() for key, _ in COLUMNS)
        lines.append(f"| {row.model} | {row.variant} | {cells} | {'**' + row.damps + '**' if row.damps else ''} |")
    if diverged:
        lines += ["", f"Diverged (the training loss became non-finite; no numbers): {', '.join(diverged)}."]
    return "\n".join(lines) + "\n"


def study_figure(rows, path: Path) -> Path:
    """One row of panels per model, one panel per column: each optimizer's seeds and mean with its 95% interval."""
    from lmprobe.claims.optimizers import COLUMNS
    from lmprobe.report.figures import _pyplot

    plt = _pyplot()
    models = list(dict.fromkeys(r.model for r in rows))
    fig, axes = plt.subplots(len(models), len(COLUMNS), figsize=(3.3 * len(COLUMNS), 3.0 * len(models)),
                             squeeze=False)
    for i, model in enumerate(models):
        mine = [r for r in rows if r.model == model]
        for j, (key, header) in enumerate(COLUMNS):
            ax = axes[i, j]
            for x, row in enumerate(mine):
                seeds = [v for v in row.per_seed[key] if v is not None]
                ax.scatter([x] * len(seeds), seeds, s=12, color="grey", zorder=3)
                interval = row.intervals[key]
                if interval.n:
                    err = [[interval.mean - interval.low], [interval.high - interval.mean]] if interval.n > 1 else None
                    ax.errorbar([x], [interval.mean], yerr=err, fmt="o", capsize=3,
                                color=DAMPING_COLOURS.get(row.damps, "black") if key == "swing_ratio" else "black")
            if key == "threshold_ratio" or key == "swing_ratio":
                ax.axhline(1.0, color="grey", lw=0.8, ls="--")
            if key in ("final_loss", "swing"):
                ax.set_yscale("log")
            ax.set_xticks(range(len(mine)), [r.variant for r in mine], rotation=40, fontsize=7, ha="right")
            ax.set_title(f"{model}: {header}", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
