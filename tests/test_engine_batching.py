"""Many rooms: rooms due together are generated in one bucketed batch, each with its own state.

The diffusion checks use a tiny random-weight model written and loaded back
through the same code a user's model folder goes through.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from engine.config import EngineConfig
from engine.generators import Generated, Generator, can_batch, generate_many, make_generator
from engine.generators.diffusion.config import DiffusionConfig
from engine.generators.diffusion.loudness import MAX_GAIN_DB
from engine.generators.sine import SineGenerator
from engine.server import EngineServer
from engine.streaming import RoomSession, generate_due
from ground.errors import ConfigError
from ground.protocol import PROTOCOL_VERSION, Array, ArtworkView, AudioChunk, PlaybackClock
from ground.transport import decode, make_socket, send
from installation.config import config_from_dict
from installation.roles import engine_role_config

RATE = 16000
WINDOW = dict(window_s=1.28, overlap_s=0.32, steps=2)

#: Batched and single calls agree to float32 rounding; the diffusion generator's
#: loudness follower then scales both, the rounding with them, by up to MAX_GAIN_DB.
LEVELLED_ATOL = 1e-6 * 10 ** (MAX_GAIN_DB / 20)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _view(room: str, artwork: str, seed: int, seq: int = 0) -> ArtworkView:
    from engine.generators.diffusion.testing import random_embedding

    return ArtworkView(v=PROTOCOL_VERSION, room=room, seq=seq, time=0.0, state="artwork",
                       artwork_id=artwork, confidence=1.0,
                       features={"brightness": 0.2 + 0.2 * seed},
                       embedding=Array.from_numpy(random_embedding(seed)[0]))


def _clock(room: str, playhead: int, rate: int = RATE) -> PlaybackClock:
    return PlaybackClock(v=PROTOCOL_VERSION, room=room, sample_rate=rate, playhead=playhead,
                         buffered_until=playhead, wall_time=0.0, state="playing")


# -- configuration -----------------------------------------------------------


def test_batch_settings_are_validated_naming_the_field(tmp_path: Path) -> None:
    assert DiffusionConfig().batch_buckets == (1, 2, 4, 8, 16)
    assert EngineConfig().batch_window_s == 0.25
    for bad in ([4, 2], [1, 1, 2], [0, 4], []):
        with pytest.raises(ConfigError) as error:
            config_from_dict({"engine": {"diffusion": {"batch_buckets": bad}},
                              "rooms": [{"id": "a"}]}, "bad.toml")
        assert "engine.diffusion.batch_buckets" in str(error.value)
        assert "strictly increasing" in str(error.value) and str(bad) in str(error.value)
    with pytest.raises(ConfigError) as error:
        config_from_dict({"engine": {"batch_window_s": -0.1}, "rooms": [{"id": "a"}]},
                         "bad.toml")
    assert "`engine.batch_window_s`" in str(error.value) and "-0.1" in str(error.value)


def test_generators_that_cannot_batch_are_served_one_by_one() -> None:
    sine = SineGenerator(sample_rate=RATE, channels=1)
    assert not can_batch(sine)
    states = [sine.start(0.0, 0, 0, None), sine.start(0.0, 0, 0, None)]
    results = generate_many(sine, [(states[0], 300.0, 100), (states[1], 600.0, 50)])
    assert [r[0].audio.shape for r in results] == [(100, 1), (50, 1)]
    assert [r[1].position for r in results] == [100, 50]


# -- sine and procedural rooms through the engine server -----------------------


def _server_config(generator: str, rooms: int, port: int, **engine: Any) -> Any:
    return config_from_dict({
        "network": {name: f"inproc://batching-{port}-{name}"
                    for name in ("views", "chunks", "clock", "control")},
        "engine": {"generator": generator, "chunk_s": 0.25, "lead_s": 0.75,
                   "batch_window_s": 0.25, "transition_crossfade_s": 0.2, **engine},
        "rooms": [{"id": f"room{i}", "seed": i} for i in range(rooms)],
    })


def _serve(server: EngineServer, clock: FakeClock, rooms: list[str], turns: int,
           context: zmq.Context) -> dict[str, list[AudioChunk]]:
    """Drive the server's loop by hand on a fake clock; every chunk its chunk socket sends."""
    net = server.config.network
    listener = make_socket(context, zmq.SUB, net.chunks, bind=False, subscribe=rooms)
    clocks = make_socket(context, zmq.PUSH, net.clock, bind=False)
    rate = server.generator.sample_rate
    for room in rooms:
        send(clocks, _clock(room, 0, rate))
    sessions = [server.sessions[room] for room in rooms]
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and (
            server.subscribed != set(rooms)
            or any(s.playhead_estimate() is None for s in sessions)):
        server._receive()  # subscriptions and clocks arrive
        time.sleep(0.01)
    assert server.subscribed == set(rooms)
    received: dict[str, list[AudioChunk]] = {room: [] for room in rooms}
    try:
        for turn in range(turns):
            server._receive()
            server._generate_due()
            while listener.poll(50):
                chunk = decode(listener.recv_multipart())
                assert isinstance(chunk, AudioChunk)
                received[chunk.room].append(chunk)
            clock.now += 0.05
            if turn == 0:
                assert all(received.values()), "every room starts on the first turn"
    finally:
        listener.close()
        clocks.close()
    return received


def _assert_continuous(chunks: list[AudioChunk]) -> None:
    assert [c.seq for c in chunks] == list(range(len(chunks)))
    assert chunks[0].reason == "start"
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert after.reason == "continue"
        assert after.start_sample == before.start_sample + before.audio.shape[0]


@pytest.mark.parametrize("kind", ["sine", "procedural"])
def test_rooms_on_generators_that_cannot_batch_still_stream(kind: str) -> None:
    config = _server_config(kind, rooms=3, port={"sine": 1, "procedural": 2}[kind])
    assert config.engine.batch_window_s > 0
    context = zmq.Context()
    clock = FakeClock()
    server = EngineServer(engine_role_config(config), lambda *a, **k: None, context=context,
                          clock=clock)
    try:
        rooms = list(server.sessions)
        received = _serve(server, clock, rooms, turns=30, context=context)
    finally:
        server.close()
        context.term()
    for room in rooms:
        chunks = received[room]
        assert len(chunks) >= 5, room
        _assert_continuous(chunks)


# -- the diffusion generator: bucketed batches ---------------------------------

torch = pytest.importorskip("torch", reason="needs the diffusion extra, which make test installs")
pytest.importorskip("diffusers", reason="needs the diffusion extra, which make test installs")

from engine.generators.diffusion.batching import batch_groups  # noqa: E402
from engine.generators.diffusion.generator import DiffusionGenerator  # noqa: E402
from engine.generators.diffusion.model import load_model  # noqa: E402
from engine.generators.diffusion.testing import NUMPY_COPY_WARNING, random_embedding  # noqa: E402

diffusion = pytest.mark.filterwarnings(NUMPY_COPY_WARNING)


@pytest.fixture(scope="module")
def student(tiny_student_folder: Path) -> Any:
    return load_model(tiny_student_folder)


class RecordingBackend:
    """The generator's backend, recording the batch size of every UNet call."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.unet_batches: list[int] = []

    def unet(self, sample: Any, *args: Any) -> Any:
        self.unet_batches.append(int(sample.shape[0]))
        return self.inner.unet(sample, *args)

    def decode(self, latents: Any) -> Any:
        return self.inner.decode(latents)


def make(model: Any, buckets: tuple[int, ...] = (1, 2, 4, 8, 16), **overrides: Any
         ) -> DiffusionGenerator:
    config = DiffusionConfig(model=str(model.folder), batch_buckets=buckets,
                             **{**WINDOW, **overrides})
    generator = DiffusionGenerator(model, config, RATE, 1)
    generator.backend = RecordingBackend(generator.backend)
    return generator


def _unet_batches(generator: DiffusionGenerator) -> list[int]:
    backend = generator.backend
    assert isinstance(backend, RecordingBackend)
    batches, backend.unet_batches = backend.unet_batches, []
    return batches


def test_batch_groups_pick_the_smallest_bucket_and_split_beyond_the_largest() -> None:
    buckets = (1, 2, 4, 8, 16)
    assert batch_groups(0, buckets) == []
    assert batch_groups(1, buckets) == [(1, 1)]
    assert batch_groups(3, buckets) == [(3, 4)]
    assert batch_groups(9, buckets) == [(9, 16)]
    assert batch_groups(20, buckets) == [(16, 16), (4, 4)]
    assert batch_groups(35, buckets) == [(16, 16), (16, 16), (3, 4)]
    assert batch_groups(5, (2, 4)) == [(4, 4), (1, 2)]


@diffusion
@pytest.mark.parametrize("which", ["tiny_model", "student"])
def test_padding_changes_no_rooms_audio(which: str, request: pytest.FixtureRequest) -> None:
    """A room's chunk is the same alone (batch 1) or with two others in a padded batch of 4,
    over a starting window and a continuing one. The student's sampler draws noise at every
    step: padding rows must not draw from a room's generator."""
    generator = make(request.getfixturevalue(which))
    conditions = [generator.condition_from_embedding(f"art{i}", random_embedding(i))
                  for i in range(3)]
    frames = generator.plan.hop_samples + 1000  # two windows: one starts, one continues

    def alone(i: int) -> np.ndarray:
        state = generator.start(conditions[i], 10 + i, 0, None)
        [(out, _)] = generator.generate_batch([(state, conditions[i], frames)])
        return out.audio

    singles = [alone(0), alone(2)]
    assert set(_unet_batches(generator)) == {1}
    together = generator.generate_batch([(generator.start(c, 10 + i, 0, None), c, frames)
                                         for i, c in enumerate(conditions)])
    assert set(_unet_batches(generator)) == {4}  # 3 rooms padded to the bucket of 4
    for single, (out, state) in zip(singles, [together[0], together[2]], strict=True):
        np.testing.assert_allclose(out.audio, single, rtol=0, atol=LEVELLED_ATOL)
        assert state.windows == 2
    assert not np.allclose(together[0][0].audio, together[1][0].audio, atol=1e-3)


@diffusion
def test_more_rooms_than_the_largest_bucket_run_in_several_batches(tiny_model: Any) -> None:
    generator = make(tiny_model, buckets=(1, 2))
    conditions = [generator.condition_from_embedding(f"art{i}", random_embedding(i))
                  for i in range(3)]
    state = generator.start(conditions[2], 7, 0, None)
    [(single, _)] = generator.generate_batch([(state, conditions[2], 4000)])
    _unet_batches(generator)
    results = generator.generate_batch([(generator.start(c, 5 + i, 0, None), c, 4000)
                                        for i, c in enumerate(conditions)])
    steps = WINDOW["steps"]
    assert _unet_batches(generator) == [2] * steps + [1] * steps  # a full bucket, then the rest
    np.testing.assert_allclose(results[2][0].audio, single.audio, rtol=0, atol=LEVELLED_ATOL)


@diffusion
def test_windows_made_ahead_change_no_rooms_audio(tiny_model: Any) -> None:
    """A window made ahead of need, in another room's padding row or on an idle turn, is
    the window the stream would have made later: the room hears the same. Only continuing
    streams with less than a hop buffered take one, and only where a batch has room."""
    generator = make(tiny_model, buckets=(2, 4), ahead_batch=1)
    a_art, b_art = (generator.condition_from_embedding(f"art{i}", random_embedding(i))
                    for i in range(2))
    frames, hop = 1000, generator.plan.hop_samples

    def serve(state: Any, condition: Any, chunks: int) -> tuple[np.ndarray, Any]:
        out = []
        for _ in range(chunks):
            [(made, state)] = generator.generate_batch([(state, condition, frames)])
            out.append(made.audio)
        return np.concatenate(out), state

    chunks = 3 * hop // frames
    alone, _ = serve(generator.start(a_art, 10, 0, None), a_art, chunks)

    a = generator.start(a_art, 10, 0, None)
    assert generator.ahead_frames(a) is None  # a starting stream: its first window is due
    head, a = serve(a, a_art, 1)
    assert generator.ahead_frames(a) == len(a.buffer) < hop
    b = generator.start(b_art, 20, 0, None)
    _, b = serve(b, b_art, 1)
    while not generator.needs_model(b, frames):
        _, b = serve(b, b_art, 1)
    # b needs a continuing window: a batch of 2 (bucket 2) with one row free, a takes it
    results, filled = generator.generate_batch_filled([(b, b_art, frames)], [(a, a_art)])
    assert len(results) == 1 and [k for k, _ in filled] == [0]
    ahead = filled[0][1]
    assert len(ahead.buffer) == len(a.buffer) + hop and generator.ahead_frames(ahead) is None
    rest, _ = serve(ahead, a_art, chunks - 1)
    np.testing.assert_allclose(np.concatenate([head, rest]), alone, rtol=0, atol=LEVELLED_ATOL)
    # two rooms needing windows fill a bucket of 2: no row is free, nothing is made ahead
    c = generator.start(a_art, 30, 0, None)
    _, c = serve(c, a_art, 1)
    _, filled = generator.generate_batch_filled([(b, b_art, frames), (b, b_art, frames)],
                                                [(c, a_art)])
    assert filled == []
    # on an idle turn: at most ahead_batch of them, the eligible ones in the order given
    made = generator.make_ahead([(generator.start(a_art, 40, 0, None), a_art), (a, a_art),
                                 (c, a_art)])
    assert [k for k, _ in made] == [1]
    single, _ = serve(made[0][1], a_art, chunks - 1)
    np.testing.assert_allclose(np.concatenate([head, single]), alone, rtol=0, atol=LEVELLED_ATOL)


# -- the diffusion generator behind room sessions --------------------------------


class CountingBatches:
    """The diffusion generator, counting the calls the streaming loop makes."""

    def __init__(self, inner: DiffusionGenerator) -> None:
        self.inner = inner
        self.sample_rate = inner.sample_rate
        self.channels = inner.channels
        self.batches: list[list[int]] = []  # the request sizes (frames) of each call
        self.single_calls = 0

    def prepare(self, view: ArtworkView) -> Any:
        return self.inner.prepare(view)

    def describe(self, condition: Any) -> dict[str, Any]:
        return self.inner.describe(condition)

    def start(self, condition: Any, seed: int, start_sample: int, previous: Any) -> Any:
        return self.inner.start(condition, seed, start_sample, previous)

    def apply_controls(self, view: ArtworkView, condition: Any, controls: Any) -> Any:
        return self.inner.apply_controls(view, condition, controls)

    def generate(self, state: Any, condition: Any, frames: int) -> tuple[Generated, Any]:
        self.single_calls += 1
        return self.inner.generate(state, condition, frames)

    def generate_batch(self, requests: Any) -> list[tuple[Generated, Any]]:
        self.batches.append([frames for _, _, frames in requests])
        return self.inner.generate_batch(requests)


ROOMS = {"a": ("art-a", 1), "b": ("art-b", 2), "c": ("art-c", 3)}


def _run_rooms(generator: Generator, rooms: list[str], steps: int, window_s: float = 0.25,
               change: tuple[int, str] | None = None
               ) -> tuple[dict[str, list[AudioChunk]], int]:
    """Rooms on one fake clock: a and b report a clock at step 0, c at step 1 (out of phase);
    every 0.1 s the engine generates what is due. ``change``: (step, room) whose artwork
    changes then. The chunks of each room, and how many steps generated anything."""
    config = EngineConfig(sample_rate=RATE, channels=1, chunk_s=0.5,
                          lead_s=1.0, transition_margin_s=0.3, transition_crossfade_s=0.25,
                          batch_window_s=window_s)
    clock = FakeClock()
    sessions = {room: RoomSession(room, ROOMS[room][1], generator, config, clock=clock)
                for room in rooms}
    for room, session in sessions.items():
        session.on_view(_view(room, *ROOMS[room]))
    chunks: dict[str, list[AudioChunk]] = {room: [] for room in rooms}
    rounds = 0
    for step in range(steps):
        for room, session in sessions.items():
            if step == (1 if room == "c" else 0):
                session.on_clock(_clock(room, 0))
        if change is not None and step == change[0] and change[1] in sessions:
            sessions[change[1]].on_view(_view(change[1], "art-z", 9, seq=1))
        made = list(generate_due(sessions.values(), generator, window_s))
        for session, chunk in made:
            chunks[session.room].append(chunk)
        rounds += bool(made)
        clock.now += 0.1
    return chunks, rounds


def _audio(chunks: list[AudioChunk]) -> np.ndarray:
    return np.concatenate([c.audio.to_numpy() for c in chunks])


@diffusion
def test_rooms_due_together_share_a_call_each_with_its_own_stream(
        tiny_model: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # where a start lands follows the engine's recent start calls (other rooms' too);
    # here only what batching does to a room's stream is compared, from the same places
    monkeypatch.setattr(RoomSession, "_expected_start", lambda self, start_s=None: 0)
    counting = CountingBatches(make(tiny_model))
    together, rounds = _run_rooms(counting, ["a", "b", "c"], steps=16, change=(11, "b"))
    assert counting.single_calls == 0
    sizes = [len(call) for call in counting.batches]
    assert sum(sizes) == sum(len(chunks) for chunks in together.values())
    # Starts and transitions are served in a call of their own, before the continuations
    # due with them (so they go out first): a and b start together; c's start, then a and
    # b pulled in by the window; c alone once, then all three fall due together; b's
    # transition alone, then a's and c's continuations. (The last round's split varies
    # from run to run; it is not asserted.)
    assert rounds == 6 and sizes[:7] == [2, 1, 2, 1, 3, 1, 2]
    reasons = [c.reason for c in together["b"]]
    assert reasons.count("transition") == 1
    for room in ("a", "c"):
        _assert_continuous(together[room])
    b_before = together["b"][:reasons.index("transition")]
    _assert_continuous(b_before)

    # Each room hears exactly what it hears when it is the only room.
    for room in ("a", "b", "c"):
        alone = _run_rooms(CountingBatches(make(tiny_model)), [room], steps=14)[0][room]
        mine = together[room] if room != "b" else b_before
        assert [c.start_sample for c in mine[:len(alone)]] == \
            [c.start_sample for c in alone[:len(mine)]]
        length = min(len(_audio(alone)), len(_audio(mine)))
        assert length >= 1.5 * RATE
        np.testing.assert_allclose(_audio(mine)[:length], _audio(alone)[:length],
                                   rtol=0, atol=LEVELLED_ATOL)
    assert not np.allclose(_audio(together["a"])[:RATE], _audio(together["c"])[:RATE],
                           atol=1e-3)


@diffusion
def test_window_zero_serves_rooms_one_by_one(tiny_model: Any) -> None:
    counting = CountingBatches(make(tiny_model))
    chunks, _ = _run_rooms(counting, ["a", "b"], steps=1, window_s=0.0)
    assert counting.batches == [] and counting.single_calls == 2
    assert [len(c) for c in chunks.values()] == [1, 1]


@diffusion  # the generator walks its schedule once at start (diffusers' numpy warning)
def test_make_generator_gives_the_diffusion_generator_batching(tiny_model_folder: Path) -> None:
    config = EngineConfig(generator="diffusion", sample_rate=RATE, channels=1,
                          diffusion=DiffusionConfig(model=str(tiny_model_folder), **WINDOW))
    assert can_batch(make_generator(config))


class WindowedSine(SineGenerator):
    """A batching sine that says every request needs model work (as a diffusion room does
    when its buffer runs dry) and takes at most two rooms' windows per call."""

    rooms_per_call = 2

    def __init__(self, costly: bool) -> None:
        super().__init__(sample_rate=RATE, channels=1)
        self.costly = costly
        self.calls: list[int] = []

    def needs_model(self, state: Any, frames: int) -> bool:
        return self.costly

    def generate_batch(self, requests: Any) -> list[tuple[Generated, Any]]:
        self.calls.append(len(requests))
        return [self.generate(state, condition, frames) for state, condition, frames in requests]


@pytest.mark.parametrize("costly", [False, True])
def test_rooms_needing_model_work_go_one_batch_per_turn(costly: bool) -> None:
    """Rooms served from what is buffered share one call; rooms that need a window go at
    most ``rooms_per_call`` a turn, most urgent first, the rest on the next turns, and
    every room's chunks still follow one another without a gap."""
    generator = WindowedSine(costly)
    config = EngineConfig(sample_rate=RATE, channels=1, chunk_s=0.5, lead_s=1.0,
                          transition_margin_s=0.3, batch_window_s=0.25)
    clock = FakeClock()
    rooms = [f"r{i}" for i in range(5)]
    sessions = [RoomSession(room, i, generator, config, clock=clock)
                for i, room in enumerate(rooms)]
    chunks: dict[str, list[AudioChunk]] = {room: [] for room in rooms}
    for session in sessions:
        session.on_view(_view(session.room, f"art-{session.room}", 1))
        session.on_clock(_clock(session.room, 0))
    for _ in range(30):
        for session, chunk in generate_due(sessions, generator, 0.25):
            chunks[session.room].append(chunk)
        clock.now += 0.1
    # the five starts: urgent, in a call of their own; where each needs a window,
    # rooms_per_call of them (a hundred rooms starting must not hold the others)
    assert generator.calls[0] == (2 if costly else 5)
    later = generator.calls[1:]
    assert max(later) == (2 if costly else 5) and later.count(5 if not costly else 2) >= 3
    for room in rooms:
        made = chunks[room]
        assert len(made) >= 4
        assert [c.reason for c in made[1:]] == ["continue"] * (len(made) - 1)
        for before, after in zip(made, made[1:], strict=False):
            assert after.start_sample == before.start_sample + before.audio.shape[0]


def test_starts_are_placed_after_the_time_a_call_of_that_many_took() -> None:
    """Where new material lands follows the engine's calls with as many starts or
    transitions (an engine starting sixteen rooms at once must not push every later
    single transition that far out), between the counts observed on either side."""
    from engine.streaming import StartTimes

    times = StartTimes()
    assert times.expect(1) is None
    times.observe(16, 2.0)
    assert times.expect(1) == 2.0 and times.expect(32) == 2.0  # the nearest count observed
    times.observe(1, 0.5)
    assert times.expect(1) == 0.5 and times.expect(6) == pytest.approx(1.0)  # linear between
    times.observe(1, 1.5)
    assert times.expect(1) == pytest.approx(0.8)  # a running mean, recent calls weighing more

    generator = WindowedSine(costly=True)
    config = EngineConfig(sample_rate=RATE, channels=1, chunk_s=0.5, lead_s=1.0,
                          transition_margin_s=0.3, batch_window_s=0.25)
    clock = FakeClock()
    session = RoomSession("r", 1, generator, config, clock=clock)
    session.on_view(_view("r", "art-a", 1))
    session.on_clock(_clock("r", 0))
    [(_, first)] = list(generate_due([session], generator, 0.25, times))
    assert first.reason == "start"
    assert first.start_sample == round(0.3 * RATE) + int(1.5 * 0.8 * RATE)
