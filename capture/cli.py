"""``art2mus`` commands for capture (registered by installation/cli.py).

- ``art2mus detect IMAGE... [--catalogue DIR] [--json]``: every artwork in each
  image, its quad (TL, TR, BR, BL, original-image pixels), catalogue id and
  score, and which one is primary.
- ``art2mus export-encoder MODEL_DIR OUT.onnx``: a local CLIP vision model
  (``save_pretrained`` folder) to ONNX, with its preprocessing beside it.
- ``art2mus bench capture [--scenes 200] [--json]``: detection, corner error,
  recognition and speed on the synthetic gallery scenes.

Heavy imports (OpenCV, torch) happen inside the commands.

:func:`read_image` is how every command that takes a still image (``detect``
here, ``embed`` and ``render`` in installation/cli.py) reads it: a missing,
unreadable, empty, truncated or undecodable file is one ``Error:`` line
naming the file, and OpenCV's own warnings are not printed.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from ground.errors import InputError

_JPEG_START, _JPEG_END, _JPEG_SCAN = b"\xff\xd8", b"\xff\xd9", b"\xff\xda"
_PNG_START = b"\x89PNG\r\n\x1a\n"


def read_image(path: Path) -> Any:
    """The image file at ``path`` as BGR pixels (numpy uint8); InputError naming the file
    if it is missing, a folder, unreadable, empty, truncated or not an image."""
    import cv2
    import numpy as np

    if not path.exists():
        raise InputError(f"cannot read image {path}: it does not exist")
    if path.is_dir():
        raise InputError(f"cannot read image {path}: expected an image file, got a folder")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read image {path}: {exc.strerror or exc}") from None
    if not data:
        raise InputError(f"cannot read image {path}: expected an image file, got an empty file")
    if (why := _truncated(data)) is not None:
        raise InputError(f"cannot read image {path}: the file is truncated ({why})")
    with _quiet_stderr():  # libjpeg/libpng print their complaints straight to fd 2
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"cannot read image {path}: expected an image file (JPEG, PNG, ...), "
                         f"got {len(data)} bytes OpenCV cannot decode")
    return image


def _truncated(data: bytes) -> str | None:
    """Why ``data`` looks like a JPEG or PNG cut short, or None.

    A decoder fills the missing rows of a cut JPEG with grey and says so only
    on stderr, so the end is checked here: a JPEG's last scan (FFDA) must be
    followed by its end-of-image marker (FFD9; scan data cannot contain
    either), a PNG must hold its IEND chunk. Bytes after the end (some phones
    append a trailer) are allowed.
    """
    if data.startswith(_JPEG_START) and data.rfind(_JPEG_END) < data.rfind(_JPEG_SCAN):
        return "JPEG without its end-of-image marker after the last scan"
    if data.startswith(_PNG_START) and b"IEND" not in data:
        return "PNG without its IEND chunk"
    return None


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the duration (C libraries' own messages)."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to quieten
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    sys.stderr.flush()  # what Python has buffered still goes where it was meant to
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@click.command("detect")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--catalogue", "catalogue_dir", type=click.Path(path_type=Path), default=None,
              help="Folder of reference images (+ catalogue.toml) to recognise against.")
@click.option("--detect-width", default=640, show_default=True,
              help="Detection runs on the image downscaled to this width.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image, per line.")
def detect_command(images: tuple[Path, ...], catalogue_dir: Path | None, detect_width: int,
                   as_json: bool) -> None:
    """Find (and recognise) the artworks in still images."""
    from capture.catalogue import Catalogue
    from capture.recognise import detect_and_recognise

    catalogue = Catalogue.open(catalogue_dir) if catalogue_dir is not None else None
    for path in images:
        image = read_image(path)
        found = detect_and_recognise(image, catalogue, detect_width)
        record = {"image": str(path), "artworks": [a.to_json() for a in found]}
        if as_json:
            click.echo(json.dumps(record))
            continue
        click.echo(f"{path}: {len(found)} artwork(s)")
        for artwork in found:
            corners = " ".join(f"({x:.0f},{y:.0f})" for x, y in artwork.quad)
            label = artwork.artwork_id or "unknown"
            click.echo(f"  {'*' if artwork.primary else ' '} {label:16s} score "
                       f"{artwork.score:.2f}  {corners}")


@click.command("export-encoder")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--opset", default=17, show_default=True)
def export_encoder_command(model_dir: Path, out_path: Path, opset: int) -> None:
    """Export a local CLIPVisionModelWithProjection folder to ONNX for [capture.encoder]."""
    from capture.encoders import export_clip_vision

    click.echo(json.dumps(export_clip_vision(model_dir, out_path, opset), indent=2))


@click.command("capture")
@click.option("--scenes", default=200, show_default=True, help="Scenes in the seeded set.")
@click.option("--seed", default=0, show_default=True)
@click.option("--catalogue-size", default=50, show_default=True)
@click.option("--detect-width", default=640, show_default=True)
@click.option("--json", "as_json", is_flag=True, default=True, help="Print JSON (the default).")
def bench_capture_command(scenes: int, seed: int, catalogue_size: int, detect_width: int,
                          as_json: bool) -> None:
    """Detection P/R, corner error, recognition top-1 and fps on synthetic gallery scenes."""
    from capture.bench import run_capture_bench

    if scenes < 1:
        raise InputError(f"--scenes: expected at least 1, got {scenes}")
    click.echo(json.dumps(run_capture_bench(scenes, seed, catalogue_size, detect_width),
                          indent=2))


commands: list[click.Command] = [detect_command, export_encoder_command]
bench_commands: list[click.Command] = [bench_capture_command]
