"""A non-editable install carries configs/ and the systemd units, and runs from them; the
optional parts are extras, and a copy installed without them still runs the demo.

The wheel is built from a copy of the source (a build in the tree would write build/ and
*.egg-info where other runs read), installed with ``pip --target`` and run with only that
folder on PYTHONPATH, from a folder outside the repo: what it finds is the installed copy's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from installation.cli import configs_dir

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ground", "installation", "engine", "capture", "audio_out", "training")
CONFIGS = ROOT / "configs"
#: Optional parts, each an extra, and the module whose absence each one explains.
EXTRAS = {"audio": ("sounddevice", "sounddevice"), "midi": ("python-rtmidi", "rtmidi"),
          "osc": ("python-osc", "pythonosc"), "link": ("aalink", "aalink"),
          "oscquery": ("zeroconf", "zeroconf")}
#: Extras of several packages: extra -> {package: module}.
GROUPED_EXTRAS = {"console": {"starlette": "starlette", "uvicorn": "uvicorn"}}


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


def _requirement_name(requirement: str) -> str:
    """``"python-rtmidi>=1.5"`` -> ``"python-rtmidi"``."""
    for mark in "<>=!~[; ":
        requirement = requirement.split(mark)[0]
    return requirement.strip().lower()


def test_optional_parts_are_extras_and_python_versions_are_stated() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    base = {_requirement_name(r) for r in project["dependencies"]}
    extras = project["optional-dependencies"]
    for extra, (package, _) in EXTRAS.items():
        assert package not in base, f"{package} must be the {extra!r} extra, not a dependency"
        assert {_requirement_name(r) for r in extras[extra]} == {package}
    for extra, packages in GROUPED_EXTRAS.items():
        assert not set(packages) & base, f"{set(packages) & base} must be the {extra!r} extra"
        assert {_requirement_name(r) for r in extras[extra]} == set(packages)
    assert {"diffusion", "encoders", "room"} <= set(extras)
    assert "torch" not in base and "onnxruntime" not in base
    assert project["requires-python"] == ">=3.11"
    versions = {c.rsplit(" :: ", 1)[1] for c in project["classifiers"]
                if c.startswith("Programming Language :: Python :: 3.")}
    assert versions == {"3.11", "3.12"}
    # make setup installs every extra, so make test and make demo keep working
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert '-e ".[room]"' in makefile
    assert '-e ".[room,test,lint,diffusion,encoders,ray]"' in makefile


@pytest.mark.slow
def test_the_wheel_metadata_puts_optional_parts_behind_extras(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        metadata = Parser().parsestr(archive.read(name).decode("utf-8"))
    requires = metadata.get_all("Requires-Dist") or []
    unconditional = {_requirement_name(r) for r in requires if "extra ==" not in r}
    for extra, (package, _) in EXTRAS.items():
        assert package not in unconditional
        assert any(_requirement_name(r) == package and f'extra == "{extra}"' in r
                   for r in requires), (extra, requires)
    for extra, packages in GROUPED_EXTRAS.items():
        for package in packages:
            assert package not in unconditional
            assert any(_requirement_name(r) == package and f'extra == "{extra}"' in r
                       for r in requires), (extra, requires)
    assert metadata["Requires-Python"] == ">=3.11"
    assert "Programming Language :: Python :: 3.12" in (metadata.get_all("Classifier") or [])


#: Run before anything else in every process of the installed copy (children inherit
#: PYTHONPATH): the optional modules are absent, as on a gallery installed without extras.
_WITHOUT_EXTRAS = """import sys
for name in {modules!r}:
    sys.modules[name] = None  # `import name` now raises ImportError
"""


@pytest.mark.slow
def test_an_installed_copy_without_extras_runs_the_demo(installed: Path,
                                                        tmp_path: Path) -> None:
    blocker = tmp_path / "without-extras"
    blocker.mkdir()
    modules = [module for _, module in EXTRAS.values()]
    modules += [m for grouped in GROUPED_EXTRAS.values() for m in grouped.values()]
    (blocker / "sitecustomize.py").write_text(_WITHOUT_EXTRAS.format(modules=modules))
    short = tmp_path / "short-demo.toml"
    # the demo's console stays asked for: without its extra it is said unavailable, once
    text = (installed / "installation" / "configs" / "demo.toml").read_text(encoding="utf-8")
    assert 'listen = "127.0.0.1:8080"' in text
    short.write_text(text.replace('listen = "127.0.0.1:8080"', 'listen = "127.0.0.1:0"'),
                     encoding="utf-8")
    from installation.config import config_from_dict, freeze_config, load_config

    raw = load_config(short).to_toml_dict()
    raw["network"] = {"views": "tcp://127.0.0.1:5991", "chunks": "tcp://127.0.0.1:5992",
                      "clock": "tcp://127.0.0.1:5993", "control": "tcp://127.0.0.1:5994"}
    raw["rooms"][0]["audio_out"] |= {"output": "auto", "stop_after_s": 4.0}
    frozen = freeze_config(config_from_dict(raw), tmp_path / "short-demo.json")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": f"{blocker}{os.pathsep}{installed}"}
    outside = tmp_path / "cwd"
    outside.mkdir()
    done = subprocess.run([str(installed / "bin" / "art2mus"), "demo", "--config", str(frozen),
                           "--out", str(out)], cwd=outside, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "demo.wav").stat().st_size > 0
    # 'auto' output without the audio extra: the null sink, said once in audio_out's log
    logs = "".join(path.read_text(encoding="utf-8", errors="replace")
                   for path in (out / "logs").rglob("*") if path.is_file())
    assert "sounddevice package is not installed" in logs and "null sink" in logs
    assert "pip install 'art2mus[console]'" in done.stdout + done.stderr + logs
    devices = subprocess.run([str(installed / "bin" / "art2mus"), "devices"], cwd=outside,
                             env=env, capture_output=True, text=True, timeout=60)
    assert "pip install 'art2mus[audio]'" in devices.stdout
    assert "pip install 'art2mus[midi]'" in devices.stdout
