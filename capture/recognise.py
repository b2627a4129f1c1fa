"""Detection plus recognition on one frame: every artwork in view, its id, which one is primary.

Where it sits: ``art2mus detect`` and ``art2mus bench capture`` call
:func:`detect_and_recognise` on still images; the live loop does the same
steps spread over time (recognition only when the confirmed view changes).

Per frame: the quad finder's detections (:func:`capture.detect.detect_artworks`)
are each rectified from the full-resolution frame and recognised against
the catalogue (when one is given). Then known paintings the quad finder
missed are located directly (:meth:`Catalogue.locate`) and added, unless they
overlap a detection already reported. The primary is
:func:`capture.detect.choose_primary` over the lot.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from capture.catalogue import SQUARE, Catalogue
from capture.detect import Detection, choose_primary, detect_artworks, quad_iou, rectify


@dataclass(frozen=True)
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


def detect_and_recognise(frame_bgr: np.ndarray, catalogue: Catalogue | None = None,
                         detect_width: int = 640, locate: bool = True,
                         ) -> list[RecognisedArtwork]:
    """Every artwork in ``frame_bgr``, recognised against ``catalogue`` if given."""
    detections = detect_artworks(frame_bgr, detect_width)
    found: list[tuple[Detection, str | None, float, str]] = []
    for detection in detections:
        artwork_id, score = None, detection.score
        if catalogue is not None:
            match = catalogue.recognise(rectify(frame_bgr, detection.quad, SQUARE))
            if match is not None:
                artwork_id, score = match.artwork_id, match.score
        found.append((detection, artwork_id, score, "quad"))
    if catalogue is not None and locate:
        height, width = frame_bgr.shape[:2]
        known = {artwork_id for _, artwork_id, _, _ in found if artwork_id is not None}
        for location in catalogue.locate(frame_bgr):
            if location.artwork_id in known or any(
                    quad_iou(location.quad, d.quad) > 0.3 for d, _, _, _ in found):
                continue
            area = abs(float(cv2.contourArea(location.quad.astype(np.float32))))
            detection = Detection(location.quad, location.score, area / (width * height))
            found.append((detection, location.artwork_id, location.score, "catalogue"))
            known.add(location.artwork_id)
    primary = choose_primary([d for d, _, _, _ in found], frame_bgr.shape)
    return [RecognisedArtwork(d.quad, artwork_id, score, d is primary, how)
            for d, artwork_id, score, how in found]
