"""The meeting room registry of a cluster: the rooms live in Redis, each node mirrors the
rooms its own users are in.

In Redis, ``room:NUMBER`` holds the whole room as JSON (title, password hash, host, lock,
members in join order with their node, version) and ``user:ID:room`` the number of the room a
user is in. A new number is taken with SET NX, so two nodes never hand out the same one; every
change is a WATCH/MULTI read-modify-write, so concurrent joins, leaves and host changes on
different nodes serialise.

After a change, the node that made it applies the new state to its own mirror, tells the room
(ROOM_MEMBERS_EVENT through the router, so members on every node get it) and sends the state
to the other nodes with members in the room (a ``room_state`` call on the node bus), which
apply it to their mirrors. The mirror is what ``server.rooms.RoomRegistry`` keeps for one
process (``Room``/``Member``), so the handlers and the media relay work unchanged; the relay
also follows ``on_applied`` and ``remote_nodes`` to send each frame once to every other node
with members in the room (server/relay.py).

A member whose connection drops keeps the place for ``room_grace`` seconds, marked away in
Redis; the timer runs on the node where the connection dropped (or on the node that reaped a
dead node), and a member who comes back on any node within that time takes the place back.
When a node dies, its members are marked away and, if the host was among them, the host passes
at once to the earliest member still connected.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import redis

from common import frame as wire
from common.errors import ApiError, ErrorCode
from common.packets import PacketType

from ..passwords import hash_password, verify_password
from ..rooms import ROOM_PASSWORD_PARAMS, Member, Room, RoomRegistry, new_room_number
from .store import UNREACHABLE, unavailable

if TYPE_CHECKING:
    from ..config import ServerConfig
    from ..connection import Connection
    from ..reactor import Reactor
    from ..router import Router
    from ..sessions import Sessions
    from .node import ClusterNode

log = logging.getLogger("server.cluster.rooms")

RoomState = dict[str, Any]


@dataclass(eq=False)
class ClusterMember(Member):
    """A member of the mirror: ``conn`` is set only for a connected member of this node."""

    node: str = ""
    conn_id: int = 0
    away: bool = False

    def public(self, host_id: int) -> dict[str, Any]:
        return {**super().public(host_id), "away": self.away}


class ClusterRooms(RoomRegistry):
    def __init__(self, config: "ServerConfig", reactor: "Reactor", router: "Router", sessions: "Sessions",
                 cluster: "ClusterNode") -> None:
        # Redis holds the rooms, not MySQL: no keeper.
        super().__init__(config, reactor, router, sessions, keeper=None)  # type: ignore[arg-type]
        self.cluster = cluster
        self.client: redis.Redis = cluster.client
        self.keys = cluster.keys
        self.versions: dict[str, int] = {}
        cluster.calls["room_state"] = self._room_state_call
        # The media relay's: the mirror of a room changed (members, their node, away or back).
        self.on_applied: list[Callable[[Room], None]] = []
        cluster.registered_again.append(self._register_again)
        cluster.users_reaped.append(self._users_reaped)

    # -- the router's view: every member with a session, on any node ---------------------------------
    def router_members(self, room_id: int) -> list[int]:
        room = self.rooms.get(str(room_id))
        return [m.user_id for m in room.members.values() if not m.away] if room is not None else []  # type: ignore[attr-defined]

    def remote_nodes(self, room: Room) -> set[str]:
        """The other nodes with connected members in a room (where its media must cross to)."""
        mine = self.cluster.name
        return {m.node for m in room.members.values() if not m.away and m.node != mine}  # type: ignore[attr-defined]

    # -- reading and changing a room in Redis ---------------------------------------------------------
    def _change(self, number: str, change: Callable[[RoomState | None], RoomState | None],
                watch_users: tuple[int, ...] = ()) -> tuple[RoomState | None, RoomState | None]:
        """Read-modify-write one room under WATCH; ``change`` gets the state (None: no such room)
        and returns the new one (None: delete the room) or raises ApiError. Keeps the users'
        room index in step. Returns (before, after)."""
        key = self.keys.room(number)
        try:
            with self.client.pipeline() as pipe:
                while True:
                    try:
                        pipe.watch(key, *(self.keys.user_room(u) for u in watch_users))
                        raw = pipe.get(key)
                        before = json.loads(raw) if raw else None
                        after = change(json.loads(raw) if raw else None)
                        pipe.multi()
                        old_ids = {m["user_id"] for m in before["members"]} if before else set()
                        new_ids = {m["user_id"] for m in after["members"]} if after else set()
                        for gone in old_ids - new_ids:
                            pipe.delete(self.keys.user_room(gone))
                        for joined in new_ids - old_ids:
                            pipe.set(self.keys.user_room(joined), number)
                        if after is None:
                            pipe.delete(key)
                            pipe.srem(self.keys.rooms, number)
                        else:
                            after["version"] = (before or {}).get("version", 0) + 1
                            pipe.set(key, json.dumps(after, separators=(",", ":")))
                            pipe.sadd(self.keys.rooms, number)
                        pipe.execute()
                        return before, after
                    except redis.WatchError:
                        continue
        except UNREACHABLE as exc:
            raise unavailable(exc) from None

    def _room_of_user(self, user_id: int) -> str | None:
        raw = self.client.get(self.keys.user_room(user_id))
        return raw.decode() if raw else None

    def _publish(self, before: RoomState | None, after: RoomState | None, number: str) -> Room | None:
        """Apply a change here, tell the room, and send the state to the other nodes involved."""
        room = self._apply(number, after)
        nodes = {m["node"] for state in (before, after) if state for m in state["members"]}
        nodes.discard(self.cluster.name)
        for node in nodes:
            self.cluster.call(node, "room_state", number=number, state=after)
        if after is not None:
            present = [m["user_id"] for m in after["members"] if not m["away"]]
            self.router.to_users(present, wire.encode_json(PacketType.ROOM_MEMBERS_EVENT,
                                                                  {"room": public(after)}))
        return room

    # -- the mirror --------------------------------------------------------------------------------------
    def _room_state_call(self, body: dict) -> None:
        self._apply(body["number"], body["state"])

    def _apply(self, number: str, state: RoomState | None) -> Room | None:
        """Make the mirror of a room match ``state`` and fire the relay's hooks for this node's
        members; a state older than the one applied is ignored. Only rooms with members of
        this node are mirrored."""
        mine = self.cluster.name
        if state is not None:
            if state["version"] <= self.versions.get(number, 0):
                return self.rooms.get(number)
            self.versions[number] = state["version"]
        else:
            self.versions.pop(number, None)
        old = self.rooms.get(number)
        if state is None or not any(m["node"] == mine for m in state["members"]):
            if old is not None:
                self._drop_mirror(old)
            return None
        room = old or Room(number, state["title"], state["password"], state["host_id"])
        self.rooms[number] = room
        room.title, room.password_hash = state["title"], state["password"]
        room.host_id, room.locked = state["host_id"], state["locked"]
        previous, room.members = room.members, {}
        for m in state["members"]:
            member = previous.get(m["user_id"])
            if not isinstance(member, ClusterMember):
                member = ClusterMember(m["user_id"], m["nickname"], None, m.get("avatar", {}))
            was_conn, was_media = member.conn, (member.camera, member.microphone, member.screen)
            member.nickname, member.node, member.away = m["nickname"], m["node"], m["away"]
            member.avatar = m.get("avatar", {})
            member.conn_id = m["conn_id"]
            member.camera, member.microphone, member.screen = m["camera"], m["microphone"], m["screen"]
            local = self.sessions.get(m["user_id"]) if m["node"] == mine and not m["away"] else None
            member.conn = local if local is not None and local.id == m["conn_id"] else None
            room.members[member.user_id] = member
            if m["node"] == mine:
                self.by_user[member.user_id] = room
            elif self.by_user.get(member.user_id) is room:
                del self.by_user[member.user_id]
            if member.conn is not None and member.conn is not was_conn:
                for hook in self.on_connected:
                    hook(room, member)
            elif (member.camera, member.microphone, member.screen) != was_media:
                for hook in self.on_media_state:
                    hook(room, member)
        for user_id, member in previous.items():
            if user_id not in room.members:
                if self.by_user.get(user_id) is room:
                    del self.by_user[user_id]
                for hook in self.on_gone:
                    hook(room, member)
        for applied in self.on_applied:
            applied(room)
        return room

    def _register_again(self) -> None:
        """Reactor thread: Redis lost the rooms (restarted empty): put back each room this node
        mirrors, as it last knew it, unless another node put it back first."""
        for room in list(self.rooms.values()):
            state = {"number": room.number, "title": room.title, "password": room.password_hash, "host_id": room.host_id,
                     "locked": room.locked, "version": self.versions.get(room.number, 1),
                     "members": [{"user_id": m.user_id, "nickname": m.nickname, "avatar": m.avatar,
                                  "node": m.node,  # type: ignore[attr-defined]
                                  "conn_id": m.conn_id, "camera": m.camera, "microphone": m.microphone,  # type: ignore[attr-defined]
                                  "screen": m.screen, "away": m.away} for m in room.members.values()]}  # type: ignore[attr-defined]
            try:
                if not self.client.set(self.keys.room(room.number), json.dumps(state), nx=True):
                    continue
                pipe = self.client.pipeline(transaction=False)
                pipe.sadd(self.keys.rooms, room.number)
                for member in room.members.values():
                    pipe.set(self.keys.user_room(member.user_id), room.number, nx=True)
                pipe.execute()
            except UNREACHABLE as exc:
                log.warning("room %s not registered again (Redis unreachable: %s)", room.number, exc)
                return
            log.warning("room %s registered again with Redis (%d members)", room.number, len(room.members))

    def _drop_mirror(self, room: Room) -> None:
        self.rooms.pop(room.number, None)
        for member in room.members.values():
            if self.by_user.get(member.user_id) is room:
                del self.by_user[member.user_id]
            if member.conn is not None:
                for hook in self.on_gone:
                    hook(room, member)
        for hook in self.on_closed:
            hook(room)

    def _member_state(self, conn: "Connection") -> dict[str, Any]:
        return {"user_id": conn.user_id, "nickname": conn.nickname, "avatar": conn.avatar,
                "node": self.cluster.name, "conn_id": conn.id,
                "camera": False, "microphone": False, "screen": False, "away": False}

    # -- joining and leaving ---------------------------------------------------------------------------
    def create(self, conn: "Connection", title: str, password: str) -> Room:
        user_id = self._user(conn)
        self._not_in_a_room(user_id)
        hashed = hash_password(password, ROOM_PASSWORD_PARAMS) if password else ""
        state = {"number": "", "title": title, "password": hashed, "host_id": user_id,
                 "locked": False, "members": [self._member_state(conn)], "version": 1}
        try:
            while True:
                number = new_room_number({})
                state["number"] = number
                if self.client.set(self.keys.room(number), json.dumps(state), nx=True):
                    break
            self.client.pipeline(transaction=True).set(self.keys.user_room(user_id), number) \
                .sadd(self.keys.rooms, number).execute()
        except UNREACHABLE as exc:
            raise unavailable(exc) from None
        log.info("%s created room %s%s", conn.who, number, " with a password" if password else "")
        room = self._publish(None, state, number)
        assert room is not None
        return room

    def _not_in_a_room(self, user_id: int) -> None:
        try:
            number = self._room_of_user(user_id)
        except UNREACHABLE as exc:
            raise unavailable(exc) from None
        if number is not None:
            raise ApiError(ErrorCode.ALREADY_IN_ROOM, number=number)

    def join(self, conn: "Connection", number: str, password: str) -> tuple[Room, bool]:
        """Into the room (a locked room refuses: the waiting room is per node, not in a
        cluster yet); returns (room, waiting) as ``RoomRegistry.join``."""
        user_id = self._user(conn)
        limit = self.config.room_max_members

        def change(state: RoomState | None) -> RoomState:
            if self._room_of_user(user_id) is not None:
                raise ApiError(ErrorCode.ALREADY_IN_ROOM, number=self._room_of_user(user_id))
            if state is None:
                raise ApiError(ErrorCode.NO_SUCH_ROOM)
            if state["password"] and not verify_password(password, state["password"]):
                raise ApiError(ErrorCode.WRONG_ROOM_PASSWORD)
            if state["locked"]:
                raise ApiError(ErrorCode.ROOM_LOCKED)
            if len(state["members"]) >= limit:
                raise ApiError(ErrorCode.ROOM_FULL, limit=limit)
            state["members"].append(self._member_state(conn))
            return state

        before, after = self._change(number, change, watch_users=(user_id,))
        log.info("%s joined room %s", conn.who, number)
        room = self._publish(before, after, number)
        assert room is not None
        return room, False

    def leave(self, user_id: int) -> None:
        room = self.require_room(user_id)
        log.info("user=%d left room %s", user_id, room.number)
        self._remove(room, user_id)

    def _remove(self, room: Room, user_id: int) -> None:
        def change(state: RoomState | None) -> RoomState | None:
            if state is None:
                return None
            return _without(state, {user_id})

        before, after = self._change(room.number, change)
        if after is None:
            log.info("room %s closed", room.number)
        elif before and before["host_id"] != after["host_id"]:
            log.info("room %s: host passed from user=%d to user=%d", room.number, before["host_id"], after["host_id"])
        self._publish(before, after, room.number)

    # -- host controls --------------------------------------------------------------------------------
    def end(self, host_id: int) -> None:
        """The host ends the meeting for everyone, on every node."""
        room = self.require_host(host_id)

        def change(state: RoomState | None) -> RoomState | None:
            if state is None or state["host_id"] != host_id:
                raise ApiError(ErrorCode.NOT_HOST)
            return None

        before, after = self._change(room.number, change)
        log.info("user=%d ended room %s for all %d members", host_id, room.number, len(before["members"]))
        self.router.event_to_users([m["user_id"] for m in before["members"] if m["user_id"] != host_id],
                                   PacketType.ROOM_REMOVED_EVENT, {
            "number": room.number, "reason": "ended", "by": host_id, "message": "the host ended the meeting"})
        self._publish(before, after, room.number)

    def hand_over(self, host_id: int, target_id: int) -> Room:
        room = self.require_host(host_id)
        if target_id == host_id:
            raise ApiError(ErrorCode.BAD_REQUEST, "you are already the host")

        def change(state: RoomState | None) -> RoomState | None:
            if state is None or state["host_id"] != host_id:
                raise ApiError(ErrorCode.NOT_HOST)
            target = next((m for m in state["members"] if m["user_id"] == target_id), None)
            if target is None:
                raise ApiError(ErrorCode.NO_SUCH_MEMBER)
            if target["away"]:
                raise ApiError(ErrorCode.MEMBER_AWAY)
            state["host_id"] = target_id
            return state

        log.info("room %s: host passed from user=%d to user=%d", room.number, host_id, target_id)
        return self._publish(*self._change(room.number, change), room.number) or room

    def lock(self, host_id: int, locked: bool) -> Room:
        room = self.require_host(host_id)

        def change(state: RoomState | None) -> RoomState | None:
            if state is None or state["host_id"] != host_id:
                raise ApiError(ErrorCode.NOT_HOST)
            state["locked"] = locked
            return state

        if room.locked != locked:
            log.info("user=%d %s room %s", host_id, "locked" if locked else "unlocked", room.number)
            room = self._publish(*self._change(room.number, change), room.number) or room
        return room

    def set_media_state(self, user_id: int, camera: bool, microphone: bool, screen: bool) -> Room:
        room = self.require_room(user_id)
        member = room.members[user_id]
        if (member.camera, member.microphone, member.screen) == (camera, microphone, screen):
            return room

        def change(state: RoomState | None) -> RoomState | None:
            if state is None:
                raise ApiError(ErrorCode.NOT_IN_ROOM)
            for m in state["members"]:
                if m["user_id"] == user_id:
                    m["camera"], m["microphone"], m["screen"] = camera, microphone, screen
            return state

        return self._publish(*self._change(room.number, change), room.number) or room

    # -- sessions coming and going -------------------------------------------------------------------
    def session_started(self, conn: "Connection", replaced: bool) -> None:
        """A member's session (re)started on this node, after a drop or on another node: the
        member takes the place back (a room of this node's mirror or not)."""
        user_id = self._user(conn)
        try:
            number = self._room_of_user(user_id)
        except UNREACHABLE as exc:
            log.warning("%s cannot look up its meeting (Redis unreachable: %s)", conn.who, exc)
            return
        if number is None:
            return

        def change(state: RoomState | None) -> RoomState | None:
            if state is None:
                return None
            for m in state["members"]:
                if m["user_id"] == user_id:
                    m.update(node=self.cluster.name, conn_id=conn.id, away=False, nickname=conn.nickname)
            return state

        try:
            before, after = self._change(number, change)
        except ApiError:
            return
        log.info("%s is back in room %s%s", conn.who, number, " (session replaced)" if replaced else "")
        self._publish(before, after, number)

    def session_ended(self, conn: "Connection", reason: str, went_offline: bool) -> None:
        user_id = self._user(conn)
        room = self.by_user.get(user_id)
        if room is None or not went_offline:
            return                     # a session that moved keeps its place through the new one
        member = room.members.get(user_id)
        if member is None or member.conn is not conn:
            return
        log.info("%s dropped out of room %s (%s); place kept for %g s", conn.who, room.number, reason,
                 self.config.room_grace)
        self._mark_away(room.number, {user_id}, hand_over=False)

    def _mark_away(self, number: str, users: set[int], hand_over: bool) -> None:
        """Members without a session: away, with a grace timer on this node; ``hand_over``
        passes the host on at once if the host is among them (their node died)."""
        def change(state: RoomState | None) -> RoomState | None:
            if state is None:
                return None
            for m in state["members"]:
                if m["user_id"] in users:
                    m["away"] = True
            if hand_over and state["host_id"] in users:
                state["host_id"] = _next_host(state)
            return state

        try:
            before, after = self._change(number, change)
        except ApiError as exc:
            log.warning("room %s: cannot mark %s away: %s", number, sorted(users), exc.message)
            return
        self._publish(before, after, number)
        grace = self.config.room_grace
        for user_id in users:
            self.reactor.call_later(grace, self._grace_over_in, number, user_id)

    def _grace_over_in(self, number: str, user_id: int) -> None:
        def change(state: RoomState | None) -> RoomState | None:
            if state is None:
                return None
            if any(m["user_id"] == user_id and m["away"] for m in state["members"]):
                log.info("user=%d did not come back to room %s in time: removed", user_id, number)
                return _without(state, {user_id})
            return state

        try:
            before, after = self._change(number, change)
        except ApiError as exc:
            log.warning("room %s: grace of user=%d over but Redis is unreachable: %s", number, user_id, exc.message)
            return
        if before != after:
            self._publish(before, after, number)

    def _users_reaped(self, node: str, users: list[int]) -> None:
        """A dead node's users: away in their rooms (host handed over), removed after the grace."""
        by_room: dict[str, set[int]] = {}
        for user_id in users:
            try:
                number = self._room_of_user(user_id)
            except UNREACHABLE:
                continue
            if number is not None:
                by_room.setdefault(number, set()).add(user_id)
        for number, members in by_room.items():
            log.info("room %s: members %s were on dead node %s", number, sorted(members), node)
            self._mark_away(number, members, hand_over=True)

    def shutdown(self) -> None:
        """This node stops: its members are away (they reconnect to another node and take their
        place back); the rooms go on for the members of other nodes."""
        for room in list(self.rooms.values()):
            mine = {uid for uid, m in room.members.items() if m.node == self.cluster.name}  # type: ignore[attr-defined]
            if mine:
                self._mark_away(room.number, mine, hand_over=True)

    def _restore(self) -> None:
        """Nothing to read back from MySQL: Redis holds a cluster's rooms (and the nodes put
        them back from their mirrors after Redis lost them)."""

    def _touch(self) -> None:
        """The rooms are not kept in MySQL in a cluster."""

    def status(self) -> dict[str, Any]:
        return {"rooms": len(self.rooms), "room_members": len(self.by_user), "room_waiting": 0}


def public(state: RoomState) -> dict[str, Any]:
    """What members see of a room (as ``server.rooms.Room.public``)."""
    host = state["host_id"]
    return {"number": state["number"], "title": state["title"], "host_id": host, "locked": state["locked"],
            "has_password": bool(state["password"]),
            "members": [{"user_id": m["user_id"], "nickname": m["nickname"], "avatar": m.get("avatar", {}),
                         "camera": m["camera"],
                         "microphone": m["microphone"], "screen": m["screen"], "host": m["user_id"] == host,
                         "away": m["away"]} for m in state["members"]]}


def _next_host(state: RoomState) -> int:
    connected = [m for m in state["members"] if not m["away"]]
    return (connected or state["members"])[0]["user_id"]


def _without(state: RoomState, users: set[int]) -> RoomState | None:
    state["members"] = [m for m in state["members"] if m["user_id"] not in users]
    if not state["members"]:
        return None
    if state["host_id"] in users:
        state["host_id"] = _next_host(state)
    return state
