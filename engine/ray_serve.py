"""The engine on Ray Serve: the generator in a deployment, the engine front as its client.

Where it sits in the flow: with ``engine.backend = "ray"`` the engine process
(the *front*) keeps what it always had (room sessions, the timeline, the
ZeroMQ sockets towards capture and audio_out) and its generator becomes a
:class:`RayGenerator`: the same :class:`~engine.generators.base.Generator`
protocol, but each due chunk is a :class:`ChunkRequest` sent to a Ray Serve
deployment of the real generator (``art2mus serve``, :func:`deploy`). Model
loading, CUDA graphs and the ONNX path stay inside the replica, which builds
its generator from the engine config (``make_generator``).

- **Streams live in the replica.** A stream state may own a synthesiser or GPU
  tensors, so it never travels: the front holds a :class:`RemoteStream` (room,
  stream id, seed, position) and the replica keeps the real state
  (:class:`ReplicaCore`). Each request carries enough to reopen its stream at
  its position, so a replica that does not hold it (a new one after a crash,
  another one after a retry) opens it there and the room plays on.
- **Sticky, even and batched.** The room id is sent as Serve's multiplexed model
  id; our request router (:data:`ROUTER`, deciding with
  :class:`~engine.room_placement.RoomPlacement`) keeps each room on one replica
  (the one holding its stream) and spreads the rooms evenly over the replicas;
  ``@serve.batch`` gathers the rooms (of every front) due together into one
  generator call.
- **Deadlines.** Each request carries its due time (when the room's buffer
  runs out); the front sends the due-soonest first and a replica serves its
  batch in due order, counting the deadlines it missed.
- **Failures.** A request that fails (a replica killed mid-request) is sent
  again while its deadline allows, else made here; when Serve cannot be
  reached at all, every room is generated here by the procedural generator
  and the backend reports ``degraded: ray unreachable`` until a probe finds
  Serve again. A room that goes over (and, when Serve is back, comes back) in
  the middle of its stream is crossfaded over the transition crossfade, as an
  artwork change is (:class:`_Switch`), never cut.
- **A token.** With ``engine.ray.token_file`` (or ``token``; required when
  Serve's port is not on loopback) the front sends ``Authorization: Bearer
  TOKEN`` with every request and probe, and a replica answers 401 to any
  request without it before it reads the body (:meth:`ReplicaCore.admit`,
  compared in constant time, counted as ``refused``). A front whose token is
  refused falls back to local generation as for an unreachable Ray, and
  reports :data:`TOKEN_REFUSED`. Serve's proxy itself still answers its own
  routes (``/-/healthz``, ``/-/routes``) and routes a request by its room id
  before the replica refuses it.

Why HTTP and not a deployment handle: a process holding a handle is a Ray
driver, and a Ray driver exits when its cluster goes away; the front must
outlive Ray. Serve's HTTP proxy keeps the engine process free of Ray (it does
not even import it) at the cost of a loopback hop (measured by
``benchmarks/ray_serve.py``).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import http.client
import logging
import math
import os
import socket
import threading
import time
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import AsyncIterable, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec
import numpy as np

from engine.config import EngineConfig
from engine.generators import Generated, Generator, Request, RoomControls, generate_many
from ground.errors import Art2MusError
from ground.events import EventSink, null_sink
from ground.params import PARAMETERS
from ground.protocol import DEFAULT_MAX_MESSAGE_BYTES, ArtworkView

#: Serve application name and HTTP route of the deployment.
APP_NAME = "art2mus"
ROUTE = "/art2mus"
#: Streams one replica (or the front's fallback) keeps; the least recently used go first.
STREAMS_KEPT = 4096
#: Streams one room keeps in a replica (its own, and those it crossfades from): a client
#: flooding one room with new streams evicts that room's, never the other rooms'.
STREAMS_PER_ROOM = 4
#: Conditions one replica keeps, by (artwork, what the view says of it, knob values).
CONDITIONS_KEPT = 256
#: Recent samples kept for the figures in :meth:`RayGenerator.backend_status`.
SAMPLES_KEPT = 256
#: The deployment's request router (:class:`engine.ray_router.RoomRouter`), by import path:
#: Serve loads it in its proxy; the front never imports it (nor Ray).
ROUTER = "engine.ray_router:RoomRouter"
#: Health states of the backend.
HEALTHY = "ok"
DEGRADED = "degraded: ray unreachable"
TOKEN_REFUSED = ("degraded: ray refused our token (engine.ray.token_file differs from "
                 "art2mus serve's)")


class ChunkRequest(msgspec.Struct, frozen=True):
    """One room's next chunk, as the front asks a replica for it."""

    room: str
    stream: str  # one id per opened stream (per ``start``)
    previous: str | None  # the stream it replaces: its musical context, where still held
    seed: int
    start_sample: int  # where the stream opened
    position: int  # first sample wanted
    frames: int
    view: ArtworkView
    controls: RoomControls
    due: float  # unix time the room's buffer runs out


class ChunkReply(msgspec.Struct, frozen=True):
    """A replica's answer: the audio, its notes, and how it was served."""

    audio: bytes  # float32 (frames, channels), C order
    notes: bytes  # int32 (N, 6)
    channels: int
    replica: str  # host:pid
    batch: int  # requests served in the same generator call
    queue_s: float  # arrival in the replica -> start of its batch
    compute_s: float  # the batch's generator call
    missed: bool  # finished after due - deadline slack
    reopened: bool  # the replica did not hold the stream at that position: opened it there

    def generated(self, frames: int) -> Generated:
        """The reply as the session's :class:`Generated` (shapes checked)."""
        audio = np.frombuffer(self.audio, np.float32)
        if audio.size != frames * self.channels:
            raise ValueError(f"reply from {self.replica}: expected {frames} x {self.channels} "
                             f"samples, got {audio.size}")
        notes = np.frombuffer(self.notes, np.int32).reshape(-1, 6)
        return Generated(audio=audio.reshape(frames, self.channels), notes=notes)


#: The longest chunk any replica makes: ``engine.chunk_s`` (30 s at most) at 48 kHz. A
#: deployment holds its requests to its own config's chunk (:meth:`RequestLimits.of`).
MAX_REQUEST_FRAMES = 30 * 48_000
#: Longest room, stream and previous-stream id a request may carry.
MAX_ID_LENGTH = 256
#: A request's bytes besides its embedding (ids, knobs, quad, features), at most.
REQUEST_OVERHEAD_BYTES = 64 * 1024
#: Most embedding values a request may carry where the generator does not say its width.
MAX_EMBEDDING_VALUES = 65_536
#: How far before the replica's clock a due time may lie: an earlier one is taken as this.
DUE_PAST_S = 1.0
#: The room controls a request carries, with the live parameter that bounds each.
_CONTROL_PARAMETERS = {p.field: p for p in PARAMETERS.values()
                       if p.role == "engine" and p.field is not None}


class RequestRefused(ValueError):
    """A chunk request a replica will not serve; the message names the field at fault."""

    status = 400  # the deployment's HTTP answer


class RequestTooLarge(RequestRefused):
    """A chunk request over a size limit; the message names the limit."""

    status = 413


def embedding_width(generator: Generator) -> int | None:
    """The embedding width ``generator`` conditions on; None where it reads no embedding
    (sine, procedural). The diffusion generator knows it from its model's spec."""
    width = getattr(generator, "embedding_width", None)
    if width is None:
        spec = getattr(getattr(generator, "model", None), "spec", None)
        width = getattr(spec, "embedding_dim", None)
    return None if width is None else int(width)


@dataclass(frozen=True)
class RequestLimits:
    """What a replica accepts: chunk length, embedding width and body size, due window."""

    max_frames: int = MAX_REQUEST_FRAMES
    embedding_width: int | None = None  # None: any width up to MAX_EMBEDDING_VALUES
    due_ahead_s: float = 90.0  # a due time later than now + this is taken as that

    def __post_init__(self) -> None:
        if self.max_frames < 1 or self.due_ahead_s < 0 or (
                self.embedding_width is not None and self.embedding_width < 1):
            raise ValueError(f"RequestLimits: expected frames and width from 1, a due window "
                             f"from 0, got {self}")

    @property
    def max_embedding_values(self) -> int:
        """Most values a view's embedding may hold."""
        return self.embedding_width or MAX_EMBEDDING_VALUES

    @property
    def max_body_bytes(self) -> int:
        """Largest request body: the overhead plus the embedding at 8 bytes a value, never
        over the wire protocol's message limit."""
        return min(DEFAULT_MAX_MESSAGE_BYTES,
                   REQUEST_OVERHEAD_BYTES + 8 * self.max_embedding_values)

    @classmethod
    def of(cls, config: EngineConfig, generator: Generator) -> RequestLimits:
        """The limits of a deployment of ``config``'s ``generator``: a chunk plus the longest
        crossfade a transition adds to it; due no later than the lead and a chunk ahead."""
        crossfade_s = max(_CONTROL_PARAMETERS["transition_s"].high,
                          config.transition_crossfade_s)
        return cls(max_frames=config.chunk_samples + math.ceil(crossfade_s * config.sample_rate),
                   embedding_width=embedding_width(generator),
                   due_ahead_s=config.lead_s + config.chunk_s)


def check_content_length(header: str | None, limits: RequestLimits) -> None:
    """Refuse a body announced over ``limits`` before reading it (None: not announced)."""
    if header is None:
        return
    if not header.strip().isdigit():
        raise RequestRefused(f"chunk request: Content-Length: expected a byte count, got "
                             f"{header[:40]!r}")
    if int(header) > limits.max_body_bytes:
        raise RequestTooLarge(f"chunk request: body: expected at most {limits.max_body_bytes} "
                              f"bytes, got {int(header)}")


async def read_capped(chunks: AsyncIterable[bytes], limits: RequestLimits) -> bytes:
    """The body from ``chunks``, read no further than ``limits`` allow."""
    parts: list[bytes] = []
    size = 0
    async for part in chunks:
        size += len(part)
        if size > limits.max_body_bytes:
            raise RequestTooLarge(f"chunk request: body: expected at most "
                                  f"{limits.max_body_bytes} bytes, got more")
        parts.append(part)
    return b"".join(parts)


def decode_request(body: bytes, limits: RequestLimits | None = None) -> ChunkRequest:
    """The chunk request in ``body``, checked before it may join a batch.

    An engine front never sends a bad one; a buggy or hostile client that
    reaches Serve's HTTP port may, and one request of 10^9 frames, a NaN
    knob or a malformed body must not stall the replica or fail the other
    rooms' chunks batched with it. :class:`RequestRefused` names the field
    (the deployment answers HTTP 400, 413 for a size over ``limits``, and counts it as
    ``refused``).
    """
    limits = limits or RequestLimits()
    if len(body) > limits.max_body_bytes:
        raise RequestTooLarge(f"chunk request: body: expected at most {limits.max_body_bytes} "
                              f"bytes, got {len(body)}")
    try:
        request = msgspec.msgpack.decode(body, type=ChunkRequest)
    except (msgspec.DecodeError, ValueError, RecursionError) as exc:
        raise RequestRefused(f"chunk request: malformed: {exc}") from None
    if not 1 <= request.frames <= limits.max_frames:
        raise RequestRefused(f"chunk request: frames: expected 1..{limits.max_frames}, "
                             f"got {request.frames}")
    if not 0 <= request.start_sample <= request.position < 2 ** 62:
        raise RequestRefused(f"chunk request: position: expected start_sample <= position, "
                             f"both from 0, got {request.start_sample} and {request.position}")
    if not -2 ** 63 <= request.seed < 2 ** 63:
        raise RequestRefused(f"chunk request: seed: expected a 64-bit integer, got "
                             f"{request.seed}")
    if not math.isfinite(request.due):
        raise RequestRefused(f"chunk request: due: expected a finite time, got {request.due}")
    for name in ("room", "stream", "previous"):
        value = getattr(request, name)
        if value is not None and not 0 < len(value) <= MAX_ID_LENGTH:
            raise RequestRefused(f"chunk request: {name}: expected 1..{MAX_ID_LENGTH} "
                                 f"characters, got {len(value)}")
    for name, parameter in _CONTROL_PARAMETERS.items():
        value = getattr(request.controls, name)
        if value is None and name == "transition_s":
            continue  # the config's crossfade
        try:
            number = parameter.check(value)
        except ValueError as exc:
            raise RequestRefused(f"chunk request: controls.{name}: {exc}") from None
        if not parameter.low <= number <= parameter.high:
            raise RequestRefused(f"chunk request: controls.{name}: expected "
                                 f"{parameter.expected}, got {number:g}")
    sync = request.controls.sync
    if sync is not None and not (math.isfinite(sync.bpm) and 0 < sync.bpm <= 1000
                                 and 0 < sync.beats <= 64 and sync.phase >= 0):
        raise RequestRefused(f"chunk request: controls.sync: expected a bar grid (bpm 0..1000, "
                             f"1..64 beats, phase from 0), got {sync}")
    _check_embedding(request.view, limits)
    return request


def _check_embedding(view: ArtworkView, limits: RequestLimits) -> None:
    width = limits.embedding_width
    if view.embedding is None:
        if view.state == "artwork" and width is not None:
            raise RequestRefused(f"chunk request: view.embedding: expected {width} values for "
                                 f"an artwork, got none")
        return
    shape = view.embedding.shape
    size = math.prod(shape)
    if size > limits.max_embedding_values and width is None:
        raise RequestTooLarge(f"chunk request: view.embedding: expected at most "
                              f"{limits.max_embedding_values} values, got {size}")
    if width is not None and tuple(shape) not in ((width,), (1, width)):
        raise RequestRefused(f"chunk request: view.embedding: expected shape ({width},), "
                             f"got {tuple(shape)}")
    try:
        if not np.isfinite(view.embedding.to_numpy()).all():
            raise ValueError("not finite")
    except (ValueError, TypeError) as exc:
        raise RequestRefused(f"chunk request: view.embedding: {exc}") from None


def _view_digest(view: ArtworkView) -> str:
    """What the view says of its artwork (encoder, embedding, features), as a digest: two
    clients naming one artwork id with different embeddings get different conditions."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(msgspec.msgpack.encode(
        (view.state, view.artwork_id, view.encoder, sorted(view.features.items()))))
    if view.embedding is not None:
        digest.update(msgspec.msgpack.encode((view.embedding.dtype, view.embedding.shape)))
        digest.update(view.embedding.data)
    return digest.hexdigest()


def _lru_put(cache: OrderedDict[Any, Any], key: Any, value: Any, size: int) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > size:
        cache.popitem(last=False)


@dataclass(frozen=True)
class HttpAnswer:
    """What the deployment answers without serving a chunk: a refusal, or a probe's info."""

    status: int
    body: bytes
    media_type: str = "text/plain"
    headers: dict[str, str] = field(default_factory=dict)


class ReplicaCore:
    """What a replica does, without Ray: admit HTTP requests, hold streams, serve a batch of
    requests by deadline.

    The Serve deployment wraps one; the front's fallback is one around the
    procedural generator; tests drive one directly. ``token`` ('' = none) is
    what every HTTP request must carry (:meth:`admit`).
    """

    def __init__(self, generator: Generator, deadline_slack_s: float = 0.0,
                 clock: Callable[[], float] = time.time,
                 limits: RequestLimits | None = None, token: str = "") -> None:
        self.generator = generator
        self._token = token.encode()
        self.deadline_slack_s = deadline_slack_s
        self.limits = limits or RequestLimits(embedding_width=embedding_width(generator))
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._clock = clock
        # id -> (room, position, state), least recently used first; and each room's ids
        self._streams: OrderedDict[str, tuple[str, int, Any]] = OrderedDict()
        self._rooms: dict[str, OrderedDict[str, None]] = {}
        self._conditions: OrderedDict[tuple[str, str, tuple[float, ...]], Any] = OrderedDict()
        self.served = 0
        self.missed = 0
        self.reopened = 0
        self.refused = 0  # requests the deployment refused (token, decode_request) unserved
        self.unauthorized = 0  # of which without the token (HTTP 401)

    def authorized(self, authorization: str | None) -> bool:
        """True when no token is set, or ``authorization`` (the header) is ``Bearer TOKEN``;
        compared in constant time."""
        if not self._token:
            return True
        scheme, _, given = (authorization or "").partition(" ")
        # compare_digest also on a wrong scheme: the time does not tell which part was wrong
        matches = hmac.compare_digest(given.strip().encode(errors="replace"), self._token)
        return scheme.lower() == "bearer" and matches

    async def admit(self, method: str, authorization: str | None, content_length: str | None,
                    body: AsyncIterable[bytes]) -> ChunkRequest | HttpAnswer:
        """The deployment's HTTP entry point, short of serving: the chunk request to batch,
        or the answer to send instead.

        The token first (401 before a byte of the body is read), then a GET is a
        probe (:meth:`info`) and a POST's body is read within :attr:`limits` and
        decoded (400 or 413 naming the field). Every refusal is counted.
        """
        if not self.authorized(authorization):
            self.refused += 1
            self.unauthorized += 1
            given = "none" if not authorization else "another"
            return HttpAnswer(401, f"chunk request: Authorization: expected the bearer token "
                                   f"of engine.ray.token_file, got {given}".encode(),
                              headers={"WWW-Authenticate": 'Bearer realm="art2mus"'})
        if method == "GET":
            return HttpAnswer(200, msgspec.json.encode(self.info()), "application/json")
        try:  # the announced size first: an oversized body is never read
            check_content_length(content_length, self.limits)
            return decode_request(await read_capped(body, self.limits), self.limits)
        except RequestRefused as refused:  # never joins a batch: other rooms unharmed
            self.refused += 1
            return HttpAnswer(refused.status, str(refused).encode())

    def condition(self, view: ArtworkView, controls: RoomControls) -> Any:
        """The generator's condition for ``view`` under ``controls`` (cached)."""
        key = (view.key, _view_digest(view), controls.shapes_condition)
        if key in self._conditions:
            self._conditions.move_to_end(key)
            return self._conditions[key]
        condition = self.generator.prepare(view)
        if not controls.neutral:
            condition = self.generator.apply_controls(view, condition, controls)
        _lru_put(self._conditions, key, condition, CONDITIONS_KEPT)
        return condition

    def _state(self, request: ChunkRequest, condition: Any) -> tuple[Any, bool]:
        """The stream state at ``request.position`` (opened here where not held); reopened?
        Nothing held changes here: :meth:`_keep` replaces it once the chunk is made."""
        held = self._streams.get(request.stream)
        if held is not None and held[1] == request.position:
            return held[2], False
        previous = held[2] if held is not None else None
        if previous is None and request.previous is not None:
            kept = self._streams.get(request.previous)
            previous = kept[2] if kept is not None else None
        state = self.generator.start(condition, request.seed, request.position, previous)
        # A fresh stream's first chunk is an ordinary start; anything else is a recovery.
        return state, not (held is None and request.position == request.start_sample)

    def _drop(self, stream: str) -> None:
        held = self._streams.pop(stream, None)
        if held is None:
            return
        mine = self._rooms.get(held[0])
        if mine is not None:
            mine.pop(stream, None)
            if not mine:
                del self._rooms[held[0]]

    def _keep(self, request: ChunkRequest, state: Any) -> None:
        """Hold ``request``'s stream after its chunk (the one it replaces goes): at most
        :data:`STREAMS_PER_ROOM` a room, :data:`STREAMS_KEPT` in all, oldest out first."""
        replaced = self._streams.get(request.previous) if request.previous else None
        if replaced is not None and replaced[0] == request.room:
            assert request.previous is not None
            self._drop(request.previous)
        self._drop(request.stream)
        self._streams[request.stream] = (request.room, request.position + request.frames, state)
        mine = self._rooms.setdefault(request.room, OrderedDict())
        mine[request.stream] = None
        while len(mine) > STREAMS_PER_ROOM:
            self._drop(next(iter(mine)))
        while len(self._streams) > STREAMS_KEPT:
            self._drop(next(iter(self._streams)))

    def _due(self, due: float, now: float) -> float:
        """A client's due time, believed within DUE_PAST_S before ``now`` .. the lead after:
        a due of 0 does not jump the queue, a far one does not starve."""
        return min(max(due, now - DUE_PAST_S), now + self.limits.due_ahead_s)

    def serve(self, batch: Sequence[tuple[ChunkRequest, float]]
              ) -> list[ChunkReply | RequestRefused]:
        """Every request of ``batch`` ((request, arrival time) pairs) served, due-soonest
        first, in one generator call where it batches; replies in request order. A request
        whose condition or stream cannot be made (its view refused by the generator) is
        answered :class:`RequestRefused` alone; the others are served."""
        began = self._clock()
        due = [self._due(request.due, began) for request, _ in batch]
        # due-soonest first; among equal (clamped) dues, the first to arrive
        order = sorted(range(len(batch)), key=lambda i: (due[i], batch[i][1]))
        calls: list[Request] = []
        made: list[int] = []
        reopened: dict[int, bool] = {}
        replies: list[ChunkReply | RequestRefused | None] = [None] * len(batch)
        for i in order:
            request = batch[i][0]
            try:
                condition = self.condition(request.view, request.controls)
                state, reopened[i] = self._state(request, condition)
            except (Art2MusError, ValueError, TypeError) as exc:
                self.refused += 1
                replies[i] = RequestRefused(f"chunk request: view: {exc}")
                continue
            made.append(i)
            calls.append((state, condition, request.frames))
        results = generate_many(self.generator, calls) if calls else []
        finished = self._clock()
        for i, (generated, state) in zip(made, results, strict=True):
            request, arrived = batch[i]
            self._keep(request, state)
            missed = finished > due[i] - self.deadline_slack_s
            self.missed += missed
            self.reopened += reopened[i]
            replies[i] = ChunkReply(
                audio=np.ascontiguousarray(generated.audio, np.float32).tobytes(),
                notes=np.ascontiguousarray(generated.notes, np.int32).tobytes(),
                channels=generated.audio.shape[1], replica=self.name, batch=len(calls),
                queue_s=max(0.0, began - arrived), compute_s=finished - began, missed=missed,
                reopened=reopened[i])
        self.served += len(calls)
        return [reply for reply in replies if reply is not None]

    def info(self) -> dict[str, Any]:
        """What a probe learns: who answered and what it has served."""
        return {"replica": self.name, "served": self.served, "missed": self.missed,
                "reopened": self.reopened, "refused": self.refused,
                "unauthorized": self.unauthorized, "streams": len(self._streams)}


# -- the front ------------------------------------------------------------------


@dataclass(frozen=True)
class ViewCondition:
    """The front's condition: the view and the knobs; the replica makes the generator's own."""

    view: ArtworkView
    controls: RoomControls = field(default_factory=RoomControls)


@dataclass(frozen=True)
class RemoteStream:
    """The front's stream state: where the room's stream is, not what it holds."""

    room: str
    stream: str
    previous: str | None
    seed: int
    start_sample: int
    position: int


class BackendUnreachable(Exception):
    """Serve's HTTP proxy refused or dropped the connection."""


class TokenRefused(Exception):
    """The deployment answered 401: our token (or its absence) is not the one it demands."""


@dataclass
class _ReplicaFigures:
    requests: int = 0
    missed: int = 0
    batches: deque[int] = field(default_factory=lambda: deque(maxlen=SAMPLES_KEPT))
    queue_s: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLES_KEPT))


@dataclass
class _Heard:
    """What a room's last chunk was: its stream, where it ended, who made it, and the last
    frames of its stream the deployment made (what a switch to local fades out from)."""

    stream: str
    end: int
    source: str  # "remote"; "outage": made here while Serve was unreachable; "here": once
    tail: np.ndarray


@dataclass
class _Switch:
    """A room crossing from one source of its stream to the other over ``length`` frames.

    To local (Serve gone): the deployment's audio is over, so what fades out is
    its last frames mirrored (``held``), which go on from its last sample without
    a jump. Back to the deployment: the local stream still plays on under it.
    """

    to_local: bool
    length: int
    done: int = 0
    held: np.ndarray | None = None

    def gains(self, frames: int) -> tuple[np.ndarray, np.ndarray]:
        """Equal-power (fade-out, fade-in) gains for the next ``frames`` of the crossing:
        the two sources are different music, uncorrelated (cos^2 + sin^2 = 1)."""
        theta = (np.arange(self.done, self.done + frames, dtype=np.float64) + 0.5) * (
            0.5 * np.pi / self.length)
        return (np.cos(theta).astype(np.float32)[:, None],
                np.sin(theta).astype(np.float32)[:, None])


def _p(values: Sequence[float], q: float) -> float | None:
    return None if not values else round(float(np.percentile(np.asarray(values), q)) * 1e3, 2)


class RayGenerator:
    """The engine front's generator with ``engine.backend = "ray"``: a client of the deployment.

    ``playhead(room)`` (the session's playhead estimate) gives each request its
    due time. ``log_event`` hears ``backend_degraded`` / ``backend_restored``.
    The token is read from ``engine.ray`` once, here (ConfigError naming the
    field when its file cannot be read).
    """

    def __init__(self, config: EngineConfig, log_event: EventSink = null_sink,
                 playhead: Callable[[str], int | None] = lambda room: None,
                 fallback: Generator | None = None) -> None:
        from engine.generators.procedural import ProceduralGenerator

        self.config = config
        self.ray = config.ray
        token = config.ray.read_token()
        # sent with every request and probe; never logged nor reported
        self._authorization = {"Authorization": f"Bearer {token}"} if token else {}
        self.sample_rate: int = config.sample_rate
        self.channels: int = config.channels
        self._log = log_event
        self._playhead = playhead
        # Where Ray cannot be reached, rooms are made here: the procedural generator runs
        # anywhere, needs no weights, and its streams are held the way a replica holds them.
        self.local = ReplicaCore(fallback or ProceduralGenerator(
            config.procedural, config.sample_rate, config.channels))
        self._pool = ThreadPoolExecutor(max_workers=max(4, self.ray.max_batch_size),
                                        thread_name_prefix="ray-serve-client")
        self._connections = threading.local()
        self._opened: list[http.client.HTTPConnection] = []  # every thread's, for close()
        self.state = HEALTHY
        self._probing = threading.Event()  # set while a probe thread runs
        self._restored = threading.Event()  # set by the probe when Serve answers again
        self.retries = 0
        self.local_chunks = 0
        self.failures: Counter[str] = Counter()
        self.reopened = 0
        self.replicas: dict[str, _ReplicaFigures] = {}
        self.served_by: dict[str, str] = {}  # room -> the replica that answered it last
        self.hop_s: deque[float] = deque(maxlen=SAMPLES_KEPT)  # round trip less compute
        self._heard: dict[str, _Heard] = {}  # room -> its last chunk
        self._switching: dict[str, _Switch] = {}  # room -> its crossing in progress
        self.switches = 0  # crossings begun (either way)

    # -- the Generator protocol ------------------------------------------------

    def prepare(self, view: ArtworkView) -> ViewCondition:
        """The view itself: the replica computes the condition from it."""
        return ViewCondition(view)

    def apply_controls(self, view: ArtworkView, condition: Any, controls: RoomControls
                       ) -> ViewCondition:
        """The view with the knobs (their meaning is the replica generator's)."""
        return ViewCondition(view, controls)

    def describe(self, condition: Any) -> dict[str, Any]:
        """The decisions, as the procedural generator makes them; for another generator, its
        name (its decisions are the replica's)."""
        if not isinstance(condition, ViewCondition):
            raise TypeError(f"condition must be ViewCondition, got {type(condition).__name__}")
        if self.config.generator != "procedural":
            return {"generator": self.config.generator, "backend": "ray"}
        local = self.local.condition(condition.view, condition.controls)
        return self.local.generator.describe(local)

    def start(self, condition: Any, seed: int, start_sample: int, previous: Any | None
              ) -> RemoteStream:
        """A new stream id at ``start_sample`` (opened by whoever serves its first chunk)."""
        if not isinstance(condition, ViewCondition):
            raise TypeError(f"condition must be ViewCondition, got {type(condition).__name__}")
        return RemoteStream(
            room=condition.view.room, stream=uuid.uuid4().hex,
            previous=previous.stream if isinstance(previous, RemoteStream) else None,
            seed=seed, start_sample=int(start_sample), position=int(start_sample))

    def generate(self, state: Any, condition: Any, frames: int
                 ) -> tuple[Generated, RemoteStream]:
        """One room's next ``frames`` (a batch of one)."""
        return self.generate_batch([(state, condition, frames)])[0]

    def generate_batch(self, requests: Sequence[Request]) -> list[tuple[Generated, Any]]:
        """Every request served by the deployment, due-soonest first, or here where it cannot."""
        now = time.time()
        wire = [self._request(state, condition, frames, now)
                for state, condition, frames in requests]
        if self._restored.is_set():
            self._restored.clear()
            self.state = HEALTHY
            self._log("backend_restored", backend="ray", url=self.url)
        replies: list[ChunkReply | None] = [None] * len(wire)
        if self.state == HEALTHY:
            replies = self._remote(wire)
        missing = [i for i, reply in enumerate(replies) if reply is None]
        outage = self.state != HEALTHY  # not one request that failed: Serve is gone
        if missing:
            local = self.local.serve([(wire[i], now) for i in missing])
            self.local_chunks += len(missing)
            for i, made in zip(missing, local, strict=True):
                if isinstance(made, RequestRefused):
                    raise made  # the front's own generator refuses the view: as local would
                replies[i] = made
        made_here = set(missing)
        sources = ["remote" if i not in made_here else "outage" if outage else "here"
                   for i in range(len(wire))]
        chunks: list[Generated] = []
        for reply, (_, _, frames) in zip(replies, requests, strict=True):
            assert reply is not None
            chunks.append(reply.generated(frames))
        chunks = self._crossfade_switches(requests, wire, sources, chunks, now)
        return [(generated, replace(state, position=state.position + frames))
                for generated, (state, _, frames) in zip(chunks, requests, strict=True)]

    def _crossfade_switches(self, requests: Sequence[Request], wire: list[ChunkRequest],
                            sources: list[str], made: list[Generated], now: float
                            ) -> list[Generated]:
        """Each room's chunk, crossfaded where its stream goes over to the local generator
        or back to the deployment (see :class:`_Switch`); the rooms' records updated.

        Only a continuing stream is crossfaded here: a new one (artwork change, restart) is
        the session's transition, which audio_out crossfades. One request made here while
        Serve answers (a missed deadline) is not a switch.
        """
        back: list[int] = []  # crossings to the deployment: the local stream's audio too
        for i, (state, condition, _) in enumerate(requests):
            room, heard = wire[i].room, self._heard.get(wire[i].room)
            if heard is None or heard.stream != state.stream or heard.end != state.position:
                self._switching.pop(room, None)
            elif heard.source == "remote" and sources[i] == "outage" and len(heard.tail):
                self._switching[room] = _Switch(True, len(heard.tail),
                                                held=heard.tail[::-1].copy())
                self.switches += 1
            elif heard.source == "outage" and sources[i] == "remote" and \
                    self._crossfade_frames(condition) > 0:
                self._switching[room] = _Switch(False, self._crossfade_frames(condition))
                self.switches += 1
            crossing = self._switching.get(room)
            if crossing is not None and crossing.to_local != (sources[i] != "remote"):
                del self._switching[room]  # went back before it was over: plays as it comes
            elif crossing is not None and not crossing.to_local:
                back.append(i)
        under = dict(zip(back, self.local.serve([(wire[i], now) for i in back]), strict=True)) \
            if back else {}
        out = []
        for i, (state, condition, frames) in enumerate(requests):
            generated, room = made[i], wire[i].room
            if sources[i] == "remote":  # kept raw: what a later switch to local fades out
                keep = self._crossfade_frames(condition)
                heard = self._heard.get(room)
                tail = heard.tail if heard is not None and heard.stream == state.stream \
                    and heard.end == state.position else generated.audio[:0]
                tail = np.concatenate([tail, generated.audio])[-keep:] if keep else tail[:0]
            else:
                tail = generated.audio[:0]
            self._heard[room] = _Heard(state.stream, state.position + frames, sources[i], tail)
            crossing = self._switching.get(room)
            if crossing is None:
                out.append(generated)
                continue
            if crossing.to_local:
                assert crossing.held is not None
                old = crossing.held[crossing.done:crossing.done + frames]
            else:
                local = under.get(i)
                if not isinstance(local, ChunkReply):  # refused here: the deployment's alone
                    del self._switching[room]
                    out.append(generated)
                    continue
                old = local.generated(frames).audio
            n = min(len(old), crossing.length - crossing.done)
            fade_out, fade_in = crossing.gains(n)
            audio = generated.audio.copy()
            audio[:n] = old[:n] * fade_out + audio[:n] * fade_in
            crossing.done += n
            if crossing.done >= crossing.length:
                del self._switching[room]
            out.append(replace(generated, audio=audio))
        return out

    def _crossfade_frames(self, condition: Any) -> int:
        """The room's transition crossfade: its live transition time, else the config's."""
        controls = condition.controls if isinstance(condition, ViewCondition) else None
        if controls is None or controls.transition_s is None:
            return self.config.crossfade_samples
        return round(controls.transition_s * self.sample_rate)

    # -- the wire ----------------------------------------------------------------

    @property
    def url(self) -> str:
        """Where the deployment answers."""
        return f"http://{self.ray.http_host}:{self.ray.http_port}{ROUTE}"

    def _request(self, state: Any, condition: Any, frames: int, now: float) -> ChunkRequest:
        if not isinstance(state, RemoteStream) or not isinstance(condition, ViewCondition):
            raise TypeError(f"expected RemoteStream and ViewCondition, got "
                            f"{type(state).__name__} and {type(condition).__name__}")
        playhead = self._playhead(state.room)
        ahead = 0.0 if playhead is None else (state.position - playhead) / self.sample_rate
        return ChunkRequest(room=state.room, stream=state.stream, previous=state.previous,
                            seed=state.seed, start_sample=state.start_sample,
                            position=state.position, frames=frames, view=condition.view,
                            controls=condition.controls, due=now + max(0.0, ahead))

    def _remote(self, wire: list[ChunkRequest]) -> list[ChunkReply | None]:
        """Send every request (due-soonest first), retry the failed ones while their deadline
        allows; None where a request could not be served remotely."""
        replies: list[ChunkReply | None] = [None] * len(wire)
        pending = sorted(range(len(wire)), key=lambda i: wire[i].due)
        for _attempt in range(2):
            sent: list[tuple[int, float, Future[ChunkReply]]] = [
                (i, time.perf_counter(), self._pool.submit(self._post, wire[i]))
                for i in pending]
            failed = []
            # one deadline for the round, not one per request: N slow replies must not hold
            # the engine's loop N times request_timeout_s
            give_up = time.perf_counter() + self.ray.request_timeout_s
            for i, began, future in sent:
                try:
                    reply = future.result(timeout=max(0.0, give_up - time.perf_counter()))
                except BackendUnreachable as exc:
                    self.failures["unreachable"] += 1
                    self._degrade(str(exc))
                    failed.append(i)
                    continue
                except TokenRefused as exc:  # every request would be: made here, and said so
                    self.failures["unauthorized"] += 1
                    self._degrade(str(exc), TOKEN_REFUSED)
                    failed.append(i)
                    continue
                except FutureTimeout:
                    self.failures["timeout"] += 1
                    failed.append(i)
                    continue
                except RequestRefused:  # the same request would be refused again: made here
                    self.failures["refused"] += 1
                    continue
                except (OSError, http.client.HTTPException, ValueError,
                        msgspec.DecodeError) as exc:
                    # a replica killed mid-request: the proxy answers 500 or drops us
                    self.failures[type(exc).__name__] += 1
                    failed.append(i)
                    continue
                self._count(reply, wire[i].room, time.perf_counter() - began)
                replies[i] = reply
            now = time.time()
            pending = [i for i in failed
                       if self.state == HEALTHY and now < wire[i].due - self.ray.deadline_slack_s]
            if not pending:
                break
            self.retries += len(pending)
        return replies

    def _connection(self) -> http.client.HTTPConnection:
        connection = getattr(self._connections, "http", None)
        if connection is None:
            connection = http.client.HTTPConnection(self.ray.http_host, self.ray.http_port,
                                                    timeout=self.ray.request_timeout_s)
            self._connections.http = connection
            self._opened.append(connection)
        return connection

    def _post(self, request: ChunkRequest) -> ChunkReply:
        """One request over a kept-alive connection of this thread."""
        body = msgspec.msgpack.encode(request)
        headers = {"Content-Type": "application/msgpack",
                   # Our router (room_placement) keeps a room on one replica: the
                   # room's stream stays where its state is.
                   "serve_multiplexed_model_id": request.room, **self._authorization}
        for fresh in (False, True):
            connection = self._connection()
            try:
                connection.request("POST", ROUTE, body=body, headers=headers)
                response = connection.getresponse()
                payload = response.read()
            except ConnectionRefusedError as exc:
                connection.close()
                raise BackendUnreachable(f"{self.url}: {exc}") from None
            except (OSError, http.client.HTTPException):
                connection.close()
                if fresh:
                    raise
                continue  # a kept-alive connection the server closed meanwhile: once more
            if response.status == 404:
                # the proxy has no such route: the application is not (or no longer) deployed
                raise BackendUnreachable(f"{self.url}: HTTP {response.status}")
            if response.status == 401:
                raise TokenRefused(self._token_refused())
            if response.status in (400, 413):  # refused (decode_request), naming the field
                raise RequestRefused(f"{self.url}: {payload[:300].decode(errors='replace')}")
            if response.status != 200:
                raise ValueError(f"{self.url}: HTTP {response.status}: {payload[:200]!r}")
            return msgspec.msgpack.decode(payload, type=ChunkReply)
        raise AssertionError("unreachable")

    def _count(self, reply: ChunkReply, room: str, round_trip: float) -> None:
        self.served_by[room] = reply.replica
        figures = self.replicas.setdefault(reply.replica, _ReplicaFigures())
        figures.requests += 1
        figures.missed += reply.missed
        figures.batches.append(reply.batch)
        figures.queue_s.append(reply.queue_s)
        self.reopened += reply.reopened
        self.hop_s.append(max(0.0, round_trip - reply.compute_s - reply.queue_s))

    # -- health ------------------------------------------------------------------

    def _token_refused(self) -> str:
        """Why a 401 came back, naming the field (never the token)."""
        sent = "a token" if self._authorization else "no token"
        return (f"{self.url}: HTTP 401: the deployment refused {sent}: engine.ray.token_file "
                f"(or engine.ray.token) must hold the same token here and for art2mus serve")

    def _degrade(self, reason: str, state: str = DEGRADED) -> None:
        """Fall back to local generation, loudly, and probe until Serve answers.

        Called by the engine's loop while healthy only; once degraded, the probe
        thread alone changes the state (to what it learns, or back to healthy).
        """
        if self.state != HEALTHY:
            return
        self._enter(state, reason)
        if not self._probing.is_set():
            self._probing.set()
            threading.Thread(target=self._probe, name="ray-serve-probe", daemon=True).start()

    def _enter(self, state: str, reason: str) -> None:
        self.state = state
        self._log("backend_degraded", backend="ray", state=state, reason=reason,
                  fallback="procedural")

    def probe(self) -> bool:
        """True when the deployment answers a GET (any replica) and takes our token."""
        return self._probe_status() == 200

    def _probe_status(self) -> int | None:
        """The HTTP status of a GET with our token; None when Serve cannot be reached."""
        connection = http.client.HTTPConnection(self.ray.http_host, self.ray.http_port,
                                                timeout=min(2.0, self.ray.request_timeout_s))
        try:
            connection.request("GET", ROUTE, headers=self._authorization)
            response = connection.getresponse()
            response.read()
            return response.status
        except (OSError, http.client.HTTPException):
            return None
        finally:
            connection.close()

    def _probe(self) -> None:
        try:
            while (status := self._probe_status()) != 200:
                # Ray back with another token, or the token fixed there and Ray gone since:
                # the state says which, so the technician fixes the right thing
                if status == 401 and self.state != TOKEN_REFUSED:
                    self._enter(TOKEN_REFUSED, self._token_refused())
                elif status is None and self.state == TOKEN_REFUSED:
                    self._enter(DEGRADED, f"{self.url}: no answer")
                time.sleep(self.ray.probe_every_s)
        finally:
            # cleared before the engine loop may degrade again, or that loop would find a
            # probe still running (this one, ending) and start none: degraded for good
            self._probing.clear()
        self._restored.set()  # the engine loop switches back on its next batch

    def backend_status(self) -> dict[str, Any]:
        """For the heartbeat: health; per replica the rooms it serves now, batch sizes, queue
        waits, deadlines missed."""
        return {
            "kind": "ray", "state": self.state, "url": self.url,
            "retries": self.retries, "local_chunks": self.local_chunks,
            "reopened": self.reopened, "failures": dict(self.failures),
            "hop_ms_p95": _p(self.hop_s, 95),
            "replicas": {name: {"requests": f.requests, "missed": f.missed,
                                "rooms": sorted(room for room, by in self.served_by.items()
                                                if by == name),
                                "batch_mean": (round(float(np.mean(f.batches)), 2)
                                               if f.batches else None),
                                "queue_ms_p95": _p(f.queue_s, 95)}
                         for name, f in self.replicas.items()},
        }

    def close(self) -> None:
        """Stop the client threads and close their connections."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        for connection in self._opened:
            connection.close()


# -- the deployment -----------------------------------------------------------------


def build_app(config: EngineConfig, token: str) -> Any:
    """The Serve application: a deployment of ``config``'s generator, with the replica
    count, autoscaling bounds, resources and batching of ``config.ray``; its replicas demand
    ``token`` ('' = none: ``config.ray.read_token()`` where ``art2mus serve`` runs)."""
    from ray import serve
    from ray.serve.config import RequestRouterConfig
    from starlette.requests import Request as HttpRequest
    from starlette.responses import Response

    bounds = config.ray
    scaling: dict[str, Any] = (
        {"num_replicas": bounds.replicas} if bounds.min_replicas == bounds.max_replicas else
        {"autoscaling_config": {"min_replicas": bounds.min_replicas,
                                "initial_replicas": bounds.replicas,
                                "max_replicas": bounds.max_replicas,
                                "target_ongoing_requests": bounds.max_batch_size}})

    # By path: Serve imports it in its proxy. (Ray's pydantic shim hides the field's type.)
    router = RequestRouterConfig(request_router_class=ROUTER)  # type: ignore[arg-type]

    @serve.deployment(name="generator",
                      ray_actor_options={"num_cpus": bounds.num_cpus_per_replica,
                                         "num_gpus": bounds.num_gpus_per_replica},
                      max_ongoing_requests=4 * bounds.max_batch_size,
                      request_router_config=router, **scaling)
    class GeneratorDeployment:
        """One replica: the real generator, its streams, batching by deadline."""

        def __init__(self, config_json: str, token: str) -> None:
            from engine.generators import make_generator, warm_up

            engine = EngineConfig.model_validate_json(config_json)
            generator = make_generator(engine)
            warm_up(generator)  # every bucket's CUDA graphs before the replica takes rooms
            self.core = ReplicaCore(generator, engine.ray.deadline_slack_s,
                                    limits=RequestLimits.of(engine, generator), token=token)

        @serve.multiplexed(max_num_models_per_replica=STREAMS_KEPT)
        async def room(self, room: str) -> str:
            # Nothing to load: registering the room here routes its next requests here.
            return room

        async def __call__(self, request: HttpRequest) -> Response:
            chunk = await self.core.admit(request.method, request.headers.get("authorization"),
                                          request.headers.get("content-length"),
                                          request.stream())
            if isinstance(chunk, HttpAnswer):  # refused (token, size, field) or a probe
                return Response(chunk.body, status_code=chunk.status,
                                media_type=chunk.media_type, headers=chunk.headers)
            room = serve.get_multiplexed_model_id()
            if room:
                await self.room(room)
            reply = await self.batch((chunk, time.time()))
            if isinstance(reply, RequestRefused):  # refused in the batch (counted there)
                return Response(str(reply).encode(), status_code=reply.status,
                                media_type="text/plain")
            return Response(msgspec.msgpack.encode(reply), media_type="application/msgpack")

        @serve.batch(max_batch_size=bounds.max_batch_size,
                     batch_wait_timeout_s=bounds.batch_wait_s)
        async def batch(self, items: list[tuple[ChunkRequest, float]]
                        ) -> list[ChunkReply | RequestRefused]:
            # the generator call blocks: off the replica's event loop, one batch at a time
            return await asyncio.to_thread(self.core.serve, items)

    # The token travels as an argument, so the replicas' machines need no token file.
    return GeneratorDeployment.bind(  # type: ignore[attr-defined]
        config.model_dump_json(), token)


def deploy(config: EngineConfig, num_cpus: int | None = None) -> str:
    """Start (or join, ``engine.ray.address``) the Ray cluster and deploy the generator;
    the URL the engine front reaches it at. ``num_cpus`` caps a local head. The token is
    read first: a token file that cannot be read stops it before Ray starts."""
    try:
        import ray
        from ray import serve
    except ImportError:
        from ground.errors import DependencyError

        raise DependencyError("art2mus serve needs Ray Serve: "
                              "pip install 'art2mus[ray]'") from None
    bounds = config.ray
    token = bounds.read_token()
    if bounds.address is None:
        ray.init(include_dashboard=False, num_cpus=num_cpus, logging_level=logging.WARNING)
    else:
        ray.init(address=bounds.address, logging_level=logging.WARNING)
    serve.start(http_options={"host": bounds.http_host, "port": bounds.http_port})
    serve.run(build_app(config, token), name=APP_NAME, route_prefix=ROUTE)
    return f"http://{bounds.http_host}:{bounds.http_port}{ROUTE}"


def shutdown() -> None:
    """Remove the deployment and leave the cluster (a local head stops with it)."""
    import ray
    from ray import serve

    try:
        serve.shutdown()
    finally:
        ray.shutdown()
