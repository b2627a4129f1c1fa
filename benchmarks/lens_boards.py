"""Film a printed chessboard through the action camera of ``bench capture --degrade fisheye``.

``python benchmarks/lens_boards.py OUT_DIR [--size 1280x720] [--board 9x6] [--views 20]
[--seed 0]`` writes ``--views`` PNG frames of a chessboard of ``--board`` inner
corners, at random tilts and places, taken through the wide lens the ``fisheye``
degradation bends the photos with (:func:`capture.degrade.fisheye_lens`), as a
technician films a board with a room's camera. Calibrating them is then the
technician's own command, and the bench takes its result::

    python benchmarks/lens_boards.py /tmp/boards
    art2mus calibrate /tmp/boards --board 9x6 --out /tmp/lens.toml
    art2mus bench capture --photos ../shared/data/galleries-estense --degrade fisheye \\
        --no-catalogue --lens /tmp/lens.toml

The calibration knows nothing of the lens but these frames (the board's views are
drawn by :func:`capture.synthetic.chessboard.board_views`), so the bench measures
the whole chain: calibration, undistortion, detection in the undistorted frame, and
the quads moved back to the camera's frame. A lens measured at 1280x720 serves the
bench's 1920x1080 frames too (the same aspect).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    """Write the board's views; 2 on bad arguments."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="Folder to write the views into.")
    parser.add_argument("--size", default="1280x720", help="Frame size, WIDTHxHEIGHT.")
    parser.add_argument("--board", default="9x6", help="Inner corners, COLSxROWS.")
    parser.add_argument("--views", type=int, default=20, help="How many views.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
        cols, rows = (int(v) for v in args.board.lower().split("x"))
    except ValueError:
        parser.error("--size and --board: expected two numbers joined by x (1280x720, 9x6)")
    if not (160 <= width <= 7680 and 120 <= height <= 4320):
        parser.error(f"--size: expected 160x120 to 7680x4320, got {args.size}")
    if not (2 <= cols <= 30 and 2 <= rows <= 30):
        parser.error(f"--board: expected 2 to 30 inner corners a side, got {args.board}")
    if not 1 <= args.views <= 200:
        parser.error(f"--views: expected 1 to 200, got {args.views}")

    import cv2

    from capture.degrade import fisheye_lens
    from capture.synthetic.chessboard import board_views

    lens = fisheye_lens((width, height))
    args.out.mkdir(parents=True, exist_ok=True)
    for name, image in board_views((width, height), (cols, rows), args.views, args.seed,
                                   lens=lens.apply):
        cv2.imwrite(str(args.out / f"{name}.png"), image)
    print(f"{args.views} views of a {cols}x{rows} board through the fisheye lens, "
          f"{width}x{height}, in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
