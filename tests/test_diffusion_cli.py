"""The diffusion commands and the tiny installation config, through click and the loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="needs the diffusion extra, which make test installs")
pytest.importorskip("diffusers", reason="needs the diffusion extra, which make test installs")

from click.testing import CliRunner  # noqa: E402

from engine.generators.diffusion.cli import bench_commands, commands  # noqa: E402
from engine.generators.diffusion.testing import NUMPY_COPY_WARNING  # noqa: E402
from installation.config import load_config  # noqa: E402

pytestmark = pytest.mark.filterwarnings(NUMPY_COPY_WARNING)
ROOT = Path(__file__).resolve().parents[1]


def test_commands_are_exposed() -> None:
    from installation.cli import cli
    from training.cli import commands as training_commands

    assert [c.name for c in commands] == ["make-tiny-model", "export-onnx"]
    assert [c.name for c in training_commands] == ["validate-data", "make-tone-dataset",
                                                   "train-projection", "distill"]
    assert [c.name for c in bench_commands] == ["engine"]
    registered = set(cli.commands)  # the roof registers both, so the README's commands work
    assert {c.name for c in commands + training_commands} <= registered


def test_make_tiny_model_then_bench_json(tmp_path: Path) -> None:
    make = {c.name: c for c in commands}["make-tiny-model"]
    result = CliRunner().invoke(make, [str(tmp_path / "m"), "--embedding-dim", "130"])
    assert result.exit_code == 0, result.output
    spec = json.loads((tmp_path / "m" / "art2mus_model.json").read_text())
    assert spec["embedding_dim"] == 130
    result = CliRunner().invoke(bench_commands[0], [
        "--model", str(tmp_path / "m"), "--steps", "2", "--batch", "1,2", "--window-s", "1.28",
        "--overlap-s", "0.32", "--repeats", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert [row["batch"] for row in report["batches"]] == [1, 2]
    assert all(row["realtime_factor"] > 0 and row["window_ms"] > 0 for row in report["batches"])
    assert "200 steps" in report["stock_loop"] and "DDIMScheduler" in report["stock_loop"]


def test_bench_refuses_bad_batches(tmp_path: Path) -> None:
    result = CliRunner().invoke(bench_commands[0], ["--model", str(tmp_path), "--batch", "0"])
    assert result.exit_code != 0 and "positive" in result.output


def test_tiny_installation_config_validates() -> None:
    config = load_config(ROOT / "configs" / "diffusion-tiny.toml")
    assert config.engine.generator == "diffusion"
    assert config.engine.diffusion.model == "out/tiny-model"
