"""Where a real-size window's time goes on a GPU: UNet steps, VAE decode, vocoder.

Eager (no CUDA graphs), per component, timed with CUDA events, at batch 1 and 16;
then whole windows with CUDA graphs, with and without cuDNN autotuning
(``torch.backends.cudnn.benchmark``). Prints JSON. Builds the real-size model in
``--out`` unless it is there (benchmarks/engine_gpu.py shares it).

    python benchmarks/device/profile_window.py --out /tmp/a2m-bench [--dtype float16]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/a2m-bench"))
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--batch", default="1,16")
    parser.add_argument("--tiny", action="store_true", help="tiny model on the CPU (a dry run)")
    parser.add_argument("--compile", default="", help="also time windows with the UNet under "
                        "torch.compile in this mode (e.g. default, max-autotune-no-cudagraphs)")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend")
    parser.add_argument("--skip-base", action="store_true", help="only the compiled windows")
    args = parser.parse_args()

    import torch

    from engine.generators.diffusion.config import DiffusionConfig
    from engine.generators.diffusion.generator import DiffusionGenerator
    from engine.generators.diffusion.model import (
        SPEC_FILE,
        audioldm2_component_configs,
        load_model,
        make_tiny_model,
        write_model,
    )
    from engine.generators.diffusion.testing import random_embedding

    folder = args.out / ("tiny" if args.tiny else "audioldm2-size")
    if not (folder / SPEC_FILE).is_file():
        if args.tiny:
            make_tiny_model(folder)
        else:
            write_model(folder, audioldm2_component_configs())
    cuda = not args.tiny
    model = load_model(folder, "cuda" if cuda else "cpu", args.dtype if cuda else "float32")
    window_s, overlap_s = (10.24, 1.28) if cuda else (1.28, 0.32)
    spent: dict[str, float] = {}

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    def timed(name: str, fn):  # type: ignore[no-untyped-def]
        def wrapper(*a, **k):  # type: ignore[no-untyped-def]
            sync()
            began = time.perf_counter()
            out = fn(*a, **k)
            sync()
            spent[name] = spent.get(name, 0.0) + 1e3 * (time.perf_counter() - began)
            return out
        return wrapper

    def window_ms(generator: DiffusionGenerator, batch: int, eager_first: bool = False) -> float:
        """Median of three windows for ``batch`` rooms, after two (or three) warm-ups."""
        conditions = [generator.condition_from_embedding(
            f"p{i}", random_embedding(i, model.spec.embedding_dim)) for i in range(batch)]
        states = [generator.start(c, i, 0, None) for i, c in enumerate(conditions)]
        if eager_first:  # a compiled UNet compiles outside any graph capture
            graphs, generator.use_graphs = generator.use_graphs, False
            states = generator._windows(states, conditions)
            generator.use_graphs = graphs
        for _ in range(2):
            states = generator._windows(states, conditions)
        spent.clear()
        sync()
        times = []
        for _ in range(3):
            began = time.perf_counter()
            states = generator._windows(states, conditions)
            sync()
            times.append(time.perf_counter() - began)
        return round(1e3 * sorted(times)[1], 2)

    result: dict[str, object] = {
        "gpu": torch.cuda.get_device_name() if cuda else None, "dtype": str(model.dtype)}
    for graphs in (() if args.skip_base else (False, True)):
        for autotune in ((False,) if not graphs else (False, True)):
            torch.backends.cudnn.benchmark = autotune
            config = DiffusionConfig(model=str(folder), steps=4, window_s=window_s,
                                     overlap_s=overlap_s, cuda_graphs=graphs)
            generator = DiffusionGenerator(model, config, model.spec.sample_rate, 1)
            if not graphs:
                model.unet.forward = timed("unet", model.unet.forward)
                model.vae.decode = timed("vae_decode", model.vae.decode)
                model.vocoder.forward = timed("vocoder", model.vocoder.forward)
            for batch in (int(b) for b in args.batch.split(",")):
                key = f"{'graphs' if graphs else 'eager'}{'_autotune' if autotune else ''}_b{batch}"
                result[key] = {"window_ms": window_ms(generator, batch),
                               **{k: round(v / 3, 2) for k, v in spent.items()}}
                print(key, result[key], file=sys.stderr, flush=True)
            if not graphs:
                for part in (model.unet, model.vocoder):
                    del part.forward
                del model.vae.decode
    if args.compile:
        began = time.perf_counter()
        model.unet.forward = torch.compile(model.unet.forward, mode=args.compile, dynamic=False,
                                           backend=args.backend)
        config = DiffusionConfig(model=str(folder), steps=4, window_s=window_s,
                                 overlap_s=overlap_s, cuda_graphs=cuda)
        generator = DiffusionGenerator(model, config, model.spec.sample_rate, 1)
        for batch in (int(b) for b in args.batch.split(",")):
            key = f"compiled_{args.compile}_b{batch}"
            result[key] = {"window_ms": window_ms(generator, batch, eager_first=True),
                           "since_compile_s": round(time.perf_counter() - began, 1)}
            print(key, result[key], file=sys.stderr, flush=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
