"""A small text corpus with planted opposing pairs, for the end-to-end mining test.

A document is one long line of segments in a fixed cycle: " #" then one of two words, " @"
then one of two words, and so on. The marker (a punctuation token that appears nowhere else)
is the context's last token — the "feature" — and the word after it is the "target". Each
document draws its own share of each pair's first word from a Beta distribution around the
pair's mean share, so a training batch (a few documents) leans towards one word or the other
and the model's conditional probability, hence the two groups' losses, swing against each
other from batch to batch: opposing signals that a tiny GPT-2 can learn (each choice depends
on the previous token only) and that keep moving as long as training goes on.

Everything else is a deterministic function of the previous token (the word after a choice is
always the next marker), so nothing but the planted pairs carries an opposition — except the
end of a document, which the model cannot see coming; documents are long, so that group stays
below the miner's minimum group size. The rare
pair's first word has a mean share of 0.2, which makes it the rarest token of the corpus:
its loss collapses last.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class PlantedPair:
    marker: str  # the feature: a punctuation token preceded by a space
    first: str  # target A
    second: str  # target B
    share: float  # mean share of A over documents


PAIRS = (
    PlantedPair(" #", "Yes", "No", 0.5),
    PlantedPair(" @", "Up", "Down", 0.5),
    PlantedPair(" %", "Hi", "Lo", 0.75),  # an unbalanced pair: 75/25
    PlantedPair(" =", "Red", "Blue", 0.5),
    PlantedPair(" &", "Zyx", "Qua", 0.2),  # a rare target: Zyx is the corpus's rarest token
)
OPENING = "Go"  # every document starts with it, so the first marker follows a fixed token
CLOSING = " +Done"  # every cycle but the last ends with it: a context with one continuation
ENDING = " +End"  # the last cycle ends with it, so EOS, too, follows a fixed token
CONCENTRATION = 2.0  # Beta(a, b) with a + b = 2: documents differ a lot


def write_corpus(path: str | Path, *, n_documents: int = 120, cycles: int = 100, seed: int = 0) -> Path:
    """Write `n_documents` {"text": ...} lines to `path` (a .jsonl file) and return it."""
    rng = np.random.default_rng(seed)
    path = Path(path)
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(n_documents):
            shares = [rng.beta(p.share * CONCENTRATION, (1 - p.share) * CONCENTRATION) for p in PAIRS]
            parts = [OPENING]
            for cycle in range(cycles):
                for pair, share in zip(PAIRS, shares):
                    parts.append(pair.marker + (pair.first if rng.random() < share else pair.second))
                parts.append(CLOSING if cycle < cycles - 1 else ENDING)
            f.write(json.dumps({"text": "".join(parts)}) + "\n")
    return path
