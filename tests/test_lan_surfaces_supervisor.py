"""The supervisor out of file descriptors (audit 4, ``repro_supervisor_emfile.sh``): idle
connections to its metrics endpoint took all 1024, then a role crashed and its restart
died in ``open_pipe`` with EMFILE, uncaught: the supervisor exited and every role
stopped. A start that fails for want of a descriptor or a thread is now a failed start,
said in one line and retried with the backoff, as a crash is.

Real processes under a real supervisor loop; the failures are injected where the
descriptors and threads are taken (``open_pipe``, the log pump).
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ground.events import EventLog, read_events
from installation import supervisor as supervisor_module
from installation.config import config_from_dict
from installation.supervisor import RoleProcess, Supervisor
from tests.polling import wait_until

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def _config(port: int) -> Any:
    return config_from_dict({
        "network": {name: f"tcp://127.0.0.1:{port + offset}"
                    for offset, name in enumerate(["views", "chunks", "clock", "control"])},
        "supervisor": {"restart_backoff_s": 0.1, "stop_timeout_s": 2.0},
        "rooms": [{"id": "a"}],
    })


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class _FailingTimes:
    """Wraps ``real``: calls number ``failing`` (1-based) raise ``error``, the others pass."""

    def __init__(self, real: Callable[..., Any], failing: set[int], error: Exception) -> None:
        self.real, self.failing, self.error = real, failing, error
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls in self.failing:
            raise self.error
        return self.real(*args, **kwargs)


def _run(supervisor: Supervisor) -> tuple[threading.Event, threading.Thread, list[BaseException]]:
    stop, failures = threading.Event(), []

    def run() -> None:
        try:
            supervisor.run(stop, poll_s=0.02)
        except BaseException as error:  # what killed the supervisor, for the assertion
            failures.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    return stop, thread, failures


@pytest.mark.parametrize("where", ["open_pipe", "RoleOutputPump"])
def test_a_restart_out_of_descriptors_is_retried_and_the_supervisor_lives(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    error: Exception = (OSError(errno.EMFILE, "Too many open files") if where == "open_pipe"
                        else RuntimeError("can't start new thread"))
    failing = _FailingTimes(getattr(supervisor_module, where), {3, 4}, error)
    monkeypatch.setattr(supervisor_module, where, failing)
    victim, bystander = RoleProcess("victim", SLEEPER), RoleProcess("bystander", SLEEPER)
    lines: list[str] = []
    log = EventLog(tmp_path / "supervisor.jsonl", "supervisor")
    supervisor = Supervisor(_config(6511 if where == "open_pipe" else 6521), tmp_path / "c.json",
                            log, roles=[victim, bystander], log_dir=tmp_path / "logs",
                            console=lines.append)
    stop, thread, died = _run(supervisor)
    try:
        first = wait_until(lambda: victim.pid and bystander.pid and victim.pid, 30.0, "both roles")
        other = bystander.pid
        os.kill(first, signal.SIGKILL)  # type: ignore[arg-type]  # a crash: the restart fails twice
        wait_until(lambda: died or (victim.pid not in (None, first)), 30.0,
                   "the victim back")
        assert not died, f"the supervisor died of {died[0]!r}"
        assert thread.is_alive() and bystander.pid == other and _alive(other)  # type: ignore[arg-type]
    finally:
        stop.set()
        thread.join(timeout=30)
        log.close()
    assert not thread.is_alive()
    said = [line for line in lines if line.startswith("victim could not be started")]
    assert len(said) == 2, lines  # one line per failed start
    assert str(error) in said[0] and said[0].endswith("retrying in 0.2 s")
    assert said[1].endswith("retrying in 0.4 s")  # the crash's backoff (0.1 s), growing
    if where == "open_pipe":  # what to do about it
        assert "file descriptors it may open" in said[0] and "LimitNOFILE=" in said[0]
    failed = [e for e in read_events(tmp_path / "supervisor.jsonl")
              if e["kind"] == "role_start_failed"]
    assert [e["role"] for e in failed] == ["victim", "victim"]
    # a process started without its log pump was killed and reaped, not left running
    started = [e["pid"] for e in read_events(tmp_path / "supervisor.jsonl")
               if e["kind"] == "role_started"]
    assert not any(_alive(pid) for pid in started)
