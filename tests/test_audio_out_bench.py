"""``art2mus bench audio``: the accelerated soak, briefly."""

from __future__ import annotations

import json

from click.testing import CliRunner

from audio_out.bench import bench_commands


def test_bench_audio_prints_a_passing_report() -> None:
    (command,) = bench_commands
    assert command.name == "audio"
    result = CliRunner().invoke(command, ["--hours", "0.02", "--outages-per-hour", "150",
                                          "--transitions-per-hour", "300", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["simulated_hours"] == 0.02 and report["chunks"] > 100
    # the verdict's behaviour target; its callback-time targets are wall-clock: judged by hand
    assert report["underflows_unplanned"] == 0
    assert report["verdict"]["targets"]["unplanned underflows"]["met"]
    assert report["outages"] >= 1 and report["longest_hold_s"] > 1.0  # held through an outage
    assert report["underflows"] >= 1 and report["resumes"] >= 1
    assert report["callback_us"]["p99"] < report["callback_us"]["budget"]


def test_bench_resampling_run() -> None:
    (command,) = bench_commands
    result = CliRunner().invoke(command, ["--hours", "0.01", "--source-rate", "44100",
                                          "--outages-per-hour", "0", "--json"])
    report = json.loads(result.output)
    assert report["resampling"] and report["underflows"] == 0
