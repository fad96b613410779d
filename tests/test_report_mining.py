"""Rendering mining results: rich tables, JSON round trip, CSV."""

import csv
import io
import json

import numpy as np
import pytest
from rich.console import Console

from lmprobe.lm.display import visible_token
from lmprobe.mining import MiningResult, mine
from lmprobe.mining.synthetic import planted_trace
from lmprobe.report.mining_table import (
    cluster_pairs_table,
    clusters_table,
    histogram_table,
    movers_table,
    pairs_table,
    render,
    render_to_text,
    to_csv,
    to_json,
)

TOKENS = {0: ":", 1: "\n", 2: " the", 3: "\t", 4: "[x]"}


@pytest.fixture(scope="module")
def mined():
    trace = planted_trace(40, 3000, n_pairs=4, n_cluster_features=2, seed=8)
    result = mine(trace.losses, trace.steps, trace.keys, n_clusters=4, cluster_top=500)
    # A toy vocabulary: every feature and target id maps onto one of five tokens.
    feature, target = trace.keys["feature"], trace.keys["target"]

    def describe(i):  # the text domain escapes its tokens itself; the report shows them as given
        return f"line {i} ends with{TOKENS[int(feature[i]) % 5]}", visible_token(TOKENS[int(target[i]) % 5])

    def key_label(name, value):
        return f"{name} {visible_token(TOKENS[value % 5])!r}"

    return result, describe, key_label


def record(renderable, width=220):
    console = Console(record=True, width=width, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


def test_visible_token():
    assert visible_token(" the") == "␣the"
    assert visible_token("\n") == "\\n"
    assert visible_token("\n\n") == "\\n\\n"
    assert visible_token("\t") == "\\t"
    assert visible_token("  x") == "␣␣x"
    assert visible_token("word") == "word"
    assert visible_token("a b") == "a b"


def test_pairs_table_shows_groups_in_the_paper_style(mined):
    result, describe, key_label = mined
    assert result.pairs
    text = record(pairs_table(result, describe, key_label))
    assert "Group 1" in text and "Group 2" in text
    assert "[\\n]" in text  # a newline target, bracketed and visible
    assert "[␣the]" in text
    assert "[[x]]" in text  # brackets in text are printed, not parsed as markup
    assert f"n={result.pairs[0].size_a}" in text
    assert f"{result.pairs[0].corr:+.2f}" in text
    first_example = result.groups[result.pairs[0].group_a].examples[0]
    assert f"line {first_example} ends with" in text


def test_movers_clusters_and_histogram_tables(mined):
    result, describe, key_label = mined
    text = record(movers_table(result, describe, top=5))
    top_riser = int(result.movers.window_riser_index[0])
    assert f"line {top_riser} " in text and "rose most" in text and "fell most" in text
    text = record(movers_table(result, describe, interval=3, top=3))
    assert f"from step {result.movers.step_from[3]} to {result.movers.step_to[3]}" in text
    text = record(clusters_table(result, describe, key_label))
    assert "enriched keys" in text and "x" in text
    assert len(result.clusters.clusters) == 4
    text = record(histogram_table(result))
    assert str(int(result.histogram.counts.max())) in text


def test_render_prints_everything(mined):
    result, describe, key_label = mined
    console = Console(record=True, width=200, file=io.StringIO(), color_system=None)
    render(result, describe, key_label, console=console)
    text = console.export_text()
    assert "Opposing signals" in text and "Clusters of top movers" in text


def test_json_round_trips(mined):
    result, describe, _ = mined
    text = to_json(result, describe)
    data = json.loads(text)
    assert data["pairs"][0]["examples_a"][0]["context"].startswith("line ")
    assert data["pairs"][0]["key_a"].keys() == {"feature", "target"}
    rebuilt = MiningResult.from_dict(data)
    assert json.loads(json.dumps(rebuilt.to_dict())) == json.loads(json.dumps(result.to_dict()))
    assert rebuilt.pairs[0].key_a == result.pairs[0].key_a
    np.testing.assert_array_equal(rebuilt.groups[0].mean_loss, result.groups[0].mean_loss)
    # Without describe it is plain to_dict.
    assert json.loads(to_json(result)) == json.loads(json.dumps(result.to_dict()))


def test_csv_has_a_header_and_one_row_per_pair(mined, tmp_path):
    result, describe, key_label = mined
    buffer = io.StringIO()
    to_csv(result, describe, buffer, key_label)
    rows = list(csv.DictReader(io.StringIO(buffer.getvalue())))
    assert len(rows) == len(result.pairs) > 0
    first, pair = rows[0], result.pairs[0]
    assert int(first["size_a"]) == pair.size_a and int(first["a_feature"]) == pair.key_a[0]
    assert float(first["corr"]) == pytest.approx(pair.corr, rel=1e-5)
    assert first["examples_a"].count(" | ") == min(5, pair.size_a) - 1
    path = tmp_path / "pairs.csv"
    to_csv(result, describe, path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("rank,group_a,group_b,a_feature,a_target,b_feature,b_target,size_a")
    assert len(lines) == len(result.pairs) + 1


def test_the_report_shows_targets_as_described():
    """No GPT-2 rules in the report: a leading space stays a space, a newline stays on one line."""
    result = mine(*_tiny_pair_trace(), n_clusters=0)
    assert result.pairs
    text = record(pairs_table(result, lambda i: ("ctx", " the" if i % 2 else "\n")))
    assert "[ the]" in text and "[\\n]" in text and "␣" not in text


def _tiny_pair_trace():
    from lmprobe.mining.synthetic import PairSpec, scenario_trace

    trace = scenario_trace([PairSpec(30, 30, amplitude=0.3)], n_records=40, n_background=400, seed=1)
    return trace.losses, trace.steps, trace.keys


def test_a_cut_table_says_how_many_pairs_it_left_out(mined):
    result, describe, key_label = mined
    assert len(result.pairs) >= 3
    shown = len(result.pairs) - 2
    text = record(pairs_table(result, describe, max_pairs=shown))
    assert f"... and 2 more pairs; --top {len(result.pairs)} shows them" in text
    last_shown, first_cut = result.pairs[shown - 1], result.pairs[shown]
    assert "feature={}  target={}  (n=".format(*last_shown.key_b) in text
    assert "feature={}  target={}  (n=".format(*first_cut.key_b) not in text  # cut rows are gone
    full = record(pairs_table(result, describe, key_label, max_pairs=len(result.pairs)))
    assert "more pairs" not in full
    assert "more pairs; --top" in render_to_text(result, describe, key_label, width=220, max_pairs=shown)


def test_titles_and_json_say_which_window_was_mined():
    from lmprobe.mining.synthetic import PairSpec, scenario_trace

    trace = scenario_trace([PairSpec(40, 40)], n_records=60, n_background=1500, seed=2)
    result = mine(trace.losses, trace.steps, trace.keys, n_clusters=0)
    choice = result.window_choice
    assert choice.how == "after transient" and choice.start_step == result.window[0] > 0
    text = record(pairs_table(result, lambda i: ("c", "t")))
    assert "initial loss collapse left out" in text and f"from step {choice.start_step}" in text
    data = json.loads(to_json(result))
    assert data["window_choice"]["how"] == "after transient"
    assert data["window_choice"]["transient_end_step"] == choice.start_step
    assert MiningResult.from_dict(data).window_choice == choice
    explicit = mine(trace.losses, trace.steps, trace.keys, window=(0, None), n_clusters=0)
    assert explicit.window == (0, int(trace.steps[-1])) and explicit.window_choice.how == "requested"
    assert "initial loss collapse" not in record(pairs_table(explicit, lambda i: ("c", "t")))


@pytest.fixture(scope="module")
def cluster_mode():
    trace = planted_trace(40, 3000, n_pairs=0, n_cluster_features=2, seed=8)
    result = mine(trace.losses, trace.steps, trace.keys, by="cluster", n_clusters=4, cluster_top=500)
    return trace, result


def test_cluster_mode_has_its_own_json_tables_and_csv(cluster_mode, mined):
    trace, result = cluster_mode
    assert result.mode == "cluster" and result.groups == [] and result.pairs == []
    assert result.clusters.pairs, "the planted anti-phased clusters should oppose"

    def describe(i):
        return f"example {i}", "t"

    def key_label(name, value):
        return f"{name}#{value}"

    data = json.loads(to_json(result, describe, key_label=key_label))
    assert data["mode"] == "cluster"
    pair = data["clusters"]["pairs"][0]
    assert pair["examples_a"][0]["context"].startswith("example ")
    assert pair["dominance_label_a"].startswith("feature#")
    dominated = [c for c in data["clusters"]["clusters"] if c["dominated_by"] != "mixed"]
    assert dominated and dominated[0]["enriched"]["feature"][0]["label"].startswith("feature#")
    assert MiningResult.from_dict(data).clusters.to_dict() == result.clusters.to_dict()
    # The keyed mode's JSON differs: it leads with pairs of groups.
    keyed = json.loads(to_json(mined[0], mined[1]))
    assert keyed["mode"] == "groups" and keyed["pairs"]
    text = render_to_text(result, describe, key_label, width=220)
    assert "Opposing clusters" in text and "Opposing signals" not in text
    assert "feature#" in record(cluster_pairs_table(result, describe, key_label))
    buffer = io.StringIO()
    to_csv(result, describe, buffer, key_label)
    rows = list(csv.DictReader(io.StringIO(buffer.getvalue())))
    assert len(rows) == len(result.clusters.pairs)
    assert int(rows[0]["cluster_a"]) == result.clusters.pairs[0].cluster_a
