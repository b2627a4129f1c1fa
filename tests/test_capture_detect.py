"""Detection finds the picture on demo-camera frames; rectify and the helpers behave."""

from __future__ import annotations

import itertools
import time

import cv2
import numpy as np
import pytest

from capture.config import DemoSourceConfig, StabilityConfig
from capture.descriptor import describe_image, descriptor_distance
from capture.detect import (
    Detection,
    choose_primary,
    detect_artworks,
    order_corners,
    quad_iou,
    rectify,
)
from capture.synthetic.artworks import make_artwork
from capture.synthetic.camera import DemoCamera

START = 1000.0


def _camera(artworks: int = 8, dwell_s: float = 3.0, seed: int = 7) -> DemoCamera:
    config = DemoSourceConfig(artworks=artworks, dwell_s=dwell_s, seed=seed)
    return DemoCamera(config, clock=lambda: START, start=START)


@pytest.fixture(scope="module")
def demo_views() -> list[tuple[float, int, np.ndarray, np.ndarray, Detection | None]]:
    """(t, truth index, truth quad, frame, primary detection) at many times, two cycles."""
    camera = _camera()
    views = []
    for t in np.arange(START, START + 2 * 8 * 3.0, 0.41):
        if not camera.fully_visible(float(t)):
            continue  # mid-pan: the picture is (partly) out of frame
        index, quad = camera.truth_at(float(t))
        frame = camera.render(float(t))
        primary = choose_primary(detect_artworks(frame), frame.shape)
        views.append((float(t), index, quad, frame, primary))
    return views


def test_primary_quad_matches_ground_truth(demo_views: list) -> None:
    assert len(demo_views) > 90
    ious = [quad_iou(p.quad, quad) if p is not None else 0.0 for _, _, quad, _, p in demo_views]
    good = np.mean(np.array(ious) >= 0.85)
    assert good >= 0.95, f"{good:.1%} of frames at IoU >= 0.85; worst {sorted(ious)[:5]}"
    assert {index for _, index, _, _, _ in demo_views} == set(range(8))


def test_same_artwork_stays_close_and_different_artworks_stay_apart(demo_views: list) -> None:
    threshold = StabilityConfig().same_artwork_distance
    vectors: dict[int, list[np.ndarray]] = {}
    for _, index, _, frame, primary in demo_views[::2]:
        if primary is not None:
            rectified = rectify(frame, primary.quad, 256)
            vectors.setdefault(index, []).append(describe_image(rectified).vector)
    same = max(descriptor_distance(a, b) for views in vectors.values()
               for a, b in itertools.combinations(views, 2))
    different = min(descriptor_distance(a, b) for i, j in itertools.combinations(vectors, 2)
                    for a in vectors[i] for b in vectors[j])
    assert same < threshold < different, (same, threshold, different)


def test_detection_prefers_the_picture_over_its_frame(demo_views: list) -> None:
    # The ground-truth quad is the picture inside the mount; the moulding's
    # outer edge would give an IoU of ~0.5-0.7 with it.
    for _, _, quad, _, primary in demo_views[:20]:
        assert primary is not None and quad_iou(primary.quad, quad) > 0.85
        assert primary.score > 0.5 and 0.02 < primary.area_fraction < 0.6


def test_nothing_is_detected_on_a_bare_wall_or_noise() -> None:
    rng = np.random.default_rng(0)
    wall = np.full((720, 1280, 3), (150, 160, 168), np.uint8)
    wall = cv2.add(wall, rng.integers(0, 6, wall.shape, dtype=np.uint8))
    assert detect_artworks(wall) == []
    noise = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    assert detect_artworks(noise) == []


def test_a_painting_cut_by_the_frame_edge_is_not_a_view() -> None:
    wall = np.full((720, 1280, 3), (150, 160, 168), np.uint8)
    wall[100:500, 900:1280] = make_artwork(3, 7, (380, 400))  # runs off the right edge
    assert detect_artworks(wall) == []
    wall[100:500, 300:680] = make_artwork(2, 7, (380, 400))
    found = detect_artworks(wall)
    assert len(found) == 1
    truth = np.array([[300, 100], [680, 100], [680, 500], [300, 500]], np.float32)
    assert quad_iou(found[0].quad, truth) > 0.95


def test_choose_primary_prefers_large_and_central() -> None:
    def square(cx: float, cy: float, side: float) -> Detection:
        h = side / 2
        quad = np.array([[cx - h, cy - h], [cx + h, cy - h], [cx + h, cy + h], [cx - h, cy + h]],
                        np.float32)
        return Detection(quad, 0.9, side * side / (1280 * 720))

    central = square(640, 360, 300)
    corner = square(150, 150, 250)
    small = square(660, 380, 60)
    assert choose_primary([corner, central, small], (720, 1280, 3)) is central
    assert choose_primary([], (720, 1280, 3)) is None


def test_rectify_recovers_the_artwork() -> None:
    artwork = make_artwork(4, 7, (400, 300))
    frame = np.full((720, 1280, 3), 128, np.uint8)
    quad = np.array([[500, 200], [905, 230], [890, 520], [480, 540]], np.float32)
    source = np.array([[0, 0], [400, 0], [400, 300], [0, 300]], np.float32)
    homography = cv2.getPerspectiveTransform(source, quad)
    cv2.warpPerspective(artwork, homography, (1280, 720), dst=frame,
                        borderMode=cv2.BORDER_TRANSPARENT)
    rectified = rectify(frame, quad, (400, 300))
    assert rectified.shape == (300, 400, 3) and rectified.dtype == np.uint8

    def blur(image: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(image, (0, 0), 2).astype(np.float32)

    assert np.abs(blur(rectified) - blur(artwork))[10:-10, 10:-10].mean() < 12
    assert rectify(frame, quad, 256).shape == (256, 256, 3)
    assert rectify(frame, quad, 32).shape == (32, 32, 3)


def test_quad_helpers() -> None:
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], np.float32)
    assert quad_iou(square, square) == pytest.approx(1.0)
    assert quad_iou(square, square + [5, 0]) == pytest.approx(50 / 150)
    assert quad_iou(square, square + [20, 0]) == 0.0
    shuffled = square[[2, 0, 3, 1]]
    assert np.array_equal(order_corners(shuffled), square)


def test_detect_rectify_describe_fit_a_real_time_budget() -> None:
    # The brief is "well under 30 ms per 1280x720 frame on one core"; on a shared
    # test machine we only guard against gross regressions (3x the budget).
    camera = _camera()
    frames = [camera.render(START + 1.0 + 0.5 * k) for k in range(8)]
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        spent = []
        for frame in frames:
            began = time.perf_counter()
            primary = choose_primary(detect_artworks(frame), frame.shape)
            assert primary is not None
            describe_image(rectify(frame, primary.quad, 256))
            spent.append(time.perf_counter() - began)
    finally:
        cv2.setNumThreads(threads)
    assert float(np.median(spent)) < 0.09, spent


# -- hard cases: broken outlines, touching clutter, faint edges ---------------------


def _wall(colour: tuple[int, int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    wall = np.full((720, 1280, 3), colour, np.uint8)
    return cv2.add(wall, rng.integers(0, 6, wall.shape, dtype=np.uint8))


def _hang(frame: np.ndarray, picture: np.ndarray, quad: np.ndarray) -> None:
    h, w = picture.shape[:2]
    source = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    homography = cv2.getPerspectiveTransform(source, quad)
    cv2.warpPerspective(picture, homography, (frame.shape[1], frame.shape[0]), dst=frame,
                        borderMode=cv2.BORDER_TRANSPARENT)


def box(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)


def _best_iou(frame: np.ndarray, truth: np.ndarray) -> float:
    return max((quad_iou(d.quad, truth) for d in detect_artworks(frame)), default=0.0)


def test_a_visitor_hiding_a_corner_does_not_bend_the_quad() -> None:
    # The silhouette joins the canvas's outline, so no contour is the canvas; its
    # sides are still straight edges (the old contour-only finder gave IoU ~0.63).
    frame = _wall((150, 160, 168), 0)
    truth = np.array([[380, 150], [900, 170], [890, 520], [390, 540]], np.float32)
    _hang(frame, make_artwork(3, 7, (520, 390)), truth)
    cv2.circle(frame, (400, 470), 40, (40, 35, 30), -1)
    cv2.rectangle(frame, (320, 505), (480, 720), (40, 35, 30), -1)
    assert _best_iou(frame, truth) > 0.95


def test_a_visitor_in_front_of_a_side_leaves_one_side_in_two_pieces() -> None:
    frame = _wall((170, 175, 160), 4)
    truth = np.array([[380, 130], [880, 150], [875, 500], [385, 515]], np.float32)
    _hang(frame, make_artwork(5, 4, (500, 370)), truth)
    cv2.circle(frame, (640, 420), 45, (60, 50, 70), -1)
    cv2.rectangle(frame, (540, 460), (740, 720), (60, 50, 70), -1)
    assert _best_iou(frame, truth) > 0.95


def test_a_caption_card_touching_the_mount_is_not_part_of_the_quad() -> None:
    # The card and the paper make one contour whose hull has a side over bare wall
    # (the old finder took that hull: IoU ~0.62 with the picture).
    frame = _wall((120, 110, 150), 1)
    paper = np.array([[470, 170], [890, 180], [885, 500], [475, 510]], np.float32)
    truth = np.array([[500, 200], [860, 210], [855, 470], [505, 480]], np.float32)
    _hang(frame, np.full((300, 400, 3), 240, np.uint8), paper)
    _hang(frame, make_artwork(2, 9, (360, 270)), truth)
    cv2.rectangle(frame, (380, 470), (478, 505), (245, 245, 245), -1)
    for y in (480, 488, 496):
        cv2.line(frame, (386, y), (450, y), (40, 40, 40), 1)
    found = detect_artworks(frame)
    assert len(found) == 1 and quad_iou(found[0].quad, truth) > 0.9


def test_two_paintings_in_a_row_are_two_detections_not_one() -> None:
    # Aligned tops and bottoms make a quad round both from straight lines; the wall
    # between them breaks its top and bottom at the same place.
    frame = _wall((200, 205, 208), 3)
    left = np.array([[150, 200], [550, 200], [550, 500], [150, 500]], np.float32)
    right = np.array([[700, 200], [1100, 200], [1100, 500], [700, 500]], np.float32)
    _hang(frame, make_artwork(4, 1, (400, 300)), left)
    _hang(frame, make_artwork(6, 2, (400, 300)), right)
    found = detect_artworks(frame)
    assert len(found) == 2
    assert max(quad_iou(d.quad, left) for d in found) > 0.95
    assert max(quad_iou(d.quad, right) for d in found) > 0.95


def test_a_dark_canvas_on_a_dark_red_wall_is_found() -> None:
    # Seed 14 of the bench: the mandala's dark ground against a museum-red wall is
    # below the global Canny thresholds (the old finder saw nothing); the gradient,
    # amplified where local contrast is low, shows the outline.
    from capture.synthetic.scenes import SceneGenerator

    scene = SceneGenerator().render(14)
    (painting,) = scene.paintings
    assert _best_iou(scene.image, painting.quad) > 0.95


def test_histogram_percentiles_match_numpy() -> None:
    from capture.detect import _percentiles

    rng = np.random.default_rng(3)
    for size in (1, 2, 7, 500, 14400):
        for values in (rng.integers(0, 256, size), rng.integers(100, 104, size)):
            values = values.astype(np.uint8)
            assert np.allclose(_percentiles(values, 1.0, 99.0), np.percentile(values, (1, 99)))


def test_the_line_finder_skips_what_a_lone_contour_quad_explains() -> None:
    # Contours inside a lone contour quad are explained (its content); side by side,
    # quads may be the blocks of one picture, and explain nothing.
    from capture.detect import _isolated, _unexplained

    lone, block_a, block_b = box(10, 10, 100, 80), box(200, 10, 260, 80), box(264, 10, 320, 80)
    nested = box(20, 20, 90, 70)  # a mount inside the lone frame does not make it a neighbour
    kept = _isolated([lone, nested, block_a, block_b])
    assert len(kept) == 2 and kept[0] is lone and kept[1] is nested
    inside = box(30, 30, 60, 60).astype(np.int32).reshape(-1, 1, 2)
    across = box(50, 30, 150, 60).astype(np.int32).reshape(-1, 1, 2)
    in_block = box(210, 20, 250, 70).astype(np.int32).reshape(-1, 1, 2)
    left = _unexplained([inside, across, in_block], kept, (120, 400))
    assert [id(c) for c in left] == [id(across), id(in_block)]


def test_a_hull_side_a_pixel_or_two_off_its_edge_still_runs_along_it() -> None:
    # A bumpy outline's hull touches the bumps and passes just outside the edge between.
    from capture.detect import _side_gaps

    edges = np.zeros((200, 300), np.uint8)
    cv2.rectangle(edges, (51, 51), (249, 149), 255, 1)
    quad = np.array([[50, 50], [250, 50], [250, 150], [50, 150]], np.float32)
    assert _side_gaps(edges, quad).max() <= 0.05
    far = np.array([[44, 44], [256, 44], [256, 156], [44, 156]], np.float32)
    assert _side_gaps(edges, far).max() > 0.5  # bare wall a few px further out


def test_a_visitor_in_front_of_one_side_of_a_mount_keeps_it_a_mount() -> None:
    from capture.detect import _band_is_mounting

    rng = np.random.default_rng(3)
    grey = np.full((240, 320), 200, np.uint8)
    outer = np.array([[40, 40], [280, 40], [280, 200], [40, 200]], np.float32)
    inner = np.array([[70, 70], [250, 70], [250, 170], [70, 170]], np.float32)
    grey[70:170, 70:250] = rng.integers(0, 255, (100, 180), dtype=np.uint8)  # the picture
    assert _band_is_mounting(grey, outer, inner)
    visited = grey.copy()
    visited[60:200, 250:280] = rng.integers(0, 255, (140, 30), dtype=np.uint8)  # one side
    assert _band_is_mounting(visited, outer, inner)
    cornered = visited.copy()
    cornered[170:200, 150:280] = rng.integers(0, 255, (30, 130), dtype=np.uint8)  # and bottom
    assert _band_is_mounting(cornered, outer, inner)  # a visitor at the corner: two sides
    opposite = visited.copy()
    opposite[60:200, 40:70] = rng.integers(0, 255, (140, 30), dtype=np.uint8)  # left, right
    assert not _band_is_mounting(opposite, outer, inner)
    painted = grey.copy()
    painted[40:200, 40:280] = rng.integers(0, 255, (160, 240), dtype=np.uint8)
    assert not _band_is_mounting(painted, outer, inner)


def test_peeling_steps_in_past_a_visitor_hiding_part_of_one_side() -> None:
    # Seed 118 of the bench: a print's white margin round a busy picture, a visitor
    # in front of the bottom side; the picture's edge there runs only in part.
    from capture.detect import _peel_to_picture

    rng = np.random.default_rng(5)
    grey = np.full((240, 320), 90, np.uint8)
    outer = np.array([[40, 40], [280, 40], [280, 200], [40, 200]], np.float32)
    inner = np.array([[52, 52], [268, 52], [268, 188], [52, 188]], np.float32)
    grey[40:200, 40:280] = 235  # the margin
    grey[52:188, 52:268] = cv2.GaussianBlur(rng.integers(0, 255, (136, 216), dtype=np.uint8),
                                            (0, 0), 2.0)  # the picture
    grey[150:240, 170:250] = 60  # the visitor, over 40 % of the bottom side
    peeled = _peel_to_picture(grey, outer)
    assert quad_iou(peeled, inner) > 0.9
    grey[40:240, 200:280] = 60  # hiding two sides leaves nothing to go on
    assert quad_iou(_peel_to_picture(grey, outer), outer) > 0.99


def test_a_visitor_hiding_most_of_one_side_still_leaves_a_quad() -> None:
    # Seed 157 of the bench: a visitor in front of a canvas hides most of one side;
    # the other three and the stretch left are plainly its outline.
    from capture.synthetic.scenes import SceneGenerator

    scene = SceneGenerator().render(157)
    assert _best_iou(scene.image, scene.paintings[0].quad) > 0.85


def _bench_painting(seed: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    from capture.synthetic.scenes import SceneGenerator

    scene = SceneGenerator().render(seed)
    return scene.image, scene.paintings[index].quad


def test_an_outline_with_bumps_on_it_is_still_a_contour_quad() -> None:
    # Seed 1078: a canvas's drop-shadow edge and strokes touching its outline make
    # the contour's hull bulge (fill 0.90); every side still runs along edges.
    frame, truth = _bench_painting(1078, 0)
    assert _best_iou(frame, truth) > 0.9


def test_a_visitor_hiding_a_corner_hides_parts_of_two_sides() -> None:
    # Seed 1052: a visitor in front of a canvas's bottom-right corner leaves a third
    # of its right side and two thirds of its bottom; the other two are whole.
    frame, truth = _bench_painting(1052, 1)
    assert _best_iou(frame, truth) > 0.9


def test_a_print_whose_lit_edges_are_faint_is_found_inside_its_paper() -> None:
    # Seed 2024: white paper on a pale wall, lit from the top left: the paper's top
    # and left edges are too faint to trace, its shadowed right and bottom are not.
    # The picture shares its top and left with the outline found, and is inside.
    frame, truth = _bench_painting(2024, 2)
    found = detect_artworks(frame)
    assert max(quad_iou(d.quad, truth) for d in found) > 0.9
    assert sum(quad_iou(d.quad, truth) > 0.3 for d in found) == 1


def test_two_shared_sides_make_a_band_only_when_they_meet_and_it_is_narrow() -> None:
    from capture.detect import _even_band

    outer = box(0, 0, 200, 150)
    assert _even_band(box(10, 10, 190, 140), outer)  # a mount all round
    assert _even_band(box(0, 10, 190, 140), outer)  # one side shared
    assert _even_band(box(0, 0, 190, 140), outer)  # top and left shared, a narrow margin
    assert not _even_band(box(0, 0, 150, 100), outer)  # a block in the painting's corner
    assert not _even_band(box(0, 10, 200, 140), outer)  # left and right: a strip across


def test_a_busy_canvas_whose_outline_zig_zags_is_found() -> None:
    # Seed 3022: strokes touch a busy canvas's outline all round, so the contour
    # zig-zags a pixel or three about each side and no simplified piece of it is
    # a whole side; the short pieces along each side still support its line.
    frame, truth = _bench_painting(3022, 0)
    assert _best_iou(frame, truth) > 0.95


def test_a_moulding_step_is_not_another_tracing_of_the_picture() -> None:
    from capture.detect import _same_outline

    picture = box(40, 40, 240, 190)
    assert _same_outline(picture, box(40, 40, 240, 184))  # bottom from a line 6 px in
    assert _same_outline(picture, box(35, 40, 245, 195))  # three sides apart, top shared
    assert not _same_outline(picture, box(36, 36, 244, 194))  # the next step out, all round
    assert not _same_outline(picture, box(40, 40, 240, 150))  # a region of the picture
    # Seed 1079: a gilt moulding's steps, a visitor in front of a corner. The step
    # all round the picture is better supported; the picture is still the pick (the
    # bench's 0.85 IoU; two of its sides are traced a step out).
    frame, truth = _bench_painting(1079, 0)
    assert _best_iou(frame, truth) > 0.85


def test_visitors_in_front_of_the_lower_part_leave_its_top_and_sides() -> None:
    # Seed 2175: visitors hide both lower corners of a canvas; its top is whole, its
    # sides run down from the top corners, and a stretch of its bottom shows.
    frame, truth = _bench_painting(2175, 0)
    assert _best_iou(frame, truth) > 0.95


def test_a_region_of_the_picture_in_an_uneven_band_gives_way_to_the_picture() -> None:
    # Seed 4077: a mounted seascape whose plain sky passes for mount: the sea is
    # the smallest quad in a band (deep at the top) plain enough to be a mounting,
    # but the whole picture shares its other three sides in an even band.
    frame, truth = _bench_painting(4077, 0)
    assert _best_iou(frame, truth) > 0.95


def _oval_wall(framed: bool, head: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A 1280x720 wall with an oval painting (in a gilt oval frame where ``framed``) and,
    where ``head``, a visitor beside it; the painting's bounding box (TL, TR, BR, BL)."""
    rng = np.random.default_rng(5)
    wall = np.clip(np.full((720, 1280, 3), (160, 172, 182), np.float32)
                   + rng.normal(0.0, 2.0, (720, 1280, 3)), 0, 255).astype(np.uint8)
    centre, axes = (640, 360), (150, 200)  # half axes, px
    if framed:
        cv2.ellipse(wall, centre, (axes[0] + 26, axes[1] + 26), 0, 0, 360, (40, 120, 170), -1)
    picture = np.zeros_like(wall)
    art = make_artwork(2, 11, (2 * axes[0], 2 * axes[1]))
    picture[160:560, 490:790] = art
    mask = np.zeros((720, 1280), np.uint8)
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 255, -1)
    wall[mask > 0] = picture[mask > 0]
    if head:
        cv2.circle(wall, (1050, 330), 60, (40, 60, 45), -1)
        cv2.rectangle(wall, (940, 390), (1160, 720), (40, 60, 45), -1)
    box = np.float32([[490, 160], [790, 160], [790, 560], [490, 560]])
    return wall, box


def test_an_oval_painting_in_an_oval_frame_is_found_and_a_round_head_is_not() -> None:
    """Tondi and oval portraits hang in oval frames: an ellipse fitted closely to an outline,
    with its frame's ellipse round it on the same centre, is a picture (its bounding box
    the quad); a single plain round thing (a head, a lamp) is not, nor a framed plain oval
    (a mirror)."""
    wall, box = _oval_wall(framed=True, head=True)
    found = detect_artworks(wall)
    assert len(found) == 1, found
    assert quad_iou(found[0].quad, box) > 0.9, found[0].quad
    rng = np.random.default_rng(6)
    lone = np.clip(np.full((720, 1280, 3), (160, 172, 182), np.float32)
                   + rng.normal(0.0, 2.0, (720, 1280, 3)), 0, 255).astype(np.uint8)
    cv2.circle(lone, (400, 300), 70, (40, 60, 45), -1)  # a head seen alone, a round lamp
    cv2.ellipse(lone, (900, 350), (60, 90), 0, 0, 360, (230, 235, 240), -1)  # a plain oval
    assert detect_artworks(lone) == []  # (each traced twice by its edge band: not a frame)
    mirror = lone.copy()  # a plain oval in a frame: a mirror, a plaque
    cv2.ellipse(mirror, (640, 360), (176, 226), 0, 0, 360, (40, 120, 170), -1)
    cv2.ellipse(mirror, (640, 360), (150, 200), 0, 0, 360, (225, 228, 230), -1)
    assert detect_artworks(mirror) == []


def _hung_on_wall(kind: str, artwork: int, seed: int, lens: float = 0.0,
                  size: tuple[float, float] = (560.0, 420.0)) -> tuple[np.ndarray, np.ndarray]:
    """A frontal 1280x720 wall with one framed work (the rooms style's mounting), and the
    picture's corners; ``lens`` > 0 bends the frame as a wide lens does."""
    from capture.synthetic import rooms

    rng = np.random.default_rng(seed)
    frame = np.full((720, 1280, 3), (196, 203, 208), np.float32)
    hung, picture = rooms.room_mounting(rng, make_artwork(artwork, 0, (400, 300)).astype(
        np.float32), kind, size)
    top, left = (720 - hung.shape[0]) // 2, (1280 - hung.shape[1]) // 2
    frame[top:top + hung.shape[0], left:left + hung.shape[1]] = hung
    corners = np.asarray(picture, np.float32).reshape(4, 2) + (left, top)
    if lens:
        fisheye = rooms.Fisheye(lens, (1280, 720))
        frame = np.asarray(fisheye.apply(frame), np.float32)
        corners = fisheye.distort_points(corners)
    return np.clip(frame, 0, 255).astype(np.uint8), corners


@pytest.mark.parametrize("artwork", [1, 3, 9, 14])
def test_a_carved_gilt_frame_gives_its_picture_not_its_outline(artwork: int) -> None:
    # A carved frame is busy along its sides (the plain-band test refuses it) and its
    # inner edge merges with the carving; its colour, the same all round, sets it apart.
    image, picture = _hung_on_wall("ornate", artwork, seed=artwork)
    found = detect_artworks(image)
    assert found and max(quad_iou(d.quad, picture) for d in found) >= 0.9, \
        [np.round(d.quad).tolist() for d in found]


def test_a_motif_on_a_plain_ground_is_not_peeled_as_if_framed() -> None:
    # A mandala's plain ground surrounds its motif on every side, like a mount by colour;
    # the motif's outline is curved, not a straight edge along each side, so it stays.
    from capture.detect import _peel_frame

    side = 300
    picture = np.zeros((side, side, 3), np.uint8)
    picture[:] = (30, 20, 110)  # dark red ground
    cv2.circle(picture, (150, 150), 118, (200, 170, 60), 5)
    for angle in range(0, 360, 30):
        turn = np.radians(angle)
        tip = (int(150 + 110 * np.cos(turn)), int(150 + 110 * np.sin(turn)))
        cv2.line(picture, (150, 150), tip, (60, 200, 230), 14)
    cv2.circle(picture, (150, 150), 40, (220, 220, 240), -1)
    quad = np.array([[0, 0], [side, 0], [side, side], [0, side]], np.float32)
    assert _peel_frame(picture, quad) is quad


def test_a_band_of_one_material_is_a_mounting_and_sky_over_sea_is_not() -> None:
    from capture.detect import _band_is_one_material

    rng = np.random.default_rng(5)
    outer = np.array([[20, 20], [300, 20], [300, 220], [20, 220]], np.float32)
    inner = np.array([[60, 60], [260, 60], [260, 180], [60, 180]], np.float32)
    carved = np.clip(rng.normal(0, 40, (240, 320, 1)) + (40, 130, 190), 0, 255).astype(np.uint8)
    carved[60:180, 60:260] = np.clip(rng.normal(0, 25, (120, 200, 1)) + (120, 60, 40), 0,
                                     255).astype(np.uint8)  # a blue picture in gilt carving
    assert _band_is_one_material(carved, outer, inner)
    painted = np.zeros((240, 320, 3), np.float64)
    painted[:120] = (230, 200, 170)  # sky above the horizon
    painted[120:] = (110, 80, 20)  # sea below
    seascape = np.clip(painted + rng.normal(0, 20, painted.shape), 0, 255).astype(np.uint8)
    assert not _band_is_one_material(seascape, outer, inner)  # a region of the painting


@pytest.mark.parametrize("lens", [0.2, 0.35])
def test_a_picture_bent_by_a_wide_lens_is_found(lens: float) -> None:
    # Barrel distortion bows straight sides into arcs, most near the frame's edges (a
    # work filling the view): the chord between two corners leaves the edge mid-side,
    # the outline itself does not.
    image, picture = _hung_on_wall("canvas", 14, seed=2, lens=lens, size=(900.0, 520.0))
    found = detect_artworks(image)
    assert found and max(quad_iou(d.quad, picture) for d in found) >= 0.85, \
        [np.round(d.quad).tolist() for d in found]


def _octagon(x0: float, y0: float, x1: float, y1: float, cut: float) -> np.ndarray:
    """A rectangle with its corners cut ``cut`` px along each side, clockwise from the top."""
    return np.array([[x0 + cut, y0], [x1 - cut, y0], [x1, y0 + cut], [x1, y1 - cut],
                     [x1 - cut, y1], [x0 + cut, y1], [x0, y1 - cut], [x0, y0 + cut]], np.float32)


def test_an_octagonal_outline_gives_the_rectangle_its_corners_cut() -> None:
    from capture.detect import _cut_corner_quad

    rectangle = box(10, 0, 110, 70)
    for start in range(2):  # whichever vertex the outline starts at
        octagon = np.roll(_octagon(10, 0, 110, 70, 12), start, axis=0)
        assert np.allclose(_cut_corner_quad(octagon), rectangle, atol=1e-3)
    regular = np.array([[np.cos(a), np.sin(a)] for a in np.radians(np.arange(8) * 45 + 22.5)],
                       np.float32) * 100
    assert _cut_corner_quad(regular) is None  # every side alike: no corners were cut
    assert _cut_corner_quad(_octagon(10, 0, 110, 70, 12)[:7]) is None
    bent = _octagon(10, 0, 110, 70, 12)
    bent[2] = (100, 30)  # a notch, not a cut: the outline is not convex
    assert _cut_corner_quad(bent) is None


@pytest.mark.parametrize("near_side", [1.0, 0.8])
def test_a_painting_in_an_octagonal_frame_is_found(near_side: float) -> None:
    """Baroque galleries hang octagonal frames among rectangular ones: the frame's outline
    and the picture's, each an octagon, give the rectangles their corners cut."""
    frame = _wall((150, 160, 170), seed=3)
    outer, inner = _octagon(390, 160, 890, 560, 70), _octagon(430, 200, 850, 520, 55)
    cv2.fillPoly(frame, [np.round(outer).astype(np.int32)], (40, 140, 190))  # a gilt frame
    picture = np.zeros_like(frame)
    _hang(picture, make_artwork(3, 2, (420, 320)), box(430, 200, 850, 520))
    mask = np.zeros(frame.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(inner).astype(np.int32)], 255)
    frame[mask > 0] = picture[mask > 0]
    # the wall seen from its left (the far side ``near_side`` times as tall as the near one)
    far = 200 * near_side
    homography = cv2.getPerspectiveTransform(box(390, 160, 890, 560), np.array(
        [[420, 160], [820, 360 - far], [820, 360 + far], [420, 560]], np.float32))
    frame = cv2.warpPerspective(frame, homography, (1280, 720), borderMode=cv2.BORDER_REPLICATE)
    picture_quad = cv2.perspectiveTransform(box(430, 200, 850, 520)[None], homography)[0]
    found = detect_artworks(frame)
    assert found, "nothing found"
    assert quad_iou(found[0].quad, picture_quad) >= 0.9, np.round(found[0].quad).tolist()


@pytest.mark.parametrize("kind", ["ornate", "gilt", "dark_wood"])
def test_a_framed_work_cut_by_the_edge_of_the_view_is_not_a_view(kind: str) -> None:
    # A frame reaching the view's edge is looked into for its picture (it may reach it
    # round a picture wholly in view); a picture the edge cuts is not reported, nor its frame.
    image, picture = _hung_on_wall(kind, 3, seed=5, size=(640.0, 480.0))
    cut = int(picture[:, 1].min()) + 40  # the picture's top 40 px out of view
    moved = np.concatenate([image[cut:], np.broadcast_to(image[:1], (cut, *image.shape[1:]))])
    truth = picture - np.float32((0, cut))
    found = detect_artworks(moved)
    assert all(cv2.intersectConvexConvex(d.quad, truth.clip(0))[0]
               < 0.5 * cv2.contourArea(d.quad) for d in found), \
        [np.round(d.quad).tolist() for d in found]


def test_works_on_a_coloured_panel_are_found_not_the_panel() -> None:
    # A plain panel of another colour behind a group of works (a modern hang, or a
    # stretch of wall between mouldings): its outline is the largest quad, and it was
    # reported as one picture, the works inside it lost.
    frame = _wall((200, 204, 208), 5)
    cv2.fillConvexPoly(frame, box(140, 90, 1140, 650).astype(np.int32), (70, 50, 110))
    pictures = [box(230, 200, 430, 470), box(560, 230, 760, 420), box(880, 180, 1020, 360)]
    for k, picture in enumerate(pictures):
        x0, y0 = picture[0].astype(int)
        x1, y1 = picture[2].astype(int)
        frame[y0 - 8:y1 + 20, x0 - 8:x1 + 20] = frame[y0 - 8:y1 + 20, x0 - 8:x1 + 20] * 3 // 4
        cv2.rectangle(frame, (x0 - 14, y0 - 14), (x1 + 14, y1 + 14), (40, 120, 170), -1)  # gilt
        cv2.rectangle(frame, (x0 - 7, y0 - 7), (x1 + 7, y1 + 7), (70, 150, 200), -1)
        _hang(frame, make_artwork(k + 4, 11, (int(x1 - x0), int(y1 - y0))), picture)
    found = detect_artworks(frame)
    assert len(found) == 3, [d.quad.round().tolist() for d in found]
    for picture in pictures:
        assert max(quad_iou(d.quad, picture) for d in found) > 0.9


def test_a_block_on_a_painted_field_touching_its_edge_is_no_panel() -> None:
    # The sea below a plain sky shares the picture's sides: the picture is the work.
    frame = _wall((120, 125, 130), 6)
    truth = box(300, 150, 980, 560)
    painted = np.full((410, 680, 3), (230, 200, 170), np.uint8)
    painted[250:] = make_artwork(3, 2, (680, 160))
    cv2.rectangle(painted, (300, 60), (380, 120), (40, 60, 200), -1)  # a sail in the sky
    _hang(frame, painted, truth)
    assert _best_iou(frame, truth) > 0.9


def _caption_card(dark: bool, size: tuple[int, int] = (90, 136)) -> np.ndarray:
    """A museum's caption card: a title and a few short lines on plain card, a tab below."""
    width, height = size
    paper, ink = ((70, 72, 75), (230, 230, 230)) if dark else ((236, 238, 240), (30, 30, 35))
    card = np.full((height, width, 3), paper, np.uint8)
    line = max(1, height // 60)
    cv2.line(card, (width // 12, height // 10), (width * 3 // 4, height // 10), ink, 2 * line)
    for k, end in enumerate((0.8, 0.6, 0.7)):
        y = height // 5 + k * height // 14
        cv2.line(card, (width // 12, y), (int(width * end), y), ink, line)
    cv2.rectangle(card, (width // 2 - width // 30 - 1, height * 3 // 4),
                  (width // 2 + width // 30 + 1, height - height // 16), (12, 12, 12), -1)
    return card


@pytest.mark.parametrize("dark", [False, True])
def test_a_caption_card_beside_a_painting_is_not_a_picture(dark: bool) -> None:
    # Real photos: the caption cards beside the works were reported as uncatalogued works
    # (6 of 7 false positives on the Estense photos): a plain card with print on it,
    # hung bare on the wall, a tenth of the work's size.
    frame = _wall((150, 155, 160), 8)
    truth = box(250, 150, 790, 560)
    _hang(frame, make_artwork(5, 3, (540, 410)), truth)
    card = box(870, 300, 960, 436)
    _hang(frame, _caption_card(dark), card)
    found = detect_artworks(frame)
    assert max(quad_iou(d.quad, truth) for d in found) > 0.9
    assert not any(quad_iou(d.quad, card) > 0.3 for d in found), \
        [d.quad.round().tolist() for d in found]
    # alone on the wall, it is not a small thing beside a picture: it is still reported
    alone = _wall((150, 155, 160), 8)
    _hang(alone, _caption_card(dark, (192, 288)), box(540, 210, 732, 498))
    assert any(quad_iou(d.quad, box(540, 210, 732, 498)) > 0.8 for d in detect_artworks(alone))


@pytest.mark.parametrize("dark", [False, True])
def test_a_caption_card_beside_a_work_found_otherwise_is_a_card(dark: bool) -> None:
    # A light's reflection across a work's frame takes its outline from the quad finder
    # and leaves the card's: the work the catalogue located beside it still makes it one.
    frame = _wall((150, 155, 160), 8)
    card = box(870, 300, 960, 436)
    _hang(frame, _caption_card(dark), card)
    assert any(quad_iou(d.quad, card) > 0.8 for d in detect_artworks(frame))  # alone: kept
    work = box(250, 150, 790, 560)  # located by the catalogue; nothing traced there
    beside = detect_artworks(frame, beside=[work])
    assert not any(quad_iou(d.quad, card) > 0.3 for d in beside), \
        [d.quad.round().tolist() for d in beside]
    # a work no bigger than the card itself does not make it one
    assert any(quad_iou(d.quad, card) > 0.8
               for d in detect_artworks(frame, beside=[box(300, 300, 390, 436)]))


def test_wall_a_barrier_outlines_is_no_picture_and_a_bare_monochrome_is() -> None:
    # Real photos: the rail and posts of a barrier in front of a plain wall, and the
    # floor's edge below, outline a stretch of wall, reported as a work. Bare wall inside,
    # running on outside it, is wall; a bare monochrome canvas, its own colour, is a work.
    frame = _wall((150, 170, 180), 4)
    frame[600:] = (100, 115, 125)  # the floor
    cv2.line(frame, (0, 380), (1280, 380), (30, 30, 32), 5)  # the rail, across the view
    for x in (500, 1000):  # posts, from the rail down past the floor's edge
        cv2.line(frame, (x, 380), (x, 719), (30, 30, 32), 5)
    stretch = box(505, 385, 995, 600)
    monochrome = box(150, 100, 400, 300)
    frame[100:300, 150:400] = (150, 60, 30)  # a deep blue canvas
    found = detect_artworks(frame)
    assert not any(quad_iou(d.quad, stretch) > 0.3 for d in found), \
        [d.quad.round().tolist() for d in found]
    assert any(quad_iou(d.quad, monochrome) > 0.9 for d in found), \
        [d.quad.round().tolist() for d in found]


def _two_in_carved_frames(pictures: list[np.ndarray]) -> np.ndarray:
    """A wall with a work hung in each of ``pictures``, each in gilt whose corners are
    carved away (the outlines break there)."""
    frame = _wall((150, 155, 160), 8)
    for k, picture in enumerate(pictures):
        _hang(frame, make_artwork(k + 4, 11, tuple(int(v) for v in picture[2] - picture[0])),
              picture)
        (x0, y0), (x1, y1) = picture[0].astype(int), picture[2].astype(int)
        for a, b in (((x0 + 4, y0 - 16), (x1 - 4, y0)), ((x0 + 4, y1), (x1 - 4, y1 + 16)),
                     ((x0 - 16, y0 + 4), (x0, y1 - 4)), ((x1, y0 + 4), (x1 + 16, y1 - 4))):
            cv2.rectangle(frame, a, b, (60, 150, 200), -1)
    return frame


def test_two_works_hung_side_by_side_are_two_and_blocks_inside_one_outline_are_one() -> None:
    # Real photos: frames hung in a row, their carved corners breaking each outline, were
    # joined by the line finder (the first's left side, the second's right, the tops and
    # bottoms they share) into one quad over the wall between them. Hung one above the
    # other, the left and right sides were sampled at 8 points only (the top and bottom
    # every 2 px), and the two were one quad (IoU 0.43).
    for pictures in ([box(120, 200, 420, 560), box(468, 200, 768, 560)],
                     [box(400, 60, 760, 330), box(400, 378, 760, 648)]):
        found = detect_artworks(_two_in_carved_frames(pictures))
        for picture in pictures:
            assert max(quad_iou(d.quad, picture) for d in found) > 0.85, \
                [d.quad.round().tolist() for d in found]
    # Two blocks standing apart on a canvas, a band of its ground between them from edge
    # to edge, inside an unbroken outline: one work.
    canvas = _wall((150, 155, 160), 8)
    work = box(300, 150, 900, 570)
    painted = np.full((420, 600, 3), (235, 238, 240), np.uint8)
    painted[:, :270] = (40, 40, 190)
    painted[:, 330:] = (170, 90, 30)
    _hang(canvas, painted, work)
    found = detect_artworks(canvas)
    assert max(quad_iou(d.quad, work) for d in found) > 0.9, \
        [d.quad.round().tolist() for d in found]


def test_an_oval_on_a_stretch_of_wall_is_the_work_not_the_wall_round_it() -> None:
    # Real photos, turned: the wall between a room's corner, the ceiling, a doorway and
    # the floor outlines a quad round an oval painting, and the quad was reported (and
    # the oval inside it dropped). Holding the oval, the stretch of wall is a surface.
    frame = _wall((150, 160, 168), 5)
    frame[:, :200] = (95, 100, 106)  # the room's corner: the other wall, in shade
    frame[:, 1000:] = (200, 205, 208)  # a doorway's jamb
    frame[:90] = (215, 218, 220)  # the ceiling
    frame[650:] = (80, 90, 100)  # the floor
    oval = np.zeros((400, 320), np.uint8)
    cv2.ellipse(oval, (160, 200), (150, 190), 0, 0, 360, 255, -1)
    frame[170:570, 440:760][oval > 0] = make_artwork(6, 3, (320, 400))[oval > 0]
    cv2.ellipse(frame, (600, 370), (156, 196), 0, 0, 360, (40, 120, 170), 8)  # gilt
    found = detect_artworks(frame)
    assert len(found) == 1 and quad_iou(found[0].quad, box(440, 170, 760, 570)) > 0.85, \
        [d.quad.round().tolist() for d in found]


@pytest.mark.parametrize("seed", [0, 3])
def test_a_small_dark_portrait_in_its_frame_beside_a_big_work_is_no_card(seed: int) -> None:
    # A plain dark ground with a face is plain with marks, like a card, and as small
    # beside the big work, and no mounting is traced round it in its carved frame: the
    # frame round it, not a bare wall (seed 0), or, where the frame's outline is the
    # quad (seed 3), the frame inside its edge, not the card's plain margin, tell.
    from capture.synthetic import rooms

    frame = _wall((150, 155, 160), 9)
    truth = box(250, 150, 790, 560)
    _hang(frame, make_artwork(5, 3, (540, 410)), truth)
    portrait = np.full((120, 90, 3), (40, 42, 46), np.float32)
    cv2.ellipse(portrait, (45, 50), (14, 18), 0, 0, 360, (120, 150, 190), -1)
    hung, picture = rooms.room_mounting(np.random.default_rng(seed), portrait, "ornate",
                                        (90, 120))
    frame[300:300 + hung.shape[0], 880:880 + hung.shape[1]] = np.clip(hung, 0, 255)
    small = np.asarray(picture, np.float32).reshape(4, 2) + (880, 300)
    found = detect_artworks(frame)
    assert len(found) == 2 and any(quad_iou(d.quad, small) > 0.6 for d in found), \
        [d.quad.round().tolist() for d in found]


def test_the_line_finder_keeps_each_quarters_lines_beside_a_crowd_of_longer_ones() -> None:
    """Long edges crowd one part of the view (a big frame's moulding steps, railings, a
    skirting board): a small picture's sides elsewhere are shorter than all of them, and
    chosen by length across the whole frame they were left out. Its quarter's own longest
    lines are kept too, and its quad is found; the crowd makes none."""
    from capture.quads import _MAX_LINES, line_quads

    edges = np.zeros((360, 640), np.uint8)

    def stroke(x0: int, y0: int, x1: int, y1: int) -> None:
        cv2.line(edges, (x0, y0), (x1, y1), 255, 1)

    # More long lines of each family than are chosen by length, in the left half, apart
    # (none crosses another where both have edge): no quad among them.
    for k in range(_MAX_LINES + 4):
        stroke(10, 12 + 6 * k, 300, 12 + 6 * k)
        stroke(12 + 6 * k, 200, 12 + 6 * k, 350)
    # The small picture in the bottom right quarter, its outline broken at every corner.
    stroke(466, 240, 564, 240)
    stroke(466, 320, 564, 320)
    stroke(462, 244, 462, 316)
    stroke(568, 244, 568, 316)
    contours, _ = cv2.findContours(edges, cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    found = line_quads(contours, (360, 640), 40 * 40, 2.0)
    truth = np.float32([[462, 240], [568, 240], [568, 320], [462, 320]])
    assert found and quad_iou(found[0][0], truth) > 0.9, found
    assert all(quad_iou(quad, truth) > 0.5 for quad, _ in found), found
