"""MIDI in through a fake port at the rtmidi seam: mappings, soft takeover, learn, errors."""

from __future__ import annotations

from typing import Any

import click
import pytest
from click.testing import CliRunner

from ground.errors import ConfigError, DependencyError
from installation.config import MidiInConfig, config_from_dict
from installation.control import ControlHub
from installation.midi_in import (
    MidiControlInput,
    MidiFeedback,
    learn_mapping,
    mapping_toml,
    new_midi_in,
    open_input_port,
)

CONFIG = config_from_dict({"rooms": [{"id": "a"}, {"id": "b"}]})
CC, NOTE_ON = 0xB0, 0x90


class FakePort:
    """An rtmidi MidiIn look-alike: ports by name, a callback, a message queue."""

    def __init__(self, names: list[str] | None = None,
                 messages: list[list[int]] | None = None) -> None:
        self.names = names or ["Midi Through 14:0", "nanoKONTROL2 20:0"]
        self.opened: int | None = None
        self.callback: Any = None
        self.closed = False
        self.messages = list(messages or [])

    def get_ports(self) -> list[str]:
        return self.names

    def open_port(self, index: int) -> None:
        self.opened = index

    def set_callback(self, callback: Any) -> None:
        self.callback = callback

    def close_port(self) -> None:
        self.closed = True

    def get_message(self) -> tuple[list[int], float] | None:
        return (self.messages.pop(0), 0.0) if self.messages else None


class FakeRtmidi:
    def __init__(self, port: FakePort | None = None, error: Exception | None = None) -> None:
        self.port, self.error = port, error

    def MidiIn(self) -> FakePort:  # noqa: N802 - rtmidi's name
        if self.error is not None:
            raise self.error
        assert self.port is not None
        return self.port

    def MidiOut(self) -> FakeOut:  # noqa: N802 - rtmidi's name
        return FakeOut()


class FakeOut(FakePort):
    """An rtmidi MidiOut look-alike: what was sent, in order."""

    def __init__(self) -> None:
        super().__init__(["Midi Through 14:0", "nanoKONTROL2 20:0"])
        self.sent: list[list[int]] = []

    def send_message(self, message: list[int]) -> None:
        self.sent.append(list(message))


def _input(**config: Any) -> tuple[MidiControlInput, ControlHub, FakePort]:
    hub = ControlHub(CONFIG)
    port = FakePort()
    midi = MidiControlInput(MidiInConfig(**config), hub, ports=[port])
    return midi, hub, port


def test_ports_are_chosen_by_name_substring_and_a_missing_one_lists_the_others() -> None:
    port, name = open_input_port("nanokontrol", FakeRtmidi(FakePort()))
    assert name == "nanoKONTROL2 20:0" and port.opened == 1
    with pytest.raises(ConfigError, match=r"no MIDI input port contains 'APC'; available: "
                                          r"'Midi Through 14:0', 'nanoKONTROL2 20:0'"):
        open_input_port("APC", FakeRtmidi(FakePort()))


def test_no_midi_system_is_one_clear_line() -> None:
    with pytest.raises(DependencyError) as info:
        new_midi_in(FakeRtmidi(error=RuntimeError("MidiInAlsa::initialize: error creating "
                                                  "ALSA sequencer client object.\nmore")))
    assert str(info.value).count("\n") == 0
    assert "no MIDI system on this machine (MidiInAlsa::initialize" in str(info.value)


def test_cc_moves_a_parameter_only_after_soft_takeover() -> None:
    midi, hub, port = _input(cc={"1": "intensity", "2": "tempo_bias@b"})
    # intensity sits at 0.5 (64/127 ~ 0.504); a knob resting at 0 must not jump it
    port.callback(([CC, 1, 0], 0.0))
    port.callback(([CC, 1, 30], 0.0))
    assert hub.current("intensity") == 0.5 and midi.ignored == 2
    port.callback(([CC, 1, 70], 0.0))  # crossed the current value: picked up
    assert hub.current("intensity") == pytest.approx(70 / 127, abs=1e-6)
    port.callback(([CC, 1, 100], 0.0))
    assert hub.current("intensity") == pytest.approx(100 / 127, abs=1e-6)
    hub.set("intensity", 0.2, source="osc")  # someone else moved it: the knob lets go
    port.callback(([CC, 1, 101], 0.0))
    assert hub.current("intensity") == 0.2
    port.callback(([CC, 1, 26], 0.0))  # within 2 steps of 0.2 (25.4/127)
    assert hub.current("intensity") == pytest.approx(26 / 127, abs=1e-6)
    port.callback(([CC, 2, 64], 0.0))  # tempo_bias 0 = the knob's middle
    assert hub.current("tempo_bias", "b") == pytest.approx(2 * 64 / 127 - 1, abs=1e-6)
    assert hub.current("tempo_bias", "a") == 0.0


def test_without_soft_takeover_a_knob_sets_at_once() -> None:
    midi, hub, port = _input(cc={"7": "volume"}, soft_takeover=False)
    midi.handle([CC, 7, 0])
    assert hub.current("volume") == 0.0


def test_buttons_pads_and_channel_filter() -> None:
    midi, hub, _ = _input(cc={"20": "freeze", "21": "next_variation"},
                          notes={"36": "freeze", "37": "next_variation@a", "38": "brightness"},
                          channel=2)
    assert not midi.handle([CC | 0, 20, 127])  # channel 1: not ours
    assert midi.handle([CC | 1, 20, 127]) and hub.current("freeze") == 1.0
    assert midi.handle([CC | 1, 20, 0]) and hub.current("freeze") == 0.0
    assert midi.handle([CC | 1, 21, 127]) and not midi.handle([CC | 1, 21, 120])
    assert midi.handle([CC | 1, 21, 0]) is False and midi.handle([CC | 1, 21, 127])
    assert hub.current("next_variation") == 2.0
    assert midi.handle([NOTE_ON | 1, 36, 100]) and hub.current("freeze") == 1.0
    assert not midi.handle([NOTE_ON | 1, 36, 0])  # note on with velocity 0 is a note off
    assert midi.handle([NOTE_ON | 1, 37, 90]) and hub.current("next_variation", "a") == 3.0
    assert midi.handle([NOTE_ON | 1, 38, 127]) and hub.current("brightness") == 1.0
    assert not midi.handle([0xF8])  # clock byte: ignored


def test_a_mapping_with_an_unknown_parameter_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="unknown parameter 'tempo'"):
        MidiInConfig(cc={"1": "tempo"})
    with pytest.raises(ValueError, match="key must be 0..127"):
        MidiInConfig(cc={"200": "intensity"})


def test_midi_learn_maps_the_control_that_moves() -> None:
    port = FakePort(messages=[
        [CC, 5, 60], [CC, 5, 61],  # a noisy fader at rest: not taken
        [CC, 9, 40], [CC, 9, 44],  # a knob turned: CC 9
        [CC, 9, 45],  # settling messages of the same knob: skipped
        [NOTE_ON, 36, 100],  # a pad
    ])
    times = iter(range(10_000))
    prompts: list[str] = []
    mapping = learn_mapping(port, ["intensity", "freeze@a"], prompts.append,
                            clock=lambda: next(times) * 0.01, sleep=lambda s: None)
    assert mapping == {"cc": {"9": "intensity"}, "notes": {"36": "freeze@a"}}
    assert prompts[1] == "  intensity <- CC 9"
    text = mapping_toml(mapping)
    assert '[control.midi.cc]\n"9" = "intensity"' in text
    assert MidiInConfig(**{k: dict(v) for k, v in mapping.items()}).cc == {"9": "intensity"}


def test_midi_learn_times_out_with_a_message() -> None:
    times = iter(range(10_000))
    with pytest.raises(ConfigError, match="no control moved for 'intensity' within 1 s"):
        learn_mapping(FakePort(), ["intensity"], lambda s: None, timeout_s=1.0,
                      clock=lambda: next(times) * 0.1, sleep=lambda s: None)


def test_the_midi_learn_command_says_in_one_line_when_there_is_no_midi() -> None:
    from installation.cli import cli
    from installation.ops_cli import commands

    group = click.Group(name="art2mus", commands={str(c.name): c for c in commands})
    cli_group = type(cli)(name="art2mus", commands=group.commands)
    result = CliRunner().invoke(cli_group, ["midi-learn", "--port", "nano", "intensity"])
    if result.exit_code == 0:  # pragma: no cover - a machine with a MIDI port called nano
        return
    assert result.exit_code in (2, 4)
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output


def test_maps_are_channel_aware_and_a_channels_own_entry_wins() -> None:
    midi, hub, port = _input(cc={"7": "volume", "2:7": "intensity@a"}, soft_takeover=False)
    port.callback(([CC | 0, 7, 127], 0.0))  # channel 1: the any-channel entry
    port.callback(([CC | 1, 7, 0], 0.0))  # channel 2: its own entry
    assert hub.current("volume") == 4.0
    assert hub.current("intensity", "a") == 0.0 and hub.current("volume", "a") == 4.0
    with pytest.raises(ValueError, match=r"control.midi.cc: key must be 0..127, or CH:0..127 "
                                         r"with channel 1..16, got '17:7'"):
        MidiInConfig(cc={"17:7": "intensity"})


def test_every_change_is_fed_back_as_cc_but_not_to_the_control_that_moved() -> None:
    config = MidiInConfig(cc={"1": "intensity", "2:21": "intensity", "7": "volume@b",
                              "64": "freeze", "30": "next_variation"},
                          soft_takeover=False)
    hub = ControlHub(CONFIG)
    out = FakeOut()
    feedback = MidiFeedback(config, hub, out)
    midi = MidiControlInput(config, hub, ports=[FakePort()], feedback=feedback)
    midi.handle([CC, 1, 100])  # knob CC 1 moves intensity: only the CC 21 fader follows
    assert out.sent == [[CC | 1, 21, 100]]
    out.sent.clear()
    hub.set("intensity", 0.0, source="osc")  # from OSC: both follow
    assert out.sent == [[CC, 1, 0], [CC | 1, 21, 0]]
    out.sent.clear()
    hub.set("volume", 2.0, "b", source="console")  # volume 0..4: 2.0 is the middle
    hub.set("volume", 2.0, "a", source="console")  # not the room CC 7 is mapped to
    hub.toggle("freeze", source="reload")
    hub.trigger("next_variation")  # a trigger has no position to show
    assert out.sent == [[CC, 7, 64], [CC, 64, 127]]
    midi.close()
    assert out.closed
    hub.set("intensity", 1.0)
    assert out.sent == [[CC, 7, 64], [CC, 64, 127]]  # unsubscribed on close


def test_feedback_port_same_opens_the_inputs_output_twin() -> None:
    rtmidi = FakeRtmidi(FakePort())
    midi = MidiControlInput.open(MidiInConfig(port="nano", feedback_port="same",
                                              cc={"1": "intensity"}), ControlHub(CONFIG),
                                 rtmidi_module=rtmidi)
    assert midi.feedback is not None and midi.feedback.port.opened == 1
    midi.close()
    with pytest.raises(ValueError, match="feedback_port: 'same' needs control.midi.port"):
        MidiInConfig(feedback_port="same")


def test_a_program_change_recalls_a_scene_through_the_hub() -> None:
    config = config_from_dict({
        "rooms": [{"id": "a"}, {"id": "b"}],
        "control": {"midi": {"cc": {"1": "intensity"}}, "scenes": [
            {"name": "calm", "program": 0, "params": {"intensity": 0.2, "volume@b": 0.5}},
            {"name": "storm", "program": 5, "params": {"intensity": 0.9, "freeze": 1},
             "key": "D", "mode": "dorian", "tempo_bpm": 140},
        ]},
    })
    events: list[tuple[str, dict[str, Any]]] = []
    hub = ControlHub(config, lambda kind, **f: events.append((kind, f)))
    out = FakeOut()
    feedback = MidiFeedback(config.control.midi, hub, out)
    midi = MidiControlInput(config.control.midi, hub, ports=[FakePort()], feedback=feedback)
    assert midi.handle([0xC0, 5])
    assert hub.current("intensity") == 0.9 and hub.current("freeze") == 1.0
    assert out.sent == [[CC, 1, round(0.9 * 127)]]  # the recalled scene moves the knob too
    assert midi.handle([0xC3, 0])  # any channel (control.midi.channel = 0)
    assert hub.current("intensity") == 0.2 and hub.current("volume", "b") == 0.5
    assert not midi.handle([0xC0, 9])  # no scene 9: ignored
    kinds = [kind for kind, _ in events]
    assert kinds.count("scene_recalled") == 2
    # storm's key (its tonic), mode and tempo were set as live parameters, in every room;
    # calm names none, so they stayed
    for room in ("a", "b"):
        assert (hub.current("tonic", room), hub.current("mode", room),
                hub.current("tempo_bpm", room)) == (2.0, 2.0, 140.0)
    recalled = [f for kind, f in events if kind == "scene_recalled"]
    assert recalled[0]["overrides"] == {"tonic": 2.0, "mode": 2.0, "tempo_bpm": 140.0}
    assert recalled[1]["overrides"] == {}
    assert not any(kind == "scene_overrides_ignored" for kind in kinds)
    assert hub.scene("calm").program == 0 and hub.scene(5).name == "storm"
    with pytest.raises(ValueError, match=r"unknown scene 'x'; control.scenes has \['calm "):
        hub.scene("x")


def test_scenes_are_checked_when_the_config_loads() -> None:
    def scenes(*entries: dict[str, Any]) -> Any:
        return config_from_dict({"rooms": [{"id": "a"}], "control": {"scenes": list(entries)}})

    with pytest.raises(ConfigError, match=r"control.scenes\[0\]`: Value error, unknown "
                                         r"parameter 'loudness'"):
        scenes({"name": "a", "program": 1, "params": {"loudness": 1.0}})
    with pytest.raises(ConfigError, match=r"each program once, got \[1\] twice"):
        scenes({"name": "a", "program": 1}, {"name": "b", "program": 1})
    with pytest.raises(ConfigError, match=r"control.scenes\[0\].params.intensity"):
        scenes({"name": "a", "program": 1, "params": {"intensity": "high"}})
    with pytest.raises(ConfigError, match=r"control.scenes\[0\].program"):
        scenes({"name": "a", "program": 128})
    with pytest.raises(ConfigError, match=r"unknown mode 'blues'; expected one of \['phryg"):
        scenes({"name": "a", "program": 1, "mode": "blues"})
    with pytest.raises(ConfigError, match=r"control.scenes\[0\].tempo_bpm"):
        scenes({"name": "a", "program": 1, "tempo_bpm": float("nan")})
    # a scene names a key ("Bb", natural there); its override sets the tonic parameter
    assert scenes({"name": "a", "program": 1, "key": "Bb"}).control.scenes[0].overrides() == {
        "tonic": 10.0}
    with pytest.raises(ConfigError, match=r"unknown parameter 'key' \(now called 'tonic'\)"):
        scenes({"name": "a", "program": 1, "params": {"key": 2}})
