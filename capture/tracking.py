"""Following a located artwork from frame to frame, so recognition runs once per arrival.

Where it sits: ``capture.loop`` locates and recognises a work when it arrives
(:func:`capture.detect.detect_artworks`, :class:`capture.catalogue.Catalogue`),
then hands its quad to a :class:`QuadTracker` and only calls
:meth:`QuadTracker.update` on the following frames (a few ms at 1280x720 on
one core), until the tracker says ``"lost"``; then it detects again. The
tracker is pure OpenCV and holds no project state.

How: two Lucas-Kanade trackers (Bouguet's pyramidal LK, ``cv2.calcOpticalFlowPyrLK``),
a fast one that follows the motion and a slow-to-fool one that removes drift.

- Every frame is converted to grey and downscaled to ``work_width`` (640 px);
  all tracking happens there and quads are scaled back to frame pixels.
- :meth:`~QuadTracker.start` keeps the start frame and picks the *template*:
  up to ``max_points`` corners (``cv2.goodFeaturesToTrack``) inside the quad,
  spread by a minimum distance that follows the quad's size. Positions in the
  start frame are *reference* positions; the quad's corners are kept there too.
- *Following* (:meth:`~QuadTracker.update`, first step): the tracked points
  go from the previous frame to this one and back again (the forward-backward
  check of Kalal et al., ICPR 2010); a point that does not come back where it
  started, or leaves the image, is dropped. A RANSAC homography from the
  survivors' reference positions to their new ones predicts the quad; with
  few points, or all on one side of the picture (a visitor hides the rest),
  only a similarity since the previous frame, since eight degrees of freedom
  fitted on one side swing the far corners.
- *Anchoring* (second step): each LK step is off by a fraction of a pixel and
  a chain of them drifts (points on an edge lag behind the motion along it).
  So the start frame is warped by the predicted homography onto this frame
  and every template corner is tracked from where the start frame's picture
  puts it to where it is now: against its appearance at the start, not in the
  previous frame, so nothing adds up. A passer-by is not in the start frame,
  so the corners they hide simply do not match on those frames, and match
  again once they have gone. The matches give the frame's homography, and the
  points followed into the next frame are these matches: the template re-seeds
  the tracked points on every frame.
- If anchoring fails (too few matches: the light changed a lot since the
  start, the view turned far), following goes on alone: its points are
  re-seeded with new corners inside the current quad every ``reseed_every``
  frames, or when fewer than half are left.
- A frame whose quad cannot be estimated (fewer than ``min_points``
  consistent points) or is implausible (not convex, area changed more than
  twofold, a corner far outside the frame) keeps the previous quad
  (``held_frames`` counts such frames in a row; anchoring from the held quad
  finds a work that reappears in place). After more than ``max_lost_frames``
  of them the tracker is ``"lost"`` and stays so until the next
  :meth:`~QuadTracker.start`.

Known limits: the start frame is the only template, so a large change of
light or of viewing angle since the arrival leaves following alone; a
textured occluder that hides nearly all the picture and moves like a plane can
then carry the quad along. The loop re-checks the tracked quad with detection
from time to time (its business, not this module's).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

TrackStatus = Literal["tracking", "lost"]

_LK_WINDOW = (15, 15)
_LK_LEVELS = 3
_LK_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 10, 0.03)
_QUALITY = 0.01  # goodFeaturesToTrack: corners at least this fraction of the strongest
_INSET = 0.04  # features are picked this fraction of the quad's size inside it (not the wall)
_FAR_OUTSIDE = 0.5  # a corner further out than this fraction of the frame's size is implausible
_MAX_AREA_RATIO = 2.0  # nor may the quad's area change more than this between frames
_MIN_AREA = 64.0  # work px^2: smaller quads cannot be tracked
#: Anchoring: a template corner may be found this far (work px) from where the prediction put it.
_ANCHOR_RANGE = 12.0
#: A full homography needs its features to span this share of the quad; fewer, or all on one
#: side, fix its middle but not its far corners.
_MIN_SPREAD = 0.3


@dataclass(frozen=True)
class TrackResult:
    """What :meth:`QuadTracker.update` (and ``start``) found in one frame.

    ``quad``: float32 (4, 2), TL, TR, BR, BL in full-frame pixels; None when lost.
    ``inliers``: features that agreed with this frame's homography (0 on a held frame).
    ``held_frames``: frames in a row without a good estimate; the quad is the last good one.
    """

    quad: np.ndarray | None
    inliers: int
    status: TrackStatus
    held_frames: int = 0


class QuadTracker:
    """Tracks one planar quad (a painting's picture) through a video; see the module docstring.

    Parameters (checked on construction, ValueError naming the one that is wrong):
    ``work_width`` px wide frames are tracked; at most ``max_points`` features;
    a frame needs ``min_points`` consistent ones, and a full homography needs
    ``homography_points`` (below that, a similarity); ``max_lost_frames`` frames
    without an estimate are held before ``"lost"``; while anchoring fails, the
    followed points are re-picked every ``reseed_every`` frames; ``fb_max_error``
    and ``ransac_threshold`` are in work pixels.

    Per frame: :meth:`start` on an arrival (a located quad), then :meth:`update`
    on every following frame until its status is ``"lost"``.
    """

    def __init__(self, *, work_width: int = 640, max_points: int = 150, min_points: int = 8,
                 homography_points: int = 15, max_lost_frames: int = 15, reseed_every: int = 10,
                 fb_max_error: float = 1.0, ransac_threshold: float = 2.0) -> None:
        for name, value, low in (("work_width", work_width, 64), ("max_points", max_points, 8),
                                 ("min_points", min_points, 4),
                                 ("homography_points", homography_points, 4),
                                 ("max_lost_frames", max_lost_frames, 0),
                                 ("reseed_every", reseed_every, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"QuadTracker {name}: expected an integer >= {low}, got {value!r}")
        if min_points > max_points:
            raise ValueError(f"QuadTracker min_points: expected at most max_points "
                             f"({max_points}), got {min_points}")
        for name, number in (("fb_max_error", fb_max_error),
                             ("ransac_threshold", ransac_threshold)):
            if not (isinstance(number, (int, float)) and np.isfinite(number) and number > 0):
                raise ValueError(f"QuadTracker {name}: expected a positive number, got {number!r}")
        self.work_width = work_width
        self.max_points = max_points
        self.min_points = min_points
        self.homography_points = max(homography_points, min_points)
        self.max_lost_frames = max_lost_frames
        self.reseed_every = reseed_every
        self.fb_max_error = float(fb_max_error)
        self.ransac_threshold = float(ransac_threshold)
        self.reset()

    # -- public -----------------------------------------------------------------

    def reset(self) -> None:
        """Forget the tracked quad; :meth:`update` reports ``"lost"`` until :meth:`start`."""
        self._frame_size: tuple[int, int] | None = None  # (width, height) of full frames
        self._scale = np.ones(2, np.float32)  # full px -> work px, per axis
        self._previous: np.ndarray | None = None  # last frame, grey at the work width
        self._start_frame: np.ndarray | None = None  # the start frame, grey at the work width
        self._template = np.empty((0, 2), np.float32)  # corners picked there (reference px)
        self._points = np.empty((0, 2), np.float32)  # tracked points, now (work px)
        self._reference = np.empty((0, 2), np.float32)  # the same, in the start frame
        self._homography = np.eye(3)  # start frame -> current frame (work px)
        self._reference_quad = np.empty((0, 2), np.float32)
        self._quad = np.empty((0, 2), np.float32)  # current quad (work px)
        self._held = 0
        self._since_seed = 0
        self._lost = True

    @property
    def active(self) -> bool:
        """True while a quad is being tracked (after start, before lost or reset)."""
        return not self._lost

    def start(self, grey: np.ndarray, quad: np.ndarray) -> TrackResult:
        """Begin tracking ``quad`` (4x2, TL, TR, BR, BL, full-frame px) in frame ``grey``
        (uint8 grey, or BGR). ``"lost"`` straight away if the picture has too few features."""
        corners = _checked_quad(quad)
        work = self._prepare(grey, new_size=True)
        self.reset()
        self._frame_size = (grey.shape[1], grey.shape[0])
        self._scale = np.array([work.shape[1] / grey.shape[1], work.shape[0] / grey.shape[0]],
                               np.float32)
        self._quad = self._reference_quad = self._to_work(corners)
        if abs(cv2.contourArea(self._quad)) < _MIN_AREA:
            raise ValueError(f"quad: expected a quad of at least {_MIN_AREA:.0f} px^2 at "
                             f"{work.shape[1]} px wide, got {corners.tolist()}")
        self._previous = self._start_frame = work
        self._seed(work)
        self._template = self._reference.copy()
        self._lost = len(self._points) < self.min_points
        if self._lost:
            return TrackResult(None, len(self._points), "lost")
        return TrackResult(self._full(self._quad), len(self._points), "tracking")

    def update(self, grey: np.ndarray) -> TrackResult:
        """Track the quad into the next frame ``grey`` (same size as at :meth:`start`)."""
        if self._lost or self._previous is None:
            return TrackResult(None, 0, "lost", self._held)
        work = self._prepare(grey, new_size=False)
        previous = self._flow(self._previous, work)
        self._previous = work
        predicted = self._estimate(previous)
        anchored = self._anchor(work, self._homography if predicted is None else predicted[0])
        if anchored is not None:
            homography, quad, matched, found = anchored
            # Followed into the next frame from their drift-free positions.
            self._points, self._reference = found, self._template[matched]
            self._since_seed = 0
        elif predicted is not None:
            homography, quad = predicted
            self._keep(self._residuals(homography) < self.ransac_threshold)
            self._since_seed += 1
        else:
            return self._hold()
        self._homography, self._quad, self._held = homography, quad, 0
        inliers = len(self._points)
        if anchored is None and (self._since_seed >= self.reseed_every
                                 or len(self._points) < self.max_points // 2):
            self._seed(work)
        return TrackResult(self._full(quad), inliers, "tracking")

    # -- steps --------------------------------------------------------------------

    def _hold(self) -> TrackResult:
        """No estimate this frame: keep the last quad, or give up after ``max_lost_frames``."""
        self._held += 1
        if self._held > self.max_lost_frames:
            self._lost = True
            return TrackResult(None, 0, "lost", self._held)
        # Points that moved off the held quad (a passer-by's) go; anchoring against the start
        # frame finds the work again if it reappears in place.
        self._keep(self._residuals(self._homography) < self.ransac_threshold)
        return TrackResult(self._full(self._quad), 0, "tracking", self._held)

    def _prepare(self, grey: np.ndarray, *, new_size: bool) -> np.ndarray:
        """The frame as uint8 grey at the work width; ValueError naming ``grey`` if it is not
        an image (or, during tracking, not the size tracking started at)."""
        if not isinstance(grey, np.ndarray) or grey.dtype != np.uint8 or grey.size == 0 or not (
                grey.ndim == 2 or (grey.ndim == 3 and grey.shape[2] in (1, 3))):
            shape = getattr(grey, "shape", None)
            dtype = getattr(grey, "dtype", type(grey).__name__)
            raise ValueError(f"grey: expected a uint8 image (HxW grey or HxWx3 BGR), got "
                             f"shape {shape} dtype {dtype}")
        if grey.ndim == 3:
            grey = cv2.cvtColor(grey, cv2.COLOR_BGR2GRAY) if grey.shape[2] == 3 else grey[..., 0]
        height, width = grey.shape
        if not new_size and self._frame_size is not None and (width, height) != self._frame_size:
            raise ValueError(f"grey: expected a {self._frame_size[0]}x{self._frame_size[1]} "
                             f"frame (the size tracking started at), got {width}x{height}")
        if width <= self.work_width:
            return np.ascontiguousarray(grey)
        size = (self.work_width, max(1, round(height * self.work_width / width)))
        return cv2.resize(grey, size, interpolation=cv2.INTER_AREA)

    def _flow(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        """Track the points into ``after`` and back; keeps (with their reference positions)
        those that come back within ``fb_max_error`` and stay in the image, and returns where
        they were in ``before``."""
        if len(self._points) == 0:
            return self._points
        start = self._points.reshape(-1, 1, 2)
        # (OpenCV's Python binding cannot take a prebuilt pyramid, so each call builds its own.)
        forward, ok, _ = cv2.calcOpticalFlowPyrLK(before, after, start, None, winSize=_LK_WINDOW,
                                                  maxLevel=_LK_LEVELS, criteria=_LK_CRITERIA)
        back, ok_back, _ = cv2.calcOpticalFlowPyrLK(after, before, forward, None,
                                                    winSize=_LK_WINDOW, maxLevel=_LK_LEVELS,
                                                    criteria=_LK_CRITERIA)
        forward, back = forward.reshape(-1, 2), back.reshape(-1, 2)
        height, width = after.shape[:2]
        good = ((ok.ravel() == 1) & (ok_back.ravel() == 1)
                & (np.linalg.norm(back - self._points, axis=1) < self.fb_max_error)
                & (forward[:, 0] >= 0) & (forward[:, 0] <= width - 1)
                & (forward[:, 1] >= 0) & (forward[:, 1] <= height - 1))
        previous = self._points[good]
        self._points = forward.astype(np.float32)
        self._keep(good)
        return previous

    def _estimate(self, previous: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Following: (homography, quad) from the tracked points, or None when they are too
        few or the quad they give is implausible."""
        if len(self._points) < self.min_points:
            return None
        homography = None
        if len(self._points) >= self.homography_points:
            homography, _ = cv2.findHomography(self._reference, self._points, cv2.RANSAC,
                                               self.ransac_threshold)
        if homography is not None:
            inliers = self._residuals(homography) < self.ransac_threshold
            if (inliers.sum() < self.homography_points
                    or self._spread(self._reference[inliers]) < _MIN_SPREAD):
                homography = None
        if homography is None:
            similarity, mask = cv2.estimateAffinePartial2D(
                previous, self._points, method=cv2.RANSAC,
                ransacReprojThreshold=self.ransac_threshold)
            if similarity is None or mask is None or mask.sum() < self.min_points:
                return None
            homography = np.vstack([similarity, [0.0, 0.0, 1.0]]) @ self._homography
        quad = self._project(homography)
        return (homography, quad) if self._plausible(quad) else None

    def _anchor(self, work: np.ndarray, prediction: np.ndarray,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """Anchoring (module docstring): (homography, quad, indices of the template corners
        matched, where they are now), or None when too few match or the quad is implausible."""
        assert self._start_frame is not None
        height, width = work.shape[:2]
        predicted = cv2.perspectiveTransform(self._template[None].astype(np.float64),
                                             prediction)[0].astype(np.float32)
        edge = _LK_WINDOW[0] // 2  # the patch around a corner must lie in the frame
        usable = np.flatnonzero((predicted[:, 0] >= edge) & (predicted[:, 0] < width - edge)
                                & (predicted[:, 1] >= edge) & (predicted[:, 1] < height - edge))
        if len(usable) < self.homography_points:
            return None
        warped = cv2.warpPerspective(self._start_frame, prediction, (width, height),
                                     flags=cv2.INTER_LINEAR)
        found, ok, _ = cv2.calcOpticalFlowPyrLK(warped, work, predicted[usable].reshape(-1, 1, 2),
                                                None, winSize=_LK_WINDOW, maxLevel=2,
                                                criteria=_LK_CRITERIA)
        found = found.reshape(-1, 2)
        near = (ok.ravel() == 1) & (np.linalg.norm(found - predicted[usable], axis=1)
                                    < _ANCHOR_RANGE)
        usable, found = usable[near], found[near]
        if len(usable) < self.homography_points:
            return None
        reference = self._template[usable]
        threshold = self.ransac_threshold / 2  # no chain here: matches are sub-pixel
        homography, mask = cv2.findHomography(reference, found, cv2.RANSAC, threshold)
        if homography is None or mask is None:
            return None
        inliers = mask.ravel().astype(bool)
        if inliers.sum() < self.homography_points or self._spread(reference[inliers]) < \
                _MIN_SPREAD:
            # Matches on one side only (a visitor hides the rest): a similarity correction of
            # the prediction, not a full homography.
            correction, mask = cv2.estimateAffinePartial2D(
                predicted[usable], found, method=cv2.RANSAC, ransacReprojThreshold=threshold)
            if correction is None or mask is None:
                return None
            inliers = mask.ravel().astype(bool)
            homography = np.vstack([correction, [0.0, 0.0, 1.0]]) @ prediction
        if inliers.sum() < self.min_points:
            return None
        quad = self._project(homography)
        if not self._plausible(quad):
            return None
        return homography, quad, usable[inliers], found[inliers].astype(np.float32)

    def _plausible(self, quad: np.ndarray) -> bool:
        """Convex, area within twofold of the last quad's, no corner far outside the frame."""
        if not np.isfinite(quad).all() or not cv2.isContourConvex(quad.reshape(-1, 1, 2)):
            return False
        area, last = abs(cv2.contourArea(quad)), abs(cv2.contourArea(self._quad))
        if area < _MIN_AREA or not 1 / _MAX_AREA_RATIO <= area / last <= _MAX_AREA_RATIO:
            return False
        assert self._previous is not None
        height, width = self._previous.shape[:2]
        margin = _FAR_OUTSIDE * max(width, height)
        return bool((quad[:, 0] >= -margin).all() and (quad[:, 0] <= width + margin).all()
                    and (quad[:, 1] >= -margin).all() and (quad[:, 1] <= height + margin).all())

    def _seed(self, work: np.ndarray) -> None:
        """Pick new corners inside the current quad, away from the tracked ones, up to
        ``max_points``; their reference positions come from the current homography."""
        self._since_seed = 0
        wanted = self.max_points - len(self._points)
        if wanted <= 0:
            return
        centre = self._quad.mean(axis=0)
        inset = centre + (self._quad - centre) * (1.0 - 2 * _INSET)
        mask = np.zeros(work.shape[:2], np.uint8)
        cv2.fillConvexPoly(mask, np.round(inset).astype(np.int32), 255)
        # Spread: about max_points cells over the quad, one corner per cell at most.
        spacing = float(np.clip(0.7 * np.sqrt(abs(cv2.contourArea(inset)) / self.max_points),
                                3.0, 24.0))
        for x, y in self._points:
            cv2.circle(mask, (int(round(x)), int(round(y))), int(spacing), 0, -1)
        found = cv2.goodFeaturesToTrack(work, wanted, _QUALITY, spacing, mask=mask,
                                        blockSize=5)
        if found is None:
            return
        fresh = found.reshape(-1, 2).astype(np.float32)
        back = cv2.perspectiveTransform(fresh[None].astype(np.float64),
                                        np.linalg.inv(self._homography))[0].astype(np.float32)
        self._points = np.vstack([self._points, fresh])
        self._reference = np.vstack([self._reference, back])

    def _spread(self, reference: np.ndarray) -> float:
        """How much of the quad these points (reference px) span: their hull's share of it."""
        return _hull_area(reference) / max(abs(cv2.contourArea(self._reference_quad)), 1.0)

    def _project(self, homography: np.ndarray) -> np.ndarray:
        """The reference quad mapped by ``homography`` (work px)."""
        return cv2.perspectiveTransform(self._reference_quad[None].astype(np.float64),
                                        homography)[0].astype(np.float32)

    def _keep(self, which: np.ndarray) -> None:
        """Keep only the features selected by the boolean mask ``which``."""
        self._points, self._reference = self._points[which], self._reference[which]

    def _residuals(self, homography: np.ndarray) -> np.ndarray:
        """Distance (work px) of each feature from where ``homography`` puts its reference."""
        if len(self._points) == 0:
            return np.empty(0)
        expected = cv2.perspectiveTransform(self._reference[None].astype(np.float64),
                                            homography)[0]
        return np.asarray(np.linalg.norm(self._points - expected, axis=1))

    def _to_work(self, quad: np.ndarray) -> np.ndarray:
        # Pixel centres: full-frame pixel x covers [x - 0.5, x + 0.5], so x -> (x + 0.5) s - 0.5.
        return ((quad + 0.5) * self._scale - 0.5).astype(np.float32)

    def _full(self, quad: np.ndarray) -> np.ndarray:
        return ((quad + 0.5) / self._scale - 0.5).astype(np.float32)


def _hull_area(points: np.ndarray) -> float:
    if len(points) < 3:
        return 0.0
    return float(cv2.contourArea(cv2.convexHull(points.astype(np.float32))))


def _checked_quad(quad: object) -> np.ndarray:
    """``quad`` as float32 (4, 2); ValueError naming it if it is not 4x2 finite numbers."""
    try:
        corners = np.asarray(quad, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"quad: expected 4x2 corner coordinates (TL, TR, BR, BL), "
                         f"got {quad!r}") from None
    if corners.shape != (4, 2):
        raise ValueError(f"quad: expected 4x2 corner coordinates (TL, TR, BR, BL), "
                         f"got shape {corners.shape}")
    if not np.isfinite(corners).all():
        raise ValueError(f"quad: expected finite corner coordinates, got {corners.tolist()}")
    return corners.astype(np.float32)
