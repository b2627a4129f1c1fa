"""What the room actually plays, measured for the heartbeat: level, peak, loudness, spectrum.

Where it sits: the audio_out role wraps the player's output callback with
:meth:`LevelMeter.wrap`; every heartbeat its status asks :meth:`LevelMeter.reading`
for the figures the technician's console shows.

Who owns what (the real-time rules of :mod:`audio_out`):

- **Audio callback**: after the player has filled the block, adds the block's
  energy to two floats (``level_dbfs``) and copies the block into a
  preallocated ring (``np.copyto`` into one or two slices of it), then
  publishes the count of frames written. No array is allocated, no lock
  taken, nothing logged.
- **Role thread** (at heartbeat time): copies the ring, puts it in time
  order and analyses what was played since the last heartbeat, and only
  that: its peak, its spectrum (the newest :data:`SPECTRUM_S` of it), and
  its K-weighted energy per 0.1 s, the filter's state carried from one
  heartbeat to the next; the short-term loudness is the energy of the last
  3 s of those sub-blocks. So a reading costs what 0.5 s of audio costs
  (a few ms), not 3.5 s: the same thread reads the chunks, and a slow
  heartbeat there once made audio_out run dry. The callback may overwrite
  the ring's oldest frames while it is copied, so the analysis never looks
  at the oldest :data:`TORN_MARGIN_S` of it.

The ring is allocated when the output is opened (:meth:`LevelMeter.factory`),
in the role thread, before the callback can run.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

# Imported with the module, i.e. when the audio_out role starts (under the supervisor's
# start-up grace): scipy.signal takes a second or more on a loaded machine, and paid later,
# in the role's thread, it delays the first clock report (the engine resends, audio_out
# splices) or a heartbeat (the hang watch kills the role).
from pyloudnorm import IIRfilter
from scipy.signal import sosfilt, welch

from audio_out.outputs import open_output
from ground.events import EventSink

#: Seconds of audio the ring holds: the loudness window, its filter pre-roll and the margin.
RING_S = 4.0
#: Short-term loudness window (ITU-R BS.1770-4 / EBU Tech 3341: 3 s).
SHORT_TERM_S = 3.0
#: The K-weighting filters run this long before the window, so their start-up is not counted.
PREROLL_S = 0.5
#: The oldest part of the ring copy that the callback may have overwritten during the copy.
TORN_MARGIN_S = 0.5
#: The spectrum reads at most this much of the newest audio (its cost bound).
SPECTRUM_S = 1.0
#: The loudness window slides by sub-blocks this long.
SUB_BLOCK_S = 0.1
#: Spectrum bands: log-spaced between these edges (Hz).
SPECTRUM_BANDS = 32
SPECTRUM_LOW_HZ = 40.0
SPECTRUM_HIGH_HZ = 16000.0
#: What a band (or the peak) with no energy reads, dB.
FLOOR_DB = -100.0
#: BS.1770 absolute gate: quieter than this counts as silence (loudness None).
SILENCE_LUFS = -70.0
#: The :data:`SPECTRUM_BANDS` + 1 band edges, Hz.
BAND_EDGES_HZ = np.geomspace(SPECTRUM_LOW_HZ, SPECTRUM_HIGH_HZ, SPECTRUM_BANDS + 1)
_FFT_SIZE = 8192  # 5.9 Hz bins at 48 kHz: every band from 40 Hz up holds at least one


def k_weighting_sos(rate: int) -> np.ndarray:
    """The BS.1770-4 K-weighting filter at ``rate`` Hz as second-order sections (2, 6).

    Stage 1 is the high-shelf modelling the head (+4 dB above ~1.5 kHz),
    stage 2 the RLB high-pass (38 Hz); ITU-R BS.1770-4, Annex 1, tables 1-2
    give them at 48 kHz. pyloudnorm's :class:`IIRfilter` derives the same
    biquads at any rate, with the parameters its own ``Meter`` uses for
    ``"K-weighting"``; so these read what pyloudnorm reads.
    """
    return _k_weighting_sos(rate).copy()  # a copy: the cached one stays as computed


@functools.lru_cache(maxsize=8)
def _k_weighting_sos(rate: int) -> np.ndarray:
    stages = (IIRfilter(4.0, 1 / math.sqrt(2), 1500.0, rate, "high_shelf"),
              IIRfilter(0.0, 0.5, 38.0, rate, "high_pass"))
    sos = np.array([np.concatenate([stage.b * stage.passband_gain, stage.a])
                    for stage in stages])
    return sos


def short_term_lufs(block: np.ndarray, rate: int, preroll: int = 0) -> float | None:
    """Loudness (LUFS) of ``block`` (frames, channels), K-weighted, after ``preroll`` frames.

    ITU-R BS.1770-4 eq. 2: ``-0.691 + 10 log10(sum G_i z_i)``, ``z_i`` the
    channel's mean square after K-weighting, ``G`` 1.0 except 1.41 for the
    surround pair (channels 4 and 5 of L, R, C, Ls, Rs). None below the
    absolute gate (-70 LUFS): silence.
    """
    if block.shape[0] <= preroll:
        return None
    weighted = sosfilt(k_weighting_sos(rate), block.astype(np.float64), axis=0)[preroll:]
    mean_square = np.mean(np.square(weighted), axis=0)
    gains = np.ones(block.shape[1])
    gains[3:5] = 1.41
    power = float(np.dot(gains, mean_square))
    if power <= 0.0:
        return None
    loudness = -0.691 + 10.0 * math.log10(power)
    return round(loudness, 1) if loudness >= SILENCE_LUFS else None


def band_spectrum(mono: np.ndarray, rate: int) -> list[float]:
    """Power in each log-spaced band of ``mono``, dB re full scale, 0.1 dB, floor -100.

    Welch's average of Hann-windowed periodograms (scipy), integrated over
    each band: the bands' powers add up to the signal's mean square, so a
    band reads on the same scale as ``level_dbfs`` (a sine peaking at
    -6 dBFS reads -9 dB in its band). A band with no FFT bin (above the
    Nyquist frequency) reads the floor.
    """
    edges = BAND_EDGES_HZ
    if len(mono) < 16:
        return [FLOOR_DB] * SPECTRUM_BANDS
    frequencies, density = welch(mono.astype(np.float64), fs=rate, window="hann",
                                 nperseg=min(_FFT_SIZE, len(mono)), scaling="density")
    step = float(frequencies[1] - frequencies[0])
    band = np.searchsorted(edges, frequencies, side="right") - 1  # bin -> band index
    inside = (band >= 0) & (band < SPECTRUM_BANDS)
    power = np.bincount(band[inside], weights=density[inside] * step, minlength=SPECTRUM_BANDS)
    with np.errstate(divide="ignore"):
        decibels = 10.0 * np.log10(power)
    return [round(float(max(FLOOR_DB, d)), 1) for d in decibels]


@dataclass(frozen=True)
class MeterReading:
    """One heartbeat's figures; None where nothing was played (or, loudness, silence)."""

    level_dbfs: float | None
    peak_dbfs: float | None
    loudness_lufs: float | None
    spectrum: list[float] | None

    def status(self) -> dict[str, Any]:
        """The heartbeat keys: ``level_dbfs``, ``peak_dbfs``, ``loudness_lufs``, ``spectrum``."""
        return {"level_dbfs": self.level_dbfs, "peak_dbfs": self.peak_dbfs,
                "loudness_lufs": self.loudness_lufs, "spectrum": self.spectrum}


class LevelMeter:
    """Wraps the player's output callback to measure what is played (see the module doc).

    The callback side accumulates two floats per block and copies the block
    into a ring; the role thread reads and resets them at each heartbeat. A
    lost update between the two threads costs one block of one reading.
    """

    def __init__(self, ring_s: float = RING_S) -> None:
        if not ring_s >= SHORT_TERM_S + PREROLL_S + TORN_MARGIN_S:
            raise ValueError(f"LevelMeter ring_s: expected at least "
                             f"{SHORT_TERM_S + PREROLL_S + TORN_MARGIN_S} s, got {ring_s}")
        self.ring_s = ring_s
        self._energy = 0.0
        self._samples = 0
        self.sample_rate = 0
        self._ring: np.ndarray | None = None
        self._written = 0  # frames copied into the ring so far (written by the callback)
        self._read = 0  # frames the analysis has taken (role thread only)
        self._zi: np.ndarray | None = None  # the K-weighting filters' state (role thread)
        self._energy_blocks: deque[tuple[int, np.ndarray]] = deque()  # (frames, sum of z^2)

    def allocate(self, sample_rate: int, channels: int) -> None:
        """Make the ring for this output (role thread, before the callback runs)."""
        if sample_rate < 1 or channels < 1:
            raise ValueError(f"LevelMeter: expected a sample rate and channels >= 1, got "
                             f"{sample_rate} Hz, {channels} channels")
        self.sample_rate = sample_rate
        self._ring = np.zeros((round(self.ring_s * sample_rate), channels), np.float32)
        self._written = self._read = 0
        self._zi = np.zeros((2, 2, channels))  # two biquads, two states, per channel
        self._energy_blocks.clear()
        _k_weighting_sos(sample_rate)  # computed once per rate, before the callback runs

    def wrap(self, fill: Callable[[np.ndarray], None]) -> Callable[[np.ndarray], None]:
        """The callback ``fill`` followed by the measurement."""
        def metered(out: np.ndarray) -> None:
            fill(out)
            self._energy += float(np.vdot(out, out))  # contiguous block: no copy
            self._samples += out.size
            self._push(out)

        return metered

    def _push(self, block: np.ndarray) -> None:
        """Copy ``block`` into the ring (the callback's side: views and copyto only)."""
        ring = self._ring
        if ring is None or block.ndim != 2 or block.shape[1] != ring.shape[1]:
            return
        size = ring.shape[0]
        frames = block.shape[0]
        if frames >= size:  # a block longer than the ring: keep its end
            np.copyto(ring, block[frames - size:])
        else:
            at = self._written % size
            first = min(frames, size - at)
            np.copyto(ring[at:at + first], block[:first])
            if first < frames:
                np.copyto(ring[:frames - first], block[first:])
        self._written += frames  # published last: the frames before it are in place

    def factory(self, make_output: Callable[..., Any] = open_output) -> Callable[..., Any]:
        """An output factory for :class:`Player` that meters its callback."""
        def open_metered(config: Any, sample_rate: int, channels: int,
                         fill: Callable[[np.ndarray], None], log_event: EventSink) -> Any:
            self.allocate(sample_rate, channels)
            return make_output(config, sample_rate, channels, self.wrap(fill), log_event)

        return open_metered

    def take_dbfs(self) -> float | None:
        """RMS level since the last call in dBFS (None if nothing played)."""
        energy, samples = self._energy, self._samples
        self._energy, self._samples = 0.0, 0
        if samples == 0:
            return None
        rms = math.sqrt(energy / samples)
        return round(20.0 * math.log10(max(rms, 1e-6)), 1)

    def reading(self) -> MeterReading:
        """Level, peak and spectrum since the last reading, and the short-term loudness
        (role thread, at heartbeat time)."""
        level = self.take_dbfs()
        ring = self._ring
        written = self._written
        if ring is None or self._zi is None or written == 0:
            return MeterReading(level, None, None, None)
        snapshot = ring.copy()  # the callback goes on writing into the ring meanwhile
        size = len(snapshot)
        rate = self.sample_rate
        ordered = np.roll(snapshot, -(written % size), axis=0)  # oldest first
        usable = min(written, size - round(TORN_MARGIN_S * rate))
        fresh = min(written - self._read, usable)
        self._read = written
        if fresh <= 0:
            return MeterReading(level, None, self._short_term(), None)
        played = ordered[size - fresh:]
        weighted, self._zi = sosfilt(_k_weighting_sos(rate), played.astype(np.float64), axis=0,
                                     zi=self._zi)
        squares = np.square(weighted)
        step = max(1, round(SUB_BLOCK_S * rate))
        for begin in range(0, fresh, step):
            part = squares[begin:begin + step]
            self._energy_blocks.append((len(part), part.sum(axis=0)))
        window = round(SHORT_TERM_S * rate)
        total = sum(n for n, _ in self._energy_blocks)
        while self._energy_blocks and total - self._energy_blocks[0][0] >= window:
            total -= self._energy_blocks.popleft()[0]
        peak = float(np.max(np.abs(played)))
        peak_db = round(max(FLOOR_DB, 20.0 * math.log10(peak)), 1) if peak > 0 else FLOOR_DB
        newest = played[-min(fresh, round(SPECTRUM_S * rate)):]
        spectrum = band_spectrum(newest.mean(axis=1), rate)
        return MeterReading(level, peak_db, self._short_term(), spectrum)

    def _short_term(self) -> float | None:
        """BS.1770 loudness of the kept sub-blocks (the last 3 s); None for silence."""
        if not self._energy_blocks:
            return None
        frames = sum(n for n, _ in self._energy_blocks)
        mean_square = np.sum([energy for _, energy in self._energy_blocks], axis=0) / frames
        gains = np.ones(mean_square.shape[0])
        gains[3:5] = 1.41  # the surround pair of L, R, C, Ls, Rs
        power = float(np.dot(gains, mean_square))
        if power <= 0.0:
            return None
        loudness = -0.691 + 10.0 * math.log10(power)
        return round(loudness, 1) if loudness >= SILENCE_LUFS else None
