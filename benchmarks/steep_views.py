"""Steep and far views: is a catalogued work located when the camera sees it from far
to its side, or from far away?

``python benchmarks/steep_views.py [--catalogue DIR] [--angles 0,50,60,65,70,75]
[--height 0.33] [--leave-out tilted|far] [--json]`` draws every reference of
the catalogue (default ``../shared/data/galleries-estense/catalogue``, else 30
generated works) on a plain wall, turned about its vertical axis by each
angle and filmed at 1280x720 (:func:`capture.synthetic.rooms.seen_from_the_side`:
a pinhole camera, the work ``--height`` of the frame tall when frontal,
softened and JPEG-coded), and asks :meth:`capture.catalogue.Catalogue.locate`
for it three times: in the whole frame (the coarse search of a frame with
nothing known in it), in the whole frame with ``fine`` (what a still gets:
``art2mus detect``, the photo bench), and near its true quad (a new arrival
the quad finder or the tracker saw). A work counts as located where the
catalogue names it with IoU >= 0.85 to the truth.

The baseline runs in the same process on the same index, less one set of its
simulated reference views (``--leave-out``: ``tilted``, the reference seen
from the side, for steep angles; ``far``, the reference shrunk, for small
``--height``s), so the two columns differ by that set alone. Timings (ms per
coarse whole-frame search, median after a warm-up) are wall clock on whatever
else the machine is doing. The index is built in a temporary folder: the
catalogue folder is only read.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GALLERIES = ROOT.parent / "shared" / "data" / "galleries-estense" / "catalogue"
LOCATED_IOU = 0.85


def run(catalogue_dir: Path | None, angles: list[float], height: float,
        generated: int = 30, leave_out: str = "tilted") -> dict[str, Any]:
    """Located counts, IoU and search ms per angle, with and without the ``leave_out``
    simulated views (``generated`` works are written where no catalogue is given)."""
    import cv2

    from capture.catalogue import INDEX_FILE, SIMULATED_VIEWS, Catalogue, read_entries
    from capture.images import read_image
    from capture.synthetic.rooms import seen_from_the_side
    from capture.synthetic.scenes import write_catalogue

    if leave_out not in SIMULATED_VIEWS:
        raise ValueError(f"leave_out must be one of {SIMULATED_VIEWS}, got {leave_out!r}")
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory(prefix="art2mus-steep-") as tmp:
        if catalogue_dir is None:
            catalogue_dir = write_catalogue(Path(tmp) / "generated", generated)
        whole_index = Catalogue.open(catalogue_dir, cache_dir=tmp)
        with np.load(Path(tmp) / INDEX_FILE, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        for part in ("desc", "xy", "owner"):
            arrays[f"{leave_out}_{part}"] = arrays[f"{leave_out}_{part}"][:0]
        entries = read_entries(catalogue_dir)
        without = Catalogue(catalogue_dir, entries, arrays)
        pictures = [read_image(catalogue_dir / e.file) for e in entries]
        rows = []
        for angle in angles:
            rng = np.random.default_rng(int(angle * 10))
            scenes = [seen_from_the_side(p, angle, height, rng) for p in pictures]
            row: dict[str, Any] = {"angle_deg": angle, "works": len(entries)}
            for name, catalogue in (("without", without), ("with", whole_index)):
                catalogue.locate(scenes[0][0])  # warm-up
                counts = {"whole_frame": 0, "whole_frame_fine": 0, "near_quad": 0}
                ious: list[float] = []
                spent: list[float] = []
                for entry, (frame, truth) in zip(entries, scenes, strict=True):
                    began = time.perf_counter()
                    found = catalogue.locate(frame)
                    spent.append(1000.0 * (time.perf_counter() - began))
                    ious += [max(hit) for hit in [_ious(found, entry.artwork_id, truth)] if hit]
                    for key, looked in (("whole_frame", found),
                                        ("whole_frame_fine", catalogue.locate(frame, fine=True)),
                                        ("near_quad", catalogue.locate(frame, near=truth))):
                        counts[key] += max(_ious(looked, entry.artwork_id, truth),
                                           default=0.0) >= LOCATED_IOU
                row[name] = {**counts,
                             "iou_median": round(float(np.median(ious)), 3) if ious else None,
                             "search_ms_p50": round(float(np.median(spent)), 1)}
            rows.append(row)
        return {"benchmark": "steep_views", "catalogue": str(catalogue_dir),
                "height": height, "frame": [1280, 720], "threads": 1, "left_out": leave_out,
                "rows": rows}


def _ious(found: list[Any], artwork_id: str, truth: np.ndarray) -> list[float]:
    """The IoU with ``truth`` of each location in ``found`` that names ``artwork_id``."""
    from capture.detect import quad_iou

    return [quad_iou(f.quad, truth) for f in found if f.artwork_id == artwork_id]


def main(argv: list[str] | None = None) -> None:
    """Parse the options, run, print the table or JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalogue", type=Path, default=GALLERIES if GALLERIES.is_dir()
                        else None, help="catalogue folder (default: the Estense one)")
    parser.add_argument("--angles", default="0,50,60,65,70,75",
                        help="degrees off the work's axis, comma separated")
    parser.add_argument("--height", type=float, default=0.33,
                        help="the work's height, of the frame's, when frontal")
    parser.add_argument("--leave-out", choices=("tilted", "far"), default="tilted",
                        help="the simulated reference views the baseline is without")
    parser.add_argument("--json", action="store_true", help="print JSON")
    options = parser.parse_args(argv)
    try:
        angles = [float(a) for a in options.angles.split(",")]
    except ValueError:
        parser.error(f"--angles: expected degrees separated by commas, got {options.angles!r}")
    if not all(np.isfinite(a) and 0 <= a < 85 for a in angles):
        parser.error(f"--angles: expected each from 0 to 85 degrees, got {options.angles!r}")
    if not (np.isfinite(options.height) and 0.05 <= options.height <= 0.9):
        parser.error(f"--height: expected 0.05 to 0.9 of the frame, got {options.height}")
    if options.catalogue is not None and not options.catalogue.is_dir():
        parser.error(f"--catalogue: expected a folder of reference images, got "
                     f"{'a file' if options.catalogue.exists() else 'nothing'} at "
                     f"{options.catalogue}")
    result = run(options.catalogue, angles, options.height, leave_out=options.leave_out)
    if options.json:
        print(json.dumps(result, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Works located from the side ({result['catalogue']}, "
                        f"{result['height']} of the frame tall, 1280x720, IoU >= {LOCATED_IOU})")
    table.add_column("angle")
    for name in (f"without {result['left_out']} views", f"with {result['left_out']} views"):
        table.add_column(f"{name}: whole frame / with fine / near quad", justify="right")
        table.add_column("ms p50", justify="right")
    for row in result["rows"]:
        cells = [f"{row['angle_deg']:g}"]
        for key in ("without", "with"):
            figures = row[key]
            cells += [f"{figures['whole_frame']} / {figures['whole_frame_fine']} / "
                      f"{figures['near_quad']} of {row['works']}", f"{figures['search_ms_p50']}"]
        table.add_row(*cells)
    Console().print(table)


if __name__ == "__main__":
    main()
