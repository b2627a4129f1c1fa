"""The procedural mapping: features -> musical decisions (pure, fast, no audio)."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from engine.generators.procedural.config import ProceduralConfig
from engine.generators.procedural.mapping import (
    FEATURE_NAMES,
    ambience_decisions,
    decide,
    describe_decisions,
    gm_program_name,
)

CONFIG = ProceduralConfig()


def test_config_round_trips_through_its_dump() -> None:
    tuned = ProceduralConfig(
        tempo_min_bpm=40,
        tempo_max_bpm=90,
        phrase_bars=4,
        warm_palette={**CONFIG.warm_palette, "melody": [40]},
    )
    assert ProceduralConfig.model_validate(tuned.model_dump()) == tuned
    assert ProceduralConfig.model_validate_json(tuned.model_dump_json()) == tuned


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tempo_min_bpm": 100, "tempo_max_bpm": 90}, "tempo_min_bpm must be below tempo_max_bpm"),
        ({"phrase_bars": 6}, "phrase_bars must be 4 or 8, got 6"),
        ({"cool_palette": {"pad": [1]}}, "cool_palette needs at least one program for roles"),
        (
            {"warm_palette": {**CONFIG.warm_palette, "bass": [200]}},
            "warm_palette.bass programs must be 0-127",
        ),
        ({"mode_edges": (0.5, 0.4, 0.6, 0.7, 0.8)}, "mode_edges must be ascending"),
    ],
)
def test_config_refuses_inconsistent_values_by_name(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ProceduralConfig(**fields)


def test_same_features_same_decisions_and_missing_features_default_to_half() -> None:
    features = {"brightness": 0.3, "warmth": 0.8, "texture_entropy": 0.6}
    assert decide(features, CONFIG) == decide(dict(features), CONFIG)
    assert decide({}, CONFIG) == decide({name: 0.5 for name in FEATURE_NAMES}, CONFIG)
    # Out-of-range and NaN values are clipped / defaulted, never propagated.
    assert decide({"brightness": float("nan"), "warmth": 7.0}, CONFIG) == decide(
        {"brightness": 0.5, "warmth": 1.0}, CONFIG
    )


def test_different_artworks_get_audibly_different_decisions() -> None:
    a = decide(
        {
            "brightness": 0.85,
            "warmth": 0.9,
            "dominant_hue": 0.1,
            "saturation": 0.9,
            "colourfulness": 0.8,
            "symmetry": 0.8,
        },
        CONFIG,
    )
    b = decide(
        {
            "brightness": 0.15,
            "warmth": 0.1,
            "dominant_hue": 0.6,
            "saturation": 0.1,
            "colourfulness": 0.2,
            "symmetry": 0.3,
            "texture_entropy": 0.9,
        },
        CONFIG,
    )
    differing = [
        name
        for name in ("key_root", "mode", "tempo_bpm", "meter", "register", "programs")
        if getattr(a, name) != getattr(b, name)
    ]
    assert len(differing) == 6, differing


def test_listener_directions_hold_in_the_decisions() -> None:
    dark = decide({"brightness": 0.1}, CONFIG)
    bright = decide({"brightness": 0.9}, CONFIG)
    assert dark.register < bright.register and dark.tempo_bpm < bright.tempo_bpm
    assert dark.density < bright.density

    cool = decide({"warmth": 0.1}, CONFIG)
    warm = decide({"warmth": 0.9}, CONFIG)
    assert warm.brightness > cool.brightness
    assert warm.program("melody") in CONFIG.warm_palette["melody"]
    assert cool.program("melody") in CONFIG.cool_palette["melody"]

    calm = decide({"abstraction": 0.1, "texture_entropy": 0.1, "symmetry": 0.8}, CONFIG)
    abstract = decide({"abstraction": 0.9, "texture_entropy": 0.9, "symmetry": 0.2}, CONFIG)
    assert abstract.experimental > calm.experimental + 0.3
    assert abstract.meter == (5, 4) and calm.meter == (4, 4)

    plain = decide({"saturation": 0.1, "colourfulness": 0.1}, CONFIG)
    rich = decide({"saturation": 0.9, "colourfulness": 0.9}, CONFIG)
    assert rich.voices > plain.voices
    assert {"texture", "counter"} <= set(rich.roles) and "counter" not in plain.roles


def test_config_fields_move_the_mapping() -> None:
    slow = ProceduralConfig(tempo_min_bpm=30, tempo_max_bpm=40)
    assert 30 <= decide({"brightness": 1.0, "contrast": 1.0}, slow).tempo_bpm <= 40
    never = ProceduralConfig(percussion_threshold=1.01)
    assert "percussion" not in decide({"contrast": 1.0}, never).roles
    assert "percussion" in decide({"contrast": 1.0}, CONFIG).roles


def test_describe_is_json_ready_with_gm_names() -> None:
    described = describe_decisions(decide({"warmth": 0.9, "saturation": 0.9}, CONFIG))
    text = json.dumps(described)
    for key in (
        "key",
        "mode",
        "tempo_bpm",
        "meter",
        "register",
        "instruments",
        "density",
        "brightness",
        "experimental",
        "reverb",
        "voices",
    ):
        assert key in described, key
    melody = described["instruments"]["melody"]
    assert melody["name"] == gm_program_name(melody["program"])
    assert "Flute" in text or "Vibraphone" in text or "Piano" in text or "Oboe" in text
    assert gm_program_name(0) == "Acoustic Grand Piano" and gm_program_name(128) == "Percussion"


def test_empty_wall_ambience_is_sparse_and_quiet() -> None:
    ambience = ambience_decisions(CONFIG)
    assert ambience.ambience and ambience.voices == 2
    assert ambience.target_lufs < CONFIG.target_lufs - 10
    assert ambience.density < decide({}, CONFIG).density


def test_abstraction_leads_the_experimental_amount_over_busy_texture() -> None:
    # A busy old master (many figures: high texture entropy and edges, a subject
    # on a ground) is less experimental than a calm flat colour field.
    busy_figurative = decide({"abstraction": 0.1, "texture_entropy": 0.9,
                              "edge_density": 0.9, "symmetry": 0.4}, CONFIG)
    colour_field = decide({"abstraction": 0.95, "texture_entropy": 0.1,
                           "edge_density": 0.05, "symmetry": 0.6}, CONFIG)
    assert colour_field.experimental > busy_figurative.experimental + 0.3
    assert colour_field.experimental >= CONFIG.cluster_threshold > busy_figurative.experimental
    # Abstraction moves the experimental amount, not the register or the key.
    low, high = decide({"abstraction": 0.0}, CONFIG), decide({"abstraction": 1.0}, CONFIG)
    assert high.experimental - low.experimental == pytest.approx(0.7, abs=1e-3)
    assert (low.register, low.key_root, low.mode) == (high.register, high.key_root, high.mode)


def test_feature_noise_below_the_fourth_decimal_gives_the_same_plan() -> None:
    # OpenCV's threaded reductions give the same picture features that differ in the
    # tenth decimal from one process to the next; the plan (and the composer's salt, which
    # hashes the plan's features) must not hear it.
    features = {"brightness": 0.4615623602461803, "abstraction": 0.58232678}
    nudged = {"brightness": 0.46156236033524684, "abstraction": 0.58232678 + 3e-10}
    assert decide(features, CONFIG) == decide(nudged, CONFIG)
