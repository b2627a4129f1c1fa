"""A sine generator: the fake at the generator seam, for tests and wiring checks.

Its pitch follows the artwork's brightness so tests can tell artworks apart,
and its phase is continuous across calls so joins can be checked exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from engine.generators.base import Generated, RoomControls
from ground.protocol import ArtworkView


@dataclass(frozen=True)
class SineState:
    """Position on the timeline and the oscillator phase there."""

    position: int
    phase: float


class SineGenerator:
    """A quiet sine at 220-880 Hz chosen by the view's brightness; silence for an empty wall."""

    def __init__(self, sample_rate: int = 48000, channels: int = 2, level: float = 0.2) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self.level = level

    def prepare(self, view: ArtworkView) -> float:
        """The frequency for this view (0.0 for an empty wall)."""
        if view.state == "empty":
            return 0.0
        brightness = float(view.features.get("brightness", 0.5))
        return 220.0 * 2.0 ** (2.0 * min(max(brightness, 0.0), 1.0))

    def describe(self, condition: Any) -> dict[str, Any]:
        """The one decision a sine makes."""
        return {"frequency_hz": round(float(condition), 2)}

    def apply_controls(self, view: ArtworkView, condition: Any, controls: RoomControls) -> float:
        """The pitch of ``view`` as if it were ``controls.brightness - 0.5`` brighter.

        A sine has no density or tempo: intensity and tempo bias change nothing,
        and an empty wall stays silent.
        """
        if view.state == "empty":
            return float(condition)
        brightness = view.features.get("brightness", 0.5) + (controls.brightness - 0.5)
        features = {**view.features, "brightness": min(max(float(brightness), 0.0), 1.0)}
        return self.prepare(msgspec.structs.replace(view, features=features))

    def start(
        self, condition: Any, seed: int, start_sample: int, previous: Any | None
    ) -> SineState:
        """Start at ``start_sample`` with phase zero."""
        return SineState(position=start_sample, phase=0.0)

    def generate(
        self, state: SineState, condition: Any, frames: int
    ) -> tuple[Generated, SineState]:
        """The next ``frames`` of the sine, phase-continuous with ``state``."""
        step = 2.0 * np.pi * float(condition) / self.sample_rate
        phases = state.phase + step * np.arange(frames, dtype=np.float64)
        mono = (self.level * np.sin(phases)).astype(np.float32)
        audio = np.repeat(mono[:, None], self.channels, axis=1)
        next_phase = float((state.phase + step * frames) % (2.0 * np.pi))
        return Generated(audio=audio), SineState(state.position + frames, next_phase)
