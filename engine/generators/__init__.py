"""The Generator seam: anything that turns a conditioned state into audio.

A generator is driven by :mod:`engine.streaming` in three calls:

1. ``prepare(view)`` once per artwork change: the conditioning (for the
   procedural generator, the musical decisions derived from the descriptor;
   for a diffusion model, the cross-attention tokens). Cached by the session.
2. ``start(condition, seed, start_sample, previous)`` opens a stream at a
   timeline position; ``previous`` (the state being replaced, or None) lets
   the generator keep musical context (key, bar phase) across a transition.
3. ``generate(state, condition, frames)`` returns the next ``frames`` of
   audio, sample-continuous with the previous call, and the new state. A
   state is consumed by the call that receives it (it may own a synthesiser).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from engine.config import EngineConfig
from installation.protocol import ArtworkView


@dataclass(frozen=True)
class Generated:
    """One generated block: float32 audio (frames, channels) and its notes.

    ``notes`` is int32 (N, 6): start offset in frames from the block start,
    length in frames, MIDI pitch, velocity, GM program (128 = percussion),
    MIDI channel. Generators without notes return an empty (0, 6) array.
    """

    audio: np.ndarray
    notes: np.ndarray = field(default_factory=lambda: np.zeros((0, 6), np.int32))

    def __post_init__(self) -> None:
        if self.audio.ndim != 2 or self.audio.dtype != np.float32:
            raise ValueError(f"audio must be float32 (frames, channels), got "
                             f"{self.audio.dtype} {self.audio.shape}")
        if self.notes.ndim != 2 or self.notes.shape[1] != 6:
            raise ValueError(f"notes must be (N, 6), got {self.notes.shape}")


class Generator(Protocol):
    """What the streaming loop needs from a music generator."""

    sample_rate: int
    channels: int

    def prepare(self, view: ArtworkView) -> Any:
        """Conditioning for this view; computed once per artwork change."""
        ...

    def describe(self, condition: Any) -> dict[str, Any]:
        """The musical decisions behind ``condition``, JSON-ready, for the timeline."""
        ...

    def start(self, condition: Any, seed: int, start_sample: int, previous: Any | None) -> Any:
        """A new stream state positioned at ``start_sample`` on the room timeline."""
        ...

    def generate(self, state: Any, condition: Any, frames: int) -> tuple[Generated, Any]:
        """The next ``frames`` of audio after ``state``, and the state after them."""
        ...


def make_generator(config: EngineConfig) -> Generator:
    """The generator named by ``config.generator``, built from its config section."""
    if config.generator == "sine":
        from engine.generators.sine import SineGenerator

        return SineGenerator(sample_rate=config.sample_rate, channels=config.channels)
    if config.generator == "diffusion":
        from engine.diffusion.generator import DiffusionGenerator

        return DiffusionGenerator.from_config(config)
    from engine.procedural import ProceduralGenerator

    return ProceduralGenerator(config.procedural, config.sample_rate, config.channels)
