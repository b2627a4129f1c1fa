"""A flood of valid OSC changes (audit 4, ``osc_flood.py change``: 10,000 a second) wrote one
``control_set`` event each: the supervisor's event log rotated every 20 s and the whole
history (restarts, hangs) was gone in two minutes, and the run report, which holds the
last 30 s of events it follows, grew by some 200 MB. Now the events are coalesced per
parameter, room and source (one a second at most, carrying the last value and how many
changes it stands for), a queued set is replaced by a newer one of the same parameter,
and a dead echo target is one event per interval, not one per change.

Datagrams through :meth:`OscControlServer.datagram` (what OSC in calls for each UDP
packet) into a real hub and a real, small, rotating event log; time is a fake clock.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from ground.events import EventLog, MemorySink, read_events
from installation.config import OscConfig, config_from_dict
from installation.control import ControlHub
from installation.osc import OscControlServer, OscParameterEcho

CONFIG = config_from_dict({"rooms": [{"id": "r1"}], "control": {"scenes": [
    {"name": "calm", "program": 0, "params": {"intensity": 0.2}},
    {"name": "storm", "program": 1, "params": {"intensity": 0.9}}]}})
#: What osc_flood.py cycles through.
VALUES = [round(0.2 + (i % 60) / 100, 2) for i in range(60)]


def _message(address: str, tag: str, value: object) -> bytes:
    """One OSC message with one argument, as osc_flood.py builds it."""
    def pad(b: bytes) -> bytes:
        return b + b"\0" * (4 - len(b) % 4)
    argument = struct.pack(">f", value) if tag == "f" else pad(str(value).encode())
    return pad(address.encode()) + pad(f",{tag}".encode()) + argument


class Clock:
    """A monotonic clock the test moves."""

    now = 0.0

    def __call__(self) -> float:
        return self.now


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def log(tmp_path: Path) -> Iterator[EventLog]:
    """The supervisor's event log, small: a flood of events would rotate it at once."""
    events = EventLog(tmp_path / "supervisor.jsonl", "supervisor", max_bytes=64 * 1024,
                      backups=1)
    yield events
    events.close()


def _osc_in(hub: ControlHub, log: EventLog) -> OscControlServer:
    return OscControlServer.start(OscConfig(listen=f"127.0.0.1:{_free_udp_port()}"), hub, log)


def test_a_flood_of_valid_changes_leaves_the_event_history_in_place(
        tmp_path: Path, clock: Clock, log: EventLog) -> None:
    hub = ControlHub(CONFIG, log, clock=clock)
    server = _osc_in(hub, log)
    log("role_exited", role="engine", code=-9)  # the history a technician looks for later
    flood = 10_000
    try:
        for i in range(flood):  # 10,000 changes in 2 s of the fake clock
            clock.now = i * 2.0 / flood
            server.datagram(_message("/art2mus/r1/intensity", "f", VALUES[i % 60]),
                            "udp:10.0.0.66:5000")
        queued = hub.pending()  # what the supervisor's loop sends: the newest value, once
        clock.now += 1.0
        hub.pending()  # its next turn writes what the last second held
    finally:
        server.close()
    log.close()
    events = list(read_events(tmp_path / "supervisor.jsonl"))
    assert server.refused == 0 and server.received == flood
    assert "role_exited" in [e["kind"] for e in events]  # not rotated away
    sets = [e for e in events if e["kind"] == "control_set"]
    assert len(sets) <= 4  # the first at once, then one a second of the fake clock
    assert sum(e.get("changes", 1) for e in sets) == flood  # every change accounted for
    assert sets[-1]["value"] == VALUES[(flood - 1) % 60] == hub.current("intensity", "r1")
    assert [m.params for m in queued] == [{"intensity": VALUES[(flood - 1) % 60]}]


def test_one_change_is_still_one_event_at_once(clock: Clock) -> None:
    events = MemorySink()
    hub = ControlHub(CONFIG, events, clock=clock)
    hub.set("volume", 0.5, "r1", source="console")
    assert events.of("control_set") == [
        {"name": "volume", "value": 0.5, "room": "r1", "source": "console"}]
    clock.now = 0.5
    hub.set("volume", 0.6, "r1", source="console")
    hub.set("intensity", 0.3, "r1", source="console")  # another parameter: its own, at once
    hub.pending()
    assert [e["name"] for e in events.of("control_set")] == ["volume", "intensity"]
    clock.now = 1.0  # a second after the last volume event: the one change it held
    hub.pending()
    assert events.of("control_set")[-1] == {
        "name": "volume", "value": 0.6, "room": "r1", "source": "console"}


def test_a_flood_of_scene_recalls_is_coalesced_too(clock: Clock, log: EventLog,
                                                    tmp_path: Path) -> None:
    hub = ControlHub(CONFIG, log, clock=clock)
    server = _osc_in(hub, log)
    try:
        for i in range(2_000):
            clock.now = i / 2_000
            server.datagram(_message("/art2mus/scene", "s", ("calm", "storm")[i % 2]))
        clock.now = 2.0
        hub.flush_events(force=True)
    finally:
        server.close()
    log.close()
    kinds = [e["kind"] for e in read_events(tmp_path / "supervisor.jsonl")]
    assert kinds.count("scene_recalled") <= 4 and kinds.count("control_set") <= 2


def test_an_echo_to_a_dead_target_is_one_event_per_interval_not_one_per_change() -> None:
    events = MemorySink()
    hub = ControlHub(CONFIG, events)
    echo = OscParameterEcho(OscConfig(send=("127.0.0.1:9",)), hub, events)

    class Dead:
        def send_message(self, address: str, value: float) -> None:
            raise OSError(101, "Network is unreachable")

        def close(self) -> None:
            pass

    for _, client in echo.targets:
        client.close()
    echo.targets = [(origin, Dead()) for origin, _ in echo.targets]  # type: ignore[misc]
    try:
        for i in range(500):
            hub.set("intensity", VALUES[i % 60], "r1", source="midi")
    finally:
        echo.close()
    failed = events.of("osc_send_failed")
    assert echo.failures == 500
    assert len(failed) == 1 and failed[0]["count"] == 1
    assert "Network is unreachable" in failed[0]["error"]


def test_the_supervisor_sends_a_flood_as_its_newest_values_at_a_bounded_rate(
        tmp_path: Path) -> None:
    """Each of 10,000 changes went to the engine as its own Control: 51,607 re-plans and
    ``controls`` events in 20 s, which the supervisor's run report then read back. The
    control PUB now takes its turn every CONTROL_SEND_EVERY_S (a fake time here)."""
    from installation.supervisor import CONTROL_SEND_EVERY_S, Supervisor

    config = config_from_dict({
        "network": {name: f"tcp://127.0.0.1:{6531 + k}"
                    for k, name in enumerate(["views", "chunks", "clock", "control"])},
        "rooms": [{"id": "r1"}]})
    supervisor = Supervisor(config, tmp_path / "c.json", MemorySink(), roles=[])
    try:
        supervisor._send_controls(0.0)  # a turn: nothing queued
        for i in range(10_000):
            supervisor.hub.set("intensity", VALUES[i % 60], "r1", source="osc")
        supervisor._send_controls(CONTROL_SEND_EVERY_S / 2)  # not its turn yet
        assert supervisor.sent_controls == 0
        supervisor._send_controls(CONTROL_SEND_EVERY_S)
        assert supervisor.sent_controls == 1  # the newest value, once
        assert supervisor.hub.pending() == []
    finally:
        supervisor._control.close()
        supervisor.metrics.close()
