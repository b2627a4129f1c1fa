"""The noise schedule seen from training: forward noising, targets, SNR weights, x0/eps.

Written against the model's own ``scheduler_config`` (``alphas_cumprod`` as
diffusers' DDIM/DDPM schedulers compute it, and its ``prediction_type``), so
training and sampling agree on what the UNet predicts:

- ``epsilon``: the noise (Ho et al., 2020);
- ``v_prediction``: ``v = sqrt(a) eps - sqrt(1 - a) x0`` (Salimans & Ho, 2022);
- ``sample``: ``x0`` itself.

Min-SNR-gamma loss weighting (Hang et al., 2023) rescales each timestep's
loss by ``min(SNR, gamma)`` relative to what the prediction type implicitly
weights: ``/ SNR`` for epsilon, ``/ (SNR + 1)`` for v, ``1`` for x0.
"""

from __future__ import annotations

from typing import Any

import torch


class NoiseSchedule:
    """``alphas_cumprod`` of the training schedule on one device, and its prediction type."""

    def __init__(self, scheduler_config: dict[str, Any], device: torch.device | str) -> None:
        from diffusers import DDIMScheduler

        config = {k: v for k, v in scheduler_config.items() if not k.startswith("_")}
        scheduler = DDIMScheduler.from_config(config)
        self.prediction_type: str = scheduler.config.prediction_type
        if self.prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"prediction_type must be epsilon, v_prediction or sample, got "
                             f"{self.prediction_type!r}")
        self.num_train_timesteps = int(scheduler.config.num_train_timesteps)
        self.alphas_cumprod = scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)

    def _coefficients(self, t: torch.Tensor, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
        alpha = self.alphas_cumprod[t].reshape(-1, *([1] * (ndim - 1)))
        return alpha.sqrt(), (1.0 - alpha).sqrt()

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(a_t) x0 + sqrt(1 - a_t) noise."""
        a, s = self._coefficients(t, x0.ndim)
        return a * x0 + s * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the UNet should output at ``t`` for this ``x0`` and ``noise``."""
        if self.prediction_type == "epsilon":
            return noise
        if self.prediction_type == "v_prediction":
            a, s = self._coefficients(t, x0.ndim)
            return a * noise - s * x0
        return x0

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        alpha = self.alphas_cumprod[t]
        return alpha / (1.0 - alpha)

    def min_snr_weights(self, t: torch.Tensor, gamma: float) -> torch.Tensor:
        """Per-sample loss weights of Min-SNR-gamma for this prediction type."""
        snr = self.snr(t)
        clipped = torch.minimum(snr, torch.full_like(snr, gamma))
        if self.prediction_type == "epsilon":
            return clipped / snr
        if self.prediction_type == "v_prediction":
            return clipped / (snr + 1.0)
        return clipped

    def x0_and_eps(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """The model output at ``t`` read as (predicted x0, predicted noise)."""
        a, s = self._coefficients(t, x_t.ndim)
        if self.prediction_type == "epsilon":
            return (x_t - s * output) / a, output
        if self.prediction_type == "v_prediction":
            return a * x_t - s * output, a * output + s * x_t
        return output, (x_t - a * output) / s


def boundary_scalings(t: torch.Tensor, timestep_scaling: float, sigma_data: float = 0.5
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Consistency-model skip/out coefficients (Song et al., 2023), as LCMScheduler uses them.

    ``f(x, t) = c_skip(t) x + c_out(t) x0_pred``; c_skip(0) = 1, c_out(0) = 0.
    """
    scaled = t.float() * timestep_scaling
    c_skip = sigma_data**2 / (scaled**2 + sigma_data**2)
    c_out = scaled / (scaled**2 + sigma_data**2) ** 0.5
    return c_skip, c_out
