"""CurveZMQ between machines: key pairs, socket options and client authentication.

With ``[security] curve = true`` every ZeroMQ link whose endpoint leaves the
machine (a ``tcp://`` host that is not loopback) is encrypted and
authenticated (RFC 26, CurveZMQ):

- the side that **binds** (the engine's views/chunks/clock) is the Curve
  *server*: it holds ``server.key_secret`` and accepts only clients whose
  public key is a file in ``authorized/`` (checked by a ZAP handler,
  :class:`zmq.auth.thread.ThreadAuthenticator`);
- the side that **connects** (capture, audio_out on a room machine) is a
  *client*: it holds its own pair, ``NAME.key_secret`` where NAME is
  ``[security] client_key`` (default ``client``), and ``server.key`` (the
  server's public key, so it cannot be fooled by an impostor engine).

Loopback and ``ipc://`` links (the supervisor's control socket, everything
on a one-machine installation) stay in clear: nothing outside the machine
can reach them, and each machine then needs only the keys of its side.

``art2mus keys DIR --client room-1 --client room-2`` writes the layout
(:func:`create_keys`; without ``--client``, one pair named ``client``)::

    DIR/server.key  DIR/server.key_secret      engine machine (server.key also to rooms)
    DIR/room-1.key  DIR/room-1.key_secret      room-1's machine: client_key = "room-1"
    DIR/authorized/room-1.key ...              engine machine: who may connect

An existing pair is kept, so adding a room later does not replace the
server's key that every room machine already trusts.

A handshake that fails is said, never silent (a room with a wrong key,
curve off, or another installation's ``server.key`` plays nothing, and
ZeroMQ itself tells no one): :func:`watch_handshakes` reads the failures of a
socket from its monitor, the ZAP handler reports each key it refuses with
the peer's address, and :class:`HandshakeFailures` says one log line per
endpoint a minute (and a ``handshake_failed`` event where a sink is set,
:func:`set_handshake_sink`), naming the endpoint and the likely fix. Every
failure is counted; :func:`handshake_failures` returns them for a role's
status. Note that ZeroMQ does not retry a link after the peer refused a key
or spoke another mechanism: the room must restart once its keys are fixed.
"""

from __future__ import annotations

import itertools
import logging
import queue
import re
import shutil
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import zmq

from ground.config import SecurityConfig
from ground.errors import ConfigError, InputError
from ground.events import EventSink

_log = logging.getLogger(__name__)

_LOOPBACK = ("127.", "localhost", "::1", "[::1]")
_KEY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def is_remote(endpoint: str) -> bool:
    """True when ``endpoint`` can be reached from another machine (tcp, not loopback)."""
    if not endpoint.startswith("tcp://"):
        return False
    host = urlsplit(endpoint).hostname or endpoint[6:].rpartition(":")[0]
    return not host.startswith(_LOOPBACK)


@dataclass(frozen=True)
class CurveKeys:
    """The key files of one installation (see the module docstring for the layout)."""

    folder: Path
    include_loopback: bool = False
    client: str = "client"

    def applies_to(self, endpoint: str) -> bool:
        """True when a socket on ``endpoint`` is secured (links off the machine, or all tcp)."""
        if self.include_loopback:
            return endpoint.startswith("tcp://")
        return is_remote(endpoint)

    @property
    def authorized(self) -> Path:
        """Folder of client public keys the server accepts."""
        return self.folder / "authorized"

    def _load(self, name: str, secret: bool) -> tuple[bytes, bytes | None]:
        import zmq.auth

        path = self.folder / (f"{name}.key_secret" if secret else f"{name}.key")
        if not path.is_file():
            field = ("security.client_key" if name == self.client and name != "server"
                     else "security.keys_dir")
            pairs = self.client_pairs()
            there = (f"; the client pairs there are {', '.join(pairs)} "
                     f"(set [security] client_key to this machine's)") if pairs else ""
            raise ConfigError(f"{field}: expected {path} (create the keys with "
                              f"`art2mus keys {self.folder} --client NAME`), got no such "
                              f"file{there}")
        try:
            public, secret_key = zmq.auth.load_certificate(str(path))
        except (ValueError, OSError) as exc:
            raise ConfigError(f"security.keys_dir: {path} is not a ZeroMQ certificate: "
                              f"{exc}") from None
        if secret and secret_key is None:
            raise ConfigError(f"security.keys_dir: {path} holds no secret key")
        return public, secret_key

    def make_server(self, socket: zmq.Socket) -> None:
        """Make a binding socket a Curve server."""
        public, secret = self._load("server", secret=True)
        socket.curve_secretkey = secret
        socket.curve_publickey = public
        socket.curve_server = True

    def client_pairs(self) -> list[str]:
        """Names of the client key pairs (secret key present) in the folder."""
        if not self.folder.is_dir():
            return []
        return sorted(p.name.removesuffix(".key_secret") for p in self.folder.glob("*.key_secret")
                      if p.name != "server.key_secret")

    def check(self, server: bool, client: bool) -> None:
        """Load the files a binding (``server``) or connecting (``client``) role needs.

        :class:`ConfigError` names the first that is missing or unreadable.
        """
        if server:
            self._load("server", secret=True)
            if not self.authorized.is_dir() or not any(self.authorized.glob("*.key")):
                raise ConfigError(f"security.keys_dir: expected authorized client keys in "
                                  f"{self.authorized}, got none")
        if client:
            self._load(self.client, secret=True)
            self._load("server", secret=False)

    def make_client(self, socket: zmq.Socket) -> None:
        """Make a connecting socket a Curve client of the installation's server."""
        public, secret = self._load(self.client, secret=True)
        server_public, _ = self._load("server", secret=False)
        socket.curve_secretkey = secret
        socket.curve_publickey = public
        socket.curve_serverkey = server_public


_authenticators: dict[int, object] = {}
_auth_lock = threading.Lock()


def ensure_authenticator(context: zmq.Context, keys: CurveKeys) -> None:
    """Start (once per context) the ZAP handler that accepts only authorized client keys.

    Each key it refuses is a handshake failure of the peer's address
    (:class:`HandshakeFailures`), said with the folder the key is missing from.
    """
    with _auth_lock:
        if id(context) in _authenticators:
            return
        if not keys.authorized.is_dir():
            raise ConfigError(f"security.keys_dir: expected a folder of authorized client keys "
                              f"at {keys.authorized}, got none")
        auth = _reporting_authenticator(context, keys)
        auth.start()
        _authenticators[id(context)] = auth


def _reporting_authenticator(context: zmq.Context, keys: CurveKeys) -> Any:
    """A ThreadAuthenticator accepting the keys in ``keys.authorized`` that reports refusals."""
    import zmq.auth
    from zmq.auth.thread import ThreadAuthenticator

    try:
        authorized = set(zmq.auth.load_certificates(str(keys.authorized)))
    except (ValueError, OSError) as exc:
        raise ConfigError(f"security.keys_dir: expected ZeroMQ public keys (*.key) in "
                          f"{keys.authorized}, got one that does not read: {exc}") from None

    class ReportingAuthenticator(ThreadAuthenticator):
        peer = ""  # the address of the request being handled (one ZAP thread: no race)

        def handle_zap_message(self, msg: list[bytes]) -> Coroutine[Any, Any, None]:
            self.peer = msg[3].decode("utf-8", "replace") if len(msg) > 3 else "?"
            return super().handle_zap_message(msg)

    class AuthorizedKeys:
        def callback(self, domain: str, key: bytes) -> bool:
            if key in authorized:
                return True
            address = auth.peer or "?"
            shown = key.decode("ascii", "replace")
            HANDSHAKES.record(
                address, "server", "key_refused",
                f"room at {address}: the engine refused its key {shown[:10]}... (the "
                f"public-key of that room's client_key pair), not in {keys.authorized}: "
                f"copy that room's NAME.key there and restart the engine (`art2mus keys "
                f"{keys.folder} --client NAME` makes and authorizes a pair), or fix "
                f"[security] client_key / keys_dir on that room; then restart the room")
            return False

    auth = ReportingAuthenticator(context)
    auth.configure_curve_callback(domain="*", credentials_provider=AuthorizedKeys())
    return auth


def stop_authenticators() -> None:
    """Stop every ZAP handler this process started (at role exit)."""
    with _auth_lock:
        for auth in _authenticators.values():
            auth.stop()  # type: ignore[attr-defined]
        _authenticators.clear()


# -- failed handshakes: a silent link says why --------------------------------------------

#: A failure on one endpoint is said at most this often (a peer with another
#: installation's server.key retries ten times a second); every one is counted.
HANDSHAKE_SAY_EVERY_S = 60.0


@dataclass
class HandshakeFailure:
    """The handshake failures of one endpoint (the link's, or a refused peer's address)."""

    endpoint: str
    side: str  # "client": this process connected; "server": it bound (or its ZAP refused)
    reason: str  # key_refused, server_key, curve_mismatch, protocol
    message: str  # the last one, as said
    count: int = 0
    last: float = 0.0  # on the registry's clock
    said: dict[str, float] = field(default_factory=dict)  # reason -> when last said


class HandshakeFailures:
    """Counts failed handshakes per endpoint (and side) and says each endpoint's at most
    once per ``every_s`` for each reason: a warning in the role's log, and a
    ``handshake_failed`` event to ``sink`` where one is set.

    Thread-safe: the monitor watcher and the ZAP thread both record here. ``clock``
    is the test seam (a fake clock decides when an endpoint may be said again).
    """

    def __init__(self, every_s: float = HANDSHAKE_SAY_EVERY_S,
                 clock: Callable[[], float] = time.monotonic,
                 sink: EventSink | None = None) -> None:
        self.every_s = every_s
        self.clock = clock
        self.sink = sink
        self._lock = threading.Lock()
        self._by_endpoint: dict[tuple[str, str], HandshakeFailure] = {}
        self.total = 0

    def record(self, endpoint: str, side: str, reason: str, message: str) -> bool:
        """Count one failure; say it unless this side of ``endpoint`` was said for the same
        ``reason`` within ``every_s`` (another reason is another diagnosis). True when said."""
        now = self.clock()
        with self._lock:
            entry = self._by_endpoint.get((side, endpoint))
            if entry is None:
                entry = self._by_endpoint[side, endpoint] = HandshakeFailure(
                    endpoint, side, reason, message)
            said = entry.said.get(reason)
            due = said is None or now - said >= self.every_s
            entry.reason, entry.message = reason, message
            entry.count += 1
            entry.last = now
            self.total += 1
            if due:
                entry.said[reason] = now
            count, sink = entry.count, self.sink
        if due:
            _log.warning("handshake failed: %s (%d so far on this endpoint)", message, count)
            if sink is not None:
                sink("handshake_failed", endpoint=endpoint, side=side, reason=reason,
                     count=count, error=message)
        return due

    def recent(self, within_s: float | None = None) -> list[dict[str, Any]]:
        """One dict per endpoint (newest first): endpoint, side, reason, count, age_s (since
        its last failure) and message; only those failing within ``within_s`` when given."""
        now = self.clock()
        with self._lock:
            entries = sorted(self._by_endpoint.values(), key=lambda e: e.last, reverse=True)
            return [{"endpoint": e.endpoint, "side": e.side, "reason": e.reason,
                     "count": e.count, "age_s": round(now - e.last, 3), "message": e.message}
                    for e in entries if within_s is None or now - e.last <= within_s]


#: The process's registry: every watched socket and the ZAP handler record here.
HANDSHAKES = HandshakeFailures()


def handshake_failures(within_s: float | None = None) -> list[dict[str, Any]]:
    """This process's failed handshakes, one dict per endpoint, newest first (for a role's
    status: ``count`` failures so far, ``age_s`` since the last, the ``message`` said);
    only those failing within the last ``within_s`` seconds when given."""
    return HANDSHAKES.recent(within_s)


def set_handshake_sink(sink: EventSink | None) -> None:
    """Also record each said failure as a ``handshake_failed`` event to ``sink`` (a role's
    event log); None: the log line only."""
    HANDSHAKES.sink = sink


_WATCHED_EVENTS = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                   | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_MONITOR_STOPPED)
_monitor_ids = itertools.count()


@dataclass
class _Watched:
    endpoint: str
    server: bool
    keys: CurveKeys | None  # None: the socket speaks in clear


class _HandshakeWatcher(threading.Thread):
    """Reads the monitor sockets of one context's watched sockets; one thread per context.

    A monitor socket is closed only once its socket has stopped (``MONITOR_STOPPED``,
    sent when the socket closes) or the context terminates: ZeroMQ's I/O thread
    blocks on a monitor nobody reads (libzmq#3575), so this thread reads until then.
    """

    def __init__(self, context: zmq.Context) -> None:
        super().__init__(name="handshake-watcher", daemon=True)
        self.context = context
        self.added: queue.SimpleQueue[tuple[zmq.Socket, _Watched]] = queue.SimpleQueue()
        self.watched: dict[zmq.Socket, _Watched] = {}
        self.accepting = True  # False (under _watch_lock) once it ends: nothing more added

    def run(self) -> None:
        from zmq.utils.monitor import recv_monitor_message

        poller = zmq.Poller()
        try:
            while not self.context.closed:
                while True:
                    try:
                        pair, watched = self.added.get_nowait()
                    except queue.Empty:
                        break
                    poller.register(pair, zmq.POLLIN)
                    self.watched[pair] = watched
                for pair, _ in poller.poll(250):
                    event = recv_monitor_message(pair)
                    if event["event"] == zmq.EVENT_MONITOR_STOPPED:
                        poller.unregister(pair)
                        self.watched.pop(pair)
                        pair.close(linger=0)
                    else:
                        try:
                            where = bytes(event["endpoint"]).decode("utf-8", "replace")
                            _report(self.watched[pair], int(event["event"]),
                                    int(event["value"]), where)
                        except Exception:  # a bug here must not stop the reading
                            _log.exception("handshake failure not reported")
        except zmq.ContextTerminated:
            pass
        finally:
            with _watch_lock:
                self.accepting = False
                if _watchers.get(id(self.context)) is self:
                    del _watchers[id(self.context)]
            pairs = list(self.watched)
            while True:  # and those handed over as the context went (none after this)
                try:
                    pairs.append(self.added.get_nowait()[0])
                except queue.Empty:
                    break
            for pair in pairs:
                pair.close(linger=0)
            self.watched.clear()


_watchers: dict[int, _HandshakeWatcher] = {}
_watch_lock = threading.Lock()


def watch_handshakes(context: zmq.Context, socket: zmq.Socket, endpoint: str, *,
                     server: bool, keys: CurveKeys | None) -> None:
    """Say the failed handshakes of ``socket`` (not yet bound or connected) on ``endpoint``.

    ``server``: the socket binds; ``keys``: its CurveZMQ keys (None: it speaks in
    clear). A failure is recorded in :data:`HANDSHAKES` with the likely fix; a
    server's refusals of a client key are said by the ZAP handler instead, with the
    client's address. The socket's monitor is read on a thread of the context's
    and closed when the socket closes (or the context terminates).
    """
    address = f"inproc://art2mus.handshakes.{next(_monitor_ids)}"
    socket.monitor(address, _WATCHED_EVENTS)
    pair = context.socket(zmq.PAIR)
    pair.setsockopt(zmq.LINGER, 0)
    pair.connect(address)  # now, so no event of the first connection is missed
    with _watch_lock:
        watcher = _watchers.get(id(context))
        if watcher is None or watcher.context is not context or not watcher.accepting:
            watcher = _watchers[id(context)] = _HandshakeWatcher(context)
            watcher.start()
        watcher.added.put((pair, _Watched(endpoint, server, keys)))


def _report(watched: _Watched, event: int, value: int, where: str = "") -> None:
    """Record one failed handshake of a watched socket, with the fix it most likely needs.

    ``where``: the endpoint ZeroMQ names (a bound ``tcp://*:0`` with its address and
    port), else the one the socket was made with."""
    endpoint, keys = where or watched.endpoint, watched.keys
    mismatch = (event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                and value == zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
    crypto = (event == zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
              and value == zmq.PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC)
    if watched.server:
        if event != zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL:
            return  # a refused key: said by the ZAP handler with the peer's address; a
            # peer gone mid-handshake (NO_DETAIL) is a port scan as often as a room
        if mismatch and keys is not None:
            reason, what = "curve_mismatch", ("a room connected with [security] curve off: "
                                              "set curve = true on that room (this engine "
                                              "requires CurveZMQ)")
        elif mismatch:
            reason, what = "curve_mismatch", ("a room connected with CurveZMQ and this engine "
                                              "has [security] curve off: set curve the same "
                                              "on both machines")
        elif crypto and keys is not None:
            reason, what = "server_key", (f"a room failed the CurveZMQ handshake: its "
                                          f"server.key is not this engine's "
                                          f"{keys.folder / 'server.key'}: copy that file to "
                                          f"the room's keys_dir and restart the room")
        else:
            reason, what = "protocol", (f"a peer failed the ZeroMQ handshake (protocol "
                                        f"error {value:#x}): another program, or another "
                                        f"art2mus version")
        HANDSHAKES.record(endpoint, "server", reason, f"{endpoint}: {what}")
        return
    if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
        who = f"{keys.client}.key" if keys is not None else "its key"
        fix = (f"check [security] client_key ({keys.client!r}) and keys_dir ({keys.folder}) "
               f"here, and that authorized/{keys.client}.key on the engine machine is this "
               f"room's {keys.client}.key") if keys is not None else "check [security]"
        reason, what = "key_refused", (f"the engine refused this room's key ({who}, ZAP "
                                       f"status {value}): {fix}; then restart the room")
    elif mismatch and keys is not None:
        reason, what = "curve_mismatch", ("the engine does not use CurveZMQ and this room "
                                          "does: set [security] curve the same on both "
                                          "machines; then restart the room")
    elif mismatch:
        reason, what = "curve_mismatch", ("the engine requires CurveZMQ and this room has "
                                          "[security] curve off: set curve = true, keys_dir "
                                          "and client_key here (see `art2mus keys`); then "
                                          "restart the room")
    elif keys is not None and (crypto or event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
        reason, what = "server_key", (f"this room refused the engine's key, or the engine "
                                      f"could not read this room's: "
                                      f"{keys.folder / 'server.key'} must be the engine "
                                      f"machine's server.key (copy it from there)")
    elif event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        return  # a clear link cut mid-handshake: the network's, reconnected by ZeroMQ
    else:
        reason, what = "protocol", (f"the ZeroMQ handshake failed (protocol error "
                                    f"{value:#x}): another program on this port, or another "
                                    f"art2mus version")
    HANDSHAKES.record(endpoint, "client", reason, f"{endpoint}: {what}")


def curve_keys(security: SecurityConfig) -> CurveKeys | None:
    """The keys the ``[security]`` section names when ``curve`` is on, else None."""
    if not security.curve:
        return None
    return CurveKeys(Path(security.keys_dir), security.include_loopback, security.client_key)


def create_keys(folder: str | Path, clients: tuple[str, ...] = ("client",)) -> list[Path]:
    """Write a server pair and one pair per client name, authorizing each client; the files.

    A pair already in ``folder`` is kept (and still authorized), never replaced.
    """
    import zmq.auth

    folder = Path(folder)
    for name in clients:
        if name == "server" or not _KEY_NAME.fullmatch(name):
            raise InputError(f"--client: expected a name of letters, digits, '_', '.', '-' "
                              f"(not 'server'), got {name!r}")
    authorized = folder / "authorized"
    try:
        authorized.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"keys folder {folder}: cannot create it ({exc})") from None
    written = []
    for name in ("server", *clients):
        public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
        if not (public.is_file() and secret.is_file()):
            made_public, made_secret = zmq.auth.create_certificates(str(folder), name)
            public, secret = Path(made_public), Path(made_secret)
            secret.chmod(0o600)  # the secret key: its owner only
            written += [public, secret]
        if name != "server" and not (authorized / public.name).is_file():
            shutil.copy(public, authorized / public.name)
            written.append(authorized / public.name)
    return written
