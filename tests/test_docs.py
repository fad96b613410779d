"""The documentation covers what exists: every config key of every built-in domain is in
docs/configuration.md, every `lmprobe` subcommand has its page, and every relative link or image
in README.md and docs/ points at a file that exists."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def config_keys(cls, prefix: str = "") -> list[str]:
    """Dotted names of every leaf field of a config dataclass (nested sections included)."""
    keys = []
    for f in dataclasses.fields(cls):
        kind = f.type if isinstance(f.type, type) else None
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            keys += config_keys(type(default), f"{prefix}{f.name}.")
        elif kind is not None and dataclasses.is_dataclass(kind):
            keys += config_keys(kind, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def domain_config_classes():
    from lmprobe.lm.config import LMConfig
    from toy.config import ToyConfig
    from vision.config import VisionConfig

    return [LMConfig, VisionConfig, ToyConfig]


@pytest.mark.parametrize("cls", domain_config_classes(), ids=lambda c: c.__name__)
def test_every_config_key_is_in_the_configuration_page(cls):
    text = (DOCS / "configuration.md").read_text()
    keys = config_keys(cls)
    assert len(keys) > 20  # the walk found the sections, not just the top level
    missing = [k for k in keys if f"`{k}`" not in text and f"`{k.rsplit('.', 1)[-1]}`" not in text]
    assert not missing, f"config keys missing from docs/configuration.md: {missing}"


def test_the_key_walk_sees_nested_sections():
    from lmprobe.lm.config import LMConfig

    keys = config_keys(LMConfig)
    assert {"optim.lr", "train.threads", "sharpness.tol", "model.n_layer", "data.tokenizer"} <= set(keys)


def test_every_subcommand_has_its_page():
    from lmprobe.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    commands = sorted(action.choices)
    assert {"mine", "events", "plot", "sharpness", "examples", "push", "suite"} <= set(commands)
    for name in commands:
        page = DOCS / "commands" / f"{name}.md"
        assert page.is_file(), f"`lmprobe {name}` has no docs/commands/{name}.md"
        assert f"lmprobe {name}" in page.read_text()
    index = (DOCS / "index.md").read_text() + (ROOT / "mkdocs.yml").read_text()
    for name in commands:
        assert f"commands/{name}.md" in index


def markdown_files():
    return [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]


@pytest.mark.parametrize("page", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_and_images_point_at_files(page):
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"^(https?:|mailto:|#)", target):
            continue
        path = (page.parent / target.split("#", 1)[0]).resolve()
        if not path.exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)} links to missing files: {broken}"


def test_readme_stays_short_and_keeps_the_three_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 210
    for command in ("bash scripts/setup.sh", "accelerate launch cli/train_lm.py", "pytest"):
        assert command in text
    assert "pytest" in (ROOT / ".ci" / "run").read_text().splitlines()[-1]
