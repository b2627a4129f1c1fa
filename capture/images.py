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


#: The shorter side a reduced decode keeps at least, for callers that look at an image
#: at a few hundred px (catalogue references): a 12,000 px scan is decoded at an eighth.
REDUCED_AT_LEAST = 1024


def read_image(path: Path, at_least: int | None = None, *, as_stored: bool = False) -> Any:
    """The image file at ``path`` as BGR pixels (numpy uint8); InputError naming the file
    if it is missing, a folder, unreadable, empty, truncated or not an image.

    A photo is turned upright as its EXIF orientation says (as a viewer shows it);
    ``as_stored``: left as the camera's sensor stored it (what some annotation tools drew
    their points on).

    ``at_least`` (px): a JPEG whose shorter side is at least twice that is decoded at a
    half, quarter or eighth of its size (libjpeg scales while decoding: a 12,000 px scan
    takes a tenth of the time and memory), keeping the shorter side at ``at_least`` or
    more. Other formats, and smaller JPEGs, are decoded whole."""
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
    buffer = np.frombuffer(data, np.uint8)
    stored = cv2.IMREAD_IGNORE_ORIENTATION if as_stored else 0
    with _quiet_stderr():  # libjpeg/libpng print their complaints straight to fd 2
        image = None
        if at_least is not None and data.startswith(_JPEG_START):
            # an eighth first (cheap); its size says which reduction keeps at_least
            image = cv2.imdecode(buffer, cv2.IMREAD_REDUCED_COLOR_8 | stored)
            if image is not None and min(image.shape[:2]) < at_least:
                short = 8 * min(image.shape[:2])
                image = next((cv2.imdecode(buffer, flag | stored) for factor, flag in
                              ((4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))
                              if short // factor >= at_least), None)
        if image is None:
            image = cv2.imdecode(buffer, cv2.IMREAD_COLOR | stored)
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
