"""From visual features to musical decisions: the interpretable heart of the procedural generator.

:func:`decide` reads the descriptor features of an :class:`ArtworkView` by
name (each in [0, 1], 0.5 where missing) and returns a frozen
:class:`MusicalDecisions`. It is a pure function of the features and the
:class:`ProceduralConfig`: the same painting always gets the same music
plan; the seed only varies the notes the composer writes inside that plan.
Every weight below that a technician may want to move is a config field.

=====================  ===========================  ==========================================
feature(s)             decision                     why
=====================  ===========================  ==========================================
brightness (+warmth)   mode: phrygian .. lydian     light images read as major/lydian, dark as
                       (``mode_edges``)             minor/phrygian (Art2Mus listener reports)
brightness (+warmth)   register (melody centre,     darker images -> lower register
                       ``register_low..high``)
brightness, contrast,  tempo (``tempo_min_bpm ..    darker, calmer images -> slower motion
edge_density           tempo_max_bpm``), density
warmth (+brightness,   timbre brightness: warm vs   warm palettes were heard as *brighter*
saturation)            cool GM palette, high shelf  timbres (bells, flute, violin vs horn,
                       and low-pass in the effects  clarinet, warm pad)
abstraction (0.7),     experimental amount: 7ths/   abstract images -> more experimental
texture_entropy        9ths; outside colour tones   music (listener reports). abstraction
(0.15),                on a share of bars growing   (all-over structure vs a subject on a
1 - symmetry (0.15)    with it; whole-tone and      ground; hard edges vs soft modelling)
                       chromatic fragments,         leads: texture entropy and edge density
                       tuplets, 5/4 meter           alone read a busy old master as
                                                    abstract (rho ~0.3 with ratings)
symmetry, hue_spread   meter 4/4 | 3/4 | 6/8        balanced compositions -> even metre;
                                                    flowing colour -> lilting 6/8
saturation,            richness: pad voicing size,  saturated / colourful images -> richer
colourfulness          texture and countermelody    orchestration (more voices, instruments)
                       voices
contrast               soft percussion above        strong light/dark contrast -> pulse
                       ``percussion_threshold``
dominant_hue           key: hue wheel laid on the   after Scriabin's colour keyboard (red=C,
                       circle of fifths             orange=G, yellow=D, ...): neighbouring
                                                    hues -> related keys, easy transitions
edge_density,          reverb amount                soft, open images -> a larger, wetter room
contrast, hue_spread   (``reverb_min..max``)
=====================  ===========================  ==========================================

An empty wall gets :func:`ambience_decisions`: a sparse lydian pad with rare
bells, quiet (``ambience_lufs``), so the room never falls silent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.generators.base import BarSync
from engine.generators.procedural.config import MODES_DARK_TO_BRIGHT, ProceduralConfig
from engine.generators.procedural.theory import NOTE_NAMES, note_name
from ground.protocol import FEATURE_NAMES

#: Value assumed for a feature the view does not carry.
FEATURE_DEFAULT = 0.5
#: Decimals a feature is read to. The plan, and the composer's seed salt, are built from the
#: features; OpenCV's threaded reductions give the same picture features that differ in the
#: tenth decimal from one process to the next, which without rounding gave the same painting
#: other motifs after a restart.
FEATURE_DIGITS = 4

#: Fixed MIDI channel per role; GM reserves channel 10 (index 9) for percussion.
ROLE_CHANNELS: dict[str, int] = {
    "pad": 0,
    "melody": 1,
    "bass": 2,
    "texture": 3,
    "counter": 4,
    "percussion": 9,
}
#: The program number notes report for the GM percussion kit.
PERCUSSION_PROGRAM = 128


@dataclass(frozen=True)
class MusicalDecisions:
    """The music plan for one view: what the composer and renderer follow until the next change."""

    state: str
    artwork_id: str | None
    key_root: int
    mode: str
    tempo_bpm: float
    meter: tuple[int, int]
    register: int
    programs: tuple[tuple[str, int], ...]
    density: float
    brightness: float
    experimental: float
    reverb: float
    richness: float
    target_lufs: float
    features: tuple[tuple[str, float], ...] = ()
    sync: BarSync | None = None  # an outside bar grid to start bars on (tempo sync)

    @property
    def roles(self) -> tuple[str, ...]:
        """Active roles, in channel order."""
        return tuple(role for role, _ in self.programs)

    @property
    def voices(self) -> int:
        """Number of simultaneous instrument voices (roles)."""
        return len(self.programs)

    def program(self, role: str) -> int | None:
        """The GM program of ``role``, or None when that role is silent."""
        return dict(self.programs).get(role)

    @property
    def quarters_per_bar(self) -> float:
        """Bar length in quarter notes (6/8 -> 3.0)."""
        return self.meter[0] * 4.0 / self.meter[1]

    @property
    def ambience(self) -> bool:
        """True for the empty-wall ambience."""
        return self.state == "empty"


def _clip(x: float) -> float:
    return min(max(float(x), 0.0), 1.0)


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def read_features(features: dict[str, float]) -> dict[str, float]:
    """The features by name (:data:`FEATURE_NAMES`), clipped to [0, 1] and rounded to
    :data:`FEATURE_DIGITS` decimals, :data:`FEATURE_DEFAULT` where missing or NaN (a view from
    a capture older than a feature gets 0.5)."""
    out: dict[str, float] = {}
    for name in FEATURE_NAMES:
        value = features.get(name, FEATURE_DEFAULT)
        value = FEATURE_DEFAULT if value != value else value  # NaN from a degenerate frame
        out[name] = round(_clip(value), FEATURE_DIGITS)
    return out


def key_from_hue(hue: float) -> int:
    """Tonic pitch class for a hue in [0, 1): the hue wheel walked around the circle of fifths."""
    step = int(round(hue * 12.0)) % 12
    return (step * 7) % 12


def decide(
    features: dict[str, float], config: ProceduralConfig, artwork_id: str | None = None
) -> MusicalDecisions:
    """Musical decisions for an artwork with these descriptor ``features`` (pure, deterministic)."""
    f = read_features(features)
    light = _clip(0.75 * f["brightness"] + 0.25 * f["warmth"])
    mode = MODES_DARK_TO_BRIGHT[sum(light >= edge for edge in config.mode_edges)]
    register = round(
        _lerp(
            config.register_low,
            config.register_high,
            _clip(0.8 * f["brightness"] + 0.2 * f["warmth"]),
        )
    )
    energy = _clip(0.55 * f["brightness"] + 0.25 * f["contrast"] + 0.2 * f["edge_density"])
    tempo = round(_lerp(config.tempo_min_bpm, config.tempo_max_bpm, energy), 1)
    density = _clip(0.1 + 0.4 * f["edge_density"] + 0.25 * f["contrast"] + 0.25 * f["brightness"])
    timbre = _clip(0.6 * f["warmth"] + 0.25 * f["brightness"] + 0.15 * f["saturation"])
    # Abstraction leads (what is depicted); texture and asymmetry add the
    # painterly side of it (a gestural surface, an off-balance layout).
    experimental = _clip(
        0.7 * f["abstraction"] + 0.15 * f["texture_entropy"] + 0.15 * (1.0 - f["symmetry"])
    )
    richness = _clip(0.5 * f["saturation"] + 0.5 * f["colourfulness"])
    reverb = _lerp(
        config.reverb_min,
        config.reverb_max,
        _clip(
            0.45 * (1.0 - f["edge_density"]) + 0.3 * (1.0 - f["contrast"]) + 0.25 * f["hue_spread"]
        ),
    )

    if experimental >= config.irregular_meter_threshold:
        meter = (5, 4)
    elif f["symmetry"] >= config.symmetry_common_time:
        meter = (4, 4)
    elif f["hue_spread"] >= 0.5:
        meter = (6, 8)
    else:
        meter = (3, 4)

    roles = ["pad", "melody", "bass"]
    if richness > config.texture_threshold:
        roles.append("texture")
    if richness > config.counter_threshold:
        roles.append("counter")
    palette = config.warm_palette if timbre >= config.warm_threshold else config.cool_palette
    programs: list[tuple[str, int]] = []
    for i, role in enumerate(roles):
        choices = palette[role]
        # A per-artwork pick inside the palette, so two warm paintings of
        # different hue do not sound like the same band.
        pick = (f["dominant_hue"] * 7.0 + f["saturation"] * 3.0 + f["hue_spread"] + 0.618 * i) % 1.0
        programs.append((role, choices[int(pick * len(choices)) % len(choices)]))
    if f["contrast"] > config.percussion_threshold:
        programs.append(("percussion", PERCUSSION_PROGRAM))
    programs.sort(key=lambda rp: ROLE_CHANNELS[rp[0]])

    return MusicalDecisions(
        state="artwork",
        artwork_id=artwork_id,
        key_root=key_from_hue(f["dominant_hue"]),
        mode=mode,
        tempo_bpm=float(tempo),
        meter=meter,
        register=int(register),
        programs=tuple(programs),
        density=round(density, 4),
        brightness=round(timbre, 4),
        experimental=round(experimental, 4),
        reverb=round(reverb, 4),
        richness=round(richness, 4),
        target_lufs=config.target_lufs,
        features=tuple(sorted(f.items())),
    )


def ambience_decisions(config: ProceduralConfig) -> MusicalDecisions:
    """The empty-room ambience: slow, sparse, quiet lydian pad with rare celesta notes."""
    return MusicalDecisions(
        state="empty",
        artwork_id=None,
        key_root=2,
        mode="lydian",
        tempo_bpm=44.0,
        meter=(4, 4),
        register=72,
        programs=(
            ("pad", config.ambience_programs.get("pad", 89)),
            ("texture", config.ambience_programs.get("texture", 8)),
        ),
        density=0.05,
        brightness=0.45,
        experimental=0.1,
        reverb=config.reverb_max,
        richness=0.2,
        target_lufs=config.ambience_lufs,
    )


def gm_program_name(program: int) -> str:
    """General MIDI name of ``program`` (0-127), 'Percussion' for 128."""
    if program == PERCUSSION_PROGRAM:
        return "Percussion"
    return _GM_NAMES[program]


def describe_decisions(d: MusicalDecisions) -> dict[str, Any]:
    """JSON-ready summary of ``d`` for the timeline and the technician's dashboard."""
    return {
        "state": d.state,
        "artwork_id": d.artwork_id,
        "key": NOTE_NAMES[d.key_root],
        "mode": d.mode,
        "tempo_bpm": d.tempo_bpm,
        "meter": f"{d.meter[0]}/{d.meter[1]}",
        "register": {"melody_centre": note_name(d.register), "midi": d.register},
        "instruments": {
            role: {
                "program": program,
                "name": gm_program_name(program),
                "channel": ROLE_CHANNELS[role],
            }
            for role, program in d.programs
        },
        "voices": d.voices,
        "density": d.density,
        "brightness": d.brightness,
        "experimental": d.experimental,
        "richness": d.richness,
        "reverb": d.reverb,
        "target_lufs": d.target_lufs,
        "features": dict(d.features),
    }


# General MIDI level 1 program names (0-based), from the MIDI 1.0 GM spec.
# fmt: off
_GM_NAMES: tuple[str, ...] = (
    "Acoustic Grand Piano", "Bright Acoustic Piano", "Electric Grand Piano", "Honky-tonk Piano",
    "Electric Piano 1", "Electric Piano 2", "Harpsichord", "Clavinet", "Celesta",
    "Glockenspiel", "Music Box", "Vibraphone", "Marimba", "Xylophone", "Tubular Bells",
    "Dulcimer", "Drawbar Organ", "Percussive Organ", "Rock Organ", "Church Organ", "Reed Organ",
    "Accordion", "Harmonica", "Tango Accordion", "Acoustic Guitar (nylon)",
    "Acoustic Guitar (steel)", "Electric Guitar (jazz)", "Electric Guitar (clean)",
    "Electric Guitar (muted)", "Overdriven Guitar", "Distortion Guitar", "Guitar Harmonics",
    "Acoustic Bass", "Electric Bass (finger)", "Electric Bass (pick)", "Fretless Bass",
    "Slap Bass 1", "Slap Bass 2", "Synth Bass 1", "Synth Bass 2", "Violin", "Viola", "Cello",
    "Contrabass", "Tremolo Strings", "Pizzicato Strings", "Orchestral Harp", "Timpani",
    "String Ensemble 1", "String Ensemble 2", "Synth Strings 1", "Synth Strings 2",
    "Choir Aahs", "Voice Oohs", "Synth Voice", "Orchestra Hit", "Trumpet", "Trombone", "Tuba",
    "Muted Trumpet", "French Horn", "Brass Section", "Synth Brass 1", "Synth Brass 2",
    "Soprano Sax", "Alto Sax", "Tenor Sax", "Baritone Sax", "Oboe", "English Horn", "Bassoon",
    "Clarinet", "Piccolo", "Flute", "Recorder", "Pan Flute", "Blown Bottle", "Shakuhachi",
    "Whistle", "Ocarina", "Lead 1 (square)", "Lead 2 (sawtooth)", "Lead 3 (calliope)",
    "Lead 4 (chiff)", "Lead 5 (charang)", "Lead 6 (voice)", "Lead 7 (fifths)",
    "Lead 8 (bass + lead)", "Pad 1 (new age)", "Pad 2 (warm)", "Pad 3 (polysynth)",
    "Pad 4 (choir)", "Pad 5 (bowed)", "Pad 6 (metallic)", "Pad 7 (halo)", "Pad 8 (sweep)",
    "FX 1 (rain)", "FX 2 (soundtrack)", "FX 3 (crystal)", "FX 4 (atmosphere)",
    "FX 5 (brightness)", "FX 6 (goblins)", "FX 7 (echoes)", "FX 8 (sci-fi)", "Sitar", "Banjo",
    "Shamisen", "Koto", "Kalimba", "Bagpipe", "Fiddle", "Shanai", "Tinkle Bell", "Agogo",
    "Steel Drums", "Woodblock", "Taiko Drum", "Melodic Tom", "Synth Drum", "Reverse Cymbal",
    "Guitar Fret Noise", "Breath Noise", "Seashore", "Bird Tweet", "Telephone Ring",
    "Helicopter", "Applause", "Gunshot",
)
# fmt: on
assert len(_GM_NAMES) == 128
