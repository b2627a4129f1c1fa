"""Entry point of one role process: config, signals, event log, then the role's loop.

``python -m installation role engine|capture|audio_out --config FILE [--room ID]``
is what the supervisor runs; ``art2mus engine|capture|play`` run the same
functions in the foreground. SIGTERM and SIGINT set a stop event so every
role finishes its files and closes its sockets.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Literal

from installation.config import InstallationConfig
from installation.events import EventLog

RoleName = Literal["engine", "capture", "audio_out"]


def events_path(config: InstallationConfig, role: str, room: str | None) -> Path:
    """Where a role writes its event log."""
    name = role if room is None else f"{role}-{room}"
    return config.output_dir / "events" / f"{name}.jsonl"


def install_stop_handlers(stop: threading.Event) -> None:
    """Turn SIGTERM and SIGINT into ``stop.set()``."""
    def handler(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def run_role(role: RoleName, config: InstallationConfig, room: str | None) -> int:
    """Run one role until it is stopped; the process exit code."""
    if role != "engine":
        if room is None:
            room = config.rooms[0].id
        config.room(room)  # refuse an unknown room before anything starts
    stop = threading.Event()
    install_stop_handlers(stop)
    log = EventLog(events_path(config, role, None if role == "engine" else room), role, room)
    log("started", pid=os.getpid())
    try:
        if role == "engine":
            from engine.server import EngineServer

            EngineServer(config, log).run(stop)
        elif role == "capture":
            from capture.role import run_capture

            assert room is not None
            run_capture(config, room, stop, log)
        else:
            from audio_out.role import run_audio_out

            assert room is not None
            run_audio_out(config, room, stop, log)
    finally:
        log("stopped")
        log.close()
    return 0
