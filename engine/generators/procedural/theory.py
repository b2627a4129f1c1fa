"""Small music-theory vocabulary shared by the mapping and the composer.

Scales are pitch-class sets relative to the tonic; chords are built by
stacking thirds inside a mode (degree ``d`` -> ``d, d+2, d+4, d+6, d+8``), as
in common-practice and modal harmony. Progression templates avoid each mode's
diminished triad and end on the tonic so every phrase closes with a cadence.
"""

from __future__ import annotations

from functools import lru_cache

NOTE_NAMES: tuple[str, ...] = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")

#: Heptatonic modes as semitone offsets from the tonic.
SCALES: dict[str, tuple[int, ...]] = {
    "lydian": (0, 2, 4, 6, 7, 9, 11),
    "ionian": (0, 2, 4, 5, 7, 9, 11),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "aeolian": (0, 2, 3, 5, 7, 8, 10),
    "phrygian": (0, 1, 3, 5, 7, 8, 10),
}

#: Eight-bar chord plans (scale degrees, 0 = tonic) per mode. Bar 4 rests on a
#: half cadence, bars 7-8 close with the mode's characteristic cadence
#: (V-I, bVII-I in mixolydian/aeolian, bII-i in phrygian).
PROGRESSIONS: dict[str, tuple[tuple[int, ...], ...]] = {
    "ionian": (
        (0, 5, 3, 4, 0, 5, 4, 0),
        (0, 3, 0, 4, 5, 3, 4, 0),
        (0, 5, 1, 4, 0, 3, 4, 0),
        (0, 2, 3, 4, 5, 1, 4, 0),
    ),
    "lydian": ((0, 1, 0, 4, 5, 1, 4, 0), (0, 1, 6, 1, 0, 5, 4, 0), (0, 5, 1, 4, 0, 1, 4, 0)),
    "mixolydian": ((0, 6, 3, 6, 0, 3, 6, 0), (0, 3, 6, 3, 5, 4, 6, 0), (0, 4, 3, 6, 0, 3, 6, 0)),
    "dorian": ((0, 3, 0, 4, 2, 3, 4, 0), (0, 6, 3, 4, 0, 6, 3, 0), (0, 2, 3, 6, 0, 1, 4, 0)),
    "aeolian": (
        (0, 5, 2, 6, 0, 5, 6, 0),
        (0, 3, 5, 6, 0, 3, 4, 0),
        (0, 6, 5, 6, 0, 3, 6, 0),
        (0, 2, 3, 4, 5, 3, 6, 0),
    ),
    "phrygian": ((0, 1, 2, 1, 0, 3, 1, 0), (0, 5, 1, 0, 0, 3, 1, 0), (0, 1, 5, 1, 0, 6, 1, 0)),
}

#: The chord a mode uses to announce its tonic (pivot chord at transitions).
CADENCE_DEGREE: dict[str, int] = {
    "lydian": 4,
    "ionian": 4,
    "mixolydian": 6,
    "dorian": 4,
    "aeolian": 6,
    "phrygian": 1,
}


#: The degree whose triad is diminished in each mode (kept out of the chord plans).
DIMINISHED_DEGREE: dict[str, int] = {
    "ionian": 6,
    "lydian": 3,
    "mixolydian": 2,
    "dorian": 5,
    "aeolian": 1,
    "phrygian": 4,
}

#: Eight-bar plans for contrasting sections: they start away from the tonic
#: and end on the mode's cadence chord (a half cadence that leads home), so a
#: B section or a development sounds elsewhere while staying in the key.
AWAY_PROGRESSIONS: dict[str, tuple[tuple[int, ...], ...]] = {
    "ionian": ((5, 3, 1, 4, 5, 2, 3, 4), (3, 0, 5, 1, 2, 5, 1, 4), (1, 4, 2, 5, 3, 0, 1, 4)),
    "lydian": ((5, 1, 6, 2, 5, 1, 0, 4), (1, 2, 5, 6, 1, 5, 2, 4), (6, 5, 1, 2, 5, 6, 1, 4)),
    "mixolydian": ((3, 4, 5, 1, 3, 5, 4, 6), (5, 3, 1, 4, 5, 1, 3, 6), (1, 4, 3, 5, 1, 3, 4, 6)),
    "dorian": ((3, 6, 2, 3, 1, 6, 3, 4), (2, 6, 3, 1, 2, 3, 6, 4), (6, 2, 3, 1, 6, 2, 1, 4)),
    "aeolian": ((5, 3, 2, 6, 5, 3, 4, 6), (3, 6, 2, 5, 3, 4, 5, 6), (2, 5, 3, 4, 5, 2, 3, 6)),
    "phrygian": ((5, 2, 6, 3, 5, 6, 3, 1), (3, 6, 2, 5, 3, 2, 6, 1), (2, 5, 3, 6, 2, 3, 5, 1)),
}

#: Pre-dominant degrees (ii, IV, vi, iii) in the order a pivot chord is looked for.
PIVOT_DEGREES: tuple[int, ...] = (1, 3, 5, 2)


def circle_progression(mode: str, bars: int) -> tuple[int, ...]:
    """A diatonic circle of fifths (each root a fifth below the last) ending on the cadence chord.

    The sequence of development sections in common-practice music (e.g.
    vi-ii-V-I chains); the mode's diminished triad passes as a sequence link.
    """
    degrees = [CADENCE_DEGREE[mode]]
    while len(degrees) < bars:
        degrees.append((degrees[-1] - 3) % 7)  # the chord before, a fifth above
    return tuple(reversed(degrees))


def pivot_degree(old_root: int, old_mode: str, new_root: int, new_mode: str) -> int | None:
    """A pre-dominant degree of the new key whose triad lies in the old key too, or None.

    A chord both keys share is heard first as belonging to the old key, then
    reinterpreted in the new one: the classic pivot-chord modulation.
    """
    old_scale = scale_pitch_classes(old_root, old_mode)
    for degree in PIVOT_DEGREES:
        if degree in (DIMINISHED_DEGREE[new_mode], CADENCE_DEGREE[new_mode]):
            continue
        if set(chord_pitch_classes(new_root, new_mode, degree, 3)) <= old_scale:
            return degree
    return None


def note_name(pitch: int) -> str:
    """Scientific pitch name of a MIDI note (60 -> 'C4')."""
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


@lru_cache(maxsize=256)
def chord_pitch_classes(root_pc: int, mode: str, degree: int, size: int) -> tuple[int, ...]:
    """Pitch classes of the chord on ``degree``: root, 3rd, 5th, then 7th and 9th by ``size``."""
    scale = SCALES[mode]
    return tuple((root_pc + scale[(degree + 2 * i) % 7]) % 12 for i in range(size))


def scale_pitch_classes(root_pc: int, mode: str) -> frozenset[int]:
    """The seven pitch classes of ``mode`` on ``root_pc``."""
    return frozenset((root_pc + s) % 12 for s in SCALES[mode])


def nearest_pitch(pitch_class: int, target: float) -> int:
    """The MIDI pitch of ``pitch_class`` closest to ``target`` (ties go down)."""
    base = int(round(target)) - 6
    return base + (pitch_class - base) % 12


def scale_pitch(root_pc: int, mode: str, index: int, octave_ref: int) -> int:
    """Pitch of scale step ``index`` (0 = the tonic at or below ``octave_ref``)."""
    scale = SCALES[mode]
    tonic = octave_ref - ((octave_ref - root_pc) % 12)
    octave, step = divmod(index, 7)
    return tonic + 12 * octave + scale[step]


def scale_index_near(root_pc: int, mode: str, pitch: float, octave_ref: int) -> int:
    """The scale step index whose pitch is closest to ``pitch`` (inverse of :func:`scale_pitch`)."""
    guess = int((pitch - octave_ref) / 12 * 7)
    candidates = range(guess - 9, guess + 10)
    return min(
        candidates, key=lambda i: (abs(scale_pitch(root_pc, mode, i, octave_ref) - pitch), i)
    )
