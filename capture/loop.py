"""The capture loop: frames in, ``ArtworkView`` messages out, for one room.

Where it sits: ``capture.role`` builds a :class:`CaptureLoop` with a publish
function (a ZeroMQ PUB socket) and an event sink, and calls :meth:`run`.
Tests call :meth:`CaptureLoop.step` directly with a fake clock.

Per frame (budget at 15 fps: 66 ms; typical cost on one core: 10-20 ms at
1280x720, most of it detection)::

    source.read() -> detect_artworks -> choose_primary -> glance (32 px rectify)
        -> StabilityTracker.update
        -> on a new confirmed view: rectify (rectified_size) -> describe_image
           -> ArtworkMemory.identify -> publish + "artwork_change" event
        -> otherwise every heartbeat_s: publish the current view again

The descriptor is computed only when the confirmed view changes, and
remembered per artwork id, so a painting always carries the same features.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import numpy as np

from capture.artworks import artwork_style
from capture.config import CaptureConfig
from capture.descriptor import ENCODER_NAME, Descriptor, describe_image
from capture.detect import choose_primary, detect_artworks, rectify
from capture.sources import Clock, DemoCamera, FrameSource, open_source
from capture.stability import (
    ArtworkMemory,
    Sighting,
    StabilityTracker,
    TrackState,
    glance_signature,
)
from installation.events import EventSink
from installation.protocol import PROTOCOL_VERSION, Array, ArtworkView

log = logging.getLogger(__name__)

_GLANCE_RECTIFY = 32  # px; the glance only needs an 8x8 thumbnail


class CaptureLoop:
    """One room's capture: reads frames, keeps the stable view, publishes ``ArtworkView``."""

    def __init__(
        self,
        room_id: str,
        config: CaptureConfig,
        publish: Callable[[ArtworkView], None],
        log_event: EventSink,
        source: FrameSource | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.room_id = room_id
        self.config = config
        self._publish = publish
        self._log_event = log_event
        self._clock = clock
        self.source = source if source is not None else open_source(config, clock)
        self.tracker = StabilityTracker(config.stability)
        self.memory = ArtworkMemory(config.stability.same_artwork_distance)
        self._seq = 0
        self._view: ArtworkView | None = None  # the current view, re-sent as heartbeat
        self._descriptor: Descriptor | None = None
        self._artwork_id: str | None = None
        self._last_publish = -float("inf")
        self._truth_index: int | None = None  # demo ground truth, for "source_change"
        self._stats_since = clock()
        self._stats = {"frames": 0, "detected": 0, "busy_s": 0.0, "published": 0}

    # -- the loop --

    def run(self, stop: threading.Event) -> None:
        """Process frames at ``config.fps`` until ``stop`` is set; closes the source."""
        period = 1.0 / self.config.fps
        next_tick = self._clock()
        try:
            while not stop.is_set():
                self.step()
                next_tick += period
                delay = next_tick - self._clock()
                if delay > 0:
                    stop.wait(delay)
                elif delay < -period:
                    # Fell behind (a slow frame, a suspended laptop): drop the
                    # backlog instead of racing through it.
                    next_tick = self._clock()
        finally:
            self.source.close()

    def step(self) -> ArtworkView | None:
        """Process one frame; return the view published for it, if any."""
        began = time.perf_counter()
        frame = self.source.read()
        if frame is None:
            return self._heartbeat(self._clock())
        now = frame.timestamp
        self._note_ground_truth(now)

        detections = detect_artworks(frame.image, self.config.detect_width)
        primary = choose_primary(detections, frame.image.shape)
        sighting = None
        if primary is not None:
            glance = glance_signature(rectify(frame.image, primary.quad, _GLANCE_RECTIFY))
            sighting = Sighting(primary.quad, primary.score, glance)
        decision = self.tracker.update(now, sighting)

        published = None
        if decision.changed:
            if decision.track is not None and primary is not None:
                published = self._on_new_view(frame.image, primary.quad, now, decision)
            elif decision.track is None:
                published = self._change(now, "empty", None, None, decision.confidence, None)
        if published is None:
            published = self._heartbeat(now, decision.quad, decision.confidence)

        self._stats["frames"] += 1
        self._stats["detected"] += primary is not None
        self._stats["busy_s"] += time.perf_counter() - began
        self._maybe_log_stats(now)
        return published

    # -- decisions --

    def _on_new_view(self, image: np.ndarray, quad: np.ndarray, now: float,
                     decision: TrackState) -> ArtworkView | None:
        rectified = rectify(image, quad, self.config.rectified_size)
        artwork_id, descriptor, _ = self.memory.identify(describe_image(rectified))
        if artwork_id == self._artwork_id and self._view is not None \
                and self._view.state == "artwork":
            return None  # the same painting re-acquired (after a glance away): no change
        return self._change(now, "artwork", artwork_id, descriptor, decision.confidence,
                            decision.quad if decision.quad is not None else quad)

    def _change(self, now: float, state: str, artwork_id: str | None,
                descriptor: Descriptor | None, confidence: float,
                quad: np.ndarray | None) -> ArtworkView:
        self._artwork_id = artwork_id
        self._descriptor = descriptor
        view = self._make_view(now, state, confidence, quad)
        self._log_event("artwork_change", time=now, artwork_id=artwork_id,
                        confidence=round(confidence, 3), state=state,
                        features=dict(view.features))
        log.info("room %s: %s %s (confidence %.2f)", self.room_id, state, artwork_id or "",
                 confidence)
        return self._send(view)

    def _heartbeat(self, now: float, quad: np.ndarray | None = None,
                   confidence: float | None = None) -> ArtworkView | None:
        if self._view is None or now - self._last_publish < self.config.heartbeat_s:
            return None
        if confidence is None:
            confidence = self._view.confidence
        if quad is None and self._view.quad is not None:
            quad = np.asarray(self._view.quad, np.float32)
        return self._send(self._make_view(now, self._view.state, confidence, quad))

    def _make_view(self, now: float, state: str, confidence: float,
                   quad: np.ndarray | None) -> ArtworkView:
        self._seq += 1
        descriptor = self._descriptor if state == "artwork" else None
        return ArtworkView(
            v=PROTOCOL_VERSION,
            room=self.room_id,
            seq=self._seq,
            time=now,
            state="artwork" if state == "artwork" else "empty",
            artwork_id=self._artwork_id if state == "artwork" else None,
            confidence=float(np.clip(confidence, 0.0, 1.0)),
            quad=([(float(x), float(y)) for x, y in quad]
                  if quad is not None and state == "artwork" else None),
            encoder=ENCODER_NAME if descriptor is not None else "",
            embedding=Array.from_numpy(descriptor.vector) if descriptor is not None else None,
            features=dict(descriptor.features) if descriptor is not None else {},
        )

    def _send(self, view: ArtworkView) -> ArtworkView:
        self._view = view
        self._last_publish = view.time
        self._stats["published"] += 1
        self._publish(view)
        return view

    # -- instrumentation --

    def _note_ground_truth(self, now: float) -> None:
        # The demo camera knows when it turned to the next painting; logging that
        # lets the demo report measure detection delay against the truth.
        if not isinstance(self.source, DemoCamera):
            return
        index = self.source.artwork_index_at(now)
        if index != self._truth_index:
            self._truth_index = index
            self._log_event("source_change", time=self.source.change_time(now),
                            artwork_index=index, style=artwork_style(index))

    def _maybe_log_stats(self, now: float) -> None:
        elapsed = now - self._stats_since
        if elapsed < self.config.stats_every_s:
            return
        frames = self._stats["frames"]
        self._log_event(
            "stats", time=now, frames=frames, fps=round(frames / elapsed, 2),
            detection_rate=round(self._stats["detected"] / frames, 3) if frames else 0.0,
            busy_ms_per_frame=round(1000 * self._stats["busy_s"] / frames, 2) if frames else 0.0,
            published=self._stats["published"], artworks_known=len(self.memory),
        )
        self._stats_since = now
        self._stats = {"frames": 0, "detected": 0, "busy_s": 0.0, "published": 0}
