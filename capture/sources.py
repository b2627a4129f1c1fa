"""Frame sources: where capture's frames come from.

The capture loop (``capture.loop``) only sees the
:class:`~capture.frames.FrameSource` protocol (``capture.frames``).
:func:`open_source` turns ``CaptureConfig.source`` into one of:

- ``demo``: the built-in virtual camera,
  :class:`capture.synthetic.camera.DemoCamera` (no hardware), which reports
  its own ground truth with every frame.
- ``camera:INDEX``, ``camera:NAME`` (matched against the V4L2 device names
  in /sys/class/video4linux/*/name, :func:`find_camera`), ``camera:/dev/video2``,
  ``video:PATH``: :class:`VideoSource` over ``cv2.VideoCapture``. A camera
  that disappears is reopened with exponential backoff; a video file is
  played in real time and loops.
- ``video:URL`` or ``camera:URL`` (``rtsp://``, ``http(s)://`` MJPEG, any URL
  FFmpeg opens): :class:`StreamSource`, a network camera read by its own
  thread that keeps only the latest frame, with open and read timeouts, a
  watchdog, reconnection with capped exponential backoff and its health
  (:class:`CameraHealth`) for the capture status and metrics.
- ``images:DIR``: :class:`ImageFolderSource`, the images of a folder shown in
  turn, each for ``CaptureConfig.image_dwell_s`` seconds, cycling.

A path that is there but is not what its kind takes (a named pipe or a folder
as a video file, a folder as a camera) is refused saying what it is, before
OpenCV is asked to open it (opening a named pipe waits for a writer).
:func:`probe_camera` opens a camera as capture will and reads one frame
within a bounded time: the deep check's look at it (``art2mus check-config
--deep``).

OpenCV's own log lines (``[ WARN:0@...]``) and FFmpeg's (``moov atom not
found``) are kept off the terminal (:func:`quiet_opencv_logs`): every failure
they speak of is one of our messages naming the source. ``OPENCV_LOG_LEVEL``
and ``OPENCV_FFMPEG_LOGLEVEL`` set in the environment are left as they are,
to see them again.

Every source takes a ``clock`` (``time.time`` by default) so tests can drive
it at fake times; frame timestamps are wall-clock times from that clock. What
a source times (a camera's backoff, a video's playback, an image's dwell) is
measured on a clock that never steps (``monotonic``,
:func:`capture.frames.interval_clock`): the wall clock set back five minutes
must not hold a camera's reopening or a video's next frame for five minutes.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from capture.config import CaptureConfig
from capture.frames import Clock, Frame, FrameSource, interval_clock
from capture.images import read_image
from capture.synthetic.camera import DemoCamera
from ground.errors import InputError
from ground.files import special_kind

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


# -- files and devices -----------------------------------------------------

#: FFmpeg's fatal messages only (AV_LOG_FATAL): its errors ("moov atom not found", a
#: stream's damaged packets) are said by our own messages, or are noise on the terminal.
_FFMPEG_LOG_LEVEL = "8"


@cache  # once per process
def quiet_opencv_logs() -> None:
    """Keep OpenCV's own log lines (``[ WARN:0@...] ... can't open camera by index``) and
    FFmpeg's (``[mov,mp4,...] moov atom not found``) off the terminal, once per process.

    OpenCV's level (errors only) is set at once; FFmpeg's is read from
    ``OPENCV_FFMPEG_LOGLEVEL`` when OpenCV first opens a video through FFmpeg, so this
    must run before that (every opener here calls it). A level the environment sets is
    left as it is (``OPENCV_LOG_LEVEL=INFO``, ``OPENCV_FFMPEG_LOGLEVEL=32`` show them)."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", _FFMPEG_LOG_LEVEL)  # children too
    if "OPENCV_LOG_LEVEL" not in os.environ:  # (read by OpenCV once, at import)
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def not_a_file(path: Path) -> str | None:
    """What ``path`` is where it is there but is no regular file (``"a named pipe"``,
    ``"a folder"``, ``"a device"``: :func:`ground.files.special_kind`); None where it is a
    regular file or is not there at all."""
    return special_kind(path)


def video_file_problem(path: Path) -> str | None:
    """Why ``path`` is not a video file to play (the "got" of the message: ``no file at
    PATH``, ``PATH, which is a named pipe, not a video file``), or None where it is a
    regular file (whether OpenCV decodes it is for the opening to say)."""
    if (what := not_a_file(path)) is not None:
        hint = f" (a camera is 'camera:{path}')" if what.startswith("a device") else ""
        return f"{path}, which is {what}, not a video file{hint}"
    if not path.is_file():
        return f"no file at {path}"
    return None


def camera_path_problem(path: Path) -> str | None:
    """Why the camera path ``path`` cannot be a camera, without opening it: a folder, a
    named pipe (opening it would wait for a writer), a socket, a disk. None for a device,
    a path not there (the opening says so) and a regular file (a video file opened as a
    camera: played once, then reopened like a camera unplugged)."""
    what = not_a_file(path)
    if what is None or what.startswith("a device"):
        return None
    return f"{path}, which is {what}"


def _open_capture(target: str | int) -> cv2.VideoCapture | None:
    """``cv2.VideoCapture(target)`` where it opens, else None (a camera or a file)."""
    quiet_opencv_logs()
    capture = cv2.VideoCapture(target)
    if not capture.isOpened():
        capture.release()
        return None
    return capture


def _does_not_open(name: str, is_camera: bool) -> InputError:
    kind = "a camera that opens" if is_camera else "a video file OpenCV can decode"
    return InputError(f"capture source '{name}': expected {kind}, got one that does not open")


class ImageFolderSource:
    """The images of a folder (sorted by name), each shown for ``dwell_s``, cycling.

    The images stand in for camera frames, so they should show the artwork on
    its wall; a tight scan of a painting alone touches the image border and is
    (by design) not detected as a view.
    """

    def __init__(self, folder: str | Path, dwell_s: float = 10.0, clock: Clock = time.time,
                 monotonic: Clock | None = None) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise InputError(f"capture source 'images:{folder}': expected a folder of images, "
                             f"got no folder at {self.folder}")
        self.paths = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise InputError(f"capture source 'images:{folder}': expected image files "
                             f"({', '.join(IMAGE_SUFFIXES)}), found none in {self.folder}")
        self.dwell_s = dwell_s
        self._clock = clock
        self._monotonic = interval_clock(clock, monotonic)  # times the dwell
        self._start = self._monotonic()
        self._index = 0
        self._cached: tuple[int, np.ndarray] | None = None
        self._unreadable: set[int] = set()  # positions already warned about

    def read(self) -> Frame | None:
        """The image due now; an unreadable file is skipped (logged once)."""
        t = self._clock()
        position = int((self._monotonic() - self._start) // self.dwell_s) % len(self.paths)
        if self._cached is None or self._cached[0] != position:
            try:  # as every command reads an image: a truncated file is refused, not half grey
                image = read_image(self.paths[position])
            except InputError as error:
                if position not in self._unreadable:
                    self._unreadable.add(position)
                    log.warning("%s; skipping it", error)
                return None
            self._cached = (position, image)
        frame = Frame(self._cached[1].copy(), t, self._index)
        self._index += 1
        return frame

    def close(self) -> None:
        """Nothing to release."""
        self._cached = None


class VideoSource:
    """A camera or a video file through ``cv2.VideoCapture``.

    A file plays in real time by ``monotonic()`` (frames are skipped when
    capture runs slower than the video, and it loops at the end). A camera
    (``is_camera``) is read as fast as it delivers; when it stops delivering
    (unplugged, network camera gone) it is released and reopened with
    exponential backoff (timed by ``monotonic()`` too), ``read()`` returning
    ``None`` in the meantime. Frames are stamped by ``clock()``.
    """

    def __init__(self, target: str | int, *, is_camera: bool, name: str,
                 clock: Clock = time.time, backoff_s: float = 0.5,
                 backoff_max_s: float = 8.0, monotonic: Clock | None = None) -> None:
        self.target = target
        self.is_camera = is_camera
        self.name = name
        self._clock = clock
        self._monotonic = interval_clock(clock, monotonic)
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._retry_at = 0.0  # monotonic()
        self._failures = 0
        self._index = 0
        self._capture = self._open()
        if self._capture is None:
            raise _does_not_open(name, is_camera)
        self._fps = float(self._capture.get(cv2.CAP_PROP_FPS)) or 25.0
        if not 1.0 <= self._fps <= 240.0:
            self._fps = 25.0
        self._start = self._monotonic()  # when the file's first frame was due
        self._position = -1  # index of the last decoded file frame

    def _open(self) -> cv2.VideoCapture | None:
        return _open_capture(self.target)

    def read(self) -> Frame | None:
        """The next frame, or ``None`` (no new frame yet, or the camera is being reopened)."""
        now, mono = self._clock(), self._monotonic()
        if self._capture is None:
            if mono < self._retry_at:
                return None
            self._capture = self._open()
            if self._capture is None:
                self._schedule_retry(mono)
                return None
            log.info("capture source %s reopened", self.name)
            self._failures = 0
        image: np.ndarray | None
        if self.is_camera:
            ok, image = self._capture.read()
            if not ok or image is None:
                log.warning("capture source %s stopped delivering frames; reopening", self.name)
                self._capture.release()
                self._capture = None
                self._schedule_retry(mono)
                return None
        else:
            image = self._read_file_frame(mono)
            if image is None:
                return None
        frame = Frame(image, now, self._index)
        self._index += 1
        return frame

    def _read_file_frame(self, mono: float) -> np.ndarray | None:
        """The file's frame due at ``mono`` (``monotonic()``), None when it was handed over."""
        assert self._capture is not None
        due = int((mono - self._start) * self._fps)
        if due <= self._position:
            return None  # capture runs faster than the video: no new frame yet
        # Skip (grab without decoding) the frames we are late for.
        while self._position < due - 1:
            if not self._capture.grab():
                return self._rewind(mono)
            self._position += 1
        ok, image = self._capture.read()
        if not ok or image is None:
            return self._rewind(mono)
        self._position += 1
        return image

    def _rewind(self, mono: float) -> np.ndarray | None:
        assert self._capture is not None
        self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
        self._start = mono
        self._position = -1
        ok, image = self._capture.read()
        if not ok or image is None:
            return None
        self._position = 0
        return image

    def _schedule_retry(self, mono: float) -> None:
        """Schedule the next reopening: ``mono`` (``monotonic()``) plus the backoff."""
        delay = min(self._backoff_s * 2**self._failures, self._backoff_max_s)
        self._failures += 1
        self._retry_at = mono + delay

    def close(self) -> None:
        """Release the device or file."""
        if self._capture is not None:
            self._capture.release()
            self._capture = None


# -- network cameras ---------------------------------------------------------

#: The states a network camera reports (:attr:`CameraHealth.state`).
CAMERA_STATES = ("ok", "lost", "reconnecting")

#: ``camera_fps`` is measured over the frames of the last this many seconds.
FPS_WINDOW_S = 2.0

StreamOpener = Callable[[str, float, float], "cv2.VideoCapture | None"]


@dataclass(frozen=True)
class CameraHealth:
    """How a live camera is doing, for the capture status and its metrics.

    ``state``: ``"ok"`` while frames arrive; ``"lost"`` once none came for the
    read timeout or the stream ended (waiting out the backoff before the next
    attempt); ``"reconnecting"`` while an attempt to reopen it is under way.
    ``camera_fps`` is the camera's own rate over the last :data:`FPS_WINDOW_S`
    (what it streams, not what capture processes), ``reconnects`` the times
    frames came back after a loss, ``frame_age_s`` the seconds since the
    last frame (None before the first).
    """

    state: str
    camera_fps: float
    reconnects: int
    frame_age_s: float | None

    def status(self) -> dict[str, Any]:
        """The heartbeat keys: ``camera``, ``camera_fps``, ``reconnects``, ``frame_age_s``."""
        return {"camera": self.state, "camera_fps": round(self.camera_fps, 1),
                "reconnects": self.reconnects,
                "frame_age_s": None if self.frame_age_s is None else round(self.frame_age_s, 2)}


@runtime_checkable
class ReportsCameraHealth(Protocol):
    """A frame source that knows how its camera is doing (a network stream does)."""

    def health(self) -> CameraHealth:
        """The camera's health now."""
        ...


def open_stream(url: str, open_timeout_s: float, read_timeout_s: float) -> cv2.VideoCapture | None:
    """``url`` opened with OpenCV's FFmpeg backend and both timeouts set; None if it does not open.

    Without the timeouts FFmpeg waits on a dead camera for minutes (RTSP) or
    for ever (an HTTP server that accepts and then says nothing).
    """
    quiet_opencv_logs()
    capture = cv2.VideoCapture(url, cv2.CAP_FFMPEG, [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_s * 1000),
    ])
    if not capture.isOpened():
        capture.release()
        return None
    return capture


class StreamSource:
    """A network camera read by its own thread, which keeps only the latest frame.

    A camera streams at 25-30 frames per second whatever capture's ``fps``;
    read once per tick, OpenCV's (FFmpeg's) buffer would fill and capture
    would see the room seconds late. The reader thread reads as fast as the
    camera sends and keeps the newest frame; :meth:`read` hands it over once
    (``None`` until a newer one arrives), so capture always sees the present.

    Failures: a read that fails (the stream ended, FFmpeg's read timeout) or
    an open that fails makes the camera ``lost``; the thread reopens it, the
    first time at once, then after ``backoff_s``, twice that, ... at most
    ``backoff_max_s`` apart, until frames come again (``reconnects`` counts
    those returns). A watchdog in :meth:`read` covers a read that blocks
    past the timeouts FFmpeg was given: after twice ``read_timeout_s`` that
    reader is abandoned (it releases its capture when the read returns) and
    a fresh one reopens the stream. Frame timestamps come from ``clock`` at
    arrival; every duration here is measured on the monotonic clock.
    """

    def __init__(self, url: str, *, name: str, open_timeout_s: float = 5.0,
                 read_timeout_s: float = 3.0, backoff_s: float = 0.5,
                 backoff_max_s: float = 8.0, clock: Clock = time.time,
                 opener: StreamOpener = open_stream) -> None:
        self.url = url
        self.name = name
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self._clock = clock
        self._opener = opener
        capture = opener(url, open_timeout_s, read_timeout_s)
        if capture is None:
            raise InputError(f"capture source '{name}': expected a stream that opens within "
                             f"{open_timeout_s:g} s (capture.stream_open_timeout_s), got none")
        self._lock = threading.Lock()  # guards the fields the reader thread writes
        self._latest: np.ndarray | None = None
        self._latest_at = 0.0  # clock() when the latest frame arrived
        self._latest_mono: float | None = None
        self._received = 0
        self._handed = 0  # _received when read() last handed a frame over
        self._arrivals: deque[float] = deque(maxlen=512)
        self._state = "ok"
        self._reconnects = 0
        self._reading_since: float | None = None  # monotonic start of a read under way
        self._index = 0
        self._stop = threading.Event()
        self._generation = 0
        self._started_mono = time.monotonic()
        self._thread = self._start_reader(capture)

    def _start_reader(self, capture: cv2.VideoCapture | None, lost: bool = False
                      ) -> threading.Thread:
        self._generation += 1
        thread = threading.Thread(target=self._run, args=(capture, self._generation, lost),
                                  name=f"stream-{self.name}", daemon=True)
        thread.start()
        return thread

    def _current(self, generation: int) -> bool:
        return generation == self._generation and not self._stop.is_set()

    def _set_state(self, generation: int, state: str) -> None:
        with self._lock:
            if generation == self._generation:  # an abandoned reader no longer speaks
                self._state = state

    def _run(self, capture: cv2.VideoCapture | None, generation: int, lost: bool) -> None:
        # lost: frames stopped since the last one, so the next one is a reconnect
        attempts = 0  # open attempts since the last frame: the backoff's exponent
        try:
            while self._current(generation):
                if capture is None:
                    if attempts > 0:
                        delay = min(self.backoff_s * 2 ** (attempts - 1), self.backoff_max_s)
                        if self._stop.wait(delay) or not self._current(generation):
                            break
                    attempts += 1
                    self._set_state(generation, "reconnecting")
                    capture = self._opener(self.url, self.open_timeout_s, self.read_timeout_s)
                    if capture is None:
                        self._set_state(generation, "lost")
                        continue
                    log.info("capture source %s reopened", self.name)
                if generation == self._generation:
                    self._reading_since = time.monotonic()
                ok, image = capture.read()
                if not self._current(generation):
                    break  # abandoned by the watchdog (or closed) while it read
                self._reading_since = None
                if not ok or image is None:
                    if not lost:
                        log.warning("capture source %s stopped delivering frames; reopening",
                                    self.name)
                    capture.release()
                    capture = None
                    lost = True
                    self._set_state(generation, "lost")
                    continue
                now, mono = self._clock(), time.monotonic()
                with self._lock:
                    self._latest, self._latest_at, self._latest_mono = image, now, mono
                    self._received += 1
                    self._arrivals.append(mono)
                    self._state = "ok"
                    if lost:
                        self._reconnects += 1
                attempts, lost = 0, False
        finally:
            if capture is not None:
                capture.release()

    def _watchdog(self) -> None:
        """Abandon a reader whose read has blocked past twice the read timeout."""
        since = self._reading_since
        if since is None or time.monotonic() - since < 2.0 * self.read_timeout_s:
            return
        log.warning("capture source %s: a read blocked for %.1f s (FFmpeg's read timeout did "
                    "not fire); reopening the stream", self.name, time.monotonic() - since)
        with self._lock:
            self._state = "lost"
        self._reading_since = None
        self._thread = self._start_reader(None, lost=True)

    def read(self) -> Frame | None:
        """The newest frame the camera sent, once; ``None`` until a newer one arrives."""
        self._watchdog()
        with self._lock:
            if self._latest is None or self._received == self._handed:
                return None
            self._handed = self._received
            image, at = self._latest, self._latest_at
        frame = Frame(image, at, self._index)  # the reader never writes into a kept frame
        self._index += 1
        return frame

    @property
    def received(self) -> int:
        """Frames the camera has delivered since the source opened (read or not)."""
        with self._lock:
            return self._received

    def health(self) -> CameraHealth:
        """The camera's state, rate, reconnections and the age of its latest frame."""
        now = time.monotonic()
        with self._lock:
            state, reconnects, last = self._state, self._reconnects, self._latest_mono
            recent = [t for t in self._arrivals if t > now - FPS_WINDOW_S]
        age = None if last is None else now - last
        if state == "ok" and (now - (last or self._started_mono)) > self.read_timeout_s:
            state = "lost"  # the reader is still inside a read that has stalled
        fps = (len(recent) - 1) / (recent[-1] - recent[0]) if len(recent) >= 2 and \
            recent[-1] > recent[0] else 0.0
        return CameraHealth(state, fps, reconnects, age)

    def close(self) -> None:
        """Stop the reader thread; it releases the stream (at the latest when its read returns)."""
        self._stop.set()
        self._thread.join(timeout=self.read_timeout_s + 1.0)


def camera_names(sysfs: Path = Path("/sys/class/video4linux")) -> dict[int, str]:
    """Linux V4L2 devices: index N of /dev/videoN -> the device's name (empty elsewhere)."""
    names: dict[int, str] = {}
    if not sysfs.is_dir():
        return names
    for device in sorted(sysfs.glob("video*")):
        index = device.name.removeprefix("video")
        name_file = device / "name"
        if index.isdigit() and name_file.is_file():
            names[int(index)] = name_file.read_text(errors="replace").strip()
    return names


def find_camera(name: str, sysfs: Path = Path("/sys/class/video4linux")) -> int:
    """The index of the camera whose name contains ``name`` (case-insensitive).

    On Linux the names come from /sys/class/video4linux/*/name; a camera
    exposes several nodes (capture, metadata), so the lowest index is taken.
    :class:`InputError` lists the cameras there are when none matches.
    """
    names = camera_names(sysfs)
    wanted = name.casefold()
    matches = sorted(i for i, n in names.items() if wanted in n.casefold())
    if matches:
        return matches[0]
    there = ", ".join(f"{i}: {n}" for i, n in sorted(names.items())) or "none found"
    raise InputError(f"capture source 'camera:{name}': expected a camera index or the name of "
                     f"a connected camera, got no camera named like that (cameras: {there})")


def camera_target(source: str) -> str | int:
    """What ``cv2.VideoCapture`` opens for the camera ``source`` (``camera:INDEX``,
    ``camera:NAME``, ``camera:/dev/video2``); :class:`InputError` naming it where no
    camera has that name or its path cannot be a camera (:func:`camera_path_problem`)."""
    argument = source.partition(":")[2]
    if argument.isdigit():
        return int(argument)
    if not argument.startswith("/"):
        return find_camera(argument)
    if (problem := camera_path_problem(Path(argument))) is not None:
        raise InputError(f"capture source '{source}': expected a camera device, got {problem}")
    return argument


#: How long :func:`probe_camera` waits for a camera to open and send its first frame
#: (a USB webcam takes well under a second; OpenCV's own wait on a silent device is 10 s).
CAMERA_PROBE_S = 5.0

CameraOpener = Callable[[str | int], "cv2.VideoCapture | None"]


def probe_camera(source: str, timeout_s: float = CAMERA_PROBE_S,
                 opener: CameraOpener = _open_capture) -> None:
    """Open the camera ``source`` (``camera:INDEX|NAME|PATH``) as :func:`open_source`
    does, read one frame and let it go; :class:`InputError` in capture's words where it
    does not open, sends no frame, or has not done both within ``timeout_s``.

    What a path to something else gives: ``/dev/null``, a text file, a webcam's
    metadata node (its second ``/dev/videoN``) do not open, or send nothing. The look
    runs in a thread of its own, so a device that blocks holds the caller ``timeout_s``
    at most (the thread is left to finish on its own; it releases what it opened)."""
    target = camera_target(source)
    outcome: list[str] = []  # written by the thread before ``done`` is set
    done = threading.Event()

    def look() -> None:
        capture = None
        try:
            capture = opener(target)
            if capture is None:
                outcome.append("closed")
            else:
                ok, image = capture.read()
                outcome.append("frame" if ok and image is not None else "silent")
        except Exception as error:  # noqa: BLE001 - a backend's own error, said as ours
            outcome.append(f"error: {error}")
        finally:
            if capture is not None:
                capture.release()
            done.set()

    threading.Thread(target=look, name=f"probe-{source}", daemon=True).start()
    if not done.wait(timeout_s):
        raise InputError(f"capture source '{source}': expected a camera that sends a frame "
                         f"within {timeout_s:g} s, got none (still waiting: a device that is "
                         f"no camera, or a camera another program holds?)")
    [seen] = outcome
    if seen == "closed":
        raise _does_not_open(source, is_camera=True)
    if seen == "silent":
        raise InputError(f"capture source '{source}': expected a camera that sends frames, "
                         f"got one that opens but sends none (a webcam's second /dev/videoN "
                         f"is its metadata, not its picture; or another program holds it)")
    if seen.startswith("error: "):
        raise InputError(f"capture source '{source}': expected a camera that opens, got "
                         f"{seen.removeprefix('error: ')}")


def open_source(config: CaptureConfig, clock: Clock = time.time,
                monotonic: Clock | None = None) -> FrameSource:
    """Open the frame source ``config.source`` names; :class:`InputError` names it on failure.

    ``clock`` stamps the frames, ``monotonic`` times them
    (:func:`capture.frames.interval_clock`); a network stream times on
    :func:`time.monotonic` itself, and the demo camera films by ``clock``.
    """
    source = config.source
    kind, _, argument = source.partition(":")
    quiet_opencv_logs()  # for the process's life: a camera reopened, a catalogue read
    if source == "demo":
        return DemoCamera(config.demo, clock)
    if kind in ("camera", "video") and "://" in argument:
        # A network camera (rtsp://, http:// MJPEG): its own reader thread keeps
        # the latest frame, and reopens it with backoff when it drops.
        return StreamSource(argument, name=source, open_timeout_s=config.stream_open_timeout_s,
                            read_timeout_s=config.stream_read_timeout_s,
                            backoff_max_s=config.reconnect_max_s, clock=clock)
    if kind == "camera" and argument:
        return VideoSource(camera_target(source), is_camera=True, name=source, clock=clock,
                           backoff_max_s=config.reconnect_max_s, monotonic=monotonic)
    if kind == "video" and argument:
        path = Path(argument)
        if (problem := video_file_problem(path)) is not None:
            raise InputError(f"capture source '{source}': expected an existing video file, "
                             f"got {problem}")
        return VideoSource(str(path), is_camera=False, name=source, clock=clock,
                           monotonic=monotonic)
    if kind == "images" and argument:
        return ImageFolderSource(argument, config.image_dwell_s, clock, monotonic)
    raise InputError(f"capture source '{source}': expected 'demo', 'camera:INDEX', "
                     f"'video:PATH', 'video:rtsp://...' or 'images:DIR'")


__all__ = [
    "CAMERA_PROBE_S", "CAMERA_STATES", "FPS_WINDOW_S", "IMAGE_SUFFIXES", "CameraHealth",
    "CameraOpener", "ImageFolderSource", "ReportsCameraHealth", "StreamSource", "VideoSource",
    "camera_names", "camera_path_problem", "camera_target", "find_camera", "not_a_file",
    "open_source", "open_stream", "probe_camera", "quiet_opencv_logs", "video_file_problem",
]
