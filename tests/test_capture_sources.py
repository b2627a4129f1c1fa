"""Frame sources: the demo camera's frames and ground truth, files, devices, and errors."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from capture.config import CaptureConfig, DemoSourceConfig
from capture.frames import FrameTruth
from capture.sources import (
    ImageFolderSource,
    ReportsCameraHealth,
    StreamSource,
    VideoSource,
    open_source,
    probe_camera,
)
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


def test_image_folder_skips_a_truncated_image_and_says_so_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A copy cut short (a card pulled out mid-write) decoded as half a picture over grey,
    # and an unreadable file was warned about at every frame of its dwell.
    noise = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    ok, data = cv2.imencode(".jpg", noise)
    assert ok
    (tmp_path / "a.jpg").write_bytes(data.tobytes())
    (tmp_path / "b.jpg").write_bytes(data.tobytes()[: len(data) * 2 // 3])
    assert cv2.imread(str(tmp_path / "b.jpg")) is not None  # OpenCV decodes it, greyed
    clock = FakeClock()
    source = ImageFolderSource(tmp_path, dwell_s=1.0, clock=clock)
    frames = []
    with caplog.at_level("WARNING", logger="capture.sources"):
        for t in (0.0, 1.0, 1.3, 1.6, 2.0, 3.2):
            clock.t = 1000.0 + t
            frames.append(source.read())
    assert [f is not None for f in frames] == [True, False, False, False, True, False]
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "b.jpg" in warned[0] and "truncated" in warned[0]


def _write_video(path: Path, frames: int, fps: float = 10.0) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (64, 48))
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


def test_a_camera_is_reopened_after_its_backoff_though_the_wall_clock_was_set_back(
        tmp_path: Path) -> None:
    # The retry was timed on the wall clock: set back 300 s (NTP, a technician) while the
    # camera was away, it was retried only after 300.5 s. The backoff runs on the
    # monotonic clock; frames keep the wall clock's stamps.
    path = tmp_path / "cam.avi"
    _write_video(path, frames=2)
    wall, mono = FakeClock(), FakeClock(50.0)
    camera = VideoSource(str(path), is_camera=True, name="camera:test", clock=wall,
                         backoff_s=0.5, monotonic=mono)
    assert camera.read() is not None and camera.read() is not None
    assert camera.read() is None  # unplugged: the retry is due 0.5 s on
    wall.t -= 300.0
    wall.t, mono.t = wall.t + 0.4, mono.t + 0.4
    assert camera.read() is None  # still backing off
    wall.t, mono.t = wall.t + 0.2, mono.t + 0.2
    frame = camera.read()  # reopened at its time
    assert frame is not None and _level(frame) == 0 and frame.timestamp == wall.t
    camera.close()


def test_a_video_file_plays_on_though_the_wall_clock_was_set_back(tmp_path: Path) -> None:
    # Playback was paced by the wall clock: set back 300 s, no frame came for 300 s.
    path = tmp_path / "clip.avi"
    _write_video(path, frames=5, fps=10.0)
    wall, mono = FakeClock(), FakeClock(50.0)
    source = open_source(CaptureConfig(source=f"video:{path}"), wall, mono)
    assert _level(source.read()) == 0
    wall.t -= 300.0
    assert source.read() is None  # no time has passed: no new frame
    wall.t, mono.t = wall.t + 0.11, mono.t + 0.11
    frame = source.read()
    assert frame is not None and _level(frame) == 1 and frame.timestamp == wall.t
    wall.t += 600.0  # and set on: no frames skipped, no rewind
    mono.t += 0.1
    assert _level(source.read()) == 2
    source.close()


def test_an_image_folder_dwells_on_the_monotonic_clock(tmp_path: Path) -> None:
    for k in range(2):
        cv2.imwrite(str(tmp_path / f"{k}.png"), np.full((40, 60, 3), 100 * k, np.uint8))
    wall, mono = FakeClock(), FakeClock(50.0)
    source = open_source(CaptureConfig(source=f"images:{tmp_path}", image_dwell_s=2.0), wall,
                         mono)
    values = []
    for step in (0.0, 1.0, 1.0):  # the wall clock set back 100 s after each read
        mono.t += step
        frame = source.read()
        assert frame is not None and frame.timestamp == wall.t
        values.append(int(frame.image[0, 0, 0]))
        wall.t -= 100.0
    assert values == [0, 0, 100]


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


def test_a_path_that_is_there_but_is_no_file_is_refused_saying_what_it_is(
        tmp_path: Path) -> None:
    # A named pipe given as a video was refused with "got no file at" though it was there.
    fifo = tmp_path / "fifo.avi"
    os.mkfifo(fifo)
    for path, what in ((fifo, "a named pipe"), (tmp_path, "a folder"),
                       (Path("/dev/null"), "a device")):
        with pytest.raises(InputError) as refused:
            open_source(CaptureConfig(source=f"video:{path}"))
        assert str(refused.value).startswith(
            f"capture source 'video:{path}': expected an existing video file, got {path}, "
            f"which is {what}, not a video file")
    # as a camera, refused before OpenCV opens it: opening a pipe waits for a writer
    for path, what in ((fifo, "a named pipe"), (tmp_path, "a folder")):
        with pytest.raises(InputError) as refused:
            open_source(CaptureConfig(source=f"camera:{path}"))
        assert str(refused.value) == (f"capture source 'camera:{path}': expected a camera "
                                      f"device, got {path}, which is {what}")


class _SilentCamera:
    """A device that opens and sends nothing (a webcam's metadata node)."""

    def read(self) -> tuple[bool, None]:
        return False, None

    def release(self) -> None:
        pass


def test_a_camera_is_probed_as_capture_opens_it_and_never_for_longer_than_its_timeout(
        tmp_path: Path) -> None:
    # The deep check passed camera:/dev/null (the path was there); capture then refused it
    # at start. The probe opens it as capture does and says what capture says.
    notes = tmp_path / "notes.txt"
    notes.write_text("not a camera")
    for path in ("/dev/null", str(notes)):
        with pytest.raises(InputError) as probed:
            probe_camera(f"camera:{path}")
        with pytest.raises(InputError) as at_start:
            open_source(CaptureConfig(source=f"camera:{path}"))
        assert str(probed.value) == str(at_start.value) == (
            f"capture source 'camera:{path}': expected a camera that opens, got one that "
            f"does not open")
    clip = tmp_path / "clip.avi"  # a video file opened as a camera sends frames
    _write_video(clip, frames=2)
    probe_camera(f"camera:{clip}")
    with pytest.raises(InputError, match="'camera:/dev/null': expected a camera that sends "
                                         "frames, got one that opens but sends none"):
        probe_camera("camera:/dev/null", opener=lambda target: _SilentCamera())  # type: ignore
    # a device whose open blocks holds the caller for the timeout only
    release = threading.Event()
    opened: list[str | int] = []

    def blocking(target: str | int) -> None:
        opened.append(target)
        release.wait()

    try:
        with pytest.raises(InputError, match="'camera:/dev/null': expected a camera that "
                                             "sends a frame within 0 s, got none"):
            probe_camera("camera:/dev/null", timeout_s=0.0, opener=blocking)
    finally:
        release.set()


def test_opencv_and_ffmpeg_say_nothing_on_the_terminal_of_a_source_that_fails(
        tmp_path: Path) -> None:
    # "[ WARN:0@0.01] global cap_v4l.cpp:915 open VIDEOIO(V4L2:/dev/video5): can't open
    # camera by index" and "[mov,mp4,...] moov atom not found" were printed beside our own
    # line saying the same. A process of its own: FFmpeg reads its level once per process.
    notvideo = tmp_path / "notvideo.mp4"
    notvideo.write_bytes(b"this is not a video")
    script = (
        "from capture.config import CaptureConfig\n"
        "from capture.sources import open_source\n"
        "from ground.errors import InputError\n"
        f"for source in ('video:{notvideo}', 'camera:97'):\n"
        "    try:\n"
        "        open_source(CaptureConfig(source=source))\n"
        "    except InputError as error:\n"
        "        print(error)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=120, env=env, cwd=Path(__file__).parent.parent)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"capture source 'video:{notvideo}': expected a video file OpenCV can decode, got one "
        f"that does not open",
        "capture source 'camera:97': expected a camera that opens, got one that does not open"]
    assert "[ WARN" not in result.stderr and "moov atom" not in result.stderr, result.stderr


# -- a network camera on loopback ----------------------------------------------


class MjpegCamera:
    """An HTTP MJPEG camera on loopback, as IP cameras serve one.

    ``multipart/x-mixed-replace`` JPEG frames, frame *i* a flat grey of level
    :func:`mjpeg_level`. It free-runs (about 50 frames a second) until
    :meth:`hold`; then it sends exactly the frames :meth:`send` allows.
    :meth:`kill` closes the server and every connection, :meth:`start`
    serves again on the same port.
    """

    def __init__(self) -> None:
        self.sent = 0
        self.free_running = threading.Event()
        self.idle = threading.Event()  # a held connection is waiting for frames
        self.allowance = threading.Semaphore(0)
        self.port = 0
        self.alive = False
        self.server: ThreadingHTTPServer | None = None
        self.start()

    @property
    def url(self) -> str:
        """Where the stream is served."""
        return f"http://127.0.0.1:{self.port}/video.mjpg"

    def start(self) -> None:
        """Serve on the port (the first time a free one, then the same)."""
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    camera.serve(self.wfile)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the reader went away: it reconnects on its own

        self.alive = True
        self.free_running.set()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def serve(self, out: Any) -> None:
        """Write frames to one connection while the camera is alive."""
        while self.alive:
            if self.free_running.is_set():
                self.idle.clear()
                time.sleep(0.02)  # the camera's own pace
            else:
                self.idle.set()
                if not self.allowance.acquire(timeout=0.05):
                    continue
            image = np.full((96, 128, 3), mjpeg_level(self.sent), np.uint8)
            jpeg = cv2.imencode(".jpg", image)[1].tobytes()
            out.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                      % len(jpeg) + jpeg + b"\r\n")
            out.flush()
            self.sent += 1

    def hold(self) -> None:
        """Stop free-running; return once the connection waits for :meth:`send`."""
        self.free_running.clear()
        assert self.idle.wait(10.0)

    def send(self, frames: int) -> None:
        """Let a held camera send ``frames`` more frames."""
        for _ in range(frames):
            self.allowance.release()

    def kill(self) -> None:
        """The camera goes away: the server and every open connection close."""
        self.alive = False
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()


def mjpeg_level(index: int) -> int:
    """The grey level of frame ``index`` (distinct for 25 frames in a row)."""
    return 10 * (index % 25)


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 20.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` if it never does."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_network_camera_keeps_the_latest_frame_is_lost_and_reconnects() -> None:
    camera = MjpegCamera()
    config = CaptureConfig(source=f"video:{camera.url}", stream_open_timeout_s=2.0,
                           stream_read_timeout_s=1.0, reconnect_max_s=0.5)
    source = open_source(config)
    assert isinstance(source, StreamSource) and isinstance(source, ReportsCameraHealth)
    try:
        wait_until(lambda: source.received >= 3 and source.health().state == "ok", "frames")
        health = source.health()
        assert health.camera_fps > 0 and health.reconnects == 0
        assert health.frame_age_s is not None and health.frame_age_s < 1.0

        # Only the latest frame: 12 frames arrive between two reads; the next
        # read is the 12th, and then there is nothing newer.
        camera.hold()
        wait_until(lambda: source.received == camera.sent, "the frames in flight")
        source.read()
        before = source.received
        camera.send(12)
        wait_until(lambda: source.received == before + 12, "the burst")
        frame = source.read()
        assert frame is not None
        assert abs(int(frame.image.mean()) - mjpeg_level(camera.sent - 1)) <= 3
        assert source.read() is None

        # A camera that sends nothing for stream_read_timeout_s is lost (and reopened).
        wait_until(lambda: source.health().state != "ok", "a silent camera counted lost")
        assert source.health().frame_age_s >= 1.0  # type: ignore[operator]
        camera.free_running.set()
        wait_until(lambda: source.health().state == "ok", "the camera back")
        reconnects = source.health().reconnects
        assert reconnects >= 1 and source.read() is not None

        # The camera goes away: lost; it comes back on the same port: frames again.
        camera.kill()
        wait_until(lambda: source.health().state != "ok", "a killed camera counted lost")
        assert source.health().state in ("lost", "reconnecting")
        source.read()
        camera.start()
        wait_until(lambda: source.health().state == "ok" and
                   source.health().reconnects > reconnects, "the restarted camera")
        wait_until(lambda: source.read() is not None, "a frame from the restarted camera")
        assert source.health().status()["camera"] == "ok"
    finally:
        source.close()
        camera.kill()


def test_a_stream_that_does_not_open_names_the_source_and_the_field() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = f"video:http://127.0.0.1:{port}/video.mjpg"
    with pytest.raises(InputError, match=f"'{source}'.*stream_open_timeout_s"):
        open_source(CaptureConfig(source=source, stream_open_timeout_s=1.0))


def test_a_stream_reader_backs_off_between_failed_opens() -> None:
    # A fake opener stands in for FFmpeg: the first open works, the stream
    # ends, and every reopen fails; the attempts are spaced by the backoff.
    class EndedCapture:
        def read(self) -> tuple[bool, None]:
            return False, None

        def release(self) -> None:
            pass

    opened: list[float] = []
    two_failures = threading.Event()

    def opener(url: str, open_timeout_s: float, read_timeout_s: float) -> Any:
        opened.append(time.monotonic())
        if len(opened) >= 4:
            two_failures.set()
        return EndedCapture() if len(opened) == 1 else None

    source = StreamSource("rtsp://camera.invalid/stream", name="video:rtsp://camera.invalid",
                          backoff_s=0.05, backoff_max_s=0.1, opener=opener)
    try:
        assert two_failures.wait(10.0)
        assert source.read() is None and source.health().state in ("lost", "reconnecting")
        assert source.health().frame_age_s is None and source.health().reconnects == 0
    finally:
        source.close()
    gaps = [b - a for a, b in zip(opened[1:], opened[2:], strict=False)]
    assert all(gap >= 0.05 for gap in gaps)  # never a busy loop of reopens


def test_a_read_that_blocks_past_the_timeouts_is_abandoned_and_the_stream_reopened() -> None:
    # FFmpeg's read timeout does not always fire: a read that blocks for twice
    # stream_read_timeout_s is left behind, and a fresh reader reopens the stream.
    unblock = threading.Event()

    class StuckCapture:
        released = False

        def read(self) -> tuple[bool, np.ndarray | None]:
            unblock.wait(30.0)
            return False, None

        def release(self) -> None:
            self.released = True

    class LiveCapture:
        def read(self) -> tuple[bool, np.ndarray | None]:
            time.sleep(0.01)  # the camera's pace
            return True, np.zeros((4, 4, 3), np.uint8)

        def release(self) -> None:
            pass

    stuck = StuckCapture()
    captures: list[Any] = [stuck, LiveCapture()]
    source = StreamSource("rtsp://camera.invalid/stream", name="video:rtsp://camera.invalid",
                          read_timeout_s=0.5, opener=lambda *args: captures.pop(0))
    try:
        wait_until(lambda: source.health().state == "lost", "the stuck reader counted lost")
        assert source.read() is None  # the watchdog, reading: past 2 x 0.5 s it reopens
        wait_until(lambda: source.read() is not None, "frames from the reopened stream")
        assert source.health().state == "ok" and source.health().reconnects == 1
        unblock.set()  # the abandoned read returns: its reader releases its capture and ends
        wait_until(lambda: stuck.released, "the abandoned capture released")
    finally:
        unblock.set()
        source.close()
