"""Entry point of one role process: config, signals, event log, then the role's loop.

``python -m installation role engine|capture|audio_out --config FILE [--room ID]``
is what the supervisor runs; ``art2mus engine|capture|play`` run the same
functions in the foreground. SIGTERM and SIGINT set a stop event so every
role finishes its files and closes its sockets.

Each role also gets: JSON-lines logging on stdout (:mod:`ground.jsonlog`),
a :class:`~ground.health.Heartbeat` to its supervisor (a no-op when run
by hand), and its Prometheus endpoint when ``[metrics] port`` is set.

A role that cannot run because of its config, its input or a missing
dependency logs the error as one JSON line and exits with that error's code
(:mod:`ground.errors`: 2, 3, 4), which tells the supervisor that a
restart will not help; anything else is a crash (exit 1) and is restarted.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ground.errors import Art2MusError, DependencyError, InputError
from ground.events import EventLog
from ground.health import Heartbeat
from ground.jsonlog import setup_json_logging
from ground.metrics import Metrics, role_metrics
from ground.security import set_handshake_sink
from installation.config import InstallationConfig

if TYPE_CHECKING:
    from audio_out.role import AudioOutRoleConfig
    from capture.role import CaptureRoleConfig
    from engine.config import EngineRoleConfig

RoleName = Literal["engine", "capture", "audio_out"]


def events_path(config: InstallationConfig, role: str, room: str | None) -> Path:
    """Where a role writes its event log (rotated to ``NAME.jsonl.1`` .. by size)."""
    name = role if room is None else f"{role}-{room}"
    return config.output_dir / "events" / f"{name}.jsonl"


def install_stop_handlers(stop: threading.Event) -> None:
    """Turn SIGTERM and SIGINT into ``stop.set()``."""
    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_role(role: RoleName, config: InstallationConfig, room: str | None) -> int:
    """Run one role until it is stopped; the process exit code.

    ``room``: the room a capture or audio_out role serves (default: the first). The
    engine serves every room of the config, so a room given to it is refused (an
    InputError) before anything starts, as an unknown room is for the other roles.
    """
    if role == "engine":
        if room is not None:
            raise InputError(f"--room: the engine serves every room of the config; --room "
                             f"is for the capture and play roles, got --room {room!r}")
    else:
        if room is None:
            room = config.rooms[0].id
        config.room(room)  # refuse an unknown room before anything starts
    stop = threading.Event()
    install_stop_handlers(stop)
    setup_json_logging(role, None if role == "engine" else room)
    log = EventLog(events_path(config, role, None if role == "engine" else room), role, room,
                   max_bytes=config.supervisor.events_max_bytes,
                   backups=config.supervisor.events_backups)
    log("started", pid=os.getpid())
    set_handshake_sink(log)  # a refused CurveZMQ key is an event too, not only a log line
    heartbeat = Heartbeat(config.supervisor.heartbeat_s)
    try:
        metrics = role_metrics(config.metrics, role,
                               0 if room is None or role == "engine" else config.room_index(room))
    except DependencyError as error:
        # The music must not stop for want of a metrics endpoint: said once, run without.
        log("metrics_unavailable", error=str(error))
        logging.getLogger(__name__).warning("running without metrics: %s", error)
        metrics = Metrics(0)
    code = 0
    try:
        if role == "engine":
            from engine.server import EngineServer

            EngineServer(engine_role_config(config), log, heartbeat=heartbeat, metrics=metrics,
                         state_path=engine_state_path(config)).run(stop)
        elif role == "capture":
            from capture.role import run_capture

            assert room is not None
            run_capture(capture_role_config(config, room), stop, log, heartbeat=heartbeat,
                        metrics=metrics)
        else:
            from audio_out.role import run_audio_out

            assert room is not None
            run_audio_out(audio_out_role_config(config, room), stop, log, heartbeat=heartbeat,
                          metrics=metrics)
    except Art2MusError as error:
        # A mistake in the config or input: one JSON error line (the supervisor's reason
        # for the exit) and the error's exit code, never a traceback.
        logging.getLogger(f"installation.roles.{role}").error("Error: %s", error)
        log("failed", error=str(error), code=error.exit_code)
        code = error.exit_code
    finally:
        from ground.security import stop_authenticators

        stop_authenticators()
        metrics.close()
        log("stopped")
        log.close()
    return code


def engine_state_path(config: InstallationConfig) -> Path:
    """Where the engine keeps each room's last view and controls across its own restarts."""
    return config.output_dir / "run" / "engine-state.json"


# -- what each role is handed: its own section and the ground floor's, never the whole file --


def engine_role_config(config: InstallationConfig) -> EngineRoleConfig:
    """The engine's section, its rooms and the ground-floor sections of ``config``."""
    from engine.config import EngineRoleConfig, EngineRoom

    return EngineRoleConfig(
        engine=config.engine,
        rooms=tuple(EngineRoom(r.id, r.seed, r.midi_channel_offset) for r in config.rooms),
        network=config.network, security=config.security,
        min_change_interval_s=config.control.min_change_interval_s,
        beat_targets=config.control.osc.send if config.control.osc.beats else (),
        osc_prefix=config.control.osc.prefix,
        clock_out=config.control.midi.clock_out,
        clock_room=config.control.midi.clock_room or config.rooms[0].id)


def capture_role_config(config: InstallationConfig, room: str) -> CaptureRoleConfig:
    """Room ``room``'s capture section, its overlay file under the output folder, and the
    ground-floor sections of ``config``."""
    from capture.config import CaptureConfig
    from capture.role import CaptureRoleConfig

    capture = config.room(room).capture
    if capture.overlay and not Path(capture.overlay).is_absolute():
        capture = capture.model_copy(update={"overlay": str(config.output_dir / capture.overlay)})
    if config.console.listen and "console_frame" in CaptureConfig.model_fields:
        # the console serves OUTPUT/console/ROOM.jpg as the room's camera frame
        capture = capture.model_copy(update={
            "console_frame": str(config.output_dir / "console" / f"{room}.jpg"),
            "console_frame_every_s": config.console.frame_every_s,
            "console_frame_width": config.console.frame_width})
    return CaptureRoleConfig(room, capture, config.network, config.security)


def audio_out_role_config(config: InstallationConfig, room: str) -> AudioOutRoleConfig:
    """Room ``room``'s audio_out section, with its record and MIDI templates under the
    output folder, and the ground-floor sections of ``config``."""
    from audio_out.role import AudioOutRoleConfig

    audio = config.room(room).audio_out
    updates = {name: str(config.output_dir / value)
               for name in ("record", "midi_file")
               if (value := getattr(audio, name)) and not Path(value).is_absolute()}
    return AudioOutRoleConfig(room, audio.model_copy(update=updates) if updates else audio,
                              config.engine.channels, config.network, config.security)
