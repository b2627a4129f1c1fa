"""Few-step samplers: every step count runs, the known region is kept, seeds are honoured."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="needs the diffusion extra, which make test installs")
pytest.importorskip("diffusers", reason="needs the diffusion extra, which make test installs")

from engine.generators.diffusion.model import AUDIOLDM2_SCHEDULER  # noqa: E402
from engine.generators.diffusion.samplers import FewStepSampler, guidance_embedding, sample  # noqa: E402
from engine.generators.diffusion.testing import NUMPY_COPY_WARNING  # noqa: E402

pytestmark = pytest.mark.filterwarnings(NUMPY_COPY_WARNING)

SCHEDULER = {"_class_name": "DDIMScheduler", **AUDIOLDM2_SCHEDULER}


TARGET = 0.5


def exact_denoiser(sampler: FewStepSampler):  # type: ignore[no-untyped-def]
    """The ideal epsilon-predictor for data that is always TARGET:
    x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps  =>  eps = (x_t - sqrt(a_t) TARGET) / sqrt(1 - a_t)."""
    alphas = sampler.scheduler.alphas_cumprod

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = alphas[int(t)]
        return (x - a.sqrt() * TARGET) / (1 - a).sqrt()

    return denoise


def toy_denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return x * 0.0


@pytest.mark.parametrize("kind", ["dpm_solver", "consistency"])
@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_every_step_count_runs_and_keeps_the_known_region(kind: str, steps: int) -> None:
    sampler = FewStepSampler(kind, SCHEDULER, steps)  # type: ignore[arg-type]
    noise = torch.randn(2, 8, 16, 4, generator=torch.Generator().manual_seed(0))
    known = torch.randn(2, 8, 4, 4, generator=torch.Generator().manual_seed(1))
    calls: list[float] = []
    ideal = exact_denoiser(sampler)

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        calls.append(float(t))
        return ideal(x, t)

    out = sample(sampler, denoise, noise, known,
                 generator=[torch.Generator().manual_seed(2), torch.Generator().manual_seed(3)])
    assert len(calls) == steps
    assert calls == sorted(calls, reverse=True)  # from noise toward data
    assert torch.equal(out[:, :, :4], known)
    assert torch.isfinite(out).all() and out.shape == noise.shape
    # The ideal denoiser's data is recovered in the unknown region, in any number of steps.
    torch.testing.assert_close(out[:, :, 4:], torch.full_like(out[:, :, 4:], TARGET),
                               rtol=0, atol=1e-3)


def test_known_region_shape_is_checked() -> None:
    sampler = FewStepSampler("dpm_solver", SCHEDULER, 2)
    with pytest.raises(ValueError, match="known region"):
        sample(sampler, toy_denoise, torch.zeros(1, 8, 16, 4), torch.zeros(1, 8, 4, 5))


def test_steps_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="steps"):
        FewStepSampler("dpm_solver", SCHEDULER, 9)


def test_guidance_embedding_is_sinusoidal() -> None:
    emb = guidance_embedding(4.0, 32, 3, torch.float32, "cpu")
    assert emb.shape == (3, 32)
    assert torch.allclose(emb[0], emb[2])
    assert not torch.allclose(emb[0], guidance_embedding(1.0, 32, 1, torch.float32, "cpu")[0])


def test_scheduler_config_from_a_model_folder(tmp_path: Path) -> None:
    (tmp_path / "scheduler_config.json").write_text(json.dumps(SCHEDULER))
    config = json.loads((tmp_path / "scheduler_config.json").read_text())
    sampler = FewStepSampler("dpm_solver", config, 4)
    assert len(sampler.set_timesteps("cpu")) == 4
    assert sampler.scheduler.config.algorithm_type == "dpmsolver++"


def _toy_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """A denoiser that depends on its input and the timestep, so every step matters."""
    return torch.tanh(x) * (0.5 + float(t) / 2000.0)


def test_consistency_step_matches_diffusers_lcm_scheduler() -> None:
    """Our LCM step (noise supplied, host scalars) walks as diffusers' LCMScheduler does."""
    from diffusers import LCMScheduler

    steps = 4
    sampler = FewStepSampler("consistency", SCHEDULER, steps)
    noise = torch.randn(2, 8, 16, 4, generator=torch.Generator().manual_seed(0))
    ours = sample(sampler, _toy_model, noise,
                  generator=[torch.Generator().manual_seed(2), torch.Generator().manual_seed(3)])

    reference = LCMScheduler.from_config({k: v for k, v in SCHEDULER.items()
                                          if not k.startswith("_")})
    reference.set_timesteps(steps)
    generators = [torch.Generator().manual_seed(2), torch.Generator().manual_seed(3)]
    latents = noise * reference.init_noise_sigma
    for t in reference.timesteps:
        latents = reference.step(_toy_model(latents, t), t, latents, generator=generators,
                                 return_dict=False)[0]
    torch.testing.assert_close(ours, latents, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["dpm_solver", "consistency"])
def test_pre_drawn_step_noise_is_the_generators_noise(kind: str) -> None:
    """Drawing each row's step noise up front (as the CUDA-graph window does) gives exactly
    what drawing it step by step from the same generators gives."""
    sampler = FewStepSampler(kind, SCHEDULER, 4)  # type: ignore[arg-type]
    noise = torch.randn(2, 8, 16, 4, generator=torch.Generator().manual_seed(0))
    known = torch.randn(2, 8, 4, 4, generator=torch.Generator().manual_seed(1))
    seeds = (5, 6)
    drawn = sample(sampler, _toy_model, noise, known,
                   generator=[torch.Generator().manual_seed(s) for s in seeds])
    rows = [torch.Generator().manual_seed(s) for s in seeds]
    step_noise = torch.stack([
        torch.cat([torch.randn(1, 8, 16, 4, generator=g) for g in rows])
        for _ in range(sampler.stochastic_steps)]) if sampler.stochastic_steps else \
        torch.zeros(0, 2, 8, 16, 4)
    given = sample(sampler, _toy_model, noise, known, step_noise=step_noise)
    assert torch.equal(drawn, given)
    with pytest.raises(ValueError, match="step_noise"):
        sample(sampler, _toy_model, noise, known, step_noise=torch.zeros(7, 2, 8, 16, 4))
