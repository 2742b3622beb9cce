"""``RedisRouter``: the routing seam for a cluster node.

A user with a session on this node gets the frame at once, exactly as with ``LocalRouter``;
any other user's frame goes to the node bus, which finds the node holding the user's session
in the directory and publishes it there in the next batch (users without a session anywhere
are skipped by the directory lookup, as offline users are by ``LocalRouter``).
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable, Iterable

from ..router import Router
from .bus import TO_USER, NodeBus
from .store import UNREACHABLE

log = logging.getLogger("server.cluster.router")

if TYPE_CHECKING:
    from ..reactor import Reactor
    from ..sessions import Sessions
    from .directory import SessionDirectory


class RedisRouter(Router):
    def __init__(self, reactor: "Reactor", sessions: "Sessions", bus: NodeBus, directory: "SessionDirectory",
                 room_members: Callable[[int], Iterable[int]]) -> None:
        self.reactor = reactor
        self.sessions = sessions
        self.bus = bus
        self.directory = directory
        self.room_members = room_members

    def is_online(self, user_id: int) -> bool:
        """Asks the directory (one Redis round trip) unless the session is on this node."""
        return bool(self.online_among((user_id,)))

    def online_among(self, user_ids: Iterable[int]) -> set[int]:
        """Users with a session here or (one Redis round trip) on another node; while Redis
        cannot be reached, only this node's users count as online."""
        ids = set(user_ids)
        local = self.sessions.online_among(ids)
        if local == ids:
            return local
        try:
            return local | self.directory.online_among(ids - local)
        except UNREACHABLE as exc:
            log.warning("presence of users on other nodes unknown (Redis unreachable: %s)", exc)
            return local

    def online_candidates(self, user_ids: Iterable[int]) -> list[int]:
        """Users an event may reach without asking Redis first: all of them (the bus skips the
        ones without a session when it routes the batch)."""
        return list(user_ids)

    def _deliver(self, user_id: int, data: bytes) -> None:
        self._deliver_many((user_id,), data)

    def _deliver_many(self, user_ids: Iterable[int], data: bytes) -> None:
        remote = []
        for user_id in user_ids:
            conn = self.sessions.get(user_id)
            if conn is None:
                remote.append(user_id)
            elif not conn.closed:
                conn.send(data)
        if remote:
            self.bus.send_to_users(remote, TO_USER, data)

    def deliver_records(self, user_id: int, data: bytes) -> None:
        """A frame that came over the bus for a user of this node (reactor thread)."""
        conn = self.sessions.get(user_id)
        if conn is not None and not conn.closed:
            conn.send(data)
