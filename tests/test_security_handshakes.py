"""A failed CurveZMQ handshake is said, once a minute per endpoint, with the likely fix.

Audit 3, network: a room with a key the engine never authorized, with curve
off, or with another installation's ``server.key`` was silent, and nothing was
logged on either side. Real sockets on loopback with keys made in the test
(``include_loopback`` secures them); the registry's clock is fake, so "once a
minute" is a clock step, not a wait.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

import ground.security as security
from ground.errors import ConfigError
from ground.events import MemorySink
from ground.protocol import PROTOCOL_VERSION, Control, decode
from ground.security import (
    CurveKeys,
    HandshakeFailures,
    create_keys,
    handshake_failures,
    set_handshake_sink,
    stop_authenticators,
)
from ground.transport import make_socket, send
from tests.polling import wait_until


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """The process's registry of failures, fresh, on a fake clock."""
    fake = FakeClock()
    monkeypatch.setattr(security, "HANDSHAKES", HandshakeFailures(clock=fake))
    return fake


@pytest.fixture
def events(clock: FakeClock) -> Iterator[MemorySink]:
    """The said failures, as events (on the fresh registry)."""
    sink = MemorySink()
    set_handshake_sink(sink)
    yield sink
    set_handshake_sink(None)


class Sockets:
    """make_socket on one context; every socket closed, then the context ended, at teardown."""

    def __init__(self) -> None:
        self.context = zmq.Context()
        self.made: list[zmq.Socket] = []

    def __call__(self, kind: int, endpoint: str, *, bind: bool, **options: Any) -> zmq.Socket:
        sock = make_socket(self.context, kind, endpoint, bind=bind, **options)
        self.made.append(sock)
        return sock

    def close(self) -> None:
        for sock in self.made:
            sock.close(linger=0)
        stop_authenticators()
        self.context.term()  # returns: every monitor socket was closed with its socket


@pytest.fixture
def sockets(events: MemorySink) -> Iterator[Sockets]:
    """Closed before the registry and its sink are put back: nothing said lands elsewhere."""
    made = Sockets()
    yield made
    made.close()


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, CurveKeys]:
    """The engine's keys, a room's right ones, a pair the engine never authorized, and a
    room holding another installation's server.key."""
    create_keys(tmp_path / "engine", ("room-1",))
    create_keys(tmp_path / "elsewhere", ("room-1",))
    layouts = {"right": ("engine", "engine"), "unauthorized": ("engine", "elsewhere"),
               "other-server": ("elsewhere", "engine")}
    for name, (server_from, pair_from) in layouts.items():
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(tmp_path / server_from / "server.key", folder)
        for file in ("room-1.key", "room-1.key_secret"):
            shutil.copy(tmp_path / pair_from / file, folder)
    found = {name: CurveKeys(tmp_path / name, include_loopback=True, client="room-1")
             for name in layouts}
    return found | {"engine": CurveKeys(tmp_path / "engine", include_loopback=True)}


def _endpoint(sock: zmq.Socket) -> str:
    return sock.getsockopt_string(zmq.LAST_ENDPOINT)


def _ping() -> Control:
    return Control(v=PROTOCOL_VERSION, room="room-1", target="*", command="ping")


def _said(events: MemorySink, side: str) -> list[dict[str, object]]:
    return [e for e in events.of("handshake_failed") if e["side"] == side]


def _count(side: str, endpoint: str) -> int:
    return sum(f["count"] for f in handshake_failures()
               if f["side"] == side and f["endpoint"] == endpoint)


def test_a_room_key_the_engine_never_authorized_is_said_once_a_minute_on_both_sides(
    sockets: Sockets, keys: dict[str, CurveKeys], clock: FakeClock, events: MemorySink,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "ground.security")
    engine = sockets(zmq.PULL, "tcp://127.0.0.1:*", bind=True,
                         curve=keys["engine"])
    endpoint = _endpoint(engine)
    # two sockets of the room on one endpoint: each fails, the endpoint is said once
    rooms = [sockets(zmq.PUSH, endpoint, bind=False, curve=keys["unauthorized"])
             for _ in range(2)]
    wait_until(lambda: _count("client", endpoint) == 2 and _count("server", "127.0.0.1") == 2)
    [room_side] = _said(events, "client")
    assert room_side["endpoint"] == endpoint and room_side["reason"] == "key_refused"
    assert "the engine refused this room's key (room-1.key" in str(room_side["error"])
    assert "check [security] client_key ('room-1')" in str(room_side["error"])
    [engine_side] = _said(events, "server")
    assert engine_side["endpoint"] == "127.0.0.1" and engine_side["reason"] == "key_refused"
    assert ("room at 127.0.0.1: the engine refused its key" in str(engine_side["error"])
            and str(keys["engine"].authorized) in str(engine_side["error"]))
    # the same line in the role's log, where a technician looks
    assert sum("the engine refused this room's key" in r.getMessage()
               for r in caplog.records) == 1

    # within the minute: counted, not said; a minute on: said again
    clock.now += 59
    rooms.append(sockets(zmq.PUSH, endpoint, bind=False,
                             curve=keys["unauthorized"]))
    wait_until(lambda: _count("client", endpoint) == 3)
    assert len(_said(events, "client")) == 1
    clock.now += 1
    rooms.append(sockets(zmq.PUSH, endpoint, bind=False,
                             curve=keys["unauthorized"]))
    wait_until(lambda: _count("client", endpoint) == 4 and _count("server", "127.0.0.1") == 4)
    assert len(_said(events, "client")) == 2 and len(_said(events, "server")) == 2

    # the right key: heard, and nothing more said
    right = sockets(zmq.PUSH, endpoint, bind=False, curve=keys["right"])
    send(right, _ping())
    assert engine.poll(5000) and decode(engine.recv_multipart()) == _ping()
    assert len(events.of("handshake_failed")) == 4
    assert [f["count"] for f in handshake_failures()] == [4, 4]


def test_the_right_keys_say_nothing(
    sockets: Sockets, keys: dict[str, CurveKeys], clock: FakeClock, events: MemorySink,
) -> None:
    engine = sockets(zmq.XPUB, "tcp://127.0.0.1:*", bind=True,
                         curve=keys["engine"])
    room = sockets(zmq.SUB, _endpoint(engine), bind=False, subscribe=["room-1"],
                       curve=keys["right"])
    assert engine.poll(5000) and engine.recv() == b"\x01room-1"
    send(engine, _ping())
    assert room.poll(5000) and decode(room.recv_multipart()) == _ping()
    assert events.items == [] and handshake_failures() == []


def test_another_installations_server_key_is_said_once_a_minute_though_it_retries(
    sockets: Sockets, keys: dict[str, CurveKeys], clock: FakeClock, events: MemorySink,
) -> None:
    engine = sockets(zmq.PULL, "tcp://127.0.0.1:*", bind=True,
                         curve=keys["engine"])
    endpoint = _endpoint(engine)
    sockets(zmq.PUSH, endpoint, bind=False, curve=keys["other-server"])
    # ZeroMQ retries this one every 100 ms: many failures, one line per side
    wait_until(lambda: _count("client", endpoint) >= 5 and _count("server", endpoint) >= 5)
    [room_side] = _said(events, "client")
    assert room_side["reason"] == "server_key"
    assert (f"{endpoint}: this room refused the engine's key, or the engine could not read "
            f"this room's: {keys['other-server'].folder / 'server.key'} must be the engine "
            f"machine's server.key") in str(room_side["error"])
    [engine_side] = _said(events, "server")
    assert engine_side["reason"] == "server_key" and engine_side["endpoint"] == endpoint
    assert "its server.key is not this engine's" in str(engine_side["error"])
    clock.now += 60
    wait_until(lambda: len(_said(events, "client")) == 2 and len(_said(events, "server")) == 2)


def test_curve_off_on_one_side_is_said_on_both(
    sockets: Sockets, keys: dict[str, CurveKeys], clock: FakeClock, events: MemorySink,
) -> None:
    engine = sockets(zmq.PULL, "tcp://127.0.0.1:*", bind=True,
                         curve=keys["engine"])
    port = _endpoint(engine).rpartition(":")[2]
    # a room with curve off, on a link off the machine (0.0.0.0 reaches this one, and is
    # not loopback by its name): watched though it speaks in clear
    sockets(zmq.PUSH, f"tcp://0.0.0.0:{port}", bind=False)
    wait_until(lambda: len(events.of("handshake_failed")) == 2)
    [room_side] = _said(events, "client")
    assert room_side["reason"] == "curve_mismatch"
    assert "the engine requires CurveZMQ and this room has [security] curve off: set " \
           "curve = true" in str(room_side["error"])
    [engine_side] = _said(events, "server")
    assert engine_side["reason"] == "curve_mismatch"
    assert "a room connected with [security] curve off" in str(engine_side["error"])


def test_a_failure_is_said_once_a_minute_per_endpoint_and_reason() -> None:
    clock = FakeClock()
    sink = MemorySink()
    failures = HandshakeFailures(clock=clock, sink=sink)
    assert failures.record("tcp://a:1", "client", "server_key", "a: fix it")
    assert not failures.record("tcp://a:1", "client", "server_key", "a: fix it")
    assert failures.record("tcp://b:1", "client", "server_key", "b: fix it")  # another endpoint
    assert failures.record("tcp://a:1", "server", "server_key", "a: fix it")  # another side
    assert failures.record("tcp://a:1", "client", "key_refused", "a: other")  # a new diagnosis
    clock.now += 59.9
    assert not failures.record("tcp://a:1", "client", "server_key", "a: fix it")
    clock.now += 0.1
    assert failures.record("tcp://a:1", "client", "server_key", "a: fix it")
    assert failures.total == 7 and len(sink.of("handshake_failed")) == 5
    clock.now += 10
    assert failures.recent(within_s=5) == []
    newest = failures.recent()[0]
    assert newest == {"endpoint": "tcp://a:1", "side": "client", "reason": "server_key",
                      "count": 5, "age_s": 10.0, "message": "a: fix it"}


def test_an_unreadable_authorized_key_is_a_config_error_naming_the_folder(
    sockets: Sockets, keys: dict[str, CurveKeys],
) -> None:
    (keys["engine"].authorized / "broken.key").write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"security.keys_dir: expected ZeroMQ public keys "
                                          r"\(\*.key\) in .*authorized, got one that does "
                                          r"not read"):
        sockets(zmq.PULL, "tcp://127.0.0.1:*", bind=True, curve=keys["engine"])


def test_a_refused_key_is_in_the_roles_heartbeat_and_a_status_problem(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # said in the role's log only, `art2mus status` called a room silent for a wrong key
    # healthy
    import os as _os

    from ground.health import Heartbeat, HeartbeatReader
    from installation.status import role_problems

    now = [100.0]
    failures = security.HandshakeFailures(clock=lambda: now[0])
    monkeypatch.setattr(security, "HANDSHAKES", failures)
    read, write = _os.pipe()
    try:
        heartbeat, reader = Heartbeat(0.0, fd=write), HeartbeatReader(read)
        assert heartbeat.beat({"state": "playing"}, force=True) and reader.read()
        assert "handshakes" not in reader.status
        failures.record("tcp://10.0.0.2:5702", "client", "auth",
                        "the engine refused this room's key at tcp://10.0.0.2:5702")
        assert heartbeat.beat({"state": "playing"}, force=True) and reader.read()
        assert reader.status["handshakes"] == [
            "the engine refused this room's key at tcp://10.0.0.2:5702"]
        row = {"name": "audio_out:a", "kind": "audio_out", "room": "a", "state": "running",
               "status": reader.status}
        assert "audio_out:a: the engine refused this room's key at tcp://10.0.0.2:5702" \
            in role_problems([row])
        now[0] += 121.0  # two minutes without one: no longer shown
        assert heartbeat.beat({"state": "playing"}, force=True) and reader.read()
        assert "handshakes" not in reader.status
    finally:
        _os.close(read)
        _os.close(write)
