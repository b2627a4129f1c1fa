"""What the networks see: log-mel spectrograms for the VAE, embeddings for the projection.

Log-mel as AudioLDM/AudioLDM2 compute it for their VAE (``TacotronSTFT``,
Liu et al., 2023): STFT magnitude (Hann window, n_fft = win = 1024, reflect
padding of (n_fft - hop) / 2 on each side, no centring), a Slaney-normalised
mel filterbank from 0 Hz to Nyquist, then ``log(clamp(x, 1e-5))``. The hop
is the vocoder's upsampling product and the mel bins its input width, so one
mel frame is exactly what the vocoder turns into ``hop`` samples, and a clip
of ``n`` samples gives ``n / hop`` frames; the VAE maps ``scale`` mel frames
to one latent frame (``LoadedModel.vae_scale_factor``), which is the relation
``generator.py`` relies on when it decodes.

Image encoders turn a BGR image into the embedding the projection consumes,
through capture's own encoders (:mod:`capture.encoders`), so training sees
exactly the vectors the capture loop publishes: ``descriptor`` (capture's
interpretable descriptor vector, for tiny models) or ``onnx:PATH`` (a CLIP
vision tower exported by ``art2mus export-encoder``, with its
``PATH.preprocessor.json`` beside it, for real models). Each has an
``identity`` that keys the embedding cache.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ground.errors import Art2MusError, InputError

if TYPE_CHECKING:
    import torch

    from engine.generators.diffusion.model import LoadedModel


@dataclass(frozen=True)
class MelConfig:
    """Log-mel parameters; :meth:`for_model` derives them from a model folder."""

    sample_rate: int = 16000
    n_fft: int = 1024
    hop: int = 160
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float = 8000.0
    log_floor: float = 1e-5

    def __post_init__(self) -> None:
        if self.hop < 1 or self.n_fft < self.hop:
            raise ValueError(f"hop must be in 1..n_fft ({self.n_fft}), got {self.hop}")
        if not 0.0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(f"expected 0 <= fmin < fmax <= {self.sample_rate / 2}, got "
                             f"fmin={self.fmin} fmax={self.fmax}")

    @classmethod
    def for_model(cls, model: LoadedModel) -> MelConfig:
        """The mel the model's vocoder consumes (hop = its upsampling, bins = its input)."""
        rate = model.spec.sample_rate
        return cls(sample_rate=rate, hop=model.hop_samples, n_mels=model.mel_bins,
                   fmax=rate / 2)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def mel_basis(config: MelConfig) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) Slaney mel filterbank (librosa's default, as AudioLDM uses)."""
    from transformers.audio_utils import mel_filter_bank

    bank = mel_filter_bank(num_frequency_bins=config.n_fft // 2 + 1,
                           num_mel_filters=config.n_mels, min_frequency=config.fmin,
                           max_frequency=config.fmax, sampling_rate=config.sample_rate,
                           norm="slaney", mel_scale="slaney")
    return np.ascontiguousarray(bank.T, dtype=np.float32)


def log_mel(audio: torch.Tensor, config: MelConfig,
            basis: torch.Tensor | None = None) -> torch.Tensor:
    """(batch, samples) -> (batch, samples // hop, n_mels) log-mel (natural log)."""
    import torch

    if basis is None:
        basis = torch.from_numpy(mel_basis(config)).to(audio.device)
    pad = (config.n_fft - config.hop) // 2
    padded = torch.nn.functional.pad(audio[:, None], (pad, pad), mode="reflect")[:, 0]
    window = torch.hann_window(config.n_fft, device=audio.device, dtype=audio.dtype)
    spectrum = torch.stft(padded, config.n_fft, hop_length=config.hop, win_length=config.n_fft,
                          window=window, center=False, return_complex=True)
    magnitude = spectrum.abs()  # (batch, bins, frames)
    mel = torch.matmul(basis.to(magnitude.dtype), magnitude)
    frames = audio.shape[1] // config.hop
    mel = mel[..., :frames]
    if mel.shape[-1] < frames:  # never with the padding above; kept so shapes are a contract
        mel = torch.nn.functional.pad(mel, (0, frames - mel.shape[-1]), value=config.log_floor)
    return torch.log(torch.clamp(mel, min=config.log_floor)).transpose(1, 2)


def spectral_centroid(log_mel_frames: np.ndarray) -> float:
    """Mean over frames of the energy-weighted mel-bin index (0..n_mels-1)."""
    energy = np.exp(np.asarray(log_mel_frames, np.float64))
    bins = np.arange(energy.shape[-1])
    per_frame = (energy * bins).sum(-1) / np.maximum(energy.sum(-1), 1e-12)
    return float(per_frame.mean())


# ---------------------------------------------------------------------------
# image encoders


class ImageEncoder(Protocol):
    """BGR uint8 image -> float32 embedding of ``width``; ``identity`` keys caches."""

    identity: str
    width: int

    def __call__(self, bgr: np.ndarray) -> np.ndarray: ...


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def file_digest(path: Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes (first 16 hex digits), read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()[:16]


class DescriptorEncoder:
    """capture's descriptor encoder (``VECTOR_LENGTH`` wide, L2-normalised), as capture runs it."""

    def __init__(self) -> None:
        import capture.descriptor as descriptor
        from capture.encoders import DescriptorEncoder as CaptureDescriptor

        self._encoder = CaptureDescriptor()
        self.width = int(descriptor.VECTOR_LENGTH)
        # The source is the definition: an edit to the descriptor invalidates cached vectors.
        source = Path(descriptor.__file__).read_bytes()
        self.identity = f"descriptor:{descriptor.ENCODER_NAME}:{_digest(source)}"

    def __call__(self, bgr: np.ndarray) -> np.ndarray:
        return np.asarray(self._encoder.embed(bgr), np.float32)


class OnnxImageEncoder:
    """capture's ONNX image encoder (:class:`capture.encoders.OnnxImageEncoder`) for training.

    One implementation: the vectors a model is trained on are the ones the
    capture loop publishes at run time (the model's own image-processor
    preprocessing from ``PATH`` with suffix ``.preprocessor.json``, ONNX
    Runtime on the CPU, L2-normalised). ``identity`` covers the ``.onnx``
    file's bytes and every preprocessing setting that decides the pixels, so
    a re-export or an edited preprocessor config fills a new cache.
    """

    def __init__(self, path: Path, threads: int = 0) -> None:
        from capture.encoders import PREPROCESSOR_SUFFIX
        from capture.encoders import OnnxImageEncoder as CaptureOnnx

        if not path.is_file():
            raise InputError(f"--encoder onnx:{path}: file does not exist")
        preprocessor = path.with_suffix(PREPROCESSOR_SUFFIX)
        try:
            # threads 0: ONNX Runtime's default (every core: encoding is a one-off here,
            # unlike capture's one core per room).
            self._encoder = CaptureOnnx(path, preprocessor, threads=threads)
        except InputError as error:
            raise InputError(f"--encoder onnx:{path}: {error}") from error
        except Art2MusError:  # a missing dependency says what to install
            raise
        except Exception as error:  # onnxruntime raises its own types for a broken file
            raise InputError(f"--encoder onnx:{path}: cannot load ({error})") from error
        self.width = int(self._encoder.dim)
        self.preprocessing = self._encoder.preprocess
        settings = _digest(json.dumps(asdict(self.preprocessing), sort_keys=True).encode())
        self.identity = f"onnx:{path.name}:{file_digest(path)}:pre-{settings}"

    def __call__(self, bgr: np.ndarray) -> np.ndarray:
        return np.asarray(self._encoder.embed(bgr), np.float32)


def make_encoder(spec: str) -> ImageEncoder:
    """``descriptor`` or ``onnx:PATH``; InputError naming the option otherwise."""
    if spec == "descriptor":
        return DescriptorEncoder()
    if spec.startswith("onnx:") and len(spec) > 5:
        return OnnxImageEncoder(Path(spec[5:]))
    raise InputError(f"--encoder: expected 'descriptor' or 'onnx:PATH', got {spec!r}")


def read_image(path: Path) -> np.ndarray:
    """BGR uint8 image; InputError naming the file when cv2 cannot decode it."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"unreadable image {path}")
    return image
