"""The engine's heartbeat status carries what the technician's console shows.

``generator``, ``chunk_ms``, ``batch`` and ``gpu_memory_mb`` at the top level,
``instruments`` per room; the server runs in-process on inproc:// sockets,
driven turn by turn under a fake clock.
"""

from __future__ import annotations

import sys
import time
import types
from collections.abc import Sequence
from typing import Any

import pytest
import zmq

from engine.generators import Generated, can_batch
from engine.generators.sine import SineGenerator
from engine.server import LISTENER_GRACE_S, EngineServer, gpu_memory_mb, instrument_names
from ground.protocol import PROTOCOL_VERSION, AudioChunk, PlaybackClock
from ground.transport import decode, make_socket, send
from installation.config import config_from_dict
from installation.roles import engine_role_config


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class BatchingSine(SineGenerator):
    """A sine that serves every room due together in one call (as the diffusion model does)."""

    def generate_batch(self, requests: Sequence[tuple[Any, Any, int]]
                       ) -> list[tuple[Generated, Any]]:
        """Each request's frames, as ``generate`` would make them."""
        return [self.generate(state, condition, frames) for state, condition, frames in requests]


def _server(generator: str, name: str, rooms: int = 3, sine: SineGenerator | None = None,
            ) -> tuple[EngineServer, FakeClock, zmq.Context]:
    config = config_from_dict({
        "network": {part: f"inproc://status-{name}-{part}"
                    for part in ("views", "chunks", "clock", "control")},
        "engine": {"generator": generator, "chunk_s": 0.25, "lead_s": 0.75,
                   "batch_window_s": 0.25, "transition_crossfade_s": 0.2},
        "rooms": [{"id": f"room{i}", "seed": i} for i in range(rooms)],
    })
    context = zmq.Context()
    clock = FakeClock()
    server = EngineServer(engine_role_config(config), lambda *a, **k: None, generator=sine,
                          context=context, clock=clock)
    return server, clock, context


def _serve(server: EngineServer, clock: FakeClock, context: zmq.Context, turns: int) -> int:
    """Subscribe to every room, send clocks, run ``turns`` turns; the chunks received."""
    net = server.config.network
    rooms = list(server.sessions)
    listener = make_socket(context, zmq.SUB, net.chunks, bind=False, subscribe=rooms)
    clocks = make_socket(context, zmq.PUSH, net.clock, bind=False)
    rate = server.generator.sample_rate
    for room in rooms:
        send(clocks, PlaybackClock(v=PROTOCOL_VERSION, room=room, sample_rate=rate, playhead=0,
                                   buffered_until=0, wall_time=0.0, state="playing"))
    deadline = time.monotonic() + 5.0  # only a bound on waiting for the sockets
    while time.monotonic() < deadline and (
            server.subscribed != set(rooms)
            or any(s.playhead_estimate() is None for s in server.sessions.values())):
        server._receive()
        time.sleep(0.01)
    received = 0
    try:
        for _ in range(turns):
            server._receive()
            server._generate_due()
            while listener.poll(20):
                assert isinstance(decode(listener.recv_multipart()), AudioChunk)
                received += 1
            clock.now += 0.05
    finally:
        listener.close()
        clocks.close()
    return received


def test_a_procedural_engine_reports_its_generator_times_and_instruments() -> None:
    server, clock, context = _server("procedural", "procedural")
    try:
        assert server.status()["chunk_ms"] is None  # nothing generated yet
        assert _serve(server, clock, context, turns=10) >= 3
        status = server.status()
    finally:
        server.close()
        context.term()
    assert status["generator"] == "procedural"
    assert isinstance(status["chunk_ms"], float) and status["chunk_ms"] > 0
    assert status["batch"] == [1]  # the procedural generator serves rooms one by one
    assert status["gpu_memory_mb"] is None or status["gpu_memory_mb"] >= 0
    for room in status["rooms"].values():
        assert room["instruments"] and all(isinstance(n, str) and n for n in room["instruments"])
        # the next bar line as heard (the clock said: sample 0 at wall time 0), for Link's lead
        assert 0.0 <= room["downbeat"] < 86400.0 and room["bar_s"] == pytest.approx(
            60.0 / room["tempo_bpm"] * 4, rel=0.35)
    assert len(str(status)) < 4000  # the heartbeat stays one small pipe write


def test_a_batching_engine_reports_its_recent_batch_sizes() -> None:
    sine = BatchingSine(sample_rate=16000, channels=1)
    assert can_batch(sine)
    server, clock, context = _server("sine", "batching", rooms=3, sine=sine)
    try:
        _serve(server, clock, context, turns=40)
        status = server.status()
    finally:
        server.close()
        context.term()
    # the three rooms start together and stay in step: every call serves all three
    assert 2 <= len(status["batch"]) <= 8 and set(status["batch"]) == {3}
    assert status["chunk_ms"] is not None
    assert "instruments" not in status["rooms"]["room0"]  # a sine names none


def test_gpu_memory_is_read_only_from_a_torch_already_using_cuda(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert gpu_memory_mb() is None
    assert "torch" not in sys.modules  # never imported for the heartbeat
    cuda = types.SimpleNamespace(is_initialized=lambda: False,
                                 memory_allocated=lambda: 3 * 2**20)
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    assert gpu_memory_mb() is None  # CUDA not in use
    cuda.is_initialized = lambda: True
    assert gpu_memory_mb() == 3.0


def test_instrument_names_come_from_lists_or_role_records() -> None:
    assert instrument_names({"instruments": ["piano", "strings"]}) == ["piano", "strings"]
    assert instrument_names({"instruments": {"melody": {"name": "Flute", "program": 73},
                                             "bass": {"name": "Cello"}}}) == ["Flute", "Cello"]
    assert instrument_names({"frequency_hz": 440.0}) is None


def test_the_engine_warms_the_generator_it_builds_and_beats_meanwhile(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A generator with graphs to capture is warmed before serving, the heartbeat kept
    beating after each window and the warm-up logged; one handed in is left as it is."""
    import engine.server

    calls: list[str] = []

    class WarmingSine(SineGenerator):
        def warm_graphs(self, progress: Any = None) -> int:
            for _ in range(3):
                calls.append("window")
                if progress is not None:
                    progress()
            return 2

    class Beats:
        def __init__(self) -> None:
            self.statuses: list[Any] = []

        def beat(self, status: Any = None, force: bool = False) -> bool:
            self.statuses.append(status)
            return True

    monkeypatch.setattr(engine.server, "make_generator",
                        lambda config: WarmingSine(sample_rate=config.sample_rate,
                                                   channels=config.channels))

    def config(name: str) -> Any:
        return engine_role_config(config_from_dict({
            "network": {part: f"inproc://{name}-{part}"
                        for part in ("views", "chunks", "clock", "control")},
            "engine": {"generator": "sine"}, "rooms": [{"id": "room0"}]}))

    events: list[tuple[str, dict[str, Any]]] = []
    beats = Beats()
    context = zmq.Context()
    try:
        server = EngineServer(config("warm-built"),
                              lambda kind, **fields: events.append((kind, fields)),
                              context=context, heartbeat=beats)  # type: ignore[arg-type]
        assert calls == ["window"] * 3
        assert beats.statuses[:3] == [{"warming": True}] * 3
        assert [f["graphs"] for kind, f in events if kind == "warmed_up"] == [2]
        server.close()
        calls.clear()
        given = EngineServer(config("warm-given"), lambda *a, **k: None,
                             generator=WarmingSine(sample_rate=48000, channels=2),
                             context=context)
        assert calls == []
        given.close()
    finally:
        context.destroy(linger=0)


def _until(server: EngineServer, done: Any) -> None:
    """Turn the engine's inboxes until ``done()`` (the sockets connect in their own threads)."""
    deadline = time.monotonic() + 5.0  # only a bound on waiting for the sockets
    while not done() and time.monotonic() < deadline:
        server._receive()
        time.sleep(0.01)
    assert done()


def test_each_room_says_whether_an_audio_out_listens_and_when_its_clock_came() -> None:
    # A room whose audio_out could not subscribe (a wrong CurveZMQ key, the engine
    # unreachable from the room machine) showed health 1.0 while nobody heard it.
    server, clock, context = _server("sine", "listening", rooms=2)
    net = server.config.network
    listener = clocks = None

    def rooms() -> dict[str, Any]:
        return {room: {k: entry[k] for k in ("listening", "clock_age_s", "health")}
                for room, entry in server.status()["rooms"].items()}

    try:
        unheard = {"listening": False, "clock_age_s": None, "health": 1.0}
        assert rooms() == {"room0": unheard, "room1": unheard}  # starting: within the grace
        clock.now += LISTENER_GRACE_S + 1
        unheard = {"listening": False, "clock_age_s": None, "health": 0.0}
        assert rooms() == {"room0": unheard, "room1": unheard}
        # room0's audio_out comes: it subscribes and reports its clock
        listener = make_socket(context, zmq.SUB, net.chunks, bind=False, subscribe=["room0"])
        clocks = make_socket(context, zmq.PUSH, net.clock, bind=False)
        send(clocks, PlaybackClock(v=PROTOCOL_VERSION, room="room0",
                                   sample_rate=server.generator.sample_rate, playhead=0,
                                   buffered_until=0, wall_time=0.0, state="playing"))
        _until(server, lambda: rooms()["room0"]["listening"]
               and rooms()["room0"]["clock_age_s"] is not None)
        clock.now += 2.0
        assert rooms() == {"room0": {"listening": True, "clock_age_s": 2.0, "health": 1.0},
                           "room1": unheard}
        # its clock reports stop reaching the engine: degraded
        clock.now += LISTENER_GRACE_S
        assert rooms()["room0"] == {"listening": True, "clock_age_s": LISTENER_GRACE_S + 2.0,
                                    "health": 0.5}
        # it goes: nobody listens, and once the grace has passed the room is down
        listener.close(linger=0)
        listener = None
        _until(server, lambda: not rooms()["room0"]["listening"])
        assert rooms()["room0"]["health"] == 0.5
        clock.now += LISTENER_GRACE_S + 1
        assert rooms()["room0"] == {"listening": False, "clock_age_s": 2 * LISTENER_GRACE_S + 3.0,
                                    "health": 0.0}
        assert server.status()["subscribed"] == []
    finally:
        for socket in (listener, clocks):
            if socket is not None:
                socket.close(linger=0)
        server.close()
        context.term()


def test_a_tap_on_every_room_listens_to_each() -> None:
    server, clock, context = _server("sine", "tap", rooms=2)
    tap = make_socket(context, zmq.SUB, server.config.network.chunks, bind=False, subscribe=[""])
    try:
        _until(server, lambda: server.subscribed == {""})
        clock.now += LISTENER_GRACE_S + 1
        status = server.status()["rooms"]
        assert all(r["listening"] and r["health"] == 0.5 for r in status.values())  # no clock
    finally:
        tap.close(linger=0)
        server.close()
        context.term()


def test_a_room_two_audio_outs_report_for_says_so_in_its_status(
        monkeypatch: pytest.MonkeyPatch) -> None:
    server, _, context = _server("sine", "duplicate", rooms=1)
    try:
        assert "duplicate" not in server.status()["rooms"]["room0"]
        seen = {"following": "ccbedbe1", "refused": ["e9ce144c"], "refused_clocks": 12}
        # what RoomSession.duplicate says while two instance ids alternate (test_streaming)
        monkeypatch.setattr(type(server.sessions["room0"]), "duplicate",
                            property(lambda session: seen))
        assert server.status()["rooms"]["room0"]["duplicate"] == seen
    finally:
        server.close()
        context.term()
