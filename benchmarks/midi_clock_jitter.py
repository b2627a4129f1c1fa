"""MIDI clock out: how evenly the sender thread spaces its 24-per-quarter pulses (issue 17).

``python benchmarks/midi_clock_jitter.py [--seconds 20] [--bpm 120 174] [--load N]
[--engine-busy-ms B] [--warmup 2] [--json]`` runs the engine's real
:class:`engine.beats.MidiClockOut` (opened through :meth:`MidiClockOut.open`, so
its own sender thread on the real clock, ``time.monotonic``) against a port
stand-in whose ``send_message`` records ``time.perf_counter()`` for every
message. This process plays the engine loop's part: it observes an ideal
playhead (the sample heard now, from the clock) every ``--observe-ms`` (5 ms,
the engine turn's poll) on one 4/4 grid at each tempo.

What is measured is what we control: the scheduling of the sender thread (its
wait, its wake-up, the GIL, the OS scheduler). The wire is not included: no
rtmidi/ALSA sequencer or CoreMIDI queue, no driver, no USB (a USB-MIDI interface
adds its own 1 ms frame quantisation), no DIN serial time (320 µs per clock
byte at 31250 baud). Each tempo is run idle and, with ``--load N`` (default: one
per CPU; 0: idle only), again beside N busy processes (``while True: pass``,
each a process of its own); ``--engine-busy-ms B`` adds runs where the engine
loop's stand-in works in pure Python for B ms each turn before it observes (a
chunk generated in Python: it holds the GIL the sender thread needs to wake).
The first ``--warmup`` seconds of every run are left out.

Figures per run, against the ideal pulse interval ``60 / (24 * bpm)``:

- **interval error**: ``|interval - ideal|`` between consecutive pulses, median,
  p95, p99 and max in ms (what a receiver's tempo estimate sees);
- **lateness**: each pulse's send time less the time the playhead reached it
  (median, p99, max in ms: how far behind the music the clock runs);
- **drift**: how far the pulse train walks from the timeline over the measured
  window (the slope of a line fitted to the lateness, times the window, in ms,
  and as parts per million): pulses are placed on the timeline's samples, not
  by adding intervals, so a drift beyond the jitter would be a bug;
- **pulses** sent over the whole run and **expected** from the playhead's span
  (the run ends by freezing the playhead and letting the due pulses go out);
  the difference is **skipped** (after a stall of over 0.1 s the sender sends
  only the pulse playing now; errors and lateness are of the pulses sent, each
  against its own timeline sample).

Targets (:data:`TARGET_P99_IDLE_MS` and the others). A DAW's clock follower
smooths tempo over many pulses (1 ms of error over a 24-pulse beat at 174 bpm is
0.3 %, half a bpm), but a hardware sequencer that steps on the pulses plays
each pulse's error in its hits. So idle, p99 <= 1 ms: no more than the 1 ms
frame a USB-MIDI interface adds anyway. Under load (or a busy engine loop),
p99 <= 2 ms. Any run, max <= 5 ms: a third of a pulse at 174 bpm (14.4 ms), so
even the worst pulse is far nearer its own slot than its neighbour's. Drift <= 1
ms over the run. The exit code is 0 when every measured target is met.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.beats import PULSES_PER_QUARTER, BeatGrid, MidiClockOut, OscValue  # noqa: E402
from ground.cli_report import Target, print_table, verdict_lines, verdict_record  # noqa: E402

RATE = 48000
#: Pulse-interval error targets (ms, p99): idle, and beside busy processes.
TARGET_P99_IDLE_MS = 1.0
TARGET_P99_LOADED_MS = 2.0
#: Largest single interval error (ms), any run: a quarter of a pulse at 174 bpm.
TARGET_MAX_MS = 5.0
#: The pulse train's drift from the timeline over a run (ms, absolute).
TARGET_DRIFT_MS = 1.0
_CLOCK, _START = 0xF8, 0xFA


class RecordingPort:
    """An rtmidi ``MidiOut`` stand-in: one port, every message stamped with perf_counter."""

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self.messages: list[int] = []
        self.opened = False

    def get_ports(self) -> list[str]:
        return ["jitter bench port"]

    def open_port(self, index: int) -> None:
        self.opened = True

    def send_message(self, message: list[int]) -> None:
        self.stamps.append(time.perf_counter())
        self.messages.append(message[0])

    def close_port(self) -> None:
        self.opened = False


class _Rtmidi:
    """The rtmidi module stand-in :meth:`MidiClockOut.open` takes; remembers its port."""

    def __init__(self) -> None:
        self.port = RecordingPort()

    def MidiOut(self) -> RecordingPort:  # noqa: N802 - rtmidi's name
        return self.port


def _percentiles(values: np.ndarray) -> dict[str, float | None]:
    """Median, p95, p99 and max of ``values`` (ms), rounded to the µs."""
    if values.size == 0:
        return {"median": None, "p95": None, "p99": None, "max": None}
    return {"median": round(float(np.median(values)), 3),
            "p95": round(float(np.percentile(values, 95)), 3),
            "p99": round(float(np.percentile(values, 99)), 3),
            "max": round(float(values.max()), 3)}


class TracedClockOut(MidiClockOut):
    """The real MIDI clock out, noting each pulse's timeline sample in sending order, so a
    pulse skipped after a stall (the sender sends only the pulse playing now) is counted
    as skipped, not taken for a late one."""

    def __init__(self, room: str, sample_rate: int, send: Callable[[list[int]], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(room, sample_rate, send, clock)
        self.pulse_samples: list[float] = []

    def _messages(self, room: str, state: Any, beat: float) -> list[tuple[str, OscValue]]:
        out = super()._messages(room, state, beat)
        if out:  # a pulse (after Start, on the first): sent right after this, in this order
            self.pulse_samples.append(beat)
        return out


def _spin(seconds: float) -> None:
    """Hold the GIL for ``seconds``, as pure-Python work in the engine loop does."""
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


def measure(bpm: float, seconds: float, warmup_s: float, observe_s: float = 0.005,
            busy_s: float = 0.0, sample_rate: int = RATE) -> dict[str, Any]:
    """One run: the real sender thread at ``bpm`` for ``warmup_s + seconds``, playhead ideal.

    This thread is the engine loop: each turn waits ``observe_s`` (its poll), then works
    in Python for ``busy_s`` (holding the GIL), then observes the playhead.
    """
    rtmidi = _Rtmidi()
    clock_out = TracedClockOut.open("jitter", "room", sample_rate, rtmidi_module=rtmidi)
    assert isinstance(clock_out, TracedClockOut)
    beat = 60.0 / bpm * sample_rate
    grid = BeatGrid(anchor=0, bar_samples=4 * beat, beats_per_bar=4, key="C major",
                    tempo_bpm=bpm, meter=(4, 4), identity=("jitter", bpm))
    pulse_samples = beat / PULSES_PER_QUARTER
    run_s = warmup_s + seconds
    try:
        began = time.perf_counter()  # the playhead's sample 0 (the grid's first downbeat)
        clock_out.observe("room", grid, 0)
        while True:
            time.sleep(observe_s)
            if busy_s:
                _spin(busy_s)
            heard = int((time.perf_counter() - began) * sample_rate)
            if heard >= run_s * sample_rate:
                break
            clock_out.observe("room", None, heard)
        # the end: the playhead stops here (now: the sender may have extrapolated past the
        # last observation); the pulses due by then still go out
        end_sample = heard
        expected = int(np.floor(end_sample / pulse_samples + 1e-9)) + 1  # sample 0 included
        clock_out.observe("room", None, end_sample)
        clock_out.observe("room", None, None)
        deadline = time.perf_counter() + 1.0
        while clock_out.pulses_sent < expected and time.perf_counter() < deadline:
            time.sleep(0.01)
        # Between reading the end and telling the sender, wall time went on: a pulse due in
        # that window went out on time (the sender extrapolates the playhead), so the run
        # played up to it. Counting it as one too many failed a test once in many runs.
        last = max(clock_out.pulse_samples, default=0.0)
        if last > end_sample:
            end_sample = int(math.ceil(last))
            expected = int(np.floor(end_sample / pulse_samples + 1e-9)) + 1
    finally:
        clock_out.close()
    port = rtmidi.port
    sent = np.asarray(port.messages)
    pulse_times = np.asarray(port.stamps)[sent == _CLOCK]
    count = min(pulse_times.size, len(clock_out.pulse_samples))
    # pulse at timeline sample s is due when the playhead reaches it: began + s / rate
    due = began + np.asarray(clock_out.pulse_samples[:count]) / sample_rate
    measured = due >= began + warmup_s
    times, due_kept = pulse_times[:count][measured], due[measured]
    ideal_s = pulse_samples / sample_rate
    # each interval against its own ideal (one pulse, or more across a skip)
    errors_ms = np.abs(np.diff(times) - np.diff(due_kept)) * 1e3
    lateness_ms = (times - due_kept) * 1e3
    # drift: the slope of the lateness over the window (a fit, so one late pulse at either
    # end is not taken for a trend), times the window
    drift_ms: float | None = None
    drift_ppm: float | None = None
    if times.size > 2:
        span_s = float(due_kept[-1] - due_kept[0])
        slope_ms_per_s = float(np.polyfit(due_kept - due_kept[0], lateness_ms, 1)[0])
        drift_ms, drift_ppm = round(slope_ms_per_s * span_s, 4), round(slope_ms_per_s * 1e3, 2)
    return {
        "bpm": bpm,
        "ideal_interval_ms": round(ideal_s * 1e3, 4),
        "played_samples": end_sample,
        "pulses": int(pulse_times.size),
        "expected_pulses": expected,
        "skipped_pulses": expected - int(pulse_times.size),
        "start_sent": bool(sent.size and sent[0] == _START),
        "measured_pulses": int(times.size),
        "interval_error_ms": _percentiles(errors_ms),
        "lateness_ms": {key: value for key, value in _percentiles(lateness_ms).items()
                        if key != "p95"},
        "drift_ms": drift_ms,
        "drift_ppm": drift_ppm,
    }


class BusyProcesses:
    """``count`` processes spinning a CPU each (``while True: pass``) until closed."""

    def __init__(self, count: int) -> None:
        self.processes = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                          for _ in range(count)]
        if count:
            time.sleep(0.5)  # up and spinning before the run starts

    def close(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(timeout=10)


#: The runs' conditions: (name, busy processes, engine-loop work per turn in s).
Condition = tuple[str, int, float]


def conditions(load: int, engine_busy_s: float) -> list[Condition]:
    """Idle; beside ``load`` busy processes (when > 0); with the engine loop working in
    Python ``engine_busy_s`` a turn (when > 0)."""
    out: list[Condition] = [("idle", 0, 0.0)]
    if load > 0:
        out.append((f"{load} busy processes", load, 0.0))
    if engine_busy_s > 0:
        out.append((f"engine loop busy {engine_busy_s * 1e3:g} ms a turn", 0, engine_busy_s))
    return out


def run(bpms: list[float], seconds: float, warmup_s: float, load: int,
        observe_s: float = 0.005, engine_busy_s: float = 0.0) -> dict[str, Any]:
    """Every tempo under every condition (:func:`conditions`); the report."""
    runs = []
    load_before = [round(x, 2) for x in os.getloadavg()]
    for name, processes, busy_s in conditions(load, engine_busy_s):
        busy = BusyProcesses(processes)
        try:
            for bpm in bpms:
                result = measure(bpm, seconds, warmup_s, observe_s, busy_s)
                result.update(condition=name, load_processes=processes,
                              engine_busy_ms=busy_s * 1e3)
                runs.append(result)
        finally:
            busy.close()
    report: dict[str, Any] = {
        "seconds": seconds, "warmup_s": warmup_s, "observe_ms": observe_s * 1e3,
        "sample_rate": RATE,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "load_average_before": load_before,
                    "load_average_after": [round(x, 2) for x in os.getloadavg()]},
        "wire_included": False,
        "runs": runs,
    }
    report["verdict"] = verdict_record(targets(report))
    return report


def _label(result: dict[str, Any]) -> str:
    return f"{result['bpm']:g} bpm, {result['condition']}"


def targets(report: dict[str, Any]) -> list[Target]:
    """The verdict's targets: per run, p99 and max interval error and the drift."""
    out = []
    for result in report["runs"]:
        label = _label(result)
        idle = not (result["load_processes"] or result["engine_busy_ms"])
        p99_limit = TARGET_P99_IDLE_MS if idle else TARGET_P99_LOADED_MS
        error, drift = result["interval_error_ms"], result["drift_ms"]
        out += [Target(f"interval error p99, {label}", error["p99"], p99_limit, "ms",
                       meaning="a receiver's tempo wobbles audibly"),
                Target(f"interval error max, {label}", error["max"], TARGET_MAX_MS, "ms",
                       meaning="a pulse lands nearer its neighbour's slot than its own"),
                Target(f"drift, {label}", None if drift is None else abs(drift),
                       TARGET_DRIFT_MS, "ms", meaning="the clock walks away from the music")]
    return out


def print_report(report: dict[str, Any]) -> None:
    """The table of every run, then the verdict lines."""
    rows = []
    for result in report["runs"]:
        error, late = result["interval_error_ms"], result["lateness_ms"]
        rows += [
            (_label(result), f"{result['pulses']} pulses sent of {result['expected_pulses']} "
                             f"due ({result['skipped_pulses']} skipped), one every "
                             f"{result['ideal_interval_ms']} ms"),
            ("  interval error median/p95/p99/max",
             f"{error['median']} / {error['p95']} / {error['p99']} / {error['max']} ms"),
            ("  late on the playhead median/p99/max",
             f"{late['median']} / {late['p99']} / {late['max']} ms"),
            ("  drift over the window", f"{result['drift_ms']} ms ({result['drift_ppm']} ppm)"),
        ]
    machine = report["machine"]
    rows.append(("machine", f"{machine['cpus']} CPUs, Python {machine['python']}, load "
                            f"average {'/'.join(str(x) for x in machine['load_average_before'])}"
                            f" before, {'/'.join(str(x) for x in machine['load_average_after'])}"
                            " after"))
    print_table(f"MIDI clock out, sender thread only (no driver, no USB): "
                f"{report['seconds']:g} s per run after {report['warmup_s']:g} s warm-up", rows)
    for line in verdict_lines(targets(report)):
        print(line)


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text}")
    return value


def _not_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Measure; print the table (or JSON with --json) and the verdict; 0 when it passes."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=_positive, default=20.0,
                        help="measured seconds per run, after the warm-up (default 20)")
    parser.add_argument("--warmup", type=float, default=2.0,
                        help="seconds at the start of each run left out (default 2)")
    parser.add_argument("--bpm", type=_positive, nargs="+", default=[120.0, 174.0],
                        help="tempi to run (default 120 174)")
    parser.add_argument("--load", type=_not_negative, default=os.cpu_count() or 1,
                        help="busy processes beside the loaded runs; 0: idle runs only "
                             "(default: one per CPU)")
    parser.add_argument("--engine-busy-ms", type=float, default=0.0,
                        help="also run with the engine loop working in Python this long "
                             "each turn, holding the GIL the sender needs (default 0: not run)")
    parser.add_argument("--observe-ms", type=_positive, default=5.0,
                        help="how often the playhead is observed (default 5, the engine turn)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.warmup < 0:
        parser.error(f"--warmup: expected seconds >= 0, got {args.warmup}")
    if not args.engine_busy_ms >= 0:
        parser.error(f"--engine-busy-ms: expected >= 0, got {args.engine_busy_ms}")
    report = run(args.bpm, args.seconds, args.warmup, args.load, args.observe_ms / 1e3,
                 args.engine_busy_ms / 1e3)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0 if report["verdict"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
