"""Reading still images from files, for every command that takes one (``detect``, ``bench
capture --photos``, ``embed``, ``render``, ``index``).

:func:`read_image` turns a missing, unreadable, empty, truncated or
undecodable file into one ``InputError`` line naming the file, and keeps
OpenCV's (libjpeg's, libpng's) own warnings off the terminal.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
