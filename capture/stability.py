"""Stability: deciding which artwork is *really* in view, and which one it is.

Where it sits: ``capture.loop`` feeds every frame's primary detection (or its
absence) to a :class:`StabilityTracker`, and asks an :class:`ArtworkMemory`
for an identity whenever the tracker confirms a new view.

Two questions, two mechanisms:

- *Is the view stable?* An N-of-M vote (``StabilityConfig.hold_frames`` of the
  last ``window_frames`` frames). Each frame's sighting is attributed to a
  provisional *track* by its glance (a cheap 8x8 colour thumbnail of the
  rectified quad) and position: same-looking sightings in about the same place
  vote for the same track, and only tracks with a vote in the window can be
  joined. A track that gathers N votes in the window becomes the confirmed
  view. When the confirmed track stops getting votes, the tracker waits
  ``lost_after_s`` (a passer-by, a blurred frame, a quick glance away) before
  declaring the wall empty; a view that comes back after its track left the
  window is a new track, and the memory (below) tells the loop it is the same
  artwork, so nothing is published. The published quad is an exponential
  moving average of the track's corners, so it does not jitter.
- *Which artwork is it?* Without a catalogue, by memory: the full descriptor
  vector of each artwork seen so far. A confirmed view whose vector is within
  ``same_artwork_distance`` of a remembered one takes its id (coming back to a
  painting gives the same id and the same music); otherwise it gets the next
  id, ``art-001``, ``art-002``...
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

from capture.config import StabilityConfig
from capture.descriptor import Descriptor, descriptor_distance

GLANCE_SIZE = 8
#: RMS L*a*b* difference (in 0..1 units) under which two glances can be one track.
#: Views of one painting differ by up to ~0.03 on the demo camera; different
#: paintings mostly by 0.1 and more, but two of one style can come within 0.04,
#: which is why a track is also bound to its place and to the vote window.
GLANCE_THRESHOLD = 0.06
_QUAD_JUMP = 0.12  # a jump larger than this fraction of the quad's size resets the smoothing
_TRACK_MAX_MOVE = 0.25  # a sighting whose quad moved further than this is another view


def glance_signature(rectified_bgr: np.ndarray) -> np.ndarray:
    """A tiny, cheap appearance signature of a rectified view (8x8 L*a*b*, 0..1 floats)."""
    small = cv2.resize(rectified_bgr, (GLANCE_SIZE, GLANCE_SIZE), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(small, cv2.COLOR_BGR2Lab)  # uint8: L, a, b all scaled to 0..255
    return lab.astype(np.float32).ravel() / 255.0


def glance_distance(a: np.ndarray, b: np.ndarray) -> float:
    """RMS difference between two glance signatures."""
    return float(np.sqrt(np.mean((a - b) ** 2)))


@dataclass(frozen=True, eq=False)  # holds arrays: == is identity
class Sighting:
    """One frame's primary detection: quad (full-res px), detection score, glance signature."""

    quad: np.ndarray
    score: float
    glance: np.ndarray


@dataclass(frozen=True)
class TrackState:
    """What the tracker concluded after a frame.

    ``state`` is "unknown" until the first decision, then "artwork" or "empty".
    ``changed`` is True on the frame where it switches to a new confirmed track
    (the caller then identifies it; this frame's sighting belongs to it) or to
    "empty". ``track`` is the confirmed track's number (None when empty).
    """

    state: str
    changed: bool
    track: int | None
    quad: np.ndarray | None
    confidence: float


class OneEuroFilter:
    """The One Euro filter (Casiez, Roussel & Vogel, CHI 2012) on an array of coordinates.

    A first-order low-pass whose cut-off rises with the signal's speed:
    ``cutoff = min_cutoff + beta * |dx/dt|`` (speed itself low-passed at
    ``d_cutoff``), with ``alpha = 1 / (1 + 1 / (2 pi cutoff dt))``. At rest the
    cut-off is low and jitter is removed; when the camera moves it rises and
    the output follows with little lag. Time is in seconds, values in pixels.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.02,
                 d_cutoff: float = 1.0) -> None:
        self.min_cutoff = min_cutoff
        self.beta = beta
        self.d_cutoff = d_cutoff
        self.reset()

    def reset(self) -> None:
        """Forget the past: the next value passes through unchanged."""
        self._t: float | None = None
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        tau = 1.0 / (2.0 * np.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, t: float, x: np.ndarray) -> np.ndarray:
        """Filter the value ``x`` observed at time ``t``."""
        x = np.asarray(x, np.float64)
        if self._x is None or self._t is None or t <= self._t:
            self._t, self._x, self._dx = t, x.copy(), np.zeros_like(x)
            return x.copy()
        dt = t - self._t
        speed = (x - self._x) / dt
        assert self._dx is not None
        self._dx = self._dx + self._alpha(self.d_cutoff, dt) * (speed - self._dx)
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        self._x = self._x + self._alpha(cutoff, dt) * (x - self._x)
        self._t = t
        return self._x.copy()


@dataclass
class _Track:
    glance: np.ndarray
    quad: np.ndarray  # the latest sighting's corners (for following the track)
    smoothed: np.ndarray  # the One Euro filtered corners (what is published)
    smoother: OneEuroFilter
    last_seen: float
    scores: deque[float]


class StabilityTracker:
    """N-of-M voting over per-frame sightings; see the module docstring."""

    def __init__(self, config: StabilityConfig, glance_threshold: float = GLANCE_THRESHOLD,
                 start: float | None = None) -> None:
        if config.hold_frames > config.window_frames:
            raise ValueError(f"stability.hold_frames must be <= window_frames, got "
                             f"{config.hold_frames} > {config.window_frames}")
        self.config = config
        self.glance_threshold = glance_threshold
        self._window: deque[int | None] = deque(maxlen=config.window_frames)
        self._tracks: dict[int, _Track] = {}
        self._next_track = 1
        self._confirmed: int | None = None
        self._state = "unknown"
        self._start = start

    @property
    def state(self) -> str:
        """"unknown", "artwork" or "empty"."""
        return self._state

    def update(self, t: float, sighting: Sighting | None) -> TrackState:
        """Take one frame's sighting (None: no artwork detected) at time ``t``."""
        if self._start is None:
            self._start = t
        vote = self._assign(t, sighting) if sighting is not None else None
        self._window.append(vote)
        self._forget_stale()
        changed = False
        counts = self._counts()
        leader = max(counts, key=lambda k: counts[k]) if counts else None
        if (vote is not None and vote == leader and counts[vote] >= self.config.hold_frames
                and vote != self._confirmed):
            # A new view holds N of M, and this frame shows it: confirm it now,
            # so the caller can describe this very frame.
            self._confirmed = vote
            self._state = "artwork"
            changed = True
        elif self._state != "empty":
            last_seen = (self._tracks[self._confirmed].last_seen
                         if self._confirmed is not None else self._start)
            if t - last_seen > self.config.lost_after_s:
                self._confirmed = None
                self._state = "empty"
                changed = True
        return TrackState(self._state, changed, self._confirmed, self._quad(),
                          self._confidence(counts))

    def reframe(self, t: float, quad: np.ndarray, glance: np.ndarray) -> None:
        """The confirmed view's picture is at ``quad`` and looks like ``glance``: what
        recognition made of a sighting that held a piece of it, or its frame and shadow.

        The sightings that follow are of the whole picture (the loop tracks what it
        named): linked to the track as it was, they would look like another picture and
        start a track of their own, a second arrival whose recognition can fail where
        the first one's did not (and give a catalogued work an id of its own)."""
        if self._confirmed is None:
            return
        track = self._tracks[self._confirmed]
        track.glance = glance.copy()
        track.quad = quad.astype(np.float32)
        track.smoother.reset()
        track.smoothed = track.smoother(t, track.quad).astype(np.float32)

    def _assign(self, t: float, sighting: Sighting) -> int:
        # Link a sighting to a track only if the track is alive (has a vote in
        # the window), looks the same and has not jumped across the frame. A
        # wrong split costs one descriptor (the memory then gives the same id,
        # and the loop publishes nothing); a wrong merge would miss a change.
        alive = {v for v in self._window if v is not None}
        best, best_distance = None, self.glance_threshold
        for number in alive:
            track = self._tracks[number]
            distance = glance_distance(track.glance, sighting.glance)
            if distance < best_distance and not _jumped(track.quad, sighting.quad):
                best, best_distance = number, distance
        if best is None:
            best = self._next_track
            self._next_track += 1
            smoother = OneEuroFilter(self.config.smoothing_min_cutoff_hz,
                                     self.config.smoothing_beta,
                                     self.config.smoothing_d_cutoff_hz)
            quad = sighting.quad.astype(np.float32)
            self._tracks[best] = _Track(sighting.glance.copy(), quad, quad.copy(), smoother,
                                        t, deque(maxlen=self.config.window_frames))
        track = self._tracks[best]
        # Let the glance follow slow changes (daylight, a drifting exposure).
        track.glance = 0.8 * track.glance + 0.2 * sighting.glance
        size = float(np.sqrt(abs(cv2.contourArea(track.quad)))) or 1.0
        if np.abs(sighting.quad - track.quad).max() > _QUAD_JUMP * size:
            track.smoother.reset()  # re-framed: follow at once instead of gliding over
        track.quad = sighting.quad.astype(np.float32)
        track.smoothed = track.smoother(t, track.quad).astype(np.float32)
        track.last_seen = t
        track.scores.append(float(sighting.score))
        return best

    def _counts(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for vote in self._window:
            if vote is not None:
                counts[vote] = counts.get(vote, 0) + 1
        return counts

    def _forget_stale(self) -> None:
        # Tracks that no longer have a vote in the window are forgotten, except the
        # confirmed one: its last sighting times the grace period.
        alive = set(v for v in self._window if v is not None)
        for number in list(self._tracks):
            if number not in alive and number != self._confirmed:
                del self._tracks[number]

    def _quad(self) -> np.ndarray | None:
        if self._confirmed is None:
            return None
        return self._tracks[self._confirmed].smoothed.copy()

    def _confidence(self, counts: dict[int, int]) -> float:
        m = self.config.window_frames
        if self._confirmed is None:
            empty_votes = sum(1 for v in self._window if v is None)
            return empty_votes / m
        track = self._tracks[self._confirmed]
        mean_score = float(np.mean(track.scores)) if track.scores else 0.0
        return counts.get(self._confirmed, 0) / m * mean_score


def _jumped(previous: np.ndarray, current: np.ndarray) -> bool:
    """Whether the quad's centre moved more than a quarter of its size."""
    size = float(np.sqrt(abs(cv2.contourArea(previous)))) or 1.0
    moved = float(np.linalg.norm(previous.mean(axis=0) - current.mean(axis=0)))
    return moved > _TRACK_MAX_MOVE * size


class ArtworkMemory:
    """Artworks seen so far, by descriptor; hands out ``art-NNN`` ids.

    Bounded (``capacity``): an installation running for months forgets the
    artworks it has not seen for longest.
    """

    def __init__(self, same_artwork_distance: float, capacity: int = 256) -> None:
        self.same_artwork_distance = same_artwork_distance
        self.capacity = capacity
        self._entries: dict[str, Descriptor] = {}  # insertion order = least recently seen first
        self._count = 0

    def __len__(self) -> int:
        return len(self._entries)

    def identify(self, descriptor: Descriptor) -> tuple[str, Descriptor, bool]:
        """(artwork id, the remembered descriptor, whether it is new) for a confirmed view.

        A known artwork returns the descriptor remembered from its first view,
        so the same painting always yields the same features (and music).
        """
        best_id, best_distance = None, self.same_artwork_distance
        for artwork_id, known in self._entries.items():
            distance = descriptor_distance(known.vector, descriptor.vector)
            if distance < best_distance:
                best_id, best_distance = artwork_id, distance
        if best_id is not None:
            remembered = self._entries.pop(best_id)
            self._entries[best_id] = remembered  # most recently seen goes last
            return best_id, remembered, False
        self._count += 1
        artwork_id = f"art-{self._count:03d}"
        self._entries[artwork_id] = descriptor
        while len(self._entries) > self.capacity:
            del self._entries[next(iter(self._entries))]
        return artwork_id, descriptor, True

    def get(self, artwork_id: str) -> Descriptor | None:
        """The remembered descriptor of ``artwork_id``, if any."""
        return self._entries.get(artwork_id)
