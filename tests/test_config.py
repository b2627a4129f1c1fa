"""Config loading: shipped configs validate, errors name file, field and expectation."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from ground.errors import ConfigError
from installation.config import InstallationConfig, config_from_dict, freeze_config, load_config

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


def test_an_error_in_a_default_section_names_it_as_the_file_has_it(tmp_path: Path) -> None:
    # [capture] fps = 0 was reported as rooms[0].capture.fps, rooms[1]..., fields the file
    # does not have; a room's own value is named as the room's
    message = _error(tmp_path, '[capture]\nfps = 0\n[capture.stability]\nhold_frames = -1\n'
                               '[[rooms]]\nid = "a"\n[[rooms]]\nid = "b"\n'
                               '[rooms.capture.stability]\nwindow_frames = 6\n'
                               '[[rooms]]\nid = "c"\n[rooms.capture]\nfps = 500\n')
    assert message.splitlines()[1:] == [
        "  field `capture.fps`: Input should be greater than 0 (got 0); the default every "
        "room takes",
        "  field `capture.stability.hold_frames`: Input should be greater than or equal to 1 "
        "(got -1); the default every room takes",
        "  field `rooms[2].capture.fps`: Input should be less than or equal to 120 (got 500)"]


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
    # nested thousands deep, tomllib recursed past Python's limit: a traceback
    assert _error(tmp_path, "a = " + "[" * 5000 + "]" * 5000).endswith(
        ": arrays or tables nested too deep")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")


@pytest.mark.parametrize(("text", "words"), [
    # the console on the views port: the engine's bind failed, restarted for ever
    ('[console]\nlisten = "127.0.0.1:5711"\n[network]\nviews = "tcp://127.0.0.1:5711"\n',
     "console.listen: expected a TCP port no other listener of this installation uses, "
     "got 5711, which network.views listens on"),
    ('[metrics]\nport = 5710\n[network]\nviews = "tcp://127.0.0.1:5711"\n',
     "metrics.port (its range 5710..5713): expected a TCP port no other listener"),
    ('[console]\nlisten = "127.0.0.1:9402"\n[metrics]\nport = 9400\n',
     "console.listen: expected a TCP port no other listener of this installation uses, "
     "got 9402, which metrics.port (its range 9400..9403) listens on"),
    # a role killed for a hang before it could miss three heartbeats: restarted for ever
    ("[supervisor]\nheartbeat_s = 5.0\nhang_after_s = 2.0\n",
     "supervisor.hang_after_s: expected 0 (never) or at least 3 heartbeats (15 s with "
     "heartbeat_s = 5), got 2"),
    ("[supervisor]\nrestart_backoff_s = 20.0\nrestart_backoff_max_s = 10.0\n",
     "supervisor.restart_backoff_s: expected at most restart_backoff_max_s (10), got 20"),
])
def test_settings_that_would_restart_a_role_for_ever_are_refused(tmp_path: Path, text: str,
                                                                 words: str) -> None:
    assert words in _error(tmp_path, text + '[[rooms]]\nid = "a"\n')


def test_two_rooms_drawing_one_overlay_file_are_refused(tmp_path: Path) -> None:
    text = '[capture]\noverlay = "overlay.jpg"\n[[rooms]]\nid = "a"\n[[rooms]]\nid = "b"\n'
    assert ("rooms[1].capture.overlay: expected a file of its own, got the same file as "
            "rooms[0].capture.overlay") in _error(tmp_path, text)
    fine = tmp_path / "fine.toml"
    fine.write_text(text.replace("overlay.jpg", "overlay-{room}.jpg"))
    assert len(load_config(fine).rooms) == 2


@pytest.mark.parametrize("room", [".", "..", "-a", "_"])
def test_a_room_id_must_start_with_a_letter_or_digit(tmp_path: Path, room: str) -> None:
    # "." and ".." became path parts ({room} in file names) and URL segments
    assert "field `rooms[0].id`: Value error, expected a room id of 1 to 64 ASCII letters " \
        "(a-z, A-Z), digits, '_', '.' or '-', starting with a letter or digit" in _error(
            tmp_path, f"[[rooms]]\nid = \"{room}\"\n")


def test_a_config_saved_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    # Windows' Notepad may save UTF-8 with a byte-order mark; TOML's parser took it for a
    # statement ("Invalid statement (at line 1, column 1)"), and the console's editor too.
    from installation.console.editor import validate_text

    text = '[[rooms]]\nid = "lobby"\n'
    path = tmp_path / "notepad.toml"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert [room.id for room in load_config(path).rooms] == ["lobby"]
    config, errors = validate_text("\ufeff" + text, str(path))
    assert errors == [] and config is not None and config.rooms[0].id == "lobby"


def test_derived_sizes_follow_the_config() -> None:
    engine = config_from_dict({"engine": {"chunk_s": 0.25, "lead_s": 1.0},
                               "rooms": [{"id": "a"}]}).engine
    assert (engine.chunk_samples, engine.lead_samples) == (12000, 48000)


def test_an_unknown_compile_mode_is_refused_naming_the_field(tmp_path: Path) -> None:
    message = _error(tmp_path, '[engine]\ngenerator = "diffusion"\n[engine.diffusion]\n'
                               'model = "m"\ncompile = "fast"\n[[rooms]]\nid = "a"\n')
    assert "`engine.diffusion.compile`" in message and "'fast'" in message


# -- the role commands' --room and demo's --seconds, refused before anything starts ------


@pytest.fixture
def nothing_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    """A role or the demo that got past its checks fails the test, before any signal
    handler, log, socket or process."""
    def started(*_: object, **__: object) -> None:
        raise AssertionError("started before the option was checked")

    for name in ("install_stop_handlers", "setup_json_logging", "EventLog"):
        monkeypatch.setattr(f"installation.roles.{name}", started)
    monkeypatch.setattr("engine.server.EngineServer", started)
    monkeypatch.setattr("installation.cli._supervise", started)


def _refused(result: object, code: int, *texts: str) -> None:
    from click.testing import Result

    assert isinstance(result, Result)
    assert result.exit_code == code, result.output + repr(result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert len(result.output.strip().splitlines()) == 1, result.output  # one line
    for text in texts:
        assert text in result.output


@pytest.mark.parametrize("args", [["engine"], ["role", "engine"]], ids=["engine", "role"])
@pytest.mark.parametrize("room", ["nosuchroom", "", "demo"])
def test_the_engine_refuses_a_room_it_would_ignore(args: list[str], room: str,
                                                   nothing_starts: None) -> None:
    """The engine serves every room of its config: --room (even a room of the config)
    means nothing to it, so it is refused, naming the option, before anything starts."""
    from click.testing import CliRunner

    from installation.cli import cli

    result = CliRunner().invoke(cli, [*args, "--config", str(CONFIGS / "demo.toml"),
                                      "--room", room])
    _refused(result, 3, "Error: --room: the engine serves every room",
             f"got --room {room!r}")


@pytest.mark.parametrize("command", ["capture", "play"])
@pytest.mark.parametrize("room", ["nosuchroom", ""])
def test_capture_and_play_refuse_an_unknown_room(command: str, room: str,
                                                 nothing_starts: None) -> None:
    from click.testing import CliRunner

    from installation.cli import cli

    result = CliRunner().invoke(cli, [command, "--config", str(CONFIGS / "demo.toml"),
                                      "--room", room])
    rooms = [r.id for r in load_config(CONFIGS / "demo.toml").rooms]
    _refused(result, ConfigError.exit_code, f"no room {room!r}", f"rooms are {rooms}")


@pytest.mark.parametrize("seconds", ["1e12", str(366 * 86400 + 1), "0", "-1", "nan", "inf"])
def test_demo_refuses_seconds_its_stop_after_s_would_refuse(seconds: str,
                                                            nothing_starts: None) -> None:
    from click.testing import CliRunner

    from installation.cli import cli

    result = CliRunner().invoke(cli, ["demo", "--seconds", seconds])
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--seconds'" in result.output and "stop_after_s" not in \
        result.output


def test_demo_seconds_reach_up_to_what_stop_after_s_accepts(tmp_path: Path) -> None:
    from audio_out.config import AudioOutConfig
    from installation.cli import DEMO_MAX_S, demo
    from installation.demo import prepare_demo_config

    (seconds,) = [p for p in demo.params if p.name == "seconds"]
    assert seconds.type.convert(str(DEMO_MAX_S), seconds, None) == DEMO_MAX_S
    config = prepare_demo_config(load_config(CONFIGS / "demo.toml"), tmp_path, DEMO_MAX_S)
    assert {room.audio_out.stop_after_s for room in config.rooms} == {DEMO_MAX_S}
    with pytest.raises(ValueError, match="stop_after_s"):
        AudioOutConfig(stop_after_s=DEMO_MAX_S * (1 + 1e-9))


def test_demo_out_clears_only_its_own_event_logs_and_refuses_a_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """demo --out deleted the whole events/ folder of wherever it was pointed, a user's
    notes included; and --out naming a file was a FileExistsError traceback."""
    from click.testing import CliRunner

    import installation.cli as cli_module

    out = tmp_path / "precious"
    (out / "events").mkdir(parents=True)
    (out / "events" / "notes.txt").write_text("mine")
    (out / "events" / "engine.jsonl").write_text("{}\n")  # the last run's log
    (out / "events" / "engine.jsonl.1").write_text("{}\n")

    def supervise(*args: object, **kwargs: object) -> None:
        raise SystemExit(0)  # the run itself is not this test's business

    monkeypatch.setattr(cli_module, "_supervise", supervise)
    result = CliRunner().invoke(cli_module.cli, ["demo", "--out", str(out), "--seconds", "1"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "events").iterdir()) == ["notes.txt"]

    monkeypatch.undo()
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    result = CliRunner().invoke(cli_module.cli, ["demo", "--out", str(a_file), "--seconds", "1"])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"Error: installation.output_dir: expected a folder this "
                                    f"user can write, got {a_file} (")


@pytest.mark.parametrize("seed", ["-1", str(2**32), "nan"])
def test_render_refuses_a_seed_out_of_range(seed: str, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from installation.cli import cli

    out = tmp_path / "o.wav"
    result = CliRunner().invoke(cli, ["render", str(CONFIGS / "demo.toml"), "--out", str(out),
                                      "--seed", seed])
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--seed'" in result.output and not out.exists()


def _switches(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every bool field of a config model and of the sections under it, as key paths."""
    found = []
    for name, field in model.model_fields.items():
        kinds = get_args(field.annotation) or (field.annotation,)
        if bool in kinds:
            found.append((*prefix, name))
        for kind in kinds:
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                found += _switches(kind, (*prefix, name))
    return found


SWITCHES = _switches(InstallationConfig)


def test_every_switch_is_found_by_the_walk() -> None:
    assert {("rooms", "capture", "track"), ("rooms", "audio_out", "limiter"),
            ("control", "midi", "clock_in"),
            ("security", "curve"), ("console", "allow_edit")} <= set(SWITCHES)


@pytest.mark.parametrize("path", SWITCHES, ids=".".join)
@pytest.mark.parametrize("value", ["yes", "off", 1, 0.0])
def test_a_switch_takes_true_or_false_only_and_names_the_field(path: tuple[str, ...],
                                                                value: object) -> None:
    # pydantic's lax mode read "yes", "off", 1 and 0.0 as switches: a word or a number under
    # the wrong key was taken silently
    room: dict[str, Any] = {"id": "a"}
    raw: dict[str, Any] = {"rooms": [room]}
    # a room's switch is set in the room (the file's [capture] is each room's default)
    section, keys, name = (room, path[1:], f"rooms[0].{'.'.join(path[1:])}") \
        if path[0] == "rooms" else (raw, path, ".".join(path))
    for key in keys[:-1]:
        section = section.setdefault(key, {})
    section[keys[-1]] = value
    with pytest.raises(ConfigError, match=re.escape(f"`{name}`")):
        config_from_dict(raw)
    section[keys[-1]] = False
    config_from_dict(raw)


@pytest.mark.parametrize(("text", "field", "got"), [
    ('[engine]\nlead_s = "0.5"\n', "engine.lead_s", "'0.5'"),
    ("[capture]\nfps = true\n", "capture.fps", "True"),
    ('[[rooms]]\nid = "b"\n[rooms.audio_out]\nvolume = "2"\n', "rooms[1].audio_out.volume",
     "'2'"),
])
def test_a_number_is_written_as_one(tmp_path: Path, text: str, field: str, got: str) -> None:
    # the lax mode read `fps = true` as 1 frame a second and a quoted number as a number
    message = _error(tmp_path, '[[rooms]]\nid = "a"\n' + text)
    assert f"`{field}`" in message and f"(got {got})" in message, message


def test_a_date_where_no_field_takes_one_is_refused_naming_the_file(tmp_path: Path) -> None:
    message = _error(tmp_path, '[installation]\nname = 2026-12-07\n[[rooms]]\nid = "a"\n')
    assert "bad.toml" in message and "`installation.name`" in message and "date" in message


def test_a_whole_number_is_taken_where_a_decimal_is_asked(tmp_path: Path) -> None:
    path = tmp_path / "ok.toml"
    path.write_text('[engine]\nlead_s = 1\n[[rooms]]\nid = "a"\n')
    assert load_config(path).engine.lead_s == 1.0
