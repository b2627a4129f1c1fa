"""Overlays (capture/overlay.py) and ``art2mus detect --draw``: what capture found, drawn.

The drawing is checked where it lands (pixels change along each quad and by
its label, nowhere far from them), the file write is atomic and its failures
are one error naming the file, :class:`OverlayWriter` keeps its rate and never
raises, and ``detect --draw`` writes one overlay per image on a synthetic scene.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

import capture.recognise
from capture.cli import detect_command
from capture.overlay import OverlayWriter, draw_overlay, write_image_atomic
from capture.recognise import RecognisedArtwork
from capture.synthetic.scenes import SceneGenerator, write_catalogue
from ground.errors import InputError

QUAD = np.array([[200, 150], [440, 160], [430, 300], [210, 290]], np.float32)


def _artwork(quad: np.ndarray = QUAD, artwork_id: str | None = "cat-001", primary: bool = True,
             found_by: str = "quad") -> RecognisedArtwork:
    return RecognisedArtwork(np.asarray(quad, np.float32), artwork_id, 0.87, primary, found_by)


def _wall(width: int = 640, height: int = 360) -> np.ndarray:
    return np.full((height, width, 3), 128, np.uint8)


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.any(a != b, axis=2)


def _edge_points(quad: np.ndarray, per_edge: int = 10) -> np.ndarray:
    points = [quad[k] + t * (quad[(k + 1) % 4] - quad[k])
              for k in range(4) for t in np.linspace(0.1, 0.9, per_edge)]
    return np.round(points).astype(int)


def _distance_to_outline(shape: tuple[int, int], quad: np.ndarray) -> np.ndarray:
    mask = np.full(shape, 255, np.uint8)
    cv2.polylines(mask, [np.round(quad).astype(np.int32)], True, 0, 1)
    return cv2.distanceTransform(mask, cv2.DIST_L2, 3)


def test_the_outline_is_drawn_along_the_quad_and_nowhere_far_from_it() -> None:
    wall = _wall()
    overlay = draw_overlay(wall, [_artwork()], {"cat-001": "Madonna col Bambino"})
    assert overlay.shape == wall.shape and overlay is not wall
    assert (wall == 128).all()  # drawn on a copy
    changed = _changed(overlay, wall)
    for x, y in _edge_points(QUAD):
        assert changed[y, x], (x, y)
    # Away from the outline, only the label may change, and it sits above the quad.
    far = _distance_to_outline(changed.shape, QUAD) > 12
    top = int(QUAD[:, 1].min())
    assert not changed[far & (np.arange(360)[:, None] > top)].any()
    label = changed[:top - 8]  # above the outline and its corner dot
    assert label.any()  # id, score and title are written above
    columns = np.flatnonzero(label.any(axis=0))
    assert columns.min() >= QUAD[:, 0].min() - 2  # starting at the quad's left edge


def test_primary_known_and_unknown_are_told_apart_by_colour_and_width() -> None:
    wall = _wall()
    left = QUAD - [150, 0]
    right = QUAD + [180, 0]

    def colour_and_width(artwork: RecognisedArtwork) -> tuple[tuple[int, ...], int]:
        overlay = draw_overlay(wall, [artwork])
        x = int(round((artwork.quad[0, 0] + artwork.quad[1, 0]) / 2))
        y = int(round((artwork.quad[3, 1] + artwork.quad[2, 1]) / 2))  # bottom edge
        column = _changed(overlay, wall)[y - 20:y + 20, x]
        return tuple(int(v) for v in overlay[y, x]), int(column.sum())

    known, known_width = colour_and_width(_artwork(left, "cat-001", primary=False))
    unknown, unknown_width = colour_and_width(_artwork(right, None, primary=False))
    primary, primary_width = colour_and_width(_artwork(QUAD, "cat-001", primary=True))
    assert known != unknown
    assert primary_width > known_width and known_width == unknown_width
    # the primary's outline has a band of another colour around it
    overlay = draw_overlay(wall, [_artwork(QUAD, "cat-001", primary=True)])
    x = int(QUAD[0, 0] + QUAD[1, 0]) // 2
    bottom = int(round((QUAD[3, 1] + QUAD[2, 1]) / 2))
    colours = {tuple(int(v) for v in overlay[y, x]) for y in range(bottom - 8, bottom + 9)}
    assert len(colours - {(128, 128, 128), primary}) >= 1


def test_labels_and_lines_scale_with_the_image_width() -> None:
    small, big = _wall(640, 360), _wall(1920, 1080)
    drawn_small = _changed(draw_overlay(small, [_artwork()], {"cat-001": "T"}), small).sum()
    drawn_big = _changed(draw_overlay(big, [_artwork(QUAD * 3)], {"cat-001": "T"}), big).sum()
    # 3x the width: about 9x the pixels if everything scales, about 3x if nothing thickens
    assert drawn_big > 6 * drawn_small


def test_titles_are_drawn_and_odd_characters_do_not_break_the_drawing() -> None:
    wall = _wall()
    plain = draw_overlay(wall, [_artwork()])
    titled = draw_overlay(wall, [_artwork()], {"cat-001": "Sant'Agata è ritratta — " * 4})
    assert _changed(titled, wall).sum() > _changed(plain, wall).sum()
    many = [_artwork(QUAD + [dx, 0], f"cat-{k}", primary=k == 0) for k, dx in
            enumerate((-300, 0, 300, 900))]  # one off-image, labels at the borders
    assert draw_overlay(wall, many).shape == wall.shape
    assert draw_overlay(wall[..., 0], []).shape == wall.shape  # grey frames too


def test_write_image_atomic_writes_png_and_jpeg_and_leaves_nothing_else(tmp_path: Path) -> None:
    image = draw_overlay(_wall(), [_artwork()])
    for name in ("o.png", "o.jpg", "o.JPEG"):
        path = write_image_atomic(tmp_path / name, image)
        back = cv2.imread(str(path))
        assert back is not None and back.shape == image.shape
    assert (cv2.imread(str(tmp_path / "o.png")) == image).all()  # PNG is lossless
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.JPEG", "o.jpg", "o.png"]
    with pytest.raises(InputError, match=r"cannot write image .*o\.gif: expected a file "
                                         r"ending in \.png, \.jpg or \.jpeg, got '\.gif'"):
        write_image_atomic(tmp_path / "o.gif", image)
    missing = tmp_path / "no-such-folder" / "o.png"
    with pytest.raises(InputError, match=f"cannot write image {missing}: "):
        write_image_atomic(missing, image)


def test_a_reader_never_sees_half_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "latest.png"
    old = _wall()
    write_image_atomic(target, old)
    seen: list[tuple[bool, bool]] = []
    real_replace = os.replace

    def replace(source: Any, destination: Any) -> None:
        # At the moment of the swap the new file is complete, the old one untouched.
        seen.append((cv2.imread(str(source)) is not None,
                     bool((cv2.imread(str(destination)) == old).all())))
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", replace)
    new = draw_overlay(old, [_artwork()])
    write_image_atomic(target, new)
    assert seen == [(True, True)] and (cv2.imread(str(target)) == new).all()

    def failing(source: Any, destination: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(InputError, match=f"cannot write image {target}: No space left"):
        write_image_atomic(target, old)
    assert (cv2.imread(str(target)) == new).all()  # the last good overlay stays
    assert [p.name for p in tmp_path.iterdir()] == ["latest.png"]  # no temporary left


def test_overlay_writer_keeps_its_rate(tmp_path: Path) -> None:
    writer = OverlayWriter(tmp_path / "room.jpg", every_s=1.0)
    frame, found = _wall(), [_artwork()]
    wrote = [writer.maybe_write(now, frame, found) for now in (10.0, 10.5, 10.99, 11.0, 11.7,
                                                               12.2)]
    assert wrote == [True, False, False, True, False, True]
    assert writer.written == 3 and writer.failures == 0
    assert cv2.imread(str(tmp_path / "room.jpg")) is not None
    with pytest.raises(InputError, match="every_s"):
        OverlayWriter(tmp_path / "x.png", every_s=0.0)


def test_overlay_writer_counts_failures_logs_once_and_never_raises(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "overlay"
    folder.write_text("a file where the overlay folder should be")  # a missing folder is made
    writer = OverlayWriter(folder / "room.png", every_s=0.5)
    frame, found = _wall(), [_artwork()]
    with caplog.at_level(logging.INFO, logger="capture.overlay"):
        wrote = [writer.maybe_write(t, frame, found) for t in (0.0, 0.2, 0.6, 1.2)]
        assert wrote == [False, False, False, False]
        assert writer.failures == 3 and writer.written == 0
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and str(folder / "room.png") in warnings[0].getMessage()
        folder.unlink()  # the technician fixes it: writing resumes by itself
        assert writer.maybe_write(1.8, frame, found) and writer.written == 1
        assert any("written again" in r.getMessage() for r in caplog.records)
    bad = OverlayWriter(tmp_path / "room.gif", every_s=0.5)  # a bad suffix is a failure too
    assert not bad.maybe_write(0.0, frame, found) and bad.failures == 1


def test_the_console_frame_is_written_at_its_width_with_the_quad_scaled(tmp_path: Path) -> None:
    wide = _wall(1280, 720)
    quad = QUAD * 2  # the same place on a frame twice as wide
    writer = OverlayWriter(tmp_path / "console" / "room-1.jpg", every_s=0.5, width=480,
                           jpeg_quality=80)
    assert writer.maybe_write(0.0, wide, [_artwork(quad)])
    written = cv2.imread(str(tmp_path / "console" / "room-1.jpg"))
    assert written is not None and written.shape == (270, 480, 3)
    # the outline lands where the quad is at the small size
    small = quad * 480 / 1280
    drawn = np.abs(written.astype(int) - 128).sum(axis=2) > 60
    for x, y in _edge_points(small):
        assert drawn[y - 3:y + 4, x - 3:x + 4].any(), (x, y)
    # a frame narrower than the width is not enlarged
    assert writer.maybe_write(1.0, _wall(320, 180), [_artwork(QUAD / 2)])
    narrow = cv2.imread(str(tmp_path / "console" / "room-1.jpg"))
    assert narrow is not None and narrow.shape == (180, 320, 3)
    # a lower quality makes a smaller file of the same picture
    noisy = np.random.default_rng(1).integers(0, 255, (720, 1280, 3), np.uint8)
    sizes = []
    for quality in (95, 80):
        path = tmp_path / f"q{quality}.jpg"
        OverlayWriter(path, width=480, jpeg_quality=quality).maybe_write(0.0, noisy, [])
        sizes.append(path.stat().st_size)
    assert sizes[1] < sizes[0]
    for bad in ({"width": 8}, {"jpeg_quality": 0}):
        with pytest.raises(InputError, match=next(iter(bad))):
            OverlayWriter(tmp_path / "x.jpg", **bad)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Any], Path]:
    """Two clean synthetic scenes as PNG files, their ground truth and a catalogue."""
    folder = tmp_path_factory.mktemp("draw")
    generator = SceneGenerator(catalogue_size=12, outsiders=0)
    rendered = [generator.render(2, paintings=2, clean=True),
                generator.render(5, paintings=1, clean=True)]
    for k, scene in enumerate(rendered):
        cv2.imwrite(str(folder / f"scene{k}.png"), scene.image)
    return folder, rendered, write_catalogue(folder / "catalogue", 12)


def test_detect_draw_writes_the_overlay_of_one_image(scenes: tuple, tmp_path: Path) -> None:
    folder, rendered, catalogue = scenes
    out = tmp_path / "drawn" / "scene0.png"
    result = CliRunner().invoke(detect_command, [str(folder / "scene0.png"), "--catalogue",
                                                 str(catalogue), "--draw", str(out), "--json"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    record = json.loads(result.output)
    assert record["overlay"] == str(out)
    drawn, photo = cv2.imread(str(out)), rendered[0].image
    assert drawn.shape == photo.shape
    changed = _changed(drawn, photo)
    # Every painting's outline is on the overlay, within a few px (a quad located by the
    # catalogue's features is ~0.5 % of the frame off the scene's truth, IoU ~0.96).
    near = cv2.dilate(changed.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)
    for painting in rendered[0].paintings:
        points = _edge_points(painting.quad)
        assert near[points[:, 1], points[:, 0]].mean() > 0.8
    assert changed.mean() < 0.2  # the photo is still there under the drawing


def test_detect_draw_writes_one_overlay_per_image_into_a_folder(scenes: tuple,
                                                                 tmp_path: Path) -> None:
    folder, _, catalogue = scenes
    out = tmp_path / "overlays"
    result = CliRunner().invoke(detect_command, [str(folder / "scene0.png"),
                                                 str(folder / "scene1.png"), "--catalogue",
                                                 str(catalogue), "--draw", str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert sorted(p.name for p in out.iterdir()) == ["scene0-overlay.png", "scene1-overlay.png"]
    assert f"overlay: {out / 'scene1-overlay.png'}" in result.output
    assert "(quad)" in result.output or "(catalogue)" in result.output


def test_detect_draw_refuses_a_bad_target_before_any_work(
        scenes: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, _, _ = scenes

    def detect(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("detected before --draw was checked")

    monkeypatch.setattr(capture.recognise, "detect_and_recognise", detect)
    one, two = str(folder / "scene0.png"), str(folder / "scene1.png")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for images, target, words in (
            ([one], tmp_path / "out.gif", "expected a file ending in .png, .jpg or .jpeg"),
            ([one], tmp_path / "out", "expected a file ending in"),
            ([one], tmp_path, "it is a folder"),
            ([one], blocker / "out.png", "is a file, not a folder"),
            ([one, two], tmp_path / "out.png", "expected a folder for 2 images"),
            ([one, two], blocker, "is a file, not a folder"),
            ([one, one.replace("scene0", "sub/scene0")], tmp_path / "o", "same file name stem")):
        result = CliRunner().invoke(detect_command, [*images, "--draw", str(target)])
        assert isinstance(result.exception, InputError), (target, result.output)
        message = str(result.exception)
        assert message.startswith("cannot write --draw ") and words in message, message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]
