"""MIDI in (python-rtmidi): knobs, faders and pads move the live parameters.

``[control.midi]`` names the input port by substring (``port = "nanoKONTROL"``)
and/or opens a virtual port called ``art2mus`` that any program can connect
to; ``cc`` and ``notes`` map controller and note numbers to parameters
(``"intensity"``, or ``"intensity@room-1"`` for one room); a key is ``"74"``
(any channel) or ``"2:74"`` (channel 2 only, which wins over the any-channel
entry). ``art2mus midi-learn`` writes those tables by asking you to move
each control. A **program change** recalls the ``[[control.scenes]]`` entry
with that program number (:meth:`~installation.control.ControlHub.recall_scene`).

**Clock** (``clock_in``): MIDI clock on the same port(s) sets every room's
``tempo_bpm`` (:mod:`installation.tempo_sync`): the port is told to pass
timing messages, pulses are timed by rtmidi's own delta times, and the
tempo is passed on once a beat. rtmidi times each port's messages from that
port's previous one, so each port keeps its own MIDI time and its own clock
reading (:class:`PortTime`): a knob turned on the virtual port is not time
between the pulses of a clock on the controller's. After Start (or Song
Position Pointer then Continue) the clock's downbeats (bars of
``clock_beats``) go to the engine, which lays the rooms' bars on them; the
pulses' MIDI time is put on the wall clock by the least delayed of their
port's recent arrivals. A beat whose tempo is
refused (out of 20..300 bpm) sends no downbeat either: a misbehaving clock
neither sets the tempo nor moves the bars. Start, Continue and Stop are
logged when the transport's state changes (:class:`TransportLog`), a
controller stuck repeating them is only counted. Real-time and system
common messages have no channel, so the ``channel`` filter does not drop them.

**Feedback** (``feedback_port``): :class:`MidiFeedback` listens to the hub and
sends every parameter change, from any surface, as the CC mapped to it (the
map read in reverse, value -> 0..127), so motorised faders and LED rings
follow; the control whose move caused a change gets no echo of it.

How a message moves a parameter:

- **CC on a continuous or choice parameter**: 0..127 spans the parameter's
  range (a choice's travel is split between its values). With
  ``soft_takeover`` (the default) a knob does nothing until it reaches the
  parameter's current value (within 2 steps, or crossing it), so a knob left
  somewhere else, or a value changed by OSC or a reload meanwhile, never
  makes the music jump;
- **CC on freeze**: >= 64 freezes, < 64 releases (a latching button);
- **CC on next_variation**: a rise through 64 steps once (a momentary pad);
- **note on**: toggles freeze, steps next_variation, or sets a continuous
  parameter to the velocity's position in its range.

**Plugging in** (:class:`PortWatch`): the named port and the feedback port
are looked for again every :data:`WATCH_EVERY_S` (:meth:`MidiControlInput.watch`,
from the surfaces' watch thread, never from the audio path): a controller
plugged in after the start is opened when it appears; one unplugged is
dropped, and opened again when it comes back, whatever new client number
ALSA gives it (``nanoKONTROL2 MIDI 1 28:0`` for ``... 24:0``). Each time an
event says so (``midi_in_opened``, ``midi_in_lost``; ``midi_in_waiting`` once
when it is missing at the start; ``midi_feedback_*`` for feedback) and a log
line too, and
:meth:`MidiControlInput.surface_state` is what ``art2mus status`` shows. Two
ports that both match are said once (``midi_in_ambiguous``): the first is used.
An unplug and replug between two looks that comes back under the very same
name is not seen (rtmidi tells no disconnection).

The rtmidi port is the hardware seam: :class:`MidiControlInput` takes any
object with ``set_callback``/``close_port`` and :meth:`handle` takes a raw
message, so tests drive it with a fake port; :meth:`MidiControlInput.open`
takes the rtmidi module itself, so tests hand it a stand-in whose port list
changes.

Junk (a message that is not bytes 0..255 with a status byte first, a value
the hub refuses, a mapping to an unknown room) is counted by reason in
:attr:`MidiControlInput.refusals` and summarised at most once per 10 s
(:class:`~installation.control.RefusalLog`), never logged per message.
Messages that are valid MIDI but not mapped (clock without ``clock_in``,
other channels) are only counted as ``ignored``.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from ground.errors import ConfigError, DependencyError
from ground.events import EventSink, null_sink
from ground.midi_ports import open_matching
from ground.params import Parameter, parse_target
from installation.config import MidiInConfig, parse_midi_key
from installation.control import ControlHub, ParameterChange, RefusalLog
from installation.tempo_sync import ClockTempo, GridSender, TempoFollower, takes_tempo

log = logging.getLogger(__name__)

VIRTUAL_PORT_NAME = "art2mus"
#: Soft takeover picks a knob up within this many steps of the current value.
PICKUP_STEPS = 2
#: Arrivals the MIDI-time-to-wall-time offset is taken over (the least delayed wins).
WALL_OFFSET_KEPT = 96
#: Transport changes (Start/Continue vs Stop) logged per :data:`TRANSPORT_WINDOW_S` at most.
TRANSPORT_LOGS_PER_WINDOW = 8
#: The window transport changes are counted over, and the summary's interval, seconds.
TRANSPORT_WINDOW_S = 10.0
#: How often the surfaces' watch looks for a MIDI port that is missing or may have gone, s.
WATCH_EVERY_S = 2.0


def _rtmidi(rtmidi_module: Any = None) -> Any:
    if rtmidi_module is not None:
        return rtmidi_module
    try:
        return importlib.import_module("rtmidi")
    except ImportError:
        raise DependencyError("MIDI in needs python-rtmidi "
                              "(pip install 'art2mus[midi]')") from None


def new_midi_in(rtmidi_module: Any = None) -> Any:
    """An rtmidi input, or a DependencyError in one line when this machine has no MIDI."""
    module = _rtmidi(rtmidi_module)
    try:
        return module.MidiIn()
    except Exception as exc:  # rtmidi.SystemError: no ALSA sequencer / CoreMIDI here
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DependencyError(
            f"MIDI in: no MIDI system on this machine ({first}); on Linux load the ALSA "
            "sequencer (`modprobe snd-seq`) or remove [control.midi] port/virtual"
        ) from None


def new_midi_out(field: str, rtmidi_module: Any = None) -> Any:
    """An rtmidi output, or a DependencyError naming ``field`` when there is no MIDI here."""
    module = _rtmidi(rtmidi_module)
    try:
        return module.MidiOut()
    except Exception as exc:  # rtmidi.SystemError: no ALSA sequencer / CoreMIDI here
        raise DependencyError(f"{field}: no MIDI back end ({exc})") from None


def open_input_port(name: str, rtmidi_module: Any = None) -> tuple[Any, str]:
    """The first input port whose name contains ``name`` (case-insensitive), and its name."""
    midi_in = new_midi_in(rtmidi_module)
    return midi_in, open_matching(midi_in, name, "control.midi.port", "input")


#: A control: (channel 1-16, or 0 for any, number).
ControlKey = tuple[int, int]


def _mapping(table: dict[str, str], field: str) -> dict[ControlKey, tuple[Parameter, str]]:
    return {parse_midi_key(k, field): parse_target(v) for k, v in table.items()}


def _origin(kind: str, channel: int, number: int) -> str:
    """The ``origin`` of a change made by one physical control (what feedback skips)."""
    return f"midi:{kind}:{channel}:{number}"


class MidiFeedback:
    """Sends each parameter change out as the CC(s) mapped to it (a hub listener).

    ``port`` is anything with rtmidi's ``send_message``, or None while the
    feedback port is not there (:meth:`set_port` when it appears). A CC mapped
    on any channel is sent on ``config.channel`` (or channel 1). A trigger has
    no position to show and is not sent.
    """

    def __init__(self, config: MidiInConfig, hub: ControlHub, port: Any = None) -> None:
        self.config = config
        self.hub = hub
        self.port = port
        self.cc = _mapping(config.cc, "control.midi.cc")
        self.sent = 0
        # changes arrive on the OSC, MIDI and console threads; one rtmidi port is not
        # safe to send on from several at once
        self._send_lock = threading.Lock()
        self._unsubscribe = hub.subscribe(self.on_change)

    def on_change(self, change: ParameterChange) -> None:
        """Send ``change`` to every CC mapped to its parameter, but the one that caused it."""
        for (channel, number), (param, room) in self.cc.items():
            if param.name != change.name or param.kind == "trigger":
                continue
            if change.room != "*" and room != change.room:
                continue
            out_channel = channel or self.config.channel or 1
            if change.origin == _origin("cc", out_channel, number) or (
                    channel == 0 and change.origin.startswith("midi:cc:")
                    and change.origin.endswith(f":{number}")):
                continue  # the control that moved: it is already there
            unit = param.to_unit(self.hub.current(param.name, room))
            with self._send_lock:
                if self.port is None:  # unplugged: nothing to show it on
                    return
                self.port.send_message([0xB0 | (out_channel - 1), number, round(unit * 127)])
                self.sent += 1

    def set_port(self, port: Any) -> Any:
        """Send on ``port`` from now on (None: nowhere); the port sent on before."""
        with self._send_lock:
            previous, self.port = self.port, port
        return previous

    def close(self) -> None:
        """Stop listening and close the port."""
        self._unsubscribe()
        _close_port(self.set_port(None))


class TransportLog:
    """Logs a MIDI clock's Start, Continue and Stop when the transport changes state.

    A controller stuck sending Start, or a merger looping transport messages
    back, must not write an event per message: one that leaves the state as
    it was (running after Start or Continue, stopped after Stop) is only
    counted, and at most :data:`TRANSPORT_LOGS_PER_WINDOW` changes per
    :data:`TRANSPORT_WINDOW_S` are logged (``midi_clock``). What was not
    logged is told at most once a window (``midi_clock_summary``: the counts
    by message and the state now). ``by_message`` are running totals.
    Thread-safe (each input port calls from its own thread).
    """

    def __init__(self, log_event: EventSink = null_sink, every_s: float = TRANSPORT_WINDOW_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.log_event = log_event
        self.every_s = every_s
        self.by_message: Counter[str] = Counter()
        self.running: bool | None = None  # the transport's state (None: no message yet)
        self._clock = clock
        self._lock = threading.Lock()
        self._since = clock()
        self._logged = 0  # changes logged since _since
        self._unlogged: Counter[str] = Counter()  # messages not logged since the last summary

    def note(self, message: str, **details: Any) -> None:
        """One transport ``message`` ("start", "continue" or "stop"), ``details`` for its event."""
        self.flush_due()
        running = message != "stop"
        with self._lock:
            self.by_message[message] += 1
            changed = running != self.running
            self.running = running
            log_it = changed and self._logged < TRANSPORT_LOGS_PER_WINDOW
            if log_it:
                self._logged += 1
            else:
                self._unlogged[message] += 1
        if log_it:
            self.log_event("midi_clock", state=message, **details)

    def flush_due(self) -> None:
        """Write the summary if ``every_s`` has passed since the window began."""
        if self._clock() - self._since >= self.every_s:
            self.flush()

    def flush(self) -> None:
        """Summarise the messages not logged since the last summary (nothing if none)."""
        with self._lock:
            unlogged, self._unlogged = self._unlogged, Counter()
            began, self._since, self._logged = self._since, self._clock(), 0
            running = self.running
        if unlogged:
            self.log_event("midi_clock_summary", unlogged=sum(unlogged.values()),
                           by_message=dict(unlogged), seconds=round(self._since - began, 3),
                           state="running" if running else "stopped")


def open_virtual_port(rtmidi_module: Any = None) -> Any:
    """A virtual input port named :data:`VIRTUAL_PORT_NAME` (ALSA, CoreMIDI)."""
    midi_in = new_midi_in(rtmidi_module)
    midi_in.open_virtual_port(VIRTUAL_PORT_NAME)
    return midi_in


def _close_port(port: Any) -> None:
    """Stop ``port``'s callback (an input's) and close it; None is nothing to close."""
    if port is None:
        return
    if hasattr(port, "cancel_callback"):
        port.cancel_callback()
    port.close_port()


class PortWatch:
    """One port named by part of its name, opened while it is there (see the module doc).

    ``make()`` is a new rtmidi MidiIn or MidiOut: one, never opened, lists the
    ports at each :meth:`look`; each opening gets a fresh one. ``opened(port,
    name)`` and ``lost(port)`` hand the port to its user and take it back
    (``lost`` closes it). ``what`` names it in the log ("MIDI in"), ``event``
    in the events (``midi_in`` -> ``midi_in_opened``, ``_lost``, ``_waiting``,
    ``_ambiguous``), ``field`` and ``direction`` in :func:`open_matching`'s
    error. Looked at from one thread at a time (its owner's lock).
    """

    def __init__(self, wanted: str, *, field: str, direction: str, make: Callable[[], Any],
                 what: str, event: str, opened: Callable[[Any, str], None],
                 lost: Callable[[Any], None], log_event: EventSink = null_sink) -> None:
        self.wanted = wanted
        self.field = field
        self.direction = direction
        self.make = make
        self.what = what
        self.event = event
        self.opened = opened
        self.lost = lost
        self.log_event = log_event
        self.lister = make()  # DependencyError here: no MIDI on this machine at all
        self.port: Any = None
        self.name: str | None = None  # the port open now
        self._said_waiting = False  # until it opens: "waiting" once, not every look
        self._said_twins = False  # two matching ports: said once for the watch's life

    def look(self) -> bool:
        """Open the port if it has appeared, drop it if it has gone; whether it is open."""
        names = [str(name) for name in self.lister.get_ports()]
        if self.name is not None:
            if self.name in names:
                return True
            port, name = self.port, self.name
            self.port = self.name = None
            self.lost(port)
            self._said_waiting = True  # the loss says it waits
            self.log_event(f"{self.event}_lost", port=name, waiting_for=self.wanted)
            log.warning("%s: port %r is gone (unplugged?); it is opened again when a port "
                        "containing %r appears (looked for every %g s)", self.what, name,
                        self.wanted, WATCH_EVERY_S)
        matching = [name for name in names if self.wanted.lower() in name.lower()]
        if not matching:
            if not self._said_waiting:
                self._said_waiting = True
                self.log_event(f"{self.event}_waiting", port=self.wanted, available=names)
                log.warning("%s: no MIDI %s port contains %r (available: %s); it is opened "
                            "when it appears (looked for every %g s)", self.what,
                            self.direction, self.wanted,
                            ", ".join(repr(n) for n in names) or "none", WATCH_EVERY_S)
            return False
        if len(matching) > 1 and not self._said_twins:
            self._said_twins = True
            self.log_event(f"{self.event}_ambiguous", port=self.wanted, matching=matching,
                           using=matching[0])
            log.warning("%s: %d MIDI %s ports contain %r (%s): only the first is used; name "
                        "more of the one wanted in %s", self.what, len(matching),
                        self.direction, self.wanted, ", ".join(repr(n) for n in matching),
                        self.field)
        port = self.make()
        try:
            name = open_matching(port, self.wanted, self.field, self.direction)
        except ConfigError:  # gone again since the list was read: the next look sees
            return False
        self.port, self.name = port, name
        self._said_waiting = False
        self.opened(port, name)
        self.log_event(f"{self.event}_opened", port=name)
        log.info("%s: opened %r", self.what, name)
        return True

    def state(self) -> str:
        """The port open now, or what is waited for."""
        return f"open: {self.name}" if self.name is not None else f"waiting for {self.wanted!r}"


class PortTime:
    """One input port's own time: the MIDI time of its messages, when that is on the
    wall clock, and the MIDI clock read from its pulses.

    rtmidi gives each message the seconds since the previous one *on the same
    port*: summed across ports, another port's messages would add time between a
    clock's pulses (a knob turned on the virtual port halved the tempo followed).
    Touched only by its port's callback thread (or by :meth:`MidiControlInput.handle`'s
    caller for messages that came on no port).
    """

    def __init__(self, clock: ClockTempo | None) -> None:
        self.midi_time = 0.0
        self.clock = clock
        # wall time minus MIDI time, the least of the recent arrivals (the least delayed)
        self._offsets: deque[float] = deque(maxlen=WALL_OFFSET_KEPT)

    def arrived(self, delta: object, wall: float) -> float:
        """A message ``delta`` s after this port's previous one, seen at ``wall``: its MIDI
        time (a delta that is not a sane number of seconds adds nothing)."""
        if isinstance(delta, int | float) and not isinstance(delta, bool) \
                and 0.0 <= delta < 3600.0:
            self.midi_time += delta
        self._offsets.append(wall - self.midi_time)
        return self.midi_time

    def wall_offset(self) -> float:
        """Wall time minus this port's MIDI time (0 when messages came without it)."""
        return min(self._offsets) if self._offsets else 0.0


class MidiControlInput:
    """Turns MIDI messages from one or more ports into hub parameter changes."""

    def __init__(self, config: MidiInConfig, hub: ControlHub,
                 log_event: EventSink = null_sink, ports: list[Any] | None = None,
                 refusals: RefusalLog | None = None,
                 feedback: MidiFeedback | None = None,
                 transport: TransportLog | None = None) -> None:
        self.config = config
        self.hub = hub
        self.log_event = log_event
        self.refusals = refusals or RefusalLog("midi", log_event)
        self.transport = transport or TransportLog(log_event)
        self.ports: list[Any] = []
        self.feedback = feedback
        self.cc = _mapping(config.cc, "control.midi.cc")
        self.notes = _mapping(config.notes, "control.midi.notes")
        self.handled = 0
        self.ignored = 0
        # soft takeover: per control, whether it has picked its parameter up, the
        # value it last set, and where the knob last was (to see it cross the value)
        self._picked: dict[ControlKey, bool] = {}
        self._set_by_us: dict[ControlKey, float] = {}
        self._last_unit: dict[ControlKey, float] = {}
        self._cc_high: dict[ControlKey, bool] = {}
        # MIDI clock in: each port's pulses on its own time (PortTime); the tempo and bar
        # grid they give, passed on once a beat
        self.tempo = TempoFollower(hub, "midi-clock", log_event, self.refusals) \
            if config.clock_in else None
        self.grid = GridSender(hub)
        self._unported = self._port_time()  # messages handed to handle() with no port
        #: the named port and the feedback port, looked for by :meth:`watch`
        self.watches: list[PortWatch] = []
        self.virtual = False  # the virtual port is among the ports
        # the watch's thread attaches and drops ports while close() may run
        self._lock = threading.Lock()
        self._closed = False
        for port in ports or []:
            self.attach(port)

    @classmethod
    def open(cls, config: MidiInConfig, hub: ControlHub, log_event: EventSink = null_sink,
             rtmidi_module: Any = None) -> MidiControlInput:
        """Open the virtual port, and the configured port and feedback port if they are
        there (else they are waited for: :meth:`watch`); listen.

        A DependencyError when this machine has no MIDI at all.
        """
        ports = []
        if config.virtual:
            ports.append(open_virtual_port(rtmidi_module))
            log_event("midi_in_opened", port=VIRTUAL_PORT_NAME, virtual=True)
        feedback = MidiFeedback(config, hub) if config.feedback_port else None
        self = cls(config, hub, log_event, ports, feedback=feedback)
        self.virtual = config.virtual
        try:
            if config.port:
                self.watches.append(PortWatch(
                    config.port, field="control.midi.port", direction="input",
                    make=lambda: new_midi_in(rtmidi_module), what="MIDI in", event="midi_in",
                    opened=lambda port, _name: self.attach(port), lost=self.detach,
                    log_event=log_event))
            if feedback is not None:
                # "same": the controller's output twin carries the input port's name
                wanted = config.port if config.feedback_port == "same" else config.feedback_port
                field = "control.midi.feedback_port"
                self.watches.append(PortWatch(
                    wanted, field=field, direction="output",
                    make=lambda: new_midi_out(field, rtmidi_module), what="MIDI feedback",
                    event="midi_feedback", opened=lambda port, _name: feedback.set_port(port),
                    lost=lambda _port: _close_port(feedback.set_port(None)),
                    log_event=log_event))
            self.watch()
        except BaseException:
            self.close()  # the virtual port already open
            raise
        return self

    def watch(self) -> None:
        """One look for the named port and the feedback port (every :data:`WATCH_EVERY_S`
        from the surfaces' watch): open what appeared, drop what went."""
        with self._lock:
            if self._closed:
                return
            for watch in self.watches:
                watch.look()

    def surface_state(self) -> dict[str, str]:
        """What ``art2mus status`` shows of MIDI in: the port open, or the one waited for."""
        state: dict[str, str] = {}
        ports = [w.state() for w in self.watches if w.event == "midi_in"]
        if self.virtual:
            ports.append(f"virtual port {VIRTUAL_PORT_NAME!r}")
        state["MIDI in"] = "; ".join(ports) or "no port"
        for w in self.watches:
            if w.event == "midi_feedback":
                state["MIDI feedback"] = w.state()
        return state

    def _port_time(self) -> PortTime:
        return PortTime(ClockTempo(self.config.clock_beats) if self.config.clock_in else None)

    def attach(self, port: Any) -> None:
        """Listen to ``port`` (an opened rtmidi MidiIn), its messages on a time of its own."""
        if self.config.clock_in:
            port.ignore_types(sysex=True, timing=False, active_sense=True)
        times = self._port_time()

        def callback(event: tuple[list[int], float], data: Any = None) -> None:
            self._arrived(event, times)

        port.set_callback(callback)
        self.ports.append(port)

    def detach(self, port: Any) -> None:
        """Stop listening to ``port`` and close it (its device is gone)."""
        if port in self.ports:
            self.ports.remove(port)
        _close_port(port)

    def _arrived(self, event: tuple[list[int], float], times: PortTime) -> None:
        try:
            at = times.arrived(event[1], time.time())  # rtmidi: s since this port's last
            self.handle(event[0], at, times)
        except Exception as error:  # noqa: BLE001 - rtmidi's thread must never see one
            self.refusals.refuse("internal-error", error=repr(error)[:200])

    def handle(self, message: Any, at: float | None = None,
               port_time: PortTime | None = None) -> bool:
        """Apply one raw MIDI message; True if it moved a parameter.

        ``at`` (seconds, on ``port_time``: the time of the port it came on) is
        when it arrived: MIDI clock pulses are timed by it (the wall clock when
        None). Messages handed in with no port share one time of their own.
        """
        times = port_time or self._unported
        self.refusals.accept()
        self.refusals.flush_due()
        if not _is_midi(message):
            self.refusals.refuse("malformed", message=repr(message)[:100])
            return self._ignore()
        if message[0] >= 0xF8:  # system real-time (clock, start, stop): no channel
            return self._on_realtime(message[0], time.time() if at is None else at, times)
        if message[0] == 0xF2 and len(message) >= 3:  # Song Position Pointer: no channel
            if times.clock is None:
                return self._ignore()
            times.clock.song_position(message[1] | message[2] << 7)
            return self._ignore()
        channel = (message[0] & 0x0F) + 1
        if self.config.channel and channel != self.config.channel:
            return self._ignore()
        if message[0] & 0xF0 == 0xC0 and len(message) >= 2:
            return self._on_program(channel, message[1])
        if len(message) < 3:
            return self._ignore()
        status, number, value = message[0] & 0xF0, message[1], message[2]
        try:
            if status == 0xB0 and (key := self._find(self.cc, channel, number)) is not None:
                param, room = self.cc[key]
                return self._on_cc(key, param, room, value, _origin("cc", channel, number))
            if status == 0x90 and value > 0 and (
                    key := self._find(self.notes, channel, number)) is not None:
                param, room = self.notes[key]
                return self._on_note(param, room, value, _origin("note", channel, number))
        except ValueError as error:  # an unknown room in the mapping: count, keep going
            self.refusals.refuse("bad-value", message=list(message)[:3], error=str(error)[:300])
        return self._ignore()

    def _on_realtime(self, status: int, at: float, times: PortTime) -> bool:
        clock = times.clock
        if clock is None or self.tempo is None:
            return self._ignore()
        self.transport.flush_due()  # a summary due after a flood goes out with the next pulse
        if status == 0xF8:
            reading = clock.pulse(at)  # once a beat
            if reading is None:
                return self._ignore()
            moved = self.tempo.offer(reading.bpm, origin="midi:clock")
            # the rooms' bars on the clock's downbeats, at the tempo they play; a beat whose
            # tempo was refused has downbeats timed at that tempo: they would move the bars
            if reading.downbeat is not None and self.tempo.tempo is not None \
                    and takes_tempo(reading.bpm):
                self.grid.offer(reading.downbeat + times.wall_offset(), clock.beats_per_bar,
                                self.tempo.tempo)
            return moved or self._ignore()
        if status == 0xFA:
            clock.start()
            self.transport.note("start")
        elif status == 0xFB:
            clock.resume()
            self.transport.note("continue", position=clock.position)
        elif status == 0xFC:  # the tempo already set stays: the music does not stop
            clock.stop()
            self.transport.note("stop", tempo_bpm=self.tempo.tempo)
        return self._ignore()

    @staticmethod
    def _find(table: dict[ControlKey, Any], channel: int, number: int) -> ControlKey | None:
        """The map key for this control: its channel's own entry, else the any-channel one."""
        for key in ((channel, number), (0, number)):
            if key in table:
                return key
        return None

    def _ignore(self) -> bool:
        self.ignored += 1
        return False

    def _on_program(self, channel: int, program: int) -> bool:
        scenes = [s for s in self.hub.config.control.scenes if s.program == program]
        if not scenes:
            return self._ignore()
        try:
            self.hub.recall_scene(scenes[0], source="midi",
                                  origin=_origin("program", channel, program))
        except ValueError as error:  # a scene naming a room no longer configured
            self.refusals.refuse("bad-value", message=[0xC0 | (channel - 1), program],
                                 error=str(error)[:300])
            return self._ignore()
        return self._done()

    def _on_cc(self, number: ControlKey, param: Parameter, room: str, value: int,
               origin: str) -> bool:
        if param.kind == "toggle":
            self.hub.set(param.name, 1.0 if value >= 64 else 0.0, room, source="midi",
                         origin=origin)
            return self._done()
        if param.kind == "trigger":
            high = value >= 64
            rising = high and not self._cc_high.get(number, False)
            self._cc_high[number] = high
            if rising:
                self.hub.trigger(param.name, room, source="midi", origin=origin)
                return self._done()
            return self._ignore()
        unit = value / 127.0
        previous_unit = self._last_unit.get(number)
        self._last_unit[number] = unit
        if self.config.soft_takeover and not self._takes_over(number, param, room, unit,
                                                             previous_unit):
            return self._ignore()
        applied = self.hub.set(param.name, param.from_unit(unit), room, source="midi",
                               origin=origin)
        self._set_by_us[number] = applied
        return self._done()

    def _takes_over(self, number: ControlKey, param: Parameter, room: str, unit: float,
                    previous_unit: float | None) -> bool:
        current = self.hub.current(param.name, room)
        if self._picked.get(number) and self._set_by_us.get(number) != current:
            self._picked[number] = False  # moved by someone else: pick it up again
        if self._picked.get(number):
            return True
        target = param.to_unit(current)
        near = abs(unit - target) <= PICKUP_STEPS / 127.0
        crossed = previous_unit is not None and (previous_unit - target) * (unit - target) <= 0
        if near or crossed:
            self._picked[number] = True
            return True
        return False

    def _on_note(self, param: Parameter, room: str, velocity: int, origin: str) -> bool:
        if param.kind == "toggle":
            self.hub.toggle(param.name, room, source="midi", origin=origin)
        elif param.kind == "trigger":
            self.hub.trigger(param.name, room, source="midi", origin=origin)
        else:
            self.hub.set(param.name, param.from_unit(velocity / 127.0), room, source="midi",
                         origin=origin)
        return self._done()

    def _done(self) -> bool:
        self.handled += 1
        return True

    def close(self) -> None:
        """Close every port; the refusals not yet summarised are summarised now."""
        with self._lock:  # a look of the watch's in progress ends first; none starts after
            self._closed = True
            ports, self.ports = self.ports, []
        for port in ports:
            _close_port(port)
        if self.feedback is not None:
            self.feedback.close()
            self.feedback = None
        self.refusals.flush()
        self.transport.flush()


def _is_midi(message: Any) -> bool:
    """True for a non-empty sequence of ints 0..255: a status byte, then data bytes 0..127."""
    if not isinstance(message, list | tuple) or not message:
        return False
    if not all(isinstance(b, int) and not isinstance(b, bool) for b in message):
        return False
    if message[0] == 0xF0:  # system exclusive: data bytes, then 0xF7
        return all(0 <= b <= 0xFF for b in message)
    return 0x80 <= message[0] <= 0xFF and all(0 <= b <= 0x7F for b in message[1:])


def learn_mapping(port: Any, targets: list[str], prompt: Callable[[str], None],
                  timeout_s: float = 30.0, clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep) -> dict[str, dict[str, str]]:
    """Ask for each target in turn and map the first control that moves to it.

    ``port.get_message()`` returns ``(message, delta)`` or None (rtmidi's
    polling interface). A CC is mapped once it has moved by a few steps (so
    a noisy fader at rest is not taken); a note on is mapped at once.
    Returns ``{"cc": {...}, "notes": {...}}`` as ``[control.midi]`` wants it.
    """
    for target in targets:
        parse_target(target)  # refuse a typo before the user starts turning knobs
    mapping: dict[str, dict[str, str]] = {"cc": {}, "notes": {}}
    used: set[tuple[str, int]] = set()
    kept: list[list[int]] = []  # other controls' messages seen while one settled

    def next_message() -> list[int] | None:
        if kept:
            return kept.pop(0)
        event = port.get_message()
        return None if event is None else list(event[0])

    for target in targets:
        prompt(f"move the control for {target} (or press a pad)...")
        first_seen: dict[int, int] = {}
        deadline = clock() + timeout_s
        learned: tuple[str, int] | None = None
        while learned is None:
            if clock() > deadline:
                raise ConfigError(f"midi-learn: no control moved for {target!r} within "
                                  f"{timeout_s:.0f} s")
            message = next_message()
            if message is None:
                sleep(0.005)
                continue
            if len(message) < 3:
                continue
            status, number, value = message[0] & 0xF0, message[1], message[2]
            if status == 0x90 and value > 0 and ("notes", number) not in used:
                learned = ("notes", number)
            elif status == 0xB0 and ("cc", number) not in used:
                start = first_seen.setdefault(number, value)
                absolute = parse_target(target)[0].kind in ("continuous", "choice")
                if abs(value - start) >= 3 or not absolute:
                    learned = ("cc", number)
        table, number = learned
        mapping[table][str(number)] = target
        used.add(learned)
        prompt(f"  {target} <- " + (f"CC {number}" if table == "cc" else f"note {number}"))
        # Let the control settle: its trailing messages must not be taken for the
        # next target, but other controls' messages are kept.
        settle = clock() + 0.5
        while clock() < settle:
            event = port.get_message()
            if event is None:
                sleep(0.01)
                continue
            message = list(event[0])
            same_cc = table == "cc" and len(message) >= 2 and message[0] & 0xF0 == 0xB0 \
                and message[1] == number
            same_note = table == "notes" and len(message) >= 2 \
                and message[0] & 0xF0 in (0x80, 0x90) and message[1] == number
            if not (same_cc or same_note):
                kept.append(message)
    return mapping


def mapping_toml(mapping: dict[str, dict[str, str]]) -> str:
    """The ``[control.midi]`` tables for a config file."""
    lines = ["[control.midi.cc]"]
    lines += [f'"{k}" = "{v}"' for k, v in sorted(mapping["cc"].items(), key=lambda kv: int(kv[0]))]
    lines += ["", "[control.midi.notes]"]
    lines += [f'"{k}" = "{v}"'
              for k, v in sorted(mapping["notes"].items(), key=lambda kv: int(kv[0]))]
    return "\n".join(lines) + "\n"
