"""The stateless-per-bar composer: musical decisions in, timed note events out.

Where it sits: :mod:`mapping` decides *what kind* of music (key, mode, tempo,
instruments...); this module writes the notes; :mod:`render` plays them.

Design: the music is a pure function of ``(decisions, seed, grid, bar index)``.
Every bar draws its random choices from RNGs keyed by ``(seed, bar, role)``
and every phrase from ``(seed, phrase)``, so any timeline position can be
composed without composing what came before (seekable, cheap), a note that
spans a block boundary is just a note with an absolute start sample, and the
same inputs always give the same notes whatever block sizes the caller uses.

Musical structure:

- **Form** (for long listening: a visitor stays minutes, a performer an
  hour): each phrase is a :class:`Section` of a form the seed picks from
  :data:`FORMS` (A, A', B, B', development, calm, ~12 phrases, then round
  again with new themes). A section moves the plan's density (the density
  arc), silences some roles, shifts the melody's register and the pad's
  inversion, picks the harmony (home, away, circle of fifths) and states or
  varies its theme. Key, mode, tempo and instruments never change: the plan
  stays recognisable, the music develops.
- **Harmony**: one chord per bar from a per-phrase template of the mode,
  4- or 8-bar phrases with a half cadence in the middle. Home sections
  (:data:`theory.PROGRESSIONS`) close on the tonic, varied returns swap some
  chords for the chord a third below; away sections
  (:data:`theory.AWAY_PROGRESSIONS`) start off the tonic and end on the
  cadence chord; developments walk the diatonic circle of fifths. The
  experimental amount adds 7ths and 9ths, and an outside colour tone (b9,
  #11, split third) to a share of the bars that grows with it, from an
  occasional bar above the extension threshold to every bar: paced, so the
  share heard is the share the plan asks for.
- **Melody**: two one-bar themes (A and B, rhythm + scale-step contour) per
  form cycle, stated, sequenced, developed (inverted), then a long note on
  the half cadence; the answer phrase closes on the tonic (or the cadence
  chord away from home). Varied sections ornament the theme (passing and
  neighbour notes), displace it an eighth, fragment it into a sequence, or
  augment it when calm. Strong beats land on chord tones. Experimental
  images bend weak notes chromatically, turn runs into whole-tone fragments
  and spread notes in tuplets across the bar.
- **Bass** on the root of each chord's harmonic function (tonic, subdominant,
  dominant: ii over 4 is a ii6, iii over 1 a Imaj7), its own root on the bars
  that close a half phrase (whole notes, root-fifth, or a walking line with
  approach notes by density); **pad** voicings near a fixed centre with common tones
  tied across bars; **texture** arpeggios (or pointillistic whole-tone dots
  when experimental); **counter** guide tones (3rds and 7ths); soft
  **percussion** when the image is contrasted.
- **Transitions**: given the previous stream's :class:`Context`, the new
  material first plays a *bridge* in the new palette, at the old tempo,
  from the first sample until the old grid's next bar line: where the keys
  share a pre-dominant triad (:func:`theory.pivot_degree`), that pivot chord
  then the new key's cadence chord with its third in the melody (a pivot-chord
  modulation); otherwise the cadence chord alone. The new grid then starts
  on that bar line with the new tonic. A new plan that comes while the
  previous one's piece is still queued (its first downbeat not yet heard: a
  tempo moved twice in a few seconds, a knob ridden) takes its bar line from
  the grid heard at its start, the one that piece was bridging from
  (:attr:`Context.before`), never from the unheard grid of another tempo. Roles
  enter over the first bars (pad/bass/melody, then texture/counter, then
  percussion), so the character changes over a bar or two, not at once.
- **Resynchronisation**: a restart with the *same* plan and seed (the
  stream fell behind its playhead) keeps the old grid, so it plays the very
  same bars; notes already sounding at the restart point are re-struck there
  for their remaining length, so nothing drops out.
- **Tempo sync** (Ableton Link, MIDI clock): a plan carrying an outside bar
  grid (``decisions.sync``) at its own tempo starts its bars on that grid's
  bar lines instead: the first stream comes in on the next outside downbeat,
  a new plan's bridge ends on one, and a same plan whose outside grid moved
  (the sync's phase drifted) keeps its bar numbers, nudged to the nearest
  outside bar line. A piece whose meter is not the outside bar (3/4 against
  a 4-beat Link quantum) starts on an outside downbeat and keeps its beats
  on the outside beats.

Note rows are ``(start_sample, length, pitch, velocity, program, channel)``
with ``start_sample`` absolute on the room timeline.
"""

from __future__ import annotations

import dataclasses
import math
import random
import zlib
from dataclasses import dataclass

import numpy as np

from engine.generators.procedural.config import ProceduralConfig
from engine.generators.procedural.mapping import PERCUSSION_PROGRAM, ROLE_CHANNELS, MusicalDecisions
from engine.generators.procedural.theory import (
    AWAY_PROGRESSIONS,
    CADENCE_DEGREE,
    DIMINISHED_DEGREE,
    PROGRESSIONS,
    chord_pitch_classes,
    circle_progression,
    nearest_pitch,
    pivot_degree,
    scale_index_near,
    scale_pitch,
    scale_pitch_classes,
)

#: How close a plan's tempo must be to a sync's for its bars to follow the sync's grid, bpm.
SYNC_TEMPO_TOLERANCE_BPM = 0.005

#: Quarter-note positions of the metric groups (where bass and counter move).
METER_GROUPS: dict[tuple[int, int], tuple[float, ...]] = {
    (4, 4): (0.0, 2.0),
    (3, 4): (0.0, 2.0),
    (6, 8): (0.0, 1.5),
    (5, 4): (0.0, 3.0),
}
#: Quarter-note positions of the beats.
METER_BEATS: dict[tuple[int, int], tuple[float, ...]] = {
    (4, 4): (0.0, 1.0, 2.0, 3.0),
    (3, 4): (0.0, 1.0, 2.0),
    (6, 8): (0.0, 1.5),
    (5, 4): (0.0, 1.0, 2.0, 3.0, 4.0),
}
#: Bar (from the start of the new grid) at which each role comes in.
ROLE_ENTRY_BAR: dict[str, int] = {
    "pad": 0,
    "bass": 0,
    "melody": 0,
    "texture": 1,
    "counter": 1,
    "percussion": 2,
}
#: Melody bar functions inside a phrase.
_PLAN: dict[int, tuple[str, ...]] = {
    8: ("motif", "sequence", "develop", "half", "motif", "sequence", "approach", "final"),
    4: ("motif", "sequence", "approach", "final"),
}
_NOTE_COLUMNS = 6
_EMPTY = np.zeros((0, _NOTE_COLUMNS), np.int64)


@dataclass(frozen=True)
class Section:
    """What one phrase of the form does with the plan: density, harmony, theme, register.

    Everything a section changes stays inside the plan (same key, mode,
    tempo, instruments): it moves the plan's density, picks a harmonic
    family, silences some roles, and states or varies a theme.
    """

    name: str
    density: float  # added to the plan's density (clipped to [0.05, 1])
    harmony: str  # "home" (cadences on the tonic) | "away" (ends on a half cadence) | "circle"
    theme: str  # "A" or "B": which motif the melody develops
    vary: bool  # vary the theme (ornament, displacement, inversion, transposition)
    register: int  # scale steps added to the melody centre
    pad_shift: int  # semitones added to the pad's voicing centre (another inversion)
    silent: frozenset[str] = frozenset()


#: The sections a form is made of (after the classical A / A' / B / development / coda).
SECTIONS: dict[str, Section] = {
    "A": Section("A", 0.0, "home", "A", False, 0, 0),
    "A2": Section("A2", 0.12, "home", "A", True, 2, 3),
    "B": Section("B", -0.15, "away", "B", False, 3, 5, frozenset({"percussion"})),
    "B2": Section("B2", 0.15, "away", "B", True, -2, -4),
    "development": Section("development", 0.28, "circle", "A", True, 1, 2),
    "calm": Section(
        "calm", -0.4, "home", "B", True, -2, -3, frozenset({"counter", "percussion"})
    ),
}
#: Degree of the function root the bass plays under each chord degree (see
#: :meth:`Composer.bass_degree`): I, iii, vi -> I; ii, IV -> IV; V, vii -> V.
FUNCTION_ROOT: dict[int, int] = {0: 0, 2: 0, 5: 0, 1: 3, 3: 3, 4: 4, 6: 4}

#: Forms, one per seed (seed picks): phrase after phrase, then again with new themes.
#: Each starts with the plain statement, so the first phrase is the plan as mapped.
FORMS: tuple[tuple[str, ...], ...] = (
    ("A", "A2", "B", "A", "development", "calm", "B2", "A2", "B", "development", "A", "calm"),
    ("A", "B", "A2", "calm", "B2", "development", "A", "A2", "B", "development", "calm", "A2"),
    ("A", "A2", "calm", "B", "B2", "development", "A", "B", "A2", "development", "calm", "B2"),
)


@dataclass(frozen=True)
class Grid:
    """Where bars fall on the timeline: bar ``k`` starts at ``anchor + k * bar_samples``."""

    anchor: int
    bar_samples: float
    quarter_samples: float

    def bar_start(self, bar: int) -> float:
        """Timeline sample (fractional) where ``bar`` starts."""
        return self.anchor + bar * self.bar_samples

    def bar_at(self, sample: int) -> int:
        """Index of the bar containing ``sample`` (negative before the anchor)."""
        return math.floor((sample - self.anchor) / self.bar_samples)


@dataclass(frozen=True)
class Bridge:
    """Pivot material between a transition's start and the new grid's first bar line.

    ``chords`` play one after the other, changing at ``changes`` (timeline
    samples, one fewer than the chords): a pivot chord both keys share, then
    the new key's cadence chord; or the cadence chord alone when the keys
    share no suitable chord or the bridge is too short for two.
    """

    start: int
    end: int
    chords: tuple[tuple[int, ...], ...]
    changes: tuple[int, ...] = ()

    @property
    def chord(self) -> tuple[int, ...]:
        """The chord the bridge resolves from: the new key's cadence chord."""
        return self.chords[-1]

    @property
    def pivot(self) -> bool:
        """True when the bridge modulates through a chord of both keys."""
        return len(self.chords) > 1


@dataclass(frozen=True)
class Context:
    """What a new stream keeps from the stream it replaces: its plan, seed, grid and bridge.

    ``before`` is the grid heard from that stream's start until its own grid's anchor
    (its first downbeat): the old pulse its bridge keeps; None where nothing of another
    grid plays before the anchor.
    """

    decisions: MusicalDecisions
    seed: int
    grid: Grid
    bridge: Bridge | None
    before: Grid | None = None

    def grid_at(self, sample: int) -> Grid:
        """The grid whose bar lines are heard at ``sample``: the stream's own from its
        anchor on, before it the one it bridges from.

        A new plan started while this stream's piece is still queued (a knob ridden, a
        tempo moved twice in a few seconds) is heard after the old pulse, not after a
        grid of another tempo that no one has heard yet.
        """
        if self.before is not None and sample < self.grid.anchor:
            return self.before
        return self.grid


@dataclass(frozen=True)
class _Motif:
    onsets: tuple[float, ...]
    contour: tuple[int, ...]
    offset: int
    direction: int


def _same_plan(a: MusicalDecisions, b: MusicalDecisions) -> bool:
    """True when two plans differ at most in their outside bar grid (a sync's phase)."""
    return a == b or dataclasses.replace(a, sync=None) == dataclasses.replace(b, sync=None)


def _rng(stream_key: str, *key: object) -> random.Random:
    # String seeds hash with SHA-512 in Python's random (version 2): stable
    # across processes and PYTHONHASHSEED, unlike hash().
    return random.Random(":".join(str(k) for k in (stream_key, *key)))


class Composer:
    """Writes one stream's notes: a fixed plan (decisions, seed, grid), queried by time range."""

    def __init__(
        self,
        decisions: MusicalDecisions,
        config: ProceduralConfig,
        seed: int,
        start_sample: int,
        sample_rate: int,
        previous: Context | None = None,
    ) -> None:
        self.decisions = decisions
        self.config = config
        self.seed = int(seed)
        # The painting salts the seed, so two artworks heard with the same
        # room seed still get their own motifs and progressions.
        self._key = (
            f"{self.seed}:{zlib.crc32(repr((decisions.features, decisions.artwork_id)).encode())}"
        )
        self.sample_rate = sample_rate
        quarter = 60.0 / decisions.tempo_bpm * sample_rate
        bar = quarter * decisions.quarters_per_bar
        self.start_sample = int(start_sample)
        self.bridge: Bridge | None = None
        # the grid heard from start_sample until this one's anchor (see Context.before)
        self.before: Grid | None = None
        outside = self._outside_grid(decisions, quarter, sample_rate)
        anchor = int(start_sample)
        if previous is not None and _same_plan(previous.decisions, decisions) \
                and previous.seed == self.seed:
            # Same plan: continue the same grid (and bridge), so the same bars play; a new
            # outside grid (a sync's phase drifted) moves it to the nearest outside bar line.
            anchor, self.bridge = previous.grid.anchor, previous.bridge
            self.before = previous.before
            if outside is not None and decisions.sync != previous.decisions.sync:
                k = round((anchor - outside.anchor) / outside.bar_samples)
                anchor = int(round(outside.bar_start(k)))
        elif previous is not None:
            # A new plan: its first bar on a bar line of the grid heard at its start (the
            # previous piece's, or, while that piece is still queued, the one it bridges
            # from), or on the outside grid's.
            heard = previous.grid_at(int(start_sample))
            old = outside if outside is not None else heard
            line = self._next_bar_line(old, start_sample, sample_rate)
            anchor = int(round(line))
            if anchor > start_sample:
                self.before = heard
                self.bridge = self._plan_bridge(previous, heard, int(start_sample), anchor,
                                                sample_rate)
        elif outside is not None:
            # The first stream: it comes in on the outside grid's next downbeat.
            anchor = int(round(outside.bar_start(math.ceil(
                (start_sample - outside.anchor) / outside.bar_samples))))
        self.synced = outside is not None
        self.grid = Grid(anchor=anchor, bar_samples=bar, quarter_samples=quarter)
        self._bars: dict[int, np.ndarray] = {}
        self._voicings: dict[int, tuple[int, ...]] = {}
        d = decisions
        self._scale = scale_pitch_classes(d.key_root, d.mode)
        self._centre_idx = scale_index_near(d.key_root, d.mode, d.register, d.register)
        self._pad_centre = d.register - 10 if not d.ambience else d.register - 8
        self._bass_centre = min(max(d.register - 26, 38), 50)
        self._counter_centre = d.register - 5

    @staticmethod
    def _outside_grid(decisions: MusicalDecisions, quarter: float, sample_rate: int
                      ) -> Grid | None:
        """The plan's outside bar grid (tempo sync), if it has one and its beat is the plan's.

        A plan whose tempo is not the grid's (the sync's tempo has not reached
        it yet, or a knob moved it) keeps its own bar phase: bars laid on a grid
        of another tempo would drift off it at once.
        """
        sync = decisions.sync
        if sync is None or abs(sync.bpm - decisions.tempo_bpm) > SYNC_TEMPO_TOLERANCE_BPM:
            return None
        return Grid(anchor=sync.phase, bar_samples=sync.bar_samples(sample_rate),
                    quarter_samples=quarter)

    @property
    def context(self) -> Context:
        """The context a later transition continues from."""
        return Context(self.decisions, self.seed, self.grid, self.bridge, self.before)

    def _plan_bridge(self, previous: Context, heard: Grid, start: int, end: int,
                     sample_rate: int) -> Bridge:
        """Pivot (a chord of both keys) then the new cadence chord, or the cadence chord alone.

        The pivot needs room: the bridge is split on a beat line of ``heard`` (the
        grid heard at its start) near its middle, and both halves must last at least
        0.4 s. Without a shared
        chord (distant keys) the cadence chord alone announces the new tonic.
        """
        d, old = self.decisions, previous.decisions
        cadence = chord_pitch_classes(d.key_root, d.mode, CADENCE_DEGREE[d.mode], 4)
        degree = pivot_degree(old.key_root, old.mode, d.key_root, d.mode)
        if degree is not None:
            q, anchor = heard.quarter_samples, heard.anchor
            middle = start + (end - start) / 2
            split = int(round(anchor + round((middle - anchor) / q) * q))
            shortest = 0.4 * sample_rate
            if split - start >= shortest and end - split >= shortest:
                pivot = chord_pitch_classes(d.key_root, d.mode, degree, 3)
                return Bridge(start, end, (pivot, cadence), (split,))
        return Bridge(start, end, (cadence,))

    @staticmethod
    def _next_bar_line(old: Grid, start_sample: int, sample_rate: int) -> float:
        """The old grid's line where the new grid begins, leaving room for a short pivot.

        The next old bar line at least half a bar (at most 2 s) away keeps the
        bar phase the listener already feels; if that is more than 6 s off (a
        very slow old tempo), the next old beat line at least 1 s away is used.
        """
        min_gap = min(0.5 * old.bar_samples, 2.0 * sample_rate)
        k = math.ceil((start_sample - old.anchor) / old.bar_samples)
        line = old.anchor + k * old.bar_samples
        while line - start_sample < min_gap:
            line += old.bar_samples
        if line - start_sample > 6.0 * sample_rate:
            q = math.ceil((start_sample - old.anchor) / old.quarter_samples)
            line = old.anchor + q * old.quarter_samples
            while line - start_sample < min(old.quarter_samples, 1.0 * sample_rate):
                line += old.quarter_samples
        return line

    # -- Queries -----------------------------------------------------------

    def notes_between(self, t0: int, t1: int) -> np.ndarray:
        """Notes (int64 rows, absolute start) whose start lies in ``[t0, t1)``, sorted by start.

        Notes written before the stream's start are not played; those still
        sounding at the start are re-struck there for what remains of them.
        """
        notes = self._written(max(t0, self.start_sample), t1)
        if t0 <= self.start_sample < t1:
            lookback = int(4 * self.grid.bar_samples)
            earlier = self._written(self.start_sample - lookback, self.start_sample)
            ends = earlier[:, 0] + earlier[:, 1]
            # Re-strike what still has a quarter second to go; drums are not sustained.
            keep = (ends - self.start_sample > self.sample_rate // 4) & (
                earlier[:, 5] != ROLE_CHANNELS["percussion"]
            )
            carried = earlier[keep].copy()
            carried[:, 1] = ends[keep] - self.start_sample
            carried[:, 0] = self.start_sample
            notes = np.concatenate([carried, notes])
        return notes[np.argsort(notes[:, 0], kind="stable")]

    def _written(self, t0: int, t1: int) -> np.ndarray:
        """Notes of the bridge and the bars whose start lies in ``[t0, t1)``, in no order."""
        if t1 <= t0:
            return _EMPTY
        parts = []
        if self.bridge is not None and t0 < self.bridge.end and t1 > self.bridge.start:
            parts.append(self._bridge_notes())
        first = max(self.grid.bar_at(t0), 0)
        last = self.grid.bar_at(t1 - 1)
        for bar in range(first, last + 1):
            parts.append(self._bar(bar))
        if not parts:
            return _EMPTY
        notes = np.concatenate(parts)
        return notes[(notes[:, 0] >= t0) & (notes[:, 0] < t1)]

    # -- Form ----------------------------------------------------------------

    def section(self, bar: int) -> Section:
        """The section ``bar`` belongs to: the seed's form, phrase after phrase, cycling.

        The ambience has no form (it is one long breath).
        """
        if self.decisions.ambience:
            return SECTIONS["A"]
        form = FORMS[_rng(self._key, "form").randrange(len(FORMS))]
        phrase = max(bar, 0) // self.config.phrase_bars
        return SECTIONS[form[phrase % len(form)]]

    def _cycle(self, bar: int) -> int:
        """How many times the form has gone round before ``bar`` (new themes each time)."""
        form_bars = len(FORMS[0]) * self.config.phrase_bars
        return max(bar, 0) // form_bars

    def density(self, bar: int) -> float:
        """The plan's density moved by the section: the density arc of the form."""
        if self.decisions.ambience:
            return self.decisions.density
        return min(max(self.decisions.density + self.section(bar).density, 0.05), 1.0)

    # -- Harmony -------------------------------------------------------------

    def degree(self, bar: int) -> int:
        """Scale degree of the chord in ``bar``."""
        d = self.decisions
        if d.ambience:
            return (0, 0, 1, 1)[bar % 4]  # the lydian I-II sway
        phrase_bars = self.config.phrase_bars
        phrase, j = divmod(bar, phrase_bars)
        section = self.section(bar)
        if section.harmony == "circle":
            return circle_progression(d.mode, phrase_bars)[j]
        rng = _rng(self._key, phrase, "progression")
        templates = AWAY_PROGRESSIONS[d.mode] if section.harmony == "away" else PROGRESSIONS[d.mode]
        template = templates[rng.randrange(len(templates))]
        degree = (template if phrase_bars == 8 else template[4:])[j]
        if section.vary and j not in (0, phrase_bars // 2 - 1) and j < phrase_bars - 2 and (
            rng.random() < 0.5
        ):
            # A third below shares two tones with the chord (I->vi, IV->ii, V->iii):
            # the varied return recolours the harmony without leaving the key.
            lower = (degree + 5) % 7
            if lower != DIMINISHED_DEGREE[d.mode]:
                degree = lower
        return degree

    def chord(self, bar: int) -> tuple[int, ...]:
        """Pitch classes of the chord in ``bar`` (root first), with extensions and clusters."""
        d, cfg = self.decisions, self.config
        x = d.experimental
        size = 3
        if x >= cfg.extension_threshold or d.richness > 0.75:
            size = 4
        if x >= cfg.extension_threshold + 0.15:
            size = 5
        degree = self.degree(bar)
        pcs = list(chord_pitch_classes(d.key_root, d.mode, degree, size))
        if self._coloured(bar):
            rng = _rng(self._key, bar, "cluster")
            root, third = pcs[0], pcs[1]
            options = [(root + 1) % 12, (root + 6) % 12, (third - 1) % 12, (third + 1) % 12]
            outside = [pc for pc in options if pc not in self._scale and pc not in pcs]
            if outside:
                pcs.append(rng.choice(outside))
        return tuple(pcs)

    def colour_rate(self) -> float:
        """The share of bars whose chord takes a tone from outside the key (b9, #11, a split
        third): none up to the extension threshold, rising with the experimental amount to
        0.35 at the cluster threshold (occasional colour), then to every bar at 1."""
        x, cfg = self.decisions.experimental, self.config
        if x >= cfg.cluster_threshold:
            return 0.35 + 0.65 * (x - cfg.cluster_threshold) / max(
                1.0 - cfg.cluster_threshold, 1e-6)
        if x <= cfg.extension_threshold:
            return 0.0
        return 0.35 * (x - cfg.extension_threshold) / max(
            cfg.cluster_threshold - cfg.extension_threshold, 1e-6)

    def _coloured(self, bar: int) -> bool:
        # Paced, not drawn bar by bar: exactly colour_rate of any run of bars is coloured
        # (to within one bar), at a phase the seed picks, so how experimental the harmony
        # sounds follows the painting rather than the luck of a few coin tosses.
        rate = self.colour_rate()
        if rate <= 0.0:
            return False
        phase = _rng(self._key, "colour").random()
        return math.floor((bar + 1) * rate + phase) > math.floor(bar * rate + phase)

    def _pad_voicing(self, bar: int) -> tuple[int, ...]:
        cached = self._voicings.get(bar)
        if cached is None:
            centre = self._pad_centre + self.section(bar).pad_shift
            pitches = {nearest_pitch(pc, centre) for pc in self.chord(bar)}
            cached = tuple(sorted(pitches))
            self._voicings[bar] = cached
        return cached

    # -- One bar -------------------------------------------------------------

    def _bar(self, bar: int) -> np.ndarray:
        cached = self._bars.get(bar)
        if cached is not None:
            return cached
        d = self.decisions
        events: list[tuple[float, float, int, int, str]] = []
        silent = self.section(bar).silent
        for role in d.roles:
            if bar < ROLE_ENTRY_BAR[role] and not d.ambience:
                continue
            if role in silent:
                continue
            events.extend(getattr(self, f"_{role}")(bar))
        rows = self._to_rows(bar, events)
        if len(self._bars) > 32:
            self._bars.clear()
            self._voicings.clear()
        self._bars[bar] = rows
        return rows

    def _to_rows(self, bar: int, events: list[tuple[float, float, int, int, str]]) -> np.ndarray:
        if not events:
            return _EMPTY
        start = self.grid.bar_start(bar)
        q = self.grid.quarter_samples
        d = self.decisions
        rows = np.empty((len(events), _NOTE_COLUMNS), np.int64)
        for i, (onset, length, pitch, velocity, role) in enumerate(events):
            a = int(round(start + onset * q))
            b = int(round(start + (onset + length) * q))
            program = PERCUSSION_PROGRAM if role == "percussion" else d.program(role)
            assert program is not None, f"role {role} plays but has no program"
            rows[i] = (
                a,
                max(b - a, 1),
                pitch,
                min(max(velocity, 1), 127),
                program,
                ROLE_CHANNELS[role],
            )
        return rows

    def _swell(self, bar: int) -> float:
        """Phrase dynamics: a gentle arch peaking past the middle of the phrase."""
        j = bar % self.config.phrase_bars
        return 0.88 + 0.14 * math.sin(math.pi * (j + 0.5) / self.config.phrase_bars)

    def _bridge_notes(self) -> np.ndarray:
        """The bridge in the new palette: pad chords (common tones held), bass roots, and a
        melody note on the cadence chord's third (the leading tone in major) that the new
        tonic resolves."""
        assert self.bridge is not None
        b = self.bridge
        bounds = (b.start, *b.changes, b.end)
        rows: list[tuple[int, int, int, int, int, int]] = []
        pad, bass = self.decisions.program("pad"), self.decisions.program("bass")
        melody = self.decisions.program("melody")
        voicings = [{nearest_pitch(pc, self._pad_centre) for pc in c} for c in b.chords]
        for i, chord in enumerate(b.chords):
            t0, t1 = bounds[i], bounds[i + 1]
            if pad is not None:
                for pitch in sorted(voicings[i]):
                    if i > 0 and pitch in voicings[i - 1]:
                        continue  # a common tone: held from the pivot
                    held = i + 1
                    while held < len(voicings) and pitch in voicings[held]:
                        held += 1
                    rows.append((t0, bounds[held] - t0, pitch, 58, pad, ROLE_CHANNELS["pad"]))
            if bass is not None:
                root = nearest_pitch(chord[0], self._bass_centre)
                rows.append((t0, t1 - t0, root, 70, bass, ROLE_CHANNELS["bass"]))
        if melody is not None and b.pivot and not self.decisions.ambience:
            t0 = bounds[-2]
            lead = nearest_pitch(b.chords[-1][1], self.decisions.register)
            rows.append((t0, b.end - t0, lead, 66, melody, ROLE_CHANNELS["melody"]))
        return np.asarray(rows, np.int64).reshape(-1, _NOTE_COLUMNS)

    # -- Roles (each returns (onset_q, length_q, pitch, velocity, role)) -----

    def _pad(self, bar: int) -> list[tuple[float, float, int, int, str]]:
        d = self.decisions
        qpb = d.quarters_per_bar
        voicing = self._pad_voicing(bar)
        before = self._pad_voicing(bar - 1) if bar > 0 else ()
        base = 40 if d.ambience else 52 + 12 * d.richness
        velocity = int(base * self._swell(bar))
        out = []
        for pitch in voicing:
            if pitch in before:
                continue  # a common tone, tied from an earlier bar
            bars = 1
            while bars < 4 and pitch in self._pad_voicing(bar + bars):
                bars += 1
            out.append((0.0, bars * qpb, pitch, velocity, "pad"))
        return out

    def bass_degree(self, bar: int) -> int:
        """Scale degree whose root the bass plays in ``bar``: the root of the chord's harmonic
        function (tonic under I, iii, vi; subdominant under ii, IV; dominant under V, vii),
        so the chords above become inversions and sevenths (ii over 4 is ii6, vii over 5 a
        V7); the bars closing each half phrase sound their own roots (the cadences).

        Three roots, each heard often, hold the bottom of the spectrum steady over a work
        however its harmony moves; a bass that doubled every root put a new fundamental in
        a new place with each chord."""
        degree = self.degree(bar)
        half = max(self.config.phrase_bars // 2, 1)
        if self.decisions.ambience or bar % half == half - 1:
            return degree
        return FUNCTION_ROOT[degree]

    def _bass_chord(self, bar: int) -> tuple[int, ...]:
        degree = self.bass_degree(bar)
        if degree == self.degree(bar):
            return self.chord(bar)
        return chord_pitch_classes(self.decisions.key_root, self.decisions.mode, degree, 3)

    def _bass(self, bar: int) -> list[tuple[float, float, int, int, str]]:
        d = self.decisions
        qpb = d.quarters_per_bar
        pcs = self._bass_chord(bar)
        root = nearest_pitch(pcs[0], self._bass_centre)
        fifth = nearest_pitch(pcs[2], root + 5)
        density = self.density(bar)
        velocity = int((70 + 16 * density) * self._swell(bar))
        last = bar % self.config.phrase_bars == self.config.phrase_bars - 1
        if density < 0.4 or last:
            return [(0.0, qpb, root, velocity, "bass")]
        groups = METER_GROUPS[d.meter]
        if density < 0.68:
            out = []
            for i, g in enumerate(groups):
                end = groups[i + 1] if i + 1 < len(groups) else qpb
                out.append(
                    (g, (end - g) * 0.95, root if i == 0 else fifth, velocity - 8 * i, "bass")
                )
            return out
        # Walking: chord tones on the beats, then an approach to the next root.
        rng = _rng(self._key, bar, "bass")
        beats = METER_BEATS[d.meter]
        step = beats[1] - beats[0]
        next_root = nearest_pitch(self._bass_chord(bar + 1)[0], self._bass_centre)
        tones = [root] + [nearest_pitch(rng.choice(pcs[:3]), root + 4) for _ in beats[1:-1]]
        if d.experimental >= self.config.cluster_threshold:
            approach = next_root + rng.choice((-1, 1))  # chromatic approach
        else:
            below = [p for p in range(next_root - 3, next_root) if p % 12 in self._scale]
            approach = below[-1] if below else next_root - 2
        tones.append(approach)
        return [
            (b, step * 0.9, p, velocity - (0 if i == 0 else 10), "bass")
            for i, (b, p) in enumerate(zip(beats, tones, strict=True))
        ]

    def _motif(self, theme: str, cycle: int) -> _Motif:
        """The one-bar theme ``theme`` of form cycle ``cycle`` (drawn at the plan's density, so
        every section develops the same motif)."""
        d = self.decisions
        rng = _rng(self._key, theme, cycle, "motif")
        eighths = int(round(d.quarters_per_bar * 2))
        count = int(round(2 + (0.75 * eighths - 2) * d.density))
        count = min(max(count, 2), eighths)
        groups = {int(g * 2) for g in METER_GROUPS[d.meter]}
        beats = {int(b * 2) for b in METER_BEATS[d.meter]}
        weights = [
            4.0 if e == 0 else 3.0 if e in groups else 2.0 if e in beats else 1.0
            for e in range(eighths)
        ]
        chosen: set[int] = {0} if rng.random() < 0.85 else set()
        while len(chosen) < count:
            chosen.add(rng.choices(range(eighths), weights=weights)[0])
        onsets = tuple(e / 2.0 for e in sorted(chosen))
        # Mostly steps, some thirds, rare fourths: singable lines.
        contour = tuple(rng.choice((-1, -1, -1, 1, 1, 1, -2, 2, 3, -3)) for _ in onsets[1:])
        return _Motif(onsets, contour, rng.randint(-2, 2), rng.choice((-1, 1)))

    def _chord_index(self, bar: int, target: int) -> int:
        """The scale-step index of a chord tone of ``bar`` nearest ``target``."""
        degree = self.degree(bar)
        tones = {0, 2, 4}
        for delta in (0, -1, 1, -2, 2, -3, 3):
            if (target + delta - degree) % 7 in tones:
                return target + delta
        return target

    @staticmethod
    def _vary(
        onsets: list[float], contour: list[int], how: str, qpb: float, step: int
    ) -> tuple[list[float], list[int]]:
        """One classical variation of a one-bar motif, on the eighth-note grid.

        ``ornament`` fills long notes with a passing or neighbour note,
        ``displace`` moves the motif an eighth late (syncopation), ``fragment``
        states its first half twice, the second a step ``step`` higher or
        lower (a sequence), ``augment`` doubles its note values.
        """
        if how == "ornament":
            new_onsets, new_contour = [onsets[0]], list[int]()
            for i, move in enumerate(contour):
                if onsets[i + 1] - onsets[i] >= 1.0:
                    sign = 1 if move >= 0 else -1
                    first = sign if abs(move) >= 2 else -move  # passing | neighbour
                    new_onsets.append(onsets[i] + 0.5)
                    new_contour.extend((first, move - first))
                else:
                    new_contour.append(move)
                new_onsets.append(onsets[i + 1])
            return new_onsets, new_contour
        if how == "displace":
            kept = [o + 0.5 for o in onsets if o + 0.5 < qpb]
            return kept, contour[: len(kept) - 1]
        if how == "fragment":
            half = round(qpb) / 2
            head = [o for o in onsets if o < half] or onsets[:1]
            steps = contour[: len(head) - 1]
            return head + [o + half for o in head], steps + [step] + steps
        if how == "augment":
            kept = [2 * o for o in onsets if 2 * o < qpb]
            return kept, contour[: len(kept) - 1]
        raise ValueError(f"variation must be ornament|displace|fragment|augment, got {how!r}")

    def _melody(self, bar: int) -> list[tuple[float, float, int, int, str]]:
        d, cfg = self.decisions, self.config
        phrase, j = divmod(bar, cfg.phrase_bars)
        function = _PLAN[cfg.phrase_bars][j]
        qpb = d.quarters_per_bar
        rng = _rng(self._key, bar, "melody")
        section = self.section(bar)
        density = self.density(bar)
        velocity = int((72 + 18 * density) * self._swell(bar))
        centre = self._centre_idx + section.register
        if function in ("half", "final"):
            if function == "final" and self.degree(bar) == 0:
                target = centre - (centre % 7) + (7 if centre % 7 > 3 else 0)  # the tonic
            else:
                target = self._chord_index(bar, centre + 1)
            pitch = scale_pitch(d.key_root, d.mode, target, d.register)
            return [(0.0, qpb * 0.9, pitch, velocity - 4, "melody")]
        if density < 0.35 and rng.random() < 0.25 and j > 0:
            return []  # a breath

        motif = self._motif(section.theme, self._cycle(bar))
        contour = list(motif.contour)
        onsets = list(motif.onsets)
        if section.vary and not d.ambience:
            options = ["displace", "fragment"] if len(onsets) > 2 else ["fragment"]
            if density >= 0.4:
                options.append("ornament")
            if density < 0.35:
                options = ["augment", "fragment"]
            for how in rng.sample(options, 2 if section.name == "development" else 1):
                varied = self._vary(onsets, contour, how, qpb, motif.direction)
                if len(varied[0]) >= 2:
                    onsets, contour = varied
        shift = {
            "motif": 0,
            "sequence": motif.direction,
            "develop": 2 * motif.direction,
            "approach": -motif.direction,
        }[function]
        if function == "develop" or (
            function == "motif" and phrase % 2 == 1 and rng.random() < 0.4
        ):
            contour = [-c for c in contour]  # inversion
        if function == "approach":
            contour = contour[::-1]
        x = d.experimental
        wild = (x - cfg.cluster_threshold) / max(1.0 - cfg.cluster_threshold, 1e-6)
        if x >= cfg.cluster_threshold and rng.random() < 0.3 + 0.5 * wild:
            # Even division of the bar: tuplets against the metre (5 over 4 ...).
            onsets = [i * qpb / len(onsets) for i in range(len(onsets))]

        start = self._chord_index(bar, centre + motif.offset + shift)
        lo, hi = centre - 4, centre + 5  # about an octave and a half: a singable compass
        start = min(max(start, lo), hi)
        indices = [start]
        for step in contour:
            nxt = indices[-1] + step
            if nxt > hi or nxt < lo:
                nxt = indices[-1] - step  # turn back at the edge of the register
            indices.append(nxt)
        strong = {g for g in METER_GROUPS[d.meter]} | {0.0}
        pitches = []
        for onset, idx in zip(onsets, indices, strict=True):
            if onset in strong:
                idx = self._chord_index(bar, idx)
            pitches.append(scale_pitch(d.key_root, d.mode, idx, d.register))

        if (
            x >= cfg.cluster_threshold
            and function in ("sequence", "develop")
            and rng.random() < 0.3 + 0.6 * wild
        ):
            # Whole-tone fragment: same contour directions, whole steps only.
            p = pitches[0]
            whole = [p]
            for step in contour:
                p += 2 if step > 0 else -2
                whole.append(p)
            pitches = whole
        chromatic = min(max((x - 0.3) * 1.2, 0.0), 0.6)
        out = []
        for i, (onset, pitch) in enumerate(zip(onsets, pitches, strict=True)):
            end = onsets[i + 1] if i + 1 < len(onsets) else min(qpb, onset + 2.0)
            if onset not in strong and rng.random() < chromatic:
                bent = pitch + rng.choice((-1, 1))
                if bent % 12 not in self._scale:
                    pitch = bent
            accent = 8 if onset in strong else 0
            out.append(
                (
                    onset,
                    (end - onset) * 0.92,
                    pitch,
                    velocity + accent + rng.randint(-5, 5),
                    "melody",
                )
            )
        return out

    def _counter(self, bar: int) -> list[tuple[float, float, int, int, str]]:
        d = self.decisions
        qpb = d.quarters_per_bar
        pcs = self.chord(bar)
        guide = [pcs[1], pcs[3] if len(pcs) > 3 else pcs[2]]
        velocity = int((50 + 14 * d.richness) * self._swell(bar))
        if bar % self.config.phrase_bars == self.config.phrase_bars - 1:
            return [(0.0, qpb, nearest_pitch(guide[0], self._counter_centre), velocity, "counter")]
        groups = METER_GROUPS[d.meter]
        out = []
        for i, g in enumerate(groups):
            end = groups[i + 1] if i + 1 < len(groups) else qpb
            out.append(
                (g, end - g, nearest_pitch(guide[i % 2], self._counter_centre), velocity, "counter")
            )
        return out

    def _texture(self, bar: int) -> list[tuple[float, float, int, int, str]]:
        d, cfg = self.decisions, self.config
        qpb = d.quarters_per_bar
        rng = _rng(self._key, bar, "texture")
        pcs = self.chord(bar)
        if d.ambience:
            # Rare bells over the pad: one or two notes in some bars.
            out = []
            if rng.random() < 0.6:
                for _ in range(rng.randint(1, 2)):
                    onset = rng.randrange(int(qpb * 2)) / 2.0
                    pitch = nearest_pitch(rng.choice(pcs[:3]), d.register + rng.randint(4, 14))
                    out.append((onset, 2.0, pitch, rng.randint(30, 40), "texture"))
            return out
        density = self.density(bar)
        velocity = int((42 + 18 * density) * self._swell(bar))
        if d.experimental >= cfg.cluster_threshold:
            # Pointillism: scattered dots from the chord and its whole-tone shadow.
            whole_tone = [(pcs[0] + 2 * i) % 12 for i in range(6)]
            pool = list(pcs) + whole_tone
            count = rng.randint(3, 3 + int(6 * density))
            out = []
            for _ in range(count):
                onset = rng.randrange(int(qpb * 5)) / 5.0  # quintuplet sixteenths
                # centred on the plan's register, so dots do not lift a dark work's music
                pitch = nearest_pitch(rng.choice(pool), d.register + rng.randint(-7, 7))
                out.append(
                    (
                        onset,
                        rng.choice((0.5, 1.0, 1.5)),
                        pitch,
                        velocity + rng.randint(-8, 8),
                        "texture",
                    )
                )
            return out
        step = 1.0 if density < 0.4 else 0.5 if density < 0.75 else 0.25
        if d.meter == (6, 8) and step == 1.0:
            step = 1.5
        # Arpeggios fill the space between pad and melody, so the tune stays on top.
        tones = sorted(
            {nearest_pitch(pc, d.register - 12) for pc in pcs[:4]}
            | {nearest_pitch(pc, d.register - 2) for pc in pcs[:4]}
        )
        pattern = _rng(self._key, bar // self.config.phrase_bars, "arp").choice(
            ("up", "updown", "down", "walk")
        )
        n = int(round(qpb / step))
        if pattern == "up":
            order = [tones[i % len(tones)] for i in range(n)]
        elif pattern == "down":
            order = [tones[-1 - i % len(tones)] for i in range(n)]
        elif pattern == "updown":
            cycle = tones + tones[-2:0:-1]
            order = [cycle[i % len(cycle)] for i in range(n)]
        else:
            pos = rng.randrange(len(tones))
            order = []
            for _ in range(n):
                order.append(tones[pos])
                pos = min(max(pos + rng.choice((-1, 1, 2)), 0), len(tones) - 1)
        return [
            (i * step, step * 1.8, pitch, velocity - (0 if i % 2 == 0 else 6), "texture")
            for i, pitch in enumerate(order)
        ]

    def _percussion(self, bar: int) -> list[tuple[float, float, int, int, str]]:
        d, cfg = self.decisions, self.config
        qpb = d.quarters_per_bar
        rng = _rng(self._key, bar, "percussion")
        groups = METER_GROUPS[d.meter]
        density = self.density(bar)
        out: list[tuple[float, float, int, int, str]] = [(0.0, 0.5, 36, 52, "percussion")]
        if density > 0.5:
            out.append((groups[1], 0.5, 36, 40, "percussion"))
        step = 0.5 if density > 0.45 else 1.0
        for i in range(int(round(qpb / step))):
            on = i * step
            accent = 10 if on in groups else 0
            out.append((on, 0.25, 70, 30 + accent + rng.randint(-4, 4), "percussion"))
        if d.experimental >= cfg.cluster_threshold:
            for _ in range(rng.randint(1, 3)):
                on = rng.randrange(int(qpb * 5)) / 5.0
                out.append(
                    (on, 0.25, rng.choice((76, 77, 45, 47)), rng.randint(30, 45), "percussion")
                )
        if bar % cfg.phrase_bars == 0:
            out.append((0.0, 2.0, 81, 34, "percussion"))  # open triangle marks the phrase
        return out


__all__ = ["Bridge", "Composer", "Context", "Grid"]
