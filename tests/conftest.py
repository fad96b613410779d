"""Shared fixtures. Tests run offline; one tiny training run serves every analysis test."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One thread everywhere, in this process and in the training subprocesses the tests start: tiny
# models run fastest on one thread, and runs compared bit for bit (resume, fallback) must reduce
# floats in the same order whichever test happened to create the shared fixture runs.
os.environ.setdefault("OMP_NUM_THREADS", "1")

TINY_STEPS = 16
TINY_DOCUMENTS = 60
TINY = f"""
model: {{n_layer: 1, n_head: 2, n_embd: 32}}
data: {{source: CORPUS, tokenizer: bpe-512, block_size: 32}}
optim: {{name: adamw, lr: 3.0e-3, warmup_steps: 2}}
train: {{steps: {TINY_STEPS}, batch_size: 8, log_every: 2, eval_every: 8, eval_batches: 2, checkpoint_every: 4}}
trace: {{every: 2, n_sequences: 6, batch_size: 4}}
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def two_process_launch(*args: str) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of `accelerate launch ARGS` on 2 CPU processes (gloo), as
    DESIGN.md prescribes, on a free port (a fixed one can still be held by the previous launch)."""
    import sys

    repo = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), *args]
    return cmd, env


#: a native abort of a gloo worker seen now and then on this 2-core machine (about one full suite in
#: three, never when the test runs alone): the launch is repeated once, and must then succeed
GLOO_ABORT = "terminate called without an active exception"


def accelerate_two_processes(*args: str, timeout: int = 300):
    """Run `accelerate launch ARGS` on 2 CPU processes; fails with its stderr."""
    import subprocess

    cmd, env = two_process_launch(*args)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0 and GLOO_ABORT in done.stderr:
        cmd, env = two_process_launch(*args)  # a fresh port
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def launch_two_processes(script: Path, *args: str) -> None:
    accelerate_two_processes(str(script), *args)


@pytest.fixture(scope="session", autouse=True)
def _single_thread_session():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest (and most steadily on a shared 2-core machine) on one thread."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """The first documents of the bundled sample as a local .jsonl: small enough that a 512-token
    BPE trains in a second and the output head stays cheap."""
    import json

    from lmprobe.lm.data import iter_documents

    path = tmp_path_factory.mktemp("corpus") / "tiny.jsonl"
    with open(path, "w") as f:
        for text in iter_documents("sample", max_documents=TINY_DOCUMENTS):
            f.write(json.dumps({"text": text[:20000]}) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory, tiny_corpus) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.yaml"
    path.write_text(TINY.replace("CORPUS", str(tiny_corpus)))
    return path


@pytest.fixture(scope="session")
def tiny_run(tiny_config, tmp_path_factory) -> Path:
    """A finished 16-step run: 9 trace records, checkpoints at 4, 8, 12, 16."""
    from lmprobe.lm.train_cli import main

    out = tmp_path_factory.mktemp("runs")
    assert main(["--config", str(tiny_config), "--name", "tiny", "--no-progress", f"out_dir={out}"]) == 0
    return out / "tiny"


TINY_VISION_STEPS = 8
TINY_VISION = f"""
model: {{arch: cnn, width: 4}}
data: {{source: synthetic, n_train: 64, n_val: 32}}
optim: {{name: gd, lr: 0.05, schedule: constant, grad_clip: null, gd_batches: null}}
train: {{steps: {TINY_VISION_STEPS}, batch_size: 32, log_every: 2, eval_every: 4, eval_batches: 1, checkpoint_every: 4}}
trace: {{every: 2, batch_size: 32}}
sharpness: {{every: 4, n_batches: 1, batch_size: 32, max_iter: 30}}
"""


@pytest.fixture(scope="session")
def tiny_vision_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vconfig") / "tiny_vision.yaml"
    path.write_text(TINY_VISION)
    return path


@pytest.fixture(scope="session")
def tiny_vision_run(tiny_vision_config, tmp_path_factory) -> Path:
    """A finished 8-step full-batch GD run on 64 synthetic images: 5 trace records, checkpoints at 4 and 8."""
    from lmprobe.train.launch import main

    out = tmp_path_factory.mktemp("vruns")
    assert main(["--config", str(tiny_vision_config), "--name", "tinyv", "--no-progress", f"out_dir={out}"],
                domain="vision") == 0
    return out / "tinyv"


PLANTED_VISION = """
model: {arch: cnn, width: 8}
data: {source: synthetic, n_train: 400, n_val: 100}
optim: {name: gd, lr: 0.05, schedule: constant, grad_clip: null, gd_batches: null}
train: {steps: 80, batch_size: 200, log_every: 2, eval_every: 40, eval_batches: 1, checkpoint_every: 40}
trace: {every: 2, batch_size: 200}
"""


@pytest.fixture(scope="session")
def planted_vision_run(tmp_path_factory) -> Path:
    """80 steps of full-batch GD on 400 synthetic images with planted sky and grass pairs: 41 records."""
    from lmprobe.train.launch import main

    config = tmp_path_factory.mktemp("pconfig") / "planted.yaml"
    config.write_text(PLANTED_VISION)
    out = tmp_path_factory.mktemp("pruns")
    assert main(["--config", str(config), "--name", "planted", "--no-progress", f"out_dir={out}"],
                domain="vision") == 0
    return out / "planted"
