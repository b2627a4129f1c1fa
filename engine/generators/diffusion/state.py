"""Stream state and conditioning types of the diffusion generator.

Where they sit in the flow (see :mod:`engine.generators.diffusion.generator`):
``prepare`` makes a :class:`DiffusionCondition` once per artwork, ``start``
a :class:`DiffusionState` per stream, and every window reads and replaces
that state; :class:`WindowPlan` holds the static window sizes all of them
share. Each type checks its own shapes on construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from engine.generators.diffusion.config import DiffusionConfig
from engine.generators.diffusion.loudness import LevelState
from engine.generators.diffusion.model import LoadedModel
from ground.errors import ConfigError


@dataclass(frozen=True)
class DiffusionCondition:
    """Cross-attention tokens for one artwork (or the empty wall), computed once."""

    key: str
    tokens: torch.Tensor  # (1, generated_tokens, lm_width)
    empty: bool
    embedding_norm: float

    def __post_init__(self) -> None:
        if self.tokens.ndim != 3 or self.tokens.shape[0] != 1:
            raise ValueError(f"tokens must be (1, tokens, width), got {tuple(self.tokens.shape)}")


@dataclass(frozen=True)
class WindowPlan:
    """Sizes of one model window, in latent frames and in model-rate samples."""

    window_frames: int
    overlap_frames: int
    latent_bins: int
    latent_channels: int
    samples_per_frame: int
    model_rate: int

    @property
    def hop_frames(self) -> int:
        return self.window_frames - self.overlap_frames

    @property
    def window_samples(self) -> int:
        return self.window_frames * self.samples_per_frame

    @property
    def overlap_samples(self) -> int:
        return self.overlap_frames * self.samples_per_frame

    @property
    def hop_samples(self) -> int:
        return self.hop_frames * self.samples_per_frame

    @property
    def hop_s(self) -> float:
        return self.hop_samples / self.model_rate

    @classmethod
    def for_model(cls, model: LoadedModel, config: DiffusionConfig) -> WindowPlan:
        """The plan for ``config``'s window/overlap on ``model``; ConfigError naming the field."""
        fps = model.spec.latent_frames_per_second
        multiple = model.unet_downsample
        window = round(config.window_s * fps)
        if window < multiple or window % multiple or abs(window - config.window_s * fps) > 1e-6:
            raise ConfigError(
                f"engine.diffusion.window_s: expected a multiple of {multiple / fps:g} s "
                f"({multiple} latent frames at {fps:g}/s) for {model.folder}, "
                f"got {config.window_s}")
        overlap = round(config.overlap_s * fps)
        if overlap < 1 or abs(overlap - config.overlap_s * fps) > 1e-6 or 2 * overlap > window:
            raise ConfigError(
                f"engine.diffusion.overlap_s: expected a whole number of latent frames "
                f"(1/{fps:g} s), at most half of window_s ({config.window_s}), "
                f"got {config.overlap_s}")
        return cls(window, overlap, model.latent_bins, model.latent_channels,
                   model.samples_per_latent_frame, model.spec.sample_rate)


@dataclass
class DiffusionState:
    """One room's stream: where it is, what it keeps for continuity, what is buffered.

    ``known`` holds the last window's overlap latents (the next window's known
    region); ``tail`` the audio of that overlap at the model rate, emitted
    after it is crossfaded with the next window's start; ``buffer`` output-rate
    frames generated but not yet returned; ``level`` the loudness follower's
    state (:mod:`engine.generators.diffusion.loudness`).
    """

    seed: int
    start_sample: int
    position: int
    windows: int
    plan: WindowPlan
    channels: int
    known: torch.Tensor | None = None
    tail: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    buffer: np.ndarray | None = None
    resampler: Any | None = None
    from_tokens: torch.Tensor | None = None
    tokens: torch.Tensor | None = None
    level: LevelState = field(default_factory=LevelState)

    def __post_init__(self) -> None:
        if self.buffer is None:
            self.buffer = np.zeros((0, self.channels), np.float32)
        plan = self.plan
        if self.known is not None and tuple(self.known.shape) != (
                1, plan.latent_channels, plan.overlap_frames, plan.latent_bins):
            raise ValueError(f"known latents must be (1, {plan.latent_channels}, "
                             f"{plan.overlap_frames}, {plan.latent_bins}), got "
                             f"{tuple(self.known.shape)}")
        if self.tail.shape not in ((0,), (plan.overlap_samples,)):
            raise ValueError(f"tail must be empty or ({plan.overlap_samples},), "
                             f"got {self.tail.shape}")
        if self.buffer.ndim != 2 or self.buffer.shape[1] != self.channels:
            raise ValueError(f"buffer must be (frames, {self.channels}), got {self.buffer.shape}")
        if (self.known is None) != (self.tail.size == 0):
            raise ValueError("known latents and audio tail must be both set or both empty")
