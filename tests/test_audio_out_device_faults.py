"""A sound device that goes away mid-run or will not start: the music's clock goes on.

A stand-in sounddevice module whose streams call back only when a test says
so (:meth:`FakeStream.play`), so losing a device is a test step rather than
a race: the :class:`~audio_out.outputs.FailoverOutput` watch is driven by
:meth:`~audio_out.outputs.FailoverOutput.check` on the test's own clock with
an :class:`~audio_out.outputs.ArrayOutput` standing in for the null sink,
and two tests run the production wiring (:func:`open_output`, the watch
thread, the real null sink) and wait on events, never on a sleep.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import soundfile
from polling import wait_until

from audio_out import outputs
from audio_out.config import AudioOutConfig
from audio_out.outputs import ArrayOutput, FailoverOutput, NullOutput, SoundDeviceOutput
from audio_out.player import Player
from ground.errors import ConfigError
from ground.events import MemorySink
from ground.protocol import PROTOCOL_VERSION, Array, AudioChunk
from installation.status import role_problems, room_summary

SR = 16000
BLOCK = 256


class PortAudioError(Exception):
    """sounddevice's error type, for the stand-in."""


class FakeStream:
    """An output stream that calls back only from :meth:`play`; ``vanish`` ends it."""

    def __init__(self, sd: FakeSoundDevice, kwargs: dict[str, Any]) -> None:
        self.sd = sd
        self.callback = kwargs["callback"]
        self.channels = kwargs["channels"]
        self.blocksize = kwargs["blocksize"]
        self.device = kwargs["device"] or 0
        self.latency = 0.02
        self.active = False
        self.closed = False
        self.aborted = False

    def start(self) -> None:
        if self.sd.start_error:
            raise PortAudioError(self.sd.start_error)
        self.active = True

    def stop(self) -> None:
        self.active = False

    def abort(self) -> None:
        self.aborted = True
        self.active = False

    def close(self) -> None:
        self.closed = True

    def play(self, blocks: int) -> np.ndarray:
        """Run ``blocks`` callbacks, as PortAudio's thread would; returns what they wrote."""
        out = np.full((blocks * self.blocksize, self.channels), 9.0, np.float32)
        for i in range(blocks):
            self.callback(out[i * self.blocksize:(i + 1) * self.blocksize], self.blocksize,
                          None, SimpleNamespace(output_underflow=False))
        return out


class FakeSoundDevice:
    """The parts of the sounddevice module the outputs use, with one USB card."""

    PortAudioError = PortAudioError

    def __init__(self, start_error: str | None = None) -> None:
        self.start_error = start_error
        self.streams: list[FakeStream] = []
        self.reinitialised = 0
        self.default = SimpleNamespace(device=(0, 0))
        self.plugged = [{"name": "Fake USB Audio", "max_output_channels": 2}]
        self.listed = list(self.plugged)  # what PortAudio saw when it last initialised

    def query_devices(self, index: int | None = None) -> Any:
        return self.listed if index is None else self.listed[index]

    def OutputStream(self, **kwargs: Any) -> FakeStream:  # noqa: N802 - mirrors sounddevice
        stream = FakeStream(self, kwargs)
        self.streams.append(stream)
        return stream

    def _terminate(self) -> None:
        self.reinitialised += 1

    def _initialize(self) -> None:
        self.listed = list(self.plugged)


BUSY = ("Error starting stream: Unanticipated host error [PaErrorCode -9999]: "
        "'Device or resource busy'")


def tone(n: int) -> np.ndarray:
    x = (0.3 * np.sin(2 * np.pi * 220 * np.arange(n) / SR)).astype(np.float32)
    return np.stack([x, x], axis=1)


def chunk(audio: np.ndarray) -> AudioChunk:
    return AudioChunk(v=PROTOCOL_VERSION, room="r1", seq=0, start_sample=0, sample_rate=SR,
                      audio=Array.from_numpy(audio), reason="start")


def config(tmp_path: Path, output: str = "auto") -> AudioOutConfig:
    # without the DC blocker: the card's blocks are compared with the tone, sample for sample
    return AudioOutConfig(output=output, sample_rate=SR, block_size=BLOCK,  # type: ignore[arg-type]
                          record=str(tmp_path / "take.wav"), stop_fade_s=0.0, fade_in_s=0.0,
                          dc_block_hz=0.0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def failover_player(tmp_path: Path, sd: FakeSoundDevice, events: MemorySink, clock: Clock,
                    output: str = "auto") -> Player:
    """A Player on a FailoverOutput watched by hand, an ArrayOutput for its null sink."""
    def factory(cfg: AudioOutConfig, sr: int, ch: int, fill: Any, log: Any) -> FailoverOutput:
        device = SoundDeviceOutput(cfg, sr, ch, fill, sd=sd)
        return FailoverOutput(cfg, sr, ch, fill, log, device, null=ArrayOutput(sr, ch, BLOCK, fill),
                              clock=clock, watch_s=None, retry_s=5.0)

    return Player("r1", config(tmp_path, output), 2, events, output_factory=factory)


def test_a_device_that_stops_calling_back_hands_the_take_to_the_null_sink_and_comes_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sd, events, clock = FakeSoundDevice(), MemorySink(), Clock()
    player = failover_player(tmp_path, sd, events, clock)
    player.start()
    failover = player.output
    assert isinstance(failover, FailoverOutput)
    assert failover.lost_after_s == 0.5  # four 16 ms blocks would be too eager
    player.submit(chunk(tone(3 * SR)))
    first = sd.streams[0]
    played = [first.play(20)]
    clock.now = 0.3
    failover.check()
    assert player.output_status()["state"] == "ok"

    # Unplugged: no more callbacks, though PortAudio still calls the stream active.
    clock.now = 0.7
    failover.check()
    assert player.output_status()["state"] == "ok"  # 0.4 s without a callback: merely late
    clock.now = 0.9  # 0.6 s since the watch last saw a callback (at 0.3 s)
    failover.check()
    null = failover._null
    status = player.output_status()
    assert status["state"] == "lost" and status["output"] == null.name
    assert status["device"] == "sounddevice:Fake USB Audio"
    assert status["error"] == "no callback for 0.6 s" and status["losses"] == 1
    assert first.aborted and first.closed
    assert events.kinds().count("output_lost") == 1
    assert "lost the sound device 'sounddevice:Fake USB Audio'" in capsys.readouterr().err
    # A late callback from the lost stream plays silence and leaves the timeline alone.
    playhead = player.timeline.playhead
    assert not first.play(1).any() and player.timeline.playhead == playhead

    # The null sink keeps the timeline (and so the clock and the take) moving.
    assert isinstance(null, ArrayOutput) and null.started
    played.append(null.pull(40))
    assert player.timeline.playhead == playhead + 40 * BLOCK
    assert player.clock().playhead == playhead + 40 * BLOCK
    clock.now = 3.0
    failover.check()
    assert len(sd.streams) == 1 and events.kinds().count("output_lost") == 1  # said once

    # Reopened after retry_s, gated: its first callbacks are silence, not the timeline.
    clock.now = 5.9
    failover.check()
    second = sd.streams[1]
    assert second.active and sd.reinitialised == 1  # PortAudio's device list refreshed
    assert not second.play(2).any() and player.timeline.playhead == playhead + 40 * BLOCK
    clock.now = 6.0
    failover.check()
    status = player.output_status()
    assert status["state"] == "ok" and status["output"] == "sounddevice:Fake USB Audio"
    assert not null.started
    (restored,) = events.of("output_restored")
    assert restored["lost_s"] == 5.1 and restored["retries"] == 1
    played.append(second.play(30))
    player.stop()
    assert second.closed

    recorded, rate = soundfile.read(str(player.recorder.path), dtype="float32")  # type: ignore[union-attr]
    out = np.concatenate(played)
    assert rate == SR and recorded.shape == out.shape == (90 * BLOCK, 2)
    np.testing.assert_array_equal(recorded, out)  # device, null sink, device: one take
    np.testing.assert_array_equal(out, tone(3 * SR)[: 90 * BLOCK])  # no sample lost or doubled


def test_a_stream_that_portaudio_ended_is_lost_at_once(tmp_path: Path) -> None:
    sd, events, clock = FakeSoundDevice(), MemorySink(), Clock()
    player = failover_player(tmp_path, sd, events, clock)
    player.start()
    sd.streams[0].play(2)
    sd.streams[0].active = False  # PortAudio ended the stream: no callback will come
    clock.now = 0.1
    player.output.check()  # type: ignore[union-attr]
    assert player.output_status()["error"] == "PortAudio ended the stream"
    player.stop()


def test_auto_when_the_device_will_not_start_plays_to_the_null_sink_and_retries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sd, events, clock = FakeSoundDevice(start_error=BUSY), MemorySink(), Clock()
    player = failover_player(tmp_path, sd, events, clock)
    player.start()  # no exception: 'auto' means the music and the take go on
    failover = player.output
    assert isinstance(failover, FailoverOutput)
    status = player.output_status()
    assert status["state"] == "lost" and BUSY in status["error"]
    assert events.kinds().count("output_fallback") == 1 and sd.streams[0].closed
    assert "cannot start the output device" in capsys.readouterr().err
    clock.now = 4.9
    failover.check()
    assert len(sd.streams) == 1
    clock.now = 5.0
    failover.check()  # still busy: counted, not logged again
    status = player.output_status()
    assert len(sd.streams) == 2 and status["retries"] == 1 and BUSY in status["retry_error"]
    assert events.kinds().count("output_fallback") == 1 and not events.of("output_lost")
    sd.start_error = None  # the other program let go of it
    clock.now = 10.0
    failover.check()
    sd.streams[2].play(1)
    clock.now = 10.1
    failover.check()
    assert player.output_status()["state"] == "ok"
    (restored,) = events.of("output_restored")
    assert restored["retries"] == 2
    player.stop()


def test_a_reopened_device_that_never_calls_back_is_dropped_and_retried(tmp_path: Path) -> None:
    sd, events, clock = FakeSoundDevice(start_error=BUSY), MemorySink(), Clock()
    player = failover_player(tmp_path, sd, events, clock)
    player.start()
    sd.start_error = None
    clock.now = 5.0
    player.output.check()  # type: ignore[union-attr]
    silent = sd.streams[1]
    clock.now = 5.6  # no callback within lost_after_s
    player.output.check()  # type: ignore[union-attr]
    status = player.output_status()
    assert silent.closed and status["state"] == "lost"
    assert status["retry_error"] == "reopened, but it does not call back"
    clock.now = 10.6
    player.output.check()  # type: ignore[union-attr]
    assert len(sd.streams) == 3
    player.stop()


def test_device_when_it_will_not_start_is_a_config_error_not_a_crash_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sd = FakeSoundDevice(start_error=BUSY)
    monkeypatch.setattr(outputs, "_import_sounddevice", lambda: sd)
    player = Player("r1", config(tmp_path, "device"), 2, MemorySink())
    with pytest.raises(ConfigError) as raised:
        player.start()
    assert raised.value.exit_code == ConfigError.exit_code  # the supervisor gives up on it
    assert str(raised.value) == (
        f"audio_out.output = 'device': expected 'sounddevice:Fake USB Audio' to start, got: "
        f"{BUSY}; free the device (another program may hold it), or set audio_out.output = "
        "'auto' to play to the null sink and retry it")
    assert sd.streams[0].closed


def test_open_output_under_auto_records_on_when_the_device_will_not_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sd = FakeSoundDevice(start_error=BUSY)
    monkeypatch.setattr(outputs, "_import_sounddevice", lambda: sd)
    events = MemorySink()
    player = Player("r1", config(tmp_path), 2, events)  # the production output_factory
    player.start()
    try:
        assert isinstance(player.output, FailoverOutput)
        assert isinstance(player.output._null, NullOutput)
        player.submit(chunk(tone(SR)))
        wait_until(lambda: player.timeline.played_frames >= SR // 4, timeout_s=10.0)
    finally:
        player.stop()
    assert events.kinds()[:2] == ["output_opened", "output_fallback"]
    assert soundfile.info(str(player.recorder.path)).frames >= SR // 4  # type: ignore[union-attr]


def test_open_output_notices_a_vanished_device_on_its_watch_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sd = FakeSoundDevice()
    monkeypatch.setattr(outputs, "_import_sounddevice", lambda: sd)
    events = MemorySink()
    player = Player("r1", config(tmp_path), 2, events)
    player.start()
    try:
        player.submit(chunk(tone(SR)))
        sd.streams[0].play(10)
        played = player.timeline.played_frames
        sd.streams[0].active = False  # unplugged
        wait_until(lambda: events.of("output_lost"), timeout_s=10.0)
        # the null sink carries the timeline on
        wait_until(lambda: player.timeline.played_frames >= played + SR // 4, timeout_s=10.0)
        assert player.output_status()["state"] == "lost"
    finally:
        player.stop()
    assert soundfile.info(str(player.recorder.path)).frames >= played + SR // 4  # type: ignore[union-attr]


def test_auto_with_no_card_at_start_plays_on_and_looks_for_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A USB interface the host finds after the installation started (a boot race) was
    # never used: the room played to the null sink until someone restarted it.
    sd = FakeSoundDevice()
    sd.plugged = sd.listed = []
    monkeypatch.setattr(outputs, "_import_sounddevice", lambda: sd)
    events = MemorySink()
    player = Player("r1", config(tmp_path), 2, events)  # the production output_factory
    player.start()
    try:
        assert isinstance(player.output, FailoverOutput)
        status = player.output_status()
        assert status["state"] == "waiting" and status["output"] == "null"
        assert status["device"] == "default output" and status["losses"] == 0
        assert "no sound device: PortAudio lists no output devices" in status["error"]
        player.submit(chunk(tone(SR)))
        wait_until(lambda: player.timeline.played_frames >= SR // 4, timeout_s=10.0)
    finally:
        player.stop()
    (fallback,) = events.of("output_fallback")
    assert fallback["waiting"] is True
    assert "looking for a card again, at least every 60 s" in capsys.readouterr().err


def test_a_card_plugged_after_start_is_found_at_growing_intervals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sd, events, clock = FakeSoundDevice(), MemorySink(), Clock()
    sd.plugged = sd.listed = []

    def factory(cfg: AudioOutConfig, sr: int, ch: int, fill: Any, log: Any) -> FailoverOutput:
        return FailoverOutput(cfg, sr, ch, fill, log, None, sd=sd, missing="no card",
                              null=ArrayOutput(sr, ch, BLOCK, fill), clock=clock,
                              watch_s=None, retry_s=5.0)

    player = Player("r1", config(tmp_path), 2, events, output_factory=factory)
    player.start()
    failover = player.output
    assert isinstance(failover, FailoverOutput)
    looked_at = []
    for _ in range(600):  # ten minutes on the test's clock, a look each second
        clock.now += 1.0
        before = sd.reinitialised
        failover.check()
        if sd.reinitialised != before:
            looked_at.append(clock.now)
    # re-initialising PortAudio prints pages of ALSA notices on some hosts: not every 5 s
    assert looked_at[:7] == [5.0, 15.0, 35.0, 75.0, 135.0, 195.0, 255.0]
    assert player.output_status()["state"] == "waiting" and not events.of("output_opened")
    sd.plugged = [{"name": "Fake USB Audio", "max_output_channels": 2}]
    while not sd.streams:
        clock.now += 1.0
        failover.check()
    sd.streams[0].play(1)
    failover.check()
    status = player.output_status()
    assert status["state"] == "ok" and status["output"] == "sounddevice:Fake USB Audio"
    assert status["losses"] == 0 and not events.of("output_restored")
    (opened,) = events.of("output_opened")
    assert opened["output"] == "sounddevice:Fake USB Audio"
    assert "found the sound device 'sounddevice:Fake USB Audio'" in capsys.readouterr().err
    player.stop()


def test_a_lost_output_is_a_problem_and_a_silent_room() -> None:
    output = {"state": "lost", "output": "null", "device": "sounddevice:Fake USB Audio",
              "error": "no callback for 0.6 s", "retry_s": 5.0, "retries": 2}
    row = {"name": "audio_out:r1", "kind": "audio_out", "room": "r1", "state": "running",
           "status": {"state": "playing", "recording": {"state": "ok"}, "output": output}}
    assert role_problems([row]) == [
        "audio_out:r1: sound device sounddevice:Fake USB Audio lost (no callback for 0.6 s): "
        "the room is silent, the recording goes on; reopening it every 5.0 s"]
    assert room_summary([row], "r1")["health"] == 0.0
    row["status"]["output"] = dict(output, state="ok")  # type: ignore[index]
    assert role_problems([row]) == [] and room_summary([row], "r1")["health"] == 1.0
    # output = 'auto' with no card at start: said, but a room that only records is healthy
    row["status"]["output"] = dict(output, state="waiting", error="no sound device: "  # type: ignore[index]
                                   "PortAudio lists no output devices")
    assert role_problems([row]) == [
        "audio_out:r1: waiting for a sound device (no sound device: PortAudio lists no output "
        "devices): the room plays to no speakers, the recording goes on; looking for one "
        "every minute at most"]
    assert room_summary([row], "r1")["health"] == 1.0
