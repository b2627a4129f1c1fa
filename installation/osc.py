"""OSC in and out (python-osc, UDP), for TouchDesigner, Max/MSP, SuperCollider, phones.

**In** (``[control.osc] listen = "HOST:PORT"``): the live parameters of
:mod:`ground.params`, one address each, in the parameter's own unit::

    /art2mus/intensity 0.8            every room
    /art2mus/room-1/tempo_bias -0.5   one room
    /art2mus/freeze 1                 (T/F too; no argument: toggle)
    /art2mus/next_variation           (a number, T/F or no argument: step once)
    /art2mus/room-1/tonic 2           (the key's tonic, 2 = D; -1 = the artwork's)

``/art2mus/ROOM/key`` is not one of them: OSC out sends the key's name there
(below). A number sent to it is refused with a message naming ``tonic``, the
parameter's name since it was renamed from ``key``.

**Out** (``[control.osc] send = ["HOST:PORT", ...]``): each room's state,
``send_hz`` times a second, one value per address as TouchDesigner's OSC In
CHOP/DAT and Max's ``udpreceive`` expect::

    /art2mus/ROOM/artwork_id   string ("" for an empty wall)
    /art2mus/ROOM/confidence   float 0..1
    /art2mus/ROOM/key          string, e.g. "D lydian"
    /art2mus/ROOM/tempo        float, bpm (0 when the generator has none)
    /art2mus/ROOM/level        float, dBFS of what plays
    /art2mus/ROOM/health       float: 1 ok, 0.5 degraded, 0 down

**Echo** (:class:`OscParameterEcho`, to the same ``send`` targets): every
live parameter change, from OSC, MIDI, the console, a scene or a reload, is
sent at once on the address that sets it, so TouchOSC faders follow::

    /art2mus/ROOM/PARAM value         one room
    /art2mus/PARAM value              every room ("*")

A change is not echoed to the target it came from (a datagram from a send
target's own HOST:PORT). An echo that comes back another way (a second
installation echoing to us, an OSC router) sets the value it already has,
which the hub does not pass on (:meth:`ControlHub.set
<installation.control.ControlHub.set>`): the loop ends after one round. A
``send`` target equal to our own ``listen`` is refused when the config loads.
Triggers are the exception (each message is a step): one that came in over
OSC is not echoed, so two installations that echo to each other step once.

The prefix (``/art2mus``) is ``[control.osc] prefix``.

**Junk** never reaches the hub and never floods a log: an unparseable
datagram (a message whose length is not what its type tags say included:
python-osc would read a float cut short as 0), an unknown address or room,
an argument whose OSC type is not a number (``f``, ``d``, ``i``, ``h``;
``T``/``F`` too for a toggle or trigger: a colour ``r`` would otherwise
arrive as the integer it is packed in), a value that is not a finite number
(NaN, inf, a missing argument) is counted by reason in
:attr:`OscControlServer.refusals` and summarised at most once per 10 s
(:class:`~installation.control.RefusalLog`). Bundle time tags are ignored
(applied at once): python-osc's dispatcher would sleep the server thread
until a tag in the future. python-osc's parser logs a warning on the root
logger for each unknown type tag it skips; those records are dropped
(:class:`_PythonOscWarnings`) and the datagram counted as unparseable.
"""

from __future__ import annotations

import logging
import os
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

from ground.errors import DependencyError
from ground.events import EventSink
from ground.params import ALIASES, PARAMETERS, RENAMED, live_value
from installation.config import OscConfig
from installation.control import (
    ENGINE_SETTINGS,
    SUMMARY_EVERY_S,
    ControlHub,
    ParameterChange,
    RefusalLog,
)
from installation.status import room_summary

log = logging.getLogger(__name__)

#: The room-state addresses OSC out sends, in order.
STATE_FIELDS = ("artwork_id", "confidence", "key", "tempo", "level", "health")
#: OSC type tags of the arguments OSC in takes as a value: float32, float64, int32, int64.
NUMBER_TAGS = "fdih"
#: OSC type tags also taken by a toggle or a trigger: True, False.
BOOLEAN_TAGS = "TF"


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


def udp_origin(host: str, port: int) -> str:
    """The ``origin`` of a change sent from ``host:port`` (what the echo skips)."""
    try:
        host = socket.gethostbyname(host)
    except OSError:  # an unresolvable name: compared as written
        pass
    return f"udp:{host}:{port}"


#: Bytes an argument of a fixed-size OSC type tag occupies (OSC 1.0 and 1.1); a string's
#: (``s``, ``S``) and a blob's (``b``) are read from the message, the others' (``T``, ``F``,
#: ``N``, ``I``, ``[``, ``]``) are none.
_ARGUMENT_BYTES = {"i": 4, "f": 4, "r": 4, "m": 4, "c": 4, "h": 8, "d": 8, "t": 8}


def _type_tags(dgram: bytes) -> str:
    """The OSC type tags of a parsed message's arguments ("" without any), commaless.

    ValueError unless the message is exactly as long as its address, type tags
    and the arguments they name: python-osc reads a float cut short as if
    zero-padded (a workaround for Reaktor), so a 20-byte ``/art2mus/volume ,f``
    with no argument bytes would set the volume to 0 and mute the room.
    """
    from pythonosc.parsing import osc_types

    _, index = osc_types.get_string(dgram, 0)
    if not dgram[index:]:
        return ""
    tags, index = osc_types.get_string(dgram, index)
    for tag in tags[1:]:
        if tag in "sS":
            _, index = osc_types.get_string(dgram, index)
        elif tag == "b":
            start = index
            _, index = osc_types.get_blob(dgram, index)
            if index < start + 4:  # a negative size would step back over its own bytes
                raise ValueError(f"OSC message: a blob of negative size at byte {start}")
        else:
            index += _ARGUMENT_BYTES.get(tag, 0)
    if index != len(dgram):
        raise ValueError(f"OSC message: type tags {tags[:20]!r} take {index} bytes with the "
                         f"address, got {len(dgram)}")
    return tags[1:]


def _import_osc() -> Any:
    try:
        import pythonosc.osc_packet
        import pythonosc.osc_server
        import pythonosc.udp_client
    except ImportError:
        raise DependencyError("[control.osc] needs python-osc "
                              "(pip install 'art2mus[osc]')") from None
    return pythonosc


class _PythonOscWarnings(logging.Filter):
    """Drops the warnings python-osc's parser logs per packet, noting that one was seen.

    Installed on the root logger, where python-osc logs them (``logging.warning``);
    the note is per thread, read by the OSC-in thread after each datagram.
    """

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        """False (drop) for a record from python-osc's modules."""
        if f"{os.sep}pythonosc{os.sep}" in record.pathname:
            self._local.seen = True
            return False
        return True

    def take(self) -> bool:
        """Whether this thread's parsing logged a warning since the last call."""
        seen = getattr(self._local, "seen", False)
        self._local.seen = False
        return seen


_PYTHONOSC_WARNINGS = _PythonOscWarnings()


@cache
def _server_class(osc: Any) -> type:
    """python-osc's blocking UDP server, made to hand every datagram to its owner."""

    class Server(osc.osc_server.BlockingOSCUDPServer):  # type: ignore[misc,name-defined]
        owner: OscControlServer

        def verify_request(self, request: Any, client_address: Any) -> bool:
            return True  # the owner parses, and counts what does not parse

        def finish_request(self, request: Any, client_address: Any) -> None:
            if not self.owner.config.admits(client_address[0]):
                self.owner.refuse_sender(client_address[0], len(request[0]))
                return
            self.owner.datagram(request[0], udp_origin(client_address[0], client_address[1]))

        def handle_error(self, request: Any, client_address: Any) -> None:
            # socketserver would print a traceback to stderr for each bad packet
            self.owner.refusals.refuse("internal-error", error=repr(sys.exc_info()[1])[:200])

        def service_actions(self) -> None:
            self.owner.refusals.flush_due()  # the summary is written even when junk stops

    return Server


class OscControlServer:
    """Receives parameter messages on a UDP port and hands them to the hub."""

    def __init__(self, config: OscConfig, hub: ControlHub, log_event: EventSink,
                 refusals: RefusalLog | None = None) -> None:
        self.config = config
        self.hub = hub
        self.log_event = log_event
        self.refusals = refusals or RefusalLog("osc", log_event)
        self._server: socketserver.BaseServer | None = None
        self._thread: threading.Thread | None = None
        self._parse_error: type[Exception] = Exception
        self._packet: Any = None

    @classmethod
    def start(cls, config: OscConfig, hub: ControlHub, log_event: EventSink,
              refusals: RefusalLog | None = None) -> OscControlServer:
        """Listen on ``config.listen`` from a thread of its own."""
        osc = _import_osc()
        root = logging.getLogger()
        if _PYTHONOSC_WARNINGS not in root.filters:
            root.addFilter(_PYTHONOSC_WARNINGS)
        self = cls(config, hub, log_event, refusals)
        self._packet = osc.osc_packet.OscPacket
        # One thread, messages in arrival order: a threading server could apply
        # an older knob value after a newer one.
        server = _server_class(osc)(_split(config.listen), None)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                                        name="osc-in", daemon=True)
        self._thread.start()
        log_event("osc_listening", address=config.listen)
        return self

    @property
    def port(self) -> int:
        """The UDP port actually bound (useful with port 0)."""
        assert self._server is not None
        return int(self._server.server_address[1])  # type: ignore[index]

    @property
    def received(self) -> int:
        """Messages received so far (an unparseable datagram counts as one)."""
        return self.refusals.received

    @property
    def refused(self) -> int:
        """Messages refused so far (``refusals.by_reason`` says why)."""
        return self.refusals.refused

    def refuse_sender(self, host: str, size: int) -> None:
        """Count a datagram from a sender ``allow`` does not name (nothing of it is read)."""
        self.refusals.accept()
        self.refusals.refuse("not-allowed", sender=host[:64], size=size,
                             error=f"sender {host[:64]} is not in control.osc.allow")

    def datagram(self, data: bytes, origin: str = "") -> None:
        """Parse one UDP datagram (a message or a bundle) from ``origin`` and apply it."""
        _PYTHONOSC_WARNINGS.take()
        try:
            messages = [timed.message for timed in self._packet(data).messages]
            if _PYTHONOSC_WARNINGS.take():
                raise ValueError("an unknown type tag or bundle element")
            tagged = [(message, _type_tags(message.dgram)) for message in messages]
        except Exception as error:  # noqa: BLE001 - python-osc raises several types on junk
            self.refusals.accept()
            self.refusals.refuse("unparseable", size=len(data), error=repr(error)[:200])
            return
        for message, tags in tagged:
            self.handle(message.address, *message.params, origin=origin, tags=tags)

    def handle(self, address: str, *args: Any, origin: str = "", tags: str | None = None
               ) -> None:
        """Apply one OSC message; anything unknown or malformed is counted as refused.

        ``tags`` are the arguments' OSC type tags as received (None: ``args`` are
        Python values, not from a datagram); an argument that is neither a number
        nor, for a toggle or a trigger, T/F is refused as ``bad-value``: python-osc
        hands a colour (``r``) or a MIDI message (``m``) over as numbers.
        """
        self.refusals.accept()
        if address == self.config.prefix.rstrip("/") + "/scene":
            self._recall(address, args, tags, origin)
            return
        try:
            name, room = self._parse(address)
        except ValueError as error:
            self.refusals.refuse("unknown-address", address=address[:200],
                                 error=str(error)[:300])
            return
        rooms = [r.id for r in self.hub.config.rooms]
        if room != "*" and room not in rooms:
            self.refusals.refuse("unknown-room", address=address[:200],
                                 error=f"unknown room {room!r}; rooms are {rooms}")
            return
        param = live_value(name)  # a known name: _parse checked it
        if tags is not None:
            allowed = NUMBER_TAGS + (BOOLEAN_TAGS if param.kind in ("toggle", "trigger") else "")
            odd = sorted({tag for tag in tags if tag not in allowed})
            if odd:
                self.refusals.refuse(
                    "bad-value", address=address[:200], tags=tags[:20],
                    error=f"parameter {param.name}: expected OSC type tags in "
                          f"{allowed!r}, got {''.join(odd)[:20]!r}")
                return
        try:
            if param.kind == "trigger":
                self.hub.trigger(param.name, room, source="osc", origin=origin)
            elif param.kind == "toggle" and not args:
                self.hub.toggle(param.name, room, source="osc", origin=origin)
            elif not args:
                raise ValueError(f"parameter {param.name}: expected {param.expected}, "
                                 "got no argument")
            else:
                self.hub.set(param.name, args[0], room, source="osc", origin=origin)
        except ValueError as error:
            self.refusals.refuse("bad-value", address=address[:200],
                                 args=[repr(a)[:40] for a in args[:4]], error=str(error)[:300])
        except Exception as error:  # noqa: BLE001 - one bad packet must not stop OSC in
            self.refusals.refuse("internal-error", address=address[:200], error=repr(error)[:200])

    def _recall(self, address: str, args: tuple[Any, ...], tags: str | None,
                origin: str) -> None:
        """``PREFIX/scene NAME`` or ``PREFIX/scene PROGRAM``: recall a ``[[control.scenes]]``
        entry as a MIDI program change does (a performer without MIDI has only OSC)."""
        value = args[0] if len(args) == 1 else None
        if tags is not None and (len(tags) != 1 or tags not in NUMBER_TAGS + "s"):
            value = None
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # a TouchOSC button sends its value as a float
        if isinstance(value, bool) or not isinstance(value, str | int):
            self.refusals.refuse("bad-value", address=address[:200],
                                 args=[repr(a)[:40] for a in args[:4]],
                                 error="scene: expected one argument, the scene's name "
                                       "(a string) or its program number (0-127)")
            return
        try:
            scene = self.hub.scene(value)
            self.hub.recall_scene(scene, source="osc", origin=origin)
        except ValueError as error:  # no such scene, or one naming a room no longer there
            self.refusals.refuse("bad-value", address=address[:200], error=str(error)[:300])

    def _parse(self, address: str) -> tuple[str, str]:
        prefix = self.config.prefix.rstrip("/") + "/"
        if not address.startswith(prefix):
            raise ValueError(f"OSC address {address[:100]!r}: expected it to start with "
                             f"{prefix!r}")
        parts = address[len(prefix):].split("/")
        known = set(PARAMETERS) | set(ALIASES) | set(ENGINE_SETTINGS)
        if len(parts) == 1 and parts[0] in known:
            return parts[0], "*"
        if len(parts) == 2 and parts[1] in known:
            return parts[1], parts[0]
        new = RENAMED.get(parts[-1])  # first: the message is cut short where it is logged
        renamed = f"{parts[-1]!r} is now called {new!r}; " if new else ""
        raise ValueError(f"OSC address {address[:100]!r}: {renamed}expected {prefix}PARAM or "
                         f"{prefix}ROOM/PARAM with PARAM in {sorted(known)}")

    def close(self) -> None:
        """Stop listening; the refusals not yet summarised are summarised now."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.refusals.flush()


class OscParameterEcho:
    """Sends every parameter change the hub hears to each ``send`` target (a hub listener).

    Runs on the thread that made the change (UDP sends do not block); a
    target that is the change's origin is skipped. A send that fails (a
    target's network down) is counted in :attr:`failures` and said as an
    ``osc_send_failed`` event at most once per :data:`SUMMARY_EVERY_S` with how
    many failed since the last (``count``): a flood of changes to a dead target
    is not one event each.
    """

    def __init__(self, config: OscConfig, hub: ControlHub, log_event: EventSink) -> None:
        osc = _import_osc()
        self.config = config
        self.log_event = log_event
        self.targets = [(udp_origin(*_split(a)), osc.udp_client.SimpleUDPClient(*_split(a)))
                        for a in config.send]
        self.sent = 0
        self.failures = 0
        self._unsaid = 0  # failures since the last osc_send_failed event
        self._said_at: float | None = None
        self._lock = threading.Lock()
        self._unsubscribe = hub.subscribe(self.on_change)

    @classmethod
    def start(cls, config: OscConfig, hub: ControlHub, log_event: EventSink) -> OscParameterEcho:
        """Echo from now on to ``config.send``."""
        echo = cls(config, hub, log_event)
        log_event("osc_echo_started", targets=list(config.send))
        return echo

    def address(self, change: ParameterChange) -> str:
        """The OSC address that sets ``change``'s parameter (the one OSC in accepts)."""
        prefix = self.config.prefix.rstrip("/")
        if change.room == "*":
            return f"{prefix}/{change.name}"
        return f"{prefix}/{change.room}/{change.name}"

    def on_change(self, change: ParameterChange) -> None:
        """Send ``change`` to every target but its origin (a trigger that came over OSC to
        none: each message is a step, and two installations echoing to each other would
        step each other for ever)."""
        if change.source == "osc" and live_value(change.name).kind == "trigger":
            return
        address = self.address(change)
        for origin, client in self.targets:
            if origin == change.origin:
                continue
            try:
                client.send_message(address, float(change.value))
                self.sent += 1
            except OSError as error:  # a target's network is down: the next change retries
                self._failed(error, address)

    def _failed(self, error: OSError, address: str) -> None:
        """Count one failed send; say it unless said within SUMMARY_EVERY_S."""
        now = time.monotonic()
        with self._lock:
            self.failures += 1
            self._unsaid += 1
            if self._said_at is not None and now - self._said_at < SUMMARY_EVERY_S:
                return
            count, self._unsaid, self._said_at = self._unsaid, 0, now
        self.log_event("osc_send_failed", error=str(error), address=address, count=count,
                       total=self.failures)

    def close(self) -> None:
        """Stop echoing."""
        self._unsubscribe()
        for _, client in self.targets:
            client.close()


class OscStateSender:
    """Sends every room's state to each target, ``send_hz`` times a second.

    ``rows`` gives every role's state and last health record (the supervisor's
    :meth:`~installation.supervisor.Supervisor.role_rows`); ``rooms`` are the
    room ids to report, in order.
    """

    def __init__(self, config: OscConfig, rows: Callable[[], list[dict[str, Any]]],
                 rooms: Sequence[str], log_event: EventSink) -> None:
        osc = _import_osc()
        self.config = config
        self.rows = rows
        self.rooms = tuple(rooms)
        self.log_event = log_event
        self.clients = [osc.udp_client.SimpleUDPClient(*_split(a)) for a in config.send]
        self.sent = 0
        self.failures = 0  # periods whose sending failed, in all
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def start(cls, config: OscConfig, rows: Callable[[], list[dict[str, Any]]],
              rooms: Sequence[str], log_event: EventSink) -> OscStateSender:
        """Send from a thread of its own."""
        self = cls(config, rows, rooms, log_event)
        self._thread = threading.Thread(target=self._run, name="osc-out", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        """Send every period until closed; a failure is said once, and the next period tries
        again.

        Any exception, not only a network's OSError: one bad read of the role rows must
        not silence OSC out for the rest of the show. A streak of failures (a target's
        network down for minutes) is one event and one log line, and its end another.
        """
        period = 1.0 / self.config.send_hz
        streak = 0  # failed periods in a row
        while not self._stop.wait(period):
            try:
                self.send_once()
            except Exception as error:  # noqa: BLE001 - OSC out goes on; said once per streak
                streak += 1
                self.failures += 1
                if streak == 1:
                    self.log_event("osc_send_failed", error=repr(error)[:300])
                    log.warning("OSC out: sending the room state failed (%r); retrying every "
                                "%.2f s, said again only once it works", error, period)
                continue
            if streak:
                self.log_event("osc_send_recovered", failed_periods=streak)
                log.info("OSC out: sending the room state works again after %d failed "
                         "periods", streak)
                streak = 0

    def send_once(self) -> None:
        """Send the current state of every room to every target."""
        rows = self.rows()
        prefix = self.config.prefix.rstrip("/")
        for room in self.rooms:
            summary = room_summary(rows, room)
            for name in STATE_FIELDS:
                value = summary[name]
                for client in self.clients:
                    client.send_message(f"{prefix}/{room}/{name}", value)
                    self.sent += 1

    def close(self) -> None:
        """Stop sending."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        for client in self.clients:
            client.close()
