"""Image encoders: what a rectified artwork becomes as ``ArtworkView.embedding``.

Where it sits: the capture loop calls ``encoder.embed(rectified)`` once per
change of the confirmed artwork (the result is cached per artwork id); the
named ``features`` always come from the handcrafted descriptor, because the
procedural composer reads them.

Two encoders, chosen by ``[capture.encoder] kind``:

- ``descriptor`` (default): :func:`capture.descriptor.describe_image`'s
  L2-normalised vector (``descriptor-v1``, 154 values; every feature is
  documented in :mod:`capture.descriptor`). No model, no dependencies.
- ``onnx``: an image tower exported to ONNX (a CLIP vision model with its
  projection: ``art2mus export-encoder MODEL_DIR OUT.onnx``), run with ONNX
  Runtime on the CPU. Preprocessing reproduces the model's own image
  processor from the ``preprocessor_config.json`` saved beside it (copied
  next to the ``.onnx`` as ``OUT.preprocessor.json`` by the export): convert
  to RGB, resize the shortest side with PIL's bicubic filter, centre crop,
  rescale, normalise with the processor's mean and std. Output is
  L2-normalised.

onnxruntime and Pillow are imported only when an ONNX encoder is built;
torch and transformers only by :func:`export_clip_vision` (the export command).
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from capture.config import EncoderConfig
from ground.errors import DependencyError, InputError

PREPROCESSOR_SUFFIX = ".preprocessor.json"


class ImageEncoder(Protocol):
    """Anything that turns a BGR uint8 image into an embedding vector."""

    name: str

    def embed(self, bgr: np.ndarray) -> np.ndarray:
        """The float32 embedding of ``bgr`` (L2-normalised)."""
        ...


class DescriptorEncoder:
    """The handcrafted descriptor's identity vector as the embedding."""

    def __init__(self) -> None:
        from capture.descriptor import ENCODER_NAME

        self.name = ENCODER_NAME

    def embed(self, bgr: np.ndarray) -> np.ndarray:
        """``describe_image(bgr).vector``."""
        from capture.descriptor import describe_image

        return describe_image(bgr).vector


@dataclass(frozen=True)
class ClipPreprocessing:
    """The subset of a CLIP image processor's settings that decide its pixel values."""

    shortest_edge: int = 224
    crop_height: int = 224
    crop_width: int = 224
    resample: int = 3  # PIL.Image.BICUBIC
    rescale_factor: float = 1.0 / 255.0
    image_mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    image_std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    do_resize: bool = True
    do_center_crop: bool = True
    do_rescale: bool = True
    do_normalize: bool = True

    @classmethod
    def from_file(cls, path: Path) -> ClipPreprocessing:
        """Read a saved ``preprocessor_config.json``; errors name the file and the field."""
        try:
            raw: dict[str, Any] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise InputError(f"encoder preprocessing {path}: expected a JSON image-processor "
                             f"config, got {error}") from None
        size = raw.get("size", {"shortest_edge": 224})
        if isinstance(size, int):
            size = {"shortest_edge": size}
        if "shortest_edge" not in size:
            raise InputError(f"encoder preprocessing {path}: size: expected "
                             f"{{'shortest_edge': N}}, got {size!r}")
        crop = raw.get("crop_size", {"height": size["shortest_edge"],
                                     "width": size["shortest_edge"]})
        if isinstance(crop, int):
            crop = {"height": crop, "width": crop}
        mean, std = raw.get("image_mean", cls.image_mean), raw.get("image_std", cls.image_std)
        if len(mean) != 3 or len(std) != 3:
            raise InputError(f"encoder preprocessing {path}: image_mean/image_std: expected "
                             f"3 values each, got {mean!r} / {std!r}")
        return cls(int(size["shortest_edge"]), int(crop["height"]), int(crop["width"]),
                   int(raw.get("resample", 3)), float(raw.get("rescale_factor", 1 / 255)),
                   (float(mean[0]), float(mean[1]), float(mean[2])),
                   (float(std[0]), float(std[1]), float(std[2])),
                   bool(raw.get("do_resize", True)), bool(raw.get("do_center_crop", True)),
                   bool(raw.get("do_rescale", True)), bool(raw.get("do_normalize", True)))

    def __call__(self, bgr: np.ndarray) -> np.ndarray:
        """``pixel_values`` (1, 3, H, W) float32 for a BGR uint8 image, as the processor does."""
        try:
            from PIL import Image
        except ImportError:
            raise DependencyError("the ONNX image encoder needs Pillow (pip install "
                                  "'art2mus[encoders]') to resize exactly as the model's image "
                                  "processor") from None
        rgb = np.ascontiguousarray(bgr[..., ::-1])
        if self.do_resize:
            height, width = rgb.shape[:2]
            # transformers' get_resize_output_image_size: the short side becomes
            # shortest_edge, the long side int(shortest_edge * long / short).
            short, long = (width, height) if width <= height else (height, width)
            new_short, new_long = self.shortest_edge, int(self.shortest_edge * long / short)
            new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
            rgb = np.asarray(Image.fromarray(rgb).resize((new_w, new_h),
                                                         resample=Image.Resampling(self.resample)))
        if self.do_center_crop:
            rgb = _center_crop(rgb, self.crop_height, self.crop_width)
        pixels: np.ndarray = rgb.astype(np.float32)
        if self.do_rescale:
            pixels = pixels * np.float32(self.rescale_factor)
        if self.do_normalize:
            pixels = (pixels - np.array(self.image_mean, np.float32)) \
                / np.array(self.image_std, np.float32)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1)[None], dtype=np.float32)


def _center_crop(image: np.ndarray, crop_h: int, crop_w: int) -> np.ndarray:
    # As transformers' center_crop: top-left at int((size - crop) / 2), padding
    # with zeros first where the image is smaller than the crop.
    height, width = image.shape[:2]
    if height < crop_h or width < crop_w:
        padded = np.zeros((max(height, crop_h), max(width, crop_w), 3), image.dtype)
        top, left = (padded.shape[0] - height) // 2, (padded.shape[1] - width) // 2
        padded[top:top + height, left:left + width] = image
        image, (height, width) = padded, padded.shape[:2]
    top, left = int((height - crop_h) / 2.0), int((width - crop_w) / 2.0)
    return image[top:top + crop_h, left:left + crop_w]


class OnnxImageEncoder:
    """An ONNX image tower (``pixel_values`` in, ``image_embeds`` out) under ONNX Runtime."""

    def __init__(self, model: str | Path, preprocessor: str | Path | None = None,
                 threads: int = 1) -> None:
        model = Path(model)
        if not model.is_file():
            raise InputError(f"capture.encoder.model: expected an .onnx file, got no file at "
                             f"{model}")
        preprocessor = Path(preprocessor) if preprocessor is not None \
            else model.with_suffix(PREPROCESSOR_SUFFIX)
        if not preprocessor.is_file():
            raise InputError(f"capture.encoder: expected the image-processor config beside the "
                             f"model ({preprocessor}), found none; export with "
                             f"'art2mus export-encoder', or copy the model folder's "
                             f"preprocessor_config.json there")
        try:
            import onnxruntime
        except ImportError:
            raise DependencyError("capture.encoder.kind = 'onnx' needs onnxruntime "
                                  "(pip install 'art2mus[encoders]')") from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads  # capture runs one core per room
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(str(model), options,
                                                     providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self.preprocess = ClipPreprocessing.from_file(preprocessor)
        self.name = f"onnx:{model.stem}"
        self.dim = int(self._session.get_outputs()[0].shape[-1])

    def embed(self, bgr: np.ndarray) -> np.ndarray:
        """The L2-normalised embedding of a BGR uint8 image."""
        (embeds,) = self._session.run(None, {self._input: self.preprocess(bgr)})[:1]
        vector = np.asarray(embeds, np.float32).reshape(-1)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 1e-12 else vector


def make_encoder(config: EncoderConfig) -> ImageEncoder:
    """The encoder ``[capture.encoder]`` asks for."""
    if config.kind == "onnx":
        assert config.model is not None  # the config validator requires it
        return OnnxImageEncoder(config.model, config.preprocessor, config.threads)
    return DescriptorEncoder()


def export_clip_vision(model_dir: str | Path, out_path: str | Path,
                       opset: int = 17) -> dict[str, Any]:
    """Export a local ``CLIPVisionModelWithProjection`` folder to ONNX (``image_embeds``).

    ``model_dir`` is a ``save_pretrained`` folder (config.json, weights, and
    the image processor's preprocessor_config.json); nothing is downloaded.
    Writes ``out_path`` and ``out_path`` with suffix ``.preprocessor.json``.
    """
    model_dir, out_path = Path(model_dir), Path(out_path)
    if not (model_dir / "config.json").is_file():
        raise InputError(f"export-encoder MODEL_DIR: expected a save_pretrained folder with "
                         f"config.json, got {model_dir}")
    preprocessor = model_dir / "preprocessor_config.json"
    if not preprocessor.is_file():
        raise InputError(f"export-encoder MODEL_DIR: expected the image processor's "
                         f"preprocessor_config.json in {model_dir}, found none")
    try:
        import torch
        from transformers import CLIPVisionModelWithProjection
    except ImportError:
        raise DependencyError("export-encoder needs torch and transformers "
                              "(pip install 'art2mus[diffusion]')") from None
    model = CLIPVisionModelWithProjection.from_pretrained(str(model_dir), local_files_only=True)
    model.eval()
    config = ClipPreprocessing.from_file(preprocessor)

    class _ImageEmbeds(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.inner(pixel_values=pixel_values).image_embeds

    example = torch.zeros(1, 3, config.crop_height, config.crop_width)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The TorchScript exporter (dynamo=False: the torch.export one needs
        # onnxscript) announces its own deprecation, and tracing warns about
        # Python-level shape checks in the model; the exported graph is checked
        # against torch by the tests.
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript",
                                category=DeprecationWarning)
        warnings.filterwarnings("ignore", message="The feature will be removed",
                                category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(_ImageEmbeds(model), (example,), str(out_path),
                          input_names=["pixel_values"], output_names=["image_embeds"],
                          dynamic_axes={"pixel_values": {0: "batch"},
                                        "image_embeds": {0: "batch"}},
                          opset_version=opset, dynamo=False)
    shutil.copyfile(preprocessor, out_path.with_suffix(PREPROCESSOR_SUFFIX))
    return {"model": str(out_path), "preprocessor": str(out_path.with_suffix(PREPROCESSOR_SUFFIX)),
            "input": [1, 3, config.crop_height, config.crop_width],
            "embedding_dim": int(model.config.projection_dim), "opset": opset}
