"""The console against idle sockets from several LAN addresses (audit 4): the technician on
loopback, or with the token, still gets in, and uvicorn's per-connection complaints are
counted and summarised, never one journal line each.

A real :class:`~installation.console.app.ConsoleServer` on a free loopback port (the
attacker's addresses are other loopback addresses, 127.0.0.10 and up, as in the
auditor's ``console_slowloris.py``); the request slots' reserve in process, where the
client's address can be a LAN one.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
from idle_sockets import IdleSockets
from polling import wait_until
from test_console_api import TOKEN, Fixture

from installation.console import app as console_app
from installation.console.app import (
    MAX_CONNECTIONS,
    MAX_PER_PEER,
    MAX_WAITING,
    TRUSTED_RESERVE,
    ConsoleServer,
)

ATTACKERS = [f"127.0.0.{10 + k}" for k in range(4)]


def _serve(fx: Fixture) -> ConsoleServer:
    return ConsoleServer.start(fx.config, hub=fx.hub, rows=lambda: fx.rows,
                               log_event=fx.log_event, source_path=fx.path, output_dir=fx.out,
                               frozen_path=fx.frozen)


@pytest.fixture
def held_heads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Idle sockets are held for the whole test unless the limits close them: what gets
    the technician in is the limits, not a timeout that happens to run out."""
    monkeypatch.setattr(console_app, "HEAD_TIMEOUT_S", 120.0)
    yield


@pytest.mark.usefixtures("held_heads")
@pytest.mark.parametrize("token", [False, True], ids=["loopback", "token"])
def test_idle_sockets_from_four_addresses_do_not_lock_the_technician_out(
        tmp_path: object, token: bool) -> None:
    """16 idle sockets from each of 4 addresses, reopened as cut, gave the technician 503
    on every request: uvicorn's limit counted them as 64 connections in use."""
    fx = Fixture(tmp_path, console=f'token = "{TOKEN}"' if token else "",  # type: ignore[arg-type]
                 catalogue=False)
    server = _serve(fx)
    host, port = server.url[len("http://"):].rsplit(":", 1)
    headers = {"authorization": f"Bearer {TOKEN}"} if token else {}
    try:
        with IdleSockets((host, int(port)), ATTACKERS, MAX_PER_PEER,
                         b"GET / HTTP/1.1\r\nHost: x"):
            statuses: Counter[int] = Counter()
            for _ in range(10):  # the technician polls, from 127.0.0.1, while the flood goes on
                answer = httpx.get(server.url + "/api/state", headers=headers, timeout=10.0)
                statuses[answer.status_code] += 1
            book = server.console.limits.book
            held = {source: book.held(source) for source in ATTACKERS}
    finally:
        server.close()
    assert statuses == {200: 10}
    # the flood keeps at most MAX_WAITING of its sockets
    assert sum(held.values()) <= MAX_WAITING, held
    summary = server.console.limits.refusals
    assert summary.by_reason["full"] + summary.by_reason["evicted"] >= 4 * MAX_PER_PEER \
        - MAX_WAITING


def test_uvicorns_refusals_are_counted_and_said_once_not_logged_per_connection(
        tmp_path: object, caplog: pytest.LogCaptureFixture) -> None:
    """Every malformed request wrote "Invalid HTTP request received." to the journal."""
    fx = Fixture(tmp_path, catalogue=False)  # type: ignore[arg-type]
    server = _serve(fx)
    host, port = server.url[len("http://"):].rsplit(":", 1)
    junk = 40
    try:
        with caplog.at_level(logging.WARNING):
            for _ in range(junk):
                with socket.create_connection((host, int(port))) as sock:
                    sock.sendall(b"\x16\x03\x01 this is no HTTP\r\n\r\n")
                    sock.settimeout(10.0)
                    while sock.recv(4096):  # the 400, then the server closes it
                        pass
            refusals = server.console.limits.refusals
            deadline = time.monotonic() + 10.0  # a guard against a hang, not a timing
            while refusals.by_reason["invalid-request"] < junk and time.monotonic() < deadline:
                time.sleep(0.02)
    finally:
        server.close()  # says what was refused since the last summary
    messages = [record.getMessage() for record in caplog.records]
    assert not [m for m in messages if m == "Invalid HTTP request received."]
    assert refusals.by_reason["invalid-request"] == junk
    said = [m for m in messages if m.startswith("console: refused")]
    assert len(said) == 1 and f"invalid-request {junk}" in said[0], said
    first = [fields for kind, fields in fx.events if kind == "console_refused"]
    assert [f["reason"] for f in first] == ["invalid-request"]  # one example, not forty


async def _get(fx: Fixture, client: str, path: str, token: bool) -> int:
    transport = httpx.ASGITransport(app=fx.console.app(), client=(client, 40000))
    headers = {"authorization": f"Bearer {TOKEN}"} if token else {}
    async with httpx.AsyncClient(transport=transport, base_url="http://console.lan") as http:
        return (await http.get(path, headers=headers)).status_code


def test_the_last_request_slots_are_kept_for_loopback_and_the_token(tmp_path: object) -> None:
    """In process: the client's address is a LAN one, which no test socket can have."""
    fx = Fixture(tmp_path, console=f'token = "{TOKEN}"', catalogue=False)  # type: ignore[arg-type]
    limits = fx.console.limits

    def get(client: str, path: str, token: bool) -> int:
        return asyncio.run(_get(fx, client, path, token))

    limits.in_hand = MAX_CONNECTIONS - TRUSTED_RESERVE  # the rest are taken
    assert get("10.0.0.7", "/login", token=False) == 503
    assert get("10.0.0.7", "/api/state", token=True) == 200
    assert get("127.0.0.1", "/login", token=False) == 200
    limits.in_hand = MAX_CONNECTIONS
    assert get("127.0.0.1", "/api/state", token=True) == 503
    assert limits.refusals.by_reason["busy"] == 2
    limits.in_hand = 0
    assert get("10.0.0.7", "/api/state", token=True) == 200
    assert limits.in_hand == 0  # every slot taken is given back


@pytest.mark.usefixtures("held_heads")
def test_a_refused_connection_lingers_unread_instead_of_closing_at_once(
        tmp_path: object) -> None:
    """Closed at once, a refused socket was reopened at once by the flood: the console
    accepted and closed 7,000 a second, two thirds of a core."""
    fx = Fixture(tmp_path, catalogue=False)  # type: ignore[arg-type]
    server = _serve(fx)
    host, port = server.url[len("http://"):].rsplit(":", 1)
    limits = server.console.limits
    per = MAX_WAITING // len(ATTACKERS)
    held: list[socket.socket] = []
    try:
        for source in ATTACKERS:  # every address holds as many: the waiting places are full
            for _ in range(per):
                held.append(socket.create_connection((host, int(port)),
                                                     source_address=(source, 0)))
        wait_until(lambda: limits.book.waiting_count() == MAX_WAITING)
        extra = socket.create_connection((host, int(port)), source_address=(ATTACKERS[0], 0))
        held.append(extra)
        wait_until(lambda: limits.refusals.by_reason["full"] == 1)
        assert limits.lingering == 1  # refused, held unread for REFUSED_LINGER_S
        extra.settimeout(30.0)  # a guard against a hang, not a timing assertion
        assert extra.recv(4096) == b""  # then closed, unanswered
        wait_until(lambda: limits.lingering == 0)
        assert limits.book.waiting_count() == MAX_WAITING  # nobody gave way for it
    finally:
        for sock in held:
            sock.close()
        server.close()
