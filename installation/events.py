"""Structured event logs: one JSON object per line, one file per role and room.

Roles record what happened (an artwork change, a chunk generated, a chunk
first heard) with a wall-clock time; ``art2mus demo`` merges the files into
``timeline.json``. Writing is line-buffered and thread-safe so a crash loses
at most the line being written.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Protocol


class EventSink(Protocol):
    """Anything that records ``kind`` events with keyword fields."""

    def __call__(self, kind: str, **fields: Any) -> None:
        """Record one event."""
        ...


class EventLog:
    """Appends events as JSON lines to ``path``; each gets ``time`` and ``kind``."""

    def __init__(self, path: str | Path, role: str, room: str | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8", buffering=1)
        self._lock = threading.Lock()
        self._base = {"role": role} | ({"room": room} if room is not None else {})

    def __call__(self, kind: str, **fields: Any) -> None:
        """Write one event line, stamped with ``time.time()`` unless ``time`` is given."""
        record = {"time": time.time(), "kind": kind} | self._base | fields
        line = json.dumps(record, default=_jsonable, separators=(",", ":"))
        with self._lock:
            if not self._file.closed:
                self._file.write(line + "\n")

    def close(self) -> None:
        """Flush and close the file."""
        with self._lock:
            self._file.close()


def null_sink(kind: str, **fields: Any) -> None:
    """An event sink that records nothing (tests, offline rendering)."""


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot log {type(value).__name__} as JSON")


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """All complete events in a log file; a truncated last line is skipped."""
    events = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events
