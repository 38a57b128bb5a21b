"""The package's shape, checked: no import cycle, and ``ls retention/`` is the architecture.

The layer rules themselves are an import-linter contract (``pyproject.toml``, run by
``make lint``); this module adds what a layers contract cannot see: cycles inside one
layer or package, counting function-level and ``TYPE_CHECKING`` imports.
"""

from __future__ import annotations

from pathlib import Path

import grimp
import pytest

import retention

PACKAGE = Path(retention.__file__).parent


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.find_modules_directly_imported_by(node)):
            if not nxt.startswith("retention"):
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for module in sorted(graph.modules):
        if module.startswith("retention") and module not in index:
            visit(module)
    return out


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph("retention", include_external_packages=False)


def test_no_import_cycle_anywhere(graph: grimp.ImportGraph) -> None:
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_cycles() -> None:
    g = grimp.ImportGraph()
    for m in ("retention.a", "retention.b", "retention.c"):
        g.add_module(m)
    g.add_import(importer="retention.a", imported="retention.b")
    g.add_import(importer="retention.b", imported="retention.a")
    g.add_import(importer="retention.b", imported="retention.c")
    assert _cycles(g) == [["retention.a", "retention.b"]]


def test_top_level_shows_the_architecture() -> None:
    """The pure core flat at the top, one subpackage per kind of I/O."""
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__", "__main__"}
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    # A new module doing I/O belongs in the subpackage of its kind of I/O (or a new one);
    # see ARCHITECTURE.md before adding a top-level module.
    assert modules == {"errors", "folders", "model", "plan", "planner", "report",
                       "result"}
    assert {"adapters", "archive", "cli", "config", "run", "service", "state",
            "testing"} <= packages


def test_every_module_says_what_it_owns() -> None:
    missing = [str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
               if p.stat().st_size and not p.read_text(encoding="utf-8").lstrip().startswith('"""')]
    assert missing == []
