"""The supervisor on real processes: restart with backoff, finite roles, clean shutdown."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

from installation.config import config_from_dict
from installation.events import EventLog, read_events
from installation.supervisor import RoleProcess, Supervisor, role_processes

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def _config(port: int) -> object:
    return config_from_dict({
        "network": {
            name: f"tcp://127.0.0.1:{port + offset}"
            for offset, name in enumerate(["views", "chunks", "clock", "control"])
        },
        "supervisor": {"restart_backoff_s": 0.2, "stop_timeout_s": 2.0},
        "rooms": [{"id": "a"}],
    })


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_killed_role_is_restarted_and_shutdown_leaves_no_process(tmp_path: Path) -> None:
    log = EventLog(tmp_path / "events.jsonl", "supervisor")
    roles = [RoleProcess("victim", SLEEPER), RoleProcess("bystander", SLEEPER)]
    supervisor = Supervisor(_config(5811), tmp_path / "c.json", log, roles=roles)  # type: ignore[arg-type]
    stop = threading.Event()
    runner = threading.Thread(target=supervisor.run, args=(stop,))
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while (roles[0].pid is None or roles[1].pid is None) and time.monotonic() < deadline:
            time.sleep(0.02)
        first, bystander = roles[0].pid, roles[1].pid
        assert first is not None and bystander is not None
        os.kill(first, signal.SIGKILL)
        killed_at = time.monotonic()
        while (roles[0].pid in (None, first)) and time.monotonic() < deadline:
            time.sleep(0.02)
        restart_s = time.monotonic() - killed_at
        assert roles[0].pid not in (None, first), "the killed role was not restarted"
        assert restart_s < 3.0
        assert roles[1].pid == bystander  # the others kept running
    finally:
        stop.set()
        runner.join(timeout=15)
        log.close()
    pids = [first, roles[0].exit_codes and roles[0].pid, bystander]
    assert not runner.is_alive()
    assert not any(_alive(pid) for pid in pids if pid)
    kinds = [e["kind"] for e in read_events(tmp_path / "events.jsonl")]
    assert kinds.count("role_started") == 3 and "role_exited" in kinds


def test_backoff_grows_for_a_role_that_keeps_crashing(tmp_path: Path) -> None:
    crasher = RoleProcess("crasher", [sys.executable, "-c", "raise SystemExit(3)"])
    log = EventLog(tmp_path / "e.jsonl", "s")
    supervisor = Supervisor(_config(5821), tmp_path / "c.json", log,
                            roles=[crasher])  # type: ignore[arg-type]
    stop = threading.Event()
    threading.Timer(2.5, stop.set).start()
    supervisor.run(stop, poll_s=0.02)
    log.close()
    assert crasher.restarts >= 2 and set(crasher.exit_codes) == {3}
    assert crasher.backoff_s >= 0.8  # 0.2, 0.4, 0.8, ...


def test_the_installation_ends_when_every_finite_role_is_done(tmp_path: Path) -> None:
    done = RoleProcess("player", [sys.executable, "-c", "pass"], finite=True)
    other = RoleProcess("engine", SLEEPER)
    log = EventLog(tmp_path / "e.jsonl", "s")
    supervisor = Supervisor(_config(5831), tmp_path / "c.json", log,
                            roles=[done, other])  # type: ignore[arg-type]
    began = time.monotonic()
    supervisor.run(threading.Event(), poll_s=0.02)
    log.close()
    assert done.done and time.monotonic() - began < 5
    assert other.process is None and other.exit_codes == []


def test_an_installation_runs_one_engine_and_two_roles_per_room() -> None:
    config = config_from_dict({"rooms": [{"id": "a", "audio_out": {"stop_after_s": 5}},
                                         {"id": "b"}]})
    roles = role_processes(config, Path("frozen.json"))
    assert [r.name for r in roles] == ["engine", "audio_out:a", "capture:a", "audio_out:b",
                                       "capture:b"]
    assert [r.finite for r in roles] == [False, True, False, False, False]
