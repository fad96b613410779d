"""A small Vision Transformer for 32x32 inputs: transformers' ViTForImageClassification.

Patch 4 gives 64 patches + [CLS]. Attention is the "eager" implementation: its softmax and
matmuls have a double backward, which Hessian-vector products need (the fused SDPA kernels
do not). No dropout by default, so train and eval mode compute the same function, and there
is no batch norm (layer norm is per image), so GD over micro-batches equals one big batch.
Saved with transformers' save_pretrained: config.json has model_type "vit".
"""

from __future__ import annotations

from contextlib import contextmanager

from transformers import ViTConfig, ViTForImageClassification
from transformers.utils import logging as hf_logging


def build_vit(n_classes: int = 10, width: int = 192, n_layer: int = 6, n_head: int = 3,
              patch_size: int = 4, mlp_ratio: int = 4, image_size: int = 32,
              dropout: float = 0.0) -> ViTForImageClassification:
    """`width` is the hidden size; `n_head` must divide it."""
    config = ViTConfig(
        image_size=image_size, patch_size=patch_size, num_channels=3,
        hidden_size=width, num_hidden_layers=n_layer, num_attention_heads=n_head,
        intermediate_size=mlp_ratio * width, num_labels=n_classes,
        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, attn_implementation="eager",
    )
    return ViTForImageClassification(config)


def save_vit(model: ViTForImageClassification, folder: str, state_dict: dict | None = None) -> None:
    with _quiet():
        model.save_pretrained(folder, state_dict=state_dict)


def load_vit(folder: str) -> ViTForImageClassification:
    """In eval mode, with the eager (double-backward) attention."""
    with _quiet():
        model = ViTForImageClassification.from_pretrained(folder, local_files_only=True,
                                                          attn_implementation="eager")
    return model.eval()


@contextmanager
def _quiet():
    """No per-shard progress bars: a run saves many checkpoints."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
