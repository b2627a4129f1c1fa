"""One command-line convention (issue 17): ``--config``, one meaning per word, every bench a
table + verdict (``--json`` for JSON), ``render``'s short summary, quiet progress bars."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from audio_out.bench import soak_targets
from capture.bench import capture_targets
from ground.cli_report import Target, progress_bar, verdict_lines, verdict_record
from installation.cli import cli, configs_dir

DEMO = configs_dir() / "demo.toml"


# -- the shared verdict -------------------------------------------------------------------


def test_a_target_is_met_on_its_side_and_unmeasured_is_neither() -> None:
    assert Target("x", 3.0, 5.0).met is True and Target("x", 6.0, 5.0).met is False
    assert Target("fps", 20.0, 15.0, at_most=False).met is True
    assert Target("nan", float("nan"), 5.0).met is False
    unmeasured = Target("gpu", None, 35.0, "ms")
    assert unmeasured.met is None and "not measured here" in unmeasured.line()
    assert verdict_record([unmeasured])["passed"] is True
    with pytest.raises(ValueError, match="limit: expected a finite number"):
        Target("x", 1.0, float("inf"))


def test_verdict_lines_name_every_missed_target() -> None:
    lines = verdict_lines([Target("a", 1.0, 2.0), Target("b", 9.0, 2.0, "ms", meaning="slow")])
    assert lines[0] == "verdict: FAIL (1 of 2 measured targets missed: b)"
    assert lines[2] == "  FAIL b: 9 ms (target <= 2 ms): slow"
    assert verdict_lines([Target("a", 1.0, 2.0)])[0].startswith("verdict: PASS")


def _soak_report(callback_max_us: float) -> dict[str, Any]:
    return {"underflows_unplanned": 0, "block": 512, "sample_rate": 48000,
            "callbacks_over_budget": 1 if callback_max_us > 10666.7 else 0,
            "callback_us": {"p50": 40.0, "p99": 120.0, "max": callback_max_us,
                            "budget": 10666.7},
            "rss_mb": {"growth": 0.5}}


def test_bench_audio_flags_a_callback_over_its_budget() -> None:
    # issue 17: a 34 ms callback against a 10.7 ms budget passed unremarked
    failed = verdict_record(soak_targets(_soak_report(34000.0)))
    assert failed["passed"] is False and failed["targets"]["callback max"]["met"] is False
    line = next(x for x in verdict_lines(soak_targets(_soak_report(34000.0)))
                if x.startswith("  FAIL callback max"))
    assert line.startswith("  FAIL callback max: 34000 µs (target <= 10666.7 µs)")
    assert "1 callback(s) would click" in line
    assert verdict_record(soak_targets(_soak_report(900.0)))["passed"] is True


def test_bench_audio_prints_a_table_and_verdict_by_default_and_json_on_request() -> None:
    args = ["bench", "audio", "--hours", "0.005", "--outages-per-hour", "0"]
    table = CliRunner().invoke(cli, args)
    assert table.exit_code == 0, table.output
    assert "art2mus bench audio" in table.stdout and "callback budget" in table.stdout
    assert any(line.startswith("verdict: ") for line in table.stdout.splitlines())
    assert "callback max" in table.stdout
    as_json = CliRunner().invoke(cli, [*args, "--json"])
    report = json.loads(as_json.stdout)
    assert set(report["verdict"]["targets"]) == {"unplanned underflows", "callback max",
                                                 "callback p99", "memory growth"}
    assert report["ok"] == report["verdict"]["passed"]
    # 18 simulated seconds end inside the first minute's warm-up: growth is not judged
    assert report["rss_mb"]["growth"] is None
    assert report["verdict"]["targets"]["memory growth"]["met"] is None
    assert report["callbacks_over_budget"] >= 0


def test_bench_generator_prints_a_table_and_verdict_or_json() -> None:
    args = ["bench", "generator", "--seconds", "0.5"]
    table = CliRunner().invoke(cli, args)
    assert table.exit_code == 0, table.output
    assert "real-time factor" in table.stdout
    assert "slowest real-time factor" in table.stdout and "verdict: " in table.stdout
    report = json.loads(CliRunner().invoke(cli, [*args, "--json"]).stdout)
    assert report["bench"] == "generator" and len(report["runs"]) == 4
    assert "slowest real-time factor" in report["verdict"]["targets"]


def test_capture_targets_judge_recall_on_the_classic_set_only() -> None:
    result = {"style": "rooms", "located": {"recall": 0.4, "precision": 0.5},
              "recognition": {"top1": 0.97, "false_match_rate": 0.0},
              "speed": {"detect_fps": 40.0}}
    record = verdict_record(capture_targets(result))
    assert record["passed"] and record["targets"]["located recall"]["met"] is None
    record = verdict_record(capture_targets(result | {"style": "classic"}))
    assert not record["passed"] and record["targets"]["located recall"]["met"] is False


# -- --config everywhere ------------------------------------------------------------------


def test_check_config_takes_config_and_the_old_positional_with_a_note() -> None:
    result = CliRunner().invoke(cli, ["check-config", "--config", str(DEMO)])
    assert result.exit_code == 0 and result.stdout.startswith(f"{DEMO}: OK")
    assert result.stderr == ""
    old = CliRunner().invoke(cli, ["check-config", str(DEMO)])
    assert old.exit_code == 0 and old.stdout.startswith(f"{DEMO}: OK")
    assert old.stderr == (f"check-config: the positional PATH is deprecated; use "
                          f"'check-config --config {DEMO}'\n")
    both = CliRunner().invoke(cli, ["check-config", "--config", str(DEMO), str(DEMO)])
    assert both.exit_code == 2 and "give the config once" in both.output
    missing = CliRunner().invoke(cli, ["check-config"])
    assert missing.exit_code == 2 and "Missing option '--config'" in missing.output


def test_every_command_that_reads_a_config_spells_it_config() -> None:
    def walk(group: Any, prefix: str = "") -> list[tuple[str, Any]]:
        found = []
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                found += walk(command, f"{prefix}{name} ")
            else:
                found.append((f"{prefix}{name}", command))
        return found

    for name, command in walk(cli):
        for param in command.params:
            # a config file is never a positional argument, nor another option name
            if "config" in (param.name or ""):
                assert "--config" in getattr(param, "opts", []) or param.name == "path", name


# -- one word, one meaning ----------------------------------------------------------------


def test_steps_means_sampling_steps_and_train_steps_optimiser_steps() -> None:
    commands = dict(cli.commands)
    for name in ("train-projection", "distill"):
        options = {opt for p in commands[name].params if not getattr(p, "hidden", False)
                   for opt in p.opts}
        assert "--train-steps" in options, name
    assert "--steps" in {o for p in commands["distill"].params for o in p.opts}
    result = CliRunner().invoke(cli, ["train-projection", "--model", ".", "--data", ".",
                                      "--out", "x", "--steps", "300"])
    assert result.exit_code == 2
    assert "--steps is now --train-steps here (--train-steps 300: optimiser steps)" \
        in result.output


# -- render: a short summary --------------------------------------------------------------


def test_render_prints_a_short_summary_and_json_on_request(tmp_path: Path) -> None:
    image = tmp_path / "painting.png"
    picture = np.full((240, 320, 3), (40, 90, 200), np.uint8)
    cv2.rectangle(picture, (60, 40), (260, 200), (20, 200, 240), -1)
    cv2.imwrite(str(image), picture)
    out = tmp_path / "preview.wav"
    result = CliRunner().invoke(cli, ["render", str(image), "--seconds", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) <= 6 and lines[0].startswith("render: ")
    assert lines[1].startswith("  music: ") and " bpm, " in lines[1]
    assert lines[2].startswith("  instruments: ")
    assert "LUFS" in lines[3] and lines[-1] == f"  wrote {out}"
    record = json.loads(CliRunner().invoke(cli, ["render", str(image), "--seconds", "1",
                                                 "--out", str(out), "--json"]).stdout)
    assert record["decisions"]["key"] in lines[1] and record["out"] == str(out)
    assert record["loudness_lufs"] is not None and record["loudness_lufs"] < 0


# -- progress bars -------------------------------------------------------------------------


def test_progress_bars_are_quiet_when_stderr_is_not_a_terminal(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    with progress_bar() as update:
        assert update is None
    with progress_bar(True, unit="scenes") as update:
        assert update is not None
        update("scenes", 1, 2)
        update("scenes", 2, 2)
    assert "scenes" in capsys.readouterr().err


def test_a_long_render_shows_its_progress_to_a_person(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import ground.cli_report

    image = tmp_path / "flat.png"
    cv2.imwrite(str(image), np.full((120, 160, 3), 128, np.uint8))
    monkeypatch.setattr(ground.cli_report, "stderr_is_terminal", lambda: True)
    result = CliRunner().invoke(cli, ["render", str(image), "--seconds", "31", "--out",
                                      str(tmp_path / "long.wav")])
    assert result.exit_code == 0, result.output
    assert "31/31" in result.stderr  # the bar, on stderr, reached the end
    short = CliRunner().invoke(cli, ["render", str(image), "--seconds", "2", "--out",
                                     str(tmp_path / "short.wav")])
    assert "/2" not in short.stderr  # 30 s or less: no bar
