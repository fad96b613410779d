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


def confidently_wrong_mlp(seed: int = 3, input_scale: float = 3.0, steps: int = 200):
    """(model, batches, AdamW) where one tanh MLP, trained with AdamW on a linear teacher, is
    evaluated on the example it is most confident about, labelled with its least likely class.
    Large inputs make the within-layer curvature (negative for the units behind the wrong answer)
    dominate: the most negative Hessian eigenvalue is ~37x the largest (checked in the tests)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 3)).double()
    with torch.no_grad():
        model[0].weight.div_(input_scale)
    generator = torch.Generator().manual_seed(seed + 10)
    x = torch.randn(60, 6, generator=generator, dtype=torch.float64) * input_scale
    y = (x @ torch.randn(6, 3, generator=generator, dtype=torch.float64)).argmax(1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.02, weight_decay=0.01)
    for _ in range(steps):
        optimizer.zero_grad()
        classification_loss(model, (x, y)).backward()
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    with torch.no_grad():
        logits = model(x)
    index = logits.softmax(1).max(1).values.argmax().reshape(1)
    return model, [(x[index], logits[index].argmin(1))], optimizer



def confidently_wrong_gpt2(seed: int = 0, steps: int = 60, lr: float = 0.03, dtype: torch.dtype = torch.float64):
    """(model, batches): a 1,080-parameter GPT-2 (1 layer, n_embd 8, vocab 16) after `steps` AdamW
    steps on sequences that count up by 1 (mod 16), measured on sequences that count up by 3: it is
    confidently wrong, and the most negative Hessian eigenvalue is ~4x the largest (checked)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    def counting(stride: int, generator: torch.Generator) -> torch.Tensor:
        start = torch.randint(0, 16, (4, 1), generator=generator)
        return (start + stride * torch.arange(8)) % 16

    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=1, n_embd=8, n_head=2, vocab_size=16, n_positions=8,
        bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    model = GPT2LMHeadModel(config).to(dtype)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad()
        lm_loss(model, counting(1, generator)).backward()
        optimizer.step()
    return model, [counting(3, generator)]
