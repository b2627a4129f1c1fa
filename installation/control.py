"""The control hub: live parameter values from every surface, sent to the roles as Control.

MIDI in, OSC in and config reload call :meth:`ControlHub.set` (from their own
threads); the hub clamps the value, remembers it per room and queues a
``Control(command="set")`` for the role that applies it. The supervisor's
loop (the only thread that touches the control PUB socket, ZeroMQ sockets
not being thread-safe) sends what is queued.

Because a PUB socket forgets, a role that (re)starts would miss earlier
settings: the supervisor calls :meth:`replay` when a role's first heartbeat
arrives, and every ``resend_every_s``. Roles apply a set idempotently (a value
equal to the current one changes nothing), so replays are harmless.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from installation.config import InstallationConfig
from installation.events import EventSink, null_sink
from installation.params import PARAMETERS, parameter
from installation.protocol import PROTOCOL_VERSION, Control

#: Config-level settings the engine also applies live (hot reload), beyond PARAMETERS.
ENGINE_SETTINGS = ("lead_s", "transition_margin_s", "view_timeout_s")


class ControlHub:
    """Current parameter values per room, and the Control messages that carry them."""

    def __init__(self, config: InstallationConfig, log_event: EventSink = null_sink) -> None:
        self.config = config
        self.log_event = log_event
        self._outbox: deque[Control] = deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        # (role, room, name) -> value; room "*" is every room
        self._values: dict[tuple[str, str, str], float] = {}

    # -- setting ------------------------------------------------------------

    def set(self, name: str, value: float, room: str = "*", source: str = "api") -> float:
        """Set a parameter (or an engine setting) for ``room`` ("*" = all); the value applied."""
        if name in ENGINE_SETTINGS:
            role, applied = "engine", float(value)
        else:
            param = parameter(name)
            name, role, applied = param.name, param.role, param.clamp(value)
        rooms = [r.id for r in self.config.rooms]
        if room != "*" and room not in rooms:
            raise ValueError(f"unknown room {room!r}; rooms are {rooms}")
        with self._lock:
            if room == "*":
                # a global set overrides earlier per-room values of the same parameter
                for key in [k for k in self._values if k[0] == role and k[2] == name]:
                    del self._values[key]
            self._values[(role, room, name)] = applied
        self._queue(self._message(role, room, {name: applied}))
        self.log_event("control_set", name=name, value=applied, room=room, source=source)
        return applied

    def trigger(self, name: str, room: str = "*", source: str = "api") -> float:
        """Step a trigger parameter (``next_variation``) once."""
        return self.set(name, self.current(name, room) + 1.0, room, source)

    def toggle(self, name: str, room: str = "*", source: str = "api") -> float:
        """Flip a toggle parameter (``freeze``)."""
        return self.set(name, 0.0 if self.current(name, room) >= 0.5 else 1.0, room, source)

    # -- reading ------------------------------------------------------------

    def current(self, name: str, room: str = "*") -> float:
        """The value in force for ``room``: its own, else the global one, else the default."""
        if name in ENGINE_SETTINGS:
            role, default = "engine", float(getattr(self.config.engine, name))
        else:
            param = parameter(name)
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

    def _queue(self, message: Control) -> None:
        with self._lock:
            self._outbox.append(message)
        self._wake.set()

    def pending(self) -> list[Control]:
        """Take every queued message, oldest first (supervisor loop)."""
        with self._lock:
            messages = list(self._outbox)
            self._outbox.clear()
            self._wake.clear()
        return messages

    def wait(self, timeout_s: float) -> None:
        """Block until something is queued or ``timeout_s`` passes (the supervisor's idle wait)."""
        self._wake.wait(timeout_s)

    @staticmethod
    def _message(role: str, room: str, params: dict[str, Any]) -> Control:
        return Control(v=PROTOCOL_VERSION, room=room, target=role, command="set", params=params)
