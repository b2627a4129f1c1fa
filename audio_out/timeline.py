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
- **Starvation**: when the queue runs dry the reader loops the last second or
  so of what it *played* (from a private history ring, so it is continuous
  with the output whatever that was), entering the loop through a short
  time-mirrored crossfade and joining the loop's ends with a crossfade; the
  loop decays gently for ``hold_frames``, then fades to silence over
  ``fade_frames``. Both crossfades are *correlation-aware*: equal-power for
  unrelated material, sliding to equal-gain as the two sides correlate, so
  tonal material neither swells (+3 dB) nor dips at the seam. The loop
  length is chosen so the seam joins material of similar phase: after each
  write the writer searches the queue's last ``loop_frames`` for the loop
  period (within ``loop_search_frames`` of the longest) whose end best
  correlates with its start, and publishes it for the queue's end; the
  reader uses it when it starves exactly there. When material returns, a ``resume_frames``
  equal-power crossfade leads from the hold (or silence) into it. The playhead
  stays where the real material ended.

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

import math
import threading
import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from audio_out.crossfade import (
    correct_for_correlation,
    correlation,
    equal_power_gains,
    fill_equal_power_gains,
)

State = Literal["starting", "playing", "holding", "silent"]
SpliceKind = Literal["append", "replace", "gap", "late", "refused"]

#: A fence position beyond any timeline sample: "nothing is being written".
_NO_FENCE = 1 << 62
#: Pending gaps the layout can describe; a chunk that would open one more is refused.
MAX_PENDING_GAPS = 16
#: Smallest hold loop (in frames) worth playing; shorter history holds silence.
_MIN_LOOP_FRAMES = 64


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
    """Timeline-addressed ring with splicing, hold on starvation and lock-free SPSC access."""

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
        self.channels = int(channels)
        self.block_frames = int(block_frames)
        self.max_block_frames = int(max_block_frames)
        self.guard_frames = 2 * self.block_frames
        self.hold_frames = int(hold_frames)
        self.fade_frames = int(fade_frames)
        self.resume_frames = int(resume_frames)
        self.loop_frames = max(int(loop_frames), _MIN_LOOP_FRAMES)
        self.loop_crossfade_frames = max(1, min(int(loop_crossfade_frames), self.loop_frames // 4))
        self.min_splice_frames = int(min_splice_frames)
        self.loop_search_frames = max(0, int(loop_search_frames))
        # exp(-decay * h) loses hold_decay_db over the hold (gentle, so the hold
        # does not sound like a fade-out until the real fade starts).
        self._decay = (math.log(10.0) / 20.0) * hold_decay_db / max(self.hold_frames, 1)

        ch = self.channels
        self._ring = np.zeros((self.capacity_frames, ch), np.float32)
        # --- published by the writer, read by the reader (one immutable tuple) ---
        # (buffered_until, fence, gap_base, gap_froms, gap_tos)
        self._layout: tuple[int, int, int, tuple[int, ...], tuple[int, ...]] = (
            0, _NO_FENCE, 0, (), ()
        )
        # --- published by the reader ---
        self._playhead = 0
        self._gap_head = 0  # absolute count of gaps jumped over
        self._in_read = False
        self._state: State = "starting"
        # --- counters (writer-owned / reader-owned, plain ints) ---
        self.late_frames = 0
        self.overflow_frames = 0
        self.refused_chunks = 0
        self.underflows = 0
        self.gaps = 0
        self.held_frames = 0
        self.silent_frames = 0
        self.played_frames = 0  # real timeline frames played
        self.frames_out = 0  # frames output since the first real frame (holds included)
        self.resumes = 0

        # --- reader-private preallocated state ---
        big = max(self.max_block_frames, self.loop_crossfade_frames, self.resume_frames)
        self._ramp = np.arange(big, dtype=np.float32)
        self._hist = np.zeros((self.loop_frames, ch), np.float32)
        self._hist_written = 0
        self._hist_valid = 0
        self._hold_src = np.zeros((self.loop_frames, ch), np.float32)
        self._entry = np.zeros((self.loop_crossfade_frames, ch), np.float32)
        self._xfo = np.zeros(self.loop_crossfade_frames, np.float32)
        self._xfi = np.zeros(self.loop_crossfade_frames, np.float32)
        self._xfo2 = self._xfo[:, None]  # column views made once, sliced on the hot path
        self._xfi2 = self._xfi[:, None]
        rfo, rfi = equal_power_gains(self.resume_frames)
        self._rfo2 = rfo[:, None].copy()
        self._rfi2 = rfi[:, None].copy()
        self._mix = np.zeros((big, ch), np.float32)
        self._env = np.zeros((big, 1), np.float32)
        self._env1 = self._env[:, 0]
        self._hold_len = 0  # S: frames of history in the hold source; 0 = silence
        self._hold_x = 0  # loop crossfade frames
        self._hold_m = 0  # loop period
        self._hold_u0 = 0  # where in the loop the entry crossfade lands
        self._hold_h = 0  # frames of hold produced since entry
        self._hold_fade_at = 0
        self._starved = 0  # frames starved in this episode (survives an unfinished resume)
        self._resume_pos = 0
        self._resuming = False
        self._holding = False  # a hold signal is live (holding, silent or resuming)
        self._hist_done = 0  # frames of the current block already in the history

        self._xfs = np.zeros(self.loop_crossfade_frames, np.float32)
        self.hold_seam_correlation = 0.0  # of the last hold (reports, tests)
        self.hold_loop_period = 0
        # --- published by the writer: (queue end it was planned for, loop period) ---
        self._loop_hint: tuple[int, int, int] = (-1, 0, 0)  # (end, period, entry offset)
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
    def queued_frames(self) -> int:
        """Frames of material (holes included) between the playhead and the queue end."""
        return max(0, self._layout[0] - self._playhead)

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
        """Pick the hold loop's period for a starvation at the queue's end (writer thread).

        Normalised cross-correlation (via FFT) of the loop's first
        ``loop_crossfade_frames`` with every candidate tail position within
        ``loop_search_frames``; the seam then joins like with like.
        """
        end, _, base, froms, tos = self._layout
        size = self.loop_frames
        x = self.loop_crossfade_frames
        w = min(self.loop_search_frames, size - 3 * x)
        if (w <= 0 or size > self.capacity_frames or self._first_written < 0
                or end - size < self._first_written):
            return
        if any(t > end - size for t in tos[self._gap_head - base :]):
            return  # a hole inside the window: the history will not match the ring
        m_hi = size - x
        # Only the loop's head and the candidate tail region matter; mono is enough.
        head = self._ring_view_copy(end - size, x).sum(axis=1).astype(np.float64)
        tail = self._ring_view_copy(end - size + m_hi - w, w + x).sum(axis=1).astype(np.float64)
        # candidate seams: tail[j : j + x] for j = 0..w (loop period m_hi - w + j)
        nfft = 1 << int(math.ceil(math.log2(tail.shape[0] + x)))
        corr = np.fft.irfft(np.fft.rfft(tail, nfft) * np.conj(np.fft.rfft(head, nfft)), nfft)
        corr = corr[: w + 1]
        energy = np.concatenate([[0.0], np.cumsum(tail * tail)])
        window_energy = energy[x : x + w + 1] - energy[: w + 1]
        head_energy = float(head @ head)
        if head_energy <= 1e-12:
            return
        rho = corr / np.sqrt(head_energy * np.maximum(window_energy, 1e-12))
        best = int(np.argmax(rho))
        # Entry point: where the loop, entered at u0, best matches the
        # time-mirror of the last frames the hold will cross from.
        mirror = self._ring_view_copy(end - x - 1, x).sum(axis=1).astype(np.float64)[::-1]
        region = self._ring_view_copy(end - size + x, w + x).sum(axis=1).astype(np.float64)
        corr = np.fft.irfft(np.fft.rfft(region, nfft) * np.conj(np.fft.rfft(mirror, nfft)),
                            nfft)[: w + 1]
        energy = np.concatenate([[0.0], np.cumsum(region * region)])
        window_energy = energy[x : x + w + 1] - energy[: w + 1]
        mirror_energy = max(float(mirror @ mirror), 1e-12)
        entry = int(np.argmax(corr / np.sqrt(mirror_energy * np.maximum(window_energy, 1e-12))))
        self._loop_hint = (end, m_hi - w + best, x + entry)

    def _safe_start(self, playhead: int, end: int) -> int:
        # Published material within the guard may be being read; frames past
        # the end are unpublished and always safe; the past is always late.
        if end <= playhead:
            return playhead
        return min(playhead + self.guard_frames, end)

    def _write(self, s: int, audio: np.ndarray, crossfade: int) -> SpliceResult:
        frames = audio.shape[0]
        chunk_end = s + frames
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
        late = min(s1, chunk_end) - s
        # The ring may hold `capacity` frames from the first unplayed material on
        # (a hole needs no storage); beyond that a write would alias unplayed audio.
        if end0 <= p:
            first_unplayed = s1
        elif pending and pending[0][0] == p:
            first_unplayed = pending[0][1]
        else:
            first_unplayed = p
        end_w = min(chunk_end, first_unplayed + self.capacity_frames)
        overflow = chunk_end - max(end_w, s1)
        self.late_frames += late
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
                if self._holding:  # material after a hold or a gap: crossfade into it
                    if not self._resuming:
                        self._begin_resume()
                    self._mix_resume(out, pos, k)
                elif self._state != "playing":
                    self._state = "playing"  # first material: start as is, no fade
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
            self._append_history(out[self._hist_done : n])
        return real

    # ---------------------------------------------------- hold / resume (reader)
    def _append_history(self, block: np.ndarray) -> None:
        n = block.shape[0]
        if n == 0:
            return
        size = self.loop_frames
        if n >= size:
            block = block[n - size :]
            n = size
        i = self._hist_written % size
        first = min(n, size - i)
        self._hist[i : i + first] = block[:first]
        if first < n:
            self._hist[: n - first] = block[first:]
        self._hist_written += n
        self._hist_valid = min(size, self._hist_valid + n)

    def _enter_hold(self, out: np.ndarray, pos: int) -> None:
        """Build a hold loop from the last frames played (including out[:pos])."""
        if self._hist_done < pos:
            self._append_history(out[self._hist_done : pos])
            self._hist_done = pos
        if not self._holding:  # a new episode; an unfinished resume keeps counting
            self._starved = 0
        self._holding = True
        size = self.loop_frames
        s_len = self._hist_valid
        x = min(self.loop_crossfade_frames, s_len // 4)
        self._hold_h = 0
        self._hold_fade_at = max(0, self.hold_frames - self._starved)
        if s_len < _MIN_LOOP_FRAMES or x < 2:
            self._hold_len = 0
            self._state = "silent"
            return
        src = self._hold_src
        start = (self._hist_written - s_len) % size
        first = min(s_len, size - start)
        src[:first] = self._hist[start : start + first]
        if first < s_len:
            src[first:s_len] = self._hist[: s_len - first]
        m = s_len - x
        u0 = 0
        end_planned, period, offset = self._loop_hint
        if (end_planned == self._playhead and s_len == size and x <= period <= m
                and x <= offset <= period - x):
            # The writer found a seam and an entry of similar phase for this very end.
            m, u0 = period, offset
        fo, fi, mix = self._xfo2[:x], self._xfi2[:x], self._mix[:x]
        # Entry: the time-mirror of the last frames (continuous with the last
        # sample played) fades out while the loop's start fades in. The mirror
        # is copied first so the correlation works on contiguous memory.
        entry = self._entry[:x]
        entry[...] = src[s_len - 1 - x : s_len - 1][::-1]
        fill_equal_power_gains(x, self._xfo, self._xfi, self._ramp)
        correct_for_correlation(self._xfo[:x], self._xfi[:x],
                                correlation(entry, src[u0 : u0 + x]), self._xfs[:x])
        np.multiply(entry, fo, out=entry)
        np.multiply(src[u0 : u0 + x], fi, out=mix)
        np.add(entry, mix, out=entry)
        # Loop seam: the loop's first x frames crossfade from its tail, so
        # src[m-1] -> src[0] is continuous when the loop wraps.
        rho = correlation(src[m : m + x], src[:x])
        fill_equal_power_gains(x, self._xfo, self._xfi, self._ramp)
        correct_for_correlation(self._xfo[:x], self._xfi[:x], rho, self._xfs[:x])
        np.multiply(src[:x], fi, out=src[:x])
        np.multiply(src[m : m + x], fo, out=mix)
        np.add(src[:x], mix, out=src[:x])
        self.hold_seam_correlation = rho
        self.hold_loop_period = m
        self._hold_len, self._hold_x, self._hold_m, self._hold_u0 = s_len, x, m, u0
        self._state = "holding"

    def _hold_into(self, dst: np.ndarray) -> None:
        """Write the next ``len(dst)`` frames of the hold signal into ``dst``."""
        k = dst.shape[0]
        h = self._hold_h
        total = self._hold_fade_at + self.fade_frames
        self._hold_h = h + k
        self._starved += k
        if self._hold_len == 0 or h >= total:
            dst.fill(0.0)
            if not self._resuming:
                self._state = "silent"
                self.silent_frames += k
            return
        x, m = self._hold_x, self._hold_m
        i = 0
        while i < k:
            hh = h + i
            if hh < x:
                c = min(k - i, x - hh)
                dst[i : i + c] = self._entry[hh : hh + c]
            else:
                u = (hh + self._hold_u0) % m
                c = min(k - i, m - u)
                dst[i : i + c] = self._hold_src[u : u + c]
            i += c
        self._envelope(h, k)
        np.multiply(dst, self._env[:k], out=dst)
        if not self._resuming:
            audible = min(k, total - h)
            self.held_frames += audible
            self.silent_frames += k - audible
            self._state = "holding" if h + k < total else "silent"

    def _envelope(self, h: int, k: int) -> None:
        """env[:k] = gentle exponential decay, then an equal-power fade to zero."""
        env, ramp = self._env1, self._ramp
        fade_at, fade = self._hold_fade_at, self.fade_frames
        a = min(k, max(0, fade_at - h))
        if a:
            np.add(ramp[:a], h, out=env[:a])
            np.multiply(env[:a], -self._decay, out=env[:a])
            np.exp(env[:a], out=env[:a])
        b = min(k, max(a, fade_at + fade - h))
        if b > a:
            g0 = math.exp(-self._decay * fade_at)
            seg = env[a:b]
            np.add(ramp[: b - a], h + a - fade_at + 0.5, out=seg)
            np.multiply(seg, math.pi / 2.0 / fade, out=seg)
            np.cos(seg, out=seg)
            np.multiply(seg, g0, out=seg)
        if k > b:
            env[b:k].fill(0.0)

    def _begin_resume(self) -> None:
        self._resuming = True
        self._resume_pos = 0
        self.resumes += 1

    def _mix_resume(self, out: np.ndarray, pos: int, k: int) -> None:
        """Crossfade the hold (or silence) into the real frames out[pos:pos+k]."""
        r = self._resume_pos
        m = min(k, self.resume_frames - r)
        mix = self._mix[:m]
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
            self._starved = 0

    def __repr__(self) -> str:
        return (
            f"TimelineBuffer(playhead={self.playhead}, buffered_until={self.buffered_until}, "
            f"state={self.state!r}, underflows={self.underflows})"
        )
