"""Structured event logs: one JSON object per line, one file per role and room.

Roles record what happened (an artwork change, a chunk generated, a chunk
first heard) with a wall-clock time; the supervisor follows the files while
the installation runs and merges them into ``timeline.json``
(:mod:`installation.report`). Writing is line-buffered and thread-safe so a crash loses
at most the line being written.

A file rotates by size like the role logs (the same
:class:`~ground.jsonlog.RotatingLineFile`): ``ROLE.jsonl`` becomes
``ROLE.jsonl.1`` .. ``ROLE.jsonl.N`` past ``max_bytes`` (``[supervisor]
events_max_bytes``, ``events_backups``), so a run of months keeps a bounded
tail of its events. :func:`iter_events` reads the rotated files too; a reader
that follows a growing log across rotations is
:class:`installation.report.EventFollower`.

A disk that fails (full, read-only, gone) must not stop a role: an event
that cannot be written is dropped and counted (``EventLog.dropped``), the
failure is logged once as an error (and once more when writing works again),
and every later event is tried as usual.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from ground.files import special_kind
from ground.jsonlog import RotatingLineFile, WriteFailures, rotated_paths

_log = logging.getLogger(__name__)

#: An event log rotates past this size by default (``[supervisor] events_max_bytes``).
EVENTS_MAX_BYTES = 10 * 1024 * 1024
#: The longest line :func:`iter_events` reads as an event (a role's event is under 4 KB);
#: a longer one (NULs a power cut left) is skipped, never held whole in memory.
MAX_EVENT_LINE_BYTES = 1 << 20
#: Rotated files kept by default (``[supervisor] events_backups``).
EVENTS_BACKUPS = 5


class EventSink(Protocol):
    """Anything that records ``kind`` events with keyword fields."""

    def __call__(self, kind: str, **fields: Any) -> None:
        """Record one event."""
        ...


class EventLog:
    """Appends events as JSON lines to ``path``; each gets ``time`` and ``kind``.

    The file rotates to ``path.1`` .. ``path.<backups>`` past ``max_bytes``.
    """

    def __init__(self, path: str | Path, role: str, room: str | None = None,
                 failures: WriteFailures | None = None, max_bytes: int = EVENTS_MAX_BYTES,
                 backups: int = EVENTS_BACKUPS) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._base = {"role": role} | ({"room": room} if room is not None else {})
        self._lines = RotatingLineFile(
            self.path, max_bytes, backups, failures or WriteFailures(_log.error),
            target=f"event log {self.path}",
            consequence="events are counted and dropped until it works again")
        self._closed = False
        self.written = 0
        self.dropped = 0
        self._lines.open()  # the file exists from the start (a failure is said, not raised)

    def __call__(self, kind: str, **fields: Any) -> None:
        """Write one event line, stamped with ``time.time()`` unless ``time`` is given."""
        record = {"time": time.time(), "kind": kind} | self._base | fields
        line = json.dumps(record, default=_jsonable, separators=(",", ":"))
        with self._lock:  # held across the write: nothing reopens the file after close()
            if self._closed:
                return
            if self._lines.write(line.encode("utf-8")):
                self.written += 1
            else:
                self.dropped += 1

    def close(self) -> None:
        """Flush and close the file."""
        with self._lock:
            self._closed = True
            self._lines.close()


def null_sink(kind: str, **fields: Any) -> None:
    """An event sink that records nothing (tests, offline rendering)."""


class MemorySink:
    """An event sink that keeps every event in memory: the test seam for anything that logs."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, **fields: Any) -> None:
        """Keep one event."""
        self.items.append((kind, fields))

    def of(self, kind: str) -> list[dict[str, Any]]:
        """The fields of every ``kind`` event, oldest first."""
        return [fields for k, fields in self.items if k == kind]

    def kinds(self) -> list[str]:
        """Every event's kind, oldest first."""
        return [k for k, _ in self.items]


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot log {type(value).__name__} as JSON")


def iter_events(path: str | Path) -> Iterator[dict[str, Any]]:
    """The complete events of a log, its rotated files first (oldest first), one at a time.

    A bad or truncated line is skipped. For a log that is being written (and may
    rotate while it is read), follow it with :class:`installation.report.EventFollower`.
    """
    path = Path(path)
    for part in [*reversed(rotated_paths(path)), path]:
        # a link to /dev/zero never ends and a named pipe blocks: no event log is either
        if (kind := special_kind(part)) is not None:
            if part == path:
                raise OSError(f"event log {path} is {kind}, not a file")
            continue
        try:
            file = part.open("rb")
        except FileNotFoundError:
            if part == path:
                raise
            continue  # rotated away while we read
        with file:
            while line := file.readline(MAX_EVENT_LINE_BYTES + 1):
                if len(line) > MAX_EVENT_LINE_BYTES:  # power-cut debris: skip to its end
                    while not line.endswith(b"\n") and \
                            (line := file.readline(MAX_EVENT_LINE_BYTES)):
                        pass
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    yield record


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """All complete events in a log and its rotated files; a truncated line is skipped."""
    return list(iter_events(path))
