"""The audio_out role as a process: a :class:`~audio_out.player.Player` fed over ZeroMQ.

A SUB socket on the engine's chunks endpoint (topic = this room) feeds
``Player.submit``; a PUSH socket reports the PlaybackClock at
``clock_hz``, stamped with this process's random ``instance`` id (drawn once at
start and logged as ``clock_instance``, so the engine tells a restart from two
machines configured as one room). This thread owns both sockets; the player owns the audio
callback and the file writers. Control ``set`` messages for this room carry
``volume`` (ramped by the player, no clicks). Every ``heartbeat_s`` the
supervisor gets the playback state, underflows, drops, what is played
(``level_dbfs``, ``peak_dbfs``, ``loudness_lufs`` and a 32-band ``spectrum``,
measured by :class:`~audio_out.meter.LevelMeter` around the player's
callback) and the recording's state: a full or unwritable disk fails the recording
(``"recording": {"state": "failed", ...}``, ``art2mus_recording_ok`` 0), never
the role, until a retry writes again in a new segment (``ok`` again).
``nonfinite_blocks`` and ``clipped_blocks`` count the blocks the player's last
stage had to repair (NaN or infinity silenced, samples past full scale clipped):
a chunk of samples beyond +-16 is refused at decode instead (``out-of-range`` in
the drop counts), so the first stays 0 unless something upstream is broken.
``output`` says where the audio goes: ``{"state": "lost", ...}`` while
the sound device is gone and the null sink stands in (the music's clock and the
recording go on; :class:`~audio_out.outputs.FailoverOutput`). Stopping
(SIGTERM, a Control shutdown, ``stop_after_s``) fades out first (:meth:`Player.stop`).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
import zmq

from audio_out.config import AudioOutConfig
from audio_out.meter import LevelMeter
from audio_out.player import Player
from ground.config import NetworkConfig, SecurityConfig
from ground.errors import ConfigError
from ground.events import EventSink
from ground.health import Heartbeat
from ground.metrics import Metrics
from ground.params import parameter
from ground.protocol import AudioChunk, DropCounter, ProtocolError, new_instance_id
from ground.shell import RoleShell
from ground.transport import send


@dataclass(frozen=True)
class AudioOutRoleConfig:
    """What one room's audio_out is handed: its section, the program's channel count, and
    the ground-floor sections. The roof makes ``audio_out.record``/``midi_file`` absolute
    (under the installation's output folder); they stay templates (``{room}``, ``{start}``).
    """

    room: str
    audio_out: AudioOutConfig
    channels: int = 2  # of the program the engine sends
    network: NetworkConfig = field(default_factory=NetworkConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)


def run_audio_out(
    config: AudioOutRoleConfig, stop: threading.Event, log_event: EventSink,
    heartbeat: Heartbeat | None = None, metrics: Metrics | None = None,
) -> bool:
    """Play one room until stopped; True when it ended because ``stop_after_s`` was reached."""
    net = config.network
    shell = RoleShell("audio_out", config.room, net, config.security, stop, heartbeat, metrics)
    metrics = shell.metrics
    chunks = shell.inbox("chunks", shell.socket(zmq.SUB, net.chunks, bind=False,
                                                subscribe=[config.room]))
    # IMMEDIATE: while the engine is down, clocks are not queued for its next
    # incarnation, which would otherwise start the room from a stale playhead.
    clock = shell.socket(zmq.PUSH, net.clock, bind=False, hwm=10, immediate=True)
    # who sends this room's clocks: the engine's duplicate_room event names it
    instance = new_instance_id()
    log_event("clock_instance", instance=f"{instance:08x}")
    poller = zmq.Poller()
    poller.register(chunks.socket, zmq.POLLIN)
    poller.register(shell.control.socket, zmq.POLLIN)
    meter = LevelMeter()
    player = Player(config.room, config.audio_out, config.channels, log_event,
                    output_factory=meter.factory())
    period = 1.0 / config.audio_out.clock_hz
    next_clock = time.monotonic()
    finished = False
    refused_controls: dict[str, int] = {}

    def status() -> dict[str, Any]:
        tl = player.timeline
        recording = player.recording_status()
        reading = meter.reading()
        playhead_s = round(tl.playhead / player.sample_rate, 2)
        metrics.set_underflows(config.room, tl.underflows)
        metrics.set_recording(config.room, recording["state"])
        metrics.set_playback(config.room, playhead_s, reading.level_dbfs)
        guard = player.guard  # repairs of the last stage: a fault upstream shows here
        return {"state": tl.state, "underflows": tl.underflows, "playhead_s": playhead_s,
                "recording": recording, "output": player.output_status(),
                "nonfinite_blocks": guard.nonfinite_blocks,
                "clipped_blocks": guard.clipped_blocks} | reading.status()

    player.start()
    try:
        while not stop.is_set():
            timeout_ms = max(0.0, (next_clock - time.monotonic()) * 1000.0)
            poller.poll(timeout=int(min(timeout_ms, 50.0)))
            for message in chunks.drain():
                if isinstance(message, AudioChunk) and message.room == config.room:
                    submit_chunk(player, message, chunks.dropped, log_event)
            for message in shell.controls():
                apply_set(player, message.params, log_event, refused_controls)
            shell.beat(status)
            if time.monotonic() >= next_clock:
                next_clock += period
                if next_clock < time.monotonic():
                    next_clock = time.monotonic() + period
                send(clock, msgspec.structs.replace(player.clock(), instance=instance))
            if player.done:
                # from here no chunk is taken: what is buffered fades out (for a report
                # that must not expect a change shown later to be heard)
                log_event("stop_after_reached", played_s=config.audio_out.stop_after_s)
                finished = True
                break
    finally:
        player.stop()
        log_event("stats", received=chunks.received, **shell.stats())
        shell.close()
    return finished


def submit_chunk(player: Player, chunk: AudioChunk, dropped: DropCounter,
                 log_event: EventSink) -> None:
    """Splice ``chunk``, or count and drop it when this player cannot play it.

    A chunk can decode and still not fit this room (another channel count
    after an engine restarted with another config): the player refuses it,
    and the room keeps playing what it has instead of exiting into a restart
    loop. The first such chunk of each run is logged with the reason.
    """
    try:
        player.submit(chunk)
    except ConfigError as error:
        if dropped.by_reason["unplayable"] == 0:
            log_event("chunk_refused", seq=chunk.seq, error=str(error))
        dropped.add(ProtocolError("unplayable", str(error)))


def apply_set(player: Player, params: dict[str, float | str], log_event: EventSink,
              refused: dict[str, int] | None = None) -> None:
    """Live parameters audio_out owns (``volume``); others are the engine's and ignored here.

    The range is the parameter table's (:mod:`ground.params`): a volume that
    is not a finite number is ignored (a Control from the network may carry
    anything) and counted in ``refused``, logged the first time; a finite one
    is clamped to the range.
    """
    if "volume" not in params:
        return
    try:
        value = parameter("volume").clamp(params["volume"])
    except ValueError as error:
        counts = refused if refused is not None else {}
        if counts.get("volume", 0) == 0:
            log_event("control_refused", name="volume", value=repr(params["volume"])[:40],
                      error=str(error))
        counts["volume"] = counts.get("volume", 0) + 1
        return
    player.set_volume(value)  # the player ramps to it: no click
    log_event("volume", value=value)
