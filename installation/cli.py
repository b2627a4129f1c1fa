"""The ``art2mus`` command: demo, run, the single roles, and the technicians' tools.

Every user mistake surfaces as an :class:`~ground.errors.Art2MusError`,
caught here once and printed as ``Error: ...`` with the error's exit code.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import click

from ground.cli_types import SEED, FiniteFloat
from ground.errors import Art2MusError, ConfigError, InputError
from installation.config import InstallationConfig, freeze_config, load_config


def configs_dir() -> Path:
    """The example configs and systemd units (``configs/``), wherever this copy runs from.

    A wheel carries them as package data in ``installation/configs/`` (pyproject.toml maps
    it to the top-level folder). An editable install or a bare checkout has no such folder
    (setuptools' editable finder cannot import a data-only subpackage mapped elsewhere), so
    there they are the source tree's own ``configs/``.
    """
    packaged = resources.files("installation") / "configs"
    # a real folder: the roles are child processes that are handed the config's path
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "configs"


class _Group(click.Group):
    """A click group that turns Art2MusError into a clean message and exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Art2MusError as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(error.exit_code)


@click.group(cls=_Group)
@click.version_option(package_name="art2mus")
def cli() -> None:
    """Art2Mus: music for the artwork in front of the camera, live."""


def main() -> None:
    """Console-script entry point."""
    cli()


# -- running ------------------------------------------------------------------


def _supervise(
    config: InstallationConfig, config_label: str, source_path: Path | None = None,
    joins_room: str | None = None,
) -> tuple[float, Any]:
    """Freeze the config, run the supervised installation, return (wall time, supervisor).

    ``joins_room``: the run report also keeps that room's chunk joins (the demo).
    """
    from ground.events import EventLog
    from ground.jsonlog import WriteFailures
    from installation.roles import events_path, install_stop_handlers
    from installation.supervisor import Supervisor, console_line

    out = config.output_dir
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file of that name, a folder it may not write in
        raise ConfigError(f"installation.output_dir: expected a folder this user can write, "
                          f"got {out} ({exc.strerror or exc})") from None
    frozen = freeze_config(config, out / "run-config.json")
    stop = threading.Event()
    install_stop_handlers(stop)
    failures = WriteFailures(console_line)  # a failing disk is said once, never fatal
    log = EventLog(events_path(config, "supervisor", None), "supervisor", failures=failures,
                   max_bytes=config.supervisor.events_max_bytes,
                   backups=config.supervisor.events_backups)
    supervisor = Supervisor(config, frozen, log, log_dir=out / "logs", source_path=source_path,
                            write_failures=failures)
    if supervisor.report is not None:
        supervisor.report.joins_room = joins_room
    click.echo(f"art2mus: running {config_label} ({len(config.rooms)} room(s)); "
               f"output in {out}/ — Ctrl-C stops")
    began = time.monotonic()
    try:
        supervisor.run(stop)
    finally:
        log.close()
    return time.monotonic() - began, supervisor


def _gave_up(supervisor: Any) -> None:
    """RoleFailed when the supervisor stopped because every role left had failed."""
    from ground.errors import RoleFailed

    failed = supervisor.failed_roles()
    if supervisor.ended_by == "failed" and failed:
        raise RoleFailed("nothing left to run: " + "; ".join(
            f"{role.name} {role.failed}" for role in failed))


#: ``demo --seconds``: at most what audio_out.stop_after_s accepts (it becomes that).
DEMO_MAX_S = 366 * 86400.0


@cli.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              default=configs_dir() / "demo.toml", show_default=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Output folder (default: the config's, 'out').")
@click.option("--seconds", type=FiniteFloat(0.0, DEMO_MAX_S, min_open=True), default=None,
              help="Stop after this much music (audio_out.stop_after_s's range: up to a "
                   "leap year).")
def demo(config_path: Path, out_dir: Path | None, seconds: float | None) -> None:
    """The embedded default end to end: virtual camera, three processes, out/demo.wav."""
    from installation.demo import prepare_demo_config, summarise_demo

    config = prepare_demo_config(load_config(config_path), out_dir, seconds)
    # The last run's event logs (the report reads this run's only); nothing else there:
    # --out may name a folder that holds other things (it deleted the whole events/).
    events_dir = config.output_dir / "events"
    for old in (events_dir.glob("*.jsonl*") if events_dir.is_dir() else ()):
        with contextlib.suppress(OSError):
            old.unlink()
    wall, supervisor = _supervise(config, f"demo ({config_path.name})",
                                  joins_room=config.rooms[0].id)
    summarise_demo(config, wall, supervisor.roles, supervisor.report)
    _gave_up(supervisor)


@cli.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
def run(config_path: Path) -> None:
    """Run an installation: every role of every room, supervised.

    At the end (Ctrl-C, SIGTERM, or every finite role done) it writes
    OUTPUT/timeline.json and prints each room's recording segments.
    """
    from installation.doctor import require_deep_checks
    from installation.report import print_run_summary

    config = load_config(config_path)
    require_deep_checks(config, str(config_path), echo=click.echo)  # before any role starts
    wall, supervisor = _supervise(config, str(config_path), source_path=config_path)
    report = supervisor.report  # always there for an installation from a config
    if report is not None:
        summary = report.summary(wall, config.engine.sample_rate, supervisor.roles)
        print_run_summary(summary, report.write(summary))
    click.echo(f"art2mus: stopped after {wall:.1f} s")
    _gave_up(supervisor)


def _role_command(role: str) -> Any:
    # The engine serves every room: it takes no --room, and one given is refused by
    # run_role with a message that says so (the option is there, hidden, to say it).
    @click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
    @click.option("--room", default=None, hidden=role == "engine",
                  help="Room id (default: the first room).")
    def command(config_path: Path, room: str | None) -> None:
        from installation.roles import run_role

        sys.exit(run_role(role, load_config(config_path), room))  # type: ignore[arg-type]

    return command


cli.command("engine", help="Run the engine role alone (all rooms).")(_role_command("engine"))
cli.command("capture", help="Run one room's capture role alone.")(_role_command("capture"))
cli.command("play", help="Run one room's audio_out role alone.")(_role_command("audio_out"))


@cli.command("role", hidden=True)
@click.argument("name", type=click.Choice(["engine", "capture", "audio_out"]))
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
@click.option("--room", default=None)
def role(name: str, config_path: Path, room: str | None) -> None:
    """What the supervisor runs in each child process."""
    from installation.roles import run_role

    sys.exit(run_role(name, load_config(config_path), room))  # type: ignore[arg-type]


# -- technicians' tools -------------------------------------------------------


@cli.command("check-config")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="The config file to check.")
@click.argument("path", type=click.Path(path_type=Path), required=False, metavar="[PATH]")
@click.option("--deep", is_flag=True,
              help="Also check that it will run on this machine: sources open, files exist, "
                   "devices match, ports are free, paths are writable (exit 2 on a failure).")
def check_config(config_path: Path | None, path: Path | None, deep: bool) -> None:
    """Validate a config file (--config FILE); errors name the file, the field and what was
    expected.

    The positional PATH is the old spelling, still accepted (systemd units installed
    with an earlier version call it so) with a note on stderr.
    """
    if path is not None and config_path is not None:
        raise click.UsageError(f"give the config once: --config {config_path} or the "
                               f"deprecated positional {path}, not both")
    if path is not None:
        click.echo(f"check-config: the positional PATH is deprecated; use "
                   f"'check-config --config {path}'", err=True)
        config_path = path
    if config_path is None:
        raise click.UsageError("Missing option '--config': the config file to check")
    path = config_path
    config = load_config(path)
    rooms = ", ".join(f"{r.id} ({r.capture.source})" for r in config.rooms)
    click.echo(f"{path}: OK — generator {config.engine.generator}, rooms: {rooms}")
    if deep:
        from installation.doctor import deep_check

        report = deep_check(config)
        for finding in report.findings:
            click.echo(finding.line())
        click.echo(report.summary())
        if report.failures:
            raise ConfigError(f"{path} will not run on this machine: "
                              f"{len(report.failures)} deep check(s) failed (listed above)")


#: Longest offline render or generator bench, seconds (an hour of music).
MAX_RENDER_S = 3600.0


def _read_image(path: Path) -> Any:
    """The image as BGR pixels; one-line InputError if missing, unreadable or truncated."""
    from capture.images import read_image

    return read_image(path)


def _check_writable(path: Path, option: str, suffixes: tuple[str, ...] = ()) -> None:
    """InputError ``cannot write ...`` unless ``path`` can be written (checked before the
    work, so a long render is not lost at the end); creates its folder."""
    if path.is_dir():
        raise InputError(f"cannot write {option} {path}: it is a folder")
    if suffixes and path.suffix.lower() not in suffixes:
        raise InputError(f"cannot write {option} {path}: expected a file ending in "
                         f"{' or '.join(suffixes)}, got {path.suffix or 'no extension'!r}")
    blocking = next((p for p in path.parents if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise InputError(f"cannot write {option} {path}: {blocking} is a file, not a folder")
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab"):
            pass
    except OSError as exc:
        raise InputError(f"cannot write {option} {path}: {exc.strerror or exc}") from None
    if not existed:
        path.unlink(missing_ok=True)  # the probe leaves nothing behind


def _write_atomically(path: Path, write: Callable[[Path], object], needs_bytes: int) -> None:
    """``write(temporary)`` beside ``path``, then rename it over ``path``: a failed write
    (a full disk) leaves the file that was there, whole. InputError naming the file and
    the reason (libsndfile says only "System error." for a full disk: the free space
    against the ``needs_bytes`` the file needs, roughly, says it)."""
    kept = "; the file that was there is kept" if path.exists() else ""
    temporary: Path | None = None
    try:
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix,
                                        dir=path.parent)
        os.close(handle)
        temporary = Path(name)
        write(temporary)
        os.replace(temporary, path)
        temporary = None
    except Exception as exc:  # noqa: BLE001 - libsndfile's, mido's and the OS's errors
        free = shutil.disk_usage(path.parent).free
        why = (f"no space left on its disk ({free / 1e6:.1f} MB free, the file needs about "
               f"{needs_bytes / 1e6:.1f} MB)" if free < needs_bytes
               else getattr(exc, "strerror", None) or str(exc))
        raise InputError(f"cannot write {path}: {why}{kept}") from None
    finally:
        if temporary is not None:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)


def _view_for_image(image: Any, room: str = "render", artwork_id: str = "render") -> Any:
    """The ArtworkView of a picture, described as the capture role describes one."""
    from capture.descriptor import ENCODER_NAME, describe_image
    from ground.protocol import ArtworkView

    descriptor = describe_image(image)
    return ArtworkView.of_artwork(room, 0, time.time(), artwork_id, 1.0, ENCODER_NAME,
                                  descriptor.vector, descriptor.features)


#: Long side of the rectified painting ``render`` describes, px.
RENDER_RECTIFIED_SIDE = 512


#: The smallest share of the image (area) an unrecognised quad must cover for ``render`` to
#: take it for the painting; under it, the whole image is described. ``render`` is given one
#: still: a photo of a wall taken to preview a painting, or the painting's own image (what a
#: catalogue holds: picture to its edges, with no wall to find an outline against). In a
#: photo the painting is the subject: at 5 % of the area it spans about a fifth of the
#: photo's width, as from four or more of its own widths away, farther than one frames a
#: work to show it. In a painting's own image every quad is a detail of it (a pillar, a
#: door, a picture in the picture), and a detail that small would set the music for the
#: whole work. Checked: the real gallery frames of shared/data/galleries-estense, taken
#: walking, not framed, have their primary at 7-18 % (one GoPro frame at 0.9 %); the quads
#: found in the 42 paintings' own images of shared/data/artworks cover 1.8 % and 3.8 %
#: (details) or 82 % (a picture in its mount). Capture's own floor
#: (:data:`capture.detect.MIN_AREA_FRACTION`, 1 %) is lower: its camera may watch a work
#: from across a room. A work the catalogue recognises is taken at any size: it is known.
RENDER_MIN_PAINTING_FRACTION = 0.05


def _quad_fraction(quad: Any, picture: Any) -> float:
    """The share of ``picture``'s area that ``quad`` (four corners) covers."""
    import cv2
    import numpy as np

    corners = np.asarray(quad, np.float32).reshape(4, 1, 2)
    return abs(float(cv2.contourArea(corners))) / float(picture.shape[0] * picture.shape[1])


def _locate_quad(picture: Any, catalogue: Any, detect_width: int) -> tuple[Any, Any, float]:
    """(the rectified quad, the RecognisedArtwork used, the share of the image it covers) as
    capture finds it in a photo: the primary of :func:`capture.recognise.detect_and_recognise`;
    ``(None, None, 0.0)`` when no quad is found. The rectified picture keeps the quad's
    aspect (mean side lengths)."""
    import numpy as np

    from capture.detect import rectify
    from capture.recognise import detect_and_recognise

    found = detect_and_recognise(picture, catalogue, detect_width)
    primary = next((a for a in found if a.primary), None)
    if primary is None:
        return None, None, 0.0
    quad = np.asarray(primary.quad, np.float64).reshape(4, 2)
    width = float(np.linalg.norm(quad[1] - quad[0]) + np.linalg.norm(quad[2] - quad[3])) / 2
    height = float(np.linalg.norm(quad[3] - quad[0]) + np.linalg.norm(quad[2] - quad[1])) / 2
    long_side = max(width, height, 1e-6)
    size = (max(8, round(RENDER_RECTIFIED_SIDE * width / long_side)),
            max(8, round(RENDER_RECTIFIED_SIDE * height / long_side)))
    return rectify(picture, quad, size), primary, _quad_fraction(quad, picture)


def _is_the_painting(primary: Any, fraction: float) -> bool:
    """Whether the quad found is the painting to describe, not a detail of one
    (:data:`RENDER_MIN_PAINTING_FRACTION`)."""
    return primary.artwork_id is not None or fraction >= RENDER_MIN_PAINTING_FRACTION


def _locate_painting(picture: Any, catalogue: Any, detect_width: int) -> tuple[Any, Any]:
    """(the rectified painting, the RecognisedArtwork used) as ``render`` describes a photo:
    the quad :func:`_locate_quad` finds, when it is the painting (:func:`_is_the_painting`);
    ``(None, None)`` when the whole image is to be described instead (no quad, or only a
    small one that is not a catalogued work: a detail of the painting's own image)."""
    rectified, primary, fraction = _locate_quad(picture, catalogue, detect_width)
    if primary is None or not _is_the_painting(primary, fraction):
        return None, None
    return rectified, primary


@cli.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines.")
def embed(images: tuple[Path, ...], as_json: bool) -> None:
    """Print the visual descriptor of each image (named features and the vector)."""
    from capture.descriptor import ENCODER_NAME, describe_image

    for path in images:
        descriptor = describe_image(_read_image(path))
        record: dict[str, Any] = {
            "image": str(path), "encoder": ENCODER_NAME,
            "features": {k: round(v, 4) for k, v in descriptor.features.items()},
            "vector": [round(float(x), 5) for x in descriptor.vector],
        }
        if as_json:
            click.echo(json.dumps(record))
        else:
            click.echo(f"{path}:")
            for name, value in record["features"].items():
                click.echo(f"  {name:16s} {value:.3f}")


@cli.command()
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--seconds", type=FiniteFloat(0.0, MAX_RENDER_S, min_open=True), default=20.0,
              show_default=True)
@click.option("--out", "out_path", type=click.Path(path_type=Path), required=True,
              help="WAV or FLAC file to write.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="Take the engine settings, and the room's seed and catalogue, from this "
                   "config (default: built-in settings, seed 0, no catalogue).")
@click.option("--room", default=None,
              help="The room of --config to preview (default: its first room).")
@click.option("--seed", type=SEED, default=None,
              help="Generator seed (default: the room's with --config, else 0).")
@click.option("--midi", "midi_path", type=click.Path(path_type=Path), default=None,
              help="Also write the notes as a MIDI file.")
@click.option("--json", "as_json", is_flag=True,
              help="Print every decision as JSON instead of the short summary.")
@click.option("--whole", is_flag=True,
              help="Describe the whole image, without looking for a painting in it (IMAGE "
                   "is the painting's own image, as a catalogue holds it).")
def render(image: Path, seconds: float, out_path: Path, config_path: Path | None,
           room: str | None, seed: int | None, midi_path: Path | None, as_json: bool,
           whole: bool) -> None:
    """Preview offline what a room plays for the painting in a photo, or for a painting's image.

    As the capture role does, the painting is located in the photo (with the
    room's catalogue when its config names one, through the room's lens when it has
    one and the photo is of its aspect), rectified and described (a
    catalogued work from its catalogue image, unless the room's
    ``capture.recognition.describe`` is "view");
    then the engine's generator renders it with the room's seed and settings.
    The whole image is described instead (said on stderr and in the summary) when
    no painting is found, when the quad found is not a catalogued work and
    covers under 5 % of the image (a detail of the painting's own image: a pillar,
    a door), or with --whole.
    Prints a short summary (the painting, key/mode/tempo, instruments, length,
    loudness, the files); --json prints every decision. Previews longer than
    30 s show a progress bar on stderr when it is a terminal.
    """
    import soundfile

    from engine.config import EngineConfig
    from engine.generators import make_generator
    from engine.streaming import render_offline, shift_channels

    if room is not None and config_path is None:
        raise InputError(f"--room {room}: expected --config FILE as well (rooms are named in a "
                         f"config), got --room alone")
    picture = _read_image(image)
    _check_writable(out_path, "--out", (".wav", ".flac"))
    if midi_path is not None:
        _check_writable(midi_path, "--midi", (".mid", ".midi"))
    config = load_config(config_path) if config_path is not None else None
    room_config = config.room(room or config.rooms[0].id) if config is not None else None
    engine_config = config.engine if config is not None else EngineConfig()
    if seed is None:
        seed = room_config.seed if room_config is not None else 0
    catalogue, detect_width = None, 640
    if room_config is not None:
        from capture.catalogue import Catalogue

        recognition = room_config.capture.recognition
        detect_width = room_config.capture.detect_width
        if recognition.catalogue:
            catalogue = Catalogue.open(recognition.catalogue, recognition.cache_dir,
                                       recognition.min_inliers)
        lens = room_config.capture.lens
        if lens is not None:  # as the room's capture does with its camera's frames
            from capture.lens import Lens

            camera = Lens(lens)
            if camera.fits((picture.shape[1], picture.shape[0])):
                picture = camera.undistort(picture)
                click.echo(f"render: the room's lens ({lens.model}) taken out of {image}; "
                           f"corners below are in the undistorted photo", err=True)
            else:
                click.echo(f"render: the room's lens (measured at {lens.width}x{lens.height}) "
                           f"does not fit {image} ({picture.shape[1]}x{picture.shape[0]}); "
                           f"taken as it is", err=True)
    generator = make_generator(engine_config)
    rectified: Any = None  # the painting, rectified; None: the whole image is described
    used: Any = None
    fraction = 0.0  # of the image, the quad found covers (0.0: none found, or --whole)
    if not whole:
        rectified, used, fraction = _locate_quad(picture, catalogue, detect_width)
    room_id = room_config.id if room_config is not None else "render"
    if used is not None and not _is_the_painting(used, fraction):
        click.echo(f"render: the quad found in {image} covers {fraction:.1%} of "
                   f"it, under {RENDER_MIN_PAINTING_FRACTION:.0%}, and is not a catalogued "
                   f"work: taken for a detail of the painting's own image, so the whole image "
                   f"is described (a photo of a wall should show the painting larger)",
                   err=True)
        rectified, used = None, None
    if used is None:
        if whole:
            click.echo(f"render: --whole: describing the whole of {image}", err=True)
        elif fraction == 0.0:
            click.echo(f"render: no painting found in {image}; describing the whole image",
                       err=True)
        view = _view_for_image(picture, room_id)
    else:
        corners = " ".join(f"({x:.0f},{y:.0f})" for x, y in used.quad)
        click.echo(f"render: painting {used.artwork_id or 'unknown'} (score {used.score:.2f}, "
                   f"found by {used.found_by}) at {corners} in {image}, {fraction:.1%} of "
                   f"it, rectified to {rectified.shape[1]}x{rectified.shape[0]}", err=True)
        described = rectified
        if used.artwork_id and catalogue is not None and room_config is not None \
                and room_config.capture.recognition.describe == "reference":
            # as the room does: a catalogued work is described from its catalogue image
            # (and, where that cannot be read, from the photo, as the room falls back too)
            try:
                described = catalogue.reference_view(used.artwork_id,
                                                     room_config.capture.rectified_size)
                click.echo(f"render: {used.artwork_id} described from its catalogue image "
                           f"(capture.recognition.describe = \"reference\")", err=True)
            except InputError as error:
                click.echo(f"render: {error}; described from the photo", err=True)
        view = _view_for_image(described, room_id, used.artwork_id or "render")
    began = time.perf_counter()
    from ground.cli_report import progress_bar

    with progress_bar(None if seconds > RENDER_PROGRESS_AFTER_S else False,
                      unit="s of audio") as update:
        counted = generator if update is None else _CountedGenerator(generator, update, seconds)
        audio, notes, decisions = render_offline(counted, view, seconds, seed=seed,
                                                 block_s=engine_config.chunk_s)
    spent = time.perf_counter() - began
    kind = out_path.suffix.lstrip(".").upper()
    _write_atomically(out_path, lambda temporary: soundfile.write(
        str(temporary), audio, generator.sample_rate, format=kind), audio.size * 2)
    if midi_path is not None:
        from audio_out.midi import TempoChange, write_midi_file

        offset = room_config.midi_channel_offset if room_config is not None else 0
        tempo_map = []
        if decisions.get("tempo_bpm") and decisions.get("meter"):  # the plan's, on the grid
            numerator, _, denominator = str(decisions["meter"]).partition("/")  # "5/4"
            tempo_map.append(TempoChange(0, float(decisions["tempo_bpm"]),
                                         (int(numerator), int(denominator))))
        _write_atomically(midi_path, lambda temporary: write_midi_file(
            temporary, shift_channels(notes, offset), generator.sample_rate, tempo_map),
            len(notes) * 16)
    located = None if used is None else {
        "quad": [[round(float(x), 1), round(float(y), 1)] for x, y in used.quad],
        "artwork_id": used.artwork_id, "score": round(float(used.score), 4),
        "found_by": used.found_by, "fraction": round(fraction, 4)}
    # what was described, and why: a summary line must never leave it to be guessed
    described = ("painting" if used is not None else "whole image (--whole)" if whole
                 else "whole image (no painting found)" if fraction == 0.0
                 else f"whole image (the quad found, {fraction:.1%} of it, is a detail)")
    record = {"out": str(out_path), "seconds": seconds, "described": described,
              "realtime_factor": round(seconds / spent, 1),
              "room": room_config.id if room_config is not None else None,
              "seed": seed, "located": located,
              "loudness_lufs": _loudness_lufs(audio, generator.sample_rate),
              "midi": None if midi_path is None else str(midi_path),
              "decisions": decisions}
    if as_json:
        click.echo(json.dumps(record, indent=2))
    else:
        for line in render_summary(record):
            click.echo(line)


#: ``render`` previews longer than this (s of music) show a progress bar.
RENDER_PROGRESS_AFTER_S = 30.0


class _CountedGenerator:
    """A generator as ``render_offline`` sees it, reporting each block to a progress bar.

    Every attribute is the wrapped generator's; only ``generate`` also counts the
    seconds rendered (engine.streaming.render_offline has no progress hook of its own).
    """

    def __init__(self, generator: Any, update: Any, seconds: float) -> None:
        self._generator, self._update, self._seconds = generator, update, seconds
        self._frames = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._generator, name)

    def generate(self, state: Any, condition: Any, frames: int) -> Any:
        """The wrapped generator's ``generate``, then the bar moved by ``frames``."""
        result = self._generator.generate(state, condition, frames)
        self._frames += frames
        self._update("render", round(self._frames / self._generator.sample_rate),
                     round(self._seconds))
        return result


def _loudness_lufs(audio: Any, sample_rate: int) -> float | None:
    """Integrated loudness (ITU-R BS.1770, pyloudnorm), LUFS; None when too short (under
    one 400 ms gating block) or silent."""
    import math

    import numpy as np
    import pyloudnorm

    if len(audio) < round(0.4 * sample_rate):
        return None
    with np.errstate(divide="ignore"):  # silence: log10(0), reported as None
        lufs = float(pyloudnorm.Meter(sample_rate).integrated_loudness(np.asarray(audio)))
    return round(lufs, 1) if math.isfinite(lufs) else None


def render_summary(record: dict[str, Any]) -> list[str]:
    """``render``'s short report for a person: the painting, the music, the files."""
    located, decisions = record["located"], record["decisions"]
    if located is None:
        found = f"described the {record['described']}"
    else:
        found = (f"painting {located['artwork_id'] or 'unknown (not in a catalogue)'} "
                 f"(score {located['score']:.2f}, found by {located['found_by']}, "
                 f"{located['fraction']:.1%} of the image)")
    lines = [f"render: {found}"]
    if "key" in decisions:
        lines.append(f"  music: {decisions['key']} {decisions['mode']}, "
                     f"{decisions['tempo_bpm']:g} bpm, {decisions['meter']}")
        instruments = ", ".join(f"{role} {spec['name']}"
                                for role, spec in decisions.get("instruments", {}).items())
        lines.append(f"  instruments: {instruments or 'none'}")
    else:
        lines.append(f"  music: {decisions.get('generator', 'generator')}, "
                     f"{decisions.get('sampler', '?')} {decisions.get('steps', '?')} steps, "
                     f"guidance {decisions.get('guidance_scale', '?')}")
    loudness = record["loudness_lufs"]
    lines.append(f"  {record['seconds']:g} s ({record['realtime_factor']:g}x real time), "
                 f"loudness {'n/a' if loudness is None else f'{loudness:g} LUFS'}, "
                 f"seed {record['seed']}" + (f", room {record['room']}" if record["room"] else ""))
    lines.append(f"  wrote {record['out']}" + (f" and {record['midi']}" if record["midi"] else ""))
    return lines


def _camera_lines() -> list[str]:
    """The cameras ``[rooms.capture] source = "camera:NAME"`` can name (Linux V4L2)."""
    from capture.sources import camera_names

    names = camera_names()
    if not names:
        # no names to list: OpenCV opens cameras by index on any system, by name only on Linux
        return ["cameras: none found (no /sys/class/video4linux devices; off Linux "
                "a camera is named by index: source = \"camera:0\")"]
    # a camera shows as several nodes (capture, metadata); camera:NAME takes the lowest
    return [f"cameras ({len(names)} video nodes; source = \"camera:N\" or "
            f"\"camera:<part of the name>\"):",
            *(f"  {index}: {name}" for index, name in sorted(names.items()))]


def _midi_lines() -> list[str]:
    """The MIDI output ports (``[audio_out] midi_port``, ``[control.midi] feedback_port``)
    and input ports (``[control.midi] port``) here, each section saying when there are none."""
    try:
        import rtmidi
    except ImportError:
        return ["MIDI: python-rtmidi is not installed (pip install 'art2mus[midi]')"]
    lines = []
    for direction, make in (("outputs", "MidiOut"), ("inputs", "MidiIn")):
        try:
            ports = list(getattr(rtmidi, make)().get_ports())
        except Exception as exc:  # noqa: BLE001 - rtmidi raises its own types per platform
            lines.append(f"MIDI {direction}: not available ({exc})")
            continue
        lines.append(f"MIDI {direction} ({len(ports)}): " + (", ".join(ports) or "none"))
    return lines


@cli.command()
def devices() -> None:
    """List what a config names by device: cameras, audio outputs, MIDI outputs and inputs."""
    for line in _camera_lines():
        click.echo(line)
    try:
        import sounddevice
    except OSError as exc:
        click.echo(f"audio outputs: PortAudio not available ({exc})")
    except ImportError:
        click.echo("audio outputs: sounddevice is not installed (pip install 'art2mus[audio]')")
    else:
        outputs = [d for d in sounddevice.query_devices() if d["max_output_channels"] > 0]
        click.echo(f"audio outputs ({len(outputs)}):" + ("" if outputs else " none"))
        for device in outputs:
            click.echo(f"  {device['name']} — {device['max_output_channels']} ch, "
                       f"{device['default_samplerate']:.0f} Hz")
    for line in _midi_lines():
        click.echo(line)


@cli.group()
def bench() -> None:
    """Benchmarks: each prints a table and its verdict against its targets (--json: JSON)."""


#: ``bench generator``: the slowest style must render this many times faster than real
#: time on one core (one room, with headroom for the engine's other rooms and I/O).
GENERATOR_REALTIME_TARGET = 2.0


@bench.command("generator")
@click.option("--seconds", type=FiniteFloat(0.0, MAX_RENDER_S, min_open=True), default=30.0,
              show_default=True)
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of the table.")
def bench_generator(seconds: float, config_path: Path | None, as_json: bool) -> None:
    """Real-time factor of the configured generator on this machine, one room, one core;
    the verdict: the slowest style at least GENERATOR_REALTIME_TARGET x real time."""
    from capture.synthetic.artworks import ARTWORK_STYLES, make_artwork
    from engine.config import EngineConfig
    from engine.generators import make_generator
    from engine.streaming import render_offline
    from ground.cli_report import Target, print_table, verdict_lines, verdict_record

    engine_config = load_config(config_path).engine if config_path else EngineConfig()
    generator = make_generator(engine_config)
    results: list[dict[str, Any]] = []
    for index in range(min(4, len(ARTWORK_STYLES))):
        view = _view_for_image(make_artwork(index, 7, (512, 512)))
        began = time.perf_counter()
        render_offline(generator, view, seconds, block_s=engine_config.chunk_s)
        spent = time.perf_counter() - began
        results.append({"style": ARTWORK_STYLES[index], "seconds": seconds,
                        "wall_s": round(spent, 3), "realtime_factor": round(seconds / spent, 1)})
    targets = [Target("slowest real-time factor",
                      min(run["realtime_factor"] for run in results),
                      GENERATOR_REALTIME_TARGET, "x", at_most=False,
                      meaning="no headroom for a second room or a slow moment")]
    report = {"bench": "generator", "generator": engine_config.generator,
              "sample_rate": engine_config.sample_rate, "chunk_s": engine_config.chunk_s,
              "runs": results, "verdict": verdict_record(targets)}
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    print_table(f"art2mus bench generator: {engine_config.generator}, {seconds:g} s per "
                f"style, {engine_config.sample_rate} Hz, one core",
                [(run["style"], f"{run['realtime_factor']:g}x real time "
                                f"({run['wall_s']:g} s)") for run in results],
                columns=("style", "real-time factor"))
    for line in verdict_lines(targets):
        click.echo(line)


def _register_commands() -> None:
    """Add the commands other packages define (their heavy imports happen when one runs)."""
    from engine.generators.diffusion.cli import bench_commands, commands

    for command in commands:
        cli.add_command(command)
    for command in bench_commands:
        bench.add_command(command)
    from training.cli import commands as training_commands

    for command in training_commands:
        cli.add_command(command)
    from audio_out.bench import bench_commands as audio_bench_commands

    for command in audio_bench_commands:
        bench.add_command(command)
    from capture.cli import bench_commands as capture_bench_commands
    from capture.cli import commands as capture_commands

    for command in capture_commands:
        cli.add_command(command)
    for command in capture_bench_commands:
        bench.add_command(command)
    from installation.loadgen_cli import bench_commands as rooms_bench_commands

    for command in rooms_bench_commands:
        bench.add_command(command)
    from installation.ops_cli import commands as ops_commands

    for command in ops_commands:
        cli.add_command(command)
    from installation.serve_cli import commands as serve_commands

    for command in serve_commands:
        cli.add_command(command)


_register_commands()
