"""ONNX export and ONNX Runtime: parity with torch on the tiny model, shape checks at load."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the diffusion extra, which make test installs")
onnxruntime = pytest.importorskip("onnxruntime",
                                  reason="needs the encoders extra, which make test installs")
pytest.importorskip("onnx", reason="needs the diffusion extra, which make test installs")

from safetensors.torch import load_file, save_file  # noqa: E402

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


# -- what the backend refuses at load, before the engine serves ------------------------------


def copy_export(out: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "onnx"
    shutil.copytree(out, copy)
    return copy


def test_the_export_records_the_model_it_comes_from(exported: tuple[Any, Path]) -> None:
    model, out = exported
    manifest = json.loads((out / "onnx_export.json").read_text())
    assert manifest["model"] == str(model.folder.resolve()) and manifest["window_s"] == WINDOW_S
    assert sorted(manifest["source"]) == ["unet", "vae", "vocoder"]
    weights = model.folder / "unet" / "diffusion_pytorch_model.safetensors"
    recorded = manifest["source"]["unet"]["diffusion_pytorch_model.safetensors"]
    assert recorded["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert recorded["bytes"] == weights.stat().st_size
    assert sorted(manifest["source"]["vae"]) == ["config.json",
                                                 "diffusion_pytorch_model.safetensors"]


def test_files_exported_from_another_model_are_refused(exported: tuple[Any, Path],
                                                       tmp_path: Path) -> None:
    # Same shapes, other weights (another seed, a retrained model): the files were accepted
    # and the room played the other model's audio.
    model, out = exported
    other = tmp_path / "other-model"
    shutil.copytree(model.folder, other)
    copied = replace(model, folder=other)
    # a copy of the same model (every file's time kept, its path not): hashed, accepted
    assert OnnxBackend(out, copied, ["CPUExecutionProvider"], FRAMES).batch == 2
    weights = other / "vae" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(str(weights))
    tensors["decoder.conv_out.bias"] += 0.5
    save_file(tensors, str(weights))
    with pytest.raises(InputError) as error:
        OnnxBackend(out, copied, ["CPUExecutionProvider"], FRAMES)
    assert str(error.value) == (
        f"ONNX files in {out}: expected an export of the model {other}, got an export of "
        f"{model.folder.resolve()} whose vae/diffusion_pytorch_model.safetensors differs from "
        f"{weights}; re-export with `art2mus export-onnx {other} {out} --window-s 1.28 "
        f"--batch 2`")


@pytest.mark.parametrize("manifest", ["older", "missing"])
def test_an_export_that_does_not_name_its_model_is_refused(
        exported: tuple[Any, Path], tmp_path: Path, manifest: str) -> None:
    model, out = exported
    copy = copy_export(out, tmp_path)
    path = copy / "onnx_export.json"
    if manifest == "older":  # as export-onnx wrote it before the fingerprint
        data = json.loads(path.read_text())
        del data["source"]
        path.write_text(json.dumps(data))
        got = (f"got an export without the fingerprint of its model ({data['model']}; an "
               f"earlier art2mus wrote none)")
    else:
        path.unlink()
        got = f"got no {path} (art2mus export-onnx writes it beside the files)"
    with pytest.raises(InputError) as error:
        OnnxBackend(copy, model, ["CPUExecutionProvider"], FRAMES)
    assert str(error.value) == (
        f"ONNX files in {copy}: expected an export of the model {model.folder}, {got}; "
        f"re-export with `art2mus export-onnx {model.folder} {copy} --window-s 1.28 --batch 2`")


def _float16_input(path: Path) -> None:
    """The vocoder as another tool converts it: the same names and shapes, a float16 input."""
    import onnx
    from onnx import TensorProto, helper

    graph = onnx.load(str(path))
    given = graph.graph.input[0]
    given.type.tensor_type.elem_type = TensorProto.FLOAT16
    for node in graph.graph.node:
        node.input[:] = [f"{x}_f32" if x == given.name else x for x in node.input]
    graph.graph.node.insert(0, helper.make_node("Cast", [given.name], [f"{given.name}_f32"],
                                                to=TensorProto.FLOAT))
    onnx.save(graph, str(path))


def _opset_99(path: Path) -> None:
    import onnx

    graph = onnx.load(str(path))
    for opset in graph.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = 99
    onnx.save(graph, str(path))


def test_an_input_of_another_element_type_is_refused(exported: tuple[Any, Path],
                                                     tmp_path: Path) -> None:
    # It passed the shape check and failed at the first window, while serving.
    model, out = exported
    copy = copy_export(out, tmp_path)
    _float16_input(copy / "vocoder.onnx")
    with pytest.raises(InputError) as error:
        OnnxBackend(copy, model, ["CPUExecutionProvider"], FRAMES)
    assert str(error.value) == (
        f"ONNX inputs in {copy}: expected {copy / 'vocoder.onnx'} to take mel as "
        f"tensor(float) (what the engine binds; float16 on TensorRT is its trt_fp16_enable "
        f"option), got tensor(float16); re-export with `art2mus export-onnx {model.folder} "
        f"{copy} --window-s 1.28 --batch 2`")


@pytest.mark.parametrize(("file", "damage", "got"), [
    ("unet.onnx", lambda p: p.write_bytes(b"\0not an onnx file" * 100),
     "InvalidProtobuf: INVALID_PROTOBUF : Protobuf parsing failed."),
    ("vae_decoder.onnx", lambda p: p.write_bytes(b""),
     "InvalidArgument: INVALID_ARGUMENT : No graph was found in the protobuf."),
    ("vocoder.onnx", _opset_99, "Fail: FAIL : ONNX Runtime only *guarantees* support for "
                                "models stamped with official released onnx opset versions."),
])
def test_a_file_onnxruntime_cannot_open_is_an_input_error(
        exported: tuple[Any, Path], tmp_path: Path, file: str, damage: Any, got: str) -> None:
    # ONNX Runtime's own exceptions made the engine exit 1, restarted forever.
    model, out = exported
    copy = copy_export(out, tmp_path)
    damage(copy / file)
    with pytest.raises(InputError) as error:
        OnnxBackend(copy, model, ["CPUExecutionProvider"], FRAMES)
    message = str(error.value)
    assert message.startswith(f"ONNX files in {copy}: expected {copy / file} to be a model "
                              f"ONNX Runtime {onnxruntime.__version__} opens, got {got}")
    assert message.endswith(f"; re-export with `art2mus export-onnx {model.folder} {copy} "
                            f"--window-s 1.28 --batch 2`") and "\n" not in message


def test_another_window_is_refused_with_the_export_that_fits(exported: tuple[Any, Path]
                                                              ) -> None:
    model, out = exported
    with pytest.raises(InputError) as error:
        OnnxBackend(out, model, ["CPUExecutionProvider"], FRAMES * 2)  # window_s = 2.56
    message = str(error.value)
    assert message.startswith(f"ONNX inputs in {out}: expected {out / 'unet.onnx'} to take ")
    assert "(the model " f"{model.folder} at window_s 2.56: 64 latent frames), got " in message
    assert message.endswith(f"(exported at --window-s 1.28); re-export with `art2mus "
                            f"export-onnx {model.folder} {out} --window-s 2.56 --batch 2`")


def test_the_readme_exports_for_the_tiny_configs_window() -> None:
    # Following the README literally exported 2.56 s windows for a config of 1.28 s.
    import tomllib

    root = Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / "configs" / "diffusion-tiny.toml").read_text())
    window_s = config["engine"]["diffusion"]["window_s"]
    command = f"art2mus export-onnx out/tiny-model out/tiny-onnx --window-s {window_s:g}"
    assert command in (root / "README.md").read_text()
    assert command in (root / "configs" / "diffusion-tiny.toml").read_text()


def test_the_deep_check_opens_the_files_as_the_engine_would(exported: tuple[Any, Path],
                                                            tmp_path: Path) -> None:
    from installation.config import config_from_dict
    from installation.doctor import deep_check

    model, out = exported

    def engine_failures(onnx_dir: Path, window_s: float) -> list[str]:
        config = config_from_dict({
            "installation": {"output_dir": str(tmp_path / "out")},
            "supervisor": {"roles": ["engine"]},
            "engine": {"generator": "diffusion", "diffusion": {
                "model": str(model.folder), "device": "cpu", "backend": "onnx",
                "onnx_dir": str(onnx_dir), "window_s": window_s, "overlap_s": 0.32}},
            "rooms": [{"id": "a"}]})
        return [f.line() for f in deep_check(config).failures if f.field.startswith("engine")]

    assert engine_failures(out, WINDOW_S) == []
    assert engine_failures(out, 2.56) == [
        f"engine.diffusion.onnx_dir: expected {out / 'unet.onnx'} to take {{'sample': "
        f"[2, 8, 64, 16], 'timestep': [1], 'tokens': [2, 8, 768], 'support': [2, 8, 1024]}} "
        f"(the model {model.folder} at window_s 2.56: 64 latent frames), got {{'sample': "
        f"[2, 8, 32, 16], 'timestep': [1], 'tokens': [2, 8, 768], 'support': [2, 8, 1024]}} "
        f"(exported at --window-s 1.28); re-export with `art2mus export-onnx {model.folder} "
        f"{out} --window-s 2.56 --batch 2`"]
    copy = copy_export(out, tmp_path)
    _float16_input(copy / "vocoder.onnx")
    assert [line.split(" to take ")[0] for line in engine_failures(copy, WINDOW_S)] == [
        f"engine.diffusion.onnx_dir: expected {copy / 'vocoder.onnx'}"]
