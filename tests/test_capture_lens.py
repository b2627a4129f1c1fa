"""A camera's lens: calibrated from a chessboard's views, taken out of frames, refused when
wrong (capture/lens.py, capture/calibrate_cli.py, the capture loop's and detect's use)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest
from click.testing import CliRunner, Result
from pydantic import ValidationError

from capture.calibrate_cli import read_lens_file
from capture.config import CaptureConfig, LensConfig
from capture.detect import quad_iou
from capture.frames import Frame
from capture.lens import MIN_VIEWS, Calibration, Lens, calibrate
from capture.loop import CaptureLoop
from capture.recognise import detect_and_recognise
from capture.synthetic.artworks import make_artwork
from capture.synthetic.chessboard import board_views
from capture.synthetic.rooms import Fisheye
from ground.errors import InputError
from installation.cli import cli

BOARD = (9, 6)
SIZE = (960, 540)  # calibrated here; used at 1280x720 too (the same aspect)
STRENGTH = 0.3  # capture.degrade's action camera


def _views(size: tuple[int, int] = SIZE, count: int = 12, strength: float = STRENGTH,
           seed: int = 3) -> list[tuple[str, np.ndarray]]:
    lens = Fisheye(strength, size)
    return list(board_views(size, BOARD, count, seed, lens=lens.apply))


@pytest.fixture(scope="module")
def wide() -> Calibration:
    """The action camera's lens, measured from a dozen views of the board."""
    return calibrate(_views(), BOARD)


def _bow(lens: Lens, bent: Fisheye, size: tuple[int, int]) -> float:
    """How far straight lines of the scene, taken through ``bent`` and undistorted by
    ``lens``, stray from straight at most, px (rows and columns across the frame's middle
    two thirds, where a board's views reach)."""
    width, height = size
    worst = 0.0
    for y in np.linspace(height / 6, 5 * height / 6, 5):
        for line in (np.c_[np.linspace(width / 6, 5 * width / 6, 40), np.full(40, y)],
                     np.c_[np.full(40, y * width / height), np.linspace(height / 6,
                                                                      5 * height / 6, 40)]):
            back = lens.from_camera(bent.distort_points(line), size)
            centred = back - back.mean(axis=0)
            normal = np.linalg.svd(centred)[2][1]
            worst = max(worst, float(np.abs(centred @ normal).max()))
    return worst


def test_an_action_cameras_lens_is_measured_and_its_bow_taken_out(wide: Calibration) -> None:
    # auto: the better of the standard and fisheye models (on some views the standard one
    # does not converge: 1.45 px against 0.13 px)
    assert wide.lens.model in ("standard", "fisheye")
    # (a small board in a corner of the frame, bent most there, is not always found)
    assert wide.rms_px < 0.5 and wide.found >= 9 and len(wide.views) == wide.found
    lens = Lens(wide.lens)
    bent = Fisheye(STRENGTH, SIZE)
    # the bow is ~30 px across the frame before; a pixel or two after
    straight = Lens(LensConfig(model="standard", width=SIZE[0], height=SIZE[1],
                               focal=(SIZE[0], SIZE[0]), centre=(SIZE[0] / 2, SIZE[1] / 2),
                               distortion=(0.0,) * 5))
    assert _bow(straight, bent, SIZE) > 10.0
    assert _bow(lens, bent, SIZE) < 1.5
    # ...and at 1280x720, the same lens scaled
    assert _bow(lens, Fisheye(STRENGTH, (1280, 720)), (1280, 720)) < 2.0


def test_points_go_to_the_camera_and_back(wide: Calibration) -> None:
    lens = Lens(wide.lens)
    for size in (SIZE, (1280, 720)):
        points = np.array([[10.0, 10.0], [size[0] / 2, size[1] / 2], [size[0] - 20, 30],
                           [200.0, size[1] - 15]])
        there = lens.to_camera(points, size)
        assert np.abs(lens.from_camera(there, size) - points).max() < 0.01


def test_a_mild_lens_fits_too_and_nothing_is_lost_to_it() -> None:
    mild = calibrate(_views(strength=0.04, seed=5), BOARD)
    assert mild.rms_px < 0.5
    assert _bow(Lens(mild.lens), Fisheye(0.04, SIZE), SIZE) < 1.0


def test_views_of_a_large_frame_are_searched_smaller_and_refined_on_the_whole() -> None:
    # 1920x1080: the board is found at 1280 px and its corners refined at full size
    size = (1920, 1080)
    found = calibrate(_views(size=size, count=8, seed=6), BOARD)
    assert found.rms_px < 0.3
    assert _bow(Lens(found.lens), Fisheye(STRENGTH, size), size) < 2.0


def test_a_board_kept_to_the_middle_of_the_frame_is_reported() -> None:
    from capture.lens import WELL_COVERED, _coverage

    def board_at(x0: float, y0: float, side: float) -> np.ndarray:  # 9x6 inner corners
        xs, ys = np.meshgrid(np.linspace(x0, x0 + side, 9), np.linspace(y0, y0 + side * 0.6, 6))
        return np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32)

    middle, missed = _coverage([board_at(400, 250, 160)], (9, 6), (960, 540))
    assert middle < WELL_COVERED and missed == ["top left", "top right", "bottom right",
                                                "bottom left"]
    everywhere = [board_at(x, y, 420) for x in (10, 530) for y in (10, 280)]
    covered, missed = _coverage(everywhere, (9, 6), (960, 540))
    assert covered > WELL_COVERED and missed == []


def test_frames_of_another_aspect_are_refused_by_the_lens(wide: Calibration) -> None:
    lens = Lens(wide.lens)
    assert lens.fits((1280, 720)) and lens.fits((1920, 1080)) and not lens.fits((640, 480))
    with pytest.raises(InputError, match=r"capture.lens: measured at 960x540.*640x480"):
        lens.undistort(np.zeros((480, 640, 3), np.uint8))


def test_calibration_refuses_too_few_views_and_mixed_sizes() -> None:
    views = _views(count=MIN_VIEWS - 1)
    with pytest.raises(InputError, match=rf"found in {MIN_VIEWS - 1} of {MIN_VIEWS - 1} views; "
                                         rf"at least {MIN_VIEWS}"):
        calibrate(views, BOARD)
    blank = [(f"wall-{k}", np.full((540, 960, 3), 128, np.uint8)) for k in range(8)]
    with pytest.raises(InputError, match="found in 0 of 8 views"):
        calibrate(blank, BOARD)
    mixed = [*views, ("small.png", np.zeros((360, 640, 3), np.uint8))]
    with pytest.raises(InputError, match=r"small.png: 640x360, not the 960x540 of board-00"):
        calibrate(mixed, BOARD)
    with pytest.raises(InputError, match="model: expected auto or one of"):
        calibrate(views, BOARD, model="pinhole")


@pytest.mark.parametrize(("field", "value", "message"), [
    ("distortion", (0.1, 0.2, 0.0), "model 'standard' takes 5 coefficients, got 3"),
    ("distortion", (float("nan"), 0.0, 0.0, 0.0, 0.0), "finite"),
    ("focal", (float("inf"), 900.0), "finite"),
    ("centre", (2000.0, 300.0), "centre: expected a point inside the 960x540 frame"),
    ("focal", (5.0, 5.0), "focal: expected fx, fy between width/8 and 20 widths"),
    ("keep", 1.5, "less than or equal to 1"),
    ("width", 0, "greater than or equal to 16"),
    # typed by hand: -999 for -0.999 folded the frame (none of it black, its middle
    # mirrored at the edges); 999 made it a black frame round a sliver of the scene
    ("distortion", (-999.0, 999.0, 0.0, 0.0, 999.0), r"distortion: expected a lens that maps "
     r"the frame one to one, got \[-999.0, 999.0, 0.0, 0.0, 999.0\]: the image folds over "
     r"itself inside the frame"),
    ("distortion", (0.0, 0.0, 0.5, 0.0, 0.0), r"tangential p1, p2 over 0.1"),
    ("distortion", (100.0, 0.0, 0.0, 0.0, 0.0), r"it magnifies the frame's edge 2.\d+ times"),
])
def test_a_lens_config_out_of_range_is_refused(field: str, value: Any, message: str) -> None:
    good: dict[str, Any] = {"model": "standard", "width": 960, "height": 540,
                            "focal": (800.0, 800.0), "centre": (480.0, 270.0),
                            "distortion": (-0.2, 0.05, 0.0, 0.0, 0.0)}
    LensConfig(**good)
    with pytest.raises(ValidationError, match=message):
        LensConfig(**good | {field: value})


@pytest.mark.parametrize(("model", "distortion"), [
    ("standard", (-0.35, 0.12, 0.001, -0.0005, -0.02)),  # an action camera's barrel
    ("standard", (0.08, 0.01, 0.0, 0.0, 0.0)),  # a tele lens's slight pincushion
    ("rational", (-0.3, 0.1, 0.0, 0.0, -0.01, 0.05, 0.0, 0.0)),
    ("fisheye", (0.05, -0.02, 0.01, -0.003)),
])
def test_real_lenses_pass_the_one_to_one_test(model: str, distortion: tuple[float, ...]) -> None:
    # (and every lens `calibrate` fits in this file passes it on its way to a LensConfig)
    LensConfig(model=model, width=1920, height=1080, focal=(900.0, 900.0),
               centre=(960.0, 540.0), distortion=distortion)


def _cli(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def test_calibrate_writes_the_section_a_room_and_the_commands_read(tmp_path: Path) -> None:
    boards = tmp_path / "boards"
    boards.mkdir()
    for name, image in _views(count=8, seed=7):
        cv2.imwrite(str(boards / f"{name}.png"), image)
    out = tmp_path / "lens.toml"
    result = _cli("calibrate", str(boards), "--board", "9x6", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert ", 960x540, reprojection error" in result.output
    assert "the whole board in 8 of 8" in result.output
    assert "the board covered " in result.output and "% of the frame" in result.output
    assert "[capture.lens]" in result.output and f"written to {out}" in result.output
    lens = read_lens_file(out)
    assert (lens.width, lens.height) == SIZE
    assert lens.rms_px is not None and lens.rms_px < 0.5
    # the same section, in a room's config, is the room's lens
    assert CaptureConfig.model_validate({"lens": lens.model_dump()}).lens == lens


def test_calibrate_reads_a_video_of_the_board(tmp_path: Path) -> None:
    video = tmp_path / "board.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, SIZE)
    assert writer.isOpened()
    for _, image in _views(count=8, seed=9):
        for _ in range(3):  # a board held still for a moment, as a hand does
            writer.write(image)
    writer.release()
    result = _cli("calibrate", str(video), "--board", "9x6", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["looked_at"] == 24 and summary["found"] >= 16


@pytest.mark.parametrize(("args", "message"), [
    (["--board", "9by6"], "expected COLSxROWS inner corners"),
    (["--board", "9x6", "--out", "lens.json"], "--out lens.json: expected a .toml file"),
    (["--board", "9x6", "--out", "nowhere/lens.toml"], "no folder nowhere to write it in"),
    (["--board", "9x6", "--keep", "2"], "--keep"),
])
def test_calibrate_refuses_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    image = tmp_path / "board.png"
    cv2.imwrite(str(image), np.zeros((540, 960, 3), np.uint8))
    result = _cli("calibrate", str(image), *args)
    assert result.exit_code != 0 and message in result.output


def test_calibrate_names_an_unreadable_view(tmp_path: Path) -> None:
    broken = tmp_path / "board.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not a whole jpeg")
    result = _cli("calibrate", str(broken), "--board", "9x6")
    assert result.exit_code != 0 and f"cannot read image {broken}" in result.output


@pytest.mark.parametrize(("text", "message"), [
    (None, "no such file"),
    ("[capture]\nfps = 10\n", "expected a [capture.lens] section"),
    ("[capture.lens\n", "not TOML"),
    ('[capture.lens]\nmodel = "fisheye"\nwidth = 960\nheight = 540\nfocal = [800, 800]\n'
     'centre = [480, 270]\ndistortion = [0.1, 0.0]\n',
     "capture.lens: Value error, distortion: model 'fisheye' takes 4 coefficients, got 2"),
    ('[capture.lens]\nmodel = "standard"\nwidth = 960\nheight = 540\nfocal = [800, nan]\n'
     'centre = [480, 270]\ndistortion = [0, 0, 0, 0, 0]\n', "capture.lens.focal.1"),
])
def test_a_bad_lens_file_is_refused_naming_file_and_field(tmp_path: Path, text: str | None,
                                                          message: str) -> None:
    path = tmp_path / "lens.toml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(InputError, match=None) as caught:
        read_lens_file(path)
    assert str(caught.value).startswith(f"--lens {path}: ") and message in str(caught.value)


def _bent_wall(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, Fisheye]:
    """A wall with a painting off to one side, as the action camera takes it, and the
    painting's corners in that frame."""
    width, height = size
    wall = np.full((height, width, 3), (178, 186, 190), np.uint8)
    left, top, side = int(0.5 * width), int(0.15 * height), int(0.3 * width)
    tall = int(0.6 * side)
    wall[top:top + tall, left:left + side] = make_artwork(2, 0, (side, tall))
    corners = np.array([[left, top], [left + side, top], [left + side, top + tall],
                        [left, top + tall]], np.float64)
    lens = Fisheye(STRENGTH, size)
    return lens.apply(wall), lens.distort_points(corners), lens


def test_detect_through_the_lens_gives_corners_in_the_frame_as_taken(
        wide: Calibration) -> None:
    frame, corners, _ = _bent_wall((1280, 720))
    found = detect_and_recognise(frame, None, lens=Lens(wide.lens))
    best = max(found, key=lambda a: quad_iou(a.quad, corners.astype(np.float32)))
    assert quad_iou(best.quad, corners.astype(np.float32)) > 0.9
    assert np.abs(best.quad - corners).max() < 8.0


class _Still:
    def __init__(self, image: np.ndarray) -> None:
        self.image, self.reads, self.t = image, 0, 1000.0

    def read(self) -> Frame:
        self.reads += 1
        self.t += 1 / 15
        return Frame(self.image, self.t, self.reads)

    def close(self) -> None:
        pass


def _room(image: np.ndarray, lens: LensConfig | None) -> tuple[CaptureLoop, list[Any],
                                                                  list[tuple[str, dict]]]:
    source = _Still(image)
    views: list[Any] = []
    events: list[tuple[str, dict]] = []
    loop = CaptureLoop("room-a", CaptureConfig(lens=lens), views.append,
                       lambda kind, **fields: events.append((kind, fields)), source=source,
                       clock=lambda: source.t)
    for _ in range(30):
        loop.step()
    return loop, views, events


def test_the_capture_loop_works_on_frames_with_the_lens_taken_out(wide: Calibration) -> None:
    frame, corners, _ = _bent_wall((1280, 720))
    lens = Lens(wide.lens)
    loop, views, events = _room(frame, wide.lens)
    assert views and views[-1].state == "artwork"
    assert loop.lens_state == f"{wide.lens.model}, measured at 960x540"  # the console's line
    published = np.array(views[-1].quad, np.float32)
    # in the undistorted frame, where the console's picture shows it
    straight = lens.from_camera(corners, (1280, 720)).astype(np.float32)
    assert quad_iou(published, straight) > 0.9
    assert not [kind for kind, _ in events if kind == "lens_mismatch"]


def test_a_lens_that_does_not_fit_the_frames_is_said_once_and_frames_go_on(
        wide: Calibration) -> None:
    frame, _, _ = _bent_wall((960, 720))  # 4:3, the lens was measured at 16:9
    loop, views, events = _room(frame, wide.lens)
    mismatches = [fields for kind, fields in events if kind == "lens_mismatch"]
    assert len(mismatches) == 1 and mismatches[0]["frame"] == "960x720"
    assert views and views[-1].state == "artwork"
    assert loop.lens_state == "not used: 960x720 frames, measured at 960x540"
    # the camera reopened at the size it was calibrated at: the lens is taken out again
    source = loop.source
    assert isinstance(source, _Still)
    source.image = _bent_wall((1280, 720))[0]
    for _ in range(20):
        loop.step()
    assert loop.lens_state == f"{wide.lens.model}, measured at 960x540"
    assert len([kind for kind, _ in events if kind == "lens_mismatch"]) == 1
    changed = [fields for kind, fields in events if kind == "frame_size_changed"]
    assert changed == [{"was": "960x720", "now": "1280x720"}]  # let go, not a failed frame
    assert views[-1].state == "artwork"


class _BoardCamera:
    """A live camera the board is waved before: each read, the next view (and round)."""

    def __init__(self, views: list[tuple[str, np.ndarray]]) -> None:
        self.views, self.reads, self.closed = views, 0, False

    def read(self) -> Frame:
        image = self.views[self.reads % len(self.views)][1]
        self.reads += 1
        return Frame(image, float(self.reads), self.reads)

    def close(self) -> None:
        self.closed = True


def test_calibrate_watches_a_live_camera_and_says_what_counts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import capture.calibrate_cli
    import capture.sources

    camera = _BoardCamera([*_views(count=8, seed=11), ("wall", np.full((540, 960, 3), 128,
                                                                       np.uint8))])
    opened: list[str] = []

    def open_source(config: CaptureConfig, *args: Any) -> _BoardCamera:
        opened.append(config.source)
        return camera

    monkeypatch.setattr(capture.sources, "open_source", open_source)
    # the camera's clock: 0.2 s a frame, so the 2 s watched are 10 frames however busy the
    # machine is (on the wall clock a loaded CI machine looked at 3 and the test failed)
    monkeypatch.setattr(capture.calibrate_cli, "time", SimpleNamespace(
        monotonic=lambda: camera.reads * 0.2, sleep=lambda seconds: None))
    result = CliRunner().invoke(cli, ["calibrate", "camera:0", "--board", "9x6",
                                      "--seconds", "2"])
    assert result.exit_code == 0, result.output
    assert opened == ["camera:0"] and camera.closed
    assert "board in view 1 (1 found so far)" in result.stderr
    assert "no board in view" in result.stderr  # the bare wall between the board's views
    assert ", 960x540, reprojection error" in result.stdout


def test_calibrate_names_a_camera_that_does_not_open() -> None:
    result = CliRunner().invoke(cli, ["calibrate", "camera:/dev/no-such-camera", "--board",
                                      "9x6", "--seconds", "2"])
    assert result.exit_code != 0
    assert "capture source 'camera:/dev/no-such-camera'" in result.output


def test_detect_with_the_lens_file_gives_quads_in_the_image_as_taken(
        wide: Calibration, tmp_path: Path) -> None:
    from capture.lens import lens_section

    lens_file = tmp_path / "lens.toml"
    lens_file.write_text(lens_section(wide, BOARD))
    frame, corners, _ = _bent_wall((1280, 720))
    photo = tmp_path / "wall.png"
    cv2.imwrite(str(photo), frame)
    result = _cli("detect", str(photo), "--lens", str(lens_file), "--json")
    assert result.exit_code == 0, result.output
    quads = [np.float32(a["quad"]) for a in json.loads(result.output)["artworks"]]
    assert max(quad_iou(q, corners.astype(np.float32)) for q in quads) > 0.9
    square = tmp_path / "square.png"
    cv2.imwrite(str(square), np.full((600, 600, 3), 128, np.uint8))
    result = _cli("detect", str(square), "--lens", str(lens_file))
    assert result.exit_code != 0
    assert f"{square}: 600x600, not the aspect of the --lens calibration (960x540)" in \
        result.output
