"""The routing seam: handlers say "deliver this to user X / to room R", never which socket.

``LocalRouter`` delivers inside this process; ``server.cluster.router.RedisRouter`` has the
same methods (``Router``) and reaches users on other nodes. One of them is chosen at start-up.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterable

from common import frame as wire
from common import messages

if TYPE_CHECKING:
    from .reactor import Reactor
    from .sessions import Sessions


class Router:
    """What handlers may ask of a router. The delivery methods are thread-safe: whatever thread
    asks, delivery runs on the reactor (``_deliver`` and ``_deliver_many``, which each router
    defines with the queries)."""

    reactor: "Reactor"
    room_members: Callable[[int], Iterable[int]]

    def to_user(self, user_id: int, data: bytes) -> None:
        """Deliver an encoded frame to the user's live session, if any (thread-safe)."""
        self.reactor.call_here_or_soon(self._deliver, user_id, data)

    def to_users(self, user_ids: Iterable[int], data: bytes) -> None:
        self.reactor.call_here_or_soon(self._deliver_many, list(user_ids), data)

    def to_room(self, room_id: int, data: bytes, exclude: int | None = None) -> None:
        self.reactor.call_here_or_soon(self._deliver_room, room_id, data, exclude)

    def event_to_user(self, user_id: int, packet_type: int, body: messages.Body | dict) -> None:
        self.to_user(user_id, wire.encode_json(packet_type, body))

    def event_to_users(self, user_ids: Iterable[int], packet_type: int, body: messages.Body | dict) -> None:
        self.to_users(user_ids, wire.encode_json(packet_type, body))

    def _deliver_room(self, room_id: int, data: bytes, exclude: int | None) -> None:
        self._deliver_many([uid for uid in self.room_members(room_id) if uid != exclude], data)

    def is_online(self, user_id: int) -> bool:
        raise NotImplementedError

    def online_among(self, user_ids: Iterable[int]) -> set[int]:
        raise NotImplementedError

    def online_candidates(self, user_ids: Iterable[int]) -> list[int]:
        """Of these users, the ones an event should be handed to for delivery."""
        raise NotImplementedError

    def _deliver(self, user_id: int, data: bytes) -> None:
        raise NotImplementedError

    def _deliver_many(self, user_ids: list[int], data: bytes) -> None:
        raise NotImplementedError


class LocalRouter(Router):
    def __init__(self, reactor: "Reactor", sessions: "Sessions",
                 room_members: Callable[[int], Iterable[int]]) -> None:
        self.reactor = reactor
        self.sessions = sessions
        self.room_members = room_members   # room id -> the user ids to deliver to

    def is_online(self, user_id: int) -> bool:
        return self.sessions.is_online(user_id)

    def online_among(self, user_ids: Iterable[int]) -> set[int]:
        return self.sessions.online_among(user_ids)

    def online_candidates(self, user_ids: Iterable[int]) -> list[int]:
        """The users an event may reach: here, those with a session in this process."""
        return [uid for uid in user_ids if self.sessions.is_online(uid)]

    def _deliver(self, user_id: int, data: bytes) -> None:
        conn = self.sessions.get(user_id)
        if conn is not None and not conn.closed:
            conn.send(data)

    def _deliver_many(self, user_ids: list[int], data: bytes) -> None:
        for user_id in user_ids:
            self._deliver(user_id, data)
