"""Long listening and composed transitions (issue 16).

Five minutes on one work develop rather than cycle (the repetition measure of
``benchmarks/long_listening.py``, which a loop fails), while the plan stays
recognisable: same key, mode, palette and tempo, the same notes from the same
seed. A change of artwork between related keys modulates through a chord of
both keys, then the new key's cadence chord, from the very first sample.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from engine.generators.procedural.composer import FORMS, Composer
from engine.generators.procedural.config import ProceduralConfig
from engine.generators.procedural.mapping import (
    PERCUSSION_PROGRAM,
    ROLE_CHANNELS,
    MusicalDecisions,
    decide,
)
from engine.generators.procedural.theory import (
    CADENCE_DEGREE,
    chord_pitch_classes,
    pivot_degree,
    scale_pitch_classes,
)

ROOT = Path(__file__).resolve().parents[1]
RATE = 48000
CONFIG = ProceduralConfig()
FIVE_MINUTES = 300.0


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    """benchmarks/long_listening.py, the measure the README's figures come from."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import long_listening
    finally:
        sys.path.pop(0)
    yield long_listening


def _plan(**features: float) -> MusicalDecisions:
    # A calm, colourful work: every role plays, nothing leaves the key.
    base = {"brightness": 0.65, "warmth": 0.6, "saturation": 0.8, "colourfulness": 0.8,
            "contrast": 0.75, "edge_density": 0.5, "texture_entropy": 0.2, "symmetry": 0.8,
            "abstraction": 0.1}
    return decide(base | features, CONFIG, "work")


@pytest.fixture(scope="module")
def five_minutes() -> tuple[MusicalDecisions, np.ndarray]:
    plan = _plan()
    composer = Composer(plan, CONFIG, 3, 0, RATE)
    return plan, composer.notes_between(0, int(FIVE_MINUTES * RATE))


def test_five_minutes_develop_and_a_loop_does_not(
    bench: ModuleType, five_minutes: tuple[MusicalDecisions, np.ndarray]
) -> None:
    plan, notes = five_minutes
    work = bench.measure_plan(plan, notes, RATE, FIVE_MINUTES)
    assert work.windows >= 8
    assert work.literal_repeats <= bench.REPEAT_TARGET
    assert work.mean_similarity <= bench.SIMILARITY_TARGET
    assert work.density_range >= bench.DENSITY_RANGE_TARGET
    assert work.develops
    # The same measure on the first 4 bars tiled: a loop repeats itself, and fails.
    bar = 60.0 / plan.tempo_bpm * RATE * plan.quarters_per_bar
    loop = bench.loop_notes(notes, bar, 4, int(FIVE_MINUTES * RATE))
    looped = bench.measure_plan(plan, loop, RATE, FIVE_MINUTES)
    assert looped.literal_repeats > 0.9 and looped.mean_similarity > 0.95
    assert not looped.develops


def test_the_measure_refuses_too_short_a_stretch(bench: ModuleType) -> None:
    plan = _plan()
    notes = Composer(plan, CONFIG, 3, 0, RATE).notes_between(0, 20 * RATE)
    with pytest.raises(ValueError, match="need at least 24"):
        bench.measure_plan(plan, notes, RATE, 20.0)


def test_key_mode_palette_and_tempo_hold_over_five_minutes(
    five_minutes: tuple[MusicalDecisions, np.ndarray],
) -> None:
    plan, notes = five_minutes
    composer = Composer(plan, CONFIG, 3, 0, RATE)
    assert plan.experimental < CONFIG.extension_threshold  # a plan that stays in its key
    pitched = notes[notes[:, 5] != ROLE_CHANNELS["percussion"]]
    scale = scale_pitch_classes(plan.key_root, plan.mode)
    assert {int(p) % 12 for p in pitched[:, 2]} <= scale
    # Only the plan's instruments, each on its role's channel, from start to end.
    programs = {(int(c), int(p)) for p, c in zip(notes[:, 4], notes[:, 5], strict=True)}
    expected = {(ROLE_CHANNELS[r], p) for r, p in plan.programs}
    if "percussion" in plan.roles:
        expected.add((ROLE_CHANNELS["percussion"], PERCUSSION_PROGRAM))
    assert programs <= expected
    last_minute = notes[notes[:, 0] >= 240 * RATE]
    assert {int(c) for c in last_minute[:, 5]} >= {ROLE_CHANNELS[r] for r in ("pad", "bass")}
    # The tempo: every onset sits on the plan's sixteenth-note grid (no tempo drift).
    sixteenth = composer.grid.quarter_samples / 4
    phase = notes[:, 0] / sixteenth
    assert np.all(np.abs(phase - np.round(phase)) < 1e-3)
    # The key: every home phrase, to the last, closes on the tonic chord.
    phrases = int(FIVE_MINUTES * RATE // (composer.grid.bar_samples * CONFIG.phrase_bars))
    homes = [p for p in range(phrases)
             if composer.section((p + 1) * CONFIG.phrase_bars - 1).harmony == "home"]
    assert len(homes) >= 3
    for phrase in homes:
        assert composer.degree((phrase + 1) * CONFIG.phrase_bars - 1) == 0


def test_sections_change_density_register_and_harmony() -> None:
    composer = Composer(_plan(), CONFIG, 3, 0, RATE)
    bars = CONFIG.phrase_bars
    names = [composer.section(p * bars).name for p in range(len(FORMS[0]))]
    assert names[0] == "A" and {"B", "development", "calm"} <= set(names)
    densities = {composer.density(p * bars) for p in range(len(FORMS[0]))}
    assert max(densities) - min(densities) > 0.5
    # A development phrase walks the circle of fifths; the form comes round with new themes.
    development = names.index("development")
    degrees = [composer.degree(development * bars + j) for j in range(bars)]
    assert all((b - a) % 7 == 3 for a, b in zip(degrees, degrees[1:], strict=False))
    form_bars = len(FORMS[0]) * bars
    assert composer._motif("A", 0) != composer._motif("A", 1)
    assert composer.section(form_bars).name == "A"


def test_the_seed_decides_the_music_and_repeats_it(
    five_minutes: tuple[MusicalDecisions, np.ndarray],
) -> None:
    plan, notes = five_minutes
    again = Composer(plan, CONFIG, 3, 0, RATE).notes_between(0, int(FIVE_MINUTES * RATE))
    assert np.array_equal(again, notes)
    other = Composer(plan, CONFIG, 4, 0, RATE).notes_between(0, int(FIVE_MINUTES * RATE))
    assert not np.array_equal(other[:100], notes[:100])


def _transition(old_plan: MusicalDecisions, new_plan: MusicalDecisions,
                phase: float = 0.3) -> tuple[Composer, Composer, int]:
    old = Composer(old_plan, CONFIG, 1, 0, RATE)
    start = int(old.grid.bar_start(3) + phase * old.grid.bar_samples)
    return old, Composer(new_plan, CONFIG, 1, start, RATE, old.context), start


def _with_key(plan: MusicalDecisions, root: int, mode: str) -> MusicalDecisions:
    from dataclasses import replace

    return replace(plan, key_root=root, mode=mode)


def test_a_transition_between_related_keys_starts_on_the_pivot_then_the_dominant() -> None:
    c_major = _with_key(_plan(), 0, "ionian")
    g_major = _with_key(_plan(brightness=0.8, warmth=0.2), 7, "ionian")
    old, new, start = _transition(c_major, g_major)
    bridge = new.bridge
    assert bridge is not None and bridge.pivot and bridge.start == start
    # ii of G (A minor) is a chord of C major too; then D7, the dominant of G.
    assert bridge.chords[0] == chord_pitch_classes(7, "ionian", 1, 3) == (9, 0, 4)
    assert bridge.chords[1] == chord_pitch_classes(7, "ionian", CADENCE_DEGREE["ionian"], 4)
    notes = new.notes_between(start, start + 10 * RATE)
    pad, bass = ROLE_CHANNELS["pad"], ROLE_CHANNELS["bass"]
    at_start = notes[notes[:, 0] == start]
    assert {int(p) % 12 for p in at_start[at_start[:, 5] == pad, 2]} == {9, 0, 4}
    assert {int(p) % 12 for p in at_start[at_start[:, 5] == bass, 2]} == {9}
    # In the new palette, from the first sample: no later than before the bridge existed.
    assert {int(p) for p in at_start[:, 4]} <= {p for _, p in g_major.programs}
    split = bridge.changes[0]
    at_split = notes[(notes[:, 0] == split) & (notes[:, 5] == bass)]
    assert {int(p) % 12 for p in at_split[:, 2]} == {2}  # D, the dominant's root
    assert start < split < new.grid.anchor
    # The old grid's bar line carries the new tonic: the pulse does not stumble.
    assert new.grid.anchor in (round(old.grid.bar_start(4)), round(old.grid.bar_start(5)))
    first_bar = notes[(notes[:, 0] == new.grid.anchor) & (notes[:, 5] == bass)]
    assert {int(p) % 12 for p in first_bar[:, 2]} == {7}


def test_distant_keys_bridge_on_the_dominant_alone() -> None:
    c_major = _with_key(_plan(), 0, "ionian")
    f_sharp = _with_key(_plan(), 6, "ionian")
    assert pivot_degree(0, "ionian", 6, "ionian") is None
    _, new, start = _transition(c_major, f_sharp)
    assert new.bridge is not None and not new.bridge.pivot
    assert new.bridge.chords == (chord_pitch_classes(6, "ionian", 4, 4),)
    notes = new.notes_between(start, start + RATE)
    assert notes[0, 0] == start


def test_bench_counts_pivots_and_keeps_the_latency(bench: ModuleType) -> None:
    result = bench.measure_transitions(CONFIG)
    assert result["fraction_bridged"] == 1.0
    assert result["fraction_pivot"] > 0.3
    assert result["first_note_delay_s_max"] == 0.0
