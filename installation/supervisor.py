"""The supervisor: starts the three roles as OS processes and keeps them running.

- One engine process, and a capture and an audio_out process per room, each
  ``python -m installation role NAME --config FROZEN.json [--room ID]``; the
  config is validated once and frozen to JSON so every role sees the same one.
- A role that exits unexpectedly is restarted with exponential backoff
  (reset once it has stayed up ``stable_after_s``); the others keep running,
  so audio_out holds the music while the engine comes back.
- A *finite* role (an audio_out with ``stop_after_s``) exiting 0 means it is
  done; once all finite roles are done the installation shuts down.
- Every role writes heartbeats (with a small health record) into its own
  pipe (:mod:`installation.health`); a role silent for ``hang_after_s`` (after
  ``startup_grace_s`` for its first beat) is hung: it is SIGKILLed and
  restarted like a crashed one.
- Live parameters (MIDI, OSC, config reload, see :mod:`installation.control`)
  leave through the control PUB socket, which only this loop touches; a role
  that (re)starts is sent every value again on its first heartbeat.
- ``OUTPUT/status.json`` is rewritten every ``status_every_s`` with every
  role's state and health (``art2mus status`` prints it); a Prometheus
  endpoint mirrors it when ``[metrics] port`` is set.
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
from typing import Any

import zmq

from installation.config import InstallationConfig
from installation.control import ControlHub
from installation.errors import DependencyError
from installation.events import EventSink
from installation.health import HEARTBEAT_FD_ENV, HeartbeatReader, open_pipe
from installation.metrics import Metrics, role_metrics
from installation.protocol import PROTOCOL_VERSION, Control
from installation.security import curve_keys
from installation.status import write_status
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
    kind: str | None = None
    room: str | None = None
    heartbeat: HeartbeatReader | None = None
    hangs: int = 0
    reported: bool = False  # the first heartbeat of this run has been seen

    def heartbeat_age(self) -> float | None:
        """Seconds since the last heartbeat of the running process, if it has sent one."""
        if self.heartbeat is None or self.heartbeat.last_beat is None:
            return None
        return time.monotonic() - self.heartbeat.last_beat

    @property
    def pid(self) -> int | None:
        """The running process id, if any."""
        return self.process.pid if self.process is not None else None


def role_processes(config: InstallationConfig, config_path: Path) -> list[RoleProcess]:
    """The processes an installation runs: engine first, then each room's roles."""
    base = [sys.executable, "-m", "installation", "role"]
    wanted = set(config.supervisor.roles)
    roles = []
    if "engine" in wanted:
        roles.append(RoleProcess("engine", base + ["engine", "--config", str(config_path)],
                                 kind="engine"))
    rooms = set(config.supervisor.rooms) or {room.id for room in config.rooms}
    for room in config.rooms:
        if room.id not in rooms:
            continue
        if "audio_out" in wanted:
            roles.append(RoleProcess(
                f"audio_out:{room.id}",
                base + ["audio_out", "--config", str(config_path), "--room", room.id],
                finite=room.audio_out.stop_after_s is not None, kind="audio_out", room=room.id,
            ))
        if "capture" in wanted:
            roles.append(RoleProcess(
                f"capture:{room.id}",
                base + ["capture", "--config", str(config_path), "--room", room.id],
                kind="capture", room=room.id,
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
        source_path: Path | None = None,
        status_path: Path | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.source_path = source_path  # the user's TOML, watched for hot reload
        self.log_event = log_event
        self.roles = roles if roles is not None else role_processes(config, config_path)
        self.log_dir = log_dir
        # A real installation (roles from the config) reports status; tests that
        # hand in their own processes only when they ask for it.
        self.status_path = status_path if status_path is not None else (
            config.output_dir / "status.json" if roles is None else None)
        self.hub = ControlHub(config, log_event)
        try:
            self.metrics = role_metrics(config, "supervisor")
        except DependencyError as error:  # metrics are optional; the installation is not
            log_event("metrics_unavailable", error=str(error))
            self.metrics = Metrics(0)
        self._context: zmq.Context = zmq.Context.instance()
        self._control = make_socket(self._context, zmq.PUB, config.network.control, bind=True,
                                    curve=curve_keys(config))
        self._services: list[Any] = []
        self._next_status = 0.0
        self._next_resend = time.monotonic() + config.control.resend_every_s
        self.sent_controls = 0

    def start(self) -> None:
        """Start every role (and, with a source file, the control surfaces and reload)."""
        # Engine state saved by a previous run must not leak into this one; it
        # only bridges restarts within a run.
        if self.status_path is not None:
            from installation.roles import engine_state_path

            stale = engine_state_path(self.config)
            if stale.exists():
                stale.unlink()
        for role in self.roles:
            self._spawn(role)

    def _spawn(self, role: RoleProcess) -> None:
        stdout = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            stdout = (self.log_dir / f"{role.name.replace(':', '-')}.log").open("ab")
        if role.heartbeat is not None:
            role.heartbeat.close()
        read_fd, write_fd = open_pipe()
        env = dict(os.environ, PYTHONUNBUFFERED="1", **{HEARTBEAT_FD_ENV: str(write_fd)})
        try:
            role.process = subprocess.Popen(
                role.argv, stdout=stdout, stderr=None, env=env, preexec_fn=_die_with_parent,
                pass_fds=(write_fd,),
            )
        finally:
            os.close(write_fd)  # the child holds it; EOF then means the child is gone
            if stdout is not None:
                stdout.close()
        role.heartbeat = HeartbeatReader(read_fd)
        role.reported = False
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
                self._check_heartbeat(role, now)
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
        self._send_controls(now)
        if now >= self._next_status:
            self._next_status = now + sup.status_every_s
            self.write_status()
        finite = [role for role in self.roles if role.finite]
        return bool(finite) and all(role.done for role in finite)

    def _check_heartbeat(self, role: RoleProcess, now: float) -> None:
        """Read a running role's heartbeats; kill it if it has been silent too long."""
        sup = self.config.supervisor
        beat = role.heartbeat
        if beat is None:
            return
        if beat.read() and not role.reported:
            role.reported = True
            if role.kind is not None:
                self.hub.replay(role.kind)  # a (re)started role learns the live values
        if sup.hang_after_s <= 0 or role.process is None:
            return
        if role.kind is None and beat.last_beat is None:
            return  # a process that never speaks the heartbeat protocol (tests' sleepers)
        if beat.last_beat is None:
            silent_since, limit = role.started_at, max(sup.startup_grace_s, sup.hang_after_s)
        else:
            silent_since, limit = beat.last_beat, sup.hang_after_s
        if now - silent_since < limit:
            return
        role.hangs += 1
        self.log_event("role_hung", role=role.name, pid=role.process.pid,
                       silent_s=round(now - silent_since, 3), beats=beat.beats)
        role.process.kill()  # SIGKILL: a hung process may not handle SIGTERM
        role.process.wait()
        # the next poll sees the exit (code -9) and restarts it with backoff

    def _send_controls(self, now: float) -> None:
        if now >= self._next_resend:
            self._next_resend = now + self.config.control.resend_every_s
            self.hub.replay()
        for message in self.hub.pending():
            if send(self._control, message):
                self.sent_controls += 1

    def role_rows(self) -> list[dict[str, Any]]:
        """Every role's state and last health record (status file, OSC out)."""
        now = time.monotonic()
        rows = []
        for role in self.roles:
            age = role.heartbeat_age() if role.process is not None else None
            if role.done:
                state = "done"
            elif role.process is None:
                state = "restarting"
            elif role.heartbeat is not None and role.heartbeat.last_beat is None:
                state = "starting"
            elif age is not None and age > max(3 * self.config.supervisor.heartbeat_s, 2.0):
                state = "silent"
            else:
                state = "running"
            rows.append({
                "name": role.name, "kind": role.kind, "room": role.room, "pid": role.pid,
                "state": state, "uptime_s": round(now - role.started_at, 1)
                if role.process is not None else None,
                "restarts": role.restarts, "hangs": role.hangs,
                "heartbeat_age_s": None if age is None else round(age, 2),
                "status": role.heartbeat.status if role.heartbeat is not None else {},
            })
        return rows

    def write_status(self) -> None:
        """Rewrite the status file (and the metrics) from every role's last heartbeat."""
        rows = self.role_rows()
        for role, row in zip(self.roles, rows, strict=True):
            self.metrics.set_role(role.name, role.process is not None, role.restarts,
                                  row["heartbeat_age_s"])
        if self.status_path is not None:
            write_status(self.status_path, self.config, rows, self.hub.snapshot())

    def run(self, stop: threading.Event, poll_s: float = 0.1) -> None:
        """Start, supervise until ``stop`` is set or all finite roles are done, then shut down."""
        self.start()
        try:
            self._start_services()
            while not stop.is_set():
                if self.poll():
                    break
                self.hub.wait(poll_s)  # wakes early when a knob moves
        finally:
            self._stop_services()
            self.shutdown()

    def _start_services(self) -> None:
        """The control surfaces and the config watcher the config asks for."""
        from installation.surfaces import start_surfaces

        self._services = start_surfaces(self)

    def restart_surfaces(self) -> None:
        """Reopen MIDI and OSC with the current control settings (after a reload)."""
        from installation.reload import ConfigWatcher
        from installation.surfaces import start_surfaces

        keep = [s for s in self._services if isinstance(s, ConfigWatcher)]
        self._stop_services([s for s in self._services if not isinstance(s, ConfigWatcher)])
        self._services = keep + start_surfaces(self, watch=False)

    def _stop_services(self, services: list[Any] | None = None) -> None:
        services = self._services if services is None else services
        for service in reversed(services):
            try:
                service.close()
            except Exception as exc:  # noqa: BLE001 - shutting down: report, keep going
                self.log_event("service_close_failed", service=type(service).__name__,
                               error=str(exc))
        if services is self._services:
            self._services = []

    def apply_config(self, config: InstallationConfig) -> None:
        """Take a reloaded config's supervisor and control settings (live fields only)."""
        self.config = config.model_copy(update={"rooms": self.config.rooms,
                                                "network": self.config.network,
                                                "engine": self.config.engine})
        self.hub.config = self.config

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
        for role in self.roles:
            if role.heartbeat is not None:
                role.heartbeat.close()
                role.heartbeat = None
        self.write_status()
        self.metrics.close()
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
