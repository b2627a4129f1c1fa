"""Other cameras on the same photos: seeded degradations of a view, with its truth moved along.

Where it sits: ``art2mus bench capture --photos DIR --degrade NAME`` runs the
real-photo bench (:func:`capture.bench.run_photo_bench`) on each photo as a
worse camera, a worse light or a worse angle would have taken it. The photos
we have are few; the rooms capture must work in are many. Measuring how the
same photos fare under each degradation says where the method is fragile
without fitting it to these photos' particulars.

Each degradation acts on the frame at the size the bench runs it (after the
camera's scaler), with its strength relative to that size, and returns the
map of frame points from before to after, so the truth follows the pixels
(:meth:`capture.bench.PhotoTruth.warped`). The strengths are those of common
cheap cameras, not extremes:

- ``jpeg``: quality 20 (a streaming camera on a busy network);
- ``dim``: a third of the light, sensor noise (sigma 3 of 255 before gain), the
  camera's auto exposure bringing the level back up (noise amplified with it);
- ``blur``: a pan during the exposure, a straight 1.2 %-of-width motion streak;
- ``fisheye``: an action camera's barrel distortion (k = 0.3 on radii normalised to
  the half diagonal, corners kept in place);
- ``turn``: the view as the camera turned 35 degrees about its vertical axis would
  project it (a pure rotation, focal length = frame width, ~53 degree field of view),
  scaled to keep all of it in the frame: walls more foreshortened and smaller,
  black wedges where nothing was seen;
- ``far``: the view from twice as far (a wider lens, or a step back): the photo at half
  size in the middle of the frame, every work half as big; round it, the photo's edge
  carried on and softened (a flat surround's sharp edge would be a large rectangle no real
  view has, which the quad finder takes for a picture);
- ``visitors``: two people standing between the camera and the wall, in dark
  clothes, their heads a little below the middle of the frame, each about a sixth of
  its width across the shoulders. What they hide of a work is gone from the frame;
  :func:`hidden` says where, so that a work more than half hidden is not asked for.
- ``glare``: the reflections of three windows or lamps in glazing and varnish, soft
  (glass is out of focus) light rectangles 8-15 % of the frame's width across and 20-35 %
  of its height, adding up to 150 grey levels at their centres where the works hang
  (the middle of the frame), and the room behind the camera faintly mirrored in the
  glass (12 %, blurred). Where a reflection adds 120 levels or more, a mid-tone is
  white: :func:`hidden` counts that as hidden, as it does visitors;
- ``warm``: a room lit by warm lamps (about 3,000 K) with the camera's white balance left
  at daylight, as a fixed installation camera often is: in linear light, green at 0.78
  and blue at 0.5 of red, then back to the camera's sRGB. Every colour moves, unevenly:
  a per-channel gain, which no single gain (what ``dim`` is) stands for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from capture.synthetic.rooms import Fisheye

PointMap = Callable[[np.ndarray], np.ndarray]  # (N, 2) float frame px -> (N, 2)

DEGRADATIONS = ("jpeg", "dim", "blur", "fisheye", "turn", "far", "visitors", "glare",
                "warm")

_JPEG_QUALITY = 20
_DIM_GAIN = 0.33
_DIM_NOISE = 3.0  # sigma, grey levels of 255 at the sensor, before the exposure gain
_BLUR_LENGTH = 0.012  # of the frame's width
_FISHEYE_K = 0.3
_TURN_DEGREES = 35.0
_FAR = 0.5  # of the frame: the view seen from twice as far (a wider lens, or a step back)
_VISITORS = 2
_HEAD = 0.06  # of the frame's height: a visitor's head's radius (shoulders 2.4 times it)
_REFLECTIONS = 3
_REFLECTION_PEAK = 150.0  # grey levels a reflection adds at its centre
_REFLECTION_HIDES = 120.0  # ...and from where it washes a mid-tone out to white
_MIRRORED = 0.12  # of the room behind the camera, seen in the glass
_WARM_GAINS = (0.5, 0.78, 1.0)  # B, G, R in linear light: a 3,000 K lamp, the camera at daylight


def fisheye_lens(size: tuple[int, int]) -> Fisheye:
    """The action camera's lens ``fisheye`` takes frames of ``size`` through (a
    :class:`capture.synthetic.rooms.Fisheye`): the camera ``art2mus calibrate`` can be
    tried on (``benchmarks/lens_boards.py`` films a chessboard through it)."""
    from capture.synthetic import rooms

    return rooms.Fisheye(_FISHEYE_K, size)


def degrade(frame_bgr: np.ndarray, name: str, seed: int = 0) -> tuple[np.ndarray, PointMap]:
    """``frame_bgr`` as the camera ``name`` (one of :data:`DEGRADATIONS`) would give it, and
    the map of frame points from before to after. ``seed`` fixes the sensor noise."""
    import cv2  # here, not above: the CLI imports DEGRADATIONS without OpenCV

    height, width = frame_bgr.shape[:2]
    from capture.synthetic import rooms  # the scene generator's camera models

    if name == "jpeg":
        return rooms.jpeg_blocks(frame_bgr, _JPEG_QUALITY), _same
    if name == "dim":
        rng = np.random.default_rng(seed)
        sensor = frame_bgr.astype(np.float32) * _DIM_GAIN
        sensor += rng.normal(0.0, _DIM_NOISE, sensor.shape).astype(np.float32)
        quantised = np.clip(np.round(sensor), 0, 255)  # what the sensor's ADC keeps
        return np.clip(quantised / _DIM_GAIN, 0, 255).astype(np.uint8), _same
    if name == "blur":
        length = max(3, round(_BLUR_LENGTH * width) | 1)
        kernel = np.full((1, length), 1.0 / length, np.float32)
        return cv2.filter2D(frame_bgr, -1, kernel, borderType=cv2.BORDER_REPLICATE), _same
    if name == "fisheye":
        lens = fisheye_lens((width, height))

        def bent(points: np.ndarray) -> np.ndarray:
            return np.asarray(lens.distort_points(np.asarray(points, np.float64).reshape(-1, 2)),
                              np.float64)

        return lens.apply(frame_bgr), bent
    if name == "turn":
        focal = float(width)
        camera = np.array([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]])
        angle = np.radians(_TURN_DEGREES)
        rotation = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0],
                             [-np.sin(angle), 0, np.cos(angle)]])
        turned_only = camera @ rotation @ np.linalg.inv(camera)
        corners = cv2.perspectiveTransform(np.array(
            [[[0, 0], [width, 0], [width, height], [0, height]]], np.float64), turned_only)[0]
        low, high = corners.min(axis=0), corners.max(axis=0)
        fit = min(width / (high[0] - low[0]), height / (high[1] - low[1]))
        shift = np.array([width, height]) / 2 - fit * (low + high) / 2
        homography = np.array([[fit, 0, shift[0]], [0, fit, shift[1]], [0, 0, 1]]) @ turned_only
        turned = cv2.warpPerspective(frame_bgr, homography, (width, height),
                                     flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))

        def moved(points: np.ndarray) -> np.ndarray:
            return cv2.perspectiveTransform(
                np.asarray(points, np.float64).reshape(1, -1, 2), homography)[0]

        return turned, moved
    if name == "far":
        small = cv2.resize(frame_bgr, (round(width * _FAR), round(height * _FAR)),
                           interpolation=cv2.INTER_AREA)
        left, top = (width - small.shape[1]) // 2, (height - small.shape[0]) // 2
        # round it, the wall the camera did not see: the photo's edge carried on and softened
        # far from it, so that no sharp rectangle (a pasted photo's edge, no real view's)
        # stands round the works
        right, bottom = width - left - small.shape[1], height - top - small.shape[0]
        carried = cv2.copyMakeBorder(small, top, bottom, left, right, cv2.BORDER_REPLICATE)
        soft = cv2.GaussianBlur(carried, (0, 0), 0.02 * width)
        inside = np.zeros((height, width), np.float32)
        inside[top:top + small.shape[0], left:left + small.shape[1]] = 1.0
        weight = cv2.GaussianBlur(inside, (0, 0), 0.01 * width)[..., None]
        weight[top:top + small.shape[0], left:left + small.shape[1]] = 1.0
        far = np.clip(weight * carried + (1 - weight) * soft, 0, 255).astype(np.uint8)
        scale = np.array([small.shape[1] / width, small.shape[0] / height])

        def shrunk(points: np.ndarray) -> np.ndarray:
            return np.asarray(points, np.float64).reshape(-1, 2) * scale + (left, top)

        return far, shrunk
    if name == "visitors":
        rng = np.random.default_rng(seed)
        people = hidden(frame_bgr.shape, name, seed)
        assert people is not None
        soft = cv2.GaussianBlur(people.astype(np.float32), (0, 0), 0.002 * width)[..., None]
        clothes = rng.uniform(15, 80, 3).astype(np.float32)
        texture = clothes + 4.0 * rng.standard_normal((height, width, 1)).astype(np.float32)
        seen = frame_bgr.astype(np.float32) * (1 - soft) + texture * soft
        return np.clip(seen, 0, 255).astype(np.uint8), _same
    if name == "glare":
        room = cv2.GaussianBlur(cv2.flip(frame_bgr, 1), (0, 0), 0.01 * width)
        seen = frame_bgr.astype(np.float32) + _MIRRORED * room.astype(np.float32) \
            + _reflections(frame_bgr.shape, seed)[..., None]
        return np.clip(seen, 0, 255).astype(np.uint8), _same
    if name == "warm":
        linear = (frame_bgr.astype(np.float32) / 255.0) ** 2.2  # the sRGB curve, near enough
        warm = (linear * np.array(_WARM_GAINS, np.float32)) ** (1 / 2.2)
        return np.clip(np.round(warm * 255.0), 0, 255).astype(np.uint8), _same
    raise ValueError(f"degradation: expected one of {', '.join(DEGRADATIONS)}, got {name!r}")


def hidden(shape: tuple[int, ...], name: str, seed: int = 0) -> np.ndarray | None:
    """Where the degradation ``name`` (seeded as :func:`degrade` was) hides the wall in a
    frame of ``shape``: a bool mask, or None where it hides nothing (all but ``visitors``
    and ``glare``)."""
    import cv2

    if name == "glare":
        return _reflections(shape, seed) >= _REFLECTION_HIDES
    if name != "visitors":
        return None
    height, width = shape[:2]
    rng = np.random.default_rng([seed, 1])  # apart from the clothes' stream in degrade
    mask = np.zeros((height, width), np.uint8)
    head = max(4, round(_HEAD * height))
    shoulder = round(2.4 * head)
    centres: list[float] = []
    while len(centres) < _VISITORS:  # apart, so that two people are not one
        x = float(rng.uniform(0.2, 0.8)) * width
        if all(abs(x - c) > 0.25 * width for c in centres):
            centres.append(x)
    for x in centres:
        y = float(rng.uniform(0.35, 0.6)) * height
        cv2.circle(mask, (round(x), round(y)), head, 1, -1)
        chest = round(y + 1.1 * head)
        cv2.rectangle(mask, (round(x - head / 2), round(y)), (round(x + head / 2), chest + head),
                      1, -1)  # the neck
        cv2.ellipse(mask, (round(x), chest + head), (shoulder, head), 0, 180, 360, 1, -1)
        cv2.rectangle(mask, (round(x - shoulder), chest + head), (round(x + shoulder), height),
                      1, -1)
    return mask.astype(bool)


def _reflections(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """The light ``glare``'s reflections add to a frame of ``shape`` (grey levels, float32),
    seeded: soft rectangles, upright or a little tilted, in the middle of the frame."""
    import cv2

    height, width = shape[:2]
    rng = np.random.default_rng([seed, 2])
    light = np.zeros((height, width), np.float32)
    for _ in range(_REFLECTIONS):
        size = (float(rng.uniform(0.08, 0.15)) * width, float(rng.uniform(0.2, 0.35)) * height)
        centre = (float(rng.uniform(0.15, 0.85)) * width, float(rng.uniform(0.3, 0.7)) * height)
        corners = cv2.boxPoints((centre, size, float(rng.uniform(-15, 15))))
        patch = np.zeros_like(light)
        cv2.fillConvexPoly(patch, np.round(corners).astype(np.int32), 1.0)
        soft = cv2.GaussianBlur(patch, (0, 0), 0.25 * min(size))
        light = np.maximum(light, _REFLECTION_PEAK * soft / max(float(soft.max()), 1e-6))
    return light


def _same(points: np.ndarray) -> np.ndarray:
    return np.asarray(points, np.float64).reshape(-1, 2)
