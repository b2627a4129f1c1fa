"""The audio_out role as a process: a :class:`~audio_out.player.Player` fed over ZeroMQ.

A SUB socket on the engine's chunks endpoint (topic = this room) feeds
``Player.submit``; a PUSH socket reports the PlaybackClock at
``clock_hz``. This thread owns both sockets; the player owns the audio
callback and the file writers.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import zmq

from audio_out.player import Player
from installation.config import InstallationConfig
from installation.events import EventSink
from installation.protocol import AudioChunk, Control
from installation.transport import Inbox, make_socket, send


def resolve_outputs(config: InstallationConfig, room_id: str) -> InstallationConfig:
    """The config with this room's record/MIDI paths made relative to the output folder."""
    room = config.room(room_id)
    updates = {}
    for field in ("record", "midi_file"):
        value = getattr(room.audio_out, field)
        if value and not Path(value).is_absolute():
            updates[field] = str(config.output_dir / value)
    if not updates:
        return config
    audio = room.audio_out.model_copy(update=updates)
    rooms = tuple(r.model_copy(update={"audio_out": audio}) if r.id == room_id else r
                  for r in config.rooms)
    return config.model_copy(update={"rooms": rooms})


def run_audio_out(
    config: InstallationConfig, room_id: str, stop: threading.Event, log_event: EventSink
) -> bool:
    """Play one room until stopped; True when it ended because ``stop_after_s`` was reached."""
    config = resolve_outputs(config, room_id)
    room = config.room(room_id)
    net = config.network
    context: zmq.Context = zmq.Context.instance()
    chunks = Inbox(
        make_socket(context, zmq.SUB, net.chunks, bind=False, subscribe=[room.id],
                    max_bytes=net.max_message_bytes),
        net.max_message_bytes,
    )
    control = Inbox(
        make_socket(context, zmq.SUB, net.control, bind=False, max_bytes=net.max_message_bytes),
        net.max_message_bytes,
    )
    clock = make_socket(context, zmq.PUSH, net.clock, bind=False, hwm=10)
    poller = zmq.Poller()
    poller.register(chunks.socket, zmq.POLLIN)
    poller.register(control.socket, zmq.POLLIN)
    player = Player(room.id, room.audio_out, config.engine.channels, log_event)
    period = 1.0 / room.audio_out.clock_hz
    next_clock = time.monotonic()
    finished = False
    player.start()
    try:
        while not stop.is_set():
            timeout_ms = max(0.0, (next_clock - time.monotonic()) * 1000.0)
            poller.poll(timeout=int(min(timeout_ms, 50.0)))
            for message in chunks.drain():
                if isinstance(message, AudioChunk) and message.room == room.id:
                    player.submit(message)
            for message in control.drain():
                if (isinstance(message, Control) and message.command == "shutdown"
                        and message.target in ("*", "audio_out")):
                    stop.set()
            if time.monotonic() >= next_clock:
                next_clock += period
                if next_clock < time.monotonic():
                    next_clock = time.monotonic() + period
                send(clock, player.clock())
            if player.done:
                finished = True
                break
    finally:
        player.stop()
        log_event("stats", dropped={"chunks": dict(chunks.dropped.by_reason),
                                    "control": dict(control.dropped.by_reason)},
                  received=chunks.received)
        for socket in (chunks.socket, control.socket, clock):
            socket.close()
    return finished
