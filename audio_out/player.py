"""One room's player: chunks from the network in, sound, clock, events and files out.

:class:`Player` wires the pieces of this package together (see the package
docstring for which thread owns what):

- :meth:`Player.submit` (network thread) resamples a chunk to the device
  rate when it comes at another (:mod:`audio_out.resample`), splices it into
  the :class:`~audio_out.timeline.TimelineBuffer` and logs ``chunk_received``;
- the output's callback calls :meth:`Player.fill`: timeline read, DC blocker,
  start fade, smoothed volume x mute x master fade, peak limiter, output guard,
  channel routing, recorder copy, one published snapshot;
- a monitor thread (:meth:`Player.poll`) logs ``chunk_started`` with the
  wall time the chunk's first kept sample reached the speakers, ``underflow``,
  ``hold``, ``silent`` and ``resume``, commits played notes and sets
  :attr:`Player.done`;
- :meth:`Player.clock` gives the :class:`PlaybackClock` the role sends back
  to the engine, in the *generator's* samples and rate whatever the device
  rate (the timeline buffer, the notes and the recording work in device
  samples; positions convert exactly, see :mod:`audio_out.resample`).

A sound device that stops calling back (unplugged) or fails to start is
handed over to the null sink by its :class:`~audio_out.outputs.FailoverOutput`,
so the timeline and the recording go on; :meth:`Player.output_status` says so.

Sound never starts with a step: the first material a start plays fades in
over ``fade_in_s`` (a restarted audio_out resumes mid-piece, at full level),
unless its first frame is already silent (a piece that begins from silence
plays as it is); so does whatever plays when a lost sound card comes back
(the output's ``reopened`` count changed). The fade is in the program, so the
recording holds it too: the take stays what the speakers played.

Recordings (:class:`~audio_out.recorder.Recorder`,
:class:`~audio_out.midi.MidiRecorder`) are new segments at every start, and
every ``segment_s`` of the played stream after it (both on the same multiples); a
failed one stops itself, never the player, and tries again in a new segment
every few seconds (:meth:`Player.recording_status`). Both say where each
segment starts: the timeline sample of its first frame (read after the
callback's read, which may have jumped a hole first) and its frame in the
played stream, the time base the demo aligns them by.
:meth:`Player.stop` first fades the output out over ``stop_fade_s`` (the
master fade, a raised cosine) and lets two silent blocks play, so the
speakers and the recording end in silence rather than mid-signal.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from datetime import datetime
from typing import Any

import numpy as np

from audio_out.config import AudioOutConfig
from audio_out.midi import MidiPortOut, MidiRecorder, PlayedNotes, TempoChange, open_midi_port
from audio_out.mixer import (
    ChannelMap,
    DCBlocker,
    OutputGuard,
    PeakLimiter,
    SmoothGain,
    StartFade,
    render_gain_product,
)
from audio_out.outputs import OutputStream, open_output
from audio_out.recorder import Recorder
from audio_out.resample import TimelineResampler
from audio_out.timeline import SpliceResult, TimelineBuffer
from ground.errors import ConfigError
from ground.events import EventSink
from ground.params import VOLUME_MAX
from ground.protocol import PROTOCOL_VERSION, AudioChunk, PlaybackClock

#: Largest callback block the preallocated buffers take (PortAudio may pass
#: any size up to the configured block when blocksize is fixed; this is slack).
MAX_BLOCK_FRAMES = 8192
#: A first frame within this of zero (-80 dBFS) is a start from silence: no step to soften.
SILENT_START = 1e-4
#: A non-finite output block is logged at most this often (it is counted every time).
NONFINITE_LOG_S = 1.0


class Player:
    """Plays one room's AudioChunks on its timeline.

    ``channels`` is the program's channel count (the engine's); the device
    gets ``config.output_channels(channels)`` through a :class:`ChannelMap`.
    """

    def __init__(self, room_id: str, config: AudioOutConfig, channels: int,
                 log_event: EventSink, output_factory: Any = open_output,
                 poll_s: float = 0.01) -> None:
        sr = config.sample_rate
        self.room_id = room_id
        self.config = config
        self.channels = channels
        self.sample_rate = sr  # the device's rate
        try:
            self.routing = ChannelMap(channels, config.output_channels(channels))
        except ValueError as exc:
            raise ConfigError(f"audio_out.{exc}") from None
        self.device_channels = self.routing.device_channels
        self._log = log_event
        self._output_factory = output_factory
        self._poll_s = poll_s
        max_block = max(MAX_BLOCK_FRAMES, config.block_size)
        self.timeline = TimelineBuffer(
            capacity_frames=max(round(config.buffer_s * sr), 4 * max_block),
            channels=channels,
            block_frames=config.block_size,
            max_block_frames=max_block,
            hold_frames=round(config.hold_s * sr),
            fade_frames=max(1, round(config.fade_s * sr)),
            resume_frames=max(1, round(config.resume_s * sr)),
            loop_frames=round(config.hold_loop_s * sr),
            loop_crossfade_frames=round(config.hold_loop_crossfade_s * sr),
            hold_decay_db=config.hold_decay_db,
        )
        self.resampler = TimelineResampler(sr, channels, config.resample_quality)
        self.notes = PlayedNotes() if (config.midi_file or config.midi_port) else None
        self.recorder: Recorder | None = None
        self.midi_recorder: MidiRecorder | None = None
        self.output: OutputStream | None = None
        self.midi_out: MidiPortOut | None = None
        # Gains: any thread commands them, the callback renders them per sample.
        self._volume = SmoothGain(config.volume, max_block)
        self._mute = SmoothGain(1.0, max_block)
        self._master = SmoothGain(1.0, max_block)
        self._gains = (self._volume, self._mute, self._master)
        self._muted = False
        #: Fades the program in from silence at a mid-piece start or a card come back.
        self.start_fade = StartFade(round(config.fade_in_s * sr), max_block)
        #: Keeps a chunk's DC offset (and a hold looping it) off the speakers.
        self.dc_blocker = DCBlocker(sr, max_block, channels, config.dc_block_hz)
        self.limiter = PeakLimiter(sr, max_block, channels, config.limiter_threshold_db,
                                   config.limiter_release_s, enabled=config.limiter)
        #: The last stage: no NaN, infinity or sample past full scale reaches the device
        #: or the take, whatever happened upstream (counted in ``status``/``player_stopped``).
        self.guard = OutputGuard(max_block, channels)
        # Callback scratch, made once: the program block (when the device
        # block cannot hold it directly), the routed block, and gain envelopes.
        self._program = np.zeros((max_block, channels), np.float32)
        self._played = (self._program if self.routing.mode == "direct"
                        else np.zeros((max_block, self.routing.played_channels), np.float32))
        self._env = np.zeros((max_block, 1), np.float32)
        self._env1 = self._env[:, 0]
        self._scratch = np.zeros(max_block, np.float32)
        # Published by fill as one tuple: (wall time of the fill, playhead after,
        # frames output after, block frames); 0.0 wall = never filled.
        self._snapshot: tuple[float, int, int, int] = (0.0, 0, 0, 0)
        # Device timeline sample of the first real frame played (the recordings' origin).
        self._origin: int | None = None
        self._starts_lock = threading.Lock()
        # (seq, first device sample heard, artwork, reason)
        self._pending_starts: deque[tuple[int, int, str | None, str]] = deque()
        self._seen_state = "starting"
        self._seen_underflows = 0
        self._seen_resumes = 0
        self._seen_nonfinite = 0
        self._nonfinite_logged = 0.0
        # The output's count of sound cards come back (FailoverOutput.reopened), read by
        # the callback: a change fades the program in. None: a sink without one.
        self._reopen_source: Any = None
        self._seen_reopened = 0
        self._done = False
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self._started = False
        self._stopped = False

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Open the output (and recorder, MIDI port), start the monitor and the stream."""
        if self._started:
            return
        self._started = True
        try:
            self._open()
        except BaseException:
            self.stop()  # release whatever opened before the failure
            raise
        self._log("player_started", output=self.output.name if self.output else None,
                  sample_rate=self.sample_rate, channels=self.channels,
                  channels_out=list(self.routing.outputs),
                  block_size=self.config.block_size,
                  latency_s=self.output.latency_s if self.output else None)

    def _open(self) -> None:
        started = datetime.now()  # one {start} for this start's audio and MIDI segments
        if self.config.record:
            self.recorder = Recorder(self.config.record, self.sample_rate,
                                     self.routing.played_channels, log_event=self._log,
                                     room=self.room_id, start=started,
                                     to_timeline=self.resampler.to_source,
                                     segment_s=self.config.segment_s)
            self.recorder.start()
        if self.config.midi_file:
            self.midi_recorder = MidiRecorder(self.config.midi_file, self.sample_rate,
                                              self._log, room=self.room_id, start=started,
                                              to_timeline=self.resampler.to_source,
                                              segment_s=self.config.segment_s)
        if self.config.midi_port:
            port = open_midi_port(self.config.midi_port)
            self.midi_out = MidiPortOut(port, self.heard_position)
            self.midi_out.start()
        self.output = self._output_factory(self.config, self.sample_rate, self.device_channels,
                                           self.fill, self._log)
        if hasattr(self.output, "reopened"):
            self._seen_reopened = int(self.output.reopened)
            self._reopen_source = self.output
        self._monitor = threading.Thread(target=self._run_monitor, name="audio-monitor",
                                         daemon=True)
        self._monitor.start()
        self.output.start()

    def stop(self) -> None:
        """Fade out, stop the output, then finalise the recording and the MIDI file; idempotent.

        The fade (``stop_fade_s``) plays in real time on an output that paces
        itself (a sound card, the null sink); a pulled test output
        (``realtime = False``) is faded by whoever pulls it (:meth:`fade_out`).
        """
        if self._stopped:
            return
        self._stopped = True
        if self.output is not None:
            if getattr(self.output, "realtime", True):
                self._fade_out_and_wait()
            self.output.stop()
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(timeout=5.0)
        self.poll()
        if self.recorder is not None:
            self.recorder.close()
        if self.midi_out is not None:
            self.midi_out.stop()
        if self.midi_recorder is not None:
            self.midi_recorder.close(self.timeline.frames_out)
        tl = self.timeline
        stats = getattr(self.output, "stats", None)
        self._log("player_stopped", played_s=tl.played_frames / self.sample_rate,
                  underflows=tl.underflows, gaps=tl.gaps, late_frames=tl.late_frames,
                  held_frames=tl.held_frames, silent_frames=tl.silent_frames,
                  overflow_frames=tl.overflow_frames,
                  output_underflows=getattr(stats, "output_underflows", 0),
                  callback_us=stats.percentiles_us() if stats is not None else None,
                  limiter_min_gain=round(self.limiter.min_gain, 4),
                  limiter_knee_blocks=self.limiter.knee_blocks,
                  nonfinite_blocks=self.guard.nonfinite_blocks,
                  clipped_blocks=self.guard.clipped_blocks,
                  start_fades=self.start_fade.count)

    def fade_out(self, seconds: float | None = None) -> int:
        """Start the stop fade (``stop_fade_s`` unless given); returns its length in frames."""
        seconds = self.config.stop_fade_s if seconds is None else seconds
        self.fade_to(0.0, seconds)
        return round(seconds * self.sample_rate)

    def _fade_out_and_wait(self) -> None:
        """Fade out and wait until the callback has played it and two silent blocks after.

        Skipped when nothing has played yet. Bounded by the fade plus 0.5 s,
        so a stalled device cannot hold the stop up.
        """
        seconds = self.config.stop_fade_s
        if seconds <= 0.0 or self._origin is None:
            return
        self.fade_out(seconds)
        master = self._master
        deadline = time.monotonic() + seconds + 0.5
        silent_from: int | None = None
        while time.monotonic() < deadline:
            if master.value == 0.0 and not master.moving:
                frames_out = self._snapshot[2]
                if silent_from is None:
                    silent_from = frames_out
                elif frames_out >= silent_from + 2 * self.config.block_size:
                    return
            time.sleep(0.005)
        self._log("stop_fade_unfinished", master_gain=round(master.value, 4))

    def recording_status(self) -> dict[str, Any]:
        """``{"state": "ok"|"failed"|"off", "path", "error"}`` of the audio and MIDI segments.

        ``failed`` if either failed (its path and error); ``off`` if neither is configured.
        """
        parts = [r for r in (self.recorder, self.midi_recorder) if r is not None]
        for part in parts:
            if part.failed:
                return part.status()
        if not parts:
            return {"state": "off", "path": None, "error": None}
        return parts[0].status()

    def output_status(self) -> dict[str, Any]:
        """Where the audio goes, for the heartbeat: ``{"state": "ok"|"lost", "output", ...}``.

        ``lost``: the sound device stopped calling back or did not start; the
        null sink keeps the timeline, the clock and the recording going while
        the device is reopened (:class:`~audio_out.outputs.FailoverOutput`,
        whose ``status()`` this is). Sinks without one are ``ok``.
        """
        output = self.output
        status = getattr(output, "status", None)
        if callable(status):
            return dict(status())
        return {"state": "ok", "output": output.name if output is not None else None}

    @property
    def done(self) -> bool:
        """True once ``stop_after_s`` of timeline material has played."""
        return self._done

    # ------------------------------------------------------------- controls
    def set_volume(self, volume: float) -> None:
        """Set the volume (0..VOLUME_MAX); it glides there over ``volume_ramp_s``, no clicks."""
        if not 0.0 <= volume <= VOLUME_MAX:
            raise ConfigError(f"audio_out.volume: expected 0..{VOLUME_MAX:g}, got {volume}")
        self._volume.set(volume, round(self.config.volume_ramp_s * self.sample_rate))

    def set_mute(self, muted: bool) -> None:
        """Mute or unmute, gliding over ``mute_ramp_s``; the volume setting is kept."""
        self._muted = bool(muted)
        self._mute.set(0.0 if muted else 1.0, round(self.config.mute_ramp_s * self.sample_rate))

    def fade_to(self, gain: float, seconds: float) -> None:
        """Master fade to ``gain`` (0..1) over ``seconds`` (e.g. opening and closing hours).

        Starts from wherever the master gain is now (a fade in progress is
        taken over smoothly); the curve is a raised cosine.
        """
        if not 0.0 <= gain <= 1.0:
            raise ConfigError(f"audio_out.fade_to: expected a gain in 0..1, got {gain}")
        if not seconds >= 0.0:
            raise ConfigError(f"audio_out.fade_to: expected seconds >= 0, got {seconds}")
        self._master.set(gain, round(seconds * self.sample_rate))

    @property
    def volume(self) -> float:
        """The volume last set (the target of any glide in progress)."""
        return self._volume.target

    @property
    def muted(self) -> bool:
        """Whether :meth:`set_mute` last muted."""
        return self._muted

    @property
    def master_gain(self) -> float:
        """The master fade's target gain."""
        return self._master.target

    # -------------------------------------------------------------- network
    def submit(self, chunk: AudioChunk) -> SpliceResult:
        """Resample if needed, splice one chunk into the timeline, log ``chunk_received``.

        Network thread. The returned splice is in device samples.
        """
        if chunk.sample_rate <= 0:
            raise ConfigError(
                f"AudioChunk seq {chunk.seq}: expected sample_rate > 0, got {chunk.sample_rate}"
            )
        audio = chunk.audio.to_numpy()
        if audio.ndim != 2 or audio.shape[1] != self.channels:
            raise ConfigError(
                f"AudioChunk seq {chunk.seq}: expected audio (frames, {self.channels}), "
                f"got {audio.shape}"
            )
        rs = self.resampler
        if rs.set_source_rate(chunk.sample_rate):
            self._log("source_rate", sample_rate=chunk.sample_rate, device_rate=self.sample_rate,
                      resampling=not rs.passthrough)
        result: SpliceResult | None = None
        for write in rs.convert(chunk.start_sample, audio, chunk.crossfade):
            if write.audio.shape[0] == 0:
                continue
            written = self.timeline.write_chunk(write.start, write.audio, write.crossfade)
            if write.main:
                result = written
        dev_start = rs.to_device(chunk.start_sample)
        dev_end = rs.to_device(chunk.start_sample + audio.shape[0])
        if result is None:  # all of it still inside the resampler's delay
            result = SpliceResult("append", dev_start, dev_start, dev_start, 0, 0, 0, 0)
        first = max(result.written_from, dev_start)
        if self.notes is not None:
            # Notes count over the chunk's own span; the part still in the
            # resampler's delay is written with the next continuation.
            window = result
            if result.accepted:
                window = dataclasses.replace(result, written_from=first,
                                             written_to=max(result.written_to, dev_end))
            notes = chunk.notes.to_numpy() if chunk.notes is not None else None
            self.notes.add_chunk(chunk.seq, dev_start,
                                 self._notes_to_device(notes, chunk.start_sample, dev_start),
                                 window)
            if (result.accepted and chunk.tempo_bpm is not None and chunk.meter is not None
                    and chunk.downbeat is not None):
                try:  # the recorded MIDI file's tempo map (a repeat is ignored)
                    change = TempoChange(rs.to_device(chunk.downbeat), chunk.tempo_bpm,
                                         chunk.meter)
                    if self.notes.add_tempo(change):
                        self._log("tempo_marked", seq=chunk.seq, downbeat=chunk.downbeat,
                                  bpm=chunk.tempo_bpm, meter=list(chunk.meter),
                                  playhead=rs.to_source(self.timeline.playhead))
                except ValueError as error:  # a meter no MIDI file can hold: counted, dropped
                    self._log("tempo_refused", seq=chunk.seq, error=str(error))
        if result.accepted:
            with self._starts_lock:
                if result.kind == "replace":
                    # Chunks queued at or after this splice point will never be heard.
                    while (self._pending_starts
                           and self._pending_starts[-1][1] >= result.written_from):
                        self._pending_starts.pop()
                self._pending_starts.append((chunk.seq, first, chunk.artwork_id, chunk.reason))
        self._log("chunk_received", seq=chunk.seq, start_sample=chunk.start_sample,
                  frames=int(audio.shape[0]), crossfade=chunk.crossfade, reason=chunk.reason,
                  artwork_id=chunk.artwork_id, generation_s=chunk.generation_s,
                  late_frames=result.late_frames, splice=result.kind,
                  written_from=rs.to_source(result.written_from),
                  crossfade_applied=result.crossfade_frames,
                  playhead=rs.to_source(self.timeline.playhead))
        return result

    def _notes_to_device(self, notes: np.ndarray | None, start: int,
                         dev_start: int) -> np.ndarray | None:
        """Chunk-relative note rows (generator samples) -> relative to ``dev_start`` (device)."""
        rs = self.resampler
        if notes is None or len(notes) == 0 or rs.passthrough:
            return notes
        rows = np.asarray(notes, dtype=np.int64).reshape(-1, 6).copy()
        src, dev = rs.source_rate, rs.device_rate
        assert src is not None
        begin = start + rows[:, 0]
        end = begin + np.maximum(rows[:, 1], 1)
        begin_dev = (begin * dev + src // 2) // src
        rows[:, 0] = begin_dev - dev_start
        rows[:, 1] = np.maximum((end * dev + src // 2) // src - begin_dev, 1)
        return rows

    # ------------------------------------------------------------- callback
    def fill(self, out: np.ndarray) -> None:
        """The output callback: timeline -> DC blocker -> start fade -> gains -> limiter
        -> guard -> routing -> recorder.

        ``out`` is float32 (frames, device channels). Never blocks; creates no
        arrays (only views of buffers made in ``__init__``).
        """
        tl = self.timeline
        n = out.shape[0]
        routing = self.routing
        program = out if routing.identity else self._program[:n]
        starting = tl.state == "starting"
        tl.read_into(program)
        # Where this block starts on the timeline: read after the read, because a block
        # may open by jumping a hole (the first chunk of a start lies past sample 0).
        first = tl.block_start
        if starting and tl.state != "starting" and n:
            # The first material of this start (it always opens a block): mid-piece after a
            # restart it would step from silence to full level; from silence it needs nothing.
            head = program[0]
            if float(head.max()) > SILENT_START or float(head.min()) < -SILENT_START:
                self.start_fade.start()
        source = self._reopen_source
        if source is not None and source.reopened != self._seen_reopened:
            self._seen_reopened = source.reopened  # a sound card came back: from silence
            self.start_fade.start()
        # The blocker first: it runs on through a fade, so its state (the music before a card
        # came back) never adds a step where the fade starts from zero.
        self.dc_blocker.process(program)
        self.start_fade.apply(program)
        varying, constant = render_gain_product(self._gains, self._env1[:n], self._scratch[:n])
        if varying:
            env = self._env[:n]
            if constant != 1.0:
                np.multiply(env, constant, out=env)
            np.multiply(program, env, out=program)
        elif constant != 1.0:
            np.multiply(program, constant, out=program)
        self.limiter.process(program)
        self.guard.process(program)
        if routing.identity:
            played = out
        else:
            played = self._played[:n]
            routing.route(program, played, out)
        if tl.state != "starting":
            if self._origin is None:
                self._origin = first
            if self.recorder is not None:
                self.recorder.push(played, first)
        self._snapshot = (time.time(), tl.playhead, tl.frames_out, n)

    # -------------------------------------------------------------- monitor
    def _latency(self) -> float:
        return self.output.latency_s if self.output is not None else 0.0

    def clock(self) -> PlaybackClock:
        """Where playback is, in the generator's samples and rate.

        ``wall_time`` is when ``playhead`` reaches the speakers. Cheap: a few
        attribute loads and integer conversions.
        """
        tl = self.timeline
        rs = self.resampler
        wall, playhead, _, n = self._snapshot
        state = tl.state
        if wall == 0.0 or state != "playing":
            # Not moving: the playhead would be heard as soon as material comes.
            wall_time = time.time() + self._latency()
            playhead = tl.playhead
        else:
            wall_time = wall + self._latency() + n / self.sample_rate
        return PlaybackClock(v=PROTOCOL_VERSION, room=self.room_id,
                             sample_rate=rs.source_rate or self.sample_rate,
                             playhead=rs.to_source(playhead),
                             buffered_until=rs.to_source(tl.buffered_until),
                             wall_time=wall_time, underflows=tl.underflows, state=state)

    def heard_position(self) -> int | None:
        """Device sample at the speakers now (estimated from the last fill), or None."""
        wall, playhead, _, n = self._snapshot
        if wall == 0.0 or self.timeline.state == "starting":
            return None
        behind = n - (time.time() - wall - self._latency()) * self.sample_rate
        return playhead - max(0, round(behind))

    def poll(self) -> None:
        """One monitor step: events, note commits and ``done`` (monitor thread or tests)."""
        tl = self.timeline
        rs = self.resampler
        wall, playhead, frames_out, n = self._snapshot
        if wall == 0.0:
            return
        sr = self.sample_rate
        heard_at = wall + self._latency() + n / sr  # when `playhead` is heard
        while True:
            with self._starts_lock:
                if not self._pending_starts or self._pending_starts[0][1] >= playhead:
                    break
                seq, sample, artwork_id, reason = self._pending_starts.popleft()
            self._log("chunk_started", seq=seq, start_sample=rs.to_source(sample),
                      artwork_id=artwork_id, reason=reason,
                      wall_time=heard_at + (sample - playhead) / sr)
        underflows, resumes, state = tl.underflows, tl.resumes, tl.state
        if underflows > self._seen_underflows:
            self._log("underflow", count=underflows, playhead=rs.to_source(playhead),
                      buffered_until=rs.to_source(tl.buffered_until))
            self._seen_underflows = underflows
        if state != self._seen_state:
            if state in ("holding", "silent"):
                self._log("hold" if state == "holding" else "silent",
                          playhead=rs.to_source(playhead), held_frames=tl.held_frames,
                          seam_correlation=round(tl.hold_seam_correlation, 3))
            self._seen_state = state
        if resumes > self._seen_resumes:
            self._log("resume", playhead=rs.to_source(playhead), count=resumes, gaps=tl.gaps)
            self._seen_resumes = resumes
        nonfinite = self.guard.nonfinite_blocks
        if nonfinite > self._seen_nonfinite and time.monotonic() >= self._nonfinite_logged:
            # A fault upstream of the guard (the wire refuses such samples): said, not hidden.
            self._log("output_nonfinite", blocks=nonfinite, new=nonfinite - self._seen_nonfinite,
                      playhead=rs.to_source(playhead))
            self._seen_nonfinite = nonfinite
            self._nonfinite_logged = time.monotonic() + NONFINITE_LOG_S
        if self.notes is not None:
            started = self.notes.advance(playhead, frames_out)
            tempi = self.notes.take_tempi(playhead, frames_out)  # taken even unrecorded
            if self.midi_out is not None and started:
                self.midi_out.feed(started)
            midi_file = self.midi_recorder
            if midi_file is not None:
                if not midi_file.announced and self._origin is not None:
                    midi_file.announce(self._origin)  # device samples: it converts
                midi_file.advance(started, playhead, tempi, frames_out=frames_out)
        stop_after = self.config.stop_after_s
        if stop_after is not None and tl.played_frames >= stop_after * sr:
            self._done = True

    def _run_monitor(self) -> None:
        while not self._stop.wait(self._poll_s):
            self.poll()
