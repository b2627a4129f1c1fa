"""Per-room streaming on a sample timeline, around any :class:`Generator`.

A :class:`RoomSession` owns one room's stream state and decides, from the
latest :class:`PlaybackClock`, what to generate next:

- **start**: the first chunk (or the first after audio_out or the engine
  restarted) begins at ``playhead + margin`` with a crossfade, so audio_out
  fades from whatever it is holding into it;
- **continue**: while the queue ends less than ``lead`` ahead of the playhead,
  the next chunk starts exactly where the last one ended (generators are
  sample-continuous, so no crossfade is needed);
- **transition**: when the artwork changes, new material starts at
  ``now + margin`` (not after everything queued), with an equal-power
  crossfade of ``transition_crossfade_s``; transition latency is then the
  margin plus one generation, not the queue length.

Conditioning is computed once per artwork and cached by artwork id.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from engine.config import EngineConfig
from engine.generators import Generator
from installation.events import EventSink, null_sink
from installation.protocol import (
    PROTOCOL_VERSION,
    Array,
    ArtworkView,
    AudioChunk,
    PlaybackClock,
)

Reason = Literal["start", "continue", "transition"]


def empty_view(room: str) -> ArtworkView:
    """The view of a room before capture has reported anything: an empty wall."""
    return ArtworkView(v=PROTOCOL_VERSION, room=room, seq=-1, time=time.time(), state="empty")


def view_key(view: ArtworkView) -> str:
    """What identifies 'the same artwork' for caching and change detection."""
    if view.state == "empty":
        return "<empty>"
    return view.artwork_id or f"<unnamed:{view.seq}>"


@dataclass
class _Clock:
    playhead: int
    wall_time: float
    received: float
    playing: bool


class RoomSession:
    """One room's timeline: what has been generated, what plays, what is next."""

    def __init__(
        self,
        room: str,
        seed: int,
        generator: Generator,
        config: EngineConfig,
        log_event: EventSink = null_sink,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.room = room
        self.seed = seed
        self.generator = generator
        self.config = config
        self._log = log_event
        self._now = clock
        self._conditions: dict[str, Any] = {}
        self.view = empty_view(room)
        self.condition = self._condition_for(self.view)
        self.state: Any | None = None
        self.queue_end: int | None = None
        self.seq = 0
        self.pending_transition = False
        self._clock: _Clock | None = None
        self.generated_frames = 0
        self.generation_s = 0.0
        self._seconds_per_frame: float | None = None

    def log_event(self, kind: str, **fields: Any) -> None:
        """Record an event about this room."""
        self._log(kind, room=self.room, **fields)

    # -- inputs -------------------------------------------------------------

    def on_view(self, view: ArtworkView) -> bool:
        """Take a capture report; True when it changes the artwork (a transition is due)."""
        changed = view_key(view) != view_key(self.view)
        self.view = view
        if changed:
            self.condition = self._condition_for(view)
            self.pending_transition = self.state is not None
        return changed

    def on_clock(self, clock: PlaybackClock) -> None:
        """Take audio_out's playback position; a playhead that went back means it restarted."""
        if self._clock is not None and clock.playhead < self._clock.playhead:
            self.log_event("playback_restarted", playhead=clock.playhead,
                           previous=self._clock.playhead)
            self.state = None
            self.queue_end = None
        self._clock = _Clock(
            playhead=clock.playhead,
            wall_time=clock.wall_time,
            received=self._now(),
            playing=clock.state in ("playing", "holding"),
        )

    # -- scheduling ---------------------------------------------------------

    def playhead_estimate(self) -> int | None:
        """The playhead now, extrapolated from the last clock report."""
        if self._clock is None:
            return None
        playhead = self._clock.playhead
        if self._clock.playing:
            elapsed = max(0.0, self._now() - self._clock.received)
            playhead += int(elapsed * self.generator.sample_rate)
        return playhead

    def next_reason(self) -> Reason | None:
        """What the next chunk would be, or None if nothing is due yet."""
        playhead = self.playhead_estimate()
        if playhead is None:
            return None
        if self.state is None or self.queue_end is None:
            return "start"
        if self.queue_end < playhead + self.config.margin_samples // 2:
            return "start"  # fell behind the playhead: resynchronise, crossfading
        if self.pending_transition:
            return "transition"
        if self.queue_end < playhead + self.config.lead_samples:
            return "continue"
        return None

    def next_chunk(self) -> AudioChunk | None:
        """Generate the chunk that is due, if any, and advance the session."""
        reason = self.next_reason()
        if reason is None:
            return None
        playhead = self.playhead_estimate()
        assert playhead is not None
        frames = self.config.chunk_samples
        if reason == "continue":
            assert self.queue_end is not None
            start, crossfade = self.queue_end, 0
        else:
            crossfade = self.config.crossfade_samples
            frames += crossfade
            # New material must reach audio_out before the playhead does: the
            # margin covers transport and jitter, the estimate the generation.
            start = playhead + self.config.margin_samples + self._expected_generation(frames)
            self.state = self.generator.start(self.condition, self.seed, start, self.state)
            self.pending_transition = False
        began = time.perf_counter()
        generated, self.state = self.generator.generate(self.state, self.condition, frames)
        spent = time.perf_counter() - began
        if generated.audio.shape != (frames, self.generator.channels):
            raise RuntimeError(
                f"generator returned audio of shape {generated.audio.shape}, "
                f"expected {(frames, self.generator.channels)}"
            )
        self.queue_end = start + frames
        self.generated_frames += frames
        self.generation_s += spent
        per_frame = spent / frames
        self._seconds_per_frame = (per_frame if self._seconds_per_frame is None
                                   else 0.8 * self._seconds_per_frame + 0.2 * per_frame)
        chunk = AudioChunk(
            v=PROTOCOL_VERSION,
            room=self.room,
            seq=self.seq,
            start_sample=start,
            sample_rate=self.generator.sample_rate,
            audio=Array.from_numpy(generated.audio),
            crossfade=crossfade,
            artwork_id=self.view.artwork_id if self.view.state == "artwork" else None,
            generation_s=spent,
            reason=reason,
            notes=Array.from_numpy(generated.notes) if len(generated.notes) else None,
        )
        self.log_event(
            "chunk", seq=self.seq, start_sample=start, frames=frames, crossfade=crossfade,
            reason=reason, artwork_id=chunk.artwork_id, generation_s=round(spent, 6),
            playhead=playhead,
        )
        self.seq += 1
        return chunk

    def _expected_generation(self, frames: int) -> int:
        """Frames of timeline that pass while ``frames`` are generated (with 50 % slack)."""
        if self._seconds_per_frame is None:
            return 0
        return int(1.5 * self._seconds_per_frame * frames * self.generator.sample_rate)

    @property
    def realtime_factor(self) -> float:
        """Seconds of audio generated per second spent generating, so far."""
        if self.generation_s <= 0.0:
            return float("inf")
        return self.generated_frames / self.generator.sample_rate / self.generation_s

    # -- conditioning -------------------------------------------------------

    def _condition_for(self, view: ArtworkView) -> Any:
        key = view_key(view)
        if key not in self._conditions:
            condition = self.generator.prepare(view)
            self._conditions[key] = condition
            self.log_event(
                "decisions", artwork_id=view.artwork_id, state=view.state,
                decisions=self.generator.describe(condition),
                features={k: round(v, 4) for k, v in view.features.items()},
            )
        return self._conditions[key]


def render_offline(
    generator: Generator, view: ArtworkView, seconds: float, seed: int = 0, block_s: float = 0.5
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Render ``seconds`` of one artwork without the network: audio, notes, decisions.

    Uses the same generator calls as a room session, block by block; notes'
    start offsets are made absolute (frames from the start of the file).
    """
    condition = generator.prepare(view)
    state = generator.start(condition, seed, 0, None)
    total = round(seconds * generator.sample_rate)
    block = max(1, round(block_s * generator.sample_rate))
    audio_parts, note_parts = [], []
    position = 0
    while position < total:
        frames = min(block, total - position)
        generated, state = generator.generate(state, condition, frames)
        audio_parts.append(generated.audio)
        if len(generated.notes):
            notes = generated.notes.copy()
            notes[:, 0] += position
            note_parts.append(notes)
        position += frames
    audio = np.concatenate(audio_parts) if audio_parts else np.zeros((0, generator.channels),
                                                                       np.float32)
    notes = np.concatenate(note_parts) if note_parts else np.zeros((0, 6), np.int32)
    return audio, notes, generator.describe(condition)
