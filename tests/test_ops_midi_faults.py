"""MIDI in and out when the other side misbehaves: a clock at a refused tempo, a controller
flooding transport messages, an output port that fails mid-show, odd MIDI segment files.

Everything goes through the code's seams (fake rtmidi ports, fake clocks, ``send``
callables); no test waits on the wall clock.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import mido
import pytest

from audio_out.midi import MidiPortOut, Note
from engine.beats import BeatGrid, BeatOut, MidiClockOut
from ground.protocol import SYNC_KEYS
from installation.config import LinkConfig, MidiInConfig, config_from_dict
from installation.control import ControlHub
from installation.demo import join_midi
from installation.midi_in import TRANSPORT_LOGS_PER_WINDOW, MidiControlInput, TransportLog
from installation.tempo_sync import LinkSync, takes_tempo

CONFIG = config_from_dict({"rooms": [{"id": "a"}, {"id": "b"}]})
CLOCK, START, CONTINUE, STOP = 0xF8, 0xFA, 0xFB, 0xFC
RATE = 48000

Events = list[tuple[str, dict[str, Any]]]


class FakeClock:
    """Seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ClockPort:
    """An rtmidi MidiIn look-alike a test plays a MIDI clock through."""

    def __init__(self) -> None:
        self.callback: Any = None

    def set_callback(self, callback: Any) -> None:
        self.callback = callback

    def ignore_types(self, **_kinds: bool) -> None:
        pass

    def close_port(self) -> None:
        pass

    def play(self, bpm: float, beats: int, gap_s: float | None = None) -> None:
        """``beats`` beats of clock at ``bpm``; the first pulse ``gap_s`` after the last."""
        period = 60.0 / bpm / 24
        for pulse in range(beats * 24):
            delta = gap_s if pulse == 0 and gap_s is not None else period
            self.callback(([CLOCK], delta))


def _clock_input(clock: FakeClock | None = None
                 ) -> tuple[MidiControlInput, ControlHub, ClockPort, Events]:
    """A MIDI input with clock_in on a fake port; its transport log on ``clock`` if given."""
    events: Events = []

    def log_event(kind: str, **fields: Any) -> None:
        events.append((kind, fields))

    hub = ControlHub(CONFIG, log_event)
    port = ClockPort()
    transport = None if clock is None else TransportLog(log_event, clock=clock)
    midi = MidiControlInput(MidiInConfig(port="drum machine", clock_in=True), hub, log_event,
                            ports=[port], transport=transport)
    return midi, hub, port, events


def _grids(hub: ControlHub) -> list[dict[str, Any]]:
    return [m.params for m in hub.pending() if set(SYNC_KEYS) <= set(m.params)]


# ------------------------------------------------------------------ 1. refused clock, no grid


@pytest.mark.parametrize("bad_bpm", [3000.0, 12.0])
def test_a_clock_whose_tempo_is_refused_sends_no_downbeats(bad_bpm: float) -> None:
    midi, hub, port, _ = _clock_input()
    port.callback(([START], 0.0))
    port.play(120.0, beats=16)
    good = _grids(hub)
    assert hub.current("tempo_bpm") == 120.0 and good  # a good clock moves the bars
    sent = midi.grid.count
    # the machine restarts at a tempo no room plays (after a pause: its window starts over)
    port.play(bad_bpm, beats=40, gap_s=2.0)
    refused = midi.refusals.by_reason["tempo-out-of-range"]
    assert refused >= 30
    assert _grids(hub) == [] and midi.grid.count == sent  # its bars move nothing
    assert hub.current("tempo_bpm") == 120.0
    # the clock comes back in range: its tempo and bars are followed again
    port.play(100.0, beats=4, gap_s=2.0)
    assert hub.current("tempo_bpm") == 100.0
    assert _grids(hub)[-1]["sync_bpm"] == 100.0


def test_takes_tempo_is_what_the_follower_does_not_refuse() -> None:
    assert takes_tempo(20.0) and takes_tempo(300) and takes_tempo(97.3)
    for bad in (19.99, 300.01, float("nan"), float("inf"), True, "120", None):
        assert not takes_tempo(bad)


class FakeLink:
    """An aalink.Link look-alike: a session tempo, peers, a beat and a phase."""

    def __init__(self, tempo: float) -> None:
        self.tempo = tempo
        self.num_peers = 1
        self.beat = self.phase = 0.0


def test_a_link_session_at_a_refused_tempo_sends_no_downbeats() -> None:
    hub = ControlHub(CONFIG)
    link = LinkSync(LinkConfig(enabled=True), hub, lambda: None, link_module=object(),
                    clock=lambda: 1000.0)
    session = FakeLink(128.0)
    link.step(session)
    assert hub.current("tempo_bpm") == 128.0 and link.grid.count == 1
    session.tempo = 500.0  # Link allows up to 999 bpm; no room plays it
    for _ in range(5):
        link.step(session)
    assert link.follower.refusals.by_reason["tempo-out-of-range"] == 5
    assert link.grid.count == 1 and hub.current("tempo_bpm") == 128.0


# ------------------------------------------------------------------ 2. transport log flood


def test_transport_is_logged_on_a_change_of_state_and_repeats_are_counted() -> None:
    clock = FakeClock()
    midi, _, port, events = _clock_input(clock)
    transport = midi.transport
    for status in (START, START, CONTINUE, STOP, STOP, CONTINUE):
        port.callback(([status], 0.001))
    logged = [(f["state"], f) for kind, f in events if kind == "midi_clock"]
    assert [state for state, _ in logged] == ["start", "stop", "continue"]
    assert "tempo_bpm" in logged[1][1] and "position" in logged[2][1]
    assert transport.by_message == {"start": 2, "continue": 2, "stop": 2}
    clock.now = 11.0  # the next pulse after the window: the repeats are told once
    port.callback(([CLOCK], 0.001))
    summaries = [f for kind, f in events if kind == "midi_clock_summary"]
    assert len(summaries) == 1
    assert summaries[0]["unlogged"] == 3 and summaries[0]["state"] == "running"
    assert summaries[0]["by_message"] == {"start": 1, "continue": 1, "stop": 1}


def test_a_flood_of_transport_messages_writes_a_handful_of_events() -> None:
    clock = FakeClock()
    midi, _, port, events = _clock_input(clock)
    transport = midi.transport
    for _ in range(10_000):  # a merger looping Start/Continue/Stop back
        for status in (START, CONTINUE, STOP):
            port.callback(([status], 0.0001))
    assert sum(transport.by_message.values()) == 30_000
    assert len(events) == TRANSPORT_LOGS_PER_WINDOW
    midi.close()  # what was not logged is summarised
    summary = events[-1]
    assert summary[0] == "midi_clock_summary" and summary[1]["state"] == "stopped"
    assert summary[1]["unlogged"] == 30_000 - TRANSPORT_LOGS_PER_WINDOW
    assert len(events) == TRANSPORT_LOGS_PER_WINDOW + 1


# ------------------------------------------------------------------ 3. MIDI out survives


class DriverError(Exception):
    """Stands in for rtmidi.SystemError (not an OSError)."""


class FlakyOut:
    """An rtmidi MidiOut look-alike that refuses the messages whose numbers it is given."""

    def __init__(self, fail: set[int]) -> None:
        self.fail = fail
        self.tries = 0
        self.sent: list[list[int]] = []
        self.closed = False

    def send_message(self, message: list[int]) -> None:
        self.tries += 1
        if self.tries in self.fail:
            raise DriverError("MidiOutAlsa::sendMessage: error sending MIDI message to port.")
        self.sent.append(list(message))

    def close_port(self) -> None:
        self.closed = True


def _unreleased(sent: list[list[int]]) -> set[tuple[int, int]]:
    """(channel, pitch) of notes turned on and not off, in send order."""
    on: set[tuple[int, int]] = set()
    for status, pitch, _ in sent:
        if status & 0xF0 == 0x90:
            on.add((status & 0x0F, pitch))
        elif status & 0xF0 == 0x80:
            on.discard((status & 0x0F, pitch))
    return on


def test_midi_out_goes_on_after_a_refused_message_and_still_releases_the_note(
        caplog: pytest.LogCaptureFixture) -> None:
    port = FlakyOut(fail={4, 5, 6})  # the second note's off, and the port stays down a while
    heard = {"at": 0}
    out = MidiPortOut(port, lambda: heard["at"])
    out.feed([Note(i * 100, i * 100 + 50, 60 + i, 90, 0, 0) for i in range(4)])
    with caplog.at_level(logging.WARNING, logger="audio_out.midi"):
        for position in range(0, 500, 25):
            heard["at"] = position
            out.send_due()
    assert out.send_errors == 3 and len(port.sent) == 8  # every note went on and off
    assert _unreleased(port.sent) == set()
    assert port.sent.count([0x80, 61, 0]) == 1  # the refused off, sent once it could be
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2  # the run of failures, once, and the recovery
    assert "refused" in warnings[0] and "again" in warnings[1]


def test_midi_out_stop_releases_notes_and_never_raises_on_a_dead_port() -> None:
    port = FlakyOut(fail=set(range(2, 100)))  # unplugged after the first note-on
    heard = {"at": 0}
    out = MidiPortOut(port, lambda: heard["at"])
    out.feed([Note(0, 1000, 60, 90, 0, 2), Note(10, 20, 62, 90, 0, 2)])
    heard["at"] = 30
    out.send_due()
    out.send_due()  # the owed off is tried again, refused again: counted, no exception
    out.stop()
    assert port.sent == [[0x92, 60, 90]] and port.closed and out.send_errors >= 4

    port = FlakyOut(fail={2})  # a note-off refused, the port back by close
    out = MidiPortOut(port, lambda: heard["at"])
    out.feed([Note(0, 20, 64, 90, 0, 0)])
    out.send_due()
    out.stop()
    assert _unreleased(port.sent) == set() and out.send_errors == 1


def test_the_midi_out_thread_outlives_a_failed_poll() -> None:
    out: MidiPortOut

    calls = {"n": 0}

    def heard() -> int | None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("playback clock gone")
        out._stop.set()  # the second poll ends the run
        return None

    out = MidiPortOut(FlakyOut(set()), heard, poll_s=0.0)
    out._run()  # the thread's body, here: it returns instead of dying
    assert out.poll_errors == 1 and calls["n"] == 2


def _clock_grid() -> BeatGrid:
    beat = 60.0 / 120.0 * RATE
    return dataclasses.replace(BeatGrid(anchor=0, bar_samples=beat * 4, beats_per_bar=4,
                                        key="C major", identity=(1,)), tempo_bpm=120.0)


def _play_clock(out: MidiClockOut, clock: FakeClock, until_s: float) -> None:
    """The room's music at 120 bpm heard to ``until_s``, the sender pumped every 2 ms."""
    grid = _clock_grid()
    while clock.now < until_s:
        out.observe("r", grid, int(round(clock.now * RATE)))
        out.pump()
        clock.now = round(clock.now + 0.002, 6)


def test_midi_clock_out_keeps_pulsing_after_a_send_error() -> None:
    clock = FakeClock()
    sent: list[list[int]] = []
    tries = {"n": 0}

    def send(message: list[int]) -> None:
        tries["n"] += 1
        if tries["n"] in (30, 31):
            raise DriverError("driver error")
        sent.append(message)

    out = MidiClockOut("r", RATE, send, clock=clock)
    _play_clock(out, clock, 2.0)
    pulses = sum(1 for m in sent if m == [CLOCK])
    # 120 bpm: 48 pulses a second from the downbeat at 0 (96 by 1.998 s), two refused
    assert out.send_errors == 2 and pulses == 96 - 2 and out.pulses_sent == pulses
    assert sent[0] == [START]


def test_a_refused_midi_start_is_sent_again_at_the_next_bar_line() -> None:
    # A Start the port refused was never sent again: the drum machine got pulses, no Start.
    clock = FakeClock()
    sent: list[list[int]] = []

    def send(message: list[int]) -> None:
        if message == [START] and not sent:
            raise DriverError("driver error")
        sent.append(message)

    out = MidiClockOut("r", RATE, send, clock=clock)
    _play_clock(out, clock, 2.5)
    assert out.send_errors == 1 and out.started
    # the first downbeat's pulse left without its Start; the clock then waited for the next
    # bar line (2 s at 120 bpm, 4/4) and opened it with Start, as it opens the first
    assert sent[:3] == [[CLOCK], [START], [CLOCK]] and sent.count([START]) == 1
    assert sum(1 for m in sent if m == [CLOCK]) == 1 + 24  # then 2.0 .. 2.48 s: 24 pulses


def test_the_beat_sender_thread_outlives_a_failed_turn() -> None:
    out: BeatOut
    calls = {"n": 0}

    def clock() -> float:
        calls["n"] += 1
        if calls["n"] == 1:
            out._wake.set()  # no wait after the failed turn
            raise RuntimeError("clock gone")
        out._stop.set()
        return 0.0

    out = BeatOut(["r"], RATE, lambda _address, _value: None, clock=clock)
    out._run()
    assert out.pump_errors == 1


# ------------------------------------------------------------------ 4. odd MIDI segments


def _segment(path: Path, tempo: int = 500_000, division: bytes | None = None) -> Path:
    midi = mido.MidiFile(type=0, ticks_per_beat=480)
    track = mido.MidiTrack()
    midi.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=tempo, time=0))
    track.append(mido.Message("note_on", note=60, velocity=90, time=0))
    track.append(mido.Message("note_off", note=60, velocity=0, time=480))
    midi.save(str(path))
    if division is not None:  # the header's division, as a broken or SMPTE file has it
        data = bytearray(path.read_bytes())
        data[12:14] = division
        path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(("make", "why"), [
    (lambda p: _segment(p, tempo=0), "set_tempo 0 at tick 0 of track 0"),
    (lambda p: _segment(p, division=b"\x00\x00"), "ticks_per_beat 0"),
    (lambda p: _segment(p, division=b"\xe7\x28"), "an SMPTE time division"),
    (lambda p: p.write_bytes(_segment(p).read_bytes()[:-7]) and p, "unreadable (EOFError)"),
])
def test_join_midi_skips_a_segment_it_cannot_time_and_says_why(
        tmp_path: Path, make: Any, why: str) -> None:
    good = _segment(tmp_path / "good.mid")
    bad = make(tmp_path / "bad.mid")
    out, notes = join_midi([(good, 0.0), (bad, 10.0)], tmp_path / "take.mid")
    assert out == tmp_path / "take.mid"
    assert len(notes) == 1 and notes[0].startswith(f"bad.mid: {why}")
    assert notes[0].endswith(": skipped")
    joined = mido.MidiFile(str(out))
    assert sum(1 for t in joined.tracks for m in t if m.type == "note_on") == 1  # the good one
