"""The generators that make the music, and the factory that picks one by config.

- :mod:`engine.generators.procedural`: the embedded default (composer, GM
  SoundFont, effects); runs anywhere, needs no weights.
- :mod:`engine.generators.diffusion`: latent audio diffusion conditioned on the
  image embedding (AudioLDM2 layout, few-step samplers, CUDA graphs, ONNX).
- :mod:`engine.generators.sine`: a sine per artwork, the fake at the model seam.

What they all implement is in :mod:`engine.generators.base`; each imports it,
never this factory. The factory imports an implementation only when it is
chosen (the diffusion one brings torch).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from engine.generators.base import (
    BarSync,
    BatchGenerator,
    Generated,
    Generator,
    Request,
    RoomControls,
    can_batch,
    generate_many,
)

if TYPE_CHECKING:
    from engine.config import EngineConfig

__all__ = ["BarSync", "BatchGenerator", "Generated", "Generator", "Request", "RoomControls",
           "can_batch", "generate_many", "make_generator", "warm_up"]


def make_generator(config: EngineConfig) -> Generator:
    """The generator named by ``config.generator``, built from its config section."""
    if config.generator == "sine":
        from engine.generators.sine import SineGenerator

        return SineGenerator(sample_rate=config.sample_rate, channels=config.channels)
    if config.generator == "diffusion":
        from engine.generators.diffusion.generator import DiffusionGenerator

        return DiffusionGenerator.from_config(config)
    from engine.generators.procedural import ProceduralGenerator

    return ProceduralGenerator(config.procedural, config.sample_rate, config.channels)


def warm_up(generator: Generator, progress: Callable[[], None] | None = None) -> int:
    """Ready ``generator`` to serve rooms before the first one asks: where it has CUDA
    graphs, every batch bucket's are captured now (:meth:`DiffusionGenerator.warm_graphs`),
    ``progress`` called after each window so a role can keep beating. What it made (graphs
    captured); 0 for a generator with nothing to warm. A one-off render does not call it."""
    warm = getattr(generator, "warm_graphs", None)
    return int(warm(progress)) if callable(warm) else 0
