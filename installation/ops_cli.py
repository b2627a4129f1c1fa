"""Operations commands: ``art2mus status``, ``art2mus keys``, ``art2mus midi-learn``.

Registered on the main ``art2mus`` group by :mod:`installation.cli` (the
``commands`` list). Errors are :class:`~ground.errors.Art2MusError`
subclasses, printed once by the group as ``Error: ...`` with their exit code.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from ground.cli_types import FiniteFloat
from ground.errors import Art2MusError
from ground.params import PARAMETERS
from installation.config import load_config


@click.command("status")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True,
              help="The installation's config (its output folder holds status.json).")
@click.option("--json", "as_json", is_flag=True, help="Print the raw status record.")
@click.option("--watch", is_flag=True, help="Redraw every --interval seconds until Ctrl-C.")
@click.option("--interval", "interval_s", type=FiniteFloat(0.1, 3600.0), default=2.0,
              show_default=True, help="Seconds between redraws with --watch.")
def status(config_path: Path, as_json: bool, watch: bool, interval_s: float) -> None:
    """Every role's health and every room's artwork, key, tempo and level, as a table.

    Exits 0 when all is well, 1 when the status is stale (the supervisor is
    stuck or gone), the installation stopped, a role is restarting, silent or
    failed, a recording failed, a sound card is lost, a file cannot be written
    (a full disk), a backend is down or a room hears no music (silent, no
    audio_out listening, no clock reaching the engine); each problem is printed.
    A status file of another shape is refused (exit 3).
    """
    from rich.console import Console

    from installation.status import print_status, problems, read_status

    config = load_config(config_path)
    path = config.output_dir / "status.json"
    stale_after_s = 3 * config.supervisor.status_every_s + 2.0
    if as_json:
        record = read_status(path)
        click.echo(json.dumps(record, indent=2))
        sys.exit(1 if problems(record, stale_after_s) else 0)
    if not watch:
        sys.exit(1 if print_status(read_status(path), stale_after_s) else 0)
    console = Console()
    found: list[str] = []
    try:
        while True:
            console.clear()
            try:
                found = print_status(read_status(path), stale_after_s, console)
            except Art2MusError as error:  # no file yet: keep watching, it may appear
                found = [str(error)]
                console.print(f"Error: {error}", markup=False, highlight=False)
            console.print(f"(every {interval_s:g} s; Ctrl-C stops)", style="dim")
            time.sleep(interval_s)
    except KeyboardInterrupt:
        pass
    sys.exit(1 if found else 0)


@click.command("keys")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--client", "clients", multiple=True, default=("client",), show_default=True,
              help="One key pair per name (repeat for one per room machine).")
def keys(folder: Path, clients: tuple[str, ...]) -> None:
    """Create CurveZMQ key pairs for `[security] curve = true` (server + clients).

    Pairs already in FOLDER are kept, so a room can be added later without
    replacing the server key the other rooms trust.
    """
    from ground.security import create_keys

    written = create_keys(folder, clients)
    for path in written:
        click.echo(f"wrote {path}")
    if not written:
        click.echo(f"every pair named is already in {folder}: nothing written")
    click.echo(f"engine machine: {folder}/server.key, server.key_secret and authorized/, with\n"
               f'  [security] curve = true, keys_dir = "{folder}"')
    for name in clients:
        click.echo(f"room machine {name}: {folder}/server.key, {name}.key and {name}.key_secret "
                   f"(copied into its keys folder), with\n"
                   f'  [security] curve = true, keys_dir = "FOLDER", client_key = "{name}"')


@click.command("midi-learn")
@click.argument("targets", nargs=-1)
@click.option("--port", "port_name", required=True, help="Substring of the MIDI input port.")
@click.option("--timeout", "timeout_s", type=FiniteFloat(0.0, 3600.0, min_open=True),
              default=30.0, show_default=True,
              help="Seconds to wait for each control.")
@click.option("--out", "out_path", type=click.Path(path_type=Path), default=None,
              help="Also write the tables to this file.")
def midi_learn(targets: tuple[str, ...], port_name: str, timeout_s: float,
               out_path: Path | None) -> None:
    """Build a [control.midi] mapping by moving each control when asked.

    TARGETS are parameter names, optionally @ROOM (default: every parameter).
    """
    from installation.midi_in import learn_mapping, mapping_toml, open_input_port

    port, name = open_input_port(port_name)
    click.echo(f"listening on {name!r}")
    try:
        mapping = learn_mapping(port, list(targets) or list(PARAMETERS), click.echo, timeout_s)
    finally:
        port.close_port()
    text = f'[control.midi]\nport = "{port_name}"\n\n' + mapping_toml(mapping)
    click.echo("\n# paste into your config:\n" + text)
    if out_path is not None:
        out_path.write_text(text, encoding="utf-8")
        click.echo(f"written to {out_path}")


#: Commands for ``installation.cli`` to register on the ``art2mus`` group.
commands: list[click.Command] = [status, keys, midi_learn]
