"""``art2mus bench live --photos DIR``: the capture loop, as a room runs it, on real photos.

Where it sits: ``bench capture --photos`` scores stills (every quad, every id);
``bench tracking --photos`` the tracker alone. This runs the whole
:class:`capture.loop.CaptureLoop` (quad finder, stability tracker, catalogue
location and search, recognition, tracking, primary choice) over a camera
that turns from one real photo to the next and dwells on each
(:class:`PhotoWalk`: a hand-held drift of a few pixels, a slow zoom of a few
per cent, sensor noise), and scores what a room would play: per photo, the
first work the loop publishes, whether the catalogue named one of the works
the truth lists in it, how many seconds of camera time that took, and how
often the published work changed while the camera stayed.

Time is the camera's: the loop is stepped once per frame at ``fps`` on a
clock that advances by a frame each step, so a slow step does not drop
frames here (a live room sheds frames instead: ``capture_fps``). What each
step cost on this machine (one core), less making the frame, is reported
beside it.

A published id is ``right`` when it is a work the truth lists in the photo
(wholly in view or cut by its edge), ``unverifiable`` when the published
quad lies on a painting the truth outlines without an id
(``other_paintings``: some are catalogue works its matcher missed), else a
``false id``. A work the catalogue does not name (an id of its own) is
``missed`` on a work the truth names, ``unnamed`` on a painting the truth
outlines without an id (a work outside the catalogue, or one it missed), else
``not a painting`` (a caption card, a patch of wall or floor: what a room with
every work in its catalogue would rather ignore); a missed work the loop names a
little later, when it looks at its place again, is counted as such too, with
how long the music not its own played.
"""

from __future__ import annotations

import itertools
import json
import math
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy as np

from capture.calibrate_cli import read_lens_file
from capture.degrade import DEGRADATIONS, degrade, hidden
from capture.frames import Frame
from ground.cli_report import ProgressUpdate
from ground.cli_types import SEED, FiniteFloat
from ground.errors import InputError

if TYPE_CHECKING:
    from capture.config import LensConfig

FRAME_WIDTH = 1280
_DRIFT_PX = 12.0  # the hand-held camera's wander, frame px
_ZOOM = 0.03  # ...and its slow zoom, +- of the frame
_GRAIN_FIELDS = 7  # sensor noise fields the walk cycles through (a new one each frame)


class PhotoWalk:
    """A camera that dwells ``frames_per_photo`` frames on each of ``images`` in turn (BGR,
    all one size), drifting a little, at ``clock``'s time; what it saw when is kept in
    :attr:`moves` (frame number -> photo index and the photo-to-frame homography)."""

    def __init__(self, images: list[np.ndarray], frames_per_photo: int, clock: Any,
                 seed: int = 0, noise: float = 2.0) -> None:
        self.images = images
        self.frames_per_photo = frames_per_photo
        self.clock = clock
        self.noise = noise
        self.rng = np.random.default_rng([seed, 0x1A1C])
        self.count = 0
        self.moves: list[tuple[int, np.ndarray]] = []
        self.grain: list[np.ndarray] = []  # a few noise fields, drawn once, taken in turn
        self.read_s = 0.0  # what the last read cost (the camera, not the loop)

    @property
    def total(self) -> int:
        """Frames in the walk."""
        return len(self.images) * self.frames_per_photo

    def read(self) -> Frame | None:
        """The next frame, or None once every photo was seen."""
        import cv2

        began = time.perf_counter()
        if self.count >= self.total:
            return None
        photo, t = divmod(self.count, self.frames_per_photo)
        image = self.images[photo]
        height, width = image.shape[:2]
        angle = 2 * math.pi * t / max(self.frames_per_photo, 1)
        dx, dy = _DRIFT_PX * math.sin(angle + photo), 0.6 * _DRIFT_PX * math.sin(1.7 * angle)
        zoom = 1.0 + _ZOOM * (1 + math.sin(0.5 * angle + 2 * photo)) / 2  # never shows an edge
        centre = np.array([width / 2, height / 2])
        move = np.array([[zoom, 0, (1 - zoom) * centre[0] + dx],
                         [0, zoom, (1 - zoom) * centre[1] + dy], [0, 0, 1]])
        frame = cv2.warpPerspective(image, move, (width, height), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REFLECT)
        if self.noise > 0:
            if len(self.grain) < _GRAIN_FIELDS:
                self.grain.append(np.round(self.rng.standard_normal(
                    frame.shape, dtype=np.float32) * self.noise).astype(np.int16))
            frame = cv2.add(frame, self.grain[self.count % _GRAIN_FIELDS], dtype=cv2.CV_8U)
        self.moves.append((photo, move))
        self.count += 1
        self.read_s = time.perf_counter() - began
        return Frame(frame, self.clock(), self.count)

    def close(self) -> None:
        """Nothing to release."""


class _Clock:
    """Camera time: moved by a frame per step."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def run_live_photos(photos: Path, catalogue: Path | None = None, dwell_s: float = 4.0,
                    fps: float = 15.0, seed: int = 0,
                    progress: ProgressUpdate | None = None,
                    degradation: str | None = None,
                    rehang: Path | None = None,
                    cache_dir: Path | None = None,
                    lens: LensConfig | None = None) -> dict[str, Any]:
    """Run the capture loop over the photos of ``photos/truth.json`` (see the module
    docstring) with ``catalogue`` (default ``photos/catalogue``), ``dwell_s`` seconds of
    camera time on each photo at ``fps``; the JSON-ready result. ``progress("frames",
    done, total)`` every frame when given. ``degradation`` (one of
    :data:`capture.degrade.DEGRADATIONS`): each photo as a worse camera gives it, every
    frame of the dwell (seeded by the photo's place), the truth moved with its pixels.
    ``rehang``: a catalogue folder of other works hung in the photos' pictures
    (:func:`capture.rehang.rehang`, ordered by ``seed``), which the room then knows as
    its catalogue. ``cache_dir``: where the catalogue's index is kept (default: a
    temporary folder, built afresh each run). ``lens``: the camera's (``art2mus
    calibrate``), the room's ``[capture.lens]``: the loop takes it out of every frame, and
    the quads it publishes are moved back to the frame as taken to be scored. (The
    camera's drift moves the photo, the degradation's lens with it: its few pixels and
    per cent leave the bow where the calibration has it to within a pixel or so.)"""
    import cv2

    from capture.bench import _check_lens, _resized, catalogue_ids, read_photo_set
    from capture.config import CaptureConfig, RecognitionConfig
    from capture.lens import Lens
    from capture.loop import CaptureLoop

    if not (math.isfinite(dwell_s) and 1.0 <= dwell_s <= 60.0):
        raise InputError(f"--dwell: expected 1 to 60 seconds, got {dwell_s}")
    if not (math.isfinite(fps) and 1.0 <= fps <= 60.0):
        raise InputError(f"--fps: expected 1 to 60 frames a second, got {fps}")
    if degradation is not None and degradation not in DEGRADATIONS:
        raise InputError(f"--degrade: expected one of {', '.join(DEGRADATIONS)}, "
                         f"got {degradation!r}")
    folder = catalogue if catalogue is not None else photos / "catalogue"
    loaded = read_photo_set(photos, catalogue_ids(folder), "--photos")
    if rehang is not None:
        from capture.rehang import rehang as hang_other_works

        loaded = hang_other_works(loaded, folder, rehang, seed)
        folder = rehang
    images, scaled = [], []
    for truth, image in loaded:
        frame = _resized(image, FRAME_WIDTH)
        images.append(frame)
        scaled.append(truth.scaled(frame.shape[1] / image.shape[1],
                                   frame.shape[0] / image.shape[0]))
    if len({i.shape for i in images}) > 1:
        # One camera, one frame size: photos of other aspects are fitted to the first's.
        height = images[0].shape[0]
        for k, image in enumerate(images):
            if image.shape[0] != height:
                factor = height / image.shape[0]
                images[k] = cv2.resize(image, (FRAME_WIDTH, height), interpolation=cv2.INTER_AREA
                                       if factor < 1 else cv2.INTER_LINEAR)  # as _resized
                scaled[k] = scaled[k].scaled(1.0, factor)
    if degradation is not None:
        for k, image in enumerate(images):
            images[k], move = degrade(image, degradation, seed=k)
            scaled[k] = scaled[k].warped(move, (image.shape[1], image.shape[0]),
                                         hidden(image.shape, degradation, seed=k))
    camera = Lens(lens) if lens is not None else None
    _check_lens(camera, images[0], "the frames")
    frames_per_photo = max(1, round(dwell_s * fps))
    clock = _Clock()
    start = clock.t  # camera time of the first frame
    walk = PhotoWalk(images, frames_per_photo, clock, seed)
    events: list[tuple[str, dict[str, Any]]] = []
    views: list[Any] = []
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        with tempfile.TemporaryDirectory(prefix="art2mus-live-bench-") as cache:
            config = CaptureConfig(fps=fps, lens=lens, recognition=RecognitionConfig(
                catalogue=str(folder), cache_dir=str(cache_dir) if cache_dir else cache))
            loop = CaptureLoop("bench", config, views.append,
                               lambda kind, **fields: events.append((kind, fields)),
                               source=walk, clock=clock)
            if not loop.wait_for_catalogue(600.0) or loop.catalogue is None:
                failed = [f for k, f in events if k == "catalogue_failed"]
                raise InputError(f"catalogue {folder}: not opened"
                                 + (f": {failed[0]['error']}" if failed else ""))
            step_ms: list[float] = []
            for done in range(walk.total):
                began = time.perf_counter()
                loop.step()
                step_ms.append(1000 * (time.perf_counter() - began - walk.read_s))
                clock.t += 1.0 / fps
                if progress is not None:
                    progress("frames", done + 1, walk.total)
    finally:
        cv2.setNumThreads(threads)
    changes = [f for kind, f in events if kind == "artwork_change"]
    for change in changes:  # the published view of each change carries its quad
        quad = next((v.quad for v in views if v.time == change["time"]
                     and v.artwork_id == change["artwork_id"]), None)
        if quad is not None and camera is not None:  # back to the frame as the camera took it
            quad = camera.to_camera(np.asarray(quad, np.float64),
                                    (images[0].shape[1], images[0].shape[0])).tolist()
        change["quad"] = quad
    rows = []
    playing: dict[str, Any] | None = None  # the work published last, before this photo
    for k, truth in enumerate(scaled):
        begins, ends = start + k * frames_per_photo / fps, start + (k + 1) * frames_per_photo / fps
        here = [c for c in changes if begins - 1e-6 <= c["time"] < ends - 1e-6]
        works = [c for c in here if c["state"] == "artwork"]
        row: dict[str, Any] = {
            "name": truth.name, "works": sorted(w.artwork_id for w in truth.paintings),
            "changes": len(here),
            "published": [{"artwork_id": c["artwork_id"], "catalogued": c["catalogued"],
                           "after_s": round(c["time"] - begins, 2),
                           "outcome": _outcome(c, truth, walk, fps, start)}
                          for c in works],
        }
        first = row["published"][0] if row["published"] else None
        row["first_after_s"] = first["after_s"] if first else None
        if first is not None:
            row["outcome"] = first["outcome"]
        elif playing is None or playing["state"] != "artwork":
            row["outcome"] = "nothing"
        else:  # the camera turned, and the work playing is one of these, or is not
            then = _outcome(playing, truth, walk, fps, start, at=begins)
            row["outcome"] = "kept" if then == "right" else f"stale ({then})"
        playing = here[-1] if here else playing
        rows.append(row)
    # a work first missed (an id of its own) and named in the same photo a little later:
    # how long the music not its own played
    named_after = [later["after_s"] - p["after_s"] for r in rows
                   for p, later in itertools.pairwise(r["published"])
                   if p["outcome"] == "missed" and later["outcome"] == "right"]
    right = [r for r in rows if r["outcome"] == "right"]
    kept = [r for r in rows if r["outcome"] == "kept"]
    with_works = [r for r in rows if r["works"]]
    outcomes = [p["outcome"] for r in rows for p in r["published"]]
    return {
        "benchmark": "capture-live-photos", "photos": str(photos), "catalogue": str(folder),
        "photo_count": len(rows), "frame": [images[0].shape[1], images[0].shape[0]],
        "dwell_s": dwell_s, "fps": fps, "seed": seed, "threads": 1,
        "degradation": degradation, "lens": None if lens is None else lens.model_dump(),
        "rehung": None if rehang is None else {"works": str(rehang), "seed": seed},
        "photos_with_works": len(with_works),
        "first_right": len(right), "kept": len(kept),
        "stale": sum(r["outcome"].startswith("stale") for r in rows),
        "first_right_after_s_median": round(float(np.median([r["first_after_s"]
                                                             for r in right])), 2)
        if right else None,
        "first_right_after_s_max": round(float(max(r["first_after_s"] for r in right)), 2)
        if right else None,
        "false_ids": outcomes.count("false id"),
        "unverifiable": outcomes.count("unverifiable"),
        "unnamed": outcomes.count("unnamed"), "missed": outcomes.count("missed"),
        "not_a_painting": outcomes.count("not a painting"),
        "missed_then_named": len(named_after),
        "missed_then_named_after_s_max": round(max(named_after), 2) if named_after else None,
        "changes_per_photo": round(float(np.mean([r["changes"] for r in rows])), 2),
        "step_ms_median": round(float(np.median(step_ms)), 1),
        "step_ms_p95": round(float(np.percentile(step_ms, 95)), 1),
        "step_ms_max": round(float(max(step_ms)), 1),
        "per_photo": rows,
    }


def _outcome(change: dict[str, Any], truth: Any, walk: PhotoWalk, fps: float, start: float,
             at: float | None = None) -> str:
    """What a published work was in a photo (see the module docstring): right,
    unverifiable, false id, missed or unnamed; its quad as the camera saw it at ``at``
    (default: when it was published)."""
    listed = {w.artwork_id for w in (*truth.paintings, *truth.partial)}
    if change["catalogued"] and change["artwork_id"] in listed:
        return "right"
    on_photo = _on_photo(change, walk, fps, start, at, truth.view)
    if not change["catalogued"]:
        # An id of its own on a work the truth names: the catalogue missed it.
        named = on_photo is not None and any(
            _inside(on_photo, w.quad) for w in (*truth.paintings, *truth.partial))
        if named:
            return "missed"
        # a painting the truth outlines without an id (outside the catalogue, or one its
        # matcher missed), or something else that plays: a caption card, wall, floor
        painting = on_photo is not None and any(_inside(on_photo, o) for o in truth.others)
        return "unnamed" if painting else "not a painting"
    if on_photo is not None and any(_inside(on_photo, o) for o in truth.others):
        return "unverifiable"
    return "false id"


def _on_photo(change: dict[str, Any], walk: PhotoWalk, fps: float, start: float,
              at: float | None, view: np.ndarray | None = None) -> np.ndarray | None:
    """Where a published view's quad lies on the photo (the camera's drift taken out): the
    centre of its part on the photo's own pixels (``view``, where a degradation moved
    them; else the photo), as the stills bench judges a find (a work the photo's border
    cuts is located whole, and the centre of the whole may lie off the photo). None where
    the view carries no quad."""
    import cv2

    from capture.bench import _visible_centre

    quad = change.get("quad")
    if quad is None:
        return None
    when = change["time"] if at is None else at
    frame_index = min(round((when - start) * fps), len(walk.moves) - 1)
    _, move = walk.moves[frame_index]
    corners = np.asarray(quad, np.float64).reshape(-1, 1, 2)
    on_photo = cv2.perspectiveTransform(corners, np.linalg.inv(move)).reshape(-1, 2)
    height, width = walk.images[0].shape[:2]
    return _visible_centre(on_photo.astype(np.float32), (width, height), view)


def _inside(point: np.ndarray, outline: np.ndarray) -> bool:
    import cv2

    return cv2.pointPolygonTest(np.asarray(outline, np.float32).reshape(-1, 1, 2),
                                (float(point[0]), float(point[1])), False) >= 0


@click.command("live")
@click.option("--photos", type=click.Path(path_type=Path), required=True,
              help="A folder of photos with truth.json (and catalogue/).")
@click.option("--catalogue", "catalogue_dir", type=click.Path(path_type=Path), default=None,
              help="The reference images [default: PHOTOS/catalogue].")
@click.option("--dwell", "dwell_s", type=FiniteFloat(1.0, 60.0), default=4.0,
              show_default=True, help="Seconds of camera time on each photo (1 to 60).")
@click.option("--fps", type=FiniteFloat(1.0, 60.0), default=15.0, show_default=True,
              help="Camera frames a second (1 to 60).")
@click.option("--seed", type=SEED, default=0, show_default=True,
              help="The camera's drift and noise (and with --rehang, which works hang where).")
@click.option("--rehang", type=click.Path(path_type=Path), default=None,
              help="A folder of other works (a catalogue), each hung in a photo's picture in "
                   "its place and light, the room's catalogue then (capture/rehang.py).")
@click.option("--degrade", "degradation", type=click.Choice(DEGRADATIONS), default=None,
              help="Take each photo as a worse camera would (capture/degrade.py).")
@click.option("--lens", "lens_path", type=click.Path(path_type=Path), default=None,
              help="The camera's lens (a [capture.lens] .toml from art2mus calibrate), as the "
                   "room's config gives it.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def bench_live_command(photos: Path, catalogue_dir: Path | None, dwell_s: float, fps: float,
                       seed: int, rehang: Path | None, degradation: str | None,
                       lens_path: Path | None, as_json: bool) -> None:
    """The capture loop on real photos, as a room runs it: what it plays, how soon."""
    from ground.cli_report import progress_bar

    if catalogue_dir is not None and not catalogue_dir.is_dir():
        raise InputError(f"--catalogue: expected a folder of reference images, got "
                         f"{'a file' if catalogue_dir.exists() else 'nothing'} at "
                         f"{catalogue_dir}")
    if rehang is not None and not rehang.is_dir():
        raise InputError(f"--rehang: expected a folder of reference images, got "
                         f"{'a file' if rehang.exists() else 'nothing'} at {rehang}")
    lens = read_lens_file(lens_path) if lens_path is not None else None
    with progress_bar(unit="frames") as progress:
        result = run_live_photos(photos, catalogue_dir, dwell_s, fps, seed, progress,
                                 degradation, rehang, lens=lens)
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    _print_live(result)


def _print_live(result: dict[str, Any]) -> None:
    """:func:`run_live_photos`' result as tables: per photo, then over all."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"art2mus bench live --photos {result['photos']}: the capture loop, "
                        f"{result['dwell_s']} s on each photo at {result['fps']} fps, "
                        f"{result['frame'][0]}x{result['frame'][1]}, one core"
                        + (f", degraded: {result['degradation']}"
                           if result.get("degradation") else "")
                        + (", through its calibrated lens" if result.get("lens") else "")
                        + (f", {result['rehung']['works']} hung in its pictures"
                           if result.get("rehung") else ""))
    for column in ("photo", "works in it", "published (after s)", "first", "changes"):
        table.add_column(column, overflow="fold")
    for row in result["per_photo"]:
        published = ", ".join(f"{p['artwork_id']}{'' if p['catalogued'] else ' (own id)'} "
                              f"({p['after_s']})" for p in row["published"]) or "-"
        table.add_row(row["name"], " ".join(row["works"]) or "-", published, row["outcome"],
                      str(row["changes"]))
    console = Console()
    console.print(table)
    summary = Table(title="over all photos")
    summary.add_column("measure")
    summary.add_column("value", justify="right")
    summary.add_row("photos whose first published work is one of its works, named",
                    f"{result['first_right']} of {result['photos_with_works']}")
    summary.add_row("...or where the work playing before the camera turned is one of them",
                    f"{result['kept']} (and {result['stale']} where it is not)")
    summary.add_row("camera seconds to it, median / max",
                    f"{result['first_right_after_s_median']} / "
                    f"{result['first_right_after_s_max']}")
    summary.add_row("false ids / unverifiable",
                    f"{result['false_ids']} / {result['unverifiable']}")
    summary.add_row("an id of its own: on a work the truth names (missed) / on another "
                    "painting / on no painting",
                    f"{result['missed']} / {result['unnamed']} / {result['not_a_painting']}")
    if result["missed_then_named"]:
        summary.add_row("...missed, then named in the same photo (its id played at most, s)",
                        f"{result['missed_then_named']} "
                        f"({result['missed_then_named_after_s_max']})")
    summary.add_row("published changes per photo (1: no flicker)",
                    str(result["changes_per_photo"]))
    summary.add_row("ms per step on this machine, median / p95 / max",
                    f"{result['step_ms_median']} / {result['step_ms_p95']} / "
                    f"{result['step_ms_max']}")
    console.print(summary)
