"""The embedded default generator: visual features -> musical decisions -> notes -> SoundFont audio.

It runs anywhere, needs no weights, and is built from three parts, each
replaceable on its own:

- :mod:`~engine.generators.procedural.mapping` turns the interpretable descriptor
  features (brightness, warmth, saturation, ... each in [0, 1]) into a frozen
  :class:`MusicalDecisions`: key and mode, tempo and meter, register,
  instruments per role, density, timbre brightness, experimental amount,
  reverb, voices. It follows what Art2Mus listeners reported: warm palettes
  sound brighter, abstract images more experimental, dark images lower and
  slower, saturated images more richly orchestrated. The module docstring
  holds the full feature -> decision -> why table.
- :mod:`~engine.generators.procedural.composer` writes phrases (4/8 bars, cadences),
  motif-based melody, bass, pads, arpeggios/texture and percussion. Each bar
  is a pure function of (decisions, seed, bar index), so composition is
  cheap, seekable and block-size independent; transitions bridge from the
  previous stream's bar grid with a pivot chord into the new key.
- :mod:`~engine.generators.procedural.render` plays the notes through TinySoundFont
  (General MIDI ``.sf2``), frame-accurately, then a streaming pedalboard chain
  (tone, reverb, compressor, loudness follower, limiter) to about -18 LUFS.

:class:`ProceduralGenerator` wires them into the
:class:`~engine.generators.Generator` protocol. It is imported lazily: the
config schema (``engine.config`` embeds :class:`ProceduralConfig`) is read by
every role, and capture or audio_out should not load the synth and effects.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.generators.procedural.config import ProceduralConfig
from engine.generators.procedural.mapping import MusicalDecisions, ambience_decisions, decide

if TYPE_CHECKING:
    from engine.generators.procedural.generator import ProceduralGenerator, ProceduralState

__all__ = [
    "MusicalDecisions",
    "ProceduralConfig",
    "ProceduralGenerator",
    "ProceduralState",
    "ambience_decisions",
    "decide",
]


def __getattr__(name: str) -> Any:
    """Load the generator (tinysoundfont, pedalboard) only when it is asked for."""
    if name in ("ProceduralGenerator", "ProceduralState"):
        from engine.generators.procedural import generator

        return getattr(generator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
