"""The engine's listening sockets against a peer on the LAN (CurveZMQ off).

What an auditor reproduced against ``art2mus run``:

- the chunks XPUB filed every topic a peer subscribed, whether or not the engine took
  it (RSS 172 MB -> 2,580 MB over a flood of new topics, never given back), and when
  the peer left, ZeroMQ unfiled them all in the engine loop's thread (audio_out held
  5.2 s); a peer subscribed to a prefix of a room id was sent that room's chunks;
- connections that sent 10 bytes of a ZMTP greeting, or nothing, held a file
  descriptor each for libzmq's 30 s handshake timeout, so enough of them ran the engine
  out of descriptors.

Real ZeroMQ sockets: inproc where only the engine's routing matters, TCP on loopback
(ports 6770-6776) where connections themselves do.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
import zmq

from engine.server import SUBSCRIPTION_FLOOD_TOPICS, EngineServer
from ground.protocol import PROTOCOL_VERSION, AudioChunk, PlaybackClock
from ground.transport import LIVENESS, Liveness, decode, make_socket, send
from installation.config import config_from_dict
from installation.roles import engine_role_config

PORT = 6770  # 6770-6773: an engine's views, chunks, clock, control; 6775-6776: one socket
#: A ZMTP 3 greeting's first 10 bytes (the signature): the server answers with its own and
#: waits for the rest.
GREETING_START = b"\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f"
#: What the auditor's hold_conns.py sent meaning GREETING_START (its escapes encoded as
#: UTF-8): a first byte but 0xFF, which libzmq takes for a ZMTP 1.0 peer, handshake done,
#: no heartbeat: held for ever. One byte does the same.
ZMTP_1_0 = b"\xc3\xbf\x00\x00\x00\x00\x00\x00\x00\x01\x7f"
#: The ZMTP 2.0 greeting's start (revision 1 after the signature): refused too.
ZMTP_2_0 = b"\xff\x00\x00\x00\x00\x00\x00\x00\x01\x7f\x01"
HALF_OPEN = {"half a greeting": GREETING_START, "nothing": b"", "ZMTP 1.0": ZMTP_1_0,
             "one byte": b"\x05", "ZMTP 2.0": ZMTP_2_0}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _server(network: dict[str, str], events: list[tuple[str, dict[str, Any]]],
            context: zmq.Context, rooms: list[str]) -> tuple[EngineServer, FakeClock]:
    config = config_from_dict({
        "network": network,
        "engine": {"generator": "sine", "chunk_s": 0.25, "lead_s": 0.75,
                   "transition_crossfade_s": 0.2},
        "rooms": [{"id": room, "seed": i} for i, room in enumerate(rooms)],
    })
    clock = FakeClock()
    server = EngineServer(engine_role_config(config),
                          lambda kind, **fields: events.append((kind, fields)),
                          context=context, clock=clock)
    return server, clock


def _inproc(name: str) -> dict[str, str]:
    return {part: f"inproc://lan-{name}-{part}" for part in ("views", "chunks", "clock",
                                                             "control")}


def _tcp() -> dict[str, str]:
    return {part: f"tcp://127.0.0.1:{PORT + i}"
            for i, part in enumerate(("views", "chunks", "clock", "control"))}


def _turn_until(server: EngineServer, clock: FakeClock, done: Callable[[], bool],
                deadline_s: float = 20.0) -> None:
    """Turn the engine (its clock 50 ms a turn) until ``done()``; the deadline only bounds
    waiting for sockets that connect in ZeroMQ's own threads."""
    deadline = time.monotonic() + deadline_s
    while not done():
        assert time.monotonic() < deadline, "the engine never got there"
        server.turn(poll_ms=10)
        clock.now += 0.05


def _chunks(listener: zmq.Socket) -> list[AudioChunk]:
    got = []
    while listener.poll(0):
        message = decode(listener.recv_multipart())
        assert isinstance(message, AudioChunk)
        got.append(message)
    return got


def _clock(room: str, playhead: int, wall_time: float) -> PlaybackClock:
    return PlaybackClock(v=PROTOCOL_VERSION, room=room, sample_rate=48000, playhead=playhead,
                         buffered_until=playhead, wall_time=wall_time, instance=0xA1)


# -- the chunks XPUB ---------------------------------------------------------------------


def test_a_peer_is_sent_only_the_rooms_the_engine_takes_its_subscriptions_to() -> None:
    """A prefix of a room id is no room: ZeroMQ's own filter sent that peer the room's
    chunks all the same. In manual mode it is sent what the engine subscribed it to."""
    context = zmq.Context()
    events: list[tuple[str, dict[str, Any]]] = []
    server, clock = _server(_inproc("prefix"), events, context, ["room0", "room1"])
    net = server.config.network
    room = make_socket(context, zmq.SUB, net.chunks, bind=False, subscribe=["room0"])
    prefix = make_socket(context, zmq.SUB, net.chunks, bind=False, subscribe=["room"])
    tap = make_socket(context, zmq.SUB, net.chunks, bind=False, subscribe=[""])
    clocks = make_socket(context, zmq.PUSH, net.clock, bind=False)
    try:
        _turn_until(server, clock, lambda: server.subscribed == {"room0", ""})
        for name in ("room0", "room1"):
            send(clocks, _clock(name, 0, clock.now))
        heard: list[AudioChunk] = []
        tapped: list[AudioChunk] = []

        def enough() -> bool:
            heard.extend(_chunks(room))
            tapped.extend(_chunks(tap))
            return len(heard) >= 3 and {c.room for c in tapped} == {"room0", "room1"}

        _turn_until(server, clock, enough)
        assert {c.room for c in heard} == {"room0"}
        assert _chunks(prefix) == [] and not prefix.poll(50)
        assert server.subscriptions.dropped.by_reason["unknown-room"] == 1
    finally:
        for each in (room, prefix, tap, clocks):
            each.close(linger=0)
        server.close()
        context.term()


def test_a_room_two_audio_outs_listen_to_is_listened_to_until_both_have_gone() -> None:
    """Manual mode passes up every peer's subscription and, when a peer goes, its
    unsubscription: the room stays listened to while one is left."""
    context = zmq.Context()
    events: list[tuple[str, dict[str, Any]]] = []
    server, clock = _server(_inproc("two"), events, context, ["room0"])
    net = server.config.network
    first = make_socket(context, zmq.SUB, net.chunks, bind=False, subscribe=["room0"])
    second = make_socket(context, zmq.SUB, net.chunks, bind=False, subscribe=["room0"])
    try:
        _turn_until(server, clock, lambda: server.subscriptions.listeners("room0") == 2)
        first.close(linger=0)
        _turn_until(server, clock, lambda: server.subscriptions.listeners("room0") == 1)
        assert server.subscribed == {"room0"}
        second.close(linger=0)
        _turn_until(server, clock, lambda: not server.subscribed)
        assert [k for k, f in events if k in ("subscribed", "unsubscribed")] == [
            "subscribed", "unsubscribed"]
    finally:
        first.close(linger=0)
        second.close(linger=0)
        server.close()
        context.term()


def test_a_flood_of_subscriptions_to_no_room_makes_the_socket_again_and_the_room_plays_on(
) -> None:
    """repro_xpub_subs.sh: 20,000 new topics a second. ZeroMQ files each for as long as
    its peer is connected, whatever the engine does with it: past the bound the engine
    closes the socket (ZeroMQ frees them in its reaper thread) and binds a new one; the
    room's audio_out reconnects and subscribes again."""
    context = zmq.Context()
    events: list[tuple[str, dict[str, Any]]] = []
    server, clock = _server(_tcp(), events, context, ["room0"])
    net = server.config.network
    listener = make_socket(context, zmq.SUB, net.chunks, bind=False, subscribe=["room0"])
    clocks = make_socket(context, zmq.PUSH, net.clock, bind=False)
    flood = context.socket(zmq.XSUB)
    flood.setsockopt(zmq.SNDHWM, 0)
    flood.setsockopt(zmq.LINGER, 0)
    try:
        _turn_until(server, clock, lambda: server.subscribed == {"room0"})
        send(clocks, _clock("room0", 0, clock.now))
        _turn_until(server, clock, lambda: bool(_chunks(listener)))
        flood.connect(net.chunks)
        for n in range(SUBSCRIPTION_FLOOD_TOPICS + 1000):
            flood.send(b"\x01" + f"topic-{n}-".encode() + b"x" * 40)
        _turn_until(server, clock, lambda: any(k == "subscription_flood" for k, _ in events))
        flood.close(linger=0)  # (it would send them all again on reconnecting)
        said = [f for k, f in events if k == "subscription_flood"][0]
        assert said["held"] > SUBSCRIPTION_FLOOD_TOPICS and "firewall" in said["error"]
        # the room's audio_out is back on the new socket, and its chunks come again

        def subscribed_again() -> bool:
            listener.poll(0)  # (ZeroMQ re-sends a subscription in the thread that polls it)
            return server.subscribed == {"room0"}

        _turn_until(server, clock, subscribed_again)
        assert server.subscriptions.held <= SUBSCRIPTION_FLOOD_TOPICS
        _chunks(listener)
        send(clocks, _clock("room0", 48000, clock.now))
        _turn_until(server, clock, lambda: bool(_chunks(listener)))
        assert [k for k, _ in events].count("subscription_flood") == 1  # once a minute
        assert server.status()["chunks_remade"] == server.chunks_remade >= 1
    finally:
        for each in (listener, clocks, flood):
            each.close(linger=0)
        server.close()
        context.term()


# -- half-open connections ----------------------------------------------------------------


def _closed_by_server(connection: socket.socket, deadline_s: float) -> bool:
    """Read what the server sends until it closes the connection (True) or the deadline
    passes (False): waits on the event, bounded only so a failure ends."""
    deadline = time.monotonic() + deadline_s
    while (remaining := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([connection], [], [], remaining)
        if not readable:
            continue
        try:
            if connection.recv(4096) == b"":
                return True
        except ConnectionResetError:
            return True
    return False


def test_a_listening_socket_bounds_the_handshake_and_a_connecting_one_keeps_zeromqs() -> None:
    context = zmq.Context()
    bound = make_socket(context, zmq.PULL, f"tcp://127.0.0.1:{PORT + 5}", bind=True)
    connecting = make_socket(context, zmq.PUSH, f"tcp://127.0.0.1:{PORT + 5}", bind=False)
    try:
        assert bound.getsockopt(zmq.HANDSHAKE_IVL) == round(LIVENESS.handshake_s * 1000)
        assert LIVENESS.handshake_s <= 10.0
        assert connecting.getsockopt(zmq.HANDSHAKE_IVL) == 30_000  # libzmq's
    finally:
        bound.close(linger=0)
        connecting.close(linger=0)
        context.term()
    with pytest.raises(ValueError, match="handshake_s: expected 0.001 to 3600 s, got 0"):
        Liveness(handshake_s=0)


@pytest.mark.parametrize("sent", list(HALF_OPEN.values()), ids=list(HALF_OPEN))
def test_a_half_open_connection_is_closed_by_the_server(sent: bytes) -> None:
    context = zmq.Context()
    bound = make_socket(context, zmq.PULL, f"tcp://127.0.0.1:{PORT + 6}", bind=True,
                        liveness=Liveness(handshake_s=0.2))
    try:
        with socket.create_connection(("127.0.0.1", PORT + 6)) as connection:
            connection.sendall(sent)
            assert _closed_by_server(connection, deadline_s=20.0)
    finally:
        bound.close(linger=0)
        context.term()


def test_the_engines_ports_close_half_open_connections_within_their_handshake_time() -> None:
    """repro_fd_exhaust.sh's connections, to each port the engine binds: closed by the
    engine at once (ZMTP 1.0 and 2.0, held for ever before) or after LIVENESS.handshake_s
    (5 s; the deadline, 25 s, stays below libzmq's own 30 s)."""
    context = zmq.Context()
    events: list[tuple[str, dict[str, Any]]] = []
    server, _ = _server(_tcp(), events, context, ["room0"])
    connections = []
    try:
        for port in (PORT, PORT + 1, PORT + 2):  # views, chunks, clock
            for sent in HALF_OPEN.values():
                connection = socket.create_connection(("127.0.0.1", port))
                connection.sendall(sent)
                connections.append(connection)
        assert all(_closed_by_server(c, deadline_s=25.0) for c in connections)
    finally:
        for connection in connections:
            connection.close()
        server.close()
        context.term()
