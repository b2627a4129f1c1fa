"""Few-step samplers: how to walk the noise schedule, separate from the model.

A sampler wraps a diffusers scheduler (``set_timesteps()``, then ``step()``)
and knows nothing of UNets: :func:`sample` calls a ``denoise(latents, t)``
function supplied by the generator (eager torch, a CUDA graph or ONNX
Runtime). Two kinds:

- ``dpm_solver``: DPM-Solver++ (2M) (Lu et al., 2022) on the original model,
  1-8 steps; optional classifier-free guidance (Ho & Salimans, 2022), which
  the denoiser implements as a second, unconditional pass per step.
- ``consistency``: the LCM multistep sampler (Luo et al., 2023) for a
  distilled student whose UNet takes the guidance scale as an embedding
  (``timestep_cond``): guidance is folded in, one pass per step.

:func:`sample` also keeps a known region of latent frames (the overlap with
the previous window) while sampling, as diffusers' inpainting pipelines do
for a non-inpainting UNet (RePaint-style replacement, Lugmayr et al., 2022):
before every model call those frames are set to the known latents noised to
the current level, and at the end to the known latents themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
SamplerKind = Literal["dpm_solver", "consistency"]


class FewStepSampler:
    """A diffusers scheduler configured for few-step sampling, by kind."""

    def __init__(self, kind: SamplerKind, scheduler_config: dict[str, Any], steps: int,
                 guidance_scale: float = 1.0, max_steps: int = 8) -> None:
        from diffusers import DPMSolverMultistepScheduler, LCMScheduler

        # The engine samples in 1-8 steps; evaluation (a teacher reference) may ask for more.
        if not 1 <= steps <= max_steps:
            raise ValueError(f"steps must be in 1..{max_steps}, got {steps}")
        self.kind = kind
        self.steps = steps
        self.guidance_scale = guidance_scale
        config = {k: v for k, v in scheduler_config.items() if not k.startswith("_")}
        if kind == "dpm_solver":
            self.scheduler = DPMSolverMultistepScheduler.from_config(
                config, algorithm_type="dpmsolver++", solver_order=2, lower_order_final=True,
                final_sigmas_type="zero")
        elif kind == "consistency":
            self.scheduler = LCMScheduler.from_config(config)
        else:
            raise ValueError(f"sampler must be 'dpm_solver' or 'consistency', got {kind!r}")

    @property
    def unconditional_pass(self) -> bool:
        """True when each step needs an unconditional model pass (CFG on the solver)."""
        return self.kind == "dpm_solver" and self.guidance_scale > 1.0

    def set_timesteps(self, device: torch.device | str) -> torch.Tensor:
        """Reset the scheduler for a new sample; the timesteps it will visit."""
        self.scheduler.set_timesteps(self.steps, device=device)
        return self.scheduler.timesteps

    def scale_model_input(self, latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.scheduler.scale_model_input(latents, t)

    def step(self, model_output: torch.Tensor, t: torch.Tensor, latents: torch.Tensor,
             generator: torch.Generator | list[torch.Generator] | None) -> torch.Tensor:
        """One step from ``t`` to the next timestep (the clean sample after the last)."""
        if self.kind == "consistency":
            # LCM's prev_sample is the denoised sample re-noised to the next level (with
            # ``generator``'s noise), and the denoised sample itself after the last step.
            prev_sample, _ = self.scheduler.step(model_output, t, latents, generator=generator,
                                                 return_dict=False)
            return prev_sample
        return self.scheduler.step(model_output, t, latents, generator=generator,
                                   return_dict=False)[0]

    def add_noise(self, clean: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``clean`` noised to the level of timestep ``t``."""
        return self.scheduler.add_noise(clean, noise, t.reshape(1))

    @property
    def init_noise_sigma(self) -> float:
        return float(self.scheduler.init_noise_sigma)


def guidance_embedding(scale: float, dim: int, batch: int, dtype: torch.dtype,
                       device: torch.device | str) -> torch.Tensor:
    """The LCM student's guidance-scale embedding (sinusoidal of w - 1; Luo et al., 2023)."""
    w = torch.full((batch,), (scale - 1.0) * 1000.0)
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32)
                      * -(torch.log(torch.tensor(10000.0)) / (half - 1)))
    angles = w[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb.to(device=device, dtype=dtype)


def sample(sampler: FewStepSampler, denoise: Denoise, noise: torch.Tensor,
           known: torch.Tensor | None = None,
           generator: torch.Generator | list[torch.Generator] | None = None) -> torch.Tensor:
    """Denoise ``noise`` (batch, channels, frames, bins) with ``sampler``, keeping ``known``.

    ``known`` (batch, channels, k, bins), if given, fixes the first ``k`` latent
    frames (the overlap with the previous window). ``generator`` (one, or one per
    batch item) feeds the stochastic part of the consistency sampler.
    """
    timesteps = sampler.set_timesteps(noise.device)
    latents = noise * sampler.init_noise_sigma
    k = 0 if known is None else known.shape[2]
    if known is not None and (known.shape[:2] != noise.shape[:2]
                              or known.shape[3] != noise.shape[3] or k >= noise.shape[2]):
        raise ValueError(f"known region {tuple(known.shape)} does not fit latents "
                         f"{tuple(noise.shape)}")
    for t in timesteps:
        if known is not None:
            latents = latents.clone()
            latents[:, :, :k] = sampler.add_noise(known, noise[:, :, :k], t)
        model_input = sampler.scale_model_input(latents, t)
        model_output = denoise(model_input, t)
        latents = sampler.step(model_output, t, latents, generator)
    if known is not None:
        latents = latents.clone()
        latents[:, :, :k] = known
    return latents
