"""Forged and duplicate PlaybackClocks from the LAN, on a room session (CurveZMQ off).

What an auditor playing an attacker reproduced against ``art2mus run``:

- one clock with a playhead of 2**52 - 1 (the protocol's largest) was followed at once:
  the room's next chunk was placed there, audio_out jumped to it and refused every real
  clock after (out of range): the room silent until audio_out was restarted;
- 400 such clocks at 20 Hz beside the real audio_out made 168 ``playback_restarted``
  and 337 start chunks in 20 s;
- a second, older audio_out (instance 0) on the room id made 132 restarts in 20 s and no
  ``duplicate_room``: instance 0 bypassed the duplicate guard.

The session runs on a fake clock; audio_outs are simulated reports.
"""

from __future__ import annotations

from typing import Any

import pytest

from engine.config import EngineConfig
from engine.generators.sine import SineGenerator
from engine.streaming import CLOCK_JUMP_CONFIRM_S, RoomSession
from ground.protocol import MAX_PLAYHEAD, PROTOCOL_VERSION, PlaybackClock

RATE = 48000


class FakeClock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


class AudioOut:
    """An audio_out playing in real time on the fake clock since ``began`` (its machine's
    clock agrees with ours; transport and output latency: 20 ms)."""

    def __init__(self, clock: FakeClock, instance: int, began: float | None = None) -> None:
        self.clock, self.instance = clock, instance
        self.began = clock.now if began is None else began

    def report(self) -> PlaybackClock:
        playhead = int((self.clock.now - self.began) * RATE)
        return PlaybackClock(v=PROTOCOL_VERSION, room="r", sample_rate=RATE, playhead=playhead,
                             buffered_until=playhead, wall_time=self.clock.now - 0.02,
                             instance=self.instance)

    def heard(self) -> int:
        return int((self.clock.now - self.began) * RATE)


def _forged(clock: FakeClock, playhead: int = MAX_PLAYHEAD, instance: int = 0,
            state: Any = "playing") -> PlaybackClock:
    """What spoof_clock.py sends: one playhead, stamped with the sender's time."""
    return PlaybackClock(v=PROTOCOL_VERSION, room="r", sample_rate=RATE, playhead=playhead,
                         buffered_until=playhead, wall_time=clock.now - 0.01, state=state,
                         instance=instance)


def _session() -> tuple[RoomSession, FakeClock, list[tuple[str, dict[str, Any]]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    config = EngineConfig(generator="sine", chunk_s=0.5, lead_s=1.5, transition_margin_s=0.3,
                          transition_crossfade_s=0.2)
    clock = FakeClock()
    session = RoomSession("r", 1, SineGenerator(RATE), config,
                          lambda kind, **fields: events.append((kind, fields)), clock=clock)
    return session, clock, events


def _drain(session: RoomSession) -> list[Any]:
    chunks = []
    while (chunk := session.next_chunk()) is not None:
        chunks.append(chunk)
    return chunks


def _play(session: RoomSession, clock: FakeClock, room: AudioOut, seconds: float,
          between: Any = None, every: int = 1) -> list[Any]:
    """``room`` reports at 20 Hz for ``seconds``; after every ``every``-th report, the
    report ``between()`` makes (if any) comes too. Every chunk made."""
    chunks: list[Any] = []
    for k in range(round(seconds * 20)):
        session.on_clock(room.report())
        chunks += _drain(session)
        if between is not None and k % every == 0:
            other = between()
            if other is not None:
                session.on_clock(other)
                chunks += _drain(session)
        clock.now += 0.05
    return chunks


def _kinds(events: list[tuple[str, dict[str, Any]]], kind: str) -> list[dict[str, Any]]:
    return [fields for k, fields in events if k == kind]


@pytest.mark.parametrize("instance", [0, 0xA1, 0x5EED],
                         ids=["instance 0", "the room's own instance", "a new instance"])
def test_one_forged_clock_far_ahead_is_refused_counted_and_the_room_plays_on(
        instance: int) -> None:
    session, clock, events = _session()
    room = AudioOut(clock, instance=0xA1)
    _play(session, clock, room, 5.0)
    session.on_clock(_forged(clock, instance=instance))
    estimate = session.playhead_estimate()
    assert estimate is not None and abs(estimate - room.heard()) <= RATE // 100
    chunks = _play(session, clock, room, 5.0)
    assert chunks and all(c.start_sample < room.heard() + 5 * RATE for c in chunks)
    assert [c.reason for c in chunks] == ["continue"] * len(chunks)
    assert _kinds(events, "playback_restarted") == []
    assert session.jumped_clocks == 1
    assert session.clock_drops.by_reason["playhead-jump"] == 1
    assert _kinds(events, "clock_jump_refused")[0]["playhead"] == MAX_PLAYHEAD


def test_forged_clocks_at_20_hz_beside_the_room_restart_nothing() -> None:
    """spoof_clock.py ... 4503599627370495 0 400 20 against a room with beats off: 168
    restarts and 337 start chunks in 20 s, before."""
    session, clock, events = _session()
    room = AudioOut(clock, instance=0xA1)
    _play(session, clock, room, 5.0)
    chunks = _play(session, clock, room, 20.0, between=lambda: _forged(clock))
    assert _kinds(events, "playback_restarted") == []
    assert [c.reason for c in chunks].count("start") == 0
    assert all(c.start_sample < room.heard() + 5 * RATE for c in chunks)
    assert session.jumped_clocks == 400
    assert len(_kinds(events, "clock_jump_refused")) == 1  # said once a minute, counted all


def test_a_jump_that_the_reports_after_it_agree_with_is_followed() -> None:
    """audio_out's playhead an hour ahead (another engine fed it), reported at its steady
    rate from then on: refused until CLOCK_JUMP_CONFIRM_S of reports agree, then followed
    (the room starts again there) and said."""
    session, clock, events = _session()
    room = AudioOut(clock, instance=0xA1)
    _play(session, clock, room, 5.0)
    room.began -= 3600.0
    session.on_clock(room.report())
    assert session.next_reason() != "start"  # one report is no proof
    jumped_at = clock.now
    while session.next_reason() != "start":
        clock.now += 0.05
        assert clock.now - jumped_at < 2 * CLOCK_JUMP_CONFIRM_S
        session.on_clock(room.report())
    assert clock.now - jumped_at >= CLOCK_JUMP_CONFIRM_S
    assert _kinds(events, "playhead_jump_followed")
    chunk = session.next_chunk()
    assert chunk is not None and chunk.reason == "start"
    assert room.heard() < chunk.start_sample < room.heard() + RATE
    assert _kinds(events, "playback_restarted") == []  # the same audio_out, jumped ahead
    assert CLOCK_JUMP_CONFIRM_S * 20 - 2 <= session.jumped_clocks <= CLOCK_JUMP_CONFIRM_S * 20


def test_a_forged_burst_that_does_not_move_as_a_playhead_is_never_followed() -> None:
    """Reports of one playhead, "playing", for ten seconds: a real audio_out's playhead
    moves 48,000 samples a second while it plays."""
    session, clock, events = _session()
    room = AudioOut(clock, instance=0xA1)
    _play(session, clock, room, 5.0)
    for _ in range(200):
        session.on_clock(_forged(clock, playhead=room.heard() + 3600 * RATE, instance=0xA1))
        clock.now += 0.05
        session.on_clock(_forged(clock, playhead=MAX_PLAYHEAD, instance=0xA1))
        clock.now += 0.05
    session.on_clock(room.report())
    assert _kinds(events, "playback_restarted") == []
    estimate = session.playhead_estimate()
    assert estimate is not None and abs(estimate - room.heard()) <= RATE // 100
    assert _kinds(events, "playhead_jump_followed") == []
    assert session.jumped_clocks == 400


@pytest.mark.parametrize("instance", [0, 0x22])
def test_a_restarted_audio_out_is_still_followed_at_once(instance: int) -> None:
    """Beside a refused jump: the room's audio_out restarted (its playhead back to 0, or a
    new instance from 0) is a restart on its first report."""
    session, clock, events = _session()
    room = AudioOut(clock, instance=0 if instance == 0 else 0x11)
    _play(session, clock, room, 5.0)
    session.on_clock(_forged(clock))  # refused
    restarted = AudioOut(clock, instance=instance)
    session.on_clock(restarted.report())
    assert len(_kinds(events, "playback_restarted")) == 1
    chunk = session.next_chunk()
    assert chunk is not None and chunk.reason == "start"
    assert chunk.start_sample < RATE
    _play(session, clock, restarted, 5.0)
    assert len(_kinds(events, "playback_restarted")) == 1
    assert session.duplicate is None


def test_an_older_audio_out_beside_the_room_is_a_duplicate_not_a_restart_each_report() -> None:
    """dup_clock.py ... r1 20 0: a second audio_out on the room id, from before the instance
    field (instance 0), its own timeline from 0 at 10 Hz, beside the room's at 20 Hz."""
    session, clock, events = _session()
    room = AudioOut(clock, instance=0xA1)
    _play(session, clock, room, 10.0)
    older = AudioOut(clock, instance=0)
    chunks = _play(session, clock, room, 20.0, between=older.report, every=2)
    restarts = _kinds(events, "playback_restarted")
    assert len(restarts) <= 2  # until the switches say there are two
    said = _kinds(events, "duplicate_room")
    assert len(said) == 1
    assert (said[0]["following"], said[0]["refused"]) == ("000000a1", "00000000/1")
    assert session.duplicate == {"following": "000000a1", "refused": ["00000000/1"],
                                 "refused_clocks": session.duplicate_clocks}
    assert 200 - 5 <= session.duplicate_clocks <= 200
    assert session.clock_drops.by_reason["duplicate-room"] == session.duplicate_clocks
    assert [c.reason for c in chunks].count("start") == len(restarts)
    estimate = session.playhead_estimate()
    assert estimate is not None and abs(estimate - room.heard()) <= RATE // 100


def test_two_older_audio_outs_on_one_room_id_are_told_apart_by_their_playheads() -> None:
    """(400 restarts in 20 s before.) Without instances, one back on a timeline followed
    before is followed (it may be a restarted one, playing what it was sent as it
    subscribed): a restart for each switch until the switches say there are two."""
    from engine.streaming import DUPLICATE_SWITCHES

    session, clock, events = _session()
    first = AudioOut(clock, instance=0)
    _play(session, clock, first, 10.0)
    second = AudioOut(clock, instance=0)  # 10 s behind the first
    _play(session, clock, first, 20.0, between=second.report)
    assert len(_kinds(events, "playback_restarted")) <= DUPLICATE_SWITCHES
    said = _kinds(events, "duplicate_room")
    assert len(said) == 1 and said[0]["following"] == "00000000/1"
    assert 400 - 5 <= session.duplicate_clocks <= 400
    estimate = session.playhead_estimate()
    assert estimate is not None and abs(estimate - first.heard()) <= RATE // 100


@pytest.mark.parametrize("instance", [0, 0x22])
def test_a_restarted_audio_out_playing_chunks_sent_for_its_old_timeline_is_followed_at_once(
        instance: int) -> None:
    """A restarted audio_out is sent, as it subscribes, the chunks the engine still makes
    for the old timeline (it has not reported yet): its playhead jumps from 0 onto them,
    which is material the engine sent, no jump to refuse (found running art2mus: refused
    for 2 s, the room held)."""
    session, clock, events = _session()
    old = AudioOut(clock, instance=0 if instance == 0 else 0x11)
    _play(session, clock, old, 5.0)
    sent = session.queue_end
    assert sent is not None
    clock.now += 2.0  # audio_out killed, restarted by the supervisor
    restarted = AudioOut(clock, instance=instance)
    session.on_clock(restarted.report())  # playhead 0: a restart
    _drain(session)
    clock.now += 0.05
    on_old = PlaybackClock(v=PROTOCOL_VERSION, room="r", sample_rate=RATE, playhead=sent - RATE,
                           buffered_until=sent, wall_time=clock.now - 0.02, instance=instance)
    session.on_clock(on_old)
    assert session.jumped_clocks == 0
    chunk = session.next_chunk()
    assert chunk is not None and chunk.reason == "start"
    assert sent - RATE < chunk.start_sample < sent
    assert session.duplicate is None


def test_an_older_audio_out_restarting_over_and_over_is_no_duplicate() -> None:
    """Without an instance, a restart is a playhead back to the start: each is followed at
    once, none taken for a second audio_out."""
    session, clock, events = _session()
    for _ in range(11):
        _play(session, clock, AudioOut(clock, instance=0), 0.8)
    assert len(_kinds(events, "playback_restarted")) == 10
    assert session.duplicate_clocks == 0 and _kinds(events, "duplicate_room") == []
