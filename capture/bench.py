"""``art2mus bench capture``: detection, corner accuracy, recognition and speed on synthetic scenes.

Where it sits: a technician's (and CI's) measure of the capture front end,
on the fixed, seeded scene set of :mod:`capture.synthetic.scenes` (200 scenes at
1280x720, a 50-artwork catalogue written to a temporary folder and indexed
by :mod:`capture.catalogue`). Everything runs on one core
(``cv2.setNumThreads(1)``), as the capture role does.

Metrics (all over the whole scene set):

- ``detection.precision`` / ``recall``: the quad finder alone
  (:func:`capture.detect.detect_artworks`); a detection is a true positive
  when its quad IoU with an unmatched ground-truth picture is >= 0.85
  (greedy, best IoU first).
- ``detection.corner_error_pct``: mean distance between matched detected and
  true corners, in percent of the image diagonal (and its 95th percentile).
- ``located``: the same, for the quad finder plus catalogue location (a
  known painting the quad finder missed is found by homography of its
  reference into the frame, :meth:`Catalogue.locate`), i.e. what
  ``art2mus detect --catalogue`` reports.
- ``recognition.top1``: of the ground-truth catalogued paintings that were
  found (IoU >= 0.85), the fraction given the right catalogue id;
  ``end_to_end_top1`` counts every catalogued painting, found or not;
  ``false_match_rate``: of the found paintings from outside the catalogue,
  the fraction wrongly given an id.
- ``speed``: frames per second of detection alone at 1280x720 (the per-frame
  cost in the capture loop, where recognition runs only when the view
  changes), milliseconds per recognition of one rectified view, per
  catalogue location of a whole frame, and for a full "detect and recognise
  everything" pass (what ``art2mus detect --catalogue`` does per image).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

IOU_THRESHOLD = 0.85


@dataclass
class DetectionTally:
    """Running counts for detection precision / recall and corner error."""

    true_positives: int = 0
    detections: int = 0
    truths: int = 0
    corner_errors: list[float] = field(default_factory=list)

    def add(self, found: list[np.ndarray], truths: list[np.ndarray],
            diagonal: float) -> list[int | None]:
        """Count one scene; returns, per truth, the index of the detection matched to it."""
        matches = match_quads(found, truths)
        self.detections += len(found)
        self.truths += len(truths)
        for t, d in enumerate(matches):
            if d is not None:
                self.true_positives += 1
                error = np.linalg.norm(np.asarray(found[d]) - truths[t], axis=1).mean()
                self.corner_errors.append(float(error / diagonal * 100.0))
        return matches

    def summary(self) -> dict[str, Any]:
        """Precision, recall and corner error as a JSON-ready dict."""
        errors = np.array(self.corner_errors or [float("nan")])
        return {
            "precision": round(self.true_positives / self.detections, 4) if self.detections
            else 1.0,
            "recall": round(self.true_positives / self.truths, 4) if self.truths else 1.0,
            "true_positives": self.true_positives, "detections": self.detections,
            "truths": self.truths,
            "corner_error_pct": round(float(np.mean(errors)), 3),
            "corner_error_p95_pct": round(float(np.percentile(errors, 95)), 3),
        }


def match_quads(found: list[np.ndarray], truths: list[np.ndarray],
                threshold: float = IOU_THRESHOLD) -> list[int | None]:
    """Greedy one-to-one matching by quad IoU; per truth, the matched detection index or None."""
    from capture.detect import quad_iou

    pairs = sorted(((quad_iou(f, t), d, i) for d, f in enumerate(found)
                    for i, t in enumerate(truths)), reverse=True)
    matches: list[int | None] = [None] * len(truths)
    used: set[int] = set()
    for iou, d, i in pairs:
        if iou < threshold:
            break
        if matches[i] is None and d not in used:
            matches[i] = d
            used.add(d)
    return matches


def run_capture_bench(scenes: int = 200, seed: int = 0, catalogue_size: int = 50,
                      detect_width: int = 640, catalogue_dir: Path | None = None,
                      ) -> dict[str, Any]:
    """Run the benchmark and return its JSON-ready result (see the module docstring)."""
    import cv2

    from capture.catalogue import Catalogue
    from capture.detect import detect_artworks
    from capture.recognise import detect_and_recognise
    from capture.synthetic.scenes import SceneGenerator, write_catalogue

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with tempfile.TemporaryDirectory(prefix="art2mus-bench-") as tmp:
            folder = catalogue_dir or write_catalogue(Path(tmp) / "catalogue", catalogue_size)
            began = time.perf_counter()
            catalogue = Catalogue.open(folder)
            index_s = time.perf_counter() - began
            generator = SceneGenerator(catalogue_size=catalogue_size)
            detection, located = DetectionTally(), DetectionTally()
            recognised = right = 0
            all_catalogued = right_anywhere = 0
            outsiders = false_matches = 0
            detect_s: list[float] = []
            full_s: list[float] = []
            render_s = 0.0
            for k in range(scenes):
                t0 = time.perf_counter()
                scene = generator.render(seed + k)
                render_s += time.perf_counter() - t0
                height, width = scene.image.shape[:2]
                diagonal = float(np.hypot(width, height))
                truths = [p.quad for p in scene.paintings]

                t0 = time.perf_counter()
                found = detect_artworks(scene.image, detect_width)
                detect_s.append(time.perf_counter() - t0)
                detection.add([d.quad for d in found], truths, diagonal)

                t0 = time.perf_counter()
                results = detect_and_recognise(scene.image, catalogue, detect_width)
                full_s.append(time.perf_counter() - t0)
                matches = located.add([r.quad for r in results], truths, diagonal)
                for painting, match in zip(scene.paintings, matches, strict=True):
                    artwork_id = results[match].artwork_id if match is not None else None
                    if painting.artwork_id is not None:
                        all_catalogued += 1
                        right_anywhere += artwork_id == painting.artwork_id
                        if match is not None:
                            recognised += 1
                            right += artwork_id == painting.artwork_id
                    elif match is not None:
                        outsiders += 1
                        false_matches += artwork_id is not None
            recognise_ms = catalogue.stats.get("recognise_ms", [])
            locate_ms = catalogue.stats.get("locate_ms", [])
    finally:
        cv2.setNumThreads(threads)
    return {
        "benchmark": "capture",
        "scenes": scenes, "seed": seed, "frame_size": [1280, 720],
        "catalogue_size": catalogue_size, "detect_width": detect_width,
        "iou_threshold": IOU_THRESHOLD, "threads": 1,
        "detection": detection.summary(),
        "located": located.summary(),
        "recognition": {
            "top1": round(right / recognised, 4) if recognised else None,
            "found": recognised,
            "end_to_end_top1": round(right_anywhere / all_catalogued, 4)
            if all_catalogued else None,
            "catalogued_truths": all_catalogued,
            "false_match_rate": round(false_matches / outsiders, 4) if outsiders else None,
            "outsiders_found": outsiders,
        },
        "speed": {
            "detect_fps": round(1.0 / float(np.mean(detect_s)), 1),
            "detect_ms_p95": round(1000 * float(np.percentile(detect_s, 95)), 1),
            "recognise_ms_per_view": round(float(np.mean(recognise_ms)), 1)
            if recognise_ms else None,
            "locate_ms_per_frame": round(float(np.mean(locate_ms)), 1) if locate_ms else None,
            "detect_and_recognise_all_fps": round(1.0 / float(np.mean(full_s)), 1),
            "catalogue_index_s": round(index_s, 2),
            "scene_render_s": round(render_s, 1),
        },
    }
