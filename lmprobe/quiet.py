"""Our progress bars and our errors only: transformers' per-save bars and config chatter muted."""

from __future__ import annotations


def quiet_libraries() -> None:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
