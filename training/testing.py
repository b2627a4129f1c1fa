"""Fixtures for the training tests, shipped with the package: a tiny model to teach, and a
generated tone dataset, each written once under a folder and reused.
"""

from __future__ import annotations

from pathlib import Path

#: The tiny model the training tests teach: descriptor-width embeddings, narrow
#: GPT-2 and support streams (CPU speed), v-prediction (learns in a few hundred steps).
TRAINING_MODEL = dict(embedding_dim=130, lm_width=96, support_width=64,
                      prediction_type="v_prediction")


def tiny_training_model_dir(root: str | Path) -> Path:
    """A tiny model folder for training tests under ``root``, written once and reused."""
    from engine.generators.diffusion.model import SPEC_FILE, make_tiny_model

    folder = Path(root) / "tiny-training-model"
    if not (folder / SPEC_FILE).is_file():
        make_tiny_model(folder, **TRAINING_MODEL)  # type: ignore[arg-type]
    return folder


def tone_dataset_dir(root: str | Path, count: int, seconds: float = 0.32, val_count: int = 0,
                     test_count: int = 0, seed: int = 0) -> Path:
    """A generated tone dataset under ``root`` (keyed by its options), written once."""
    from training.synthetic import write_tone_dataset

    folder = Path(root) / f"tones-{count}-{seconds}-{val_count}-{test_count}-{seed}"
    if not (folder / "manifest.csv").is_file():
        write_tone_dataset(folder, count, seconds, seed, val_count, test_count)
    return folder


def breakable_tone_dataset(tmp_path: Path, count: int, seconds: float = 0.32) -> Path:
    """A fresh copy (``tmp_path/data``) of a small tone dataset, which a test may break;
    the dataset itself is written once beside ``tmp_path`` and shared."""
    import shutil

    source = tone_dataset_dir(tmp_path.parent / "shared-datasets", count, seconds)
    target = tmp_path / "data"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".art2mus-cache"))
    return target
