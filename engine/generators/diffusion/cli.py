"""``art2mus`` commands for the diffusion generator (registered by installation/cli.py).

- ``art2mus make-tiny-model OUT_DIR``: a tiny random-weight model folder in the real layout.
- ``art2mus export-onnx MODEL_DIR OUT_DIR``: UNet, VAE decoder and vocoder as static-shape ONNX.
- ``art2mus import-model DIFFUSERS_DIR OUT [--projection FILE.pt]``: a diffusers AudioLDM2
  folder and the Art2Mus projection as our model folder (:mod:`.importer`).
- ``art2mus bench engine --model DIR --steps 4 --batch 1,4,16 [--json]``: per-window
  latency (median and p95 of 20 windows after warm-up), real-time factor and memory,
  beside the stock loop (DDIM, eager UNet, CFG, 200 steps), warmed up at the measured
  shape and timed over 20 steps (all 200 on a GPU) x repeats; a verdict against the
  issue-18 GPU targets. ``--stock-steps 0`` skips the stock loop.

The training commands (validate-data, make-tone-dataset, train-projection,
distill) are in :mod:`training.cli`.

torch is imported only inside the commands, so ``import installation.cli`` stays light.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from engine.generators.diffusion.importer import import_model_command
from ground.cli_types import SEED, FiniteFloat
from ground.errors import InputError

#: Widest model window and overlap, as engine.diffusion.window_s / overlap_s accept.
MAX_WINDOW_S = 30.0
MAX_OVERLAP_S = 10.0
#: Largest batch (rooms sampled together) a bench or an ONNX export takes.
MAX_BATCH = 1024
#: torch CPU threads (0: torch's default).
THREADS = click.IntRange(0, 1024)
#: The dtypes :func:`engine.generators.diffusion.model.resolve_dtype` knows.
DTYPES = ["auto", "float32", "float16", "bfloat16"]
#: Widths of a tiny model: image embedding, GPT-2 (12 heads) and the support prompt.
MAX_TINY_WIDTH = 8192
MAX_LM_WIDTH = 3072
LM_HEADS = 12

_DEVICE = re.compile(r"(auto|cpu|cuda)(:(\d+))?")


def check_device(ctx: click.Context | None, param: click.Parameter | None,
                 value: str) -> str:
    """A click callback for ``--device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, where
    CUDA is asked for only when torch sees that device; refused naming the option."""
    match = _DEVICE.fullmatch(value)
    if match is None or (match[3] is not None and match[1] != "cuda"):
        raise click.BadParameter(f"expected auto, cpu, cuda or cuda:N, got {value!r}",
                                 ctx, param)
    if match[1] != "cuda":
        return value
    try:
        import torch
    except ImportError:  # the command names the missing extra itself
        return value
    if not torch.cuda.is_available():
        raise click.BadParameter(f"{value!r}: torch sees no CUDA device here", ctx, param)
    count = torch.cuda.device_count()
    if match[3] is not None and int(match[3]) >= count:
        raise click.BadParameter(f"{value!r}: torch sees {count} CUDA device(s) "
                                 f"(cuda:0..cuda:{count - 1})", ctx, param)
    return value


class OutDir(click.Path):
    """A folder to write (``click.Path(file_okay=False)`` as a :class:`~pathlib.Path`); an
    empty name, which would write into the current folder, is refused."""

    def __init__(self) -> None:
        super().__init__(file_okay=False, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        """``value`` as a Path, refused when empty."""
        if isinstance(value, str) and not value.strip():
            self.fail(f"expected a folder name, got {value!r}", param, ctx)
        return super().convert(value, param, ctx)


@click.command("make-tiny-model")
@click.argument("out_dir", type=OutDir())
@click.option("--embedding-dim", type=click.IntRange(1, MAX_TINY_WIDTH), default=1024,
              show_default=True, help="Image embedding width.")
@click.option("--student", is_flag=True, help="A consistency student (guidance embedding).")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--lm-width", type=click.IntRange(LM_HEADS, MAX_LM_WIDTH), default=768,
              show_default=True,
              help="GPT-2 width (a multiple of 12); 96 makes training on a CPU fast.")
@click.option("--support-width", type=click.IntRange(1, MAX_TINY_WIDTH), default=1024,
              show_default=True)
@click.option("--prediction-type", default="epsilon", show_default=True,
              type=click.Choice(["epsilon", "v_prediction", "sample"]))
def make_tiny_model_command(out_dir: Path, embedding_dim: int, student: bool, seed: int,
                            lm_width: int, support_width: int, prediction_type: str) -> None:
    """Write a tiny random-weight model folder (AudioLDM2 layout) to OUT_DIR."""
    if lm_width % LM_HEADS:
        raise click.BadParameter(f"expected a multiple of {LM_HEADS} (GPT-2's attention heads "
                                 f"split the width evenly), got {lm_width}",
                                 param_hint="'--lm-width'")
    from engine.generators.diffusion.model import make_tiny_model

    folder = make_tiny_model(out_dir, embedding_dim=embedding_dim, student=student, seed=seed,
                             lm_width=lm_width, support_width=support_width,
                             prediction_type=prediction_type)
    click.echo(f"wrote {folder}")


@click.command("export-onnx")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out_dir", type=OutDir())
@click.option("--window-s", type=FiniteFloat(0.0, MAX_WINDOW_S, min_open=True), default=2.56,
              show_default=True, help="Model window (static): the engine.diffusion.window_s "
              "of the config that will run the files (configs/diffusion-tiny.toml: 1.28).")
@click.option("--batch", type=click.IntRange(1, MAX_BATCH), default=1, show_default=True,
              help="Static batch size of the UNet (more rooms run in several calls, fewer "
                   "are padded).")
@click.option("--guidance", is_flag=True, help="Export the UNet at 2x batch (CFG).")
def export_onnx_command(model_dir: Path, out_dir: Path, window_s: float, batch: int,
                        guidance: bool) -> None:
    """Export MODEL_DIR's UNet, VAE decoder and vocoder to ONNX files in OUT_DIR."""
    from engine.generators.diffusion.onnx_backend import export_onnx
    from ground.cli_report import progress_bar

    # one step per part (UNet, VAE decoder, vocoder), with the time elapsed (terminals only)
    with progress_bar(unit="parts") as update:
        manifest = export_onnx(model_dir, out_dir, window_s=window_s,
                               batch=batch * (2 if guidance else 1), progress=update)
    click.echo(json.dumps(manifest, indent=2))


def _parse_batches(ctx: click.Context | None, param: click.Parameter | None,
                   text: str) -> list[int]:
    """``--batch 1,4,16`` as sizes; refused naming the option unless every item is a
    whole number in 1..MAX_BATCH."""
    expected = f"expected comma-separated positive sizes up to {MAX_BATCH} (e.g. 1,4,16)"
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError as error:
        raise click.BadParameter(f"{expected}, got {text!r}", ctx, param) from error
    if not 1 <= min(sizes) <= max(sizes) <= MAX_BATCH:
        raise click.BadParameter(f"{expected}, got {text!r}", ctx, param)
    return sizes


#: The issue-18 targets, for one H100/H200-class GPU and 10.24 s windows (all steps, VAE
#: decode and vocoder in the window): the batch-1 window, batch 16 against batch 1, and
#: the speed-up over the honestly timed stock loop at batch 1.
TARGET_WINDOW_S = 10.24
TARGET_BATCH1_MS = 35.0
TARGET_BATCH16_OVER_BATCH1 = 4.0
TARGET_SPEEDUP = 500.0
#: Stock steps timed per repeat on a CPU by default (a GPU times all of --stock-steps).
CPU_STOCK_TIMED_STEPS = 20
#: The most stock-loop steps: DDIM's schedule has 1000 training timesteps, and
#: set_timesteps refuses more.
STOCK_MAX_STEPS = 1000


@click.command("engine")
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False,
                                                      path_type=Path), required=True)
@click.option("--steps", type=click.IntRange(1, 8), default=4, show_default=True,
              help="Sampling (denoising) steps per window.")
@click.option("--batch", "batches", default="1,4,16", show_default=True,
              callback=_parse_batches, help="Comma-separated room counts sampled together.")
@click.option("--window-s", type=FiniteFloat(0.0, MAX_WINDOW_S, min_open=True), default=2.56,
              show_default=True)
@click.option("--overlap-s", type=FiniteFloat(0.0, MAX_OVERLAP_S, min_open=True), default=0.64,
              show_default=True, help="At most half of --window-s.")
@click.option("--device", default="auto", show_default=True, callback=check_device,
              help="auto, cpu, cuda or cuda:N.")
@click.option("--dtype", type=click.Choice(DTYPES), default="auto", show_default=True)
@click.option("--windows", default=20, show_default=True, type=click.IntRange(1, 10_000),
              help="Timed windows of our path per batch (median and p95 over them).")
@click.option("--warmup-windows", default=3, show_default=True, type=click.IntRange(2, 1000),
              help="Untimed windows first: the first starts the streams, the rest continue "
                   "(both shapes warmed, CUDA graphs captured).")
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(1, 1000),
              help="Timed runs of the stock loop per batch (median).")
@click.option("--stock-steps", default=200, show_default=True,
              type=click.IntRange(0, STOCK_MAX_STEPS),
              help="Steps of the stock loop's schedule; 0 skips the stock baseline.")
@click.option("--stock-timed-steps", type=click.IntRange(1, STOCK_MAX_STEPS), default=None,
              help="Stock steps timed per repeat  [default: all of --stock-steps on a GPU, "
                   f"{CPU_STOCK_TIMED_STEPS} on a CPU]")
@click.option("--stock-warmup-steps", default=3, show_default=True,
              type=click.IntRange(3, STOCK_MAX_STEPS),
              help="Untimed stock steps (and one decode) first, at the measured shape.")
@click.option("--threads", default=0, show_default=True, type=THREADS,
              help="torch CPU threads (0: default).")
@click.option("--compile", "compile_mode", default="off", show_default=True,
              type=click.Choice(["off", "default", "max-autotune-no-cudagraphs"]),
              help="torch.compile mode for the UNet on CUDA (engine.diffusion.compile).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def bench_engine_command(model_dir: Path, steps: int, batches: list[int], window_s: float,
                         overlap_s: float, device: str, dtype: str, windows: int,
                         warmup_windows: int, repeats: int, stock_steps: int,
                         stock_timed_steps: int | None, stock_warmup_steps: int, threads: int,
                         compile_mode: str, as_json: bool) -> None:
    """Per-window latency, real-time factor and memory of the diffusion engine, beside the
    stock loop (DDIM, eager UNet, CFG) warmed up and timed over many steps."""
    if 2 * overlap_s > window_s:
        raise click.BadParameter(f"expected at most half of --window-s ({window_s:g}), got "
                                 f"{overlap_s:g}", param_hint="'--overlap-s'")
    if stock_timed_steps is not None and stock_timed_steps > max(stock_steps, 1):
        raise click.BadParameter(f"expected at most --stock-steps ({stock_steps}), got "
                                 f"{stock_timed_steps}", param_hint="'--stock-timed-steps'")
    result = bench_engine(model_dir, steps, batches, window_s, overlap_s,
                          device, dtype, repeats, stock_steps, threads, compile_mode,
                          windows=windows, warmup_windows=warmup_windows,
                          stock_timed_steps=stock_timed_steps,
                          stock_warmup_steps=stock_warmup_steps)
    click.echo(json.dumps(result, indent=2) if as_json else format_bench_table(result))


def _check_bench_counts(windows: int, warmup_windows: int, repeats: int, stock_steps: int,
                        stock_timed_steps: int | None, stock_warmup_steps: int) -> None:
    """Refuse counts that would make the figures meaningless, naming the parameter."""
    least = {"windows": (windows, 1), "warmup_windows": (warmup_windows, 2),
             "repeats": (repeats, 1), "stock_steps": (stock_steps, 0),
             "stock_warmup_steps": (stock_warmup_steps, 3)}
    for name, (value, low) in least.items():
        if value < low:
            raise InputError(f"bench engine {name}: expected >= {low}, got {value}")
    if stock_timed_steps is not None and not 1 <= stock_timed_steps <= max(stock_steps, 1):
        raise InputError(f"bench engine stock_timed_steps: expected 1..stock_steps "
                         f"({stock_steps}), got {stock_timed_steps}")


def bench_engine(model_dir: Path, steps: int, batches: list[int], window_s: float,
                 overlap_s: float, device: str = "auto", dtype: str = "auto", repeats: int = 3,
                 stock_steps: int = 200, threads: int = 0, compile_mode: str = "off", *,
                 windows: int = 20, warmup_windows: int = 3,
                 stock_timed_steps: int | None = None,
                 stock_warmup_steps: int = 3,
                 stock_batches: Sequence[int] | None = None) -> dict[str, Any]:
    """The numbers behind ``art2mus bench engine`` (also used by benchmarks/engine_gpu.py).

    Our path: per batch, ``warmup_windows`` untimed windows, then ``windows`` windows
    timed one by one (every sampling step, VAE decode and vocoder, and the host work of
    a window); the median and p95 are reported. The stock loop (``stock_steps`` > 0;
    0 skips it): ``stock_warmup_steps`` untimed steps and one decode at the measured
    shape, then ``repeats`` runs of ``stock_timed_steps`` timed steps (default: all of
    ``stock_steps`` on CUDA, 20 on a CPU) and a timed decode; its window is the median
    step times ``stock_steps`` plus the median decode. Speed-up: stock window / our median.
    ``stock_batches`` limits the stock loop to those batches (default: every one); the
    targets judge it at batch 1, and at batch 16 it alone takes minutes on a GPU.
    """
    import resource
    import statistics

    import numpy as np
    import torch

    _check_bench_counts(windows, warmup_windows, repeats, stock_steps, stock_timed_steps,
                        stock_warmup_steps)
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
    timed_steps = 0
    if stock_steps:
        timed_steps = stock_timed_steps or (stock_steps if cuda
                                            else min(CPU_STOCK_TIMED_STEPS, stock_steps))

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
        for _ in range(warmup_windows):  # starting, then continuing shapes; graphs captured
            states = generator._windows(states, conditions)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        times_ms = []
        for _ in range(windows):
            # A consumer takes each window's audio (as generate_batch does), so the
            # buffers stay small; done outside the timed span.
            states = [replace(state, buffer=state.buffer[:0]) if state.buffer is not None
                      else state for state in states]
            sync()
            began = time.perf_counter()
            states = generator._windows(states, conditions)
            sync()
            times_ms.append((time.perf_counter() - began) * 1e3)
        window_ms = statistics.median(times_ms)
        peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
        stock = (_stock_window(model, batch, plan.window_frames, stock_steps, timed_steps,
                               stock_warmup_steps, repeats, sync)
                 if stock_steps and (stock_batches is None or batch in stock_batches) else None)
        rows.append({
            "batch": batch,
            "model_batches": [bucket for _, bucket in batch_groups(batch,
                                                                    config.batch_buckets)],
            "window_ms": window_ms,
            "window_p95_ms": float(np.percentile(times_ms, 95)),
            "window_ms_each": times_ms,
            "audio_s_per_window": plan.hop_s,
            "realtime_factor": plan.hop_s / (window_ms / 1e3),
            "rooms_realtime_factor": batch * plan.hop_s / (window_ms / 1e3),
            **(stock or {"stock_window_ms": None}),
            "speedup_vs_stock": stock["stock_window_ms"] / window_ms if stock else None,
            "peak_gpu_mb": peak,
        })
    result: dict[str, Any] = {
        "bench": "engine", "model": str(model_dir), "device": str(model.device),
        "gpu": torch.cuda.get_device_name(model.device) if cuda else None,
        "dtype": str(model.dtype).removeprefix("torch."), "sampler": generator.sampler.kind,
        "steps": steps, "threads": torch.get_num_threads(), "window_s": window_s,
        "overlap_s": overlap_s,
        "cuda_graphs": generator.use_graphs,
        "compile": config.compile if cuda else "off",
        "windows": windows, "warmup_windows": warmup_windows,
        "stock_steps": stock_steps, "stock_timed_steps": timed_steps, "repeats": repeats,
        "stock_batches": list(stock_batches) if stock_batches is not None else batches,
        "stock_warmup_steps": stock_warmup_steps if stock_steps else 0,
        "stock_loop": (f"diffusers DDIMScheduler, {stock_steps} steps, eager UNet with "
                       f"classifier-free guidance (2x batch), VAE + vocoder; "
                       f"{stock_warmup_steps} warm-up steps and a decode at the measured "
                       f"shape, then {timed_steps} steps timed x {repeats} repeats: median "
                       f"step x {stock_steps} + median decode" if stock_steps
                       else "not measured (stock_steps 0)"),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "batches": rows,
    }
    result["verdict"] = bench_verdict(result)
    return result


def _stock_window(model: Any, batch: int, frames: int, stock_steps: int, timed_steps: int,
                  warmup_steps: int, repeats: int, sync: Callable[[], None]) -> dict[str, Any]:
    """One window of the stock loop (DDIM + eager CFG UNet, then VAE decode and vocoder).

    Warm-up first (``warmup_steps`` steps and one decode at exactly the measured shape:
    the first calls at a new shape pay for allocation and kernel selection), then
    ``repeats`` runs of ``timed_steps`` steps, each followed by a timed decode. The
    window is the median step x ``stock_steps`` + the median decode; the per-repeat
    values are returned too.
    """
    import statistics

    import torch
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(
        {k: v for k, v in model.scheduler_config.items() if not k.startswith("_")})
    scheduler.set_timesteps(stock_steps)
    timesteps = scheduler.timesteps
    # The UNet class's own forward: the eager network, even where the engine wrapped the
    # module's forward in torch.compile (compile_mode).
    unet = type(model.unet).forward.__get__(model.unet)
    shape = (batch, model.latent_channels, frames, model.latent_bins)
    seeded = torch.Generator(device=model.device).manual_seed(0)
    tokens = torch.cat([model.unconditional_tokens] * (2 * batch))
    support = model.support_prompt.expand(2 * batch, -1, -1)

    def denoise(latents: torch.Tensor, count: int) -> torch.Tensor:
        for i in range(count):
            t = timesteps[i % len(timesteps)]
            eps = unet(torch.cat([latents, latents]), t, encoder_hidden_states=tokens,
                       encoder_hidden_states_1=support, return_dict=False)[0]
            uncond, cond = eps.chunk(2)
            latents = scheduler.step(uncond + 3.5 * (cond - uncond), t, latents).prev_sample
        return latents

    def decode(latents: torch.Tensor) -> None:
        mel = model.vae.decode(latents / model.vae.config.scaling_factor).sample
        model.vocoder(mel.squeeze(1))

    def noise() -> torch.Tensor:
        return torch.randn(shape, generator=seeded, device=model.device, dtype=model.dtype)

    step_ms, decode_ms = [], []
    with torch.inference_mode():
        decode(denoise(noise(), warmup_steps))
        for _ in range(repeats):
            latents = noise()
            sync()
            began = time.perf_counter()
            latents = denoise(latents, timed_steps)
            sync()
            step_ms.append((time.perf_counter() - began) * 1e3 / timed_steps)
            began = time.perf_counter()
            decode(latents)
            sync()
            decode_ms.append((time.perf_counter() - began) * 1e3)
    return {
        "stock_window_ms": statistics.median(step_ms) * stock_steps
        + statistics.median(decode_ms),
        "stock_step_ms": statistics.median(step_ms), "stock_step_ms_each": step_ms,
        "stock_decode_ms": statistics.median(decode_ms), "stock_decode_ms_each": decode_ms,
        "stock_window_ms_each": [s * stock_steps + d for s, d in zip(step_ms, decode_ms,
                                                                      strict=True)],
    }


def bench_verdict(result: dict[str, Any]) -> list[str]:
    """One line per issue-18 target, judged against ``result`` (a :func:`bench_engine`
    result): met, missed or not measured; a CPU run or another window is not judged."""
    if result["gpu"] is None:
        return ["verdict: targets are for an H100/H200; not judged on CPU"]
    if abs(result["window_s"] - TARGET_WINDOW_S) > 1e-9:
        return [f"verdict: targets are for {TARGET_WINDOW_S} s windows; not judged at "
                f"{result['window_s']:g} s"]
    rows = {row["batch"]: row for row in result["batches"]}
    lines = [f"verdict on {result['gpu']} (targets are for an H100/H200):"]

    def judge(what: str, value: float | None, target: str, met: bool) -> None:
        state = "not measured" if value is None else "met" if met else "MISSED"
        lines.append(f"  {what} (target {target}): {state}")

    one, sixteen = rows.get(1), rows.get(16)
    ms = one["window_ms"] if one else None
    judge(f"batch-1 window {ms:.1f} ms" if ms else "batch-1 window", ms,
          f"<= {TARGET_BATCH1_MS:g} ms", ms is not None and ms <= TARGET_BATCH1_MS)
    ratio = sixteen["window_ms"] / one["window_ms"] if one and sixteen else None
    judge(f"batch 16 = {ratio:.2f}x batch 1" if ratio else "batch 16 against batch 1", ratio,
          f"<= {TARGET_BATCH16_OVER_BATCH1:g}x",
          ratio is not None and ratio <= TARGET_BATCH16_OVER_BATCH1)
    speedup = one["speedup_vs_stock"] if one else None
    judge(f"{speedup:.0f}x the stock loop at batch 1" if speedup else "speed-up over the stock "
          "loop at batch 1", speedup, f">= {TARGET_SPEEDUP:g}x",
          speedup is not None and speedup >= TARGET_SPEEDUP)
    return lines


def format_bench_table(result: dict[str, Any]) -> str:
    """The readable form of a :func:`bench_engine` result: how it was measured, one row per
    batch, and the verdict."""
    hop = result["batches"][0]["audio_s_per_window"] if result["batches"] else 0.0
    lines = [
        f"diffusion engine on {result['gpu'] or result['device']} ({result['dtype']}), "
        f"{result['sampler']} {result['steps']} steps, {result['window_s']:g} s windows "
        f"({hop:g} s new audio each), {result['threads']} CPU threads, CUDA graphs "
        f"{'on' if result['cuda_graphs'] else 'off'}, compile {result['compile']}",
        f"ours: median and p95 of {result['windows']} windows after "
        f"{result['warmup_windows']} warm-up windows (all steps, VAE decode, vocoder)",
        f"stock: {result['stock_loop']}",
        "",
        f"{'rooms':>5}  {'ms/window':>10}  {'p95 ms':>8}  {'x real time':>11}  "
        f"{'stock ms/window':>15}  {'speed-up':>8}  {'peak GPU MB':>11}",
    ]
    for row in result["batches"]:
        stock, speedup, peak = (row["stock_window_ms"], row["speedup_vs_stock"],
                                row["peak_gpu_mb"])
        lines.append(
            f"{row['batch']:>5}  {row['window_ms']:>10.1f}  {row['window_p95_ms']:>8.1f}  "
            f"{row['realtime_factor']:>10.1f}x  "
            f"{'not measured' if stock is None else f'{stock:.0f}':>15}  "
            f"{'-' if speedup is None else f'{speedup:.0f}x':>8}  "
            f"{'-' if peak is None else f'{peak:.0f}':>11}")
    return "\n".join([*lines, "", *result["verdict"]])


# ---------------------------------------------------------------------------
# training


commands: list[click.Command] = [make_tiny_model_command, export_onnx_command,
                                 import_model_command]
bench_commands: list[click.Command] = [bench_engine_command]
