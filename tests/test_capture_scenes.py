"""The synthetic gallery scenes: deterministic, and their ground truth is where the pictures are."""

from __future__ import annotations

import itertools
import tomllib
from pathlib import Path

import cv2
import numpy as np
import pytest

from capture.catalogue import _thumbnail
from capture.detect import order_corners, rectify
from capture.synthetic.scenes import (
    CATALOGUE_SIZE,
    FRAME_KINDS,
    SceneGenerator,
    catalogue_artwork,
    write_catalogue,
)


@pytest.fixture(scope="module")
def generator() -> SceneGenerator:
    return SceneGenerator(catalogue_size=12, outsiders=4)


def _grey_correlation(a: np.ndarray, b: np.ndarray) -> float:
    a = cv2.cvtColor(cv2.resize(a, (48, 48), interpolation=cv2.INTER_AREA),
                     cv2.COLOR_BGR2GRAY).astype(np.float32).ravel()
    b = cv2.cvtColor(cv2.resize(b, (48, 48), interpolation=cv2.INTER_AREA),
                     cv2.COLOR_BGR2GRAY).astype(np.float32).ravel()
    return float(np.corrcoef(a, b)[0, 1])


def test_scenes_are_deterministic(generator: SceneGenerator) -> None:
    a, b = generator.render(3), generator.render(3)
    assert np.array_equal(a.image, b.image) and a.conditions == b.conditions
    assert not np.array_equal(a.image, generator.render(4).image)


def test_ground_truth_quads_frame_the_reference_pictures(generator: SceneGenerator) -> None:
    checked = 0
    for seed in range(6):
        scene = generator.render(seed, clean=True, paintings=2)
        assert scene.image.shape == (720, 1280, 3) and len(scene.paintings) == 2
        for painting in scene.paintings:
            quad = painting.quad
            assert quad.shape == (4, 2) and np.array_equal(order_corners(quad), quad)
            assert (quad[:, 0] > 0).all() and (quad[:, 0] < 1280).all()
            assert (quad[:, 1] > 0).all() and (quad[:, 1] < 720).all()
            assert cv2.isContourConvex(quad) and painting.frame_kind in FRAME_KINDS
            view = rectify(scene.image, quad, 128)
            # The rectified truth is the reference (lighting aside); a quad off by
            # a few percent already drops this well below 0.9.
            assert _grey_correlation(view, generator.artwork(painting.artwork)) > 0.9
            shifted = quad + 0.08 * (quad[1] - quad[0])
            assert _grey_correlation(rectify(scene.image, shifted, 128),
                                     generator.artwork(painting.artwork)) < \
                _grey_correlation(view, generator.artwork(painting.artwork))
            checked += 1
    assert checked == 12


def test_scene_set_covers_the_conditions(generator: SceneGenerator) -> None:
    scenes = [generator.render(seed) for seed in range(20)]
    conditions = set(itertools.chain.from_iterable(s.conditions for s in scenes))
    assert {"glare", "visitors", "blur"} <= conditions
    assert any(s.conditions["light"] < 0.5 for s in scenes)  # low light
    assert any(abs(float(s.conditions["yaw_deg"])) > 30 for s in scenes)
    counts = {len(s.paintings) for s in scenes}
    assert {1, 2, 3} <= counts
    occluded = [p.occluded for s in scenes for p in s.paintings]
    assert max(occluded) <= 0.35 and any(o > 0 for o in occluded)
    assert any(p.artwork_id is None for s in scenes for p in s.paintings)  # outsiders


def test_the_fifty_catalogue_works_are_distinct() -> None:
    signatures = [_thumbnail(cv2.resize(catalogue_artwork(k), (320, 320)))
                  for k in range(CATALOGUE_SIZE)]
    matrix = np.array(signatures)
    similarity = matrix @ matrix.T / (matrix.shape[1] / 3)
    np.fill_diagonal(similarity, -1.0)
    assert similarity.max() < 0.75, np.unravel_index(similarity.argmax(), similarity.shape)


def test_write_catalogue_writes_images_and_metadata(tmp_path: Path) -> None:
    folder = write_catalogue(tmp_path / "cat", 3)
    assert sorted(p.name for p in folder.glob("*.png")) == ["cat-000.png", "cat-001.png",
                                                            "cat-002.png"]
    meta = tomllib.loads((folder / "catalogue.toml").read_text())
    assert [a["id"] for a in meta["artwork"]] == ["cat-000", "cat-001", "cat-002"]
    assert all(a["title"] and isinstance(a["year"], int) for a in meta["artwork"])
