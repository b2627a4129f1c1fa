"""Overlays: a frame with what capture found in it drawn on top, for people to look at.

Where it sits: ``art2mus detect IMG --draw OUT`` writes one per photo, and the
capture role can keep the overlay of its latest frame on disk (``[capture]
overlay``) for the technician's console, through :class:`OverlayWriter`. Nothing
here decides anything: it draws :class:`capture.recognise.RecognisedArtwork`
records as they are.

What is drawn for each artwork: its quad as a closed outline (green when the
catalogue recognised it, orange when unknown; the primary one thicker, with a
yellow band under its outline), a dot on its top-left corner (the quad's
orientation), and a label: ``*`` for the primary, the id, the score, how it
was found (``quad`` finder or ``catalogue`` location) and, on a second line,
the title when the catalogue knows it. Line widths and text scale with the
image width, and text has a dark outline, so it reads on a 640 px frame and
on a 1920 px photo alike, on any wall.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from ground.errors import InputError

if TYPE_CHECKING:
    from capture.recognise import RecognisedArtwork

log = logging.getLogger(__name__)

#: Image formats an overlay can be written as (by file suffix).
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg")
_SUFFIXES = ".png, .jpg or .jpeg"

# BGR colours
_KNOWN = (60, 200, 60)  # recognised in the catalogue
_UNKNOWN = (0, 140, 255)  # a quad the catalogue does not know
_PRIMARY = (0, 230, 255)  # band under the primary's outline
_OUTLINE = (20, 20, 20)  # behind text
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_MAX_TITLE = 48  # characters: a long title is cut, the quad stays visible


def draw_overlay(image_bgr: np.ndarray, artworks: Sequence[RecognisedArtwork],
                 titles: Mapping[str, str] | None = None) -> np.ndarray:
    """A copy of ``image_bgr`` with every artwork's quad, id, title, score and finder drawn.

    ``titles`` maps artwork ids to titles (the catalogue's); ids without one
    get no title line.
    """
    canvas: np.ndarray = np.ascontiguousarray(image_bgr, dtype=np.uint8).copy()
    if canvas.ndim == 2:
        canvas = np.asarray(cv2.cvtColor(canvas, cv2.COLOR_GRAY2BGR))
    height, width = canvas.shape[:2]
    unit = max(width, 320) / 640.0  # 1 at 640 px wide, 3 at 1920
    line = max(1, round(2 * unit))
    # Outlines with the primary's last (on top where quads overlap); labels with the
    # primary's first (it gets the place right above its quad, the others make way).
    ordered = sorted(artworks, key=lambda a: a.primary)
    for artwork in ordered:
        points = np.round(np.asarray(artwork.quad, np.float64).reshape(4, 2)).astype(np.int32)
        colour = _KNOWN if artwork.artwork_id is not None else _UNKNOWN
        if artwork.primary:
            cv2.polylines(canvas, [points], True, _PRIMARY, 4 * line, cv2.LINE_AA)
        cv2.polylines(canvas, [points], True, colour, 2 * line if artwork.primary else line,
                      cv2.LINE_AA)
        cv2.circle(canvas, (int(points[0, 0]), int(points[0, 1])), 2 * line + 1, colour, -1,
                   cv2.LINE_AA)
    placed: list[tuple[int, int, int, int]] = []
    for artwork in reversed(ordered):
        lines = [f"{'* ' if artwork.primary else ''}{artwork.artwork_id or 'unknown'} "
                 f"{artwork.score:.2f} {artwork.found_by}"]
        title = (titles or {}).get(artwork.artwork_id or "", "")
        if title:
            lines.append(_ascii(title))
        colour = _KNOWN if artwork.artwork_id is not None else _UNKNOWN
        _label(canvas, lines, np.asarray(artwork.quad, np.float64).reshape(4, 2), colour, unit,
               placed)
    return canvas


def _ascii(text: str) -> str:
    """``text`` in the characters OpenCV's Hershey fonts can draw (accents dropped)."""
    plain = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in plain if not unicodedata.combining(c))
    plain = plain.encode("ascii", "replace").decode("ascii")
    return plain if len(plain) <= _MAX_TITLE else plain[: _MAX_TITLE - 3] + "..."


def _label(canvas: np.ndarray, lines: list[str], quad: np.ndarray, colour: tuple[int, int, int],
           unit: float, placed: list[tuple[int, int, int, int]]) -> None:
    """Draw ``lines`` just above the quad's top edge, clear of the labels in ``placed``
    (x0, y0, x1, y1; this one is added), or inside the quad's top when there is no room."""
    height, width = canvas.shape[:2]
    scale = 0.5 * unit
    thickness = max(1, round(unit))
    gap = max(2, round(3 * unit))
    sizes = [cv2.getTextSize(text, _FONT, scale, thickness) for text in lines]
    line_h = max(h + base for (_, h), base in sizes) + gap
    block_h = line_h * len(lines)
    block_w = max(w for (w, _), _ in sizes) + 2 * thickness
    left = int(np.clip(quad[:, 0].min(), 0, max(0, width - block_w)))
    top = int(quad[:, 1].min()) - block_h - gap
    for _ in range(len(placed) + 1):  # climb over the labels already drawn
        hits = [box for box in placed if box[0] < left + block_w and left < box[2]
                and box[1] < top + block_h and top < box[3]]
        if not hits:
            break
        top = min(box[1] for box in hits) - block_h
    if top < 0:  # no room above: inside the quad, under its top edge
        top = max(0, int(quad[:, 1].min())) + gap
    top = min(top, max(0, height - block_h))
    placed.append((left, top, left + block_w, top + block_h))
    ring = max(1, round(unit))
    for k, text in enumerate(lines):
        (_, text_h), _ = sizes[k]
        x, y = left + thickness, top + k * line_h + text_h + 1
        # The dark outline: the same strokes shifted all round (a thicker stroke would
        # also widen OpenCV's glyph advance and drift off the text).
        for dx in (-ring, 0, ring):
            for dy in (-ring, 0, ring):
                if dx or dy:
                    cv2.putText(canvas, text, (x + dx, y + dy), _FONT, scale, _OUTLINE,
                                thickness, cv2.LINE_AA)
        cv2.putText(canvas, text, (x, y), _FONT, scale, colour, thickness, cv2.LINE_AA)


def encode_image(path: str | Path, image: np.ndarray, jpeg_quality: int = 90) -> bytes:
    """``image`` encoded in the format ``path``'s suffix names (.png, .jpg, at
    ``jpeg_quality``); InputError else."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise InputError(f"cannot write image {path}: expected a file ending in {_SUFFIXES}, "
                         f"got {path.suffix or 'no extension'!r}")
    params = ([cv2.IMWRITE_PNG_COMPRESSION, 3] if suffix == ".png"
              else [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    ok, encoded = cv2.imencode(suffix, image, params)
    if not ok:
        raise InputError(f"cannot write image {path}: OpenCV could not encode it as {suffix}")
    return encoded.tobytes()


def write_image_atomic(path: str | Path, image: np.ndarray, jpeg_quality: int = 90) -> Path:
    """Write ``image`` to ``path`` (format by suffix) so that a reader never sees half a file.

    The bytes go to a temporary file in the same folder, then ``os.replace``
    puts it in place in one step. InputError naming the path on a bad suffix
    or any OSError (no folder, no permission, a full disk).
    """
    path = Path(path)
    data = encode_image(path, image, jpeg_quality)
    temporary: str | None = None
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                                             dir=path.parent)
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
        temporary = None
    except OSError as exc:
        raise InputError(f"cannot write image {path}: {exc.strerror or exc}") from None
    finally:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
    return path


def downscale(image: np.ndarray, artworks: Sequence[RecognisedArtwork], width: int | None,
              ) -> tuple[np.ndarray, list[RecognisedArtwork]]:
    """``image`` resized to ``width`` px wide (never enlarged) and the quads scaled with it.

    Drawing after the resize keeps lines and labels readable at the small
    size (they scale with the width they are drawn at).
    """
    height, current = image.shape[:2]
    if width is None or width >= current:
        return image, list(artworks)
    factor = width / current
    small = cv2.resize(image, (width, max(1, round(height * factor))),
                       interpolation=cv2.INTER_AREA)
    scaled = [dataclasses.replace(a, quad=np.asarray(a.quad, np.float64) * factor)
              for a in artworks]
    return np.asarray(small), scaled


def check_image_target(path: Path, option: str) -> None:
    """InputError ``cannot write OPTION PATH: ...`` unless an overlay can be written there.

    Checked before the work (so a long batch is not lost at the end): the
    suffix names an image format, no file stands where a folder must be, and
    the folder (created if missing) takes a file.
    """
    if path.is_dir():
        raise InputError(f"cannot write {option} {path}: it is a folder")
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise InputError(f"cannot write {option} {path}: expected a file ending in {_SUFFIXES}, "
                         f"got {path.suffix or 'no extension'!r}")
    check_folder_target(path.parent, option, shown=path)


def check_folder_target(folder: Path, option: str, shown: Path | None = None) -> None:
    """InputError ``cannot write OPTION ...`` unless files can be written in ``folder``
    (created if missing)."""
    shown = shown if shown is not None else folder
    blocking = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise InputError(f"cannot write {option} {shown}: {blocking} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise InputError(f"cannot write {option} {shown}: {exc.strerror or exc}") from None


class OverlayWriter:
    """Keeps the overlay of the latest frame on disk, at most once every ``every_s`` seconds.

    The capture loop calls :meth:`maybe_write` on every frame. A write that
    fails (a full disk, a folder removed) is counted in ``failures`` and logged
    once, and never raised: an overlay is for people, the music goes on
    without it. A success after failures is logged too. With ``width`` the
    frame is first downscaled to that many pixels wide (the console's
    picture); ``jpeg_quality`` applies to .jpg files.
    """

    def __init__(self, path: str | Path, every_s: float = 1.0,
                 titles: Mapping[str, str] | None = None, width: int | None = None,
                 jpeg_quality: int = 90) -> None:
        if not every_s > 0:
            raise InputError(f"overlay every_s: expected a number of seconds > 0, got {every_s}")
        if width is not None and not 16 <= width <= 8192:
            raise InputError(f"overlay width: expected 16..8192 px, got {width}")
        if not 1 <= jpeg_quality <= 100:
            raise InputError(f"overlay jpeg_quality: expected 1..100, got {jpeg_quality}")
        self.path = Path(path)
        self.every_s = float(every_s)
        self.titles = titles
        self.width = width
        self.jpeg_quality = jpeg_quality
        self.written = 0
        self.failures = 0
        self._last: float | None = None
        self._failing = False

    def maybe_write(self, now: float, image: np.ndarray,
                    artworks: Sequence[RecognisedArtwork]) -> bool:
        """Draw and write the overlay if ``every_s`` has passed since the last attempt
        (``now``: seconds on any monotonic clock); whether it was written."""
        if self._last is not None and now - self._last < self.every_s:
            return False
        self._last = now  # a failing disk is tried again every_s later, not every frame
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)  # e.g. output_dir/overlay/
            small, placed = downscale(image, artworks, self.width)
            write_image_atomic(self.path, draw_overlay(small, placed, self.titles),
                               self.jpeg_quality)
        except (InputError, OSError, cv2.error, ValueError) as exc:
            self.failures += 1
            if not self._failing:
                log.warning("cannot write the capture overlay %s (the capture goes on "
                            "without it): %s", self.path, exc)
                self._failing = True
            return False
        if self._failing:
            log.info("capture overlay %s written again after %d failure(s)", self.path,
                     self.failures)
            self._failing = False
        self.written += 1
        return True
