"""Latent and embedding caches: encode every clip and image once, reuse them every epoch.

Audio goes through the frozen VAE once: each clip's posterior (mean and
standard deviation, before the VAE's ``scaling_factor``) is stored, so every
epoch and the distillation draw fresh latents ``mean + std * eps`` from the
same file without the VAE. Images go through the encoder once.

A cache folder's name is a hash of everything its contents depend on:

- latents: the VAE's config and weights, the log-mel parameters, the clip
  length, the clip limit;
- embeddings: the encoder's identity (the descriptor's source, or the ONNX
  file's bytes).

Change any of them and a new folder is filled; the old one is left for the
old settings. Inside, one file per manifest row, named by a hash of the
file's path, size and modification time, so an edited or replaced file is
encoded again and the rest are reused. Files are written to a temporary name
and renamed, so an interrupted run never leaves a truncated entry. Only finite
values are stored: an entry that would hold NaN or inf is refused naming its
source file, and one read back with them (an older version's) is computed again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from training.data import PairedItem, cut_clips, load_audio
from training.features import (
    ImageEncoder,
    MelConfig,
    file_digest,
    log_mel,
    mel_basis,
    read_image,
)

if TYPE_CHECKING:
    import torch

    from engine.generators.diffusion.model import LoadedModel

CACHE_VERSION = 1
#: The stage a progress bar shows while latents and embeddings are computed or read back.
CACHING = "caching latents and embeddings"


def _hash(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def component_fingerprint(folder: Path, ignore_config: tuple[str, ...] = ()) -> str:
    """Hash of a model component folder: its config (less ``ignore_config`` keys) and weights."""
    parts: list[Any] = []
    for path in sorted(folder.iterdir()):
        if path.name == "config.json":
            config = json.loads(path.read_text())
            parts.append((path.name, {k: v for k, v in config.items()
                                      if k not in ignore_config and not k.startswith("_")}))
        elif path.is_file() and path.suffix in (".json", ".safetensors", ".bin"):
            parts.append((path.name, file_digest(path)))
    return _hash(parts)


def item_key(path: Path) -> str:
    """A file's cache name: its resolved path, size and modification time."""
    stat = path.stat()
    return _hash([str(path.resolve()), stat.st_size, stat.st_mtime_ns])


@dataclass
class CacheStats:
    """How many entries a build found (``hits``) and had to compute (``misses``)."""

    hits: int = 0
    misses: int = 0


@dataclass
class TrainingData:
    """Every clip of a split: VAE posterior (unscaled) and its image embedding, in memory."""

    latent_mean: torch.Tensor  # (clips, C, frames, bins)
    latent_std: torch.Tensor   # (clips, C, frames, bins)
    embeddings: torch.Tensor   # (clips, embedding_dim)
    rows: list[int]            # manifest line of each clip
    splits: list[str]
    latent_stats: CacheStats = field(default_factory=CacheStats)
    embedding_stats: CacheStats = field(default_factory=CacheStats)
    latent_dir: Path | None = None
    embedding_dir: Path | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def subset(self, split: str) -> TrainingData:
        """The clips of one split (same tensors' rows; stats and folders carried over)."""
        index = [i for i, s in enumerate(self.splits) if s == split]
        return TrainingData(self.latent_mean[index], self.latent_std[index],
                            self.embeddings[index], [self.rows[i] for i in index],
                            [split] * len(index), self.latent_stats, self.embedding_stats,
                            self.latent_dir, self.embedding_dir)


def _save(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    temporary = path.with_suffix(f".tmp{os.getpid()}")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(temporary))
    os.replace(temporary, path)


def _load(path: Path) -> dict[str, torch.Tensor] | None:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception:  # a corrupt entry is recomputed, not fatal: it is only a cache
        return None


def _finite_entry(entry: dict[str, torch.Tensor] | None, names: tuple[str, ...]
                  ) -> dict[str, torch.Tensor] | None:
    """``entry`` when it holds every name and only finite values; None (recompute) otherwise."""
    import torch

    if entry is None or any(name not in entry for name in names):
        return None
    if not all(bool(torch.isfinite(entry[name]).all()) for name in names):
        return None
    return entry


def _refuse_nonfinite(entry: dict[str, torch.Tensor], what: str, source: Path) -> None:
    """InputError naming ``source`` when a freshly computed entry holds NaN or inf."""
    import torch

    from ground.errors import InputError

    for name, tensor in entry.items():
        bad = int(tensor.numel() - torch.isfinite(tensor).sum())
        if bad:
            raise InputError(f"{what} of {source}: expected finite values, got {bad} NaN or "
                             f"inf in {name!r} (not cached)")


def latent_cache_dir(cache_root: Path, model: LoadedModel, mel: MelConfig, clip_frames: int,
                     max_clips: int) -> Path:
    """The latent cache folder for this VAE and these preprocessing parameters."""
    # The cache holds the posterior before scaling_factor, which therefore is not part of the key
    # (a model trained with rescaled latents shares its source model's cache).
    vae = component_fingerprint(model.folder / "vae", ignore_config=("scaling_factor",))
    key = _hash({"version": CACHE_VERSION, "vae": vae,
                 "mel": mel.as_dict(), "clip_frames": clip_frames, "max_clips": max_clips})
    return cache_root / f"latents-{key}"


def embedding_cache_dir(cache_root: Path, encoder: ImageEncoder) -> Path:
    """The embedding cache folder for this encoder."""
    key = _hash({"version": CACHE_VERSION, "encoder": encoder.identity})
    return cache_root / f"embeddings-{key}"


def encode_clips(model: LoadedModel, clips: np.ndarray, mel: MelConfig,
                 basis: torch.Tensor, batch: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """(clips, samples) audio -> VAE posterior mean and std (clips, C, frames, bins), float32."""
    import torch

    means, stds = [], []
    with torch.inference_mode():
        for start in range(0, len(clips), batch):
            audio = torch.from_numpy(clips[start:start + batch]).to(model.device)
            frames = log_mel(audio, mel, basis)[:, None]  # (b, 1, mel frames, n_mels)
            posterior = model.vae.encode(frames.to(model.dtype)).latent_dist
            # Row-major, as a cache file reads back: the VAE's convolutions may return
            # channels-last views, and a UNet fed channels-last batches picks other kernels
            # (same values, other rounding), so a run that encoded its own caches would
            # train differently in the last bits from one that read them (no exact resume).
            means.append(posterior.mean.float().cpu().contiguous())
            stds.append(posterior.std.float().cpu().contiguous())
    return torch.cat(means), torch.cat(stds)


def build_training_data(model: LoadedModel, items: Sequence[PairedItem], encoder: ImageEncoder,
                        cache_root: Path, clip_s: float, max_clips: int = 0,
                        progress: Callable[[str, int, int], None] | None = None
                        ) -> TrainingData:
    """Latents and embeddings of every item, from the caches where present (filled otherwise)."""
    import torch

    from ground.errors import InputError

    if encoder.width != model.spec.embedding_dim:
        raise InputError(f"image encoder {encoder.identity}: embedding width "
                         f"{encoder.width}, but {model.folder / 'art2mus_model.json'} expects "
                         f"embedding_dim {model.spec.embedding_dim}")
    mel = MelConfig.for_model(model)
    clip_frames = clip_latent_frames(model, clip_s)
    clip_samples = clip_frames * model.samples_per_latent_frame
    latent_dir = latent_cache_dir(cache_root, model, mel, clip_frames, max_clips)
    embedding_dir = embedding_cache_dir(cache_root, encoder)
    for folder, info in ((latent_dir, {"mel": mel.as_dict(), "clip_frames": clip_frames,
                                       "clip_samples": clip_samples, "max_clips": max_clips,
                                       "model": str(model.folder)}),
                         (embedding_dir, {"encoder": encoder.identity})):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "params.json").write_text(json.dumps(info, indent=2) + "\n")
    basis = torch.from_numpy(mel_basis(mel)).to(model.device)
    latent_stats, embedding_stats = CacheStats(), CacheStats()
    means, stds, embeddings, rows, splits = [], [], [], [], []
    for number, item in enumerate(items):
        if progress is not None:
            progress(CACHING, number, len(items))
        latent_path = latent_dir / f"{item_key(item.audio)}.safetensors"
        entry = _finite_entry(_load(latent_path) if latent_path.is_file() else None,
                              ("mean", "std"))
        if entry is None:
            audio = load_audio(item.audio, mel.sample_rate)
            try:
                clips = cut_clips(audio, clip_samples, max_clips)
            except ValueError as error:
                raise InputError(f"audio {item.audio}: {error}") from error
            mean, std = encode_clips(model, clips, mel, basis)
            entry = {"mean": mean, "std": std}
            _refuse_nonfinite(entry, "VAE latents", item.audio)
            _save(latent_path, entry)
            latent_stats.misses += 1
        else:
            latent_stats.hits += 1
        embedding_path = embedding_dir / f"{item_key(item.image)}.safetensors"
        cached = _finite_entry(_load(embedding_path) if embedding_path.is_file() else None,
                               ("embedding",))
        if cached is None:
            vector = torch.from_numpy(np.asarray(encoder(read_image(item.image)), np.float32))
            cached = {"embedding": vector}
            _refuse_nonfinite(cached, "image embedding", item.image)
            _save(embedding_path, cached)
            embedding_stats.misses += 1
        else:
            embedding_stats.hits += 1
        count = entry["mean"].shape[0]
        means.append(entry["mean"])
        stds.append(entry["std"])
        embeddings.append(cached["embedding"][None].expand(count, -1))
        rows.extend([item.line] * count)
        splits.extend([item.split] * count)
    if progress is not None:
        progress(CACHING, len(items), len(items))
    # One layout whichever way each entry came (computed now or read back): row-major.
    return TrainingData(torch.cat(means).contiguous(), torch.cat(stds).contiguous(),
                        torch.cat(embeddings).contiguous(), rows, splits,
                        latent_stats, embedding_stats, latent_dir, embedding_dir)


def clip_latent_frames(model: LoadedModel, clip_s: float) -> int:
    """Latent frames of a training clip; InputError unless it fits the UNet's static shapes."""
    from ground.errors import InputError

    fps = model.spec.latent_frames_per_second
    frames = round(clip_s * fps)
    multiple = model.unet_downsample
    if frames < multiple or frames % multiple or abs(frames - clip_s * fps) > 1e-6:
        raise InputError(f"--clip-s: expected a multiple of {multiple / fps:g} s ({multiple} "
                         f"latent frames at {fps:g}/s) for {model.folder}, got {clip_s}")
    return frames
