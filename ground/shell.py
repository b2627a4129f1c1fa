"""The role shell: what every role process does around its own work.

capture, engine and audio_out each do one job (see their modules); around it
they all need the same five things, which live here once:

- sockets from the network and security sections (:meth:`RoleShell.socket`),
  and inboxes whose refused frames are counted by reason (:meth:`RoleShell.inbox`);
- the control subscription: :meth:`RoleShell.controls` drains it, a
  ``shutdown`` for this role sets the stop event, and the ``set`` messages
  for this role (and room) are handed back;
- heartbeats to the supervisor (:meth:`RoleShell.beat`), each carrying the
  role's own status and what it dropped so far;
- the drop counters as Prometheus metrics, and the final ``stats`` figures.

Threads: :meth:`controls` may run on another thread than :meth:`beat` (the
capture role reads control on a thread of its own); the counters are
thread-safe and each method touches only its own sockets.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import zmq

from ground.config import NetworkConfig, SecurityConfig
from ground.health import Heartbeat
from ground.metrics import Metrics
from ground.protocol import Control, DropCounter
from ground.security import curve_keys
from ground.transport import Inbox, make_socket


class RoleShell:
    """One role process's sockets, control, heartbeat, metrics and drop counters."""

    def __init__(self, role: str, room: str | None, network: NetworkConfig,
                 security: SecurityConfig, stop: threading.Event,
                 heartbeat: Heartbeat | None = None, metrics: Metrics | None = None,
                 context: zmq.Context | None = None) -> None:
        self.role = role
        self.room = room  # None: every room (the engine)
        self.network = network
        self.keys = curve_keys(security)
        self.stop = stop
        self.heartbeat = heartbeat or Heartbeat(fd=None)
        self.metrics = metrics or Metrics(0)
        self.context: zmq.Context = context or zmq.Context.instance()
        self._sockets: list[zmq.Socket] = []
        self._counters: dict[str, DropCounter] = {}
        self.control = self.inbox("control", self.socket(zmq.SUB, network.control, bind=False))

    def socket(self, kind: int, endpoint: str, *, bind: bool, **options: Any) -> zmq.Socket:
        """A socket on ``endpoint`` with the network's size limit and the security's keys;
        closed by :meth:`close`."""
        options.setdefault("max_bytes", self.network.max_message_bytes)
        socket = make_socket(self.context, kind, endpoint, bind=bind, curve=self.keys, **options)
        self._sockets.append(socket)
        return socket

    def inbox(self, name: str, socket: zmq.Socket) -> Inbox:
        """A counting receiver on ``socket``, its refusals reported as ``name``."""
        inbox = Inbox(socket, self.network.max_message_bytes)
        self.count(name, inbox.dropped)
        return inbox

    def count(self, name: str, counter: DropCounter) -> None:
        """Report ``counter``'s refusals as ``name`` (frames a role refuses on its own)."""
        self._counters[name] = counter

    def controls(self, limit: int = 1000) -> Iterator[Control]:
        """The ``set`` Controls waiting for this role (and its room); a ``shutdown`` for it
        sets the stop event."""
        for message in self.control.drain(limit):
            if not isinstance(message, Control) or message.target not in ("*", self.role):
                continue
            if message.command == "shutdown":
                self.stop.set()
            elif message.command == "set" and (self.room is None
                                               or message.room in ("*", self.room)):
                yield message

    def beat(self, status: Callable[[], dict[str, Any]]) -> bool:
        """When a heartbeat is due: export the drop counters and send ``status()`` with the
        drops so far (``status`` is only called then). True when one was sent."""
        if not self.heartbeat.due():
            return False
        for name, counter in self._counters.items():
            self.metrics.set_dropped(name, counter.by_reason)
        self.heartbeat.beat(status() | {"dropped": self.dropped_totals()})
        return True

    def dropped_totals(self) -> dict[str, int]:
        """Frames refused so far, by socket (or role-side counter) name."""
        return {name: counter.total for name, counter in self._counters.items()}

    def stats(self) -> dict[str, Any]:
        """The drop figures of the role's ``stats`` event: by name and reason, and totals."""
        return {"dropped": {name: dict(c.by_reason) for name, c in self._counters.items()},
                "dropped_total": self.dropped_totals()}

    def close(self) -> None:
        """Close every socket the shell made."""
        for socket in self._sockets:
            socket.close()
        self._sockets.clear()
