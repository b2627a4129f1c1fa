"""Output sinks that pull audio blocks from a fill callback.

Every sink calls the same ``fill(out)`` callback with a float32
``(frames, channels)`` block to fill in place; only who calls it, and when,
differs:

- :class:`SoundDeviceOutput`: PortAudio's callback thread (a real sound card).
- :class:`NullOutput`: a thread that calls ``fill`` at real-time pace on
  ``time.monotonic()``, for machines with no sound card (the recording and the
  playback clock run exactly as with a device).
- :class:`ArrayOutput`: the test seam; blocks are pulled on demand.
- :class:`FailoverOutput`: a sound card that may go away (unplugged, taken by
  another program, failing to start). A watch thread notices when its
  callbacks stop, hands ``fill`` to a :class:`NullOutput` so the timeline,
  the playback clock and the recording go on in real time, and reopens the
  card every few seconds, switching back when it calls back again. Under
  ``output = 'auto'`` it also waits for a card that was not there at start
  (a USB interface the machine found after the installation started).

:func:`open_output` chooses by ``AudioOutConfig.output``. sounddevice (and so
PortAudio) is imported only when a device is actually wanted.

Only one sink calls ``fill`` at a time (the timeline has a single reader):
a :class:`SoundDeviceOutput` has a gate (``attached``) that its callback
reads; detached, it plays silence and leaves ``fill`` alone, and the watch
thread waits for a callback in flight to finish before the null sink starts.
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


#: A device is lost after this long without a callback (at least; see FailoverOutput).
DEVICE_LOST_AFTER_S = 0.5
#: Seconds between attempts to reopen a lost device.
DEVICE_RETRY_S = 5.0
#: How often the watch thread looks at the device.
DEVICE_WATCH_S = 0.1
#: Longest wait between looks for a card that was never there (each look re-initialises
#: PortAudio, which on some hosts prints a page of ALSA notices): 5, 10, 20, 40, then 60 s.
DEVICE_WAIT_MAX_S = 60.0


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
    ``stats`` may be shared with the sink that stands in for this one
    (:class:`FailoverOutput`). While ``attached`` is False the callback plays
    silence without calling ``fill`` (another sink owns it); ``callbacks``
    counts every callback either way, which is how a watcher tells that the
    device is alive.
    """

    def __init__(self, config: AudioOutConfig, sample_rate: int, channels: int,
                 fill: FillCallback, sd: Any = None, stats: CallbackStats | None = None,
                 attached: bool = True) -> None:
        self._sd = sd if sd is not None else load_sounddevice()
        self.fill = fill
        self.sample_rate = sample_rate
        self.channels = channels
        self.stats = stats if stats is not None else CallbackStats()
        self.frames_played = 0
        self.attached = attached
        self.callbacks = 0  # callbacks finished (written by the callback only)
        self._entered = 0  # callbacks begun (written by the callback only)
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
        # `_entered` is bumped before the gate is read and `callbacks` after the
        # block is done, so a watcher that closed the gate and then sees them
        # equal knows no call of `fill` is in flight (CPython orders these).
        self._entered += 1
        try:
            if not self.attached:
                outdata.fill(0.0)  # another sink owns fill now: silence, in place
                return
            began = time.perf_counter()
            if status.output_underflow:
                self.stats.output_underflows += 1
            self.fill(outdata)
            self.frames_played += frames
            self.stats.add(time.perf_counter() - began)
        finally:
            self.callbacks += 1

    @property
    def quiet(self) -> bool:
        """True when no callback is running right now (meaningful once ``attached`` is False)."""
        return self._entered == self.callbacks

    @property
    def running(self) -> bool:
        """Whether PortAudio says the stream is active (False once it ended or failed)."""
        try:
            return bool(self._stream.active)
        except Exception:  # sd.PortAudioError: a stream PortAudio no longer knows
            return False

    def start(self) -> None:
        """Start the PortAudio stream."""
        self._stream.start()

    def stop(self) -> None:
        """Stop and close the PortAudio stream; closed even when stopping raises."""
        if not self._stream.closed:
            try:
                self._stream.stop()
            finally:
                self._stream.close()

    def abandon(self) -> None:
        """Detach and close a stream that failed: abort (queued audio is dropped) rather
        than stop, which drains and may wait on a device that is gone. Closed even when
        aborting raises; the error is re-raised for the caller to report."""
        self.attached = False
        if self._stream.closed:
            return
        halt = getattr(self._stream, "abort", None) or self._stream.stop
        try:
            halt()
        finally:
            self._stream.close()


class NullOutput:
    """Calls ``fill`` at real-time pace from a thread and throws the audio away.

    Deadlines are kept on ``time.monotonic()`` (absolute, so sleep jitter does
    not accumulate); if the thread falls more than ``max_behind_s`` behind it
    resynchronises rather than bursting, and counts it in ``stats.output_underflows``.
    """

    latency_s = 0.0

    def __init__(self, sample_rate: int, channels: int, block_size: int, fill: FillCallback,
                 max_behind_s: float = 0.2, stats: CallbackStats | None = None) -> None:
        self.fill = fill
        self.sample_rate = sample_rate
        self.block_size = block_size
        self.name = "null"
        self.stats = stats if stats is not None else CallbackStats()
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


class FailoverOutput:
    """A sound card that may go away, with the null sink standing in (see the module doc).

    Plays to ``device`` while it calls back. The watch thread (every
    ``watch_s``; :meth:`check` is one step of it, which tests call on their
    own clock with ``watch_s=None``) declares the device lost when PortAudio
    says its stream is no longer active, or when no callback came for
    ``lost_after_s``: by default the largest of :data:`DEVICE_LOST_AFTER_S`,
    four blocks and twice the stream's latency, so a late device is not taken
    for a gone one. Lost, it closes the device's gate, waits for a callback
    in flight, starts the null sink on the same ``fill`` (the timeline, the
    playback clock sent to the engine and the recording go on in real time),
    aborts the stream, logs ``output_lost`` and says so once on stderr. Every
    ``retry_s`` it opens the device again with the gate closed; once the new
    stream calls back, the null sink stops, the gate opens and
    ``output_restored`` is logged. :meth:`status` is what the heartbeat shows.
    ``reopened`` counts the cards that took ``fill`` back (restored, or found
    late); it changes just before the gate opens, so the ``fill`` it reaches
    (the player's) fades the music in from silence rather than starting the
    card mid-music at full level.

    A device that fails to *start* is handled the same way under ``output =
    'auto'`` (``output_fallback``, then reopened every ``retry_s``), and so is
    one that was not found at all (``device`` None, ``missing`` says why; the
    heartbeat's ``state`` is "waiting", looked for at growing intervals up to
    :data:`DEVICE_WAIT_MAX_S`, and ``output_opened`` is logged when it comes: a
    USB interface the host found after the installation's start); under
    ``output = 'device'`` it is a :class:`ConfigError` (the supervisor does
    not restart the role in a loop): that setting demands a sound card at
    start-up. Once playing, 'device' behaves like 'auto': a card unplugged
    during opening hours must not stop the music's clock or the recording,
    nor make the role exit and restart for ever; the loss is reported in the
    heartbeat and the event log instead, and the card is taken back when it
    returns.
    """

    def __init__(self, config: AudioOutConfig, sample_rate: int, channels: int,
                 fill: FillCallback, log_event: EventSink, device: SoundDeviceOutput | None,
                 *, sd: Any = None, missing: str = "",
                 open_device: Callable[[], SoundDeviceOutput] | None = None,
                 null: OutputStream | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 watch_s: float | None = DEVICE_WATCH_S, retry_s: float = DEVICE_RETRY_S,
                 lost_after_s: float | None = None) -> None:
        self.fill = fill
        self.sample_rate = sample_rate
        self.channels = channels
        # shared by every sink that plays in turn
        self.stats = device.stats if device is not None else CallbackStats()
        self._null: OutputStream = null if null is not None else NullOutput(
            sample_rate, channels, config.block_size, fill, stats=self.stats)
        self.name = device.name if device is not None else self._null.name
        self.latency_s = device.latency_s if device is not None else self._null.latency_s
        self.retry_s = retry_s
        self.lost_after_s = lost_after_s if lost_after_s is not None else max(
            DEVICE_LOST_AFTER_S, 4 * config.block_size / sample_rate, 2 * self.latency_s)
        self._config = config
        self._log = log_event
        self._sd = device._sd if device is not None else sd
        self._device_name = device.name if device is not None else (
            f"matching {config.device!r}" if config.device else "default output")
        self._device: SoundDeviceOutput | None = device
        self._waiting = device is None  # no card yet: looked for, never lost
        self._missing = missing
        self._candidate: SoundDeviceOutput | None = None
        self._open_device = open_device or self._reopen
        self._clock = clock
        self._watch_s = watch_s
        # Watch-thread state (the only writer once started).
        self._lost = False
        self._error: str | None = None
        self._retry_error: str | None = None
        self._retries = 0
        self._losses = 0
        self._lost_at = 0.0
        self._lost_since: float | None = None  # wall time, for the heartbeat
        self._next_retry = 0.0
        self._probe_started = 0.0
        self._seen_callbacks = 0
        self._last_callback = 0.0
        self._frames_retired = 0  # frames played by devices since closed
        #: Cards that took ``fill`` back from the null sink (read by the callback).
        self.reopened = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._status: dict[str, Any] = {}
        self._publish()

    # ---------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the device (or, under 'auto', the null sink if it cannot start) and the watch."""
        device = self._device
        now = self._clock()
        if device is not None:
            try:
                device.start()
            except Exception as exc:  # sd.PortAudioError: busy, or gone since it opened
                self._device = None
                self._discard(device)
                if self._config.output == "device":
                    raise ConfigError(
                        f"audio_out.output = 'device': expected {device.name!r} to start, "
                        f"got: {exc}; free the device (another program may hold it), or set "
                        "audio_out.output = 'auto' to play to the null sink and retry it"
                    ) from None
                reason = f"cannot start the output device: {exc}"
                print(f"audio_out: {reason}; playing to the null sink, recording continues; "
                      f"retrying every {self.retry_s:g} s", file=sys.stderr, flush=True)
                self._log("output_fallback", reason=reason, output="null", retry_s=self.retry_s)
                self._fall_back(reason, now)
            else:
                self._seen_callbacks = device.callbacks
                self._last_callback = now
        elif self._waiting and not self._lost:
            self._fall_back(self._missing, now)
        if self._watch_s is not None and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="audio-output-watch",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the watch, then whichever sinks are playing; idempotent."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        for sink in (self._device, self._candidate):
            if sink is None:
                continue
            try:
                sink.stop()
            except Exception as exc:  # a device gone since: closed anyway, said once
                self._log("output_stop_failed", output=sink.name, error=str(exc))
        self._null.stop()

    @property
    def device(self) -> SoundDeviceOutput | None:
        """The sound device playing now; None while it is lost."""
        return self._device

    @property
    def frames_played(self) -> int:
        """Frames played by every sink so far (devices and the null sink)."""
        device = self._device.frames_played if self._device is not None else 0
        return self._frames_retired + device + int(getattr(self._null, "frames_played", 0))

    def status(self) -> dict[str, Any]:
        """The heartbeat's ``output``: ``state`` "ok" (playing to ``output``), "lost" (the
        device stopped or did not start: ``error`` says why, since ``since``; the null sink
        plays, the recording goes on; reopened every ``retry_s``, ``retries`` so far, the
        last failure in ``retry_error``) or "waiting" (as "lost", for a card not found at
        start); ``losses`` counts losses since the start."""
        return self._status

    def _publish(self) -> None:
        # One new dict per change: readers on other threads see all of it or none.
        self._status = {
            "state": ("waiting" if self._waiting else "lost") if self._lost else "ok",
            "output": self.name,
            "device": self._device_name, "error": self._error, "since": self._lost_since,
            "retries": self._retries, "retry_error": self._retry_error,
            "retry_s": self.retry_s, "losses": self._losses,
        }

    # ------------------------------------------------------------- watch
    def _run(self) -> None:
        assert self._watch_s is not None
        while not self._stop.wait(self._watch_s):
            self.check()

    def check(self, now: float | None = None) -> None:
        """One watch step: notice a lost device, retry a lost one, or take it back."""
        now = self._clock() if now is None else now
        device = self._device
        if not self._lost and device is not None:
            if device.callbacks != self._seen_callbacks:
                self._seen_callbacks = device.callbacks
                self._last_callback = now
            if not device.running:
                self._lose(device, "PortAudio ended the stream", now)
            elif now - self._last_callback > self.lost_after_s:
                self._lose(device, f"no callback for {now - self._last_callback:.1f} s", now)
        elif self._candidate is not None:
            self._probe(self._candidate, now)
        elif self._lost and now >= self._next_retry:
            self._retry(now)

    def _lose(self, device: SoundDeviceOutput, reason: str, now: float) -> None:
        device.attached = False
        # A callback already past the gate may still be in fill: wait it out, so the
        # null sink never fills the timeline at the same time.
        while not device.quiet:
            if self._stop.wait(0.001):
                return  # stopping: stop() closes the device
        self._device = None
        self._fall_back(reason, now)
        try:
            device.abandon()
        except Exception as exc:  # PortAudio may refuse to abort a device that is gone
            reason = f"{reason}; closing it: {exc}"
        self._frames_retired += device.frames_played
        self._error = reason
        self._publish()
        print(f"audio_out: lost the sound device {device.name!r} ({reason}); playing to the "
              f"null sink, recording continues; retrying every {self.retry_s:g} s",
              file=sys.stderr, flush=True)
        self._log("output_lost", output=device.name, reason=reason, retry_s=self.retry_s)

    def _fall_back(self, reason: str, now: float) -> None:
        """The null sink takes over ``fill``; the device is retried from ``now + retry_s``."""
        self._null.start()
        self._lost = True
        self._losses += 0 if self._waiting else 1
        self._retries = 0
        self._retry_error = None
        self._error = reason
        self._lost_at = now
        self._lost_since = time.time()
        self._next_retry = now + self.retry_s
        self.name = self._null.name
        self.latency_s = self._null.latency_s
        self._publish()

    def _retry(self, now: float) -> None:
        self._retries += 1
        self._next_retry = now + self._retry_interval()
        candidate: SoundDeviceOutput | None = None
        try:
            candidate = self._open_device()
            candidate.attached = False  # silent until it proves it calls back
            candidate.start()
        except Exception as exc:  # ConfigError (gone from the list), sd.PortAudioError
            if candidate is not None:
                self._discard(candidate)
            self._retry_error = str(exc)
        else:
            self._candidate = candidate
            self._probe_started = now
        self._publish()

    def _probe(self, candidate: SoundDeviceOutput, now: float) -> None:
        if candidate.callbacks > 0 and candidate.running:
            self._restore(candidate, now)
        elif not candidate.running or now - self._probe_started > self.lost_after_s:
            self._candidate = None
            self._discard(candidate)
            self._retry_error = "reopened, but it does not call back"
            self._next_retry = now + self._retry_interval()
            self._publish()

    def _retry_interval(self) -> float:
        """``retry_s`` for a card that was lost; for one never found, doubling from it up to
        :data:`DEVICE_WAIT_MAX_S` (most hosts without a card stay without one)."""
        if not self._waiting:
            return self.retry_s
        return min(DEVICE_WAIT_MAX_S, self.retry_s * 2 ** min(self._retries, 8))

    def _restore(self, candidate: SoundDeviceOutput, now: float) -> None:
        # Stop the null sink first (its thread is joined: no fill from it after
        # this), then open the gate: the device plays silence in between.
        self._null.stop()
        # Before the gate opens: the card's first block of music is the first of a fade-in.
        self.reopened += 1
        candidate.attached = True
        self._candidate = None
        self._device = candidate
        self._seen_callbacks = candidate.callbacks
        self._last_callback = now
        self._lost = False
        lost_s = round(now - self._lost_at, 2)
        self._error = self._retry_error = self._lost_since = None
        self.name = self._device_name = candidate.name
        self.latency_s = candidate.latency_s
        if self._waiting:
            self._waiting = False
            self._publish()
            print(f"audio_out: found the sound device {candidate.name!r} after {lost_s:g} s; "
                  "playing to it", file=sys.stderr, flush=True)
            self._log("output_opened", output=candidate.name, latency_s=candidate.latency_s,
                      waited_s=lost_s)
            return
        self._publish()
        print(f"audio_out: the sound device {candidate.name!r} is back after {lost_s:g} s; "
              "playing to it again", file=sys.stderr, flush=True)
        self._log("output_restored", output=candidate.name, lost_s=lost_s,
                  retries=self._retries)

    def _discard(self, device: SoundDeviceOutput) -> None:
        """Close a device that is no use (failed to start, or never called back)."""
        try:
            device.abandon()
        except Exception:  # it is being dropped for an error already reported
            pass
        self._frames_retired += device.frames_played

    def _reopen(self) -> SoundDeviceOutput:
        """Open the configured device again, gated (the default ``open_device``)."""
        sd = self._sd
        # PortAudio lists the devices once, when it initialises: a card plugged back
        # in is only seen (under a possibly new index) after a fresh initialisation,
        # as python-sounddevice's maintainer advises (its issue #125). No stream of
        # ours is open at this point; the null sink is not PortAudio's.
        terminate, initialize = getattr(sd, "_terminate", None), getattr(sd, "_initialize", None)
        if callable(terminate) and callable(initialize):
            terminate()
            initialize()
        return SoundDeviceOutput(self._config, self.sample_rate, self.channels, self.fill,
                                 sd=sd, stats=self.stats, attached=False)


def open_output(config: AudioOutConfig, sample_rate: int, channels: int, fill: FillCallback,
                log_event: EventSink) -> OutputStream:
    """Open the sink ``config.output`` asks for.

    'device' opens a sound card or raises a clear error; 'auto' falls back to
    the null sink with one line on stderr (and a ``output_fallback`` event)
    when PortAudio or an output device is missing: for good where PortAudio is
    missing, else looking for the card (:class:`FailoverOutput` without a
    device); 'none' is the null sink. A sound card comes inside a
    :class:`FailoverOutput`, which keeps time on the null sink while the card
    is lost, or fails to start under 'auto', and takes it back when it returns.
    """
    if config.output == "none":
        return NullOutput(sample_rate, channels, config.block_size, fill)
    try:
        device = SoundDeviceOutput(config, sample_rate, channels, fill)
    except (DependencyError, ConfigError) as exc:
        if config.output == "device":
            raise
        reason = str(exc).split(";")[0]
        if isinstance(exc, DependencyError):  # no PortAudio: no card will ever come
            print(f"audio_out: {reason}; playing to the null sink, recording continues",
                  file=sys.stderr, flush=True)
            log_event("output_fallback", reason=str(exc), output="null")
            return NullOutput(sample_rate, channels, config.block_size, fill)
        # PortAudio lists no card (yet: a USB interface the host finds after the
        # installation's start) or none that fits: looked for again, the music goes on
        print(f"audio_out: {reason}; playing to the null sink, recording continues; looking "
              f"for a card again, at least every {DEVICE_WAIT_MAX_S:g} s", file=sys.stderr,
              flush=True)
        log_event("output_fallback", reason=str(exc), output="null", waiting=True)
        return FailoverOutput(config, sample_rate, channels, fill, log_event, None,
                              sd=load_sounddevice(), missing=str(exc))
    log_event("output_opened", output=device.name, latency_s=device.latency_s)
    return FailoverOutput(config, sample_rate, channels, fill, log_event, device)
