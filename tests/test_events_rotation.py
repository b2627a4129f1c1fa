"""Event logs rotate by size, and whatever reads them keeps working across a rotation.

The defect: ``OUTPUT/events/ROLE[-ROOM].jsonl`` grew without bound (one line per
audio chunk, ~158 MB a day per room) and ``timeline.json`` kept a row per chunk
for the whole run. Now an event log rotates like the role logs (``ROLE.jsonl.1``
.. ``.N``, ``[supervisor] events_max_bytes`` / ``events_backups``), the run
report's follower reads each file across its rotations (no event lost, none read
twice, even with the writer in another process), and ``timeline.json`` keeps
the newest chunk rows that fit a bound and every artwork change.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ground.events import EventLog, read_events
from ground.jsonlog import WriteFailures, rotated_paths
from installation.config import config_from_dict
from installation.report import EventFollower, RunReport, TimelineBuilder


def _seqs(events: list[dict[str, Any]]) -> list[int]:
    return [e["seq"] for e in events if e.get("kind") == "chunk"]


def _follow(follower: EventFollower) -> list[dict[str, Any]]:
    return list(follower.poll(None))


def test_an_event_log_rotates_by_size_and_keeps_its_backups(tmp_path: Path) -> None:
    path = tmp_path / "events" / "audio_out-a.jsonl"
    log = EventLog(path, "audio_out", "a", max_bytes=1000, backups=2)
    for seq in range(200):
        log("chunk", seq=seq, time=1000.0 + seq)
    log.close()
    assert rotated_paths(path) == [path.with_name("audio_out-a.jsonl.1"),
                                   path.with_name("audio_out-a.jsonl.2")]
    assert all(p.stat().st_size <= 1000 for p in [path, *rotated_paths(path)])
    assert (log.written, log.dropped) == (200, 0)
    # read_events reads the rotated files too, oldest first: the newest events, no gap
    seqs = _seqs(read_events(path))
    assert seqs == list(range(200 - len(seqs), 200)) and 20 < len(seqs) < 60


def test_no_backups_keeps_only_the_current_file(tmp_path: Path) -> None:
    path = tmp_path / "engine.jsonl"
    log = EventLog(path, "engine", max_bytes=500, backups=0)
    for seq in range(100):
        log("chunk", seq=seq)
    log.close()
    assert rotated_paths(path) == [] and path.stat().st_size <= 500
    assert _seqs(read_events(path))[-1] == 99


def test_a_follower_reads_across_rotations_losing_and_repeating_nothing(
        tmp_path: Path) -> None:
    events = tmp_path / "events"
    log = EventLog(events / "engine.jsonl", "engine", max_bytes=600, backups=50)
    follower = EventFollower(events, lag_s=0.0)
    got: list[dict[str, Any]] = []
    seq = 0
    # polls between single writes, between a rotation's two halves, and after several
    # rotations at once (each line is ~70 bytes: a rotation every 8 lines)
    for burst in (1, 3, 7, 8, 9, 1, 1, 40, 2, 17, 5, 100, 1):
        for _ in range(burst):
            log("chunk", seq=seq, time=1000.0 + seq)
            seq += 1
        got += _follow(follower)
    log.close()
    follower.close()
    assert len(rotated_paths(events / "engine.jsonl")) > 10  # it did rotate, many times
    assert _seqs(got) == list(range(seq))


def test_a_follower_with_no_backups_still_finishes_the_removed_file(tmp_path: Path) -> None:
    """backups = 0 deletes the file at each rotation: the follower holds it open and
    reads it to its end, as long as it looks once per rotation."""
    events = tmp_path / "events"
    log = EventLog(events / "engine.jsonl", "engine", max_bytes=300, backups=0)
    follower = EventFollower(events, lag_s=0.0)
    got: list[dict[str, Any]] = []
    for seq in range(60):
        log("chunk", seq=seq, time=1000.0 + seq)
        if seq % 3 == 2:  # 4 lines per file: at most one rotation between looks
            got += _follow(follower)
    log.close()
    got += _follow(follower)
    follower.close()
    assert _seqs(got) == list(range(60))


def test_the_follower_finishes_the_old_file_when_the_writer_rotates_in_between(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race: the follower reads the file to its end; before it looks at the name
    again the writer adds a last line, rotates, and writes to the new file. The last
    line of the old file must come before the new file's first."""
    events = tmp_path / "events"
    path = events / "engine.jsonl"
    log = EventLog(path, "engine", max_bytes=10_000, backups=3)
    log("chunk", seq=0, time=1000.0)
    follower = EventFollower(events, lag_s=0.0)
    assert _seqs(_follow(follower)) == [0]
    log("chunk", seq=1, time=1001.0)
    assert _seqs(_follow(follower)) == [1]  # at the end of the file now

    real_stat = os.stat
    raced: list[bool] = []

    def stat_after_the_writer_moved(target: Any, *args: Any, **kwargs: Any) -> Any:
        if not raced and Path(target) == path:  # between the follower's read and its look
            raced.append(True)
            log("chunk", seq=2, time=1002.0)  # the old file's last line
            log._lines.max_bytes = 1  # the next line rotates
            log("chunk", seq=3, time=1003.0)
        return real_stat(target, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat_after_the_writer_moved)
    got = _follow(follower)
    monkeypatch.setattr(os, "stat", real_stat)
    log.close()
    follower.close()
    assert raced and path.with_name("engine.jsonl.1").exists()
    assert _seqs(got) == [2, 3]


def test_a_follower_started_late_skips_the_last_runs_files_then_follows(
        tmp_path: Path) -> None:
    events = tmp_path / "events"
    log = EventLog(events / "audio_out-a.jsonl", "audio_out", "a", max_bytes=400, backups=10)
    for seq in range(30):  # the last run's, rotated several times
        log("chunk", seq=seq, time=1000.0 + seq)
    follower = EventFollower(events, from_start=False, lag_s=0.0)
    for seq in range(30, 80):
        log("chunk", seq=seq, time=1000.0 + seq)
    log.close()
    # a role that starts during this run (and rotates before the first look): all of it
    late = EventLog(events / "capture-a.jsonl", "capture", "a", max_bytes=400, backups=10)
    for seq in range(100, 130):
        late("chunk", seq=seq, time=1000.0 + seq - 100)
    late.close()
    got = _follow(follower)
    follower.close()
    assert sorted(_seqs(got)) == list(range(30, 80)) + list(range(100, 130))


WRITER = """
import sys
from ground.events import EventLog
log = EventLog(sys.argv[1], "audio_out", "a", max_bytes=4096, backups=1000)
for seq in range(int(sys.argv[2])):
    log("chunk", seq=seq, time=1000.0 + seq * 0.01, pad="x" * (seq % 50))
log("done", time=2000.0)
log.close()
"""


def test_a_follower_in_this_process_follows_a_writer_rotating_in_another(
        tmp_path: Path) -> None:
    """The installation's case: the role rotates its file while the supervisor reads it.
    However the two interleave, every event is read exactly once, in order."""
    events = tmp_path / "events"
    events.mkdir()
    count = 6000
    follower = EventFollower(events, lag_s=0.0)
    writer = subprocess.Popen([sys.executable, "-c", WRITER,
                               str(events / "audio_out-a.jsonl"), str(count)])
    got: list[dict[str, Any]] = []
    try:
        while writer.poll() is None:
            got += _follow(follower)
    finally:
        writer.wait(timeout=60)
    got += _follow(follower)
    follower.close()
    assert writer.returncode == 0
    assert len(rotated_paths(events / "audio_out-a.jsonl")) > 50
    assert _seqs(got) == list(range(count)) and got[-1]["kind"] == "done"


def test_a_role_takes_its_event_log_limits_from_the_supervisor_section(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from installation import roles

    config = config_from_dict({"installation": {"output_dir": str(tmp_path)},
                               "supervisor": {"events_max_bytes": 8192, "events_backups": 2},
                               "rooms": [{"id": "a"}]})
    opened: list[dict[str, Any]] = []

    class Opened(Exception):
        pass

    def event_log(path: Path, role: str, room: str | None, **limits: Any) -> None:
        opened.append({"path": path, **limits})
        raise Opened

    monkeypatch.setattr(roles, "install_stop_handlers", lambda stop: None)
    monkeypatch.setattr(roles, "setup_json_logging", lambda role, room: None)
    monkeypatch.setattr(roles, "EventLog", event_log)
    with pytest.raises(Opened):
        roles.run_role("audio_out", config, "a")  # type: ignore[arg-type]
    assert opened == [{"path": tmp_path / "events" / "audio_out-a.jsonl",
                       "max_bytes": 8192, "backups": 2}]


# -- timeline.json: bounded chunk rows, every artwork change --------------------------


def _chunk_events(seq: int, t: float, artwork: str, reason: str) -> list[dict[str, Any]]:
    return [
        {"time": t, "kind": "chunk", "role": "engine", "room": "a", "seq": seq,
         "start_sample": seq * 24000, "frames": 24000, "crossfade": 0, "reason": reason,
         "artwork_id": artwork, "generation_s": 0.01},
        {"time": t + 0.2, "kind": "chunk_started", "role": "audio_out", "room": "a",
         "seq": seq, "wall_time": t + 0.2},
    ]


def _write_a_minute_of_chunks(engine: EventLog, audio: EventLog) -> None:
    """120 chunks, half a second apart: the engine's made, audio_out's started; closed."""
    for seq in range(120):
        chunk, started = _chunk_events(seq, 1000.0 + seq * 0.5, "art-0",
                                       "start" if seq == 0 else "continue")
        engine(**chunk)
        audio(**started)
    engine.close()
    audio.close()


def test_timeline_keeps_the_newest_chunk_rows_and_every_artwork_change(
        tmp_path: Path) -> None:
    said: list[str] = []
    builder = TimelineBuilder(tmp_path, WriteFailures(said.append), chunk_rows_bytes=3000)
    chunks, artworks = 400, 0
    for seq in range(chunks):
        t = 1000.0 + seq * 0.5
        reason = "continue"
        if seq % 50 == 0:
            artworks += 1
            builder.feed({"time": t - 0.1, "kind": "artwork_change", "role": "capture",
                          "room": "a", "artwork_id": f"art-{seq // 50}", "state": "artwork",
                          "confidence": 0.9})
            reason = "transition" if seq else "start"
        for event in _chunk_events(seq, t, f"art-{seq // 50}", reason):
            builder.feed(event)
        # the chunk spool is bounded on disk while the run goes on
        spool = builder._chunk_rows.path
        assert sum(p.stat().st_size for p in [spool, *rotated_paths(spool)]
                   if p.exists()) <= 2 * 3000
    builder.finish()
    path = tmp_path / "timeline.json"
    assert builder.write(path, builder.summary(48000))
    timeline = json.loads(path.read_text())
    rows = timeline["chunks"]
    assert [r["seq"] for r in rows] == list(range(chunks - len(rows), chunks))
    assert 10 < len(rows) < 40 and timeline["chunks_omitted"] == chunks - len(rows)
    assert sum(len(json.dumps(r, separators=(",", ":"))) + 1 for r in rows) <= 3000
    assert all(r["heard_at"] is not None for r in rows)
    assert [c["artwork_id"] for c in timeline["artwork_changes"]] == [
        f"art-{i}" for i in range(artworks)]
    assert len(timeline["transitions"]) == artworks  # each heard, though its row is gone
    assert all(t["heard_at"] is not None for t in timeline["transitions"])
    assert timeline["summary"]["chunks"] == chunks and not said
    assert not list((tmp_path / "run" / "report").iterdir())  # spools cleaned up


def test_the_run_report_reads_rotated_event_logs_into_the_timeline(tmp_path: Path) -> None:
    """The whole path: roles' logs rotated while the run went on, the report (from the
    start, as the tests and a replay read it) takes every event of every file."""
    out = tmp_path / "out"
    engine = EventLog(out / "events" / "engine.jsonl", "engine", max_bytes=2000, backups=100)
    audio = EventLog(out / "events" / "audio_out-a.jsonl", "audio_out", "a",
                     max_bytes=2000, backups=100)
    _write_a_minute_of_chunks(engine, audio)
    assert rotated_paths(out / "events" / "engine.jsonl")
    report = RunReport(out, WriteFailures(print), print, from_start=True)
    report.start()
    report.poll()
    report.finish()
    timeline_path = report.write(report.summary(10.0, 48000))
    assert timeline_path is not None
    timeline = json.loads(timeline_path.read_text())
    assert [c["seq"] for c in timeline["chunks"]] == list(range(120))
    assert timeline["chunks_omitted"] == 0
    assert all(c["heard_at"] is not None for c in timeline["chunks"])


# -- what is not a regular file, and how much one poll reads ----------------------------


def _engine_events(seqs: range, t0: float = 1000.0) -> str:
    return "".join(json.dumps({"time": t0 + seq, "kind": "chunk", "role": "engine",
                               "room": "a", "seq": seq}) + "\n" for seq in seqs)


@pytest.mark.timeout(60)  # the old follower never came back from the first poll
@pytest.mark.parametrize("target", ["/dev/zero", "/dev/full", "folder", "pipe"])
def test_a_follower_names_and_skips_an_event_log_that_is_not_a_regular_file(
        tmp_path: Path, target: str) -> None:
    """An events log linked to /dev/zero (or /dev/full) never reaches its end: the follower
    read it without end inside one poll, so the supervisor's loop (status.json, restarts,
    SIGTERM) never turned again. Now it is named once and skipped; the others follow."""
    events = tmp_path / "events"
    events.mkdir()
    odd = events / "engine.jsonl"
    if target == "folder":
        odd.mkdir()
    elif target == "pipe":
        os.mkfifo(odd)  # opened, a pipe with no writer would block the poll
    else:
        odd.symlink_to(target)
    (events / "audio_out-a.jsonl").write_text(
        "".join(json.dumps({"time": 1000.0 + seq, "kind": "chunk_started", "role": "audio_out",
                            "room": "a", "seq": seq}) + "\n" for seq in range(3)))
    said: list[str] = []
    follower = EventFollower(events, lag_s=0.0, say=said.append)
    assert _seqs([{**e, "kind": "chunk"} for e in follower.poll(None)]) == [0, 1, 2]
    assert not follower.behind
    kind = {"folder": "a folder", "pipe": "a named pipe"}.get(
        target, f"a device (a link to {target})")
    assert follower.skipped == {odd: kind}
    assert list(follower.poll(None)) == [] and len(said) == 1  # said once, not every poll
    assert said[0] == (f"event log {odd} is {kind}, not a regular file: not followed (its "
                       "events are left out of timeline.json); remove it")
    # put right (a regular file again): followed from its start
    if target == "folder":
        odd.rmdir()
    else:
        odd.unlink()
    odd.write_text(_engine_events(range(2)))
    assert _seqs(list(follower.poll(None))) == [0, 1]
    follower.close()


@pytest.mark.timeout(60)
def test_iter_merged_events_skips_a_log_linked_to_dev_zero(tmp_path: Path) -> None:
    from installation.report import iter_merged_events

    events = tmp_path / "events"
    events.mkdir()
    (events / "capture-a.jsonl").symlink_to("/dev/zero")
    (events / "engine.jsonl").write_text(_engine_events(range(4)))
    assert _seqs(list(iter_merged_events(events))) == [0, 1, 2, 3]
    said: list[str] = []
    assert _seqs(list(iter_merged_events(events, say=said.append))) == [0, 1, 2, 3]
    assert len(said) == 1 and "capture-a.jsonl" in said[0]


def test_one_poll_reads_at_most_its_cap_and_the_next_goes_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A regular file still follows as before, a capped stretch a poll: nothing lost or
    repeated, in time order across files; a poll that stopped at its cap says so."""
    from installation import report

    monkeypatch.setattr(report, "_READ_BYTES", 1000)
    events = tmp_path / "events"
    events.mkdir()
    (events / "engine.jsonl").write_text(_engine_events(range(0, 400, 2)))
    (events / "audio_out-a.jsonl").write_text(_engine_events(range(1, 400, 2)))
    size = sum(p.stat().st_size for p in events.iterdir())
    follower = EventFollower(events, lag_s=0.0, file_bytes=3000, poll_bytes=5000)
    seqs: list[int] = []
    polls = 0
    while True:
        tails = follower._tails.values()
        got = _seqs(list(follower.poll(None)))
        polls += 1
        # each file within its cap (and the poll within its own) give or take one read
        assert all(t.taken <= 3000 + 1000 for t in tails)
        assert sum(t.taken for t in follower._tails.values()) <= 5000 + 1000
        seqs += got
        if not follower.behind:
            break
    assert seqs == list(range(400))
    assert polls >= size // 6000  # it took several polls, each bounded
    # a junk file, no line in it: read in capped polls, and skipped line by line
    (events / "junk.jsonl").write_bytes(b"\0" * 50_000)
    follower.poll_bytes = 10**9
    for _ in range(5):
        assert list(follower.poll(None)) == [] and follower.behind
    with (events / "engine.jsonl").open("a") as file:
        file.write(_engine_events(range(400, 402), t0=1000.0))
    while follower.behind or not seqs[-1] == 401:
        seqs += _seqs(list(follower.poll(None)))
    assert seqs == list(range(402))
    follower.close()


def test_the_run_report_drains_every_event_across_capped_polls(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from installation import report

    monkeypatch.setattr(report, "_READ_BYTES", 1000)
    monkeypatch.setattr(report, "POLL_FILE_BYTES", 2000)
    monkeypatch.setattr(report, "POLL_BYTES", 2000)
    out = tmp_path / "out"
    engine = EventLog(out / "events" / "engine.jsonl", "engine")
    audio = EventLog(out / "events" / "audio_out-a.jsonl", "audio_out", "a")
    _write_a_minute_of_chunks(engine, audio)
    run = RunReport(out, WriteFailures(print), print, from_start=True)
    run.start()
    run.finish()  # the roles are gone: everything, however many polls it takes
    timeline_path = run.write(run.summary(10.0, 48000))
    assert timeline_path is not None
    assert [c["seq"] for c in json.loads(timeline_path.read_text())["chunks"]] == list(range(120))


def test_iter_events_refuses_a_log_that_is_no_file_and_skips_a_line_past_its_cap(
        tmp_path: Path) -> None:
    # `for line in file` over a link to /dev/zero read without end; a power cut's megabytes
    # of NULs were held as one line
    from ground.events import MAX_EVENT_LINE_BYTES, iter_events

    linked = tmp_path / "engine.jsonl"
    linked.symlink_to("/dev/zero")
    with pytest.raises(OSError, match=r"engine\.jsonl is a device \(a link to /dev/zero\)"):
        list(iter_events(linked))
    log = tmp_path / "audio_out.jsonl"
    log.write_bytes(b'{"event": "a"}\n' + b"\0" * (3 * MAX_EVENT_LINE_BYTES + 7) + b"\n"
                    + b"x" * MAX_EVENT_LINE_BYTES + b"\n" + b'{"event": "b"}\n')
    assert [e["event"] for e in iter_events(log)] == ["a", "b"]
