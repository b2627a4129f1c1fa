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

With CurveZMQ keys (:mod:`ground.security`), sockets on links that
leave the machine are encrypted and authenticated.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import zmq

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


def make_socket(
    context: zmq.Context, kind: int, endpoint: str, *, bind: bool,
    subscribe: list[str] | None = None, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    hwm: int = 1000, curve: CurveKeys | None = None, immediate: bool = False,
) -> zmq.Socket:
    """A socket of ``kind`` bound or connected to ``endpoint``.

    Every socket gets ``MAXMSGSIZE`` so ZeroMQ itself refuses oversized frames
    (publishers: :data:`MAX_SUBSCRIPTION_BYTES`, see the module docstring);
    ``linger`` is short so a role never hangs on exit with unsent messages.
    With ``curve`` keys and an endpoint that leaves the machine, a binding
    socket is a Curve server (clients checked against the authorized keys)
    and a connecting one a Curve client. ``immediate`` queues messages only
    on completed connections: while the peer is down a send fails instead of
    queueing stale messages for the peer's next incarnation.
    """
    socket = context.socket(kind)
    try:
        if curve is not None:
            from ground.security import ensure_authenticator

            if curve.applies_to(endpoint):
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
        if kind in (zmq.PUB, zmq.XPUB):
            socket.setsockopt(zmq.MAXMSGSIZE, min(max_bytes, MAX_SUBSCRIPTION_BYTES))
        else:
            socket.setsockopt(zmq.MAXMSGSIZE, max_bytes)
        if kind == zmq.SUB:
            for topic in subscribe if subscribe is not None else [""]:
                socket.setsockopt(zmq.SUBSCRIBE, topic.encode("utf-8"))
        if bind:
            socket.bind(endpoint)
        else:
            socket.connect(endpoint)
    except BaseException:
        socket.close(linger=0)  # a half-made socket would hang the context's term()
        raise
    return socket


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
