"""Serve's HTTP port behind a token (``engine.ray.token_file``), without a Ray cluster.

The config requires the token beyond loopback; a replica (:meth:`ReplicaCore.admit`, the
deployment's HTTP entry point) answers 401 to a request without it before it reads the
body; the engine front sends it with every request and probe, and a front whose token
is refused falls back to local generation and says the token was refused. A small
stdlib HTTP server runs the replica's real entry point, as Serve's proxy would call it.
"""

from __future__ import annotations

import asyncio
import hmac
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from click.testing import CliRunner
from polling import wait_until
from pydantic import ValidationError

from engine import ray_serve
from engine.config import MIN_TOKEN_CHARS, EngineConfig, RayConfig
from engine.generators import RoomControls
from engine.generators.sine import SineGenerator
from engine.ray_serve import (
    DEGRADED,
    HEALTHY,
    TOKEN_REFUSED,
    ChunkRequest,
    HttpAnswer,
    RayGenerator,
    ReplicaCore,
)
from ground.errors import ConfigError
from ground.protocol import ArtworkView

RATE = 16000
FRAMES = 1600
TOKEN = "ray-token-0123456789abcdef"
OTHER = "another-token-0123456789"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _view(room: str) -> ArtworkView:
    return ArtworkView.of_artwork(room, 0, 0.0, "a", 1.0, "descriptor", None,
                                  {"brightness": 0.5})


def _body(room: str = "r") -> bytes:
    return msgspec.msgpack.encode(ChunkRequest(
        room=room, stream="s", previous=None, seed=1, start_sample=0, position=0,
        frames=FRAMES, view=_view(room), controls=RoomControls(), due=1e9))


def _token_file(tmp_path: Path, token: str, name: str = "ray.token") -> Path:
    path = tmp_path / name
    path.write_text(f"\n{token}\n", encoding="utf-8")  # the first non-empty line counts
    return path


# -- the config ----------------------------------------------------------------------


def test_serves_port_beyond_loopback_needs_a_token(tmp_path: Path) -> None:
    from installation.config import MIN_TOKEN_CHARS as CONSOLE_MIN
    from installation.config import config_from_dict

    assert MIN_TOKEN_CHARS == CONSOLE_MIN  # the console's rule, kept on the engine's floor
    for host in ("10.0.0.5", "0.0.0.0", "gpu-box.lan", "::"):
        for backend in ("ray", "local"):  # `art2mus serve` opens it whatever the backend
            raw = {"rooms": [{"id": "r"}],
                   "engine": {"backend": backend, "ray": {"http_host": host}}}
            with pytest.raises(ConfigError, match=r"engine\.ray\.http_host: .* is reachable "
                                                  r"beyond this machine; "
                                                  r"engine\.ray\.token_file .*required"):
                config_from_dict(raw)
    for host in ("127.0.0.1", "127.8.0.1", "localhost", "::1", "[::1]"):
        config_from_dict({"rooms": [{"id": "r"}], "engine": {"ray": {"http_host": host}}})
    keys = _token_file(tmp_path, TOKEN)
    config = config_from_dict({"rooms": [{"id": "r"}], "engine": {
        "backend": "ray", "ray": {"http_host": "10.0.0.5", "token_file": str(keys)}}})
    assert config.engine.ray.read_token() == TOKEN
    keys.write_bytes(b"\xef\xbb\xbf" + f"{TOKEN}\r\n".encode())  # saved by Notepad
    assert config.engine.ray.read_token() == TOKEN
    inline = config_from_dict({"rooms": [{"id": "r"}], "engine": {
        "ray": {"http_host": "10.0.0.5", "token": TOKEN}}})
    assert inline.engine.ray.read_token() == TOKEN


def test_a_bad_token_or_token_file_is_refused_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"engine\.ray\.token: expected a token of at "
                                              r"least 16 characters, got 5"):
        RayConfig(token="short")
    with pytest.raises(ValidationError, match=r"engine\.ray\.token, engine\.ray\.token_file: "
                                              r"expected one of them, got both"):
        RayConfig(token=TOKEN, token_file="ray.token")
    spaced = "a token with spaces in it"
    with pytest.raises(ValidationError, match=r"engine\.ray\.token: expected a token of "
                                              r"printable ASCII") as info:
        RayConfig(token=spaced)
    assert "printable ASCII" in str(info.value)
    missing = RayConfig(token_file=str(tmp_path / "nowhere.token"))
    with pytest.raises(ConfigError, match=r"engine\.ray\.token_file: cannot read .*nowhere"):
        missing.read_token()
    short = RayConfig(token_file=str(_token_file(tmp_path, "short")))
    with pytest.raises(ConfigError, match=r"engine\.ray\.token_file: expected a token of at "
                                          r"least 16 characters on the first non-empty line"):
        short.read_token()
    assert RayConfig().read_token() == ""  # none: unchanged, open on loopback


def test_art2mus_serve_stops_on_an_unreadable_token_file_before_ray_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from installation.cli import cli

    started: list[str] = []
    monkeypatch.setattr(ray_serve, "deploy", lambda *a, **k: started.append("deploy"))
    monkeypatch.setattr(ray_serve, "shutdown", lambda: started.append("shutdown"))
    config = tmp_path / "site.toml"
    config.write_text('[engine.ray]\nhttp_host = "10.0.0.5"\n'
                      f'token_file = "{tmp_path / "gone.token"}"\n\n[[rooms]]\nid = "r"\n',
                      encoding="utf-8")
    result = CliRunner().invoke(cli, ["serve", "--config", str(config)])
    assert result.exit_code != 0
    assert "engine.ray.token_file: cannot read" in result.output
    assert started == []


# -- the replica ---------------------------------------------------------------------


def _admit(core: ReplicaCore, method: str, authorization: str | None,
           body: bytes = b"", read: list[int] | None = None) -> ChunkRequest | HttpAnswer:
    async def chunks() -> AsyncIterator[bytes]:
        if read is not None:
            read.append(len(body))
        yield body

    return asyncio.run(core.admit(method, authorization, str(len(body)), chunks()))


def test_a_replica_refuses_a_missing_or_wrong_token_401_before_reading_the_body(
        monkeypatch: pytest.MonkeyPatch) -> None:
    core = ReplicaCore(SineGenerator(sample_rate=RATE, channels=1), token=TOKEN)

    def no_decoding(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the body was decoded")

    monkeypatch.setattr(ray_serve, "decode_request", no_decoding)
    compared: list[bytes] = []
    compare = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append(a)
        return compare(a, b)

    monkeypatch.setattr(ray_serve.hmac, "compare_digest", spy)
    read: list[int] = []
    wrong = [None, "", "Bearer", f"Bearer {OTHER}", f"Bearer {TOKEN}x", f"Basic {TOKEN}",
             TOKEN, f"Bearer {TOKEN[:-1]}"]
    for authorization in wrong:
        answer = _admit(core, "POST", authorization, _body(), read)
        assert isinstance(answer, HttpAnswer) and answer.status == 401, authorization
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert b"engine.ray.token_file" in answer.body and TOKEN.encode() not in answer.body
    assert read == []  # not a byte of any body read
    assert compared  # the token was compared in constant time
    # the probe's GET too: a replica's figures are no one else's business
    probe = _admit(core, "GET", f"Bearer {OTHER}")
    assert isinstance(probe, HttpAnswer) and probe.status == 401
    assert core.unauthorized == core.refused == len(wrong) + 1
    assert core.served == 0 and core.info()["unauthorized"] == len(wrong) + 1


def test_a_replica_admits_the_right_token_and_serves_the_request() -> None:
    core = ReplicaCore(SineGenerator(sample_rate=RATE, channels=1), token=TOKEN)
    loose = _admit(core, "POST", f"bearer  {TOKEN} ", _body())  # the scheme in any case
    assert isinstance(loose, ChunkRequest)
    request = _admit(core, "POST", f"Bearer {TOKEN}", _body())
    assert isinstance(request, ChunkRequest) and request.frames == FRAMES
    [reply] = core.serve([(request, time.time())])
    assert not isinstance(reply, Exception) and reply.generated(FRAMES).audio.shape == (FRAMES, 1)
    probe = _admit(core, "GET", f"Bearer {TOKEN}")
    assert isinstance(probe, HttpAnswer) and probe.status == 200
    assert msgspec.json.decode(probe.body)["served"] == 1
    assert core.refused == core.unauthorized == 0
    # a body the token lets through is still checked: refused 400, naming the field
    bad = _admit(core, "POST", f"Bearer {TOKEN}", b"\x93not a request")
    assert isinstance(bad, HttpAnswer) and bad.status == 400 and b"malformed" in bad.body
    assert core.refused == 1 and core.unauthorized == 0


def test_a_replica_without_a_token_admits_requests_as_before() -> None:
    core = ReplicaCore(SineGenerator(sample_rate=RATE, channels=1))
    assert isinstance(_admit(core, "POST", None, _body()), ChunkRequest)
    assert isinstance(_admit(core, "POST", f"Bearer {OTHER}", _body()), ChunkRequest)
    probe = _admit(core, "GET", None)
    assert isinstance(probe, HttpAnswer) and probe.status == 200
    assert core.refused == 0


# -- the front -----------------------------------------------------------------------


class Replica:
    """A replica on a stdlib HTTP server, answering through :meth:`ReplicaCore.admit` as the
    deployment does; it keeps the ``Authorization`` of every request it got."""

    def __init__(self, port: int, token: str) -> None:
        self.core = ReplicaCore(SineGenerator(sample_rate=RATE, channels=1), token=token)
        self.authorizations: list[tuple[str, str | None]] = []
        replica = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                authorization = self.headers.get("Authorization")
                replica.authorizations.append((self.command, authorization))
                length = self.headers.get("Content-Length")

                async def body() -> AsyncIterator[bytes]:
                    yield self.rfile.read(int(length or 0))

                admitted = asyncio.run(replica.core.admit(self.command, authorization, length,
                                                          body()))
                if isinstance(admitted, HttpAnswer):
                    if admitted.status == 401:  # its body unread: this connection is done
                        self.close_connection = True
                    self._answer(admitted.status, admitted.body)
                    return
                [reply] = replica.core.serve([(admitted, time.time())])
                assert not isinstance(reply, Exception)
                self._answer(200, msgspec.msgpack.encode(reply))

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                if self.close_connection:
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _handle  # noqa: N815 - http.server's names

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def port() -> int:
    return _free_port()


@pytest.fixture
def replica(port: int) -> Iterator[Replica]:
    server = Replica(port, TOKEN)
    yield server
    server.stop()


def _front(port: int, token_file: Path | None,
           events: list[tuple[str, dict[str, Any]]] | None = None) -> RayGenerator:
    config = EngineConfig(generator="sine", sample_rate=RATE, channels=1, backend="ray",
                          ray=RayConfig(http_port=port, probe_every_s=0.05,
                                        request_timeout_s=5.0, deadline_slack_s=0.0,
                                        token_file=str(token_file or "")))
    sink = (lambda kind, **fields: events.append((kind, fields))) if events is not None else (
        lambda kind, **fields: None)
    return RayGenerator(config, sink, lambda room: None,
                        fallback=SineGenerator(sample_rate=RATE, channels=1))


def _play(front: RayGenerator, room: str, chunks: int) -> np.ndarray:
    condition = front.prepare(_view(room))
    state = front.start(condition, 0, 0, None)
    parts = []
    for _ in range(chunks):
        [(generated, state)] = front.generate_batch([(state, condition, FRAMES)])
        parts.append(generated.audio)
    return np.concatenate(parts)


def _direct(chunks: int) -> np.ndarray:
    generator = SineGenerator(sample_rate=RATE, channels=1)
    condition = generator.prepare(_view("room-0"))
    state = generator.start(condition, 0, 0, None)
    parts = []
    for _ in range(chunks):
        generated, state = generator.generate(state, condition, FRAMES)
        parts.append(generated.audio)
    return np.concatenate(parts)


def test_the_front_sends_the_token_with_every_request_and_probe(
        replica: Replica, port: int, tmp_path: Path) -> None:
    front = _front(port, _token_file(tmp_path, TOKEN))
    try:
        audio = _play(front, "room-0", chunks=3)
        assert front.probe()
    finally:
        front.close()
    assert front.state == HEALTHY and front.local_chunks == 0
    assert replica.core.served == 3 and replica.core.unauthorized == 0
    assert replica.authorizations == [("POST", f"Bearer {TOKEN}")] * 3 + [
        ("GET", f"Bearer {TOKEN}")]
    np.testing.assert_allclose(audio, _direct(3), atol=1e-6)
    assert TOKEN not in repr(front.backend_status())


def test_a_front_without_a_token_sends_none(port: int) -> None:
    server = Replica(port, "")
    front = _front(port, None)
    try:
        _play(front, "room-0", chunks=1)
        assert front.probe()
    finally:
        front.close()
        server.stop()
    assert server.authorizations == [("POST", None), ("GET", None)]


def test_a_front_whose_token_is_refused_plays_here_and_says_the_token_is_wrong(
        replica: Replica, port: int, tmp_path: Path) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    front = _front(port, _token_file(tmp_path, OTHER), events)
    try:
        audio = _play(front, "room-0", chunks=2)
        # made here, as for an unreachable Ray, and not sent again (it would be refused)
        np.testing.assert_allclose(audio, _direct(2), atol=1e-6)
        assert front.local_chunks == 2 and front.retries == 0
        assert front.failures == {"unauthorized": 1}
        assert front.state == TOKEN_REFUSED != DEGRADED
        assert front.state.startswith("degraded") and "token" in front.state
        assert "engine.ray.token_file" in front.state
        assert front.backend_status()["state"] == TOKEN_REFUSED
        [(kind, fields)] = events
        assert kind == "backend_degraded" and fields["state"] == TOKEN_REFUSED
        assert fields["fallback"] == "procedural"
        assert "HTTP 401" in fields["reason"] and "engine.ray.token_file" in fields["reason"]
        assert OTHER not in repr(events) and TOKEN not in repr(events)
        assert replica.core.unauthorized >= 1 and replica.core.served == 0
        # art2mus serve restarted with the front's token: the probe finds it, rooms go back
        replica.stop()
        restarted = Replica(port, OTHER)
        try:
            assert front._restored.wait(timeout=30.0)
            _play(front, "room-1", chunks=1)
            assert front.state == HEALTHY and restarted.core.served == 1
        finally:
            restarted.stop()
        # (while it restarted, a probe may have found no one: "ray unreachable" meanwhile)
        kinds = [kind for kind, _ in events]
        assert kinds[-1] == "backend_restored" and set(kinds[:-1]) == {"backend_degraded"}
    finally:
        front.close()


def test_a_probe_that_finds_ray_back_with_another_token_says_so(port: int,
                                                                tmp_path: Path) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    front = _front(port, _token_file(tmp_path, OTHER), events)
    try:
        _play(front, "room-0", chunks=1)  # nobody listens on the port
        assert front.state == DEGRADED
        server = Replica(port, TOKEN)
        try:
            wait_until(lambda: front.state == TOKEN_REFUSED, timeout_s=30.0)
            assert [fields["state"] for _, fields in events] == [DEGRADED, TOKEN_REFUSED]
            assert not front._restored.is_set()
        finally:
            server.stop()
    finally:
        front.close()
