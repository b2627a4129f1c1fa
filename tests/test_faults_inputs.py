"""Every outside input is checked: OSC, MIDI, the wire protocol, config, CLI files and options.

Issue 12 items 1 (one OSC NaN crash-looped a room), 2 (one clock message
crashed the engine), 6 (caches fed from the network grew without bound), 11
(bad image files and options gave exit 0 or tracebacks) and 12 (junk flooded
the logs). Values that are not finite numbers are refused at every boundary,
counted, logged once and never stored or replayed; every decoded number is
bounded to what its receiver can use. Real UDP and ZeroMQ sockets on
loopback ports 6100-6199; the process test is marked slow.
"""

from __future__ import annotations

import logging
import math
import random
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import click
import numpy as np
import pytest
import zmq
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from pythonosc.osc_bundle_builder import OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from audio_out.config import AudioOutConfig
from audio_out.player import Player
from audio_out.role import apply_set, submit_chunk
from engine.config import EngineConfig
from engine.generators import make_generator
from engine.server import EngineServer
from engine.streaming import CONDITION_CACHE_SIZE, RoomSession
from ground.cli_types import FiniteFloat
from ground.errors import ConfigError
from ground.events import MemorySink, null_sink
from ground.params import PARAMETERS, SETTINGS, live_value, parameter
from ground.protocol import (
    MAX_PLAYHEAD,
    PROTOCOL_VERSION,
    Array,
    ArtworkView,
    AudioChunk,
    Control,
    DropCounter,
    PlaybackClock,
    ProtocolError,
    decode,
    encode,
)
from ground.transport import make_socket, send
from installation.cli import cli
from installation.config import OscConfig, config_from_dict
from installation.control import ENGINE_SETTINGS, ControlHub, RefusalLog
from installation.midi_in import MidiControlInput
from installation.osc import OscControlServer
from installation.roles import engine_role_config

CONFIG = config_from_dict({"rooms": [{"id": "a"}, {"id": "b"}]})
NON_FINITE: list[object] = [math.nan, math.inf, -math.inf, "nan", "inf", "0.5", None, b"1",
                            [1.0], 10**400]


def _assert_hub_sane(hub: ControlHub) -> None:
    """Every stored value, and every value a replay sends, is finite and in its range."""
    for room, values in hub.snapshot().items():
        for name, value in values.items():
            param = live_value(name)
            assert math.isfinite(value) and param.low <= value <= param.high, (room, name, value)
    hub.pending()
    hub.replay()
    for message in hub.pending():
        for name, value in message.params.items():
            assert isinstance(value, float) and math.isfinite(value), (name, value)


# -- item 1: the hub, the parameters, the roles' own checks, config ------------------


def test_the_hub_refuses_non_finite_values_naming_the_parameter_and_never_replays_them() -> None:
    hub = ControlHub(CONFIG)
    for name in [*PARAMETERS, *SETTINGS]:
        for value in NON_FINITE:
            with pytest.raises(ValueError) as error:
                hub.set(name, value)
            text = str(error.value)
            assert name in text and "expected" in text and "got" in text, text
    assert hub.snapshot() == {} and hub.pending() == []
    assert hub.replay() == 0 and hub.pending() == []
    # finite values out of range are clamped, engine settings included
    assert hub.set("volume", 9.0) == 4.0
    assert hub.set("lead_s", 0.0) == SETTINGS["lead_s"].low
    assert hub.set("view_timeout_s", 1e300) == SETTINGS["view_timeout_s"].high
    assert hub.set("transition_margin_s", -5) == SETTINGS["transition_margin_s"].low
    assert hub.set("next_variation", 1e300) == PARAMETERS["next_variation"].high
    _assert_hub_sane(hub)


def test_parameter_conversions_never_pass_nan_through() -> None:
    volume = parameter("volume")
    for bad in (math.nan, math.inf, "nan"):
        with pytest.raises(ValueError, match="volume"):
            volume.clamp(bad)
        with pytest.raises(ValueError, match="volume"):
            volume.from_unit(bad)
        with pytest.raises(ValueError, match="volume"):
            volume.to_unit(bad)
    assert volume.from_unit(2.0) == volume.high and volume.to_unit(volume.high / 2) == 0.5
    assert parameter("freeze").clamp(True) == 1.0
    with pytest.raises(ValueError, match="intensity"):
        parameter("intensity").clamp(True)  # a bool is a number only for a toggle


def test_engine_settings_have_the_ranges_of_their_config_fields() -> None:
    assert set(ENGINE_SETTINGS) == {"lead_s", "transition_margin_s", "view_timeout_s"}
    for name, setting in SETTINGS.items():
        bounds = {key: getattr(m, key) for m in EngineConfig.model_fields[name].metadata
                  for key in ("ge", "gt", "le") if hasattr(m, key)}
        if "ge" in bounds:
            assert setting.low == bounds["ge"], name
        else:
            assert setting.low > bounds["gt"], name
        assert setting.high == bounds.get("le", 86400.0), name  # no upper bound: a day
        EngineConfig(**{name: setting.low})  # both ends are valid config values
        EngineConfig(**{name: setting.high})


def test_the_engine_ignores_and_counts_non_finite_controls_whatever_the_sender() -> None:
    config = EngineConfig(generator="sine")
    events: list[tuple[str, dict[str, Any]]] = []
    session = RoomSession("a", 1, make_generator(config), config,
                          lambda kind, **f: events.append((kind, f)))
    for _ in range(3):  # a replay repeats them: counted each time, logged once
        changed = session.set_controls({"transition_s": math.nan, "lead_s": math.inf,
                                        "view_timeout_s": -math.inf, "intensity": "nan",
                                        "freeze": math.nan, "next_variation": math.inf})
        assert changed == []
    assert session.controls.transition_s is None and session.config == config
    assert session.refused_controls == {"transition_s": 3, "lead_s": 3, "view_timeout_s": 3,
                                        "intensity": 3, "freeze": 3, "next_variation": 3}
    assert len([e for e in events if e[0] == "control_refused"]) == 6
    # finite values are clamped to the parameter's range
    assert session.set_controls({"transition_s": 1e9, "lead_s": 0.0}) == ["lead_s",
                                                                           "transition_s"]
    assert session.controls.transition_s == 10.0 and session.config.lead_s == 0.01


def test_audio_out_ignores_and_counts_a_non_finite_volume() -> None:
    player = Player("a", AudioOutConfig(output="none"), 2, null_sink)
    events: list[str] = []
    refused: dict[str, int] = {}
    for bad in (math.nan, math.inf, -math.inf, "nan"):
        apply_set(player, {"volume": bad}, lambda kind, **f: events.append(kind), refused)
    assert player.volume == 1.0 and refused == {"volume": 4}
    assert events == ["control_refused"]
    apply_set(player, {"volume": 9.0}, lambda kind, **f: events.append(kind), refused)
    assert player.volume == 4.0


def test_audio_out_drops_a_chunk_it_cannot_play_and_plays_on() -> None:
    player = Player("a", AudioOutConfig(output="none"), 2, null_sink)
    dropped = DropCounter()
    events = MemorySink()
    mono = Array.from_numpy(np.zeros((480, 1), np.float32))
    for seq in range(3):  # decodes fine, but this room plays stereo
        submit_chunk(player, AudioChunk(v=PROTOCOL_VERSION, room="a", seq=seq, start_sample=0,
                                        sample_rate=48000, audio=mono), dropped, events)
    assert dropped.by_reason == {"unplayable": 3}
    assert [e["seq"] for e in events.of("chunk_refused")] == [0]  # logged once
    stereo = Array.from_numpy(np.full((480, 2), 0.1, np.float32))
    submit_chunk(player, AudioChunk(v=PROTOCOL_VERSION, room="a", seq=3, start_sample=0,
                                    sample_rate=48000, audio=stereo), dropped, events)
    assert dropped.total == 3 and player.timeline.buffered_until >= 480


def test_config_refuses_nan_and_infinity_naming_the_field() -> None:
    for section, field in (("engine", "view_timeout_s"), ("control", "resend_every_s"),
                           ("engine", "transition_crossfade_s")):
        for bad in (math.nan, math.inf):
            with pytest.raises(ConfigError) as error:
                config_from_dict({section: {field: bad}, "rooms": [{"id": "a"}]}, "x.toml")
            assert f"{section}.{field}" in str(error.value)
    with pytest.raises(ConfigError, match="volume"):
        config_from_dict({"rooms": [{"id": "a", "audio_out": {"volume": math.inf}}]})


# -- items 1 and 12: OSC and MIDI junk ------------------------------------------------


def test_refusals_are_summarised_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    events: list[tuple[str, dict[str, Any]]] = []
    log = RefusalLog("osc", lambda kind, **f: events.append((kind, f)), every_s=10.0,
                     clock=lambda: now[0])
    with caplog.at_level(logging.WARNING):
        for i in range(1000):
            log.accept()
            log.refuse("bad-value" if i % 2 else "unparseable", detail=i)
        assert [e[1]["reason"] for e in events] == ["unparseable", "bad-value"]  # first of each
        assert caplog.records == []
        now[0] = 10.0
        log.flush_due()
        log.flush_due()  # nothing new: no second line
    assert len(caplog.records) == 1
    line = caplog.records[0].getMessage()
    assert "osc: refused 1000 in 10 s" in line and "bad-value 500" in line, line
    assert events[-1][0] == "osc_refused_summary" and events[-1][1]["refused"] == 1000
    assert log.received == log.refused == 1000
    assert log.by_reason == {"bad-value": 500, "unparseable": 500}


def _osc(address: str, *args: tuple[str, Any]) -> bytes:
    builder = OscMessageBuilder(address)
    for kind, value in args:
        builder.add_arg(value, kind)
    return bytes(builder.build().dgram)


def _bundle(*messages: bytes) -> bytes:
    builder = OscBundleBuilder(time.time() + 3600.0)  # a time tag an hour ahead
    for message in messages:
        builder.add_content(OscMessage(message))
    return bytes(builder.build().dgram)


# (datagram, messages in it, reasons refused) by kind of junk; None: accepted
_BAD_VALUES = [("f", math.nan), ("f", math.inf), ("f", -math.inf), ("d", math.nan),
               ("d", math.inf), ("s", "nan"), ("s", "0.5"), ("b", b"\x00\x01"), ("N", None),
               ("T", True)]


def _fuzz_datagram(rng: random.Random) -> tuple[bytes, list[str | None]]:
    kind = rng.randrange(9)
    name = rng.choice(["intensity", "brightness", "tempo_bias", "transition_s", "volume",
                       "lead_s", "transition_margin_s", "view_timeout_s"])
    room = rng.choice(["", "a/", "b/"])
    if kind == 0:  # random bytes: neither a message nor a bundle
        return bytes([rng.choice(b"\x00\x01xyz\xff")]) + rng.randbytes(rng.randrange(64)), \
            ["unparseable"]
    if kind == 1:  # a message cut short, or with a type tag python-osc does not know
        whole = _osc(f"/art2mus/{room}{name}", ("d", 0.5))
        if rng.random() < 0.5:
            return whole[:-4], ["unparseable"]
        return _osc(f"/art2mus/{name}")[:-4] + b",xQ\x00", ["unparseable"]
    if kind == 2:  # a parameter with NaN, inf, a string, a blob, nil, a bool or nothing
        if rng.random() < 0.1:
            return _osc(f"/art2mus/{room}{name}"), ["bad-value"]
        return _osc(f"/art2mus/{room}{name}", rng.choice(_BAD_VALUES)), ["bad-value"]
    if kind == 3:  # unknown addresses
        address = rng.choice(["/art2mus/nonsense", "/elsewhere/intensity", "/art2mus/a/b/c",
                              "/" + "x" * rng.randrange(1, 300), "/art2mus/"])
        return _osc(address, ("f", 0.5)), ["unknown-address"]
    if kind == 4:  # an unknown room
        return _osc(f"/art2mus/zz{rng.randrange(99)}/{name}", ("f", 0.5)), ["unknown-room"]
    if kind == 5:  # huge but finite: clamped
        value = rng.choice([("d", 1e300), ("d", -1e300), ("h", 2**62), ("i", -2**31)])
        return _osc(f"/art2mus/{room}{name}", value), [None]
    if kind == 6:  # a bundle an hour ahead: applied at once (not slept on), junk in it refused
        return _bundle(_osc(f"/art2mus/{room}{name}", ("f", 0.5)),
                       _osc(f"/art2mus/{room}{name}", ("f", math.nan))), [None, "bad-value"]
    if kind == 7:  # a trigger steps whatever its argument; a toggle's value must be a number
        if rng.random() < 0.5:
            return _osc(f"/art2mus/{room}next_variation", ("f", math.nan)), [None]
        return _osc(f"/art2mus/{room}freeze", ("f", math.nan)), ["bad-value"]
    return _osc(f"/art2mus/{room}{name}", ("f", rng.uniform(-2, 2))), [None]


def test_osc_fuzz_over_real_udp_stores_nothing_non_finite_and_logs_a_summary(
        caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.WARNING)
    hub = ControlHub(CONFIG)
    events: list[tuple[str, dict[str, Any]]] = []

    def log_event(kind: str, **fields: Any) -> None:
        events.append((kind, fields))

    refusals = RefusalLog("osc", log_event, clock=lambda: 0.0)  # one summary: at close
    server = OscControlServer.start(OscConfig(listen="127.0.0.1:6101"), hub, log_event,
                                    refusals)
    rng = random.Random(12)
    expected: Counter[str] = Counter()
    messages = 0
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for batch in range(50):
            for _ in range(200):
                datagram, outcomes = _fuzz_datagram(rng)
                sender.sendto(datagram, ("127.0.0.1", 6101))
                messages += len(outcomes)
                expected.update(o for o in outcomes if o is not None)
            if batch == 49:  # the last word: a valid value, which must be what stays
                sender.sendto(_osc("/art2mus/a/intensity", ("f", 0.75)), ("127.0.0.1", 6101))
                messages += 1
            # wait for the server to catch up (UDP on loopback drops only on overflow)
            deadline = time.monotonic() + 20.0
            while server.received < messages and time.monotonic() < deadline:
                time.sleep(0.005)
            assert server.received == messages, (batch, server.received, messages)
    finally:
        sender.close()
        server.close()
    assert messages >= 10_000
    assert server.refusals.by_reason == expected
    assert server.refused == sum(expected.values())
    assert hub.current("intensity", "a") == 0.75
    accepted = server.received - server.refused
    assert accepted > 1000  # the fuzz also checked that valid and huge values go through
    _assert_hub_sane(hub)
    # logs: one example per reason and one summary, never one line per packet
    kinds = Counter(kind for kind, _ in events if kind != "osc_listening")
    assert kinds == {"osc_refused": len(expected), "osc_refused_summary": 1}
    assert len(caplog.records) == 1 and "osc: refused" in caplog.records[0].getMessage()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Unhandled parameter type" not in err
    assert len(err.splitlines()) <= 1, err


class FakePort:
    def set_callback(self, callback: Any) -> None:
        self.callback = callback

    def close_port(self) -> None:
        pass


def test_midi_junk_is_counted_by_reason_and_never_stored(
        caplog: pytest.LogCaptureFixture) -> None:
    from installation.config import MidiInConfig

    caplog.set_level(logging.WARNING)
    hub = ControlHub(CONFIG)
    port = FakePort()
    events: list[str] = []
    log = lambda kind, **f: events.append(kind)  # noqa: E731
    midi = MidiControlInput(MidiInConfig(cc={"1": "intensity", "2": "volume@zz"},
                                         soft_takeover=False),
                            hub, log, ports=[port],
                            refusals=RefusalLog("midi", log, clock=lambda: 0.0))
    junk: list[Any] = [[], "abc", [0xB0, 1, math.nan], [0xB0, 300, 1], [0xB0, 1, -1],
                       [True, 1, 2], [0xB0, 1.5, 2], None, [0x10, 1, 2]] * 100
    for message in junk:
        port.callback((message, 0.0))
    port.callback(([0xB0, 2, 64], 0.0))  # mapped to an unknown room
    assert midi.refusals.by_reason == {"malformed": len(junk), "bad-value": 1}
    assert hub.snapshot() == {}
    assert midi.handle([0xB0, 1, 127]) and hub.current("intensity") == 1.0
    assert midi.handle([0xF0, 0x7E, 0x7F, 0xF7]) is False  # sysex: valid, just not mapped
    assert midi.refusals.refused == len(junk) + 1
    midi.close()
    assert events.count("midi_refused") == 2 and events.count("midi_refused_summary") == 1
    assert len(caplog.records) == 1
    _assert_hub_sane(hub)


# -- item 2: decoding bounds every number -------------------------------------------


def _clock(**overrides: Any) -> PlaybackClock:
    fields: dict[str, Any] = dict(v=PROTOCOL_VERSION, room="a", sample_rate=48000,
                                  playhead=48000, buffered_until=96000, wall_time=1.7e9)
    return PlaybackClock(**(fields | overrides))


def _chunk(**overrides: Any) -> AudioChunk:
    fields: dict[str, Any] = dict(
        v=PROTOCOL_VERSION, room="a", seq=3, start_sample=48000, sample_rate=48000,
        audio=Array.from_numpy(np.zeros((480, 2), np.float32)), crossfade=0)
    return AudioChunk(**(fields | overrides))


def _view(**overrides: Any) -> ArtworkView:
    fields: dict[str, Any] = dict(
        v=PROTOCOL_VERSION, room="a", seq=1, time=1.7e9, state="artwork", artwork_id="art",
        confidence=0.9, quad=[(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0)],
        embedding=Array.from_numpy(np.ones(8, np.float32)), features={"brightness": 0.5})
    return ArtworkView(**(fields | overrides))


def _refused(message: Any) -> str:
    with pytest.raises(ProtocolError) as error:
        decode(encode(message))
    return error.value.reason


def test_a_clock_with_an_overflowing_playhead_is_refused_at_decode() -> None:
    assert _refused(_clock(playhead=2**64 - 1)) == "out-of-range"
    assert _refused(_clock(buffered_until=MAX_PLAYHEAD + 1)) == "out-of-range"
    assert _refused(_clock(wall_time=math.nan)) == "out-of-range"
    assert _refused(_clock(sample_rate=0)) == "out-of-range"
    assert _refused(_chunk(crossfade=481)) == "out-of-range"  # longer than the chunk
    # half the sample range: the chunks placed after it stay within what receivers take
    assert _refused(_clock(playhead=MAX_PLAYHEAD + 1)) == "out-of-range"
    assert decode(encode(_clock(playhead=MAX_PLAYHEAD))) == _clock(playhead=MAX_PLAYHEAD)


# message, field, lowest and highest accepted value, type
_NUMBERS: list[tuple[Any, str, float, float, type]] = [
    (_clock, "playhead", 0, MAX_PLAYHEAD, int), (_clock, "buffered_until", 0, MAX_PLAYHEAD, int),
    (_clock, "sample_rate", 8000, 384000, int), (_clock, "underflows", 0, 2**53, int),
    (_clock, "wall_time", 0.0, 1e11, float),
    (_chunk, "seq", 0, 2**53, int), (_chunk, "start_sample", 0, 2**53, int),
    (_chunk, "sample_rate", 8000, 384000, int), (_chunk, "generation_s", 0.0, 1e6, float),
    (_view, "seq", 0, 2**53, int), (_view, "time", 0.0, 1e11, float),
    (_view, "confidence", 0.0, 1.0, float),
]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_numbers_out_of_range_are_refused_and_in_range_accepted(data: st.DataObject) -> None:
    make, field, low, high, kind = data.draw(st.sampled_from(_NUMBERS))
    if kind is int:
        value: Any = data.draw(st.integers(-2**63, 2**64 - 1) | st.integers(low, high)
                               | st.sampled_from([low - 1, low, high, high + 1]))
    else:
        value = data.draw(st.floats() | st.floats(low, high)
                          | st.sampled_from([low, high, math.nextafter(high, math.inf)]))
    message = make(**{field: value})
    if low <= value <= high:  # NaN is never inside
        decoded = decode(encode(message))
        assert getattr(decoded, field) == value and decoded == message
    else:
        assert _refused(message) == "out-of-range"


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=70), st.floats() | st.text(max_size=300)
                       | st.integers(-2**63, 2**63 - 1), max_size=70))
def test_control_params_are_finite_numbers_or_short_strings(params: dict[str, Any]) -> None:
    message = Control(v=PROTOCOL_VERSION, room="*", target="engine", command="set",
                      params=params)
    ok = len(params) <= 64 and all(
        len(k) <= 64 and (len(v) <= 256 if isinstance(v, str)
                          else math.isfinite(v) and abs(v) <= 1e9)
        for k, v in params.items())
    if ok:
        decoded = decode(encode(message))
        assert isinstance(decoded, Control) and decoded.params == params
        assert all(isinstance(v, str) or math.isfinite(v) for v in decoded.params.values())
    else:
        assert _refused(message) in ("out-of-range", "malformed")


def test_strings_dicts_lists_and_arrays_are_bounded() -> None:
    assert _refused(_view(artwork_id="x" * 257)) == "out-of-range"
    assert _refused(_view(room="r" * 65)) == "out-of-range"
    assert _refused(_view(features={f"f{i}": 0.5 for i in range(65)})) == "out-of-range"
    assert _refused(_view(features={"brightness": math.nan})) == "out-of-range"
    assert _refused(_view(features={"brightness": 1.5})) == "out-of-range"
    assert _refused(_view(quad=[(0.0, math.inf)] * 4)) == "out-of-range"
    assert _refused(_view(quad=[(0.0, 0.0)] * 17)) == "out-of-range"
    bad = np.ones(8, np.float32)
    bad[3] = np.nan
    assert _refused(_view(embedding=Array.from_numpy(bad))) == "non-finite"
    audio = np.zeros((480, 2), np.float32)
    audio[10, 1] = np.inf
    assert _refused(_chunk(audio=Array.from_numpy(audio))) == "non-finite"
    assert _refused(_chunk(audio=Array("float32", (1, 1, 1, 1, 1), b"\0" * 4))) \
        == "out-of-range"
    assert decode(encode(_view())) == _view()


def test_the_engine_drops_an_overflowing_clock_and_plays_on() -> None:
    """Real ZeroMQ sockets into a real engine server with the procedural composer."""
    config = config_from_dict({
        "network": {name: f"tcp://127.0.0.1:{6110 + i}"
                    for i, name in enumerate(("views", "chunks", "clock", "control"))},
        "engine": {"chunk_s": 0.25, "lead_s": 0.5},
        "rooms": [{"id": "a"}],
    })
    context = zmq.Context()
    server = EngineServer(engine_role_config(config), null_sink, context=context)
    listener = make_socket(context, zmq.SUB, config.network.chunks, bind=False, subscribe=["a"])
    clocks = make_socket(context, zmq.PUSH, config.network.clock, bind=False)
    try:
        send(clocks, _clock(playhead=0, buffered_until=0))
        clocks.send_multipart(encode(_clock(playhead=2**64 - 1, buffered_until=2**64 - 1)))
        chunk = None
        deadline = time.monotonic() + 20.0
        while chunk is None and time.monotonic() < deadline:
            server._receive()
            server._generate_due()  # the old engine died here: int64 overflow
            if listener.poll(20):
                chunk = decode(listener.recv_multipart())
        assert isinstance(chunk, AudioChunk) and chunk.start_sample < 48000
        assert dict(server.inboxes["clock"].dropped.by_reason) == {"out-of-range": 1}
    finally:
        listener.close()
        clocks.close()
        server.close()
        context.term()


def test_a_turn_reads_every_queued_clock_and_applies_each_rooms_newest() -> None:
    """While the engine generates (most of a second on a busy GPU) clocks queue up: a turn
    reads them all and keeps each room's newest, or the playhead estimates fall seconds
    behind and half the reports are refused (found with bench rooms, 128 rooms)."""
    config = config_from_dict({
        "network": {name: f"tcp://127.0.0.1:{6120 + i}"
                    for i, name in enumerate(("views", "chunks", "clock", "control"))},
        "engine": {"chunk_s": 0.25, "lead_s": 0.5},
        "rooms": [{"id": "a"}, {"id": "b"}],
    })
    context = zmq.Context()
    server = EngineServer(engine_role_config(config), null_sink, context=context)
    clocks = make_socket(context, zmq.PUSH, config.network.clock, bind=False)
    try:
        sent = 60  # per room: 3 s of reports (two rooms: over the old per-turn budget, 108)
        for i in range(sent):
            for room in ("a", "b"):
                send(clocks, _clock(room=room, playhead=480 * (i + 1),
                                    buffered_until=480 * (i + 1)))
        time.sleep(0.5)  # every frame through ZeroMQ's queues (loopback: milliseconds)
        server._receive()
        for room in ("a", "b"):
            assert server.sessions[room]._clock is not None
            assert server.sessions[room]._clock.playhead == 480 * sent
        assert server.inboxes["clock"].received == 2 * sent
    finally:
        clocks.close()
        server.close()
        context.term()


# -- item 6: caches fed from the network are bounded --------------------------------


def test_condition_caches_are_bounded_and_keep_the_playing_artwork() -> None:
    config = EngineConfig(generator="sine")
    session = RoomSession("a", 1, make_generator(config), config)
    session.on_view(_view(artwork_id="playing"))
    for i in range(20 * CONDITION_CACHE_SIZE):  # a peer inventing artwork ids
        session.latest_view = _view(artwork_id=f"id-{i}")
        session._condition_for(session.latest_view)
    assert len(session._conditions) <= CONDITION_CACHE_SIZE
    assert "playing" in session._conditions
    # knob sweeps: the adjusted conditions are bounded too
    for i in range(500):
        session.set_controls({"intensity": i / 500})
        session.tick()
        session._last_replan = -math.inf
    assert len(session._adjusted) <= 64
    # new ids through on_view, as capture would send them
    for i in range(2000):
        session.on_view(_view(artwork_id=f"view-{i}", seq=i))
    assert len(session._conditions) <= CONDITION_CACHE_SIZE
    assert len(session._adjusted) <= 64 and "view-1999" in session._conditions


# -- item 11: bad input files and options -------------------------------------------


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import cv2

    folder = tmp_path_factory.mktemp("images")
    picture = cv2.resize(np.random.default_rng(0).integers(0, 255, (20, 30, 3), np.uint8),
                         (300, 200))
    good = folder / "good.jpg"
    cv2.imwrite(str(good), picture)
    files = {"good": good}
    data = good.read_bytes()
    for name, content in (("truncated.jpg", data[: len(data) * 2 // 3]),
                          ("empty.jpg", b""), ("text.jpg", b"not an image at all"),
                          ("trailer.jpg", data + b"SEFT" * 8)):
        (folder / name).write_bytes(content)
        files[name.split(".")[0]] = folder / name
    ok, png = cv2.imencode(".png", picture)
    (folder / "truncated.png").write_bytes(png.tobytes()[: len(png) // 2])
    files["truncated_png"] = folder / "truncated.png"
    files["missing"] = folder / "missing.jpg"
    files["folder"] = folder
    return files


@pytest.mark.parametrize("command", [["embed"], ["detect"], ["render", "--out", "OUT"]])
@pytest.mark.parametrize(("case", "words"), [
    ("missing", "does not exist"), ("truncated", "truncated"), ("truncated_png", "truncated"),
    ("empty", "empty file"), ("text", "cannot decode"), ("folder", "a folder")])
def test_bad_image_files_are_one_error_line_naming_the_file(
        images: dict[str, Path], command: list[str], case: str, words: str,
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    argv = [a.replace("OUT", str(tmp_path / "out.wav")) for a in command] + [str(images[case])]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 3, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot read image "), result.output
    assert str(images[case]) in lines[0] and words in lines[0], lines[0]
    assert capfd.readouterr().err == ""  # nothing from OpenCV, libjpeg or libpng
    assert not (tmp_path / "out.wav").exists()


def test_good_images_and_trailing_bytes_are_accepted(images: dict[str, Path]) -> None:
    for name in ("good", "trailer"):
        result = CliRunner().invoke(cli, ["embed", "--json", str(images[name])])
        assert result.exit_code == 0, result.output
        assert '"features"' in result.output


def test_render_refuses_bad_seconds_and_an_unwritable_out_before_rendering(
        images: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.streaming

    rendered: list[float] = []

    def render_offline(*args: Any, **kwargs: Any) -> Any:
        rendered.append(args[2])
        raise AssertionError("rendered before the output was checked")

    monkeypatch.setattr(engine.streaming, "render_offline", render_offline)
    good = str(images["good"])
    out = str(tmp_path / "out.wav")
    for seconds in ("nan", "inf", "-inf", "1e12", "0", "-1", "3600.5"):
        result = CliRunner().invoke(cli, ["render", good, "--seconds", seconds, "--out", out])
        assert result.exit_code == 2, (seconds, result.output)
        assert "Invalid value for '--seconds'" in result.output and "Traceback" not in \
            result.output
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for target, words in ((blocker / "out.wav", "is a file, not a folder"),
                          (tmp_path, "it is a folder"),
                          (tmp_path / "out.mp3", "expected a file ending in .wav or .flac")):
        result = CliRunner().invoke(cli, ["render", good, "--seconds", "1", "--out",
                                          str(target)])
        assert result.exit_code == 3, result.output
        assert result.output.startswith(f"Error: cannot write --out {target}: ")
        assert words in result.output
    result = CliRunner().invoke(cli, ["render", good, "--seconds", "1", "--out", out,
                                      "--midi", str(blocker / "x.mid")])
    assert result.exit_code == 3 and "cannot write --midi" in result.output
    assert rendered == [] and not Path(out).exists()


RENDER_ON_A_FULL_DISK = """
import resource, signal, sys
from installation.cli import main
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))
sys.argv = ["art2mus", "render", *sys.argv[1:]]
main()
"""


def test_render_on_a_full_disk_keeps_the_file_that_was_there(images: dict[str, Path],
                                                              tmp_path: Path) -> None:
    """An operator's full disk: render --out wrote over the take in place and left it cut
    short (0.34 s of a 0.1 s file's place). Now the new file goes beside it, renamed over
    it only once whole."""
    import numpy as np
    import soundfile

    take = tmp_path / "take.wav"
    soundfile.write(take, np.full((4800, 2), 0.25, np.float32), 48000)
    before = take.read_bytes()
    child = subprocess.run([sys.executable, "-c", RENDER_ON_A_FULL_DISK, str(images["good"]),
                            "--seconds", "2", "--out", str(take)],
                           capture_output=True, text=True, timeout=120)
    assert child.returncode == 3, child.stdout + child.stderr[-2000:]
    assert f"Error: cannot write {take}: " in child.stderr, child.stderr
    assert child.stderr.rstrip().endswith("the file that was there is kept"), child.stderr
    assert "Traceback" not in child.stderr
    assert take.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["take.wav"]


# -- issue 14: ``render IMG`` is a true preview -----------------------------------------


@pytest.fixture(scope="module")
def gallery_photo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Path, Path]:
    """A synthetic gallery photo of one catalogued painting, its scene, the catalogue, and a
    two-room config whose second room names that catalogue."""
    import cv2

    from capture.synthetic.scenes import SceneGenerator, write_catalogue

    folder = tmp_path_factory.mktemp("preview")
    scene = SceneGenerator(catalogue_size=8, outsiders=0).render(5, paintings=1, clean=True)
    photo = folder / "photo.png"
    cv2.imwrite(str(photo), scene.image)
    catalogue = write_catalogue(folder / "catalogue", 8)
    config = folder / "rooms.toml"
    config.write_text(f'[[rooms]]\nid = "a"\nseed = 21\n\n[[rooms]]\nid = "b"\nseed = 33\n'
                      f'[rooms.capture.recognition]\ncatalogue = "{catalogue}"\n')
    return photo, scene, catalogue, config


def _render(*argv: str) -> Any:
    return CliRunner().invoke(cli, ["render", *argv, "--seconds", "0.5", "--json"])


def test_render_describes_the_painting_located_and_rectified_in_the_photo(
        gallery_photo: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    import installation.cli as cli_module

    photo, scene, _, _ = gallery_photo
    described: list[tuple[int, ...]] = []
    real_view = cli_module._view_for_image

    def spy(image: Any, *args: Any) -> Any:
        described.append(image.shape)
        return real_view(image, *args)

    monkeypatch.setattr(cli_module, "_view_for_image", spy)
    out = tmp_path / "preview.wav"
    result = _render(str(photo), "--out", str(out))
    assert result.exit_code == 0, result.output + repr(result.exception)
    record = json.loads(result.stdout)
    truth = scene.paintings[0].quad
    quad = np.array(record["located"]["quad"])
    assert np.linalg.norm(quad - truth, axis=1).max() < 0.03 * scene.image.shape[1], (quad, truth)
    assert record["room"] is None and record["seed"] == 0 and out.exists()
    assert "render: painting unknown (score" in result.stderr and "found by quad" in result.stderr
    # What was described is the painting, at its own aspect, long side 512 (not the photo).
    height, width = described[0][:2]
    side = np.linalg.norm(truth - np.roll(truth, -1, axis=0), axis=1)
    aspect = (side[0] + side[2]) / (side[1] + side[3])
    assert max(width, height) == 512 and abs(width / height - aspect) < 0.05 * aspect
    assert f"rectified to {width}x{height}" in result.stderr


def test_render_takes_the_rooms_seed_catalogue_and_settings(gallery_photo: tuple,
                                                            tmp_path: Path) -> None:
    import json

    photo, scene, _, config = gallery_photo
    out = str(tmp_path / "preview.wav")
    first = json.loads(_render(str(photo), "--out", out, "--config", str(config)).stdout)
    assert first["room"] == "a" and first["seed"] == 21  # the first room, no catalogue
    assert first["located"]["artwork_id"] is None
    result = _render(str(photo), "--out", out, "--config", str(config), "--room", "b")
    assert result.exit_code == 0, result.output + repr(result.exception)
    second = json.loads(result.stdout)
    painting = scene.paintings[0].artwork_id
    assert second["room"] == "b" and second["seed"] == 33
    assert second["located"]["artwork_id"] == painting  # the room's catalogue recognised it
    assert second["decisions"]["artwork_id"] == painting  # and the engine plays that work
    # described as the room describes it: from its catalogue image, not the photo's light
    assert f"render: {painting} described from its catalogue image" in result.stderr
    chosen = json.loads(_render(str(photo), "--out", out, "--config", str(config), "--room",
                                "b", "--seed", "5").stdout)
    assert chosen["seed"] == 5  # an explicit --seed wins over the room's


def test_render_takes_the_photo_through_the_rooms_lens_where_it_fits(gallery_photo: tuple,
                                                                     tmp_path: Path) -> None:
    import json

    photo, scene, _, _ = gallery_photo
    height, width = scene.image.shape[:2]

    def lens(w: int, h: int) -> str:
        return (f'[rooms.capture.lens]\nmodel = "standard"\nwidth = {w}\nheight = {h}\n'
                f'focal = [{w}, {w}]\ncentre = [{w / 2}, {h / 2}]\n'
                f'distortion = [0.0, 0.0, 0.0, 0.0, 0.0]\n')

    config = tmp_path / "lens.toml"
    config.write_text(f'[[rooms]]\nid = "c"\nseed = 1\n{lens(2 * width, 2 * height)}\n'
                      f'[[rooms]]\nid = "d"\nseed = 2\n{lens(width, width)}')
    out = str(tmp_path / "preview.wav")
    result = _render(str(photo), "--out", out, "--config", str(config), "--room", "c")
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"render: the room's lens (standard) taken out of {photo}" in result.stderr
    assert json.loads(result.stdout)["located"] is not None  # a pinhole lens changes nothing
    result = _render(str(photo), "--out", out, "--config", str(config), "--room", "d")
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert (f"render: the room's lens (measured at {width}x{width}) does not fit {photo} "
            f"({width}x{height}); taken as it is") in result.stderr


def test_render_falls_back_to_the_whole_image_and_says_so(tmp_path: Path) -> None:
    import json

    import cv2

    blank = tmp_path / "blank.png"
    noise = np.random.default_rng(3).normal(0, 2, (240, 320, 3))
    cv2.imwrite(str(blank), np.clip(150 + noise, 0, 255).astype(np.uint8))
    result = _render(str(blank), "--out", str(tmp_path / "o.wav"))
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert json.loads(result.stdout)["located"] is None
    assert result.stderr == (f"render: no painting found in {blank}; describing the whole "
                             f"image\n")


def test_render_refuses_a_room_without_config_and_an_unknown_room(gallery_photo: tuple,
                                                                  tmp_path: Path) -> None:
    photo, _, _, config = gallery_photo
    out = tmp_path / "o.wav"
    result = _render(str(photo), "--out", str(out), "--room", "b")
    assert result.exit_code == 3, result.output
    assert result.output.startswith("Error: --room b: expected --config FILE as well")
    result = _render(str(photo), "--out", str(out), "--config", str(config), "--room", "c")
    assert result.exit_code == 2, result.output
    assert "no room 'c'" in result.output and "rooms are ['a', 'b']" in result.output
    assert not out.exists()


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        found.append((prefix + name, command))
        if isinstance(command, click.Group):
            found += _commands(command, prefix + name + " ")
    return found


def test_every_float_option_of_every_command_refuses_nan() -> None:
    floats = [(name, param) for name, command in _commands(cli) for param in command.params
              if isinstance(param.type, click.types.FloatParamType)]
    names = {(name, param.name) for name, param in floats}
    assert {("render", "seconds"), ("bench generator", "seconds"), ("demo", "seconds")} <= names
    assert [(name, param.name) for name, param in floats
            if not isinstance(param.type, FiniteFloat)] == []
    for _, param in floats:
        for bad in ("nan", "inf", "-inf"):
            with pytest.raises(click.BadParameter):
                param.type.convert(bad, param, None)


def test_every_int_option_of_every_command_is_bounded_both_ways() -> None:
    # click's plain int takes -1 and 10**12 alike: a seed numpy refuses with a traceback, a
    # sample rate pydantic refuses with one, a count of scenes that runs for a year.
    ints = [(name, param) for name, command in _commands(cli) for param in command.params
            if isinstance(param.type, click.types.IntParamType)]
    assert {("bench capture", "seed"), ("detect", "detect_width")} <= {
        (name, param.name) for name, param in ints}
    assert [(name, param.name) for name, param in ints
            if not (isinstance(param.type, click.IntRange) and param.type.min is not None
                    and param.type.max is not None)] == []
    for _, param in ints:
        assert isinstance(param.type, click.IntRange)
        for bad in (param.type.min - 1, param.type.max + 1, 10**30):
            with pytest.raises(click.BadParameter):
                param.type.convert(bad, param, None)


# -- items 1 and 2 on real processes ---------------------------------------------------


@pytest.mark.slow
def test_osc_nan_and_an_overflowing_clock_restart_no_role(tmp_path: Path) -> None:
    from test_faults_processes import Installation, fault_config, make_camera_video

    config = fault_config(tmp_path, 6120, make_camera_video(tmp_path / "camera.avi"),
                          control={"osc": {"listen": "127.0.0.1:6125"},
                                   "resend_every_s": 0.3})
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    context = zmq.Context()
    forger = make_socket(context, zmq.PUSH, config.network.clock, bind=False)
    try:
        with Installation(config, tmp_path) as inst:
            inst.wait_for("music of an artwork", lambda: [
                e for e in inst.events("engine") if e["kind"] == "chunk" and e.get("artwork_id")],
                60)
            sent_at = time.time()
            for address, arg in (("/art2mus/volume", ("f", math.nan)),
                                 ("/art2mus/a/volume", ("f", math.inf)),
                                 ("/art2mus/transition_s", ("f", math.nan)),
                                 ("/art2mus/lead_s", ("d", math.inf)),
                                 ("/art2mus/view_timeout_s", ("s", "nan"))):
                sender.sendto(_osc(address, arg), ("127.0.0.1", 6125))
            forger.send_multipart(encode(_clock(playhead=2**64 - 1,
                                                buffered_until=2**64 - 1)))
            sender.sendto(_osc("/art2mus/a/volume", ("f", 0.5)), ("127.0.0.1", 6125))
            # the valid volume arrives, then is replayed: every role got every replay
            inst.wait_for("three volume sets", lambda: len([
                e for e in inst.events("audio_out-a")
                if e["kind"] == "volume" and e["time"] >= sent_at]) >= 3, 20)
            inst.wait_for("the engine dropped the clock", lambda: [
                r for r in inst.supervisor.role_rows() if r["name"] == "engine"
                and (r.get("status") or {}).get("dropped", {}).get("clock", 0) >= 1], 20)
            for name in ("engine", "audio_out:a"):
                role = inst.role(name)
                assert role.restarts == 0 and role.exit_codes == [], (name, role.exit_codes)
            _assert_hub_sane(inst.supervisor.hub)
    finally:
        forger.close()
        context.term()
        sender.close()
