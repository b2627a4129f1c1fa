"""Beat and bar out: OSC ``/beat``, ``/bar``, ``/key``, ``/chord`` as the music is heard.

For TouchDesigner, Max or Resolume to lock visuals to the music. Per room::

    /art2mus/ROOM/bar     int, bar number (1 = the first bar of the current piece)
    /art2mus/ROOM/beat    int, beat in the bar, 1..beats per bar (the meter's numerator)
    /art2mus/ROOM/key     string, e.g. "D dorian" (when a piece starts, and on a change)
    /art2mus/ROOM/chord   string, root and quality, e.g. "A minor", "G dominant 7"

Where the timing comes from: the engine loop calls :meth:`BeatOut.observe`
every turn with each room's :class:`BeatGrid` (:func:`grid_of` reads it from
the generator's stream state: the procedural composer's bar grid, meter,
key and chords; a generator without a bar grid sends nothing) and the
playhead estimate (the timeline sample heard now). A grid is kept from its
first bar line on, so the bars of the piece still playing are counted until
the new one's first downbeat is heard. The sender's own thread wakes at each
beat's wall time, extrapolated from the last observation (at most
:data:`MAX_EXTRAPOLATE_S` ahead, so a stalled playhead stops the beats), so a
beat leaves within a few milliseconds of the playhead estimate passing it,
whatever the engine loop is busy with. A playhead that stalls or jumps (a
restarted room, a report hours ahead) resumes the beats at the beat in
progress, found by arithmetic on the grid (:meth:`BeatOut._catch_up`): the
sender never walks the beats in between, so the lock the engine loop shares
with it in :meth:`BeatOut.observe` is held for microseconds. Chords between a transition's start
and the new grid's first bar (the bridge) are not reported. A new piece's
first downbeat takes the place of the old grid's boundary just before it
(:data:`DOWNBEAT_TOLERANCE_S`): a change sends one ``/bar 1``, not the old
piece's bar line too.

``send`` and ``clock`` are the seams: tests pass a list's ``append`` and a
fake clock and call :meth:`BeatOut.pump`.

A ``send`` that raises (an rtmidi port whose device was unplugged, a socket
error) costs that message only: it is counted in ``send_errors``, the first
of a run of failures is logged (and the recovery), and the next messages
are still sent; the sender thread outlives any error.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# the composer, not the procedural generator: that would bring its audio path (scipy, a
# second of imports) into every engine, the diffusion ones included
from engine.generators.procedural.composer import Composer
from engine.generators.procedural.theory import NOTE_NAMES
from ground.errors import DependencyError

log = logging.getLogger(__name__)

#: What a beat message carries: a bar or beat number, a key or chord name.
OscValue = int | str

#: The furthest ahead of its last observation a room's playhead is extrapolated.
MAX_EXTRAPOLATE_S = 0.5
#: Grids kept per room (the one playing, the ones queued after it).
GRIDS_KEPT = 8
#: Longest the sender thread sleeps, so new observations are picked up.
MAX_WAIT_S = 0.05
#: How late a beat may be sent, seconds: after a stall or a jump of the playhead, older
#: beats are skipped (only the beat in progress goes out).
LATE_S = 0.1
#: Most boundaries one room's turn of :meth:`BeatOut.pump` steps over, so the sender's lock
#: is held for microseconds whatever the playhead does (a clock report from the LAN once put
#: it 2**52 samples ahead, and the sender walked ten billion beats under the lock while the
#: engine loop waited on it in :meth:`BeatOut.observe`, until the supervisor killed the
#: engine as hung). A jump goes straight to the beat in progress (:meth:`BeatOut._catch_up`);
#: this is the bound behind that.
MAX_BOUNDARIES_PER_PUMP = 64
#: How close before a new piece's first downbeat a boundary of the grid still playing is
#: taken to be that downbeat (and not sent on its own). The composer puts a new piece's
#: anchor on the old grid's bar line rounded to a whole sample, and a sync's phase moves it
#: by a little more: sent apart, the two would be a second ``/bar``, ``/chord`` and
#: ``/beat 1`` (for MIDI clock, a double pulse) within a millisecond. 5 ms is less than
#: a listener hears as two onsets (~20 ms) and than a 60 fps visual's frame (16.7 ms);
#: never more than half a step of the old grid (:meth:`BeatOut._step`), so no boundary
#: that stands apart is lost (a pulse at 300 bpm is 8.3 ms).
DOWNBEAT_TOLERANCE_S = 0.005

#: Chord qualities by the intervals above the root (semitones), most specific first.
_QUALITIES: tuple[tuple[frozenset[int], str], ...] = (
    (frozenset({4, 7, 11}), "major 7"),
    (frozenset({4, 7, 10}), "dominant 7"),
    (frozenset({3, 7, 10}), "minor 7"),
    (frozenset({3, 6, 10}), "half-diminished 7"),
    (frozenset({3, 6, 9}), "diminished 7"),
    (frozenset({4, 7}), "major"),
    (frozenset({3, 7}), "minor"),
    (frozenset({3, 6}), "diminished"),
    (frozenset({4, 8}), "augmented"),
)


def chord_name(pitch_classes: Sequence[int]) -> str:
    """Root and quality of a chord given root first (``(9, 0, 4)`` -> ``"A minor"``).

    Extensions and added tones beyond the qualities known are ignored; a chord
    that matches none is its root alone.
    """
    if not pitch_classes:
        raise ValueError("chord_name: expected at least the root, got no pitch classes")
    root = pitch_classes[0] % 12
    intervals = {(pc - root) % 12 for pc in pitch_classes[1:]}
    for needed, quality in _QUALITIES:
        if needed <= intervals:
            return f"{NOTE_NAMES[root]} {quality}"
    return NOTE_NAMES[root]


@dataclass(frozen=True)
class BeatGrid:
    """Where one piece's bars and beats fall on the room's timeline (samples).

    ``start`` is where the stream that plays it begins (a transition starts
    before the first downbeat, at ``anchor``): a grid queued after that was
    replaced before it was heard. ``chord`` gives the chord name of a bar
    (0 = the bar at ``anchor``), or is None where the generator has no
    harmony to tell. ``identity`` tells one piece from another. ``tempo_bpm``
    (quarter notes per minute) and ``meter`` are the plan's, for a MIDI file's
    tempo map (None where the generator does not say).
    """

    anchor: int
    bar_samples: float
    beats_per_bar: int
    key: str
    start: int = field(default=0, compare=False)
    chord: Callable[[int], str] | None = field(default=None, compare=False)
    identity: Any = None
    tempo_bpm: float | None = field(default=None, compare=False)
    meter: tuple[int, int] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not (self.bar_samples > 0 and math.isfinite(self.bar_samples)):
            raise ValueError(f"BeatGrid.bar_samples: expected a positive number, "
                             f"got {self.bar_samples}")
        if self.beats_per_bar < 1:
            raise ValueError(f"BeatGrid.beats_per_bar: expected >= 1, got {self.beats_per_bar}")

    @property
    def beat_samples(self) -> float:
        """Samples per beat."""
        return self.bar_samples / self.beats_per_bar

    def beat_index(self, sample: float) -> int:
        """Index of the beat containing ``sample``, counted from the anchor (0 = first)."""
        return math.floor((sample - self.anchor) / self.beat_samples + 1e-9)

    def beat_start(self, index: int) -> float:
        """Timeline sample where beat ``index`` starts."""
        return self.anchor + index * self.beat_samples


def grid_of(state: object) -> BeatGrid | None:
    """The bar grid of a generator's stream state; None for a generator without one.

    Today the procedural generator's composer knows its grid; the grid is
    what the composer plays from its anchor (the first downbeat) on.
    """
    composer = getattr(state, "composer", None)  # a procedural stream's state
    if not isinstance(composer, Composer):
        return None
    decisions = composer.decisions
    key = f"{NOTE_NAMES[decisions.key_root]} {decisions.mode}"
    return BeatGrid(anchor=int(composer.grid.anchor), bar_samples=composer.grid.bar_samples,
                    beats_per_bar=int(decisions.meter[0]), key=key,
                    start=int(composer.start_sample),
                    chord=lambda bar: chord_name(composer.chord(bar)),
                    identity=(composer.grid, decisions, composer.seed),
                    tempo_bpm=float(decisions.tempo_bpm),
                    meter=(int(decisions.meter[0]), int(decisions.meter[1])))


@dataclass
class _Room:
    """One room's grids and playhead, as last observed, and the next beat to send."""

    grids: list[BeatGrid] = field(default_factory=list)
    heard: int = 0
    observed_at: float = 0.0
    advancing: bool = False
    next_beat: float | None = None  # timeline sample of the next beat to send
    last_beat: float | None = None  # timeline sample of the last beat sent
    key_sent: str = ""


class BeatOut:
    """Sends each room's beats, bars, key and chords to OSC targets as they are heard."""

    def __init__(self, rooms: Sequence[str], sample_rate: int,
                 send: Callable[[str, OscValue], None], prefix: str = "/art2mus",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.sample_rate = sample_rate
        self.prefix = prefix.rstrip("/")
        self._send = send
        self._clock = clock
        self._rooms = {room: _Room() for room in rooms}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sockets: list[Any] = []  # what close() closes (start()'s UDP clients)
        self._failing = False  # in a run of failed sends (logged once, at its start)
        self.beats_sent = 0
        self.send_errors = 0  # messages ``send`` raised on (not sent)
        self.pump_errors = 0  # sender-thread turns that failed (the thread goes on)

    @classmethod
    def start(cls, targets: Sequence[str], rooms: Sequence[str], sample_rate: int,
              prefix: str = "/art2mus",
              clock: Callable[[], float] = time.monotonic) -> BeatOut:
        """Send to ``targets`` ("HOST:PORT") over UDP from a thread of its own."""
        try:
            from pythonosc.udp_client import SimpleUDPClient
        except ImportError:
            raise DependencyError("[control.osc] beats needs python-osc "
                                  "(pip install 'art2mus[osc]')") from None

        clients = []
        for target in targets:
            host, _, port = target.rpartition(":")
            clients.append(SimpleUDPClient(host, int(port)))

        def send(address: str, value: OscValue) -> None:
            for client in clients:
                try:
                    client.send_message(address, value)
                except OSError:  # a target's network is down: the next beat tries again
                    pass

        beats = cls(rooms, sample_rate, send, prefix, clock)
        beats._sockets = clients
        beats._thread = threading.Thread(target=beats._run, name="beat-out", daemon=True)
        beats._thread.start()
        return beats

    # -- fed by the engine loop ---------------------------------------------

    def observe(self, room: str, grid: BeatGrid | None, heard: int | None) -> None:
        """The room's current grid (None: no change) and the timeline sample heard now."""
        now = self._clock()
        with self._lock:
            state = self._rooms.get(room)
            if state is None:
                return
            if grid is not None and (not state.grids or state.grids[-1] != grid):
                # a re-plan of the same piece keeps its grid: only a new one is added; a
                # queued grid whose first downbeat the new stream replaced is forgotten
                state.grids = [g for g in state.grids if g.anchor < grid.start][
                    -(GRIDS_KEPT - 1):] + [grid]
                if state.next_beat is not None and state.next_beat >= grid.start:
                    # the beats ahead were the replaced grid's: the next one is found again,
                    # after the last one sent (from the playhead, a beat due this very
                    # moment but not yet sent would be lost)
                    state.next_beat = None if state.last_beat is None else \
                        self._next_boundary(state, state.last_beat)
            if heard is None:
                state.advancing = False
                return
            if heard < state.heard:
                state.next_beat = state.last_beat = None  # the timeline restarted
            state.advancing = heard > state.heard
            state.heard, state.observed_at = heard, now
        self._wake.set()

    # -- sending ------------------------------------------------------------

    def _position(self, state: _Room, now: float) -> float:
        elapsed = min(max(0.0, now - state.observed_at), MAX_EXTRAPOLATE_S)
        return state.heard + (elapsed * self.sample_rate if state.advancing else 0.0)

    def pump(self) -> float:
        """Send what the playhead has reached; seconds until the next beat is due."""
        now = self._clock()
        wait = MAX_WAIT_S
        due: list[tuple[str, OscValue]] = []
        with self._lock:
            for room, state in self._rooms.items():
                if not state.grids:
                    continue
                position = self._position(state, now)
                if state.next_beat is None:
                    state.next_beat = self._next_boundary(state, position - 1e-6)
                late = LATE_S * self.sample_rate
                if position - state.next_beat > late:
                    state.next_beat = max(state.next_beat, self._catch_up(state, position))
                for _ in range(MAX_BOUNDARIES_PER_PUMP):
                    if state.next_beat > position:
                        break
                    beat = state.last_beat = state.next_beat
                    following = self._next_boundary(state, beat)
                    if not following > beat:
                        # far out on the timeline a float rounds the boundary onto the one
                        # before: a step on, or the loop would stay on this beat
                        following = beat + self._step(self._grid_at(state, beat))
                    state.next_beat = following
                    if following <= position and position - beat > late:
                        continue  # a stall or a jump: send only the beat playing now
                    due += self._messages(room, state, beat)
                if state.advancing:
                    wait = min(wait, (state.next_beat - position) / self.sample_rate)
        for address, value in due:
            self._deliver(address, value)
        return max(0.0, wait)

    def _deliver(self, address: str, value: OscValue) -> bool:
        """Send one message; False (counted, a run's first logged) if ``send`` raised."""
        try:
            self._send(address, value)
        except Exception as error:  # noqa: BLE001 - rtmidi's errors are not OSError
            self.send_errors += 1
            if not self._failing:
                self._failing = True
                log.warning("%s: a message could not be sent (%r); the next ones are still "
                            "sent, failures counted", type(self).__name__, error)
            return False
        if self._failing:
            self._failing = False
            log.warning("%s: sending again (%d messages failed so far)", type(self).__name__,
                        self.send_errors)
        return True

    def _catch_up(self, state: _Room, position: float) -> float:
        """Where the beats resume after a stall or a jump to ``position``: the beat in
        progress if it began more than :data:`LATE_S` ago, else the first boundary within
        that (those are still sent). Arithmetic on the grid, however far the jump."""
        grid = self._grid_at(state, position)
        in_progress = self._next_boundary(state, position - self._step(grid))
        cut = position - LATE_S * self.sample_rate
        return in_progress if in_progress <= cut else self._next_boundary(state, cut)

    def _grid_at(self, state: _Room, sample: float) -> BeatGrid:
        """The grid playing at ``sample``: the last whose first downbeat is not after it."""
        playing = state.grids[0]
        for grid in state.grids:
            if grid.anchor <= sample + 1e-6:
                playing = grid
        return playing

    def _next_boundary(self, state: _Room, after: float) -> float:
        """The first boundary (:meth:`_grid_boundary`) strictly after ``after``.

        A new piece's first downbeat comes first when it does, and takes the
        place of a boundary of the grid playing up to :data:`DOWNBEAT_TOLERANCE_S`
        before it: one downbeat goes out, the new piece's.
        """
        grid = self._grid_at(state, after)
        boundary = self._grid_boundary(grid, after)
        merge = min(DOWNBEAT_TOLERANCE_S * self.sample_rate, 0.5 * self._step(grid))
        for later in state.grids:
            if after < later.anchor < boundary + merge:
                boundary = later.anchor
        return boundary

    def _grid_boundary(self, grid: BeatGrid, after: float) -> float:
        """The first beat start of ``grid`` strictly after ``after``."""
        return grid.beat_start(grid.beat_index(after) + 1)

    def _step(self, grid: BeatGrid) -> float:
        """Samples between two boundaries of ``grid``: a beat."""
        return grid.beat_samples

    def _messages(self, room: str, state: _Room, beat: float) -> list[tuple[str, OscValue]]:
        grid = self._grid_at(state, beat)
        index = grid.beat_index(beat)
        bar, beat_in_bar = divmod(index, grid.beats_per_bar)
        base = f"{self.prefix}/{room}"
        out: list[tuple[str, OscValue]] = []
        if grid.key != state.key_sent:
            state.key_sent = grid.key
            out.append((f"{base}/key", grid.key))
        if beat_in_bar == 0:
            out.append((f"{base}/bar", bar + 1))
            if grid.chord is not None:
                out.append((f"{base}/chord", grid.chord(bar)))
        out.append((f"{base}/beat", beat_in_bar + 1))
        self.beats_sent += 1
        return out

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                wait = self.pump()
            except Exception as error:  # noqa: BLE001 - the beats must go on
                self.pump_errors += 1
                if not failing:
                    log.error("%s: a send turn failed (%r); the sender goes on",
                              type(self).__name__, error)
                failing, wait = True, MAX_WAIT_S
            else:
                failing = False
            self._wake.wait(wait)
            self._wake.clear()

    def close(self) -> None:
        """Stop the sender thread and close its sockets."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        for client in self._sockets:
            client.close()
        self._sockets = []


#: MIDI clock pulses per quarter note.
PULSES_PER_QUARTER = 24
#: The engine's GIL switch interval while a MIDI clock goes out, seconds.
CLOCK_SWITCH_INTERVAL_S = 0.001
#: SCHED_FIFO priority of the MIDI clock sender (1-99; audio servers use ~70-90).
CLOCK_RT_PRIORITY = 20


def realtime_priority(priority: int) -> bool:
    """Put the calling thread under SCHED_FIFO at ``priority``; whether the system let it.

    A sleeping sender thread woken by the kernel at real-time priority is
    not kept waiting behind busy processes (beside two busy processes the
    clock's p99 jitter went from ~8 ms to ~0.5 ms in a probe). It needs the
    privilege (root, CAP_SYS_NICE or an RLIMIT_RTPRIO such as systemd's
    ``LimitRTPRIO=``); without it the thread stays at normal priority.
    """
    setter = getattr(os, "sched_setscheduler", None)
    if setter is None or not hasattr(os, "SCHED_FIFO"):
        return False
    try:
        setter(0, os.SCHED_FIFO, os.sched_param(priority))  # 0: this thread (Linux)
    except OSError:
        return False
    return True
_CLOCK, _START, _STOP = 0xF8, 0xFA, 0xFC


class MidiClockOut(BeatOut):
    """MIDI clock out (24 pulses per quarter note, Start, Stop) from one room's music.

    For a drum machine or a DAW slaved to the room: the pulses follow the
    room's bar grid as it is heard, as :class:`BeatOut`'s beats do (the same
    playhead estimate, the same sender thread), at the piece's tempo
    (``BeatGrid.tempo_bpm``, quarter notes per minute; the grid's beat where a
    generator does not say), so a new artwork's tempo reaches the slave at its
    first downbeat. Start goes out with the first pulse, on a bar line of the
    music; Stop when the engine closes. A stalled playhead stops the pulses
    (a slave holds its tempo). ``send`` takes the raw message bytes.
    """

    def __init__(self, room: str, sample_rate: int, send: Callable[[list[int]], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__([room], sample_rate, lambda _address, value: send([int(value)]),
                         clock=clock)
        self._send_raw = send
        self._port: Any = None
        self.started = False
        self.pulses_sent = 0
        self.realtime = False  # whether the sender thread got real-time priority
        self._prioritised = threading.Event()

    @classmethod
    def open(cls, port_name: str, room: str, sample_rate: int,
             rtmidi_module: Any = None) -> MidiClockOut:
        """Send on the output port whose name contains ``port_name``, from a thread of its own."""
        from ground.midi_ports import open_output_port

        port, _ = open_output_port(port_name, "control.midi.clock_out", rtmidi_module)
        clock_out = cls(room, sample_rate, port.send_message)
        clock_out._port = port
        clock_out._thread = threading.Thread(target=clock_out._run_realtime,
                                             name="midi-clock-out", daemon=True)
        # The sender waits for the GIL while the engine generates in Python: Python's
        # 5 ms switch interval became 5 ms of pulse jitter (benchmarks/midi_clock_jitter.py).
        sys.setswitchinterval(min(sys.getswitchinterval(), CLOCK_SWITCH_INTERVAL_S))
        clock_out._thread.start()
        clock_out._prioritised.wait(1.0)
        return clock_out

    def _run_realtime(self) -> None:
        """The sender loop at real-time priority where the system allows it."""
        self.realtime = realtime_priority(CLOCK_RT_PRIORITY)
        self._prioritised.set()
        self._run()

    def _grid_boundary(self, grid: BeatGrid, after: float) -> float:
        """The first pulse of ``grid`` strictly after ``after``: 24 to the quarter note."""
        pulse = self._pulse(grid)
        index = math.floor((after - grid.anchor) / pulse + 1e-9) + 1
        return grid.anchor + index * pulse

    def _step(self, grid: BeatGrid) -> float:
        """Samples between two pulses of ``grid``."""
        return self._pulse(grid)

    def _pulse(self, grid: BeatGrid) -> float:
        """Samples per MIDI clock pulse under ``grid``."""
        if grid.tempo_bpm is not None and grid.tempo_bpm > 0:
            return 60.0 / grid.tempo_bpm * self.sample_rate / PULSES_PER_QUARTER
        return grid.beat_samples / PULSES_PER_QUARTER

    def _messages(self, room: str, state: _Room, beat: float) -> list[tuple[str, OscValue]]:
        out: list[tuple[str, OscValue]] = []
        if not self.started:
            grid = self._grid_at(state, beat)
            position = (beat - grid.anchor) / grid.bar_samples
            if abs(position - round(position)) > 1e-6:
                return out  # Start waits for a bar line, so the slave's bar 1 is the music's
            self.started = True
            out.append(("start", _START))
        out.append(("clock", _CLOCK))
        self.pulses_sent += 1
        return out

    def _deliver(self, address: str, value: OscValue) -> bool:
        sent = super()._deliver(address, value)
        if not sent and value == _CLOCK:
            self.pulses_sent -= 1  # counted when it was due: it never left
        if not sent and value == _START:
            # a drum machine that missed Start ignores the pulses: Start again at the next
            # bar line (a synth unplugged and back, its driver refusing the first message)
            self.started = False
        return sent

    def close(self) -> None:
        """Stop the pulses, send Stop (if started) and close the port."""
        super().close()
        if self.started:
            try:
                self._send_raw([_STOP])
            except Exception:  # noqa: BLE001 - a port already gone: nothing more to tell it
                pass
        if self._port is not None:
            self._port.close_port()
            self._port = None

