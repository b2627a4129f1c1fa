"""A room that is never restarted: its take rolls into segments, retention can remove the
finished ones, the disk warning says when it cannot, and the MIDI tempo map stays bounded.

Before: a segment was only opened at a start, a retry or after a deletion, so one live
take grew ~33 GB a day until the disk was full (take retention never removes a take being
recorded, and blamed "other files"); the MIDI recorder kept every tempo change of the run
(82 MB per 200,000 artwork changes). The recorders run in-process and are drained by hand,
as their threads would; one test runs a real :class:`~audio_out.player.Player`.
"""

from __future__ import annotations

import errno
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import mido
import numpy as np
import pytest
import soundfile

from audio_out.config import AudioOutConfig, segment_template
from audio_out.midi import MidiRecorder, Note, TempoChange, TickClock
from audio_out.outputs import ArrayOutput
from audio_out.player import Player
from audio_out.recorder import Recorder
from ground.errors import ConfigError, InputError
from ground.events import MemorySink
from ground.protocol import PROTOCOL_VERSION, Array, AudioChunk
from installation.config import config_from_dict
from installation.demo import join_audio, join_midi
from installation.status import LOW_HOURS, disk_problem, problems
from installation.takes import TakeKeeper

START = datetime(2026, 12, 2, 15, 30, 0)
RATE = 16000
NOW = 1_800_000_000.0
DAY = 86400.0


def _opened(events: MemorySink, media: str) -> list[dict[str, Any]]:
    return [o for o in events.of("recording_opened") if o["media"] == media]


# ------------------------------------------------------------- rollover (defect 1a)
def test_a_running_recording_rolls_every_segment_s_and_joins_sample_exact(
        tmp_path: Path) -> None:
    """Blocks of any size, drained now and then as the writer thread does: a new segment
    begins at the first block at or past each second of the played stream, and the segments
    joined (in the order of their recording_opened) are the pushed stream, sample for
    sample; each segment's events say where it sits."""
    rng = np.random.default_rng(7)
    events = MemorySink()
    recorder = Recorder(tmp_path / "takes" / "take.wav", RATE, 2, log_event=events, room="r",
                        start=START, to_timeline=lambda p: p + 10, segment_s=1.0)
    blocks, starts = [], []
    stream = 0
    while stream < 5 * RATE + 3000:
        block = rng.uniform(-1, 1, (int(rng.integers(50, 900)), 2)).astype(np.float32)
        recorder.push(block, playhead=stream + 7000)
        blocks.append(block)
        starts.append(stream)
        stream += len(block)
        if rng.integers(0, 4) == 0:
            recorder.drain()
    recorder.close()

    opened = _opened(events, "audio")
    assert len(opened) == 6  # 0 s, then at each of 1..5 s
    first_at = [min(s for s in starts if s >= k * RATE) for k in range(6)]
    assert [o["frame"] for o in opened] == first_at  # at a block boundary, the first past it
    assert [o["playhead"] for o in opened] == [f + 7000 + 10 for f in first_at]
    assert len({o["started"] for o in opened}) == 1  # one start of audio_out
    paths = [Path(o["path"]) for o in opened]
    assert len(set(paths)) == 6 and all(p.exists() for p in paths)
    assert paths[0].name == "take-r-20261202-153000.wav"
    pieces = [soundfile.read(p, dtype="float32", always_2d=True)[0] for p in paths]
    np.testing.assert_array_equal(np.concatenate(pieces), np.concatenate(blocks))
    assert [len(p) for p in pieces] == [b - a for a, b in zip(first_at, [*first_at[1:], stream],
                                                              strict=True)]
    closed = events.of("recording_closed")
    assert [(c["path"], c["frames"], c["error"]) for c in closed] == [
        (str(p), len(piece), None) for p, piece in zip(paths, pieces, strict=True)]
    rolled = events.of("recording_rolled")
    assert [(r["previous"], r["path"], r["reason"], r["lost_frames"]) for r in rolled] == [
        (str(a), str(b), "segment_s", 0) for a, b in zip(paths, paths[1:], strict=False)]
    assert recorder.dropped_frames == 0

    # the demo's join, as it reads the events: the take again, no gap, no repeat
    joined, notes = join_audio(paths, tmp_path / "joined.wav",
                               anchors=[(o["started"], o["frame"]) for o in opened])
    assert joined is not None and notes == []
    audio, _ = soundfile.read(joined, dtype="float32", always_2d=True)
    np.testing.assert_array_equal(audio, np.concatenate(blocks))


def test_the_callback_only_marks_the_roll_the_writer_makes_the_file(tmp_path: Path) -> None:
    recorder = Recorder(tmp_path / "take.wav", RATE, 1, room="r", start=START, segment_s=1.0)
    for _ in range(40):  # 2.5 s, never drained: no file is made in push
        recorder.push(np.full((1000, 1), 0.25, np.float32))
    assert len(list(tmp_path.iterdir())) == 1
    recorder.drain()  # one roll taken (the latest block past a multiple): one file more
    assert len(list(tmp_path.iterdir())) == 2
    recorder.close()
    total = sum(soundfile.info(str(p)).frames for p in tmp_path.iterdir())
    assert total == 40_000


def test_a_roll_that_cannot_make_its_file_goes_on_in_the_segment_it_is_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = MemorySink()
    recorder = Recorder(tmp_path / "take.wav", RATE, 1, log_event=events, room="r",
                        start=START, segment_s=1.0)
    recorder.push(np.full((RATE, 1), 0.5, np.float32))
    recorder.drain()

    def no_file(*args: Any, **kwargs: Any) -> Any:  # out of file descriptors, say
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE), str(tmp_path / "next.wav"))

    monkeypatch.setattr("audio_out.recorder.create_segment", no_file)
    recorder.push(np.full((1000, 1), 0.5, np.float32))
    recorder.drain()
    recorder.close()
    (refused,) = events.of("recording_not_rolled")
    assert refused["media"] == "audio" and refused["error"].startswith("EMFILE")
    assert recorder.status()["state"] == "ok" and not events.of("recording_failed")
    assert soundfile.info(str(recorder.path)).frames == RATE + 1000  # nothing lost


def test_segment_s_is_a_bounded_setting_named_in_its_error() -> None:
    assert AudioOutConfig().segment_s == 3600.0
    for value in (0.0, 59.0, 86401.0, float("inf")):
        with pytest.raises(ConfigError, match=r"rooms\[0\]\.audio_out\.segment_s"):
            config_from_dict({"rooms": [{"id": "a", "audio_out": {"segment_s": value}}]})
    with pytest.raises(InputError, match=r"audio_out\.segment_s: expected a number of "
                                         r"seconds > 0, got 0"):
        Recorder(Path("/nonexistent/t.wav"), RATE, 1, segment_s=0.0)


# ------------------------------------------------- the player, both media (defect 1a)
def _chunk(seq: int, start: int, frames: int) -> AudioChunk:
    t = np.arange(start, start + frames)
    x = (0.3 * np.sin(2 * np.pi * 220 * t / 8000)).astype(np.float32)
    onsets = list(range(0, frames, 4000))
    notes = np.array([[o, 3000, 60 + (seq + i) % 12, 90, 0, 0] for i, o in enumerate(onsets)],
                     np.int32)
    return AudioChunk(v=PROTOCOL_VERSION, room="r1", seq=seq, start_sample=start,
                      sample_rate=8000, audio=Array.from_numpy(np.stack([x, x], 1)),
                      notes=Array.from_numpy(notes), tempo_bpm=90.0 + seq % 5, meter=(4, 4),
                      downbeat=start)


def test_the_player_rolls_the_audio_and_midi_segments_in_step(tmp_path: Path) -> None:
    """150 s at 8 kHz with segment_s = 60: three audio and three MIDI segments, opened at
    the same frames of the played stream (within a block), the audio joined is what played
    and every note heard is in one MIDI segment, each a whole file."""
    config = AudioOutConfig(sample_rate=8000, block_size=1000, fade_in_s=0.0, dc_block_hz=0.0,
                            segment_s=60.0, record=str(tmp_path / "take.wav"),
                            midi_file=str(tmp_path / "take.mid"))
    events = MemorySink()
    player = Player("r1", config, 2, events, poll_s=3600.0,
                    output_factory=lambda c, sr, ch, fill, log: ArrayOutput(
                        sr, ch, c.block_size, fill))
    player.start()
    output, recorder = player.output, player.recorder
    assert isinstance(output, ArrayOutput) and recorder is not None
    played = []
    queued = 0
    for step in range(50):  # 3 s a step
        while queued < (step + 2) * 24000:  # the next 10 s, before the queue runs dry
            player.submit(_chunk(queued // 80000, queued, 80000))
            queued += 80000
        played.append(output.pull(24))
        player.poll()
        deadline = time.monotonic() + 5.0  # let the writer thread keep up (a 10 s ring)
        while recorder._read < recorder._written and time.monotonic() < deadline:
            time.sleep(0.001)
    player.stop()

    audio = _opened(events, "audio")
    midi = _opened(events, "midi")
    assert [o["frame"] for o in audio] == [0, 480000, 960000]
    assert [o["frame"] for o in midi][0] == 0 and len(midi) == 3
    for a, m in zip(audio, midi, strict=True):
        assert 0 <= m["frame"] - a["frame"] <= 24000  # the next poll (3 s here)
        assert m["started"] == a["started"]
    joined, notes = join_audio([Path(o["path"]) for o in audio], tmp_path / "joined.wav",
                               anchors=[(o["started"], o["frame"]) for o in audio])
    assert joined is not None and notes == []
    take, _ = soundfile.read(joined, dtype="float32", always_2d=True)
    np.testing.assert_array_equal(take, np.concatenate(played)[: len(take)])
    assert len(take) >= 150 * 8000
    heard = 0
    for opened in midi:
        file = mido.MidiFile(opened["path"])
        assert file.tracks[0][-1].type == "end_of_track"  # closed whole, notes released
        heard += sum(1 for m in file.tracks[0] if m.type == "note_on" and m.velocity)
    notes_played = sum(c["notes"] for c in events.of("recording_closed") if c["media"] == "midi")
    assert notes_played == heard and heard >= 150 * 2
    merged, _ = join_midi([(Path(m["path"]), (m["frame"]) / 8000) for m in midi],
                          tmp_path / "joined.mid")
    assert merged is not None


# -------------------------------------------- retention of rolled segments (defect 1b, c)
def _segments(tmp_path: Path, count: int) -> tuple[str, list[Path]]:
    """``count`` segments of one running recording, as the recorder rolls them, in order."""
    record = str(tmp_path / "takes" / "take.wav")
    events = MemorySink()
    recorder = Recorder(record, RATE, 1, log_event=events, room="hall", start=START,
                        segment_s=1.0)
    for _ in range(count):
        recorder.push(np.full((RATE, 1), 0.1, np.float32))
        recorder.drain()
    recorder.close()
    paths = [Path(o["path"]) for o in _opened(events, "audio")]
    assert len(paths) == count and all(p.exists() for p in paths)
    return segment_template(record, "hall"), paths


def test_retention_removes_the_finished_rolled_segments_never_the_live_one(
        tmp_path: Path) -> None:
    template, paths = _segments(tmp_path, 4)
    for age, path in zip((3 * DAY, 2 * DAY, 1.5 * DAY), paths, strict=False):
        os.utime(path, (NOW - age, NOW - age))
    os.utime(paths[-1], (NOW - 5.0, NOW - 5.0))  # the one being written
    events: list[tuple[str, dict[str, Any]]] = []
    keeper = TakeKeeper([template], tmp_path, keep_days=1.0, keep_free_gb=0.0,
                        log_event=lambda kind, **f: events.append((kind, f)),
                        say=lambda line: None, clock=lambda: NOW)
    removed = keeper.look()
    assert [take.path for take in removed] == paths[:3]
    assert [f["file"] for kind, f in events if kind == "take_removed"] == [
        str(p) for p in paths[:3]]
    assert paths[-1].exists() and keeper.snapshot()["removable_bytes"] == 0
    assert keeper.snapshot()["recording_bytes"] == paths[-1].stat().st_size


def test_a_full_disk_names_the_take_being_recorded_when_it_fills_it(tmp_path: Path) -> None:
    """The audit's room: one live take of 431 GB (a sparse file here), 20 GB of other files,
    keep_free_gb = 50 on a 500 GB disk. The console said "other files fill it"."""
    live = tmp_path / "take-hall-20261201-090000.wav"
    with live.open("wb") as file:
        file.truncate(431 * 10**9)
    os.utime(live, (NOW, NOW))
    said: list[str] = []
    keeper = TakeKeeper([str(tmp_path / "take-hall-{start}.wav")], tmp_path, keep_days=30,
                        keep_free_gb=50, log_event=lambda kind, **f: None, say=said.append,
                        clock=lambda: NOW, free=lambda path: 500 * 10**9 - 20 * 10**9
                        - live.stat().st_size)
    assert keeper.look() == [] and live.exists()
    (line,) = said
    assert line.startswith("takes: the disk has 49.00 GB free, under keep_free_gb = 50")
    assert f"the take being recorded fills it ({live} (431.0 GB)" in line
    assert "segment_s" in line and "other files" not in line


def test_the_disk_filling_is_said_when_only_the_take_being_recorded_is_left(
        tmp_path: Path) -> None:
    """keep_free_gb = 200 and 150 GB free: retention kept the pace quiet, though nothing it
    may remove was left, and the recordings stopped with nothing said in time."""
    pace = 12e9 / 3600  # several rooms recording
    hours = 150e9 / pace / 3600
    assert hours < LOW_HOURS
    disk = {"path": str(tmp_path), "free_bytes": 150e9, "filling_bytes_per_s": pace,
            "hours_left": hours}
    assert disk_problem(disk, 200e9) is None  # not known what is left: trusted, as before
    assert disk_problem(disk, 200e9, 500e9) is None  # finished takes left for 54 h
    line = disk_problem(disk, 200e9, 0)
    assert line is not None and line.startswith(f"the disk of {tmp_path} fills in about 12.5 h")
    assert "take retention has 0.0 GB of finished takes left to remove" in line
    record = {"time": NOW, "state": "running", "disk": disk,
              "takes": {"keep_free_bytes": 200e9, "removable_bytes": 0}}
    assert any("fills in about 12.5 h" in p for p in problems(record, 60.0, now=NOW))


# ----------------------------------------------------------- tempo map (defect 2)
def _drive(midi: MidiRecorder, changes: int, every: int, lengths: list[int]) -> None:
    """One artwork change (a tempo and meter) every ``every`` frames, with a note each,
    every fifth sounding on over the next changes (and the rolls between them)."""
    midi.announce(0)
    frame = 0
    for i in range(changes):
        frame += every
        start = frame - every // 2
        length = 3 * every if i % 5 == 0 else every // 3
        note = Note(start, start + length, 60 + i % 7, 90, i % 3, i % 2, out_start=start)
        midi.advance([note], frame, tempi=[TempoChange(frame - every // 4,
                                                       60.0 + (i % 7) * 10.0, (3 + i % 2, 4))],
                     frames_out=frame)
        lengths.append(max(len(midi._tempi), len(midi._clock._segments)))
    midi.close(frame + every)


def test_the_midi_tempo_map_stays_bounded_and_every_tick_is_as_before(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """2,000 artwork changes, one every 0.5 s, in 10 s segments: the tempo lists hold what
    a segment needs (~20), and every segment file is byte for byte what the untrimmed map
    writes."""
    lengths: list[int] = []
    ours = MemorySink()
    _drive(MidiRecorder(tmp_path / "a" / "t.mid", RATE, ours, room="r", start=START,
                        segment_s=10.0), 2000, RATE // 2, lengths)
    assert max(lengths) <= 25 and lengths[-1] <= 25
    monkeypatch.setattr(MidiRecorder, "_forget_tempi", lambda self, frame: None)
    untrimmed: list[int] = []
    theirs = MemorySink()
    _drive(MidiRecorder(tmp_path / "b" / "t.mid", RATE, theirs, room="r", start=START,
                        segment_s=10.0), 2000, RATE // 2, untrimmed)
    assert untrimmed[-1] > 2000  # the reference really kept them all
    a_paths = [Path(o["path"]) for o in _opened(ours, "midi")]
    b_paths = [Path(o["path"]) for o in _opened(theirs, "midi")]
    assert len(a_paths) == len(b_paths) >= 90
    for a, b in zip(a_paths, b_paths, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name


def test_forgetting_the_tempo_map_before_a_frame_keeps_every_later_tick() -> None:
    rng = np.random.default_rng(3)
    clock, reference = TickClock(RATE), TickClock(RATE)
    frame = floor = 0
    for _ in range(300):
        frame += int(rng.integers(1, 20000))
        change = TempoChange(frame, float(rng.uniform(40, 200)))
        assert clock.change(change) == reference.change(change)
        floor = max(floor, frame - int(rng.integers(0, 30000)))  # a segment's origin
        clock.forget_before(floor)
        for probe in rng.integers(floor, frame + 50000, 20):
            assert clock.ticks(int(probe)) == reference.ticks(int(probe))
    assert len(clock._segments) < 10


def test_the_tempo_map_stays_bounded_while_the_midi_segment_is_failed(tmp_path: Path) -> None:
    broken = {"on": False}

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        if broken["on"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.pwrite(fd, data, offset)

    clock = [100.0]
    events = MemorySink()
    midi = MidiRecorder(tmp_path / "t.mid", RATE, events, room="r", start=START, write=pwrite,
                        now=lambda: clock[0], retry_s=1e9)
    midi.announce(0)
    broken["on"] = True
    frame = 0
    for i in range(3000):
        frame += 1000
        midi.advance([Note(frame, frame + 500, 60, 90, 0, 0, out_start=frame)], frame + 1,
                     tempi=[TempoChange(frame, 60.0 + i % 50)], frames_out=frame + 1)
    assert midi.failed and len(midi._tempi) <= 2 and len(midi._clock._segments) <= 2
    broken["on"] = False
    clock[0] = 2e9  # the retry: a new segment at the tempo in force there
    midi.advance([], frame + 10, frames_out=frame + 10)
    assert not midi.failed
    (tempo,) = [m for m in mido.MidiFile(str(midi.path)).tracks[0] if m.type == "set_tempo"]
    assert tempo.tempo == TempoChange(0, 60.0 + 2999 % 50).tempo_us
    midi.close(frame + 20)


def test_a_midi_roll_whose_new_file_fails_closes_the_old_once_and_retries(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The next file cannot be made: the track goes on in the one it is in. It is made but
    its header cannot be written (the disk filled): the old segment is whole and closed
    once, the MIDI recording is failed and resumes in a new segment, as after any failure."""
    header_fails = {"on": False}

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        if header_fails["on"] and offset == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return os.pwrite(fd, data, offset)

    clock = [100.0]
    events = MemorySink()
    midi = MidiRecorder(tmp_path / "t.mid", RATE, events, room="r", start=START, write=pwrite,
                        now=lambda: clock[0], retry_s=5.0, segment_s=1.0)
    midi.announce(0)
    first = midi.path
    real = __import__("audio_out.midi", fromlist=["create_segment"]).create_segment

    def no_file(*args: Any, **kwargs: Any) -> Any:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr("audio_out.midi.create_segment", no_file)
    midi.advance([Note(0, RATE * 3, 60, 90, 0, 0, out_start=0)], RATE, frames_out=RATE)
    (refused,) = events.of("recording_not_rolled")
    assert refused["media"] == "midi" and refused["error"].startswith("EMFILE")
    assert midi.path == first and not midi.failed
    monkeypatch.setattr("audio_out.midi.create_segment", real)
    header_fails["on"] = True
    midi.advance([], 2 * RATE, frames_out=2 * RATE)  # the next multiple: made, not written
    assert midi.failed and midi.status()["error"] == "ENOSPC: No space left on device"
    (failed,) = events.of("recording_failed")
    assert failed["path"] != str(first) and not Path(failed["path"]).exists()
    header_fails["on"] = False
    clock[0] += 5.0
    midi.advance([], 2 * RATE + 500, frames_out=2 * RATE + 500)  # the retry writes again
    assert not midi.failed
    midi.close(3 * RATE)
    closed = events.of("recording_closed")
    assert [(c["path"], c["frames"]) for c in closed] == [
        (str(first), 2 * RATE), (str(midi.path), RATE - 500)]
    assert [m.type for m in mido.MidiFile(str(midi.path)).tracks[0] if "note" in m.type] == [
        "note_on", "note_off"]  # the note sounds on in the segment resumed
    (resumed,) = events.of("recording_resumed")
    assert resumed["previous"] is None and resumed["lost_frames"] == 500
    old = mido.MidiFile(str(first)).tracks[0]
    assert old[-1].type == "end_of_track" and [m.type for m in old if "note" in m.type] == [
        "note_on", "note_off"]  # released where it ended
