"""Samples no generator makes: refused on the wire, and never played if they get in anyway.

A chunk of finite but huge samples (3e38: a rogue sender, a broken generator) passed the
decoder, which checked only finiteness; under a room volume of 2 it overflowed to
infinity, and the limiter (peak infinity, gain 0, infinity * 0) played NaN to the sound
card and into the take. The decoder now refuses such a chunk (``out-of-range``, counted
like every refusal), and the player's last stage, :class:`~audio_out.mixer.OutputGuard`,
silences whatever non-finite sample still reaches it and counts it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from audio_out.config import AudioOutConfig
from audio_out.mixer import FULL_SCALE, OutputGuard
from audio_out.outputs import ArrayOutput
from audio_out.player import Player
from ground.events import MemorySink
from ground.protocol import (
    MAX_AUDIO_SAMPLE,
    PROTOCOL_VERSION,
    Array,
    ArtworkView,
    AudioChunk,
    DropCounter,
    ProtocolError,
    decode,
    encode,
)

SR = 16000
BLOCK = 256


def tone(n: int, start: int = 0, amp: float = 0.3) -> np.ndarray:
    x = (amp * np.sin(2 * np.pi * 440.0 * (np.arange(n) + start) / SR)).astype(np.float32)
    return np.stack([x, x], axis=1)


def chunk(audio: np.ndarray, seq: int = 0, start: int = 0, rate: int = SR) -> AudioChunk:
    return AudioChunk(v=PROTOCOL_VERSION, room="r1", seq=seq, start_sample=start,
                      sample_rate=rate, audio=Array.from_numpy(audio))


def array_sink(config: AudioOutConfig, sr: int, ch: int, fill: Any, log: Any) -> ArrayOutput:
    return ArrayOutput(sr, ch, config.block_size, fill)


@pytest.mark.parametrize("peak", [3e38, -3e38, 1e30, 1e6, 16.5])
def test_a_chunk_of_huge_finite_samples_is_refused_at_decode_and_counted(peak: float) -> None:
    audio = tone(4800)
    audio[1000, 1] = peak
    counter = DropCounter()
    with pytest.raises(ProtocolError) as info:
        decode(encode(chunk(audio)))
    counter.add(info.value)
    assert info.value.reason == "out-of-range"
    assert info.value.detail == (f"audio sample magnitude {abs(peak):.3g} exceeds 16 "
                                 "(a generator's output is nominally within +-1)")
    assert counter.by_reason == {"out-of-range": 1}


def test_a_generators_overshoot_up_to_the_bound_still_decodes() -> None:
    audio = tone(4800)
    audio[0] = (-MAX_AUDIO_SAMPLE, MAX_AUDIO_SAMPLE)  # +24 dB: the limiter's job, not a fault
    audio[1] = (1.5, -1.5)
    decoded = decode(encode(chunk(audio)))
    assert isinstance(decoded, AudioChunk)
    np.testing.assert_array_equal(decoded.audio.to_numpy(), audio)
    empty = decode(encode(chunk(np.zeros((0, 2), np.float32))))
    assert isinstance(empty, AudioChunk)
    # the bound is the audio's: an embedding keeps whatever range its encoder has
    view = ArtworkView.of_artwork("r1", 1, 1.0, "a", 0.9, "clip",
                                  np.full(8, 100.0, np.float32), {})
    assert decode(encode(view)) == view


# numpy says so when the gain overflows (the callback's arithmetic is not checked per
# block: the wire keeps such samples out); what counts is what reaches the device.
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize(("volume", "rate"), [(2.0, SR), (1.0, 22050)])
def test_non_finite_samples_reach_neither_the_device_nor_the_take(
    tmp_path: Path, volume: float, rate: int
) -> None:
    # A chunk that bypassed the wire's check (the player takes what it is given): at volume
    # 2 its samples overflow to infinity under the gain; resampled, soxr's arithmetic does.
    config = AudioOutConfig(sample_rate=SR, block_size=BLOCK, volume=volume,
                            record=str(tmp_path / "take.wav"), hold_s=2.0, fade_s=1.0)
    events = MemorySink()
    player = Player("r1", config, 2, events, output_factory=array_sink)
    player.start()
    n = rate
    music = (0.3 * np.sin(2 * np.pi * 440.0 * np.arange(3 * n) / rate)).astype(np.float32)
    music = np.stack([music, music], axis=1)
    bad = np.sign(music[n : n + n // 4]) * np.float32(3e38)
    player.submit(chunk(music[:n], 0, 0, rate))
    player.submit(chunk(bad, 1, n, rate))
    player.submit(chunk(music[n + n // 4 :], 2, n + n // 4, rate))
    sink = player.output
    assert isinstance(sink, ArrayOutput) and player.recorder is not None
    out = sink.pull(4 * SR // BLOCK)
    player.poll()
    player.stop()

    assert np.isfinite(out).all() and np.abs(out).max() <= FULL_SCALE
    recorded, _ = soundfile.read(player.recorder.path, dtype="float32")
    np.testing.assert_array_equal(recorded, out)  # the take is what the card got
    assert player.guard.nonfinite_blocks > 0  # it happened, and it shows
    (stopped,) = events.of("player_stopped")
    assert stopped["nonfinite_blocks"] == player.guard.nonfinite_blocks
    assert events.of("output_nonfinite")[0]["blocks"] >= 1
    # the music after the bad chunk comes back once the limiter has recovered
    assert np.abs(out[int(2.6 * SR) : 3 * SR]).max() > 0.25 * min(volume, 1.0)


def test_the_output_guard_silences_non_finite_samples_and_clips_the_rest() -> None:
    guard = OutputGuard(8, 2)
    clean = np.array([[0.5, -0.999], [1.0, -1.0]], np.float32)
    kept = clean.copy()
    guard.process(clean)
    np.testing.assert_array_equal(clean, kept)  # full scale itself is not a fault
    assert (guard.nonfinite_blocks, guard.clipped_blocks) == (0, 0)
    block = np.array([[np.nan, np.inf], [-np.inf, 2.0], [-3.0, 0.25]], np.float32)
    guard.process(block)
    np.testing.assert_array_equal(block, [[0.0, 0.0], [0.0, 1.0], [-1.0, 0.25]])
    assert (guard.nonfinite_blocks, guard.clipped_blocks) == (1, 1)
    loud = np.array([[1.5, 0.0]], np.float32)
    guard.process(loud)
    assert loud.tolist() == [[1.0, 0.0]]
    assert (guard.nonfinite_blocks, guard.clipped_blocks) == (1, 2)


def test_with_the_limiter_off_the_device_still_never_gets_past_full_scale() -> None:
    config = AudioOutConfig(sample_rate=SR, block_size=BLOCK, volume=4.0, limiter=False)
    player = Player("r1", config, 2, MemorySink(), output_factory=array_sink)
    player.start()
    player.submit(chunk(tone(SR)))
    out = player.output.pull(40)  # type: ignore[union-attr]
    player.stop()
    assert np.abs(out).max() == FULL_SCALE  # 1.2 before: what a DAC would clip anyway
    assert player.guard.clipped_blocks > 0 and player.guard.nonfinite_blocks == 0
