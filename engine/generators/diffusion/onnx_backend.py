"""ONNX export and the ONNX Runtime backend of the diffusion generator.

``export_onnx`` writes three static-shape graphs from a model folder::

    OUT_DIR/unet.onnx          sample, timestep, tokens, support[, timestep_cond] -> eps
    OUT_DIR/vae_decoder.onnx   latents -> mel (scaled by 1/scaling_factor inside)
    OUT_DIR/vocoder.onnx       mel -> waveform (16 kHz)
    OUT_DIR/onnx_export.json   the shapes they were exported at

:class:`OnnxBackend` runs them with the execution providers the config names
(CPU, CUDA, TensorRT), and refuses at load any file whose input shapes do
not match the model folder and window (naming the file). ``threads > 0``
(``engine.diffusion.threads``) caps each session's CPU threads: ONNX Runtime
keeps its own thread pools, so ``torch.set_num_threads`` does not reach it. It plugs into
:class:`engine.generators.diffusion.generator.DiffusionGenerator` as its ``Backend``
(:class:`engine.generators.diffusion.backends.Backend`);
sampling stays in torch (the sampler is cheap next to the UNet).

IO binding: inputs and outputs are torch tensors bound to the session by
pointer, on the device the first provider runs on (CUDA memory for the CUDA
and TensorRT providers, host memory for the CPU one), so a GPU engine's
latents never round-trip through host memory between the sampler and the
networks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.generators.diffusion.model import LoadedModel, load_model
from ground.cli_report import ProgressUpdate
from ground.errors import DependencyError, InputError

MANIFEST = "onnx_export.json"
FILES = ("unet.onnx", "vae_decoder.onnx", "vocoder.onnx")
#: Providers that run on (and are bound to) CUDA memory.
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


class _UNet(torch.nn.Module):
    def __init__(self, model: LoadedModel) -> None:
        super().__init__()
        self.unet = model.unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, tokens: torch.Tensor,
                support: torch.Tensor, timestep_cond: torch.Tensor | None = None
                ) -> torch.Tensor:
        return self.unet(sample, timestep, encoder_hidden_states=tokens,
                         encoder_hidden_states_1=support, timestep_cond=timestep_cond,
                         return_dict=False)[0]


class _VaeDecoder(torch.nn.Module):
    def __init__(self, model: LoadedModel) -> None:
        super().__init__()
        self.vae = model.vae
        self.scale = float(model.vae.config.scaling_factor)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(latents / self.scale, return_dict=False)[0].squeeze(1)


class _Vocoder(torch.nn.Module):
    def __init__(self, model: LoadedModel) -> None:
        super().__init__()
        self.vocoder = model.vocoder

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.vocoder(mel)


def expected_shapes(model: LoadedModel, window_frames: int, batch: int
                    ) -> dict[str, dict[str, list[int]]]:
    """Input shapes of each exported file, from the model config and window."""
    unet = {
        "sample": [batch, model.latent_channels, window_frames, model.latent_bins],
        "timestep": [1],
        "tokens": [batch, model.spec.generated_tokens, model.lm_width],
        "support": [batch, int(model.support_prompt.shape[1]), model.support_width],
    }
    if model.spec.guidance_embedding_dim:
        unet["timestep_cond"] = [batch, model.spec.guidance_embedding_dim]
    return {
        "unet.onnx": unet,
        "vae_decoder.onnx": {"latents": [1, model.latent_channels, window_frames,
                                         model.latent_bins]},
        "vocoder.onnx": {"mel": [1, window_frames * model.vae_scale_factor, model.mel_bins]},
    }


def export_onnx(model_dir: str | Path, out_dir: str | Path, window_s: float = 2.56,
                batch: int = 1, opset: int = 17,
                progress: ProgressUpdate | None = None) -> dict[str, Any]:
    """Export the UNet (static ``batch``), VAE decoder and vocoder of ``model_dir``.

    ``progress(stage, done, total)`` is told the parts exported so far (0 of 3 before the
    model loads, then after each part), for a progress bar.
    """
    import warnings

    stage = "exporting to ONNX"
    if progress is not None:
        progress(stage, 0, len(FILES))
    model = load_model(model_dir, "cpu", "float32")
    frames = round(window_s * model.spec.latent_frames_per_second)
    if frames % model.unet_downsample or frames < model.unet_downsample:
        raise InputError(f"--window-s {window_s}: expected a multiple of "
                         f"{model.unet_downsample / model.spec.latent_frames_per_second:g} s "
                         f"for {model_dir}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shapes = expected_shapes(model, frames, batch)
    modules = {"unet.onnx": _UNet(model), "vae_decoder.onnx": _VaeDecoder(model),
               "vocoder.onnx": _Vocoder(model)}
    outputs = {"unet.onnx": ["eps"], "vae_decoder.onnx": ["mel"], "vocoder.onnx": ["waveform"]}
    for done, (name, module) in enumerate(modules.items()):
        if progress is not None and done:
            progress(stage, done, len(modules))
        inputs = tuple(torch.zeros(shape, dtype=torch.long if key == "timestep"
                                   else torch.float32) + (500 if key == "timestep" else 0)
                       for key, shape in shapes[name].items())
        with warnings.catch_warnings():
            # The TorchScript exporter warns about tracing Python conditionals on shapes;
            # shapes are static here by design.
            warnings.simplefilter("ignore")
            torch.onnx.export(module.eval(), inputs, str(out / name),
                              input_names=list(shapes[name]), output_names=outputs[name],
                              opset_version=opset, dynamo=False)
    if progress is not None:
        progress(stage, len(modules), len(modules))
    manifest = {"model": str(model_dir), "window_frames": frames, "batch": batch,
                "inputs": shapes}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


class OnnxBackend:
    """UNet, VAE decoder and vocoder in ONNX Runtime sessions (static shapes, IO binding)."""

    def __init__(self, onnx_dir: Path, model: LoadedModel, providers: tuple[str, ...] | list[str],
                 window_frames: int,
                 provider_options: dict[str, dict[str, str]] | None = None,
                 threads: int = 0) -> None:
        if threads < 0:
            raise InputError(f"engine.diffusion.threads: expected >= 0 (0: ONNX Runtime's "
                             f"default), got {threads}")
        try:
            import onnxruntime as ort
        except ImportError as error:
            raise DependencyError("the ONNX backend needs onnxruntime: pip install "
                                  "'art2mus[diffusion]' (or onnxruntime-gpu)") from error
        self.model = model
        available = set(ort.get_available_providers())
        missing = [p for p in providers if p not in available]
        if missing:
            raise InputError(f"engine.diffusion.onnx_providers: {missing} not available in "
                             f"this onnxruntime (has {sorted(available)})")
        folder = Path(onnx_dir)
        for name in FILES:
            if not (folder / name).is_file():
                raise InputError(f"ONNX folder {folder} is incomplete: missing {folder / name}")
        self.sessions: dict[str, Any] = {}
        self.output_shapes: dict[str, list[int]] = {}
        batch = None
        for name in FILES:
            options = ort.SessionOptions()
            options.log_severity_level = 3
            if threads:
                # One pool of ``threads`` for the operators, run one after another: the
                # inter-op pool would otherwise add threads of its own beside it.
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
                options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            session = ort.InferenceSession(
                str(folder / name), options, providers=list(providers),
                provider_options=[dict((provider_options or {}).get(p, {})) for p in providers])
            shapes = {i.name: list(i.shape) for i in session.get_inputs()}
            if name == "unet.onnx":
                batch = shapes.get("sample", [None])[0]
            expected = expected_shapes(model, window_frames,
                                       batch if isinstance(batch, int) else -1)[name]
            if shapes != expected:
                raise InputError(f"ONNX file {folder / name}: input shapes {shapes} do not match "
                                 f"the model {model.folder} and window: expected {expected}")
            output_shape = session.get_outputs()[0].shape
            if not all(isinstance(d, int) for d in output_shape):
                raise InputError(f"ONNX file {folder / name}: output shape {output_shape} is "
                                 f"not static; re-export it with art2mus export-onnx")
            self.sessions[name] = session
            self.output_shapes[name] = list(output_shape)
        assert isinstance(batch, int)
        self.batch = batch
        on_gpu = providers[0] in GPU_PROVIDERS
        self.device = model.device if on_gpu and model.device.type == "cuda" else \
            torch.device("cuda" if on_gpu else "cpu")

    def _run(self, name: str, feeds: dict[str, torch.Tensor]) -> torch.Tensor:
        """Run one session on ``feeds``, bound by pointer on this backend's device."""
        session = self.sessions[name]
        binding = session.io_binding()
        kind, index = self.device.type, self.device.index or 0
        bound = []  # keeps each input alive (and contiguous) until the run is done
        for key, value in feeds.items():
            value = value.to(self.device, torch.int64 if key == "timestep" else torch.float32
                             ).contiguous()
            bound.append(value)
            binding.bind_input(key, kind, index, np.int64 if key == "timestep" else np.float32,
                               list(value.shape), value.data_ptr())
        out = torch.empty(self.output_shapes[name], dtype=torch.float32, device=self.device)
        binding.bind_output(session.get_outputs()[0].name, kind, index, np.float32,
                            list(out.shape), out.data_ptr())
        if kind == "cuda":
            # ONNX Runtime reads on its own stream: torch's writes must have landed.
            torch.cuda.current_stream(self.device).synchronize()
        session.run_with_iobinding(binding)
        if kind == "cuda":
            binding.synchronize_outputs()
        return out

    def unet(self, sample: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor,
             support: torch.Tensor, timestep_cond: torch.Tensor | None) -> torch.Tensor:
        batch = sample.shape[0]
        timestep = t.reshape(1)
        outs = []
        for begin in range(0, batch, self.batch):  # pad to the exported static batch
            count = min(self.batch, batch - begin)

            def rows(x: torch.Tensor, begin: int = begin, count: int = count) -> torch.Tensor:
                part = x[begin:begin + count]
                if count < self.batch:
                    part = torch.cat([part, part[-1:].expand(self.batch - count,
                                                             *part.shape[1:])])
                return part

            feeds = {"sample": rows(sample), "timestep": timestep, "tokens": rows(tokens),
                     "support": rows(support)}
            if timestep_cond is not None:
                feeds["timestep_cond"] = rows(timestep_cond)
            outs.append(self._run("unet.onnx", feeds)[:count])
        return torch.cat(outs).to(sample.device, sample.dtype)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        waves = [self._run("vocoder.onnx", {"mel": self._run("vae_decoder.onnx",
                                                              {"latents": item[None]})})
                 for item in latents]
        return torch.cat(waves).to(latents.device)
