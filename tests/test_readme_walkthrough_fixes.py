"""What an auditor following README.md literally ran into, fixed and kept fixed.

- ``pip install .`` leaves out tinysoundfont (it cannot be declared: its metadata needs
  PyAudio): the engine says so as a dependency error naming the install line, which the
  supervisor stops restarting and ``check-config --deep`` lists as one failed line.
- ``art2mus devices`` lists what configs name: cameras and MIDI inputs too.
- ``art2mus render`` on a painting's own image describes the whole image, not a detail
  the quad finder traced inside it (``--whole`` forces it).
- The end-of-run summary lines never print ``None``.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from ground.errors import DependencyError
from installation.cli import _locate_painting, cli, configs_dir

DEMO = configs_dir() / "demo.toml"
INSTALL_LINE = 'pip install --no-deps "tinysoundfont>=0.3.7"'
ROOT = Path(__file__).resolve().parent.parent


# -- tinysoundfont missing ----------------------------------------------------------------


def test_a_missing_synth_is_a_dependency_error_naming_its_install_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.config import EngineConfig
    from engine.generators import make_generator

    monkeypatch.setitem(sys.modules, "tinysoundfont", None)  # `import tinysoundfont` fails
    with pytest.raises(DependencyError, match=f"needs tinysoundfont.*{INSTALL_LINE}"):
        make_generator(EngineConfig())


def test_check_config_deep_lists_a_missing_synth_as_one_failed_line(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tinysoundfont", None)
    result = CliRunner().invoke(cli, ["check-config", "--deep", "--config", str(DEMO)])
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    assert result.exit_code == 2, result.output
    failed = [line for line in result.output.splitlines()
              if line.startswith("engine.procedural.soundfont:")]
    assert len(failed) == 1 and INSTALL_LINE in failed[0], result.output


def test_the_engine_role_without_the_synth_exits_with_the_dependency_code(
        tmp_path: Path) -> None:
    # a child process, as the supervisor runs it: exit code 4 is what it counts towards
    # max_config_failures (a ModuleNotFoundError was a crash, restarted forever)
    (tmp_path / "sitecustomize.py").write_text(
        "import sys; sys.modules['tinysoundfont'] = None\n")
    config = tmp_path / "engine.toml"
    config.write_text("[installation]\noutput_dir = " + json.dumps(str(tmp_path / "out")) +
                      "\n[network]\n" + "".join(
                          f'{name} = "tcp://127.0.0.1:{5861 + offset}"\n'
                          for offset, name in enumerate(["views", "chunks", "clock",
                                                         "control"])) +
                      '\n[[rooms]]\nid = "a"\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]))
    done = subprocess.run([sys.executable, "-m", "installation", "engine", "--config",
                           str(config)], capture_output=True, text=True, env=env, timeout=120,
                          cwd=ROOT)
    assert done.returncode == DependencyError.exit_code, done.stderr[-2000:]
    messages = [json.loads(line)["message"] for line in done.stdout.splitlines()
                if line.startswith("{")]  # the role logs JSON lines
    assert any(INSTALL_LINE in message for message in messages), done.stdout
    assert "Traceback" not in done.stdout + done.stderr


# -- devices ------------------------------------------------------------------------------


def _fake_rtmidi(outputs: list[str], inputs: list[str]) -> types.ModuleType:
    module = types.ModuleType("rtmidi")

    class _Port:
        def __init__(self, ports: list[str]) -> None:
            self._ports = ports

        def get_ports(self) -> list[str]:
            return list(self._ports)

    module.MidiOut = lambda: _Port(outputs)  # type: ignore[attr-defined]
    module.MidiIn = lambda: _Port(inputs)  # type: ignore[attr-defined]
    return module


def _fake_sounddevice(names: list[str]) -> types.ModuleType:
    module = types.ModuleType("sounddevice")
    module.query_devices = lambda: [  # type: ignore[attr-defined]
        {"name": n, "max_output_channels": 2, "default_samplerate": 48000.0} for n in names]
    return module


def test_devices_lists_cameras_and_midi_inputs_as_the_readme_says(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import capture.sources

    monkeypatch.setattr(capture.sources, "camera_names",
                        lambda: {0: "Logitech C920", 1: "Logitech C920"})
    monkeypatch.setitem(sys.modules, "rtmidi", _fake_rtmidi(["Midi Through 14:0"],
                                                            ["nanoKONTROL2 20:0"]))
    monkeypatch.setitem(sys.modules, "sounddevice", _fake_sounddevice(["USB Audio"]))
    result = CliRunner().invoke(cli, ["devices"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("cameras (2 video nodes") and "  0: Logitech C920" in lines
    assert "MIDI outputs (1): Midi Through 14:0" in lines
    assert "MIDI inputs (1): nanoKONTROL2 20:0" in lines
    assert "audio outputs (1):" in lines


def test_devices_says_when_a_kind_has_none(monkeypatch: pytest.MonkeyPatch) -> None:
    import capture.sources

    monkeypatch.setattr(capture.sources, "camera_names", lambda: {})
    monkeypatch.setitem(sys.modules, "rtmidi", _fake_rtmidi([], []))
    monkeypatch.setitem(sys.modules, "sounddevice", _fake_sounddevice([]))
    output = CliRunner().invoke(cli, ["devices"]).output
    assert output.splitlines()[0].startswith("cameras: none found")
    assert "audio outputs (0): none" in output
    assert "MIDI outputs (0): none" in output and "MIDI inputs (0): none" in output
    monkeypatch.setitem(sys.modules, "rtmidi", None)  # python-rtmidi not installed
    assert "python-rtmidi is not installed" in CliRunner().invoke(cli, ["devices"]).output


# -- render: the painting, or the whole image ---------------------------------------------


def _picture(path: Path, corner: tuple[int, int], size: tuple[int, int]) -> Path:
    """A flat image with one lighter rectangle: the quad finder traces it."""
    picture = np.full((480, 640, 3), (40, 90, 200), np.uint8)
    x, y = corner
    cv2.rectangle(picture, (x, y), (x + size[0], y + size[1]), (20, 200, 240), -1)
    cv2.imwrite(str(path), picture)
    return path


def _render(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["render", *args, "--seconds", "1", "--json"])
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.stdout))


def test_render_describes_the_whole_image_when_the_only_quad_is_a_small_detail(
        tmp_path: Path) -> None:
    image = _picture(tmp_path / "detail.png", (280, 200), (80, 60))  # ~1.7 % of the image
    record = _render(str(image), "--out", str(tmp_path / "a.wav"))
    assert record["located"] is None
    assert record["described"].startswith("whole image (the quad found, 1.")
    # the benchmarks' path (benchmarks/correspondence.py) takes the same decision
    assert _locate_painting(cv2.imread(str(image)), None, 640) == (None, None)
    summary = CliRunner().invoke(cli, ["render", str(image), "--seconds", "1", "--out",
                                       str(tmp_path / "b.wav")])
    assert summary.stdout.splitlines()[0].startswith("render: described the whole image")
    assert "under 5%" in summary.stderr


def test_render_describes_a_large_quad_as_the_painting_and_whole_on_request(
        tmp_path: Path) -> None:
    image = _picture(tmp_path / "wall.png", (120, 90), (400, 300))
    record = _render(str(image), "--out", str(tmp_path / "a.wav"))
    assert record["described"] == "painting" and record["located"]["fraction"] > 0.3
    lines = CliRunner().invoke(cli, ["render", str(image), "--seconds", "1", "--out",
                                     str(tmp_path / "b.wav")]).stdout.splitlines()
    assert "% of the image)" in lines[0]
    whole = _render(str(image), "--out", str(tmp_path / "c.wav"), "--whole")
    assert whole["located"] is None and whole["described"] == "whole image (--whole)"
    assert whole["decisions"] != record["decisions"]


# -- summaries without None ---------------------------------------------------------------


def test_the_demo_figures_say_no_chunks_and_no_transitions_in_words() -> None:
    from installation.demo import figures_line

    line = figures_line({
        "wall_s": 15.8, "audio": {"seconds": 0.0, "integrated_lufs": None, "peak_dbfs": None,
                                  "longest_silence_s": 0.0, "join_roughness": None},
        "generator_realtime_factor": None, "transition_delay_s": {"max": None, "mean": None},
        "first_artwork_heard_after_s": None})
    assert "None" not in line
    assert "no chunks made" in line and "no transitions heard" in line
    short = figures_line({
        "wall_s": 12.0, "audio": {"seconds": 10.0, "integrated_lufs": -18.1},
        "generator_realtime_factor": 9.5, "transition_delay_s": {"max": None, "mean": None},
        "first_artwork_heard_after_s": 2.4})
    assert "generator 9.5x real time" in short and "-18.1 LUFS" in short
    assert "no transitions heard (first artwork, during start-up: 2.4 s)" in short


def test_the_run_summary_says_no_chunks_made_instead_of_none() -> None:
    from rich.console import Console

    from installation.report import print_run_summary

    out = io.StringIO()
    print_run_summary({"wall_s": 3.0, "chunks": 0, "generator_realtime_factor": None,
                       "transition_delay_s": {"max": None, "mean": None},
                       "role_restarts": {}, "rooms": {}}, None,
                      Console(file=out, width=200))
    text = out.getvalue()
    assert "no chunks made" in text and "None" not in text
