"""Recording what played, the notes that played, and the MIDI port.

Segments per start that are never overwritten, files that stay valid without
a close (a SIGKILL), a full disk that stops the recording and not the music,
duplicate recording paths refused, and the stop fade (issue 12, items 3, 4, 7).
The real-process versions of these are in ``test_faults_recording.py``.
"""

from __future__ import annotations

import errno
import os
import struct
import time
import tracemalloc
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import mido
import numpy as np
import pretty_midi
import pytest
import soundfile
from disks import FullDisk
from memory import grown_in_our_code

from audio_out.config import AudioOutConfig
from audio_out.midi import (
    MidiPortOut,
    MidiRecorder,
    Note,
    PlayedNotes,
    open_midi_port,
    write_midi_file,
)
from audio_out.outputs import ArrayOutput
from audio_out.player import Player
from audio_out.recorder import Recorder, create_segment
from audio_out.timeline import SpliceResult
from ground.errors import ConfigError, DependencyError, InputError
from ground.events import MemorySink
from ground.metrics import Metrics
from ground.protocol import PROTOCOL_VERSION, Array, AudioChunk
from installation.config import config_from_dict

START = datetime(2026, 12, 2, 15, 30, 0)


def test_recording_equals_the_pushed_blocks(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    blocks = [rng.uniform(-1, 1, (n, 2)).astype(np.float32) for n in (512, 1, 300, 4096, 77)]
    recorder = Recorder(tmp_path / "out.wav", 48000, 2, ring_s=0.1)  # 4800-frame ring
    recorder.start()
    for block in blocks:
        recorder.push(block)
        recorder.drain()  # what the thread does; keeps the small ring from filling
    recorder.close()
    audio, rate = soundfile.read(tmp_path / "out.wav", dtype="float32")
    assert rate == 48000 and recorder.dropped_frames == 0
    np.testing.assert_array_equal(audio, np.concatenate(blocks))


def test_flac_recording_is_24_bit_close(tmp_path: Path) -> None:
    block = (0.5 * np.sin(np.arange(9000) / 10)).astype(np.float32)[:, None].repeat(2, 1)
    recorder = Recorder(tmp_path / "out.flac", 44100, 2)
    recorder.push(block)
    recorder.close()
    audio, _ = soundfile.read(tmp_path / "out.flac", dtype="float32")
    np.testing.assert_allclose(audio, block, atol=1e-6)


def test_a_full_ring_drops_instead_of_blocking(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "out.wav", 48000, 1, ring_s=0.0)  # 1024-frame ring
    for _ in range(3):
        recorder.push(np.ones((512, 1), np.float32))
    assert recorder.dropped_frames == 512
    recorder.close()
    assert soundfile.info(str(tmp_path / "out.wav")).frames == 1024


def test_recorder_refuses_other_formats(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"expected a \.wav or \.flac path, got '.*out\.mp3'"):
        Recorder(tmp_path / "out.mp3", 48000, 2)


def splice(kind: str, start: int, written_from: int, written_to: int, xf: int = 0) -> SpliceResult:
    return SpliceResult(kind, start, written_from, written_to, xf, written_from - start, 0, 0)  # type: ignore[arg-type]


def notes(*rows: tuple[int, int, int, int, int, int]) -> np.ndarray:
    return np.asarray(rows, dtype=np.int32).reshape(-1, 6)


def test_played_notes_drop_overwritten_and_late_notes_and_cut_long_ones() -> None:
    played = PlayedNotes()
    # Chunk 1 at 0..1000: notes at 100 (long), 600, 900.
    played.add_chunk(1, 0, notes((100, 2000, 60, 90, 0, 0), (600, 50, 62, 90, 0, 0),
                                 (900, 50, 64, 90, 0, 0)), splice("append", 0, 0, 1000))
    assert played.advance(playhead=200, frames_out=200)[0].pitch == 60
    # Chunk 2 replaces from 500 (crossfade 100): its note at offset 10 (510) is
    # late (written from 550); its note at 700 plays; chunk 1's notes at 600 and
    # 900 were overwritten; the long note is cut at the crossfade's end.
    played.add_chunk(2, 500, notes((10, 20, 70, 80, 128, 3), (200, 30, 72, 80, 5, 1)),
                     splice("replace", 500, 550, 1500, xf=100))
    assert played.dropped_replaced == 2 and played.dropped_late == 1
    played.advance(playhead=1500, frames_out=1500)
    result = [(n.start, n.end, n.pitch, n.program, n.channel) for n in played.played()]
    assert result == [(100, 650, 60, 0, 0), (700, 730, 72, 5, 1)]
    assert played.pending == 0


def test_notes_are_placed_in_the_played_stream_time_base() -> None:
    played = PlayedNotes()
    played.add_chunk(1, 48000, notes((0, 10, 60, 90, 128, 0)), splice("gap", 48000, 48000, 49000))
    # Started at timeline 48000 with 300 frames of output before it (e.g. a hold).
    played.advance(playhead=48100, frames_out=400)
    (note,) = played.played()
    assert note.out_start == 300 and note.channel == 9  # drums go to GM channel 10


def test_played_notes_keep_only_the_latest_in_memory() -> None:
    # every note of a run was kept: 240 MB after 17 h of a room's music (the file has them)
    played = PlayedNotes(recent=3)
    for k in range(5):
        played.add_chunk(k, k * 1000, notes((0, 10, 60 + k, 90, 0, 0)),
                         splice("append", k * 1000, k * 1000, (k + 1) * 1000))
        assert [n.pitch for n in played.advance(playhead=k * 1000 + 500,
                                                frames_out=k * 1000 + 500)] == [60 + k]
    assert [n.pitch for n in played.played()] == [62, 63, 64]


def test_midi_file_keeps_programs_channels_and_times(tmp_path: Path) -> None:
    path = tmp_path / "notes.mid"
    write_midi_file(path, notes((48000, 24000, 60, 100, 40, 2), (0, 4800, 36, 110, 128, 9),
                                (96000, 48000, 67, 64, 0, 0)), 48000)
    midi = pretty_midi.PrettyMIDI(str(path))
    by_program = {(i.program, i.is_drum): i.notes for i in midi.instruments}
    assert by_program[(40, False)][0].start == pytest.approx(1.0)
    assert by_program[(40, False)][0].end == pytest.approx(1.5)
    assert by_program[(0, True)][0].pitch == 36
    assert by_program[(0, False)][0].velocity == 64
    channels = {m.channel for t in mido.MidiFile(str(path)).tracks for m in t
                if m.type == "note_on"}
    assert channels == {0, 2, 9}


class FakeMidiOut:
    def __init__(self, ports: list[str]) -> None:
        self.ports = ports
        self.opened: int | None = None
        self.messages: list[list[int]] = []

    def get_ports(self) -> list[str]:
        return self.ports

    def open_port(self, index: int) -> None:
        self.opened = index

    def send_message(self, message: list[int]) -> None:
        self.messages.append(message)

    def close_port(self) -> None:
        self.opened = None


def test_midi_port_by_substring_or_a_clear_error() -> None:
    port = FakeMidiOut(["Midi Through:0", "IAC Driver Bus 1"])
    module = SimpleNamespace(MidiOut=lambda: port)
    assert open_midi_port("iac", module) is port and port.opened == 1
    with pytest.raises(ConfigError, match=r"no MIDI output port contains 'Moog'; "
                                          r"available: 'Midi Through:0', 'IAC Driver Bus 1'"):
        open_midi_port("Moog", module)

    def broken() -> Any:
        raise RuntimeError("error creating ALSA sequencer client object")

    with pytest.raises(DependencyError, match="'Moog': no MIDI back end"):
        open_midi_port("Moog", SimpleNamespace(MidiOut=broken))


def test_midi_port_sends_notes_as_they_are_heard() -> None:
    port = FakeMidiOut([])
    heard = {"at": 0}
    sender = MidiPortOut(port, lambda: heard["at"])
    sender.feed([Note(100, 200, 60, 90, 0, 1), Note(150, 400, 64, 80, 0, 1)])
    sender.send_due()
    assert port.messages == []
    heard["at"] = 160
    sender.send_due()
    assert port.messages == [[0x91, 60, 90], [0x91, 64, 80]]
    heard["at"] = 250
    sender.send_due()
    assert port.messages[-1] == [0x81, 60, 0]
    sender.stop()  # the sounding note is released
    assert port.messages[-1] == [0x81, 64, 0] and port.opened is None


# ---------------------------------------------------------------- segments (item 3)


def test_segments_are_named_per_room_and_start_and_never_overwrite(tmp_path: Path) -> None:
    path, fd = create_segment(tmp_path / "take.wav", "room-1", START)
    os.write(fd, b"first take")
    os.close(fd)
    assert path == tmp_path / "take-room-1-20261202-153000.wav"
    # The same second again (a crash loop): -2, -3, and the first take is untouched.
    again = [create_segment(tmp_path / "take.wav", "room-1", START) for _ in range(2)]
    for _, fd in again:
        os.close(fd)
    assert [p.name for p, _ in again] == ["take-room-1-20261202-153000-2.wav",
                                          "take-room-1-20261202-153000-3.wav"]
    assert path.read_bytes() == b"first take"
    # {room} and {start} where the template puts them; a folder per room is created.
    named, fd = create_segment(tmp_path / "{room}" / "{start}-{room}.flac", "b", START)
    os.close(fd)
    assert named == tmp_path / "b" / "20261202-153000-b.flac"


def test_two_recorders_on_one_template_write_two_files(tmp_path: Path) -> None:
    first = Recorder(tmp_path / "take.wav", 16000, 1, room="a", start=START)
    second = Recorder(tmp_path / "take.wav", 16000, 1, room="a", start=START)  # a restart
    first.push(np.full((100, 1), 0.25, np.float32))
    second.push(np.full((50, 1), -0.5, np.float32))
    first.close()
    second.close()
    assert first.path != second.path
    assert soundfile.read(first.path)[0].tolist() == [0.25] * 100
    assert soundfile.read(second.path)[0].tolist() == [-0.5] * 50


def _data_chunk_bytes(path: Path) -> int:
    """The size the RIFF header gives the data chunk (what other readers trust)."""
    raw = path.read_bytes()
    at = raw.index(b"data")
    return int(struct.unpack("<I", raw[at + 4 : at + 8])[0])


def test_a_wav_segment_is_valid_on_disk_without_close(tmp_path: Path) -> None:
    events = MemorySink()
    recorder = Recorder(tmp_path / "take.wav", 48000, 2, log_event=events, room="r", start=START,
                        to_timeline=lambda p: p // 3)
    block = np.random.default_rng(1).uniform(-1, 1, (4800, 2)).astype(np.float32)
    recorder.push(block, playhead=96000)
    recorder.drain()
    # Not closed (as after SIGKILL): the header already counts every frame.
    assert _data_chunk_bytes(recorder.path) == 4800 * 2 * 4
    audio, rate = soundfile.read(recorder.path, dtype="float32")
    np.testing.assert_array_equal(audio, block)
    assert recorder.path.read_bytes()[:4] == b"RIFF"  # RF64 auto-downgraded while < 4 GiB
    (opened,) = events.of("recording_opened")
    assert opened == {"path": str(recorder.path), "media": "audio", "sample_rate": 48000,
                      "channels": 2, "playhead": 32000, "frame": 0,
                      "started": "2026-12-02T15:30:00.000000"}
    recorder.close()
    (closed,) = events.of("recording_closed")
    assert closed["frames"] == 4800 and closed["seconds"] == 0.1 and closed["error"] is None
    assert soundfile.info(str(recorder.path)).format in ("WAV", "WAVEX")


# ---------------------------------------------------------- a full disk (item 4)
def test_a_full_disk_fails_the_recording_once_and_keeps_what_was_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    events = MemorySink()
    recorder = Recorder(tmp_path / "t.wav", 16000, 1, log_event=events, room="r", start=START,
                        open_file=FullDisk(room=1000))
    ones = np.ones((600, 1), np.float32)
    recorder.push(ones)
    assert recorder.drain() == 600
    for _ in range(3):
        recorder.push(ones)  # never blocks, never raises: the callback's side
        recorder.drain()
    assert recorder.failed and recorder.status() == {
        "state": "failed", "path": str(recorder.path),
        "error": "ENOSPC: No space left on device"}
    assert len(events.of("recording_failed")) == 1
    assert [r.levelname for r in caplog.records] == ["ERROR"]
    recorder.push(ones)
    assert recorder.dropped_frames >= 600 * 3
    recorder.close()
    (closed,) = events.of("recording_closed")
    assert closed["frames"] == 600 and closed["error"] == "ENOSPC: No space left on device"
    assert soundfile.read(recorder.path)[0].shape == (600,)  # the take up to the failure


def test_a_recording_that_cannot_be_created_is_a_failed_recording_not_an_error(
    tmp_path: Path,
) -> None:
    (tmp_path / "a-file").write_text("")
    events = MemorySink()
    recorder = Recorder(tmp_path / "a-file" / "take.wav", 16000, 1, log_event=events,
                        room="r", start=START)
    recorder.start()
    recorder.push(np.ones((100, 1), np.float32))
    assert recorder.status()["state"] == "failed"
    assert str(recorder.error).startswith("EEXIST: File exists") and "a-file" in str(recorder.error)
    recorder.close()
    assert len(events.of("recording_failed")) == 1 and recorder.dropped_frames == 100


#: Settings for a flat (DC) program read at its level: no DC blocker (which drains it), no
#: start fade (it starts at full level).
FLAT: dict[str, Any] = {"dc_block_hz": 0.0, "fade_in_s": 0.0}


def flat_chunk(seq: int, start: int, frames: int, value: float = 0.5,
               notes: np.ndarray | None = None) -> AudioChunk:
    audio = np.full((frames, 2), value, np.float32)
    return AudioChunk(v=PROTOCOL_VERSION, room="r1", seq=seq, start_sample=start,
                      sample_rate=16000, audio=Array.from_numpy(audio),
                      notes=Array.from_numpy(notes) if notes is not None else None)


def array_sink(config: AudioOutConfig, sr: int, ch: int, fill: Any, log: Any) -> ArrayOutput:
    return ArrayOutput(sr, ch, config.block_size, fill)


def test_the_player_plays_on_when_the_disk_is_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = FullDisk(room=2048)
    monkeypatch.setattr("audio_out.recorder.soundfile.SoundFile", full)
    config = AudioOutConfig(sample_rate=16000, block_size=256, record=str(tmp_path / "t.wav"),
                            **FLAT)
    events = MemorySink()
    player = Player("r1", config, 2, events, output_factory=array_sink)
    player.start()
    assert player.recording_status()["state"] == "ok"
    player.submit(flat_chunk(0, 0, 16000))
    sink = player.output
    assert isinstance(sink, ArrayOutput) and player.recorder is not None
    played = sink.pull(20)
    player.recorder.drain()  # what the writer thread does: 5120 frames > 2048 of room
    played = np.concatenate([played, sink.pull(20)])
    np.testing.assert_array_equal(played, 0.5)  # every block played, at full level
    status = player.recording_status()
    assert status["state"] == "failed" and status["error"].startswith("ENOSPC")
    assert len(events.of("recording_failed")) == 1
    player.stop()
    assert events.of("player_stopped")[0]["played_s"] == 10240 / 16000


def test_the_callback_neither_allocates_nor_blocks_when_the_recording_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("audio_out.recorder.soundfile.SoundFile", FullDisk(room=4096))
    config = AudioOutConfig(sample_rate=16000, block_size=256, record=str(tmp_path / "t.wav"))
    player = Player("r1", config, 2, MemorySink(), output_factory=array_sink)
    player.start()
    player.submit(flat_chunk(0, 0, 160000))
    recorder = player.recorder
    assert recorder is not None
    out = np.zeros((256, 2), np.float32)
    for _ in range(40):
        player.fill(out)
    recorder.drain()  # the disk fills here
    assert recorder.failed
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for _ in range(400):
            player.fill(out)  # the ring is no longer drained: push only counts drops
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = grown_in_our_code(before, after)  # not another thread's (the test runner's)
    assert grown < 4096, f"fill grew memory by {grown} bytes"
    # the 40 blocks the failed write lost count as dropped too
    assert recorder.dropped_frames == (40 + 400) * 256
    player.stop()


def test_recording_state_metric() -> None:
    metrics = Metrics(6201)
    try:
        metrics.set_recording("a", "ok")
        metrics.set_recording("b", "failed")
        metrics.set_recording("c", "off")
        value = metrics.registry.get_sample_value
        assert value("art2mus_recording_ok", {"room": "a"}) == 1.0
        assert value("art2mus_recording_ok", {"room": "b"}) == 0.0
        assert value("art2mus_recording_ok", {"room": "c"}) is None
    finally:
        metrics.close()


# ------------------------------------------------------------------ MIDI segments
def test_the_midi_segment_is_valid_while_written_and_after_close(tmp_path: Path) -> None:
    events = MemorySink()
    midi = MidiRecorder(tmp_path / "take.mid", 48000, events, room="r", start=START)
    assert midi.path.name == "take-r-20261202-153000.mid"
    a = Note(48000, 72000, 60, 100, 40, 2, out_start=48000)
    drum = Note(0, 4800, 36, 110, 128, 5, out_start=0)
    midi.announce(1234)
    midi.advance([drum, a], playhead=50000)  # drum ended, a sounds
    # Valid now, as a SIGKILL would leave it: both note-ons, the drum's note-off.
    track = mido.MidiFile(str(midi.path)).tracks[0]
    notes = [(m.type, m.note, m.channel) for m in track if m.type.startswith("note")]
    assert notes == [("note_on", 36, 9), ("note_off", 36, 9), ("note_on", 60, 2)]
    b = Note(96000, 150000, 67, 64, 0, 0, out_start=96000)
    midi.advance([b], playhead=100000)
    midi.close(frames_out=120000)  # b still sounds: released where playing stopped
    pm = pretty_midi.PrettyMIDI(str(midi.path))
    by_program = {(i.program, i.is_drum): [(n.pitch, n.start, n.end) for n in i.notes]
                  for i in pm.instruments}
    assert by_program == {(0, True): [(36, 0.0, 0.1)], (40, False): [(60, 1.0, 1.5)],
                          (0, False): [(67, 2.0, 2.5)]}
    assert mido.MidiFile(str(midi.path)).tracks[0][-1].type == "end_of_track"
    assert events.of("recording_opened") == [{"path": str(midi.path), "media": "midi",
                                              "sample_rate": 48000, "playhead": 1234,
                                              "frame": 0,
                                              "started": "2026-12-02T15:30:00.000000"}]
    (closed,) = events.of("recording_closed")
    assert closed["notes"] == 3 and closed["frames"] == 120000 and closed["error"] is None


def test_a_full_disk_stops_the_midi_segment_only(tmp_path: Path) -> None:
    budget = {"bytes": 120}  # the header carries the meter, the first note its instrument

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        if len(data) > budget["bytes"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        budget["bytes"] -= len(data)
        return os.pwrite(fd, data, offset)

    events = MemorySink()
    midi = MidiRecorder(tmp_path / "t.mid", 48000, events, room="r", start=START, write=pwrite)
    for i in range(20):
        midi.advance([Note(i * 100, i * 100 + 50, 60, 90, 0, 0, out_start=i * 100)],
                     playhead=i * 100 + 60)
    midi.close(frames_out=3000)
    assert midi.failed and midi.status()["error"] == "ENOSPC: No space left on device"
    assert len(events.of("recording_failed")) == 1
    notes = [m for m in mido.MidiFile(str(midi.path)).tracks[0] if m.type == "note_on"]
    assert 0 < len(notes) < 20  # what fitted stays a readable file


def test_player_writes_the_notes_heard_into_its_midi_segment(tmp_path: Path) -> None:
    config = AudioOutConfig(sample_rate=16000, block_size=256,
                            midi_file=str(tmp_path / "n.mid"))
    player = Player("r1", config, 2, MemorySink(), output_factory=array_sink)
    player.start()
    player.submit(flat_chunk(0, 0, 16000, notes=np.array([[1000, 800, 60, 90, 0, 0],
                                                          [9000, 800, 62, 90, 0, 0]], np.int32)))
    assert isinstance(player.output, ArrayOutput) and player.midi_recorder is not None
    player.output.pull(20)  # 5120 frames: the first note heard and ended
    player.poll()
    heard = [m.note for m in mido.MidiFile(str(player.midi_recorder.path)).tracks[0]
             if m.type == "note_on"]
    assert heard == [60]  # on disk before the stop
    player.output.pull(30)
    player.poll()
    player.stop()
    pm = pretty_midi.PrettyMIDI(str(player.midi_recorder.path))
    assert [(n.pitch, round(n.start, 4)) for n in pm.instruments[0].notes] == [
        (60, 1000 / 16000), (62, 9000 / 16000)]


# ----------------------------------------------------------- configuration (item 3)
def test_duplicate_recording_paths_are_refused_naming_rooms_and_fields() -> None:
    ok = config_from_dict({"audio_out": {"record": "take.wav", "midi_file": "take.mid"},
                           "rooms": [{"id": "a"}, {"id": "b"}]})
    assert [t for _, t in ok.recording_templates()] == [
        "out/take-a-{start}.wav", "out/take-a-{start}.mid",
        "out/take-b-{start}.wav", "out/take-b-{start}.mid"]
    with pytest.raises(ConfigError, match=(
            r"rooms\[1\]\.audio_out\.record: expected a recording path of its own, got the "
            r"same file as rooms\[0\]\.audio_out\.record \('out/take-\{start\}\.wav'\)")):
        config_from_dict({"audio_out": {"record": "take-{start}.wav"},
                          "rooms": [{"id": "a"}, {"id": "b"}]})
    with pytest.raises(ConfigError, match=r"rooms\[1\]\.audio_out\.midi_file: .* same file as "
                                          r"rooms\[0\]\.audio_out\.midi_file"):
        config_from_dict({"rooms": [{"id": "a", "audio_out": {"midi_file": "/x/{start}.mid"}},
                                    {"id": "b", "audio_out": {"midi_file": "/x/{start}.mid"}}]})


def test_recording_templates_and_the_stop_fade_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"record: expected only the placeholders \{room\} and "
                                          r"\{start\}, got 'take-\{date\}\.wav'"):
        config_from_dict({"rooms": [{"id": "a", "audio_out": {"record": "take-{date}.wav"}}]})
    with pytest.raises(ConfigError, match=r"midi_file: expected a file name ending in \.mid or "
                                          r"\.midi, got 'take\.wav'"):
        config_from_dict({"rooms": [{"id": "a", "audio_out": {"midi_file": "take.wav"}}]})
    with pytest.raises(ConfigError, match=r"rooms\[0\]\.audio_out\.stop_fade_s: expected at most "
                                          r"supervisor\.stop_timeout_s / 2 \(1\), got 1\.5"):
        config_from_dict({"supervisor": {"stop_timeout_s": 2.0},
                          "rooms": [{"id": "a", "audio_out": {"stop_fade_s": 1.5}}]})


# ------------------------------------------------------------- the stop fade (item 7)
def _dbfs(x: np.ndarray) -> float:
    return float(20 * np.log10(max(float(np.sqrt(np.mean(x**2))), 1e-12)))


def test_stopping_fades_the_output_and_the_recording_to_silence(tmp_path: Path) -> None:
    config = AudioOutConfig(sample_rate=16000, block_size=256, stop_fade_s=0.5,
                            record=str(tmp_path / "t.wav"), **FLAT)
    player = Player("r1", config, 2, MemorySink(), output_factory=array_sink)
    player.start()
    player.submit(flat_chunk(0, 0, 48000))
    sink = player.output
    assert isinstance(sink, ArrayOutput) and player.recorder is not None
    before = sink.pull(10)
    assert player.fade_out() == 8000  # stop_fade_s at 16 kHz
    after = sink.pull(40)[:, 0]  # 10240 frames: the fade, then silence
    player.stop()
    np.testing.assert_array_equal(before, 0.5)
    fade = after[:8000]
    assert np.all(np.diff(fade) <= 1e-7) and fade[0] > 0.499  # smooth, from full level, down
    raised_cosine = (1 + np.cos(np.pi * np.arange(1, 8001) / 8000)) / 2  # the master fade
    np.testing.assert_allclose(fade, 0.5 * raised_cosine, atol=1e-4)
    assert not after[8000:].any()
    recorded, _ = soundfile.read(player.recorder.path, dtype="float32")
    assert len(recorded) == 50 * 256
    assert _dbfs(recorded[-256:]) < -60 and _dbfs(recorded[:2560]) > -7


def test_stop_fades_out_in_real_time_on_the_null_sink(tmp_path: Path) -> None:
    config = AudioOutConfig(output="none", sample_rate=16000, block_size=256, stop_fade_s=0.25,
                            record=str(tmp_path / "t.wav"), **FLAT)
    events = MemorySink()
    player = Player("r1", config, 2, events)
    player.start()
    player.submit(flat_chunk(0, 0, 64000))  # 4 s: stop() comes long before it ends
    recorder = player.recorder
    assert recorder is not None
    for _ in range(1000):  # until the writer thread has saved some music (0.13 s)
        if recorder.frames_saved >= 2048:
            break
        time.sleep(0.01)
    player.stop()  # fades for 0.25 s at the null sink's real-time pace, then stops
    recorded, _ = soundfile.read(recorder.path, dtype="float32")
    level = recorded[:, 0]
    assert level[:2048].min() == 0.5
    assert _dbfs(recorded[-512:]) < -60  # the take ends in silence, not mid-signal
    tail = level[np.argmax(level < 0.5):]  # the fade: smooth and only downwards
    assert np.all(np.diff(tail) <= 1e-7) and len(tail) >= 4000
    assert not events.of("stop_fade_unfinished")


def test_a_tempo_change_a_whole_bar_after_another_is_a_whole_bar_of_ticks_after_it() -> None:
    # each change was rounded to a tick on its own while what followed was counted from the
    # fractional tick: a change a bar on could round the other way and stand 1 tick off the
    # bar grid a DAW draws
    from audio_out.midi import TempoChange, TickClock

    off = []
    for first in range(0, 2000, 7):
        clock = TickClock(44100)
        at = clock.change(TempoChange(first, 97.0))
        bar = round(4 * 60 / 97.0 * 44100)  # the next piece's downbeat: a whole frame
        later = clock.change(TempoChange(first + bar, 133.0))
        off.append(later - at - 4 * 480)
    assert set(off) == {0}
