"""The engine role: one process serving every room over ZeroMQ.

It binds the views (SUB), chunks (PUB) and clock (PULL) endpoints, keeps a
:class:`~engine.streaming.RoomSession` per configured room, and on every turn
of its loop drains its inboxes, then generates at most one due chunk per
room, most urgent first, so that no room starves another. Where the generator
batches (the diffusion model), the rooms due now and those due within
``engine.batch_window_s`` are generated in one call
(:func:`engine.streaming.generate_due`), each with its own stream state.

Around that loop: Control ``set`` messages reach the room sessions as live
parameters; each turn ticks the sessions (view timeout, rate-limited
re-planning); a heartbeat with every room's state goes to the supervisor
(whether an audio_out listens to it and when its clock last came, so a room
nobody hears is not shown healthy); and each room's last view, controls and
the time capture last spoke are saved to ``state_path`` so that an engine
restarted after a crash resumes the artwork each room was playing instead of
starting from an empty wall (a file it cannot take is set aside, never fatal). With a
``beat_out`` (:mod:`engine.beats`), each turn also hands it every room's bar
grid and playhead estimate, and it sends beats, bars, key and chords on OSC.

No peer can block the loop: each turn reads at most :data:`FRAMES_PER_TURN`
frames per socket (plus :data:`FRAMES_PER_ROOM` per room for views, and
:data:`CLOCKS_PER_ROOM` for clocks, of which each room's newest is applied, and
:data:`SUBSCRIPTIONS_PER_TURN` subscription frames).

The chunks XPUB is in ZeroMQ's manual mode (``ZMQ_XPUB_MANUAL``): it sends to a
subscriber only the topics the engine subscribes it to, and the engine takes only
a configured room id (what audio_out subscribes to) or ``""`` (a tap on every
room); anything else is counted as dropped (:class:`RoomSubscriptions`). ZeroMQ
still files every topic a peer sends, taken or not, for as long as that peer is
connected (libzmq 4.3.5 keeps a second trie for manual mode, to unsubscribe a
peer that leaves), and nothing in it bounds how many: a peer sending 20,000 new
topics a second grew the engine by 2.4 GB in a minute, and when it left, ZeroMQ
walked them all in the loop's thread for five seconds. So the engine counts what
it refused and its peers still hold, and past :data:`SUBSCRIPTION_FLOOD_TOPICS`
topics or :data:`SUBSCRIPTION_FLOOD_BYTES` it closes the socket (ZeroMQ frees the
topics in its reaper thread, not the loop's) and binds a new one
(``subscription_flood``); the rooms' audio_outs reconnect and subscribe again
within a reconnect interval (0.1 s), inside their lead. The peer flooding can do
the same again: against a peer on the LAN, CurveZMQ (``[security] curve``) or a
firewall is the remedy, this only bounds what it costs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import statistics
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import zmq

from engine.beats import BeatOut, MidiClockOut, grid_of
from engine.config import EngineRoleConfig
from engine.generators import Generator, can_batch, make_generator, warm_up
from engine.streaming import RoomControls, RoomSession, StartTimes, generate_due
from ground.errors import ConfigError, DependencyError
from ground.events import EventSink
from ground.health import Heartbeat
from ground.jsonlog import WriteFailures
from ground.metrics import Metrics
from ground.protocol import (
    ArtworkView,
    Control,
    DropCounter,
    PlaybackClock,
    ProtocolError,
    seconds_of_day,
)
from ground.shell import RoleShell
from ground.transport import make_socket, send

log = logging.getLogger(__name__)

STATS_EVERY_S = 10.0
#: Generator calls whose wall time the heartbeat's ``chunk_ms`` is the median of.
CHUNK_TIMES_KEPT = 32
#: Recent batch sizes the heartbeat's ``batch`` lists.
BATCHES_KEPT = 8
#: Frames read from each socket per turn of the loop: a flood waits in
#: ZeroMQ's queue (bounded by its high-water mark) instead of holding the loop.
FRAMES_PER_TURN = 100
#: ... plus this many per room for views: a view is sent about once a second.
FRAMES_PER_ROOM = 4
#: ... and this many per room for clocks: a room's audio_out reports 20 times a second
#: (``audio_out.clock_hz``), and a turn that waits on a batch of windows (most of a
#: second on a busy GPU) must read every report that came meanwhile, or clocks queue up
#: and each room's playhead estimate falls seconds behind (found by ``art2mus bench
#: rooms`` with the simulated H200: half the clocks were refused, the rest read late).
#: Only the newest per room is applied.
CLOCKS_PER_ROOM = 64
#: Longest topic a subscription may carry: a room id (RoomConfig's pattern).
MAX_TOPIC_BYTES = 64
#: Subscription frames read from the chunks XPUB per turn (a few microseconds each): in
#: manual mode ZeroMQ queues every one, a repeated topic too, until it is read.
SUBSCRIPTIONS_PER_TURN = 1000
#: Subscriptions the engine refused (no room) that its peers may hold on the chunks socket,
#: and their topics' bytes, before the socket is made again: ZeroMQ keeps ~70 bytes per
#: topic byte (200,000 topics of 48 bytes took 690 MB), so at most ~70 MB. A room's
#: audio_out sends one subscription per connection; a machine configured with a room
#: this engine does not serve, one per reconnect, released when it goes.
SUBSCRIPTION_FLOOD_TOPICS = 4096
SUBSCRIPTION_FLOOD_BYTES = 1 << 20
#: Seconds a room may go without an audio_out subscribed to its chunks (health 0: nobody
#: hears it), or without a PlaybackClock (health 0.5: the engine cannot follow its
#: playhead), before its status says so. Twice the time a room takes an audio_out that
#: stopped reporting for gone (``engine.streaming.INSTANCE_SILENT_S``, 5 s), and longer
#: than audio_out takes to start and subscribe beside a starting engine on a busy machine:
#: a restart is not a fault, a wrong CurveZMQ key or an unreachable engine is.
LISTENER_GRACE_S = 10.0


class Subscription(NamedTuple):
    """A subscription frame the engine takes: its topic, whether it subscribes (else
    unsubscribes), and whether it changed which rooms are listened to."""

    topic: str
    subscribe: bool
    changed: bool


class RoomSubscriptions:
    """Which rooms some audio_out listens to, from the chunks XPUB's subscription frames.

    A frame is a flag byte (1 subscribe, 0 unsubscribe) and a topic. Only a
    configured room id or ``""`` (a tap on every room) is taken; every other
    frame is dropped and counted by reason, so ``topics`` never holds more
    than the rooms plus one.

    In ZeroMQ's manual mode every peer's (un)subscription comes up, a topic
    two peers share twice, and an unsubscription for each topic of a peer that
    leaves: a room is listened to while its subscriptions outnumber its
    unsubscriptions. (A peer that subscribes one topic twice is counted twice and
    unsubscribed once when it goes: its room stays listened to, which costs a room
    generated for nobody, never one silenced.) The subscriptions refused that peers
    still hold (:attr:`held`, :attr:`held_bytes`) are counted the same way, for
    :attr:`flooded`.
    """

    def __init__(self, rooms: list[str]) -> None:
        self.rooms = frozenset(rooms)
        self.topics: set[str] = set()
        self.dropped = DropCounter()
        self._listeners: Counter[str] = Counter()  # subscriptions to each topic taken
        self._refused: Counter[bytes] = Counter()  # subscriptions refused, still held
        self.held = 0  # subscriptions refused that peers still hold
        self.held_bytes = 0  # ... and their topics' bytes

    def frame(self, frame: bytes) -> Subscription | None:
        """Apply one frame: the subscription taken, or None (dropped and counted)."""
        if not frame or frame[0] not in (0, 1):
            self.dropped.add(ProtocolError("bad-subscription", "expected flag byte 0 or 1"))
            return None
        raw, subscribe = bytes(frame[1:]), frame[0] == 1
        if len(raw) > MAX_TOPIC_BYTES:
            self._hold(raw, subscribe)
            self.dropped.add(ProtocolError(
                "too-long", f"topic of {len(raw)} bytes, a room id has at most {MAX_TOPIC_BYTES}"))
            return None
        try:
            topic = raw.decode("utf-8")
        except UnicodeDecodeError:
            topic = None
        if topic is None or (topic and topic not in self.rooms):
            self._hold(raw, subscribe)
            self.dropped.add(ProtocolError("unknown-room", f"topic {raw[:MAX_TOPIC_BYTES]!r}"))
            return None
        if subscribe:
            self._listeners[topic] += 1
            changed = topic not in self.topics
            self.topics.add(topic)
            return Subscription(topic, True, changed)
        if self._listeners[topic] > 0:
            self._listeners[topic] -= 1
        changed = topic in self.topics and self._listeners[topic] == 0
        if changed:
            self.topics.discard(topic)
        return Subscription(topic, False, changed)

    def listeners(self, topic: str) -> int:
        """Subscriptions to ``topic`` (a room, or ``""``) that peers hold now."""
        return self._listeners[topic]

    def _hold(self, raw: bytes, subscribe: bool) -> None:
        """Count a refused topic ZeroMQ now holds (or, unsubscribed, no longer does)."""
        if subscribe:
            self._refused[raw] += 1
            self.held += 1
            self.held_bytes += len(raw)
        elif self._refused[raw] > 0:  # (an unsubscription of nothing held changes nothing)
            self._refused[raw] -= 1
            if self._refused[raw] == 0:
                del self._refused[raw]
            self.held -= 1
            self.held_bytes -= len(raw)

    @property
    def flooded(self) -> bool:
        """True when peers hold more refused subscriptions than
        :data:`SUBSCRIPTION_FLOOD_TOPICS` or :data:`SUBSCRIPTION_FLOOD_BYTES`."""
        return (self.held > SUBSCRIPTION_FLOOD_TOPICS
                or self.held_bytes > SUBSCRIPTION_FLOOD_BYTES)

    def forget(self) -> None:
        """Every peer has gone (the socket was made again): nothing listens, nothing held."""
        self.topics.clear()
        self._listeners.clear()
        self._refused.clear()
        self.held = self.held_bytes = 0


def _said(error: BaseException) -> str:
    """An exception for an event: its message (or its type where it has none), cut short."""
    text = str(error) or type(error).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def instrument_names(described: dict[str, Any]) -> list[str] | None:
    """The instrument names in a generator's ``describe()`` record, or None where it has none.

    ``instruments`` is a list of names, or (the procedural generator) a
    mapping of musical roles to records with a ``name``.
    """
    instruments = described.get("instruments")
    if isinstance(instruments, dict):
        instruments = [record.get("name") if isinstance(record, dict) else record
                       for record in instruments.values()]
    if not isinstance(instruments, list):
        return None
    return [str(name) for name in instruments if name]


def gpu_memory_mb() -> float | None:
    """CUDA memory torch has allocated in this process, MiB; None unless a CUDA generator
    runs here (torch already imported and CUDA initialised: this never imports torch)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not torch.cuda.is_initialized():
            return None
        return round(torch.cuda.memory_allocated() / 2**20, 1)
    except (AttributeError, RuntimeError):  # a torch without CUDA support, a lost device
        return None


class EngineServer:
    """Room sessions plus the sockets that feed them."""

    def __init__(
        self,
        config: EngineRoleConfig,
        log_event: EventSink,
        generator: Generator | None = None,
        context: zmq.Context | None = None,
        heartbeat: Heartbeat | None = None,
        metrics: Metrics | None = None,
        state_path: Path | None = None,
        clock: Callable[[], float] | None = None,
        beat_out: BeatOut | None = None,
        monotonic: Callable[[], float] | None = None,
    ) -> None:
        """``clock``: wall time (the state file's times, which outlive a reboot);
        ``monotonic``: what durations and the rooms' timelines are measured on (a wall
        clock set back ten minutes froze every knob for ten minutes, and one set forward
        timed the painting in view out). Tests pass one fake clock for both."""
        self.config = config
        self._clock_now = clock or time.time
        self._monotonic = monotonic or clock or time.monotonic
        self.beat_out = beat_out
        self.log_event = log_event
        # engine.backend = "ray": the generator runs in a Ray Serve deployment; this process
        # keeps the sessions and sockets and asks it for chunks (engine.ray_serve).
        self.backend: Any = None
        if generator is None and config.engine.backend == "ray":
            from engine.ray_serve import RayGenerator

            generator = self.backend = RayGenerator(
                config.engine, log_event, lambda room: self.sessions[room].playhead_estimate())
        if generator is None:
            generator = make_generator(config.engine)
            began = time.monotonic()
            # the supervisor hears the engine while it captures (hang_after_s still holds)

            def beating() -> None:
                if heartbeat is not None:
                    heartbeat.beat({"warming": True})

            warmed = warm_up(generator, beating)
            if warmed:
                log_event("warmed_up", graphs=warmed, s=round(time.monotonic() - began, 2))
        self.generator = generator
        if beat_out is None and config.beat_targets:  # [control.osc] beats: /beat, /bar...
            try:
                self.beat_out = BeatOut.start(config.beat_targets, [r.id for r in config.rooms],
                                              self.generator.sample_rate, config.osc_prefix)
            except DependencyError as error:  # no python-osc: the music plays on without beats
                log.warning("beat out unavailable: %s", error)
                log_event("surface_unavailable", surface="beat out", error=str(error))
        self.clock_out: MidiClockOut | None = None
        if config.clock_out:  # [control.midi] clock_out: MIDI clock from one room's music
            try:
                self.clock_out = MidiClockOut.open(config.clock_out, config.clock_room,
                                                   self.generator.sample_rate)
                log_event("midi_clock_out_opened", port=config.clock_out,
                          realtime=self.clock_out.realtime)
            except (ConfigError, DependencyError) as error:
                # a missing port must not stop the music: said once, the engine plays on
                log.warning("MIDI clock out unavailable: %s", error)
                log_event("surface_unavailable", surface="MIDI clock out", error=str(error))
        # clock reports the rooms refused, by reason (a jumped playhead, a second audio_out)
        self.clock_drops = DropCounter()
        self.sessions = {room.id: self._new_session(room.id) for room in config.rooms}
        self.metrics = metrics or Metrics(0)
        self.state_path = state_path
        self._state_dirty = False  # an artwork or a control changed: save soon
        self._views_unsaved = False  # capture spoke since the last save: save now and then
        self._state_saved_at = -float("inf")
        # A full disk or a folder gone read-only must not stop the music: the save is
        # said once, retried, and shown in the heartbeat (art2mus status, the console).
        self.write_failures = WriteFailures(log.error)
        self._restore()
        net = config.network
        # The shell: control, heartbeats, metrics and drop counters, as every role has them.
        self.shell = RoleShell("engine", None, net, config.security, threading.Event(),
                               heartbeat, self.metrics, context)
        views = self.shell.socket(zmq.SUB, net.views, bind=True)
        # XPUB: the engine learns which rooms' audio_out are subscribed, and
        # generates for a room only then (a PUB drops what it sends before the
        # subscription arrives: the first chunk after a restart would be lost).
        self.subscriptions = RoomSubscriptions(list(self.sessions))
        chunks = self._bind_chunks()
        self._chunks: zmq.Socket | None = chunks
        self._rebind_said = False  # a failed bind of a new chunks socket was said
        self.chunks_remade = 0  # times the chunks socket was made again (subscription floods)
        self._flood_said = -math.inf
        # For the status (our clock): since when no audio_out has listened to each room
        # (None while one does), and when each room's last PlaybackClock came.
        self._started = self._monotonic()
        self._unheard_since: dict[str, float | None] = dict.fromkeys(self.sessions,
                                                                     self._started)
        self._clock_heard: dict[str, float] = {}
        clocks = self.shell.socket(zmq.PULL, net.clock, bind=True)
        self.inboxes = {"views": self.shell.inbox("views", views),
                        "clock": self.shell.inbox("clock", clocks),
                        "control": self.shell.control}
        self.shell.count("subscriptions", self.subscriptions.dropped)
        self.shell.count("clock_refused", self.clock_drops)
        self._poller = zmq.Poller()
        for inbox in self.inboxes.values():
            self._poller.register(inbox.socket, zmq.POLLIN)
        self._poller.register(chunks, zmq.POLLIN)
        self.unknown_room = 0
        self._next_stats = time.monotonic() + STATS_EVERY_S
        # For the console: how long recent generator calls took, and how many rooms each
        # served (only where rooms are batched; otherwise every call serves one).
        self.batching = config.engine.batch_window_s > 0.0 and can_batch(self.generator)
        self._call_times: deque[float] = deque(maxlen=CHUNK_TIMES_KEPT)
        self._batches: deque[int] = deque(maxlen=BATCHES_KEPT)
        # Since serving began: the loop's time inside the generator, the turns that made
        # chunks and the chunks they made (in the stats event: how busy the model is and
        # how full its batches are, which bench rooms reads).
        self._serving_since = time.monotonic()
        self._generating_s = 0.0
        self._generating_turns = 0
        self._chunks_made = 0
        self._windows_ahead = 0  # windows made ahead of need (padding rows, idle turns)
        self._start_times = StartTimes()  # where new material lands: after such a call

    def _new_session(self, room: str) -> RoomSession:
        """A fresh session for the configured room ``room`` (its seed, channels, pace)."""
        config = next(r for r in self.config.rooms if r.id == room)
        session = RoomSession(room, config.seed, self.generator, self.config.engine,
                              self.log_event, clock=self._monotonic)
        session.min_change_interval_s = self.config.min_change_interval_s
        session.midi_channel_offset = config.midi_channel_offset
        session.clock_drops = self.clock_drops  # one counter for the engine's metrics
        return session

    def _bind_chunks(self) -> zmq.Socket:
        """The chunks XPUB, bound, in manual mode (see the module docstring): a peer is
        sent only the topics :meth:`_track_subscriptions` subscribes it to."""
        net = self.config.network
        return make_socket(self.shell.context, zmq.XPUB, net.chunks, bind=True,
                           max_bytes=net.max_message_bytes, curve=self.shell.keys,
                           xpub_manual=True)

    @property
    def subscribed(self) -> set[str]:
        """The rooms (and ``""``, a tap on all) some subscriber listens to now."""
        return self.subscriptions.topics

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set or a shutdown Control arrives."""
        self.log_event("serving", rooms=list(self.sessions),
                       generator=self.config.engine.generator)
        self._serving_since = time.monotonic()
        try:
            while not stop.is_set():
                if self.turn():
                    break
        finally:
            if self._state_dirty or self._views_unsaved:
                self._save_state()
            self._log_stats()
            self.close()

    def turn(self, poll_ms: int = 5) -> bool:
        """One turn of the loop (waits up to ``poll_ms`` for input); True on a shutdown Control."""
        self._poller.poll(timeout=poll_ms)
        if self._receive():
            return True
        for session in self.sessions.values():
            session.tick()
        self._generate_due()
        for out in (self.beat_out, self.clock_out):
            if out is not None:
                for room, session in self.sessions.items():
                    out.observe(room, grid_of(session.state), session.playhead_estimate())
        self.shell.beat(self.status)
        self._maybe_save_state()
        if time.monotonic() >= self._next_stats:
            self._next_stats += STATS_EVERY_S
            self._log_stats()
        return False

    def _receive(self) -> bool:
        """Drain every inbox (a bounded number of frames each); True when told to shut down."""
        self._track_subscriptions()
        budget = FRAMES_PER_TURN + FRAMES_PER_ROOM * len(self.sessions)
        for message in self.inboxes["views"].drain(budget):
            session = self.sessions.get(message.room)
            if not isinstance(message, ArtworkView) or session is None:
                self.unknown_room += 1
                continue
            self._views_unsaved = True  # even a re-send: the saved view time must follow it
            if session.on_view(message):
                self.log_event("view", artwork_id=message.artwork_id, state=message.state,
                               confidence=message.confidence, seen_at=message.time)
                self._state_dirty = True
        newest: dict[str, PlaybackClock] = {}
        for message in self.inboxes["clock"].drain(FRAMES_PER_TURN
                                                   + CLOCKS_PER_ROOM * len(self.sessions)):
            if not isinstance(message, PlaybackClock) or message.room not in self.sessions:
                self.unknown_room += 1
                continue
            newest[message.room] = message  # a report replaces the one before it
        now = self._monotonic()
        for room, message in newest.items():
            self._clock_heard[room] = now
            self.sessions[room].on_clock(message)
        for message in self.shell.controls(FRAMES_PER_TURN):
            self._apply_set(message)
        return self.shell.stop.is_set()  # a shutdown Control came

    def _apply_set(self, message: Control) -> None:
        """Live parameters for one room or all ("*"); unknown rooms are counted, not fatal."""
        if message.room == "*":
            targets = list(self.sessions.values())
        elif message.room in self.sessions:
            targets = [self.sessions[message.room]]
        else:
            self.unknown_room += 1
            return
        for session in targets:
            if session.set_controls(message.params):
                self._state_dirty = True

    def _track_subscriptions(self) -> None:
        """Read the XPUB's (un)subscription frames, at most SUBSCRIPTIONS_PER_TURN of them;
        subscribe each peer to the rooms it asked for (manual mode: nothing else reaches
        it); make the socket again when its peers hold too many topics refused."""
        chunks = self._chunks
        if chunks is None:
            self._rebind_chunks()
            return
        for _ in range(SUBSCRIPTIONS_PER_TURN):
            try:
                frame = chunks.recv(flags=zmq.NOBLOCK)
            except zmq.Again:
                break
            taken = self.subscriptions.frame(frame)
            if taken is None:
                continue
            # at once, before the next recv: ZeroMQ applies it to the peer this came from
            topic = taken.topic.encode("utf-8")
            if taken.subscribe:
                chunks.subscribe(topic)
            else:
                chunks.unsubscribe(topic)
            if taken.changed:
                self.log_event("subscribed" if taken.subscribe else "unsubscribed",
                               topic=taken.topic)
                self._note_listeners()
        if self.subscriptions.flooded:
            self._remake_chunks()

    def _remake_chunks(self) -> None:
        """Close the chunks socket, whose peers hold too many topics the engine refused (ZeroMQ
        frees them in its reaper thread), and bind a new one; every peer reconnects."""
        held = self.subscriptions
        self.chunks_remade += 1
        now = self._monotonic()
        if now - self._flood_said >= 60.0:  # a flood goes on: said once a minute, counted
            self._flood_said = now
            self.log_event(
                "subscription_flood", held=held.held, held_bytes=held.held_bytes,
                dropped=held.dropped.total, remade=self.chunks_remade,
                error=f"peers of {self.config.network.chunks} sent {held.held} "
                      f"subscriptions to no room ({held.held_bytes} bytes of topics), more "
                      f"than {SUBSCRIPTION_FLOOD_TOPICS} or {SUBSCRIPTION_FLOOD_BYTES} bytes: "
                      f"the socket is made again (the rooms' audio_outs reconnect). A "
                      f"program on the network floods it: turn [security] curve on, or "
                      f"firewall the port")
        assert self._chunks is not None
        self._poller.unregister(self._chunks)
        self._chunks.close(linger=0)
        self._chunks = None
        listened = sorted(self.subscriptions.topics)
        self.subscriptions.forget()
        for topic in listened:
            self.log_event("unsubscribed", topic=topic)
        self._note_listeners()
        self._rebind_chunks()

    def _rebind_chunks(self) -> None:
        """Bind the chunks socket again (the old one's port may take a moment to be free:
        tried again every turn, the failure said once)."""
        try:
            self._chunks = self._bind_chunks()
        except (ConfigError, zmq.ZMQError) as error:
            if not self._rebind_said:
                self._rebind_said = True
                self.log_event("chunks_rebind_failed", error=_said(error))
            return
        self._rebind_said = False
        self._poller.register(self._chunks, zmq.POLLIN)

    def _note_listeners(self) -> None:
        """Mark since when each room has had no audio_out listening (after a change)."""
        now = self._monotonic()
        for room in self.sessions:
            if self._listening(room):
                self._unheard_since[room] = None
            elif self._unheard_since[room] is None:
                self._unheard_since[room] = now

    def _room_health(self, room: str, now: float) -> float:
        """The room's health as the engine sees it: 0.0 when no audio_out has listened to
        it for :data:`LISTENER_GRACE_S` (its music reaches nobody: a wrong key, a room
        machine gone), 0.5 when no PlaybackClock has come for as long (the engine plays
        on without knowing where the playhead is), else 1.0."""
        unheard = self._unheard_since[room]
        if unheard is not None and now - unheard > LISTENER_GRACE_S:
            return 0.0
        if now - self._clock_heard.get(room, self._started) > LISTENER_GRACE_S:
            return 0.5
        return 1.0

    def _listening(self, room: str) -> bool:
        """True when some audio_out (or a tap on every room, topic "") receives ``room``."""
        return room in self.subscribed or "" in self.subscribed

    def _generate_due(self) -> None:
        """Generate what is due for every listened-to room (batched within the window)."""
        listened = [s for s in self.sessions.values() if self._listening(s.room)]
        served = 0
        ahead = sum(s.windows_ahead for s in listened)
        began = time.perf_counter()
        last_call_s = None
        for session, chunk in generate_due(listened, self.generator,
                                           self.config.engine.batch_window_s,
                                           self._start_times):
            served += 1
            # one time per generator call: a call's chunks share it (a turn may make several)
            if not self.batching or chunk.generation_s != last_call_s:
                self._call_times.append(chunk.generation_s)
                last_call_s = chunk.generation_s
            room = session.room
            if self._chunks is None or not send(self._chunks, chunk):
                self.log_event("chunk_dropped", room=room, seq=chunk.seq)
            if self.metrics.enabled:
                heard = session.playhead_estimate()
                lead = None if heard is None or session.queue_end is None else (
                    (session.queue_end - heard) / self.generator.sample_rate)
                budget_s = session.config.chunk_samples / self.generator.sample_rate
                self.metrics.chunk(room, chunk.generation_s, session.realtime_factor, lead,
                                   audio_s=budget_s)
        if self.batching and served:
            self._batches.append(served)  # generate_due made them in one call
        made_ahead = sum(s.windows_ahead for s in listened) - ahead
        if served or made_ahead:
            self._generating_s += time.perf_counter() - began
        if served:
            self._generating_turns += 1
            self._chunks_made += served
        self._windows_ahead += made_ahead

    def status(self) -> dict[str, Any]:
        """Every room's state for the heartbeat (kept small: one pipe write).

        Top level, for the technician's console: ``generator`` (its name),
        ``chunk_ms`` (median wall time of the last :data:`CHUNK_TIMES_KEPT`
        generator calls, None before the first), ``batch`` (the last
        :data:`BATCHES_KEPT` batch sizes, ``[1]`` where rooms are not
        batched) and ``gpu_memory_mb`` (:func:`gpu_memory_mb`). Per room,
        ``instruments`` where the generator names them, ``downbeat`` (the next
        bar line as heard, seconds after UTC midnight) and ``bar_s`` (a bar's
        length) where it has a bar grid and a playback clock, ``sync`` (tempo, beats
        per bar, last phase offset seen) while it follows a tempo sync, and
        ``lost_resyncs`` / ``non_finite_chunks`` / ``refused_views`` /
        ``refused_clocks`` / ``jumped_clocks`` once any has
        happened, ``duplicate`` while two audio_outs report for one room
        (:attr:`~engine.streaming.RoomSession.duplicate`); ``write_errors``: files the
        engine cannot write now (its state file); ``chunks_remade``, once it has been,
        the times the chunks socket was made again for a subscription flood.
        Per room also ``listening`` (an audio_out, or a tap on every room, is subscribed
        to its chunks), ``clock_age_s`` (seconds since its last PlaybackClock, None before
        the first) and ``health`` (:meth:`_room_health`: 0.0 when nobody has listened for
        :data:`LISTENER_GRACE_S`, 0.5 without a clock for as long, else 1.0).
        """
        rooms: dict[str, Any] = {}
        now = self._monotonic()
        for room, session in self.sessions.items():
            playhead = session.playhead_estimate()
            described = self.generator.describe(session.condition)
            entry: dict[str, Any] = {
                "artwork_id": session.view.artwork_id, "state": session.view.state,
                "chunks": session.seq, "frozen": session.controls.freeze,
                "lead_s": None if playhead is None or session.queue_end is None else round(
                    (session.queue_end - playhead) / self.generator.sample_rate, 3),
                "rtf": round(session.realtime_factor, 1) if session.generation_s else None,
                "listening": self._listening(room),
                "clock_age_s": None if room not in self._clock_heard else round(
                    max(0.0, now - self._clock_heard[room]), 1),
                "health": self._room_health(room, now),
            }
            for key in ("key", "mode", "tempo_bpm"):
                if key in described:
                    entry[key] = described[key]
            instruments = instrument_names(described)
            if instruments is not None:
                entry["instruments"] = instruments
            # faults the music survived: chunks made again after being lost on the way,
            # chunks whose NaN/inf samples were zeroed (said only when they happened)
            if session.lost_resyncs:
                entry["lost_resyncs"] = session.lost_resyncs
            if session.non_finite_chunks:
                entry["non_finite_chunks"] = session.non_finite_chunks
            if session.refused_views:  # capture's views the generator cannot use
                entry["refused_views"] = session.refused_views
            if session.refused_clocks:  # clock reports dated implausibly (CLOCK_JUMP_S)
                entry["refused_clocks"] = session.refused_clocks
            if session.jumped_clocks:  # clock reports whose playhead jumped implausibly
                entry["jumped_clocks"] = session.jumped_clocks
            if session.duplicate:  # two audio_outs report for this room (one id twice)
                entry["duplicate"] = session.duplicate
            downbeat = session.heard_downbeat()
            if downbeat is not None:  # for a tempo-sync source the room leads
                entry["downbeat"] = round(seconds_of_day(downbeat[0]), 4)
                entry["bar_s"] = round(downbeat[1], 6)
            if session.controls.sync is not None:  # following a Link session or a MIDI clock
                entry["sync"] = {"bpm": session.controls.sync.bpm,
                                 "beats": session.controls.sync.beats,
                                 "offset_ms": session.sync_offset_ms}
            rooms[room] = entry
        times = self._call_times
        backend = self.backend.backend_status() if self.backend else {"kind": "local"}
        self.metrics.set_backend(backend)  # (status is asked at the heartbeat's cadence)
        # the shell adds what was dropped, by socket
        return {"rooms": rooms, "subscribed": sorted(self.subscribed),
                "generator": self.config.engine.generator,
                "chunk_ms": round(1000.0 * statistics.median(times), 1) if times else None,
                "batch": list(self._batches) if self.batching else [1],
                "gpu_memory_mb": gpu_memory_mb(), "backend": backend,
                "write_errors": self.write_failures.errors(),
                **({"chunks_remade": self.chunks_remade} if self.chunks_remade else {})}

    # -- surviving a restart ---------------------------------------------------

    def _maybe_save_state(self) -> None:
        """Save soon after a change, and every few seconds while capture keeps speaking.

        The second keeps the saved time of the last view close to the truth:
        a painting that has hung unchanged for an hour is still being seen.
        """
        since = self._monotonic() - self._state_saved_at
        if since < 0:  # a fake clock in a test set back: save, and measure from now
            since = float("inf")
        if self._state_dirty and since > 0.5:
            self._save_state()
        elif self._views_unsaved and since > self._state_refresh_s():
            self._save_state()

    def _state_refresh_s(self) -> float:
        """How stale the saved view time may get: a quarter of the view timeout, 1-10 s."""
        timeout = self.config.engine.view_timeout_s
        return 10.0 if timeout <= 0 else min(10.0, max(1.0, timeout / 4))

    def _save_state(self) -> None:
        """Write each room's last view, controls and view time (atomically) for a restart."""
        self._state_dirty = False
        self._views_unsaved = False
        now, mono = self._clock_now(), self._monotonic()
        self._state_saved_at = mono
        if self.state_path is None:
            return
        record = {}
        for room, session in self.sessions.items():
            if session.last_view_at is None:
                continue
            record[room] = {
                "view": json.loads(msgspec.json.encode(session.latest_view)),
                "shown": json.loads(msgspec.json.encode(session.view)),
                # when capture last spoke (any view, re-sends included), in wall time (the
                # session measures on the monotonic clock, which a reboot restarts)
                "last_view_at": now - (mono - session.last_view_at),
                "saved_at": now,
                "controls": session.controls.saved(),
            }
        temporary = self.state_path.with_suffix(".tmp")
        try:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_text(json.dumps(record), encoding="utf-8")
            os.replace(temporary, self.state_path)
        except OSError as exc:
            self._state_dirty = True  # tried again at the next turn past half a second
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)  # half a file holds space a disk lacks
            self.write_failures.failed(
                str(self.state_path), exc,
                "the music goes on; a restart would resume from the last state saved")
            return
        self.write_failures.ok(str(self.state_path))

    def _restore(self) -> None:
        """Resume rooms from a previous engine's state file, if it is recent enough.

        Nothing in the file may stop the engine: a file that cannot be read (truncated,
        empty, JSON nested too deep) and a room whose entry is refused (a control of the
        wrong type or a number beyond float range, checked as a live value is) are logged
        as ``state_unreadable``, naming the file (and the room), and that room plays
        from a fresh state. A bad value raised out of the constructor and the engine
        exited 1 on every restart, restarted for ever, every room silent. A file with
        anything refused is then set aside (:meth:`_set_aside_state`), so the next
        restart does not read it again.
        """
        path = self.state_path
        if path is None or not path.is_file():
            return
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(record, dict):
                raise ValueError(f"expected an object of rooms, got {type(record).__name__}")
        except Exception as exc:  # OSError, ValueError, RecursionError (nested 100k deep)...
            self.log_event("state_unreadable", path=str(path), error=_said(exc))
            self._set_aside_state()
            return
        refused = restored = False
        for room, saved in record.items():
            if room not in self.sessions:
                continue
            try:
                restored = self._restore_room(self.sessions[room], saved) or restored
            except Exception as exc:  # whatever the file holds: this room starts afresh
                refused = True
                self.log_event("state_unreadable", path=str(path), room=room, error=_said(exc))
                self.sessions[room] = self._new_session(room)  # restore may have begun
        if refused:
            self._set_aside_state()
            if restored:  # the rooms taken back are saved again at once, without the bad ones
                self._save_state()

    def _restore_room(self, session: RoomSession, saved: Any) -> bool:
        """Resume ``session`` from its saved entry; True if it was (False: too old, or a
        view the generator no longer takes). Raises on an entry it cannot take."""
        if not isinstance(saved, dict):
            raise ValueError(f"expected an object, got {type(saved).__name__}")
        shown = msgspec.json.decode(json.dumps(saved["shown"]), type=ArtworkView)
        controls = RoomControls.from_saved(saved["controls"])  # checked and clamped
        if "last_view_at" in saved:
            age = self._clock_now() - float(saved["last_view_at"])
        else:  # a file from an older engine: its age was counted from the save
            age = float(saved["age_s"]) + self._clock_now() - float(saved["saved_at"])
        if not math.isfinite(age):
            raise ValueError(f"the time of the last view gives an age of {age}")
        age = max(0.0, age)
        timeout = self.config.engine.view_timeout_s
        if timeout > 0 and age > timeout:
            # capture has been silent too long: the ambience is right
            self.log_event("state_too_old", room=session.room, age_s=round(age, 1),
                           view_timeout_s=timeout)
            return False
        if not session.accepts(shown):  # a model of another width since the save
            return False
        session.restore(shown, age, controls)
        return True

    def _set_aside_state(self) -> None:
        """Move a refused state file to ``engine-state.json.bad`` (replacing an older one),
        for the technician to look at, and say so once: read again at every restart,
        it would be refused again at every restart."""
        assert self.state_path is not None
        bad = self.state_path.with_name(self.state_path.name + ".bad")
        try:
            os.replace(self.state_path, bad)
        except OSError as exc:
            log.error("engine state %s refused, and it cannot be set aside: %s",
                      self.state_path, exc)
            self.log_event("state_set_aside", path=str(self.state_path), error=str(exc))
            return
        log.warning("engine state %s refused (see state_unreadable): set aside as %s; "
                    "the rooms it could not resume play from a fresh state",
                    self.state_path, bad)
        self.log_event("state_set_aside", path=str(self.state_path), bad=str(bad))

    def _log_stats(self) -> None:
        self.log_event(
            "stats",
            realtime_factor={room: (round(s.realtime_factor, 2) if s.generation_s else None)
                             for room, s in self.sessions.items()},
            received={name: inbox.received for name, inbox in self.inboxes.items()},
            unknown_room=self.unknown_room,
            subscribed=sorted(self.subscribed),
            serving_s=round(time.monotonic() - self._serving_since, 3),
            generating_s=round(self._generating_s, 3),
            generating_turns=self._generating_turns, chunks_made=self._chunks_made,
            windows_ahead=self._windows_ahead,
            **self.shell.stats(),
        )

    def close(self) -> None:
        """Close the sockets (idempotent)."""
        self.shell.close()
        if self._chunks is not None:
            self._chunks.close()
            self._chunks = None
        for out in (self.beat_out, self.clock_out):
            if out is not None:
                out.close()
        if self.backend is not None:
            self.backend.close()
