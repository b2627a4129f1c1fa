"""CurveZMQ: `art2mus keys` writes the layout; only authorized clients get through."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import zmq
import zmq.auth
from click.testing import CliRunner

from ground.errors import ConfigError
from ground.protocol import PROTOCOL_VERSION, Control, decode
from ground.security import CurveKeys, curve_keys, is_remote, stop_authenticators
from ground.transport import make_socket, send
from installation.config import InstallationConfig, config_from_dict
from installation.ops_cli import keys as keys_command

PORT = 5971


def test_keys_writes_server_client_and_authorized_keys(tmp_path: Path) -> None:
    result = CliRunner().invoke(keys_command, [str(tmp_path / "k"), "--client", "room-1",
                                               "--client", "room-2"])
    assert result.exit_code == 0, result.output
    names = sorted(p.relative_to(tmp_path / "k").as_posix()
                   for p in (tmp_path / "k").rglob("*") if p.is_file())
    assert names == ["authorized/room-1.key", "authorized/room-2.key", "room-1.key",
                     "room-1.key_secret", "room-2.key", "room-2.key_secret", "server.key",
                     "server.key_secret"]
    assert "curve = true" in result.output


def test_only_links_off_the_machine_are_secured_by_default() -> None:
    assert is_remote("tcp://10.0.0.5:5701") and is_remote("tcp://*:5701")
    assert not is_remote("tcp://127.0.0.1:5701") and not is_remote("ipc:///tmp/x")
    keys = CurveKeys(Path("k"))
    assert not keys.applies_to("tcp://127.0.0.1:1") and keys.applies_to("tcp://10.1.1.1:1")
    assert CurveKeys(Path("k"), include_loopback=True).applies_to("tcp://127.0.0.1:1")


def _received(socket: zmq.Socket, timeout_ms: int) -> list[object]:
    messages = []
    while socket.poll(timeout_ms):
        messages.append(decode(socket.recv_multipart()))
        timeout_ms = 100
    return messages


def test_an_unauthenticated_client_is_refused_and_an_authenticated_one_works(
    tmp_path: Path,
) -> None:
    from ground.security import create_keys

    create_keys(tmp_path / "keys")
    strangers = tmp_path / "strangers"
    strangers.mkdir()
    zmq.auth.create_certificates(str(strangers), "client")  # a valid pair nobody authorized
    keys = CurveKeys(tmp_path / "keys", include_loopback=True)
    endpoint = f"tcp://127.0.0.1:{PORT}"
    context = zmq.Context()
    try:
        server = make_socket(context, zmq.PULL, endpoint, bind=True, curve=keys)
        message = Control(v=PROTOCOL_VERSION, room="*", target="*", command="ping")
        plain = make_socket(context, zmq.PUSH, endpoint, bind=False)
        # the stranger knows the server's public key; only its own key is not authorized
        stranger = context.socket(zmq.PUSH)
        public, secret = zmq.auth.load_certificate(str(strangers / "client.key_secret"))
        stranger.curve_publickey, stranger.curve_secretkey = public, secret
        stranger.curve_serverkey = zmq.auth.load_certificate(
            str(tmp_path / "keys" / "server.key"))[0]
        stranger.connect(endpoint)
        for socket in (plain, stranger):
            for _ in range(3):
                send(socket, message)
        assert _received(server, 1000) == []
        friend = make_socket(context, zmq.PUSH, endpoint, bind=False, curve=keys)
        send(friend, message)
        assert _received(server, 3000) == [message]
        for socket in (server, plain, stranger, friend):
            socket.close(linger=0)
    finally:
        stop_authenticators()
        context.term()


def test_missing_keys_are_a_config_error_naming_the_file(tmp_path: Path) -> None:
    context = zmq.Context()
    try:
        with pytest.raises(ConfigError, match=r"expected .*client.key_secret .*art2mus keys"):
            make_socket(context, zmq.PUSH, "tcp://10.9.9.9:5999", bind=False,
                        curve=CurveKeys(tmp_path / "none"))
    finally:
        context.term()


README_PORT = 6420  # 6420-6421


def _config_for(keys_dir: Path, **security: Any) -> InstallationConfig:
    return config_from_dict({
        "network": {"views": f"tcp://127.0.0.1:{README_PORT}",
                    "chunks": f"tcp://127.0.0.1:{README_PORT + 1}"},
        "security": {"curve": True, "keys_dir": str(keys_dir), "include_loopback": True,
                     **security},
        "rooms": [{"id": "room-1"}],
    })


def test_the_readme_keys_commands_work_end_to_end(tmp_path: Path) -> None:
    # `art2mus keys DIR --client room-1`; the room machine gets server.key and its own pair
    result = CliRunner().invoke(keys_command, [str(tmp_path / "keys"), "--client", "room-1"])
    assert result.exit_code == 0, result.output
    assert 'client_key = "room-1"' in result.output
    room_keys = tmp_path / "room-machine"
    room_keys.mkdir()
    for name in ("server.key", "room-1.key", "room-1.key_secret"):
        shutil.copy(tmp_path / "keys" / name, room_keys / name)
    engine = curve_keys(_config_for(tmp_path / "keys").security)
    room = curve_keys(_config_for(room_keys, client_key="room-1").security)
    assert engine is not None and room is not None
    context = zmq.Context()
    try:
        # views: the room's PUSH-like link, forced through Curve on loopback
        server = make_socket(context, zmq.PULL, f"tcp://127.0.0.1:{README_PORT}", bind=True,
                             curve=engine)
        client = make_socket(context, zmq.PUSH, f"tcp://127.0.0.1:{README_PORT}", bind=False,
                             curve=room)
        message = Control(v=PROTOCOL_VERSION, room="room-1", target="*", command="ping")
        send(client, message)
        assert _received(server, 5000) == [message]
        # chunks: the engine's XPUB under the publishers' size limit still takes the Curve
        # handshake and the room's subscription, and the room hears what it publishes
        chunks = make_socket(context, zmq.XPUB, f"tcp://127.0.0.1:{README_PORT + 1}",
                             bind=True, curve=engine)
        listener = make_socket(context, zmq.SUB, f"tcp://127.0.0.1:{README_PORT + 1}",
                               bind=False, subscribe=["room-1"], curve=room)
        assert chunks.poll(5000) and chunks.recv() == b"\x01room-1"
        send(chunks, message)
        assert _received(listener, 5000) == [message]
        for socket in (server, client, chunks, listener):
            socket.close(linger=0)
    finally:
        stop_authenticators()
        context.term()


def test_a_room_machine_without_its_client_key_is_told_which_pairs_there_are(
    tmp_path: Path,
) -> None:
    from ground.security import create_keys

    create_keys(tmp_path / "keys", ("room-1", "room-2"))
    keys = curve_keys(_config_for(tmp_path / "keys").security)  # client_key left at "client"
    context = zmq.Context()
    try:
        with pytest.raises(ConfigError, match=r"security.client_key: expected .*client.key_secret"
                                              r".* pairs there are room-1, room-2"):
            make_socket(context, zmq.PUSH, f"tcp://127.0.0.1:{README_PORT}", bind=False,
                        curve=keys)
    finally:
        context.term()


def test_adding_a_room_later_keeps_the_server_key(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(keys_command, [str(tmp_path), "--client", "room-1"]).exit_code == 0
    server_secret = (tmp_path / "server.key_secret").read_bytes()
    result = runner.invoke(keys_command, [str(tmp_path), "--client", "room-2"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "server.key_secret").read_bytes() == server_secret
    assert sorted(p.name for p in (tmp_path / "authorized").iterdir()) == [
        "room-1.key", "room-2.key"]
    assert "wrote" in result.output and "server.key_secret" not in result.output.split(
        "engine machine")[0]
    from installation.cli import cli

    bad = runner.invoke(cli, ["keys", str(tmp_path), "--client", "../evil"])
    assert bad.exit_code == 3 and "Error: --client: expected a name" in bad.output
