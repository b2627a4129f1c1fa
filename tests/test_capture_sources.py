"""Frame sources: the demo camera's frames and ground truth, files, devices, and errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from capture.config import CaptureConfig, DemoSourceConfig
from capture.frames import FrameTruth
from capture.sources import ImageFolderSource, VideoSource, open_source
from capture.synthetic.artworks import artwork_style
from capture.synthetic.camera import DemoCamera
from ground.errors import InputError


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_demo_camera_frames_and_ground_truth() -> None:
    clock = FakeClock()
    camera = open_source(CaptureConfig(demo=DemoSourceConfig(artworks=3, dwell_s=4.0)), clock)
    assert isinstance(camera, DemoCamera)
    frame = camera.read()
    assert frame is not None
    assert frame.image.shape == (720, 1280, 3) and frame.image.dtype == np.uint8
    assert frame.timestamp == 1000.0 and frame.index == 0
    assert frame.truth == FrameTruth(0, artwork_style(0), 1000.0)
    clock.t = 1001.0
    assert camera.read().index == 1
    clock.t = 1009.3  # the frame says what is in view, and since when
    assert camera.read().truth == FrameTruth(2, artwork_style(2), 1008.0)

    assert [camera.artwork_index_at(1000.0 + t) for t in (0, 3.9, 4.0, 8.5, 12.1)] == \
        [0, 0, 1, 2, 0]
    assert camera.change_times(1012.5) == [1000.0, 1004.0, 1008.0, 1012.0]
    assert camera.change_time(1009.3) == 1008.0
    # Mid-visit the picture is in view; at a change the camera is mid-pan.
    assert camera.fully_visible(1002.0) and not camera.fully_visible(1004.0)
    index, quad = camera.truth_at(1002.0)
    assert index == 0 and quad.shape == (4, 2)
    assert quad[1, 0] > quad[0, 0] and quad[3, 1] > quad[0, 1]  # TL, TR, BR, BL
    camera.close()


def test_demo_camera_is_deterministic_and_moves() -> None:
    a = DemoCamera(DemoSourceConfig(seed=3), clock=FakeClock(), start=0.0)
    b = DemoCamera(DemoSourceConfig(seed=3), clock=FakeClock(), start=0.0)
    assert np.array_equal(a.render(2.0), b.render(2.0))
    assert not np.array_equal(a.truth_at(2.0)[1], a.truth_at(5.0)[1])  # the camera sways
    assert np.abs(a.truth_at(2.0)[1] - a.truth_at(2.05)[1]).max() < 5.0  # slowly


def test_demo_camera_frame_size_follows_config() -> None:
    camera = DemoCamera(DemoSourceConfig(width=640, height=360), clock=FakeClock())
    assert camera.read().image.shape == (360, 640, 3)


def test_image_folder_cycles_with_dwell(tmp_path: Path) -> None:
    for k in range(2):
        cv2.imwrite(str(tmp_path / f"{k}.png"), np.full((40, 60, 3), 100 * k, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    clock = FakeClock()
    source = open_source(CaptureConfig(source=f"images:{tmp_path}", image_dwell_s=2.0), clock)
    assert isinstance(source, ImageFolderSource)
    values = []
    for t in (0.0, 1.9, 2.0, 3.9, 4.0):
        clock.t = 1000.0 + t
        frame = source.read()
        assert frame is not None and frame.timestamp == clock.t and frame.truth is None
        values.append(int(frame.image[0, 0, 0]))
    assert values == [0, 0, 100, 100, 0]
    source.close()


def _write_video(path: Path, frames: int, fps: float = 10.0) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    assert writer.isOpened()
    for k in range(frames):
        writer.write(np.full((48, 64, 3), k * 20, np.uint8))
    writer.release()


def _level(frame: object) -> int:
    return int(round(float(frame.image.mean()) / 20))  # type: ignore[attr-defined]


def test_video_file_plays_in_real_time_and_loops(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    _write_video(path, frames=5, fps=10.0)
    clock = FakeClock()
    source = open_source(CaptureConfig(source=f"video:{path}"), clock)
    assert isinstance(source, VideoSource)
    assert _level(source.read()) == 0
    assert source.read() is None  # no time has passed: no new frame
    clock.t += 0.31  # three frames later (the two in between are skipped)
    assert _level(source.read()) == 3
    clock.t += 0.3  # past the end: back to the start
    assert _level(source.read()) == 0
    source.close()


def test_camera_that_disappears_is_reopened_with_backoff(tmp_path: Path) -> None:
    # A file opened as a "camera" ends like an unplugged camera: reads fail.
    path = tmp_path / "cam.avi"
    _write_video(path, frames=2)
    clock = FakeClock()
    camera = VideoSource(str(path), is_camera=True, name="camera:test", clock=clock,
                         backoff_s=0.5)
    assert camera.read() is not None and camera.read() is not None
    assert camera.read() is None  # the device is gone: released, retry scheduled
    clock.t += 0.2
    assert camera.read() is None  # still backing off
    clock.t += 0.4
    frame = camera.read()  # reopened
    assert frame is not None and _level(frame) == 0
    camera.close()


@pytest.mark.parametrize("source, expected", [
    ("video:/no/such/clip.mp4", "expected an existing video file"),
    ("images:/no/such/folder", "expected a folder of images"),
    ("camera:/dev/no-such-camera", "expected a camera that opens"),
])
def test_open_source_errors_name_the_source(source: str, expected: str) -> None:
    with pytest.raises(InputError) as caught:
        open_source(CaptureConfig(source=source))
    assert f"'{source}'" in str(caught.value) and expected in str(caught.value)


def test_empty_image_folder_and_undecodable_video_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="found none in"):
        open_source(CaptureConfig(source=f"images:{tmp_path}"))
    bogus = tmp_path / "bogus.mp4"
    bogus.write_bytes(b"this is not a video")
    with pytest.raises(InputError, match=f"'video:{bogus}'.*OpenCV can decode"):
        open_source(CaptureConfig(source=f"video:{bogus}"))


def test_unknown_source_kind_is_refused() -> None:
    # The config pattern refuses it first; open_source still says what it expected.
    config = CaptureConfig.model_construct(source="webcam")
    with pytest.raises(InputError, match="'webcam': expected 'demo', 'camera:INDEX'"):
        open_source(config)
