"""Frame sources: where capture's frames come from.

The capture loop (``capture.loop``) only sees the :class:`FrameSource`
protocol: ``read()`` gives the next :class:`Frame` (or ``None`` when no new
frame is ready) and ``close()`` releases the device. :func:`open_source`
turns ``CaptureConfig.source`` into one of:

- ``demo``: :class:`DemoCamera`, the built-in virtual camera (no hardware):
  procedurally painted artworks on a wall, filmed at a slight angle by a
  swaying camera, with lighting, sensor noise and the odd blurred frame. It
  knows the ground truth (which artwork, where its picture is) for tests and
  for the demo's transition-delay report.
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
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from capture.artworks import ARTWORK_ASPECTS, make_artwork
from capture.config import CaptureConfig, DemoSourceConfig
from ground.errors import InputError

log = logging.getLogger(__name__)

Clock = Callable[[], float]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


@dataclass(frozen=True)
class Frame:
    """One camera frame: BGR uint8 pixels, the wall-clock time it was taken, its number."""

    image: np.ndarray
    timestamp: float
    index: int


class FrameSource(Protocol):
    """Anything capture can read frames from."""

    def read(self) -> Frame | None:
        """The next frame, or ``None`` when no new frame is available yet."""
        ...

    def close(self) -> None:
        """Release the device or file."""
        ...


# -- the built-in virtual camera --------------------------------------------

#: Side of the square the painting's area is scaled to on the wall canvas (px).
_PICTURE_SIDE = 400.0
_CANVAS_SIZE = (1600, 1000)  # wall canvas (width, height), painting at its centre
_PAN_S = 0.6  # the camera turns from one painting to the next in this long
_FOCAL = 1000.0  # virtual focal length in pixels, for the perspective tilt


class DemoCamera:
    """The built-in virtual camera: artworks hung on a wall, visited in turn.

    Artwork ``k`` is in view from ``start + k * dwell_s`` (cycling over
    ``config.artworks``). Around each change the camera pans: the old painting
    slides out to the left during the last ``_PAN_S / 2`` seconds, the new one
    slides in from the right during the first ``_PAN_S / 2`` seconds. The
    ground truth changes at exactly the change time (:meth:`change_time`).

    Frames are rendered on demand for ``clock()``: the painting (with a mount
    and a wooden frame) is baked once per artwork onto a textured, unevenly lit
    wall canvas; each frame warps that canvas through a slowly swaying camera
    homography, adds sensor noise, and every so often a slight blur.
    """

    def __init__(self, config: DemoSourceConfig | None = None, clock: Clock = time.time,
                 start: float | None = None) -> None:
        self.config = config or DemoSourceConfig()
        self._clock = clock
        self.start = clock() if start is None else start
        self.frame_size = (self.config.width, self.config.height)
        self._index = 0
        rng = np.random.default_rng(self.config.seed)
        self._light = _gallery_light(_CANVAS_SIZE)
        self._wall = _lit_wall(_wall_texture(rng, _CANVAS_SIZE), self._light)
        self._canvases: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        # A few noise frames, reused in turn: generating fresh Gaussian noise for
        # every 1280x720 frame would cost more than the detection it tests.
        self._noise = [_noise_pair(rng, self.frame_size, sigma=3.0) for _ in range(3)]
        self._motion = rng.uniform(0, 2 * np.pi, 16)

    # -- ground truth --

    def artwork_index_at(self, t: float) -> int:
        """Which artwork (0-based, cycling) the camera is on at time ``t``."""
        visit = math.floor((t - self.start) / self.config.dwell_s)
        return max(visit, 0) % self.config.artworks

    def change_time(self, t: float) -> float:
        """When the visit in progress at ``t`` began (the latest ground-truth change <= t)."""
        visit = max(math.floor((t - self.start) / self.config.dwell_s), 0)
        return self.start + visit * self.config.dwell_s

    def change_times(self, until: float) -> list[float]:
        """All ground-truth change times from the start up to ``until`` (the start included)."""
        count = max(math.floor((until - self.start) / self.config.dwell_s), 0) + 1
        return [self.start + k * self.config.dwell_s for k in range(count)]

    def truth_at(self, t: float) -> tuple[int, np.ndarray]:
        """(artwork index, picture quad TL,TR,BR,BL in frame pixels) at time ``t``.

        During a pan the quad may lie partly or wholly outside the frame; use
        :meth:`fully_visible` to tell.
        """
        index, homography = self._pose(t)
        _, picture = self._canvas(index)
        quad = cv2.perspectiveTransform(picture[None], homography)[0]
        return index, quad.astype(np.float32)

    def fully_visible(self, t: float, margin: float = 4.0) -> bool:
        """Whether the picture at ``t`` lies inside the frame with ``margin`` pixels to spare."""
        _, quad = self.truth_at(t)
        width, height = self.frame_size
        return bool(
            (quad[:, 0] >= margin).all() and (quad[:, 0] <= width - 1 - margin).all()
            and (quad[:, 1] >= margin).all() and (quad[:, 1] <= height - 1 - margin).all()
        )

    # -- FrameSource --

    def read(self) -> Frame:
        """Render the view at ``clock()``."""
        t = self._clock()
        frame = Frame(self.render(t), t, self._index)
        self._index += 1
        return frame

    def close(self) -> None:
        """Nothing to release."""
        self._canvases.clear()

    def render(self, t: float) -> np.ndarray:
        """The camera image at time ``t`` (BGR uint8, ``frame_size``)."""
        index, homography = self._pose(t)
        canvas, _ = self._canvas(index)
        image = cv2.warpPerspective(canvas, homography, self.frame_size, flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REFLECT)
        tick = int(round((t - self.start) * 30.0))
        if _hash01(tick, 1) < 0.08:  # an occasional slightly soft frame (focus hunting, shake)
            image = cv2.GaussianBlur(image, (0, 0), 1.2)
        plus, minus = self._noise[tick % len(self._noise)]
        cv2.add(image, plus, dst=image)
        cv2.subtract(image, minus, dst=image)
        return image

    # -- internals --

    def _canvas(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The wall canvas with artwork ``index`` hung on it, and its picture quad (canvas px)."""
        cached = self._canvases.get(index)
        if cached is not None:
            self._canvases.move_to_end(index)
            return cached
        cached = _hang(self._wall, self._light, index, self.config.seed)
        self._canvases[index] = cached
        while len(self._canvases) > 3:  # current, next, and one spare
            self._canvases.popitem(last=False)
        return cached

    def _pose(self, t: float) -> tuple[int, np.ndarray]:
        """(artwork index, canvas -> frame homography) at time ``t``."""
        since = t - self.start
        dwell = self.config.dwell_s
        visit = max(math.floor(since / dwell), 0)
        into = since - visit * dwell
        width, height = self.frame_size
        pan = 0.0  # horizontal offset, in frame widths
        half = _PAN_S / 2
        if visit > 0 and into < half:  # the new painting slides in from the right
            pan = 1.3 * (1.0 - _smoothstep(into / half))
        elif dwell - into < half:  # the old one slides out to the left
            pan = -1.3 * _smoothstep(1.0 - (dwell - into) / half)
        index = visit % self.config.artworks
        # Each visit has its own viewpoint (standing a little to one side, a
        # little closer or further); within a visit the camera sways slowly (a
        # tripod being nudged, a hand-held camera breathing).
        phase = self._motion
        rng_visit = np.random.default_rng([self.config.seed, visit])
        yaw0, pitch0 = rng_visit.uniform(-12, 12), rng_visit.uniform(-6, 6)
        scale0 = rng_visit.uniform(0.9, 1.35) * min(width / 1280, height / 720)
        sway = [math.sin(2 * math.pi * f * since + p) for f, p in
                zip((0.11, 0.17, 0.07, 0.23, 0.13, 0.05, 1.7, 2.3), phase[:8], strict=True)]
        yaw = math.radians(yaw0 + 2.0 * sway[0])
        pitch = math.radians(pitch0 + 1.5 * sway[1])
        roll = math.radians(1.5 * sway[2])
        scale = scale0 * (1.0 + 0.04 * sway[5])
        drift_x = width * (0.04 * sway[3] + 0.002 * sway[6]) + pan * width
        drift_y = height * (0.04 * sway[4] + 0.002 * sway[7])
        return index, _camera_homography(yaw, pitch, roll, scale, (width / 2 + drift_x,
                                                                   height / 2 + drift_y))


def _camera_homography(yaw: float, pitch: float, roll: float, scale: float,
                       centre: tuple[float, float]) -> np.ndarray:
    """Canvas -> frame: a camera rotated by (yaw, pitch, roll) looking at the wall.

    The wall canvas, centred on the painting and scaled, is the frontal image;
    ``K R K^-1`` (the homography of a rotating pinhole camera, Hartley &
    Zisserman 8.4.2) tilts it; a translation puts the painting's centre at
    ``centre``.
    """
    cw, ch = _CANVAS_SIZE
    to_centre = np.array([[scale, 0, -scale * cw / 2], [0, scale, -scale * ch / 2], [0, 0, 1]])
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    r_roll = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    k = np.diag([_FOCAL, _FOCAL, 1.0])
    rotate = k @ r_roll @ r_pitch @ r_yaw @ np.linalg.inv(k)
    h = rotate @ to_centre
    mapped = h @ np.array([cw / 2, ch / 2, 1.0])
    mapped = mapped[:2] / mapped[2]
    shift = np.array([[1, 0, centre[0] - mapped[0]], [0, 1, centre[1] - mapped[1]], [0, 0, 1]])
    return shift @ h


def _hang(wall: np.ndarray, light: np.ndarray, index: int,
          seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hang artwork ``index`` in a mount and frame on a copy of the lit ``wall``.

    Only the region around the frame is touched (the wall is lit once, in
    :func:`_lit_wall`), so hanging a new painting costs tens of milliseconds.
    """
    aspect = ARTWORK_ASPECTS[index % len(ARTWORK_ASPECTS)]
    pw = int(round(_PICTURE_SIDE * math.sqrt(aspect)))
    ph = int(round(_PICTURE_SIDE / math.sqrt(aspect)))
    picture = make_artwork(index, seed, (pw, ph))
    mount = int(0.12 * min(pw, ph))
    moulding = 24
    cw, ch = _CANVAS_SIZE
    x0, y0 = (cw - pw) // 2, (ch - ph) // 2
    left, top = x0 - mount - moulding, y0 - mount - moulding
    right, bottom = x0 + pw + mount + moulding, y0 + ph + mount + moulding
    pad = 40  # room for the drop shadow
    ry0, ry1, rx0, rx1 = top - pad, bottom + pad, left - pad, right + pad
    canvas = wall.copy()
    region = canvas[ry0:ry1, rx0:rx1].astype(np.float32)
    rh, rw = region.shape[:2]
    # A drop shadow under the frame (light from above left).
    shadow = np.zeros((rh, rw), np.float32)
    cv2.rectangle(shadow, (pad + 6, pad + 10), (rw - pad + 5, rh - pad + 9), 1.0, -1)
    region *= (1.0 - 0.35 * cv2.GaussianBlur(shadow, (0, 0), 8))[..., None]
    # The moulding (dark wood with grain along its length), the mount, the picture.
    hung = np.zeros((bottom - top, right - left, 3), np.uint8)
    hung[:] = (38, 62, 96)
    grain = np.random.default_rng([seed, index, 99]).normal(0, 6, (bottom - top, 1, 1))
    hung = np.clip(hung + grain, 0, 255).astype(np.uint8)
    hung[moulding:-moulding, moulding:-moulding] = (226, 230, 232)
    hung[moulding + mount:moulding + mount + ph, moulding + mount:moulding + mount + pw] = picture
    lit = hung.astype(np.float32) * light[top:bottom, left:right, None]
    region[pad:pad + (bottom - top), pad:pad + (right - left)] = lit
    canvas[ry0:ry1, rx0:rx1] = np.clip(region, 0, 255).astype(np.uint8)
    quad = np.array([[x0, y0], [x0 + pw, y0], [x0 + pw, y0 + ph], [x0, y0 + ph]], np.float32)
    return canvas, quad


def _gallery_light(size: tuple[int, int]) -> np.ndarray:
    """Gallery lighting as a gain map: a soft spot on the painting, a gradient across the wall."""
    cw, ch = size
    ys, xs = np.mgrid[0:ch, 0:cw].astype(np.float32)
    spot = np.exp(-(((xs - cw / 2) / (cw * 0.45)) ** 2 + ((ys - ch * 0.4) / (ch * 0.55)) ** 2))
    return (0.72 + 0.28 * spot + 0.08 * (xs / cw - 0.5)).astype(np.float32)


def _lit_wall(wall: np.ndarray, light: np.ndarray) -> np.ndarray:
    return np.clip(wall.astype(np.float32) * light[..., None], 0, 255).astype(np.uint8)


def _wall_texture(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A warm grey plaster wall: low-frequency blotches and fine grain."""
    width, height = size
    coarse = cv2.resize(rng.normal(0, 1, (height // 40, width // 40)).astype(np.float32),
                        (width, height), interpolation=cv2.INTER_CUBIC)
    fine = cv2.GaussianBlur(rng.normal(0, 1, (height, width)).astype(np.float32), (0, 0), 1.0)
    base = np.array([150, 160, 168], np.float32)  # BGR: a warm light grey
    wall = base + (6.0 * coarse + 3.0 * fine)[..., None]
    return np.clip(wall, 0, 255).astype(np.uint8)


def _noise_pair(rng: np.random.Generator, size: tuple[int, int],
                sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Sensor noise split into its positive and negative parts, for saturating uint8 adds."""
    width, height = size
    noise = np.rint(rng.normal(0, sigma, (height, width, 3))).astype(np.int16)
    return (np.clip(noise, 0, 255).astype(np.uint8), np.clip(-noise, 0, 255).astype(np.uint8))


def _smoothstep(x: float) -> float:
    x = min(max(x, 0.0), 1.0)
    return x * x * (3 - 2 * x)


def _hash01(n: int, salt: int) -> float:
    """A repeatable pseudo-random number in [0, 1) for integer ``n``."""
    value = (n * 2654435761 + salt * 40503) & 0xFFFFFFFF
    value ^= value >> 16
    value = (value * 0x45D9F3B) & 0xFFFFFFFF
    value ^= value >> 16
    return value / 2**32


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
    "Clock", "DemoCamera", "Frame", "FrameSource", "ImageFolderSource", "VideoSource",
    "camera_names", "find_camera", "open_source",
]
