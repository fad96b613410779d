"""What several commands share: the PATH argument, opening it through its domain, stderr progress."""

from __future__ import annotations

import argparse

import numpy as np

from lmprobe.errors import LmprobeError


def add_path_arguments(parser: argparse.ArgumentParser, what: str = "a run directory or a checkpoint folder") -> None:
    """A positional PATH with --checkpoint kept as its alias, and --domain for foreign folders."""
    parser.add_argument("path", nargs="?", metavar="PATH", help=what)
    parser.add_argument("--checkpoint", dest="checkpoint", metavar="PATH", help="same as PATH")
    parser.add_argument("--domain", help="the domain of a lone checkpoint that records none (lm, vision, ...)")


def path_of(args: argparse.Namespace) -> str:
    path = args.path or args.checkpoint
    if path is None:
        raise LmprobeError("give a run directory or checkpoint: lmprobe COMMAND runs/NAME (or --checkpoint runs/NAME)")
    return path


def open_path(args: argparse.Namespace, data: str | None = None):
    from lmprobe.domain import open_view

    return open_view(path_of(args), data, getattr(args, "domain", None))


def parse_steps(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        a, b = text.split(":")
        lo = int(a) if a else np.iinfo(np.int64).min
        hi = int(b) if b else np.iinfo(np.int64).max
    except ValueError:
        raise LmprobeError(f"--steps {text!r} must look like A:B (e.g. 100:500, or 100: for 'from 100')") from None
    return lo, hi


def positive(text: str) -> int:
    """argparse type: an integer >= 1, with a one-line error otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def stderr_progress(what: str):
    """Progress goes to stderr, so --json output on stdout stays clean."""
    from rich.console import Console

    stderr = Console(stderr=True)

    def report(done: int, total: int) -> None:
        stderr.print(f"{what}: {done}/{total}", end="\r" if done < total else "\n", highlight=False)

    return report


def warn(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)
