"""The fixed probe of a toy run: its examples (inputs, targets) and keys, saved with the run.

probe/probe.npz holds ids, inputs, targets and the keys ("feature", "target"); probe/meta.json the
data kind and the names of key values. The probe's losses are the per-example square losses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lmprobe.errors import LmprobeError
from toy.losses import example_losses

PROBE_FILE = "probe.npz"
META_FILE = "meta.json"


@dataclass
class ToyProbe:
    ids: np.ndarray  # int64 [n]: index in the training (or validation) split
    inputs: np.ndarray  # float32 [n, d]
    targets: np.ndarray  # float32 [n]
    extra_keys: dict[str, np.ndarray]  # "feature", "target" -> int64 [n]
    kind: str
    value_names: dict[str, dict[int, str]]

    @classmethod
    def from_data(cls, data, n_examples: int | None) -> "ToyProbe":
        split = data.train
        n = len(split.y) if n_examples is None else n_examples
        if not 1 <= n <= len(split.y):
            raise LmprobeError(f"trace.n_examples={n_examples} but the training set has {len(split.y)} examples; "
                               f"use at most {len(split.y)} (or null for all)")
        return cls(np.arange(n, dtype=np.int64), split.x[:n], split.y[:n],
                   {k: v[:n] for k, v in split.keys.items()}, data.kind, data.value_names)

    @property
    def n_examples(self) -> int:
        return len(self.targets)

    def keys(self) -> dict[str, np.ndarray]:
        return dict(self.extra_keys)

    def n_batches(self, batch_size: int) -> int:
        return -(-self.n_examples // batch_size)

    def batch(self, index: int, batch_size: int) -> dict[str, torch.Tensor]:
        rows = slice(index * batch_size, (index + 1) * batch_size)
        return {"inputs": torch.from_numpy(self.inputs[rows]), "targets": torch.from_numpy(self.targets[rows])}

    def losses(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return example_losses(model, batch)

    def save(self, probe_dir: str | Path) -> None:
        probe_dir = Path(probe_dir)
        probe_dir.mkdir(parents=True, exist_ok=True)
        np.savez(probe_dir / PROBE_FILE, ids=self.ids, inputs=self.inputs, targets=self.targets, **self.extra_keys)
        meta = {"domain": "toy", "kind": self.kind, "n_examples": self.n_examples,
                "value_names": {k: {str(v): n for v, n in d.items()} for k, d in self.value_names.items()}}
        (probe_dir / META_FILE).write_text(json.dumps(meta, indent=1))

    @classmethod
    def load(cls, probe_dir: str | Path) -> "ToyProbe":
        probe_dir = Path(probe_dir)
        try:
            meta = json.loads((probe_dir / META_FILE).read_text())
            with np.load(probe_dir / PROBE_FILE) as z:
                arrays = {k: z[k] for k in z.files}
            ids, inputs, targets = arrays.pop("ids"), arrays.pop("inputs"), arrays.pop("targets")
        except (OSError, ValueError, KeyError):
            raise LmprobeError(f"{probe_dir} has no readable toy probe ({PROBE_FILE}, {META_FILE}); "
                               f"is this a toy run directory?") from None
        names = {k: {int(v): n for v, n in d.items()} for k, d in meta["value_names"].items()}
        return cls(ids, inputs, targets, arrays, meta["kind"], names)
