"""What several commands share: the PATH argument, opening it through its domain, stderr progress."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

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


def open_run_writing(args: argparse.Namespace, why: str, folder: str):
    """The run view of a command that needs a whole run (not a lone checkpoint) and writes into a
    folder: --out, or RUN/`folder`, checked before any work. `why` finishes "`lmprobe X` ..."."""
    view = open_path(args)
    if view.located.kind != "run":
        raise LmprobeError(f"{view.checkpoint} is a checkpoint; `lmprobe {args.command}` {why}: give its run directory")
    out = Path(args.out) if args.out else view.run_dir / folder
    check_output_folder(out, "--out")
    return view, out


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


def at_least(low: int):
    """argparse type: an integer >= low, with a one-line error otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


positive, non_negative = at_least(1), at_least(0)


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0 (a learning rate, a tolerance), with a one-line error otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def check_output_file(path: str | None, option: str, example: str) -> None:
    """Before any work: an output FILE path must not be a folder, and its folder must exist."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise LmprobeError(f"{option} {path} is a folder; give a file path, e.g. {target / example}")
    if not target.resolve().parent.is_dir():
        blocking = next((p for p in target.parents if p.exists()), None)
        if blocking is not None and not blocking.is_dir():
            raise LmprobeError(f"{option} {path} lies inside {blocking}, which is a file; choose another path")
        raise LmprobeError(f"{option} {path}: folder {target.parent} does not exist; create it or choose another path")


def check_output_folder(path: str | Path, option: str) -> None:
    """Before any work: an output FOLDER (created if missing) must not be, or lie inside, a file."""
    target = Path(path)
    for place in (target, *target.parents):
        if place.exists():
            if not place.is_dir():
                what = "is a file" if place == target else f"lies inside {place}, which is a file"
                raise LmprobeError(f"{option} {path} {what}; give a folder")
            return


def stderr_progress(what: str):
    """Progress goes to stderr, so --json output on stdout stays clean. On a terminal (rich's test,
    the one the trainer's progress bar goes by) one line is rewritten in place; otherwise (a log
    file, a pipe, CI) each update is a line of its own."""
    from rich.console import Console

    stderr = Console(stderr=True)

    def report(done: int, total: int) -> None:
        end = "\r" if stderr.is_terminal and done < total else "\n"
        stderr.print(f"{what}: {done}/{total}", end=end, highlight=False, soft_wrap=True)

    return report


def warn(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)
