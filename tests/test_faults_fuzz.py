"""Fuzz every inbound socket of every role process with 10,000 bad frames.

The three roles run as real processes (``python -m installation role ...``).
The test plays everyone they talk to: it binds the control endpoint (as the
supervisor) and audio_out's chunks endpoint (as an engine), and connects to
the engine's views and clock endpoints (as capture and audio_out). It sends
malformed, truncated, oversized, wrong-version, badly framed, wrong-topic
and inconsistent-array frames, each classified by the protocol's own
decoder before sending, so the expected drop count per socket and reason is
exact. Then it checks, through each role's Prometheus endpoint while they
run and through their final ``stats`` events, that every frame was counted
as dropped, and that no role crashed.

Senders never lose frames on the way: XPUB sockets with an unlimited send
queue wait for each subscription first (ZeroMQ applies back-pressure
instead of dropping), so a missing count is a role's miss, not the wire's.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from installation.config import config_from_dict, freeze_config
from installation.events import read_events
from installation.protocol import (
    PROTOCOL_VERSION,
    Array,
    ArtworkView,
    AudioChunk,
    Control,
    PlaybackClock,
    ProtocolError,
    decode,
    encode,
)

pytestmark = pytest.mark.slow
MAX_BYTES = 65536
PORT = 5951
METRICS = 9451


def _valid(kind: str, room: str) -> Any:
    if kind == "views":
        return ArtworkView(v=PROTOCOL_VERSION, room=room, seq=1, time=1.0, state="artwork",
                           artwork_id="x", confidence=0.5, features={"brightness": 0.4})
    if kind == "clock":
        return PlaybackClock(v=PROTOCOL_VERSION, room=room, sample_rate=48000, playhead=10,
                             buffered_until=10, wall_time=1.0)
    if kind == "chunks":
        audio = Array.from_numpy(np.zeros((64, 2), np.float32))
        return AudioChunk(v=PROTOCOL_VERSION, room=room, seq=1, start_sample=0,
                          sample_rate=48000, audio=audio)
    return Control(v=PROTOCOL_VERSION, room=room, target="*", command="ping")


def bad_frames(kind: str, room: str, count: int, rng: random.Random) -> list[list[bytes]]:
    """``count`` frames that :func:`decode` refuses, in rotating flavours."""
    valid = encode(_valid(kind, room))
    topic = room.encode()
    frames: list[list[bytes]] = []
    flavour = 0
    while len(frames) < count:
        flavour = (flavour + 1) % 9
        if flavour == 0:  # random bytes
            candidate = [topic, rng.randbytes(rng.randint(0, 300))]
        elif flavour == 1:  # a valid message truncated
            candidate = [topic, valid[1][: rng.randint(0, len(valid[1]) - 1)]]
        elif flavour == 2:  # another protocol version
            message = _valid(kind, room)
            candidate = encode(type(message)(**{**_fields(message), "v": PROTOCOL_VERSION + 1}))
        elif flavour == 3:  # oversized: the parts together exceed the limit
            candidate = [topic + b"x" * (MAX_BYTES // 2), b"\x80" * (MAX_BYTES // 2 + 10)]
        elif flavour == 4:  # one frame only
            candidate = [topic + rng.randbytes(rng.randint(0, 40))]
        elif flavour == 5:  # three frames
            candidate = [topic, valid[1], b"extra"]
        elif flavour == 6:  # topic says another room
            candidate = [topic + b"-other", valid[1]]
        elif flavour == 7:  # an array that lies about its size
            liar = Array(dtype="float32", shape=(64, 2), data=rng.randbytes(rng.randint(0, 500)))
            if kind == "chunks":
                message = AudioChunk(v=PROTOCOL_VERSION, room=room, seq=1, start_sample=0,
                                     sample_rate=48000, audio=liar)
            else:
                message = ArtworkView(v=PROTOCOL_VERSION, room=room, seq=1, time=1.0,
                                      state="artwork", embedding=liar)
            candidate = encode(message)
        else:  # msgpack of the wrong shape entirely
            candidate = [topic, b"\x93\x01\x02\x03"]
        try:
            decode(candidate, MAX_BYTES)
        except ProtocolError:
            frames.append(candidate)
    return frames


def _fields(message: Any) -> dict[str, Any]:
    return {name: getattr(message, name) for name in message.__struct_fields__}


def _reasons(frames: list[list[bytes]]) -> Counter[str]:
    reasons: Counter[str] = Counter()
    for frame in frames:
        try:
            decode(frame, MAX_BYTES)
        except ProtocolError as error:
            reasons[error.reason] += 1
    return reasons


def _configs(tmp_path: Path) -> tuple[Path, Path]:
    import cv2

    from capture.config import DemoSourceConfig
    from capture.sources import DemoCamera

    images = tmp_path / "images"
    images.mkdir()
    camera = DemoCamera(DemoSourceConfig(artworks=1, width=320, height=180), clock=lambda: 0.0,
                        start=0.0)
    cv2.imwrite(str(images / "wall.png"), camera.render(5.0))
    base: dict[str, Any] = {
        "installation": {"output_dir": str(tmp_path / "out")},
        "network": {"views": f"tcp://127.0.0.1:{PORT}", "chunks": f"tcp://127.0.0.1:{PORT + 1}",
                    "clock": f"tcp://127.0.0.1:{PORT + 2}",
                    "control": f"tcp://127.0.0.1:{PORT + 3}", "max_message_bytes": MAX_BYTES},
        "engine": {"generator": "sine"},
        "metrics": {"port": METRICS},
        "supervisor": {"heartbeat_s": 0.2},
        "capture": {"source": f"images:{images}", "fps": 2, "detect_width": 320},
        "audio_out": {"output": "none"},
        "rooms": [{"id": "a"}],
    }
    engine = freeze_config(config_from_dict(base), tmp_path / "engine.json")
    rooms = dict(base, network=base["network"] | {"chunks": f"tcp://127.0.0.1:{PORT + 5}"})
    return engine, freeze_config(config_from_dict(rooms), tmp_path / "rooms.json")


def _dropped_by_socket(port: int) -> dict[str, float]:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
    except OSError:
        return {}
    totals: dict[str, float] = {}
    for line in text.decode().splitlines():
        if line.startswith("art2mus_messages_dropped_total{"):
            labels, value = line.rsplit(" ", 1)
            socket = labels.split('socket="')[1].split('"')[0]
            totals[socket] = totals.get(socket, 0.0) + float(value)
    return totals


def _wait_subscribers(socket: zmq.Socket, count: int, timeout_s: float = 30.0) -> None:
    seen = 0
    deadline = time.monotonic() + timeout_s
    while seen < count:
        assert time.monotonic() < deadline, f"only {seen} of {count} subscribers arrived"
        if socket.poll(100):
            if socket.recv()[:1] == b"\x01":
                seen += 1


def test_ten_thousand_bad_frames_are_all_counted_and_crash_nothing(tmp_path: Path) -> None:
    engine_config, rooms_config = _configs(tmp_path)
    rng = random.Random(1234)
    plan = {"views": 2500, "clock": 2500, "control": 2000, "chunks": 3000}
    frames = {kind: bad_frames(kind, "a" if kind != "control" else "*", n, rng)
              for kind, n in plan.items()}
    assert sum(len(f) for f in frames.values()) == 10_000

    context = zmq.Context()
    control = context.socket(zmq.XPUB)
    control.setsockopt(zmq.XPUB_VERBOSE, 1)
    control.setsockopt(zmq.SNDHWM, 0)
    control.bind(f"tcp://127.0.0.1:{PORT + 3}")
    chunks = context.socket(zmq.XPUB)
    chunks.setsockopt(zmq.SNDHWM, 0)
    chunks.bind(f"tcp://127.0.0.1:{PORT + 5}")
    base = [sys.executable, "-m", "installation", "role"]
    processes = {
        "engine": subprocess.Popen(base + ["engine", "--config", str(engine_config)]),
        "audio_out": subprocess.Popen(base + ["audio_out", "--config", str(rooms_config),
                                              "--room", "a"]),
        "capture": subprocess.Popen(base + ["capture", "--config", str(rooms_config),
                                            "--room", "a"]),
    }
    views = context.socket(zmq.XPUB)  # connects like capture's PUB, sees the engine's SUB
    views.setsockopt(zmq.SNDHWM, 0)
    views.connect(f"tcp://127.0.0.1:{PORT}")
    clock = context.socket(zmq.PUSH)
    clock.setsockopt(zmq.SNDHWM, 0)
    clock.connect(f"tcp://127.0.0.1:{PORT + 2}")
    try:
        _wait_subscribers(control, 3)
        _wait_subscribers(chunks, 1)
        _wait_subscribers(views, 1)
        began = time.monotonic()
        for kind, socket in (("views", views), ("clock", clock), ("control", control),
                             ("chunks", chunks)):
            for frame in frames[kind]:
                socket.send_multipart(frame)
        expected = {
            METRICS + 1: {"views": 2500, "clock": 2500, "control": 2000},  # engine
            METRICS + 2: {"chunks": 3000, "control": 2000},  # audio_out
            METRICS + 3: {"control": 2000},  # capture
        }
        deadline = time.monotonic() + 60
        counted: dict[int, dict[str, float]] = {}
        while time.monotonic() < deadline:
            counted = {port: _dropped_by_socket(port) for port in expected}
            if all(counted[p] == {k: float(v) for k, v in want.items()}
                   for p, want in expected.items()):
                break
            time.sleep(0.3)
        elapsed = time.monotonic() - began
        assert counted == {p: {k: float(v) for k, v in want.items()}
                           for p, want in expected.items()}, counted
        # A single frame beyond MAXMSGSIZE never reaches the role: ZeroMQ drops the
        # connection (and the sender reconnects). The role must simply survive it.
        views.send_multipart([b"a", b"\x00" * (MAX_BYTES + 1)])
        clock.send_multipart([b"a", b"\x00" * (MAX_BYTES + 1)])
        time.sleep(0.5)
        assert all(p.poll() is None for p in processes.values()), {
            name: p.returncode for name, p in processes.items()}
        for _ in range(3):
            control.send_multipart(encode(Control(v=PROTOCOL_VERSION, room="*", target="*",
                                                  command="shutdown")))
            time.sleep(0.05)
        codes = {name: p.wait(timeout=20) for name, p in processes.items()}
    finally:
        for p in processes.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        for socket in (control, chunks, views, clock):
            socket.close(linger=0)
        context.term()
    assert codes == {"engine": 0, "audio_out": 0, "capture": 0}

    # The final stats events agree, reason by reason.
    events = tmp_path / "out" / "events"
    final = {name: [e for e in read_events(events / f"{name}.jsonl") if e["kind"] == "stats"][-1]
             for name in ("engine", "audio_out-a", "capture-a")}
    assert final["engine"]["dropped"]["views"] == dict(_reasons(frames["views"]))
    assert final["engine"]["dropped"]["clock"] == dict(_reasons(frames["clock"]))
    assert final["engine"]["dropped"]["control"] == dict(_reasons(frames["control"]))
    assert final["audio_out-a"]["dropped"]["chunks"] == dict(_reasons(frames["chunks"]))
    assert final["capture-a"]["dropped_total"]["control"] == 2000
    reasons = sum((_reasons(f) for f in frames.values()), Counter())
    print(f"\nFUZZ FIGURES: 10000 frames sent, 14000 drops counted (control reaches 3 roles) "
          f"in {elapsed:.2f} s; by reason {dict(reasons)}")
