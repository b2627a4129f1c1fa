"""Training-step throughput: projection (recipe), everything, distillation; JSON-ready.

Uses the trainers' own loss functions on random latents and embeddings of
the model's shapes (no dataset, no caches), with the same optimizer, clipping
and autocast, so the numbers are what a real run's inner loop costs.
``benchmarks/train_gpu.py`` runs it on a real-size random model.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any


def bench_training(model_dir: Path, batch: int, frames: int, steps: int = 5,
                   warmup: int = 2, precision: str = "auto", device: str = "auto",
                   modes: tuple[str, ...] = ("projection", "all", "distill")
                   ) -> dict[str, Any]:
    """Seconds per optimizer step and clips per second for each mode."""
    import torch

    from training.cache import TrainingData
    from training.distill import (
        DistillConfig,
        LcmGrid,
        consistency_loss,
        ema_update,
        make_student_unet,
    )
    from training.loop import (
        autocast,
        make_scaler,
        optimizer_step,
        resolve_precision,
        step_generator,
    )
    from training.objectives import NoiseSchedule
    from training.projection import (
        denoising_loss,
        draw_latents,
        load_training_model,
        trainable_modules,
    )

    model = load_training_model(model_dir, device)
    cast_dtype = resolve_precision(precision, model.device)  # type: ignore[arg-type]
    cuda = model.device.type == "cuda"
    shape = (batch, model.latent_channels, frames, model.latent_bins)
    data = TrainingData(torch.randn(shape) * 0.3, torch.full(shape, 0.05),
                        torch.nn.functional.normalize(torch.randn(batch, model.spec.embedding_dim),
                                                      dim=1),
                        list(range(batch)), ["train"] * batch)
    schedule = NoiseSchedule(model.scheduler_config, model.device)
    scaling = float(model.vae.config.scaling_factor)
    cast = autocast(model.device, cast_dtype)
    index = list(range(batch))
    rows = []
    for mode in modes:
        for module in (model.unet, model.conditioner, model.language_model):
            module.requires_grad_(False).eval()
        if mode == "distill":
            config = DistillConfig(batch_size=batch, guidance_embedding_dim=256)
            student = make_student_unet(model.unet, config.guidance_embedding_dim)
            student.train().requires_grad_(True)
            target = copy.deepcopy(student).requires_grad_(False)
            grid = LcmGrid.for_schedule(model.scheduler_config)
            parameters = list(student.parameters())
        else:
            modules = trainable_modules(model, mode == "all")
            parameters = []
            for module in modules.values():
                module.requires_grad_(True).train()
                parameters.extend(module.parameters())
        optimizer = torch.optim.AdamW(parameters, lr=1e-5)
        scaler = make_scaler(cast_dtype)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        times = []
        for step in range(warmup + steps):
            if cuda:
                torch.cuda.synchronize()
            began = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            generator = step_generator(0, step)
            x0 = draw_latents(data, index, scaling, "sample", generator, model.device)
            embeddings = data.embeddings.to(model.device)
            if mode == "distill":
                loss = consistency_loss(model, student, target, schedule, grid, x0, embeddings,
                                        generator, config, cast)
            else:
                loss = denoising_loss(model, schedule, x0, embeddings, generator, 0.1, 5.0,
                                      cast)
            (scaler.scale(loss) if scaler is not None else loss).backward()
            optimizer_step(optimizer, scaler, parameters, 1.0)
            if mode == "distill":
                ema_update(target, student, 0.95)
            if cuda:
                torch.cuda.synchronize()
            if step >= warmup:
                times.append(time.perf_counter() - began)
        step_s = sorted(times)[len(times) // 2]
        rows.append({
            "mode": mode, "trainable_parameters": sum(p.numel() for p in parameters),
            "step_ms": round(step_s * 1e3, 2), "clips_per_s": round(batch / step_s, 2),
            "audio_s_per_s": round(batch * frames / model.spec.latent_frames_per_second
                                   / step_s, 2),
            "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None,
        })
        if mode == "distill":
            del student, target
        optimizer.zero_grad(set_to_none=True)
        del optimizer
    return {
        "bench": "training", "model": str(model_dir), "device": str(model.device),
        "precision": str(cast_dtype).removeprefix("torch.") if cast_dtype else "float32",
        "batch": batch, "clip_s": frames / model.spec.latent_frames_per_second,
        "latent_shape": list(shape), "threads": torch.get_num_threads(),
        "unet_parameters": sum(p.numel() for p in model.unet.parameters()),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if cuda else None, "modes": rows,
    }
