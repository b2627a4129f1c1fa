"""OSC in and out over real UDP on loopback."""

from __future__ import annotations

import re
import socket
import threading
from collections import Counter
from typing import Any

import pytest
from polling import wait_until
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.osc_server import ThreadingOSCUDPServer
from pythonosc.udp_client import SimpleUDPClient

from engine.beats import BeatGrid, BeatOut
from ground.errors import ConfigError
from ground.events import null_sink
from ground.params import PARAMETERS
from installation.config import OscConfig, config_from_dict
from installation.control import ENGINE_SETTINGS, ControlHub, ParameterChange
from installation.osc import STATE_FIELDS, OscControlServer, OscParameterEcho, OscStateSender

CONFIG = config_from_dict({"rooms": [{"id": "a"}, {"id": "b"}]})


def test_osc_messages_set_parameters_for_all_rooms_or_one() -> None:
    hub = ControlHub(CONFIG)
    events: list[tuple[str, dict[str, Any]]] = []
    # a fixed port: a config refuses port 0, which would listen where no sender can know
    server = OscControlServer.start(OscConfig(listen="127.0.0.1:6195"), hub,
                                    lambda kind, **f: events.append((kind, f)))
    try:
        client = SimpleUDPClient("127.0.0.1", server.port)
        client.send_message("/art2mus/intensity", 0.8)
        client.send_message("/art2mus/b/tempo_bias", -0.5)
        client.send_message("/art2mus/freeze", [])  # no argument: toggle
        client.send_message("/art2mus/a/next_variation", 1)
        client.send_message("/art2mus/volume", 5)  # int, clamped to the range (0..4)
        client.send_message("/art2mus/lead_s", 2.0)
        client.send_message("/art2mus/nonsense", 1.0)
        client.send_message("/elsewhere/intensity", 1.0)
        client.send_message("/art2mus/intensity", "loud")
        wait_until(lambda: server.received >= 9, 3.0)
        client.close()
    finally:
        server.close()
    assert hub.current("intensity", "a") == 0.8 and hub.current("intensity", "b") == 0.8
    assert hub.current("tempo_bias", "b") == -0.5 and hub.current("tempo_bias", "a") == 0.0
    assert hub.current("freeze") == 1.0
    assert hub.current("next_variation", "a") == 1.0
    assert hub.current("volume") == 4.0 and hub.current("lead_s") == 2.0
    assert server.refused == 3
    assert server.refusals.by_reason == {"unknown-address": 2, "bad-value": 1}
    # the first refusal of each reason is logged with its details, later ones only counted
    refused = [f["address"] for kind, f in events if kind == "osc_refused"]
    assert refused == ["/art2mus/nonsense", "/art2mus/intensity"]


def _rows() -> list[dict[str, Any]]:
    """Role rows as the supervisor reports them: room b's audio_out is down."""
    return [
        {"name": "engine", "kind": "engine", "room": None, "state": "running",
         "status": {"rooms": {"a": {"artwork_id": "art-1", "key": "D", "mode": "lydian",
                                    "tempo_bpm": 92.0}}}},
        {"name": "capture:a", "kind": "capture", "room": "a", "state": "running",
         "status": {"artwork_id": "art-1", "confidence": 0.75}},
        {"name": "audio_out:a", "kind": "audio_out", "room": "a", "state": "running",
         "status": {"state": "playing", "level_dbfs": -18.5}},
        {"name": "audio_out:b", "kind": "audio_out", "room": "b", "state": "restarting",
         "status": {}},
    ]


def test_each_rooms_state_goes_out_one_value_per_address() -> None:
    received: dict[str, Any] = {}
    lock = threading.Lock()

    def record(address: str, *args: Any) -> None:
        with lock:
            received[address] = args[0] if len(args) == 1 else args

    dispatcher = Dispatcher()
    dispatcher.set_default_handler(record)
    listener = ThreadingOSCUDPServer(("127.0.0.1", 0), dispatcher)
    thread = threading.Thread(target=listener.serve_forever, daemon=True)
    thread.start()
    try:
        port = listener.server_address[1]
        sender = OscStateSender(OscConfig(send=(f"127.0.0.1:{port}",)), _rows,
                                [room.id for room in CONFIG.rooms], null_sink)
        sender.send_once()
        wait_until(lambda: len(received) >= 2 * len(STATE_FIELDS), 3.0)
        sender.close()
    finally:
        listener.shutdown()
        listener.server_close()
    assert received["/art2mus/a/artwork_id"] == "art-1"
    assert abs(received["/art2mus/a/confidence"] - 0.75) < 1e-6
    assert received["/art2mus/a/key"] == "D lydian"
    assert received["/art2mus/a/tempo"] == 92.0
    assert abs(received["/art2mus/a/level"] + 18.5) < 1e-4
    assert received["/art2mus/a/health"] == 1.0
    assert received["/art2mus/b/health"] == 0.0  # its audio_out is down
    assert received["/art2mus/b/artwork_id"] == ""


def test_a_parameter_set_on_osc_is_echoed_to_the_send_targets_but_not_its_sender() -> None:
    received: list[tuple[str, float]] = []
    lock = threading.Lock()

    def record(address: str, *args: Any) -> None:
        with lock:
            received.append((address, args[0]))

    dispatcher = Dispatcher()
    dispatcher.set_default_handler(record)
    # the target, a TouchOSC stand-in: it listens on 6197 and sends from the same socket
    target = ThreadingOSCUDPServer(("127.0.0.1", 6197), dispatcher)
    threading.Thread(target=target.serve_forever, daemon=True).start()
    config = OscConfig(listen="127.0.0.1:6196", send=("127.0.0.1:6197",))
    hub = ControlHub(CONFIG)
    server = OscControlServer.start(config, hub, null_sink)
    echo = OscParameterEcho.start(config, hub, null_sink)
    try:
        client = SimpleUDPClient("127.0.0.1", server.port)  # another sender: echoed
        client.send_message("/art2mus/intensity", 0.8)
        wait_until(lambda: len(received) >= 1, 3.0)
        # the target's own fader move: stored, but not sent back to it
        from pythonosc.osc_message_builder import OscMessageBuilder

        builder = OscMessageBuilder("/art2mus/b/brightness")
        builder.add_arg(0.3)
        target.socket.sendto(builder.build().dgram, ("127.0.0.1", server.port))
        wait_until(lambda: hub.current("brightness", "b") == 0.3, 3.0)
        hub.set("volume", 2.0, "a", source="console")  # any surface is echoed
        wait_until(lambda: len(received) >= 2, 3.0)
        client.close()
    finally:
        echo.close()
        server.close()
        target.shutdown()
        target.server_close()
    assert [a for a, _ in received] == ["/art2mus/intensity", "/art2mus/a/volume"]
    assert abs(received[0][1] - 0.8) < 1e-6 and received[1][1] == 2.0
    assert echo.sent == 2
    hub.set("intensity", 0.1)  # closed: no longer listening, nothing sent
    assert echo.sent == 2


def test_a_tempo_an_osc_client_echoes_back_as_float32_is_no_second_change() -> None:
    # a TouchOSC-like client sends back what it receives, from its own port: 126.53 came
    # back as 126.52999877929688, a second control_set and re-plan (the float32 step at
    # 20-300 bpm is 2-15e-6, more than the 6 decimals a value was rounded to)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    target: ThreadingOSCUDPServer | None = None

    def send_back(address: str, *args: Any) -> None:
        assert target is not None
        target.socket.sendto(_datagram(address, ("f", args[0])), ("127.0.0.1", port))

    dispatcher = Dispatcher()
    dispatcher.set_default_handler(send_back)
    target = ThreadingOSCUDPServer(("127.0.0.1", 0), dispatcher)
    threading.Thread(target=target.serve_forever, daemon=True).start()
    config = OscConfig(listen=f"127.0.0.1:{port}",
                       send=(f"127.0.0.1:{target.server_address[1]}",))
    events: list[tuple[str, dict[str, Any]]] = []
    hub = ControlHub(CONFIG, lambda kind, **f: events.append((kind, f)))
    server = OscControlServer.start(config, hub, null_sink)
    echo = OscParameterEcho.start(config, hub, null_sink)
    try:
        for count, (name, value) in enumerate((("tempo_bpm", 126.53), ("tempo_bpm", 299.99),
                                               ("volume", 3.7), ("tempo_bpm", 126.54)), 1):
            hub.set(name, value, source="clock")  # 64-bit, as MIDI clock or Link set it
            wait_until(lambda count=count: server.received >= count, 3.0)
    finally:
        echo.close()
        server.close()
        target.shutdown()
        target.server_close()
    assert server.refused == 0 and echo.sent == 4
    assert hub.current("tempo_bpm") == 126.54
    assert [m.params for m in hub.pending()] == [{"volume": 3.7}, {"tempo_bpm": 126.54}]
    hub.flush_events(force=True)  # the changes within a second are one event, counted
    sets = [f for kind, f in events if kind == "control_set"]
    changes: Counter[tuple[str, str]] = Counter()
    for f in sets:
        changes[f["name"], f["source"]] += f.get("changes", 1)
    assert changes == {("tempo_bpm", "clock"): 3, ("volume", "clock"): 1}  # no echo among them
    assert [f["value"] for f in sets if f["name"] == "tempo_bpm"][-1] == 126.54


class _RecordingClient:
    """Stands in for a UDP client: keeps what would be sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def send_message(self, address: str, value: Any) -> None:
        self.sent.append((address, value))

    def close(self) -> None:
        pass


def test_the_rooms_key_name_and_the_tonic_parameter_have_addresses_of_their_own() -> None:
    # OSC out's state and the engine's beat out send the key's name, a string, on
    # /art2mus/ROOM/key; the tonic parameter (once called key) is echoed on /tonic: a
    # TouchOSC control bound to either gets one type only
    hub = ControlHub(CONFIG)
    rooms = [room.id for room in CONFIG.rooms]
    state = OscStateSender(OscConfig(), _rows, rooms, null_sink)
    state.clients = [client := _RecordingClient()]
    state.send_once()
    beats_sent: list[tuple[str, Any]] = []
    beats = BeatOut(rooms, 48000, lambda address, value: beats_sent.append((address, value)),
                    clock=lambda: 0.0)
    for room in rooms:
        beats.observe(room, BeatGrid(anchor=0, bar_samples=96000.0, beats_per_bar=4,
                                     key="D dorian"), 0)
    beats.pump()
    assert ("/art2mus/a/key", "D lydian") in client.sent
    assert ("/art2mus/b/key", "D dorian") in beats_sent
    out = {address for address, _ in [*client.sent, *beats_sent]}
    assert all(isinstance(value, str) for address, value in [*client.sent, *beats_sent]
               if address.endswith("/key"))

    echo = OscParameterEcho(OscConfig(), hub, null_sink)
    try:
        echoed = {echo.address(ParameterChange(room, name, 0.0, "test"))
                  for room in ("*", *rooms) for name in [*PARAMETERS, *ENGINE_SETTINGS]}
    finally:
        echo.close()
    assert echo.address(ParameterChange("a", "tonic", 2.0, "test")) == "/art2mus/a/tonic"
    assert not echoed & out, sorted(echoed & out)

    # OSC in sets the tonic on its own address; a number sent to the key's name is refused,
    # with the new name in the message
    events: list[tuple[str, dict[str, Any]]] = []
    server = OscControlServer(OscConfig(), hub, lambda kind, **f: events.append((kind, f)))
    server.handle("/art2mus/a/tonic", 2)
    server.handle("/art2mus/a/key", 7)
    assert hub.current("tonic", "a") == 2.0 and hub.current("tonic", "b") == -1.0
    assert server.refusals.by_reason == {"unknown-address": 1}
    refused = [f for kind, f in events if kind == "osc_refused"]
    assert refused[0]["error"].startswith("OSC address '/art2mus/a/key': 'key' is now called "
                                          "'tonic'; expected /art2mus/PARAM or")


def test_a_send_target_that_is_our_own_listen_address_is_refused_naming_the_field() -> None:
    # it would hear every echo it sends: one knob move ping-pongs for ever
    for listen, target in (("127.0.0.1:9000", "127.0.0.1:9000"),
                           ("127.0.0.1:9000", "localhost:9000"),
                           ("0.0.0.0:9000", "127.0.0.1:9000"),
                           ("localhost:9000", "0.0.0.0:9000"),
                           ("192.168.1.20:9000", "192.168.1.20:9000")):
        with pytest.raises(ValueError, match=re.escape(
                f"send: expected targets other than this installation's own OSC in "
                f"(listen = {listen!r}), got {target!r}")):
            OscConfig(listen=listen, send=("10.0.0.9:9000", target))
    with pytest.raises(ConfigError, match=r"control\.osc.*send: expected targets other"):
        config_from_dict({"rooms": [{"id": "a"}], "control": {"osc": {
            "listen": "127.0.0.1:9000", "send": ["127.0.0.1:9000"]}}})
    # another port, another host, or no OSC in: a target like any other
    for listen, target in (("127.0.0.1:9000", "127.0.0.1:9001"),
                           ("0.0.0.0:9000", "192.168.1.20:9000"),
                           ("192.168.1.20:9000", "127.0.0.1:9000"),
                           ("", "127.0.0.1:9000")):
        assert OscConfig(listen=listen, send=(target,)).send == (target,)


def test_two_installations_echoing_to_each_other_settle_after_one_round() -> None:
    # A.send is B's OSC in and B.send is A's: each echo comes back once and stops there,
    # whatever the kind of value (a number, a toggle or a choice set with a value)
    hubs = [ControlHub(CONFIG), ControlHub(CONFIG)]
    servers = [OscControlServer(OscConfig(), hub, null_sink) for hub in hubs]
    failed: list[dict[str, Any]] = []
    for hub, other in zip(hubs, reversed(servers), strict=True):
        def forward(change: ParameterChange, other: OscControlServer = other) -> None:
            room = "" if change.room == "*" else f"{change.room}/"
            # from the other installation's echo socket, not a target's own HOST:PORT
            other.handle(f"/art2mus/{room}{change.name}", change.value,
                         origin="udp:127.0.0.1:50000")
        hub.subscribe(forward)
    for hub in hubs:
        hub.log_event = lambda kind, **f: failed.append(f) if kind.endswith("failed") else None
    servers[0].handle("/art2mus/intensity", 0.8, origin="udp:10.0.0.5:9000")
    servers[0].handle("/art2mus/a/freeze", 1, origin="udp:10.0.0.5:9000")
    servers[0].handle("/art2mus/b/tonic", 2.0, origin="udp:10.0.0.5:9000")
    assert failed == []  # no echo ran into a recursion limit
    for hub in hubs:
        assert [(m.room, m.params) for m in hub.pending()] == [
            ("*", {"intensity": 0.8}), ("a", {"freeze": 1.0}), ("b", {"tonic": 2.0})]
    assert [s.received for s in servers] == [3 + 3, 3]  # each message, then its echo back


def _datagram(address: str, *args: tuple[str, Any]) -> bytes:
    builder = OscMessageBuilder(address)
    for tag, value in args:
        builder.add_arg(value, tag)
    return bytes(builder.build().dgram)


def _send_and_close(server: OscControlServer, port: int, sent: list[bytes]) -> None:
    """Send each datagram to OSC in on ``port``, wait until it has them all, close it."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for datagram in sent:
                sender.sendto(datagram, ("127.0.0.1", port))
            wait_until(lambda: server.received >= len(sent), 3.0)
    finally:
        server.close()


def test_only_numbers_and_for_toggles_and_triggers_booleans_are_values() -> None:
    # python-osc hands a colour ('r') over as the integer it is packed in: volume 4 (+12 dB)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    hub = ControlHub(CONFIG)
    events: list[tuple[str, dict[str, Any]]] = []
    server = OscControlServer.start(OscConfig(listen=f"127.0.0.1:{port}"), hub,
                                    lambda kind, **f: events.append((kind, f)))
    sent = [
        _datagram("/art2mus/volume", ("r", 0x00FF00FF)),  # refused: a colour
        _datagram("/art2mus/a/intensity", ("m", (0, 0x90, 60, 100))),  # refused: MIDI
        _datagram("/art2mus/volume", ("T", True)),  # refused: not a toggle
        _datagram("/art2mus/next_variation", ("s", "go")),  # refused: a string
        _datagram("/art2mus/brightness", ("f", 0.25), ("r", 0)),  # refused: any argument
        _datagram("/art2mus/b/volume", ("h", 2)),  # taken: int64
        _datagram("/art2mus/a/brightness", ("d", 0.75)),  # taken: float64
        _datagram("/art2mus/a/freeze", ("T", True)),  # taken: a toggle's boolean
        _datagram("/art2mus/b/freeze", ("F", False)),  # taken
        _datagram("/art2mus/a/next_variation", ("T", True)),  # taken: one step
    ]
    _send_and_close(server, port, sent)
    assert hub.current("volume") == 1.0 and hub.current("intensity", "a") == 0.5
    assert hub.current("next_variation") == 0.0 and hub.current("brightness") == 0.5
    assert hub.current("volume", "b") == 2.0 and hub.current("brightness", "a") == 0.75
    assert hub.current("freeze", "a") == 1.0 and hub.current("freeze", "b") == 0.0
    assert hub.current("next_variation", "a") == 1.0
    assert server.refusals.by_reason == {"bad-value": 5}
    first = next(f for kind, f in events if kind == "osc_refused")
    assert first["error"] == "parameter volume: expected OSC type tags in 'fdih', got 'r'"


def test_a_message_shorter_or_longer_than_its_type_tags_say_is_unparseable() -> None:
    # python-osc reads a float cut short as if zero-padded: a 20-byte ",f" muted the room
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    hub = ControlHub(CONFIG)
    changes: list[ParameterChange] = []
    hub.subscribe(changes.append)
    events: list[tuple[str, dict[str, Any]]] = []
    server = OscControlServer.start(OscConfig(listen=f"127.0.0.1:{port}"), hub,
                                    lambda kind, **f: events.append((kind, f)))
    truncated = b"/art2mus/volume\x00,f\x00\x00"  # 20 bytes: no argument bytes
    whole = _datagram("/art2mus/volume", ("f", 2.0))
    sent = [
        truncated,
        truncated + b"?\x80",  # 22 bytes: half a float
        b"#bundle\x00" + b"\x00" * 7 + b"\x01" + len(truncated).to_bytes(4, "big") + truncated,
        _datagram("/art2mus/brightness", ("f", 0.25)) + b"\x00" * 4,  # bytes no tag names
        _datagram("/art2mus/intensity", ("s", "x"))[:-4],  # a string cut short
        whole,  # taken: the same float, whole
    ]
    _send_and_close(server, port, sent)
    assert len(sent[0]) == 20 and len(sent[1]) == 22 and len(whole) == 24
    assert [(c.name, c.room, c.value) for c in changes] == [("volume", "*", 2.0)]
    assert hub.current("brightness") == 0.5
    assert server.refusals.by_reason == {"unparseable": 5}
    first = next(f for kind, f in events if kind == "osc_refused")
    assert first["size"] == 20 and "take 24 bytes with the address, got 20" in first["error"]


def test_a_trigger_that_came_over_osc_is_not_echoed_one_from_elsewhere_is() -> None:
    # Each trigger message is a step: two installations echoing next_variation to each
    # other stepped each other for ever. One from the console still reaches the targets.
    hub = ControlHub(CONFIG)
    echo = OscParameterEcho(OscConfig(send=["127.0.0.1:9"]), hub, null_sink)
    sent: list[tuple[str, float]] = []

    class Client:
        def send_message(self, address: str, value: float) -> None:
            sent.append((address, value))

        def close(self) -> None:
            pass

    for _, client in echo.targets:
        client.close()  # its socket: the fake below takes its place
    echo.targets = [(origin, Client()) for origin, _ in echo.targets]
    try:
        hub.trigger("next_variation", "a", source="osc", origin="udp:10.0.0.7:9000")
        assert sent == []
        hub.trigger("next_variation", "a", source="console")
        hub.set("intensity", 0.3, "*", source="osc", origin="udp:10.0.0.7:9000")
        assert sent == [("/art2mus/a/next_variation", 2.0), ("/art2mus/intensity", 0.3)]
    finally:
        echo.close()


def test_osc_in_takes_messages_only_from_the_senders_allow_names() -> None:
    # OSC has no login: on a LAN visitors share (guest Wi-Fi), anyone could mute a room
    events: list[tuple[str, dict[str, Any]]] = []
    for allow, taken in ((("10.0.0.0/8", "192.168.1.7"), False),
                         (("10.0.0.0/8", "127.0.0.1"), True), ((), True)):
        hub = ControlHub(CONFIG)
        server = OscControlServer.start(OscConfig(listen="127.0.0.1:6196", allow=allow), hub,
                                        lambda kind, **f: events.append((kind, f)))
        try:
            client = SimpleUDPClient("127.0.0.1", server.port)
            client.send_message("/art2mus/volume", 0.0)
            wait_until(lambda server=server: server.received >= 1, 3.0)
            client.close()
        finally:
            server.close()
        assert (hub.current("volume") == 0.0) is taken
        assert server.refusals.by_reason == ({} if taken else {"not-allowed": 1})
    (refused,) = [f for kind, f in events if kind == "osc_refused"]
    assert refused["error"] == "sender 127.0.0.1 is not in control.osc.allow"


def test_an_allow_entry_that_is_no_address_or_network_is_refused_naming_it() -> None:
    assert OscConfig(allow=("10.0.0.7", "192.168.1.0/24", "fd00::/8")).admits("192.168.1.9")
    assert OscConfig(allow=("10.0.0.0/8",)).admits("::ffff:10.1.2.3")  # a dual-stack socket
    assert not OscConfig(allow=("10.0.0.0/8",)).admits("11.0.0.1")
    with pytest.raises(ConfigError, match=re.escape(
            "allow[1]: expected an IP address or network ('10.0.0.7', '192.168.1.0/24'), got "
            "'the-ipad.local'")):
        config_from_dict({"rooms": [{"id": "a"}], "control": {"osc": {
            "listen": "0.0.0.0:9000", "allow": ["10.0.0.7", "the-ipad.local"]}}})


def test_a_scene_is_recalled_over_osc_by_name_or_program() -> None:
    # scenes had no OSC address: a performer without a MIDI controller could not recall one
    config = config_from_dict({"rooms": [{"id": "a"}], "control": {"scenes": [
        {"name": "calm", "program": 0, "params": {"intensity": 0.2}},
        {"name": "storm", "program": 5, "params": {"intensity": 0.9}, "tempo_bpm": 140}]}})
    events: list[tuple[str, dict[str, Any]]] = []
    hub = ControlHub(config, lambda kind, **f: events.append((kind, f)))
    server = OscControlServer(OscConfig(), hub, lambda kind, **f: events.append((kind, f)))
    server.handle("/art2mus/scene", "storm", tags="s", origin="udp:10.0.0.9:9000")
    assert hub.current("intensity") == 0.9 and hub.current("tempo_bpm", "a") == 140.0
    server.handle("/art2mus/scene", 0.0, tags="f")  # a TouchOSC button: its value as a float
    assert hub.current("intensity") == 0.2
    recalled = [f for kind, f in events if kind == "scene_recalled"]
    assert [(f["scene"], f["source"]) for f in recalled] == [("storm", "osc"), ("calm", "osc")]
    for args, tags in ((("rain",), "s"), ((9,), "i"), ((0.5,), "f"), ((), ""),
                       (("calm", 1), "si"), ((True,), "T")):
        server.handle("/art2mus/scene", *args, tags=tags)
    assert server.refusals.by_reason == {"bad-value": 6}
    errors = [f["error"] for kind, f in events if kind == "osc_refused"]
    assert errors[0].startswith("unknown scene 'rain'; control.scenes has ['calm (program 0)'")
    assert len([kind for kind, _ in events if kind == "scene_recalled"]) == 2
