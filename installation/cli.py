"""The ``art2mus`` command: demo, run, the single roles, and the technicians' tools.

Every user mistake surfaces as an :class:`~installation.errors.Art2MusError`,
caught here once and printed as ``Error: ...`` with the error's exit code.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from installation.config import InstallationConfig, freeze_config, load_config
from installation.errors import Art2MusError, InputError

REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


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
    config: InstallationConfig, config_label: str, source_path: Path | None = None
) -> tuple[float, list[Any]]:
    """Freeze the config, run the supervised installation, return (wall time, roles)."""
    from installation.events import EventLog
    from installation.roles import events_path, install_stop_handlers
    from installation.supervisor import Supervisor

    out = config.output_dir
    out.mkdir(parents=True, exist_ok=True)
    frozen = freeze_config(config, out / "run-config.json")
    stop = threading.Event()
    install_stop_handlers(stop)
    log = EventLog(events_path(config, "supervisor", None), "supervisor")
    supervisor = Supervisor(config, frozen, log, log_dir=out / "logs", source_path=source_path)
    click.echo(f"art2mus: running {config_label} ({len(config.rooms)} room(s)); "
               f"output in {out}/ — Ctrl-C stops")
    began = time.monotonic()
    try:
        supervisor.run(stop)
    finally:
        log.close()
    return time.monotonic() - began, supervisor.roles


@cli.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path),
              default=REPO_CONFIGS / "demo.toml", show_default=True)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Output folder (default: the config's, 'out').")
@click.option("--seconds", type=float, default=None, help="Stop after this much music.")
def demo(config_path: Path, out_dir: Path | None, seconds: float | None) -> None:
    """The embedded default end to end: virtual camera, three processes, out/demo.wav."""
    from installation.demo import prepare_demo_config, summarise_demo

    config = prepare_demo_config(load_config(config_path), out_dir, seconds)
    events_dir = config.output_dir / "events"
    if events_dir.exists():
        shutil.rmtree(events_dir)
    wall, roles = _supervise(config, f"demo ({config_path.name})")
    summarise_demo(config, wall, roles)


@cli.command()
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
def run(config_path: Path) -> None:
    """Run an installation: every role of every room, supervised."""
    config = load_config(config_path)
    wall, _ = _supervise(config, str(config_path), source_path=config_path)
    click.echo(f"art2mus: stopped after {wall:.1f} s")


def _role_command(role: str) -> Any:
    @click.option("--config", "config_path", type=click.Path(path_type=Path), required=True)
    @click.option("--room", default=None, help="Room id (default: the first room).")
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
@click.argument("path", type=click.Path(path_type=Path))
def check_config(path: Path) -> None:
    """Validate a config file; errors name the file, the field and what was expected."""
    config = load_config(path)
    rooms = ", ".join(f"{r.id} ({r.capture.source})" for r in config.rooms)
    click.echo(f"{path}: OK — generator {config.engine.generator}, rooms: {rooms}")


def _read_image(path: Path) -> Any:
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"cannot read image {path}: missing or not an image file")
    return image


def _view_for_image(image: Any, room: str = "render") -> Any:
    from capture.descriptor import ENCODER_NAME, describe_image
    from installation.protocol import PROTOCOL_VERSION, Array, ArtworkView

    descriptor = describe_image(image)
    return ArtworkView(
        v=PROTOCOL_VERSION, room=room, seq=0, time=time.time(), state="artwork",
        artwork_id="render", confidence=1.0, encoder=ENCODER_NAME,
        embedding=Array.from_numpy(descriptor.vector), features=descriptor.features,
    )


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
@click.option("--seconds", type=float, default=20.0, show_default=True)
@click.option("--out", "out_path", type=click.Path(path_type=Path), required=True,
              help="WAV or FLAC file to write.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="Take the generator settings from this config (default: built-in).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--midi", "midi_path", type=click.Path(path_type=Path), default=None,
              help="Also write the notes as a MIDI file.")
def render(image: Path, seconds: float, out_path: Path, config_path: Path | None,
           seed: int, midi_path: Path | None) -> None:
    """Render one artwork offline through the same generator the engine runs."""
    import soundfile

    from engine.config import EngineConfig
    from engine.generators import make_generator
    from engine.streaming import render_offline

    if seconds <= 0:
        raise InputError(f"--seconds must be positive, got {seconds}")
    engine_config = load_config(config_path).engine if config_path else EngineConfig()
    generator = make_generator(engine_config)
    view = _view_for_image(_read_image(image))
    began = time.perf_counter()
    audio, notes, decisions = render_offline(generator, view, seconds, seed=seed)
    spent = time.perf_counter() - began
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        soundfile.write(str(out_path), audio, generator.sample_rate)
    except (soundfile.LibsndfileError, ValueError, TypeError) as exc:
        raise InputError(f"cannot write {out_path}: {exc}") from None
    if midi_path is not None:
        from audio_out.midi import write_midi_file

        write_midi_file(midi_path, notes, generator.sample_rate)
    click.echo(json.dumps({"out": str(out_path), "seconds": seconds,
                           "realtime_factor": round(seconds / spent, 1),
                           "decisions": decisions}, indent=2))


@cli.command()
def devices() -> None:
    """List audio output devices and MIDI ports."""
    try:
        import sounddevice
    except OSError as exc:
        click.echo(f"audio: PortAudio not available ({exc})")
    else:
        outputs = [d for d in sounddevice.query_devices() if d["max_output_channels"] > 0]
        click.echo(f"audio outputs ({len(outputs)}):")
        for device in outputs:
            click.echo(f"  {device['name']} — {device['max_output_channels']} ch, "
                       f"{device['default_samplerate']:.0f} Hz")
    try:
        import rtmidi

        ports = rtmidi.MidiOut().get_ports()
        click.echo(f"MIDI outputs ({len(ports)}): " + ", ".join(ports))
    except Exception as exc:  # noqa: BLE001 - rtmidi raises its own types per platform
        click.echo(f"MIDI: not available ({exc})")


@cli.group()
def bench() -> None:
    """Benchmarks that print JSON."""


@bench.command("generator")
@click.option("--seconds", type=float, default=30.0, show_default=True)
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None)
@click.option("--json", "as_json", is_flag=True, default=True)
def bench_generator(seconds: float, config_path: Path | None, as_json: bool) -> None:
    """Real-time factor of the configured generator on this machine, one room, one core."""
    from capture.artworks import ARTWORK_STYLES, make_artwork
    from engine.config import EngineConfig
    from engine.generators import make_generator
    from engine.streaming import render_offline

    engine_config = load_config(config_path).engine if config_path else EngineConfig()
    generator = make_generator(engine_config)
    results = []
    for index in range(min(4, len(ARTWORK_STYLES))):
        view = _view_for_image(make_artwork(index, 7, (512, 512)))
        began = time.perf_counter()
        render_offline(generator, view, seconds, block_s=engine_config.chunk_s)
        spent = time.perf_counter() - began
        results.append({"style": ARTWORK_STYLES[index], "seconds": seconds,
                        "wall_s": round(spent, 3), "realtime_factor": round(seconds / spent, 1)})
    click.echo(json.dumps({"generator": engine_config.generator,
                           "sample_rate": engine_config.sample_rate,
                           "chunk_s": engine_config.chunk_s, "runs": results}, indent=2))


def _register_commands() -> None:
    """Add the commands other packages define (their heavy imports happen when one runs)."""
    from engine.diffusion.cli import bench_commands, commands

    for command in commands:
        cli.add_command(command)
    for command in bench_commands:
        bench.add_command(command)
    from audio_out.bench import bench_commands as audio_bench_commands

    for command in audio_bench_commands:
        bench.add_command(command)
    from capture.cli import bench_commands as capture_bench_commands
    from capture.cli import commands as capture_commands

    for command in capture_commands:
        cli.add_command(command)
    for command in capture_bench_commands:
        bench.add_command(command)
    from installation.ops_cli import commands as ops_commands

    for command in ops_commands:
        cli.add_command(command)


_register_commands()
