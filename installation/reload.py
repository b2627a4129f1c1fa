"""Config hot reload: watch the TOML file, validate an edit, apply what can change live.

The supervisor's :class:`ConfigWatcher` polls the file's content (every
``control.reload_poll_s``; polling needs no inotify and works on network
shares). A change is taken once it has held for a whole poll (an editor
saving in two writes, or a copy over the network, is never applied half
way). Then:

1. the new file is validated exactly as ``art2mus check-config`` does; an
   invalid one is **refused** with the validator's message (file, field,
   expected, got) and the running config stays;
2. :func:`plan_reload` compares it field by field with the running one;
3. live fields are applied: parameters go to the roles as Control ``set``
   (through the hub, so restarted roles get them too), supervisor and
   control settings are taken by the supervisor;
4. every other changed field is **reported** as needing a restart (by its
   path, e.g. ``rooms[0].capture.fps``); nothing is restarted behind the
   technician's back.

=====================================  ===================================
field                                  applied live as
=====================================  ===================================
engine.transition_crossfade_s          ``transition_s`` to the engine
engine.lead_s, transition_margin_s,    the same name to the engine
view_timeout_s
rooms[i].audio_out.volume              ``volume`` to that room's audio_out
supervisor.* (not roles, rooms,        taken by the supervisor
heartbeat_s)
control.osc.*, control.midi.*          surfaces restarted with the new
                                       settings
control.resend_every_s,                taken by the supervisor
control.reload_poll_s
=====================================  ===================================
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ground.errors import ConfigError
from ground.events import EventSink
from installation.config import InstallationConfig, load_config
from installation.control import ControlHub

log = logging.getLogger(__name__)

_ENGINE_LIVE = {
    "engine.transition_crossfade_s": "transition_s",
    "engine.lead_s": "lead_s",
    "engine.transition_margin_s": "transition_margin_s",
    "engine.view_timeout_s": "view_timeout_s",
}
# (the event log's rotation is each role's own, set when it starts)
_SUPERVISOR_RESTART = ("supervisor.roles", "supervisor.rooms", "supervisor.heartbeat_s",
                       "supervisor.events_max_bytes", "supervisor.events_backups")
_SUPERVISOR_LIVE = ("supervisor.", "control.resend_every_s", "control.reload_poll_s")
_SURFACES = ("control.osc.", "control.midi.", "control.scenes")


@dataclass
class ReloadPlan:
    """What a new config changes: live sets, supervisor-side changes, fields needing a restart."""

    sets: list[tuple[str, float, str]] = field(default_factory=list)  # (param, value, room)
    supervisor: list[str] = field(default_factory=list)
    surfaces: list[str] = field(default_factory=list)
    restart_needed: list[str] = field(default_factory=list)

    @property
    def applied(self) -> list[str]:
        """Human-readable list of what is applied live."""
        return ([f"{name}={value}" + ("" if room == "*" else f"@{room}")
                 for name, value, room in self.sets] + self.supervisor + self.surfaces)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out |= _flatten(inner, f"{prefix}.{key}" if prefix else str(key))
        return out
    if isinstance(value, list) and prefix == "rooms":
        out = {}
        for index, inner in enumerate(value):
            out |= _flatten(inner, f"rooms[{index}]")
        return out
    return {prefix: value}


def plan_reload(old: InstallationConfig, new: InstallationConfig,
                started: InstallationConfig | None = None) -> ReloadPlan:
    """Sort every field that differs between ``old`` and ``new`` (see the module table).

    ``started``: the config the roles were started with (default ``old``). What
    needs a restart is what differs from it, not from the last file applied: an
    edit of ``chunk_s`` undone in the file needs no restart any more, and one
    made, then followed by a volume edit, still does.
    """
    plan = _sorted_fields(old, new)
    if started is not None and started is not old:
        plan.restart_needed = _sorted_fields(started, new).restart_needed
    return plan


def _sorted_fields(old: InstallationConfig, new: InstallationConfig) -> ReloadPlan:
    plan = ReloadPlan()
    if [r.id for r in old.rooms] != [r.id for r in new.rooms]:
        plan.restart_needed.append("rooms (ids or order)")
        old_flat = {k: v for k, v in _flatten(old.to_toml_dict()).items()
                    if not k.startswith("rooms")}
        new_flat = {k: v for k, v in _flatten(new.to_toml_dict()).items()
                    if not k.startswith("rooms")}
    else:
        old_flat, new_flat = _flatten(old.to_toml_dict()), _flatten(new.to_toml_dict())
    for path in sorted(set(old_flat) | set(new_flat)):
        if old_flat.get(path) == new_flat.get(path):
            continue
        value = new_flat.get(path)
        if path in _ENGINE_LIVE and isinstance(value, int | float):
            plan.sets.append((_ENGINE_LIVE[path], float(value), "*"))
        elif path.startswith("rooms[") and path.endswith("].audio_out.volume"):
            index = int(path[len("rooms["):path.index("]")])
            plan.sets.append(("volume", float(value), new.rooms[index].id))  # type: ignore[arg-type]
        elif path.startswith(_SUPERVISOR_RESTART):
            plan.restart_needed.append(path)
        elif path.startswith(_SUPERVISOR_LIVE):
            plan.supervisor.append(path)
        elif path.startswith(_SURFACES):
            plan.surfaces.append(path)
        else:
            plan.restart_needed.append(path)
    return plan


class ConfigWatcher:
    """Polls one config file and applies valid edits through the callables it was given.

    It knows nothing of the supervisor: live parameters go to ``hub``, the
    supervisor and control settings to ``apply``, a surface change to
    ``restart_surfaces`` (after ``apply``, so the surfaces reopen with the new
    settings), and what happened to ``log_event``.
    """

    def __init__(self, path: Path, current: InstallationConfig, *, hub: ControlHub,
                 apply: Callable[[InstallationConfig], None],
                 restart_surfaces: Callable[[], None], log_event: EventSink) -> None:
        self.path = Path(path)
        self.current = current
        #: The config the roles were started with: what a restart-only field runs with.
        self.started = current
        self.hub = hub
        self.apply = apply
        self.restart_surfaces = restart_surfaces
        self.log_event = log_event
        self._applied = self._stamp()  # the file as last applied (or as started)
        self._pending: bytes | None = None  # a new content seen once: applied when it holds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refused = 0
        self.reloads = 0

    @classmethod
    def start(cls, path: Path, current: InstallationConfig, *, hub: ControlHub,
              apply: Callable[[InstallationConfig], None],
              restart_surfaces: Callable[[], None], log_event: EventSink) -> ConfigWatcher:
        """Watch ``path`` from a thread of its own."""
        watcher = cls(path, current, hub=hub, apply=apply, restart_surfaces=restart_surfaces,
                      log_event=log_event)
        watcher._thread = threading.Thread(target=watcher._run, name="config-watch", daemon=True)
        watcher._thread.start()
        return watcher

    def _stamp(self) -> bytes | None:
        """The file's content digest (None: no file). The content, not the modification
        time: a network share's whole-second mtimes hid a same-size edit made within the
        second of the one before, for good."""
        try:
            return hashlib.sha256(self.path.read_bytes()).digest()
        except OSError:
            return None

    def _run(self) -> None:
        while not self._stop.wait(self.current.control.reload_poll_s):
            try:
                self.check()
            except Exception as exc:  # noqa: BLE001 - the watcher must outlive a bad edit
                self.log_event("config_reload_failed", error=repr(exc))

    def check(self) -> ReloadPlan | None:
        """One poll: None when the file did not change, changed since the last poll (it is
        applied once it holds for a whole poll: an editor saving in two writes had its
        first half applied live) or was refused; else what was done."""
        stamp = self._stamp()
        if stamp is None or stamp == self._applied:
            self._pending = None
            return None
        if stamp != self._pending:
            self._pending = stamp
            return None
        self._pending = None
        self._applied = stamp
        log_event = self.log_event
        try:
            new = load_config(self.path)
        except ConfigError as error:
            self.refused += 1
            log_event("config_refused", path=str(self.path), error=str(error))
            log.error("config %s refused, the running config stays: %s", self.path, error)
            return None
        plan = plan_reload(self.current, new, started=self.started)
        for name, value, room in plan.sets:
            try:
                self.hub.set(name, value, room, source="reload")
            except ValueError as error:  # validation refuses NaN/inf first; never half-apply
                log_event("config_value_refused", name=name, room=room, error=str(error))
        if plan.supervisor or plan.surfaces:
            self.apply(new)
        if plan.surfaces:
            self.restart_surfaces()
        self.current = new
        self.reloads += 1
        log_event("config_reloaded", path=str(self.path), applied=plan.applied,
                  restart_needed=plan.restart_needed)
        if plan.restart_needed:
            log.warning("config %s: applied live: %s; needs a restart to take effect: %s",
                        self.path, ", ".join(plan.applied) or "nothing",
                        ", ".join(plan.restart_needed))
        else:
            log.warning("config %s: applied live: %s", self.path,
                        ", ".join(plan.applied) or "nothing")
        return plan

    def close(self) -> None:
        """Stop watching."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
