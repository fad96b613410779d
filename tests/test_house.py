"""The shape of the code: text-only code under lmprobe/lm, no import circles, old paths still work.

Imports are read from the source (every `import` and `from ... import`, also those inside
functions), so a lazy import that would close a circle or pull a domain into the core is caught
even when no test happens to execute it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("lmprobe", "vision", "toy")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        if (ROOT / package).is_dir():
            found.update({module_name(p): p for p in (ROOT / package).rglob("*.py")})
    return found


def imports_of(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The project modules `path` imports: `from a.b import c` names a.b.c when that is a module."""
    is_package = path.name == "__init__.py"
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return {t for t in targets if t in modules and t != name}


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(path, name, modules) for name, path in modules.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_circle_finder_sees_a_planted_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    assert circles(import_graph()) == []


def test_the_core_imports_no_domain():
    """lmprobe/ outside lmprobe/lm/ is what every domain uses: it imports neither text nor vision."""
    offenders = {
        name: sorted(t for t in targets if t.startswith(("lmprobe.lm", "vision", "toy")))
        for name, targets in import_graph().items()
        if name.startswith("lmprobe") and not name.startswith("lmprobe.lm")
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_text_only_packages_live_under_lm():
    for moved in ("corpora", "packing", "store", "tokenizer"):
        assert (ROOT / "lmprobe" / "lm" / "data" / f"{moved}.py").is_file()
        assert not (ROOT / "lmprobe" / "data" / f"{moved}.py").exists()
    assert (ROOT / "lmprobe" / "lm" / "suites" / "build.py").is_file()
    assert (ROOT / "lmprobe" / "lm" / "assets" / "gpt2" / "vocab.json").is_file()


def test_old_import_paths_warn_and_give_the_same_modules():
    code = (
        "import warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    import lmprobe.data.store as old_store\n"
        "    from lmprobe.suites import build_suite as old_build\n"
        "    from lmprobe.report import visible_token\n"
        "import lmprobe.lm.data.store as new_store\n"
        "from lmprobe.lm.suites import build_suite\n"
        "assert old_store is new_store and old_build is build_suite\n"
        "assert visible_token(' the') == '\\u2423the'\n"
        "messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]\n"
        "assert any('lmprobe.data moved to lmprobe.lm.data' in m for m in messages), messages\n"
        "assert any('lmprobe.suites moved to lmprobe.lm.suites' in m for m in messages), messages\n"
        "assert any('visible_token moved' in m for m in messages), messages\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_text_domain_contributes_the_suite_command():
    from lmprobe.cli import build_parser

    help_text = build_parser().format_help()
    assert "suite" in help_text and "mine" in help_text
