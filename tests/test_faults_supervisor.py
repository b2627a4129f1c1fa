"""Issue 12, the supervisor's side: the run report, `art2mus status`, role exit codes, a run.

- The run report is built from the roles' event logs as a stream (items 9 and
  14): timeline rows, each room's recording segments, totals; its memory stays
  flat with the length of the run (tracemalloc peaks, not times).
- The demo joins a room's segments into demo.wav / demo.mid, block by block.
- ``art2mus status`` exits non-zero when the status is stale, the supervisor is
  gone, or a role or recording failed; ``--watch`` redraws until Ctrl-C.
- A role with bad input exits with the input error's code (3) and one JSON
  error line, so the supervisor knows a restart will not help.
- ``art2mus run`` on real processes: a killed engine is one console line and
  comes back; SIGTERM leaves timeline.json, the summary, JSON-only logs and a
  status where every role is "stopped".
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from ground.errors import InputError
from ground.jsonlog import WriteFailures
from installation.config import config_from_dict, freeze_config
from installation.ops_cli import status as status_command
from installation.report import RunReport, analyse_audio, join_roughness
from tests.status_files import status_config

# -- the run report -------------------------------------------------------------


def _write_events(folder: Path, name: str, events: list[dict[str, Any]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{name}.jsonl").open("a") as file:
        for event in events:
            file.write(json.dumps(event) + "\n")


def _report(out: Path, lines: list[str] | None = None) -> RunReport:
    said = lines if lines is not None else []
    report = RunReport(out, WriteFailures(said.append), said.append, from_start=True)
    report.start()
    report.poll()
    report.finish()
    return report


def test_the_run_report_streams_events_into_timeline_and_segments(tmp_path: Path) -> None:
    out = tmp_path / "out"
    events = out / "events"
    out.mkdir()
    live = out / "take-a-2.wav"  # the segment audio_out was killed in: no close logged
    soundfile.write(live, np.zeros((16000, 1), np.float32), 8000)

    def chunk(t: float, seq: int, reason: str, artwork: str) -> dict[str, Any]:
        return {"time": t, "kind": "chunk", "role": "engine", "room": "a", "seq": seq,
                "start_sample": seq * 4000, "frames": 4000, "crossfade": 0, "reason": reason,
                "artwork_id": artwork, "generation_s": 0.05}

    _write_events(events, "engine", [
        chunk(101.2, 0, "start", "A1"), chunk(101.4, 1, "continue", "A1"),
        {"time": 101.45, "kind": "decisions", "role": "engine", "room": "a",
         "artwork_id": "A1", "state": "artwork", "decisions": {"key": "C"}, "features": {}},
        chunk(101.9, 2, "continue", "A1"), chunk(102.1, 3, "continue", "A1"),
        chunk(102.2, 4, "transition", "B2"), chunk(103.0, 5, "continue", "B2"),
    ])
    heard = [(0, 101.6), (1, 101.9), (2, 102.4), (4, 102.8), (5, 103.5)]  # 3 was replaced
    audio: list[dict[str, Any]] = [
        {"time": 101.25, "kind": "recording_opened", "role": "audio_out", "room": "a",
         "path": str(out / "take-a-1.wav"), "media": "audio", "sample_rate": 8000,
         "channels": 1, "playhead": 0},
        {"time": 102.999, "kind": "chunk_received", "role": "audio_out", "room": "a",
         "seq": 5, "late_frames": 0},  # before the engine's own line for it: still matched
    ]
    audio += [{"time": t, "kind": "chunk_started", "role": "audio_out", "room": "a", "seq": s,
               "wall_time": t} for s, t in heard]
    audio += [
        {"time": 103.6, "kind": "underflow", "role": "audio_out", "room": "a", "count": 1},
        {"time": 103.9, "kind": "recording_closed", "role": "audio_out", "room": "a",
         "path": str(out / "take-a-1.wav"), "media": "audio", "frames": 20000,
         "seconds": 2.5, "dropped_frames": 5, "error": None},
        {"time": 104.1, "kind": "recording_opened", "role": "audio_out", "room": "a",
         "path": str(live), "media": "audio", "sample_rate": 8000, "channels": 1,
         "playhead": 24000},
    ]
    _write_events(events, "audio_out-a", sorted(audio, key=lambda e: e["time"]))
    # capture back-dates a source change to when the camera turned: out of order in its file
    _write_events(events, "capture-a", [
        {"time": 101.0, "kind": "artwork_change", "role": "capture", "room": "a",
         "artwork_id": "A1", "state": "artwork", "confidence": 0.9},
        {"time": 100.5, "kind": "source_change", "role": "capture", "room": "a",
         "artwork_index": 0, "style": "stripes"},
        {"time": 101.9, "kind": "source_change", "role": "capture", "room": "a",
         "artwork_index": 1, "style": "blobs"},
        {"time": 102.0, "kind": "artwork_change", "role": "capture", "room": "a",
         "artwork_id": "B2", "state": "artwork", "confidence": 0.8},
    ])
    _write_events(events, "supervisor", [
        {"time": 100.0, "kind": "role_started", "role": "engine", "pid": 1, "restarts": 0},
        {"time": 104.0, "kind": "role_exited", "role": "audio_out:a", "code": -9},
    ])

    report = _report(out)
    summary = report.summary(5.0, 8000)
    path = report.write(summary)
    assert path == out / "timeline.json"
    timeline = json.loads(path.read_text())

    assert timeline["t0"] == 100.0
    assert [(c["seq"], c["heard_at"]) for c in timeline["chunks"]] == [
        (0, 1.6), (1, 1.9), (2, 2.4), (3, None), (4, 2.8), (5, 3.5)]
    assert timeline["chunks"][5]["late_frames"] == 0
    assert [(t["artwork_id"], t["startup"], t["shown_at"], t["detected_at"], t["heard_at"],
             t["transition_delay_s"]) for t in timeline["transitions"]] == [
        ("A1", True, 0.5, 1.0, 1.6, 1.1), ("B2", False, 1.9, 2.0, 2.8, 0.9)]
    assert timeline["role_exits"] == [{"time": 4.0, "role": "audio_out:a", "code": -9}]
    assert [d["decisions"] for d in timeline["decisions"]] == [{"key": "C"}]
    segments = timeline["recordings"]["a"]["segments"]
    assert [(Path(s["path"]).name, s["seconds"], s["dropped_frames"], s["closed"])
            for s in segments] == [("take-a-1.wav", 2.5, 5, True), ("take-a-2.wav", 2.0, 0, False)]
    assert timeline["recordings"]["a"]["recorded_s"] == 4.5
    assert timeline["recordings"]["a"]["underflows"] == 1
    s = timeline["summary"]
    assert s["chunks"] == 6 and s["transition_delay_s"] == {"max": 0.9, "mean": 0.9}
    assert s["first_artwork_heard_after_s"] == 1.1 and s["role_exits"] == {"audio_out:a": 1}
    assert s["generator_realtime_factor"] == round(6 * 4000 / 8000 / (6 * 0.05), 1)
    assert not list((out / "run" / "report").glob("*.jsonl"))  # spools cleaned up


def test_a_run_report_holds_only_the_lag_window_of_events_when_live(tmp_path: Path) -> None:
    out = tmp_path / "out"
    now = time.time()
    _write_events(out / "events", "engine", [
        {"time": now - 60, "kind": "chunk", "role": "engine", "room": "a", "seq": 0,
         "start_sample": 0, "frames": 10, "reason": "start", "artwork_id": "x"},
        {"time": now - 1, "kind": "chunk", "role": "engine", "room": "a", "seq": 1,
         "start_sample": 10, "frames": 10, "reason": "continue", "artwork_id": "x"}])
    report = RunReport(out, WriteFailures(print), print)
    report.from_start = True
    report.start()
    report.poll()  # live: only what is older than the lag (30 s) is taken in
    assert report.builder is not None and report.builder.chunks == 1
    report.finish()  # the roles are gone: everything
    assert report.builder.chunks == 2


def test_the_report_drains_every_file_when_one_has_nothing_new(tmp_path: Path) -> None:
    """A file read to its end (the supervisor's, quiet all run) must not stop the others."""
    from installation.report import EventFollower

    events = tmp_path / "events"
    _write_events(events, "supervisor", [{"time": 1000.0, "kind": "role_started",
                                          "role": "engine"}])
    follower = EventFollower(events, lag_s=30.0)
    assert [e["kind"] for e in follower.poll(now=1000.0)] == []  # inside the lag: kept
    _write_events(events, "engine", [
        {"time": 1000.0 + i, "kind": "chunk", "role": "engine", "room": "a", "seq": i}
        for i in range(100)])
    live = list(follower.poll(now=1080.0))  # handed out up to now - lag
    assert [e["time"] for e in live] == [1000.0] + [1000.0 + i for i in range(51)]
    rest = list(follower.poll(None))  # the run has ended: everything left, in order
    assert [e["seq"] for e in rest] == list(range(51, 100))


def _long_event_log(folder: Path, chunks: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "engine.jsonl").open("w") as engine, \
            (folder / "audio_out-a.jsonl").open("w") as audio:
        for seq in range(chunks):
            t = 1000.0 + seq * 0.5
            engine.write(f'{{"time":{t},"kind":"chunk","role":"engine","room":"a","seq":{seq},'
                         f'"start_sample":{seq * 24000},"frames":24000,"crossfade":0,'
                         f'"reason":"continue","artwork_id":"art-{seq // 40}",'
                         f'"generation_s":0.01}}\n')
            audio.write(f'{{"time":{t + 0.01},"kind":"chunk_received","role":"audio_out",'
                        f'"room":"a","seq":{seq},"late_frames":0}}\n'
                        f'{{"time":{t + 1.5},"kind":"chunk_started","role":"audio_out",'
                        f'"room":"a","seq":{seq}}}\n')


def _peak_bytes(work: Any) -> int:
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_run_report_memory_stays_flat_with_the_length_of_the_run(tmp_path: Path) -> None:
    peaks = []
    for chunks in (200, 1500, 12000):  # warm-up, then 12.5 min and 100 min of 0.5 s chunks
        out = tmp_path / f"run-{chunks}"
        _long_event_log(out / "events", chunks)

        def work(out: Path = out) -> None:
            report = _report(out)
            assert report.write(report.summary(1.0, 48000)) is not None

        peaks.append(_peak_bytes(work))
        timeline = json.loads((out / "timeline.json").read_text())
        assert len(timeline["chunks"]) == chunks
        assert all(c["heard_at"] is not None for c in timeline["chunks"])
    # eight times the run, the same memory (the old report held every event: ~30 MB here)
    assert peaks[2] < peaks[1] + 500_000 and peaks[2] < 6_000_000, peaks


# -- audio, in blocks -------------------------------------------------------------


def test_block_wise_audio_figures_match_the_whole_file_measures(tmp_path: Path) -> None:
    import pyloudnorm

    rate = 48000
    rng = np.random.default_rng(1)
    t = np.arange(int(12.3 * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * 440 * t) * (1 + 0.5 * np.sin(2 * np.pi * 0.3 * t))
    tone[5 * rate: int(6.2 * rate)] = 0.0  # 1.2 s of silence
    audio = np.stack([tone, 0.5 * tone], axis=1).astype(np.float32)
    joins = sorted(j for j in rng.integers(100, len(tone) - 100, 60).tolist()
                   if not 4.9 * rate < j < 6.3 * rate)  # none in the silence
    audio[joins] += 0.2  # clicks at the joins
    path = tmp_path / "take.wav"
    soundfile.write(path, audio, rate, subtype="FLOAT")
    figures, stats = analyse_audio(path, ranges=[(0, 4 * rate), (7 * rate, 12 * rate)],
                                   joins=joins, block_frames=10007)  # blocks cut anywhere
    expected = pyloudnorm.Meter(rate).integrated_loudness(audio.astype(np.float64))
    assert abs(figures["integrated_lufs"] - expected) < 0.05
    assert figures["seconds"] == 12.3 and figures["channels"] == 2
    assert abs(figures["longest_silence_s"] - 1.2) <= 0.05
    assert figures["peak_dbfs"] == round(20 * math.log10(float(np.abs(audio).max())), 2)
    assert stats.join_roughness() == pytest.approx(join_roughness(audio, joins), rel=1e-6)
    assert all(abs(c - 440) < 15 for c in stats.range_centroids())  # type: ignore[operator]


def test_reading_and_joining_a_take_uses_memory_flat_with_its_length(tmp_path: Path) -> None:
    from installation.demo import join_audio

    rate = 8000
    peaks = []
    for minutes in (0, 1, 6):  # a warm-up (imports, FFT plans), then 1 and 6 minutes
        folder = tmp_path / f"take-{minutes}"
        folder.mkdir()
        paths = []
        for index in range(2):  # two segments of the take
            path = folder / f"seg-{index}.wav"
            with soundfile.SoundFile(path, "w", rate, 1, subtype="FLOAT") as file:
                for _ in range(max(1, minutes * 30)):  # blocks of one second
                    file.write(np.full((rate, 1), 0.1 * (index + 1), np.float32))
            paths.append(path)

        def work(folder: Path = folder, paths: list[Path] = paths) -> None:
            joined, notes = join_audio(paths, folder / "demo.wav")
            assert joined is not None and not notes
            analyse_audio(joined)

        peaks.append(_peak_bytes(work))
        assert soundfile.info(str(folder / "demo.wav")).frames == max(2, minutes * 60) * rate
    # 6x the take, the same memory (read whole in float64, the 6 min take alone is 23 MB)
    assert peaks[2] < peaks[1] + 500_000 and peaks[2] < 12_000_000, peaks


JOIN_ON_A_FULL_DISK = """
import resource, signal, sys
from pathlib import Path
from installation.demo import join_audio, join_midi
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
folder = Path(sys.argv[1])
for joined, notes in (join_audio(sorted(folder.glob("seg-*.wav")), folder / "demo.wav"),
                      join_midi([(folder / "seg-0.mid", 0.0), (folder / "seg-1.mid", 1.0)],
                                folder / "sub" / "demo.mid")):
    print(joined, "|", notes[-1])
"""


def test_a_take_that_cannot_be_joined_stays_in_its_segments(tmp_path: Path) -> None:
    """An operator's full disk: joining demo.wav raised LibsndfileError out of the demo's
    summary (a traceback, a half file left). Now a note says where the take is."""
    import pretty_midi

    for index in range(2):  # two segments of 1 s, 64 KB each: the join needs 128 KB
        soundfile.write(tmp_path / f"seg-{index}.wav", np.full((8000, 2), 0.1, np.float32),
                        8000, subtype="FLOAT")
        midi = pretty_midi.PrettyMIDI()
        midi.instruments.append(pretty_midi.Instrument(0))
        midi.instruments[0].notes.append(pretty_midi.Note(90, 60, 0.0, 0.5))
        midi.write(str(tmp_path / f"seg-{index}.mid"))
    (tmp_path / "sub").write_text("a file where the MIDI's folder should be")
    child = subprocess.run([sys.executable, "-c", JOIN_ON_A_FULL_DISK, str(tmp_path)],
                           capture_output=True, text=True, timeout=60)
    assert child.returncode == 0, child.stderr[-2000:]
    audio, midi_line = child.stdout.splitlines()
    assert audio.startswith(f"None | cannot write {tmp_path / 'demo.wav'} (")
    assert audio.endswith("the take stays in its segments, seg-0.wav, seg-1.wav"), audio
    assert midi_line.startswith(f"None | cannot write {tmp_path / 'sub' / 'demo.mid'} (")
    assert not list(tmp_path.glob("*.partial")) and not (tmp_path / "demo.wav").exists()


def test_the_demo_joins_a_rooms_segments_into_demo_wav_and_demo_mid(tmp_path: Path) -> None:
    import pretty_midi

    from audio_out.midi import TempoChange, write_midi_file
    from installation.demo import summarise_demo

    out = tmp_path / "out"
    rate = 16000
    config = config_from_dict({
        "installation": {"output_dir": str(out)},
        "engine": {"sample_rate": rate},
        "rooms": [{"id": "demo", "audio_out": {"record": "demo.wav", "midi_file": "demo.mid",
                                                "stop_after_s": 5.0, "output": "none"}}],
    })
    segments = [(out / "demo-demo-1.wav", 440.0, 2.0, 10.0), (out / "demo-demo-2.wav", 880.0,
                                                              3.0, 20.0)]
    events: list[dict[str, Any]] = []
    out.mkdir()
    for index, (path, hz, seconds, opened) in enumerate(segments):
        t = np.arange(int(seconds * rate)) / rate
        soundfile.write(path, np.stack([np.sin(2 * np.pi * hz * t)] * 2, 1).astype(np.float32)
                        * 0.5, rate)
        midi = out / f"demo-demo-{index + 1}.mid"
        # each segment carries its music's tempo map: the first changes to 90 bpm in 3/4
        # after a second at 120, the second plays at 60 bpm throughout
        if index == 0:
            notes = [[0, rate // 2, 60, 90, 0, 0], [rate, rate // 2, 64, 90, 0, 0],
                     [rate * 3 // 2, rate // 4, 65, 90, 0, 0]]
            tempi = [TempoChange(rate, 90.0, (3, 4))]
        else:
            notes = [[0, rate // 2, 61, 90, 0, 0], [rate // 2, rate // 2, 62, 90, 0, 0]]
            tempi = [TempoChange(0, 60.0)]
        write_midi_file(midi, np.array(notes), rate, tempi)
        base = {"role": "audio_out", "room": "demo"}
        events += [
            base | {"time": opened, "kind": "recording_opened", "path": str(path),
                    "media": "audio", "sample_rate": rate, "channels": 2, "playhead": 0},
            base | {"time": opened + 0.05, "kind": "recording_opened", "path": str(midi),
                    "media": "midi", "sample_rate": rate, "playhead": 0},
            base | {"time": opened + seconds, "kind": "recording_closed", "path": str(path),
                    "media": "audio", "frames": int(seconds * rate), "seconds": seconds,
                    "dropped_frames": 0, "error": None},
        ]
    _write_events(out / "events", "audio_out-demo", events)
    report = _report(out)
    summary = summarise_demo(config, 30.0, [], report)

    joined, got_rate = soundfile.read(str(out / "demo.wav"), always_2d=True)
    assert got_rate == rate and len(joined) == 5 * rate
    first, second = joined[: 2 * rate, 0], joined[2 * rate:, 0]
    assert np.allclose(first, 0.5 * np.sin(2 * np.pi * 440 * np.arange(2 * rate) / rate),
                       atol=1e-3)
    assert np.allclose(second[:100], 0.5 * np.sin(2 * np.pi * 880 * np.arange(100) / rate),
                       atol=1e-3)
    midi = pretty_midi.PrettyMIDI(str(out / "demo.mid"))
    starts = sorted((round(n.start, 2), n.pitch) for i in midi.instruments for n in i.notes)
    # segment 2 starts where its audio does; every note keeps its time under its tempo map
    assert starts == [(0.0, 60), (1.0, 64), (1.5, 65), (2.0, 61), (2.5, 62)]
    times, bpm = midi.get_tempo_changes()
    assert np.allclose(times, [0.0, 1.0, 2.0], atol=1e-3) and np.allclose(bpm, [120, 90, 60])
    assert [(round(s.time, 3), s.numerator) for s in midi.time_signature_changes] == [
        (0.0, 4), (1.0, 3), (2.0, 4)]
    assert summary["audio"]["seconds"] == 5.0 and summary["midi_file"] == str(out / "demo.mid")
    timeline = json.loads((out / "timeline.json").read_text())
    assert [s["seconds"] for s in timeline["recordings"]["demo"]["segments"]
            if s["kind"] == "audio"] == [2.0, 3.0]


# -- art2mus status ---------------------------------------------------------------


def _status_record(**changes: Any) -> dict[str, Any]:
    roles = [
        {"name": "engine", "kind": "engine", "room": None, "pid": 11, "state": "running",
         "uptime_s": 9.0, "restarts": 0, "hangs": 0, "heartbeat_age_s": 0.2, "exit_code": None,
         "reason": None, "status": {}},
        {"name": "audio_out:a", "kind": "audio_out", "room": "a", "pid": 12, "state": "running",
         "uptime_s": 9.0, "restarts": 0, "hangs": 0, "heartbeat_age_s": 0.2, "exit_code": None,
         "reason": None, "status": {"state": "playing", "recording": {
             "state": "ok", "path": "/x/take-a.wav", "error": None}}},
    ]
    record = {"installation": "t", "time": time.time(), "state": "running",
              "supervisor_pid": os.getpid(), "host": socket.gethostname(), "roles": roles,
              "rooms": {}, "params": {}, "write_errors": {}}
    return record | changes


def _status(tmp_path: Path, record: dict[str, Any], *args: str) -> Any:
    config = status_config(tmp_path)
    (tmp_path / "out").mkdir(exist_ok=True)
    (tmp_path / "out" / "status.json").write_text(json.dumps(record))
    return CliRunner().invoke(status_command, ["--config", str(config), *args])


def test_status_exits_zero_only_when_all_is_well(tmp_path: Path) -> None:
    healthy = _status(tmp_path, _status_record())
    assert healthy.exit_code == 0, healthy.output
    assert "PROBLEM" not in healthy.output and "ok" in healthy.output

    stale = _status(tmp_path, _status_record(time=time.time() - 60))
    assert stale.exit_code == 1 and "STALE" in stale.output

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = _status(tmp_path, _status_record(supervisor_pid=gone.pid))
    assert dead.exit_code == 1 and f"supervisor (pid {gone.pid}) is not running" in dead.output

    record = _status_record()
    record["roles"][0] |= {"state": "failed", "pid": None, "exit_code": 3,
                           "reason": "exited 3 times in a row with code 3 (input error)"}
    failed = _status(tmp_path, record)
    assert failed.exit_code == 1 and "engine is failed: exited 3 times" in failed.output

    record = _status_record()
    record["roles"][1]["status"]["recording"] = {"state": "failed", "path": "/x/take-a.wav",
                                                 "error": "No space left on device"}
    full = _status(tmp_path, record)
    assert full.exit_code == 1 and "recording failed" in full.output
    assert "No space left on device" in full.output

    record = _status_record()
    record["roles"][0]["status"]["write_errors"] = {
        "/x/run/engine-state.json": "[Errno 28] No space left on device"}
    state = _status(tmp_path, record)
    assert state.exit_code == 1, state.output
    assert "engine cannot write /x/run/engine-state.json: [Errno 28]" in state.output

    for odd in ([1, 2], {"roles": "x"}, {"roles": [1]}, {"roles": [{"status": [1]}]}):
        broken = _status(tmp_path, odd)  # type: ignore[arg-type]
        # (the command's InputError: the CLI's main says it in one line, exit code 3)
        assert isinstance(broken.exception, InputError), broken.exception
        assert str(broken.exception).startswith("cannot read status file ")
    record = _status_record()
    record["roles"][0]["status"] = {"rooms": {"a": {"tempo_bpm": "fast", "key": None}}}
    odd_values = _status(tmp_path, record)  # a heartbeat's odd values are shown as none
    assert odd_values.exit_code == 0, odd_values.output

    stopped = _status(tmp_path, _status_record(state="stopped"), "--json")
    assert stopped.exit_code == 1 and json.loads(stopped.output)["state"] == "stopped"


def test_a_disk_filling_is_said_hours_before_the_recordings_stop(tmp_path: Path) -> None:
    # A recording room fills ~1.4 GB an hour: the full disk was said only once it was full.
    from installation.status import DiskWatch, disk_problem

    now, free = [0.0], [35 * 10**9]
    watch = DiskWatch(tmp_path, clock=lambda: now[0], free=lambda path: free[0])
    assert watch.look() == {"path": str(tmp_path), "free_bytes": 35 * 10**9,
                            "filling_bytes_per_s": None, "hours_left": None}
    for _ in range(60):  # ten minutes at 2.4 GB an hour (the console asks every second)
        now[0] += 10.0
        free[0] -= 6_666_667
        watch.look()
    looked = watch.look()
    assert looked is not None and looked["hours_left"] == pytest.approx(14.4, rel=0.01)
    assert disk_problem(looked) == (
        f"the disk of {tmp_path} fills in about 14.4 h (34.6 GB free, 2.40 GB an hour): "
        f"recordings stop then (the music goes on); free some space or move "
        f"installation.output_dir")
    assert disk_problem(dict(looked, hours_left=30.0)) is None  # a day and more: fine
    assert disk_problem(dict(looked, free_bytes=5 * 10**8, hours_left=None)).startswith(
        f"the disk of {tmp_path} has 0.50 GB free: recordings stop when it is full")
    for odd in (None, "x", {"free_bytes": "lots"}, {"free_bytes": float("nan")}):
        assert disk_problem(odd) is None  # a status file from elsewhere: no traceback
    record = _status_record(disk=dict(looked, free_bytes=5 * 10**8))
    low = _status(tmp_path, record)
    assert low.exit_code == 1 and "0.50 GB free" in low.output


def test_status_watch_redraws_until_ctrl_c(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import installation.ops_cli as ops_cli

    frames: list[float] = []

    def sleep(seconds: float) -> None:
        frames.append(seconds)
        if len(frames) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(ops_cli.time, "sleep", sleep)
    result = _status(tmp_path, _status_record(), "--watch", "--interval", "0.5")
    assert result.exit_code == 0, result.output
    assert frames == [0.5, 0.5, 0.5] and result.output.count("(every 0.5 s; Ctrl-C") == 3
    assert result.output.count("t — status") == 3
    bad = _status(tmp_path, _status_record(), "--watch", "--interval", "nan")
    assert bad.exit_code == 2 and "finite" in bad.output


# -- real processes ---------------------------------------------------------------


@pytest.mark.slow
def test_a_role_with_bad_input_exits_with_the_input_error_code_and_a_json_line(
        tmp_path: Path) -> None:
    config = config_from_dict({
        "installation": {"output_dir": str(tmp_path / "out")},
        "network": {n: f"tcp://127.0.0.1:{6380 + i}"
                    for i, n in enumerate(("views", "chunks", "clock", "control"))},
        "capture": {"source": f"camera:{tmp_path / 'missing.avi'}"},
        "rooms": [{"id": "a"}],
    })
    frozen = freeze_config(config, tmp_path / "frozen.json")
    result = subprocess.run(
        [sys.executable, "-m", "installation", "role", "capture", "--config", str(frozen),
         "--room", "a"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, result.stderr[-2000:]
    records = [json.loads(line) for line in result.stdout.splitlines()]
    errors = [r for r in records if r["level"] == "error"]
    assert len(errors) == 1 and "missing.avi" in errors[0]["message"]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_art2mus_run_reports_a_kill_and_leaves_a_report_on_sigterm(tmp_path: Path) -> None:
    from test_faults_processes import fault_config, make_camera_video

    config = fault_config(tmp_path, 6370, make_camera_video(tmp_path / "camera.avi"),
                          supervisor={"status_every_s": 0.2})
    frozen = freeze_config(config, tmp_path / "config.json")
    out = config.output_dir
    status = out / "status.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "installation", "run", "--config", str(frozen)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def roles() -> dict[str, Any]:
        try:
            return {r["name"]: r for r in json.loads(status.read_text())["roles"]}
        except (OSError, ValueError):
            return {}

    def wait(what: str, check: Any, timeout_s: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            assert process.poll() is None, process.communicate()
            time.sleep(0.1)
        process.kill()
        raise AssertionError(f"timed out waiting for {what}: {process.communicate()}")

    try:
        heard = out / "events" / "audio_out-a.jsonl"
        wait("music", lambda: heard.exists() and "chunk_started" in heard.read_text())
        engine = wait("the engine running", lambda: roles().get("engine", {}).get("state")
                      == "running" and roles()["engine"]["pid"])
        os.kill(engine, signal.SIGKILL)
        wait("the engine back", lambda: roles().get("engine", {}).get("state") == "running"
             and roles()["engine"]["pid"] != engine)
        pids = [r["pid"] for r in roles().values()]
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, stderr
    said = [line for line in stderr.splitlines() if line.startswith("art2mus: engine")]
    assert len(said) == 2, stderr  # its exit (what happens next) and its restart
    assert said[0].startswith(f"art2mus: engine (pid {engine}) exited with signal SIGKILL")
    assert "restarting in 0.3 s" in said[0] and said[1].startswith("art2mus: engine restarted")
    assert "art2mus run" in stdout and "room-a-" in stdout, stdout  # the summary: segments
    record = json.loads(status.read_text())
    assert record["state"] == "stopped"
    assert {r["state"] for r in record["roles"]} == {"stopped"}
    assert all(isinstance(r["exit_code"], int) for r in record["roles"])
    timeline = json.loads((out / "timeline.json").read_text())
    assert timeline["chunks"] and timeline["role_exits"][0]["role"] == "engine"
    segments = timeline["recordings"]["a"]["segments"]
    assert segments and all(Path(s["path"]).exists() for s in segments)
    for log in (out / "logs").iterdir():  # JSON lines only
        assert all(isinstance(json.loads(line), dict) for line in log.read_text().splitlines())
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_heartbeat_too_big_for_the_pipe_drops_its_largest_fields_not_its_health() -> None:
    """An engine serving many rooms: the per-room record no longer fits one atomic pipe
    write, so it is dropped (and named) while the engine's own figures still arrive."""
    from ground.health import MAX_LINE_BYTES, Heartbeat, HeartbeatReader, open_pipe

    read_fd, write_fd = open_pipe()
    reader = HeartbeatReader(read_fd)
    beat = Heartbeat(every_s=0.0, fd=write_fd)
    rooms = {f"room-{k:03d}": {"artwork_id": f"work-{k}", "key": "D", "lead_s": 1.5}
             for k in range(256)}
    assert beat.beat({"generator": "diffusion", "chunk_ms": 41.0, "rooms": rooms})
    assert reader.read()
    assert reader.status == {"generator": "diffusion", "chunk_ms": 41.0, "truncated": ["rooms"]}
    assert beat.beat({"generator": "diffusion", "rooms": {"room-1": {"key": "D"}}})
    assert reader.read()
    assert reader.status["rooms"] == {"room-1": {"key": "D"}}
    assert "truncated" not in reader.status and MAX_LINE_BYTES < 4096
    reader.close()
    os.close(write_fd)


def _ray_backend(state: str, local_chunks: int = 0) -> dict[str, Any]:
    """An engine heartbeat's ``backend`` (engine.ray_serve.RayGenerator.backend_status)."""
    return {"kind": "ray", "state": state, "url": "http://127.0.0.1:8000/art2mus",
            "retries": 0, "local_chunks": local_chunks, "reopened": 0, "failures": {},
            "hop_ms_p95": 14.8,
            "replicas": {"gpu-1:41": {"requests": 892, "missed": 0, "rooms": ["a", "b"],
                                      "batch_mean": 1.9, "queue_ms_p95": 3.1},
                         "gpu-2:42": {"requests": 890, "missed": 0, "rooms": ["c"],
                                      "batch_mean": 1.0, "queue_ms_p95": 2.0}}}


def test_status_names_the_ray_backend_and_fails_while_it_is_degraded(tmp_path: Path) -> None:
    record = _status_record()
    record["roles"][0]["status"] = {"generator": "procedural", "backend": _ray_backend("ok")}
    healthy = _status(tmp_path, record)
    assert healthy.exit_code == 0, healthy.output
    assert "ray backend ok" in healthy.output
    record["roles"][0]["status"]["backend"] = _ray_backend("degraded: ray unreachable", 312)
    degraded = _status(tmp_path, record)
    assert degraded.exit_code == 1
    assert "ray backend DEGRADED: RAY UNREACHABLE" in degraded.output
    assert "engine: its ray backend is degraded: ray unreachable" in degraded.output
    assert "312 chunks made here" in degraded.output
    # a local engine says nothing of a backend
    record["roles"][0]["status"] = {"generator": "procedural", "backend": {"kind": "local"}}
    assert "backend" not in _status(tmp_path, record).output


def test_backend_summary_names_each_replica_with_its_rooms() -> None:
    from installation.status import backend_summary

    summary = backend_summary({"backend": _ray_backend("ok")})
    assert summary == {"kind": "ray", "state": "ok", "healthy": True,
                       "text": "2 replicas: gpu-1:41 2 rooms, gpu-2:42 1 room; hop p95 14.8 ms"}
    assert backend_summary({}) is None and backend_summary({"backend": "ray"}) is None
    fresh = backend_summary({"backend": {"kind": "ray", "state": "ok", "replicas": {}}})
    assert fresh is not None and fresh["text"] == "no request yet"


def test_a_captures_status_line_says_what_its_catalogue_is_doing() -> None:
    # A technician adds works to the catalogue of a running room: `art2mus status` says
    # the room took them in, or that it could not and which file is at fault.
    from installation.status import role_detail

    status = {"artwork_id": "SF-1", "confidence": 0.93, "fps": 15.0, "camera": "ok"}
    assert role_detail("capture", status | {"catalogue": "2004 works, updating"}) == \
        "sees SF-1, conf 0.93, fps 15, camera ok, catalogue 2004 works, updating"
    failed = role_detail("capture", status | {"catalogue": "2003 works; update failed: "
                                                           "cannot read image new.jpg"})
    assert failed.endswith("catalogue 2003 works; update failed: cannot read image new.jpg")
    assert "catalogue" not in role_detail("capture", status | {"catalogue": ""})


def test_status_shows_roles_in_words_and_parameters_as_a_table(tmp_path: Path) -> None:
    """A technician's `art2mus status` piped to a log: nothing cut at 80 columns, the
    heartbeat in words, the live parameters as a table rather than raw JSON."""
    record = _status_record(params={"*": {"volume": 0.8}, "a": {"intensity": 0.7}})
    record["roles"][0]["status"] = {"generator": "procedural", "chunk_ms": 12.5, "batch": [1, 2],
                                    "rooms": {"a": {"key": "D"}}}
    record["roles"][1]["status"] |= {"level_dbfs": -18.5, "underflows": 0, "playhead_s": 812.25,
                                     "spectrum": [-40.0] * 32}
    shown = _status(tmp_path, record)
    assert shown.exit_code == 0, shown.output
    assert "procedural, chunk 12.5 ms, batch 1/2, serves 1 room" in shown.output
    assert "playing, level -18.5 dBFS, at 812.25 s, underflows 0" in shown.output
    assert "spectrum" not in shown.output and '{"' not in shown.output
    rows = [line for line in shown.output.splitlines() if "all rooms" in line or "│ a " in line]
    assert any("0.8" in line for line in rows) and any("0.7" in line for line in rows)
    assert max(len(line) for line in shown.output.splitlines()) > 80  # not folded to 80


def test_a_status_file_that_cannot_be_written_leaves_no_temporary(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A full disk left an empty status.tmp beside the last good status.json.
    import installation.status as status_module

    config = config_from_dict({"rooms": [{"id": "a"}]})

    def full(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(status_module.os, "replace", full)
    with pytest.raises(OSError):
        status_module.write_status(tmp_path / "status.json", config, [], {})
    assert list(tmp_path.iterdir()) == []
