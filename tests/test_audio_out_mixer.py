"""The callback's chain after the timeline: smooth gains, mute, master fades, limiter, routing."""

from __future__ import annotations

import tracemalloc
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from memory import grown_in_our_code

from audio_out.config import AudioOutConfig
from audio_out.mixer import ChannelMap, PeakLimiter, SmoothGain
from audio_out.outputs import ArrayOutput
from audio_out.player import Player
from ground.errors import ConfigError
from ground.protocol import PROTOCOL_VERSION, Array, AudioChunk

SR = 16000


def array_sink(config: AudioOutConfig, sr: int, ch: int, fill: Any, log: Any) -> ArrayOutput:
    return ArrayOutput(sr, ch, config.block_size, fill)


def chunk(start: int, audio: np.ndarray) -> AudioChunk:
    return AudioChunk(v=PROTOCOL_VERSION, room="r1", seq=0, start_sample=start, sample_rate=SR,
                      audio=Array.from_numpy(audio))


def player(channels: int = 2, **settings: Any) -> Player:
    # Flat (DC) programs make gains easy to read: without the DC blocker, which drains them
    # (its own tests are in test_audio_safety_signal.py), and starting at full level.
    settings = {"dc_block_hz": 0.0, "fade_in_s": 0.0} | settings
    config = AudioOutConfig(output="none", sample_rate=SR, block_size=256, **settings)
    p = Player("r1", config, channels, lambda *a, **k: None, output_factory=array_sink)
    p.start()
    return p


def flat(n: int, value: float = 0.5, channels: int = 2) -> np.ndarray:
    return np.full((n, channels), value, np.float32)


@settings(max_examples=60, deadline=None)
@given(st.floats(0.0, 4.0), st.floats(0.0, 4.0), st.integers(1, 5000),
       st.lists(st.integers(1, 700), min_size=1, max_size=10))
def test_smooth_gain_glides_monotonically_to_its_target(a: float, b: float, frames: int,
                                                        blocks: list[int]) -> None:
    gain = SmoothGain(a, 1024)
    gain.set(b, frames)
    out, i = [], 0
    while sum(len(o) for o in out) < frames + 100:
        env = np.zeros(blocks[i % len(blocks)], np.float32)
        if not gain.render(env):
            env.fill(gain.value)
        out.append(env)
        i += 1
    g = np.concatenate(out).astype(np.float64)
    steps = np.diff(np.concatenate([[a], g]))
    assert np.all(steps * np.sign(b - a) >= -1e-6)  # monotonic, no overshoot
    assert np.abs(steps).max() <= np.pi / 2 * abs(b - a) / frames + 1e-5  # raised cosine
    np.testing.assert_allclose(g[frames - 1 :], b, atol=1e-6)
    assert gain.value == pytest.approx(b)


def test_a_new_target_mid_glide_starts_from_where_the_gain_is() -> None:
    gain = SmoothGain(1.0, 512)
    gain.set(0.0, 1000)
    first = np.zeros(500, np.float32)
    assert gain.render(first)
    gain.set(1.0, 1000)
    second = np.zeros(500, np.float32)
    assert gain.render(second)
    assert abs(second[0] - first[-1]) < 0.005  # no step where the command changed


def test_mute_and_master_fade_glide_and_keep_the_volume() -> None:
    p = player(volume=0.5, mute_ramp_s=0.02)
    p.submit(chunk(0, flat(SR * 4)))
    sink: ArrayOutput = p.output  # type: ignore[assignment]
    sink.pull(4)
    p.set_mute(True)
    muted = sink.pull(8)[:, 0]  # 2048 frames; the glide takes 320
    assert p.muted and p.volume == 0.5
    assert np.abs(np.diff(muted)).max() < 0.25 * np.pi / 2 / 320 * 1.01
    assert not muted[400:].any()
    p.set_mute(False)
    p.fade_to(0.0, 0.5)  # unmute while the master fades out: both glide together
    fading = sink.pull(40)[:, 0]  # 10240 frames = 0.64 s
    assert np.abs(np.diff(fading)).max() < 0.25 * np.pi / 2 / 320 * 1.01  # the unmute glide
    assert fading.max() < 0.25 and not fading[-100:].any() and p.master_gain == 0.0
    p.fade_to(1.0, 0.1)
    back = sink.pull(16)[:, 0]
    np.testing.assert_allclose(back[-1000:], 0.25, atol=1e-6)
    with pytest.raises(ConfigError, match=r"fade_to: expected a gain in 0..1, got 2"):
        p.fade_to(2, 1.0)
    p.stop()


def test_fade_in_at_start() -> None:
    p = player(fade_in_s=0.1)
    p.submit(chunk(0, flat(SR)))
    out = p.output.pull(16)[:, 0]  # type: ignore[union-attr]
    p.stop()
    assert out[0] < 0.001 and np.all(np.diff(out) >= -1e-7)
    np.testing.assert_allclose(out[1700:], 0.5, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(st.floats(0.1, 4.0), st.integers(1, 2**31), st.sampled_from([1, 37, 256, 1000]))
def test_the_limiter_never_lets_a_sample_clip(volume: float, seed: int, block: int) -> None:
    rng = np.random.default_rng(seed)
    n = 20 * block
    x = (rng.uniform(-1, 1, (n, 2)) * rng.uniform(0, 1, (n, 1)) * volume).astype(np.float32)
    limiter = PeakLimiter(SR, 1024, 2)
    for i in range(0, n, block):
        limiter.process(x[i : i + block])
    assert np.abs(x).max() < 1.0


def test_the_limiter_is_transparent_below_its_threshold_and_smooth_above() -> None:
    t = np.arange(SR * 2) / SR
    quiet = (0.86 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)[:, None].repeat(2, 1)
    limiter = PeakLimiter(SR, 1024, 2, threshold_db=-1.0)
    y = quiet.copy()
    for i in range(0, len(y), 256):
        limiter.process(y[i : i + 256])
    np.testing.assert_array_equal(y, quiet)  # bit for bit
    loud = quiet * 3.0  # +9.5 dB over: gain riding takes it, the knee only at the attack
    for i in range(0, len(loud), 256):
        limiter.process(loud[i : i + 256])
    assert np.abs(loud).max() < 1.0
    assert limiter.knee_blocks <= 2
    settled = loud[SR // 2 :, 0]
    assert settled.max() == pytest.approx(10 ** (-1.2 / 20), abs=0.01)


def test_player_limits_a_loud_volume() -> None:
    p = player(volume=4.0)
    p.submit(chunk(0, flat(SR, 0.6)))
    out = p.output.pull(40)  # type: ignore[union-attr]
    p.stop()
    assert np.abs(out).max() < 1.0 and p.limiter.min_gain < 0.5


def test_mono_program_plays_on_both_speakers_and_a_stereo_pair_can_go_to_3_4() -> None:
    mono = player(channels=1)
    mono.submit(chunk(0, flat(SR, 0.3, channels=1)))
    assert mono.device_channels == 2
    out = mono.output.pull(4)  # type: ignore[union-attr]
    mono.stop()
    np.testing.assert_array_equal(out, np.full((1024, 2), 0.3, np.float32))

    p = player(channels_out=(3, 4), record=None)
    audio = np.stack([np.full(SR, 0.1), np.full(SR, -0.2)], axis=1).astype(np.float32)
    p.submit(chunk(0, audio))
    out = p.output.pull(4)  # type: ignore[union-attr]
    p.stop()
    assert out.shape == (1024, 4)
    assert not out[:, :2].any()
    np.testing.assert_array_equal(out[:, 2:], audio[:1024])


def test_routing_rules_and_a_clear_error() -> None:
    assert ChannelMap(2, (1,)).mode == "mix" and ChannelMap(1, (2, 5)).device_channels == 5
    assert ChannelMap(2, (1, 2)).identity and not ChannelMap(2, (2, 1)).identity
    with pytest.raises(ConfigError, match=r"channels_out: expected 2 channels .* got \[1, 2, 3\]"):
        player(channels_out=(1, 2, 3))
    with pytest.raises(ValueError, match="distinct device channel numbers"):
        AudioOutConfig(channels_out=(3, 3))


@pytest.mark.parametrize("channels_out", [(), (3, 4)])
def test_fill_does_not_allocate(channels_out: tuple[int, ...]) -> None:
    """The whole callback path: read, DC blocker, gains gliding, limiter engaged, guard,
    routing, recorder off."""
    p = player(volume=3.0, channels_out=channels_out, dc_block_hz=5.0)
    t = np.arange(SR * 6) / SR
    loud = (0.5 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)[:, None].repeat(2, 1)
    p.submit(chunk(0, loud))
    out = np.zeros((4096, p.device_channels), np.float32)
    sizes = [256, 1, 333, 4096, 512]
    for i in range(40):
        p.fill(out[: sizes[i % 5]])
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i in range(600):
            if i % 100 == 0:
                p.set_volume(0.5 + (i % 200) / 100)  # setters run elsewhere; cheap tuples
                p.set_mute(i % 300 == 0)
                p.fade_to(1.0 - (i % 200) / 400, 0.05)
            p.fill(out[: sizes[i % 5]])
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    p.stop()
    grown = grown_in_our_code(before, after)  # not another thread's (the test runner's)
    assert grown < 4096, f"fill grew memory by {grown} bytes"


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 2048), min_size=1, max_size=30))
def test_fill_copes_with_any_block_size(blocks: list[int]) -> None:
    p = player(channels_out=(2, 1))
    ramp = np.arange(20000, dtype=np.float32)[:, None] / 40000
    audio = np.concatenate([ramp, -ramp], axis=1)
    p.submit(chunk(0, audio))
    played = []
    for n in blocks:
        out = np.zeros((n, 2), np.float32)
        p.fill(out)
        played.append(out)
    p.stop()
    got = np.concatenate(played)
    n = min(len(got), 20000)
    np.testing.assert_array_equal(got[:n], audio[:n, ::-1])  # swapped by channels_out
