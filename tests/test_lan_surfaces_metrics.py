"""The metrics endpoint against idle connections (audit 4, ``repro_supervisor_emfile.sh``):
prometheus_client's ``start_http_server`` gave each connection a thread and held it
for as long as it stayed open, 955 threads and 1009 descriptors in 51 s, until the
supervisor could not restart a role. Now one thread serves every connection, at most
ENDPOINT_MAX_CONNECTIONS at once and ENDPOINT_MAX_PER_PEER from one address, the
rest closed at once and counted; a head must come within ENDPOINT_HEAD_TIMEOUT_S.

Also :class:`~ground.metrics.ConnectionBook`, which decides who gives way (the console
and OSCQuery use it too), on its own.
"""

from __future__ import annotations

import select
import socket
import threading
import urllib.request

from polling import wait_until
from prometheus_client.parser import text_string_to_metric_families

from ground.metrics import (
    ENDPOINT_HEAD_TIMEOUT_S,
    ENDPOINT_MAX_CONNECTIONS,
    ENDPOINT_MAX_PER_PEER,
    ConnectionBook,
    Metrics,
    MetricsEndpoint,
)


def _ended(sock: socket.socket) -> bool:
    """Whether the server has closed ``sock`` by now (its end is waiting to be read)."""
    if not select.select([sock], [], [], 0)[0]:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except ConnectionResetError:
        return True


def _refused(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    return {sample.labels["reason"]: sample.value
            for family in text_string_to_metric_families(text.decode())
            for sample in family.samples
            if sample.name == "art2mus_metrics_connections_refused_total"}


def test_idle_connections_cost_no_thread_and_are_closed_past_the_limit(
        metrics: Metrics) -> None:
    threads = threading.active_count()
    held: list[socket.socket] = []
    try:
        for k in range(200):  # from 20 addresses, a request head begun and never finished
            sock = socket.create_connection(("127.0.0.1", metrics.port),
                                            source_address=(f"127.0.0.{10 + k % 20}", 0))
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            held.append(sock)
        wait_until(lambda: sum(map(_ended, held)) >= 200 - ENDPOINT_MAX_CONNECTIONS)
        assert threading.active_count() <= threads  # none per connection
        open_now = [sock for sock in held if not _ended(sock)]
        assert len(open_now) <= ENDPOINT_MAX_CONNECTIONS
        refused = _refused(metrics.port)  # a scraper from another address is answered
    finally:
        for sock in held:
            sock.close()
    assert sum(refused.values()) >= 200 - ENDPOINT_MAX_CONNECTIONS


def test_one_address_holds_at_most_its_share(metrics: Metrics) -> None:
    held = [socket.create_connection(("127.0.0.1", metrics.port),
                                     source_address=("127.0.0.9", 0)) for _ in range(40)]
    try:
        wait_until(lambda: sum(map(_ended, held)) >= 40 - ENDPOINT_MAX_PER_PEER)
        assert not any(map(_ended, held[-ENDPOINT_MAX_PER_PEER:]))  # the oldest gave way
        assert _refused(metrics.port)["evicted"] >= 40 - ENDPOINT_MAX_PER_PEER
    finally:
        for sock in held:
            sock.close()


def test_a_connection_sending_no_head_in_time_is_closed() -> None:
    class Clock:
        now = 0.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    reasons: list[str] = []
    endpoint = MetricsEndpoint(lambda environ, start: [], "127.0.0.1", 0,
                               on_refused=reasons.append, clock=clock)
    try:
        with socket.create_connection(("127.0.0.1", endpoint.port), timeout=10) as slow:
            slow.sendall(b"GET /metrics HTTP/1.1\r\n")
            wait_until(lambda: endpoint.book.held() == 1)
            clock.now = ENDPOINT_HEAD_TIMEOUT_S + 0.001
            assert slow.recv(4096) == b""  # closed unanswered
        assert reasons == ["timeout"]
    finally:
        endpoint.close()


def test_a_scrape_reads_the_registry_with_gzip_and_openmetrics(metrics: Metrics) -> None:
    metrics.set_underflows("hall", 2)
    request = urllib.request.Request(
        f"http://127.0.0.1:{metrics.port}/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("application/openmetrics-text")
        assert b'art2mus_underflows_total{room="hall"} 2.0' in answer.read()
    with socket.create_connection(("127.0.0.1", metrics.port), timeout=10) as raw:
        raw.sendall(b"POST /metrics HTTP/1.1\r\n\r\n")
        assert raw.recv(4096).startswith(b"HTTP/1.1 405 ")


# -- the book -----------------------------------------------------------------------


class Closed(list[str]):
    """The connections a book closed, by name."""

    def closer(self, name: str) -> object:
        return lambda: self.append(name)


def test_the_book_makes_the_address_holding_most_idle_ones_give_way() -> None:
    closed, reasons = Closed(), list[str]()
    book = ConnectionBook(max_per_peer=3, max_waiting=4, on_refused=reasons.append)

    def admit(name: str) -> bool:
        return book.admit(name, name[0].upper(), closed.closer(name))  # type: ignore[arg-type]

    assert all(map(admit, ["a1", "a2", "a3", "b1"]))  # four waiting: full
    assert admit("c1") and closed == ["a1"]  # A held the most: its oldest gave way
    assert admit("b2") and closed == ["a1", "a2"]  # A still held more than B
    assert not admit("b3")  # B holds as many as anyone: the new one is refused
    assert reasons == ["evicted", "evicted", "full"]
    book.started("b1")  # its request is in: never given way, and not waiting
    assert admit("b3") and closed == ["a1", "a2"]
    assert admit("b4") and closed == ["a1", "a2", "b2"]  # B at its cap: its own oldest
    book.started("b3")
    book.started("b4")
    assert not admit("b5") and reasons[-1] == "per-peer"  # none of B's is waiting
    book.release("b1")
    assert book.held("B") == 2 and book.waiting_count() == 2  # a3, c1
