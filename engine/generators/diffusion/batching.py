"""Batching across rooms: which streams share a model batch, and their padded inputs.

Where it sits in the flow: each time some rooms need a window, the
generator asks :func:`plan_batches` which of them run together (starting
streams apart from continuing ones, each group split into static batch
buckets by :func:`batch_groups`), and :func:`assemble_batch` builds one
batch's inputs: the rows past the real streams repeat the last stream's
inputs, with noise generators of their own, and their outputs are
discarded, so padding changes no room's audio. Each room's window noise is
seeded by :func:`window_seed`, so a room sounds the same whatever it is
batched with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from engine.generators.diffusion.state import DiffusionState, WindowPlan


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



def plan_batches(states: Sequence[DiffusionState], buckets: Sequence[int]
                 ) -> list[tuple[list[int], int]]:
    """Which streams are sampled together: (indices into ``states``, bucket) per model batch.

    Streams that start (no known region) and streams that continue go in
    separate batches, so that every batch has a static known region.
    """
    batches = []
    for starting in (True, False):
        index = [i for i, s in enumerate(states) if (s.known is None) == starting]
        begin = 0
        for rooms, bucket in batch_groups(len(index), buckets):
            batches.append((index[begin:begin + rooms], bucket))
            begin += rooms
    return batches


@dataclass(frozen=True)
class WindowBatch:
    """One model batch's inputs, padded to its bucket (batch first)."""

    tokens: torch.Tensor  # (bucket, tokens, width)
    support: torch.Tensor  # (bucket, support tokens, support width)
    noise: torch.Tensor  # (bucket, C, window frames, bins), on the model's device and dtype
    known: torch.Tensor | None  # (bucket, C, overlap frames, bins); None for starting streams
    generators: list[torch.Generator]  # one per row: the sampler's per-step noise


def assemble_batch(states: Sequence[DiffusionState], token_rows: list[torch.Tensor],
                   support_prompt: torch.Tensor, plan: WindowPlan, bucket: int,
                   device: torch.device, dtype: torch.dtype) -> WindowBatch:
    """One window's inputs for each of ``states`` (all starting or all continuing), as a
    batch of ``bucket`` rows: the rows past the real streams repeat the last one's
    inputs, with noise generators of their own. ``token_rows`` are the streams' tokens."""
    count = len(states)
    if not 1 <= count <= bucket:
        raise ValueError(f"expected 1..{bucket} streams for a batch of {bucket}, got {count}")
    pad = bucket - count
    tokens = torch.cat(token_rows + token_rows[-1:] * pad)
    support = support_prompt.expand(bucket, -1, -1)
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
    return WindowBatch(tokens, support, noise, known, generators)
