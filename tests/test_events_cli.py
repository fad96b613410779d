"""`lmprobe events`: text and vision runs, the table and JSON, coincidences when sharpness was logged."""

import json

import pytest

from lmprobe.cli import main as lmprobe_main


def test_events_table_on_a_text_run(tiny_run, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    assert lmprobe_main(["events", str(tiny_run), "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert "Events:" in out and "rose most (feature-target)" in out
    assert "no sharpness in metrics" in out  # tiny_run logs none: said, not failed


def test_events_json_on_a_text_run_is_parseable_with_notes_on_stderr(tiny_run, capsys):
    assert lmprobe_main(["events", str(tiny_run), "--json", "--detector", "olmo", "--series", "probe"]) == 0
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["detector"] == "olmo" and data["series"] == "probe"
    assert data["by"] == ["feature-target", "target", "feature2-feature-target"]
    assert data["events"] and all("attribution" in e for e in data["events"])
    assert len(data["probe_events"]) <= 5
    assert "warning" in captured.err


def test_events_on_a_vision_run_with_sharpness_tests_the_coincidences(tiny_vision_run, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")
    assert lmprobe_main(["events", str(tiny_vision_run), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["stability"] == ["sharpness", "sharpness_threshold"]
    names = [c["name"] for c in data["coincidences"]]
    assert names[0].startswith("loss spikes follow instabilities") and names[1] == "spikes while sharpness >= threshold (in-state)"
    assert data["instability"]["rule"].startswith("instability = a sharpness sample")
    assert "align" in data["by"]  # the run recorded alignment along the top eigenvector
    sharp = [e["sharpness"] for e in data["events"] if e["attribution"]["step_to"] >= 4]
    assert sharp and all(s is not None and s > 0 for s in sharp)
    assert lmprobe_main(["events", str(tiny_vision_run)]) == 0
    out = capsys.readouterr().out
    assert "Coincidences" in out and "Along the sharp direction" in out


@pytest.mark.parametrize("argv, message", [
    (["--by", "nope"], "unknown grouping"),
    (["--steps", "x"], "--steps"),
])
def test_events_user_errors_are_one_line(tiny_run, capsys, argv, message):
    assert lmprobe_main(["events", str(tiny_run), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_pair_coincidences_are_named_by_their_groups_labels():
    from lmprobe.events.coincidence import coincidence
    from lmprobe.report.events_table import coincidence_name

    test = coincidence("pair target (4,) / (1,) swings at spikes", [1, 0, 0, 1], [1, 0, 0, 0])
    assert coincidence_name(test, None) == test.name
    test.pair = {"by": "feature-target", "up": (2, 4), "down": (2, 1)}
    names = {("feature", 2): "top=grey", ("target", 4): "deer", ("target", 1): "automobile"}
    label = coincidence_name(test, lambda name, value: names[(name, value)])
    assert label == "pair top=grey deer / top=grey automobile swings at spikes"
    assert test.to_dict()["pair"] == {"by": "feature-target", "up": [2, 4], "down": [2, 1]}
