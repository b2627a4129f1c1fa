"""The procedural composer: notes, measured against the directions the mapping promises."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from engine.generators.procedural.composer import FORMS, Composer, Grid
from engine.generators.procedural.config import ProceduralConfig
from engine.generators.procedural.mapping import ROLE_CHANNELS, decide
from engine.generators.procedural.theory import CADENCE_DEGREE, scale_pitch_classes

RATE = 48000
CONFIG = ProceduralConfig()
SECONDS = 40  # a few phrases: enough to average over motifs and progressions


def _notes(
    features: dict[str, float], seed: int = 1, seconds: float = SECONDS
) -> tuple[Composer, np.ndarray]:
    composer = Composer(decide(features, CONFIG), CONFIG, seed, 0, RATE)
    return composer, composer.notes_between(0, int(seconds * RATE))


def _pitched(notes: np.ndarray) -> np.ndarray:
    return notes[notes[:, 5] != ROLE_CHANNELS["percussion"]]


def test_notes_are_seekable_and_independent_of_query_size() -> None:
    composer, whole = _notes({"edge_density": 0.8}, seconds=30)
    step = 17_761  # 0.37 s, coprime with the bar length
    pieces = [
        composer.notes_between(t, min(t + step, 30 * RATE)) for t in range(0, 30 * RATE, step)
    ]
    assert np.array_equal(np.concatenate(pieces), whole)
    # A fresh composer asked only for bars 6-7 writes the same notes: no history needed.
    fresh = Composer(composer.decisions, CONFIG, 1, 0, RATE)
    t0, t1 = int(composer.grid.bar_start(6)), int(composer.grid.bar_start(8))
    expected = whole[(whole[:, 0] >= t0) & (whole[:, 0] < t1)]
    assert np.array_equal(fresh.notes_between(t0, t1), expected)


def test_seed_varies_notes_but_not_the_plan() -> None:
    a = _notes({}, seed=1)[1]
    b = _notes({}, seed=2)[1]
    assert not np.array_equal(a, b)
    assert np.array_equal(a, _notes({}, seed=1)[1])


def test_phrases_end_on_the_tonic_or_a_half_cadence() -> None:
    composer = Composer(decide({"brightness": 0.7}, CONFIG), CONFIG, 1, 0, RATE)
    d = composer.decisions
    bars = CONFIG.phrase_bars
    phrases = len(FORMS[0])
    notes = composer.notes_between(0, int(composer.grid.bar_start(phrases * bars)))
    homes = 0
    for phrase in range(phrases):
        phrase_end = (phrase + 1) * bars - 1
        start = int(round(composer.grid.bar_start(phrase_end)))
        melody = notes[(notes[:, 0] == start) & (notes[:, 5] == ROLE_CHANNELS["melody"])]
        if composer.section(phrase_end).harmony == "home":
            # A home section closes on the tonic, in the bass of the chord and the tune.
            homes += 1
            assert composer.degree(phrase_end) == 0
            assert len(melody) == 1 and melody[0, 2] % 12 == d.key_root
        else:
            # B sections and developments rest on the cadence chord that leads home.
            assert composer.degree(phrase_end) == CADENCE_DEGREE[d.mode]
            assert len(melody) == 1 and melody[0, 2] % 12 in composer.chord(phrase_end)
    assert composer.section(0).name == "A" and homes >= phrases // 2


def test_dark_images_are_lower_and_slower() -> None:
    _, dark = _notes({"brightness": 0.1, "warmth": 0.3})
    _, bright = _notes({"brightness": 0.9, "warmth": 0.3})
    melody = ROLE_CHANNELS["melody"]
    assert dark[dark[:, 5] == melody, 2].mean() < bright[bright[:, 5] == melody, 2].mean() - 5
    assert _pitched(dark)[:, 2].mean() < _pitched(bright)[:, 2].mean() - 5
    # Slower motion: fewer melody onsets per second.
    assert (dark[:, 5] == melody).sum() < 0.75 * (bright[:, 5] == melody).sum()


def _outside_scale(composer: Composer, notes: np.ndarray) -> float:
    d = composer.decisions
    scale = scale_pitch_classes(d.key_root, d.mode)
    pitched = _pitched(notes)
    return float(np.mean([p % 12 not in scale for p in pitched[:, 2]]))


def _experimental(amount: float) -> tuple[Composer, np.ndarray]:
    # The plan's experimental amount set directly: this tests the composer,
    # whatever weights the mapping gives the features that drive it.
    plan = replace(decide({}, CONFIG), experimental=amount)
    composer = Composer(plan, CONFIG, 1, 0, RATE)
    return composer, composer.notes_between(0, SECONDS * RATE)


def test_experimental_plans_leave_the_key_and_the_grid() -> None:
    low = _experimental(0.05)
    high = _experimental(0.95)
    assert _outside_scale(*low) == 0.0
    assert _outside_scale(*high) > 0.05

    # Irregular rhythm: onsets off the sixteenth-note grid (tuplets) only when experimental.
    def off_grid(composer: Composer, notes: np.ndarray) -> float:
        sixteenth = composer.grid.quarter_samples / 4
        phase = (notes[:, 0] - composer.grid.anchor) / sixteenth
        return float(np.mean(np.abs(phase - np.round(phase)) > 0.05))

    assert off_grid(*low) == 0.0 and off_grid(*high) > 0.05


def test_outside_colour_grows_with_the_experimental_amount_at_its_paced_rate() -> None:
    # Graded, not a step at the cluster threshold: a moderately abstract work gets an
    # occasional outside tone, more abstract ones more, and exactly the share promised.
    outside = []
    for amount in (0.2, 0.38, 0.46, 0.54, 0.7, 0.9):
        composer = Composer(replace(decide({}, CONFIG), experimental=amount), CONFIG, 3, 0, RATE)
        rate = composer.colour_rate()
        bars = 64
        coloured = sum(
            any(pc not in composer._scale for pc in composer.chord(bar)) for bar in range(bars)
        )
        assert abs(coloured - rate * bars) <= 1.0 + 0.1 * rate * bars  # a pick may be in-chord
        outside.append(coloured / bars)
    assert outside[0] == 0.0
    assert outside == sorted(outside) and outside[-1] > outside[1] + 0.4


def test_the_bass_plays_function_roots_and_the_cadences_their_own() -> None:
    composer = Composer(decide({"brightness": 0.6}, CONFIG), CONFIG, 1, 0, RATE)
    d, bars = composer.decisions, CONFIG.phrase_bars
    scale = sorted(scale_pitch_classes(d.key_root, d.mode), key=lambda pc: (pc - d.key_root) % 12)
    function_roots = {scale[0], scale[3], scale[4]}  # 1, 4, 5 of the mode
    phrases = len(FORMS[0])
    notes = composer.notes_between(0, int(composer.grid.bar_start(phrases * bars)))
    bass = notes[notes[:, 5] == ROLE_CHANNELS["bass"]]
    inverted = 0
    for bar in range(phrases * bars):
        start = int(round(composer.grid.bar_start(bar)))
        downbeat = bass[bass[:, 0] == start]
        assert len(downbeat) == 1
        root = composer.chord(bar)[0]
        if bar % (bars // 2) == bars // 2 - 1:
            assert downbeat[0, 2] % 12 == root  # a cadence keeps its root
        else:
            assert downbeat[0, 2] % 12 in function_roots
            # The chord above is still the chord: the bass is one of its tones or a
            # function root under it (ii over 4, iii or vi over 1, vii over 5).
            inverted += downbeat[0, 2] % 12 != root
    assert inverted >= bars  # the harmony still moves above the bass


def test_saturated_images_are_richer() -> None:
    _, plain = _notes({"saturation": 0.1, "colourfulness": 0.1})
    _, rich = _notes({"saturation": 0.9, "colourfulness": 0.9})
    assert len(np.unique(rich[:, 4])) >= len(np.unique(plain[:, 4])) + 2
    assert len(np.unique(rich[:, 5])) > len(np.unique(plain[:, 5]))


def test_transition_bridges_on_the_old_bar_line_into_the_new_key() -> None:
    old = Composer(decide({"brightness": 0.2}, CONFIG), CONFIG, 1, 0, RATE)
    new_plan = decide({"brightness": 0.9, "dominant_hue": 0.1}, CONFIG)
    start = int(old.grid.bar_start(3) + 0.3 * old.grid.bar_samples)
    new = Composer(new_plan, CONFIG, 1, start, RATE, old.context)
    assert new.bridge is not None and new.bridge.start == start
    # The new grid begins on one of the old bar lines: the pulse carries over.
    assert new.grid.anchor in (round(old.grid.bar_start(4)), round(old.grid.bar_start(5)))
    notes = new.notes_between(start, start + 10 * RATE)
    assert notes[0, 0] == start  # something sounds at once
    first_bar = notes[notes[:, 0] == new.grid.anchor]
    assert new_plan.key_root in {int(p) % 12 for p in first_bar[:, 2]}
    assert not np.any(notes[:, 0] < start)


def test_restart_with_the_same_plan_continues_the_same_bars() -> None:
    plan = decide({"edge_density": 0.7}, CONFIG)
    first = Composer(plan, CONFIG, 5, 0, RATE)
    restart = int(first.grid.bar_start(2) + 0.4 * first.grid.bar_samples)
    again = Composer(plan, CONFIG, 5, restart, RATE, first.context)
    assert again.bridge is None and again.grid == first.grid
    later = int(first.grid.bar_start(3))
    end = later + 5 * RATE
    assert np.array_equal(again.notes_between(later, end), first.notes_between(later, end))
    # Held notes (the pad at least) are re-struck at the restart point.
    at_restart = again.notes_between(restart, restart + 1)
    assert ROLE_CHANNELS["pad"] in set(at_restart[:, 5].tolist())


def _on_bar_line(sample: int, grid: Grid) -> bool:
    """True when ``sample`` is one of ``grid``'s bar lines, to the sample it is rounded to."""
    k = round((sample - grid.anchor) / grid.bar_samples)
    return abs(sample - grid.bar_start(k)) <= 1.0


def test_a_new_plan_while_the_last_is_still_queued_lands_on_the_bars_heard() -> None:
    """Tempo moved twice in a few seconds: the second piece's first downbeat falls on a bar
    line of the grid heard (the first piece's bridge keeps the old pulse), not on the
    queued piece's grid of another tempo, extrapolated back from a downbeat not yet heard."""
    first = decide({"brightness": 0.2}, CONFIG)
    old = Composer(first, CONFIG, 1, 0, RATE)
    faster = replace(decide({"brightness": 0.9, "dominant_hue": 0.1}, CONFIG), tempo_bpm=126.5)
    slower = replace(faster, tempo_bpm=97.0)
    # one re-plan, as before: its first downbeat on the old grid's next bar line half a bar on
    start = int(old.grid.bar_start(3) + 0.3 * old.grid.bar_samples)
    queued = Composer(faster, CONFIG, 1, start, RATE, old.context)
    assert queued.grid.anchor == round(Composer._next_bar_line(old.grid, start, RATE))
    # a second re-plan shortly before that downbeat is heard: still the old pulse
    again = queued.grid.anchor - int(0.3 * queued.grid.bar_samples)
    assert start < again
    second = Composer(slower, CONFIG, 1, again, RATE, queued.context)
    assert second.grid.anchor > again and _on_bar_line(second.grid.anchor, old.grid)
    assert not _on_bar_line(second.grid.anchor, queued.grid)  # the unheard grid is not it
    assert queued.context.before == old.grid and queued.context.grid_at(again) == old.grid
    assert second.bridge is not None and second.bridge.start == again
    for split in second.bridge.changes:  # the pivot changes on a beat heard
        beats = (split - old.grid.anchor) / old.grid.quarter_samples
        assert abs(beats - round(beats)) * old.grid.quarter_samples <= 1.0
    # ...and a third, the artwork's tempo back, before the second's downbeat: the same
    third_at = again + (second.grid.anchor - again) // 2
    third = Composer(first, CONFIG, 1, third_at, RATE, second.context)
    assert _on_bar_line(third.grid.anchor, old.grid) and third.context.before == old.grid
    # a re-plan after the queued piece's downbeat was heard follows that piece's grid
    later = int(queued.grid.bar_start(2) + 0.2 * queued.grid.bar_samples)
    after = Composer(slower, CONFIG, 1, later, RATE, queued.context)
    assert after.grid.anchor == round(Composer._next_bar_line(queued.grid, later, RATE))
    assert after.context.before == queued.grid
    # the same plan restarted while queued keeps its grid, bridge and the pulse before it
    resync = Composer(slower, CONFIG, 1, again + RATE // 10, RATE, second.context)
    assert resync.grid == second.grid and resync.context == second.context
