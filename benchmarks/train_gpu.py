"""GPU benchmark of training steps at real size, with random weights.

Builds (once) a model folder in the AudioLDM2 layout at published sizes
(``audioldm2_component_configs``: UNet ~350M parameters, VAE and HiFi-GAN as
AudioLDM2, GPT-2 base), loads it through the trainers' own code path and
times optimizer steps of: the published recipe (projection only), every
weight trainable, and latent consistency distillation (student + EMA target
+ guided teacher step), printing JSON. ``--tiny`` uses the tiny model and
short clips instead, so the script itself can be checked on a CPU.

    python benchmarks/train_gpu.py --out /tmp/a2m-train-bench [--tiny] [--batch 8]
        [--clip-s 10.24] [--precision auto|fp32|bf16|fp16] [--steps 5]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.generators.diffusion.model import (  # noqa: E402
    SPEC_FILE,
    audioldm2_component_configs,
    make_tiny_model,
    write_model,
)
from training.bench import bench_training  # noqa: E402


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Parse arguments, build the model folder if missing, run, print and return the JSON."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/train-bench-model"))
    parser.add_argument("--tiny", action="store_true", help="tiny model (CPU check)")
    parser.add_argument("--batch", type=int, default=None, help="default: 8 (real), 2 (tiny)")
    parser.add_argument("--clip-s", type=float, default=None,
                        help="default: 10.24 (real size) or 0.32 (tiny)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per mode")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--modes", default="projection,all,distill")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    args = parser.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    folder = args.out / ("tiny" if args.tiny else "audioldm2-size")
    if not (folder / SPEC_FILE).is_file():
        if args.tiny:
            make_tiny_model(folder, lm_width=96, support_width=64)
        else:
            write_model(folder, audioldm2_component_configs())
    clip_s = args.clip_s or (0.32 if args.tiny else 10.24)
    batch = args.batch or (2 if args.tiny else 8)
    frames = round(clip_s * 25)
    result = bench_training(folder, batch, frames, args.steps, args.warmup, args.precision,
                            args.device, tuple(args.modes.split(",")))
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
