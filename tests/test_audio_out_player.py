"""The Player end to end on the array and null sinks."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pretty_midi
import pytest
import soundfile

from audio_out.config import AudioOutConfig
from audio_out.crossfade import equal_power_gains
from audio_out.outputs import ArrayOutput
from audio_out.player import Player
from ground.errors import ConfigError
from ground.events import MemorySink
from ground.protocol import PROTOCOL_VERSION, Array, AudioChunk

SR = 16000




def array_sink(config: AudioOutConfig, sr: int, ch: int, fill: Any, log: Any) -> ArrayOutput:
    return ArrayOutput(sr, ch, config.block_size, fill)


def chunk(seq: int, start: int, audio: np.ndarray, crossfade: int = 0, reason: str = "continue",
          notes: np.ndarray | None = None, sample_rate: int = SR) -> AudioChunk:
    return AudioChunk(v=PROTOCOL_VERSION, room="r1", seq=seq, start_sample=start,
                      sample_rate=sample_rate, audio=Array.from_numpy(audio), crossfade=crossfade,
                      reason=reason, artwork_id="a1",  # type: ignore[arg-type]
                      notes=Array.from_numpy(notes) if notes is not None else None)


def tone(n: int, freq: float = 220.0, phase: float = 0.0) -> np.ndarray:
    x = (0.3 * np.sin(2 * np.pi * freq * np.arange(n) / SR + phase)).astype(np.float32)
    return np.stack([x, x], axis=1)


def test_player_plays_records_and_reports(tmp_path: Path) -> None:
    # without the DC blocker: what played is compared with what was sent, sample for sample
    config = AudioOutConfig(output="none", sample_rate=SR, block_size=256, hold_s=0.5, fade_s=0.2,
                            dc_block_hz=0.0, record=str(tmp_path / "played.wav"),
                            midi_file=str(tmp_path / "played.mid"), stop_after_s=1.0)
    events = MemorySink()
    player = Player("r1", config, 2, events, output_factory=array_sink)
    player.start()
    sink = player.output
    assert isinstance(sink, ArrayOutput)
    idle = sink.pull(4)  # before any chunk: silence, not recorded
    assert not idle.any() and player.clock().state == "starting"
    a = tone(SR // 2)
    player.submit(chunk(0, 0, a, reason="start",
                        notes=np.array([[100, 800, 60, 90, 0, 0]], np.int32)))
    player.submit(chunk(1, SR // 2, tone(SR // 2, phase=2 * np.pi * 220 * 0.5),
                        notes=np.array([[4000, 100, 64, 90, 0, 0]], np.int32)))
    played = [sink.pull(20)]  # 5120 frames
    player.poll()
    # A transition replaces the rest with a crossfade, dropping the note at 12000.
    b = tone(SR, freq=330.0)
    result = player.submit(chunk(2, 6000, b, crossfade=800, reason="transition"))
    assert result.kind == "replace" and result.crossfade_frames == 800
    clock = player.clock()
    assert (clock.playhead, clock.buffered_until, clock.state) == (5120, 6000 + SR, "playing")
    played.append(sink.pull(72))  # through the end of the queue and into the hold
    player.poll()
    assert player.done
    player.stop()

    out = np.concatenate(played)
    np.testing.assert_array_equal(out[:6000], a[:6000])  # played as sent, up to the splice
    fade_out, fade_in = equal_power_gains(800)
    np.testing.assert_allclose(out[6000:6800], a[6000:6800] * fade_out[:, None]
                               + b[:800] * fade_in[:, None], atol=1e-6)
    np.testing.assert_array_equal(out[6800 : 6000 + SR], b[800:])
    assert player.recorder is not None and player.midi_recorder is not None
    recorded, rate = soundfile.read(player.recorder.path, dtype="float32")
    assert rate == SR
    np.testing.assert_array_equal(recorded, out)  # exactly what played, hold included
    # Holding. The loop holds both tones (220 Hz, then 330 Hz), so its seam
    # joins unrelated material: power stays, peaks may add up to sqrt(2).
    assert 0.1 < np.abs(out[6000 + SR + 10 :]).max() < 0.3 * 1.45
    received = events.of("chunk_received")
    assert [e["seq"] for e in received] == [0, 1, 2]
    assert received[2]["late_frames"] == 0 and received[2]["splice"] == "replace"
    started = events.of("chunk_started")
    assert [e["seq"] for e in started] == [0, 2]  # chunk 1 was replaced before it played
    assert all(isinstance(e["wall_time"], float) for e in started)
    assert started[1]["start_sample"] == 6000
    assert len(events.of("underflow")) == 1 and len(events.of("hold")) == 1
    midi = pretty_midi.PrettyMIDI(str(player.midi_recorder.path))
    pitches = sorted(n.pitch for i in midi.instruments for n in i.notes)
    assert pitches == [60]  # the note at 12000 was replaced before it played
    assert events.of("player_stopped")[0]["underflows"] == 1


def test_playback_matches_the_chunks_sample_for_sample() -> None:
    config = AudioOutConfig(output="none", sample_rate=SR, block_size=128, dc_block_hz=0.0)
    player = Player("r1", config, 2, MemorySink(), output_factory=array_sink)
    player.start()
    a, b = tone(3000), tone(5000, freq=440.0)
    player.submit(chunk(0, 0, a))
    player.submit(chunk(1, 3000, b))
    out = player.output.pull(62)  # type: ignore[union-attr]
    player.stop()
    np.testing.assert_array_equal(out[:7936], np.concatenate([a, b])[:7936])


def test_volume_ramps_without_a_step() -> None:
    # a flat program at full level from its first frame: no DC blocker, no start fade
    config = AudioOutConfig(output="none", sample_rate=SR, block_size=256, volume=1.0,
                            dc_block_hz=0.0, fade_in_s=0.0)
    player = Player("r1", config, 2, MemorySink(), output_factory=array_sink)
    player.start()
    flat = np.full((SR, 2), 0.5, np.float32)
    player.submit(chunk(0, 0, flat))
    player.set_volume(0.25)
    out = player.output.pull(40)[:, 0]  # type: ignore[union-attr]
    player.stop()
    # A raised cosine over volume_ramp_s: steepest slope pi/2 * step / ramp frames.
    ramp = 0.05 * SR
    assert np.abs(np.diff(out)).max() <= np.pi / 2 * 0.5 * 0.75 / ramp * 1.01
    assert np.all(np.diff(out) <= 1e-7)  # monotonic, no overshoot
    np.testing.assert_allclose(out[int(ramp) + 1 :], 0.125, atol=1e-6)
    with pytest.raises(ConfigError, match="expected 0..4, got 5"):
        player.set_volume(5)


def test_malformed_chunks_are_refused_clearly() -> None:
    player = Player("r1", AudioOutConfig(sample_rate=SR), 2, MemorySink(),
                    output_factory=array_sink)
    with pytest.raises(ConfigError, match=r"expected audio \(frames, 2\)"):
        player.submit(chunk(0, 0, np.zeros((10, 1), np.float32)))
    with pytest.raises(ConfigError, match=r"expected sample_rate > 0, got 0"):
        player.submit(chunk(0, 0, tone(100), sample_rate=0))


def test_player_on_the_null_sink_in_real_time(tmp_path: Path) -> None:
    config = AudioOutConfig(output="none", sample_rate=SR, block_size=256, stop_after_s=0.5,
                            record=str(tmp_path / "rt.flac"))
    events = MemorySink()
    player = Player("r1", config, 2, events)
    player.start()
    time.sleep(0.05)
    submitted = time.time()
    player.submit(chunk(0, 0, tone(2 * SR)))  # outlasts the stop fade (1 s) after 0.5 s
    began = time.monotonic()
    while not player.done and time.monotonic() - began < 5:
        time.sleep(0.01)
    elapsed = time.monotonic() - began
    player.stop()
    assert player.done and 0.4 < elapsed < 1.0
    clock = player.clock()
    assert clock.playhead >= SR // 2 and clock.underflows == 0
    assert player.recorder is not None
    assert soundfile.info(str(player.recorder.path)).frames >= SR // 2
    # The null sink has no latency: the first chunk is heard within a block or two.
    (started,) = events.of("chunk_started")
    assert 0.0 <= started["wall_time"] - submitted < 0.1


def test_importing_audio_out_loads_no_device_or_model_libraries() -> None:
    code = ("import sys, audio_out, audio_out.player, audio_out.outputs; "
            "bad = {'torch', 'sounddevice', 'rtmidi'} & set(sys.modules); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
