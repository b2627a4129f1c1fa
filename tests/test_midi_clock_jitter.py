"""benchmarks/midi_clock_jitter.py: a one-second run's JSON and its pulse count.

Behaviour only: the pulses sent are the ones the tempo puts in the time played, and the
report has the figures and the verdict the README quotes. No timing threshold is
asserted here (the benchmark measures them; a busy test machine would only flake).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "midi_clock_jitter.py"


def test_a_short_run_reports_every_pulse_the_tempo_puts_in_the_time_played() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--seconds", "0.5", "--warmup", "0.1",
                           "--bpm", "120", "174", "--load", "0", "--json"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1), done.stderr  # 1: a target missed on a busy machine
    report = json.loads(done.stdout)
    assert report["wire_included"] is False
    assert report["seconds"] == 0.5 and report["warmup_s"] == 0.1
    assert [(run["bpm"], run["condition"]) for run in report["runs"]] == [
        (120.0, "idle"), (174.0, "idle")]
    for run in report["runs"]:
        assert run["ideal_interval_ms"] == round(60_000 / (24 * run["bpm"]), 4)
        played_s = run["played_samples"] / report["sample_rate"]
        assert played_s >= 0.6
        # 24 pulses a quarter note from the first downbeat (sample 0) to the end played
        due = math.floor(played_s * run["bpm"] / 60 * 24 + 1e-9) + 1
        assert run["expected_pulses"] == due
        assert run["pulses"] == due and run["skipped_pulses"] == 0
        assert run["start_sent"] is True
        assert 0 < run["measured_pulses"] < run["pulses"]  # the warm-up's are left out
        assert set(run["interval_error_ms"]) == {"median", "p95", "p99", "max"}
        assert set(run["lateness_ms"]) == {"median", "p99", "max"}
        assert all(isinstance(v, float) for v in run["interval_error_ms"].values())
        assert isinstance(run["drift_ms"], float) and isinstance(run["drift_ppm"], float)
    verdict = report["verdict"]
    assert verdict["passed"] is (done.returncode == 0)
    assert set(verdict["targets"]) == {f"{kind}, {bpm} bpm, idle" for bpm in (120, 174)
                                       for kind in ("interval error p99", "interval error max",
                                                    "drift")}
    assert verdict["targets"]["interval error p99, 120 bpm, idle"]["limit"] == 1.0


def test_a_bad_option_is_refused_naming_it() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--seconds", "0"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "--seconds" in done.stderr
