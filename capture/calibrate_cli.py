"""``art2mus calibrate``: measure a camera's lens from views of a printed chessboard.

Where it sits: the roof, beside :mod:`capture.cli`. A technician prints a
chessboard (OpenCV's pattern: a 10x7-square board has 9x6 inner corners), films
it with the installation's camera at the size the camera streams, tilting and
moving it over the whole frame, and runs::

    art2mus calibrate board.mp4 --board 9x6 --out lens.toml
    art2mus calibrate camera:0 --board 9x6 --seconds 30    # ...or waved before the camera

The lens (:func:`capture.lens.calibrate`) is printed as the ``[capture.lens]``
section and written to ``--out``; pasted into the room's config (under
``[rooms.capture.lens]`` for one room), the capture undistorts every frame
with it. ``art2mus detect --lens`` and ``art2mus bench capture --lens`` read the
same file.

Input errors (no file, an unreadable image or video, views of different sizes,
too few views with the whole board) are one :class:`~ground.errors.InputError`
line naming the file or the shortfall.
"""

from __future__ import annotations

import json
import os
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from ground.cli_types import FiniteFloat
from ground.config import dated_value, parse_toml, validate_typed
from ground.errors import InputError

#: Suffixes read as videos (frames sampled); anything else is read as a still image.
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".m4v", ".webm")
#: Frames of a video looked at, at most, evenly spread (a board waved for a minute at 30 fps
#: gives 1,800 near-identical frames; finding the board costs ~0.1-0.3 s a frame).
VIDEO_FRAMES = 120


def _board(value: str) -> tuple[int, int]:
    cols, sep, rows = value.lower().partition("x")
    if not sep or not cols.isdigit() or not rows.isdigit():
        raise click.BadParameter(f"expected COLSxROWS inner corners (9x6), got {value!r}")
    return int(cols), int(rows)


@click.command("calibrate")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--board", required=True, help="Inner corners of the chessboard, COLSxROWS "
              "(a board of 10x7 squares has 9x6).")
@click.option("--model", type=click.Choice(["auto", "standard", "rational", "fisheye"]),
              default="auto", show_default=True,
              help="OpenCV's lens model; auto fits standard and fisheye and keeps the better "
                   "(an action camera's lens is a fisheye).")
@click.option("--keep", type=FiniteFloat(0.0, 1.0), default=0.0, show_default=True,
              help="0: the undistorted frame holds only pixels the camera saw; 1: all of "
                   "them, black borders round them.")
@click.option("--out", "out_path", type=click.Path(path_type=Path), default=None,
              help="Write the [capture.lens] section to this .toml file.")
@click.option("--seconds", type=FiniteFloat(2.0, 600.0), default=30.0, show_default=True,
              help="A live camera (camera:INDEX, camera:NAME, video:rtsp://...): how long to "
                   "watch it while the board is waved before it.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def calibrate_command(inputs: tuple[str, ...], board: str, model: str, keep: float,
                      out_path: Path | None, seconds: float, as_json: bool) -> None:
    """Measure a camera's lens from photos or a video of a chessboard (image files, folders
    of them, videos), or from a live camera the board is waved before."""
    from capture.lens import POOR_RMS_PX, calibrate, lens_section

    corners = _board(board)
    if out_path is not None and (out_path.is_dir() or out_path.suffix.lower() != ".toml"):
        raise InputError(f"--out {out_path}: expected a .toml file to write")
    if out_path is not None and not out_path.parent.is_dir():  # said before the views are read
        raise InputError(f"--out {out_path}: no folder {out_path.parent} to write it in")
    live = any(_is_live(item) for item in inputs)

    def seen(name: str, found: bool) -> None:
        if live:  # the technician waving the board wants to know what counts
            counted["views"] += 1
            counted["found"] += found
            click.echo(f"  {'board' if found else 'no board'} in view {counted['views']} "
                       f"({counted['found']} found so far)", err=True)

    counted = {"views": 0, "found": 0}
    calibration = calibrate(_views(inputs, seconds), corners, model, keep, on_view=seen)
    section = lens_section(calibration, corners)
    if out_path is not None:
        _write_atomic(out_path, section)
    if as_json:
        click.echo(json.dumps(calibration.to_json() | {"out": None if out_path is None
                                                      else str(out_path)}, indent=2))
        return
    summary = calibration.to_json()
    lens = calibration.lens
    click.echo(f"lens: {lens.model}, {lens.width}x{lens.height}, reprojection error "
               f"{calibration.rms_px:.3f} px ({summary['views_used']} views used; the whole "
               f"board in {calibration.found} of {calibration.looked_at})")
    click.echo(f"  worst view {summary['worst_view']}: {summary['worst_view_rms_px']:.3f} px")
    click.echo(f"  the board covered {calibration.coverage:.0%} of the frame")
    if calibration.narrow:
        missed = calibration.corners_missed
        where = (f"never reached the frame's {', '.join(missed)} corner"
                 + ("s" if len(missed) > 1 else "")) if missed else \
            f"covered only {calibration.coverage:.0%} of the frame"
        click.echo(f"warning: the board {where}: the lens is guessed where no view was (a "
                   f"wide lens bends most near the edges); film it again nearer the edges "
                   f"and corners", err=True)
    if summary["poor"]:
        click.echo(f"warning: a reprojection error above {POOR_RMS_PX:g} px is a poor fit: "
                   f"a board not flat, views blurred, or too few tilts; calibrate again",
                   err=True)
    click.echo("")
    click.echo(section, nl=False)
    if out_path is not None:
        click.echo(f"\nwritten to {out_path}")


def _is_live(item: str) -> bool:
    """Whether an input names a live camera (a capture source) rather than a file."""
    return item.startswith("camera:") or (item.startswith("video:") and "://" in item)


def _views(inputs: tuple[str, ...], seconds: float = 30.0) -> Iterator[tuple[str, Any]]:
    """Every view the inputs hold: images, the images in folders, sampled video frames,
    frames of a live camera watched for ``seconds``."""
    from capture.images import read_image
    from capture.sources import IMAGE_SUFFIXES

    for item in inputs:
        if _is_live(item):
            yield from _live_frames(item, seconds)
            continue
        path = Path(item)
        if path.is_dir():
            images = sorted(p for p in path.iterdir()
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise InputError(f"{path}: expected images of a chessboard, got a folder "
                                 f"without any")
            for image in images:
                yield str(image), read_image(image)
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            yield from _video_frames(path)
        else:
            yield str(path), read_image(path)


def _video_frames(path: Path) -> Iterator[tuple[str, Any]]:
    """At most :data:`VIDEO_FRAMES` frames of the video at ``path``, evenly spread."""
    import cv2

    from capture.sources import quiet_opencv_logs

    if not path.is_file():
        raise InputError(f"cannot read video {path}: it does not exist")
    quiet_opencv_logs()  # FFmpeg's "moov atom not found": the error below says it
    video = cv2.VideoCapture(str(path))
    try:
        if not video.isOpened():
            raise InputError(f"cannot read video {path}: OpenCV cannot open it")
        count = int(video.get(cv2.CAP_PROP_FRAME_COUNT))
        step = max(1, count // VIDEO_FRAMES) if count > 0 else 1
        index = read = 0
        while read < VIDEO_FRAMES:
            grabbed = video.grab()
            if not grabbed:
                break
            if index % step == 0:
                ok, frame = video.retrieve()
                if ok and frame is not None:
                    read += 1
                    yield f"{path}#{index}", frame
            index += 1
        if read == 0:
            raise InputError(f"cannot read video {path}: no frame could be decoded")
    finally:
        video.release()


def _live_frames(source: str, seconds: float,
                 clock: Callable[[], float] | None = None) -> Iterator[tuple[str, Any]]:
    """Frames of the live camera ``source`` (as a room's ``capture.source`` names it) for
    ``seconds``, one every ``seconds / VIDEO_FRAMES`` at most (the latest when it is due)."""
    from capture.config import CaptureConfig
    from capture.sources import open_source

    clock = clock or time.monotonic
    camera = open_source(CaptureConfig(source=source))  # InputError naming it if it fails
    every = seconds / VIDEO_FRAMES
    try:
        end, due, taken = clock() + seconds, 0.0, 0
        while clock() < end:
            frame = camera.read()
            if frame is None:
                time.sleep(0.01)  # nothing new yet (or the camera being reopened)
                continue
            if clock() >= due:
                taken += 1
                due = clock() + every
                yield f"{source}#{taken}", frame.image
        if taken == 0:
            raise InputError(f"{source}: no frame in {seconds:g} s (is the camera on?)")
    finally:
        camera.close()


def _write_atomic(path: Path, text: str) -> None:
    """``text`` into ``path`` whole or not at all (a full disk leaves the old file)."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_text(text)
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise InputError(f"--out {path}: cannot write it ({exc.strerror or exc})") from None


def read_lens_file(path: Path, option: str = "--lens") -> Any:
    """The :class:`capture.config.LensConfig` in the ``[capture.lens]`` section of the TOML
    file at ``path`` (as ``art2mus calibrate`` writes it, or a config holding one);
    InputError naming the option, the file and the field at fault."""
    from pydantic import ValidationError

    from capture.config import LensConfig

    try:
        document = parse_toml(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{option} {path}: no such file (art2mus calibrate writes one)") \
            from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{option} {path}: cannot read it ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{option} {path}: not TOML ({exc})") from None
    section = document.get("capture", {}).get("lens") if isinstance(
        document.get("capture"), dict) else None
    if not isinstance(section, dict):
        raise InputError(f"{option} {path}: expected a [capture.lens] section, got none")
    if (dated := dated_value(section)) is not None:
        field = ".".join(str(part) for part in ("capture", "lens", *dated[0]))
        raise InputError(f"{option} {path}: {field}: a date or time ({dated[1]}), "
                         "expected a number")
    try:
        return validate_typed(LensConfig, section)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in ("capture", "lens", *first["loc"]))
        raise InputError(f"{option} {path}: {field}: {first['msg']}") from None


__all__ = ["VIDEO_FRAMES", "VIDEO_SUFFIXES", "calibrate_command", "read_lens_file"]
