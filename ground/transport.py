"""ZeroMQ plumbing shared by the roles: sockets from config, safe receive.

Topology (the engine is the hub and binds; rooms come and go)::

    capture   PUB  --connect-->  SUB  bind  engine   (views)
    engine   XPUB  bind  <--connect--  SUB  audio_out (chunks, topic = room; the engine
                                                    sees each room's subscription)
    audio_out PUSH --connect-->  PULL bind  engine   (clock; IMMEDIATE, never stale)
    supervisor PUB bind  <--connect--  SUB  every role (control)

:class:`Inbox` receives frames without blocking, decodes them, and counts and
drops anything malformed so that no frame can crash a role.

Every socket limits what it accepts from a peer (``ZMQ_MAXMSGSIZE``; a
frame over it closes that peer's connection inside ZeroMQ): receivers at the
message limit, publishers (PUB, XPUB) at :data:`MAX_SUBSCRIPTION_BYTES`,
because what a publisher receives is subscriptions, and ZeroMQ files each one
in a trie, a node per byte, in the thread that owns the socket (a 20 MB
subscription held the engine's loop for seconds, and its peer re-sends it on
every reconnect).

Every ``tcp://`` socket also checks that its peer is still there
(:class:`Liveness`): a machine that loses power sends no FIN, and a socket
that only listens (a room's chunk SUB) would otherwise wait on the dead
connection for ever, its subscription never reaching the engine that comes
back. ZMTP heartbeats (RFC 37) drop such a connection within seconds and
ZeroMQ reconnects, re-sending the subscription.

With CurveZMQ keys (:mod:`ground.security`), sockets on links that
leave the machine are encrypted and authenticated; those, and any other
link off the machine, have their failed handshakes said in the log
(:func:`ground.security.watch_handshakes`).

Every socket that binds drops a connection whose ZMTP (or CurveZMQ)
handshake has not finished within :attr:`Liveness.handshake_s` (5 s; libzmq's
own default is 30 s): a peer that opens connections and sends nothing, or half
a greeting, holds a file descriptor of the engine only that long, so it must
open thousands a second, not a few per minute, to run the engine out of them.
And it refuses peers of ZMTP 1.0 and 2.0 (libzmq 2 and 3; every role speaks
3.x): libzmq takes any first byte but 0xFF for a ZMTP 1.0 peer, whose
"handshake" is over at once, and which has no heartbeat, so a connection that
sent one byte and nothing more was held for ever (the auditor's 20,000 of them:
every descriptor of the engine, 850 MB). libzmq refuses those versions where
ZAP is enabled (CVE-2014-9721), so a socket in clear gets a ZAP domain
(:data:`ZAP_DOMAIN`): where no ZAP handler runs, its NULL handshakes go on
without one; where one does (CurveZMQ on other links), it lets NULL through.
(Connections the kernel has queued but the process not yet accepted, once it
is out of descriptors, are beyond this: ``LimitNOFILE`` and a per-address
connection limit on the firewall are the remedy there.)

A bind that fails (the port held by another engine or program, an address
not of this machine) is a :class:`~ground.errors.ConfigError` naming the
endpoint, never a raw ZeroMQ traceback.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import zmq

from ground.errors import ConfigError
from ground.protocol import (
    DEFAULT_MAX_MESSAGE_BYTES,
    DropCounter,
    Message,
    ProtocolError,
    decode,
    encode,
)

if TYPE_CHECKING:
    from ground.security import CurveKeys

#: What a publisher accepts from a peer, in bytes: a subscription is one flag
#: byte and a topic (a room id, at most 64 characters), and the CurveZMQ
#: handshake's INITIATE command (~270 bytes) passes the same limit.
MAX_SUBSCRIPTION_BYTES = 1024
#: The ZAP domain of a binding socket in clear: enables ZAP, under which libzmq refuses
#: ZMTP 1.0 and 2.0 peers (see the module docstring).
ZAP_DOMAIN = b"art2mus"


@dataclass(frozen=True)
class Liveness:
    """How a TCP link notices a peer that vanished without closing (power loss, a cable).

    The defaults, against the roles' own timings: a dead peer is noticed within
    ``heartbeat_ivl_s + heartbeat_timeout_s`` (4 s) and the link is then re-made
    every 100 ms (ZeroMQ's reconnect interval). That is inside audio_out's
    ``hold_s`` (8 s by default: a starved room holds its last music that long
    before fading) and well inside the engine's ``view_timeout_s`` (20-30 s: a
    room's capture silent that long gets the empty-room ambience), so a link
    re-made as soon as its peer is back costs the audience nothing. It does not
    trip on a busy peer: ZeroMQ's I/O thread answers a PING, not Python, so a
    GIL held by a model step or a model loading for a minute
    (``startup_grace_s``) still answers; only a stopped process, a dead machine
    or a dead link stays silent 3 s, three heartbeat intervals. The TTL asks the
    peer to drop the link after as long without a word from us.

    TCP keepalive (5 s idle, then a probe a second, 3 unanswered: about 8 s) is
    the kernel's net under the same: it also covers a connection still in its
    ZMTP or CurveZMQ handshake, before heartbeats run. ``connect_timeout_s``
    abandons a connect whose SYN goes unanswered (a cable pulled beyond a
    switch) and tries again, rather than waiting out the kernel's SYN back-off
    (up to a minute between tries), so a link comes back within seconds of its
    peer.

    ``handshake_s`` bounds, on a socket that binds, how long an accepted
    connection may take to finish its handshake (``ZMQ_HANDSHAKE_IVL``; see the
    module docstring): far longer than a handshake takes (two round trips, and a
    CurveZMQ key check on the engine's authenticator thread: milliseconds on a
    LAN, well under a second on Wi-Fi), far shorter than libzmq's 30 s; a
    handshake cut short is tried again by the peer, as any dropped link is.
    """

    heartbeat_ivl_s: float = 1.0
    heartbeat_timeout_s: float = 3.0
    heartbeat_ttl_s: float = 3.0
    keepalive_idle_s: int = 5
    keepalive_intvl_s: int = 1
    keepalive_cnt: int = 3
    connect_timeout_s: float = 3.0
    handshake_s: float = 5.0

    def __post_init__(self) -> None:
        if not 0.001 <= self.heartbeat_ivl_s <= 3600:
            raise ValueError(f"heartbeat_ivl_s: expected 0.001 to 3600 s, got "
                             f"{self.heartbeat_ivl_s}")
        if not self.heartbeat_ivl_s <= self.heartbeat_timeout_s <= 3600:
            raise ValueError(f"heartbeat_timeout_s: expected heartbeat_ivl_s "
                             f"({self.heartbeat_ivl_s}) to 3600 s, got {self.heartbeat_timeout_s}")
        if not 0.1 <= self.heartbeat_ttl_s <= 6553.5:  # RFC 37: deciseconds in 16 bits
            raise ValueError(f"heartbeat_ttl_s: expected 0.1 to 6553.5 s, got "
                             f"{self.heartbeat_ttl_s}")
        for name in ("keepalive_idle_s", "keepalive_intvl_s", "keepalive_cnt"):
            if not 1 <= getattr(self, name) <= 3600:
                raise ValueError(f"{name}: expected 1 to 3600, got {getattr(self, name)}")
        if not 0 <= self.connect_timeout_s <= 3600:
            raise ValueError(f"connect_timeout_s: expected 0 (the kernel's) to 3600 s, got "
                             f"{self.connect_timeout_s}")
        if not 0.001 <= self.handshake_s <= 3600:
            raise ValueError(f"handshake_s: expected 0.001 to 3600 s, got {self.handshake_s}")

    def apply(self, socket: zmq.Socket) -> None:
        """Set these options on a ``tcp://`` socket (before it binds or connects)."""
        socket.setsockopt(zmq.HEARTBEAT_IVL, round(self.heartbeat_ivl_s * 1000))
        socket.setsockopt(zmq.HEARTBEAT_TIMEOUT, round(self.heartbeat_timeout_s * 1000))
        socket.setsockopt(zmq.HEARTBEAT_TTL, round(self.heartbeat_ttl_s * 1000))
        socket.setsockopt(zmq.TCP_KEEPALIVE, 1)
        socket.setsockopt(zmq.TCP_KEEPALIVE_IDLE, self.keepalive_idle_s)
        socket.setsockopt(zmq.TCP_KEEPALIVE_INTVL, self.keepalive_intvl_s)
        socket.setsockopt(zmq.TCP_KEEPALIVE_CNT, self.keepalive_cnt)
        socket.setsockopt(zmq.CONNECT_TIMEOUT, round(self.connect_timeout_s * 1000))


#: What every ``tcp://`` socket of the installation uses (see :class:`Liveness`).
LIVENESS = Liveness()


def make_socket(
    context: zmq.Context, kind: int, endpoint: str, *, bind: bool,
    subscribe: list[str] | None = None, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    hwm: int = 1000, curve: CurveKeys | None = None, immediate: bool = False,
    liveness: Liveness = LIVENESS, xpub_manual: bool = False,
) -> zmq.Socket:
    """A socket of ``kind`` bound or connected to ``endpoint``.

    Every socket gets ``MAXMSGSIZE`` so ZeroMQ itself refuses oversized frames
    (publishers: :data:`MAX_SUBSCRIPTION_BYTES`, see the module docstring);
    ``linger`` is short so a role never hangs on exit with unsent messages.
    With ``curve`` keys and an endpoint that leaves the machine, a binding
    socket is a Curve server (clients checked against the authorized keys)
    and a connecting one a Curve client. ``immediate`` queues messages only
    on completed connections: while the peer is down a send fails instead of
    queueing stale messages for the peer's next incarnation. ``xpub_manual`` (an
    XPUB) sets ``ZMQ_XPUB_MANUAL``: a peer is sent only the topics the owner
    subscribes it to (``socket.subscribe(topic)`` right after receiving its
    subscription frame, which ZeroMQ applies to the peer that sent it), so a
    publisher decides which topics it serves.

    A ``tcp://`` socket gets ``liveness`` (heartbeats, keepalive; see
    :class:`Liveness`), and one that binds, whatever its transport, drops
    connections whose handshake takes longer than ``liveness.handshake_s`` and
    refuses ZMTP 1.0 and 2.0 peers (:data:`ZAP_DOMAIN`); a
    secured one, and any on a link off the machine, has
    its failed handshakes watched (:func:`ground.security.watch_handshakes`).
    A failed bind is a :class:`~ground.errors.ConfigError` naming the endpoint.
    """
    from ground.security import is_remote, watch_handshakes

    socket = context.socket(kind)
    try:
        secured = curve is not None and curve.applies_to(endpoint)
        if curve is not None and secured:
            from ground.security import ensure_authenticator

            if bind:
                # before bind: the ZAP handler must see the first handshake
                ensure_authenticator(context, curve)
                curve.make_server(socket)
            else:
                curve.make_client(socket)
        socket.setsockopt(zmq.LINGER, 200)
        socket.setsockopt(zmq.SNDHWM, hwm)
        socket.setsockopt(zmq.RCVHWM, hwm)
        if immediate:
            socket.setsockopt(zmq.IMMEDIATE, 1)
        if xpub_manual:
            if kind != zmq.XPUB:
                raise ValueError("make_socket: xpub_manual needs an XPUB socket")
            socket.setsockopt(zmq.XPUB_MANUAL, 1)
        if bind:
            # a connection that never finishes its handshake (half a greeting, nothing)
            # holds a descriptor only this long (libzmq: 30 s)
            socket.setsockopt(zmq.HANDSHAKE_IVL, round(liveness.handshake_s * 1000))
            if not secured:  # (a Curve server has ZAP already)
                # a first byte but 0xFF would be a ZMTP 1.0 peer, held for ever: refused
                socket.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)
        if kind in (zmq.PUB, zmq.XPUB):
            socket.setsockopt(zmq.MAXMSGSIZE, min(max_bytes, MAX_SUBSCRIPTION_BYTES))
        else:
            socket.setsockopt(zmq.MAXMSGSIZE, max_bytes)
        if kind == zmq.SUB:
            for topic in subscribe if subscribe is not None else [""]:
                socket.setsockopt(zmq.SUBSCRIBE, topic.encode("utf-8"))
        if endpoint.startswith("tcp://"):
            liveness.apply(socket)
        if secured or is_remote(endpoint):
            # before bind/connect: the first handshake's failure is an event too
            watch_handshakes(context, socket, endpoint, server=bind,
                             keys=curve if secured else None)
        if bind:
            try:
                socket.bind(endpoint)
            except zmq.ZMQError as exc:
                raise bind_error(endpoint, exc) from None
        else:
            socket.connect(endpoint)
    except BaseException:
        socket.close(linger=0)  # a half-made socket would hang the context's term()
        raise
    return socket


def bind_error(endpoint: str, error: zmq.ZMQError) -> ConfigError | zmq.ZMQError:
    """What a failed bind of ``endpoint`` tells the user: a ConfigError naming the endpoint
    and what to do where the cause is the machine or the config; else ``error`` itself."""
    if error.errno == errno.EADDRINUSE:
        got = (f"it in use: another art2mus engine or program already binds {endpoint}: "
               f"stop it or change the endpoints in [network]")
    elif error.errno == errno.EADDRNOTAVAIL:
        got = (f"an address this machine does not have ({error.strerror}): bind one of its "
               f"own addresses, or tcp://*:PORT, in [network]")
    elif error.errno == errno.EACCES:
        got = (f"permission denied ({error.strerror}; TCP ports below 1024 need root, an "
               f"ipc:// path a folder this user may write): change [network]")
    elif error.errno in (errno.ENODEV, errno.ENOENT):
        got = f"no such interface or folder ({error.strerror}): change [network]"
    else:
        return error
    return ConfigError(f"network: expected {endpoint} free to bind on this machine, got {got}")


def send(socket: zmq.Socket, message: Message) -> bool:
    """Send without blocking; False if the peer's queue is full (the message is dropped)."""
    try:
        socket.send_multipart(encode(message), flags=zmq.NOBLOCK, copy=False)
    except zmq.Again:
        return False
    return True


class Inbox:
    """Non-blocking, counting receiver over one socket."""

    def __init__(self, socket: zmq.Socket, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self.socket = socket
        self.max_bytes = max_bytes
        self.dropped = DropCounter()
        self.received = 0

    def drain(self, limit: int = 1000) -> Iterator[Message]:
        """Yield every valid message waiting now (at most ``limit`` frames read)."""
        for _ in range(limit):
            try:
                frames = self.socket.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                message = decode(frames, self.max_bytes)
            except ProtocolError as error:
                self.dropped.add(error)
                continue
            self.received += 1
            yield message
