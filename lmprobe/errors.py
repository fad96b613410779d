"""One exception type for every mistake a user can make.

Entry points catch `LmprobeError` and print its message as a single line, so bad input never
surfaces as a traceback from deep inside a library.
"""

import argparse
import os
import re
from pathlib import Path


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
        errno.EDQUOT: "free space within your disk quota and rerun (a run that had started continues with --resume)",
        errno.EFBIG: "raise the file-size limit (ulimit -f) and rerun (a run that had started continues with --resume)",
        errno.EROFS: "write to a writable location (a run directory is written to, even by analysis)",
        errno.EACCES: "check the permissions of that path",
        errno.EPERM: "check the permissions of that path",
        errno.EIO: "check the disk (full? failing?) and rerun (a run that had started continues with --resume)",
    }.get(exc.errno, "check that the path exists and is writable")
    return f"cannot use{where}: {exc.strerror or first_line(exc)}; {advice}"


#: what torch.save (its zip writer), safetensors and the libraries built on them say when a write fails
_WRITE_FAILURE = re.compile(r"PytorchStreamWriter failed writing|file write failed|unexpected pos \d+ vs \d+|"
                            r"iostream error|I/O error|IoError|os error \d+", re.IGNORECASE)
_OS_ERROR_CODE = re.compile(r"(?:os error|code:)\s*(\d+)")


def write_failure(exc: BaseException, where: str | os.PathLike) -> OSError | None:
    """The OSError a library's write error stands for (None when `exc` is something else): torch.save's
    RuntimeError ("unexpected pos ...", "PytorchStreamWriter failed writing file ...") and safetensors'
    SafetensorError ("I/O error: No space left on device (os error 28)") on a full disk or past a
    file-size limit. Meant for errors raised while writing files, never for arbitrary RuntimeErrors."""
    import errno

    if isinstance(exc, OSError):
        return exc
    chain = [exc, exc.__cause__, exc.__context__]
    text = " | ".join(str(e) for e in chain if e is not None)
    library = isinstance(exc, RuntimeError) or type(exc).__name__ == "SafetensorError"
    if not library or not _WRITE_FAILURE.search(text):
        return None
    for e in chain:
        if isinstance(e, OSError) and e.errno:
            return OSError(e.errno, e.strerror or first_line(e), str(where))
    code = _OS_ERROR_CODE.search(text)
    if code:
        number = int(code.group(1))
        return OSError(number, os.strerror(number), str(where))
    number = _likely_write_errno(where)  # torch's writer keeps no errno: tell it from the file system
    if number is not None:
        return OSError(number, os.strerror(number), str(where))
    return OSError(errno.EIO, f"write failed ({first_line(exc, 80)})", str(where))


def _likely_write_errno(where: str | os.PathLike) -> int | None:
    """ENOSPC when the file system of `where` is (nearly) full, EFBIG when a file-size limit is set."""
    import errno
    import shutil

    path = Path(where)
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        if shutil.disk_usage(path).free < 1 << 20:
            return errno.ENOSPC
    except OSError:
        pass
    try:
        import resource

        if resource.getrlimit(resource.RLIMIT_FSIZE)[0] != resource.RLIM_INFINITY:
            return errno.EFBIG
    except (ImportError, OSError, ValueError):
        pass
    return None


class OneLineArgumentParser(argparse.ArgumentParser):
    """argparse whose usage mistakes are one line, like every other error (argparse prints the
    whole usage block first); --help still prints the full usage."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def one_line_warnings() -> None:
    """Show warnings as `warning: message` lines, not file:line plus the offending source line."""
    import warnings

    warnings.formatwarning = lambda message, category, filename, lineno, line=None: f"warning: {message}\n"
