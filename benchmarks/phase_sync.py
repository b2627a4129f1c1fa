"""How close a synced room's bars are heard to the session's downbeats, over minutes (issue 17).

``python benchmarks/phase_sync.py [--minutes 5] [--json]`` plays one
procedural room through the engine's real :class:`~engine.streaming.RoomSession`
(the same planning, composer and rendering a room runs) on a simulated
clock, as fast as it renders. What is simulated is what a test machine does
not have: a sound card whose crystal is ``ppm`` off the system clock (the
playhead advances at 48 kHz x (1 + ppm)), audio_out's playback clock reports
(every 0.1 s, 1 ms of jitter on the heard time, 40 ms output latency), and the
sync source sending the session's grid every 2 s with 1 ms of jitter (as
Link's timeline is read, or as a MIDI clock's fitted downbeats come). The
session plays 4-beat bars at ``bpm``; the rooms are told ``bpm +
tempo_error`` (a MIDI clock's measured tempo is ~0.02 bpm off; Link's is
exact).

For every bar line of the room's music (the composer's grid in force when the
playhead passes it) the error is the time it is heard minus the nearest
session downbeat. The report per case: median, p95 and max of the absolute
error over the bars after the first nudge onto the grid, and the nudges per
hour (each is a re-plan that moves the bars onto the grid again, crossfaded).
The wire (a Link peer's own latency, a MIDI cable) and the sound card's
reported latency being wrong are not in it: those are the sync source's and
audio_out's, measured by their own tests.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

from engine.beats import grid_of
from engine.config import EngineConfig
from engine.generators.procedural.config import ProceduralConfig
from engine.generators.procedural.generator import ProceduralGenerator
from engine.streaming import RoomSession
from ground.cli_report import Target, verdict_lines, verdict_record
from ground.protocol import PROTOCOL_VERSION, SYNC_KEYS, ArtworkView, PlaybackClock, seconds_of_day

RATE = 48000
LATENCY_S = 0.040
STEP_S = 0.1
SYNC_EVERY_S = 2.0
#: Bars should be heard within this of the session's downbeats (a flam is heard from ~20 ms).
TARGET_P95_MS = 16.0


@dataclass(frozen=True)
class Case:
    """One simulated performance: the sound card's drift and the tempo error told."""

    name: str
    ppm: float
    tempo_error_bpm: float


CASES = (
    Case("link, exact card", 0.0, 0.0),
    Case("link, card +40 ppm", 40.0, 0.0),
    Case("midi clock (+0.02 bpm), card -40 ppm", -40.0, 0.02),
)


def play(case: Case, minutes: float, bpm: float = 120.0, seed: int = 0) -> dict[str, Any]:
    """Run one case; the bar errors and nudges."""
    rng = random.Random(seed)
    start = time.time()
    now = {"t": start}
    session = RoomSession("r", 1, ProceduralGenerator(ProceduralConfig(), RATE),
                          EngineConfig(generator="procedural", chunk_s=0.5, lead_s=1.0,
                                       transition_margin_s=0.3, transition_crossfade_s=0.2),
                          clock=lambda: now["t"])
    session.min_change_interval_s = 0.25
    session.on_view(ArtworkView(v=PROTOCOL_VERSION, room="r", seq=0, time=0.0, state="artwork",
                                artwork_id="a", confidence=1.0,
                                features={"brightness": 0.5, "warmth": 0.6}))
    bar_s = 4 * 60.0 / bpm
    session_zero = start + 0.37  # one of the session's downbeats
    rate = RATE * (1.0 + case.ppm * 1e-6)  # samples the card plays per system second
    told = round(bpm + case.tempo_error_bpm, 2)
    session.set_controls({"tempo_bpm": told})
    errors: list[tuple[float, float]] = []  # (time heard, error ms)
    seen_lines: set[int] = set()
    nudges = 0
    next_sync = start
    steps = int(minutes * 60.0 / STEP_S)
    for _ in range(steps):
        t = now["t"]
        playhead = int((t - start) * rate)
        session.on_clock(PlaybackClock(
            v=PROTOCOL_VERSION, room="r", sample_rate=RATE, playhead=playhead,
            buffered_until=playhead, wall_time=t + LATENCY_S + rng.uniform(-5e-4, 5e-4)))
        if t >= next_sync:
            next_sync += SYNC_EVERY_S
            k = round((t - session_zero) / bar_s) + 1
            downbeat = session_zero + k * bar_s + rng.uniform(-5e-4, 5e-4)
            values = (seconds_of_day(downbeat), 4.0, told)
            if "sync" in session.set_controls(dict(zip(SYNC_KEYS, values, strict=True))):
                nudges += 1
        session.tick()
        while session.next_chunk() is not None:
            pass
        grid = grid_of(session.state)
        heard_now = playhead  # the sample the card plays now
        if grid is not None:
            k = round((heard_now - grid.anchor) / grid.bar_samples)
            line = grid.anchor + k * grid.bar_samples
            if grid.start <= line <= heard_now and round(line) not in seen_lines:
                seen_lines.add(round(line))
                heard_at = start + line / rate + LATENCY_S
                off = (heard_at - session_zero) % bar_s
                errors.append((heard_at, 1000.0 * (off - bar_s if off > bar_s / 2 else off)))
        now["t"] = t + STEP_S
    aligned = [e for at, e in errors if at >= start + 10.0]  # after the first alignment
    absolute = sorted(abs(e) for e in aligned)
    hours = minutes / 60.0
    return {
        "case": case.name, "ppm": case.ppm, "tempo_error_bpm": case.tempo_error_bpm,
        "minutes": minutes, "bars": len(absolute),
        "median_ms": round(statistics.median(absolute), 2) if absolute else None,
        "p95_ms": round(absolute[int(0.95 * (len(absolute) - 1))], 2) if absolute else None,
        "max_ms": round(absolute[-1], 2) if absolute else None,
        # the first re-plan takes the grid on (a transition any tempo change makes)
        "nudges_per_hour": round(max(0, nudges - 1) / hours, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Run every case; print a table and a verdict (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0,
                        help="simulated minutes per case (default 5)")
    parser.add_argument("--json", action="store_true", help="print JSON for machines")
    args = parser.parse_args(argv)
    if not 0.5 <= args.minutes <= 120.0:
        parser.error(f"--minutes: expected 0.5..120, got {args.minutes}")
    results = [play(case, args.minutes) for case in CASES]
    targets = [Target(f"{r['case']}: p95 bar error", r["p95_ms"], TARGET_P95_MS, "ms",
                      meaning="bars heard off the session's downbeats")
               for r in results]
    if args.json:
        print(json.dumps({"results": results, "verdict": verdict_record(targets)}, indent=2))
    else:
        print(f"{'case':<40} {'bars':>5} {'median':>8} {'p95':>8} {'max':>8} {'nudges/h':>9}")
        for r in results:
            print(f"{r['case']:<40} {r['bars']:>5} {r['median_ms']:>6} ms {r['p95_ms']:>5} ms "
                  f"{r['max_ms']:>5} ms {r['nudges_per_hour']:>9}")
        print("\n".join(verdict_lines(targets)))
    return 0 if all(t.met is not False for t in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
