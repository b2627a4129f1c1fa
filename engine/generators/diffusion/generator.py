"""DiffusionGenerator: the :class:`engine.generators.Generator` over latent audio diffusion.

Flow, per room (see ARCHITECTURE.md)::

    prepare(view)  image embedding -> VisualConditioner -> GPT-2 tokens   (once per artwork)
    start(...)     a DiffusionState at a timeline sample (slerp or cut from ``previous``)
    generate(...)  windows of latents, sampled few-step with the previous
                   window's last latent frames kept as the known region
                   -> VAE decode -> mel -> HiFi-GAN (16 kHz)
                   -> equal-power crossfade over the overlap with the
                      previous window's tail -> loudness follower (towards
                      target_lufs) -> resample -> channels -> buffer
                   -> the requested frames out of the buffer

Model windows have static shapes (``window_frames`` latent frames); the
stream state carries the known latents, the pending audio tail and the
output buffer, so any ``frames`` request is served sample-continuously.
Several rooms' windows run as one batch (:meth:`DiffusionGenerator.generate_batch`),
padded to a static batch bucket (``engine.diffusion.batch_buckets``): n rooms
run at the smallest bucket >= n, more than the largest bucket in several
batches; the padding rows repeat the last room's inputs and their outputs
are discarded, so padding changes no room's audio. Streams that start (no
known region yet) are sampled apart from those that continue.

Backends: eager torch (fp32 on CPU; fp16/bf16 on CUDA) or ONNX Runtime
(:mod:`engine.generators.diffusion.onnx_backend`). On CUDA with the torch backend the
whole window (every sampling step, VAE decode and vocoder:
:meth:`DiffusionGenerator.window_program`) is captured as one CUDA graph per
batch bucket and replayed; the per-step noise is drawn on the host
beforehand, from each room's own generator, so the graph holds no
randomness of its own. tests/test_gpu.py checks replay against eager on a GPU.

This module is the pipeline that ties the parts together; each part has its own module:
``state`` (conditions, window plan, stream state), ``batching`` (which rooms share a
batch, padded inputs, per-window seeds), ``samplers`` (the noise schedule),
``backends`` (the ``Backend`` protocol, eager torch, ``torch.compile``), ``onnx_backend``
(ONNX Runtime) and ``graphs`` (the CUDA-graph runner).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.config import EngineConfig
from engine.generators.base import Generated, RoomControls
from engine.generators.diffusion.backends import (
    Backend,
    SimulatedBackend,
    TorchBackend,
    compile_unet,
)
from engine.generators.diffusion.batching import assemble_batch, batch_groups, plan_batches
from engine.generators.diffusion.conditioner import check_embedding
from engine.generators.diffusion.config import DiffusionConfig
from engine.generators.diffusion.graphs import CudaGraphProgram, replay_graph
from engine.generators.diffusion.loudness import LoudnessFollower
from engine.generators.diffusion.model import LoadedModel, encoder_matches, load_model
from engine.generators.diffusion.samplers import (
    FewStepSampler,
    SamplerKind,
    draw_noise,
    guidance_embedding,
    sample,
)
from engine.generators.diffusion.state import DiffusionCondition, DiffusionState, WindowPlan
from ground.errors import ConfigError, InputError
from ground.protocol import ArtworkView


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


def walkable_sampler(model: LoadedModel, kind: SamplerKind, steps: int,
                     guidance_scale: float) -> FewStepSampler:
    """The sampler, walked once over its timesteps here at start-up rather than at the first
    window: InputError naming the scheduler file when diffusers cannot walk the schedule in
    ``steps`` steps (what ``check_scheduler_config``'s value checks let through, e.g. an
    LCM ``original_inference_steps`` below ``steps``) or a noise level is not finite."""
    path = model.folder / "scheduler" / "scheduler_config.json"
    expected = f"a noise schedule the {kind} sampler can walk in {steps} steps"
    try:
        sampler = FewStepSampler(kind, model.scheduler_config, steps, guidance_scale)
        levels = [level for t in sampler.set_timesteps("cpu") for level in sampler.noise_level(t)]
    # diffusers raises these on a config it cannot use (ValueError, NotImplementedError for
    # an unknown option); IndexError/ZeroDivisionError/OverflowError from degenerate schedules.
    except (ValueError, TypeError, NotImplementedError, IndexError, ZeroDivisionError,
            OverflowError) as error:
        raise InputError(f"expected {expected} in {path}, got: {error}") from error
    if not all(math.isfinite(level) for level in levels):
        raise InputError(f"expected {expected} in {path}, got non-finite noise levels "
                         f"{levels}")
    return sampler


def start_checks(model: LoadedModel, config: DiffusionConfig) -> tuple[WindowPlan, FewStepSampler]:
    """What the generator checks of ``config`` against ``model`` before it serves: the window
    plan (ConfigError naming window_s or overlap_s), the sampler the model allows, the
    guidance scale and the noise schedule walked once. Also run by ``art2mus check-config
    --deep`` on :func:`~engine.generators.diffusion.model.inspect_model`'s weightless model."""
    plan = WindowPlan.for_model(model, config)
    kind = model.spec.sampler if config.sampler == "auto" else config.sampler
    if kind == "consistency" and not model.spec.guidance_embedding_dim:
        raise ConfigError(f"engine.diffusion.sampler: 'consistency' needs a distilled "
                          f"student; {model.folder} is an original model (dpm_solver)")
    sampler = walkable_sampler(model, kind, config.steps, student_guidance(model, config, kind))
    return plan, sampler


class DiffusionGenerator:
    """Image-conditioned latent diffusion behind the Generator protocol."""

    def __init__(self, model: LoadedModel, config: DiffusionConfig, sample_rate: int,
                 channels: int, backend: Backend | None = None) -> None:
        self.model = model
        self.config = config
        self.sample_rate = sample_rate
        self.channels = channels
        self.plan, self.sampler = start_checks(model, config)
        self.backend: Backend = backend or TorchBackend(model)
        # Whole windows as CUDA graphs: torch backend on CUDA only (ONNX Runtime has its own).
        self.use_graphs = (config.cuda_graphs and model.device.type == "cuda"
                           and isinstance(self.backend, TorchBackend))
        if config.compile != "off" and model.device.type == "cuda" \
                and isinstance(self.backend, TorchBackend):
            compile_unet(model, config.compile)
        self._graphs: dict[tuple[Any, ...], CudaGraphProgram] = {}
        # One memory pool for every bucket's graph: they never replay at once.
        self._graph_pool = torch.cuda.graph_pool_handle() if self.use_graphs else None
        self.fade_out, self.fade_in = overlap_gains(self.plan.overlap_samples,
                                                    config.overlap_crossfade)
        # A model's raw level is whatever it learnt; rooms (and Ray's procedural fallback,
        # which renders towards its own target) expect the installation's loudness.
        self.loudness = LoudnessFollower(self.plan.model_rate, channels, config.target_lufs)

    @property
    def rooms_per_call(self) -> int:
        """The most rooms needing a window the engine hands over in one call: the largest
        bucket (one model batch)."""
        return self.config.batch_buckets[-1]

    def needs_model(self, state: DiffusionState, frames: int) -> bool:
        """Whether serving ``frames`` from ``state`` needs a new window (else it comes
        from what is buffered)."""
        return state.buffer is None or len(state.buffer) < frames

    def ahead_frames(self, state: DiffusionState) -> int | None:
        """Output frames ``state`` holds made and not yet served, where one more window
        may be made for it ahead of need (a continuing stream with less than one
        window's hop buffered), else None."""
        if state.known is None or state.buffer is None:
            return None
        buffered = len(state.buffer)
        hop = self.plan.hop_samples * self.sample_rate // self.plan.model_rate
        return buffered if buffered < hop else None

    @classmethod
    def from_config(cls, config: EngineConfig) -> DiffusionGenerator:
        """Load ``config.diffusion.model`` and build the generator the config names."""
        diffusion = config.diffusion
        if diffusion.threads:
            torch.set_num_threads(diffusion.threads)  # process-wide: the engine owns its CPU
        model = load_model(Path(diffusion.model), diffusion.device, diffusion.dtype)
        backend: Backend | None = None
        if diffusion.backend == "simulated":
            backend = SimulatedBackend(diffusion.simulated_window_ms,
                                       WindowPlan.for_model(model, diffusion).window_samples)
        if diffusion.backend == "onnx":
            from engine.generators.diffusion.onnx_backend import OnnxBackend

            plan = WindowPlan.for_model(model, diffusion)
            backend = OnnxBackend(Path(diffusion.onnx_dir), model, diffusion.onnx_providers,
                                  plan.window_frames, diffusion.onnx_provider_options,
                                  threads=diffusion.threads)
        return cls(model, diffusion, config.sample_rate, config.channels, backend)

    def warm_graphs(self, progress: Callable[[], None] | None = None) -> int:
        """Capture every bucket's window graphs now (starting and continuing shapes), so
        that no room waits on a capture while others play: a bucket's first use costs
        seconds for the real-size model at large buckets (minutes with ``compile``), paid
        here before the engine serves (:func:`engine.generators.warm_up`). ``progress`` is
        called after each window. Returns how many graphs exist; a no-op without CUDA
        graphs."""
        if not self.use_graphs:
            return 0
        width = self.model.spec.embedding_dim
        # any unit vector: only the shapes matter to a capture
        condition = self.condition_from_embedding(
            "warm-up", np.full((1, width), width ** -0.5, np.float32))
        for bucket in self.config.batch_buckets:
            states = [self.start(condition, i, 0, None) for i in range(bucket)]
            for _ in range(2):  # the starting shape, then the continuing one
                states = self._windows(states, [condition] * bucket)
                if progress is not None:
                    progress()
        return len(self._graphs)

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
        spec = self.model.spec
        if not encoder_matches(spec.encoder_name, view.encoder):
            # Another encoder's space gives the projection garbage: refuse, never play it.
            raise InputError(f"ArtworkView.encoder of room {view.room!r} (artwork {key}): "
                             f"expected {spec.encoder_name!r} ({spec.encoder_width}-d), the "
                             f"encoder {self.model.folder} was trained on, got {view.encoder!r}")
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

    def apply_controls(self, view: ArtworkView, condition: DiffusionCondition,
                       controls: RoomControls) -> DiffusionCondition:
        """``condition`` unchanged: the tokens follow the image embedding, which no knob moves.

        (The variation still reseeds the sampler; that is the session's.)
        """
        return condition

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
        return self.generate_batch_filled(requests)[0]

    def generate_batch_filled(
            self, requests: Sequence[tuple[DiffusionState, DiffusionCondition, int]],
            spare: Sequence[tuple[DiffusionState, DiffusionCondition]] = (),
    ) -> tuple[list[tuple[Generated, DiffusionState]], list[tuple[int, DiffusionState]]]:
        """:meth:`generate_batch`, with the padding rows of its continuing windows' last
        batch put to use: ``spare`` lists other continuing streams (most pressing first,
        each with :meth:`ahead_frames` not None) whose next window is made there,
        ahead of need, at no cost (a bucket of 8 takes as long with 5 rooms as with 8).
        Returns the results and, for each spare stream given a window, (its index in
        ``spare``, its new state). A stream's windows are the same whenever they are
        made, so a room sounds the same either way.
        """
        states = [replace(state) for state, _, _ in requests]
        for _, _, frames in requests:
            if frames < 0:
                raise ValueError(f"frames must be >= 0, got {frames}")
        filled: list[tuple[int, DiffusionState]] = []
        first = True  # spare rows in the first round of windows only
        while True:
            due = [i for i, (state, (_, _, frames)) in enumerate(zip(states, requests,
                                                                     strict=True))
                   if len(state.buffer) < frames]  # type: ignore[arg-type]
            if not due:
                break
            extra = self._spare_rows(sum(states[i].known is not None for i in due),
                                     spare) if first else []
            first = False
            new = self._windows([states[i] for i in due] + [replace(spare[k][0]) for k in extra],
                                [requests[i][1] for i in due] + [spare[k][1] for k in extra])
            for i, state in zip(due, new[:len(due)], strict=True):
                states[i] = state
            filled += zip(extra, new[len(due):], strict=True)
        results = []
        for state, (_, _, frames) in zip(states, requests, strict=True):
            assert state.buffer is not None
            audio = np.ascontiguousarray(state.buffer[:frames])
            state.buffer = state.buffer[frames:]
            state.position += frames
            results.append((Generated(audio), state))
        return results, filled

    def make_ahead(self, spare: Sequence[tuple[DiffusionState, DiffusionCondition]]
                   ) -> list[tuple[int, DiffusionState]]:
        """One window ahead of need for the first ``engine.diffusion.ahead_batch`` of
        ``spare`` (continuing streams, most pressing first) that can take one: the engine
        calls it on a turn when no room needs a window. (index in ``spare``, new state)
        for each."""
        rows = self._takers(spare, self.config.ahead_batch)
        if not rows:
            return []
        new = self._windows([replace(spare[k][0]) for k in rows], [spare[k][1] for k in rows])
        return list(zip(rows, new, strict=True))

    # -- batches of windows --------------------------------------------------

    def _spare_rows(self, continuing: int,
                    spare: Sequence[tuple[DiffusionState, DiffusionCondition]]) -> list[int]:
        """Which of ``spare`` fill the padding of the last batch of ``continuing`` windows
        (none where there are none: a batch of spare windows alone would cost)."""
        if not continuing or not spare:
            return []
        streams, bucket = batch_groups(continuing, self.config.batch_buckets)[-1]
        return self._takers(spare, bucket - streams)

    def _takers(self, spare: Sequence[tuple[DiffusionState, DiffusionCondition]],
                count: int) -> list[int]:
        """The first ``count`` of ``spare`` that can take a window ahead of need."""
        return [k for k, (state, _) in enumerate(spare)
                if self.ahead_frames(state) is not None][:count]

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
        for part, bucket in plan_batches(states, self.config.batch_buckets):
            new = self._window_batch([states[i] for i in part],
                                     [conditions[i] for i in part], bucket)
            done.update(zip(part, new, strict=True))
        return [done[i] for i in range(len(states))]

    def _window_batch(self, states: list[DiffusionState], conditions: list[DiffusionCondition],
                      bucket: int) -> list[DiffusionState]:
        """One window for each of ``states`` (all starting or all continuing), sampled as a
        batch of ``bucket`` rows (:func:`~engine.generators.diffusion.batching.assemble_batch`):
        the padding rows' outputs are discarded; each real stream's window is crossfaded
        with its tail and buffered."""
        model, plan = self.model, self.plan
        token_rows = [self._tokens_for(s, c) for s, c in zip(states, conditions, strict=True)]
        batch = assemble_batch(states, token_rows, model.support_prompt, plan, bucket,
                               model.device, model.dtype)
        tokens = batch.tokens
        latents, audio = self.sample_windows(tokens, batch.support, batch.noise, batch.known,
                                             batch.generators)
        new_states = []
        for i, state in enumerate(states):
            window = audio[i].copy()
            if state.tail.size:
                head = slice(0, plan.overlap_samples)
                window[head] = state.tail * self.fade_out + window[head] * self.fade_in
            emitted, level = self.loudness.follow(state.level, window[:plan.hop_samples])
            out = self._to_output(state, emitted)
            assert state.buffer is not None
            new_states.append(replace(
                state, windows=state.windows + 1,
                known=latents[i:i + 1, :, plan.hop_frames:].clone(),
                tail=window[plan.hop_samples:].copy(),
                buffer=np.concatenate([state.buffer, out]),
                tokens=tokens[i:i + 1],
                level=level,
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
                latents, waveform = replay_graph(self._graphs, self.window_program, inputs,
                                                 self._graph_pool)
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
