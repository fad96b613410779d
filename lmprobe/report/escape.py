"""Control characters made visible, so one example stays on one table row in any domain."""

from __future__ import annotations

_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def visible_text(text: str) -> str:
    """Newlines, tabs and carriage returns as backslash escapes; everything else unchanged."""
    return "".join(_ESCAPES.get(ch, ch) for ch in text)
