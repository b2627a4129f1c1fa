"""What the technician's console costs, measured on a real installation (issue 15).

``python benchmarks/console_cost.py [--seconds 30] [--repeats 3] [--json]`` runs
a real 4-room ``art2mus run`` (the demo's virtual cameras, the procedural
generator, no sound card, free loopback ports; the config of
tests/console_browser.py with rooms added) ``--repeats`` times with the
console off (``listen = ""``) and as often with it on and ONE headless Chromium
page open on it, alternating off/on so that the load of a shared machine falls
on both alike. After ``--warmup`` seconds it reads the supervisor's CPU time
(utime + stime of ``/proc/PID/stat``; the console is a thread of the
supervisor, so every request, SSE message and JPEG it serves is in there) over
``--seconds`` and reports the median percent of one core off and on: their
difference is the console's cost. Also measured with the console on: the
page's first contentful paint (fresh browser contexts), the ``state`` updates
the page receives per second per room (its own EventSource, counted by a
wrapper injected before the page's script runs), and the latency of GET / and
GET /api/state from Python (median of 20 after 3 unmeasured). Issue 15's
targets: first paint under 1 s on loopback, at least 2 updates a second per
room, under 5 % of one core for 4 rooms and one browser.

The capture roles' CPU (the 4 of them together) is reported beside it: with
the console on they also encode each room's camera JPEG every
``frame_every_s``, a cost of the console outside the supervisor.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# The browser tests' helpers (config, free ports, Chromium's flags) are reused, not copied.
sys.path.insert(0, str(REPO / "tests"))
from console_browser import (  # noqa: E402
    browser_missing,
    installation_toml,
    launch_chromium,
    wait_for,
)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: Counts the page's own ``state`` messages: wraps EventSource before console.js runs.
COUNT_STATE_EVENTS = """
(() => {
  const counts = {events: 0, rooms: {}, changed: {}};
  const last = {};
  window.__consoleCost = counts;
  const Native = window.EventSource;
  window.EventSource = class extends Native {
    constructor(url, init) {
      super(url, init);
      this.addEventListener("state", (message) => {
        counts.events += 1;
        let rooms = {};
        try { rooms = JSON.parse(message.data).rooms || {}; } catch (e) { return; }
        for (const [room, value] of Object.entries(rooms)) {
          counts.rooms[room] = (counts.rooms[room] || 0) + 1;
          const text = JSON.stringify(value);
          if (last[room] !== text) counts.changed[room] = (counts.changed[room] || 0) + 1;
          last[room] = text;
        }
      });
    }
  };
})();
"""
TARGET_PAINT_MS = 1000.0
TARGET_UPDATES_PER_S = 2.0
TARGET_COST_PERCENT = 5.0


def stat_cpu_seconds(text: str) -> float:
    """User + system CPU seconds in the text of a ``/proc/PID/stat`` file (see proc(5))."""
    # the command name (field 2) may hold spaces and parentheses: split after its last ')'
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of proc(5)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all its threads), from /proc."""
    return stat_cpu_seconds(Path(f"/proc/{pid}/stat").read_text(encoding="ascii"))


def extra_rooms(rooms: int) -> str:
    """TOML for rooms 2..N beside installation_toml's room "hall" (same capture rate)."""
    return "".join(f'\n[[rooms]]\nid = "room-{i}"\nseed = {i}\n\n[rooms.capture]\nfps = 10\n'
                   for i in range(2, rooms + 1))


class Installation:
    """``python -m installation run`` of N rooms in ``folder``, console on or off."""

    def __init__(self, folder: Path, rooms: int, console: bool) -> None:
        self.folder = folder
        self.rooms = rooms
        self.console = console
        self.out = folder / "out"
        self.config_path = folder / "console-cost.toml"
        self.config_path.write_text(
            installation_toml(folder, listen="127.0.0.1:0" if console else "")
            + extra_rooms(rooms), encoding="utf-8")
        self.log = folder / "supervisor.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.supervisor_pid = 0

    def start(self) -> None:
        """Start it and wait until every role runs (and the console answers, when on)."""
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "installation", "run", "--config", str(self.config_path)],
                stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
        record = wait_for(f"every role of {self.rooms} rooms running", self._ready,
                          timeout_s=180.0, alive=self._alive)
        self.supervisor_pid = int(record["supervisor_pid"])
        if self.supervisor_pid != self.process.pid:
            raise RuntimeError(f"status.json names supervisor pid {self.supervisor_pid}, "
                               f"the process started is {self.process.pid}")
        if self.console:
            self.url = str(record["console_url"]).rstrip("/")

    def status(self) -> dict[str, Any] | None:
        """OUTPUT/status.json, or None while there is none (or it is being replaced)."""
        try:
            return dict(json.loads((self.out / "status.json").read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return None

    def _ready(self) -> dict[str, Any] | None:
        record = self.status()
        if record is None or (self.console and not record.get("console_url")):
            return None
        rows = record.get("roles", [])
        if len(rows) != 1 + 2 * self.rooms or any(r.get("state") != "running" for r in rows):
            return None
        return record

    def _alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"art2mus run exited with {self.process.returncode}:\n"
                               + self.log.read_text(encoding="utf-8", errors="replace")[-3000:])

    def capture_pids(self) -> list[int]:
        """The pids of the capture roles now."""
        record = self.status() or {}
        return [int(r["pid"]) for r in record.get("roles", [])
                if r.get("kind") == "capture" and r.get("pid")]

    def stop(self) -> None:
        """SIGTERM (the supervisor stops its roles), SIGKILL after 30 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class Window:
    """CPU percent of one core of the supervisor and of the capture roles over one window."""

    console: bool
    seconds: float
    supervisor_percent: float
    capture_percent: float | None  # None: a capture role restarted during the window
    updates_per_s: dict[str, float] = field(default_factory=dict)
    changes_per_s: dict[str, float] = field(default_factory=dict)
    first_paint_ms: list[float] = field(default_factory=list)
    paints_missing: int = 0  # page loads with no first contentful paint within 30 s
    index_ms: list[float] = field(default_factory=list)
    state_ms: list[float] = field(default_factory=list)


def _total_cpu(pids: list[int]) -> float | None:
    try:
        return sum(cpu_seconds(pid) for pid in pids)
    except (OSError, ValueError):
        return None


def measure_window(installation: Installation, seconds: float,
                   page: Any | None) -> Window:
    """CPU of the supervisor and capture roles over ``seconds`` (and the page's updates)."""
    pid = installation.supervisor_pid
    captures = installation.capture_pids()
    counts0 = page.evaluate("JSON.stringify(window.__consoleCost)") if page else "{}"
    start, cpu0, captures0 = time.monotonic(), cpu_seconds(pid), _total_cpu(captures)
    time.sleep(seconds)
    end, cpu1, captures1 = time.monotonic(), cpu_seconds(pid), _total_cpu(captures)
    counts1 = page.evaluate("JSON.stringify(window.__consoleCost)") if page else "{}"
    elapsed = end - start
    same_captures = captures == installation.capture_pids()
    window = Window(
        console=page is not None, seconds=round(elapsed, 2),
        supervisor_percent=100.0 * (cpu1 - cpu0) / elapsed,
        capture_percent=(100.0 * (captures1 - captures0) / elapsed
                         if captures0 is not None and captures1 is not None and same_captures
                         else None))
    before, after = json.loads(counts0), json.loads(counts1)
    for key, target in (("rooms", window.updates_per_s), ("changed", window.changes_per_s)):
        for room, count in (after.get(key) or {}).items():
            target[room] = round((count - (before.get(key) or {}).get(room, 0)) / elapsed, 2)
    return window


def first_paint_ms(browser: Any, url: str) -> tuple[Any, Any, float | None]:
    """Open the console in a fresh context: ``(context, page, first contentful paint ms)``.

    The paint is None when none was recorded within 30 s (counted, reported, a miss).
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_init_script(COUNT_STATE_EVENTS)
    page = context.new_page()
    page.goto(url + "/")
    # polled on a timer, not per animation frame: a page the browser does not draw has none
    try:
        page.wait_for_function(
            "performance.getEntriesByName('first-contentful-paint').length > 0", polling=100,
            timeout=30000)
    except PlaywrightTimeout:
        return context, page, None
    paint = page.evaluate(
        "performance.getEntriesByName('first-contentful-paint')[0].startTime")
    return context, page, float(paint)


def _fresh_paint(browser: Any, url: str) -> float | None:
    context, _page, paint = first_paint_ms(browser, url)
    context.close()
    return paint


def latencies_ms(url: str, count: int = 20, unmeasured: int = 3) -> list[float]:
    """Wall time of ``count`` GETs of ``url`` (a new connection each, body read) in ms."""
    times = []
    for i in range(unmeasured + count):
        start = time.perf_counter()
        with urllib.request.urlopen(url, timeout=10) as response:
            response.read()
        if i >= unmeasured:
            times.append(1000.0 * (time.perf_counter() - start))
    return times


def run_once(browser: Any, folder: Path, rooms: int, console: bool, warmup: float,
             seconds: float, paints: int) -> Window:
    """One installation, one warm-up, one measured window (and, with the console, its page)."""
    installation = Installation(folder, rooms, console)
    context = None
    try:
        installation.start()
        page = None
        paint: float | None = None
        if console:
            context, page, paint = first_paint_ms(browser, installation.url)
        time.sleep(warmup)
        window = measure_window(installation, seconds, page)
        if console:
            # after the window, so that these requests are not counted in its CPU; one page
            # at a time, as a technician opens it
            assert context is not None
            context.close()
            context = None
            for ms in [paint] + [_fresh_paint(browser, installation.url)
                                 for _ in range(paints - 1)]:
                if ms is None:
                    window.paints_missing += 1
                else:
                    window.first_paint_ms.append(ms)
            window.index_ms = latencies_ms(installation.url + "/")
            window.state_ms = latencies_ms(installation.url + "/api/state")
        return window
    finally:
        if context is not None:
            context.close()
        installation.stop()


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def summarise(windows: list[Window], rooms: int,
              loads: tuple[tuple[float, ...], tuple[float, ...]]) -> dict[str, Any]:
    """The figures of every window and their medians, with what each means."""
    off = [w for w in windows if not w.console]
    on = [w for w in windows if w.console]
    off_cpu = _median([w.supervisor_percent for w in off])
    on_cpu = _median([w.supervisor_percent for w in on])
    cost = None if off_cpu is None or on_cpu is None else round(on_cpu - off_cpu, 2)
    paired = [round(b.supervisor_percent - a.supervisor_percent, 2)
              for a, b in zip(off, on, strict=False)]
    off_capture = _median([w.capture_percent for w in off if w.capture_percent is not None])
    on_capture = _median([w.capture_percent for w in on if w.capture_percent is not None])
    room_ids = sorted({room for w in on for room in w.updates_per_s})
    updates = {room: _median([w.updates_per_s.get(room, 0.0) for w in on]) for room in room_ids}
    changes = {room: _median([w.changes_per_s.get(room, 0.0) for w in on]) for room in room_ids}
    paints = [ms for w in on for ms in w.first_paint_ms]
    index = [ms for w in on for ms in w.index_ms]
    state = [ms for w in on for ms in w.state_ms]
    slowest_room = min((v for v in updates.values() if v is not None), default=None)
    return {
        "rooms": rooms, "cpus": os.cpu_count(), "repeats": len(on),
        "seconds": statistics.median([w.seconds for w in windows]),
        "load_average_start": [round(x, 2) for x in loads[0]],
        "load_average_end": [round(x, 2) for x in loads[1]],
        "supervisor_cpu_percent_off": off_cpu,
        "supervisor_cpu_percent_on": on_cpu,
        "console_cost_percent": cost,
        "console_cost_percent_paired": paired,
        "capture_cpu_percent_off": off_capture,
        "capture_cpu_percent_on": on_capture,
        "first_paint_ms_median": _median(paints),
        "first_paint_ms_max": round(max(paints), 1) if paints else None,
        "first_paints_missing": sum(w.paints_missing for w in on),
        "first_paint_ms_count": max((len(w.first_paint_ms) + w.paints_missing for w in on),
                                    default=0),
        "updates_per_s_per_room": updates,
        "changes_per_s_per_room": changes,
        "get_index_ms_median": _median(index),
        "get_state_ms_median": _median(state),
        "targets_met": {
            "first_paint_under_1s": bool(paints) and max(paints) < TARGET_PAINT_MS
            and not any(w.paints_missing for w in on),
            "updates_2_per_s_per_room": slowest_room is not None
            and slowest_room >= TARGET_UPDATES_PER_S,
            "cost_under_5_percent": cost is not None and cost < TARGET_COST_PERCENT,
        },
        "windows": [vars(w) for w in windows],
    }


def table(result: dict[str, Any]) -> str:
    """The figures as lines a person reads, each saying what it means."""
    def ok(name: str) -> str:
        return "meets" if result["targets_met"][name] else "MISSES"

    updates = result["updates_per_s_per_room"]
    changes = result["changes_per_s_per_room"]
    lines = [
        f"console cost: {result['rooms']} rooms, {result['repeats']} x {result['seconds']:.0f} s "
        f"off and on (alternating), {result['cpus']} CPUs, load average "
        f"{result['load_average_start'][0]} at start, {result['load_average_end'][0]} at end",
        f"  supervisor CPU, console off       {result['supervisor_cpu_percent_off']:6.2f} % "
        "of one core (median; utime+stime from /proc)",
        f"  supervisor CPU, console on        {result['supervisor_cpu_percent_on']:6.2f} % "
        "of one core (one Chromium page open)",
        f"  console's cost (on - off)         {result['console_cost_percent']:6.2f} % "
        f"target < {TARGET_COST_PERCENT:g} %: {ok('cost_under_5_percent')}; "
        f"per pair {result['console_cost_percent_paired']}",
        f"  capture roles' CPU, off / on      {result['capture_cpu_percent_off']} / "
        f"{result['capture_cpu_percent_on']} % (all rooms; with the console on they also "
        "write the camera JPEGs)",
        f"  first contentful paint            {result['first_paint_ms_median']} ms median, "
        f"{result['first_paint_ms_max']} ms max of {result['repeats']} x "
        f"{result['first_paint_ms_count']} loads (fresh contexts, loopback; "
        f"{result['first_paints_missing']} without a paint in 30 s), target < 1000 ms: "
        f"{ok('first_paint_under_1s')}",
        "  state updates received per second per room (SSE `state` messages the page got): "
        + ", ".join(f"{room} {rate}" for room, rate in updates.items())
        + f"; target >= {TARGET_UPDATES_PER_S:g}: {ok('updates_2_per_s_per_room')}",
        "  of which the room's data changed: "
        + ", ".join(f"{room} {rate}" for room, rate in changes.items()),
        f"  GET / latency                     {result['get_index_ms_median']} ms median of 20 "
        "(page with the state inlined, from Python, new connection each)",
        f"  GET /api/state latency            {result['get_state_ms_median']} ms median of 20",
    ]
    return "\n".join(lines)


def positive(text: str) -> float:
    """An argparse type: a number of seconds above zero."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, got {text}")
    return value


def at_least_one(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer of at least 1, got {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (errors name the option, exit code 2)."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=positive, default=30.0,
                        help="measured window of each run (default 30)")
    parser.add_argument("--warmup", type=float, default=15.0,
                        help="seconds after start-up before measuring (default 15)")
    parser.add_argument("--repeats", type=at_least_one, default=3,
                        help="runs with the console off and as many on (default 3)")
    parser.add_argument("--rooms", type=at_least_one, default=4, help="rooms (default 4)")
    parser.add_argument("--paints", type=at_least_one, default=5,
                        help="first-paint loads per run with the console on (default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if args.warmup < 0:
        parser.error(f"--warmup: expected seconds >= 0, got {args.warmup}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the installation off and on, print the figures."""
    args = parse_args(argv)
    missing = browser_missing()
    if missing is not None:
        print(f"console_cost: cannot run: {missing}", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    windows = []
    load_start = os.getloadavg()
    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as tmp:
        browser = launch_chromium(playwright)
        try:
            for repeat in range(args.repeats):
                for console in (False, True):
                    folder = Path(tmp) / f"run-{repeat}-{'on' if console else 'off'}"
                    folder.mkdir()
                    window = run_once(browser, folder, args.rooms, console, args.warmup,
                                      args.seconds, args.paints)
                    print(f"repeat {repeat + 1} console {'on ' if console else 'off'}: "
                          f"supervisor {window.supervisor_percent:.2f} % of one core",
                          file=sys.stderr)
                    windows.append(window)
        finally:
            browser.close()
    result = summarise(windows, args.rooms, (load_start, os.getloadavg()))
    print(json.dumps(result, indent=1) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
