"""Helper of the tests that give a command a bad value: it must stop with click's usage error
naming the option, before any work, never with a traceback."""

from __future__ import annotations

from click.testing import CliRunner


def refused(args: list[str], option: str) -> None:
    """``art2mus ARGS`` stops with a usage error (exit 2) naming ``option``, no traceback."""
    from installation.cli import cli

    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert option in result.output, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
