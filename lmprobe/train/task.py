"""What the training loop needs to know about a problem, and nothing more.

The loop is written once; a language model and a vision network differ only in the Task they
hand it. A batch is whatever `train_batch(indices)` returns (a dict of tensors); the loop only
moves it to the device. The fixed probe set is a `ProbeSet`: the same object (saved with the run,
loaded again by analysis) computes a trace row during training and when a checkpoint is replayed,
so there is one implementation of "the loss of every probe example".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

Batch = dict[str, torch.Tensor]


class ProbeSet(Protocol):
    """The fixed examples whose losses make up one trace row, and their keys for the miner."""

    @property
    def n_examples(self) -> int:
        """Length of one trace row."""

    def keys(self) -> dict[str, np.ndarray]:
        """int64 per example; "target" is what the two groups of an opposing pair differ in."""

    def n_batches(self, batch_size: int) -> int:
        """How many batches the probe is evaluated in."""

    def batch(self, index: int, batch_size: int) -> Batch:
        """The index-th batch of the probe."""

    def losses(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Flat losses of the probe examples in `batch`, in probe order (model in eval mode)."""

    def save(self, probe_dir: Path) -> None:
        """Write the examples and keys into run_dir/probe (what analysis needs to show them)."""


class Task(Protocol):
    #: the domain that made the run (recorded in config.yaml and every checkpoint)
    domain: str
    #: what one training example is counted in for throughput ("tokens", "images")
    unit: str
    #: the fixed probe set recorded into the trace
    probe: ProbeSet

    def build_model(self) -> nn.Module:
        """A fresh (or `init_from`) model, on the CPU, seeded by the caller."""

    def load_model(self, folder: Path) -> nn.Module:
        """The model saved by `save_pretrained` in `folder` (to resume from a checkpoint)."""

    def save_pretrained(self, model: nn.Module, folder: Path, state_dict: dict | None = None) -> None:
        """Write the model (save_pretrained, safetensors) and any preprocessing it needs.

        `state_dict` is passed only when training is sharded (FSDP, DeepSpeed): the full weights,
        gathered from every process, to write instead of the model's own (a shard).
        """

    def n_train(self) -> int:
        """Number of training examples the sampler draws indices from."""

    def n_val(self) -> int:
        """Number of validation examples."""

    def units_per_example(self) -> int:
        """Tokens (or images) in one example, for throughput."""

    def train_batch(self, indices: np.ndarray) -> Batch:
        """Collate training examples `indices` into a batch."""

    def val_batch(self, indices: np.ndarray) -> Batch:
        """Collate validation examples `indices` into a batch."""

    def loss(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Scalar mean training loss of the batch (what gradients and Hessians are taken of)."""

    def eval_outputs(self, model: nn.Module, batch: Batch) -> torch.Tensor:
        """Per-example validation values [batch, m] (token losses; loss and correctness per image)."""

    def eval_summary(self, outputs: np.ndarray) -> dict[str, float]:
        """Validation metrics from the concatenated, flattened `eval_outputs` of every batch."""

    def data_summary(self) -> dict[str, Any]:
        """Facts about the data worth recording in run_dir/data.json (sizes, entropy, classes)."""

    # optional: `flops_per_example(model) -> float | None`, training FLOPs of one example
    # (forward + backward), for the MFU the loop logs; a task without it logs no MFU


@torch.inference_mode()
def probe_row(probe: ProbeSet, model: nn.Module, batch_size: int, device: torch.device | str = "cpu") -> np.ndarray:
    """One trace row on one process: every probe example's loss under `model`, in eval mode."""
    was_training = model.training
    model.eval()
    out = []
    for b in range(probe.n_batches(batch_size)):
        batch = {k: v.to(device) for k, v in probe.batch(b, batch_size).items()}
        out.append(probe.losses(model, batch).float().cpu().numpy().ravel())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)
