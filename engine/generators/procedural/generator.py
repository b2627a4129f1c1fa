"""The procedural generator: mapping, composer and renderer behind the Generator protocol.

``prepare`` maps a view to :class:`MusicalDecisions`; ``start`` opens a
stream (a :class:`Composer` fixed by decisions, seed and grid, plus a fresh
synth and effect chain); ``generate`` renders the next block and lists the
notes that start in it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from engine.generators.base import Generated, RoomControls
from engine.generators.procedural.composer import Composer
from engine.generators.procedural.config import ProceduralConfig
from engine.generators.procedural.controls import apply_controls
from engine.generators.procedural.mapping import (
    MusicalDecisions,
    ambience_decisions,
    decide,
    describe_decisions,
)
from engine.generators.procedural.render import RenderState, SoundFontRenderer
from ground.protocol import ArtworkView


@dataclass(frozen=True)
class ProceduralState:
    """One stream: timeline position, the composer that writes it, the audio path that plays it.

    A state is consumed by the ``generate`` call that receives it: the audio
    path (synth voices, reverb tail) is shared with the returned state, and a
    second call with the same state is refused.
    """

    position: int
    decisions: MusicalDecisions
    composer: Composer
    audio: RenderState

    def check(self) -> None:
        """Refuse a state whose audio path has already moved on (it was consumed)."""
        if self.audio.served != self.position:
            raise ValueError(
                f"state at sample {self.position} was already consumed "
                f"(its audio path is at {self.audio.served}); use the state generate returned"
            )


class ProceduralGenerator:
    """Descriptor -> decisions -> notes -> SoundFont audio: the embedded default generator."""

    #: Its bars start on a tempo sync's outside grid (``controls.sync``; see the composer).
    follows_sync = True

    def __init__(
        self, config: ProceduralConfig, sample_rate: int = 48000, channels: int = 2
    ) -> None:
        self.config = config
        self.sample_rate = sample_rate
        self.channels = channels
        self.renderer = SoundFontRenderer(config, sample_rate, channels)

    def prepare(self, view: ArtworkView) -> MusicalDecisions:
        """Decisions for ``view``: the mapping for an artwork, the ambience for an empty wall."""
        if view.state == "empty":
            return ambience_decisions(self.config)
        return decide(dict(view.features), self.config, view.artwork_id)

    def describe(self, condition: Any) -> dict[str, Any]:
        """JSON-ready summary of the decisions (key, mode, tempo, instruments...) and the
        SoundFont that plays them."""
        if not isinstance(condition, MusicalDecisions):
            raise TypeError(f"condition must be MusicalDecisions, got {type(condition).__name__}")
        return describe_decisions(condition) | {"soundfont": self.renderer.soundfont.name}

    def apply_controls(
        self, view: ArtworkView, condition: Any, controls: RoomControls
    ) -> MusicalDecisions:
        """The plan moved by the knobs (:mod:`~engine.generators.procedural.controls`)."""
        if not isinstance(condition, MusicalDecisions):
            raise TypeError(f"condition must be MusicalDecisions, got {type(condition).__name__}")
        return apply_controls(condition, controls)

    def start(
        self, condition: Any, seed: int, start_sample: int, previous: Any | None
    ) -> ProceduralState:
        """Open a stream at ``start_sample``; with ``previous``, bridge from its bar grid."""
        if not isinstance(condition, MusicalDecisions):
            raise TypeError(f"condition must be MusicalDecisions, got {type(condition).__name__}")
        context = previous.composer.context if isinstance(previous, ProceduralState) else None
        composer = Composer(condition, self.config, seed, start_sample, self.sample_rate, context)
        audio = self.renderer.open(condition, start_sample)
        return ProceduralState(int(start_sample), condition, composer, audio)

    def generate(
        self, state: ProceduralState, condition: Any, frames: int
    ) -> tuple[Generated, ProceduralState]:
        """The next ``frames`` of audio and the notes starting in them; the state after them.

        ``condition`` is the plan the stream was started with; a new plan
        needs a new ``start`` (with this state as ``previous``) so the
        composer can bridge to it.
        """
        if frames <= 0:
            raise ValueError(f"frames must be positive, got {frames}")
        state.check()
        if condition is not state.decisions and condition != state.decisions:
            raise ValueError(
                "condition differs from the one this stream was started with; "
                "call start(condition, seed, position, previous=state) to change it"
            )
        audio = self.renderer.render(state.audio, state.composer, frames)
        rows = state.composer.notes_between(state.position, state.position + frames)
        notes = rows.astype(np.int32)
        if len(notes):
            notes[:, 0] = (rows[:, 0] - state.position).astype(np.int32)
        return Generated(audio=audio, notes=notes), replace(state, position=state.position + frames)
