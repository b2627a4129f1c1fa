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
- :class:`DCBlocker`: a one-pole high-pass at a few hertz, before the gains
  and the limiter, so a chunk with a DC offset (and a hold looping it) never
  pushes the speaker cones off centre or eats the limiter's headroom.
- :class:`StartFade`: a short raised-cosine fade from silence that the callback
  starts itself when playback begins mid-piece or a sound card comes back.
- :class:`OutputGuard`: the last stage before the device buffer and the
  recorder: NaN and infinity become silence, anything beyond full scale is
  clipped, and each repair is counted, whatever went wrong upstream.
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


#: Frames the DC blocker evaluates in closed form at a time: its weights ``r**-k`` stay
#: below e**4 (55) even at 8 kHz and 5 Hz, where float64 keeps 14 good digits.
_DC_SEGMENT = 1024
#: The DC blocker's state is set to zero under this: a long silence would otherwise decay
#: it into subnormal floats, which some CPUs compute a hundred times slower.
_DC_FLOOR = 1e-20


class DCBlocker:
    """One-pole high-pass ``y[n] = x[n] - x[n-1] + r * y[n-1]`` per channel (audio callback).

    ``r = exp(-2 pi fc / fs)``: the classic DC blocker (J. O. Smith, *Introduction to
    Digital Filters*, "DC Blocker"). At ``fc`` = 5 Hz an offset is gone with a 32 ms
    time constant while 20 Hz, the lowest bass, loses 0.26 dB. Its state (each
    channel's last input and output) carries across blocks: it is one continuous
    filter over everything played, so it adds no step at block edges, splices, holds
    or resumes. ``corner_hz = 0`` turns it off (the program passes bit for bit).

    A per-sample recursion would be a Python loop, far too slow for the callback, so
    the recursion is evaluated in closed form, ``y[k] = r**k * (r * y[-1] +
    sum_{j<=k} r**-j * d[j])`` with ``d[j] = x[j] - x[j-1]``: a cumulative sum in
    float64 over segments of at most 1024 frames, on buffers made here.
    """

    def __init__(self, sample_rate: int, max_block: int, channels: int,
                 corner_hz: float) -> None:
        self.enabled = corner_hz > 0.0
        self.corner_hz = float(corner_hz)
        self.r = math.exp(-2.0 * math.pi * corner_hz / sample_rate) if self.enabled else 1.0
        seg = min(_DC_SEGMENT, max_block)
        k = np.arange(seg, dtype=np.float64)
        self._rpow = (self.r ** k)[:, None]
        self._rinv = (self.r ** -k)[:, None]
        self._seg = seg
        self._x = np.zeros((seg + 1, channels), np.float64)  # row 0: the input before
        self._d = np.zeros((seg, channels), np.float64)
        self._y = np.zeros((seg, channels), np.float64)
        self._last = np.zeros(channels, np.float64)  # each channel's last output
        self._carry = np.zeros(channels, np.float64)

    def process(self, x: np.ndarray) -> None:
        """Filter ``x`` (float32 (frames, channels), a view) in place."""
        if not self.enabled:
            return
        n = x.shape[0]
        start = 0
        while start < n:
            m = min(self._seg, n - start)
            seg = x[start : start + m]
            xs = self._x[: m + 1]
            np.copyto(xs[1:], seg)
            d = self._d[:m]
            np.subtract(xs[1:], xs[:-1], out=d)
            np.multiply(d, self._rinv[:m], out=d)
            y = self._y[:m]
            np.cumsum(d, axis=0, out=y)
            np.multiply(self._last, self.r, out=self._carry)
            np.add(y, self._carry, out=y)
            np.multiply(y, self._rpow[:m], out=y)
            self._last[...] = y[m - 1]
            self._x[0] = xs[m]
            np.copyto(seg, y, casting="same_kind")
            start += m
        last = self._last
        energy = float(np.dot(last, last))  # a NaN or infinity in the input reaches it too
        if not math.isfinite(energy):
            # NaN or infinity got in (the output guard silences that block): start afresh
            # rather than carry it into every later block.
            last.fill(0.0)
            self._x[0].fill(0.0)
        elif energy < _DC_FLOOR * _DC_FLOOR:
            last.fill(0.0)


class StartFade:
    """A raised-cosine fade from silence over ``frames`` that the callback starts itself.

    :meth:`start` (audio callback) begins it, from the next frame :meth:`apply`
    sees; until it ends every block is scaled by ``(1 - cos(pi * t / frames)) / 2``,
    which starts and ends with zero slope. Idle (or ``frames`` = 0) it costs one
    comparison. ``count`` says how many fades began.
    """

    def __init__(self, frames: int, max_block: int) -> None:
        self.frames = max(0, int(frames))
        self.count = 0
        self._pos = self.frames  # idle
        self._ramp = np.arange(1, max_block + 1, dtype=np.float32)
        self._env = np.zeros(max_block, np.float32)

    @property
    def active(self) -> bool:
        """True while a fade is under way."""
        return self._pos < self.frames

    def start(self) -> None:
        """Fade in from silence from the next frame on (audio callback)."""
        if self.frames > 0:
            self._pos = 0
            self.count += 1

    def apply(self, x: np.ndarray) -> None:
        """Scale ``x`` (float32 (frames, channels)) in place by the fade, if one is under way."""
        pos, length = self._pos, self.frames
        if pos >= length:
            return
        k = min(x.shape[0], length - pos)
        env = self._env[:k]
        np.add(self._ramp[:k], pos, out=env)
        np.multiply(env, math.pi / length, out=env)
        np.cos(env, out=env)
        np.multiply(env, -0.5, out=env)
        np.add(env, 0.5, out=env)
        head = x[:k]
        np.multiply(head, env[:, None], out=head)
        self._pos = pos + k


#: Full scale: the largest sample a device converts. The limiter keeps the output under
#: it; the guard clips what still goes beyond (a fault upstream, or the limiter off).
FULL_SCALE = 1.0


class OutputGuard:
    """The last stage before the device buffer and the recorder (audio callback only).

    Whatever happened upstream (a sample that overflowed to infinity under a
    gain, an infinity times the limiter's zero gain), NaN and +-infinity become
    silence and finite samples beyond full scale are clipped to it, so neither
    the speakers nor the take ever get them. Zeroed rather than clipped: an
    infinity made full scale would be the loudest click the system can make.
    Each repair is counted per block (``nonfinite_blocks``, ``clipped_blocks``:
    with the limiter on, the second stays 0). The common case costs one max and
    one min over the block; the mask for the repair is made here.
    """

    def __init__(self, max_block: int, channels: int) -> None:
        self.nonfinite_blocks = 0
        self.clipped_blocks = 0
        self._bad = np.zeros((max_block, channels), bool)

    def process(self, x: np.ndarray) -> None:
        """Repair ``x`` (float32 (frames, channels), a view) in place if it needs it."""
        if x.shape[0] == 0:
            return
        hi, lo = float(x.max()), float(x.min())  # NaN propagates into both
        if lo >= -FULL_SCALE and hi <= FULL_SCALE:
            return  # the common case (a NaN fails both comparisons)
        if not (math.isfinite(hi) and math.isfinite(lo)):
            bad = self._bad[: x.shape[0], : x.shape[1]]
            np.isfinite(x, out=bad)
            np.logical_not(bad, out=bad)
            np.copyto(x, 0.0, where=bad)
            self.nonfinite_blocks += 1
            hi, lo = float(x.max()), float(x.min())
        if lo < -FULL_SCALE or hi > FULL_SCALE:
            np.clip(x, -FULL_SCALE, FULL_SCALE, out=x)
            self.clipped_blocks += 1
