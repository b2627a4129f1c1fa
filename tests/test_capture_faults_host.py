"""The capture loop against a room machine's faults: its wall clock stepped, its camera's odd
frames.

The loop runs over the demo camera on two fake clocks, the wall clock that
stamps what is published and the monotonic one that times everything else;
the camera films on the monotonic one (the room does not jump when the
machine's clock does). Frame sources' own clock steps are in
``test_capture_sources.py``.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from capture.catalogue import Catalogue
from capture.config import CaptureConfig, DemoSourceConfig
from capture.frames import MIN_FRAME_SIDE, Frame, FrameRefused, bgr8
from capture.loop import FAILED_IN_A_ROW, CaptureLoop
from capture.synthetic.artworks import ARTWORK_ASPECTS, make_artwork
from capture.synthetic.camera import DemoCamera
from ground.protocol import ArtworkView

FPS = 15.0
DT = 1.0 / FPS


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Recorder:
    """Collects published views (with the monotonic time each went out) and logged events."""

    def __init__(self, mono: FakeClock) -> None:
        self.mono = mono
        self.views: list[ArtworkView] = []
        self.sent_at: list[float] = []
        self.events: list[tuple[str, dict[str, Any]]] = []

    def publish(self, view: ArtworkView) -> None:
        self.views.append(view)
        self.sent_at.append(self.mono.t)

    def log_event(self, kind: str, **fields: Any) -> None:
        self.events.append((kind, fields))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [fields for k, fields in self.events if k == kind]


Pixels = Callable[[np.ndarray], np.ndarray]


class FilmedRoom:
    """The demo camera on one painting, filming by the monotonic clock; its frames stamped
    by the wall clock, as a real source's are, and passed through ``pixels`` (what the
    camera's driver makes of them)."""

    def __init__(self, wall: FakeClock, mono: FakeClock) -> None:
        self.camera = DemoCamera(DemoSourceConfig(artworks=1, dwell_s=600.0, width=320,
                                                  height=180), clock=mono)
        self.wall = wall
        self.pixels: Pixels | None = None

    def read(self) -> Frame | None:
        frame = self.camera.read()
        image = frame.image if self.pixels is None else self.pixels(frame.image)
        return Frame(image, self.wall(), frame.index)

    def close(self) -> None:
        self.camera.close()


def _room(config: CaptureConfig, catalogue: Catalogue | None = None
          ) -> tuple[CaptureLoop, FilmedRoom, FakeClock, FakeClock, Recorder]:
    wall, mono = FakeClock(1_800_000_000.0), FakeClock(500.0)
    recorder = Recorder(mono)
    room = FilmedRoom(wall, mono)
    loop = CaptureLoop("room-h", config, recorder.publish, recorder.log_event, source=room,
                       clock=wall, monotonic=mono, timer=mono, catalogue=catalogue)
    return loop, room, wall, mono, recorder


def _drive(loop: CaptureLoop, wall: FakeClock, mono: FakeClock, seconds: float) -> None:
    end = mono.t + seconds
    while mono.t < end - 1e-9:
        loop.step()
        wall.t += DT
        mono.t += DT


# -- the wall clock stepped ----------------------------------------------------------------


@pytest.mark.parametrize("step_s", [-600.0, 600.0])
def test_views_keep_their_pace_when_the_wall_clock_steps(step_s: float) -> None:
    # Set back 600 s, the last publication sat 540 s "in the future": no heartbeat went out
    # for ten minutes, and a remote engine timed the view out and played the ambience.
    loop, _, wall, mono, recorder = _room(CaptureConfig(heartbeat_s=1.0, stats_every_s=2.0))
    _drive(loop, wall, mono, 3.0)
    assert recorder.views and recorder.views[-1].state == "artwork"
    before, changes = len(recorder.views), len(recorder.of("artwork_change"))
    stats_before = len(recorder.of("stats"))
    stepped_at = mono.t
    wall.t += step_s
    _drive(loop, wall, mono, 5.0)

    after = recorder.views[before:]
    assert len(after) >= 4  # a heartbeat a second
    gaps = np.diff([recorder.sent_at[before - 1], *recorder.sent_at[before:]])
    assert gaps.max() <= 1.0 + DT + 1e-6
    assert recorder.sent_at[before] - stepped_at <= 1.0
    # what is published carries the wall clock as it now reads
    for view, sent in zip(after, recorder.sent_at[before:], strict=True):
        assert view.time == pytest.approx(sent + (1_800_000_000.0 + step_s - 500.0))
    assert all(v.state == "artwork" and v.artwork_id == after[0].artwork_id for v in after)
    assert len(recorder.of("artwork_change")) == changes  # held: no blip of silence
    stats = recorder.of("stats")[stats_before:]
    assert len(stats) == 2 and all(s["fps"] == pytest.approx(FPS, rel=0.05) for s in stats)


def _one_work_catalogue(folder: Path) -> Catalogue:
    folder.mkdir()
    aspect = ARTWORK_ASPECTS[1]
    size = (round(400 * math.sqrt(aspect)), round(400 / math.sqrt(aspect)))
    cv2.imwrite(str(folder / "work-1.png"), make_artwork(1, 7, size))
    (folder / "catalogue.toml").write_text('[[artwork]]\nfile = "work-1.png"\nid = "W-2"\n')
    return Catalogue.open(folder, folder.parent / "index")


def test_a_shown_work_ends_on_time_when_the_wall_clock_is_set_back(tmp_path: Path) -> None:
    # The showing's end was a wall-clock time: set back ten minutes, a 5 s showing lasted
    # ten minutes and five seconds.
    loop, _, wall, mono, recorder = _room(CaptureConfig(heartbeat_s=1.0),
                                          _one_work_catalogue(tmp_path / "works"))
    _drive(loop, wall, mono, 2.0)
    until = loop.show("W-2", 5.0)
    assert until == pytest.approx(wall.t + 5.0)  # the console is told wall-clock time
    shown_at = mono.t
    _drive(loop, wall, mono, 1.0)
    assert loop.showing == {"artwork_id": "W-2", "until": round(until, 3)}
    wall.t -= 600.0
    _drive(loop, wall, mono, 3.5)
    assert loop.showing is not None
    _drive(loop, wall, mono, 1.0)
    assert loop.showing is None
    assert [e["reason"] for e in recorder.of("showing_ended")] == ["expired"]
    shown = [t for v, t in zip(recorder.views, recorder.sent_at, strict=True)
             if v.artwork_id == "W-2"]
    assert shown[0] == pytest.approx(shown_at) and shown[-1] < shown_at + 5.0
    assert len(shown) >= 5  # re-sent every heartbeat_s across the step
    assert recorder.views[-1].artwork_id != "W-2"  # the camera's view again


# -- frames that are not 3-channel uint8 -----------------------------------------------------


def _bgr(height: int = 20, width: int = 30) -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_bgr8_keeps_a_bgr_frame_as_it_is() -> None:
    image = _bgr()
    assert bgr8(image) is image  # no copy for what almost every camera sends


@pytest.mark.parametrize("layout, make, expected", [
    ("grey", lambda b: b[:, :, 1], lambda b: np.repeat(b[:, :, 1:2], 3, axis=2)),
    ("grey, one plane", lambda b: b[:, :, 1:2], lambda b: np.repeat(b[:, :, 1:2], 3, axis=2)),
    ("BGRA", lambda b: np.dstack([b, np.full(b.shape[:2], 7, np.uint8)]), lambda b: b),
    ("uint16 full range", lambda b: b.astype(np.uint16) * 257, lambda b: b),
    ("uint16 grey", lambda b: b[:, :, 0].astype(np.uint16) * 257,
     lambda b: np.repeat(b[:, :, :1], 3, axis=2)),
    ("float in [0, 1]", lambda b: b.astype(np.float32) / 255.0, lambda b: b),
    ("float BGRA", lambda b: np.dstack([b / 255.0, np.ones(b.shape[:2])]), lambda b: b),
    ("float outside [0, 1]: clipped", lambda b: np.where(b > 128, 3.0, -1.0),
     lambda b: np.where(b > 128, 255, 0).astype(np.uint8)),
])
def test_bgr8_converts_what_cameras_send(layout: str, make: Callable[[np.ndarray], np.ndarray],
                                         expected: Callable[[np.ndarray], np.ndarray]) -> None:
    image = _bgr()
    converted = bgr8(make(image))
    assert converted.dtype == np.uint8 and converted.shape == image.shape, layout
    assert converted.flags.c_contiguous
    assert np.array_equal(converted, expected(image)), layout


@pytest.mark.parametrize("image, says", [
    (np.zeros((0, 0, 3), np.uint8), "expected a frame with pixels, got an empty one "
                                    "(3-channel uint8 0x0)"),
    (np.zeros((720, 0), np.uint8), "got an empty one (1-channel uint8 0x720)"),
    (np.zeros((MIN_FRAME_SIDE - 1, 640, 3), np.uint8),
     f"expected a frame at least {MIN_FRAME_SIDE} px a side, got 3-channel uint8 "
     f"640x{MIN_FRAME_SIDE - 1}"),
    (np.zeros((40, 60, 2), np.uint8), "expected 1, 3 or 4 channels (grey, BGR, BGRA), got "
                                      "shape (40, 60, 2)"),
    (np.zeros(100, np.uint8), "expected 1, 3 or 4 channels"),
    (np.zeros((40, 60, 3), np.int32), "expected uint8, uint16 or float pixels, got 3-channel "
                                      "int32 60x40"),
    (np.full((40, 60, 3), np.nan, np.float32), "expected finite pixel values, got NaN or "
                                               "infinity in a 3-channel float32 60x40 frame"),
    (np.where(np.eye(40, 60)[:, :, None] > 0, np.inf, 0.5), "expected finite pixel values"),
])
def test_bgr8_refuses_what_cannot_be_looked_at(image: np.ndarray, says: str) -> None:
    with pytest.raises(FrameRefused) as refused:
        bgr8(image)
    assert says in str(refused.value)


class _StopAfter(threading.Event):
    """The loop's stop event on the fake clocks: waiting moves them; set after ``waits``."""

    def __init__(self, clocks: tuple[FakeClock, ...], waits: int) -> None:
        super().__init__()
        self.clocks, self.waits, self.waited = clocks, waits, 0

    def is_set(self) -> bool:
        return self.waited >= self.waits

    def wait(self, timeout: float | None = None) -> bool:
        assert timeout is not None
        self.waited += 1
        for clock in self.clocks:
            clock.t += timeout
        return self.is_set()


def test_a_camera_changing_its_frames_keeps_the_capture_running() -> None:
    # Grey (infrared night mode), BGRA, empty or float frames raised in the loop (OpenCV's
    # "bad number of channels", a ZeroDivisionError): 30 in a row and run() raised, the role
    # restarted into the same frames, for ever.
    loop, room, wall, mono, recorder = _room(CaptureConfig(fps=FPS, heartbeat_s=1.0,
                                                           stats_every_s=1.0))
    phases: list[tuple[float, Pixels | None]] = [
        (3.0, None),
        (2.0, lambda b: cv2.cvtColor(b, cv2.COLOR_BGR2GRAY)),
        (2.0, lambda b: cv2.cvtColor(b, cv2.COLOR_BGR2BGRA)),
        (3.0, lambda b: np.zeros((0, 0, 3), np.uint8)),  # a driver's glitch, for 3 s
        (2.0, lambda b: b.astype(np.float32) / 255.0),
        (2.0, lambda b: np.full(b.shape, np.nan, np.float32)),
        (2.0, None),
    ]
    published = []
    for seconds, pixels in phases:
        room.pixels = pixels
        before = len(recorder.views)
        # run() is what the role runs: it raises after FAILED_IN_A_ROW failing frames
        loop.run(_StopAfter((wall, mono), waits=round(seconds * FPS)))
        published.append(recorder.views[before:])
        loop.source = room  # run() closed it: the next phase films again

    assert recorder.of("frame_failed") == []
    assert all(len(views) >= seconds - 1 for views, (seconds, _) in
               zip(published, phases, strict=True))  # heartbeats went on throughout
    # the same painting in colour, BGRA or float: the same work (grey looks otherwise)
    assert {v.artwork_id for k in (0, 2, 3, 4, 5, 6) for v in published[k]} == {"art-001"}
    assert [e["frames"] for e in recorder.of("frame_converted")] == \
        ["1-channel uint8", "4-channel uint8", "3-channel float32"]  # each said once
    refused = recorder.of("frame_refused")
    assert [r["why"].split(",")[0] for r in refused][:1] == ["expected a frame with pixels"]
    assert any(r["why"].startswith("expected finite pixel values") for r in refused)
    assert 5 <= len(refused) <= 7  # about one a second over 5 s of refused frames
    refused_frames = round(5 * FPS)
    stats = recorder.of("stats")
    assert sum(s["refused"] for s in stats) + loop._stats["refused"] == refused_frames
    assert sum(r["refused"] for r in refused) + loop._refused_unsaid == refused_frames
    assert FAILED_IN_A_ROW < refused_frames  # raised, these would have ended run()
