"""``art2mus demo``: the demo config's overrides, the take joined, and the summary at the end.

The run itself is an ordinary supervised installation (three kinds of
process over ZeroMQ); this module only adjusts the config for the command
line and, at the end, keeps the README's promise of ``out/demo.wav`` and
``out/demo.mid``: audio_out records each of its starts as a new segment
(``demo-ROOM-START.wav``, announced by ``recording_opened`` events), so the
room's audio segments are joined in order into ``demo.wav`` (streamed in
blocks, never a whole take in memory) and its MIDI segments into
``demo.mid`` (one complete: copied; several, or one cut by a kill: merged,
each where its audio starts in ``demo.wav``, its notes released where its
music ends). Segments join in the order their ``recording_opened`` events
came, not by name; a FLAC cut by a kill is kept to its last decodable frames,
and time a start of audio_out did not record (a full disk, a deleted segment)
is joined as silence, so the MIDI stays on the audio. The figures and
``timeline.json`` come from
the supervisor's :class:`~installation.report.RunReport` and a block-wise
read of the joined take.
"""

from __future__ import annotations

import bisect
import contextlib
import math
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from ground.errors import ConfigError
from installation.config import InstallationConfig
from installation.report import RunReport, analyse_audio

#: Frames read and written at a time: small, so a FLAC cut by a kill loses little.
_READ_FRAMES = 4096


def prepare_demo_config(
    config: InstallationConfig, out_dir: Path | None, seconds: float | None
) -> InstallationConfig:
    """Apply ``--out`` and ``--seconds`` to a loaded config."""
    if seconds is not None and seconds <= 0:
        raise ConfigError(f"--seconds must be positive, got {seconds}")
    if out_dir is not None:
        section = config.installation.model_copy(update={"output_dir": str(out_dir)})
        config = config.model_copy(update={"installation": section})
    if seconds is not None:
        rooms = tuple(
            room.model_copy(update={
                "audio_out": room.audio_out.model_copy(update={"stop_after_s": seconds})
            })
            for room in config.rooms
        )
        config = config.model_copy(update={"rooms": rooms})
    if not any(room.audio_out.stop_after_s for room in config.rooms):
        raise ConfigError("the demo needs audio_out.stop_after_s (or --seconds) to end")
    return config


def joined_path(config: InstallationConfig, template: str) -> Path:
    """Where the demo puts a room's joined take: the configured name, placeholders dropped."""
    path = Path(template)
    stem = path.stem.replace("{room}", "").replace("{start}", "")
    while "--" in stem:
        stem = stem.replace("--", "-")
    path = path.with_name((stem.strip("-_.") or "take") + path.suffix)
    return path if path.is_absolute() else config.output_dir / path


def join_audio(paths: Sequence[Path], target: Path,
               block_frames: int = _READ_FRAMES,
               anchors: Sequence[tuple[str, int] | None] | None = None,
               starts: list[int] | None = None) -> tuple[Path | None, list[str]]:
    """Join audio segments in order into ``target``, block by block; (path, notes).

    A segment with another rate or channel count than the first is skipped
    with a note. Each is read with :func:`audio_out.recorder.read_segment`, so
    a FLAC cut by a kill is kept to its last decodable frames (a note says it
    was cut). ``anchors`` (one per path, or None) name the start of audio_out
    a segment belongs to and its first frame in that start's played stream
    (``recording_opened``'s ``started`` and ``frame``): where a later segment
    of the same start begins after the end of what was joined before it (a
    recording that failed for a while, a deleted segment), the time between
    is joined as silence, with a note, so the take keeps the music's time and
    the MIDI stays aligned. ``starts``, when given, receives the frame of the
    joined take where each path's segment begins. The file is written beside
    ``target`` and renamed over it, so ``target`` is never half a take; where
    it cannot be written (a full disk) the half file is removed and (None,
    notes naming the segments, which hold the take) returned.
    """
    import soundfile

    from audio_out.recorder import UNKNOWN_LENGTH, read_segment

    notes: list[str] = []
    anchors = list(anchors) if anchors is not None else [None] * len(paths)
    if len(anchors) != len(paths):
        raise ValueError(f"join_audio: expected one anchor per path ({len(paths)}), "
                         f"got {len(anchors)}")
    present = [p for p in paths if p.exists()]
    if not present:
        return None, notes
    if len(paths) == 1 and paths[0].resolve() == target.resolve():
        if starts is not None:
            starts.append(0)
        return target, notes  # a single take already where it belongs
    first = soundfile.info(str(present[0]))
    rate, channels = int(first.samplerate), int(first.channels)
    kind = target.suffix.lstrip(".").upper() or "WAV"
    if kind not in soundfile.available_formats():
        kind = "WAV"
    lengths = [soundfile.info(str(p)).frames for p in present]
    # a killed FLAC's header says 2**63 - 1 (unknown): its file size bounds it instead
    total_bytes = sum(n if n < UNKNOWN_LENGTH else p.stat().st_size * 8
                      for p, n in zip(present, lengths, strict=True)) * channels * 4
    if kind == "WAV" and total_bytes > 4_000_000_000:
        kind = "RF64"  # a plain WAV cannot hold 4 GiB
    subtype = first.subtype if soundfile.check_format(kind, first.subtype) else None
    partial = target.with_name(target.name + ".partial")
    silence = np.zeros((block_frames, channels), np.float32)
    bases: dict[str, tuple[int, int]] = {}  # start of audio_out -> (take frame, its frame)
    cursor = 0
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        out = soundfile.SoundFile(str(partial), "w", samplerate=rate, channels=channels,
                                  format=kind, subtype=subtype)
        with out:
            for path, anchor in zip(paths, anchors, strict=True):
                if anchor is not None:
                    started, frame = anchor
                    if started not in bases:
                        bases[started] = (cursor, frame)
                    base_cursor, base_frame = bases[started]
                    gap = base_cursor + frame - base_frame - cursor
                    if gap > 0:
                        notes.append(f"{path.name}: {gap / rate:.2f} s before it not recorded "
                                     "(joined as silence)")
                        cursor += _write_silence(out, silence, gap)
                if starts is not None:
                    starts.append(cursor)
                if not path.exists():
                    continue
                try:
                    segment = soundfile.info(str(path))
                except (soundfile.LibsndfileError, RuntimeError) as error:
                    notes.append(f"{path.name}: unreadable ({error}): skipped")
                    continue
                if segment.samplerate != rate or segment.channels != channels:
                    notes.append(f"{path.name}: {segment.samplerate} Hz x "
                                 f"{segment.channels}, not {rate} Hz x {channels}: skipped")
                    continue
                got = 0
                # read_segment stops (never raises) where a cut file stops decoding; an
                # error here is a failed write, which fails the join (below)
                for block in read_segment(path, block_frames):
                    out.write(block)
                    got += len(block)
                if segment.frames >= UNKNOWN_LENGTH:
                    notes.append(f"{path.name}: cut short (no length in its header: killed "
                                 f"mid-take); {got / rate:.2f} s recovered")
                elif got < segment.frames:
                    notes.append(f"{path.name}: read up to frame {got} of {segment.frames}")
                cursor += got
        os.replace(partial, target)
    except (OSError, soundfile.LibsndfileError, RuntimeError) as error:
        # a full disk, a folder that cannot be written: the segments are the take
        with contextlib.suppress(OSError):  # no folder to hold it, perhaps
            partial.unlink(missing_ok=True)
        notes.append(f"cannot write {target} ({error}): the take stays in its segments, "
                     + ", ".join(p.name for p in present))
        return None, notes
    return target, notes


def _write_silence(out: Any, silence: np.ndarray, frames: int) -> int:
    """Write ``frames`` of silence to ``out`` in blocks of ``silence``; returns ``frames``."""
    left = frames
    while left > 0:
        n = min(left, len(silence))
        out.write(silence[:n])
        left -= n
    return frames


#: Meta messages that belong to the whole file's timeline (the conductor's), not a part.
_CONDUCTOR_META = frozenset({"set_tempo", "time_signature", "key_signature"})


def _seconds_of_ticks(midi: Any) -> Callable[[int], float]:
    """Absolute tick -> seconds under ``midi``'s own tempo map (every track's ``set_tempo``)."""
    changes: dict[int, int] = {0: 500_000}  # the MIDI default, 120 bpm, until a change
    for track in midi.tracks:
        tick = 0
        for message in track:
            tick += message.time
            if message.is_meta and message.type == "set_tempo":
                changes[tick] = int(message.tempo)
    rows, seconds, last_tick, last_tempo = [], 0.0, 0, changes[0]
    for tick in sorted(changes):
        seconds += (tick - last_tick) * last_tempo / 1e6 / midi.ticks_per_beat
        rows.append((tick, seconds, changes[tick]))
        last_tick, last_tempo = tick, changes[tick]
    ticks = [row[0] for row in rows]

    def at(tick: int) -> float:
        base, seconds, tempo = rows[bisect.bisect_right(ticks, tick) - 1]
        return seconds + (tick - base) * tempo / 1e6 / midi.ticks_per_beat

    return at


def _untimeable(midi: Any) -> str | None:
    """Why ``midi``'s ticks have no time in seconds (None: they have).

    A division of 0 ticks per beat, an SMPTE division (frames per second,
    read by mido as a negative number) or a ``set_tempo`` of 0 microseconds
    would divide by zero or run time backwards when the segment is joined.
    """
    division = midi.ticks_per_beat
    if division == 0:
        return "ticks_per_beat 0 in its header"
    if division < 0:
        return "an SMPTE time division (frames per second), not ticks per beat"
    for number, track in enumerate(midi.tracks):
        tick = 0
        for message in track:
            tick += message.time
            if message.is_meta and message.type == "set_tempo" and message.tempo <= 0:
                return f"set_tempo 0 at tick {tick} of track {number}"
    return None


def _opens_with_tempo(midi: Any) -> bool:
    """Whether a track sets the tempo at tick 0 (else a file plays at 120 bpm until one does)."""
    for track in midi.tracks:
        tick = 0
        for message in track:
            tick += message.time
            if tick > 0:
                break
            if message.is_meta and message.type == "set_tempo":
                return True
    return False


def _ticks_of_seconds(tempi: Sequence[tuple[float, int]], ticks_per_beat: int
                      ) -> Callable[[float], int]:
    """Seconds -> absolute tick under a tempo map given as (seconds, tempo_us) in time order."""
    rows, tick, last_s, last_tempo = [], 0.0, 0.0, 500_000
    for seconds, tempo in [(0.0, tempi[0][1] if tempi else 500_000), *tempi]:
        tick += (seconds - last_s) * 1e6 / last_tempo * ticks_per_beat
        rows.append((seconds, tick, tempo))
        last_s, last_tempo = seconds, tempo
    starts = [row[0] for row in rows]

    def at(seconds: float) -> int:
        base, tick, tempo = rows[bisect.bisect_right(starts, seconds) - 1]
        return round(tick + (seconds - base) * 1e6 / tempo * ticks_per_beat)

    return at


def join_midi(segments: Sequence[tuple[Path, float] | tuple[Path, float, float | None]],
              target: Path) -> tuple[Path | None, list[str]]:
    """Join MIDI segments, each at its offset (seconds), into ``target``; (path, notes).

    Each segment is ``(path, offset)`` or ``(path, offset, end)``: ``end`` is
    where its music stopped in the take (its audio's end; None: where the
    next segment begins, or the last one's last event). One complete segment
    (every note released, the track ended) is copied; otherwise segments are
    merged as a type-1 file at the first
    segment's resolution. Every event keeps its time in seconds: each
    segment's events are timed under its own tempo map (a recording's tempo
    and meter follow the music), shifted by the segment's offset, and the
    merged file's conductor track carries every segment's tempo, meter and
    key changes at their shifted times, so a DAW sees the music's own grid
    across an audio_out restart. Every part track of each segment is kept.

    A segment ends at its ``end``, or where the next one begins if that is
    sooner: a note still sounding there (a segment cut by a kill has no
    note-offs for them, nor an end of track) is released there, per channel
    and pitch, and the segment's events after it are left out, so nothing
    of one segment sounds on into the next. A segment that cannot be read or
    timed (a truncated file, a division of 0 or in SMPTE frames, a
    ``set_tempo`` of 0) is skipped, with a note naming the file and why.
    """
    import mido

    notes: list[str] = []
    entries = [(Path(item[0]), float(item[1]), item[2] if len(item) > 2 else None)
               for item in segments]
    entries = [e for e in entries if e[0].exists()]
    if not entries:
        return None, notes
    partial = target.with_name(target.name + ".partial")
    if len(entries) == 1 and _complete(entries[0][0]):
        if entries[0][0].resolve() == target.resolve():
            return target, notes
        source = entries[0][0]
        return _written(target, partial, lambda: shutil.copyfile(source, partial), notes)
    ticks_per_beat: int | None = None
    loaded: list[tuple[Path, float, float | None, Any]] = []
    for path, offset_s, end_s in entries:
        try:
            midi = mido.MidiFile(str(path))
        except (OSError, EOFError, ValueError, KeyError, IndexError) as error:
            # a truncated file's EOFError has no text: its type says what went wrong
            notes.append(f"{path.name}: unreadable ({str(error) or type(error).__name__}): "
                         "skipped")
            continue
        if midi.type == 2:
            notes.append(f"{path.name}: a type-2 file (independent songs): skipped")
            continue
        if (why := _untimeable(midi)) is not None:
            notes.append(f"{path.name}: {why}: skipped")
            continue
        ticks_per_beat = ticks_per_beat or midi.ticks_per_beat
        loaded.append((path, max(0.0, offset_s), end_s, midi))
    if ticks_per_beat is None:
        return None, notes
    conductor: list[tuple[float, int, Any]] = []  # (seconds, order, meta)
    parts: list[list[tuple[float, int, Any]]] = []
    for index, (path, shift, end_s, midi) in enumerate(loaded):
        following = loaded[index + 1][1] if index + 1 < len(loaded) else None
        seconds_at = _seconds_of_ticks(midi)
        timed = []
        for track in midi.tracks:
            tick, events = 0, []
            for message in track:
                tick += message.time
                if not (message.is_meta and message.type == "end_of_track"):
                    events.append((shift + seconds_at(tick), message))
            timed.append(events)
        last = max((when for events in timed for when, m in events if not m.is_meta),
                   default=shift)
        if end_s is not None:
            close_at = max(shift, end_s)
        else:  # unknown: its music went on until the next segment began (or its last event)
            close_at = following if following is not None and following >= shift else last
        if following is not None and following >= shift:
            close_at = min(close_at, following)
        after = close_at + 1e-6  # events later than this belong to no part of the take
        if not _opens_with_tempo(midi):  # its default 120 bpm, not the last segment's tempo
            conductor.append((shift, len(conductor), mido.MetaMessage("set_tempo")))
        released = dropped = 0
        for events in timed:
            part = list[tuple[float, int, Any]]()
            sounding: dict[tuple[int, int], int] = {}
            for when, message in events:
                if message.is_meta and message.type in _CONDUCTOR_META:
                    if when <= after or following is None:
                        conductor.append((when, len(conductor), message))
                    continue
                key = _note_key(message)
                on = key is not None and message.type == "note_on" and message.velocity > 0
                if key is not None and not on:
                    if sounding.get(key, 0) <= 0:
                        continue  # the off of a note left out (or of none)
                    when = min(when, close_at)  # a note cut where its segment ends
                    sounding[key] -= 1
                elif not message.is_meta and when > after:
                    dropped += int(on)  # after the end of its music: not in the take
                    continue
                elif on and key is not None:
                    sounding[key] = sounding.get(key, 0) + 1
                part.append((when, len(part), message))
            for (channel, pitch), count in sorted(sounding.items()):
                for _ in range(count):  # still sounding at the segment's end: released there
                    part.append((close_at, len(part), mido.Message(
                        "note_off", channel=channel, note=pitch, velocity=0)))
                    released += 1
            if any(not message.is_meta for _, _, message in part):
                parts.append(part)
        if released or dropped:
            notes.append(f"{path.name}: ends at {close_at:.2f} s of the take; "
                         f"{released} notes still sounding there released"
                         + (f", {dropped} later notes left out" if dropped else ""))
    conductor.sort(key=lambda e: (e[0], e[1]))
    tick_at = _ticks_of_seconds(
        [(when, int(m.tempo)) for when, _, m in conductor if m.type == "set_tempo"],
        ticks_per_beat)
    merged = mido.MidiFile(type=1, ticks_per_beat=ticks_per_beat)
    for rows in [conductor, *parts]:
        track, now = mido.MidiTrack(), 0
        for when, _, message in sorted(rows, key=lambda e: (e[0], e[1])):
            tick = max(now, tick_at(when))
            track.append(message.copy(time=tick - now))
            now = tick
        merged.tracks.append(track)
    return _written(target, partial, lambda: merged.save(str(partial)), notes)


def _note_key(message: Any) -> tuple[int, int] | None:
    """(channel, pitch) of a note on or off (a note-on of velocity 0 is an off), else None."""
    if message.type in ("note_on", "note_off"):
        return int(message.channel), int(message.note)
    return None


def _complete(path: Path) -> bool:
    """Whether a MIDI file reads, releases every note it starts and ends each track
    (a segment closed as it should be, not one cut by a kill)."""
    import mido

    try:
        midi = mido.MidiFile(str(path))
    except (OSError, EOFError, ValueError, KeyError, IndexError):
        return False
    for track in midi.tracks:
        if not track or track[-1].type != "end_of_track":
            return False
        sounding: dict[tuple[int, int], int] = {}
        for message in track:
            key = _note_key(message)
            if key is not None:
                on = message.type == "note_on" and message.velocity > 0
                sounding[key] = sounding.get(key, 0) + (1 if on else -1)
        if any(count > 0 for count in sounding.values()):
            return False
    return True


def _written(target: Path, partial: Path, write: Callable[[], object],
             notes: list[str]) -> tuple[Path | None, list[str]]:
    """``write()`` the joined MIDI file to ``partial`` and rename it over ``target``;
    on a full disk (any OSError) the half file goes, a note says so, and the path is None:
    the segments still hold the notes played."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write()
        os.replace(partial, target)
    except OSError as error:
        with contextlib.suppress(OSError):  # no folder to hold it, perhaps
            partial.unlink(missing_ok=True)
        notes.append(f"cannot write {target} ({error}): the notes stay in their segments")
        return None, notes
    return target, notes


def _segment_offsets(segments: list[dict[str, Any]], started: float | None,
                     starts: Sequence[int] | None = None, rate: int | None = None
                     ) -> list[tuple[float, float, float]]:
    """(wall time the segment starts, its offset in the joined take, its seconds).

    ``starts`` (frames at ``rate``, from :func:`join_audio`) place each segment
    where the join put it (after any silence for time not recorded); without
    them the segments follow one another.
    """
    rows, offset = [], 0.0
    placed = starts is not None and rate and len(starts) == len(segments)
    for index, segment in enumerate(segments):
        begin = segment["_opened"]
        if segment.get("sample_rate") is None and started is not None:
            begin = started  # an old single recording (no recording_opened): it began with play
        seconds = _plausible_seconds(segment.get("seconds"))
        if placed:
            assert starts is not None and rate
            offset = starts[index] / rate
        rows.append((begin, offset, seconds))
        offset += seconds
    return rows


def _plausible_seconds(value: Any) -> float:
    """A segment's length in seconds, 0.0 where it is unknown or cannot be a length (an
    unknown header length read as 2**63 - 1 frames is 1.9e14 s)."""
    if not isinstance(value, int | float) or not math.isfinite(value):
        return 0.0
    return float(value) if 0.0 <= value < 1e9 else 0.0


def _to_take(wall: float, offsets: list[tuple[float, float, float]]) -> float:
    """Where wall-clock ``wall`` falls in the joined take (a gap maps to the next segment)."""
    for begin, offset, seconds in offsets:
        if wall < begin:
            return offset
        if wall < begin + seconds:
            return offset + wall - begin
    return offsets[-1][1] + offsets[-1][2] if offsets else 0.0


def summarise_demo(config: InstallationConfig, wall_s: float, roles: list[Any],
                   report: RunReport) -> dict[str, Any]:
    """Join the take, write ``timeline.json`` and print the summary table; return the summary."""
    builder = report.builder
    assert builder is not None, "the supervisor followed no events"
    room = config.rooms[0]
    notes: list[str] = []
    audio_segments = builder.segments(room.id, "audio")
    audio_path: Path | None = None
    starts: list[int] = []
    if room.audio_out.record:
        target = joined_path(config, room.audio_out.record)
        if audio_segments:
            audio_path, more = join_audio([Path(s["path"]) for s in audio_segments], target,
                                          anchors=[_anchor(s) for s in audio_segments],
                                          starts=starts)
            notes += more
        elif target.exists():
            audio_path = target
    take_rate = _file_rate(audio_path)
    offsets = _segment_offsets(audio_segments, builder.player_started.get(room.id),
                               starts if audio_path is not None else None, take_rate)
    transitions = list(builder.section("transitions"))
    decisions = {d["artwork_id"]: d["decisions"] or {} for d in builder.section("decisions")}
    audio_stats: dict[str, Any] = {}
    centroids: dict[int, float] = {}
    if audio_path is not None:
        t0 = builder.t0 or 0.0
        heard = [(i, t) for i, t in enumerate(transitions) if t["heard_at"] is not None]
        ranges, indices = [], []
        following_rows: list[tuple[int, dict[str, Any]] | None] = [*heard[1:], None]
        for (index, row), following in zip(heard, following_rows[:len(heard)], strict=True):
            begin = _to_take(t0 + row["heard_at"] + 1.5, offsets) if offsets else (
                row["heard_at"] + 1.5)
            end = (_to_take(t0 + following[1]["heard_at"], offsets) if offsets
                   else following[1]["heard_at"]) if following else float("inf")
            ranges.append((begin, end))
            indices.append(index)
        import soundfile

        rate = soundfile.info(str(audio_path)).samplerate
        frame_ranges = [(max(0, int(a * rate)), int(min(b * rate, 2**62))) for a, b in ranges]
        one_take = len(audio_segments) <= 1 and not builder.underflows.get(room.id)
        audio_stats, stats = analyse_audio(audio_path, frame_ranges,
                                           builder.joins if one_take else None)
        for index, centroid in zip(indices, stats.range_centroids(), strict=True):
            if centroid is not None:
                centroids[index] = centroid
                transitions[index]["spectral_centroid_hz"] = centroid
        if one_take:
            ratio = stats.join_roughness()
            audio_stats["join_roughness"] = None if ratio is None else round(ratio, 3)
    summary: dict[str, Any] = report.summary(wall_s, config.engine.sample_rate, roles)
    summary["audio"] = audio_stats
    summary["soundfont"] = _soundfont_used(config, decisions)
    if room.audio_out.midi_file:
        midi_target = joined_path(config, room.audio_out.midi_file)
        midi_segments = builder.segments(room.id, "midi")
        if midi_segments:
            take_s = (_file_frames(audio_path) / take_rate
                      if audio_path is not None and take_rate else None)
            midi_path, more = join_midi(
                [(Path(s["path"]), *_midi_place(s, audio_segments, offsets, midi_segments,
                                                take_s))
                 for s in midi_segments], midi_target)
            notes += more
        else:
            midi_path = midi_target if midi_target.exists() else None
        summary["midi_file"] = str(midi_path) if midi_path is not None else None
    if notes:
        summary["notes"] = notes
    timeline = report.write(summary, lambda index, row: (
        {"spectral_centroid_hz": centroids[index]} if index in centroids else {}))
    _print_table(transitions, decisions, summary, timeline)
    return summary


def _soundfont_used(config: InstallationConfig, decisions: dict[str, Any]) -> str | None:
    """The SoundFont the demo played: as the generator described it, else as the config
    resolves here (``soundfont = "auto"``: the font the engine found); None for others."""
    named = {str(d["soundfont"]) for d in decisions.values() if d.get("soundfont")}
    if named:
        return ", ".join(sorted(named))
    if config.engine.generator != "procedural":
        return None
    from engine.generators.procedural.render import resolve_soundfont
    from ground.errors import Art2MusError

    try:
        choice, _ = resolve_soundfont(config.engine.procedural)
    except Art2MusError:
        return None  # the engine said why it could not start
    return choice.name


def _anchor(segment: dict[str, Any]) -> tuple[str, int] | None:
    """(start of audio_out, first frame in its played stream) of a segment, where logged."""
    started, frame = segment.get("started"), segment.get("frame")
    if isinstance(started, str) and isinstance(frame, int) and not isinstance(frame, bool):
        return started, frame
    return None


def _file_rate(path: Path | None) -> int | None:
    """The sample rate of the joined take (None without one)."""
    if path is None:
        return None
    import soundfile

    try:
        return int(soundfile.info(str(path)).samplerate)
    except (soundfile.LibsndfileError, RuntimeError, OSError):
        return None


def _file_frames(path: Path) -> int:
    """The frames of the joined take (written whole by the join: its header is right)."""
    import soundfile

    try:
        return int(soundfile.info(str(path)).frames)
    except (soundfile.LibsndfileError, RuntimeError, OSError):
        return 0


def _midi_place(midi: dict[str, Any], audio: list[dict[str, Any]],
                offsets: list[tuple[float, float, float]], midis: list[dict[str, Any]],
                take_s: float | None) -> tuple[float, float | None]:
    """Where a MIDI segment starts in the joined take and where its music ends there.

    With the audio segments of the same start of audio_out (``started``):
    both media count ``frame`` in that start's played stream, so the MIDI
    segment starts at the audio segment it falls in plus the frames between
    them, and ends where that start's audio ends (the next start's first
    segment, or the take's end). Older events without them: the audio segment
    opened nearest in time, adjusted by their playheads, and no end.
    """
    anchor, rate = _anchor(midi), midi.get("sample_rate")
    if anchor is not None and rate and audio and len(offsets) == len(audio):
        same = [i for i, a in enumerate(audio) if (_anchor(a) or ("", 0))[0] == anchor[0]]
        if same:
            before = [i for i in same if audio[i]["frame"] <= anchor[1]]
            index = before[-1] if before else same[0]
            offset = offsets[index][1] + (anchor[1] - audio[index]["frame"]) / float(rate)
            later = [offsets[i][1] for i in range(same[-1] + 1, len(audio))]
            end = later[0] if later else take_s
            return max(0.0, offset), end
    return _midi_offset(midi, audio, offsets, midis), None


def _midi_offset(midi: dict[str, Any], audio: list[dict[str, Any]],
                 offsets: list[tuple[float, float, float]], midis: list[dict[str, Any]]) -> float:
    """Where a MIDI segment starts in the joined take, for events without ``started`` and
    ``frame``: with the audio segment of the same start of audio_out (the one opened
    nearest in time), adjusted by their playheads."""
    if not audio:
        return midi["_opened"] - midis[0]["_opened"]
    index = min(range(len(audio)), key=lambda i: abs(audio[i]["_opened"] - midi["_opened"]))
    offset = offsets[index][1]
    pair = audio[index]
    if (isinstance(midi.get("playhead"), int) and isinstance(pair.get("playhead"), int)
            and midi.get("sample_rate")):
        delta = (midi["playhead"] - pair["playhead"]) / float(midi["sample_rate"])
        if abs(delta) < 5.0:
            offset += delta
    return max(0.0, offset)


def figures_line(summary: dict[str, Any]) -> str:
    """The demo's figures in one line. A figure this run could not measure (no audio, no
    chunk made, no transition heard: an engine that never started, a short demo) is left
    out or said in words, never printed as ``None``."""
    audio = summary.get("audio") or {}
    seconds = audio.get("seconds")
    parts = [f"wall time {summary['wall_s']} s",
             f"{seconds} s of audio" if seconds is not None else "no audio recorded"]
    for key, form in (("integrated_lufs", "{} LUFS"), ("peak_dbfs", "peak {} dBFS"),
                      ("longest_silence_s", "longest silence {} s"),
                      ("join_roughness", "join roughness {}")):
        if audio.get(key) is not None:
            parts.append(form.format(audio[key]))
    factor = summary.get("generator_realtime_factor")
    parts.append(f"generator {factor}x real time" if factor is not None
                 else "no chunks made")
    delay = (summary.get("transition_delay_s") or {}).get("max")
    first = summary.get("first_artwork_heard_after_s")
    # the first artwork is heard during start-up, so it is no transition: said apart
    transitions = (f"transition delay max {delay} s" if delay is not None
                   else "no transitions heard")
    if first is not None:
        transitions += f" (first artwork, during start-up: {first} s)"
    parts.append(transitions)
    return " · ".join(parts)


def _print_table(transitions: list[dict[str, Any]], decisions: dict[str, Any],
                 summary: dict[str, Any], timeline: Path | None) -> None:
    console = Console(width=max(Console().width, 120))
    table = Table(title="art2mus demo")
    for column in ("artwork", "style", "shown", "heard after", "key", "tempo", "centroid",
                   "instruments"):
        table.add_column(column)
    for row in transitions:
        d = decisions.get(row["artwork_id"], {})
        instruments = d.get("instruments", {})
        if isinstance(instruments, dict):
            instruments = ", ".join(
                str(v.get("name", v)).split(" (")[0] if isinstance(v, dict) else str(v)
                for v in instruments.values()
            )
        delay = row["transition_delay_s"]
        table.add_row(
            str(row["artwork_id"]), str(row["style"] or "-"),
            f"{row['shown_at']:.1f} s" if row["shown_at"] is not None else "-",
            f"{delay:.2f} s" if delay is not None else "-",
            f"{d.get('key', '-')} {d.get('mode', '')}".strip(),
            str(d.get("tempo_bpm", "-")),
            f"{row['spectral_centroid_hz']:.0f} Hz" if "spectral_centroid_hz" in row else "-",
            str(instruments or "-"),
        )
    console.print(table)
    audio = summary["audio"]
    console.print(figures_line(summary), markup=False, highlight=False)
    if summary.get("soundfont"):
        console.print(f"SoundFont: {summary['soundfont']}", markup=False, highlight=False)
    for note in summary.get("notes", []):
        console.print(f"note: {note}", markup=False, highlight=False)
    files = [audio.get("file"), summary.get("midi_file"), str(timeline) if timeline else None]
    console.print("files: " + ", ".join(f for f in files if f), markup=False, highlight=False)
