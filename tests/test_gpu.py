"""CUDA-only checks of the diffusion engine: whole-window CUDA graphs against eager, half
precision, bucket reuse, and ONNX Runtime's CUDA provider against torch.

Skipped where there is no CUDA device (CI, this project's CPU machines); run by
``benchmarks/device/gpu-checks.sh`` on a lent GPU: ``pytest -m gpu tests/test_gpu.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the diffusion extra, which make test installs")
pytest.importorskip("diffusers", reason="needs the diffusion extra, which make test installs")

from engine.generators.diffusion.config import DiffusionConfig  # noqa: E402
from engine.generators.diffusion.generator import DiffusionGenerator  # noqa: E402
from engine.generators.diffusion.loudness import MAX_GAIN_DB  # noqa: E402
from engine.generators.diffusion.model import load_model  # noqa: E402
from engine.generators.diffusion.testing import NUMPY_COPY_WARNING, random_embedding  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.filterwarnings(NUMPY_COPY_WARNING),
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

WINDOW = dict(window_s=1.28, overlap_s=0.32, steps=4)

#: The generator's loudness follower scales the audio, and with it the rounding that
#: separates two ways of computing it, by up to MAX_GAIN_DB: tolerances below are the
#: model's own, times that.
LEVELLED = 10 ** (MAX_GAIN_DB / 20)


@pytest.fixture(scope="module")
def models(tiny_model_folder: Path, tiny_student_folder: Path) -> dict[str, Path]:
    return {"solver": tiny_model_folder, "student": tiny_student_folder}


def _stream(generator: DiffusionGenerator, rooms: int, windows: int) -> list[np.ndarray]:
    """``windows`` windows for each of ``rooms`` rooms, batched; each room's audio."""
    conditions = [generator.condition_from_embedding(f"art-{i}", random_embedding(i))
                  for i in range(rooms)]
    states = [generator.start(c, 10 + i, 0, None) for i, c in enumerate(conditions)]
    frames = windows * generator.plan.hop_samples * generator.sample_rate \
        // generator.plan.model_rate
    results = generator.generate_batch([(s, c, frames) for s, c in zip(states, conditions,
                                                                        strict=True)])
    return [generated.audio for generated, _ in results]


@pytest.mark.parametrize("kind", ["solver", "student"])
@pytest.mark.parametrize("dtype,atol", [("float32", 1e-4 * LEVELLED),
                                        ("float16", 2e-2 * LEVELLED),
                                        ("bfloat16", 5e-2 * LEVELLED)])
def test_window_graph_replays_what_eager_computes(models: dict[str, Path], kind: str,
                                                  dtype: str, atol: float) -> None:
    model = load_model(models[kind], "cuda", dtype)
    guidance = 1.0 if kind == "student" else 2.0  # the solver with classifier-free guidance
    config = DiffusionConfig(model=str(models[kind]), guidance_scale=guidance, **WINDOW)
    eager = DiffusionGenerator(model, config.model_copy(update={"cuda_graphs": False}),
                               16000, 1)
    graphed = DiffusionGenerator(model, config, 16000, 1)
    assert graphed.use_graphs and not eager.use_graphs
    for rooms in (1, 3):  # buckets 1 and 4 (padded)
        expected = _stream(eager, rooms, windows=3)
        got = _stream(graphed, rooms, windows=3)
        for room, (a, b) in enumerate(zip(expected, got, strict=True)):
            assert np.isfinite(b).all(), f"room {room}: non-finite audio from the graph"
            assert np.abs(b).max() > 0.0
            np.testing.assert_allclose(b, a, rtol=0, atol=atol, err_msg=f"room {room}")
    # One graph per input shape: (bucket 1, 4) x (starting, continuing).
    assert len(graphed._graphs) == 4


def test_warmed_graphs_share_one_pool_and_replay_in_any_order(models: dict[str, Path]) -> None:
    """warm_graphs captures every bucket's two shapes up front, in one memory pool; replayed
    in another order than captured (bucket 4, then 1, then 4 again), each room's audio is
    still what eager computes."""
    model = load_model(models["solver"], "cuda", "float16")
    config = DiffusionConfig(model=str(models["solver"]), batch_buckets=(1, 2, 4), **WINDOW)
    eager = DiffusionGenerator(model, config.model_copy(update={"cuda_graphs": False}),
                               16000, 1)
    graphed = DiffusionGenerator(model, config, 16000, 1)
    assert graphed.warm_graphs() == 6  # (1, 2, 4) x (starting, continuing)
    for rooms in (3, 1, 4):
        expected = _stream(eager, rooms, windows=3)
        got = _stream(graphed, rooms, windows=3)
        for room, (a, b) in enumerate(zip(expected, got, strict=True)):
            np.testing.assert_allclose(b, a, rtol=0, atol=2e-2 * LEVELLED,
                                       err_msg=f"room {room}")
    assert len(graphed._graphs) == 6  # nothing captured after the warm-up


def test_replay_follows_new_inputs_not_the_captured_ones(models: dict[str, Path]) -> None:
    """A graph captured on one artwork, replayed on another, gives the other's audio."""
    model = load_model(models["solver"], "cuda", "float16")
    config = DiffusionConfig(model=str(models["solver"]), **WINDOW)
    generator = DiffusionGenerator(model, config, 16000, 1)
    first = _stream(generator, 1, windows=2)[0]
    conditions = generator.condition_from_embedding("other", random_embedding(99))
    state = generator.start(conditions, 10, 0, None)
    frames = len(first)
    other, _ = generator.generate(state, conditions, frames)
    assert not np.allclose(other.audio[:, 0], first[:, 0], atol=1e-3)


def test_onnx_runtime_cuda_provider_agrees_with_torch(models: dict[str, Path],
                                                      tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime", reason="needs the diffusion extra")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA provider here (install onnxruntime-gpu)")
    from engine.generators.diffusion.onnx_backend import OnnxBackend, export_onnx

    folder = models["solver"]
    export_onnx(folder, tmp_path / "onnx", window_s=WINDOW["window_s"])
    model = load_model(folder, "cuda", "float32")
    config = DiffusionConfig(model=str(folder), cuda_graphs=False, **WINDOW)
    reference = DiffusionGenerator(model, config, 16000, 1)
    backend: Any = OnnxBackend(tmp_path / "onnx", model,
                               ["CUDAExecutionProvider", "CPUExecutionProvider"],
                               reference.plan.window_frames)
    onnx = DiffusionGenerator(model, config, 16000, 1, backend)
    np.testing.assert_allclose(_stream(onnx, 1, 2)[0], _stream(reference, 1, 2)[0],
                               rtol=0, atol=1e-3 * LEVELLED)


def test_compiled_unet_in_the_window_graph_matches_eager(models: dict[str, Path]) -> None:
    """engine.diffusion.compile: inductor's kernels, captured in the window graph, give the
    eager window's audio."""
    eager_model = load_model(models["solver"], "cuda", "float32")
    config = DiffusionConfig(model=str(models["solver"]), **WINDOW)
    expected = _stream(DiffusionGenerator(eager_model, config.model_copy(
        update={"cuda_graphs": False}), 16000, 1), 1, windows=2)[0]
    model = load_model(models["solver"], "cuda", "float32")
    compiled = DiffusionGenerator(model, config.model_copy(update={"compile": "default"}),
                                  16000, 1)
    assert compiled.use_graphs and model.unet._art2mus_compiled == "default"
    got = _stream(compiled, 1, windows=2)[0]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3 * LEVELLED)
