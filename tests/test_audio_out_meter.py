"""The audio_out meter: peak, level, short-term loudness and spectrum of what was played."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import pyloudnorm
import pytest

from audio_out.meter import (
    BAND_EDGES_HZ,
    FLOOR_DB,
    SPECTRUM_BANDS,
    LevelMeter,
    band_spectrum,
    k_weighting_sos,
    short_term_lufs,
)

RATE = 48000
BLOCK = 480  # 10 ms, a typical device block


def sine(frequency: float, peak_dbfs: float, seconds: float, channels: int = 2) -> np.ndarray:
    """A sine peaking at ``peak_dbfs`` on every channel, float32 (frames, channels)."""
    t = np.arange(round(seconds * RATE)) / RATE
    wave = 10 ** (peak_dbfs / 20) * np.sin(2 * np.pi * frequency * t)
    return np.repeat(wave[:, None], channels, axis=1).astype(np.float32)


def play(meter: LevelMeter, signal: np.ndarray) -> Callable[[np.ndarray], None]:
    """Open a metered fake output and play ``signal`` through its callback, block by block."""
    opened: dict[str, Any] = {}

    def fake_output(config: Any, rate: int, channels: int,
                    fill: Callable[[np.ndarray], None], log_event: Any) -> str:
        opened["fill"] = fill
        return "fake"

    position = 0

    def source(out: np.ndarray) -> None:  # the player's fill: copies preallocated audio
        nonlocal position
        if position + len(out) > len(signal):  # looped
            position = 0
        end = position + len(out)
        np.copyto(out, signal[position:end])
        position = end

    meter.factory(fake_output)(None, RATE, signal.shape[1], source, lambda *a, **k: None)
    callback = opened["fill"]
    out = np.zeros((BLOCK, signal.shape[1]), np.float32)
    for _ in range(len(signal) // BLOCK):
        callback(out)
    return callback


def test_a_sine_at_minus_6_dbfs_reads_its_peak_level_and_band() -> None:
    meter = LevelMeter()
    play(meter, sine(1000.0, -6.0, 1.0))
    reading = meter.reading()
    assert reading.peak_dbfs == pytest.approx(-6.0, abs=0.1)
    assert reading.level_dbfs == pytest.approx(-9.0, abs=0.1)
    spectrum = reading.spectrum
    assert spectrum is not None and len(spectrum) == SPECTRUM_BANDS
    loudest = int(np.argmax(spectrum))
    assert BAND_EDGES_HZ[loudest] <= 1000.0 < BAND_EDGES_HZ[loudest + 1]
    assert spectrum[loudest] == pytest.approx(-9.0, abs=0.5)  # on level_dbfs's scale
    assert all(round(v, 1) == v for v in spectrum)
    assert min(spectrum) >= FLOOR_DB
    # 1 kHz in BS.1770's calibration: a stereo sine at -6 dBFS reads about -6 LUFS
    assert reading.loudness_lufs == pytest.approx(-6.0, abs=0.5)
    # the next heartbeat with nothing played: no fresh peak, level or spectrum
    after = meter.reading()
    assert (after.level_dbfs, after.peak_dbfs, after.spectrum) == (None, None, None)
    assert after.status().keys() == {"level_dbfs", "peak_dbfs", "loudness_lufs", "spectrum"}


def test_a_minus_23_lufs_reference_reads_minus_23_short_term() -> None:
    # EBU Tech 3341 test 1: a 1 kHz stereo sine at -23 dBFS (per channel) is -23 LUFS.
    signal = sine(1000.0, -23.0, 5.0)
    meter = LevelMeter()
    play(meter, signal)
    reading = meter.reading()
    assert reading.loudness_lufs == pytest.approx(-23.0, abs=0.5)
    # the same figure as pyloudnorm's meter (the filters are its own), on a noisier signal
    noise = np.random.default_rng(3).normal(0, 0.05, (5 * RATE, 2)).astype(np.float32)
    expected = pyloudnorm.Meter(RATE).integrated_loudness(noise[-3 * RATE:].astype(np.float64))
    meter = LevelMeter()
    play(meter, noise)
    assert meter.reading().loudness_lufs == pytest.approx(expected, abs=0.2)


def test_silence_reads_the_floor_and_no_loudness() -> None:
    meter = LevelMeter()
    play(meter, np.zeros((RATE, 2), np.float32))
    reading = meter.reading()
    assert reading.loudness_lufs is None
    assert reading.peak_dbfs == FLOOR_DB
    assert reading.spectrum == [FLOOR_DB] * SPECTRUM_BANDS
    # a meter whose output never opened reads nothing at all
    idle = LevelMeter().reading()
    assert idle.status() == {"level_dbfs": None, "peak_dbfs": None, "loudness_lufs": None,
                             "spectrum": None}


def test_the_peak_and_spectrum_cover_only_what_played_since_the_last_heartbeat() -> None:
    meter = LevelMeter()
    meter.allocate(RATE, 2)
    callback = meter.wrap(lambda out: None)  # plays the block it is handed
    loud = sine(200.0, -3.0, 1.0)
    for start in range(0, RATE, BLOCK):
        callback(loud[start:start + BLOCK])
    assert meter.reading().peak_dbfs == pytest.approx(-3.0, abs=0.1)
    quiet = np.full((BLOCK, 2), 0.01, np.float32)  # -40 dBFS, after the loud second
    for _ in range(10):
        callback(quiet)
    reading = meter.reading()
    assert reading.peak_dbfs == pytest.approx(-40.0, abs=0.1)
    assert reading.spectrum is not None and max(reading.spectrum) < -35
    assert reading.loudness_lufs is not None and reading.loudness_lufs > -20  # last 3 s


def test_the_callback_path_allocates_nothing() -> None:
    meter = LevelMeter()
    signal = sine(440.0, -12.0, 2.5)
    callback = play(meter, signal[:RATE // 10])  # warm up: first calls fill caches
    out = np.zeros((BLOCK, 2), np.float32)
    # tracemalloc counts every thread's allocations (a test runner's I/O thread too): a
    # callback that allocates does so in every look, another thread's now and then, so the
    # cleanest of a few looks is the callback's own
    looks = []
    for _ in range(5):
        tracemalloc.start()
        try:
            for _ in range(100):  # the few Python numbers the counters hold are now traced
                callback(out)
            tracemalloc.reset_peak()
            before, _ = tracemalloc.get_traced_memory()
            for _ in range(100):
                callback(out)
            after, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        looks.append((after - before, peak - before))
        if looks[-1][0] <= 0 and looks[-1][1] < out.nbytes // 4:
            break
    assert min(grown for grown, _ in looks) <= 0, looks  # no growth
    assert min(t for _, t in looks) < out.nbytes // 4, looks  # no temporary array at all


def test_blocks_longer_than_the_ring_and_wrapping_keep_the_newest_frames() -> None:
    meter = LevelMeter(ring_s=4.0)
    meter.allocate(RATE, 1)
    fill = meter.wrap(lambda out: None)
    ramp = (np.arange(5 * RATE, dtype=np.float32) / (5 * RATE))[:, None]
    fill(ramp.copy())  # longer than the ring: its newest 4 s are kept
    reading = meter.reading()
    assert reading.peak_dbfs == pytest.approx(20 * np.log10(ramp[-1, 0]), abs=0.1)
    for _ in range(0, RATE, 700):  # odd-sized blocks that wrap round the ring's end
        fill(np.full((700, 1), 0.5, np.float32))
    assert meter.reading().peak_dbfs == pytest.approx(-6.0, abs=0.1)


@pytest.mark.parametrize(("silent_s", "heard"), [(3.2, False), (2.8, True)])
def test_the_loudness_window_is_the_newest_3_s_across_the_ring_end(silent_s: float,
                                                                    heard: bool) -> None:
    meter = LevelMeter()
    meter.allocate(RATE, 2)
    fill = meter.wrap(lambda out: None)
    signal = np.concatenate([sine(1000.0, -10.0, 4.0), np.zeros((round(silent_s * RATE), 2),
                                                                 np.float32)])
    for start in range(0, len(signal), 733):  # odd blocks: the ring's end falls mid-block
        fill(signal[start:start + 733])
    loudness = meter.reading().loudness_lufs
    assert (loudness is not None) == heard


def test_k_weighting_matches_bs1770_at_48k() -> None:
    # ITU-R BS.1770-4 Annex 1, tables 1 and 2 (48 kHz coefficients)
    sos = k_weighting_sos(48000)
    np.testing.assert_allclose(sos[0, :3], [1.53512485958697, -2.69169618940638,
                                            1.19839281085285], rtol=1e-3)
    np.testing.assert_allclose(sos[0, 4:], [-1.69065929318241, 0.73248077421585], rtol=1e-3)
    np.testing.assert_allclose(sos[1, 4:], [-1.99004745483398, 0.99007225036621], rtol=1e-4)
    assert short_term_lufs(np.zeros((10, 2)), RATE, preroll=20) is None


def test_bands_above_nyquist_read_the_floor() -> None:
    rate = 22050
    t = np.arange(rate) / rate
    spectrum = band_spectrum(0.5 * np.sin(2 * np.pi * 500 * t), rate)
    edges = BAND_EDGES_HZ
    assert all(v == FLOOR_DB for v, low in zip(spectrum, edges[:-1], strict=True)
               if low > rate / 2)
    assert max(spectrum) > -10
