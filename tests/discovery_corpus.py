"""A small text corpus with a planted feature that is a *kind* of token, not one token.

A document is a run of two-token segments: a cue word, then a target word. The cues:

  * PLANTED = " Za", " Zb", " Zc", " Zd": four tokens that behave alike (the planted feature):
    the target is " Yes" or " No", with a share of " Yes" drawn per document from a Beta around
    PLANTED_SHARE, so training batches lean one way or the other and the two targets' losses
    swing against each other;
  * " Ab" always leads to " Yes", " Cd" always to " No", " Ef" always to " Up".

The key "feature" (the last token) cuts the planted feature into four small groups, and the
target alone mixes the planted " Yes"/" No" with the predictable " Ab"/" Cd" ones; the model
represents the four cues alike (they predict the same thing), so its last hidden state sees
the feature whole.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

PLANTED = (" Za", " Zb", " Zc", " Zd")
CUES = {" Ab": " Yes", " Cd": " No", " Ef": " Up"}
PLANTED_SHARE = 0.7
CONCENTRATION = 2.0


def write_corpus(path: str | Path, *, n_documents: int = 160, segments: int = 120, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    cues = [*PLANTED, *CUES]
    path = Path(path)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n_documents):
            share = rng.beta(PLANTED_SHARE * CONCENTRATION, (1 - PLANTED_SHARE) * CONCENTRATION)
            parts = ["Go"]
            for _ in range(segments):
                cue = cues[int(rng.integers(len(cues)))]
                parts.append(cue)
                parts.append((" Yes" if rng.random() < share else " No") if cue in PLANTED else CUES[cue])
            f.write(json.dumps({"text": "".join(parts)}) + "\n")
    return path
