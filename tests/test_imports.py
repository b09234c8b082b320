"""The import rules, checked on the source: imports flow one way (storage/ imports nothing of ours, learner/ imports
storage/, app/ imports both); inside app/ the front ends (api/, ui/, commands/) reach the application through
app/services/ and never each other, and services/ knows no web framework or argument parser; and no module of ours
imports itself back through others (function-level imports included: they are cycles waiting for an import order)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = {"storage": {"storage"}, "learner": {"storage", "learner"}, "app": {"storage", "learner", "app"}}
FRONT_ENDS = ("app.api", "app.ui", "app.commands")
NOT_IN_SERVICES = {"gradio", "fastapi", "starlette", "argparse", "app.api", "app.ui", "app.commands", "app.main"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for package in ALLOWED for p in sorted((ROOT / package).rglob("*.py"))}


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and ast.unparse(test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def imported_names(path: Path) -> set[str]:
    """Every module name `path` imports, at any depth (functions included; `if TYPE_CHECKING:` blocks left out):
    `from a.b import c` names `a.b.c` where that is a module, else `a.b`."""
    found: set[str] = set()
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    stack: list[ast.AST] = [ast.parse(path.read_text())]
    while stack:
        node = stack.pop()
        if _type_checking_only(node):
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            submodules = {f"{base}.{alias.name}" for alias in node.names} & set(MODULES)
            found |= submodules if len(submodules) == len(node.names) else submodules | {base}
        stack.extend(ast.iter_child_nodes(node))
    return found


def graph() -> dict[str, set[str]]:
    """Our modules and the modules of ours each one imports."""
    return {name: {m for m in imported_names(path) if m in MODULES and m != name} for name, path in MODULES.items()}


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_import_direction(package):
    files = list((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    for path in files:
        bad = {m.split(".")[0] for m in imported_names(path)} & set(ALLOWED) - ALLOWED[package]
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}, against the one-way rule"


def test_front_ends_meet_only_in_services():
    for name, imports in graph().items():
        mine = next((f for f in FRONT_ENDS if within(name, f)), None)
        if mine is not None:
            others = {m for m in imports if any(within(m, f) for f in FRONT_ENDS if f != mine)}
            assert not others, f"{name} imports {others}: api/, ui/ and commands/ share code through app/services/"


def test_services_know_no_front_end():
    for name, path in MODULES.items():
        if within(name, "app.services"):
            bad = {m for m in imported_names(path) if any(within(m, x) for x in NOT_IN_SERVICES)}
            assert not bad, f"{name} imports {bad}: app/services/ is what the app does, not how it is shown"


def cycle_edges(edges: dict[str, set[str]]) -> set[tuple[str, str]]:
    """The edges that lie on some cycle (both ends in one strongly connected component; Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    component: dict[str, int] = {}

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component[w] = index[v]
                if w == v:
                    break

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return {(a, b) for a in edges for b in edges[a] if component[a] == component[b]}


def test_cycle_finder_finds_cycles():
    assert cycle_edges({"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}) == {("a", "b"), ("b", "c"), ("c", "a")}


def test_no_import_cycles():
    found = sorted(cycle_edges(graph()))
    assert not found, f"import cycles among our modules (importer, imported): {found}"
