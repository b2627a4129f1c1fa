"""Tempo sync with the performer's tools: MIDI clock in and Ableton Link.

A room's tempo is normally the artwork's. When the installation follows a
DAW or a drum machine, their tempo becomes every room's live ``tempo_bpm``
parameter (set through the :class:`~installation.control.ControlHub`, so it
is echoed, replayed to a restarted engine and shown in the console like any
knob); the artwork still chooses key, mode, palette and instruments.

**Phase**: the session's bar grid goes to the engine too
(:meth:`ControlHub.sync <installation.control.ControlHub.sync>`: the wall
time of one of its downbeats, its beats per bar and the tempo the rooms
play), at least every :data:`SYNC_EVERY_S` and on every change; the engine
lays each room's bars on it, as heard through audio_out's playback clock
(:meth:`engine.streaming.RoomSession.set_sync`).

- :class:`TempoFollower` is the one way a sync source moves the tempo: a
  tempo is rounded to 0.01 bpm, then only a finite one in 20..300 bpm is
  taken (rounded first: a clock at exactly 300 is fitted a hair over it;
  anything else is refused and counted, never stored, and the bar grid read
  with it is not sent: :func:`takes_tempo`), and only a move of at least the
  source's step is passed on, because each change re-plans the music (a
  transition): a clock's jitter must not make the room re-plan every beat.
- :class:`ClockTempo` reads a MIDI clock (24 pulses per quarter note): the
  tempo by a least-squares line through the pulses of the last
  :data:`CLOCK_WINDOW_BEATS` beats (a couple of ms of USB jitter moves it by
  hundredths of a bpm; a tempo change restarts the window), and the song
  position from Start, Continue and Song Position Pointer, which gives the
  downbeats. A gap over :data:`CLOCK_GAP_S` (a stopped clock) starts over.
- :class:`LinkSync` joins an Ableton Link session (the ``aalink`` package,
  the ``link`` extra): ``follow`` takes the session's tempo while a peer is
  there; ``lead`` sets the session's tempo from a room's music, and moves the
  session's beat so its bar lines fall on the room's (an artwork change is
  then one transition, not a second one to meet the session's old bars). In
  both, with a peer there, the rooms' bars land on the session's downbeats
  (its quantum is the bar; a fractional quantum aligns beats only).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ground.errors import DependencyError
from ground.events import EventSink, null_sink
from installation.config import LinkConfig
from installation.control import ControlHub, RefusalLog

log = logging.getLogger(__name__)

#: The tempo a sync source may set, bpm (the ``tempo_bpm`` range a scene may name).
TEMPO_RANGE_BPM = (20.0, 300.0)
#: A tempo is taken to this many decimals of a bpm (0.01), before its range is checked.
TEMPO_DECIMALS = 2
#: The smallest tempo move a MIDI clock passes on, bpm (its estimate's noise is ~0.02).
CLOCK_STEP_BPM = 0.1
#: The smallest tempo move Link passes on, bpm (a session's tempo is exact).
LINK_STEP_BPM = 0.01
#: MIDI clock pulses per quarter note.
PULSES_PER_QUARTER = 24
#: MIDI clock pulses per Song Position Pointer unit (a sixteenth note).
PULSES_PER_SIXTEENTH = 6
#: A silence this long between pulses means the clock stopped.
CLOCK_GAP_S = 1.0
#: Beats of pulses the clock's tempo line is fitted through.
CLOCK_WINDOW_BEATS = 8
#: A last beat this far from the fitted tempo (relative) is a tempo change.
CLOCK_CHANGE = 0.03
#: How often Link's tempo and peers are read, and the leading room's tempo written.
LINK_POLL_S = 0.1
#: How far (s) a led session's bar lines may sit from the room's before its beat is moved
#: onto them: under the engine's sync tolerance (15 ms), so the grid sent back is taken as
#: the room's own, with no re-plan, and over a playback clock's few ms of jitter.
LEAD_ALIGN_S = 0.008
#: The bar grid is sent again at least this often (a restarted engine picks it up).
SYNC_EVERY_S = 2.0
#: A source's downbeats this far off the grid last sent make it send again, seconds.
GRID_MOVE_S = 0.004


def takes_tempo(bpm: object) -> bool:
    """Whether ``bpm`` is a tempo a sync source may set: a finite number in
    :data:`TEMPO_RANGE_BPM` once taken to :data:`TEMPO_DECIMALS` (what
    :meth:`TempoFollower.offer` does not refuse).

    A source whose tempo is refused is not followed in phase either: its bar
    grid, timed at that tempo, would move the rooms' bars for nothing.
    """
    if isinstance(bpm, bool) or not isinstance(bpm, int | float) or not math.isfinite(bpm):
        return False
    low, high = TEMPO_RANGE_BPM
    # rounded first: a clock at exactly 300 bpm is fitted as 300.0000001, and is 300
    return low <= round(float(bpm), TEMPO_DECIMALS) <= high


class TempoFollower:
    """Passes a sync source's tempo on as every room's ``tempo_bpm`` (see module doc)."""

    def __init__(self, hub: ControlHub, source: str, log_event: EventSink = null_sink,
                 refusals: RefusalLog | None = None, step_bpm: float = CLOCK_STEP_BPM) -> None:
        self.hub = hub
        self.source = source
        self.log_event = log_event
        self.refusals = refusals or RefusalLog(source, log_event)
        self.step_bpm = step_bpm
        self.tempo: float | None = None  # the last tempo set
        self.followed = 0

    def offer(self, bpm: object, origin: str = "") -> bool:
        """Take ``bpm`` if it is a tempo and far enough from the last one; whether it was set."""
        if isinstance(bpm, bool) or not isinstance(bpm, int | float) or not math.isfinite(bpm):
            self.refusals.refuse("bad-tempo", tempo=repr(bpm)[:40])
            return False
        if not takes_tempo(bpm):
            low, high = TEMPO_RANGE_BPM
            self.refusals.refuse("tempo-out-of-range", tempo=round(float(bpm), 3),
                                 error=f"expected {low:g}..{high:g} bpm")
            return False
        bpm = round(float(bpm), TEMPO_DECIMALS)
        if self.tempo is not None and abs(bpm - self.tempo) < self.step_bpm - 1e-9:
            return False
        applied = self.hub.set("tempo_bpm", bpm, "*", source=self.source, origin=origin)
        self.log_event("tempo_followed", source=self.source, tempo_bpm=applied,
                       previous=self.tempo)
        self.tempo = applied
        self.followed += 1
        return True


@dataclass(frozen=True)
class ClockReading:
    """What a MIDI clock says once a beat: its tempo and, when its song position is
    known (after Start, or Song Position Pointer then Continue), the time of its next
    downbeat (on the pulses' clock) for bars of ``beats`` beats."""

    bpm: float
    downbeat: float | None


class ClockTempo:
    """A MIDI clock's tempo and bar grid, from the times its pulses arrived (any clock)."""

    def __init__(self, beats_per_bar: int = 4) -> None:
        self.beats_per_bar = beats_per_bar
        # (pulse serial, arrival time) over the last CLOCK_WINDOW_BEATS beats
        self._pulses: deque[tuple[int, float]] = deque(
            maxlen=CLOCK_WINDOW_BEATS * PULSES_PER_QUARTER + 1)
        self._serial = 0
        self._since_told = 0  # pulses since the last reading
        self.position: int | None = None  # song position of the last pulse, in pulses
        self._next_position: int | None = None  # the next pulse's (after Start, Continue)
        self._pointer: int | None = None  # a Song Position Pointer since the stop, in pulses
        self.running = False

    def pulse(self, at: float) -> ClockReading | None:
        """One 0xF8 pulse at ``at``; a reading once a beat (the first once a whole beat is
        in, then every 24 pulses), else None."""
        if self._pulses and not 0.0 <= at - self._pulses[-1][1] <= CLOCK_GAP_S:
            self._restart_window()  # stopped, restarted, or time went backwards
        self._serial += 1
        self._pulses.append((self._serial, at))
        if self.running:
            if self._next_position is not None:
                self.position, self._next_position = self._next_position, None
            elif self.position is not None:
                self.position += 1
        if len(self._pulses) <= PULSES_PER_QUARTER:
            return None
        self._since_told += 1
        if self._since_told % PULSES_PER_QUARTER != 1:  # once a beat: a tempo, not jitter
            return None
        last_beat = self._pulses[-1][1] - self._pulses[-1 - PULSES_PER_QUARTER][1]
        if last_beat <= 0:
            return None
        intercept, slope = self._fit()
        if abs(slope * PULSES_PER_QUARTER / last_beat - 1.0) > CLOCK_CHANGE:
            # the tempo changed: fit the last beat alone, and grow from there
            for _ in range(len(self._pulses) - PULSES_PER_QUARTER - 1):
                self._pulses.popleft()
            intercept, slope = self._fit()
        bpm = 60.0 / (slope * PULSES_PER_QUARTER)
        return ClockReading(bpm, self._downbeat(intercept, slope))

    def _fit(self) -> tuple[float, float]:
        """Least-squares arrival time = intercept + slope * serial over the window."""
        n = len(self._pulses)
        xs = [float(serial) for serial, _ in self._pulses]
        ts = [t for _, t in self._pulses]
        mean_x, mean_t = sum(xs) / n, sum(ts) / n
        sxx = sum((x - mean_x) ** 2 for x in xs)
        slope = sum((x - mean_x) * (t - mean_t) for x, t in zip(xs, ts, strict=True)) / sxx
        return mean_t - slope * mean_x, slope

    def _downbeat(self, intercept: float, slope: float) -> float | None:
        """When the next bar line at or after the last pulse falls (None: position unknown)."""
        if not self.running or self.position is None:
            return None
        bar = PULSES_PER_QUARTER * self.beats_per_bar
        ahead = -self.position % bar
        return intercept + slope * (self._serial + ahead)

    def _restart_window(self) -> None:
        self._pulses.clear()
        self._since_told = 0

    def start(self) -> None:
        """Start (0xFA): the next pulse is the song's first (position 0)."""
        self.running = True
        self._next_position, self._pointer = 0, None

    def resume(self) -> None:
        """Continue (0xFB): the next pulse is at the Song Position Pointer sent since the
        stop, else one after where the song stopped (unknown if it never started)."""
        self.running = True
        if self._pointer is not None:
            self._next_position, self._pointer = self._pointer, None
        elif self.position is not None:
            self._next_position = self.position + 1

    def song_position(self, sixteenths: int) -> None:
        """Song Position Pointer (0xF2): where Continue resumes, in sixteenth notes."""
        self._pointer = sixteenths * PULSES_PER_SIXTEENTH

    def stop(self) -> None:
        """Stop (0xFC): the song position holds (pulses may go on; the tempo is still read)."""
        self.running = False


class GridSender:
    """Sends a sync source's bar grid to the engine (:meth:`ControlHub.sync`): when its
    beats or tempo change, when its downbeats move off the grid last sent by more than
    :data:`GRID_MOVE_S`, and at least every :data:`SYNC_EVERY_S` (a restarted engine)."""

    def __init__(self, hub: ControlHub, clock: Callable[[], float] = time.monotonic) -> None:
        self.hub = hub
        self.clock = clock
        self.sent: tuple[float, int, float] | None = None  # downbeat, beats, bpm
        self._sent_at = -math.inf
        self.count = 0

    def offer(self, downbeat: float, beats: int, bpm: float) -> bool:
        """The grid now (``downbeat``: a ``time.time()``); True when it was sent."""
        due = self.clock() - self._sent_at >= SYNC_EVERY_S
        if self.sent is not None and not due and self.sent[1:] == (beats, bpm):
            bar = beats * 60.0 / bpm
            moved = (downbeat - self.sent[0]) % bar
            if min(moved, bar - moved) <= GRID_MOVE_S:
                return False
        self.hub.sync(downbeat, beats, bpm)
        self.sent, self._sent_at = (downbeat, beats, bpm), self.clock()
        self.count += 1
        return True


class LinkSync:
    """An Ableton Link peer on its own thread: follows or leads the session's tempo, and
    sends the session's bar grid to the rooms while a peer is there."""

    def __init__(self, config: LinkConfig, hub: ControlHub,
                 room_tempo: Callable[[], float | None], log_event: EventSink = null_sink,
                 link_module: Any = None, clock: Callable[[], float] = time.time,
                 room_downbeat: Callable[[], tuple[float, float] | None] | None = None,
                 ) -> None:
        if link_module is None:
            try:
                import aalink as link_module  # type: ignore[import-not-found,no-redef]
            except ImportError:
                raise DependencyError("control.link needs the aalink package "
                                      "(pip install 'art2mus[link]')") from None
        self.config = config
        self.room_tempo = room_tempo
        #: (wall time, bar length s) of the led room's next bar line as heard, if known
        self.room_downbeat = room_downbeat or (lambda: None)
        self.log_event = log_event
        self.follower = TempoFollower(hub, "link", log_event, step_bpm=LINK_STEP_BPM)
        self.grid = GridSender(hub)
        self.clock = clock
        self.peers = 0
        self.session_tempo: float | None = None
        self.led = 0  # times the session's tempo was set from the room
        self.bars_led = 0  # times the session's beat was moved onto the room's bars
        self.step_failures = 0  # polls of the session that raised, in all
        self._module = link_module
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="link", daemon=True)

    @classmethod
    def start(cls, config: LinkConfig, hub: ControlHub,
              room_tempo: Callable[[], float | None], log_event: EventSink = null_sink,
              link_module: Any = None,
              room_downbeat: Callable[[], tuple[float, float] | None] | None = None,
              ) -> LinkSync:
        """Join the session from a thread of its own (DependencyError without aalink)."""
        self = cls(config, hub, room_tempo, log_event, link_module,
                   room_downbeat=room_downbeat)
        self._thread.start()
        self._ready.wait(5.0)
        if self._error is not None:
            raise DependencyError(f"control.link: cannot join a Link session: {self._error}")
        log_event("link_joined", mode=config.mode, quantum=config.quantum)
        return self

    def _run(self) -> None:
        try:
            asyncio.run(self._session())
        except Exception as error:  # noqa: BLE001 - reported once; the music goes on
            self._error = error
            self._ready.set()
            self.log_event("link_failed", error=repr(error)[:300])

    async def _session(self) -> None:
        # Link's rule: a peer joining a session takes its tempo. A DAW that joins ours takes
        # the room's tempo then (not Link's arbitrary 120), and following it changes nothing.
        first = self.room_tempo()
        low, high = TEMPO_RANGE_BPM
        link = self._module.Link(first if first is not None and low <= first <= high else 120.0)
        link.quantum = self.config.quantum
        link.enabled = True
        self._ready.set()
        streak = 0  # polls in a row that failed
        try:
            while not self._stop.is_set():
                try:
                    self.step(link)
                except Exception as error:  # noqa: BLE001 - one bad poll must not end Link
                    streak += 1
                    self.step_failures += 1
                    if streak == 1:  # said once per streak, not 10 times a second
                        self.log_event("link_step_failed", error=repr(error)[:300])
                        log.warning("Link: a poll of the session failed (%r); polling goes "
                                    "on, said again only once it works", error)
                else:
                    if streak:
                        self.log_event("link_step_recovered", failed_polls=streak)
                        log.info("Link: polling works again after %d failed polls", streak)
                    streak = 0
                await asyncio.sleep(LINK_POLL_S)
        finally:
            link.enabled = False

    def step(self, link: Any) -> None:
        """One poll: note peers; follow the session's tempo, or lead it with the room's."""
        peers = int(link.num_peers)
        if peers != self.peers:
            self.log_event("link_peers", peers=peers, previous=self.peers)
            self.peers = peers
        self.session_tempo = float(link.tempo)
        if self.config.mode == "follow":
            if peers > 0:  # alone, the session's tempo is only our own default
                self.follower.offer(self.session_tempo, origin="link")
            # a session whose tempo is refused is not followed in phase either
            played = self.follower.tempo if takes_tempo(self.session_tempo) else None
        else:
            played = self.room_tempo()
            if played is not None and math.isfinite(played) and played > 0 \
                    and abs(played - self.session_tempo) >= 0.05:
                link.tempo = float(played)
                self.session_tempo = float(played)
                self.led += 1
                self.log_event("link_tempo_led", tempo_bpm=round(float(played), 2))
            if played is not None and abs(played - self.session_tempo) < 0.05:
                self._lead_bars(link)
        session = self.session_tempo
        if peers > 0 and played is not None and math.isfinite(session) and session > 0:
            self._send_grid(link, played, session)

    def _lead_bars(self, link: Any) -> None:
        """Move the session's beat so one of its bar lines falls on the led room's next
        one (where their bars are as long: another meter's bars cannot coincide)."""
        heard = self.room_downbeat()
        tempo = self.session_tempo
        if heard is None or tempo is None or not tempo > 0:
            return
        downbeat, bar_s = heard
        quantum = float(self.config.quantum)
        beat_s = 60.0 / tempo
        beat, now = float(link.beat), self.clock()
        if not (math.isfinite(downbeat) and math.isfinite(beat)) \
                or abs(bar_s - quantum * beat_s) > 0.001:
            return
        # the beat now at which a bar line (a multiple of the quantum) is the room's downbeat,
        # the one of those nearest the session's beat (its bar count barely moves)
        target = -(downbeat - now) / beat_s
        target += quantum * round((beat - target) / quantum)
        moved_s = (beat - target) * beat_s
        if abs(moved_s) > LEAD_ALIGN_S:
            link.force_beat(target)
            self.bars_led += 1
            self.log_event("link_bars_led", moved_ms=round(1000.0 * moved_s, 1))

    def _send_grid(self, link: Any, played: float, session_tempo: float) -> None:
        """The session's next downbeat (its quantum is the bar) to the rooms playing ``played``."""
        quantum = float(self.config.quantum)
        beats = int(quantum) if quantum.is_integer() else 1  # else: beats only
        beat, now = float(link.beat), self.clock()
        into = float(link.phase) if beats == quantum else beat % 1.0
        if not (math.isfinite(beat) and math.isfinite(into)):
            return
        self.grid.offer(now + (beats - into) * 60.0 / session_tempo, beats, played)

    def close(self) -> None:
        """Leave the session."""
        self._stop.set()
        self._thread.join(timeout=2.0)


def room_downbeat_reader(rows: Callable[[], list[dict[str, Any]]], room: str,
                         clock: Callable[[], float] = time.time,
                         ) -> Callable[[], tuple[float, float] | None]:
    """(wall time, bar length s) of ``room``'s next bar line as heard (the engine's status
    row: ``downbeat`` in seconds after UTC midnight, ``bar_s``), for Link's lead."""
    from ground.protocol import DAY_S

    def downbeat() -> tuple[float, float] | None:
        for row in rows():
            if row.get("kind") != "engine":
                continue
            entry = ((row.get("status") or {}).get("rooms") or {}).get(room) or {}
            of_day, bar_s = entry.get("downbeat"), entry.get("bar_s")
            if not all(isinstance(v, int | float) and not isinstance(v, bool)
                       and math.isfinite(v) for v in (of_day, bar_s)):
                return None
            assert isinstance(of_day, int | float) and isinstance(bar_s, int | float)
            if not (0.0 <= of_day < DAY_S and bar_s > 0):
                return None
            now = clock()
            return float(of_day) + DAY_S * round((now - float(of_day)) / DAY_S), float(bar_s)
        return None

    return downbeat


def room_tempo_reader(rows: Callable[[], list[dict[str, Any]]], room: str
                      ) -> Callable[[], float | None]:
    """The tempo ``room`` plays now (from the engine's status rows), for Link's lead."""
    from installation.osc import room_summary

    def tempo() -> float | None:
        value = room_summary(rows(), room).get("tempo")
        return float(value) if isinstance(value, int | float) and value > 0 else None

    return tempo
