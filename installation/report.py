"""The run report: the roles' event logs merged into ``timeline.json``, and the summary.

The timeline answers "what happened when": each artwork change the capture
reported, each chunk (room, seq, start sample, length, generation time,
when it was first heard), the musical decisions per artwork, role exits,
each room's recording segments, and, for the demo source, the transition
delay from the moment the virtual camera turned to a painting to the moment
its music reached the speakers.

Memory and time stay flat with the length of a run (a run may last months):

- :class:`EventFollower` reads every role's ``events/*.jsonl`` as it grows
  (the supervisor polls it once a second), line by line, and hands out the
  events merged in time order through a small heap that holds only the
  last ``lag_s`` of them; it follows each file across its rotations
  (``ROLE.jsonl`` to ``ROLE.jsonl.1``, :mod:`ground.events`): it keeps the
  file it reads open, notices a new file under the name, reads the old one
  to its end and goes on with the next, so no event is lost or read twice.
  It follows regular files only (a log linked to ``/dev/zero`` never ends:
  it is named once and skipped), and one poll reads at most
  :data:`POLL_FILE_BYTES` of a log and :data:`POLL_BYTES` in all, so it
  always returns to the supervisor's loop; the rest waits for the next poll;
- :class:`TimelineBuilder` turns each event into rows as it comes: a chunk
  waits (bounded) only until it is first heard, a transition until its
  first chunk is; rows go straight to spool files on disk, only running
  totals stay in memory. The per-chunk rows (two a second per room) are the
  one section that grows with the run: their spool rotates once, and
  ``timeline.json`` keeps the newest ``MAX_CHUNK_ROWS_BYTES`` of them
  (hours of music) and counts the rest (``chunks_omitted``); every artwork
  change, transition, decision and role exit is kept. Writing
  ``timeline.json`` at the end of a run copies those and never re-reads the run;
- recordings are never read by the run report: each room's segments, their
  length and dropped frames come from audio_out's ``recording_opened`` and
  ``recording_closed`` events (a segment cut by a kill gets its length from
  the file's header, or, where the header has none, a FLAC's, by reading
  the file);
- :class:`AudioStats` (the demo's loudness, peak, silences, spectral
  centroid and join roughness) reads a recording in blocks, with state
  carried across blocks (K-weighting filters, a loudness histogram for the
  BS.1770 gates, an averaged power spectrum).

A disk that fails while the report is written is said once (the run goes on;
the summary is still printed).
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
import os
import time
from array import array
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

from ground.files import special_kind
from ground.jsonlog import RotatingLineFile, WriteFailures, rotated_paths

#: How far (event time, s) events may arrive out of order between and within files.
DEFAULT_LAG_S = 30.0
#: A chunk not heard this long after it was generated is written as never heard.
CHUNK_WAIT_S = 120.0
#: At most this many chunks (and transitions) wait for their outcome at once.
MAX_PENDING = 20000
#: timeline.json keeps the newest chunk rows that fit in this many bytes (some 18,000
#: chunks: hours of music); older rows are left out and counted (``chunks_omitted``).
MAX_CHUNK_ROWS_BYTES = 4 * 1024 * 1024
_READ_BYTES = 1 << 17  # per file and turn: bounds the events parsed but not yet due
#: One poll reads at most this much of one log, and this much in all (the rest waits for the
#: next poll). A room writes some 2 KB of events a second and the supervisor polls every
#: second, so neither binds while it keeps up; they bound a poll's time (a few seconds of
#: parsing at most) when it catches up with a backlog or a file that never ends.
POLL_FILE_BYTES = 32 * _READ_BYTES
POLL_BYTES = 128 * _READ_BYTES
#: At the end of a run, :meth:`RunReport.finish` polls at most this many times (1 GiB).
_DRAIN_POLLS = 64
_SECTIONS = ("source_changes", "artwork_changes", "decisions", "transitions", "role_exits")


# -- reading events -----------------------------------------------------------


_FileKey = tuple[int, int]  # (st_dev, st_ino): which file a name points at


class _Tail:
    """One event log being followed across its rotations, and its last complete event time.

    It holds open the file it reads (and, once the writer has rotated it, the
    files that came after it, oldest first), so a rotation under it loses
    nothing: the old file, renamed or deleted, is read to its end (the writer
    closed it before renaming it) before the next one is started, and each
    file is read once. ``at_end``: skip what the log holds now (an earlier
    run's events).
    """

    def __init__(self, path: Path, at_end: bool = False,
                 refuse: Callable[[Path, str], None] | None = None) -> None:
        self.path = path
        self.partial = b""
        self.eof = False
        self.taken = 0  # bytes read in the current poll (the follower resets it)
        self.last_time = -math.inf
        self._refuse = refuse
        self._files: list[tuple[IO[bytes], _FileKey]] = []  # the head is being read
        self._opened = False
        if at_end:
            opened = _open_key(path, refuse)
            if opened is not None:
                opened[0].seek(0, os.SEEK_END)
                self._files.append(opened)
                self._opened = True

    def read(self) -> list[dict[str, Any]]:
        """The complete events appended since the last read (at most ~128 kB of them)."""
        if not self._opened:  # a log new to us: from its oldest rotated file on
            self._files = self._chain()
            self._opened = bool(self._files)
        while True:
            if not self._files:
                self.eof = True
                return []
            file, _ = self._files[0]
            try:
                if os.fstat(file.fileno()).st_size < file.tell():  # truncated: start over
                    file.seek(0)
                    self.partial = b""
                data = file.read(_READ_BYTES) or b""
            except OSError:
                self.eof = True
                return []
            self.taken += len(data)
            if data:
                break
            if len(self._files) > 1:  # rotated away and read to its end: done with it
                self._close_head()
            elif not self._rotated():
                self.eof = True
                return []
            # else: read the old file once more (lines written just before the rotation)
        self.eof = len(data) < _READ_BYTES and len(self._files) == 1
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        if len(self.partial) > 4 * _READ_BYTES:
            self.partial = b""  # no event is that long: junk, skipped
        events = []
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line cut by a crash, or junk
            if isinstance(event, dict) and isinstance(event.get("time"), int | float) \
                    and math.isfinite(event["time"]):
                events.append(event)
                self.last_time = max(self.last_time, float(event["time"]))
        return events

    def _rotated(self) -> bool:
        """Whether ``path`` now names another file than the one read; if so, the files
        written after it are queued (opened now, so later renames do not matter)."""
        head, key = self._files[-1]
        try:
            stat = os.stat(self.path)
        except OSError:
            return False  # between the writer's rename and its new file, or removed
        if (stat.st_dev, stat.st_ino) == key:
            return False
        chain = self._chain()
        keys = [k for _, k in chain]
        if key in keys:
            after = keys.index(key) + 1
        else:  # deleted (rotated past the last backup): every file still there is newer,
            # unless the log was removed and started anew; then only those written since
            try:
                mtime = os.fstat(head.fileno()).st_mtime_ns
            except OSError:
                mtime = 0
            after = next((i for i, (f, _) in enumerate(chain)
                          if os.fstat(f.fileno()).st_mtime_ns >= mtime), len(chain))
        for file, _ in chain[:after]:
            file.close()
        self._files += chain[after:]
        return after < len(chain)  # nothing newer to open (yet): stay on this file

    def _chain(self) -> list[tuple[IO[bytes], _FileKey]]:
        """The log's files, open, oldest first, each once. Opened newest first: a rotation
        meanwhile can only open one file twice (dropped here), never skip one."""
        opened = []
        for path in [self.path, *rotated_paths(self.path)]:
            one = _open_key(path, self._refuse)
            if one is not None:
                opened.append(one)
        chain: list[tuple[IO[bytes], _FileKey]] = []
        seen: set[_FileKey] = set()
        for file, key in reversed(opened):
            if key in seen:
                file.close()
            else:
                seen.add(key)
                chain.append((file, key))
        return chain

    def _close_head(self) -> None:
        file, _ = self._files.pop(0)
        file.close()
        self.partial = b""  # a line the writer never finished: not glued to the next file

    def close(self) -> None:
        """Close every file held."""
        while self._files:
            self._files.pop()[0].close()

    def __del__(self) -> None:  # a follower nobody closed (the console's) closes its files
        self.close()


def _open_key(path: Path, refuse: Callable[[Path, str], None] | None = None
              ) -> tuple[IO[bytes], _FileKey] | None:
    """``path`` opened for reading (unbuffered: a read at the end sees what came since)
    with its file's identity; None when it cannot be opened or is not a regular file (a
    device such as ``/dev/zero`` never ends, a pipe blocks: ``refuse(path, what)`` is
    told, and it is not opened, or opened without blocking and closed again)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if (kind := special_kind(path, mode)) is not None:
        if refuse is not None:
            refuse(path, kind)
        return None
    try:  # O_NONBLOCK: a pipe put there since the stat must not block the open
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        found = os.fstat(descriptor)
    except OSError:
        os.close(descriptor)
        return None
    if (kind := special_kind(path, found.st_mode)) is not None:
        os.close(descriptor)
        if refuse is not None:
            refuse(path, kind)
        return None
    return os.fdopen(descriptor, "rb", buffering=0), (found.st_dev, found.st_ino)


class EventFollower:
    """Every role's event log in ``events_dir``, merged in time order as the files grow.

    Lines within one file are nearly in time order (capture back-dates a
    source change by the detection delay); an event is handed out once every
    file has been read ``lag_s`` of event time past it (or, live, once the
    wall clock is ``lag_s`` past it). Memory: the events of the last ``lag_s``.
    Each file is followed across its rotations; :meth:`close` releases the files
    it holds open.

    Only regular files are followed: one that is something else (a link to
    ``/dev/zero``, a folder, a pipe) is put in :attr:`skipped` and said once
    through ``say``. One :meth:`poll` reads at most ``file_bytes`` of one log
    and ``poll_bytes`` in all (give or take one read; :data:`POLL_FILE_BYTES`,
    :data:`POLL_BYTES`); :attr:`behind` says it stopped with more to read.
    """

    def __init__(self, events_dir: Path, from_start: bool = True,
                 lag_s: float = DEFAULT_LAG_S, say: Callable[[str], None] | None = None,
                 file_bytes: int | None = None, poll_bytes: int | None = None) -> None:
        self.events_dir = events_dir
        self.lag_s = lag_s
        self.say = say
        self.file_bytes = POLL_FILE_BYTES if file_bytes is None else file_bytes
        self.poll_bytes = POLL_BYTES if poll_bytes is None else poll_bytes
        self.skipped: dict[Path, str] = {}  # what is not followed, and why
        self.behind = False  # the last poll stopped before the end of every file
        self._tails: dict[Path, _Tail] = {}
        self._heap: list[tuple[float, int, dict[str, Any]]] = []
        self._counter = itertools.count()
        self._closed = False
        self.events = 0
        # what the tails call (not a method: a tail holding its follower would keep an
        # unclosed follower, the console's, and its files, alive until a garbage collection)
        self._refuse = _refuser(self.skipped, say)
        if not from_start:  # a new run appends to the last run's files: skip what is there
            for path in self._paths():
                self._tails[path] = _Tail(path, at_end=True, refuse=self._refuse)

    def _paths(self) -> list[Path]:
        try:
            return sorted(self.events_dir.glob("*.jsonl"))
        except OSError:
            return []

    def poll(self, now: float | None = None, max_events: int | None = None
             ) -> Iterator[dict[str, Any]]:
        """Read what the files gained and yield the events that are due, in time order.

        ``now`` (wall clock) for a live installation; ``None`` drains
        everything read. ``max_events`` bounds one call's work, and so do the
        follower's byte caps: the rest waits for the next call (:attr:`behind`).
        """
        self.behind = False
        if self._closed:
            return
        for path in self._paths():
            if path not in self._tails:
                self._tails[path] = _Tail(path, refuse=self._refuse)
        tails = list(self._tails.values())
        for tail in tails:
            tail.eof = False
            tail.taken = 0
        handed = 0
        taken = 0
        while True:
            # Read from the file furthest behind in time, so that no file runs ahead of
            # the others and the heap holds a bounded stretch of time, however long the run.
            behind = min((tail for tail in tails if not tail.eof),
                         key=lambda tail: tail.last_time, default=None)
            if behind is not None and (behind.taken >= self.file_bytes
                                       or taken >= self.poll_bytes):
                # Read enough for one poll: the rest waits (reading another file instead
                # would run ahead of this one). It still counts as reading, below, so the
                # events after its last one read stay in the heap.
                self.behind = True
                behind = None
            # Until every file has been read to its end, keep going: a file with nothing
            # new must not stop the others being read (nor the heap being drained).
            progressed = behind is not None
            if behind is not None:
                before = behind.taken
                for event in behind.read():
                    heapq.heappush(self._heap, (float(event["time"]), next(self._counter), event))
                taken += behind.taken - before
            reading = [tail.last_time for tail in tails if not tail.eof]
            mark = min(reading) - self.lag_s if reading else math.inf
            if now is not None:
                mark = min(mark, now - self.lag_s)
            while self._heap and self._heap[0][0] <= mark:
                handed += 1
                self.events += 1
                yield heapq.heappop(self._heap)[2]
            if not progressed:
                return
            if max_events is not None and handed >= max_events:
                self.behind = any(not tail.eof for tail in tails)
                return

    def close(self) -> None:
        """Close the files it holds open; it reads nothing more."""
        self._closed = True
        for tail in self._tails.values():
            tail.close()


def _refuser(skipped: dict[Path, str], say: Callable[[str], None] | None
             ) -> Callable[[Path, str], None]:
    """What a tail calls for a file it does not follow: noted in ``skipped``, said once."""
    def refuse(path: Path, kind: str) -> None:
        if skipped.get(path) == kind:
            return
        skipped[path] = kind
        if say is not None:
            say(f"event log {path} is {kind}, not a regular file: not followed (its "
                "events are left out of timeline.json); remove it")
    return refuse


def iter_merged_events(events_dir: Path, say: Callable[[str], None] | None = None
                       ) -> Iterator[dict[str, Any]]:
    """Every event of every role in ``events_dir``, in time order, one at a time.

    Regular files only (what else is there is said through ``say``); each poll
    is bounded, so events come out as the files are read, however long they are.
    """
    follower = EventFollower(events_dir, say=say)
    try:
        while True:
            yield from follower.poll(None)
            if not follower.behind:
                return
    finally:
        follower.close()


# -- building the timeline ----------------------------------------------------


class _Spool:
    """Rows of one timeline section, one JSON line each, in a file beside the output."""

    def __init__(self, path: Path, failures: WriteFailures) -> None:
        self.path = path
        self.failures = failures
        self.file: IO[str] | None = None
        self.count = 0
        self.ok = True

    def add(self, row: dict[str, Any]) -> None:
        if not self.ok:
            return
        try:
            if self.file is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.file = self.path.open("a" if self.count else "w", encoding="utf-8")
            self.file.write(json.dumps(row, separators=(",", ":"), default=str) + "\n")
            self.count += 1
        except OSError as error:
            self.ok = False
            self.failures.failed(str(self.path), error,
                                 "timeline.json of this run will be incomplete")

    def rows(self) -> Iterator[dict[str, Any]]:
        """The rows written so far, read back one at a time."""
        if not self.count or not self.ok:
            return
        if self.file is not None:
            self.file.flush()
        with self.path.open("rb") as file:
            for line in file:
                yield json.loads(line)

    def close(self, remove: bool = False) -> None:
        """Close the file (rows stay readable); ``remove``: delete it too."""
        if self.file is not None:
            try:
                self.file.close()
            except OSError:
                pass
            self.file = None
        if remove:
            try:
                self.path.unlink(missing_ok=True)
            except OSError:
                pass


class TimelineBuilder:
    """Turns the merged event stream into timeline rows and running totals (see module doc).

    ``joins_room``: also keep that room's chunk joins (frames from its first
    chunk) for the demo's join roughness. ``chunk_rows_bytes``: the chunk rows
    kept for ``timeline.json`` (the newest that fit; every other section is
    kept whole: artwork changes, transitions, decisions, role exits).
    """

    def __init__(self, output_dir: Path, failures: WriteFailures,
                 joins_room: str | None = None, wait_s: float = CHUNK_WAIT_S,
                 max_pending: int = MAX_PENDING,
                 chunk_rows_bytes: int = MAX_CHUNK_ROWS_BYTES) -> None:
        self.output_dir = output_dir
        self.failures = failures
        self.wait_s = wait_s
        self.max_pending = max_pending
        spool_dir = output_dir / "run" / "report"
        self.spools = {name: _Spool(spool_dir / f"{name}.jsonl", failures) for name in _SECTIONS}
        self.partial_path = output_dir / "timeline.json.partial"
        # Chunk rows, the one section that grows with the run: a spool that rotates once
        # (chunks.jsonl.1), so the newest ``chunk_rows_bytes`` of rows are always on disk.
        chunk_spool = spool_dir / "chunks.jsonl"
        for stale in (chunk_spool, *rotated_paths(chunk_spool)):  # a killed run's, if any
            try:
                stale.unlink(missing_ok=True)
            except OSError:
                pass
        self.chunk_rows_bytes = chunk_rows_bytes
        self._chunk_rows = RotatingLineFile(
            chunk_spool, chunk_rows_bytes, 1, failures,
            consequence="timeline.json of this run will miss chunk rows")
        self._chunk_count = 0  # rows finished (written or not)
        self.t0: float | None = None
        self.now = -math.inf
        self._pending: OrderedDict[int, dict[str, Any]] = OrderedDict()  # id -> chunk row
        self._by_key: dict[tuple[Any, Any], dict[str, Any]] = {}
        self._early: OrderedDict[tuple[Any, Any, str], dict[str, Any]] = OrderedDict()
        self._transitions: deque[dict[str, Any]] = deque()
        self._last_shown: dict[Any, dict[str, Any]] = {}
        self._rooms_started: set[Any] = set()
        self.joins_room = joins_room
        self.joins = array("q")
        self._joins_origin: int | None = None
        # running totals
        self.chunks = 0
        self.generation_s = 0.0
        self.generated_frames = 0
        self.delay_sum = 0.0
        self.delay_count = 0
        self.delay_max: float | None = None
        self.first_heard_s: float | None = None
        self.restarts: dict[str, int] = {}
        self.hangs: dict[str, int] = {}
        self.failed: dict[str, str] = {}
        self.underflows: dict[str, int] = {}
        self.played_s: dict[str, float] = {}
        self.recordings: dict[str, OrderedDict[str, dict[str, Any]]] = {}
        self.player_started: dict[str, float] = {}

    def rel(self, t: float | None) -> float | None:
        """Seconds since the first event of the run."""
        return None if t is None or self.t0 is None else round(t - self.t0, 3)

    # -- feeding

    def feed(self, event: dict[str, Any]) -> None:
        """Take one event (events must come in time order, within the follower's lag)."""
        t = float(event["time"])
        if self.t0 is None:
            self.t0 = t
        self.now = max(self.now, t)
        kind, role, room = event.get("kind"), event.get("role"), event.get("room")
        if role == "capture" and kind == "source_change":
            row = {"time": self.rel(t), "room": room, "artwork_index": event.get("artwork_index"),
                   "style": event.get("style")}
            self.spools["source_changes"].add(row)
            self._last_shown[room] = row
        elif role == "capture" and kind == "artwork_change":
            row = {"time": self.rel(t), "room": room, "artwork_id": event.get("artwork_id"),
                   "state": event.get("state"), "confidence": event.get("confidence")}
            self.spools["artwork_changes"].add(row)
            if row["state"] == "artwork":
                self._artwork_detected(row, t)
        elif role == "engine" and kind == "chunk":
            self._chunk(event, t)
        elif role == "audio_out" and kind in ("chunk_received", "chunk_started"):
            self._heard(event, kind)
        elif role == "engine" and kind == "decisions":
            self.spools["decisions"].add({
                "time": self.rel(t), "room": room, "artwork_id": event.get("artwork_id"),
                "state": event.get("state"), "decisions": event.get("decisions"),
                "features": event.get("features")})
        elif kind == "role_exited":
            name = str(event.get("role_name", role))
            self.spools["role_exits"].add({"time": self.rel(t), "role": name,
                                           "code": event.get("code")})
            self.restarts[name] = self.restarts.get(name, 0) + 1
        elif kind == "role_hung":
            self.hangs[str(role)] = self.hangs.get(str(role), 0) + 1
        elif kind == "role_failed":
            self.failed[str(role)] = str(event.get("reason") or f"exit code {event.get('code')}")
        elif role == "audio_out":
            self._audio_out(event, kind, str(room), t)
        self._flush()

    def _artwork_detected(self, row: dict[str, Any], t: float) -> None:
        room = row["room"]
        startup = room not in self._rooms_started
        self._rooms_started.add(room)
        shown = self._last_shown.get(room)
        self._transitions.append({
            "room": room, "artwork_id": row["artwork_id"], "startup": startup,
            "style": shown["style"] if shown else None,
            "shown_at": shown["time"] if shown else None, "detected_at": row["time"],
            "heard_at": None, "_t": t, "_chunk": None, "_done": False,
        })

    def _chunk(self, event: dict[str, Any], t: float) -> None:
        key = (event.get("room"), event.get("seq"))
        old = self._by_key.get(key)
        if old is not None:  # an engine restart reuses sequence numbers: the old one is over
            self._finish_chunk(self._pending.pop(id(old)))
        row: dict[str, Any] = {
            "room": event.get("room"), "seq": event.get("seq"),
            "start_sample": event.get("start_sample"), "frames": event.get("frames"),
            "crossfade": event.get("crossfade"), "reason": event.get("reason"),
            "artwork_id": event.get("artwork_id"), "generation_s": event.get("generation_s"),
            "generated_at": self.rel(t), "late_frames": None, "heard_at": None,
            "_t": t, "_heard": False, "_waiters": [],
        }
        self._pending[id(row)] = row
        self._by_key[key] = row
        for kind in ("chunk_received", "chunk_started"):
            early = self._early.pop((*key, kind), None)
            if early is not None:
                self._apply_heard(row, early, kind)
        if row["reason"] in ("transition", "start"):
            for transition in self._transitions:
                if (transition["_chunk"] is None and transition["room"] == row["room"]
                        and transition["artwork_id"] == row["artwork_id"]):
                    transition["_chunk"] = row
                    row["_waiters"].append(transition)
        generation = row["generation_s"]
        self.chunks += 1
        if isinstance(generation, int | float) and generation > 0:
            self.generation_s += float(generation)
            self.generated_frames += int(row["frames"] or 0)

    def _heard(self, event: dict[str, Any], kind: str) -> None:
        key = (event.get("room"), event.get("seq"))
        row = self._by_key.get(key)
        if row is None:  # came in before the engine's own line: keep it a while
            self._early[(*key, kind)] = event
            while len(self._early) > 4096:
                self._early.popitem(last=False)
            return
        self._apply_heard(row, event, kind)

    def _apply_heard(self, row: dict[str, Any], event: dict[str, Any], kind: str) -> None:
        if kind == "chunk_received":
            row["late_frames"] = event.get("late_frames")
        elif row["heard_at"] is None:
            row["heard_at"] = self.rel(float(event.get("wall_time", event["time"])))
            row["_heard"] = True

    def _audio_out(self, event: dict[str, Any], kind: Any, room: str, t: float) -> None:
        if kind == "underflow":
            self.underflows[room] = self.underflows.get(room, 0) + 1
        elif kind == "player_started":
            self.player_started.setdefault(room, t)
        elif kind == "player_stopped":
            played = event.get("played_s")
            if isinstance(played, int | float):
                self.played_s[room] = self.played_s.get(room, 0.0) + float(played)
        elif kind in ("recording_opened", "recording_closed", "recording_failed",
                      "recording_resumed", "recording_rolled",
                      "midi_file_written") and event.get("path"):
            path = str(event["path"])
            segments = self.recordings.setdefault(room, OrderedDict())
            segment = segments.get(path)
            if segment is None:
                # audio_out names the medium "media" ("kind" is the event's own field)
                media = event.get("media")
                segment = segments[path] = {
                    "path": path,
                    "kind": media if media in ("audio", "midi") else (
                        "midi" if path.lower().endswith((".mid", ".midi")) else "audio"),
                    "opened_at": self.rel(t), "seconds": None, "frames": None,
                    "dropped_frames": 0, "error": None, "closed": False, "_opened": t,
                }
            if kind in ("recording_resumed", "recording_rolled"):
                # the new segment's first event: the time before it that was not recorded
                if isinstance(event.get("lost_s"), int | float):
                    segment["lost_before_s"] = event["lost_s"]
                return
            for field in ("sample_rate", "channels", "playhead", "frame", "started"):
                if field in event:
                    segment[field] = event[field]
            if kind == "recording_opened":
                segment["_opened"] = t
                segment["opened_at"] = self.rel(t)
            elif kind == "recording_failed":
                segment["error"] = event.get("error")
            elif kind in ("recording_closed", "midi_file_written"):
                segment["closed"] = True
                for field in ("frames", "seconds", "dropped_frames"):
                    if isinstance(event.get(field), int | float):
                        segment[field] = (round(float(event[field]), 3) if field == "seconds"
                                          else event[field])
                if event.get("error"):
                    segment["error"] = event["error"]
                if segment["seconds"] is None and segment["frames"] is not None \
                        and segment.get("sample_rate"):
                    segment["seconds"] = round(segment["frames"] / segment["sample_rate"], 3)

    # -- flushing rows to disk

    def _flush(self, final: bool = False) -> None:
        while self._pending:
            row = next(iter(self._pending.values()))
            if not (final or row["_heard"] or self.now - row["_t"] > self.wait_s
                    or len(self._pending) > self.max_pending):
                break
            self._finish_chunk(self._pending.pop(id(row)))
        while self._transitions:
            transition = self._transitions[0]
            if not (final or transition["_done"] or (
                    transition["_chunk"] is None and self.now - transition["_t"] > self.wait_s)
                    or len(self._transitions) > self.max_pending):
                break
            self._transitions.popleft()
            self._finish_transition(transition)

    def _finish_chunk(self, row: dict[str, Any]) -> None:
        key = (row["room"], row["seq"])
        if self._by_key.get(key) is row:
            del self._by_key[key]
        for transition in row["_waiters"]:
            transition["heard_at"] = row["heard_at"]
            transition["_done"] = True
        if row["room"] == self.joins_room and row["start_sample"] is not None:
            if self._joins_origin is None:
                self._joins_origin = int(row["start_sample"])
            else:
                self.joins.append(int(row["start_sample"]) - self._joins_origin)
                if row["crossfade"]:
                    self.joins.append(int(row["start_sample"]) + int(row["crossfade"])
                                      - self._joins_origin)
        self._write_chunk({k: v for k, v in row.items() if not k.startswith("_")})

    def _write_chunk(self, row: dict[str, Any]) -> None:
        self._chunk_count += 1
        self._chunk_rows.write(json.dumps(row, separators=(",", ":"), default=str).encode())

    def chunk_rows(self) -> Iterator[bytes]:
        """The chunk rows kept for ``timeline.json`` (the newest that fit in
        ``chunk_rows_bytes``), oldest first, each one JSON object."""
        self._chunk_rows.close()
        path = self._chunk_rows.path
        parts = [*reversed(rotated_paths(path)), path]
        sizes = []
        for part in parts:
            try:
                sizes.append(part.stat().st_size)
            except OSError:
                sizes.append(0)
        skip = sum(sizes) - self.chunk_rows_bytes  # bytes of the oldest rows to leave out
        for part in parts:
            try:
                file = part.open("rb")
            except OSError:
                continue
            with file:
                for line in file:
                    if skip > 0:
                        skip -= len(line)
                        continue
                    line = line.strip()
                    try:
                        json.loads(line)
                    except ValueError:
                        continue  # cut short by a failing disk
                    yield line

    def _finish_transition(self, transition: dict[str, Any]) -> None:
        row = {k: v for k, v in transition.items() if not k.startswith("_")}
        row["detect_delay_s"] = _diff(row["detected_at"], row["shown_at"])
        row["transition_delay_s"] = _diff(row["heard_at"], row["shown_at"])
        delay = row["transition_delay_s"]
        if delay is not None:
            if row["startup"]:
                if self.first_heard_s is None:
                    self.first_heard_s = delay
            else:
                self.delay_sum += delay
                self.delay_count += 1
                self.delay_max = delay if self.delay_max is None else max(self.delay_max, delay)
        self.spools["transitions"].add(row)

    def finish(self) -> None:
        """No more events: write out every row still waiting for its outcome, close files."""
        self._flush(final=True)
        for segments in self.recordings.values():
            for segment in segments.values():
                if segment["kind"] == "audio" and segment["seconds"] is None:
                    _segment_length_from_header(segment)
        self._chunk_rows.close()
        for spool in self.spools.values():
            spool.close()

    # -- results

    def segments(self, room: str, kind: str = "audio") -> list[dict[str, Any]]:
        """A room's recording segments of ``kind``, in the order they were opened."""
        rows = [s for s in self.recordings.get(room, {}).values() if s["kind"] == kind]
        return sorted(rows, key=lambda s: s["_opened"])

    def rooms_report(self) -> dict[str, dict[str, Any]]:
        """Per room: recording segments (path, seconds, dropped, error), underflows, played."""
        rooms = set(self.recordings) | set(self.underflows) | set(self.played_s)
        report = {}
        for room in sorted(rooms, key=str):
            segments = [{k: v for k, v in s.items() if not k.startswith("_")}
                        for kind in ("audio", "midi") for s in self.segments(room, kind)]
            audio = [s for s in segments if s["kind"] == "audio"]
            report[room] = {
                "segments": segments,
                "recorded_s": round(sum(s["seconds"] or 0.0 for s in audio), 3),
                "dropped_frames": sum(int(s.get("dropped_frames") or 0) for s in audio),
                "underflows": self.underflows.get(room, 0),
                "played_s": round(self.played_s[room], 3) if room in self.played_s else None,
            }
        return report

    def summary(self, sample_rate: int) -> dict[str, Any]:
        """The running totals as the summary fields shared by the run and the demo."""
        return {
            "chunks": self.chunks,
            "generator_realtime_factor": (
                round(self.generated_frames / sample_rate / self.generation_s, 1)
                if self.generation_s > 0 else None),
            "transition_delay_s": {
                "max": self.delay_max,
                "mean": round(self.delay_sum / self.delay_count, 3) if self.delay_count else None,
            },
            "first_artwork_heard_after_s": self.first_heard_s,
            "role_exits": dict(self.restarts),
            "role_hangs": dict(self.hangs),
            "roles_failed": dict(self.failed),
            "rooms": self.rooms_report(),
        }

    def section(self, name: str) -> Iterator[dict[str, Any]]:
        """The rows of one section written so far (read back from its spool)."""
        yield from self.spools[name].rows()

    def write(self, path: Path, summary: dict[str, Any],
              transition_extra: Callable[[int, dict[str, Any]], dict[str, Any]] | None = None
              ) -> bool:
        """Write ``timeline.json``: the chunk rows kept on disk, then the other sections.

        False (said once) when the disk refused; the run goes on either way.
        """
        out: IO[bytes] | None = None
        try:
            self.partial_path.parent.mkdir(parents=True, exist_ok=True)
            out = self.partial_path.open("wb")
            out.write(b'{"chunks": [\n')
            kept = 0
            for row in self.chunk_rows():
                out.write((b",\n" if kept else b"") + row)
                kept += 1
            # rows older than the kept window, or lost to a failing disk
            out.write(b"\n],\n" + f'"chunks_omitted": {self._chunk_count - kept},\n'.encode()
                      + f'"t0": {json.dumps(self.t0 or 0.0)},\n'.encode())
            for name in _SECTIONS:
                out.write(f'"{name}": [\n'.encode())
                for index, section_row in enumerate(self.section(name)):
                    if name == "transitions" and transition_extra is not None:
                        section_row |= transition_extra(index, section_row)
                    out.write(((",\n" if index else "") + json.dumps(
                        section_row, separators=(",", ":"), default=str)).encode())
                out.write(b"\n],\n")
            out.write(('"recordings": ' + json.dumps(self.rooms_report(), default=str) + ",\n"
                       + '"summary": ' + json.dumps(summary, indent=1, default=str)
                       + "\n}\n").encode())
            out.close()
            out = None
            os.replace(self.partial_path, path)
        except OSError as error:
            self.failures.failed(str(path), error, "this run has no timeline.json")
            return False
        finally:
            if out is not None:
                try:
                    out.close()
                except OSError:
                    pass
            for spool in self.spools.values():
                spool.close(remove=True)
            for part in (self._chunk_rows.path, *rotated_paths(self._chunk_rows.path)):
                try:
                    part.unlink(missing_ok=True)
                except OSError:
                    pass
        self.failures.ok(str(path))
        return True


def _segment_length_from_header(segment: dict[str, Any]) -> None:
    """A segment whose close was never logged (its process was killed): the file says.

    A FLAC cut by a kill has no length in its header (libsndfile reports
    2**63 - 1 frames, 1.9e14 s at 48 kHz): its frames are then counted by
    reading it, as the demo's join reads it
    (:func:`audio_out.recorder.read_segment`).
    """
    try:
        import soundfile

        from audio_out.recorder import UNKNOWN_LENGTH, read_segment

        info = soundfile.info(segment["path"])
        frames = int(info.frames)
        if not 0 <= frames < UNKNOWN_LENGTH:
            frames = sum(len(block) for block in read_segment(segment["path"]))
    except Exception:  # noqa: BLE001 - missing, cut or unreadable: the length stays unknown
        return
    segment["frames"] = frames
    segment["seconds"] = round(frames / info.samplerate, 3) if info.samplerate else None
    segment.setdefault("sample_rate", int(info.samplerate))


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


# -- the run report -------------------------------------------------------------


class RunReport:
    """What the supervisor keeps while the installation runs, for ``timeline.json`` at the end.

    ``start()`` when the roles start (events already in the files belong to
    an earlier run and are skipped unless ``from_start``), ``poll()`` now and
    then, ``finish()`` once every role has stopped, then :meth:`write`.
    Nothing here raises into the supervisor: a failure is said once.
    """

    def __init__(self, output_dir: Path, failures: WriteFailures,
                 say: Callable[[str], None], from_start: bool = False,
                 lag_s: float = DEFAULT_LAG_S, joins_room: str | None = None) -> None:
        self.output_dir = output_dir
        self.joins_room = joins_room  # the demo's room: its chunk joins are kept
        self.failures = failures
        self.say = say
        self.from_start = from_start
        self.lag_s = lag_s
        self.follower: EventFollower | None = None
        self.builder: TimelineBuilder | None = None
        self.broken: str | None = None
        self.started_at = time.time()

    def start(self) -> None:
        """Begin following the event logs."""
        self.started_at = time.time()
        self.follower = EventFollower(self.output_dir / "events", from_start=self.from_start,
                                      lag_s=self.lag_s, say=self.say)
        self.builder = TimelineBuilder(self.output_dir, self.failures,
                                       joins_room=self.joins_room)

    def poll(self, max_events: int = 20000) -> None:
        """Take in the events that are due (bounded work per call)."""
        self._feed(time.time(), max_events)

    def finish(self) -> None:
        """Every role has stopped: take in the rest and close the rows still waiting."""
        # Each poll is bounded; what the roles wrote is finite, unless something else
        # writes there still: then at most _DRAIN_POLLS polls, and that is said.
        for _ in range(_DRAIN_POLLS):
            self._feed(None, None)
            if self.follower is None or not self.follower.behind or self.broken is not None:
                break
        else:
            self.say(f"the run report stopped reading {self.output_dir / 'events'} after "
                     f"{_DRAIN_POLLS} polls (something still writes there); timeline.json "
                     "leaves the rest out")
        if self.follower is not None:
            self.follower.close()
        if self.builder is not None and self.broken is None:
            try:
                self.builder.finish()
            except Exception as error:  # noqa: BLE001 - a report bug must not stop a stop
                self._broke(error)

    def _feed(self, now: float | None, max_events: int | None) -> None:
        if self.follower is None or self.builder is None or self.broken is not None:
            return
        try:
            for event in self.follower.poll(now, max_events):
                self.builder.feed(event)
        except Exception as error:  # noqa: BLE001 - a report bug must not stop the music
            self._broke(error)

    def _broke(self, error: BaseException) -> None:
        self.broken = repr(error)
        self.say(f"the run report stopped ({error!r}); the installation goes on, "
                 "timeline.json of this run will be missing")

    def summary(self, wall_s: float, sample_rate: int, roles: Sequence[Any] = ()
                ) -> dict[str, Any]:
        """The run's summary (totals from the events, restarts from the supervisor)."""
        base: dict[str, Any] = {"wall_s": round(wall_s, 1)}
        if self.builder is not None:
            base |= self.builder.summary(sample_rate)
        if roles:
            base["role_restarts"] = {r.name: r.restarts for r in roles}
            failed = {r.name: r.failed for r in roles if getattr(r, "failed", None)}
            if failed:
                base["roles_failed"] = failed
        base["events"] = self.follower.events if self.follower is not None else 0
        if self.broken:
            base["report_error"] = self.broken
        return base

    def write(self, summary: dict[str, Any],
              transition_extra: Callable[[int, dict[str, Any]], dict[str, Any]] | None = None
              ) -> Path | None:
        """Write ``OUTPUT/timeline.json``; its path, or None when it could not be written."""
        if self.builder is None or self.broken is not None:
            return None
        path = self.output_dir / "timeline.json"
        return path if self.builder.write(path, summary, transition_extra) else None


def print_run_summary(summary: dict[str, Any], timeline: Path | None, console: Any = None
                      ) -> None:
    """The end-of-run table: each room's recording segments, then the run's figures."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console(width=max(Console().width, 120))
    folder = timeline.parent if timeline is not None else None
    table = Table(title="art2mus run" + (f" — recordings in {folder}/" if folder else ""))
    for column in ("room", "segment", "seconds", "dropped", "underflows", "note"):
        table.add_column(column, overflow="fold")
    for room, row in summary.get("rooms", {}).items():
        segments = row["segments"] or [{"path": "(no recording)", "seconds": None,
                                        "dropped_frames": None, "kind": "", "error": None}]
        for index, segment in enumerate(segments):
            note = segment.get("error") or ("" if segment.get("closed", True) else "cut short")
            if segment.get("lost_before_s"):
                note = f"{segment['lost_before_s']:.1f} s not recorded before it" + (
                    f"; {note}" if note else "")
            path = Path(segment["path"])
            if folder is not None and path.is_relative_to(folder):
                path = path.relative_to(folder)
            table.add_row(
                room, str(path),
                "-" if segment.get("seconds") is None else f"{segment['seconds']:.1f}",
                "-" if segment.get("dropped_frames") is None else str(segment["dropped_frames"]),
                str(row["underflows"]) if index == 0 else "", str(note or ""),
            )
    console.print(table)
    delays = summary.get("transition_delay_s", {})
    failed = summary.get("roles_failed") or {}
    chunks, factor = summary.get("chunks") or 0, summary.get("generator_realtime_factor")
    parts = [f"wall time {summary.get('wall_s')} s",
             f"{chunks} chunks" if chunks else "no chunks made"]
    if factor is not None:  # None: nothing was generated to time
        parts.append(f"generator {factor}x real time")
    if delays.get("max") is not None:  # known only where the source reports its own turns
        parts.append(f"transition delay max {delays['max']} s, mean {delays.get('mean')} s")
    parts.append(f"restarts {sum((summary.get('role_restarts') or {}).values())}")
    line = " · ".join(parts)
    if failed:
        line += " · FAILED: " + "; ".join(f"{k}: {v}" for k, v in failed.items())
    console.print(line, markup=False, highlight=False)
    console.print(f"timeline: {timeline}" if timeline else "timeline: not written (see above)",
                  markup=False, highlight=False)


# -- audio, in blocks ---------------------------------------------------------


class _Framer:
    """Cuts a stream of blocks into whole frames of ``size`` samples, carrying the rest."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.carry: np.ndarray | None = None
        self.position = 0  # stream position of the next frame's first sample

    def push(self, block: np.ndarray) -> tuple[int, np.ndarray]:
        """(position of the first frame, frames shaped (n, size, ...))."""
        data = block if self.carry is None or not len(self.carry) else np.concatenate(
            [self.carry, block])
        count = len(data) // self.size
        frames = data[: count * self.size].reshape(count, self.size, *data.shape[1:])
        self.carry = data[count * self.size:].copy()
        first = self.position
        self.position += count * self.size
        return first, frames


class _KWeighting:
    """BS.1770 K-weighting (pyloudnorm's two stages) with filter state across blocks."""

    def __init__(self, rate: int, channels: int) -> None:
        import pyloudnorm
        from scipy.signal import lfilter_zi

        stages = pyloudnorm.Meter(rate)._filters.values()  # the exact coefficients it uses
        self.stages = [(np.asarray(s.b), np.asarray(s.a), float(s.passband_gain))
                       for s in stages]
        self.state = [np.zeros((channels, len(lfilter_zi(b, a)))) for b, a, _ in self.stages]

    def apply(self, block: np.ndarray) -> np.ndarray:
        from scipy.signal import lfilter

        data = block.astype(np.float64).T  # (channels, samples)
        for index, (b, a, gain) in enumerate(self.stages):
            data, self.state[index] = lfilter(b, a, data, axis=1, zi=self.state[index])
            data = gain * data
        return data.T


class AudioStats:
    """Loudness, peak, silences, spectral centroid and join roughness of a stream of blocks.

    ``ranges`` (start, end frames): also the spectral centroid of each range
    (None where shorter than a second). ``joins`` (sorted frame positions):
    the join roughness of :func:`join_roughness`, computed in one pass.
    Memory does not grow with the length of the stream (beyond ``joins``).
    """

    SILENT_DB = -60.0
    _BINS = 8000  # loudness histogram: 0.01 LU bins from -70 LUFS

    def __init__(self, rate: int, channels: int, ranges: Sequence[tuple[int, int]] = (),
                 joins: Sequence[int] | None = None, half_window: int = 16) -> None:
        self.rate, self.channels = rate, channels
        self.frames = 0
        self.peak = 0.0
        self._silence = _Framer(max(1, int(0.05 * rate)))
        self._run = self._longest = 0
        self._hop = _Framer(max(1, int(0.1 * rate)))
        self._kweight = _KWeighting(rate, channels)
        self._hops: deque[np.ndarray] = deque(maxlen=4)
        gains = np.array([1.0, 1.0, 1.0, 1.41, 1.41][:channels] + [1.0] * max(0, channels - 5))
        self._gains = gains
        self._power = np.zeros(self._BINS)
        self._count = np.zeros(self._BINS, dtype=np.int64)
        self._nfft = 4096 if rate >= 16000 else 1024
        self._spectrum_framer = _Framer(self._nfft)
        self._window = np.hanning(self._nfft)
        self._spectrum = np.zeros(self._nfft // 2 + 1)
        self._ranges = [(int(a), int(b)) for a, b in ranges]
        self._range_spectra = [np.zeros(self._nfft // 2 + 1) for _ in self._ranges]
        self._hw = half_window
        self._joins = np.asarray(sorted(joins), dtype=np.int64) if joins is not None else None
        self._join_next = 0
        self._join_sum = 0.0
        self._join_count = 0
        self._grid_next = half_window
        self._grid_sum = 0.0
        self._grid_count = 0
        self._mono_tail = np.zeros(0, dtype=np.float64)

    def add(self, block: np.ndarray) -> None:
        """Take the next block, shaped (frames, channels)."""
        if not len(block):
            return
        self.frames += len(block)
        self.peak = max(self.peak, float(np.max(np.abs(block))))
        mono = block.mean(axis=1, dtype=np.float64)
        _, windows = self._silence.push(mono)
        if len(windows):
            rms = np.sqrt(np.mean(windows ** 2, axis=1) + 1e-20)
            for flag in 20 * np.log10(rms) < self.SILENT_DB:
                self._run = self._run + 1 if flag else 0
                self._longest = max(self._longest, self._run)
        _, hops = self._hop.push(self._kweight.apply(block))
        for energy in np.sum(hops ** 2, axis=1):  # per hop: (channels,)
            self._hops.append(energy)
            if len(self._hops) == 4:
                z = np.sum(self._hops, axis=0) / (4 * self._hop.size)
                power = float(np.dot(self._gains, z))
                loudness = -0.691 + 10 * math.log10(power) if power > 0 else -math.inf
                if loudness >= -70.0:
                    index = min(self._BINS - 1, int((loudness + 70.0) * 100))
                    self._power[index] += power
                    self._count[index] += 1
        first, frames = self._spectrum_framer.push(mono)
        if len(frames):
            power_spectra = np.abs(np.fft.rfft(frames * self._window, axis=1)) ** 2
            self._spectrum += power_spectra.sum(axis=0)
            starts = first + self._nfft * np.arange(len(frames))
            for index, (a, b) in enumerate(self._ranges):
                inside = (starts >= a) & (starts + self._nfft <= b)
                if inside.any():
                    self._range_spectra[index] += power_spectra[inside].sum(axis=0)
        self._roughness(mono)

    def _roughness(self, mono: np.ndarray) -> None:
        """Windows of |second difference| maxima at the joins and on a regular grid."""
        hw = self._hw
        data = np.concatenate([self._mono_tail, mono])
        start = self.frames - len(data)  # stream position of data[0]
        d2 = np.abs(np.diff(data, n=2))  # d2[k] is at stream position start + k
        end = start + len(d2)  # a window [c - hw, c + hw) is complete when c + hw <= end
        step = 2 * hw + 1
        last = end - hw
        if self._grid_next < last:
            centers = np.arange(self._grid_next, last, step)
            centers = centers[centers + hw <= end]
            if len(centers):
                offsets = centers - hw - start
                windows = d2[offsets[:, None] + np.arange(2 * hw)]
                self._grid_sum += float(windows.max(axis=1).sum())
                self._grid_count += len(centers)
                self._grid_next = int(centers[-1]) + step
        if self._joins is not None:
            while self._join_next < len(self._joins):
                join = int(self._joins[self._join_next])
                if join < hw or join - hw < start:
                    self._join_next += 1  # before the stream (or its window is already gone)
                    continue
                if join + hw > end:
                    break
                self._join_sum += float(d2[join - hw - start: join + hw - start].max())
                self._join_count += 1
                self._join_next += 1
        self._mono_tail = data[-(2 * hw + 2):].copy()

    def _centroid(self, spectrum: np.ndarray) -> float:
        freqs = np.fft.rfftfreq(self._nfft, 1.0 / self.rate)
        total = spectrum.sum()
        return float((freqs * spectrum).sum() / total) if total > 0 else 0.0

    def integrated_lufs(self) -> float:
        """BS.1770-4 gated loudness (the relative gate resolved to 0.01 LU)."""
        count = int(self._count.sum())
        if count == 0:
            return -math.inf
        relative = -0.691 + 10 * math.log10(self._power.sum() / count) - 10.0
        first = max(0, int(math.floor((relative + 70.0) * 100)) + 1)
        power, blocks = self._power[first:].sum(), int(self._count[first:].sum())
        return -0.691 + 10 * math.log10(power / blocks) if blocks and power > 0 else -math.inf

    def range_centroids(self) -> list[float | None]:
        """The spectral centroid of each of ``ranges`` (None when under a second long)."""
        return [round(self._centroid(s), 1) if b - a > self.rate and s.any() else None
                for (a, b), s in zip(self._ranges, self._range_spectra, strict=True)]

    def join_roughness(self) -> float | None:
        """As :func:`join_roughness` (None without joins or with too short a stream)."""
        if not self._join_count or self.frames - 2 < 10 * self._hw or not self._grid_count:
            return None
        elsewhere = self._grid_sum / self._grid_count
        return (self._join_sum / self._join_count) / elsewhere if elsewhere > 0 else None

    def result(self, path: Path | None = None) -> dict[str, Any]:
        """The figures the demo prints (as :func:`analyse_audio` returned them)."""
        seconds = self.frames / self.rate
        lufs = self.integrated_lufs() if seconds > 0.5 else -math.inf
        return {
            "file": str(path) if path is not None else None,
            "sample_rate": int(self.rate),
            "channels": int(self.channels),
            "seconds": round(seconds, 3),
            "integrated_lufs": round(lufs, 2) if math.isfinite(lufs) else None,
            "peak_dbfs": round(20 * math.log10(self.peak), 2) if self.peak > 0 else None,
            "longest_silence_s": round(self._longest * self._silence.size / self.rate, 3),
            "spectral_centroid_hz": round(self._centroid(self._spectrum), 1),
        }


def analyse_audio(path: Path, ranges: Sequence[tuple[int, int]] = (),
                  joins: Sequence[int] | None = None, block_frames: int = 1 << 16
                  ) -> tuple[dict[str, Any], AudioStats]:
    """Read a recording in blocks: its figures (see :class:`AudioStats`) and the stats."""
    import soundfile

    with soundfile.SoundFile(str(path)) as file:
        stats = AudioStats(file.samplerate, file.channels, ranges, joins)
        for block in file.blocks(blocksize=block_frames, dtype="float32", always_2d=True):
            stats.add(block)
    return stats.result(path), stats


def spectral_centroid(mono: np.ndarray, rate: int) -> float:
    """Power-weighted mean frequency of a mono signal (0 for silence)."""
    if len(mono) == 0:
        return 0.0
    power = np.abs(np.fft.rfft(mono * np.hanning(len(mono)))) ** 2
    freqs = np.fft.rfftfreq(len(mono), 1.0 / rate)
    total = power.sum()
    return float((freqs * power).sum() / total) if total > 0 else 0.0


def join_roughness(audio: np.ndarray, joins: list[int], half_window: int = 16) -> float | None:
    """How much rougher the signal is at chunk joins than elsewhere (1.0 = the same).

    Roughness is the largest absolute second difference in a small window;
    the ratio compares its mean over join windows with its mean over windows
    at every other position on a regular grid. A click at joins shows as a
    ratio well above 1. (Whole-array reference of :class:`AudioStats`.)
    """
    mono = audio.mean(axis=1) if audio.ndim == 2 else audio
    d2 = np.abs(np.diff(mono, n=2))
    joins = [j for j in joins if half_window <= j and j + half_window <= len(d2)]
    if not joins or len(d2) < 10 * half_window:
        return None
    at_joins = np.mean([d2[j - half_window: j + half_window].max() for j in joins])
    grid = np.arange(half_window, len(d2) - half_window, 2 * half_window + 1)
    elsewhere = np.mean([d2[g - half_window: g + half_window].max() for g in grid])
    return float(at_joins / elsewhere) if elsewhere > 0 else None
