"""The callback's signal chain after the timeline: smoothed gains, peak limiter, channel routing.

Everything here runs on the audio callback thread and works in place on
preallocated float32 buffers (``out=`` ufuncs, slices of buffers made once):
no array is created per block, nothing blocks, nothing is logged.

- :class:`SmoothGain`: a gain any thread may *command* (``set``) and the
  callback *renders* per sample along a raised-cosine ramp, so volume,
  mute and master fades never step (no zipper noise). A command is one
  immutable tuple stored in one attribute, so the callback always sees a
  whole command with a single load and never waits.
- :class:`PeakLimiter`: block-rate gain riding with a smooth per-sample
  ramp, then a memoryless soft knee that tends to full scale: the output
  can never exceed 0 dBFS. Chosen over a lookahead limiter because
  lookahead would delay the volume knob and cost a per-sample recursion
  (a Python loop per sample is far too slow in the callback); the knee
  only shapes the first block of a sudden overload, the gain ride handles
  sustained ones cleanly.
- :class:`ChannelMap`: the program's channels onto the device's: straight,
  mono copied to several outputs, or several program channels mixed to one.
"""

from __future__ import annotations

import math
import threading

import numpy as np
from scipy.linalg.blas import isamax as _isamax  # one BLAS pass for the peak |x|

#: The soft knee's asymptote: -0.01 dBFS, so even a saturated tanh stays below full scale.
_CEILING = 0.999


#: Gain riding aims this far under the threshold (-0.2 dB).
_RIDE_HEADROOM = 0.977


def db_to_gain(db: float) -> float:
    """Amplitude ratio of ``db`` decibels."""
    return float(10.0 ** (db / 20.0))


class SmoothGain:
    """A gain that glides to each new target along a raised-cosine ramp, per sample.

    ``set(target, frames)`` may be called from any thread; :meth:`render`
    belongs to the audio callback. The raised cosine
    ``g = a + (b - a) * (1 - cos(pi * x)) / 2`` starts and ends with zero
    slope, so even long master fades have no corner at either end.
    """

    def __init__(self, value: float, max_block: int) -> None:
        self.value = float(value)  # callback-owned: the gain at the end of the last block
        self._command: tuple[int, float, int] = (0, float(value), 0)  # (seq, target, frames)
        self._set_lock = threading.Lock()  # serialises setters only; the callback never takes it
        self._seen = 0
        self._from = float(value)
        self._to = float(value)
        self._length = 0
        self._pos = 0
        self._ramp = np.arange(1, max_block + 1, dtype=np.float32)

    @property
    def target(self) -> float:
        """The last commanded target."""
        return self._command[1]

    @property
    def moving(self) -> bool:
        """True while a ramp is under way (approximate from other threads)."""
        return self._pos < self._length or self._command[0] != self._seen

    def set(self, target: float, frames: int) -> None:
        """Glide from the gain now to ``target`` over ``frames`` samples (any thread)."""
        with self._set_lock:
            self._command = (self._command[0] + 1, float(target), max(0, int(frames)))

    def render(self, env: np.ndarray) -> bool:
        """Write the next ``len(env)`` per-sample gains into ``env``; False if constant.

        When it returns False ``env`` is untouched and the gain for the whole
        block is :attr:`value`. Audio callback only.
        """
        command = self._command
        if command[0] != self._seen:
            self._seen = command[0]
            self._from, self._to = self.value, command[1]
            self._length, self._pos = command[2], 0
            if self._length == 0 or self._from == self._to:
                self.value = self._to
                self._length = 0
        if self._pos >= self._length:
            return False
        n = env.shape[0]
        k = min(n, self._length - self._pos)
        a, b, length = self._from, self._to, self._length
        seg = env[:k]
        np.add(self._ramp[:k], self._pos, out=seg)
        np.multiply(seg, math.pi / length, out=seg)
        np.cos(seg, out=seg)
        np.multiply(seg, -(b - a) / 2.0, out=seg)
        np.add(seg, a + (b - a) / 2.0, out=seg)
        if k < n:
            env[k:n].fill(b)
        self._pos += k
        if self._pos >= self._length:
            self.value = b
        else:
            self.value = a + (b - a) * (1.0 - math.cos(math.pi * self._pos / length)) / 2.0
        return True


def render_gain_product(gains: tuple[SmoothGain, ...], env: np.ndarray,
                        scratch: np.ndarray) -> tuple[bool, float]:
    """Combine gains for one block: ``(True, c)`` means per-sample ``env * c``, else just ``c``.

    ``env`` and ``scratch`` are float32 views of the block's length. Audio
    callback only; constant gains fold into one scalar so a quiet knob costs
    one multiply.
    """
    varying = False
    constant = 1.0
    for gain in gains:
        if varying:
            if gain.render(scratch):
                np.multiply(env, scratch, out=env)
            else:
                constant *= gain.value
        elif gain.render(env):
            varying = True
        else:
            constant *= gain.value
    return varying, constant


class PeakLimiter:
    """Keeps every sample within full scale after volume (audio callback only).

    Per block: the peak ``p`` sets a target gain ``min(1, 0.977 * threshold / p)``;
    the gain ramps linearly across the block to it when it must fall
    (attack within one block) and recovers exponentially with
    ``release_s`` when it may rise. What still exceeds ``threshold`` (the
    first samples of a sudden overload) goes through a soft knee,
    ``t + (c - t) * tanh((|x| - t) / (c - t))`` with ``c`` just under full
    scale, which meets the identity at the threshold with unit slope and
    never reaches ``c`` (float32 tanh saturates to exactly 1, hence ``c < 1``).
    Material that stays under the threshold passes bit for bit.
    """

    def __init__(self, sample_rate: int, max_block: int, channels: int,
                 threshold_db: float = -1.0, release_s: float = 0.25,
                 enabled: bool = True) -> None:
        self.enabled = enabled
        self.threshold = min(db_to_gain(threshold_db), 0.99)
        self._release_per_frame = 1.0 / max(1.0, release_s * sample_rate)
        self.gain = 1.0
        self.min_gain = 1.0  # deepest gain reduction so far (for reports)
        self.knee_blocks = 0  # blocks where the soft knee shaped samples
        self.limited_blocks = 0  # blocks with gain reduction
        self._ramp = np.arange(1, max_block + 1, dtype=np.float32)
        self._env = np.zeros((max_block, 1), np.float32)
        self._a = np.zeros((max_block, channels), np.float32)
        self._b = np.zeros((max_block, channels), np.float32)

    def process(self, x: np.ndarray) -> None:
        """Limit ``x`` (float32 (frames, channels), a view) in place."""
        if not self.enabled:
            return
        n = x.shape[0]
        if n == 0:
            return
        if x.flags.c_contiguous:
            flat = x.reshape(-1)  # a view, no copy
            peak = abs(float(flat[_isamax(flat)]))
        else:
            peak = max(float(x.max()), -float(x.min()))
        g0 = self.gain
        if peak <= self.threshold * _RIDE_HEADROOM and g0 == 1.0:
            return  # the common case: untouched
        # Ride to a little under the threshold, so the block-to-block wobble of
        # a steady overload's peaks stays off the knee.
        aim = self.threshold * _RIDE_HEADROOM
        want = aim / peak if peak > aim else 1.0
        if want < g0:
            g1 = want
        else:
            g1 = min(want, g0 + (1.0 - g0) * min(1.0, n * self._release_per_frame))
            if 1.0 - g1 < 1e-6 and want >= 1.0:
                g1 = 1.0
        if g1 != 1.0 or g0 != 1.0:
            env = self._env[:n]
            np.multiply(self._ramp[:n, None], (g1 - g0) / n, out=env)
            np.add(env, g0, out=env)
            np.multiply(x, env, out=x)
            self.limited_blocks += 1
        self.gain = g1
        if g1 < self.min_gain:
            self.min_gain = g1
        if peak * max(g0, g1) > self.threshold * (1.0 + 1e-6):  # rounding is not an overload
            self._soft_knee(x)

    def _soft_knee(self, x: np.ndarray) -> None:
        n, t = x.shape[0], self.threshold
        a, b = self._a[:n, : x.shape[1]], self._b[:n, : x.shape[1]]
        np.abs(x, out=a)
        np.subtract(a, t, out=b)
        np.maximum(b, 0.0, out=b)
        np.multiply(b, 1.0 / (_CEILING - t), out=b)
        np.tanh(b, out=b)
        np.multiply(b, _CEILING - t, out=b)
        np.minimum(a, t, out=a)
        np.add(a, b, out=a)
        np.copysign(a, x, out=x)
        self.knee_blocks += 1


class ChannelMap:
    """Routes ``program_channels`` onto device channels ``outputs`` (1-based).

    ``len(outputs) == program_channels``: one to one; a mono program: copied
    to every output; one output: the program channels' mean. The device is
    opened with ``max(outputs)`` channels; the others get silence.
    """

    def __init__(self, program_channels: int, outputs: tuple[int, ...]) -> None:
        if not outputs:
            raise ValueError("channels_out must name at least one device channel")
        n = len(outputs)
        if n == program_channels:
            self.mode = "direct"
        elif program_channels == 1:
            self.mode = "copy"
        elif n == 1:
            self.mode = "mix"
        else:
            raise ValueError(
                f"channels_out: expected {program_channels} channels (one per program channel), "
                f"1 (mix to mono) or a mono program, got {list(outputs)}"
            )
        self.program_channels = program_channels
        self.outputs = tuple(outputs)
        self.played_channels = n
        self.device_channels = max(outputs)
        self.columns = tuple(c - 1 for c in outputs)
        # The device block *is* the played block: no routing copy at all.
        self.identity = self.mode == "direct" and self.columns == tuple(range(n))
        if self.identity and self.device_channels != n:
            self.identity = False

    def route(self, program: np.ndarray, played: np.ndarray, device: np.ndarray) -> None:
        """``program`` (n, P) -> ``played`` (n, len(outputs)) -> ``device`` (n, D); in place.

        ``played`` may be ``program`` itself in direct mode. Audio callback.
        """
        if self.mode == "copy":
            for j in range(self.played_channels):
                played[:, j] = program[:, 0]
        elif self.mode == "mix":
            np.add.reduce(program, axis=1, out=played[:, 0])
            np.multiply(played, 1.0 / self.program_channels, out=played)
        elif played is not program:
            played[...] = program
        if device.shape[1] != self.played_channels:
            device.fill(0.0)
        for j, c in enumerate(self.columns):
            device[:, c] = played[:, j]
