"""OSCQuery: TouchOSC, Chataigne, Max (and any OSCQuery client) discover our OSC addresses.

``[control.osc] query_port = 9002`` (with ``listen`` set) serves, over HTTP on
the OSC in host, a JSON description of every address :mod:`installation.osc`'s
OSC in accepts (the OSCQuery proposal, https://github.com/Vidvox/OSCQueryProposal)
and, where the ``zeroconf`` package is installed (the ``oscquery`` extra), advertises
it on the LAN by mDNS/DNS-SD as ``_oscjson._tcp`` (the HTTP port) and
``_osc._udp`` (the OSC in port), so a controller lists the installation by name::

    GET /                       the whole tree (CONTENTS, FULL_PATH, TYPE, RANGE, VALUE...)
    GET /art2mus/room-1         one room's sub-tree
    GET /art2mus/intensity      one node
    GET /art2mus/intensity?VALUE   {"VALUE": [0.8]}, read from the hub at request time
    GET /?HOST_INFO             NAME, OSC_IP, OSC_PORT, OSC_TRANSPORT "UDP", EXTENSIONS

The namespace, built from :data:`ground.params.PARAMETERS` and
:data:`~ground.params.SETTINGS` and the configured rooms:

- ``PREFIX/PARAM`` (every room) and ``PREFIX/ROOM/PARAM`` (one room) for each
  live parameter and engine setting, ACCESS 3, TYPE ``"f"`` (continuous) or
  ``"i"`` (choice, toggle, trigger), RANGE ``[{"MIN", "MAX"}]`` (a choice's
  also has ``"VALS"``, the allowed numbers; its DESCRIPTION names them), VALUE
  :meth:`ControlHub.current <installation.control.ControlHub.current>`. OSC in
  also takes a toggle with no argument (flips it) or T/F, and a trigger with a
  number, T/F or no argument (one step; VALUE counts the steps).
- ``PREFIX/ROOM/{artwork_id,confidence,key,tempo,level,health}``: the room
  state OSC out sends (:data:`installation.osc.STATE_FIELDS`), ACCESS 1, VALUE
  read from the role rows (``key`` is the key's name, "D dorian", as the
  engine's beat out also sends it there). The rest of beat out (``beat``,
  ``bar``, ``chord``) is not described: its values live in the engine process.
- Not advertised though OSC in takes them: ``density`` (another name for
  ``intensity``: a second control for one knob) and the room ``*``.
- ``PREFIX/scene``: recalls a ``[[control.scenes]]`` entry by name (or
  program number, as a MIDI program change does), ACCESS 2 (write only: a
  scene is an action, not a state), TYPE ``"s"``, RANGE ``VALS`` the scenes'
  names; present only where scenes are configured.

The HTTP server is read-only and small on purpose: GET and HEAD only (any
other method is 405), a request path of at most :data:`MAX_PATH_CHARS`
characters (else 414), no file is ever served, at most
:data:`MAX_CONNECTIONS` connections at once and :data:`MAX_PER_PEER` from one
address (:class:`ground.metrics.ConnectionBook`: past either, the oldest
connection that has not sent its request head yet, of that address or of the
address holding the most, is closed for the new one, else the new one is,
unread, after :data:`REFUSED_LINGER_S`; a connection that sent its request
is never closed for another), a request
head must arrive within :data:`HEAD_TIMEOUT_S` and the answer be taken within
:data:`CLIENT_TIMEOUT_S` in all (deadlines, not per read: a client trickling
one byte at a time would otherwise hold its slot for ever; 16 such sockets,
reopened as cut, refused every discovery), a path not starting with "/" is
404; every error is a JSON object
``{"ERROR": "..."}``; nothing is logged per request. An unknown path is 404,
an unknown attribute 400, an attribute the node lacks (``?VALUE`` on a
container) 204, as the proposal asks. No LISTEN (websocket streaming): the
values stream over plain OSC to the ``send`` targets (echo, OSC out).

Why not python-oscquery: it is beta, has no RANGE, serves VALUEs fixed when
a node is added, and binds every interface.

Threads: the HTTP server's accept loop (``oscquery-http``) and one thread per
request (reading the hub, which is thread-safe, and the role rows); the mDNS
registration runs in ``oscquery-mdns`` (probing takes seconds) and zeroconf's
own threads answer queries until :meth:`OscQueryServer.close`.
"""

from __future__ import annotations

import functools
import io
import ipaddress
import json
import logging
import math
import socket
import socketserver
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

from ground.events import EventSink
from ground.metrics import ConnectionBook
from ground.params import PARAMETERS, SETTINGS, Parameter
from installation.config import OscConfig
from installation.control import ControlHub
from installation.status import room_summary

log = logging.getLogger(__name__)

#: The longest request target (path and query) answered; longer ones get 414.
MAX_PATH_CHARS = 1024
#: Connections held at once; past it a waiting one gives way, or the new one is closed.
MAX_CONNECTIONS = 16
#: Connections one address may hold at once: a controller asks one question at a time.
MAX_PER_PEER = 4
#: Seconds a connection has to send its whole request head (a controller sends it at once).
HEAD_TIMEOUT_S = 2.0
#: Seconds a request may take in all, from waiting for its first line to the answer sent.
CLIENT_TIMEOUT_S = 5.0
#: A refused connection is closed after this long, unread (MAX_LINGERING at most, past
#: them at once): a client reopening as soon as it is closed does not make us spin.
REFUSED_LINGER_S = 1.0
MAX_LINGERING = 32
#: The OSCQuery attributes a node may be asked for (``?VALUE``); HOST_INFO is the root's.
ATTRIBUTES = ("FULL_PATH", "CONTENTS", "TYPE", "ACCESS", "VALUE", "RANGE", "DESCRIPTION")
#: What HOST_INFO says this server implements.
EXTENSIONS = {"ACCESS": True, "VALUE": True, "RANGE": True, "DESCRIPTION": True, "TYPE": True,
              "FULL_PATH": True, "CONTENTS": True}
#: The DNS-SD service types: the OSCQuery HTTP server and the OSC in port it describes.
SERVICE_OSCJSON = "_oscjson._tcp.local."
SERVICE_OSC = "_osc._udp.local."

#: The room state OSC out sends, described read-only: OSC type, range, description.
#: A test keeps this in step with STATE_FIELDS.
STATE_NODES: dict[str, tuple[str, tuple[float, float] | None, str]] = {
    "artwork_id": ("s", None, "the artwork on the wall ('' = an empty wall)"),
    "confidence": ("f", (0.0, 1.0), "how sure capture is of the artwork"),
    "key": ("s", None, "the key playing, e.g. 'D dorian' ('' before the first piece); "
                       "the tonic and mode parameters override the artwork's"),
    "tempo": ("f", None, "the tempo playing, bpm (0 when the generator has none)"),
    "level": ("f", None, "the level of what plays, dBFS"),
    "health": ("f", (0.0, 1.0), "the room's health: 1 ok, 0.5 degraded, 0 down"),
}

ACCESS_READ = 1
ACCESS_WRITE = 2
ACCESS_READ_WRITE = 3


class Reading:
    """What one request reads: the role rows at most once, each room's summary once."""

    def __init__(self, rows: Callable[[], list[dict[str, Any]]] | None) -> None:
        self._rows = rows
        self._taken: list[dict[str, Any]] | None = None
        self._summaries: dict[str, dict[str, Any]] = {}

    def summary(self, room: str) -> dict[str, Any]:
        """``room``'s state as OSC out sends it (:func:`installation.status.room_summary`)."""
        if room not in self._summaries:
            if self._taken is None:
                self._taken = self._rows() if self._rows is not None else []
            self._summaries[room] = room_summary(self._taken, room)
        return self._summaries[room]


@dataclass(frozen=True)
class OscMethod:
    """One OSC address a client may read (ACCESS 1) or read and set (ACCESS 3)."""

    full_path: str
    type: str  # the OSC type tag: "f", "i", "s"
    access: int
    description: str
    read: Callable[[Reading], object]
    range: dict[str, Any] | None = None  # {"MIN": .., "MAX": .., "VALS": [...]}

    def value(self, reading: Reading) -> object:
        """The current value as its type tag says (a non-finite float: null)."""
        value = self.read(reading)
        if self.type == "i":
            return int(value)  # type: ignore[call-overload]
        if self.type == "f":
            number = float(value)  # type: ignore[arg-type]
            return number if math.isfinite(number) else None
        return str(value)


@dataclass
class _Node:
    full_path: str
    description: str = ""
    method: OscMethod | None = None
    contents: dict[str, _Node] = field(default_factory=dict)


def _join(parent: str, name: str) -> str:
    return f"/{name}" if parent == "/" else f"{parent}/{name}"


class Namespace:
    """The OSC address tree as OSCQuery describes it; values are read when asked."""

    def __init__(self, methods: Iterable[OscMethod], descriptions: dict[str, str]) -> None:
        self.root = _Node("/", descriptions.get("/", ""))
        for method in methods:
            node = self.root
            for name in method.full_path.split("/")[1:]:
                child = node.contents.get(name)
                if child is None:
                    path = _join(node.full_path, name)
                    child = node.contents[name] = _Node(path, descriptions.get(path, ""))
                node = child
            if node.method is not None:
                raise ValueError(f"OSC address {method.full_path!r} described twice")
            node.method = method
            node.full_path, node.description = method.full_path, method.description

    def methods(self) -> Iterator[OscMethod]:
        """Every method, depth first."""
        stack = [self.root]
        while stack:
            node = stack.pop()
            if node.method is not None:
                yield node.method
            stack.extend(reversed(node.contents.values()))

    def find(self, path: str) -> _Node | None:
        """The node at ``path`` ("/" the root, a trailing "/" ignored); None if none.

        A path must start with "/": the tree has no relative paths ("junk/art2mus"
        is not "/art2mus").
        """
        if not path.startswith("/"):
            return None
        node = self.root
        if path.rstrip("/") == "":
            return node
        for name in path.rstrip("/").split("/")[1:]:
            found = node.contents.get(name)
            if found is None:
                return None
            node = found
        return node

    def describe(self, node: _Node, reading: Reading, deep: bool = True) -> dict[str, Any]:
        """``node`` as an OSCQuery JSON object (its sub-tree too when ``deep``)."""
        out: dict[str, Any] = {"FULL_PATH": node.full_path, "DESCRIPTION": node.description}
        method = node.method
        if method is None:
            out["ACCESS"] = 0
        else:
            out["TYPE"] = method.type
            out["ACCESS"] = method.access
            if method.access & ACCESS_READ:  # a write-only method has no value (?VALUE: 204)
                out["VALUE"] = [method.value(reading)]
            if method.range is not None:
                out["RANGE"] = [method.range]
        if node.contents:
            out["CONTENTS"] = ({name: self.describe(child, reading) for name, child
                                in node.contents.items()} if deep else {})
        return out


def _parameter_range(param: Parameter, high: float | None = None) -> dict[str, Any]:
    """OSCQuery's RANGE of ``param``; ``high``: a tighter top where it applies (a room's
    lead, :meth:`InstallationConfig.lead_s_limit`), as :meth:`Parameter.clamp` takes it."""
    if param.kind == "continuous":
        top = param.high if high is None else max(param.low, min(param.high, high))
        return {"MIN": param.low, "MAX": top}
    low, high = int(param.low), int(param.high)
    if param.kind == "choice":
        return {"MIN": low, "MAX": high, "VALS": list(range(low, high + 1))}
    return {"MIN": low, "MAX": high}


def _parameter_description(param: Parameter, where: str) -> str:
    text = f"{param.doc} ({where})"
    if param.kind == "choice":
        names = ", ".join(f"{int(param.low) + i} {name}" for i, name in enumerate(param.choices))
        text += f"; {names}"
    elif param.kind == "toggle":
        text += "; 0 or 1 (or T/F), no argument flips it"
    elif param.kind == "trigger":
        text += "; a number, T/F or no argument steps once (the value counts the steps)"
    return text


def osc_methods(prefix: str, rooms: Iterable[str], hub: ControlHub,
                state: bool = True) -> list[OscMethod]:
    """Every address OSC in accepts under ``prefix`` (and, with ``state``, the room state
    OSC out sends), with their types, ranges and value readers."""
    base = prefix.rstrip("/")
    rooms = list(rooms)
    live = [*PARAMETERS.values(), *SETTINGS.values()]
    methods: list[OscMethod] = []

    def parameter(param: Parameter, room: str, path: str, where: str) -> OscMethod:
        return OscMethod(path, "f" if param.kind == "continuous" else "i", ACCESS_READ_WRITE,
                         _parameter_description(param, where),
                         lambda _: hub.current(param.name, room),
                         _parameter_range(param, hub.config.lead_s_limit(room)
                                          if param.name == "lead_s" else None))

    def state_field(room: str, name: str) -> Callable[[Reading], object]:
        return lambda reading: reading.summary(room)[name]

    for param in live:
        methods.append(parameter(param, "*", f"{base}/{param.name}", "every room"))
    scenes = hub.config.control.scenes
    if scenes:
        names = ", ".join(f"{scene.name} (program {scene.program})" for scene in scenes)
        methods.append(OscMethod(
            f"{base}/scene", "s", ACCESS_WRITE,
            f"recall a scene by name, or by program number as an int: {names}",
            lambda _: "", {"VALS": [scene.name for scene in scenes]}))
    for room in rooms:
        for param in live:
            methods.append(parameter(param, room, f"{base}/{room}/{param.name}", f"room {room}"))
        if not state:
            continue
        for name, (tag, bounds, text) in STATE_NODES.items():
            methods.append(OscMethod(
                f"{base}/{room}/{name}", tag, ACCESS_READ, f"{text} (room {room}; read only)",
                state_field(room, name),
                None if bounds is None else {"MIN": bounds[0], "MAX": bounds[1]}))
    return methods


def namespace(config: OscConfig, hub: ControlHub, state: bool = True) -> Namespace:
    """The namespace of ``config``'s OSC in for the hub's rooms."""
    rooms = [room.id for room in hub.config.rooms]
    base = config.prefix.rstrip("/")
    descriptions = {"/": "Art2Mus: live parameters (every room, or PREFIX/ROOM/...)"}
    if base:
        descriptions[base] = "Art2Mus: live parameters for every room; a room's own below"
    for room in rooms:
        descriptions[f"{base}/{room}"] = f"room {room}: its own parameters" + (
            " and state" if state else "")
    return Namespace(osc_methods(config.prefix, rooms, hub, state), descriptions)


# -- HTTP ----------------------------------------------------------------------


class _QueryHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with bounded connections (:class:`ConnectionBook`) and no stderr
    tracebacks."""

    daemon_threads = True
    request_queue_size = 2 * MAX_CONNECTIONS  # socketserver's 5 makes a burst of clients wait
    owner: OscQueryServer

    def __init__(self, address: tuple[str, int],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock  # what the requests' deadlines are measured on
        self.book = ConnectionBook(MAX_PER_PEER, MAX_CONNECTIONS, MAX_CONNECTIONS)
        self.errors = 0
        self._lingering: deque[tuple[float, Any]] = deque()  # refused: (close at, socket)
        super().__init__(address, _QueryHandler)

    @property
    def dropped(self) -> int:
        """Connections closed unanswered: refused, or given way to a newer one."""
        return sum(self.book.refused.values())

    def server_bind(self) -> None:
        # HTTPServer's own also looks up the host's FQDN, which can stall on a bad resolver
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(
            self.server_address[1])

    def process_request(self, request: Any, client_address: Any) -> None:
        peer = str(client_address[0]) if isinstance(client_address, tuple) else ""
        if not self.book.admit(request, peer, functools.partial(_give_way, request)):
            if len(self._lingering) < MAX_LINGERING:
                self._lingering.append((time.monotonic() + REFUSED_LINGER_S, request))
            else:
                self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.book.release(request)
            raise

    def service_actions(self) -> None:
        """Close the refused connections whose REFUSED_LINGER_S is over (each turn of the
        accept loop, at least every poll_interval)."""
        now = time.monotonic()
        while self._lingering and now >= self._lingering[0][0]:
            self.shutdown_request(self._lingering.popleft()[1])

    def server_close(self) -> None:
        """Stop listening; the refused connections still lingering are closed too."""
        super().server_close()
        while self._lingering:
            self.shutdown_request(self._lingering.popleft()[1])

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.book.release(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        self.errors += 1  # a client gone mid-answer: nothing to log per request


def _give_way(connection: socket.socket) -> None:
    """End a waiting connection for a newer one: its handler's read sees the end at once."""
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already gone


class _DeadlineReader(io.RawIOBase):
    """A connection's bytes, each read bounded by what is left of the request's time.

    A socket timeout bounds one read only: a client sending a byte every few
    seconds would never trip it. Here each read waits at most until
    ``remaining()`` runs out, and none starts once it has (TimeoutError, which
    the HTTP handler answers by closing the connection).
    """

    def __init__(self, connection: socket.socket, remaining: Callable[[], float]) -> None:
        super().__init__()
        self._connection = connection
        self._remaining = remaining

    def readable(self) -> bool:
        """Always: it only reads."""
        return True

    def readinto(self, buffer: Any) -> int:
        """Read what has arrived into ``buffer``, waiting at most until the deadline."""
        remaining = self._remaining()
        if remaining <= 0:
            raise TimeoutError("the request took too long (HEAD_TIMEOUT_S, CLIENT_TIMEOUT_S)")
        self._connection.settimeout(remaining)
        return self._connection.recv_into(buffer)


class _QueryHandler(BaseHTTPRequestHandler):
    """Answers GET and HEAD from the namespace; never touches the filesystem.

    Each request has :data:`HEAD_TIMEOUT_S`, from the moment it is awaited, to send
    its head, and :data:`CLIENT_TIMEOUT_S` in all to be answered (HTTP/1.0: one
    request per connection).
    """

    server: _QueryHTTPServer
    server_version = "art2mus-oscquery"
    sys_version = ""
    timeout = CLIENT_TIMEOUT_S
    _deadline = 0.0  # server.clock() time by which the request in hand must be answered
    _head_deadline = 0.0  # ... and by which its head must have come (until it has)
    _head_in = False

    def log_message(self, format: str, *args: Any) -> None:
        """Nothing per request (the base writes every request to stderr)."""

    def setup(self) -> None:
        """The connection as the base sets it up, read through the request's deadline."""
        super().setup()
        self.rfile.close()  # the base's makefile(): replaced, not read
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, self._remaining))

    def handle_one_request(self) -> None:
        """One request, its head within :data:`HEAD_TIMEOUT_S` and its answer within
        :data:`CLIENT_TIMEOUT_S` from now (the base closes the connection on the
        TimeoutError of a read or a write past them)."""
        now = self.server.clock()
        self._head_deadline, self._deadline = now + HEAD_TIMEOUT_S, now + CLIENT_TIMEOUT_S
        self._head_in = False
        super().handle_one_request()

    def _remaining(self) -> float:
        """Seconds left to the request in hand (to its head, until that has come)."""
        deadline = self._deadline if self._head_in else min(self._head_deadline,
                                                            self._deadline)
        return deadline - self.server.clock()

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False
        self._head_in = True  # the request line and headers are read
        self.server.book.started(self.request)
        if self.command not in ("GET", "HEAD"):
            self._reply(HTTPStatus.METHOD_NOT_ALLOWED,
                        {"ERROR": f"method {self.command[:20]!r}: expected GET or HEAD"},
                        allow="GET, HEAD")
            return False
        return True

    def send_error(self, code: int, message: str | None = None,
                   explain: str | None = None) -> None:
        """Errors the base finds (a malformed request line, a header too long) as JSON."""
        self.close_connection = True
        self._reply(HTTPStatus(code), {"ERROR": message or HTTPStatus(code).phrase})

    def do_GET(self) -> None:
        """Answer one query."""
        try:
            status, body = self.server.owner.answer(self.path, self._local_ip())
        except Exception as error:  # noqa: BLE001 - a bad read must not kill the server
            self.server.errors += 1
            status, body = HTTPStatus.INTERNAL_SERVER_ERROR, {"ERROR": repr(error)[:200]}
        self._reply(status, body)

    do_HEAD = do_GET  # _reply leaves the body out for HEAD

    def _local_ip(self) -> str:
        """The address this client reached us on: the OSC in host, as the client sees it."""
        return str(self.connection.getsockname()[0])

    def _reply(self, status: HTTPStatus, body: dict[str, Any] | None,
               allow: str = "") -> None:
        remaining = self._remaining()
        if remaining <= 0:
            raise TimeoutError(f"the request took more than {CLIENT_TIMEOUT_S:g} s")
        # a client that stops reading the answer is cut at the deadline too
        self.connection.settimeout(remaining)
        data = b"" if body is None else json.dumps(body, allow_nan=False).encode()
        self.send_response(status)
        if allow:
            self.send_header("Allow", allow)
        if status != HTTPStatus.NO_CONTENT:
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD" and status != HTTPStatus.NO_CONTENT:
            self.wfile.write(data)


# -- mDNS ----------------------------------------------------------------------


def _advertised_addresses(host: str) -> list[str]:
    """The IPv4 addresses to advertise for a server bound to ``host``."""
    if host in ("", "0.0.0.0"):
        import ifaddr  # a dependency of zeroconf

        found = sorted({ip.ip for adapter in ifaddr.get_adapters() for ip in adapter.ips
                        if ip.is_IPv4 and isinstance(ip.ip, str)})
        outside = [a for a in found if not ipaddress.ip_address(a).is_loopback]
        return outside or found
    return [socket.gethostbyname(host)]


def _instance_name(name: str) -> str:
    """``name`` as a DNS-SD instance label (at most 63 bytes, no dots)."""
    label = name.replace(".", "-").strip() or "art2mus"
    while len(label.encode()) > 63:
        label = label[:-1]
    return label


class Advertisement:
    """The two DNS-SD services, registered from a thread of their own (probing takes
    seconds); :meth:`close` unregisters them (goodbye packets) and closes zeroconf."""

    def __init__(self, name: str, host: str, http_port: int, osc_port: int,
                 log_event: EventSink) -> None:
        self.name = _instance_name(name)
        self.host = host
        self.http_port = http_port
        self.osc_port = osc_port
        self.log_event = log_event
        self.registered: list[str] = []  # the service names (a clash may have renamed them)
        self.done = threading.Event()
        self._zeroconf: Any = None
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._register, name="oscquery-mdns",
                                        daemon=True)

    @classmethod
    def start(cls, name: str, host: str, http_port: int, osc_port: int,
              log_event: EventSink) -> Advertisement | None:
        """Register in the background; None (and a warning) where zeroconf is missing."""
        try:
            import zeroconf  # noqa: F401 - only whether it is there
        except ImportError:
            log_event("oscquery_not_advertised", reason="zeroconf is not installed")
            log.warning("OSCQuery: zeroconf is not installed (pip install 'art2mus[oscquery]'): "
                        "discovery by name is off; give controllers the address "
                        "http://HOST:%d", http_port)
            return None
        advertisement = cls(name, host, http_port, osc_port, log_event)
        advertisement._thread.start()
        return advertisement

    def _register(self) -> None:
        try:
            from zeroconf import InterfaceChoice, IPVersion, ServiceInfo, Zeroconf

            addresses = _advertised_addresses(self.host)
            interfaces = (InterfaceChoice.All if self.host in ("", "0.0.0.0")
                          else addresses)
            with self._lock:
                if self._closed:
                    return
                self._zeroconf = Zeroconf(interfaces=interfaces, ip_version=IPVersion.V4Only)
            server = f"{socket.gethostname().split('.')[0] or 'art2mus'}.local."
            for kind, port in ((SERVICE_OSCJSON, self.http_port), (SERVICE_OSC, self.osc_port)):
                info = ServiceInfo(kind, f"{self.name}.{kind}", port=port, server=server,
                                   addresses=[socket.inet_aton(a) for a in addresses])
                with self._lock:
                    if self._closed:
                        return
                    zc = self._zeroconf
                zc.register_service(info, allow_name_change=True)
                self.registered.append(info.name)
            self.log_event("oscquery_advertised", services=list(self.registered),
                           addresses=addresses)
        except Exception as error:  # noqa: BLE001 - no multicast, a name clash...: HTTP goes on
            if not self._closed:
                self.log_event("oscquery_not_advertised", reason=repr(error)[:200])
                log.warning("OSCQuery: mDNS advertisement failed (%r): discovery by name is "
                            "off; give controllers the address http://HOST:%d",
                            error, self.http_port)
        finally:
            self.done.set()

    def close(self) -> None:
        """Unregister both services and stop zeroconf (waits for a registration under way)."""
        self._thread.join(timeout=10.0)
        with self._lock:
            self._closed = True
            zc, self._zeroconf = self._zeroconf, None
        if zc is not None:
            try:
                zc.unregister_all_services()
            finally:
                zc.close()


# -- the service ---------------------------------------------------------------


class OscQueryServer:
    """The OSCQuery HTTP server for one OSC in, and its mDNS advertisement."""

    def __init__(self, config: OscConfig, hub: ControlHub, log_event: EventSink, *,
                 osc_port: int, name: str,
                 rows: Callable[[], list[dict[str, Any]]] | None = None) -> None:
        self.config = config
        self.hub = hub
        self.log_event = log_event
        self.osc_port = osc_port
        self.name = name
        self.rows = rows
        self.namespace = namespace(config, hub, state=rows is not None)
        self.advertisement: Advertisement | None = None
        self._server: _QueryHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @classmethod
    def start(cls, config: OscConfig, hub: ControlHub, log_event: EventSink, *,
              osc_port: int, rows: Callable[[], list[dict[str, Any]]] | None = None,
              name: str | None = None, port: int | None = None,
              advertise: bool = True,
              clock: Callable[[], float] = time.monotonic) -> OscQueryServer:
        """Serve on ``config.listen``'s host, TCP ``port`` (default ``config.query_port``;
        0 = any free one), describing the OSC in on UDP ``osc_port``; advertise by mDNS.

        ``rows`` (the supervisor's role rows) adds the room state nodes; ``name``
        (default the installation's) is HOST_INFO's NAME and the DNS-SD instance;
        ``clock`` measures each request's :data:`CLIENT_TIMEOUT_S` (a test's fake).
        OSError when the port cannot be bound.
        """
        self = cls(config, hub, log_event, osc_port=osc_port, rows=rows,
                   name=name or hub.config.installation.name)
        host = config.listen.rpartition(":")[0]
        server = _QueryHTTPServer((host, config.query_port if port is None else port), clock)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="oscquery-http", daemon=True)
        self._thread.start()
        log_event("oscquery_listening", url=self.url, osc_port=osc_port)
        if advertise:
            self.advertisement = Advertisement.start(self.name, host, self.port, osc_port,
                                                     log_event)
        return self

    @property
    def port(self) -> int:
        """The TCP port actually bound (useful with port 0)."""
        assert self._server is not None
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the server."""
        assert self._server is not None
        return f"http://{self._server.server_name}:{self.port}"

    def host_info(self, osc_ip: str) -> dict[str, Any]:
        """HOST_INFO: who we are and where OSC in listens (``osc_ip``: as the client sees it)."""
        return {"NAME": self.name, "OSC_IP": osc_ip, "OSC_PORT": self.osc_port,
                "OSC_TRANSPORT": "UDP", "EXTENSIONS": dict(EXTENSIONS)}

    def answer(self, target: str, osc_ip: str) -> tuple[HTTPStatus, dict[str, Any] | None]:
        """The status and JSON body for the request target ``target`` (path and query)."""
        if len(target) > MAX_PATH_CHARS:
            return HTTPStatus.REQUEST_URI_TOO_LONG, {
                "ERROR": f"request path: expected at most {MAX_PATH_CHARS} characters, "
                         f"got {len(target)}"}
        parts = urlsplit(target)
        path, attribute = unquote(parts.path) or "/", parts.query
        if not path.startswith("/"):  # "*", "junk/art2mus/...": not a path in the tree
            return HTTPStatus.NOT_FOUND, {
                "ERROR": f"request path {path[:100]!r}: expected it to start with '/'"}
        node = self.namespace.find(path)
        if node is None:
            return HTTPStatus.NOT_FOUND, {"ERROR": f"no OSC node at {path[:100]!r}"}
        if attribute == "HOST_INFO" and node is self.namespace.root:
            return HTTPStatus.OK, self.host_info(osc_ip)
        reading = Reading(self.rows)
        if not attribute:
            return HTTPStatus.OK, self.namespace.describe(node, reading)
        if attribute not in ATTRIBUTES:
            return HTTPStatus.BAD_REQUEST, {
                "ERROR": f"attribute {attribute[:40]!r}: expected one of "
                         f"{list(ATTRIBUTES)} (HOST_INFO on /)"}
        described = self.namespace.describe(node, reading, deep=attribute == "CONTENTS")
        if attribute not in described:
            return HTTPStatus.NO_CONTENT, None
        return HTTPStatus.OK, {attribute: described[attribute]}

    def close(self) -> None:
        """Stop serving, then unregister from mDNS."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self.advertisement is not None:
            self.advertisement.close()
            self.advertisement = None
