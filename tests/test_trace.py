import numpy as np
import pytest

from lmprobe.errors import LmprobeError
from lmprobe.trace import TraceWriter, read_trace


def test_append_and_memory_map(tmp_path):
    writer = TraceWriter(tmp_path / "trace", n_examples=5)
    rows = np.arange(15, dtype=np.float32).reshape(3, 5)
    for step, row in zip([0, 10, 20], rows):
        writer.append(step, row)
    trace = read_trace(tmp_path)
    assert isinstance(trace.losses, np.memmap)
    assert trace.steps.tolist() == [0, 10, 20]
    np.testing.assert_array_equal(trace.losses, rows)
    assert not trace.incomplete


def test_partial_row_is_ignored_and_flagged(tmp_path):
    writer = TraceWriter(tmp_path / "trace", n_examples=4, dtype="float16")
    writer.append(0, np.ones(4))
    writer.append(5, np.full(4, 2.0))
    with open(writer.losses_path, "ab") as f:  # a kill in the middle of the third row
        f.write(b"\x00\x01\x02")
    trace = read_trace(tmp_path)
    assert trace.n_records == 2 and trace.incomplete
    assert trace.losses.dtype == np.float16


def test_truncate_before_rewinds_to_a_checkpoint(tmp_path):
    writer = TraceWriter(tmp_path / "trace", n_examples=2)
    for step in (0, 2, 4, 6):
        writer.append(step, np.full(2, step))
    assert writer.truncate_before(4) == 2
    writer.append(4, np.full(2, 40.0))
    trace = read_trace(tmp_path)
    assert trace.steps.tolist() == [0, 2, 4]
    assert trace.losses[-1].tolist() == [40.0, 40.0]


def test_mismatched_meta_is_refused(tmp_path):
    TraceWriter(tmp_path / "trace", n_examples=3)
    with pytest.raises(LmprobeError):
        TraceWriter(tmp_path / "trace", n_examples=4)


def test_missing_trace(tmp_path):
    with pytest.raises(LmprobeError, match="no trace"):
        read_trace(tmp_path)


def test_rows_are_synced_at_checkpoints_not_per_row(tmp_path, monkeypatch):
    """An fsync per row made a toy run three times slower; durability is needed only up to the
    checkpoint a resume starts from, so the loop syncs the trace and metrics log there."""
    import os

    from lmprobe.train.metrics_log import MetricsLog

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd)))
    writer = TraceWriter(tmp_path / "trace", n_examples=3)
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in range(20):
        writer.append(step, np.full(3, float(step)))
        log.write({"step": step, "loss": 1.0})
    assert synced == []
    writer.sync()
    log.sync()
    assert sorted(os.path.basename(p) for p in synced) == ["losses.bin", "metrics.jsonl", "steps.bin"]
    assert read_trace(tmp_path).n_records == 20
