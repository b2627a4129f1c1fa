"""Procedural artworks: deterministic, distinct styles that the descriptor tells apart."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from capture.config import StabilityConfig
from capture.descriptor import describe_image, descriptor_distance
from capture.synthetic.artworks import ARTWORK_ASPECTS, ARTWORK_STYLES, artwork_style, make_artwork

THRESHOLD = StabilityConfig().same_artwork_distance


@pytest.fixture(scope="module")
def features() -> dict[str, dict[str, float]]:
    return {artwork_style(i): describe_image(make_artwork(i, 7, (256, 256))).features
            for i in range(len(ARTWORK_STYLES))}


def test_at_least_eight_styles_with_aspects() -> None:
    assert len(ARTWORK_STYLES) >= 8
    assert len(set(ARTWORK_STYLES)) == len(ARTWORK_STYLES)
    assert len(ARTWORK_ASPECTS) == len(ARTWORK_STYLES)
    assert artwork_style(len(ARTWORK_STYLES)) == ARTWORK_STYLES[0]


def test_make_artwork_is_deterministic_and_sized_width_by_height() -> None:
    first = make_artwork(3, 11, (320, 200))
    assert first.shape == (200, 320, 3) and first.dtype == np.uint8
    assert np.array_equal(first, make_artwork(3, 11, (320, 200)))
    assert not np.array_equal(first, make_artwork(3, 12, (320, 200)))


def test_styles_sit_where_their_names_say(features: dict[str, dict[str, float]]) -> None:
    f = features
    warm, night = f["warm abstract expressionist"], f["dark nocturne landscape"]
    grid, sea = f["saturated geometric grid"], f["cool minimal seascape"]
    drip, mandala = f["high-entropy drip painting"], f["symmetric mandala"]
    pastel, portrait = f["pastel pointillist"], f["near-monochrome portrait study"]
    assert warm["warmth"] > 0.8 and sea["warmth"] < 0.3 and night["warmth"] < 0.4
    assert night["brightness"] < 0.2 < 0.8 < pastel["brightness"]
    assert portrait["saturation"] < 0.25 and portrait["colourfulness"] < 0.15
    assert grid["colourfulness"] > 0.8 and warm["saturation"] > 0.7
    assert drip["texture_entropy"] > 0.6 > 0.15 > sea["texture_entropy"]
    assert drip["edge_density"] > 0.6 and sea["edge_density"] < 0.1
    assert mandala["symmetry"] > 0.95 and drip["symmetry"] < 0.5
    assert grid["contrast"] > 0.6 > 0.2 > pastel["contrast"]


def test_artworks_are_pairwise_further_apart_than_the_same_artwork_threshold() -> None:
    # Sixteen artworks: every style twice, so two paintings of one style must
    # also count as different artworks.
    vectors = [describe_image(make_artwork(i, 7, (256, 256))).vector for i in range(16)]
    closest = min(descriptor_distance(a, b) for a, b in itertools.combinations(vectors, 2))
    assert closest > THRESHOLD * 1.2, closest
