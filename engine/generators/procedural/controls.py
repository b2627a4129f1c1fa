"""What the live knobs mean for the procedural generator: they move its musical plan.

Intensity shifts the plan's note density and brightness its timbre
brightness, both around 0.5 (= the artwork's own); tempo bias multiplies the
tempo by ``2 ** (tempo_bias / 2)`` within :data:`TEMPO_LIMITS_BPM`. Key, mode,
instruments and everything else the artwork decided stay.
"""

from __future__ import annotations

import dataclasses

from engine.generators.base import RoomControls
from engine.generators.procedural.mapping import MusicalDecisions

#: The tempo a knob can push a plan to, beats per minute.
TEMPO_LIMITS_BPM = (30.0, 240.0)


def _clip01(x: float) -> float:
    return min(max(float(x), 0.0), 1.0)


def apply_controls(decisions: MusicalDecisions, controls: RoomControls) -> MusicalDecisions:
    """``decisions`` with density, timbre brightness and tempo moved by ``controls``."""
    tempo = decisions.tempo_bpm * 2.0 ** (controls.tempo_bias / 2.0)
    return dataclasses.replace(
        decisions,
        density=round(_clip01(decisions.density + (controls.intensity - 0.5)), 4),
        brightness=round(_clip01(decisions.brightness + (controls.brightness - 0.5)), 4),
        tempo_bpm=round(min(max(tempo, TEMPO_LIMITS_BPM[0]), TEMPO_LIMITS_BPM[1]), 1),
    )
