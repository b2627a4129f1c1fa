"""Recording exactly what was played: a callback-side ring and a file-writing thread.

The audio callback calls :meth:`Recorder.push` with each block it played
(after volume, holds and fades included); ``push`` only copies into a
preallocated single-producer/single-consumer ring and publishes the write
count. A writer thread drains the ring into a WAV or FLAC file with
soundfile. If the writer falls a whole ring behind, the callback drops the
block rather than wait, and counts it in ``dropped_frames`` (the file is then
shorter than what played, and :meth:`Recorder.close` logs it).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import soundfile

from installation.errors import InputError
from installation.events import EventSink, null_sink

_FORMATS = {".wav": ("WAV", "FLOAT"), ".flac": ("FLAC", "PCM_24")}


class Recorder:
    """Streams played blocks to ``path`` (``.wav`` float32 or ``.flac`` 24-bit)."""

    def __init__(self, path: str | Path, sample_rate: int, channels: int,
                 ring_s: float = 10.0, drain_s: float = 0.05,
                 log_event: EventSink = null_sink) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in _FORMATS:
            raise InputError(
                f"audio_out.record: expected a .wav or .flac path, got {str(self.path)!r}"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fmt, subtype = _FORMATS[suffix]
        try:
            self._file = soundfile.SoundFile(str(self.path), "w", samplerate=sample_rate,
                                             channels=channels, format=fmt, subtype=subtype)
        except (soundfile.LibsndfileError, OSError) as exc:
            raise InputError(f"audio_out.record: cannot write {str(self.path)!r}: {exc}") from None
        self.sample_rate = sample_rate
        self.channels = channels
        self._ring = np.zeros((max(1024, int(ring_s * sample_rate)), channels), np.float32)
        self._written = 0  # published by the callback (producer)
        self._read = 0  # owned by the writer thread (consumer)
        self.dropped_frames = 0
        self.frames_saved = 0
        self._drain_s = drain_s
        self._log = log_event
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._close_lock = threading.Lock()

    def push(self, block: np.ndarray) -> None:
        """Copy one played block into the ring (audio callback; never blocks)."""
        n = block.shape[0]
        size = self._ring.shape[0]
        w = self._written
        if w + n - self._read > size:
            self.dropped_frames += n
            return
        i = w % size
        first = n if i + n <= size else size - i
        self._ring[i : i + first] = block[:first]
        if first < n:
            self._ring[: n - first] = block[first:]
        self._written = w + n  # publish after the data is in place

    def start(self) -> None:
        """Start the draining thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="audio-recorder", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._drain_s):
            self.drain()
        self.drain()

    def drain(self) -> int:
        """Write everything pushed so far to the file; returns frames written."""
        w = self._written
        r = self._read
        n = w - r
        if n <= 0 or self._file.closed:
            return 0
        size = self._ring.shape[0]
        i = r % size
        first = min(n, size - i)
        self._file.write(self._ring[i : i + first])
        if first < n:
            self._file.write(self._ring[: n - first])
        self._read = w
        self.frames_saved += n
        return n

    def close(self) -> None:
        """Stop the thread, write what is left and close the file; idempotent."""
        with self._close_lock:
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout=10.0)
                self._thread = None
            if self._file.closed:
                return
            self.drain()
            self._file.close()
        self._log("recording_closed", path=str(self.path), frames=self.frames_saved,
                  seconds=self.frames_saved / self.sample_rate,
                  dropped_frames=self.dropped_frames)
