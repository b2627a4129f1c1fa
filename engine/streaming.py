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

Conditioning is computed once per artwork and cached by artwork id, in a
least-recently-used cache of :data:`CONDITION_CACHE_SIZE` artworks (artwork
ids come from the network: a peer sending endless new ids must not grow the
engine); the artwork playing is never evicted.

Live control (knobs, OSC, config reload; see :mod:`ground.params`)
arrives as :meth:`RoomSession.set_controls`, which sets the fields the
parameter table names and knows no parameter by name. Intensity, brightness
and tempo bias change the room's condition (what they mean is the
generator's: its ``apply_controls``), the variation its seed; either change is
played as a transition, at most once per ``min_change_interval_s`` so a
sweeping knob does not restart the music on every tick. Freeze holds the
current artwork whatever capture reports; transition time sets the
crossfade. :meth:`RoomSession.tick` also moves a room whose capture has
been silent for ``view_timeout_s`` (capture down, camera gone) to the
empty-room ambience. A control value that is not a finite number is ignored
and counted (:attr:`RoomSession.refused_controls`); a finite one is clamped to
the parameter's range (:mod:`ground.params`), whatever the sender.

**Tempo sync**: a Control ``set`` may also carry an outside bar grid
(:data:`SYNC_KEYS`: the wall time of one of its downbeats, as seconds after
UTC midnight, since a Control value stays below 1e9; its beats per bar and
its tempo; sent by the supervisor's Link or MIDI clock follower, never
stored or echoed). :meth:`RoomSession.set_sync` maps the downbeat onto the
room's timeline through audio_out's playback clock (the wall time its
playhead is heard), so the music's bar lines are *heard* on the session's
downbeats, and hands it to the generator as ``controls.sync``
(:class:`~engine.generators.base.BarSync`). A grid within
:data:`SYNC_TOLERANCE_S` of the one in force changes nothing (clock jitter);
one further off (the two clocks drifted, audio_out restarted) re-plans the
room, which nudges its bars onto the new grid.

**Whose clock**: each report names the audio_out process that sent it
(``PlaybackClock.instance``). A new instance is a restart, taken at once; two
instances whose reports alternate are two machines configured with the same
room id: the room follows the first heard and refuses the other's reports
(``duplicate_room``, :attr:`RoomSession.duplicate`), where taking both made
every report of the one behind a restart and mangled both rooms' music. A sender
from before the field (instance 0) is told apart by its playhead sequence: each
run of reports that continue one another is a timeline of its own
(:meth:`RoomSession._timeline_of`), so two of them on one room id, or one beside
a newer audio_out, are the same duplicate.

**Whose playhead**: a report whose playhead runs further ahead than the
timeline it belongs to allows (its last report extrapolated at real time, or
what the engine sent, which audio_out jumps to over a gap; plus
:data:`PLAYHEAD_SLACK_S`) is not followed at once: one report from the LAN with
a playhead of 2**52 (the protocol's largest then) put the room's next chunk
there, audio_out jumped to it and the engine refused every real clock after.
Such a jump is followed only once :data:`JUMP_CONFIRM_REPORTS` reports, over
:data:`CLOCK_JUMP_CONFIRM_S`, agree with each other as a real audio_out's would
(its playhead moving at real time while it plays); each report refused is
counted (:attr:`RoomSession.jumped_clocks`, and ``playhead-jump`` in
:attr:`RoomSession.clock_drops`, which the engine exports as the
``clock_refused`` drops). A playhead that goes back, or a new instance that
starts behind, is a restart and still followed at once.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from engine.beats import grid_of
from engine.config import EngineConfig
from engine.generators import (
    BarSync,
    Generated,
    Generator,
    RoomControls,
    can_batch,
    generate_many,
)
from ground.errors import InputError
from ground.events import EventSink, null_sink
from ground.params import SETTINGS, Parameter, live_value
from ground.protocol import (
    DAY_S,
    MAX_INSTANCE,
    PROTOCOL_VERSION,
    SYNC_KEYS,
    Array,
    ArtworkView,
    AudioChunk,
    DropCounter,
    PlaybackClock,
    ProtocolError,
)

Reason = Literal["start", "continue", "transition"]


#: Seed step between variations (a prime, so variations never alias another room's seed).
VARIATION_SEED_STEP = 7919
#: Artworks whose condition a room keeps (least recently used evicted first).
CONDITION_CACHE_SIZE = 64
#: Conditions adjusted by the knobs a room keeps (a knob sweep makes many).
ADJUSTED_CACHE_SIZE = 64


#: An outside grid this close to the one in force is kept, seconds (jitter, not drift).
SYNC_TOLERANCE_S = 0.015
#: The tempo a sync may give, bpm (the ``tempo_bpm`` range a sync source may set).
SYNC_TEMPO_RANGE_BPM = (20.0, 300.0)
#: The most beats a sync bar may have (Link's quantum, a MIDI clock's bar).
SYNC_MAX_BEATS = 16


#: audio_out dry this long while short of chunks we sent: they were lost, start again.
LOST_AFTER_S = 0.5
#: Seconds a sent chunk may take to reach audio_out's timeline (transport, splicing): a
#: report sent sooner after it need not show it.
CHUNK_TRANSIT_S = 0.1
#: Recent chunks' (time sent, queue end) a room keeps, to judge what a report should show.
SENT_KEPT = 32
#: How fast a room's estimated clock delivery offset may creep up, seconds per second: far
#: more than two crystals drift apart (~1e-4), far less than a queue fills.
CLOCK_OFFSET_AGING = 0.002
#: A report whose delivery offset is this far (seconds, either way) from the room's is
#: not believed at once: a forged or corrupt report dated an hour ahead set the offset an
#: hour back, and every chunk after it was placed an hour ahead (the room silent for
#: hours, the offset creeping back at CLOCK_OFFSET_AGING). Far more than a report waits
#: in the queue while the engine generates (under a second).
CLOCK_JUMP_S = 5.0
#: ...unless every report for this long agrees with the new offset: audio_out's machine
#: had its clock stepped (NTP), or audio_out moved to another machine.
CLOCK_JUMP_CONFIRM_S = 2.0
#: A smaller step is believed at once when it dates reports later (the offset falls: the
#: smallest offset is the one kept), but a step that dates them earlier (audio_out's clock
#: set back) only raised the offset at CLOCK_OFFSET_AGING: a 4 s step put the playhead
#: estimate 4 s ahead, and the room's transitions 4 s late, for over half an hour. Every
#: report CLOCK_JUMP_CONFIRM_S long at least this much (seconds) above the room's offset
#: is such a step, and the offset is re-based on the lowest of them. Why 0.25 s: it is
#: well above what a report the engine applies has waited (only each turn's newest is
#: applied, sent at most one report period, 50 ms at audio_out's 20 Hz, before the turn
#: read it) plus transport jitter (milliseconds on a LAN, tens on Wi-Fi), so neither a
#: busy engine's queue nor jitter fakes a step; and a smaller step than this is followed
#: by the creep within two minutes (ntpd steps the clock from 128 ms; chrony and
#: systemd-timesyncd slew small offsets). A step taken wrongly undoes itself: the next
#: report read promptly has a lower offset, believed at once.
CLOCK_STEP_S = 0.25

#: An audio_out instance (:attr:`PlaybackClock.instance`) unheard for this long has gone:
#: a room that two audio_outs report for follows the other one then. 100 reports at
#: audio_out's 20 Hz, and several engine turns (a turn applies one report per room, the
#: newest, which may be the other instance's).
INSTANCE_SILENT_S = 5.0
#: Switches in a room's reports back to an instance heard before, within
#: DUPLICATE_WINDOW_S seconds, that make two audio_outs on one room id (a restart switches
#: to a new instance, never counted, however often it crashes; a report of the old one
#: read after the new one's first makes two).
DUPLICATE_SWITCHES = 4
DUPLICATE_WINDOW_S = 10.0
#: Instances a room remembers (their ids come from the network).
INSTANCES_KEPT = 8
#: How far a report's playhead may run past what its timeline allows, seconds: the
#: timeline's last report extrapolated at real time to now, or the end of what the engine
#: sent (audio_out jumps a gap onto it). The margin is CLOCK_STEP_S's, for the same
#: reasons (a report applied has waited at most a report period, plus transport jitter);
#: a playhead further ahead is a jump (:meth:`RoomSession._jumped`).
PLAYHEAD_SLACK_S = CLOCK_STEP_S
#: Reports agreeing with each other (over at least CLOCK_JUMP_CONFIRM_S) a playhead jump
#: needs before the room follows it: a restarted audio_out, or one another engine fed,
#: reports its new timeline 20 times a second; a forged report is one, or a burst that
#: does not move as a playhead does.
JUMP_CONFIRM_REPORTS = 3
#: Timelines of senders from before the instance field (instance 0) get ids above any
#: instance's, one per run of reports that continue one another.
LEGACY_TIMELINES = MAX_INSTANCE + 1


def instance_name(key: int) -> str:
    """An audio_out instance as events name it: 8 hex digits (as audio_out logs its
    ``clock_instance``), or for a sender without one, ``00000000/N``, its Nth timeline."""
    if key < LEGACY_TIMELINES:
        return f"{key:08x}"
    return f"00000000/{key - LEGACY_TIMELINES + 1}"


#: MIDI channels other than GM percussion (channel 10, index 9), in order.
_MELODIC_CHANNELS = np.array([c for c in range(16) if c != 9], dtype=np.int32)
_PERCUSSION_CHANNEL = 9


def shift_channels(notes: np.ndarray, offset: int) -> np.ndarray:
    """Notes with melodic channels moved ``offset`` places among the 15 non-percussion ones.

    GM percussion stays on channel 10 (index 9), where every GM synth expects it.
    """
    if offset == 0 or len(notes) == 0:
        return notes
    shifted = notes.copy()
    channels = shifted[:, 5]
    melodic = channels != _PERCUSSION_CHANNEL
    index = np.searchsorted(_MELODIC_CHANNELS, channels[melodic])
    channels[melodic] = _MELODIC_CHANNELS[(index + offset) % len(_MELODIC_CHANNELS)]
    return shifted


@dataclass(frozen=True)
class ChunkPlan:
    """A chunk a room has due, before generation: where it goes and what it continues.

    ``state`` is this room's own stream state (for a start or transition, the
    new stream just opened); ``condition`` this room's condition. Plans of
    several rooms can be handed to the generator together; nothing in one
    refers to another.
    """

    reason: Reason
    start: int
    frames: int
    crossfade: int
    playhead: int
    state: Any
    condition: Any


@dataclass
class _JumpCandidate:
    """Reports whose playhead jumped ahead of the room's timeline, while they agree with
    each other: ``anchor`` the first of a run that plays, ``last`` the latest (playhead,
    audio_out's wall time, playing)."""

    instance: int
    anchor: tuple[int, float]
    last: tuple[int, float, bool]
    since: float  # our clock, when the first came
    reports: int = 1


@dataclass
class _Clock:
    playhead: int
    wall_time: float
    received: float
    playing: bool
    buffered_until: int = 0
    dry: bool = False  # audio_out is holding or silent: it has run out of material


class RoomSession:
    """One room's timeline: what has been generated, what plays, what is next."""

    def __init__(
        self,
        room: str,
        seed: int,
        generator: Generator,
        config: EngineConfig,
        log_event: EventSink = null_sink,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` measures every duration and the timeline's pace: a monotonic one
        (audio_out's reports, stamped in its wall time, are mapped onto it by their
        delivery offset, :meth:`_sent_at`), so this machine's wall clock stepped by NTP
        neither freezes knobs, times a painting out, nor moves the playhead estimate."""
        self.room = room
        self.seed = seed
        self.generator = generator
        self.config = config
        self._log = log_event
        self._now = clock
        self._conditions: OrderedDict[str, Any] = OrderedDict()
        self.view = ArtworkView.empty(room, time.time())
        self.condition = self._condition_for(self.view)
        self.state: Any | None = None
        self.queue_end: int | None = None
        self.seq = 0
        self.pending_transition = False
        self._clock: _Clock | None = None
        # our (monotonic) clock minus audio_out's wall time on the least delayed recent
        # report (see on_clock), and when it was last updated
        self._clock_offset: tuple[float, float] | None = None
        # an offset CLOCK_JUMP_S away from it (the lowest reported), and since when reports
        # have agreed with it
        self._clock_jump: tuple[float, float] | None = None
        # the same for an offset CLOCK_STEP_S above it (audio_out's clock set back a little)
        self._clock_step: tuple[float, float] | None = None
        self.refused_clocks = 0  # reports not believed (CLOCK_JUMP_S), counted
        self._clock_refusal_said = -math.inf
        # audio_out instances heard: id -> (first heard, last heard on our clock, followed
        # ever), the most recently heard last; the one whose clocks the room follows; the
        # last one heard, and when the reports switched from one to another recently
        self._instances: OrderedDict[int, tuple[float, float, bool]] = OrderedDict()
        self._following: int | None = None
        self._last_instance: int | None = None
        self._switches: deque[float] = deque(maxlen=DUPLICATE_SWITCHES)
        self._duplicate_since: float | None = None  # two audio_outs on this room id
        self._duplicate_heard = -math.inf  # when the one not followed last spoke
        self._duplicate_said = -math.inf
        self.duplicate_clocks = 0  # reports refused from a second audio_out, counted
        # each timeline's last report taken: id -> (playhead, when it left on our clock);
        # instance-0 timelines' ids are handed out from LEGACY_TIMELINES on
        self._timelines: dict[int, tuple[int, float]] = {}
        self._legacy_timelines = 0
        self._jump: _JumpCandidate | None = None  # reports jumping ahead, agreeing so far
        self._jump_said = -math.inf
        self.jumped_clocks = 0  # reports whose playhead jumped ahead, refused and counted
        # every refused report by reason (the engine shares one and exports it)
        self.clock_drops = DropCounter()
        self.generated_frames = 0
        self.generation_s = 0.0
        self._seconds_per_frame: float | None = None
        self._start_s: float | None = None  # wall time of the calls that made our starts
        self.controls = RoomControls()
        self.midi_channel_offset = 0  # rooms sharing one MIDI port use distinct channels
        self.latest_view = self.view  # what capture reports, even while frozen
        self.last_view_at: float | None = None  # our clock when capture last spoke
        self.min_change_interval_s = 0.25
        self._replan_pending = False
        self._last_replan = -float("inf")
        self._adjusted: OrderedDict[tuple[str, tuple[float, ...]], Any] = OrderedDict()
        self.refused_controls: Counter[str] = Counter()  # by parameter name
        # views the generator cannot condition on (an embedding of another width or
        # encoder, none at all), and the last refusal logged (logged again when it changes)
        self.refused_views = 0
        self._refusal_said = ""
        self._sync: tuple[float, int, float] | None = None  # downbeat wall time, beats, bpm
        self._dry_since: float | None = None  # our clock when audio_out ran dry short of ours
        self._sent: deque[tuple[float, int]] = deque(maxlen=SENT_KEPT)  # (our clock, queue end)
        # the ends of the last chunks sent, a restart or not: material audio_out may hold
        # (a restarted audio_out plays the chunks sent for the old timeline as it subscribed)
        self._sent_ends: deque[int] = deque(maxlen=SENT_KEPT)
        self._lost_logged = False
        self.lost_resyncs = 0  # restarts because sent chunks never arrived
        self.non_finite_chunks = 0  # chunks whose NaN/inf samples were zeroed
        self.windows_ahead = 0  # windows made ahead of need in another room's batch
        self.sync_offset_ms: float | None = None  # the last grid's distance from the one kept

    def log_event(self, kind: str, **fields: Any) -> None:
        """Record an event about this room."""
        self._log(kind, room=self.room, **fields)

    # -- inputs -------------------------------------------------------------

    def on_view(self, view: ArtworkView) -> bool:
        """Take a capture report; True when it changes the artwork (a transition is due).

        While frozen the report is remembered (for when the freeze ends) but
        the music stays on the current artwork. A view the generator refuses
        (:class:`~ground.errors.InputError` from ``prepare``: a diffusion model
        given another encoder's embedding, or none) is counted in
        :attr:`refused_views` and dropped: the room plays on what it played.
        """
        if not self.accepts(view):
            return False
        self.last_view_at = self._now()
        self.latest_view = view
        if self.controls.freeze:
            return False
        return self._show(view)

    def accepts(self, view: ArtworkView) -> bool:
        """Whether the generator can condition on ``view`` (prepared and cached if so).

        A refusal is a sender's mistake (capture with another encoder) or an
        attack, never a reason for the engine to stop: counted, logged when
        its reason differs from the last one logged (capture re-sends its view
        every heartbeat), and False.
        """
        try:
            self._condition_for(view)
        except InputError as error:
            self.refused_views += 1
            said = str(error).replace(view.artwork_id or "", "")  # the reason, whatever the work
            if said != self._refusal_said:
                self._refusal_said = said
                self.log_event("view_refused", artwork_id=view.artwork_id, error=str(error),
                               refused=self.refused_views)
            return False
        return True

    def _show(self, view: ArtworkView) -> bool:
        changed = view.key != self.view.key
        self.view = view
        if changed:
            self.condition = self._controlled_condition(view)
            self.pending_transition = self.state is not None
        return changed

    def restore(self, view: ArtworkView, age_s: float, controls: RoomControls) -> None:
        """Resume a room a previous engine process was playing (its last view and controls)."""
        self.controls = controls
        self.latest_view = view
        self.last_view_at = self._now() - max(0.0, age_s)
        self._show(view)
        self.log_event("room_restored", artwork_id=view.artwork_id, state=view.state,
                       age_s=round(age_s, 3))

    # -- live control ---------------------------------------------------------

    def set_controls(self, params: Mapping[str, object]) -> list[str]:
        """Apply live parameters (unknown names are ignored); the names that changed.

        A value that is not a finite number is ignored and counted in
        :attr:`refused_controls` (logged the first time per name); a finite
        one is clamped to its parameter's range.
        """
        if any(key in params for key in SYNC_KEYS):
            params = dict(params)
            sync = [params.pop(key, None) for key in SYNC_KEYS]
            moved = self.set_sync(*sync)
            return sorted(set(self.set_controls(params)) | ({"sync"} if moved else set()))
        updates: dict[str, Any] = {}  # by field (control or setting), in arrival order
        fields: dict[str, Any] = {}  # the RoomControls fields among them
        replan = False
        c = self.controls
        for name, raw in params.items():
            param = _live_parameter(name)
            if param is None:
                continue
            try:
                value = param.clamp(raw)
            except ValueError as error:
                if self.refused_controls[param.name] == 0:
                    self.log_event("control_refused", name=param.name, value=repr(raw)[:40],
                                   error=str(error))
                self.refused_controls[param.name] += 1
                continue
            if param.name in SETTINGS:
                if getattr(self.config, param.name) != value:
                    self.config = self.config.model_copy(update={param.name: value})
                    updates[param.name] = value
            elif param.field is not None:
                typed = param.typed(value)
                if getattr(c, param.field) != typed:
                    updates[param.field] = fields[param.field] = typed
                    replan = replan or bool(param.replans)
        if not updates:
            return []
        self.controls = dataclasses.replace(c, **fields)
        if replan:
            self._replan_pending = True
        if c.freeze and not self.controls.freeze:
            self._show(self.latest_view)  # catch up with what capture saw meanwhile
        self.log_event("controls", **updates)
        return sorted(updates)

    def set_sync(self, downbeat: object, beats: object, bpm: object) -> bool:
        """Follow an outside bar grid (``beats`` 0: stop following); True if the room re-plans.

        ``downbeat`` is the wall time of one of the grid's bar lines in seconds
        after UTC midnight (:func:`ground.protocol.seconds_of_day`), taken as the instant of
        that time nearest now. Anything but finite numbers in range (a
        downbeat in 0..86400, 1..:data:`SYNC_MAX_BEATS` whole beats, a tempo in
        :data:`SYNC_TEMPO_RANGE_BPM`) is refused and counted as ``sync`` in
        :attr:`refused_controls`, and the grid in force stays.
        """
        values = (downbeat, beats, bpm)
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
                   for v in values):
            return self._refuse_sync(values, "expected three finite numbers")
        assert isinstance(downbeat, int | float) and isinstance(beats, int | float) \
            and isinstance(bpm, int | float)
        if beats == 0:
            self._sync = None  # the bars stay where they are; the next plan has no grid
            if self.controls.sync is not None:
                self.controls = dataclasses.replace(self.controls, sync=None)
                self.log_event("sync_released")
            return False
        low, high = SYNC_TEMPO_RANGE_BPM
        if beats != int(beats) or not 1 <= beats <= SYNC_MAX_BEATS:
            return self._refuse_sync(values, f"beats must be a whole 1..{SYNC_MAX_BEATS}")
        if not low <= bpm <= high:
            return self._refuse_sync(values, f"bpm must be {low:g}..{high:g}")
        if not 0.0 <= downbeat < DAY_S:
            return self._refuse_sync(values, "downbeat must be seconds after UTC midnight, "
                                             "0..86400")
        now = time.time()
        wall = float(downbeat) + DAY_S * round((now - float(downbeat)) / DAY_S)
        self._sync = (wall, int(beats), round(float(bpm), 2))
        return self._apply_sync()

    def _refuse_sync(self, values: tuple[object, ...], error: str) -> bool:
        if self.refused_controls["sync"] == 0:
            self.log_event("control_refused", name="sync", value=repr(values)[:120], error=error)
        self.refused_controls["sync"] += 1
        return False

    def _apply_sync(self, force: bool = False) -> bool:
        """Map the outside grid onto the timeline (needs a playback clock); re-plan if it moved."""
        if self._sync is None or self._clock is None:
            return False
        downbeat, beats, bpm = self._sync
        rate = self.generator.sample_rate
        grid = BarSync(phase=0, beats=beats, bpm=bpm)
        bar = grid.bar_samples(rate)
        # the playback clock says when its playhead is heard: bars land where they are heard
        heard = self._clock.playhead + (downbeat - self._clock.wall_time) * rate
        grid = dataclasses.replace(grid, phase=int(round(heard % bar)) % int(bar))
        kept = self.controls.sync
        own = grid_of(self.state)
        if kept is not None and (kept.beats, kept.bpm) == (beats, bpm):
            offset = (grid.phase - kept.phase) % bar
            offset = min(offset, bar - offset)
            self.sync_offset_ms = round(1000.0 * offset / rate, 2)
            if not force and offset <= SYNC_TOLERANCE_S * rate:
                return False
        elif not force and own is not None and own.tempo_bpm is not None \
                and round(own.tempo_bpm, 2) == bpm and abs(own.bar_samples - bar) < 1.0:
            # A new grid the room already plays on: a session the room leads, set to the
            # room's own tempo and bars (Link's lead), or a room that reached the grid's
            # tempo on its own. Taken as it is; a re-plan would be a transition for nothing.
            offset = (grid.phase - own.anchor) % bar
            offset = min(offset, bar - offset)
            self.sync_offset_ms = round(1000.0 * offset / rate, 2)
            if offset <= SYNC_TOLERANCE_S * rate:
                self.controls = dataclasses.replace(self.controls, sync=grid)
                self.log_event("sync_aligned", beats=beats, bpm=bpm, phase=grid.phase,
                               moved_ms=self.sync_offset_ms, replanned=False)
                return False
        else:
            self.sync_offset_ms = None
        self.controls = dataclasses.replace(self.controls, sync=grid)
        self.log_event("sync_aligned", beats=beats, bpm=bpm, phase=grid.phase,
                       moved_ms=self.sync_offset_ms)
        if getattr(self.generator, "follows_sync", False):
            self._replan_pending = True
            return True
        return False

    @property
    def effective_seed(self) -> int:
        """The room's seed moved by the variation counter."""
        return self.seed + VARIATION_SEED_STEP * self.controls.variation

    @property
    def crossfade_samples(self) -> int:
        """Crossfade for transitions and restarts: the live transition time, else the config's."""
        if self.controls.transition_s is None:
            return self.config.crossfade_samples
        return round(self.controls.transition_s * self.generator.sample_rate)

    def tick(self) -> None:
        """Time-based decisions: view timeout, and re-planning after knob moves (rate-limited)."""
        now = self._now()
        timeout = self.config.view_timeout_s
        if (timeout > 0 and self.view.state == "artwork" and not self.controls.freeze
                and self.last_view_at is not None and now - self.last_view_at > timeout):
            self.log_event("view_timeout", artwork_id=self.view.artwork_id,
                           silent_s=round(now - self.last_view_at, 3))
            self.latest_view = ArtworkView.empty(self.room, time.time())
            self._show(self.latest_view)
        if self._replan_pending and now - self._last_replan >= self.min_change_interval_s:
            self._replan_pending = False
            self._last_replan = now
            # a knob or the variation moved: new plan (or seed), played as a transition
            self.condition = self._controlled_condition(self.view)
            self.pending_transition = self.state is not None
            self.log_event("replanned", artwork_id=self.view.artwork_id,
                           controls=dataclasses.asdict(self.controls),
                           decisions=self.generator.describe(self.condition))

    def on_clock(self, clock: PlaybackClock) -> None:
        """Take audio_out's playback position; a new audio_out instance, or a playhead that
        went back, means it restarted.

        A report whose playhead jumped further ahead than its timeline allows is refused
        and counted (:attr:`jumped_clocks`, :meth:`_jumped`) until reports agree with the
        jump. A report dated implausibly far from the room's clock offset
        (:data:`CLOCK_JUMP_S`) is refused and counted (:attr:`refused_clocks`)
        until reports have agreed with the new offset for
        :data:`CLOCK_JUMP_CONFIRM_S` (a clock stepped on audio_out's machine); one
        that stays :data:`CLOCK_STEP_S` later for as long re-bases the offset. A
        report from a second audio_out on this room id is refused and counted
        (:attr:`duplicate_clocks`, :meth:`_admit_instance`).
        """
        now = self._now()
        key = self._timeline_of(clock, now)
        if self._jumped(key, clock, now):
            return
        if key == LEGACY_TIMELINES + self._legacy_timelines:
            self._legacy_timelines += 1  # a new timeline of a sender without an instance
        admitted = self._admit_instance(key, now)
        if admitted == "refused":
            # (its timeline is kept, so its next report is told apart from the room's)
            self._note_timeline(key, clock.playhead, now)
            return
        if self._clock_offset is not None and admitted != "chosen" \
                and not self._believed_offset(now - clock.wall_time):
            return
        # a new instance is followed once its report is believed (one dated wrong is not)
        new_instance = admitted in ("new", "chosen") and self._following != key
        if admitted in ("new", "chosen"):
            self._following = key
            first_heard, last_heard, _ = self._instances[key]
            self._instances[key] = (first_heard, last_heard, True)
        restarted = self._clock is not None and (
            new_instance or clock.playhead < self._clock.playhead)
        if restarted:
            assert self._clock is not None
            self.log_event("playback_restarted", playhead=clock.playhead,
                           previous=self._clock.playhead,
                           **({"instance": f"{clock.instance:08x}"} if clock.instance else {}))
            self.state = None
            self.queue_end = None
            self._sent.clear()
            self._clock_jump = self._clock_step = None
        first = self._clock is None
        self._clock = _Clock(
            playhead=clock.playhead,
            wall_time=clock.wall_time,
            received=self._sent_at(clock.wall_time, reset=first or restarted),
            # holding (run dry), audio_out's playhead waits where its material ended
            playing=clock.state == "playing",
            buffered_until=clock.buffered_until,
            dry=clock.state in ("holding", "silent"),
        )
        self._note_timeline(key, clock.playhead, self._clock.received)
        # Dry while we think we sent beyond what it holds: chunks lost on the way (a PUB
        # socket drops silently at its high-water mark) if it lasts past LOST_AFTER_S.
        # Only what was sent before the report left counts: a report read late (it waited
        # in the queue while we generated) cannot show the chunks sent since.
        sent_by = self._clock.received - CHUNK_TRANSIT_S
        reached = [end for at, end in self._sent if at <= sent_by]
        missing = bool(reached) and max(reached) > clock.buffered_until
        if not (self._clock.dry and missing):
            self._dry_since = None
        elif self._dry_since is None:
            self._dry_since = self._clock.received
        if self._sync is not None and (first or restarted):
            self._apply_sync(force=True)  # a new timeline: the grid's samples moved

    def _admit_instance(self, instance: int, now: float
                        ) -> Literal["same", "new", "chosen", "refused"]:
        """Whose clocks the room follows: the report's audio_out instance is the one
        followed (``same``), a new one to follow if its report is believed (``new``: a
        restart, taken at once), the one chosen between two audio_outs on this room id
        (``chosen``), or refused.

        Two audio_outs configured with the same room id send clocks of two timelines;
        taking each as the room's (any playhead behind the last taken as a restart) made
        hundreds of restarts a minute and mangled both rooms' music. Reports that switch
        back to an instance heard before :data:`DUPLICATE_SWITCHES` times in
        :data:`DUPLICATE_WINDOW_S` are two of them: the room follows the one first
        heard, until it is silent for :data:`INSTANCE_SILENT_S`, and refuses the
        other's reports (counted in :attr:`duplicate_clocks`; a ``duplicate_room``
        event once a minute; the :attr:`duplicate` status). Before that, only a new
        instance is followed at once: one followed before that speaks again while the
        one followed now is alive is refused (a report of it read late, or the second
        audio_out). ``instance`` is the report's timeline (:meth:`_timeline_of`): for a
        sender from before the field (instance 0), one per run of reports that continue
        one another, so a second such sender on the room id, or one beside a newer
        audio_out, is a duplicate too (it was always taken as the room's: 132 restarts
        in 20 s beside a real audio_out).
        """
        if self._duplicate_since is not None and now - self._duplicate_heard > DUPLICATE_WINDOW_S:
            self._end_duplicate(now)
        heard = self._instances.pop(instance, None)
        self._instances[instance] = (now, now, False) if heard is None \
            else (heard[0], now, heard[2])
        while len(self._instances) > INSTANCES_KEPT:  # the longest unheard, never the followed
            oldest = next(k for k in self._instances if k != self._following)
            del self._instances[oldest]
        if heard is not None and instance != self._last_instance:
            self._switches.append(now)  # back to one heard before
        self._last_instance = instance
        following = self._following
        if following is None or instance == following:
            return "new" if following is None else "same"
        followed = self._instances.get(following)
        if followed is None or now - followed[1] >= INSTANCE_SILENT_S:
            return "new"  # the one followed has gone: this one is the room's audio_out now
        if self._duplicate_since is None:
            switches = sum(1 for t in self._switches if now - t <= DUPLICATE_WINDOW_S)
            if switches >= DUPLICATE_SWITCHES:
                self._duplicate_since = now
            elif heard is None or not heard[2]:
                return "new"  # audio_out restarted (the old instance stops now): followed
            elif instance >= LEGACY_TIMELINES:
                # a sender without an instance back on a timeline followed before: a second
                # one (counted as a switch), or a restarted one playing the chunks we sent
                # for its old timeline as it subscribed: followed (no report is read late)
                return "new"
            else:
                return "refused"  # followed before: read late, or a second audio_out
        self._duplicate_heard = now
        first = min((following, instance), key=lambda k: self._instances[k][0])
        if first == instance and self._duplicate_since == now:
            self._say_duplicate(now, following=instance, refused=following)
            return "chosen"
        self.duplicate_clocks += 1
        self.clock_drops.add(ProtocolError("duplicate-room",
                                           f"a second audio_out {instance_name(instance)}"))
        self._say_duplicate(now, following=following, refused=instance)
        return "refused"

    def _timeline_of(self, clock: PlaybackClock, now: float) -> int:
        """Which sender's timeline ``clock`` belongs to: its audio_out instance, or for a
        sender from before the field (instance 0) the timeline it continues (the one the
        room follows first, then the most recently heard), else a new one.

        A report continues a timeline when its playhead is neither behind that
        timeline's last report (a playhead that went back is a restart: a new
        timeline) nor further ahead than it allows (:meth:`_reach`, with only the
        current stream's material: one sent before a restart would join two senders'
        timelines).
        """
        if clock.instance:
            return clock.instance
        legacy = [key for key in self._timelines if key >= LEGACY_TIMELINES]
        legacy.sort(key=lambda key: (key != self._following, -self._timelines[key][1]))
        for key in legacy:
            last, _ = self._timelines[key]
            if last <= clock.playhead <= self._reach(key, now, lately=False):
                return key
        return LEGACY_TIMELINES + self._legacy_timelines  # (taken once one is no jump)

    def _reach(self, key: int, now: float, lately: bool = True) -> float:
        """The furthest timeline sample a report of ``key``'s timeline may show now: its
        last report extrapolated at real time, or, for the timeline followed, the end of
        what we sent (audio_out jumps a gap onto it); plus :data:`PLAYHEAD_SLACK_S`.
        ``lately``: what we sent for the last :data:`SENT_KEPT` chunks, before a restart
        too (a restarted audio_out plays what it is sent as it subscribes, which may be
        the old timeline's), else the current stream's only."""
        rate = self.generator.sample_rate
        playhead, sent = self._timelines[key]
        reach = float(playhead) + max(0.0, now - sent) * rate
        if key == self._following:
            sent_end = max(self._sent_ends, default=None) if lately else self.queue_end
            if sent_end is not None:
                reach = max(reach, sent_end)
        return reach + PLAYHEAD_SLACK_S * rate

    def _note_timeline(self, key: int, playhead: int, sent: float) -> None:
        """Keep ``key``'s last report (sent at ``sent`` on our clock); only the timelines
        of the instances remembered (:data:`INSTANCES_KEPT`) are kept."""
        self._timelines[key] = (playhead, sent)
        for old in [k for k in self._timelines if k not in self._instances]:
            del self._timelines[old]

    def _jumped(self, key: int, clock: PlaybackClock, now: float) -> bool:
        """True when ``clock``'s playhead is further ahead than its timeline allows (its
        own last report, or for a sender not heard yet the room's timeline; see
        :meth:`_reach`): refused and counted, until :data:`JUMP_CONFIRM_REPORTS` reports
        over :data:`CLOCK_JUMP_CONFIRM_S` agree with each other (:meth:`_agrees`), when
        the jump is followed (``playhead_jump_followed``). A report that is no jump ends
        a run of its sender's jumping ones. The room's first report is no jump.
        """
        judge = key if key in self._timelines else self._following
        if judge is None or judge not in self._timelines:
            return False
        reach = self._reach(judge, now)
        if clock.playhead <= reach:
            if self._jump is not None and self._jump.instance == clock.instance:
                self._jump = None  # the sender's playhead is back on its timeline
            return False
        report = (clock.playhead, clock.wall_time, clock.state == "playing")
        jump = self._jump
        if jump is not None and self._agrees(jump, clock):
            if not (jump.last[2] and report[2]):
                jump.anchor = report[:2]  # a run that plays starts here
            jump.last = report
            jump.reports += 1
        else:
            jump = self._jump = _JumpCandidate(clock.instance, report[:2], report, now)
        if jump.reports >= JUMP_CONFIRM_REPORTS and now - jump.since >= CLOCK_JUMP_CONFIRM_S:
            self._jump = None
            self.log_event("playhead_jump_followed", playhead=clock.playhead,
                           expected=round(reach), reports=jump.reports,
                           instance=instance_name(key))
            return False
        self.jumped_clocks += 1
        self.clock_drops.add(ProtocolError(
            "playhead-jump", f"playhead {clock.playhead}, the timeline allows {reach:.0f}"))
        if now - self._jump_said >= 60.0:  # a flood of them: once a minute
            self._jump_said = now
            self.log_event("clock_jump_refused", playhead=clock.playhead,
                           expected=round(reach), refused=self.jumped_clocks,
                           instance=instance_name(key))
        return True

    def _agrees(self, jump: _JumpCandidate, clock: PlaybackClock) -> bool:
        """Whether ``clock`` goes on from the jumping reports before it as a real
        audio_out's would: the same sender, sent after the last (within
        :data:`CLOCK_JUMP_CONFIRM_S`), its playhead moving at real time while it plays
        (from the first report of the run) and never back or faster while it holds."""
        if clock.instance != jump.instance:
            return False
        last_playhead, last_sent, last_playing = jump.last
        elapsed = clock.wall_time - last_sent
        if not 0.0 < elapsed <= CLOCK_JUMP_CONFIRM_S:
            return False
        rate = self.generator.sample_rate
        slack = PLAYHEAD_SLACK_S * rate
        if last_playing and clock.state == "playing":
            playhead, sent = jump.anchor
            return abs(clock.playhead - (playhead + (clock.wall_time - sent) * rate)) <= slack
        return last_playhead <= clock.playhead <= last_playhead + elapsed * rate + slack

    def _say_duplicate(self, now: float, following: int, refused: int) -> None:
        """The ``duplicate_room`` event, at most once a minute."""
        if now - self._duplicate_said < 60.0:
            return
        self._duplicate_said = now
        assert self._duplicate_since is not None
        followed, other = instance_name(following), instance_name(refused)
        self.log_event(
            "duplicate_room", following=followed, refused=other,
            refused_clocks=self.duplicate_clocks, since_s=round(now - self._duplicate_since, 3),
            error=f"two audio_outs report as room {self.room!r} (instances {followed} "
                  f"and {other}; each logs its clock_instance at start): following "
                  f"{followed}, refusing the other's clocks. Give each room machine "
                  f"its own room id.")

    def _end_duplicate(self, now: float) -> None:
        assert self._duplicate_since is not None
        self.log_event("duplicate_room_ended", following=instance_name(self._following or 0),
                       refused_clocks=self.duplicate_clocks,
                       lasted_s=round(self._duplicate_heard - self._duplicate_since, 3))
        self._duplicate_since = None
        self._duplicate_said = -math.inf
        self._switches.clear()

    @property
    def duplicate(self) -> dict[str, Any] | None:
        """While two audio_outs report for this room (the same room id configured on two
        machines): the instance followed, the others heard within
        :data:`DUPLICATE_WINDOW_S` (ids as 8 hex digits, as each audio_out logs its
        ``clock_instance``), and the reports refused so far; else None."""
        if self._duplicate_since is None:
            return None
        now = self._now()
        if now - self._duplicate_heard > DUPLICATE_WINDOW_S:
            return None
        others = [k for k, (_, last, _) in self._instances.items()
                  if k != self._following and now - last <= DUPLICATE_WINDOW_S]
        return {"following": instance_name(self._following or 0),
                "refused": [instance_name(k) for k in others],
                "refused_clocks": self.duplicate_clocks}

    def _believed_offset(self, offset: float) -> bool:
        """Whether a report with delivery ``offset`` is believed (False: refused).

        One within :data:`CLOCK_JUMP_S` of the room's offset is; one
        :data:`CLOCK_STEP_S` above it, for :data:`CLOCK_JUMP_CONFIRM_S`, re-bases the
        offset (audio_out's clock set back); one further off is refused until
        reports agree with it for as long (a step confirmed)."""
        assert self._clock_offset is not None
        previous, at = self._clock_offset
        now = self._now()
        expected = previous + CLOCK_OFFSET_AGING * max(0.0, now - at)
        if abs(offset - expected) <= CLOCK_JUMP_S:
            self._clock_jump = None
            if offset - expected <= CLOCK_STEP_S:  # (a lower offset is taken at once)
                self._clock_step = None
                return True
            # later than the room's offset says: one read late, or a clock set back
            lowest, since = self._clock_step or (offset, now)
            self._clock_step = (min(lowest, offset), since)
            if now - since >= CLOCK_JUMP_CONFIRM_S:
                self._rebase_offset(self._clock_step[0], expected)
            return True
        self._clock_step = None
        if self._clock_jump is None or abs(offset - self._clock_jump[0]) > CLOCK_JUMP_S:
            self._clock_jump = (offset, now)
        else:
            self._clock_jump = (min(self._clock_jump[0], offset), self._clock_jump[1])
        if now - self._clock_jump[1] >= CLOCK_JUMP_CONFIRM_S:
            self._rebase_offset(self._clock_jump[0], expected)
            return True
        if now - self._clock_refusal_said >= 60.0:  # a flood of them: once a minute
            self._clock_refusal_said = now
            self.log_event("clock_refused", offset_s=round(offset, 3),
                           expected_s=round(expected, 3), max_jump_s=CLOCK_JUMP_S,
                           refused=self.refused_clocks + 1)
        self.refused_clocks += 1
        self.clock_drops.add(ProtocolError("dated", f"delivery offset {offset:.3f} s"))
        return False

    def _rebase_offset(self, offset: float, previous: float) -> None:
        """Take ``offset`` (the lowest of the reports that confirmed it) as the room's:
        audio_out's clock stepped."""
        self.log_event("clock_stepped", offset_s=round(offset, 3),
                       previous_s=round(previous, 3), step_s=round(previous - offset, 3))
        self._clock_offset = (offset, self._now())
        self._clock_jump = self._clock_step = None

    def _sent_at(self, wall_time: float, reset: bool) -> float:
        """When, on our clock, a report stamped ``wall_time`` by audio_out left it.

        A report may wait in the socket's queue while the engine generates (a batch of
        windows takes most of a second on a busy GPU); taking its arrival for its time
        would put the playhead estimate that far behind, eating the lead and placing
        new material too early. The offset between the two clocks (with the
        transport's least delay and audio_out's output latency in it) is the smallest
        ``arrival - wall_time`` seen recently: reports read promptly give it, queued
        ones only add to it. It is let creep up by :data:`CLOCK_OFFSET_AGING` so the
        two clocks' drift is followed; a clock set back by :data:`CLOCK_STEP_S` or more
        re-bases it once every report has said so for :data:`CLOCK_JUMP_CONFIRM_S`
        (:meth:`_believed_offset`).
        """
        now = self._now()
        offset = now - wall_time
        if self._clock_offset is not None and not reset:
            previous, at = self._clock_offset
            offset = min(offset, previous + CLOCK_OFFSET_AGING * max(0.0, now - at))
        self._clock_offset = (offset, now)
        return min(now, wall_time + offset)

    # -- scheduling ---------------------------------------------------------

    def heard_downbeat(self) -> tuple[float, float] | None:
        """(wall time, bar length in seconds) of the next bar line the room plays, as it
        will be heard (through audio_out's playback clock); None without a bar grid or a
        clock.

        Where a new piece is queued, its first downbeat. What a tempo-sync source the
        room leads aligns the session's bars to (Link's ``lead`` mode).
        """
        grid = grid_of(self.state)
        playhead = self.playhead_estimate()
        if grid is None or playhead is None or self._clock is None or grid.bar_samples <= 0:
            return None
        rate = self.generator.sample_rate
        bars = max(0, math.ceil((playhead - grid.anchor) / grid.bar_samples))
        line = grid.anchor + bars * grid.bar_samples
        heard = self._clock.wall_time + (line - self._clock.playhead) / rate
        return heard, grid.bar_samples / rate

    def playhead_estimate(self) -> int | None:
        """The playhead now, extrapolated from the last clock report."""
        if self._clock is None:
            return None
        playhead = self._clock.playhead
        if self._clock.playing:
            elapsed = max(0.0, self._now() - self._clock.received)
            playhead += int(elapsed * self.generator.sample_rate)
        return playhead

    def next_reason(self, lookahead: int = 0) -> Reason | None:
        """What the next chunk would be, or None if nothing is due yet.

        ``lookahead`` (frames) counts a continuation as due that long before
        it is: the engine uses it to serve a room together with others that
        are due now (:func:`generate_due`). It never makes anything later.
        """
        playhead = self.playhead_estimate()
        if playhead is None:
            return None
        if self.state is None or self.queue_end is None:
            return "start"
        assert self._clock is not None
        if self.queue_end < self._clock.playhead:
            # audio_out plays past what we sent (it only moves over material it has: it was
            # fed by another engine, or jumped a gap): resynchronise, crossfading. A room
            # that ran dry holds at our queue's end; the continuation resumes it, which a
            # model serves from its buffer where a new stream would need a new window.
            return "start"
        if self._material_lost():
            return "start"  # what we sent never arrived: the room would wait forever
        if self.pending_transition:
            return "transition"
        if self.queue_end < playhead + self.config.lead_samples + max(0, lookahead):
            return "continue"
        return None

    def _material_lost(self) -> bool:
        """True when audio_out has been dry for :data:`LOST_AFTER_S` (or two chunks' making,
        if longer) short of chunks we sent.

        Its playhead only moves over material it has, so without this a room
        whose last chunks were lost would hold, fade to silence and stay
        silent: we would wait for a playhead that waits for us.
        """
        if self._dry_since is None:
            return False
        # a slow generator (a big model below real time) may keep a chunk from being sent
        # for a while after the clock that saw the room dry: wait two chunks' making too
        making = 2.0 * (self._seconds_per_frame or 0.0) * self.config.chunk_samples
        if self._now() - self._dry_since < max(LOST_AFTER_S, making):
            return False
        if not self._lost_logged:
            assert self._clock is not None
            self.log_event("chunks_lost", queue_end=self.queue_end,
                           buffered_until=self._clock.buffered_until,
                           dry_s=round(self._now() - self._dry_since, 3))
            self._lost_logged = True
        return True

    def urgency(self) -> tuple[bool, int]:
        """Sort key, most urgent first: transitions and restarts, then the room closest to
        running dry."""
        playhead = self.playhead_estimate() or 0
        return (self.next_reason() in ("continue", None), (self.queue_end or 0) - playhead)

    def next_chunk(self) -> AudioChunk | None:
        """Generate the chunk that is due, if any, and advance the session."""
        plan = self.plan_chunk()
        if plan is None:
            return None
        began = time.perf_counter()
        generated, state = self.generator.generate(plan.state, plan.condition, plan.frames)
        return self.finish_chunk(plan, generated, state, time.perf_counter() - began)

    def plan_chunk(self, lookahead: int = 0, start_s: float | None = None
                   ) -> ChunkPlan | None:
        """The chunk that is due (see :meth:`next_reason`), not yet generated.

        ``start_s``: how long the call that makes a start or transition is expected to
        take (the engine's :class:`StartTimes`), else this room's recent ones.

        For a start or a transition this opens the new stream (``generator.start``
        from the current state). The session changes only in :meth:`finish_chunk`,
        which must follow with what the generator made of this plan.
        """
        reason = self.next_reason(lookahead)
        if reason is None:
            return None
        playhead = self.playhead_estimate()
        assert playhead is not None
        frames = self.config.chunk_samples
        if reason == "continue":
            assert self.queue_end is not None
            start, crossfade, state = self.queue_end, 0, self.state
        else:
            crossfade = self.crossfade_samples
            frames += crossfade
            # New material must reach audio_out before the playhead does: the
            # margin covers transport and jitter, the estimate the generation.
            start = playhead + self.config.margin_samples + self._expected_start(start_s)
            state = self.generator.start(self.condition, self.effective_seed, start, self.state)
        return ChunkPlan(reason=reason, start=start, frames=frames, crossfade=crossfade,
                         playhead=playhead, state=state, condition=self.condition)

    def finish_chunk(self, plan: ChunkPlan, generated: Generated, state: Any, spent: float,
                     share: float = 1.0, batch: int = 1) -> AudioChunk:
        """Take the generator's output for ``plan``: advance the session, build the chunk.

        ``spent`` is the wall time of the call that made it (what this room
        waited); ``share`` the part of it that was this room's work (its
        frames' share of a batch), which the real-time factor counts.
        """
        frames = plan.frames
        if generated.audio.shape != (frames, self.generator.channels):
            raise RuntimeError(
                f"generator returned audio of shape {generated.audio.shape}, "
                f"expected {(frames, self.generator.channels)}"
            )
        if not np.isfinite(generated.audio).all():
            # audio_out refuses a chunk with NaN or inf whole (and would wait for it):
            # a dropout is better than a lost chunk; said once per room
            bad = int(np.count_nonzero(~np.isfinite(generated.audio)))
            if self.non_finite_chunks == 0:
                self.log_event("non_finite_audio", seq=self.seq, samples=bad,
                               reason=plan.reason)
            self.non_finite_chunks += 1
            generated = dataclasses.replace(
                generated, audio=np.nan_to_num(generated.audio, nan=0.0, posinf=0.0,
                                               neginf=0.0))
        self.state = state
        if plan.reason != "continue":
            self.pending_transition = False
            if self._lost_logged:  # this start replaces what never arrived
                self.lost_resyncs += 1
            self._dry_since, self._lost_logged = None, False
        self.queue_end = plan.start + frames
        self._sent.append((self._now(), self.queue_end))
        self._sent_ends.append(self.queue_end)
        self.generated_frames += frames
        self.generation_s += spent * share
        # The wall time, not the share: it is how long new material takes to arrive.
        per_frame = spent / frames
        self._seconds_per_frame = (per_frame if self._seconds_per_frame is None
                                   else 0.8 * self._seconds_per_frame + 0.2 * per_frame)
        if plan.reason != "continue":
            self.note_start_call(spent)
        grid = grid_of(state)  # the piece's tempo and meter, for the recorded MIDI file
        chunk = AudioChunk(
            v=PROTOCOL_VERSION,
            room=self.room,
            seq=self.seq,
            start_sample=plan.start,
            sample_rate=self.generator.sample_rate,
            audio=Array.from_numpy(generated.audio),
            crossfade=plan.crossfade,
            artwork_id=self.view.artwork_id if self.view.state == "artwork" else None,
            generation_s=spent,
            reason=plan.reason,
            notes=(Array.from_numpy(shift_channels(generated.notes, self.midi_channel_offset))
                   if len(generated.notes) else None),
            tempo_bpm=grid.tempo_bpm if grid is not None else None,
            meter=grid.meter if grid is not None else None,
            downbeat=grid.anchor if grid is not None and grid.anchor >= 0 else None,
        )
        self.log_event(
            "chunk", seq=self.seq, start_sample=plan.start, frames=frames,
            crossfade=plan.crossfade, reason=plan.reason, artwork_id=chunk.artwork_id,
            generation_s=round(spent, 6), playhead=plan.playhead, batch=batch,
            tempo_bpm=chunk.tempo_bpm, downbeat=chunk.downbeat,
        )
        self.seq += 1
        return chunk

    def take_window(self, state: Any) -> None:
        """Take a stream state the generator made one more window for, ahead of need (in
        the padding rows of another room's batch): nothing is sent, later chunks are
        served from it."""
        self.state = state
        self.windows_ahead += 1

    def note_start_call(self, spent: float) -> None:
        """Take the wall time of a call that made this room's start or transition."""
        self._start_s = spent if self._start_s is None else 0.7 * self._start_s + 0.3 * spent

    def _expected_start(self, start_s: float | None = None) -> int:
        """Frames of timeline that pass while a start or transition is made: ``start_s``
        or this room's recent such calls' time, with 50 % slack. Not per frame: a model
        makes a whole window for any chunk of it, and a continuation served from its
        buffer costs ~nothing."""
        seconds = self._start_s if start_s is None else start_s
        if seconds is None:
            return 0
        return int(1.5 * seconds * self.generator.sample_rate)

    @property
    def realtime_factor(self) -> float:
        """Seconds of audio generated per second spent generating, so far."""
        if self.generation_s <= 0.0:
            return float("inf")
        return self.generated_frames / self.generator.sample_rate / self.generation_s

    # -- conditioning -------------------------------------------------------

    def _controlled_condition(self, view: ArtworkView) -> Any:
        """The condition for ``view`` under the current controls (cached)."""
        base = self._condition_for(view)
        if self.controls.neutral:
            return base
        cache_key = (view.key, self.controls.shapes_condition)
        if cache_key in self._adjusted:
            self._adjusted.move_to_end(cache_key)
            return self._adjusted[cache_key]
        adjusted = self.generator.apply_controls(view, base, self.controls)
        self._adjusted[cache_key] = adjusted
        # a knob sweep must not grow the cache forever
        _evict(self._adjusted, ADJUSTED_CACHE_SIZE, keep={cache_key})
        return adjusted

    def _condition_for(self, view: ArtworkView) -> Any:
        key = view.key
        if key in self._conditions:
            self._conditions.move_to_end(key)
            return self._conditions[key]
        condition = self.generator.prepare(view)
        self._conditions[key] = condition
        # Artwork ids come from the network: endless new ids must not grow the engine.
        # The artwork playing (and the one capture reports while frozen) stays.
        playing = {v.key for v in (getattr(self, "view", None), getattr(self, "latest_view", None))
                   if v is not None}
        _evict(self._conditions, CONDITION_CACHE_SIZE, keep=playing | {key})
        self.log_event(
            "decisions", artwork_id=view.artwork_id, state=view.state,
            decisions=self.generator.describe(condition),
            features={k: round(v, 4) for k, v in view.features.items()},
        )
        return condition



def _evict(cache: OrderedDict[Any, Any], size: int, keep: set[Any]) -> None:
    """Drop the least recently used entries of ``cache`` beyond ``size``, except ``keep``."""
    for key in list(cache):
        if len(cache) <= size:
            return
        if key not in keep:
            del cache[key]


def _live_parameter(name: str) -> Parameter | None:
    """The live parameter or engine setting called ``name``, or None (ignored)."""
    try:
        return live_value(name)
    except ValueError:
        return None


class StartTimes:
    """How long the engine's calls that make starts and transitions take, by how many
    rooms they serve (one engine keeps one, for :func:`generate_due`).

    Where a new artwork's material lands depends on it (it must arrive first), and a
    model's call time depends on the batch far more than on the room: one start takes
    70 ms on an H200, sixteen at once (an engine starting) 400 ms, and a room whose last
    start was one of sixteen would otherwise place its next transition that much late.
    """

    def __init__(self) -> None:
        self._seconds: dict[int, float] = {}

    def observe(self, rooms: int, spent: float) -> None:
        """A call that served ``rooms`` starts or transitions took ``spent`` seconds."""
        before = self._seconds.get(rooms)
        self._seconds[rooms] = spent if before is None else 0.7 * before + 0.3 * spent

    def expect(self, rooms: int) -> float | None:
        """The time a call for ``rooms`` is expected to take: as observed for that many,
        else linear between the counts observed on either side, else the nearest
        count's (fewer than any observed: the smallest's, never optimistic); None before
        any call."""
        if not self._seconds:
            return None
        counts = sorted(self._seconds)
        return float(np.interp(rooms, counts, [self._seconds[n] for n in counts]))


def generate_due(sessions: Iterable[RoomSession], generator: Generator,
                 batch_window_s: float = 0.0, start_times: StartTimes | None = None,
                 ) -> Iterator[tuple[RoomSession, AudioChunk]]:
    """Generate every room's due chunk (at most one each), most urgent first.

    With ``batch_window_s`` > 0 and a generator that batches, the rooms due
    now are served in one ``generate_batch`` call together with the rooms
    whose next continuation falls due within the window: those are served
    a little early (their lead grows by at most the window), and no room
    ever waits for another. Each room's plan carries its own state, seed,
    condition and transition, so batching does not change what a room
    hears. Starts and transitions go first, in a call of their own, so a new
    artwork's chunk is sent before the continuations' windows are made (on a GPU a
    batch of 16 continuing windows takes ~0.4 s). Where the generator says which
    requests need model work (``needs_model``; ``rooms_per_call`` of them at most,
    starts included: a hundred rooms starting at once must not hold every other
    room for seconds), the rooms it serves from its buffer go next in one call,
    and at most one batch of rooms needing a window per turn, most urgent first
    (the others are due again next turn, after the loop has read its inboxes).

    Windows ahead of need, where the generator makes them (a diffusion model): the
    padding rows of that batch (``generate_batch_filled``: free, a bucket takes as
    long part-filled) go to the rooms whose next window falls due soonest, and on a
    turn where no room needs a window, ``make_ahead`` makes a few for the rooms whose
    windows fall due within twice ``lead_s``. Rooms that started together (an engine
    restart, the load generator) otherwise all need their windows in the same second,
    once per window: a burst longer than the lead, and rooms ran dry.

    ``start_times`` (the engine's :class:`StartTimes`) places each start and transition
    after the time a call with as many of them took before, not after the room's own
    last one.

    Otherwise (window 0, or a generator that cannot batch) rooms are generated one
    after the other, each chunk yielded as soon as it exists.
    """
    sessions = list(sessions)
    due = sorted((s for s in sessions if s.next_reason() is not None),
                 key=RoomSession.urgency)
    if batch_window_s <= 0.0 or not can_batch(generator):
        for session in due:
            chunk = session.next_chunk()
            if chunk is not None:
                yield session, chunk
        return
    lookahead = round(batch_window_s * generator.sample_rate)
    # Starts and transitions first, in a call of their own: their chunks go out before
    # the continuations' windows are made (a new artwork is heard after the margin, not
    # after every other room's next window).
    urgent = [s for s in due if s.next_reason() not in ("continue", None)]
    rest = [s for s in due if s not in urgent]
    # (the window pulls rooms in only alongside a room that is due)
    ahead = [s for s in sessions if due and s not in due
             and s.next_reason(lookahead) is not None]
    # Where the generator says which requests need model work (a diffusion window), the
    # rooms served from what it has buffered go first, in a call of their own, and those
    # that need a window follow one model batch at a time: no room waits for windows
    # that are not its own, and each chunk's time is its own batch's.
    needs_model = getattr(generator, "needs_model", None)
    limit = getattr(generator, "rooms_per_call", None) or len(sessions)
    groups: list[list[tuple[RoomSession, ChunkPlan]]] = []
    expected = (None if start_times is None or not urgent
                else start_times.expect(min(len(urgent), limit)))
    for rooms in (urgent, rest + ahead):
        plans = [(s, plan) for s in rooms
                 if (plan := s.plan_chunk(lookahead, expected)) is not None]
        if needs_model is None:
            groups.append(plans)
            continue
        costly = [(s, p) for s, p in plans if needs_model(p.state, p.frames)]
        cheap = [(s, p) for s, p in plans if not needs_model(p.state, p.frames)]
        # the rest of the costly ones next turn, after the loop reads its inboxes (a
        # hundred rooms starting at once would otherwise hold every other room for seconds)
        if rooms is urgent:
            groups.append(cheap + costly[:limit])
        else:
            groups += [cheap, costly[:limit]]
    fill = getattr(generator, "generate_batch_filled", None)
    served = {id(s) for g in groups for s, _ in g}
    model_runs = needs_model is not None and any(
        needs_model(p.state, p.frames) for g in groups for _, p in g)
    for plans in groups:
        if not plans:
            continue
        began = time.perf_counter()
        requests = [(p.state, p.condition, p.frames) for _, p in plans]
        if fill is not None and plans is groups[-1]:
            # the rooms that need a window next take the padding rows of this batch
            spare = _spare_streams(sessions, served, generator)
            results, filled = fill(requests, [(s.state, s.condition) for s in spare])
            for k, state in filled:
                spare[k].take_window(state)
        else:
            results = generate_many(generator, requests)
        spent = time.perf_counter() - began
        total = sum(p.frames for _, p in plans)
        for (session, plan), (generated, state) in zip(plans, results, strict=True):
            yield session, session.finish_chunk(plan, generated, state, spent,
                                                share=plan.frames / total, batch=len(plans))
        if start_times is not None and plans[0][1].reason != "continue":
            start_times.observe(len(plans), spent)
    make_ahead = getattr(generator, "make_ahead", None)
    if make_ahead is not None and sessions and not model_runs:
        # the model is idle this turn: make the windows that fall due soonest now
        spare = _spare_streams(sessions, served, generator,
                               within_s=2.0 * sessions[0].config.lead_s)
        for k, state in make_ahead([(s.state, s.condition) for s in spare]):
            spare[k].take_window(state)


def _spare_streams(sessions: list[RoomSession], served: set[int], generator: Generator,
                   within_s: float | None = None) -> list[RoomSession]:
    """Rooms not served this turn whose stream can take a window ahead of need (the
    generator's ``ahead_frames``), the one that will need it soonest first; with
    ``within_s``, only those with at most that much audio made ahead of the playhead."""
    ahead_frames = getattr(generator, "ahead_frames", None)
    if ahead_frames is None:
        return []
    ahead: list[tuple[int, RoomSession]] = []
    for session in sessions:
        if id(session) in served or session.state is None or session.pending_transition:
            continue
        buffered = ahead_frames(session.state)
        if buffered is None:  # most rooms, most turns: a window ahead already
            continue
        playhead = session.playhead_estimate()
        if playhead is None or session.queue_end is None:
            continue
        frames = session.queue_end + buffered - playhead
        if within_s is None or frames <= within_s * generator.sample_rate:
            ahead.append((frames, session))
    return [session for _, session in sorted(ahead, key=lambda pair: pair[0])]


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
