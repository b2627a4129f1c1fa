"""``art2mus train-projection``: teach the image projection (Art2Mus recipe) on paired data.

The published recipe (Rinaldi et al., 2024), the default here: the UNet,
VAE, GPT-2 and vocoder stay frozen; only the image projection
(``projection1``/``projection2``) learns, by the latent diffusion objective
(noise-prediction MSE, or the scheduler's ``prediction_type``) through the
frozen GPT-2 token generation and UNet cross-attention. AdamW (lr 2e-5,
weight decay 1e-2), gradient clipping at 1.0; optional Min-SNR-gamma
weighting, gradient accumulation, mixed precision on a GPU.
``train_all`` also trains the UNet and GPT-2: the tiny random models of the
tests have nothing pretrained to lean on. ``rescale_latents`` (only for a UNet
trained from scratch: a pretrained one expects its VAE's factor) sets the
VAE's ``scaling_factor`` to 1 / std of the training latents, as Stable
Diffusion derived its 0.18215 (Rombach et al., 2022), and writes it into the
output's ``vae/config.json``; the VAE weights stay untouched.

The image embedding is dropped (replaced by zeros) with probability
``cond_dropout``: the engine's unconditional branch for classifier-free
guidance is the conditioner applied to a zero embedding
(``LoadedModel.unconditional_tokens``), so the projection learns it too.

Flow: validate the data -> caches (latents, embeddings) -> steps (each
``accumulate`` micro-batches) -> periodic validation loss and checkpoints
-> the output model folder (frozen parts linked, trained parts written).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from training.loop import RunConfig

if TYPE_CHECKING:
    import torch

    from engine.generators.diffusion.model import LoadedModel
    from training.cache import TrainingData
    from training.objectives import NoiseSchedule


@dataclass(frozen=True)
class ProjectionConfig(RunConfig):
    """Projection training settings; defaults are the published recipe."""

    min_snr_gamma: float = 0.0
    cond_dropout: float = 0.1
    train_all: bool = False
    rescale_latents: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min_snr_gamma < 0:
            raise ValueError(f"min_snr_gamma must be >= 0 (0: off), got {self.min_snr_gamma}")
        if not 0.0 <= self.cond_dropout < 1.0:
            raise ValueError(f"cond_dropout must be in [0, 1), got {self.cond_dropout}")


@dataclass
class TrainingResult:
    """What a run did: where it wrote, its loss curves, its throughput, its caches."""

    out: Path
    step: int
    train_loss: list[tuple[int, float]] = field(default_factory=list)
    val_loss: list[tuple[int, float]] = field(default_factory=list)
    clips_per_s: float = 0.0
    train_clips: int = 0
    val_clips: int = 0
    cache: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_run(cls, out: Path, step: int, train: TrainingData,
                val: TrainingData | None) -> TrainingResult:
        """The result of a run starting at ``step`` on ``train`` (and ``val``), with the
        cache hits its data preparation counted."""
        return cls(out=out, step=step, train_clips=len(train),
                   val_clips=len(val) if val is not None else 0,
                   cache={"latent_hits": train.latent_stats.hits,
                          "latent_misses": train.latent_stats.misses,
                          "embedding_hits": train.embedding_stats.hits,
                          "embedding_misses": train.embedding_stats.misses})

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (what ``training/summary.json`` holds)."""
        data = asdict(self)
        data["out"] = str(self.out)
        return data


def load_training_model(model_dir: Path, device: str) -> LoadedModel:
    """The model in float32 (master weights; mixed precision is autocast's job)."""
    from engine.generators.diffusion.model import load_model

    return load_model(model_dir, device, "float32")


def prepare_data(model: LoadedModel, data_dir: Path, encoder_spec: str, cache_dir: Path | None,
                 config: RunConfig, progress: bool = False
                 ) -> tuple[TrainingData, TrainingData | None]:
    """Validate (refusing on any problem), then the cached train and val clips.

    ``progress``: a bar over the files while latents and embeddings are cached (only
    when stderr is a terminal: the shared convention of long jobs).
    """
    from ground.cli_report import progress_bar
    from training.cache import build_training_data
    from training.data import require_valid, validate_dataset
    from training.features import make_encoder

    report = validate_dataset(data_dir, config.clip_s, config.val_fraction)
    require_valid(report)
    encoder = make_encoder(encoder_spec)
    usable = [item for item in report.items if item.split in ("train", "val")]
    with progress_bar(None if progress else False, unit="files") as update:
        data = build_training_data(model, usable, encoder,
                                   cache_dir or default_cache_dir(data_dir), config.clip_s,
                                   config.max_clips, progress=update)
    train = data.subset("train")
    val = data.subset("val")
    return train, (val if len(val) else None)


def default_cache_dir(data_dir: Path) -> Path:
    """Caches live beside the data unless ``--cache`` says otherwise."""
    return data_dir / ".art2mus-cache"


def draw_latents(data: TrainingData, index: list[int], scaling: float, mode: str,
                 generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Scaled latents of clips ``index``: a posterior sample (or its mean)."""
    import torch

    mean = data.latent_mean[index]
    if mode == "sample":
        eps = torch.randn(mean.shape, generator=generator)
        mean = mean + data.latent_std[index] * eps
    return (mean * scaling).to(device)


def denoising_loss(model: LoadedModel, schedule: NoiseSchedule, x0: torch.Tensor,
                   embeddings: torch.Tensor, generator: torch.Generator, cond_dropout: float,
                   min_snr_gamma: float, cast: Any) -> torch.Tensor:
    """The latent diffusion loss of one micro-batch (random draws from ``generator``)."""
    import torch

    batch = x0.shape[0]
    device = x0.device
    noise = torch.randn(x0.shape, generator=generator).to(device)
    t = torch.randint(0, schedule.num_train_timesteps, (batch,), generator=generator).to(device)
    keep = (torch.rand(batch, generator=generator) >= cond_dropout).to(device, embeddings.dtype)
    support = model.support_prompt.expand(batch, -1, -1)
    with cast:
        tokens = model.conditioner.tokens(embeddings * keep[:, None], model.language_model,
                                          model.projection_model)
        noisy = schedule.add_noise(x0, noise, t)
        output = model.unet(noisy, t, encoder_hidden_states=tokens,
                            encoder_hidden_states_1=support, return_dict=False)[0]
    per_sample = ((output.float() - schedule.target(x0, noise, t)) ** 2).mean(dim=(1, 2, 3))
    if min_snr_gamma > 0:
        per_sample = per_sample * schedule.min_snr_weights(t, min_snr_gamma)
    return per_sample.mean()


def trainable_modules(model: LoadedModel, train_all: bool) -> dict[str, Any]:
    """name -> module that learns (the projection; with ``train_all`` also UNet and GPT-2)."""
    modules: dict[str, Any] = {"conditioner": model.conditioner}
    if train_all:
        modules["unet"] = model.unet
        modules["language_model"] = model.language_model
    return modules


def validation_loss(model: LoadedModel, schedule: NoiseSchedule, data: TrainingData,
                    config: RunConfig, cast: Any, scaling: float,
                    min_snr_gamma: float = 0.0) -> float:
    """The training loss (same weighting, no dropout) on the val clips with fixed draws.

    Fixed draws make one evaluation comparable with the next; the same weighting
    makes it comparable with the training loss.
    """
    import torch

    from training.loop import step_generator

    losses = []
    with torch.no_grad():
        for batch in range(config.val_batches):
            start = batch * config.batch_size
            if start >= len(data):
                break
            index = list(range(start, min(start + config.batch_size, len(data))))
            generator = step_generator(config.seed, batch, "val")
            x0 = draw_latents(data, index, scaling, config.latents, generator, model.device)
            loss = denoising_loss(model, schedule, x0, data.embeddings[index].to(model.device),
                                  generator, 0.0, min_snr_gamma, cast)
            losses.append(float(loss) * len(index))
    return sum(losses) / min(len(data), config.val_batches * config.batch_size)


def train_projection(model_dir: Path, data_dir: Path, out_dir: Path,
                     config: ProjectionConfig | None = None, *, encoder: str = "descriptor",
                     cache_dir: Path | None = None, init_projection: Path | None = None,
                     resume: bool = False, progress: bool = True) -> TrainingResult:
    """Train the image projection (or everything, ``train_all``) and write a model folder."""

    from engine.generators.diffusion.conditioner import (
        VisualConditioner,
        load_projection_checkpoint,
    )
    from training.loop import Progress, RunLog, Trainer, autocast, check_out_differs, run_steps
    from training.objectives import NoiseSchedule

    check_out_differs(model_dir, out_dir, "train-projection", "--model")
    config = config or ProjectionConfig()
    model = load_training_model(model_dir, config.device)
    train, val = prepare_data(model, data_dir, encoder, cache_dir, config, progress)
    if init_projection is not None and not resume:
        published = load_projection_checkpoint(init_projection)
        loaded = VisualConditioner.from_state_dict(published, model.spec, model.lm_width,
                                                   source=str(init_projection))
        model.conditioner.load_state_dict(loaded.state_dict())

    modules = trainable_modules(model, config.train_all)
    parameters: list[Any] = []
    for module in modules.values():
        module.requires_grad_(True).train()
        parameters.extend(p for p in module.parameters() if p.requires_grad)
    trainer = Trainer.open(
        "train-projection", config, out_dir, modules, parameters, model.device, resume=resume,
        resume_fields=("cond_dropout", "min_snr_gamma", "train_all"),
        source=f"--model {model_dir}",
        record={"model": str(model_dir), "data": str(data_dir), "encoder": encoder,
                "init_projection": str(init_projection or "")})
    schedule = NoiseSchedule(model.scheduler_config, model.device)
    start = trainer.start

    log = RunLog(out_dir, resume)
    result = TrainingResult.for_run(out_dir, start, train, val)
    scaling = float(model.vae.config.scaling_factor)
    if config.rescale_latents:
        scaling = unit_variance_scaling(train, config.latents)
        result.extra["scaling_factor"] = scaling
    cast = autocast(model.device, trainer.cast_dtype)
    bar = Progress(progress, "train-projection", config.steps, start)

    def micro_loss(index: list[int], generator: torch.Generator) -> torch.Tensor:
        x0 = draw_latents(train, index, scaling, config.latents, generator, model.device)
        return denoising_loss(model, schedule, x0, train.embeddings[index].to(model.device),
                              generator, config.cond_dropout, config.min_snr_gamma, cast)

    def validate(step: int) -> tuple[str, float] | None:
        if val is None:
            return None
        for module in modules.values():
            module.eval()
        value = validation_loss(model, schedule, val, config, cast, scaling,
                                config.min_snr_gamma)
        for module in modules.values():
            module.train()
        return "val_loss", value

    result.clips_per_s = run_steps(
        "train-projection", config, start, len(train), micro_loss, trainer.optimizer,
        trainer.scaler, parameters, trainer.lr_schedule, model.device, result, log, bar,
        validate, trainer.save)
    write_trained_folder(model, model_dir, out_dir, modules,
                         scaling if config.rescale_latents else None)
    trainer.write_summary(result.summary())
    return result


def unit_variance_scaling(data: TrainingData, mode: str) -> float:
    """1 / std of the (unscaled) training latents: the VAE factor that makes them unit-variance."""
    variance = data.latent_mean.double().var()
    if mode == "sample":
        variance = variance + (data.latent_std.double() ** 2).mean()
    return float(1.0 / variance.sqrt().clamp_min(1e-8))


def write_trained_folder(model: LoadedModel, model_dir: Path, out_dir: Path,
                         modules: dict[str, Any], scaling_factor: float | None = None) -> None:
    """The engine-loadable folder: frozen parts linked from ``model_dir``, trained ones written.

    ``scaling_factor``, when given, replaces the VAE's in ``vae/config.json`` (a
    fresh file; the linked original is never written through).
    """
    from safetensors.torch import save_file

    from engine.generators.diffusion.model import IMAGE_PROJECTION_FILE
    from training.loop import write_model_folder

    replaced = {IMAGE_PROJECTION_FILE, *(name for name in modules if name != "conditioner")}
    write_model_folder(model_dir, out_dir, replaced)
    state = {k: v.detach().float().contiguous().cpu()
             for k, v in model.conditioner.state_dict().items()}
    save_file(state, str(out_dir / IMAGE_PROJECTION_FILE))
    for name in replaced - {IMAGE_PROJECTION_FILE}:
        modules[name].save_pretrained(out_dir / name)
    if scaling_factor is not None:
        config_path = out_dir / "vae" / "config.json"
        vae_config = json.loads(config_path.read_text())
        vae_config["scaling_factor"] = scaling_factor
        config_path.unlink()  # a hard link to the source model's file: replace, never write
        config_path.write_text(json.dumps(vae_config, indent=2) + "\n")
