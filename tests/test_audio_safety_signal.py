"""What the speakers get at the edges: a DC offset, a start mid-piece, a sound card come back.

- A chunk with a DC offset (+0.9) went to the speakers as it was, and when the engine
  stopped after it the hold looped it for seconds: the player's
  :class:`~audio_out.mixer.DCBlocker` (a one-pole high-pass at ``dc_block_hz``, 5 Hz)
  takes it off, with no click of its own at splices, holds and resumes.
- A restarted audio_out resumes mid-piece, and a card plugged back in reopens its gate
  mid-music: both started at full level from silence, a click. The first material of a
  start that does not begin in silence, and a card come back, now fade in over
  ``fade_in_s`` (:class:`~audio_out.mixer.StartFade`).

In every case the take is what the device got, sample for sample.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import soundfile
from hypothesis import given, settings
from hypothesis import strategies as st
from memory import grown_in_our_code
from scipy.signal import lfilter

from audio_out.config import AudioOutConfig
from audio_out.mixer import DCBlocker
from audio_out.outputs import ArrayOutput, FailoverOutput, SoundDeviceOutput
from audio_out.player import Player
from ground.events import MemorySink
from ground.protocol import PROTOCOL_VERSION, Array, AudioChunk

SR = 16000
BLOCK = 256


def tone(n: int, start: int = 0, freq: float = 440.0, amp: float = 0.3,
         phase: float = 0.0) -> np.ndarray:
    t = (np.arange(n) + start) / SR
    x = (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)
    return np.stack([x, x], axis=1)


def chunk(audio: np.ndarray, seq: int = 0, start: int = 0, crossfade: int = 0,
          reason: str = "continue") -> AudioChunk:
    return AudioChunk(v=PROTOCOL_VERSION, room="r1", seq=seq, start_sample=start,
                      sample_rate=SR, audio=Array.from_numpy(audio), crossfade=crossfade,
                      reason=reason)  # type: ignore[arg-type]


def array_sink(config: AudioOutConfig, sr: int, ch: int, fill: Any, log: Any) -> ArrayOutput:
    return ArrayOutput(sr, ch, config.block_size, fill)


def array_player(tmp_path: Path | None = None, **settings: Any) -> tuple[Player, ArrayOutput]:
    record = {"record": str(tmp_path / "take.wav")} if tmp_path is not None else {}
    config = AudioOutConfig(sample_rate=SR, block_size=BLOCK, **record, **settings)
    player = Player("r1", config, 2, MemorySink(), output_factory=array_sink)
    player.start()
    assert isinstance(player.output, ArrayOutput)
    return player, player.output


def take(player: Player) -> np.ndarray:
    assert player.recorder is not None
    audio, _ = soundfile.read(player.recorder.path, dtype="float32")
    return np.asarray(audio)


def jumps(x: np.ndarray) -> np.ndarray:
    """|x[n] - x[n-1]| per frame, the larger channel."""
    return np.asarray(np.abs(np.diff(x, axis=0)).max(axis=1))


def raised_cosine(frames: int) -> np.ndarray:
    return ((1.0 - np.cos(np.pi * np.arange(1, frames + 1) / frames)) / 2.0)[:, None]


# -- the DC blocker -----------------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(st.sampled_from([8000, 16000, 48000, 384000]), st.floats(1.0, 20.0),
       st.lists(st.integers(1, 8192), min_size=1, max_size=12))
def test_the_dc_blocker_is_one_continuous_one_pole_high_pass(rate: int, corner: float,
                                                             blocks: list[int]) -> None:
    rng = np.random.default_rng(len(blocks))
    x = (0.3 * rng.standard_normal((sum(blocks), 2)) + [0.5, -0.2]).astype(np.float32)
    blocker = DCBlocker(rate, 8192, 2, corner)
    y = x.copy()
    at = 0
    for n in blocks:
        blocker.process(y[at : at + n])
        at += n
    r = np.exp(-2 * np.pi * corner / rate)
    expected = lfilter([1.0, -1.0], [1.0, -r], x.astype(np.float64), axis=0)
    np.testing.assert_allclose(y, expected, atol=2e-6)  # float32's rounding, no more


def test_the_dc_blocker_takes_an_offset_away_in_tens_of_milliseconds() -> None:
    blocker = DCBlocker(SR, BLOCK, 2, 5.0)
    x = np.full((SR, 2), 0.9, np.float32)
    for i in range(0, SR, BLOCK):
        blocker.process(x[i : i + BLOCK])
    assert x[0, 0] == pytest.approx(0.9)  # the step itself passes (it is the material's)
    assert np.abs(x[int(0.2 * SR) :]).max() < 0.9 * 0.01  # 1 % left after 0.2 s
    off = DCBlocker(SR, BLOCK, 2, 0.0)
    y = np.full((BLOCK, 2), 0.9, np.float32)
    off.process(y)
    assert (y == np.float32(0.9)).all()  # 0: off, bit for bit


def test_a_chunk_of_dc_leaves_the_speakers_at_once_and_the_hold_does_not_repeat_it() -> None:
    player, sink = array_player()  # the defaults: hold 8 s, fade 3 s, 5 Hz
    player.submit(chunk(tone(SR), 0, 0))
    player.submit(chunk(np.full((SR // 2, 2), 0.9, np.float32), 1, SR))  # the last chunk
    out = sink.pull(13 * SR // BLOCK)
    player.stop()
    seconds = out[SR : 12 * SR, 0].reshape(-1, SR)
    assert np.abs(seconds.mean(axis=1)).max() < 0.05  # the offset: was 0.49, 0.35, 0.21...
    assert np.abs(out[int(1.15 * SR) : int(1.5 * SR)]).max() < 0.02  # the chunk: gone at once
    # the hold loops the chunk with the music before it: only the material's own steps
    # pass, never the offset (was 2.1 s of samples above 0.5)
    assert np.count_nonzero(np.abs(out[int(1.5 * SR) :, 0]) > 0.5) < 0.1 * SR


def test_the_dc_blocker_adds_no_click_at_splices_holds_or_resumes(tmp_path: Path) -> None:
    def run(corner: float, folder: Path) -> tuple[np.ndarray, np.ndarray]:
        player, sink = array_player(folder, dc_block_hz=corner, hold_s=0.3, fade_s=0.2)
        player.submit(chunk(tone(2 * SR), 0, 0))
        played = [sink.pull(20)]
        # a transition, crossfaded over 0.1 s, then a gap jumped, then starvation
        player.submit(chunk(tone(SR, 8000, freq=330.0, amp=0.4), 1, 8000, crossfade=1600,
                            reason="transition"))
        player.submit(chunk(tone(SR // 2, 20000, freq=550.0), 2, 20000))
        played.append(sink.pull(120))
        player.submit(chunk(tone(SR, 40000, freq=220.0), 3, 40000))  # back from the hold
        played.append(sink.pull(80))
        player.stop()
        out = np.concatenate(played)
        return out, take(player)

    (a := tmp_path / "off").mkdir()
    (b := tmp_path / "on").mkdir()
    plain, _ = run(0.0, a)
    blocked, recorded = run(5.0, b)
    np.testing.assert_array_equal(recorded, blocked)
    assert np.abs(blocked).max() > 0.25  # it played
    # a one-pole high-pass changes a step by at most (1 - r) * |y|: no click of its own
    assert jumps(blocked).max() <= jumps(plain).max() + 0.005


def test_fill_allocates_nothing_with_the_blocker_the_fades_and_the_guard_at_work() -> None:
    class Reopening(ArrayOutput):
        reopened = 0  # a sink that says a card came back: the player fades in

    def factory(config: AudioOutConfig, sr: int, ch: int, fill: Any, log: Any) -> Reopening:
        return Reopening(sr, ch, config.block_size, fill)

    config = AudioOutConfig(sample_rate=SR, block_size=BLOCK, volume=2.0)
    player = Player("r1", config, 2, MemorySink(), output_factory=factory)
    player.start()
    output = player.output
    assert isinstance(output, Reopening)
    music = tone(30 * SR, phase=1.0) + np.float32(0.2)  # mid-piece, with an offset
    player.timeline.write_chunk(0, music)
    player.timeline.write_chunk(len(music), np.full((SR, 2), np.inf, np.float32))
    out = np.zeros((4096, 2), np.float32)
    sizes = [256, 1, 333, 4096, 512]
    for i in range(40):
        player.fill(out[: sizes[i % 5]])
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for i in range(600):
            if i % 50 == 0:
                output.reopened += 1
            player.fill(out[: sizes[i % 5]])
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    player.stop()
    assert player.start_fade.count >= 12 and np.isfinite(out).all()
    grown = grown_in_our_code(before, after)
    assert grown < 4096, f"fill grew memory by {grown} bytes"


# -- fading in from silence -----------------------------------------------------------------


def test_a_restarted_audio_out_fades_in_where_the_piece_is(tmp_path: Path) -> None:
    # The engine goes on where the room's timeline is, 3 s in, at the tone's crest.
    player, sink = array_player(tmp_path, dc_block_hz=0.0)
    music = tone(SR, 3 * SR, phase=np.pi / 2)
    player.submit(chunk(music, 7, 3 * SR))
    out = sink.pull(40)
    player.stop()
    fade = round(AudioOutConfig().fade_in_s * SR)
    assert abs(out[0]).max() < 1e-4  # was 0.3: a step from silence to the crest
    np.testing.assert_allclose(out[:fade], music[:fade] * raised_cosine(fade), atol=1e-6)
    np.testing.assert_array_equal(out[fade:], music[fade : len(out)])
    assert jumps(out).max() <= jumps(music).max()
    np.testing.assert_array_equal(take(player), out)
    assert player.start_fade.count == 1


def test_a_piece_that_begins_in_silence_plays_as_it_is() -> None:
    player, sink = array_player(dc_block_hz=0.0)
    music = tone(SR)  # sin from 0: the first frame is silence
    player.submit(chunk(music, 0, 0, reason="start"))
    out = sink.pull(40)
    player.stop()
    np.testing.assert_array_equal(out, music[: len(out)])
    assert player.start_fade.count == 0


def test_fade_in_s_0_starts_at_full_level() -> None:
    player, sink = array_player(dc_block_hz=0.0, fade_in_s=0.0)
    music = tone(SR, 3 * SR, phase=np.pi / 2)
    player.submit(chunk(music, 7, 3 * SR))
    out = sink.pull(4)
    player.stop()
    np.testing.assert_array_equal(out, music[: len(out)])


class FakeStream:
    """A PortAudio stream that calls back only from :meth:`play`."""

    def __init__(self, kwargs: dict[str, Any]) -> None:
        self.callback = kwargs["callback"]
        self.channels = kwargs["channels"]
        self.blocksize = kwargs["blocksize"]
        self.device = 0
        self.latency = 0.02
        self.active = False
        self.closed = False

    def start(self) -> None:
        self.active = True

    def stop(self) -> None:
        self.active = False

    abort = stop

    def close(self) -> None:
        self.closed = True

    def play(self, blocks: int) -> np.ndarray:
        out = np.full((blocks * self.blocksize, self.channels), 9.0, np.float32)
        for i in range(blocks):
            self.callback(out[i * self.blocksize : (i + 1) * self.blocksize], self.blocksize,
                          None, SimpleNamespace(output_underflow=False))
        return out


class FakeSoundDevice:
    """The parts of sounddevice the outputs use: one card, its streams in order."""

    def __init__(self) -> None:
        self.streams: list[FakeStream] = []
        self.default = SimpleNamespace(device=(0, 0))

    def query_devices(self, index: int | None = None) -> Any:
        card = {"name": "Fake USB Audio", "max_output_channels": 2}
        return [card] if index is None else card

    def OutputStream(self, **kwargs: Any) -> FakeStream:  # noqa: N802 - mirrors sounddevice
        self.streams.append(FakeStream(kwargs))
        return self.streams[-1]


@pytest.mark.parametrize("corner", [0.0, 5.0])
def test_a_sound_card_that_comes_back_fades_in_and_the_take_follows(tmp_path: Path,
                                                                     corner: float) -> None:
    sd, clock = FakeSoundDevice(), SimpleNamespace(now=0.0)

    def factory(cfg: AudioOutConfig, sr: int, ch: int, fill: Any, log: Any) -> FailoverOutput:
        device = SoundDeviceOutput(cfg, sr, ch, fill, sd=sd)
        return FailoverOutput(cfg, sr, ch, fill, log, device,
                              null=ArrayOutput(sr, ch, BLOCK, fill), clock=lambda: clock.now,
                              watch_s=None, retry_s=5.0)

    config = AudioOutConfig(output="auto", sample_rate=SR, block_size=BLOCK, dc_block_hz=corner,
                            record=str(tmp_path / "take.wav"), stop_fade_s=0.0)
    events = MemorySink()
    player = Player("r1", config, 2, events, output_factory=factory)
    player.start()
    failover = player.output
    assert isinstance(failover, FailoverOutput)
    music = tone(6 * SR)  # from silence: the start itself needs no fade
    player.submit(chunk(music, 0, 0, reason="start"))
    played = [sd.streams[0].play(20)]
    clock.now = 0.1
    failover.check()  # the watch sees it call back
    clock.now = 1.1
    failover.check()  # then no callback for a second: lost, the null sink plays on
    assert player.output_status()["state"] == "lost"
    null = failover._null
    assert isinstance(null, ArrayOutput)
    played.append(null.pull(40))
    clock.now = 6.2
    failover.check()  # retry_s on: reopened, gated, silence until it calls back
    assert not sd.streams[1].play(2).any()
    clock.now = 6.3
    failover.check()
    assert events.kinds().count("output_restored") == 1
    back = sd.streams[1].play(30)
    played.append(back)
    player.stop()

    fade = round(config.fade_in_s * SR)
    heard = music[60 * BLOCK : 90 * BLOCK]  # where the music was when the card came back
    # was heard[0] itself, a step; from zero even with the DC blocker's memory of the music
    assert abs(back[0]).max() < 1e-5 and abs(heard[0]).max() > 0.1
    assert jumps(back).max() <= 1.01 * jumps(music).max()  # the (blocked) music's own steps
    out = np.concatenate(played)
    np.testing.assert_array_equal(take(player), out)  # device, null sink, device: one take
    assert player.start_fade.count == 1
    if corner == 0.0:  # the program as sent: the fade's exact shape, nothing lost
        np.testing.assert_allclose(back[:fade], heard[:fade] * raised_cosine(fade), atol=1e-6)
        np.testing.assert_array_equal(back[fade:], heard[fade:])
        np.testing.assert_array_equal(out[: 60 * BLOCK], music[: 60 * BLOCK])
