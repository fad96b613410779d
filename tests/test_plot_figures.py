"""`lmprobe plot` on a text, a vision and a toy run: every figure in PNG and SVG, each with a
title, labelled axes and a legend, and the data beside it equal to the run's own."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lmprobe.cli import main as cli_main
from lmprobe.report import paper_figures
from lmprobe.trace import read_trace
from lmprobe.train.metrics_log import read_metrics

ALWAYS = ("paper", "sharpness", "loss_changes", "around_spikes")


def run_cli(argv, capsys):
    code = cli_main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    from lmprobe.train.launch import main

    out = tmp_path_factory.mktemp("toyplot")
    config = Path(__file__).resolve().parents[1] / "configs" / "toy" / "linear-opposing.yaml"
    assert main(["--config", str(config), "--name", "toy", "--no-progress", f"out_dir={out}", "train.steps=300"],
                domain="toy") == 0
    return out / "toy"


@pytest.fixture
def drawn_figures(monkeypatch):
    """What each saved figure showed: title, axis labels and legend entries of every axes."""
    seen = {}
    save = paper_figures.save

    def recording(fig, out_dir, name, formats, data, summary):
        seen[name] = [{"title": ax.get_title(), "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
                       "legend": [t.get_text() for t in ax.get_legend().get_texts()] if ax.get_legend() else []}
                      for ax in fig.axes]
        return save(fig, out_dir, name, formats, data, summary)

    monkeypatch.setattr(paper_figures, "save", recording)
    return seen


@pytest.mark.parametrize("fixture", ["tiny_run", "tiny_vision_run", "toy_run"])
def test_plot_writes_every_figure_in_png_and_svg_with_its_data(fixture, request, tmp_path, capsys, drawn_figures):
    run = request.getfixturevalue(fixture)
    out = tmp_path / "fig"
    code, stdout, err = run_cli(["plot", str(run), "--out", str(out), "--format", "png,svg"], capsys)
    assert code == 0, err
    names = set(ALWAYS) | {"training", "opposing_pairs"}
    for name in names:
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert b"<svg" in (out / f"{name}.svg").read_bytes()[:2000], name
    for name in ALWAYS:
        assert f"{name}:" in stdout  # the one-line summary
        panels = drawn_figures[name]
        main = panels[0]
        assert main["title"] and main["xlabel"], (name, main)
        data = json.loads((out / f"{name}.json").read_text())
        if data.get("panels", True) and data.get("curves", True):  # an empty figure says why instead
            assert main["ylabel"] and any(p["legend"] for p in panels), (name, panels)

    metrics = read_metrics(run / "metrics.jsonl")
    paper = json.loads((out / "paper.json").read_text())
    logged = [(m["step"], m["loss"]) for m in metrics if m.get("loss") is not None]
    assert paper["loss"]["steps"] == [s for s, _ in logged]
    assert paper["loss"]["values"] == pytest.approx([v for _, v in logged])
    sharp = [(m["step"], m["sharpness"] / m["sharpness_threshold"]) for m in metrics
             if m.get("sharpness") is not None and m.get("sharpness_threshold") is not None]
    if sharp:
        assert paper["sharpness_ratio"]["values"] == pytest.approx([r for _, r in sharp])

    # the histogram counts are the trace's own per-example changes over the named interval
    changes = json.loads((out / "loss_changes.json").read_text())
    trace = read_trace(run)
    for (step_from, step_to), shown in zip(changes["intervals"], changes["sets"]):
        a, b = np.searchsorted(trace.steps, [step_from, step_to])
        delta = np.asarray(trace.losses[b], float) - np.asarray(trace.losses[a], float)
        counts, _ = np.histogram(delta[np.isfinite(delta)], bins=np.asarray(changes["edges"]))
        assert shown["counts"] == counts.tolist()
        assert shown["top1_cut"] == pytest.approx(np.quantile(delta[np.isfinite(delta)], 0.99))


def test_text_pairs_become_context_tables_with_the_miners_examples(tmp_path):
    """A planted trace's pairs, drawn as text tables: one per pair, each side's contexts those
    the miner shows for it (the same members `lmprobe mine` prints)."""
    from lmprobe.commands.plot import context_tables
    from lmprobe.mining import mine
    from lmprobe.mining.synthetic import planted_trace
    from lmprobe.report.mining_table import side_examples

    trace = planted_trace(60, 3000, n_pairs=3, seed=0)
    result = mine(trace.losses, trace.steps, trace.keys, by="feature-target", n_clusters=0)
    assert len(result.pairs) >= 2

    class TextView:
        def describe(self, i):
            return f"context of example {i}\n", f"t{int(trace.keys['target'][i])}"

        def key_label(self, name, value):
            return f"{name}{value}"

    drawn = context_tables(TextView(), result, 2, tmp_path, ["svg"])
    assert [d.name for d in drawn] == ["pair-01-contexts", "pair-02-contexts"]
    for rank, pair in enumerate(result.pairs[:2], start=1):
        data = json.loads((tmp_path / f"pair-{rank:02d}-contexts.json").read_text())
        shown = [side["contexts"] for side in data["sides"]]
        for side, contexts in zip("ab", shown):
            members = side_examples(result, pair, side)[:5]
            assert contexts == [f"context of example {i}\\n [t{int(trace.keys['target'][i])}]" for i in members]
        assert (tmp_path / f"pair-{rank:02d}-contexts.svg").is_file()


def test_sharpness_figure_draws_the_error_bound_as_a_band(tmp_path):
    value = paper_figures.Series("sharpness", [10, 20, 30], [5.0, 9.0, 12.0])
    threshold = paper_figures.Series("threshold", [10, 20, 30], [10.0, 10.0, 10.0])
    bound = paper_figures.Series("error bound", [10, 20, 30], [0.5, 0.1, 0.2])
    drawn = paper_figures.sharpness_figure([(value, threshold, bound)], tmp_path, ["png"])
    data = json.loads((tmp_path / "sharpness.json").read_text())
    assert data["curves"][0]["error_bound"]["values"] == [0.5, 0.1, 0.2]
    assert "max 1.20x, last 1.20x" in drawn.summary


def test_a_bad_format_is_one_line(tiny_run, tmp_path, capsys):
    code, _, err = run_cli(["plot", str(tiny_run), "--out", str(tmp_path), "--format", "png,gif"], capsys)
    assert code == 2 and "--format" in err and "\n" not in err.strip()


def test_only_the_formats_asked_are_written_and_named(tiny_vision_run, tmp_path, capsys):
    code, out, err = run_cli(["plot", str(tiny_vision_run), "--out", str(tmp_path), "--format", "svg"], capsys)
    assert code == 0, err
    written = {line.split("wrote ", 1)[1].strip() for line in out.splitlines() if line.startswith("wrote ")}
    on_disk = {str(p) for p in tmp_path.iterdir() if p.suffix != ".json"}
    assert written == on_disk and all(p.endswith(".svg") for p in on_disk)
    assert {"training", "opposing_pairs", *ALWAYS} <= {Path(p).stem for p in on_disk}
