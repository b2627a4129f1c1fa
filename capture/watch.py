"""Watching a frame source from inside the capture loop's thread.

The capture role needs to know two things the loop does not report: that the
loop is alive (the supervisor's heartbeat is sent from the loop's own thread,
so a stuck loop stops it) and when the camera last delivered a frame (while
it delivers nothing, the role holds back the loop's re-sends of the last
view). :meth:`FrameWatch.attach` wraps a source in a :class:`WatchedSource`
that tells the watch about every read. Frames pass through untouched, ground
truth included, so the loop sees the same frames it would without the watch.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from capture.frames import Frame, FrameSource


class FrameWatch:
    """Watches a frame source's reads: heartbeats from the loop thread, and when frames came."""

    def __init__(self, beat: Callable[[], object]) -> None:
        self.beat = beat  # sends a heartbeat when one is due (the role shell's beat)
        self.last_frame_at = time.monotonic()
        self.frames = 0

    def attach(self, source: FrameSource) -> WatchedSource:
        """``source``, wrapped so that its reads report to this watch."""
        return WatchedSource(source, self)

    def saw(self, frame: Frame | None) -> None:
        """Account one read of the watched source (``None``: no new frame)."""
        if frame is not None:
            self.last_frame_at = time.monotonic()
            self.frames += 1
        self.beat()

    def no_frames_for(self) -> float:
        """Seconds since the source last delivered a frame."""
        return time.monotonic() - self.last_frame_at


class WatchedSource:
    """A frame source whose reads are reported to a :class:`FrameWatch`."""

    def __init__(self, source: FrameSource, watch: FrameWatch) -> None:
        self.source = source
        self.watch = watch

    def read(self) -> Frame | None:
        """The wrapped source's next frame, after telling the watch about it."""
        frame = self.source.read()
        self.watch.saw(frame)
        return frame

    def close(self) -> None:
        """Close the wrapped source."""
        self.source.close()


__all__ = ["FrameWatch", "WatchedSource"]
