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
transition_s    engine     0 .. 10       crossfade into new material, seconds
freeze          engine     0 | 1         1 = keep the current artwork's music
next_variation  engine     counter       each step reseeds the composer
volume          audio_out  0 .. 2        output gain factor (ramped, no clicks)
==============  =========  ============  =========================================

``density`` is accepted as another name for ``intensity``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RoleName = Literal["engine", "audio_out"]
Kind = Literal["continuous", "toggle", "trigger"]


@dataclass(frozen=True)
class Parameter:
    """One live parameter: its role, range, neutral value and how a control moves it."""

    name: str
    role: RoleName
    low: float
    high: float
    default: float
    kind: Kind
    doc: str

    def clamp(self, value: float) -> float:
        """``value`` limited to the range (a trigger's counter is only kept >= 0)."""
        if self.kind == "trigger":
            return float(max(0, int(value)))
        if self.kind == "toggle":
            return 1.0 if value >= 0.5 else 0.0
        # 6 decimals: OSC sends float32, whose noise (0.800000011920929) means nothing here
        return round(min(max(float(value), self.low), self.high), 6)

    def from_unit(self, unit: float) -> float:
        """A 0..1 control position (a knob) as a value of this parameter."""
        unit = min(max(float(unit), 0.0), 1.0)
        return self.low + unit * (self.high - self.low)

    def to_unit(self, value: float) -> float:
        """Where ``value`` sits on a 0..1 control (for soft takeover)."""
        if self.high == self.low:
            return 0.0
        return min(max((float(value) - self.low) / (self.high - self.low), 0.0), 1.0)


PARAMETERS: dict[str, Parameter] = {
    p.name: p for p in (
        Parameter("intensity", "engine", 0.0, 1.0, 0.5, "continuous",
                  "note density; 0.5 = as the artwork asks"),
        Parameter("brightness", "engine", 0.0, 1.0, 0.5, "continuous",
                  "timbre brightness; 0.5 = as the artwork asks"),
        Parameter("tempo_bias", "engine", -1.0, 1.0, 0.0, "continuous",
                  "tempo x 2^(bias/2)"),
        Parameter("transition_s", "engine", 0.0, 10.0, 1.0, "continuous",
                  "crossfade into new material, seconds"),
        Parameter("freeze", "engine", 0.0, 1.0, 0.0, "toggle",
                  "1 = ignore artwork changes"),
        Parameter("next_variation", "engine", 0.0, 1e9, 0.0, "trigger",
                  "each step reseeds the composer"),
        Parameter("volume", "audio_out", 0.0, 2.0, 1.0, "continuous",
                  "output gain factor"),
    )
}
ALIASES = {"density": "intensity"}


def parameter(name: str) -> Parameter:
    """The parameter called ``name`` (or an alias); ValueError lists the known names."""
    found = PARAMETERS.get(ALIASES.get(name, name))
    if found is None:
        raise ValueError(f"unknown parameter {name!r}; expected one of "
                         f"{sorted(PARAMETERS) + sorted(ALIASES)}")
    return found


def parse_target(target: str) -> tuple[Parameter, str]:
    """``"intensity"`` or ``"intensity@room-1"`` as (parameter, room or ``"*"``)."""
    name, _, room = target.partition("@")
    return parameter(name), room or "*"
