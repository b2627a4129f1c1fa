"""The files an installation keeps beside its music, read and written as anything may
have left them: ``status.json`` (``art2mus status``), ``run-config.json`` (``art2mus run``).

The defects: ``art2mus status`` printed a traceback (exit 1, "the installation has
problems") for a status file of another shape, and hung on one linked to /dev/zero;
it exited 0 while a room heard nothing; ``art2mus run`` printed a traceback when
``OUTPUT/run-config.json`` could not be written.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ground.errors import ConfigError
from installation.cli import cli
from installation.config import config_from_dict, freeze_config, load_config
from installation.status import (
    MAX_STATUS_BYTES,
    ROOM_SILENT_GRACE_S,
    problems,
    read_status,
    role_problems,
)
from tests.status_files import status_config

PORT = 6490  # 6490-6493


def _record(**changes: Any) -> dict[str, Any]:
    """A status record as the supervisor writes it: an engine, room a's audio_out playing."""
    roles = [
        {"name": "engine", "kind": "engine", "room": None, "pid": 11, "state": "running",
         "uptime_s": 90.0, "restarts": 0, "hangs": 0, "heartbeat_age_s": 0.2,
         "exit_code": None, "reason": None,
         "status": {"generator": "procedural", "rooms": {"a": {
             "artwork_id": "w1", "listening": True, "clock_age_s": 0.1, "health": 1.0}}}},
        {"name": "audio_out:a", "kind": "audio_out", "room": "a", "pid": 12, "state": "running",
         "uptime_s": 90.0, "restarts": 0, "hangs": 0, "heartbeat_age_s": 0.2,
         "exit_code": None, "reason": None,
         "status": {"state": "playing", "recording": {"state": "ok", "path": "/x/a.wav",
                                                      "error": None}}},
    ]
    record = {"installation": "t", "time": time.time(), "state": "running",
              "supervisor_pid": os.getpid(), "host": socket.gethostname(), "roles": roles,
              "rooms": {"a": {"artwork_id": "w1", "confidence": 0.9, "key": "D dorian",
                              "tempo": 92.0, "level": -18.0, "playback": "playing",
                              "recording": "ok", "health": 1.0}},
              "params": {"*": {"volume": 0.8}}, "write_errors": {}, "surfaces": {}}
    return record | changes


def _status(tmp_path: Path, record: Any = None, raw: bytes | None = None) -> Any:
    config = status_config(tmp_path)
    (tmp_path / "out").mkdir(exist_ok=True)
    if raw is not None or record is not None:
        (tmp_path / "out" / "status.json").write_bytes(
            raw if raw is not None else json.dumps(record).encode())
    return CliRunner().invoke(cli, ["status", "--config", str(config)])


def _refused(result: Any, path: Path, why: str) -> None:
    assert result.exit_code == 3, result.output
    assert f"Error: cannot read status file {path}: {why}" in result.output, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


# -- status.json of another shape ---------------------------------------------------------


def _without_name(record: dict[str, Any]) -> None:
    record["roles"][0]["name"] = ["engine"]


SHAPES = {
    "time a string": (lambda r: r.update(time="yesterday"),
                      "expected 'time' a finite number (seconds since 1970), got \"yesterday\""),
    "time missing": (lambda r: r.pop("time"),
                     "expected 'time' a finite number (seconds since 1970), got null"),
    "rooms a list": (lambda r: r.update(rooms=["a"]),
                     "expected 'rooms' an object of room objects, got [\"a\"]"),
    "a room a string": (lambda r: r.update(rooms={"a": "playing"}),
                        "expected rooms['a'] an object, got \"playing\""),
    "params a list": (lambda r: r.update(params=[1]), "expected 'params' an object of "
                      "parameter objects (room -> name -> value), got [1]"),
    "a role's name a list": (_without_name,
                             "expected roles[0].name a string, got [\"engine\"]"),
    "a role's status a list": (lambda r: r["roles"][1].update(status=[]),
                               "expected roles[1].status an object, got []"),
    "a role row a string": (lambda r: r.update(roles=["engine"]),
                            "expected roles[0] an object, got \"engine\""),
    "surfaces a list": (lambda r: r.update(surfaces=["midi"]),
                        "expected 'surfaces' an object, got [\"midi\"]"),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_status_refuses_a_status_file_of_another_shape_with_exit_3(
        tmp_path: Path, shape: str) -> None:
    change, why = SHAPES[shape]
    record = _record()
    change(record)
    _refused(_status(tmp_path, record), tmp_path / "out" / "status.json", why)


def test_status_refuses_what_is_not_an_object_and_cuts_what_it_quotes(tmp_path: Path) -> None:
    path = tmp_path / "out" / "status.json"
    _refused(_status(tmp_path, [1, 2]), path, "expected an object, got [1, 2]")
    long = _status(tmp_path, _record(time="x" * 500))
    _refused(long, path, "expected 'time' a finite number (seconds since 1970), got \"xxx")
    assert "x" * 100 not in long.output
    _refused(_status(tmp_path, raw=b"\xff\xfe{"), path, "'utf-8' codec can't decode")
    _refused(_status(tmp_path, raw=b"[" * 100_000), path, "maximum recursion depth")


def test_status_prints_a_status_file_missing_values_with_defaults(tmp_path: Path) -> None:
    """What fits the shape but lacks a value, or holds another type of value, is shown
    as such: an older file without a room's playback, a role without a name."""
    record = _record()
    for room in record["rooms"].values():
        for key in ("health", "playback", "recording", "tempo", "confidence"):
            room.pop(key)
        room["level"] = "loud"
    record["roles"][0].pop("name")
    record["roles"][0]["state"] = None
    record["roles"][1] |= {"uptime_s": "12", "heartbeat_age_s": [1], "kind": "audio_out"}
    record["params"] = {"*": {"intensity": "high", "volume": 0.8}}
    shown = _status(tmp_path, record)
    assert shown.exit_code == 0, shown.output
    assert "Traceback" not in shown.output
    assert "high" in shown.output and "0.8" in shown.output
    assert "-120 dBFS" in shown.output  # a level that is not a number: the table's default
    assert any(line.startswith("│ ?") for line in shown.output.splitlines())  # no name
    # the problems a record's shape leaves no room for are still found
    assert problems(_record(roles=[{"state": "failed", "name": "engine"}]), 10.0) == [
        "engine is failed; fix the cause, then restart the installation (art2mus run) or "
        "its service"]


@pytest.mark.timeout(60)  # the old read never came back from /dev/zero
@pytest.mark.parametrize("what", ["/dev/zero", "folder", "pipe", "too big"])
def test_status_refuses_a_status_file_that_is_no_file_or_too_big(
        tmp_path: Path, what: str) -> None:
    path = tmp_path / "out" / "status.json"
    path.parent.mkdir(parents=True)
    if what == "/dev/zero":
        path.symlink_to("/dev/zero")
        why = "it is a device (a link to /dev/zero), not a file; the supervisor " \
              "writes a file there: remove it"
    elif what == "folder":
        path.mkdir()
        why = "it is a folder, not a file"
    elif what == "pipe":
        os.mkfifo(path)
        why = "it is a named pipe, not a file"
    else:
        record = _record()
        record["rooms"] = {f"room{i}": record["rooms"]["a"] for i in range(40_000)}
        path.write_text(json.dumps(record))
        assert path.stat().st_size > MAX_STATUS_BYTES
        why = "expected a status file of a few kB, got more than 4 MB"
    _refused(_status(tmp_path), path, why)
    with pytest.raises(Exception, match="cannot read status file"):
        read_status(path)


def test_a_status_file_as_the_supervisor_writes_it_reads_back(tmp_path: Path) -> None:
    from installation.status import write_status

    config = config_from_dict({"installation": {"output_dir": str(tmp_path / "out")},
                               "rooms": [{"id": "a"}, {"id": "b"}]})
    path = tmp_path / "out" / "status.json"
    write_status(path, config, _record()["roles"], {"*": {"volume": 0.5}},
                 write_errors={"x.log": "full"}, disk={"path": "/", "free_bytes": 1 << 40},
                 surfaces={"MIDI in": "open"}, takes={"removed": 0})
    record = read_status(path)
    assert set(record["rooms"]) == {"a", "b"} and record["params"] == {"*": {"volume": 0.5}}


# -- a room that hears nothing --------------------------------------------------------------


def _audio(record: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = record["roles"][1]
    return row


def test_a_silent_room_is_a_problem_and_status_exits_1(tmp_path: Path) -> None:
    """The engine gone quiet (hung, unreachable, a wrong key): audio_out held the last music,
    then fell silent. The room's health was 0.0 and `art2mus status` said all was well."""
    record = _record()
    assert role_problems(record["roles"]) == []
    _audio(record)["status"]["state"] = "silent"
    record["rooms"]["a"] |= {"playback": "silent", "health": 0.0}
    line = ("room a is silent: no music from the engine for longer than audio_out holds the "
            "last of it; is the engine running and reachable, and its keys right?")
    assert role_problems(record["roles"]) == [line]
    shown = _status(tmp_path, record)
    assert shown.exit_code == 1 and f"PROBLEM: {line}" in shown.output
    # holding (the engine missed a chunk or two) is not yet a problem
    _audio(record)["status"]["state"] = "holding"
    assert role_problems(record["roles"]) == []
    # a down audio_out is said once, as a role, not again as a silent room
    _audio(record).update(state="restarting", status={"state": "silent"})
    assert role_problems(record["roles"]) == ["audio_out:a is restarting"]


def test_a_room_still_waiting_for_its_first_chunk_is_said_after_the_grace() -> None:
    record = _record()
    audio = _audio(record)
    audio["status"]["state"] = "starting"
    audio["uptime_s"] = ROOM_SILENT_GRACE_S - 1  # the engine's first chunk may come yet
    assert role_problems(record["roles"]) == []
    audio["uptime_s"] = 95.0
    assert role_problems(record["roles"]) == [
        "room a is silent: no music from the engine for 95 s (since its audio_out started); "
        "is the engine running and reachable, and its keys right?"]
    # an engine of this installation still starting or warming up explains the wait
    engine = record["roles"][0]
    engine["status"] = {"warming": True}
    assert role_problems(record["roles"]) == []
    engine |= {"state": "starting", "status": None}
    assert role_problems(record["roles"]) == []
    # a room machine (no engine row: the engine is on another machine) says it
    assert len(role_problems(record["roles"][1:])) == 1


def _engine_room(record: dict[str, Any], **entry: Any) -> list[str]:
    record["roles"][0]["status"]["rooms"]["a"] |= entry
    return role_problems(record["roles"][:1])  # the engine's machine: no audio_out row


def test_a_room_no_audio_out_listens_to_is_a_problem_on_the_engines_machine() -> None:
    """A room machine with a wrong key (or gone): the engine's status for the room says
    ``listening`` false; once the engine's own grace passed (its room health 0.0), said."""
    record = _record()
    assert _engine_room(record) == []
    assert _engine_room(record, listening=False, health=1.0) == []  # within the grace
    line = ("no audio_out listens to room a: the engine makes its music for nobody; is the "
            "room's audio_out running, its [network] chunks the engine's address, and its "
            "keys right ([security])?")
    assert _engine_room(record, listening=False, health=0.0) == [line]
    # an engine that gives no health: its uptime past the grace
    record["roles"][0]["status"]["rooms"]["a"].pop("health")
    assert _engine_room(record, listening=False) == [line]
    record["roles"][0]["uptime_s"] = 3.0
    assert _engine_room(record, listening=False) == []
    # the engine down is said as a role, its last heartbeat's rooms not read
    record["roles"][0] |= {"state": "restarting", "uptime_s": 90.0}
    assert _engine_room(record, listening=False, health=0.0) == ["engine is restarting"]


def test_a_room_whose_clock_does_not_reach_the_engine_is_a_problem() -> None:
    record = _record()
    assert _engine_room(record, clock_age_s=ROOM_SILENT_GRACE_S - 1) == []
    assert _engine_room(record, clock_age_s=45.0) == [
        "the engine has had no playback clock from room a for 45 s: it makes music without "
        "knowing where the room's playhead is; is the room's [network] clock the engine's "
        "address?"]
    assert _engine_room(record, clock_age_s=None, health=0.5) == [
        "the engine has had no playback clock from room a since the engine started: it makes "
        "music without knowing where the room's playhead is; is the room's [network] clock "
        "the engine's address?"]
    # junk in a heartbeat is no problem and no crash
    assert _engine_room(record, clock_age_s="old", health="bad", listening="yes") == []
    record["roles"][0]["status"]["rooms"] = {"a": 1, "b": None}
    assert role_problems(record["roles"]) == []


# -- run-config.json ------------------------------------------------------------------------


def test_freeze_config_writes_the_whole_file_or_refuses_naming_it(tmp_path: Path) -> None:
    config = config_from_dict({"rooms": [{"id": "a"}]})
    path = tmp_path / "out" / "run-config.json"
    assert freeze_config(config, path) == path and load_config(path) == config
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert freeze_config(config, path) == path  # over the last run's copy
    assert sorted(p.name for p in path.parent.iterdir()) == ["run-config.json"]
    path.unlink()
    path.mkdir()
    with pytest.raises(ConfigError) as refused:
        freeze_config(config, path)
    assert str(refused.value) == (
        f"cannot write the run's frozen config {path} (Is a directory): remove or rename "
        "what is in the way, or set installation.output_dir to a folder this user can write")
    assert sorted(p.name for p in path.parent.iterdir()) == ["run-config.json"]  # no temporary
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(ConfigError, match=f"frozen config {blocked}/run-config.json"):
        freeze_config(config, blocked / "run-config.json")


def test_run_refuses_to_start_when_its_frozen_config_cannot_be_written(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "run-config.json").mkdir(parents=True)
    path = tmp_path / "inst.json"
    path.write_text(json.dumps({
        "installation": {"output_dir": str(out)},
        "network": {name: f"tcp://127.0.0.1:{PORT + i}"
                    for i, name in enumerate(("views", "chunks", "clock", "control"))},
        "audio_out": {"output": "none"},
        "console": {"listen": ""},
        "rooms": [{"id": "a"}]}))
    result = CliRunner().invoke(cli, ["run", "--config", str(path)])
    assert result.exit_code == 2, result.output
    assert (f"Error: cannot write the run's frozen config {out / 'run-config.json'} (Is a "
            "directory)") in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert not (out / "events").exists() and not (out / "status.json").exists()  # no role
