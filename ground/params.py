"""The live parameters every control surface speaks: names, ranges, which role applies them.

MIDI knobs, OSC addresses and config reloads all end up as a
``Control(command="set", params={name: value})`` to the role named here. The
values on the wire are in the parameter's own unit (seconds, a volume
factor...); a MIDI knob's 0..127 goes through :meth:`Parameter.from_unit`.

==============  =========  ============  =========================================
name            role       range         effect
==============  =========  ============  =========================================
intensity       engine     0 .. 1        note density (0.5 = what the artwork asks)
brightness      engine     0 .. 1        timbre brightness (0.5 = the artwork's)
tempo_bias      engine     -1 .. 1       tempo x 2^(bias/2): -1 = x0.71, +1 = x1.41
tempo_bpm       engine     0 .. 300      the tempo itself (a synced session's, a scene's);
                                         0 = the artwork's (moved by tempo_bias)
tonic           engine     -1 .. 11      the key's tonic, 0 = C .. 11 = B; -1 = the artwork's
mode            engine     -1 .. 5       :data:`MODES` index, dark to bright; -1 = the artwork's
transition_s    engine     0 .. 10       crossfade into new material, seconds
freeze          engine     0 | 1         1 = keep the current artwork's music
next_variation  engine     counter       each step reseeds the composer
volume          audio_out  0 .. 4        output gain factor (ramped, no clicks)
==============  =========  ============  =========================================

``tonic`` and ``mode`` are *choices*: whole numbers, each with a name
(:attr:`Parameter.choices`; a knob's travel is split between them). What a
generator does with tempo, tonic and mode is its own: the procedural one plays
the artwork's palette and instruments in the key (tonic and mode) and tempo
given. The tonic was called ``key`` before; it moved because a parameter's
OSC address is ``/art2mus/ROOM/NAME`` and OSC out and beat out send the key's
full name ("D dorian") on ``/art2mus/ROOM/key``. The old name is not taken as
another name (that address would again carry numbers in and strings out): it
is refused with a message naming the new one (:data:`RENAMED`).

``density`` is accepted as another name for ``intensity``. The volume range
(:data:`VOLUME_MAX`) is also the bound of the ``[audio_out] volume`` config
field and of ``Player.set_volume``: one definition, here.

An engine parameter names the field of the room's controls it sets
(:attr:`Parameter.field`, ``engine.generators.base.RoomControls``) and what a
change re-plans (:attr:`Parameter.replans`): ``"condition"`` when the
generator's ``apply_controls`` reads it (intensity, brightness, tempo bias;
what each means is the generator's own), ``"seed"`` when it moves the seed
(next_variation). The engine's room session applies them from this table
alone, so a new knob is a row here, a field there and what the generators do
with it.

:data:`SETTINGS` are the engine config fields also applied live (hot reload,
OSC): ``lead_s`` 0.01..60, ``transition_margin_s`` 0.05..10 and
``view_timeout_s`` 0..86400 seconds, the bounds of their ``[engine]`` fields.
A lead must also fit the room's audio_out timeline (:func:`lead_s_limit`): what
the engine sends beyond ``buffer_s`` ahead of the playhead is dropped there,
and the room runs dry; whoever knows the room's buffer passes that bound to
:meth:`Parameter.clamp` as ``high``.

Only finite numbers are values: :meth:`Parameter.check` refuses NaN, infinity,
strings (``"nan"`` included) and anything else with a ValueError, so such a
value is never stored, sent or replayed. A finite value outside the range is
clamped to it.

A continuous value is kept to the precision OSC carries (float32, about 7
significant digits), written as its shortest decimal (:func:`float32_decimal`):
126.53 stays 126.53, and its OSC echo, 126.52999877929688, is 126.53 again.
What decides whether a value changed (the hub's and the engine's ``==``) is
then the same at every magnitude, so an echo that comes back is no change
and ends there; rounding to a number of decimals absorbed float32's noise
only below ~8 (a tempo's float32 step is 2-15e-6).
"""

from __future__ import annotations

import math
import numbers
import struct
from dataclasses import dataclass
from typing import Literal

RoleName = Literal["engine", "audio_out"]
Kind = Literal["continuous", "toggle", "trigger", "choice"]
#: What a change of an engine parameter re-plans: nothing, the generator's condition, the seed.
Replans = Literal["", "condition", "seed"]

#: The highest output gain factor (x4, +12 dB); the lowest is 0 (silence).
VOLUME_MAX = 4.0

#: Key names by pitch class (``tonic`` 0..11); flats are accepted too (:func:`key_index`).
KEY_NAMES: tuple[str, ...] = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_FLATS = {"Db": 1, "D#": 3, "Gb": 6, "G#": 8, "A#": 10, "Cb": 11, "E#": 5, "Fb": 4, "B#": 0}
#: The modes a ``mode`` override names, darkest to brightest (``mode`` 0..5).
MODES: tuple[str, ...] = ("phrygian", "aeolian", "dorian", "mixolydian", "ionian", "lydian")
#: The choice meaning "what the artwork decides" (``tonic`` and ``mode`` -1, ``tempo_bpm`` 0).
THE_ARTWORKS = "the artwork's"


@dataclass(frozen=True)
class Parameter:
    """One live parameter: its role, range, neutral value and how a control moves it.

    ``field`` is the engine room's control it sets (None: not a room control,
    e.g. audio_out's volume or an engine setting); ``replans`` what a change
    re-plans (see the module docstring).
    """

    name: str
    role: RoleName
    low: float
    high: float
    default: float
    kind: Kind
    doc: str
    field: str | None = None
    replans: Replans = ""
    choices: tuple[str, ...] = ()  # a choice's names, for low, low + 1 .. high
    #: The least value besides ``low``: ``tempo_bpm`` is 0 (the artwork's) or 20..300,
    #: what the engine plays (a knob sweeping through 0..20 sets 20; a config refuses it).
    least: float | None = None

    @property
    def expected(self) -> str:
        """The range in words, for messages."""
        if self.kind == "toggle":
            return "0 or 1"
        if self.kind == "choice":
            return f"a whole number in {self.low:g}..{self.high:g}"
        if self.least is not None:
            return f"{self.low:g} or a finite number in {self.least:g}..{self.high:g}"
        return f"a finite number in {self.low:g}..{self.high:g}"

    def check(self, value: object) -> float:
        """``value`` as a finite float; ValueError naming the parameter for anything else.

        Numbers only (a bool too, for a toggle): a string such as ``"nan"``
        is refused, not parsed.
        """
        if isinstance(value, bool) and self.kind == "toggle":
            return float(value)
        number = _finite(value)
        if number is None:
            raise ValueError(f"parameter {self.name}: expected {self.expected}, "
                             f"got {shown(value)}")
        return number

    def clamp(self, value: object, high: float | None = None) -> float:
        """``value`` checked (:meth:`check`) and limited to the range.

        A trigger's counter is kept a whole number in range, a toggle is 0 or 1.
        ``high``: a tighter upper bound than the range's, known where the value is
        applied (a lead by the room's buffer, :func:`lead_s_limit`); never below ``low``.
        """
        number = self.check(value)
        if self.kind == "toggle":
            return 1.0 if number >= 0.5 else 0.0
        top = self.high if high is None else max(self.low, min(self.high, high))
        number = min(max(number, self.low), top)
        if self.least is not None and self.low < number < self.least:
            number = self.least
        if self.kind == "trigger":
            return float(int(number))
        if self.kind == "choice":
            return float(round(number))
        # OSC sends float32: a value and its echo (0.8, 0.800000011920929) are one value
        # (the module docstring); the range again, should a bound not be a float32's decimal
        return min(max(float32_decimal(number), self.low), top)

    def in_range(self, value: object) -> float:
        """``value`` as a config file must give it: checked (:meth:`check`) and within the
        range (``least`` too), not clamped; ValueError naming the parameter otherwise."""
        number = self.check(value)
        if not self.low <= number <= self.high or (
                self.least is not None and self.low < number < self.least):
            raise ValueError(f"parameter {self.name}: expected {self.expected}, "
                             f"got {shown(value)}")
        return number

    def typed(self, value: float) -> float | int | bool:
        """A :meth:`clamp`-ed value as its field holds it: a bool (toggle), int (trigger,
        choice), float."""
        if self.kind == "toggle":
            return value >= 0.5
        if self.kind in ("trigger", "choice"):
            return int(value)
        return value

    def from_unit(self, unit: object) -> float:
        """A 0..1 control position (a knob) as a value of this parameter."""
        position = _finite(unit)
        if position is None:
            raise ValueError(f"parameter {self.name}: expected a control position in 0..1, "
                             f"got {shown(unit)}")
        position = min(max(position, 0.0), 1.0)
        return self.low + position * (self.high - self.low)

    def to_unit(self, value: object) -> float:
        """Where ``value`` sits on a 0..1 control (for soft takeover)."""
        number = self.check(value)
        if self.high == self.low:
            return 0.0
        return min(max((number - self.low) / (self.high - self.low), 0.0), 1.0)


def shown(value: object) -> str:
    """``repr(value)``, cut short: a message must not grow with what a peer sent."""
    if isinstance(value, int) and value.bit_length() > 128:  # repr may refuse (4300 digits)
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_FLOAT32 = struct.Struct("<f")


def float32_decimal(number: float) -> float:
    """``number`` at float32 precision, as the shortest decimal float32 reads back the same.

    A value and what float32 makes of it give the same result (126.53 and
    126.52999877929688: 126.53), and the result is its own (idempotent).
    ``number`` must lie within float32's range (OverflowError otherwise).
    """
    single = _FLOAT32.unpack(_FLOAT32.pack(number))[0]
    for digits in range(1, 10):  # 9 significant digits tell any two float32 apart
        shortest = float(f"{single:.{digits}g}")
        if _FLOAT32.unpack(_FLOAT32.pack(shortest))[0] == single:
            return shortest
    return float(single)  # not reached


def _finite(value: object) -> float | None:
    """``value`` as a float if it is a finite real number (not a bool, not a string)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        number = float(value)
    except (OverflowError, ValueError):  # an int beyond float range
        return None
    return number if math.isfinite(number) else None


PARAMETERS: dict[str, Parameter] = {
    p.name: p for p in (
        Parameter("intensity", "engine", 0.0, 1.0, 0.5, "continuous",
                  "note density; 0.5 = as the artwork asks", "intensity", "condition"),
        Parameter("brightness", "engine", 0.0, 1.0, 0.5, "continuous",
                  "timbre brightness; 0.5 = as the artwork asks", "brightness", "condition"),
        Parameter("tempo_bias", "engine", -1.0, 1.0, 0.0, "continuous",
                  "tempo x 2^(bias/2)", "tempo_bias", "condition"),
        Parameter("tempo_bpm", "engine", 0.0, 300.0, 0.0, "continuous",
                  "the tempo in beats per minute (a synced session's or a scene's); "
                  "0 = the artwork's", "tempo_bpm", "condition", least=20.0),
        Parameter("tonic", "engine", -1.0, 11.0, -1.0, "choice",
                  "the key's tonic; the artwork's unless set", "tonic", "condition",
                  (THE_ARTWORKS, *KEY_NAMES)),
        Parameter("mode", "engine", -1.0, len(MODES) - 1.0, -1.0, "choice",
                  "the mode, dark to bright; the artwork's unless set", "mode", "condition",
                  (THE_ARTWORKS, *MODES)),
        Parameter("transition_s", "engine", 0.0, 10.0, 1.0, "continuous",
                  "crossfade into new material, seconds", "transition_s"),
        Parameter("freeze", "engine", 0.0, 1.0, 0.0, "toggle",
                  "1 = ignore artwork changes", "freeze"),
        Parameter("next_variation", "engine", 0.0, 1e9, 0.0, "trigger",
                  "each step reseeds the composer", "variation", "seed"),
        Parameter("volume", "audio_out", 0.0, VOLUME_MAX, 1.0, "continuous",
                  "output gain factor"),
    )
}
ALIASES = {"density": "intensity"}
#: Old parameter names, refused with the new name in the message (see the module docstring).
RENAMED = {"key": "tonic"}

#: Engine config fields applied live, with the bounds of their ``[engine]`` fields
#: (``lead_s`` must be > 0 there; ``view_timeout_s`` has no upper bound there, a day here).
SETTINGS: dict[str, Parameter] = {
    p.name: p for p in (
        Parameter("lead_s", "engine", 0.01, 60.0, 1.5, "continuous",
                  "how far ahead of the playhead each room is kept, seconds"),
        Parameter("transition_margin_s", "engine", 0.05, 10.0, 0.3, "continuous",
                  "new material after a change starts this long after now, seconds"),
        Parameter("view_timeout_s", "engine", 0.0, 86400.0, 20.0, "continuous",
                  "capture silent this long: empty-room ambience; 0 = never"),
    )
}


#: Seconds of audio_out's timeline ring a lead leaves free (:func:`lead_s_limit`): the
#: engine's playhead estimate may run ahead of the ring's real playhead (the clock's
#: transport, the card's output latency, the resampler's delay), and the ring keeps
#: guard blocks before its playhead.
LEAD_HEADROOM_S = 1.0


def lead_s_limit(buffer_s: float, chunk_s: float, batch_window_s: float) -> float:
    """The longest ``lead_s`` whose queue fits audio_out's timeline ring of ``buffer_s``.

    The engine tops a room's queue up while it ends less than ``lead_s`` past the
    playhead, one ``chunk_s`` at a time (so it reaches up to a chunk more), and a room
    batched with another up to ``batch_window_s`` earlier; the ring holds ``buffer_s``
    from its playhead on, less :data:`LEAD_HEADROOM_S`. What the engine sends beyond it
    is dropped as late (a 45 s lead on the default 30 s ring: half the chunks lost, the
    room dry every ~30 s). May be 0 or less: no lead fits.
    """
    return buffer_s - chunk_s - batch_window_s - LEAD_HEADROOM_S


def _unknown(name: str) -> str:
    """``name`` for a message saying it is not a parameter, with its new name if renamed."""
    new = RENAMED.get(name)
    return f"{name!r}" if new is None else f"{name!r} (now called {new!r})"


def parameter(name: str) -> Parameter:
    """The parameter called ``name`` (or an alias); ValueError lists the known names."""
    found = PARAMETERS.get(ALIASES.get(name, name))
    if found is None:
        raise ValueError(f"unknown parameter {_unknown(name)}; expected one of "
                         f"{sorted(PARAMETERS) + sorted(ALIASES)}")
    return found


def live_value(name: str) -> Parameter:
    """The parameter or engine setting called ``name``; ValueError lists the known names."""
    found = SETTINGS.get(name) or PARAMETERS.get(ALIASES.get(name, name))
    if found is None:
        raise ValueError(f"unknown parameter {_unknown(name)}; expected one of "
                         f"{sorted(PARAMETERS) + sorted(ALIASES) + sorted(SETTINGS)}")
    return found


def key_index(name: str) -> int:
    """Pitch class of a key name ("D", "F#", "Bb"); ValueError names the known ones."""
    found = KEY_NAMES.index(name) if name in KEY_NAMES else _FLATS.get(name)
    if found is None:
        raise ValueError(f"unknown key {name!r}; expected one of {list(KEY_NAMES)} "
                         "(or a flat such as 'Db')")
    return found


def mode_index(name: str) -> int:
    """Index of a mode name in :data:`MODES`; ValueError lists them."""
    if name not in MODES:
        raise ValueError(f"unknown mode {name!r}; expected one of {list(MODES)}")
    return MODES.index(name)


def parse_target(target: str) -> tuple[Parameter, str]:
    """``"intensity"`` or ``"intensity@room-1"`` as (parameter, room or ``"*"``)."""
    name, _, room = target.partition("@")
    return parameter(name), room or "*"
