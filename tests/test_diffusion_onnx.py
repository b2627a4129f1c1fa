"""ONNX export and ONNX Runtime: parity with torch on the tiny model, shape checks at load."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the diffusion extra, which make test installs")
pytest.importorskip("onnxruntime", reason="needs the encoders extra, which make test installs")
pytest.importorskip("onnx", reason="needs the diffusion extra, which make test installs")

from engine.generators.diffusion.backends import TorchBackend  # noqa: E402
from engine.generators.diffusion.config import DiffusionConfig  # noqa: E402
from engine.generators.diffusion.generator import DiffusionGenerator  # noqa: E402
from engine.generators.diffusion.model import load_model  # noqa: E402
from engine.generators.diffusion.onnx_backend import OnnxBackend, export_onnx  # noqa: E402
from engine.generators.diffusion.testing import NUMPY_COPY_WARNING, random_embedding  # noqa: E402
from ground.errors import InputError  # noqa: E402

pytestmark = pytest.mark.filterwarnings(NUMPY_COPY_WARNING)
WINDOW_S = 1.28
FRAMES = 32


@pytest.fixture(scope="module")
def exported(tiny_model_folder: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[Any, Path]:
    out = tmp_path_factory.mktemp("onnx")
    manifest = export_onnx(tiny_model_folder, out, window_s=WINDOW_S, batch=2)
    assert manifest["window_frames"] == FRAMES
    return load_model(tiny_model_folder), out


def test_torch_and_onnxruntime_agree(exported: tuple[Any, Path]) -> None:
    model, out = exported
    ort_backend = OnnxBackend(out, model, ["CPUExecutionProvider"], FRAMES)
    torch_backend = TorchBackend(model)
    g = torch.Generator().manual_seed(0)
    sample = torch.randn(3, 8, FRAMES, 16, generator=g)  # 3 rooms: padded to the batch of 2
    t = torch.tensor(421)
    tokens = torch.randn(3, 8, 768, generator=g)
    support = model.support_prompt.expand(3, -1, -1)
    with torch.inference_mode():
        expected = torch_backend.unet(sample, t, tokens, support, None)
        latents = torch.randn(2, 8, FRAMES, 16, generator=g)
        mel = model.vae.decode(latents / model.vae.config.scaling_factor).sample.squeeze(1)
        expected_audio = torch_backend.decode(latents)
    got = ort_backend.unet(sample, t, tokens, support, None)
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-4)
    ort_mel = ort_backend._run("vae_decoder.onnx", {"latents": latents[:1]})
    torch.testing.assert_close(ort_mel, mel[:1], rtol=1e-3, atol=1e-4)
    got_audio = ort_backend.decode(latents)
    torch.testing.assert_close(got_audio, expected_audio, rtol=1e-3, atol=1e-5)


def test_generator_runs_on_onnxruntime(exported: tuple[Any, Path]) -> None:
    model, out = exported
    config = DiffusionConfig(model=str(model.folder), window_s=WINDOW_S, overlap_s=0.32,
                             steps=2, backend="onnx", onnx_dir=str(out))
    on_ort = DiffusionGenerator(model, config, 16000, 1,
                                OnnxBackend(out, model, ["CPUExecutionProvider"], FRAMES))
    on_torch = DiffusionGenerator(model, config.model_copy(update={"backend": "torch"}),
                                  16000, 1)
    condition = on_torch.condition_from_embedding("a", random_embedding(1))
    a, _ = on_ort.generate(on_ort.start(condition, 1, 0, None), condition, 20000)
    b, _ = on_torch.generate(on_torch.start(condition, 1, 0, None), condition, 20000)
    np.testing.assert_allclose(a.audio, b.audio, atol=1e-3 * max(1e-3, np.abs(b.audio).max()))


def test_mismatched_onnx_file_is_refused(exported: tuple[Any, Path], tmp_path: Path) -> None:
    model, out = exported
    with pytest.raises(InputError) as error:
        OnnxBackend(out, model, ["CPUExecutionProvider"], FRAMES * 2)  # another window
    assert "unet.onnx" in str(error.value) and str(FRAMES) in str(error.value)
    broken = tmp_path / "onnx"
    shutil.copytree(out, broken)
    (broken / "vocoder.onnx").unlink()
    with pytest.raises(InputError, match="vocoder.onnx"):
        OnnxBackend(broken, model, ["CPUExecutionProvider"], FRAMES)
    assert json.loads((out / "onnx_export.json").read_text())["batch"] == 2


def test_unavailable_provider_is_named(exported: tuple[Any, Path]) -> None:
    model, out = exported
    with pytest.raises(InputError, match="TensorrtExecutionProvider"):
        OnnxBackend(out, model, ["TensorrtExecutionProvider"], FRAMES)


def test_provider_options_must_name_a_listed_provider(exported: tuple[Any, Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxruntime

    model, out = exported
    with pytest.raises(ValueError, match="onnx_provider_options.*TensorrtExecutionProvider"):
        DiffusionConfig(model=str(model.folder), backend="onnx", onnx_dir=str(out),
                        onnx_provider_options={"TensorrtExecutionProvider":
                                               {"trt_fp16_enable": "True"}})
    # Options for a listed provider reach every session, in provider order.
    seen: list[Any] = []
    real = onnxruntime.InferenceSession

    def recording(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("provider_options"))
        return real(*args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", recording)
    options = {"CPUExecutionProvider": {"arena_extend_strategy": "kSameAsRequested"}}
    OnnxBackend(out, model, ["CPUExecutionProvider"], FRAMES, options)
    assert seen == [[options["CPUExecutionProvider"]]] * 3


def test_threads_reach_every_session(exported: tuple[Any, Path]) -> None:
    """engine.diffusion.threads caps ONNX Runtime's own pools (torch's setting does not)."""
    model, out = exported
    backend = OnnxBackend(out, model, ["CPUExecutionProvider"], FRAMES, threads=1)
    for name, session in backend.sessions.items():
        options = session.get_session_options()
        assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1), name
        assert options.execution_mode.name == "ORT_SEQUENTIAL", name
    g = torch.Generator().manual_seed(3)
    latents = torch.randn(2, 8, FRAMES, 16, generator=g)
    tokens = torch.randn(2, 8, 768, generator=g)
    support = model.support_prompt.expand(2, -1, -1)
    t = torch.tensor(421)
    with torch.inference_mode():
        eps = TorchBackend(model).unet(latents, t, tokens, support, None)
        audio = TorchBackend(model).decode(latents[:1])
    torch.testing.assert_close(backend.unet(latents, t, tokens, support, None), eps,
                               rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(backend.decode(latents[:1]), audio, rtol=1e-3, atol=1e-5)
    default = OnnxBackend(out, model, ["CPUExecutionProvider"], FRAMES)
    assert default.sessions["unet.onnx"].get_session_options().intra_op_num_threads == 0
    with pytest.raises(InputError, match="engine.diffusion.threads.*-1"):
        OnnxBackend(out, model, ["CPUExecutionProvider"], FRAMES, threads=-1)


def test_the_configs_threads_reach_onnxruntime(exported: tuple[Any, Path]) -> None:
    """From the config a user writes: ``engine.diffusion.threads = 1`` caps ORT's sessions."""
    from engine.config import EngineConfig

    model, out = exported
    before = torch.get_num_threads()
    try:
        config = EngineConfig(generator="diffusion", diffusion=DiffusionConfig(
            model=str(model.folder), window_s=WINDOW_S, overlap_s=0.32, steps=2,
            backend="onnx", onnx_dir=str(out), threads=1))
        generator = DiffusionGenerator.from_config(config)
    finally:
        torch.set_num_threads(before)
    assert isinstance(generator.backend, OnnxBackend)
    for name, session in generator.backend.sessions.items():
        assert session.get_session_options().intra_op_num_threads == 1, name
