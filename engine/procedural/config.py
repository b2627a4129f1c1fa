"""Settings of the procedural generator: soundfont and the descriptor-to-music mapping.

Embedded in the installation TOML as ``[engine.procedural]``. Every number the
mapping in :mod:`engine.procedural.mapping` uses to turn visual features into
musical decisions lives here, so a technician can retune a room (slower, lower,
other instruments) without touching code. Defaults are the tuning we listen to.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Roles the composer writes for, each on its own MIDI channel (see composer.ROLE_CHANNELS).
PITCHED_ROLES: tuple[str, ...] = ("pad", "melody", "bass", "texture", "counter")
#: Modes from darkest to brightest, the order ``mode_edges`` splits the light axis into.
MODES_DARK_TO_BRIGHT: tuple[str, ...] = (
    "phrygian", "aeolian", "dorian", "mixolydian", "ionian", "lydian",
)

# GM programs (0-based). Cool palettes: round, dark, slow-attack timbres; warm
# palettes: bright, bell-like or breathy ones (Art2Mus listeners heard warm
# colours as brighter timbres).
_COOL_PALETTE: dict[str, list[int]] = {
    "pad": [89, 48, 52, 92],        # Pad 2 (warm), String Ensemble 1, Choir Aahs, Pad 5 (bowed)
    "melody": [71, 42, 69, 60],     # Clarinet, Cello, English Horn, French Horn
    "bass": [32, 35, 43],           # Acoustic Bass, Fretless Bass, Contrabass
    "texture": [46, 12, 24],        # Orchestral Harp, Marimba, Nylon Guitar
    "counter": [60, 70, 42],        # French Horn, Bassoon, Cello
}
_WARM_PALETTE: dict[str, list[int]] = {
    "pad": [49, 91, 94, 50],        # String Ensemble 2, Pad 4 (choir), Pad 7 (halo), Synth Strings 1
    "melody": [73, 11, 0, 68],      # Flute, Vibraphone, Acoustic Grand Piano, Oboe
    "bass": [33, 32, 45],           # Electric Bass (finger), Acoustic Bass, Pizzicato Strings
    "texture": [8, 9, 10, 11],      # Celesta, Glockenspiel, Music Box, Vibraphone
    "counter": [40, 56, 41],        # Violin, Trumpet, Viola
}
_AMBIENCE_PROGRAMS: dict[str, int] = {"pad": 89, "texture": 8}


class ProceduralConfig(BaseModel):
    """The embedded default generator: soundfont, mapping ranges, palettes, loudness."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    soundfont: str | None = Field(
        None, description="GM SoundFont (.sf2); default: the one pretty_midi ships."
    )

    # -- Time ---------------------------------------------------------------
    tempo_min_bpm: float = Field(52.0, ge=20.0, le=240.0, description="Tempo of the darkest, calmest image.")
    tempo_max_bpm: float = Field(112.0, ge=20.0, le=240.0, description="Tempo of the brightest, busiest image.")
    phrase_bars: int = Field(8, description="Bars per phrase (4 or 8); cadence on the last bar.")
    irregular_meter_threshold: float = Field(
        0.62, ge=0.0, le=1.0, description="Experimental amount above which the meter becomes 5/4."
    )
    symmetry_common_time: float = Field(
        0.5, ge=0.0, le=1.0, description="Symmetry at or above which the meter is 4/4 (else 3/4 or 6/8)."
    )

    # -- Pitch --------------------------------------------------------------
    register_low: int = Field(60, ge=36, le=96, description="Melody centre (MIDI) for the darkest image.")
    register_high: int = Field(79, ge=36, le=96, description="Melody centre (MIDI) for the brightest image.")
    mode_edges: tuple[float, float, float, float, float] = Field(
        (0.22, 0.35, 0.47, 0.58, 0.74),
        description="Light score edges splitting phrygian|aeolian|dorian|mixolydian|ionian|lydian.",
    )
    extension_threshold: float = Field(
        0.3, ge=0.0, le=1.0, description="Experimental amount above which chords gain 7ths and 9ths."
    )
    cluster_threshold: float = Field(
        0.55, ge=0.0, le=1.0,
        description="Experimental amount above which clusters, whole-tone and chromatic fragments appear.",
    )

    # -- Orchestration ------------------------------------------------------
    warm_threshold: float = Field(
        0.5, ge=0.0, le=1.0, description="Timbre brightness at or above which the warm palette is used."
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
        0.3, ge=0.0, le=1.0, description="Colour richness above which the arpeggio/texture voice plays."
    )
    counter_threshold: float = Field(
        0.58, ge=0.0, le=1.0, description="Colour richness above which a countermelody voice plays."
    )
    percussion_threshold: float = Field(
        0.68, ge=0.0, le=1.01, description="Contrast above which soft percussion plays (1.01: never)."
    )

    # -- Sound --------------------------------------------------------------
    reverb_min: float = Field(0.25, ge=0.0, le=1.0, description="Reverb amount of a sharp, busy image.")
    reverb_max: float = Field(0.85, ge=0.0, le=1.0, description="Reverb amount of a soft, open image.")
    target_lufs: float = Field(-18.0, ge=-40.0, le=-6.0, description="Loudness the stream settles at.")
    ambience_lufs: float = Field(-33.0, ge=-60.0, le=-6.0, description="Loudness of the empty-wall ambience.")
    ceiling_db: float = Field(-1.5, ge=-12.0, le=-0.1, description="Peak ceiling of the output limiter.")
    max_voices: int = Field(160, ge=16, le=1024, description="Synth voices before old ones are stolen.")
    render_quantum: int = Field(
        512, ge=64, le=8192,
        description="Frames the synth and loudness follower advance per step (block-size independent).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ProceduralConfig:
        if self.tempo_min_bpm >= self.tempo_max_bpm:
            raise ValueError(f"tempo_min_bpm must be below tempo_max_bpm, got "
                             f"{self.tempo_min_bpm} >= {self.tempo_max_bpm}")
        if self.register_low > self.register_high:
            raise ValueError(f"register_low must be <= register_high, got "
                             f"{self.register_low} > {self.register_high}")
        if self.phrase_bars not in (4, 8):
            raise ValueError(f"phrase_bars must be 4 or 8, got {self.phrase_bars}")
        if list(self.mode_edges) != sorted(self.mode_edges):
            raise ValueError(f"mode_edges must be ascending, got {list(self.mode_edges)}")
        if self.reverb_min > self.reverb_max:
            raise ValueError(f"reverb_min must be <= reverb_max, got {self.reverb_min} > {self.reverb_max}")
        for name, palette in (("cool_palette", self.cool_palette), ("warm_palette", self.warm_palette)):
            missing = [role for role in PITCHED_ROLES if not palette.get(role)]
            if missing:
                raise ValueError(f"{name} needs at least one program for roles {missing}")
            for role, programs in palette.items():
                if role not in PITCHED_ROLES:
                    raise ValueError(f"{name} role must be one of {list(PITCHED_ROLES)}, got {role!r}")
                bad = [p for p in programs if not 0 <= p <= 127]
                if bad:
                    raise ValueError(f"{name}.{role} programs must be 0-127, got {bad}")
        for role, program in self.ambience_programs.items():
            if role not in ("pad", "texture") or not 0 <= program <= 127:
                raise ValueError(f"ambience_programs must map pad/texture to 0-127, got {role!r}={program}")
        return self
