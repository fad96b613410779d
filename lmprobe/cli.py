"""The `lmprobe` console script: analysis of run directories and checkpoints."""

from __future__ import annotations

import argparse
import sys

from lmprobe.errors import LmprobeError, OneLineArgumentParser, one_line_warnings, os_error_message
from lmprobe.quiet import quiet_libraries
from lmprobe.threads import use_threads

COMMANDS_GROUP = "lmprobe.commands"


def build_parser() -> argparse.ArgumentParser:
    from lmprobe import __version__
    from lmprobe.commands import claims, events, examples, mine, plot, push, sharpness

    parser = OneLineArgumentParser(prog="lmprobe", description="Opposing signals and sharpness in training runs.")
    parser.add_argument("--version", action="version", version=f"lmprobe {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in (mine, sharpness, plot, examples, events, claims, push, *plugin_commands()):
        command.add_parser(subparsers)
    return parser


def plugin_commands() -> list:
    """Subcommand modules from the `lmprobe.commands` entry points (text's `lmprobe suite`, a plug-in's own).

    Only the command modules are imported, not their domains, so `lmprobe mine` on a text run
    never loads vision; a broken plug-in is skipped rather than breaking every command."""
    from importlib.metadata import entry_points

    modules = []
    for entry in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        try:
            modules.append(entry.load())
        except (ImportError, AttributeError):
            continue
    return modules


def main(argv: list[str] | None = None) -> int:
    one_line_warnings()
    args = build_parser().parse_args(argv)
    from rich.console import Console

    console = Console()
    errors = Console(stderr=True)
    try:
        quiet_libraries()
        use_threads()  # CPU threads: an explicit launcher count, else the physical cores / local processes
        return args.run(args, console)
    except LmprobeError as err:
        errors.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        return 2
    except OSError as exc:  # a read-only run directory, a full disk: one line, not a traceback
        errors.print(f"[bold red]error:[/] {os_error_message(exc)}", highlight=False, soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
