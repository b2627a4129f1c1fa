"""The wire protocol: round trips, and any byte string is decoded or refused, never crashes."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ground.protocol import (
    PROTOCOL_VERSION,
    Array,
    ArtworkView,
    AudioChunk,
    Control,
    DropCounter,
    PlaybackClock,
    ProtocolError,
    decode,
    encode,
)


def _chunk(**overrides: object) -> AudioChunk:
    audio = np.random.default_rng(0).standard_normal((480, 2)).astype(np.float32)
    fields = dict(v=PROTOCOL_VERSION, room="r1", seq=3, start_sample=48000, sample_rate=48000,
                  audio=Array.from_numpy(audio), crossfade=0,
                  notes=Array.from_numpy(np.array([[0, 10, 60, 90, 0, 0]], np.int32)))
    fields.update(overrides)
    return AudioChunk(**fields)  # type: ignore[arg-type]


def test_every_message_type_round_trips() -> None:
    messages = [
        _chunk(),
        ArtworkView(v=1, room="r1", seq=1, time=1.5, state="artwork", artwork_id="art-001",
                    confidence=0.9, quad=[(0, 0), (1, 0), (1, 1), (0, 1)], encoder="descriptor-v1",
                    embedding=Array.from_numpy(np.arange(8, dtype=np.float32)),
                    features={"brightness": 0.5}),
        PlaybackClock(v=1, room="r1", sample_rate=48000, playhead=10, buffered_until=20,
                      wall_time=3.0),
        Control(v=1, room="*", target="engine", command="set", params={"volume": 0.5}),
    ]
    for message in messages:
        assert decode(encode(message)) == message


def test_arrays_keep_values_dtype_and_shape() -> None:
    chunk = decode(encode(_chunk()))
    assert isinstance(chunk, AudioChunk)
    audio = chunk.audio.to_numpy()
    assert audio.dtype == np.float32 and audio.shape == (480, 2)
    np.testing.assert_array_equal(audio, _chunk().audio.to_numpy())
    assert chunk.notes is not None and chunk.notes.to_numpy().tolist() == [[0, 10, 60, 90, 0, 0]]


def test_float64_arrays_are_refused_at_the_sender() -> None:
    with pytest.raises(ProtocolError, match="float64"):
        Array.from_numpy(np.zeros(3))


@pytest.mark.parametrize(
    ("frames", "reason"),
    [
        ([b"r1"], "bad-framing"),
        ([b"r1", b"\xc1"], "malformed"),
        ([b"r1", msgspec.msgpack.encode({"type": "nope", "v": 1, "room": "r1"})], "malformed"),
        ([b"r2", encode(_chunk())[1]], "bad-topic"),
        ([b"r1", encode(_chunk(v=2))[1]], "wrong-version"),
        ([b"r1", encode(_chunk(audio=Array("float32", (480, 2), b"\0" * 12)))[1]], "bad-array"),
        ([b"r1", encode(_chunk(audio=Array("float64", (1, 1), b"\0" * 8)))[1]], "bad-array"),
        ([b"r1", encode(_chunk(audio=Array("float32", (4,), b"\0" * 16)))[1]], "bad-array"),
    ],
)
def test_bad_frames_are_refused_with_a_reason(frames: list[bytes], reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(frames)
    assert info.value.reason == reason


def test_oversized_frames_are_refused_before_decoding() -> None:
    with pytest.raises(ProtocolError) as info:
        decode(encode(_chunk()), max_bytes=1024)
    assert info.value.reason == "oversized"
    assert "1024" in str(info.value)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=512), min_size=0, max_size=3))
def test_any_bytes_decode_or_are_refused(frames: list[bytes]) -> None:
    try:
        decode(frames)
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_corrupted_valid_messages_decode_or_are_refused(data: st.DataObject) -> None:
    topic, payload = encode(_chunk())
    position = data.draw(st.integers(0, len(payload) - 1))
    byte = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(payload)))
    corrupted = (payload[:position] + bytes([byte]) + payload[position + 1:])[:cut]
    counter = DropCounter()
    try:
        message = decode([topic, corrupted])
    except ProtocolError as error:
        counter.add(error)
        assert counter.total == 1
    else:
        assert isinstance(message, AudioChunk)
