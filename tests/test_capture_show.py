""""Show this work": the capture loop publishes a catalogue work instead of the camera.

The loop runs over the demo camera on a fake clock with a two-work catalogue;
the camera sees the first work, the console asks for the second.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from capture.config import CaptureConfig, DemoSourceConfig, RecognitionConfig
from capture.loop import SHOW_MAX_S, CaptureLoop
from capture.synthetic.artworks import ARTWORK_ASPECTS, make_artwork
from ground.protocol import ArtworkView

FPS = 15.0


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Recorder:
    """Collects published views and logged events."""

    def __init__(self) -> None:
        self.views: list[ArtworkView] = []
        self.events: list[tuple[str, dict[str, Any]]] = []

    def publish(self, view: ArtworkView) -> None:
        self.views.append(view)

    def log_event(self, kind: str, **fields: Any) -> None:
        self.events.append((kind, fields))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [fields for k, fields in self.events if k == kind]


def _drive(loop: CaptureLoop, clock: FakeClock, seconds: float) -> None:
    end = clock.t + seconds
    while clock.t < end:
        loop.step()
        clock.t += 1.0 / FPS


def _catalogue(folder: Path) -> Path:
    """The demo camera's first two paintings, as it paints them: NG-6 (seen) and W-2."""
    folder.mkdir()
    for index in (0, 1):
        aspect = ARTWORK_ASPECTS[index]
        size = (round(400 * math.sqrt(aspect)), round(400 / math.sqrt(aspect)))
        cv2.imwrite(str(folder / f"work-{index}.png"), make_artwork(index, 7, size))
    (folder / "catalogue.toml").write_text(
        '[[artwork]]\nfile = "work-0.png"\nid = "NG-6"\ntitle = "Warm fields"\n'
        '[[artwork]]\nfile = "work-1.png"\nid = "W-2"\ntitle = "Blue hour"\n'
        'artist = "A. Painter"\n')
    return folder


@pytest.fixture(scope="module")
def works(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The catalogue folder, indexed once for the module (the index is cached inside it)."""
    return _catalogue(tmp_path_factory.mktemp("show") / "works")


@pytest.fixture
def room(works: Path, tmp_path: Path) -> tuple[CaptureLoop, FakeClock, Recorder, Path]:
    """A loop whose camera has settled on NG-6."""
    clock = FakeClock()
    config = CaptureConfig(
        demo=DemoSourceConfig(artworks=1, dwell_s=600.0), heartbeat_s=1.0,
        recognition=RecognitionConfig(catalogue=str(works)),
        console_frame=str(tmp_path / "console" / "{room}.jpg"), console_frame_width=320,
        console_frame_every_s=0.5)
    recorder = Recorder()
    # the fake clock is the loop's timer too: the console picture's pace (every 0.5 s) is
    # then counted in the test's own seconds, however fast this machine runs the frames
    loop = CaptureLoop("room-s", config, recorder.publish, recorder.log_event, clock=clock,
                       timer=clock)
    assert loop.wait_for_catalogue(60.0)
    _drive(loop, clock, 3.0)
    assert recorder.views and recorder.views[-1].artwork_id == "NG-6"
    return loop, clock, recorder, tmp_path


def test_a_shown_work_replaces_the_camera_until_its_time_is_up(room: tuple) -> None:
    loop, clock, recorder, _ = room
    camera_view = recorder.views[-1]
    before = len(recorder.views)
    loop.apply_set({"show_artwork": "W-2", "show_for_s": 5.0})
    started = clock.t
    view = loop.step()  # taken at the next frame
    assert view is not None and view.artwork_id == "W-2" and view.state == "artwork"
    assert view.confidence == 1.0 and view.quad is None
    assert view.embedding is not None and view.features and view.encoder == loop.encoder.name
    assert loop.showing == {"artwork_id": "W-2", "until": pytest.approx(started + 5.0)}
    assert recorder.of("showing_started")[0]["artwork_id"] == "W-2"
    clock.t += 1.0 / FPS
    _drive(loop, clock, 4.5)
    shown = recorder.views[before:]
    assert {v.artwork_id for v in shown} == {"W-2"}  # the camera's NG-6 is held back
    assert 4 <= len(shown) <= 6  # re-sent every heartbeat_s, as the camera's view would be
    assert [v.seq for v in shown] == sorted({v.seq for v in shown})  # one sequence, rising
    assert all(v.features == shown[0].features for v in shown)
    _drive(loop, clock, 1.0)  # the time is up: back to the camera at once
    assert loop.showing is None
    after = [v for v in recorder.views[before + len(shown):]]
    assert after and after[0].artwork_id == "NG-6" and after[0].quad is not None
    assert after[0].features == camera_view.features
    assert recorder.of("showing_ended") == [{"artwork_id": "W-2", "reason": "expired"}]
    # the camera's own view did not change meanwhile: no artwork_change event for it
    assert [c["artwork_id"] for c in recorder.of("artwork_change")] == ["NG-6"]


def test_show_for_0_ends_it_and_long_requests_are_capped(room: tuple) -> None:
    loop, clock, recorder, _ = room
    loop.apply_set({"show_artwork": "NG-6", "show_for_s": 10 * SHOW_MAX_S})
    view = loop.step()
    assert view is not None and view.artwork_id == "NG-6" and view.confidence == 1.0
    assert loop.showing is not None
    assert loop.showing["until"] == pytest.approx(clock.t + SHOW_MAX_S)
    clock.t += 1.0 / FPS
    loop.apply_set({"show_for_s": 0})
    back = loop.step()
    assert back is not None and back.artwork_id == "NG-6" and back.quad is not None
    assert loop.showing is None
    assert recorder.of("showing_ended")[-1]["reason"] == "stopped"
    loop.apply_set({"show_for_s": 0.0})  # nothing shown: nothing to end, nothing refused
    loop.step()
    assert loop.refused_controls == {} and len(recorder.of("showing_ended")) == 1


@pytest.mark.parametrize(("params", "field", "says"), [
    ({"show_artwork": "nope", "show_for_s": 10.0}, "show_artwork", "'nope' is not in the cat"),
    ({"show_artwork": "W-2", "show_for_s": float("nan")}, "show_for_s", "nan"),
    ({"show_artwork": "W-2", "show_for_s": float("inf")}, "show_for_s", "inf"),
    ({"show_artwork": "W-2", "show_for_s": -1.0}, "show_for_s", "-1.0"),
    ({"show_artwork": "W-2", "show_for_s": "ten"}, "show_for_s", "'ten'"),
    ({"show_for_s": 10.0}, "show_artwork", "expected a catalogue id, got None"),
])
def test_requests_that_cannot_be_followed_are_refused_and_counted(
        room: tuple, params: dict[str, Any], field: str, says: str) -> None:
    loop, clock, recorder, _ = room
    loop.apply_set(params)
    loop.apply_set(params)
    _drive(loop, clock, 1.5)
    assert loop.refused_controls == {field: 2}
    refused = recorder.of("control_refused")
    assert len(refused) == 2 and refused[0]["name"] == field and says in refused[0]["error"]
    assert loop.showing is None and recorder.views[-1].artwork_id == "NG-6"


def test_a_room_without_a_catalogue_refuses_to_show(tmp_path: Path) -> None:
    recorder = Recorder()
    loop = CaptureLoop("room-n", CaptureConfig(), recorder.publish, recorder.log_event,
                       clock=FakeClock())
    loop.apply_set({"show_artwork": "NG-6", "show_for_s": 5.0})
    assert loop.refused_controls == {"show_artwork": 1}
    assert "room room-n has no catalogue" in recorder.of("control_refused")[0]["error"]
    loop.apply_set({"volume": 0.3})  # not capture's: ignored, not refused
    assert loop.refused_controls == {"show_artwork": 1}


def test_the_console_frame_is_written_at_its_width(room: tuple) -> None:
    loop, _, _, folder = room
    assert loop.console_frame is not None and loop.console_frame.written >= 2
    picture = cv2.imread(str(folder / "console" / "room-s.jpg"))
    assert picture is not None and picture.shape[1] == 320
    assert loop.console_frame.titles == {"NG-6": "Warm fields", "W-2": "Blue hour"}
    # the camera's painting is outlined in the "known" green
    green = (picture[:, :, 1].astype(int) > 150) & (picture[:, :, 0].astype(int) < 110) \
        & (picture[:, :, 2].astype(int) < 110)
    assert np.count_nonzero(green) > 50
