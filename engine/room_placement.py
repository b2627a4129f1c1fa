"""Which Ray Serve replica serves each room: the request router's decisions, without Ray.

Where it sits: :class:`engine.ray_router.RoomRouter` (loaded by Serve in its
proxy) asks :class:`RoomPlacement` for each request of the generator
deployment (:mod:`engine.ray_serve`); kept apart from the router so that the
decisions are tested where Ray is not installed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any


class RoomPlacement:
    """Which replica serves each room: sticky, even, and evened again slowly.

    Serve's own multiplex routing sends a room no replica holds to the replica
    reporting the fewest rooms, but replicas report with a delay, so rooms that
    start together all see the same counts and land on the same replica (8 rooms
    over 2 replicas measured 966 vs 322 requests), and stay there. This placement
    counts its own assignments as it makes them: a new room goes to the replica
    with the fewest rooms now (a replica already holding the room's stream first,
    unless that one is busier), a placed room stays where it is, and a room
    whose replica died goes to the least busy survivor. Rooms left where a dead
    replica's replacement comes up empty would halve the throughput for good, so
    when one replica has two rooms more than another, one room moves, at most
    one every ``move_every_s`` and only a room settled ``settle_s`` on its
    replica (a move reopens the room's stream on the new replica). A room not
    heard from for ``idle_s`` is forgotten. Pure bookkeeping: :class:`RoomRouter
    <engine.ray_router.RoomRouter>` asks it inside Serve's proxy; tests drive it
    directly, without Ray.
    """

    def __init__(self, idle_s: float = 30.0, move_every_s: float = 5.0, settle_s: float = 10.0,
                 choose: Callable[[Sequence[Any]], Any] | None = None) -> None:
        self.idle_s, self.move_every_s, self.settle_s = idle_s, move_every_s, settle_s
        self._choose = choose or random.choice  # ties: random, so two proxies spread too
        self._rooms: dict[str, tuple[Any, float, float]] = {}  # room -> (replica, since, seen)
        self._last_move = -float("inf")
        self.moved = 0

    def rooms(self) -> dict[Any, list[str]]:
        """The rooms placed on each replica."""
        placed: dict[Any, list[str]] = {}
        for room, (replica, _, _) in self._rooms.items():
            placed.setdefault(replica, []).append(room)
        return placed

    def place(self, room: str, replicas: Sequence[Any], holders: set[Any] | frozenset[Any],
              now: float) -> list[list[Any]]:
        """The replicas to try for ``room``'s request, in ranks: its replica first, then
        the others, least busy first. ``replicas``: the live replicas; ``holders``: those
        reporting they hold the room's stream; ``now``: a monotonic clock."""
        if not replicas:
            return []
        live = set(replicas)
        for other, (replica, _, seen) in list(self._rooms.items()):
            if replica not in live or now - seen > self.idle_s:
                del self._rooms[other]
        load = {replica: 0 for replica in replicas}
        for replica, _, _ in self._rooms.values():
            load[replica] += 1
        placed = self._rooms.get(room)
        fewest = min(load.values())
        if placed is None:
            held = [r for r in replicas if r in holders and load[r] <= fewest]
            chosen = held[0] if held else self._choose([r for r in replicas
                                                        if load[r] == fewest])
            self._rooms[room] = (chosen, now, now)
        else:
            chosen, since, _ = placed
            if (load[chosen] - fewest >= 2 and now - since >= self.settle_s
                    and now - self._last_move >= self.move_every_s):
                chosen = self._choose([r for r in replicas if load[r] == fewest])
                self._last_move, since = now, now
                self.moved += 1
            self._rooms[room] = (chosen, since, now)
        others = sorted((r for r in replicas if r != chosen), key=lambda r: load[r])
        return [[chosen], others] if others else [[chosen]]
