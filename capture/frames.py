"""Frames and the frame-source protocol: the one thing every source and the capture loop share.

A :class:`FrameSource` gives the next :class:`Frame` (or ``None`` when no new
frame is ready) and releases its device on ``close()``. Real sources (a
camera, a video file, a folder of images; ``capture.sources``) only know the
pixels and the time; a synthetic one (the demo camera,
``capture.synthetic.camera``) also knows what it filmed and says so in
:attr:`Frame.truth`, so the capture loop can log the ground truth without
knowing which source it reads.

Two clocks: frame timestamps are wall-clock times (``time.time``; shared
across machines, what the messages carry), while every interval a source or
the loop measures (a retry's backoff, a video's playback, a heartbeat) is on
a clock that never steps (:func:`interval_clock`): NTP or a technician
setting the room machine's clock back must not stop a camera or the views
for as long as it moved.

:func:`bgr8` is the loop's door: a camera in night mode sends grey frames,
a capture card BGRA, a driver 16-bit or float ones, a glitch an empty one;
the loop works on BGR uint8 (:func:`bgr8` converts) or drops the frame
(:class:`FrameRefused` says why).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

Clock = Callable[[], float]

#: The smallest frame side capture looks at, pixels: the glance alone rectifies to 32 px,
#: and a frame smaller than a thumbnail is a glitch, not a view of a room.
MIN_FRAME_SIDE = 16


def interval_clock(clock: Clock, monotonic: Clock | None = None) -> Clock:
    """The clock intervals are measured on, beside the wall ``clock`` that stamps frames.

    ``monotonic`` where given; else :func:`time.monotonic` beside the real wall clock
    (:func:`time.time`), and ``clock`` itself beside any other: a test's fake clock,
    moved by hand, drives both (a test of a clock step passes the two apart).
    """
    if monotonic is not None:
        return monotonic
    return time.monotonic if clock is time.time else clock


@dataclass(frozen=True)
class FrameTruth:
    """What a synthetic source knows it filmed: which artwork, its style, and since when."""

    artwork_index: int
    style: str
    since: float  # wall-clock time the camera turned to this artwork


@dataclass(frozen=True)
class Frame:
    """One camera frame: BGR uint8 pixels, the wall-clock time it was taken, its number.

    ``truth`` is ``None`` from a real camera; a synthetic source fills it in.
    """

    image: np.ndarray
    timestamp: float
    index: int
    truth: FrameTruth | None = None


class FrameSource(Protocol):
    """Anything capture can read frames from."""

    def read(self) -> Frame | None:
        """The next frame, or ``None`` when no new frame is available yet."""
        ...

    def close(self) -> None:
        """Release the device or file."""
        ...


class FrameRefused(ValueError):
    """A frame capture cannot look at (empty, too small, not finite, an unknown layout);
    ``str()`` says why, naming what was expected and what came."""


def describe_pixels(image: np.ndarray) -> str:
    """A frame's layout in a few words: ``"1-channel uint16 640x480"``."""
    channels = image.shape[2] if image.ndim == 3 else 1 if image.ndim == 2 else 0
    size = f"{image.shape[1]}x{image.shape[0]}" if image.ndim >= 2 else "x".join(
        str(n) for n in image.shape) or "scalar"
    return f"{channels}-channel {image.dtype} {size}"


def bgr8(image: np.ndarray) -> np.ndarray:
    """``image`` as the 3-channel BGR uint8 pixels capture works on; itself when it is.

    - grey (``HxW`` or ``HxWx1``): the grey repeated in B, G and R (a camera in
      infrared night mode);
    - 4 channels: taken as BGRA (OpenCV's order, as a capture card sends), the
      alpha dropped;
    - uint16: scaled over its full range (``/257``: 65535 -> 255); a 10- or
      12-bit sensor packed low in 16 bits comes out dark, so such a camera
      should be set to 8 bits;
    - float: taken in ``[0, 1]`` (OpenCV's convention for float images, as
      ``cv2.imshow`` shows them), clipped to it and scaled to ``0..255``.
      Frames in ``0..255`` as floats are not guessed at: a dark frame and a
      bright one would then be scaled differently, and the same painting would
      look different to the glance and the descriptors from frame to frame.

    :class:`FrameRefused` for an empty frame, one smaller than
    :data:`MIN_FRAME_SIDE` on a side, a float frame with NaN or infinity in
    it, another number of channels or another pixel type.
    """
    if image.size == 0:
        raise FrameRefused(f"expected a frame with pixels, got an empty one "
                           f"({describe_pixels(image)})")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise FrameRefused(f"expected 1, 3 or 4 channels (grey, BGR, BGRA), got "
                           f"shape {tuple(image.shape)}")
    if min(image.shape[:2]) < MIN_FRAME_SIDE:
        raise FrameRefused(f"expected a frame at least {MIN_FRAME_SIDE} px a side, got "
                           f"{describe_pixels(image)}")
    if image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
        return image  # the camera's own frame, as almost every frame is: no copy
    if image.dtype == np.uint8:
        pixels = image
    elif image.dtype == np.uint16:
        # rounded: 257 * v maps back to v exactly
        pixels = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    elif np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise FrameRefused(f"expected finite pixel values, got NaN or infinity in a "
                               f"{describe_pixels(image)} frame")
        pixels = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    else:
        raise FrameRefused(f"expected uint8, uint16 or float pixels, got "
                           f"{describe_pixels(image)}")
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim == 2:
        return np.repeat(pixels[:, :, None], 3, axis=2)
    # BGR, or BGRA's colour planes, contiguous (OpenCV's functions want a plain array)
    return np.ascontiguousarray(pixels[:, :, :3])


__all__ = ["MIN_FRAME_SIDE", "Clock", "Frame", "FrameRefused", "FrameSource", "FrameTruth",
           "bgr8", "describe_pixels", "interval_clock"]
