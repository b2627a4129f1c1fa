"""The demo's virtual camera: procedurally painted artworks on a wall, visited in turn.

:class:`DemoCamera` is the frame source ``CaptureConfig.source = "demo"``
opens (``capture.sources.open_source``): no hardware, artworks from
:mod:`capture.synthetic.artworks` hung on a textured wall, filmed at a slight
angle by a swaying camera, with lighting, sensor noise and the odd blurred
frame. It knows the ground truth (which artwork, where its picture is) and
reports it with every frame (:attr:`capture.frames.Frame.truth`), for tests
and for the demo's transition-delay report.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict

import cv2
import numpy as np

from capture.config import DemoSourceConfig
from capture.frames import Clock, Frame, FrameTruth
from capture.synthetic.artworks import ARTWORK_ASPECTS, artwork_style, make_artwork

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
        """Render the view at ``clock()``, with the ground truth of what is in view."""
        t = self._clock()
        index = self.artwork_index_at(t)
        truth = FrameTruth(index, artwork_style(index), self.change_time(t))
        frame = Frame(self.render(t), t, self._index, truth)
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


__all__ = ["DemoCamera"]
