"""``art2mus import-model``: diffusers AudioLDM2 folder + Art2Mus projection -> a model folder.

Where it sits: before everything else. A user holding a diffusers AudioLDM2
folder (as ``AudioLDM2Pipeline.save_pretrained`` writes it) and the Art2Mus
projection checkpoint (``art2mus_img_proj_layer.pt``) gets, in one command, the
folder :func:`engine.generators.diffusion.model.load_model` reads::

    DIFFUSERS_DIR/ (read, never modified)      OUT/
      unet/ vae/ vocoder/ language_model/   ->   the same six parts, hard-linked
      projection_model/ scheduler/               (copied across filesystems)
      text_encoder_2/ + tokenizer_2/ (T5)   ->   support_prompt.safetensors
      text_encoder/ tokenizer/ feature_extractor/ (CLAP: not needed, not copied)
    --projection FILE.pt                    ->   image_projection.safetensors
                                                 art2mus_model.json (ModelSpec)

**The projection.** Art2Mus's ``ImageProjectionLayer`` (Rinaldi et al., 2024;
github.com/justivanr/art2mus_, ``src/art2mus/art2mus_pipeline.py``) is
``projection1`` Linear(1024, 1536), Tanh, ``projection2`` Linear(1536, k x 768):
the embedding width is ``projection1.weight``'s second dimension and the prefix
token count k (1, or 4 in the 4-token variant ``art2mus_4_pipeline.py``) is
``projection2``'s output width over GPT-2's width. Any other key or shape is
refused, naming the file, the key and both shapes. Without ``--projection`` the
folder itself is searched: ``img_project_model/`` (Art2Mus's pipeline saved with
``save_pretrained`` registers the layer under that name) or
``art2mus_img_proj_layer.pt``.

**The support prompt.** With only an artwork given, Art2Mus's pipeline
(``use_artwork_support_prompt``) T5-encodes the text
``"Music representing the content of this artwork"`` (its ``BASIC_DATASET_TEXT``)
with ``tokenizer_2``/``text_encoder_2`` (``padding=True``, truncated at the
tokenizer's ``model_max_length``) and gives the encoder's last hidden state, as
is, to the UNet as ``encoder_hidden_states_1``. diffusers' own
``AudioLDM2Pipeline.encode_prompt`` does the same with T5's states: the
``projection_model`` only maps them into GPT-2's input, never into the second
cross-attention stream, so nothing is projected here; the width must equal the
UNet's second cross-attention width (Flan-T5-large: 1024) or the import is
refused.

**The encoder the projection expects.** Art2Mus trained the projection on
ImageBind-Huge vision embeddings (1024-d), recorded as ``encoder_name =
"imagebind-huge"``, ``encoder_dim = 1024`` unless ``--encoder`` says otherwise;
start-up refuses a room whose capture encoder differs (by name, and by width
where it is known). What ImageBind does to an image (facebookresearch/ImageBind,
``imagebind/data.py`` ``load_and_transform_vision_data`` and
``imagebind/models/imagebind_model.py``), against ``art2mus export-encoder``
on a transformers ``CLIP-ViT-H-14-laion2B`` folder plus
:class:`capture.encoders.OnnxImageEncoder`:

- resize: torchvision ``Resize(224, BICUBIC)`` on a PIL image, short side to
  224, long side ``int(224 * long / short)``. Ours: PIL bicubic, same sizes.
  Same.
- crop: ``CenterCrop(224)``, top/left ``int(round((size - 224) / 2))``. Ours
  (as transformers): ``int((size - 224) / 2)``. One pixel apart when
  ``(size - 224) % 4 == 3`` (Python rounds 1.5 up, 0.5 down); otherwise the same.
- pixels: ``ToTensor`` (/255) and ``Normalize`` with CLIP's mean/std
  (0.48145466, 0.4578275, 0.40821073)/(0.26862954, 0.26130258, 0.27577711).
  Same.
- tower: ViT-H/14, width 1280, 32 blocks, 16 heads, MLP 5120, exact GELU, one
  CLS token, learned positions, a LayerNorm before the blocks: OpenCLIP's,
  kept frozen by ImageBind, as in transformers' CLIP. Two differences: every
  LayerNorm in ImageBind's trunk and head has ``eps=1e-6``, where OpenCLIP and
  the transformers config have 1e-5 (set ``layer_norm_eps`` to 1e-6 in the
  folder's config.json before export to match exactly); and ImageBind's patch
  stem is a ``Conv3d`` with kernel (2, 14, 14) over the image repeated to two
  frames (``PadIm2Video(ntimes=2)``), which equals OpenCLIP's 2-D ``conv1`` only
  if the two temporal slices of ImageBind's kernel sum to it; that needs the
  ImageBind checkpoint to confirm and is not checked here.
- head: LayerNorm over the tokens, the CLS token (``SelectElement(0)``),
  ``Linear(1280, 1024, bias=False)``: transformers' ``post_layernorm`` on the
  pooled CLS token and ``visual_projection`` (no bias). Same, up to the eps.
- postprocessor: vision gets ``Normalize(dim=-1)`` (L2) only; the logit
  scales (``LearnableLogitScaling``) are on the text, audio, depth, thermal and
  IMU postprocessors, never on vision. Ours: the ONNX encoder L2-normalises
  ``image_embeds``. Same.

So an exported CLIP-ViT-H-14-laion2B gives ImageBind's image space up to the
LayerNorm eps (fixable in config.json), a one-pixel crop offset for some image
sizes, and the unverified stem equivalence; name the export
``imagebind-huge.onnx`` (the capture encoder is then ``onnx:imagebind-huge``)
only once that is accepted.

Flow: import_model -> OUT -> load_model -> DiffusionGenerator. Heavy imports
(torch, transformers, safetensors) happen inside the functions.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from engine.generators.diffusion.model import (
    IMAGE_PROJECTION_FILE,
    SUBFOLDERS,
    SUPPORT_PROMPT_FILE,
    ModelSpec,
    check_folder,
    require_torch,
)
from ground.errors import InputError

if TYPE_CHECKING:
    import torch

#: Art2Mus's artwork support prompt (``BASIC_DATASET_TEXT`` in its pipeline).
DEFAULT_SUPPORT_PROMPT = "Music representing the content of this artwork"
#: The encoder Art2Mus's projection was trained on.
DEFAULT_ENCODER = "imagebind-huge"
#: Widths of the encoders we know by name; others take the projection's width.
KNOWN_ENCODER_DIMS = {"imagebind-huge": 1024, "clip-vit-h-14-laion2b": 1024}
#: Prefix-token counts Art2Mus published (art2mus_pipeline.py, art2mus_4_pipeline.py).
PREFIX_TOKEN_CHOICES = (1, 4)
#: Where a projection is looked for in DIFFUSERS_DIR when --projection is not given.
PROJECTION_CANDIDATES = ("img_project_model/diffusion_pytorch_model.safetensors",
                         "img_project_model/diffusion_pytorch_model.bin",
                         "art2mus_img_proj_layer.pt", IMAGE_PROJECTION_FILE)
#: The parts of DIFFUSERS_DIR the support prompt needs, besides the six copied ones.
T5_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


@dataclass(frozen=True)
class ImportReport:
    """What :func:`import_model` found and wrote."""

    out_dir: str
    source: str
    projection: str
    prefix_tokens: int
    embedding_dim: int
    hidden_dim: int
    lm_width: int
    support_width: int
    support_tokens: int
    support_prompt: str
    sample_rate: int
    latent_frames_per_second: float
    encoder_name: str
    encoder_dim: int
    files_linked: int
    files_copied: int
    verified: bool

    def lines(self) -> list[str]:
        """The human-readable report ``art2mus import-model`` prints."""
        how = (f"{self.files_linked} files hard-linked" if not self.files_copied
               else f"{self.files_copied} files copied, {self.files_linked} hard-linked")
        return [
            f"imported {self.source} -> {self.out_dir}",
            f"  projection      {self.projection}: {self.embedding_dim}-d embedding -> "
            f"{self.hidden_dim} -> {self.prefix_tokens} prefix token(s) x {self.lm_width}",
            f"  encoder         {self.encoder_name} ({self.encoder_dim}-d): rooms must send "
            f"this encoder's embeddings",
            f"  language model  GPT-2, {self.lm_width} wide",
            f"  support prompt  {self.support_prompt!r}: {self.support_tokens} T5 tokens x "
            f"{self.support_width}",
            f"  audio           {self.sample_rate} Hz, {self.latent_frames_per_second:g} latent "
            f"frames/s",
            f"  parts           {how}"
            + ("; the folder loads with load_model" if self.verified else ""),
        ]


def import_model(diffusers_dir: str | Path, out_dir: str | Path,
                 projection: str | Path | None = None, encoder: str | None = None,
                 support_prompt: str = DEFAULT_SUPPORT_PROMPT,
                 progress: Callable[[str], Any] = lambda _: None,
                 verify: bool = True) -> ImportReport:
    """Write our model folder at ``out_dir`` from a diffusers AudioLDM2 folder (see module doc).

    Everything is checked before anything is written; the folder is assembled
    beside ``out_dir`` and renamed into place, so a refusal leaves nothing.
    ``verify`` loads the result with ``load_model`` on the CPU.
    """
    require_torch()
    source, out = Path(diffusers_dir), Path(out_dir)
    _check_source(source)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"import-model OUT: expected a new or empty folder, got {out} "
                         f"(not overwritten)")
    configs = {sub: _read_json(source / sub / SUBFOLDERS[sub][0]) for sub in SUBFOLDERS}
    lm_width, support_width = _cross_attention_widths(source, configs)

    projection_path = _find_projection(source, projection)
    progress(f"reading the projection {projection_path}")
    state, prefix_tokens, embedding_dim, hidden_dim = read_projection(projection_path, lm_width)
    encoder_name = (encoder or DEFAULT_ENCODER).strip()
    if not encoder_name:
        raise InputError("import-model --encoder: expected an encoder name, got ''")
    known = KNOWN_ENCODER_DIMS.get(encoder_name.casefold())
    if known is not None and known != embedding_dim:
        raise InputError(f"image projection {projection_path}: projection1.weight takes "
                         f"{embedding_dim}-d embeddings, but the encoder {encoder_name!r} gives "
                         f"{known}-d; pass --encoder with the encoder it was trained on")

    vocoder, vae = configs["vocoder"], configs["vae"]
    sample_rate = int(vocoder["sampling_rate"])
    samples_per_latent_frame = (math.prod(vocoder["upsample_rates"])
                                * 2 ** (len(vae["block_out_channels"]) - 1))
    language_model = configs["language_model"]
    spec = ModelSpec(
        embedding_dim=embedding_dim, prefix_tokens=prefix_tokens,
        # AudioLDM2 generates 8 "language of audio" tokens (its GPT-2 max_new_tokens).
        generated_tokens=int(language_model.get("max_new_tokens") or 8),
        hidden_dim=hidden_dim,
        latent_frames_per_second=sample_rate / samples_per_latent_frame,
        sample_rate=sample_rate, encoder_name=encoder_name, encoder_dim=embedding_dim)

    progress(f"encoding the support prompt {support_prompt!r} with {source / 'text_encoder_2'}")
    support = encode_support_prompt(source, support_prompt)
    if support.shape[-1] != support_width:
        raise InputError(
            f"support prompt: {source / 'text_encoder_2' / 'config.json'} gives "
            f"{tuple(support.shape)} (width {support.shape[-1]}), the second cross-attention "
            f"stream in {source / 'unet' / 'config.json'} expects width {support_width}")

    staging = out.parent / f".{out.name}.importing-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        linked = copied = 0
        for sub in SUBFOLDERS:
            progress(f"linking {source / sub}")
            n_linked, n_copied = _link_tree(source / sub, staging / sub)
            linked, copied = linked + n_linked, copied + n_copied
        _write_tensors(staging / IMAGE_PROJECTION_FILE, state)
        _write_tensors(staging / SUPPORT_PROMPT_FILE, {"support_prompt": support})
        spec.save(staging)
        check_folder(staging)
        if verify:
            progress("loading the result with load_model (cpu)")
            from engine.generators.diffusion.model import load_model

            load_model(staging, "cpu", "float32")
        if out.exists():
            out.rmdir()  # empty, checked above
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ImportReport(
        out_dir=str(out), source=str(source), projection=str(projection_path),
        prefix_tokens=prefix_tokens, embedding_dim=embedding_dim, hidden_dim=hidden_dim,
        lm_width=lm_width, support_width=support_width, support_tokens=int(support.shape[1]),
        support_prompt=support_prompt, sample_rate=sample_rate,
        latent_frames_per_second=spec.latent_frames_per_second, encoder_name=encoder_name,
        encoder_dim=embedding_dim, files_linked=linked, files_copied=copied, verified=verify)


# ---------------------------------------------------------------------------
# checks


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(f"unreadable config {path}: {error}") from error
    if not isinstance(data, dict):
        raise InputError(f"config {path}: expected a JSON object, got {type(data).__name__}")
    return data


def _check_source(source: Path) -> None:
    """DIFFUSERS_DIR holds every part the import reads; InputError naming the first missing."""
    if not source.is_dir():
        raise InputError(f"import-model DIFFUSERS_DIR: expected a diffusers AudioLDM2 folder, "
                         f"got no folder at {source}")
    index_path = source / "model_index.json"
    if not index_path.is_file():
        raise InputError(f"{source} is not a diffusers pipeline folder: missing {index_path} "
                         f"(AudioLDM2Pipeline.save_pretrained writes it)")
    index = _read_json(index_path)
    if index.get("_class_name") != "AudioLDM2Pipeline":
        raise InputError(f"{index_path}: _class_name: expected 'AudioLDM2Pipeline', got "
                         f"{index.get('_class_name')!r}")
    t5_class = (index.get("text_encoder_2") or [None, None])[-1]
    if t5_class != "T5EncoderModel":
        raise InputError(f"{index_path}: text_encoder_2: expected T5EncoderModel (the support "
                         f"prompt is a T5 encoding), got {t5_class!r}")
    parts: dict[str, tuple[str, tuple[str, ...]]] = {
        **SUBFOLDERS, "text_encoder_2": ("config.json", T5_WEIGHTS)}
    for sub, (config_name, weights) in parts.items():
        path = source / sub
        if not path.is_dir():
            raise InputError(f"{source} is incomplete: missing subfolder {path}")
        if not (path / config_name).is_file():
            raise InputError(f"{source} is incomplete: missing {path / config_name}")
        if weights and not any((path / w).is_file() for w in weights):
            raise InputError(f"{source} is incomplete: missing {path / weights[0]} "
                             f"(the weights of {sub})")
    tokenizer = source / "tokenizer_2"
    if not tokenizer.is_dir() or not any(tokenizer.iterdir()):
        raise InputError(f"{source} is incomplete: missing subfolder {tokenizer} (T5's tokenizer)")


def _cross_attention_widths(source: Path, configs: dict[str, dict[str, Any]]) -> tuple[int, int]:
    """(GPT-2 stream width, support stream width) from the UNet, checked against GPT-2."""
    unet_config = source / "unet" / "config.json"
    cross = configs["unet"].get("cross_attention_dim")
    blocks = cross if isinstance(cross, list) and cross and isinstance(cross[0], list) \
        else [cross]
    widths = {tuple(w for w in block if w is not None) for block in blocks
              if isinstance(block, list)}
    if len(widths) != 1 or len(next(iter(widths))) != 2:
        raise InputError(f"{unet_config}: cross_attention_dim: expected two cross-attention "
                         f"streams per block (AudioLDM2: [null, 768, 1024]), got {cross!r}")
    lm_expected, support_width = next(iter(widths))
    lm_width = int(configs["language_model"].get("n_embd", 0))
    if lm_width != lm_expected:
        raise InputError(f"{unet_config}: the first cross-attention stream is {lm_expected} wide, "
                         f"the language model {source / 'language_model' / 'config.json'} is "
                         f"{lm_width} wide")
    return int(lm_width), int(support_width)


def _find_projection(source: Path, projection: str | Path | None) -> Path:
    if projection is not None:
        path = Path(projection)
        if not path.is_file():
            raise InputError(f"import-model --projection: expected the Art2Mus projection "
                             f"checkpoint (.pt or .safetensors), got no file at {path}")
        return path
    for candidate in PROJECTION_CANDIDATES:
        if (source / candidate).is_file():
            return source / candidate
    raise InputError(f"no image projection in {source} (looked for "
                     f"{', '.join(PROJECTION_CANDIDATES)}); pass --projection "
                     f"art2mus_img_proj_layer.pt")


def read_projection(path: Path, lm_width: int) -> tuple[dict[str, torch.Tensor], int, int, int]:
    """The Art2Mus projection at ``path`` -> (state, prefix tokens, embedding width, hidden width).

    Refuses any other key or shape, naming the file, the key and both shapes.
    """
    from engine.generators.diffusion.conditioner import (
        PROJECTION_KEYS,
        VisualConditioner,
        load_projection_checkpoint,
    )

    state = load_projection_checkpoint(path)
    unexpected = sorted(set(state) - set(PROJECTION_KEYS))
    missing = [k for k in PROJECTION_KEYS if k not in state]
    if unexpected or missing:
        raise InputError(f"image projection {path}: expected exactly the keys "
                         f"{list(PROJECTION_KEYS)}, got unexpected {unexpected}, missing "
                         f"{missing}")
    shapes = {k: tuple(state[k].shape) for k in PROJECTION_KEYS}
    if len(shapes["projection1.weight"]) != 2:
        raise InputError(f"image projection {path}: projection1.weight: expected (hidden, "
                         f"embedding width), got {shapes['projection1.weight']}")
    hidden, embedding_dim = shapes["projection1.weight"]
    out_width = shapes["projection2.weight"][0] if shapes["projection2.weight"] else 0
    prefix_tokens = out_width // lm_width if out_width % lm_width == 0 else 0
    if prefix_tokens not in PREFIX_TOKEN_CHOICES:
        options = " or ".join(f"({k * lm_width}, {hidden}) ({k} prefix token{'s' * (k > 1)})"
                              for k in PREFIX_TOKEN_CHOICES)
        raise InputError(f"image projection {path}: projection2.weight: the language model is "
                         f"{lm_width} wide, so expected {options}, got "
                         f"{shapes['projection2.weight']}")
    expected = {"projection1.bias": (hidden,), "projection2.weight": (out_width, hidden),
                "projection2.bias": (out_width,)}
    for key, shape in expected.items():
        if shapes[key] != shape:
            raise InputError(f"image projection {path}: {key}: expected {shape}, got "
                             f"{shapes[key]}")
    spec = ModelSpec(embedding_dim=int(embedding_dim), prefix_tokens=prefix_tokens,
                     hidden_dim=int(hidden))
    module = VisualConditioner.from_state_dict(state, spec, lm_width, source=str(path))
    clean = {k: v.detach().float().contiguous() for k, v in module.state_dict().items()}
    return clean, prefix_tokens, int(embedding_dim), int(hidden)


def encode_support_prompt(source: Path, text: str) -> torch.Tensor:
    """T5's last hidden state for ``text`` (1, tokens, width), as Art2Mus's pipeline computes it."""
    import torch
    from transformers import AutoTokenizer, T5EncoderModel
    from transformers.utils import logging as transformers_logging

    if not text.strip():
        raise InputError("import-model --support-prompt: expected text, got an empty prompt")
    transformers_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(source / "tokenizer_2"),
                                                  local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise InputError(f"cannot load the T5 tokenizer {source / 'tokenizer_2'}: {error}") \
            from error
    try:
        encoder = T5EncoderModel.from_pretrained(str(source / "text_encoder_2"),
                                                 local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as error:
        raise InputError(f"cannot load {source / 'text_encoder_2'}: {error}") from error
    encoder.eval()
    inputs = tokenizer(text, padding=True, truncation=True,
                       max_length=tokenizer.model_max_length, return_tensors="pt")
    with torch.inference_mode():
        hidden = encoder(input_ids=inputs.input_ids,
                         attention_mask=inputs.attention_mask).last_hidden_state
    return hidden.float().contiguous().clone()


# ---------------------------------------------------------------------------
# writing


def _link_tree(source: Path, target: Path) -> tuple[int, int]:
    """Hard-link every file of ``source`` under ``target`` (copy across filesystems).

    Returns (linked, copied). Nothing in ``source`` is modified; the links share
    its files, which nothing of ours ever writes to.
    """
    linked = copied = 0
    for root, _, files in os.walk(source):
        folder = target / Path(root).relative_to(source)
        folder.mkdir(parents=True, exist_ok=True)
        for name in files:
            src, dst = Path(root) / name, folder / name
            try:
                os.link(src, dst)
                linked += 1
            except OSError as error:
                if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise InputError(f"cannot link {src} to {dst}: {error}") from error
                shutil.copy2(src, dst)
                copied += 1
    return linked, copied


def _write_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(path))


# ---------------------------------------------------------------------------
# command


@click.command("import-model")
@click.argument("diffusers_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--projection", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The Art2Mus projection checkpoint (art2mus_img_proj_layer.pt or "
                   ".safetensors)  [default: looked for in DIFFUSERS_DIR]")
@click.option("--encoder", default=DEFAULT_ENCODER, show_default=True,
              help="The image encoder the projection was trained on (rooms must match it).")
@click.option("--support-prompt", default=DEFAULT_SUPPORT_PROMPT, show_default=True,
              help="Text T5-encoded for the UNet's second cross-attention stream.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON only.")
def import_model_command(diffusers_dir: Path, out: Path, projection: Path | None, encoder: str,
                         support_prompt: str, as_json: bool) -> None:
    """Make a model folder at OUT from a diffusers AudioLDM2 folder and the Art2Mus projection."""
    def progress(line: str) -> None:
        click.echo(f"art2mus: {line}", err=True)

    report = import_model(diffusers_dir, out, projection, encoder, support_prompt,
                          progress=progress)
    if as_json:
        click.echo(json.dumps(asdict(report), indent=2))
        return
    for line in report.lines():
        click.echo(line)
