"""A link notices a peer that vanished without closing; a bind that fails says who holds it.

Audit 3, network: after the engine machine lost power, a room's chunk SUB
stayed on the dead TCP connection for good (a socket that never sends never
notices), so the engine that came back never saw the room's subscription and
the room stayed silent. Every ``tcp://`` socket now has ZMTP heartbeats and
TCP keepalive (:class:`ground.transport.Liveness`). A power loss is played on
loopback by a relay whose open connections stop moving bytes without closing
(no FIN, no RST: a peer machine that is simply gone), as the audit's
``netsim.py`` does.

A stray second engine on the same endpoints died with a raw
``zmq.error.ZMQError: Address already in use``; a failed bind is now a
ConfigError naming the endpoint and what holds it.
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Iterator

import pytest
import zmq

from ground.errors import ConfigError
from ground.protocol import PROTOCOL_VERSION, Control, decode
from ground.transport import LIVENESS, Liveness, make_socket, send
from tests.polling import wait_until

#: Heartbeats ten times the production pace, so a dead peer is noticed in under half a second.
FAST = Liveness(heartbeat_ivl_s=0.1, heartbeat_timeout_s=0.3, heartbeat_ttl_s=0.3)


class PowerLossRelay:
    """A TCP relay 127.0.0.1:``port`` -> 127.0.0.1:``target``, on a thread of its own.

    :meth:`power_loss` freezes every connection open now: from then on it moves no
    byte either way and is never closed, what a peer machine that lost power leaves
    behind (its kernel is gone, so nothing answers, not even a RST). Connections
    made afterwards are relayed as usual: the machine is back.
    """

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.links: list[tuple[socket.socket, socket.socket]] = []
        self.frozen: set[socket.socket] = set()
        self.silent: list[socket.socket] = []  # frozen ends whose other end gave up
        self.relayed = 0  # connections relayed so far
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def power_loss(self) -> None:
        """Freeze every connection open now (see the class docstring)."""
        with self._lock:
            for pair in self.links:
                self.frozen.update(pair)
            self.links.clear()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for end in [*(end for pair in self.links for end in pair), *self.frozen,
                    *self.silent]:
            end.close()
        self.listener.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                ends = [self.listener, *(end for pair in self.links for end in pair),
                        *self.frozen]
            readable, _, _ = select.select(ends, [], [], 0.02)
            for end in readable:
                if end is self.listener:
                    self._accept()
                elif end in self.frozen:
                    self._swallow(end)
                else:
                    self._forward(end)

    def _swallow(self, end: socket.socket) -> None:
        """Read what reaches a frozen connection and answer nothing."""
        try:
            data = end.recv(65536)
        except OSError:
            data = b""
        if not data:  # its other end gave up: stop selecting it, keep it open till close()
            with self._lock:
                self.frozen.discard(end)
                self.silent.append(end)

    def _accept(self) -> None:
        room_side, _ = self.listener.accept()
        try:
            peer_side = socket.create_connection(("127.0.0.1", self.target), timeout=2)
        except OSError:
            room_side.close()  # nothing listens there (yet): refused, as a closed port
            return
        with self._lock:
            self.links.append((room_side, peer_side))
            self.relayed += 1

    def _forward(self, end: socket.socket) -> None:
        with self._lock:
            pair = next((p for p in self.links if end in p), None)
        if pair is None:
            return
        other = pair[1] if end is pair[0] else pair[0]
        try:
            data = end.recv(65536)
            if data:
                other.sendall(data)
                return
        except OSError:
            pass
        with self._lock:
            self.links.remove(pair)
        pair[0].close()
        pair[1].close()


@pytest.fixture
def context() -> Iterator[zmq.Context]:
    context = zmq.Context()
    yield context
    context.term()


def _bound_port(sock: zmq.Socket) -> int:
    return int(sock.getsockopt_string(zmq.LAST_ENDPOINT).rpartition(":")[2])


def _bind_when_free(context: zmq.Context, port: int) -> zmq.Socket | None:
    try:
        return make_socket(context, zmq.XPUB, f"tcp://127.0.0.1:{port}", bind=True,
                           liveness=FAST)
    except ConfigError:
        return None  # the closed socket is still being reaped


def _chunk_for(room: str, n: int) -> Control:
    return Control(v=PROTOCOL_VERSION, room=room, target="*", command="ping",
                   params={"n": float(n)})


def test_every_tcp_socket_checks_its_peer_is_alive(context: zmq.Context) -> None:
    tcp = make_socket(context, zmq.SUB, "tcp://127.0.0.1:5999", bind=False)
    ipc = make_socket(context, zmq.SUB, "ipc:///tmp/art2mus-liveness-test", bind=False)
    try:
        assert tcp.getsockopt(zmq.HEARTBEAT_IVL) == 1000
        assert tcp.getsockopt(zmq.HEARTBEAT_TIMEOUT) == 3000
        assert tcp.getsockopt(zmq.HEARTBEAT_TTL) == 3000
        assert tcp.getsockopt(zmq.TCP_KEEPALIVE) == 1
        assert (tcp.getsockopt(zmq.TCP_KEEPALIVE_IDLE), tcp.getsockopt(zmq.TCP_KEEPALIVE_INTVL),
                tcp.getsockopt(zmq.TCP_KEEPALIVE_CNT)) == (5, 1, 3)
        assert tcp.getsockopt(zmq.CONNECT_TIMEOUT) == 3000
        # a dead peer is noticed within one interval and the timeout: inside audio_out's
        # default hold_s (8 s), where a starved room still plays its last music
        assert LIVENESS.heartbeat_ivl_s + LIVENESS.heartbeat_timeout_s < 8.0
        assert ipc.getsockopt(zmq.HEARTBEAT_IVL) == 0  # a local peer's death closes the link
    finally:
        tcp.close(linger=0)
        ipc.close(linger=0)


def test_liveness_refuses_a_timeout_shorter_than_its_interval() -> None:
    with pytest.raises(ValueError, match=r"heartbeat_timeout_s: expected heartbeat_ivl_s "
                                         r"\(2.0\) to 3600 s, got 1.0"):
        Liveness(heartbeat_ivl_s=2.0, heartbeat_timeout_s=1.0)


def test_a_room_hears_the_engine_that_comes_back_after_a_power_loss(
    context: zmq.Context,
) -> None:
    engine = make_socket(context, zmq.XPUB, "tcp://127.0.0.1:*", bind=True, liveness=FAST)
    port = _bound_port(engine)
    relay = PowerLossRelay(port)
    room = make_socket(context, zmq.SUB, f"tcp://127.0.0.1:{relay.port}", bind=False,
                       subscribe=["room-1"], liveness=FAST)
    try:
        assert engine.poll(5000) and engine.recv() == b"\x01room-1"
        heard: list[object] = []

        def hears(n: int) -> bool:
            send(engine, _chunk_for("room-1", n))
            while room.poll(0):
                heard.append(decode(room.recv_multipart()))
            return _chunk_for("room-1", n) in heard

        wait_until(lambda: hears(1))

        # the engine machine loses power: its side of the connection is simply gone
        relay.power_loss()
        engine.close(linger=0)
        # ...and comes back: a new engine binds the same port (once ZeroMQ has let it go)
        engine = wait_until(lambda: _bind_when_free(context, port))
        # the room drops the dead connection after FAST's timeout, reconnects and sends its
        # subscription again, bounded in heartbeat periods (generously, for a busy machine).
        # The room reads its socket meanwhile, as audio_out does: a socket re-sends its
        # subscriptions when its owner's thread next touches it.
        def subscribed() -> bytes | None:
            room.poll(0)
            return engine.recv() if engine.poll(0) else None

        periods = 40
        assert wait_until(subscribed, periods * (FAST.heartbeat_ivl_s
                                                 + FAST.heartbeat_timeout_s)) == b"\x01room-1"
        assert relay.relayed == 2
        wait_until(lambda: hears(2))
    finally:
        engine.close(linger=0)
        room.close(linger=0)
        relay.close()


def test_a_second_engine_on_the_same_endpoint_is_one_line_naming_it(
    context: zmq.Context,
) -> None:
    first = make_socket(context, zmq.XPUB, "tcp://127.0.0.1:*", bind=True)
    endpoint = f"tcp://127.0.0.1:{_bound_port(first)}"
    try:
        with pytest.raises(ConfigError) as refused:
            make_socket(context, zmq.XPUB, endpoint, bind=True)
        assert str(refused.value) == (
            f"network: expected {endpoint} free to bind on this machine, got it in use: "
            f"another art2mus engine or program already binds {endpoint}: stop it or "
            f"change the endpoints in [network]")
        assert refused.value.exit_code == 2
        assert refused.value.__cause__ is None and refused.value.__suppress_context__
    finally:
        first.close(linger=0)


def test_an_address_this_machine_does_not_have_is_named(context: zmq.Context) -> None:
    with pytest.raises(ConfigError, match=r"network: expected tcp://192.0.2.77:5999 free to "
                                          r"bind on this machine, got an address this "
                                          r"machine does not have"):
        make_socket(context, zmq.PULL, "tcp://192.0.2.77:5999", bind=True)
