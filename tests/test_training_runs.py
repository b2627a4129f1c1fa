"""Training runs as machinery: exact resume, the published projection format, the output folder,
checkpoints, and the training benchmark (a few steps each, on a small tone dataset)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="needs the diffusion extra, which make test installs")
pytest.importorskip("diffusers", reason="needs the diffusion extra, which make test installs")

from safetensors.torch import load_file  # noqa: E402

from engine.generators.diffusion.model import IMAGE_PROJECTION_FILE, load_model  # noqa: E402
from engine.generators.diffusion.testing import NUMPY_COPY_WARNING  # noqa: E402
from ground.errors import InputError  # noqa: E402
from training.cache import build_training_data  # noqa: E402
from training.data import validate_dataset  # noqa: E402
from training.distill import DistillConfig, distill  # noqa: E402
from training.features import make_encoder  # noqa: E402
from training.projection import (  # noqa: E402
    ProjectionConfig,
    train_projection,
)
from training.testing import tone_dataset_dir  # noqa: E402

pytestmark = pytest.mark.filterwarnings(NUMPY_COPY_WARNING)
ROOT = Path(__file__).resolve().parents[1]

PROJECTION = ProjectionConfig(steps=4, batch_size=4, lr=1e-3, clip_s=0.32, latents="sample",
                              train_all=True, min_snr_gamma=5.0, validate_every=2,
                              val_batches=1, checkpoint_every=1, log_every=1, device="cpu")
DISTILL = DistillConfig(steps=4, batch_size=4, lr=1e-4, clip_s=0.32, latents="sample",
                        guidance_embedding_dim=32, validate_every=0, checkpoint_every=1,
                        log_every=1, device="cpu")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """One torch thread: on a shared 2-core runner, two threads spin against each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tone_dataset_dir(tmp_path_factory.getbasetemp() / "run-datasets", 12, 0.64,
                            val_count=2)


def latest_checkpoint(folder: Path) -> Path:
    return sorted((folder / "training" / "checkpoints").glob("step-*"))[-1]


def weights_of(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(latest_checkpoint(folder) / "weights.safetensors"))


def optimizer_of(folder: Path) -> dict[str, torch.Tensor]:
    """The AdamW state of the latest checkpoint, flattened (``param.name`` -> tensor)."""
    state = torch.load(latest_checkpoint(folder) / "state.pt", map_location="cpu",
                       weights_only=True)
    flat = {f"{param}.{name}": value if torch.is_tensor(value) else torch.tensor(value)
            for param, entries in state["optimizer"]["state"].items()
            for name, value in entries.items()}
    assert flat, "no optimizer state in the checkpoint"
    return flat


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def test_projection_resume_is_exact(tmp_path: Path, training_model_folder: Path,
                                    data_dir: Path) -> None:
    """N steps straight == K steps, stop, resume to N: bit for bit, parameters and AdamW state,
    with every run filling its own caches (cold) -- the first half of the resumed run encodes
    its data in the process that trains, its second half reads them back."""
    half = replace(PROJECTION, steps=2)
    train_projection(training_model_folder, data_dir, tmp_path / "resumed", half,
                     cache_dir=tmp_path / "cache-resumed", progress=False)
    straight = train_projection(training_model_folder, data_dir, tmp_path / "straight", PROJECTION,
                                cache_dir=tmp_path / "cache-straight", progress=False)
    assert straight.cache["latent_misses"] > 0 and straight.cache["latent_hits"] == 0
    assert straight.step == 4 and len(straight.train_loss) == 4 and len(straight.val_loss) == 2
    resumed = train_projection(training_model_folder, data_dir, tmp_path / "resumed", PROJECTION,
                               cache_dir=tmp_path / "cache-resumed", resume=True,
                               progress=False)
    assert resumed.step == 4 and resumed.cache["latent_misses"] == 0
    assert_same(weights_of(tmp_path / "straight"), weights_of(tmp_path / "resumed"))
    assert_same(optimizer_of(tmp_path / "straight"), optimizer_of(tmp_path / "resumed"))
    written = [load_file(str(tmp_path / name / IMAGE_PROJECTION_FILE))
               for name in ("straight", "resumed")]
    assert_same(*written)
    # The run log continues across the resume; the validation loss is comparable (fixed draws).
    log = [json.loads(line) for line in
           (tmp_path / "resumed" / "training" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]
    assert [r["val_loss"] for r in log if "val_loss" in r] == [v for _, v in straight.val_loss]
    assert len(list((tmp_path / "straight" / "training" / "checkpoints").glob("step-*"))) == 3


def test_fresh_and_cached_data_are_the_same_tensors(tmp_path: Path, training_model_folder: Path,
                                                    data_dir: Path) -> None:
    """What a run trains on does not depend on whether it encoded its caches: same values and
    same (row-major) layout, the layout deciding which kernels the UNet runs."""
    from training.projection import load_training_model

    model = load_training_model(training_model_folder, "cpu")
    items = validate_dataset(data_dir, 0.32).items
    fresh = build_training_data(model, items, make_encoder("descriptor"), tmp_path, 0.32)
    cached = build_training_data(model, items, make_encoder("descriptor"), tmp_path, 0.32)
    assert fresh.latent_stats.misses == len(items) and cached.latent_stats.hits == len(items)
    for name in ("latent_mean", "latent_std", "embeddings"):
        a, b = getattr(fresh, name), getattr(cached, name)
        assert torch.equal(a, b), name
        assert a.is_contiguous() and b.is_contiguous() and a.stride() == b.stride(), name


def test_resume_refuses_a_changed_recipe(tmp_path: Path, training_model_folder: Path,
                                         data_dir: Path) -> None:
    train_projection(training_model_folder, data_dir, tmp_path / "run",
                     replace(PROJECTION, steps=1), progress=False)
    with pytest.raises(InputError, match="--batch-size was 4 in the checkpointed run, got 2"):
        train_projection(training_model_folder, data_dir, tmp_path / "run",
                         replace(PROJECTION, batch_size=2), resume=True, progress=False)
    with pytest.raises(InputError, match="--resume: no checkpoint in"):
        train_projection(training_model_folder, data_dir, tmp_path / "fresh", PROJECTION,
                         resume=True, progress=False)


def test_published_projection_recipe_and_output_folder(tmp_path: Path, training_model_folder: Path,
                                                       data_dir: Path) -> None:
    """Only the projection trains, from a published-format (.pt state dict) checkpoint; the
    output links every frozen part and the engine loads it unchanged."""
    source = load_model(training_model_folder)
    init = {k: v * 0.5 for k, v in source.conditioner.state_dict().items()}
    torch.save(init, tmp_path / "projection.pt")
    config = replace(PROJECTION, steps=1, train_all=False, lr=2e-5, validate_every=0)
    train_projection(training_model_folder, data_dir, tmp_path / "out", config,
                     init_projection=tmp_path / "projection.pt", progress=False)
    out = tmp_path / "out"
    trained = load_file(str(out / IMAGE_PROJECTION_FILE))
    for key, value in init.items():  # one tiny AdamW step away from the initialisation
        assert (trained[key] - value).abs().max() < 1e-4
        assert not torch.equal(trained[key], value)
    for frozen in ("unet/diffusion_pytorch_model.safetensors", "vae/config.json",
                   "language_model/model.safetensors", "support_prompt.safetensors"):
        source_inode = (training_model_folder / frozen).stat().st_ino
        assert (out / frozen).stat().st_ino == source_inode, frozen
    loaded = load_model(out)
    assert loaded.spec == source.spec


def test_distill_resume_is_exact(tmp_path: Path, training_model_folder: Path,
                                 data_dir: Path) -> None:
    """As for the projection: cold caches, student, EMA target and AdamW state bit for bit."""
    distill(training_model_folder, data_dir, tmp_path / "resumed", replace(DISTILL, steps=2),
            cache_dir=tmp_path / "cache-resumed", progress=False)
    distill(training_model_folder, data_dir, tmp_path / "straight", DISTILL,
            cache_dir=tmp_path / "cache-straight", progress=False)
    distill(training_model_folder, data_dir, tmp_path / "resumed", DISTILL,
            cache_dir=tmp_path / "cache-resumed", resume=True, progress=False)
    straight, resumed = weights_of(tmp_path / "straight"), weights_of(tmp_path / "resumed")
    assert any(k.startswith("target.") for k in straight)
    assert_same(straight, resumed)
    assert_same(optimizer_of(tmp_path / "straight"), optimizer_of(tmp_path / "resumed"))
    student = load_model(tmp_path / "resumed")
    assert student.spec.sampler == "consistency" and student.spec.guidance_embedding_dim == 32
    assert student.spec.guidance_range == (DISTILL.guidance_min, DISTILL.guidance_max)
    assert student.unet.config.time_cond_proj_dim == 32


def test_distill_refuses_a_student_as_teacher(tmp_path: Path, data_dir: Path) -> None:
    from engine.generators.diffusion.model import make_tiny_model

    student = make_tiny_model(tmp_path / "student", embedding_dim=130, lm_width=96,
                              support_width=64, student=True)
    with pytest.raises(InputError, match="already has a guidance embedding"):
        distill(student, data_dir, tmp_path / "out", DISTILL, progress=False)


def test_train_benchmark_runs_tiny_on_cpu(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import train_gpu
    finally:
        sys.path.pop(0)
    result = train_gpu.main(["--tiny", "--out", str(tmp_path), "--steps", "1", "--warmup", "0",
                             "--threads", "1"])
    assert [row["mode"] for row in result["modes"]] == ["projection", "all", "distill"]
    assert all(row["clips_per_s"] > 0 for row in result["modes"])
    modes = {row["mode"]: row for row in result["modes"]}
    assert modes["projection"]["trainable_parameters"] < modes["all"]["trainable_parameters"]
