"""Frame sources: where capture's frames come from.

The capture loop (``capture.loop``) only sees the
:class:`~capture.frames.FrameSource` protocol (``capture.frames``).
:func:`open_source` turns ``CaptureConfig.source`` into one of:

- ``demo``: the built-in virtual camera,
  :class:`capture.synthetic.camera.DemoCamera` (no hardware), which reports
  its own ground truth with every frame.
- ``camera:INDEX``, ``camera:NAME`` (matched against the V4L2 device names
  in /sys/class/video4linux/*/name, :func:`find_camera`), ``camera:/dev/video2``,
  ``video:PATH`` and ``video:rtsp://...`` (any URL): :class:`VideoSource` over
  ``cv2.VideoCapture``. A camera or network stream that disappears is
  reopened with exponential backoff; a video file is played in real time and
  loops.
- ``images:DIR``: :class:`ImageFolderSource`, the images of a folder shown in
  turn, each for ``CaptureConfig.image_dwell_s`` seconds, cycling.

Every source takes a ``clock`` (``time.time`` by default) so tests can drive
it at fake times; frame timestamps are wall-clock times from that clock.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np

from capture.config import CaptureConfig
from capture.frames import Clock, Frame, FrameSource
from capture.synthetic.camera import DemoCamera
from ground.errors import InputError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


# -- files and devices -----------------------------------------------------


class ImageFolderSource:
    """The images of a folder (sorted by name), each shown for ``dwell_s``, cycling.

    The images stand in for camera frames, so they should show the artwork on
    its wall; a tight scan of a painting alone touches the image border and is
    (by design) not detected as a view.
    """

    def __init__(self, folder: str | Path, dwell_s: float = 10.0, clock: Clock = time.time) -> None:
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
        self._start = clock()
        self._index = 0
        self._cached: tuple[int, np.ndarray] | None = None

    def read(self) -> Frame | None:
        """The image due at ``clock()``; an unreadable file is skipped (logged once)."""
        t = self._clock()
        position = int((t - self._start) // self.dwell_s) % len(self.paths)
        if self._cached is None or self._cached[0] != position:
            image = cv2.imread(str(self.paths[position]), cv2.IMREAD_COLOR)
            if image is None:
                log.warning("cannot read image %s; skipping it", self.paths[position])
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

    A file plays in real time by ``clock()`` (frames are skipped when capture
    runs slower than the video, and it loops at the end). A camera
    (``is_camera``) is read as fast as it delivers; when it stops delivering
    (unplugged, network camera gone) it is released and reopened with
    exponential backoff, ``read()`` returning ``None`` in the meantime.
    """

    def __init__(self, target: str | int, *, is_camera: bool, name: str,
                 clock: Clock = time.time, backoff_s: float = 0.5,
                 backoff_max_s: float = 8.0) -> None:
        self.target = target
        self.is_camera = is_camera
        self.name = name
        self._clock = clock
        self._backoff_s = backoff_s
        self._backoff_max_s = backoff_max_s
        self._retry_at = 0.0
        self._failures = 0
        self._index = 0
        self._capture = self._open()
        if self._capture is None:
            kind = "a camera that opens" if is_camera else "a video file OpenCV can decode"
            raise InputError(f"capture source '{name}': expected {kind}, got one that does not "
                             f"open")
        self._fps = float(self._capture.get(cv2.CAP_PROP_FPS)) or 25.0
        if not 1.0 <= self._fps <= 240.0:
            self._fps = 25.0
        self._start = clock()
        self._position = -1  # index of the last decoded file frame

    def _open(self) -> cv2.VideoCapture | None:
        capture = cv2.VideoCapture(self.target)
        if not capture.isOpened():
            capture.release()
            return None
        return capture

    def read(self) -> Frame | None:
        """The next frame, or ``None`` (no new frame yet, or the camera is being reopened)."""
        now = self._clock()
        if self._capture is None:
            if now < self._retry_at:
                return None
            self._capture = self._open()
            if self._capture is None:
                self._schedule_retry(now)
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
                self._schedule_retry(now)
                return None
        else:
            image = self._read_file_frame(now)
            if image is None:
                return None
        frame = Frame(image, now, self._index)
        self._index += 1
        return frame

    def _read_file_frame(self, now: float) -> np.ndarray | None:
        assert self._capture is not None
        due = int((now - self._start) * self._fps)
        if due <= self._position:
            return None  # capture runs faster than the video: no new frame yet
        # Skip (grab without decoding) the frames we are late for.
        while self._position < due - 1:
            if not self._capture.grab():
                return self._rewind(now)
            self._position += 1
        ok, image = self._capture.read()
        if not ok or image is None:
            return self._rewind(now)
        self._position += 1
        return image

    def _rewind(self, now: float) -> np.ndarray | None:
        assert self._capture is not None
        self._capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
        self._start = now
        self._position = -1
        ok, image = self._capture.read()
        if not ok or image is None:
            return None
        self._position = 0
        return image

    def _schedule_retry(self, now: float) -> None:
        delay = min(self._backoff_s * 2**self._failures, self._backoff_max_s)
        self._failures += 1
        self._retry_at = now + delay

    def close(self) -> None:
        """Release the device or file."""
        if self._capture is not None:
            self._capture.release()
            self._capture = None


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


def open_source(config: CaptureConfig, clock: Clock = time.time) -> FrameSource:
    """Open the frame source ``config.source`` names; :class:`InputError` names it on failure."""
    source = config.source
    kind, _, argument = source.partition(":")
    if source == "demo":
        return DemoCamera(config.demo, clock)
    if kind == "camera" and argument:
        target: str | int = int(argument) if argument.isdigit() else argument
        if isinstance(target, str) and not target.startswith("/") and "://" not in target:
            target = find_camera(target)
        return VideoSource(target, is_camera=True, name=source, clock=clock)
    if kind == "video" and "://" in argument:
        # A network stream (rtsp://, http://): live like a camera, so it is read
        # as it comes and reopened with backoff when it drops.
        return VideoSource(argument, is_camera=True, name=source, clock=clock)
    if kind == "video" and argument:
        path = Path(argument)
        if not path.is_file():
            raise InputError(f"capture source '{source}': expected an existing video file, "
                             f"got no file at {path}")
        return VideoSource(str(path), is_camera=False, name=source, clock=clock)
    if kind == "images" and argument:
        return ImageFolderSource(argument, config.image_dwell_s, clock)
    raise InputError(f"capture source '{source}': expected 'demo', 'camera:INDEX', "
                     f"'video:PATH' or 'images:DIR'")


__all__ = [
    "IMAGE_SUFFIXES", "ImageFolderSource", "VideoSource", "camera_names", "find_camera",
    "open_source",
]
