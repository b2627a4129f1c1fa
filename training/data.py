"""The paired dataset: images, audio files and a manifest that pairs them.

Layout (ArtSound-style collections map onto it by writing the manifest)::

    DATA_DIR/
      manifest.csv  or  manifest.jsonl
      images/...    any files cv2 reads (paths in the manifest, relative to DATA_DIR)
      audio/...     any files soundfile reads (wav, flac, ogg...), any rate, any channels

Manifest fields: ``image`` and ``audio`` (required), ``caption`` (or
``captions``; optional, kept for reference, never used for conditioning:
Art2Mus conditions on the image alone), ``split`` (optional: ``train``,
``val`` or ``test``; rows without one are assigned by a stable hash of the
audio path, ``val_fraction`` of them to ``val``). Other fields are ignored.

:func:`validate_dataset` reads every file once and reports every problem
(missing, unreadable, too short), naming the manifest line and the file;
:func:`require_valid` refuses to go on while there is any. Training commands
validate first. Audio is read, downmixed and resampled here
(:func:`load_audio`), then cut into clips of the model's window
(:func:`cut_clips`).
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ground.errors import InputError

MANIFEST_NAMES = ("manifest.jsonl", "manifest.csv")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class PairedItem:
    """One manifest row: an image, the audio that goes with it, and where it is used."""

    line: int
    image: Path
    audio: Path
    split: str
    caption: str = ""

    def relative(self, root: Path) -> str:
        """The audio path relative to the data folder (stable cache and split key)."""
        try:
            return str(self.audio.relative_to(root))
        except ValueError:
            return str(self.audio)


@dataclass
class DatasetReport:
    """What :func:`validate_dataset` found: the usable items and every problem."""

    manifest: Path
    items: list[PairedItem] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    audio_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self) -> dict[str, int]:
        """Items per split."""
        return {split: sum(item.split == split for item in self.items) for split in SPLITS}


def find_manifest(data_dir: Path) -> Path:
    """``manifest.jsonl`` or ``manifest.csv`` in ``data_dir``; InputError naming both."""
    if not data_dir.is_dir():
        raise InputError(f"data folder {data_dir} does not exist")
    for name in MANIFEST_NAMES:
        if (data_dir / name).is_file():
            return data_dir / name
    raise InputError(f"data folder {data_dir} has no manifest: expected "
                     f"{' or '.join(MANIFEST_NAMES)} (fields: image, audio, optional caption, "
                     f"optional split)")


def _rows(manifest: Path) -> list[tuple[int, dict[str, str]]]:
    """(line number, fields) per manifest row; InputError naming the line on a bad row."""
    try:
        text = manifest.read_text(encoding="utf-8-sig")  # a spreadsheet's CSV starts with a BOM
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"unreadable manifest {manifest}: {error}") from error
    rows: list[tuple[int, dict[str, str]]] = []
    if manifest.suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"{manifest} line {number}: not JSON ({error})") from error
            if not isinstance(data, dict):
                raise InputError(f"{manifest} line {number}: expected an object, got "
                                 f"{type(data).__name__}")
            captions = data.get("captions", data.get("caption", ""))
            if isinstance(captions, list):
                captions = " | ".join(str(c) for c in captions)
            rows.append((number, {**{k: str(v) for k, v in data.items()},
                                  "caption": str(captions)}))
        return rows
    reader = csv.DictReader(text.splitlines())
    fields = set(reader.fieldnames or ())
    if not {"image", "audio"} <= fields:
        raise InputError(f"{manifest}: expected columns image and audio (optional caption, "
                         f"split), got {sorted(fields)}")
    for row in reader:
        # DictReader's line_num counts the header: the row's own line in the file.
        caption = row.get("caption") or row.get("captions") or ""
        rows.append((reader.line_num, {**{k: (v or "") for k, v in row.items() if k},
                                       "caption": caption}))
    return rows


def hashed_split(key: str, val_fraction: float) -> str:
    """A stable train/val assignment from a path: the same file lands in the same split."""
    digest = hashlib.sha256(key.encode()).digest()
    return "val" if int.from_bytes(digest[:8], "big") / 2**64 < val_fraction else "train"


def read_manifest(data_dir: Path, val_fraction: float = 0.1) -> tuple[Path, list[PairedItem],
                                                                       list[str]]:
    """Parse the manifest: items, and the problems of rows that cannot become items."""
    manifest = find_manifest(data_dir)
    items: list[PairedItem] = []
    problems: list[str] = []
    for line, row in _rows(manifest):
        where = f"{manifest.name} line {line}"
        image, audio = row.get("image", "").strip(), row.get("audio", "").strip()
        if not image or not audio:
            problems.append(f"{where}: expected both image and audio, got image={image!r} "
                            f"audio={audio!r}")
            continue
        split = row.get("split", "").strip().lower()
        if split and split not in SPLITS:
            problems.append(f"{where}: split must be one of {', '.join(SPLITS)}, got {split!r}")
            continue
        item = PairedItem(line=line, image=data_dir / image, audio=data_dir / audio,
                          split=split or hashed_split(audio, val_fraction),
                          caption=row.get("caption", ""))
        items.append(item)
    if not items and not problems:
        problems.append(f"{manifest.name}: no rows")
    return manifest, items, problems


def audio_duration(path: Path) -> float:
    """Seconds of audio in ``path`` (header only); raises on an unreadable file."""
    import soundfile

    info = soundfile.info(str(path))
    if info.samplerate <= 0:
        raise ValueError(f"sample rate {info.samplerate}")
    return float(info.frames) / float(info.samplerate)


#: soundfile subtypes that store floating-point samples: the only ones that can hold NaN or
#: inf (integer PCM and the compressed codecs decode to finite values).
FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})
#: Frames read at a time when scanning a float file for non-finite samples.
SCAN_BLOCK = 1 << 16


def nonfinite_samples(path: Path) -> int:
    """NaN or inf samples in ``path`` (0 for formats that cannot hold them); raises when
    unreadable. Read in blocks, so a long file costs no more memory than a short one."""
    import soundfile

    if soundfile.info(str(path)).subtype not in FLOAT_SUBTYPES:
        return 0
    count = 0
    for block in soundfile.blocks(str(path), blocksize=SCAN_BLOCK, dtype="float32",
                                  always_2d=True):
        count += int(block.size - np.count_nonzero(np.isfinite(block)))
    return count


def nonfinite_problem(path: Path, count: int) -> str:
    """The one wording of a non-finite audio file, in validate-data and in training."""
    return (f"audio {path} has {count} non-finite sample(s) (NaN or inf): expected finite "
            f"samples")


def validate_dataset(data_dir: Path, min_seconds: float, val_fraction: float = 0.1,
                     check_images: bool = True) -> DatasetReport:
    """Check every manifest row: files exist, images decode, audio opens, is long enough
    and holds only finite samples."""
    import cv2

    manifest, items, problems = read_manifest(data_dir, val_fraction)
    report = DatasetReport(manifest=manifest, problems=problems)
    for item in items:
        where = f"{manifest.name} line {item.line}"
        bad = False
        if not item.image.is_file():
            report.problems.append(f"{where}: image {item.image} is missing")
            bad = True
        elif check_images and cv2.imread(str(item.image), cv2.IMREAD_COLOR) is None:
            report.problems.append(f"{where}: image {item.image} is unreadable "
                                   f"(not an image cv2 can decode)")
            bad = True
        if not item.audio.is_file():
            report.problems.append(f"{where}: audio {item.audio} is missing")
            bad = True
        else:
            try:
                seconds = audio_duration(item.audio)
                nonfinite = nonfinite_samples(item.audio)
            except Exception as error:  # soundfile raises LibsndfileError, RuntimeError...
                report.problems.append(f"{where}: audio {item.audio} is unreadable ({error})")
                bad = True
            else:
                if seconds < min_seconds:
                    report.problems.append(
                        f"{where}: audio {item.audio} is too short: expected at least "
                        f"{min_seconds:g} s (one clip), got {seconds:.3f} s")
                    bad = True
                elif nonfinite:
                    report.problems.append(f"{where}: {nonfinite_problem(item.audio, nonfinite)}")
                    bad = True
                else:
                    report.audio_seconds += seconds
        if not bad:
            report.items.append(item)
    if report.ok and not any(item.split == "train" for item in report.items):
        report.problems.append(f"{manifest.name}: no rows in the train split")
    return report


def require_valid(report: DatasetReport, limit: int = 20) -> None:
    """Raise InputError listing the problems (the first ``limit``) when there are any."""
    if report.ok:
        return
    shown = report.problems[:limit]
    more = len(report.problems) - len(shown)
    tail = f"\n  ... and {more} more" if more else ""
    raise InputError(f"dataset {report.manifest.parent} has {len(report.problems)} "
                     f"problem(s); fix them before training:\n  " + "\n  ".join(shown) + tail)


def load_audio(path: Path, sample_rate: int) -> np.ndarray:
    """Mono float32 audio at ``sample_rate`` (channels averaged, resampled with soxr HQ)."""
    import soundfile
    import soxr

    try:
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as error:  # soundfile's error types vary by version
        raise InputError(f"unreadable audio {path}: {error}") from error
    nonfinite = int(audio.size - np.count_nonzero(np.isfinite(audio)))
    if nonfinite:  # NaN would reach the VAE, the latent cache and the loss
        raise InputError(nonfinite_problem(path, nonfinite))
    mono = audio.mean(axis=1)
    if rate != sample_rate:
        mono = soxr.resample(mono, rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def cut_clips(audio: np.ndarray, clip_samples: int, max_clips: int = 0) -> np.ndarray:
    """Consecutive, non-overlapping clips (clips, clip_samples); the remainder is dropped."""
    count = len(audio) // clip_samples
    if max_clips:
        count = min(count, max_clips)
    if count < 1:
        raise ValueError(f"audio of {len(audio)} samples is shorter than one clip "
                         f"({clip_samples} samples)")
    return audio[:count * clip_samples].reshape(count, clip_samples)
