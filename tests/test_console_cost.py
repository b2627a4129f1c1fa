"""benchmarks/console_cost.py's own arithmetic and command line (the run itself is the benchmark).

No figure is asserted here: the benchmark measures, the README reports.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from benchmark_scripts import load

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "console_cost.py"


def test_cpu_time_is_read_after_the_command_name_even_when_it_holds_parentheses() -> None:
    cost = load("console_cost")
    ticks = os.sysconf("SC_CLK_TCK")
    fields = ["S"] + ["0"] * 10 + [str(3 * ticks), str(ticks)] + ["7"] * 30
    text = f"1234 (python (x) y) {' '.join(fields)}\n"
    assert cost.stat_cpu_seconds(text) == pytest.approx(4.0)
    assert cost.cpu_seconds(os.getpid()) > 0.0


@pytest.mark.parametrize(("args", "named"), [
    (["--seconds", "0"], "--seconds"),
    (["--repeats", "0"], "--repeats"),
    (["--warmup", "-1"], "--warmup"),
])
def test_bad_options_are_refused_naming_the_option(args: list[str], named: str) -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert named in done.stderr, done.stderr


def test_help_says_what_is_measured() -> None:
    done = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0
    assert "--seconds" in done.stdout and "--json" in done.stdout
