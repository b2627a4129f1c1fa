"""Motion blur (``capture/deblur.py``) and the camera degradations of the photo bench
(``capture/degrade.py``): a streak is found at its length and direction, a sharp frame has
none, taking it out brings the frame back, and the catalogue locates a work through it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

import capture.catalogue
from capture.catalogue import Catalogue
from capture.deblur import MotionBlur, deblur, estimate_motion_blur
from capture.degrade import DEGRADATIONS, degrade, hidden
from capture.detect import quad_iou
from capture.synthetic.rooms import jpeg_blocks
from capture.synthetic.scenes import SceneGenerator, write_catalogue

SIZE = 12


@pytest.fixture(scope="module")
def generator() -> SceneGenerator:
    return SceneGenerator(catalogue_size=SIZE, outsiders=6)


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> Catalogue:
    return Catalogue.open(write_catalogue(tmp_path_factory.mktemp("deblur"), SIZE))


def streaked(image: np.ndarray, length: float, degrees: float) -> np.ndarray:
    """``image`` smeared by a straight streak of ``length`` px at ``degrees``."""
    reach = int(length) + 2
    kernel = np.zeros((2 * reach + 1, 2 * reach + 1), np.float32)
    half = (length - 1) / 2 * np.array([np.cos(np.radians(degrees)), np.sin(np.radians(degrees))])
    ends = [np.round((reach + sign * half) * 8).astype(int) for sign in (-1, 1)]
    cv2.line(kernel, tuple(int(v) for v in ends[0]), tuple(int(v) for v in ends[1]), 1.0, 1,
             cv2.LINE_AA, shift=3)
    return cv2.filter2D(image, -1, kernel / kernel.sum(), borderType=cv2.BORDER_REPLICATE)


def grey_at(image: np.ndarray, width: int = 640) -> np.ndarray:
    height = round(image.shape[0] * width / image.shape[1])
    small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)


@pytest.mark.parametrize("length", [8, 14, 24])
@pytest.mark.parametrize("degrees", [0, 35, 90, 150])
def test_a_streak_is_found_at_its_length_and_direction(
        generator: SceneGenerator, length: int, degrees: int) -> None:
    scene = generator.render(5, paintings=2, clean=True)
    blur = estimate_motion_blur(grey_at(streaked(scene.image, length, degrees)))
    assert blur is not None
    assert blur.length == pytest.approx(length / 2, abs=0.75)  # at 640 of 1280 px
    found = np.degrees(np.arctan2(blur.dy, blur.dx)) % 180
    assert min(abs(found - degrees), 180 - abs(found - degrees)) < 8, blur


def test_a_sharp_frame_has_no_streak(generator: SceneGenerator) -> None:
    for seed in (5, 7, 9):
        scene = generator.render(seed, paintings=2)  # sensor noise, glare, visitors...
        assert estimate_motion_blur(grey_at(scene.image)) is None, seed
        assert estimate_motion_blur(grey_at(jpeg_blocks(scene.image, 20))) is None, seed
        scene = generator.render(seed, paintings=2, clean=True)
        assert estimate_motion_blur(grey_at(cv2.GaussianBlur(scene.image, (0, 0), 2.0))) \
            is None, seed  # missed focus is not a streak
    assert estimate_motion_blur(np.full((360, 640), 128, np.uint8)) is None
    # a rooms scene whose cepstrum dips 4 px away along both axes alike (a block grid: its
    # dip across is as deep as along, where a streak runs one way)
    rooms_scene = SceneGenerator(catalogue_size=SIZE, style="rooms").render(4)
    assert estimate_motion_blur(grey_at(rooms_scene.image)) is None
    # classic scenes with a lone cepstral dip 12-16 deep (the scene's own): a streak's
    # dip repeats at twice its displacement
    classic = SceneGenerator(catalogue_size=50)
    for seed in (17, 157):
        assert estimate_motion_blur(grey_at(classic.render(seed).image)) is None, seed
    assert estimate_motion_blur(np.zeros((12, 12), np.uint8)) is None  # too small to tell


def test_taking_the_streak_out_brings_the_frame_back(generator: SceneGenerator) -> None:
    sharp = grey_at(generator.render(9, paintings=2, clean=True).image)
    smeared = streaked(sharp, 10, 20)
    blur = estimate_motion_blur(smeared)
    assert blur is not None
    restored = deblur(smeared, blur)
    assert restored.dtype == np.uint8 and restored.shape == sharp.shape

    def error(image: np.ndarray) -> float:
        # the structure (a little smoothed: the filter lifts the sensor noise too), away from
        # the border, which the streak smears
        def smooth(grey: np.ndarray) -> np.ndarray:
            return cv2.GaussianBlur(grey.astype(np.float32), (0, 0), 1.5)
        return float(np.abs(smooth(image) - smooth(sharp))[20:-20, 20:-20].mean())

    assert error(restored) < 0.75 * error(smeared)
    colour = deblur(cv2.cvtColor(smeared, cv2.COLOR_GRAY2BGR), blur)
    assert colour.shape == (*sharp.shape, 3)
    assert np.abs(colour[:, :, 0].astype(int) - restored).max() <= 1
    assert deblur(smeared, MotionBlur(1.0, 0.0, 20.0)) is smeared  # too short to matter


def test_the_catalogue_locates_a_work_through_a_streak(
        catalogue: Catalogue, generator: SceneGenerator,
        monkeypatch: pytest.MonkeyPatch) -> None:
    scene = generator.render(5, paintings=1, yaw_deg=25.0, clean=True)
    painting = scene.paintings[0]
    frame = streaked(scene.image, 24, 20)
    before = catalogue.deblurred
    located = catalogue.locate(frame)
    assert [loc.artwork_id for loc in located] == [painting.artwork_id]
    assert quad_iou(located[0].quad, painting.quad) > 0.9
    assert catalogue.deblurred > before and not located[0].simulated
    # The same frame, the streak left in: the smeared frame's SIFT matches too few of the
    # reference's own features to place it (a smeared work has lost its fine detail, as a
    # far one has: the reference's far views may still place it, on their votes).
    monkeypatch.setattr(capture.catalogue, "estimate_motion_blur", lambda grey: None)
    assert all(loc.simulated for loc in catalogue.locate(frame))


def test_a_search_near_a_quad_takes_the_whole_frames_streak_out(
        catalogue: Catalogue, generator: SceneGenerator) -> None:
    """A pan smears every point alike, but a neighbourhood of a small work is too small
    to show the streak (it is looked for up to 5 % of the image's side): the whole
    frame's streak is taken out of it. Before, a smeared frame's arrival near its quad
    was placed by the whole frame's search and not near its quad (a live camera's work
    went unnamed, Estense 20180206_113800_010.jpg under `--degrade blur`)."""
    scene = generator.render(2, paintings=3, clean=True)
    painting = next(p for p in scene.paintings if p.artwork_id == "cat-008")
    quad = np.float32(painting.quad)
    frame = streaked(scene.image, 20, 10)
    low, high = quad.min(axis=0), quad.max(axis=0)
    left, top = np.maximum(low - 0.25 * (high - low), 0).astype(int)
    right, bottom = np.minimum(high + 0.25 * (high - low), (1280, 720)).astype(int)
    assert estimate_motion_blur(grey_at(frame[top:bottom, left:right],
                                        (right - left) // 2)) is None
    assert estimate_motion_blur(grey_at(frame)) is not None
    near = catalogue.locate(frame, near=quad)
    assert [loc.artwork_id for loc in near] == ["cat-008"]
    assert quad_iou(near[0].quad, quad) > 0.9 and not near[0].simulated


def test_degradations_move_the_truth_with_the_pixels() -> None:
    """Dots drawn on a black frame land where each degradation's point map says."""
    points = np.array([[100.0, 80.0], [640.0, 360.0], [1100.0, 600.0], [300.0, 650.0]])
    frame = np.zeros((720, 1280, 3), np.uint8)
    for x, y in points:
        cv2.circle(frame, (int(x), int(y)), 4, (255, 255, 255), -1)
    for name in DEGRADATIONS:
        degraded, move = degrade(frame, name, seed=1)
        assert degraded.shape == frame.shape and degraded.dtype == np.uint8, name
        moved = move(points)
        grey = cv2.cvtColor(degraded, cv2.COLOR_BGR2GRAY)
        people = hidden(frame.shape, name, seed=1)
        for (x, y) in moved:
            assert 0 <= x < 1280 and 0 <= y < 720, (name, x, y)
            if people is not None and people[int(y), int(x)]:
                continue  # behind a visitor: gone from the frame
            patch = grey[int(y) - 12:int(y) + 13, int(x) - 12:int(x) + 13].astype(np.float64)
            if name == "dim":
                patch = np.where(patch > 100, patch, 0)  # the dot, not the noise
            ys, xs = np.mgrid[-12:13, -12:13]
            centre = np.array([(xs * patch).sum(), (ys * patch).sum()]) / patch.sum()
            assert np.hypot(*centre) < 1.5, (name, (x, y), centre)
    with pytest.raises(ValueError, match="expected one of"):
        degrade(frame, "smudge")


def test_warm_light_tints_every_colour_as_a_lamp_does_and_keeps_red() -> None:
    """``warm``: red as it was, green and blue darker by their gains in linear light, black
    still black; a grey wall turns orange, not a darker grey."""
    frame = np.zeros((720, 1280, 3), np.uint8)
    frame[:, :640] = 128  # a mid-grey wall
    frame[:, 640:] = 255  # a white mount
    frame[:40, :40] = 0
    warm, move = degrade(frame, "warm")
    points = np.array([[10.0, 20.0], [700.0, 300.0]])
    assert np.array_equal(move(points), points)  # a colour, not a geometry
    assert np.array_equal(warm[:40, :40], frame[:40, :40])
    for column, level in ((320, 128), (960, 255)):
        blue, green, red = (int(v) for v in warm[360, column])
        assert red == level and blue < green < red, (level, blue, green, red)
        # in linear light, green at 0.78 and blue at 0.5 of red (within rounding)
        linear = (np.array([blue, green, red]) / 255.0) ** 2.2
        assert np.allclose(linear / linear[2], [0.5, 0.78, 1.0], atol=0.02), level


def _box(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)


def test_visitors_hide_what_hidden_says_and_the_truth_leaves_out_what_they_hide() -> None:
    from capture.bench import PhotoTruth, TruthWork

    frame = np.full((720, 1280, 3), 230, np.uint8)
    degraded, move = degrade(frame, "visitors", seed=5)
    people = hidden(frame.shape, "visitors", seed=5)
    assert people is not None and 0.1 < people.mean() < 0.4
    assert np.array_equal(people, hidden(frame.shape, "visitors", seed=5))  # seeded
    assert not np.array_equal(people, hidden(frame.shape, "visitors", seed=6))
    grey = cv2.cvtColor(degraded, cv2.COLOR_BGR2GRAY)
    eroded = cv2.erode(people.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    grown = cv2.dilate(people.astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
    assert grey[eroded].max() < 120 and grey[~grown].min() >= 228  # the rest of the wall as it was
    assert all(hidden(frame.shape, name) is None for name in DEGRADATIONS
               if name not in ("visitors", "glare"))
    # one work behind a visitor, one clear of them: the first is no longer asked for
    ys, xs = np.nonzero(eroded)
    x, y = int(np.median(xs)), int(np.median(ys))
    behind = _box(x - 20, y - 20, x + 20, y + 20)
    clear = next(_box(x0, 20, x0 + 40, 60) for x0 in range(0, 1240, 20)
                 if not people[20:60, x0:x0 + 40].any())
    truth = PhotoTruth("wall.jpg", (1280, 720), (TruthWork("a", behind), TruthWork("b", clear)),
                       (), ())
    seen = truth.warped(move, (1280, 720), people)
    assert [w.artwork_id for w in seen.paintings] == ["b"]
    assert [w.artwork_id for w in seen.partial] == ["a"]


def test_a_dim_frame_is_noisier_and_seeded() -> None:
    frame = np.full((90, 160, 3), 120, np.uint8)
    first, _ = degrade(frame, "dim", seed=3)
    assert np.array_equal(first, degrade(frame, "dim", seed=3)[0])
    assert not np.array_equal(first, degrade(frame, "dim", seed=4)[0])
    assert 3 < float(first.astype(np.float32).std()) < 20  # noise amplified by the exposure
    assert abs(float(first.mean()) - 120) < 3


def test_a_streaked_still_is_traced_and_recognised_with_the_streak_taken_out(
        catalogue: Catalogue, generator: SceneGenerator,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``detect_and_recognise`` without the catalogue's own search: the quad finder traces
    the work, and its view is recognised, on the frame with the streak taken out."""
    import capture.recognise
    from capture.recognise import detect_and_recognise, without_streak

    scene = generator.render(9, paintings=1, yaw_deg=20.0, clean=True)
    painting = scene.paintings[0]
    frame = streaked(scene.image, 30, 10)
    sharp = without_streak(frame)
    assert sharp is not frame and sharp.shape == frame.shape
    assert without_streak(scene.image) is scene.image  # a sharp frame is left alone
    found = detect_and_recognise(frame, catalogue, locate=False)
    assert [(f.artwork_id, f.found_by) for f in found] == [(painting.artwork_id, "quad")]
    assert quad_iou(found[0].quad, painting.quad) > 0.9
    monkeypatch.setattr(capture.recognise, "estimate_motion_blur", lambda grey: None)
    assert [f.artwork_id for f in detect_and_recognise(frame, catalogue, locate=False)] \
        != [painting.artwork_id]


def test_glare_washes_out_what_hidden_says_and_leaves_the_rest_legible() -> None:
    """Reflections in glazing: seeded soft patches in the middle of the frame; where one
    adds 120 levels or more a mid-tone is white, and that is what ``hidden`` says; the
    room mirrored in the glass only greys the rest a little."""
    rng = np.random.default_rng(0)
    frame = np.clip(rng.normal(110, 30, (720, 1280, 3)), 0, 255).astype(np.uint8)
    degraded, move = degrade(frame, "glare", seed=4)
    washed = hidden(frame.shape, "glare", seed=4)
    assert washed is not None and 0.01 < washed.mean() < 0.2
    assert np.array_equal(washed, hidden(frame.shape, "glare", seed=4))  # seeded
    assert not np.array_equal(washed, hidden(frame.shape, "glare", seed=5))
    assert not washed[:, :128].any() and not washed[:144].any()  # where works hang
    grey = cv2.cvtColor(degraded, cv2.COLOR_BGR2GRAY).astype(np.float32)
    before = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.float32)
    assert np.median(grey[washed]) >= 225
    far = cv2.dilate(washed.astype(np.uint8), np.ones((301, 301), np.uint8)) == 0
    assert np.abs(grey[far] - before[far]).mean() < 20  # the mirrored room: a faint haze
    assert np.array_equal(move(np.array([[5.0, 7.0]])), [[5.0, 7.0]])  # nothing moves
