"""``art2mus`` commands for the diffusion generator (registered by installation/cli.py).

- ``art2mus make-tiny-model OUT_DIR``: a tiny random-weight model folder in the real layout.
- ``art2mus export-onnx MODEL_DIR OUT_DIR``: UNet, VAE decoder and vocoder as static-shape ONNX.
- ``art2mus bench engine --model DIR --steps 4 --batch 1,4,16 --json``: per-window
  latency, real-time factor and memory, beside the stock loop (DDIM, eager UNet,
  CFG, 200 steps, timed on a few steps and scaled).

The training commands (validate-data, make-tone-dataset, train-projection,
distill) are in :mod:`training.cli`.

torch is imported only inside the commands, so ``import installation.cli`` stays light.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from ground.cli_types import FiniteFloat


@click.command("make-tiny-model")
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--embedding-dim", default=1024, show_default=True, help="Image embedding width.")
@click.option("--student", is_flag=True, help="A consistency student (guidance embedding).")
@click.option("--seed", default=0, show_default=True)
@click.option("--lm-width", default=768, show_default=True,
              help="GPT-2 width (a multiple of 12); 96 makes training on a CPU fast.")
@click.option("--support-width", default=1024, show_default=True)
@click.option("--prediction-type", default="epsilon", show_default=True,
              type=click.Choice(["epsilon", "v_prediction", "sample"]))
def make_tiny_model_command(out_dir: Path, embedding_dim: int, student: bool, seed: int,
                            lm_width: int, support_width: int, prediction_type: str) -> None:
    """Write a tiny random-weight model folder (AudioLDM2 layout) to OUT_DIR."""
    from engine.generators.diffusion.model import make_tiny_model

    folder = make_tiny_model(out_dir, embedding_dim=embedding_dim, student=student, seed=seed,
                             lm_width=lm_width, support_width=support_width,
                             prediction_type=prediction_type)
    click.echo(f"wrote {folder}")


@click.command("export-onnx")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--window-s", type=FiniteFloat(), default=2.56, show_default=True,
              help="Model window (static).")
@click.option("--batch", default=1, show_default=True, help="Static batch size of the UNet.")
@click.option("--guidance", is_flag=True, help="Export the UNet at 2x batch (CFG).")
def export_onnx_command(model_dir: Path, out_dir: Path, window_s: float, batch: int,
                        guidance: bool) -> None:
    """Export MODEL_DIR's UNet, VAE decoder and vocoder to ONNX files in OUT_DIR."""
    from engine.generators.diffusion.onnx_backend import export_onnx

    manifest = export_onnx(model_dir, out_dir, window_s=window_s,
                           batch=batch * (2 if guidance else 1))
    click.echo(json.dumps(manifest, indent=2))


def _parse_batches(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise click.BadParameter(f"expected comma-separated sizes, got {text!r}") from error
    if not sizes or min(sizes) < 1:
        raise click.BadParameter(f"expected positive sizes, got {text!r}")
    return sizes


@click.command("engine")
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False,
                                                      path_type=Path), required=True)
@click.option("--steps", default=4, show_default=True)
@click.option("--batch", "batches", default="1,4,16", show_default=True,
              help="Comma-separated room counts sampled together.")
@click.option("--window-s", type=FiniteFloat(), default=2.56, show_default=True)
@click.option("--overlap-s", type=FiniteFloat(), default=0.64, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--dtype", default="auto", show_default=True)
@click.option("--repeats", default=3, show_default=True)
@click.option("--stock-steps", default=200, show_default=True,
              help="Steps of the stock loop the measurement is scaled to.")
@click.option("--threads", default=0, show_default=True, help="torch CPU threads (0: default).")
@click.option("--compile", "compile_mode", default="off", show_default=True,
              type=click.Choice(["off", "default", "max-autotune-no-cudagraphs"]),
              help="torch.compile mode for the UNet on CUDA (engine.diffusion.compile).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def bench_engine_command(model_dir: Path, steps: int, batches: str, window_s: float,
                         overlap_s: float, device: str, dtype: str, repeats: int,
                         stock_steps: int, threads: int, compile_mode: str,
                         as_json: bool) -> None:
    """Per-window latency, real-time factor and memory of the diffusion engine."""
    result = bench_engine(model_dir, steps, _parse_batches(batches), window_s, overlap_s,
                          device, dtype, repeats, stock_steps, threads, compile_mode)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    for row in result["batches"]:
        click.echo(f"batch {row['batch']:>3}: {row['window_ms']:.1f} ms per window, "
                   f"real-time factor {row['realtime_factor']:.2f} (per room), "
                   f"stock loop {row['stock_window_ms']:.0f} ms")


def bench_engine(model_dir: Path, steps: int, batches: list[int], window_s: float,
                 overlap_s: float, device: str = "auto", dtype: str = "auto", repeats: int = 3,
                 stock_steps: int = 200, threads: int = 0,
                 compile_mode: str = "off") -> dict[str, Any]:
    """The numbers behind ``art2mus bench engine`` (also used by benchmarks/engine_gpu.py)."""
    import resource

    import torch

    if threads:
        torch.set_num_threads(threads)

    from engine.generators.diffusion.batching import batch_groups
    from engine.generators.diffusion.config import DiffusionConfig
    from engine.generators.diffusion.generator import DiffusionGenerator
    from engine.generators.diffusion.model import load_model
    from engine.generators.diffusion.testing import random_embedding

    model = load_model(model_dir, device, dtype)
    config = DiffusionConfig(model=str(model_dir), steps=steps, window_s=window_s,
                             overlap_s=overlap_s, compile=compile_mode)
    generator = DiffusionGenerator(model, config, model.spec.sample_rate, 1)
    plan = generator.plan
    cuda = model.device.type == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    rows = []
    for batch in batches:
        conditions = [generator.condition_from_embedding(f"bench-{i}",
                                                         random_embedding(i, model.spec
                                                                          .embedding_dim))
                      for i in range(batch)]
        states = [generator.start(c, i, 0, None) for i, c in enumerate(conditions)]
        states = generator._windows(states, conditions)  # warm-up; graphs captured here
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        sync()
        times = []
        for _ in range(repeats):
            began = time.perf_counter()
            states = generator._windows(states, conditions)
            sync()
            times.append(time.perf_counter() - began)
        window = sorted(times)[len(times) // 2]
        stock = _stock_window_s(model, batch, plan.window_frames, stock_steps, sync)
        rows.append({
            "batch": batch,
            "model_batches": [bucket for _, bucket in batch_groups(batch,
                                                                    config.batch_buckets)],
            "window_ms": window * 1e3,
            "audio_s_per_window": plan.hop_s,
            "realtime_factor": plan.hop_s / window,
            "rooms_realtime_factor": batch * plan.hop_s / window,
            "stock_window_ms": stock * 1e3,
            "speedup_vs_stock": stock / window,
            "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        })
    return {
        "bench": "engine", "model": str(model_dir), "device": str(model.device),
        "dtype": str(model.dtype).removeprefix("torch."), "sampler": generator.sampler.kind,
        "steps": steps, "threads": torch.get_num_threads(), "window_s": window_s,
        "overlap_s": overlap_s,
        "cuda_graphs": generator.use_graphs,
        "compile": config.compile if cuda else "off",
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "stock_loop": (f"diffusers DDIMScheduler, eager UNet with classifier-free guidance "
                       f"(2x batch), VAE + vocoder; timed over a few steps and the UNet part "
                       f"scaled to {stock_steps} steps"),
        "batches": rows,
    }


def _stock_window_s(model: Any, batch: int, frames: int, stock_steps: int, sync: Any,
                    measured_steps: int = 3) -> float:
    """One window of the stock loop: DDIM + eager CFG UNet, scaled to ``stock_steps``."""
    import torch
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(
        {k: v for k, v in model.scheduler_config.items() if not k.startswith("_")})
    scheduler.set_timesteps(stock_steps)
    latents = torch.randn(batch, model.latent_channels, frames, model.latent_bins,
                          device=model.device, dtype=model.dtype)
    tokens = torch.cat([model.unconditional_tokens] * (2 * batch))
    support = model.support_prompt.expand(2 * batch, -1, -1)
    with torch.inference_mode():
        sync()
        began = time.perf_counter()
        for t in scheduler.timesteps[:measured_steps]:
            eps = model.unet(torch.cat([latents, latents]), t, encoder_hidden_states=tokens,
                             encoder_hidden_states_1=support, return_dict=False)[0]
            uncond, cond = eps.chunk(2)
            latents = scheduler.step(uncond + 3.5 * (cond - uncond), t, latents).prev_sample
        sync()
        unet_s = (time.perf_counter() - began) / measured_steps * stock_steps
        began = time.perf_counter()
        mel = model.vae.decode(latents / model.vae.config.scaling_factor).sample
        model.vocoder(mel.squeeze(1))
        sync()
        return unet_s + time.perf_counter() - began


# ---------------------------------------------------------------------------
# training


commands: list[click.Command] = [make_tiny_model_command, export_onnx_command]
bench_commands: list[click.Command] = [bench_engine_command]
