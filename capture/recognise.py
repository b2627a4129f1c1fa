"""Detection plus recognition on one frame: every artwork in view, its id, which one is primary.

Where it sits: ``art2mus detect`` and ``art2mus bench capture`` call
:func:`detect_and_recognise` on still images; the live loop does the same
steps spread over time (recognition only when the confirmed view changes).

Per frame, catalogue first: known paintings are located by their own
features (:meth:`Catalogue.locate`, a SIFT homography of each reference into
the frame), which gives the picture's exact corners whatever its frame,
shadow or angle. Then the quad finder's detections
(:func:`capture.detect.detect_artworks`) stand for what the catalogue did not
find: a detection that holds or lies on a located work is dropped (the two
agree, or the features win), unless its outline fits the work's reference
better than the location does (:meth:`Catalogue.closest_outline`: a
homography locked onto a self-similar work's repeats); each other one is
rectified from the full-resolution frame and recognised against the
catalogue (when one is given); a detection recognised as a work already
located is dropped too, and one recognised by its features gives way to the
picture they place inside it (:func:`picture_in_view`: a carved frame's
edge taken for the picture) where that fits the reference better, and to
the one they place round it (the view was part of the work: a region of it,
or the picture inside an octagonal frame that the reference shows with its
frame) unless the view fits the reference clearly better. A frame smeared
by a pan is traced and its views rectified with the streak taken out
(:func:`without_streak`). With a
catalogue, the quad finder also looks below its usual size floor
(:data:`NAMED_MIN_AREA_FRACTION`): a small, far work is kept where the
catalogue names it, and a small quad it does not name (a caption card, a
tile) is dropped. Without a catalogue the quad finder's detections are all
there is. The primary is :func:`capture.detect.choose_primary` over the lot.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import cv2
import numpy as np

from capture.catalogue import SQUARE, Catalogue, overlap_fraction
from capture.deblur import deblur, estimate_motion_blur
from capture.detect import MIN_AREA_FRACTION, Detection, choose_primary, detect_artworks, rectify
from capture.lens import Lens

#: Overlap (of the smaller quad) above which an edge quad and a located work are one place.
SAME_PLACE = 0.5
#: Of the frame: with a catalogue, quads down to this size are looked at too (a small, far
#: work: 80x60 px at 1280x720 is 0.5 %), and kept only where the catalogue names them.
NAMED_MIN_AREA_FRACTION = 0.004


@dataclass(frozen=True, eq=False)  # holds arrays: == is identity
class RecognisedArtwork:
    """One artwork in a frame: quad (TL, TR, BR, BL, frame px), catalogue id or None, score."""

    quad: np.ndarray
    artwork_id: str | None
    score: float  # recognition score when recognised, else the detection score
    primary: bool
    found_by: str  # "quad" (the quad finder) or "catalogue" (located by homography)

    def to_json(self) -> dict[str, object]:
        """The ``art2mus detect --json`` record."""
        return {"quad": [[round(float(x), 1), round(float(y), 1)] for x, y in self.quad],
                "artwork_id": self.artwork_id, "score": round(float(self.score), 4),
                "primary": self.primary}


#: Of the view's area: the picture the features place in a view covers at least this much
#: (a view may be the picture's frame, the picture is most of it) and at most this much (a
#: view may be a region of the work, or the picture of a work whose reference shows it in its
#: frame, as catalogues show octagonal and shaped frames).
_PICTURE_IN_VIEW = (0.4, 1.8)
#: ...and a picture larger than this share of the view contains it: the view is only part of
#: the work, and the work's outline is the picture (a homography fitted to a dozen inliers at
#: 320 px can be a tenth off in scale: a share just above 1 is the view itself).
_WHOLE_VIEW = 1.25


def _area(quad: np.ndarray) -> float:
    return abs(float(cv2.contourArea(np.asarray(quad, np.float32).reshape(4, 2))))


def picture_in_view(quad: np.ndarray, homography: np.ndarray | None) -> np.ndarray | None:
    """Where a recognised work's picture lies in the frame (its corners, reference order),
    from ``homography`` (reference square to the view :func:`rectify` made of ``quad``, as a
    feature match gives it); None without one or where it is implausible.

    A quad the quad finder took is often the frame's outer edge, or a carved
    moulding's: the features matched inside it give the picture's own corners.
    """
    if homography is None:
        return None
    side = float(SQUARE)
    square = np.array([[0, 0], [side, 0], [side, side], [0, side]], np.float32)
    in_view = cv2.perspectiveTransform(square[None], np.asarray(homography, np.float64))[0]
    to_frame = cv2.getPerspectiveTransform(square, np.asarray(quad, np.float32).reshape(4, 2))
    picture = cv2.perspectiveTransform(in_view[None].astype(np.float32), to_frame)[0]
    if not (np.isfinite(picture).all() and cv2.isContourConvex(picture.astype(np.float32))):
        return None
    share = _area(picture) / max(_area(quad), 1e-6)
    low, high = _PICTURE_IN_VIEW
    return picture.astype(np.float32) if low <= share <= high else None


def without_streak(frame_bgr: np.ndarray, detect_width: int = 640) -> np.ndarray:
    """``frame_bgr`` with a motion streak taken out (:mod:`capture.deblur`; looked for at
    ``detect_width``), or itself where it has none."""
    height, width = frame_bgr.shape[:2]
    scale = min(1.0, detect_width / width)
    small = frame_bgr if scale == 1.0 else cv2.resize(
        frame_bgr, (max(1, round(width * scale)), max(1, round(height * scale))),
        interpolation=cv2.INTER_AREA)
    grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
    blur = estimate_motion_blur(grey)
    return frame_bgr if blur is None else deblur(frame_bgr, blur.scaled(1 / scale))


def detect_and_recognise(frame_bgr: np.ndarray, catalogue: Catalogue | None = None,
                         detect_width: int = 640, locate: bool = True,
                         lens: Lens | None = None) -> list[RecognisedArtwork]:
    """Every artwork in ``frame_bgr``, recognised against ``catalogue`` if given.

    ``lens``: the camera's, taken out of the frame first (its bow makes frames no quads);
    the quads are then moved back to the frame as the camera took it."""
    if lens is not None:
        size = (frame_bgr.shape[1], frame_bgr.shape[0])
        return [dataclasses.replace(a, quad=lens.to_camera(a.quad, size).astype(a.quad.dtype))
                for a in detect_and_recognise(lens.undistort(frame_bgr), catalogue,
                                              detect_width, locate)]
    height, width = frame_bgr.shape[:2]
    # A pan during the exposure smears the frame: the quad finder's edges and the views it
    # rectifies come from the frame with the streak taken out (the catalogue's search takes
    # it out itself, at its own scale).
    seen = without_streak(frame_bgr, detect_width)
    found: list[tuple[Detection, str | None, float, str]] = []
    if catalogue is not None and locate:
        for location in catalogue.locate(frame_bgr, fine=True):
            area = abs(float(cv2.contourArea(location.quad.astype(np.float32))))
            detection = Detection(location.quad, location.score, area / (width * height))
            found.append((detection, location.artwork_id, location.score, "catalogue"))
    located = [d.quad for d, _, _, _ in found]
    known = {artwork_id for _, artwork_id, _, _ in found}
    traced: list[list[np.ndarray]] = [[] for _ in located]  # outlines at each located place
    # the works located are in view: a caption card beside one is a card, though the quad
    # finder did not trace the work (a light's reflection across its frame)
    detections = detect_artworks(seen, detect_width, beside=located)
    if catalogue is not None:
        # a second look, for works too small for the quad finder's own floor; a separate
        # pass, so what the first finds does not depend on it
        detections += [small for small in detect_artworks(
            seen, detect_width, min_area_fraction=NAMED_MIN_AREA_FRACTION, beside=located)
            if small.area_fraction < MIN_AREA_FRACTION and not any(
                overlap_fraction(small.quad, other.quad) > SAME_PLACE for other in detections)]
    for detection in detections:
        places = [k for k, quad in enumerate(located)
                  if overlap_fraction(detection.quad, quad) > SAME_PLACE]
        if places:
            # the frame, shadow or a region of a located work, or the picture's own outline
            for k in places:
                traced[k].append(detection.quad)
            continue
        artwork_id, score = None, detection.score
        if catalogue is not None:
            match = catalogue.recognise(rectify(seen, detection.quad, SQUARE))
            if match is None and locate:
                # as the live loop does for a new arrival: its neighbourhood, finer where
                # small (a small work has too few features at the whole frame's scale)
                here = [f for f in catalogue.locate(frame_bgr, near=detection.quad)
                        if overlap_fraction(f.quad, detection.quad) > SAME_PLACE
                        and f.artwork_id not in known]
                if here:
                    location = here[0]
                    known.add(location.artwork_id)
                    located.append(location.quad)
                    traced.append([detection.quad])
                    found.insert(len(located) - 1, (
                        Detection(location.quad, location.score,
                                  _area(location.quad) / (width * height)),
                        location.artwork_id, location.score, "catalogue"))
                    continue
            if match is not None:
                if match.artwork_id in known:
                    continue
                artwork_id, score = match.artwork_id, match.score
                picture = picture_in_view(detection.quad, match.homography)
                if picture is not None:
                    # The matched features place the work's picture. Inside the view: the
                    # view may be a frame's edge round the picture, and the picture stands
                    # where it fits the reference clearly better (a clean edge is more exact
                    # than a homography fitted at 320 px). Round the view: the view is part
                    # of the work (a region of it, or the picture inside a frame its
                    # reference shows), and the picture stands unless the view fits the
                    # reference clearly better (a homography locked onto repeats).
                    order = [detection.quad, picture] if _area(picture) <= _WHOLE_VIEW * _area(
                        detection.quad) else [picture, detection.quad]
                    picture = catalogue.closest_outline(seen, match.artwork_id, order)
                    detection = Detection(picture, detection.score, detection.area_fraction
                                          * _area(picture) / max(_area(detection.quad), 1e-6))
            elif detection.area_fraction < MIN_AREA_FRACTION:
                continue  # small and not a catalogued work: a caption card, a tile
        found.append((detection, artwork_id, score, "quad"))
    if catalogue is not None:
        for k, outlines in enumerate(traced):
            if outlines:  # the outline that fits the reference best: usually the location's
                detection, artwork_id, score, how = found[k]
                quad = catalogue.closest_outline(seen, str(artwork_id),
                                                 [detection.quad, *outlines])
                if not np.array_equal(quad, detection.quad):
                    found[k] = (Detection(quad, detection.score, _area(quad) / (width * height)),
                                artwork_id, score, how)
    primary = choose_primary([d for d, _, _, _ in found], frame_bgr.shape)
    return [RecognisedArtwork(d.quad, artwork_id, score, d is primary, how)
            for d, artwork_id, score, how in found]
