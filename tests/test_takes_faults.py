"""Takes that survive their faults: a deleted folder, a full disk that empties, a FLAC cut by
a kill, notes a kill left sounding, and where each segment really starts.

The recorders run in-process on a fake clock (their ``now`` seam) and are drained by hand,
as their threads would; the demo's join reads segments written by the real recorders and a
real :class:`~audio_out.player.Player`. The real-process versions of the older faults are
in ``test_faults_recording.py``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import mido
import numpy as np
import pretty_midi
import pytest
import soundfile
from disks import FullDisk

from audio_out.config import AudioOutConfig
from audio_out.midi import MidiRecorder, Note
from audio_out.outputs import ArrayOutput
from audio_out.player import Player
from audio_out.recorder import UNKNOWN_LENGTH, Recorder, read_segment
from ground.events import MemorySink
from ground.jsonlog import WriteFailures
from ground.protocol import PROTOCOL_VERSION, Array, AudioChunk
from installation.config import config_from_dict
from installation.demo import join_audio, join_midi, summarise_demo
from installation.report import RunReport

START = datetime(2026, 12, 2, 15, 30, 0)
RATE = 16000


class Clock:
    """A fake monotonic clock: seconds move only when the test says so."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def block(value: float, frames: int = 1000) -> np.ndarray:
    return np.full((frames, 1), value, np.float32)


# ------------------------------------------------------------ a deleted folder (defect 1)
def test_a_deleted_recording_folder_rolls_the_take_into_a_new_segment(tmp_path: Path) -> None:
    clock, events = Clock(), MemorySink()
    recorder = Recorder(tmp_path / "takes" / "{room}" / "{start}.wav", RATE, 1,
                        log_event=events, room="r", start=START, now=clock)
    first = recorder.path
    for k in range(3):
        recorder.push(block(k / 100), playhead=k * 1000)
        recorder.drain()
    clock.t += 5.0  # the periodic fsync and link check: linked, the ring forgets before it
    recorder.push(block(3 / 100), playhead=3000)
    recorder.drain()
    shutil.rmtree(tmp_path / "takes")  # an operator's rm -rf, mid-take
    for k in (4, 5):
        recorder.push(block(k / 100), playhead=k * 1000)
        recorder.drain()  # written into a file nobody can reach any more
    assert recorder.status()["state"] == "ok" and not first.exists()
    clock.t += 5.0  # the next check notices: no links left
    recorder.push(block(6 / 100), playhead=6000)
    recorder.drain()
    second = recorder.path
    assert second != first and second.exists() and second.parent == first.parent
    assert recorder.status() == {"state": "ok", "path": str(second), "error": None}
    (rolled,) = events.of("recording_rolled")
    assert rolled["previous"] == str(first) and rolled["path"] == str(second)
    assert rolled["reason"] == "deleted" and "no links left" in rolled["error"]
    assert rolled["lost_frames"] == 3000  # what only the deleted file held
    closed = events.of("recording_closed")
    assert [c["path"] for c in closed] == [str(first)] and "deleted" in closed[0]["error"]
    assert closed[0]["frames"] == 0  # nothing of it is on disk: the take is not counted twice
    # The new segment takes over from the last check: nothing since it is lost.
    opened = events.of("recording_opened")
    assert [(o["path"], o["frame"], o["playhead"]) for o in opened] == [
        (str(first), 0, 0), (str(second), 3000, 3000)]
    recorder.push(block(7 / 100), playhead=7000)
    recorder.close()
    audio, _ = soundfile.read(second, dtype="float32")
    np.testing.assert_array_equal(audio, np.repeat(np.arange(3, 8) / 100, 1000)
                                  .astype(np.float32))
    assert recorder.dropped_frames == 0


def test_a_segment_deleted_before_its_first_check_is_taken_over_whole(tmp_path: Path) -> None:
    clock, events = Clock(), MemorySink()
    recorder = Recorder(tmp_path / "takes" / "take.wav", RATE, 1, log_event=events, room="r",
                        start=START, now=clock)
    for k in range(3):  # several blocks a drain, as the thread drains every 50 ms
        recorder.push(block(k / 100), playhead=k * 1000)
    recorder.drain()
    for k in (3, 4):
        recorder.push(block(k / 100), playhead=k * 1000)
    recorder.drain()
    shutil.rmtree(tmp_path / "takes")
    clock.t += 5.0
    recorder.push(block(5 / 100), playhead=5000)
    recorder.drain()
    (rolled,) = events.of("recording_rolled")
    assert rolled["lost_frames"] == 0
    recorder.close()
    audio, _ = soundfile.read(recorder.path, dtype="float32")
    np.testing.assert_array_equal(audio, np.repeat(np.arange(6) / 100, 1000).astype(np.float32))
    assert events.of("recording_opened")[-1]["frame"] == 0


def test_a_recording_folder_that_cannot_be_made_again_fails_the_recording_with_the_reason(
    tmp_path: Path,
) -> None:
    clock, events = Clock(), MemorySink()
    recorder = Recorder(tmp_path / "takes" / "take.wav", RATE, 1, log_event=events,
                        room="r", start=START, now=clock, retry_s=5.0)
    recorder.push(block(0.1), playhead=0)
    recorder.drain()
    shutil.rmtree(tmp_path / "takes")
    (tmp_path / "takes").write_text("a file where the folder was")
    clock.t += 5.0
    recorder.push(block(0.2))
    recorder.drain()
    status = recorder.status()
    assert status["state"] == "failed"
    assert "deleted while recording" in status["error"]
    assert "a new segment cannot be created" in status["error"]
    assert len(events.of("recording_failed")) == 1
    recorder.push(block(0.3))  # dropped and counted, never blocking
    assert recorder.dropped_frames >= 1000
    (tmp_path / "takes").unlink()  # the operator puts the folder back
    clock.t += 5.0
    recorder.drain()  # the retry
    recorder.push(block(0.4), playhead=9000)
    recorder.drain()
    assert recorder.status()["state"] == "ok" and recorder.path.exists()
    (resumed,) = events.of("recording_resumed")
    assert resumed["path"] == str(recorder.path)
    recorder.close()
    assert soundfile.read(recorder.path)[0].tolist() == pytest.approx([0.4] * 1000)


def test_a_deleted_midi_segment_rolls_into_a_new_one_with_the_notes_since_the_check(
    tmp_path: Path,
) -> None:
    clock, events = Clock(), MemorySink()
    midi = MidiRecorder(tmp_path / "takes" / "{room}" / "{start}.mid", RATE, events,
                        room="r", start=START, now=clock)
    first = midi.path
    midi.announce(0)
    long = Note(0, 30000, 60, 90, 0, 0, out_start=0)
    midi.advance([long], playhead=1000, frames_out=1000)
    clock.t += 5.0
    midi.advance([], playhead=2000, frames_out=2000)  # checked: linked
    shutil.rmtree(tmp_path / "takes")
    short = Note(3000, 4000, 64, 80, 0, 0, out_start=3000)
    midi.advance([short], playhead=3500, frames_out=3500)  # into the deleted file
    clock.t += 5.0
    midi.advance([], playhead=4500, frames_out=4500)  # noticed: rolled from frame 2000
    second = midi.path
    assert second != first and second.exists() and midi.status()["state"] == "ok"
    (rolled,) = events.of("recording_rolled")
    assert rolled["previous"] == str(first) and rolled["reason"] == "deleted"
    assert rolled["lost_frames"] == 2000
    midi.close(frames_out=6000)
    # The new file opens with the note that was sounding, then what came since the check;
    # its tick 0 is played-stream frame 2000.
    notes = sorted((n.pitch, round(n.start * RATE), round(n.end * RATE))
                   for i in pretty_midi.PrettyMIDI(str(second)).instruments for n in i.notes)
    assert notes == [(60, 0, 4000), (64, 1000, 2000)]
    opened = events.of("recording_opened")
    assert [(o["path"], o["frame"]) for o in opened] == [(str(first), 0), (str(second), 2000)]
    closed = {c["path"]: c for c in events.of("recording_closed")}
    assert "deleted" in closed[str(first)]["error"] and closed[str(second)]["error"] is None


# ------------------------------------------------------------ a full disk (defect 2)
def test_a_full_disk_fails_the_recording_until_space_returns_then_it_resumes(
    tmp_path: Path,
) -> None:
    clock, events, disk = Clock(), MemorySink(), FullDisk(room=1500)
    recorder = Recorder(tmp_path / "t.wav", RATE, 1, log_event=events, room="r", start=START,
                        open_file=disk, now=clock, retry_s=5.0)
    first = recorder.path
    recorder.push(block(0.1), playhead=0)
    assert recorder.drain() == 1000
    recorder.push(block(0.1), playhead=1000)
    recorder.drain()  # ENOSPC
    for _ in range(3):
        recorder.push(block(0.1))  # the callback's side: counted, never blocking
        recorder.drain()
    assert recorder.status() == {"state": "failed", "path": str(first),
                                 "error": "ENOSPC: No space left on device"}
    clock.t += 5.0
    recorder.drain()  # a retry: a new segment...
    recorder.push(block(0.1))
    recorder.drain()  # ...that the still full disk refuses: removed, still failed
    assert recorder.failed and sorted(tmp_path.iterdir()) == [first]
    assert len(events.of("recording_failed")) == 1  # one failure, however long it lasts
    disk.room = 10**9  # space returns
    recorder.push(block(0.1))
    clock.t += 5.0
    recorder.drain()  # the retry
    recorder.push(block(0.5), playhead=7000)
    assert recorder.drain() == 1000
    second = recorder.path
    assert second != first and recorder.status() == {"state": "ok", "path": str(second),
                                                     "error": None}
    (resumed,) = events.of("recording_resumed")
    # lost: the write that failed, three blocks, the refused retry's block, one more
    assert resumed["lost_frames"] == 6000 and resumed["lost_s"] == 0.375
    assert resumed["previous"] == str(first) and resumed["error"].startswith("ENOSPC")
    closed = events.of("recording_closed")
    assert [(c["path"], c["frames"], c["dropped_frames"]) for c in closed] == [
        (str(first), 1000, 6000)]
    opened = events.of("recording_opened")
    assert [(o["path"], o["frame"], o["playhead"]) for o in opened] == [
        (str(first), 0, 0), (str(second), 7000, 7000)]
    recorder.close()
    assert soundfile.read(first)[0].tolist() == pytest.approx([0.1] * 1000)
    assert soundfile.read(second)[0].tolist() == pytest.approx([0.5] * 1000)
    assert recorder.dropped_frames == 6000 and recorder.frames_saved == 2000


def test_a_full_disk_stops_the_midi_segment_until_space_returns(tmp_path: Path) -> None:
    clock, events = Clock(), MemorySink()
    budget = {"bytes": 200}

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        if len(data) > budget["bytes"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        budget["bytes"] -= len(data)
        return os.pwrite(fd, data, offset)

    midi = MidiRecorder(tmp_path / "t.mid", RATE, events, room="r", start=START, write=pwrite,
                        now=clock, retry_s=5.0)
    first = midi.path
    midi.announce(0)
    frame = 0
    while not midi.failed:
        frame += 100
        midi.advance([Note(frame, frame + 50, 60, 90, 0, 0, out_start=frame)],
                     playhead=frame + 60, frames_out=frame + 60)
    assert midi.status()["error"] == "ENOSPC: No space left on device"
    clock.t += 5.0
    midi.advance([], playhead=frame + 100, frames_out=frame + 100)  # still full
    assert midi.failed and sorted(tmp_path.iterdir()) == [first]
    budget["bytes"] = 10**9
    held = Note(20000, 40000, 67, 70, 0, 0, out_start=20000)
    midi.advance([held], playhead=20100, frames_out=20100)  # heard while failed
    clock.t += 5.0
    midi.advance([], playhead=24000, frames_out=24000)  # the retry: resumed at 24000
    second = midi.path
    assert second != first and midi.status()["state"] == "ok"
    (resumed,) = events.of("recording_resumed")
    assert resumed["previous"] == str(first) and resumed["lost_frames"] == 24000 - frame - 60
    midi.advance([Note(30000, 31000, 72, 90, 0, 0, out_start=30000)], playhead=32000,
                 frames_out=32000)
    midi.close(frames_out=48000)
    notes = sorted((n.pitch, round(n.start * RATE), round(n.end * RATE))
                   for i in pretty_midi.PrettyMIDI(str(second)).instruments for n in i.notes)
    # the note sounding when it resumed starts the new segment (its tick 0 = frame 24000)
    assert notes == [(67, 0, 16000), (72, 6000, 7000)]
    assert len(events.of("recording_failed")) == 1
    assert [o["path"] for o in events.of("recording_opened")] == [str(first), str(second)]
    assert mido.MidiFile(str(first)).tracks[0]  # what fitted before stays a readable file


def test_the_midi_segment_is_fsynced_at_the_audio_segments_cadence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[float] = []
    clock = Clock()
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(clock.t))
    midi = MidiRecorder(tmp_path / "t.mid", RATE, room="r", start=START, now=clock, sync_s=5.0)
    start = clock.t
    for step in range(25):  # 12 s of polls every 0.5 s
        midi.advance([Note(step * 800, step * 800 + 400, 60, 90, 0, 0, out_start=step * 800)],
                     playhead=step * 800 + 10, frames_out=step * 800 + 10)
        clock.t += 0.5
    assert [t - start for t in synced] == [5.0, 10.0]
    midi.close(frames_out=25 * 800)


# ------------------------------------------------------ a FLAC cut by a kill (3, 4)
def killed_flac(path: Path, frames: int, value: float = 0.25) -> Path:
    """A FLAC segment as a SIGKILL leaves it: copied while its recorder still writes."""
    recorder = Recorder(path.with_name("writing.flac"), RATE, 1)
    t = np.arange(frames) / RATE
    audio = (value * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[:, None]
    for i in range(0, frames, 500):
        recorder.push(audio[i : i + 500])
        recorder.drain()
    shutil.copyfile(recorder.path, path)
    recorder.close()
    recorder.path.unlink()
    assert soundfile.info(str(path)).frames >= UNKNOWN_LENGTH  # libFLAC: length on close only
    return path


def test_a_killed_flac_segment_is_measured_by_reading_not_by_its_header(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    flac = killed_flac(out / "take-r-1.flac", 100_000)
    readable = sum(len(b) for b in read_segment(flac))
    (out / "events").mkdir()
    (out / "events" / "audio_out-r.jsonl").write_text(json.dumps({
        "time": 1000.0, "kind": "recording_opened", "role": "audio_out", "room": "r",
        "path": str(flac), "media": "audio", "sample_rate": RATE, "channels": 1,
        "playhead": 0, "frame": 0, "started": "s1"}) + "\n")
    report = RunReport(out, WriteFailures(print), print, from_start=True)
    report.start()
    report.poll()
    report.finish()
    assert report.builder is not None
    room = report.builder.rooms_report()["r"]
    (segment,) = room["segments"]
    assert segment["frames"] == readable and segment["seconds"] == round(readable / RATE, 3)
    assert room["recorded_s"] == round(readable / RATE, 3) < 7.0  # not 2**63 frames


def test_read_segment_recovers_a_killed_flac_to_its_last_decodable_frames(
    tmp_path: Path,
) -> None:
    flac = killed_flac(tmp_path / "take.flac", 100_000)
    decodable = 0  # the most a reader gets: the frames libFLAC wrote, 64 at a time
    with soundfile.SoundFile(str(flac)) as file:
        while True:
            try:
                piece = file.read(64)
            except soundfile.LibsndfileError:
                break
            if not len(piece):
                break
            decodable += len(piece)
    audio = np.concatenate(list(read_segment(flac)))
    assert decodable >= 100_000 - 2 * 4608 and len(audio) == decodable
    t = np.arange(len(audio)) / RATE
    np.testing.assert_allclose(audio[:, 0], 0.25 * np.sin(2 * np.pi * 440 * t), atol=1e-5)


def test_the_join_keeps_a_killed_flac_segment_to_its_last_decodable_frames(
    tmp_path: Path,
) -> None:
    flac = killed_flac(tmp_path / "take-1.flac", 100_000)
    whole = tmp_path / "take-2.flac"
    soundfile.write(whole, np.full((8000, 1), 0.5, np.float32), RATE, subtype="PCM_24")
    readable = sum(len(b) for b in read_segment(flac))
    starts: list[int] = []
    joined, notes = join_audio([flac, whole], tmp_path / "demo.wav", starts=starts)
    assert joined is not None
    audio, _ = soundfile.read(joined, dtype="float32")
    assert len(audio) == readable + 8000 and starts == [0, readable]
    assert readable >= 100_000 - 2 * 4608  # at most a FLAC frame or two short, not 65536
    assert np.all(audio[readable:] > 0.49)
    assert any("take-1.flac: cut short" in note for note in notes), notes


# ------------------------------------------------------- notes left sounding (defect 5)
def killed_midi(path: Path, notes: list[tuple[int, int, int]]) -> Path:
    """A MIDI segment as a SIGKILL leaves it: note-ons of the notes still sounding, no
    note-offs for them, no end of track. ``notes``: (pitch, start, end) frames."""
    midi = MidiRecorder(path, RATE)
    played = [Note(s, e, p, 90, 0, 0, out_start=s) for p, s, e in notes]
    midi.advance(played, playhead=max(s for _, s, _ in notes) + 1)
    shutil.copyfile(midi.path, path.with_name("killed.mid"))
    midi.close(0)
    path.with_name("killed.mid").replace(path)
    assert mido.MidiFile(str(path)).tracks[0][-1].type != "end_of_track"
    return path


def sounding_spans(path: Path) -> list[tuple[int, float, float]]:
    """(pitch, start s, end s) of every note in a MIDI file (pretty_midi pairs ons and offs)."""
    return sorted((n.pitch, round(n.start, 3), round(n.end, 3))
                  for i in pretty_midi.PrettyMIDI(str(path)).instruments for n in i.notes)


def test_join_midi_releases_the_notes_a_killed_segment_left_sounding(tmp_path: Path) -> None:
    first = killed_midi(tmp_path / "a.mid", [(60, 0, 8000), (62, 8000, 200000)])
    second = tmp_path / "b.mid"
    midi = MidiRecorder(second, RATE)
    midi.advance([Note(0, 4000, 64, 90, 0, 0, out_start=0)], playhead=5000)
    midi.close(8000)
    joined, notes = join_midi([(first, 0.0, 1.25), (second, 1.25)], tmp_path / "demo.mid")
    assert joined is not None
    # the note the kill left sounding ends where its segment's music did, not 12 s later
    assert sounding_spans(joined) == [(60, 0.0, 0.5), (62, 0.5, 1.25), (64, 1.25, 1.5)]
    assert any("a.mid" in n and "1 notes still sounding there released" in n for n in notes)
    # ...and with no end given, at the next segment's start
    joined, _ = join_midi([(first, 0.0), (second, 1.0)], tmp_path / "demo2.mid")
    assert joined is not None
    assert sounding_spans(joined) == [(60, 0.0, 0.5), (62, 0.5, 1.0), (64, 1.0, 1.25)]


def test_a_single_killed_midi_segment_is_repaired_not_copied(tmp_path: Path) -> None:
    first = killed_midi(tmp_path / "a.mid", [(60, 0, 8000), (62, 8000, 200000)])
    joined, _ = join_midi([(first, 0.0, 1.5)], tmp_path / "demo.mid")
    assert joined is not None
    midi = mido.MidiFile(str(joined))
    assert all(track[-1].type == "end_of_track" for track in midi.tracks)
    assert sounding_spans(joined) == [(60, 0.0, 0.5), (62, 0.5, 1.5)]


# ------------------------------------------------ where a segment starts (defect 6)
def array_sink(config: AudioOutConfig, sr: int, ch: int, fill: Any, log: Any) -> ArrayOutput:
    return ArrayOutput(sr, ch, config.block_size, fill)


BURST = 1600  # 0.1 s: a note's sound


def burst_chunk(room: str, seq: int, start: int, frames: int, onsets: list[int]) -> AudioChunk:
    """Silence with a burst (and a note) at each onset: where a note is, it is heard."""
    audio = np.zeros((frames, 2), np.float32)
    for onset in onsets:
        audio[onset : onset + BURST] = 0.5
    notes = np.array([[o, BURST, 60 + i, 90, 0, 0] for i, o in enumerate(onsets)], np.int32)
    return AudioChunk(v=PROTOCOL_VERSION, room=room, seq=seq, start_sample=start,
                      sample_rate=RATE, audio=Array.from_numpy(audio),
                      notes=Array.from_numpy(notes))


def play(folder: Path, room: str, chunk: AudioChunk, blocks: int, record: str) -> MemorySink:
    """One start of audio_out: play ``blocks`` of 256 frames of ``chunk``, then stop."""
    # dc_block_hz=0: the "notes" are bursts of a constant, which a DC blocker would end
    # in a swing the onset detector counts as another note
    config = AudioOutConfig(sample_rate=RATE, block_size=256, fade_in_s=0.0, dc_block_hz=0.0,
                            record=str(folder / record), midi_file=str(folder / "demo.mid"))
    events = MemorySink()
    player = Player(room, config, 2, events, output_factory=array_sink, poll_s=3600.0)
    player.start()
    player.submit(chunk)
    assert isinstance(player.output, ArrayOutput)
    for _ in range(blocks // 10):
        player.output.pull(10)
        player.poll()
    player.stop()
    return events


def test_recording_opened_gives_the_timeline_sample_of_the_first_recorded_frame(
    tmp_path: Path,
) -> None:
    # A restarted audio_out: the engine goes on where the room's timeline is, 3 s in.
    events = play(tmp_path, "r1", burst_chunk("r1", 0, 3 * RATE, RATE, [0, 8000]), 40,
                  "take.wav")
    opened = {o["media"]: o for o in events.of("recording_opened")}
    assert opened["audio"]["playhead"] == 3 * RATE and opened["audio"]["frame"] == 0
    assert opened["midi"]["playhead"] == 3 * RATE and opened["midi"]["frame"] == 0
    assert opened["audio"]["started"] == opened["midi"]["started"]


def _write_events(out: Path, starts: list[tuple[float, MemorySink]]) -> None:
    (out / "events").mkdir(parents=True, exist_ok=True)
    with (out / "events" / "audio_out-demo.jsonl").open("a") as file:
        for t0, sink in starts:
            for index, (kind, fields) in enumerate(sink.items):
                row = {"time": t0 + index * 0.001, "kind": kind, "role": "audio_out",
                       "room": "demo"} | fields
                file.write(json.dumps(row, default=str) + "\n")


def _onsets(audio: np.ndarray) -> list[int]:
    loud = np.abs(audio[:, 0]) > 0.25
    return [int(i) for i in np.flatnonzero(loud[1:] & ~loud[:-1]) + 1] + (
        [0] if loud[0] else [])


def test_the_demo_aligns_each_starts_midi_with_its_audio_across_a_kill(tmp_path: Path) -> None:
    """Start 1 killed mid-take (a FLAC without a length, MIDI notes left sounding), start 2
    resumed 3 s into the timeline: demo.flac keeps start 1 to its last decodable frames,
    demo.mid puts every note on its sound, and nothing of start 1 sounds into start 2."""
    out = tmp_path / "out"
    out.mkdir()
    # -- start 1, killed: the real recorders, their files copied as the kill left them
    sink1 = MemorySink()
    recorder = Recorder(out / "demo.flac", RATE, 2, log_event=sink1, room="demo", start=START,
                        to_timeline=lambda p: p)
    midi = MidiRecorder(out / "demo.mid", RATE, sink1, room="demo", start=START)
    onsets1 = list(range(0, 40000, 8000))
    chunk = burst_chunk("demo", 0, 0, 40000, onsets1).audio.to_numpy()
    for i in range(0, 40000, 500):
        recorder.push(chunk[i : i + 500], playhead=i)
        recorder.drain()
    midi.announce(0)
    hung = Note(30000, 60000, 70, 90, 0, 0, out_start=30000)  # sounding as the kill came
    midi.advance([Note(o, o + BURST, 60 + k, 90, 0, 0, out_start=o)
                  for k, o in enumerate(onsets1)] + [hung], playhead=40000, frames_out=40000)
    killed = {recorder.path: recorder.path.read_bytes(), midi.path: midi.path.read_bytes()}
    kept = len(sink1.items)
    recorder.close()
    midi.close(40000)
    for path, data in killed.items():
        path.write_bytes(data)
    del sink1.items[kept:]  # a killed process logs no close
    # -- start 2: a real player, the timeline resumed at 3 s
    sink2 = play(out, "demo", burst_chunk("demo", 1, 3 * RATE, 24000, [0, 8000, 16000]), 90,
                 "demo.flac")
    _write_events(out, [(1000.0, sink1), (2000.0, sink2)])
    config = config_from_dict({
        "installation": {"output_dir": str(out)},
        "engine": {"sample_rate": RATE},
        "rooms": [{"id": "demo", "audio_out": {"record": "demo.flac", "midi_file": "demo.mid",
                                                "stop_after_s": 5.0, "output": "none"}}],
    })
    report = RunReport(out, WriteFailures(print), print, from_start=True)
    report.start()
    report.poll()
    report.finish()
    summary = summarise_demo(config, 30.0, [], report)

    audio, _ = soundfile.read(out / "demo.flac", dtype="float32", always_2d=True)
    first_s = summary["rooms"]["demo"]["segments"][0]["seconds"]
    assert 36000 / RATE <= first_s < 40000 / RATE  # measured by reading: not 1.9e14 s
    assert summary["rooms"]["demo"]["recorded_s"] < 10.0
    first = round(first_s * RATE)
    assert len(audio) == first + 90 * 256  # the killed FLAC joined to its last frames
    sound = _onsets(audio)
    notes = sounding_spans(out / "demo.mid")
    heard = [round(start * RATE) for _, start, _ in notes]
    assert sorted(heard) == sorted(sound + [30000]), (heard, sound)  # each note on its sound
    assert [o for o in sound if o >= first] == [first, first + 8000, first + 16000]
    # the note the kill left sounding ends where start 1's music ends
    (released,) = [n for n in notes if n[0] == 70]
    assert released[2] == pytest.approx(first / RATE, abs=1e-3)
    assert mido.MidiFile(str(out / "demo.mid")).length < 10.0
