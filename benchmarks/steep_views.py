"""Steep views: is a catalogued work located when the camera sees it from far to its side?

``python benchmarks/steep_views.py [--catalogue DIR] [--angles 0,50,60,65,70,75]
[--height 0.33] [--json]`` draws every reference of the catalogue (default
``../shared/data/galleries-estense/catalogue``, else 30 generated works) on a
plain wall, turned about its vertical axis by each angle and filmed at
1280x720 (:func:`capture.synthetic.rooms.seen_from_the_side`: a pinhole
camera, the work ``--height`` of the frame tall when frontal, softened and
JPEG-coded), and asks
:meth:`capture.catalogue.Catalogue.locate` for it twice: in the whole frame
(the coarse search of a frame with nothing known in it) and near its true
quad (a new arrival the quad finder or the tracker saw). A work counts as
located where the catalogue names it with IoU >= 0.85 to the truth.

The baseline runs in the same process on the same index: the catalogue with
its tilted reference views left out (the index before they were added), so
the two columns differ by them alone. Timings (ms per whole-frame search,
median after a warm-up) are wall clock on whatever else the machine is doing.
The index is built in a temporary folder: the catalogue folder is only read.
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
        generated: int = 30) -> dict[str, Any]:
    """Located counts, IoU and search ms per angle, with and without the tilted views
    (``generated`` works are written where no catalogue is given)."""
    import cv2

    from capture.catalogue import INDEX_FILE, Catalogue, read_entries
    from capture.detect import quad_iou
    from capture.images import read_image
    from capture.synthetic.rooms import seen_from_the_side
    from capture.synthetic.scenes import write_catalogue

    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory(prefix="art2mus-steep-") as tmp:
        if catalogue_dir is None:
            catalogue_dir = write_catalogue(Path(tmp) / "generated", generated)
        with_tilts = Catalogue.open(catalogue_dir, cache_dir=tmp)
        with np.load(Path(tmp) / INDEX_FILE, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        arrays.update(tilted_desc=arrays["tilted_desc"][:0], tilted_xy=arrays["tilted_xy"][:0],
                      tilted_owner=arrays["tilted_owner"][:0])
        entries = read_entries(catalogue_dir)
        frontal_only = Catalogue(catalogue_dir, entries, arrays)
        pictures = [read_image(catalogue_dir / e.file) for e in entries]
        rows = []
        for angle in angles:
            rng = np.random.default_rng(int(angle * 10))
            scenes = [seen_from_the_side(p, angle, height, rng) for p in pictures]
            row: dict[str, Any] = {"angle_deg": angle, "works": len(entries)}
            for name, catalogue in (("frontal_only", frontal_only), ("with_tilts", with_tilts)):
                catalogue.locate(scenes[0][0])  # warm-up
                whole = near = 0
                ious: list[float] = []
                spent: list[float] = []
                for entry, (frame, truth) in zip(entries, scenes, strict=True):
                    began = time.perf_counter()
                    found = catalogue.locate(frame)
                    spent.append(1000.0 * (time.perf_counter() - began))
                    hit = [quad_iou(f.quad, truth) for f in found
                           if f.artwork_id == entry.artwork_id]
                    whole += bool(hit) and max(hit) >= LOCATED_IOU
                    close = [quad_iou(f.quad, truth) for f in catalogue.locate(frame, near=truth)
                             if f.artwork_id == entry.artwork_id]
                    near += bool(close) and max(close) >= LOCATED_IOU
                    ious += [max(hit)] if hit else []
                row[name] = {"whole_frame": whole, "near_quad": near,
                             "iou_median": round(float(np.median(ious)), 3) if ious else None,
                             "search_ms_p50": round(float(np.median(spent)), 1)}
            rows.append(row)
        return {"benchmark": "steep_views", "catalogue": str(catalogue_dir),
                "height": height, "frame": [1280, 720], "threads": 1, "rows": rows}


def main(argv: list[str] | None = None) -> None:
    """Parse the options, run, print the table or JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalogue", type=Path, default=GALLERIES if GALLERIES.is_dir()
                        else None, help="catalogue folder (default: the Estense one)")
    parser.add_argument("--angles", default="0,50,60,65,70,75",
                        help="degrees off the work's axis, comma separated")
    parser.add_argument("--height", type=float, default=0.33,
                        help="the work's height, of the frame's, when frontal")
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
    result = run(options.catalogue, angles, options.height)
    if options.json:
        print(json.dumps(result, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Works located from the side ({result['catalogue']}, "
                        f"{result['height']} of the frame tall, 1280x720, IoU >= {LOCATED_IOU})")
    table.add_column("angle")
    for name in ("frontal only", "with tilted views"):
        table.add_column(f"{name}: whole frame / near quad", justify="right")
        table.add_column("ms p50", justify="right")
    for row in result["rows"]:
        cells = [f"{row['angle_deg']:g}"]
        for key in ("frontal_only", "with_tilts"):
            figures = row[key]
            cells += [f"{figures['whole_frame']} / {figures['near_quad']} of {row['works']}",
                      f"{figures['search_ms_p50']}"]
        table.add_row(*cells)
    Console().print(table)


if __name__ == "__main__":
    main()
