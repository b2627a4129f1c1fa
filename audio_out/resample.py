"""From the generator's timeline to the device's: streaming resampling of chunks (network thread).

The engine addresses everything in *generator* samples at its own rate; the
device plays at ``AudioOutConfig.sample_rate``. :class:`TimelineResampler`
turns each chunk ``(start, audio, crossfade)`` into the device-rate writes
the :class:`~audio_out.timeline.TimelineBuffer` splices, and converts
positions back for the :class:`~ground.protocol.PlaybackClock`.

Positions map by the exact ratio ``device = generator * device_rate /
source_rate``: a *segment* (a run of continuation chunks, each starting
where the last ended) is fed through one ``soxr.ResampleStream``, so its
output is one continuous signal, sample exact, however the chunks were cut.
A chunk that starts anywhere else (a transition, a restart, a gap) begins a
new segment at the nearest device sample (at most half a device sample off
the exact instant, well inside its crossfade) with a fresh stream; the old
stream is flushed first so its last milliseconds are queued too.

soxr output is delay-compensated: the resampler keeps back its filter's
delay (about 10-40 ms of output, depending on the rates) until more input
arrives. That tail is not lost: it is written with the next continuation,
or flushed when a new segment starts; it only means the queue the callback
sees ends that much before the generator's end.

Resampling never runs in the audio callback: soxr allocates and takes time.
Used only by the network thread; soxr is imported on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class DeviceWrite:
    """One splice for the timeline, in device samples.

    ``main`` marks the write that carries the chunk's own start (the other
    one, if any, is the previous segment's flushed tail).
    """

    start: int
    audio: np.ndarray
    crossfade: int
    main: bool


class TimelineResampler:
    """Streams chunks at ``source_rate`` onto the device timeline at ``device_rate``."""

    def __init__(self, device_rate: int, channels: int, quality: str = "HQ") -> None:
        self.device_rate = int(device_rate)
        self.channels = int(channels)
        self.quality = quality
        self.source_rate: int | None = None  # learnt from the first chunk
        self._stream: Any = None
        self._src_end = -1  # generator sample after the segment's last input
        self._dev_end = 0  # device sample after the segment's last output
        self._seg_xf_end = 0  # device sample where the segment's crossfade ends
        self.segments = 0

    @property
    def passthrough(self) -> bool:
        """True when chunks are at the device rate (nothing to convert)."""
        return self.source_rate is None or self.source_rate == self.device_rate

    def to_device(self, source_pos: int) -> int:
        """Nearest device sample to generator sample ``source_pos`` (exact integer math)."""
        if self.passthrough:
            return source_pos
        src = self.source_rate
        assert src is not None
        return (source_pos * self.device_rate + src // 2) // src

    def to_source(self, device_pos: int) -> int:
        """Generator sample at device sample ``device_pos`` (floor; monotonic)."""
        if self.passthrough:
            return device_pos
        assert self.source_rate is not None
        return device_pos * self.source_rate // self.device_rate

    def set_source_rate(self, rate: int) -> bool:
        """Adopt the chunks' rate; True when it changed (a new mapping starts)."""
        if rate == self.source_rate:
            return False
        if rate <= 0:
            raise ValueError(f"sample_rate must be > 0, got {rate}")
        self.source_rate = int(rate)
        self._stream = None
        self._src_end = -1
        return True

    def convert(self, start: int, audio: np.ndarray, crossfade: int) -> list[DeviceWrite]:
        """Device-rate writes for one chunk of float32 (frames, channels) at ``source_rate``."""
        if self.passthrough:
            return [DeviceWrite(start, audio, crossfade, True)]
        writes: list[DeviceWrite] = []
        if self._stream is None or start != self._src_end:
            if self._stream is not None:
                tail = self._stream.resample_chunk(self._empty(), last=True)
                if len(tail):
                    writes.append(self._segment_write(tail, main=False))
            import soxr

            self._stream = soxr.ResampleStream(self.source_rate, self.device_rate, self.channels,
                                               dtype="float32", quality=self.quality)
            self._dev_end = self.to_device(start)
            self._seg_xf_end = self._dev_end + self.to_device(crossfade) if crossfade else 0
            self.segments += 1
        self._src_end = start + audio.shape[0]
        out = self._stream.resample_chunk(np.ascontiguousarray(audio, np.float32))
        writes.append(self._segment_write(out, main=True))
        return writes

    def _segment_write(self, out: np.ndarray, main: bool) -> DeviceWrite:
        at = self._dev_end
        frames = out.shape[0]
        # The part of the segment's crossfade not yet written (the first output
        # of a fresh stream can be shorter than the crossfade, or empty).
        xf = min(frames, max(0, self._seg_xf_end - at))
        self._dev_end = at + frames
        return DeviceWrite(at, out.reshape(frames, self.channels), xf, main)

    def _empty(self) -> np.ndarray:
        return np.zeros((0, self.channels), np.float32)
