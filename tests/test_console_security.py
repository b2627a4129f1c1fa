"""The console against a hostile web and a hostile LAN: the defects an audit found, kept fixed.

DNS rebinding through a host name that merely starts like a loopback address,
framing by another site (clickjacking), guesses sent together past the login
throttle, an ``X-Forwarded-For`` naming a fresh address per guess, idle
sockets holding every connection slot, artwork ids holding "/", a "back to
camera" refused once the work left the catalogue, and JSON nested deep enough
to crash the parser. In-process (Starlette's TestClient, httpx's ASGI
transport) where the app alone decides; a real
:class:`~installation.console.app.ConsoleServer` on a free loopback port where
uvicorn's side matters (the client's address, the connections).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from test_console_api import BASE, TOKEN, Fixture

from installation.console import app as console_app
from installation.console.app import MAX_CONNECTIONS, MAX_PER_PEER, ConsoleServer
from installation.console.auth import MAX_FAILURES, SECURITY_HEADERS, host_name, is_loopback_host


def _serve(fx: Fixture) -> ConsoleServer:
    """A real console server over the fixture's config, hub and rows."""
    return ConsoleServer.start(fx.config, hub=fx.hub, rows=lambda: fx.rows,
                               log_event=fx.log_event, source_path=fx.path, output_dir=fx.out,
                               frozen_path=fx.frozen)


@pytest.fixture
def fx(tmp_path: Path) -> Fixture:
    return Fixture(tmp_path)


@pytest.fixture
def guarded(tmp_path: Path) -> Fixture:
    """A console that needs the token."""
    return Fixture(tmp_path, console=f'token = "{TOKEN}"', catalogue=False)


# -- DNS rebinding --------------------------------------------------------------


@pytest.mark.parametrize("host", [
    "127.0.0.1", "127.0.0.1:8080", "127.8.9.10:1", "localhost", "LOCALHOST:80", "localhost.",
    "localhost.:8080", "[::1]", "[::1]:8080", "[0:0:0:0:0:0:0:1]:80", "::1",
    "[::ffff:127.0.0.1]:8080", "127.0.0.1:",
])
def test_a_loopback_console_answers_loopback_hosts(fx: Fixture, host: str) -> None:
    assert fx.client.get("/api/state", headers={"host": host}).status_code == 200


@pytest.mark.parametrize("host", [
    # an attacker's names whose first labels look like loopback: DNS says 127.0.0.1
    "127.evil.example", "127.evil.example:8080", "127.0.0.1.nip.io", "127.0.0.1.attacker.example",
    "[::1].evil.example", "[::1].evil.example:80", "[::1]evil", "[::1", "localhost.evil.example",
    # not loopback, or not host[:port]
    "evil.example", "0.0.0.0", "[::]:80", "10.0.0.1", "[::ffff:10.0.0.1]", "127.0.0.1:80x",
    "127.0.0.1:123456", "127.1", "127.0.0.1.", "[::1%25lo]", "",
])
def test_a_loopback_console_refuses_every_other_host(fx: Fixture, host: str) -> None:
    answer = fx.client.get("/api/config", headers={"host": host})
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"].startswith(f"Host {host!r} refused: this console answers "
                                             "only localhost and loopback addresses")


def test_a_rebinding_page_can_neither_read_nor_set(fx: Fixture) -> None:
    """The attack itself: a page of 127.attacker.example, its name rebound to 127.0.0.1,
    reads the config and sets the volume with Origin equal to Host."""
    host = "127.attacker.example:8080"
    assert fx.client.get("/api/config", headers={"host": host}).status_code == 403
    answer = fx.post("/api/params", {"room": "*", "name": "volume", "value": 0},
                     headers={"host": host, "origin": f"http://{host}"})
    assert answer.status_code == 403 and fx.hub.snapshot() == {}


def test_the_host_rule_parses_ports_and_brackets_strictly() -> None:
    assert host_name("[::1]:8080") == "::1" and host_name("localhost:80") == "localhost"
    assert host_name("[::1].evil.example") is None and host_name("[::1]:x") is None
    assert host_name("::1") == "::1"  # bare IPv6: no DNS name holds a ':'
    assert is_loopback_host("::ffff:127.3.2.1") and not is_loopback_host("::ffff:10.0.0.1")
    assert not is_loopback_host("127.example") and not is_loopback_host("::1%lo")


# -- headers against framing and sniffing ------------------------------------------


def _assert_secured(answer: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert answer.headers.get(name) == value, (answer.request.url, name, answer.headers)
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    assert answer.headers["x-frame-options"] == "DENY"


def test_every_answer_says_it_may_not_be_framed_or_sniffed(fx: Fixture, guarded: Fixture) -> None:
    answers = [
        fx.client.get("/"), fx.client.get("/api/state"), fx.client.get("/static/console.js"),
        fx.client.get("/static/login.css"), fx.client.get("/static/nothing.js"),  # 404 of ours
        fx.client.get("/no/such/route"),  # Starlette's own 404
        fx.post("/api/params", {"room": "room-1", "name": "loudness", "value": 1}),  # 400
        fx.client.get("/api/state", headers={"host": "evil.example"}),  # 403 before any route
        fx.client.post("/api/params", content=b"{}", headers={"content-type": "text/plain"}),
        guarded.client.get("/api/state"),  # 401
        guarded.client.get("/", follow_redirects=False),  # 303 to /login
        guarded.client.get("/login"),
        guarded.client.post("/login", data={"token": "wrong"}),
    ]
    for _ in range(MAX_FAILURES):
        answers.append(guarded.client.get("/api/state", headers={"authorization": "Bearer x"}))
    assert answers[-1].status_code == 429
    assert {a.status_code for a in answers} == {200, 303, 400, 401, 403, 404, 415, 429}
    for answer in answers:
        _assert_secured(answer)
    # the login form keeps its look under the CSP (no inline style): its own file
    assert '<link rel="stylesheet" href="/static/login.css">' in answers[11].text
    assert "<style" not in answers[11].text and "style=" not in answers[11].text


def test_a_real_server_sends_the_headers_too(tmp_path: Path) -> None:
    fx = Fixture(tmp_path, catalogue=False)
    server = _serve(fx)
    try:
        with httpx.Client(base_url=server.url) as client:
            for path in ("/", "/api/state", "/static/console.css", "/api/nothing"):
                _assert_secured(client.get(path))
            with client.stream("GET", "/api/stream") as stream:
                _assert_secured(stream)
    finally:
        server.close()


# -- guessing the token -----------------------------------------------------------


def test_guesses_sent_together_are_compared_at_most_max_failures_times(
        guarded: Fixture) -> None:
    """Forty guesses whose bodies come slowly: each passed the throttle's check while its
    body came, and all were compared with the token. Now the check is made again when
    the body is in, in the same step as the comparison, so only MAX_FAILURES are."""
    wrong = 4 * MAX_FAILURES
    app = guarded.console.app()

    async def race() -> list[int]:
        waiting = 0
        everyone_waits, go = asyncio.Event(), asyncio.Event()

        async def body(token: str) -> AsyncIterator[bytes]:
            nonlocal waiting
            waiting += 1  # the login route has checked the throttle and reads the body
            if waiting == wrong + 1:
                everyone_waits.set()
            await go.wait()
            yield f"token={token}".encode()

        form = {"content-type": "application/x-www-form-urlencoded"}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url=BASE) as client:
            tokens = [f"guess-{k}" for k in range(wrong)] + [TOKEN]  # the right one last
            sent = [asyncio.create_task(client.post("/login", content=body(t), headers=form))
                    for t in tokens]
            await asyncio.wait_for(everyone_waits.wait(), 30.0)  # a guard, not a timing
            go.set()
            return [answer.status_code for answer in await asyncio.gather(*sent)]

    codes = asyncio.run(race())
    assert Counter(codes[:-1]) == {401: MAX_FAILURES, 429: wrong - MAX_FAILURES}
    assert codes[-1] == 429  # the right token, after the window filled: it waits too
    refused = [kind for kind, _ in guarded.events if kind == "console_login_refused"]
    assert len(refused) == MAX_FAILURES


def test_x_forwarded_for_does_not_give_a_guesser_a_fresh_address(tmp_path: Path) -> None:
    """uvicorn believed X-Forwarded-For from loopback: one address per guess, never 429."""
    fx = Fixture(tmp_path, console=f'token = "{TOKEN}"', catalogue=False)
    server = _serve(fx)
    try:
        with httpx.Client(base_url=server.url) as client:
            form = client.post("/login", data={"token": "nope"},
                               headers={"x-forwarded-for": "10.8.0.1"})
            assert form.status_code == 401
            assert [f["client"] for k, f in fx.events if k == "console_login_refused"] == [
                "127.0.0.1"]  # the peer, not the address it claims
            codes = [client.get("/api/state", headers={
                "authorization": "Bearer wrong-guess",
                "x-forwarded-for": f"10.9.0.{k}"}).status_code for k in range(MAX_FAILURES + 2)]
            assert codes == [401] * (MAX_FAILURES - 1) + [429] * 3
            right = client.post("/login", data={"token": TOKEN},
                                headers={"x-forwarded-for": "10.7.0.1"})
            assert right.status_code == 429  # 127.0.0.1 waits, whatever it claims to be
    finally:
        server.close()


# -- connections -------------------------------------------------------------------


@pytest.fixture
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Request timeouts of a second or two: the connections' rule, tested without waiting."""
    monkeypatch.setattr(console_app, "HEAD_TIMEOUT_S", 1.0)
    monkeypatch.setattr(console_app, "REQUEST_TIMEOUT_S", 2.0)
    yield


def _closed_by_server(sock: socket.socket, deadline: float) -> bool:
    """True when the server closes ``sock`` (EOF or reset) before ``deadline`` (monotonic)."""
    sock.settimeout(max(0.01, deadline - time.monotonic()))
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return True


@pytest.mark.usefixtures("short_timeouts")
def test_idle_and_slow_connections_are_closed_and_the_technician_gets_in(
        tmp_path: Path) -> None:
    """Sockets that send nothing, half a request head, or a head and half a body held
    every slot for good: the technician got 503 until they left. (MAX_CONNECTIONS - 1
    of them: the technician's own connection is the last slot.)"""
    fx = Fixture(tmp_path, console=f'token = "{TOKEN}"', catalogue=False)
    server = _serve(fx)
    sockets: list[socket.socket] = []
    try:
        host, port = server.url[len("http://"):].rsplit(":", 1)
        for k in range(MAX_CONNECTIONS - 1):
            sock = socket.create_connection((host, int(port)))
            sockets.append(sock)
            if k % 3 == 1:  # the head never finished
                sock.sendall(b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            elif k % 3 == 2:  # the head, then a body that never finishes
                sock.sendall(b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                             b"application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n"
                             b"token=")
        deadline = time.monotonic() + 20.0  # a guard against a hang, not a timing assertion
        kept = [k for k, sock in enumerate(sockets) if not _closed_by_server(sock, deadline)]
        assert kept == [], f"connections {kept} still open"
        answer = httpx.get(server.url + "/api/state",
                           headers={"authorization": f"Bearer {TOKEN}"}, timeout=10.0)
        assert answer.status_code == 200
        assert not [kind for kind, _ in fx.events if kind == "console_login_refused"]
    finally:
        for sock in sockets:
            sock.close()
        server.close()


def test_one_address_cannot_hold_the_slots_the_technician_needs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An address reopening idle sockets as fast as they were cut kept the console at 503
    for everyone: it may hold MAX_PER_PEER; the rest close as they open, and another
    address (the technician's browser) is served while the flood goes on."""
    monkeypatch.setattr(console_app, "HEAD_TIMEOUT_S", 60.0)  # the flood's are held meanwhile
    fx = Fixture(tmp_path, console=f'token = "{TOKEN}"', catalogue=False)
    server = _serve(fx)
    sockets: list[socket.socket] = []
    try:
        host, port = server.url[len("http://"):].rsplit(":", 1)
        for _ in range(MAX_CONNECTIONS):
            sockets.append(socket.create_connection((host, int(port)),
                                                    source_address=("127.0.0.2", 0)))
        deadline = time.monotonic() + 2.0  # a guard against a hang, not a timing assertion
        closed = [sock for sock in sockets if _closed_by_server(sock, deadline)]
        assert len(closed) == MAX_CONNECTIONS - MAX_PER_PEER
        answer = httpx.get(server.url + "/api/state",
                           headers={"authorization": f"Bearer {TOKEN}"}, timeout=10.0)
        assert answer.status_code == 200  # from 127.0.0.1, with the flood's still open
    finally:
        for sock in sockets:
            sock.close()
        server.close()


@pytest.mark.usefixtures("short_timeouts")
def test_a_whole_request_is_never_cut_however_long_its_answer(tmp_path: Path) -> None:
    """The timeouts are for requests that do not arrive: an event stream outlives them,
    and a kept-alive connection's next request has its own time."""
    fx = Fixture(tmp_path, catalogue=False)
    server = _serve(fx)
    try:
        with httpx.Client(base_url=server.url, timeout=30.0) as client:
            states = 0
            with client.stream("GET", "/api/stream") as stream:
                for line in stream.iter_lines():  # a state each TICK_S: 2.5 s in all
                    states += line == "event: state"
                    if states == 6:
                        break
            assert states == 6
            assert client.get("/api/state").status_code == 200  # the same pool, reused
    finally:
        server.close()


# -- the catalogue's ids -------------------------------------------------------------


def test_an_artwork_id_with_a_slash_has_its_thumbnail_and_preview(fx: Fixture) -> None:
    """Accession numbers such as "1988/12": the routes matched the decoded path, where the
    id's %2F is a "/" again, and answered 404 for its thumbnail and preview."""
    folder = Path(str(fx.config.rooms[0].capture.recognition.catalogue))
    toml = folder / "catalogue.toml"
    toml.write_text(toml.read_text(encoding="utf-8") + '\n[[artwork]]\nfile = "harbour.png"\n'
                    'id = "1988/12"\ntitle = "Harbour"\n', encoding="utf-8")
    works = {w["id"]: w for w in fx.client.get("/api/catalogue?room=room-1").json()["works"]}
    assert works["1988/12"]["thumb"] == "/api/catalogue/room-1/1988%2F12/thumb.jpg"
    for url in (works["1988/12"]["thumb"], "/api/catalogue/room-1/1988/12/thumb.jpg"):
        thumb = fx.client.get(url)
        assert thumb.status_code == 200, (url, thumb.text)
        assert thumb.headers["content-type"] == "image/jpeg"

    url = "/api/catalogue/room-1/1988%2F12/preview"
    missing = fx.client.get(url + ".wav")
    assert missing.status_code == 404
    assert missing.json()["error"] == "no preview of '1988/12' in room room-1 yet (missing)"
    # rendered before (the cache): served without starting a render here
    cached = fx.console.shelves.preview_path("room-1", "1988/12")
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(b"RIFF\x24\x00\x00\x00WAVE-the-preview")
    assert fx.post(url, {}).json() == {"state": "ready", "url": url + ".wav", "error": None}
    wav = fx.client.get(url + ".wav")
    assert wav.status_code == 200 and wav.content == cached.read_bytes()
    # the id is what lies between the room and the last segment, looked up before use
    assert fx.client.get("/api/catalogue/room-1/1988%2F12%2F..%2F..%2Fx/thumb.jpg")\
        .status_code == 404


# -- back to the camera --------------------------------------------------------------


def test_back_to_the_camera_is_sent_whatever_work_is_shown(fx: Fixture) -> None:
    """A work renamed in the catalogue while it was shown: the stop was refused (404), and
    the room stayed on the work up to 24 h."""
    fx.hub.pending()
    for room, body in (("room-1", {"artwork_id": "left-the-catalogue", "seconds": 0}),
                       ("room-1", {"seconds": 0}),
                       ("room-2", {"artwork_id": "SF-1", "seconds": 0})):  # no catalogue there
        answer = fx.post(f"/api/rooms/{room}/play", body)
        assert answer.status_code == 200, (room, body, answer.text)
        assert answer.json() == {"room": room, "artwork_id": body.get("artwork_id", ""),
                                 "until": None}
        (message,) = fx.hub.pending()
        assert (message.target, message.room, message.params) == (
            "capture", room, {"show_artwork": body.get("artwork_id", ""), "show_for_s": 0.0})
    # showing a work still needs one of the catalogue, named
    answer = fx.post("/api/rooms/room-1/play", {"seconds": 60})
    assert answer.status_code == 400 and answer.json()["error"].startswith("artwork_id: ")
    assert fx.post("/api/rooms/room-1/play", {"artwork_id": "left-the-catalogue"})\
        .status_code == 404
    assert fx.hub.pending() == []


# -- malformed JSON ------------------------------------------------------------------


def test_json_nested_too_deep_is_a_400_on_every_route(fx: Fixture, guarded: Fixture) -> None:
    deep = b"[" * 50_000 + b"]" * 50_000  # within max_body_bytes
    assert len(deep) < fx.config.console.max_body_bytes
    json_type = {"content-type": "application/json"}
    for path in ("/api/params", "/api/trigger", "/api/mute", "/api/config/check",
                 "/api/config/apply", "/api/config/rollback", "/api/rooms/room-1/play"):
        answer = fx.client.post(path, content=deep, headers=json_type)
        assert answer.status_code == 400, (path, answer.text)
        assert answer.json() == {"error": "body: expected JSON, got arrays or objects nested "
                                          "too deep to read"}
    login = guarded.client.post("/login", content=b'{"token": ' + deep + b"}",
                                headers=json_type)
    assert login.status_code == 400, login.text
    assert login.json()["error"].startswith("body: expected JSON, got arrays or objects")
    for body, error in ((b"[1,", "body: expected JSON, got Expecting value"),
                        (b"[1]", "body: expected a JSON object, got list")):
        answer = guarded.client.post("/login", content=body, headers=json_type)
        assert answer.status_code == 400 and answer.json()["error"].startswith(error)
    assert not [k for k, _ in guarded.events if k == "console_login_refused"]  # no guesses
    right = guarded.client.post("/login", content=json.dumps({"token": TOKEN}),
                                headers=json_type, follow_redirects=False)
    assert right.status_code == 303
