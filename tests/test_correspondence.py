"""The correspondence benchmark (issue 16): its measures, and the abstraction floor on real works.

The measures are checked on signals whose answer is known (a sine's centroid, a
scale's pitch classes); the benchmark itself runs on three real artworks, and
the abstraction feature's Spearman rho with a person's ratings is held above a
floor on ``../shared/data/artworks`` (skipped where that folder is absent).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from correspondence import (  # noqa: E402
    band_spectrum,
    correspondence,
    main,
    note_statistics,
    spectral_centroid,
)

ARTWORKS = ROOT / "../shared/data/artworks"
needs_artworks = pytest.mark.skipif(
    not (ARTWORKS / "labels.json").is_file(),
    reason=f"the rated artworks are not here ({ARTWORKS.resolve()}): ../shared/data beside "
           f"the checkout holds them",
)
#: The feature (spread and edge sharpness) measured 0.65 on the whole images; the spread
#: alone 0.56-0.60. A floor under the measure, at the issue's target: the sharpness cue
#: taken out fails it.
ABSTRACTION_RHO_FLOOR = 0.6


def test_spectral_centroid_of_a_sine_is_its_frequency() -> None:
    rate = 48_000
    t = np.arange(rate) / rate
    low = np.sin(2 * np.pi * 440.0 * t).astype(np.float32)
    high = np.sin(2 * np.pi * 3000.0 * t).astype(np.float32)
    assert spectral_centroid(np.stack([low, low], axis=1), rate) == pytest.approx(440.0, rel=0.1)
    assert spectral_centroid(high, rate) == pytest.approx(3000.0, rel=0.05)
    assert spectral_centroid(np.zeros(rate, np.float32), rate) == 0.0


def test_band_spectrum_ignores_loudness_and_tells_timbres_apart() -> None:
    rate = 48_000
    noise = np.random.default_rng(0).normal(0, 0.1, rate)
    sine = np.sin(2 * np.pi * 440.0 * np.arange(rate) / rate)
    assert np.allclose(band_spectrum(noise, rate), band_spectrum(noise * 0.1, rate), atol=1e-6)
    assert np.sqrt(np.mean((band_spectrum(noise, rate) - band_spectrum(sine, rate)) ** 2)) > 10


def test_note_statistics_of_a_scale_and_of_a_chromatic_run() -> None:
    def rows(pitches: list[int], channel: int = 1) -> np.ndarray:
        return np.array([[i * 100, 100, p, 80, 0, channel] for i, p in enumerate(pitches)],
                        np.int32)

    c_major = rows([60, 62, 64, 65, 67, 69, 71])
    mean, entropy, outside = note_statistics(c_major, 0, "ionian")
    assert mean == pytest.approx(65.43, abs=0.01)
    assert entropy == pytest.approx(math.log2(7) / math.log2(12))
    assert outside == 0.0
    chromatic = np.concatenate([rows(list(range(60, 72))), rows([36] * 50, channel=9)])
    _, entropy, outside = note_statistics(chromatic, 0, "ionian")  # drums left out
    assert entropy == pytest.approx(1.0) and outside == pytest.approx(5 / 12)
    assert note_statistics(np.zeros((0, 6), np.int32), 0, "ionian") == (0.0, 0.0, 0.0)


@needs_artworks
def test_benchmark_runs_on_three_real_artworks(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    labels = json.loads((ARTWORKS / "labels.json").read_text())
    chosen = ["en_campo_gris.jpg", "mondrian_composition.jpg", "velazquez_francesco_d_este.jpg"]
    for name in chosen:  # a temporary folder of links: the data stays where it is
        (tmp_path / name).symlink_to((ARTWORKS / name).resolve())
    (tmp_path / "labels.json").write_text(json.dumps({n: labels[n] for n in chosen}))

    assert main([str(tmp_path), "--seconds", "4", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["works"] == result["rated"] == 3
    assert set(result["rho"]) == {
        "warmth_centroid", "brightness_mean_pitch", "rating_experimentalness",
        "rating_pitch_class_entropy", "rating_outside_key", "abstraction_rating"}
    assert set(result["between_within"]) == {"between_db", "within_db", "ratio",
                                             "upper_from_hz", "upper_ratio"}
    assert result["between_within"]["ratio"] > 0
    for work in result["artworks"]:
        assert work["image"] in chosen and work["centroid_hz"] > 0 and work["mean_pitch"] > 30
        assert 0.0 <= work["experimentalness"] <= 1.0 and 0.0 <= work["abstraction"] <= 1.0

    assert main([str(tmp_path), "--seconds", "4"]) == 0
    assert "| abstract rating -> experimentalness |" in capsys.readouterr().out


def test_benchmark_refuses_a_missing_folder(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nowhere")]) == 2
    assert "artworks folder" in capsys.readouterr().err
    with pytest.raises(ValueError, match="expected 2 or more images, got 0"):
        correspondence(tmp_path)


@needs_artworks
def test_abstraction_feature_follows_the_ratings_on_real_artworks() -> None:
    from scipy.stats import spearmanr

    from capture.descriptor import describe_image
    from capture.images import read_image

    labels = json.loads((ARTWORKS / "labels.json").read_text())
    names = sorted(labels)
    assert len(names) >= 40
    feature = [describe_image(read_image(ARTWORKS / n)).features["abstraction"] for n in names]
    rho = spearmanr(feature, [labels[n]["abstract"] for n in names]).statistic
    assert rho >= ABSTRACTION_RHO_FLOOR, f"rho(abstraction, rating) = {rho:.3f}"


@needs_artworks
def test_the_music_follows_the_paintings_on_real_artworks() -> None:
    # The whole table on the 42 rated works at the render's default seed: deterministic
    # (features are read to 4 decimals), so these are floors under known figures (0.83,
    # 0.85, 0.61, 4.32 when written), not chances. The bass on the chords' function roots
    # and the paced outside colour taken out fail the last two.
    result = correspondence(ARTWORKS, seconds=20.0, seed=0)
    rho, ratio = result["rho"], result["between_within"]["ratio"]
    assert rho["warmth_centroid"] >= 0.7, rho
    assert rho["brightness_mean_pitch"] >= 0.8, rho
    assert rho["rating_experimentalness"] >= 0.58, rho
    assert ratio >= 3.0, result["between_within"]
