"""Settings of the procedural generator: soundfont and the descriptor-to-music mapping.

Embedded in the installation TOML as ``[engine.procedural]``. Every number the
mapping in :mod:`engine.generators.procedural.mapping` uses to turn visual features into
musical decisions lives here, so a technician can retune a room (slower, lower,
other instruments) without touching code. Defaults are the tuning we listen to.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ground.params import MODES

#: Roles the composer writes for, each on its own MIDI channel (see composer.ROLE_CHANNELS).
PITCHED_ROLES: tuple[str, ...] = ("pad", "melody", "bass", "texture", "counter")
#: Modes from darkest to brightest, the order ``mode_edges`` splits the light axis into
#: (the live ``mode`` parameter's list: one definition, in ground.params).
MODES_DARK_TO_BRIGHT: tuple[str, ...] = MODES

# GM programs (0-based). Ordered and split by the spectral centroid each one
# measures in the default TimGM6mb soundfont (bracketed, Hz, one note at
# velocity 80): cool palettes are round and dark, warm palettes bright and
# airy, because Art2Mus listeners heard warm colours as brighter timbres.
# fmt: off
_COOL_PALETTE: dict[str, list[int]] = {
    # Pad 5 bowed [423], Pad 2 warm [507], Voice Oohs [531], Pad 1 new age [681]
    "pad": [92, 89, 53, 88],
    # Vibraphone [711], Ocarina [658], French Horn [1140], English Horn [1208]
    "melody": [11, 79, 60, 69],
    # Acoustic Bass [240], Fretless Bass [325], Contrabass [388]
    "bass": [32, 35, 43],
    # Marimba [688], Vibraphone [711], Kalimba [622], Nylon Guitar [1000]
    "texture": [12, 11, 108, 24],
    # Bassoon [735], French Horn [799], Cello [885], Clarinet [1100]
    "counter": [70, 60, 42, 71],
}
_WARM_PALETTE: dict[str, list[int]] = {
    # Choir Aahs [1745], String Ensemble 1 [1560], 2 [1514], Pad 4 choir [970]
    "pad": [52, 48, 49, 91],
    # Flute [1513], Oboe [1676], Violin [2048], Viola [1924]
    "melody": [73, 68, 40, 41],
    # Electric Bass finger [486], Cello [441], Contrabass [388]
    "bass": [33, 42, 43],
    # Glockenspiel [2643], Celesta [1206], Orchestral Harp [1153], Music Box [1148]
    "texture": [9, 8, 46, 10],
    # Violin [1483], Oboe [1534], Viola [1267], Trumpet [2046]
    "counter": [40, 68, 41, 56],
}
# fmt: on
_AMBIENCE_PROGRAMS: dict[str, int] = {"pad": 89, "texture": 8}


class ProceduralConfig(BaseModel):
    """The embedded default generator: soundfont, mapping ranges, palettes, loudness."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    # The schema default stays the shipped font so a bare config (and every test)
    # sounds the same on every machine; the shipped configs ask for "auto".
    soundfont: str | None = Field(
        default=None,
        description='GM SoundFont (.sf2/.sf3), or "auto": the best General MIDI font '
        "installed (see render.SOUNDFONT_PREFERENCE), else the one pretty_midi ships; "
        "default: the one pretty_midi ships.",
    )

    # -- Time ---------------------------------------------------------------
    tempo_min_bpm: float = Field(
        default=52.0, ge=20.0, le=240.0, description="Tempo of the darkest, calmest image."
    )
    tempo_max_bpm: float = Field(
        default=112.0, ge=20.0, le=240.0, description="Tempo of the brightest, busiest image."
    )
    phrase_bars: int = Field(
        default=8, description="Bars per phrase (4 or 8); cadence on the last bar."
    )
    irregular_meter_threshold: float = Field(
        default=0.62,
        ge=0.0,
        le=1.0,
        description="Experimental amount above which the meter becomes 5/4.",
    )
    symmetry_common_time: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Symmetry at or above which the meter is 4/4 (else 3/4 or 6/8).",
    )

    # -- Pitch --------------------------------------------------------------
    register_low: int = Field(
        default=60, ge=36, le=96, description="Melody centre (MIDI) for the darkest image."
    )
    register_high: int = Field(
        default=79, ge=36, le=96, description="Melody centre (MIDI) for the brightest image."
    )
    mode_edges: tuple[float, float, float, float, float] = Field(
        default=(0.22, 0.35, 0.47, 0.58, 0.74),
        description="Light score edges splitting phrygian|aeolian|dorian|mixolydian|ionian|lydian.",
    )
    extension_threshold: float = Field(
        default=0.3,
        ge=0.0,
        le=1.0,
        description="Experimental amount above which chords gain 7ths and 9ths.",
    )
    cluster_threshold: float = Field(
        default=0.55,
        ge=0.0,
        le=1.0,
        description="Experimental amount above which whole-tone and chromatic fragments, "
        "tuplets and pointillist texture appear; outside colour tones grow from the "
        "extension threshold to 35 % of bars here, and to every bar at 1.",
    )

    # -- Orchestration ------------------------------------------------------
    warm_threshold: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Timbre brightness at or above which the warm palette is used.",
    )
    cool_palette: dict[str, list[int]] = Field(
        default_factory=lambda: {k: list(v) for k, v in _COOL_PALETTE.items()},
        description="GM programs (0-127) per role for cool/dark images, one picked per artwork.",
    )
    warm_palette: dict[str, list[int]] = Field(
        default_factory=lambda: {k: list(v) for k, v in _WARM_PALETTE.items()},
        description="GM programs (0-127) per role for warm/bright images.",
    )
    ambience_programs: dict[str, int] = Field(
        default_factory=lambda: dict(_AMBIENCE_PROGRAMS),
        description="GM programs of the empty-wall ambience (roles pad and texture).",
    )
    texture_threshold: float = Field(
        default=0.3,
        ge=0.0,
        le=1.0,
        description="Colour richness above which the arpeggio/texture voice plays.",
    )
    counter_threshold: float = Field(
        default=0.58,
        ge=0.0,
        le=1.0,
        description="Colour richness above which a countermelody voice plays.",
    )
    percussion_threshold: float = Field(
        default=0.68,
        ge=0.0,
        le=1.01,
        description="Contrast above which soft percussion plays (1.01: never).",
    )

    # -- Sound --------------------------------------------------------------
    reverb_min: float = Field(
        default=0.25, ge=0.0, le=1.0, description="Reverb amount of a sharp, busy image."
    )
    reverb_max: float = Field(
        default=0.85, ge=0.0, le=1.0, description="Reverb amount of a soft, open image."
    )
    target_lufs: float = Field(
        default=-18.0, ge=-40.0, le=-6.0, description="Loudness the stream settles at."
    )
    ambience_lufs: float = Field(
        default=-33.0, ge=-60.0, le=-6.0, description="Loudness of the empty-wall ambience."
    )
    ceiling_db: float = Field(
        default=-1.5, ge=-12.0, le=-0.1, description="Peak ceiling of the output limiter."
    )
    max_voices: int = Field(
        default=160, ge=16, le=1024, description="Synth voices before old ones are stolen."
    )
    render_quantum: int = Field(
        default=512,
        ge=64,
        le=8192,
        description="Frames the synth and loudness follower advance per step "
        "(block-size independent).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ProceduralConfig:
        if self.tempo_min_bpm >= self.tempo_max_bpm:
            raise ValueError(
                f"tempo_min_bpm must be below tempo_max_bpm, got "
                f"{self.tempo_min_bpm} >= {self.tempo_max_bpm}"
            )
        if self.register_low > self.register_high:
            raise ValueError(
                f"register_low must be <= register_high, got "
                f"{self.register_low} > {self.register_high}"
            )
        if self.phrase_bars not in (4, 8):
            raise ValueError(f"phrase_bars must be 4 or 8, got {self.phrase_bars}")
        if list(self.mode_edges) != sorted(self.mode_edges):
            raise ValueError(f"mode_edges must be ascending, got {list(self.mode_edges)}")
        if self.reverb_min > self.reverb_max:
            raise ValueError(
                f"reverb_min must be <= reverb_max, got {self.reverb_min} > {self.reverb_max}"
            )
        for name, palette in (
            ("cool_palette", self.cool_palette),
            ("warm_palette", self.warm_palette),
        ):
            missing = [role for role in PITCHED_ROLES if not palette.get(role)]
            if missing:
                raise ValueError(f"{name} needs at least one program for roles {missing}")
            for role, programs in palette.items():
                if role not in PITCHED_ROLES:
                    raise ValueError(
                        f"{name} role must be one of {list(PITCHED_ROLES)}, got {role!r}"
                    )
                bad = [p for p in programs if not 0 <= p <= 127]
                if bad:
                    raise ValueError(f"{name}.{role} programs must be 0-127, got {bad}")
        for role, program in self.ambience_programs.items():
            if role not in ("pad", "texture") or not 0 <= program <= 127:
                raise ValueError(
                    f"ambience_programs must map pad/texture to 0-127, got {role!r}={program}"
                )
        return self
