"""The wire protocol shared by capture, engine and audio_out.

Every ZeroMQ message is two frames: a topic (the room id, UTF-8, so SUB
sockets can filter by room) and a MessagePack payload holding one of the
typed, versioned structs below. Arrays travel as raw bytes with explicit
dtype and shape; nothing is pickled. :func:`decode` refuses anything
malformed, oversized, of an unknown type or of another protocol version by
raising :class:`ProtocolError`; :class:`DropCounter` is how a role counts and
drops such frames without ever crashing.

Every number is bounded at decode to what its receiver can use (sample
positions 0..2**53, sample rates 8 kHz..384 kHz, features and confidence
0..1, times finite and >= 0), so NaN, infinity and integers that would
overflow a receiver's arithmetic never get past :func:`decode`; strings,
dicts and lists are bounded in length too, float arrays must be finite, and
an AudioChunk's samples must lie within +-:data:`MAX_AUDIO_SAMPLE`.

Flow (see ARCHITECTURE.md)::

    capture --ArtworkView--> engine --AudioChunk--> audio_out
                             engine <--PlaybackClock-- audio_out
    supervisor/CLI --Control--> engine, audio_out, capture
"""

from __future__ import annotations

import math
import re
import secrets
import threading
from collections import Counter
from typing import Annotated, Literal

import msgspec
import numpy as np

PROTOCOL_VERSION = 1
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024

#: The named visual features an :class:`ArtworkView` carries, each in [0, 1]:
#: capture's descriptor computes them, the procedural mapping reads them.
#: ``abstraction`` (last) came later; a receiver treats a missing one as 0.5.
FEATURE_NAMES: tuple[str, ...] = (
    "brightness",
    "warmth",
    "saturation",
    "colourfulness",
    "contrast",
    "edge_density",
    "texture_entropy",
    "symmetry",
    "dominant_hue",
    "hue_spread",
    "abstraction",
)

#: dtypes an :class:`Array` may carry; little-endian, fixed width.
ARRAY_DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "int32": np.dtype("<i4"),
}


# -- bounds every decoded number and string must respect --------------------------
# Bounded floats also refuse NaN and +-inf: msgspec's comparisons fail for NaN.

#: Largest sample position or count: exact in a float64, far from int64 overflow.
MAX_SAMPLE = 2**53
#: Largest playhead a clock may report: 2**48, 186 years at 48 kHz (23 at 384 kHz), where
#: 90 days at 192 kHz is 1.5e12 (2**40.5). It was 2**52, and a playhead exactly there was
#: taken: with one bit left below 2**53 (where float64 stops holding every integer) the sums
#: and products made from it (a lead added, a position in another rate, seconds in a
#: float64) lost integer precision. 2**48 leaves 5 bits: any such sum, or a product by up to
#: 32, is still exact, and the chunks placed after it stay far within MAX_SAMPLE.
MAX_PLAYHEAD = 2**48
#: Sample rates a receiver accepts, Hz.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8_000, 384_000
#: Longest room id or target (room ids are at most 64 characters by config).
MAX_ROOM_CHARS = 64
#: Longest artwork id, encoder name or string parameter value.
MAX_TEXT_CHARS = 256
#: Most features, quad corners and Control params one message may carry.
MAX_FEATURES, MAX_QUAD_POINTS, MAX_PARAMS = 64, 16, 64
#: Largest magnitude of a Control parameter value and of a quad coordinate (pixels).
MAX_PARAM_VALUE, MAX_COORDINATE = 1e9, 1e7
#: Latest wall-clock time a message may carry (``time.time()``; year ~5000).
MAX_WALL_TIME = 1e11
#: Largest audio_out instance id a :class:`PlaybackClock` may carry (32 bits, random).
MAX_INSTANCE = 2**32 - 1
#: Largest |sample| an AudioChunk may carry: 16.0, +24 dB over full scale. A generator's
#: float output is nominally within +-1 and may overshoot a little before the receiver's
#: limiter; anything near this is a broken or rogue sender. Bounded, a sample times the
#: largest volume (4) stays finite through every float32 stage (3e38 overflowed to inf
#: under the volume gain, and the limiter's inf * 0 played NaN).
MAX_AUDIO_SAMPLE = 16.0

Version = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
SamplePosition = Annotated[int, msgspec.Meta(ge=0, le=MAX_SAMPLE)]
Playhead = Annotated[int, msgspec.Meta(ge=0, le=MAX_PLAYHEAD)]
Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_SAMPLE)]
SampleRate = Annotated[int, msgspec.Meta(ge=MIN_SAMPLE_RATE, le=MAX_SAMPLE_RATE)]
Unit = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
WallTime = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_WALL_TIME)]
Duration = Annotated[float, msgspec.Meta(ge=0.0, le=1e6)]
Coordinate = Annotated[float, msgspec.Meta(ge=-MAX_COORDINATE, le=MAX_COORDINATE)]
RoomId = Annotated[str, msgspec.Meta(max_length=MAX_ROOM_CHARS)]
Text = Annotated[str, msgspec.Meta(max_length=MAX_TEXT_CHARS)]
ParamValue = (Annotated[float, msgspec.Meta(ge=-MAX_PARAM_VALUE, le=MAX_PARAM_VALUE)]
              | Annotated[str, msgspec.Meta(max_length=MAX_TEXT_CHARS)])
Dimension = Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
InstanceId = Annotated[int, msgspec.Meta(ge=0, le=MAX_INSTANCE)]

# msgspec words a broken bound "Expected `int` <= 9007199254740992" (or "... of length <= 64").
_OUT_OF_RANGE = re.compile(r"Expected `[^`]+` (of length )?[<>]=?")


class ProtocolError(ValueError):
    """A frame that is not a valid message of this protocol version."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Array(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A dense array as raw little-endian bytes with its dtype and shape."""

    dtype: Annotated[str, msgspec.Meta(max_length=16)]
    shape: Annotated[tuple[Dimension, ...], msgspec.Meta(max_length=4)]
    data: bytes

    @classmethod
    def from_numpy(cls, array: np.ndarray) -> Array:
        """Wrap ``array`` (float32 or int32, any shape) for the wire."""
        for name, dtype in ARRAY_DTYPES.items():
            if array.dtype.kind == dtype.kind and array.dtype.itemsize == dtype.itemsize:
                contiguous = np.ascontiguousarray(array, dtype=dtype)
                return cls(name, tuple(int(n) for n in array.shape), contiguous.tobytes())
        raise ProtocolError(
            "bad-array", f"dtype {array.dtype} is not one of {sorted(ARRAY_DTYPES)}"
        )

    def to_numpy(self) -> np.ndarray:
        """Return a read-only numpy view of the bytes, checked against dtype and shape."""
        dtype = ARRAY_DTYPES.get(self.dtype)
        if dtype is None:
            raise ProtocolError("bad-array", f"dtype {self.dtype!r} not in {sorted(ARRAY_DTYPES)}")
        if any(n < 0 for n in self.shape) or len(self.shape) > 4:
            raise ProtocolError("bad-array", f"shape {self.shape} is not a valid shape")
        # Python's integers: numpy's int64 product wraps (65536 ** 4 is 0 there, which an
        # empty buffer matched, and reshape then raised past the inbox's guard).
        count = math.prod(self.shape)
        if count * dtype.itemsize != len(self.data):
            raise ProtocolError(
                "bad-array",
                f"shape {self.shape} of {self.dtype} needs {count * dtype.itemsize} bytes, "
                f"got {len(self.data)}",
            )
        array = np.frombuffer(self.data, dtype=dtype).reshape(self.shape)
        if dtype.kind == "f" and not np.isfinite(array).all():
            raise ProtocolError("non-finite", f"{self.dtype} array {self.shape} holds NaN or inf")
        return array


class _Message(msgspec.Struct, frozen=True, tag_field="type", forbid_unknown_fields=True):
    """Common header: protocol version and the room the message is about."""

    v: Version
    room: RoomId


class ArtworkView(_Message, tag="artwork_view", frozen=True):
    """What one room's camera sees: the primary artwork (or an empty wall).

    Sent by capture when the stable primary artwork changes, and again every
    ``heartbeat_s`` so a restarted engine learns the current state.
    ``features`` are the interpretable descriptor values (names in
    ``FEATURE_NAMES`` above, each in [0, 1]); ``embedding`` is the
    encoder's fixed-length vector.
    """

    seq: Count
    time: WallTime
    state: Literal["artwork", "empty"]
    artwork_id: Text | None = None
    confidence: Unit = 0.0
    quad: Annotated[list[tuple[Coordinate, Coordinate]],
                    msgspec.Meta(max_length=MAX_QUAD_POINTS)] | None = None
    encoder: Text = ""
    embedding: Array | None = None
    features: Annotated[dict[Annotated[str, msgspec.Meta(max_length=32)], Unit],
                        msgspec.Meta(max_length=MAX_FEATURES)] = {}

    @classmethod
    def empty(cls, room: str, time: float, seq: int = 0, confidence: float = 0.0
              ) -> ArtworkView:
        """An empty wall: what a room sees before capture reports, or when no work is in view
        (``confidence``: how sure capture is that the wall is bare)."""
        return cls(v=PROTOCOL_VERSION, room=room, seq=seq, time=time, state="empty",
                   confidence=confidence)

    @classmethod
    def of_artwork(cls, room: str, seq: int, time: float, artwork_id: str | None,
                   confidence: float, encoder: str, embedding: np.ndarray | None,
                   features: dict[str, float],
                   quad: list[tuple[float, float]] | None = None) -> ArtworkView:
        """A view of one artwork, its embedding (if described yet) wrapped for the wire."""
        return cls(v=PROTOCOL_VERSION, room=room, seq=seq, time=time, state="artwork",
                   artwork_id=artwork_id, confidence=confidence, quad=quad, encoder=encoder,
                   embedding=None if embedding is None else Array.from_numpy(embedding),
                   features=features)

    @property
    def key(self) -> str:
        """What identifies "the same artwork" for caching and change detection."""
        if self.state == "empty":
            return "<empty>"
        return self.artwork_id or f"<unnamed:{self.seq}>"


class AudioChunk(_Message, tag="audio_chunk", frozen=True):
    """A block of generated audio placed on the room's sample timeline.

    ``audio`` is float32 (frames, channels) at ``sample_rate``. The first
    ``crossfade`` frames are spliced over whatever is already queued at
    ``start_sample`` with an equal-power crossfade; later frames replace it.
    ``notes`` (optional, int32 (N, 6)) lists the notes it contains as
    ``start_offset, length, pitch, velocity, program, channel`` in frames
    relative to ``start_sample`` (program 128 means GM percussion).
    """

    seq: Count
    start_sample: SamplePosition
    sample_rate: SampleRate
    audio: Array
    crossfade: Count = 0
    artwork_id: Text | None = None
    generation_s: Duration = 0.0
    reason: Literal["continue", "transition", "start"] = "continue"
    notes: Array | None = None
    # The piece's tempo (quarter notes per minute) and meter, and the timeline sample of
    # one of its downbeats, for the recorded MIDI file's tempo map (None: not told).
    tempo_bpm: Annotated[float, msgspec.Meta(ge=1.0, le=1000.0)] | None = None
    meter: tuple[Annotated[int, msgspec.Meta(ge=1, le=255)],
                 Annotated[int, msgspec.Meta(ge=1, le=64)]] | None = None
    downbeat: SamplePosition | None = None


class PlaybackClock(_Message, tag="playback_clock", frozen=True):
    """audio_out's position on the room timeline, sent at a fixed rate.

    ``playhead`` is the timeline sample that plays next; ``buffered_until`` the
    end of the material queued; ``wall_time`` the ``time.time()`` at which
    ``playhead`` reaches the speakers (so all roles share one time base).
    ``instance`` names the audio_out process that sent it: a random number drawn
    once when it starts (:func:`new_instance_id`), so the engine tells a restart (a
    new instance, the old one gone) from two machines configured with the same room
    (two instances alternating). 0: a sender from before the field (it is optional,
    so such a sender's clocks still decode; an engine from before it refuses a
    clock that carries it, so upgrade the engine first).
    """

    sample_rate: SampleRate
    playhead: Playhead
    buffered_until: Playhead
    wall_time: WallTime
    underflows: Count = 0
    state: Literal["starting", "playing", "holding", "silent"] = "playing"
    instance: InstanceId = 0


def new_instance_id() -> int:
    """A random :attr:`PlaybackClock.instance` for one audio_out process, never 0."""
    return 1 + secrets.randbelow(MAX_INSTANCE)


class Control(_Message, tag="control", frozen=True):
    """A command to the roles: ``shutdown``, or ``set`` named parameters.

    ``target`` is a role name or ``"*"``; ``room`` may be ``"*"`` for all.
    """

    target: RoomId
    command: Literal["shutdown", "set", "ping"]
    params: Annotated[dict[Annotated[str, msgspec.Meta(max_length=64)], ParamValue],
                      msgspec.Meta(max_length=MAX_PARAMS)] = {}


#: A tempo sync's outside bar grid in a Control ``set`` to the engine (never stored or
#: echoed): one downbeat's wall time as seconds after UTC midnight
#: (:func:`seconds_of_day`, as a Control value stays below 1e9), beats per bar, bpm.
SYNC_KEYS = ("sync_downbeat", "sync_beats", "sync_bpm")
#: Seconds in a day: a sync downbeat travels modulo this.
DAY_S = 86400.0


def seconds_of_day(wall_time: float) -> float:
    """A ``time.time()`` as seconds after UTC midnight: how a sync downbeat travels."""
    return wall_time % DAY_S


Message = ArtworkView | AudioChunk | PlaybackClock | Control

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


def encode(message: Message) -> list[bytes]:
    """Encode ``message`` as the two frames ``[topic, payload]``."""
    return [message.room.encode("utf-8"), _encoder.encode(message)]


def decode(
    frames: list[bytes], max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> Message:
    """Decode ``[topic, payload]`` frames into a message or raise :class:`ProtocolError`.

    Checks, in order: frame count, size limit, MessagePack structure and
    types, the bounds of every field (reason ``out-of-range``), protocol
    version, topic matching the room, array consistency and finiteness
    (``non-finite``), and an AudioChunk's samples within +-:data:`MAX_AUDIO_SAMPLE`
    (``out-of-range``).
    """
    if len(frames) != 2:
        raise ProtocolError("bad-framing", f"expected 2 frames, got {len(frames)}")
    topic, payload = frames
    size = len(topic) + len(payload)
    if size > max_bytes:
        raise ProtocolError("oversized", f"{size} bytes exceeds the limit of {max_bytes}")
    try:
        message = _decoder.decode(payload)
    except msgspec.ValidationError as exc:
        reason = "out-of-range" if _OUT_OF_RANGE.match(str(exc)) else "malformed"
        raise ProtocolError(reason, str(exc)) from None
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:
        # DecodeError covers type validation; invalid UTF-8 inside a string
        # surfaces as UnicodeDecodeError (a ValueError), found by the fuzz test.
        raise ProtocolError("malformed", f"{type(exc).__name__}: {exc}") from None
    if message.v != PROTOCOL_VERSION:
        raise ProtocolError(
            "wrong-version", f"message version {message.v}, this build speaks {PROTOCOL_VERSION}"
        )
    try:
        topic_room = bytes(topic).decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("bad-topic", "topic is not UTF-8") from None
    if topic_room != message.room:
        raise ProtocolError("bad-topic", f"topic {topic_room!r} != room {message.room!r}")
    for array in _arrays(message):
        values = array.to_numpy()
        if isinstance(message, AudioChunk) and array is message.audio:
            _check_audio_range(values)
    return message


def _check_audio_range(audio: np.ndarray) -> None:
    """Refuse audio (finite by now) with a sample beyond +-MAX_AUDIO_SAMPLE."""
    if audio.size == 0:
        return
    peak = max(float(audio.max()), -float(audio.min()))
    if peak > MAX_AUDIO_SAMPLE:
        raise ProtocolError("out-of-range", f"audio sample magnitude {peak:.3g} exceeds "
                            f"{MAX_AUDIO_SAMPLE:g} (a generator's output is nominally within +-1)")


def _arrays(message: Message) -> list[Array]:
    if isinstance(message, ArtworkView):
        return [message.embedding] if message.embedding is not None else []
    if isinstance(message, AudioChunk):
        arrays = [message.audio]
        if message.notes is not None:
            arrays.append(message.notes)
        audio = message.audio
        if len(audio.shape) != 2 or audio.dtype != "float32":
            raise ProtocolError("bad-array", f"audio must be float32 (frames, channels), "
                                f"got {audio.dtype} {audio.shape}")
        if message.notes is not None and (
            len(message.notes.shape) != 2 or message.notes.shape[1] != 6
        ):
            raise ProtocolError("bad-array", f"notes must be (N, 6), got {message.notes.shape}")
        if message.crossfade > audio.shape[0]:
            raise ProtocolError("out-of-range", f"crossfade {message.crossfade} is longer than "
                                f"the chunk's {audio.shape[0]} frames")
        return arrays
    return []


class DropCounter:
    """Counts frames refused by :func:`decode`, by reason; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.by_reason: Counter[str] = Counter()

    def add(self, error: ProtocolError) -> None:
        """Count one dropped frame."""
        with self._lock:
            self.by_reason[error.reason] += 1

    @property
    def total(self) -> int:
        """Frames dropped so far."""
        with self._lock:
            return sum(self.by_reason.values())
