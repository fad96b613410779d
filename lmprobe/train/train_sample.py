"""probe/train_sample.npz: the training examples analysis needs, saved when a run starts.

Two fixed sets, both drawn from the training split and so disjoint from the probe by construction:
* `hessian`: the batches the training hook measures sharpness on: under full-batch GD the first
  training examples (the GD batch itself), under SGD and Adam a seeded random sample of the training
  split (`random_hessian_indices`; the first examples of a corpus are one document, e.g. e-mail
  headers, and the top eigenvalue of their loss is theirs, not the loss's); `lmprobe sharpness`
  reads the same ones, so the CLI's number and metrics.jsonl's are comparable;
* `lookahead`: a seeded random sample for lookahead mining from a lone checkpoint.
Saving them means analysis never re-reads (or re-tokenises) the training corpus. Each batch is a dict
of tensors as the Task collates it, stored as arrays of shape [n_batches, batch_size, ...].
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lmprobe.errors import LmprobeError
from lmprobe.train.task import Batch

TRAIN_SAMPLE_FILE = "train_sample.npz"
LOOKAHEAD_BATCHES = 32
LOOKAHEAD_BATCH_SIZE = 8


@dataclass
class TrainSample:
    hessian: list[Batch]
    lookahead: list[Batch]


def hessian_indices(n_batches: int, batch_size: int, n_train: int) -> list[np.ndarray]:
    """The hook's fixed batches: the first n_batches * batch_size training examples."""
    needed = n_batches * batch_size
    if needed > n_train:
        raise LmprobeError(f"sharpness needs {needed} training examples (sharpness.n_batches x sharpness.batch_size), "
                           f"the training set has {n_train}; lower them")
    return [np.arange(b * batch_size, (b + 1) * batch_size) for b in range(n_batches)]


def random_hessian_indices(n_batches: int, batch_size: int, n_train: int, seed: int) -> list[np.ndarray]:
    """The hook's batches under SGD and Adam: n_batches * batch_size training examples drawn at random
    without replacement (seeded by the run's seed), so the logged sharpness is that of the mean loss
    over a random sample of the training split, the same sample at every measurement."""
    hessian_indices(n_batches, batch_size, n_train)  # the same size check
    order = np.random.default_rng([seed, 0x5EA4]).permutation(n_train)[: n_batches * batch_size]
    return [np.sort(order[b * batch_size : (b + 1) * batch_size]) for b in range(n_batches)]


def lookahead_indices(n_train: int, seed: int, n_batches: int = LOOKAHEAD_BATCHES,
                      batch_size: int = LOOKAHEAD_BATCH_SIZE) -> list[np.ndarray]:
    """A seeded random sample of training examples, as batches (fewer when the split is small)."""
    order = np.random.default_rng([seed, 0x10CA]).permutation(n_train)
    usable = min(n_batches, len(order) // batch_size)
    return [np.sort(order[b * batch_size : (b + 1) * batch_size]) for b in range(usable)]


def write_train_sample(probe_dir: str | Path, hessian: list[Batch], lookahead: list[Batch]) -> Path:
    arrays = {}
    for part, batches in (("hessian", hessian), ("lookahead", lookahead)):
        for key in (batches[0] if batches else {}):
            arrays[f"{part}.{key}"] = np.stack([b[key].cpu().numpy() for b in batches])
    path = Path(probe_dir) / TRAIN_SAMPLE_FILE
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return path


def save_hessian_sample(probe_dir: str | Path, hessian: list[Batch]) -> bool:
    """Replace the saved `hessian` batches (keeping `lookahead`) unless they are already these.
    Returns whether the file was rewritten."""
    saved = read_train_sample(probe_dir)
    if len(saved.hessian) == len(hessian) and all(
        set(a) == set(b) and all(torch.equal(a[k], b[k].cpu()) for k in a) for a, b in zip(saved.hessian, hessian)
    ):
        return False
    write_train_sample(probe_dir, hessian, saved.lookahead)
    return True


def read_train_sample(probe_dir: str | Path) -> TrainSample:
    path = Path(probe_dir) / TRAIN_SAMPLE_FILE
    if not path.is_file():
        raise LmprobeError(f"{path} is missing (a run made before lmprobe saved training samples?); "
                           "pass --data to draw batches from a corpus instead")
    parts: dict[str, dict[str, np.ndarray]] = {"hessian": {}, "lookahead": {}}
    with np.load(path) as z:
        for name in z.files:
            part, key = name.split(".", 1)
            parts[part][key] = z[name]
    return TrainSample(_unstack(parts["hessian"]), _unstack(parts["lookahead"]))


def _unstack(arrays: dict[str, np.ndarray]) -> list[Batch]:
    if not arrays:
        return []
    n = len(next(iter(arrays.values())))
    return [{k: torch.from_numpy(np.ascontiguousarray(v[i])) for k, v in arrays.items()} for i in range(n)]


def rebatch(batches: list[Batch], n_batches: int | None, batch_size: int | None, what: str) -> list[Batch]:
    """The stored examples regrouped into `n_batches` of `batch_size` (default: as stored)."""
    if not batches:
        raise LmprobeError(f"the run saved no {what} examples")
    if batch_size is None and n_batches is None:
        return batches
    examples = {k: torch.cat([b[k] for b in batches]) for k in batches[0]}
    total = len(next(iter(examples.values())))
    batch_size = batch_size or len(next(iter(batches[0].values())))
    if batch_size < 1 or (n_batches is not None and n_batches < 1):
        raise LmprobeError(f"batch size and batch count must be at least 1 (got {batch_size}, {n_batches})")
    available = total // batch_size
    n_batches = available if n_batches is None else n_batches
    if n_batches > available or available == 0:
        raise LmprobeError(f"the run saved {total} {what} examples: {n_batches or 1} batches of {batch_size} "
                           f"need {(n_batches or 1) * batch_size}; ask for fewer or pass --data")
    return [{k: v[i * batch_size : (i + 1) * batch_size] for k, v in examples.items()} for i in range(n_batches)]
