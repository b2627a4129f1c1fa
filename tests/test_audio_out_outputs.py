"""Output sinks and the choice between them."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from audio_out import outputs
from audio_out.config import AudioOutConfig
from audio_out.outputs import (
    ArrayOutput,
    NullOutput,
    SoundDeviceOutput,
    find_output_device,
    load_sounddevice,
    open_output,
)
from ground.errors import ConfigError, DependencyError
from ground.events import MemorySink


def no_portaudio() -> Any:
    raise OSError("PortAudio library not found")


class VirtualTime:
    """The null sink's clock, moved only by its waits and by the work ``fill`` pretends to do."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def perf_counter(self) -> float:
        return self.now


class VirtualEvent:
    """The null sink's stop event on :class:`VirtualTime`: waiting moves the clock, not us."""

    def __init__(self, clock: VirtualTime) -> None:
        self.clock = clock
        self.flag = False

    def set(self) -> None:
        self.flag = True

    def clear(self) -> None:
        self.flag = False

    def is_set(self) -> bool:
        return self.flag

    def wait(self, timeout: float) -> bool:
        self.clock.now += timeout
        return self.flag


def _virtual_null_output(monkeypatch: pytest.MonkeyPatch, fill: Any
                         ) -> tuple[NullOutput, VirtualTime, VirtualEvent]:
    """A 16 kHz null sink of 256-frame blocks whose pacing runs on a virtual clock."""
    clock = VirtualTime()
    stop = VirtualEvent(clock)
    monkeypatch.setattr(outputs, "time", clock)
    monkeypatch.setattr(outputs, "threading",
                        SimpleNamespace(Event=lambda: stop, Thread=threading.Thread))
    return NullOutput(16000, 2, 256, fill), clock, stop


def test_null_output_runs_at_real_time_pace(monkeypatch: pytest.MonkeyPatch) -> None:
    filled_at: list[float] = []

    def fill(out: np.ndarray) -> None:
        out.fill(0.25)
        filled_at.append(clock.now)
        if len(filled_at) == 100:
            stop.set()
            done.set()

    done = threading.Event()
    sink, clock, stop = _virtual_null_output(monkeypatch, fill)
    sink.start()
    assert done.wait(10.0)
    sink.stop()
    period = 256 / 16000
    # block k is asked for when the clock reaches k blocks of audio: never ahead, never behind
    assert filled_at == pytest.approx([k * period for k in range(100)], abs=1e-9)
    assert clock.now == pytest.approx(100 * period, abs=1e-9)
    assert sink.stats.calls == 100 and sink.frames_played == 100 * 256
    assert sink.stats.output_underflows == 0


def test_null_output_resynchronises_after_a_stall(monkeypatch: pytest.MonkeyPatch) -> None:
    filled_at: list[float] = []

    def fill(out: np.ndarray) -> None:
        filled_at.append(clock.now)
        if len(filled_at) == 3:
            clock.now += 0.5  # one slow block: far more than max_behind_s
        if len(filled_at) == 6:
            stop.set()
            done.set()

    done = threading.Event()
    sink, clock, stop = _virtual_null_output(monkeypatch, fill)
    sink.start()
    assert done.wait(10.0)
    sink.stop()
    period = 256 / 16000
    stalled = 2 * period + 0.5
    # no burst to catch up: pacing starts again from the end of the stall
    assert filled_at == pytest.approx([0.0, period, 2 * period, stalled, stalled + period,
                                       stalled + 2 * period], abs=1e-9)
    assert sink.stats.output_underflows == 1


def test_array_output_pulls_blocks_through_fill() -> None:
    counter = iter(range(1000))

    def fill(out: np.ndarray) -> None:
        out[:] = next(counter)

    sink = ArrayOutput(48000, 2, 4, fill)
    audio = sink.pull(3)
    np.testing.assert_array_equal(audio[:, 0], [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2])
    assert sink.pull(2, block_size=1).shape == (2, 2)


def test_auto_without_portaudio_falls_back_to_null_with_one_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(outputs, "_import_sounddevice", no_portaudio)
    events = MemorySink()
    sink = open_output(AudioOutConfig(output="auto"), 48000, 2, lambda out: None, events)
    assert isinstance(sink, NullOutput)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["audio_out: no sound device (PortAudio library not found); "
                     "playing to the null sink, recording continues"]
    assert events.kinds() == ["output_fallback"]


def test_device_without_portaudio_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outputs, "_import_sounddevice", no_portaudio)
    with pytest.raises(DependencyError, match=r"no sound device.*PortAudio.*output = 'none'"):
        open_output(AudioOutConfig(output="device"), 48000, 2, lambda out: None, MemorySink())


def test_none_is_the_null_sink_without_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    sink = open_output(AudioOutConfig(output="none"), 48000, 2, lambda out: None, MemorySink())
    assert isinstance(sink, NullOutput) and capsys.readouterr().err == ""


def test_this_machine_without_portaudio_says_so() -> None:
    try:
        import sounddevice  # noqa: F401
    except OSError:
        with pytest.raises(DependencyError, match="PortAudio"):
            load_sounddevice()
    else:
        pytest.skip("PortAudio is installed here; the no-device path is covered with a stand-in")


class FakeSoundDevice:
    """The parts of the sounddevice module that SoundDeviceOutput uses."""

    def __init__(self, devices: list[dict[str, Any]]) -> None:
        self.devices = devices
        self.opened: dict[str, Any] = {}

    def query_devices(self, index: int | None = None) -> Any:
        return self.devices if index is None else self.devices[index]

    def OutputStream(self, **kwargs: Any) -> Any:  # noqa: N802 - mirrors sounddevice
        self.opened = kwargs
        return SimpleNamespace(device=kwargs["device"] or 0, latency=0.02, closed=False,
                               start=lambda: None, stop=lambda: None, close=lambda: None)


DEVICES = [
    {"name": "Built-in Microphone", "max_output_channels": 0},
    {"name": "Built-in Output", "max_output_channels": 2},
    {"name": "Focusrite USB", "max_output_channels": 8},
]


def test_device_is_chosen_by_name_substring() -> None:
    sd = FakeSoundDevice(DEVICES)
    assert find_output_device(sd, "focus") == 2
    assert find_output_device(sd, "") is None
    with pytest.raises(ConfigError, match=r"got 'Microphone'.*'Built-in Output', 'Focusrite USB'"):
        find_output_device(sd, "Microphone")
    with pytest.raises(ConfigError, match="no output devices"):
        find_output_device(FakeSoundDevice(DEVICES[:1]), "")


def test_sounddevice_output_fills_and_counts_underflows() -> None:
    sd = FakeSoundDevice(DEVICES)
    blocks = []
    config = AudioOutConfig(output="device", device="Focusrite", block_size=128, latency=0.01)
    sink = SoundDeviceOutput(config, 48000, 2, lambda out: blocks.append(out.shape), sd=sd)
    assert sd.opened["device"] == 2 and sd.opened["blocksize"] == 128
    assert sd.opened["dtype"] == "float32" and sd.opened["latency"] == 0.01
    assert sink.name == "sounddevice:Focusrite USB" and sink.latency_s == 0.02
    out = np.zeros((128, 2), np.float32)
    sink._callback(out, 128, None, SimpleNamespace(output_underflow=True))
    sink._callback(out, 128, None, SimpleNamespace(output_underflow=False))
    assert blocks == [(128, 2), (128, 2)]
    assert sink.stats.output_underflows == 1 and sink.stats.calls == 2
    assert sink.stats.percentiles_us()["p99"] >= 0.0


def test_channels_beyond_the_device_are_a_clear_error() -> None:
    config = AudioOutConfig(output="device", device="Built-in Output")
    with pytest.raises(ConfigError, match=r"channels_out: expected channels 1..2 of output "
                                          r"'Built-in Output', got channel 4"):
        SoundDeviceOutput(config, 48000, 4, lambda out: None, sd=FakeSoundDevice(DEVICES))


# The real PortAudio stream is driven in test_audio_out_device.py.
