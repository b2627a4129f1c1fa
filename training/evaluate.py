"""Measuring a trained model: sample latents for embeddings, and compare them.

:func:`sample_latents` draws latents the way the engine does (the same
samplers and :func:`engine.generators.diffusion.samplers.sample`), but for a batch of
embeddings and any number of steps, so a teacher can be run at many steps as
the reference a few-step student is held to. The noise of item ``i`` comes
from ``seed + i``, so a teacher and a student can start from the same noise.

Measures: :func:`relative_mse` (student-vs-teacher error relative to the
reference's variance), :func:`latent_centroid` (the energy-weighted latent
frequency bin, the latent analogue of a spectral centroid: the VAE is
convolutional, so latent bins follow mel bins), :class:`LatentProbe` (a ridge
regression from latents to a known attribute, fitted on the data's own
latents), and :func:`spearman`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from engine.generators.diffusion.model import LoadedModel


def sample_latents(model: LoadedModel, embeddings: torch.Tensor, frames: int, *,
                   sampler: str | None = None, steps: int = 4, guidance_scale: float = 1.0,
                   seed: int = 0) -> torch.Tensor:
    """Latents (N, C, frames, bins) for N embeddings, sampled like the engine samples."""
    import torch

    from engine.generators.diffusion.samplers import FewStepSampler, guidance_embedding, sample

    kind = sampler or model.spec.sampler
    few_step = FewStepSampler(kind, model.scheduler_config, steps,  # type: ignore[arg-type]
                              guidance_scale, max_steps=max(8, steps))
    count = embeddings.shape[0]
    device, dtype = model.device, model.dtype
    noise = torch.cat([torch.randn((1, model.latent_channels, frames, model.latent_bins),
                                   generator=torch.Generator().manual_seed(seed + i))
                       for i in range(count)]).to(device, dtype)
    with torch.inference_mode():
        tokens = model.conditioner.tokens(embeddings.to(device, dtype), model.language_model,
                                          model.projection_model)
        support = model.support_prompt.expand(count, -1, -1)
        if few_step.unconditional_pass:
            uncond = model.unconditional_tokens.expand(count, -1, -1)
            both_tokens, both_support = torch.cat([uncond, tokens]), torch.cat([support, support])

            def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                out = model.unet(torch.cat([x, x]), t, encoder_hidden_states=both_tokens,
                                 encoder_hidden_states_1=both_support, return_dict=False)[0]
                eps_uncond, eps_cond = out.chunk(2)
                return eps_uncond + guidance_scale * (eps_cond - eps_uncond)
        else:
            timestep_cond = None
            if kind == "consistency":
                timestep_cond = guidance_embedding(guidance_scale,
                                                   model.spec.guidance_embedding_dim, count,
                                                   dtype, device)

            def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                return model.unet(x, t, encoder_hidden_states=tokens,
                                  encoder_hidden_states_1=support, timestep_cond=timestep_cond,
                                  return_dict=False)[0]

        generators = [torch.Generator().manual_seed(seed + 10_000 + i) for i in range(count)]
        latents = sample(few_step, denoise, noise,
                         generator=generators[0] if count == 1 else generators)
    return latents.float().cpu()


def relative_mse(estimate: torch.Tensor, reference: torch.Tensor) -> float:
    """Mean squared error of ``estimate`` divided by the variance of ``reference``."""
    return float(((estimate - reference) ** 2).mean() / reference.var())


def latent_centroid(latents: torch.Tensor, baseline: torch.Tensor) -> np.ndarray:
    """(N,) energy-weighted latent-bin index of each latent's deviation from ``baseline``.

    ``baseline`` (C, frames or 1, bins) is typically the data's mean latent:
    what every clip shares (the VAE's offset) is removed, what a pitch adds is kept.
    """
    energy = ((latents - baseline) ** 2).mean(dim=(1, 2)).double().numpy()  # (N, bins)
    bins = np.arange(energy.shape[1])
    return np.asarray((energy * bins).sum(1) / np.maximum(energy.sum(1), 1e-12))


class LatentProbe:
    """Ridge regression from time-averaged latents to an attribute (fitted on real latents)."""

    def __init__(self, latents: torch.Tensor, attribute: np.ndarray, alpha: float = 1.0) -> None:
        x = self._features(latents)
        self.mean = x.mean(0)
        self.scale = x.std(0) + 1e-8
        z = (x - self.mean) / self.scale
        y = np.asarray(attribute, np.float64)
        self.offset = float(y.mean())
        gram = z.T @ z + alpha * np.eye(z.shape[1])
        self.weights = np.linalg.solve(gram, z.T @ (y - self.offset))

    @staticmethod
    def _features(latents: torch.Tensor) -> np.ndarray:
        return latents.double().mean(dim=2).flatten(1).numpy()

    def __call__(self, latents: torch.Tensor) -> np.ndarray:
        """The attribute each latent reads as."""
        z = (self._features(latents) - self.mean) / self.scale
        return np.asarray(z @ self.weights + self.offset)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)
