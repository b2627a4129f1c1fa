"""A salon hang: are all the works on a wall crowded with them located and named?

``python benchmarks/salon_wall.py [--catalogue DIR] [--works 12,20] [--seeds 5]
[--conditions none,dim,turn,far,glare] [--json]`` hangs ``--works`` references of
the catalogue (default ``../shared/data/galleries-estense/catalogue``, else 40
generated works), drawn at random per seed, in a grid on a plain 1920x1080 wall, each
in a plain frame as large as its cell allows; takes the wall at 1280x720 and at
1920x1080 as each camera of :mod:`capture.degrade` would (``none``: as hung); and
runs what ``art2mus detect`` runs (:func:`capture.recognise.detect_and_recognise`).
A work counts as located where a detection has IoU >= 0.7 with its true quad, and as
named where that detection carries its id; a wrong id is any other catalogued id.

The baseline runs in the same process on the same index: the catalogue's search
capped at 8 works (:meth:`capture.catalogue.Catalogue.locate`'s ``max_results``
until 2026-12-06), so the two columns differ by the cap alone. The index is built
in a temporary folder: the catalogue folder is only read.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

GALLERIES = ROOT.parent / "shared" / "data" / "galleries-estense" / "catalogue"
LOCATED_IOU = 0.7
WALL = (1920, 1080)
SIZES = ((1280, 720), (1920, 1080))
CAPPED = 8  # the search's cap until 2026-12-06


def hang(references: list[tuple[str, np.ndarray]], seed: int) -> tuple[np.ndarray, list[
        tuple[str, np.ndarray]]]:
    """The wall with ``references`` hung in a grid (rows and columns of the wall's
    aspect), and each work's (id, true quad) in wall px."""
    import cv2

    rng = np.random.default_rng(seed)
    width, height = WALL
    wall = np.clip(rng.normal((150, 160, 170), 4, (height, width, 3)), 0, 255).astype(np.uint8)
    columns = int(np.ceil(np.sqrt(len(references) * width / height)))
    rows = int(np.ceil(len(references) / columns))
    cell_w, cell_h = width / columns, height / rows
    truth = []
    for k, (artwork_id, image) in enumerate(references):
        row, column = divmod(k, columns)
        scale = min(0.8 * cell_w / image.shape[1], 0.75 * cell_h / image.shape[0])
        w, h = int(image.shape[1] * scale), int(image.shape[0] * scale)
        x, y = int(column * cell_w + (cell_w - w) / 2), int(row * cell_h + (cell_h - h) / 2)
        rim = max(3, int(0.06 * min(w, h)))
        cv2.rectangle(wall, (x - rim, y - rim), (x + w + rim, y + h + rim), (30, 110, 160), -1)
        wall[y:y + h, x:x + w] = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
        truth.append((artwork_id, np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]],
                                           np.float32)))
    return wall, truth


def run(catalogue_dir: Path | None, works: list[int], seeds: int,
        conditions: list[str]) -> dict[str, Any]:
    """Located, named and wrong ids per (works, condition, frame size), now and capped."""
    import cv2

    from capture.catalogue import Catalogue, read_entries
    from capture.degrade import degrade
    from capture.detect import quad_iou
    from capture.images import read_image
    from capture.recognise import detect_and_recognise
    from capture.synthetic.scenes import write_catalogue

    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory(prefix="art2mus-salon-") as tmp:
        folder = catalogue_dir if catalogue_dir is not None else write_catalogue(
            Path(tmp) / "works", 40)
        catalogue = Catalogue.open(folder, cache_dir=Path(tmp))
        entries = read_entries(folder)
        images = {e.artwork_id: read_image(folder / e.file, 1024) for e in entries}
        searched = catalogue.locate
        rows: dict[str, dict[str, int]] = {}
        for count in works:
            if count > len(entries):
                raise ValueError(f"works: {count} asked, the catalogue holds {len(entries)}")
            for seed in range(seeds):
                rng = np.random.default_rng([seed, count])
                picked = [entries[int(k)].artwork_id
                          for k in rng.choice(len(entries), count, replace=False)]
                wall, truth = hang([(i, images[i]) for i in picked], seed)
                for condition in conditions:
                    for size in SIZES:
                        frame = cv2.resize(wall, size, interpolation=cv2.INTER_AREA)
                        quads = [q * size[0] / WALL[0] for _, q in truth]
                        if condition != "none":
                            frame, move = degrade(frame, condition, seed=seed)
                            quads = [move(q).astype(np.float32) for q in quads]
                        row = rows.setdefault(f"{count} works, {condition}, {size[0]}x{size[1]}",
                                              {"works": 0})
                        row["works"] += count
                        for label, cap in (("now", None), ("capped", CAPPED)):
                            catalogue.locate = searched if cap is None else (  # type: ignore
                                lambda *a, **k: searched(*a, **{"max_results": CAPPED, **k}))
                            found = detect_and_recognise(frame, catalogue)
                            hits = [[a for a in found if quad_iou(a.quad, q) >= LOCATED_IOU]
                                    for q in quads]
                            row[f"{label}_located"] = row.get(f"{label}_located", 0) + sum(
                                bool(h) for h in hits)
                            row[f"{label}_named"] = row.get(f"{label}_named", 0) + sum(
                                any(a.artwork_id == i for a in h)
                                for (i, _), h in zip(truth, hits, strict=True))
                            row[f"{label}_wrong_ids"] = row.get(f"{label}_wrong_ids", 0) + sum(
                                a.artwork_id is not None and a.artwork_id not in picked
                                for a in found)
                        catalogue.locate = searched  # type: ignore[method-assign]
    return {"benchmark": "salon-wall", "catalogue": str(catalogue_dir or "generated (40)"),
            "seeds": seeds, "located_iou": LOCATED_IOU, "capped_at": CAPPED, "rows": rows}


def main(argv: list[str] | None = None) -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--catalogue", type=Path, default=None)
    parser.add_argument("--works", default="12,20")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--conditions", default="none,dim,turn,far,glare")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    from capture.degrade import DEGRADATIONS

    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    unknown = [c for c in conditions if c != "none" and c not in DEGRADATIONS]
    if unknown or not conditions:
        parser.error(f"--conditions: expected none or any of {', '.join(DEGRADATIONS)}, "
                     f"got {args.conditions!r}")
    try:
        works = [int(w) for w in args.works.split(",")]
    except ValueError:
        parser.error(f"--works: expected counts separated by commas, got {args.works!r}")
    if any(w < 1 for w in works):
        parser.error(f"--works: expected counts of at least 1, got {args.works!r}")
    if args.seeds < 1:
        parser.error(f"--seeds: expected at least 1, got {args.seeds}")
    if args.catalogue is not None and not args.catalogue.is_dir():
        parser.error(f"--catalogue: expected a folder of reference images at {args.catalogue}")
    folder = args.catalogue if args.catalogue is not None else (
        GALLERIES if GALLERIES.is_dir() else None)
    result = run(folder, works, args.seeds, conditions)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Salon wall: {result['catalogue']}, {args.seeds} seeds, located at "
                        f"IoU {LOCATED_IOU} / named / wrong ids; search capped at "
                        f"{CAPPED} (the baseline) -> not")
    for column in ("wall, condition, frame", "works", f"capped at {CAPPED}", "now"):
        table.add_column(column, justify="left" if column.startswith("wall") else "right")
    for name, row in result["rows"].items():
        table.add_row(name, str(row["works"]), *(
            f"{row[f'{k}_located']} / {row[f'{k}_named']} / {row[f'{k}_wrong_ids']}"
            for k in ("capped", "now")))
    Console().print(table)


if __name__ == "__main__":
    main()
