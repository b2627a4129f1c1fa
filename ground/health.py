"""Heartbeats from roles to their supervisor, over an inherited pipe.

Each supervised role gets the write end of its own pipe (its number in
``ART2MUS_HEARTBEAT_FD``) and, from its *main loop*, writes one short JSON
line every ``heartbeat_s``: a timestamp and a small health record (what the
room sees and plays, drops, underflows). The supervisor reads every pipe
without blocking; a role whose pipe stays silent for ``hang_after_s`` is
hung (a deadlock, a stuck driver call, SIGSTOP) and gets killed and
restarted.

Why a pipe rather than a socket or a touched file: it needs no port or
endpoint in the config, cannot be reached by anything else on the network,
costs no disk write per second for months, and it belongs to exactly one
process, so a heartbeat can never be mistaken for another role's. The same
lines carry the status that ``art2mus status`` and OSC out show.

A role run by hand (``art2mus engine``) has no pipe: :class:`Heartbeat` is
then a no-op.
"""

from __future__ import annotations

import errno
import json
import os
import time
from typing import Any

HEARTBEAT_FD_ENV = "ART2MUS_HEARTBEAT_FD"
#: Writes up to PIPE_BUF (4096 on Linux) are atomic: a line is never torn.
MAX_LINE_BYTES = 4000


def _line(status: dict[str, Any]) -> bytes:
    """One heartbeat line under MAX_LINE_BYTES: the largest fields of ``status`` are
    dropped first (named in ``truncated``), so an engine serving many rooms still
    reports its own health when its per-room record no longer fits."""
    status = dict(status)
    dropped: list[str] = []
    while True:
        record = dict(status, truncated=dropped) if dropped else status
        line = json.dumps({"t": time.time(), "status": record},
                          separators=(",", ":"), default=str).encode()
        if len(line) < MAX_LINE_BYTES or not status:
            return line if len(line) < MAX_LINE_BYTES else json.dumps(
                {"t": time.time(), "status": {"truncated": True}}).encode()
        largest = max(status, key=lambda key: len(json.dumps(status[key], default=str)))
        dropped.append(str(largest))
        del status[largest]


#: A refused CurveZMQ handshake stays in a role's heartbeat this long after the last one
#: (a refused key is not tried again: the line stays until the room is restarted).
HANDSHAKE_SHOWN_S = 120.0


def with_handshakes(status: dict[str, Any]) -> dict[str, Any]:
    """``status`` with ``handshakes``: the messages of this process's CurveZMQ handshakes
    refused in the last :data:`HANDSHAKE_SHOWN_S` (:func:`ground.security.handshake_failures`,
    three at most), so ``art2mus status`` says a room is silent for a wrong key."""
    from ground.security import handshake_failures

    failed = [str(f.get("message", ""))[:300] for f in handshake_failures(HANDSHAKE_SHOWN_S)]
    return dict(status, handshakes=failed[:3]) if failed else status


class Heartbeat:
    """The role side: ``beat(status)`` from the main loop, rate-limited to ``every_s``."""

    def __init__(self, every_s: float = 0.5, fd: int | None = None) -> None:
        if fd is None:
            value = os.environ.get(HEARTBEAT_FD_ENV, "")
            fd = int(value) if value.isdigit() else None
        self.fd = fd
        self.every_s = every_s
        self._next = 0.0
        self.sent = 0
        if self.fd is not None:
            os.set_blocking(self.fd, False)  # a full pipe must never block the role's loop

    @property
    def enabled(self) -> bool:
        """True when a supervisor listens."""
        return self.fd is not None

    def due(self) -> bool:
        """True every ``every_s``, supervised or not: the cadence at which a role builds
        its health record (and refreshes its metrics); :meth:`beat` then sends it."""
        return time.monotonic() >= self._next

    def beat(self, status: dict[str, Any] | None = None, force: bool = False) -> bool:
        """Write one heartbeat line if one is due; True if written."""
        if not force and time.monotonic() < self._next:
            return False
        self._next = time.monotonic() + self.every_s
        if self.fd is None:
            return False
        line = _line(with_handshakes(status or {}))
        try:
            os.write(self.fd, line + b"\n")
        except BlockingIOError:
            return False  # the supervisor is behind: this beat is lost, the next one counts
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.EBADF):
                self.fd = None  # the supervisor is gone; PDEATHSIG will stop us
                return False
            raise
        self.sent += 1
        return True


class HeartbeatReader:
    """The supervisor side of one role's pipe: the last beat time and status."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        os.set_blocking(fd, False)
        self._partial = b""
        self.last_beat: float | None = None  # time.monotonic() of the last line
        self.status: dict[str, Any] = {}
        self.beats = 0

    def read(self) -> bool:
        """Consume everything waiting; True if at least one beat arrived."""
        got = False
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                break
            if not data:
                break  # the writer exited
            lines = (self._partial + data).split(b"\n")
            self._partial = lines.pop()[-MAX_LINE_BYTES:]
            for line in lines:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and isinstance(record.get("status"), dict):
                    self.status = record["status"]
                got = True
                self.beats += 1
        if got:
            self.last_beat = time.monotonic()
        return got

    def close(self) -> None:
        """Close the read end."""
        try:
            os.close(self.fd)
        except OSError:
            pass


def open_pipe() -> tuple[int, int]:
    """A (read, write) pipe; the write end is for the child (inheritable on pass_fds)."""
    read_fd, write_fd = os.pipe()
    return read_fd, write_fd
