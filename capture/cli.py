"""``art2mus`` commands for capture (registered by installation/cli.py).

- ``art2mus detect IMAGE... [--catalogue DIR [--cache-dir DIR]] [--json] [--draw OUT]``: every
  artwork in each image, its quad (TL, TR, BR, BL, original-image pixels),
  catalogue id, title (where the catalogue's metadata gives one) and score, and
  which one is primary; ``--draw`` also writes each image with all that drawn on it
  (:mod:`capture.overlay`).
- ``art2mus export-encoder MODEL_DIR OUT.onnx``: a local CLIP vision model
  (``save_pretrained`` folder) to ONNX, with its preprocessing beside it.
- ``art2mus bench capture [--scenes 200] [--style classic|rooms] [--json]``:
  detection, corner error, recognition and speed on the synthetic gallery
  scenes; ``--photos DIR`` on real photos with a ``truth.json``
  (:func:`capture.bench.run_photo_bench`), ``--degrade NAME`` as a worse camera
  would take them (:mod:`capture.degrade`), ``--no-catalogue`` by the quad
  finder alone. A table and the verdict against the
  targets (:func:`capture.bench.capture_targets`), JSON with ``--json``; a progress
  bar on stderr when it is a terminal.
- ``art2mus calibrate VIEWS... --board 9x6 [--out lens.toml]`` (:mod:`capture.calibrate_cli`):
  a camera's lens from views of a chessboard; ``detect --lens`` and ``bench capture --lens``
  take its file.
- ``art2mus index DIR`` (:mod:`capture.index_cli`), ``art2mus bench catalogue``
  (:mod:`capture.bench_catalogue`) and ``art2mus bench tracking``
  (:mod:`capture.bench_video`) live in their own modules and are listed here.

Heavy imports (OpenCV, torch) happen inside the commands.

Every command that takes a still image reads it with
:func:`capture.images.read_image`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from capture.bench_catalogue import bench_catalogue_command
from capture.bench_live import bench_live_command
from capture.bench_video import bench_tracking_command
from capture.calibrate_cli import calibrate_command, read_lens_file
from capture.degrade import DEGRADATIONS
from capture.images import read_image
from capture.index_cli import index_command
from ground.cli_types import DETECT_WIDTH, SEED
from ground.errors import InputError


@click.command("detect")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--catalogue", "catalogue_dir", type=click.Path(path_type=Path), default=None,
              help="Folder of reference images (+ catalogue.toml or a CSV export) to "
                   "recognise against.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="With --catalogue: keep its index here instead of in the catalogue folder "
                   "(which may be read-only; as art2mus index --cache-dir).")
@click.option("--detect-width", type=DETECT_WIDTH, default=640, show_default=True,
              help="Detection runs on the image downscaled to this width.")
@click.option("--lens", "lens_path", type=click.Path(path_type=Path), default=None,
              help="The camera's lens (a [capture.lens] .toml from art2mus calibrate): taken "
                   "out of each image first; the quads are given in the image as it is.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image, per line.")
@click.option("--draw", "draw_path", type=click.Path(path_type=Path), default=None,
              help="Write the image with every quad, id, title and score drawn: to this .png "
                   "or .jpg file for one image; into this folder as STEM-overlay.png for several.")
def detect_command(images: tuple[Path, ...], catalogue_dir: Path | None,
                   cache_dir: Path | None, detect_width: int, lens_path: Path | None,
                   as_json: bool, draw_path: Path | None) -> None:
    """Find (and recognise) the artworks in still images."""
    from capture.catalogue import Catalogue
    from capture.lens import Lens
    from capture.recognise import detect_and_recognise

    if cache_dir is not None and catalogue_dir is None:
        raise InputError("--cache-dir: only with --catalogue (it holds that catalogue's index)")
    if cache_dir is not None and cache_dir.exists() and not cache_dir.is_dir():
        raise InputError(f"--cache-dir {cache_dir}: expected a folder, got a file")
    lens = Lens(read_lens_file(lens_path)) if lens_path is not None else None
    overlays = _overlay_paths(images, draw_path) if draw_path is not None else {}
    catalogue = Catalogue.open(catalogue_dir, cache_dir) if catalogue_dir is not None else None
    for path in images:
        image = read_image(path)
        if lens is not None and not lens.fits((image.shape[1], image.shape[0])):
            raise InputError(f"{path}: {image.shape[1]}x{image.shape[0]}, not the aspect of the "
                             f"--lens calibration ({lens.config.width}x{lens.config.height})")
        found = detect_and_recognise(image, catalogue, detect_width, lens=lens)
        entries = [catalogue.entry(a.artwork_id) for a in found
                   if catalogue is not None and a.artwork_id is not None]
        titles = {e.artwork_id: e.title for e in entries if e is not None and e.title}
        record: dict[str, Any] = {"image": str(path), "artworks": [
            a.to_json() | {"title": titles.get(str(a.artwork_id))} for a in found]}
        if path in overlays:
            from capture.overlay import draw_overlay, write_image_atomic

            record["overlay"] = str(write_image_atomic(overlays[path],
                                                       draw_overlay(image, found, titles)))
        if as_json:
            click.echo(json.dumps(record))
            continue
        click.echo(f"{path}: {len(found)} artwork(s)")
        for artwork in found:
            corners = " ".join(f"({x:.0f},{y:.0f})" for x, y in artwork.quad)
            label = artwork.artwork_id or "unknown"
            title = titles.get(str(artwork.artwork_id))
            click.echo(f"  {'*' if artwork.primary else ' '} {label:16s} score "
                       f"{artwork.score:.2f}  {corners}  ({artwork.found_by})"
                       + (f"  {title}" if title else ""))
        if "overlay" in record:
            click.echo(f"  overlay: {record['overlay']}")


def _overlay_paths(images: tuple[Path, ...], draw: Path) -> dict[Path, Path]:
    """Where ``detect --draw`` writes each image's overlay, checked writable before any work:
    ``draw`` itself for one image, ``draw/STEM-overlay.png`` for several."""
    from capture.overlay import check_folder_target, check_image_target

    if len(images) == 1:
        check_image_target(draw, "--draw")
        return {images[0]: draw}
    if draw.suffix.lower() in (".png", ".jpg", ".jpeg") and not draw.is_dir():
        raise InputError(f"cannot write --draw {draw}: expected a folder for {len(images)} "
                         f"images (each is written as STEM-overlay.png), got an image file name")
    targets: dict[Path, Path] = {}
    for path in images:
        target = draw / f"{path.stem}-overlay.png"
        clash = next((other for other, t in targets.items() if t == target and other != path),
                     None)
        if clash is not None:
            raise InputError(f"cannot write --draw {target}: both {clash} and {path} would be "
                             f"drawn there (same file name stem)")
        targets[path] = target
    check_folder_target(draw, "--draw")
    return targets


@click.command("export-encoder")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out_path", type=click.Path(dir_okay=False, path_type=Path))
# 14: the first with scaled dot-product attention; 20: the TorchScript exporter's last.
@click.option("--opset", type=click.IntRange(14, 20), default=17, show_default=True)
def export_encoder_command(model_dir: Path, out_path: Path, opset: int) -> None:
    """Export a local CLIPVisionModelWithProjection folder to ONNX for [capture.encoder]."""
    from capture.encoders import export_clip_vision
    from ground.cli_report import working

    blocked = next((p for p in out_path.parents if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise InputError(f"cannot write OUT_PATH {out_path}: {blocked} is a file, not a folder")

    with working(f"exporting {model_dir} to {out_path} (ONNX opset {opset})"):
        manifest = export_clip_vision(model_dir, out_path, opset)
    click.echo(json.dumps(manifest, indent=2))


@click.command("capture")
@click.option("--photos", type=click.Path(path_type=Path), default=None,
              help="Real-photo bench: a folder of photos with truth.json (and catalogue/).")
@click.option("--catalogue", "catalogue_dir", type=click.Path(path_type=Path), default=None,
              help="With --photos: the reference images [default: PHOTOS/catalogue].")
@click.option("--no-catalogue", "quads_only", is_flag=True,
              help="With --photos: the quad finder alone, as a room without a catalogue "
                   "finds the works (located and precision; nothing is named).")
@click.option("--distractors", type=click.Path(path_type=Path), default=None,
              help="With --photos: a folder of other works' reference images, indexed beside "
                   "the catalogue as the rest of a big museum's catalogue (a generated one: "
                   "art2mus bench catalogue --works 2000 --keep DIR, then DIR/works-2000).")
@click.option("--rehang", type=click.Path(path_type=Path), default=None,
              help="With --photos: a folder of other works (a catalogue), each hung in a "
                   "photo's picture in its place and light, and searched for as the "
                   "catalogue: the photos' rooms with a collection they never held "
                   "(capture/rehang.py; --seed orders the works).")
@click.option("--reference-side", type=click.IntRange(16, 4096), default=None,
              help="With --photos: shrink the catalogue's reference images to this many px "
                   "on their long side before indexing (a collection's web thumbnails): how "
                   "small a catalogue's images may be.")
@click.option("--lens", "lens_path", type=click.Path(path_type=Path), default=None,
              help="With --photos: the camera's lens (a [capture.lens] .toml from art2mus "
                   "calibrate), taken out of each frame as the capture loop does.")
@click.option("--overlays", type=click.Path(path_type=Path), default=None,
              help="With --photos: write each photo with a miss, false positive or false id "
                   "here, truth and detections drawn.")
@click.option("--degrade", "degradation", default=None,
              type=click.Choice(DEGRADATIONS),
              help="With --photos: take each photo as a worse camera would (capture/degrade.py).")
@click.option("--scenes", type=click.IntRange(1, 100_000), default=200, show_default=True,
              help="Synthetic scenes in the set.")
@click.option("--seed", type=SEED, default=0, show_default=True,
              help="Synthetic: the first scene's seed. With --rehang: the works' order.")
@click.option("--catalogue-size", type=click.IntRange(1, 10_000), default=50,
              show_default=True,
              help="Synthetic: works in the generated catalogue.")
@click.option("--style", type=click.Choice(["classic", "rooms"]), default="classic",
              show_default=True, help="Synthetic: the scene generator's style.")
@click.option("--detect-width", type=DETECT_WIDTH, default=640, show_default=True,
              help="Detection runs on the frame downscaled to this width.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON, not a table.")
def bench_capture_command(photos: Path | None, catalogue_dir: Path | None, quads_only: bool,
                          distractors: Path | None, rehang: Path | None,
                          reference_side: int | None, lens_path: Path | None,
                          overlays: Path | None,
                          degradation: str | None, scenes: int, seed: int,
                          catalogue_size: int, style: str, detect_width: int,
                          as_json: bool) -> None:
    """Detection, corner error, recognition and speed: on real photos with ground truth
    (--photos DIR), else on the synthetic gallery scenes."""
    from capture.bench import (
        print_capture_bench,
        print_photo_bench,
        run_capture_bench,
        run_photo_bench,
    )
    from ground.cli_report import progress_bar

    context = click.get_current_context()
    given = {name for name in ("photos", "catalogue_dir", "quads_only", "distractors", "rehang",
                               "reference_side", "lens_path", "overlays", "degradation",
                               "scenes", "seed", "catalogue_size", "style")
             if context.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT}
    if photos is None:
        for name in sorted(given & {"catalogue_dir", "quads_only", "distractors", "rehang",
                                    "reference_side", "lens_path", "overlays", "degradation"}):
            option = {"catalogue_dir": "--catalogue", "degradation": "--degrade",
                      "quads_only": "--no-catalogue", "lens_path": "--lens"
                      }.get(name, f"--{name.replace('_', '-')}")
            raise InputError(f"{option}: only for the real-photo bench; add --photos DIR")
        with progress_bar(unit="scenes") as progress:
            result = run_capture_bench(scenes, seed, catalogue_size, detect_width, style=style,
                                       progress=progress)
        printer = print_capture_bench
    else:
        for name in sorted(given & {"scenes", "catalogue_size", "style"}
                           | ({"seed"} & given if rehang is None else set())):
            raise InputError(f"--{name.replace('_', '-')}: only for the synthetic bench, not "
                             f"with --photos")
        if not photos.is_dir():
            raise InputError(f"--photos: expected a folder of photos with truth.json, got "
                             f"{'a file' if photos.exists() else 'nothing'} at {photos}")
        for name, value in (("--catalogue", catalogue_dir), ("--distractors", distractors),
                            ("--rehang", rehang), ("--reference-side", reference_side)):
            if quads_only and value is not None:
                raise InputError(f"{name}: not with --no-catalogue (the quad finder alone)")
        if reference_side is not None and distractors is not None:
            raise InputError("--reference-side: not with --distractors (their index is kept "
                             "for the catalogue as it is)")
        if catalogue_dir is not None and not catalogue_dir.is_dir():
            raise InputError(f"--catalogue: expected a folder of reference images, got "
                             f"{'a file' if catalogue_dir.exists() else 'nothing'} at "
                             f"{catalogue_dir}")
        if rehang is not None and not rehang.is_dir():
            raise InputError(f"--rehang: expected a folder of reference images, got "
                             f"{'a file' if rehang.exists() else 'nothing'} at {rehang}")
        if distractors is not None and not distractors.is_dir():
            raise InputError(f"--distractors: expected a folder of reference images, got "
                             f"{'a file' if distractors.exists() else 'nothing'} at "
                             f"{distractors}")
        if overlays is not None:
            from capture.overlay import check_folder_target

            check_folder_target(overlays, "--overlays")
        lens = read_lens_file(lens_path) if lens_path is not None else None
        with progress_bar(unit="photos") as progress:
            result = run_photo_bench(photos, catalogue_dir, detect_width, overlays=overlays,
                                     progress=progress, degradation=degradation,
                                     quads_only=quads_only, distractors=distractors,
                                     rehang=rehang, seed=seed, reference_side=reference_side,
                                     lens=lens)
        printer = print_photo_bench
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        printer(result)


commands: list[click.Command] = [detect_command, export_encoder_command, index_command,
                                 calibrate_command]
bench_commands: list[click.Command] = [bench_capture_command, bench_catalogue_command,
                                       bench_tracking_command, bench_live_command]
