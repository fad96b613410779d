"""One exception type for every mistake a user can make.

Entry points catch `LmprobeError` and print its message as a single line, so bad input never
surfaces as a traceback from deep inside a library.
"""

import argparse


class LmprobeError(Exception):
    """A user-facing error: the message says what was wrong and what to do."""


def first_line(exc: BaseException, limit: int = 120) -> str:
    """An exception's first line, shortened at a word: the reason inside a one-line error."""
    import textwrap

    line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return textwrap.shorten(line, limit, placeholder=" ...")


def os_error_message(exc: OSError) -> str:
    """One line for an OSError: a file operation the system refused (what, where, what to do), or
    another OSError (a network or Hub failure) by its first line."""
    import errno

    if exc.errno is None:  # requests' ConnectionError, huggingface_hub's errors: not about a path
        return first_line(exc, 200)
    places = [str(name) for name in (exc.filename, exc.filename2) if name]
    where = f" {' -> '.join(places)}" if places else ""
    advice = {
        errno.ENOSPC: "free disk space and rerun (a run that had started continues with --resume)",
        errno.EROFS: "write to a writable location (a run directory is written to, even by analysis)",
        errno.EACCES: "check the permissions of that path",
        errno.EPERM: "check the permissions of that path",
    }.get(exc.errno, "check that the path exists and is writable")
    return f"cannot use{where}: {exc.strerror or first_line(exc)}; {advice}"


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse whose usage mistakes are one line, like every other error (argparse prints the
    whole usage block first); --help still prints the full usage."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def one_line_warnings() -> None:
    """Show warnings as `warning: message` lines, not file:line plus the offending source line."""
    import warnings

    warnings.formatwarning = lambda message, category, filename, lineno, line=None: f"warning: {message}\n"
