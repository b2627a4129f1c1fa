"""What runs the networks of the diffusion generator: the ``Backend`` protocol and eager torch.

Where it sits in the flow: the generator's window program calls
``backend.unet`` once per sampling step (via the sampler's denoiser) and
``backend.decode`` (VAE decode and vocoder) once per window. The torch
backend here runs on the device the model is loaded on; on CUDA the
generator captures whole windows around it as CUDA graphs
(:mod:`engine.generators.diffusion.graphs`) and may run its UNet through
``torch.compile`` (:func:`compile_unet`). The ONNX Runtime backend is
:mod:`engine.generators.diffusion.onnx_backend`.
"""

from __future__ import annotations

import time
from typing import Protocol

import numpy as np
import torch

from engine.generators.diffusion.model import LoadedModel


class Backend(Protocol):
    """Runs the networks for a batch of windows (batch first, static shapes)."""

    def unet(self, sample: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor,
             support: torch.Tensor, timestep_cond: torch.Tensor | None) -> torch.Tensor:
        """The UNet's prediction for ``sample`` at ``t``, under ``tokens`` and ``support``."""
        ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (batch, C, frames, bins) -> waveform (batch, samples) at the model rate."""
        ...


class TorchBackend:
    """Eager torch, on whatever device the model is loaded on. (On CUDA the generator
    captures whole windows around it as graphs:
    :class:`engine.generators.diffusion.graphs.CudaGraphProgram`.)"""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model

    def unet(self, sample: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor,
             support: torch.Tensor, timestep_cond: torch.Tensor | None) -> torch.Tensor:
        return self.model.unet(sample, t, encoder_hidden_states=tokens,
                               encoder_hidden_states_1=support, timestep_cond=timestep_cond,
                               return_dict=False)[0]

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        model = self.model
        mel = model.vae.decode(latents / model.vae.config.scaling_factor, return_dict=False)[0]
        return model.vocoder(mel.squeeze(1))


class SimulatedBackend:
    """A GPU's timing on a CPU, for benchmarks only (``backend = "simulated"``).

    The UNet's prediction is zeros; the decode waits as long as one window took on
    a measured GPU at this batch size (``window_ms``, bucket -> ms: linear between the
    points and beyond the largest, the smallest's time below it, proportional to the
    batch with one point) and returns quiet noise. Everything around it (conditioning,
    the sampler's arithmetic, crossfades, resampling, the engine's scheduling) runs
    as it does in a room, so ``bench rooms`` shows what a GPU engine would do with
    that GPU's window times. A room never uses it: it plays noise.
    """

    def __init__(self, window_ms: dict[int, float], window_samples: int) -> None:
        points = sorted(window_ms.items())
        self.sizes = np.array([size for size, _ in points], float)
        self.times = np.array([ms for _, ms in points], float)
        self.window_samples = window_samples
        self._noise = torch.Generator().manual_seed(0)

    def window_s(self, batch: int) -> float:
        """One window's wait at ``batch`` rows, in seconds."""
        sizes, times = self.sizes, self.times
        if len(sizes) == 1:
            return float(times[0] * batch / sizes[0]) / 1e3
        if batch <= sizes[-1]:
            return float(np.interp(batch, sizes, times)) / 1e3
        slope = (times[-1] - times[-2]) / (sizes[-1] - sizes[-2])
        return float(times[-1] + slope * (batch - sizes[-1])) / 1e3

    def unet(self, sample: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor,
             support: torch.Tensor, timestep_cond: torch.Tensor | None) -> torch.Tensor:
        return torch.zeros_like(sample)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        time.sleep(self.window_s(latents.shape[0]))
        return 1e-3 * torch.randn((latents.shape[0], self.window_samples),
                                  generator=self._noise)


def compile_unet(model: LoadedModel, mode: str) -> None:
    """Run ``model``'s UNet through ``torch.compile`` (inductor, static shapes), once.

    The compiled function compiles per input shape at its first call; the
    window program's warm-up before a CUDA graph capture is that call, so the
    graph records inductor's fused kernels.
    """
    if getattr(model.unet, "_art2mus_compiled", None) == mode:
        return
    # The class's forward, bound: another mode replaces a compiled one instead of wrapping it.
    model.unet.forward = torch.compile(model.unet.__class__.forward.__get__(model.unet),
                                       mode=mode, dynamic=False)
    model.unet._art2mus_compiled = mode
