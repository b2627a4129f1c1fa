"""Config hot reload: validate first, apply live fields, report the rest, refuse bad files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from installation.config import InstallationConfig, load_config
from installation.control import ControlHub
from installation.reload import ConfigWatcher, plan_reload

BASE = """
[engine]
generator = "sine"
transition_crossfade_s = 1.0

[capture]
fps = 10

[[rooms]]
id = "a"
[rooms.audio_out]
volume = 0.8

[[rooms]]
id = "b"
"""


class FakeSupervisor:
    """What the watcher needs from a supervisor: a hub, config taking, a log."""

    def __init__(self, config: InstallationConfig) -> None:
        self.config = config
        self.hub = ControlHub(config)
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.surfaces_restarted = 0

    def log_event(self, kind: str, **fields: Any) -> None:
        self.events.append((kind, fields))

    def apply_config(self, config: InstallationConfig) -> None:
        self.config = config

    def restart_surfaces(self) -> None:
        self.surfaces_restarted += 1


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    stat = path.stat()  # a distinct mtime even within the filesystem's resolution
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10_000_000))


def test_the_plan_sorts_live_fields_from_restart_fields(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    _write(path, BASE)
    old = load_config(path)
    _write(path, BASE.replace("transition_crossfade_s = 1.0", "transition_crossfade_s = 2.5\n"
                              "view_timeout_s = 9.0")
           .replace("volume = 0.8", "volume = 0.3").replace("fps = 10", "fps = 12")
           + "\n[supervisor]\nhang_after_s = 4.0\n[control.osc]\nsend = ['127.0.0.1:9001']\n")
    plan = plan_reload(old, load_config(path))
    assert sorted(plan.sets) == [("transition_s", 2.5, "*"), ("view_timeout_s", 9.0, "*"),
                                 ("volume", 0.3, "a")]
    assert plan.supervisor == ["supervisor.hang_after_s"]
    assert plan.surfaces == ["control.osc.send"]
    assert plan.restart_needed == ["rooms[0].capture.fps", "rooms[1].capture.fps"]


def test_the_watcher_applies_a_valid_edit_and_refuses_an_invalid_one(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    _write(path, BASE)
    supervisor = FakeSupervisor(load_config(path))
    watcher = ConfigWatcher(path, supervisor, supervisor.config)  # type: ignore[arg-type]
    assert watcher.check() is None  # unchanged

    _write(path, BASE.replace("volume = 0.8", "volume = 0.5").replace("fps = 10", "fps = 11"))
    plan = watcher.check()
    assert plan is not None and plan.restart_needed == ["rooms[0].capture.fps",
                                                        "rooms[1].capture.fps"]
    sent = supervisor.hub.pending()
    assert [(m.target, m.room, m.params) for m in sent] == [("audio_out", "a", {"volume": 0.5})]
    kind, fields = supervisor.events[-1]
    assert kind == "config_reloaded" and fields["applied"] == ["volume=0.5@a"]

    _write(path, BASE.replace("volume = 0.8", "volume = 'loud'"))
    assert watcher.check() is None
    kind, fields = supervisor.events[-1]
    assert kind == "config_refused"
    assert "rooms[0].audio_out.volume" in fields["error"] and str(path) in fields["error"]
    assert watcher.current.rooms[0].audio_out.volume == 0.5  # the running config stays
    assert supervisor.hub.pending() == []

    _write(path, BASE.replace("[[rooms]]\nid = \"b\"\n", "").replace("volume = 0.8",
                                                                    "volume = 0.5"))
    plan = watcher.check()
    assert plan is not None and plan.restart_needed[0] == "rooms (ids or order)"


def test_surface_settings_restart_the_surfaces(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    _write(path, BASE)
    supervisor = FakeSupervisor(load_config(path))
    watcher = ConfigWatcher(path, supervisor, supervisor.config)  # type: ignore[arg-type]
    _write(path, BASE + "\n[control.midi]\nsoft_takeover = false\n")
    plan = watcher.check()
    assert plan is not None and plan.surfaces == ["control.midi.soft_takeover"]
    assert supervisor.surfaces_restarted == 1
    assert supervisor.config.control.midi.soft_takeover is False
