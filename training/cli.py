"""``art2mus`` commands of the offline training tool (registered by installation/cli.py).

- ``art2mus make-tone-dataset OUT_DIR``: a generated paired set (lighter images, higher tones);
  a non-empty OUT_DIR is refused unless ``--force``.
- ``art2mus validate-data DATA_DIR``: check a paired image/audio dataset, naming
  every missing, unreadable, too-short or non-finite (NaN/inf) file.
- ``art2mus train-projection --model DIR --data DIR --out DIR --train-steps N``: train
  the image projection (the Art2Mus recipe); writes a model folder.
- ``art2mus distill --teacher DIR --data DIR --out DIR --steps 4 --train-steps N``:
  distil a few-step consistency student; writes a model folder.

One word, one meaning, in every command: ``--steps`` is sampling (denoising) steps,
``--train-steps`` optimiser steps. ``train-projection --steps`` (its old spelling of
optimiser steps) is refused with a message naming ``--train-steps``.

torch is imported only inside the commands, so ``import installation.cli`` stays light.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from engine.generators.diffusion.cli import THREADS, OutDir, check_device
from ground.cli_types import SEED, FiniteFloat
from ground.errors import InputError

#: Longest training clip and generated tone, s (engine.diffusion.window_s takes 30).
MAX_CLIP_S = 60.0
#: A share of rows in 0 <= x < 1 (RunConfig.val_fraction).
FRACTION = FiniteFloat(0.0, 1.0, max_open=True)
#: Optimiser steps, and the step intervals of a run.
MAX_TRAIN_STEPS = 10_000_000
TRAIN_STEPS = click.IntRange(1, MAX_TRAIN_STEPS)
EVERY = click.IntRange(0, MAX_TRAIN_STEPS)
#: Pairs a generated tone dataset may hold.
MAX_TONE_PAIRS = 100_000
#: An AdamW learning rate: above 0, at most 1.
LEARNING_RATE = FiniteFloat(0.0, 1.0, min_open=True)
#: Guidance scales (engine.diffusion.guidance_scale takes 1..20).
GUIDANCE = FiniteFloat(1.0, 20.0)
#: DDIM's 1000 training timesteps: the most a teacher ODE grid or reference can walk.
MAX_TIMESTEPS = 1000


@click.command("validate-data")
@click.argument("data_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--clip-s", type=FiniteFloat(0.0, MAX_CLIP_S, min_open=True), default=2.56,
              show_default=True, help="Clip length: shorter audio files are refused.")
@click.option("--val-fraction", type=FRACTION, default=0.1, show_default=True,
              help="Share of rows without a split column that go to 'val'.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def validate_data_command(data_dir: Path, clip_s: float, val_fraction: float,
                          as_json: bool) -> None:
    """Check DATA_DIR's manifest, images and audio; name every problem."""
    from training.data import require_valid, validate_dataset

    report = validate_dataset(data_dir, clip_s, val_fraction)
    if as_json:
        click.echo(json.dumps({"manifest": str(report.manifest), "items": len(report.items),
                               "splits": report.counts(),
                               "audio_hours": round(report.audio_seconds / 3600, 4),
                               "problems": report.problems}, indent=2))
    require_valid(report)
    if not as_json:
        counts = ", ".join(f"{n} {split}" for split, n in report.counts().items())
        click.echo(f"{report.manifest}: {len(report.items)} pairs ({counts}), "
                   f"{report.audio_seconds / 60:.1f} min of audio, no problems")


@click.command("make-tone-dataset")
@click.argument("out_dir", type=OutDir())
@click.option("--count", type=click.IntRange(1, MAX_TONE_PAIRS), default=400, show_default=True,
              help="Image/audio pairs.")
@click.option("--seconds", type=FiniteFloat(0.01, MAX_CLIP_S), default=0.32, show_default=True,
              help="Audio length per pair.")
@click.option("--val", "val_count", type=click.IntRange(0, MAX_TONE_PAIRS), default=16,
              show_default=True, help="Pairs (of --count) in the 'val' split.")
@click.option("--test", "test_count", type=click.IntRange(0, MAX_TONE_PAIRS), default=16,
              show_default=True, help="Pairs (of --count) in the 'test' split.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--force", is_flag=True,
              help="Write into a non-empty OUT_DIR (its manifest.csv and numbered files are "
                   "replaced).")
def make_tone_dataset_command(out_dir: Path, count: int, seconds: float, val_count: int,
                              test_count: int, seed: int, force: bool) -> None:
    """Write a paired dataset where lighter images go with higher tones (to try training)."""
    if val_count + test_count >= count:
        raise click.BadParameter(f"expected fewer than --count ({count}) together, so that "
                                 f"some pairs train, got {val_count} + {test_count}",
                                 param_hint="'--val' / '--test'")
    if not force and out_dir.is_dir() and any(out_dir.iterdir()):
        entries = sum(1 for _ in out_dir.iterdir())
        raise click.BadParameter(f"expected an empty or new folder (or --force to overwrite), "
                                 f"got {out_dir} with {entries} entries", param_hint="'OUT_DIR'")
    from training.synthetic import write_tone_dataset

    items = write_tone_dataset(out_dir, count, seconds, seed, val_count, test_count)
    click.echo(f"wrote {len(items)} pairs and {out_dir / 'manifest.csv'}")


def _run_options(function: Any) -> Any:
    """Options both trainers share (see training.loop.RunConfig)."""
    options = [
        click.option("--data", "data_dir", required=True,
                     type=click.Path(exists=True, file_okay=False, path_type=Path),
                     help="Paired dataset folder (see validate-data)."),
        click.option("--out", "out_dir", required=True, type=OutDir(),
                     help="Output model folder (training state in OUT/training/)."),
        click.option("--encoder", default="descriptor", show_default=True,
                     help="Image encoder: descriptor or onnx:PATH."),
        click.option("--cache", "cache_dir", type=click.Path(file_okay=False, path_type=Path),
                     default=None, help="Cache folder [default: DATA/.art2mus-cache]."),
        click.option("--resume", is_flag=True,
                     help="Continue from the latest checkpoint in OUT/training/checkpoints."),
        click.option("--batch-size", type=click.IntRange(1, 1024), default=8,
                     show_default=True),
        click.option("--accumulate", type=click.IntRange(1, 1024), default=1,
                     show_default=True, help="Micro-batches per optimizer step."),
        click.option("--weight-decay", default=None, type=FiniteFloat(0.0, 100.0)),
        click.option("--grad-clip", type=FiniteFloat(0.0, 1e6, min_open=True), default=1.0,
                     show_default=True),
        click.option("--warmup-steps", type=EVERY, default=0, show_default=True),
        click.option("--precision", default="auto", show_default=True,
                     type=click.Choice(["auto", "fp32", "bf16", "fp16"]),
                     help="auto: bf16 (or fp16 + GradScaler) autocast on CUDA, fp32 on CPU."),
        click.option("--device", default="auto", show_default=True, callback=check_device,
                     help="auto, cpu, cuda or cuda:N."),
        click.option("--seed", type=SEED, default=0, show_default=True),
        click.option("--clip-s", type=FiniteFloat(0.0, MAX_CLIP_S, min_open=True),
                     default=2.56, show_default=True,
                     help="Training clip length (a multiple of the UNet's frame multiple)."),
        click.option("--max-clips", type=click.IntRange(0, 1_000_000), default=0,
                     show_default=True, help="Clips per audio file (0: all)."),
        click.option("--val-fraction", type=FRACTION, default=0.1, show_default=True),
        click.option("--latents", default="sample", show_default=True,
                     type=click.Choice(["sample", "mean"]),
                     help="Draw latents from the VAE posterior, or use its mean."),
        click.option("--validate-every", type=EVERY, default=100, show_default=True),
        click.option("--checkpoint-every", type=EVERY, default=100, show_default=True),
        click.option("--keep-checkpoints", type=click.IntRange(1, 1000), default=3,
                     show_default=True),
        click.option("--log-every", type=TRAIN_STEPS, default=10, show_default=True),
        click.option("--threads", type=THREADS, default=0, show_default=True,
                     help="torch CPU threads (0: torch's default; 1 is fastest on a busy CPU)."),
        click.option("--quiet", is_flag=True,
                     help="No progress bar (none either when stderr is not a terminal)."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


_NOT_CONFIG = {"data_dir", "out_dir", "encoder", "cache_dir", "resume", "threads", "quiet",
               "model_dir", "teacher_dir", "init_projection"}


def _config(cls: Any, options: dict[str, Any], renames: dict[str, str]) -> Any:
    """A frozen run config from click options; InputError naming the option on a bad value."""
    values = {renames.get(k, k): v for k, v in options.items()
              if k not in _NOT_CONFIG and v is not None}
    try:
        return cls(**values)
    except ValueError as error:
        raise InputError(f"invalid option: {error}") from error


def _report(result: Any) -> None:
    first = result.train_loss[0][1] if result.train_loss else float("nan")
    last = result.train_loss[-1][1] if result.train_loss else float("nan")
    click.echo(json.dumps({"out": str(result.out), "step": result.step,
                           "loss_first": first, "loss_last": last,
                           "validation": result.val_loss[-1:] or None,
                           "clips_per_s": round(result.clips_per_s, 2),
                           "cache": result.cache, **result.extra}, indent=2))


@click.command("train-projection")
@click.option("--model", "model_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Source model folder (its frozen parts are linked into OUT).")
@_run_options
@click.option("--train-steps", "steps", type=TRAIN_STEPS, default=1000, show_default=True,
              help="Optimizer steps.")
@click.option("--steps", "old_steps", default=None, hidden=True, expose_value=False,
              callback=lambda ctx, param, value: _refuse_renamed(value, "--steps",
                                                                 "--train-steps"),
              help="Refused: the old spelling of --train-steps.")
@click.option("--lr", type=LEARNING_RATE, default=2e-5, show_default=True)
@click.option("--min-snr", "min_snr_gamma", type=FiniteFloat(0.0, 1000.0), default=0.0,
              show_default=True, help="Min-SNR-gamma loss weighting (5 is the paper's; 0: off).")
@click.option("--cond-dropout", type=FRACTION, default=0.1, show_default=True,
              help="Probability of a zero embedding (the CFG unconditional branch).")
@click.option("--train-all", is_flag=True,
              help="Also train the UNet and GPT-2 (tiny models trained from scratch).")
@click.option("--rescale-latents", is_flag=True,
              help="Set the VAE scaling_factor to 1/std of the data's latents (from-scratch "
                   "UNets only).")
@click.option("--init-projection", type=click.Path(exists=True, dir_okay=False,
                                                   path_type=Path),
              default=None, help="Start from a projection checkpoint (safetensors or .pt).")
def train_projection_command(**options: Any) -> None:
    """Train the image projection on paired data; write an engine-loadable model folder."""
    from training.projection import ProjectionConfig, train_projection

    _set_threads(options["threads"])
    if options["weight_decay"] is None:
        options["weight_decay"] = 1e-2
    config = _config(ProjectionConfig, options, {})
    result = train_projection(options["model_dir"], options["data_dir"], options["out_dir"],
                              config, encoder=options["encoder"], cache_dir=options["cache_dir"],
                              init_projection=options["init_projection"],
                              resume=options["resume"], progress=_show_progress(options))
    _report(result)


@click.command("distill")
@click.option("--teacher", "teacher_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Teacher model folder (an original model, e.g. train-projection's output).")
@_run_options
@click.option("--steps", "sample_steps", type=click.IntRange(1, 8), default=4,
              show_default=True,
              help="Sampling steps the student is checked at against the teacher (1-8).")
@click.option("--train-steps", "steps", type=TRAIN_STEPS, default=2000, show_default=True,
              help="Optimizer steps of the distillation.")
@click.option("--lr", type=LEARNING_RATE, default=1e-5, show_default=True)
@click.option("--teacher-steps", type=click.IntRange(1, MAX_TIMESTEPS), default=25,
              show_default=True,
              help="DPM-Solver++ steps of the teacher reference used for validation.")
@click.option("--guidance-min", type=GUIDANCE, default=1.0, show_default=True,
              help="Lowest guidance scale the student learns (recorded in its folder).")
@click.option("--guidance-max", type=GUIDANCE, default=4.0, show_default=True,
              help="Highest scale; set both equal to bake one scale in (best for short runs).")
@click.option("--guidance-dim", "guidance_embedding_dim", type=click.IntRange(4, 4096),
              default=256, show_default=True,
              help="Width of the student's guidance embedding (time_cond_proj_dim).")
@click.option("--ddim-timesteps", type=click.IntRange(0, MAX_TIMESTEPS), default=0,
              show_default=True,
              help="Points of the teacher ODE grid (0: the LCM sampler's, 50).")
@click.option("--ema-decay", type=FRACTION, default=0.95, show_default=True)
@click.option("--loss", default="l2", show_default=True, type=click.Choice(["l2", "huber"]))
def distill_command(**options: Any) -> None:
    """Distil a few-step consistency student of TEACHER; write an engine-loadable folder."""
    from training.distill import DistillConfig, distill

    _check_distill_options(options)
    _set_threads(options["threads"])
    if options["weight_decay"] is None:
        options["weight_decay"] = 0.0
    config = _config(DistillConfig, options, {})
    result = distill(options["teacher_dir"], options["data_dir"], options["out_dir"], config,
                     encoder=options["encoder"], cache_dir=options["cache_dir"],
                     resume=options["resume"], progress=_show_progress(options))
    _report(result)


def _check_distill_options(options: dict[str, Any]) -> None:
    """The distill options that bound each other, refused naming the option."""
    if options["guidance_min"] > options["guidance_max"]:
        raise click.BadParameter(f"expected at most --guidance-max "
                                 f"({options['guidance_max']:g}), got "
                                 f"{options['guidance_min']:g}", param_hint="'--guidance-min'")
    points, steps = options["ddim_timesteps"], options["sample_steps"]
    if points and points < steps:
        raise click.BadParameter(f"expected 0 or at least --steps ({steps}): the student's "
                                 f"sampler walks this grid, got {points}",
                                 param_hint="'--ddim-timesteps'")


def _refuse_renamed(value: Any, old: str, new: str) -> None:
    """A usage error when a renamed option's old spelling is given, naming the new one."""
    if value is not None:
        raise click.UsageError(f"{old} is now {new} here ({new} {value}: optimiser steps); "
                               f"{old} means sampling steps in every art2mus command")


def _show_progress(options: dict[str, Any]) -> bool:
    """Progress bars unless --quiet, and only for a person watching (stderr a terminal)."""
    return not options["quiet"] and sys.stderr.isatty()


def _set_threads(threads: int) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


commands: list[click.Command] = [validate_data_command, make_tone_dataset_command,
                                 train_projection_command, distill_command]
