"""The notes that actually reached the speakers: a MIDI file and a live MIDI port.

Chunks may carry their notes (int32 (N, 6): ``start_offset, length, pitch,
velocity, program, channel``; program 128 = GM percussion). A note *counts*
once the playhead has passed its start and it was not overwritten before:
:class:`PlayedNotes` drops notes of a chunk's late part, drops queued notes
that a later splice replaced, and shortens notes that a splice cut (to the
end of its crossfade). It is used by the network thread (:meth:`add_chunk`)
and the monitor thread (:meth:`advance`) under a plain lock; the audio
callback never touches it.

:func:`write_midi_file` writes notes with mido rather than pretty_midi's
writer, because pretty_midi re-assigns channels on write and the notes'
channels must survive (pretty_midi reads the files back fine).

**Tempo and meter**: both writers take the music's :class:`TempoChange` records
(``set_tempo`` and ``time_signature`` at the frame each takes effect, a bar
line) and convert frames to ticks piecewise (:class:`TickClock`), so a DAW
shows the notes on its bar grid; with none, the file is 120 bpm 4/4 as
before. Notes keep their exact times either way. Each track (each channel
in the streamed type-0 file) is named after its General MIDI instrument.
:class:`MidiRecorder` is the player's MIDI file: a *segment* per start of the
role, named and created like the audio segments (:mod:`audio_out.recorder`),
streamed as a type-0 file while the notes are heard (fsynced every few
seconds), so a killed role leaves a valid file up to its last poll; a full
disk stops only the MIDI file, until a retry writes again in a new segment,
a deleted file is noticed and taken over by a new one, and with ``segment_s``
it rolls into a new segment on the same multiples of the played stream as
the audio. Its tempo map keeps only the changes a segment still to be written
can need: one per artwork change, kept for ever, grew 82 MB in 200,000.
:class:`MidiPortOut` sends note on/off to a python-rtmidi port when each note
reaches the speakers, from its own thread; a port that fails (a USB synth
unplugged: rtmidi raises on send) costs the messages it refused, counted and
logged once per run of failures, never the thread, and a note-off it refused
is sent again until the port takes it, so no note is left sounding.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from audio_out.recorder import SegmentStatus, create_segment, describe_error, unlinked
from audio_out.timeline import SpliceResult
from ground.errors import InputError
from ground.events import EventSink, null_sink
from ground.midi_ports import open_output_port

log = logging.getLogger(__name__)

DRUM_PROGRAM = 128
DRUM_CHANNEL = 9
_TICKS_PER_BEAT = 480
_TEMPO_US = 500_000  # 120 bpm: 960 ticks per second
_END_OF_TRACK = b"\x00\xff\x2f\x00"  # delta 0, meta end of track
#: A played-stream frame no recording reaches: "never roll".
_NEVER = 1 << 62


@dataclass(frozen=True)
class TempoChange:
    """The music's tempo (quarter notes per minute) and meter from ``frame`` on."""

    frame: int
    bpm: float
    meter: tuple[int, int] = (4, 4)

    def __post_init__(self) -> None:
        if not 1.0 <= self.bpm <= 1000.0:
            raise ValueError(f"TempoChange.bpm: expected 1..1000, got {self.bpm}")
        numerator, denominator = self.meter
        if not 1 <= numerator <= 255 or denominator not in (1, 2, 4, 8, 16, 32, 64):
            raise ValueError(f"TempoChange.meter: expected (1..255, a power of 2 up to 64), "
                             f"got {self.meter}")
        if self.frame < 0:
            raise ValueError(f"TempoChange.frame: expected >= 0, got {self.frame}")

    @property
    def tempo_us(self) -> int:
        """Microseconds per quarter note (MIDI ``set_tempo``)."""
        return round(60_000_000 / self.bpm)


class TickClock:
    """Frames to MIDI ticks under a tempo map that grows in time order (exact, piecewise)."""

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        # (frame, tick at that frame, ticks per frame from there on)
        self._segments: list[tuple[int, float, float]] = [
            (0, 0.0, _TICKS_PER_BEAT * 1_000_000 / _TEMPO_US / sample_rate)]

    def change(self, change: TempoChange) -> int:
        """Apply ``change`` from its frame on; the tick where it falls.

        A change before the last one (a late report) takes effect at the last.
        """
        frame = max(change.frame, self._segments[-1][0])
        # the change falls on a whole tick, and what follows is counted from there: counted
        # from the fractional tick, a later change a whole number of bars on could round
        # the other way and stand one tick off the bar grid a DAW draws
        tick = round(self.ticks(frame))
        self._segments.append((frame, tick,
                               _TICKS_PER_BEAT * 1_000_000 / change.tempo_us / self.sample_rate))
        return tick

    def forget_before(self, frame: int) -> None:
        """Drop the pieces that end before ``frame``: ``ticks`` of ``frame`` and of every
        later frame stays what it was (the piece in force at ``frame`` is kept)."""
        segments = self._segments
        keep = len(segments) - 1
        while keep > 0 and segments[keep][0] > frame:
            keep -= 1
        del segments[:keep]

    def ticks(self, frame: int) -> float:
        """The tick of ``frame`` (fractional)."""
        for start, tick, per_frame in reversed(self._segments):
            if frame >= start:
                return tick + (frame - start) * per_frame
        return frame * self._segments[0][2]


def gm_name(program: int) -> str:
    """The General MIDI instrument name of ``program`` (0-127), "Percussion" for 128."""
    if program == DRUM_PROGRAM:
        return "Percussion"
    import pretty_midi  # a core dependency; its table is the GM level 1 list

    return str(pretty_midi.program_to_instrument_name(int(np.clip(program, 0, 127))))


def _meter_bytes(meter: tuple[int, int]) -> bytes:
    """``time_signature`` data: numerator, log2 denominator, 24 clocks per click, 8 32nds."""
    return bytes((meter[0], meter[1].bit_length() - 1, 24, 8))


@dataclass(slots=True)
class Note:
    """One note on the timeline (samples); ``out_start`` is its frame in the played stream."""

    start: int
    end: int
    pitch: int
    velocity: int
    program: int
    channel: int
    seq: int = -1
    out_start: int | None = None

    @property
    def out_end(self) -> int | None:
        """End frame in the played stream (same offset as the start)."""
        return None if self.out_start is None else self.out_start + (self.end - self.start)


#: Notes :class:`PlayedNotes` keeps of what played (a look at what just sounded; ~200 bytes a
#: note). The MIDI file holds them all (:class:`MidiRecorder`).
RECENT_NOTES = 4096


class PlayedNotes:
    """Bookkeeping of queued, sounding and played notes for one room."""

    def __init__(self, recent: int = RECENT_NOTES) -> None:
        self._lock = threading.Lock()
        self._pending: list[Note] = []  # queued, not yet reached by the playhead
        self._active: list[Note] = []  # started, may still be cut by a splice
        # the latest committed notes, in order (the file is MidiRecorder's, from advance):
        # every note of a run was kept, 240 MB after 17 h of a room's music
        self._played: deque[Note] = deque(maxlen=recent)
        self._tempi: list[TempoChange] = []  # queued tempo changes, timeline frames
        self._last_tempo: TempoChange | None = None  # the last queued (a repeat is ignored)
        self.dropped_late = 0
        self.dropped_replaced = 0

    def add_chunk(self, seq: int, start_sample: int, notes: np.ndarray | None,
                  splice: SpliceResult) -> None:
        """Apply a splice to queued notes, then queue the chunk's notes that were kept."""
        with self._lock:
            if splice.accepted and splice.kind == "replace":
                cut = splice.written_from
                cut_end = cut + splice.crossfade_frames
                kept = []
                for note in self._pending:
                    if note.start >= cut:
                        self.dropped_replaced += 1
                        continue
                    kept.append(note)
                self._pending = kept
                self._tempi = [t for t in self._tempi if t.frame < cut]
                if self._last_tempo is not None and self._last_tempo.frame >= cut:
                    self._last_tempo = None  # dropped: the same change may come again
                for note in self._pending + self._active:
                    if note.end > cut_end:
                        note.end = max(note.start + 1, cut_end)
            if notes is None or len(notes) == 0:
                return
            for row in np.asarray(notes, dtype=np.int64).reshape(-1, 6):
                offset, length, pitch, velocity, program, channel = (int(v) for v in row)
                start = start_sample + offset
                if not (splice.written_from <= start < splice.written_to):
                    self.dropped_late += 1
                    continue
                if program == DRUM_PROGRAM:
                    channel = DRUM_CHANNEL
                self._pending.append(Note(start, start + max(1, length), pitch, velocity,
                                          program, channel, seq))
            self._pending.sort(key=lambda n: n.start)

    def advance(self, playhead: int, frames_out: int) -> list[Note]:
        """Commit notes whose start the playhead has passed; return them (monitor thread).

        ``frames_out`` is the number of frames output when the playhead was at
        ``playhead`` (from the same snapshot), so played notes can be placed
        in the recording's time base.
        """
        offset = frames_out - playhead
        with self._lock:
            split = 0
            while split < len(self._pending) and self._pending[split].start < playhead:
                split += 1
            started, self._pending = self._pending[:split], self._pending[split:]
            for note in started:
                note.out_start = note.start + offset
            self._active = [n for n in self._active if n.end > playhead] + started
            self._played.extend(started)
        return started

    def add_tempo(self, change: TempoChange) -> bool:
        """Queue a tempo/meter change at a timeline frame (a splice before it drops it).

        Every chunk may report its piece's change: the same one again is
        ignored. Whether it was queued (new).
        """
        with self._lock:
            if change == self._last_tempo:
                return False
            self._last_tempo = change
            self._tempi = [t for t in self._tempi if t.frame < change.frame] + [change]
            return True

    def take_tempi(self, playhead: int, frames_out: int) -> list[TempoChange]:
        """The queued changes the playhead has passed, in played-stream frames (monitor thread).

        ``playhead`` and ``frames_out`` as for :meth:`advance`.
        """
        offset = frames_out - playhead
        with self._lock:
            passed = [t for t in self._tempi if t.frame < playhead]
            self._tempi = [t for t in self._tempi if t.frame >= playhead]
        return [TempoChange(max(0, t.frame + offset), t.bpm, t.meter) for t in passed]

    @property
    def pending(self) -> int:
        """Notes queued but not yet played."""
        with self._lock:
            return len(self._pending)

    def played(self) -> list[Note]:
        """A copy of the latest notes played (at most ``recent``), oldest first."""
        with self._lock:
            return [Note(n.start, n.end, n.pitch, n.velocity, n.program, n.channel, n.seq,
                         n.out_start) for n in self._played]


def write_midi_file(path: str | Path, notes: np.ndarray, sample_rate: int,
                    tempo_map: Iterable[TempoChange] = ()) -> None:
    """Write integer (N, 6) notes with absolute start frames to a type-1 MIDI file.

    The first track carries the tempo map (``set_tempo`` and ``time_signature``
    at each change; 120 bpm 4/4 without one). One track per (program,
    channel), named after its GM instrument, each opening with its program
    change (none for percussion, which GM plays on channel 10 = index 9).
    """
    import mido  # light, but only needed here

    notes = np.asarray(notes, dtype=np.int64).reshape(-1, 6)
    tracks: dict[tuple[int, int], list[tuple[int, int, mido.Message]]] = {}
    clock = TickClock(sample_rate)
    conductor_events: list[tuple[int, mido.MetaMessage]] = []
    changes = sorted(tempo_map, key=lambda c: c.frame)
    if not changes or changes[0].frame > 0:
        conductor_events.append((0, mido.MetaMessage("set_tempo", tempo=_TEMPO_US)))
        conductor_events.append((0, mido.MetaMessage("time_signature", numerator=4,
                                                     denominator=4)))
    for change in changes:
        tick = clock.change(change)
        conductor_events.append((tick, mido.MetaMessage("set_tempo", tempo=change.tempo_us)))
        conductor_events.append((tick, mido.MetaMessage(
            "time_signature", numerator=change.meter[0], denominator=change.meter[1])))
    for start, length, pitch, velocity, program, channel in notes.tolist():
        if program == DRUM_PROGRAM:
            channel = DRUM_CHANNEL
        channel = int(np.clip(channel, 0, 15))
        on = round(clock.ticks(start))
        off = max(on + 1, round(clock.ticks(start + max(length, 1))))
        events = tracks.setdefault((program, channel), [])
        pitch = int(np.clip(pitch, 0, 127))
        velocity = int(np.clip(velocity, 1, 127))
        # Sort key puts note-offs before note-ons at the same tick.
        events.append((on, 1, mido.Message("note_on", note=pitch, velocity=velocity,
                                           channel=channel)))
        events.append((off, 0, mido.Message("note_off", note=pitch, velocity=0,
                                            channel=channel)))
    midi = mido.MidiFile(type=1, ticks_per_beat=_TICKS_PER_BEAT)
    conductor = mido.MidiTrack([mido.MetaMessage("track_name", name="tempo")])
    now = 0
    for tick, meta in conductor_events:
        conductor.append(meta.copy(time=tick - now))
        now = tick
    midi.tracks.append(conductor)
    for (program, channel), events in sorted(tracks.items()):
        track = mido.MidiTrack()
        track.append(mido.MetaMessage("track_name", name=gm_name(program)))
        if program != DRUM_PROGRAM:
            track.append(mido.Message("program_change", program=int(np.clip(program, 0, 127)),
                                      channel=channel, time=0))
        now = 0
        for tick, _, message in sorted(events, key=lambda e: (e[0], e[1])):
            track.append(message.copy(time=tick - now))
            now = tick
        midi.tracks.append(track)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    midi.save(str(path))


def _vlq(value: int) -> bytes:
    """A MIDI variable-length quantity (delta times)."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


class MidiRecorder(SegmentStatus):
    """The notes heard, streamed to a new type-0 MIDI segment file (monitor thread).

    The file is valid at every moment: the header and a track whose length
    field is rewritten after each batch of events, written through a file
    descriptor (no user-space buffer), so SIGKILL loses at most the notes
    since the last :meth:`advance`; an fsync every ``sync_s`` (as the audio
    segment's) bounds what a power cut loses. A note-on is written when the
    note is heard (:meth:`advance` with the notes :meth:`PlayedNotes.advance`
    returned), its note-off once the playhead has passed its end (a splice
    may still shorten a sounding note). Times are frames of the played
    stream (``Note.out_start``), the same time base as the audio segment; a
    segment's tick 0 is its ``origin`` frame (0 for the first).

    As the audio recorder (:mod:`audio_out.recorder`): a write error fails
    this file only (``recording_failed``, state ``failed``) and a new segment
    is tried every ``retry_s`` (``recording_resumed`` once one is written); a
    file whose name was deleted is noticed at the periodic fsync and the
    track goes on in a new segment (``recording_rolled``) from the last
    check, so only what the deleted file held before it is gone. A new
    segment opens with the tempo, meter and instruments in force at its
    origin and a note-on for each note sounding there. ``write`` is the
    ``os.pwrite`` seam and ``now`` the clock of the fsync and the retry
    (tests); ``to_timeline`` converts playheads for ``recording_opened``.

    With ``segment_s`` the track goes on in a new segment at the first
    :meth:`advance` at or past each multiple of ``segment_s`` of the played
    stream (the audio segment rolls at its first block there: the two differ
    by less than a poll, and each segment's ``recording_opened`` gives its
    own ``frame``, which the demo's join places it by). Everything before
    that advance's frame is in the old segment, which releases the notes
    still sounding there and ends its track; the new one begins there as
    after a deletion. Where the next file cannot be created the track goes
    on in the one it is in (``recording_not_rolled``).

    The tempo map (:class:`TickClock` and the changes applied) is only ever
    asked about frames from the current segment's origin on, or, while
    failed, from where the retry will begin: everything before the change in
    force there is forgotten whenever a segment opens (and as changes come
    while failed), so it holds what a segment's changes are, not a run's.
    """

    _LENGTH_AT = 18  # byte offset of the track length: after MThd (14 bytes) and "MTrk"

    def __init__(self, path: str | Path, sample_rate: int, log_event: EventSink = null_sink,
                 *, room: str | None = None, start: datetime | None = None,
                 write: Callable[[int, bytes, int], int] = os.pwrite,
                 sync_s: float = 5.0, retry_s: float = 5.0,
                 now: Callable[[], float] = time.monotonic,
                 to_timeline: Callable[[int], int] | None = None,
                 segment_s: float | None = None) -> None:
        if segment_s is not None and not 0.0 < segment_s < float("inf"):
            raise InputError(f"audio_out.segment_s: expected a number of seconds > 0, "
                             f"got {segment_s}")
        self.sample_rate = sample_rate
        self.path = Path(path)
        self.error: str | None = None
        self.notes_written = 0  # note-ons in the current segment
        self.announced = False  # the player said where playback began
        self._log = log_event
        self._write = write
        self._now = now
        self._sync_s = sync_s
        self._retry_s = retry_s
        self._to_timeline = to_timeline
        self._template = path
        self._room = room
        self._start_time = start
        self._started = (start or datetime.now()).isoformat(timespec="microseconds")
        self._fd: int | None = None
        self._failed = False
        self._closed = False
        self._opening = False  # a new segment's first writes: their failure is raised
        # The music as heard, whatever the files do.
        self._clock = TickClock(sample_rate)
        self._tempi: list[TempoChange] = []  # applied, in played-stream frames
        self._sounding: list[Note] = []
        self._program_of: dict[int, int] = {}  # channel -> its instrument now
        self._last_frame = 0
        self._position = (0, 0)  # (played-stream frame, playhead) of the last advance
        # The segment being written.
        self._origin = 0  # its tick 0, a played-stream frame
        self._origin_tick = 0.0
        self._track_bytes = 0
        self._last_tick = 0
        self._programs: dict[int, int] = {}  # instruments this file has named
        self._opened_announced = False
        # What a new segment takes over from a deleted one: the state at the last check
        # (frame, playhead, instruments, sounding notes) and the events written since.
        self._checked: tuple[int, int, dict[int, int], list[Note]] = (0, 0, {}, [])
        self._since_check: list[tuple[int, int, bytes]] = []
        self._last_sync = now()
        self._next_retry = 0.0
        self._failed_at = 0  # the played-stream frame where the failure began
        self._broken: tuple[Path, int, int] | None = None  # (path, origin, notes) of a failed one
        self._segment_frames = max(1, round(segment_s * sample_rate)) if segment_s else 0
        self._roll_at = self._segment_frames or _NEVER  # the next multiple of segment_s
        try:
            self._open_segment(0, {}, [], [], retry=False)
        except OSError as exc:
            self._fail(exc)

    # --------------------------------------------------------------- files
    def _open_segment(self, origin: int, programs: dict[int, int], sounding: list[Note],
                      events: list[tuple[int, int, bytes]], *, retry: bool,
                      created: tuple[Path, int] | None = None) -> None:
        """Create the next segment (or take ``created``, made by :func:`create_segment`) and
        write its header, its opening state and ``events``.

        Raises OSError (the file is then removed: nothing of the take is in it).
        """
        path, fd = created or create_segment(self._template, self._room,
                                             None if retry else self._start_time)
        previous, self.path, self._fd = self.path, path, fd
        self._origin, self._origin_tick = origin, self._clock.ticks(origin)
        self._track_bytes = self._last_tick = self.notes_written = 0
        self._programs = {}
        self._opened_announced = False
        current = next((t for t in reversed(self._tempi) if t.frame <= origin), None)
        tempo_us = current.tempo_us if current is not None else _TEMPO_US
        meter = current.meter if current is not None else (4, 4)
        header = b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + \
            (1).to_bytes(2, "big") + _TICKS_PER_BEAT.to_bytes(2, "big")
        # the tempo and meter in force (120 bpm 4/4 until the music says otherwise)
        tempo = b"\x00\xff\x51\x03" + tempo_us.to_bytes(3, "big") + \
            b"\x00\xff\x58\x04" + _meter_bytes(meter)
        opening: list[tuple[int, int, bytes]] = []
        for channel, program in sorted(programs.items()):
            opening.append((origin, 1, self._instrument_bytes(channel, program)))
            self._programs[channel] = program
        for note in sounding:  # started before the origin: they sound on in this file
            opening.append((origin, 2, self._on_bytes(note)))
        self._opening = True
        try:
            self._put(header + b"MTrk" + (0).to_bytes(4, "big"), tempo, offset=0)
            self._emit(opening + events)
        except OSError:
            with contextlib.suppress(OSError):
                os.close(fd)
            with contextlib.suppress(OSError):
                path.unlink()
            self.path, self._fd = previous, None
            raise
        finally:
            self._opening = False
        self._programs = dict(self._program_of)  # what the replayed events left named
        self._checked = (origin, self._position[1], dict(programs), list(sounding))
        self._since_check = list(events)
        self._forget_tempi(origin)  # no segment to come starts before this one

    def _forget_tempi(self, frame: int) -> None:
        """Forget the tempo changes before the one in force at ``frame``: the ticks of
        ``frame`` and every later frame stay exact (:meth:`TickClock.forget_before`)."""
        self._clock.forget_before(frame)
        tempi = self._tempi
        keep = len(tempi) - 1
        while keep > 0 and tempi[keep].frame > frame:
            keep -= 1
        if keep > 0:
            del tempi[:keep]

    def _announce_segment(self, playhead: int) -> None:
        """``recording_opened`` for the current segment (``playhead``: the device's)."""
        self._opened_announced = True
        if self._to_timeline is not None:
            playhead = self._to_timeline(playhead)
        self._log("recording_opened", path=str(self.path), media="midi",
                  sample_rate=self.sample_rate, playhead=playhead, frame=self._origin,
                  started=self._started)

    def announce(self, playhead: int) -> None:
        """Log ``recording_opened`` once playback began at timeline sample ``playhead``."""
        if self.announced:
            return
        self.announced = True
        frame, _, programs, sounding = self._checked
        if frame == self._origin:  # not checked since it opened: a roll starts here
            self._checked = (frame, playhead, programs, sounding)
        if self._fd is not None and not self._opened_announced:
            self._announce_segment(playhead)

    def advance(self, started: Iterable[Note], playhead: int,
                tempi: Iterable[TempoChange] = (), frames_out: int | None = None) -> None:
        """Write the note-ons of ``started`` and the note-offs the playhead has passed.

        ``tempi`` (frames of the played stream, in time order) are the tempo
        and meter changes the playhead has passed; they are written at their
        frames and time the events from there on. ``frames_out`` is the
        played-stream frame of ``playhead`` (where a new segment would begin).
        """
        if self._closed:
            return
        events: list[tuple[int, int, bytes]] = []
        changed = False
        for change in tempi:
            frame = max(change.frame, self._last_frame)
            events.append((frame, -1, self._tempo_bytes(change)))
            self._clock.change(change)
            self._tempi.append(TempoChange(frame, change.bpm, change.meter))
            changed = True
        for note in started:
            if note.out_start is None:
                continue
            self._sounding.append(note)
            channel = _channel(note)
            self._program_of[channel] = note.program
            if self._programs.get(channel) != note.program:
                self._programs[channel] = note.program
                events.append((note.out_start, 1, self._instrument_bytes(channel, note.program)))
            events.append((note.out_start, 2, self._on_bytes(note)))
        self._sounding, ended = ([n for n in self._sounding if n.end > playhead],
                                 [n for n in self._sounding if n.end <= playhead])
        events.extend(self._offs(ended, None))
        if events:
            self._last_frame = max(self._last_frame, max(e[0] for e in events))
        here = frames_out if frames_out is not None else self._last_frame
        self._position = (here, playhead)
        now = self._now()
        if self._failed:
            if changed:
                self._forget_tempi(here)  # the retry's segment begins here or later
            if now >= self._next_retry:
                self._retry(now)
            return
        self._emit(events)
        self._since_check.extend(events)
        if not self._failed and now - self._last_sync >= self._sync_s:
            self._last_sync = now
            self._sync_and_check()
        if not self._failed and here >= self._roll_at:
            size = self._segment_frames
            self._roll_at = here - here % size + size
            self._roll_segment()

    def _roll_segment(self) -> None:
        """Every ``segment_s``: end this segment where the last advance left it (the notes
        sounding released there) and go on in a new one from there."""
        here, playhead = self._position
        try:
            created = create_segment(self._template, self._room)
        except OSError as exc:
            text = describe_error(exc)
            self._log("recording_not_rolled", path=str(self.path), media="midi", error=text)
            log.warning("MIDI recording: no new segment can be created (%s); going on in %s",
                        text, self.path)
            return
        old, old_origin, old_notes = self.path, self._origin, self.notes_written
        self._emit(self._offs(self._sounding, here), tail=_END_OF_TRACK)
        if self._failed or self._fd is None:  # that write failed: failed as any write is
            with contextlib.suppress(OSError):
                os.close(created[1])
            with contextlib.suppress(OSError):
                created[0].unlink()
            return
        error = None
        try:
            os.fsync(self._fd)  # a finished segment is whole on disk, even after a power cut
        except OSError as exc:
            error = describe_error(exc)
        try:
            os.close(self._fd)
        except OSError as exc:
            error = error or describe_error(exc)
        self._fd = None
        self._closed_event(old, here - old_origin, old_notes, error)
        try:
            self._open_segment(here, dict(self._program_of), list(self._sounding), [],
                               retry=True, created=created)
        except OSError as exc:
            # The old segment is whole and said so: failed from here, retried as any failure.
            self.path = created[0]
            self._fail(exc, closed=True)
            return
        self._log("recording_rolled", path=str(self.path), media="midi", previous=str(old),
                  reason="segment_s", error=None, lost_frames=0, lost_s=0.0)
        if self.announced:
            self._announce_segment(playhead)

    def _sync_and_check(self) -> None:
        """fsync, then roll if the file has no name left, else remember this point."""
        if self._fd is None:
            return
        try:
            os.fsync(self._fd)
        except OSError as exc:
            self._fail(exc)
            return
        if unlinked(self._fd):
            self._roll_deleted()
            return
        frame, playhead = self._position
        self._checked = (frame, playhead, dict(self._program_of), list(self._sounding))
        self._since_check = []

    def _roll_deleted(self) -> None:
        """Go on in a new segment from the last check: the open file has no name left."""
        old, old_origin, old_notes = self.path, self._origin, self.notes_written
        origin, playhead, programs, sounding = self._checked
        events = self._since_check
        with contextlib.suppress(OSError):
            os.close(self._fd)  # type: ignore[arg-type]
        self._fd = None
        gone = max(0, origin - old_origin)
        error = (f"deleted while recording (no links left to {old.name}: the file or its "
                 f"folder was removed; {gone / self.sample_rate:.1f} s gone)")
        try:
            self._open_segment(origin, programs, sounding, events, retry=True)
        except OSError as exc:
            self.path = old
            self._broken = (old, self._position[0], old_notes)  # none of it left on disk
            self._fail(OSError(exc.errno or errno.EIO,
                               f"{error}; a new segment cannot be created: {describe_error(exc)}"))
            return
        self._closed_event(old, 0, old_notes, error)  # nothing of it is on disk any more
        self._log("recording_rolled", path=str(self.path), media="midi", previous=str(old),
                  reason="deleted", error=error, lost_frames=gone,
                  lost_s=round(gone / self.sample_rate, 3))
        log.warning("MIDI recording: %s; going on in %s", error, self.path)
        if self.announced:
            self._announce_segment(playhead)

    def _retry(self, now: float) -> None:
        """Try a new segment from here on; its header written is the disk taking writes again."""
        self._next_retry = now + self._retry_s
        frame, playhead = self._position
        try:
            self._open_segment(frame, dict(self._program_of), list(self._sounding), [],
                               retry=True)
        except OSError as exc:
            self.error = describe_error(exc)
            return
        lost = max(0, frame - self._failed_at)
        previous = None
        if self._broken is not None:
            path, origin, notes = self._broken
            previous = str(path)
            self._closed_event(path, self._failed_at - origin, notes, self.error)
        self._broken = None
        self._failed = False
        self._log("recording_resumed", path=str(self.path), media="midi", previous=previous,
                  error=self.error, lost_frames=lost, lost_s=round(lost / self.sample_rate, 3))
        log.warning("MIDI recording resumed in %s after %s: %.1f s of notes not recorded",
                    self.path, self.error, lost / self.sample_rate)
        self.error = None
        if self.announced:
            self._announce_segment(playhead)

    def _closed_event(self, path: Path, frames: int, notes: int, error: str | None) -> None:
        frames = max(0, frames)
        self._log("recording_closed", path=str(path), media="midi", frames=frames,
                  seconds=frames / self.sample_rate, dropped_frames=0, notes=notes, error=error)

    # ------------------------------------------------------------ encoding
    @staticmethod
    def _instrument_bytes(channel: int, program: int) -> bytes:
        """Channel prefix, the instrument's name (a type-0 file's track names), its program."""
        name = gm_name(program).encode("ascii", "replace")[:127]
        meta = b"\xff\x20\x01" + bytes((channel,)) + b"\x00\xff\x04" + \
            bytes((len(name),)) + name
        if program != DRUM_PROGRAM:
            meta += b"\x00" + bytes((0xC0 | channel, int(np.clip(program, 0, 127))))
        return meta

    @staticmethod
    def _on_bytes(note: Note) -> bytes:
        return bytes((0x90 | _channel(note), note.pitch & 0x7F,
                      int(np.clip(note.velocity, 1, 127))))

    def _offs(self, notes: list[Note], until: int | None) -> list[tuple[int, int, bytes]]:
        offs = []
        for note in notes:
            end = note.out_end if note.out_end is not None else note.out_start or 0
            if until is not None:
                end = min(end, until)
            offs.append((end, 0, bytes((0x80 | _channel(note), note.pitch & 0x7F, 0))))
        return offs

    def _emit(self, events: list[tuple[int, int, bytes]], tail: bytes = b"") -> None:
        if not events and not tail:
            return
        data = bytearray()
        last_tick, written = self._last_tick, 0
        for frame, _, message in sorted(events, key=lambda e: (e[0], e[1])):
            tick = max(last_tick, round(self._clock.ticks(frame) - self._origin_tick))
            data += _vlq(tick - last_tick) + message
            last_tick = tick
            written += int(message[0] & 0xF0 == 0x90)
        self._put(bytes(data + tail))
        if not self._failed:
            self._last_tick = last_tick
            self.notes_written += written

    @staticmethod
    def _tempo_bytes(change: TempoChange) -> bytes:
        """``set_tempo`` then (at the same tick) ``time_signature``, as track bytes."""
        return b"\xff\x51\x03" + change.tempo_us.to_bytes(3, "big") + b"\x00\xff\x58\x04" + \
            _meter_bytes(change.meter)

    def _put(self, *chunks: bytes, offset: int | None = None) -> None:
        """Append to the track (or write at ``offset``), then rewrite the track length.

        Raises OSError while a segment is being opened (the caller removes it);
        otherwise a failure fails the recording.
        """
        if self._fd is None or (self._failed and not self._opening):
            return
        try:
            data = b"".join(chunks)
            if offset is not None:
                self._write(self._fd, data, offset)
                self._track_bytes = len(chunks[-1])
            else:
                self._write(self._fd, data, self._LENGTH_AT + 4 + self._track_bytes)
                self._track_bytes += len(data)
            self._write(self._fd, self._track_bytes.to_bytes(4, "big"), self._LENGTH_AT)
        except OSError as exc:
            if self._opening:
                raise
            self._fail(exc)

    def _fail(self, exc: BaseException, closed: bool = False) -> None:
        """Fail the recording (retried every ``retry_s``); ``closed``: no segment is open
        (the one before was closed and said so), so none is left to close later."""
        if self._failed:
            return
        self._failed = True
        self.error = describe_error(exc)
        self._failed_at = self._position[0]
        self._next_retry = self._now() + self._retry_s
        if self._broken is None and not closed:
            self._broken = (self.path, self._origin, self.notes_written)
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # what was written stays a readable file
            self._fd = None
        self._log("recording_failed", path=str(self.path), media="midi", error=self.error)
        log.error("MIDI recording failed, playback goes on without it (tried again every "
                  "%g s): %s: %s", self._retry_s, self.path, self.error)

    def close(self, frames_out: int) -> None:
        """Release sounding notes at ``frames_out``, end the track, close the file; idempotent."""
        if self._closed:
            return
        self._closed = True
        if not self._failed and self._fd is not None:
            offs = self._offs(self._sounding, max(frames_out, self._last_frame))
            self._sounding = []
            self._emit(offs, tail=_END_OF_TRACK)
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError as exc:
                self._fail(exc)
            self._fd = None
        if self._broken is not None:  # failed, never resumed: its close is the failed one's
            path, origin, notes = self._broken
            self._closed_event(path, self._failed_at - origin, notes, self.error)
            return
        if self._failed:
            return  # failed opening a rolled segment: the one before it was closed already
        self._closed_event(self.path, frames_out - self._origin, self.notes_written,
                           self.error)


def _channel(note: Note) -> int:
    """The MIDI channel a note plays on (percussion on GM channel 10)."""
    return DRUM_CHANNEL if note.program == DRUM_PROGRAM else note.channel & 0x0F


def open_midi_port(name: str, rtmidi_module: Any = None) -> Any:
    """Open the first rtmidi output port whose name contains ``name`` (case-insensitive).

    Raises :class:`~ground.errors.DependencyError` when no MIDI back end works here and
    :class:`~ground.errors.ConfigError` naming the port and listing the available ones when
    none matches (:func:`ground.midi_ports.open_output_port`).
    """
    return open_output_port(name, "audio_out.midi_port", rtmidi_module)[0]


class MidiPortOut:
    """Sends played notes to a MIDI port as they reach the speakers (own thread).

    ``heard_position()`` returns the timeline sample at the speakers now (or
    None before playback starts); notes come from :meth:`PlayedNotes.advance`
    via :meth:`feed`. Each note's off is sent at its *current* end, so a
    splice that cuts a sounding note also cuts it on the port.

    A send the port refuses is counted in ``send_errors`` and the next
    messages are still sent (the first failure of a run is logged, and the
    recovery); a refused note-off is owed and tried again on every poll, and
    on :meth:`stop`, until the port takes it. The thread itself outlives any
    error (``poll_errors``).
    """

    def __init__(self, port: Any, heard_position: Callable[[], int | None],
                 poll_s: float = 0.002) -> None:
        self._port = port
        self._heard = heard_position
        self._poll_s = poll_s
        self._lock = threading.Lock()
        self._waiting: list[Note] = []
        self._sounding: list[Note] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._owed_offs: list[Note] = []  # note-offs the port refused: sent again
        self._failing = False  # in a run of failed sends (logged once, at its start)
        self.sent = 0
        self.send_errors = 0
        self.poll_errors = 0

    def feed(self, notes: Iterable[Note]) -> None:
        """Queue committed notes for sending."""
        with self._lock:
            self._waiting.extend(notes)

    def start(self) -> None:
        """Start the sending thread."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="audio-midi-out", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self._poll_s):
            try:
                self.send_due()
            except Exception as error:  # noqa: BLE001 - the notes must go on being sent
                self.poll_errors += 1
                if not failing:
                    log.error("MIDI out: a poll failed (%r); the sender goes on", error)
                failing = True
            else:
                failing = False

    def send_due(self) -> None:
        """Send every note on/off that the speakers have reached (and the offs still owed)."""
        position = self._heard()
        if position is None:
            return
        with self._lock:
            self._send_owed_offs()
            due = [n for n in self._waiting if n.start <= position]
            self._waiting = [n for n in self._waiting if n.start > position]
            for note in due:
                # kept as sounding even when refused: its off is tried all the same
                self._send(0x90, note, note.velocity)
            self._sounding.extend(due)
            ended = [n for n in self._sounding if n.end <= position]
            self._sounding = [n for n in self._sounding if n.end > position]
            for note in ended:
                self._release(note)

    def _send_owed_offs(self) -> None:
        """Try the note-offs the port refused, in order, until it refuses one again."""
        while self._owed_offs:
            if not self._send(0x80, self._owed_offs[0], 0):
                return  # still failing: the rest wait for the next poll
            self._owed_offs.pop(0)

    def _release(self, note: Note) -> None:
        """Send ``note``'s off; if the port refuses it, it is owed."""
        if not self._send(0x80, note, 0):
            self._owed_offs.append(note)

    def _send(self, status: int, note: Note, velocity: int) -> bool:
        """Send one message; False (counted, the run's first logged) if the port refused it."""
        try:
            self._port.send_message([status | (note.channel & 0x0F), note.pitch & 0x7F,
                                     max(0, min(127, velocity))])
        except Exception as error:  # noqa: BLE001 - rtmidi's errors are not OSError
            self.send_errors += 1
            if not self._failing:
                self._failing = True
                log.warning("MIDI out: the port refused a message (%r); the next ones are "
                            "still sent, failures counted, note-offs sent again", error)
            return False
        if self._failing:
            self._failing = False
            log.warning("MIDI out: the port takes messages again (%d refused so far)",
                        self.send_errors)
        self.sent += 1
        return True

    def stop(self) -> None:
        """Stop the thread, send note-offs for sounding notes and close the port."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        with self._lock:
            self._send_owed_offs()
            for note in self._sounding:
                self._release(note)
            self._sounding = []
            self._waiting = []
            if self._owed_offs:
                log.warning("MIDI out: closing with %d note-offs the port refused",
                            len(self._owed_offs))
            self._owed_offs = []
        close = getattr(self._port, "close_port", None)
        if close is not None:
            close()
