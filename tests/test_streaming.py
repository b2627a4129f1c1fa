"""Room sessions on the sample timeline: lead, continuity, transitions, caching."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.config import EngineConfig
from engine.generators.base import RoomControls
from engine.generators.sine import SineGenerator
from engine.streaming import RoomSession, render_offline
from ground.params import PARAMETERS
from ground.protocol import PROTOCOL_VERSION, ArtworkView, PlaybackClock

RATE = 48000


class CountingSine(SineGenerator):
    """The sine fake, counting how often conditioning is computed."""

    def __init__(self) -> None:
        super().__init__(sample_rate=RATE)
        self.prepared: list[str | None] = []

    def prepare(self, view: ArtworkView) -> float:
        self.prepared.append(view.artwork_id)
        return super().prepare(view)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _view(artwork_id: str, brightness: float, seq: int = 0) -> ArtworkView:
    return ArtworkView(v=PROTOCOL_VERSION, room="r", seq=seq, time=0.0, state="artwork",
                       artwork_id=artwork_id, confidence=1.0, features={"brightness": brightness})


def _clock(playhead: int, state: Any = "playing") -> PlaybackClock:
    return PlaybackClock(v=PROTOCOL_VERSION, room="r", sample_rate=RATE, playhead=playhead,
                         buffered_until=playhead, wall_time=0.0, state=state)


def _session(**engine: Any) -> tuple[RoomSession, CountingSine, FakeClock]:
    config = EngineConfig(generator="sine", chunk_s=0.5, lead_s=1.5, transition_margin_s=0.3,
                          transition_crossfade_s=0.2, **engine)
    generator, clock = CountingSine(), FakeClock()
    return RoomSession("r", 1, generator, config, clock=clock), generator, clock


def _drain(session: RoomSession) -> list[Any]:
    chunks = []
    while (chunk := session.next_chunk()) is not None:
        chunks.append(chunk)
    return chunks


def test_nothing_is_generated_before_audio_out_reports_a_clock() -> None:
    session, _, _ = _session()
    assert session.next_chunk() is None


def test_start_then_contiguous_continuations_up_to_the_lead() -> None:
    session, _, _ = _session()
    session.on_clock(_clock(10_000))
    chunks = _drain(session)
    first, rest = chunks[0], chunks[1:]
    assert first.reason == "start" and first.start_sample == 10_000 + 14_400
    assert first.crossfade == 9_600
    ends = first.start_sample + first.audio.shape[0]
    for chunk in rest:
        assert chunk.reason == "continue" and chunk.crossfade == 0
        assert chunk.start_sample == ends  # sample-exact continuation
        ends += chunk.audio.shape[0]
    assert 10_000 + 72_000 <= ends < 10_000 + 72_000 + 24_000  # lead covered, not overshot
    assert [c.seq for c in chunks] == list(range(len(chunks)))


def test_continuations_are_phase_continuous() -> None:
    session, _, clock = _session()
    session.on_view(_view("a", 0.3))
    session.on_clock(_report(0, clock.now))
    clock.now += 1.0  # (a playhead further ahead than time allows is not followed at once)
    session.on_clock(_report(48_000, clock.now))
    chunks = _drain(session) + _drain(session)
    clock.now += 1.0
    session.on_clock(_report(96_000, clock.now))
    chunks += _drain(session)
    assert len(chunks) >= 3
    audio = np.concatenate([c.audio.to_numpy() for c in chunks])
    steps = np.abs(np.diff(audio[:, 0]))
    joins = np.cumsum([c.audio.shape[0] for c in chunks])[:-1] - 1
    inside = np.delete(steps, joins)
    assert steps[joins].max() <= inside.max() + 1e-6


def test_the_playhead_advances_and_more_is_generated() -> None:
    session, _, clock = _session()
    session.on_clock(_clock(0))
    _drain(session)
    assert session.next_chunk() is None
    clock.now += 0.6  # extrapolated from the last report while playing
    assert session.next_chunk() is not None


def test_an_artwork_change_starts_new_material_at_now_plus_margin() -> None:
    session, generator, _ = _session()
    session.on_view(_view("a", 0.2))
    session.on_clock(_clock(0))
    queued = _drain(session)
    queue_end = queued[-1].start_sample + queued[-1].audio.shape[0]
    session.on_clock(_clock(24_000))
    assert session.on_view(_view("b", 0.9, seq=1))
    transition = session.next_chunk()
    assert transition is not None and transition.reason == "transition"
    assert 24_000 + 14_400 <= transition.start_sample < 24_000 + 14_400 + 2_400 < queue_end
    assert transition.crossfade == 9_600 and transition.artwork_id == "b"
    high = transition.audio.to_numpy()[:, 0]
    crossings = np.count_nonzero(np.diff(np.signbit(high)))
    low = queued[0].audio.to_numpy()[: len(high), 0]
    assert crossings > np.count_nonzero(np.diff(np.signbit(low)))  # the new, brighter pitch
    assert generator.prepared == [None, "a", "b"]


def test_conditioning_is_cached_per_artwork_and_heartbeats_change_nothing() -> None:
    session, generator, _ = _session()
    session.on_clock(_clock(0))
    for seq, artwork in enumerate(["a", "a", "b", "a", "b", "b"]):
        session.on_view(_view(artwork, 0.5 if artwork == "a" else 0.7, seq))
    assert generator.prepared == [None, "a", "b"]
    assert not session.on_view(_view("b", 0.7, 9))


def test_an_audio_out_restart_resets_the_stream() -> None:
    session, _, _ = _session()
    session.on_clock(_clock(500_000))
    _drain(session)
    session.on_clock(_clock(100, state="starting"))
    chunk = session.next_chunk()
    assert chunk is not None and chunk.reason == "start"
    assert 100 + 14_400 <= chunk.start_sample < 100 + 14_400 + 2_400


def test_falling_behind_the_playhead_resynchronises_with_a_crossfade() -> None:
    session, _, clock = _session()
    session.on_clock(_report(0, clock.now))
    _drain(session)
    clock.now += 8.5  # audio_out played on past what we sent (another engine fed it)
    session.on_clock(_report(400_000, clock.now))
    chunk = session.next_chunk()
    assert chunk is not None and chunk.reason == "start" and chunk.crossfade > 0


def test_slow_generation_pushes_transition_material_further_ahead() -> None:
    session, generator, _ = _session()
    session.on_clock(_clock(0))
    _drain(session)
    for _ in range(60):  # starts and transitions now take 0.8 s (a slow model, a busy GPU)
        session.note_start_call(0.8)
    session.on_view(_view("b", 0.9))
    chunk = session.next_chunk()
    assert chunk is not None and chunk.reason == "transition"
    # the margin (0.3 s), and the time such a call takes with 50 % slack
    assert abs(chunk.start_sample - (14_400 + int(1.5 * 0.8 * RATE))) <= 2


def test_render_offline_is_deterministic_and_the_right_length() -> None:
    a, notes, decisions = render_offline(SineGenerator(), _view("a", 0.5), 1.3, seed=2)
    b, _, _ = render_offline(SineGenerator(), _view("a", 0.5), 1.3, seed=2)
    assert a.shape == (round(1.3 * RATE), 2) and np.array_equal(a, b)
    assert notes.shape == (0, 6) and decisions == {"frequency_hz": 440.0}


# -- live controls: the table drives the session, the generator gives them meaning ----------


def test_every_engine_parameter_names_a_room_control_field() -> None:
    fields = {f.name for f in dataclasses.fields(RoomControls)} - {"sync"}  # not a parameter
    engine = [p for p in PARAMETERS.values() if p.role == "engine"]
    assert {p.field for p in engine} == fields
    assert all(p.field is None for p in PARAMETERS.values() if p.role != "engine")
    assert RoomControls().neutral
    assert len(RoomControls().shapes_condition) == sum(p.replans == "condition" for p in engine)


class KnobSine(CountingSine):
    """A sine whose condition the knobs move in its own way: by ``intensity`` hertz."""

    def __init__(self) -> None:
        super().__init__()
        self.applied: list[RoomControls] = []

    def apply_controls(self, view: ArtworkView, condition: Any, controls: RoomControls) -> float:
        self.applied.append(controls)
        return float(condition) + controls.intensity


def test_the_session_asks_the_generator_what_the_knobs_mean() -> None:
    config = EngineConfig(generator="sine", chunk_s=0.5, lead_s=1.5, transition_margin_s=0.3,
                          transition_crossfade_s=0.2)
    generator, clock = KnobSine(), FakeClock()
    session = RoomSession("r", 1, generator, config, clock=clock)
    session.on_view(_view("a", 0.5))
    base = session.condition
    assert session.set_controls({"density": 0.75, "volume": 2.0}) == ["intensity"]
    session.tick()
    assert session.condition == base + 0.75 and generator.applied[-1].intensity == 0.75
    assert session.set_controls({"next_variation": 3, "freeze": True}) == ["freeze", "variation"]
    assert session.controls.variation == 3 and session.controls.freeze is True
    assert session.set_controls({"intensity": 0.5}) == ["intensity"]
    clock.now += 1.0
    session.tick()  # neutral again: the artwork's own condition, the generator not asked
    assert session.condition == base and len(generator.applied) == 1



def test_chunks_lost_on_the_way_are_made_again_rather_than_waited_for_forever() -> None:
    """audio_out's playhead only moves over material it has: if the last chunks we sent
    never arrived (a PUB socket drops at its high-water mark), it holds at their start
    and we, seeing our queue far ahead of its playhead, would never send again."""
    from engine.streaming import CHUNK_TRANSIT_S, LOST_AFTER_S

    events: list[tuple[str, dict[str, Any]]] = []
    now = {"t": 100.0}
    config = EngineConfig(generator="sine", chunk_s=0.5, lead_s=1.0, transition_margin_s=0.3,
                          transition_crossfade_s=0.2)
    session = RoomSession("r", 1, SineGenerator(RATE), config,
                          lambda kind, **fields: events.append((kind, fields)),
                          clock=lambda: now["t"])

    def clock(playhead: int, buffered_until: int, state: str) -> None:
        session.on_clock(PlaybackClock(v=PROTOCOL_VERSION, room="r", sample_rate=RATE,
                                       playhead=playhead, buffered_until=buffered_until,
                                       wall_time=now["t"], state=state))

    clock(0, 0, "starting")
    while session.next_chunk() is not None:
        pass
    HELD = session.queue_end  # audio_out got all of these
    assert HELD is not None
    clock(HELD, HELD, "playing")  # about to run dry: the engine sends more
    while session.next_chunk() is not None:
        pass
    sent = session.queue_end
    assert sent is not None and sent >= HELD + RATE  # a full lead ahead of the playhead
    # the chunks after HELD never arrived: audio_out played up to HELD, ran dry, holds there
    now["t"] += 2 * CHUNK_TRANSIT_S  # (a report sent as they left could not show them)
    clock(HELD, HELD, "holding")
    assert session.next_reason() is None  # a chunk may still be on its way
    now["t"] += LOST_AFTER_S / 2
    clock(HELD, HELD, "holding")
    assert session.next_reason() is None
    now["t"] += LOST_AFTER_S
    clock(HELD, HELD, "silent")
    assert session.next_reason() == "start"  # lost: made again from the playhead
    chunk = session.next_chunk()
    assert chunk is not None and chunk.reason == "start" and chunk.crossfade > 0
    assert HELD < chunk.start_sample < sent
    assert session.lost_resyncs == 1
    assert [f for kind, f in events if kind == "chunks_lost"][0]["buffered_until"] == HELD
    # audio_out takes it and plays again: nothing more is taken for lost
    clock(chunk.start_sample, session.queue_end, "playing")
    now["t"] += 2 * LOST_AFTER_S
    clock(chunk.start_sample + RATE // 10, session.queue_end, "playing")
    assert session.next_reason() in (None, "continue")
    # an audio_out that is dry because we were late (nothing of ours missing) is no loss
    late = session.queue_end
    clock(late, late, "holding")
    now["t"] += 2 * LOST_AFTER_S
    clock(late, late, "holding")
    assert session.lost_resyncs == 1 and not session._material_lost()


def test_a_chunk_with_non_finite_samples_is_zeroed_there_not_lost() -> None:
    """audio_out refuses a chunk holding NaN or inf whole; the session zeroes those samples
    (a dropout) and says so once, rather than sending what would be dropped."""
    events: list[tuple[str, dict[str, Any]]] = []

    class Broken(SineGenerator):
        def generate(self, state: Any, condition: Any, frames: int) -> Any:
            generated, state = super().generate(state, condition, frames)
            audio = generated.audio.copy()
            audio[::7] = np.nan
            audio[1] = np.inf
            return dataclasses.replace(generated, audio=audio), state

    config = EngineConfig(generator="sine", chunk_s=0.5, lead_s=1.0)
    session = RoomSession("r", 1, Broken(RATE), config,
                          lambda kind, **fields: events.append((kind, fields)))
    session.on_clock(PlaybackClock(v=PROTOCOL_VERSION, room="r", sample_rate=RATE, playhead=0,
                                   buffered_until=0, wall_time=0.0, state="starting"))
    chunks = []
    while (chunk := session.next_chunk()) is not None and len(chunks) < 4:
        chunks.append(chunk)
    assert chunks and all(np.isfinite(c.audio.to_numpy()).all() for c in chunks)
    assert session.non_finite_chunks == len(chunks)
    assert [kind for kind, _ in events].count("non_finite_audio") == 1


# -- clocks read late, rooms that ran dry ------------------------------------------------


def _report(playhead: int, wall_time: float, state: Any = "playing",
            buffered_until: int | None = None) -> PlaybackClock:
    return PlaybackClock(v=PROTOCOL_VERSION, room="r", sample_rate=RATE, playhead=playhead,
                         buffered_until=playhead if buffered_until is None else buffered_until,
                         wall_time=wall_time, state=state)


def test_a_report_read_late_is_taken_at_the_time_it_was_sent() -> None:
    """A busy engine reads reports that waited in the queue; taking them as new would put
    the playhead estimate that far behind (eating the lead). audio_out's wall time says
    when each left, whatever the two clocks' offset."""
    session, _, clock = _session()
    offset = 1234.5  # audio_out's clock is this far behind ours, transport included
    session.on_clock(_report(0, clock.now - offset))  # read promptly
    clock.now += 1.0
    session.on_clock(_report(RATE, clock.now - offset))  # read promptly
    assert session.playhead_estimate() == RATE
    sent = clock.now - offset + 0.5  # sent half a second later...
    clock.now += 1.3  # ...read 0.8 s after that
    session.on_clock(_report(RATE + RATE // 2, sent))
    # (to within the offset's allowed creep: 2 ms a second)
    assert abs(session.playhead_estimate() - (RATE + RATE // 2 + int(0.8 * RATE))) <= RATE // 200
    # a clock that steps back (NTP on audio_out's machine) is followed, slowly
    clock.now += 10.0
    session.on_clock(_report(12 * RATE, clock.now - offset - 0.05))
    assert session.playhead_estimate() > 12 * RATE


def test_a_report_dated_an_hour_ahead_is_refused_and_a_real_clock_step_followed() -> None:
    """One report stamped an hour ahead (forged on the LAN, or a clock stepped and back)
    set the delivery offset an hour back: every chunk after it was placed an hour ahead,
    audio_out held, the room was silent for hours. Now it is refused and counted; a
    step that every report confirms for CLOCK_JUMP_CONFIRM_S is followed."""
    session, _, clock = _session()
    offset = 0.02  # transport and output latency
    session.on_clock(_report(0, clock.now - offset))
    chunks = _drain(session)
    clock.now += 1.0
    session.on_clock(_report(RATE, clock.now - offset))
    for forged in (clock.now + 3600.0, clock.now - 3600.0):
        session.on_clock(_report(0, forged))  # a playhead back, too: no restart either
        assert session.playhead_estimate() == RATE
    assert session.refused_clocks == 2
    clock.now += 0.5
    session.on_clock(_report(RATE + RATE // 2, clock.now - offset))
    assert session.playhead_estimate() == RATE + RATE // 2
    later = _drain(session)
    assert later and all(c.start_sample < chunks[-1].start_sample + 4 * RATE for c in later)
    # audio_out's machine steps its clock 30 s ahead, and stays there: followed
    step = 30.0
    for k in range(6):
        clock.now += 0.5
        session.on_clock(_report(2 * RATE + k * RATE // 2, clock.now - offset + step))
    assert session.refused_clocks == 2 + 4  # refused until the 2 s of agreement
    assert session.playhead_estimate() == 2 * RATE + 5 * RATE // 2


def test_a_room_that_ran_dry_is_resumed_where_it_holds_not_restarted() -> None:
    """audio_out's playhead waits where its material ended while it holds: the
    continuation resumes it there (no new stream, which would cost a model a new window)."""
    session, _, clock = _session()
    session.on_clock(_report(0, clock.now))
    chunks = _drain(session)
    end = session.queue_end
    assert end is not None and chunks[0].reason == "start"
    clock.now += 3.0  # the engine was late: audio_out played everything and holds at its end
    session.on_clock(_report(end, clock.now, "holding"))
    clock.now += 0.5
    assert session.playhead_estimate() == end  # no extrapolation while it holds
    resumed = session.next_chunk()
    assert resumed is not None and resumed.reason == "continue" and resumed.start_sample == end
    # audio_out reports a playhead past what we sent (another engine fed it): one report
    # is no proof (a forged one put rooms 2**52 samples ahead), reports that go on from it
    # as a playhead does are, and the room starts again there
    ahead = session.queue_end + RATE
    session.on_clock(_report(ahead, clock.now))
    assert session.next_reason() != "start" and session.jumped_clocks == 1
    for k in range(1, 45):  # over 2 s at 20 Hz
        clock.now += 0.05
        session.on_clock(_report(ahead + k * RATE // 20, clock.now))
    assert session.next_reason() == "start"


def test_a_dry_report_sent_before_our_chunks_could_arrive_is_no_loss() -> None:
    """A report that waited in the queue shows audio_out dry short of chunks sent after it
    left; only a report sent after they could have arrived says they were lost."""
    from engine.streaming import CHUNK_TRANSIT_S, LOST_AFTER_S

    session, _, clock = _session()
    session.on_clock(_report(0, clock.now))
    _drain(session)
    first_end = session.queue_end
    clock.now += 3.0
    left = clock.now - 0.2  # audio_out ran dry and said so just before we sent more
    session.on_clock(_report(first_end, clock.now, "playing"))
    _drain(session)
    assert session.queue_end > first_end
    clock.now += 2 * LOST_AFTER_S  # that report is read now, long after it left
    session.on_clock(_report(first_end, left, "holding"))
    clock.now += 2 * LOST_AFTER_S
    session.on_clock(_report(first_end, left + 0.05, "holding"))  # another old one
    assert session.next_reason() != "start" and session.lost_resyncs == 0
    # reports sent after the chunks should have arrived, still dry: lost, made again
    for _ in range(3):
        clock.now += LOST_AFTER_S
        session.on_clock(_report(first_end, clock.now + CHUNK_TRANSIT_S, "holding"))
    assert session.next_reason() == "start"


# -- audio_out's clock stepped, two audio_outs on one room id ----------------------------


def _logged_session() -> tuple[RoomSession, FakeClock, list[tuple[str, dict[str, Any]]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    config = EngineConfig(generator="sine", chunk_s=0.5, lead_s=1.5, transition_margin_s=0.3,
                          transition_crossfade_s=0.2)
    clock = FakeClock()
    session = RoomSession("r", 1, CountingSine(), config,
                          lambda kind, **fields: events.append((kind, fields)), clock=clock)
    return session, clock, events


class FakeAudioOut:
    """An audio_out playing in real time on the fake clock since ``began``, whose machine's
    clock is ``skew`` seconds off ours (transport and output latency: 20 ms)."""

    def __init__(self, clock: FakeClock, instance: int = 0, began: float | None = None,
                 skew: float = 0.0) -> None:
        self.clock, self.instance, self.skew = clock, instance, skew
        self.began = clock.now if began is None else began

    def report(self, sent_ago: float = 0.0, jitter: float = 0.0) -> PlaybackClock:
        sent = self.clock.now - sent_ago
        playhead = int((sent - self.began) * RATE)
        return PlaybackClock(v=PROTOCOL_VERSION, room="r", sample_rate=RATE, playhead=playhead,
                             buffered_until=playhead, wall_time=sent - 0.02 + self.skew + jitter,
                             instance=self.instance)

    def heard(self) -> int:
        return int((self.clock.now - self.began) * RATE)


@pytest.mark.parametrize("step", [4.0, -4.0, -0.5, 30.0, -30.0])
def test_a_room_clock_stepped_is_followed_within_the_confirmation_time(step: float) -> None:
    """A room machine's wall clock set back 4 s (NTP) dated its reports 4 s early, which
    the offset (the smallest seen, creeping up 2 ms a second) followed over half an hour:
    the playhead estimate ran 4 s ahead and the room's transitions came 4 s late. A step
    either way is followed within CLOCK_JUMP_CONFIRM_S; big ones are refused until then."""
    from engine.streaming import CLOCK_JUMP_CONFIRM_S, CLOCK_JUMP_S

    session, clock, events = _logged_session()
    room = FakeAudioOut(clock)
    for _ in range(100):  # 5 s at 20 Hz, read promptly
        session.on_clock(room.report())
        _drain(session)
        clock.now += 0.05
    room.skew = step
    stepped_at = clock.now
    while clock.now - stepped_at <= CLOCK_JUMP_CONFIRM_S + 0.05:
        session.on_clock(room.report())
        _drain(session)
        clock.now += 0.05
    session.on_clock(room.report())
    estimate = session.playhead_estimate()
    assert estimate is not None and abs(estimate - room.heard()) <= RATE // 100
    # a new artwork is placed the margin after the playhead heard, not the step later
    assert session.on_view(_view("b", 0.9, seq=1))
    transition = session.next_chunk()
    assert transition is not None and transition.reason == "transition"
    assert room.heard() + 14_400 <= transition.start_sample < room.heard() + 14_400 + 2_400
    steps = [fields for kind, fields in events if kind == "clock_stepped"]
    if step < 0 or abs(step) > CLOCK_JUMP_S:  # a clock set forward a little: at once, no step
        assert len(steps) == 1 and steps[0]["step_s"] == pytest.approx(step, abs=0.01)
    else:
        assert steps == []
    confirming = round(CLOCK_JUMP_CONFIRM_S / 0.05)  # reports, 20 a second
    assert session.refused_clocks in ((0,) if abs(step) <= CLOCK_JUMP_S
                                      else (confirming, confirming + 1))


def test_network_jitter_is_not_taken_for_a_clock_step() -> None:
    """Reports sent with +-50 ms of jitter on their wall time and read up to 100 ms late
    (a busy engine applies only each turn's newest) for a minute: no step, and the
    playhead estimate stays with the playhead heard."""
    session, clock, events = _logged_session()
    room = FakeAudioOut(clock)
    rng = np.random.default_rng(3)
    for _ in range(1200):
        session.on_clock(room.report(sent_ago=rng.uniform(0.0, 0.1),
                                     jitter=rng.uniform(-0.05, 0.05)))
        _drain(session)
        estimate = session.playhead_estimate()
        assert estimate is not None and abs(estimate - room.heard()) <= 0.15 * RATE
        clock.now += 0.05
    assert [kind for kind, _ in events if kind.startswith("clock_")] == []
    assert session.refused_clocks == 0


def _play_rooms(session: RoomSession, clock: FakeClock, rooms: list[FakeAudioOut],
                seconds: float) -> list[Any]:
    """Each room reports at 20 Hz, the rooms' reports interleaved; every chunk made."""
    chunks: list[Any] = []
    end = clock.now + seconds
    while clock.now < end:
        for room in rooms:
            session.on_clock(room.report())
            chunks += _drain(session)
            clock.now += 0.05 / len(rooms)
    return chunks


def test_two_audio_outs_on_one_room_id_follow_one_and_refuse_the_other() -> None:
    """Two room machines configured with the same room id: every report of the one behind
    was taken as "audio_out restarted" (478 restarts in 30 s), the room was restarted on
    either timeline in turn and ~8 times the chunks were made, mangling both rooms. Now
    the first heard is followed, the other's reports refused and counted, said once a
    minute, and in the room's status."""
    from engine.streaming import DUPLICATE_WINDOW_S, INSTANCE_SILENT_S

    session, clock, events = _logged_session()
    first = FakeAudioOut(clock, instance=0xA1)
    _play_rooms(session, clock, [first], 10.0)
    assert session.duplicate is None
    second = FakeAudioOut(clock, instance=0xB2)  # 10 s behind the first
    chunks = _play_rooms(session, clock, [first, second], 30.0)
    restarts = [kind for kind, _ in events].count("playback_restarted")
    assert restarts <= 2  # until the switches say there are two
    assert 55 <= len(chunks) <= 70  # 30 s of 0.5 s chunks, and the restarts' starts
    reasons = [c.reason for c in chunks]
    assert reasons.count("start") == restarts and "start" not in reasons[8:]
    settled = chunks[8:]  # on the first one's timeline, chunk after chunk
    assert all(a.start_sample + a.audio.shape[0] == b.start_sample
               for a, b in zip(settled, settled[1:], strict=False))
    estimate = session.playhead_estimate()
    assert estimate is not None and abs(estimate - first.heard()) <= RATE // 100
    said = [fields for kind, fields in events if kind == "duplicate_room"]
    assert len(said) == 1 and (said[0]["following"], said[0]["refused"]) == ("000000a1",
                                                                            "000000b2")
    assert "'r'" in said[0]["error"] and "room id" in said[0]["error"]
    assert session.duplicate == {"following": "000000a1", "refused": ["000000b2"],
                                 "refused_clocks": session.duplicate_clocks}
    assert 30 * 20 - 5 <= session.duplicate_clocks <= 30 * 20
    # the one followed goes silent: the other is the room's audio_out after a while
    _play_rooms(session, clock, [second], INSTANCE_SILENT_S + 0.1)
    estimate = session.playhead_estimate()
    assert estimate is not None and abs(estimate - second.heard()) <= RATE // 100
    # and once no second one has spoken for a while, the room is no duplicate any more
    _play_rooms(session, clock, [second], DUPLICATE_WINDOW_S + 0.1)
    assert session.duplicate is None
    assert [kind for kind, _ in events].count("duplicate_room_ended") == 1


def test_an_audio_out_restarted_is_a_restart_at_once_and_a_late_report_of_the_old_is_not(
) -> None:
    """A new instance (audio_out restarted, the old one gone) is a new timeline at once,
    even where its playhead is not behind the last; a report of the old instance read
    after it is refused, neither a restart nor two audio_outs."""
    session, clock, events = _logged_session()
    old = FakeAudioOut(clock, instance=0x11)
    _play_rooms(session, clock, [old], 5.0)
    late = old.report(sent_ago=0.04)
    # the new one resumed a little past the old one's playhead, inside what we queued
    new = FakeAudioOut(clock, instance=0x22, began=old.began - 0.1)
    session.on_clock(new.report())
    assert session.next_reason() == "start"
    assert [f.get("instance") for k, f in events if k == "playback_restarted"] == ["00000022"]
    chunk = session.next_chunk()
    assert chunk is not None and chunk.reason == "start"
    assert new.heard() + 14_400 <= chunk.start_sample < new.heard() + 14_400 + 2_400
    session.on_clock(late)
    assert abs(session.playhead_estimate() - new.heard()) <= RATE // 100
    _play_rooms(session, clock, [new], 5.0)
    assert [kind for kind, _ in events].count("playback_restarted") == 1
    assert session.duplicate is None and session.duplicate_clocks == 0


def test_an_audio_out_restarting_over_and_over_is_no_duplicate() -> None:
    """A crash-looping audio_out has a new instance each time: each is a restart, none
    is taken for a second audio_out on the room id."""
    session, clock, events = _logged_session()
    for instance in range(1, 12):
        _play_rooms(session, clock, [FakeAudioOut(clock, instance=instance)], 0.8)
        assert session.duplicate is None
    assert [kind for kind, _ in events].count("playback_restarted") == 10
    assert session.duplicate_clocks == 0 and "duplicate_room" not in [k for k, _ in events]


# ------------------------------------------------ a tempo ridden: new pieces on the bars heard
def _tempo_ridden(moves: list[tuple[float, dict[str, float]]]) -> list[Any]:
    """A procedural room with the performer's timing, its knobs moved at ``moves`` (seconds
    after the one before, parameters), played on a fake clock reported every 50 ms; every
    chunk made, in order."""
    from engine.generators.procedural.config import ProceduralConfig
    from engine.generators.procedural.generator import ProceduralGenerator

    config = EngineConfig(generator="procedural", chunk_s=0.25, lead_s=0.75,
                          transition_margin_s=0.15, transition_crossfade_s=0.5)
    clock = FakeClock()
    session = RoomSession("r", 1, ProceduralGenerator(ProceduralConfig(), RATE), config,
                          clock=clock)
    session.min_change_interval_s = 0.15
    session.on_view(ArtworkView(v=PROTOCOL_VERSION, room="r", seq=0, time=0.0,
                                state="artwork", artwork_id="a", confidence=1.0,
                                features={"brightness": 0.4, "warmth": 0.6}))
    chunks: list[Any] = []
    playhead = 0

    def report() -> None:
        session.on_clock(PlaybackClock(v=PROTOCOL_VERSION, room="r", sample_rate=RATE,
                                       playhead=playhead, buffered_until=playhead,
                                       wall_time=clock.now))
        session.tick()
        chunks.extend(_drain(session))

    report()
    for wait, params in moves:
        for _ in range(round(wait / 0.05)):
            clock.now += 0.05
            playhead += RATE // 20
            report()
        session.set_controls(params)
        report()
    return chunks


def _heard_grids(chunks: list[Any]) -> list[tuple[int, int, float, float]]:
    """(start, anchor, bar samples, tempo) of each piece, and for each the grid heard at its
    start: the latest piece whose first downbeat was reached before a later one replaced it."""
    heard: list[tuple[int, float]] = []  # (anchor, bar samples) of the pieces heard so far
    out = []
    for chunk in chunks:
        if chunk.reason == "continue":
            continue
        bar = chunk.meter[0] * 4 / chunk.meter[1] * 60.0 / chunk.tempo_bpm * RATE
        heard = [g for g in heard if g[0] <= chunk.start_sample]  # the rest never sounded
        if heard:
            anchor, heard_bar = heard[-1]
            out.append((chunk.start_sample, chunk.downbeat, heard_bar, anchor))
        heard.append((chunk.downbeat, bar))
    return out


RIDES = {
    # tempo_bpm 126.5 -> the artwork's -> 97 -> the artwork's, a few seconds apart (the
    # second pair closer than a bar and a half: the 97 bpm piece is still queued)
    "tempo": [(0.5, {"tempo_bpm": 126.5}), (3.5, {"tempo_bpm": 0.0}),
              (3.0, {"tempo_bpm": 97.0}), (2.2, {"tempo_bpm": 0.0}), (6.0, {})],
    # tempo_bias swept over 1.5 s at 20 Hz, then back (a re-plan every 0.15 s)
    "bias": [(0.5, {})] + [(0.05, {"tempo_bias": 0.6 * k / 30}) for k in range(31)]
            + [(4.0, {})] + [(0.05, {"tempo_bias": 0.6 - 0.6 * k / 30}) for k in range(31)]
            + [(6.0, {})],
}


@pytest.mark.parametrize("ride", sorted(RIDES))
def test_a_tempo_ridden_room_starts_each_piece_on_a_bar_line_heard(ride: str) -> None:
    """Each new piece's first downbeat falls on a bar line of the music heard at its start,
    also when it follows a piece still queued (the README: the bridge ends on one)."""
    chunks = _tempo_ridden(RIDES[ride])
    pieces = _heard_grids(chunks)
    starts = [c.start_sample for c in chunks if c.reason == "transition"]
    downbeats = [c.downbeat for c in chunks if c.reason == "transition"]
    # some re-plans came while the piece before them was still queued
    assert len(pieces) >= 4 and any(s < d for s, d in zip(starts[1:], downbeats, strict=False))
    for start, anchor, bar, heard_anchor in pieces:
        k = round((anchor - heard_anchor) / bar)
        assert anchor > start
        assert abs(anchor - (heard_anchor + k * bar)) <= 1.0, (start, anchor)


@pytest.mark.parametrize("ride", sorted(RIDES))
def test_a_tempo_ridden_rooms_midi_take_has_each_meter_on_a_bar_line(ride: str, tmp_path: Path
                                                                     ) -> None:
    """The take's tempo map (audio_out keeps each piece's change at its downbeat and drops
    the ones a later splice replaced): every time signature lies on the bar grid of the one
    before, in ticks, as a DAW counts them."""
    import mido

    from audio_out.midi import PlayedNotes, TempoChange, write_midi_file
    from audio_out.timeline import SpliceResult

    played = PlayedNotes()
    for chunk in _tempo_ridden(RIDES[ride]):  # what the player does with each chunk
        end = chunk.start_sample + chunk.audio.shape[0]
        kind = "append" if chunk.reason == "continue" else "replace"
        played.add_chunk(chunk.seq, chunk.start_sample, None, SpliceResult(
            kind, chunk.start_sample, chunk.start_sample, end, chunk.crossfade, 0, 0, 0))
        played.add_tempo(TempoChange(chunk.downbeat, chunk.tempo_bpm, chunk.meter))
    tempi = played.take_tempi(playhead=10**9, frames_out=10**9)
    assert len(tempi) >= 3
    path = tmp_path / "take.mid"
    write_midi_file(path, np.zeros((0, 6), np.int64), RATE, tempi)
    tick, meters = 0, []
    for message in mido.MidiFile(str(path)).tracks[0]:
        tick += message.time
        if message.type == "time_signature":
            meters.append((tick, message.numerator * 4 // message.denominator * 480))
    meters = meters[1:]  # the file's 120 bpm 4/4 until the first piece's downbeat
    assert len(meters) == len(tempi)
    for (at, bar), (later, _) in zip(meters, meters[1:], strict=False):
        off = (later - at) % bar
        assert off == 0, (at, later, bar)
