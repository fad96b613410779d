"""Write one benchmark's figures into its own section of BENCHMARKS.md, leaving others alone."""

from __future__ import annotations

import platform
import re
import time
from pathlib import Path

import torch

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def write_section(title: str, lines: list[str], command: str) -> None:
    body = "\n".join([f"## {title}", "", f"`{command}` — measured {time.strftime('%Y-%m-%d')} on {machine()}.",
                      "", *lines, ""])
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n\n"
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = pattern.sub(body + "\n", text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + body
    BENCHMARKS_MD.write_text(text)
