"""Phase sync: a room's bars land on a Link session's or a MIDI clock's downbeats.

The chain under test, end to end without a network: a sync source (Link,
MIDI clock) -> :meth:`ControlHub.sync` -> the engine's Control ``set`` ->
:meth:`RoomSession.set_sync` (the downbeat mapped onto the timeline through
audio_out's playback clock) -> the composer's bar grid. Bars are judged where
they are *heard*: the wall time at which audio_out plays a bar's first sample.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sys
import time
from typing import Any

import pytest

from engine.beats import grid_of
from engine.config import EngineConfig
from engine.generators.base import BarSync
from engine.generators.procedural.composer import Composer
from engine.generators.procedural.config import ProceduralConfig
from engine.generators.procedural.generator import ProceduralGenerator
from engine.generators.procedural.mapping import decide
from engine.streaming import SYNC_TOLERANCE_S, RoomSession
from ground.protocol import PROTOCOL_VERSION, SYNC_KEYS, ArtworkView, PlaybackClock, seconds_of_day
from installation.config import LinkConfig, MidiInConfig, config_from_dict
from installation.control import ControlHub
from installation.midi_in import MidiControlInput
from installation.tempo_sync import ClockTempo, LinkSync

RATE = 48000
CONFIG = config_from_dict({"rooms": [{"id": "a"}, {"id": "b"}]})
CLOCK, START, CONTINUE, STOP, POINTER = 0xF8, 0xFA, 0xFB, 0xFC, 0xF2


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _view(artwork_id: str) -> ArtworkView:
    return ArtworkView(v=PROTOCOL_VERSION, room="r", seq=0, time=0.0, state="artwork",
                       artwork_id=artwork_id, confidence=1.0,
                       features={"brightness": 0.4, "warmth": 0.6})


def _room(playhead: int, heard_at: float) -> tuple[RoomSession, FakeClock]:
    """A procedural room playing, audio_out saying ``playhead`` is heard at ``heard_at``."""
    config = EngineConfig(generator="procedural", chunk_s=0.5, lead_s=1.0,
                          transition_margin_s=0.3, transition_crossfade_s=0.2)
    clock = FakeClock()
    session = RoomSession("r", 1, ProceduralGenerator(ProceduralConfig(), RATE), config,
                          clock=clock)
    session.on_view(_view("a"))
    session.on_clock(PlaybackClock(v=PROTOCOL_VERSION, room="r", sample_rate=RATE,
                                   playhead=playhead, buffered_until=playhead,
                                   wall_time=heard_at))
    while session.next_chunk() is not None:
        pass
    return session, clock


def _sync(downbeat: float, beats: int, bpm: float) -> dict[str, float]:
    return dict(zip(SYNC_KEYS, (seconds_of_day(downbeat), float(beats), bpm), strict=True))


def _heard_off_downbeat_ms(session: RoomSession, playhead: int, heard_at: float,
                           downbeat: float, bar_s: float) -> float:
    """How far (ms, signed, within half a bar) the room's bar lines are heard from the
    session's downbeats."""
    grid = grid_of(session.state)
    assert grid is not None
    heard = heard_at + (grid.anchor - playhead) / RATE
    off = (heard - downbeat) % bar_s
    return 1000.0 * (off - bar_s if off > bar_s / 2 else off)


def test_a_synced_room_hears_its_bars_on_the_sessions_downbeats() -> None:
    now = time.time()
    playhead, heard_at = 480_000, now + 0.12  # 120 ms of output latency
    session, clock = _room(playhead, heard_at)
    own = grid_of(session.state)
    assert own is not None
    downbeat = now + 0.737  # the session's next downbeat, 4 beats at 128 bpm
    session.set_controls({"tempo_bpm": 128.0} | _sync(downbeat, 4, 128.0))
    session.tick()
    chunk = session.next_chunk()
    assert chunk is not None and chunk.reason == "transition"
    bar_s = 4 * 60.0 / 128.0
    assert abs(_heard_off_downbeat_ms(session, playhead, heard_at, downbeat, bar_s)) < 0.05
    sync = session.controls.sync
    assert sync is not None and (sync.beats, sync.bpm) == (4, 128.0)
    # the same grid again (the source resends it) or a few ms of jitter: nothing moves
    clock.now += 1.0
    assert session.set_controls(_sync(downbeat + 10 * bar_s + 0.004, 4, 128.0)) == []
    session.tick()
    assert not session.pending_transition
    assert session.sync_offset_ms == pytest.approx(4.0, abs=0.05)


def test_a_drifted_grid_nudges_the_bars_and_keeps_their_numbers() -> None:
    now = time.time()
    session, clock = _room(0, now)
    downbeat = now + 0.5
    session.set_controls({"tempo_bpm": 120.0} | _sync(downbeat, 4, 120.0))
    session.tick()
    assert session.next_chunk() is not None
    before = grid_of(session.state)
    assert before is not None
    state_before = session.state
    while session.next_chunk() is not None:
        pass
    session.min_change_interval_s = 0.0  # no wait for the re-plan (the clock stands still)
    moved = downbeat + 2.0 + 0.030  # the clocks drifted 30 ms apart
    assert SYNC_TOLERANCE_S < 0.030
    assert session.set_controls(_sync(moved, 4, 120.0)) == ["sync"]
    session.tick()
    chunk = session.next_chunk()
    assert chunk is not None and chunk.reason == "transition"
    after = grid_of(session.state)
    assert after is not None
    assert after.anchor - before.anchor == round(0.030 * RATE)  # nudged, bar 0 stays bar 0
    assert session.state.composer.bridge == state_before.composer.bridge  # no new bridge
    assert session.sync_offset_ms == pytest.approx(30.0, abs=0.05)


def test_sync_is_ignored_while_the_tempo_is_not_the_sessions() -> None:
    now = time.time()
    session, _ = _room(0, now)
    own = grid_of(session.state)
    assert own is not None
    # a grid at another tempo than the room plays (the tempo has not arrived yet)
    assert session.set_controls(_sync(now + 0.3, 4, own.tempo_bpm + 7.0)) == ["sync"]
    session.tick()
    assert session.next_chunk() is not None
    after = grid_of(session.state)
    assert after is not None and after.anchor == own.anchor  # its own grid, not drifting


@pytest.mark.parametrize("bad", [
    {"sync_downbeat": float("nan"), "sync_beats": 4.0, "sync_bpm": 120.0},
    {"sync_downbeat": 90000.0, "sync_beats": 4.0, "sync_bpm": 120.0},
    {"sync_downbeat": 10.0, "sync_beats": 2.5, "sync_bpm": 120.0},
    {"sync_downbeat": 10.0, "sync_beats": 64.0, "sync_bpm": 120.0},
    {"sync_downbeat": 10.0, "sync_beats": 4.0, "sync_bpm": 1e6},
    {"sync_downbeat": 10.0, "sync_beats": 4.0},
    {"sync_downbeat": "ten", "sync_beats": 4.0, "sync_bpm": 120.0},
])
def test_a_bad_grid_is_refused_and_counted_and_the_grid_in_force_stays(bad: dict[str, Any]
                                                                        ) -> None:
    now = time.time()
    session, _ = _room(0, now)
    session.set_controls({"tempo_bpm": 120.0} | _sync(now + 0.5, 4, 120.0))
    kept = session.controls.sync
    assert kept is not None
    assert session.set_controls(bad) == []
    assert session.controls.sync == kept and session.refused_controls["sync"] == 1


def test_the_grid_is_not_saved_for_a_restart() -> None:
    session, _ = _room(0, time.time())
    session.set_controls({"tempo_bpm": 120.0} | _sync(time.time() + 0.5, 4, 120.0))
    assert session.controls.sync is not None
    assert "sync" not in session.controls.saved()
    assert session.controls.saved()["tempo_bpm"] == 120.0


def test_a_first_stream_comes_in_on_the_next_outside_downbeat() -> None:
    config = ProceduralConfig()
    plan = decide({"brightness": 0.5, "warmth": 0.5}, config, "x")
    sync = BarSync(phase=12_345, beats=4, bpm=plan.tempo_bpm)
    composer = Composer(dataclasses.replace(plan, sync=sync), config, 1, 200_000, RATE)
    bar = sync.bar_samples(RATE)
    assert composer.grid.anchor >= 200_000 and composer.grid.anchor - 200_000 <= bar
    assert (composer.grid.anchor - 12_345) % bar == pytest.approx(0.0, abs=1.0)
    # a new plan bridges from the old music to an outside downbeat
    other = decide({"brightness": 0.9, "warmth": 0.1}, config, "y")
    other = dataclasses.replace(other, tempo_bpm=plan.tempo_bpm, sync=sync)
    follow = Composer(other, config, 1, 300_000, RATE, composer.context)
    line = (follow.grid.anchor - 12_345) % bar
    assert min(line, bar - line) <= 1.0 and follow.grid.anchor > 300_000
    assert follow.bridge is not None and follow.bridge.end == follow.grid.anchor


# -- sources -----------------------------------------------------------------


def _grids(hub: ControlHub) -> list[dict[str, float]]:
    return [m.params for m in hub.pending() if "sync_downbeat" in m.params]


def _wall(seconds_of_day_value: float) -> float:
    """The instant nearest now with this time of day."""
    now = time.time()
    return seconds_of_day_value + 86400.0 * round((now - seconds_of_day_value) / 86400.0)


class FakeLink:
    """An aalink.Link look-alike: tempo, peers, and where the session's timeline is now."""

    def __init__(self, tempo: float, beat: float, quantum: float = 4.0) -> None:
        self.tempo, self.beat, self.quantum, self.num_peers = tempo, beat, quantum, 1

    @property
    def phase(self) -> float:
        return self.beat % self.quantum

    def force_beat(self, beat: float) -> None:
        self.beat = beat


def test_link_sends_the_sessions_next_downbeat_with_the_tempo_the_rooms_play() -> None:
    hub = ControlHub(CONFIG)
    now = {"t": time.time()}
    link = LinkSync(LinkConfig(enabled=True), hub, lambda: None, link_module=object(),
                    clock=lambda: now["t"])
    session = FakeLink(tempo=96.0, beat=41.5)  # beat 1.5 of bar 10: 2.5 beats to go
    link.step(session)
    grids = _grids(hub)
    assert len(grids) == 1
    sent = grids[0]
    assert (sent["sync_beats"], sent["sync_bpm"]) == (4.0, 96.0)
    assert _wall(sent["sync_downbeat"]) == pytest.approx(now["t"] + 2.5 * 60 / 96, abs=1e-5)
    # polled again 0.1 s later, on the same grid: nothing new is sent
    now["t"] += 0.1
    session.beat += 0.1 * 96 / 60
    link.step(session)
    assert _grids(hub) == []
    alone = FakeLink(tempo=96.0, beat=3.0)
    alone.num_peers = 0
    LinkSync(LinkConfig(enabled=True), hub, lambda: None, link_module=object()).step(alone)
    assert _grids(hub) == []  # no peer: no session to follow


def test_leading_link_an_artwork_change_is_one_transition_and_the_session_meets_its_bars(
        ) -> None:
    """Link's lead, end to end without a network: the room's tempo goes to the session, the
    session's beat is moved so its bar lines fall on the room's as heard, and the grid sent
    back is the room's own, taken without a re-plan. A new artwork is then one transition;
    before, it was two (the second to meet the session's bars of the old tempo)."""
    from engine.beats import grid_of as grid

    session, _ = _room(480_000, time.time() + 0.12)
    hub = ControlHub(CONFIG)
    now = time.time()
    link_session = FakeLink(tempo=120.0, beat=17.3)

    def tempo() -> float | None:
        own = grid(session.state)
        return None if own is None else own.tempo_bpm

    lead = LinkSync(LinkConfig(enabled=True, mode="lead"), hub, tempo, link_module=object(),
                    clock=lambda: now, room_downbeat=session.heard_downbeat)

    def poll() -> list[str]:
        """One Link poll, its grids delivered to the room; what the room re-planned."""
        lead.step(link_session)
        replanned = []
        for params in _grids(hub):
            replanned += session.set_controls(params)
        session.tick()
        return replanned

    assert poll() == [] and not session.pending_transition
    own = grid(session.state)
    assert own is not None and link_session.tempo == own.tempo_bpm and lead.bars_led == 1
    assert session.controls.sync is not None and session.sync_offset_ms is not None
    assert session.sync_offset_ms < 1.0
    heard = session.heard_downbeat()
    assert heard is not None
    bar_s = 4 * 60.0 / own.tempo_bpm
    # the session's next bar line is the room's, as heard
    to_go = (4 - link_session.phase) * 60.0 / link_session.tempo
    assert (now + to_go - heard[0] + bar_s / 2) % bar_s - bar_s / 2 == pytest.approx(0, abs=1e-4)

    session.on_view(ArtworkView(v=PROTOCOL_VERSION, room="r", seq=1, time=0.0,
                                state="artwork", artwork_id="b", confidence=1.0,
                                features={"brightness": 0.9, "warmth": 0.1}))
    chunk = session.next_chunk()
    assert chunk is not None and chunk.reason == "transition"  # the one transition
    while session.next_chunk() is not None:
        pass
    new = grid(session.state)
    assert new is not None and new.tempo_bpm != own.tempo_bpm
    session.min_change_interval_s = 0.0  # a re-plan would not wait (the clock stands still)
    assert poll() == []
    assert link_session.tempo == new.tempo_bpm and lead.bars_led == 2
    assert not session.pending_transition
    assert session.next_chunk() is None  # the lead is full: nothing made again
    assert grid(session.state) == new  # the bars are the new piece's own, unmoved
    assert session.controls.sync is not None and session.controls.sync.bpm == new.tempo_bpm
    # polled again: within tolerance, nothing is forced or re-planned
    assert poll() == [] and lead.bars_led == 2


def test_a_fractional_quantum_aligns_beats_only() -> None:
    hub = ControlHub(CONFIG)
    link = LinkSync(LinkConfig(enabled=True, quantum=3.5), hub, lambda: None,
                    link_module=object(), clock=lambda: 5000.0)
    link.step(FakeLink(tempo=120.0, beat=7.25, quantum=3.5))
    sent = _grids(hub)[0]
    assert sent["sync_beats"] == 1.0
    assert _wall(sent["sync_downbeat"]) % 86400 == pytest.approx((5000.0 + 0.75 * 0.5) % 86400)


class ClockPort:
    """An rtmidi MidiIn look-alike."""

    def __init__(self) -> None:
        self.callback: Any = None

    def set_callback(self, callback: Any) -> None:
        self.callback = callback

    def ignore_types(self, **_: bool) -> None:
        pass


def test_a_midi_clock_after_start_gives_its_downbeats_despite_jitter() -> None:
    estimate = ClockTempo(beats_per_bar=4)
    rng = random.Random(3)
    period = 60.0 / 97.3 / 24
    estimate.start()
    readings = []
    for n in range(24 * 16):  # four bars; pulse n is due at n * period
        reading = estimate.pulse(n * period + rng.uniform(0.0, 0.002))
        if reading is not None:
            readings.append((n, reading))
    assert len(readings) == 15  # once a beat from the second beat on
    late = readings[-4:]
    for n, reading in late:
        assert reading.bpm == pytest.approx(97.3, abs=0.05)
        assert reading.downbeat is not None
        due = -(-n // 96) * 96 * period  # the next bar line at or after pulse n
        assert reading.downbeat == pytest.approx(due + 0.001, abs=0.0015)


def test_song_position_then_continue_places_the_downbeats() -> None:
    estimate = ClockTempo(beats_per_bar=4)
    period = 60.0 / 120.0 / 24
    estimate.song_position(36)  # sixteenth 36 = bar 3, beat 2 (0-based: 216 pulses)
    estimate.resume()
    readings = [(n, r) for n in range(48)
                if (r := estimate.pulse(n * period)) is not None]
    n, reading = readings[-1]
    assert estimate.position == 216 + 47
    assert reading.downbeat == pytest.approx((n + (-(216 + n) % 96)) * period)
    estimate.stop()  # pulses go on, the song position holds
    estimate.pulse(48 * period)
    assert estimate.position == 216 + 47


def test_a_midi_clock_without_start_gives_a_tempo_but_no_grid() -> None:
    hub = ControlHub(CONFIG)
    port = ClockPort()
    MidiControlInput(MidiInConfig(port="x", clock_in=True), hub, ports=[port])
    period = 60.0 / 100.0 / 24
    for _ in range(24 * 3):
        port.callback(([CLOCK], period))
    messages = hub.pending()
    assert any("tempo_bpm" in m.params for m in messages)
    assert not any("sync_downbeat" in m.params for m in messages)


def test_a_started_midi_clock_sends_its_bar_grid_on_the_wall_clock(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import installation.midi_in as midi_in

    hub = ControlHub(CONFIG)
    port = ClockPort()
    MidiControlInput(MidiInConfig(port="x", clock_in=True, clock_beats=3), hub, ports=[port])
    period = 60.0 / 100.0 / 24
    # the wall clock as the callback sees it: each message 0.5-3 ms after it was sent
    began = time.time()
    sent_at = {"t": began}
    rng = random.Random(5)
    monkeypatch.setattr(midi_in.time, "time", lambda: sent_at["t"] + rng.uniform(5e-4, 3e-3))
    port.callback(([START], 0.0))
    for _ in range(24 * 7):
        sent_at["t"] += period
        port.callback(([CLOCK], period))
    monkeypatch.undo()
    grids = _grids(hub)
    assert grids and {g["sync_beats"] for g in grids} == {3.0}
    assert {g["sync_bpm"] for g in grids} == {100.0}
    # song position 0 was sent one period after Start; bars of 3 beats (72 pulses)
    zero = began + period
    for grid in grids:
        bars = (_wall(grid["sync_downbeat"]) - zero) / (72 * period)
        assert round(bars) >= 1
        assert abs(bars - round(bars)) * 72 * period < 0.003  # within 3 ms of the clock's


def test_the_phase_benchmark_hears_the_bars_on_the_downbeats_of_an_exact_card(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "phase_sync.py"
    spec = importlib.util.spec_from_file_location("phase_sync_bench", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "phase_sync_bench", bench)  # its dataclasses look it up
    spec.loader.exec_module(bench)
    exact = bench.play(bench.CASES[0], minutes=0.5)
    assert exact["bars"] >= 8 and exact["max_ms"] < 1.0 and exact["nudges_per_hour"] == 0
    drifting = bench.play(bench.Case("card +2000 ppm", 2000.0, 0.0), minutes=0.5)
    # 2000 ppm drifts 15 ms in 7.5 s: nudged back onto the grid, never far off it
    assert drifting["nudges_per_hour"] > 0 and drifting["max_ms"] < 20.0
    assert bench.main(["--minutes", "0.5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"]["passed"] is True
