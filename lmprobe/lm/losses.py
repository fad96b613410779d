"""The language-model losses: the mean training loss and per-token losses (all or masked positions)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def lm_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean next-token cross-entropy of a batch of token blocks (what training descends)."""
    return model(input_ids=batch["input_ids"], labels=batch["input_ids"], use_cache=False).loss


HEAD_CHUNK = 256  # positions per slab of logits when only some positions are scored


def token_losses(model: nn.Module, input_ids: torch.Tensor,
                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """Next-token cross-entropy: [batch, block_size - 1], or flat at `mask`ed positions.

    With a mask the output head runs only where a loss is wanted: on a probe of a few
    positions per sequence that skips most of the (vocabulary-sized) logits.
    """
    if mask is None:
        logits = model(input_ids=input_ids, use_cache=False).logits
        targets = F.pad(input_ids[:, 1:], (0, 1), value=-100)  # no copy of the logits
        losses = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none")
        return losses.view(input_ids.shape)[:, :-1]
    hidden = model.base_model(input_ids=input_ids, use_cache=False).last_hidden_state[:, :-1][mask]
    targets = input_ids[:, 1:][mask]
    head = model.get_output_embeddings()
    losses = torch.empty(len(targets), dtype=torch.float32, device=hidden.device)
    for start in range(0, len(targets), HEAD_CHUNK):  # vocabulary-wide logits, a cache-sized slab at a time
        logits = head(hidden[start : start + HEAD_CHUNK]).float()
        picked = logits.gather(1, targets[start : start + HEAD_CHUNK, None])[:, 0]
        losses[start : start + HEAD_CHUNK] = torch.logsumexp(logits, dim=-1) - picked
    return losses
