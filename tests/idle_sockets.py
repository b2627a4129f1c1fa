"""Helper of the tests that hold a server's connections open as a slowloris does."""

from __future__ import annotations

import selectors
import socket
import threading


class IdleSockets:
    """``per`` sockets from each of ``sources`` to ``address`` that send ``opening`` (part
    of a request, never a whole one) and then nothing unless :meth:`trickle` says so; each
    is reopened from its address as the server closes it (``reopened`` counts them)."""

    def __init__(self, address: tuple[str, int], sources: list[str], per: int,
                 opening: bytes) -> None:
        self.address = address
        self.opening = opening
        self.selector = selectors.DefaultSelector()
        self.reopened = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        for source in sources:
            for _ in range(per):
                self._open(source)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _open(self, source: str) -> None:
        sock = socket.create_connection(self.address, source_address=(source, 0))
        sock.sendall(self.opening)
        sock.setblocking(False)
        with self._lock:
            self.selector.register(sock, selectors.EVENT_READ, source)

    def trickle(self, byte: bytes = b"E") -> None:
        """One more byte on every socket (never the end of a request line)."""
        with self._lock:
            socks = [key.fileobj for key in self.selector.get_map().values()]
        for sock in socks:
            try:
                sock.send(byte)  # type: ignore[union-attr]
            except OSError:
                pass  # closed by the server: reopened by the thread

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self.selector.select(timeout=0.05):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:  # closed by the server: open a fresh one from the same address
                    with self._lock:
                        self.selector.unregister(sock)
                    sock.close()
                    try:
                        self._open(key.data)
                        self.reopened += 1
                    except OSError:
                        pass

    def __enter__(self) -> IdleSockets:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self.selector.close()
