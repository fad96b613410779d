"""How GPT-2-style tokens are shown to people: invisible characters made visible.

A newline is printed as the two characters "\\n", a tab as "\\t", a carriage return as "\\r",
and each leading space of a token as "␣" (U+2423, OPEN BOX): GPT-2 tokens carry their leading
space, and " the" vs "the" matters. These are text-domain rules; the mining report itself is
domain-agnostic and shows whatever its describe / key_label callables return.
"""

from __future__ import annotations

from lmprobe.report.escape import visible_text

LEADING_SPACE = "\u2423"  # ␣


def visible_token(token: str) -> str:
    """A token with its invisible parts shown: " the" -> "␣the", "\\n" -> "\\\\n" (backslash-n)."""
    stripped = token.lstrip(" ")
    return LEADING_SPACE * (len(token) - len(stripped)) + visible_text(stripped)
