"""The visual descriptor moves in the intended direction, stays in range, has a fixed shape."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from capture.descriptor import (
    ENCODER_NAME,
    FEATURE_NAMES,
    IDENTITY_FEATURES,
    VECTOR_LENGTH,
    describe_image,
    descriptor_distance,
)


def _solid(bgr: tuple[int, int, int], size: int = 256) -> np.ndarray:
    return np.full((size, size, 3), bgr, np.uint8)


def _noisy(base: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, sigma, base.shape)
    return np.clip(base.astype(np.float64) + noise, 0, 255).astype(np.uint8)


def _feature(image: np.ndarray, name: str) -> float:
    return describe_image(image).features[name]


def test_feature_names_are_the_contract() -> None:
    assert FEATURE_NAMES == ("brightness", "warmth", "saturation", "colourfulness", "contrast",
                             "edge_density", "texture_entropy", "symmetry", "dominant_hue",
                             "hue_spread", "abstraction")
    assert ENCODER_NAME == "descriptor-v1"
    # The identity vector keeps the first ten: its width is what models are built for.
    assert IDENTITY_FEATURES == FEATURE_NAMES[:10] and VECTOR_LENGTH == 130


@pytest.mark.parametrize("image", [
    _solid((0, 0, 0)), _solid((255, 255, 255)), _solid((0, 0, 255)),
    _noisy(_solid((128, 128, 128)), 120.0), np.random.default_rng(1).integers(
        0, 256, (300, 200, 3), dtype=np.uint8),
    np.zeros((64, 512, 3), np.uint8),
], ids=["black", "white", "red", "loud-noise", "random-nonsquare", "flat-wide"])
def test_features_in_unit_range_and_vector_fixed(image: np.ndarray) -> None:
    descriptor = describe_image(image)
    assert tuple(descriptor.features) == FEATURE_NAMES
    for name, value in descriptor.features.items():
        assert 0.0 <= value <= 1.0, (name, value)
    assert descriptor.vector.shape == (VECTOR_LENGTH,)
    assert descriptor.vector.dtype == np.float32
    assert np.isfinite(descriptor.vector).all()
    assert len(descriptor.palette) == 5
    assert abs(sum(c.weight for c in descriptor.palette) - 1.0) < 1e-6


def test_warm_image_is_warmer_than_cool_one() -> None:
    warm = _noisy(_solid((40, 120, 230)), 10)  # orange (BGR)
    cool = _noisy(_solid((200, 120, 40)), 10)  # blue
    grey = _noisy(_solid((128, 128, 128)), 10)
    assert _feature(warm, "warmth") > 0.75
    assert _feature(cool, "warmth") < 0.25
    assert abs(_feature(grey, "warmth") - 0.5) < 0.05


def test_bright_image_is_brighter_than_dark_one() -> None:
    assert _feature(_solid((235, 235, 235)), "brightness") > 0.85
    assert _feature(_solid((20, 20, 20)), "brightness") < 0.15


def test_saturated_image_beats_grey_one() -> None:
    rng = np.random.default_rng(3)
    saturated = np.zeros((256, 256, 3), np.uint8)
    for k, colour in enumerate([(0, 0, 255), (255, 0, 0), (0, 255, 255), (0, 255, 0)]):
        saturated[k * 64:(k + 1) * 64] = colour
    grey = cv2.cvtColor(cv2.cvtColor(saturated, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    saturated, grey = _noisy(saturated, 3, 1), _noisy(grey, 3, 1)
    del rng
    assert _feature(saturated, "saturation") > 0.8 > 0.1 > _feature(grey, "saturation")
    assert _feature(saturated, "colourfulness") > 0.8 > 0.1 > _feature(grey, "colourfulness")
    assert _feature(saturated, "hue_spread") > 0.5 > _feature(grey, "hue_spread")


def test_noisy_texture_has_more_entropy_and_edges_than_flat() -> None:
    flat = _solid((120, 130, 140))
    gradient = np.repeat(np.linspace(0, 255, 256, dtype=np.uint8)[None, :, None], 256, 0)
    gradient = np.repeat(gradient, 3, 2)
    noisy = _noisy(flat, 50)
    assert _feature(flat, "texture_entropy") < 0.05
    assert _feature(gradient, "texture_entropy") < 0.2  # smooth, however wide the range
    assert _feature(noisy, "texture_entropy") > 0.6
    assert _feature(noisy, "edge_density") > 0.5 > _feature(flat, "edge_density")


def test_mirrored_image_is_symmetric_and_random_halves_are_not() -> None:
    rng = np.random.default_rng(5)
    half = cv2.GaussianBlur(rng.integers(0, 256, (256, 128, 3), dtype=np.uint8), (0, 0), 6)
    half = cv2.normalize(half, None, 0, 255, cv2.NORM_MINMAX)
    mirrored = np.hstack([half, half[:, ::-1]])
    other = cv2.GaussianBlur(rng.integers(0, 256, (256, 128, 3), dtype=np.uint8), (0, 0), 6)
    other = cv2.normalize(other, None, 0, 255, cv2.NORM_MINMAX)
    unrelated = np.hstack([half, other])
    assert _feature(mirrored, "symmetry") > 0.95
    assert _feature(unrelated, "symmetry") < 0.5


def test_dominant_hue_follows_the_colour_circle() -> None:
    assert _feature(_solid((0, 0, 255)), "dominant_hue") < 0.05  # red
    assert abs(_feature(_solid((0, 255, 0)), "dominant_hue") - 1 / 3) < 0.05  # green
    assert abs(_feature(_solid((255, 0, 0)), "dominant_hue") - 2 / 3) < 0.05  # blue
    assert _feature(_solid((128, 128, 128)), "dominant_hue") == 0.0  # no colour


def test_contrast_half_black_half_white_is_high() -> None:
    image = np.zeros((256, 256, 3), np.uint8)
    image[:, 128:] = 255
    assert _feature(image, "contrast") > 0.95
    assert _feature(_solid((128, 128, 128)), "contrast") < 0.01


def test_descriptor_is_deterministic_and_size_independent() -> None:
    rng = np.random.default_rng(9)
    image = cv2.GaussianBlur(rng.integers(0, 256, (512, 512, 3), dtype=np.uint8), (0, 0), 8)
    first, second = describe_image(image), describe_image(image.copy())
    assert first.features == second.features
    assert np.array_equal(first.vector, second.vector)
    half = describe_image(cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA))
    assert descriptor_distance(first.vector, half.vector) < 0.02


def test_vector_distance_is_bounded() -> None:
    a = describe_image(_noisy(_solid((40, 120, 230)), 10)).vector
    b = describe_image(_noisy(_solid((200, 120, 40)), 10)).vector
    assert abs(float(np.linalg.norm(a)) - 1.0) < 1e-4
    assert 0.5 < descriptor_distance(a, b) <= 2.0
    assert descriptor_distance(a, a) == 0.0


def test_wrong_input_is_refused_with_what_was_expected() -> None:
    with pytest.raises(ValueError, match=r"BGR uint8 \(H, W, 3\).*float32"):
        describe_image(np.zeros((10, 10, 3), np.float32))


# -- abstraction ----------------------------------------------------------------------


def _figurative(size: int = 256, modelled: bool = True) -> np.ndarray:
    """A face in front of a horizon with perspective lines converging on it; ``modelled``:
    painted with soft gradations (blurred), else drawn with hard edges like a cartoon."""
    img = np.full((size, size, 3), (235, 206, 170), np.uint8)  # sky (BGR)
    horizon = size * 2 // 5
    img[horizon:] = (90, 140, 120)  # ground
    vanish = (size // 2, horizon)
    for x in range(-size, 2 * size + 1, size // 4):
        cv2.line(img, vanish, (x, size - 1), (60, 90, 80), 2, cv2.LINE_AA)
    cx, cy = size // 2, size // 2 + 10
    cv2.ellipse(img, (cx, cy), (46, 60), 0, 0, 360, (150, 185, 230), -1, cv2.LINE_AA)  # face
    cv2.ellipse(img, (cx, cy - 40), (50, 30), 0, 180, 360, (40, 60, 90), -1)  # hair
    for dx in (-18, 18):
        cv2.circle(img, (cx + dx, cy - 10), 6, (40, 40, 40), -1, cv2.LINE_AA)  # eyes
    cv2.line(img, (cx, cy - 4), (cx - 5, cy + 14), (90, 120, 170), 2)  # nose
    cv2.ellipse(img, (cx, cy + 28), (16, 6), 0, 0, 180, (60, 60, 170), 2)  # mouth
    return cv2.GaussianBlur(img, (0, 0), 2.0) if modelled else img


def _colour_field(size: int = 256) -> np.ndarray:
    """Two flat bands of red on a canvas with a little weave (noise)."""
    img = np.full((size, size, 3), (40, 60, 170), np.uint8)
    img[size // 2:] = (60, 90, 200)
    return _noisy(img, 4.0)


def _gestural(size: int = 256, seed: int = 0) -> np.ndarray:
    """Two hundred coloured strokes of random length, width and direction over the canvas."""
    rng = np.random.default_rng(seed)
    img = np.full((size, size, 3), (220, 225, 230), np.uint8)
    for _ in range(200):
        start = rng.integers(0, size, 2)
        end = start + rng.integers(-80, 81, 2)
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.line(img, (int(start[0]), int(start[1])), (int(end[0]), int(end[1])), colour,
                 int(rng.integers(3, 14)), cv2.LINE_AA)
    return img


def test_figurative_painting_is_less_abstract_than_colour_field_and_gestural() -> None:
    figurative = _feature(_figurative(), "abstraction")
    assert figurative < 0.3
    assert _feature(_colour_field(), "abstraction") > figurative + 0.3
    assert _feature(_gestural(), "abstraction") > figurative + 0.3
    assert _feature(_solid((30, 140, 200)), "abstraction") == 1.0  # one flat colour: a field


def test_hard_edges_read_more_abstract_than_the_same_forms_modelled_softly() -> None:
    # the edge-sharpness cue: the same composition, drawn or painted
    drawn = _feature(_figurative(modelled=False), "abstraction")
    painted = _feature(_figurative(modelled=True), "abstraction")
    assert drawn > painted + 0.15
    # ...and it does not outweigh the spread: the gestural all-over is still more abstract
    assert _feature(_gestural(), "abstraction") > drawn + 0.2
    gestural = _gestural(seed=1)
    softened = cv2.GaussianBlur(gestural, (0, 0), 3.0)
    assert _feature(gestural, "abstraction") > _feature(softened, "abstraction") + 0.1


def test_abstraction_is_deterministic_and_ignores_a_faint_shift() -> None:
    image = _gestural(seed=3)
    assert _feature(image, "abstraction") == _feature(image.copy(), "abstraction")
    brighter = np.clip(image.astype(np.int16) + 6, 0, 255).astype(np.uint8)
    assert abs(_feature(brighter, "abstraction") - _feature(image, "abstraction")) < 0.05
