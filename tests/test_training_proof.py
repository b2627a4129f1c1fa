"""The proof on a CPU: teach a tiny model that lighter images sound higher, distil it to a
few-step student, and check both follow the image on held-out paintings and stream in the engine.

Flow (all through the user's commands): a generated tone dataset (lightness -> pitch) ->
``art2mus train-projection --train-all`` on a tiny random model -> ``art2mus distill --steps 4``
-> held-out images sampled by teacher (DPM-Solver++, 25 steps) and student (LCM, 4 steps) ->
a ridge probe fitted on the data's own latents reads the pitch back -> Spearman with the
hidden attribute; student-vs-teacher latent error; DiffusionGenerator streams both folders.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the diffusion extra, which make test installs")
pytest.importorskip("diffusers", reason="needs the diffusion extra, which make test installs")

from click.testing import CliRunner  # noqa: E402

from engine.config import EngineConfig  # noqa: E402
from engine.generators.diffusion.config import DiffusionConfig  # noqa: E402
from engine.generators.diffusion.generator import DiffusionGenerator  # noqa: E402
from engine.generators.diffusion.model import load_model  # noqa: E402
from engine.generators.diffusion.testing import NUMPY_COPY_WARNING  # noqa: E402
from ground.protocol import Array, ArtworkView  # noqa: E402
from installation.cli import cli  # noqa: E402
from training.cache import build_training_data  # noqa: E402
from training.data import validate_dataset  # noqa: E402
from training.evaluate import (  # noqa: E402
    LatentProbe,
    relative_mse,
    sample_latents,
    spearman,
)
from training.features import make_encoder, read_image  # noqa: E402
from training.testing import tone_dataset_dir  # noqa: E402

pytestmark = pytest.mark.filterwarnings(NUMPY_COPY_WARNING)

CLIP_S = "0.32"
# The scale the student is distilled at (baked in) and both are checked at. Measured on the
# dev machine, the 25-step teacher follows the image only when guided (rho 0.26 / 0.39 at
# w = 1, 0.68 / 0.74 at 2.5, 0.78 / 0.84 at 4, noise seeds 5 / 6).
GUIDANCE = 4.0
# Batch 8: half the compute of batch 16 for the same 300 updates, and as good a teacher here.
TRAIN = ["--train-steps", "300", "--batch-size", "8", "--lr", "2e-3", "--weight-decay", "0",
         "--min-snr", "5", "--train-all", "--rescale-latents", "--latents", "mean",
         "--clip-s", CLIP_S, "--validate-every", "50", "--checkpoint-every", "100",
         "--log-every", "25", "--device", "cpu", "--threads", "1", "--quiet"]
# --ddim-timesteps 8: a teacher ODE grid of 8 points (skip 125) instead of LCM's 50 (skip 20).
# Consistency propagates from t = 0 up the grid one link per target update, and each pair
# carries only one link's worth of the teacher's guidance; 50 optimizer steps cannot carry it
# up 50 links. With 8 points (which hold the 1/2/4/8-step sampling timesteps) the student
# follows the image better at every step count (50 points gave 0.58 / 0.71 / 0.47 / 0.64 at
# 1 / 2 / 4 / 8 steps).
# --guidance-min = --guidance-max: the scale is baked in (the recipe for short runs). A student
# distilled over a range learns to ignore w in 50 steps (its w = 1 and w = 4 samples differ by
# 0.001 relative MSE, the teacher's by 0.03), so a range only claims what it cannot deliver;
# baked in (at 2.5 or 4) it followed the image as well or better at every step count.
# --teacher-steps 10: the in-training validation reference only (the tests hold the student
# to a 25-step teacher).
DISTILL = ["--steps", "4", "--train-steps", "50", "--batch-size", "16", "--lr", "1e-3",
           "--ddim-timesteps", "8", "--guidance-min", str(GUIDANCE), "--guidance-max",
           str(GUIDANCE), "--guidance-dim", "32", "--latents", "mean", "--clip-s", CLIP_S,
           "--teacher-steps", "10", "--validate-every", "50", "--val-fraction", "0",
           "--checkpoint-every", "50", "--log-every", "25", "--device", "cpu", "--threads",
           "1", "--quiet"]


@pytest.fixture(scope="module")
def run(training_model_folder: Path, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[dict[str, Any]]:
    """Dataset, tiny model, trained teacher and distilled student (once for the module)."""
    before = torch.get_num_threads()
    root = tmp_path_factory.getbasetemp()
    model_dir = training_model_folder
    data = tone_dataset_dir(root / "proof-data", 400, 0.32, val_count=16, test_count=32)
    teacher, student = root / "proof-teacher", root / "proof-student"
    trained = CliRunner().invoke(cli, ["train-projection", "--model", str(model_dir), "--data",
                                       str(data), "--out", str(teacher), *TRAIN])
    assert trained.exit_code == 0, trained.output
    distilled = CliRunner().invoke(cli, ["distill", "--teacher", str(teacher), "--data",
                                         str(data), "--out", str(student), *DISTILL])
    assert distilled.exit_code == 0, distilled.output
    yield {"model": model_dir, "data": data, "teacher": teacher, "student": student,
           "train_report": json.loads(trained.output),
           "distill_report": json.loads(distilled.output)}
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def held_out(run: dict[str, Any]) -> tuple[torch.Tensor, np.ndarray, LatentProbe]:
    """Held-out (test split) embeddings and attributes, and a probe fitted on training latents."""
    data = run["data"]
    rows = list(csv.DictReader((data / "manifest.csv").read_text().splitlines()))
    encoder = make_encoder("descriptor")
    test = [r for r in rows if r["split"] == "test"]
    embeddings = torch.from_numpy(np.stack([encoder(read_image(data / r["image"]))
                                            for r in test]))
    attributes = np.array([float(r["attribute"]) for r in test])
    teacher = load_model(run["teacher"])
    report = validate_dataset(data, float(CLIP_S))
    by_line = {item.line: float(row["attribute"]) for item, row in zip(report.items, rows,
                                                                       strict=True)}
    train = build_training_data(teacher, report.items, encoder,
                                data / ".art2mus-cache", float(CLIP_S)).subset("train")
    latents = train.latent_mean * teacher.vae.config.scaling_factor
    probe = LatentProbe(latents, np.array([by_line[line] for line in train.rows]), alpha=10.0)
    return embeddings, attributes, probe


@pytest.fixture(scope="module")
def reference(run: dict[str, Any], held_out: Any) -> torch.Tensor:
    """The teacher's 25-step DPM-Solver++ samples of the held-out images (computed once)."""
    return sample_latents(load_model(run["teacher"]), held_out[0], 8, sampler="dpm_solver",
                          steps=25, guidance_scale=GUIDANCE, seed=5)


def test_training_learns_and_caches_are_shared(run: dict[str, Any]) -> None:
    report = run["train_report"]
    assert report["step"] == 300
    assert report["loss_last"] < 0.5 * report["loss_first"]
    summary = json.loads((run["teacher"] / "training" / "summary.json").read_text())
    val = [v for _, v in summary["val_loss"]]
    assert val[-1] < 0.6 * val[0], val
    assert report["scaling_factor"] > 1.0  # the tiny random VAE's latents are small
    # Distillation encodes nothing again: the rescaled teacher shares the source model's cache.
    assert run["distill_report"]["cache"]["latent_misses"] == 0
    assert run["distill_report"]["cache"]["embedding_misses"] == 0


def test_teacher_follows_the_image(held_out: Any, reference: torch.Tensor) -> None:
    _, attributes, probe = held_out
    rho = spearman(probe(reference), attributes)
    assert rho > 0.6, rho  # 0.78 (noise seed 6: 0.84)


def test_student_follows_the_image_and_stays_close_to_the_teacher(
        run: dict[str, Any], held_out: Any, reference: torch.Tensor) -> None:
    embeddings, attributes, probe = held_out
    student = load_model(run["student"])
    assert student.spec.sampler == "consistency"
    assert student.spec.guidance_range == (GUIDANCE, GUIDANCE)  # baked in, recorded
    one = sample_latents(student, embeddings, 8, steps=1, guidance_scale=GUIDANCE, seed=5)
    two = sample_latents(student, embeddings, 8, steps=2, guidance_scale=GUIDANCE, seed=5)
    few = sample_latents(student, embeddings, 8, steps=4, guidance_scale=GUIDANCE, seed=5)
    # Measured on the dev machine (noise seeds 5 / 6): rho 0.81 / 0.84 (1 step), 0.80 / 0.75
    # (2), 0.77 / 0.81 (4), 0.81 / 0.77 (8), teacher 0.78 / 0.84; relative MSE to the 25-step
    # teacher 0.16 (1 step), 0.14 (2), 0.17 (4), std ratio 0.97. Undistilled (the teacher's
    # weights LCM-sampled; a batch-16 teacher at w = 2.5, 0.13 at 4 steps) 1 step gave 0.30:
    # distillation is what makes one step work.
    # One noise seed's rho swings by about 0.1 (another machine, 2026-12-04, seeds 5-8: 0.70 /
    # 0.71 / 0.67 / 0.74 at 1 step, 0.75 / 0.66 / 0.65 / 0.66 at 2, 0.59 / 0.76 / 0.62 / 0.58
    # at 4; teacher 0.70 / 0.80 / 0.68 / 0.72), so the student is held to the mean of four.
    for steps, seed_five in ((1, one), (2, two), (4, few)):
        rhos = [spearman(probe(seed_five), attributes)] + [
            spearman(probe(sample_latents(student, embeddings, 8, steps=steps,
                                          guidance_scale=GUIDANCE, seed=seed)), attributes)
            for seed in (6, 7, 8)]
        assert float(np.mean(rhos)) > 0.6, (steps, rhos)
    assert relative_mse(one, reference) < 0.22
    error = relative_mse(few, reference)
    assert error < 0.25, error
    assert relative_mse(two, reference) < 0.25
    # Not a collapse to the mean: the student's samples spread like the teacher's.
    assert 0.7 < float(few.std() / reference.std()) < 1.3


@pytest.mark.parametrize("which, sampler", [("teacher", "dpm_solver"),
                                            ("student", "consistency")])
def test_engine_streams_the_trained_folders(run: dict[str, Any], which: str,
                                            sampler: str) -> None:
    config = EngineConfig(generator="diffusion", sample_rate=16000, channels=1,
                          diffusion=DiffusionConfig(model=str(run[which]), window_s=0.64,
                                                    overlap_s=0.16, steps=4))
    generator = DiffusionGenerator.from_config(config)
    assert generator.sampler.kind == sampler  # "auto" reads the folder's spec
    # guidance_scale left unset: the student is sampled at the scale baked into it.
    assert generator.sampler.guidance_scale == (GUIDANCE if which == "student" else 1.0)
    embedding = make_encoder("descriptor")(read_image(run["data"] / "images" / "0000.png"))
    view = ArtworkView(v=1, room="r", seq=0, time=0.0, state="artwork", artwork_id="a",
                       embedding=Array.from_numpy(embedding))
    condition = generator.prepare(view)
    out, _ = generator.generate(generator.start(condition, 0, 0, None), condition, 16000)
    assert out.audio.shape == (16000, 1)
    assert np.all(np.isfinite(out.audio)) and float(np.abs(out.audio).max()) > 0.0
