"""`art2mus import-model`: a folder diffusers itself wrote + an Art2Mus-style `.pt` -> a model.

The input is a tiny AudioLDM2Pipeline built from config with random weights
(sizes after diffusers' own AudioLDM2 fast tests, tokenizers built locally:
nothing is downloaded) and saved with ``save_pretrained``. The output must load
with ``load_model`` and play; the support prompt must equal the T5 states
diffusers' own ``encode_prompt`` gives the UNet; every refusal names the file
and both shapes; a room whose encoder is not the model's is refused at start-up.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("torch", reason="needs the diffusion extra, which make test installs")
pytest.importorskip("diffusers", reason="needs the diffusion extra, which make test installs")

import torch  # noqa: E402
from click.testing import CliRunner  # noqa: E402

from engine.generators.diffusion.config import DiffusionConfig  # noqa: E402
from engine.generators.diffusion.generator import DiffusionGenerator  # noqa: E402
from engine.generators.diffusion.importer import (  # noqa: E402
    DEFAULT_SUPPORT_PROMPT,
    import_model,
)
from engine.generators.diffusion.model import (  # noqa: E402
    ModelSpec,
    encoder_matches,
    load_model,
    tiny_component_configs,
)
from engine.generators.diffusion.testing import (  # noqa: E402
    NUMPY_COPY_WARNING,
    random_embedding,
)
from ground.errors import ConfigError, InputError  # noqa: E402
from ground.protocol import Array, ArtworkView  # noqa: E402
from installation.cli import cli  # noqa: E402
from installation.config import config_from_dict  # noqa: E402
from installation.doctor import deep_check, require_deep_checks  # noqa: E402

pytestmark = pytest.mark.filterwarnings(NUMPY_COPY_WARNING)

EMBEDDING, HIDDEN, LM, SUPPORT = 32, 48, 24, 32
ENCODER = "tiny-encoder"
WORDS = ("music", "representing", "the", "content", "of", "this", "artwork")


def write_tiny_pipeline(folder: Path) -> Path:
    """A tiny random AudioLDM2Pipeline, saved by diffusers' own ``save_pretrained``."""
    from diffusers import (
        AudioLDM2Pipeline,
        AudioLDM2ProjectionModel,
        AudioLDM2UNet2DConditionModel,
        AutoencoderKL,
        DDIMScheduler,
    )
    from transformers import (
        ClapAudioConfig,
        ClapConfig,
        ClapFeatureExtractor,
        ClapModel,
        ClapTextConfig,
        GPT2Config,
        GPT2LMHeadModel,
        RobertaTokenizer,
        SpeechT5HifiGan,
        SpeechT5HifiGanConfig,
        T5Config,
        T5EncoderModel,
        T5Tokenizer,
    )
    from transformers.utils import logging as transformers_logging

    from engine.generators.diffusion.model import AUDIOLDM2_SCHEDULER

    transformers_logging.disable_progress_bar()
    torch.manual_seed(0)
    parts = tiny_component_configs(EMBEDDING, LM, SUPPORT)
    # A SentencePiece-style unigram vocabulary for T5, a byte-level BPE one for CLAP's
    # RoBERTa (unused by the import, but part of the layout).
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(f"\u2581{w}", -1.0)
                                                               for w in WORDS]
    clap_text = ClapTextConfig(bos_token_id=0, eos_token_id=2, hidden_size=16,
                               intermediate_size=37, num_attention_heads=2, num_hidden_layers=2,
                               pad_token_id=1, vocab_size=64, projection_dim=16)
    clap_audio = ClapAudioConfig(spec_size=64, window_size=4, num_mel_bins=64,
                                 depths=[2, 2], num_attention_heads=[2, 2],
                                 num_hidden_layers=2, hidden_size=192, projection_dim=16,
                                 patch_size=2, patch_stride=2, patch_embed_input_channels=4)
    pipeline = AudioLDM2Pipeline(
        vae=AutoencoderKL(**parts["vae"]),  # type: ignore[attr-defined]
        text_encoder=ClapModel(ClapConfig(text_config=clap_text.to_dict(),
                                          audio_config=clap_audio.to_dict(), projection_dim=16)),
        text_encoder_2=T5EncoderModel(T5Config(vocab_size=len(vocab), d_model=SUPPORT, d_ff=37,
                                               d_kv=8, num_heads=2, num_layers=2)),
        projection_model=AudioLDM2ProjectionModel(text_encoder_dim=16, text_encoder_1_dim=SUPPORT,
                                                  langauge_model_dim=LM),
        # diffusers >= 0.36 types the language model as GPT2LMHeadModel (save_pretrained then
        # writes transformer.* keys, which GPT2Model reads); the config records the 8 tokens
        # AudioLDM2 generates, which diffusers reads.
        language_model=GPT2LMHeadModel(GPT2Config(**{**parts["language_model"],
                                                        "max_new_tokens": 8})),
        tokenizer=RobertaTokenizer(vocab={"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3,
                                          "<mask>": 4}, merges=[], model_max_length=77),
        tokenizer_2=T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=77),
        feature_extractor=ClapFeatureExtractor(),
        unet=AudioLDM2UNet2DConditionModel(**parts["unet"]),
        scheduler=DDIMScheduler(**AUDIOLDM2_SCHEDULER),  # type: ignore[attr-defined]
        vocoder=SpeechT5HifiGan(SpeechT5HifiGanConfig(**parts["vocoder"])),
    )
    pipeline.save_pretrained(folder)  # type: ignore[attr-defined]
    return folder


def write_projection(path: Path, prefix_tokens: int = 1, out_width: int | None = None,
                     extra: dict[str, torch.Tensor] | None = None) -> Path:
    """An Art2Mus-style ``.pt``: torch.save of the ImageProjectionLayer state dict."""
    generator = torch.Generator().manual_seed(prefix_tokens)
    width = out_width if out_width is not None else prefix_tokens * LM
    torch.save({"projection1.weight": torch.randn(HIDDEN, EMBEDDING, generator=generator) * 0.2,
                "projection1.bias": torch.zeros(HIDDEN),
                "projection2.weight": torch.randn(width, HIDDEN, generator=generator) * 0.2,
                "projection2.bias": torch.zeros(width), **(extra or {})}, path)
    return path


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_pipeline(tmp_path_factory.mktemp("diffusers") / "audioldm2")


@pytest.fixture(scope="module")
def imported(pipeline_dir: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[Path, dict[str, Any]]:
    """import-model run through the CLI (--json) once per module: (OUT, its report)."""
    root = tmp_path_factory.mktemp("imported")
    projection = write_projection(root / "art2mus_img_proj_layer.pt")
    out = root / "model"
    result = CliRunner().invoke(cli, ["import-model", str(pipeline_dir), str(out),
                                      "--projection", str(projection), "--encoder", ENCODER,
                                      "--json"])
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def _copy_without(source: Path, target: Path, missing: str) -> Path:
    shutil.copytree(source, target, ignore=lambda folder, names: [
        n for n in names if Path(folder) == source and n == missing])
    return target


def test_import_reports_what_it_found_and_the_folder_loads_and_plays(
        pipeline_dir: Path, imported: tuple[Path, dict[str, Any]]) -> None:
    out, report = imported
    assert {k: report[k] for k in ("prefix_tokens", "embedding_dim", "hidden_dim", "lm_width",
                                   "support_width", "sample_rate", "encoder_name",
                                   "encoder_dim")} == {
        "prefix_tokens": 1, "embedding_dim": EMBEDDING, "hidden_dim": HIDDEN, "lm_width": LM,
        "support_width": SUPPORT, "sample_rate": 16000, "encoder_name": ENCODER,
        "encoder_dim": EMBEDDING}
    assert report["support_prompt"] == DEFAULT_SUPPORT_PROMPT and report["verified"]
    # Hard-linked, not copied, and the source folder is untouched.
    weights = Path("unet") / "diffusion_pytorch_model.safetensors"
    assert os.stat(out / weights).st_ino == os.stat(pipeline_dir / weights).st_ino
    assert report["files_copied"] == 0 and report["files_linked"] >= 11
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())  # no staging left

    spec = ModelSpec.load(out)
    assert (spec.encoder_name, spec.encoder_dim, spec.prefix_tokens) == (ENCODER, EMBEDDING, 1)
    model = load_model(out)
    assert model.support_prompt.shape == (1, report["support_tokens"], SUPPORT)
    generator = DiffusionGenerator(model, DiffusionConfig(model=str(out), window_s=1.28,
                                                          overlap_s=0.32, steps=2), 16000, 1)
    embedding = Array.from_numpy(random_embedding(1, EMBEDDING)[0])
    view = ArtworkView(v=1, room="r", seq=0, time=0.0, state="artwork", artwork_id="a",
                       encoder=f"onnx:{ENCODER}", embedding=embedding)
    condition = generator.prepare(view)
    chunk, _ = generator.generate(generator.start(condition, 0, 0, None), condition, 1600)
    assert chunk.audio.shape == (1600, 1) and np.isfinite(chunk.audio).all()
    assert np.abs(chunk.audio).max() > 0.0


# diffusers' encode_prompt also runs its GPT-2 generation, which passes transformers a
# deprecated argument (past_key_values); only that warning is let through, only here.
@pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated:FutureWarning")
def test_support_prompt_is_what_diffusers_gives_the_unet(
        pipeline_dir: Path, imported: tuple[Path, dict[str, Any]]) -> None:
    from diffusers import AudioLDM2Pipeline
    from safetensors.torch import load_file

    out, _ = imported
    pipeline = AudioLDM2Pipeline.from_pretrained(str(pipeline_dir), local_files_only=True)
    pipeline.set_progress_bar_config(disable=True)
    with torch.inference_mode():
        t5_states, _, _ = pipeline.encode_prompt(DEFAULT_SUPPORT_PROMPT, "cpu", 1, False)
    stored = load_file(str(out / "support_prompt.safetensors"))["support_prompt"]
    assert stored.shape == t5_states.shape == (1, len(WORDS) + 1, SUPPORT)  # words + </s>
    torch.testing.assert_close(stored, t5_states.float())


def test_four_prefix_tokens_are_detected(pipeline_dir: Path, tmp_path: Path) -> None:
    projection = write_projection(tmp_path / "art2mus_4_img_proj_layer.pt", prefix_tokens=4)
    report = import_model(pipeline_dir, tmp_path / "model", projection, ENCODER)
    assert report.prefix_tokens == 4 and report.verified
    assert ModelSpec.load(tmp_path / "model").prefix_tokens == 4


def test_wrong_projection_width_names_the_file_and_both_shapes(pipeline_dir: Path,
                                                               tmp_path: Path) -> None:
    projection = write_projection(tmp_path / "bad.pt", out_width=30)
    result = CliRunner().invoke(cli, ["import-model", str(pipeline_dir), str(tmp_path / "m"),
                                      "--projection", str(projection), "--encoder", ENCODER])
    assert result.exit_code == InputError.exit_code, result.output
    assert str(projection) in result.output and "projection2.weight" in result.output
    assert f"({LM}, {HIDDEN})" in result.output and f"({4 * LM}, {HIDDEN})" in result.output
    assert f"got (30, {HIDDEN})" in result.output
    assert not (tmp_path / "m").exists()


def test_other_keys_and_encoder_width_are_refused(pipeline_dir: Path, tmp_path: Path) -> None:
    extra = write_projection(tmp_path / "extra.pt", extra={"scale": torch.ones(1)})
    with pytest.raises(InputError, match=r"extra\.pt: expected exactly the keys.*'scale'"):
        import_model(pipeline_dir, tmp_path / "m", extra, ENCODER, verify=False)
    projection = write_projection(tmp_path / "p.pt")
    with pytest.raises(InputError, match=r"takes 32-d embeddings, but the encoder "
                                         r"'imagebind-huge' gives 1024-d"):
        import_model(pipeline_dir, tmp_path / "m", projection, verify=False)  # default encoder


def test_missing_t5_encoder_is_named(pipeline_dir: Path, tmp_path: Path) -> None:
    source = _copy_without(pipeline_dir, tmp_path / "src", "text_encoder_2")
    projection = write_projection(tmp_path / "p.pt")
    result = CliRunner().invoke(cli, ["import-model", str(source), str(tmp_path / "m"),
                                      "--projection", str(projection), "--encoder", ENCODER])
    assert result.exit_code == InputError.exit_code
    assert f"missing subfolder {source / 'text_encoder_2'}" in result.output


def test_support_width_must_match_the_unet(pipeline_dir: Path, tmp_path: Path) -> None:
    source = _copy_without(pipeline_dir, tmp_path / "src", "")
    unet_config = source / "unet" / "config.json"
    config = json.loads(unet_config.read_text())
    config["cross_attention_dim"] = [[None, LM, 40]] * 2
    unet_config.write_text(json.dumps(config))
    projection = write_projection(tmp_path / "p.pt")
    with pytest.raises(InputError) as refused:
        import_model(source, tmp_path / "m", projection, ENCODER, verify=False)
    message = str(refused.value)
    assert str(source / "text_encoder_2" / "config.json") in message
    assert f"(1, 8, {SUPPORT})" in message and "expects width 40" in message


def test_existing_output_is_not_overwritten(pipeline_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="expected a new or empty folder"):
        import_model(pipeline_dir, tmp_path / "m", write_projection(tmp_path / "p.pt"),
                     ENCODER, verify=False)
    assert (tmp_path / "m" / "keep.txt").read_text() == "mine"


def test_encoder_names_match_onnx_files_named_after_the_encoder() -> None:
    assert encoder_matches("imagebind-huge", "onnx:imagebind-huge")
    assert encoder_matches("imagebind-huge", "ImageBind-Huge")
    assert encoder_matches("", "descriptor-v1")  # not recorded: older folders
    assert not encoder_matches("imagebind-huge", "descriptor-v1")
    assert not encoder_matches("imagebind-huge", "onnx:clip-vit-h-14")
    old = ModelSpec(embedding_dim=130)  # a folder written before the encoder was recorded
    assert (old.encoder_name, old.encoder_dim, old.encoder_width) == ("", 0, 130)
    with pytest.raises(ValueError, match=r"encoder_dim: expected embedding_dim \(1024\)"):
        ModelSpec(embedding_dim=1024, encoder_dim=512)


def test_start_up_refuses_a_room_whose_encoder_is_not_the_models(
        imported: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    out, _ = imported
    config = config_from_dict({
        "installation": {"output_dir": str(tmp_path / "out")},
        "audio_out": {"output": "none"},
        "engine": {"generator": "diffusion", "diffusion": {"model": str(out)}},
        "rooms": [{"id": "descriptor"},
                  {"id": "matching", "capture": {"encoder": {
                      "kind": "onnx", "model": str(tmp_path / f"{ENCODER}.onnx")}}}],
    })
    failed = {f.field: f.message for f in deep_check(config).failures}
    assert "rooms[1].capture.encoder" not in failed  # onnx:tiny-encoder is the model's
    message = failed["rooms[0].capture.encoder"]
    assert f"{ENCODER!r}" not in message  # the line names the expected name once, unquoted
    assert ENCODER in message and "'descriptor-v1'" in message
    with pytest.raises(ConfigError, match=r"rooms\[0\]\.capture\.encoder: expected .*"
                                          rf"{ENCODER} \({EMBEDDING}-d\), got 'descriptor-v1'"):
        require_deep_checks(config, "test", echo=lambda _: None)


def test_the_engine_refuses_a_view_from_another_encoder(
        imported: tuple[Path, dict[str, Any]]) -> None:
    out, _ = imported
    generator = DiffusionGenerator(load_model(out), DiffusionConfig(
        model=str(out), window_s=1.28, overlap_s=0.32, steps=2), 16000, 1)
    view = ArtworkView(v=1, room="r", seq=0, time=0.0, state="artwork", artwork_id="a",
                       encoder="descriptor-v1",
                       embedding=Array.from_numpy(random_embedding(1, EMBEDDING)[0]))
    with pytest.raises(InputError, match=rf"expected '{ENCODER}' \({EMBEDDING}-d\).*"
                                         r"got 'descriptor-v1'"):
        generator.prepare(view)
