"""A slow loudness follower for the diffusion generator's output: towards a target, bounded.

Where it sits: :meth:`DiffusionGenerator._window_batch
<engine.generators.diffusion.generator.DiffusionGenerator>` levels each window's
emitted hop (model rate, mono, after the overlap crossfade) before it is
resampled and copied to the output channels. Without it a model's raw output
went out at whatever level the model has (the tiny test model's sits near
-52 dBFS), while the procedural generator renders towards ``target_lufs``: a
room switched between the two (Ray's fallback) jumped by about 30 LU.

The measure is the procedural renderer's (ITU-R BS.1770-4: the same
K-weighting filter, :func:`~engine.generators.procedural.render.k_weighting`,
channel powers summed, -0.691 dB; momentary blocks of 400 ms sliding by about
100 ms; an absolute gate at -70 LUFS and a relative one 10 dB under the
estimate, so rests and silence are not pumped up; the estimate is the mean
energy of the gated blocks, plain over the first :data:`WINDOW_S` and then
exponential over that long). The gain is the target less the estimate, bounded
to +-:data:`MAX_GAIN_DB` and to what keeps the hop's peaks under
:data:`PEAK_CEILING_DBFS`; it ramps linearly from the previous hop's gain over
the whole hop (a second or two), so it never steps (no zipper). Each hop is
measured before it is levelled: the hop itself is the look-ahead.

The procedural follower itself is not reused: it is a method over the
renderer's own stereo state and quanta, with a delay line this generator does
not need. The state is immutable: :func:`follow` returns a new one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.signal

from engine.generators.procedural.render import k_weighting

#: The gain never moves more than this far from unity, either way: a silent or
#: near-silent stream is not blown up, a very loud one is not crushed to nothing.
MAX_GAIN_DB = 24.0
#: The gain is held low enough that the hop's peaks stay under this (the output
#: limiter in audio_out would otherwise ride every boosted transient).
PEAK_CEILING_DBFS = -1.0
#: Energy-average span of the estimate (as the procedural follower's).
WINDOW_S = 6.0
#: BS.1770 gating: the block length, its step, the absolute gate and the relative one.
BLOCK_S = 0.4
STEP_S = 0.1
ABSOLUTE_GATE_LUFS = -70.0
GATE_BELOW_DB = 10.0


def loudness_of(power: float) -> float:
    """BS.1770 loudness (LUFS) of a K-weighted mean square summed over the channels."""
    return -0.691 + 10.0 * math.log10(power + 1e-20)


@dataclass(frozen=True)
class LevelState:
    """One stream's follower: filter memory, recent step powers, the estimate, the gain.

    ``recent`` holds the K-weighted powers of the last steps (up to one block
    less one step) so that blocks slide across hops; ``mean_square`` is the
    estimate's energy over ``counted`` gated blocks; ``gain_db`` the gain the
    last hop ended on (None before the first hop: it starts at its own gain).
    """

    k_filter: np.ndarray = field(default_factory=lambda: np.zeros((2, 2)))
    recent: np.ndarray = field(default_factory=lambda: np.zeros(0))
    mean_square: float = 0.0
    counted: int = 0
    gain_db: float | None = None

    def __post_init__(self) -> None:
        if self.k_filter.shape != (2, 2):
            raise ValueError(f"k_filter must be (2, 2), got {self.k_filter.shape}")
        if self.recent.ndim != 1:
            raise ValueError(f"recent must be 1-d, got {self.recent.shape}")


class LoudnessFollower:
    """Levels a mono stream at ``sample_rate`` that plays on ``channels`` identical channels
    towards ``target_lufs`` (see the module's docstring)."""

    def __init__(self, sample_rate: int, channels: int, target_lufs: float) -> None:
        if not math.isfinite(target_lufs):
            raise ValueError(f"target_lufs must be finite, got {target_lufs}")
        self.sample_rate = sample_rate
        self.channels = channels
        self.target_lufs = target_lufs
        self._sos = k_weighting(sample_rate)
        self._step = max(1, round(STEP_S * sample_rate))
        self._block_steps = max(1, round(BLOCK_S / STEP_S))
        self._window_blocks = max(1, round(WINDOW_S / STEP_S))

    def follow(self, state: LevelState, audio: np.ndarray) -> tuple[np.ndarray, LevelState]:
        """``audio`` (float32, mono) levelled, and the state after it."""
        if audio.ndim != 1:
            raise ValueError(f"audio must be mono (samples,), got {audio.shape}")
        if audio.size == 0:
            return audio, state
        weighted, k_filter = scipy.signal.sosfilt(self._sos, audio.astype(np.float64),
                                                  zi=state.k_filter)
        # identical channels: BS.1770 sums their powers
        steps = max(1, round(audio.size / self._step))
        powers = self.channels * np.array([np.mean(np.square(part)) for part in
                                           np.array_split(weighted, steps)])
        history = np.concatenate([state.recent, powers])
        sums = np.cumsum(np.concatenate([[0.0], history]))
        ends = np.arange(len(state.recent) + 1, len(history) + 1)
        starts = np.maximum(ends - self._block_steps, 0)
        blocks = (sums[ends] - sums[starts]) / (ends - starts)
        mean_square, counted = state.mean_square, state.counted
        for power in blocks:
            loudness = loudness_of(power)
            if loudness < ABSOLUTE_GATE_LUFS or (
                    counted and loudness < loudness_of(mean_square) - GATE_BELOW_DB):
                continue
            counted += 1
            mean_square += (power - mean_square) / min(counted, self._window_blocks)
        gain_db = 0.0 if state.gain_db is None else state.gain_db
        if counted:
            gain_db = min(max(self.target_lufs - loudness_of(mean_square), -MAX_GAIN_DB),
                          MAX_GAIN_DB)
        peak = float(np.max(np.abs(audio)))
        if peak > 0.0:
            gain_db = min(gain_db, PEAK_CEILING_DBFS - 20.0 * math.log10(peak))
        start_db = gain_db if state.gain_db is None else state.gain_db
        start, end = 10.0 ** (start_db / 20.0), 10.0 ** (gain_db / 20.0)
        ramp = (np.arange(1, audio.size + 1, dtype=np.float64) / audio.size) * (end - start)
        levelled = (audio * (start + ramp)).astype(np.float32)
        keep = self._block_steps - 1  # the steps the next hop's first blocks reach back to
        return levelled, replace(state, k_filter=k_filter,
                                 recent=history[-keep:].copy() if keep else np.zeros(0),
                                 mean_square=mean_square, counted=counted, gain_db=gain_db)
