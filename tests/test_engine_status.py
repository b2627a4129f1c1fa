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
from engine.server import EngineServer, gpu_memory_mb, instrument_names
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
