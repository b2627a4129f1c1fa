"""The house by floors: every import of ours points down, read from the code itself.

    installation            the roof: CLI, supervisor, control services, demo, reports
    capture engine audio_out the roles: each imports the ground floor and itself
    ground                  the ground floor: imports nothing of ours

Imports inside functions count too (a lazy import is still an arrow). The one
arrow across the roles is the offline training tool, which ARCHITECTURE.md
lets import engine and capture: it is allowed by its location, so moving it
beside the engine (``training/``) keeps this test true.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GROUND, ROLES, ROOF = "ground", ("capture", "engine", "audio_out"), "installation"
OURS = (GROUND, *ROLES, ROOF)
#: Modules (by prefix) that may import another role: offline tools, not the running roles.
OFFLINE_TOOLS = {"engine.diffusion.training": {"capture"}, "training": {"capture", "engine"}}


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
        return target in ROLES
    for tool, reaches in OFFLINE_TOOLS.items():
        if (importer == tool or importer.startswith(tool + ".")) and target in reaches:
            return True
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
    assert allowed("engine.diffusion.training.features", "capture.encoders")
    assert allowed("installation.cli", "engine.config") and allowed("capture.loop", "ground.events")
