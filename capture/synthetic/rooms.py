"""What real gallery rooms add to a synthetic scene: the effects of the ``"rooms"`` style.

Where it sits: :class:`capture.synthetic.scenes.SceneGenerator` with ``style="rooms"``
builds its scenes from these pieces; nothing in the live path uses them. Each
one stands for something the real photos of ``../shared/data/galleries-estense``
show and the ``"classic"`` scenes lack:

- :func:`room_mounting`: gilded, carved ("ornate"), plain gilt, dark wood or
  thin frames rendered as a relief (a moulding profile plus carving, lit from
  above left, with specular gilt highlights), an inner slip (liner) between
  frame and picture, and a picture with aged varnish (warmer, flatter);
- :func:`fit_room_camera`: a physical camera (:class:`RoomCamera`) looking at
  the wall from up to 70 degrees off its normal, far enough back that every
  work stays in frame after lens distortion; a frame's face is a plane proud
  of the wall, so its sides show at an angle;
- :class:`Fisheye`: GoPro-like barrel distortion of the whole frame, and the
  same mapping for the ground-truth corners;
- :func:`label_card`, :func:`wall_text_panel`: caption cards and wall texts;
- :func:`sensor_noise`, :func:`jpeg_blocks`, :func:`motion_blur`: a small,
  dim, hand-held camera (shot and read noise amplified by auto exposure,
  low-quality JPEG, a slow shutter);
- :func:`seen_from_the_side`: one work alone on a plain wall at a given angle
  (the steep-view benchmark's and tests' scene).

Every function draws only from the ``rng`` it is given, so a scene stays a
function of its seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

#: The mountings of the rooms style (the ``frame_kind`` of its truths).
ROOM_FRAME_KINDS: tuple[str, ...] = ("ornate", "gilt", "dark_wood", "canvas")

_GOLDS: tuple[tuple[float, float, float], ...] = (
    (45, 135, 190), (60, 150, 200), (35, 110, 165), (70, 160, 205))
_SLIPS: tuple[tuple[float, float, float], ...] = (
    (185, 205, 215), (95, 175, 215), (40, 32, 50), (150, 155, 158), (120, 190, 225))
_LIGHT = np.array([-0.45, -0.7, 0.55])  # towards the light: above left, in front
_LIGHT = _LIGHT / np.linalg.norm(_LIGHT)


def room_mounting(rng: np.random.Generator, artwork: np.ndarray, kind: str,
                  picture_size: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """The work in a ``kind`` frame (wall units, float32 BGR) and its picture rect there.

    The rect (TL, TR, BR, BL) is the picture alone, inside the frame and the slip.
    """
    if kind not in ROOM_FRAME_KINDS:
        raise ValueError(f"frame kind must be one of {ROOM_FRAME_KINDS}, got {kind!r}")
    pw, ph = int(round(picture_size[0])), int(round(picture_size[1]))
    short = min(pw, ph)
    picture = _varnish(rng, cv2.resize(artwork, (pw, ph), interpolation=cv2.INTER_AREA))
    if kind == "ornate":
        frame_w, slip_w = int(rng.uniform(0.09, 0.2) * short), int(rng.uniform(0.0, 0.05) * short)
        colour, carving, shine = _GOLDS[int(rng.integers(len(_GOLDS)))], 1.0, 0.8
    elif kind == "gilt":
        frame_w, slip_w = int(rng.uniform(0.05, 0.11) * short), int(rng.uniform(0.0, 0.04) * short)
        colour, carving, shine = _GOLDS[int(rng.integers(len(_GOLDS)))], 0.25, 0.7
    elif kind == "dark_wood":
        frame_w, slip_w = int(rng.uniform(0.05, 0.1) * short), int(rng.uniform(0.01, 0.04) * short)
        colour = (20.0, 30.0, 45.0) if rng.random() < 0.6 else (18.0, 18.0, 20.0)
        carving, shine = 0.1, 0.25
    else:  # canvas: a thin strip frame at most, sometimes none
        frame_w = int(rng.uniform(0.008, 0.02) * short) if rng.random() < 0.6 else 0
        slip_w, colour, carving, shine = 0, (25.0, 25.0, 28.0), 0.0, 0.2
    slip_w = slip_w if slip_w >= 2 else 0
    total = frame_w + slip_w
    height, width = ph + 2 * total, pw + 2 * total
    hung = np.empty((height, width, 3), np.float32)
    if total:
        relief = _frame_relief(rng, (width, height), frame_w, slip_w, carving)
        shading, specular = _lit(relief)
        inner = _SLIPS[int(rng.integers(len(_SLIPS)))] if kind != "dark_wood" \
            else _GOLDS[int(rng.integers(len(_GOLDS)))]
        depth = _ring_depth((width, height))
        base = np.where((depth < frame_w)[..., None], np.array(colour, np.float32),
                        np.array(inner, np.float32))
        if kind in ("ornate", "gilt"):  # worn gilt: darker, browner patches
            wear = _smooth_noise(rng, (height, width), max(3.0, 0.05 * short))
            base = base * (1.0 - 0.25 * np.clip(wear, 0, 1))[..., None]
        hung[:] = base * (0.3 + 0.9 * shading)[..., None]
        hung += (shine * 255.0 * specular)[..., None] * np.array([0.75, 0.92, 1.0], np.float32)
        hung += rng.normal(0, 3.0, (height, width, 1)).astype(np.float32)
    hung[total:total + ph, total:total + pw] = picture
    rect = np.array([[total, total], [total + pw, total], [total + pw, total + ph],
                     [total, total + ph]], np.float32)
    return np.clip(hung, 0, 255), rect


def _varnish(rng: np.random.Generator, picture: np.ndarray) -> np.ndarray:
    """Aged varnish on some works: flatter, darker and warmer than the catalogue scan."""
    out = picture.astype(np.float32)
    if rng.random() < 0.5:
        contrast = float(rng.uniform(0.65, 0.95))
        out = out.mean() + contrast * (out - out.mean())
        out *= np.array([rng.uniform(0.7, 0.9), rng.uniform(0.85, 1.0), 1.0], np.float32)
    return out


def _ring_depth(size: tuple[int, int]) -> np.ndarray:
    """Per pixel, the distance in from the outer edge of a ``size`` frame (mitred corners)."""
    width, height = size
    xs = np.arange(width, dtype=np.float32)
    ys = np.arange(height, dtype=np.float32)
    across = np.minimum(xs, width - 1 - xs)[None, :]
    down = np.minimum(ys, height - 1 - ys)[:, None]
    return np.minimum(across, down)


def _frame_relief(rng: np.random.Generator, size: tuple[int, int], frame_w: int, slip_w: int,
                  carving: float) -> np.ndarray:
    """A height map (wall units) of the moulding and the slip, carved where ``carving`` > 0.

    The profile across the moulding is a ramp and a few ridges; the carving is
    a repeating leaf motif along each side plus fine noise, on the widest ridge.
    """
    width, height = size
    depth = _ring_depth(size)
    t = depth / max(frame_w, 1)
    profile = 0.5 * np.clip(t / 0.12, 0, 1)  # the outer lip
    ridges = int(rng.integers(2, 5))
    centres = np.sort(rng.uniform(0.2, 0.85, ridges))
    for centre in centres:
        spread = rng.uniform(0.04, 0.12)
        profile = profile + rng.uniform(0.15, 0.5) * np.exp(-((t - centre) / spread) ** 2)
    profile = profile * np.clip((1.0 - t) / 0.06, 0, 1)  # drops down to the slip
    relief = profile * frame_w * 0.35
    if carving > 0:
        xs = np.arange(width, dtype=np.float32)[None, :]
        ys = np.arange(height, dtype=np.float32)[:, None]
        along = np.where(np.minimum(xs, width - 1 - xs) < np.minimum(ys, height - 1 - ys),
                         ys, xs)  # the coordinate along the side each pixel is on
        period = max(6.0, frame_w * rng.uniform(0.5, 1.0))
        band = np.exp(-((t - centres[0]) / 0.15) ** 2)
        leaves = np.cos(2 * np.pi * along / period) * np.cos(np.pi * (t - centres[0]) / 0.3)
        fine = _smooth_noise(rng, (height, width), rng.uniform(0.8, 1.6))
        relief = relief + carving * frame_w * 0.12 * band * (leaves + 0.8 * fine)
    if slip_w:  # the slip: flat and low, with a bevel down to the picture
        s = np.clip((depth - frame_w) / slip_w, 0, 1)
        in_slip = depth >= frame_w
        relief = np.where(in_slip, slip_w * 0.3 * (1.0 - 0.6 * np.clip((s - 0.6) / 0.4, 0, 1)),
                          relief)
    return relief.astype(np.float32)


def _lit(relief: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lambert shading and a gilt highlight of a height map, lit by ``_LIGHT``."""
    gy, gx = np.gradient(relief)
    norm = np.sqrt(gx * gx + gy * gy + 1.0)
    lambert = np.clip((-gx * _LIGHT[0] - gy * _LIGHT[1] + _LIGHT[2]) / norm, 0, 1)
    specular = np.clip((lambert - 0.8) / 0.2, 0, 1) ** 2
    return lambert.astype(np.float32), specular.astype(np.float32)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian noise blurred to ``sigma`` px and renormalised to unit spread."""
    noise = cv2.GaussianBlur(rng.standard_normal(shape, dtype=np.float32), (0, 0), float(sigma))
    return np.asarray(noise / max(float(noise.std()), 1e-6), np.float32)


_WALLS: tuple[tuple[float, float, float], ...] = (
    (190, 205, 215), (200, 203, 205), (170, 190, 205), (215, 222, 228), (150, 160, 165),
    (175, 185, 190), (60, 60, 115), (95, 120, 100))


def room_wall(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A painted museum wall (float32 BGR): mostly warm whites and greys, now and then a colour."""
    width, height = size
    # Mostly the warm whites and greys of the real rooms; a red or green room now and then.
    weights = np.array([4, 4, 4, 4, 3, 3, 1, 1], np.float64)
    base = np.array(_WALLS[int(rng.choice(len(_WALLS), p=weights / weights.sum()))], np.float32)
    base *= np.float32(rng.uniform(0.9, 1.05))
    coarse = cv2.resize(rng.normal(0, 3.0, (height // 96 + 1, width // 96 + 1)).astype(np.float32),
                        (width, height), interpolation=cv2.INTER_CUBIC)
    # The wall's fine grain is left to the sensor noise, which every frame gets.
    return np.clip(coarse[..., None] + base, 0, 255)


# -- camera and lens -------------------------------------------------------------


@dataclass(frozen=True)
class Fisheye:
    """Barrel distortion about the frame centre, as a GoPro-like wide lens shows.

    A frame pixel at normalised radius ``r`` (1 = the corner) shows the
    undistorted scene at radius ``r (1 + k r^2) / (1 + k)``: corners stay put,
    the centre is magnified by ``1 + k`` and straight lines bow outwards.
    """

    strength: float  # k; 0 is no distortion, 0.3 is a strong action camera
    size: tuple[int, int]  # frame (width, height)

    @property
    def _centre(self) -> np.ndarray:
        return np.array([(self.size[0] - 1) / 2, (self.size[1] - 1) / 2])

    @property
    def _corner(self) -> float:
        return float(math.hypot(self.size[0] / 2, self.size[1] / 2))

    def distort_points(self, points: np.ndarray) -> np.ndarray:
        """Where undistorted frame points ``(N, 2)`` land in the distorted frame."""
        k = self.strength
        offset = np.asarray(points, np.float64) - self._centre
        undistorted = np.hypot(offset[:, 0], offset[:, 1]) / self._corner
        target = undistorted * (1.0 + k)
        radius = target.copy()
        for _ in range(30):  # Newton on r (1 + k r^2) = target; monotonic, converges fast
            radius -= (radius * (1.0 + k * radius ** 2) - target) / (1.0 + 3.0 * k * radius ** 2)
        scale = np.where(undistorted > 1e-12, radius / np.maximum(undistorted, 1e-12),
                         1.0 / (1 + k))
        return (self._centre + offset * scale[:, None]).astype(np.float32)

    def undistort_points(self, points: np.ndarray) -> np.ndarray:
        """Where distorted frame points ``(N, 2)`` were before the lens (the inverse map)."""
        offset = np.asarray(points, np.float64) - self._centre
        r2 = (offset[:, 0] ** 2 + offset[:, 1] ** 2) / self._corner ** 2
        scale = (1.0 + self.strength * r2) / (1.0 + self.strength)
        return (self._centre + offset * scale[:, None]).astype(np.float32)

    def apply(self, image: np.ndarray, interpolation: int = cv2.INTER_LINEAR) -> np.ndarray:
        """``image`` (a whole frame of ``size``) as the distorting lens shows it."""
        width, height = self.size
        cx, cy = self._centre
        dx = (np.arange(width, dtype=np.float32) - np.float32(cx))[None, :]
        dy = (np.arange(height, dtype=np.float32) - np.float32(cy))[:, None]
        r2 = (dx * dx + dy * dy) * np.float32(1.0 / self._corner ** 2)
        scale = (1.0 + np.float32(self.strength) * r2) * np.float32(1.0 / (1.0 + self.strength))
        return cv2.remap(image, np.float32(cx) + dx * scale, np.float32(cy) + dy * scale,
                         interpolation, borderMode=cv2.BORDER_REFLECT)


@dataclass(frozen=True)
class RoomCamera:
    """A pinhole camera in front of the wall: the wall is the plane Z = 0 (wall units,
    y down) and the room is Z < 0, so a frame's front face ``d`` units proud of the
    wall is the plane Z = -d."""

    rotation: np.ndarray  # (3, 3) wall -> camera axes
    centre: np.ndarray  # (3,) the camera's position
    intrinsics: np.ndarray  # (3, 3) K; its principal point also slides the layout in frame

    def homography(self, depth: float = 0.0) -> np.ndarray:
        """Plane Z = -``depth`` -> frame: ``K R [e1 e2 (-depth e3 - C)]`` (H & Z 8.1)."""
        plane = np.c_[np.eye(3)[:, :2], np.array([0.0, 0.0, -depth]) - self.centre]
        return self.intrinsics @ self.rotation @ plane

    def depths(self, points: np.ndarray) -> np.ndarray:
        """Distance along the optical axis of wall-space points ``(N, 3)``."""
        return (self.rotation @ (np.asarray(points, np.float64) - self.centre).T)[2]

    def project(self, points: np.ndarray) -> np.ndarray:
        """Frame pixels (undistorted) of wall-space points ``(N, 3)`` in front of the camera."""
        seen = self.intrinsics @ self.rotation @ (np.asarray(points, np.float64) - self.centre).T
        return (seen[:2] / seen[2]).T

    def slid(self, dx: float, dy: float) -> RoomCamera:
        """The same camera with the picture slid by (dx, dy) px (a shifted principal point)."""
        move = np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])
        return RoomCamera(self.rotation, self.centre, move @ self.intrinsics)


def room_camera(yaw: float, pitch: float, roll: float, target: tuple[float, float],
                distance: float, size: tuple[int, int], focal: float) -> RoomCamera:
    """A camera ``distance`` from ``target`` on the wall, looking at it.

    The optical axis meets the wall at ``target`` (wall units, y down) at ``yaw``
    degrees off the wall's normal, then ``pitch`` up/down and ``roll`` about the axis.
    """
    a, p, r = (math.radians(v) for v in (yaw, pitch, roll))
    r_yaw = np.array([[math.cos(a), 0, -math.sin(a)], [0, 1, 0], [math.sin(a), 0, math.cos(a)]])
    r_pitch = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    r_roll = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    rotation = r_roll @ r_pitch @ r_yaw
    axis = rotation.T @ np.array([0.0, 0.0, 1.0])  # the optical axis in wall coordinates
    centre = np.array([target[0], target[1], 0.0]) - distance * axis
    k = np.array([[focal, 0, size[0] / 2], [0, focal, size[1] / 2], [0, 0, 1]])
    return RoomCamera(rotation, centre, k)


def fit_room_camera(rng: np.random.Generator, outlines: list[np.ndarray], yaw: float,
                    pitch: float, roll: float, size: tuple[int, int], focal: float,
                    fill: float, margin: float,
                    distort: Callable[[np.ndarray], np.ndarray] | None = None) -> RoomCamera:
    """A camera that keeps every outline in frame after the lens ``distort``.

    ``outlines`` are closed polygons in wall space, ``(N, 2)`` on the wall or
    ``(N, 3)`` with Z (a frame's front face is proud of the wall). The camera
    aims at their middle from ``yaw`` degrees off the wall's normal and backs
    away until all of them, densely sampled along their edges and passed
    through the lens, fit inside the frame less ``margin``; the layout is then
    slid somewhere into the slack.
    """
    width, height = size
    points = np.concatenate([_densify(np.c_[o, np.zeros(len(o))] if o.shape[1] == 2 else o)
                             for o in outlines]) if outlines else np.zeros((1, 3))
    target = (float(points[:, 0].mean()), float(points[:, 1].mean()))
    span = max(float(np.ptp(points[:, 0])) / width, float(np.ptp(points[:, 1])) / height, 1e-3)
    distance = focal * span / fill
    lens = distort or (lambda p: p)
    inner = (width * margin, height * margin, width * (1 - margin), height * (1 - margin))

    def fits(camera: RoomCamera) -> bool:
        seen = lens(camera.project(points))
        return bool(seen[:, 0].min() >= inner[0] and seen[:, 1].min() >= inner[1]
                    and seen[:, 0].max() <= inner[2] and seen[:, 1].max() <= inner[3])

    camera = room_camera(yaw, pitch, roll, target, distance, size, focal)
    for _ in range(80):
        camera = room_camera(yaw, pitch, roll, target, distance, size, focal)
        depth = camera.depths(points)
        if depth.min() > 0.25 * depth.max():
            projected = camera.project(points)
            camera = camera.slid(width / 2 - (projected[:, 0].min() + projected[:, 0].max()) / 2,
                                 height / 2 - (projected[:, 1].min() + projected[:, 1].max()) / 2)
            if fits(camera):
                break
        distance *= 1.08
    # Slide the layout off-centre into the slack; halve the slide until it still fits.
    slide = rng.uniform(-1, 1, 2) * np.array([width, height]) * 0.5
    for _ in range(8):
        moved = camera.slid(float(slide[0]), float(slide[1]))
        if fits(moved):
            return moved
        slide /= 2
    return camera


def _densify(outline: np.ndarray, steps: int = 8) -> np.ndarray:
    """Points along a closed outline's edges (lens distortion bends edges, not only corners)."""
    corners = np.asarray(outline, np.float64)  # (N, 2) or (N, 3)
    following = np.roll(corners, -1, axis=0)
    t = np.linspace(0, 1, steps, endpoint=False)[None, :, None]
    return (corners[:, None] + t * (following - corners)[:, None]).reshape(-1, corners.shape[1])


# -- wall furniture ---------------------------------------------------------------


_LETTERS = "abcdefghijklmnopqrstuvwxyz      "


def _words(rng: np.random.Generator, length: int) -> str:
    return "".join(_LETTERS[int(i)] for i in rng.integers(len(_LETTERS), size=length)).strip()


def label_card(rng: np.random.Generator, work_height: float) -> np.ndarray:
    """A caption card (wall units, float32 BGR): white or dark, a title and a few lines."""
    card_h = max(24, int(work_height * rng.uniform(0.14, 0.3)))
    card_w = max(18, int(card_h * rng.uniform(0.6, 1.4)))
    dark = rng.random() < 0.3
    paper = (75.0, 78.0, 80.0) if dark else (238.0, 240.0, 242.0)
    ink = (225.0, 225.0, 225.0) if dark else (35.0, 35.0, 40.0)
    card = np.full((card_h, card_w, 3), paper, np.uint8)  # putText draws on 8-bit only
    lines = int(rng.integers(3, 7))
    scale = card_h / (lines + 2) / 30.0
    for row in range(lines):
        y = int((row + 1.5) * card_h / (lines + 2))
        cv2.putText(card, _words(rng, int(rng.integers(6, 16))), (3, y),
                    cv2.FONT_HERSHEY_SIMPLEX, scale * (1.4 if row == 0 else 1.0), ink,
                    1, cv2.LINE_AA)
    if rng.random() < 0.4:  # the black tab some museums print at the bottom
        cv2.rectangle(card, (card_w // 2 - 2, int(card_h * 0.75)),
                      (card_w // 2 + 2, card_h - 3), (10.0, 10.0, 10.0), -1)
    return card.astype(np.float32)


def wall_text_panel(rng: np.random.Generator, height: float,
                    wall: tuple[float, float, float]) -> np.ndarray:
    """A room text on the wall (wall units): a heading and paragraphs, on a board or painted."""
    panel_h = max(40, int(height))
    panel_w = max(30, int(panel_h * rng.uniform(0.6, 1.2)))
    board = rng.random() < 0.5
    background = (228.0, 230.0, 232.0) if board else tuple(float(c) for c in wall)
    ink = (40.0, 40.0, 45.0) if float(np.mean(background)) > 110 else (220.0, 220.0, 220.0)
    panel = np.full((panel_h, panel_w, 3), background, np.uint8)
    scale = panel_h / 800.0  # small print: 30-40 lines of it on the panel
    cv2.putText(panel, _words(rng, 10).upper(), (6, int(panel_h * 0.1)),
                cv2.FONT_HERSHEY_DUPLEX, scale * 2.0, ink, max(1, int(scale * 2)), cv2.LINE_AA)
    y = panel_h * 0.22
    while y < panel_h * 0.92:
        if rng.random() < 0.15:
            y += panel_h * 0.03  # a paragraph break
        cv2.putText(panel, _words(rng, int(rng.integers(30, 50))), (6, int(y)),
                    cv2.FONT_HERSHEY_SIMPLEX, scale, ink, 1, cv2.LINE_AA)
        y += panel_h * 0.026
    return panel.astype(np.float32)


# -- camera and sensor -------------------------------------------------------------


def white_balance(rng: np.random.Generator) -> np.ndarray:
    """Per-channel gains (BGR) of the warm, tungsten-lit rooms a phone does not fully correct."""
    if rng.random() < 0.6:
        return np.array([rng.uniform(0.72, 0.9), rng.uniform(0.92, 1.0), 1.0], np.float32)
    return np.ones(3, np.float32)


def sensor_noise(rng: np.random.Generator, image: np.ndarray, exposure: float) -> np.ndarray:
    """Shot and read noise of a small sensor, then auto exposure's gain of ``exposure``.

    Shot noise grows with the signal (variance ~ signal), read noise is flat;
    a dim room that the camera brightens amplifies both (and shows colour noise).
    """
    shot = rng.uniform(0.15, 0.5)
    read = rng.uniform(1.0, 3.0)
    sigma = cv2.sqrt(np.asarray(cv2.max(image, 0.0) * np.float32(shot) + np.float32(read ** 2),
                                np.float32))
    noisy = rng.standard_normal(image.shape, dtype=np.float32)
    noisy *= sigma
    noisy += image
    noisy *= np.float32(exposure)
    return noisy


def motion_blur(rng: np.random.Generator, image: np.ndarray) -> str:
    """A hand-held, slow shutter (a straight streak) or missed focus, in place."""
    if rng.random() < 0.35:
        sigma = float(rng.uniform(1.0, 3.0))
        image[:] = cv2.GaussianBlur(image, (0, 0), sigma)
        return f"focus {sigma:.1f}"
    length = int(rng.integers(5, 22))
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0 / length
    angle = float(rng.uniform(-30, 30)) if rng.random() < 0.7 else float(rng.uniform(0, 180))
    rotation = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), angle, 1.0)
    kernel = np.asarray(cv2.warpAffine(kernel, rotation, (length, length)), np.float32)
    kernel /= max(float(kernel.sum()), 1e-6)
    image[:] = cv2.filter2D(image, -1, kernel)
    return f"motion {length}px"


def jpeg_blocks(frame: np.ndarray, quality: int) -> np.ndarray:
    """``frame`` (uint8 BGR) after a JPEG round trip at ``quality`` (blocking, ringing)."""
    ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # OpenCV always encodes a uint8 BGR frame; a failure here is a bug
        raise RuntimeError("JPEG encoding of a synthetic frame failed")
    return np.asarray(cv2.imdecode(data, cv2.IMREAD_COLOR), np.uint8)


def seen_from_the_side(painting: np.ndarray, yaw_deg: float, height: float,
                       rng: np.random.Generator,
                       size: tuple[int, int] = (1280, 720)) -> tuple[np.ndarray, np.ndarray]:
    """``painting`` alone on a plain wall, turned ``yaw_deg`` about its vertical axis and
    filmed by a pinhole camera (focal 900 px at 1280 px wide) at ``size``, the work
    ``height`` of the frame tall were it frontal; softened (0.8 px) and JPEG-coded
    (quality 80): the frame, and the painting's quad (TL, TR, BR, BL). A clean measure of
    how far off its axis a work can be seen and still be located; the rooms scenes mix
    the angle with frames, light and visitors."""
    width, frame_h = size
    focal = 900.0 * width / 1280.0
    rows, cols = painting.shape[:2]
    distance = 3.0
    tall = height * frame_h * distance / focal
    wide = tall * cols / rows
    corners = np.array([[-wide / 2, -tall / 2, 0], [wide / 2, -tall / 2, 0],
                        [wide / 2, tall / 2, 0], [-wide / 2, tall / 2, 0]])
    yaw = math.radians(yaw_deg)
    turn = np.array([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0],
                     [-math.sin(yaw), 0, math.cos(yaw)]])
    points = corners @ turn.T + [0, 0, distance]
    quad = np.stack([focal * points[:, 0] / points[:, 2] + width / 2,
                     focal * points[:, 1] / points[:, 2] + frame_h / 2], axis=1).astype(np.float32)
    warp = cv2.getPerspectiveTransform(
        np.array([[0, 0], [cols, 0], [cols, rows], [0, rows]], np.float32), quad)
    frame = np.clip(rng.normal((150, 160, 170), 4, (frame_h, width, 3)), 0, 255).astype(np.uint8)
    cv2.warpPerspective(painting, warp, size, dst=frame, flags=cv2.INTER_AREA,
                        borderMode=cv2.BORDER_TRANSPARENT)
    return jpeg_blocks(cv2.GaussianBlur(frame, (0, 0), 0.8), 80), quad


__all__ = [
    "ROOM_FRAME_KINDS", "Fisheye", "RoomCamera", "fit_room_camera", "jpeg_blocks", "label_card",
    "motion_blur", "room_camera", "room_mounting", "room_wall", "seen_from_the_side",
    "sensor_noise", "wall_text_panel", "white_balance",
]
