"""The timeline jitter buffer: chunks in, a gap-free sample stream out.

A :class:`TimelineBuffer` is a preallocated ring addressed by *absolute*
timeline sample (``ring[t % capacity]``). The network thread splices chunks
into it with :meth:`TimelineBuffer.write_chunk`; the audio callback pulls
blocks with :meth:`TimelineBuffer.read_into`. Between the two:

- **Continuations** (``start == buffered_until``, no crossfade) join sample
  exactly.
- **Replacements** (``start < buffered_until``) crossfade equal-power over
  their first ``crossfade`` frames from what is queued, replace it from there
  on, and become the end of the queue (material queued after them is
  discarded). Where the queued material ends inside the crossfade region the
  curve is compressed to the overlap, so there is no step at its end; a
  replacement that overwrites queued material with less than
  ``min_splice_frames`` of crossfade gets that much, to avoid a click.
- **Late frames**: the part of a chunk before ``playhead + guard`` (guard = 2
  blocks) that lies on queued material is dropped and counted, because the
  callback may be reading it; frames before the playhead are always late.
- **Gaps**: a chunk that starts after ``buffered_until`` leaves a hole. The
  reader plays to the hole, then jumps over it (the playhead only ever moves
  over real material) with the same hold-and-crossfade as a resume.
- **Too early**: a chunk that starts further ahead than the ring can hold
  (``capacity`` frames past the first unplayed frame, or past the playhead
  while the queue is dry) is refused whole (kind ``early``, counted in
  ``early_chunks``, its frames in ``overflow_frames``), never jumped to: one
  spoofed chunk at sample 2**52 made the playhead jump there for good, and
  the engine refused every real clock of the room after it. Only the first
  chunk of a start (nothing accepted yet) sets where playback begins, at any
  distance: a restarted audio_out takes up the engine's timeline, which
  counts samples since the engine started (~4e11 after 90 days at 48 kHz).
- **Out of range**: a chunk that ends past ``max_sample`` (by default
  :data:`ground.protocol.MAX_PLAYHEAD`, the largest playhead a clock may
  report) is refused whole (kind ``out-of-range``, ``out_of_range_chunks``):
  playing it would leave the playhead where no clock can say it.
- **Starvation**: when the queue runs dry the reader plays the hold of its
  :class:`~audio_out.hold.HoldSynth` (a loop of the last second or so it
  played, decaying for ``hold_frames``, then fading to silence over
  ``fade_frames``; see :mod:`audio_out.hold`). After each write the writer
  lets the synth plan the loop for the new queue end. When material returns,
  a ``resume_frames`` equal-power crossfade leads from the hold (or silence)
  into it. The playhead stays where the real material ended.

Concurrency: one writer thread, one reader (the audio callback), no lock. The
writer publishes the queue layout (``buffered_until``, a *busy* fence and the
pending gaps) as one immutable tuple, so the reader always sees a consistent
layout with a single attribute load. Before the writer modifies ring frames
or gaps that are already published, it raises the fence to the first frame it
will touch and waits (sleeping, never spinning the callback) until the reader
is outside ``read_into``; every later read stops at the fence. A reader that
catches up with the fence simply holds, as in starvation, which only happens
if the writer is descheduled for longer than the guard. This is the
"writer may wait for the reader, the reader never waits" rule: a
``threading.Lock`` would be simpler, but the callback would block whenever
the writer were preempted while holding it (and CPython preempts every 5 ms).
The fence is correct because attribute loads and stores are sequentially
consistent under CPython's interpreter lock.

The read path works only on preallocated arrays with ``out=`` ufuncs: no
array temporaries, no logging, no I/O.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from audio_out.crossfade import equal_power_gains
from audio_out.hold import HoldSynth
from ground.protocol import MAX_PLAYHEAD

State = Literal["starting", "playing", "holding", "silent"]
SpliceKind = Literal["append", "replace", "gap", "late", "refused", "early", "out-of-range"]

#: A fence position beyond any timeline sample: "nothing is being written".
_NO_FENCE = 1 << 62
#: Pending gaps the layout can describe; a chunk that would open one more is refused.
MAX_PENDING_GAPS = 16


@dataclass(frozen=True)
class SpliceResult:
    """What :meth:`TimelineBuffer.write_chunk` did with one chunk.

    ``written_from``/``written_to`` bound the frames that went into the ring
    (timeline samples); ``crossfade_frames`` is the crossfade actually applied
    at ``written_from``; ``replaced_frames`` counts queued frames (holes
    included) that the chunk overwrote or discarded.
    """

    kind: SpliceKind
    start_sample: int
    written_from: int
    written_to: int
    crossfade_frames: int
    late_frames: int
    overflow_frames: int
    replaced_frames: int

    @property
    def accepted(self) -> bool:
        """True when some of the chunk went into the timeline."""
        return self.written_to > self.written_from


class TimelineBuffer:
    """Timeline-addressed ring with splicing and lock-free SPSC access.

    When starved it plays :attr:`hold` (a :class:`~audio_out.hold.HoldSynth`)
    and crossfades back into the material when it returns.
    """

    def __init__(
        self,
        capacity_frames: int,
        channels: int,
        block_frames: int,
        *,
        max_block_frames: int = 8192,
        hold_frames: int = 8 * 48000,
        fade_frames: int = 3 * 48000,
        resume_frames: int = 2400,
        loop_frames: int = 72000,
        loop_crossfade_frames: int = 4800,
        hold_decay_db: float = 6.0,
        min_splice_frames: int = 64,
        loop_search_frames: int = 2400,
        max_sample: int = MAX_PLAYHEAD,
    ) -> None:
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if block_frames < 1 or max_block_frames < block_frames:
            raise ValueError(
                f"block_frames must be in [1, max_block_frames={max_block_frames}], "
                f"got {block_frames}"
            )
        if capacity_frames < 4 * max_block_frames:
            raise ValueError(
                f"capacity_frames must be >= 4 * max_block_frames ({4 * max_block_frames}), "
                f"got {capacity_frames}"
            )
        if fade_frames < 1 or resume_frames < 1 or hold_frames < 0:
            raise ValueError(
                f"fade_frames and resume_frames must be >= 1 and hold_frames >= 0, got "
                f"{fade_frames}, {resume_frames}, {hold_frames}"
            )
        self.capacity_frames = int(capacity_frames)
        #: A chunk ending past this timeline sample is refused (``out-of-range``).
        self.max_sample = int(max_sample)
        self.channels = int(channels)
        self.block_frames = int(block_frames)
        self.max_block_frames = int(max_block_frames)
        self.guard_frames = 2 * self.block_frames
        self.resume_frames = int(resume_frames)
        self.min_splice_frames = int(min_splice_frames)
        #: What plays while the queue is dry (reader), and its loop planning (writer).
        self.hold = HoldSynth(
            self.channels, self.max_block_frames, hold_frames=hold_frames,
            fade_frames=fade_frames, loop_frames=loop_frames,
            loop_crossfade_frames=loop_crossfade_frames, hold_decay_db=hold_decay_db,
            loop_search_frames=loop_search_frames,
        )

        ch = self.channels
        self._ring = np.zeros((self.capacity_frames, ch), np.float32)
        # --- published by the writer, read by the reader (one immutable tuple) ---
        # (buffered_until, fence, gap_base, gap_froms, gap_tos)
        self._layout: tuple[int, int, int, tuple[int, ...], tuple[int, ...]] = (
            0, _NO_FENCE, 0, (), ()
        )
        # --- published by the reader ---
        self._playhead = 0
        #: Timeline sample of the last block's first frame (after any hole jumped at its start).
        self.block_start = 0
        self._gap_head = 0  # absolute count of gaps jumped over
        self._in_read = False
        self._state: State = "starting"
        # --- counters (writer-owned / reader-owned, plain ints) ---
        self.late_frames = 0
        self.overflow_frames = 0
        self.refused_chunks = 0  # would open one gap too many
        self.early_chunks = 0  # started further ahead than the ring holds
        self.out_of_range_chunks = 0  # ended past max_sample
        self.underflows = 0
        self.gaps = 0
        self.held_frames = 0
        self.silent_frames = 0
        self.played_frames = 0  # real timeline frames played
        self.frames_out = 0  # frames output since the first real frame (holds included)
        self.resumes = 0

        # --- reader-private preallocated state: the resume crossfade ---
        rfo, rfi = equal_power_gains(self.resume_frames)
        self._rfo2 = rfo[:, None].copy()
        self._rfi2 = rfi[:, None].copy()
        self._resume_mix = np.zeros((min(self.max_block_frames, self.resume_frames), ch),
                                    np.float32)
        self._resume_pos = 0
        self._resuming = False
        self._holding = False  # a hold signal is live (holding, silent or resuming)
        self._hist_done = 0  # frames of the current block already in the hold's history

        self._first_written = -1  # first timeline sample ever written (writer-owned)
        self._writer_lock = threading.Lock()  # serialises writers; never taken by the reader

    # ------------------------------------------------------------------ views
    @property
    def playhead(self) -> int:
        """The timeline sample that plays next."""
        return self._playhead

    @property
    def buffered_until(self) -> int:
        """End (exclusive) of the queued material."""
        return self._layout[0]

    @property
    def state(self) -> State:
        """'starting' before any material, then 'playing', 'holding' or 'silent'."""
        return self._state

    @property
    def hold_seam_correlation(self) -> float:
        """Correlation across the loop seam of the last hold (reports, tests)."""
        return self.hold.seam_correlation

    @property
    def hold_loop_period(self) -> int:
        """Loop period of the last hold, in frames."""
        return self.hold.loop_period

    # ----------------------------------------------------------------- writer
    def write_chunk(self, start_sample: int, audio: np.ndarray, crossfade: int = 0) -> SpliceResult:
        """Splice ``audio`` (float32 (frames, channels)) at ``start_sample`` (writer thread).

        See the module docstring for the rules; returns what was kept, dropped
        and crossfaded. Raises ``ValueError`` for a malformed chunk.
        """
        audio = np.asarray(audio)
        if audio.ndim != 2 or audio.shape[1] != self.channels:
            raise ValueError(
                f"chunk audio must be (frames, {self.channels}), got shape {audio.shape}"
            )
        if audio.dtype != np.float32:
            audio = audio.astype(np.float32)
        frames = audio.shape[0]
        if not 0 <= crossfade <= frames:
            raise ValueError(f"crossfade must be in [0, {frames}] frames, got {crossfade}")
        with self._writer_lock:
            result = self._write(int(start_sample), audio, int(crossfade))
            if result.accepted:
                if self._first_written < 0:
                    self._first_written = result.written_from
                self._plan_hold_loop()
            return result

    def _plan_hold_loop(self) -> None:
        """Let the hold plan its loop for a starvation at the queue's end (writer thread).

        Only when the loop's window is real material the history will match:
        written, inside the ring, and without a hole.
        """
        end, _, base, _, tos = self._layout
        size = self.hold.loop_frames
        if (size > self.capacity_frames or self._first_written < 0
                or end - size < self._first_written):
            return
        if any(t > end - size for t in tos[self._gap_head - base :]):
            return  # a hole inside the window: the history will not match the ring
        self.hold.plan_loop(end, self._ring_view_copy)

    def _safe_start(self, playhead: int, end: int) -> int:
        # Published material within the guard may be being read; frames past
        # the end are unpublished and always safe; the past is always late.
        if end <= playhead:
            return playhead
        return min(playhead + self.guard_frames, end)

    def _write(self, s: int, audio: np.ndarray, crossfade: int) -> SpliceResult:
        frames = audio.shape[0]
        chunk_end = s + frames
        if chunk_end > self.max_sample:
            self.out_of_range_chunks += 1
            return SpliceResult("out-of-range", s, s, s, 0, 0, 0, 0)
        end0, _, base0, froms0, tos0 = self._layout
        # 1. Fence: nothing before the guessed first frame (or the gap it lands in) moves.
        s_guess = max(s, self._safe_start(self._playhead, end0))
        fence = s_guess
        for f, t in zip(froms0, tos0, strict=True):
            if f < s_guess < t:
                fence = min(fence, f)
        self._layout = (end0, fence, base0, froms0, tos0)
        self._wait_for_reader()
        # 2. Exact positions: the reader is now parked at or before the fence.
        p = self._playhead
        head = self._gap_head
        pending = [(f, t) for f, t in list(zip(froms0, tos0, strict=True))[head - base0:]]
        s1 = max(s, self._safe_start(p, end0))
        # Each frame of the chunk is late [s, s + late), written [s1, end_w) or
        # overflow [max(end_w, s + late), chunk_end). A chunk wholly behind the playhead
        # (placed on another audio_out's timeline: two machines configured as one room)
        # has s1 past its end, and overflow counted from s1 went negative.
        late = min(s1, chunk_end) - s
        # The ring may hold `capacity` frames from the first unplayed material on
        # (a hole needs no storage); beyond that a write would alias unplayed audio.
        # Dry, the playhead waits where the material ended, and the ring holds `capacity`
        # from there: a chunk wholly beyond is too early, not a gap to jump to. Only a
        # start's first chunk (nothing accepted yet) may set where playback begins.
        if end0 <= p:
            first_unplayed = s1 if self._first_written < 0 else p
        elif pending and pending[0][0] == p:
            first_unplayed = pending[0][1]
        else:
            first_unplayed = p
        end_w = min(chunk_end, first_unplayed + self.capacity_frames)
        overflow = chunk_end - max(end_w, s + late)
        self.late_frames += late
        if s1 >= first_unplayed + self.capacity_frames:
            self.early_chunks += 1
            self.overflow_frames += overflow
            self._layout = (end0, _NO_FENCE, base0, froms0, tos0)
            return SpliceResult("early", s, s1, s1, 0, late, overflow, 0)
        if s1 >= end_w:
            self.overflow_frames += overflow
            self._layout = (end0, _NO_FENCE, base0, froms0, tos0)
            return SpliceResult("late", s, s1, s1, 0, late, overflow, 0)
        hole = next((i for i, (f, t) in enumerate(pending) if f < s1 < t), None)
        in_material = p <= s1 < end0 and not any(f <= s1 < t for f, t in pending)
        if s1 > end0 and len(pending) >= MAX_PENDING_GAPS:
            self.refused_chunks += 1
            self._layout = (end0, _NO_FENCE, base0, froms0, tos0)
            return SpliceResult("refused", s, s1, s1, 0, late, 0, 0)
        self.overflow_frames += overflow
        # Let the reader on up to the first frame we actually touch.
        touch = s1 if hole is None else pending[hole][0]
        self._layout = (end0, max(fence, touch), base0, froms0, tos0)

        # 3. Crossfade length: the remaining part of the requested region, over
        # the queued material contiguous from s1 only.
        xf = 0
        if in_material:
            contiguous_end = min([end0] + [f for f, _ in pending if f > s1])
            room = min(contiguous_end, end_w) - s1
            xf = max(0, min(s + crossfade - s1, room))
            if xf < self.min_splice_frames:
                xf = min(self.min_splice_frames, room)
        new = audio[s1 - s : end_w - s]
        if xf:
            fade_out, fade_in = equal_power_gains(xf)
            old = self._ring_view_copy(s1, xf)
            self._ring_write(s1, old * fade_out[:, None] + new[:xf] * fade_in[:, None])
        self._ring_write(s1 + xf, new[xf:])

        # 4. New layout: a replacement truncates the queue (and the gaps after
        # it); a chunk after the end opens a gap.
        if s1 < end0:
            kind: SpliceKind = "replace"
            replaced = end0 - s1
            kept = [(f, t) for f, t in pending if f < s1]
            if hole is not None:
                kept[-1] = (kept[-1][0], s1)
        else:
            kind = "append" if s1 == end0 else "gap"
            replaced = 0
            kept = pending + ([(end0, s1)] if s1 > end0 else [])
        self._layout = (
            end_w,
            _NO_FENCE,
            head,
            tuple(f for f, _ in kept),
            tuple(t for _, t in kept),
        )
        return SpliceResult(kind, s, s1, end_w, xf, late, overflow, replaced)

    def _wait_for_reader(self, timeout_s: float = 0.1) -> None:
        # Any read that started before the fence was published ends within one
        # callback; a stopped stream never enters read_into, so this is short.
        deadline = time.monotonic() + timeout_s
        while self._in_read and time.monotonic() < deadline:
            time.sleep(0)

    def _ring_view_copy(self, t: int, n: int) -> np.ndarray:
        out = np.empty((n, self.channels), np.float32)
        self._ring_read(t, out)
        return out

    def _ring_write(self, t: int, data: np.ndarray) -> None:
        n = data.shape[0]
        i = t % self.capacity_frames
        first = min(n, self.capacity_frames - i)
        self._ring[i : i + first] = data[:first]
        if first < n:
            self._ring[: n - first] = data[first:]

    # ----------------------------------------------------------------- reader
    def _ring_read(self, t: int, dst: np.ndarray) -> None:
        n = dst.shape[0]
        i = t % self.capacity_frames
        first = n if i + n <= self.capacity_frames else self.capacity_frames - i
        dst[:first] = self._ring[i : i + first]
        if first < n:
            dst[first:] = self._ring[: n - first]

    def read_into(self, out: np.ndarray) -> int:
        """Fill ``out`` (float32 (frames, channels)) in place; return real frames played.

        Audio-callback thread only. Never blocks and allocates no arrays; any
        block size from 1 to ``max_block_frames`` works.
        """
        n = out.shape[0]
        if n > self.max_block_frames:
            raise ValueError(
                f"block of {n} frames exceeds max_block_frames={self.max_block_frames}"
            )
        self._in_read = True
        try:
            return self._read(out, n)
        finally:
            self._in_read = False

    def _read(self, out: np.ndarray, n: int) -> int:
        pos = 0
        real = 0
        self._hist_done = 0
        p = self._playhead
        self.block_start = p  # a block that opens with a hold: where the material stopped
        while pos < n:
            end, fence, base, froms, tos = self._layout
            limit = end if end < fence else fence
            gi = self._gap_head - base
            gap_from = froms[gi] if gi < len(froms) else -1
            if 0 <= gap_from < limit:
                limit = gap_from
            if p < limit:
                k = limit - p
                if k > n - pos:
                    k = n - pos
                self._ring_read(p, out[pos : pos + k])
                if pos == 0:
                    self.block_start = p  # past a hole the block may have opened on
                if self._holding:  # material after a hold or a gap: crossfade into it
                    if not self._resuming:
                        self._begin_resume()
                    self._mix_resume(out, pos, k)
                elif self._state != "playing":
                    # first material: as it is here; a start mid-piece is faded in by
                    # the player (StartFade), which also knows about sound cards
                    self._state = "playing"
                p += k
                self._playhead = p
                pos += k
                real += k
                continue
            if gap_from == p and fence > gap_from:
                # Jump over a hole: the playhead only moves over real material.
                self._gap_head += 1
                p = tos[gi]
                self._playhead = p
                if self._state != "starting":
                    self.gaps += 1
                    if self._state == "playing":  # else the hold is already live
                        self._enter_hold(out, pos)
                    self._begin_resume()
                continue
            # Dry.
            if self._state == "starting":
                out[pos:].fill(0.0)
            else:
                if self._state == "playing":
                    self.underflows += 1
                    self._enter_hold(out, pos)
                self._resuming = False
                self._hold_into(out[pos:n])
            break
        if self._state != "starting":
            self.played_frames += real
            self.frames_out += n
            self.hold.record(out[self._hist_done : n])
        return real

    # ---------------------------------------------------- hold / resume (reader)
    def _enter_hold(self, out: np.ndarray, pos: int) -> None:
        """Start holding from the last frames played (including out[:pos])."""
        if self._hist_done < pos:
            self.hold.record(out[self._hist_done : pos])
            self._hist_done = pos
        # An unfinished resume keeps counting the episode's hold budget.
        looping = self.hold.enter(self._playhead, new_episode=not self._holding)
        self._holding = True
        self._state = "holding" if looping else "silent"

    def _hold_into(self, dst: np.ndarray) -> None:
        """Write the next ``len(dst)`` frames of the hold into ``dst``, counting them."""
        audible = self.hold.render(dst)
        if not self._resuming:
            k = dst.shape[0]
            self.held_frames += audible
            self.silent_frames += k - audible
            self._state = "silent" if self.hold.finished else "holding"

    def _begin_resume(self) -> None:
        self._resuming = True
        self._resume_pos = 0
        self.resumes += 1

    def _mix_resume(self, out: np.ndarray, pos: int, k: int) -> None:
        """Crossfade the hold (or silence) into the real frames out[pos:pos+k]."""
        r = self._resume_pos
        m = min(k, self.resume_frames - r)
        mix = self._resume_mix[:m]
        self._hold_into(mix)
        real = out[pos : pos + m]
        np.multiply(real, self._rfi2[r : r + m], out=real)
        np.multiply(mix, self._rfo2[r : r + m], out=mix)
        np.add(real, mix, out=real)
        self._resume_pos = r + m
        self._state = "playing"
        if self._resume_pos >= self.resume_frames:
            self._resuming = False
            self._holding = False
            self.hold.end_episode()

    def __repr__(self) -> str:
        return (
            f"TimelineBuffer(playhead={self.playhead}, buffered_until={self.buffered_until}, "
            f"state={self.state!r}, underflows={self.underflows})"
        )
