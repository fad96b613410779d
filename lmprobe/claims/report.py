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


def markdown(rows: Sequence[ClaimRow], unmeasured: Sequence[dict[str, str]], header: str) -> str:
    lines = [header, "", "| claim | model | statistic | mean [95% CI] | seeds | rule | verdict |",
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
