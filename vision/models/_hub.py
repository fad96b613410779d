"""The save/load base of our plain-torch models: safetensors weights + config.json.

Why a base class: huggingface_hub's PyTorchModelHubMixin records the __init__ arguments as the
config, but it loads weights non-strictly, prints on every local load and writes a model card
into each folder. Checkpoints must load exactly (a missing tensor is a bug, not a warning) and
carry a "model_type" that the vision domain dispatches on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import ClassVar

import torch.nn as nn
from huggingface_hub import PyTorchModelHubMixin

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


class HubModule(nn.Module, PyTorchModelHubMixin):
    """nn.Module whose __init__ arguments (JSON values only) are its config."""

    model_type: ClassVar[str] = ""

    def save_pretrained(self, save_directory: str | os.PathLike, *, config: dict | None = None,
                        state_dict: dict | None = None) -> None:
        """Write model.safetensors and config.json (the init arguments plus "model_type");
        `state_dict` replaces the module's own weights (a sharded model's gathered full state)."""
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        if state_dict is None:
            self._save_pretrained(folder)
        else:
            import safetensors.torch

            safetensors.torch.save_file({k: v.detach().cpu().contiguous() for k, v in state_dict.items()},
                                        str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
        config = dict(config if config is not None else (self._hub_mixin_config or {}))
        config["model_type"] = self.model_type
        (folder / CONFIG_NAME).write_text(json.dumps(config, sort_keys=True, indent=2))

    @classmethod
    def _from_pretrained(cls, *, model_id: str, map_location: str = "cpu", strict: bool = True,
                         revision=None, cache_dir=None, force_download=False, local_files_only=False,
                         token=None, **model_kwargs):
        if not os.path.isdir(model_id):  # a Hub repo id: the mixin's download path
            return super()._from_pretrained(
                model_id=model_id, revision=revision, cache_dir=cache_dir, force_download=force_download,
                local_files_only=local_files_only, token=token, map_location=map_location, strict=strict,
                **model_kwargs)
        import safetensors.torch

        model = cls(**model_kwargs)
        safetensors.torch.load_model(model, os.path.join(model_id, WEIGHTS_NAME), strict=strict,
                                     device=map_location)
        model.eval()
        return model
