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
    session, _, _ = _session()
    session.on_view(_view("a", 0.3))
    session.on_clock(_clock(0))
    session.on_clock(_clock(48_000))
    chunks = _drain(session) + _drain(session)
    session.on_clock(_clock(96_000))
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
    session, _, _ = _session()
    session.on_clock(_clock(0))
    _drain(session)
    session.on_clock(_clock(400_000))
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
    # audio_out reports a playhead past what we sent (another engine fed it): start again
    session.on_clock(_report(session.queue_end + RATE, clock.now))
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
