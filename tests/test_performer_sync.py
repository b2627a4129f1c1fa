"""Beat and bar out (engine.beats) on a fake clock and over real UDP; the MIDI file's tempo map."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import mido
import numpy as np
import pretty_midi
import pytest
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_server import ThreadingOSCUDPServer

from audio_out.midi import MidiRecorder, Note, PlayedNotes, TempoChange, write_midi_file
from audio_out.timeline import SpliceResult
from engine.beats import BeatGrid, BeatOut, MidiClockOut, chord_name, grid_of
from engine.generators.procedural.config import ProceduralConfig
from engine.generators.procedural.generator import ProceduralGenerator
from engine.generators.procedural.mapping import decide
from ground.errors import ConfigError

RATE = 48000


class FakeClock:
    """Seconds that move only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _grid(bpm: float = 120.0, beats: int = 4, anchor: int = 0, key: str = "C major",
          start: int | None = None) -> BeatGrid:
    beat = 60.0 / bpm * RATE
    return BeatGrid(anchor=anchor, bar_samples=beat * beats, beats_per_bar=beats, key=key,
                    start=anchor if start is None else start,
                    chord=lambda bar: f"chord {bar}", identity=(bpm, beats, anchor, key))


def _play(beats: BeatOut, clock: FakeClock, seconds: float, room: str = "r",
          grids: dict[float, BeatGrid] | None = None, stall_at: float | None = None,
          turn_s: float = 0.02, step_s: float = 0.005) -> None:
    """Run a fake timeline: the engine observes every ``turn_s``, the sender pumps every
    ``step_s``; the playhead advances in real time (until ``stall_at``)."""
    grids = dict(grids or {})
    next_turn = clock.now
    end = clock.now + seconds
    while clock.now < end - 1e-9:
        if clock.now >= next_turn - 1e-9:
            grid = None
            for at in sorted(grids):
                if at <= clock.now + 1e-9:
                    grid = grids.pop(at)
            heard = clock.now if stall_at is None else min(clock.now, stall_at)
            beats.observe(room, grid, int(round(heard * RATE)))
            next_turn += turn_s
        beats.pump()
        clock.now = round(clock.now + step_s, 6)


def _recorder(clock: FakeClock) -> tuple[list[tuple[float, str, Any]], Any]:
    sent: list[tuple[float, str, Any]] = []
    return sent, lambda address, value: sent.append((clock.now, address, value))


def test_chord_names_are_root_and_quality() -> None:
    assert chord_name((9, 0, 4)) == "A minor"
    assert chord_name((7, 11, 2, 5)) == "G dominant 7"
    assert chord_name((0, 4, 7, 11, 2)) == "C major 7"
    assert chord_name((11, 2, 5)) == "B diminished"
    assert chord_name((2,)) == "D"
    with pytest.raises(ValueError, match="chord_name: expected at least the root"):
        chord_name(())


def test_beats_arrive_at_the_plans_tempo_within_20_ms_of_the_playhead() -> None:
    clock = FakeClock()
    sent, send = _recorder(clock)
    beats = BeatOut(["r"], RATE, send, clock=clock)
    _play(beats, clock, 4.0, grids={0.0: _grid(120.0, 4)})  # 120 bpm: a beat each 0.5 s
    beat_times = [t for t, address, _ in sent if address == "/art2mus/r/beat"]
    assert [v for _, a, v in sent if a == "/art2mus/r/beat"] == [1, 2, 3, 4] * 2
    assert [v for _, a, v in sent if a == "/art2mus/r/bar"] == [1, 2]
    assert [v for _, a, v in sent if a == "/art2mus/r/chord"] == ["chord 0", "chord 1"]
    assert [v for _, a, v in sent if a == "/art2mus/r/key"] == ["C major"]
    for index, at in enumerate(beat_times):
        assert 0.0 <= at - 0.5 * index <= 0.02  # sent when the playhead reaches it
    # the key comes before the bar, the bar and chord before the beat they start
    assert [a.rsplit("/", 1)[1] for _, a, _ in sent[:4]] == ["key", "bar", "chord", "beat"]


def test_a_new_piece_starts_counting_on_its_first_downbeat() -> None:
    clock = FakeClock()
    sent, send = _recorder(clock)
    beats = BeatOut(["r"], RATE, send, clock=clock)
    first = _grid(120.0, 4)
    # queued at 1.2 s (0.75 s ahead), starting at 1.95 s, first downbeat at 2.0 s, in 3/4 at 90
    second = _grid(90.0, 3, anchor=2 * RATE, key="D dorian", start=int(1.95 * RATE))
    _play(beats, clock, 4.0, grids={0.0: first, 1.2: second})
    beat = [(t, v) for t, a, v in sent if a.endswith("/beat")]
    assert [v for _, v in beat] == [1, 2, 3, 4, 1, 2, 3]
    assert [t for t, _ in beat] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2 + 2 / 3,
                                                  2 + 4 / 3], abs=0.02)
    keys = [(round(t, 2), v) for t, a, v in sent if a.endswith("/key")]
    assert keys == [(0.0, "C major"), (2.0, "D dorian")]
    assert [v for _, a, v in sent if a.endswith("/bar")] == [1, 1]


def test_a_replaced_grid_is_never_counted_and_a_stall_stops_the_beats() -> None:
    clock = FakeClock()
    sent, send = _recorder(clock)
    beats = BeatOut(["r"], RATE, send, clock=clock)
    replaced = _grid(60.0, 4, anchor=2 * RATE, key="E minor", start=int(1.9 * RATE))
    instead = _grid(120.0, 4, anchor=int(1.8 * RATE), key="F lydian", start=int(1.7 * RATE))
    _play(beats, clock, 3.0, grids={0.0: _grid(), 1.0: replaced, 1.1: instead}, stall_at=2.5)
    keys = [v for _, a, v in sent if a.endswith("/key")]
    assert keys == ["C major", "F lydian"]
    beat_times = [t for t, a, _ in sent if a.endswith("/beat")]
    # beats at 0, .5, 1, 1.5 (the old piece), then 1.8, 2.3 (the new one); the playhead
    # stops at 2.5 s: nothing is extrapolated past it
    assert beat_times == pytest.approx([0.0, 0.5, 1.0, 1.5, 1.8, 2.3], abs=0.02)


def _changed_at_a_bar_line(offset: int) -> list[tuple[float, str, Any]]:
    """Beat out when a new piece's first downbeat lands ``offset`` samples after the old
    piece's fourth bar line (9 s: 80 bpm in 4/4), queued at 8 s; what was sent."""
    clock = FakeClock()
    sent, send = _recorder(clock)
    beats = BeatOut(["r"], RATE, send, clock=clock)
    old = _grid(80.0, 4, key="C# phrygian")
    line = 3 * int(old.bar_samples)
    new = _grid(120.0, 4, anchor=line + offset, key="G ionian", start=line - RATE)
    _play(beats, clock, 11.0, grids={0.0: old, 8.0: new})
    return sent


def test_a_new_piece_on_the_old_bar_line_but_a_few_samples_late_is_one_downbeat() -> None:
    # the composer's anchor is the old bar line rounded to a sample: sent apart, the old
    # piece's /bar 4 and the new one's /bar 1 left 0.5 ms from each other
    sent = _changed_at_a_bar_line(24)  # 0.5 ms
    near = [(a.rsplit("/", 1)[1], v) for t, a, v in sent if 8.9 < t < 9.2]
    assert near == [("key", "G ionian"), ("bar", 1), ("chord", "chord 0"), ("beat", 1)]
    assert [v for _, a, v in sent if a.endswith("/bar")] == [1, 2, 3, 1]
    beats = [(t, v) for t, a, v in sent if a.endswith("/beat")][8:14]
    assert [v for _, v in beats] == [1, 2, 3, 4, 1, 2]
    assert [t for t, _ in beats] == pytest.approx([6.0, 6.75, 7.5, 8.25, 9.0, 9.5], abs=0.01)


def test_a_boundary_well_before_a_new_pieces_first_downbeat_is_still_sent() -> None:
    sent = _changed_at_a_bar_line(int(0.05 * RATE))  # 50 ms: two onsets a listener hears
    assert [v for _, a, v in sent if a.endswith("/bar")] == [1, 2, 3, 4, 1]
    beats = [(t, v) for t, a, v in sent if a.endswith("/beat")][11:14]
    assert [v for _, v in beats] == [4, 1, 1]
    assert [t for t, _ in beats] == pytest.approx([8.25, 9.0, 9.05], abs=0.01)


def test_midi_clock_out_sends_one_pulse_at_a_new_piece_a_few_samples_after_an_old_one(
) -> None:
    clock = FakeClock()
    sent: list[tuple[float, list[int]]] = []
    out = MidiClockOut("r", RATE, lambda message: sent.append((clock.now, message)),
                       clock=clock)
    first = dataclasses.replace(_grid(120.0), tempo_bpm=120.0)
    second = dataclasses.replace(_grid(90.0, anchor=2 * RATE + 24, key="D dorian",
                                       start=RATE), tempo_bpm=90.0)
    _play(out, clock, 3.0, grids={0.0: first, 1.5: second}, step_s=0.001)
    pulses = np.asarray([t for t, m in sent if m == [0xF8]])
    gaps = np.diff(pulses)
    # no pulse 0.5 ms before the new piece's first one: every gap is a pulse of either tempo
    assert gaps.min() > 60 / 120 / 24 - 0.0015
    assert np.sum(np.abs(pulses - 2.0) < 0.003) == 1


def test_the_procedural_plan_gives_the_grid_and_beats_follow_its_tempo_and_meter() -> None:
    config = ProceduralConfig()
    generator = ProceduralGenerator(config, RATE)
    decisions = decide({"brightness": 0.7, "warmth": 0.6}, config, "art")
    state = generator.start(decisions, seed=3, start_sample=0, previous=None)
    grid = grid_of(state)
    assert grid is not None and grid_of(object()) is None
    assert grid.beats_per_bar == decisions.meter[0]
    assert (grid.tempo_bpm, grid.meter) == (decisions.tempo_bpm, decisions.meter)
    quarter = 60.0 / decisions.tempo_bpm * RATE
    assert grid.bar_samples == pytest.approx(quarter * decisions.quarters_per_bar)
    assert grid.key.split()[1] == decisions.mode
    assert grid.chord is not None and grid.chord(0).split()[0] == grid.key.split()[0]
    clock = FakeClock()
    sent, send = _recorder(clock)
    beats = BeatOut(["r"], RATE, send, clock=clock)
    seconds = 6.0
    _play(beats, clock, seconds, grids={0.0: grid})
    count = sum(1 for _, a, _ in sent if a.endswith("/beat"))
    assert count == int(seconds * RATE / grid.beat_samples - 1e-9) + 1


def test_beats_go_out_over_udp_from_the_senders_thread() -> None:
    received: list[tuple[str, Any]] = []
    arrived = threading.Event()
    lock = threading.Lock()

    def record(address: str, *args: Any) -> None:
        with lock:
            received.append((address, args[0]))
            if address.endswith("/beat"):
                arrived.set()

    dispatcher = Dispatcher()
    dispatcher.set_default_handler(record)
    listener = ThreadingOSCUDPServer(("127.0.0.1", 0), dispatcher)
    threading.Thread(target=listener.serve_forever, daemon=True).start()
    clock = FakeClock()
    beats = BeatOut.start([f"127.0.0.1:{listener.server_address[1]}"], ["hall"], RATE,
                          prefix="/show", clock=clock)
    try:
        beats.observe("hall", _grid(), 0)
        assert arrived.wait(5.0)
        arrived.clear()
        clock.now = 0.5
        beats.observe("hall", None, RATE // 2)
        assert arrived.wait(5.0)
    finally:
        beats.close()
        listener.shutdown()
        listener.server_close()
    with lock:
        assert received == [("/show/hall/key", "C major"), ("/show/hall/bar", 1),
                            ("/show/hall/chord", "chord 0"), ("/show/hall/beat", 1),
                            ("/show/hall/beat", 2)]


# ------------------------------------------------------------------ MIDI clock out


def test_midi_clock_out_pulses_24_to_the_quarter_from_a_bar_line_and_follows_a_new_tempo(
) -> None:
    clock = FakeClock()
    sent: list[tuple[float, list[int]]] = []
    out = MidiClockOut("r", RATE, lambda message: sent.append((clock.now, message)),
                       clock=clock)
    first = dataclasses.replace(_grid(120.0), tempo_bpm=120.0)
    # the next piece (90 bpm) takes over at 3.0 s, its first downbeat
    second = dataclasses.replace(_grid(90.0, anchor=3 * RATE, key="D dorian", start=2 * RATE),
                                 tempo_bpm=90.0)
    clock.now = 0.7  # the room is heard from mid-bar: Start waits for the next bar line (2 s)
    _play(out, clock, 4.3, grids={0.7: first, 2.5: second}, step_s=0.001)
    out.close()
    assert sent[0] == (pytest.approx(2.0, abs=0.003), [0xFA])  # Start, on the bar line
    pulses = np.asarray([t for t, m in sent if m == [0xF8]])
    assert pulses[0] == pytest.approx(2.0, abs=0.003)
    gaps = np.diff(pulses)
    # 120 bpm: a pulse every 60 / 120 / 24 s until 3.0 s; 90 bpm from its first downbeat
    before, after = pulses[1:] <= 3.0 + 0.003, pulses[1:] > 3.0 + 0.03
    assert before.sum() == 48 and np.allclose(gaps[before], 60 / 120 / 24, atol=0.0015)
    assert after.sum() > 40 and np.allclose(gaps[after], 60 / 90 / 24, atol=0.0015)
    assert sent[-1][1] == [0xFC] and out.pulses_sent == len(pulses)  # Stop on close


def test_midi_clock_out_names_its_setting_when_the_port_is_missing() -> None:
    class Out:
        def get_ports(self) -> list[str]:
            return ["Midi Through:0"]

    module = type("rtmidi", (), {"MidiOut": Out})
    with pytest.raises(ConfigError, match=r"control.midi.clock_out: no MIDI output port "
                                          r"contains 'TR-8'; available: 'Midi Through:0'"):
        MidiClockOut.open("TR-8", "r", RATE, rtmidi_module=module)


def test_midi_clock_out_asks_for_realtime_and_a_short_gil_switch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    class Port:
        def __init__(self) -> None:
            self.sent: list[list[int]] = []

        def get_ports(self) -> list[str]:
            return ["TR-8 MIDI 1"]

        def open_port(self, index: int) -> None:
            pass

        def send_message(self, message: list[int]) -> None:
            self.sent.append(message)

        def close_port(self) -> None:
            pass

    module = type("rtmidi", (), {"MidiOut": Port})
    interval = sys.getswitchinterval()
    asked: list[tuple[int, int]] = []

    def refuse(pid: int, policy: int, param: object) -> None:
        asked.append((pid, policy))
        raise PermissionError("not allowed")  # no CAP_SYS_NICE nor LimitRTPRIO here

    monkeypatch.setattr("os.sched_setscheduler", refuse, raising=False)
    try:
        out = MidiClockOut.open("TR-8", "r", RATE, rtmidi_module=module)
        assert sys.getswitchinterval() <= 0.001
        assert out.realtime is False and asked and asked[0][0] == 0  # this thread, refused
        out.close()
    finally:
        sys.setswitchinterval(interval)


# ------------------------------------------------------------------ the MIDI file's grid
def _ticks(path: Path, kind: str) -> list[tuple[int, Any]]:
    """(absolute tick, message) of every ``kind`` message in the file, any track."""
    found = []
    for track in mido.MidiFile(str(path)).tracks:
        tick = 0
        for message in track:
            tick += message.time
            if message.type == kind:
                found.append((tick, message))
    return sorted(found, key=lambda item: item[0])


def test_the_midi_file_carries_the_tempo_meter_and_instrument_names(tmp_path: Path) -> None:
    bar_34 = int(3 * 60 / 90 * RATE)  # a 3/4 bar at 90 bpm: 2 s
    bar_68 = int(3 * 60 / 140 * RATE)  # a 6/8 bar (three quarters) at 140 bpm
    change = 8 * bar_34
    rows = [(0, 4800, 60, 100, 40, 2), (bar_34, 4800, 62, 100, 40, 2),
            (change + bar_68, 4800, 36, 110, 128, 9)]
    path = tmp_path / "take.mid"
    write_midi_file(path, np.array(rows), RATE,
                    [TempoChange(0, 90.0, (3, 4)), TempoChange(change, 140.0, (6, 8))])
    pm = pretty_midi.PrettyMIDI(str(path))
    times, tempi = pm.get_tempo_changes()
    assert list(times) == pytest.approx([0.0, 16.0]) and list(tempi) == pytest.approx(
        [90.0, 140.0], abs=0.01)
    assert [(s.numerator, s.denominator, s.time) for s in pm.time_signature_changes] == [
        (3, 4, 0.0), (6, 8, pytest.approx(16.0))]
    assert sorted(i.name for i in pm.instruments) == ["Percussion", "Violin"]
    # on the DAW's grid: bar 2 of 3/4 at 3 x 480 ticks, the drum on bar 2 of the 6/8 part
    ons = [tick for tick, m in _ticks(path, "note_on")]
    assert ons == [0, 3 * 480, 8 * 3 * 480 + 6 * 240]
    programs = [m.program for _, m in _ticks(path, "program_change")]
    assert programs == [40]  # percussion has none: GM channel 10
    # notes keep their exact times
    (violin,) = [i for i in pm.instruments if i.name == "Violin"]
    assert [n.start for n in violin.notes] == pytest.approx([0.0, 2.0], abs=1e-3)


def test_a_file_without_a_tempo_map_is_120_bpm_in_four(tmp_path: Path) -> None:
    path = tmp_path / "plain.mid"
    write_midi_file(path, np.array([(RATE, 4800, 60, 90, 0, 0)]), RATE)
    pm = pretty_midi.PrettyMIDI(str(path))
    assert list(pm.get_tempo_changes()[1]) == pytest.approx([120.0])
    assert pm.instruments[0].name == "Acoustic Grand Piano"
    assert pm.instruments[0].notes[0].start == pytest.approx(1.0)


def test_the_streamed_segment_writes_tempo_changes_where_they_are_heard(tmp_path: Path) -> None:
    played = PlayedNotes()
    # queued on the timeline: 90 bpm 3/4 from 0, then a change at 4 s that a splice replaces,
    # then 120 bpm 4/4 at 6 s
    played.add_tempo(TempoChange(0, 90.0, (3, 4)))
    played.add_tempo(TempoChange(4 * RATE, 60.0, (4, 4)))
    played.add_chunk(1, 3 * RATE, None, SpliceResult("replace", 3 * RATE, 3 * RATE, 4 * RATE,
                                                      0, 0, 0, 0))
    played.add_tempo(TempoChange(6 * RATE, 120.0, (4, 4)))
    played.add_tempo(TempoChange(6 * RATE, 120.0, (4, 4)))  # every chunk says it again
    recorder = MidiRecorder(tmp_path / "take.mid", RATE, room="r")
    offset = 1000  # the played stream's frame 1000 is timeline sample 0
    first = played.take_tempi(playhead=10, frames_out=10 + offset)
    recorder.advance([Note(0, 4800, 60, 90, 40, 2, out_start=offset)], 10 + offset, first)
    later = played.take_tempi(playhead=6 * RATE + 10, frames_out=6 * RATE + 10 + offset)
    played.add_tempo(TempoChange(6 * RATE, 120.0, (4, 4)))  # already written: not again
    assert played.take_tempi(playhead=7 * RATE, frames_out=7 * RATE + offset) == []
    note = Note(6 * RATE, 6 * RATE + 4800, 64, 90, 40, 2, out_start=6 * RATE + offset)
    recorder.advance([note], 6 * RATE + 10 + offset, later)
    recorder.close(7 * RATE + offset)
    assert [t.bpm for t in first + later] == [90.0, 120.0]
    assert later[0].frame == 6 * RATE + offset
    tempos = [(tick, round(mido.tempo2bpm(m.tempo), 3)) for tick, m in
              _ticks(recorder.path, "set_tempo")]
    # 120 bpm until the first change (1000 frames = 20 ticks), 90 for 6 s = 9 beats
    assert tempos == [(0, 120.0), (20, 90.0), (20 + 9 * 480, 120.0)]
    meters = [(m.numerator, m.denominator) for _, m in _ticks(recorder.path, "time_signature")]
    assert meters == [(4, 4), (3, 4), (4, 4)]
    names = [m.name for _, m in _ticks(recorder.path, "instrument_name")]
    assert names == ["Violin"]
    ons = [tick for tick, _ in _ticks(recorder.path, "note_on")]
    assert ons == [20, 20 + 9 * 480]  # the second note on the new tempo's downbeat


def test_the_engine_feeds_its_rooms_grids_and_playheads_to_beat_out() -> None:
    import zmq

    from engine.server import EngineServer
    from ground.protocol import PROTOCOL_VERSION, PlaybackClock
    from ground.transport import make_socket, send
    from installation.config import config_from_dict
    from installation.roles import engine_role_config

    config = config_from_dict({
        "network": {part: f"inproc://beats-{part}" for part in ("views", "chunks", "clock",
                                                                "control")},
        "engine": {"generator": "procedural", "chunk_s": 0.25, "lead_s": 0.75},
        "rooms": [{"id": "hall", "seed": 1}],
    })
    context = zmq.Context()
    clock = FakeClock()
    clock.now = 1000.0
    sent, send_beat = _recorder(clock)
    beats = BeatOut(["hall"], 48000, send_beat, clock=clock)
    server = EngineServer(engine_role_config(config), lambda *a, **k: None, context=context,
                          clock=clock, beat_out=beats)
    net = server.config.network
    listener = make_socket(context, zmq.SUB, net.chunks, bind=False, subscribe=["hall"])
    clocks = make_socket(context, zmq.PUSH, net.clock, bind=False)
    rate = server.generator.sample_rate
    try:
        send(clocks, PlaybackClock(v=PROTOCOL_VERSION, room="hall", sample_rate=rate,
                                   playhead=0, buffered_until=0, wall_time=0.0, state="playing"))
        for _ in range(500):  # only a bound on the sockets connecting
            server.turn(poll_ms=10)
            if server.subscribed and server.sessions["hall"].playhead_estimate() is not None:
                break
        started = clock.now
        for _ in range(80):  # 4 s of fake time, a turn every 50 ms
            server.turn(poll_ms=0)
            while listener.poll(0):
                listener.recv_multipart()
            for _ in range(10):
                beats.pump()
                clock.now = round(clock.now + 0.005, 6)
        grid = grid_of(server.sessions["hall"].state)
    finally:
        listener.close()
        clocks.close()
        server.close()
        context.term()
    assert grid is not None
    beat_times = [t - started for t, a, _ in sent if a == "/art2mus/hall/beat"]
    # every beat from the first downbeat to 4 s of playing, each when the playhead got there
    expected = int((4.0 * rate - grid.anchor) / grid.beat_samples - 1e-9) + 1
    assert len(beat_times) == expected
    for index, at in enumerate(beat_times):
        assert 0.0 <= at - (grid.anchor + index * grid.beat_samples) / rate <= 0.02
    assert [v for _, a, v in sent if a.endswith("/key")] == [grid.key]


def test_a_rendered_midi_file_carries_the_plans_tempo_and_meter(tmp_path: Path) -> None:
    """`art2mus render --midi`: the file's tempo map is the music's, so a DAW's grid fits."""
    import json

    import cv2
    import mido
    from click.testing import CliRunner

    from capture.synthetic.scenes import catalogue_artwork
    from installation.cli import cli

    image = tmp_path / "work.png"
    cv2.imwrite(str(image), catalogue_artwork(3))
    result = CliRunner().invoke(cli, ["render", str(image), "--seconds", "2", "--out",
                                      str(tmp_path / "a.wav"), "--midi", str(tmp_path / "a.mid"),
                                      "--json"])
    assert result.exit_code == 0, result.output
    decisions = json.loads(result.output[result.output.index("{"):])["decisions"]
    track = mido.MidiFile(str(tmp_path / "a.mid")).tracks[0]
    tempo = [round(mido.tempo2bpm(m.tempo), 1) for m in track if m.type == "set_tempo"]
    meter = [f"{m.numerator}/{m.denominator}" for m in track if m.type == "time_signature"]
    assert tempo == [round(decisions["tempo_bpm"], 1)] and meter == [decisions["meter"]]
