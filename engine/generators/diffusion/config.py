"""Settings of the diffusion generator (model folder, sampler, backend, streaming).

Importing this module must not import torch: configs are validated by every
role, including those that never run a model. Sizes that depend on the model
(latent frames per second, the UNet's downsampling factor) are checked when
the model is loaded (:func:`engine.generators.diffusion.model.load_model`), naming the
parameter.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ground.config import Flag

Backend = Literal["torch", "onnx", "simulated"]
SamplerName = Literal["auto", "dpm_solver", "consistency"]
OnnxProvider = Literal["CPUExecutionProvider", "CUDAExecutionProvider",
                       "TensorrtExecutionProvider"]


class DiffusionConfig(BaseModel):
    """The visual-conditioned latent diffusion generator."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    model: str = Field("", description="Model folder in the diffusers save_pretrained layout.")
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="'auto': cuda when available, else cpu.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="'auto': float32 on cpu, float16 on cuda.")
    backend: Backend = Field(
        "torch", description="torch (eager / CUDA graphs), onnx (ORT), or simulated: a "
                             "benchmark's stand-in for a GPU on a CPU, never for a room (it "
                             "plays noise; see simulated_window_ms).")
    simulated_window_ms: dict[int, float] = Field(
        default_factory=dict,
        description="backend = 'simulated': the wall time of one window per batch bucket, as "
                    "a GPU measured it (e.g. {1 = 63.1, 4 = 145.1, 16 = 406.9}, an H200); "
                    "linear between them and beyond the largest. The networks' work becomes "
                    "that wait, so `bench rooms` shows what the engine's scheduling does with that "
                    "GPU's timing on any CPU.")
    onnx_dir: str = Field("", description="Folder written by `art2mus export-onnx` "
                                          "(backend = 'onnx').")
    onnx_providers: tuple[OnnxProvider, ...] = Field(
        ("CPUExecutionProvider",), description="ONNX Runtime execution providers, in order.")
    onnx_provider_options: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Options per provider, e.g. {TensorrtExecutionProvider = "
                    "{trt_fp16_enable = 'True', trt_engine_cache_enable = 'True', "
                    "trt_engine_cache_path = '/var/cache/art2mus/trt'}}.")
    sampler: SamplerName = Field(
        "auto", description="'auto': what the model folder declares (dpm_solver for an "
                            "original model, consistency for a distilled student).")
    steps: int = Field(4, ge=1, le=8, description="Denoising steps per chunk.")
    guidance_scale: float | None = Field(
        None, ge=1.0, le=20.0,
        description="Classifier-free guidance. dpm_solver: > 1 runs a second (unconditional) "
                    "pass per step; consistency: folded into the student (one pass). "
                    "Unset: 1.0 for an original model, the scale a student was distilled "
                    "for (the middle of its recorded range).")
    window_s: float = Field(2.56, gt=0.0, le=30.0,
                            description="Length of one model window (latent chunk).")
    overlap_s: float = Field(
        0.64, gt=0.0, le=10.0,
        description="Latent overlap between windows: kept as the known region while "
                    "sampling the next window, and crossfaded in audio.")
    overlap_crossfade: Literal["equal_power", "linear"] = Field(
        "linear",
        description="Shape of the audio crossfade over the overlap. Linear by default: "
                    "with latent continuity the two decodes of an overlap correlate at "
                    "about 0.99, where equal-power gains swell by up to +3 dB; equal-power "
                    "suits uncorrelated material (audio_out uses it for transitions).")
    transition: Literal["slerp", "cut"] = Field(
        "slerp", description="On an artwork change: slerp the conditioning from the old "
                             "artwork's over transition_s, or cut to the new one.")
    transition_s: float = Field(4.0, ge=0.0, le=60.0,
                                description="Duration of the conditioning slerp.")
    target_lufs: float = Field(
        -18.0, ge=-40.0, le=-6.0,
        description="Loudness the output settles at (as engine.procedural.target_lufs): a "
                    "slow follower (ITU-R BS.1770, gated, over about 6 s) levels the model's "
                    "output towards it, by at most 24 dB either way and ramped over each "
                    "window, so a room switching generators (Ray's procedural fallback) "
                    "keeps its level.")
    threads: int = Field(0, ge=0, le=256,
                         description="CPU threads for this process: torch's, and ONNX Runtime's "
                                     "intra-op threads on the onnx backend (0: their defaults).")
    cuda_graphs: Flag = Field(True, description="Capture each window (all steps, VAE, vocoder) "
                              "as one CUDA graph per batch bucket (CUDA, torch backend).")
    compile: Literal["off", "default", "max-autotune-no-cudagraphs"] = Field(
        "off",
        description="torch.compile mode for the UNet (CUDA, torch backend): inductor fuses its "
                    "many small kernels. Each batch bucket compiles as the engine starts, before "
                    "it serves, about 2.5 min per bucket for the real-size model on an H200 "
                    "(the engine is silent meanwhile: raise supervisor.startup_grace_s and "
                    "hang_after_s above that), where a 10.24 s window at batch 1 "
                    "went from 63 to 49 ms. 'off': eager kernels (captured in the CUDA graph "
                    "all the same).")
    batch_buckets: tuple[int, ...] = Field(
        (1, 2, 4, 8, 16),
        description="Static batch sizes: n rooms sampled together run at the smallest bucket "
                    ">= n (padded; the padding is discarded), more than the largest in several "
                    "batches. One CUDA graph per bucket. Padding is wasted work on a CPU: list "
                    "every size you run there (e.g. [1, 2, 3]).")

    ahead_batch: int = Field(
        4, ge=0, le=1024,
        description="Windows made ahead of need in a turn when no room needs one: for the "
                    "rooms whose windows fall due soonest (within twice engine.lead_s), so "
                    "rooms whose windows fall due together (started together) do not all "
                    "wait on one long burst. Small: a view arriving meanwhile waits for "
                    "this batch. 0: only in the padding rows of batches that run anyway.")

    @model_validator(mode="after")
    def _consistent(self) -> DiffusionConfig:
        if 2 * self.overlap_s > self.window_s:
            raise ValueError(f"engine.diffusion.overlap_s must be at most half of window_s "
                             f"({self.window_s}), got {self.overlap_s}")
        if self.backend == "onnx" and not self.onnx_dir:
            raise ValueError("engine.diffusion.onnx_dir must name a folder written by "
                             "`art2mus export-onnx` when backend = 'onnx'")
        if self.backend == "simulated" and not self.simulated_window_ms:
            raise ValueError("engine.diffusion.simulated_window_ms must give at least one "
                             "batch size's window time when backend = 'simulated'")
        bad = {k: v for k, v in self.simulated_window_ms.items() if k < 1 or v <= 0.0}
        if bad:
            raise ValueError(f"engine.diffusion.simulated_window_ms: batch sizes must be >= 1 "
                             f"and times > 0 ms, got {bad}")
        if not self.onnx_providers:
            raise ValueError("engine.diffusion.onnx_providers must name at least one provider")
        unknown = sorted(set(self.onnx_provider_options) - set(self.onnx_providers))
        if unknown:
            raise ValueError(f"engine.diffusion.onnx_provider_options: {unknown} not in "
                             f"onnx_providers {list(self.onnx_providers)}")
        buckets = list(self.batch_buckets)
        if not buckets or min(buckets) < 1 or any(b <= a for a, b in pairwise(buckets)):
            raise ValueError(f"engine.diffusion.batch_buckets must be positive, strictly "
                             f"increasing batch sizes (e.g. [1, 2, 4, 8, 16]), got {buckets}")
        return self
