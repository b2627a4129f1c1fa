"""OSCQuery against slow sockets (audit 4, ``oscq_slow.py``): 16 sockets sending a byte now
and then, reopened as cut, held every request slot and refused every discovery. Now one
address holds at most MAX_PER_PEER of them, a controller's connection takes the place of
one that has sent no request yet, and a head must come within HEAD_TIMEOUT_S.

Real HTTP on loopback; the slow sockets come from the controller's own address (as in
the auditor's script) or from four others. The timeouts are set far out where the
limits are under test, and a fake clock moves them where the timeout is.
"""

from __future__ import annotations

import http.client
import socket
from collections import Counter
from collections.abc import Iterator

import pytest
from idle_sockets import IdleSockets
from polling import wait_until

from ground.events import null_sink
from installation import oscquery
from installation.config import OscConfig, config_from_dict
from installation.control import ControlHub
from installation.oscquery import HEAD_TIMEOUT_S, MAX_CONNECTIONS, MAX_PER_PEER, OscQueryServer

CONFIG = config_from_dict({"installation": {"name": "gallery-east"}, "rooms": [{"id": "a"}]})


def _start(clock: object = None) -> OscQueryServer:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        osc_port = int(probe.getsockname()[1])
    kwargs = {} if clock is None else {"clock": clock}
    return OscQueryServer.start(OscConfig(listen=f"127.0.0.1:{osc_port}"), ControlHub(CONFIG),
                                null_sink, osc_port=osc_port, port=0, advertise=False,
                                **kwargs)  # type: ignore[arg-type]


def _host_info(port: int) -> int | str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/?HOST_INFO")
        return connection.getresponse().status
    except (http.client.HTTPException, OSError) as error:
        return type(error).__name__
    finally:
        connection.close()


@pytest.fixture
def far_timeouts(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Slow sockets are held for the whole test unless the limits close them."""
    monkeypatch.setattr(oscquery, "CLIENT_TIMEOUT_S", 120.0)
    monkeypatch.setattr(oscquery, "HEAD_TIMEOUT_S", 120.0)
    yield


@pytest.mark.usefixtures("far_timeouts")
@pytest.mark.parametrize("sources", [["127.0.0.1"], [f"127.0.0.{10 + k}" for k in range(4)]],
                         ids=["the-controllers-address", "four-other-addresses"])
def test_slow_sockets_do_not_refuse_discovery(sources: list[str]) -> None:
    query = _start()
    server = query._server
    assert server is not None
    try:
        per = MAX_CONNECTIONS // len(sources)
        with IdleSockets(("127.0.0.1", query.port), sources, per, b"G") as slow:
            answers: Counter[int | str] = Counter()
            for _ in range(10):  # the controller asks again and again while they trickle
                slow.trickle()
                answers[_host_info(query.port)] += 1
            held = {source: server.book.held(source) for source in set(sources)}
    finally:
        query.close()
    assert answers == {200: 10}
    assert all(count <= MAX_PER_PEER for count in held.values()), held


def test_a_request_head_must_come_within_the_head_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the whole request had a deadline (CLIENT_TIMEOUT_S), which a trickled head
    could use up, over and over; the head has HEAD_TIMEOUT_S, on a fake clock."""
    monkeypatch.setattr(oscquery, "CLIENT_TIMEOUT_S", 120.0)  # far: the head's is the one

    class Clock:
        now, reads = 0.0, 0

        def __call__(self) -> float:
            self.reads += 1
            return self.now

    clock = Clock()
    query = _start(clock)
    try:
        with socket.create_connection(("127.0.0.1", query.port), timeout=10) as slow:
            slow.sendall(b"GET /?HOST_INFO HTTP/1.1\r\nX-a: ")
            wait_until(lambda: clock.reads >= 2)  # its deadlines are set, its reading began
            clock.now = HEAD_TIMEOUT_S + 0.001  # the head is late, the request is not
            slow.sendall(b"a")
            assert slow.recv(4096) == b""  # closed unanswered at once
        assert _host_info(query.port) == 200
    finally:
        query.close()
