"""Training faults found by the offline audit: non-finite audio and caches (6), --out equal to
the source model folder (7), make-tone-dataset over an existing dataset (8). Each is refused
before any caching or training, with one line naming the file or folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="needs the diffusion extra, which make test installs")
pytest.importorskip("diffusers", reason="needs the diffusion extra, which make test installs")

from click.testing import CliRunner  # noqa: E402

from engine.generators.diffusion.model import load_model  # noqa: E402
from engine.generators.diffusion.testing import NUMPY_COPY_WARNING  # noqa: E402
from ground.errors import InputError  # noqa: E402
from installation.cli import cli  # noqa: E402
from training.cache import build_training_data  # noqa: E402
from training.data import validate_dataset  # noqa: E402
from training.distill import DistillConfig, distill  # noqa: E402
from training.features import make_encoder  # noqa: E402
from training.projection import ProjectionConfig, train_projection  # noqa: E402
from training.testing import breakable_tone_dataset  # noqa: E402

pytestmark = pytest.mark.filterwarnings(NUMPY_COPY_WARNING)

PROJECTION = ProjectionConfig(steps=1, batch_size=2, clip_s=0.32, validate_every=0,
                              checkpoint_every=0, log_every=1, device="cpu")
DISTILL = DistillConfig(steps=1, batch_size=2, clip_s=0.32, guidance_embedding_dim=32,
                        validate_every=0, checkpoint_every=0, log_every=1, device="cpu")


def small_dataset(tmp_path: Path, count: int = 4) -> Path:
    return breakable_tone_dataset(tmp_path, count)


def poison(path: Path, value: float) -> None:
    """Rewrite ``path`` as float WAV with one sample set to ``value`` (NaN or inf)."""
    import soundfile

    audio, rate = soundfile.read(str(path), dtype="float32")
    audio[len(audio) // 2] = value
    soundfile.write(str(path), audio, rate, subtype="FLOAT")


# -- 6: non-finite audio and cache entries -------------------------------------------------


def test_validate_data_names_every_audio_file_with_nan_or_inf(tmp_path: Path) -> None:
    data = small_dataset(tmp_path)
    poison(data / "audio" / "0001.wav", float("nan"))
    poison(data / "audio" / "0002.wav", float("-inf"))
    report = validate_dataset(data, 0.32)
    bad = [p for p in report.problems if "non-finite" in p]
    assert len(bad) == 2, report.problems
    assert "0001.wav has 1 non-finite sample(s)" in bad[0] and "0002.wav" in bad[1]
    assert len(report.items) == 2
    result = CliRunner().invoke(cli, ["validate-data", str(data)])
    assert result.exit_code != 0 and "0001.wav" in result.output and "0002.wav" in result.output
    assert "no problems" not in result.output and "Traceback" not in result.output


def test_train_projection_refuses_nan_audio_before_caching(
        tmp_path: Path, training_model_folder: Path) -> None:
    data = small_dataset(tmp_path)
    poison(data / "audio" / "0000.wav", float("nan"))
    with pytest.raises(InputError, match=r"0000\.wav has 1 non-finite sample"):
        train_projection(training_model_folder, data, tmp_path / "out", PROJECTION,
                         progress=False)
    assert not (data / ".art2mus-cache").exists()
    assert not (tmp_path / "out").exists()


def test_the_cache_never_stores_non_finite_values(tmp_path: Path, training_model_folder: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    model = load_model(training_model_folder)
    data = small_dataset(tmp_path)
    items = validate_dataset(data, 0.32).items
    encoder = make_encoder("descriptor")
    cache = tmp_path / "cache"
    # Audio that slipped past validation (a caller that skips it) is refused when read.
    poison(items[0].audio, float("inf"))
    with pytest.raises(InputError, match=r"0000\.wav has 1 non-finite sample"):
        build_training_data(model, items, encoder, cache, 0.32)
    assert not list(cache.glob("latents-*/*.safetensors"))
    # Latents that come out non-finite (an overflowing VAE) are refused naming the audio.
    import training.cache as cache_module

    def nan_encoder(*args, **kwargs):  # type: ignore[no-untyped-def]
        return torch.full((1, 8, 4, 4), float("nan")), torch.ones(1, 8, 4, 4)

    monkeypatch.setattr(cache_module, "encode_clips", nan_encoder)
    with pytest.raises(InputError, match=r"VAE latents of .*0001\.wav: expected finite values"):
        build_training_data(model, items[1:], encoder, cache, 0.32)
    assert not list(cache.glob("latents-*/*.safetensors"))


def test_a_cached_entry_with_nan_is_computed_again(tmp_path: Path,
                                                   training_model_folder: Path) -> None:
    from safetensors.torch import load_file, save_file

    model = load_model(training_model_folder)
    data = small_dataset(tmp_path)
    items = validate_dataset(data, 0.32).items
    encoder = make_encoder("descriptor")
    cache = tmp_path / "cache"
    first = build_training_data(model, items, encoder, cache, 0.32)
    # An older version cached NaN latents and an inf embedding.
    latent = sorted(first.latent_dir.glob("*.safetensors"))[0]
    entry = load_file(str(latent))
    save_file({"mean": torch.full_like(entry["mean"], float("nan")), "std": entry["std"]},
              str(latent))
    embedding = sorted(first.embedding_dir.glob("*.safetensors"))[0]
    vector = load_file(str(embedding))["embedding"]
    save_file({"embedding": torch.full_like(vector, float("inf"))}, str(embedding))
    again = build_training_data(model, items, encoder, cache, 0.32)
    assert (again.latent_stats.misses, again.latent_stats.hits) == (1, len(items) - 1)
    assert (again.embedding_stats.misses, again.embedding_stats.hits) == (1, len(items) - 1)
    assert torch.equal(again.latent_mean, first.latent_mean)
    assert torch.equal(again.embeddings, first.embeddings)
    assert bool(torch.isfinite(load_file(str(latent))["mean"]).all())


# -- 7: --out equal to the source model folder ---------------------------------------------


def test_out_equal_to_the_source_folder_is_refused_before_any_work(
        tmp_path: Path, training_model_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "model"
    shutil.copytree(training_model_folder, model)
    data = small_dataset(tmp_path)
    link = tmp_path / "link"
    link.symlink_to(model, target_is_directory=True)
    before = sorted(p.name for p in model.iterdir())
    with pytest.raises(InputError, match=r"--out in train-projection: expected a folder other "
                                         r"than the source model folder \(--model "):
        train_projection(model, data, link, PROJECTION, progress=False)
    with pytest.raises(InputError, match=r"--out in distill: .*\(--teacher "):
        distill(link, data, model, DISTILL, progress=False)
    monkeypatch.chdir(tmp_path)
    for args in (["train-projection", "--model", str(model), "--out", "model"],
                 ["distill", "--teacher", "link", "--out", "./model/../model"]):
        result = CliRunner().invoke(cli, [*args, "--data", str(data), "--train-steps", "1",
                                          "--clip-s", "0.32", "--device", "cpu", "--quiet"])
        assert result.exit_code == 3, result.output
        assert "expected a folder other than the source model folder" in result.output
        assert "Traceback" not in result.output
    assert sorted(p.name for p in model.iterdir()) == before  # no training/ written
    assert not (data / ".art2mus-cache").exists()  # refused before caching


# -- 8: make-tone-dataset over an existing dataset -----------------------------------------


def test_make_tone_dataset_refuses_a_non_empty_folder_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "d"
    args = ["make-tone-dataset", str(out), "--count", "3", "--val", "1", "--test", "1",
            "--seconds", "0.05"]
    assert CliRunner().invoke(cli, args).exit_code == 0
    manifest = (out / "manifest.csv").read_text()
    again = CliRunner().invoke(cli, [*args[:3], "4"] + args[4:])
    assert again.exit_code == 2, again.output
    assert "'OUT_DIR'" in again.output and "expected an empty or new folder" in again.output
    assert str(out) in again.output and "Traceback" not in again.output
    assert (out / "manifest.csv").read_text() == manifest
    assert len(list((out / "audio").iterdir())) == 3
    forced = CliRunner().invoke(cli, [*args[:3], "4"] + args[4:] + ["--force"])
    assert forced.exit_code == 0, forced.output
    assert len((out / "manifest.csv").read_text().splitlines()) == 5
    empty = tmp_path / "empty"
    empty.mkdir()
    assert CliRunner().invoke(cli, ["make-tone-dataset", str(empty), *args[2:]]).exit_code == 0
