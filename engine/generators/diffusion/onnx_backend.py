"""ONNX export and the ONNX Runtime backend of the diffusion generator.

``export_onnx`` writes three static-shape graphs from a model folder::

    OUT_DIR/unet.onnx          sample, timestep, tokens, support[, timestep_cond] -> eps
    OUT_DIR/vae_decoder.onnx   latents -> mel (scaled by 1/scaling_factor inside)
    OUT_DIR/vocoder.onnx       mel -> waveform (16 kHz)
    OUT_DIR/onnx_export.json   the shapes they were exported at, and the fingerprint of
                               the model they come from (below)

:class:`OnnxBackend` runs them with the execution providers the config names
(CPU, CUDA, TensorRT), and refuses at load, naming the file and the
``art2mus export-onnx`` options that would fit: a file ONNX Runtime cannot open
(damaged, empty, an opset it does not know), inputs or outputs whose names,
shapes or element types are not what the engine binds for this model and
window (float32, int64 for the timestep), and files exported from another
model. The fingerprint: the size, modification time and SHA-256 of the
UNet's, VAE's and vocoder's config and weight files at export. At load a file
whose path, size and modification time are as recorded is taken as it was
(no hashing); any other (a copied or moved folder) is hashed and compared,
about 1.3 s per GB on one core (a real-size model's three parts, about 2 GB:
under 3 s). An export without a fingerprint (written by an earlier art2mus)
is refused with the command that re-exports it: same-shaped files of another
model play that model's audio, and nothing else tells. ``threads > 0``
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

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
import torch

from engine.generators.diffusion.model import (
    SUBFOLDERS,
    LoadedModel,
    error_reason,
    load_model,
    weight_file,
)
from ground.cli_report import ProgressUpdate
from ground.errors import Art2MusError, DependencyError, InputError

MANIFEST = "onnx_export.json"
FILES = ("unet.onnx", "vae_decoder.onnx", "vocoder.onnx")
#: Providers that run on (and are bound to) CUDA memory.
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
#: The parts of a model folder baked into the ONNX files (the conditioning runs in torch).
SOURCE_PARTS = ("unet", "vae", "vocoder")
#: What :meth:`OnnxBackend._run` binds: the element type of every input and output.
FLOAT, INT64 = "tensor(float)", "tensor(int64)"


def _ort_reason(error: BaseException) -> str:
    """ONNX Runtime's refusal to open a file, on one line without the file (named already)
    or the C++ function it came from."""
    text = " ".join(str(error).split())
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : ", "", text)
    text = re.sub(r"Load model from .*? failed: ?", "", text)
    text = re.sub(r"/\S+:\d+ [^(]*\(.*?\) ", "", text)  # source location and signature
    return f"{type(error).__name__}: {text[:500]}"


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


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


def expected_outputs(model: LoadedModel, window_frames: int, batch: int
                     ) -> dict[str, tuple[str, Callable[[list[Any]], bool]]]:
    """Each exported file's output shape: as said in a refusal, and the test of it. The
    vocoder's holds at least the window's samples (HiFi-GAN's transposed convolutions add a
    few, trimmed by the generator)."""
    inputs = expected_shapes(model, window_frames, batch)
    eps, mel = inputs["unet.onnx"]["sample"], inputs["vocoder.onnx"]["mel"]
    samples = window_frames * model.samples_per_latent_frame
    return {
        "unet.onnx": (f"{eps} (the sample's shape)", lambda shape: shape == eps),
        "vae_decoder.onnx": (f"{mel} (the vocoder's mel)", lambda shape: shape == mel),
        "vocoder.onnx": (f"[1, at least {samples}] (the window's samples)",
                         lambda shape: len(shape) == 2 and shape[0] == 1
                         and _is_count(shape[1]) and shape[1] >= samples),
    }


def _sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def _source_files(model_dir: Path) -> dict[str, list[Path]]:
    return {sub: [model_dir / sub / SUBFOLDERS[sub][0], weight_file(model_dir, sub)]
            for sub in SOURCE_PARTS}


def source_fingerprint(model_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Per part baked into the ONNX files (UNet, VAE, vocoder), per file (its config and its
    weights): where it was, its size, its modification time and its SHA-256. Hashing reads
    every byte once, at export: about 1.3 s per GB (SHA-256 at 750 MB/s on one core of this
    project's VM)."""
    fingerprint: dict[str, dict[str, dict[str, Any]]] = {}
    for sub, files in _source_files(model_dir).items():
        fingerprint[sub] = {}
        for path in files:
            stat = path.stat()
            fingerprint[sub][path.name] = {"path": str(path.resolve()), "bytes": stat.st_size,
                                           "mtime_ns": stat.st_mtime_ns,
                                           "sha256": _sha256(path)}
    return fingerprint


def _same_file(path: Path, recorded: object) -> bool:
    """Whether ``path`` holds what ``recorded`` (one file's fingerprint) says: taken as is
    when its path, size and modification time are as recorded, else hashed."""
    if not isinstance(recorded, dict):
        return False
    stat = path.stat()
    if stat.st_size != recorded.get("bytes"):
        return False
    if (str(path.resolve()) == recorded.get("path")
            and stat.st_mtime_ns == recorded.get("mtime_ns")):
        return True
    return _sha256(path) == recorded.get("sha256")


def reexport_hint(model: LoadedModel, onnx_dir: Path, window_frames: int,
                  batch: object) -> str:
    """The command that writes ONNX files this model and window can use."""
    window_s = window_frames / model.spec.latent_frames_per_second
    batch_text = batch if isinstance(batch, int) and batch > 0 else "N"
    return (f"re-export with `art2mus export-onnx {model.folder} {onnx_dir} --window-s "
            f"{window_s:g} --batch {batch_text}`")


def read_manifest(onnx_dir: Path) -> tuple[dict[str, Any] | None, str]:
    """``onnx_export.json`` of ``onnx_dir``, or None and what is wrong with it."""
    path = onnx_dir / MANIFEST
    if not path.is_file():
        return None, f"no {path} (art2mus export-onnx writes it beside the files)"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return None, f"an unreadable {path} ({error_reason(error)})"
    if not isinstance(data, dict):
        return None, f"{path} holding no JSON object"
    return data, ""


def check_source(onnx_dir: Path, manifest: dict[str, Any] | None, problem: str,
                 model: LoadedModel, hint: str) -> None:
    """InputError naming both folders unless the ONNX files were exported from ``model``'s
    folder as it is now (its UNet, VAE and vocoder: config and weights)."""
    expected = f"ONNX files in {onnx_dir}: expected an export of the model {model.folder}"
    if manifest is None:
        raise InputError(f"{expected}, got {problem}; {hint}")
    recorded = manifest.get("source")
    if not isinstance(recorded, dict):
        raise InputError(f"{expected}, got an export without the fingerprint of its model "
                         f"({manifest.get('model', 'not named')}; an earlier art2mus wrote "
                         f"none); {hint}")
    for sub, files in _source_files(model.folder).items():
        entry = recorded.get(sub)
        for path in files:
            try:
                same = _same_file(path, entry.get(path.name) if isinstance(entry, dict)
                                  else None)
            except OSError as error:
                raise InputError(f"{expected}, got {path} unreadable: {error}") from error
            if not same:
                raise InputError(f"{expected}, got an export of "
                                 f"{manifest.get('model', 'another model')} whose {sub}/"
                                 f"{path.name} differs from {path}; {hint}")


def check_providers(providers: tuple[str, ...] | list[str]) -> Any:
    """onnxruntime, once every provider in ``providers`` is one it has (InputError naming
    them otherwise; DependencyError without onnxruntime)."""
    try:
        import onnxruntime as ort
    except ImportError as error:
        raise DependencyError("the ONNX backend needs onnxruntime: pip install "
                              "'art2mus[diffusion]' (or onnxruntime-gpu)") from error
    available = set(ort.get_available_providers())
    missing = [p for p in providers if p not in available]
    if missing:
        raise InputError(f"engine.diffusion.onnx_providers: {missing} not available in "
                         f"this onnxruntime (has {sorted(available)})")
    return ort


def export_onnx(model_dir: str | Path, out_dir: str | Path, window_s: float = 2.56,
                batch: int = 1, opset: int = 17,
                progress: ProgressUpdate | None = None) -> dict[str, Any]:
    """Export the UNet (static ``batch``), VAE decoder and vocoder of ``model_dir``.

    ``window_s`` must be the ``engine.diffusion.window_s`` of the config that will use the
    files (static shapes). ``progress(stage, done, total)`` is told the parts exported so
    far (0 of 3 before the model loads, then after each part), for a progress bar.
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
    manifest = {"model": str(model.folder.resolve()), "window_s": window_s,
                "window_frames": frames, "batch": batch, "inputs": shapes,
                "source": source_fingerprint(model.folder)}
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


class OnnxBackend:
    """UNet, VAE decoder and vocoder in ONNX Runtime sessions (static shapes, IO binding).

    Every check is made here, before the engine serves (see the module docstring);
    ``optimize=False`` opens the sessions without graph optimizations, which is how
    ``art2mus check-config --deep`` checks the files (on the CPU provider: a check, not a
    TensorRT engine build)."""

    def __init__(self, onnx_dir: Path, model: LoadedModel, providers: tuple[str, ...] | list[str],
                 window_frames: int,
                 provider_options: dict[str, dict[str, str]] | None = None,
                 threads: int = 0, *, optimize: bool = True) -> None:
        if threads < 0:
            raise InputError(f"engine.diffusion.threads: expected >= 0 (0: ONNX Runtime's "
                             f"default), got {threads}")
        ort = check_providers(providers)
        self.model = model
        folder = Path(onnx_dir)
        for name in FILES:
            if not (folder / name).is_file():
                raise InputError(f"ONNX folder {folder} is incomplete: missing {folder / name}")
        manifest, problem = read_manifest(folder)
        self.sessions: dict[str, Any] = {}
        self.output_shapes: dict[str, list[int]] = {}
        batch: object = None
        for name in FILES:
            options = ort.SessionOptions()
            options.log_severity_level = 3
            if not optimize:
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            if threads:
                # One pool of ``threads`` for the operators, run one after another: the
                # inter-op pool would otherwise add threads of its own beside it.
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
                options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            path = folder / name
            hint = reexport_hint(model, folder, window_frames,
                                 batch if batch is not None else
                                 (manifest or {}).get("batch"))
            try:
                session = ort.InferenceSession(
                    str(path), options, providers=list(providers),
                    provider_options=[dict((provider_options or {}).get(p, {}))
                                      for p in providers])
            except (Art2MusError, MemoryError):
                raise
            except Exception as error:  # ONNX Runtime's own types (InvalidProtobuf, Fail...)
                raise InputError(f"ONNX files in {folder}: expected {path} to be a model ONNX "
                                 f"Runtime {ort.__version__} opens, got {_ort_reason(error)}; "
                                 f"{hint}") from error
            inputs = session.get_inputs()
            shapes = {i.name: list(i.shape) for i in inputs}
            if name == "unet.onnx":
                batch = shapes.get("sample", [None])[0]
                hint = reexport_hint(model, folder, window_frames, batch)
            expected = expected_shapes(model, window_frames,
                                       batch if isinstance(batch, int) else -1)[name]
            window_s = window_frames / model.spec.latent_frames_per_second
            if shapes != expected:
                exported = (manifest or {}).get("window_frames")
                at = f" (exported at --window-s " \
                     f"{exported / model.spec.latent_frames_per_second:g})" \
                    if _is_count(exported) and exported != window_frames else ""
                raise InputError(f"ONNX inputs in {folder}: expected {path} to take {expected} "
                                 f"(the model {model.folder} at window_s {window_s:g}: "
                                 f"{window_frames} latent frames), got {shapes}{at}; {hint}")
            for given in inputs:
                wanted = INT64 if given.name == "timestep" else FLOAT
                if given.type != wanted:
                    raise InputError(
                        f"ONNX inputs in {folder}: expected {path} to take {given.name} as "
                        f"{wanted} (what the engine binds; float16 on TensorRT is its "
                        f"trt_fp16_enable option), got {given.type}; {hint}")
            outputs = session.get_outputs()
            if len(outputs) != 1:
                raise InputError(f"ONNX outputs in {folder}: expected {path} to have one "
                                 f"output, got {[o.name for o in outputs]}; {hint}")
            output = outputs[0]
            what, fits = expected_outputs(model, window_frames,
                                          batch if isinstance(batch, int) else -1)[name]
            output_shape = list(output.shape)
            if output.type != FLOAT or not fits(output_shape):
                raise InputError(
                    f"ONNX outputs in {folder}: expected {path} to give {output.name} as "
                    f"{FLOAT} of shape {what}, got {output.type} of {output_shape}; {hint}")
            self.sessions[name] = session
            self.output_shapes[name] = output_shape
        assert isinstance(batch, int)
        self.batch = batch
        check_source(folder, manifest, problem, model,
                     reexport_hint(model, folder, window_frames, batch))
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
