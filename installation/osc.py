"""OSC in and out (python-osc, UDP), for TouchDesigner, Max/MSP, SuperCollider, phones.

**In** (``[control.osc] listen = "HOST:PORT"``): the live parameters of
:mod:`installation.params`, one address each, in the parameter's own unit::

    /art2mus/intensity 0.8            every room
    /art2mus/room-1/tempo_bias -0.5   one room
    /art2mus/freeze 1                 (no argument: toggle)
    /art2mus/next_variation           (any or no argument: step once)

**Out** (``[control.osc] send = ["HOST:PORT", ...]``): each room's state,
``send_hz`` times a second, one value per address as TouchDesigner's OSC In
CHOP/DAT and Max's ``udpreceive`` expect::

    /art2mus/ROOM/artwork_id   string ("" for an empty wall)
    /art2mus/ROOM/confidence   float 0..1
    /art2mus/ROOM/key          string, e.g. "D lydian"
    /art2mus/ROOM/tempo        float, bpm (0 when the generator has none)
    /art2mus/ROOM/level        float, dBFS of what plays
    /art2mus/ROOM/health       float: 1 ok, 0.5 degraded, 0 down

The prefix (``/art2mus``) is ``[control.osc] prefix``.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from installation.config import OscConfig
from installation.control import ENGINE_SETTINGS, ControlHub
from installation.errors import DependencyError
from installation.events import EventSink
from installation.params import ALIASES, PARAMETERS, parameter
from installation.status import room_summary

if TYPE_CHECKING:
    from installation.supervisor import Supervisor

#: The room-state addresses OSC out sends, in order.
STATE_FIELDS = ("artwork_id", "confidence", "key", "tempo", "level", "health")


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def _import_osc() -> Any:
    try:
        import pythonosc.dispatcher
        import pythonosc.osc_server
        import pythonosc.udp_client
    except ImportError:
        raise DependencyError("[control.osc] needs python-osc (pip install python-osc)") from None
    return pythonosc


class OscControlServer:
    """Receives parameter messages on a UDP port and hands them to the hub."""

    def __init__(self, config: OscConfig, hub: ControlHub, log_event: EventSink) -> None:
        self.config = config
        self.hub = hub
        self.log_event = log_event
        self.received = 0
        self.refused = 0
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @classmethod
    def start(cls, config: OscConfig, hub: ControlHub, log_event: EventSink) -> OscControlServer:
        """Listen on ``config.listen`` from a thread of its own."""
        osc = _import_osc()
        self = cls(config, hub, log_event)
        dispatcher = osc.dispatcher.Dispatcher()
        dispatcher.set_default_handler(self.handle)
        # One thread, messages in arrival order: a threading server could apply
        # an older knob value after a newer one.
        self._server = osc.osc_server.BlockingOSCUDPServer(_split(config.listen), dispatcher)
        self._thread = threading.Thread(target=self._server.serve_forever, name="osc-in",
                                        daemon=True)
        self._thread.start()
        log_event("osc_listening", address=config.listen)
        return self

    @property
    def port(self) -> int:
        """The UDP port actually bound (useful with port 0)."""
        return int(self._server.server_address[1])

    def handle(self, address: str, *args: Any) -> None:
        """Apply one OSC message; anything unknown or malformed is counted and logged."""
        self.received += 1
        try:
            name, room = self._parse(address)
            if name in ENGINE_SETTINGS:
                self.hub.set(name, float(args[0]), room, source="osc")
                return
            param = parameter(name)
            if param.kind == "trigger":
                self.hub.trigger(param.name, room, source="osc")
            elif param.kind == "toggle" and not args:
                self.hub.toggle(param.name, room, source="osc")
            else:
                self.hub.set(param.name, float(args[0]), room, source="osc")
        except (ValueError, TypeError, IndexError) as error:
            self.refused += 1
            self.log_event("osc_refused", address=address, args=[repr(a) for a in args][:4],
                           error=str(error))

    def _parse(self, address: str) -> tuple[str, str]:
        prefix = self.config.prefix.rstrip("/") + "/"
        if not address.startswith(prefix):
            raise ValueError(f"OSC address {address!r}: expected it to start with {prefix!r}")
        parts = address[len(prefix):].split("/")
        known = set(PARAMETERS) | set(ALIASES) | set(ENGINE_SETTINGS)
        if len(parts) == 1 and parts[0] in known:
            return parts[0], "*"
        if len(parts) == 2 and parts[1] in known:
            return parts[1], parts[0]
        raise ValueError(f"OSC address {address!r}: expected {prefix}PARAM or "
                         f"{prefix}ROOM/PARAM with PARAM in {sorted(known)}")

    def close(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class OscStateSender:
    """Sends every room's state to each target, ``send_hz`` times a second."""

    def __init__(self, config: OscConfig, supervisor: Supervisor) -> None:
        osc = _import_osc()
        self.config = config
        self.supervisor = supervisor
        self.clients = [osc.udp_client.SimpleUDPClient(*_split(a)) for a in config.send]
        self.sent = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def start(cls, config: OscConfig, supervisor: Supervisor) -> OscStateSender:
        """Send from a thread of its own."""
        self = cls(config, supervisor)
        self._thread = threading.Thread(target=self._run, name="osc-out", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        period = 1.0 / self.config.send_hz
        while not self._stop.wait(period):
            try:
                self.send_once()
            except OSError as error:  # a target's network is down: try again next period
                self.supervisor.log_event("osc_send_failed", error=str(error))

    def send_once(self) -> None:
        """Send the current state of every room to every target."""
        rows = self.supervisor.role_rows()
        prefix = self.config.prefix.rstrip("/")
        for room in self.supervisor.config.rooms:
            summary = room_summary(rows, room.id)
            for name in STATE_FIELDS:
                value = summary[name]
                for client in self.clients:
                    client.send_message(f"{prefix}/{room.id}/{name}", value)
                    self.sent += 1

    def close(self) -> None:
        """Stop sending."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        for client in self.clients:
            client.close()
