"""MIDI in's ports come and go: a controller plugged in late, unplugged, replugged.

A stand-in rtmidi module (:class:`FakeRtmidi`) whose port list changes as ALSA's
does (a replugged USB controller comes back as a new client: ``... 28:0`` for
``... 24:0``) goes through :meth:`MidiControlInput.open`'s seam; each test calls
:meth:`MidiControlInput.watch` itself, as the surfaces' watch thread does every
:data:`WATCH_EVERY_S`: no sleeping.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

import pytest
from rich.console import Console

from installation.config import ControlConfig, MidiInConfig, config_from_dict
from installation.control import ControlHub
from installation.midi_in import WATCH_EVERY_S, MidiControlInput
from installation.status import print_status
from installation.surfaces import SurfaceWatch, start_surfaces, surface_states

CONFIG = config_from_dict({"rooms": [{"id": "a"}, {"id": "b"}]})
CC = 0xB0
THROUGH = "Midi Through:Midi Through Port-0 14:0"
NANO_24 = "nanoKONTROL2:nanoKONTROL2 MIDI 1 24:0"
NANO_28 = "nanoKONTROL2:nanoKONTROL2 MIDI 1 28:0"

Events = list[tuple[str, dict[str, Any]]]


class Bus:
    """What is plugged in now, and every port object made."""

    def __init__(self, *ports: str) -> None:
        self.ports = list(ports)
        self.made: list[FakeMidiIn] = []


class FakeMidiIn:
    """An rtmidi MidiIn look-alike on a :class:`Bus`."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.name: str | None = None
        self.callback: Any = None
        self.closed = False
        bus.made.append(self)

    def get_ports(self) -> list[str]:
        return list(self.bus.ports)

    def open_port(self, index: int) -> None:
        self.name = self.bus.ports[index]

    def open_virtual_port(self, name: str) -> None:
        self.name = f"{name} (virtual)"

    def set_callback(self, callback: Any) -> None:
        self.callback = callback

    def cancel_callback(self) -> None:
        self.callback = None

    def ignore_types(self, **_kinds: bool) -> None:
        pass

    def close_port(self) -> None:
        self.closed = True


class FakeMidiOut(FakeMidiIn):
    """An rtmidi MidiOut look-alike: what was sent, in order."""

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.sent: list[list[int]] = []

    def send_message(self, message: list[int]) -> None:
        self.sent.append(list(message))


class FakeRtmidi:
    """The rtmidi module as :meth:`MidiControlInput.open` uses it."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    def MidiIn(self) -> FakeMidiIn:  # noqa: N802 - rtmidi's name
        return FakeMidiIn(self.bus)

    def MidiOut(self) -> FakeMidiOut:  # noqa: N802 - rtmidi's name
        return FakeMidiOut(self.bus)


def _open(bus: Bus, **config: Any) -> tuple[MidiControlInput, ControlHub, Events]:
    events: Events = []

    def log_event(kind: str, **fields: Any) -> None:
        events.append((kind, fields))

    hub = ControlHub(CONFIG, log_event)
    settings = {"port": "nanoKONTROL", "cc": {"1": "intensity"}, "soft_takeover": False}
    midi = MidiControlInput.open(MidiInConfig(**(settings | config)), hub, log_event,
                                 rtmidi_module=FakeRtmidi(bus))
    return midi, hub, events


def _listening(bus: Bus) -> list[FakeMidiIn]:
    """The input ports open and listened to now."""
    return [p for p in bus.made if p.callback is not None and not p.closed]


def _kinds(events: Events) -> list[str]:
    return [kind for kind, _ in events if kind.startswith("midi_")]


def test_a_controller_plugged_in_after_the_start_is_opened_and_its_knobs_work(
        caplog: pytest.LogCaptureFixture) -> None:
    bus = Bus(THROUGH)
    with caplog.at_level(logging.WARNING, logger="installation.midi_in"):
        midi, hub, events = _open(bus)
        midi.watch()
        midi.watch()
    assert midi.ports == [] and _listening(bus) == []
    assert _kinds(events) == ["midi_in_waiting"]
    assert events[0][1] == {"port": "nanoKONTROL", "available": [THROUGH]}
    assert [r.getMessage() for r in caplog.records] == [
        f"MIDI in: no MIDI input port contains 'nanoKONTROL' (available: '{THROUGH}'); "
        f"it is opened when it appears (looked for every {WATCH_EVERY_S:g} s)"]
    assert midi.surface_state() == {"MIDI in": "waiting for 'nanoKONTROL'"}

    bus.ports.append(NANO_24)
    midi.watch()
    [port] = _listening(bus)
    assert port.name == NANO_24 and midi.ports == [port]
    assert events[-1] == ("midi_in_opened", {"port": NANO_24})
    port.callback(([CC, 1, 127], 0.0))
    assert hub.current("intensity") == 1.0
    assert midi.surface_state() == {"MIDI in": f"open: {NANO_24}"}
    midi.close()
    assert port.closed and port.callback is None


def test_a_replugged_controller_is_dropped_then_opened_again_under_its_new_name() -> None:
    bus = Bus(THROUGH, NANO_24)
    midi, hub, events = _open(bus, clock_in=True)
    [first] = _listening(bus)
    first.callback(([CC, 1, 0], 0.0))
    assert hub.current("intensity") == 0.0

    bus.ports.remove(NANO_24)  # unplugged
    midi.watch()
    assert first.closed and first.callback is None and midi.ports == []
    assert events[-1] == ("midi_in_lost", {"port": NANO_24, "waiting_for": "nanoKONTROL"})
    assert midi.surface_state() == {"MIDI in": "waiting for 'nanoKONTROL'"}
    midi.watch()  # still gone: nothing more said
    assert _kinds(events) == ["midi_in_opened", "midi_in_lost"]

    bus.ports.append(NANO_28)  # replugged: ALSA gave it a new client number
    midi.watch()
    [second] = _listening(bus)
    assert second is not first and second.name == NANO_28
    second.callback(([CC, 1, 127], 0.0))
    assert hub.current("intensity") == 1.0
    assert _kinds(events) == ["midi_in_opened", "midi_in_lost", "midi_in_opened"]

    bus.ports[-1] = NANO_24  # unplugged and replugged between two looks
    midi.watch()
    [third] = _listening(bus)
    assert third.name == NANO_24 and second.closed and midi.ports == [third]
    assert _kinds(events)[-2:] == ["midi_in_lost", "midi_in_opened"]
    midi.close()


def test_a_replugged_controller_keeps_each_ports_clock_apart() -> None:
    bus = Bus(NANO_24)
    midi, hub, _ = _open(bus, clock_in=True, virtual=True)
    [virtual] = [p for p in _listening(bus) if p.name == "art2mus (virtual)"]
    period = 60.0 / 100.0 / 24
    for _ in range(24 * 4):
        virtual.callback(([0xF8], period))
    assert hub.current("tempo_bpm") == 100.0
    bus.ports = [NANO_28]
    midi.watch()
    controller = next(p for p in _listening(bus) if p.name == NANO_28)
    for _ in range(24 * 4):  # the replugged controller's clock, knob turns on the virtual port
        controller.callback(([0xF8], 0.5 / 24))
        virtual.callback(([CC, 7, 1], 0.3))
    assert hub.current("tempo_bpm") == 120.0
    assert midi.surface_state() == {"MIDI in": f"open: {NANO_28}; virtual port 'art2mus'"}
    midi.close()


def test_two_controllers_of_one_name_are_said_once_and_the_first_is_used(
        caplog: pytest.LogCaptureFixture) -> None:
    bus = Bus(THROUGH, NANO_24, NANO_28)
    with caplog.at_level(logging.WARNING, logger="installation.midi_in"):
        midi, _, events = _open(bus)
        [port] = _listening(bus)
        assert port.name == NANO_24
        bus.ports.remove(NANO_24)  # the one in use unplugged: the other is taken
        midi.watch()
        bus.ports.append(NANO_24)  # back: two again, said already
        midi.watch()
        midi.watch()
    assert [p.name for p in _listening(bus)] == [NANO_28]
    ambiguous = [fields for kind, fields in events if kind == "midi_in_ambiguous"]
    assert ambiguous == [{"port": "nanoKONTROL", "matching": [NANO_24, NANO_28],
                          "using": NANO_24}]
    twins = [r.getMessage() for r in caplog.records if "ports contain" in r.getMessage()]
    assert twins == [f"MIDI in: 2 MIDI input ports contain 'nanoKONTROL' ('{NANO_24}', "
                     f"'{NANO_28}'): only the first is used; name more of the one wanted "
                     "in control.midi.port"]
    midi.close()


def test_feedback_to_the_controller_follows_it_when_it_is_replugged() -> None:
    bus = Bus(THROUGH)
    midi, hub, events = _open(bus, feedback_port="same")
    assert midi.feedback is not None and midi.feedback.port is None
    hub.set("intensity", 1.0, source="osc")  # nowhere to show it yet: nothing breaks
    assert midi.surface_state() == {"MIDI in": "waiting for 'nanoKONTROL'",
                                    "MIDI feedback": "waiting for 'nanoKONTROL'"}
    bus.ports.append(NANO_24)
    midi.watch()
    out = midi.feedback.port
    assert isinstance(out, FakeMidiOut) and out.name == NANO_24
    hub.set("intensity", 0.0, source="osc")
    assert out.sent == [[CC, 1, 0]]
    bus.ports = [NANO_28]
    midi.watch()
    assert out.closed and midi.feedback.port is not out
    hub.set("intensity", 1.0, source="osc")
    assert midi.feedback.port.sent == [[CC, 1, 127]] and out.sent == [[CC, 1, 0]]
    assert [k for k in _kinds(events) if k.startswith("midi_feedback")] == [
        "midi_feedback_waiting", "midi_feedback_opened", "midi_feedback_lost",
        "midi_feedback_opened"]
    midi.close()
    assert midi.feedback is None


def test_the_surfaces_watch_midi_in_and_status_shows_what_it_waits_for(
        monkeypatch: pytest.MonkeyPatch) -> None:
    bus = Bus(THROUGH)
    monkeypatch.setitem(sys.modules, "rtmidi", FakeRtmidi(bus))
    events: Events = []
    control = ControlConfig(midi=MidiInConfig(port="nanoKONTROL", cc={"1": "intensity"},
                                              soft_takeover=False))
    hub = ControlHub(CONFIG)
    services = start_surfaces(control, hub=hub,
                              log_event=lambda kind, **f: events.append((kind, f)),
                              rows=list, rooms=["a", "b"])
    try:
        midi, watch = services
        assert isinstance(midi, MidiControlInput) and isinstance(watch, SurfaceWatch)
        assert watch.every_s == WATCH_EVERY_S and watch.look == midi.watch
        assert "surface_unavailable" not in [kind for kind, _ in events]
        states = surface_states(services)
        assert states == {"MIDI in": "waiting for 'nanoKONTROL'"}
        record = {"installation": "t", "time": 0.0, "state": "stopped", "surfaces": states}
        console = Console(record=True, width=120)
        print_status(record, 1e12, console)
        assert "MIDI in: waiting for 'nanoKONTROL'" in console.export_text()
        bus.ports.append(NANO_24)
        midi.watch()  # what the watch's thread does every WATCH_EVERY_S
        assert surface_states(services) == {"MIDI in": f"open: {NANO_24}"}
    finally:
        for service in reversed(services):
            service.close()
    assert [p.name for p in bus.made if p.name and not p.closed] == []


def test_a_watch_whose_look_fails_says_so_once_and_goes_on() -> None:
    events: Events = []
    calls: list[int] = []
    enough = threading.Event()

    def look() -> None:
        calls.append(1)
        if len(calls) <= 3:
            raise RuntimeError("ALSA sequencer busy")
        if len(calls) == 5:
            enough.set()

    watch = SurfaceWatch.start("MIDI in", look, lambda kind, **f: events.append((kind, f)),
                               every_s=0.0)
    try:
        assert enough.wait(30.0)
    finally:
        watch.close()
    assert watch.failures == 3
    assert events[:2] == [
        ("surface_watch_failed", {"surface": "MIDI in",
                                  "error": "RuntimeError('ALSA sequencer busy')"}),
        ("surface_watch_recovered", {"surface": "MIDI in", "failed_looks": 3})]
    assert len(events) == 2
