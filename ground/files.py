"""Paths named from outside (a config, a link an operator left): what one is when it is no
regular file, in the words a technician reads.

A folder, a named pipe or a link to ``/dev/zero`` where a file is expected made a
reader wait for a writer, read without end, or say "no file at" a path that was
there. Every reader of such a path asks :func:`special_kind` first and names what
it found.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe"),
          (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


def special_kind(path: Path, mode: int | None = None) -> str | None:
    """What ``path`` is where it is there but is no regular file ("a folder", "a named
    pipe", "a device", "a block device", "a socket"; "... (a link to /dev/zero)" for a
    link); None where it is a regular file or nothing is there. ``mode``: its
    ``st_mode`` where the caller has it (the kind of what it opened, not of what the
    path names now)."""
    if mode is None:
        try:
            mode = path.stat().st_mode
        except OSError:
            return None
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    try:
        if path.is_symlink():
            kind += f" (a link to {os.readlink(path)})"
    except OSError:
        pass
    return kind


__all__ = ["special_kind"]
