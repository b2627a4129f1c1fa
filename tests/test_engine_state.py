"""A restarted engine resumes each room's artwork: the saved state follows every view.

The engine runs in-process on real ZeroMQ sockets (ipc://, one folder per
engine: a closed engine's ports are freed asynchronously), driven turn by turn
(:meth:`EngineServer.turn`) under a fake clock; the test plays capture,
re-sending the same painting once a second as capture does. "Killing" the
engine is closing its sockets without the final save a clean stop makes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
import zmq

from engine.config import EngineRoleConfig
from engine.generators.base import RoomControls
from engine.server import EngineServer, RoomSubscriptions
from ground.events import MemorySink
from ground.protocol import PROTOCOL_VERSION, ArtworkView, AudioChunk, PlaybackClock, encode
from ground.transport import decode, send
from installation.config import config_from_dict
from installation.roles import engine_role_config

VIEW_TIMEOUT_S = 30.0


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t




def _config(folder: Path) -> EngineRoleConfig:
    folder.mkdir(parents=True, exist_ok=True)
    return engine_role_config(config_from_dict({
        "network": {name: f"ipc://{folder}/{name}" for name in ("views", "chunks", "clock",
                                                                 "control")},
        "engine": {"generator": "sine", "view_timeout_s": VIEW_TIMEOUT_S},
        "rooms": [{"id": "a"}, {"id": "b"}],
    }))


def _view(seq: int, at: float) -> ArtworkView:
    return ArtworkView(v=PROTOCOL_VERSION, room="a", seq=seq, time=at, state="artwork",
                       artwork_id="sunflowers", confidence=0.9, features={"brightness": 0.7})


@pytest.fixture
def context() -> Any:
    context = zmq.Context()
    yield context
    context.destroy(linger=0)  # closes what a failed test left open, so term() cannot hang


def _play_capture(context: zmq.Context, server: EngineServer, clock: FakeClock,
                  seconds: int) -> None:
    """Capture's view of room "a" once a (fake) second, each one taken by the engine."""
    capture = context.socket(zmq.XPUB)  # like capture's PUB; it sees the engine subscribe
    capture.setsockopt(zmq.SNDHWM, 0)
    capture.connect(server.config.network.views)
    try:
        # the engine's SUB sends its subscription from its own thread: let it turn
        for _ in range(1000):
            if capture.poll(10):
                break
            server.turn(poll_ms=10)
        assert capture.recv() == b"\x01", "the engine's views socket never subscribed"
        began = clock.t
        for second in range(seconds + 1):
            clock.t = began + second
            capture.send_multipart(encode(_view(second + 1, clock.t)))
            for _ in range(100):
                if server.sessions["a"].latest_view.seq == second + 1:
                    break
                server.turn(poll_ms=1000)
            assert server.sessions["a"].latest_view.seq == second + 1
    finally:
        capture.close(linger=0)


def test_a_painting_seen_unchanged_for_longer_than_the_view_timeout_is_restored(
    tmp_path: Path, context: zmq.Context,
) -> None:
    clock = FakeClock(1000.0)
    state = tmp_path / "engine-state.json"
    first = EngineServer(_config(tmp_path / "1"), MemorySink(), context=context, state_path=state,
                         clock=clock)
    # The same painting for 100 s, well past the 30 s view timeout, then kill -9.
    _play_capture(context, first, clock, seconds=100)
    first.close()  # no final save: a killed engine makes none
    saved = json.loads(state.read_text())
    assert set(saved) == {"a"}  # room "b" never had a view
    assert 1100.0 - saved["a"]["last_view_at"] <= VIEW_TIMEOUT_S / 4 + 1

    clock.t += 3.0  # the supervisor restarts it
    events = MemorySink()
    second = EngineServer(_config(tmp_path / "2"), events, context=context, state_path=state,
                          clock=clock)
    try:
        assert second.sessions["a"].view.artwork_id == "sunflowers"
        restored = events.of("room_restored")
        assert [r["artwork_id"] for r in restored] == ["sunflowers"]
        assert 3.0 <= restored[0]["age_s"] <= 3.0 + VIEW_TIMEOUT_S / 4 + 1
        assert second.sessions["b"].view.state == "empty"
    finally:
        second.close()


def test_a_state_file_that_cannot_be_written_leaves_the_music_playing(
    tmp_path: Path, context: zmq.Context,
) -> None:
    # A full disk (or a folder gone) made every save raise out of the engine's turn:
    # the engine crash-looped while the disk stayed full. Here the folder is a file.
    clock = FakeClock(1000.0)
    blocked = tmp_path / "run"
    blocked.write_text("not a folder")
    state = blocked / "engine-state.json"
    server = EngineServer(_config(tmp_path / "1"), MemorySink(), context=context,
                          state_path=state, clock=clock)
    try:
        _play_capture(context, server, clock, seconds=3)
        assert server.sessions["a"].view.artwork_id == "sunflowers"
        assert list(server.status()["write_errors"]) == [str(state)]
        assert not list(tmp_path.glob("**/*.tmp"))
        blocked.unlink()  # the operator makes room: the next save works and says so
        blocked.mkdir()
        _play_capture(context, server, clock, seconds=2)
        assert server.status()["write_errors"] == {}
        assert set(json.loads(state.read_text())) == {"a"}
    finally:
        server.close()


class TwoClocks:
    """A wall clock and a monotonic one that tests move together (``t``), then apart."""

    def __init__(self, wall: float, monotonic: float) -> None:
        self.wall, self.monotonic = FakeClock(wall), FakeClock(monotonic)

    @property
    def t(self) -> float:
        return self.wall.t

    @t.setter
    def t(self, value: float) -> None:
        step = value - self.wall.t
        self.wall.t += step
        self.monotonic.t += step


def test_a_wall_clock_set_back_neither_freezes_the_knobs_nor_ages_the_saved_view(
    tmp_path: Path, context: zmq.Context,
) -> None:
    # NTP sets the engine machine's clock back ten minutes: a knob turned then re-planned
    # the music ten minutes later (now - last re-plan was negative), and a step forward
    # timed out the painting in view. The rooms measure on the monotonic clock; the state
    # file keeps wall time, which outlives a reboot.
    clocks = TwoClocks(1_000_000.0, 50.0)
    state = tmp_path / "engine-state.json"
    events = MemorySink()
    server = EngineServer(_config(tmp_path / "1"), events, context=context, state_path=state,
                          clock=clocks.wall, monotonic=clocks.monotonic)
    try:
        _play_capture(context, server, clocks, seconds=3)  # type: ignore[arg-type]
        room = server.sessions["a"]
        room.set_controls({"intensity": 0.9})
        room.tick()
        clocks.wall.t -= 600.0
        room.set_controls({"intensity": 0.2})
        clocks.monotonic.t += 0.5
        room.tick()
        assert [e["controls"]["intensity"] for e in events.of("replanned")] == [0.9, 0.2]
        clocks.wall.t += 1200.0  # and ten minutes ahead: still the painting
        room.tick()
        assert room.view.artwork_id == "sunflowers" and not events.of("view_timeout")
        server._save_state()
        saved = json.loads(state.read_text())["a"]
        assert abs(saved["last_view_at"] - (clocks.wall.t - 0.5)) < 1e-6
    finally:
        server.close()


def test_a_room_whose_capture_fell_silent_is_not_restored(
    tmp_path: Path, context: zmq.Context,
) -> None:
    clock = FakeClock(5000.0)
    state = tmp_path / "engine-state.json"
    first = EngineServer(_config(tmp_path / "1"), MemorySink(), context=context, state_path=state,
                         clock=clock)
    _play_capture(context, first, clock, seconds=10)
    first.close()
    clock.t += VIEW_TIMEOUT_S + 1  # capture silent longer than the view timeout
    events = MemorySink()
    second = EngineServer(_config(tmp_path / "2"), events, context=context, state_path=state,
                          clock=clock)
    try:
        assert second.sessions["a"].view.state == "empty"  # the ambience is right
        assert events.of("room_restored") == []
        assert [e["room"] for e in events.of("state_too_old")] == ["a"]
    finally:
        second.close()


def test_a_corrupt_state_file_is_reported_and_ignored(
    tmp_path: Path, context: zmq.Context,
) -> None:
    state = tmp_path / "engine-state.json"
    shown = msgspec.json.encode(_view(1, 1.0)).decode()
    nan_time = ('{"a": {"shown": ' + shown
                + ', "controls": {}, "last_view_at": NaN, "saved_at": 1}}')
    nan_control = ('{"a": {"shown": ' + shown
                   + ', "controls": {"intensity": NaN}, "last_view_at": 9, "saved_at": 9}}')
    for index, text in enumerate(("[1, 2]", '{"a": {"shown": 3}}', nan_time, nan_control, "{")):
        state.write_text(text)
        events = MemorySink()
        server = EngineServer(_config(tmp_path / str(index)), events, context=context,
                              state_path=state, clock=FakeClock(10.0))
        server.close()
        assert len(events.of("state_unreadable")) == 1, text
        assert events.of("room_restored") == []


def test_a_state_file_from_before_the_tonic_was_renamed_still_loads(
    tmp_path: Path, context: zmq.Context,
) -> None:
    # the previous engine saved the tonic as "key" (RoomControls.saved() names fields)
    state = tmp_path / "engine-state.json"
    shown = json.loads(msgspec.json.encode(_view(1, 99.0)))
    old = {"intensity": 0.7, "brightness": 0.5, "tempo_bias": 0.0, "tempo_bpm": 0.0, "key": 2,
           "mode": 3, "transition_s": None, "freeze": False, "variation": 1}
    state.write_text(json.dumps({"a": {"view": shown, "shown": shown, "last_view_at": 99.0,
                                       "saved_at": 99.0, "controls": old}}))
    events = MemorySink()
    server = EngineServer(_config(tmp_path / "1"), events, context=context, state_path=state,
                          clock=FakeClock(100.0))
    try:
        assert events.of("state_unreadable") == []
        assert [r["artwork_id"] for r in events.of("room_restored")] == ["sunflowers"]
        controls = server.sessions["a"].controls
        assert (controls.tonic, controls.mode, controls.intensity, controls.variation) == (
            2, 3, 0.7, 1)
    finally:
        server.close()
    # what this engine saves names the tonic, and reads back the same
    saved = controls.saved()
    assert "key" not in saved and saved["tonic"] == 2
    assert RoomControls.from_saved(saved) == controls
    with pytest.raises(TypeError, match="loudness"):  # anything else unknown is still refused
        RoomControls.from_saved({**saved, "loudness": 1.0})


def test_subscriptions_take_only_configured_rooms_and_count_the_rest() -> None:
    """The chunks XPUB is in manual mode: every peer's (un)subscription comes up, so a room
    two peers listen to is listened to until both have gone; refused topics peers still
    hold are counted (what ZeroMQ files for them)."""
    subscriptions = RoomSubscriptions(["a", "b"])
    frames = [b"\x01a", b"\x01a", b"\x01zz", b"\x01" + b"a" * 65, b"\x02junk", b"",
              b"\x01\xff\xfe", b"\x01", b"\x00a", b"\x00b", b"\x01b", b"\x00zz", b"\x00a"]
    changes = [subscriptions.frame(frame) for frame in frames]
    assert changes == [("a", True, True), ("a", True, False), None, None, None, None, None,
                       ("", True, True), ("a", False, False), ("b", False, False),
                       ("b", True, True), None, ("a", False, True)]
    assert subscriptions.topics == {"", "b"}
    assert dict(subscriptions.dropped.by_reason) == {
        "unknown-room": 3, "too-long": 1, "bad-subscription": 2}
    assert (subscriptions.held, subscriptions.held_bytes) == (2, 65 + 2)  # "a"*65, b"\xff\xfe"


def _first_chunk(context: zmq.Context, server: EngineServer, clock: FakeClock) -> Any:
    """Play audio_out for room "a" (subscribe, report its clock) until a chunk comes."""
    listener = context.socket(zmq.SUB)
    listener.setsockopt(zmq.SUBSCRIBE, b"a")
    listener.connect(server.config.network.chunks)
    reports = context.socket(zmq.PUSH)
    reports.connect(server.config.network.clock)
    try:
        send(reports, PlaybackClock(v=PROTOCOL_VERSION, room="a",
                                    sample_rate=server.generator.sample_rate, playhead=0,
                                    buffered_until=0, wall_time=clock.t, state="playing"))
        for _ in range(500):  # the sockets connect in their own threads: let the engine turn
            server.turn(poll_ms=10)
            if listener.poll(0):
                return decode(listener.recv_multipart())
        return None
    finally:
        listener.close(linger=0)
        reports.close(linger=0)


def _saved_room(room: str = "a", **controls: Any) -> dict[str, Any]:
    """One room's entry as an engine saves it (a view seen a second before now: 10.0)."""
    shown = json.loads(msgspec.json.encode(msgspec.structs.replace(_view(1, 9.0), room=room)))
    return {"view": shown, "shown": shown, "last_view_at": 9.0, "saved_at": 9.0,
            "controls": {**RoomControls().saved(), **controls}}


def _with_controls(**controls: Any) -> str:
    return json.dumps({"a": _saved_room(**controls)})


#: What the audit left in engine-state.json (a hand edit, a disk fault, a restored
#: backup); each made every restart of the engine exit 1, restarted for ever, or
#: crashed it on its first turn.
BAD_STATE_FILES = {
    "tonic as a string": _with_controls(tonic="C"),
    "intensity as a string": _with_controls(intensity="loud"),
    "variation beyond float range": _with_controls(variation=10**400),
    "controls as a list": json.dumps({"a": {**_saved_room(), "controls": [1, 2]}}),
    "view time beyond float range": _with_controls().replace(
        '"last_view_at": 9.0', '"last_view_at": 1' + "0" * 400),
    "nested 100k deep": "[" * 100_000,
    "truncated": _with_controls()[:500],
    "empty": "",
}


@pytest.mark.parametrize("text", list(BAD_STATE_FILES.values()), ids=list(BAD_STATE_FILES))
def test_a_bad_state_file_leaves_the_room_playing_from_a_fresh_state_and_is_set_aside(
    tmp_path: Path, context: zmq.Context, text: str,
) -> None:
    state = tmp_path / "engine-state.json"
    bad = tmp_path / "engine-state.json.bad"
    bad.write_text("an older refused file")  # replaced by this one
    state.write_text(text)
    events = MemorySink()
    clock = FakeClock(10.0)
    server = EngineServer(_config(tmp_path / "1"), events, context=context, state_path=state,
                          clock=clock)
    try:
        refused = events.of("state_unreadable")
        assert len(refused) == 1 and refused[0]["path"] == str(state)
        assert refused[0].get("room", "a") == "a" and refused[0]["error"]
        assert events.of("room_restored") == []
        room = server.sessions["a"]
        assert room.view.state == "empty" and room.controls == RoomControls()
        # set aside, said once: the next restart does not read it again
        assert not state.exists() and bad.read_text() == text
        assert [e["bad"] for e in events.of("state_set_aside")] == [str(bad)]
        # and it plays: audio_out gets the fresh room's music
        assert isinstance(_first_chunk(context, server, clock), AudioChunk)
    finally:
        server.close()
    again = MemorySink()
    server = EngineServer(_config(tmp_path / "2"), again, context=context, state_path=state,
                          clock=FakeClock(11.0))
    server.close()
    assert again.of("state_unreadable") == [] and again.of("state_set_aside") == []


def test_a_bad_room_in_the_state_file_leaves_the_other_rooms_restored(
    tmp_path: Path, context: zmq.Context,
) -> None:
    state = tmp_path / "engine-state.json"
    text = json.dumps({"a": _saved_room("a", intensity=0.8), "b": _saved_room("b", tonic="C")})
    state.write_text(text)
    events = MemorySink()
    server = EngineServer(_config(tmp_path / "1"), events, context=context, state_path=state,
                          clock=FakeClock(10.0))
    try:
        assert [e["room"] for e in events.of("state_unreadable")] == ["b"]
        assert "tonic" in events.of("state_unreadable")[0]["error"]
        assert [e["room"] for e in events.of("room_restored")] == ["a"]
        assert server.sessions["a"].controls.intensity == 0.8
        assert server.sessions["b"].view.state == "empty"
        assert server.sessions["b"].controls == RoomControls()
        assert (tmp_path / "engine-state.json.bad").read_text() == text
        # the room taken back is saved again at once, without the refused one
        assert set(json.loads(state.read_text())) == {"a"}
    finally:
        server.close()


def test_saved_controls_out_of_range_are_clamped_as_a_live_value_is(
    tmp_path: Path, context: zmq.Context,
) -> None:
    state = tmp_path / "engine-state.json"
    state.write_text(_with_controls(tempo_bpm=1e9, mode=99, tonic=-7, intensity=5.0,
                                    transition_s=-100.0, variation=1e300))
    events = MemorySink()
    server = EngineServer(_config(tmp_path / "1"), events, context=context, state_path=state,
                          clock=FakeClock(10.0))
    try:
        assert events.of("state_unreadable") == []
        assert [r["artwork_id"] for r in events.of("room_restored")] == ["sunflowers"]
        controls = server.sessions["a"].controls
        assert (controls.tempo_bpm, controls.mode, controls.tonic, controls.intensity,
                controls.transition_s, controls.variation) == (300.0, 5, -1, 1.0, 0.0, 10**9)
        server._save_state()  # and written back clamped
        assert json.loads(state.read_text())["a"]["controls"] == controls.saved()
    finally:
        server.close()


def test_a_saved_sync_grid_is_dropped_and_the_room_restored(
    tmp_path: Path, context: zmq.Context,
) -> None:
    # the grid comes from the live sync source, never from a file (one holding it as an
    # object raised AttributeError out of every restart)
    state = tmp_path / "engine-state.json"
    state.write_text(_with_controls(sync={"phase": 0, "beats": 4, "bpm": 0}, intensity=0.8))
    events = MemorySink()
    clock = FakeClock(10.0)
    server = EngineServer(_config(tmp_path / "1"), events, context=context, state_path=state,
                          clock=clock)
    try:
        assert events.of("state_unreadable") == []
        assert [r["artwork_id"] for r in events.of("room_restored")] == ["sunflowers"]
        controls = server.sessions["a"].controls
        assert controls.sync is None and controls.intensity == 0.8
        assert isinstance(_first_chunk(context, server, clock), AudioChunk)
    finally:
        server.close()


def test_saved_controls_are_checked_as_live_values_are() -> None:
    assert RoomControls.from_saved({"tonic": 2.0, "freeze": 1, "transition_s": None}) == \
        RoomControls(tonic=2, freeze=True, transition_s=None)
    assert RoomControls.from_saved({"sync": {"phase": 0}}) == RoomControls()  # never from a file
    for value in ("C", float("nan"), float("inf"), None, [2], 10**400, True):
        with pytest.raises(ValueError, match=r"controls\.tonic: parameter tonic: expected"):
            RoomControls.from_saved({"tonic": value})
    with pytest.raises(ValueError, match="expected an object of parameters, got list"):
        RoomControls.from_saved([1, 2])
