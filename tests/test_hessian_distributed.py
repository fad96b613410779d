"""Two CPU processes (gloo, launched by accelerate) give the eigenvalues of one process."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parent / "hessian_scripts" / "two_process_sharpness.py"
REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
    env = dict(
        os.environ,
        ACCELERATE_USE_CPU="true",
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
        str(SCRIPT), str(output),
    ]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert completed.returncode == 0, completed.stderr[-3000:]
    two = json.loads(output.read_text())
    one = _single_process_result()

    assert two["world_size"] == 2 and two["model_class"] == "DistributedDataParallel"
    assert two["local_batches"] == [3, 2] and two["n_batches"] == one["n_batches"] == 5
    for key in ("eigenvalues", "preconditioned_eigenvalues"):
        torch.testing.assert_close(torch.tensor(two[key]), torch.tensor(one[key]), rtol=1e-4, atol=0)
    assert two["trace"] == pytest.approx(one["trace"], rel=1e-4)
