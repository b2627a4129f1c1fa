"""Live parameters: the hub, and how the engine's room sessions and audio_out apply them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from audio_out.role import LevelMeter, apply_set
from engine.config import EngineConfig
from engine.generators.procedural.config import ProceduralConfig
from engine.generators.procedural.controls import apply_controls
from engine.generators.procedural.mapping import decide
from engine.generators.sine import SineGenerator
from engine.streaming import (
    RoomControls,
    RoomSession,
    shift_channels,
)
from ground.errors import ConfigError
from ground.events import null_sink
from ground.params import MODES, PARAMETERS, SETTINGS, float32_decimal, parameter, parse_target
from ground.protocol import PROTOCOL_VERSION, ArtworkView, PlaybackClock
from installation.config import config_from_dict
from installation.control import ControlHub, ParameterChange

RATE = 48000


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _view(artwork_id: str, brightness: float = 0.5, seq: int = 0) -> ArtworkView:
    return ArtworkView(v=PROTOCOL_VERSION, room="r", seq=seq, time=0.0, state="artwork",
                       artwork_id=artwork_id, confidence=1.0, features={"brightness": brightness})


def _clock(playhead: int) -> PlaybackClock:
    return PlaybackClock(v=PROTOCOL_VERSION, room="r", sample_rate=RATE, playhead=playhead,
                         buffered_until=playhead, wall_time=0.0)


def _session(**engine: Any) -> tuple[RoomSession, FakeClock]:
    config = EngineConfig(generator="sine", chunk_s=0.5, lead_s=1.0, transition_margin_s=0.3,
                          transition_crossfade_s=0.2, **engine)
    clock = FakeClock()
    session = RoomSession("r", 1, SineGenerator(RATE), config, clock=clock)
    session.min_change_interval_s = 0.25
    session.on_view(_view("a", 0.3))
    session.on_clock(_clock(0))
    while session.next_chunk() is not None:
        pass
    return session, clock


# -- parameters and the hub -----------------------------------------------------


def test_parameters_clamp_scale_and_name_their_targets() -> None:
    assert parameter("density") is PARAMETERS["intensity"]
    assert parameter("tempo_bias").from_unit(1.0) == 1.0
    assert parameter("tempo_bias").to_unit(0.0) == 0.5
    assert parameter("volume").clamp(9.0) == 4.0
    assert parameter("freeze").clamp(0.7) == 1.0
    assert parse_target("brightness@room-1") == (PARAMETERS["brightness"], "room-1")
    with pytest.raises(ValueError, match="unknown parameter 'bogus'; expected one of"):
        parse_target("bogus")
    # the tonic's old name is refused, not taken: its OSC address carries the key's name out
    with pytest.raises(ValueError, match="unknown parameter 'key' \\(now called 'tonic'\\); "
                                         "expected one of"):
        parse_target("key@room-1")


def test_the_hub_remembers_values_per_room_and_replays_them_in_order() -> None:
    config = config_from_dict({"rooms": [{"id": "a", "audio_out": {"volume": 0.8}}, {"id": "b"}]})
    hub = ControlHub(config)
    assert hub.current("volume", "a") == 0.8 and hub.current("transition_s") == 1.0
    hub.set("intensity", 0.9, "a")
    hub.set("volume", 5.0)  # clamped to the range
    first = hub.pending()
    assert [(m.target, m.room, m.params) for m in first] == [
        ("engine", "a", {"intensity": 0.9}), ("audio_out", "*", {"volume": 4.0})]
    assert hub.current("intensity", "a") == 0.9 and hub.current("intensity", "b") == 0.5
    hub.set("brightness", 0.2)
    hub.pending()
    assert hub.replay("engine") == 2
    replayed = hub.pending()
    assert [m.room for m in replayed] == ["*", "a"]  # the global first, the room's own wins
    assert hub.trigger("next_variation", "b") == 1.0 and hub.trigger("next_variation", "b") == 2.0
    assert hub.toggle("freeze") == 1.0 and hub.toggle("freeze") == 0.0
    with pytest.raises(ValueError, match="unknown room 'zz'"):
        hub.set("intensity", 0.1, "zz")


def test_a_live_lead_is_clamped_to_what_the_rooms_audio_out_buffer_holds() -> None:
    # The range's 60 s is not every room's: audio_out drops what lies past its buffer
    # (30 s by default) as late, and a room fed a 45 s lead ran dry every 30 s.
    hub = ControlHub(config_from_dict({"rooms": [
        {"id": "a"}, {"id": "b", "audio_out": {"buffer_s": 8.0}}]}))
    assert hub.set("lead_s", 60, "a") == pytest.approx(28.25)  # 30 - 0.5 - 0.25 - 1
    assert hub.set("lead_s", 60, "b") == pytest.approx(6.25)
    assert hub.set("lead_s", 60) == pytest.approx(6.25)  # every room: the least of them
    assert hub.set("lead_s", 2.0, "b") == 2.0


def test_listeners_hear_every_set_with_its_source_and_a_failing_one_refuses_nothing() -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    hub = ControlHub(config_from_dict({"rooms": [{"id": "a"}]}),
                     lambda kind, **f: events.append((kind, f)))
    heard: list[ParameterChange] = []

    def broken(change: ParameterChange) -> None:
        raise OSError("network down")

    unsubscribe = hub.subscribe(heard.append)
    hub.subscribe(broken)
    assert hub.set("volume", 9.0, "a", source="console") == 4.0  # the clamped value is heard
    hub.toggle("freeze", source="midi", origin="midi:note:1:36")
    with pytest.raises(ValueError):
        hub.set("intensity", float("nan"), source="osc")  # refused: nobody hears of it
    assert heard == [ParameterChange("a", "volume", 4.0, "console"),
                     ParameterChange("*", "freeze", 1.0, "midi", "midi:note:1:36")]
    assert [f["name"] for kind, f in events if kind == "control_echo_failed"] == [
        "volume", "freeze"]
    unsubscribe()
    hub.set("brightness", 0.1)
    assert len(heard) == 2


def test_a_set_that_changes_nothing_is_neither_sent_nor_heard_but_a_trigger_always_is(
) -> None:
    # an echo that comes back (another installation, an OSC router) must end there
    events: list[tuple[str, dict[str, Any]]] = []
    hub = ControlHub(config_from_dict({"rooms": [{"id": "a"}, {"id": "b"}]}),
                     lambda kind, **f: events.append((kind, f)))
    heard: list[ParameterChange] = []
    hub.subscribe(heard.append)
    for name, value, room in (("intensity", 0.8, "*"), ("brightness", 0.3, "a"),
                              ("freeze", 1.0, "*"), ("tonic", 2.0, "b"), ("lead_s", 2.0, "*")):
        assert hub.set(name, value, room, source="osc") == value
        assert hub.set(name, value, room, source="osc") == value  # the same again: no change
    assert hub.set("intensity", 0.8000000119, source="osc") == 0.8  # float32 noise: the same
    assert [(c.name, c.room) for c in heard] == [
        ("intensity", "*"), ("brightness", "a"), ("freeze", "*"), ("tonic", "b"),
        ("lead_s", "*")]
    assert [m.params for m in hub.pending()] == [
        {"intensity": 0.8}, {"brightness": 0.3}, {"freeze": 1.0}, {"tonic": 2.0},
        {"lead_s": 2.0}]
    assert sum(kind == "control_set" for kind, _ in events) == 5
    # a room's own value is not the global one: setting it is a change, and so is a
    # global set equal to the stored global value that clears a room's own
    hub.set("intensity", 0.8, "a")
    hub.set("intensity", 0.8)
    assert [(m.room, m.params) for m in hub.pending()] == [
        ("a", {"intensity": 0.8}), ("*", {"intensity": 0.8})]
    assert hub.snapshot()["*"]["intensity"] == 0.8 and "intensity" not in hub.snapshot()["a"]
    # a trigger's every set is a step: sent and heard each time, even with the same value
    heard.clear()
    hub.set("next_variation", 5.0, "a")
    hub.set("next_variation", 5.0, "a")
    assert len(heard) == 2 and len(hub.pending()) == 2



def _float32(value: float) -> float:
    """``value`` as OSC carries it (what an echo of it sends back)."""
    return float(np.float32(value))


def test_an_echo_at_float32_precision_is_no_change_at_any_magnitude() -> None:
    # an OSC client echoing tempo_bpm 126.53 sent back 126.52999877929688: a second
    # control_set and re-plan, where rounding to 6 decimals absorbed float32 noise below ~8
    events: list[tuple[str, dict[str, Any]]] = []
    hub = ControlHub(config_from_dict({"rooms": [{"id": "a"}]}),
                     lambda kind, **f: events.append((kind, f)))
    heard: list[ParameterChange] = []
    hub.subscribe(heard.append)
    for name, value in (("tempo_bpm", 126.53), ("tempo_bpm", 299.99), ("volume", 3.7),
                        ("view_timeout_s", 86399.9)):
        assert _float32(value) != value  # what OSC carries back is not the value itself
        assert hub.set(name, value, source="clock") == value  # 64-bit, as MIDI clock sets it
        assert hub.set(name, _float32(value), source="osc") == value  # the echo: no change
    assert hub.set("tempo_bpm", _float32(126.54), source="osc") == 126.54  # a real change
    assert hub.set("tempo_bpm", 126.53, source="clock") == 126.53  # back: a change too
    assert [(c.name, c.value) for c in heard] == [
        ("tempo_bpm", 126.53), ("tempo_bpm", 299.99), ("volume", 3.7),
        ("view_timeout_s", 86399.9), ("tempo_bpm", 126.54), ("tempo_bpm", 126.53)]
    # every change is counted in the events (coalesced per parameter, room and source: a
    # later change within a second is in the next event's "changes"), and the newest value
    # of each parameter is sent (a queued set replaced by a newer one)
    assert [m.params for m in hub.pending()] == [
        {"volume": 3.7}, {"view_timeout_s": 86399.9}, {"tempo_bpm": 126.53}]
    hub.flush_events(force=True)
    sets = [f for kind, f in events if kind == "control_set"]
    assert sum(f.get("changes", 1) for f in sets) == len(heard) == 6


@given(st.sampled_from([p for p in [*PARAMETERS.values(), *SETTINGS.values()]
                        if p.kind == "continuous"]),
       st.floats(allow_nan=False, allow_infinity=False))
def test_a_continuous_value_and_its_float32_echo_clamp_to_one_value(param: Any,
                                                                    value: float) -> None:
    applied = param.clamp(value)
    assert param.low <= applied <= param.high
    assert param.clamp(applied) == applied
    assert param.clamp(_float32(applied)) == applied  # what OSC echoes is no change
    assert float32_decimal(applied) == applied
    if param.low <= value <= param.high and (param.least is None or value >= param.least):
        assert _float32(applied) == _float32(value)  # no coarser than float32

# -- the engine applies them ------------------------------------------------------


def test_controls_adjust_the_procedural_plan_in_the_intended_direction() -> None:
    plan = decide({"brightness": 0.5, "contrast": 0.5, "edge_density": 0.4}, ProceduralConfig())
    louder = apply_controls(plan, RoomControls(intensity=0.9, brightness=0.8, tempo_bias=1.0))
    calmer = apply_controls(plan, RoomControls(intensity=0.1, brightness=0.2, tempo_bias=-1.0))
    assert louder.density > plan.density > calmer.density
    assert louder.brightness > plan.brightness > calmer.brightness
    assert louder.tempo_bpm == pytest.approx(plan.tempo_bpm * 2 ** 0.5, abs=0.1)
    assert calmer.tempo_bpm == pytest.approx(plan.tempo_bpm * 2 ** -0.5, abs=0.1)
    assert louder.key_root == plan.key_root and louder.programs == plan.programs
    sine = SineGenerator(RATE)  # no plan: brightness moves its pitch as the artwork's would
    nudged = sine.apply_controls(_view("a", 0.5), 440.0, RoomControls(brightness=0.9))
    assert nudged == sine.prepare(_view("a", 0.9))


def test_tonic_mode_and_tempo_override_the_artworks_and_minus_one_gives_them_back() -> None:
    plan = decide({"brightness": 0.2, "warmth": 0.3}, ProceduralConfig())
    set_ = apply_controls(plan, RoomControls(tonic=2, mode=MODES.index("lydian"), tempo_bpm=140.0,
                                             tempo_bias=1.0))
    assert (set_.key_root, set_.mode, set_.tempo_bpm) == (2, "lydian", 140.0)  # bias: no effect
    assert set_.programs == plan.programs and set_.register == plan.register  # the palette stays
    assert apply_controls(plan, RoomControls(tonic=-1, mode=-1, tempo_bpm=0.0)) == plan
    assert apply_controls(plan, RoomControls(tempo_bpm=5.0)).tempo_bpm == 20.0
    tonic, mode = parameter("tonic"), parameter("mode")
    assert tonic.clamp(4.4) == 4.0 and tonic.clamp(99) == 11.0
    assert tonic.choices[0] == "the artwork's"  # -1
    assert tonic.choices[10 + 1] == "Bb" and mode.choices[2 + 1] == "dorian"
    assert tonic.from_unit(1.0) == 11.0 and mode.expected == "a whole number in -1..5"
    with pytest.raises(ValueError, match="parameter tonic: expected a whole number in -1..11"):
        tonic.clamp(float("nan"))


def test_a_procedural_room_plays_the_tonic_mode_and_tempo_it_is_given() -> None:
    from engine.beats import grid_of
    from engine.generators.procedural.generator import ProceduralGenerator

    config = EngineConfig(generator="procedural", chunk_s=0.5, lead_s=1.0,
                          transition_margin_s=0.3, transition_crossfade_s=0.2)
    clock = FakeClock()
    session = RoomSession("r", 1, ProceduralGenerator(ProceduralConfig(), RATE), config,
                          clock=clock)
    session.on_view(_view("a", 0.3))
    session.on_clock(_clock(0))
    while session.next_chunk() is not None:
        pass
    own = grid_of(session.state)
    assert own is not None
    assert sorted(session.set_controls({"tonic": 7, "mode": 4, "tempo_bpm": 150})) == [
        "mode", "tempo_bpm", "tonic"]
    session.tick()
    chunk = session.next_chunk()
    assert chunk is not None and chunk.reason == "transition" and chunk.tempo_bpm == 150.0
    grid = grid_of(session.state)
    assert grid is not None and (grid.key, grid.tempo_bpm) == ("G ionian", 150.0)
    clock.now += 1.0
    session.set_controls({"tonic": -1, "mode": -1, "tempo_bpm": 0})
    session.tick()
    assert session.next_chunk() is not None
    back = grid_of(session.state)
    assert back is not None and (back.key, back.tempo_bpm) == (own.key, own.tempo_bpm)


def test_a_knob_move_replans_the_room_as_a_transition_at_most_every_interval() -> None:
    session, clock = _session()
    low = session.condition
    assert session.set_controls({"brightness": 0.9}) == ["brightness"]
    assert session.set_controls({"brightness": 0.9}) == []  # a replay changes nothing
    session.tick()
    assert session.next_reason() == "transition" and session.condition > low
    chunk = session.next_chunk()
    assert chunk is not None and chunk.reason == "transition"
    session.set_controls({"brightness": 1.0})
    session.tick()
    assert not session.pending_transition  # too soon after the last re-plan
    clock.now += 0.3
    session.tick()
    assert session.pending_transition


def test_freeze_holds_the_artwork_and_catches_up_when_released() -> None:
    session, _ = _session()
    session.set_controls({"freeze": 1.0})
    assert not session.on_view(_view("b", 0.9, seq=1))
    assert session.view.artwork_id == "a" and not session.pending_transition
    session.set_controls({"freeze": 0.0})
    assert session.view.artwork_id == "b" and session.pending_transition


def test_next_variation_reseeds_and_transition_time_sets_the_crossfade() -> None:
    session, clock = _session()
    seed = session.effective_seed
    session.set_controls({"next_variation": 1, "transition_s": 0.05})
    session.tick()
    assert session.effective_seed != seed and session.pending_transition
    chunk = session.next_chunk()
    assert chunk is not None and chunk.crossfade == round(0.05 * RATE)


def test_engine_settings_change_live() -> None:
    session, _ = _session()
    assert session.set_controls({"lead_s": 3.0, "unknown": 1.0, "note": "x"}) == ["lead_s"]
    assert session.config.lead_samples == 3 * RATE


def test_a_room_without_views_for_the_timeout_becomes_the_empty_room() -> None:
    session, clock = _session(view_timeout_s=5.0)
    clock.now += 4.0
    session.tick()
    assert session.view.state == "artwork"
    clock.now += 1.5
    session.tick()
    assert session.view.state == "empty" and session.pending_transition
    chunk = session.next_chunk()
    assert chunk is not None and chunk.artwork_id is None
    assert session.on_view(_view("a", 0.3, seq=5))  # capture back: the artwork again


def test_frozen_rooms_do_not_time_out() -> None:
    session, clock = _session(view_timeout_s=1.0)
    session.set_controls({"freeze": 1.0})
    clock.now += 10
    session.tick()
    assert session.view.state == "artwork"


def test_melodic_channels_shift_per_room_and_drums_stay_on_ten() -> None:
    notes = np.array([[0, 10, 60, 90, 0, 0], [0, 10, 36, 90, 128, 9], [0, 10, 62, 90, 1, 8]],
                     np.int32)
    shifted = shift_channels(notes, 1)
    assert shifted[:, 5].tolist() == [1, 9, 10]  # 8 skips over the percussion channel
    assert shift_channels(notes, 0) is notes


# -- audio_out applies volume -------------------------------------------------------


class FakePlayer:
    def __init__(self) -> None:
        self.volumes: list[float] = []

    def set_volume(self, volume: float) -> None:
        self.volumes.append(volume)


def test_audio_out_takes_volume_and_ignores_engine_parameters() -> None:
    player = FakePlayer()
    apply_set(player, {"volume": 0.25, "intensity": 0.9}, null_sink)  # type: ignore[arg-type]
    apply_set(player, {"brightness": 0.1}, null_sink)  # type: ignore[arg-type]
    assert player.volumes == [0.25]


def test_the_level_meter_measures_what_the_callback_played() -> None:
    meter = LevelMeter()
    fill = meter.wrap(lambda out: out.fill(0.5))
    block = np.zeros((256, 2), np.float32)
    fill(block)
    assert meter.take_dbfs() == pytest.approx(-6.0, abs=0.1)
    assert meter.take_dbfs() is None


def test_tempo_bpm_is_the_artworks_or_a_tempo_the_engine_plays() -> None:
    # 0 is the artwork's tempo, 20..300 a tempo set outright; 3 bpm was stored, echoed and
    # replayed while the engine played 20. A knob sweeping through sets 20; a config that
    # names 3 is refused.
    hub = ControlHub(config_from_dict({"rooms": [{"id": "a"}]}))
    assert [hub.set("tempo_bpm", value) for value in (3.0, 0.0, 19.9, 20.5, 400.0)] == [
        20.0, 0.0, 20.0, 20.5, 300.0]
    with pytest.raises(ConfigError, match=r"parameter tempo_bpm: expected 0 or a finite number "
                                          r"in 20\.\.300, got 3"):
        config_from_dict({"control": {"scenes": [{"name": "slow", "program": 1,
                                                  "params": {"tempo_bpm": 3}}]},
                          "rooms": [{"id": "a"}]})
    with pytest.raises(ConfigError, match=r"parameter intensity: expected a finite number in "
                                          r"0\.\.1, got 5"):
        config_from_dict({"control": {"scenes": [{"name": "loud", "program": 2,
                                                  "params": {"intensity": 5}}]},
                          "rooms": [{"id": "a"}]})
