"""``art2mus bench audio``: the accelerated soak, briefly."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from audio_out.bench import bench_commands, run_soak
from ground.errors import InputError
from installation.cli import cli


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


# -- every option refused out of range, before any work, with one line naming it --------

_BAD_SOAK = [(option, value)
             for option in ("--sample-rate", "--source-rate", "--block")
             for value in ("0", "-1", "1", str(10**12), "nan")] + [
    ("--sample-rate", "7999"), ("--sample-rate", "384001"), ("--block", "31"),
    ("--block", "8193"), ("--seed", "-1"), ("--seed", str(2**32)), ("--seed", "nan"),
    *[(option, value)
      for option in ("--hours", "--chunk-s", "--lead-s", "--jitter-ms", "--pauses-per-hour",
                     "--pause-max-s", "--outages-per-hour", "--transitions-per-hour")
      for value in ("-1", str(10**12), "nan", "inf")],
    ("--hours", "0"), ("--hours", "1e-9"), ("--chunk-s", "0"), ("--chunk-s", "0.05"),
    ("--lead-s", "0")]


def _refused_cleanly(result: Any, option: str, code: int = 2) -> None:
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    assert option in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(("option", "value"), _BAD_SOAK)
def test_bench_audio_refuses_an_absurd_value_naming_the_option(
        option: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("audio_out.bench.run_soak", _no_soak)
    args = ["bench", "audio", option, value] + ([] if option == "--hours" else ["--hours", "0.001"])
    _refused_cleanly(CliRunner().invoke(cli, args), option)


@pytest.mark.parametrize(("args", "option"), [
    (["--hours", "1000", "--sample-rate", "384000", "--block", "32"], "--hours"),
    (["--hours", "300", "--sample-rate", "48000", "--block", "32"], "--hours"),
    (["--hours", "1000", "--transitions-per-hour", "36000"], "--transitions-per-hour"),
    (["--hours", "1000", "--pauses-per-hour", "3600", "--outages-per-hour", "3600"], None),
])
def test_bench_audio_refuses_a_soak_too_large_to_keep_in_memory(
        args: list[str], option: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Callbacks and scheduled events follow from several options: checked in code, an
    InputError (exit 3) naming the option, before the soak starts."""
    ran: list[dict[str, Any]] = []
    monkeypatch.setattr("audio_out.bench.run_soak", lambda **kw: ran.append(kw) or _no_soak())
    result = CliRunner().invoke(cli, ["bench", "audio", *args])
    if option is None:  # 3.6 million of each: allowed (the soak itself is not run here)
        assert ran and result.exception is not None and "no soak" in str(result.exception)
        return
    _refused_cleanly(result, option, InputError.exit_code)
    assert result.output.startswith(f"Error: {option}: expected at most") and not ran
    with pytest.raises(InputError, match=option):  # the library call refuses it too
        run_soak(**{name.lstrip("-").replace("-", "_"): float(value)
                    for name, value in zip(args[::2], args[1::2], strict=True)})


def test_bench_audio_runs_at_the_edges_of_its_ranges() -> None:
    result = CliRunner().invoke(cli, [
        "bench", "audio", "--hours", "0.001", "--sample-rate", "8000", "--source-rate",
        "384000", "--block", "32", "--seed", str(2**32 - 1), "--lead-s", "60", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["resampling"] and report["block"] == 32 and report["sample_rate"] == 8000


def _no_soak(**_: Any) -> dict[str, Any]:
    raise AssertionError("no soak should run")
