"""Resampling chunks from the generator's rate to the device's: quality, positions, clock."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import soxr
from hypothesis import given, settings
from hypothesis import strategies as st

from audio_out.config import AudioOutConfig
from audio_out.outputs import ArrayOutput
from audio_out.player import Player
from audio_out.resample import TimelineResampler
from ground.protocol import PROTOCOL_VERSION, Array, AudioChunk


def sine(rate: int, seconds: float, freq: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([x, x], axis=1)


def through(rs: TimelineResampler, audio: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Feed ``audio`` as continuation chunks of ``sizes``; check the writes are contiguous."""
    out, pos, end = [], 0, None
    i = 0
    while pos < len(audio):
        n = sizes[i % len(sizes)]
        i += 1
        for write in rs.convert(pos, audio[pos : pos + n], 0):
            assert write.main
            if end is not None:
                assert write.start == end, "a continuation skipped or repeated device samples"
            end = write.start + len(write.audio)
            out.append(write.audio)
        pos += n
    return np.concatenate(out)


def thd_n_db(x: np.ndarray, rate: int, freq: float) -> tuple[float, float]:
    """THD+N in dB (everything but the fundamental, notched in the FFT) and the peak frequency."""
    x = x.astype(np.float64)
    window = np.blackman(len(x))  # sidelobes below -58 dB fall off fast; notch +-12 bins
    spectrum = np.abs(np.fft.rfft(x * window)) ** 2
    peak = int(np.argmax(spectrum))
    notch = spectrum.copy()
    notch[max(0, peak - 12) : peak + 13] = 0.0
    return 10 * np.log10(notch.sum() / spectrum.sum()), peak * rate / len(x)


@pytest.mark.parametrize(("src", "dev", "freq"), [(48000, 44100, 997.0), (16000, 48000, 997.0),
                                                  (44100, 48000, 5003.0), (24000, 48000, 440.0)])
def test_resampled_sine_keeps_its_frequency_and_stays_clean(src: int, dev: int,
                                                            freq: float) -> None:
    rs = TimelineResampler(dev, 2)
    rs.set_source_rate(src)
    rng = np.random.default_rng(src + dev)
    out = through(rs, sine(src, 2.0, freq), [int(n) for n in rng.integers(50, 5000, 40)])
    assert len(out) == pytest.approx(2.0 * dev, abs=0.05 * dev)  # minus the filter's delay
    steady = out[dev // 10 : dev // 10 + dev][:, 0]  # away from the start-up edge
    distortion, measured = thd_n_db(steady, dev, freq)
    assert distortion < -80.0, f"THD+N {distortion:.1f} dB"
    assert measured == pytest.approx(freq, abs=1.5)  # 1 Hz bins


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 3000), min_size=1, max_size=20), st.sampled_from([
    (48000, 44100), (16000, 48000), (22050, 48000)]))
def test_continuations_equal_one_pass_resampling(sizes: list[int], rates: tuple[int, int]) -> None:
    """However the chunks are cut, the device stream is the same as resampling it whole."""
    src, dev = rates
    audio = np.random.default_rng(len(sizes)).uniform(-0.5, 0.5, (src // 4, 2)).astype(np.float32)
    rs = TimelineResampler(dev, 2)
    rs.set_source_rate(src)
    out = through(rs, audio, sizes)
    whole = soxr.resample(audio, src, dev, quality="HQ")
    np.testing.assert_allclose(out, whole[: len(out)], atol=2e-6)


def test_positions_convert_exactly_and_a_new_segment_flushes_the_old_tail() -> None:
    rs = TimelineResampler(48000, 2)
    rs.set_source_rate(16000)
    assert rs.to_device(16000) == 48000 and rs.to_source(48000) == 16000
    assert rs.to_source(2) == 0 and rs.to_source(3) == 1  # floor: never ahead of the sound
    first = rs.convert(0, sine(16000, 0.5, 300.0), 0)
    held_back = rs.to_device(8000) - (first[0].start + len(first[0].audio))
    assert held_back > 0  # the filter's delay, written later
    # A transition at 6000 (device 18000) with a 400-frame crossfade.
    writes = rs.convert(6000, sine(16000, 0.5, 500.0), 400)
    tail, main = writes
    assert not tail.main and tail.start == len(first[0].audio)
    assert tail.start + len(tail.audio) == rs.to_device(8000)  # flushed exactly to its end
    assert main.main and main.start == 18000 and main.crossfade == 1200


def test_same_rate_is_a_passthrough() -> None:
    rs = TimelineResampler(48000, 2)
    rs.set_source_rate(48000)
    audio = sine(48000, 0.01, 100.0)
    (write,) = rs.convert(123, audio, 7)
    assert write.start == 123 and write.audio is audio and write.crossfade == 7


def chunk(seq: int, start: int, audio: np.ndarray, rate: int, crossfade: int = 0,
          notes: np.ndarray | None = None) -> AudioChunk:
    return AudioChunk(v=PROTOCOL_VERSION, room="r1", seq=seq, start_sample=start,
                      sample_rate=rate, audio=Array.from_numpy(audio), crossfade=crossfade,
                      notes=Array.from_numpy(notes) if notes is not None else None)


def array_sink(config: AudioOutConfig, sr: int, ch: int, fill: Any, log: Any) -> ArrayOutput:
    return ArrayOutput(sr, ch, config.block_size, fill)


def test_player_resamples_and_reports_the_clock_in_generator_samples(tmp_path: Any) -> None:
    config = AudioOutConfig(output="none", sample_rate=48000, block_size=480,
                            midi_file=str(tmp_path / "n.mid"))
    events: list[tuple[str, dict[str, Any]]] = []
    player = Player("r1", config, 2, lambda kind, **f: events.append((kind, f)),
                    output_factory=array_sink)
    player.start()
    tone = sine(16000, 1.0, 440.0)
    notes = np.array([[8000, 1600, 60, 90, 0, 0]], np.int32)  # at 0.5 s for 0.1 s
    player.submit(chunk(0, 0, tone[:8000], 16000, notes=None))
    relative = (notes - [8000, 0, 0, 0, 0, 0]).astype(np.int32)
    player.submit(chunk(1, 8000, tone[8000:], 16000, notes=relative))
    out = player.output.pull(50)  # type: ignore[union-attr]  # 24000 device frames = 0.5 s
    clock = player.clock()
    assert clock.sample_rate == 16000 and clock.playhead == 8000 and clock.state == "playing"
    assert clock.buffered_until <= 16000
    player.output.pull(50)  # type: ignore[union-attr]
    player.poll()
    player.stop()
    # 440 Hz at the device rate, clean.
    distortion, measured = thd_n_db(out[4800:24000, 0], 48000, 440.0)
    assert distortion < -80.0 and measured == pytest.approx(440.0, abs=3.0)
    (note,) = player.notes.played()  # type: ignore[union-attr]
    assert (note.start, note.end) == (24000, 28800)  # device samples
    started = [f for k, f in events if k == "chunk_started"]
    assert [e["start_sample"] for e in started] == [0, 8000]  # generator samples
