"""Training faults found by the offline audit: non-finite audio and caches (6), --out equal to
the source model folder (7), make-tone-dataset over an existing dataset (8), --resume from a
checkpoint that does not fit or cannot be read (9). Each is refused before any caching or
training (9: before anything is loaded), with one line naming the file or folder."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
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
from training.loop import Checkpoints, RunConfig, Trainer  # noqa: E402
from training.projection import ProjectionConfig, train_projection  # noqa: E402
from training.testing import TRAINING_MODEL, breakable_tone_dataset, tone_dataset_dir  # noqa: E402

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


# -- 9: --resume from a checkpoint that does not fit or cannot be read ---------------------


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread: on a shared 2-core runner, two threads spin against each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def projection_run(tmp_path_factory: pytest.TempPathFactory, training_model_folder: Path,
                   one_thread: None) -> tuple[Path, Path, Path]:
    """(run folder, dataset, cache) of a one-step train-projection run (one checkpoint) of the
    tiny training model (GPT-2 width 96). Tests that break it work on a copy."""
    root = tmp_path_factory.mktemp("resume-faults")
    data = tone_dataset_dir(tmp_path_factory.getbasetemp() / "shared-datasets", 4, 0.32)
    train_projection(training_model_folder, data, root / "run", PROJECTION,
                     cache_dir=root / "cache", progress=False)
    return root / "run", data, root / "cache"


def copy_run(run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of ``run`` that a test may break, and its one checkpoint folder."""
    shutil.copytree(run, tmp_path / "run")
    [checkpoint] = sorted((tmp_path / "run" / "training" / "checkpoints").glob("step-*"))
    return tmp_path / "run", checkpoint


def test_resume_with_a_model_of_another_width_names_the_first_shape_that_differs(
        tmp_path: Path, projection_run: tuple[Path, Path, Path]) -> None:
    from engine.generators.diffusion.model import make_tiny_model

    run, data, cache = projection_run
    wide = make_tiny_model(tmp_path / "wide", **{**TRAINING_MODEL,  # type: ignore[arg-type]
                                                 "lm_width": 192})
    before = {p.name: p.read_bytes() for p in (run / "training").rglob("*") if p.is_file()}
    result = CliRunner().invoke(cli, [
        "train-projection", "--model", str(wide), "--data", str(data), "--out", str(run),
        "--cache", str(cache), "--clip-s", "0.32", "--train-steps", "2", "--batch-size", "2",
        "--validate-every", "0", "--checkpoint-every", "0", "--log-every", "1",
        "--device", "cpu", "--quiet", "--resume"])
    assert result.exit_code == 3, result.output
    assert "Traceback" not in result.output
    message = " ".join(result.output.split())  # one line, whatever the terminal width
    assert f"--resume in train-projection: checkpoint {run}" in message
    assert "does not fit this model: conditioner." in message
    assert "has shape [96, " in message
    assert "in the checkpoint, expected [192, " in message and f"] (--model {wide});" in message
    assert "resume with the same command and model folder as the run that wrote it " \
           "(--model " in message and "or start a new --out" in message
    after = {p.name: p.read_bytes() for p in (run / "training").rglob("*") if p.is_file()}
    assert after == before  # nothing written, not even config.json


def test_distill_resume_into_a_projection_run_names_the_command_and_the_keys(
        tmp_path: Path, training_model_folder: Path,
        projection_run: tuple[Path, Path, Path]) -> None:
    run, checkpoint = copy_run(projection_run[0], tmp_path)
    data, cache = projection_run[1:]
    with pytest.raises(InputError, match=r"--resume in distill: checkpoint .*step-00000001 was "
                                         r"written by train-projection \(--model .*\), expected "
                                         r"one written by distill: resume it with "
                                         r"train-projection, or give distill a new --out"):
        distill(training_model_folder, data, run, DISTILL, cache_dir=cache, resume=True,
                progress=False)
    # A checkpoint written before checkpoints recorded their command: the weights tell.
    meta = json.loads((checkpoint / "meta.json").read_text())
    del meta["command"], meta["source"]
    (checkpoint / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(InputError, match=r"does not fit this distill run: \d+ weight\(s\) "
                                         r"missing \(student\..* and \d+ more\); \d+ "
                                         r"unexpected \(conditioner\..*start a new --out"):
        distill(training_model_folder, data, run, DISTILL, cache_dir=cache, resume=True,
                progress=False)


def test_a_truncated_checkpoint_is_named_not_a_traceback(
        tmp_path: Path, training_model_folder: Path,
        projection_run: tuple[Path, Path, Path]) -> None:
    run, checkpoint = copy_run(projection_run[0], tmp_path)
    data, cache = projection_run[1:]
    state = checkpoint / "state.pt"
    state.write_bytes(state.read_bytes()[:state.stat().st_size // 2])
    with pytest.raises(InputError, match=rf"--resume in train-projection: checkpoint file "
                                         rf"{state} is unreadable \(.*\): expected the state.pt "
                                         rf"a checkpoint writes .*remove {checkpoint} to resume "
                                         rf"from the checkpoint before it, or start a new --out"):
        train_projection(training_model_folder, data, run, PROJECTION, cache_dir=cache,
                         resume=True, progress=False)


def test_every_broken_checkpoint_file_is_named(
        tmp_path: Path, projection_run: tuple[Path, Path, Path]) -> None:
    """Empty, truncated, text or another pickle in each file: an InputError naming the file
    (state.pt is read with weights_only=True, so a pickled object is refused, not run)."""
    _, checkpoint = copy_run(projection_run[0], tmp_path)
    assert Checkpoints.load(checkpoint, "train-projection")[2]["step"] == 1
    originals = {p.name: p.read_bytes() for p in checkpoint.iterdir()}

    def truncated(name: str) -> bytes:
        return originals[name][:len(originals[name]) // 2]

    def pickled(value: object) -> bytes:
        torch.save(value, tmp_path / "value.pt")
        return (tmp_path / "value.pt").read_bytes()

    cases = [
        ("state.pt", b"", r"state\.pt is empty \(0 bytes\)"),
        ("state.pt", b"step 12, loss 0.5\n", r"state\.pt is unreadable \("),
        ("state.pt", pickled({"config": Path("x")}), r"state\.pt is unreadable \(Unpickling"),
        ("state.pt", pickled(torch.zeros(3)), r"expected state\.pt to hold optimizer, "
                                              r"lr_schedule, config, rng, got Tensor"),
        ("weights.safetensors", b"", r"weights\.safetensors is empty"),
        ("weights.safetensors", truncated("weights.safetensors"),
         r"weights\.safetensors is unreadable \(SafetensorError"),
        ("meta.json", b"not json", r"meta\.json is unreadable \(JSONDecodeError"),
        ("meta.json", b"{}", r"expected meta\.json to hold the step .*got None"),
        ("meta.json", None, r"meta\.json is missing"),
    ]
    for name, content, expected in cases:
        for other, data in originals.items():
            (checkpoint / other).write_bytes(data)
        if content is None:
            (checkpoint / name).unlink()
        else:
            (checkpoint / name).write_bytes(content)
        with pytest.raises(InputError, match=rf"--resume in train-projection: checkpoint "
                                             rf"(file )?{checkpoint}.*{expected}.*start a new "
                                             rf"--out"):
            Checkpoints.load(checkpoint, "train-projection")


def test_an_optimizer_state_of_other_shapes_is_refused_before_loading(tmp_path: Path) -> None:
    """torch checks only the number of parameters per group; the shapes are ours to check."""
    config = RunConfig(steps=1, batch_size=1, device="cpu")

    def open_run(width: int, resume: bool) -> Trainer:
        layer = torch.nn.Linear(width, 2)
        return Trainer.open("train-projection", config, tmp_path, {"layer": layer},
                            list(layer.parameters()), torch.device("cpu"), resume=resume,
                            resume_fields=(), record={}, source="--model m")

    trainer = open_run(3, False)
    trainer.optimizer.zero_grad()
    trainer.modules["layer"](torch.ones(1, 3)).sum().backward()
    trainer.optimizer.step()
    trainer.save(1, 0.5)
    assert open_run(3, True).start == 1
    checkpoint = trainer.checkpoints.latest()
    state = torch.load(checkpoint / "state.pt", weights_only=True)
    state["optimizer"]["state"][0]["exp_avg"] = torch.zeros(2, 4)
    torch.save(state, checkpoint / "state.pt")
    with pytest.raises(InputError, match=r"checkpoint .*step-00000001 does not fit this run's "
                                         r"optimiser state \(ValueError: exp_avg of parameter 0 "
                                         r"has shape \[2, 4\], expected \[2, 3\]\)"):
        open_run(3, True)
