"""Loudness spread: is every artwork's music at the room's target, and the ambience at its level?

``python benchmarks/loudness.py [--seconds 20] [--soundfont shipped|auto|FILE] [--json]``
renders each of the 8 synthetic styles and every real work in
``../shared/data/artworks`` (where that folder exists) as ``art2mus render``
does (the painting located and rectified, described, then the procedural
generator through :func:`engine.streaming.render_offline` in 0.5 s blocks, seed
0), plus the empty-room ambience, and measures the integrated loudness of each
render (ITU-R BS.1770-4 with its gating, via pyloudnorm) against the target:
``target_lufs`` for artworks, ``ambience_lufs`` for the ambience.

The table lists every render (LUFS, LUFS minus target, true-ish peak) and the
spread of the artworks (min, max, std of LUFS minus target, and how many fall
outside +/- 2 LU, issue 16's bound). ``--json`` prints one JSON object instead.
``--soundfont auto`` measures with the best General MIDI font installed (see
:data:`engine.generators.procedural.render.SOUNDFONT_PREFERENCE`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ARTWORKS = ROOT.parent / "shared" / "data" / "artworks"
#: Issue 16's bound on every artwork's integrated loudness around the target, LU.
BOUND_LU = 2.0


def views(include_real: bool = True) -> list[tuple[str, Any]]:
    """(name, ArtworkView) of the 8 synthetic styles, the real works found, the empty wall."""
    from capture.images import read_image
    from capture.synthetic.artworks import ARTWORK_STYLES, make_artwork
    from ground.protocol import PROTOCOL_VERSION, ArtworkView
    from installation.cli import _locate_painting, _view_for_image

    found = [
        (style, _view_for_image(make_artwork(i, 7, (512, 512)), artwork_id=f"style-{i}"))
        for i, style in enumerate(ARTWORK_STYLES)
    ]
    if include_real and ARTWORKS.is_dir():
        for path in sorted(ARTWORKS.glob("*.jpg")):
            picture = read_image(path)
            # As `art2mus render` does: the painting in the photo, else the whole photo.
            rectified, used = _locate_painting(picture, None, 640)
            image = picture if used is None else rectified
            found.append((path.name, _view_for_image(image, artwork_id=path.name)))
    empty = ArtworkView(
        v=PROTOCOL_VERSION,
        room="render",
        seq=0,
        time=0.0,
        state="empty",
        artwork_id=None,
        features={},
    )
    found.append(("(empty-room ambience)", empty))
    return found


def measure(generator: Any, view: Any, seconds: float, seed: int = 0) -> dict[str, float]:
    """Integrated loudness (LUFS), its target and the sample peak (dBFS) of one render."""
    import pyloudnorm

    from engine.streaming import render_offline

    decisions = generator.prepare(view)
    audio, _, _ = render_offline(generator, view, seconds, seed=seed, block_s=0.5)
    lufs = float(
        pyloudnorm.Meter(generator.sample_rate).integrated_loudness(audio.astype(np.float64))
    )
    peak = float(20.0 * np.log10(max(float(np.abs(audio).max()), 1e-9)))
    return {
        "lufs": round(lufs, 2),
        "target": float(decisions.target_lufs),
        "delta": round(lufs - float(decisions.target_lufs), 2),
        "peak_dbfs": round(peak, 2),
    }


def spread(deltas: list[float]) -> dict[str, float | int]:
    """min, max, std of LUFS minus target and the count outside +/- :data:`BOUND_LU`."""
    values = np.asarray(deltas, np.float64)
    return {
        "n": len(values),
        "min": round(float(values.min()), 2),
        "max": round(float(values.max()), 2),
        "std": round(float(values.std()), 2),
        "outside": int(np.sum(np.abs(values) > BOUND_LU)),
    }


def run(seconds: float, soundfont: str, include_real: bool = True) -> dict[str, Any]:
    """Measure every view; the JSON-ready report."""
    from engine.generators.procedural import ProceduralConfig, ProceduralGenerator

    setting = None if soundfont == "shipped" else soundfont
    generator = ProceduralGenerator(ProceduralConfig(soundfont=setting), sample_rate=48000)
    began = time.perf_counter()
    rows = []
    for name, view in views(include_real):
        rows.append({"name": name, "state": view.state, **measure(generator, view, seconds)})
    artworks = [r["delta"] for r in rows if r["state"] == "artwork"]
    ambience = [r for r in rows if r["state"] == "empty"]
    return {
        "soundfont": generator.renderer.soundfont.describe(),
        "seconds": seconds,
        "rows": rows,
        "artworks": spread(artworks),
        "ambience_delta": ambience[0]["delta"] if ambience else None,
        "wall_s": round(time.perf_counter() - began, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Command line: the table (or ``--json``); exit 1 when a render is outside the bound."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per render")
    parser.add_argument(
        "--soundfont", default="shipped", help='"shipped" (TimGM6mb), "auto" or an .sf2/.sf3 file'
    )
    parser.add_argument(
        "--synthetic-only", action="store_true", help="only the 8 synthetic styles and the ambience"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error(f"--seconds must be positive, got {args.seconds}")
    report = run(args.seconds, args.soundfont, not args.synthetic_only)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"{report['soundfont']}; {report['seconds']:g} s renders")
        print(f"{'render':<48} {'LUFS':>7} {'target':>7} {'delta':>6} {'peak':>6}")
        for row in report["rows"]:
            print(
                f"{row['name'][:48]:<48} {row['lufs']:7.2f} {row['target']:7.1f} "
                f"{row['delta']:+6.2f} {row['peak_dbfs']:6.1f}"
            )
        s = report["artworks"]
        print(
            f"artworks: n={s['n']} LUFS-target min {s['min']:+.2f} max {s['max']:+.2f} "
            f"std {s['std']:.2f}; outside +/-{BOUND_LU:g} LU: {s['outside']}; "
            f"ambience {report['ambience_delta']:+.2f}; wall {report['wall_s']} s"
        )
    bad = report["artworks"]["outside"] or abs(report["ambience_delta"] or 0.0) > BOUND_LU
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
