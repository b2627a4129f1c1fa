"""The engine role: one process serving every room over ZeroMQ.

It binds the views (SUB), chunks (PUB) and clock (PULL) endpoints, keeps a
:class:`~engine.streaming.RoomSession` per configured room, and on every turn
of its loop drains its inboxes, then generates at most one due chunk per
room, most urgent first, so that no room starves another.
"""

from __future__ import annotations

import threading
import time

import zmq

from engine.generators import Generator, make_generator
from engine.streaming import RoomSession
from installation.config import InstallationConfig
from installation.events import EventSink
from installation.protocol import ArtworkView, Control, PlaybackClock
from installation.transport import Inbox, make_socket, send

STATS_EVERY_S = 10.0


class EngineServer:
    """Room sessions plus the sockets that feed them."""

    def __init__(
        self,
        config: InstallationConfig,
        log_event: EventSink,
        generator: Generator | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        self.config = config
        self.log_event = log_event
        self.generator = generator or make_generator(config.engine)
        self.sessions = {
            room.id: RoomSession(room.id, room.seed, self.generator, config.engine, log_event)
            for room in config.rooms
        }
        net = config.network
        self._context = context or zmq.Context.instance()
        self._views = make_socket(self._context, zmq.SUB, net.views, bind=True,
                                  max_bytes=net.max_message_bytes)
        self._chunks = make_socket(self._context, zmq.PUB, net.chunks, bind=True)
        self._clock = make_socket(self._context, zmq.PULL, net.clock, bind=True,
                                  max_bytes=net.max_message_bytes)
        self._control = make_socket(self._context, zmq.SUB, net.control, bind=False,
                                    max_bytes=net.max_message_bytes)
        self.inboxes = {
            "views": Inbox(self._views, net.max_message_bytes),
            "clock": Inbox(self._clock, net.max_message_bytes),
            "control": Inbox(self._control, net.max_message_bytes),
        }
        self._poller = zmq.Poller()
        for inbox in self.inboxes.values():
            self._poller.register(inbox.socket, zmq.POLLIN)
        self.unknown_room = 0

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set or a shutdown Control arrives."""
        self.log_event("serving", rooms=list(self.sessions),
                       generator=self.config.engine.generator)
        next_stats = time.monotonic() + STATS_EVERY_S
        try:
            while not stop.is_set():
                self._poller.poll(timeout=5)
                if self._receive():
                    break
                self._generate_due()
                if time.monotonic() >= next_stats:
                    next_stats += STATS_EVERY_S
                    self._log_stats()
        finally:
            self._log_stats()
            self.close()

    def _receive(self) -> bool:
        """Drain every inbox; True when told to shut down."""
        for message in self.inboxes["views"].drain():
            session = self.sessions.get(message.room)
            if not isinstance(message, ArtworkView) or session is None:
                self.unknown_room += 1
                continue
            if session.on_view(message):
                self.log_event("view", artwork_id=message.artwork_id, state=message.state,
                               confidence=message.confidence, seen_at=message.time)
        for message in self.inboxes["clock"].drain():
            session = self.sessions.get(message.room)
            if not isinstance(message, PlaybackClock) or session is None:
                self.unknown_room += 1
                continue
            session.on_clock(message)
        for message in self.inboxes["control"].drain():
            if (isinstance(message, Control) and message.command == "shutdown"
                    and message.target in ("*", "engine")):
                return True
        return False

    def _generate_due(self) -> None:
        due = []
        for session in self.sessions.values():
            reason = session.next_reason()
            if reason is not None:
                playhead = session.playhead_estimate() or 0
                slack = (session.queue_end or 0) - playhead
                # transitions and restarts first, then the room closest to running dry
                due.append((reason == "continue", slack, session.room))
        for _, _, room in sorted(due):
            chunk = self.sessions[room].next_chunk()
            if chunk is not None and not send(self._chunks, chunk):
                self.log_event("chunk_dropped", room=room, seq=chunk.seq)

    def _log_stats(self) -> None:
        self.log_event(
            "stats",
            realtime_factor={room: (round(s.realtime_factor, 2) if s.generation_s else None)
                             for room, s in self.sessions.items()},
            dropped={name: dict(inbox.dropped.by_reason) for name, inbox in self.inboxes.items()},
            received={name: inbox.received for name, inbox in self.inboxes.items()},
            unknown_room=self.unknown_room,
        )

    def close(self) -> None:
        """Close the sockets (idempotent)."""
        for socket in (self._views, self._chunks, self._clock, self._control):
            socket.close()
