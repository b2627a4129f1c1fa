"""The technician's console over HTTP: state, controls, config editor, auth, catalogue.

The app is driven with Starlette's TestClient (in-process) and, where a real
socket matters (the event stream, a port in use), with a real
:class:`~installation.console.app.ConsoleServer` on a free loopback port; the
control hub, the config validator and the preview render subprocess are
the real ones; only the supervisor's role rows are made up.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from starlette.testclient import TestClient

from ground.errors import ConfigError
from installation.config import InstallationConfig, config_from_dict, freeze_config, load_config
from installation.console.app import Console, ConsoleServer
from installation.control import ControlHub
from installation.surfaces import start_console

TOKEN = "a-console-token-0123456789"
BASE = "http://127.0.0.1"


def _config_text(out: Path, catalogue: Path | None = None, console: str = "") -> str:
    recognition = (f'[rooms.capture.recognition]\ncatalogue = "{catalogue}"\n'
                   if catalogue is not None else "")
    return f"""
[installation]
name = "console-test"
output_dir = "{out}"

[supervisor]
status_every_s = 1.0

[console]
listen = "127.0.0.1:0"
{console}

[[rooms]]
id = "room-1"
seed = 5
[rooms.capture]
source = "demo"
{recognition}
[[rooms]]
id = "room-2"
seed = 6
[rooms.audio_out]
volume = 0.5
"""


def _catalogue(folder: Path) -> Path:
    """Two small painted works and their metadata."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    for name, shape in (("sunflowers.png", (400, 300)), ("harbour.png", (240, 360))):
        coarse = (rng.random((shape[0] // 20, shape[1] // 20, 3)) * 255).astype(np.uint8)
        cv2.imwrite(str(folder / name), cv2.resize(coarse, (shape[1], shape[0]),
                                                   interpolation=cv2.INTER_NEAREST))
    (folder / "catalogue.toml").write_text(
        '[[artwork]]\nfile = "sunflowers.png"\nid = "SF-1"\ntitle = "Sunflowers"\n'
        'artist = "Vincent van Gogh"\nyear = 1888\n', encoding="utf-8")
    return folder


def _rows(artwork: str = "SF-1", spectrum: bool = True) -> list[dict[str, Any]]:
    """Role rows as the supervisor makes them, with the heartbeats the roles send."""
    def row(name: str, kind: str, room: str | None, status: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "kind": kind, "room": room, "pid": 100, "state": "running",
                "uptime_s": 12.0, "restarts": 1, "hangs": 0, "heartbeat_age_s": 0.2,
                "exit_code": 1, "reason": "RuntimeError: boom", "status": status}
    audio = {"state": "playing", "underflows": 2, "playhead_s": 12.5, "level_dbfs": -18.2,
             "peak_dbfs": -6.1, "loudness_lufs": -20.5, "recording": {"state": "ok"}}
    if spectrum:
        audio["spectrum"] = [-60.0] * 32
    return [
        row("engine", "engine", None, {"generator": "procedural", "chunk_ms": 12.3,
                                       "batch": [1, 2], "gpu_memory_mb": None, "rooms": {
                                           "room-1": {"artwork_id": artwork, "key": "D",
                                                      "mode": "dorian", "tempo_bpm": 96.0,
                                                      "lead_s": 1.9, "rtf": 85.0,
                                                      "instruments": ["piano"]}}}),
        row("capture:room-1", "capture", "room-1", {"artwork_id": artwork, "confidence": 0.93,
                                                     "catalogue": "2 works, updating"}),
        row("audio_out:room-1", "audio_out", "room-1", dict(audio)),
    ]


class Fixture:
    """A console over a real config file, a real hub and made-up role rows."""

    def __init__(self, tmp_path: Path, console: str = "", catalogue: bool = True,
                 source: bool = True) -> None:
        self.out = tmp_path / "out"
        folder = _catalogue(tmp_path / "catalogue") if catalogue else None
        self.path = tmp_path / "installation.toml"
        self.text = _config_text(self.out, folder, console)
        self.path.write_text(self.text, encoding="utf-8")
        self.config = load_config(self.path)
        self.frozen = freeze_config(self.config, self.out / "run-config.json")
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.hub = ControlHub(self.config, self.log_event)
        self.rows = _rows()
        self.console = Console(self.config, hub=self.hub, rows=lambda: self.rows,
                               log_event=self.log_event,
                               source_path=self.path if source else None,
                               output_dir=self.out, frozen_path=self.frozen,
                               token=self.config.console.read_token())
        self.client = TestClient(self.console.app(), base_url=BASE)

    def log_event(self, kind: str, **fields: Any) -> None:
        self.events.append((kind, fields))

    def post(self, path: str, body: Any, **kwargs: Any) -> Any:
        return self.client.post(path, json=body, **kwargs)

    def version(self) -> str:
        """The config file's version as GET /api/config gives it (the base of an edit)."""
        return str(self.client.get("/api/config").json()["version"])


@pytest.fixture
def fx(tmp_path: Path) -> Fixture:
    return Fixture(tmp_path)


# -- the state ----------------------------------------------------------------


def test_the_state_says_what_each_room_sees_plays_and_how_healthy_it_is(fx: Fixture) -> None:
    fx.console.state.tick()
    fx.rows = _rows()  # a new heartbeat: one more spectrogram column
    fx.console.state.tick()
    state = fx.client.get("/api/state").json()
    assert state["installation"] == "console-test"
    assert state["console"] == {"allow_edit": True, "editable": True}
    assert [p["name"] for p in state["params_table"]] == [
        "intensity", "brightness", "tempo_bias", "tempo_bpm", "tonic", "mode", "transition_s",
        "freeze", "next_variation", "volume"]
    tonic = next(p for p in state["params_table"] if p["name"] == "tonic")
    assert tonic["kind"] == "choice" and tonic["choices"][:3] == [
        [-1, "the artwork's"], [0, "C"], [1, "C#"]]
    assert state["effective"]["room-2"]["volume"] == 0.5  # the room's configured volume
    room = state["rooms"]["room-1"]
    # the title comes from the room's catalogue when capture does not send one
    assert (room["artwork_id"], room["title"], room["artist"]) == (
        "SF-1", "Sunflowers", "Vincent van Gogh")
    assert (room["key"], room["mode"], room["tempo"], room["instruments"]) == (
        "D", "dorian", 96.0, ["piano"])
    assert (room["peak_dbfs"], room["loudness_lufs"], room["underflows"]) == (-6.1, -20.5, 2)
    assert room["frame"] is None and room["health"] == 1.0
    assert room["catalogue"] == "2 works, updating"  # capture's word on its catalogue
    assert state["rooms"]["room-2"]["catalogue"] == ""  # no capture heartbeat there
    assert room["roles"]["capture"]["reason"] == "RuntimeError: boom"
    assert "status" not in room["roles"]["audio_out"]
    assert state["engine"] | {"state": None} == {
        "state": None, "restarts": 1, "reason": "RuntimeError: boom", "generator": "procedural",
        "chunk_ms": 12.3, "rtf": 85.0, "rooms_served": 1, "batch": [1, 2],
        "gpu_memory_mb": None, "backend": None}
    assert state["timeline"]["room-1"][0]["artwork_id"] == "SF-1"
    assert len(state["spectrogram"]["room-1"]) == 2
    assert state["spectrogram"]["room-2"] == []
    assert [r["name"] for r in state["roles"]] == ["engine", "capture:room-1",
                                                   "audio_out:room-1"]


def test_the_state_lists_what_is_wrong_as_art2mus_status_does(tmp_path: Path) -> None:
    fx = Fixture(tmp_path)
    fx.console.state.tick()
    assert fx.client.get("/api/state").json()["problems"] == []
    # A full disk: the engine's state file, a take and the supervisor's status file.
    failing = {str(fx.out / "status.json"): "[Errno 28] No space left on device"}
    fx.console = Console(fx.config, hub=fx.hub, rows=lambda: fx.rows, log_event=fx.log_event,
                         source_path=fx.path, output_dir=fx.out, write_errors=lambda: failing)
    fx.client = TestClient(fx.console.app(), base_url=BASE)
    fx.rows[0]["status"]["write_errors"] = {"/o/run/engine-state.json": "[Errno 28] full"}
    fx.rows[2]["status"]["recording"] = {"state": "failed", "path": "/o/a.wav",
                                         "error": "ENOSPC"}
    fx.rows[1]["state"] = "restarting"
    fx.console.state.tick()
    assert fx.client.get("/api/state").json()["problems"] == [
        "engine cannot write /o/run/engine-state.json: [Errno 28] full",
        "capture:room-1 is restarting: RuntimeError: boom",
        "audio_out:room-1: recording failed (/o/a.wav): ENOSPC",
        f"the supervisor cannot write {fx.out / 'status.json'}: [Errno 28] No space left on "
        "device"]
    # and before it is full: a disk with little room left is said while the takes still go on
    from installation.status import DiskWatch

    fx.console.state.disk = DiskWatch(fx.out, free=lambda path: 3 * 10**8)
    fx.console.state.tick()
    assert fx.client.get("/api/state").json()["problems"][-1] == (
        f"the disk of {fx.out} has 0.30 GB free: recordings stop when it is full (the music "
        f"goes on); free some space or move installation.output_dir")


def test_a_failed_role_says_what_to_do_and_one_starting_again_stays_listed(fx: Fixture) -> None:
    """The auditor's banner that hid while the room was still silent, and said nothing of
    what to do once the supervisor had given up."""
    fx.rows[1] |= {"state": "failed", "pid": None,
                   "reason": "exited 3 times in a row with code 3 (input error)"}
    fx.rows[2] |= {"state": "starting", "restarts": 1, "reason": "exited with signal SIGKILL"}
    fx.console.state.tick()
    assert fx.client.get("/api/state").json()["problems"] == [
        "capture:room-1 is failed: exited 3 times in a row with code 3 (input error); fix the "
        "cause, then restart the installation (art2mus run) or its service",
        "audio_out:room-1 is starting again after: exited with signal SIGKILL"]
    fx.rows[2] |= {"reason": None}
    fx.rows[1] |= {"state": "starting", "restarts": 0}  # the first start: nothing wrong
    fx.console.state.tick()
    assert fx.client.get("/api/state").json()["problems"] == [
        "audio_out:room-1 is starting again after a restart"]
    fx.rows[2] |= {"state": "running"}
    fx.console.state.tick()
    assert fx.client.get("/api/state").json()["problems"] == []


def test_each_room_says_what_is_wrong_with_it_and_whether_its_picture_is_live(
        fx: Fixture) -> None:
    fx.console.state.tick()
    state = fx.client.get("/api/state").json()
    assert state["tick_s"] == 0.5  # the page's measure of a stream gone quiet
    room = state["rooms"]["room-1"]
    assert room["trouble"] == {"tone": "", "lines": [], "frame_stale": False}
    assert room["frame_time"] is None  # capture has written no picture yet

    def trouble() -> dict[str, Any]:
        fx.console.state.tick()
        return dict(fx.client.get("/api/state").json()["rooms"]["room-1"]["trouble"])

    fx.rows[1] |= {"state": "failed", "pid": None}  # the supervisor gave up on capture
    assert trouble() == {"tone": "warn", "frame_stale": True, "lines": [
        {"tone": "warn", "text": "capture failed: showing its last frame"}]}
    fx.rows[1] |= {"state": "running"}
    fx.rows[1]["status"]["camera"] = "lost"  # capture runs, its camera sends nothing
    assert trouble()["lines"] == [{"tone": "warn", "text": "camera lost: showing its last frame"}]
    fx.rows[1]["status"]["camera"] = "ok"
    # audio_out plays to no card: the room is silent, the recording goes on
    fx.rows[2]["status"]["output"] = {"state": "waiting", "error": "no output device"}
    assert trouble() == {"tone": "bad", "frame_stale": False, "lines": [
        {"tone": "bad", "text": "silent: sound device missing"}]}
    fx.rows[2]["status"]["output"] = {"state": "lost", "device": "USB Audio", "error": "gone"}
    fx.rows[2]["status"]["recording"] = {"state": "failed", "path": "/o/a.wav",
                                         "error": "ENOSPC"}
    assert trouble()["lines"] == [
        {"tone": "bad", "text": "silent: sound device USB Audio lost"},
        {"tone": "warn", "text": "recording failed: ENOSPC"}]
    # restarting: its last heartbeat (the device, the take) no longer says anything
    fx.rows[2] |= {"state": "restarting", "pid": None}
    assert trouble()["lines"] == [{"tone": "bad", "text": "silent: audio_out is restarting"}]
    fx.rows[2] |= {"state": "running"}
    fx.rows[2]["status"] = {"state": "holding"}
    assert trouble() == {"tone": "warn", "frame_stale": False, "lines": [
        {"tone": "warn", "text": "holding: no new music from the engine, a held sound plays"}]}
    frame = fx.out / "console" / "room-1.jpg"
    frame.parent.mkdir(parents=True, exist_ok=True)
    frame.write_bytes(b"\xff\xd8 a picture")
    fx.console.state.tick()
    room = fx.client.get("/api/state").json()["rooms"]["room-1"]
    assert room["frame_time"] == pytest.approx(frame.stat().st_mtime, abs=1e-3)


def test_the_page_inlines_the_state_and_static_files_are_served(fx: Fixture) -> None:
    fx.rows[1]["status"]["title"] = "</script><script>alert(1)</script>"
    fx.console.state.tick()
    page = fx.client.get("/")
    assert page.status_code == 200
    assert "{{INITIAL_STATE}}" not in page.text
    assert "</script><script>alert(1)" not in page.text  # cannot close the inlining script
    assert fx.client.get("/static/console.js").headers["content-type"].startswith(
        "text/javascript")


def test_the_camera_frame_is_served_once_capture_wrote_one(fx: Fixture) -> None:
    answer = fx.client.get("/api/rooms/room-1/frame.jpg")
    assert answer.status_code == 404
    assert answer.json()["error"] == "no camera frame yet for room room-1"
    frame = fx.out / "console" / "room-1.jpg"
    frame.parent.mkdir(parents=True, exist_ok=True)
    frame.write_bytes(cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    fx.console.state.tick()
    assert fx.client.get("/api/state").json()["rooms"]["room-1"]["frame"].startswith(
        "/api/rooms/room-1/frame.jpg?t=")
    answer = fx.client.get("/api/rooms/room-1/frame.jpg")
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    assert fx.client.get("/api/rooms/nowhere/frame.jpg").status_code == 404


# -- controls -----------------------------------------------------------------


def test_a_parameter_is_set_clamped_or_refused_naming_what_is_wrong(fx: Fixture) -> None:
    answer = fx.post("/api/params", {"room": "room-1", "name": "intensity", "value": 0.7})
    assert answer.json() == {"room": "room-1", "name": "intensity", "value": 0.7}
    assert fx.hub.snapshot()["room-1"]["intensity"] == 0.7
    assert ("control_set", {"name": "intensity", "value": 0.7, "room": "room-1",
                            "source": "console"}) in fx.events
    assert fx.post("/api/params", {"room": "*", "name": "volume", "value": 9})\
        .json()["value"] == 4.0
    refused = [
        ({"room": "room-1", "name": "intensity", "value": "nan"}, "parameter intensity"),
        ({"room": "room-1", "name": "intensity", "value": "0.5"}, "parameter intensity"),
        ({"room": "room-1", "name": "loudness", "value": 0.5}, "'loudness'"),
        ({"room": "room-9", "name": "intensity", "value": 0.5}, "unknown room 'room-9'"),
        ({"room": "room-1", "name": "intensity"}, "value"),
        ({"room": "room-1", "name": "lead_s", "value": 1.0}, "'lead_s'"),  # settings: no
    ]
    for body, named in refused:
        answer = fx.post("/api/params", body)
        assert answer.status_code == 400, body
        assert named in answer.json()["error"], (body, answer.json())
    nan = fx.client.post("/api/params", content=b'{"room": "room-1", "name": "brightness", '
                         b'"value": NaN}', headers={"content-type": "application/json"})
    assert nan.status_code == 400 and "parameter brightness" in nan.json()["error"]
    assert fx.hub.snapshot() == {"room-1": {"intensity": 0.7}, "*": {"volume": 4.0}}


def test_freeze_toggles_and_next_variation_steps(fx: Fixture) -> None:
    assert fx.post("/api/trigger", {"room": "room-1", "name": "freeze"}).json()["value"] == 1.0
    assert fx.post("/api/trigger", {"room": "room-1", "name": "freeze"}).json()["value"] == 0.0
    assert fx.post("/api/trigger", {"room": "*", "name": "next_variation"}).json()["value"] == 1
    answer = fx.post("/api/trigger", {"room": "room-1", "name": "intensity"})
    assert answer.status_code == 400 and "name" in answer.json()["error"]


def test_mute_sets_volume_zero_and_unmute_restores_it(fx: Fixture) -> None:
    fx.post("/api/params", {"room": "room-1", "name": "volume", "value": 0.7})
    assert fx.post("/api/mute", {"room": "room-1", "muted": True}).json() == {
        "room": "room-1", "muted": True, "volume": 0.0}
    fx.console.state.tick()
    assert fx.client.get("/api/state").json()["muted"]["room-1"] is True
    assert fx.post("/api/mute", {"room": "room-1", "muted": False}).json()["volume"] == 0.7
    # all rooms: every room's own volume comes back too
    fx.post("/api/mute", {"room": "*", "muted": True})
    assert fx.hub.current("volume", "room-1") == 0.0
    fx.post("/api/mute", {"room": "*", "muted": False})
    assert fx.hub.current("volume", "room-1") == 0.7
    assert fx.hub.current("volume", "room-2") == 0.5
    assert fx.post("/api/mute", {"room": "*", "muted": "yes"}).status_code == 400


def test_play_in_room_sends_capture_a_one_off_command(fx: Fixture) -> None:
    fx.hub.pending()
    answer = fx.post("/api/rooms/room-1/play", {"artwork_id": "SF-1", "seconds": 60})
    assert answer.status_code == 200 and answer.json()["until"] > time.time()
    (message,) = fx.hub.pending()
    assert (message.target, message.room, message.params) == (
        "capture", "room-1", {"show_artwork": "SF-1", "show_for_s": 60.0})
    assert fx.hub.replay() == 0  # one-off: never replayed to a restarted capture
    assert fx.post("/api/rooms/room-1/play", {"artwork_id": "SF-1", "seconds": 0})\
        .json()["until"] is None
    assert fx.post("/api/rooms/room-1/play", {"artwork_id": "nope"}).status_code == 404
    assert fx.post("/api/rooms/room-1/play",
                   {"artwork_id": "SF-1", "seconds": -1}).status_code == 400
    assert fx.post("/api/rooms/room-2/play", {"artwork_id": "SF-1"}).status_code == 404


# -- the config editor --------------------------------------------------------


def test_an_invalid_edit_is_refused_naming_the_field_and_the_file_stays(fx: Fixture) -> None:
    bad = fx.text.replace('source = "demo"', 'source = "demo"\nfps = -3')
    check = fx.post("/api/config/check", {"text": bad}).json()
    assert check["ok"] is False
    assert check["errors"][0]["field"] == "rooms[0].capture.fps"
    assert "+fps = -3" in check["diff"]
    answer = fx.post("/api/config/apply", {"text": bad, "base": fx.version()})
    assert answer.status_code == 400 and "rooms[0].capture.fps" in answer.json()["error"]
    syntax = fx.post("/api/config/check", {"text": "[[rooms\n"}).json()
    assert syntax["ok"] is False and syntax["errors"][0]["field"] == "(TOML syntax)"
    assert fx.path.read_text(encoding="utf-8") == fx.text
    assert not (fx.out / "console" / "last-good.toml").exists()


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_a_valid_edit_is_applied_and_rolled_back(fx: Fixture) -> None:
    config = fx.client.get("/api/config").json()
    assert config == {"path": str(fx.path), "text": fx.text, "version": _sha256(fx.text),
                      "editable": True, "last_good": False}
    edited = fx.text.replace("status_every_s = 1.0", "status_every_s = 2.0").replace(
        'source = "demo"', 'source = "demo"\nfps = 10')
    check = fx.post("/api/config/check", {"text": edited, "base": config["version"]}).json()
    assert check["ok"] and check["live"] == ["supervisor.status_every_s"]
    assert check["restart"] == ["rooms[0].capture.fps"]
    assert check["version"] == config["version"] and check["stale"] is False
    answer = fx.post("/api/config/apply", {"text": edited, "base": config["version"]})
    assert answer.json() == {"ok": True, "live": ["supervisor.status_every_s"],
                             "restart": ["rooms[0].capture.fps"], "version": _sha256(edited)}
    assert fx.path.read_text(encoding="utf-8") == edited
    assert load_config(fx.path).supervisor.status_every_s == 2.0
    assert fx.client.get("/api/config").json()["last_good"] is True
    rollback = fx.post("/api/config/rollback", {"base": _sha256(edited)}).json()
    assert rollback["ok"] is True and rollback["version"] == _sha256(fx.text)
    assert fx.path.read_text(encoding="utf-8") == fx.text
    assert [kind for kind, _ in fx.events if kind.startswith("console_config")] == [
        "console_config_applied", "console_config_rolled_back"]


def test_an_edit_of_a_file_changed_since_it_was_loaded_is_refused(fx: Fixture) -> None:
    """The auditor's lost update: the Config tab loaded the file, the technician edited
    it by hand (the reload watcher put that live), then the tab applied its edit of the
    old text: 200, and the hand edit was gone from disk and from the rooms."""
    loaded = fx.client.get("/api/config").json()
    by_hand = fx.text.replace("volume = 0.5", "volume = 0.2")
    fx.path.write_text(by_hand, encoding="utf-8")  # the technician, in an editor
    stale = fx.text.replace("status_every_s = 1.0", "status_every_s = 2.0")

    check = fx.post("/api/config/check", {"text": stale, "base": loaded["version"]}).json()
    assert check["ok"] is True and check["stale"] is True
    assert check["version"] == _sha256(by_hand)
    assert "-volume = 0.2" in check["diff"]  # what applying it would undo
    answer = fx.post("/api/config/apply", {"text": stale, "base": loaded["version"]})
    assert answer.status_code == 409, answer.text
    assert answer.json()["error"] == (
        f"config file {fx.path}: the file changed since you loaded it; reload to see it "
        f"(expected version {loaded['version'][:12]}, found {_sha256(by_hand)[:12]} on disk)")
    assert fx.path.read_text(encoding="utf-8") == by_hand
    assert not (fx.out / "console" / "last-good.toml").exists()

    # reloaded: the edit is made on the hand-edited text, which it keeps
    reloaded = fx.client.get("/api/config").json()
    assert reloaded["text"] == by_hand
    mine = by_hand.replace("status_every_s = 1.0", "status_every_s = 2.0")
    assert fx.post("/api/config/apply", {"text": mine, "base": reloaded["version"]}).json()["ok"]
    assert fx.path.read_text(encoding="utf-8") == mine
    assert (fx.out / "console" / "last-good.toml").read_text(encoding="utf-8") == by_hand

    # two browsers on the same version: the first applies, the second is refused
    base = fx.version()
    first = mine.replace("status_every_s = 2.0", "status_every_s = 3.0")
    second = mine.replace("status_every_s = 2.0", "status_every_s = 4.0")
    assert fx.post("/api/config/apply", {"text": first, "base": base}).status_code == 200
    assert fx.post("/api/config/apply", {"text": second, "base": base}).status_code == 409
    assert fx.path.read_text(encoding="utf-8") == first

    # rollback takes the base too: a hand edit it would drop is refused, not lost
    fx.path.write_text(first.replace("volume = 0.2", "volume = 0.1"), encoding="utf-8")
    answer = fx.post("/api/config/rollback", {"base": _sha256(first)})
    assert answer.status_code == 409 and "changed since you loaded it" in answer.json()["error"]
    assert "volume = 0.1" in fx.path.read_text(encoding="utf-8")
    assert [kind for kind, _ in fx.events if kind.startswith("console_config")] == [
        "console_config_applied", "console_config_applied"]


def test_apply_and_rollback_need_the_version_they_were_made_from(fx: Fixture) -> None:
    for path, body in (("/api/config/apply", {"text": fx.text}), ("/api/config/rollback", {}),
                       ("/api/config/apply", {"text": fx.text, "base": 7})):
        answer = fx.post(path, body)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"].startswith(
            "base: expected the version GET /api/config gave with the text (the file's sha256), "
            "got ")
    answer = fx.post("/api/config/check", {"text": fx.text, "base": ["x"]})
    assert answer.status_code == 400 and answer.json()["error"].endswith("got ['x']")
    assert fx.path.read_text(encoding="utf-8") == fx.text


def test_a_symlinked_config_is_edited_where_the_link_points(tmp_path: Path) -> None:
    """/etc/art2mus.toml naming a file in a git checkout: an apply replaced the link with
    a regular file, so the managed file never got the edit and the link was gone."""
    fx = Fixture(tmp_path)
    managed = tmp_path / "checkout" / "gallery.toml"
    managed.parent.mkdir()
    fx.path.rename(managed)
    fx.path.symlink_to(managed)
    managed.chmod(0o640)
    edited = fx.text.replace("status_every_s = 1.0", "status_every_s = 2.0")
    answer = fx.post("/api/config/apply", {"text": edited, "base": fx.version()})
    assert answer.status_code == 200, answer.text
    assert fx.path.is_symlink() and fx.path.resolve() == managed.resolve()
    assert managed.read_text(encoding="utf-8") == edited
    assert managed.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in managed.parent.iterdir()) == ["gallery.toml"]  # no temporary
    assert fx.post("/api/config/rollback", {"base": _sha256(edited)}).status_code == 200
    assert fx.path.is_symlink() and managed.read_text(encoding="utf-8") == fx.text

    # the last good copy, when its path is a link, is written where it points as well
    kept = tmp_path / "kept.toml"
    last_good = fx.out / "console" / "last-good.toml"
    kept.write_text(last_good.read_text(encoding="utf-8"), encoding="utf-8")
    last_good.unlink()
    last_good.symlink_to(kept)
    assert fx.post("/api/config/apply", {"text": edited, "base": fx.version()}).status_code == 200
    assert last_good.is_symlink() and kept.read_text(encoding="utf-8") == fx.text


def test_a_read_only_console_refuses_apply_and_rollback(tmp_path: Path) -> None:
    fx = Fixture(tmp_path, console="allow_edit = false")
    assert fx.client.get("/api/config").json()["editable"] is False
    for path, body in (("/api/config/apply", {"text": fx.text}), ("/api/config/rollback", {})):
        answer = fx.post(path, body)
        assert answer.status_code == 403 and "allow_edit" in answer.json()["error"]
    assert fx.post("/api/config/check", {"text": fx.text}).json()["ok"] is True


def test_without_a_source_file_the_config_is_shown_read_only(tmp_path: Path) -> None:
    fx = Fixture(tmp_path, source=False)
    config = fx.client.get("/api/config").json()
    assert config["editable"] is False and config["path"] == str(fx.frozen)
    assert json.loads(config["text"])["installation"]["name"] == "console-test"
    assert fx.post("/api/config/apply", {"text": fx.text}).status_code == 403


def test_bodies_over_the_limit_are_refused(fx: Fixture) -> None:
    text = "#" * (fx.config.console.max_body_bytes + 1)
    answer = fx.post("/api/config/check", {"text": text})
    assert answer.status_code == 413 and "max_body_bytes" in answer.json()["error"]
    plain = fx.client.post("/api/params", content=b"{}", headers={"content-type": "text/plain"})
    assert plain.status_code == 415  # a foreign page's "simple" post cannot reach the API


def test_odd_values_get_a_400_naming_the_field_never_a_500(fx: Fixture) -> None:
    """Found by poking the API as a buggy client: each of these was a 500 with a
    traceback in the log (OverflowError, ValueError, RecursionError, UnicodeEncodeError)."""
    huge = "1" + "0" * 400  # valid JSON, no float holds it
    answer = fx.client.post("/api/rooms/room-1/play", headers={"content-type": "application/json"},
                            content='{"artwork_id": "SF-1", "seconds": ' + huge + "}")
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"].startswith("seconds: expected a number in 0..")
    assert "an integer of 1329 bits" in answer.json()["error"]
    for limit in ("\u00b2", "9" * 5000):  # a superscript two is a digit to str.isdigit
        answer = fx.client.get("/api/events", params={"limit": limit})
        assert answer.status_code == 400 and answer.json()["error"].startswith("limit: ")
    deep = fx.post("/api/config/check", {"text": "a = " + "[" * 5000 + "]" * 5000})
    assert deep.status_code == 200 and deep.json()["errors"] == [
        {"field": "(TOML syntax)",
         "message": f"invalid TOML in {fx.path}: arrays or tables nested too deep"}]
    lone = fx.client.post("/api/config/check", headers={"content-type": "application/json"},
                          content=b'{"text": "\\ud800"}')
    assert lone.status_code == 400, lone.text
    assert lone.json()["error"] == "text: expected text, got a lone surrogate at character 0"


# -- who may connect ----------------------------------------------------------


def test_a_console_beyond_loopback_needs_a_token(tmp_path: Path) -> None:
    raw = {"rooms": [{"id": "r"}], "console": {"listen": "0.0.0.0:8080"}}
    with pytest.raises(ConfigError, match=r"console\.listen.*console\.token"):
        config_from_dict(raw)
    with pytest.raises(ConfigError, match=r"console\.token: expected at least 16"):
        config_from_dict(raw | {"console": {"listen": "0.0.0.0:8080", "token": "short"}})
    config_from_dict(raw | {"console": {"listen": "0.0.0.0:8080", "token": TOKEN}})
    keys = tmp_path / "token"
    keys.write_text(f"\n{TOKEN}\n", encoding="utf-8")
    config = config_from_dict(raw | {"console": {"listen": "0.0.0.0:0",
                                                 "token_file": str(keys)}})
    assert config.console.read_token() == TOKEN
    keys.write_bytes(b"\xef\xbb\xbf" + f"{TOKEN}\r\n".encode())  # saved by Notepad
    assert config.console.read_token() == TOKEN  # the mark was part of the token


def test_with_a_token_requests_need_it_or_the_login_cookie(tmp_path: Path) -> None:
    fx = Fixture(tmp_path, console=f'token = "{TOKEN}"')
    fx.console.state.tick()
    assert fx.client.get("/api/state").status_code == 401
    assert fx.client.get("/", follow_redirects=False).headers["location"] == "/login"
    assert fx.client.get("/static/console.js").status_code == 200
    bearer = {"authorization": f"Bearer {TOKEN}"}
    assert fx.client.get("/api/state", headers=bearer).status_code == 200
    assert fx.client.get("/api/state", headers={"authorization": "Bearer wrong"})\
        .status_code == 401
    assert 'data-testid="login-token"' in fx.client.get("/login").text
    wrong = fx.client.post("/login", data={"token": "wrong"})
    assert wrong.status_code == 401 and "Wrong token" in wrong.text
    right = fx.client.post("/login", data={"token": TOKEN}, follow_redirects=False)
    assert right.status_code == 303
    cookie = right.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    assert TOKEN not in cookie
    assert fx.client.get("/api/state").status_code == 200  # the client keeps the cookie
    assert fx.client.get("/").status_code == 200


def test_guessing_the_token_is_slowed_down(tmp_path: Path) -> None:
    """An attacker on the LAN: after MAX_FAILURES wrong tokens (form or header) in a
    minute the address waits (429, Retry-After), even with the right token."""
    from installation.console.auth import MAX_FAILURES, LoginThrottle

    fx = Fixture(tmp_path, console=f'token = "{TOKEN}"')
    for k in range(MAX_FAILURES):
        guess = (fx.client.post("/login", data={"token": f"guess-{k}"}) if k % 2 else
                 fx.client.get("/api/state", headers={"authorization": f"Bearer guess-{k}"}))
        assert guess.status_code == 401
    for answer in (fx.client.post("/login", data={"token": TOKEN}),
                   fx.client.get("/api/state", headers={"authorization": f"Bearer {TOKEN}"})):
        assert answer.status_code == 429 and int(answer.headers["retry-after"]) >= 1
    # No token at all is not a guess: it is only told to log in.
    assert fx.client.get("/api/state").status_code in (401, 429)
    now = [0.0]
    throttle = LoginThrottle(max_failures=2, window_s=60.0, clock=lambda: now[0])
    throttle.failed("a")
    throttle.failed("a")
    assert throttle.wait_s("a") == 60.0 and throttle.wait_s("b") == 0.0
    now[0] = 60.0
    assert throttle.wait_s("a") == 0.0


def test_a_loopback_console_refuses_foreign_hosts_and_origins(fx: Fixture) -> None:
    assert fx.client.get("/api/state", headers={"host": "evil.example"}).status_code == 403
    answer = fx.post("/api/params", {"room": "*", "name": "intensity", "value": 1},
                     headers={"origin": "http://evil.example"})
    assert answer.status_code == 403 and fx.hub.snapshot() == {}
    assert fx.post("/api/params", {"room": "*", "name": "intensity", "value": 1},
                   headers={"origin": BASE}).status_code == 200


def test_no_path_leaves_the_static_folder_or_the_catalogue(fx: Fixture) -> None:
    for path in ("/static/../app.py", "/static/..%2Fapp.py", "/static/%2E%2E/app.py",
                 "/static/__init__.py", "/api/catalogue/room-1/..%2F..%2Fetc%2Fpasswd/thumb.jpg",
                 "/api/catalogue/room-1/%2E%2E/thumb.jpg",
                 "/api/catalogue/room-1/..%2F..%2Fetc%2Fpasswd/preview.wav"):
        answer = fx.client.get(path)
        assert answer.status_code == 404, path
        assert b"import" not in answer.content and b"root:" not in answer.content
    answer = fx.client.post("/api/catalogue/room-1/..%2F..%2Fetc%2Fpasswd/preview",
                            json={})
    assert answer.status_code == 404
    assert not (fx.out / "console" / "previews").exists()


# -- the catalogue ------------------------------------------------------------


def test_the_catalogue_lists_works_with_thumbnails(fx: Fixture) -> None:
    works = fx.client.get("/api/catalogue?room=room-1").json()
    assert works["room"] == "room-1"
    assert [(w["id"], w["title"], w["artist"], w["year"]) for w in works["works"]] == [
        ("harbour", "", "", None), ("SF-1", "Sunflowers", "Vincent van Gogh", 1888)]
    thumb = fx.client.get(works["works"][1]["thumb"])
    assert thumb.headers["content-type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(thumb.content, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape[:2] == (160, 120)  # 400x300: 160 on its long side
    answer = fx.client.get("/api/catalogue?room=room-2")
    assert answer.status_code == 404 and "room room-2 has no catalogue" in answer.json()["error"]


def test_a_preview_is_rendered_once_in_a_subprocess_and_served(fx: Fixture) -> None:
    url = "/api/catalogue/room-1/SF-1/preview"
    assert fx.client.get(url + ".wav").status_code == 404
    first = fx.post(url, {}).json()
    assert first["state"] in ("rendering", "ready")
    assert first["url"] == url + ".wav"
    deadline = time.monotonic() + 150.0  # a guard against a hang, not a timing assertion
    answer = first
    while answer["state"] == "rendering" and time.monotonic() < deadline:
        time.sleep(0.2)
        answer = fx.post(url, {}).json()
    assert answer["state"] == "ready", answer
    wav = fx.client.get(url + ".wav")
    assert wav.status_code == 200 and wav.content[:4] in (b"RIFF", b"RF64")
    (cached,) = (fx.out / "console" / "previews" / "room-1").glob("SF-1-*.wav")
    assert fx.post(url, {}).json()["state"] == "ready"  # cached: not rendered again
    assert cached.stat().st_size == len(wav.content)


def test_a_cached_preview_is_served_only_for_the_same_image_and_art2mus_version(
        fx: Fixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A work's reference image replaced under the same id is another painting: the old
    painting's music is not served as its preview (the request renders anew); the same
    image is served from the cache; another art2mus version (an upgraded composer, a
    previews folder copied from another install) is not trusted either."""
    from installation.console import previews

    url = "/api/catalogue/room-1/SF-1/preview.wav"
    shelves = fx.console.shelves
    cached = shelves.preview_path("room-1", "SF-1")
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(b"RIFF the sunflowers' music")
    assert fx.client.get(url).content == b"RIFF the sunflowers' music"  # the same image
    assert shelves.preview_path("room-1", "SF-1") == cached

    with monkeypatch.context() as patch:  # an upgraded art2mus composes otherwise
        patch.setattr(previews, "art2mus_version", lambda: "99.0.0")
        assert shelves.preview_path("room-1", "SF-1") != cached
        assert fx.client.get(url).status_code == 404
    assert fx.client.get(url).status_code == 200

    # the technician replaces the work's photo by another painting's (same id, same name)
    image = fx.out.parent / "catalogue" / "sunflowers.png"
    shutil.copy2(image, fx.out.parent / "sunflowers-backup.png")
    before = image.stat()
    other = (np.random.default_rng(11).random((400, 300, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(image), other)
    os.utime(image, ns=(before.st_atime_ns, before.st_mtime_ns + 2_000_000_000))
    replaced = shelves.preview_path("room-1", "SF-1")
    assert replaced != cached and cached.is_file()
    answer = fx.client.get(url)
    assert answer.status_code == 404 and "missing" in answer.json()["error"]
    assert shelves.preview("room-1", "SF-1", start=False).state == "missing"
    # ...and the original put back as it was (a backup's copy): its music, from the cache
    shutil.copy2(fx.out.parent / "sunflowers-backup.png", image)
    assert shelves.preview_path("room-1", "SF-1") == cached
    assert fx.client.get(url).content == b"RIFF the sunflowers' music"


def test_a_render_keeps_only_the_newest_previews_of_its_work(tmp_path: Path) -> None:
    # Every edited image, engine setting or upgrade made a preview under a new name, and
    # none was ever removed: a room left for months kept them all (3.8 MB each).
    from installation.console.previews import PREVIEWS_KEPT_PER_WORK, prune_previews

    def preview(name: str, age_s: int) -> Path:
        path = tmp_path / name
        path.write_bytes(b"RIFF")
        os.utime(path, (1_000_000 - age_s, 1_000_000 - age_s))
        return path

    old = [preview(f"SF-1-{i:016x}.wav", age_s=10 * (i + 1)) for i in range(5)]
    newest = preview(f"SF-1-{99:016x}.wav", age_s=10_000)  # just rendered, whatever its time
    others = [preview(f"SF-1-b-{1:016x}.wav", 5000), preview(f"SF-10-{1:016x}.wav", 5000),
              preview(f"SF-1-{2:016x}.part.wav", 5000)]
    removed = prune_previews(newest, PREVIEWS_KEPT_PER_WORK)
    assert sorted(removed) == sorted(old[PREVIEWS_KEPT_PER_WORK - 1:])
    assert newest.is_file() and all(p.is_file() for p in old[:PREVIEWS_KEPT_PER_WORK - 1])
    assert all(p.is_file() for p in others)  # another work's, or a render in progress


# -- a real server ------------------------------------------------------------


def test_the_event_stream_sends_states_and_new_events(tmp_path: Path) -> None:
    fx = Fixture(tmp_path, catalogue=False)
    logged: list[tuple[str, dict[str, Any]]] = []
    server = ConsoleServer.start(fx.config, hub=fx.hub, rows=lambda: fx.rows,
                                 log_event=lambda kind, **f: logged.append((kind, f)),
                                 source_path=fx.path, output_dir=fx.out)
    try:
        assert server.url.startswith("http://127.0.0.1:") and not server.url.endswith(":0")
        events = fx.out / "events" / "capture-room-1.jsonl"
        events.parent.mkdir(parents=True, exist_ok=True)
        kinds: list[str] = []
        with httpx.Client(base_url=server.url, timeout=30.0) as client, \
                client.stream("GET", "/api/stream") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    kinds.append(line[len("event: "):])
                elif line.startswith("data: ") and kinds[-1] == "state":
                    assert json.loads(line[6:])["installation"] == "console-test"
                    if not events.exists():  # a role logs something while we listen
                        events.write_text(json.dumps({
                            "time": time.time() - 10, "kind": "artwork_changed",
                            "role": "capture", "room": "room-1"}) + "\n")
                if (kinds.count("state") >= 2 and "log" in kinds) or len(kinds) > 60:
                    break
        assert kinds.count("state") >= 2 and "log" in kinds
        with httpx.Client(base_url=server.url) as client:
            got = client.get("/api/events", params={"room": "room-1", "role": "capture"})
            assert [e["kind"] for e in got.json()["events"]] == ["artwork_changed"]
            assert client.get("/api/events", params={"role": "engine"}).json() == {"events": []}
    finally:
        server.close()


def test_a_port_in_use_is_reported_and_the_installation_goes_on(tmp_path: Path) -> None:
    fx = Fixture(tmp_path, catalogue=False)
    server = ConsoleServer.start(fx.config, hub=fx.hub, rows=lambda: fx.rows,
                                 output_dir=fx.out)
    try:
        port = int(server.url.rsplit(":", 1)[1])
        taken = fx.config.model_copy(update={"console": fx.config.console.model_copy(
            update={"listen": f"127.0.0.1:{port}"})})
        second = start_console(taken, hub=fx.hub, log_event=fx.log_event, rows=lambda: [],
                               source_path=None, output_dir=fx.out, running=lambda: taken,
                               frozen_path=None)
        assert second is None
        kind, fields = fx.events[-1]
        assert kind == "surface_unavailable" and fields["surface"] == "console"
        assert f"127.0.0.1:{port}" in fields["error"]
    finally:
        server.close()
    off: InstallationConfig = fx.config.model_copy(update={
        "console": fx.config.console.model_copy(update={"listen": ""})})
    assert start_console(off, hub=fx.hub, log_event=fx.log_event, rows=lambda: [],
                         source_path=None, output_dir=fx.out, running=lambda: off,
                         frozen_path=None) is None


def test_what_needs_a_restart_is_judged_against_the_config_the_roles_started_with(
        tmp_path: Path) -> None:
    # The watcher applied seed = 7 (a restart-only field) from a hand edit; a check that
    # puts seed = 5 back needs no restart, and one that keeps 7 still does.
    from installation.console.editor import ConfigEditor

    fx = Fixture(tmp_path)
    seven = load_config_text(fx.text.replace("seed = 5", "seed = 7"), tmp_path / "seven.toml")
    editor = ConfigEditor(fx.path, fx.out, running=lambda: seven, allow_edit=True,
                          started=lambda: fx.config)
    assert editor.check(fx.text).restart == []
    assert editor.check(fx.text.replace("volume = 0.5", "volume = 0.4").replace(
        "seed = 5", "seed = 7")).restart == ["rooms[0].seed"]


def load_config_text(text: str, path: Path) -> Any:
    """The config ``text`` holds, through the file reader a user's config goes through."""
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def test_an_event_log_that_is_no_file_is_a_problem_on_the_page(fx: Fixture) -> None:
    # the console's follower skipped a log linked to /dev/zero (it would read for ever) but
    # said nothing: the technician saw a page without that role's events and no reason
    events = fx.out / "events"
    events.mkdir(parents=True, exist_ok=True)
    (events / "engine.jsonl").symlink_to("/dev/zero")
    fx.console.state.tick()  # the events are read after the state is built: said next tick
    fx.console.state.tick()
    assert fx.client.get("/api/state").json()["problems"][-1] == (
        f"event log {events / 'engine.jsonl'} is a device (a link to /dev/zero), not a file: "
        f"not followed (this page misses its events); remove it")
