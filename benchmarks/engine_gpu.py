"""GPU benchmark of the diffusion engine at real size, with random weights.

Builds a model folder in the AudioLDM2 layout at published sizes (UNet ~350M
parameters with block channels 128, 256, 384, 640; VAE and HiFi-GAN as
AudioLDM2; GPT-2 base), saves it, loads it back through the user's code path
and runs ``art2mus bench engine`` on it: JSON on stdout, the readable table
and verdict on stderr. The stock loop is warmed up at the measured shape and
timed over all its steps on a GPU (``--stock-timed-steps`` to change it,
``--stock-steps 0`` to skip it); ours is the median and p95 of ``--windows``
windows after warm-up. ``--tiny`` uses the tiny model instead, so the script
itself can be checked on a CPU. ``--summarize A.json B.json ...`` reads the results of
one run of benchmarks/device/gpu-checks.sh and judges the fastest batch-1 window of
any of them against the stock loop measured in that same run.

    python benchmarks/engine_gpu.py --out /tmp/a2m-bench [--tiny] [--steps 4]
        [--batch 1,4,16] [--dtype float16] [--compile default] [--stock-steps 200]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.generators.diffusion.cli import (  # noqa: E402
    bench_engine,
    bench_verdict,
    format_bench_table,
)
from engine.generators.diffusion.model import (  # noqa: E402
    SPEC_FILE,
    audioldm2_component_configs,
    make_tiny_model,
    write_model,
)


def summarize(paths: list[Path]) -> dict[str, Any]:
    """One run's verdict: the stock loop from the first result that measured it at batch 1,
    the fastest batch-1 window of any result (e.g. the compiled UNet) against it, the rest
    from that first result. A missing or unreadable file (a stage that ran out of time) is
    named, not fatal."""
    results: dict[str, dict[str, Any]] = {}
    unreadable = []
    for path in paths:
        try:
            results[path.name] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            unreadable.append(path.name)

    def batch1(result: dict[str, Any]) -> dict[str, Any] | None:
        return next((row for row in result["batches"] if row["batch"] == 1), None)

    base_name = next((name for name, result in results.items()
                      if (row := batch1(result)) and row.get("stock_window_ms")), None)
    summary: dict[str, Any] = {"unreadable": unreadable, "baseline_from": base_name,
                               "windows_ms": {name: {row["batch"]: row["window_ms"]
                                                     for row in result["batches"]}
                                              for name, result in results.items()}}
    if base_name is None:
        summary["verdict"] = ["verdict: no result measured the stock loop at batch 1"]
        return summary
    base = json.loads(json.dumps(results[base_name]))  # a deep copy to edit
    stock = batch1(base)
    assert stock is not None
    best_name, best = min(((name, row) for name, result in results.items()
                           if (row := batch1(result))), key=lambda item: item[1]["window_ms"])
    summary["best_batch1_from"] = best_name
    fastest = {**best, **{k: v for k, v in stock.items() if k.startswith("stock_")},
               "speedup_vs_stock": stock["stock_window_ms"] / best["window_ms"]}
    base["batches"] = [fastest if row["batch"] == 1 else row for row in base["batches"]]
    summary["verdict"] = [f"batch 1 from {best_name}, stock loop and the rest from "
                          f"{base_name}", *bench_verdict(base)]
    return summary


def main() -> None:
    if sys.argv[1:2] == ["--summarize"]:
        summary = summarize([Path(arg) for arg in sys.argv[2:]])
        print("\n".join(summary["verdict"]), file=sys.stderr)
        print(json.dumps(summary, indent=2))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/bench-model"))
    parser.add_argument("--tiny", action="store_true", help="tiny model (CPU check)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", default="1,4,16")
    parser.add_argument("--window-s", type=float, default=None,
                        help="default: 10.24 (real size) or 1.28 (tiny)")
    parser.add_argument("--overlap-s", type=float, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the stock loop")
    parser.add_argument("--windows", type=int, default=20, help="timed windows of ours")
    parser.add_argument("--warmup-windows", type=int, default=3)
    parser.add_argument("--stock-steps", type=int, default=200, help="0: no stock baseline")
    parser.add_argument("--stock-timed-steps", type=int, default=None,
                        help="default: all of --stock-steps on a GPU, 20 on a CPU")
    parser.add_argument("--stock-warmup-steps", type=int, default=3)
    parser.add_argument("--stock-batch", default=None,
                        help="time the stock loop at these batches only (default: every one)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--compile", default="off", help="engine.diffusion.compile for the UNet")
    args = parser.parse_args()

    folder = args.out / ("tiny" if args.tiny else "audioldm2-size")
    if not (folder / SPEC_FILE).is_file():
        if args.tiny:
            make_tiny_model(folder)
        else:
            write_model(folder, audioldm2_component_configs())
    window = args.window_s or (1.28 if args.tiny else 10.24)
    overlap = args.overlap_s or (0.32 if args.tiny else 1.28)
    batches = [int(b) for b in args.batch.split(",")]
    result = bench_engine(folder, args.steps, batches, window, overlap, args.device,
                          args.dtype, args.repeats, args.stock_steps, threads=args.threads,
                          compile_mode=args.compile, windows=args.windows,
                          warmup_windows=args.warmup_windows,
                          stock_timed_steps=args.stock_timed_steps,
                          stock_warmup_steps=args.stock_warmup_steps,
                          stock_batches=([int(b) for b in args.stock_batch.split(",")]
                                         if args.stock_batch else None))
    import torch

    from engine.generators.diffusion.model import load_model

    model = load_model(folder, "cpu", "float32") if args.tiny else None
    if model is not None:
        result["unet_parameters"] = sum(p.numel() for p in model.unet.parameters())
    else:
        from diffusers.pipelines.audioldm2.modeling_audioldm2 import (
            AudioLDM2UNet2DConditionModel,
        )

        unet = AudioLDM2UNet2DConditionModel.from_pretrained(str(folder / "unet"))
        result["unet_parameters"] = sum(p.numel() for p in unet.parameters())
    result["torch"] = torch.__version__
    result["gpu"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    print(format_bench_table(result), file=sys.stderr, flush=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
