"""Recording exactly what was played: a callback-side ring and a file-writing thread.

The audio callback calls :meth:`Recorder.push` with each block it played
(after volume, holds and fades included); ``push`` only copies into a
preallocated single-producer/single-consumer ring and publishes the write
count. A writer thread drains the ring into the segment file with
soundfile. If the writer falls a whole ring behind, or the recording has
failed, the callback drops the block rather than wait, and counts it in
``dropped_frames``.

**Segments.** A recording is never overwritten: :func:`create_segment`
turns the configured template into ``STEM-{room}-{start}SUFFIX`` (see
:func:`audio_out.config.segment_template`) and creates it with ``O_EXCL``,
adding ``-2``, ``-3``... to the stem when a file of that name exists (two
starts in one second, a crash loop). Each start of audio_out opens a new
segment and announces it with a ``recording_opened`` event (path, media,
sample_rate, channels, and the room timeline sample where it starts);
``recording_closed`` reports frames, seconds, drops and any error.

**Why WAV is the default, and why RF64.** ``.wav`` is written as RF64 with
libsndfile's ``SFC_RF64_AUTO_DOWNGRADE``: while the take is under 4 GiB the
header is a plain RIFF/WAVE one (with a JUNK chunk reserved for the 64-bit
sizes), so every tool reads it; past 4 GiB (float32 stereo at 48 kHz: ~3.1 h)
libsndfile writes the RF64 header instead of failing. ``SFC_SET_UPDATE_HEADER_AUTO``
makes libsndfile rewrite the header after every write, and the file is
written through a file descriptor (no user-space buffer), so a segment
killed with SIGKILL is a valid file up to its last drain (~``drain_s``);
``sf_write_sync`` (fsync) every ``sync_s`` bounds the loss on a power cut.
``.flac`` (24-bit) is half the size but is *not* crash-safe: libFLAC
writes the length into STREAMINFO only on close, so after SIGKILL
``soundfile.info`` reports an unknown length, ``soundfile.read`` fails, and
only a block-by-block read (:func:`read_segment`) recovers the audio, up to
two FLAC blocks (~2 x 4096 frames) short. The example configs therefore
record ``.wav``.

**Failures stop the recording, never the music.** A file that cannot be
created or written (ENOSPC, EIO, a read-only folder) puts the recorder in
the ``failed`` state: one ``recording_failed`` event and one logged error,
the ring is no longer drained (``push`` only counts drops), and
:meth:`Recorder.status` says so for the role's heartbeat. What was written
before the failure stays readable.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile

from audio_out.config import segment_name
from ground.errors import InputError
from ground.events import EventSink, null_sink

log = logging.getLogger(__name__)

_FORMATS = {".wav": ("RF64", "FLOAT"), ".flac": ("FLAC", "PCM_24")}
# libsndfile commands soundfile does not name (sndfile.h).
_SFC_UPDATE_HEADER_AUTO = 0x1061
_SFC_RF64_AUTO_DOWNGRADE = 0x1210
#: How many ``-N`` suffixes are tried before giving up on a name.
MAX_SEGMENT_SUFFIX = 1000

RecordingState = Literal["ok", "failed", "off"]
#: libsndfile reports a failed write() as "System error : <strerror>": back to the errno.
_ERRNO_BY_TEXT = {os.strerror(code): code for code in errno.errorcode}


def create_segment(template: str | Path, room: str | None,
                   start: datetime | None = None) -> tuple[Path, int]:
    """Create the segment file exclusively; returns its path and an open read-write fd.

    ``template`` is a path (already under the output folder); with ``room``
    it is a segment template (``{room}``/``{start}``, see
    :func:`audio_out.config.segment_template`), with ``room=None`` the path
    is used as it is. Either way an existing file is never opened: ``-2``,
    ``-3``... are appended to the stem. Raises OSError (the folder cannot be
    created or written, or every suffix is taken).
    """
    if room is not None:
        start = start or datetime.now()
        name = segment_name(str(template), room, start)
    else:
        name = str(template)
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, MAX_SEGMENT_SUFFIX + 1):
        candidate = path if n == 1 else path.with_name(f"{path.stem}-{n}{path.suffix}")
        try:
            fd = os.open(candidate, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        return candidate.absolute(), fd
    raise OSError(errno.EEXIST, f"{MAX_SEGMENT_SUFFIX} segments named like this exist", str(path))


def read_segment(path: str | Path, block_frames: int = 4096) -> Iterator[np.ndarray]:
    """The frames of a segment as float32 ``(n, channels)`` blocks, even of one killed mid-take.

    Reads in blocks (memory stays flat with the take's length). A FLAC
    segment killed before its close has no length in its header: libsndfile
    then decodes its frames but fails at the end of them; that failure ends
    the iteration (the last partial block is lost) instead of raising.
    """
    with soundfile.SoundFile(str(path)) as file:
        while True:
            try:
                block = file.read(block_frames, dtype="float32", always_2d=True)
            except soundfile.LibsndfileError:
                return
            if len(block) == 0:
                return
            yield block


def describe_error(exc: BaseException) -> str:
    """A short text for an I/O error: ``ENOSPC: No space left on device``."""
    if isinstance(exc, OSError) and exc.errno is not None:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{errno.errorcode.get(exc.errno, exc.errno)}: {exc.strerror or exc}{where}"
    return str(exc) or type(exc).__name__


class SegmentStatus:
    """What a recording segment of either medium reports to the heartbeat: where it writes,
    whether a write (or the file's creation) failed, and why."""

    path: Path
    error: str | None = None
    _failed: bool = False

    @property
    def failed(self) -> bool:
        """True once a write (or the file's creation) failed."""
        return self._failed

    def status(self) -> dict[str, Any]:
        """``{"state": "ok"|"failed", "path", "error"}`` for the role's heartbeat."""
        return {"state": "failed" if self._failed else "ok", "path": str(self.path),
                "error": self.error}


class Recorder(SegmentStatus):
    """Streams played blocks to a new segment file (``.wav`` float32 RF64 or ``.flac`` 24-bit).

    ``path`` is a segment template when ``room`` is given (what the player
    does), else the exact file to create. ``to_timeline`` converts the
    playhead given to :meth:`push` into the room timeline's samples for the
    ``recording_opened`` event. ``open_file`` is the soundfile seam (tests
    inject one that fails).
    """

    def __init__(self, path: str | Path, sample_rate: int, channels: int,
                 ring_s: float = 10.0, drain_s: float = 0.05,
                 log_event: EventSink = null_sink, *, room: str | None = None,
                 start: datetime | None = None, sync_s: float = 5.0,
                 to_timeline: Callable[[int], int] | None = None,
                 open_file: Callable[..., Any] | None = None) -> None:
        suffix = Path(path).suffix.lower()
        if suffix not in _FORMATS:
            raise InputError(
                f"audio_out.record: expected a .wav or .flac path, got {str(path)!r}"
            )
        self.sample_rate = sample_rate
        self.channels = channels
        self._ring = np.zeros((max(1024, int(ring_s * sample_rate)), channels), np.float32)
        self._written = 0  # published by the callback (producer)
        self._read = 0  # owned by the writer thread (consumer)
        self.dropped_frames = 0
        self.frames_saved = 0
        self.first_playhead: int | None = None  # set by the first push (callback)
        self._drain_s = drain_s
        self._sync_s = sync_s
        self._last_sync = time.monotonic()
        self._log = log_event
        self._to_timeline = to_timeline
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._close_lock = threading.Lock()
        self._announced = False
        self._closed = False
        self._failed = False  # read by the callback: one attribute load
        self.error: str | None = None
        self.path: Path = Path(path)
        self._file: Any = None
        fmt, subtype = _FORMATS[suffix]
        try:
            self.path, fd = create_segment(path, room, start)
        except OSError as exc:
            self._fail(exc)
            return
        try:
            opener = open_file or soundfile.SoundFile
            self._file = opener(fd, "w", samplerate=sample_rate, channels=channels,
                                format=fmt, subtype=subtype, closefd=True)
        except (soundfile.LibsndfileError, OSError, RuntimeError) as exc:
            try:
                os.close(fd)
            except OSError:
                pass  # libsndfile closed it already
            self._fail(exc)
            return
        if fmt == "RF64":
            self._command(_SFC_RF64_AUTO_DOWNGRADE, 1)
        self._command(_SFC_UPDATE_HEADER_AUTO, 1)

    def _command(self, command: int, value: int) -> None:
        # soundfile exposes sf_command only privately; the commands are stable libsndfile API.
        handle = getattr(self._file, "_file", None)
        if handle is not None:
            soundfile._snd.sf_command(handle, command, soundfile._ffi.NULL, value)

    # ------------------------------------------------------------ callback
    def push(self, block: np.ndarray, playhead: int = 0) -> None:
        """Copy one played block into the ring (audio callback; never blocks or allocates).

        ``playhead`` is the timeline position of the block's first frame; the
        first push records it as where the segment starts.
        """
        n = block.shape[0]
        if self.first_playhead is None:
            self.first_playhead = playhead
        size = self._ring.shape[0]
        w = self._written
        if self._failed or w + n - self._read > size:
            self.dropped_frames += n
            return
        i = w % size
        first = n if i + n <= size else size - i
        self._ring[i : i + first] = block[:first]
        if first < n:
            self._ring[: n - first] = block[first:]
        self._written = w + n  # publish after the data is in place

    # -------------------------------------------------------- writer thread
    def start(self) -> None:
        """Start the draining thread."""
        if self._thread is None and not self._failed:
            self._thread = threading.Thread(target=self._run, name="audio-recorder", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._drain_s):
            self.drain()
        self.drain()

    def drain(self) -> int:
        """Write everything pushed so far to the file; returns frames written.

        A write error fails the recording (see the module docstring) and
        returns 0; it is never raised.
        """
        w = self._written
        r = self._read
        n = w - r
        if n <= 0 or self._failed or self._file is None or self._file.closed:
            return 0
        size = self._ring.shape[0]
        i = r % size
        first = min(n, size - i)
        try:
            self._file.write(self._ring[i : i + first])
            if first < n:
                self._file.write(self._ring[: n - first])
            if time.monotonic() - self._last_sync >= self._sync_s:
                self._last_sync = time.monotonic()
                self._file.flush()
        except (soundfile.LibsndfileError, OSError, RuntimeError) as exc:
            self._fail(self._system_error(exc))
            return 0
        self._read = w
        self.frames_saved += n
        if not self._announced:
            self._announce()
        return n

    def _system_error(self, exc: BaseException) -> BaseException:
        """libsndfile's "System error." as the OSError behind it (ENOSPC, EFBIG, EIO...)."""
        handle = getattr(self._file, "_file", None)
        if not isinstance(exc, soundfile.LibsndfileError) or handle is None:
            return exc
        text = soundfile._ffi.string(soundfile._snd.sf_strerror(handle)).decode("utf-8", "replace")
        code = _ERRNO_BY_TEXT.get(text.partition(":")[2].strip().rstrip("."))
        return OSError(code, os.strerror(code)) if code is not None else exc

    def _announce(self) -> None:
        self._announced = True
        playhead = self.first_playhead or 0
        if self._to_timeline is not None:
            playhead = self._to_timeline(playhead)
        self._log("recording_opened", path=str(self.path), media="audio",
                  sample_rate=self.sample_rate, channels=self.channels, playhead=playhead)

    def _fail(self, exc: BaseException) -> None:
        if self._failed:
            return
        self.error = describe_error(exc)
        self._failed = True
        self._log("recording_failed", path=str(self.path), media="audio", error=self.error)
        log.error("recording failed, playback goes on without it: %s: %s",
                  self.path, self.error)
        if self._file is not None and not self._file.closed:
            try:
                self._file.close()  # keep what was written readable
            except (soundfile.LibsndfileError, OSError, RuntimeError):
                pass

    def close(self) -> None:
        """Stop the thread, write what is left, close, log ``recording_closed``; idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._stop.set()
            if self._thread is not None:
                self._thread.join(timeout=10.0)
                self._thread = None
            if self._file is not None and not self._file.closed:
                self.drain()
                if not self._file.closed:
                    try:
                        self._file.close()  # the final header
                    except (soundfile.LibsndfileError, OSError, RuntimeError) as exc:
                        self._fail(exc)
        self._log("recording_closed", path=str(self.path), media="audio",
                  frames=self.frames_saved, seconds=self.frames_saved / self.sample_rate,
                  dropped_frames=self.dropped_frames, error=self.error)
