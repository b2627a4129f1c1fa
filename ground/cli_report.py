"""What every ``art2mus`` command prints for a person: verdicts against targets, progress bars.

Shared by the benches (``bench generator``, ``audio``, ``capture``, ``catalogue``,
``video``, ``engine``, ``rooms``) and the long jobs (indexing, export, latent
caching, long renders), so that one convention holds everywhere:

- a bench prints a readable table, then its verdict lines (:func:`verdict_lines`),
  and the same figures as JSON with ``--json`` (:func:`verdict_record` is the
  verdict's JSON form, under the report's ``"verdict"`` key);
- a job longer than a few seconds shows a rich progress bar on stderr, and nothing
  when stderr is not a terminal (a log file, a pipe, a test): :func:`progress_bar`.

The ground floor: imports nothing of ours (rich is imported inside the functions).
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

#: ``update(stage, done, total)``: what a long job calls to move its progress bar.
ProgressUpdate = Callable[[str, int, int], None]


@dataclass(frozen=True)
class Target:
    """One figure of a bench against its target: met when ``value`` is on the right side
    of ``limit`` (``at_most``: value <= limit, else value >= limit).

    ``value`` None means "not measured here" (no GPU, a skipped part): neither met nor
    failed, and said so in the verdict.
    """

    name: str
    value: float | None
    limit: float
    unit: str = ""
    at_most: bool = True
    #: Why a miss matters, said on the FAIL line (e.g. "over the callback's budget").
    meaning: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("Target.name: expected a non-empty name, got ''")
        if not math.isfinite(self.limit):
            raise ValueError(f"Target {self.name!r} limit: expected a finite number, "
                             f"got {self.limit!r}")

    @property
    def met(self) -> bool | None:
        """Whether the value meets the target; None when it was not measured."""
        if self.value is None:
            return None
        if not math.isfinite(self.value):
            return False
        return self.value <= self.limit if self.at_most else self.value >= self.limit

    def line(self) -> str:
        """One verdict line: ``PASS name: 12.5 ms (target <= 35 ms)``."""
        unit = f" {self.unit}" if self.unit else ""
        wanted = f"target {'<=' if self.at_most else '>='} {self.limit:g}{unit}"
        if self.value is None:
            return f"  n/a  {self.name}: not measured here ({wanted})"
        met = self.met
        label = "PASS" if met else "FAIL"
        why = f": {self.meaning}" if self.meaning and not met else ""
        return f"  {label} {self.name}: {self.value:g}{unit} ({wanted}){why}"


def verdict_passed(targets: Sequence[Target]) -> bool:
    """True when no measured target failed (unmeasured ones neither pass nor fail)."""
    return all(target.met is not False for target in targets)


def verdict_lines(targets: Sequence[Target], title: str = "verdict") -> list[str]:
    """The lines a bench prints under its table: a summary, then one line per target."""
    failed = [t for t in targets if t.met is False]
    measured = [t for t in targets if t.met is not None]
    head = (f"{title}: PASS ({len(measured)}/{len(targets)} targets measured, all met)"
            if not failed else
            f"{title}: FAIL ({len(failed)} of {len(measured)} measured targets missed: "
            f"{', '.join(t.name for t in failed)})")
    return [head, *(target.line() for target in targets)]


def verdict_record(targets: Sequence[Target]) -> dict[str, Any]:
    """The verdict as JSON: ``{"passed": bool, "targets": {name: {value, limit, ...}}}``."""
    return {"passed": verdict_passed(targets),
            "targets": {t.name: {"value": t.value, "limit": t.limit, "unit": t.unit,
                                 "at_most": t.at_most, "met": t.met} for t in targets}}


def stderr_is_terminal() -> bool:
    """Whether a person watches stderr (progress bars are drawn only then)."""
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None) and stream.isatty())


@contextlib.contextmanager
def progress_bar(enabled: bool | None = None, *, unit: str = "items"
                 ) -> Iterator[ProgressUpdate | None]:
    """A rich progress bar on stderr: yields ``update(stage, done, total)``, one bar per
    stage (done / total, rate in ``unit``/s, elapsed, time left); ``None`` when disabled.

    ``enabled`` None (the default) means "when stderr is a terminal": a log or a pipe
    gets no bar. The bar appears with the first update, so a job refused before any
    work prints its error line alone.
    """
    if enabled is None:
        enabled = stderr_is_terminal()
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                   TimeRemainingColumn(), console=Console(stderr=True))
    tasks: dict[str, Any] = {}

    def update(stage: str, done: int, total: int) -> None:
        if not bar.live.is_started:
            bar.start()
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total, rate="")
        bar.update(tasks[stage], completed=done, total=total)
        speed = bar.tasks[tasks[stage]].speed
        bar.update(tasks[stage], rate=f"{speed:.1f} {unit}/s" if speed else "")

    try:
        yield update
    finally:
        if bar.live.is_started:
            bar.stop()


@contextlib.contextmanager
def working(message: str, enabled: bool | None = None) -> Iterator[None]:
    """A spinner with ``message`` and the time elapsed on stderr while a step of unknown
    length runs (one opaque call: an ONNX export of one model); nothing when stderr is not
    a terminal (``enabled`` None) or when ``enabled`` is False."""
    if enabled is None:
        enabled = stderr_is_terminal()
    if not enabled:
        yield
        return
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=Console(stderr=True)) as spinner:
        spinner.add_task(message, total=None)
        yield


def print_table(title: str, rows: Sequence[tuple[str, str]], console: Any = None,
                columns: tuple[str, str] = ("measure", "value")) -> None:
    """A two-column rich table (measure, value) on stdout: the default bench output."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=title)
    table.add_column(columns[0])
    table.add_column(columns[1], justify="right")
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)
