"""Fuzz every inbound socket of every role process with 10,000 bad frames each.

The three roles run as real processes (``python -m installation role ...``).
The test plays everyone they talk to: it binds the control endpoint (as the
supervisor) and audio_out's chunks endpoint (as an engine), and connects to
the engine's views and clock endpoints (as capture and audio_out). It sends
malformed, truncated, oversized, wrong-version, badly framed, wrong-topic
and inconsistent-array frames, each classified by the protocol's own
decoder before sending, so the expected drop count per socket and reason is
exact. The engine's chunks XPUB gets 10,000 subscription frames of random
sizes (topics that are no room, too long, not subscriptions at all), a
subscription over the publishers' size limit that its sender re-sends on
every reconnect, and one of 20 MB. Then it checks, through each role's
Prometheus endpoint while they run and through their final ``stats``
events, that every frame was counted as dropped, that the engine subscribed
only the configured room and kept serving it, and that no role crashed.

Senders never lose frames on the way: XPUB sockets with an unlimited send
queue wait for each subscription first (ZeroMQ applies back-pressure
instead of dropping), so a missing count is a role's miss, not the wire's.
"""

from __future__ import annotations

import random
import socket
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

from ground.events import read_events
from ground.protocol import (
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
from installation.config import config_from_dict, freeze_config

pytestmark = pytest.mark.slow
MAX_BYTES = 65536
PORT = 6450  # 6450-6455
METRICS = 6460  # 6460-6463
PER_SOCKET = 10_000


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


def subscription_frames(count: int, rng: random.Random) -> tuple[list[bytes], Counter[str]]:
    """``count`` frames for the chunks XPUB that the engine must refuse, and their reasons.

    Sizes are random up to 900 bytes, under the publishers' limit, so each
    reaches the engine. Every topic is distinct and is unsubscribed at most
    once after its subscription: ZeroMQ passes a subscription up only when it
    is the first to its topic, and an unsubscription only when it is the last.
    """
    frames: list[bytes] = []
    reasons: Counter[str] = Counter()
    seen: set[bytes] = {b"", b"a"}
    unsubscribable: list[bytes] = []
    while len(frames) < count:
        flavour = len(frames) % 4
        if flavour == 1 and unsubscribable:  # leave a topic that is no room
            frames.append(b"\x00" + unsubscribable.pop())
            reasons["unknown-room"] += 1
        elif flavour in (0, 1):  # a topic that is no room (random bytes, often not UTF-8)
            topic = rng.randbytes(rng.randint(1, 64))
            if topic not in seen:
                seen.add(topic)
                unsubscribable.append(topic)
                frames.append(b"\x01" + topic)
                reasons["unknown-room"] += 1
        elif flavour == 2:  # longer than a room id can be
            topic = rng.randbytes(int(65 * (900 / 65) ** rng.random()))
            if topic not in seen:
                seen.add(topic)
                frames.append(b"\x01" + topic)
                reasons["too-long"] += 1
        else:  # no subscription at all: another flag byte, or an empty frame
            size = int(900 ** rng.random())
            frames.append(bytes([rng.randint(2, 255)]) + rng.randbytes(size) if size else b"")
            reasons["bad-subscription"] += 1
    return frames, reasons


def raw_subscription(port: int, size: int) -> bool:
    """Send one ``size``-byte subscription as a SUB peer; True when the engine hung up.

    pyzmq's own SUB or XSUB would first file the topic in a trie of its own
    (a node per byte, 20 million of them), so this speaks ZMTP 3.0 (RFC 23)
    over a plain TCP socket: greeting, READY as a SUB, then the frame.
    """
    greeting = (b"\xff" + b"\x00" * 8 + b"\x7f" + bytes([3, 0]) + b"NULL".ljust(20, b"\x00")
                + b"\x00" * 32)
    body = b"\x05READY" + bytes([11]) + b"Socket-Type" + (3).to_bytes(4, "big") + b"SUB"
    ready = bytes([0x04, len(body)]) + body
    frame_header = bytes([0x02]) + size.to_bytes(8, "big") + b"\x01"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        try:
            conn.sendall(greeting + ready + frame_header)
            chunk = b"z" * (1 << 20)
            for _ in range(size // len(chunk)):
                conn.sendall(chunk)
        except OSError:
            return True  # refused while sending: the size alone was enough
        try:
            while conn.recv(65536):  # the engine's greeting and READY, then end of stream
                pass
        except TimeoutError:
            return False
        except OSError:
            return True
        return True


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
    from capture.synthetic.camera import DemoCamera

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
    # audio_out listens to the test's chunks, and reports its clock to nobody: the test is
    # room "a"'s only audio_out the engine hears (two on one room id are a duplicate room,
    # and the engine follows the first heard, not the test's clock)
    rooms = dict(base, network=base["network"] | {"chunks": f"tcp://127.0.0.1:{PORT + 5}",
                                                  "clock": f"tcp://127.0.0.1:{PORT + 4}"})
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


def _clock_for(room: str, playhead: int) -> list[bytes]:
    return encode(PlaybackClock(v=PROTOCOL_VERSION, room=room, sample_rate=48000,
                                playhead=playhead, buffered_until=playhead,
                                wall_time=time.time()))


def _next_chunk(listener: zmq.Socket, after_seq: int, timeout_s: float = 20.0) -> AudioChunk:
    """The first chunk with a seq above ``after_seq`` the engine sends (it keeps serving)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if listener.poll(200):
            message = decode(listener.recv_multipart())
            assert isinstance(message, AudioChunk) and message.room == "a"
            if message.seq > after_seq:
                return message
    raise AssertionError(f"the engine sent no chunk after seq {after_seq}")


def _wait_handshake(monitor: zmq.Socket, timeout_s: float = 30.0) -> None:
    from zmq.utils.monitor import recv_monitor_message

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if monitor.poll(100) and (
                recv_monitor_message(monitor)["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED):
            return
    raise AssertionError("no handshake with the engine's chunks endpoint")


def test_ten_thousand_bad_frames_per_socket_are_all_counted_and_crash_nothing(
    tmp_path: Path,
) -> None:
    engine_config, rooms_config = _configs(tmp_path)
    rng = random.Random(1234)
    frames = {kind: bad_frames(kind, "a" if kind != "control" else "*", PER_SOCKET, rng)
              for kind in ("views", "clock", "control", "chunks")}
    subscriptions, subscription_reasons = subscription_frames(PER_SOCKET, rng)
    assert sum(len(f) for f in frames.values()) + len(subscriptions) == 5 * PER_SOCKET

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
    listener = context.socket(zmq.SUB)  # audio_out of room "a", on the engine's chunks
    listener.setsockopt(zmq.SUBSCRIBE, b"a")
    listener.connect(f"tcp://127.0.0.1:{PORT + 1}")
    subscriber = context.socket(zmq.XSUB)  # sends any subscription frame it is given
    subscriber.setsockopt(zmq.SNDHWM, 0)
    monitor = subscriber.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
    subscriber.connect(f"tcp://127.0.0.1:{PORT + 1}")
    resender = context.socket(zmq.XSUB)  # over the limit, re-sent on every reconnect
    sockets = [control, chunks, views, clock, listener, subscriber, monitor, resender]
    try:
        _wait_subscribers(control, 3)
        _wait_subscribers(chunks, 1)
        _wait_subscribers(views, 1)
        _wait_handshake(monitor)
        began = time.monotonic()
        for kind, sender in (("views", views), ("clock", clock), ("control", control),
                             ("chunks", chunks)):
            for frame in frames[kind]:
                sender.send_multipart(frame)
        for frame in subscriptions:
            subscriber.send(frame)
        expected = {
            METRICS + 1: {"views": PER_SOCKET, "clock": PER_SOCKET, "control": PER_SOCKET,
                          "subscriptions": PER_SOCKET},  # engine
            METRICS + 2: {"chunks": PER_SOCKET, "control": PER_SOCKET},  # audio_out
            METRICS + 3: {"control": PER_SOCKET},  # capture
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

        # The engine still serves room "a": given a playback clock, its chunks come.
        clock.send_multipart(_clock_for("a", 0))
        first = _next_chunk(listener, 0)
        # A single frame beyond MAXMSGSIZE never reaches the role: ZeroMQ drops the
        # connection (and the sender reconnects). The role must simply survive it.
        views.send_multipart([b"a", b"\x00" * (MAX_BYTES + 1)])
        clock.send_multipart([b"a", b"\x00" * (MAX_BYTES + 1)])
        # A subscription over the publishers' limit, which an XSUB re-sends on every
        # reconnect, and one of 20 MB (it stalled the engine and crashed it): ZeroMQ
        # hangs up on the sender before the engine sees either.
        resender.connect(f"tcp://127.0.0.1:{PORT + 1}")
        resender.send(b"\x01" + b"r" * 5000)
        assert raw_subscription(PORT + 1, 20 * 1024 * 1024)
        # Five seconds played: more is due. Sent again until chunks come, as audio_out's clock
        # is: the PUSH may write the first one into the connection the engine just dropped
        # for the oversized frame, and ZeroMQ loses what a dropped connection held.
        later = None
        for _ in range(10):
            clock.send_multipart(_clock_for("a", 5 * 48000))
            try:
                later = _next_chunk(listener, first.seq, timeout_s=2.0)
                break
            except AssertionError:
                continue
        assert later is not None, f"the engine sent no chunk after seq {first.seq}"
        # (not necessarily later on the timeline: a playhead 5 s on at once is a jump the
        # engine follows only once reports agree, and capture's view arriving meanwhile
        # starts a transition at its estimate of now, before the queued material's end)
        assert later.seq > first.seq and later.room == "a"
        assert _dropped_by_socket(METRICS + 1)["subscriptions"] == PER_SOCKET
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
        subscriber.disable_monitor()
        for each in sockets:
            each.close(linger=0)
        context.term()
    assert codes == {"engine": 0, "audio_out": 0, "capture": 0}

    # The final stats events agree, reason by reason.
    events = tmp_path / "out" / "events"
    final = {name: [e for e in read_events(events / f"{name}.jsonl") if e["kind"] == "stats"][-1]
             for name in ("engine", "audio_out-a", "capture-a")}
    assert final["engine"]["dropped"]["views"] == dict(_reasons(frames["views"]))
    assert final["engine"]["dropped"]["clock"] == dict(_reasons(frames["clock"]))
    assert final["engine"]["dropped"]["control"] == dict(_reasons(frames["control"]))
    assert final["engine"]["dropped"]["subscriptions"] == dict(subscription_reasons)
    assert final["audio_out-a"]["dropped"]["chunks"] == dict(_reasons(frames["chunks"]))
    assert final["capture-a"]["dropped_total"]["control"] == PER_SOCKET
    # What the engine accepted: the configured room, and nothing else ever.
    assert final["engine"]["subscribed"] == ["a"]
    engine_events = read_events(events / "engine.jsonl")
    assert {e["topic"] for e in engine_events if e["kind"] == "subscribed"} == {"a"}
    reasons = sum((_reasons(f) for f in frames.values()), Counter()) + subscription_reasons
    print(f"\nFUZZ FIGURES: {5 * PER_SOCKET} frames sent, {7 * PER_SOCKET} drops counted "
          f"(control reaches 3 roles) in {elapsed:.2f} s; by reason {dict(reasons)}")
