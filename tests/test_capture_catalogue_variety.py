"""A big synthetic catalogue whose works differ as a museum's do (issue 14's 2,000 works).

The classic works (0-63: the demo, the tests, the 50-work catalogue, the classic scene
bench's outsiders) keep their pixels; works from ``CLASSIC_WORKS`` on are drawn with more
per-work freedom, keep their style's place in the descriptor space, and have no near-twin
among the other works by either measure recognition uses (a global thumbnail signature and
local features verified by RANSAC).
"""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest

from capture.bench_catalogue import work_distinctness
from capture.descriptor import describe_image, descriptor_distance
from capture.index_cli import progress_bar
from capture.synthetic.artworks import ARTWORK_STYLES, CLASSIC_WORKS, make_artwork
from capture.synthetic.scenes import CATALOGUE_SIZE, catalogue_artwork

# sha256 of catalogue_artwork(i).tobytes(), computed from the code before works >= 64 changed.
CLASSIC_HASHES = {
    0: "092bf1a495102948f3fbeb41318a6b91bbb79e1b3f8b000e1896e63a7a153a5b",
    3: "80d49c64137b62215c5dc078dd3449cb747139962176181277b0aac15732c0e8",
    5: "98ead1c071ff026c3c1d3b3555c553bc73df57ed75fb80d7a4c584cbad004eeb",
    7: "c97cbeef6e26ba3beaacac3c4cd4566b5bd6eb435e8b9f754feceaad801416fb",
    27: "6fe08da7323468dca5ff9a5cb5da1cfb6d1941f0abbddff8bca725236cb9f198",
    49: "d6933b77ba672848f44c6465ec3895913e5441cd54c5db72229944576fe0f267",
    50: "7d4751ac7f55285c55b5083e40e2f3a755ab7ebdddcf276765a2976d28fb5c9a",
    57: "a1ab7832161889d7b48731fdc972e3c77dcf173472281a9124ef3f0b0cad41d3",
    63: "feaf7f4457c5dd8a0c33dc1e205c0e286269497642d1b0fd77fea17c347db008",
}
#: sha256 of the bytes of catalogue_artwork(0) ... catalogue_artwork(63), one after another.
ALL_CLASSIC_HASH = "fdab30632a92e817f8aa90ace54a1953022fd5c5609a5c5d7e75d9aa16ae00f7"
#: ...and of make_artwork(i, 7, (256, 256)) for i in 0..15 (what the demo and tests paint).
DEMO_HASH = "90921609a62abc2d2e8688cf972782815694badf4d2f8f41b23fa93b07eec5f0"

#: How many works the distinctness check covers (issue 14's bench draws from 2,000).
FIRST = 400
OUTSIDERS = range(2000, 2100)


def _sha(image: np.ndarray) -> str:
    return hashlib.sha256(image.tobytes()).hexdigest()


def test_the_classic_works_keep_every_pixel() -> None:
    assert CLASSIC_WORKS >= CATALOGUE_SIZE + 8  # the catalogue and the scene bench's outsiders
    for index, expected in CLASSIC_HASHES.items():
        assert _sha(catalogue_artwork(index)) == expected, f"catalogue_artwork({index}) changed"
    everything = hashlib.sha256()
    for index in range(CLASSIC_WORKS):
        everything.update(catalogue_artwork(index).tobytes())
    assert everything.hexdigest() == ALL_CLASSIC_HASH
    demo = hashlib.sha256()
    for index in range(16):
        demo.update(make_artwork(index, 7, (256, 256)).tobytes())
    assert demo.hexdigest() == DEMO_HASH


def test_varied_works_are_deterministic_and_differ_from_the_classic_ones() -> None:
    index = CLASSIC_WORKS + 3
    first = make_artwork(index, 11, (320, 200))
    assert first.shape == (200, 320, 3) and first.dtype == np.uint8
    assert np.array_equal(first, make_artwork(index, 11, (320, 200)))
    assert not np.array_equal(first, make_artwork(index, 12, (320, 200)))


def test_varied_works_keep_their_style_in_the_descriptor_space() -> None:
    # The demo's music reads a work's descriptor: a varied seascape must still sound like a
    # seascape. Each varied work's nearest classic work (by descriptor) is of its own style
    # about as often as for the classic works themselves (89 of 96 for works 64-159 painted
    # the classic way), and every style keeps at least half (the classic grids keep half).
    def vector(index: int) -> np.ndarray:
        return describe_image(make_artwork(index, 7, (256, 256))).vector

    styles = len(ARTWORK_STYLES)
    classic = [vector(index) for index in range(CLASSIC_WORKS)]
    per_style = 6
    own = np.zeros(styles, int)
    for index in range(CLASSIC_WORKS, CLASSIC_WORKS + per_style * styles):
        varied = vector(index)
        distances = [descriptor_distance(varied, c) for c in classic]
        own[index % styles] += int(np.argmin(distances)) % styles == index % styles
    assert own.sum() >= 0.85 * per_style * styles, dict(zip(ARTWORK_STYLES, own, strict=True))
    assert own.min() >= 0.5 * per_style, dict(zip(ARTWORK_STYLES, own, strict=True))


def test_work_distinctness_finds_a_near_twin_and_refuses_empty_input() -> None:
    works = [catalogue_artwork(index) for index in (64, 65, 66)]
    twin = cv2.GaussianBlur(works[1], (0, 0), 0.8)  # the same work, a little softer
    within = work_distinctness([*works, twin])
    assert within.inliers_twin[3] == 1 and within.thumbnail_twin[3] == 1
    assert within.inliers[3] > 50 and within.thumbnail[3] > 0.95
    assert within.inliers[0] < 20 and within.thumbnail[0] < 0.9
    against = work_distinctness([twin], works)
    assert against.inliers_twin[0] == 1 and against.inliers[0] > 50
    with pytest.raises(ValueError, match="at least one work"):
        work_distinctness([])
    with pytest.raises(ValueError, match="pool of at least 2 works"):
        work_distinctness(works[:1])


@pytest.mark.slow
def test_a_big_catalogue_has_no_near_twins() -> None:
    # The first 50 works (classic) among themselves set the bar: over the first FIRST works,
    # and for works outside the catalogue against works 50..FIRST-1, the most similar other
    # work by either measure stays below what the 50 already satisfy among themselves.
    works = [catalogue_artwork(index) for index in range(FIRST)]
    first50 = work_distinctness(works[:CATALOGUE_SIZE])
    bar_thumbnail = float(first50.thumbnail.max())
    bar_inliers = int(first50.inliers.max())
    catalogue = work_distinctness(works)
    varied = np.arange(CLASSIC_WORKS, FIRST)
    assert catalogue.thumbnail[varied].max() <= bar_thumbnail, catalogue.summary()
    assert catalogue.inliers[varied].max() <= bar_inliers, catalogue.summary()
    outsiders = work_distinctness([catalogue_artwork(index) for index in OUTSIDERS],
                                  works[CATALOGUE_SIZE:])
    assert outsiders.thumbnail.max() <= bar_thumbnail, outsiders.summary()
    assert outsiders.inliers.max() <= bar_inliers, outsiders.summary()


def test_one_progress_bar_serves_index_and_bench(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bar(False) as update:
        assert update is None
    assert capsys.readouterr().err == ""  # disabled: nothing at all
    with progress_bar(unit="views") as update:
        assert update is not None
        assert capsys.readouterr().err == ""  # nothing before the first update
        for done in range(1, 4):
            update("writing works", done, 3)
        update("recognising", 1, 2)
    err = capsys.readouterr().err
    assert "writing works" in err and "3/3" in err and "recognising" in err and "1/2" in err
