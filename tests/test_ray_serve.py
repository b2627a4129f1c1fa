"""The engine on Ray Serve (issue 19): the replica's streams and deadlines, the front's
retries and fallback, and (slow, where Ray is installed) a real local Ray cluster.

The fast tests need no Ray: the front talks to a stand-in of the deployment, a
stdlib HTTP server around the same :class:`ReplicaCore` a replica runs, over
the same wire. The slow test starts ``art2mus serve`` (a local Ray head, two
replicas of the procedural generator), plays four virtual rooms against an
engine front with ``engine.backend = "ray"``, kills one replica with SIGKILL,
then stops Ray.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from engine.config import EngineConfig, RayConfig
from engine.generators import RoomControls
from engine.generators.sine import SineGenerator
from engine.ray_serve import (
    DEGRADED,
    HEALTHY,
    MAX_REQUEST_FRAMES,
    ROUTE,
    ChunkReply,
    ChunkRequest,
    RayGenerator,
    RemoteStream,
    ReplicaCore,
    RequestRefused,
    ViewCondition,
    decode_request,
)
from engine.room_placement import RoomPlacement
from ground.protocol import PROTOCOL_VERSION, Array, ArtworkView

RATE = 16000
FRAMES = 4000


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _view(room: str, artwork: str = "a") -> ArtworkView:
    return ArtworkView(v=PROTOCOL_VERSION, room=room, seq=0, time=0.0, state="artwork",
                       artwork_id=artwork, confidence=1.0, features={"brightness": 0.5})


class StandIn:
    """The deployment's wire around a :class:`ReplicaCore`, on a stdlib HTTP server.

    ``fail_next`` requests answer HTTP 500 (a replica killed mid-request).
    """

    def __init__(self, port: int, generator: Any = None) -> None:
        self.core = ReplicaCore(generator or SineGenerator(sample_rate=RATE, channels=1))
        self.fail_next = 0
        self.rooms: list[str] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                self._answer(200, msgspec.json.encode(stand_in.core.info()))

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                try:  # as the deployment does
                    request = decode_request(body)
                except RequestRefused as refused:
                    stand_in.core.refused += 1
                    self._answer(400, str(refused).encode())
                    return
                stand_in.rooms.append(self.headers["serve_multiplexed_model_id"])
                if stand_in.fail_next > 0:
                    stand_in.fail_next -= 1
                    self._answer(500, b"replica died")
                    return
                reply = stand_in.core.serve([(request, time.time())])[0]
                if isinstance(reply, RequestRefused):  # the generator refused its view
                    self._answer(reply.status, str(reply).encode())
                    return
                self._answer(200, msgspec.msgpack.encode(reply))

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def port() -> int:
    return _free_port()


@pytest.fixture
def stand_in(port: int) -> Iterator[StandIn]:
    server = StandIn(port)
    yield server
    server.stop()


def _front(port: int, events: list[tuple[str, dict[str, Any]]] | None = None,
           playheads: dict[str, int] | None = None) -> RayGenerator:
    config = EngineConfig(generator="sine", sample_rate=RATE, channels=1, backend="ray",
                          ray=RayConfig(http_port=port, probe_every_s=0.05,
                                        request_timeout_s=5.0, deadline_slack_s=0.0))
    sink = (lambda kind, **fields: events.append((kind, fields))) if events is not None else (
        lambda kind, **fields: None)
    return RayGenerator(config, sink, lambda room: (playheads or {}).get(room),
                        fallback=SineGenerator(sample_rate=RATE, channels=1))


def _play(front: RayGenerator, rooms: list[str], chunks: int) -> dict[str, np.ndarray]:
    """``chunks`` chunks of every room, batched, as the engine would ask for them."""
    conditions = [front.prepare(_view(room)) for room in rooms]
    states = [front.start(c, i, 0, None) for i, c in enumerate(conditions)]
    audio: dict[str, list[np.ndarray]] = {room: [] for room in rooms}
    for _ in range(chunks):
        results = front.generate_batch([(s, c, FRAMES) for s, c in zip(states, conditions,
                                                                       strict=True)])
        states = [state for _, state in results]
        for room, (generated, _) in zip(rooms, results, strict=True):
            audio[room].append(generated.audio)
    return {room: np.concatenate(parts) for room, parts in audio.items()}


def _direct(room_index: int, chunks: int) -> np.ndarray:
    return _direct_stream(room_index, chunks, f"room-{room_index}")


def _direct_stream(seed: int, chunks: int, room: str = "r") -> np.ndarray:
    """``chunks`` chunks of one stream, generated here without the wire."""
    generator = SineGenerator(sample_rate=RATE, channels=1)
    condition = generator.prepare(_view(room))
    state = generator.start(condition, seed, 0, None)
    parts = []
    for _ in range(chunks):
        generated, state = generator.generate(state, condition, FRAMES)
        parts.append(generated.audio)
    return np.concatenate(parts)


# -- configuration -------------------------------------------------------------------


def test_the_ray_section_is_validated_naming_the_fields() -> None:
    assert EngineConfig().backend == "local"
    with pytest.raises(ValidationError, match="min_replicas <= replicas <= max_replicas"):
        RayConfig(replicas=3, max_replicas=2)
    with pytest.raises(ValidationError, match="backend"):
        EngineConfig(backend="dask")  # type: ignore[arg-type]
    config = EngineConfig(backend="ray", ray=RayConfig(http_port=9000, replicas=2))
    assert EngineConfig.model_validate_json(config.model_dump_json()) == config


def test_serve_is_an_art2mus_command() -> None:
    from installation.cli import cli

    result = CliRunner().invoke(cli, ["serve", "--help"])
    assert result.exit_code == 0, result.output
    assert "--config" in result.output


# -- the replica ---------------------------------------------------------------------


def _request(stream: str, due: float, position: int = 0, start: int = 0,
             room: str = "r") -> ChunkRequest:
    return ChunkRequest(room=room, stream=stream, previous=None, seed=1, start_sample=start,
                        position=position, frames=FRAMES, view=_view(room),
                        controls=RoomControls(), due=due)


def test_a_replica_refuses_a_request_out_of_range_naming_the_field() -> None:
    good = _request("s", time.time())
    assert decode_request(msgspec.msgpack.encode(good)) == good
    nan = float("nan")
    bad = {
        "frames": msgspec.structs.replace(good, frames=0),
        "frames: expected 1..": msgspec.structs.replace(good, frames=MAX_REQUEST_FRAMES + 1),
        "position": msgspec.structs.replace(good, start_sample=FRAMES, position=0),
        "due": msgspec.structs.replace(good, due=nan),
        "room": msgspec.structs.replace(good, room=""),
        "stream": msgspec.structs.replace(good, stream="x" * 300),
        "controls.intensity": msgspec.structs.replace(good, controls=RoomControls(intensity=nan)),
        "controls.tonic": msgspec.structs.replace(good, controls=RoomControls(tonic=12)),
        "controls.tempo_bpm": msgspec.structs.replace(good, controls=RoomControls(tempo_bpm=1e6)),
        "controls.transition_s": msgspec.structs.replace(
            good, controls=RoomControls(transition_s=float("inf"))),
    }
    for field_name, request in bad.items():
        with pytest.raises(RequestRefused, match=f"chunk request: {field_name}"):
            decode_request(msgspec.msgpack.encode(request))
    with pytest.raises(RequestRefused, match="malformed"):
        decode_request(b"\x93not a request")
    with pytest.raises(RequestRefused, match="malformed"):
        decode_request(msgspec.msgpack.encode({"room": "r", "frames": "many"}))


def test_a_refused_request_is_answered_400_and_counted_and_the_room_is_made_here(
        stand_in: StandIn, port: int) -> None:
    front = _front(port)
    try:
        condition = front.prepare(_view("room-0"))
        state = front.start(condition, 0, 0, None)
        # a knob the front's own checks would have stopped, as a hostile client sends it
        bad = ViewCondition(condition.view, RoomControls(intensity=float("nan")))
        [(generated, _)] = front.generate_batch([(state, bad, FRAMES)])
    finally:
        front.close()
    # refused once, not sent again (it would be refused again), made here
    assert stand_in.core.refused == 1 and stand_in.core.served == 0
    assert front.failures == {"refused": 1} and front.retries == 0
    assert front.local_chunks == 1 and generated.audio.shape == (FRAMES, 1)
    assert np.isfinite(generated.audio).all()


def test_a_replica_serves_its_batch_due_soonest_first_and_counts_missed_deadlines() -> None:
    order: list[int] = []

    class Recording(SineGenerator):
        def generate(self, state: Any, condition: Any, frames: int) -> Any:
            order.append(state.position)
            return super().generate(state, condition, frames)

    now = [100.0]
    core = ReplicaCore(Recording(sample_rate=RATE, channels=1), clock=lambda: now[0])
    late = _request("late", due=200.0, position=0, start=0)
    soon = _request("soon", due=100.5, position=RATE, start=RATE)
    replies = core.serve([(late, 100.0), (soon, 100.0)])
    assert order == [RATE, 0]  # the stream due soonest was generated first
    assert [r.batch for r in replies] == [2, 2]
    assert not any(r.missed or r.reopened for r in replies)  # the fake clock passed no due
    now[0] = 300.0
    replies = core.serve([(_request("late", 250.0, position=FRAMES), 300.0)])
    assert replies[0].missed and core.missed == 1
    assert replies[0].queue_s == 0.0


def test_a_replica_continues_a_stream_it_holds_and_reopens_one_it_does_not() -> None:
    core = ReplicaCore(SineGenerator(sample_rate=RATE, channels=1))
    first = core.serve([(_request("s", time.time()), time.time())])[0]
    second = core.serve([(_request("s", time.time(), position=FRAMES), time.time())])[0]
    assert not first.reopened and not second.reopened
    # another replica (or this one after a crash) is asked for the third chunk
    other = ReplicaCore(SineGenerator(sample_rate=RATE, channels=1))
    third = other.serve([(_request("s", time.time(), position=2 * FRAMES), time.time())])[0]
    assert third.reopened and other.reopened == 1
    assert third.generated(FRAMES).audio.shape == (FRAMES, 1)
    # the first two chunks are the stream a direct call makes
    got = np.concatenate([r.generated(FRAMES).audio for r in (first, second)])
    np.testing.assert_allclose(got, _direct_stream(1, 2), atol=1e-6)


def _first(options: Any) -> Any:
    return sorted(options)[0]


def test_rooms_starting_together_are_spread_evenly_and_stay_on_their_replica() -> None:
    placement = RoomPlacement(choose=_first)
    rooms = [f"room-{i}" for i in range(8)]
    # all eight rooms ask at once, before any replica reports holding one
    first = {room: placement.place(room, ["a", "b"], set(), 0.0)[0][0] for room in rooms}
    assert sorted(first.values()) == ["a"] * 4 + ["b"] * 4
    for t in range(1, 60):  # a minute of chunks: nobody moves
        for room in rooms:
            ranks = placement.place(room, ["a", "b"], {first[room]}, float(t))
            assert ranks[0] == [first[room]] and len(ranks) == 2
    assert placement.moved == 0
    # a third replica joins: new rooms go to it first
    assert placement.place("room-8", ["a", "b", "c"], set(), 60.0)[0] == ["c"]


def test_a_new_room_prefers_a_replica_already_holding_its_stream_unless_it_is_busier() -> None:
    placement = RoomPlacement(choose=_first)
    assert placement.place("x", ["a", "b"], {"b"}, 0.0)[0] == ["b"]
    placement.place("y", ["a", "b"], set(), 0.0)  # to a, the least busy
    placement.place("z", ["a", "b"], set(), 0.0)  # a tie: the first
    assert placement.rooms() == {"b": ["x"], "a": ["y", "z"]}
    busy = RoomPlacement(choose=_first)
    for room in ("p", "q"):
        busy.place(room, ["a", "b"], set(), 0.0)
    busy.place("r", ["a", "b"], set(), 0.0)
    loads = {k: len(v) for k, v in busy.rooms().items()}
    heavy = max(loads, key=lambda k: loads[k])
    light = min(loads, key=lambda k: loads[k])
    # the busier replica holds the new room's stream (say, from before a proxy restart)
    assert busy.place("s", ["a", "b"], {heavy}, 0.0)[0] == [light]


def test_a_dead_replicas_rooms_move_and_its_replacement_is_filled_slowly() -> None:
    placement = RoomPlacement(move_every_s=5.0, settle_s=10.0, choose=_first)
    rooms = [f"room-{i}" for i in range(8)]
    for room in rooms:
        placement.place(room, ["a", "b"], set(), 0.0)
    # b dies: its four rooms go to a, the only survivor
    for room in rooms:
        assert placement.place(room, ["a"], set(), 1.0) == [["a"]]
    assert {k: len(v) for k, v in placement.rooms().items()} == {"a": 8}
    # c replaces b: rooms move one at a time, each settled, at most one per 5 s
    moves: list[float] = []
    t = 1.0
    while t < 60.0:
        t += 0.5
        before = placement.moved
        for room in rooms:
            placement.place(room, ["a", "c"], set(), t)
        if placement.moved > before:
            assert placement.moved == before + 1
            moves.append(t)
    assert {k: len(v) for k, v in placement.rooms().items()} == {"a": 4, "c": 4}
    assert moves[0] >= 10.0  # a room moves only once settled where it is (10 s)
    assert all(b - a >= 5.0 for a, b in zip(moves, moves[1:], strict=False))
    assert placement.moved == 4


def test_a_room_not_heard_from_is_forgotten() -> None:
    placement = RoomPlacement(idle_s=30.0, choose=_first)
    placement.place("gone", ["a", "b"], set(), 0.0)
    placement.place("stays", ["a", "b"], set(), 0.0)
    placement.place("stays", ["a", "b"], set(), 25.0)
    placement.place("stays", ["a", "b"], set(), 50.0)
    assert sorted(r for rooms in placement.rooms().values() for r in rooms) == ["stays"]
    # "gone" no longer counts on a: the new room goes there
    assert placement.place("new", ["a", "b"], set(), 50.0) == [["a"], ["b"]]
    assert placement.place("nothing", [], set(), 50.0) == []


# -- the front ------------------------------------------------------------------------


def test_the_front_plays_every_room_through_the_deployment(stand_in: StandIn,
                                                           port: int) -> None:
    front = _front(port)
    try:
        audio = _play(front, ["room-0", "room-1", "room-2"], chunks=4)
    finally:
        front.close()
    assert front.local_chunks == 0 and front.state == HEALTHY
    assert front.reopened == 0
    for i in range(3):
        np.testing.assert_allclose(audio[f"room-{i}"], _direct(i, 4), atol=1e-6)
    # each request names its room, so Serve keeps a room on the replica holding its stream
    assert sorted(set(stand_in.rooms)) == ["room-0", "room-1", "room-2"]
    status = front.backend_status()
    assert status["state"] == HEALTHY
    [replica] = status["replicas"].values()
    assert replica["requests"] == 12 and replica["batch_mean"] == 1.0
    assert replica["rooms"] == ["room-0", "room-1", "room-2"]


def test_the_front_sends_the_room_due_soonest_first(stand_in: StandIn, port: int) -> None:
    front = _front(port, playheads={"room-0": 0, "room-1": -RATE, "room-2": -3 * RATE})
    front._pool.shutdown()
    front._pool = type(front._pool)(max_workers=1)  # one at a time: the send order is seen
    try:
        conditions = [front.prepare(_view(f"room-{i}")) for i in range(3)]
        states = [front.start(c, i, 0, None) for i, c in enumerate(conditions)]
        front.generate_batch([(s, c, FRAMES) for s, c in zip(states, conditions, strict=True)])
    finally:
        front.close()
    # room-0's buffer runs out now, room-1's in a second, room-2's in three
    assert stand_in.rooms == ["room-0", "room-1", "room-2"]


def test_a_failed_request_is_sent_again_while_its_deadline_allows(stand_in: StandIn,
                                                                 port: int) -> None:
    stand_in.fail_next = 1
    front = _front(port, playheads={"room-0": -10 * RATE})  # ten seconds of lead
    try:
        audio = _play(front, ["room-0"], chunks=2)
    finally:
        front.close()
    assert front.retries == 1 and front.local_chunks == 0
    assert front.failures == {"ValueError": 1}
    np.testing.assert_allclose(audio["room-0"], _direct(0, 2), atol=1e-6)


def test_a_request_past_its_deadline_is_made_here_instead(stand_in: StandIn, port: int) -> None:
    stand_in.fail_next = 1
    front = _front(port, playheads={"room-0": 0})  # due now: no time for another try
    try:
        audio = _play(front, ["room-0"], chunks=2)
    finally:
        front.close()
    assert front.retries == 0 and front.local_chunks == 1
    assert front.state == HEALTHY  # one failure is not an unreachable Ray
    np.testing.assert_allclose(audio["room-0"], _direct(0, 2), atol=1e-6)


def test_ray_gone_falls_back_loudly_and_returns_when_it_is_back(port: int) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    front = _front(port, events)
    try:
        audio = _play(front, ["room-0"], chunks=2)  # nobody listens on the port
        assert front.state == DEGRADED == "degraded: ray unreachable"
        assert front.backend_status()["state"] == DEGRADED
        assert front.local_chunks == 2
        assert [kind for kind, _ in events] == ["backend_degraded"]
        assert events[0][1]["fallback"] == "procedural"
        np.testing.assert_allclose(audio["room-0"], _direct(0, 2), atol=1e-6)
        server = StandIn(port)
        try:
            assert front._restored.wait(timeout=30.0)  # the probe found it
            _play(front, ["room-1"], chunks=1)
            assert front.state == HEALTHY
            assert [kind for kind, _ in events] == ["backend_degraded", "backend_restored"]
            assert server.rooms == ["room-1"]
        finally:
            server.stop()
    finally:
        front.close()


def test_the_engine_builds_the_front_and_reports_the_backend(port: int, tmp_path: Path) -> None:
    from engine.config import EngineRoleConfig, EngineRoom
    from engine.server import EngineServer
    from ground.config import NetworkConfig

    network = NetworkConfig(**{name: f"ipc://{tmp_path}/{name}"
                               for name in ("views", "chunks", "clock", "control")})
    config = EngineRoleConfig(
        engine=EngineConfig(generator="sine", sample_rate=RATE, channels=1, backend="ray",
                            ray=RayConfig(http_port=port)),
        rooms=(EngineRoom("room-0"),), network=network)
    server = EngineServer(config, lambda kind, **fields: None)
    try:
        assert isinstance(server.generator, RayGenerator)
        assert server.status()["backend"]["kind"] == "ray"
        assert server.status()["backend"]["state"] == HEALTHY
        assert server.batching  # rooms due together go out together
    finally:
        server.close()


def test_replies_of_the_wrong_size_are_refused() -> None:
    reply = ChunkReply(audio=np.zeros(10, np.float32).tobytes(), notes=b"", channels=1,
                       replica="x:1", batch=1, queue_s=0.0, compute_s=0.0, missed=False,
                       reopened=False)
    with pytest.raises(ValueError, match="expected 20 x 1 samples, got 10"):
        reply.generated(20)
    assert isinstance(RemoteStream("r", "s", None, 0, 0, 0), RemoteStream)


@pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
def test_tiny_diffusion_replicas_serve_rooms_as_a_local_model_would(
        tiny_model_folder: Path) -> None:
    """The model stays inside the replica: rooms' embeddings travel in the request, the
    replica conditions and denoises, and two rooms' streams come back as the same model
    makes them here (window by window, the overlap crossfaded)."""
    pytest.importorskip("torch", reason="the diffusion extra is not installed")
    from engine.generators import make_generator
    from engine.generators.diffusion.testing import random_embedding

    engine = EngineConfig(generator="diffusion", sample_rate=RATE, channels=1,
                          backend="ray", diffusion={"model": str(tiny_model_folder),
                                                    "window_s": 1.28, "overlap_s": 0.32,
                                                    "steps": 1},
                          ray=RayConfig(http_port=_free_port(), request_timeout_s=30.0,
                                        deadline_slack_s=0.0))
    replica = make_generator(engine)
    server = StandIn(engine.ray.http_port, replica)
    front = RayGenerator(engine, lambda kind, **fields: None, lambda room: None,
                         fallback=SineGenerator(sample_rate=RATE, channels=1))

    def diffusion_view(room: str, seed: int) -> ArtworkView:
        return ArtworkView(v=PROTOCOL_VERSION, room=room, seq=0, time=0.0, state="artwork",
                           artwork_id=f"art-{seed}", confidence=1.0, embedding=Array.from_numpy(
                               random_embedding(seed, replica.model.spec.embedding_dim)[0]))

    try:
        views = [diffusion_view("room-0", 1), diffusion_view("room-1", 2)]
        conditions = [front.prepare(v) for v in views]
        states = [front.start(c, 7, 0, None) for c in conditions]
        remote: list[list[np.ndarray]] = [[], []]
        for _ in range(3):
            results = front.generate_batch([(st, c, FRAMES) for st, c in
                                            zip(states, conditions, strict=True)])
            states = [state for _, state in results]
            for parts, (generated, _) in zip(remote, results, strict=True):
                parts.append(generated.audio)
    finally:
        front.close()
        server.stop()
    assert front.local_chunks == 0 and front.state == HEALTHY
    local = make_generator(engine)
    for view, parts in zip(views, remote, strict=True):
        condition = local.prepare(view)
        state = local.start(condition, 7, 0, None)
        here = []
        for _ in range(3):
            generated, state = local.generate(state, condition, FRAMES)
            here.append(generated.audio)
        np.testing.assert_allclose(np.concatenate(parts), np.concatenate(here), atol=1e-5)
    assert not np.allclose(np.concatenate(remote[0]), np.concatenate(remote[1]))


# -- a real local Ray cluster ----------------------------------------------------------

REPLICA_TITLE = "ServeReplica:art2mus:generator"


def _replica_pids() -> set[int]:
    """Ray names a replica's worker process after its deployment."""
    pids = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if REPLICA_TITLE.encode() in cmdline:
            pids.add(int(entry.name))
    return pids


def _wait(condition: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _ray_env() -> dict[str, str]:
    """Loopback only, so no auth token: every node and client must agree on that."""
    return {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def _start_cluster(ray_bin: Path, port: int) -> list[str]:
    """``ray start`` a head and one worker node on loopback, one CPU each; their outputs."""
    common = ["--num-cpus", "1", "--disable-usage-stats"]
    env = _ray_env()
    outputs = []
    for args in (["--head", "--port", str(port), "--node-ip-address", "127.0.0.1",
                  "--include-dashboard", "false"],
                 ["--address", f"127.0.0.1:{port}", "--node-ip-address", "127.0.0.1"]):
        done = subprocess.run([str(ray_bin), "start", *args, *common], capture_output=True,
                              text=True, timeout=180, env=env)
        outputs.append(done.stdout[-1500:] + done.stderr[-1500:])
        if done.returncode != 0:
            subprocess.run([str(ray_bin), "stop", "--force"], capture_output=True, timeout=120,
                           env=env)
            raise AssertionError(f"ray start {args[0]} failed: {outputs[-1]}")
    return outputs


def _raylet_of(pid: int) -> int:
    """The raylet a Ray worker process hangs under (its nearest ancestor named raylet)."""
    while pid > 1:
        stat = Path(f"/proc/{pid}/stat").read_text()
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        if name == "raylet":
            return pid
        pid = int(stat[stat.rindex(")") + 2:].split()[1])
    return 0


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                    reason="Ray Serve is not installed (pip install 'art2mus[ray]')")
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds replicas in /proc")
def test_rooms_play_through_a_replica_killed_and_ray_stopped(tmp_path: Path,
                                                             request: pytest.FixtureRequest
                                                             ) -> None:
    from installation.config import config_from_dict, freeze_config, load_config
    from installation.loadgen import (
        EngineProcess,
        LoadGenerator,
        LoadSpec,
        bench_config,
        make_artworks,
    )
    from installation.roles import events_path

    root = Path(__file__).resolve().parents[1]
    data = tomllib.loads((root / "configs" / "demo.toml").read_text(encoding="utf-8"))
    port = _free_port()
    # A cluster of a head and one worker node, each its own raylet with one CPU, so the two
    # one-CPU replicas land one on each: the two-machine layout, on loopback.
    ray_bin = Path(sys.executable).with_name("ray")
    gcs = _free_port()
    cluster = _start_cluster(ray_bin, gcs)
    request.addfinalizer(lambda: subprocess.run([str(ray_bin), "stop", "--force"],
                                                capture_output=True, timeout=120,
                                                env=_ray_env()))
    # A lead of 3 s: room for a retry after the kill on a busy 2-core machine. With a token,
    # as beyond loopback: the front's requests carry it through Serve's proxy.
    token_file = tmp_path / "ray.token"
    token_file.write_text("ray-serve-token-0123456789\n", encoding="utf-8")
    data["engine"].update(
        sample_rate=RATE, channels=1, backend="ray", lead_s=3.0,
        ray={"address": f"127.0.0.1:{gcs}", "http_port": port, "replicas": 2,
             "min_replicas": 2, "max_replicas": 2, "num_cpus_per_replica": 1.0,
             "request_timeout_s": 2.0, "token_file": str(token_file)})
    base = config_from_dict(data, source="test")
    config = bench_config(base, 4, tmp_path)
    frozen = freeze_config(config, tmp_path / "serve.json")
    assert load_config(frozen).engine.backend == "ray"
    assert not _replica_pids(), "a Serve replica of another run is still alive"
    serve_log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen([sys.executable, "-m", "installation", "serve", "--config",
                              str(frozen)], stdout=serve_log, stderr=subprocess.STDOUT, cwd=root,
                             env=_ray_env())
    engine = EngineProcess(config, tmp_path)
    loadgen = None
    try:
        _wait(lambda: b'"serving"' in (tmp_path / "serve.log").read_bytes()
              or serve.poll() is not None, 240.0, "art2mus serve")
        assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
        replicas = _replica_pids()
        assert len(replicas) == 2
        # one replica on each node: a replica's raylet (its parent's parent) differs
        assert len({_raylet_of(pid) for pid in replicas}) == 2, cluster
        # a client without the token is refused by the replica, before its body is read
        for method in ("GET", "POST"):
            intruder = http.client.HTTPConnection("127.0.0.1", port, timeout=60.0)
            try:
                intruder.request(method, ROUTE, body=b"\x93not a request" * (method == "POST"))
                answer = intruder.getresponse()
                assert answer.status == 401, (method, answer.status, answer.read()[:200])
                assert b"engine.ray.token_file" in answer.read()
            finally:
                intruder.close()
        engine.start()
        spec = LoadSpec(rooms=4, seconds=40.0, warmup_s=4.0, change_every_s=6.0, settle_s=2.0,
                        first_chunk_timeout_s=60.0)
        loadgen = LoadGenerator(config, spec, make_artworks(spec.artworks, 0))
        rooms = loadgen.rooms
        results: list[Any] = []
        runner = threading.Thread(target=lambda: results.append(loadgen.run()), daemon=True)
        runner.start()
        _wait(lambda: all(r.measuring for r in rooms), 120.0, "every room playing")
        time.sleep(4.0)  # mid-run: the rooms keep asking while the replica dies
        killed = sorted(replicas)[0]
        silent = [room.timeline.silent_frames for room in rooms]
        chunks = [room.chunks for room in rooms]
        os.kill(killed, signal.SIGKILL)
        _wait(lambda: len(_replica_pids() - {killed}) == 2, 120.0, "the replica replaced")
        # from the kill on, every room got chunks and none ran past audio_out's hold into
        # silence (the hold covers a late chunk)
        _wait(lambda: all(r.chunks > n + 2 for r, n in zip(rooms, chunks, strict=True)), 30.0,
              "chunks for every room after the kill")
        assert [r.timeline.silent_frames - before
                for r, before in zip(rooms, silent, strict=True)] == [0] * 4
        # Ray stopped mid-run: the engine makes every room here, and says so
        chunks = [room.chunks for room in rooms]
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60.0)
        events = events_path(config, "engine", None)

        def degraded() -> list[dict[str, Any]]:
            return [record for line in events.read_text(encoding="utf-8").splitlines()
                    if (record := json.loads(line)).get("kind") == "backend_degraded"]

        _wait(lambda: bool(degraded()), 60.0, "the engine to fall back")
        assert degraded()[0]["state"] == "degraded: ray unreachable"
        # Every room keeps getting chunks made here. (Rooms used to freeze here: the
        # procedural generator's low-pass opened past 16 kHz Nyquist made NaN chunks, which
        # audio_out refuses, and the engine then waited for a playhead that waited for it.)
        _wait(lambda: all(r.chunks > n + 2 for r, n in zip(rooms, chunks, strict=True)), 30.0,
              "chunks for every room after Ray stopped")
        assert loadgen.chunks.dropped.total == 0  # nothing refused on the way (NaN, size)
        loadgen.finish()  # all seen: the rest of the 40 s would only wait
        runner.join(timeout=120.0)
        [trial] = results
        assert trial.rooms_without_chunks == 0
        # the underflow count, which a busy machine raises with or without Ray, is reported
        print("trial:", json.dumps({k: v for k, v in trial.to_dict().items()
                                    if k != "per_room"}))
    finally:
        if loadgen is not None:
            loadgen.close()
        engine.stop()
        if serve.poll() is None:
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(timeout=60.0)
            except subprocess.TimeoutExpired:
                serve.kill()
        serve_log.close()
