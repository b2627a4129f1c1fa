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

from typing import Protocol

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
