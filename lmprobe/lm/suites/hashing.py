"""Identical checkpoints: a series sometimes repeats one (a re-upload, a save without a step).

The hash is taken of the model as loaded, tensor by tensor in name order (name, dtype, shape,
raw bytes), so it does not depend on how the files were sharded or in what order they were written.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn


def weights_sha256(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(memoryview(flat.view(torch.uint8).numpy()))
    return digest.hexdigest()
