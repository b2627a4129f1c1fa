"""A replica's defences against bad or hostile chunk requests, at the :class:`ReplicaCore`
and :func:`decode_request` level (no Ray cluster): one bad request is refused alone, a
failed batch keeps the other rooms' streams, the condition cache follows what the view
says, bodies and embeddings have a size limit, and one client cannot flood the others out.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import numpy as np
import pytest

from engine import ray_serve
from engine.config import EngineConfig
from engine.generators import RoomControls
from engine.generators.sine import SineGenerator
from engine.ray_serve import (
    MAX_EMBEDDING_VALUES,
    STREAMS_PER_ROOM,
    ChunkReply,
    ChunkRequest,
    ReplicaCore,
    RequestLimits,
    RequestRefused,
    RequestTooLarge,
    check_content_length,
    decode_request,
    read_capped,
)
from ground.errors import InputError
from ground.protocol import DEFAULT_MAX_MESSAGE_BYTES, ArtworkView

RATE = 16000
FRAMES = 1600
WIDTH = 4


class EmbeddingSine(SineGenerator):
    """A sine that, like the diffusion generator, needs an embedding of its own width."""

    embedding_width = WIDTH

    def prepare(self, view: ArtworkView) -> float:
        if view.state == "artwork":
            if view.embedding is None:
                raise InputError(f"ArtworkView of room {view.room!r} has no embedding")
            if view.embedding.to_numpy().shape != (WIDTH,):
                raise InputError(f"ArtworkView.embedding of room {view.room!r}: expected "
                                 f"({WIDTH},)")
        return super().prepare(view)


class Failing(SineGenerator):
    """A sine whose generator call fails while ``fail`` is set (a batch that fails)."""

    fail = False

    def generate(self, state: Any, condition: Any, frames: int) -> Any:
        if self.fail:
            raise RuntimeError("generator failed")
        return super().generate(state, condition, frames)


def _view(room: str, artwork: str = "a", brightness: float = 0.5,
          embedding: np.ndarray | None = None) -> ArtworkView:
    return ArtworkView.of_artwork(room, 0, 0.0, artwork, 1.0, "descriptor", embedding,
                                  {"brightness": brightness})


def _request(room: str, stream: str, position: int = 0, due: float = 1e9,
             view: ArtworkView | None = None, frames: int = FRAMES) -> ChunkRequest:
    return ChunkRequest(room=room, stream=stream, previous=None, seed=1, start_sample=0,
                        position=position, frames=frames, view=view or _view(room),
                        controls=RoomControls(), due=due)


def _unit(width: int = WIDTH) -> np.ndarray:
    return np.full(width, width ** -0.5, np.float32)


# -- 1. one bad request is refused alone ---------------------------------------------


def test_a_view_the_generator_refuses_is_refused_alone_and_the_batch_served() -> None:
    core = ReplicaCore(EmbeddingSine(sample_rate=RATE, channels=1))
    good = _request("good", "g", view=_view("good", embedding=_unit()))
    bare = ArtworkView(v=good.view.v, room="bad", seq=0, time=0.0, state="artwork",
                       artwork_id="x")
    bad = _request("bad", "b", view=bare)
    good_reply, refused = core.serve([(good, 0.0), (bad, 0.0)])
    assert isinstance(good_reply, ChunkReply) and good_reply.batch == 1
    assert good_reply.generated(FRAMES).audio.shape == (FRAMES, 1)
    assert isinstance(refused, RequestRefused) and refused.status == 400
    assert "chunk request: view" in str(refused) and "embedding" in str(refused)
    assert core.refused == 1 and core.served == 1


def test_an_artwork_without_an_embedding_or_of_the_wrong_width_is_refused_on_decode() -> None:
    core = ReplicaCore(EmbeddingSine(sample_rate=RATE, channels=1))
    assert core.limits.embedding_width == WIDTH  # the generator says its width
    bare = ArtworkView(v=_view("r").v, room="r", seq=0, time=0.0, state="artwork",
                       artwork_id="x")
    with pytest.raises(RequestRefused, match=r"view.embedding: expected 4 values"):
        decode_request(msgspec.msgpack.encode(_request("r", "s", view=bare)), core.limits)
    wide = _request("r", "s", view=_view("r", embedding=np.ones(3, np.float32)))
    with pytest.raises(RequestRefused, match=r"view.embedding: expected shape \(4,\), got \(3,\)"):
        decode_request(msgspec.msgpack.encode(wide), core.limits)
    fine = _request("r", "s", view=_view("r", embedding=_unit()))
    assert decode_request(msgspec.msgpack.encode(fine), core.limits) == fine


# -- 2. a failed batch keeps the good rooms' streams ---------------------------------


def test_a_failed_batch_keeps_the_streams_it_was_to_continue() -> None:
    generator = Failing(sample_rate=RATE, channels=1)
    core = ReplicaCore(generator)
    core.serve([(_request("good", "g"), 0.0)])
    generator.fail = True
    with pytest.raises(RuntimeError, match="generator failed"):
        core.serve([(_request("good", "g", position=FRAMES), 0.0)])
    generator.fail = False
    [again] = core.serve([(_request("good", "g", position=FRAMES), 0.0)])
    assert isinstance(again, ChunkReply)
    assert not again.reopened and core.reopened == 0


# -- 3. the condition follows what the view says, not only its artwork id -------------


def test_a_condition_cached_for_one_view_is_not_served_for_another_of_the_same_id() -> None:
    core = ReplicaCore(SineGenerator(sample_rate=RATE, channels=1))
    # a client names the real room's artwork with its own description first
    poisoned = core.condition(_view("attacker", brightness=1.0), RoomControls())
    real = core.condition(_view("room", brightness=0.5), RoomControls())
    assert real == pytest.approx(440.0) and poisoned == pytest.approx(880.0)
    # and with its own embedding
    core = ReplicaCore(EmbeddingSine(sample_rate=RATE, channels=1))
    first = core.condition(_view("attacker", embedding=_unit() * 2), RoomControls())
    key_count = len(core._conditions)
    core.condition(_view("room", embedding=_unit()), RoomControls())
    assert len(core._conditions) == key_count + 1 and first is not None
    # the same view (another room) is still a cache hit
    core.condition(_view("room-2", embedding=_unit()), RoomControls())
    assert len(core._conditions) == key_count + 1


# -- 4. size limits ------------------------------------------------------------------


def test_a_body_or_embedding_over_the_limit_is_refused_413_naming_the_limit() -> None:
    limits = RequestLimits()
    assert limits.max_body_bytes <= DEFAULT_MAX_MESSAGE_BYTES
    with pytest.raises(RequestTooLarge, match=f"at most {limits.max_body_bytes} bytes") as big:
        decode_request(b"\x00" * (limits.max_body_bytes + 1))
    assert big.value.status == 413
    wide = _request("r", "s", view=_view("r", embedding=_unit(MAX_EMBEDDING_VALUES + 1)))
    with pytest.raises(RequestTooLarge,
                       match=f"view.embedding: expected at most {MAX_EMBEDDING_VALUES} values"):
        decode_request(msgspec.msgpack.encode(wide))
    # a width the generator knows makes the cap its own
    narrow = RequestLimits(embedding_width=1024)
    assert narrow.max_body_bytes < 128 * 1024
    with pytest.raises(RequestTooLarge, match=f"at most {narrow.max_body_bytes} bytes, "
                                              f"got {256 * 2 ** 20}") as announced:
        check_content_length(str(256 * 2 ** 20), narrow)
    assert announced.value.status == 413
    with pytest.raises(RequestRefused, match="Content-Length: expected a byte count"):
        check_content_length("many", narrow)
    check_content_length(None, narrow)
    check_content_length("100", narrow)


def test_a_body_sent_without_a_length_is_read_no_further_than_the_limit() -> None:
    limits = RequestLimits(embedding_width=16)
    read: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        while True:
            read.append(1)
            yield b"\x00" * 4096

    with pytest.raises(RequestTooLarge, match=f"at most {limits.max_body_bytes} bytes"):
        asyncio.run(read_capped(endless(), limits))
    assert len(read) * 4096 <= limits.max_body_bytes + 4096

    async def some() -> AsyncIterator[bytes]:
        yield b"ab"
        yield b"cd"

    assert asyncio.run(read_capped(some(), limits)) == b"abcd"


# -- 5. frames, due and streams: no client floods the others out ---------------------


def test_frames_are_bounded_by_the_deployments_chunk_and_longest_crossfade() -> None:
    config = EngineConfig(generator="sine", chunk_s=0.5, sample_rate=RATE)
    limits = RequestLimits.of(config, SineGenerator(sample_rate=RATE, channels=1))
    assert limits.max_frames == RATE // 2 + 10 * RATE  # a chunk + a 10 s transition
    assert limits.embedding_width is None and limits.due_ahead_s == pytest.approx(2.0)
    ok = _request("r", "s", frames=limits.max_frames)
    assert decode_request(msgspec.msgpack.encode(ok), limits) == ok
    over = _request("r", "s", frames=limits.max_frames + 1)
    with pytest.raises(RequestRefused, match=f"frames: expected 1..{limits.max_frames}, got"):
        decode_request(msgspec.msgpack.encode(over), limits)


def test_a_due_time_from_the_client_is_believed_only_near_the_replicas_clock() -> None:
    order: list[str] = []

    class Recording(SineGenerator):
        def start(self, condition: Any, seed: int, start_sample: int, previous: Any) -> Any:
            order.append(current[0])
            return super().start(condition, seed, start_sample, previous)

    current = [""]
    core = ReplicaCore(Recording(sample_rate=RATE, channels=1), clock=lambda: 100.0)
    late = _request("late", "l", due=95.0)  # really overdue, arrived first
    jumper = _request("jumper", "j", due=0.0)  # claims to be overdue since 1970
    original_state = core._state

    def state(request: ChunkRequest, condition: Any) -> Any:
        current[0] = request.room
        return original_state(request, condition)

    core._state = state  # type: ignore[method-assign]
    replies = core.serve([(late, 99.0), (jumper, 99.5)])
    assert order == ["late", "jumper"]  # both taken as due 1 s ago: first come, first served
    assert all(isinstance(r, ChunkReply) and r.missed for r in replies)


def test_one_room_flooding_new_streams_evicts_only_its_own(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray_serve, "STREAMS_KEPT", 8)
    core = ReplicaCore(SineGenerator(sample_rate=RATE, channels=1))
    core.serve([(_request("good", "g"), 0.0)])
    for i in range(0, 40, 4):
        core.serve([(_request("flood", f"f{j}", frames=1), 0.0) for j in range(i, i + 4)])
    assert core.info()["streams"] == 1 + STREAMS_PER_ROOM
    [again] = core.serve([(_request("good", "g", position=FRAMES), 0.0)])
    assert isinstance(again, ChunkReply) and not again.reopened
