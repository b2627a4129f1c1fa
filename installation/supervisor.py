"""The supervisor: starts the three roles as OS processes and keeps them running.

- One engine process, and a capture and an audio_out process per room, each
  ``python -m installation role NAME --config FROZEN.json [--room ID]``; the
  config is validated once and frozen to JSON so every role sees the same one.
- A role that exits unexpectedly is restarted with exponential backoff
  (reset once it has stayed up ``stable_after_s``); the others keep running,
  so audio_out holds the music while the engine comes back.
- A *finite* role (an audio_out with ``stop_after_s``) exiting 0 means it is
  done; once all finite roles are done the installation shuts down.
- Shutdown (Ctrl-C, SIGTERM, or done): a Control ``shutdown`` to every role,
  then SIGTERM, then SIGKILL after ``stop_timeout_s``. Children ask Linux to
  SIGTERM them if the supervisor dies, so no orphan outlives it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from installation.config import InstallationConfig
from installation.events import EventSink
from installation.protocol import PROTOCOL_VERSION, Control
from installation.transport import make_socket, send

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


@dataclass
class RoleProcess:
    """One supervised role: how to start it and what happened to it."""

    name: str
    argv: list[str]
    finite: bool = False
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff_s: float = 0.0
    restart_at: float | None = None
    done: bool = False
    exit_codes: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        """The running process id, if any."""
        return self.process.pid if self.process is not None else None


def role_processes(config: InstallationConfig, config_path: Path) -> list[RoleProcess]:
    """The processes an installation runs: engine first, then each room's roles."""
    base = [sys.executable, "-m", "installation", "role"]
    roles = [RoleProcess("engine", base + ["engine", "--config", str(config_path)])]
    for room in config.rooms:
        roles.append(RoleProcess(
            f"audio_out:{room.id}",
            base + ["audio_out", "--config", str(config_path), "--room", room.id],
            finite=room.audio_out.stop_after_s is not None,
        ))
        roles.append(RoleProcess(
            f"capture:{room.id}",
            base + ["capture", "--config", str(config_path), "--room", room.id],
        ))
    return roles


class Supervisor:
    """Runs and restarts the roles of one installation."""

    def __init__(
        self,
        config: InstallationConfig,
        config_path: Path,
        log_event: EventSink,
        roles: list[RoleProcess] | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.log_event = log_event
        self.roles = roles if roles is not None else role_processes(config, config_path)
        self.log_dir = log_dir
        self._context = zmq.Context.instance()
        self._control = make_socket(self._context, zmq.PUB, config.network.control, bind=True)

    def start(self) -> None:
        """Start every role."""
        for role in self.roles:
            self._spawn(role)

    def _spawn(self, role: RoleProcess) -> None:
        stdout = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            stdout = (self.log_dir / f"{role.name.replace(':', '-')}.log").open("ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        role.process = subprocess.Popen(
            role.argv, stdout=stdout, stderr=None, env=env, preexec_fn=_die_with_parent
        )
        if stdout is not None:
            stdout.close()
        role.started_at = time.monotonic()
        role.restart_at = None
        self.log_event("role_started", role=role.name, pid=role.process.pid,
                       restarts=role.restarts)

    def poll(self) -> bool:
        """Check every role once: restart what crashed; True when all finite roles are done."""
        now = time.monotonic()
        sup = self.config.supervisor
        for role in self.roles:
            if role.done:
                continue
            if role.process is None:
                if role.restart_at is not None and now >= role.restart_at:
                    role.restarts += 1
                    self._spawn(role)
                continue
            code = role.process.poll()
            if code is None:
                continue
            role.exit_codes.append(code)
            role.process = None
            if role.finite and code == 0:
                role.done = True
                self.log_event("role_done", role=role.name)
                continue
            uptime = now - role.started_at
            if uptime >= sup.stable_after_s or role.backoff_s == 0.0:
                role.backoff_s = sup.restart_backoff_s
            else:
                role.backoff_s = min(role.backoff_s * 2.0, sup.restart_backoff_max_s)
            role.restart_at = now + role.backoff_s
            self.log_event("role_exited", role=role.name, code=code, uptime_s=round(uptime, 3),
                           restart_in_s=role.backoff_s)
        finite = [role for role in self.roles if role.finite]
        return bool(finite) and all(role.done for role in finite)

    def run(self, stop: threading.Event, poll_s: float = 0.1) -> None:
        """Start, supervise until ``stop`` is set or all finite roles are done, then shut down."""
        self.start()
        try:
            while not stop.is_set():
                if self.poll():
                    break
                stop.wait(poll_s)
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Stop every role: Control shutdown, then SIGTERM, then SIGKILL; reap them all."""
        sup = self.config.supervisor
        message = Control(v=PROTOCOL_VERSION, room="*", target="*", command="shutdown")
        for _ in range(3):  # PUB drops messages to subscribers still connecting
            send(self._control, message)
            time.sleep(0.05)
        running = [role for role in self.roles if role.process is not None]
        self._wait(running, sup.stop_timeout_s / 2)
        for role in running:
            if role.process is not None and role.process.poll() is None:
                role.process.send_signal(signal.SIGTERM)
        self._wait(running, sup.stop_timeout_s / 2)
        for role in running:
            if role.process is not None and role.process.poll() is None:
                role.process.kill()
                self.log_event("role_killed", role=role.name)
        for role in running:
            if role.process is not None:
                role.process.wait()
                self.log_event("role_stopped", role=role.name, code=role.process.returncode)
                role.process = None
        self._control.close()

    @staticmethod
    def _wait(roles: list[RoleProcess], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for role in roles:
            if role.process is None:
                continue
            try:
                role.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
