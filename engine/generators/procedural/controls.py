"""What the live knobs mean for the procedural generator: they move its musical plan.

Intensity shifts the plan's note density and brightness its timbre
brightness, both around 0.5 (= the artwork's own); tempo bias multiplies the
tempo by ``2 ** (tempo_bias / 2)`` within :data:`TEMPO_LIMITS_BPM`. A set
``tempo_bpm`` (a synced session's tempo, a scene's) replaces the tempo
outright, within :data:`SET_TEMPO_LIMITS_BPM`, and the bias does not move it:
the tempo is then the session's. A set ``tonic`` or ``mode`` replaces the
artwork's; instruments, palette, register and everything else the artwork
decided stay. The outside bar grid of a tempo sync (``controls.sync``) is
carried into the plan; the composer starts its bars on it while the plan's
tempo is the grid's.
"""

from __future__ import annotations

import dataclasses

from engine.generators.base import RoomControls
from engine.generators.procedural.mapping import MusicalDecisions
from ground.params import MODES

#: The tempo a knob can push a plan to, beats per minute.
TEMPO_LIMITS_BPM = (30.0, 240.0)
#: A tempo set outright (tempo_bpm > 0), beats per minute: what a scene may name.
SET_TEMPO_LIMITS_BPM = (20.0, 300.0)


def _clip01(x: float) -> float:
    return min(max(float(x), 0.0), 1.0)


def apply_controls(decisions: MusicalDecisions, controls: RoomControls) -> MusicalDecisions:
    """``decisions`` with density, timbre brightness, tempo, key and mode moved by
    ``controls``."""
    if controls.tempo_bpm > 0:
        # a synced tempo to 0.01 bpm: a beat that is 0.05 bpm off drifts 25 ms a minute
        low, high, digits = *SET_TEMPO_LIMITS_BPM, 2
        tempo = controls.tempo_bpm
    else:
        low, high, digits = *TEMPO_LIMITS_BPM, 1
        tempo = decisions.tempo_bpm * 2.0 ** (controls.tempo_bias / 2.0)
    return dataclasses.replace(
        decisions,
        density=round(_clip01(decisions.density + (controls.intensity - 0.5)), 4),
        brightness=round(_clip01(decisions.brightness + (controls.brightness - 0.5)), 4),
        tempo_bpm=round(min(max(tempo, low), high), digits),
        sync=controls.sync,
        key_root=controls.tonic % 12 if controls.tonic >= 0 else decisions.key_root,
        mode=MODES[controls.mode] if 0 <= controls.mode < len(MODES) else decisions.mode,
    )
