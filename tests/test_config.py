"""Config loading: shipped configs validate, errors name file, field and expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from ground.errors import ConfigError
from installation.config import config_from_dict, freeze_config, load_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_configs_validate_and_round_trip(path: Path, tmp_path: Path) -> None:
    config = load_config(path)
    assert load_config(freeze_config(config, tmp_path / "frozen.json")) == config


def test_room_sections_override_the_defaults_key_by_key() -> None:
    config = config_from_dict({
        "capture": {"fps": 10, "stability": {"hold_frames": 5}},
        "rooms": [{"id": "a", "capture": {"stability": {"window_frames": 9}}}, {"id": "b",
                   "capture": {"fps": 20}}],
    })
    a, b = config.rooms
    assert (a.capture.fps, a.capture.stability.hold_frames, a.capture.stability.window_frames) \
        == (10, 5, 9)
    assert (b.capture.fps, b.capture.stability.hold_frames) == (20, 5)


def _error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return str(info.value)


def test_a_wrong_type_names_file_field_and_value(tmp_path: Path) -> None:
    message = _error(tmp_path, '[engine]\nlead_s = "soon"\n[[rooms]]\nid = "a"\n')
    assert "bad.toml" in message and "`engine.lead_s`" in message and "'soon'" in message
    assert "valid number" in message


def test_an_out_of_range_value_in_a_room_names_the_room_index(tmp_path: Path) -> None:
    message = _error(tmp_path, '[[rooms]]\nid = "a"\n[rooms.capture]\nfps = -2\n')
    assert "`rooms[0].capture.fps`" in message and "greater than 0" in message
    assert "(got -2)" in message


def test_a_misspelt_field_is_refused(tmp_path: Path) -> None:
    message = _error(tmp_path, '[engine]\nleadd_s = 1\n[[rooms]]\nid = "a"\n')
    assert "`engine.leadd_s`" in message and "unknown field" in message


def test_a_bad_source_and_duplicate_rooms_are_refused(tmp_path: Path) -> None:
    assert "`rooms[0].capture.source`" in _error(
        tmp_path, '[[rooms]]\nid = "a"\n[rooms.capture]\nsource = "webcam"\n')
    duplicate = '[[rooms]]\nid = "a"\n[[rooms]]\nid = "a"\n'
    assert "room ids must be unique" in _error(tmp_path, duplicate)


def test_no_rooms_missing_file_and_bad_toml(tmp_path: Path) -> None:
    assert "`rooms`" in _error(tmp_path, "[engine]\n")
    assert "invalid TOML in" in _error(tmp_path, "[engine\n")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


def test_derived_sizes_follow_the_config() -> None:
    engine = config_from_dict({"engine": {"chunk_s": 0.25, "lead_s": 1.0},
                               "rooms": [{"id": "a"}]}).engine
    assert (engine.chunk_samples, engine.lead_samples) == (12000, 48000)


def test_an_unknown_compile_mode_is_refused_naming_the_field(tmp_path: Path) -> None:
    message = _error(tmp_path, '[engine]\ngenerator = "diffusion"\n[engine.diffusion]\n'
                               'model = "m"\ncompile = "fast"\n[[rooms]]\nid = "a"\n')
    assert "`engine.diffusion.compile`" in message and "'fast'" in message
