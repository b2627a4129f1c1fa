"""``art2mus bench tracking``: following a located painting through a moving camera's video.

Where it sits: the measure of :class:`capture.tracking.QuadTracker`, which
the capture loop runs on every frame between two recognitions. Like
:mod:`capture.bench` it runs on one core (``cv2.setNumThreads(1)``).

The video (:func:`render_tracking_video`, deterministic in its seed): one
painting of a :class:`capture.synthetic.scenes.SceneGenerator` scene, rendered
on a wall larger than the frame, seen at 1280x720 through a slowly moving
camera: a homography that pans (up to ~4 px per frame), zooms (+-10 %),
rolls (+-3 degrees) and tilts a little, with sensor noise on every frame and
blur on some. In the middle, for ``occlusion_frames`` frames, a visitor (a
textured silhouette, walking slowly) hides about 40 % of the picture. Every
frame knows the picture's true quad.

Metrics: the tracker starts on frame 0 with the true quad (location is
measured by ``bench capture``; this is tracking alone), then

- ``fps`` (and ``ms_per_update`` median / 95th percentile): updates per
  second at 1280x720, the median over ``repeats`` passes after a warm-up
  pass;
- ``corner_error_pct``: mean (and max) distance between tracked and true
  corners over the frames tracked, in percent of the frame diagonal;
- ``occlusion.kept_frames``: occluded frames on which the quad was still
  within ``KEPT_ERROR_PCT`` of the truth; ``occlusion.kept`` whether it was on
  all of them and on the frame after;
- ``lost_frames``: frames on which the tracker said ``"lost"``;
  ``held_frames``: frames on which it kept the previous quad.

``--photos DIR`` (:func:`run_tracking_photos`) films, the same way, each
painting of real photos with a ``truth.json`` (the photo is the wall; no
parallax or change of light, but real paint, frames and walls to track).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import numpy as np

from ground.cli_report import ProgressUpdate
from ground.cli_types import SEED
from ground.errors import InputError

FRAME_SIZE = (1280, 720)
KEPT_ERROR_PCT = 2.0  # a quad this close to the truth (% of the diagonal) still marks the work
_WALL_SIZE = (1800, 1100)  # the wall is larger than the view, so panning never shows its edge
_PICTURE_DIAGONAL = 0.45  # of the frame diagonal, at the start
_MAX_PHOTO_ZOOM = 1.5  # a real photo enlarged more than this has no detail left to track


@dataclass(frozen=True)
class TrackingVideo:
    """Frames (uint8 grey, HxW) and, per frame, the picture's true quad and visitor cover."""

    frames: list[np.ndarray]
    truths: list[np.ndarray]  # float32 (4, 2), TL, TR, BR, BL, frame px
    covered: list[float]  # fraction of the picture hidden by the visitor


def render_tracking_video(frames: int, seed: int = 0, size: tuple[int, int] = FRAME_SIZE,
                          occlusion_frames: int = 10, occlusion_cover: float = 0.4,
                          noise: float = 3.0,
                          wall: tuple[np.ndarray, np.ndarray] | None = None) -> TrackingVideo:
    """The synthetic video described in the module docstring (``frames`` frames at ``size``;
    ``noise``: the sensor noise's standard deviation, grey levels). ``wall``: a real photo
    (BGR) and the quad of the painting in it to film instead of a synthetic wall (the
    camera moves over the photo; beyond its edges the photo is mirrored)."""
    import cv2

    from capture.synthetic.scenes import SceneGenerator

    width, height = size
    rng = np.random.default_rng([seed, 0x7AC])
    if wall is None:
        scene = SceneGenerator(size=_WALL_SIZE).render(seed, paintings=1, clean=True,
                                                       yaw_deg=float(rng.uniform(-15, 15)))
        image, picture = scene.image, scene.paintings[0].quad.astype(np.float64)
    else:
        image, picture = wall[0], np.asarray(wall[1], np.float64).reshape(4, 2)
    wall_image = image
    centre = picture.mean(axis=0)
    diagonal = float(np.hypot(*np.ptp(picture, axis=0)))
    base_zoom = _PICTURE_DIAGONAL * math.hypot(width, height) / diagonal
    if base_zoom < 1.0:  # the view shrinks the wall: low-pass it first, or its texture aliases
        sigma = 0.5 * math.sqrt(1.0 / (0.9 * base_zoom) ** 2 - 1.0)
        wall_image = cv2.GaussianBlur(wall_image, (0, 0), sigma)
    phases = rng.uniform(0, 2 * math.pi, 5)
    start, stop = _occlusion_span(frames, occlusion_frames)
    coat = cv2.GaussianBlur(rng.uniform(0, 255, (height, width)).astype(np.float32), (0, 0), 3)
    coat = (coat - coat.mean()) * 4.0  # a fabric-like texture the visitor carries along
    out = TrackingVideo([], [], [])
    for t in range(frames):
        # A slow hand-held drift: a few px per frame, smooth, never the same twice.
        angle = 2 * math.pi * t / 150.0
        pan = np.array([70 * math.sin(angle + phases[0]), 40 * math.sin(1.3 * angle + phases[1])])
        zoom = base_zoom * (1 + 0.1 * math.sin(0.8 * angle + phases[2]))
        roll = math.radians(3 * math.sin(0.7 * angle + phases[3]))
        tilt = 2e-5 * math.sin(angle + phases[4])
        to_view = _camera(centre + pan, zoom, roll, tilt, size)
        view = cv2.warpPerspective(wall_image, to_view, size, flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_REFLECT)
        truth = cv2.perspectiveTransform(picture[None], to_view)[0].astype(np.float32)
        grey: np.ndarray = cv2.cvtColor(view, cv2.COLOR_BGR2GRAY).astype(np.float32)
        cover = 0.0
        if start <= t < stop:
            person = _visitor(truth, (height, width), occlusion_cover, (t - start) * 3.0)
            cover = _covered(person, truth)
            soft = cv2.GaussianBlur(person.astype(np.float32) / 255.0, (0, 0), 1.5)
            shift = np.array([[1, 0, (t - start) * 3.0], [0, 1, 0]], np.float32)
            fabric = 40.0 + cv2.warpAffine(coat, shift, size, borderMode=cv2.BORDER_REFLECT)
            grey = grey * (1 - soft) + fabric * soft
        if t % 7 == 3:  # some frames are soft (focus hunting, a quicker move)
            grey = cv2.GaussianBlur(grey, (0, 0), 1.2)
        grey += rng.standard_normal(grey.shape, dtype=np.float32) * np.float32(noise)
        out.frames.append(np.clip(grey, 0, 255).astype(np.uint8))
        out.truths.append(truth)
        out.covered.append(cover)
    return out


def run_tracking_bench(frames: int = 120, seed: int = 0, repeats: int = 3,
                       max_lost_frames: int = 15, video: TrackingVideo | None = None,
                       ) -> dict[str, Any]:
    """Run the benchmark (see the module docstring) and return its JSON-ready result."""
    import cv2

    from capture.tracking import QuadTracker

    if frames < 3:
        raise InputError(f"--frames: expected at least 3, got {frames}")
    if repeats < 1:
        raise InputError(f"--repeats: expected at least 1, got {repeats}")
    video = video or render_tracking_video(frames, seed)
    height, width = video.frames[0].shape
    diagonal = math.hypot(width, height)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        tracker = QuadTracker(max_lost_frames=max_lost_frames)
        tracker.start(video.frames[0], video.truths[0])  # warm-up: caches, code paths
        for grey in video.frames[1:11]:
            tracker.update(grey)
        passes, timings = [], []
        for _ in range(repeats):
            tracker.start(video.frames[0], video.truths[0])
            results, took = [], []
            for grey in video.frames[1:]:
                began = time.perf_counter()
                results.append(tracker.update(grey))
                took.append(time.perf_counter() - began)
            passes.append(len(took) / sum(took))
            timings.extend(took)
    finally:
        cv2.setNumThreads(threads)

    errors: list[float] = []
    kept = 0
    for k, result in enumerate(results, start=1):
        error = math.inf if result.quad is None else float(
            np.linalg.norm(result.quad - video.truths[k], axis=1).mean() / diagonal * 100)
        if result.quad is not None:
            errors.append(error)
        if video.covered[k] > 0 and error <= KEPT_ERROR_PCT:
            kept += 1
    occluded = [k for k, c in enumerate(video.covered) if c > 0]
    after = occluded[-1] + 1 if occluded else None
    kept_after = after is None or after >= len(video.frames) or (
        results[after - 1].quad is not None
        and float(np.linalg.norm(results[after - 1].quad - video.truths[after], axis=1).mean()
                  / diagonal * 100) <= KEPT_ERROR_PCT)
    milliseconds = np.array(timings) * 1000.0
    return {
        "frames": len(video.frames), "size": [width, height], "seed": seed, "repeats": repeats,
        "threads": 1,
        "fps": round(float(np.median(passes)), 1),
        "ms_per_update": {"p50": round(float(np.percentile(milliseconds, 50)), 2),
                          "p95": round(float(np.percentile(milliseconds, 95)), 2)},
        "corner_error_pct": round(float(np.mean(errors)), 3) if errors else None,
        "corner_error_max_pct": round(float(np.max(errors)), 3) if errors else None,
        "occlusion": {"frames": len(occluded),
                      "covered_pct": round(float(np.mean([video.covered[k] for k in occluded]))
                                           * 100, 1) if occluded else 0.0,
                      "kept_frames": kept,
                      "kept": bool(kept == len(occluded) and kept_after)},
        "lost_frames": sum(r.status == "lost" for r in results),
        "held_frames": sum(r.status == "tracking" and r.held_frames > 0 for r in results),
    }


def run_tracking_photos(photos: Path, frames: int = 120, seed: int = 0, repeats: int = 3,
                        progress: ProgressUpdate | None = None) -> dict[str, Any]:
    """``bench tracking --photos DIR``: each painting wholly in view in the real photos of
    ``DIR/truth.json`` (:func:`capture.bench.read_truth`) filmed by the same moving camera
    as the synthetic video (the photo is the wall, a visitor walks past), tracked from its
    true quad; per work and over all of them, the figures of :func:`run_tracking_bench`.

    A painting the camera would enlarge more than ``_MAX_PHOTO_ZOOM`` times to show
    it as large as the synthetic one is left out (listed, with why): the enlarged
    photo has no detail a camera that close would see. ``progress("works", done,
    total)`` after each work when given.
    """
    from capture.bench import TRUTH_FILE, read_photo_set

    loaded = read_photo_set(photos, None, "--photos")
    total = sum(len(t.paintings) for t, _ in loaded)
    if not total:
        raise InputError(f"{photos / TRUTH_FILE}: expected at least one painting wholly in "
                         f"view, got none")
    rows: list[dict[str, Any]] = []
    view_diagonal = math.hypot(*FRAME_SIZE)
    for g, (truth, image) in enumerate(loaded):
        for k, work in enumerate(truth.paintings):
            row: dict[str, Any] = {"photo": truth.name, "artwork_id": work.artwork_id}
            zoom = _PICTURE_DIAGONAL * view_diagonal / float(np.hypot(*np.ptp(work.quad,
                                                                               axis=0)))
            if zoom > _MAX_PHOTO_ZOOM:
                row["skipped"] = f"too small in the photo (would be enlarged {zoom:.1f}x)"
            else:
                video = render_tracking_video(frames, seed + 1000 * g + k,
                                              wall=(image, work.quad))
                result = run_tracking_bench(frames, seed, repeats, video=video)
                row.update({key: result[key] for key in (
                    "fps", "corner_error_pct", "corner_error_max_pct", "lost_frames",
                    "held_frames")})
                row["kept_through_occlusion"] = result["occlusion"]["kept"]
                row["covered_pct"] = result["occlusion"]["covered_pct"]
            rows.append(row)
            if progress is not None:
                progress("works", len(rows), total)
    tracked = [r for r in rows if "skipped" not in r]
    errors = [r["corner_error_pct"] for r in tracked if r["corner_error_pct"] is not None]
    return {
        "benchmark": "tracking-photos", "photos": str(photos), "frames": frames,
        "size": list(FRAME_SIZE), "seed": seed, "repeats": repeats, "threads": 1,
        "works": len(rows), "tracked": len(tracked),
        "fps_median": round(float(np.median([r["fps"] for r in tracked])), 1)
        if tracked else None,
        "corner_error_pct": round(float(np.mean(errors)), 3) if errors else None,
        "corner_error_max_pct": round(float(np.max([r["corner_error_max_pct"]
                                                     for r in tracked
                                                     if r["corner_error_max_pct"] is not None]
                                                    or [math.nan])), 3) if errors else None,
        "kept_through_occlusion": sum(bool(r["kept_through_occlusion"]) for r in tracked),
        "lost_frames": sum(r["lost_frames"] for r in tracked),
        "per_work": rows,
    }


@click.command("tracking")
@click.option("--photos", type=click.Path(path_type=Path), default=None,
              help="Film the paintings of real photos with truth.json instead of a "
                   "synthetic wall (the photo is the wall).")
@click.option("--frames", type=click.IntRange(3, 100_000), default=120, show_default=True,
              help="Frames in each video.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--repeats", type=click.IntRange(1, 100), default=3, show_default=True,
              help="Timed passes over the video (the median is reported).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def bench_tracking_command(photos: Path | None, frames: int, seed: int, repeats: int,
                           as_json: bool) -> None:
    """Quad tracking through a moving camera's video: fps at 1280x720, corner error,
    occlusion; of a synthetic wall, or of the paintings in real photos (--photos DIR)."""
    if photos is not None:
        from ground.cli_report import progress_bar

        with progress_bar(unit="works") as progress:
            found = run_tracking_photos(photos, frames, seed, repeats, progress)
        if as_json:
            click.echo(json.dumps(found, indent=2))
        else:
            _print_tracking_photos(found)
        return
    result = run_tracking_bench(frames, seed, repeats)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    occlusion = result["occlusion"]
    table = Table(title=f"Quad tracking, {result['frames']} frames at "
                        f"{result['size'][0]}x{result['size'][1]}, one core")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("tracking fps (median of repeats)", f"{result['fps']:.1f}")
    table.add_row("ms per update, p50 / p95",
                  f"{result['ms_per_update']['p50']:.2f} / {result['ms_per_update']['p95']:.2f}")
    table.add_row("corner error, mean / max (% of diagonal)",
                  f"{result['corner_error_pct']} / {result['corner_error_max_pct']}")
    table.add_row("occluded frames (picture covered)",
                  f"{occlusion['frames']} ({occlusion['covered_pct']:.0f} %)")
    table.add_row("work kept through the occlusion",
                  f"{occlusion['kept_frames']}/{occlusion['frames']} frames, "
                  f"{'yes' if occlusion['kept'] else 'no'}")
    table.add_row("frames held / lost", f"{result['held_frames']} / {result['lost_frames']}")
    Console().print(table)


def _print_tracking_photos(result: dict[str, Any]) -> None:
    """:func:`run_tracking_photos`' result as a table: one row per work, then all of them."""
    from rich.console import Console
    from rich.table import Table

    from capture.bench import _shown

    table = Table(title=f"Quad tracking of the paintings in {result['photos']}: "
                        f"{result['frames']} frames each at "
                        f"{result['size'][0]}x{result['size'][1]}, one core")
    for column in ("photo", "work", "fps", "corner error % mean / max",
                   "kept past the visitor", "lost frames"):
        table.add_column(column, justify="left" if column in ("photo", "work") else "right")
    for row in result["per_work"]:
        if "skipped" in row:
            table.add_row(row["photo"], row["artwork_id"], "-", row["skipped"], "-", "-")
            continue
        table.add_row(row["photo"], row["artwork_id"], f"{row['fps']:.1f}",
                      f"{row['corner_error_pct']} / {row['corner_error_max_pct']}",
                      f"{'yes' if row['kept_through_occlusion'] else 'no'} "
                      f"({row['covered_pct']:.0f} % hidden)", str(row["lost_frames"]))
    table.add_row("all", f"{result['tracked']} of {result['works']}",
                  _shown(result["fps_median"]),
                  f"{_shown(result['corner_error_pct'])} / "
                  f"{_shown(result['corner_error_max_pct'])}",
                  f"{result['kept_through_occlusion']} of {result['tracked']}",
                  str(result["lost_frames"]))
    Console().print(table)


def _occlusion_span(frames: int, length: int) -> tuple[int, int]:
    """First and past-last occluded frame: ``length`` frames in the middle, shorter for a short
    video (never the first frame, where tracking starts, nor the last)."""
    length = max(0, min(length, (frames - 2) // 3))
    start = (frames - length) // 2
    return start, start + length


def _camera(looked_at: np.ndarray, zoom: float, roll: float, tilt: float,
            size: tuple[int, int]) -> np.ndarray:
    """Wall -> view homography: ``looked_at`` to the view's centre, scaled, rolled, with a
    small projective ``tilt`` (keystone) about the centre."""
    width, height = size
    cos, sin = math.cos(roll) * zoom, math.sin(roll) * zoom
    to_centre = np.array([[1, 0, -looked_at[0]], [0, 1, -looked_at[1]], [0, 0, 1]])
    similarity = np.array([[cos, -sin, 0], [sin, cos, 0], [0, 0, 1]])
    keystone = np.array([[1, 0, 0], [0, 1, 0], [tilt, 0.5 * tilt, 1]])
    to_view = np.array([[1, 0, width / 2], [0, 1, height / 2], [0, 0, 1]])
    return to_view @ keystone @ similarity @ to_centre


def _visitor(picture: np.ndarray, shape: tuple[int, int], cover: float,
             walked: float) -> np.ndarray:
    """A silhouette mask (head, shoulders, body down to the frame's bottom) in front of the
    picture's left side, hiding about ``cover`` of it, ``walked`` px to the right."""
    import cv2

    height = shape[0]
    left, top = picture[:, 0].min(), picture[:, 1].min()
    picture_w, picture_h = np.ptp(picture[:, 0]), np.ptp(picture[:, 1])
    body_top = top + 0.15 * picture_h
    body_w = cover * picture_w / 0.85  # the body covers the picture below its top 15 %
    x0 = left + 0.05 * picture_w + walked
    mask = np.zeros(shape, np.uint8)
    cv2.rectangle(mask, (int(x0), int(body_top)), (int(x0 + body_w), height), 255, -1)
    head = int(body_w * 0.22)
    cv2.circle(mask, (int(x0 + body_w / 2), int(body_top - 0.8 * head)), head, 255, -1,
               cv2.LINE_AA)
    return mask


def _covered(mask: np.ndarray, quad: np.ndarray) -> float:
    import cv2

    picture = np.zeros(mask.shape, np.uint8)
    cv2.fillConvexPoly(picture, np.round(quad).astype(np.int32), 255)
    area = int(np.count_nonzero(picture))
    return float(np.count_nonzero(picture & mask)) / area if area else 0.0
