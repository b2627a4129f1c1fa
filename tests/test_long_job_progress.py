"""Long jobs show their progress to a person and nothing to a log: ONNX export, the latent
cache of training and distillation, and the spinner of one opaque step (export-encoder).

The convention is :mod:`ground.cli_report`'s (tests/test_cli_convention.py holds its own
tests); here each long job is checked to use it: a bar that reaches its end when stderr
is a terminal, silence when it is not.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import ground.cli_report
from engine.generators.diffusion.testing import NUMPY_COPY_WARNING
from ground.cli_report import working
from installation.cli import cli

WINDOW_S = 1.28


def test_the_spinner_of_one_opaque_step_is_quiet_off_a_terminal(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    with working("exporting the encoder"):
        pass
    assert capsys.readouterr().err == ""
    with working("exporting the encoder", enabled=True):
        pass
    shown = capsys.readouterr().err
    assert "exporting the encoder" in shown and "0:00:0" in shown  # message, time elapsed


def test_onnx_export_shows_one_step_per_part_on_a_terminal(
        tiny_model_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnx", reason="needs the diffusion extra, which make test installs")
    monkeypatch.setattr(ground.cli_report, "stderr_is_terminal", lambda: True)
    out = tmp_path / "onnx"
    result = CliRunner().invoke(cli, ["export-onnx", str(tiny_model_folder), str(out),
                                      "--window-s", str(WINDOW_S)])
    assert result.exit_code == 0, result.output
    assert "exporting to ONNX" in result.stderr and "3/3" in result.stderr
    assert json.loads(result.stdout)["window_frames"] == 32
    assert sorted(p.name for p in out.glob("*.onnx")) == ["unet.onnx", "vae_decoder.onnx",
                                                          "vocoder.onnx"]


def test_onnx_export_is_quiet_off_a_terminal(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch", reason="needs the diffusion extra, which make test installs")
    from engine.generators.diffusion import onnx_backend

    calls: list[Any] = []

    def export(model_dir: Path, out_dir: Path, **options: Any) -> dict[str, Any]:
        calls.append(options["progress"])
        return {"window_frames": 32}

    monkeypatch.setattr(onnx_backend, "export_onnx", export)
    monkeypatch.setattr(ground.cli_report, "stderr_is_terminal", lambda: False)
    model = tmp_path / "model"
    model.mkdir()
    result = CliRunner().invoke(cli, ["export-onnx", str(model), str(tmp_path / "onnx")])
    assert result.exit_code == 0, result.output
    assert calls == [None] and result.stderr == ""


@pytest.mark.filterwarnings(NUMPY_COPY_WARNING)
def test_the_latent_cache_shows_its_files_on_a_terminal_and_nothing_off_one(
        training_model_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("diffusers", reason="needs the diffusion extra, which make test installs")
    from engine.generators.diffusion.model import load_model
    from training.cache import CACHING
    from training.projection import ProjectionConfig, prepare_data
    from training.testing import tone_dataset_dir

    source = tone_dataset_dir(tmp_path / "datasets", 4, 0.32, val_count=1)
    data = tmp_path / "data"
    shutil.copytree(source, data, ignore=shutil.ignore_patterns(".art2mus-cache"))
    model = load_model(training_model_folder)
    config = ProjectionConfig(clip_s=0.32)

    monkeypatch.setattr(ground.cli_report, "stderr_is_terminal", lambda: True)
    train, _ = prepare_data(model, data, "descriptor", tmp_path / "cache", config, progress=True)
    shown = capsys.readouterr().err
    assert CACHING in shown and "4/4" in shown and len(train) > 0

    # asked for, but stderr is a log: nothing (and the cache, filled now, is read back)
    monkeypatch.setattr(ground.cli_report, "stderr_is_terminal", lambda: False)
    again, _ = prepare_data(model, data, "descriptor", tmp_path / "cache", config, progress=True)
    assert capsys.readouterr().err == ""
    assert again.latent_stats.hits == 4 and again.latent_stats.misses == 0
