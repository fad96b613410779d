"""How GPT-2-style tokens are shown: a leading space as ␣, newlines and tabs as backslash escapes."""

from __future__ import annotations

LEADING_SPACE = "\u2423"  # ␣
_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def visible_text(text: str) -> str:
    """Newlines, tabs and carriage returns as backslash escapes; everything else unchanged."""
    return "".join(_ESCAPES.get(ch, ch) for ch in text)


def visible_token(token: str) -> str:
    """A token with its invisible parts shown: " the" -> "␣the", "\\n" -> "\\\\n" (backslash-n)."""
    stripped = token.lstrip(" ")
    return LEADING_SPACE * (len(token) - len(stripped)) + visible_text(stripped)
