"""DiffusionGenerator: the :class:`engine.generators.Generator` over latent audio diffusion.

Flow, per room (see ARCHITECTURE.md)::

    prepare(view)  image embedding -> VisualConditioner -> GPT-2 tokens   (once per artwork)
    start(...)     a DiffusionState at a timeline sample (slerp or cut from ``previous``)
    generate(...)  windows of latents, sampled few-step with the previous
                   window's last latent frames kept as the known region
                   -> VAE decode -> mel -> HiFi-GAN (16 kHz)
                   -> equal-power crossfade over the overlap with the
                      previous window's tail -> resample -> channels -> buffer
                   -> the requested frames out of the buffer

Model windows have static shapes (``window_frames`` latent frames); the
stream state carries the known latents, the pending audio tail and the
output buffer, so any ``frames`` request is served sample-continuously.
Several rooms' windows run as one batch (:meth:`DiffusionGenerator.generate_batch`),
padded to a static batch bucket (``engine.diffusion.batch_buckets``,
:func:`batch_groups`): n rooms run at the smallest bucket >= n, more than
the largest bucket in several batches; the padding rows repeat the last
room's inputs and their outputs are discarded, so padding changes no room's
audio. Streams that start (no known region yet) are sampled apart from
those that continue.

Backends: eager torch (fp32 on CPU; fp16/bf16 on CUDA) or ONNX Runtime
(:mod:`engine.generators.diffusion.onnx_backend`). On CUDA with the torch backend the
whole window (every sampling step, VAE decode and vocoder:
:meth:`DiffusionGenerator.window_program`) is captured as one CUDA graph per
batch bucket and replayed (:class:`CudaGraphProgram`); the per-step noise is
drawn on the host beforehand, from each room's own generator, so the graph
holds no randomness of its own. The graph path has not yet run on a GPU
(tests/test_gpu.py checks it against eager where one exists).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from engine.config import EngineConfig
from engine.generators.base import Generated
from engine.generators.diffusion.conditioner import check_embedding
from engine.generators.diffusion.config import DiffusionConfig
from engine.generators.diffusion.model import LoadedModel, load_model
from engine.generators.diffusion.samplers import (
    FewStepSampler,
    draw_noise,
    guidance_embedding,
    sample,
)
from ground.errors import ConfigError, InputError
from ground.protocol import ArtworkView

# ---------------------------------------------------------------------------
# conditioning and state


@dataclass(frozen=True)
class DiffusionCondition:
    """Cross-attention tokens for one artwork (or the empty wall), computed once."""

    key: str
    tokens: torch.Tensor  # (1, generated_tokens, lm_width)
    empty: bool
    embedding_norm: float

    def __post_init__(self) -> None:
        if self.tokens.ndim != 3 or self.tokens.shape[0] != 1:
            raise ValueError(f"tokens must be (1, tokens, width), got {tuple(self.tokens.shape)}")


@dataclass(frozen=True)
class WindowPlan:
    """Sizes of one model window, in latent frames and in model-rate samples."""

    window_frames: int
    overlap_frames: int
    latent_bins: int
    latent_channels: int
    samples_per_frame: int
    model_rate: int

    @property
    def hop_frames(self) -> int:
        return self.window_frames - self.overlap_frames

    @property
    def window_samples(self) -> int:
        return self.window_frames * self.samples_per_frame

    @property
    def overlap_samples(self) -> int:
        return self.overlap_frames * self.samples_per_frame

    @property
    def hop_samples(self) -> int:
        return self.hop_frames * self.samples_per_frame

    @property
    def hop_s(self) -> float:
        return self.hop_samples / self.model_rate

    @classmethod
    def for_model(cls, model: LoadedModel, config: DiffusionConfig) -> WindowPlan:
        """The plan for ``config``'s window/overlap on ``model``; ConfigError naming the field."""
        fps = model.spec.latent_frames_per_second
        multiple = model.unet_downsample
        window = round(config.window_s * fps)
        if window < multiple or window % multiple or abs(window - config.window_s * fps) > 1e-6:
            raise ConfigError(
                f"engine.diffusion.window_s: expected a multiple of {multiple / fps:g} s "
                f"({multiple} latent frames at {fps:g}/s) for {model.folder}, "
                f"got {config.window_s}")
        overlap = round(config.overlap_s * fps)
        if overlap < 1 or abs(overlap - config.overlap_s * fps) > 1e-6 or 2 * overlap > window:
            raise ConfigError(
                f"engine.diffusion.overlap_s: expected a whole number of latent frames "
                f"(1/{fps:g} s), at most half of window_s ({config.window_s}), "
                f"got {config.overlap_s}")
        return cls(window, overlap, model.latent_bins, model.latent_channels,
                   model.samples_per_latent_frame, model.spec.sample_rate)


@dataclass
class DiffusionState:
    """One room's stream: where it is, what it keeps for continuity, what is buffered.

    ``known`` holds the last window's overlap latents (the next window's known
    region); ``tail`` the audio of that overlap at the model rate, emitted
    after it is crossfaded with the next window's start; ``buffer`` output-rate
    frames generated but not yet returned.
    """

    seed: int
    start_sample: int
    position: int
    windows: int
    plan: WindowPlan
    channels: int
    known: torch.Tensor | None = None
    tail: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    buffer: np.ndarray | None = None
    resampler: Any | None = None
    from_tokens: torch.Tensor | None = None
    tokens: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.buffer is None:
            self.buffer = np.zeros((0, self.channels), np.float32)
        plan = self.plan
        if self.known is not None and tuple(self.known.shape) != (
                1, plan.latent_channels, plan.overlap_frames, plan.latent_bins):
            raise ValueError(f"known latents must be (1, {plan.latent_channels}, "
                             f"{plan.overlap_frames}, {plan.latent_bins}), got "
                             f"{tuple(self.known.shape)}")
        if self.tail.shape not in ((0,), (plan.overlap_samples,)):
            raise ValueError(f"tail must be empty or ({plan.overlap_samples},), "
                             f"got {self.tail.shape}")
        if self.buffer.ndim != 2 or self.buffer.shape[1] != self.channels:
            raise ValueError(f"buffer must be (frames, {self.channels}), got {self.buffer.shape}")
        if (self.known is None) != (self.tail.size == 0):
            raise ValueError("known latents and audio tail must be both set or both empty")


# ---------------------------------------------------------------------------
# backends: what runs the UNet and the decoder


class Backend(Protocol):
    """Runs the networks for a batch of windows (batch first, static shapes)."""

    def unet(self, sample: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor,
             support: torch.Tensor, timestep_cond: torch.Tensor | None) -> torch.Tensor: ...

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (batch, C, frames, bins) -> waveform (batch, samples) at the model rate."""
        ...


class TorchBackend:
    """Eager torch, on whatever device the model is loaded on. (On CUDA the generator
    captures whole windows around it as graphs: :class:`CudaGraphProgram`.)"""

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


class CudaGraphProgram:
    """A tensor program captured once as a CUDA graph, replayed on new inputs.

    ``program(*inputs)`` must be a pure function of its tensor inputs whose
    work stays on the device (no host copies, no waits): the generator's window
    program (every sampling step, the VAE decode and the vocoder) is written
    so. The torch recipe: warm up on a side stream, capture into static
    buffers; each call copies its inputs into those buffers, replays, and
    returns copies of the outputs. One instance per input shape, i.e. per batch
    bucket and known-region shape. Needs CUDA; tests/test_gpu.py checks replay
    against eager on a GPU.
    """

    def __init__(self, program: Callable[..., tuple[torch.Tensor, ...]],
                 inputs: Sequence[torch.Tensor | None], warmups: int = 2) -> None:
        self.static = [None if x is None else x.clone() for x in inputs]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(warmups):
                program(*self.static)
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = program(*self.static)

    def __call__(self, *inputs: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        if len(inputs) != len(self.static):
            raise ValueError(f"expected {len(self.static)} inputs, got {len(inputs)}")
        for buffer, value in zip(self.static, inputs, strict=True):
            if (buffer is None) != (value is None):
                raise ValueError("an input that was None at capture must stay None")
            if buffer is not None and value is not None:
                buffer.copy_(value)
        self.graph.replay()
        return tuple(output.clone() for output in self.outputs)


# ---------------------------------------------------------------------------
# the generator


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


def slerp_tokens(start: torch.Tensor, end: torch.Tensor, alpha: float) -> torch.Tensor:
    """Per-token spherical interpolation of direction, linear of norm (Shoemake, 1985)."""
    if alpha <= 0.0:
        return start
    if alpha >= 1.0:
        return end
    a, b = start.float(), end.float()
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    ua, ub = a / na.clamp_min(1e-8), b / nb.clamp_min(1e-8)
    cos = (ua * ub).sum(-1, keepdim=True).clamp(-1.0, 1.0)
    theta = torch.arccos(cos)
    sin = torch.sin(theta)
    linear = sin.abs() < 1e-4
    wa = torch.where(linear, 1.0 - alpha, torch.sin((1.0 - alpha) * theta) / sin)
    wb = torch.where(linear, torch.full_like(theta, alpha), torch.sin(alpha * theta) / sin)
    direction = wa * ua + wb * ub
    direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    return (direction * ((1.0 - alpha) * na + alpha * nb)).to(start.dtype)


def overlap_gains(samples: int, shape: str) -> tuple[np.ndarray, np.ndarray]:
    """Fade-out and fade-in gains over ``samples`` (equal-power: cos/sin, power sums to 1)."""
    x = (np.arange(samples, dtype=np.float64) + 0.5) / samples
    if shape == "linear":
        return (1.0 - x).astype(np.float32), x.astype(np.float32)
    return np.cos(0.5 * np.pi * x).astype(np.float32), np.sin(0.5 * np.pi * x).astype(np.float32)


def batch_groups(count: int, buckets: Sequence[int]) -> list[tuple[int, int]]:
    """How ``count`` streams are sampled: (streams, padded batch size) for each model batch.

    The smallest bucket >= ``count``; beyond the largest bucket, full batches
    of the largest and the rest in the smallest bucket that holds it.
    """
    if count < 0 or not buckets:
        raise ValueError(f"expected count >= 0 and buckets, got {count} and {list(buckets)}")
    largest = buckets[-1]
    groups = []
    while count > largest:
        groups.append((largest, largest))
        count -= largest
    if count:
        groups.append((count, next(b for b in buckets if b >= count)))
    return groups


def window_seed(seed: int, start_sample: int, window: int) -> int:
    """A per-room, per-stream, per-window noise seed (stable across runs)."""
    mixed = (seed * 0x9E3779B97F4A7C15 + start_sample * 0xBF58476D1CE4E5B9 + window) & (2**63 - 1)
    return mixed


def student_guidance(model: LoadedModel, config: DiffusionConfig, kind: str) -> float:
    """The guidance scale to sample with: a student's recorded range bounds it.

    Left unset, it is 1.0 (no guidance) for an original model and, for a
    student that records the range it was distilled for, the range's midpoint
    (its one scale, if baked in); a scale set outside that range is refused.
    """
    scale = config.guidance_scale
    bounds = model.spec.guidance_range if kind == "consistency" else None
    if bounds is None:
        return 1.0 if scale is None else scale
    low, high = bounds
    if scale is None:
        return 0.5 * (low + high)
    if not low - 1e-6 <= scale <= high + 1e-6:
        scales = f"scale {low:g}" if low == high else f"scales [{low:g}, {high:g}]"
        raise ConfigError(f"engine.diffusion.guidance_scale: {scale:g} is outside the "
                          f"guidance {scales} the student {model.folder} was distilled "
                          f"for; set one within it or leave it unset")
    return scale


class DiffusionGenerator:
    """Image-conditioned latent diffusion behind the Generator protocol."""

    def __init__(self, model: LoadedModel, config: DiffusionConfig, sample_rate: int,
                 channels: int, backend: Backend | None = None) -> None:
        self.model = model
        self.config = config
        self.sample_rate = sample_rate
        self.channels = channels
        self.plan = WindowPlan.for_model(model, config)
        kind = model.spec.sampler if config.sampler == "auto" else config.sampler
        if kind == "consistency" and not model.spec.guidance_embedding_dim:
            raise ConfigError(f"engine.diffusion.sampler: 'consistency' needs a distilled "
                              f"student; {model.folder} is an original model (dpm_solver)")
        self.sampler = FewStepSampler(kind, model.scheduler_config, config.steps,
                                      student_guidance(model, config, kind))
        self.backend: Backend = backend or TorchBackend(model)
        # Whole windows as CUDA graphs: torch backend on CUDA only (ONNX Runtime has its own).
        self.use_graphs = (config.cuda_graphs and model.device.type == "cuda"
                           and isinstance(self.backend, TorchBackend))
        if config.compile != "off" and model.device.type == "cuda" \
                and isinstance(self.backend, TorchBackend):
            compile_unet(model, config.compile)
        self._graphs: dict[tuple[Any, ...], CudaGraphProgram] = {}
        self.fade_out, self.fade_in = overlap_gains(self.plan.overlap_samples,
                                                    config.overlap_crossfade)

    @classmethod
    def from_config(cls, config: EngineConfig) -> DiffusionGenerator:
        """Load ``config.diffusion.model`` and build the generator the config names."""
        diffusion = config.diffusion
        if diffusion.threads:
            torch.set_num_threads(diffusion.threads)  # process-wide: the engine owns its CPU
        model = load_model(Path(diffusion.model), diffusion.device, diffusion.dtype)
        backend: Backend | None = None
        if diffusion.backend == "onnx":
            from engine.generators.diffusion.onnx_backend import OnnxBackend

            plan = WindowPlan.for_model(model, diffusion)
            backend = OnnxBackend(Path(diffusion.onnx_dir), model, diffusion.onnx_providers,
                                  plan.window_frames, diffusion.onnx_provider_options)
        return cls(model, diffusion, config.sample_rate, config.channels, backend)

    # -- protocol ------------------------------------------------------------

    def prepare(self, view: ArtworkView) -> DiffusionCondition:
        """Tokens for this view (GPT-2 generation): once per artwork, cached by the session."""
        key = view.key
        if view.state == "empty":
            return DiffusionCondition(key, self.model.unconditional_tokens, True, 0.0)
        if view.embedding is None:
            raise InputError(f"ArtworkView of room {view.room!r} (artwork {key}) has no "
                             f"embedding; the diffusion generator needs one of width "
                             f"{self.model.spec.embedding_dim}")
        where = f"ArtworkView.embedding of room {view.room!r} (artwork {key})"
        embedding = check_embedding(view.embedding.to_numpy(), self.model.spec.embedding_dim,
                                    where)
        return self.condition_from_embedding(key, embedding)

    def condition_from_embedding(self, key: str, embedding: np.ndarray) -> DiffusionCondition:
        """Tokens for a (1, embedding_dim) float32 embedding."""
        model = self.model
        with torch.inference_mode():
            x = torch.tensor(np.asarray(embedding), device=model.device, dtype=model.dtype)
            tokens = model.conditioner.tokens(x, model.language_model, model.projection_model)
        return DiffusionCondition(key, tokens, False, float(np.linalg.norm(embedding)))

    def describe(self, condition: DiffusionCondition) -> dict[str, Any]:
        return {
            "generator": "diffusion", "artwork": condition.key, "empty": condition.empty,
            "embedding_norm": round(condition.embedding_norm, 4),
            "sampler": self.sampler.kind, "steps": self.sampler.steps,
            "guidance_scale": self.sampler.guidance_scale,
            "window_s": self.plan.window_samples / self.plan.model_rate,
            "model": str(self.model.folder),
        }

    def start(self, condition: DiffusionCondition, seed: int, start_sample: int,
              previous: DiffusionState | None) -> DiffusionState:
        """A new stream at ``start_sample``; from ``previous``, slerp or cut the conditioning."""
        from_tokens = None
        if (previous is not None and self.config.transition == "slerp"
                and self.config.transition_s > 0.0 and previous.tokens is not None):
            from_tokens = previous.tokens
        return DiffusionState(seed=seed, start_sample=start_sample, position=start_sample,
                              windows=0, plan=self.plan, channels=self.channels,
                              resampler=self._new_resampler(), from_tokens=from_tokens)

    def generate(self, state: DiffusionState, condition: DiffusionCondition,
                 frames: int) -> tuple[Generated, DiffusionState]:
        """The next ``frames`` of this stream (sample-continuous) and the state after them."""
        [(generated, new_state)] = self.generate_batch([(state, condition, frames)])
        return generated, new_state

    def generate_batch(self, requests: Sequence[tuple[DiffusionState, DiffusionCondition, int]]
                       ) -> list[tuple[Generated, DiffusionState]]:
        """Serve several rooms at once: their windows are sampled in bucketed batches.

        Each request is one room's (state, condition, frames); the results are
        what :meth:`generate` would return for each alone (same seeds, same
        continuity), in request order.
        """
        states = [replace(state) for state, _, _ in requests]
        for _, _, frames in requests:
            if frames < 0:
                raise ValueError(f"frames must be >= 0, got {frames}")
        while True:
            due = [i for i, (state, (_, _, frames)) in enumerate(zip(states, requests,
                                                                     strict=True))
                   if len(state.buffer) < frames]  # type: ignore[arg-type]
            if not due:
                break
            new = self._windows([states[i] for i in due], [requests[i][1] for i in due])
            for i, state in zip(due, new, strict=True):
                states[i] = state
        results = []
        for state, (_, _, frames) in zip(states, requests, strict=True):
            assert state.buffer is not None
            audio = np.ascontiguousarray(state.buffer[:frames])
            state.buffer = state.buffer[frames:]
            state.position += frames
            results.append((Generated(audio), state))
        return results

    # -- batches of windows --------------------------------------------------

    def _tokens_for(self, state: DiffusionState, condition: DiffusionCondition) -> torch.Tensor:
        if state.from_tokens is None:
            return condition.tokens
        transition_s = self.config.transition_s
        alpha = min(1.0, (state.windows + 1) * self.plan.hop_s / transition_s)
        return slerp_tokens(state.from_tokens, condition.tokens, alpha)

    def _windows(self, states: Sequence[DiffusionState],
                 conditions: Sequence[DiffusionCondition]) -> list[DiffusionState]:
        """One more window for each stream, in bucketed batches of static shape.

        Streams that start (no known region) and streams that continue go in
        separate batches, so that every batch has a static known region.
        """
        done: dict[int, DiffusionState] = {}
        for starting in (True, False):
            index = [i for i, s in enumerate(states) if (s.known is None) == starting]
            begin = 0
            for rooms, bucket in batch_groups(len(index), self.config.batch_buckets):
                part = index[begin:begin + rooms]
                begin += rooms
                new = self._window_batch([states[i] for i in part],
                                         [conditions[i] for i in part], bucket)
                done.update(zip(part, new, strict=True))
        return [done[i] for i in range(len(states))]

    def _window_batch(self, states: list[DiffusionState], conditions: list[DiffusionCondition],
                      bucket: int) -> list[DiffusionState]:
        """One window for each of ``states`` (all starting or all continuing), sampled as a
        batch of ``bucket`` rows: the rows past the real streams repeat the last one's
        inputs, with noise generators of their own, and are discarded."""
        model, plan = self.model, self.plan
        count = len(states)
        if not 1 <= count <= bucket:
            raise ValueError(f"expected 1..{bucket} streams for a batch of {bucket}, got {count}")
        pad = bucket - count
        device, dtype = model.device, model.dtype
        token_rows = [self._tokens_for(s, c) for s, c in zip(states, conditions, strict=True)]
        tokens = torch.cat(token_rows + token_rows[-1:] * pad)
        support = model.support_prompt.expand(bucket, -1, -1)
        generators, noises = [], []
        for state in states:
            generator = torch.Generator().manual_seed(
                window_seed(state.seed, state.start_sample, state.windows))
            noises.append(torch.randn((1, plan.latent_channels, plan.window_frames,
                                       plan.latent_bins), generator=generator))
            generators.append(generator)
        # Padding rows draw their sampler noise from their own generators: sharing a
        # room's would advance it and change that room's next steps.
        generators += [torch.Generator().manual_seed(0) for _ in range(pad)]
        noise = torch.cat(noises + noises[-1:] * pad).to(device, dtype)
        known = None
        if states[0].known is not None:
            known_rows = [s.known for s in states]
            known = torch.cat(known_rows + known_rows[-1:] * pad)  # type: ignore[arg-type]
        latents, audio = self.sample_windows(tokens, support, noise, known, generators)
        new_states = []
        for i, state in enumerate(states):
            window = audio[i].copy()
            if state.tail.size:
                head = slice(0, plan.overlap_samples)
                window[head] = state.tail * self.fade_out + window[head] * self.fade_in
            emitted = window[:plan.hop_samples]
            out = self._to_output(state, emitted)
            assert state.buffer is not None
            new_states.append(replace(
                state, windows=state.windows + 1,
                known=latents[i:i + 1, :, plan.hop_frames:].clone(),
                tail=window[plan.hop_samples:].copy(),
                buffer=np.concatenate([state.buffer, out]),
                tokens=tokens[i:i + 1],
            ))
        return new_states

    def sample_windows(self, tokens: torch.Tensor, support: torch.Tensor, noise: torch.Tensor,
                       known: torch.Tensor | None, generators: list[torch.Generator]
                       ) -> tuple[torch.Tensor, np.ndarray]:
        """One batch of windows: latents (batch, C, frames, bins) and model-rate audio.

        ``generators`` (one per row) feed the consistency sampler's per-step
        noise, drawn here up front so that the window program is a pure
        function of tensors (:meth:`window_program`), captured per input
        shape as a CUDA graph where the config asks for graphs on CUDA.
        """
        plan, model = self.plan, self.model
        batch = tokens.shape[0]
        steps = self.sampler.stochastic_steps
        step_noise = torch.stack([draw_noise(noise.shape, generators) for _ in range(steps)]) \
            if steps else torch.zeros((0, *noise.shape))
        inputs = (tokens, support, noise, known,
                  step_noise.to(model.device, model.dtype), self._timestep_cond(batch))
        with torch.inference_mode():
            if self.use_graphs:
                key = tuple(None if x is None else tuple(x.shape) for x in inputs)
                if key not in self._graphs:
                    self._graphs[key] = CudaGraphProgram(self.window_program, inputs)
                latents, waveform = self._graphs[key](*inputs)
            else:
                latents, waveform = self.window_program(*inputs)
        audio = waveform.float().cpu().numpy()
        if audio.shape[0] != batch or audio.shape[1] < plan.window_samples:
            raise RuntimeError(f"decoder returned {audio.shape}, expected at least "
                               f"{(batch, plan.window_samples)}")
        # HiFi-GAN's transposed convolutions add a few samples; trim as AudioLDM2Pipeline does.
        return latents, audio[:, :plan.window_samples]

    def window_program(self, tokens: torch.Tensor, support: torch.Tensor, noise: torch.Tensor,
                       known: torch.Tensor | None, step_noise: torch.Tensor,
                       timestep_cond: torch.Tensor | None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every sampling step, the VAE decode and the vocoder for one batch of windows:
        (latents, waveform). Device work only, so it can be captured as one CUDA graph."""
        denoise = self._denoiser(tokens, support, timestep_cond)
        latents = sample(self.sampler, denoise, noise, known, step_noise=step_noise)
        return latents, self.backend.decode(latents)

    def _timestep_cond(self, batch: int) -> torch.Tensor | None:
        """The student's guidance-scale embedding for ``batch`` rows (made outside graphs)."""
        if self.sampler.kind != "consistency":
            return None
        model = self.model
        return guidance_embedding(self.sampler.guidance_scale, model.spec.guidance_embedding_dim,
                                  batch, model.dtype, model.device)

    def _denoiser(self, tokens: torch.Tensor, support: torch.Tensor,
                  timestep_cond: torch.Tensor | None) -> Any:
        sampler, backend, model = self.sampler, self.backend, self.model
        batch = tokens.shape[0]
        if sampler.unconditional_pass:
            uncond = model.unconditional_tokens.expand(batch, -1, -1)
            both_tokens = torch.cat([uncond, tokens])
            both_support = torch.cat([support, support])
            scale = sampler.guidance_scale

            def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                out = backend.unet(torch.cat([x, x]), t, both_tokens, both_support, None)
                eps_uncond, eps_cond = out.chunk(2)
                return eps_uncond + scale * (eps_cond - eps_uncond)

            return guided

        def single(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return backend.unet(x, t, tokens, support, timestep_cond)

        return single

    def _new_resampler(self) -> Any:
        if self.sample_rate == self.plan.model_rate:
            return None
        import soxr

        return soxr.ResampleStream(self.plan.model_rate, self.sample_rate, 1, dtype="float32",
                                   quality="HQ")

    def _to_output(self, state: DiffusionState, audio: np.ndarray) -> np.ndarray:
        mono = audio.astype(np.float32, copy=False)
        if state.resampler is not None:
            mono = state.resampler.resample_chunk(mono)
        return np.repeat(mono[:, None], self.channels, axis=1).astype(np.float32)
