"""Heavy imports stay where they are needed."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("package", ["audio_out", "capture", "installation", "engine"])
def test_packages_import_without_torch(package: str) -> None:
    code = (f"import sys, {package}, {package}.config; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("module", ["audio_out.player", "capture.loop", "engine.server",
                                    "installation.cli"])
def test_role_modules_import_without_torch(module: str) -> None:
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
