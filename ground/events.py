"""Structured event logs: one JSON object per line, one file per role and room.

Roles record what happened (an artwork change, a chunk generated, a chunk
first heard) with a wall-clock time; the supervisor follows the files while
the installation runs and merges them into ``timeline.json``
(:mod:`installation.report`). Writing is line-buffered and thread-safe so a crash loses
at most the line being written.

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
from typing import IO, Any, Protocol

from ground.jsonlog import WriteFailures

_log = logging.getLogger(__name__)


class EventSink(Protocol):
    """Anything that records ``kind`` events with keyword fields."""

    def __call__(self, kind: str, **fields: Any) -> None:
        """Record one event."""
        ...


class EventLog:
    """Appends events as JSON lines to ``path``; each gets ``time`` and ``kind``."""

    def __init__(self, path: str | Path, role: str, room: str | None = None,
                 failures: WriteFailures | None = None) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._base = {"role": role} | ({"room": room} if room is not None else {})
        self._failures = failures or WriteFailures(_log.error)
        self._file: IO[str] | None = None
        self._cut = False  # the last write failed: a partial line may end the file
        self._closed = False
        self.written = 0
        self.dropped = 0
        with self._lock:
            self._open()

    def _open(self) -> bool:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8", buffering=1)
        except OSError as error:
            self._failures.failed(f"event log {self.path}", error,
                                  "events are counted and dropped until it works again")
            return False
        return True

    def __call__(self, kind: str, **fields: Any) -> None:
        """Write one event line, stamped with ``time.time()`` unless ``time`` is given."""
        record = {"time": time.time(), "kind": kind} | self._base | fields
        line = json.dumps(record, default=_jsonable, separators=(",", ":"))
        with self._lock:
            if self._closed:
                return
            if self._file is None and not self._open():
                self.dropped += 1
                return
            assert self._file is not None
            try:
                if self._cut:  # a line a full disk cut short: this one starts afresh
                    self._file.write("\n")
                    self._cut = False
                self._file.write(line + "\n")
            except OSError as error:
                self.dropped += 1
                self._cut = True  # part of the line may be in the file
                self._close_file()  # a fresh file object: no half-written buffer is retried
                self._failures.failed(f"event log {self.path}", error,
                                      "events are counted and dropped until it works again")
                return
            self.written += 1
        self._failures.ok(f"event log {self.path}")

    def _close_file(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass  # the buffered tail is lost with the disk; nothing else to do
            self._file = None

    def close(self) -> None:
        """Flush and close the file."""
        with self._lock:
            self._closed = True
            self._close_file()


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
    """The complete events of a log file, one at a time (a bad or truncated line is skipped)."""
    with Path(path).open("rb") as file:
        for line in file:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                yield record


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """All complete events in a log file; a truncated last line is skipped."""
    return list(iter_events(path))
