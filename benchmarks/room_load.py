"""Many rooms on one machine: does the camera starve the music?

``python benchmarks/room_load.py --rooms 8 --fps 15 --seconds 40 [--json]`` runs
a real ``art2mus run`` of N rooms (virtual cameras at ``--fps``, the
procedural generator, no sound card, no recording) for ``--seconds`` of
music, then reads the run's ``timeline.json`` and capture's stats events:
underflows per room (the figure that must stay 0), and the frame rate each
capture settled at (it sheds frames under load before audio suffers). Issue
12 measured, before the priorities and the load shedding, underflows in
every room of 8 at 15 fps on a 2-core machine and none at 5 fps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

PORT = 6800


def write_config(folder: Path, rooms: int, fps: float, seconds: float) -> Path:
    """An N-room installation on loopback ports PORT..PORT+3."""
    lines = [
        "[installation]", 'name = "room-load"', f'output_dir = "{folder / "out"}"',
        "[network]", f'views = "tcp://127.0.0.1:{PORT}"', f'chunks = "tcp://127.0.0.1:{PORT + 1}"',
        f'clock = "tcp://127.0.0.1:{PORT + 2}"', f'control = "tcp://127.0.0.1:{PORT + 3}"',
        "[engine]", 'generator = "procedural"',
        "[capture]", 'source = "demo"', f"fps = {fps}",
        "[capture.demo]", "artworks = 3", "dwell_s = 15.0",
        "[audio_out]", 'output = "none"', f"stop_after_s = {seconds}",
        "[control]", "reload = false",
    ]
    for i in range(rooms):
        lines += ["[[rooms]]", f'id = "room-{i + 1}"', f"seed = {i + 1}"]
    path = folder / "load.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def count_underflows(out: Path, rooms: int) -> dict[str, int]:
    """Each room's ``underflow`` events in its audio_out event log (read from the logs, not
    the run report, so the same count works on a build without one)."""
    counts = {}
    for i in range(rooms):
        room = f"room-{i + 1}"
        path = out / "events" / f"audio_out-{room}.jsonl"
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        counts[room] = 0
        for line in text.splitlines():
            if '"kind":"underflow"' in line:  # each carries the player's running count
                counts[room] = max(counts[room], int(json.loads(line).get("count", 0)))
    return counts


def capture_fps(out: Path) -> dict[str, float]:
    """The median effective frame rate of each room's capture over its stats events."""
    rates: dict[str, float] = {}
    for path in sorted((out / "events").glob("capture-*.jsonl")):
        values = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("kind") == "stats" and event.get("fps") is not None:
                values.append(float(event["fps"]))
        if values:
            rates[path.stem.removeprefix("capture-")] = round(statistics.median(values), 2)
    return rates


def main() -> int:
    """Run the load; exit 1 when any room underflowed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rooms", type=int, default=8)
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="art2mus-load-"))
    config = write_config(folder, args.rooms, args.fps, args.seconds)
    art2mus = Path(sys.executable).with_name("art2mus")
    subprocess.run([str(art2mus), "run", "--config", str(config)], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=args.seconds * 4 + 120)
    underflows = count_underflows(folder / "out", args.rooms)
    result: dict[str, Any] = {
        "rooms": args.rooms, "fps_asked": args.fps, "seconds": args.seconds,
        "underflows": underflows, "capture_fps_median": capture_fps(folder / "out"),
        "folder": str(folder),
    }
    result["passed"] = bool(underflows) and not any(underflows.values())
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"{args.rooms} rooms, capture asked {args.fps} fps, {args.seconds} s of music")
        for room in sorted(underflows):
            print(f"  {room:<10} underflows {underflows[room]:>4}   capture fps "
                  f"{result['capture_fps_median'].get(room, '-')}")
        print("PASS" if result["passed"] else "FAIL: underflows (or no report)")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
