"""Frames and the frame-source protocol: the one thing every source and the capture loop share.

A :class:`FrameSource` gives the next :class:`Frame` (or ``None`` when no new
frame is ready) and releases its device on ``close()``. Real sources (a
camera, a video file, a folder of images; ``capture.sources``) only know the
pixels and the time; a synthetic one (the demo camera,
``capture.synthetic.camera``) also knows what it filmed and says so in
:attr:`Frame.truth`, so the capture loop can log the ground truth without
knowing which source it reads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

Clock = Callable[[], float]


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


__all__ = ["Clock", "Frame", "FrameSource", "FrameTruth"]
