"""QuadTracker: follows a located picture through a moving camera, keeps it through a passer-by,
gives it up when it is gone, refuses bad input; and ``bench tracking`` runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from capture.bench_video import TrackingVideo, bench_tracking_command, render_tracking_video
from capture.tracking import QuadTracker, TrackResult
from ground.errors import InputError

DIAGONAL = math.hypot(1280, 720)


@pytest.fixture(scope="module")
def video() -> TrackingVideo:
    # 70 frames at 1280x720 of a slowly panning, zooming, rolling camera; a visitor hides
    # ~45 % of the picture on frames 30-39.
    return render_tracking_video(70, seed=1)


def _error_pct(result: TrackResult, truth: np.ndarray) -> float:
    assert result.quad is not None
    return float(np.linalg.norm(result.quad - truth, axis=1).mean() / DIAGONAL * 100)


def test_follows_a_pan(video: TrackingVideo) -> None:
    tracker = QuadTracker()
    assert tracker.start(video.frames[0], video.truths[0]).status == "tracking"
    for grey in video.frames[1:61]:
        result = tracker.update(grey)
        assert result.status == "tracking"
    error = _error_pct(result, video.truths[60])
    moved = float(np.linalg.norm(video.truths[60] - video.truths[0], axis=1).mean()
                  / DIAGONAL * 100)
    assert moved > 2.0  # the camera did move: standing still would fail the next line
    assert error < 0.3
    assert result.inliers >= tracker.min_points


def test_keeps_the_work_through_a_partial_occlusion(video: TrackingVideo) -> None:
    occluded = [k for k, cover in enumerate(video.covered) if cover > 0]
    assert len(occluded) >= 8 and min(video.covered[k] for k in occluded) > 0.35
    tracker = QuadTracker(max_lost_frames=3)
    tracker.start(video.frames[0], video.truths[0])
    for k in range(1, occluded[-1] + 5):
        result = tracker.update(video.frames[k])
        assert result.status == "tracking", k
        if k >= occluded[0]:
            assert _error_pct(result, video.truths[k]) < 1.0, k


def _covered_frame(grey: np.ndarray, truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``grey`` with the picture (and a margin) hidden behind fresh noise."""
    centre = truth.mean(axis=0)
    cover = np.round(centre + (truth - centre) * 1.3).astype(np.int32)
    hidden = grey.copy()
    mask = np.zeros(grey.shape, np.uint8)
    cv2.fillConvexPoly(mask, cover, 255)
    noise = rng.integers(40, 200, grey.shape, dtype=np.uint8)
    hidden[mask > 0] = noise[mask > 0]
    return hidden


def test_lost_when_the_picture_is_covered_longer_than_max_lost_frames(
        video: TrackingVideo) -> None:
    rng = np.random.default_rng(0)
    tracker = QuadTracker(max_lost_frames=4)
    tracker.start(video.frames[0], video.truths[0])
    for k in range(1, 6):
        assert tracker.update(video.frames[k]).status == "tracking"
    statuses = [tracker.update(_covered_frame(video.frames[k], video.truths[k], rng)).status
                for k in range(6, 12)]
    assert statuses[:4] == ["tracking"] * 4  # held through max_lost_frames...
    assert statuses[4:] == ["lost", "lost"]  # ...then given up
    assert not tracker.active
    # Lost stays lost, even when the picture comes back: the loop detects again.
    assert tracker.update(video.frames[12]) == TrackResult(None, 0, "lost", 5)


def test_a_brief_full_cover_is_held_and_the_work_found_again_in_place(
        video: TrackingVideo) -> None:
    rng = np.random.default_rng(1)
    still = video.frames[5]  # a camera standing still: the work reappears where it was
    tracker = QuadTracker(max_lost_frames=6)
    tracker.start(still, video.truths[5])
    held = [tracker.update(_covered_frame(still, video.truths[5], rng)) for _ in range(3)]
    assert [r.held_frames for r in held] == [1, 2, 3]
    assert all(r.status == "tracking" and r.quad is not None for r in held)
    back = tracker.update(still)
    assert back.status == "tracking" and back.held_frames == 0
    assert _error_pct(back, video.truths[5]) < 0.2


def test_lost_when_the_picture_leaves_the_frame(video: TrackingVideo) -> None:
    tracker = QuadTracker(max_lost_frames=3)
    tracker.start(video.frames[0], video.truths[0])
    statuses = []
    for step in range(1, 40):  # the camera turns away: the wall slides 60 px a frame
        shift = np.array([[1, 0, 60.0 * step], [0, 1, 0]], np.float32)
        frame = cv2.warpAffine(video.frames[0], shift, (1280, 720), borderValue=128)
        statuses.append(tracker.update(frame).status)
        if statuses[-1] == "lost":
            break
    assert statuses[0] == "tracking"
    assert statuses[-1] == "lost"
    # Gone from the frame at about step 1280 / 60 ~ 21 at the latest, lost 3 frames later.
    assert len(statuses) <= 26


@pytest.mark.parametrize("quad", [np.zeros((3, 2)), np.zeros((4, 3)), [[0, 0]] * 4 + [[1, 1]],
                                  [[0, 0], [10, 0], [10, np.nan], [0, 10]], "corners"])
def test_refuses_a_quad_that_is_not_4x2_finite(video: TrackingVideo, quad: object) -> None:
    with pytest.raises(ValueError, match="quad"):
        QuadTracker().start(video.frames[0], quad)  # type: ignore[arg-type]


def test_refuses_bad_frames_and_parameters(video: TrackingVideo) -> None:
    tracker = QuadTracker()
    with pytest.raises(ValueError, match="grey"):
        tracker.start(video.frames[0].astype(np.float32), video.truths[0])
    tracker.start(video.frames[0], video.truths[0])
    with pytest.raises(ValueError, match="grey: expected a 1280x720 frame"):
        tracker.update(video.frames[0][:360])
    with pytest.raises(ValueError, match="max_lost_frames"):
        QuadTracker(max_lost_frames=-1)
    with pytest.raises(ValueError, match="ransac_threshold"):
        QuadTracker(ransac_threshold=float("nan"))


def test_reset_and_before_start_report_lost(video: TrackingVideo) -> None:
    tracker = QuadTracker()
    assert tracker.update(video.frames[1]).status == "lost"
    tracker.start(video.frames[0], video.truths[0])
    assert tracker.active
    tracker.reset()
    assert not tracker.active and tracker.update(video.frames[1]).quad is None


def test_bench_runs_and_reports_its_keys() -> None:
    result = CliRunner().invoke(bench_tracking_command,
                                ["--frames", "8", "--repeats", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert {"fps", "ms_per_update", "corner_error_pct", "occlusion", "lost_frames",
            "held_frames", "frames", "size"} <= report.keys()
    assert report["frames"] == 8 and report["size"] == [1280, 720]
    assert report["lost_frames"] == 0 and report["occlusion"]["frames"] == 2
    table = CliRunner().invoke(bench_tracking_command, ["--frames", "5", "--repeats", "1"])
    assert table.exit_code == 0 and "tracking fps" in table.output
    for option, bad in (("--frames", "2"), ("--repeats", "0"), ("--seed", "-1")):
        refused = CliRunner().invoke(bench_tracking_command, [option, bad])
        assert refused.exit_code == 2 and f"Invalid value for '{option}'" in refused.output


def _photo_set(folder: Path) -> Path:
    """A 1920x1080 photo of a textured wall with two works (one large, one too small to film
    closer), and its truth.json."""
    from capture.synthetic.artworks import make_artwork

    rng = np.random.default_rng(3)
    wall = np.full((1080, 1920, 3), (150, 158, 165), np.float32)
    wall += cv2.GaussianBlur(rng.normal(0, 12, (1080, 1920)).astype(np.float32),
                             (0, 0), 2)[..., None]
    photo = np.clip(wall, 0, 255).astype(np.uint8)
    large = np.float32([[500, 250], [1150, 270], [1140, 760], [510, 780]])
    small = np.float32([[1500, 400], [1580, 400], [1580, 460], [1500, 460]])
    for quad, seed in ((large, 4), (small, 5)):
        art = make_artwork(seed, 2, (400, 300))
        square = np.float32([[0, 0], [400, 0], [400, 300], [0, 300]])
        cv2.warpPerspective(art, cv2.getPerspectiveTransform(square, quad), (1920, 1080),
                            dst=photo, borderMode=cv2.BORDER_TRANSPARENT)
    folder.mkdir()
    cv2.imwrite(str(folder / "wall.jpg"), photo, [cv2.IMWRITE_JPEG_QUALITY, 92])
    truth = {"galleries": [{"name": "wall.jpg", "size": [1920, 1080], "paintings": [
        {"name": "big.jpg", "points": large.tolist()},
        {"name": "tiny.jpg", "points": small.tolist()}]}]}
    (folder / "truth.json").write_text(json.dumps(truth))
    return folder


def test_bench_films_the_paintings_of_real_photos(tmp_path: Path) -> None:
    """``--photos DIR``: each painting in view is filmed from the photo and tracked from its
    true quad; one the camera would have to enlarge past recognition is listed as left out."""
    photos = _photo_set(tmp_path / "photos")
    result = CliRunner().invoke(bench_tracking_command, [
        "--photos", str(photos), "--frames", "24", "--repeats", "1", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["works"], report["tracked"]) == (2, 1)
    big, tiny = report["per_work"]
    assert (big["artwork_id"], tiny["artwork_id"]) == ("big", "tiny")
    assert tiny["skipped"].startswith("too small in the photo")
    assert big["kept_through_occlusion"] and big["lost_frames"] == 0
    assert big["corner_error_pct"] < 0.5 and report["kept_through_occlusion"] == 1
    table = CliRunner().invoke(bench_tracking_command, [
        "--photos", str(photos), "--frames", "6", "--repeats", "1"])
    assert table.exit_code == 0 and "1 of 2" in table.output, table.output
    refused = CliRunner().invoke(bench_tracking_command, ["--photos", str(tmp_path / "none")])
    assert isinstance(refused.exception, InputError)
    assert str(refused.exception).startswith("--photos: expected a folder of photos")
