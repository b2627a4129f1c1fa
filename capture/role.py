"""The capture role as a process: a :class:`~capture.loop.CaptureLoop` publishing over ZeroMQ.

It connects a PUB socket to the engine's views endpoint and a SUB socket to
the supervisor's control endpoint, and runs the loop until told to stop.
"""

from __future__ import annotations

import threading

import zmq

from capture.loop import CaptureLoop
from installation.config import InstallationConfig
from installation.events import EventSink
from installation.protocol import ArtworkView, Control
from installation.transport import Inbox, make_socket, send


def run_capture(
    config: InstallationConfig, room_id: str, stop: threading.Event, log_event: EventSink
) -> None:
    """Run one room's capture until ``stop`` is set or a shutdown Control arrives."""
    import cv2

    # One core per room: OpenCV's own thread pool would compete with the
    # engine and audio_out for the same cores.
    cv2.setNumThreads(1)
    room = config.room(room_id)
    net = config.network
    context: zmq.Context = zmq.Context.instance()
    views = make_socket(context, zmq.PUB, net.views, bind=False)
    control = Inbox(
        make_socket(context, zmq.SUB, net.control, bind=False, max_bytes=net.max_message_bytes),
        net.max_message_bytes,
    )

    def publish(view: ArtworkView) -> None:
        if not send(views, view):
            log_event("view_dropped", seq=view.seq)

    def watch_control() -> None:
        while not stop.is_set():
            if control.socket.poll(100):
                for message in control.drain():
                    if (isinstance(message, Control) and message.command == "shutdown"
                            and message.target in ("*", "capture")):
                        stop.set()

    watcher = threading.Thread(target=watch_control, name="capture-control", daemon=True)
    watcher.start()
    loop = CaptureLoop(room.id, room.capture, publish, log_event)
    try:
        loop.run(stop)
    finally:
        stop.set()
        watcher.join(timeout=1.0)
        views.close()
        control.socket.close()
