"""Per-example training dynamics on synthetic traces with known answers."""

import json
import math

import numpy as np
import pytest
from rich.console import Console

from lmprobe.dynamics import RHO1_CLASSES, data_map_figure, example_statistics, write_parquet
from lmprobe.dynamics.export import read_metadata
from lmprobe.errors import LmprobeError
from lmprobe.report.examples_table import examples_to_json, render_examples
from lmprobe.trace import TraceWriter, read_trace

HIGH, LOW = 3.0, 0.1
R = 20
STEPS = np.arange(R, dtype=np.int64) * 10


def planted() -> np.ndarray:
    """[20 records x 6 examples]:
    0 forgotten exactly twice (learned at records 5-7, 10-12, 14-19);
    1 learned at record 12 (step 120), never forgotten;
    2 never learned (constant high loss);
    3 learned throughout; 4 learned then lost for good (one event); 5 noisy but flat and high."""
    x = np.full((R, 6), HIGH, dtype=np.float32)
    x[[5, 6, 7, 10, 11, 12] + list(range(14, R)), 0] = LOW
    x[12:, 1] = LOW
    x[:, 2] = 5.0
    x[:, 3] = LOW
    x[:10, 4] = LOW
    x[:, 5] = 4.0 + 0.3 * np.sin(np.arange(R))
    return x


def random_trace(records=37, examples=300, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    curve = np.linspace(4, 0.2, records)[:, None] * rng.uniform(0.2, 1.5, examples)
    return np.abs(curve + rng.normal(0, 0.4, (records, examples))).astype(np.float32)


def describe(i: int) -> tuple[str, str]:
    return f"context {i}\n", f"tok{i}"


def test_forgetting_learning_and_age_of_acquisition_on_a_planted_trace():
    stats = example_statistics(planted(), STEPS)
    assert stats.forgetting_events.tolist() == [2, 0, 0, 0, 1, 0]
    assert stats.never_learned.tolist() == [False, False, True, False, False, True]
    assert stats.unforgettable.tolist() == [False, True, False, True, False, False]
    assert stats.first_learned_step.tolist() == [50, 120, -1, 0, 0, -1]
    # Learned at record 12 (step 120): the crossing lies within one record interval of it.
    assert 110 <= stats.aoa_step[1] <= 120
    assert math.isnan(stats.aoa_step[2]) and math.isnan(stats.aoa_step[3])  # no drop
    assert math.isnan(stats.aoa_step[4])  # the loss rises: no acquisition
    assert math.isnan(stats.aoa_step[5])  # drifts down by less than its own noise
    assert np.isfinite(example_statistics(planted(), STEPS, aoa_min_drop=0.0).aoa_step[5])
    assert stats.learned_share[0] == pytest.approx(12 / R)
    assert stats.final_loss[4] == pytest.approx(HIGH)
    assert stats.min_loss[0] == pytest.approx(LOW)


def test_age_of_acquisition_interpolates_in_log_step_without_smoothing():
    x = np.array([[4.0], [4.0], [3.0], [1.0], [0.0], [0.0]], dtype=np.float32)
    steps = np.array([0, 9, 99, 999, 9999, 99999])
    stats = example_statistics(x, steps, smooth=1, edge_records=1)
    # midpoint 2.0 is crossed halfway between records 2 and 3 in log(1 + step): 10**2.5 - 1.
    assert stats.aoa_step[0] == pytest.approx(10 ** 2.5 - 1, rel=1e-9)


def test_learned_means_loss_at_most_ln2_exactly_in_float32():
    ln2_up = np.float32(math.log(2))  # float32 rounds ln 2 up: this loss is just above it
    below = np.nextafter(ln2_up, np.float32(0))
    x = np.array([[below, ln2_up], [ln2_up, below]], dtype=np.float32)
    stats = example_statistics(x, np.array([0, 1]))
    assert stats.learned_share.tolist() == [0.5, 0.5]
    assert stats.forgetting_events.tolist() == [1, 0]


def test_rho1_classes_have_the_planted_shares():
    sizes = {"H->H": (5.0, 5.0, 10), "L->H": (0.1, 5.0, 20), "H->L": (5.0, 0.1, 30), "L->L": (0.1, 0.1, 40)}
    columns = [np.linspace(a, b, R)[:, None].repeat(n, 1) for a, b, n in sizes.values()]
    x = np.hstack(columns).astype(np.float32)
    stats = example_statistics(x, STEPS, rho1_threshold=1.0)
    assert stats.class_shares == pytest.approx({"H->H": 0.1, "L->H": 0.2, "H->L": 0.3, "L->L": 0.4})
    assert [RHO1_CLASSES[c] for c in stats.rho1_code[[0, 10, 30, 60]]] == list(sizes)
    default = example_statistics(x, STEPS)
    assert default.rho1_thresholds == (pytest.approx(np.median(default.start_loss)),
                                       pytest.approx(np.median(default.end_loss)))


def test_statistics_equal_the_direct_numpy_formulas():
    x = random_trace()
    stats = example_statistics(x, np.arange(len(x)) * 3)
    x64 = x.astype(np.float64)
    p = np.exp(-x64)
    close = dict(rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats.confidence, p.mean(axis=0), **close)
    np.testing.assert_allclose(stats.variability, p.std(axis=0), **close)
    np.testing.assert_allclose(stats.learned_share, (x64 <= math.log(2)).mean(axis=0))
    np.testing.assert_allclose(stats.mean_loss, x64.mean(axis=0), **close)
    np.testing.assert_allclose(stats.loss_std, x64.std(axis=0), **close)
    late = math.ceil(len(x) / 4)
    np.testing.assert_allclose(stats.late_loss_std, x64[-late:].std(axis=0), **close)
    np.testing.assert_allclose(stats.min_loss, x64.min(axis=0))
    np.testing.assert_allclose(stats.final_loss, x64[-1])
    np.testing.assert_allclose(stats.start_loss, x64[:3].mean(axis=0), **close)  # edge = 37 // 10
    learned = x64 <= math.log(2)
    np.testing.assert_array_equal(stats.forgetting_events, (learned[:-1] & ~learned[1:]).sum(axis=0))


def test_chunked_results_equal_unchunked():
    x = random_trace(records=41, examples=257, seed=1)
    steps = np.arange(41) * 7
    whole = example_statistics(x, steps, chunk_cells=10**9)
    for chunk_cells in (3, 100, 1000, 257 * 3):
        part = example_statistics(x, steps, chunk_cells=chunk_cells)
        got = part.columns()
        for name, values in whole.columns().items():
            if values.dtype.kind in "biu":
                np.testing.assert_array_equal(got[name], values, err_msg=name)
            else:
                np.testing.assert_allclose(got[name], values, rtol=1e-9, atol=1e-12, err_msg=name)
    assert np.isfinite(whole.aoa_step).mean() > 0.9


def test_float16_memmap_trace_is_read_in_column_chunks_and_whole_rows(tmp_path):
    x = random_trace(records=23, examples=130, seed=2)
    writer = TraceWriter(tmp_path / "run" / "trace", n_examples=130, dtype="float16")
    for step, row in zip(range(0, 230, 10), x):
        writer.append(step, row)
    trace = read_trace(tmp_path / "run")
    assert isinstance(trace.losses, np.memmap) and trace.losses.dtype == np.float16
    expected = example_statistics(np.asarray(trace.losses, dtype=np.float32), trace.steps)
    for chunk_cells in (50, 10**6):  # column chunks (row-segment reads), whole rows
        got = example_statistics(trace.losses, trace.steps, chunk_cells=chunk_cells)
        np.testing.assert_allclose(got.confidence, expected.confidence, rtol=1e-9)
        np.testing.assert_array_equal(got.forgetting_events, expected.forgetting_events)
        np.testing.assert_allclose(got.aoa_step, expected.aoa_step, rtol=1e-9)


def test_window_selects_records_by_step():
    stats = example_statistics(planted(), STEPS, window=(50, 150))
    assert stats.n_records == 11 and stats.window == (50, 150)
    assert stats.first_learned_step[0] == 50


def test_bad_input_gives_clear_errors():
    x = planted()
    with pytest.raises(LmprobeError, match="has 1 record.*at least 2"):
        example_statistics(x[:1], STEPS[:1])
    with pytest.raises(LmprobeError, match=r"window steps=\(1000, 2000\) selects 0 record"):
        example_statistics(x, STEPS, window=(1000, 2000))
    with pytest.raises(LmprobeError, match="2-D"):
        example_statistics(x[:, 0], STEPS)
    with pytest.raises(LmprobeError, match="must increase"):
        example_statistics(x, STEPS[::-1])
    with pytest.raises(LmprobeError, match="smooth=4"):
        example_statistics(x, STEPS, smooth=4)
    with pytest.raises(LmprobeError, match="every one of the 6 examples"):
        example_statistics(np.full_like(x, np.nan), STEPS)


def test_non_finite_examples_are_left_out_with_a_warning():
    x = planted()
    x[7, 2] = np.nan
    x[3, 5] = np.inf
    stats = example_statistics(x, STEPS)
    assert stats.finite.tolist() == [True, True, False, True, True, False]
    assert np.isnan(stats.confidence[[2, 5]]).all() and (stats.rho1_code[[2, 5]] == -1).all()
    assert stats.forgetting_events[0] == 2 and sum(stats.class_counts.values()) == 4
    assert "2 of 6 examples" in stats.warnings[0]


def test_parquet_loads_with_datasets_and_pandas(tmp_path):
    import datasets
    import pandas as pd

    stats = example_statistics(planted(), STEPS)
    keys = {"target": np.array([7, 7, 8, 8, 9, 9]), "feature": np.arange(6) * 10}
    path = write_parquet(stats, tmp_path / "examples.parquet", keys, extra_columns={"note": np.array(list("abcdef"))})
    table = datasets.Dataset.from_parquet(str(path), cache_dir=str(tmp_path / "cache"))
    assert len(table) == 6
    wanted = {"example", "forgetting_events", "aoa_step", "rho1_class", "target", "feature", "note"}
    assert wanted <= set(table.column_names)
    assert table["target"][:] == [7, 7, 8, 8, 9, 9] and table["forgetting_events"][:] == [2, 0, 0, 0, 1, 0]
    frame = pd.read_parquet(path)
    assert frame["rho1_class"].tolist() == [RHO1_CLASSES[c] for c in stats.rho1_code]
    assert frame.loc[2, "rho1_class"] == "H->H"
    assert np.isnan(frame.loc[2, "aoa_step"])
    meta = read_metadata(path)
    assert meta["parameters"]["n_records"] == R and "confidence" in meta["definitions"]
    with pytest.raises(LmprobeError, match="already a statistic"):
        write_parquet(stats, tmp_path / "x.parquet", {"confidence": np.zeros(6)})


def test_data_map_figure_is_written(tmp_path):
    stats = example_statistics(random_trace(examples=500), np.arange(37))
    path = data_map_figure(stats, tmp_path / "map.png", max_points=200)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_report_names_the_most_forgotten_and_latest_learned_examples():
    stats = example_statistics(planted(), STEPS)
    keys = {"target": np.array([1, 2, 2, 2, 1, 2])}
    console = Console(record=True, width=200, color_system=None)
    render_examples(stats, describe, lambda name, v: f"‹tok{v}›", keys, console, top=3, min_group_size=1)
    text = console.export_text()
    forgotten = text[text.index("Most forgotten"):text.index("Latest-learned")]
    assert forgotten.index("context 0\\n [tok0]") < forgotten.index("context 4\\n [tok4]")
    latest = text[text.index("Latest-learned"):]
    assert "context 1\\n [tok1]" in latest.split("Groups by target")[0]
    groups = text[text.index("Groups by target"):]
    assert "‹tok1›" in groups  # group 1 (examples 0 and 4) forgets most on average
    assert "H->L" in text and "never learned" in text
    data = json.loads(examples_to_json(stats, describe, None, keys, top=3, min_group_size=1))
    assert [e["index"] for e in data["most_forgotten"]] == [0, 4]
    assert data["most_forgotten"][0]["target"] == "tok0"
    assert data["latest_learned"][0]["index"] == 1
    assert data["groups"]["rows"][0]["value"] == 1 and data["groups"]["rows"][0]["mean_forgetting"] == 1.5
