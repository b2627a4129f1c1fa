"""The smallest installation config whose `art2mus status` reads a status.json the test
writes: one room, ``a``, its output folder under the test's own."""

from __future__ import annotations

from pathlib import Path


def status_config(tmp_path: Path) -> Path:
    """``tmp_path/inst.toml``: output in ``tmp_path/out``, a status every second, room a."""
    path = tmp_path / "inst.toml"
    path.write_text(f'[installation]\noutput_dir = "{tmp_path / "out"}"\n'
                    '[supervisor]\nstatus_every_s = 1.0\n[[rooms]]\nid = "a"\n')
    return path
