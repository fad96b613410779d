"""The model card (README.md with YAML metadata) written into every checkpoint's model folder.

The Hub reads the YAML front matter (library, datasets, tags, pipeline); a reader gets how the
model was made: the run's training config, the metrics at the checkpoint, and how to load it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CARD_FILE = "README.md"
STREAMED_DATASETS = {"openwebtext": "Skylion007/openwebtext"}


def card_metadata(config: dict[str, Any], domain: str) -> dict[str, Any]:
    """The YAML front matter: what the Hub indexes."""
    meta: dict[str, Any] = {"tags": ["lmprobe", domain]}
    if domain == "lm":
        meta.update(library_name="transformers", pipeline_tag="text-generation")
        meta["tags"] += ["gpt2", "causal-lm"]
    source = str((config.get("data") or {}).get("source", ""))
    dataset = STREAMED_DATASETS.get(source)
    if dataset:
        meta["datasets"] = [dataset]
    return meta


def render_card(config: dict[str, Any], metrics: dict[str, Any], step: int, domain: str,
                version: str) -> str:
    """README.md text for a checkpoint at `step` of a run with `config` (its resolved config.yaml)."""
    meta = card_metadata(config, domain)
    source = (config.get("data") or {}).get("source", "unknown")
    lines = [
        "---", yaml.safe_dump(meta, sort_keys=False).rstrip(), "---", "",
        f"# {config.get('name') or 'lmprobe run'} (step {step})", "",
        f"Trained with lmprobe {version} ({domain} domain) for {step} optimiser steps "
        f"on `{source}`, recording per-example probe losses to study opposing signals "
        "(Rosenfeld & Risteski, ICLR 2024).", "",
    ]
    if domain == "lm":
        model = config.get("model") or {}
        lines += [
            "## Use", "",
            "```python",
            "from transformers import pipeline",
            "generate = pipeline(\"text-generation\", model=\"PATH_OR_REPO\")",
            "# the context is model.config.n_positions tokens: keep prompt + max_new_tokens within it,",
            "# or let the pipeline cut the prompt's start: handle_long_generation=\"hole\"",
            "generate(\"Subject: \", max_new_tokens=20)",
            "```", "",
            f"GPT-2 architecture: {model.get('n_layer')} layers, {model.get('n_head')} heads, "
            f"{model.get('n_embd')}-dimensional embeddings, "
            f"{(config.get('data') or {}).get('block_size')} positions.", "",
        ]
    lines += ["## Latest logged metrics", ""]
    shown = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if shown:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.6g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in shown.items()]
    else:
        lines.append("Not yet measured at this step.")
    lines += ["", "## Training config", "", "The run's resolved config (`config.yaml`):", "", "```yaml",
              yaml.safe_dump(config, sort_keys=False).rstrip(), "```", ""]
    return "\n".join(lines)


def write_model_card(folder: str | Path, config: dict[str, Any], metrics: dict[str, Any], step: int,
                     domain: str) -> Path:
    from lmprobe import __version__

    path = Path(folder) / CARD_FILE
    path.write_text(render_card(config, metrics, step, domain, __version__), encoding="utf-8")
    return path


def read_card_metadata(folder: str | Path) -> dict[str, Any]:
    """The YAML front matter of a folder's README.md ({} when there is none)."""
    text = (Path(folder) / CARD_FILE).read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        return {}
    front = text[4:].split("\n---\n", 1)[0]
    return yaml.safe_load(front) or {}
