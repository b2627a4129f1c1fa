"""Role logging as JSON lines: one object per record, from the role to ``OUTPUT/logs/ROLE.log``.

Role side: :func:`setup_json_logging` makes every log record one JSON object
on stdout (``time``, ``level``, ``role``, ``room``, ``logger``, ``message``,
and ``exc`` for a traceback).

Supervisor side: :class:`RoleOutputPump` reads a role's stdout *and* stderr
(one thread per role process, so a role never blocks on a full pipe) and
appends to the role's :class:`RotatingLineFile`. Lines that are not JSON
objects (a Python traceback, an OpenCV warning, a library's print) are
wrapped into the same record shape, a traceback as one record, so the files
hold JSON lines only and can be fed to any log shipper as they are, next to
the structured events in ``OUTPUT/events/``. The files rotate by size and
count (``[supervisor] log_max_bytes``, ``log_backups``).

:class:`WriteFailures` is how the supervisor and the event logs treat a disk
that fails (full, read-only, gone): the write is dropped and counted, the
failure is said once, and the next write is tried as usual.

:class:`RotatingLineFile` is the one rotation mechanism of the installation's
line files: the role logs here, the event logs (:mod:`ground.events`) and the
run report's chunk rows. Readers find the rotated files with
:func:`rotated_paths`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import selectors
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


class JsonLineFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line."""

    def __init__(self, role: str, room: str | None) -> None:
        super().__init__()
        self._base: dict[str, Any] = {"role": role} | ({"room": room} if room else {})

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line (no newline)."""
        entry: dict[str, Any] = {
            "time": round(record.created, 6),
            "level": record.levelname.lower(),
            **self._base,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


def setup_json_logging(role: str, room: str | None, level: int = logging.INFO) -> None:
    """Send every log record of this process to stdout as JSON lines."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonLineFormatter(role, room))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.Formatter.converter = time.gmtime


class WriteFailures:
    """Counts failed writes per target and says each failure once, and its recovery once.

    ``say`` gets one human line the first time a target fails (and when it
    works again); callers keep running and simply try the next write.
    """

    def __init__(self, say: Callable[[str], None]) -> None:
        self._say = say
        self._lock = threading.Lock()
        self.failures: dict[str, int] = {}  # running totals, for metrics
        self.failing: dict[str, str] = {}  # target -> the error while it is failing

    def failed(self, target: str, error: BaseException, consequence: str) -> None:
        """One write to ``target`` failed; said once until it works again."""
        with self._lock:
            self.failures[target] = self.failures.get(target, 0) + 1
            first = target not in self.failing
            self.failing[target] = str(error)
        if first:
            self._say(f"cannot write {target}: {error}; {consequence}")

    def errors(self) -> dict[str, str]:
        """A copy of what is failing now (target -> error), safe from any thread."""
        with self._lock:
            return dict(self.failing)

    def ok(self, target: str) -> None:
        """A write to ``target`` worked; if it was failing, say it recovered."""
        if target not in self.failing:  # the common case: no lock, no work
            return
        with self._lock:
            error = self.failing.pop(target, None)
            count = self.failures.get(target, 0)
        if error is not None:
            self._say(f"writing {target} works again ({count} write(s) lost so far)")


class RotatingLineFile:
    """Appends lines to ``path``, rotating to ``path.1`` .. ``path.N`` past ``max_bytes``.

    Rotation closes the file, then renames (``path.N-1`` to ``path.N`` .. ``path``
    to ``path.1``; ``backups = 0`` deletes it), then opens a new ``path``: a
    reader holding the old file open sees a new inode at ``path`` only once the
    old file is final (:class:`installation.report.EventFollower` relies on it).
    Thread-safe (a restarted role's pump may overlap its predecessor's last
    lines). A write that fails is dropped and reported to ``failures`` as
    ``target`` (default: the path); a line the failure may have cut short is
    ended before the next one, so it never swallows it.
    """

    def __init__(self, path: Path, max_bytes: int, backups: int,
                 failures: WriteFailures | None = None, target: str | None = None,
                 consequence: str = "its lines are dropped until it works again") -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.failures = failures
        self.target = target if target is not None else str(path)
        self.consequence = consequence
        self._file: IO[bytes] | None = None
        self._size = 0
        self._cut = False  # the last write failed: a partial line may end the file
        self._lock = threading.Lock()
        self.lines = 0
        self.dropped = 0

    def open(self) -> bool:
        """Open (create) the file now rather than at the first line; False when it failed
        (reported like a failed write, and tried again at the next line)."""
        with self._lock:
            try:
                self._open()
            except OSError as error:
                self._close_quietly()
                if self.failures is not None:
                    self.failures.failed(self.target, error, self.consequence)
                return False
        return True

    def _open(self) -> IO[bytes]:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("ab")
            self._size = self._file.tell()
        return self._file

    def write(self, line: bytes) -> bool:
        """Append one line (``line`` without its newline); False when it was dropped."""
        data = line + b"\n"
        with self._lock:
            writing = False
            try:
                file = self._open()
                if self._size and self._size + len(data) > self.max_bytes:
                    self._rotate()
                    self._cut = False  # the cut line stays in the rotated file
                    file = self._open()
                if self._cut:  # a line a full disk cut short: this one starts afresh
                    data = b"\n" + data
                writing = True
                file.write(data)
                file.flush()
                self._cut = False
                self._size += len(data)
                self.lines += 1
            except OSError as error:
                self.dropped += 1
                self._cut = self._cut or writing  # part of the line may be in the file
                self._close_quietly()  # reopened (and the size re-read) on the next line
                if self.failures is not None:
                    self.failures.failed(self.target, error, self.consequence)
                return False
        if self.failures is not None:
            self.failures.ok(self.target)
        return True

    def _rotate(self) -> None:
        self._close_quietly()
        if self.backups <= 0:
            self.path.unlink(missing_ok=True)
            return
        for index in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))

    def _close_quietly(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None

    def close(self) -> None:
        """Close the file (a later write reopens it)."""
        with self._lock:
            self._close_quietly()


def rotated_paths(path: Path) -> list[Path]:
    """The rotated files of ``path`` that exist (``path.1`` .. ``path.N``), newest first."""
    prefix = path.name + "."
    found: list[tuple[int, Path]] = []
    try:
        with os.scandir(path.parent) as entries:
            for entry in entries:
                suffix = entry.name[len(prefix):]
                if entry.name.startswith(prefix) and suffix.isascii() and suffix.isdigit():
                    found.append((int(suffix), path.with_name(entry.name)))
    except OSError:
        return []
    return [rotated for _, rotated in sorted(found)]


#: A line longer than this is cut (and marked) rather than buffered without bound.
MAX_LOG_LINE_BYTES = 64 * 1024
_TRACEBACK_START = ("Traceback (most recent call last):",
                    "During handling of the above exception",
                    "The above exception was the direct cause")
_WARNING = re.compile(r"warn", re.IGNORECASE)


class RoleOutputPump:
    """Drains one role process's stdout and stderr into its log file, as JSON lines.

    JSON-object lines (the role's own logging) are written as they are; any
    other line is wrapped: stdout as ``info``, stderr as ``warning`` when it
    says so, else ``error``; a Python traceback becomes one ``error`` record
    whose ``message`` is its last line and ``exc`` the whole text.
    ``last_error`` is the message of the latest error record: the reason the
    supervisor gives when the role exits.
    """

    def __init__(self, stdout: IO[bytes], stderr: IO[bytes], log: RotatingLineFile,
                 role: str, room: str | None) -> None:
        self.log = log
        self._base: dict[str, Any] = {"role": role} | ({"room": room} if room else {})
        self.last_error: str | None = None
        self._streams = {stdout.fileno(): ("stdout", stdout), stderr.fileno(): ("stderr", stderr)}
        self._traceback: list[str] = []
        self._thread = threading.Thread(target=self._run, name=f"log-{role}", daemon=True)
        self._thread.start()

    def join(self, timeout_s: float) -> None:
        """Wait (bounded) until the process's pipes are drained and closed."""
        self._thread.join(timeout_s)

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        partial: dict[int, bytes] = {}
        for fd in self._streams:
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ)
            partial[fd] = b""
        try:
            while selector.get_map():
                for key, _ in selector.select():
                    fd = key.fd
                    try:
                        data = os.read(fd, 65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    name = self._streams[fd][0]
                    if not data:  # the process closed it (exited)
                        selector.unregister(fd)
                        if partial[fd]:
                            self._line(name, partial[fd])
                        continue
                    lines = (partial[fd] + data).split(b"\n")
                    partial[fd] = lines.pop()
                    if len(partial[fd]) > MAX_LOG_LINE_BYTES:
                        lines.append(partial[fd][:MAX_LOG_LINE_BYTES] + b" [cut]")
                        partial[fd] = b""
                    for line in lines:
                        self._line(name, line)
            self._end_traceback()
        finally:
            selector.close()
            for _, stream in self._streams.values():
                stream.close()

    def _line(self, stream: str, raw: bytes) -> None:
        raw = raw.rstrip(b"\r")
        if raw.startswith(b"{"):
            try:
                record = json.loads(raw)
            except ValueError:
                record = None
            if isinstance(record, dict):
                self._end_traceback()
                if str(record.get("level", "")).lower() in ("error", "critical"):
                    self.last_error = str(record.get("message", ""))[:500] or self.last_error
                self.log.write(raw)
                return
        text = raw.decode("utf-8", errors="replace")
        if stream == "stderr":
            if text.startswith(_TRACEBACK_START):
                chained = any(line.startswith(_TRACEBACK_START[1:]) for line in self._traceback
                              if line.strip())
                if not chained:  # "During handling ...": the next traceback is the same record
                    self._end_traceback()
                self._traceback.append(text)
                return
            if self._traceback:
                self._traceback.append(text)
                # A traceback ends with its first unindented line after the header.
                if text and not text[0].isspace():
                    self._end_traceback()
                return
        if not text.strip():
            return
        level = "info" if stream == "stdout" else (
            "warning" if _WARNING.search(text) else "error")
        self._wrap(level, stream, text)

    def _end_traceback(self) -> None:
        if not self._traceback:
            return
        lines, self._traceback = self._traceback, []
        last = next((line for line in reversed(lines) if line.strip()), lines[0])
        self._wrap("error", "stderr", last.strip(), exc="\n".join(lines))

    def _wrap(self, level: str, stream: str, message: str, exc: str | None = None) -> None:
        entry: dict[str, Any] = {"time": round(time.time(), 6), "level": level, **self._base,
                                 "logger": stream, "message": message}
        if exc is not None:
            entry["exc"] = exc
        if level == "error":
            self.last_error = message[:500]
        self.log.write(json.dumps(entry, separators=(",", ":")).encode())
