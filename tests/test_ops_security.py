"""CurveZMQ: `art2mus keys` writes the layout; only authorized clients get through."""

from __future__ import annotations

from pathlib import Path

import pytest
import zmq
import zmq.auth
from click.testing import CliRunner

from installation.errors import ConfigError
from installation.ops_cli import keys as keys_command
from installation.protocol import PROTOCOL_VERSION, Control, decode
from installation.security import CurveKeys, is_remote, stop_authenticators
from installation.transport import make_socket, send

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
    from installation.security import create_keys

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
