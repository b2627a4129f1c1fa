"""The wire protocol: round trips, and any byte string is decoded or refused, never crashes."""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from ground.protocol import (
    FEATURE_NAMES,
    MAX_INSTANCE,
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
    new_instance_id,
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
        # a shape whose element count is 2**64: an int64 product wraps it to 0, which an
        # empty buffer matched (the engine then died of reshape's ValueError)
        ([b"r1", encode(ArtworkView(v=1, room="r1", seq=1, time=1.5, state="artwork",
                                    embedding=Array("float32", (65536,) * 4, b"")))[1]],
         "bad-array"),
        # a playhead the engine's chunks after it would carry past what receivers accept
        ([b"r1", encode(PlaybackClock(v=1, room="r1", sample_rate=48000, playhead=2**53,
                                      buffered_until=0, wall_time=3.0))[1]], "out-of-range"),
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


_ANY_VALUE = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1),
                      st.floats(), st.text(max_size=80), st.binary(max_size=16))


def _mostly(valid: st.SearchStrategy[Any],
            invalid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``valid`` nine times in ten, else ``invalid`` (out of bounds or mistyped)."""
    return st.integers(0, 9).flatmap(lambda pick: invalid if pick == 5 else valid)


@st.composite
def _wire_array(draw: st.DrawFn) -> dict[str, Any]:
    """An Array as it travels: mostly consistent, sometimes not (dtype, shape, length, NaN)."""
    rows, columns = draw(st.integers(0, 4)), draw(st.integers(1, 2))
    integer = draw(st.integers(0, 9)) == 5
    values = draw(st.lists(st.integers(-(2**31), 2**31 - 1) if integer
                           else _mostly(st.floats(-1.0, 1.0, width=32), st.floats(width=32)),
                           min_size=rows * columns, max_size=rows * columns))
    data = np.array(values, "<i4" if integer else "<f4").tobytes()
    if draw(st.integers(0, 9)) == 5:
        data = data[:draw(st.integers(0, len(data)))]
    dtype = draw(_mostly(st.just("int32" if integer else "float32"),
                         st.sampled_from(["float64", "int32", "float32"])))
    shape = draw(_mostly(st.just([rows, columns]), st.sampled_from([[rows], [], [-1, 2]])))
    return {"dtype": dtype, "shape": shape, "data": data}


_COUNT = _mostly(st.integers(0, 2**53), st.integers(-1, 2**64 - 1))
_RATE = _mostly(st.sampled_from([16_000, 48_000]), st.integers(0, 400_000))
_TIME = _mostly(st.floats(0.0, 1e10), st.floats())
_UNIT = _mostly(st.floats(0.0, 1.0), st.floats())
_SMALL = _mostly(st.floats(-100.0, 100.0), st.floats())
_TEXT = _mostly(st.text(max_size=20), st.text(min_size=250, max_size=300))
_ROOM = _mostly(st.text(max_size=8), st.text(min_size=60, max_size=70))

#: Each message type's fields, each with values in and out of its bounds.
_FIELDS: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "artwork_view": {
        "seq": _COUNT, "time": _TIME, "state": _mostly(st.just("artwork"), st.just("other")),
        "artwork_id": st.none() | _TEXT, "confidence": _UNIT, "encoder": _TEXT,
        "quad": st.none() | st.lists(st.tuples(_SMALL, _SMALL), max_size=4),
        "embedding": st.none() | _wire_array(),
        "features": st.dictionaries(st.sampled_from(FEATURE_NAMES) | st.text(max_size=40),
                                    _UNIT, max_size=4),
    },
    "audio_chunk": {
        "seq": _COUNT, "start_sample": _COUNT, "sample_rate": _RATE, "audio": _wire_array(),
        "crossfade": _mostly(st.integers(0, 2), st.integers(-1, 10)),
        "artwork_id": st.none() | _TEXT, "generation_s": _UNIT,
        "reason": _mostly(st.just("start"), st.just("x")), "notes": st.none() | _wire_array(),
    },
    "playback_clock": {
        "sample_rate": _RATE, "playhead": _COUNT, "buffered_until": _COUNT,
        "wall_time": _TIME, "underflows": _COUNT,
        "state": _mostly(st.just("holding"), st.just("x")),
        "instance": _mostly(st.integers(0, MAX_INSTANCE), st.integers(-1, 2**64 - 1)
                            | st.text(max_size=8) | st.floats()),
    },
    "control": {
        "target": _ROOM, "command": _mostly(st.just("set"), st.just("x")),
        "params": st.dictionaries(st.text(max_size=8), _SMALL | _TEXT, max_size=4),
    },
}


@st.composite
def _message_like_frames(draw: st.DrawFn) -> list[bytes]:
    """Two frames shaped like a message (a tag, a header, some fields), often out of bounds."""
    tag = draw(st.sampled_from(sorted(_FIELDS)))
    room = draw(_ROOM)
    body: dict[str, Any] = {"type": tag, "room": room,
                               "v": draw(_mostly(st.just(PROTOCOL_VERSION), st.integers(0, 2)))}
    for name, values in _FIELDS[tag].items():
        if draw(st.integers(0, 9)) != 5:  # mostly present: the required ones must be
            body[name] = draw(values)
    if draw(st.integers(0, 9)) == 5:
        body[draw(st.text(max_size=8))] = draw(_ANY_VALUE)  # an unknown or mistyped field
    topic = draw(_mostly(st.just(room.encode("utf-8")), st.binary(max_size=8)))
    return [topic, msgspec.msgpack.encode(body)]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=512), min_size=0, max_size=3) | _message_like_frames())
def test_any_bytes_decode_or_are_refused(frames: list[bytes]) -> None:
    try:
        message = decode(frames)
    except ProtocolError:
        return
    # Accepted: it re-encodes to the same message, which decode accepts again (so every
    # bound holds), and the header and arrays keep the promises of the module docstring.
    assert decode(encode(message)) == message
    assert message.v == PROTOCOL_VERSION and frames[0].decode("utf-8") == message.room
    event(f"accepted {type(message).__name__}")
    arrays: list[Array | None] = []
    if isinstance(message, ArtworkView):
        arrays = [message.embedding]
    elif isinstance(message, AudioChunk):
        arrays = [message.audio, message.notes]
    elif isinstance(message, PlaybackClock):
        assert isinstance(message.instance, int) and 0 <= message.instance <= MAX_INSTANCE
    for array in arrays:
        if array is not None and array.dtype == "float32":
            assert np.isfinite(array.to_numpy()).all()


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


# -- the PlaybackClock's sender ----------------------------------------------------------


def _clock_payload(**fields: object) -> list[bytes]:
    body: dict[str, object] = {"type": "playback_clock", "v": PROTOCOL_VERSION, "room": "r1",
                               "sample_rate": 48000, "playhead": 10, "buffered_until": 20,
                               "wall_time": 3.0}
    body.update(fields)
    return [b"r1", msgspec.msgpack.encode(body)]


def test_a_clock_from_a_sender_without_an_instance_still_decodes() -> None:
    """audio_outs from before the instance field (and the load generator) send none: 0."""
    clock = decode(_clock_payload())
    assert isinstance(clock, PlaybackClock) and clock.instance == 0
    stamped = decode(_clock_payload(instance=0xDEADBEEF))
    assert isinstance(stamped, PlaybackClock) and stamped.instance == 0xDEADBEEF
    assert decode(encode(stamped)) == stamped


@pytest.mark.parametrize("instance", [-1, MAX_INSTANCE + 1, 2**64 - 1, "a1b2", 1.5, True, None,
                                      [1]])
def test_a_clock_whose_instance_is_not_a_32_bit_id_is_refused(instance: object) -> None:
    with pytest.raises(ProtocolError) as info:
        decode(_clock_payload(instance=instance))
    assert info.value.reason in ("out-of-range", "malformed")
    assert "instance" in info.value.detail


def test_each_audio_out_draws_its_own_instance_id() -> None:
    ids = {new_instance_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(1 <= i <= MAX_INSTANCE for i in ids)
