"""Output sinks that pull audio blocks from a fill callback.

Every sink calls the same ``fill(out)`` callback with a float32
``(frames, channels)`` block to fill in place; only who calls it, and when,
differs:

- :class:`SoundDeviceOutput`: PortAudio's callback thread (a real sound card).
- :class:`NullOutput`: a thread that calls ``fill`` at real-time pace on
  ``time.monotonic()``, for machines with no sound card (the recording and the
  playback clock run exactly as with a device).
- :class:`ArrayOutput`: the test seam; blocks are pulled on demand.

:func:`open_output` chooses by ``AudioOutConfig.output``. sounddevice (and so
PortAudio) is imported only when a device is actually wanted.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from audio_out.config import AudioOutConfig
from ground.errors import ConfigError, DependencyError
from ground.events import EventSink

FillCallback = Callable[[np.ndarray], None]


class OutputStream(Protocol):
    """A sink that calls ``fill`` for each block it plays."""

    fill: FillCallback
    #: Seconds from a ``fill`` call to the moment its first frame is heard.
    latency_s: float
    #: Human-readable name, for logs.
    name: str

    def start(self) -> None:
        """Start calling ``fill``."""
        ...

    def stop(self) -> None:
        """Stop calling ``fill`` and release the sink; idempotent."""
        ...


class CallbackStats:
    """Preallocated record of callback durations and flags (written by the callback)."""

    def __init__(self, size: int = 4096) -> None:
        self.durations_s = np.zeros(size, np.float64)
        self.calls = 0
        self.output_underflows = 0

    def add(self, duration_s: float) -> None:
        """Record one callback's duration (allocation-free: a ring of floats)."""
        self.durations_s[self.calls % self.durations_s.shape[0]] = duration_s
        self.calls += 1

    def percentiles_us(self) -> dict[str, float]:
        """p50/p99/max of the recorded durations in microseconds (not for the callback)."""
        n = min(self.calls, self.durations_s.shape[0])
        if n == 0:
            return {"p50": 0.0, "p99": 0.0, "max": 0.0}
        d = self.durations_s[:n] * 1e6
        return {"p50": float(np.percentile(d, 50)), "p99": float(np.percentile(d, 99)),
                "max": float(d.max())}


def _import_sounddevice() -> ModuleType:
    # Its own function so tests can stand in for a machine without PortAudio.
    import sounddevice

    return sounddevice


def load_sounddevice() -> ModuleType:
    """Import sounddevice, or raise :class:`DependencyError` saying why PortAudio is missing."""
    try:
        sounddevice = _import_sounddevice()
    except OSError as exc:  # sounddevice raises OSError when libportaudio is absent
        raise DependencyError(
            f"no sound device ({exc}); install the PortAudio library "
            "(e.g. apt install libportaudio2) or set audio_out.output = 'none'"
        ) from None
    except ImportError:
        raise DependencyError(
            "no sound device (the sounddevice package is not installed; "
            "pip install 'art2mus[audio]')"
        ) from None
    return sounddevice


def find_output_device(sd: Any, name: str) -> int | None:
    """Index of the first output device whose name contains ``name`` (case-insensitive).

    ``''`` means the default device (``None``). Raises :class:`ConfigError`
    listing the output devices when nothing matches or no output exists.
    """
    devices = list(sd.query_devices())
    outputs = [(i, d["name"]) for i, d in enumerate(devices) if d["max_output_channels"] > 0]
    if not outputs:
        raise ConfigError("no sound device: PortAudio lists no output devices")
    if not name:
        return None
    for index, device_name in outputs:
        if name.lower() in device_name.lower():
            return index
    listing = ", ".join(repr(n) for _, n in outputs)
    raise ConfigError(
        f"audio_out.device: expected a substring of an output device name, got {name!r}; "
        f"outputs are: {listing}"
    )


def _default_output_index(sd: Any) -> int | None:
    """PortAudio's default output device index, or None where it cannot tell."""
    try:
        index = int(sd.default.device[1])
    except (AttributeError, TypeError, ValueError, IndexError):
        return None
    return index if index >= 0 else None


class SoundDeviceOutput:
    """A PortAudio output stream whose callback calls ``fill`` on the device's own thread.

    ``channels`` is how many device channels the stream opens (the highest
    channel ``channels_out`` names); ``fill`` routes the program into them.
    """

    def __init__(self, config: AudioOutConfig, sample_rate: int, channels: int,
                 fill: FillCallback, sd: Any = None) -> None:
        self._sd = sd if sd is not None else load_sounddevice()
        self.fill = fill
        self.sample_rate = sample_rate
        self.channels = channels
        self.stats = CallbackStats()
        self.frames_played = 0
        self._device = find_output_device(self._sd, config.device)
        index = self._device if self._device is not None else _default_output_index(self._sd)
        if index is not None:
            info = self._sd.query_devices(index)
            available = int(info["max_output_channels"])
            if channels > available:
                raise ConfigError(
                    f"audio_out.channels_out: expected channels 1..{available} of output "
                    f"{info['name']!r}, got channel {channels}"
                )
        try:
            self._stream = self._sd.OutputStream(
                samplerate=sample_rate,
                blocksize=config.block_size,
                device=self._device,
                channels=channels,
                dtype="float32",
                latency=config.latency,
                callback=self._callback,
            )
        except Exception as exc:  # sd.PortAudioError, or ValueError for bad settings
            raise ConfigError(
                f"cannot open the output device ({exc}) at {sample_rate} Hz, {channels} ch, "
                f"block {config.block_size}"
            ) from None
        info = self._sd.query_devices(self._stream.device)
        self.name = f"sounddevice:{info['name']}"
        self.latency_s = float(self._stream.latency)

    def _callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        # PortAudio thread: count, fill, time; nothing else (no logging, no I/O).
        began = time.perf_counter()
        if status.output_underflow:
            self.stats.output_underflows += 1
        self.fill(outdata)
        self.frames_played += frames
        self.stats.add(time.perf_counter() - began)

    def start(self) -> None:
        """Start the PortAudio stream."""
        self._stream.start()

    def stop(self) -> None:
        """Stop and close the PortAudio stream."""
        if not self._stream.closed:
            self._stream.stop()
            self._stream.close()


class NullOutput:
    """Calls ``fill`` at real-time pace from a thread and throws the audio away.

    Deadlines are kept on ``time.monotonic()`` (absolute, so sleep jitter does
    not accumulate); if the thread falls more than ``max_behind_s`` behind it
    resynchronises rather than bursting, and counts it in ``stats.output_underflows``.
    """

    latency_s = 0.0

    def __init__(self, sample_rate: int, channels: int, block_size: int, fill: FillCallback,
                 max_behind_s: float = 0.2) -> None:
        self.fill = fill
        self.sample_rate = sample_rate
        self.block_size = block_size
        self.name = "null"
        self.stats = CallbackStats()
        self.frames_played = 0
        self._block = np.zeros((block_size, channels), np.float32)
        self._max_behind_s = max_behind_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the pacing thread."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="audio-null-sink", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        period = self.block_size / self.sample_rate
        deadline = time.monotonic()
        while not self._stop.is_set():
            began = time.perf_counter()
            self.fill(self._block)
            self.stats.add(time.perf_counter() - began)
            self.frames_played += self.block_size
            deadline += period
            wait = deadline - time.monotonic()
            if wait > 0:
                self._stop.wait(wait)
            elif -wait > self._max_behind_s:
                self.stats.output_underflows += 1
                deadline = time.monotonic()

    def stop(self) -> None:
        """Stop the pacing thread and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None


class ArrayOutput:
    """Test seam: :meth:`pull` calls ``fill`` for blocks on demand and returns the audio."""

    latency_s = 0.0
    realtime = False  # nothing plays unless pulled: the player does not wait for its stop fade

    def __init__(self, sample_rate: int, channels: int, block_size: int,
                 fill: FillCallback) -> None:
        self.fill = fill
        self.sample_rate = sample_rate
        self.channels = channels
        self.block_size = block_size
        self.name = "array"
        self.started = False

    def start(self) -> None:
        """Mark started (pulling works either way)."""
        self.started = True

    def stop(self) -> None:
        """Mark stopped."""
        self.started = False

    def pull(self, blocks: int, block_size: int | None = None) -> np.ndarray:
        """Fill ``blocks`` blocks of ``block_size`` frames and return them concatenated."""
        size = block_size or self.block_size
        out = np.zeros((blocks * size, self.channels), np.float32)
        for i in range(blocks):
            self.fill(out[i * size : (i + 1) * size])
        return out


def open_output(config: AudioOutConfig, sample_rate: int, channels: int, fill: FillCallback,
                log_event: EventSink) -> OutputStream:
    """Open the sink ``config.output`` asks for.

    'device' opens a sound card or raises a clear error; 'auto' falls back to
    :class:`NullOutput` with one line on stderr (and a ``output_fallback``
    event) when PortAudio or an output device is missing; 'none' is the null
    sink.
    """
    if config.output == "none":
        return NullOutput(sample_rate, channels, config.block_size, fill)
    try:
        output: OutputStream = SoundDeviceOutput(config, sample_rate, channels, fill)
    except (DependencyError, ConfigError) as exc:
        if config.output == "device":
            raise
        reason = str(exc).split(";")[0]
        print(f"audio_out: {reason}; playing to the null sink, recording continues",
              file=sys.stderr, flush=True)
        log_event("output_fallback", reason=str(exc), output="null")
        return NullOutput(sample_rate, channels, config.block_size, fill)
    log_event("output_opened", output=output.name, latency_s=output.latency_s)
    return output
