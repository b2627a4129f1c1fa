"""The visual conditioner: an image embedding -> the UNet's cross-attention tokens.

As published for Art2Mus (Rinaldi et al., 2024), on AudioLDM2 (Liu et al., 2023)::

    image embedding (1024-d, e.g. ImageBind)
      -> Linear(1024, 1536) -> Tanh -> Linear(1536, k * 768)   (projection1, projection2)
      -> k prefix tokens into GPT-2
      -> 8 "language of audio" tokens, generated autoregressively on hidden
         states (as AudioLDM2Pipeline.generate_language_model)
      -> the UNet's 768-wide cross-attention stream.

The 1024-wide stream gets a fixed support-prompt embedding stored with the
model. This runs once per artwork change (``DiffusionGenerator.prepare``); the
room session caches the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from ground.errors import InputError


class ProjectionShape(Protocol):
    """The sizes a projection checkpoint must have (a model's ``ModelSpec`` has them)."""

    @property
    def embedding_dim(self) -> int: ...  # read-only: ModelSpec is frozen
    @property
    def prefix_tokens(self) -> int: ...
    @property
    def generated_tokens(self) -> int: ...
    @property
    def prefix_special_tokens(self) -> bool: ...

PROJECTION_KEYS = ("projection1.weight", "projection1.bias",
                   "projection2.weight", "projection2.bias")


class VisualConditioner(nn.Module):
    """Image embedding -> GPT-2 prefix tokens (the published projection), then LOA tokens."""

    def __init__(self, embedding_dim: int = 1024, lm_width: int = 768, prefix_tokens: int = 1,
                 hidden_dim: int = 1536, generated_tokens: int = 8,
                 prefix_special_tokens: bool = False) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.lm_width = lm_width
        self.prefix_tokens = prefix_tokens
        self.generated_tokens = generated_tokens
        self.prefix_special_tokens = prefix_special_tokens
        # Names match the published checkpoint's state dict (projection1.*, projection2.*).
        self.projection1 = nn.Linear(embedding_dim, hidden_dim)
        self.act1 = nn.Tanh()
        self.projection2 = nn.Linear(hidden_dim, prefix_tokens * lm_width)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """(batch, embedding_dim) -> prefix tokens (batch, prefix_tokens, lm_width)."""
        hidden = self.projection2(self.act1(self.projection1(embedding)))
        return hidden.reshape(embedding.shape[0], self.prefix_tokens, self.lm_width)

    def tokens(self, embedding: torch.Tensor, language_model: nn.Module,
               projection_model: nn.Module | None = None) -> torch.Tensor:
        """(batch, embedding_dim) -> generated tokens (batch, generated_tokens, lm_width)."""
        prefix = self(embedding)
        if self.prefix_special_tokens and projection_model is not None:
            batch = prefix.shape[0]
            sos_embed: torch.Tensor = projection_model.sos_embed  # type: ignore[assignment]
            eos_embed: torch.Tensor = projection_model.eos_embed  # type: ignore[assignment]
            sos = sos_embed.to(prefix)[None, None].expand(batch, 1, -1)
            eos = eos_embed.to(prefix)[None, None].expand(batch, 1, -1)
            prefix = torch.cat([sos, prefix, eos], dim=1)
        return generate_language_tokens(language_model, prefix, self.generated_tokens)

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor], spec: ProjectionShape, lm_width: int,
                        source: str = "<state dict>") -> VisualConditioner:
        """Build from the published checkpoint format, checking keys and shapes."""
        missing = [k for k in PROJECTION_KEYS if k not in state]
        if missing:
            raise InputError(f"image projection {source}: missing {missing}; expected keys "
                             f"{list(PROJECTION_KEYS)}, got {sorted(state)}")
        hidden, embedding_dim = state["projection1.weight"].shape
        expected = (hidden, spec.embedding_dim)
        if tuple(state["projection1.weight"].shape) != expected:
            raise InputError(f"image projection {source}: projection1.weight expected "
                             f"{expected} (embedding_dim {spec.embedding_dim}), got "
                             f"{tuple(state['projection1.weight'].shape)}")
        expected = (spec.prefix_tokens * lm_width, hidden)
        if tuple(state["projection2.weight"].shape) != expected:
            raise InputError(f"image projection {source}: projection2.weight expected "
                             f"{expected} ({spec.prefix_tokens} prefix tokens x {lm_width}), got "
                             f"{tuple(state['projection2.weight'].shape)}")
        module = cls(spec.embedding_dim, lm_width, spec.prefix_tokens, int(hidden),
                     spec.generated_tokens, spec.prefix_special_tokens)
        module.load_state_dict({k: state[k] for k in PROJECTION_KEYS})
        return module


def generate_language_tokens(language_model: nn.Module, inputs_embeds: torch.Tensor,
                             new_tokens: int) -> torch.Tensor:
    """Autoregress GPT-2 on hidden states: each step appends the last position's output.

    Same recurrence as ``AudioLDM2Pipeline.generate_language_model`` (there with
    a KV cache; here the prefix is a few tokens, so recomputing is as cheap and
    keeps shapes static per step).
    """
    embeds = inputs_embeds
    for _ in range(new_tokens):
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
        output = language_model(inputs_embeds=embeds, attention_mask=mask, use_cache=False,
                                return_dict=True)
        embeds = torch.cat([embeds, output.last_hidden_state[:, -1:, :]], dim=1)
    return embeds[:, -new_tokens:, :]


def load_projection_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The published projection checkpoint: safetensors, or a torch ``state_dict`` (.pt)."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"image projection checkpoint {file} does not exist")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(file))
        state: Any = torch.load(str(file), map_location="cpu", weights_only=True)
    except Exception as error:  # torch and safetensors raise assorted types
        raise InputError(f"unreadable image projection checkpoint {file}: {error}") from error
    if not isinstance(state, dict):
        raise InputError(f"image projection checkpoint {file}: expected a state dict, got "
                         f"{type(state).__name__}")
    return state


def check_embedding(embedding: np.ndarray, expected_dim: int, where: str) -> np.ndarray:
    """A (dim,) or (1, dim) float embedding as (1, dim) float32; InputError naming both shapes."""
    array = np.asarray(embedding)
    if array.ndim == 2 and array.shape[0] == 1:
        array = array[0]
    if array.shape != (expected_dim,):
        raise InputError(f"image embedding in {where}: expected shape ({expected_dim},), "
                         f"got {tuple(np.asarray(embedding).shape)}")
    if not np.all(np.isfinite(array)):
        raise InputError(f"image embedding in {where}: contains NaN or infinity")
    return array.astype(np.float32, copy=False)[None, :]
