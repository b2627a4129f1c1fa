"""Operations commands: ``art2mus status``, ``art2mus keys``, ``art2mus midi-learn``.

Registered on the main ``art2mus`` group by :mod:`installation.cli` (the
``commands`` list). Errors are :class:`~installation.errors.Art2MusError`
subclasses, printed once by the group as ``Error: ...`` with their exit code.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from installation.config import load_config
from installation.params import PARAMETERS


@click.command("status")
@click.option("--config", "config_path", type=click.Path(path_type=Path), required=True,
              help="The installation's config (its output folder holds status.json).")
@click.option("--json", "as_json", is_flag=True, help="Print the raw status record.")
def status(config_path: Path, as_json: bool) -> None:
    """Every role's health and every room's artwork, key, tempo and level, as a table."""
    from installation.status import print_status, read_status

    config = load_config(config_path)
    record = read_status(config.output_dir / "status.json")
    if as_json:
        click.echo(json.dumps(record, indent=2))
        return
    print_status(record, stale_after_s=3 * config.supervisor.status_every_s + 2.0)


@click.command("keys")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--client", "clients", multiple=True, default=("client",), show_default=True,
              help="One key pair per name (repeat for one per room machine).")
def keys(folder: Path, clients: tuple[str, ...]) -> None:
    """Create CurveZMQ key pairs for `[security] curve = true` (server + clients)."""
    from installation.security import create_keys

    written = create_keys(folder, clients)
    for path in written:
        click.echo(str(path))
    click.echo(f"engine machine: {folder}/server.key_secret, server.key, authorized/; "
               f"room machines: {folder}/server.key and their client .key_secret; "
               f'then set [security] curve = true, keys_dir = "{folder}"')


@click.command("midi-learn")
@click.argument("targets", nargs=-1)
@click.option("--port", "port_name", required=True, help="Substring of the MIDI input port.")
@click.option("--timeout", "timeout_s", type=float, default=30.0, show_default=True,
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
