"""Which parameters the Hessian is taken over, and how they map to one flat vector.

Block matching rule (`block` argument, a string):

* ``None``: every parameter with ``requires_grad=True``.
* an alias: ``"embeddings"`` selects parameters whose name contains ``wte``, ``wpe`` or ``embed``.
* ``"re:<pattern>"``: parameters whose full name matches ``re.search(pattern, name)``.
* anything else is a module path: a parameter belongs to the block when its name equals the block
  or starts with ``block + "."`` (so ``"transformer.h.1"`` never matches ``transformer.h.10``).

Only parameters that require grad are ever selected: frozen parameters are constants of the loss.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from lmprobe.errors import LmprobeError

BLOCK_ALIASES: dict[str, tuple[str, ...]] = {"embeddings": ("wte", "wpe", "embed")}
REGEX_PREFIX = "re:"


def block_matches(name: str, block: str) -> bool:
    """Whether parameter `name` belongs to `block` under the rule in this module's docstring."""
    if block in BLOCK_ALIASES:
        return any(part in name for part in BLOCK_ALIASES[block])
    if block.startswith(REGEX_PREFIX):
        try:
            return re.search(block[len(REGEX_PREFIX):], name) is not None
        except re.error as exc:
            raise LmprobeError(
                f"block {block!r} is not a valid regular expression ({exc}); fix the pattern after 're:'"
            ) from None
    return name == block or name.startswith(block + ".")


def module_prefixes(names: list[str], limit: int = 6) -> list[str]:
    """A few distinct module paths (at most three components deep) to suggest as block names."""
    seen: list[str] = []
    for name in names:
        parent = name.rsplit(".", 1)[0] if "." in name else name
        prefix = ".".join(parent.split(".")[:3])
        if prefix not in seen:
            seen.append(prefix)
        if len(seen) == limit:
            break
    return seen


def select_parameters(model: nn.Module, block: str | None = None) -> list[tuple[str, nn.Parameter]]:
    """The (name, parameter) pairs the Hessian is taken over, in `named_parameters` order."""
    trainable = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise LmprobeError(
            f"{type(model).__name__} has no parameters with requires_grad=True (eval-only form); "
            "call model.requires_grad_(True) (or unfreeze the block to measure) before taking the Hessian"
        )
    if any(p.is_inference() for _, p in trainable):
        raise LmprobeError(
            f"{type(model).__name__} has parameters created under torch.inference_mode (eval-only form); "
            "load or clone the model outside inference_mode to take Hessian-vector products"
        )
    if block is None:
        return trainable
    chosen = [(name, p) for name, p in trainable if block_matches(name, block)]
    if not chosen:
        examples = ", ".join(repr(p) for p in module_prefixes([name for name, _ in trainable]))
        aliases = ", ".join(repr(a) for a in BLOCK_ALIASES)
        raise LmprobeError(
            f"block {block!r} matches no trainable parameter of {type(model).__name__}; "
            f"use a module path such as {examples}, an alias ({aliases}) or 're:<regex>'"
        )
    return chosen


def flatten(tensors: list[torch.Tensor] | tuple[torch.Tensor, ...], dtype: torch.dtype) -> torch.Tensor:
    """Concatenate tensors into one flat vector of `dtype`."""
    return torch.cat([t.reshape(-1).to(dtype) for t in tensors])


def unflatten(vector: torch.Tensor, params: list[nn.Parameter]) -> list[torch.Tensor]:
    """Split a flat vector into pieces shaped (and typed, and placed) like `params`."""
    pieces = torch.split(vector, [p.numel() for p in params])
    return [piece.view_as(p).to(device=p.device, dtype=p.dtype) for piece, p in zip(pieces, params)]
