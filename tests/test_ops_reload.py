"""Config hot reload: validate first, apply live fields, report the rest, refuse bad files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from installation.config import ControlConfig, InstallationConfig, load_config
from installation.control import ControlHub
from installation.reload import ConfigWatcher, plan_reload
from installation.surfaces import start_watcher

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


class Taker:
    """What the watcher is handed: a hub, a config taker, a surface restarter, a log."""

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

    def watcher(self, path: Path) -> ConfigWatcher:
        """A watcher of ``path`` (not started: the test calls ``check``)."""
        return ConfigWatcher(path, self.config, hub=self.hub, apply=self.apply_config,
                             restart_surfaces=self.restart_surfaces, log_event=self.log_event)


def _write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    stat = path.stat()  # a distinct mtime even within the filesystem's resolution
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10_000_000))


def _settled(watcher: ConfigWatcher) -> Any:
    """Two polls: an edit is taken once it has held for a whole poll."""
    assert watcher.check() is None
    return watcher.check()


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
    taker = Taker(load_config(path))
    watcher = taker.watcher(path)
    assert watcher.check() is None  # unchanged

    _write(path, BASE.replace("volume = 0.8", "volume = 0.5").replace("fps = 10", "fps = 11"))
    plan = _settled(watcher)
    assert plan is not None and plan.restart_needed == ["rooms[0].capture.fps",
                                                        "rooms[1].capture.fps"]
    sent = taker.hub.pending()
    assert [(m.target, m.room, m.params) for m in sent] == [("audio_out", "a", {"volume": 0.5})]
    kind, fields = taker.events[-1]
    assert kind == "config_reloaded" and fields["applied"] == ["volume=0.5@a"]

    _write(path, BASE.replace("volume = 0.8", "volume = 'loud'"))
    assert _settled(watcher) is None
    kind, fields = taker.events[-1]
    assert kind == "config_refused"
    assert "rooms[0].audio_out.volume" in fields["error"] and str(path) in fields["error"]
    assert watcher.current.rooms[0].audio_out.volume == 0.5  # the running config stays
    assert taker.hub.pending() == []

    _write(path, BASE.replace("[[rooms]]\nid = \"b\"\n", "").replace("volume = 0.8",
                                                                    "volume = 0.5"))
    plan = _settled(watcher)
    assert plan is not None and plan.restart_needed[0] == "rooms (ids or order)"


def test_surface_settings_restart_the_surfaces(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    _write(path, BASE)
    taker = Taker(load_config(path))
    watcher = taker.watcher(path)
    _write(path, BASE + "\n[control.midi]\nsoft_takeover = false\n")
    plan = _settled(watcher)
    assert plan is not None and plan.surfaces == ["control.midi.soft_takeover"]
    assert taker.surfaces_restarted == 1
    assert taker.config.control.midi.soft_takeover is False


def test_the_watcher_starts_only_for_a_file_with_reload_on(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    _write(path, BASE)
    taker = Taker(load_config(path))

    def start(path: Path | None, config: InstallationConfig) -> ConfigWatcher | None:
        return start_watcher(path, config, hub=taker.hub, apply=taker.apply_config,
                             restart_surfaces=taker.restart_surfaces, log_event=taker.log_event)

    assert start(None, taker.config) is None  # no file: nothing to watch
    assert start(path, taker.config.model_copy(
        update={"control": ControlConfig(reload=False)})) is None
    watcher = start(path, taker.config)
    assert isinstance(watcher, ConfigWatcher)
    watcher.close()


def test_a_file_saved_in_two_writes_is_applied_whole_once_it_holds(tmp_path: Path) -> None:
    # An editor (or a copy over a share) wrote the file up to volume, paused, then the
    # rest: the first half was applied live (the room's volume back to its default, OSC
    # closed) before the whole file came.
    path = tmp_path / "c.toml"
    whole = (BASE.replace("volume = 0.8", "volume = 0.3")
             + "\n[control.midi]\nsoft_takeover = false\n")
    _write(path, BASE)
    taker = Taker(load_config(path))
    watcher = taker.watcher(path)
    half = whole[:whole.index("volume")]  # a valid file: room a at the default volume
    _write(path, half)
    assert watcher.check() is None  # seen once
    _write(path, whole)  # the rest came before the next poll
    assert watcher.check() is None  # changed again: not yet
    plan = watcher.check()  # held for a poll: applied, whole
    assert plan is not None and plan.applied == ["volume=0.3@a", "control.midi.soft_takeover"]
    assert [m.params for m in taker.hub.pending()] == [{"volume": 0.3}]
    assert taker.surfaces_restarted == 1 and watcher.reloads == 1


def test_an_edit_within_the_same_mtime_tick_is_still_seen(tmp_path: Path) -> None:
    # A share reporting whole seconds: a same-size edit within the second of the one
    # before kept the old stamp and was never applied.
    path = tmp_path / "c.toml"
    path.write_text(BASE)
    taker = Taker(load_config(path))
    watcher = taker.watcher(path)
    stamp = path.stat()
    path.write_text(BASE.replace("volume = 0.8", "volume = 0.2"))  # same size
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    plan = _settled(watcher)
    assert plan is not None and plan.applied == ["volume=0.2@a"]


def test_what_needs_a_restart_is_what_differs_from_what_runs(tmp_path: Path) -> None:
    # chunk_s changed, then changed back in the file: no restart needed any more; changed
    # again, then a volume edit: the restart is still needed (it was no longer said).
    path = tmp_path / "c.toml"
    _write(path, BASE)
    taker = Taker(load_config(path))
    watcher = taker.watcher(path)
    fps = BASE.replace("fps = 10", "fps = 11")
    _write(path, fps)
    assert _settled(watcher).restart_needed == ["rooms[0].capture.fps", "rooms[1].capture.fps"]
    _write(path, BASE)
    assert _settled(watcher).restart_needed == []
    _write(path, fps)
    _settled(watcher)
    _write(path, fps.replace("volume = 0.8", "volume = 0.6"))
    plan = _settled(watcher)
    assert plan.applied == ["volume=0.6@a"]
    assert plan.restart_needed == ["rooms[0].capture.fps", "rooms[1].capture.fps"]
