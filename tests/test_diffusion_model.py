"""The diffusion model folder: made, checked and loaded through the user's code path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the diffusion extra, which make test installs")
pytest.importorskip("diffusers", reason="needs the diffusion extra, which make test installs")

from engine.generators.diffusion.conditioner import (  # noqa: E402
    VisualConditioner,
    generate_language_tokens,
    load_projection_checkpoint,
)
from engine.generators.diffusion.config import DiffusionConfig  # noqa: E402
from engine.generators.diffusion.model import ModelSpec, check_folder, load_model  # noqa: E402
from engine.generators.diffusion.testing import NUMPY_COPY_WARNING, random_embedding  # noqa: E402
from ground.errors import InputError  # noqa: E402

pytestmark = pytest.mark.filterwarnings(NUMPY_COPY_WARNING)


def test_tiny_model_has_the_real_layout(tiny_model_folder: Path) -> None:
    for sub in ("unet", "vae", "vocoder", "language_model", "projection_model", "scheduler"):
        assert (tiny_model_folder / sub).is_dir(), sub
    unet_config = json.loads((tiny_model_folder / "unet" / "config.json").read_text())
    assert unet_config["_class_name"] == "AudioLDM2UNet2DConditionModel"
    assert unet_config["cross_attention_dim"][0] == [None, 768, 1024]
    vae_config = json.loads((tiny_model_folder / "vae" / "config.json").read_text())
    assert vae_config["latent_channels"] == 8


def test_load_model_gives_consistent_sizes(tiny_model: Any) -> None:
    assert tiny_model.latent_channels == 8
    assert tiny_model.mel_bins == 64 and tiny_model.latent_bins == 16
    assert tiny_model.spec.sample_rate == 16000
    assert tiny_model.samples_per_latent_frame == 640  # 25 latent frames per second
    assert tiny_model.support_prompt.shape == (1, 8, 1024)
    assert tiny_model.unconditional_tokens.shape == (1, 8, 768)


@pytest.mark.parametrize("missing", [
    "unet/diffusion_pytorch_model.safetensors", "vae/config.json", "vocoder",
    "language_model/model.safetensors", "projection_model", "scheduler/scheduler_config.json",
    "image_projection.safetensors", "support_prompt.safetensors", "art2mus_model.json",
])
def test_missing_part_is_named(tiny_model_folder: Path, tmp_path: Path, missing: str) -> None:
    broken = tmp_path / "model"
    shutil.copytree(tiny_model_folder, broken)
    target = broken / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(InputError) as error:
        check_folder(broken)
    assert str(target) in str(error.value)
    with pytest.raises(InputError):  # the user's path refuses it before loading anything
        load_model(broken)


def test_unreadable_config_is_named(tiny_model_folder: Path, tmp_path: Path) -> None:
    broken = tmp_path / "model"
    shutil.copytree(tiny_model_folder, broken)
    (broken / "vae" / "config.json").write_text("{ not json")
    with pytest.raises(InputError, match="vae/config.json"):
        check_folder(broken)


def test_missing_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nowhere"):
        load_model(tmp_path / "nowhere")


def test_mismatched_spec_is_refused(tiny_model_folder: Path, tmp_path: Path) -> None:
    broken = tmp_path / "model"
    shutil.copytree(tiny_model_folder, broken)
    spec = json.loads((broken / "art2mus_model.json").read_text())
    spec["embedding_dim"] = 512  # the projection checkpoint expects 1024
    (broken / "art2mus_model.json").write_text(json.dumps(spec))
    with pytest.raises(InputError) as error:
        load_model(broken)
    message = str(error.value)
    assert "image_projection.safetensors" in message
    assert "(1536, 512)" in message and "(1536, 1024)" in message


def test_model_spec_and_config_round_trip(tmp_path: Path) -> None:
    spec = ModelSpec(embedding_dim=512, prefix_tokens=4)
    spec.save(tmp_path)
    assert ModelSpec.load(tmp_path) == spec
    config = DiffusionConfig(model="m", steps=2, guidance_scale=3.0, transition="cut")
    assert DiffusionConfig.model_validate(config.model_dump()) == config


def test_config_refuses_overlap_longer_than_half_window() -> None:
    with pytest.raises(ValueError, match="overlap_s"):
        DiffusionConfig(window_s=1.0, overlap_s=0.6)


# -- conditioner ---------------------------------------------------------------


def test_conditioner_shapes_and_sensitivity(tiny_model: Any) -> None:
    with torch.inference_mode():
        a = torch.from_numpy(random_embedding(1))
        b = torch.from_numpy(random_embedding(2))
        prefix = tiny_model.conditioner(a)
        tokens_a = tiny_model.conditioner.tokens(a, tiny_model.language_model)
        tokens_a2 = tiny_model.conditioner.tokens(a, tiny_model.language_model)
        tokens_b = tiny_model.conditioner.tokens(b, tiny_model.language_model)
    assert prefix.shape == (1, 1, 768)
    assert tokens_a.shape == (1, 8, 768)
    assert torch.equal(tokens_a, tokens_a2)
    difference = (tokens_a - tokens_b).norm() / tokens_a.norm()
    assert difference > 1e-3, "different artworks must condition differently"


def test_k_prefix_tokens() -> None:
    conditioner = VisualConditioner(embedding_dim=32, lm_width=16, prefix_tokens=3,
                                    hidden_dim=24)
    assert conditioner(torch.zeros(2, 32)).shape == (2, 3, 16)


# The KV-cached reference passes transformers' deprecated ``past_key_values`` argument.
@pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated:FutureWarning")
def test_token_generation_matches_cached_recurrence(tiny_model: Any) -> None:
    """The recurrence of AudioLDM2Pipeline.generate_language_model, which runs GPT-2 with a
    KV cache (that method itself fails with transformers 5: GPT2Model lost
    ``_update_model_kwargs_for_generation``), reproduced here as the reference."""
    lm = tiny_model.language_model
    prefix = torch.randn(1, 1, 768, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ours = generate_language_tokens(lm, prefix, 8)
        output = lm(inputs_embeds=prefix, use_cache=True)
        generated = [output.last_hidden_state[:, -1:]]
        for _ in range(7):
            output = lm(inputs_embeds=generated[-1], past_key_values=output.past_key_values,
                        use_cache=True)
            generated.append(output.last_hidden_state[:, -1:])
    torch.testing.assert_close(ours, torch.cat(generated, dim=1), rtol=1e-4, atol=1e-4)


def test_projection_checkpoint_formats(tiny_model: Any, tmp_path: Path) -> None:
    state = {k: v.clone() for k, v in tiny_model.conditioner.state_dict().items()}
    torch.save(state, tmp_path / "img_proj_layer.pt")  # the published format
    loaded = load_projection_checkpoint(tmp_path / "img_proj_layer.pt")
    rebuilt = VisualConditioner.from_state_dict(loaded, tiny_model.spec, 768)
    x = torch.from_numpy(random_embedding(3))
    torch.testing.assert_close(rebuilt(x), tiny_model.conditioner(x))
    del loaded["projection2.bias"]
    with pytest.raises(InputError, match="projection2.bias"):
        VisualConditioner.from_state_dict(loaded, tiny_model.spec, 768, source="ckpt.pt")


def test_random_embedding_is_unit_norm() -> None:
    assert np.isclose(np.linalg.norm(random_embedding(0)), 1.0)
