"""Training data: validation names files, log-mel fits the VAE, caches are reused and invalidated,
and the shared pieces (batch order, schedule algebra, guidance embedding) hold."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the diffusion extra, which make test installs")
pytest.importorskip("diffusers", reason="needs the diffusion extra, which make test installs")

from cli_refusals import refused  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from engine.generators.diffusion.model import load_model  # noqa: E402
from engine.generators.diffusion.samplers import guidance_embedding, guidance_embeddings  # noqa: E402
from engine.generators.diffusion.testing import NUMPY_COPY_WARNING  # noqa: E402
from ground.errors import InputError  # noqa: E402
from installation.cli import cli  # noqa: E402
from training.cache import build_training_data  # noqa: E402
from training.data import (  # noqa: E402
    read_manifest,
    require_valid,
    validate_dataset,
)
from training.features import (  # noqa: E402
    MelConfig,
    log_mel,
    make_encoder,
)
from training.loop import batch_indices  # noqa: E402
from training.objectives import NoiseSchedule  # noqa: E402
from training.projection import ProjectionConfig  # noqa: E402
from training.testing import breakable_tone_dataset  # noqa: E402

pytestmark = pytest.mark.filterwarnings(NUMPY_COPY_WARNING)


@pytest.fixture(scope="module")
def model(training_model_folder: Path):  # type: ignore[no-untyped-def]
    return load_model(training_model_folder)


def small_dataset(tmp_path: Path, count: int = 6) -> Path:
    return breakable_tone_dataset(tmp_path, count)


def test_validate_data_names_every_bad_file(tmp_path: Path, training_model_folder: Path) -> None:
    data = small_dataset(tmp_path)
    (data / "images" / "0000.png").unlink()                      # missing image
    (data / "images" / "0001.png").write_bytes(b"not a png")     # unreadable image
    (data / "audio" / "0002.wav").write_bytes(b"RIFF garbage")   # unreadable audio
    import soundfile

    soundfile.write(str(data / "audio" / "0003.wav"), np.zeros(1000, np.float32), 16000)
    report = validate_dataset(data, min_seconds=0.32)
    text = "\n".join(report.problems)
    assert len(report.problems) == 4, text
    assert "line 2: image" in text and "0000.png is missing" in text
    assert "0001.png is unreadable" in text
    assert "0002.wav is unreadable" in text
    assert "0003.wav is too short: expected at least 0.32 s (one clip), got 0.062 s" in text
    assert len(report.items) == 2
    with pytest.raises(InputError, match="4 problem"):
        require_valid(report)

    result = CliRunner().invoke(cli, ["validate-data", str(data), "--clip-s", "0.32"])
    assert result.exit_code == InputError.exit_code
    for name in ("0000.png", "0001.png", "0002.wav", "0003.wav"):
        assert name in result.output
    # Training commands validate first and refuse before any training.
    result = CliRunner().invoke(cli, [
        "train-projection", "--model", str(training_model_folder), "--data", str(data),
        "--out", str(tmp_path / "out"), "--clip-s", "0.32", "--quiet"])
    assert result.exit_code == InputError.exit_code and "0003.wav" in result.output
    assert not (tmp_path / "out" / "unet").exists()


def test_validate_data_accepts_a_clean_dataset_and_jsonl(tmp_path: Path) -> None:
    data = small_dataset(tmp_path)
    result = CliRunner().invoke(cli, ["validate-data", str(data), "--clip-s", "0.32", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["items"] == 6
    # The same pairs as JSONL, with caption lists and no split column (hashed to train/val).
    (data / "manifest.csv").unlink()
    lines = [json.dumps({"image": f"images/{i:04d}.png", "audio": f"audio/{i:04d}.wav",
                         "captions": ["a tone", "a sine"]}) for i in range(6)]
    (data / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    _, items, problems = read_manifest(data, val_fraction=0.5)
    assert not problems and len(items) == 6
    assert items[0].caption == "a tone | a sine"
    assert {item.split for item in items} <= {"train", "val"}
    assert [i.split for i in items] == [i.split for i in read_manifest(data, 0.5)[1]]


def test_missing_manifest_and_bad_split_are_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no manifest: expected manifest.jsonl or manifest.csv"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.csv").write_text("image,audio,split\na.png,a.wav,training\n")
    _, _, problems = read_manifest(tmp_path)
    assert problems == ["manifest.csv line 2: split must be one of train, val, test, got "
                        "'training'"]
    # a spreadsheet's CSV export starts with a byte-order mark: the header is still read
    (tmp_path / "manifest.csv").write_bytes(b"\xef\xbb\xbfimage,audio,split\n"
                                            b"a.png,a.wav,training\n")
    assert read_manifest(tmp_path)[2] == problems


def test_log_mel_matches_the_vae_and_vocoder_geometry(model) -> None:  # type: ignore[no-untyped-def]
    mel = MelConfig.for_model(model)
    assert (mel.sample_rate, mel.hop, mel.n_mels) == (16000, 160, 64)
    seconds = 0.32
    t = np.arange(int(seconds * 16000)) / 16000
    low, high = (np.sin(2 * np.pi * f * t).astype(np.float32) for f in (300.0, 3000.0))
    frames = log_mel(torch.from_numpy(np.stack([low, high])), mel)
    assert frames.shape == (2, len(t) // mel.hop, mel.n_mels)
    peaks = frames.mean(dim=1).argmax(dim=1).tolist()
    assert peaks[0] < peaks[1]  # the higher tone in a higher mel bin
    with torch.no_grad():
        latents = model.vae.encode(frames[:, None]).latent_dist.mean
    # One latent frame per vae_scale_factor mel frames: ModelSpec's frames per second.
    assert latents.shape[2] == frames.shape[1] // model.vae_scale_factor
    assert latents.shape[2] / seconds == model.spec.latent_frames_per_second
    assert latents.shape[3] == model.latent_bins


def test_caches_are_reused_and_invalidated(tmp_path: Path, training_model_folder: Path,
                                           model) -> None:  # type: ignore[no-untyped-def]
    data = small_dataset(tmp_path)
    items = validate_dataset(data, 0.32).items
    encoder = make_encoder("descriptor")
    cache = tmp_path / "cache"
    first = build_training_data(model, items, encoder, cache, 0.32)
    assert (first.latent_stats.misses, first.embedding_stats.misses) == (6, 6)
    again = build_training_data(model, items, encoder, cache, 0.32)
    assert (again.latent_stats.hits, again.embedding_stats.hits) == (6, 6)
    assert again.latent_stats.misses == again.embedding_stats.misses == 0
    assert torch.equal(first.latent_mean, again.latent_mean)
    assert torch.equal(first.embeddings, again.embeddings)
    assert first.embeddings.shape == (6, 130)

    # An edited audio file is encoded again; the others are reused.
    import soundfile

    audio, rate = soundfile.read(str(items[0].audio), dtype="float32")
    soundfile.write(str(items[0].audio), audio * 0.5, rate)
    edited = build_training_data(model, items, encoder, cache, 0.32)
    assert (edited.latent_stats.misses, edited.latent_stats.hits) == (1, 5)
    assert edited.embedding_stats.hits == 6

    # Another clip length is another cache.
    shorter = build_training_data(model, items, encoder, cache, 0.16)
    assert shorter.latent_stats.misses == 6 and shorter.latent_dir != first.latent_dir
    assert shorter.latent_mean.shape[0] == 12  # two 0.16 s clips per 0.32 s file

    # Another VAE (weights) is another cache; only its scaling_factor is not (the cache is
    # stored before scaling).
    copy = tmp_path / "model-copy"
    shutil.copytree(training_model_folder, copy)
    config_path = copy / "vae" / "config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "scaling_factor": 2.0}))
    rescaled = build_training_data(load_model(copy), items, encoder, cache, 0.32)
    assert rescaled.latent_dir == edited.latent_dir and rescaled.latent_stats.misses == 0
    from safetensors.torch import load_file, save_file

    weights_path = copy / "vae" / "diffusion_pytorch_model.safetensors"
    weights = load_file(str(weights_path))
    name = sorted(weights)[0]
    weights[name] = weights[name] + 0.01
    save_file(weights, str(weights_path))
    changed = build_training_data(load_model(copy), items, encoder, cache, 0.32)
    assert changed.latent_dir != edited.latent_dir and changed.latent_stats.misses == 6


def test_encoder_width_must_match_the_model(tmp_path: Path) -> None:
    from engine.generators.diffusion.testing import tiny_model_dir

    wide = load_model(tiny_model_dir(tmp_path.parent / "wide-model", embedding_dim=1024))
    data = small_dataset(tmp_path)
    with pytest.raises(InputError, match="embedding width 130.*embedding_dim 1024"):
        build_training_data(wide, validate_dataset(data, 0.32).items, make_encoder("descriptor"),
                            tmp_path / "cache", 0.32)
    with pytest.raises(InputError, match="expected 'descriptor' or 'onnx:PATH', got 'clip'"):
        make_encoder("clip")
    with pytest.raises(InputError, match="does not exist"):
        make_encoder(f"onnx:{tmp_path / 'missing.onnx'}")


@pytest.fixture(scope="module")
def onnx_encoder_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CLIP vision tower (130-d, the tiny model's width) exported as a user would."""
    pytest.importorskip("onnxruntime", reason="needs the encoders extra, which make test installs")
    pytest.importorskip("transformers",
                        reason="needs the diffusion extra, which make test installs")
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from capture.encoders import export_clip_vision

    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                              num_attention_heads=4, image_size=40, patch_size=8,
                              projection_dim=130)
    folder = tmp_path_factory.mktemp("tiny-clip")
    CLIPVisionModelWithProjection(config).eval().save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 46}, crop_size={"height": 40, "width": 40},
                       image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.25, 0.3]
                       ).save_pretrained(folder)
    out = tmp_path_factory.mktemp("tiny-clip-export") / "encoder.onnx"
    export_clip_vision(folder, out)
    return out


def test_onnx_encoder_is_captures_and_keys_the_cache(tmp_path: Path, onnx_encoder_path: Path,
                                                     model) -> None:  # type: ignore[no-untyped-def]
    import onnx

    from capture.encoders import OnnxImageEncoder as CaptureOnnx
    from training.features import read_image

    data = small_dataset(tmp_path)
    items = validate_dataset(data, 0.32).items
    encoder = make_encoder(f"onnx:{onnx_encoder_path}")
    assert encoder.width == 130
    capture = CaptureOnnx(onnx_encoder_path)  # what the capture loop publishes at run time
    for item in items:
        image = read_image(item.image)
        ours = encoder(image)
        assert ours.dtype == np.float32 and abs(float(np.linalg.norm(ours)) - 1.0) < 1e-5
        assert np.array_equal(ours, capture.embed(image))

    cache = tmp_path / "cache"
    first = build_training_data(model, items, encoder, cache, 0.32)
    assert first.embedding_stats.misses == 6
    expected = torch.from_numpy(np.stack([capture.embed(read_image(i.image)) for i in items]))
    assert torch.equal(first.embeddings, expected)
    again = build_training_data(model, items, make_encoder(f"onnx:{onnx_encoder_path}"), cache,
                                0.32)
    assert again.embedding_stats.hits == 6 and again.embedding_dir == first.embedding_dir

    # Other preprocessing (the processor config beside the model) is another cache.
    other = tmp_path / "other-preprocessing"
    other.mkdir()
    shutil.copy(onnx_encoder_path, other / "encoder.onnx")
    processor = json.loads(onnx_encoder_path.with_suffix(".preprocessor.json").read_text())
    (other / "encoder.preprocessor.json").write_text(json.dumps(
        {**processor, "image_mean": [0.5, 0.5, 0.5]}))
    shifted = build_training_data(model, items, make_encoder(f"onnx:{other / 'encoder.onnx'}"),
                                  cache, 0.32)
    assert shifted.embedding_dir != first.embedding_dir
    assert shifted.embedding_stats.misses == 6
    assert not torch.equal(shifted.embeddings, first.embeddings)

    # Other weights (same name, same preprocessing) are another cache too.
    reweighted = tmp_path / "other-weights"
    reweighted.mkdir()
    graph = onnx.load(str(onnx_encoder_path))
    tensor = next(t for t in graph.graph.initializer
                  if t.data_type == onnx.TensorProto.FLOAT and np.prod(t.dims) > 100)
    values = onnx.numpy_helper.to_array(tensor)
    tensor.CopyFrom(onnx.numpy_helper.from_array(values * 1.5, tensor.name))
    onnx.save(graph, str(reweighted / "encoder.onnx"))
    shutil.copy(onnx_encoder_path.with_suffix(".preprocessor.json"),
                reweighted / "encoder.preprocessor.json")
    changed = build_training_data(model, items,
                                  make_encoder(f"onnx:{reweighted / 'encoder.onnx'}"), cache, 0.32)
    assert changed.embedding_dir not in (first.embedding_dir, shifted.embedding_dir)
    assert changed.embedding_stats.misses == 6

    # Training refuses an encoder without its preprocessing, naming the option.
    (other / "encoder.preprocessor.json").unlink()
    with pytest.raises(InputError, match="--encoder onnx:.*preprocessor_config.json"):
        make_encoder(f"onnx:{other / 'encoder.onnx'}")


def test_batch_order_is_a_pure_function_of_seed_and_step() -> None:
    count, batch = 10, 4
    stream = [i for m in range(5) for i in batch_indices(count, batch, m, seed=3)]
    assert sorted(stream[:10]) == list(range(10))     # epoch 0 is a permutation
    assert sorted(stream[10:20]) == list(range(10))   # so is epoch 1
    assert stream[:10] != stream[10:20]
    assert batch_indices(count, batch, 3, seed=3) == stream[12:16]
    assert batch_indices(count, batch, 3, seed=4) != stream[12:16]


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_schedule_targets_invert(prediction_type: str) -> None:
    from engine.generators.diffusion.model import AUDIOLDM2_SCHEDULER

    schedule = NoiseSchedule({**AUDIOLDM2_SCHEDULER, "prediction_type": prediction_type}, "cpu")
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 2, 4, 4, generator=generator)
    noise = torch.randn(3, 2, 4, 4, generator=generator)
    t = torch.tensor([10, 500, 990])
    x_t = schedule.add_noise(x0, noise, t)
    pred_x0, pred_eps = schedule.x0_and_eps(schedule.target(x0, noise, t), x_t, t)
    torch.testing.assert_close(pred_x0, x0, atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(pred_eps, noise, atol=1e-3, rtol=1e-4)
    weights = schedule.min_snr_weights(t, 5.0)
    assert weights.shape == (3,) and bool((weights > 0).all())


def test_guidance_embeddings_match_the_sampler() -> None:
    scales = torch.tensor([1.0, 2.5, 7.0])
    batch = guidance_embeddings(scales, 32)
    for i, scale in enumerate(scales.tolist()):
        torch.testing.assert_close(batch[i:i + 1],
                                   guidance_embedding(scale, 32, 1, torch.float32, "cpu"))


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        ProjectionConfig(batch_size=0)
    with pytest.raises(ValueError, match="cond_dropout must be in"):
        ProjectionConfig(cond_dropout=1.0)
    result = CliRunner().invoke(cli, ["train-projection", "--model", ".", "--data", ".",
                                      "--out", "x", "--accumulate", "0"])
    assert result.exit_code == 2 and "'--accumulate'" in result.output, result.output


HUGE = str(10**12)


@pytest.mark.parametrize(("args", "option"), [
    (["--seed", "-1"], "'--seed'"), (["--seed", "1e21"], "'--seed'"),
    (["--count", "-1"], "'--count'"), (["--count", "0"], "'--count'"),
    (["--count", HUGE], "'--count'"),
    (["--seconds", "0"], "'--seconds'"), (["--seconds", "-1"], "'--seconds'"),
    (["--seconds", "1e12"], "'--seconds'"), (["--seconds", "nan"], "'--seconds'"),
    (["--val", "-1"], "'--val'"), (["--test", "-1"], "'--test'"),
    (["--count", "10", "--val", "5", "--test", "5"], "'--val' / '--test'"),
])
def test_make_tone_dataset_refuses_bad_options(tmp_path: Path, args: list[str],
                                               option: str) -> None:
    refused(["make-tone-dataset", str(tmp_path / "d"), *args], option)
    assert not (tmp_path / "d").exists()


def test_make_tone_dataset_writes_a_small_set(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    result = CliRunner().invoke(cli, ["make-tone-dataset", str(tmp_path / "d"), "--count", "3",
                                      "--val", "1", "--test", "1", "--seconds", "0.05",
                                      "--seed", str(2**32 - 1)])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "d" / "audio").iterdir())) == 3
    monkeypatch.chdir(tmp_path)
    refused(["make-tone-dataset", ""], "OUT_DIR")
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


@pytest.mark.parametrize(("args", "option"), [
    (["--clip-s", "0"], "'--clip-s'"), (["--clip-s", "-1"], "'--clip-s'"),
    (["--clip-s", "1e12"], "'--clip-s'"), (["--val-fraction", "1"], "'--val-fraction'"),
    (["--val-fraction", "-0.1"], "'--val-fraction'"),
    (["--val-fraction", "nan"], "'--val-fraction'"),
])
def test_validate_data_refuses_bad_options(tmp_path: Path, args: list[str], option: str) -> None:
    refused(["validate-data", str(tmp_path), *args], option)


#: Options of both trainers, each with values refused (0, -1, 10**12, nan where they apply).
RUN_REFUSED = [
    ("--batch-size", ["0", "-1", HUGE]), ("--accumulate", ["0", "-1", HUGE]),
    ("--weight-decay", ["-1", "1e12", "nan"]), ("--grad-clip", ["0", "-1", "1e12", "nan"]),
    ("--warmup-steps", ["-1", HUGE]), ("--device", ["", "nosuch", "cuda:99"]),
    ("--seed", ["-1", HUGE]), ("--clip-s", ["0", "-1", "1e12", "nan"]),
    ("--max-clips", ["-1", HUGE]), ("--val-fraction", ["-1", "1", "nan"]),
    ("--validate-every", ["-1", HUGE]), ("--checkpoint-every", ["-1", HUGE]),
    ("--keep-checkpoints", ["0", "-1", HUGE]), ("--log-every", ["0", "-1", HUGE]),
    ("--threads", ["-1", HUGE]), ("--train-steps", ["0", "-1", HUGE]),
    ("--lr", ["0", "-1", "1e12", "nan"]), ("--out", [""]),
]
PROJECTION_REFUSED = [("--min-snr", ["-1", "1e12", "nan"]),
                      ("--cond-dropout", ["-1", "1", "nan"])]
DISTILL_REFUSED = [
    ("--steps", ["0", "-1", "9", HUGE]), ("--teacher-steps", ["0", "-1", HUGE]),
    ("--guidance-min", ["0", "-1", "1e12", "nan"]),
    ("--guidance-max", ["0", "-1", "1e12", "nan"]),
    ("--guidance-dim", ["0", "-1", "2", HUGE]), ("--ddim-timesteps", ["-1", "2", HUGE]),
    ("--ema-decay", ["-1", "1", "nan"]),
]


@pytest.mark.parametrize(("option", "value"), [
    (option, value) for option, values in RUN_REFUSED + PROJECTION_REFUSED for value in values])
def test_train_projection_refuses_bad_options(tmp_path: Path, option: str, value: str) -> None:
    """Refused before any model loads (tmp_path is no model folder)."""
    refused(["train-projection", "--model", str(tmp_path), "--data", str(tmp_path),
              "--out", str(tmp_path / "out"), option, value], f"'{option}'")


@pytest.mark.parametrize(("option", "value"), [
    (option, value) for option, values in RUN_REFUSED + DISTILL_REFUSED for value in values])
def test_distill_refuses_bad_options(tmp_path: Path, option: str, value: str) -> None:
    refused(["distill", "--teacher", str(tmp_path), "--data", str(tmp_path),
              "--out", str(tmp_path / "out"), option, value], f"'{option}'")


def test_distill_refuses_crossed_guidance(tmp_path: Path) -> None:
    refused(["distill", "--teacher", str(tmp_path), "--data", str(tmp_path), "--out",
              str(tmp_path / "out"), "--guidance-min", "5", "--guidance-max", "2"],
             "'--guidance-min'")
