"""The installation's status file and the ``art2mus status`` table.

The supervisor rewrites ``OUTPUT/status.json`` every ``status_every_s`` (an
atomic rename, so a reader never sees half a file) from the heartbeats of
its roles. Why a file rather than scraping every role's metrics endpoint:
it works with metrics off (the default), it lists the roles that are *down*
(restarting, hung), which no endpoint of theirs can report, and reading it
needs nothing but the config. Metrics remain for time series.

:func:`room_summary` turns the rows into what a room is doing (artwork,
confidence, key, tempo, level, health); OSC out sends the same summary.
:func:`problems` says what is wrong, for ``art2mus status``'s exit code: a
stale file (the supervisor is stuck or gone), a stopped installation, a role
restarting, silent or failed, a room that hears no music (audio_out silent, or
still waiting for its first chunk, or no audio_out listening to a room the
engine serves), a recording that failed, a sound device lost, a file the
supervisor cannot write, a disk that will soon be full (:class:`DiskWatch`:
said hours before the recordings stop, not after).

:func:`read_status` reads the file as something anything may have written (a
copy from elsewhere, a hand edit, a link to a device): it reads at most
:data:`MAX_STATUS_BYTES`, refuses a file of another shape with a message, and
what it returns the table prints without a traceback.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from ground.errors import InputError
from ground.files import special_kind
from installation.config import InstallationConfig

#: Free space under which the output folder's disk is a problem whatever its pace, bytes.
LOW_FREE_BYTES = 1 << 30
#: Hours of filling at the measured pace under which the disk is a problem: a night and a
#: morning, for a technician who reads the console once a day.
LOW_HOURS = 18.0
#: The span free space is followed over, and the least of it a pace is given for, seconds:
#: a log rotated or a take joined moves it for a moment; recording moves it for hours.
DISK_WINDOW_S = 15 * 60.0
DISK_LEAST_SPAN_S = 5 * 60.0
#: Least time between two looks at the disk (the console asks every second).
DISK_EVERY_S = 10.0
#: The status file is a few kB (a role row is under 2 kB); one larger than this is not the
#: supervisor's, and reading it whole could take the reader's memory.
MAX_STATUS_BYTES = 4 * 1024 * 1024
#: A room whose audio_out has run this long without a first chunk is silent, and said so:
#: the engine's first chunk comes within a few seconds of a start (2-3 s in the demo; a
#: restarted engine resumes as fast), so 20 s gives a slow start time enough and still says
#: a silent room (an engine unreachable, a wrong key) within half a minute. An engine of this
#: installation still starting or warming up explains the wait, and is waited for.
ROOM_SILENT_GRACE_S = 20.0


class _Free(NamedTuple):
    at: float  # monotonic seconds
    free: int  # bytes


class DiskWatch:
    """How much room the output folder's disk has, and how fast it fills.

    A recording room fills about 1.4 GB an hour (48 kHz stereo float WAV): a
    museum's disk is full in weeks, and the full disk was only said once the
    recordings had stopped. :meth:`look` measures the free space at most every
    :data:`DISK_EVERY_S` and the pace from the oldest look of the last
    :data:`DISK_WINDOW_S`; :func:`disk_problem` says when it matters.
    """

    def __init__(self, path: Path, clock: Callable[[], float] = time.monotonic,
                 free: Callable[[Path], int] = lambda path: shutil.disk_usage(path).free
                 ) -> None:
        self.path = path
        self._clock = clock
        self._free = free
        self._looks: deque[_Free] = deque()
        self._latest: dict[str, Any] | None = None

    def look(self) -> dict[str, Any] | None:
        """``{"path", "free_bytes", "filling_bytes_per_s", "hours_left"}`` (pace and hours
        None until followed :data:`DISK_LEAST_SPAN_S`, or while it does not fill); None
        where the folder cannot be measured (not made yet)."""
        now = self._clock()
        if self._looks and now - self._looks[-1].at < DISK_EVERY_S:
            return self._latest
        try:
            free = int(self._free(self.path))
        except OSError:
            return self._latest
        self._looks.append(_Free(now, free))
        while now - self._looks[0].at > DISK_WINDOW_S:
            self._looks.popleft()
        first = self._looks[0]
        pace = None
        if now - first.at >= DISK_LEAST_SPAN_S:
            pace = max(0.0, (first.free - free) / (now - first.at))
        self._latest = {"path": str(self.path), "free_bytes": free,
                        "filling_bytes_per_s": pace,
                        "hours_left": free / pace / 3600.0 if pace else None}
        return self._latest


def disk_problem(disk: Any, kept_free_bytes: object = 0,
                 removable_bytes: object = None) -> str | None:
    """The line ``art2mus status`` and the console say about the output folder's disk (a
    :meth:`DiskWatch.look`), or None while it has room.

    ``kept_free_bytes``: what take retention keeps free (``[installation.takes]
    keep_free_gb``, :func:`installation.takes.kept_free_bytes`). It removes the oldest
    takes as the disk fills, so the pace is not said while at least half of that is free;
    under half, it has nothing left it may remove and the disk is said as without it.
    ``removable_bytes``: what retention said at its last look it may still remove (the
    finished takes, :meth:`installation.takes.TakeKeeper.snapshot`; None: not known). It
    never removes a take being recorded: where the finished ones would not last
    :data:`LOW_HOURS` at the pace (none left: the only take is the one being recorded,
    which filled the disk in two weeks), the disk is said as without retention too.
    """
    if not isinstance(disk, dict):
        return None
    free = finite_number(disk.get("free_bytes"))
    hours = finite_number(disk.get("hours_left"))
    pace = finite_number(disk.get("filling_bytes_per_s"))
    if free is None:
        return None
    where = f"the disk of {disk.get('path')}"
    if free < LOW_FREE_BYTES:
        return (f"{where} has {free / 1e9:.2f} GB free: recordings stop when it is full (the "
                f"music goes on); free some space or move installation.output_dir")
    kept = finite_number(kept_free_bytes) or 0.0
    why = ""
    if kept > 0 and free >= kept / 2:
        spare = finite_number(removable_bytes)
        if spare is None or not pace or (free + max(0.0, spare)) / pace >= LOW_HOURS * 3600:
            return None
        why = (f"; take retention has {max(0.0, spare) / 1e9:.1f} GB of finished takes left "
               "to remove, and never removes one being recorded")
    if hours is not None and pace is not None and hours < LOW_HOURS:
        return (f"{where} fills in about {hours:.1f} h ({free / 1e9:.1f} GB free, "
                f"{pace * 3600 / 1e9:.2f} GB an hour{why}): recordings stop then (the music "
                f"goes on); free some space or move installation.output_dir")
    return None


def write_status(path: Path, config: InstallationConfig, roles: list[dict[str, Any]],
                 params: dict[str, dict[str, float]], state: str = "running",
                 write_errors: dict[str, str] | None = None,
                 console_url: str | None = None, disk: dict[str, Any] | None = None,
                 surfaces: dict[str, str] | None = None,
                 takes: dict[str, Any] | None = None) -> None:
    """Atomically replace ``path`` with the current status of every role.

    ``state`` is the supervisor's ("running", or "stopped" after a shutdown);
    ``write_errors`` the files it cannot write right now (target -> error);
    ``console_url`` where the technician's console is served (None: not served);
    ``disk`` the output folder's disk (:meth:`DiskWatch.look`); ``surfaces`` what the
    control surfaces say of themselves (MIDI in: the port open, or the one waited for);
    ``takes`` what take retention keeps and has removed (:meth:`TakeKeeper.snapshot`).
    """
    record = {
        "installation": config.installation.name,
        "time": time.time(),
        "state": state,
        "supervisor_pid": os.getpid(),
        "host": socket.gethostname(),
        "status_every_s": config.supervisor.status_every_s,
        "roles": roles,
        "rooms": {room.id: room_summary(roles, room.id) for room in config.rooms},
        "params": params,
        "write_errors": write_errors or {},
        "console_url": console_url,
        "disk": disk,
        "surfaces": surfaces or {},
        "takes": takes,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    try:
        temporary.write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")
        os.replace(temporary, path)
    except OSError:
        if not temporary.is_symlink():  # a link someone put there stays (a test's /dev/full)
            temporary.unlink(missing_ok=True)  # a full disk: no empty status.tmp left behind
        raise


def read_status(path: Path) -> dict[str, Any]:
    """The status file; InputError when there is none (the installation is not running), or
    when it is not a status file as the supervisor writes it (see :func:`status_shape_error`).
    """
    try:
        if (kind := special_kind(path, os.stat(path).st_mode)) is not None:
            raise InputError(f"cannot read status file {path}: it is {kind}, not a file; the "
                             "supervisor writes a file there: remove it")
        # O_NONBLOCK: a pipe put there since the stat must not block the reader
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(descriptor, "rb") as file:
            data = file.read(MAX_STATUS_BYTES + 1)
    except FileNotFoundError:
        raise InputError(f"no status file at {path}: is the installation running "
                         "(`art2mus run --config FILE`)?") from None
    except OSError as exc:
        raise InputError(f"cannot read status file {path}: {exc}") from None
    if len(data) > MAX_STATUS_BYTES:
        raise InputError(f"cannot read status file {path}: expected a status file of a few kB, "
                         f"got more than {MAX_STATUS_BYTES // (1024 * 1024)} MB")
    try:
        record = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, nested past reason
        raise InputError(f"cannot read status file {path}: {exc}") from None
    # written by the supervisor, but a file: a copy from elsewhere, a hand edit
    error = status_shape_error(record)
    if error is not None:
        raise InputError(f"cannot read status file {path}: {error}")
    return record


def status_shape_error(record: Any) -> str | None:
    """What in ``record`` does not fit a status record as :func:`write_status` writes it
    ("expected X, got Y"), or None where it fits.

    Checked: an object; ``time`` a finite number; ``roles`` a list of role rows (objects;
    ``name``, ``kind``, ``room``, ``state``, ``reason`` strings or absent; ``status`` an
    object or absent); ``rooms`` an object of room objects; ``params`` an object of
    objects; ``surfaces``, ``write_errors`` objects or absent. The values inside (numbers
    of a room, a parameter's value) are read with defaults where they do not fit.
    """
    def got(value: Any) -> str:
        text = json.dumps(value)
        return text if len(text) <= 60 else text[:57] + "..."

    if not isinstance(record, dict):
        return f"expected an object, got {got(record)}"
    if finite_number(record.get("time")) is None:
        return ("expected 'time' a finite number (seconds since 1970), got "
                f"{got(record.get('time'))}")
    roles = record.get("roles", [])
    if not isinstance(roles, list):
        return f"expected 'roles' a list of role rows, got {got(roles)}"
    for index, row in enumerate(roles):
        if not isinstance(row, dict):
            return f"expected roles[{index}] an object, got {got(row)}"
        for key in ("name", "kind", "room", "state", "reason"):
            if row.get(key) is not None and not isinstance(row[key], str):
                return f"expected roles[{index}].{key} a string, got {got(row[key])}"
        if row.get("status") is not None and not isinstance(row["status"], dict):
            return f"expected roles[{index}].status an object, got {got(row['status'])}"
    for key, what in (("rooms", "an object of room objects"),
                      ("params", "an object of parameter objects (room -> name -> value)")):
        value = record.get(key)
        if value is None:
            continue
        if not isinstance(value, dict):
            return f"expected '{key}' {what}, got {got(value)}"
        for name, inner in value.items():
            if not isinstance(inner, dict):
                return f"expected {key}[{name!r}] an object, got {got(inner)}"
    for key in ("surfaces", "write_errors"):
        if record.get(key) is not None and not isinstance(record[key], dict):
            return f"expected '{key}' an object, got {got(record[key])}"
    return None


def room_summary(roles: list[dict[str, Any]], room: str) -> dict[str, Any]:
    """What ``room`` sees and plays and how healthy it is, from the role rows.

    ``health`` is 1.0 when every role serving the room runs and the music
    plays, 0.5 when one is restarting, silent or audio_out is holding, and
    0.0 when audio_out is down, has faded to silence or lost its sound device
    (the room hears nothing, though the recording goes on).
    """
    def row(kind: str) -> dict[str, Any] | None:
        for r in roles:
            if r.get("kind") == kind and (kind == "engine" or r.get("room") == room):
                return r
        return None

    engine, capture, audio = row("engine"), row("capture"), row("audio_out")
    rooms = _heartbeat(engine or {}).get("rooms")
    engine_room = rooms.get(room) if isinstance(rooms, dict) else None
    engine_room = engine_room if isinstance(engine_room, dict) else {}
    seen, heard = _heartbeat(capture or {}), _heartbeat(audio or {})
    summary = {
        "artwork_id": str(seen.get("artwork_id", engine_room.get("artwork_id")) or ""),
        "confidence": _number(seen.get("confidence"), 0.0),
        "key": " ".join(str(engine_room.get(k, "")) for k in ("key", "mode")).strip(),
        "tempo": _number(engine_room.get("tempo_bpm"), 0.0),
        "level": _number(heard.get("level_dbfs"), -120.0),
        "playback": str(heard.get("state", "")),
    }
    present = [r for r in (engine, capture, audio) if r is not None]
    summary["recording"] = _recording(heard).get("state", "")
    output = heard.get("output")
    device_lost = isinstance(output, dict) and output.get("state") == "lost"
    if audio is not None and (audio.get("state") != "running" or heard.get("state") == "silent"
                              or device_lost):
        health = 0.0
    elif (any(r.get("state") != "running" for r in present) or heard.get("state") == "holding"
          or summary["recording"] == "failed"):
        health = 0.5
    else:
        health = 1.0
    summary["health"] = health
    return summary


def _recording(status: dict[str, Any]) -> dict[str, Any]:
    """audio_out's ``recording`` record ({"state": "ok"|"failed"|"off", "path", "error"})."""
    recording = status.get("recording")
    return recording if isinstance(recording, dict) else {}


def finite_number(value: Any) -> float | None:
    """A heartbeat's number as a finite float, else None (heartbeats and the status file
    are JSON that anything may have written: OSC out, OSCQuery and the console read them)."""
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value):
        return None
    return float(value)


def _number(value: Any, default: float) -> float:
    """:func:`finite_number`, ``default`` where there is none."""
    number = finite_number(value)
    return default if number is None else number


def _heartbeat(row: dict[str, Any]) -> dict[str, Any]:
    """A role row's last heartbeat status ({} when it sent none, or something else)."""
    status = row.get("status")
    return status if isinstance(status, dict) else {}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process, but it exists
    return True


def problems(record: dict[str, Any], stale_after_s: float,
             now: float | None = None) -> list[str]:
    """What is wrong with the installation according to its status record ([] = healthy)."""
    now = time.time() if now is None else now
    found = []
    age = now - _number(record.get("time"), 0.0)
    pid = record.get("supervisor_pid")
    if record.get("state") == "stopped":
        found.append(f"the installation stopped {age:.0f} s ago")
    elif age > stale_after_s:
        found.append(f"STALE: the status is {age:.1f} s old (more than {stale_after_s:g} s): "
                     "the supervisor is stuck or not running")
    elif (isinstance(pid, int) and record.get("host") == socket.gethostname()
          and not _pid_alive(pid)):
        found.append(f"the supervisor (pid {pid}) is not running")
    write_errors = record.get("write_errors")
    roles = record.get("roles")
    found += role_problems([r for r in roles if isinstance(r, dict)]
                           if isinstance(roles, list) else [],
                           write_errors if isinstance(write_errors, dict) else None)
    takes = record.get("takes")
    kept = takes.get("keep_free_bytes", 0) if isinstance(takes, dict) else 0
    removable = takes.get("removable_bytes") if isinstance(takes, dict) else None
    if (disk := disk_problem(record.get("disk"), kept, removable)) is not None:
        found.append(disk)
    return found


def role_problems(rows: list[dict[str, Any]],
                  supervisor_write_errors: dict[str, str] | None = None) -> list[str]:
    """What is wrong with the roles (their supervisor rows, heartbeat status inside) and the
    files that cannot be written: what ``art2mus status`` and the console's list both say.

    A failed role says what to do (the supervisor no longer restarts it); a role starting
    again after a restart is listed until it runs; a room that hears no music says so
    (:func:`room_problems`).
    """
    found = []
    for row in rows:
        state = row.get("state")
        if state in ("restarting", "silent", "failed"):
            why = f": {row['reason']}" if row.get("reason") else ""
            # failed: the supervisor gave up and will not try again by itself
            then = ("; fix the cause, then restart the installation (art2mus run) or its "
                    "service" if state == "failed" else "")
            found.append(f"{row.get('name')} is {state}{why}{then}")
        elif state == "starting" and row.get("restarts"):
            # restarted but no heartbeat yet: its room is still without it, so the line
            # stays until the role runs (at the first start, "starting" is no problem)
            after = f": {row['reason']}" if row.get("reason") else " a restart"
            found.append(f"{row.get('name')} is starting again after{after}")
        status = _heartbeat(row)
        recording = _recording(status)
        if recording.get("state") == "failed":
            found.append(f"{row.get('name')}: recording failed ({recording.get('path')}): "
                         f"{recording.get('error')}")
        output = status.get("output")
        if isinstance(output, dict) and output.get("state") == "lost":
            found.append(f"{row.get('name')}: sound device {output.get('device')} lost "
                         f"({output.get('error')}): the room is silent, the recording goes on; "
                         f"reopening it every {output.get('retry_s')} s")
        elif isinstance(output, dict) and output.get("state") == "waiting":
            # output = 'auto' found no card at start: fine for a room that only records,
            # but a room meant to be heard is silent, and a card plugged in is taken
            found.append(f"{row.get('name')}: waiting for a sound device ({output.get('error')}): "
                         f"the room plays to no speakers, the recording goes on; looking for "
                         f"one every minute at most")
        errors = status.get("write_errors")
        for target, error in (errors.items() if isinstance(errors, dict) else ()):
            found.append(f"{row.get('name')} cannot write {target}: {error}")
        handshakes = status.get("handshakes")  # CurveZMQ keys refused (ground.health)
        for message in (handshakes if isinstance(handshakes, list) else [])[:3]:
            found.append(f"{row.get('name')}: {str(message)[:300]}")
    for target, error in (supervisor_write_errors or {}).items():
        found.append(f"the supervisor cannot write {target}: {error}")
    for row in rows:
        status = _heartbeat(row)
        backend = backend_summary(status) if row.get("kind") == "engine" else None
        if backend is not None and not backend["healthy"]:
            found.append(f"{row.get('name')}: its {backend['kind']} backend is "
                         f"{backend['state']} ({backend['text']})")
    return found + room_problems(rows)


_CHECK_ENGINE = "is the engine running and reachable, and its keys right?"


def room_problems(rows: list[dict[str, Any]]) -> list[str]:
    """The rooms that hear no music, from the role rows (part of :func:`role_problems`).

    A room machine sees it in its audio_out's heartbeat: ``silent`` (it held the last
    music as long as it may and none came since), or ``starting`` more than
    :data:`ROOM_SILENT_GRACE_S` after it started (no first chunk; not while an engine of
    this installation is itself starting or warming up). The engine's machine sees it in
    the engine's per-room status: ``listening`` false (no audio_out subscribed to the
    room's chunks) once the engine's own grace has passed (its room ``health`` 0.0), and
    ``clock_age_s``: no PlaybackClock from the room for more than the grace. A role that
    is down is said by :func:`role_problems` already, not again here.
    """
    found = []
    engine = next((r for r in rows if r.get("kind") == "engine"), None)
    engine_status = _heartbeat(engine) if engine is not None else {}
    engine_waits = engine is not None and (engine.get("state") != "running"
                                           or engine_status.get("warming") is True)
    for row in rows:
        if row.get("kind") != "audio_out" or row.get("state") != "running":
            continue
        room = row.get("room")
        playback = _heartbeat(row).get("state")
        if playback == "silent":
            found.append(f"room {room} is silent: no music from the engine for longer than "
                         f"audio_out holds the last of it; {_CHECK_ENGINE}")
        elif playback == "starting":
            waited = finite_number(row.get("uptime_s"))
            if waited is not None and waited > ROOM_SILENT_GRACE_S and not engine_waits:
                found.append(f"room {room} is silent: no music from the engine for "
                             f"{waited:.0f} s (since its audio_out started); {_CHECK_ENGINE}")
    rooms = engine_status.get("rooms")
    if engine is None or engine.get("state") != "running" or not isinstance(rooms, dict):
        return found
    uptime = _number(engine.get("uptime_s"), 0.0)
    for room, entry in rooms.items():
        if not isinstance(entry, dict):
            continue
        health = finite_number(entry.get("health"))
        if entry.get("listening") is False:
            # the engine knows since when (its health); an engine that does not say: its uptime
            if health == 0.0 or (health is None and uptime > ROOM_SILENT_GRACE_S):
                found.append(f"no audio_out listens to room {room}: the engine makes its music "
                             "for nobody; is the room's audio_out running, its [network] chunks "
                             "the engine's address, and its keys right ([security])?")
        elif entry.get("listening") is True:
            age = finite_number(entry.get("clock_age_s"))
            if (age is not None and age > ROOM_SILENT_GRACE_S) or (
                    age is None and health == 0.5 and uptime > ROOM_SILENT_GRACE_S):
                since = f"for {age:.0f} s" if age is not None else "since the engine started"
                found.append(f"the engine has had no playback clock from room {room} {since}: "
                             "it makes music without knowing where the room's playhead is; "
                             "is the room's [network] clock the engine's address?")
    return found


def _length(value: Any) -> int:
    """How many items a heartbeat's list holds (0 where it is not a list)."""
    return len(value) if isinstance(value, list) else 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def backend_summary(status: dict[str, Any]) -> dict[str, Any] | None:
    """Where an engine's chunks are made, from its heartbeat ``status``, as a technician
    reads it: ``{"kind", "state", "healthy", "text"}``; None for the local generator.

    ``text`` names each replica with the rooms it serves, the chunks made in the engine
    instead (retries past their deadline, or everything while Ray is unreachable), and the
    hop's added latency.
    """
    backend = status.get("backend")
    if not isinstance(backend, dict) or backend.get("kind") in (None, "local"):
        return None
    state = str(backend.get("state") or "unknown")
    replicas = backend.get("replicas") if isinstance(backend.get("replicas"), dict) else {}
    parts = []
    if replicas:
        served = [f"{name} {_count(_length(r.get('rooms')), 'room')}"
                  for name, r in sorted(replicas.items()) if isinstance(r, dict)]
        parts.append(f"{_count(len(served), 'replica')}: " + ", ".join(served))
    local = backend.get("local_chunks")
    if isinstance(local, int) and local:
        parts.append(f"{local} chunks made here")
    hop = backend.get("hop_ms_p95")
    if isinstance(hop, (int, float)):
        parts.append(f"hop p95 {hop:g} ms")
    return {"kind": str(backend.get("kind")), "state": state, "healthy": state == "ok",
            "text": "; ".join(parts) or "no request yet"}


#: Columns of ``art2mus status`` when its output is not a terminal (a log, a pipe).
WIDE_COLUMNS = 160
#: What the detail column shows per role kind: (status key, label, unit).
_DETAIL: dict[str, tuple[tuple[str, str, str], ...]] = {
    "engine": (("generator", "", ""), ("chunk_ms", "chunk", " ms"), ("batch", "batch", ""),
               ("gpu_memory_mb", "GPU", " MB")),
    "capture": (("artwork_id", "sees", ""), ("confidence", "conf", ""), ("fps", "fps", ""),
                ("camera", "camera", ""), ("showing", "showing", ""),
                ("catalogue", "catalogue", ""), ("lens", "lens", "")),
    "audio_out": (("state", "", ""), ("level_dbfs", "level", " dBFS"),
                  ("loudness_lufs", "", " LUFS"), ("playhead_s", "at", " s"),
                  ("underflows", "underflows", "")),
}


def role_detail(kind: str, status: dict[str, Any]) -> str:
    """A role's heartbeat in a few words (what a technician scans for), not raw JSON."""
    parts = []
    for key, label, unit in _DETAIL.get(kind, ()):
        value = status.get(key)
        if value is None or value == "" or value == []:
            continue
        if isinstance(value, dict):  # capture's "showing": {"artwork_id", "until"}
            value = value.get("artwork_id", "")
        elif isinstance(value, list):
            value = "/".join(str(v) for v in value[-4:])
        elif isinstance(value, float):
            value = f"{value:g}"
        parts.append(f"{label} {value}{unit}".strip() if label else f"{value}{unit}")
    if kind == "engine" and isinstance(status.get("rooms"), dict):
        parts.append(f"serves {_count(len(status['rooms']), 'room')}")
    backend = backend_summary(status) if kind == "engine" else None
    if backend is not None:
        state = backend["state"] if backend["healthy"] else backend["state"].upper()
        parts.append(f"{backend['kind']} backend {state}")
    if status.get("truncated"):
        parts.append("(heartbeat cut: " + ", ".join(map(str, status["truncated"]))
                     + ")" if isinstance(status["truncated"], list) else "(heartbeat cut)")
    return ", ".join(parts)


def params_table(params: dict[str, dict[str, float]]) -> Any:
    """The live parameters set so far as a table: one row per room ("*" = every room)."""
    from rich.table import Table

    names = sorted({name for values in params.values() for name in values})
    table = Table(title="live parameters set (others at defaults)")
    table.add_column("room")
    for name in names:
        table.add_column(name, justify="right")
    for room in sorted(params, key=lambda r: (r != "*", r)):
        values = params[room]
        table.add_row("all rooms" if room == "*" else room,
                      *(_value(values[n]) if n in values else "-" for n in names))
    return table


def _value(value: Any) -> str:
    """A parameter's value as the table shows it (a number, or whatever a file said)."""
    number = finite_number(value)
    return f"{number:g}" if number is not None else str(value)


def print_status(record: dict[str, Any], stale_after_s: float, console: Any = None) -> list[str]:
    """Print the roles table and the rooms table (rich); return :func:`problems`."""
    from rich.console import Console
    from rich.table import Table

    # Piped into a log or a journal, rich would fold everything to 80 columns.
    console = console or Console(width=None if sys.stdout.isatty() else WIDE_COLUMNS)
    age = time.time() - _number(record.get("time"), 0.0)
    found = problems(record, stale_after_s)
    title = f"{record.get('installation', '?')} — status {age:.1f} s old"
    if record.get("state") == "stopped":
        title += " (STOPPED)"
    elif age > stale_after_s:
        title += " (STALE: the supervisor is not running or is stuck)"
    roles = Table(title=title)
    for column in ("role", "state", "pid", "up", "restarts", "hangs", "beat", "recording"):
        roles.add_column(column, no_wrap=column in ("role", "state"))
    roles.add_column("detail", overflow="fold")
    # read_status checked the shape; the values inside are read with defaults
    for r in record.get("roles") or []:
        status = _heartbeat(r)
        kind = r.get("kind")
        detail = role_detail(kind if isinstance(kind, str) else "", status)
        if r.get("state") in ("failed", "restarting", "stopped") and r.get("exit_code") is not None:
            detail = f"exit {r['exit_code']}" + (f": {r['reason']}" if r.get("reason") else "")
        recording = _recording(status)
        uptime, beat = finite_number(r.get("uptime_s")), finite_number(r.get("heartbeat_age_s"))
        roles.add_row(
            str(r.get("name") or "?"), str(r.get("state") or "?"), str(r.get("pid") or "-"),
            f"{uptime:.0f} s" if uptime is not None else "-",
            str(r.get("restarts", 0)), str(r.get("hangs", 0)),
            f"{beat:.1f} s" if beat is not None else "-",
            str(recording.get("state") or "-"),
            detail or "-",
        )
    console.print(roles)
    rooms = Table(title="rooms")
    for column in ("room", "artwork", "confidence", "key", "tempo", "level", "playback",
                   "health"):
        rooms.add_column(column)
    for room, s in (record.get("rooms") or {}).items():
        tempo, health = finite_number(s.get("tempo")), finite_number(s.get("health"))
        rooms.add_row(str(room), str(s.get("artwork_id") or "(empty)"),
                      f"{_number(s.get('confidence'), 0.0):.2f}", str(s.get("key") or "-"),
                      f"{tempo:.0f}" if tempo else "-",
                      f"{_number(s.get('level'), -120.0):.0f} dBFS",
                      str(s.get("playback") or "-"),
                      f"{health:.1f}" if health is not None else "-")
    console.print(rooms)
    if record.get("params"):
        console.print(params_table(record["params"]))
    surfaces = record.get("surfaces")
    for surface, state in (surfaces.items() if isinstance(surfaces, dict) else ()):
        console.print(f"{surface}: {state}", markup=False, highlight=False)
    for problem in found:
        console.print(f"PROBLEM: {problem}", markup=False, highlight=False)
    return found
