"""`lmprobe mine` and `lmprobe sharpness` end to end, on the shared tiny run."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from lmprobe.cli import main
from lmprobe.analysis.replay import REPLAY_DIR


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def copy_run(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / run.name
    shutil.copytree(run, target)
    return target


# ----------------------------------------------------------------------------- mine
def test_mine_run_prints_tables(tiny_run, capsys):
    code, out, err = run_cli(["mine", "--checkpoint", str(tiny_run), "--top", "5"], capsys)
    assert code == 0, err
    assert f"trace of {tiny_run}: 9 records x 186 probe examples" in " ".join(out.split())
    assert "opposing" in out.lower() and "[" in out


def test_mine_json_and_csv(tiny_run, tmp_path, capsys):
    csv_path = tmp_path / "pairs.csv"
    code, out, err = run_cli(["mine", "--checkpoint", str(tiny_run), "--json", "--csv", str(csv_path)], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert {"pairs", "groups", "movers", "histogram"} <= set(data)
    assert sum(data["histogram"]["counts"]) == 8 * 186
    described = data["movers"]["window_riser_described"][0]
    assert set(described) == {"index", "context", "target"}
    with open(csv_path) as f:
        header = next(csv.reader(f))
    assert header[:3] == ["rank", "group_a", "group_b"]


def test_mine_by_target_and_steps_window(tiny_run, capsys):
    code, out, err = run_cli(["mine", "--checkpoint", str(tiny_run), "--by", "target", "--steps", "4:12",
                              "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["key_names"] == ["target"]
    assert sum(data["histogram"]["counts"]) == 4 * 186


def test_mine_by_cluster(tiny_run, capsys):
    code, out, err = run_cli(["mine", "--checkpoint", str(tiny_run), "--by", "cluster"], capsys)
    assert code == 0, err
    assert "cluster" in out.lower()


def test_mine_run_without_trace_replays_checkpoints(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path)
    shutil.rmtree(run / "trace")
    code, out, err = run_cli(["mine", "--checkpoint", str(run), "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["steps"] == [4, 8, 12, 16]
    assert (run / REPLAY_DIR / "losses.bin").is_file()
    # the replayed rows are the probe losses the trace recorded at the same steps
    from lmprobe.trace import read_trace, read_trace_dir

    recorded, replayed = read_trace(tiny_run), read_trace_dir(run / REPLAY_DIR)
    rows = [list(recorded.steps).index(s) for s in replayed.steps]
    np.testing.assert_allclose(replayed.losses, recorded.losses[rows], rtol=1e-4, atol=1e-5)


def test_mine_checkpoint_uses_its_neighbours(tiny_run, capsys):
    ckpt = tiny_run / "checkpoints" / "step-000008"
    code, out, err = run_cli(["mine", "--checkpoint", str(ckpt), "--neighbours", "1"], capsys)
    assert code == 0, err
    assert "checkpoints 4..12 around step-000008" in out


def test_mine_lone_checkpoint_by_lookahead(tiny_run, tiny_corpus, tmp_path, capsys):
    lone = tmp_path / "lone"
    shutil.copytree(tiny_run / "checkpoints" / "step-000016", lone)
    code, _, err = run_cli(["mine", "--checkpoint", str(lone)], capsys)
    assert code == 2 and "--data" in err
    code, out, err = run_cli(["mine", "--checkpoint", str(lone), "--data", str(tiny_corpus), "--lookahead", "9",
                              "--lr", "0.1", "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert data["steps"] == list(range(10))
    assert sum(data["histogram"]["counts"]) > 0


def test_mine_bad_paths(tmp_path, capsys):
    code, _, err = run_cli(["mine", "--checkpoint", str(tmp_path / "missing")], capsys)
    assert code == 2 and "does not exist" in err
    code, _, err = run_cli(["mine", "--checkpoint", str(tmp_path)], capsys)
    assert code == 2 and "neither a run directory" in err and "\n" not in err.strip()


def test_mine_too_few_records(tiny_run, tmp_path, capsys):
    code, _, err = run_cli(["mine", "--checkpoint", str(tiny_run), "--steps", "4:5"], capsys)
    assert code == 2 and "at least 2" in err
    run = copy_run(tiny_run, tmp_path)
    shutil.rmtree(run / "trace")
    for ckpt in sorted((run / "checkpoints").iterdir())[1:]:
        shutil.rmtree(ckpt)
    code, _, err = run_cli(["mine", "--checkpoint", str(run)], capsys)
    assert code == 2 and "1 checkpoint(s)" in err and "trace.every" in err


def test_mine_interrupted_trace_uses_complete_rows(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path)
    with open(run / "trace" / "losses.bin", "ab") as f:
        f.write(b"\x00" * 10)
    code, out, err = run_cli(["mine", "--checkpoint", str(run), "--json"], capsys)
    assert code == 0, err
    json.loads(out)  # the warning goes to stderr: stdout stays parseable
    assert "incomplete record" in err and "9 complete records" in err


def test_mine_vocabulary_mismatch(tiny_corpus, tmp_path, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    from lmprobe.lm.data import GPT2_DIR

    folder = tmp_path / "small-vocab"
    GPT2LMHeadModel(GPT2Config(vocab_size=300, n_positions=64, n_embd=16, n_layer=1, n_head=2)).save_pretrained(folder)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(Path(GPT2_DIR) / name, folder / name)
    code, _, err = run_cli(["mine", "--checkpoint", str(folder), "--data", str(tiny_corpus)], capsys)
    assert code == 2 and "vocabulary of 300" in err


def test_mine_bad_steps_syntax(tiny_run, capsys):
    code, _, err = run_cli(["mine", "--checkpoint", str(tiny_run), "--steps", "ten"], capsys)
    assert code == 2 and "A:B" in err


# ----------------------------------------------------------------------------- sharpness
def test_sharpness_table_and_json(tiny_run, capsys):
    code, out, err = run_cli(["sharpness", "--checkpoint", str(tiny_run), "--batches", "1", "--batch-size", "4",
                              "--block", "transformer.h.0", "--max-iter", "30"], capsys)
    assert code == 0, err
    assert "2/lr" in out and "preconditioned" in out
    code, out, err = run_cli(["sharpness", "--checkpoint", str(tiny_run / "checkpoints" / "step-000008"),
                              "--batches", "1", "--batch-size", "4", "--k", "2", "--block", "transformer.h.0",
                              "--json"], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert len(report["eigenvalues"]) == 2 and report["eigenvalues"][0] >= report["eigenvalues"][1]
    assert report["gd_threshold"] == pytest.approx(2 / report["lr"])
    assert report["preconditioned_threshold"] == pytest.approx(38 / report["lr"])


def test_sharpness_bad_block(tiny_run, capsys):
    code, _, err = run_cli(["sharpness", "--checkpoint", str(tiny_run), "--batch-size", "4", "--block", "nosuch"], capsys)
    assert code == 2 and "matches no trainable parameter" in err


# ----------------------------------------------------------------------------- plot
def test_plot_writes_figures(tiny_run, tmp_path, capsys):
    code, out, err = run_cli(["plot", "--checkpoint", str(tiny_run), "--out", str(tmp_path)], capsys)
    assert code == 0, err
    for name in ("training.png", "opposing_pairs.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    code, _, err = run_cli(["plot", "--checkpoint", str(tiny_run / "checkpoints" / "step-000004")], capsys)
    assert code == 2 and "run directory" in err


def test_mine_csv_names_its_file_and_refuses_a_missing_folder(tiny_run, tmp_path, capsys):
    target = tmp_path / "pairs.csv"
    code, out, err = run_cli(["mine", str(tiny_run), "--csv", str(target)], capsys)
    assert code == 0 and f"wrote {target}" in " ".join(out.split())
    code, _, err = run_cli(["mine", str(tiny_run), "--csv", str(tmp_path / "no" / "such" / "p.csv")], capsys)
    assert code == 2 and "does not exist" in err and "\n" not in err.strip()


def test_examples_on_a_text_run(tiny_run, tmp_path, capsys):
    code, out, err = run_cli(["examples", str(tiny_run), "--out", str(tmp_path), "--json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert set(data["class_counts"]) == {"H->H", "L->H", "H->L", "L->L"}
    assert sum(data["class_counts"].values()) == 186
    import datasets

    table = datasets.Dataset.from_parquet(str(tmp_path / "examples.parquet"))
    assert len(table) == 186 and {"target", "feature", "forgetting_events", "aoa_step"} <= set(table.column_names)
    assert (tmp_path / "data_map.png").read_bytes()[:4] == b"\x89PNG"


def test_damaged_trace_meta_and_impossible_k_are_one_line(tiny_run, tmp_path, capsys):
    run = copy_run(tiny_run, tmp_path)
    (run / "trace" / "meta.json").write_text("{bad")
    code, _, err = run_cli(["mine", str(run)], capsys)
    assert code == 2 and "meta.json is damaged" in err and "\n" not in err.strip()
    code, _, err = run_cli(["sharpness", str(tiny_run), "--k", "100000"], capsys)
    assert code == 2 and "--k 100000" in err and "\n" not in err.strip()
