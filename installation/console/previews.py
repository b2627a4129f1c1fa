"""The console's catalogue: each room's works, their thumbnails, and previews of their music.

- The works come from the room's ``[rooms.capture.recognition] catalogue``
  folder (its images and ``catalogue.toml``, read as the capture role reads
  them, without building the recognition index), re-read when the folder
  changes (:func:`capture.catalogue.folder_fingerprint`).
- An artwork id from a request is looked up in that list before anything
  touches a path: the files served or rendered are the catalogue's own
  reference images and the console's cache, never a path from the request.
- Thumbnails: the reference image scaled (OpenCV) to at most
  :data:`THUMB_PX` on its long side, JPEG, kept in memory.
- Previews: ``python -m installation render REF_IMAGE --seconds 20 --out
  CACHE.wav --config CONFIG --room ROOM`` in a subprocess (an argument list,
  never a shell), one at a time, at most :data:`RENDER_TIMEOUT_S`, at low
  CPU priority; cached as ``OUTPUT/console/previews/ROOM/ID-HASH.wav`` where
  the hash covers the room's seed, the engine config, the work's reference
  image (its path in the folder, size and modification time, as the catalogue's
  index keys a work) and the art2mus version, so a new seed or generator, a
  work's image replaced under the same id, or an upgraded composer renders
  again (and a previews folder copied from another install is not trusted).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ground.errors import Art2MusError, InputError
from installation.config import InstallationConfig

if TYPE_CHECKING:
    from capture.catalogue import CatalogueEntry

#: Long side of a thumbnail, px.
THUMB_PX = 160
#: Length of a preview, seconds.
PREVIEW_S = 20
#: A render taking longer than this is killed and reported as failed.
RENDER_TIMEOUT_S = 120.0
#: Thumbnails kept in memory (a few kB each).
MAX_THUMBS = 1024
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
#: Previews kept per work: the newest few settings or images (the original image put back
#: plays from its cache), the older ones removed after each render; a room left for months
#: with its catalogue edited and art2mus upgraded kept every one (3.8 MB each).
PREVIEWS_KEPT_PER_WORK = 3


class NotInCatalogue(LookupError):
    """A room without a catalogue, or an artwork id not in the room's catalogue."""


@dataclass
class _Shelf:
    """One room's catalogue as last read: its folder, fingerprint and entries by id."""

    folder: Path
    fingerprint: str
    entries: dict[str, CatalogueEntry]


@dataclass
class PreviewJob:
    """One preview: where its WAV goes and how its render went."""

    path: Path
    state: str = "rendering"  # "rendering" | "ready" | "failed"
    error: str = ""


class CatalogueShelves:
    """Every room's catalogue, thumbnails and previews (thread-safe; methods may block)."""

    def __init__(self, config: InstallationConfig, output_dir: Path,
                 render_config: Path | None) -> None:
        self.config = config
        self.cache_dir = output_dir / "console" / "previews"
        self.render_config = render_config
        self._lock = threading.Lock()
        self._shelves: dict[str, _Shelf] = {}
        self._thumbs: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._jobs: dict[tuple[str, str], PreviewJob] = {}
        self._render_lock = threading.Lock()  # one render at a time

    # -- the works --------------------------------------------------------------

    def folder(self, room: str) -> Path:
        """Room ``room``'s catalogue folder; NotInCatalogue when the room has none."""
        rooms = [r.id for r in self.config.rooms]
        if room not in rooms:
            raise NotInCatalogue(f"unknown room {room!r}; rooms are {rooms}")
        catalogue = self.config.room(room).capture.recognition.catalogue
        if not catalogue:
            raise NotInCatalogue(f"room {room} has no catalogue "
                                 "([rooms.capture.recognition] catalogue)")
        return Path(catalogue)

    def works(self, room: str) -> dict[str, CatalogueEntry]:
        """Room ``room``'s works by id, re-read when the folder changed."""
        from capture.catalogue import folder_fingerprint, read_entries

        folder = self.folder(room)
        try:
            fingerprint = folder_fingerprint(folder)
        except OSError as exc:
            raise NotInCatalogue(f"room {room}: cannot read catalogue {folder}: {exc}") from None
        with self._lock:
            shelf = self._shelves.get(room)
        if shelf is None or shelf.fingerprint != fingerprint:
            try:
                entries = {e.artwork_id: e for e in read_entries(folder)}
            except (Art2MusError, OSError) as exc:
                raise NotInCatalogue(f"room {room}: catalogue {folder}: {exc}") from None
            shelf = _Shelf(folder, fingerprint, entries)
            with self._lock:
                self._shelves[room] = shelf
                for key in [k for k in self._thumbs if k[0] == room]:
                    del self._thumbs[key]
        return shelf.entries

    def known(self, room: str) -> dict[str, CatalogueEntry]:
        """The works last read for ``room`` (never touches the disk; {} before the first read)."""
        with self._lock:
            shelf = self._shelves.get(room)
        return shelf.entries if shelf is not None else {}

    def entry(self, room: str, artwork_id: str) -> tuple[Path, CatalogueEntry]:
        """(folder, entry) of ``artwork_id`` in ``room``'s catalogue; NotInCatalogue otherwise."""
        works = self.works(room)
        entry = works.get(artwork_id)
        if entry is None:
            raise NotInCatalogue(f"artwork {artwork_id[:80]!r} is not in room {room}'s catalogue")
        return self.folder(room), entry

    def listing(self, room: str, url_id: Any) -> list[dict[str, Any]]:
        """The works of ``room`` for GET /api/catalogue (``url_id`` quotes an id for a URL)."""
        return [{"id": e.artwork_id, "title": e.title, "artist": e.artist, "year": e.year,
                 "thumb": f"/api/catalogue/{room}/{url_id(e.artwork_id)}/thumb.jpg"}
                for e in self.works(room).values()]

    # -- thumbnails -------------------------------------------------------------

    def thumbnail(self, room: str, artwork_id: str) -> bytes:
        """A JPEG of the work at most THUMB_PX on its long side (cached)."""
        folder, entry = self.entry(room, artwork_id)
        key = (room, artwork_id)
        with self._lock:
            cached = self._thumbs.get(key)
            if cached is not None:
                self._thumbs.move_to_end(key)
                return cached
        import cv2

        from capture.images import read_image

        try:  # a big scan is decoded at a fraction of its size: a thumbnail is 160 px
            image = read_image(folder / entry.file, at_least=2 * THUMB_PX)
        except InputError:
            raise NotInCatalogue(f"cannot read the reference image of {artwork_id!r} "
                                 f"({entry.file})") from None
        height, width = image.shape[:2]
        scale = min(1.0, THUMB_PX / max(height, width))
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
        if not ok:
            raise NotInCatalogue(f"cannot encode a thumbnail of {artwork_id!r}")
        data = encoded.tobytes()
        with self._lock:
            self._thumbs[key] = data
            while len(self._thumbs) > MAX_THUMBS:
                self._thumbs.popitem(last=False)
        return data

    # -- previews ---------------------------------------------------------------

    def preview_path(self, room: str, artwork_id: str) -> Path:
        """Where the preview of ``artwork_id`` (validated) with the room's current settings goes."""
        catalogue, entry = self.entry(room, artwork_id)
        settings = {"seed": self.config.room(room).seed, "id": artwork_id,
                    "engine": self.config.engine.model_dump(mode="json"),
                    "seconds": PREVIEW_S,
                    # the painting, not only its id: a work's image replaced under the same
                    # id is another painting, with other music
                    "reference": _reference_key(catalogue, entry.file, artwork_id),
                    # the composer: an upgrade may change the music of every work
                    "version": art2mus_version()}
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
        name = f"{_SAFE.sub('_', artwork_id)[:64]}-{digest}.wav"
        folder = self.cache_dir / _SAFE.sub("_", room)
        return folder / name

    def preview(self, room: str, artwork_id: str, start: bool) -> PreviewJob:
        """The preview's job; with ``start``, a render is begun when there is none yet.

        Returns at once: the render runs in a thread of its own (one at a time).
        """
        path = self.preview_path(room, artwork_id)
        key = (room, artwork_id)
        with self._lock:
            job = self._jobs.get(key)
            if job is not None and job.path == path and (
                    job.state == "rendering" or (job.state == "ready" and path.is_file())
                    or (job.state == "failed" and not start)):
                return job
            if path.is_file():
                job = self._jobs[key] = PreviewJob(path, "ready")
                return job
            if not start:  # (a job for other settings, or another image, is not this one)
                return job if job is not None and job.path == path else PreviewJob(
                    path, "missing")
            job = self._jobs[key] = PreviewJob(path)
        folder, entry = self.entry(room, artwork_id)
        threading.Thread(target=self._render, args=(job, folder / entry.file, room),
                         name="console-preview", daemon=True).start()
        return job

    def _render(self, job: PreviewJob, image: Path, room: str) -> None:
        """Run one render subprocess (waiting for any other to finish first)."""
        with self._render_lock:
            job.path.parent.mkdir(parents=True, exist_ok=True)
            partial = job.path.with_name(job.path.stem + ".part.wav")
            argv = [sys.executable, "-m", "installation", "render", str(image),
                    "--seconds", str(PREVIEW_S), "--out", str(partial)]
            if self.render_config is not None:  # the room's seed, catalogue and engine
                argv += ["--config", str(self.render_config), "--room", room]
            try:
                process = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            except OSError as exc:
                job.state, job.error = "failed", f"cannot start the render: {exc}"
                return
            try:
                os.setpriority(os.PRIO_PROCESS, process.pid, 15)  # the live rooms come first
            except OSError:
                pass  # already gone, or not allowed: it renders at normal priority
            try:
                _, stderr = process.communicate(timeout=RENDER_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                job.state = "failed"
                job.error = f"the render took longer than {RENDER_TIMEOUT_S:g} s and was stopped"
                partial.unlink(missing_ok=True)
                return
            if process.returncode != 0 or not partial.is_file():
                lines = [line for line in stderr.decode("utf-8", "replace").splitlines()
                         if line.strip()]
                job.state = "failed"
                job.error = (f"render exited with code {process.returncode}: "
                             + (lines[-1][:300] if lines else "no message"))
                partial.unlink(missing_ok=True)
                return
            os.replace(partial, job.path)
            job.state = "ready"
            prune_previews(job.path, PREVIEWS_KEPT_PER_WORK)


def prune_previews(newest: Path, keep: int) -> list[Path]:
    """Remove all but the ``keep`` newest previews of ``newest``'s work in its folder (the
    files named ``ID-DIGEST.wav`` as :meth:`CatalogueShelves.preview_path` names them;
    ``newest`` always stays); the paths removed."""
    artwork, _, _ = newest.stem.rpartition("-")
    mine = re.compile(re.escape(artwork) + r"-[0-9a-f]{16}\.wav")
    try:
        found = [p for p in newest.parent.iterdir() if mine.fullmatch(p.name) and p != newest]
        found.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return []  # a folder or a file gone meanwhile: nothing to tidy now
    removed = []
    for old in found[max(keep - 1, 0):]:
        try:
            old.unlink()
        except OSError:
            continue
        removed.append(old)
    return removed


def _reference_key(folder: Path, file: str, artwork_id: str) -> str:
    """A work's reference image as the catalogue's index keys it
    (:func:`capture.catalogue.folder_fingerprint`): its path in the folder, size and
    modification time; NotInCatalogue where it cannot be looked at."""
    try:
        stat = (folder / file).stat()
    except OSError as exc:
        raise NotInCatalogue(f"cannot read the reference image of {artwork_id[:80]!r} "
                             f"({file}): {exc.strerror or exc}") from None
    return f"{file}\0{stat.st_size}\0{stat.st_mtime_ns}"


@functools.cache
def art2mus_version() -> str:
    """The installed art2mus's version (its package metadata), part of a preview's cache
    key; ``"unknown"`` for a checkout run without being installed (its previews are then
    keyed by seed, settings and image alone)."""
    try:
        return importlib.metadata.version("art2mus")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
