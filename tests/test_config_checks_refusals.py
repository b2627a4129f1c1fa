"""What `check-config` refuses before a show that would otherwise half work at it.

A scene or a MIDI map naming a room the config does not have, an engine lead
longer than a room's audio_out buffer holds; and the words of two refusals
that said too little (a room id with an accent, a room's field written under
``[audio_out]``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ground.errors import ConfigError
from ground.params import LEAD_HEADROOM_S, SETTINGS, lead_s_limit
from installation.config import config_from_dict, load_config


def _error(raw: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as error:
        config_from_dict(raw, source="show.toml")
    return str(error.value)


def test_a_scene_or_a_midi_map_naming_a_room_not_there_is_refused(tmp_path: Path) -> None:
    # The README's own example passed with no room "stage"; at the show the recall set
    # intensity, then stopped at the bad room: key, mode and tempo never applied.
    path = tmp_path / "show.toml"
    path.write_text('[[control.scenes]]\nname = "storm"\nprogram = 3\n'
                    'params = { intensity = 0.9, "volume@stage" = 1.5 }\nkey = "D"\n'
                    '[control.midi]\nport = "nano"\n'
                    '[control.midi.cc]\n"74" = "intensity@room-9"\n"2:7" = "volume@room-1"\n'
                    '[control.midi.notes]\n"60" = "freeze@room-2"\n'
                    '[[rooms]]\nid = "room-1"\n[[rooms]]\nid = "room-2"\n')
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert ("control.scenes[0].params: 'volume@stage' names room 'stage'; "
            "control.midi.cc.74: 'intensity@room-9' names room 'room-9': expected a room of "
            "this config ['room-1', 'room-2'] (or no @room: every room)") in message
    assert "freeze@room-2" not in message and "volume@room-1" not in message  # rooms there
    path.write_text(path.read_text().replace("@stage", "@room-2").replace("@room-9", ""))
    config = load_config(path)
    assert config.control.scenes[0].params == {"intensity": 0.9, "volume@room-2": 1.5}


def test_a_lead_longer_than_a_rooms_buffer_holds_is_refused_naming_both_fields() -> None:
    # lead_s = 45 on the default 30 s buffer: audio_out dropped 435 of 910 chunks in 100 s
    # as too far ahead, and the room ran dry every ~31 s.
    message = _error({"engine": {"lead_s": 45.0},
                      "rooms": [{"id": "a"}, {"id": "b", "audio_out": {"buffer_s": 60.0}}]})
    assert ("engine.lead_s: expected at most rooms[0].audio_out.buffer_s (30, room 'a') - "
            "engine.chunk_s (0.5) - engine.batch_window_s (0.25) - 1 s of headroom = 28.25, "
            "got 45") in message
    assert "raise audio_out.buffer_s to at least 46.75" in message
    # the room with the small buffer decides; the one with the large buffer is fine
    message = _error({"engine": {"lead_s": 10.0}, "audio_out": {"buffer_s": 60.0},
                      "rooms": [{"id": "a"}, {"id": "b", "audio_out": {"buffer_s": 8.0}}]})
    assert "rooms[1].audio_out.buffer_s (8, room 'b')" in message
    config = config_from_dict({"engine": {"lead_s": 28.25},
                               "rooms": [{"id": "a"}, {"id": "b",
                                                       "audio_out": {"buffer_s": 60.0}}]})
    assert config.lead_s_limit() == config.lead_s_limit("a") == 28.25
    assert config.lead_s_limit("b") == 58.25
    with pytest.raises(ConfigError, match="no room 'c'"):
        config.lead_s_limit("c")


def test_a_live_lead_is_clamped_to_what_the_room_holds() -> None:
    # OSC took up to 60 s whatever the room's buffer: the bound is passed where the room
    # is known, and the value applied (echoed, stored) is the clamped one.
    lead = SETTINGS["lead_s"]
    limit = lead_s_limit(30.0, 0.5, 0.25)
    assert limit == 30.0 - 0.5 - 0.25 - LEAD_HEADROOM_S
    assert lead.clamp(60.0, high=limit) == 28.25
    assert lead.clamp(45.0) == 45.0  # without a bound: the field's range only
    assert lead.clamp(2.0, high=limit) == 2.0
    assert lead.clamp(5.0, high=-3.0) == lead.low  # nothing fits: never below the range


def test_a_room_id_with_an_accent_is_refused_in_words() -> None:
    message = _error({"rooms": [{"id": "sala-è"}]})
    assert ("field `rooms[0].id`: Value error, expected a room id of 1 to 64 ASCII letters "
            "(a-z, A-Z), digits, '_', '.' or '-', starting with a letter or digit (no accents "
            "or spaces: it names files, URLs and OSC addresses) (got 'sala-è')") in message
    assert "String should match pattern" not in message


def test_a_field_written_in_the_wrong_table_says_where_it_belongs() -> None:
    message = _error({"audio_out": {"midi_channel_offset": 1}, "rooms": [{"id": "a"}]})
    assert ("field `audio_out.midi_channel_offset`: unknown field (check its spelling and "
            "section; midi_channel_offset belongs under [[rooms]]) (got 1)") in message
    message = _error({"engine": {"soundfont": "auto"}, "rooms": [{"id": "a"}]})
    assert "soundfont belongs under [engine.procedural]" in message
    # a name no table has: the message as before
    message = _error({"engine": {"leed_s": 2.0}, "rooms": [{"id": "a"}]})
    assert "field `engine.leed_s`: unknown field (check its spelling and section) " \
        "(got 2.0)" in message
