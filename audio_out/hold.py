"""The hold: what the timeline plays while it is starved.

When the queue of a :class:`~audio_out.timeline.TimelineBuffer` runs dry, the
reader asks its :class:`HoldSynth` for sound. The synth loops the last second
or so of what was *played* (kept in a private history ring, so the loop is
continuous with the output whatever that was), entering the loop through a
short time-mirrored crossfade and joining the loop's ends with a crossfade;
the loop decays gently for ``hold_frames``, then fades to silence over
``fade_frames``. Both crossfades are *correlation-aware*: equal-power for
unrelated material, sliding to equal-gain as the two sides correlate, so
tonal material neither swells (+3 dB) nor dips at the seam.

The loop length is chosen so the seam joins material of similar phase: after
each write the writer thread calls :meth:`HoldSynth.plan_loop`, which searches
the queue's last ``loop_frames`` for the loop period (within
``loop_search_frames`` of the longest) whose end best correlates with its
start, and publishes it for the queue's end as one immutable tuple; the reader
uses it when it starves exactly there.

Threads: :meth:`HoldSynth.plan_loop` runs on the writer thread and may
allocate; everything else runs on the audio callback and works only on
arrays made in ``__init__`` with ``out=`` ufuncs.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from audio_out.crossfade import correct_for_correlation, correlation, fill_equal_power_gains

#: Smallest hold loop (in frames) worth playing; shorter history holds silence.
MIN_LOOP_FRAMES = 64


class HoldSynth:
    """Hold-loop synthesis for a starved timeline: history, loop search, decay and fade.

    ``max_block_frames`` bounds the blocks :meth:`render` is given.
    """

    def __init__(
        self,
        channels: int,
        max_block_frames: int,
        *,
        hold_frames: int,
        fade_frames: int,
        loop_frames: int,
        loop_crossfade_frames: int,
        hold_decay_db: float,
        loop_search_frames: int,
    ) -> None:
        self.hold_frames = int(hold_frames)
        self.fade_frames = int(fade_frames)
        self.loop_frames = max(int(loop_frames), MIN_LOOP_FRAMES)
        self.loop_crossfade_frames = max(1, min(int(loop_crossfade_frames), self.loop_frames // 4))
        self.loop_search_frames = max(0, int(loop_search_frames))
        # exp(-decay * h) loses hold_decay_db over the hold (gentle, so the hold
        # does not sound like a fade-out until the real fade starts).
        self._decay = (math.log(10.0) / 20.0) * hold_decay_db / max(self.hold_frames, 1)
        #: Correlation across the loop seam of the last hold (reports, tests).
        self.seam_correlation = 0.0
        #: Loop period of the last hold, in frames.
        self.loop_period = 0

        ch = int(channels)
        x = self.loop_crossfade_frames
        # --- history of the played output (reader) ---
        self._hist = np.zeros((self.loop_frames, ch), np.float32)
        self._hist_written = 0
        self._hist_valid = 0
        # --- the loop and its entry, built on entering a hold (reader) ---
        self._src = np.zeros((self.loop_frames, ch), np.float32)
        self._entry = np.zeros((x, ch), np.float32)
        self._mix = np.zeros((x, ch), np.float32)
        self._xfo = np.zeros(x, np.float32)
        self._xfi = np.zeros(x, np.float32)
        self._xfs = np.zeros(x, np.float32)
        self._xfo2 = self._xfo[:, None]  # column views made once, sliced on the hot path
        self._xfi2 = self._xfi[:, None]
        big = max(int(max_block_frames), x)
        self._ramp = np.arange(big, dtype=np.float32)
        self._env = np.zeros((big, 1), np.float32)
        self._env1 = self._env[:, 0]
        self._len = 0  # S: frames of history in the loop source; 0 = silence
        self._x = 0  # loop crossfade frames
        self._m = 0  # loop period
        self._u0 = 0  # where in the loop the entry crossfade lands
        self._h = 0  # frames of hold produced since entry
        self._fade_at = 0
        self._starved = 0  # frames starved in this episode (survives an unfinished resume)
        # --- published by the writer: (queue end it was planned for, period, entry offset) ---
        self._loop_hint: tuple[int, int, int] = (-1, 0, 0)

    # ----------------------------------------------------------------- writer
    def plan_loop(self, end: int, read: Callable[[int, int], np.ndarray]) -> None:
        """Pick the loop period and entry for a starvation at queue end ``end`` (writer thread).

        ``read(t, n)`` returns a copy of timeline frames ``t .. t+n``; the
        caller guarantees the last ``loop_frames`` before ``end`` are real,
        hole-free material. Normalised cross-correlation (via FFT) of the
        loop's first ``loop_crossfade_frames`` with every candidate tail
        position within ``loop_search_frames``; the seam then joins like with like.
        """
        size = self.loop_frames
        x = self.loop_crossfade_frames
        w = min(self.loop_search_frames, size - 3 * x)
        if w <= 0:
            return
        m_hi = size - x
        # Only the loop's head and the candidate tail region matter; mono is enough.
        head = read(end - size, x).sum(axis=1).astype(np.float64)
        tail = read(end - size + m_hi - w, w + x).sum(axis=1).astype(np.float64)
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
        mirror = read(end - x - 1, x).sum(axis=1).astype(np.float64)[::-1]
        region = read(end - size + x, w + x).sum(axis=1).astype(np.float64)
        corr = np.fft.irfft(np.fft.rfft(region, nfft) * np.conj(np.fft.rfft(mirror, nfft)),
                            nfft)[: w + 1]
        energy = np.concatenate([[0.0], np.cumsum(region * region)])
        window_energy = energy[x : x + w + 1] - energy[: w + 1]
        mirror_energy = max(float(mirror @ mirror), 1e-12)
        entry = int(np.argmax(corr / np.sqrt(mirror_energy * np.maximum(window_energy, 1e-12))))
        self._loop_hint = (end, m_hi - w + best, x + entry)

    # ----------------------------------------------------------------- reader
    def record(self, block: np.ndarray) -> None:
        """Append played frames to the history the next loop is built from."""
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

    def enter(self, playhead: int, new_episode: bool) -> bool:
        """Build a loop from the history for a starvation at ``playhead``.

        ``new_episode`` is False when the previous hold's resume was cut short,
        so the hold and fade budget keeps counting. Returns False when the
        history is too short to loop (the hold is silence).
        """
        if new_episode:
            self._starved = 0
        size = self.loop_frames
        s_len = self._hist_valid
        x = min(self.loop_crossfade_frames, s_len // 4)
        self._h = 0
        self._fade_at = max(0, self.hold_frames - self._starved)
        if s_len < MIN_LOOP_FRAMES or x < 2:
            self._len = 0
            return False
        src = self._src
        start = (self._hist_written - s_len) % size
        first = min(s_len, size - start)
        src[:first] = self._hist[start : start + first]
        if first < s_len:
            src[first:s_len] = self._hist[: s_len - first]
        m = s_len - x
        u0 = 0
        end_planned, period, offset = self._loop_hint
        if (end_planned == playhead and s_len == size and x <= period <= m
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
        self.seam_correlation = rho
        self.loop_period = m
        self._len, self._x, self._m, self._u0 = s_len, x, m, u0
        return True

    @property
    def finished(self) -> bool:
        """True once the hold has faded out (or was silence from the start)."""
        return self._len == 0 or self._h >= self._fade_at + self.fade_frames

    def render(self, dst: np.ndarray) -> int:
        """Write the next ``len(dst)`` frames of the hold into ``dst``; return the audible ones.

        Frames after the fade are silence; they count against the episode
        whether or not they are heard (a resume mixes them away).
        """
        k = dst.shape[0]
        h = self._h
        total = self._fade_at + self.fade_frames
        self._h = h + k
        self._starved += k
        if self._len == 0 or h >= total:
            dst.fill(0.0)
            return 0
        x, m = self._x, self._m
        i = 0
        while i < k:
            hh = h + i
            if hh < x:
                c = min(k - i, x - hh)
                dst[i : i + c] = self._entry[hh : hh + c]
            else:
                u = (hh + self._u0) % m
                c = min(k - i, m - u)
                dst[i : i + c] = self._src[u : u + c]
            i += c
        self._envelope(h, k)
        np.multiply(dst, self._env[:k], out=dst)
        return min(k, total - h)

    def end_episode(self) -> None:
        """The timeline has fully resumed: the next starvation gets the whole hold again."""
        self._starved = 0

    def _envelope(self, h: int, k: int) -> None:
        """env[:k] = gentle exponential decay, then an equal-power fade to zero."""
        env, ramp = self._env1, self._ramp
        fade_at, fade = self._fade_at, self.fade_frames
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
