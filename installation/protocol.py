"""The wire protocol shared by capture, engine and audio_out.

Every ZeroMQ message is two frames: a topic (the room id, UTF-8, so SUB
sockets can filter by room) and a MessagePack payload holding one of the
typed, versioned structs below. Arrays travel as raw bytes with explicit
dtype and shape; nothing is pickled. :func:`decode` refuses anything
malformed, oversized, of an unknown type or of another protocol version by
raising :class:`ProtocolError`; :class:`DropCounter` is how a role counts and
drops such frames without ever crashing.

Flow (see ARCHITECTURE.md)::

    capture --ArtworkView--> engine --AudioChunk--> audio_out
                             engine <--PlaybackClock-- audio_out
    supervisor/CLI --Control--> engine, audio_out, capture
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Literal

import msgspec
import numpy as np

PROTOCOL_VERSION = 1
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024

#: The named visual features an :class:`ArtworkView` carries, each in [0, 1]:
#: capture's descriptor computes them, the procedural mapping reads them.
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
)

#: dtypes an :class:`Array` may carry; little-endian, fixed width.
ARRAY_DTYPES: dict[str, np.dtype] = {
    "float32": np.dtype("<f4"),
    "int32": np.dtype("<i4"),
}


class ProtocolError(ValueError):
    """A frame that is not a valid message of this protocol version."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Array(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A dense array as raw little-endian bytes with its dtype and shape."""

    dtype: str
    shape: tuple[int, ...]
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
        count = int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1
        if count * dtype.itemsize != len(self.data):
            raise ProtocolError(
                "bad-array",
                f"shape {self.shape} of {self.dtype} needs {count * dtype.itemsize} bytes, "
                f"got {len(self.data)}",
            )
        return np.frombuffer(self.data, dtype=dtype).reshape(self.shape)


class _Message(msgspec.Struct, frozen=True, tag_field="type", forbid_unknown_fields=True):
    """Common header: protocol version and the room the message is about."""

    v: int
    room: str


class ArtworkView(_Message, tag="artwork_view", frozen=True):
    """What one room's camera sees: the primary artwork (or an empty wall).

    Sent by capture when the stable primary artwork changes, and again every
    ``heartbeat_s`` so a restarted engine learns the current state.
    ``features`` are the interpretable descriptor values (names in
    ``FEATURE_NAMES`` above, each in [0, 1]); ``embedding`` is the
    encoder's fixed-length vector.
    """

    seq: int
    time: float
    state: Literal["artwork", "empty"]
    artwork_id: str | None = None
    confidence: float = 0.0
    quad: list[tuple[float, float]] | None = None
    encoder: str = ""
    embedding: Array | None = None
    features: dict[str, float] = {}


class AudioChunk(_Message, tag="audio_chunk", frozen=True):
    """A block of generated audio placed on the room's sample timeline.

    ``audio`` is float32 (frames, channels) at ``sample_rate``. The first
    ``crossfade`` frames are spliced over whatever is already queued at
    ``start_sample`` with an equal-power crossfade; later frames replace it.
    ``notes`` (optional, int32 (N, 6)) lists the notes it contains as
    ``start_offset, length, pitch, velocity, program, channel`` in frames
    relative to ``start_sample`` (program 128 means GM percussion).
    """

    seq: int
    start_sample: int
    sample_rate: int
    audio: Array
    crossfade: int = 0
    artwork_id: str | None = None
    generation_s: float = 0.0
    reason: Literal["continue", "transition", "start"] = "continue"
    notes: Array | None = None


class PlaybackClock(_Message, tag="playback_clock", frozen=True):
    """audio_out's position on the room timeline, sent at a fixed rate.

    ``playhead`` is the timeline sample that plays next; ``buffered_until`` the
    end of the material queued; ``wall_time`` the ``time.time()`` at which
    ``playhead`` reaches the speakers (so all roles share one time base).
    """

    sample_rate: int
    playhead: int
    buffered_until: int
    wall_time: float
    underflows: int = 0
    state: Literal["starting", "playing", "holding", "silent"] = "playing"


class Control(_Message, tag="control", frozen=True):
    """A command to the roles: ``shutdown``, or ``set`` named parameters.

    ``target`` is a role name or ``"*"``; ``room`` may be ``"*"`` for all.
    """

    target: str
    command: Literal["shutdown", "set", "ping"]
    params: dict[str, float | str] = {}


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
    types, protocol version, topic matching the room, and array consistency.
    """
    if len(frames) != 2:
        raise ProtocolError("bad-framing", f"expected 2 frames, got {len(frames)}")
    topic, payload = frames
    size = len(topic) + len(payload)
    if size > max_bytes:
        raise ProtocolError("oversized", f"{size} bytes exceeds the limit of {max_bytes}")
    try:
        message = _decoder.decode(payload)
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
        array.to_numpy()
    return message


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
