"""Two CPU processes (gloo, launched by accelerate) give the eigenvalues of one process."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from tests.conftest import accelerate_two_processes

SCRIPT = Path(__file__).parent / "hessian_scripts" / "two_process_sharpness.py"
REPO = Path(__file__).resolve().parents[1]


def _single_process_result() -> dict:
    spec = importlib.util.spec_from_file_location("two_process_sharpness", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return module.compute(*module.build())
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    output = tmp_path / "two_process.json"
    accelerate_two_processes(str(SCRIPT), str(output), timeout=180)
    two = json.loads(output.read_text())
    one = _single_process_result()

    assert two["world_size"] == 2 and two["model_class"] == "DistributedDataParallel"
    assert two["local_batches"] == [3, 2] and two["n_batches"] == one["n_batches"] == 5
    for key in ("eigenvalues", "preconditioned_eigenvalues"):
        torch.testing.assert_close(torch.tensor(two[key]), torch.tensor(one[key]), rtol=1e-4, atol=0)
    assert two["trace"] == pytest.approx(one["trace"], rel=1e-4)
