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

:func:`sample` is written so that a whole call can be captured as one CUDA
graph (the engine does, per batch bucket): the scheduler walks host-side
timesteps (its bookkeeping is then host arithmetic, baked into the graph as
constants), the model sees a device copy of them made once per device, the
known region is noised with host scalars, and the consistency sampler's
per-step noise can be passed in (``step_noise``) instead of drawn inside.
Nothing in the loop copies from host memory or waits for the device.
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
        self._model_timesteps: dict[str, torch.Tensor] = {}
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

    def set_timesteps(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Reset the scheduler for a new sample; the timesteps it will visit."""
        self.scheduler.set_timesteps(self.steps, device=device)
        return self.scheduler.timesteps

    def model_timesteps(self, device: torch.device | str) -> torch.Tensor:
        """The timesteps as the model sees them, on ``device`` (copied once per device)."""
        key = str(device)
        if key not in self._model_timesteps:
            self._model_timesteps[key] = self.set_timesteps("cpu").to(device)
        return self._model_timesteps[key]

    @property
    def stochastic_steps(self) -> int:
        """How many steps draw fresh noise (the consistency sampler's, all but the last)."""
        return self.steps - 1 if self.kind == "consistency" else 0

    def noise_level(self, t: torch.Tensor) -> tuple[float, float]:
        """(alpha, sigma) of timestep ``t`` (host scalars): x_t = alpha x_0 + sigma eps."""
        if self.kind == "dpm_solver":
            scheduler = self.scheduler
            index = scheduler.index_for_timestep(t)
            alpha, sigma = scheduler._sigma_to_alpha_sigma_t(scheduler.sigmas[index])
            return float(alpha), float(sigma)
        alpha_bar = float(self.scheduler.alphas_cumprod[int(t)])
        return alpha_bar ** 0.5, (1.0 - alpha_bar) ** 0.5

    def scale_model_input(self, latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.scheduler.scale_model_input(latents, t)

    def step(self, model_output: torch.Tensor, t: torch.Tensor, latents: torch.Tensor,
             noise: torch.Tensor | None = None) -> torch.Tensor:
        """One step from ``t`` to the next timestep (the clean sample after the last).

        ``noise`` re-noises the consistency sampler's denoised sample to the
        next level (ignored on its last step and by the deterministic solver).
        """
        if self.kind == "consistency":
            return self._consistency_step(model_output, t, latents, noise)
        return self.scheduler.step(model_output, t, latents, return_dict=False)[0]

    def _consistency_step(self, model_output: torch.Tensor, t: torch.Tensor,
                          latents: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """diffusers' ``LCMScheduler.step`` with the noise supplied rather than drawn.

        ``LCMScheduler.step`` draws its noise itself; the engine draws it on the host, per
        room, so that a window is a pure function of tensors (one CUDA graph). This is that
        step's arithmetic, and it leaves the scheduler's (private) step counter alone: the
        step's place in the schedule comes from ``t`` through the public
        ``index_for_timestep``, exact because LCM's timesteps are distinct.
        """
        scheduler = self.scheduler
        index = scheduler.index_for_timestep(t)
        alpha_bar = float(scheduler.alphas_cumprod[int(t)])
        last = index == scheduler.num_inference_steps - 1
        c_skip, c_out = (float(c) for c in
                         scheduler.get_scalings_for_boundary_condition_discrete(t))
        prediction = scheduler.config.prediction_type
        if prediction == "epsilon":
            x0 = (latents - (1.0 - alpha_bar) ** 0.5 * model_output) / alpha_bar ** 0.5
        elif prediction == "v_prediction":
            x0 = alpha_bar ** 0.5 * latents - (1.0 - alpha_bar) ** 0.5 * model_output
        elif prediction == "sample":
            x0 = model_output
        else:
            raise ValueError(f"prediction_type must be epsilon, v_prediction or sample, "
                             f"got {prediction!r}")
        if scheduler.config.clip_sample:
            limit = scheduler.config.clip_sample_range
            x0 = x0.clamp(-limit, limit)
        denoised = c_out * x0 + c_skip * latents
        if last:
            return denoised
        if noise is None:
            raise ValueError("the consistency sampler needs noise for every step but the last")
        next_t = int(scheduler.timesteps[index + 1])
        alpha_next = float(scheduler.alphas_cumprod[next_t]) if next_t >= 0 \
            else float(scheduler.final_alpha_cumprod)
        return alpha_next ** 0.5 * denoised + (1.0 - alpha_next) ** 0.5 * noise.to(denoised.dtype)

    def add_noise(self, clean: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``clean`` noised to the level of timestep ``t``."""
        alpha, sigma = self.noise_level(t)
        return alpha * clean + sigma * noise

    @property
    def init_noise_sigma(self) -> float:
        return float(self.scheduler.init_noise_sigma)


def guidance_embedding(scale: float, dim: int, batch: int, dtype: torch.dtype,
                       device: torch.device | str) -> torch.Tensor:
    """The LCM student's guidance-scale embedding for ``batch`` rows at one ``scale``."""
    return guidance_embeddings(torch.full((batch,), scale), dim).to(device=device, dtype=dtype)


def guidance_embeddings(scales: torch.Tensor, dim: int) -> torch.Tensor:
    """Per-row LCM guidance embedding (sinusoidal of w - 1; Luo et al., 2023), float32 on
    the host: what the student's ``timestep_cond`` takes, in sampling and in distillation."""
    w = (scales.float().cpu() - 1.0) * 1000.0
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32)
                      * -(torch.log(torch.tensor(10000.0)) / (half - 1)))
    angles = w[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


def sample(sampler: FewStepSampler, denoise: Denoise, noise: torch.Tensor,
           known: torch.Tensor | None = None,
           generator: torch.Generator | list[torch.Generator] | None = None,
           step_noise: torch.Tensor | None = None) -> torch.Tensor:
    """Denoise ``noise`` (batch, channels, frames, bins) with ``sampler``, keeping ``known``.

    ``known`` (batch, channels, k, bins), if given, fixes the first ``k`` latent
    frames (the overlap with the previous window). The consistency sampler's
    per-step noise is ``step_noise`` (stochastic_steps, *noise.shape) where
    given, else drawn from ``generator`` (one, or one per batch item) step by
    step, in the same order as pre-drawing it row by row would.
    """
    timesteps = sampler.set_timesteps("cpu")
    model_timesteps = sampler.model_timesteps(noise.device)
    latents = noise * sampler.init_noise_sigma
    k = 0 if known is None else known.shape[2]
    if known is not None and (known.shape[:2] != noise.shape[:2]
                              or known.shape[3] != noise.shape[3] or k >= noise.shape[2]):
        raise ValueError(f"known region {tuple(known.shape)} does not fit latents "
                         f"{tuple(noise.shape)}")
    if step_noise is not None and tuple(step_noise.shape) != (sampler.stochastic_steps,
                                                              *noise.shape):
        raise ValueError(f"step_noise {tuple(step_noise.shape)} does not fit "
                         f"{sampler.stochastic_steps} steps of {tuple(noise.shape)}")
    for index, t in enumerate(timesteps):
        if known is not None:
            latents = latents.clone()
            latents[:, :, :k] = sampler.add_noise(known, noise[:, :, :k], t)
        model_input = sampler.scale_model_input(latents, t)
        model_output = denoise(model_input, model_timesteps[index])
        fresh = None
        if index < sampler.stochastic_steps:
            fresh = step_noise[index] if step_noise is not None \
                else draw_noise(noise.shape, generator).to(noise.device)
        latents = sampler.step(model_output, t, latents, fresh)
    if known is not None:
        latents = latents.clone()
        latents[:, :, :k] = known
    return latents


def draw_noise(shape: torch.Size | tuple[int, ...],
               generator: torch.Generator | list[torch.Generator] | None) -> torch.Tensor:
    """Standard normal float32 noise on the host; with a list, row ``i`` from ``generator[i]``."""
    if isinstance(generator, list):
        if len(generator) != shape[0]:
            raise ValueError(f"expected {shape[0]} generators, got {len(generator)}")
        return torch.cat([torch.randn((1, *shape[1:]), generator=g) for g in generator])
    return torch.randn(tuple(shape), generator=generator)
