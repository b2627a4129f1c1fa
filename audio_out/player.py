"""One room's player: chunks from the network in, sound, clock, events and files out.

:class:`Player` wires the pieces of this package together (see the package
docstring for which thread owns what):

- :meth:`Player.submit` (network thread) splices a chunk into the
  :class:`~audio_out.timeline.TimelineBuffer` and logs ``chunk_received``;
- the output's callback calls :meth:`Player.fill` (timeline read, volume
  ramp, recorder copy, one published snapshot);
- a monitor thread (:meth:`Player.poll`) logs ``chunk_started`` with the
  wall time the chunk's first kept sample reached the speakers, ``underflow``,
  ``hold``, ``silent`` and ``resume``, commits played notes and sets
  :attr:`Player.done`;
- :meth:`Player.clock` gives the :class:`PlaybackClock` the role sends back
  to the engine.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import numpy as np

from audio_out.config import AudioOutConfig
from audio_out.midi import MidiPortOut, PlayedNotes, open_midi_port
from audio_out.outputs import OutputStream, open_output
from audio_out.recorder import Recorder
from audio_out.timeline import SpliceResult, TimelineBuffer
from installation.errors import ConfigError
from installation.events import EventSink
from installation.protocol import PROTOCOL_VERSION, AudioChunk, PlaybackClock

#: Hold-loop and resume shapes (seconds); the config sets hold_s and fade_s.
LOOP_S = 1.5
LOOP_CROSSFADE_S = 0.1
RESUME_S = 0.05
#: Volume changes ramp at most this fast (full scale per VOLUME_RAMP_S), so knobs never click.
VOLUME_RAMP_S = 0.05
MAX_BLOCK_FRAMES = 8192


class Player:
    """Plays one room's AudioChunks on its timeline."""

    def __init__(self, room_id: str, config: AudioOutConfig, channels: int,
                 log_event: EventSink, output_factory: Any = open_output,
                 poll_s: float = 0.01) -> None:
        sr = config.sample_rate
        self.room_id = room_id
        self.config = config
        self.channels = channels
        self.sample_rate = sr
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
            resume_frames=max(1, round(RESUME_S * sr)),
            loop_frames=round(LOOP_S * sr),
            loop_crossfade_frames=round(LOOP_CROSSFADE_S * sr),
        )
        self.notes = PlayedNotes() if (config.midi_file or config.midi_port) else None
        self.recorder: Recorder | None = None
        self.output: OutputStream | None = None
        self.midi_out: MidiPortOut | None = None
        # Volume: the callback owns _gain; any thread may set _target.
        self._gain = float(config.volume)
        self._target = float(config.volume)
        self._ramp = np.arange(1, max_block + 1, dtype=np.float32)
        self._env = np.zeros((max_block, 1), np.float32)
        self._max_gain_step = 1.0 / max(1.0, VOLUME_RAMP_S * sr)
        # Published by fill as one tuple: (wall time of the fill, playhead after,
        # frames output after, block frames); 0.0 wall = never filled.
        self._snapshot: tuple[float, int, int, int] = (0.0, 0, 0, 0)
        self._starts_lock = threading.Lock()
        self._pending_starts: deque[tuple[int, int, str | None, str]] = deque()
        self._seen_state = "starting"
        self._seen_underflows = 0
        self._seen_resumes = 0
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
                  block_size=self.config.block_size,
                  latency_s=self.output.latency_s if self.output else None)

    def _open(self) -> None:
        if self.config.record:
            self.recorder = Recorder(self.config.record, self.sample_rate, self.channels,
                                     log_event=self._log)
            self.recorder.start()
        if self.config.midi_port:
            port = open_midi_port(self.config.midi_port)
            self.midi_out = MidiPortOut(port, self.heard_position)
            self.midi_out.start()
        self.output = self._output_factory(self.config, self.sample_rate, self.channels,
                                           self.fill, self._log)
        self._monitor = threading.Thread(target=self._run_monitor, name="audio-monitor",
                                         daemon=True)
        self._monitor.start()
        self.output.start()

    def stop(self) -> None:
        """Stop the output, then finalise the recording and the MIDI file; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self.output is not None:
            self.output.stop()
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(timeout=5.0)
        self.poll()
        if self.recorder is not None:
            self.recorder.close()
        if self.midi_out is not None:
            self.midi_out.stop()
        if self.notes is not None and self.config.midi_file:
            count = self.notes.write(self.config.midi_file, self.sample_rate)
            self._log("midi_file_written", path=self.config.midi_file, notes=count)
        tl = self.timeline
        stats = getattr(self.output, "stats", None)
        self._log("player_stopped", played_s=tl.played_frames / self.sample_rate,
                  underflows=tl.underflows, gaps=tl.gaps, late_frames=tl.late_frames,
                  held_frames=tl.held_frames, silent_frames=tl.silent_frames,
                  overflow_frames=tl.overflow_frames,
                  output_underflows=getattr(stats, "output_underflows", 0),
                  callback_us=stats.percentiles_us() if stats is not None else None)

    @property
    def done(self) -> bool:
        """True once ``stop_after_s`` of timeline material has played."""
        return self._done

    def set_volume(self, volume: float) -> None:
        """Set the target volume (0..4); the callback ramps to it without clicks."""
        if not 0.0 <= volume <= 4.0:
            raise ConfigError(f"audio_out.volume: expected 0..4, got {volume}")
        self._target = float(volume)

    # -------------------------------------------------------------- network
    def submit(self, chunk: AudioChunk) -> SpliceResult:
        """Splice one chunk into the timeline and log ``chunk_received`` (network thread)."""
        if chunk.sample_rate != self.sample_rate:
            raise ConfigError(
                f"AudioChunk seq {chunk.seq} of room {chunk.room!r}: expected sample_rate "
                f"{self.sample_rate} Hz (audio_out.sample_rate), got {chunk.sample_rate} Hz; "
                "resampling is not supported yet, make engine and audio_out rates equal"
            )
        audio = chunk.audio.to_numpy()
        if audio.ndim != 2 or audio.shape[1] != self.channels:
            raise ConfigError(
                f"AudioChunk seq {chunk.seq}: expected audio (frames, {self.channels}), "
                f"got {audio.shape}"
            )
        result = self.timeline.write_chunk(chunk.start_sample, audio, chunk.crossfade)
        if self.notes is not None:
            notes = chunk.notes.to_numpy() if chunk.notes is not None else None
            self.notes.add_chunk(chunk.seq, chunk.start_sample, notes, result)
        if result.accepted:
            with self._starts_lock:
                # Chunks queued at or after this splice point will never be heard.
                while self._pending_starts and self._pending_starts[-1][1] >= result.written_from:
                    self._pending_starts.pop()
                self._pending_starts.append((chunk.seq, result.written_from, chunk.artwork_id,
                                             chunk.reason))
        self._log("chunk_received", seq=chunk.seq, start_sample=chunk.start_sample,
                  frames=int(audio.shape[0]), crossfade=chunk.crossfade, reason=chunk.reason,
                  artwork_id=chunk.artwork_id, generation_s=chunk.generation_s,
                  late_frames=result.late_frames, splice=result.kind,
                  written_from=result.written_from, crossfade_applied=result.crossfade_frames,
                  playhead=self.timeline.playhead)
        return result

    # ------------------------------------------------------------- callback
    def fill(self, out: np.ndarray) -> None:
        """The output callback: timeline -> volume -> recorder. Never blocks or allocates."""
        tl = self.timeline
        n = out.shape[0]
        tl.read_into(out)
        g0 = self._gain
        delta = self._target - g0
        if delta != 0.0:
            limit = self._max_gain_step * n
            g1 = g0 + (delta if -limit <= delta <= limit else (limit if delta > 0 else -limit))
            env = self._env[:n]
            np.multiply(self._ramp[:n, None], (g1 - g0) / n, out=env)
            np.add(env, g0, out=env)
            np.multiply(out, env, out=out)
            self._gain = g1
        elif g0 != 1.0:
            np.multiply(out, g0, out=out)
        if tl._state != "starting" and self.recorder is not None:
            self.recorder.push(out)
        self._snapshot = (time.time(), tl._playhead, tl.frames_out, n)

    # -------------------------------------------------------------- monitor
    def _latency(self) -> float:
        return self.output.latency_s if self.output is not None else 0.0

    def clock(self) -> PlaybackClock:
        """Where playback is: ``wall_time`` is when ``playhead`` reaches the speakers."""
        tl = self.timeline
        wall, playhead, _, n = self._snapshot
        state = tl.state
        if wall == 0.0 or state != "playing":
            # Not moving: the playhead would be heard as soon as material comes.
            wall_time = time.time() + self._latency()
            playhead = tl.playhead
        else:
            wall_time = wall + self._latency() + n / self.sample_rate
        return PlaybackClock(v=PROTOCOL_VERSION, room=self.room_id, sample_rate=self.sample_rate,
                             playhead=playhead, buffered_until=tl.buffered_until,
                             wall_time=wall_time, underflows=tl.underflows, state=state)

    def heard_position(self) -> int | None:
        """Timeline sample at the speakers now (estimated from the last fill), or None."""
        wall, playhead, _, n = self._snapshot
        if wall == 0.0 or self.timeline.state == "starting":
            return None
        behind = n - (time.time() - wall - self._latency()) * self.sample_rate
        return playhead - max(0, round(behind))

    def poll(self) -> None:
        """One monitor step: events, note commits and ``done`` (monitor thread or tests)."""
        tl = self.timeline
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
            self._log("chunk_started", seq=seq, start_sample=sample, artwork_id=artwork_id,
                      reason=reason, wall_time=heard_at + (sample - playhead) / sr)
        underflows, resumes, state = tl.underflows, tl.resumes, tl.state
        if underflows > self._seen_underflows:
            self._log("underflow", count=underflows, playhead=playhead,
                      buffered_until=tl.buffered_until)
            self._seen_underflows = underflows
        if state != self._seen_state:
            if state in ("holding", "silent"):
                self._log("hold" if state == "holding" else "silent", playhead=playhead,
                          held_frames=tl.held_frames)
            self._seen_state = state
        if resumes > self._seen_resumes:
            self._log("resume", playhead=playhead, count=resumes, gaps=tl.gaps)
            self._seen_resumes = resumes
        if self.notes is not None:
            started = self.notes.advance(playhead, frames_out)
            if self.midi_out is not None and started:
                self.midi_out.feed(started)
        stop_after = self.config.stop_after_s
        if stop_after is not None and tl.played_frames >= stop_after * sr:
            self._done = True

    def _run_monitor(self) -> None:
        while not self._stop.wait(self._poll_s):
            self.poll()
