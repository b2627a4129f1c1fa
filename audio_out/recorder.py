"""Recording exactly what was played: a callback-side ring and a file-writing thread.

The audio callback calls :meth:`Recorder.push` with each block it played
(after volume, holds and fades included); ``push`` only copies into a
preallocated single-producer/single-consumer ring and publishes the write
count (and one small tuple saying where the block sits: its ring position,
its frame in the played stream, its timeline sample). A writer thread drains
the ring into the segment file with soundfile. If the writer falls a whole
ring behind, or the recording has failed, the callback drops the block rather
than wait, and counts it in ``dropped_frames``.

**Segments.** A recording is never overwritten: :func:`create_segment`
turns the configured template into ``STEM-{room}-{start}SUFFIX`` (see
:func:`audio_out.config.segment_template`) and creates it with ``O_EXCL``,
adding ``-2``, ``-3``... to the stem when a file of that name exists (two
starts in one second, a crash loop). Each start of audio_out opens a new
segment and announces it with a ``recording_opened`` event (path, media,
sample_rate, channels, ``playhead``: the room timeline sample of its first
frame, ``frame``: that frame's place in this start's played stream, and
``started``: which start of audio_out it belongs to, shared with the MIDI
segment); ``recording_closed`` reports frames, seconds, drops and any error.
A segment's names sort by start time only up to the ``-N`` suffix: the
order of a room's segments is the order of their ``recording_opened`` events
(and ``frame`` within one start), never the order of their names.

**Rollover.** With ``segment_s`` (``[audio_out] segment_s``) a running
recording goes on in a new segment at the first block stored at or past
every multiple of ``segment_s`` of the played stream: a room that was never
restarted wrote one file forever (~33 GB a day), which take retention
(:mod:`installation.takes`) may never remove, as it is being written, until
the disk was full. The callback only notes that block (one comparison a
block); the writer writes the segment up to it, creates the next file, closes
the old one, and writes on from that block, so no frame is lost or written
twice: the segments joined are the played stream, and each new one's
``recording_opened`` gives its ``frame`` and ``playhead`` as at any start
(``recording_closed`` of the old one, ``recording_rolled`` with ``reason``
``segment_s`` and no loss, then ``recording_opened``). The MIDI segment rolls
on the same multiples (:class:`audio_out.midi.MidiRecorder`). Where the next
file cannot be created the take goes on in the one it is in
(``recording_not_rolled``), tried again at the next multiple.

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
``soundfile.info`` reports an unknown length (2**63 - 1 frames),
``soundfile.read`` fails, and only a block-by-block read
(:func:`read_segment`) recovers the audio, up to a few hundred frames short.
The example configs therefore record ``.wav``.

**Failures stop the recording for a while, never the music.** A file that
cannot be created or written (ENOSPC, EIO, a read-only folder) puts the
recorder in the ``failed`` state: one ``recording_failed`` event and one
logged error, the segment is closed as it stands (what was written stays
readable), ``push`` only counts drops, and :meth:`Recorder.status` says
``failed`` with the error for the role's heartbeat. Every ``retry_s`` the
writer tries again in a *new* segment; once a write succeeds there the old
segment's ``recording_closed`` is logged, then the new one's
``recording_opened``, and a ``recording_resumed`` event says how many seconds
of the music were not recorded (``lost_s``).

**A deleted segment.** Writing to a file whose folder was removed (``rm -rf``
of the takes folder) succeeds, into an inode nobody can reach. Every
``sync_s``, with the fsync, the writer asks ``fstat`` how many links the open
file has left (a cheap call, not made per block); with none, it rolls to a
new segment (re-creating the folder) with a ``recording_rolled`` event naming
what happened. The ring still holds what was written since the last check
(``sync_s`` is well under the ring's ``ring_s``), so the new segment starts
there and only what the deleted file held before it is gone (``lost_s``);
where no new segment can be created the recording is ``failed`` with the
reason and retried as above.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
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
#: libsndfile's error number for "System error." (an OS call failed; sndfile.c).
_SFE_SYSTEM = 2
#: How many ``-N`` suffixes are tried before giving up on a name.
MAX_SEGMENT_SUFFIX = 1000
#: A header length at or past this is libsndfile's "unknown" (SF_COUNT_MAX), not frames.
UNKNOWN_LENGTH = 1 << 62
#: Frames read at a time once a block read failed (a killed FLAC's last decodable frames).
_TAIL_FRAMES = 64
#: A stream frame no recording reaches: "never roll".
_NEVER = 1 << 62

RecordingState = Literal["ok", "failed", "off"]
#: libsndfile reports a failed write() as "System error : <strerror>": back to the errno.
_ERRNO_BY_TEXT = {os.strerror(code): code for code in errno.errorcode}
#: Where a stored block sits: (ring position, frame in the played stream, playhead).
_Mark = tuple[int, int, int]
_FILE_ERRORS = (soundfile.LibsndfileError, OSError, RuntimeError)


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
    then decodes its frames, but a read that runs past the last whole FLAC
    frame fails (or comes back empty), losing the whole request. So when the
    reads end short of the header's length (unknown counts as never reached)
    the file is opened again at the frame where they stopped and read on in
    ``_TAIL_FRAMES`` pieces until one fails: only the cut FLAC frame itself
    is lost (a few hundred frames), and the iteration ends instead of raising.
    """
    done = 0
    with soundfile.SoundFile(str(path)) as file:
        length = file.frames
        for block in _decodable(file, block_frames):
            done += len(block)
            yield block
    if done >= length:
        return  # a whole file, read to the length its header gives
    yield from _read_tail(path, done, block_frames)


def _read_tail(path: str | Path, done: int, block_frames: int) -> Iterator[np.ndarray]:
    """The frames after ``done`` that a cut file still decodes, read ``_TAIL_FRAMES`` at a
    time from a fresh open and handed out in blocks of about ``block_frames``.

    libFLAC cannot always seek in a file without a length: a few points before ``done``
    are tried, then the start (the frames before ``done`` are read again and dropped).
    """
    for target in sorted({max(0, done - back) for back in (0, 1024, 16384, 262144)} | {0},
                         reverse=True):
        try:
            file = soundfile.SoundFile(str(path))
        except (soundfile.LibsndfileError, RuntimeError, OSError):
            return
        with file:
            try:
                if target:
                    file.seek(target)
                skip = done - target
                while skip > 0:  # decodable up to done: it was read before
                    got = len(file.read(min(skip, block_frames), dtype="float32",
                                        always_2d=True))
                    if got == 0:
                        break
                    skip -= got
            except (soundfile.LibsndfileError, RuntimeError):
                continue  # this point cannot be reached: an earlier one
            if skip > 0:
                continue
            pieces: list[np.ndarray] = []
            count = 0
            for piece in _decodable(file, _TAIL_FRAMES):
                pieces.append(piece)
                count += len(piece)
                if count >= block_frames:
                    yield np.concatenate(pieces)
                    pieces, count = [], 0
            if pieces:
                yield np.concatenate(pieces)
        return


def _decodable(file: Any, frames: int) -> Iterator[np.ndarray]:
    """``file``'s next blocks of ``frames`` as float32 (channels, 2-D), until its end or the
    first block libsndfile cannot decode (a file cut by a kill)."""
    while True:
        try:
            block = file.read(frames, dtype="float32", always_2d=True)
        except soundfile.LibsndfileError:
            return
        if len(block) == 0:
            return
        yield block


def _opening_error(exc: BaseException, path: Path) -> BaseException:
    """libsndfile's "Error opening 3: System error." (writing the header failed: a disk
    already full) as the OSError behind it, naming the file; else ``exc`` itself.

    The file never opened, so there is no handle to ask as
    :meth:`Recorder._system_error` does: libsndfile keeps a failed open's system
    error in its global error text, which ``sf_strerror(NULL)`` returns.
    """
    if not isinstance(exc, soundfile.LibsndfileError) or exc.code != _SFE_SYSTEM:
        return exc
    raw = soundfile._snd.sf_strerror(soundfile._ffi.NULL)
    text = soundfile._ffi.string(raw).decode("utf-8", "replace")
    code = _ERRNO_BY_TEXT.get(text.partition(":")[2].strip().rstrip("."))
    return OSError(code, os.strerror(code), str(path)) if code is not None else exc


def describe_error(exc: BaseException) -> str:
    """A short text for an I/O error: ``ENOSPC: No space left on device``."""
    if isinstance(exc, OSError) and exc.errno is not None:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{errno.errorcode.get(exc.errno, exc.errno)}: {exc.strerror or exc}{where}"
    return str(exc) or type(exc).__name__


def unlinked(fd: int | None) -> bool:
    """True when the open file ``fd`` has no name left (its file or folder was deleted)."""
    if fd is None:
        return False
    try:
        return os.fstat(fd).st_nlink == 0
    except OSError:
        return False  # a closed or odd descriptor: its writes will say what is wrong


class SegmentStatus:
    """What a recording segment of either medium reports to the heartbeat: where it writes,
    whether a write (or the file's creation) failed, and why."""

    path: Path
    error: str | None = None
    _failed: bool = False

    @property
    def failed(self) -> bool:
        """True while the recording is failed (a write or the file's creation failed)."""
        return self._failed

    def status(self) -> dict[str, Any]:
        """``{"state": "ok"|"failed", "path", "error"}`` for the role's heartbeat."""
        return {"state": "failed" if self._failed else "ok", "path": str(self.path),
                "error": self.error}


@dataclass
class _Segment:
    """One audio segment file of a :class:`Recorder` and what went into it."""

    path: Path
    fd: int | None = None
    file: Any = None
    start: _Mark | None = None  # its first frame (set when it is announced)
    frames: int = 0
    dropped_at_open: int = 0
    announced: bool = False
    retry: bool = False  # opened to try writing again after a failure
    error: str | None = None

    def close(self) -> str | None:
        """Close the file (libsndfile writes its final header); the error's text, if any."""
        if self.file is None or self.file.closed:
            return None
        try:
            self.file.close()
        except _FILE_ERRORS as exc:
            return describe_error(exc)
        return None


class Recorder(SegmentStatus):
    """Streams played blocks to a new segment file (``.wav`` float32 RF64 or ``.flac`` 24-bit).

    ``path`` is a segment template when ``room`` is given (what the player
    does), else the exact file to create (then a later segment, after a
    failure or a deletion, gets ``-2``, ``-3``...). ``to_timeline`` converts
    the playhead given to :meth:`push` into the room timeline's samples for
    the ``recording_opened`` event. ``open_file`` is the soundfile seam (tests
    inject one that fails); ``now`` is the clock of the periodic fsync, link
    check and retry (tests pass a fake one). ``segment_s`` (None: never) rolls
    the recording into a new segment every that many seconds of the played
    stream (see the module docstring).
    """

    def __init__(self, path: str | Path, sample_rate: int, channels: int,
                 ring_s: float = 10.0, drain_s: float = 0.05,
                 log_event: EventSink = null_sink, *, room: str | None = None,
                 start: datetime | None = None, sync_s: float = 5.0, retry_s: float = 5.0,
                 to_timeline: Callable[[int], int] | None = None,
                 open_file: Callable[..., Any] | None = None,
                 now: Callable[[], float] = time.monotonic,
                 segment_s: float | None = None) -> None:
        suffix = Path(path).suffix.lower()
        if suffix not in _FORMATS:
            raise InputError(
                f"audio_out.record: expected a .wav or .flac path, got {str(path)!r}"
            )
        if segment_s is not None and not 0.0 < segment_s < float("inf"):
            raise InputError(f"audio_out.segment_s: expected a number of seconds > 0, "
                             f"got {segment_s}")
        self.sample_rate = sample_rate
        self.channels = channels
        self._ring = np.zeros((max(1024, int(ring_s * sample_rate)), channels), np.float32)
        self._size = self._ring.shape[0]
        # --- callback (producer) side, read by the writer ---
        self._written = 0  # ring frames published
        self._stream = 0  # frames offered (stored or dropped): the played stream's clock
        self._cb_dropped = 0
        self._mark: _Mark | None = None  # the last stored block
        self._seg_start: _Mark | None = None  # the first block stored for the segment
        self._segment_frames = max(1, round(segment_s * sample_rate)) if segment_s else 0
        self._roll_at = self._segment_frames or _NEVER  # the next multiple of segment_s
        self._roll_mark: _Mark | None = None  # the first block stored at or past it
        # --- writer (consumer) side, read by the callback ---
        self._read = 0  # ring frames written to a file
        self._failed = False  # one attribute load in the callback
        self._in_push = False  # the callback is copying (a salvage waits it out)
        # --- writer only ---
        self._writer_dropped = 0
        # Block starts seen since the last link check, oldest first (each <= _read): where
        # a new segment may take over from a deleted one, from what the ring still holds.
        self._held: deque[_Mark] = deque(maxlen=4096)
        self._rolled: _Mark | None = None  # the last roll mark taken
        self.frames_saved = 0
        self._drain_s = drain_s
        self._sync_s = sync_s
        self._retry_s = retry_s
        self._now = now
        self._last_sync = self._last_check = now()
        self._next_retry = 0.0
        self._log = log_event
        self._to_timeline = to_timeline
        self._template = path
        self._room = room
        self._start_time = start
        self._started = (start or datetime.now()).isoformat(timespec="microseconds")
        self._format = _FORMATS[suffix]
        self._open_file = open_file
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._close_lock = threading.Lock()
        self._closed = False
        self.error: str | None = None
        self.path: Path = Path(path)
        self._seg: _Segment | None = None  # the segment being written (or tried)
        self._broken: _Segment | None = None  # the failed one, closed, awaiting its event
        self._outage_dropped = 0  # dropped_frames when the failure began
        try:
            self._seg = self._new_segment(retry=False)
        except _FILE_ERRORS as exc:
            self._broken = _Segment(Path(path))
            self._begin_failure(exc)
            return
        self.path = self._seg.path

    # --------------------------------------------------------------- files
    def _new_segment(self, retry: bool) -> _Segment:
        """Create and open the next segment file; raises what creating or opening raised."""
        start = self._start_time if not retry else None  # a later segment: named at its start
        path, fd = create_segment(self._template, self._room, start)
        fmt, subtype = self._format
        try:
            opener = self._open_file or soundfile.SoundFile
            file = opener(fd, "w", samplerate=self.sample_rate, channels=self.channels,
                          format=fmt, subtype=subtype, closefd=True)
        except _FILE_ERRORS as exc:
            error = _opening_error(exc, path)  # before anything else may touch libsndfile
            with contextlib.suppress(OSError):
                os.close(fd)  # unless libsndfile closed it already
            with contextlib.suppress(OSError):
                path.unlink()  # ours, created a moment ago, empty
            if error is exc:
                raise
            raise error from None
        segment = _Segment(path, fd, file, retry=retry, dropped_at_open=self.dropped_frames)
        if fmt == "RF64":
            self._command(file, _SFC_RF64_AUTO_DOWNGRADE, 1)
        self._command(file, _SFC_UPDATE_HEADER_AUTO, 1)
        return segment

    @staticmethod
    def _command(file: Any, command: int, value: int) -> None:
        # soundfile exposes sf_command only privately; the commands are stable libsndfile API.
        handle = getattr(file, "_file", None)
        if handle is not None:
            soundfile._snd.sf_command(handle, command, soundfile._ffi.NULL, value)

    @property
    def dropped_frames(self) -> int:
        """Frames played but not recorded: refused by a full or failed ring, or lost in a
        failed write."""
        return self._cb_dropped + self._writer_dropped

    @property
    def first_playhead(self) -> int | None:
        """The playhead :meth:`push` gave with the current segment's first block."""
        mark = self._seg_start
        return None if mark is None else mark[2]

    # ------------------------------------------------------------ callback
    def push(self, block: np.ndarray, playhead: int = 0) -> None:
        """Copy one played block into the ring (audio callback; never blocks or waits).

        ``playhead`` is the timeline position of the block's first frame; the
        first block a segment stores is where it starts.
        """
        n = block.shape[0]
        w = self._written
        stream = self._stream
        self._stream = stream + n
        size = self._size
        if self._failed or w + n - self._read > size:
            self._cb_dropped += n
            return
        self._in_push = True
        i = w % size
        first = n if i + n <= size else size - i
        self._ring[i : i + first] = block[:first]
        if first < n:
            self._ring[: n - first] = block[first:]
        mark = (w, stream, playhead)
        self._mark = mark
        if self._seg_start is None:
            self._seg_start = mark
        if stream >= self._roll_at:  # the writer starts the next segment with this block
            size = self._segment_frames
            self._roll_at = stream - stream % size + size
            self._roll_mark = mark
        self._written = w + n  # publish after the data and its marks are in place
        self._in_push = False

    # -------------------------------------------------------- writer thread
    def start(self) -> None:
        """Start the draining thread (it also retries a failed recording)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="audio-recorder", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._drain_s):
            self.drain()
        self.drain()

    def drain(self) -> int:
        """Write everything pushed so far to the file; returns frames written.

        Also the writer's housekeeping: the periodic fsync and link check, and
        while failed the retry (see the module docstring). Errors are never
        raised: a write error fails the recording and returns 0.
        """
        now = self._now()
        if self._failed:
            self._discard()
            if not self._stop.is_set() and now >= self._next_retry:
                self._retry(now)
            return 0
        seg = self._seg
        if seg is None or seg.file is None or seg.file.closed:
            return 0
        roll = self._roll_mark  # read before _written, as the mark
        mark = self._mark  # read before _written: its block is inside what is drained
        w = self._written
        r = self._read
        before = 0  # frames written to the segment that rolled
        if roll is not None and roll is not self._rolled and roll[0] < w:
            self._rolled = roll
            # (before r: a mark from before a failure; at r in an empty segment: it starts there)
            if roll[0] > r or (roll[0] == r and seg.frames):
                rolled = self._roll_segment(seg, r, roll)
                if rolled is None:
                    return 0
                before, seg, r = roll[0] - r, rolled, self._read
        n = self._write_ring(seg, r, w)
        if n < 0:
            return 0
        if n:
            if mark is not None and r <= mark[0] < w:  # a block start in what was written
                self._held.append(mark)
            if not seg.announced:
                self._announce(seg)
            if now - self._last_sync >= self._sync_s:
                self._last_sync = now
                try:
                    seg.file.flush()  # sf_write_sync: fsync
                except _FILE_ERRORS as exc:
                    self._write_failed(seg, exc)
                    return 0
        if now - self._last_check >= self._sync_s:
            self._last_check = now
            self._check_links(seg)
        return before + n

    def _write_ring(self, seg: _Segment, r: int, w: int) -> int:
        """Write ring frames ``r..w`` to ``seg``; frames written, or -1 after a failure."""
        n = w - r
        if n <= 0:
            return 0
        size = self._size
        i = r % size
        first = min(n, size - i)
        try:
            seg.file.write(self._ring[i : i + first])
            if first < n:
                seg.file.write(self._ring[: n - first])
        except _FILE_ERRORS as exc:
            self._write_failed(seg, self._system_error(seg, exc))
            return -1
        self._read = w
        seg.frames += n
        self.frames_saved += n
        return n

    def _roll_segment(self, old: _Segment, r: int, roll: _Mark) -> _Segment | None:
        """Every ``segment_s``: write ``old`` up to the block at ``roll``, close it and go on
        in a new segment from that block (writer thread: the callback never waits for this).

        Returns the segment to write on in: the new one, or ``old`` where no new one
        can be created (tried again at the next roll); None when writing ``old``
        failed (the recording is failed, as after any failed write).
        """
        if self._write_ring(old, r, roll[0]) < 0:
            return None
        if not old.announced:
            self._announce(old)  # its first drain: opened before it is closed
        try:
            new = self._new_segment(retry=True)
        except _FILE_ERRORS as exc:
            text = describe_error(exc)
            self._log("recording_not_rolled", path=str(old.path), media="audio", error=text)
            log.warning("recording: no new segment can be created (%s); going on in %s",
                        text, old.path)
            return old
        new.retry = False  # a segment from here on, written or failed like the first
        try:
            old.file.flush()  # fsync: a finished segment is whole on disk, even after a power cut
        except _FILE_ERRORS as exc:
            old.error = describe_error(exc)
        error = old.close()  # the final header
        if error is not None:
            old.error = old.error or error
        dropped = self.dropped_frames
        self._closed_event(old, dropped)
        new.dropped_at_open = dropped
        new.start = self._seg_start = roll
        self._seg = new
        self._held.clear()  # a deletion of the new one salvages from its own start only
        self._held.append(roll)
        self._log("recording_rolled", path=str(new.path), media="audio", previous=str(old.path),
                  reason="segment_s", error=None, lost_frames=0, lost_s=0.0)
        return new

    def _check_links(self, seg: _Segment) -> None:
        """Roll a deleted segment; else forget the block starts before the last one."""
        if unlinked(seg.fd):
            self._roll_deleted(seg)
            return
        while len(self._held) > 1:
            self._held.popleft()

    def _discard(self) -> None:
        """While failed: frames the callback stored before it saw the failure are lost."""
        w = self._written
        self._writer_dropped += w - self._read
        self._read = w
        self._held.clear()

    def _system_error(self, seg: _Segment, exc: BaseException) -> BaseException:
        """libsndfile's "System error." as the OSError behind it (ENOSPC, EFBIG, EIO...)."""
        handle = getattr(seg.file, "_file", None)
        if not isinstance(exc, soundfile.LibsndfileError) or handle is None:
            return exc
        text = soundfile._ffi.string(soundfile._snd.sf_strerror(handle)).decode("utf-8", "replace")
        code = _ERRNO_BY_TEXT.get(text.partition(":")[2].strip().rstrip("."))
        return OSError(code, os.strerror(code)) if code is not None else exc

    def _announce(self, seg: _Segment) -> None:
        """``recording_opened`` for ``seg`` (and, after an outage, the old one's close)."""
        seg.announced = True
        seg.start = seg.start or self._seg_start or (0, 0, 0)
        if not self._held or self._held[0] != seg.start:
            self._held.appendleft(seg.start)  # a deletion before the first check: from here
        dropped = self.dropped_frames
        broken = self._broken
        if broken is not None:  # an outage ends: its segment's close, then the new one's open
            self._broken = None
            self._closed_event(broken, dropped)
            seg.dropped_at_open = dropped
        self.path = seg.path
        playhead = seg.start[2]
        if self._to_timeline is not None:
            playhead = self._to_timeline(playhead)
        self._log("recording_opened", path=str(seg.path), media="audio",
                  sample_rate=self.sample_rate, channels=self.channels, playhead=playhead,
                  frame=seg.start[1], started=self._started)
        if broken is not None:
            lost = dropped - self._outage_dropped
            self._log("recording_resumed", path=str(seg.path), media="audio",
                      previous=str(broken.path), error=self.error, lost_frames=lost,
                      lost_s=round(lost / self.sample_rate, 3))
            log.warning("recording resumed in %s after %s: %.1f s of the music not recorded",
                        seg.path, self.error, lost / self.sample_rate)
            self.error = None

    def _closed_event(self, seg: _Segment, dropped: int) -> None:
        self._log("recording_closed", path=str(seg.path), media="audio",
                  frames=seg.frames, seconds=seg.frames / self.sample_rate,
                  dropped_frames=dropped - seg.dropped_at_open, error=seg.error)

    def _begin_failure(self, exc: BaseException) -> None:
        """Enter the failed state (logged once per outage); the callback drops from here."""
        text = describe_error(exc)
        self.error = text
        if self._broken is not None:
            self._broken.error = self._broken.error or text
        first = not self._failed
        self._failed = True
        self._next_retry = self._now() + self._retry_s
        if first:
            self._outage_dropped = self.dropped_frames
            path = self._broken.path if self._broken is not None else self.path
            self.path = path
            self._log("recording_failed", path=str(path), media="audio", error=text)
            log.error("recording failed, playback goes on without it (tried again every "
                      "%g s): %s: %s", self._retry_s, path, text)

    def _write_failed(self, seg: _Segment, exc: BaseException) -> None:
        """A write (or fsync) failed: close ``seg`` as it stands and fail until a retry works."""
        text = describe_error(exc)
        if self._failed:
            return
        seg.close()  # keep what was written readable
        self._seg = None
        if seg.retry and not seg.announced:
            # A retry that could not write: an empty file of ours, not a segment.
            with contextlib.suppress(OSError):
                seg.path.unlink()
            self.error = text
            self._failed = True
            self._next_retry = self._now() + self._retry_s
        else:
            seg.error = text
            self._broken = seg
            self._begin_failure(exc)
        self._discard()

    def _retry(self, now: float) -> None:
        """Try a new segment; the next drain's write says whether the disk takes it again."""
        self._next_retry = now + self._retry_s
        try:
            seg = self._new_segment(retry=True)
        except _FILE_ERRORS as exc:
            self.error = describe_error(exc)
            return
        self._seg = seg
        self._seg_start = None  # the callback marks the first block it stores
        self._discard()
        self._failed = False

    def _salvage(self) -> tuple[_Mark, np.ndarray] | None:
        """The frames from the oldest held block start to ``_read`` that the ring still
        holds intact, with that block's mark (None: none are)."""
        read, size = self._read, self._size
        marks = [m for m in self._held if read - size < m[0] <= read]
        if not marks:
            return None
        first = marks[0][0]
        data = np.empty((read - first, self.channels), np.float32)
        i = first % size
        head = min(read - first, size - i)
        data[:head] = self._ring[i : i + head]
        data[head:] = self._ring[: read - first - head]
        # A block the callback was copying may have overwritten part of the copy: wait
        # it out (the writer waits for the callback, never the reverse), then keep only
        # what lies within one ring of everything it has written.
        deadline = time.monotonic() + 0.1
        while self._in_push and time.monotonic() < deadline:
            time.sleep(0)
        intact = self._written - size
        mark = next((m for m in marks if m[0] >= intact), None)
        if mark is None:
            return None
        return mark, data[mark[0] - first :]

    def _roll_deleted(self, old: _Segment) -> None:
        """The open segment has no name left: go on in a new one from the last check."""
        salvage = self._salvage()
        kept = 0 if salvage is None else len(salvage[1])
        gone = old.frames - kept
        old.frames = 0  # nothing of it is on disk any more (its closing event says so)
        old.close()
        old.error = (f"deleted while recording (no links left to {old.path.name}: the file "
                     f"or its folder was removed; {gone / self.sample_rate:.1f} s gone)")
        self._seg = None
        self._held.clear()
        try:
            new = self._new_segment(retry=True)
        except _FILE_ERRORS as exc:
            # Nowhere to go on: failed (retried); what the ring kept is lost too.
            self._broken = old
            self._begin_failure(OSError(getattr(exc, "errno", None) or errno.EIO,
                                        f"{old.error}; a new segment cannot be created: "
                                        f"{describe_error(exc)}"))
            self._discard()
            return
        dropped = self.dropped_frames
        self._closed_event(old, dropped)
        new.retry = False  # a segment from here on, written or failed like the first
        new.dropped_at_open = dropped
        self._seg = new
        self._log("recording_rolled", path=str(new.path), media="audio", previous=str(old.path),
                  reason="deleted", error=old.error, lost_frames=gone,
                  lost_s=round(gone / self.sample_rate, 3))
        log.warning("recording: %s; going on in %s", old.error, new.path)
        if salvage is None:
            # Nothing left to take over: the segment starts with the next block stored.
            self._seg_start = None
            self._discard()
            return
        mark, data = salvage
        new.start = self._seg_start = mark
        self._held.append(mark)
        try:
            new.file.write(data)
        except _FILE_ERRORS as exc:
            self._write_failed(new, self._system_error(new, exc))
            return
        new.frames += len(data)
        self._announce(new)

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
            seg = self._seg
            if seg is not None and not self._failed:
                self.drain()
            seg = self._seg
            self._seg = None
            dropped = self.dropped_frames
            if seg is not None:
                error = seg.close()  # the final header
                if error is not None and seg.error is None:
                    seg.error = error
                    self.error = error
                    self._log("recording_failed", path=str(seg.path), media="audio",
                              error=error)
                if seg.retry and not seg.announced:
                    with contextlib.suppress(OSError):
                        seg.path.unlink()  # a retry nothing was written to
                else:
                    self._closed_event(seg, dropped)
            if self._broken is not None:
                self._broken.error = self._broken.error or self.error
                self._closed_event(self._broken, dropped)
                self._broken = None
