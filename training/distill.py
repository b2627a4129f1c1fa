"""``art2mus distill``: latent consistency distillation of a few-step student.

Latent Consistency Distillation (Luo et al., 2023, after Song et al.'s
consistency models), as diffusers' ``train_lcm_distill_sd_wds.py`` does it,
under the visual conditioning:

- the student is the teacher's UNet with a guidance-scale embedding added
  (``time_cond_proj_dim``, its new projection zero-initialised so the student
  starts as the teacher); the engine's consistency sampler feeds it
  :func:`engine.generators.diffusion.samplers.guidance_embedding`, so classifier-free
  guidance is folded in: one UNet pass per step at any scale in
  [guidance_min, guidance_max], a range the student's spec records (the
  engine samples at its midpoint unless told a scale, and refuses one
  outside it). Equal bounds bake one scale in: the recipe for short runs,
  where the student has no time to learn how w changes its output (after
  50 steps a [1, 4] student's w = 1 and w = 4 samples differed by 0.001
  relative MSE, its teacher's by 0.03);
- per micro-batch: a timestep ``t`` on the DDIM grid the LCM sampler walks
  (``original_inference_steps`` points, skip ``k = T / points``), a guidance
  scale ``w``; the frozen teacher (conditional and unconditional pass,
  guided) takes one DDIM step of the probability-flow ODE from ``t`` to
  ``t - k``; the EMA target network's consistency function at ``t - k`` is
  the regression target of the student's at ``t`` (both with the
  skip/out boundary scalings LCMScheduler uses), L2 or pseudo-Huber;
- the target follows the student by EMA (decay ``ema_decay``).

The caches are the teacher's (same VAE, same encoder), so a teacher trained
by ``train-projection`` on the same data reuses them. Checkpoints hold the
student, the target, the optimizer and the step; resume is exact as for
projection training (:mod:`.loop`). The student is written as a model folder
whose ``art2mus_model.json`` says ``sampler = "consistency"``, so the engine's
``sampler = "auto"`` samples it in 1-8 LCM steps.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from training.loop import RunConfig
from training.projection import TrainingResult

if TYPE_CHECKING:
    import torch

    from engine.generators.diffusion.model import LoadedModel, ModelSpec
    from training.objectives import NoiseSchedule


@dataclass(frozen=True)
class DistillConfig(RunConfig):
    """Distillation settings (LCM's defaults where they apply)."""

    lr: float = 1e-5
    weight_decay: float = 0.0
    sample_steps: int = 4
    teacher_steps: int = 25
    guidance_min: float = 1.0
    guidance_max: float = 4.0
    guidance_embedding_dim: int = 256
    ddim_timesteps: int = 0
    ema_decay: float = 0.95
    loss: Literal["l2", "huber"] = "l2"
    huber_c: float = 0.001

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 1 <= self.sample_steps <= 8:
            raise ValueError(f"sample_steps must be in 1..8, got {self.sample_steps}")
        if self.teacher_steps < 1:
            raise ValueError(f"teacher_steps must be >= 1, got {self.teacher_steps}")
        if not 1.0 <= self.guidance_min <= self.guidance_max:
            raise ValueError(f"expected 1 <= guidance_min <= guidance_max, got "
                             f"{self.guidance_min}, {self.guidance_max}")
        if self.guidance_embedding_dim < 2:
            raise ValueError(f"guidance_embedding_dim must be >= 2, got "
                             f"{self.guidance_embedding_dim}")
        if self.ddim_timesteps < 0 or not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"expected ddim_timesteps >= 0 and ema_decay in [0, 1), got "
                             f"{self.ddim_timesteps}, {self.ema_decay}")
        if self.loss not in ("l2", "huber"):
            raise ValueError(f"loss must be 'l2' or 'huber', got {self.loss!r}")

    @property
    def reference_guidance(self) -> float:
        """The scale students are checked at against the teacher: mid-range."""
        return 0.5 * (self.guidance_min + self.guidance_max)


@dataclass(frozen=True)
class LcmGrid:
    """The DDIM timesteps LCM's sampler walks, and the skip between them."""

    timesteps: torch.Tensor  # (K,) long, ascending: k - 1, 2k - 1, ..., T - 1
    skip: int
    timestep_scaling: float

    @classmethod
    def for_schedule(cls, scheduler_config: dict[str, Any], points: int = 0) -> LcmGrid:
        """The grid LCMScheduler builds from this config (``points`` 0: its default)."""
        import torch
        from diffusers import LCMScheduler

        config = {k: v for k, v in scheduler_config.items() if not k.startswith("_")}
        lcm = LCMScheduler.from_config(config)
        count = points or int(lcm.config.original_inference_steps)
        total = int(lcm.config.num_train_timesteps)
        skip = total // count
        timesteps = torch.arange(1, count + 1) * skip - 1
        return cls(timesteps, skip, float(lcm.config.timestep_scaling))


def make_student_unet(teacher_unet: Any, guidance_dim: int) -> Any:
    """The teacher's UNet with a zero-initialised guidance embedding (starts equal to it)."""
    import torch
    from diffusers.pipelines.audioldm2.modeling_audioldm2 import AudioLDM2UNet2DConditionModel

    from ground.errors import InputError

    if teacher_unet.config.time_cond_proj_dim:
        raise InputError("--teacher: its UNet already has a guidance embedding "
                         f"(time_cond_proj_dim {teacher_unet.config.time_cond_proj_dim}); "
                         "distil from an original model, not a student")
    config = {**dict(teacher_unet.config), "time_cond_proj_dim": guidance_dim}
    student = AudioLDM2UNet2DConditionModel.from_config(config)
    missing, unexpected = student.load_state_dict(teacher_unet.state_dict(), strict=False)
    if unexpected or set(missing) != {"time_embedding.cond_proj.weight"}:
        raise RuntimeError(f"student/teacher UNet mismatch: missing {missing}, "
                           f"unexpected {unexpected}")
    with torch.no_grad():
        student.time_embedding.cond_proj.weight.zero_()
    return student.to(teacher_unet.device)  # from_config builds float32 already


def student_spec(teacher: ModelSpec, guidance_dim: int,
                 guidance_range: tuple[float, float]) -> ModelSpec:
    """The teacher's spec, marked as a consistency student distilled for ``guidance_range``.

    The engine samples the student at the range's midpoint unless told otherwise, and
    refuses a scale outside it.
    """
    return replace(teacher, sampler="consistency", guidance_embedding_dim=guidance_dim,
                   guidance_range=guidance_range)


def with_unet(model: LoadedModel, unet: Any, spec: ModelSpec) -> LoadedModel:
    """A view of ``model`` with another UNet and spec (for sampling a student in training)."""
    view = replace(model, unet=unet, spec=spec)
    view.unconditional_tokens = model.unconditional_tokens
    return view


def consistency_loss(model: LoadedModel, student: Any, target: Any, schedule: NoiseSchedule,
                     grid: LcmGrid, x0: torch.Tensor, embeddings: torch.Tensor,
                     generator: torch.Generator, config: DistillConfig, cast: Any
                     ) -> torch.Tensor:
    """One micro-batch of latent consistency distillation (random draws from ``generator``)."""
    import torch

    from engine.generators.diffusion.samplers import guidance_embeddings
    from training.objectives import boundary_scalings

    batch, device = x0.shape[0], x0.device
    noise = torch.randn(x0.shape, generator=generator).to(device)
    index = torch.randint(0, len(grid.timesteps), (batch,), generator=generator)
    scales = config.guidance_min + (config.guidance_max - config.guidance_min) * torch.rand(
        batch, generator=generator)
    start_t = grid.timesteps[index].to(device)
    prev_t = (start_t - grid.skip).clamp_min(0)
    w = (scales - 1.0).to(device)[:, None, None, None]
    w_embedding = guidance_embeddings(scales, config.guidance_embedding_dim).to(device)
    support = model.support_prompt.expand(batch, -1, -1)
    with torch.no_grad():
        tokens = model.conditioner.tokens(embeddings, model.language_model,
                                          model.projection_model)
        uncond = model.unconditional_tokens.expand(batch, -1, -1)
    x_t = schedule.add_noise(x0, noise, start_t)
    c_skip_start, c_out_start = (c[:, None, None, None] for c in
                                 boundary_scalings(start_t, grid.timestep_scaling))
    c_skip, c_out = (c[:, None, None, None] for c in
                     boundary_scalings(prev_t, grid.timestep_scaling))
    with cast:
        output = student(x_t, start_t, encoder_hidden_states=tokens,
                         encoder_hidden_states_1=support, timestep_cond=w_embedding,
                         return_dict=False)[0]
    pred_x0, _ = schedule.x0_and_eps(output.float(), x_t, start_t)
    prediction = c_skip_start * x_t + c_out_start * pred_x0
    with torch.no_grad():
        with cast:
            both = model.unet(torch.cat([x_t, x_t]), torch.cat([start_t, start_t]),
                              encoder_hidden_states=torch.cat([tokens, uncond]),
                              encoder_hidden_states_1=torch.cat([support, support]),
                              return_dict=False)[0].float()
        cond_out, uncond_out = both.chunk(2)
        cond_x0, cond_eps = schedule.x0_and_eps(cond_out, x_t, start_t)
        uncond_x0, uncond_eps = schedule.x0_and_eps(uncond_out, x_t, start_t)
        guided_x0 = cond_x0 + w * (cond_x0 - uncond_x0)
        guided_eps = cond_eps + w * (cond_eps - uncond_eps)
        # One DDIM step of the teacher's probability-flow ODE from t to t - k (Song et al., 2021).
        alpha_prev = schedule.alphas_cumprod[prev_t][:, None, None, None]
        x_prev = alpha_prev.sqrt() * guided_x0 + (1.0 - alpha_prev).sqrt() * guided_eps
        with cast:
            target_out = target(x_prev, prev_t, encoder_hidden_states=tokens,
                                encoder_hidden_states_1=support, timestep_cond=w_embedding,
                                return_dict=False)[0].float()
        target_x0, _ = schedule.x0_and_eps(target_out, x_prev, prev_t)
        goal = c_skip * x_prev + c_out * target_x0
    if config.loss == "huber":
        c = config.huber_c
        return (torch.sqrt((prediction - goal) ** 2 + c * c) - c).mean()
    return ((prediction - goal) ** 2).mean()


def ema_update(target: Any, student: Any, decay: float) -> None:
    """target <- decay * target + (1 - decay) * student (parameters); buffers copied."""
    import torch

    with torch.no_grad():
        target_params = list(target.parameters())
        student_params = list(student.parameters())
        torch._foreach_mul_(target_params, decay)
        torch._foreach_add_(target_params, student_params, alpha=1.0 - decay)
        for t_buffer, s_buffer in zip(target.buffers(), student.buffers(), strict=True):
            t_buffer.copy_(s_buffer)


def distill(teacher_dir: Path, data_dir: Path, out_dir: Path, config: DistillConfig | None = None,
            *, encoder: str = "descriptor", cache_dir: Path | None = None, resume: bool = False,
            progress: bool = True) -> TrainingResult:
    """Distil ``teacher_dir`` into a consistency student written to ``out_dir``."""
    import copy

    import torch

    from training.evaluate import relative_mse, sample_latents
    from training.loop import Progress, RunLog, Trainer, autocast, check_out_differs, run_steps
    from training.objectives import NoiseSchedule
    from training.projection import (
        draw_latents,
        load_training_model,
        prepare_data,
    )

    check_out_differs(teacher_dir, out_dir, "distill", "--teacher")
    config = config or DistillConfig()
    model = load_training_model(teacher_dir, config.device)
    train, val = prepare_data(model, data_dir, encoder, cache_dir, config, progress)
    student = make_student_unet(model.unet, config.guidance_embedding_dim)
    student.train().requires_grad_(True)
    target = copy.deepcopy(student).eval().requires_grad_(False)
    parameters = list(student.parameters())
    trainer = Trainer.open(
        "distill", config, out_dir, {"student": student, "target": target}, parameters,
        model.device, resume=resume, only_trainable=False,
        resume_fields=("guidance_min", "guidance_max", "guidance_embedding_dim",
                       "ddim_timesteps", "ema_decay", "loss", "huber_c"),
        source=f"--teacher {teacher_dir}",
        record={"teacher": str(teacher_dir), "data": str(data_dir), "encoder": encoder})
    schedule = NoiseSchedule(model.scheduler_config, model.device)
    grid = LcmGrid.for_schedule(model.scheduler_config, config.ddim_timesteps)
    spec = student_spec(model.spec, config.guidance_embedding_dim,
                        (config.guidance_min, config.guidance_max))
    start = trainer.start

    # The reference a student is held to during training: the teacher at many steps.
    reference: tuple[torch.Tensor, torch.Tensor] | None = None
    frames = train.latent_mean.shape[2]
    if val is not None and config.validate_every:
        rows = sorted(set(val.rows))[:config.val_batches * config.batch_size]
        embeddings = torch.stack([val.embeddings[val.rows.index(row)] for row in rows])
        reference = (embeddings, sample_latents(
            model, embeddings, frames, sampler="dpm_solver", steps=config.teacher_steps,
            guidance_scale=config.reference_guidance, seed=config.seed))

    log = RunLog(out_dir, resume)
    result = TrainingResult.for_run(out_dir, start, train, val)
    scaling = float(model.vae.config.scaling_factor)
    cast = autocast(model.device, trainer.cast_dtype)
    bar = Progress(progress, "distill", config.steps, start)

    def micro_loss(index: list[int], generator: torch.Generator) -> torch.Tensor:
        x0 = draw_latents(train, index, scaling, config.latents, generator, model.device)
        return consistency_loss(model, student, target, schedule, grid, x0,
                                train.embeddings[index].to(model.device), generator, config,
                                cast)

    def validate(step: int) -> tuple[str, float] | None:
        if reference is None:
            return None
        student.eval()
        latents = sample_latents(with_unet(model, student, spec), reference[0], frames,
                                 steps=config.sample_steps,
                                 guidance_scale=config.reference_guidance, seed=config.seed)
        student.train()
        return "student_vs_teacher", relative_mse(latents, reference[1])

    result.clips_per_s = run_steps(
        "distill", config, start, len(train), micro_loss, trainer.optimizer, trainer.scaler,
        parameters, trainer.lr_schedule, model.device, result, log, bar, validate, trainer.save,
        after_step=lambda: ema_update(target, student, config.ema_decay), stream="distill")
    write_student_folder(teacher_dir, out_dir, student, spec, grid)
    trainer.write_summary(result.summary())
    return result


def write_student_folder(teacher_dir: Path, out_dir: Path, student: Any, spec: ModelSpec,
                         grid: LcmGrid) -> None:
    """The student model folder: the teacher's parts linked, the student UNet and spec written.

    The scheduler config gains ``original_inference_steps`` and
    ``timestep_scaling`` so the engine's LCM sampler walks the grid the student
    was distilled on.
    """
    from engine.generators.diffusion.model import SPEC_FILE
    from training.loop import write_model_folder

    write_model_folder(teacher_dir, out_dir, {"unet", "scheduler", SPEC_FILE})
    student.save_pretrained(out_dir / "unet")
    scheduler = json.loads((teacher_dir / "scheduler" / "scheduler_config.json").read_text())
    scheduler.update(original_inference_steps=len(grid.timesteps),
                     timestep_scaling=grid.timestep_scaling)
    (out_dir / "scheduler").mkdir(parents=True, exist_ok=True)
    (out_dir / "scheduler" / "scheduler_config.json").write_text(
        json.dumps(scheduler, indent=2) + "\n")
    spec.save(out_dir)
