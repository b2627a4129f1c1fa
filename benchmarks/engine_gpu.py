"""GPU benchmark of the diffusion engine at real size, with random weights.

Builds a model folder in the AudioLDM2 layout at published sizes (UNet ~350M
parameters with block channels 128, 256, 384, 640; VAE and HiFi-GAN as
AudioLDM2; GPT-2 base), saves it, loads it back through the user's code path
and runs ``art2mus bench engine`` on it, printing JSON. ``--tiny`` uses the
tiny model instead, so the script itself can be checked on a CPU.

    python benchmarks/engine_gpu.py --out /tmp/a2m-bench [--tiny] [--steps 4]
        [--batch 1,4,16] [--dtype float16] [--compile default]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.generators.diffusion.cli import bench_engine  # noqa: E402
from engine.generators.diffusion.model import (  # noqa: E402
    SPEC_FILE,
    audioldm2_component_configs,
    make_tiny_model,
    write_model,
)


def main() -> None:
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
    parser.add_argument("--repeats", type=int, default=3)
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
                          args.dtype, args.repeats, threads=args.threads,
                          compile_mode=args.compile)
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
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
