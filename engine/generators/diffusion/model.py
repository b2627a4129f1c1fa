"""The model folder: what it contains, how a tiny one is made, how one is loaded.

The layout is AudioLDM2's as diffusers and transformers write it with
``save_pretrained`` (Art2Mus-compatible), plus three small files of ours::

    MODEL_DIR/
      unet/              AudioLDM2UNet2DConditionModel (self-attention + two
                         cross-attention streams: GPT-2 width and support width)
      vae/               AutoencoderKL over a log-mel spectrogram
      vocoder/           transformers SpeechT5HifiGan (16 kHz)
      language_model/    transformers GPT2Model
      projection_model/  AudioLDM2ProjectionModel (kept for the layout; its
                         learned SOS/EOS can wrap the image prefix)
      scheduler/         the training noise schedule (scheduler_config.json)
      image_projection.safetensors  the Art2Mus image projection
                         (projection1.*, projection2.*)
      support_prompt.safetensors    "support_prompt": (1, S, support width)
      art2mus_model.json            ModelSpec below

No code here downloads anything: ``from_pretrained`` is only ever given a
local folder. :func:`load_model` checks every file before it loads anything,
and raises :class:`ground.errors.InputError` naming what is missing; any error
reading a network's weights, and weights that do not fit the network its
``config.json`` builds (missing ones would be random), are InputErrors naming
the part and the file too. :func:`inspect_model` makes the same checks
without reading the weights (the deep check's). Flow: config -> load_model ->
LoadedModel -> DiffusionGenerator.
"""

from __future__ import annotations

import itertools
import json
import math
import numbers
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ground.errors import ConfigError, DependencyError, InputError

if TYPE_CHECKING:
    import torch

    from engine.generators.diffusion.conditioner import VisualConditioner

SPEC_FILE = "art2mus_model.json"
IMAGE_PROJECTION_FILE = "image_projection.safetensors"
SUPPORT_PROMPT_FILE = "support_prompt.safetensors"
FORMAT = "art2mus-audioldm2"

#: subfolder -> (config file, accepted weight files (any one))
SUBFOLDERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "unet": ("config.json", ("diffusion_pytorch_model.safetensors",
                             "diffusion_pytorch_model.bin")),
    "vae": ("config.json", ("diffusion_pytorch_model.safetensors",
                            "diffusion_pytorch_model.bin")),
    "vocoder": ("config.json", ("model.safetensors", "pytorch_model.bin")),
    "language_model": ("config.json", ("model.safetensors", "model.safetensors.index.json",
                                       "pytorch_model.bin")),
    "projection_model": ("config.json", ("diffusion_pytorch_model.safetensors",
                                         "diffusion_pytorch_model.bin")),
    "scheduler": ("scheduler_config.json", ()),
}


#: No published image encoder, projection or language model is anywhere near this wide: the
#: bound stops a typo or a damaged file before it sizes a tensor.
MAX_WIDTH = 1 << 16
#: Sample rates a vocoder plausibly runs at, telephone band to studio rates.
SAMPLE_RATES = (4000, 384_000)
#: The most denoising steps the engine samples (``DiffusionConfig.steps``): a training
#: schedule needs at least this many timesteps to give each step its own.
ENGINE_MAX_STEPS = 8
#: A training schedule longer than this is a damaged file, not a model (published latent
#: diffusion models use 1000); diffusers allocates one float per timestep.
MAX_TRAIN_TIMESTEPS = 100_000


def _is_int(value: object) -> bool:
    # bool is an int to Python, but ``true`` in a JSON file is never meant as 1.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_finite_real(value: object) -> bool:
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value))


def _json_kind(value: object) -> str:
    """What a JSON value is, in JSON's words (for "expected an object, got an array")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    return "a number" if isinstance(value, numbers.Real) else type(value).__name__


def read_json_object(path: Path) -> dict[str, Any]:
    """A config file that must hold one JSON object; InputError naming the file otherwise.

    diffusers and transformers read these files as UTF-8 and, given anything but an
    object, go looking for the model on the Hugging Face Hub: this says what is wrong.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        raise InputError(f"expected UTF-8 JSON text in {path}, got byte "
                         f"{error.object[error.start]:#04x} at position {error.start} "
                         f"({error.reason})") from error
    except (OSError, json.JSONDecodeError, RecursionError) as error:
        raise InputError(f"unreadable config {path}: {error}") from error
    if not isinstance(data, dict):
        raise InputError(f"expected a JSON object in {path}, got {_json_kind(data)}")
    return data


class FieldError(ValueError):
    """A field of a model-folder file out of its range: which field, expected, got.

    ``str()`` reads ``<field>: expected X, got Y``; :meth:`in_file` adds the file.
    """

    def __init__(self, name: str, expected: str, got: object) -> None:
        super().__init__(f"{name}: expected {expected}, got {got!r}")
        self.name, self.expected, self.got = name, expected, got

    def in_file(self, path: Path) -> InputError:
        """The InputError naming ``path``: worded so that the deep check's one line (which
        keeps what follows "expected") still names the field and the file."""
        return InputError(f"expected {self.name} in {path} to be {self.expected}, "
                          f"got {self.got!r}")


def _check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    if not _is_int(value) or value < low or (high is not None and value > high):  # type: ignore[operator]
        expected = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        raise FieldError(name, expected, value)


def require_torch() -> None:
    """Raise DependencyError naming the extra when torch/diffusers/transformers are missing."""
    missing = []
    for name in ("torch", "diffusers", "transformers", "safetensors"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise DependencyError(
            f"the diffusion generator needs {', '.join(missing)}: "
            "pip install 'art2mus[diffusion]'")


@dataclass(frozen=True)
class ModelSpec:
    """What ``art2mus_model.json`` declares about a model folder."""

    embedding_dim: int = 1024
    prefix_tokens: int = 1
    generated_tokens: int = 8
    hidden_dim: int = 1536
    latent_frames_per_second: float = 25.0
    sample_rate: int = 16000
    sampler: Literal["dpm_solver", "consistency"] = "dpm_solver"
    guidance_embedding_dim: int = 0
    prefix_special_tokens: bool = False
    # A distilled student: the guidance scales it was distilled for, [min, max] (equal: one
    # scale baked in). None (older folders, original models): not recorded.
    guidance_range: tuple[float, float] | None = None
    # The image encoder the projection was trained on (Art2Mus: ImageBind-Huge, 1024-d).
    # "" (older folders, tiny models): not recorded, any encoder of the right width is
    # accepted; encoder_dim 0: not recorded, the width is embedding_dim (encoder_width).
    encoder_name: str = ""
    encoder_dim: int = 0
    format: str = FORMAT
    version: int = 1

    def __post_init__(self) -> None:
        """Every field of the right type and in range; :class:`FieldError` naming the first
        that is not (JSON allows NaN, Infinity, true for 1: each would fail later, deep in
        the engine)."""
        if self.format != FORMAT:
            raise FieldError("format", repr(FORMAT), self.format)
        # generated_tokens and prefix_tokens are bounded by the language model's positions,
        # which this file does not know: see check_token_budget.
        for name, low, high in (("embedding_dim", 1, MAX_WIDTH), ("hidden_dim", 1, MAX_WIDTH),
                                ("prefix_tokens", 1, None), ("generated_tokens", 1, None),
                                ("sample_rate", *SAMPLE_RATES),
                                ("guidance_embedding_dim", 0, MAX_WIDTH),
                                ("encoder_dim", 0, MAX_WIDTH), ("version", 1, None)):
            _check_int(name, getattr(self, name), low, high)
        fps = self.latent_frames_per_second
        # A latent frame spans at least one audio sample.
        if not _is_finite_real(fps) or not 0 < fps <= self.sample_rate:
            raise FieldError("latent_frames_per_second",
                             f"a finite number > 0 and <= sample_rate ({self.sample_rate})", fps)
        if not isinstance(self.prefix_special_tokens, bool):
            raise FieldError("prefix_special_tokens", "true or false", self.prefix_special_tokens)
        if not isinstance(self.encoder_name, str):
            raise FieldError("encoder_name", "a string", self.encoder_name)
        if self.sampler not in ("dpm_solver", "consistency"):
            raise FieldError("sampler", "'dpm_solver' or 'consistency'", self.sampler)
        if self.sampler == "consistency" and self.guidance_embedding_dim < 1:
            raise FieldError("guidance_embedding_dim", "at least 1 for a consistency student",
                             self.guidance_embedding_dim)
        if self.guidance_range is not None:
            bounds = self.guidance_range
            if not (isinstance(bounds, list | tuple) and len(bounds) == 2
                    and all(_is_finite_real(v) for v in bounds)
                    and 1.0 <= bounds[0] <= bounds[1]):
                raise FieldError("guidance_range", "[min, max], finite, with 1 <= min <= max",
                                 list(bounds) if isinstance(bounds, tuple) else bounds)
            # JSON gives a list
            object.__setattr__(self, "guidance_range", (float(bounds[0]), float(bounds[1])))
        if self.encoder_dim not in (0, self.embedding_dim):
            raise FieldError("encoder_dim", f"embedding_dim ({self.embedding_dim}) or 0 (not "
                             f"recorded)", self.encoder_dim)

    @property
    def encoder_width(self) -> int:
        """The width of the embeddings the projection takes from its image encoder."""
        return self.encoder_dim or self.embedding_dim

    def save(self, folder: Path) -> None:
        """Write ``art2mus_model.json`` into ``folder``."""
        (folder / SPEC_FILE).write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> ModelSpec:
        """Read ``art2mus_model.json``; InputError naming the file on anything wrong."""
        path = folder / SPEC_FILE
        data = read_json_object(path)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"expected only the fields {sorted(known)} in {path}, got "
                             f"{unknown}")
        try:
            return cls(**data)
        except FieldError as error:
            raise error.in_file(path) from error


def encoder_matches(expected: str, actual: str) -> bool:
    """Whether a room's encoder name ``actual`` is the encoder ``expected`` by a model.

    ``expected`` "" (not recorded) accepts any name. An ONNX capture encoder
    names itself ``onnx:<file stem>``, so a model expecting ``imagebind-huge``
    accepts ``onnx:imagebind-huge`` (``imagebind-huge.onnx``). Case-insensitive.
    """
    if not expected:
        return True
    wanted, got = expected.casefold(), actual.casefold()
    return got == wanted or got.removeprefix("onnx:") == wanted


def check_room_encoder(spec: ModelSpec, encoder_name: str, encoder_dim: int | None,
                       where: str, model_dir: str | Path) -> None:
    """ConfigError naming both sides when a room's encoder is not the one the model expects.

    ``encoder_dim`` None: the width is not known before the encoder runs (an
    ONNX file); the engine checks each embedding's width when it arrives.
    """
    expected = f"{spec.encoder_name or 'any encoder'} ({spec.encoder_width}-d)"
    if not encoder_matches(spec.encoder_name, encoder_name):
        raise ConfigError(f"{where}: expected the encoder the model {model_dir} was trained on, "
                          f"{expected}, got {encoder_name!r}")
    if encoder_dim is not None and encoder_dim != spec.encoder_width:
        raise ConfigError(f"{where}: expected {expected} embeddings for the model {model_dir}, "
                          f"got {encoder_name!r} ({encoder_dim}-d)")


@dataclass
class LoadedModel:
    """Every component of one model folder, on one device and dtype, in eval mode."""

    folder: Path
    spec: ModelSpec
    unet: Any
    vae: Any
    vocoder: Any
    language_model: Any
    projection_model: Any
    conditioner: VisualConditioner
    support_prompt: torch.Tensor
    scheduler_config: dict[str, Any]
    device: torch.device
    dtype: torch.dtype
    unconditional_tokens: torch.Tensor = field(init=False)

    # -- derived sizes -------------------------------------------------------

    @property
    def latent_channels(self) -> int:
        return int(self.unet.config.in_channels)

    @property
    def vae_scale_factor(self) -> int:
        """Mel frames (and mel bins) per latent frame (bin)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def mel_bins(self) -> int:
        return int(self.vocoder.config.model_in_dim)

    @property
    def latent_bins(self) -> int:
        return self.mel_bins // self.vae_scale_factor

    @property
    def hop_samples(self) -> int:
        """Vocoder samples per mel frame."""
        return math.prod(self.vocoder.config.upsample_rates)

    @property
    def samples_per_latent_frame(self) -> int:
        return self.hop_samples * self.vae_scale_factor

    @property
    def unet_downsample(self) -> int:
        """Latent frames must be a multiple of this for the UNet's static shapes."""
        return 2 ** (len(self.unet.config.block_out_channels) - 1)

    @property
    def lm_width(self) -> int:
        return int(self.language_model.config.n_embd)

    @property
    def support_width(self) -> int:
        return int(self.support_prompt.shape[-1])


# ---------------------------------------------------------------------------
# making a model folder


def tiny_component_configs(embedding_dim: int = 1024, lm_width: int = 768,
                           support_width: int = 1024, student: bool = False) -> dict[str, Any]:
    """Configs of a tiny model in the real layout (random weights, fast on CPU)."""
    cross = [[None, lm_width, support_width]] * 2
    return {
        "unet": dict(
            sample_size=None, in_channels=8, out_channels=8,
            # Attention only below full resolution: CPU attention overhead dominates otherwise.
            down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"],
            mid_block_type="UNetMidBlock2DCrossAttn",
            up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
            block_out_channels=[32, 64], layers_per_block=1, norm_num_groups=8,
            cross_attention_dim=cross, attention_head_dim=4,
            time_cond_proj_dim=32 if student else None,
        ),
        "vae": dict(
            in_channels=1, out_channels=1, latent_channels=8,
            down_block_types=["DownEncoderBlock2D"] * 3,
            up_block_types=["UpDecoderBlock2D"] * 3,
            block_out_channels=[16, 32, 32], layers_per_block=1, norm_num_groups=8,
            sample_size=256, scaling_factor=0.4110,
        ),
        "vocoder": dict(
            model_in_dim=64, sampling_rate=16000, upsample_initial_channel=32,
            upsample_rates=[5, 4, 2, 2, 2], upsample_kernel_sizes=[16, 16, 8, 4, 4],
            resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
            normalize_before=False,
            # transformers' default (0.01) makes a tiny random vocoder output ~1e-9.
            initializer_range=0.15,
        ),
        "language_model": dict(n_embd=lm_width, n_layer=1, n_head=12, vocab_size=8,
                               n_positions=64, bos_token_id=0, eos_token_id=0),
        "projection_model": dict(text_encoder_dim=512, text_encoder_1_dim=support_width,
                                 langauge_model_dim=lm_width),
        "support_tokens": 8,
        "spec": ModelSpec(embedding_dim=embedding_dim,
                          sampler="consistency" if student else "dpm_solver",
                          guidance_embedding_dim=32 if student else 0),
    }


def audioldm2_component_configs(embedding_dim: int = 1024) -> dict[str, Any]:
    """Configs at published AudioLDM2 sizes for VAE, vocoder, GPT-2, projection.

    The UNet is the ~350M-parameter music-sized one (block channels 128, 256,
    384, 640) used by the GPU benchmark.
    """
    cross = [[None, 768, 1024]] * 4
    return {
        "unet": dict(
            sample_size=None, in_channels=8, out_channels=8,
            # Attention at all four levels: 354M parameters with these channels.
            down_block_types=["CrossAttnDownBlock2D"] * 4,
            mid_block_type="UNetMidBlock2DCrossAttn",
            up_block_types=["CrossAttnUpBlock2D"] * 4,
            block_out_channels=[128, 256, 384, 640], layers_per_block=2,
            cross_attention_dim=cross, attention_head_dim=8,
        ),
        "vae": dict(
            in_channels=1, out_channels=1, latent_channels=8,
            down_block_types=["DownEncoderBlock2D"] * 3,
            up_block_types=["UpDecoderBlock2D"] * 3,
            block_out_channels=[128, 256, 512], layers_per_block=2, norm_num_groups=32,
            sample_size=1024, scaling_factor=0.4110,
        ),
        "vocoder": dict(
            model_in_dim=64, sampling_rate=16000, upsample_initial_channel=1024,
            upsample_rates=[5, 4, 2, 2, 2], upsample_kernel_sizes=[16, 16, 8, 4, 4],
            resblock_kernel_sizes=[3, 7, 11],
            resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5], [1, 3, 5]],
            normalize_before=False,
        ),
        "language_model": dict(n_embd=768, n_layer=12, n_head=12, n_positions=1024),
        "projection_model": dict(text_encoder_dim=512, text_encoder_1_dim=1024,
                                 langauge_model_dim=768),
        "support_tokens": 16,
        "spec": ModelSpec(embedding_dim=embedding_dim),
    }


AUDIOLDM2_SCHEDULER = dict(
    num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0195,
    beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
    steps_offset=1, prediction_type="epsilon",
)


def write_model(out_dir: str | Path, configs: dict[str, Any], seed: int = 0) -> Path:
    """Build every component from ``configs`` with seeded random weights and save the folder."""
    require_torch()
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler
    from diffusers.pipelines.audioldm2.modeling_audioldm2 import (
        AudioLDM2ProjectionModel,
        AudioLDM2UNet2DConditionModel,
    )
    from safetensors.torch import save_file
    from transformers import GPT2Config, GPT2Model, SpeechT5HifiGan, SpeechT5HifiGanConfig
    from transformers.utils import logging as transformers_logging

    from engine.generators.diffusion.conditioner import VisualConditioner

    transformers_logging.disable_progress_bar()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec: ModelSpec = configs["spec"]
    torch.manual_seed(seed)
    AudioLDM2UNet2DConditionModel(**configs["unet"]).save_pretrained(out / "unet")
    AutoencoderKL(**configs["vae"]).save_pretrained(out / "vae")  # type: ignore[attr-defined]
    SpeechT5HifiGan(SpeechT5HifiGanConfig(**configs["vocoder"])).save_pretrained(out / "vocoder")
    language_model = GPT2Model(GPT2Config(**configs["language_model"]))
    language_model.save_pretrained(out / "language_model")
    AudioLDM2ProjectionModel(**configs["projection_model"]).save_pretrained(
        out / "projection_model")
    DDIMScheduler(**{**AUDIOLDM2_SCHEDULER,  # type: ignore[attr-defined]
                     **configs.get("scheduler", {})}).save_pretrained(out / "scheduler")
    conditioner = VisualConditioner(spec.embedding_dim, language_model.config.n_embd,
                                    spec.prefix_tokens, spec.hidden_dim)
    save_file({k: v.contiguous() for k, v in conditioner.state_dict().items()},
              str(out / IMAGE_PROJECTION_FILE))
    support_width = configs["projection_model"]["text_encoder_1_dim"]
    support = torch.randn(1, configs["support_tokens"], support_width) * 0.5
    save_file({"support_prompt": support}, str(out / SUPPORT_PROMPT_FILE))
    spec.save(out)
    return out


def make_tiny_model(out_dir: str | Path, embedding_dim: int = 1024, student: bool = False,
                    seed: int = 0, lm_width: int = 768, support_width: int = 1024,
                    prediction_type: str = "epsilon") -> Path:
    """Write a tiny random-weight model folder in the real layout; returns its path.

    ``lm_width`` (a multiple of GPT-2's 12 heads) and ``support_width`` default
    to the published widths; training tests shrink them, since GPT-2's token
    generation dominates a tiny model's step time at 768. ``prediction_type``
    is the scheduler's (AudioLDM2: epsilon); a tiny UNet trained from scratch
    in a few hundred steps learns far faster with ``v_prediction``, whose loss
    weights the clean signal at high noise levels (Salimans & Ho, 2022).
    """
    configs = tiny_component_configs(embedding_dim, lm_width, support_width, student=student)
    configs["scheduler"] = {"prediction_type": prediction_type}
    return write_model(out_dir, configs, seed)


# ---------------------------------------------------------------------------
# loading


def check_folder(folder: Path) -> None:
    """Every file and subfolder a model needs, checked before anything loads.

    Also what can be checked without building a network: ``art2mus_model.json``'s values
    (against the language model's positions), the noise schedule's values, and the small
    tensors of ours (the image projection, the support prompt) and the projection model's
    for NaN or infinity. The UNet, VAE, vocoder and language model weights (hundreds of MB)
    are scanned once loaded (:func:`load_model`), not here.
    """
    if not folder.is_dir():
        raise InputError(f"model folder {folder} does not exist")
    for name in (SPEC_FILE, IMAGE_PROJECTION_FILE, SUPPORT_PROMPT_FILE):
        if not (folder / name).is_file():
            raise InputError(f"model folder {folder} is incomplete: missing {folder / name}")
    for sub, (config_name, weights) in SUBFOLDERS.items():
        path = folder / sub
        if not path.is_dir():
            raise InputError(f"model folder {folder} is incomplete: missing subfolder {path}")
        config_path = path / config_name
        if not config_path.is_file():
            raise InputError(f"model folder {folder} is incomplete: missing {config_path}")
        read_json_object(config_path)
        if weights and not any((path / w).is_file() for w in weights):
            raise InputError(f"model folder {folder} is incomplete: missing {path / weights[0]} "
                             f"(the weights of {sub})")
    spec = ModelSpec.load(folder)
    lm_config_path = folder / "language_model" / "config.json"
    lm_config = read_json_object(lm_config_path)
    # GPT2Config: n_positions (alias max_position_embeddings), 1024 when not written.
    positions = lm_config.get("n_positions", lm_config.get("max_position_embeddings", 1024))
    try:
        _check_int("n_positions", positions, 1)
    except FieldError as error:
        raise error.in_file(lm_config_path) from error
    check_token_budget(spec, positions, folder / SPEC_FILE, lm_config_path)
    scheduler_path = folder / "scheduler" / SUBFOLDERS["scheduler"][0]
    check_scheduler_config(read_json_object(scheduler_path), scheduler_path)
    _load_finite_tensors(folder / IMAGE_PROJECTION_FILE)
    _load_finite_tensors(folder / SUPPORT_PROMPT_FILE)
    projection_weights = folder / "projection_model" / SUBFOLDERS["projection_model"][1][0]
    if projection_weights.is_file():  # a .bin is checked once loaded (load_model)
        _load_finite_tensors(projection_weights)


def check_token_budget(spec: ModelSpec, positions: int, spec_path: Path,
                       lm_config_path: Path) -> None:
    """InputError naming the field when the prefix and generated tokens overrun the
    language model's position embeddings (GPT-2's ``n_positions``).

    :func:`~engine.generators.diffusion.conditioner.generate_language_tokens` feeds the
    prefix (with SOS/EOS where ``prefix_special_tokens``) plus every generated token but
    the last: ``prefix + generated - 1`` positions, each indexing the position table.
    """
    prefix = spec.prefix_tokens + (2 if spec.prefix_special_tokens else 0)
    where = f"the language model {lm_config_path} has {positions} positions"
    if prefix > positions:
        raise FieldError("prefix_tokens", f"at most {positions - 2 * spec.prefix_special_tokens}"
                         f" ({where})", spec.prefix_tokens).in_file(spec_path)
    most = positions - prefix + 1
    if spec.generated_tokens > most:
        raise FieldError("generated_tokens", f"at most {most} ({where}, the prefix takes "
                         f"{prefix})", spec.generated_tokens).in_file(spec_path)


#: scheduler_config.json: the keys the samplers read (diffusers' DDIM, DPM-Solver and LCM
#: schedulers) and what each must be. Keys not listed go to diffusers as they are; the
#: engine walks the schedule once at start-up (generator.walkable_sampler).
_REAL_IN_0_1 = "a finite number in (0, 1)"
_SCHEDULER_CHOICES = {
    "beta_schedule": ("linear", "scaled_linear", "squaredcos_cap_v2"),
    "prediction_type": ("epsilon", "v_prediction", "sample"),
    "timestep_spacing": ("linspace", "leading", "trailing"),
}
_SCHEDULER_FLAGS = ("clip_sample", "set_alpha_to_one", "thresholding", "rescale_betas_zero_snr",
                    "use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas",
                    "use_lu_lambdas", "use_flow_sigmas")
_SCHEDULER_POSITIVE = ("clip_sample_range", "sample_max_value", "timestep_scaling")


def check_scheduler_config(config: dict[str, Any], path: Path) -> dict[str, Any]:
    """The noise schedule's values the samplers use, of the right type and in range;
    InputError naming the field and ``path`` (JSON allows NaN, which diffusers passes
    straight to ``torch.linspace``). Returns ``config``."""
    try:
        _check_scheduler_values(config)
    except FieldError as error:
        raise error.in_file(path) from error
    return config


def _check_scheduler_values(config: dict[str, Any]) -> None:
    timesteps = config.get("num_train_timesteps", 1000)  # diffusers' default
    _check_int("num_train_timesteps", timesteps, ENGINE_MAX_STEPS, MAX_TRAIN_TIMESTEPS)
    for name in ("beta_start", "beta_end"):
        if name in config and not (_is_finite_real(config[name]) and 0 < config[name] < 1):
            raise FieldError(name, _REAL_IN_0_1, config[name])
    start, end = config.get("beta_start"), config.get("beta_end")
    if start is not None and end is not None and start > end:
        raise FieldError("beta_end", f"at least beta_start ({start})", end)
    betas = config.get("trained_betas")
    if betas is not None and not (
            isinstance(betas, list) and len(betas) == timesteps
            and all(_is_finite_real(b) and 0 < b < 1 for b in betas)):
        raise FieldError("trained_betas", f"null or {timesteps} (num_train_timesteps) finite "
                         f"numbers in (0, 1)", betas if not isinstance(betas, list)
                         else f"{len(betas)} values")
    for name, choices in _SCHEDULER_CHOICES.items():
        if name in config and config[name] not in choices:
            raise FieldError(name, " or ".join(repr(c) for c in choices), config[name])
    for name in _SCHEDULER_FLAGS:
        if name in config and not isinstance(config[name], bool):
            raise FieldError(name, "true or false", config[name])
    for name in _SCHEDULER_POSITIVE:
        if name in config and not (_is_finite_real(config[name]) and config[name] > 0):
            raise FieldError(name, "a finite number > 0", config[name])
    ratio = config.get("dynamic_thresholding_ratio", 0.995)
    if not (_is_finite_real(ratio) and 0 < ratio <= 1):
        raise FieldError("dynamic_thresholding_ratio", "a finite number in (0, 1]", ratio)
    if "steps_offset" in config:
        _check_int("steps_offset", config["steps_offset"], 0, timesteps - 1)
    if "original_inference_steps" in config:
        # LCM's distillation grid: a subset of the training timesteps.
        _check_int("original_inference_steps", config["original_inference_steps"], 1, timesteps)


def _load_finite_tensors(path: Path) -> dict[str, torch.Tensor]:
    """:func:`_load_tensors`, refusing NaN or infinity (InputError naming file and tensor).

    Only for the small tensors (a few MB): a NaN there makes every window NaN, silently.
    """
    import torch

    tensors = _load_tensors(path)
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise InputError(f"expected finite values in {path}, got NaN or infinity in "
                             f"tensor {name!r}")
    return tensors


def resolve_device(name: str) -> str:
    """'auto' -> 'cuda' when torch sees a GPU, else 'cpu'; InputError for 'cuda' without one."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda \
            else "a CPU-only build"
        raise InputError(f"engine.diffusion.device: expected a CUDA device torch sees, got "
                         f"'cuda' and none here (torch {torch.__version__}, {build}); set "
                         f"device = \"auto\" or \"cpu\", or install the CUDA build of PyTorch")
    return name


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """'auto' -> float32 on cpu, float16 on cuda."""
    import torch

    if name == "auto":
        return torch.float16 if device == "cuda" else torch.float32
    return {"float32": torch.float32, "float16": torch.float16,
            "bfloat16": torch.bfloat16}[name]


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    require_torch()
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as error:  # safetensors raises its own error types
        raise InputError(f"unreadable tensor file {path}: {error}") from error


# ---------------------------------------------------------------------------
# the networks' weight files

#: The networks of a model folder, in the order they load: subfolder -> (module, class).
PARTS: dict[str, tuple[str, str]] = {
    "unet": ("diffusers.pipelines.audioldm2.modeling_audioldm2", "AudioLDM2UNet2DConditionModel"),
    "vae": ("diffusers", "AutoencoderKL"),
    "vocoder": ("transformers", "SpeechT5HifiGan"),
    "language_model": ("transformers", "GPT2Model"),
    "projection_model": ("diffusers.pipelines.audioldm2.modeling_audioldm2",
                         "AudioLDM2ProjectionModel"),
}
#: How many keys a refusal lists of each kind (a config for another model misses hundreds).
KEYS_SHOWN = 3


def _part_class(sub: str) -> Any:
    import importlib

    module, name = PARTS[sub]
    return getattr(importlib.import_module(module), name)


def weight_file(folder: Path, sub: str) -> Path:
    """The weight file of ``folder``'s part ``sub`` that diffusers or transformers reads: the
    first of the accepted names present (both libraries prefer safetensors to a pickle)."""
    part = folder / sub
    names = SUBFOLDERS[sub][1]
    return next((part / name for name in names if (part / name).is_file()), part / names[0])


def _weights_kind(path: Path) -> str:
    if path.name.endswith(".index.json"):
        return "a sharded safetensors index"
    return "a safetensors file" if path.suffix == ".safetensors" else "a PyTorch weights file"


#: Lines of torch's refusal of a pickle that are advice, not what it refused.
_TORCH_LOAD_ADVICE = ("Weights only load failed", "Please file an issue", "Check the documentation")


def error_reason(error: BaseException) -> str:
    """An exception as one line: its type and what it says (of torch's refusal of a pickle,
    which spends paragraphs on advice, the sentence naming what it refused)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = " ".join(lines)
    if lines and lines[0].startswith(_TORCH_LOAD_ADVICE[0]):
        marker = "WeightsUnpickler error:"
        told = text.split(marker, 1)[1] if marker in text else \
            " ".join(line for line in lines if not line.startswith(_TORCH_LOAD_ADVICE))
        told = told.split(_TORCH_LOAD_ADVICE[2])[0].strip()
        text = "torch.load(weights_only=True) refuses it: " + \
            (told.split(". ")[0].rstrip(".") + "." if told else "see torch.load's documentation")
    if len(text) > 400:
        text = text[:400] + "..."
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def unreadable_weights(folder: Path, sub: str, path: Path, error: BaseException) -> InputError:
    """The InputError for a weight file its library cannot read: the part, the file, what
    was expected and why it failed, on one line."""
    cls = PARTS[sub][1]
    return InputError(f"weights of the {sub} in {folder / sub}: expected {path} to be "
                      f"{_weights_kind(path)} {cls} can read, got {error_reason(error)}")


def weight_key_mismatch(folder: Path, sub: str, path: Path, missing: Any, unexpected: Any,
                        mismatched: Any) -> InputError | None:
    """The InputError for weights that do not fit the network their config builds (keys
    missing from the file would be filled with random values, silently), or None.

    ``mismatched``: (key, shape in the file, shape the config builds) each. Both
    :func:`load_model` (from the libraries' own loading report) and :func:`inspect_model`
    (from the file's header) word it so."""
    def listed(keys: list[str]) -> str:
        more = f", ... ({len(keys) - KEYS_SHOWN} more)" if len(keys) > KEYS_SHOWN else ""
        return ", ".join(keys[:KEYS_SHOWN]) + more

    problems = []
    if missing:
        problems.append(f"{len(missing)} missing ({listed(sorted(missing))})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected ({listed(sorted(unexpected))})")
    if mismatched:
        shapes = [f"{key} {tuple(got)} for {tuple(want)}" for key, got, want in
                  sorted(mismatched, key=lambda item: str(item[0]))]
        problems.append(f"{len(shapes)} of another shape ({listed(shapes)})")
    if not problems:
        return None
    config = folder / sub / SUBFOLDERS[sub][0]
    return InputError(
        f"weights of the {sub} in {folder / sub}: expected {path} to hold every weight of the "
        f"{PARTS[sub][1]} that {config} describes, got {'; '.join(problems)}: the config "
        f"and the weights come from different models or versions; copy both from one source")


def read_weight_shapes(folder: Path, sub: str, path: Path) -> dict[str, tuple[int, ...]]:
    """Each tensor's name and shape in a part's weight file, without reading the weights: a
    safetensors file's header (its first bytes; safetensors checks that the file holds every
    tensor it lists), each shard's header for a sharded index, a PyTorch pickle through
    ``torch.load(weights_only=True, mmap=True)`` (what diffusers and transformers accept).
    InputError naming the file on anything unreadable."""
    import torch
    from safetensors import safe_open

    def header(file: Path) -> dict[str, tuple[int, ...]]:
        with safe_open(str(file), "pt") as handle:
            return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}

    try:
        if path.name.endswith(".index.json"):
            index = read_json_object(path)
            weight_map = index.get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise InputError(f"weights of the {sub} in {folder / sub}: expected a "
                                 f"\"weight_map\" of tensor names to shard files in {path}, "
                                 f"got {_json_kind(weight_map)}")
            shapes: dict[str, tuple[int, ...]] = {}
            for shard in sorted({str(name) for name in weight_map.values()}):
                shard_path = path.parent / shard
                if not shard_path.is_file():
                    raise InputError(f"weights of the {sub} in {folder / sub}: expected the "
                                     f"shard {shard_path} that {path} names, got no such file")
                try:
                    shapes.update(header(shard_path))
                except Exception as error:  # safetensors raises its own error types
                    raise unreadable_weights(folder, sub, shard_path, error) from error
            return shapes
        if path.suffix == ".safetensors":
            return header(path)
        try:
            state = torch.load(str(path), map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            # an older (non-zip) pickle cannot be mapped: read whole, as the libraries do
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor)
                                                  for t in state.values()):
            raise ValueError(f"expected a dict of tensors, got {type(state).__name__}")
        return {str(key): tuple(tensor.shape) for key, tensor in state.items()}
    except (InputError, MemoryError):
        raise
    except Exception as error:  # safetensors, pickle and torch each raise their own types
        raise unreadable_weights(folder, sub, path, error) from error


def _check_weight_shapes(folder: Path, sub: str, module: Any) -> None:
    """InputError naming the part, the file and the first keys when the weights' header does
    not fit ``module`` (the part built from its config on the meta device): what a loader
    would fill with random values, what it would drop, what it would refuse.

    Keys the libraries declare ignorable are ignored as they do: a diffusers model's
    ``_keys_to_ignore_on_load_unexpected``; a transformers model's
    ``_keys_to_ignore_on_load_missing`` / ``_unexpected``, tied weights and a checkpoint
    saved with its head's prefix (``transformer.`` for GPT-2). Non-persistent buffers are not
    in ``state_dict`` and so not expected. :func:`load_model` checks the libraries' own
    loading report as well; a test keeps the two agreeing."""
    import re

    path = weight_file(folder, sub)
    found = read_weight_shapes(folder, sub, path)
    prefix = getattr(module, "base_model_prefix", "")
    if prefix and not hasattr(module, prefix):  # a base model given its head's checkpoint
        found = {key.removeprefix(f"{prefix}."): shape for key, shape in found.items()}
    expected = {key: tuple(tensor.shape) for key, tensor in module.state_dict().items()}

    def ignored(patterns: Any) -> Any:
        regex = re.compile("|".join(f"({p})" for p in patterns)) if patterns else None
        return (lambda key: regex.search(key) is not None) if regex else (lambda key: False)

    missing_ok = ignored(getattr(module, "_keys_to_ignore_on_load_missing", None))
    unexpected_patterns = set(getattr(module, "_keys_to_ignore_on_load_unexpected", None) or ())
    if any(name.endswith("position_ids") for name, _ in module.named_buffers()):
        unexpected_patterns.add(r"(^|\.)position_ids$")  # transformers ignores old ones
    unexpected_ok = ignored(unexpected_patterns)
    tied = set(getattr(module, "all_tied_weights_keys", None) or ())
    missing = [k for k in expected if k not in found and k not in tied and not missing_ok(k)]
    unexpected = [k for k in found if k not in expected and not unexpected_ok(k)]
    mismatched = [(k, found[k], shape) for k, shape in expected.items()
                  if k in found and found[k] != shape]
    problem = weight_key_mismatch(folder, sub, path, missing, unexpected, mismatched)
    if problem is not None:
        raise problem


def _skeleton(folder: Path, sub: str) -> Any:
    """Part ``sub`` built from its config on torch's meta device (no memory, no weights),
    its weight file's header checked against it."""
    import torch

    cls = _part_class(sub)
    part = folder / sub
    config_path = part / SUBFOLDERS[sub][0]
    try:
        if cls.__module__.startswith("diffusers"):
            config = cls.load_config(str(part), local_files_only=True)
            with torch.device("meta"):
                module = cls.from_config(config)
        else:
            config = cls.config_class.from_pretrained(str(part), local_files_only=True)
            with torch.device("meta"):
                module = cls(config)
    except (InputError, MemoryError):
        raise
    except Exception as error:  # each library raises its own types on a config it cannot use
        raise InputError(f"config of the {sub} in {part}: expected {config_path} to describe a "
                         f"{PARTS[sub][1]}, got {error_reason(error)}") from error
    _check_weight_shapes(folder, sub, module)
    return module


def inspect_model(folder: str | Path) -> LoadedModel:
    """Every check :func:`load_model` makes, without reading the big weights: what
    ``art2mus check-config --deep`` (and so ``art2mus run``) runs before anything starts.

    :func:`check_folder`, then each network built from its config on torch's meta device
    (no memory) with its weight file's header checked against it (a damaged file, keys
    missing, unexpected or of another shape), then the checks across parts. The small
    tensors (projection, support prompt) are read. Returns a :class:`LoadedModel` whose
    networks have no weights, on the meta device: it gives every size the engine checks
    (the window plan, the ONNX files' shapes) and cannot generate. About 0.5 s for a
    real-size AudioLDM2 folder, whatever its weights weigh.
    """
    require_torch()
    import torch
    from transformers.utils import logging as transformers_logging

    root = Path(folder)
    check_folder(root)
    spec = ModelSpec.load(root)
    transformers_logging.disable_progress_bar()
    parts = {sub: _skeleton(root, sub) for sub in PARTS}
    return _assemble(root, spec, parts, torch.device("meta"), torch.float32)


def load_model(folder: str | Path, device: str = "cpu", dtype: str = "float32") -> LoadedModel:
    """Load a model folder (checked up front) onto ``device`` in ``dtype``, eval mode.

    Every error reading a weight file is an InputError naming the part and the file (the
    supervisor gives up on it rather than restarting the engine forever), and so is a
    file that lacks weights the part's config builds (the libraries would fill them with
    random values) or holds weights it does not build.
    """
    require_torch()
    import torch
    from transformers.utils import logging as transformers_logging

    root = Path(folder)
    check_folder(root)
    spec = ModelSpec.load(root)
    device_name = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device_name)

    # Progress bars and "install accelerate" notices are noise in an engine log.
    transformers_logging.disable_progress_bar()

    def load(sub: str) -> Any:
        cls = _part_class(sub)
        # diffusers takes torch_dtype, transformers (>= 5) dtype; both only a local path.
        if cls.__module__.startswith("diffusers"):
            kwargs = {"torch_dtype": torch_dtype, "low_cpu_mem_usage": False}
        else:
            kwargs = {"dtype": torch_dtype}
        path = weight_file(root, sub)
        try:
            module, info = cls.from_pretrained(str(root / sub), local_files_only=True,
                                               output_loading_info=True, **kwargs)
        except (InputError, MemoryError):
            raise
        except ImportError as error:
            raise DependencyError(f"loading the {sub} in {root / sub} needs "
                                  f"{getattr(error, 'name', None) or error}: pip install "
                                  f"'art2mus[diffusion]'") from error
        except Exception as error:  # safetensors, pickle, torch, diffusers: their own types
            # The deep check's refusal where it finds the fault: it says why (diffusers words
            # a damaged file "Unable to load weights", a pickle it refuses too).
            _skeleton(root, sub)
            raise unreadable_weights(root, sub, path, error) from error
        # The libraries fill missing weights with random values and only log it.
        mismatched = [(key, got, want) for key, got, want in info.get("mismatched_keys", ())]
        problem = weight_key_mismatch(root, sub, path, info.get("missing_keys"),
                                      info.get("unexpected_keys"), mismatched)
        if problem is not None:
            raise problem
        if info.get("error_msgs"):
            raise unreadable_weights(root, sub, path,
                                     RuntimeError("; ".join(map(str, info["error_msgs"]))))
        module = module.to(device=device_name).eval().requires_grad_(False)
        _refuse_non_finite(module, root / sub, torch_dtype)
        return module

    parts = {sub: load(sub) for sub in PARTS}
    model = _assemble(root, spec, parts, torch.device(device_name), torch_dtype)
    language_model, conditioner = model.language_model, model.conditioner
    with torch.inference_mode():
        zero = torch.zeros(1, spec.embedding_dim, device=device_name, dtype=torch_dtype)
        model.unconditional_tokens = conditioner.tokens(zero, language_model,
                                                        model.projection_model)
    # Every weight was checked above: non-finite tokens come from overflow in this dtype.
    if not bool(torch.isfinite(model.unconditional_tokens).all()):
        raise InputError(f"expected finite tokens from the language model "
                         f"{root / 'language_model'} in {torch_dtype}, got NaN or infinity: "
                         f"its activations overflow in this dtype")
    return model


def _assemble(root: Path, spec: ModelSpec, parts: dict[str, Any], device: torch.device,
              dtype: torch.dtype) -> LoadedModel:
    """The model from its networks (loaded, or built on the meta device) and the small files
    of ours, checked across parts as the engine needs them."""
    from engine.generators.diffusion.conditioner import VisualConditioner

    language_model = parts["language_model"]
    # check_folder read these files: read again, what loads is what is checked.
    check_token_budget(spec, int(language_model.config.n_positions), root / SPEC_FILE,
                       root / "language_model" / "config.json")
    scheduler_path = root / "scheduler" / SUBFOLDERS["scheduler"][0]
    scheduler_config = check_scheduler_config(read_json_object(scheduler_path), scheduler_path)

    projection_path = root / IMAGE_PROJECTION_FILE
    conditioner = VisualConditioner.from_state_dict(
        _load_finite_tensors(projection_path), spec, int(language_model.config.n_embd),
        source=str(projection_path))
    conditioner = conditioner.to(device=device, dtype=dtype).eval()
    conditioner.requires_grad_(False)
    support_path = root / SUPPORT_PROMPT_FILE
    support_tensors = _load_finite_tensors(support_path)
    if "support_prompt" not in support_tensors:
        raise InputError(f"{support_path} must hold a tensor named 'support_prompt', got "
                         f"{sorted(support_tensors)}")
    support = support_tensors["support_prompt"]
    if support.ndim == 2:
        support = support[None]
    model = LoadedModel(
        folder=root, spec=spec, unet=parts["unet"], vae=parts["vae"], vocoder=parts["vocoder"],
        language_model=language_model, projection_model=parts["projection_model"],
        conditioner=conditioner, support_prompt=support.to(device, dtype),
        scheduler_config=scheduler_config, device=device, dtype=dtype,
    )
    _check_shapes(model, support_path)
    return model


def _refuse_non_finite(module: torch.nn.Module, where: Path, dtype: torch.dtype) -> None:
    """InputError naming ``where`` and the first weight or buffer of ``module`` holding NaN
    or infinity (in the file, or from casting to ``dtype``: float16 ends at 65504).

    One bad tensor in the UNet, VAE or vocoder made every chunk NaN: the engine zeroed
    them and the room played silence, counted but never traced to the file. The scan
    reads each tensor once, where it lies: on a GPU, milliseconds; on a CPU, about 4.5 ns
    a weight on this project's 2-core VM (a 1B-parameter model: about 5 s at start)."""
    import torch

    tensors = itertools.chain(module.named_parameters(), module.named_buffers())
    for name, tensor in tensors:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise InputError(f"expected finite weights in {where}, got NaN or infinity in "
                             f"tensor {name!r} (as loaded in {dtype}: float16 ends at 65504)")


def _check_shapes(model: LoadedModel, support_path: Path) -> None:
    """The components agree with each other; InputError naming the file that does not."""
    root = model.folder
    cross = model.unet.config.cross_attention_dim
    widths = {w for block in cross for w in (block if isinstance(block, list | tuple)
                                               else [block]) if w is not None}
    expected = {model.lm_width, model.support_width}
    if widths != expected:
        raise InputError(
            f"cross-attention widths in {root / 'unet' / 'config.json'}: expected "
            f"{sorted(expected)} (language model {model.lm_width}, support prompt "
            f"{model.support_width}), got {sorted(widths)}")
    if model.support_prompt.ndim != 3 or model.support_prompt.shape[0] != 1:
        raise InputError(f"support prompt in {support_path}: expected shape (1, tokens, width), "
                         f"got {tuple(model.support_prompt.shape)}")
    if int(model.vae.config.latent_channels) != model.latent_channels:
        raise InputError(
            f"latent channels: {root / 'vae' / 'config.json'} has "
            f"{model.vae.config.latent_channels}, {root / 'unet' / 'config.json'} expects "
            f"{model.latent_channels}")
    if model.mel_bins % model.vae_scale_factor:
        raise InputError(f"mel bins {model.mel_bins} in {root / 'vocoder' / 'config.json'} are "
                         f"not a multiple of the VAE scale factor {model.vae_scale_factor}")
    if int(model.vocoder.config.sampling_rate) != model.spec.sample_rate:
        raise InputError(
            f"sample rate: {root / 'vocoder' / 'config.json'} has "
            f"{model.vocoder.config.sampling_rate}, {root / SPEC_FILE} says "
            f"{model.spec.sample_rate}")
    expected_fps = model.spec.sample_rate / model.samples_per_latent_frame
    if not abs(expected_fps - model.spec.latent_frames_per_second) <= 1e-6:  # NaN fails
        raise InputError(
            f"latent_frames_per_second in {root / SPEC_FILE}: the VAE and vocoder give "
            f"{expected_fps}, the file says {model.spec.latent_frames_per_second}")
    guidance = model.unet.config.time_cond_proj_dim or 0
    if model.spec.sampler == "consistency" and guidance != model.spec.guidance_embedding_dim:
        raise InputError(
            f"guidance embedding: {root / SPEC_FILE} declares "
            f"{model.spec.guidance_embedding_dim}, {root / 'unet' / 'config.json'} has "
            f"time_cond_proj_dim {guidance}")
