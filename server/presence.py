"""Presence: tell online friends when a user comes online or goes offline.

A user is *announced* once FRIEND_ONLINE went out for the session; FRIEND_OFFLINE goes out
only for an announced user whose session really ended (not for a kick by a login elsewhere,
where the account never went offline). The friend lists' ``online`` flags read the same
announced set on the reactor thread, so a list and the events around it always agree.

Fan-out goes to friends with a live session only, once per login or logout, never per heartbeat.
The friend ids of announced users are kept here (one DB read per login) so going offline and
typing checks need no database; friendship changes update them live.
"""
from __future__ import annotations

import logging
from concurrent.futures import Future
from typing import TYPE_CHECKING, Iterable

from common.packets import PacketType

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from .cluster.node import ClusterNode
    from .connection import Connection
    from .reactor import Reactor
    from .router import Router
    from .sessions import Sessions
    from .storage import Storage

log = logging.getLogger("server.presence")


class Presence:
    """Built by ``server.app.Server`` with its collaborators; the server calls
    ``session_started``/``session_ended`` (reactor thread) and, in a cluster, the node calls
    ``users_reaped`` and the ``friendship`` call."""

    def __init__(self, reactor: "Reactor", pool: "Executor", storage: "Storage", sessions: "Sessions",
                 router: "Router", cluster: "ClusterNode | None") -> None:
        self.reactor = reactor
        self.pool = pool
        self.storage = storage
        self.sessions = sessions
        self.router = router
        self.cluster = cluster
        self._friends: dict[int, set[int]] = {}   # announced user -> friend ids (reactor thread only)
        # users whose friend ids are being loaded -> friendship changes since (replayed on the result)
        self._loading: dict[int, list[tuple[int, bool]]] = {}
        self.online_events = 0
        self.offline_events = 0
        if cluster is not None:
            cluster.users_reaped.append(self.users_reaped)
            cluster.calls["friendship"] = lambda body: self._friendship_changed_for(
                body["user_id"], body["other"], body["added"])

    def status(self) -> dict[str, int]:
        return {"presence_online_events": self.online_events, "presence_offline_events": self.offline_events}

    # -- queries ---------------------------------------------------------------------------------
    def elsewhere(self, user_ids: Iterable[int]) -> set[int]:
        """Worker thread: which of these users hold a session on another node (one directory
        lookup in Redis in a cluster; nobody, without a call, in one process). The reply is
        then finished on the reactor with ``online_among``."""
        if self.cluster is None:
            return set()
        others = {uid for uid in user_ids if self.sessions.get(uid) is None}
        return self.router.online_among(others) if others else set()

    def online_among(self, user_ids: Iterable[int], elsewhere: Iterable[int] = ()) -> set[int]:
        """Reactor thread: the users announced online here, and those of ``elsewhere`` (from
        ``elsewhere()``) still without a session here; so a reply and the FRIEND_ONLINE/OFFLINE
        events of this node's users around it agree."""
        ids = set(user_ids)
        online = {uid for uid in ids if uid in self._friends}
        return online | {uid for uid in set(elsewhere) & (ids - online) if self.sessions.get(uid) is None}

    def are_friends(self, user_id: int, other_id: int) -> bool | None:
        """From the cache of an announced user; None if ``user_id`` is not announced."""
        friends = self._friends.get(user_id)
        return None if friends is None else other_id in friends

    # -- friendship changes (reactor thread) ----------------------------------------------------------
    def friendship_added(self, a: int, b: int) -> None:
        self._friendship_changed(a, b, True)

    def friendship_removed(self, a: int, b: int) -> None:
        self._friendship_changed(a, b, False)

    def _friendship_changed(self, a: int, b: int, added: bool) -> None:
        for user, other in ((a, b), (b, a)):
            if self.cluster is not None and self.sessions.get(user) is None:
                self.cluster.call_user(user, "friendship", other=other, added=added)   # its node's cache
            else:
                self._friendship_changed_for(user, other, added)

    def _friendship_changed_for(self, user: int, other: int, added: bool) -> None:
        if user in self._friends:
            (self._friends[user].add if added else self._friends[user].discard)(other)
        if user in self._loading:
            self._loading[user].append((other, added))

    # -- session hooks (reactor thread) ---------------------------------------------------------------
    def session_started(self, conn: "Connection", replaced: bool) -> None:
        user_id = conn.user_id
        if replaced and user_id in self._friends:
            return  # a login elsewhere took over: still online, nobody is told anything
        # Replaced, yet neither announced nor loading here: the session moved from another
        # node, whose friends were told already; only the friend ids are loaded.
        quiet = replaced and user_id not in self._loading
        self._loading.setdefault(user_id, [])
        future = self.pool.submit(self.storage.friend_ids, user_id)
        future.add_done_callback(
            lambda fut: self.reactor.call_soon_threadsafe(self._announce, conn, fut, quiet))

    def _announce(self, conn: "Connection", future: Future, quiet: bool = False) -> None:
        user_id = conn.user_id
        if conn.closed or user_id is None or self.sessions.get(user_id) is not conn:
            return  # the session ended (or was replaced) before its friends were loaded
        if user_id in self._friends:
            return
        error = future.exception()
        if error is not None:
            log.error("%s cannot load friends for presence: %s", conn.who, error)
            return
        friends = set(future.result())
        for other, added in self._loading.pop(user_id, []):   # changes the read may have missed
            (friends.add if added else friends.discard)(other)
        self._friends[user_id] = friends
        if not quiet:
            self._fan_out(user_id, friends, PacketType.FRIEND_ONLINE)

    def session_ended(self, conn: "Connection", reason: str, went_offline: bool) -> None:
        if not went_offline or conn.user_id is None:
            return
        self._loading.pop(conn.user_id, None)
        friends = self._friends.pop(conn.user_id, None)
        if friends is not None:
            self._fan_out(conn.user_id, friends, PacketType.FRIEND_OFFLINE)

    def users_reaped(self, node: str, users: list[int]) -> None:
        """A dead node's users went offline: their friends on any node are told."""
        def tell(user_id: int, future: Future) -> None:
            if future.exception() is not None:
                log.error("user=%d cannot load friends to announce going offline: %s", user_id, future.exception())
            elif self.sessions.get(user_id) is None:
                self._fan_out(user_id, future.result(), PacketType.FRIEND_OFFLINE)
        for user_id in users:
            future = self.pool.submit(self.storage.friend_ids, user_id)
            future.add_done_callback(lambda fut, uid=user_id: self.reactor.call_soon_threadsafe(tell, uid, fut))

    def _fan_out(self, user_id: int, friends: Iterable[int], packet_type: PacketType) -> None:
        targets = self.router.online_candidates(friends)
        if not targets:
            return
        self.router.event_to_users(targets, packet_type, {"user_id": user_id})
        if packet_type == PacketType.FRIEND_ONLINE:
            self.online_events += len(targets)
        else:
            self.offline_events += len(targets)
