"""Per-block sharpness of a run's last checkpoint: the top eigenvalue of the Hessian restricted to
each depth block (embeddings, each transformer layer or conv/linear layer, the head), for the claim
that sharpness concentrates in the embeddings and early layers.

Blocks come from parameter names alone, so every domain's models split the same way: a parameter
belongs to the path up to its first numeric component (transformer.h.3, net.0, vit.encoder.layer.1,
stages.2), or, without one, to its module (transformer.wte, classifier). Blocks keep the order in
which the model registers them, which is input-to-output order for every model lmprobe builds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

CACHE = "claims_blocks.json"  # in the run directory: measured once, reused by every later claims run
MAX_ITER = 20  # Hessian-vector products per block: the ordering of blocks is what is read, not 3 digits
TOL = 1e-2


def depth_blocks(model: nn.Module) -> list[str]:
    """Block names in registration order (module paths `block_matches` understands)."""
    blocks: list[str] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        parts = name.split(".")
        numeric = next((i for i, part in enumerate(parts) if part.isdigit()), None)
        block = ".".join(parts[: numeric + 1] if numeric is not None else parts[:-1]) or parts[0]
        if block not in blocks:
            blocks.append(block)
    return blocks


def block_sharpness(run_dir: Path) -> dict[str, Any]:
    """{"blocks": [...], "sharpness": [...], "sharpest": name, "sharpest_depth": 0..1} at the run's
    last checkpoint, on the first of the sharpness hook's batches; cached in the run directory."""
    cache = Path(run_dir) / CACHE
    if cache.is_file():
        return json.loads(cache.read_text())
    from lmprobe.domain import open_view
    from lmprobe.hessian.sharpness import measure_sharpness

    view = open_view(str(run_dir), None, None)
    model = view.load_model(view.checkpoint)
    batches = view.hessian_batches()[:1]
    blocks = depth_blocks(model)
    values = [float(measure_sharpness(model, view.loss, batches, block=block, tol=TOL, max_iter=MAX_ITER)["sharpness"])
              for block in blocks]
    sharpest = max(range(len(blocks)), key=lambda i: values[i])
    result = {"checkpoint": view.checkpoint.name, "blocks": blocks, "sharpness": values,
              "sharpest": blocks[sharpest], "sharpest_depth": sharpest / max(1, len(blocks) - 1)}
    cache.write_text(json.dumps(result, indent=1))
    return result
