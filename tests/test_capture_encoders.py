"""The ONNX image encoder: a tiny CLIP vision model exported and run exactly as a user would."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime", reason="needs the encoders extra, which make test installs")
torch = pytest.importorskip("torch", reason="needs the diffusion extra, which make test installs")
transformers = pytest.importorskip(
    "transformers", reason="needs the diffusion extra, which make test installs"
)

from click.testing import CliRunner  # noqa: E402

from capture.cli import export_encoder_command  # noqa: E402
from capture.config import CaptureConfig, EncoderConfig  # noqa: E402
from capture.descriptor import FEATURE_NAMES  # noqa: E402
from capture.encoders import (  # noqa: E402
    ClipPreprocessing,
    DescriptorEncoder,
    OnnxImageEncoder,
    make_encoder,
)
from capture.synthetic.artworks import make_artwork  # noqa: E402
from ground.errors import InputError  # noqa: E402

PROJECTION = 16


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight CLIPVisionModelWithProjection + CLIPImageProcessor, saved."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                              num_attention_heads=4, image_size=40, patch_size=8,
                              projection_dim=PROJECTION)
    folder = tmp_path_factory.mktemp("tiny-clip")
    CLIPVisionModelWithProjection(config).eval().save_pretrained(folder)
    # Deliberately not the CLIP defaults, so the test sees them read from the file.
    CLIPImageProcessor(size={"shortest_edge": 46}, crop_size={"height": 40, "width": 40},
                       image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.25, 0.3]
                       ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def onnx_path(clip_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Exported through the command a user runs."""
    out = tmp_path_factory.mktemp("export") / "encoder.onnx"
    result = CliRunner().invoke(export_encoder_command, [str(clip_dir), str(out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert out.is_file() and out.with_suffix(".preprocessor.json").is_file()
    return out


def _images() -> list[np.ndarray]:
    # Landscape, portrait and a small one (upscaled), so resize and crop are exercised.
    return [make_artwork(0, 3, (120, 90)), make_artwork(5, 3, (70, 130)),
            make_artwork(2, 3, (33, 31))]


def test_preprocessing_matches_the_image_processor(clip_dir: Path) -> None:
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor.from_pretrained(str(clip_dir), local_files_only=True)
    ours = ClipPreprocessing.from_file(clip_dir / "preprocessor_config.json")
    assert ours.shortest_edge == 46 and ours.image_mean == (0.4, 0.5, 0.6)
    for bgr in _images():
        theirs = processor(images=bgr[..., ::-1].copy(), return_tensors="np")["pixel_values"]
        mine = ours(bgr)
        assert mine.shape == theirs.shape == (1, 3, 40, 40)
        assert np.abs(mine - theirs).max() < 1e-5


def test_onnx_runtime_agrees_with_torch_and_is_normalised(clip_dir: Path,
                                                          onnx_path: Path) -> None:
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    encoder = OnnxImageEncoder(onnx_path)
    processor = CLIPImageProcessor.from_pretrained(str(clip_dir), local_files_only=True)
    model = CLIPVisionModelWithProjection.from_pretrained(str(clip_dir), local_files_only=True)
    embeddings = []
    for bgr in _images():
        pixels = processor(images=bgr[..., ::-1].copy(), return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            reference = model(pixel_values=pixels).image_embeds[0].numpy()
        reference = reference / np.linalg.norm(reference)
        ours = encoder.embed(bgr)
        assert ours.shape == (PROJECTION,) and ours.dtype == np.float32
        assert abs(float(np.linalg.norm(ours)) - 1.0) < 1e-5
        assert np.abs(ours - reference).max() < 1e-4
        embeddings.append(ours)
    # Different paintings, different embeddings (the model is random, not constant).
    assert np.abs(embeddings[0] - embeddings[1]).max() > 1e-3
    assert encoder.name == "onnx:encoder" and encoder.dim == PROJECTION


def test_capture_config_selects_the_encoder(onnx_path: Path) -> None:
    onnx = make_encoder(EncoderConfig(kind="onnx", model=str(onnx_path)))
    assert isinstance(onnx, OnnxImageEncoder)
    assert isinstance(make_encoder(EncoderConfig()), DescriptorEncoder)
    with pytest.raises(ValueError, match="needs model"):
        EncoderConfig(kind="onnx")
    with pytest.raises(InputError, match="expected an .onnx file"):
        OnnxImageEncoder(onnx_path.with_name("missing.onnx"))


def test_the_capture_loop_publishes_the_onnx_embedding(onnx_path: Path) -> None:
    from capture.loop import CaptureLoop
    from ground.protocol import ArtworkView

    now = [1000.0]
    published: list[ArtworkView] = []
    config = CaptureConfig(encoder=EncoderConfig(kind="onnx", model=str(onnx_path)))
    loop = CaptureLoop("room-x", config, published.append, lambda kind, **fields: None,
                       clock=lambda: now[0])
    for _ in range(30):  # 2 s at 15 fps
        loop.step()
        now[0] += 1.0 / 15.0
    views = [v for v in published if v.state == "artwork"]
    assert views, "no artwork confirmed in 2 s of the demo camera"
    for view in views:
        assert view.encoder == "onnx:encoder"
        assert view.embedding is not None and view.embedding.to_numpy().shape == (PROJECTION,)
        assert tuple(view.features) == FEATURE_NAMES  # features stay the descriptor's


def test_export_refuses_a_folder_without_a_processor(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    result = CliRunner().invoke(export_encoder_command, [str(tmp_path),
                                                         str(tmp_path / "x.onnx")])
    assert isinstance(result.exception, InputError)
    assert "preprocessor_config.json" in str(result.exception)


def test_export_refuses_an_opset_out_of_range_and_a_path_below_a_file(tmp_path: Path) -> None:
    # Both were tracebacks (torch's exporter on --opset 0; FileExistsError for the path).
    for opset in ("0", "13", "21"):
        result = CliRunner().invoke(export_encoder_command, [str(tmp_path),
                                                             str(tmp_path / "x.onnx"),
                                                             "--opset", opset])
        assert result.exit_code == 2 and "Invalid value for '--opset'" in result.output
    (tmp_path / "taken").write_bytes(b"\x00")
    result = CliRunner().invoke(export_encoder_command, [str(tmp_path),
                                                         str(tmp_path / "taken" / "x.onnx")])
    assert isinstance(result.exception, InputError)
    assert str(result.exception) == (f"cannot write OUT_PATH {tmp_path / 'taken' / 'x.onnx'}: "
                                     f"{tmp_path / 'taken'} is a file, not a folder")
