"""Serve's request router for the generator deployment: each room to its own replica.

Loaded by Ray Serve inside its proxy (``request_router_class`` names this
module, :data:`engine.ray_serve.ROUTER`), never by the engine front, which
does not import Ray. The decisions are
:class:`engine.room_placement.RoomPlacement`'s; this class only adapts Serve's
alpha ``RequestRouter`` interface to it.
"""

from __future__ import annotations

import time
from typing import Any

from ray.serve.request_router import MultiplexMixin, PendingRequest, RequestRouter

from engine.room_placement import RoomPlacement


class RoomRouter(MultiplexMixin, RequestRouter):  # type: ignore[misc]
    """Places each room (the request's multiplexed model id) with :class:`RoomPlacement`.

    The multiplex mixin keeps which replicas report holding which rooms (a
    replica that already holds a room's stream is preferred for it, e.g. after
    the proxy restarted). No FIFO mixin: a replica chosen for a request serves
    that request, not the oldest one waiting, or rooms would cross replicas.
    """

    def initialize_state(self, **kwargs: Any) -> None:
        """Serve's hook: the placement, with ``request_router_kwargs`` as its settings."""
        self.placement = RoomPlacement(**kwargs)

    async def choose_replicas(self, candidate_replicas: list[Any],
                              pending_request: PendingRequest | None = None
                              ) -> list[list[Any]]:
        """The room's replica first, then the others (Serve tries each rank in turn)."""
        room = pending_request.metadata.multiplexed_model_id if pending_request else ""
        if not room:
            return [candidate_replicas]
        # Both ranks full: back off before trying again rather than spin.
        pending_request.routing_context.should_backoff = True  # type: ignore[union-attr]
        by_id = {replica.replica_id: replica for replica in candidate_replicas}
        holders = {replica.replica_id for replica in candidate_replicas
                   if room in replica.multiplexed_model_ids}
        ranks = self.placement.place(room, list(by_id), holders, time.monotonic())
        return [[by_id[replica] for replica in rank] for rank in ranks if rank]
