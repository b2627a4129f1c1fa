"""A playhead no chunk can throw far ahead, and a playhead bound with headroom below 2**53.

Before: one spoofed chunk at sample 2**52 (the LAN audit) made audio_out jump its playhead
there for good, over the gap, and the engine refused every real clock of the room after it
(out of range): the room stayed silent until audio_out was restarted. And a clock's
playhead could be 2**52, one bit below where float64 stops holding every integer.
"""

from __future__ import annotations

import numpy as np
import pytest

from audio_out.config import AudioOutConfig
from audio_out.outputs import ArrayOutput
from audio_out.player import Player
from audio_out.timeline import TimelineBuffer
from ground.events import MemorySink
from ground.protocol import (
    MAX_PLAYHEAD,
    MAX_SAMPLE,
    PROTOCOL_VERSION,
    Array,
    AudioChunk,
    PlaybackClock,
    ProtocolError,
    decode,
    encode,
)

CH = 2
SR = 16000


def small_buffer() -> TimelineBuffer:
    return TimelineBuffer(capacity_frames=4096, channels=CH, block_frames=64,
                          max_block_frames=256, hold_frames=2000, fade_frames=1000,
                          resume_frames=200, loop_frames=3000, loop_crossfade_frames=300)


def ramp(start: int, n: int) -> np.ndarray:
    t = np.arange(n, dtype=np.float32) + float(start % 1000)
    return np.stack([t, -t], axis=1) / 1000.0


def play(tb: TimelineBuffer, frames: int, block: int = 64) -> np.ndarray:
    out = np.zeros((frames, CH), np.float32)
    for i in range(0, frames, block):
        tb.read_into(out[i : i + block])
    return out


# ------------------------------------------------------------------ defect 3
@pytest.mark.parametrize("ahead", [2**52 - 600, 2**40, 4096 + 1])
def test_a_chunk_past_the_buffer_of_a_dry_playhead_is_refused_not_jumped_to(
        ahead: int) -> None:
    tb = small_buffer()
    tb.write_chunk(0, ramp(0, 600))
    play(tb, 1000)  # dry: holding at 600, where the material ended
    assert (tb.playhead, tb.state) == (600, "holding")
    result = tb.write_chunk(600 + ahead, ramp(0, 500))
    assert not result.accepted and tb.buffered_until == 600
    assert result.kind == ("out-of-range" if ahead > MAX_PLAYHEAD else "early")
    assert (tb.early_chunks, tb.out_of_range_chunks) == (
        (0, 1) if ahead > MAX_PLAYHEAD else (1, 0))
    play(tb, 500)
    assert tb.playhead == 600  # never moved there
    real = tb.write_chunk(600, ramp(600, 800))  # the engine's next chunk plays
    assert real.kind == "append" and real.accepted
    play(tb, 800)
    assert tb.playhead == 1400 and tb.gaps == 0


def test_a_chunk_past_the_buffer_of_a_playing_queue_is_early() -> None:
    tb = small_buffer()
    tb.write_chunk(0, ramp(0, 2000))
    play(tb, 512)
    result = tb.write_chunk(512 + 4096, ramp(0, 100))  # the ring holds 4096 from the playhead
    assert (result.kind, result.accepted, result.overflow_frames) == ("early", False, 100)
    assert tb.early_chunks == 1 and tb.buffered_until == 2000


def test_a_resume_within_the_buffer_of_a_dry_playhead_is_still_a_gap_jumped() -> None:
    """An engine restarted while audio_out held resumes a little later: played."""
    tb = small_buffer()
    tb.write_chunk(0, ramp(0, 600))
    play(tb, 1000)
    result = tb.write_chunk(600 + 3000, ramp(3600, 500))
    assert result.kind == "gap" and result.accepted
    play(tb, 500)
    assert tb.playhead == 4100 and tb.gaps == 1


def test_a_starts_first_chunk_may_begin_far_along_the_engines_timeline() -> None:
    """A restarted audio_out takes up an engine that has run for 90 days at 48 kHz."""
    tb = small_buffer()
    start = 90 * 86400 * 48000  # 3.7e11
    result = tb.write_chunk(start, ramp(start, 500))
    assert result.accepted and result.kind == "gap"
    out = play(tb, 512)
    assert tb.playhead == start + 500
    np.testing.assert_array_equal(out[:500], ramp(start, 500))
    # ...and from there on, only what the ring holds
    assert tb.write_chunk(start + 500 + 5000, ramp(0, 100)).kind == "early"


def test_a_first_chunk_past_what_a_clock_can_report_is_out_of_range() -> None:
    tb = small_buffer()
    assert tb.write_chunk(2**52, ramp(0, 500)).kind == "out-of-range"
    assert tb.write_chunk(MAX_PLAYHEAD - 499, ramp(0, 500)).kind == "out-of-range"
    assert tb.out_of_range_chunks == 2 and tb.state == "starting"
    assert tb.write_chunk(MAX_PLAYHEAD - 500, ramp(0, 500)).accepted  # ends on the bound


def test_the_player_stays_on_the_engines_timeline_under_a_spoofed_chunk() -> None:
    """The audit's attack through the player: chunks at 2**52 and at 2**45 from the LAN,
    while the room plays and while it runs dry; the clock stays where the music is."""
    config = AudioOutConfig(output="none", sample_rate=SR, block_size=256, buffer_s=2.0)
    events = MemorySink()
    player = Player("r1", config, 2, events,
                    output_factory=lambda c, sr, ch, fill, log: ArrayOutput(
                        sr, ch, c.block_size, fill))
    player.start()
    sink = player.output
    assert isinstance(sink, ArrayOutput)

    def chunk(seq: int, start: int, frames: int) -> AudioChunk:
        audio = np.full((frames, 2), 0.1, np.float32)
        return AudioChunk(v=PROTOCOL_VERSION, room="r1", seq=seq, start_sample=start,
                          sample_rate=SR, audio=Array.from_numpy(audio))

    player.submit(chunk(0, 0, SR))
    sink.pull(20)
    assert player.submit(chunk(1, 2**52, 4800)).kind == "out-of-range"
    sink.pull(60)  # past the end of the queue: dry
    assert player.clock().state in ("holding", "silent")
    assert player.submit(chunk(2, 2**45, 4800)).kind == "early"
    sink.pull(20)
    assert player.clock().playhead == SR
    assert player.submit(chunk(3, SR, SR)).accepted  # the engine's continuation
    sink.pull(20)
    assert player.clock().playhead == SR + 20 * 256
    player.stop()
    splices = [e["splice"] for e in events.of("chunk_received")]
    assert splices == ["append", "out-of-range", "early", "append"]


# ------------------------------------------------------------------ defect 4
def _clock(playhead: int) -> PlaybackClock:
    return PlaybackClock(v=PROTOCOL_VERSION, room="r", sample_rate=48000, playhead=playhead,
                         buffered_until=playhead, wall_time=1.7e9)


def test_a_clock_playhead_keeps_headroom_below_float64_integers() -> None:
    for playhead in (2**52 - 1, 2**52, 2**48 + 1):
        with pytest.raises(ProtocolError) as error:
            decode(encode(_clock(playhead)))
        assert error.value.reason == "out-of-range"
    assert decode(encode(_clock(MAX_PLAYHEAD))) == _clock(MAX_PLAYHEAD)
    # 90 days at 192 kHz, far below the bound
    days_90 = 90 * 86400 * 192000
    assert decode(encode(_clock(days_90))) == _clock(days_90) and days_90 * 100 < MAX_PLAYHEAD
    # the headroom: sums and products by up to 32 made from any playhead stay exact
    for value in (MAX_PLAYHEAD * 32 - 1, MAX_PLAYHEAD + 60 * 384000 * 2 + 1):
        assert int(float(value)) == value
    assert MAX_PLAYHEAD + 3600 * 384000 < MAX_SAMPLE  # a chunk an hour after it decodes
