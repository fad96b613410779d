"""One exception type for every mistake a user can make.

Entry points catch `LmprobeError` and print its message as a single line, so bad input never
surfaces as a traceback from deep inside a library.
"""

import argparse


class LmprobeError(Exception):
    """A user-facing error: the message says what was wrong and what to do."""


def os_error_message(exc: OSError) -> str:
    """One line for a file operation the system refused: what, where, and what to do."""
    import errno

    reason = exc.strerror or str(exc) or type(exc).__name__
    where = f" {exc.filename}" if exc.filename else ""
    advice = {
        errno.ENOSPC: "free disk space and rerun (a run that had started continues with --resume)",
        errno.EROFS: "write to a writable location (a run directory is written to, even by analysis)",
        errno.EACCES: "check the permissions of that path",
        errno.EPERM: "check the permissions of that path",
    }.get(exc.errno, "check that the path exists and is writable")
    return f"cannot use{where}: {reason}; {advice}"


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse whose usage mistakes are one line, like every other error (argparse prints the
    whole usage block first); --help still prints the full usage."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def one_line_warnings() -> None:
    """Show warnings as `warning: message` lines, not file:line plus the offending source line."""
    import warnings

    warnings.formatwarning = lambda message, category, filename, lineno, line=None: f"warning: {message}\n"
