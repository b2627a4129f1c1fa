"""``art2mus index DIR``: build a catalogue's index ahead of time, with a progress bar.

Where it sits: the roof, beside :mod:`capture.cli`. A capture role opens its
catalogue with :meth:`capture.catalogue.Catalogue.open`, which rebuilds the
index whenever the folder changed; for a museum of thousands of works that
takes minutes, so a technician runs this command first (after adding works)
and the capture starts on a current cache instead of blocking on indexing.

It builds the index (or confirms the cached one is current: the folder's
fingerprint, :func:`capture.catalogue.folder_fingerprint`, matches the one
stored in the index file, and the whole file loads as the capture loads it, every
member's CRC checked) on one core, as the capture role would, with a rich
progress bar on stderr (works done / total, rate, time left), then prints a
summary: works, features, the index file and its size, seconds. Only the works
added or changed since the cached index are indexed (a corrected title, or a few new
works among thousands, takes seconds). ``--force`` deletes the cached index and
rebuilds every work. An index that does not load (a bad sector, a copy cut short) is
rebuilt, and the summary says so and why: else the capture would find it damaged and
re-index the whole catalogue at its start, recognising nothing meanwhile.

Input errors (no folder, no images, an empty, truncated or undecodable image,
a bad ``catalogue.toml``) are one :class:`~ground.errors.InputError` line
naming the file, before any work is indexed.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import click

from ground.cli_report import progress_bar as shared_progress_bar
from ground.errors import InputError


@click.command("index")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Write the index here instead of into the catalogue folder (which may be "
                   "read-only); give the capture the same [recognition] cache_dir.")
@click.option("--force", is_flag=True, help="Rebuild even when the cached index is current.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def index_command(folder: Path, cache_dir: Path | None, force: bool, as_json: bool) -> None:
    """Build (or confirm up to date) the recognition index of a catalogue folder."""
    from capture.catalogue import SMALL_REFERENCE, listed

    summary = build_index(folder, cache_dir, force=force, show_progress=True)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    state = "rebuilt" if summary["rebuilt"] else "up to date"
    click.echo(f"catalogue {summary['folder']}: index {state}")
    if summary["damaged"]:
        click.echo(f"  warning   the index was damaged ({summary['damaged']}): "
                   f"{'rebuilt' if summary['rebuilt'] else 'rebuilt by another process'}")
    click.echo(f"  works     {summary['works']}")
    if summary["rebuilt"] and summary["reused"]:
        click.echo(f"  indexed   {summary['works'] - summary['reused']} new or changed "
                   f"({summary['reused']} unchanged, taken from the index before)")
    click.echo(f"  features  {summary['features']} ({summary['square_features']} ORB for "
               f"recognition, {summary['native_features']} SIFT for location)")
    click.echo(f"  index     {summary['index_file']} ({summary['index_mb']:.1f} MB)")
    click.echo(f"  seconds   {summary['seconds']:.1f}")
    for first, second in summary["twins"]:
        click.echo(f"  warning   {first} and {second} show the same picture: a view of it may "
                   f"be named either (remove one, or keep both if both records are wanted)")
    for file in summary["plain"]:
        click.echo(f"  warning   {file} is plain (no detail, too few features): views of it "
                   f"will not be named (replace it with a photo of the work)")
    if small := summary["small"]:  # a collection of thumbnails: one line, not thousands
        click.echo(f"  warning   {len(small)} reference image{'s' * (len(small) > 1)} under "
                   f"{SMALL_REFERENCE} px on the long side (views may go unnamed, corners "
                   f"rough; use bigger images of the works): {listed(small)}")


def build_index(folder: Path, cache_dir: Path | None = None, *, force: bool = False,
                show_progress: bool = False) -> dict[str, Any]:
    """Build the index of ``folder`` (or confirm the cached one is current); a summary dict.

    The summary: ``folder``, ``index_file``, ``rebuilt`` (False: the cache was
    current and nothing was built), ``damaged`` (why the cached index, its fingerprint
    current, did not load, so that it was rebuilt; None where it loaded or was stale
    or missing), ``reused`` (works of a rebuilt index taken unchanged
    from the index before: their images were not touched), ``works``, ``square_features`` (ORB),
    ``native_features`` (SIFT), ``features`` (both), ``twins``, ``plain``, ``small``
    (:func:`index_counts`), ``index_mb``, ``seconds``.
    """
    import cv2

    from capture.catalogue import (
        INDEX_FILE,
        catalogue_images,
        current_index,
        folder_fingerprint,
        images_to_index,
    )

    began = time.perf_counter()
    if not folder.exists():
        raise InputError(f"catalogue {folder}: expected a folder of reference images, "
                         f"it does not exist")
    if not folder.is_dir():
        raise InputError(f"catalogue {folder}: expected a folder of reference images, got a file")
    if cache_dir is not None and cache_dir.exists() and not cache_dir.is_dir():
        raise InputError(f"--cache-dir {cache_dir}: expected a folder, got a file")
    cache = (cache_dir if cache_dir is not None else folder) / INDEX_FILE
    if force:
        try:
            cache.unlink(missing_ok=True)
        except OSError as error:
            raise InputError(f"cannot delete the cached index {cache}: "
                             f"{error.strerror or error}") from None
    fingerprint = folder_fingerprint(folder)
    current = _cached_fingerprint(cache) == fingerprint
    # current by its fingerprint, and it loads whole as the capture will load it
    damaged = _damage(cache, fingerprint) if current else None
    rebuilt = not current or damaged is not None
    reused = 0
    if rebuilt:
        # (a damaged index may give none of its works to the rebuild: every image is read)
        _check_images(folder, catalogue_images(folder) if damaged is not None
                      else images_to_index(folder, cache))
        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)  # one core, as the capture role indexes
        try:
            with progress_bar(show_progress) as update:
                stage = f"indexing {folder.name or folder}"
                opened = current_index(
                    folder, cache_dir, progress=None if update is None else
                    lambda done, total: update(stage, done, total),
                    waiting=lambda: click.echo(
                        f"another process (a room's capture?) is building the index {cache}; "
                        f"waiting for it", err=True))
            # (not rebuilt where another process, a room's capture, built it meanwhile)
            rebuilt, reused = opened.rebuilt, opened.reused
        finally:
            cv2.setNumThreads(threads)
        fingerprint = folder_fingerprint(folder)
        if _cached_fingerprint(cache) != fingerprint or (  # (a damaged one left as it was)
                damaged is not None and _damage(cache, fingerprint) is not None):
            raise InputError(f"cannot write the index {cache} (is the folder writable?); "
                             f"pass --cache-dir")
    return {"folder": str(folder), "index_file": str(cache), "rebuilt": rebuilt,
            "damaged": damaged, "reused": reused,
            **index_counts(cache), "index_mb": round(cache.stat().st_size / 1e6, 2),
            "seconds": round(time.perf_counter() - began, 2)}


def index_counts(cache: Path) -> dict[str, Any]:
    """Works and features (ORB; SIFT, frontal and of the simulated views; both) held by
    the index file ``cache``, its ``twins`` (reference files showing the same picture) and
    its ``plain`` reference files (nothing to recognise a view of them by) and its ``small``
    ones (under :data:`~capture.catalogue.SMALL_REFERENCE` px on their long side)."""
    import numpy as np

    from capture.catalogue import SIMULATED_VIEWS

    with np.load(cache, allow_pickle=False) as data:
        entries = json.loads(str(data["entries"]))
        square = int(data["square_owner"].shape[0])
        native = sum(int(data[f"{part}_owner"].shape[0])
                     for part in ("native", *SIMULATED_VIEWS))
        pairs = data["twins"] if "twins" in data.files else np.zeros((0, 2), np.int32)
        plain = data["plain"] if "plain" in data.files else np.zeros(0, np.int32)
        small = data["small"] if "small" in data.files else np.zeros(0, np.int32)
    twins = [[entries[int(a)]["file"], entries[int(b)]["file"]] for a, b in pairs]
    return {"works": len(entries), "square_features": square, "native_features": native,
            "features": square + native, "twins": twins,
            "plain": [entries[int(k)]["file"] for k in plain],
            "small": [entries[int(k)]["file"] for k in small]}


def _cached_fingerprint(cache: Path) -> str | None:
    """The folder fingerprint stored in the index file, or None (no file, or unreadable)."""
    import numpy as np

    from capture.catalogue import UNREADABLE_INDEX

    if not cache.is_file():
        return None
    try:
        # our own handle: numpy leaves its file open where the index is no zip file
        with cache.open("rb") as handle, np.load(handle, allow_pickle=False) as data:
            return str(data["fingerprint"])
    except UNREADABLE_INDEX:
        return None


def _damage(cache: Path, fingerprint: str) -> str | None:
    """Why the index file ``cache``, its stored fingerprint ``fingerprint`` (the folder's:
    current), does not load as the capture loads it (the whole file, every member's CRC
    checked: :func:`capture.catalogue._load_cache`); None where it loads.

    A member is checked against its CRC only when read whole, so the fingerprint alone
    (all that says whether the index is current) passes an index with a bad sector in
    its features; the capture would then find it damaged and re-index at its start.
    """
    from capture.catalogue import _load_cache
    from capture.catalogue import log as catalogue_log

    def quiet(record: logging.LogRecord) -> bool:
        return False  # its "unreadable; rebuilding it": the summary says why, once

    catalogue_log.addFilter(quiet)
    try:
        if _load_cache(cache, fingerprint) is not None:
            return None
    finally:
        catalogue_log.removeFilter(quiet)
    if _cached_fingerprint(cache) != fingerprint:
        return None  # replaced meanwhile (a room's capture rebuilt it): not damaged
    return _why_unreadable(cache)


def _why_unreadable(cache: Path) -> str:
    """The first error reading the zip archive ``cache`` member by member (``Bad CRC-32
    for file 'tilted_desc.npy'``), for the message; ``unreadable`` where each member
    reads (what did not load was then in the arrays themselves)."""
    import zipfile

    from capture.catalogue import UNREADABLE_INDEX

    try:
        with zipfile.ZipFile(cache) as archive:
            for info in archive.infolist():
                with archive.open(info) as member:
                    while member.read(1 << 20):
                        pass
    except UNREADABLE_INDEX as error:
        return str(error) or type(error).__name__
    return "unreadable"


def _check_images(folder: Path, names: list[str]) -> None:
    """Read the reference images ``names`` (those to be indexed) as every command reads one
    (:func:`capture.images.read_image`): an empty, truncated or undecodable file is an
    error naming it, before minutes of work. (OpenCV alone reads a JPEG cut short as grey
    rows and says so only on stderr.) Every such file is named in the one error line
    (:func:`capture.catalogue.listed`), so that a big export is mended in one pass, not one
    file per run. Decoding twice costs a few ms per work, a few percent of the build."""
    from capture.catalogue import listed
    from capture.images import read_image

    refused: list[tuple[Path, InputError]] = []
    # The images the catalogue reads, no others (:func:`capture.catalogue.catalogue_images`):
    # a hidden file (macOS's ``._NAME.jpg`` beside each image copied to a shared drive) is
    # not a reference, and one in a sub-folder is.
    for name in names:
        path = folder / name
        try:
            read_image(path, at_least=1)  # a JPEG at an eighth: whether it decodes
        except InputError as error:
            refused.append((path, error))
    if len(refused) == 1:
        raise refused[0][1]  # its error names the file
    if refused:
        def why(path: Path, error: InputError) -> str:
            reason = str(error).removeprefix(f"cannot read image {path}: ")
            return f"{path.relative_to(folder).as_posix()} ({reason})"

        raise InputError(f"catalogue {folder}: {len(refused)} reference images cannot be "
                         f"read: {listed([why(path, error) for path, error in refused])}")


def progress_bar(enabled: bool = True, *, unit: str = "works"
                 ) -> AbstractContextManager[Callable[[str, int, int], None] | None]:
    """The shared rich progress bar (:func:`ground.cli_report.progress_bar`), shown
    whenever ``enabled`` (``art2mus index --no-progress`` turns it off): yields
    ``update(stage, done, total)``, or ``None`` when disabled. Used by ``art2mus index``
    and ``art2mus bench catalogue``; the bar appears with the first update, so a folder
    refused before any work prints its error line alone.
    """
    return shared_progress_bar(enabled, unit=unit)
