"""Prometheus metrics, one endpoint per role process (off unless ``[metrics] port`` is set).

Ports follow the role's place in the installation, so a scrape config can be
written from the TOML file alone: the supervisor on ``port``, the engine on
``port + 1``, room *i* (0-based, in config order) on ``port + 2 + 2i``
(audio_out) and ``port + 3 + 2i`` (capture).

Exported (labels in braces):

- ``art2mus_chunk_generation_seconds{room}``: histogram of the time to generate one chunk
- ``art2mus_realtime_factor{room}``: seconds of audio generated per second spent
- ``art2mus_chunk_audio_seconds{room}``: the audio one chunk holds: the generation budget
- ``art2mus_lead_seconds{room}``: how far the engine's queue runs ahead of the playhead
- ``art2mus_underflows_total{room}``: audio_out starvations (hold/fade started); 0 from
  the room's first heartbeat on, so a dashboard sees the room before anything goes wrong
- ``art2mus_playhead_seconds{room}``: audio_out's playhead, seconds into the room's stream
- ``art2mus_level_dbfs{room}``: audio_out's RMS level over the last heartbeat
  (:data:`LEVEL_FLOOR_DBFS` while nothing plays): a silent room stays at the floor
- ``art2mus_detection_confidence{room}``: capture's confidence in the current view
- ``art2mus_capture_fps{room}``: capture's effective frame rate (lower while it sheds load)
- ``art2mus_camera_ok{room}``: 1 while the camera delivers frames, 0 while it is lost
- ``art2mus_camera_fps{room}``: frames per second the camera delivers
- ``art2mus_camera_frame_age_seconds{room}``: seconds since the camera's last frame
- ``art2mus_camera_reconnects_total{room}``: times a network camera came back after a loss
- ``art2mus_artwork_info{room,artwork_id,title}``: the artwork capture publishes (value 1;
  empty id and title on an empty wall)
- ``art2mus_messages_dropped_total{socket,reason}``: malformed/oversized/wrong-version frames
- ``art2mus_recording_ok{room}``: audio_out's recording, 1 while it writes, 0 while it has
  failed (a full or unwritable disk: retried in a new segment, 1 again once that takes
  writes); absent when the room records nothing
- ``art2mus_role_restarts_total{role}``, ``art2mus_role_up{role}``,
  ``art2mus_heartbeat_age_seconds{role}``: the supervisor's view of every role
- ``art2mus_write_errors_total{target}``: the supervisor's failed writes (status file,
  role logs, its event log, the run report): a full or failing disk

- ``art2mus_metrics_connections_refused_total{reason}``: connections to this endpoint
  closed unanswered (see below)

With the port at 0 nothing is imported or opened and every method is a no-op,
so the roles call them unconditionally.

The endpoint (:class:`MetricsEndpoint`) is not prometheus_client's
``start_http_server``, which gives every connection a thread of its own for as
long as it stays open: a few hundred idle connections from the LAN (``[metrics]
host = "0.0.0.0"``) took every file descriptor of the supervisor, which then
could not restart a role and died. Here one thread serves every connection
(a selector), at most :data:`ENDPOINT_MAX_CONNECTIONS` at once and
:data:`ENDPOINT_MAX_PER_PEER` from one address (:class:`ConnectionBook` decides
who gives way: a connection that has not sent its request yet, from the address
holding the most such; a refused one is closed unread after
:data:`ENDPOINT_REFUSED_LINGER_S`); one that sends no request head within
:data:`ENDPOINT_HEAD_TIMEOUT_S`, or does not take its answer within
:data:`ENDPOINT_ANSWER_TIMEOUT_S`, is closed. Connections closed unanswered are
counted by reason in ``art2mus_metrics_connections_refused_total`` and said in
the log at most once per :data:`ENDPOINT_SAY_EVERY_S`. One request per
connection (``Connection: close``), which Prometheus's scraper handles.
"""

from __future__ import annotations

import errno
import functools
import logging
import selectors
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ground.config import MetricsConfig
from ground.errors import DependencyError

_log = logging.getLogger(__name__)

#: Histogram buckets for chunk generation time (seconds): 1 ms .. 4 s.
GENERATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)

#: ``art2mus_level_dbfs`` while nothing is played (no reading, or digital silence).
LEVEL_FLOOR_DBFS = -120.0


#: Connections the metrics endpoint holds at once (a Prometheus server scrapes over one).
ENDPOINT_MAX_CONNECTIONS = 16
#: Connections one peer address may hold on the metrics endpoint.
ENDPOINT_MAX_PER_PEER = 4
#: Seconds a connection has to send its request head, from its start.
ENDPOINT_HEAD_TIMEOUT_S = 5.0
#: Seconds a connection has to take its whole answer, once its request is in.
ENDPOINT_ANSWER_TIMEOUT_S = 10.0
#: The longest request head read; a longer one is answered 431.
ENDPOINT_MAX_HEAD_BYTES = 8192
#: Seconds between two log lines about connections the endpoint closed unanswered.
ENDPOINT_SAY_EVERY_S = 60.0
#: Seconds the endpoint stops accepting when the process is out of file descriptors.
ENDPOINT_ACCEPT_PAUSE_S = 0.5
#: A refused connection is closed after this long, unread (at most ENDPOINT_MAX_LINGERING
#: at once, past them at once): a client reopening a socket as soon as it is closed would
#: otherwise make the endpoint accept and close as fast as it can.
ENDPOINT_REFUSED_LINGER_S = 1.0
ENDPOINT_MAX_LINGERING = 16


@dataclass
class _Booked:
    peer: str
    close: Callable[[], None]
    waiting: bool = True  # no request head yet (or none since its last answer)


@dataclass
class ConnectionBook:
    """The connections one server holds, by peer address, and who gives way when it is full.

    A connection is *waiting* from its start until its request head is in
    (:meth:`started`), and again between two requests on a kept-alive connection
    (:meth:`waiting`); a waiting connection is one that may be idle on purpose. A
    new connection (:meth:`admit`) is refused, or makes another give way (closed
    at once, counted as ``evicted``), when:

    - its peer holds ``max_per_peer``: that peer's own oldest waiting connection
      gives way; with none waiting, the new one is refused (``per-peer``);
    - ``max_waiting`` connections are waiting, or ``max_total`` are held: the
      oldest waiting connection of the peer holding the most waiting ones gives
      way, unless the new one's peer holds as many (then it is refused, ``full``).

    So idle sockets from a few addresses, reopened as fast as they are cut, never
    keep out another address (the technician's browser, the Prometheus server):
    its connection takes the place of one of theirs, and a connection that has sent
    its request is never closed for another. ``on_refused(reason)`` hears of every
    connection closed unanswered (``per-peer``, ``full``, ``evicted``).
    Thread-safe; ``close`` callables are called outside the lock.
    """

    max_per_peer: int
    max_waiting: int
    max_total: int | None = None
    on_refused: Callable[[str], None] | None = None
    refused: Counter[str] = field(default_factory=Counter)
    _booked: dict[Hashable, _Booked] = field(default_factory=dict, repr=False)  # oldest first
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def admit(self, key: Hashable, peer: str, close: Callable[[], None]) -> bool:
        """Book a new connection from ``peer`` (``close`` closes it, should it give way
        later); False when it is refused (the caller closes it)."""
        closing: list[Callable[[], None]] = []
        reasons: list[str] = []
        with self._lock:
            refused = None
            mine = [k for k, booked in self._booked.items() if booked.peer == peer]
            if len(mine) >= self.max_per_peer:
                victim = next((k for k in mine if self._booked[k].waiting), None)
                if victim is None:
                    refused = "per-peer"
                else:
                    closing.append(self._booked.pop(victim).close)
                    reasons.append("evicted")
            waiting = Counter(b.peer for b in self._booked.values() if b.waiting)
            if refused is None and (
                    sum(waiting.values()) >= self.max_waiting
                    or (self.max_total is not None and len(self._booked) >= self.max_total)):
                biggest = max(waiting, key=waiting.__getitem__, default=None)
                if biggest is None or waiting[biggest] <= waiting[peer]:
                    refused = "full"
                else:
                    victim = next(k for k, b in self._booked.items()
                                  if b.peer == biggest and b.waiting)
                    closing.append(self._booked.pop(victim).close)
                    reasons.append("evicted")
            if refused is None:
                self._booked[key] = _Booked(peer, close)
            else:
                reasons.append(refused)
            self.refused.update(reasons)
        for close_one in closing:
            close_one()
        if self.on_refused is not None:
            for reason in reasons:
                self.on_refused(reason)
        return refused is None

    def started(self, key: Hashable) -> None:
        """``key``'s request head is in: it is no longer waiting (never given way)."""
        with self._lock:
            booked = self._booked.get(key)
            if booked is not None:
                booked.waiting = False

    def waiting(self, key: Hashable) -> None:
        """``key`` answered its request and waits for another (a kept-alive connection)."""
        with self._lock:
            booked = self._booked.get(key)
            if booked is not None:
                booked.waiting = True

    def release(self, key: Hashable) -> None:
        """``key`` closed (a no-op for one that gave way)."""
        with self._lock:
            self._booked.pop(key, None)

    def held(self, peer: str | None = None) -> int:
        """Connections held (from ``peer`` only, when given)."""
        with self._lock:
            return sum(peer is None or b.peer == peer for b in self._booked.values())

    def waiting_count(self) -> int:
        """Connections held that have not sent a request (head) yet."""
        with self._lock:
            return sum(b.waiting for b in self._booked.values())


@dataclass
class _Connection:
    sock: socket.socket
    deadline: float
    head: bytearray = field(default_factory=bytearray)
    answer: memoryview | None = None  # what is left to send, once the request is in


class MetricsEndpoint:
    """Serves a WSGI app (prometheus_client's ``make_wsgi_app``) over HTTP from one thread,
    with bounded connections (see the module docstring).

    ``clock`` measures the timeouts (a test's fake may replace it). OSError when
    ``host:port`` cannot be bound.
    """

    def __init__(self, app: Callable[..., Any], host: str, port: int,
                 on_refused: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.clock = clock
        self._on_refused = on_refused
        self.book = ConnectionBook(ENDPOINT_MAX_PER_PEER, ENDPOINT_MAX_CONNECTIONS,
                                   ENDPOINT_MAX_CONNECTIONS, self._refused)
        self.answered = 0
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                      flags=socket.AI_PASSIVE)[0]
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(address)
            listener.listen(64)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self.port = int(listener.getsockname()[1])
        self._wake_r, self._wake_w = socket.socketpair()
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._connections: dict[socket.socket, _Connection] = {}
        self._lingering: deque[tuple[float, socket.socket]] = deque()  # refused, to close
        self._accept_paused_until: float | None = None
        self._closing = False
        self._unsaid: Counter[str] = Counter()
        self._said_at: float | None = None
        self._thread = threading.Thread(target=self._serve, name="metrics-http", daemon=True)
        self._thread.start()

    # -- the loop ---------------------------------------------------------------

    def _serve(self) -> None:
        try:
            while not self._closing:
                for key, events in self._selector.select(self._next_timeout()):
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.fileobj is self._wake_r:
                        self._wake_r.recv(64)
                    elif events & selectors.EVENT_READ:
                        self._read(key.fileobj)  # type: ignore[arg-type]
                    else:
                        self._write(key.fileobj)  # type: ignore[arg-type]
                self._expire()
        finally:
            for sock in list(self._connections):
                self._close(sock)
            while self._lingering:
                self._lingering.popleft()[1].close()

    def _next_timeout(self) -> float:
        deadlines = [c.deadline for c in self._connections.values()]
        if self._lingering:
            deadlines.append(self._lingering[0][0])
        if self._accept_paused_until is not None:
            deadlines.append(self._accept_paused_until)
        if not deadlines:
            return 1.0
        return min(1.0, max(0.0, min(deadlines) - self.clock()))

    def _accept(self) -> None:
        for _ in range(64):  # a burst of connections never starves the others' answers
            try:
                sock, address = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as error:
                if error.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # the listener stays readable: accepting again at once would spin
                    self._selector.unregister(self._listener)
                    self._accept_paused_until = self.clock() + ENDPOINT_ACCEPT_PAUSE_S
                    self._refused("no-descriptors")
                    return
                continue  # ECONNABORTED and the like: that one connection is gone
            peer = str(address[0]) if isinstance(address, tuple) else ""
            arrived = self.clock()  # its deadlines run from here
            if not self.book.admit(sock, peer, functools.partial(self._close, sock)):
                if len(self._lingering) < ENDPOINT_MAX_LINGERING:
                    self._lingering.append((arrived + ENDPOINT_REFUSED_LINGER_S, sock))
                else:
                    sock.close()
                continue
            sock.setblocking(False)
            self._connections[sock] = _Connection(sock, arrived + ENDPOINT_HEAD_TIMEOUT_S)
            self._selector.register(sock, selectors.EVENT_READ)

    def _read(self, sock: socket.socket) -> None:
        connection = self._connections.get(sock)
        if connection is None:
            return
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(sock)
            return
        connection.head += data
        end = connection.head.find(b"\r\n\r\n")
        if end < 0:
            if len(connection.head) > ENDPOINT_MAX_HEAD_BYTES:
                self._answer(connection, "431 Request Header Fields Too Large", [], b"")
            return
        self.book.started(sock)
        self._answer(connection, *self._respond(bytes(connection.head[:end])))

    def _respond(self, head: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
        """The status, headers and body for one request head."""
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return "400 Bad Request", [], b""
        method, target, _ = parts
        path, _, query = target.partition("?")
        environ: dict[str, Any] = {"REQUEST_METHOD": method, "PATH_INFO": path,
                                   "QUERY_STRING": query}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if colon:
                environ["HTTP_" + name.strip().upper().replace("-", "_")] = value.strip()
        answer: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]],
                           exc_info: Any = None) -> Callable[[bytes], None]:
            answer["status"], answer["headers"] = status, headers
            return lambda _: None

        try:
            body = b"".join(self.app(environ, start_response))
        except Exception as error:  # noqa: BLE001 - a failing collector must not stop it
            _log.warning("metrics endpoint: the answer failed: %r", error)
            return "500 Internal Server Error", [], b""
        return answer["status"], answer["headers"], body

    def _answer(self, connection: _Connection, status: str, headers: list[tuple[str, str]],
                body: bytes) -> None:
        head = [f"HTTP/1.1 {status}", *(f"{name}: {value}" for name, value in headers
                                        if name.lower() not in ("content-length", "connection")),
                f"Content-Length: {len(body)}", "Connection: close", "", ""]
        connection.answer = memoryview("\r\n".join(head).encode("latin-1") + body)
        connection.deadline = self.clock() + ENDPOINT_ANSWER_TIMEOUT_S
        self._selector.modify(connection.sock, selectors.EVENT_WRITE)
        self._write(connection.sock)

    def _write(self, sock: socket.socket) -> None:
        connection = self._connections.get(sock)
        if connection is None or connection.answer is None:
            return
        try:
            sent = sock.send(connection.answer)
        except BlockingIOError:
            return
        except OSError:
            self._close(sock)
            return
        connection.answer = connection.answer[sent:]
        if not connection.answer:
            self.answered += 1
            self._close(sock)

    def _expire(self) -> None:
        now = self.clock()
        while self._lingering and now >= self._lingering[0][0]:
            self._lingering.popleft()[1].close()
        for sock, connection in list(self._connections.items()):
            if now >= connection.deadline:
                self._refused("timeout" if connection.answer is None else "slow-reader")
                self._close(sock)
        if self._accept_paused_until is not None and now >= self._accept_paused_until:
            self._accept_paused_until = None
            self._selector.register(self._listener, selectors.EVENT_READ)
        self._say_due()

    def _close(self, sock: socket.socket) -> None:
        if self._connections.pop(sock, None) is not None:
            self._selector.unregister(sock)
        self.book.release(sock)
        sock.close()

    def _refused(self, reason: str) -> None:
        """Count one connection closed unanswered; say the count at most once per
        ENDPOINT_SAY_EVERY_S (the first at once)."""
        if self._on_refused is not None:
            self._on_refused(reason)
        self._unsaid[reason] += 1
        self._say_due()

    def _say_due(self) -> None:
        """Say what was closed unanswered since the last line, if ENDPOINT_SAY_EVERY_S has
        passed since it (the loop calls it every turn: said even once the flood stops)."""
        now = self.clock()
        if self._unsaid and (self._said_at is None
                             or now - self._said_at >= ENDPOINT_SAY_EVERY_S):
            count, reasons = sum(self._unsaid.values()), ", ".join(
                f"{name} {n}" for name, n in sorted(self._unsaid.items()))
            since = "" if self._said_at is None else f" in {now - self._said_at:.0f} s"
            _log.warning("metrics endpoint on port %d: closed %d connection(s) unanswered%s "
                         "(%s); art2mus_metrics_connections_refused_total counts them",
                         self.port, count, since, reasons)
            self._unsaid.clear()
            self._said_at = now

    def close(self) -> None:
        """Stop serving: every connection and the listener are closed."""
        self._closing = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._thread.join(timeout=5.0)
        self._selector.close()
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()


def metrics_port(metrics: MetricsConfig, role: str, room_index: int = 0) -> int:
    """The port of ``role`` (of the room at ``room_index`` in the config) under the layout
    above; 0 when metrics are off."""
    base = metrics.port
    if base == 0:
        return 0
    if role == "supervisor":
        return base
    if role == "engine":
        return base + 1
    return base + 2 + 2 * room_index + (1 if role == "capture" else 0)


class Metrics:
    """The collectors of one role process and its HTTP endpoint."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1") -> None:
        self.port = port
        self.enabled = port > 0
        self._seen: dict[tuple[Any, ...], float] = {}
        self._server: MetricsEndpoint | None = None
        if not self.enabled:
            return
        try:
            import prometheus_client as prom
        except ImportError:
            raise DependencyError("[metrics] port needs prometheus-client "
                                  "(pip install prometheus-client)") from None
        self.registry = prom.CollectorRegistry()
        r = self.registry
        self.generation = prom.Histogram("art2mus_chunk_generation_seconds",
                                         "Time to generate one chunk", ["room"], registry=r,
                                         buckets=GENERATION_BUCKETS)
        self.realtime_factor = prom.Gauge("art2mus_realtime_factor",
                                          "Audio seconds generated per second spent", ["room"],
                                          registry=r)
        self.chunk_audio = prom.Gauge("art2mus_chunk_audio_seconds",
                                      "Audio one chunk holds (the generation budget)", ["room"],
                                      registry=r)
        self.lead = prom.Gauge("art2mus_lead_seconds", "Queue end minus playhead", ["room"],
                               registry=r)
        self.playhead = prom.Gauge("art2mus_playhead_seconds",
                                   "audio_out's playhead, seconds into the stream", ["room"],
                                   registry=r)
        self.level = prom.Gauge("art2mus_level_dbfs", "RMS level of what the room plays, dBFS",
                                ["room"], registry=r)
        self.camera_ok = prom.Gauge("art2mus_camera_ok", "1 while the camera delivers frames",
                                    ["room"], registry=r)
        self.camera_fps = prom.Gauge("art2mus_camera_fps", "Frames per second the camera sends",
                                     ["room"], registry=r)
        self.frame_age = prom.Gauge("art2mus_camera_frame_age_seconds",
                                    "Seconds since the camera's last frame", ["room"], registry=r)
        self.camera_reconnects = prom.Counter("art2mus_camera_reconnects",
                                              "Times the camera came back after a loss",
                                              ["room"], registry=r)
        self.artwork = prom.Info("art2mus_artwork", "The artwork capture publishes", ["room"],
                                 registry=r)
        self.underflows = prom.Counter("art2mus_underflows", "Playback starvations", ["room"],
                                       registry=r)
        self.confidence = prom.Gauge("art2mus_detection_confidence",
                                     "Confidence in the current view", ["room"], registry=r)
        self.capture_fps = prom.Gauge("art2mus_capture_fps",
                                      "Capture's effective frames per second", ["room"],
                                      registry=r)
        self.dropped = prom.Counter("art2mus_messages_dropped", "Frames refused and dropped",
                                    ["socket", "reason"], registry=r)
        self.restarts = prom.Counter("art2mus_role_restarts", "Role restarts", ["role"],
                                     registry=r)
        self.recording_ok = prom.Gauge("art2mus_recording_ok",
                                       "1 while the room's recording writes, 0 while it has failed",
                                       ["room"], registry=r)
        self.up = prom.Gauge("art2mus_role_up", "1 while the role runs", ["role"], registry=r)
        self.heartbeat_age = prom.Gauge("art2mus_heartbeat_age_seconds",
                                        "Seconds since the role's last heartbeat", ["role"],
                                        registry=r)
        self.write_errors = prom.Counter("art2mus_write_errors",
                                         "Writes the supervisor could not make", ["target"],
                                         registry=r)
        # The engine's generator backend (engine.backend = "ray"): its health and, per
        # Serve replica, what issue 19 asks a technician to see.
        self.backend_healthy = prom.Gauge("art2mus_backend_healthy",
                                          "1 while the generator backend answers, 0 while the "
                                          "engine makes every chunk itself", ["backend"],
                                          registry=r)
        self.backend_local = prom.Counter("art2mus_backend_local_chunks",
                                          "Chunks the engine made itself instead of the backend",
                                          ["backend"], registry=r)
        self.backend_hop = prom.Gauge("art2mus_backend_hop_p95_seconds",
                                      "Latency the hop to the backend adds, p95 of recent "
                                      "requests", ["backend"], registry=r)
        self.replica_requests = prom.Counter("art2mus_replica_requests",
                                             "Chunk requests a replica answered", ["replica"],
                                             registry=r)
        self.replica_missed = prom.Counter("art2mus_replica_deadlines_missed",
                                           "Chunks a replica finished after they were due",
                                           ["replica"], registry=r)
        self.replica_batch = prom.Gauge("art2mus_replica_batch_size",
                                        "Mean batch of a replica's recent requests", ["replica"],
                                        registry=r)
        self.replica_queue = prom.Gauge("art2mus_replica_queue_wait_p95_seconds",
                                        "Queue wait in a replica, p95 of recent requests",
                                        ["replica"], registry=r)
        self.replica_rooms = prom.Gauge("art2mus_replica_rooms", "Rooms a replica serves",
                                        ["replica"], registry=r)
        self.endpoint_refused = prom.Counter(
            "art2mus_metrics_connections_refused",
            "Connections to this metrics endpoint closed unanswered (too many, idle, slow)",
            ["reason"], registry=r)
        try:
            self._server = MetricsEndpoint(
                prom.make_wsgi_app(r), host, port,
                on_refused=lambda reason: self.endpoint_refused.labels(reason).inc())
        except OSError as exc:
            raise DependencyError(
                f"metrics endpoint {host}:{port}: cannot listen ({exc})") from None

    def _advance(self, counter: Any, key: tuple[Any, ...], total: float) -> None:
        # Our own counts are running totals; Prometheus counters only go up by deltas.
        # The first call creates the labelled series at 0, so that it is exported
        # before anything has gone wrong (a dashboard and `increase()` need it).
        series = counter.labels(*key[1:])
        if key not in self._seen:
            self._seen[key] = 0.0
        previous = self._seen[key]
        if total > previous:
            series.inc(total - previous)
            self._seen[key] = total

    def chunk(self, room: str, generation_s: float, realtime_factor: float | None,
              lead_s: float | None, audio_s: float | None = None) -> None:
        """One chunk generated (engine); ``audio_s`` is the audio it holds (the budget)."""
        if not self.enabled:
            return
        self.generation.labels(room).observe(generation_s)
        if audio_s is not None:
            self.chunk_audio.labels(room).set(audio_s)
        if realtime_factor is not None:
            self.realtime_factor.labels(room).set(realtime_factor)
        if lead_s is not None:
            self.lead.labels(room).set(lead_s)

    def set_underflows(self, room: str, total: int) -> None:
        """audio_out's running underflow count."""
        if self.enabled:
            self._advance(self.underflows, ("underflows", room), total)

    def set_playback(self, room: str, playhead_s: float, level_dbfs: float | None) -> None:
        """audio_out's playhead and level (None: nothing played; exported as the floor)."""
        if not self.enabled:
            return
        self.playhead.labels(room).set(playhead_s)
        self.level.labels(room).set(LEVEL_FLOOR_DBFS if level_dbfs is None
                                    else max(LEVEL_FLOOR_DBFS, level_dbfs))

    def set_camera(self, room: str, ok: bool, camera_fps: float, frame_age_s: float | None,
                   reconnects: int = 0) -> None:
        """capture's camera: delivering or not, its rate, its latest frame's age, reconnects."""
        if not self.enabled:
            return
        self.camera_ok.labels(room).set(1.0 if ok else 0.0)
        self.camera_fps.labels(room).set(camera_fps)
        if frame_age_s is not None:
            self.frame_age.labels(room).set(frame_age_s)
        self._advance(self.camera_reconnects, ("camera_reconnects", room), reconnects)

    def set_artwork(self, room: str, artwork_id: str | None, title: str) -> None:
        """The artwork capture publishes for ``room`` (None: an empty wall)."""
        if self.enabled:
            self.artwork.labels(room).info({"artwork_id": artwork_id or "", "title": title})

    def names(self) -> set[str]:
        """Every sample name this endpoint can export (``_total``, ``_bucket``, ... included),
        for checking dashboards and alert rules against."""
        if not self.enabled:
            return set()
        suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count",
                                                                     "_created"),
                    "info": ("_info",), "gauge": ("",)}
        return {family.name + suffix for family in self.registry.collect()
                for suffix in suffixes.get(family.type, ("",))}

    def set_recording(self, room: str, state: str) -> None:
        """audio_out's recording state: "ok" -> 1, "failed" -> 0, "off" -> no sample."""
        if self.enabled and state != "off":
            self.recording_ok.labels(room).set(1.0 if state == "ok" else 0.0)

    def set_confidence(self, room: str, confidence: float) -> None:
        """capture's confidence in the current view."""
        if self.enabled:
            self.confidence.labels(room).set(confidence)

    def set_capture_fps(self, room: str, fps: float) -> None:
        """capture's effective frame rate."""
        if self.enabled:
            self.capture_fps.labels(room).set(fps)

    def set_dropped(self, socket: str, by_reason: Mapping[str, int]) -> None:
        """A socket's running drop counts by reason."""
        if not self.enabled:
            return
        for reason, total in by_reason.items():
            self._advance(self.dropped, ("dropped", socket, reason), total)

    def set_role(self, role: str, up: bool, restarts: int, heartbeat_age_s: float | None) -> None:
        """The supervisor's view of one role."""
        if not self.enabled:
            return
        self.up.labels(role).set(1.0 if up else 0.0)
        self._advance(self.restarts, ("restarts", role), restarts)
        if heartbeat_age_s is not None:
            self.heartbeat_age.labels(role).set(heartbeat_age_s)

    def set_write_errors(self, by_target: Mapping[str, int]) -> None:
        """The supervisor's running counts of failed writes, by target."""
        if not self.enabled:
            return
        for target, total in by_target.items():
            self._advance(self.write_errors, ("write_errors", target), total)

    def set_backend(self, backend: Mapping[str, Any]) -> None:
        """The engine's generator backend, from its status (``RayGenerator.backend_status``):
        its health, chunks made locally, the hop, and per replica requests, missed deadlines,
        batch size, queue wait and rooms. The local generator exports nothing."""
        if not self.enabled or backend.get("kind") in (None, "local"):
            return
        kind = str(backend["kind"])
        self.backend_healthy.labels(kind).set(1.0 if backend.get("state") == "ok" else 0.0)
        self._advance(self.backend_local, ("backend_local", kind),
                      float(backend.get("local_chunks") or 0))
        if isinstance(backend.get("hop_ms_p95"), (int, float)):
            self.backend_hop.labels(kind).set(backend["hop_ms_p95"] / 1000.0)
        for name, replica in (backend.get("replicas") or {}).items():
            self._advance(self.replica_requests, ("replica_requests", name),
                          float(replica.get("requests") or 0))
            self._advance(self.replica_missed, ("replica_missed", name),
                          float(replica.get("missed") or 0))
            self.replica_rooms.labels(name).set(len(replica.get("rooms") or []))
            if isinstance(replica.get("batch_mean"), (int, float)):
                self.replica_batch.labels(name).set(replica["batch_mean"])
            if isinstance(replica.get("queue_ms_p95"), (int, float)):
                self.replica_queue.labels(name).set(replica["queue_ms_p95"] / 1000.0)

    def close(self) -> None:
        """Stop the HTTP endpoint."""
        if self._server is not None:
            self._server.close()
            self._server = None


def role_metrics(metrics: MetricsConfig, role: str, room_index: int = 0) -> Metrics:
    """The metrics of ``role`` as the config lays them out (no-op when the port is 0)."""
    return Metrics(metrics_port(metrics, role, room_index), metrics.host)
