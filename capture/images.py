"""Reading still images from files, for every command that takes one (``detect``, ``bench
capture --photos``, ``embed``, ``render``, ``index``).

:func:`read_image` turns a missing, unreadable, empty, truncated or
undecodable file, and one that would decode to more than :data:`MAX_IMAGE_PIXELS` (a
decompression bomb: an 875 KB PNG of 30,000 x 30,000 zeros takes 5 GB), into one
``InputError`` line naming the file, and keeps OpenCV's (libjpeg's, libpng's) own
warnings off the terminal.
"""

from __future__ import annotations

import errno
import io
import os
import stat
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

#: The most pixels an image may decode to: a phone photo is 12-50 MP, a 12,000 px scan
#: read for a catalogue (``at_least``) is decoded at an eighth, 2 MP. A few hundred KB of
#: PNG or WebP can claim far more (30,000 x 30,000 zeros: 875 KB, 5 GB and 19 s to decode).
MAX_IMAGE_PIXELS = 100_000_000


def read_image(path: Path, at_least: int | None = None, *, as_stored: bool = False) -> Any:
    """The image file at ``path`` as BGR pixels (numpy uint8); InputError naming the file
    if it is missing, a folder, unreadable, empty, truncated or not an image.

    A photo is turned upright as its EXIF orientation says (as a viewer shows it);
    ``as_stored``: left as the camera's sensor stored it (what some annotation tools drew
    their points on).

    ``at_least`` (px): a JPEG whose shorter side is at least twice that is decoded at a
    half, quarter or eighth of its size (libjpeg scales while decoding: a 12,000 px scan
    takes a tenth of the time and memory), keeping the shorter side at ``at_least`` or
    more. Other formats, and smaller JPEGs, are decoded whole.

    An image that would decode to more than :data:`MAX_IMAGE_PIXELS` is refused: before
    decoding where its header gives its size (:func:`stored_size`), after where it does not."""
    import cv2
    import numpy as np

    if (why := file_problem(path)) is not None:
        raise InputError(f"cannot read image {path}: {why}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read image {path}: {exc.strerror or exc}") from None
    if not data:
        raise InputError(f"cannot read image {path}: expected an image file, got an empty file")
    if (why := _truncated(data)) is not None:
        raise InputError(f"cannot read image {path}: the file is truncated ({why})")
    size = stored_size(data)
    buffer = np.frombuffer(data, np.uint8)
    stored = cv2.IMREAD_IGNORE_ORIENTATION if as_stored else 0
    with _quiet_stderr():  # libjpeg/libpng print their complaints straight to fd 2
        image = None
        if at_least is not None and data.startswith(_JPEG_START):
            # an eighth first (cheap); its size says which reduction keeps at_least
            _refuse_over_limit(path, size, 8)
            image = cv2.imdecode(buffer, cv2.IMREAD_REDUCED_COLOR_8 | stored)
            if image is not None and min(image.shape[:2]) < at_least:
                short = 8 * min(image.shape[:2])
                factor, flag = next(((factor, flag) for factor, flag in
                                     ((4, cv2.IMREAD_REDUCED_COLOR_4),
                                      (2, cv2.IMREAD_REDUCED_COLOR_2))
                                     if short // factor >= at_least), (1, None))
                _refuse_over_limit(path, size, factor)
                image = None if flag is None else cv2.imdecode(buffer, flag | stored)
        if image is None:
            _refuse_over_limit(path, size, 1)
            image = cv2.imdecode(buffer, cv2.IMREAD_COLOR | stored)
    if image is None:
        raise InputError(f"cannot read image {path}: expected an image file (JPEG, PNG, ...), "
                         f"got {len(data)} bytes OpenCV cannot decode")
    height, width = image.shape[:2]
    if size is None and width * height > MAX_IMAGE_PIXELS:
        # a format whose header stored_size does not read (JPEG 2000, OpenEXR, ...): refused
        # all the same, though its pixels were decoded to learn their number
        _refuse_over_limit(path, (width, height), 1)
    return image


def _refuse_over_limit(path: Path, size: tuple[int, int] | None, reduction: int) -> None:
    """InputError where an image of ``size`` (width, height as stored) decoded at
    ``1 / reduction`` of it would hold more than :data:`MAX_IMAGE_PIXELS` pixels."""
    if size is None:
        return
    width, height = size
    # libjpeg's scaled sizes round up
    if -(-width // reduction) * -(-height // reduction) > MAX_IMAGE_PIXELS:
        at = {1: "", 2: " (at a half)", 4: " (at a quarter)", 8: " (at an eighth)"}[reduction]
        raise InputError(f"cannot read image {path}: expected at most "
                         f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels{at}, got {width}x{height}")


def file_problem(path: Path, what: str = "an image file") -> str | None:
    """Why ``path`` cannot be read as ``what`` (nothing is read from it), or None: it does
    not exist, is a link to nothing or a loop of links, or a folder. (A pipe passes:
    ``detect <(curl ...)`` reads one.)"""
    try:
        mode = path.stat().st_mode
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "it is a link that leads back to itself: a loop of links"
        if error.errno == errno.ENOENT and path.is_symlink():
            return f"it is a link to {os.readlink(path)}, which does not exist"
        if error.errno == errno.ENOENT:
            return "it does not exist"
        return error.strerror or str(error)
    return f"expected {what}, got a folder" if stat.S_ISDIR(mode) else None


def stored_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of the image in ``data`` as its header gives it, without decoding
    (imagesize: PNG, JPEG, WebP, GIF, BMP, TIFF and more); None for a format it does not
    know or a header that does not read as one (never an exception).

    A library that reads headers only, because OpenCV has none, Pillow is no dependency
    of a room, and OpenCV's own limit (OPENCV_IO_MAX_IMAGE_PIXELS) is read once, when cv2
    is first imported in the process: any module importing cv2 before this one would
    silently lift it.
    """
    import imagesize

    try:
        width, height = imagesize.get(io.BytesIO(data), exif_rotation=False)
    except Exception:  # noqa: BLE001 - a header cut short or garbled: decoded, then checked
        return None
    return (int(width), int(height)) if width > 0 and height > 0 else None


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
