"""Fakes and fixtures for the diffusion generator, shipped with the package.

Tests, the tiny config and the benchmark build their models through these,
which go through the same ``save_pretrained`` -> :func:`load_model` path a
user's real model folder does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: The one third-party warning the diffusion stack raises under numpy 2 with this
#: torch: diffusers' DPM-Solver calls ``np.array(tensor)``. Tests filter exactly this.
NUMPY_COPY_WARNING = (
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


def tiny_model_dir(root: str | Path, student: bool = False, embedding_dim: int = 1024) -> Path:
    """A tiny model folder under ``root``, written once and reused (keyed by its options)."""
    from engine.generators.diffusion.model import SPEC_FILE, make_tiny_model

    folder = Path(root) / f"tiny-{'student' if student else 'solver'}-{embedding_dim}"
    if not (folder / SPEC_FILE).is_file():
        make_tiny_model(folder, embedding_dim=embedding_dim, student=student)
    return folder


def random_embedding(seed: int, dim: int = 1024) -> np.ndarray:
    """A unit-norm (1, dim) float32 embedding, like an image encoder's output."""
    vector = np.random.default_rng(seed).standard_normal((1, dim)).astype(np.float32)
    return vector / np.linalg.norm(vector)
