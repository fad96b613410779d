"""Small deterministic problems and their dense Hessians, the ground truth for the Hessian tests.

The dense Hessian is computed independently of lmprobe.hessian: the loss is written as a function
of one flat parameter vector with torch.func.functional_call, and differentiated twice by
torch.autograd.functional.hessian.
"""

from __future__ import annotations

import os
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel


def mlp(dtype: torch.dtype = torch.float64, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)


def mlp_batches(n: int = 3, size: int = 10, dtype: torch.dtype = torch.float64, seed: int = 1) -> list:
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(size, 6, generator=generator, dtype=dtype), torch.randint(0, 3, (size,), generator=generator))
        for _ in range(n)
    ]


def classification_loss(model: nn.Module, batch) -> torch.Tensor:
    inputs, labels = batch
    return nn.functional.cross_entropy(model(inputs), labels)


def cnn(batch_norm: bool = True, dtype: torch.dtype = torch.float64, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(2, 4, 3, padding=1)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 3)]
    return nn.Sequential(*layers).to(dtype)


def cnn_batches(n: int = 2, size: int = 8, dtype: torch.dtype = torch.float64, seed: int = 2) -> list:
    generator = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(size, 2, 6, 6, generator=generator, dtype=dtype), torch.randint(0, 3, (size,), generator=generator))
        for _ in range(n)
    ]


def tiny_gpt2(dtype: torch.dtype = torch.float64, seed: int = 0) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=16,
        bos_token_id=0, eos_token_id=0, resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1,
    )
    return GPT2LMHeadModel(config).to(dtype)


def token_batches(n: int = 2, size: int = 3, length: int = 12, vocab: int = 50, seed: int = 3) -> list:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (size, length), generator=generator) for _ in range(n)]


def lm_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy in the model's dtype (transformers' own loss upcasts to float32)."""
    logits = model(input_ids=batch).logits
    return nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))


class _LossModule(nn.Module):
    def __init__(self, model: nn.Module, loss_fn: Callable) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch) -> torch.Tensor:
        return self.loss_fn(self.model, batch)


def dense_hessian(model: nn.Module, loss_fn: Callable, batches: list, names: list[str]) -> torch.Tensor:
    """d^2/dθ^2 of the mean per-batch loss, θ = the named parameters flattened in order.

    The caller puts the model in the mode to differentiate in (dropout must be off)."""
    wrapper = _LossModule(model, loss_fn)
    params = dict(model.named_parameters())
    shapes = [params[n].shape for n in names]
    sizes = [params[n].numel() for n in names]
    flat = torch.cat([params[n].detach().reshape(-1) for n in names])

    def loss_of(vector: torch.Tensor) -> torch.Tensor:
        pieces = {f"model.{n}": piece.view(shape) for n, piece, shape in zip(names, vector.split(sizes), shapes)}
        return sum(functional_call(wrapper, pieces, (batch,)) for batch in batches) / len(batches)

    with sdpa_kernel(SDPBackend.MATH):
        return torch.autograd.functional.hessian(loss_of, flat)
