"""A non-editable install carries configs/ and the systemd units, and runs from them.

The wheel is built from a copy of the source (a build in the tree would write build/ and
*.egg-info where other runs read), installed with ``pip --target`` and run with only that
folder on PYTHONPATH, from a folder outside the repo: what it finds is the installed copy's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from installation.cli import configs_dir

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ground", "installation", "engine", "capture", "audio_out", "training")
CONFIGS = ROOT / "configs"


def _data_files() -> list[Path]:
    """configs/*.toml and the systemd units, relative to configs/."""
    files = [*CONFIGS.glob("*.toml"), *(CONFIGS / "systemd").glob("*.service")]
    return sorted(path.relative_to(CONFIGS) for path in files)


def _modules() -> list[str]:
    """Every module of our packages in the tree, as its path inside a wheel."""
    return sorted(path.relative_to(ROOT).as_posix() for package in PACKAGES
                  for path in (ROOT / package).rglob("*.py") if "__pycache__" not in path.parts)


def _pip(*args: str, cwd: Path | None = None) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
                   check=True, cwd=cwd, timeout=120)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of a copy of the source tree (offline, setuptools from this venv)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in (*PACKAGES, "configs"):
        shutil.copytree(ROOT / name, source / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(out), str(source))
    (built,) = out.glob("art2mus-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install --target``: the package folder a non-editable install makes."""
    target = tmp_path_factory.mktemp("target")
    _pip("install", "--no-deps", "--no-index", "--target", str(target), str(wheel))
    return target


def _run_installed(target: Path, *args: str) -> str:
    """Run ``args`` with only the installed copy of our packages importable, outside the repo."""
    outside = target.parent / f"{target.name}-cwd"
    outside.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run(args, cwd=outside, env=env, capture_output=True, text=True,
                          check=True, timeout=60)
    return done.stdout


def test_the_source_tree_reads_the_top_level_configs() -> None:
    # this venv's install is editable (`make`): no packaged copy, the repo's own folder
    assert configs_dir() == CONFIGS
    assert (configs_dir() / "demo.toml").is_file()


@pytest.mark.slow
def test_the_wheel_carries_configs_units_and_every_module(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for relative in _data_files():
            inside = f"installation/configs/{relative.as_posix()}"
            assert inside in names
            assert archive.read(inside) == (CONFIGS / relative).read_bytes()
    assert {"installation/configs/demo.toml",
            "installation/configs/systemd/art2mus@.service"} <= names
    # pyproject.toml lists the packages (find cannot see the mapped configs): none is left out
    assert [module for module in _modules() if module not in names] == []


@pytest.mark.slow
def test_an_installed_copy_finds_its_own_demo_config(installed: Path) -> None:
    packaged = installed / "installation" / "configs"
    where = _run_installed(installed, sys.executable, "-c",
                           "import installation.cli as c; print(c.__file__); "
                           "print(c.configs_dir())").split("\n")
    assert Path(where[0]).is_relative_to(installed)
    assert Path(where[1]) == packaged and not packaged.is_relative_to(ROOT)
    # the console script: `art2mus demo --help` shows the installed default, which validates
    script = installed / "bin" / "art2mus"
    shown = "".join(_run_installed(installed, str(script), "demo", "--help").split())
    assert "".join(str(packaged / "demo.toml").split()) in shown
    checked = _run_installed(installed, str(script), "check-config", str(packaged / "demo.toml"))
    assert checked.startswith(f"{packaged / 'demo.toml'}: OK")
