"""The control hub: live parameter values from every surface, sent to the roles as Control.

MIDI in, OSC in and config reload call :meth:`ControlHub.set` (from their own
threads); the hub refuses anything but a finite number (ValueError naming the
parameter, its range and the value: the surface counts it as refused), clamps
the value, remembers it per room and queues a ``Control(command="set")`` for
the role that applies it. A refused value is never stored, so it is never
replayed to a restarted role. The supervisor's
loop (the only thread that touches the control PUB socket, ZeroMQ sockets
not being thread-safe) sends what is queued.

Because a PUB socket forgets, a role that (re)starts would miss earlier
settings: the supervisor calls :meth:`replay` when a role's first heartbeat
arrives, and every ``resend_every_s``. Roles apply a set idempotently (a value
equal to the current one changes nothing), so replays are harmless.

:class:`RefusalLog` is how a surface (OSC in, MIDI in) counts junk by reason
and says so in one summary line per interval, never one line per packet.

**Echo**: :meth:`ControlHub.subscribe` registers a listener called (on the
setting thread, after the value is stored) with a :class:`ParameterChange`
for every value that changed, whatever set it; OSC out and MIDI feedback use
it so TouchOSC faders and motorised controllers follow. ``origin`` names the
exact control or sender that caused a change, so an echo is never sent back
to it. A set that leaves the stored value as it was (an echo coming back
through another installation, an OSC router, a ``send`` target that loops
to our own ``listen``) is no change: nobody hears of it and no Control is
queued, so such a loop ends after one round instead of ping-ponging one
message forever. Triggers (``next_variation``) are the exception: each set
is a step, so each one is stored, sent and heard.

**Scenes**: :meth:`ControlHub.recall_scene` sets a named set of live
parameters from ``[[control.scenes]]`` (MIDI program change recalls one).

**A flood of changes** (a controller sending 10,000 valid values a second)
must not flood the supervisor's event log: it rotated every 20 s, and the
whole event history (restarts, hangs) was gone in two minutes, while the run
report, which follows the logs and holds the last 30 s of their events, grew
by some 200 MB. So ``control_set`` and ``scene_recalled`` events are written
by an :class:`EventCoalescer`: the first change of a parameter (per room and
source) at once, later ones at most once per :data:`EVENT_EVERY_S` with the
last value and ``changes``, how many changes the event stands for. And a
queued ``set`` that a newer one for the same role, room and parameter makes
stale is replaced by it (a trigger's every step is kept): what waits for the
supervisor's loop is bounded by the parameters, not by the rate they move.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from ground.events import EventSink, null_sink
from ground.params import PARAMETERS, SETTINGS, live_value
from ground.protocol import PROTOCOL_VERSION, SYNC_KEYS, Control, seconds_of_day
from installation.config import InstallationConfig, SceneConfig

log = logging.getLogger(__name__)

#: Config-level settings the engine also applies live (hot reload), beyond PARAMETERS,
#: with their ranges (see :data:`ground.params.SETTINGS`).
ENGINE_SETTINGS = SETTINGS


@dataclass(frozen=True)
class ParameterChange:
    """One value the hub stored: for ``room`` ("*" = all), by ``source``.

    ``source`` is the surface ("osc", "midi", "console", "reload", "scene",
    "api"); ``origin`` the exact control or sender within it ("udp:HOST:PORT",
    "midi:cc:CH:CC", "" when unknown), which an echo skips.
    """

    room: str
    name: str
    value: float
    source: str
    origin: str = ""


#: What :meth:`ControlHub.subscribe` takes.
ParameterListener = Callable[[ParameterChange], None]

#: Seconds between two events of one coalesced key (:class:`EventCoalescer`).
EVENT_EVERY_S = 1.0


@dataclass
class _Said:
    at: float  # clock() when this key's last event was written
    unsaid: int = 0  # changes since, not written yet
    fields: dict[str, Any] = field(default_factory=dict)  # the latest of them


class EventCoalescer:
    """Writes ``kind`` events at most once per ``every_s`` for each key.

    The first :meth:`note` of a key (or the first after ``every_s`` of quiet) is
    written at once. Later ones within ``every_s`` are counted; the next event of
    the key, written once ``every_s`` has passed (at the next note of it or at
    :meth:`flush_due`, which the supervisor's loop calls through
    :meth:`ControlHub.pending`), carries the latest fields and ``changes``, how
    many notes it stands for (present only when more than one). Memory: one
    entry per key that moved in the last ``every_s``. Thread-safe; ``clock`` is
    the test seam.
    """

    def __init__(self, log_event: EventSink, kind: str, every_s: float = EVENT_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log_event = log_event
        self.kind = kind
        self.every_s = every_s
        self.clock = clock
        self.noted = 0
        self.written = 0
        self._said: dict[Hashable, _Said] = {}
        self._lock = threading.Lock()

    def note(self, key: Hashable, **fields: Any) -> None:
        """One more event of ``key``: written now, or counted into the key's next one."""
        now = self.clock()
        with self._lock:
            self.noted += 1
            said = self._said.get(key)
            if said is None or (said.unsaid == 0 and now - said.at >= self.every_s):
                self._said[key] = _Said(now)
                due: list[tuple[dict[str, Any], int]] = [(fields, 1)]
            else:
                said.unsaid += 1
                said.fields = fields
                due = self._take(said, now) if now - said.at >= self.every_s else []
        self._write(due)

    def flush_due(self, force: bool = False) -> None:
        """Write every key's counted notes whose ``every_s`` has passed (all of them with
        ``force``: at shutdown); forget the keys quiet for that long."""
        now = self.clock()
        with self._lock:
            due = []
            for key, said in list(self._said.items()):
                if now - said.at < self.every_s and not force:
                    continue
                if said.unsaid:
                    due += self._take(said, now)
                else:
                    del self._said[key]
        self._write(due)

    @staticmethod
    def _take(said: _Said, now: float) -> list[tuple[dict[str, Any], int]]:
        taken = [(said.fields, said.unsaid)]
        said.at, said.unsaid, said.fields = now, 0, {}
        return taken

    def _write(self, due: list[tuple[dict[str, Any], int]]) -> None:
        for fields, count in due:
            self.written += 1
            self.log_event(self.kind, **fields, **({"changes": count} if count > 1 else {}))


class ControlHub:
    """Current parameter values per room, and the Control messages that carry them."""

    def __init__(self, config: InstallationConfig, log_event: EventSink = null_sink,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """``clock`` paces the coalesced events (:class:`EventCoalescer`; a test's fake)."""
        self.config = config
        self.log_event = log_event
        # what the supervisor's loop sends next, oldest first; a set's key is its role, room
        # and parameter (a newer one replaces it), any other message's a number of its own
        self._outbox: dict[Hashable, Control] = {}
        self._unique = itertools.count()
        self._set_events = EventCoalescer(self._log, "control_set", clock=clock)
        self._scene_events = EventCoalescer(self._log, "scene_recalled", clock=clock)
        self._wake = threading.Event()
        self._lock = threading.Lock()
        # (role, room, name) -> value; room "*" is every room
        self._values: dict[tuple[str, str, str], float] = {}
        self._listeners: list[ParameterListener] = []

    def _log(self, kind: str, **fields: Any) -> None:
        self.log_event(kind, **fields)  # whatever log_event is by then

    # -- setting ------------------------------------------------------------

    def set(self, name: str, value: object, room: str = "*", source: str = "api",
            origin: str = "") -> float:
        """Set a parameter (or an engine setting) for ``room`` ("*" = all); the value applied.

        ValueError (nothing stored or sent) for an unknown name or room, and for
        a value that is not a finite number; a finite one is clamped to the range.
        Every listener (:meth:`subscribe`) then hears of it, ``origin`` included.
        A value equal to the one stored for ``room`` (a global one that would
        also clear no room's own) changes nothing: it is neither sent nor heard
        (see the module docstring: it ends echo loops). A trigger is the
        exception: every set is a step.
        """
        param = live_value(name)
        rooms = [r.id for r in self.config.rooms]
        if room != "*" and room not in rooms:
            raise ValueError(f"unknown room {room!r}; rooms are {rooms}")
        # A lead past what the room's audio_out buffer holds has its far chunks dropped
        # there as late, and the room runs dry: the range's 60 s is not every room's.
        high = self.config.lead_s_limit(room) if param.name == "lead_s" else None
        name, role, applied = param.name, param.role, param.clamp(value, high=high)
        with self._lock:
            # a global set overrides earlier per-room values of the same parameter
            overridden = ([k for k in self._values if k[0] == role and k[2] == name]
                          if room == "*" else [])
            key = (role, room, name)
            if (param.kind != "trigger" and self._values.get(key) == applied
                    and overridden in ([], [key])):
                return applied
            for stale in overridden:
                del self._values[stale]
            self._values[key] = applied
        # a trigger's every set is a step: never replaced by the next
        self._queue(self._message(role, room, {name: applied}),
                    None if param.kind == "trigger" else ("set", role, room, name))
        self._set_events.note((name, room, source), name=name, value=applied, room=room,
                              source=source)
        self._notify(ParameterChange(room, name, applied, source, origin))
        return applied

    def trigger(self, name: str, room: str = "*", source: str = "api", origin: str = "") -> float:
        """Step a trigger parameter (``next_variation``) once."""
        return self.set(name, self.current(name, room) + 1.0, room, source, origin)

    def toggle(self, name: str, room: str = "*", source: str = "api", origin: str = "") -> float:
        """Flip a toggle parameter (``freeze``)."""
        return self.set(name, 0.0 if self.current(name, room) >= 0.5 else 1.0, room, source,
                        origin)

    def recall_scene(self, scene: SceneConfig, source: str = "api", origin: str = "") -> int:
        """Set every parameter of ``scene``, then its key/mode/tempo overrides (every
        room); how many values were set."""
        from ground.params import parse_target

        count = 0
        for target, value in scene.params.items():
            param, room = parse_target(target)
            self.set(param.name, value, room, source, origin)
            count += 1
        overrides = scene.overrides()
        for name, value in overrides.items():
            self.set(name, value, "*", source, origin)
        self._scene_events.note((scene.name, source), scene=scene.name,
                                program=scene.program, parameters=count,
                                overrides=overrides, source=source)
        return count + len(overrides)

    def scene(self, name_or_program: str | int) -> SceneConfig:
        """The configured scene with this name or program number; ValueError lists them."""
        for scene in self.config.control.scenes:
            if name_or_program in (scene.name, scene.program):
                return scene
        known = [f"{s.name} (program {s.program})" for s in self.config.control.scenes]
        raise ValueError(f"unknown scene {name_or_program!r}; control.scenes has "
                         f"{known or 'none'}")

    # -- listening ----------------------------------------------------------

    def subscribe(self, listener: ParameterListener) -> Callable[[], None]:
        """Call ``listener`` after every value set; returns the call that unsubscribes it."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def _notify(self, change: ParameterChange) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener(change)
            except Exception as error:  # noqa: BLE001 - an echo must never refuse a knob
                self.log_event("control_echo_failed", name=change.name, error=repr(error)[:200])
                log.warning("parameter echo failed for %s: %r", change.name, error)

    def command(self, target: str, room: str, params: dict[str, Any],
                source: str = "api") -> Control:
        """Send one Control ``set`` to ``target`` in ``room`` once (the console's "show this
        work"); unlike :meth:`set` it is not stored, so never replayed to a restarted role.

        ValueError for an unknown room (a one-off order for every room makes no sense here).
        """
        rooms = [r.id for r in self.config.rooms]
        if room not in rooms:
            raise ValueError(f"unknown room {room!r}; rooms are {rooms}")
        message = self._message(target, room, dict(params))
        self._queue(message)
        self.log_event("control_command", target=target, room=room, params=params,
                       source=source)
        return message

    def sync(self, downbeat: float, beats: int, bpm: float) -> Control:
        """Send every room the outside bar grid of a tempo sync (Link, MIDI clock).

        ``downbeat`` is the ``time.time()`` of one of its bar lines, ``beats``
        its beats per bar (0: stop following a grid), ``bpm`` its tempo. Like
        :meth:`command` it is neither stored nor echoed: the sync source sends
        it again every few seconds (a restarted engine picks it up) and on
        every change. The engine checks the values (:meth:`RoomSession.set_sync
        <engine.streaming.RoomSession.set_sync>`).
        """
        values = (round(seconds_of_day(downbeat), 6), float(beats), float(bpm))
        message = self._message("engine", "*", dict(zip(SYNC_KEYS, values, strict=True)))
        self._queue(message)
        return message

    # -- reading ------------------------------------------------------------

    def current(self, name: str, room: str = "*") -> float:
        """The value in force for ``room``: its own, else the global one, else the default."""
        param = live_value(name)
        if name in SETTINGS:
            role, default = "engine", float(getattr(self.config.engine, name))
        else:
            name, role, default = param.name, param.role, self._default(param.name, room)
        with self._lock:
            for key in ((role, room, name), (role, "*", name)):
                if key in self._values:
                    return self._values[key]
        return default

    def _default(self, name: str, room: str) -> float:
        # The config's own values are the neutral point of knobs tied to config fields.
        if name == "transition_s":
            return self.config.engine.transition_crossfade_s
        if name == "volume":
            rooms = [r for r in self.config.rooms if r.id == room] or list(self.config.rooms)
            return rooms[0].audio_out.volume
        return PARAMETERS[name].default

    def snapshot(self) -> dict[str, dict[str, float]]:
        """Every value set so far, by room then name (for the status file)."""
        with self._lock:
            out: dict[str, dict[str, float]] = {}
            for (_, room, name), value in sorted(self._values.items()):
                out.setdefault(room, {})[name] = value
            return out

    # -- sending ------------------------------------------------------------

    def replay(self, role: str | None = None) -> int:
        """Queue every value set so far (for ``role`` only, if given); how many messages."""
        with self._lock:
            grouped: dict[tuple[str, str], dict[str, float | str]] = {}
            for (r, room, name), value in self._values.items():
                if role is None or r == role:
                    grouped.setdefault((r, room), {})[name] = value
        # global values first, so a room's own value wins when both arrive
        for (r, room), params in sorted(grouped.items(), key=lambda kv: kv[0][1] != "*"):
            self._queue(self._message(r, room, params))
        return len(grouped)

    def _queue(self, message: Control, key: Hashable | None = None) -> None:
        """Queue ``message``; one with the ``key`` of a message still queued replaces it
        (and goes last, where the newer one belongs)."""
        with self._lock:
            if key is None:
                key = next(self._unique)
            else:
                self._outbox.pop(key, None)
            self._outbox[key] = message
        self._wake.set()

    def pending(self) -> list[Control]:
        """Take every queued message, oldest first (supervisor loop); and write the
        coalesced events that are due (:class:`EventCoalescer`)."""
        with self._lock:
            messages = list(self._outbox.values())
            self._outbox.clear()
            self._wake.clear()
        self.flush_events()
        return messages

    def flush_events(self, force: bool = False) -> None:
        """Write the coalesced ``control_set`` and ``scene_recalled`` events that are due
        (every one with ``force``: when the installation stops)."""
        self._set_events.flush_due(force)
        self._scene_events.flush_due(force)

    def wait(self, timeout_s: float) -> None:
        """Block until something is queued or ``timeout_s`` passes (the supervisor's idle wait)."""
        self._wake.wait(timeout_s)

    @staticmethod
    def _message(role: str, room: str, params: dict[str, Any]) -> Control:
        return Control(v=PROTOCOL_VERSION, room=room, target=role, command="set", params=params)


#: Seconds between two summary lines of a :class:`RefusalLog`.
SUMMARY_EVERY_S = 10.0


class RefusalLog:
    """Counts what a control surface received and refused, by reason; logs a summary.

    Junk from the network (unparseable packets, unknown addresses, NaN...)
    must not flood the logs: the first refusal of each reason is written as
    an event with its details (so an operator sees an example), later ones
    only counted, and at most one summary line per ``every_s`` goes to the
    event log and the Python log ("osc: refused 9999 in 10 s (bad-value 3,
    unparseable 9996)"). ``received``, ``refused`` and ``by_reason`` are
    running totals a supervisor can export. Thread-safe.
    """

    def __init__(self, surface: str, log_event: EventSink = null_sink,
                 every_s: float = SUMMARY_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.surface = surface
        self.log_event = log_event
        self.every_s = every_s
        self.received = 0
        self.refused = 0
        self.by_reason: Counter[str] = Counter()
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: Counter[str] = Counter()  # refused since the last summary
        self._since = clock()

    def accept(self) -> None:
        """Count one message received (refused or not)."""
        with self._lock:
            self.received += 1

    def refuse(self, reason: str, **details: Any) -> None:
        """Count one refused message; an example of each reason is logged once."""
        with self._lock:
            self.refused += 1
            first = self.by_reason[reason] == 0
            self.by_reason[reason] += 1
            self._pending[reason] += 1
        if first:
            self.log_event(f"{self.surface}_refused", reason=reason, first_of_reason=True,
                           **details)
        self.flush_due()

    def flush_due(self) -> None:
        """Write the summary if ``every_s`` has passed since the last one and any were refused."""
        if self._clock() - self._since >= self.every_s:
            self.flush()

    def flush(self) -> None:
        """Write the summary of refusals since the last one now (nothing if none)."""
        with self._lock:
            pending, self._pending = self._pending, Counter()
            began, self._since = self._since, self._clock()
        if not pending:
            return
        count = sum(pending.values())
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(pending.items()))
        self.log_event(f"{self.surface}_refused_summary", refused=count, by_reason=dict(pending),
                       seconds=round(self._since - began, 3), total_refused=self.refused,
                       total_received=self.received)
        logging.getLogger(f"installation.{self.surface}").warning(
            "%s: refused %d in %.0f s (%s); %d refused of %d received so far",
            self.surface, count, self._since - began, reasons, self.refused, self.received)
