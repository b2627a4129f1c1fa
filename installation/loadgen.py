"""Rooms per engine: N virtual rooms against one real engine process.

``art2mus bench rooms`` (:mod:`installation.loadgen_cli`) measures how many
rooms one engine serves: it starts the engine as the supervisor does
(``python -m installation role engine --config FROZEN.json``) with N rooms in
its config, and plays every room from one thread of this process. Each
:class:`VirtualRoom` does what a room's capture and audio_out do on the wire:

- it publishes :class:`ArtworkView` messages (a real descriptor of a synthetic
  painting, or, where the model wants another width, a seeded unit vector of
  that width), re-sent every second as capture's heartbeat, and changes
  artwork at a realistic rate (one change per room per ``change_every_s``,
  staggered across rooms, seeded);
- it subscribes to its :class:`AudioChunk` messages and splices them into a
  :class:`~audio_out.timeline.TimelineBuffer`, audio_out's own jitter buffer,
  which a virtual sound card with no output latency reads block by block at
  real time (the wall clock) in audio_out's block size;
- it sends its :class:`PlaybackClock` at audio_out's ``clock_hz``, computed as
  :meth:`audio_out.player.Player.clock` does.

The warm-up (excluded from the figures) begins once every room plays: a
model's first calls (CUDA graph captures, compilation) may take minutes.
Per room it then measures underflows (the reader found no material where the
playhead needed it, counted by the timeline: underflows plus gaps jumped
while playing), the lead (queued material ahead of the playhead), chunks
received, the chunks' own generation time, and the transition latency: from
the moment a changed view is sent to the moment the first sample of material
made for the new artwork passes the playhead.

Where this sits in the floors: it needs capture (the descriptor, the
synthetic paintings), audio_out (the timeline) and the installation config
(to start a real engine), so it lives on the roof, beside the supervisor.

Cheap by design: one thread, one ZeroMQ socket of each kind for all rooms,
numpy reads of preallocated blocks. The one part of audio_out it leaves out is
the hold's loop search (an FFT correlation, about 2 ms per chunk, that only
shapes what a starved room sounds like; the underflow count is the same).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from audio_out.config import AudioOutConfig
from audio_out.timeline import TimelineBuffer
from ground.errors import ConfigError, RoleFailed
from ground.health import HEARTBEAT_FD_ENV
from ground.protocol import (
    PROTOCOL_VERSION,
    ArtworkView,
    AudioChunk,
    Message,
    PlaybackClock,
    encode,
)
from ground.transport import Inbox, make_socket
from installation.config import InstallationConfig, config_from_dict, freeze_config

#: The target the issue sets: no underflow, transition to audible p95 at most this long.
TRANSITION_P95_TARGET_S = 0.5
#: Rooms one H200 should serve with the diffusion generator (issue 18).
H200_TARGET_ROOMS = 256
#: Longest wait for the engine to say it is serving (a diffusion model loads first).
ENGINE_START_TIMEOUT_S = 300.0
#: Side of the synthetic paintings described for the views, px.
ARTWORK_SIDE = 256


@dataclass(frozen=True)
class LoadSpec:
    """One trial: how many rooms, for how long, how often they change artwork."""

    rooms: int
    seconds: float
    warmup_s: float = 5.0
    change_every_s: float = 30.0
    seed: int = 0
    artworks: int = 8
    view_every_s: float = 1.0
    settle_s: float = 3.0
    first_chunk_timeout_s: float = 600.0

    def __post_init__(self) -> None:
        if self.rooms < 1:
            raise ConfigError(f"bench rooms: --rooms expected >= 1, got {self.rooms}")
        for name in ("seconds", "change_every_s", "view_every_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"bench rooms: {name} expected a number > 0, got {value}")
        for name in ("warmup_s", "settle_s", "first_chunk_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"bench rooms: {name} expected a number >= 0, got {value}")
        if self.artworks < 2:
            raise ConfigError(f"bench rooms: artworks expected >= 2 (a change needs another), "
                              f"got {self.artworks}")


@dataclass(frozen=True)
class Artwork:
    """One painting as capture would describe it."""

    artwork_id: str
    encoder: str
    embedding: np.ndarray
    features: dict[str, float]


def make_artworks(count: int, seed: int, embedding_dim: int | None = None,
                  encoder: str | None = None) -> list[Artwork]:
    """``count`` synthetic paintings, described by capture's descriptor.

    With ``embedding_dim`` other than the descriptor's width (a diffusion model
    trained on another encoder's space), the embedding is a seeded unit vector
    of that width instead (no image encoder of that width runs here), named
    ``encoder`` (default ``loadgen-random-<dim>``); the features stay the
    descriptor's.
    """
    from capture.descriptor import ENCODER_NAME, describe_image
    from capture.synthetic.artworks import make_artwork

    artworks = []
    for index in range(count):
        descriptor = describe_image(make_artwork(index, seed, (ARTWORK_SIDE, ARTWORK_SIDE)))
        vector = np.asarray(descriptor.vector, np.float32)
        name = ENCODER_NAME
        if embedding_dim is not None and embedding_dim != vector.shape[-1]:
            rng = np.random.default_rng([seed, index, embedding_dim])
            vector = rng.standard_normal(embedding_dim).astype(np.float32)
            vector /= np.linalg.norm(vector)
            name = encoder or f"loadgen-random-{embedding_dim}"
        artworks.append(Artwork(f"artwork-{index}", name, vector,
                                {k: float(v) for k, v in descriptor.features.items()}))
    return artworks


@dataclass
class _Transition:
    artwork_id: str
    sent: float  # monotonic time the changed view was sent
    target: int | None = None  # first timeline sample of the new material, once it came


@dataclass
class RoomResult:
    """What one virtual room measured over the measured window."""

    room: str
    underflows: int
    dry_s: float
    chunks: int
    refused_chunks: int
    transitions_s: list[float]
    unfinished: int
    lead_min_s: float | None


class VirtualRoom:
    """One room's capture and audio_out, without a camera or a sound card.

    Owns a :class:`TimelineBuffer` read at real time; :meth:`view_due`,
    :meth:`on_chunk`, :meth:`play` and :meth:`clock` are called by
    :class:`LoadGenerator`'s loop (no sockets here, so a test can drive it).
    """

    def __init__(self, room: str, index: int, artworks: list[Artwork], spec: LoadSpec,
                 audio_out: AudioOutConfig, sample_rate: int, channels: int,
                 buffer_s: float, start: float) -> None:
        self.room = room
        self.artworks = artworks
        self.spec = spec
        self.sample_rate = sample_rate
        self.channels = channels
        block = audio_out.block_size
        self.timeline = TimelineBuffer(
            capacity_frames=max(round(buffer_s * sample_rate), 4 * block),
            channels=channels, block_frames=block, max_block_frames=block,
            hold_frames=round(audio_out.hold_s * sample_rate),
            fade_frames=max(1, round(audio_out.fade_s * sample_rate)),
            resume_frames=max(1, round(audio_out.resume_s * sample_rate)),
            loop_frames=round(audio_out.hold_loop_s * sample_rate),
            loop_crossfade_frames=round(audio_out.hold_loop_crossfade_s * sample_rate),
            hold_decay_db=audio_out.hold_decay_db,
            loop_search_frames=0,  # see the module docstring: nobody hears this hold
        )
        self._rng = np.random.default_rng([spec.seed, index])
        self.current = int(self._rng.integers(len(artworks)))
        self.seq = 0
        self._next_view = start
        self._next_change: float | None = None
        self._change_offset = float(self._rng.uniform(0.0, spec.change_every_s))
        self.pending: _Transition | None = None
        # (wall time of the last read, playhead after it, frames read); 0.0 = never read
        self._snapshot: tuple[float, int, int] = (0.0, 0, 0)
        self.measuring = False
        self.changing = False
        self.chunks = 0
        self.refused = 0
        self.generation_s: list[float] = []
        self.transitions_s: list[float] = []
        self.unfinished = 0
        self.lead_min_s: float | None = None
        self._base = (0, 0, 0, 0)  # underflows, gaps, held, silent at the measure start

    # -- capture's side ------------------------------------------------------

    def start_measuring(self, now: float) -> None:
        """From now on count underflows, chunks and leads, and change artwork."""
        tl = self.timeline
        self._base = (tl.underflows, tl.gaps, tl.held_frames, tl.silent_frames)
        self.measuring = self.changing = True
        self.chunks = self.refused = 0
        self.generation_s.clear()
        self._next_change = now + self._change_offset

    def stop_changing(self) -> None:
        """No more artwork changes (the end of the measured window)."""
        self.changing = False

    def view_due(self, now: float) -> ArtworkView | None:
        """The view to send now: a changed artwork when one is due, else capture's
        heartbeat re-send, else None."""
        changed = False
        if self.changing and self._next_change is not None and now >= self._next_change:
            step = 1 + int(self._rng.integers(len(self.artworks) - 1))
            self.current = (self.current + step) % len(self.artworks)
            self._next_change += self.spec.change_every_s
            changed = True
        elif now < self._next_view:
            return None
        self._next_view = now + self.spec.view_every_s
        self.seq += 1
        art = self.artworks[self.current]
        if changed:
            if self.pending is not None:
                self.unfinished += 1  # superseded before it was heard
            self.pending = _Transition(art.artwork_id, now)
        return ArtworkView.of_artwork(self.room, self.seq, time.time(), art.artwork_id, 1.0,
                                      art.encoder, art.embedding, art.features)

    # -- audio_out's side ----------------------------------------------------

    def on_chunk(self, chunk: AudioChunk) -> None:
        """Splice one chunk into the timeline (audio_out's network thread)."""
        audio = chunk.audio.to_numpy()
        if chunk.sample_rate != self.sample_rate or audio.shape[1:] != (self.channels,):
            self.refused += 1  # audio_out would resample or refuse; the bench does not
            return
        result = self.timeline.write_chunk(chunk.start_sample, audio, chunk.crossfade)
        if self.measuring:
            self.chunks += 1
            self.generation_s.append(chunk.generation_s)
        pending = self.pending
        if pending is None or chunk.artwork_id != pending.artwork_id or not result.accepted:
            return
        first = max(result.written_from, chunk.start_sample)
        if pending.target is None or (result.kind == "replace" and first <= pending.target):
            pending.target = first

    def play(self, block_time: float, wall: float, out: np.ndarray) -> None:
        """Read one block as the sound card's callback would at monotonic ``block_time``
        (``wall``: the same instant on ``time.time()``); ``out`` is scratch."""
        tl = self.timeline
        before = tl.playhead
        tl.read_into(out)
        after = tl.playhead
        self._snapshot = (wall, after, out.shape[0])
        pending = self.pending
        if pending is not None and pending.target is not None and pending.target < after:
            heard = block_time + max(0, pending.target - before) / self.sample_rate
            self.transitions_s.append(heard - pending.sent)
            self.pending = None

    def clock(self) -> PlaybackClock:
        """The playback clock audio_out would send now (:meth:`Player.clock`, no latency)."""
        tl = self.timeline
        wall, playhead, frames = self._snapshot
        state = tl.state
        if wall == 0.0 or state != "playing":
            wall_time, playhead = time.time(), tl.playhead
        else:
            wall_time = wall + frames / self.sample_rate
        if self.measuring and state == "playing":
            lead = (tl.buffered_until - tl.playhead) / self.sample_rate
            self.lead_min_s = lead if self.lead_min_s is None else min(self.lead_min_s, lead)
        return PlaybackClock(v=PROTOCOL_VERSION, room=self.room, sample_rate=self.sample_rate,
                             playhead=playhead, buffered_until=tl.buffered_until,
                             wall_time=wall_time, underflows=tl.underflows, state=state)

    def result(self) -> RoomResult:
        """The figures measured since :meth:`start_measuring`."""
        tl = self.timeline
        underflows0, gaps0, held0, silent0 = self._base
        dry = (tl.held_frames - held0) + (tl.silent_frames - silent0)
        return RoomResult(
            room=self.room,
            underflows=(tl.underflows - underflows0) + (tl.gaps - gaps0),
            dry_s=round(dry / self.sample_rate, 3), chunks=self.chunks,
            refused_chunks=self.refused,
            transitions_s=[round(t, 4) for t in self.transitions_s],
            unfinished=self.unfinished + (1 if self.pending is not None else 0),
            lead_min_s=None if self.lead_min_s is None else round(self.lead_min_s, 3))


def _percentile(values: list[float], q: float) -> float | None:
    return None if not values else float(np.percentile(np.asarray(values), q))


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 1)


@dataclass
class TrialResult:
    """The figures of one trial of N rooms (JSON via :meth:`to_dict`).

    Times in ``*_ms`` are milliseconds, ``*_s`` seconds, ``*_pct`` percent of one core;
    ``first_chunks_s`` is how long after the start every room was playing (None: some
    room got nothing within ``first_chunk_timeout_s``); the warm-up starts then.
    """

    rooms: int
    seconds: float
    measured_s: float
    generator: str
    underflows: int
    dry_s: float
    transitions: int
    unfinished_transitions: int
    transition_ms: dict[str, float | None]
    lead_min_s: float | None
    chunks: int
    rooms_without_chunks: int
    chunk_ms: dict[str, float | None]
    engine_cpu_pct: float | None
    loadgen_cpu_pct: float
    loadgen_late_ms_max: float
    dropped_sends: int
    first_chunks_s: float | None
    passed: bool
    per_room: list[RoomResult] = field(default_factory=list)
    #: From the engine's stats events (every 10 s and one as it stops), from the last one
    #: before the measured window to the end: the share of the engine's time inside the
    #: generator and chunks made per generating turn (how full its batches are).
    engine_generating: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Everything, per room included, as plain JSON values."""
        return asdict(self)


def summarise(spec: LoadSpec, generator: str, rooms: list[RoomResult],
              generation_s: list[float], measured_s: float, engine_cpu_s: float | None,
              loadgen_cpu_s: float, late_s: float, dropped: int,
              first_chunks_s: float | None = None) -> TrialResult:
    """Roll the rooms' figures into one trial; ``passed`` is the issue's target: no
    underflow, every transition heard, transition p95 <= 500 ms, every room got chunks."""
    transitions = [t for r in rooms for t in r.transitions_s]
    leads = [r.lead_min_s for r in rooms if r.lead_min_s is not None]
    p95 = _percentile(transitions, 95)
    underflows = sum(r.underflows for r in rooms)
    unfinished = sum(r.unfinished for r in rooms)
    without = sum(1 for r in rooms if r.chunks == 0)
    passed = (underflows == 0 and unfinished == 0 and without == 0
              and (p95 is None or p95 <= TRANSITION_P95_TARGET_S))
    return TrialResult(
        rooms=spec.rooms, seconds=spec.seconds, measured_s=round(measured_s, 2),
        generator=generator, underflows=underflows,
        dry_s=round(sum(r.dry_s for r in rooms), 3), transitions=len(transitions),
        unfinished_transitions=unfinished,
        transition_ms={"p50": _ms(_percentile(transitions, 50)), "p95": _ms(p95),
                       "max": _ms(max(transitions) if transitions else None)},
        lead_min_s=round(min(leads), 3) if leads else None,
        chunks=sum(r.chunks for r in rooms), rooms_without_chunks=without,
        chunk_ms={"median": _ms(_percentile(generation_s, 50)),
                  "p95": _ms(_percentile(generation_s, 95))},
        engine_cpu_pct=(None if engine_cpu_s is None
                        else round(100.0 * engine_cpu_s / measured_s, 1)),
        loadgen_cpu_pct=round(100.0 * loadgen_cpu_s / measured_s, 1),
        loadgen_late_ms_max=round(late_s * 1000.0, 1), dropped_sends=dropped,
        first_chunks_s=None if first_chunks_s is None else round(first_chunks_s, 2),
        passed=passed, per_room=rooms)


class LoadGenerator:
    """Every virtual room of one trial, played from one thread over three sockets."""

    def __init__(self, config: InstallationConfig, spec: LoadSpec, artworks: list[Artwork],
                 context: zmq.Context | None = None) -> None:
        self.config = config
        self.spec = spec
        self.context = context or zmq.Context.instance()
        engine = config.engine
        template = config.rooms[0].audio_out
        self.block_frames = template.block_size
        self.clock_period = 1.0 / template.clock_hz
        self.sample_rate = engine.sample_rate
        # Room for what the engine keeps queued (lead, a chunk, a transition's crossfade
        # and margin) twice over, not audio_out's default 30 s: N rings must fit in memory.
        needed = 2 * (engine.lead_s + engine.chunk_s + engine.transition_crossfade_s
                      + engine.transition_margin_s)
        buffer_s = min(template.buffer_s, max(4.0, needed))
        start = time.monotonic()
        self.rooms = [VirtualRoom(room.id, i, artworks, spec, template, engine.sample_rate,
                                  engine.channels, buffer_s, start)
                      for i, room in enumerate(config.rooms)]
        self.by_id = {room.room: room for room in self.rooms}
        self._out = np.zeros((self.block_frames, engine.channels), np.float32)
        net = config.network
        ids = [room.room for room in self.rooms]
        self.views = make_socket(self.context, zmq.PUB, net.views, bind=False,
                                 hwm=max(1000, 4 * len(ids)))
        self.chunks = Inbox(make_socket(self.context, zmq.SUB, net.chunks, bind=False,
                                        subscribe=ids, max_bytes=net.max_message_bytes,
                                        hwm=max(1000, 8 * len(ids))), net.max_message_bytes)
        # As audio_out's: IMMEDIATE, a short queue per room (all rooms share this socket).
        self.clocks = make_socket(self.context, zmq.PUSH, net.clock, bind=False,
                                  hwm=10 * len(ids), immediate=True)
        self.dropped_sends = 0
        self._finish = threading.Event()  # finish(): end the run early
        self.measured_from: float | None = None  # wall time the measured window began

    def run(self, engine_cpu: Callable[[], float | None] = lambda: None) -> TrialResult:
        """Warm up, measure ``spec.seconds``, settle pending transitions; the figures."""
        spec = self.spec
        sr = self.sample_rate
        block_s = self.block_frames / sr
        poller = zmq.Poller()
        poller.register(self.chunks.socket, zmq.POLLIN)
        t0 = time.monotonic()
        wall0 = time.time()
        # The warm-up starts once every room plays (a model's first calls, CUDA graph
        # captures or compilation, can take minutes), or after first_chunk_timeout_s.
        measure_at = change_until = end_by = math.inf
        ready_by = t0 + spec.first_chunk_timeout_s
        first_chunks_s: float | None = None
        n = len(self.rooms)
        next_clock = [t0 + self.clock_period * i / n for i in range(n)]
        block = 0
        measuring = False
        late = 0.0
        cpu0 = engine0 = 0.0
        generation: list[float] = []
        while True:
            now = time.monotonic()
            if measure_at == math.inf:
                playing = all(r.timeline.state != "starting" for r in self.rooms)
                if playing or now >= ready_by:
                    first_chunks_s = now - t0 if playing else None
                    measure_at = now + spec.warmup_s
                    change_until = measure_at + spec.seconds
                    end_by = change_until + spec.settle_s
            if not measuring and now >= measure_at:
                measuring = True
                self.measured_from = time.time()
                cpu0 = time.process_time()
                engine0 = engine_cpu() or 0.0
                for room in self.rooms:
                    room.start_measuring(now)
            finishing = self._finish.is_set()
            if measuring and (now >= change_until or finishing):
                for room in self.rooms:
                    room.stop_changing()
                if now >= end_by or finishing or all(r.pending is None for r in self.rooms):
                    break
            for message in self.chunks.drain(10_000):
                target = self.by_id.get(message.room)
                if isinstance(message, AudioChunk) and target is not None:
                    target.on_chunk(message)
            now = time.monotonic()
            while t0 + block * block_s <= now:
                block_time = t0 + block * block_s
                if measuring:
                    late = max(late, now - block_time)
                for room in self.rooms:
                    room.play(block_time, wall0 + (block_time - t0), self._out)
                block += 1
            for i, room in enumerate(self.rooms):
                if now >= next_clock[i]:
                    next_clock[i] += self.clock_period
                    if next_clock[i] < now:
                        next_clock[i] = now + self.clock_period
                    self._send(self.clocks, room.clock())
                view = room.view_due(now)
                if view is not None:
                    self._send(self.views, view)
            timeout = (t0 + block * block_s - time.monotonic()) * 1000.0
            poller.poll(max(0, int(timeout)))
        ended = time.monotonic()
        engine_s = engine_cpu()
        for room in self.rooms:
            generation += room.generation_s
        return summarise(spec, self.config.engine.generator, [r.result() for r in self.rooms],
                         generation, ended - measure_at,
                         None if engine_s is None else engine_s - engine0,
                         time.process_time() - cpu0, late, self.dropped_sends, first_chunks_s)

    def _send(self, socket: zmq.Socket, message: Message) -> None:
        """Send without blocking, counting what the queue refused.

        Copying, unlike :func:`ground.transport.send`: a zero-copy frame costs about
        50 us to set up, which for a small message is more than the copy, and this one
        thread sends N rooms' clocks twenty times a second.
        """
        try:
            socket.send_multipart(encode(message), flags=zmq.NOBLOCK)
        except zmq.Again:
            self.dropped_sends += 1

    def finish(self) -> None:
        """End :meth:`run` (from another thread) as soon as it is measuring: a test that has
        seen what it waited for need not play out ``spec.seconds``."""
        self._finish.set()

    def close(self) -> None:
        """Close the sockets (not the shared context)."""
        for socket in (self.views, self.chunks.socket, self.clocks):
            socket.close(linger=0)


def bench_config(base: InstallationConfig, rooms: int, folder: Path,
                 generator: str | None = None, model: Path | None = None) -> InstallationConfig:
    """``base`` with N rooms (its first room's sections copied), loopback ipc endpoints in
    ``folder``, output there, no recording, no metrics, no CurveZMQ; the generator and
    model folder overridden when given."""
    data = base.to_toml_dict()
    template = data["rooms"][0]
    audio = {k: v for k, v in template.get("audio_out", {}).items()
             if k not in ("record", "midi_file", "midi_port", "stop_after_s")}
    data["rooms"] = [{**template, "id": f"room-{i + 1}", "seed": i + 1, "audio_out": audio}
                     for i in range(rooms)]
    data["network"] = {**data.get("network", {}),
                       **{name: f"ipc://{folder}/{name}"
                          for name in ("views", "chunks", "clock", "control")}}
    data["installation"] = {**data.get("installation", {}), "output_dir": str(folder / "out")}
    data["metrics"] = {**data.get("metrics", {}), "port": 0}
    data["security"] = {**data.get("security", {}), "curve": False}
    data["supervisor"] = {k: v for k, v in data.get("supervisor", {}).items() if k != "rooms"}
    engine = data.setdefault("engine", {})
    if generator is not None:
        engine["generator"] = generator
    if model is not None:
        engine["diffusion"] = {**engine.get("diffusion", {}), "model": str(model)}
    return config_from_dict(data, source="bench rooms")


class EngineProcess:
    """The engine role as the supervisor starts it, on a frozen copy of ``config``."""

    def __init__(self, config: InstallationConfig, folder: Path) -> None:
        self.config = config
        self.folder = folder
        self.log_path = folder / "engine.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = ENGINE_START_TIMEOUT_S) -> None:
        """Start it and wait until it logs ``serving``; RoleFailed (with its log's tail)
        when it exits or stays silent first."""
        from installation.roles import events_path

        frozen = freeze_config(self.config, self.folder / "config.json")
        env = {k: v for k, v in os.environ.items() if k != HEARTBEAT_FD_ENV}
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "installation", "role", "engine", "--config", str(frozen)],
                stdout=log, stderr=subprocess.STDOUT, env=env)
        events = events_path(self.config, "engine", None)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RoleFailed(f"bench rooms: the engine exited with code "
                                 f"{self.process.returncode} before serving; {self._tail()}")
            if _logged(events, "serving"):
                return
            time.sleep(0.1)
        self.stop()
        raise RoleFailed(f"bench rooms: the engine did not start serving within "
                         f"{timeout_s:g} s; {self._tail()}")

    def _tail(self) -> str:
        try:
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return "no log"
        return f"last lines of {self.log_path}: " + " | ".join(lines[-5:])

    def cpu_seconds(self) -> float | None:
        """User + system CPU time the engine has used (Linux /proc; None elsewhere)."""
        if self.process is None:
            return None
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def generating(self, since: float | None = None) -> dict[str, float] | None:
        """From the engine's ``stats`` events (it logs one as it stops), between the last
        one logged before ``since`` (wall time; serving's start where none) and the final
        one: the share of that span the engine spent inside the generator and chunks made
        per generating turn; None where there is no stats event."""
        from ground.events import iter_events
        from installation.roles import events_path

        try:  # the rotated files too: a long run's log has rotated
            stats = [event for event in iter_events(events_path(self.config, "engine", None))
                     if event.get("kind") == "stats" and "generating_s" in event]
        except OSError:
            return None
        if not stats:
            return None
        zero = {"time": None, "serving_s": 0.0, "generating_s": 0.0, "generating_turns": 0,
                "chunks_made": 0}
        first = next((e for e in reversed(stats[:-1])
                      if since is not None and e["time"] <= since), zero)
        last = stats[-1]
        span = last["serving_s"] - first["serving_s"]
        turns = last["generating_turns"] - first["generating_turns"]
        if span <= 0.0:
            return None
        return {"span_s": round(span, 2),
                "busy_share": round((last["generating_s"] - first["generating_s"]) / span, 3),
                "chunks_per_turn": round((last["chunks_made"] - first["chunks_made"]) / turns,
                                         2) if turns else 0.0}

    def stop(self) -> None:
        """SIGTERM (the engine saves and closes), then kill after 20 s; idempotent."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5.0)


def _logged(path: Path, kind: str) -> bool:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return False
    for line in text.splitlines():
        try:
            if json.loads(line).get("kind") == kind:
                return True
        except ValueError:
            continue
    return False


def embedding_for(config: InstallationConfig) -> tuple[int | None, str | None]:
    """The embedding width (and encoder name, if recorded) the configured generator wants;
    ``(None, None)``: the descriptor's own."""
    if config.engine.generator != "diffusion":
        return None, None
    from engine.generators.diffusion.model import ModelSpec

    spec = ModelSpec.load(Path(config.engine.diffusion.model))
    # Folders that record their encoder (name, width) get views that claim it: the engine
    # refuses others, and a load test needs the work a real view causes, not a refusal.
    width = getattr(spec, "encoder_width", spec.embedding_dim)
    return int(width), str(getattr(spec, "encoder_name", "")) or None


def run_trial(base: InstallationConfig, spec: LoadSpec, generator: str | None = None,
              model: Path | None = None, keep: Path | None = None) -> TrialResult:
    """Start an engine for ``spec.rooms`` rooms, play them, stop it; the figures.

    The engine's config, log and events go to a temporary folder (or ``keep``).
    """
    with tempfile.TemporaryDirectory(prefix="a2m-rooms-") as scratch:
        folder = Path(keep) if keep is not None else Path(scratch)
        folder.mkdir(parents=True, exist_ok=True)
        config = bench_config(base, spec.rooms, folder, generator, model)
        dim, encoder = embedding_for(config)
        artworks = make_artworks(spec.artworks, spec.seed, dim, encoder)
        engine = EngineProcess(config, folder)
        engine.start()
        loadgen = LoadGenerator(config, spec, artworks)
        try:
            result = loadgen.run(engine.cpu_seconds)
        finally:
            loadgen.close()
            engine.stop()
        result.engine_generating = engine.generating(loadgen.measured_from)
        return result


def find_max(trial: Callable[[int], TrialResult], start: int = 1, limit: int = 4096
             ) -> tuple[int, list[TrialResult]]:
    """The largest N whose trial passes, and every trial run.

    Doubles N from ``start`` until a trial fails (or N passes ``limit``), then
    bisects between the last pass (0 if ``start`` failed) and the first failure.
    """
    trials: list[TrialResult] = []
    good, bad = 0, None
    n = max(1, start)
    while n <= limit:
        result = trial(n)
        trials.append(result)
        if not result.passed:
            bad = n
            break
        good = n
        n *= 2
    if bad is None:
        return good, trials
    while bad - good > 1:
        middle = (good + bad) // 2
        result = trial(middle)
        trials.append(result)
        if result.passed:
            good = middle
        else:
            bad = middle
    return good, trials
