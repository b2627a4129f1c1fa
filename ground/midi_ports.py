"""Opening an rtmidi output port by part of its name: one way for every role.

audio_out plays notes on one (``[audio_out] midi_port``), the supervisor
sends CC feedback on one (``[control.midi] feedback_port``) and the engine
sends MIDI clock on one (``[control.midi] clock_out``). Each names its config
field, so an error says which setting to fix: a DependencyError when this
machine has no python-rtmidi (the ``midi`` extra) or no MIDI system, a
ConfigError listing the ports there are when none matches.
"""

from __future__ import annotations

import importlib
from typing import Any

from ground.errors import ConfigError, DependencyError


def open_output_port(name: str, field: str, rtmidi_module: Any = None) -> tuple[Any, str]:
    """The first output port whose name contains ``name`` (case-insensitive), and its name.

    ``field`` is the config setting that named it, for the messages;
    ``rtmidi_module`` the seam tests pass a stand-in through.
    """
    if rtmidi_module is None:
        try:
            rtmidi_module = importlib.import_module("rtmidi")
        except ImportError:
            raise DependencyError(f"{field} needs python-rtmidi "
                                  "(pip install 'art2mus[midi]')") from None
    try:
        midi_out = rtmidi_module.MidiOut()
    except Exception as exc:  # rtmidi.SystemError / RuntimeError: no ALSA/CoreMIDI here
        raise DependencyError(f"{field} {name!r}: no MIDI back end ({exc})") from None
    return midi_out, open_matching(midi_out, name, field, "output")


def open_matching(midi: Any, name: str, field: str, direction: str) -> str:
    """Open ``midi``'s (an rtmidi MidiIn or MidiOut) first port whose name contains
    ``name`` (case-insensitive); its name. ConfigError lists the ports there are."""
    ports = list(midi.get_ports())
    for index, port in enumerate(ports):
        if name.lower() in port.lower():
            midi.open_port(index)
            return port
    available = ", ".join(repr(p) for p in ports) or "none"
    raise ConfigError(f"{field}: no MIDI {direction} port contains {name!r}; "
                      f"available: {available}")
