"""The installation refuses a channel routing its player would refuse, before anything runs.

``audio_out.channels_out`` is checked by audio_out alone for range and
repeats; whether it fits the program is a cross-role question (the engine's
``channels``). A routing the player's :class:`~audio_out.mixer.ChannelMap`
refuses used to pass ``check-config`` (and ``--deep``), then audio_out exited
with code 2 at every start and the room stayed silent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ground.errors import ConfigError
from installation.cli import cli
from installation.config import config_from_dict

EIGHT = [1, 2, 3, 4, 5, 6, 7, 8]


def _config(engine_channels: int, default: list[int] | None = None,
            own: list[int] | None = None) -> Any:
    audio_out = {} if default is None else {"channels_out": default}
    second: dict[str, Any] = {"id": "hall"}
    if own is not None:
        second["audio_out"] = {"channels_out": own}
    return config_from_dict({"engine": {"channels": engine_channels}, "audio_out": audio_out,
                             "rooms": [{"id": "foyer"}, second]})


def test_more_outputs_than_program_channels_are_refused_naming_field_room_and_rule() -> None:
    with pytest.raises(ConfigError) as refused:
        _config(2, default=EIGHT)
    message = str(refused.value)
    assert ("rooms[0].audio_out.channels_out (room 'foyer', engine.channels = 2): expected 2 "
            "channels (one per program channel), 1 (mix to mono) or a mono program, got "
            "[1, 2, 3, 4, 5, 6, 7, 8]") in message


def test_a_rooms_own_routing_is_refused_naming_that_room() -> None:
    with pytest.raises(ConfigError, match=r"rooms\[1\]\.audio_out\.channels_out \(room 'hall', "
                                          r"engine\.channels = 2\): expected 2 channels"):
        _config(2, own=[1, 2, 3])


@pytest.mark.parametrize(("engine_channels", "outputs"), [
    (2, None),       # the default: [1, 2]
    (2, [3, 4]),     # one output per program channel
    (2, [5]),        # mixed to mono
    (1, EIGHT),      # a mono program copied to every output
    (1, None),       # mono on [1, 2]
])
def test_what_the_player_plays_is_accepted(engine_channels: int,
                                           outputs: list[int] | None) -> None:
    config = _config(engine_channels, default=outputs)
    assert config.rooms[0].audio_out.channels_out == tuple(outputs or ())


def test_check_config_exits_2_on_it(tmp_path: Path) -> None:
    path = tmp_path / "ch8.json"
    path.write_text(json.dumps({"audio_out": {"channels_out": EIGHT},
                                "rooms": [{"id": "demo"}]}), encoding="utf-8")
    for args in (["check-config", str(path)], ["check-config", "--deep", str(path)]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, result.output
        assert "rooms[0].audio_out.channels_out (room 'demo'" in result.output
