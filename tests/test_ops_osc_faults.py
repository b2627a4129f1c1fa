"""Background senders that must outlive one failure: OSC out's state thread, the Link
poll, and the role rows they read while the supervisor restarts a role."""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from polling import wait_until

from ground.events import null_sink
from installation.config import LinkConfig, OscConfig, config_from_dict
from installation.control import ControlHub
from installation.osc import OscStateSender
from installation.supervisor import RoleProcess, Supervisor
from installation.tempo_sync import LinkSync

CONFIG = config_from_dict({"rooms": [{"id": "a"}]})


def _events() -> tuple[list[tuple[str, dict[str, Any]]], Any]:
    events: list[tuple[str, dict[str, Any]]] = []
    lock = threading.Lock()

    def log_event(kind: str, **fields: Any) -> None:
        with lock:
            events.append((kind, fields))

    return events, log_event


def _free_tcp_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_osc_out_goes_on_after_any_failure_and_says_so_once_per_streak(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="installation.osc")
    events, log_event = _events()
    calls = {"n": 0}

    def rows() -> list[dict[str, Any]]:
        calls["n"] += 1
        if calls["n"] in (2, 3):  # a restart racing the read (not a network error)
            raise AttributeError("'NoneType' object has no attribute 'status'")
        if calls["n"] == 5:
            raise OSError("network is unreachable")
        return [{"name": "audio_out:a", "kind": "audio_out", "room": "a", "state": "running",
                 "status": {}}]

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as target:
        target.bind(("127.0.0.1", 0))
        sender = OscStateSender.start(
            OscConfig(send=(f"127.0.0.1:{target.getsockname()[1]}",), send_hz=100.0), rows,
            ["a"], log_event)
        try:
            wait_until(lambda: calls["n"] >= 8)
            assert sender._thread is not None and sender._thread.is_alive()
        finally:
            sender.close()
    kinds = [kind for kind, _ in events]
    assert kinds[:4] == ["osc_send_failed", "osc_send_recovered",
                         "osc_send_failed", "osc_send_recovered"]
    assert events[0][1]["error"].startswith("AttributeError(")
    assert events[1][1] == {"failed_periods": 2} and sender.failures == 3
    assert sender.sent >= 6 * 5  # every period but the three failed ones sent the room
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "sending the room state failed" in warnings[0]


class _FlakyLink:
    """An aalink.Link look-alike whose session cannot be read on some polls."""

    def __init__(self, tempo: float) -> None:
        self.tempo = tempo
        self.beat = self.phase = 0.0
        self.quantum = 4.0
        self.enabled = False
        self.polls = 0

    @property
    def num_peers(self) -> int:
        self.polls += 1
        if self.polls in (2, 3):
            raise RuntimeError("the Link session is gone for a moment")
        return 1


def test_link_goes_on_polling_after_a_poll_raises_and_says_so_once_per_streak() -> None:
    events, log_event = _events()
    link = _FlakyLink(128.0)

    class Module:
        @staticmethod
        def Link(tempo: float) -> _FlakyLink:  # noqa: N802 - aalink's name
            return link

    hub = ControlHub(CONFIG, log_event)
    sync = LinkSync.start(LinkConfig(enabled=True), hub, lambda: None, log_event,
                          link_module=Module())
    try:
        wait_until(lambda: link.polls >= 5)
        assert sync._thread.is_alive()
    finally:
        sync.close()
    kinds = [kind for kind, _ in events]
    assert kinds.count("link_step_failed") == 1 and "link_failed" not in kinds
    assert kinds.index("link_step_failed") < kinds.index("link_step_recovered")
    assert sync.step_failures == 2
    assert hub.current("tempo_bpm") == 128.0  # followed before and after the failures
    assert link.enabled is False  # left the session on close


class _RestartedHeartbeat:
    """A heartbeat whose role is restarted (its heartbeat set to None) as soon as it is read."""

    def __init__(self, role: RoleProcess) -> None:
        self.role = role
        self.status = {"state": "playing"}
        self._last_beat = 1.0

    @property
    def last_beat(self) -> float:
        self.role.heartbeat = None  # what Supervisor._spawn does, from another thread
        return self._last_beat


class _Process:
    pid = 4242


def test_role_rows_read_a_role_once_while_it_is_restarted(tmp_path: Path) -> None:
    port = _free_tcp_port()
    config = config_from_dict({
        "network": {"control": f"tcp://127.0.0.1:{port}"}, "rooms": [{"id": "a"}]})
    role = RoleProcess("audio_out:a", ["true"], kind="audio_out", room="a")
    supervisor = Supervisor(config, tmp_path / "c.json", null_sink, roles=[role])
    try:
        role.process = _Process()  # type: ignore[assignment]
        role.heartbeat = _RestartedHeartbeat(role)  # type: ignore[assignment]
        (row,) = supervisor.role_rows()
    finally:
        supervisor._control.close(linger=0)
    assert row["pid"] == 4242 and row["status"] == {"state": "playing"}
    assert row["heartbeat_age_s"] is not None and row["state"] in ("running", "silent")
