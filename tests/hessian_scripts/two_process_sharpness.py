"""Sharpness of a tiny GPT-2 from this process's shard of batches; rank 0 writes the result as JSON.

Run under `accelerate launch --multi_gpu --num_processes 2 ...` (with ACCELERATE_USE_CPU=true) it
exercises the distributed path: a DDP-wrapped model and an AcceleratedOptimizer are passed in, as a
training loop would; `compute()` called in one plain process gives the reference numbers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import hessian_problems as problems  # noqa: E402

from lmprobe.hessian import HessianOperator, hutchinson_trace, measure_sharpness, shard_batches  # noqa: E402

BLOCK = "transformer.h.0"
N_BATCHES = 5  # odd on purpose: shards of 3 and 2 batches


def build() -> tuple[torch.nn.Module, torch.optim.Optimizer, list]:
    """The same model, Adam state and batches in every process (one Adam step on batch 0)."""
    model = problems.tiny_gpt2(dtype=torch.float32)
    batches = problems.token_batches(n=N_BATCHES)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    problems.lm_loss(model, batches[0]).backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return model, optimizer, batches


def compute(model: torch.nn.Module, optimizer, batches: list) -> dict:
    local = shard_batches(batches)
    report = measure_sharpness(model, problems.lm_loss, local, k=3, block=BLOCK, optimizer=optimizer, tol=1e-6)
    trace = hutchinson_trace(HessianOperator(model, problems.lm_loss, local, block=BLOCK), n_probes=6, seed=3)
    return {
        "eigenvalues": report["eigenvalues"],
        "preconditioned_eigenvalues": report["preconditioned_eigenvalues"],
        "trace": trace.estimate,
        "n_batches": report["n_batches"],
        "local_batches": len(local),
    }


def main(output: str) -> None:
    from accelerate import Accelerator

    torch.set_num_threads(1)
    accelerator = Accelerator(cpu=True)
    model, optimizer, batches = build()
    model, optimizer = accelerator.prepare(model, optimizer)
    result = compute(model, optimizer, batches)
    result["world_size"] = accelerator.num_processes
    result["model_class"] = type(model).__name__
    gathered = [None] * accelerator.num_processes
    torch.distributed.all_gather_object(gathered, result["local_batches"]) if accelerator.num_processes > 1 else None
    result["local_batches"] = gathered if accelerator.num_processes > 1 else [result["local_batches"]]
    if accelerator.is_main_process:
        Path(output).write_text(json.dumps(result))
    accelerator.wait_for_everyone()
    del model, optimizer
    from lmprobe.train.launch import shut_down

    shut_down(accelerator)  # destroy the process group: left to interpreter exit, gloo can abort


if __name__ == "__main__":
    main(sys.argv[1])
