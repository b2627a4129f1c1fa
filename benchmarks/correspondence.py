"""Does the music follow the painting? The correspondence table of issue 16, on real artworks.

``python benchmarks/correspondence.py [FOLDER] [--seconds 20] [--limit N] [--json]``
takes each image in FOLDER (default ``../shared/data/artworks``, beside the
checkout), does what ``art2mus render IMG --seconds 20 --out X.wav --midi X.mid``
does (locate and rectify the painting in the picture, or describe the whole
picture when none is found; describe it with ``capture.descriptor``; render with
the procedural generator through ``engine.streaming.render_offline``, default
engine config, seed 0) and measures the audio and the notes. It calls the same
functions as the CLI, in-process, rather than a subprocess per work: 42 renders
take a minute instead of several, and nothing is written to disk.

What each figure means (none is timed; warm-up and medians do not apply):

``warmth -> centroid``
    Spearman rho between the descriptor's ``warmth`` and the spectral centroid
    of the render (Hz; mean of the per-frame centroids of the mono mix, 2048-
    point frames, weighted by frame energy so silences do not count).
``brightness -> mean pitch``
    rho between ``brightness`` (mean L*) and the mean MIDI pitch of the notes
    the render played (percussion, channel 10, left out).
``abstract rating -> experimental``
    rho between the person's ``abstract`` rating in ``labels.json`` and the
    experimentalness of the notes: the mean of (a) the pitch-class entropy of
    the notes, weighted by note length, divided by log2(12), and (b) the
    fraction of note time whose pitch class is outside the plan's key and mode
    (the scale the mapping chose). Both components' rho are reported too.
``abstraction -> rating``
    rho between the descriptor's ``abstraction`` feature and the rating (the
    feature alone, before any music); absent before the feature existed.
``between / within``
    "different works sound different": every render is cut into two halves
    (10 s each for 20 s renders) and each half summarised as its long-term
    average spectrum (mean power density in 40 log-spaced bands, 50 Hz-16 kHz,
    8192-point frames, in dB with the mean level removed so loudness does not
    count). within = mean distance
    (RMS dB) between the two halves of one render; between = mean distance
    between the first halves of two different renders, over all pairs. The
    ratio between / within is the figure (issue 16 target >= 3). Beside it, the
    same ratio over the bands from 200 Hz up: below, a band is 2.5 semitones
    of a few FFT bins and holds single bass notes, so two halves that play
    other chord roots differ there by 10-30 dB; most of ``within`` comes from
    there (the harmony moving, not the timbre).

The rated images are for measuring, not tuning (``../shared/data/README.md``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FOLDER = ROOT.parent / "shared" / "data" / "artworks"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
PERCUSSION_CHANNEL = 9
#: Long-term average spectrum bands for the between/within distance.
BANDS, BAND_LOW_HZ, BAND_HIGH_HZ = 40, 50.0, 16_000.0
#: Where the second between/within figure starts (above the bass line's fundamentals).
UPPER_FROM_HZ = 200.0
FRAME = 2048
#: Longer frames for the band spectrum, so its narrow low bands hold FFT bins.
BAND_FRAME = 8192

if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class ArtworkMeasure:
    """What one artwork's render measured: its features, the audio and the notes."""

    image: str
    rating: float | None
    located: bool
    warmth: float
    brightness: float
    abstraction: float | None
    centroid_hz: float
    mean_pitch: float
    pitch_class_entropy: float
    outside_key: float
    experimentalness: float
    plan: str


def spectral_centroid(audio: np.ndarray, sample_rate: int) -> float:
    """Energy-weighted mean spectral centroid (Hz) of ``audio`` (frames, channels) or mono."""
    mono = audio.mean(axis=1) if audio.ndim == 2 else audio
    frames = _frames(mono)
    if not len(frames):
        return 0.0
    spectrum = np.abs(np.fft.rfft(frames * np.hanning(FRAME), axis=1))
    freqs = np.fft.rfftfreq(FRAME, 1.0 / sample_rate)
    total = spectrum.sum(axis=1)
    energy = (spectrum ** 2).sum(axis=1)
    voiced = total > 1e-9
    if not voiced.any():
        return 0.0
    centroids = (spectrum[voiced] @ freqs) / total[voiced]
    return float(np.average(centroids, weights=energy[voiced]))


def band_spectrum(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Long-term average spectrum of ``audio`` in dB per band, mean level removed (BANDS,)."""
    mono = audio.mean(axis=1) if audio.ndim == 2 else audio
    frames = _frames(mono, BAND_FRAME)
    if not len(frames):
        return np.zeros(BANDS)
    power = (np.abs(np.fft.rfft(frames * np.hanning(BAND_FRAME), axis=1)) ** 2).mean(axis=0)
    freqs = np.fft.rfftfreq(BAND_FRAME, 1.0 / sample_rate)
    edges = np.geomspace(BAND_LOW_HZ, min(BAND_HIGH_HZ, sample_rate / 2), BANDS + 1)
    bands = np.empty(BANDS)
    for b in range(BANDS):
        inside = (freqs >= edges[b]) & (freqs < edges[b + 1])
        # Mean power density in the band; a band narrower than one FFT bin
        # takes the bin nearest its centre.
        centre = math.sqrt(edges[b] * edges[b + 1])
        bands[b] = power[inside].mean() if inside.any() else power[np.argmin(abs(freqs - centre))]
    db = 10.0 * np.log10(bands + 1e-20)
    return db - db.mean()


def note_statistics(notes: np.ndarray, key_root: int, mode: str) -> tuple[float, float, float]:
    """(mean pitch, pitch-class entropy / log2 12, fraction of note time outside the key).

    ``notes`` are the generator's int32 (N, 6) rows ``start, length, pitch,
    velocity, program, channel``; percussion (channel 10) is left out.
    """
    from engine.generators.procedural.theory import scale_pitch_classes

    tonal = notes[notes[:, 5] != PERCUSSION_CHANNEL] if len(notes) else notes
    if not len(tonal):
        return 0.0, 0.0, 0.0
    lengths = np.maximum(tonal[:, 1].astype(np.float64), 1.0)
    classes = tonal[:, 2] % 12
    histogram = np.bincount(classes, weights=lengths, minlength=12) / lengths.sum()
    present = histogram[histogram > 0]
    entropy = float(-(present * np.log2(present)).sum() / math.log2(12))
    scale = scale_pitch_classes(key_root, mode)
    outside = float(lengths[~np.isin(classes, list(scale))].sum() / lengths.sum())
    return float(tonal[:, 2].mean()), entropy, outside


def measure_artwork(
    path: Path, generator: Any, seconds: float, seed: int, block_s: float,
    rating: float | None = None,
) -> tuple[ArtworkMeasure, np.ndarray]:
    """Render ``path`` as ``art2mus render`` does; its measures and the audio."""
    from engine.generators.procedural.theory import NOTE_NAMES
    from engine.streaming import render_offline
    from installation.cli import _locate_painting, _read_image, _view_for_image

    picture = _read_image(path)
    # The CLI's own helpers, so the benchmark renders what `art2mus render` renders.
    rectified, used = _locate_painting(picture, None, 640)
    view = _view_for_image(picture if used is None else rectified, "bench", path.stem)
    audio, notes, plan = render_offline(generator, view, seconds, seed=seed, block_s=block_s)
    key_root = NOTE_NAMES.index(plan["key"])
    mean_pitch, entropy, outside = note_statistics(notes, key_root, plan["mode"])
    features = view.features
    measure = ArtworkMeasure(
        image=path.name,
        rating=rating,
        located=used is not None,
        warmth=float(features["warmth"]),
        brightness=float(features["brightness"]),
        abstraction=float(features["abstraction"]) if "abstraction" in features else None,
        centroid_hz=round(spectral_centroid(audio, generator.sample_rate), 1),
        mean_pitch=round(mean_pitch, 2),
        pitch_class_entropy=round(entropy, 4),
        outside_key=round(outside, 4),
        experimentalness=round(0.5 * entropy + 0.5 * outside, 4),
        plan=f"{plan['key']} {plan['mode']} {plan['meter']} experimental {plan['experimental']}",
    )
    return measure, audio


def correspondence(
    folder: Path = DEFAULT_FOLDER, seconds: float = 20.0, seed: int = 0, limit: int | None = None
) -> dict[str, Any]:
    """The correspondence table for the images in ``folder`` (JSON-ready)."""
    from scipy.stats import spearmanr

    from engine.config import EngineConfig
    from engine.generators import make_generator

    if not folder.is_dir():
        raise FileNotFoundError(f"artworks folder {folder}: not found")
    ratings = _ratings(folder)
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if limit is not None:
        images = images[:limit]
    if len(images) < 2:
        raise ValueError(f"artworks folder {folder}: expected 2 or more images, got {len(images)}")
    config = EngineConfig()
    generator = make_generator(config)
    measures: list[ArtworkMeasure] = []
    halves: list[tuple[np.ndarray, np.ndarray]] = []
    for path in images:
        measure, audio = measure_artwork(path, generator, seconds, seed, config.chunk_s,
                                         ratings.get(path.name))
        measures.append(measure)
        middle = len(audio) // 2
        halves.append((band_spectrum(audio[:middle], generator.sample_rate),
                       band_spectrum(audio[middle:], generator.sample_rate)))

    def rho(x: list[float | None], y: list[float | None]) -> float | None:
        pairs = [(a, b) for a, b in zip(x, y, strict=True) if a is not None and b is not None]
        if len(pairs) < 3:
            return None
        value = spearmanr([a for a, _ in pairs], [b for _, b in pairs]).statistic
        return None if value != value else round(float(value), 3)  # NaN: a constant column

    def column(name: str) -> list[Any]:
        return [getattr(m, name) for m in measures]

    within = [_distance(a, b) for a, b in halves]
    between = [_distance(halves[i][0], halves[j][0])
               for i, j in itertools.combinations(range(len(halves)), 2)]
    within_mean, between_mean = float(np.mean(within)), float(np.mean(between))
    # The same above the bass line (bands from ~200 Hz, where a band holds many partials):
    # below it a 40-band spectrum resolves single bass notes, so two halves playing other
    # chord roots differ by 10-30 dB in a band. Reported beside the figure, not instead of it.
    upper = int(np.searchsorted(np.geomspace(BAND_LOW_HZ, BAND_HIGH_HZ, BANDS + 1),
                                UPPER_FROM_HZ))
    within_upper = float(np.mean([_distance(a[upper:], b[upper:]) for a, b in halves]))
    between_upper = float(np.mean([_distance(halves[i][0][upper:], halves[j][0][upper:])
                                   for i, j in itertools.combinations(range(len(halves)), 2)]))
    return {
        "folder": str(folder),
        "works": len(measures),
        "rated": sum(m.rating is not None for m in measures),
        "located": sum(m.located for m in measures),
        "seconds": seconds,
        "seed": seed,
        "rho": {
            "warmth_centroid": rho(column("warmth"), column("centroid_hz")),
            "brightness_mean_pitch": rho(column("brightness"), column("mean_pitch")),
            "rating_experimentalness": rho(column("rating"), column("experimentalness")),
            "rating_pitch_class_entropy": rho(column("rating"), column("pitch_class_entropy")),
            "rating_outside_key": rho(column("rating"), column("outside_key")),
            "abstraction_rating": rho(column("abstraction"), column("rating")),
        },
        "between_within": {
            "between_db": round(between_mean, 3),
            "within_db": round(within_mean, 3),
            "ratio": round(between_mean / within_mean, 3) if within_mean > 0 else None,
            "upper_from_hz": UPPER_FROM_HZ,
            "upper_ratio": (round(between_upper / within_upper, 3) if within_upper > 0
                            else None),
        },
        "artworks": [asdict(m) for m in measures],
    }


def _frames(mono: np.ndarray, size: int = FRAME) -> np.ndarray:
    # Half-overlapping frames of ``size`` samples (a strided view, then a copy).
    mono = np.ascontiguousarray(mono)
    count = (len(mono) - size) // (size // 2) + 1
    if count <= 0:
        return np.zeros((0, size))
    strides = (mono.strides[0] * (size // 2), mono.strides[0])
    return np.lib.stride_tricks.as_strided(mono, (count, size), strides).astype(np.float64)


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


def _ratings(folder: Path) -> dict[str, float]:
    path = folder / "labels.json"
    if not path.exists():
        return {}
    try:
        labels = json.loads(path.read_text())
        return {name: float(entry["abstract"]) for name, entry in labels.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: expected {{image: {{\"abstract\": 0..1}}}}, got {exc!r}") \
            from None


def format_table(result: dict[str, Any]) -> str:
    """The readable table: the four correspondences, then one line per artwork."""
    r, bw = result["rho"], result["between_within"]

    def show(value: float | None) -> str:
        return "n/a" if value is None else f"{value:+.2f}"

    lines = [
        f"{result['works']} works in {result['folder']} ({result['rated']} rated, painting "
        f"located in {result['located']}), {result['seconds']:g} s each, seed {result['seed']}",
        "",
        "| correspondence | Spearman rho | target |",
        "| --- | --- | --- |",
        f"| warmth -> spectral centroid | {show(r['warmth_centroid'])} | >= 0.7 |",
        f"| brightness -> mean pitch of the notes | {show(r['brightness_mean_pitch'])} | >= 0.8 |",
        f"| abstract rating -> experimentalness | {show(r['rating_experimentalness'])} "
        f"| >= 0.6 |",
        f"|   (pitch-class entropy alone / time outside the key alone) "
        f"| {show(r['rating_pitch_class_entropy'])} / {show(r['rating_outside_key'])} | |",
        f"| abstraction feature -> rating | {show(r['abstraction_rating'])} | >= 0.6 |",
        f"| between / within spectral distance | {bw['ratio']} ({bw['between_db']} / "
        f"{bw['within_db']} dB) | >= 3 |",
        f"|   (the same from {bw['upper_from_hz']:g} Hz up, above the bass line's notes) "
        f"| {bw['upper_ratio']} | |",
        "",
        f"{'image':44s} {'rating':>6s} {'abstr':>6s} {'warm':>5s} {'centroid':>8s} "
        f"{'bright':>6s} {'pitch':>6s} {'exper':>6s}  plan",
    ]
    for m in result["artworks"]:
        rating = "-" if m["rating"] is None else f"{m['rating']:.2f}"
        abstraction = "-" if m["abstraction"] is None else f"{m['abstraction']:.2f}"
        lines.append(
            f"{m['image'][:44]:44s} {rating:>6s} {abstraction:>6s} {m['warmth']:5.2f} "
            f"{m['centroid_hz']:8.0f} {m['brightness']:6.2f} {m['mean_pitch']:6.1f} "
            f"{m['experimentalness']:6.3f}  {m['plan']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Command line: the table (or JSON) for a folder of artworks."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER,
                        help="images (and labels.json); default ../shared/data/artworks")
    parser.add_argument("--seconds", type=float, default=20.0, help="render length per work")
    parser.add_argument("--seed", type=int, default=0, help="the room seed render uses")
    parser.add_argument("--limit", type=int, default=None, help="only the first N images")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    args = parser.parse_args(argv)
    if args.seconds <= 1.0:
        parser.error(f"--seconds: expected more than 1, got {args.seconds}")
    try:
        result = correspondence(args.folder, args.seconds, args.seed, args.limit)
    except (FileNotFoundError, ValueError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
