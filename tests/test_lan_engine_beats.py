"""Beat out after a playhead jump: straight to the beat in progress, never a walk.

A PlaybackClock from the LAN with a playhead of 2**52 - 1 (the protocol's largest) was
followed by the engine; the beat-out thread then walked every beat up to it (ten billion
at 120 bpm) holding its lock, the engine loop blocked in ``BeatOut.observe`` and the
supervisor killed the engine as hung. The sender here is instrumented to count the
boundaries it computes: a jump must cost a handful, whatever its size.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from engine.beats import LATE_S, MAX_BOUNDARIES_PER_PUMP, BeatGrid, BeatOut, MidiClockOut
from ground.protocol import MAX_PLAYHEAD

RATE = 48000
#: Boundaries one pump may compute for one room after any jump (the catch-up, the beat
#: sent, the next one found; a few more where two grids meet).
FEW = 16


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _counting(kind: type[BeatOut]) -> type[BeatOut]:
    """``kind`` with its boundary search counted per pump, and failing past a bound (the
    walk it replaced would take hours: fail, do not wait for it)."""

    class Counting(kind):  # type: ignore[valid-type, misc]
        boundaries = 0
        most = 0

        def pump(self) -> float:
            self.boundaries = 0
            try:
                return super().pump()
            finally:
                self.most = max(self.most, self.boundaries)

        def _next_boundary(self, state: Any, after: float) -> float:
            self.boundaries += 1
            if self.boundaries > 10 * MAX_BOUNDARIES_PER_PUMP:
                raise AssertionError(f"{self.boundaries} boundaries in one pump: a walk")
            return super()._next_boundary(state, after)

    return Counting


def _grid(bpm: float = 120.0) -> BeatGrid:
    beat = 60.0 / bpm * RATE
    return BeatGrid(anchor=0, bar_samples=4 * beat, beats_per_bar=4, key="C major",
                    chord=lambda bar: f"chord {bar % 8}", identity=bpm, tempo_bpm=bpm,
                    meter=(4, 4))


@pytest.mark.parametrize("heard", [MAX_PLAYHEAD, MAX_PLAYHEAD - 24_000 + 100, 3600 * RATE + 7])
def test_a_playhead_jump_sends_the_beat_in_progress_without_walking_to_it(heard: int) -> None:
    clock = FakeClock()
    sent: list[tuple[str, Any]] = []
    beats = _counting(BeatOut)(["r"], RATE, lambda address, value: sent.append((address, value)),
                               clock=clock)
    grid = _grid()
    beats.observe("r", grid, 0)
    beats.pump()
    assert ("/art2mus/r/beat", 1) in sent
    sent.clear()
    beats.observe("r", None, heard)  # a clock from the LAN put the playhead here
    beats.pump()
    assert beats.most <= FEW
    # exactly the beat in progress at the playhead (the bar and chord where it starts one)
    index = int(heard // grid.beat_samples)
    bar, beat = divmod(index, 4)
    expected = ([("/art2mus/r/bar", bar + 1), ("/art2mus/r/chord", f"chord {bar % 8}")]
                if beat == 0 else []) + [("/art2mus/r/beat", beat + 1)]
    assert sent == expected
    # and the beats go on from there as the playhead moves, one at a time
    sent.clear()
    for step in range(1, 9):
        clock.now = step * 0.125
        beats.observe("r", None, heard + int(clock.now * RATE))
        beats.pump()
    assert [v for a, v in sent if a.endswith("/beat")] == [(beat + 1) % 4 + 1,
                                                           (beat + 2) % 4 + 1]
    assert beats.most <= FEW


def test_midi_clock_out_after_a_jump_sends_only_the_pulses_of_the_last_moment() -> None:
    clock = FakeClock()
    sent: list[list[int]] = []
    out = _counting(MidiClockOut)("r", RATE, sent.append, clock=clock)
    out.observe("r", dataclasses.replace(_grid(), identity="midi"), 0)
    out.pump()
    assert sent == [[0xFA], [0xF8]]  # Start on the bar line, the first pulse
    sent.clear()
    out.observe("r", None, MAX_PLAYHEAD)
    out.pump()
    assert out.most <= FEW
    # what a stall gets too: the pulses of the last LATE_S (a beat's worth of them would
    # be 24), none from the ten billion beats between
    pulse = 60.0 / 120.0 * RATE / 24
    assert 1 <= len(sent) <= LATE_S * RATE / pulse + 1 and all(m == [0xF8] for m in sent)


def test_observe_never_waits_on_a_sender_turn_after_a_jump() -> None:
    """The engine loop's side: ``observe`` takes the lock the sender's turn holds; with the
    sender's thread running, a jump to the largest playhead and back leaves it free."""
    import threading

    delivered = threading.Event()

    def send(address: str, value: Any) -> None:
        if address.endswith("/beat"):
            delivered.set()

    beats = BeatOut(["r"], RATE, send)
    beats._thread = threading.Thread(target=beats._run, name="beat-out", daemon=True)
    beats._thread.start()
    try:
        beats.observe("r", _grid(), 0)
        assert delivered.wait(10.0)
        delivered.clear()
        beats.observe("r", None, MAX_PLAYHEAD)
        assert delivered.wait(10.0)  # the beat in progress out there
        # a turn of the engine loop: the lock is free as soon as the sender's turn ends
        acquired = beats._lock.acquire(timeout=10.0)
        assert acquired
        beats._lock.release()
        assert beats.pump_errors == 0
    finally:
        beats.close()
