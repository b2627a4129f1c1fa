"""The supervisor on real processes: restart with backoff, finite roles, clean shutdown;
what people see of failures (one console line each, a role given up on, JSON-line logs
that rotate), process priorities, and a full disk that never stops it."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

from ground.events import EventLog, read_events
from installation.config import config_from_dict
from installation.supervisor import RoleProcess, Supervisor, io_priority, role_processes

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
    crasher = RoleProcess("crasher", [sys.executable, "-c", "raise SystemExit(1)"])
    log = EventLog(tmp_path / "e.jsonl", "s")
    supervisor = Supervisor(_config(5821), tmp_path / "c.json", log,
                            roles=[crasher])  # type: ignore[arg-type]
    stop = threading.Event()

    def after_three_restarts() -> None:
        # on the restarts, not the wall clock: a loaded machine starts Python slowly
        deadline = time.monotonic() + 120.0
        while crasher.restarts < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        stop.set()

    threading.Thread(target=after_three_restarts, daemon=True).start()
    supervisor.run(stop, poll_s=0.02)
    log.close()
    assert crasher.restarts >= 3 and set(crasher.exit_codes) == {1}
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


def test_a_finite_run_ends_when_its_engine_is_given_up_on(tmp_path: Path) -> None:
    # the demo after `pip install .` without tinysoundfont: the engine exits with a
    # dependency error (code 4) each time; the finite player waits for its music forever
    engine = RoleProcess("engine", [sys.executable, "-c", "raise SystemExit(4)"],
                         kind="engine")
    player = RoleProcess("audio_out:a", SLEEPER, finite=True, kind="audio_out", room="a")
    supervisor = Supervisor(
        _supervisor_config(5841, max_config_failures=2),  # type: ignore[arg-type]
        tmp_path / "c.json", EventLog(tmp_path / "e.jsonl", "s"), roles=[engine, player],
        console=lambda _line: None)
    runner = _Running(supervisor)
    with runner:
        _until("the run to end", lambda: not runner.thread.is_alive())
    assert engine.failed and engine.exit_codes == [4, 4] and engine.restarts == 1
    assert supervisor.ended_by == "failed" and not player.done
    assert player.process is None  # stopped with the rest, not left waiting


def test_an_installation_runs_one_engine_and_two_roles_per_room() -> None:
    config = config_from_dict({"rooms": [{"id": "a", "audio_out": {"stop_after_s": 5}},
                                         {"id": "b"}]})
    roles = role_processes(config, Path("frozen.json"))
    # the music first: every audio_out starts before any camera loads the CPU
    assert [r.name for r in roles] == ["engine", "audio_out:a", "audio_out:b", "capture:a",
                                       "capture:b"]
    assert [r.finite for r in roles] == [False, True, False, False, False]


# -- failures where people look (issue 12): console lines, give-up, logs, priorities, disk ----


def _supervisor_config(port: int, **supervisor: object) -> object:
    return config_from_dict({
        "network": {
            name: f"tcp://127.0.0.1:{port + offset}"
            for offset, name in enumerate(["views", "chunks", "clock", "control"])
        },
        "supervisor": {"restart_backoff_s": 0.2, "stop_timeout_s": 2.0} | supervisor,
        "rooms": [{"id": "a"}],
    })


def _until(what: str, check: Callable[[], object], timeout_s: float = 15.0) -> object:
    """Wait for a condition (an event), failing with ``what`` if it never comes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class _Running:
    """A supervisor running in a thread; stops and joins it on exit."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor
        self.stop = threading.Event()
        self.thread = threading.Thread(target=supervisor.run, args=(self.stop,),
                                       kwargs={"poll_s": 0.02})

    def __enter__(self) -> Supervisor:
        self.thread.start()
        return self.supervisor

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=20)
        self.supervisor.log_event.close()  # type: ignore[attr-defined]
        assert not self.thread.is_alive()


@pytest.mark.slow
def test_a_config_error_is_given_up_after_n_tries_while_the_others_play_on(
        tmp_path: Path) -> None:
    script = ("import sys; sys.stderr.write('Error: invalid config in x.toml: field "
              "`engine.lead_s`: expected > 0\\n'); sys.exit(2)")
    bad = RoleProcess("capture:a", [sys.executable, "-c", script], kind=None)
    other = RoleProcess("audio_out:a", SLEEPER)
    lines: list[str] = []
    supervisor = Supervisor(
        _supervisor_config(6301, max_config_failures=2, status_every_s=0.1),  # type: ignore[arg-type]
        tmp_path / "c.json", EventLog(tmp_path / "e.jsonl", "supervisor"), roles=[bad, other],
        log_dir=tmp_path / "logs", status_path=tmp_path / "status.json", console=lines.append)
    with _Running(supervisor):
        _until("the bad role given up", lambda: bad.failed)
        bystander = _until("the other role", lambda: other.pid)
        status = _until("failed in status.json", lambda: [
            r for r in json.loads((tmp_path / "status.json").read_text())["roles"]
            if r["state"] == "failed"])
        assert other.pid == bystander and _alive(bystander)  # kept playing, never restarted
    assert bad.exit_codes == [2, 2] and bad.restarts == 1
    assert status[0]["name"] == "capture:a" and "engine.lead_s" in status[0]["reason"]
    said = [line for line in lines if line.startswith("capture:a")]
    assert len(said) == 3, said  # exit -> restarting, restarted, exit -> giving up
    assert "code 2 (configuration error)" in said[0] and "restarting in 0.2 s" in said[0]
    assert "field `engine.lead_s`" in said[0]
    assert said[1].startswith("capture:a restarted (pid")
    assert "giving up after 2" in said[2] and "the other roles keep playing" in said[2]


@pytest.mark.slow
def test_every_exit_restart_and_hang_is_one_human_line(tmp_path: Path) -> None:
    beats_once = [sys.executable, "-c",
                  "import os, time; fd = int(os.environ['ART2MUS_HEARTBEAT_FD']); "
                  "os.write(fd, b'{\"t\": 0, \"status\": {}}\\n'); time.sleep(60)"]
    hanger = RoleProcess("engine", beats_once)
    victim = RoleProcess("audio_out:a", SLEEPER)
    lines: list[str] = []
    supervisor = Supervisor(
        # (a hang needs three heartbeats missed: 0.1 s beats)
        _supervisor_config(6311, hang_after_s=0.5, heartbeat_s=0.1,  # type: ignore[arg-type]
                           restart_backoff_s=5.0),
        tmp_path / "c.json", EventLog(tmp_path / "e.jsonl", "supervisor"),
        roles=[hanger, victim], console=lines.append)
    with _Running(supervisor):
        first = _until("the victim", lambda: victim.pid)
        os.kill(first, signal.SIGKILL)  # type: ignore[arg-type]
        _until("the victim's exit line", lambda: any(x.startswith("audio_out") for x in lines))
        _until("the hang's line", lambda: any(x.startswith("engine") for x in lines))
        said = list(lines)
    exits = [line for line in said if line.startswith("audio_out:a")]
    assert exits == [f"audio_out:a (pid {first}) exited with signal SIGKILL after "
                     + exits[0].split(" after ")[1]], exits
    assert exits[0].endswith("; restarting in 5.0 s")
    hangs = [line for line in said if line.startswith("engine")]
    assert len(hangs) == 1, hangs  # the kill of a hung role is not a second line
    assert "hung: no heartbeat for" in hangs[0] and hangs[0].endswith("restarting in 5.0 s")


@pytest.mark.slow
def test_role_output_becomes_rotated_json_lines_and_a_traceback_is_the_reason(
        tmp_path: Path) -> None:
    script = "\n".join([
        "import json, sys",
        "print(json.dumps({'time': 0, 'level': 'info', 'message': 'hello'}))",
        "print('plain stdout line')",
        # ~300 kB on stderr before exiting: more than a pipe holds, so the role only gets
        # to its exit if the supervisor keeps reading
        "for i in range(3000): sys.stderr.write(f'[ WARN:0] noisy line {i:05d} ' + 'y' * 80 "
        "+ chr(10))",
        "raise ValueError('boom')",
    ])
    noisy = RoleProcess("capture:a", [sys.executable, "-c", script], room="a")
    lines: list[str] = []
    supervisor = Supervisor(
        _supervisor_config(6321, restart_backoff_s=30.0, restart_backoff_max_s=30.0,  # type: ignore[arg-type]
                           log_max_bytes=65536, log_backups=2),
        tmp_path / "c.json", EventLog(tmp_path / "e.jsonl", "supervisor"), roles=[noisy],
        log_dir=tmp_path / "logs", console=lines.append)
    with _Running(supervisor):
        _until("the noisy role's exit", lambda: noisy.exit_codes, 30)
    files = sorted((tmp_path / "logs").iterdir())
    assert [f.name for f in files] == ["capture-a.log", "capture-a.log.1", "capture-a.log.2"]
    records = []
    for path in reversed(files):  # oldest first
        assert path.stat().st_size <= 65536
        records += [json.loads(line) for line in path.read_text().splitlines()]
    assert all(isinstance(r, dict) and r["level"] in ("info", "warning", "error")
               for r in records)
    newest = [json.loads(line) for line in files[0].read_text().splitlines()]
    error = newest[-1]
    assert error["level"] == "error" and error["message"] == "ValueError: boom"
    assert error["exc"].startswith("Traceback (most recent call last):")
    assert error["role"] == "capture:a" and error["room"] == "a"
    noise = [r for r in records if r["message"].startswith("[ WARN:0] noisy line")]
    assert noise and all(r["level"] == "warning" for r in noise)
    # rotation kept the newest lines: the last noisy line is there, the first ones are gone
    assert noise[-1]["message"].startswith("[ WARN:0] noisy line 02999")
    assert not noise[0]["message"].startswith("[ WARN:0] noisy line 00000")
    assert len(lines) == 1 and "exited with code 1" in lines[0]
    assert ": ValueError: boom; restarting in 30.0 s" in lines[0]


@pytest.mark.slow
def test_the_music_runs_ahead_of_the_camera(tmp_path: Path) -> None:
    roles = [RoleProcess(name, SLEEPER, kind=kind) for name, kind in
             (("engine", "engine"), ("audio_out:a", "audio_out"), ("capture:a", "capture"))]
    lines: list[str] = []
    supervisor = Supervisor(
        _supervisor_config(6331, nice={"capture": 10, "engine": 0, "audio_out": -5},  # type: ignore[arg-type]
                           ionice={"capture": 7}),
        tmp_path / "c.json", EventLog(tmp_path / "e.jsonl", "supervisor"), roles=roles,
        console=lines.append)
    with _Running(supervisor):
        pids = _until("every role", lambda: all(r.pid for r in roles) and [r.pid for r in roles])
        nice = [os.getpriority(os.PRIO_PROCESS, pid) for pid in pids]  # type: ignore[union-attr]
        io = io_priority(pids[2])  # type: ignore[index]
    assert nice[0] == 0 and nice[2] == 10
    if nice[1] != -5:  # without the privilege to raise a priority: said, and it runs anyway
        assert any("audio_out runs at nice" in line for line in lines), lines
    if io is not None:
        assert io == (2, 7)  # best effort, last level


@pytest.mark.slow
def test_a_refused_priority_is_said_once_and_the_role_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.setpriority

    def unprivileged(which: int, who: int, value: int) -> None:
        if value < os.getpriority(which, who):
            raise PermissionError(13, "Permission denied")
        real(which, who, value)

    monkeypatch.setattr(os, "setpriority", unprivileged)  # the forked child inherits it
    roles = [RoleProcess(f"audio_out:{room}", SLEEPER, kind="audio_out") for room in "ab"]
    lines: list[str] = []
    supervisor = Supervisor(
        _supervisor_config(6341, nice={"audio_out": -5}),  # type: ignore[arg-type]
        tmp_path / "c.json", EventLog(tmp_path / "e.jsonl", "supervisor"), roles=roles,
        console=lines.append)
    with _Running(supervisor):
        pids = _until("both roles", lambda: all(r.pid for r in roles) and [r.pid for r in roles])
        nice = [os.getpriority(os.PRIO_PROCESS, pid) for pid in pids]  # type: ignore[union-attr]
    own = os.getpriority(os.PRIO_PROCESS, 0)
    assert nice == [own, own]
    refused = [line for line in lines if "runs at nice" in line]
    assert len(refused) == 1 and f"audio_out runs at nice {own}, not -5" in refused[0]


@pytest.mark.slow
def test_a_clean_stop_leaves_every_role_stopped_with_its_exit_code(tmp_path: Path) -> None:
    roles = [RoleProcess("engine", SLEEPER), RoleProcess("audio_out:a", SLEEPER)]
    supervisor = Supervisor(_supervisor_config(6351), tmp_path / "c.json",  # type: ignore[arg-type]
                            EventLog(tmp_path / "e.jsonl", "supervisor"), roles=roles,
                            status_path=tmp_path / "status.json", console=lambda line: None)
    with _Running(supervisor):
        _until("both roles", lambda: all(r.pid for r in roles))
    record = json.loads((tmp_path / "status.json").read_text())
    assert record["state"] == "stopped"
    assert [(r["name"], r["state"], r["exit_code"]) for r in record["roles"]] == [
        ("engine", "stopped", -signal.SIGTERM), ("audio_out:a", "stopped", -signal.SIGTERM)]


@pytest.mark.slow
def test_a_full_disk_never_stops_the_supervisor(tmp_path: Path) -> None:
    (tmp_path / "status.tmp").symlink_to("/dev/full")  # where status.json is written first
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "victim.log").symlink_to("/dev/full")
    talker = [sys.executable, "-c",
              "import time\nwhile True:\n    print('x' * 100, flush=True)\n    time.sleep(0.005)"]
    victim = RoleProcess("victim", talker)
    lines: list[str] = []
    status = tmp_path / "status.json"
    supervisor = Supervisor(
        _supervisor_config(6361, status_every_s=0.05), tmp_path / "c.json",  # type: ignore[arg-type]
        EventLog(tmp_path / "e.jsonl", "supervisor"), roles=[victim],
        log_dir=tmp_path / "logs", status_path=status, console=lines.append)
    with _Running(supervisor):
        first = _until("the victim", lambda: victim.pid)
        _until("status writes failing", lambda: supervisor.write_failures.failures.get(
            str(status), 0) >= 3)
        os.kill(first, signal.SIGKILL)  # type: ignore[arg-type]
        second = _until("a restart while the disk is full",
                        lambda: victim.pid not in (None, first) and victim.pid)
        _until("log lines dropped", lambda: supervisor._logs["victim"].dropped > 10)
        (tmp_path / "status.tmp").unlink()  # space again
        record = _until("status.json", lambda: status.exists() and json.loads(
            status.read_text()))
        assert victim.pid == second
    said = [line for line in lines if "cannot write" in line]
    assert len(said) == 2, said  # once for the status, once for the role log
    assert any(str(status) in line and "No space left on device" in line for line in said)
    assert any(line.startswith(f"writing {status} works again") for line in lines)
    assert str(tmp_path / "logs" / "victim.log") in record["write_errors"]  # type: ignore[index]


def test_an_event_log_on_a_full_disk_drops_counts_and_says_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "engine.jsonl"
    path.symlink_to("/dev/full")
    log = EventLog(path, "engine")
    for seq in range(50):
        log("chunk", seq=seq)
    assert (log.written, log.dropped) == (0, 50)
    path.unlink()  # the disk has room again
    log("chunk", seq=50)
    log.close()
    assert log.written == 1 and [e["seq"] for e in read_events(path)] == [50]
    said = [r.getMessage() for r in caplog.records if r.name == "ground.events"]
    assert len(said) == 2 and "No space left on device" in said[0], said
    assert "works again (50 write(s) lost so far)" in said[1]


def test_an_event_line_a_full_disk_cut_short_does_not_swallow_the_next(tmp_path: Path) -> None:
    # The disk filled mid-line: the file ended in '..."seq"', and the first event written
    # once space came back was glued to it, both lost to a reader.
    import errno

    path = tmp_path / "events.jsonl"
    log = EventLog(path, "audio_out", "a")
    log("started")

    class FullDisk:
        def __init__(self, real: IO[bytes]) -> None:
            self.real = real

        def write(self, data: bytes) -> int:
            self.real.write(data[:len(data) // 2])  # what fitted
            self.real.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self) -> None:
            self.real.close()

    assert log._lines._file is not None
    log._lines._file = FullDisk(log._lines._file)  # type: ignore[assignment]
    log("chunk_received", seq=7)
    log("chunk_received", seq=8)  # space again
    log.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and (log.written, log.dropped) == (2, 1)
    assert json.loads(lines[2])["seq"] == 8
