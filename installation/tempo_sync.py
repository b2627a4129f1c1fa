"""Tempo sync with the performer's tools: MIDI clock in and Ableton Link.

A room's tempo is normally the artwork's. When the installation follows a
DAW or a drum machine, their tempo becomes every room's live ``tempo_bpm``
parameter (set through the :class:`~installation.control.ControlHub`, so it
is echoed, replayed to a restarted engine and shown in the console like any
knob); the artwork still chooses key, mode, palette and instruments.

- :class:`TempoFollower` is the one way a sync source moves the tempo: only
  a finite tempo in 20..300 bpm is taken (anything else is refused and
  counted, never stored), and only a move of at least
  :data:`MIN_STEP_BPM` is passed on, because each change re-plans the music
  (a transition): a clock's jitter must not make the room re-plan every beat.
- :class:`ClockTempo` estimates the tempo from MIDI clock (24 pulses per
  quarter note) timestamps: the pulses of the last beat, once a whole beat
  has arrived; a gap over :data:`CLOCK_GAP_S` (a stopped clock) starts over.
- :class:`LinkSync` joins an Ableton Link session (the ``aalink`` package,
  the ``link`` extra): ``follow`` takes the session's tempo while a peer is
  there; ``lead`` sets the session's tempo from a room's music.

Phase is not aligned: a piece's bars start where the engine's own bar grid
puts them, not on the session's downbeat.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from ground.errors import DependencyError
from ground.events import EventSink, null_sink
from installation.config import LinkConfig
from installation.control import ControlHub, RefusalLog

log = logging.getLogger(__name__)

#: The tempo a sync source may set, bpm (the ``tempo_bpm`` range a scene may name).
TEMPO_RANGE_BPM = (20.0, 300.0)
#: The smallest tempo move passed on to the rooms, bpm.
MIN_STEP_BPM = 0.5
#: MIDI clock pulses per quarter note.
PULSES_PER_QUARTER = 24
#: A silence this long between pulses means the clock stopped.
CLOCK_GAP_S = 1.0
#: How often Link's tempo and peers are read, and the leading room's tempo written.
LINK_POLL_S = 0.1


class TempoFollower:
    """Passes a sync source's tempo on as every room's ``tempo_bpm`` (see module doc)."""

    def __init__(self, hub: ControlHub, source: str, log_event: EventSink = null_sink,
                 refusals: RefusalLog | None = None) -> None:
        self.hub = hub
        self.source = source
        self.log_event = log_event
        self.refusals = refusals or RefusalLog(source, log_event)
        self.tempo: float | None = None  # the last tempo set
        self.followed = 0

    def offer(self, bpm: object, origin: str = "") -> bool:
        """Take ``bpm`` if it is a tempo and far enough from the last one; whether it was set."""
        if isinstance(bpm, bool) or not isinstance(bpm, int | float) or not math.isfinite(bpm):
            self.refusals.refuse("bad-tempo", tempo=repr(bpm)[:40])
            return False
        low, high = TEMPO_RANGE_BPM
        if not low <= bpm <= high:
            self.refusals.refuse("tempo-out-of-range", tempo=round(float(bpm), 3),
                                 error=f"expected {low:g}..{high:g} bpm")
            return False
        bpm = round(float(bpm), 1)
        if self.tempo is not None and abs(bpm - self.tempo) < MIN_STEP_BPM:
            return False
        applied = self.hub.set("tempo_bpm", bpm, "*", source=self.source, origin=origin)
        self.log_event("tempo_followed", source=self.source, tempo_bpm=applied,
                       previous=self.tempo)
        self.tempo = applied
        self.followed += 1
        return True


class ClockTempo:
    """The tempo of a MIDI clock, from the times its pulses arrived (seconds, any clock)."""

    def __init__(self) -> None:
        self._pulses: deque[float] = deque(maxlen=PULSES_PER_QUARTER + 1)
        self._since_told = 0  # pulses since the tempo was last given

    def pulse(self, at: float) -> float | None:
        """One 0xF8 pulse at ``at``; the tempo over the last beat, given once a beat (the
        first time a whole beat is in, then every 24 pulses), else None."""
        if self._pulses and not 0.0 <= at - self._pulses[-1] <= CLOCK_GAP_S:
            self.start()  # stopped, restarted, or time went backwards
        self._pulses.append(at)
        if len(self._pulses) <= PULSES_PER_QUARTER:
            return None
        self._since_told += 1
        if self._since_told % PULSES_PER_QUARTER != 1:  # once a beat: a tempo, not jitter
            return None
        span = self._pulses[-1] - self._pulses[0]
        return 60.0 / span if span > 0 else None

    def start(self) -> None:
        """Start (0xFA) or Continue (0xFB), or a clock found again: count from here."""
        self._pulses.clear()
        self._since_told = 0


class LinkSync:
    """An Ableton Link peer on its own thread: follows or leads the session's tempo."""

    def __init__(self, config: LinkConfig, hub: ControlHub,
                 room_tempo: Callable[[], float | None], log_event: EventSink = null_sink,
                 link_module: Any = None) -> None:
        if link_module is None:
            try:
                import aalink as link_module  # type: ignore[import-not-found,no-redef]
            except ImportError:
                raise DependencyError("control.link needs the aalink package "
                                      "(pip install 'art2mus[link]')") from None
        self.config = config
        self.room_tempo = room_tempo
        self.log_event = log_event
        self.follower = TempoFollower(hub, "link", log_event)
        self.peers = 0
        self.session_tempo: float | None = None
        self.led = 0  # times the session's tempo was set from the room
        self._module = link_module
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="link", daemon=True)

    @classmethod
    def start(cls, config: LinkConfig, hub: ControlHub,
              room_tempo: Callable[[], float | None], log_event: EventSink = null_sink,
              link_module: Any = None) -> LinkSync:
        """Join the session from a thread of its own (DependencyError without aalink)."""
        self = cls(config, hub, room_tempo, log_event, link_module)
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
        try:
            while not self._stop.is_set():
                self.step(link)
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
            return
        tempo = self.room_tempo()
        if tempo is not None and math.isfinite(tempo) and tempo > 0 \
                and abs(tempo - self.session_tempo) >= 0.05:
            link.tempo = float(tempo)
            self.session_tempo = float(tempo)
            self.led += 1
            self.log_event("link_tempo_led", tempo_bpm=round(float(tempo), 2))

    def close(self) -> None:
        """Leave the session."""
        self._stop.set()
        self._thread.join(timeout=2.0)


def room_tempo_reader(rows: Callable[[], list[dict[str, Any]]], room: str
                      ) -> Callable[[], float | None]:
    """The tempo ``room`` plays now (from the engine's status rows), for Link's lead."""
    from installation.osc import room_summary

    def tempo() -> float | None:
        value = room_summary(rows(), room).get("tempo")
        return float(value) if isinstance(value, int | float) and value > 0 else None

    return tempo
