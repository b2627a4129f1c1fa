"""The capture loop: frames in, ``ArtworkView`` messages out, for one room.

Where it sits: ``capture.role`` builds a :class:`CaptureLoop` with a publish
function (a ZeroMQ PUB socket) and an event sink, and calls :meth:`run`.
Tests call :meth:`CaptureLoop.step` directly with a fake clock.

Two clocks: what is published and logged carries wall-clock time (``clock``,
the frames' timestamps: messages are compared across machines), while every
interval (heartbeats, stats, searches, looks again, a showing's end, the
stability tracker's grace period) is measured on ``monotonic``, a clock that
never steps (:func:`capture.frames.interval_clock`). The room machine's clock
set back ten minutes once kept every view unpublished for those ten minutes.

Per frame (budget at 15 fps: 66 ms; typical cost on one core: 10-20 ms at
1280x720, most of it detection)::

    source.read() [-> Lens.undistort: a calibrated wide lens's bow taken out]
        -> following a work: QuadTracker.update (optical flow, a few ms), and
           every redetect_every_frames frames also the quad finder
           (a different primary may take over)
        -> otherwise: detect_artworks -> PrimarySelector (hysteresis)
        [-> nothing found: Catalogue.locate the catalogued painting being followed
            (every recognition.locate_every_frames frames), or, with nothing in view,
            search the whole frame for catalogued works (every
            recognition.search_every_s, every fine_search_every-th also finer;
            a find is then tracked)]
        -> glance (32 px rectify) -> StabilityTracker.update (N of M, One Euro corners)
        -> on a new confirmed view: catalogue first (Catalogue.locate: the work whose
           features sit on the view gives its id and the picture's exact corners),
           else rectify -> Catalogue.recognise, else a work the whole frame's search
           places round it, else ArtworkMemory.identify ("art-NNN")
           -> describe_image + encoder.embed -> publish + "artwork_change" event;
           QuadTracker.start on the view's quad (and StabilityTracker.reframe, where
           recognition placed the picture otherwise than the sighting)
        -> a work with an id of its own, a catalogue open: its place located again
           every recognition.search_every_s, LOOKS_AGAIN times (and LOOKS_AGAIN more
           after each catalogue update); named, it changes
        -> a catalogued work whose id a catalogue update took away, or whose reference
           image it changed: named anew at its place (another id, or one of its own)
        -> otherwise every heartbeat_s: publish the current view again
        -> every overlay_every_s: the frame with what was found drawn on it, to a file
           (and every console_frame_every_s, downscaled, the console's picture)

Recognition runs once per arrival, and descriptor and embedding only when the
confirmed view changes, remembered per artwork id, so a painting always
carries the same features and embedding (and so the same music). A brief
occlusion does not drop a work: the tracker holds its quad while a visitor
passes.

The catalogue is opened (its index built, if the folder changed) in a
background thread: the loop runs, and the role's heartbeats flow, meanwhile;
until it is ready, works get ids of their own ("art-NNN"). The same thread
then looks at the folder every ``recognition.watch_s``: works added, changed
or removed, or metadata edited, are indexed there (only what changed) and the
loop takes the new catalogue between two frames, so a new acquisition is
recognised without a restart, the work in view too. An image that cannot be
read (still being copied, empty, not an image) is left out of the catalogue
and named (``catalogue_ready``'s ``left_out``, the heartbeat) until it reads,
at start as on an update; a bad metadata edit leaves the catalogue in use as
it was.

Under load the loop sheds frames before the music suffers
(:class:`AdaptiveFrameRate`): when frames take longer than their share of
the period, or the loop falls behind, the effective rate drops toward
``capture.min_fps``, and climbs back to ``capture.fps`` once there is
headroom. Eight rooms at 15 fps on two cores starved audio_out; detection
at a few frames per second still finds a painting within a second or two.

"Show this work" (the technician's console): :meth:`CaptureLoop.apply_set`
takes ``show_artwork`` (a catalogue id) and ``show_for_s`` from a Control,
from any thread. Until the time passes, the published views are those of the
work's catalogue reference image (described and embedded as a camera view
of it would be, confidence 1.0) instead of the camera's; the camera keeps
being followed meanwhile, and its current view is published again the
moment the showing ends (``show_for_s`` 0, or the time is up).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from capture.catalogue import (
    NAMED_AT_MOST,
    SQUARE,
    Catalogue,
    folder_fingerprint,
    overlap_fraction,
    whole_view,
)
from capture.config import CaptureConfig
from capture.descriptor import Descriptor, describe_image
from capture.detect import Detection, PrimarySelector, choose_primary, detect_artworks, rectify
from capture.encoders import ImageEncoder, make_encoder
from capture.frames import (
    Clock,
    Frame,
    FrameRefused,
    FrameSource,
    bgr8,
    describe_pixels,
    interval_clock,
)
from capture.images import REDUCED_AT_LEAST, read_image
from capture.lens import Lens
from capture.overlay import OverlayWriter
from capture.recognise import SAME_PLACE, RecognisedArtwork, picture_in_view
from capture.sources import open_source
from capture.stability import (
    GLANCE_THRESHOLD,
    ArtworkMemory,
    Sighting,
    StabilityTracker,
    TrackState,
    glance_distance,
    glance_signature,
)
from capture.tracking import QuadTracker
from ground.errors import InputError
from ground.events import EventSink
from ground.protocol import ArtworkView

log = logging.getLogger(__name__)

_GLANCE_RECTIFY = 32  # px; the glance only needs an 8x8 thumbnail
#: How long a changed catalogue folder must stand still before it is opened (a file being
#: saved or copied is not read half-written); never longer than ``recognition.watch_s``.
CATALOGUE_SETTLE_S = 1.0
#: A work given an id of its own in a room with a catalogue is looked at again at its place
#: this many times (every ``recognition.search_every_s``) before its id stands.
LOOKS_AGAIN = 5
#: ...the first of them this soon after its arrival (seconds; at most ``search_every_s``):
#: a catalogued work missed at its arrival then plays music not its own for a blink, not
#: a second. The same frame would fail the same way; a few frames on, the hand-held
#: camera's drift and noise give its features another chance.
FIRST_LOOK_AGAIN_S = 0.2
#: The longest a work is shown instead of the camera, seconds (longer requests are cut).
SHOW_MAX_S = 3600.0
#: How long a work is shown when a Control names it without ``show_for_s``.
SHOW_DEFAULT_S = 60.0
#: Frames failing in a row beyond which the loop raises (the role is restarted): one
#: view bringing out a defect is dropped and counted, a loop failing every frame is broken.
FAILED_IN_A_ROW = 30
#: Seconds between two ``frame_failed`` events (the rest are counted in ``stats``); the same
#: for ``frame_refused``.
FAILED_LOG_EVERY_S = 1.0
#: JPEG quality of the console's camera picture (small, rewritten twice a second).
CONSOLE_JPEG_QUALITY = 80


class ShowRefused(ValueError):
    """A "show this work" request that cannot be followed; ``field`` is the parameter."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class _Now:
    """One moment of the loop on both its clocks: ``wall`` stamps what is published and
    logged, ``mono`` measures every interval (the wall clock may be set back or on)."""

    wall: float
    mono: float


@dataclass(frozen=True)
class _ShowRequest:
    """What the control thread asks for; the loop picks it up by its token."""

    token: int
    artwork_id: str | None  # None: back to the camera now
    until: float  # wall clock, as said to the console
    until_mono: float  # the same moment on the loop's monotonic clock: when it ends
    image: np.ndarray | None  # the catalogue reference, read by the control thread


@dataclass
class _Showing:
    """The work being shown (loop thread only)."""

    artwork_id: str
    until: float  # wall clock, for the console
    until_mono: float  # when it ends
    descriptor: Descriptor
    embedding: np.ndarray
    last_sent: float  # monotonic


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


#: The most characters of an error the heartbeat's ``catalogue`` state carries.
_STATE_CHARS = 120


def _works(count: int) -> str:
    return f"{count} work" if count == 1 else f"{count} works"


#: The most images left out, unreadable, the heartbeat's ``catalogue`` state names.
_LEFT_OUT_NAMED = 5


def _opened(catalogue: Catalogue) -> str:
    """An open catalogue in a few words: its works, the images it left out, unreadable
    (named: the technician mends those), and the references its index warns of (the
    technician sees them on the console; ``art2mus index`` names them)."""
    warned = [f"{len(items)} {what}" for items, what in (
        (catalogue.small, "small"), (catalogue.plain, "plain"),
        (catalogue.twins, "twin pair" if len(catalogue.twins) == 1 else "twin pairs"))
        if items]
    said = _works(len(catalogue))
    if left_out := list(catalogue.left_out):
        named = ", ".join(left_out[:_LEFT_OUT_NAMED])
        if len(left_out) > _LEFT_OUT_NAMED:
            named += f" and {len(left_out) - _LEFT_OUT_NAMED} more"
        said += (f"; {len(left_out)} image{'s' * (len(left_out) > 1)} left out, unreadable: "
                 f"{named} (art2mus index says why)")
    return said + (f"; references: {', '.join(warned)} (art2mus index names them)"
                   if warned else "")


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
        monotonic: Clock | None = None,
    ) -> None:
        self.room_id = room_id
        self.config = config
        self._publish = publish
        self._log_event = log_event
        self._clock = clock  # wall time: what is published and logged carries it
        # Intervals (heartbeats, stats, searches, a showing's end, the grace period): on a
        # clock that never steps; a test passes its fake clock as both, or the two apart.
        self._monotonic = interval_clock(clock, monotonic)
        self._timer = timer  # measures frame costs and paces the loop (monotonic)
        self.rate = AdaptiveFrameRate(config.fps, config.min_fps)
        self._next_tick: float | None = None
        self.source = source if source is not None else open_source(config, clock,
                                                                    self._monotonic)
        #: The camera's lens, taken out of every frame of its aspect before anything looks
        #: at it; None without a calibration.
        self.lens = Lens(config.lens) if config.lens is not None else None
        # frame sizes it does not fit (logged once each), and what the heartbeat says then
        self._lens_unfit: dict[tuple[int, int], str] = {}
        self._frame_size: tuple[int, int] | None = None  # the last frame's (width, height)
        #: The lens in a few words, for the heartbeat (the console and ``art2mus status``):
        #: "" without one, "fisheye, measured at 1280x720", or "not used: ..." while the
        #: frames are of another aspect.
        self._lens_in_use = "" if config.lens is None else \
            f"{config.lens.model}, measured at {config.lens.width}x{config.lens.height}"
        self.lens_state = self._lens_in_use
        self.stability = StabilityTracker(config.stability)
        self.memory = ArtworkMemory(config.stability.same_artwork_distance)
        self.selector = PrimarySelector(config.stability.primary_switch_ratio,
                                        config.stability.primary_switch_frames)
        self.catalogue = catalogue
        self._deblurred_reported = 0  # the catalogue's count at the last stats event
        #: Set once the configured catalogue is open (or failed to open), or at once without one.
        self.catalogue_ready = threading.Event()
        # The catalogue folder's fingerprint last opened (or tried), and a catalogue the
        # watching thread opened since, which step() takes in between two frames.
        self._catalogue_fingerprint: str | None = None
        self._updated_catalogue: Catalogue | None = None
        #: The catalogue's state in a few words, for the heartbeat (the console and ``art2mus
        #: status`` show it): "" without one, "opening", "N works", "N works, updating",
        #: "failed: ..." or "N works; update failed: ..." (the one held is kept); "N works;
        #: references: 2 small, 1 plain (...)" where its index warns of some.
        self.catalogue_state = "" if catalogue is None else _opened(catalogue)
        self._catalogue_lock = threading.Lock()
        self._closed = threading.Event()  # run() ended: the watching thread ends too
        self.tracker = QuadTracker()
        self._tracked_id: str | None = None  # the catalogue id a search found, while tracked
        self._contested = False  # the quad finder's primary is elsewhere than the tracked work
        # Pictures the catalogue does not name, in a room that ignores those (uncatalogued
        # = "ignore"): (quad, glance, last seen). The quad finder's finds of the same
        # picture at the same place are passed over, so a catalogued work beside one can be
        # the primary.
        self._ignored: list[tuple[np.ndarray, np.ndarray, float]] = []
        self._tracked_quad: np.ndarray | None = None  # the tracker's quad in the latest frame
        self._frame_index = 0
        self._last_search = -float("inf")  # monotonic, as every time kept below
        self._searches = 0  # whole-frame searches so far (every fine_search_every-th is fine)
        self.overlay = OverlayWriter(config.overlay.format(room=room_id),
                                     config.overlay_every_s) if config.overlay else None
        self.console_frame = OverlayWriter(
            config.console_frame.format(room=room_id), config.console_frame_every_s,
            width=config.console_frame_width, jpeg_quality=CONSOLE_JPEG_QUALITY,
        ) if config.console_frame else None
        if catalogue is not None:
            self._titles_from(catalogue)
        # "Show this work": requests written by the control thread, one object at a time.
        self._show_tokens = itertools.count(1)
        self._show_request: _ShowRequest | None = None
        self._show_token = 0  # the last request the loop took
        self._showing: _Showing | None = None
        #: Control parameters refused so far, by name (``control_refused`` events).
        self.refused_controls: dict[str, int] = {}
        self.encoder = encoder if encoder is not None else make_encoder(config.encoder)
        # Per artwork id: its descriptor and embedding, computed once.
        self._described: dict[str, tuple[Descriptor, np.ndarray]] = {}
        self._embedding: np.ndarray | None = None
        self._frames_unseen = 0
        self._seq = 0
        self._view: ArtworkView | None = None  # the current view, re-sent as heartbeat
        self._catalogued = False  # whether the current view's work is the catalogue's
        self._looks_again = 0  # ...and if not, how often its place was looked at again
        self._last_look_again = -float("inf")
        #: Why the catalogued work playing is to be named anew from an updated catalogue
        #: (its id is gone from it, or its reference image changed), or None.
        self._name_anew: str | None = None
        self._playing_file: str | None = None  # the catalogued work playing's reference
        self._descriptor: Descriptor | None = None
        self._artwork_id: str | None = None
        self._last_publish = -float("inf")
        self._truth_index: int | None = None  # a source's ground truth, for "source_change"
        self._stats_since = self._monotonic()
        self._stats = {"frames": 0, "detected": 0, "busy_s": 0.0, "published": 0, "ignored": 0,
                       "failed": 0, "refused": 0}
        self._failure_logged = -math.inf  # timer time of the last frame_failed event
        self._refusal_logged = -math.inf  # ...and of the last frame_refused event
        self._refused_unsaid = 0  # frames refused since that event
        self._converted: set[str] = set()  # the frame layouts converted so far (said once)
        # Last: the opening thread uses the overlays and the rest of this object.
        if catalogue is None and config.recognition.catalogue:
            threading.Thread(target=self._keep_catalogue, name=f"catalogue-{room_id}",
                             daemon=True).start()
        else:
            self.catalogue_ready.set()

    # -- the loop --

    def run(self, stop: threading.Event) -> None:
        """Process frames at the effective rate until ``stop`` is set; closes the source.

        A frame whose processing fails (a defect a particular view brings out) is
        dropped, logged (``frame_failed``) and counted (``stats``' ``failed``), and
        what the loop was following is let go: the room keeps its capture instead of
        restarting into the same view. :data:`FAILED_IN_A_ROW` failures in a row are
        no particular view: the error is raised, and the role is restarted.
        """
        in_a_row = 0
        try:
            while not stop.is_set():
                try:
                    delay = self.paced_step()
                    in_a_row = 0
                except Exception as error:
                    in_a_row += 1
                    if in_a_row >= FAILED_IN_A_ROW:
                        raise
                    self._frame_failed(error, in_a_row)
                    delay = self.rate.period_s
                if delay > 0:
                    stop.wait(delay)
        finally:
            self._closed.set()
            self.source.close()

    def _frame_failed(self, error: Exception, in_a_row: int) -> None:
        """Count a frame whose processing raised, log it (at most one a second: a defect
        that fails every other frame for hours must not fill the disk), and let go of the
        tracked work."""
        self._stats["failed"] += 1
        now = self._timer()
        if now - self._failure_logged >= FAILED_LOG_EVERY_S:
            self._failure_logged = now
            where = error.__traceback__
            while where is not None and where.tb_next is not None:
                where = where.tb_next
            place = (f"{Path(where.tb_frame.f_code.co_filename).name}:{where.tb_lineno}"
                     if where is not None else "?")
            log.warning("room %s: a frame failed (%s at %s), dropped", self.room_id,
                        type(error).__name__, place, exc_info=error)
            self._log_event("frame_failed", error=f"{type(error).__name__}: {error}"[:200],
                            where=place, in_a_row=in_a_row)
        self._next_tick = None  # the pace starts again from the next frame
        self.tracker.reset()
        self._tracked_quad = self._tracked_id = None

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
        """Process one frame; return the view published for it, if any.

        A frame that is not 3-channel BGR uint8 is converted first (:func:`bgr8`; each
        layout said once, ``frame_converted``), or, where nothing can be made of it (empty,
        not finite, ...), dropped as if the camera had sent none: counted (``stats``'
        ``refused``) and said at most once a second (``frame_refused``), never raised
        (which would count towards the role's restart, into the same frames).
        """
        began = self._timer()
        self._take_updated_catalogue()
        frame = self.source.read()
        if frame is not None:
            frame = self._conformed(frame)
        if frame is None:
            now = _Now(self._clock(), self._monotonic())
            shown = self._follow_show(now)
            heartbeat = self._heartbeat(now)
            return shown if shown is not None else heartbeat
        now = _Now(frame.timestamp, self._monotonic())
        self._note_frame_size(frame.image.shape)
        if self.lens is not None:
            frame = self._undistorted(frame)
        shown = self._follow_show(now)
        self._note_ground_truth(frame)
        self._frame_index += 1

        tracked = self._track(frame.image)
        detections: list[Detection] = []
        if tracked is None or self._contested \
                or self._frame_index % self.config.redetect_every_frames == 0:
            # the tracked work is in view: a caption card beside it is a card, though the
            # quad finder does not trace the work
            detections = detect_artworks(frame.image, self.config.detect_width,
                                         beside=[] if tracked is None else [tracked.quad])
            if self._ignored:
                detections = self._not_ignored(frame.image, detections, now)
            # The tracked work is a candidate too, with its exact quad (often located by the
            # catalogue where the quad finder sees only part of its frame, or nothing): a
            # smaller or off-centre find of the quad finder does not take its place.
            primary = self.selector.select(
                detections if tracked is None else [*detections, tracked], frame.image.shape)
            # The tracked quad stands wherever the quad finder sees the same place, or
            # nothing. Another primary contests it: the quad finder then runs every frame,
            # so the switch is decided as quickly as without tracking.
            self._contested = tracked is not None and primary is not None \
                and overlap_fraction(primary.quad, tracked.quad) <= SAME_PLACE
            if tracked is not None and not self._contested:
                primary = tracked
        else:
            primary = tracked
        if primary is None:
            primary = self._relocate(frame.image, now)
        else:
            self._frames_unseen = 0
        sighting = None
        if primary is not None:
            glance = glance_signature(rectify(frame.image, primary.quad, _GLANCE_RECTIFY))
            sighting = Sighting(primary.quad, primary.score, glance)
        decision = self.stability.update(now.mono, sighting)

        published = None
        if decision.changed:
            if decision.track is not None and primary is not None:
                published = self._on_new_view(frame.image, primary.quad, now, decision)
            elif decision.track is None:
                self.tracker.reset()
                self._tracked_quad = self._tracked_id = None
                if self._view is None or self._view.state != "empty":  # (an ignored picture
                    # left the wall empty already)
                    published = self._change(now, "empty", None, None, decision.confidence,
                                             None)
        elif (self.config.track and not self.tracker.active and primary is not None
              and self._view is not None and self._view.state == "artwork"):
            self._start_tracking(frame.image, primary.quad)  # lost, and seen again
        if published is None and primary is not None and decision.quad is not None:
            published = self._named_anew(frame.image, primary.quad, decision.quad, now) \
                if self._name_anew is not None else \
                self._look_again(frame.image, primary.quad, decision.quad, now)
        if published is None:
            published = self._heartbeat(now, decision.quad, decision.confidence)
        if self.overlay is not None or self.console_frame is not None:
            self._write_overlay(frame.image, detections, primary)

        self._stats["frames"] += 1
        self._stats["detected"] += primary is not None
        self._stats["busy_s"] += self._timer() - began
        self._maybe_log_stats(now)
        return shown if shown is not None else published

    def _conformed(self, frame: Frame) -> Frame | None:
        """``frame`` with BGR uint8 pixels (converted where it came otherwise), or None for a
        frame nothing can be made of (counted, and said at most once a second)."""
        try:
            image = bgr8(frame.image)
        except FrameRefused as refused:
            self._stats["refused"] += 1
            self._refused_unsaid += 1
            now = self._timer()
            if now - self._refusal_logged >= FAILED_LOG_EVERY_S:
                self._refusal_logged = now
                log.warning("room %s: a frame refused (%s), dropped", self.room_id, refused)
                self._log_event("frame_refused", why=str(refused)[:200],
                                refused=self._refused_unsaid)
                self._refused_unsaid = 0
            return None
        if image is frame.image:
            return frame
        layout = describe_pixels(frame.image).rsplit(" ", 1)[0]  # "1-channel uint16"
        if layout not in self._converted:
            self._converted.add(layout)
            log.info("room %s: %s frames converted to 3-channel uint8 BGR", self.room_id,
                     layout)
            self._log_event("frame_converted", frames=layout, to="3-channel uint8 BGR")
        return dataclasses.replace(frame, image=image)

    def _note_frame_size(self, shape: tuple[int, ...]) -> None:
        """A camera reopened at another size (a stream renegotiated, a driver's default):
        what was followed is let go (its quad is of the old frame), and said once."""
        size = (int(shape[1]), int(shape[0]))
        if self._frame_size is not None and size != self._frame_size:
            self._log_event("frame_size_changed", was=f"{self._frame_size[0]}x"
                            f"{self._frame_size[1]}", now=f"{size[0]}x{size[1]}")
            self.tracker.reset()
            self._tracked_quad = self._tracked_id = None
        self._frame_size = size

    def _undistorted(self, frame: Frame) -> Frame:
        """``frame`` with the lens taken out; as it came where the lens does not fit its
        size (another aspect than the calibration's: a ``lens_mismatch`` event, once a
        size; a camera reopened at its own size again has the lens taken out again)."""
        assert self.lens is not None
        size = (frame.image.shape[1], frame.image.shape[0])
        if size in self._lens_unfit or not self.lens.fits(size):
            if size not in self._lens_unfit:
                measured = f"{self.lens.config.width}x{self.lens.config.height}"
                self._lens_unfit[size] = \
                    f"not used: {size[0]}x{size[1]} frames, measured at {measured}"
                self._log_event("lens_mismatch", frame=f"{size[0]}x{size[1]}",
                                calibrated=measured,
                                what="frames of this size are taken as they come: calibrate "
                                     "the camera at the size it streams")
            self.lens_state = self._lens_unfit[size]
            return frame
        self.lens_state = self._lens_in_use
        return dataclasses.replace(frame, image=self.lens.undistort(frame.image))

    def wait_for_catalogue(self, timeout_s: float | None = None) -> bool:
        """Block until the configured catalogue is open (or failed); whether it is ready."""
        return self.catalogue_ready.wait(timeout_s)

    # -- decisions --

    def _keep_catalogue(self) -> None:
        """The catalogue thread: open the configured catalogue, then look at its folder
        every ``recognition.watch_s`` and open it again where it changed."""
        try:
            self.catalogue = self._try_open_catalogue()
            if self.catalogue is not None:
                self._titles_from(self.catalogue)
        finally:
            self.catalogue_ready.set()
        watch_s = self.config.recognition.watch_s
        folder = Path(str(self.config.recognition.catalogue))
        while watch_s > 0 and not self._closed.wait(watch_s):
            try:
                seen = folder_fingerprint(folder)
                if seen == self._catalogue_fingerprint:
                    continue
                # A file being saved or copied (an editor truncates catalogue.toml, then
                # writes it): opened once the folder has stood still a moment, not read
                # half-written (its works were named by their file names until the next look)
                if self._closed.wait(min(CATALOGUE_SETTLE_S, watch_s)):
                    break
                if folder_fingerprint(folder) != seen:
                    continue  # still changing: the next look sees it whole
            except OSError:  # the folder is away (a share unmounted): keep what is held
                continue
            updated = self._try_open_catalogue(update=True)
            if updated is not None:
                with self._catalogue_lock:
                    self._updated_catalogue = updated

    def _try_open_catalogue(self, update: bool = False) -> Catalogue | None:
        """:meth:`_open_catalogue`, where a defect it brings out is logged and said in the
        heartbeat rather than ending the catalogue thread: the room plays on with what it
        held, and the watching goes on."""
        try:
            return self._open_catalogue(update)
        except Exception as error:
            log.exception("room %s: catalogue %s not %s", self.room_id,
                          self.config.recognition.catalogue, "updated" if update else "opened")
            self._catalogue_failed(update, f"{type(error).__name__}: {error}")
            return None

    def _catalogue_failed(self, update: bool, why: str) -> None:
        """Say in the heartbeat's ``catalogue`` state that opening or updating it failed."""
        held = self.catalogue
        self.catalogue_state = (f"{_works(len(held))}; update failed: " if update
                                and held is not None else "failed: ") + why[:_STATE_CHARS]

    def _open_catalogue(self, update: bool = False) -> Catalogue | None:
        """Open the configured catalogue (building what changed of its index), logging
        ``catalogue_opening`` / ``catalogue_updating`` and ``catalogue_ready`` or
        ``catalogue_failed``; None where it cannot be opened. Each state of the folder is
        tried once (a broken image is not read again until the folder changes)."""
        recognition = self.config.recognition
        assert recognition.catalogue is not None
        began = time.perf_counter()
        try:
            self._catalogue_fingerprint = folder_fingerprint(Path(recognition.catalogue))
        except OSError:
            self._catalogue_fingerprint = None
        held = self.catalogue
        self.catalogue_state = f"{_works(len(held))}, updating" if update and held is not None \
            else "opening"
        self._log_event("catalogue_updating" if update else "catalogue_opening",
                        folder=recognition.catalogue)
        try:
            # An image that cannot be read (a copy cut short, a phone's HEIC named .jpg) is
            # left out and named: the room recognises every other work meanwhile. It once
            # cost a room, at start, its whole catalogue.
            catalogue = Catalogue.open(recognition.catalogue, recognition.cache_dir,
                                       recognition.min_inliers, recognition.locate_width,
                                       leave_out_unreadable=True)
        except (InputError, OSError, cv2.error, ValueError) as exc:
            # The room plays on without ids from the catalogue, or with the one it held (the
            # doctor checks the folder before start-up, so this is a folder that changed
            # under a running room: an image still being copied, a bad metadata edit).
            log.error("room %s: catalogue %s not %s: %s", self.room_id, recognition.catalogue,
                      "updated, the one before is kept" if update else "opened", exc)
            self._log_event("catalogue_failed", folder=recognition.catalogue, error=str(exc),
                            update=update)
            # the folder goes without saying there: the heartbeat's line is short
            folder = str(recognition.catalogue).rstrip("/")
            self._catalogue_failed(update, str(exc).replace(f"catalogue {folder}: ", "")
                                   .replace(f"{folder}/", ""))
            return None
        self.catalogue_state = _opened(catalogue)
        self._log_event("catalogue_ready", folder=recognition.catalogue,
                        works=len(catalogue), rebuilt=catalogue.rebuilt,
                        reused=catalogue.reused, update=update, small=len(catalogue.small),
                        plain=len(catalogue.plain), twins=len(catalogue.twins),
                        unreadable=len(catalogue.left_out),
                        left_out=[f"{name} ({why})" for name, why in
                                  itertools.islice(catalogue.left_out.items(), NAMED_AT_MOST)],
                        seconds=round(time.perf_counter() - began, 2))
        return catalogue

    def _take_updated_catalogue(self) -> None:
        """Between two frames: use the catalogue the watching thread opened since, if any.
        Its works are described again from it (a reference may have been replaced);
        works outside it keep what they were described as.

        The work in view is judged again by it: one with an id of its own gets its looks
        again (:meth:`_look_again`; the work may be the one just added, and its looks
        were spent long ago), and a catalogued one whose id the update took away or whose
        reference image it changed is named anew at the next frame that shows it
        (:meth:`_named_anew`). A title edited keeps the id: the heartbeat reads the title
        from the catalogue held."""
        with self._catalogue_lock:
            updated, self._updated_catalogue = self._updated_catalogue, None
        if updated is None:
            return
        held = self.catalogue
        before = held.ids if held is not None else []
        for artwork_id in {*before, *updated.ids}:
            self._described.pop(artwork_id, None)
        self.catalogue = updated
        self._deblurred_reported = 0
        self._titles_from(updated)
        self._tracked_id = None  # a search's find, named by the catalogue before
        playing = self._artwork_id
        if self._view is None or self._view.state != "artwork" or playing is None:
            return
        if not self._catalogued:
            self._looks_again = 0
            self._last_look_again = -float("inf")  # the next frame looks
        elif updated.entry(playing) is None:
            if self._playing_file in updated.left_out:
                # Its image cannot be read: most likely a new photo still being copied over
                # it. It is named anew once that reads (the folder changes again); not now,
                # which would change the music twice for one photo replaced.
                return
            self._name_anew = "not in the catalogue any more"
        elif held is None or held.reference(playing) != updated.reference(playing):
            self._name_anew = "its reference image changed"

    def _titles_from(self, catalogue: Catalogue) -> None:
        """The overlays label catalogued works with their titles."""
        titles = {e.artwork_id: e.title for e in catalogue.entries if e.title}
        for writer in (self.overlay, self.console_frame):
            if writer is not None:
                writer.titles = titles

    # -- "show this work" --

    def apply_set(self, params: Mapping[str, Any]) -> None:
        """Take a Control's ``show_artwork``/``show_for_s`` (other parameters are not capture's).

        Any thread. A request that cannot be followed (an unknown id, a
        duration that is not a number >= 0, no catalogue) is counted in
        :attr:`refused_controls` and logged as ``control_refused``; it never
        raises.
        """
        if "show_artwork" not in params and "show_for_s" not in params:
            return
        artwork_id = params.get("show_artwork")
        try:
            self.show(artwork_id, params.get("show_for_s", SHOW_DEFAULT_S))
        except ShowRefused as refused:
            self.refused_controls[refused.field] = self.refused_controls.get(refused.field, 0) + 1
            self._log_event("control_refused", name=refused.field,
                            value=repr(params.get(refused.field))[:40], error=str(refused))

    def show(self, artwork_id: object, seconds: object) -> float | None:
        """Publish catalogue work ``artwork_id`` instead of the camera for ``seconds`` (cut
        to :data:`SHOW_MAX_S`; 0: back to the camera now); when it ends, on the wall clock
        (it is timed on the monotonic one: the wall clock set back does not lengthen it).

        Any thread: the reference image is read here, and the loop takes the
        request at its next frame. :class:`ShowRefused` naming the parameter
        when the request cannot be followed.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) \
                or not math.isfinite(seconds) or seconds < 0:
            raise ShowRefused("show_for_s", f"expected a number of seconds >= 0, got {seconds!r}")
        if seconds == 0:
            self._show_request = _ShowRequest(next(self._show_tokens), None, 0.0, 0.0, None)
            return None
        catalogue = self.catalogue
        if catalogue is None:
            if self.config.recognition.catalogue:
                raise ShowRefused("show_artwork", f"the catalogue of room {self.room_id} is not "
                                                  f"open (yet, or it failed to open)")
            raise ShowRefused("show_artwork", f"room {self.room_id} has no catalogue "
                                              f"(capture.recognition.catalogue is not set)")
        if not isinstance(artwork_id, str) or not artwork_id:
            raise ShowRefused("show_artwork", f"expected a catalogue id, got {artwork_id!r}")
        entry = catalogue.entry(artwork_id)
        if entry is None:
            raise ShowRefused("show_artwork", f"{artwork_id!r} is not in the catalogue "
                                              f"{catalogue.folder}")
        try:
            image = read_image(Path(catalogue.folder) / entry.file, REDUCED_AT_LEAST)
        except InputError as error:
            raise ShowRefused("show_artwork", str(error)) from None
        seconds = min(float(seconds), SHOW_MAX_S)
        # it ends on the monotonic clock; the wall clock's "until" is what the console says
        until = self._clock() + seconds
        self._show_request = _ShowRequest(next(self._show_tokens), artwork_id, until,
                                          self._monotonic() + seconds, image)
        return until

    @property
    def showing(self) -> dict[str, Any] | None:
        """``{"artwork_id", "until"}`` of the work shown instead of the camera, or None."""
        showing = self._showing
        if showing is None:
            return None
        return {"artwork_id": showing.artwork_id, "until": round(showing.until, 3)}

    def _follow_show(self, now: _Now) -> ArtworkView | None:
        """Take a new request, end an expired showing, re-send the shown view when due;
        the view published for it, if any (loop thread)."""
        request = self._show_request
        if request is not None and request.token != self._show_token:
            self._show_token = request.token
            if request.artwork_id is not None and request.image is not None:
                return self._start_showing(request, now)
            if self._showing is not None:
                return self._end_showing(now, "stopped")
        showing = self._showing
        if showing is None:
            return None
        if now.mono >= showing.until_mono:
            return self._end_showing(now, "expired")
        if now.mono - showing.last_sent >= self.config.heartbeat_s:
            return self._send_shown(now)
        return None

    def _start_showing(self, request: _ShowRequest, now: _Now) -> ArtworkView:
        assert request.artwork_id is not None and request.image is not None
        if self._showing is not None:
            self._log_event("showing_ended", artwork_id=self._showing.artwork_id,
                            reason="replaced")
        artwork_id, image = request.artwork_id, request.image
        rectified = whole_view(image, self.config.rectified_size)
        known = self._described.get(artwork_id)
        descriptor = known[0] if known is not None else describe_image(rectified)
        self._remember(artwork_id, descriptor, rectified)
        embedding = self._described[artwork_id][1]
        self._showing = _Showing(artwork_id, request.until, request.until_mono, descriptor,
                                 embedding, now.mono)
        self._log_event("showing_started", artwork_id=artwork_id,
                        seconds=round(request.until_mono - now.mono, 3), until=request.until)
        log.info("room %s: showing %s instead of the camera until %.0f", self.room_id,
                 artwork_id, request.until)
        return self._send_shown(now)

    def _send_shown(self, now: _Now) -> ArtworkView:
        showing = self._showing
        assert showing is not None
        self._seq += 1
        view = ArtworkView.of_artwork(self.room_id, self._seq, now.wall, showing.artwork_id, 1.0,
                                      self.encoder.name, showing.embedding,
                                      dict(showing.descriptor.features))
        showing.last_sent = now.mono
        self._stats["published"] += 1
        self._publish(view)
        return view

    def _end_showing(self, now: _Now, reason: str) -> ArtworkView | None:
        """Back to the camera: its current view (or an empty wall) is published at once."""
        showing = self._showing
        assert showing is not None
        self._showing = None
        self._log_event("showing_ended", artwork_id=showing.artwork_id, reason=reason)
        camera = self._view
        if camera is None:
            return self._send(ArtworkView.empty(self.room_id, now.wall, self._next_seq()), now)
        quad = np.asarray(camera.quad, np.float32) if camera.quad is not None else None
        return self._send(self._make_view(now.wall, camera.state, camera.confidence, quad), now)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _track(self, image: np.ndarray) -> Detection | None:
        """The followed work's quad in this frame by optical flow, or None (none, or lost)."""
        if not self.config.track or not self.tracker.active:
            return None
        result = self.tracker.update(image)
        self._tracked_quad = result.quad
        if result.quad is None:
            self._tracked_id = None
            return None
        if result.held_frames:
            # Occluded or blurred: the tracker holds on, but a held quad is not a sighting
            # (the stability tracker's grace period keeps the view meanwhile).
            return None
        return _detection(result.quad, 1.0, image.shape)

    def _start_tracking(self, image: np.ndarray, quad: np.ndarray,
                        artwork_id: str | None = None) -> None:
        self._tracked_id = artwork_id
        self._contested = False
        if not self.config.track:
            return
        try:
            self._tracked_quad = self.tracker.start(image, quad).quad
        except ValueError:  # a quad too small to track: detection follows it instead
            self.tracker.reset()
            self._tracked_quad = None

    def _relocate(self, image: np.ndarray, now: _Now) -> Detection | None:
        """Find a catalogued painting the quad finder and the tracker miss.

        While following one, a visitor in front of it or glare across its edge
        breaks its outline but leaves most of its features: the homography of
        its reference into the frame gives the quad back (every
        ``locate_every_frames`` frames). With nothing in view, the whole frame
        is searched for catalogued works (every ``search_every_s``): a large
        work at a steep angle or in dim light has no outline the quad finder
        takes, but its features are there; every ``fine_search_every``-th
        search also looks finer (a camera across the room sees small works).
        A find is tracked from then on, so the stability tracker sees it frame
        after frame.
        """
        self._frames_unseen += 1
        recognition = self.config.recognition
        catalogue = self.catalogue
        if catalogue is None:
            return None
        following = self._artwork_id is not None and catalogue.entry(self._artwork_id) is not None
        if following:
            every = recognition.locate_every_frames
            if every == 0 or self._frames_unseen % every != 0:
                return None
            found = catalogue.locate(image, max_results=1, only=[str(self._artwork_id)])
        else:
            if recognition.search_every_s == 0 or now.mono - self._last_search < \
                    recognition.search_every_s:
                return None
            self._last_search = now.mono
            self._searches += 1
            every = recognition.fine_search_every
            found = catalogue.locate(image, fine=every > 0 and self._searches % every == 0)
        if not found:
            return None
        candidates = [_detection(f.quad, f.score, image.shape) for f in found]
        best = choose_primary(candidates, image.shape)
        if best is None:
            return None
        location = found[candidates.index(best)]  # by identity (Detection is eq=False)
        self._start_tracking(image, location.quad, location.artwork_id)
        return best

    def _identify(self, image: np.ndarray, quad: np.ndarray,
                  ) -> tuple[str, Descriptor, bool, np.ndarray] | None:
        """(artwork id, descriptor, whether recognised in the catalogue, the picture's quad)
        for a new view; None for a picture the catalogue does not name in a room that
        ignores those (``uncatalogued = "ignore"``).

        Catalogue first: a work located by its own features on the view gives
        the id and the picture's exact corners (the quad finder may have taken
        the frame or its shadow); then the rectified view is recognised; then
        a work the whole frame's search, coarse and fine, places round it (a
        piece of a smeared work); then the work gets an id of its own.
        """
        catalogue = self.catalogue
        if catalogue is not None:
            artwork_id = None
            if self._tracked_id is not None and self._tracked_quad is not None \
                    and overlap_fraction(self._tracked_quad, quad) > SAME_PLACE:
                artwork_id = self._tracked_id  # a search found it just now, here
            self._tracked_id = None  # once: the tracker may pick up another work in place
            if artwork_id is None:
                here = [f for f in catalogue.locate(image, near=quad)
                        if overlap_fraction(f.quad, quad) > SAME_PLACE]
                if here:  # the location's corners, or the quad finder's where they fit better
                    artwork_id = here[0].artwork_id
                    quad = catalogue.closest_outline(image, artwork_id, [here[0].quad, quad])
            if artwork_id is None:
                match = catalogue.recognise(rectify(image, quad, SQUARE))
                artwork_id = match.artwork_id if match is not None else None
                picture = picture_in_view(quad, match.homography) if match else None
                if match is not None and picture is not None:  # the picture inside a frame
                    quad = catalogue.closest_outline(image, match.artwork_id, [quad, picture])
            if artwork_id is None:
                # Not named at its place: before it gets an id of its own (which would stick,
                # and play a catalogued work's music wrong), the whole frame is searched once,
                # finely too (~0.6 s on one core, only for such an arrival). A smeared, dim or
                # glazed frame gives the quad finder a piece of a work, or its frame's shadow;
                # the work's features place it whole, a dark one only at the finer scale.
                whole = [f for f in catalogue.locate(image, fine=True)
                         if overlap_fraction(f.quad, quad) > SAME_PLACE]
                if whole:
                    artwork_id, quad = whole[0].artwork_id, whole[0].quad
            if artwork_id is not None:
                return artwork_id, self._describe_catalogued(image, artwork_id, quad), True, quad
            if self.config.recognition.uncatalogued == "ignore":
                return None  # not described, not embedded: it will not play
        rectified = rectify(image, quad, self.config.rectified_size)
        artwork_id, descriptor, _ = self.memory.identify(describe_image(rectified))
        self._remember(artwork_id, descriptor, rectified)
        return artwork_id, descriptor, False, quad

    def _describe_catalogued(self, image: np.ndarray, artwork_id: str, quad: np.ndarray
                             ) -> Descriptor:
        """The catalogued work's descriptor (its embedding remembered beside it), from its
        reference image or the camera's view at ``quad`` (``recognition.describe``)."""
        if artwork_id not in self._described:
            rectified = self._reference_view(self.catalogue, artwork_id) \
                if self.catalogue is not None and self.config.recognition.describe == \
                "reference" else None
            if rectified is None:  # 'view', or a reference that cannot be read
                rectified = rectify(image, quad, self.config.rectified_size)
            self._remember(artwork_id, describe_image(rectified), rectified)
        return self._described[artwork_id][0]

    def _look_again(self, image: np.ndarray, quad: np.ndarray, playing: np.ndarray,
                    now: _Now) -> ArtworkView | None:
        """The work in view, which has an id of its own in a room with a catalogue, named
        after all: its place looked at again every ``recognition.search_every_s``, its
        first :data:`LOOKS_AGAIN` times; the change to the catalogued work, or None.
        The first look is :data:`FIRST_LOOK_AGAIN_S` after the arrival.
        ``quad``: this frame's primary; ``playing``: the confirmed view's quad. Only the
        work playing is looked at, where it is: not a passing sighting of another one,
        which the stability tracker has not confirmed.

        An arrival is named from one frame, and a smeared, glazed or half-hidden frame
        can hide a catalogued work's features (the dark 010 under blur, found in one frame
        of two): its id of its own would stick, and the work play music not its own for as
        long as it stays. The looks are few and then stop, so a work outside the
        catalogue does not run the chance of a false id for as long as it stays; an
        updated catalogue gives them again (:meth:`_take_updated_catalogue`: the work
        in view may be the one just added)."""
        catalogue = self.catalogue
        every = self.config.recognition.search_every_s
        if catalogue is None or self._view is None or self._view.state != "artwork" \
                or self._catalogued or self._looks_again >= LOOKS_AGAIN or every == 0 \
                or now.mono - self._last_look_again < every \
                or overlap_fraction(quad, playing) <= SAME_PLACE:
            return None
        self._looks_again += 1
        self._last_look_again = now.mono
        here = [f for f in catalogue.locate(image, near=quad)
                if overlap_fraction(f.quad, quad) > SAME_PLACE]
        if not here:
            return None
        artwork_id = here[0].artwork_id
        quad = catalogue.closest_outline(image, artwork_id, [here[0].quad, quad])
        descriptor = self._describe_catalogued(image, artwork_id, quad)
        self.stability.reframe(now.mono, quad,
                               glance_signature(rectify(image, quad, _GLANCE_RECTIFY)))
        self._start_tracking(image, quad)
        self._log_event("named_again", time=now.wall, artwork_id=artwork_id,
                        instead_of=self._artwork_id, looks=self._looks_again)
        return self._change(now, "artwork", artwork_id, descriptor, self._view.confidence, quad,
                            catalogued=True)

    def _named_anew(self, image: np.ndarray, quad: np.ndarray, playing: np.ndarray,
                    now: _Now) -> ArtworkView | None:
        """The catalogued work playing, whose id an updated catalogue took away or whose
        reference image it changed, named again by it as an arrival is (:meth:`_identify`,
        at its place): the change (the work of its new id; the same id described from its
        new reference; an id of its own where nothing in the catalogue names it now, whose
        place is then looked at again as any such arrival's; an empty wall in a room that
        ignores uncatalogued pictures), or None while the work playing is not the one in
        view. Else the room went on publishing an id its catalogue no longer held (an
        inventory number corrected; a wrong photo replaced) for as long as the work stayed.
        ``quad``: this frame's primary; ``playing``: the confirmed view's quad."""
        assert self._view is not None and self._name_anew is not None
        if self._view.state != "artwork" or overlap_fraction(quad, playing) <= SAME_PLACE:
            return None
        why, was = self._name_anew, self._artwork_id
        self._name_anew = None
        confidence = self._view.confidence
        identified = self._identify(image, quad)
        if identified is None:  # ignored from now on, as at an arrival
            self._ignore(image, quad, now, confidence)
            self._log_event("named_anew", time=now.wall, artwork_id=None, instead_of=was,
                            why=why)
            return self._change(now, "empty", None, None, confidence, None)
        artwork_id, descriptor, catalogued, quad = identified
        self.stability.reframe(now.mono, quad,
                               glance_signature(rectify(image, quad, _GLANCE_RECTIFY)))
        self._start_tracking(image, quad)
        self._log_event("named_anew", time=now.wall, artwork_id=artwork_id, instead_of=was,
                        why=why)
        return self._change(now, "artwork", artwork_id, descriptor, confidence, quad,
                            catalogued)

    def _reference_view(self, catalogue: Catalogue, artwork_id: str) -> np.ndarray | None:
        """The work's catalogue reference as a view; None (and said) where it cannot be
        read: the camera's view stands in."""
        try:
            return catalogue.reference_view(artwork_id, self.config.rectified_size)
        except InputError as error:
            self._log_event("reference_unreadable", artwork_id=artwork_id, error=str(error))
            return None

    def _remember(self, artwork_id: str, descriptor: Descriptor, rectified: np.ndarray) -> None:
        # The embedding is computed once per artwork id (an ONNX encoder can
        # cost tens of milliseconds) and then reused, like the descriptor.
        if artwork_id not in self._described:
            self._described[artwork_id] = (descriptor, self.encoder.embed(rectified))
            while len(self._described) > 512:  # months unattended: stay bounded
                del self._described[next(iter(self._described))]

    def _on_new_view(self, image: np.ndarray, quad: np.ndarray, now: _Now,
                     decision: TrackState) -> ArtworkView | None:
        identified = self._identify(image, quad)
        if identified is None:
            return self._ignore(image, quad, now, decision.confidence)
        artwork_id, descriptor, catalogued, quad = identified
        self.stability.reframe(now.mono, quad,
                               glance_signature(rectify(image, quad, _GLANCE_RECTIFY)))
        self._start_tracking(image, quad)
        if artwork_id == self._artwork_id and self._view is not None \
                and self._view.state == "artwork":
            return None  # the same painting re-acquired (after a glance away): no change
        # published where recognition placed it (the reframed track's), not at the sighting
        return self._change(now, "artwork", artwork_id, descriptor, decision.confidence, quad,
                            catalogued)

    def _ignore(self, image: np.ndarray, quad: np.ndarray, now: _Now,
                confidence: float) -> ArtworkView | None:
        """A picture the catalogue does not name, in a room that ignores those: its place
        is passed over from now on (so it is looked at once per arrival, not every frame,
        and a catalogued work beside it can be the primary) and it is said, but it never
        plays: the room keeps what it had until that is gone (an empty wall at first)."""
        glance = glance_signature(rectify(image, quad, _GLANCE_RECTIFY))
        self._ignored.append((quad.astype(np.float32), glance, now.mono))
        self.tracker.reset()  # whatever it followed is not in view any more
        self._tracked_quad = self._tracked_id = None
        self._stats["ignored"] += 1
        area = abs(float(cv2.contourArea(quad.astype(np.float32)))) / float(
            image.shape[0] * image.shape[1])
        self._log_event("uncatalogued_ignored", time=now.wall, area_fraction=round(area, 4),
                        quad=[[round(float(x), 1), round(float(y), 1)] for x, y in quad])
        if self._view is not None:
            # Already an empty wall; or a work plays, which may still be in view beside the
            # ignored picture (it is re-acquired as the same work, no change) or not (the
            # stability tracker then ends the track as for any work gone): no blip of
            # silence in between.
            return None
        return self._change(now, "empty", None, None, confidence, None)

    def _not_ignored(self, image: np.ndarray, detections: list[Detection], now: _Now
                     ) -> list[Detection]:
        """``detections`` less the ignored pictures: the same place and the same glance
        (another picture hung there, or shown there by the demo camera, is new). One not
        seen for the stability tracker's ``lost_after_s`` is forgotten (the camera moved,
        the picture went)."""
        kept = []
        for detection in detections:
            places = [k for k, (quad, _, _) in enumerate(self._ignored)
                      if overlap_fraction(detection.quad, quad) > SAME_PLACE]
            glance = glance_signature(rectify(image, detection.quad, _GLANCE_RECTIFY)) \
                if places else None
            hit = next((k for k in places if glance is not None
                        and glance_distance(glance, self._ignored[k][1]) < GLANCE_THRESHOLD),
                       None)
            if hit is None:
                kept.append(detection)
            else:
                quad, seen_glance, _ = self._ignored[hit]
                self._ignored[hit] = (quad, seen_glance, now.mono)
        forget_after = self.config.stability.lost_after_s
        self._ignored = [entry for entry in self._ignored if now.mono - entry[2] <= forget_after]
        return kept

    def _change(self, now: _Now, state: str, artwork_id: str | None,
                descriptor: Descriptor | None, confidence: float,
                quad: np.ndarray | None, catalogued: bool = False) -> ArtworkView | None:
        self._name_anew = None  # what plays now was named by the catalogue held
        if artwork_id != self._artwork_id:  # an arrival: an id of its own is looked at again
            # ...first FIRST_LOOK_AGAIN_S after it, then every search_every_s
            every = self.config.recognition.search_every_s
            self._looks_again = 0
            self._last_look_again = now.mono - every + min(every, FIRST_LOOK_AGAIN_S)
        self._artwork_id = artwork_id
        self._catalogued = catalogued
        self._descriptor = descriptor
        self._embedding = self._described[artwork_id][1] \
            if artwork_id is not None and artwork_id in self._described else None
        view = self._make_view(now.wall, state, confidence, quad)
        extra = {}
        self._playing_file = None
        if catalogued and self.catalogue is not None and artwork_id is not None:
            entry = self.catalogue.entry(artwork_id)
            if entry is not None:
                extra = {"title": entry.title, "artist": entry.artist}
                self._playing_file = entry.file
        self._log_event("artwork_change", time=now.wall, artwork_id=artwork_id,
                        confidence=round(confidence, 3), state=state,
                        features=dict(view.features), catalogued=catalogued, **extra)
        log.info("room %s: %s %s (confidence %.2f)", self.room_id, state, artwork_id or "",
                 confidence)
        return self._send(view, now)

    def _heartbeat(self, now: _Now, quad: np.ndarray | None = None,
                   confidence: float | None = None) -> ArtworkView | None:
        # on the monotonic clock: the wall clock set back would leave the last publication
        # "in the future", and no heartbeat go out until the wall clock caught up with it
        if self._view is None or now.mono - self._last_publish < self.config.heartbeat_s:
            return None
        if confidence is None:
            confidence = self._view.confidence
        if quad is None and self._view.quad is not None:
            quad = np.asarray(self._view.quad, np.float32)
        return self._send(self._make_view(now.wall, self._view.state, confidence, quad), now)

    def _make_view(self, wall: float, state: str, confidence: float,
                   quad: np.ndarray | None) -> ArtworkView:
        """The current view at wall-clock time ``wall``, numbered next."""
        self._seq += 1
        confidence = float(np.clip(confidence, 0.0, 1.0))
        if state != "artwork":
            return ArtworkView.empty(self.room_id, wall, self._seq, confidence)
        descriptor = self._descriptor
        embedding = None if descriptor is None else (
            self._embedding if self._embedding is not None else descriptor.vector)
        return ArtworkView.of_artwork(
            self.room_id, self._seq, wall, self._artwork_id, confidence,
            self.encoder.name if descriptor is not None else "", embedding,
            dict(descriptor.features) if descriptor is not None else {},
            quad=[(float(x), float(y)) for x, y in quad] if quad is not None else None)

    def _send(self, view: ArtworkView, now: _Now) -> ArtworkView | None:
        """Publish the camera's ``view`` (kept as the current one); while a work is shown it
        is only kept, and published again when the showing ends."""
        self._view = view
        self._last_publish = now.mono
        if self._showing is not None:
            return None
        self._stats["published"] += 1
        self._publish(view)
        return view

    # -- instrumentation --

    def _write_overlay(self, image: np.ndarray, detections: list[Detection],
                       primary: Detection | None) -> None:
        artworks = [RecognisedArtwork(d.quad, None, d.score, False, "quad")
                    for d in detections if d is not primary]
        if primary is not None:
            following = self._view is not None and self._view.state == "artwork"
            artworks.append(RecognisedArtwork(
                primary.quad, self._artwork_id if following else None,
                self._view.confidence if following and self._view else primary.score, True,
                "tracker" if self.tracker.active else "quad"))
        now = self._timer()
        for writer in (self.overlay, self.console_frame):
            if writer is not None:
                writer.maybe_write(now, image, artworks)

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

    def _deblurred_since_stats(self) -> int:
        """Catalogue searches since the last stats event that took a motion streak out of
        the frame first (a camera panning, or a slow shutter in a dim room)."""
        total = self.catalogue.deblurred if self.catalogue is not None else 0
        # a catalogue opened anew starts counting from 0
        since = total - self._deblurred_reported if total >= self._deblurred_reported else total
        self._deblurred_reported = total
        return since

    def _maybe_log_stats(self, now: _Now) -> None:
        elapsed = now.mono - self._stats_since
        if elapsed < self.config.stats_every_s:
            return
        frames = self._stats["frames"]
        self._log_event(
            "stats", time=now.wall, frames=frames, fps=round(frames / elapsed, 2),
            detection_rate=round(self._stats["detected"] / frames, 3) if frames else 0.0,
            busy_ms_per_frame=round(1000 * self._stats["busy_s"] / frames, 2) if frames else 0.0,
            published=self._stats["published"], ignored=self._stats["ignored"],
            failed=self._stats["failed"], refused=self._stats["refused"],
            deblurred=self._deblurred_since_stats(),
            artworks_known=len(self.memory),
            effective_fps=round(self.rate.fps, 2),
        )
        self._stats_since = now.mono
        self._stats = {"frames": 0, "detected": 0, "busy_s": 0.0, "published": 0, "ignored": 0,
                       "failed": 0, "refused": 0}


def _detection(quad: np.ndarray, score: float, shape: tuple[int, ...]) -> Detection:
    """A :class:`Detection` for a quad found by other means (the tracker, the catalogue)."""
    area = abs(float(cv2.contourArea(quad.astype(np.float32))))
    return Detection(quad.astype(np.float32), score, area / float(shape[0] * shape[1]))
