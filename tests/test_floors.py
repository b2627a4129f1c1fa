"""The house by floors: every import of ours points down, read from the code itself.

    installation             the roof: CLI, supervisor, control services, demo, reports
    training                 the offline tool beside the engine: may use engine and capture
    capture engine audio_out the roles: each imports the ground floor and itself
    ground                   the ground floor: imports nothing of ours

Imports inside functions count too (a lazy import is still an arrow), and so do
imports for type checking only. No two modules of ours import each other, even
through others (a cycle is one design that should be two, or one module).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GROUND, ROLES, TOOLS, ROOF = "ground", ("capture", "engine", "audio_out"), ("training",), \
    "installation"
OURS = (GROUND, *ROLES, *TOOLS, ROOF)


def imports_of_ours(package: str) -> list[tuple[str, str, int]]:
    """(importing module, imported module, line) for every import of our packages."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found += [(module, name, node.lineno) for name in names
                      if name.split(".")[0] in OURS]
    return found


def allowed(importer: str, imported: str) -> bool:
    """Whether ``importer`` may import ``imported`` under the floors above."""
    source, target = importer.split(".")[0], imported.split(".")[0]
    if source == target or target == GROUND:
        return True
    if source == ROOF:
        return target in ROLES or target in TOOLS
    if source in TOOLS:
        return target in ROLES
    return False


@pytest.mark.parametrize("package", OURS)
def test_every_import_points_down(package: str) -> None:
    upward = [f"{importer}:{line} imports {imported}"
              for importer, imported, line in imports_of_ours(package)
              if not allowed(importer, imported)]
    assert upward == []


def test_the_floor_rule_refuses_what_it_should() -> None:
    assert not allowed("ground.transport", "installation.config")
    assert not allowed("engine.server", "installation.config")
    assert not allowed("audio_out.role", "engine.config")
    assert not allowed("engine.streaming", "capture.descriptor")
    assert allowed("training.features", "capture.encoders")
    assert allowed("installation.cli", "engine.config") and allowed("capture.loop", "ground.events")


def module_graph() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports (``from a.b import c`` counts a.b.c if it is
    a module, else a.b)."""
    modules = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
               for package in OURS for p in (ROOT / package).rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {module: set() for module in modules}
    for package in OURS:
        for path in (ROOT / package).rglob("*.py"):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(
                ".__init__")
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [f"{node.module}.{alias.name}" for alias in node.names]
                else:
                    continue
                for name in names:
                    target = resolve(name) if name.split(".")[0] in OURS else None
                    if target is not None and target != module:
                        graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_through_others() -> None:
    assert cycles(module_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
