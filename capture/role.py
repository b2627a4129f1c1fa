"""The capture role as a process: a :class:`~capture.loop.CaptureLoop` publishing over ZeroMQ.

It connects a PUB socket to the engine's views endpoint and a SUB socket to
the supervisor's control endpoint, and runs the loop until told to stop.

The heartbeat carries the loop's effective frame rate (``fps``, lower while
it sheds load; also the ``art2mus_capture_fps`` metric), the ``title`` and
``artist`` of the published work (its catalogue entry; ``""`` when it has
none), ``showing`` (the work shown instead of the camera, or None) and
``catalogue`` (:attr:`CaptureLoop.catalogue_state`: its works, or that it is
opening, updating or failed, and why), and
the camera's health: ``camera`` (``ok``, ``lost``, or for a network stream
also ``reconnecting``), ``camera_fps`` (the camera's own rate), ``reconnects``
and ``frame_age_s``, also the ``art2mus_camera_*`` metrics.

Control ``set`` messages for this room may carry ``show_artwork`` and
``show_for_s`` (the console's "show this work"): they go to
:meth:`CaptureLoop.apply_set`, which refuses and counts what it cannot follow.

The frame source is wrapped in a :class:`FrameWatch`, which is how this role
knows, from inside the loop's own thread, that the loop is alive (it sends
the supervisor's heartbeat there) and whether the camera still delivers.
While the camera delivers nothing (unplugged, network camera gone; the
source keeps trying to reopen it) the loop's periodic re-sends of the last
view are held back: capture no longer vouches for a painting it cannot see,
so the engine moves the room to its empty-room ambience after
``engine.view_timeout_s``; once frames return the views flow again.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import zmq

from capture.config import CaptureConfig
from capture.loop import CaptureLoop
from capture.sources import ReportsCameraHealth, open_source
from capture.watch import FrameWatch
from ground.config import NetworkConfig, SecurityConfig
from ground.events import EventSink
from ground.health import Heartbeat
from ground.metrics import Metrics
from ground.protocol import ArtworkView
from ground.shell import RoleShell
from ground.transport import send

#: The longest title or artist the heartbeat carries, characters.
MAX_NAME_CHARS = 120


@dataclass(frozen=True)
class CaptureRoleConfig:
    """What one room's capture is handed: its section and the ground-floor sections."""

    room: str
    capture: CaptureConfig
    network: NetworkConfig = field(default_factory=NetworkConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)


def run_capture(
    config: CaptureRoleConfig, stop: threading.Event, log_event: EventSink,
    heartbeat: Heartbeat | None = None, metrics: Metrics | None = None,
) -> None:
    """Run one room's capture until ``stop`` is set or a shutdown Control arrives."""
    import cv2

    # One core per room: OpenCV's own thread pool would compete with the
    # engine and audio_out for the same cores.
    cv2.setNumThreads(1)
    room_id = config.room
    net = config.network
    shell = RoleShell("capture", room_id, net, config.security, stop, heartbeat, metrics)
    metrics = shell.metrics
    # Views stop being re-sent this long after the camera's last frame.
    stale_after_s = max(2.0, 2.0 * config.capture.heartbeat_s)
    views = shell.socket(zmq.PUB, net.views, bind=False)
    last: dict[str, Any] = {"artwork_id": None, "confidence": 0.0, "state": "empty",
                            "camera": "ok", "held_back": 0}

    counted = {"frames": 0, "at": time.monotonic()}  # for the camera rate of plain sources

    def camera_status() -> dict[str, Any]:
        # A network stream reports its own health (state, its own rate, reconnects);
        # for any other source, what the watch saw of its frames.
        if isinstance(source.source, ReportsCameraHealth):
            return source.source.health().status()
        now = time.monotonic()
        rate = (watch.frames - counted["frames"]) / max(now - counted["at"], 1e-3)
        counted.update(frames=watch.frames, at=now)
        return {"camera": last["camera"], "camera_fps": round(rate, 1), "reconnects": 0,
                "frame_age_s": round(watch.no_frames_for(), 2)}

    def status() -> dict[str, Any]:
        fps = round(loop.rate.fps, 2)  # effective: lower while capture sheds load
        camera = camera_status()
        metrics.set_confidence(room_id, float(last["confidence"]))
        metrics.set_capture_fps(room_id, fps)
        metrics.set_camera(room_id, camera["camera"] == "ok", camera["camera_fps"],
                           camera["frame_age_s"], camera["reconnects"])
        catalogue, artwork_id = loop.catalogue, last["artwork_id"]
        entry = catalogue.entry(artwork_id) if catalogue is not None and artwork_id else None
        # Cut: a heartbeat line must stay under ground.health.MAX_LINE_BYTES.
        title = entry.title[:MAX_NAME_CHARS] if entry is not None else ""
        metrics.set_artwork(room_id, artwork_id, title)
        return dict(last, frames=watch.frames, fps=fps, title=title,
                    artist=entry.artist[:MAX_NAME_CHARS] if entry is not None else "",
                    showing=loop.showing, catalogue=loop.catalogue_state,
                    lens=loop.lens_state) | camera

    def publish(view: ArtworkView) -> None:
        # A shown work is not the camera's word: it is published while the camera is lost.
        if watch.no_frames_for() > stale_after_s and loop.showing is None:
            if last["camera"] == "ok":
                log_event("camera_lost", silent_s=round(watch.no_frames_for(), 2),
                          artwork_id=last["artwork_id"])
            last["camera"] = "lost"
            last["held_back"] += 1
            return
        if last["camera"] != "ok":
            log_event("camera_back", held_back=last["held_back"])
            last["camera"] = "ok"
        last.update(artwork_id=view.artwork_id, confidence=round(view.confidence, 3),
                    state=view.state)
        if not send(views, view):
            log_event("view_dropped", seq=view.seq)

    def watch_control() -> None:
        # The loop blocks in its frame reads: control is read here, and a shutdown
        # sets the stop event the loop checks; "show this work" goes to the loop.
        while not stop.is_set():
            if shell.control.socket.poll(100):
                for message in shell.controls():
                    loop.apply_set(message.params)

    watch = FrameWatch(lambda: shell.beat(status))
    source = watch.attach(open_source(config.capture))
    loop = CaptureLoop(room_id, config.capture, publish, log_event, source=source)
    watcher = threading.Thread(target=watch_control, name="capture-control", daemon=True)
    watcher.start()
    try:
        loop.run(stop)
    finally:
        stop.set()
        watcher.join(timeout=1.0)
        log_event("stats", **shell.stats())
        shell.close()
