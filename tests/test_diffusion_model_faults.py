"""Broken model folders are refused before the engine runs, one line naming file and field.

Each case copies the tiny model folder, breaks one thing the way a damaged or hand-edited
folder is broken (NaN in a JSON file, a non-UTF-8 config, NaN weights), and checks that
:func:`check_folder` (what ``art2mus check-config --deep`` runs), :func:`load_model` and the
engine's start refuse it with :class:`InputError` (a config-error exit code the supervisor
gives up on), rather than a traceback from deep inside torch or diffusers.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch", reason="needs the diffusion extra, which make test installs")
pytest.importorskip("diffusers", reason="needs the diffusion extra, which make test installs")

from click.testing import CliRunner  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from engine.config import EngineConfig  # noqa: E402
from engine.generators.diffusion.config import DiffusionConfig  # noqa: E402
from engine.generators.diffusion.generator import DiffusionGenerator  # noqa: E402
from engine.generators.diffusion.model import (  # noqa: E402
    IMAGE_PROJECTION_FILE,
    PARTS,
    SPEC_FILE,
    SUPPORT_PROMPT_FILE,
    ModelSpec,
    check_folder,
    inspect_model,
    load_model,
)
from engine.generators.diffusion.testing import NUMPY_COPY_WARNING  # noqa: E402
from ground.errors import ConfigError, InputError  # noqa: E402
from installation.cli import cli  # noqa: E402

pytestmark = pytest.mark.filterwarnings(NUMPY_COPY_WARNING)

SCHEDULER = Path("scheduler") / "scheduler_config.json"


def copy_of(folder: Path, tmp_path: Path) -> Path:
    broken = tmp_path / "model"
    shutil.copytree(folder, broken)
    return broken


def edit_json(path: Path, **changes: Any) -> None:
    """Rewrite a JSON file with ``changes`` (json writes NaN and Infinity as Python reads them)."""
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def refused(folder: Path) -> str:
    """The one message both the deep check and the loader give for ``folder``."""
    with pytest.raises(InputError) as checked:
        check_folder(folder)
    with pytest.raises(InputError) as loaded:
        load_model(folder)
    assert str(loaded.value) == str(checked.value)
    assert "\n" not in str(checked.value)
    return str(checked.value)


# -- art2mus_model.json -------------------------------------------------------------------


@pytest.mark.parametrize(("name", "value", "expected"), [
    ("latent_frames_per_second", math.nan, "a finite number > 0"),
    ("latent_frames_per_second", math.inf, "a finite number > 0"),
    ("latent_frames_per_second", 0, "a finite number > 0"),
    ("latent_frames_per_second", 16001.0, "<= sample_rate (16000)"),
    ("sample_rate", 10 ** 12, "an integer in [4000, 384000]"),
    ("prefix_tokens", True, "an integer >= 1"),
    ("embedding_dim", "1024", "an integer in [1, 65536]"),
    ("hidden_dim", 1536.5, "an integer in [1, 65536]"),
    ("generated_tokens", 0, "an integer >= 1"),
    ("prefix_special_tokens", 1, "true or false"),
    ("guidance_range", [1.0, math.inf], "[min, max], finite"),
])
def test_spec_values_out_of_range_are_refused(tiny_model_folder: Path, tmp_path: Path,
                                              name: str, value: Any, expected: str) -> None:
    broken = copy_of(tiny_model_folder, tmp_path)
    edit_json(broken / SPEC_FILE, **{name: value})
    message = refused(broken)
    assert message.startswith(f"expected {name} in {broken / SPEC_FILE} to be ")
    assert expected in message and message.endswith(f"got {value!r}")


def test_spec_field_error_names_the_field_without_a_file() -> None:
    with pytest.raises(ValueError, match=r"^latent_frames_per_second: expected a finite"):
        ModelSpec(latent_frames_per_second=math.nan)


def test_unknown_spec_field_is_named(tiny_model_folder: Path, tmp_path: Path) -> None:
    broken = copy_of(tiny_model_folder, tmp_path)
    edit_json(broken / SPEC_FILE, frames_per_second=25)
    assert refused(broken).endswith("got ['frames_per_second']")


def test_generated_tokens_fit_the_language_models_positions(tiny_model_folder: Path,
                                                            tmp_path: Path) -> None:
    # The tiny GPT-2 has 64 positions; 1 prefix token + 64 generated feeds it 64 at most.
    broken = copy_of(tiny_model_folder, tmp_path)
    lm_config = broken / "language_model" / "config.json"
    assert json.loads(lm_config.read_text())["n_positions"] == 64
    edit_json(broken / SPEC_FILE, generated_tokens=65)
    message = refused(broken)
    assert message == (f"expected generated_tokens in {broken / SPEC_FILE} to be at most 64 "
                       f"(the language model {lm_config} has 64 positions, the prefix takes "
                       f"1), got 65")
    edit_json(broken / SPEC_FILE, generated_tokens=63, prefix_special_tokens=True)  # SOS, EOS
    assert "to be at most 62" in refused(broken)
    edit_json(broken / SPEC_FILE, generated_tokens=64, prefix_special_tokens=False)
    model = load_model(broken)  # the bound is exact: 64 tokens generate
    assert model.unconditional_tokens.shape == (1, 64, 768)
    assert bool(torch.isfinite(model.unconditional_tokens).all())


# -- the subfolders' JSON files -------------------------------------------------------------


@pytest.mark.parametrize("config", ["unet/config.json", str(SCHEDULER), SPEC_FILE])
def test_non_utf8_config_is_named(tiny_model_folder: Path, tmp_path: Path, config: str) -> None:
    broken = copy_of(tiny_model_folder, tmp_path)
    (broken / config).write_bytes(b'{"_class_name": "caf\xe9"}')  # Latin-1
    assert refused(broken) == (f"expected UTF-8 JSON text in {broken / config}, got byte 0xe9 "
                               f"at position 20 (invalid continuation byte)")


@pytest.mark.parametrize("config", ["unet/config.json", "vocoder/config.json", str(SCHEDULER),
                                    SPEC_FILE])
@pytest.mark.parametrize(("text", "kind"), [("[]", "an array"), ("7", "a number"),
                                            ("null", "null")])
def test_config_that_is_not_a_json_object_is_named(tiny_model_folder: Path, tmp_path: Path,
                                                   config: str, text: str, kind: str) -> None:
    broken = copy_of(tiny_model_folder, tmp_path)
    (broken / config).write_text(text)
    assert refused(broken) == f"expected a JSON object in {broken / config}, got {kind}"


# -- the noise schedule ----------------------------------------------------------------------


@pytest.mark.parametrize(("changes", "name", "expected"), [
    ({"num_train_timesteps": math.nan}, "num_train_timesteps", "an integer in [8, 100000]"),
    ({"num_train_timesteps": "1000"}, "num_train_timesteps", "an integer in [8, 100000]"),
    ({"num_train_timesteps": 10 ** 12}, "num_train_timesteps", "an integer in [8, 100000]"),
    ({"num_train_timesteps": 4}, "num_train_timesteps", "an integer in [8, 100000]"),
    ({"beta_end": math.nan}, "beta_end", "a finite number in (0, 1)"),
    ({"beta_start": 1.5}, "beta_start", "a finite number in (0, 1)"),
    ({"beta_start": 0.03}, "beta_end", "at least beta_start (0.03)"),
    ({"beta_schedule": "cosine"}, "beta_schedule", "'squaredcos_cap_v2'"),
    ({"prediction_type": "noise"}, "prediction_type", "'epsilon' or"),
    ({"timestep_spacing": None}, "timestep_spacing", "'leading'"),
    ({"clip_sample": "no"}, "clip_sample", "true or false"),
    ({"clip_sample_range": math.inf}, "clip_sample_range", "a finite number > 0"),
    ({"trained_betas": [0.1, 0.2]}, "trained_betas", "null or 1000 (num_train_timesteps)"),
    ({"steps_offset": -1}, "steps_offset", "an integer in [0, 999]"),
    ({"dynamic_thresholding_ratio": 0}, "dynamic_thresholding_ratio", "in (0, 1]"),
])
def test_scheduler_values_are_refused(tiny_model_folder: Path, tmp_path: Path,
                                      changes: dict[str, Any], name: str, expected: str) -> None:
    broken = copy_of(tiny_model_folder, tmp_path)
    edit_json(broken / SCHEDULER, **changes)
    message = refused(broken)
    assert message.startswith(f"expected {name} in {broken / SCHEDULER} to be ")
    assert expected in message


def test_the_auditors_scheduler_file_is_refused(tiny_model_folder: Path, tmp_path: Path) -> None:
    broken = copy_of(tiny_model_folder, tmp_path)
    (broken / SCHEDULER).write_text('{"num_train_timesteps": NaN}')
    assert refused(broken) == (f"expected num_train_timesteps in {broken / SCHEDULER} to be an "
                               f"integer in [8, 100000], got nan")


def test_schedule_the_sampler_cannot_walk_is_refused_at_engine_start(
        tiny_student_folder: Path, tmp_path: Path) -> None:
    # In range, but LCM's distillation grid of 2 steps cannot be walked in 4: diffusers
    # says so at the first window, after the engine has started serving.
    broken = copy_of(tiny_student_folder, tmp_path)
    edit_json(broken / SCHEDULER, original_inference_steps=2)
    check_folder(broken)
    config = EngineConfig(generator="diffusion", sample_rate=16000, channels=1,
                          diffusion=DiffusionConfig(model=str(broken), window_s=1.28,
                                                    overlap_s=0.32, steps=4))
    with pytest.raises(InputError) as error:
        DiffusionGenerator.from_config(config)
    message = str(error.value)
    assert message.startswith(f"expected a noise schedule the consistency sampler can walk in "
                              f"4 steps in {broken / SCHEDULER}, got: ")
    assert "`original_steps x strength`: 2" in message and "\n" not in message
    two = config.model_copy(update={"diffusion": config.diffusion.model_copy(
        update={"steps": 2})})
    assert DiffusionGenerator.from_config(two).sampler.steps == 2  # 2 steps it can walk


# -- weights ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("file", "tensor"), [
    (IMAGE_PROJECTION_FILE, "projection1.weight"),
    (IMAGE_PROJECTION_FILE, "projection2.bias"),
    (SUPPORT_PROMPT_FILE, "support_prompt"),
    ("projection_model/diffusion_pytorch_model.safetensors", "sos_embed"),
])
@pytest.mark.parametrize("bad", [math.nan, -math.inf])
def test_non_finite_small_tensors_are_refused(tiny_model_folder: Path, tmp_path: Path,
                                              file: str, tensor: str, bad: float) -> None:
    broken = copy_of(tiny_model_folder, tmp_path)
    tensors = load_file(str(broken / file))
    tensors[tensor].view(-1)[3] = bad
    save_file(tensors, str(broken / file))
    assert refused(broken) == (f"expected finite values in {broken / file}, got NaN or "
                               f"infinity in tensor {tensor!r}")


@pytest.mark.parametrize("sub", ["unet", "vae", "vocoder", "language_model"])
def test_non_finite_big_weights_are_refused_at_load_naming_the_tensor(
        tiny_model_folder: Path, tmp_path: Path, sub: str) -> None:
    # Not scanned by the check (hundreds of MB in a real model) but once loaded: one NaN in
    # the UNet, VAE or vocoder made every chunk NaN, zeroed by the engine: a silent room.
    broken = copy_of(tiny_model_folder, tmp_path)
    weights = next((broken / sub).glob("*.safetensors"))
    tensors = load_file(str(weights))
    name = sorted(k for k, t in tensors.items() if t.is_floating_point() and t.numel() > 1)[0]
    tensors[name].view(-1)[1] = math.nan
    save_file(tensors, str(weights))
    check_folder(broken)
    with pytest.raises(InputError) as error:
        load_model(broken)
    assert str(error.value) == (f"expected finite weights in {broken / sub}, got NaN or "
                                f"infinity in tensor {name!r} (as loaded in torch.float32: "
                                f"float16 ends at 65504)")


# -- the user's commands ---------------------------------------------------------------------


def _deep_check(model: Path, tmp_path: Path) -> Any:
    """``check-config --deep`` of a one-room config whose engine loads ``model`` on the CPU."""
    path = tmp_path / "room.json"
    path.write_text(json.dumps({
        "installation": {"output_dir": str(tmp_path / "out")},
        "audio_out": {"output": "none"},
        "engine": {"generator": "diffusion",
                   "diffusion": {"model": str(model), "device": "cpu"}},
        "rooms": [{"id": "a"}],
    }))
    return CliRunner().invoke(cli, ["check-config", "--deep", "--config", str(path)])


def test_deep_check_refuses_a_nan_spec_with_a_config_error(tiny_model_folder: Path,
                                                           tmp_path: Path) -> None:
    broken = copy_of(tiny_model_folder, tmp_path)
    edit_json(broken / SPEC_FILE, latent_frames_per_second=math.nan)
    result = _deep_check(broken, tmp_path)
    assert result.exit_code == ConfigError.exit_code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    # The model's one line (ports in use on this machine may add their own).
    assert [line for line in result.output.splitlines() if line.startswith(("engine", "rooms"))] \
        == [f"engine.diffusion.model: expected latent_frames_per_second in {broken / SPEC_FILE} "
            f"to be a finite number > 0 and <= sample_rate (16000), got nan"]


# -- the networks' weight files ----------------------------------------------------------------
# check_folder does not read them (hundreds of MB); inspect_model (the deep check) reads their
# headers against the networks their configs build, and load_model refuses what the libraries
# report. Both give one InputError naming the part and the file: the engine exited 1 on a
# SafetensorError or an UnpicklingError and the supervisor restarted it forever.


def refused_at_start(folder: Path) -> str:
    """The one message the deep check (inspect_model) and the engine's load give."""
    check_folder(folder)  # the files are there and the small ones fine
    with pytest.raises(InputError) as inspected:
        inspect_model(folder)
    with pytest.raises(InputError) as loaded:
        load_model(folder)
    assert str(loaded.value) == str(inspected.value)
    assert "\n" not in str(inspected.value)
    return str(inspected.value)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _refused_pickle(path: Path) -> None:
    # A pickle holding more than tensors (here a harmless Fraction; in the audit, os.system):
    # torch.load(weights_only=True) refuses it, as both libraries load .bin files.
    from fractions import Fraction

    path.with_name("model.safetensors").unlink()
    torch.save({"wte.weight": torch.zeros(2), "x": Fraction(1, 2)}, path)


@pytest.mark.parametrize(("file", "damage", "got"), [
    ("vocoder/model.safetensors", lambda p: p.write_bytes(b""),
     "a safetensors file SpeechT5HifiGan can read, got SafetensorError: Error while "
     "deserializing header: header too small"),
    ("unet/diffusion_pytorch_model.safetensors", _truncate,
     "a safetensors file AudioLDM2UNet2DConditionModel can read, got SafetensorError: Error "
     "while deserializing header: incomplete metadata, file not fully covered"),
    ("language_model/pytorch_model.bin", _refused_pickle,
     "a PyTorch weights file GPT2Model can read, got UnpicklingError: "
     "torch.load(weights_only=True) refuses it: Unsupported global: GLOBAL fractions.Fraction "
     "was not an allowed global by default."),
])
def test_damaged_weight_files_are_input_errors_naming_part_and_file(
        tiny_model_folder: Path, tmp_path: Path, file: str, damage: Any, got: str) -> None:
    broken = copy_of(tiny_model_folder, tmp_path)
    damage(broken / file)
    part = file.split("/")[0]
    message = refused_at_start(broken)
    assert message.startswith(f"weights of the {part} in {broken / part}: expected "
                              f"{broken / file} to be {got}"), message


def _edit_tensors(path: Path, edit: Any) -> None:
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path))


UNET_WEIGHTS = "unet/diffusion_pytorch_model.safetensors"
LM_WEIGHTS = "language_model/model.safetensors"


@pytest.mark.parametrize(("file", "edit", "got"), [
    # a checkpoint of another revision: the library filled the hole with random values
    (UNET_WEIGHTS, lambda t: t.pop("conv_out.bias"), "1 missing (conv_out.bias)"),
    (LM_WEIGHTS, lambda t: t.pop("ln_f.weight"), "1 missing (ln_f.weight)"),
    ("vocoder/model.safetensors", lambda t: t.update(extra=torch.zeros(3)),
     "1 unexpected (extra)"),
    (UNET_WEIGHTS, lambda t: t.update({"conv_in.weight": torch.zeros(64, 8, 3, 3)}),
     "1 of another shape (conv_in.weight (64, 8, 3, 3) for (32, 8, 3, 3))"),
])
def test_weights_that_do_not_fit_the_config_are_refused(
        tiny_model_folder: Path, tmp_path: Path, file: str, edit: Any, got: str) -> None:
    broken = copy_of(tiny_model_folder, tmp_path)
    _edit_tensors(broken / file, edit)
    part = file.split("/")[0]
    assert refused_at_start(broken) == (
        f"weights of the {part} in {broken / part}: expected {broken / file} to hold every "
        f"weight of the {PARTS[part][1]} that {broken / part / 'config.json'} describes, got "
        f"{got}: the config and the weights come from different models or versions; copy "
        f"both from one source")


def test_a_config_key_left_out_is_not_filled_with_random_weights(tiny_model_folder: Path,
                                                                 tmp_path: Path) -> None:
    # Without n_layer GPT2Config builds its default 12 layers: 132 of 148 tensors were random.
    broken = copy_of(tiny_model_folder, tmp_path)
    config = broken / "language_model" / "config.json"
    data = json.loads(config.read_text())
    del data["n_layer"]
    config.write_text(json.dumps(data))
    message = refused_at_start(broken)
    assert f"that {config} describes, got 132 missing (h.1.attn.c_attn.bias, " \
           f"h.1.attn.c_attn.weight, h.1.attn.c_proj.bias, ... (129 more))" in message


def test_keys_the_libraries_ignore_are_ignored(tiny_model_folder: Path, tmp_path: Path) -> None:
    # diffusers' AudioLDM2 pipeline saves GPT-2 as GPT2LMHeadModel (transformer.* keys), and
    # older transformers saved the causal mask (attn.bias): GPT2Model reads both.
    folder = copy_of(tiny_model_folder, tmp_path)
    _edit_tensors(folder / LM_WEIGHTS, lambda t: t.update(
        {**{f"transformer.{k}": t.pop(k) for k in list(t)},
         "transformer.h.0.attn.bias": torch.ones(1, 1, 64, 64)}))
    assert inspect_model(folder).device.type == "meta"
    assert load_model(folder).language_model.config.n_layer == 1


def test_inspect_model_gives_the_engines_sizes_without_weights(tiny_model_folder: Path,
                                                               tiny_model: Any) -> None:
    inspected = inspect_model(tiny_model_folder)
    for size in ("latent_channels", "vae_scale_factor", "mel_bins", "latent_bins",
                 "samples_per_latent_frame", "unet_downsample", "lm_width", "support_width"):
        assert getattr(inspected, size) == getattr(tiny_model, size), size
    assert all(p.device.type == "meta" for p in inspected.unet.parameters())


def test_deep_check_refuses_damaged_weights_that_the_engine_would_not_load(
        tiny_model_folder: Path, tmp_path: Path) -> None:
    broken = copy_of(tiny_model_folder, tmp_path)
    (broken / "vocoder" / "model.safetensors").write_bytes(b"")
    result = _deep_check(broken, tmp_path)
    assert result.exit_code == ConfigError.exit_code, result.output
    assert [line for line in result.output.splitlines() if line.startswith(("engine", "rooms"))] \
        == [f"engine.diffusion.model: expected {broken / 'vocoder' / 'model.safetensors'} to be "
            f"a safetensors file SpeechT5HifiGan can read, got SafetensorError: Error while "
            f"deserializing header: header too small"]
