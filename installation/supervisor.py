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
  pipe (:mod:`ground.health`); a role silent for ``hang_after_s`` (after
  ``startup_grace_s`` for its first beat) is hung: it is SIGKILLed and
  restarted like a crashed one.
- Live parameters (MIDI, OSC, the console, config reload, see :mod:`installation.control`)
  leave through the control PUB socket, which only this loop touches, at most
  every ``CONTROL_SEND_EVERY_S`` (a flood of changes is sent as the newest
  values); a role that (re)starts is sent every value again on its first heartbeat.
- A role that exits with a configuration, input or dependency error (exit
  code 2, 3 or 4, :mod:`ground.errors`) ``max_config_failures`` times in
  a row is not restarted again: it is ``failed`` (with the reason) in the
  status and the other roles keep playing. When nothing is left to run, the
  supervisor stops; so does a finite run (the demo) whose engine is given up
  on, since its finite roles wait for music only the engine makes.
- Every exit, restart and hang is one human line on the console (stderr, so
  the journal under systemd): role, exit code or signal, the last error of
  its log, and what happens next. So is a start that fails (no pipe, process
  or thread to be had: the process out of file descriptors, say), which is
  retried with the same backoff and never ends the supervisor.
- Each role's stdout and stderr are drained by a thread into
  ``OUTPUT/logs/ROLE.log`` as JSON lines, rotated by size
  (:mod:`ground.jsonlog`).
- Priorities: audio_out and the engine start first and run ahead of capture
  (``[supervisor] nice`` and ``ionice``, set in the child before it runs;
  a priority the system refuses is said once and the role runs anyway).
- ``OUTPUT/status.json`` is rewritten every ``status_every_s`` with every
  role's state and health (``art2mus status`` prints it); a Prometheus
  endpoint mirrors it when ``[metrics] port`` is set.
- The technician's console (``[console] listen``, :mod:`installation.console`)
  is served from a thread of this process; its URL is said on the console,
  logged as ``console_listening`` and written to the status file.
- A disk that fails (full, read-only) never stops the supervisor: a status
  file, log line or event that cannot be written is dropped and counted, said
  once on the console (and in the status and metrics when those can be
  written), and tried again at the next turn.
- The roles' event logs are followed while the installation runs
  (:class:`~installation.report.RunReport`), so at the end ``timeline.json``
  and the summary take no longer for a long run than for a short one.
- Shutdown (Ctrl-C, SIGTERM, or done): a Control ``shutdown`` to every role,
  then SIGTERM, then SIGKILL after ``stop_timeout_s``. Children ask Linux to
  SIGTERM them if the supervisor dies, so no orphan outlives it. The status
  then lists every role as ``stopped`` with its exit code.
- Under systemd (``Type=notify``, :class:`SystemdNotify`): ``READY=1`` once
  every role is up, ``WATCHDOG=1`` from the loop while no role is given up
  on, ``STATUS=`` a one-line summary, ``STOPPING=1`` at shutdown. Console
  lines go to stderr, which systemd sends to the journal.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zmq

from ground.errors import ConfigError, DependencyError, InputError
from ground.events import EventSink
from ground.health import HEARTBEAT_FD_ENV, HeartbeatReader, open_pipe
from ground.jsonlog import RoleOutputPump, RotatingLineFile, WriteFailures
from ground.metrics import Metrics, role_metrics
from ground.protocol import PROTOCOL_VERSION, Control
from ground.security import curve_keys
from ground.transport import make_socket, send
from installation.config import InstallationConfig
from installation.control import ControlHub
from installation.status import DiskWatch, write_status
from installation.surfaces import (
    Service,
    start_console,
    start_surfaces,
    start_watcher,
    surface_states,
)
from installation.takes import TakeKeeper

if TYPE_CHECKING:
    from installation.console.app import ConsoleServer

_PR_SET_PDEATHSIG = 1
#: The control PUB sends what is queued at most this often: a flood of knob changes
#: (10,000 OSC values a second) reaches the roles as at most 50 sets a second of each
#: parameter, its newest value each time (the hub replaces a queued set by a newer one),
#: not as 10,000 re-plans and engine events a second.
CONTROL_SEND_EVERY_S = 0.02
#: Exit codes that mean "fix the config or the input": restarting will not help.
GIVE_UP_CODES = {ConfigError.exit_code: "configuration error",
                 InputError.exit_code: "input error",
                 DependencyError.exit_code: "missing dependency"}
#: ioprio_set/ioprio_get syscall numbers (not in Python's os module).
_IOPRIO_SYSCALLS = {"x86_64": (251, 252), "aarch64": (30, 31), "arm64": (30, 31)}
_IOPRIO_WHO_PROCESS, _IOPRIO_CLASS_BE, _IOPRIO_CLASS_SHIFT = 1, 2, 13

try:  # loaded in the parent: the child only calls into it between fork and exec
    _LIBC: Any = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:  # pragma: no cover - not glibc Linux
    _LIBC = None


class SystemdNotify:
    """Tells systemd how the supervisor is doing (``sd_notify(3)``), under ``Type=notify``.

    ``READY=1`` once every role is up (:meth:`Supervisor.roles_up`), then
    ``WATCHDOG=1`` from the supervisor's loop while it is healthy (no role
    given up on; a hung loop or a given-up role stops the pings and systemd
    restarts the unit after ``WatchdogSec``), ``STATUS=`` a one-line summary
    when it changes, ``STOPPING=1`` on shutdown. Outside systemd (no
    ``NOTIFY_SOCKET``) every call is a no-op. Datagrams are sent by the
    ``sdnotify`` package, which also handles abstract socket names ('@...').
    """

    def __init__(self) -> None:
        env = os.environ  # sdnotify reads NOTIFY_SOCKET from it too
        self.enabled = bool(env.get("NOTIFY_SOCKET"))
        self.ready = False
        self.last_status = ""
        self._notifier: Any = None
        # Pings at a quarter of the watchdog period systemd gives us, at least twice a second.
        watchdog_usec = env.get("WATCHDOG_USEC", "")
        self.interval_s = min(0.5, int(watchdog_usec) / 4e6) if watchdog_usec.isdigit() \
            and int(watchdog_usec) > 0 else 0.5
        if self.enabled:
            import sdnotify

            self._notifier = sdnotify.SystemdNotifier()

    def send(self, *fields: str) -> None:
        """Send ``fields`` (``KEY=value``) in one datagram; a lost systemd is not our failure."""
        if self._notifier is not None:
            self._notifier.notify("\n".join(fields))

    def close(self) -> None:
        """Close the socket to systemd (sdnotify never does)."""
        if self._notifier is not None and self._notifier.socket is not None:
            self._notifier.socket.close()
        self._notifier = None

    def status(self, line: str) -> None:
        """``STATUS=line`` when it differs from the last one sent."""
        if line != self.last_status:
            self.last_status = line
            self.send(f"STATUS={line}")


def console_line(text: str) -> None:
    """One human line on the supervisor's console (stderr: the journal under systemd)."""
    try:
        print(f"art2mus: {text}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass  # a closed or broken console must not stop the installation


def io_priority(pid: int) -> tuple[int, int] | None:
    """(class, level) of a process's I/O priority on Linux; None where it cannot be read."""
    numbers = _IOPRIO_SYSCALLS.get(platform.machine())
    if _LIBC is None or numbers is None:
        return None
    value = int(_LIBC.syscall(numbers[1], _IOPRIO_WHO_PROCESS, pid))
    if value < 0:
        return None
    return value >> _IOPRIO_CLASS_SHIFT, value & ((1 << _IOPRIO_CLASS_SHIFT) - 1)


def _child_setup(nice: int | None, ionice: int | None,
                 ioprio_set: int | None) -> None:  # pragma: no cover - in the child, pre-exec
    """Between fork and exec: die with the supervisor, then take the role's priorities."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if nice is not None:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, nice)
        except OSError:
            pass  # refused (a raise needs privileges): the parent sees it and says so
    if ionice is not None and ioprio_set is not None and _LIBC is not None:
        _LIBC.syscall(ioprio_set, _IOPRIO_WHO_PROCESS, 0,
                      (_IOPRIO_CLASS_BE << _IOPRIO_CLASS_SHIFT) | ionice)


def _descriptor_note(error: BaseException) -> str:
    """What to say of a start refused for want of file descriptors ("" for another error)."""
    if not isinstance(error, OSError) or error.errno not in (errno.EMFILE, errno.ENFILE):
        return ""
    if error.errno == errno.ENFILE:
        return "the system's table of open files is full"
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]  # reading it takes no descriptor
    return (f"the supervisor holds all {soft} file descriptors it may open: find what holds "
            f"them in /proc/{os.getpid()}/fd; systemd's LimitNOFILE= raises the limit")


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    meaning = GIVE_UP_CODES.get(code)
    return f"code {code}" + (f" ({meaning})" if meaning else "")


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
    config_failures: int = 0  # exits in a row with a config/input/dependency error
    failed: str | None = None  # why the supervisor gave up on it
    stopped: bool = False  # stopped by the supervisor's shutdown
    stop_code: int | None = None  # its exit code then (not a crash: not in exit_codes)
    last_reason: str | None = None  # the last error line of its previous run
    last_status: dict[str, Any] = field(default_factory=dict)  # health when it last ran
    pump: RoleOutputPump | None = None

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
    """The processes an installation runs, in start order: the engine, every room's
    audio_out, then every room's capture (the music is up before the cameras load the CPU)."""
    base = [sys.executable, "-m", "installation", "role"]
    wanted = set(config.supervisor.roles)
    roles = []
    if "engine" in wanted:
        roles.append(RoleProcess("engine", base + ["engine", "--config", str(config_path)],
                                 kind="engine"))
    rooms = set(config.supervisor.rooms) or {room.id for room in config.rooms}
    served = [room for room in config.rooms if room.id in rooms]
    if "audio_out" in wanted:
        roles.extend(RoleProcess(
            f"audio_out:{room.id}",
            base + ["audio_out", "--config", str(config_path), "--room", room.id],
            finite=room.audio_out.stop_after_s is not None, kind="audio_out", room=room.id,
        ) for room in served)
    if "capture" in wanted:
        roles.extend(RoleProcess(
            f"capture:{room.id}",
            base + ["capture", "--config", str(config_path), "--room", room.id],
            kind="capture", room=room.id,
        ) for room in served)
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
        console: Callable[[str], None] = console_line,
        write_failures: WriteFailures | None = None,
        follow_events: bool | None = None,
        serve_console: bool | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path
        self.source_path = source_path  # the user's TOML, watched for hot reload
        self.log_event = log_event
        self.roles = roles if roles is not None else role_processes(config, config_path)
        self.log_dir = log_dir
        self.say = console
        self.write_failures = write_failures or WriteFailures(console)
        self._logs: dict[str, RotatingLineFile] = {}
        self._priority_said: set[str] = set()
        self.ended_by = ""  # "stop", "done" or "failed" once run() returns
        # A real installation (roles from the config) reports status; tests that
        # hand in their own processes only when they ask for it.
        self.status_path = status_path if status_path is not None else (
            config.output_dir / "status.json" if roles is None else None)
        self.disk = DiskWatch(config.output_dir)
        self.takes = TakeKeeper.for_config(config, log_event, console)
        from installation.report import RunReport

        self.report: RunReport | None = None
        if follow_events if follow_events is not None else roles is None:
            self.report = RunReport(config.output_dir, self.write_failures, self.say)
        self._next_report = 0.0
        self.hub = ControlHub(config, log_event)
        try:
            self.metrics = role_metrics(config.metrics, "supervisor")
        except DependencyError as error:  # metrics are optional; the installation is not
            log_event("metrics_unavailable", error=str(error))
            self.metrics = Metrics(0)
        self._context: zmq.Context = zmq.Context.instance()
        self._control = make_socket(self._context, zmq.PUB, config.network.control, bind=True,
                                    curve=curve_keys(config.security))
        self._watcher: Service | None = None
        self._surfaces: list[Service] = []
        self._console: ConsoleServer | None = None
        # like the status file: a real installation serves the console ([console] listen);
        # tests that hand in their own processes only when they ask for it
        self.serve_console = serve_console if serve_console is not None else roles is None
        self._next_status = 0.0
        self._next_resend = time.monotonic() + config.control.resend_every_s
        self._next_send = 0.0  # the control PUB's next turn (CONTROL_SEND_EVERY_S)
        self.sent_controls = 0
        self.systemd = SystemdNotify()
        self._next_notify = 0.0

    def start(self) -> None:
        """Start every role (and, with a source file, the control surfaces and reload)."""
        # Engine state saved by a previous run must not leak into this one; it
        # only bridges restarts within a run.
        if self.status_path is not None:
            from installation.roles import engine_state_path

            stale = engine_state_path(self.config)
            try:
                stale.unlink(missing_ok=True)
            except OSError as error:
                self.write_failures.failed(str(stale), error, "a restarted engine may "
                                           "restore the last run's rooms")
        if self.report is not None:
            self.report.start()
        for role in self.roles:
            self._spawn(role)

    def _log_file(self, role: RoleProcess) -> RotatingLineFile | None:
        if self.log_dir is None:
            return None
        log = self._logs.get(role.name)
        if log is None:
            sup = self.config.supervisor
            log = RotatingLineFile(self.log_dir / f"{role.name.replace(':', '-')}.log",
                                   sup.log_max_bytes, sup.log_backups, self.write_failures)
            self._logs[role.name] = log
        return log

    def _spawn(self, role: RoleProcess) -> None:
        log = self._log_file(role)
        output = subprocess.PIPE if log is not None else None
        if role.heartbeat is not None:
            role.heartbeat.close()
            role.heartbeat = None
        sup = self.config.supervisor
        nice = sup.nice.get(role.kind) if role.kind else None  # type: ignore[call-overload]
        ionice = sup.ionice.get(role.kind) if role.kind else None  # type: ignore[call-overload]
        ioprio_set = (_IOPRIO_SYSCALLS.get(platform.machine()) or (None,))[0]
        now = time.monotonic()
        role.started_at = now
        role.restart_at = None
        # Every step that takes a file descriptor or a thread can fail when the process is
        # out of them (EMFILE: idle connections to a port it serves ate them): a start
        # that failed, retried with the backoff, never the end of the supervisor.
        try:
            read_fd, write_fd = open_pipe()
        except OSError as error:
            self._start_failed(role, now, error)
            return
        env = dict(os.environ, PYTHONUNBUFFERED="1", **{HEARTBEAT_FD_ENV: str(write_fd)})
        try:
            role.process = subprocess.Popen(
                role.argv, stdout=output, stderr=output, env=env, pass_fds=(write_fd,),
                preexec_fn=lambda: _child_setup(nice, ionice, ioprio_set),
            )
        except OSError as error:  # no memory, no file descriptors, a missing executable
            os.close(read_fd)
            self._start_failed(role, now, error)
            return
        finally:
            os.close(write_fd)  # the child holds it; EOF then means the child is gone
        try:
            if log is not None:
                assert role.process.stdout is not None and role.process.stderr is not None
                role.pump = RoleOutputPump(role.process.stdout, role.process.stderr, log,
                                           role.name, role.room)
            role.heartbeat = HeartbeatReader(read_fd)
        except (OSError, RuntimeError) as error:  # RuntimeError: can't start new thread
            # a role nobody drains or hears would block on a full pipe and look hung
            self._abandon_start(role, read_fd)
            self._start_failed(role, now, error)
            return
        role.reported = False
        self.log_event("role_started", role=role.name, pid=role.process.pid,
                       restarts=role.restarts)
        if nice is not None and role.kind is not None:
            self._check_priority(role, nice)

    def _start_failed(self, role: RoleProcess, now: float, error: BaseException) -> None:
        """A start that failed (no pipe, no process, no thread): retried with the backoff,
        said in one line, like a role that exited."""
        sup = self.config.supervisor
        role.process = None
        role.backoff_s = min(max(role.backoff_s * 2.0, sup.restart_backoff_s),
                             sup.restart_backoff_max_s)
        role.restart_at = now + role.backoff_s
        note = _descriptor_note(error)
        self.log_event("role_start_failed", role=role.name, error=str(error),
                       **({"open_files": note} if note else {}))
        self.say(f"{role.name} could not be started: {error}"
                 + (f" ({note})" if note else "") + f"; retrying in {role.backoff_s:.1f} s")

    @staticmethod
    def _abandon_start(role: RoleProcess, read_fd: int) -> None:
        """Kill and reap a role started without its log pump or heartbeat reader."""
        process, role.process = role.process, None
        if process is not None:
            process.kill()
            process.wait()
            if role.pump is None:  # a pump closes the streams it drains itself
                for stream in (process.stdout, process.stderr):
                    if stream is not None:
                        stream.close()
        role.pump = None
        if role.heartbeat is not None:
            role.heartbeat.close()
            role.heartbeat = None
        else:
            try:
                os.close(read_fd)
            except OSError:
                pass

    def _check_priority(self, role: RoleProcess, nice: int) -> None:
        """Say once per kind of role when the system refused the niceness asked for."""
        assert role.process is not None and role.kind is not None
        try:
            actual = os.getpriority(os.PRIO_PROCESS, role.process.pid)
        except OSError:
            return  # already gone: its exit is reported by poll()
        if actual == nice or role.kind in self._priority_said:
            return
        self._priority_said.add(role.kind)
        self.log_event("priority_refused", role=role.name, wanted=nice, actual=actual)
        self.say(f"{role.kind} runs at nice {actual}, not {nice} as [supervisor] nice asks: "
                 "raising a priority needs root or CAP_SYS_NICE (e.g. systemd "
                 "AmbientCapabilities=CAP_SYS_NICE); it runs anyway")

    def poll(self) -> bool:
        """Check every role once: restart what crashed; True when the installation is over
        (every finite role done, nothing left to run, or a finite run's engine given up on)."""
        now = time.monotonic()
        sup = self.config.supervisor
        for role in self.roles:
            if role.done or role.failed:
                continue
            if role.process is None:
                if role.restart_at is not None and now >= role.restart_at:
                    role.restarts += 1
                    self._spawn(role)
                    if role.process is not None:
                        self.say(f"{role.name} restarted (pid {role.process.pid}, "
                                 f"restart {role.restarts})")
                continue
            code = role.process.poll()
            if code is None:
                self._check_heartbeat(role, now)
                continue
            self._exited(role, code, now)
        self._send_controls(now)
        if now >= self._next_status:
            self._next_status = now + sup.status_every_s
            self.write_status()
        if self.report is not None and now >= self._next_report:
            self._next_report = now + 1.0
            self.report.poll()
        over = [role.done or role.failed is not None for role in self.roles]
        finite = [role.done or role.failed is not None for role in self.roles if role.finite]
        # A finite role ends after stop_after_s of the engine's music: with the engine
        # given up on, it would wait for that music forever (a demo without the synth).
        starved = bool(finite) and any(
            role.kind == "engine" and role.failed is not None for role in self.roles)
        return (bool(finite) and all(finite)) or (bool(over) and all(over)) or starved

    def _exited(self, role: RoleProcess, code: int, now: float,
                hung_s: float | None = None) -> None:
        """A role's process ended: restart it with backoff, finish it, or give up on it."""
        sup = self.config.supervisor
        pid = role.process.pid if role.process is not None else None
        role.exit_codes.append(code)
        role.process = None
        if role.pump is not None:
            role.pump.join(0.5)  # its last lines (the traceback) give the reason
            role.last_reason = role.pump.last_error
            role.pump = None
        uptime = now - role.started_at
        reason = f": {role.last_reason}" if role.last_reason and hung_s is None else ""
        if hung_s is not None:
            what = f"{role.name} (pid {pid}) hung: no heartbeat for {hung_s:.1f} s; killed"
        else:
            what = (f"{role.name} (pid {pid}) exited with {_exit_text(code)} "
                    f"after {uptime:.1f} s{reason}")
        if not role.last_reason:  # killed, or died without a word: say how it ended
            role.last_reason = (f"hung: no heartbeat for {hung_s:.1f} s, killed"
                                if hung_s is not None else f"exited with {_exit_text(code)}")
        if role.finite and code == 0:
            role.done = True
            self.log_event("role_done", role=role.name)
            self.say(f"{role.name} (pid {pid}) finished (exit 0)")
            return
        if uptime >= sup.stable_after_s:
            role.config_failures = 0
        role.config_failures = role.config_failures + 1 if code in GIVE_UP_CODES else 0
        if role.config_failures >= sup.max_config_failures:
            role.failed = (f"exited {role.config_failures} times in a row with "
                           f"{_exit_text(code)}{reason}")
            self.log_event("role_failed", role=role.name, code=code,
                           reason=role.last_reason, exits=role.config_failures)
            self.say(f"{what}; giving up after {role.config_failures} such exits in a row "
                     "(fix the config or input, then restart art2mus): the other roles "
                     "keep playing")
            return
        if uptime >= sup.stable_after_s or role.backoff_s == 0.0:
            role.backoff_s = sup.restart_backoff_s
        else:
            role.backoff_s = min(role.backoff_s * 2.0, sup.restart_backoff_max_s)
        role.restart_at = now + role.backoff_s
        self.log_event("role_exited", role=role.name, code=code, uptime_s=round(uptime, 3),
                       restart_in_s=role.backoff_s, reason=role.last_reason)
        self.say(f"{what}; restarting in {role.backoff_s:.1f} s")

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
        code = role.process.wait()
        self._exited(role, code, now, hung_s=now - silent_since)

    def _send_controls(self, now: float) -> None:
        if now < self._next_send:
            return  # what is queued meanwhile waits (newer sets replacing older ones)
        self._next_send = now + CONTROL_SEND_EVERY_S
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
            # Read once: other threads call this (OSC out, OSCQuery) while the supervisor's
            # loop restarts a role, setting its heartbeat to None between two reads.
            process, heartbeat = role.process, role.heartbeat
            last_beat = heartbeat.last_beat if heartbeat is not None else None
            age = (time.monotonic() - last_beat if process is not None and last_beat is not None
                   else None)
            if role.done:
                state = "done"
            elif role.failed:
                state = "failed"
            elif role.stopped:
                state = "stopped"
            elif process is None:
                state = "restarting"
            elif heartbeat is not None and last_beat is None:
                state = "starting"
            elif age is not None and age > max(3 * self.config.supervisor.heartbeat_s, 2.0):
                state = "silent"
            else:
                state = "running"
            rows.append({
                "name": role.name, "kind": role.kind, "room": role.room,
                "pid": process.pid if process is not None else None,
                "state": state, "uptime_s": round(now - role.started_at, 1)
                if process is not None else None,
                "restarts": role.restarts, "hangs": role.hangs,
                "heartbeat_age_s": None if age is None else round(age, 2),
                "exit_code": role.stop_code if role.stop_code is not None else (
                    role.exit_codes[-1] if role.exit_codes else None),
                "reason": role.failed or role.last_reason,
                "status": heartbeat.status if heartbeat is not None else role.last_status,
            })
        return rows

    def write_status(self, state: str = "running") -> None:
        """Rewrite the status file (and the metrics) from every role's last heartbeat.

        A status file that cannot be written is said once and tried again next
        time; the installation goes on.
        """
        rows = self.role_rows()
        for role, row in zip(self.roles, rows, strict=True):
            self.metrics.set_role(role.name, role.process is not None, role.restarts,
                                  row["heartbeat_age_s"])
        self.metrics.set_write_errors(self.write_failures.failures)
        if self.status_path is None:
            return
        target = str(self.status_path)
        self.takes.look()  # before the disk is measured: what it removes is free again
        try:
            write_status(self.status_path, self.config, rows, self.hub.snapshot(),
                         state=state, write_errors=self.write_failures.errors(),
                         console_url=self._console.url if self._console is not None else None,
                         disk=self.disk.look(), surfaces=surface_states(self._surfaces),
                         takes=self.takes.snapshot())
        except OSError as error:
            self.write_failures.failed(
                target, error, f"the status is not updated; retrying every "
                f"{self.config.supervisor.status_every_s:g} s, the installation goes on")
        else:
            self.write_failures.ok(target)

    def run(self, stop: threading.Event, poll_s: float = 0.1) -> None:
        """Start, supervise until ``stop`` is set or all finite roles are done, then shut down."""
        self.start()
        self.ended_by = "stop"
        try:
            self._start_services()
            while not stop.is_set():
                if self.poll():
                    finished = all(r.done for r in self.roles if r.finite and not r.failed)
                    self.ended_by = ("done" if any(r.done for r in self.roles) and finished
                                     else "failed")
                    break
                self._notify_systemd()
                self._idle(poll_s)
        finally:
            self.systemd.send("STOPPING=1", "STATUS=stopping every role")
            self._stop_services()
            self.shutdown()
            self.systemd.close()

    def _idle(self, poll_s: float) -> None:
        """Wait for the next turn: ``poll_s``, less when a knob moves, but not before the
        control PUB's next turn (a queued knob would otherwise wake the loop at once)."""
        early_s = self._next_send - time.monotonic()
        if early_s > 0:
            time.sleep(min(early_s, poll_s))
        else:
            self.hub.wait(poll_s)  # wakes early when a knob moves

    def roles_up(self) -> bool:
        """True once every role has come up: sent its first heartbeat, or (a process that
        speaks no heartbeat) is running, or outlived the startup grace, or is over."""
        now = time.monotonic()
        grace_s = self.config.supervisor.startup_grace_s
        return all(
            role.done or role.failed is not None or role.reported
            or (role.process is not None and (role.kind is None
                                              or now - role.started_at >= grace_s))
            for role in self.roles)

    def status_line(self) -> str:
        """One line for systemd's STATUS=: how many roles run, and what the others do."""
        rows = self.role_rows()
        running = sum(row["state"] in ("running", "done") for row in rows)
        others = ", ".join(f"{row['name']} {row['state']}" for row in rows
                           if row["state"] not in ("running", "done"))
        line = f"{running}/{len(rows)} roles running" + (f"; {others}" if others else "")
        return line[:200]

    def _notify_systemd(self) -> None:
        """READY=1 once the roles are up, then WATCHDOG=1 while healthy, STATUS= on change."""
        now = time.monotonic()
        if not self.systemd.enabled or now < self._next_notify:
            return
        self._next_notify = now + self.systemd.interval_s
        if not self.systemd.ready:
            if not self.roles_up():
                self.systemd.status("starting roles")
                return
            self.systemd.ready = True
            self.systemd.send("READY=1")
        # The watchdog says the supervisor's loop turns, not that every role is well: a role
        # given up on (a config error) is in STATUS= and `art2mus status`, and must not make
        # systemd restart the whole unit, and the music of every other room, every 30 s.
        self.systemd.send("WATCHDOG=1")
        self.systemd.status(self.status_line())

    def failed_roles(self) -> list[RoleProcess]:
        """The roles the supervisor gave up on."""
        return [role for role in self.roles if role.failed]

    def _start_services(self) -> None:
        """The config watcher, the control surfaces and the console the config asks for."""
        self._watcher = start_watcher(self.source_path, self.config, hub=self.hub,
                                      apply=self.apply_config,
                                      restart_surfaces=self.restart_surfaces,
                                      log_event=self.log_event)
        self._open_surfaces()
        if self.serve_console:
            self._console = start_console(
                self.config, hub=self.hub, log_event=self.log_event, rows=self.role_rows,
                source_path=self.source_path, output_dir=self.config.output_dir,
                running=self.running_config, frozen_path=self.config_path,
                write_errors=self.write_failures.errors, started=self.started_config)
        if self._console is not None:
            self.log_event("console_listening", url=self._console.url)
            self.say(f"console at {self._console.url}")

    def started_config(self) -> InstallationConfig:
        """The config the roles were started with (what a restart-only field runs with)."""
        started = getattr(self._watcher, "started", None)
        return started if isinstance(started, InstallationConfig) else self.config

    def running_config(self) -> InstallationConfig:
        """The config in force: the reload watcher's latest valid one, else the started one."""
        current = getattr(self._watcher, "current", None)
        return current if isinstance(current, InstallationConfig) else self.config

    def _open_surfaces(self) -> None:
        """Open MIDI and OSC with the current control settings."""
        self._surfaces = start_surfaces(self.config.control, hub=self.hub,
                                        log_event=self.log_event, rows=self.role_rows,
                                        rooms=[room.id for room in self.config.rooms])

    def restart_surfaces(self) -> None:
        """Reopen MIDI and OSC with the current control settings (after a reload)."""
        self._close_all(self._surfaces)
        self._open_surfaces()

    def _stop_services(self) -> None:
        """Close the console, the surfaces, then the watcher (the reverse of their start)."""
        if self._console is not None:
            self._close_all([self._console])
            self._console = None
        self._close_all(self._surfaces)
        self._surfaces = []
        if self._watcher is not None:
            self._close_all([self._watcher])
            self._watcher = None

    def _close_all(self, services: list[Service]) -> None:
        """Close ``services`` newest first; a failure is reported and the rest still close."""
        for service in reversed(services):
            try:
                service.close()
            except Exception as exc:  # noqa: BLE001 - shutting down: report, keep going
                self.log_event("service_close_failed", service=type(service).__name__,
                               error=str(exc))

    def apply_config(self, config: InstallationConfig) -> None:
        """Take a reloaded config's supervisor and control settings (live fields only)."""
        self.config = config.model_copy(update={"rooms": self.config.rooms,
                                                "network": self.config.network,
                                                "engine": self.config.engine})
        self.hub.config = self.config
        rules = self.config.installation.takes
        self.takes.set_rules(rules.keep_days, rules.keep_free_gb)

    def shutdown(self) -> None:
        """Stop every role: Control shutdown, then SIGTERM, then SIGKILL; reap them all."""
        sup = self.config.supervisor
        self.hub.flush_events(force=True)  # the last knob changes, still being coalesced
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
        killed = set()
        for role in running:
            if role.process is not None and role.process.poll() is None:
                role.process.kill()
                killed.add(role.name)
                self.log_event("role_killed", role=role.name)
        stopped = []
        for role in running:
            if role.process is not None:
                code = role.process.wait()
                self.log_event("role_stopped", role=role.name, code=code)
                role.stop_code = code
                role.process = None
                stopped.append(f"{role.name} ({_exit_text(code)}"
                               + (" after the stop timeout" if role.name in killed else "")
                               + ")")
        for role in self.roles:
            if role.pump is not None:
                role.pump.join(1.0)
                role.pump = None
            if role.heartbeat is not None:
                role.last_status = role.heartbeat.status
                role.heartbeat.close()
                role.heartbeat = None
            role.restart_at = None
            if not role.done and not role.failed:
                role.stopped = True
        if stopped:
            self.say("stopped " + ", ".join(stopped))
        for log in self._logs.values():
            log.close()
        if self.report is not None:
            try:
                self.report.finish()
            except Exception as error:  # noqa: BLE001 - the report must not fail the stop
                self.say(f"the run report could not be completed: {error!r}")
        self.write_status(state="stopped")
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
