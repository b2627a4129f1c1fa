"""The console's state object: what every room, role and the engine are doing, every 0.5 s.

:class:`ConsoleState` is polled by the server's loop (:meth:`ConsoleState.tick`,
every :data:`TICK_S`): it reads the supervisor's role rows (each role's last
heartbeat, nothing re-read from disk), the control hub's values, one
``stat`` per room for the camera frame, and what the roles' event logs
gained (:class:`installation.report.EventFollower`, new lines only). From
them it builds the state object of GET /api/state (see
:mod:`installation.console.app`) once per tick, serialised once, shared by
every browser; and it keeps the pictures' histories: the last
:data:`SPECTROGRAM_COLUMNS` spectra of each room (audio_out's heartbeat
``spectrum``), the artwork changes of the last hour, and the last
:data:`MAX_EVENTS` events.

It lives in the server's event loop thread only: no lock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ground.params import PARAMETERS
from installation.config import InstallationConfig
from installation.control import ControlHub
from installation.report import EventFollower
from installation.status import (
    DiskWatch,
    backend_summary,
    disk_problem,
    finite_number,
    role_problems,
    room_summary,
)
from installation.takes import kept_free_bytes

log = logging.getLogger(__name__)

#: Seconds between two polls (and two SSE ``state`` messages).
TICK_S = 0.5
#: Spectra kept per room: a minute at one per heartbeat of 0.5 s.
SPECTROGRAM_COLUMNS = 120
#: Artwork changes older than this leave the timeline, seconds.
TIMELINE_S = 3600.0
#: Events kept for GET /api/events and new browsers.
MAX_EVENTS = 300
#: Event kinds that come every chunk or every few seconds per room (kept apart, see
#: :attr:`ConsoleState.routine`).
ROUTINE_KINDS = frozenset({"chunk", "chunk_received", "chunk_started", "stats", "capture_fps"})
#: How many routine events are kept beside the others.
ROUTINE_EVENTS = 60
#: How long an event waits for earlier ones from other roles' logs (event time, s).
EVENTS_LAG_S = 1.0
#: Most events read per tick (the rest wait for the next: a burst never stalls the loop).
EVENTS_PER_TICK = 500

Rows = Callable[[], list[dict[str, Any]]]
#: The files the supervisor cannot write right now: target -> the error.
WriteErrors = Callable[[], dict[str, str]]
#: (room, artwork id) -> (title, artist) from the room's catalogue, or None.
Titles = Callable[[str, str], tuple[str, str] | None]


def role_row(row: dict[str, Any]) -> dict[str, Any]:
    """A supervisor role row without its heartbeat status (ROLEROW of the contract)."""
    return {key: row.get(key) for key in ("name", "kind", "room", "state", "pid", "uptime_s",
                                          "restarts", "hangs", "heartbeat_age_s", "exit_code",
                                          "reason")}


#: What audio_out's supervisor state (not running) means for its room.
_AUDIO_DOWN = {"restarting": "silent: audio_out is restarting",
               "failed": "silent: audio_out failed",
               "stopped": "silent: audio_out stopped",
               "starting": "silent: audio_out is starting",
               "silent": "audio_out does not answer (no heartbeat): the room may be silent"}


def room_trouble(capture: dict[str, Any] | None, audio: dict[str, Any] | None,
                 engine: dict[str, Any] | None, health: float) -> dict[str, Any]:
    """What is wrong with one room, in the words its card shows.

    From the supervisor rows of the room's capture and audio_out (heartbeat inside) and
    of the engine, and the room's ``health`` (:func:`installation.status.room_summary`):
    ``{"tone": "" | "warn" | "bad", "lines": [{"text", "tone"}], "frame_stale": bool}``.
    A line is "bad" where the room hears nothing; ``frame_stale`` is True while capture
    or its camera is down, so the camera picture is its last frame, not a live one.
    """
    lines: list[dict[str, str]] = []

    def say(tone: str, text: str) -> None:
        lines.append({"tone": tone, "text": text})

    if audio is not None and audio.get("state") not in ("running", "done"):
        state = str(audio.get("state"))
        say("bad", _AUDIO_DOWN.get(state, f"silent: audio_out is {state}"))
    elif audio is not None:  # a role down keeps its last heartbeat: only a live one counts
        heard = _status(audio)
        output = heard.get("output")
        if isinstance(output, dict) and output.get("state") == "lost":
            device = f" {output['device']}" if output.get("device") else ""
            say("bad", f"silent: sound device{device} lost")
        elif isinstance(output, dict) and output.get("state") == "waiting":
            say("bad", "silent: sound device missing")
        if heard.get("state") == "silent":
            say("bad", "silent: the music faded out (no new music from the engine)")
        elif heard.get("state") == "holding":
            say("warn", "holding: no new music from the engine, a held sound plays")
        recording = heard.get("recording")
        if isinstance(recording, dict) and recording.get("state") == "failed":
            say("warn", f"recording failed: {recording.get('error') or 'unknown error'}")
    if engine is not None and engine.get("state") not in ("running", "done"):
        say("warn", f"engine {engine.get('state')}: no new music")
    frame_stale = False
    if capture is not None and capture.get("state") not in ("running", "done"):
        say("warn", f"capture {capture.get('state')}: showing its last frame")
        frame_stale = True
    elif (camera := _status(capture).get("camera")) not in (None, "ok"):
        say("warn", f"camera {camera}: showing its last frame")
        frame_stale = True
    tones = {line["tone"] for line in lines}
    tone = ("bad" if health <= 0.0 or "bad" in tones
            else "warn" if health < 1.0 or tones else "")
    return {"tone": tone, "lines": lines, "frame_stale": frame_stale}


def _status(row: dict[str, Any] | None) -> dict[str, Any]:
    """A role row's heartbeat status ({} for none, or for something else)."""
    status = (row or {}).get("status")
    return status if isinstance(status, dict) else {}


def params_table() -> list[dict[str, Any]]:
    """The live parameters for the page's controls."""
    return [{"name": p.name, "role": p.role, "low": p.low, "high": p.high, "default": p.default,
             "kind": p.kind, "doc": p.doc}
            | ({"choices": [[p.low + i, name] for i, name in enumerate(p.choices)]}
               if p.choices else {})
            for p in PARAMETERS.values()]


class ConsoleState:
    """Builds the console's state object from the supervisor's rows and the control hub."""

    def __init__(self, config: InstallationConfig, hub: ControlHub, rows: Rows,
                 output_dir: Path, *, editable: bool, titles: Titles | None = None,
                 clock: Callable[[], float] = time.time,
                 events: EventFollower | None = None,
                 write_errors: WriteErrors | None = None) -> None:
        self.config = config
        self.hub = hub
        self.rows = rows
        self.output_dir = output_dir
        self.editable = editable
        self.titles = titles or (lambda room, artwork_id: None)
        self.write_errors = write_errors or dict
        self.disk = DiskWatch(output_dir)
        self.clock = clock
        self.rooms = [room.id for room in config.rooms]
        self.follower = events if events is not None else EventFollower(
            output_dir / "events", from_start=False, lag_s=EVENTS_LAG_S)
        self.spectrogram: dict[str, deque[list[float]]] = {
            room: deque(maxlen=SPECTROGRAM_COLUMNS) for room in self.rooms}
        self.timeline: dict[str, deque[dict[str, Any]]] = {room: deque() for room in self.rooms}
        self.events: deque[tuple[int, dict[str, Any]]] = deque(maxlen=MAX_EVENTS)
        # per-chunk records come several a second per room: kept apart, in a short ring,
        # so they never push restarts and artwork changes out of the technician's view
        self.routine: deque[tuple[int, dict[str, Any]]] = deque(maxlen=ROUTINE_EVENTS)
        self.event_seq = 0
        self.ticks = 0
        self.state: dict[str, Any] = {}
        self.state_json = "{}"
        self._last_spectrum: dict[str, object] = {}
        self._muted: dict[str, dict[str, float]] = {}  # room -> volumes to restore on unmute
        self._ticked = asyncio.Event()
        self._failing = False
        self._table = params_table()

    # -- polling ----------------------------------------------------------------

    def tick(self) -> None:
        """Poll once: rebuild the state object and take the new events."""
        now = self.clock()
        try:
            self.state = self._build(now)
            self.state_json = json.dumps(self.state, separators=(",", ":"), default=str)
            self._take_events(now)
            if self._failing:
                self._failing = False
                log.warning("console: the state poll works again")
        except Exception:  # noqa: BLE001 - the console must not die of one odd heartbeat
            if not self._failing:
                self._failing = True
                log.exception("console: the state poll failed; retrying every %.1f s", TICK_S)
        self.ticks += 1
        ticked, self._ticked = self._ticked, asyncio.Event()
        ticked.set()

    async def next_tick(self) -> None:
        """Wait for the next :meth:`tick` (what the SSE stream sends between)."""
        await self._ticked.wait()

    def _take_events(self, now: float) -> None:
        for event in self.follower.poll(now, max_events=EVENTS_PER_TICK):
            self.event_seq += 1
            ring = self.routine if event.get("kind") in ROUTINE_KINDS else self.events
            ring.append((self.event_seq, event))

    def _kept(self) -> list[tuple[int, dict[str, Any]]]:
        """Both rings merged, oldest first."""
        return sorted([*self.events, *self.routine], key=lambda item: item[0])

    def events_since(self, seq: int) -> list[tuple[int, dict[str, Any]]]:
        """The kept events after sequence number ``seq``, oldest first."""
        return [(n, event) for n, event in self._kept() if n > seq]

    def recent_events(self, room: str | None = None, role: str | None = None,
                      limit: int = MAX_EVENTS) -> list[dict[str, Any]]:
        """The last ``limit`` kept events, newest last, of ``room`` and ``role`` if given."""
        found = [event for _, event in self._kept() if (not room or event.get("room") == room)
                 and (not role or event.get("role") == role)]
        return found[-limit:] if limit > 0 else []

    # -- the state object -------------------------------------------------------

    def _build(self, now: float) -> dict[str, Any]:
        rows = self.rows()
        engine_row = next((r for r in rows if r.get("kind") == "engine"), None)
        engine_status = (engine_row or {}).get("status") or {}
        engine_rooms = engine_status.get("rooms") or {}
        rooms = {room: self._room(room, rows, engine_rooms.get(room) or {}, now)
                 for room in self.rooms}
        rtfs = [v for r in engine_rooms.values() if (v := finite_number((r or {}).get("rtf")))]
        effective = {room: {name: self.hub.current(name, room) for name in PARAMETERS}
                     for room in self.rooms}
        return {
            "installation": self.config.installation.name,
            "time": now,
            # how often a state comes: the page says its view is out of date after a few
            "tick_s": TICK_S,
            "console": {"allow_edit": self.config.console.allow_edit,
                        "editable": self.editable},
            "params_table": self._table,
            "params": self.hub.snapshot(),
            "effective": effective,
            "muted": {room: self.is_muted(room) for room in ["*", *self.rooms]},
            "engine": {
                "state": (engine_row or {}).get("state", "absent"),
                "restarts": (engine_row or {}).get("restarts", 0),
                "reason": (engine_row or {}).get("reason") or "",
                "generator": engine_status.get("generator", self.config.engine.generator),
                "chunk_ms": finite_number(engine_status.get("chunk_ms")),
                "rtf": min(rtfs) if rtfs else None,  # the slowest room: what limits us
                "rooms_served": len(engine_rooms),
                "batch": engine_status.get("batch") or [],
                "gpu_memory_mb": finite_number(engine_status.get("gpu_memory_mb")),
                "backend": backend_summary(engine_status),  # None: the local generator
            },
            "rooms": rooms,
            "roles": [role_row(r) for r in rows],
            # what art2mus status says is wrong: a role down, a recording or a file that
            # cannot be written (a full disk), a backend gone, a disk soon full
            "problems": role_problems(rows, self.write_errors()) + [
                line for line in (disk_problem(self.disk.look(),
                                               kept_free_bytes(self.config)),) if line] + [
                # a log that is a link to /dev/zero, a folder: its events never reach this page
                f"event log {path} is {kind}, not a file: not followed (this page misses its "
                f"events); remove it" for path, kind in self.follower.skipped.items()],
            "timeline": {room: list(changes) for room, changes in self.timeline.items()},
        }

    def _room(self, room: str, rows: list[dict[str, Any]], engine: dict[str, Any],
              now: float) -> dict[str, Any]:
        capture = next((r for r in rows if r.get("kind") == "capture" and r.get("room") == room),
                       None)
        audio = next((r for r in rows if r.get("kind") == "audio_out" and r.get("room") == room),
                     None)
        seen, heard = _status(capture), _status(audio)
        summary = room_summary(rows, room)
        artwork_id = summary["artwork_id"]
        title, artist = seen.get("title") or "", seen.get("artist") or ""
        if artwork_id and not title:
            title, artist = self.titles(room, artwork_id) or ("", "")
        self._note_artwork(room, artwork_id, title, now)
        spectrum = heard.get("spectrum")
        if not isinstance(spectrum, list):
            spectrum = None
        elif heard is not self._last_spectrum.get(room):  # a new heartbeat: one more column
            self._last_spectrum[room] = heard
            self.spectrogram[room].append(spectrum)
        recording = heard.get("recording")
        frame = self.output_dir / "console" / f"{room}.jpg"
        try:
            written = frame.stat().st_mtime_ns
        except OSError:
            frame_url, frame_time = None, None
        else:
            frame_url, frame_time = f"/api/rooms/{room}/frame.jpg?t={written}", written / 1e9
        engine_row = next((r for r in rows if r.get("kind") == "engine"), None)
        showing = seen.get("showing")
        return {
            "artwork_id": artwork_id, "title": title, "artist": artist,
            "confidence": summary["confidence"],
            "key": engine.get("key"), "mode": engine.get("mode"),
            "tempo": finite_number(engine.get("tempo_bpm")),
            "instruments": engine.get("instruments") or [],
            "level_dbfs": finite_number(heard.get("level_dbfs")),
            "peak_dbfs": finite_number(heard.get("peak_dbfs")),
            "loudness_lufs": finite_number(heard.get("loudness_lufs")),
            "playback": heard.get("state", ""),
            "playhead_s": finite_number(heard.get("playhead_s")),
            "lead_s": finite_number(engine.get("lead_s")),
            "underflows": heard.get("underflows", 0),
            "recording": recording.get("state", "") if isinstance(recording, dict) else "",
            "health": summary["health"],
            "trouble": room_trouble(capture, audio, engine_row, summary["health"]),
            "frame": frame_url,
            "frame_time": frame_time,  # when capture last wrote the picture (epoch s)
            "spectrum": spectrum,
            "showing": showing if isinstance(showing, dict) else None,
            "catalogue": str(seen.get("catalogue") or ""),  # capture's: works, or what is wrong
            "lens": str(seen.get("lens") or ""),  # capture's: the lens taken out, or why not
            "roles": {kind: role_row(row) for kind, row in (("capture", capture),
                                                            ("audio_out", audio)) if row},
        }

    def _note_artwork(self, room: str, artwork_id: str, title: str, now: float) -> None:
        """Add an artwork change to the room's timeline; forget what is over an hour old."""
        changes = self.timeline[room]
        if not changes or changes[-1]["artwork_id"] != artwork_id:
            changes.append({"t": now, "artwork_id": artwork_id, "title": title})
        elif title and not changes[-1]["title"]:
            changes[-1]["title"] = title
        while len(changes) > 1 and changes[1]["t"] < now - TIMELINE_S:
            changes.popleft()  # the oldest kept change says what played at the hour's start

    def full(self) -> dict[str, Any]:
        """The state object with the spectrogram history (GET /api/state, the first paint)."""
        return self.state | {"spectrogram": {room: list(columns)
                                             for room, columns in self.spectrogram.items()}}

    # -- mute -------------------------------------------------------------------

    def is_muted(self, room: str) -> bool:
        """True while ``room`` ("*" = all) is muted from the console and still at volume 0."""
        return room in self._muted and self.hub.current("volume", room) == 0.0

    def mute(self, room: str, muted: bool) -> dict[str, Any]:
        """Mute (volume 0, remembering the volumes) or unmute (restore them) ``room``.

        ValueError naming the room when it is unknown.
        """
        if room != "*" and room not in self.rooms:
            raise ValueError(f"unknown room {room!r}; rooms are {self.rooms}")
        if muted:
            if room not in self._muted:
                keep = {room: self.hub.current("volume", room)}
                if room == "*":  # a global set overrides every room's volume, own or
                    # configured: each room gets its own back on unmute
                    keep |= {r: self.hub.current("volume", r) for r in self.rooms}
                self._muted[room] = keep
            self.hub.set("volume", 0.0, room, source="console")
        else:
            restore = self._muted.pop(room, None)
            if restore is None:  # not muted from here: back to the current, or the config's
                current = self.hub.current("volume", room)
                configured = self.config.room(self.rooms[0] if room == "*" else room)
                restore = {room: current or configured.audio_out.volume}
            for target in sorted(restore, key=lambda r: r != "*"):  # the global one first
                self.hub.set("volume", restore[target], target, source="console")
        return {"room": room, "muted": muted, "volume": self.hub.current("volume", room)}
