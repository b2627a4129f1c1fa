"""Take retention: only the rooms' own takes go, oldest first, never one being recorded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from installation.config import config_from_dict
from installation.takes import EVERY_S, QUIET_S, TakeKeeper, find_takes

DAY = 86400.0
NOW = 1_800_000_000.0


def _templates(output: Path, rooms: dict[str, dict[str, str]]) -> list[str]:
    config = config_from_dict({"installation": {"output_dir": str(output)},
                               "rooms": [{"id": room, "audio_out": audio_out}
                                         for room, audio_out in rooms.items()]})
    return [template for _, template in config.recording_templates()]


def _file(path: Path, size: int, age_s: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    os.utime(path, (NOW - age_s, NOW - age_s))
    return path


class _Disk:
    """A disk whose free space grows by what is removed from it."""

    def __init__(self, root: Path, free: int) -> None:
        self.root, self.base = root, free
        self.start = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())

    def __call__(self, path: Path) -> int:
        now = sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
        return self.base + self.start - now


def _keeper(templates: list[str], output: Path, events: list[tuple[str, dict[str, Any]]],
            said: list[str], keep_days: float = 0.0, keep_free_gb: float = 0.0,
            free: Any = None, clock: list[float] | None = None) -> TakeKeeper:
    clock = clock if clock is not None else [NOW]
    return TakeKeeper(templates, output, keep_days, keep_free_gb,
                      lambda name, **fields: events.append((name, fields)), said.append,
                      clock=lambda: clock[0], free=free or (lambda path: 10**15))


def test_only_files_a_rooms_template_makes_are_takes(tmp_path: Path) -> None:
    templates = _templates(tmp_path, {"hall": {"record": "take.wav", "midi_file": "take.mid"},
                                      "room.2": {"record": "takes [old]/{room}/{start}.flac"}})
    takes = [
        _file(tmp_path / "take-hall-20261201-101010.wav", 10, 5 * DAY),
        _file(tmp_path / "take-hall-20261201-101010-2.wav", 10, 4 * DAY),  # a second start
        _file(tmp_path / "take-hall-20261201-101010.mid", 10, 3 * DAY),
        _file(tmp_path / "takes [old]/room.2/20261202-090000.flac", 10, 2 * DAY),
    ]
    for other in ["take-hall-notes.wav", "take-hall-20261201-101010.wav.bak", "demo.wav",
                  "take-hall-2026-12-01.wav", "takes [old]/room.2/mix.flac", "status.json",
                  "takes [old]/roomx2/20261202-090000.flac",
                  "take-other-20261201-101010.wav", "logs/take-hall-20261201-101010.wav"]:
        _file(tmp_path / other, 10, 9 * DAY)
    (tmp_path / "take-hall-20261203-000000.wav").symlink_to(takes[0])
    assert [take.path for take in find_takes(templates)] == takes


def test_takes_older_than_keep_days_go_and_nothing_else(tmp_path: Path) -> None:
    templates = _templates(tmp_path, {"hall": {"record": "take.wav"}})
    old = _file(tmp_path / "take-hall-20261101-101010.wav", 100, 31 * DAY)
    kept = _file(tmp_path / "take-hall-20261120-101010.wav", 100, 29 * DAY)
    other = _file(tmp_path / "interview.wav", 100, 90 * DAY)
    events: list[tuple[str, dict[str, Any]]] = []
    said: list[str] = []
    keeper = _keeper(templates, tmp_path, events, said, keep_days=30)
    assert [take.path for take in keeper.look()] == [old]
    assert not old.exists() and kept.exists() and other.exists()
    assert events == [("take_removed", {"file": str(old), "bytes": 100,
                                        "why": "older than keep_days = 30"})]
    assert said == ["takes: removed the 1 oldest (0.00 GB), by [installation.takes]"]
    assert keeper.snapshot()["removed"] == 1 and keeper.snapshot()["removed_bytes"] == 100


def test_the_oldest_takes_go_until_the_disk_has_keep_free_gb(tmp_path: Path) -> None:
    templates = _templates(tmp_path, {"a": {"record": "take.wav"}, "b": {"record": "take.wav"}})
    ages = {"take-a-20261201-000000.wav": 4 * DAY, "take-b-20261202-000000.wav": 3 * DAY,
            "take-a-20261203-000000.wav": 2 * DAY, "take-b-20261204-000000.wav": DAY}
    files = {name: _file(tmp_path / name, 1000, age) for name, age in ages.items()}
    # 2,500 bytes short of the 5,000 asked for: the three oldest of 1,000 bytes go
    disk = _Disk(tmp_path, 2500)
    events: list[tuple[str, dict[str, Any]]] = []
    keeper = _keeper(templates, tmp_path, events, [], keep_free_gb=5000 / 1e9, free=disk)
    keeper.look()
    assert [name for name, path in files.items() if path.exists()] == \
        ["take-b-20261204-000000.wav"]
    assert [fields["why"] for _, fields in events] == [
        "the disk had 0.00 GB free, keep_free_gb = 5e-06"] * 3
    assert disk(tmp_path) == 5500


def test_a_take_being_recorded_is_never_removed_however_full_the_disk(tmp_path: Path) -> None:
    templates = _templates(tmp_path, {"hall": {"record": "take.wav"}})
    live = _file(tmp_path / "take-hall-20261207-101010.wav", 1000, QUIET_S - EVERY_S - 5)
    said: list[str] = []
    clock = [NOW]
    keeper = _keeper(templates, tmp_path, [], said, keep_days=1e-9, keep_free_gb=1.0,
                     free=lambda path: 0, clock=clock)
    assert keeper.look() == [] and live.exists()
    assert said == ["takes: the disk has 0.00 GB free, under keep_free_gb = 1, and no "
                    "finished take is left to remove: other files fill it"]
    clock[0] += EVERY_S
    keeper.look()
    assert len(said) == 1  # said once while it lasts


def test_with_no_rule_set_nothing_is_looked_at(tmp_path: Path) -> None:
    templates = _templates(tmp_path, {"hall": {"record": "take.wav"}})
    take = _file(tmp_path / "take-hall-20201207-101010.wav", 1000, 3000 * DAY)
    keeper = _keeper(templates, tmp_path, [], [], free=lambda path: 0)
    assert not keeper.active and keeper.look() == [] and take.exists()


def test_the_rules_are_applied_once_a_minute_not_every_status_tick(tmp_path: Path) -> None:
    templates = _templates(tmp_path, {"hall": {"record": "take.wav"}})
    clock = [NOW]
    keeper = _keeper(templates, tmp_path, [], [], keep_days=1, clock=clock)
    keeper.look()
    late = _file(tmp_path / "take-hall-20261101-101010.wav", 10, 2 * DAY)
    clock[0] += EVERY_S - 1
    assert keeper.look() == [] and late.exists()
    clock[0] += 1
    assert [take.path for take in keeper.look()] == [late]


@pytest.mark.parametrize(("field", "value"), [("keep_days", -1), ("keep_free_gb", -0.5),
                                              ("keep_days", "30"), ("keep_free_gb", True)])
def test_a_bad_rule_is_refused_naming_it(field: str, value: object) -> None:
    from ground.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"`installation\.takes\.{field}`"):
        config_from_dict({"installation": {"takes": {field: value}}, "rooms": [{"id": "a"}]})


def test_the_disk_filling_is_not_said_while_retention_keeps_half_its_room(
        tmp_path: Path) -> None:
    from installation.status import disk_problem

    filling = {"path": str(tmp_path), "free_bytes": 6 * 10**9,
               "filling_bytes_per_s": 1.4e9 / 3600, "hours_left": 4.3}
    assert disk_problem(filling).startswith(f"the disk of {tmp_path} fills in about 4.3 h")
    # keep_free_gb = 10: the oldest takes go as it fills; 6 GB is over half of it
    assert disk_problem(filling, 10 * 10**9) is None
    # under half: nothing is left that it may remove; said as without it
    assert disk_problem(dict(filling, free_bytes=4 * 10**9), 10 * 10**9).startswith(
        f"the disk of {tmp_path} fills in")
    assert disk_problem(dict(filling, free_bytes=5 * 10**8), 0.8 * 10**9).startswith(
        f"the disk of {tmp_path} has 0.50 GB free")  # under 1 GB: always said
    assert disk_problem(filling, float("nan")) is not None  # a status file from elsewhere


def test_the_supervisor_applies_the_rules_and_status_counts_what_went(tmp_path: Path) -> None:
    import json
    import time

    from installation.supervisor import Supervisor

    out = tmp_path / "out"
    config = config_from_dict({
        "installation": {"output_dir": str(out), "takes": {"keep_days": 7}},
        "network": {name: f"tcp://127.0.0.1:{6391 + offset}" for offset, name in
                    enumerate(["views", "chunks", "clock", "control"])},
        "rooms": [{"id": "hall", "audio_out": {"record": "take.wav"}}]})
    old = _file(out / "take-hall-20261101-101010.wav", 100, 0)
    month_ago = time.time() - 30 * DAY  # the supervisor's keeper reads the wall clock
    os.utime(old, (month_ago, month_ago))
    events: list[tuple[str, dict[str, Any]]] = []
    said: list[str] = []
    supervisor = Supervisor(config, tmp_path / "c.json",
                            lambda name, **fields: events.append((name, fields)), roles=[],
                            status_path=out / "status.json", console=said.append)
    try:
        supervisor.write_status()
    finally:
        supervisor.shutdown()
    assert not old.exists()
    assert [name for name, _ in events if name.startswith("take")] == ["take_removed"]
    record = json.loads((out / "status.json").read_text())
    assert record["takes"] == {"keep_days": 7.0, "keep_free_bytes": 0, "removed": 1,
                               "removed_bytes": 100, "removable_bytes": 0,
                               "recording_bytes": 0}
