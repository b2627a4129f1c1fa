"""The capture loop: frames in, ``ArtworkView`` messages out, for one room.

Where it sits: ``capture.role`` builds a :class:`CaptureLoop` with a publish
function (a ZeroMQ PUB socket) and an event sink, and calls :meth:`run`.
Tests call :meth:`CaptureLoop.step` directly with a fake clock.

Per frame (budget at 15 fps: 66 ms; typical cost on one core: 10-20 ms at
1280x720, most of it detection)::

    source.read() -> detect_artworks -> PrimarySelector (hysteresis)
        [-> nothing found while following a catalogued painting: Catalogue.locate
            it by homography, every recognition.locate_every_frames frames]
        -> glance (32 px rectify) -> StabilityTracker.update (N of M, One Euro corners)
        -> on a new confirmed view: rectify -> Catalogue.recognise (when configured;
           the id is the catalogue's) or ArtworkMemory.identify ("art-NNN")
           -> describe_image + encoder.embed -> publish + "artwork_change" event
        -> otherwise every heartbeat_s: publish the current view again

Descriptor and embedding are computed only when the confirmed view changes,
and remembered per artwork id, so a painting always carries the same
features and embedding (and so the same music).

Under load the loop sheds frames before the music suffers
(:class:`AdaptiveFrameRate`): when frames take longer than their share of
the period, or the loop falls behind, the effective rate drops toward
``capture.min_fps``, and climbs back to ``capture.fps`` once there is
headroom. Eight rooms at 15 fps on two cores starved audio_out; detection
at a few frames per second still finds a painting within a second or two.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import cv2
import numpy as np

from capture.catalogue import SQUARE, Catalogue
from capture.config import CaptureConfig
from capture.descriptor import Descriptor, describe_image
from capture.detect import Detection, PrimarySelector, detect_artworks, rectify
from capture.encoders import ImageEncoder, make_encoder
from capture.frames import Clock, Frame, FrameSource
from capture.sources import open_source
from capture.stability import (
    ArtworkMemory,
    Sighting,
    StabilityTracker,
    TrackState,
    glance_signature,
)
from ground.events import EventSink
from ground.protocol import ArtworkView

log = logging.getLogger(__name__)

_GLANCE_RECTIFY = 32  # px; the glance only needs an 8x8 thumbnail


class AdaptiveFrameRate:
    """The capture's effective frame rate: lower under load, back up with headroom.

    After each frame it is told the frame's wall time (so a CPU shared with
    other processes shows, not only our own work) and whether the loop had
    fallen behind its schedule. When the smoothed cost exceeds
    ``SHED_ABOVE`` of the period, or the loop fell behind, the rate drops by
    ``SHED_FACTOR`` (not below ``floor``); after about a second of frames
    whose cost would fit in ``RAISE_BELOW`` of the next rate's period it
    climbs by ``RAISE_FACTOR`` (not above ``target``). The gap between the
    two thresholds keeps it from see-sawing under a steady load.
    """

    SHED_ABOVE = 0.8
    RAISE_BELOW = 0.5
    SHED_FACTOR = 0.75
    RAISE_FACTOR = 1.25
    SMOOTHING = 0.3  # weight of the newest frame in the running cost

    def __init__(self, fps: float, min_fps: float) -> None:
        self.target = fps
        self.floor = min(min_fps, fps)
        self.fps = fps
        self.cost_s: float | None = None
        self._calm_frames = 0

    @property
    def period_s(self) -> float:
        """Seconds between frames at the effective rate."""
        return 1.0 / self.fps

    def frame_done(self, busy_s: float, behind: bool) -> bool:
        """Account one frame that took ``busy_s``; True when the effective rate changed."""
        if self.cost_s is None:
            self.cost_s = busy_s
        else:
            self.cost_s += self.SMOOTHING * (busy_s - self.cost_s)
        if behind or self.cost_s > self.SHED_ABOVE * self.period_s:
            self._calm_frames = 0
            lower = max(self.floor, self.fps * self.SHED_FACTOR)
            changed = lower < self.fps
            self.fps = lower
            return changed
        higher = min(self.target, self.fps * self.RAISE_FACTOR)
        if higher <= self.fps or self.cost_s >= self.RAISE_BELOW / higher:
            self._calm_frames = 0
            return False
        self._calm_frames += 1
        if self._calm_frames < self.fps:  # about a second of frames with room to spare
            return False
        self._calm_frames = 0
        self.fps = higher
        return True


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
        catalogue: Catalogue | None = None,
        encoder: ImageEncoder | None = None,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.room_id = room_id
        self.config = config
        self._publish = publish
        self._log_event = log_event
        self._clock = clock
        self._timer = timer  # measures frame costs and paces the loop (monotonic)
        self.rate = AdaptiveFrameRate(config.fps, config.min_fps)
        self._next_tick: float | None = None
        self.source = source if source is not None else open_source(config, clock)
        self.tracker = StabilityTracker(config.stability)
        self.memory = ArtworkMemory(config.stability.same_artwork_distance)
        self.selector = PrimarySelector(config.stability.primary_switch_ratio,
                                        config.stability.primary_switch_frames)
        recognition = config.recognition
        if catalogue is None and recognition.catalogue:
            catalogue = Catalogue.open(recognition.catalogue, recognition.cache_dir,
                                       recognition.min_inliers)
        self.catalogue = catalogue
        self.encoder = encoder if encoder is not None else make_encoder(config.encoder)
        # Per artwork id: its descriptor and embedding, computed once.
        self._described: dict[str, tuple[Descriptor, np.ndarray]] = {}
        self._embedding: np.ndarray | None = None
        self._frames_unseen = 0
        self._seq = 0
        self._view: ArtworkView | None = None  # the current view, re-sent as heartbeat
        self._descriptor: Descriptor | None = None
        self._artwork_id: str | None = None
        self._last_publish = -float("inf")
        self._truth_index: int | None = None  # a source's ground truth, for "source_change"
        self._stats_since = clock()
        self._stats = {"frames": 0, "detected": 0, "busy_s": 0.0, "published": 0}

    # -- the loop --

    def run(self, stop: threading.Event) -> None:
        """Process frames at the effective rate until ``stop`` is set; closes the source."""
        try:
            while not stop.is_set():
                delay = self.paced_step()
                if delay > 0:
                    stop.wait(delay)
        finally:
            self.source.close()

    def paced_step(self) -> float:
        """Process one frame and adapt the rate; the seconds to wait before the next one."""
        began = self._timer()
        if self._next_tick is None:
            self._next_tick = began
        self.step()
        now = self._timer()
        self._next_tick += self.rate.period_s
        behind = now > self._next_tick
        before = self.rate.fps
        if self.rate.frame_done(now - began, behind):
            self._log_event("capture_fps", fps=round(self.rate.fps, 2),
                            previous_fps=round(before, 2),
                            cost_ms=round(1000 * (self.rate.cost_s or 0.0), 1),
                            reason="load" if self.rate.fps < before else "headroom")
        if now - self._next_tick > self.rate.period_s:
            # Far behind (a slow frame, a suspended laptop): drop the backlog
            # instead of racing through it.
            self._next_tick = now
        return max(0.0, self._next_tick - now)

    def step(self) -> ArtworkView | None:
        """Process one frame; return the view published for it, if any."""
        began = self._timer()
        frame = self.source.read()
        if frame is None:
            return self._heartbeat(self._clock())
        now = frame.timestamp
        self._note_ground_truth(frame)

        detections = detect_artworks(frame.image, self.config.detect_width)
        primary = self.selector.select(detections, frame.image.shape)
        if primary is None:
            primary = self._relocate(frame.image)
        else:
            self._frames_unseen = 0
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
        self._stats["busy_s"] += self._timer() - began
        self._maybe_log_stats(now)
        return published

    # -- decisions --

    def _relocate(self, image: np.ndarray) -> Detection | None:
        """Re-find the catalogued painting being followed when the quad finder lost it.

        A visitor in front of it, or glare across its edge, breaks its outline
        but leaves most of its features: the homography of its reference into
        the frame gives the quad back. Rate-limited (it costs ~20-40 ms).
        """
        self._frames_unseen += 1
        every = self.config.recognition.locate_every_frames
        if (self.catalogue is None or every == 0 or self._artwork_id is None
                or self.catalogue.entry(self._artwork_id) is None
                or self._frames_unseen % every != 0):
            return None
        found = self.catalogue.locate(image, max_results=1, only=[self._artwork_id])
        if not found:
            return None
        height, width = image.shape[:2]
        quad = found[0].quad
        area = abs(float(cv2.contourArea(quad.astype(np.float32))))
        return Detection(quad, found[0].score, area / (width * height))

    def _identify(self, image: np.ndarray, quad: np.ndarray) -> tuple[str, Descriptor, bool]:
        """(artwork id, descriptor, whether recognised in the catalogue) for a new view."""
        rectified = rectify(image, quad, self.config.rectified_size)
        if self.catalogue is not None:
            match = self.catalogue.recognise(
                rectified if self.config.rectified_size == SQUARE else rectify(image, quad, SQUARE))
            if match is not None:
                known = self._described.get(match.artwork_id)
                descriptor = known[0] if known is not None else describe_image(rectified)
                self._remember(match.artwork_id, descriptor, rectified)
                return match.artwork_id, descriptor, True
        artwork_id, descriptor, _ = self.memory.identify(describe_image(rectified))
        self._remember(artwork_id, descriptor, rectified)
        return artwork_id, descriptor, False

    def _remember(self, artwork_id: str, descriptor: Descriptor, rectified: np.ndarray) -> None:
        # The embedding is computed once per artwork id (an ONNX encoder can
        # cost tens of milliseconds) and then reused, like the descriptor.
        if artwork_id not in self._described:
            self._described[artwork_id] = (descriptor, self.encoder.embed(rectified))
            while len(self._described) > 512:  # months unattended: stay bounded
                del self._described[next(iter(self._described))]

    def _on_new_view(self, image: np.ndarray, quad: np.ndarray, now: float,
                     decision: TrackState) -> ArtworkView | None:
        artwork_id, descriptor, catalogued = self._identify(image, quad)
        if artwork_id == self._artwork_id and self._view is not None \
                and self._view.state == "artwork":
            return None  # the same painting re-acquired (after a glance away): no change
        return self._change(now, "artwork", artwork_id, descriptor, decision.confidence,
                            decision.quad if decision.quad is not None else quad,
                            catalogued)

    def _change(self, now: float, state: str, artwork_id: str | None,
                descriptor: Descriptor | None, confidence: float,
                quad: np.ndarray | None, catalogued: bool = False) -> ArtworkView:
        self._artwork_id = artwork_id
        self._descriptor = descriptor
        self._embedding = self._described[artwork_id][1] \
            if artwork_id is not None and artwork_id in self._described else None
        view = self._make_view(now, state, confidence, quad)
        extra = {}
        if catalogued and self.catalogue is not None and artwork_id is not None:
            entry = self.catalogue.entry(artwork_id)
            if entry is not None:
                extra = {"title": entry.title, "artist": entry.artist}
        self._log_event("artwork_change", time=now, artwork_id=artwork_id,
                        confidence=round(confidence, 3), state=state,
                        features=dict(view.features), catalogued=catalogued, **extra)
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
        confidence = float(np.clip(confidence, 0.0, 1.0))
        if state != "artwork":
            return ArtworkView.empty(self.room_id, now, self._seq, confidence)
        descriptor = self._descriptor
        embedding = None if descriptor is None else (
            self._embedding if self._embedding is not None else descriptor.vector)
        return ArtworkView.of_artwork(
            self.room_id, self._seq, now, self._artwork_id, confidence,
            self.encoder.name if descriptor is not None else "", embedding,
            dict(descriptor.features) if descriptor is not None else {},
            quad=[(float(x), float(y)) for x, y in quad] if quad is not None else None)

    def _send(self, view: ArtworkView) -> ArtworkView:
        self._view = view
        self._last_publish = view.time
        self._stats["published"] += 1
        self._publish(view)
        return view

    # -- instrumentation --

    def _note_ground_truth(self, frame: Frame) -> None:
        # A synthetic source (the demo camera) knows when it turned to the next
        # painting; logging that lets the demo report measure detection delay
        # against the truth. Real cameras send no truth.
        truth = frame.truth
        if truth is None or truth.artwork_index == self._truth_index:
            return
        self._truth_index = truth.artwork_index
        self._log_event("source_change", time=truth.since, artwork_index=truth.artwork_index,
                        style=truth.style)

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
            effective_fps=round(self.rate.fps, 2),
        )
        self._stats_since = now
        self._stats = {"frames": 0, "detected": 0, "busy_s": 0.0, "published": 0}
