"""A generated paired dataset where the image determines the sound (a fake, shipped).

Each item has one hidden attribute ``a`` in [0, 1]. The image is a textured
colour field whose lightness rises with ``a`` (a random tint and texture so
no two images are alike); the audio is a tone whose pitch rises with ``a``,
log-spaced from ``low_hz`` to ``high_hz`` (so evenly spread over mel bins),
with a weak second harmonic, a random level and a faint noise floor, written
at 22.05 kHz so loading exercises the resampler. Tests and demos train on
it and check that generated audio follows the image in this direction.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class SyntheticItem:
    """One written pair and its hidden attribute."""

    image: Path
    audio: Path
    attribute: float
    split: str
    frequency_hz: float


def tone_frequency(attribute: float, low_hz: float = 150.0, high_hz: float = 3000.0) -> float:
    """Pitch of an attribute: log-spaced between ``low_hz`` and ``high_hz``."""
    return float(low_hz * (high_hz / low_hz) ** attribute)


def tone_image(attribute: float, rng: np.random.Generator, side: int = 64) -> np.ndarray:
    """A BGR uint8 colour field, lighter for a higher attribute, with a random tint/texture."""
    import cv2

    level = 30.0 + 190.0 * attribute
    tint = rng.uniform(-8.0, 8.0, size=3)
    coarse = rng.normal(0.0, 10.0, size=(side // 8, side // 8, 3)).astype(np.float32)
    texture = cv2.resize(coarse, (side, side), interpolation=cv2.INTER_CUBIC)
    image = level + tint[None, None, :] + texture
    return np.clip(image, 0, 255).astype(np.uint8)


def tone_audio(attribute: float, seconds: float, rng: np.random.Generator,
               sample_rate: int = 22050) -> np.ndarray:
    """A steady tone at :func:`tone_frequency` with a weak harmonic and a noise floor."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    f = tone_frequency(attribute)
    phase = rng.uniform(0, 2 * np.pi, size=2)
    level = rng.uniform(0.3, 0.5)
    tone = np.sin(2 * np.pi * f * t + phase[0]) + 0.25 * np.sin(4 * np.pi * f * t + phase[1])
    audio = level * tone + 0.005 * rng.standard_normal(len(t))
    return audio.astype(np.float32)


def write_tone_dataset(folder: str | Path, count: int, seconds: float, seed: int = 0,
                       val_count: int = 0, test_count: int = 0,
                       sample_rate: int = 22050) -> list[SyntheticItem]:
    """Write ``count`` pairs (images/, audio/, manifest.csv) with evenly spread attributes.

    Attributes are a shuffled even grid over [0, 1] (plus jitter), so every
    split covers the whole range. The last ``val_count`` + ``test_count``
    items go to ``val`` and ``test``.
    """
    import cv2
    import soundfile

    root = Path(folder)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    grid = (np.arange(count) + rng.uniform(0.2, 0.8, count)) / count
    attributes = rng.permutation(grid)
    items = []
    for index, attribute in enumerate(attributes):
        split = ("test" if index >= count - test_count
                 else "val" if index >= count - test_count - val_count else "train")
        image = root / "images" / f"{index:04d}.png"
        audio = root / "audio" / f"{index:04d}.wav"
        cv2.imwrite(str(image), tone_image(float(attribute), rng))
        soundfile.write(str(audio), tone_audio(float(attribute), seconds, rng, sample_rate),
                        sample_rate)
        items.append(SyntheticItem(image, audio, float(attribute), split,
                                   tone_frequency(float(attribute))))
    with (root / "manifest.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "audio", "caption", "split", "attribute"])
        for item in items:
            writer.writerow([item.image.relative_to(root), item.audio.relative_to(root),
                             f"a tone at {item.frequency_hz:.0f} Hz", item.split,
                             f"{item.attribute:.4f}"])
    return items
