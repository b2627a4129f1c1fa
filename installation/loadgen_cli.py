"""``art2mus bench rooms``: how many rooms one engine serves (registered by installation/cli.py).

``art2mus bench rooms [--config FILE] [--rooms N | --find-max] [--seconds S]
[--generator procedural|diffusion] [--model DIR] [--change-every-s 30] [--json]``
runs N virtual rooms (:mod:`installation.loadgen`) against one engine process
for S seconds after a warm-up, and prints a table (or JSON) and the verdict
against the issue's target: no underflow and transition to audible p95 <= 500 ms.
``--find-max`` doubles N, then bisects, to the largest N that meets it. The
H200 target (N >= 256) is judged only for the diffusion generator on a GPU.

Heavy imports (numpy, zmq, torch) happen inside the command.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import click

from ground.cli_types import SEED, FiniteFloat


def _on_gpu(config: Any) -> bool:
    """Whether the configured diffusion engine runs on a CUDA device."""
    if config.engine.generator != "diffusion":
        return False
    device = config.engine.diffusion.device
    if device == "cpu":
        return False
    if device == "cuda":
        return True
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _row(trial: Any) -> str:
    """One trial as a table row."""
    def num(value: Any, width: int) -> str:
        return f"{'-' if value is None else value:>{width}}"

    generating = trial.engine_generating or {}
    busy = (None if "busy_share" not in generating
            else f"{round(100 * generating['busy_share'])}%")
    per_turn = generating.get("chunks_per_turn")

    return (f"{trial.rooms:>6} {trial.underflows:>10} {num(trial.transition_ms['p95'], 9)} "
            f"{trial.transitions:>6} {num(trial.lead_min_s, 9)} "
            f"{num(trial.chunk_ms['median'], 8)} / {num(trial.chunk_ms['p95'], 7)} "
            f"{num(trial.engine_cpu_pct, 8)} {num(busy, 6)} {num(per_turn, 6)} "
            f"{num(trial.loadgen_cpu_pct, 8)} "
            f"{trial.loadgen_late_ms_max:>8}  {'pass' if trial.passed else 'FAIL'}")


HEADER = (f"{'rooms':>6} {'underflows':>10} {'trans p95':>9} {'trans':>6} {'lead min':>9} "
          f"{'chunk ms median / p95':>21} {'engine %':>8} {'busy':>6} {'/turn':>6} "
          f"{'loadgen%':>8} {'late ms':>8}  "
          f"verdict")

#: What the table's columns mean (printed under it).
LEGEND = ("underflows: times a room's playhead found no material (gaps included); trans p95: "
          "view change sent -> first new sample played, ms; trans: transitions heard; lead "
          "min: least material queued ahead of a playhead, s; engine %: CPU of the engine "
          "process (100 = one core); busy: its time inside the generator (a GPU engine: "
          "the model's share of the time), /turn: chunks per generating turn (how full "
          "its batches are), both from its stats events; loadgen % / late ms: this "
          "process's CPU and its worst lateness reading a block (large: the load "
          "generator, not the engine, fell behind)")


#: The most rooms one trial runs: 16 times the H200 target. Each virtual room keeps a
#: playback ring of several seconds (about 2.5 MB with the default config), so 4096
#: rooms already hold some 10 GB; a bench past it would run out of memory first.
MAX_ROOMS = 4096


@click.command("rooms")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="Installation config whose engine section (and first room's audio_out) "
                   "the bench uses; rooms, endpoints and output are the bench's own.")
@click.option("--rooms", type=click.IntRange(1, MAX_ROOMS), default=None,
              help="Rooms to run (default 4); with --find-max, the first N tried (default 1).")
@click.option("--find-max", is_flag=True,
              help="Double N, then bisect, to the largest N that meets the target.")
@click.option("--max-rooms", type=click.IntRange(1, MAX_ROOMS), default=MAX_ROOMS,
              show_default=True, help="--find-max stops doubling past this N.")
@click.option("--seconds", type=FiniteFloat(0.0, 86400.0, min_open=True), default=60.0,
              show_default=True, help="Measured seconds per trial (after the warm-up).")
@click.option("--warmup-s", type=FiniteFloat(0.0, 3600.0), default=5.0, show_default=True,
              help="Seconds played, once every room plays, before measuring (excluded).")
@click.option("--generator", type=click.Choice(["procedural", "diffusion"]), default=None,
              help="Override the config's engine.generator.")
@click.option("--model", "model_dir", type=click.Path(exists=True, file_okay=False,
                                                      path_type=Path), default=None,
              help="Diffusion model folder (engine.diffusion.model).")
@click.option("--change-every-s", type=FiniteFloat(0.1, 86400.0), default=30.0,
              show_default=True, help="Each room changes artwork this often (staggered).")
@click.option("--seed", type=SEED, default=0, show_default=True,
              help="Seeds the artworks, the order of changes and their stagger.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the table.")
def bench_rooms(config_path: Path | None, rooms: int | None, find_max: bool, max_rooms: int,
                seconds: float, warmup_s: float, generator: str | None, model_dir: Path | None,
                change_every_s: float, seed: int, as_json: bool) -> None:
    """Rooms per engine: N virtual rooms against one engine; underflows, transition latency."""
    from ground.errors import ConfigError
    from installation import loadgen
    from installation.config import InstallationConfig, RoomConfig, load_config

    if model_dir is not None and generator == "procedural":
        raise ConfigError("bench rooms: --model names a diffusion model folder; it needs "
                          "--generator diffusion, got --generator procedural")
    if model_dir is not None and generator is None:
        generator = "diffusion"
    base = (load_config(config_path) if config_path is not None
            else InstallationConfig(rooms=(RoomConfig(id="room-1"),)))
    # Validated once here (a mistake is said before any engine starts), then per trial.
    probe = loadgen.bench_config(base, 1, Path(tempfile.gettempdir()) / "a2m-rooms-probe",
                                 generator, model_dir)
    width, encoder = loadgen.embedding_for(probe)  # reads the model folder's spec: fails early
    on_gpu = _on_gpu(probe)

    def trial(n: int) -> Any:
        spec = loadgen.LoadSpec(rooms=n, seconds=seconds, warmup_s=warmup_s,
                                change_every_s=change_every_s, seed=seed)
        if not as_json:
            click.echo(f"running {n} room(s) for {warmup_s:g} + {seconds:g} s ...", err=True)
        return loadgen.run_trial(base, spec, generator, model_dir)

    best: int | None
    if find_max:
        best, trials = loadgen.find_max(trial, start=rooms or 1, limit=max_rooms)
    else:
        trials = [trial(rooms or 4)]
        best = trials[0].rooms if trials[0].passed else None
    h200_met = (best is not None and best >= loadgen.H200_TARGET_ROOMS) if on_gpu else None
    report: dict[str, Any] = {
        "generator": probe.engine.generator,
        "model": probe.engine.diffusion.model or None,
        "config": None if config_path is None else str(config_path),
        "seconds": seconds, "warmup_s": warmup_s, "change_every_s": change_every_s,
        "seed": seed, "find_max": find_max,
        "views": ({"encoder": "descriptor-v1", "width": None} if width is None else
                  {"encoder": encoder or f"loadgen-random-{width}", "width": width,
                   "note": "seeded unit vectors: no image encoder of this width runs here"}),
        "max_rooms": best if find_max else None,
        "passed": all(t.passed for t in trials) if not find_max else best is not None and best > 0,
        "target": {"underflows": 0,
                   "transition_p95_ms": loadgen.TRANSITION_P95_TARGET_S * 1000.0,
                   "h200_rooms": loadgen.H200_TARGET_ROOMS},
        "on_gpu": on_gpu, "h200_target_met": h200_met,
        "trials": [t.to_dict() for t in trials],
    }
    if as_json:
        click.echo(json.dumps(report, indent=1))
        return
    click.echo(f"generator {report['generator']}"
               + (f", model {report['model']}" if report["model"] else "")
               + f"; {seconds:g} s measured after {warmup_s:g} s warm-up; one artwork change "
                 f"per room every {change_every_s:g} s")
    click.echo(HEADER)
    for t in trials:
        click.echo(_row(t))
    click.echo(LEGEND)
    target = (f"0 underflows and transition p95 <= "
              f"{loadgen.TRANSITION_P95_TARGET_S * 1000:.0f} ms")
    if find_max:
        click.echo(f"largest N meeting the target ({target}): {best}")
    else:
        click.echo(f"{'PASS' if report['passed'] else 'FAIL'}: {trials[0].rooms} room(s), "
                   f"target {target}")
    if h200_met is None:
        click.echo(f"H200 target (N >= {loadgen.H200_TARGET_ROOMS}) not judged: it needs "
                   f"--generator diffusion on a GPU")
    else:
        click.echo(f"H200 target (N >= {loadgen.H200_TARGET_ROOMS}): "
                   f"{'met' if h200_met else 'not met'} (N = {best})")


bench_commands: list[click.Command] = [bench_rooms]
