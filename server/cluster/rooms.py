"""The meeting room registry of a cluster: the rooms live in Redis, each node mirrors the
rooms its own users are in.

In Redis, ``room:NUMBER`` holds the whole room as JSON (title, password hash, host, lock,
members in join order with their node, the waiting room in arrival order with each waiting
user's node, version), ``user:ID:room`` the number of the room a user is in and
``user:ID:waiting`` the number of the locked room a user waits to be let into. A new number is
taken with SET NX, so two nodes never hand out the same one; every change is a WATCH/MULTI
read-modify-write, so concurrent joins, knocks, admissions, leaves and host changes on
different nodes serialise.

No Redis call runs on the reactor thread. Every change runs on this node's one room thread
(``cluster-rooms``), in the order asked: the handlers (blocking in a cluster, on the worker
pool) hand their request to it and wait, and the reactor's own triggers (a session that starts
or ends, a grace period over, a dead node's users, Redis restarted) are queued to it. After a
change the room thread hands the new state to the reactor, which applies it to this node's
mirror and sends it to the other nodes involved (members' and waiting users' nodes, a
``room_state`` call on the node bus), before the request's reply goes out.

Each node that applies a newer state than it holds tells its own users: the members present
get ROOM_MEMBERS_EVENT, the host (if here) ROOM_WAITING_EVENT when the waiting list or the host
changed. A state older than the one applied is ignored, so whatever order the bus brings the
states of several nodes in, each user sees the room only move forward. The mirror is what
``server.rooms.RoomRegistry`` keeps for one process (``Room``/``Member``), so room chat and
the media relay work unchanged; the relay also follows ``on_applied`` and ``remote_nodes`` to
send each frame once to every other node with members in the room (server/relay.py).

A member whose connection drops keeps the place for ``room_grace`` seconds, marked away in
Redis with the time the grace ends; a member who comes back on any node within that time takes
the place back. Each room's earliest grace end is also in a sorted set, which every node
sweeps about once a second, so a grace runs out even if the node where the member dropped died
meanwhile (no member is left away for ever, no room kept alive by members who never return).
When a node dies, its members are marked away and, if the host was among them, the host passes
at once to the earliest member still connected; its waiting users leave the waiting rooms.
A member whose session moves to another node while the room still shows it connected on its
old one (that node died and its client resumed here before the lease ran out, or a login or
RESUME here took the session over) is marked away and then back, in two changes, so the others
see what a drop and a return show on one process; place, host role and media state are kept.
A node marks away only members the room shows on the node concerned (and on the connection
that ended), so a late drop or reaping never marks away a member already back elsewhere.
"""
from __future__ import annotations

import json
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import redis

from common import frame as wire
from common.errors import ApiError, ErrorCode
from common.packets import PacketType

from ..passwords import hash_password, verify_password
from ..rooms import ROOM_PASSWORD_PARAMS, WAITING_MAX, Member, Room, RoomRegistry, Waiting, new_room_number
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
CLOSED = 2 ** 62         # the version remembered for a room that closed: a late state never revives it
FORGET_AFTER = 120.0     # seconds a room without users here keeps its version (late states are ignored)
REACTOR_WAIT = 10.0      # seconds the room thread waits for the reactor to apply a change

# Put a room back after Redis lost it, unless a node already put back the same or a newer state.
_PUT_BACK = """
local raw = redis.call('GET', KEYS[1])
if raw and cjson.decode(raw)['version'] >= tonumber(ARGV[2]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""


@dataclass(eq=False)
class ClusterMember(Member):
    """A member of the mirror: ``conn`` is set only for a connected member of this node."""

    node: str = ""
    conn_id: int = 0
    away: bool = False
    away_until: int = 0          # wall-clock ms: the end of the grace while away

    def public(self, host_id: int) -> dict[str, Any]:
        return {**super().public(host_id), "away": self.away}


@dataclass(eq=False)
class ClusterWaiting(Waiting):
    node: str = ""
    conn_id: int = 0
    avatar: dict | None = None


@dataclass(frozen=True)
class RoomView:
    """What a request's reply shows of a room: the mirror as it was once the change applied."""

    number: str
    title: str
    view: dict[str, Any]

    def public(self) -> dict[str, Any]:
        return self.view


class ClusterRooms(RoomRegistry):
    blocking = True      # the room handlers run on the pool: they wait for Redis

    def __init__(self, config: "ServerConfig", reactor: "Reactor", router: "Router", sessions: "Sessions",
                 cluster: "ClusterNode") -> None:
        # Redis holds the rooms, not MySQL: no keeper.
        super().__init__(config, reactor, router, sessions, keeper=None)  # type: ignore[arg-type]
        self.cluster = cluster
        self.client: redis.Redis = cluster.client
        self.keys = cluster.keys
        self.versions: dict[str, int] = {}          # the newest state applied, per room
        self._dropped: dict[str, float] = {}        # rooms without users here since (monotonic)
        self.waiting_for: dict[int, str] = {}       # this node's users in a waiting room -> number
        self._put_back = self.client.register_script(_PUT_BACK)
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cluster-rooms")
        self._sweeping = False
        reactor.call_every(max(0.2, min(1.0, config.room_grace / 4)), self._sweep_soon)
        cluster.calls["room_state"] = self._room_state_call
        # The media relay's: the mirror of a room changed (members, their node, away or back).
        self.on_applied: list[Callable[[Room], None]] = []
        cluster.registered_again.append(self._register_again)
        cluster.users_reaped.append(self._users_reaped)

    # -- threads -------------------------------------------------------------------------------------
    def _run(self, job: Callable[..., Any], *args: Any) -> Any:
        """Worker thread (a handler): run ``job`` on the room thread, in turn, and wait."""
        assert not self.reactor.in_reactor_thread(), "room changes never wait on the reactor thread"
        return self._thread.submit(job, *args).result()

    def _queue(self, job: Callable[..., Any], *args: Any) -> None:
        """Reactor thread: run ``job`` on the room thread, in turn; failures are logged."""
        def run() -> None:
            try:
                job(*args)
            except ApiError as exc:
                log.warning("room change %s not made: %s", job.__name__, exc.message)
            except Exception:
                log.exception("room change %s failed", job.__name__)
        self._thread.submit(run)

    def _on_reactor(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Room thread: run ``fn`` on the reactor and return its result."""
        if self.reactor.in_reactor_thread():
            return fn(*args)
        done: Future = Future()

        def run() -> None:
            try:
                done.set_result(fn(*args))
            except BaseException as exc:
                done.set_exception(exc)
        self.reactor.call_soon_threadsafe(run)
        try:
            return done.result(REACTOR_WAIT)
        except TimeoutError:
            raise ApiError(ErrorCode.SHUTTING_DOWN) from None

    # -- the router's view: every member with a session, on any node ---------------------------------
    def router_members(self, room_id: int) -> list[int]:
        room = self.rooms.get(str(room_id))
        return [m.user_id for m in room.members.values() if not m.away] if room is not None else []  # type: ignore[attr-defined]

    def remote_nodes(self, room: Room) -> set[str]:
        """The other nodes with connected members in a room (where its media must cross to)."""
        mine = self.cluster.name
        return {m.node for m in room.members.values() if not m.away and m.node != mine}  # type: ignore[attr-defined]

    # -- reading and changing a room in Redis (room thread) ---------------------------------------------
    def _change(self, number: str, change: Callable[[RoomState | None], RoomState | None],
                watch_users: tuple[int, ...] = ()) -> tuple[RoomState | None, RoomState | None]:
        """Read-modify-write one room under WATCH; ``change`` gets the state (None: no such room)
        and returns the new one (None: delete the room), or raises ApiError, or ``_Unchanged``
        (nothing written: ``after is before``). Keeps the users' room and waiting indexes in
        step. Returns (before, after)."""
        key = self.keys.room(number)
        watched = [key, *(self.keys.user_room(u) for u in watch_users)]
        try:
            with self.client.pipeline() as pipe:
                while True:
                    try:
                        pipe.watch(*watched)
                        raw = pipe.get(key)
                        before = _loaded(raw)
                        try:
                            after = change(_loaded(raw))
                        except _Unchanged:
                            pipe.reset()
                            return before, before
                        pipe.multi()
                        for index, field in ((self.keys.user_room, "members"), (self.keys.user_waiting, "waiting")):
                            old_ids = {m["user_id"] for m in before[field]} if before else set()
                            new_ids = {m["user_id"] for m in after[field]} if after else set()
                            for gone in old_ids - new_ids:
                                pipe.delete(index(gone))
                            for came in new_ids - old_ids:
                                pipe.set(index(came), number)
                        graces = [m["away_until"] for m in after["members"] if m["away"]] if after else []
                        if graces:
                            pipe.zadd(self.keys.room_graces, {number: min(graces)})
                        else:
                            pipe.zrem(self.keys.room_graces, number)
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

    def _get(self, key: str) -> str | None:
        try:
            raw = self.client.get(key)
        except UNREACHABLE as exc:
            raise unavailable(exc) from None
        return raw.decode() if raw else None

    def _room_of_user(self, user_id: int) -> str | None:
        return self._get(self.keys.user_room(user_id))

    def _state(self, number: str) -> RoomState | None:
        try:
            return _loaded(self.client.get(self.keys.room(number)))
        except UNREACHABLE as exc:
            raise unavailable(exc) from None

    def _number_of(self, host_id: int) -> str:
        """The room the user is in (NOT_IN_ROOM otherwise); the changes check the host."""
        number = self._room_of_user(host_id)
        if number is None:
            raise ApiError(ErrorCode.NOT_IN_ROOM)
        return number

    # -- telling (reactor thread) ----------------------------------------------------------------------
    def _tell(self, before: RoomState | None, after: RoomState | None, number: str, *,
              answer: str | None = None, first: tuple[tuple[list[int], PacketType, dict], ...] = ()
              ) -> RoomView | None:
        """Apply a change here and send it to the other nodes involved. ``first``: events sent
        before (they reach each node ahead of the state). Users who left the waiting room
        other than by their own wish get ROOM_ADMIT_EVENT with ``answer`` (the meeting ended,
        when it did). Returns the mirror's view of the room (None if this node has none)."""
        for users, packet_type, body in first:
            self.router.event_to_users(users, packet_type, body)
        nodes = {p["node"] for state in (before, after) if state for field in ("members", "waiting")
                 for p in state[field]}
        nodes.discard(self.cluster.name)
        for node in sorted(nodes):
            self.cluster.call(node, "room_state", number=number, state=after)
        room = self._apply(number, after)
        if before is not None:
            if after is None:
                answer = "the meeting ended"
            still = {w["user_id"] for w in after["waiting"]} if after else set()
            members = {m["user_id"] for m in after["members"]} if after else set()
            for waiter in before["waiting"]:
                user_id = waiter["user_id"]
                if user_id in still or answer is None:
                    continue
                event: dict[str, Any] = {"number": number, "admitted": False, "message": answer}
                if user_id in members:
                    assert after is not None
                    event.update(admitted=True, room=public(after))
                    log.info("user=%d was let into room %s", user_id, number)
                else:
                    log.info("user=%d was not let into room %s: %s", user_id, number, answer)
                self.router.event_to_user(user_id, PacketType.ROOM_ADMIT_EVENT, event)
        return None if room is None else RoomView(room.number, room.title, room.public())

    # -- the mirror (reactor thread) -------------------------------------------------------------------
    def _room_state_call(self, body: dict) -> None:
        self._apply(body["number"], body["state"])

    def _apply(self, number: str, state: RoomState | None) -> Room | None:
        """Make the mirror of a room match ``state``, fire the relay's hooks for this node's
        members and tell this node's users; a state older than the one applied is ignored.
        Only rooms with members of this node are mirrored."""
        mine = self.cluster.name
        version = CLOSED if state is None else state["version"]
        if version <= self.versions.get(number, 0):
            return self.rooms.get(number)
        self.versions[number] = version
        self._note_waiting(number, state)
        old = self.rooms.get(number)
        if state is None or not any(m["node"] == mine for m in state["members"]):
            if old is not None:
                self._drop_mirror(old)
            self._dropped[number] = time.monotonic()
            return None
        self._dropped.pop(number, None)
        room = old or Room(number, state["title"], state["password"], state["host_id"])
        self.rooms[number] = room
        old_host, old_waiting = room.host_id, [w.user_id for w in room.waiting.values()] if old else []
        host_conn = room.members.get(room.host_id).conn if old and room.host_id in room.members else None
        room.title, room.password_hash = state["title"], state["password"]
        room.host_id, room.locked = state["host_id"], state["locked"]
        room.waiting = {w["user_id"]: ClusterWaiting(w["user_id"], w["nickname"], w["node"], w["conn_id"],
                                                     w.get("avatar", {})) for w in state["waiting"]}
        previous, room.members = room.members, {}
        for m in state["members"]:
            member = previous.get(m["user_id"])
            if not isinstance(member, ClusterMember):
                member = ClusterMember(m["user_id"], m["nickname"], None, m.get("avatar", {}))
            was_conn, was_media = member.conn, (member.camera, member.microphone, member.screen)
            member.nickname, member.node, member.away = m["nickname"], m["node"], m["away"]
            member.away_until = m.get("away_until", 0)
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
        here = [m.user_id for m in room.members.values() if m.conn is not None]
        self.router.to_users(here, wire.encode_json(PacketType.ROOM_MEMBERS_EVENT, {"room": room.public()}))
        host = room.members.get(room.host_id)
        if host is not None and host.conn is not None:
            waiting = list(room.waiting)
            if waiting != old_waiting or (waiting and (room.host_id != old_host or host.conn is not host_conn)):
                self._send_waiting(room)
        return room

    def _note_waiting(self, number: str, state: RoomState | None) -> None:
        """Keep ``waiting_for`` (this node's users in a waiting room) in step with a room."""
        mine = {w["user_id"] for w in state["waiting"] if w["node"] == self.cluster.name} if state else set()
        for user_id in [u for u, n in self.waiting_for.items() if n == number and u not in mine]:
            del self.waiting_for[user_id]
        for user_id in mine:
            self.waiting_for[user_id] = number

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

    def _mirror_states(self) -> list[RoomState]:
        """Reactor thread: every mirrored room as a state to put back into Redis."""
        return [{"number": room.number, "title": room.title, "password": room.password_hash,
                 "host_id": room.host_id, "locked": room.locked, "version": self.versions.get(room.number, 1),
                 "members": [{"user_id": m.user_id, "nickname": m.nickname, "avatar": m.avatar,
                              "node": m.node, "conn_id": m.conn_id, "camera": m.camera,  # type: ignore[attr-defined]
                              "microphone": m.microphone, "screen": m.screen,
                              "away": m.away, "away_until": m.away_until}  # type: ignore[attr-defined]
                             for m in room.members.values()],
                 "waiting": [{"user_id": w.user_id, "nickname": w.nickname, "node": w.node,  # type: ignore[attr-defined]
                              "conn_id": w.conn_id, "avatar": w.avatar or {}}  # type: ignore[attr-defined]
                             for w in room.waiting.values()]}
                for room in self.rooms.values()]

    def _member_state(self, conn: "Connection") -> dict[str, Any]:
        return {"user_id": conn.user_id, "nickname": conn.nickname, "avatar": conn.avatar,
                "node": self.cluster.name, "conn_id": conn.id,
                "camera": False, "microphone": False, "screen": False, "away": False}

    # -- joining and leaving (worker thread -> room thread) -------------------------------------------
    def create(self, conn: "Connection", title: str, password: str) -> RoomView:  # type: ignore[override]
        hashed = hash_password(password, ROOM_PASSWORD_PARAMS) if password else ""   # on the worker
        return self._run(self._create, conn, title, hashed)

    def _create(self, conn: "Connection", title: str, hashed: str) -> RoomView:
        user_id = self._user(conn)
        number = self._room_of_user(user_id)
        if number is not None:
            raise ApiError(ErrorCode.ALREADY_IN_ROOM, number=number)
        self._stop_waiting(user_id)
        state = {"number": "", "title": title, "password": hashed, "host_id": user_id,
                 "locked": False, "members": [self._member_state(conn)], "waiting": [], "version": 1}
        try:
            while True:
                number = new_room_number(self.versions)
                state["number"] = number
                if self.client.set(self.keys.room(number), json.dumps(state), nx=True):
                    break
            self.client.pipeline(transaction=True).set(self.keys.user_room(user_id), number) \
                .sadd(self.keys.rooms, number).execute()
        except UNREACHABLE as exc:
            raise unavailable(exc) from None
        log.info("%s created room %s%s", conn.who, number, " with a password" if hashed else "")
        view = self._on_reactor(self._tell, None, state, number)
        assert view is not None
        return view

    def join(self, conn: "Connection", number: str, password: str) -> tuple[RoomView, bool]:  # type: ignore[override]
        """Into the room, or (locked) into its waiting room: returns (room, waiting)."""
        return self._run(self._join, conn, number, password)

    def _join(self, conn: "Connection", number: str, password: str) -> tuple[RoomView, bool]:
        user_id = self._user(conn)
        limit = self.config.room_max_members
        current = self._room_of_user(user_id)
        if current is not None:
            raise ApiError(ErrorCode.ALREADY_IN_ROOM, number=current)
        seen = self._state(number)
        if seen is None:
            raise ApiError(ErrorCode.NO_SUCH_ROOM)
        if seen["password"] and not verify_password(password, seen["password"]):
            raise ApiError(ErrorCode.WRONG_ROOM_PASSWORD)
        self._stop_waiting(user_id)

        def change(state: RoomState | None) -> RoomState:
            current = self._room_of_user(user_id)
            if current is not None:
                raise ApiError(ErrorCode.ALREADY_IN_ROOM, number=current)
            if state is None:
                raise ApiError(ErrorCode.NO_SUCH_ROOM)
            if state["password"] != seen["password"]:
                raise ApiError(ErrorCode.WRONG_ROOM_PASSWORD)
            if state["locked"]:
                if len(state["waiting"]) >= WAITING_MAX:
                    raise ApiError(ErrorCode.ROOM_FULL, "too many people are waiting to join this meeting",
                                   limit=WAITING_MAX)
                state["waiting"].append({"user_id": user_id, "nickname": conn.nickname, "avatar": conn.avatar,
                                         "node": self.cluster.name, "conn_id": conn.id})
                return state
            if len(state["members"]) >= limit:
                raise ApiError(ErrorCode.ROOM_FULL, limit=limit)
            state["members"].append(self._member_state(conn))
            return state

        before, after = self._change(number, change, watch_users=(user_id,))
        assert after is not None
        waiting = any(w["user_id"] == user_id for w in after["waiting"])
        if waiting:
            log.info("%s is waiting to be let into locked room %s", conn.who, number)
            self._on_reactor(self._tell, before, after, number)
            return RoomView(number, after["title"], public(after)), True
        log.info("%s joined room %s", conn.who, number)
        view = self._on_reactor(self._tell, before, after, number)
        assert view is not None
        return view, False

    def _stop_waiting(self, user_id: int, conn_id: int | None = None) -> bool:
        """Room thread: out of the waiting room the user is in, if any (only if the entry is
        this connection's, when ``conn_id`` is given); the host sees the shorter list."""
        number = self._get(self.keys.user_waiting(user_id))
        if number is None:
            return False

        def change(state: RoomState | None) -> RoomState | None:
            if state is None:
                raise _Unchanged(state)
            kept = [w for w in state["waiting"] if w["user_id"] != user_id
                    or (conn_id is not None and w["conn_id"] != conn_id)]
            if len(kept) == len(state["waiting"]):
                raise _Unchanged(state)
            state["waiting"] = kept
            return state

        before, after = self._change(number, change)
        if after is before:
            return False
        log.info("user=%d stopped waiting to be let into room %s", user_id, number)
        self._on_reactor(self._tell, before, after, number)
        return True

    def leave(self, user_id: int) -> None:
        """Leave the room, or stop waiting to be let in."""
        self._run(self._leave, user_id)

    def _leave(self, user_id: int) -> None:
        if self._stop_waiting(user_id):
            return
        number = self._number_of(user_id)
        log.info("user=%d left room %s", user_id, number)
        self._remove(number, user_id)

    def _remove(self, number: str, user_id: int, by: int | None = None,
                first: tuple[tuple[list[int], PacketType, dict], ...] = ()) -> None:
        """Room thread: a member out (``by``: the host who removes them)."""
        def change(state: RoomState | None) -> RoomState | None:
            if by is not None and (state is None or state["host_id"] != by):
                raise ApiError(ErrorCode.NOT_HOST)
            if state is None or not any(m["user_id"] == user_id for m in state["members"]):
                raise ApiError(ErrorCode.NOT_IN_ROOM if by is None else ErrorCode.NO_SUCH_MEMBER)
            return _without(state, {user_id})

        before, after = self._change(number, change)
        if after is None:
            log.info("room %s closed", number)
        elif before and before["host_id"] != after["host_id"]:
            log.info("room %s: host passed from user=%d to user=%d", number, before["host_id"], after["host_id"])
        self._on_reactor(lambda: self._tell(before, after, number, first=first))

    # -- host controls (worker thread -> room thread) -------------------------------------------------
    def kick(self, host_id: int, target_id: int) -> None:
        self._run(self._kick, host_id, target_id)

    def _kick(self, host_id: int, target_id: int) -> None:
        number = self._number_of(host_id)
        state = self._state(number)
        if state is None or state["host_id"] != host_id:
            raise ApiError(ErrorCode.NOT_HOST)
        if target_id == host_id:
            raise ApiError(ErrorCode.BAD_REQUEST, "the host cannot remove themselves: leave instead")
        if not any(m["user_id"] == target_id for m in state["members"]):
            raise ApiError(ErrorCode.NO_SUCH_MEMBER)
        log.info("user=%d removed user=%d from room %s", host_id, target_id, number)
        removed = {"number": number, "reason": "kicked", "by": host_id,
                   "message": "the host removed you from the meeting"}
        self._remove(number, target_id, by=host_id, first=(([target_id], PacketType.ROOM_REMOVED_EVENT, removed),))

    def mute(self, host_id: int, target_id: int | None) -> None:
        self._run(self._mute, host_id, target_id)

    def _mute(self, host_id: int, target_id: int | None) -> None:
        number = self._number_of(host_id)
        state = self._state(number)
        if state is None or state["host_id"] != host_id:
            raise ApiError(ErrorCode.NOT_HOST)
        members = [m["user_id"] for m in state["members"]]
        if target_id is None:
            targets = [uid for uid in members if uid != host_id]
        elif target_id in members:
            targets = [target_id]
        else:
            raise ApiError(ErrorCode.NO_SUCH_MEMBER)
        event = {"number": number, "by": host_id, "all": target_id is None}
        self._on_reactor(self.router.event_to_users, targets, PacketType.ROOM_MUTE_EVENT, event)

    def lock(self, host_id: int, locked: bool) -> RoomView:  # type: ignore[override]
        return self._run(self._lock, host_id, locked)

    def _lock(self, host_id: int, locked: bool) -> RoomView:
        number = self._number_of(host_id)

        def change(state: RoomState | None) -> RoomState | None:
            if state is None or state["host_id"] != host_id:
                raise ApiError(ErrorCode.NOT_HOST)
            if state["locked"] == locked:
                raise _Unchanged(state)
            state["locked"] = locked
            if not locked:                          # everyone waiting comes in
                state["members"] += [{**self._waiter_as_member(w)} for w in state["waiting"]]
                state["waiting"] = []
            return state

        before, after = self._change(number, change)
        assert after is not None
        if after is before:
            return RoomView(number, after["title"], public(after))
        log.info("user=%d %s room %s", host_id, "locked" if locked else "unlocked", number)
        view = self._on_reactor(lambda: self._tell(before, after, number, answer="the meeting was unlocked"))
        return view or RoomView(number, after["title"], public(after))

    def end(self, host_id: int) -> None:
        """The host ends the meeting for everyone, on every node."""
        self._run(self._end, host_id)

    def _end(self, host_id: int) -> None:
        number = self._number_of(host_id)

        def change(state: RoomState | None) -> RoomState | None:
            if state is None or state["host_id"] != host_id:
                raise ApiError(ErrorCode.NOT_HOST)
            return None

        before, after = self._change(number, change)
        assert before is not None
        log.info("user=%d ended room %s for all %d members", host_id, number, len(before["members"]))
        ended = {"number": number, "reason": "ended", "by": host_id, "message": "the host ended the meeting"}
        others = [m["user_id"] for m in before["members"] if m["user_id"] != host_id]
        self._on_reactor(lambda: self._tell(before, after, number,
                                            first=((others, PacketType.ROOM_REMOVED_EVENT, ended),)))

    def hand_over(self, host_id: int, target_id: int) -> RoomView:  # type: ignore[override]
        return self._run(self._hand_over, host_id, target_id)

    def _hand_over(self, host_id: int, target_id: int) -> RoomView:
        number = self._number_of(host_id)

        def change(state: RoomState | None) -> RoomState | None:
            if state is None or state["host_id"] != host_id:
                raise ApiError(ErrorCode.NOT_HOST)
            if target_id == host_id:
                raise ApiError(ErrorCode.BAD_REQUEST, "you are already the host")
            target = next((m for m in state["members"] if m["user_id"] == target_id), None)
            if target is None:
                raise ApiError(ErrorCode.NO_SUCH_MEMBER)
            if target["away"]:
                raise ApiError(ErrorCode.MEMBER_AWAY)
            state["host_id"] = target_id
            return state

        before, after = self._change(number, change)
        assert after is not None
        log.info("room %s: host passed from user=%d to user=%d", number, host_id, target_id)
        return self._on_reactor(self._tell, before, after, number) or RoomView(number, after["title"], public(after))

    def admit(self, host_id: int, target_id: int, admitted: bool) -> None:
        """The host lets somebody in from the waiting room, or refuses them."""
        self._run(self._admit, host_id, target_id, admitted)

    def _admit(self, host_id: int, target_id: int, admitted: bool) -> None:
        number = self._number_of(host_id)
        limit = self.config.room_max_members

        def change(state: RoomState | None) -> RoomState | None:
            if state is None or state["host_id"] != host_id:
                raise ApiError(ErrorCode.NOT_HOST)
            waiter = next((w for w in state["waiting"] if w["user_id"] == target_id), None)
            if waiter is None:
                raise ApiError(ErrorCode.NOT_WAITING)
            if admitted and len(state["members"]) >= limit:
                raise ApiError(ErrorCode.ROOM_FULL, limit=limit)
            state["waiting"].remove(waiter)
            if admitted:
                state["members"].append(self._waiter_as_member(waiter))
            return state

        before, after = self._change(number, change)
        self._on_reactor(lambda: self._tell(before, after, number,
                                            answer="" if admitted else "the host did not let you in"))

    @staticmethod
    def _waiter_as_member(waiter: dict[str, Any]) -> dict[str, Any]:
        return {"user_id": waiter["user_id"], "nickname": waiter["nickname"], "avatar": waiter.get("avatar", {}),
                "node": waiter["node"], "conn_id": waiter["conn_id"],
                "camera": False, "microphone": False, "screen": False, "away": False}

    def set_media_state(self, user_id: int, camera: bool, microphone: bool, screen: bool) -> RoomView:  # type: ignore[override]
        return self._run(self._set_media_state, user_id, camera, microphone, screen)

    def _set_media_state(self, user_id: int, camera: bool, microphone: bool, screen: bool) -> RoomView:
        number = self._number_of(user_id)

        def change(state: RoomState | None) -> RoomState | None:
            if state is None:
                raise ApiError(ErrorCode.NOT_IN_ROOM)
            member = next((m for m in state["members"] if m["user_id"] == user_id), None)
            if member is None:
                raise ApiError(ErrorCode.NOT_IN_ROOM)
            if (member["camera"], member["microphone"], member["screen"]) == (camera, microphone, screen):
                raise _Unchanged(state)
            member["camera"], member["microphone"], member["screen"] = camera, microphone, screen
            return state

        before, after = self._change(number, change)
        assert after is not None
        if after is before:
            return RoomView(number, after["title"], public(after))
        return self._on_reactor(self._tell, before, after, number) or RoomView(number, after["title"], public(after))

    # -- sessions coming and going (reactor thread -> room thread) --------------------------------------
    def session_started(self, conn: "Connection", replaced: bool) -> None:
        """A session (re)started on this node, after a drop or on another node: a member takes
        the place back, a waiting user's turn follows the new session."""
        self._queue(self._take_place_back, conn, replaced)

    def _take_place_back(self, conn: "Connection", replaced: bool) -> None:
        user_id = self._user(conn)
        try:      # one round trip for the (usual) user in no room and no waiting room
            numbers = self.client.mget(self.keys.user_room(user_id), self.keys.user_waiting(user_id))
        except UNREACHABLE as exc:
            raise unavailable(exc) from None
        for raw, field in zip(numbers, ("members", "waiting")):
            if raw is None:
                continue
            number = raw.decode()
            if field == "members":
                self._away_while_moving(number, user_id)

            def change(state: RoomState | None, field: str = field) -> RoomState | None:
                entry = next((e for e in state[field] if e["user_id"] == user_id), None) if state else None
                if entry is None:
                    raise _Unchanged(state)    # type: ignore[arg-type]
                entry.update(node=self.cluster.name, conn_id=conn.id, nickname=conn.nickname)
                if field == "members":
                    entry.update(away=False, away_until=0)
                return state

            before, after = self._change(number, change)
            if after is before:
                continue
            if field == "members":
                log.info("%s is back in room %s%s", conn.who, number, " (session replaced)" if replaced else "")
            self._on_reactor(self._tell, before, after, number)

    def _away_while_moving(self, number: str, user_id: int) -> None:
        """Room thread: a member whose session moved here while the room still shows it
        connected on another node (that node died, or the session there was taken over: the old
        connection is gone either way) is shown away first, as a member who drops out on one
        process, and then back by the change that follows. Place, host role and media state are
        kept, as in a grace period."""
        mine = self.cluster.name
        until = _now_ms() + int(self.config.room_grace * 1000)

        def change(state: RoomState | None) -> RoomState | None:
            entry = next((m for m in state["members"] if m["user_id"] == user_id), None) if state else None
            if entry is None or entry["away"] or entry["node"] == mine:
                raise _Unchanged(state)    # type: ignore[arg-type]
            log.info("user=%d moved to node %s from node %s: away in room %s until back", user_id, mine,
                     entry["node"], number)
            return _away(state, {user_id}, until, False, entry["node"])

        before, after = self._change(number, change)
        if after is not before:
            self._on_reactor(self._tell, before, after, number)

    def session_ended(self, conn: "Connection", reason: str, went_offline: bool) -> None:
        user_id = self._user(conn)
        if not went_offline:
            return                     # a session that moved keeps its place through the new one
        if user_id in self.waiting_for:
            self._queue(self._stop_waiting, user_id, conn.id)   # a user who comes back knocks again
        room = self.by_user.get(user_id)
        if room is None:
            return
        member = room.members.get(user_id)
        if member is None or member.conn is not conn:
            return
        log.info("%s dropped out of room %s (%s); place kept for %g s", conn.who, room.number, reason,
                 self.config.room_grace)
        self._queue(self._mark_away, room.number, {user_id}, False, self.cluster.name, conn.id)

    def _mark_away(self, number: str, users: set[int], hand_over: bool, node: str, conn_id: int = 0) -> None:
        """Room thread: members of ``node`` without a session (``conn_id``: only if the room
        still shows that connection): away until the grace is over; ``hand_over`` passes the
        host on at once if the host is among them (their node died). A member the room shows
        on another node (its session moved meanwhile) stays as it is."""
        until = _now_ms() + int(self.config.room_grace * 1000)
        before, after = self._change(number, lambda state: _away(state, users, until, hand_over, node, conn_id))
        if after is not before:
            self._on_reactor(self._tell, before, after, number)

    def _sweep_soon(self) -> None:
        """Reactor thread, every ``sweep`` seconds: remove the members whose grace is over."""
        if not self._sweeping:
            self._sweeping = True
            self._queue(self._sweep)

    def _sweep(self) -> None:
        """Room thread. Every node sweeps the rooms whose earliest grace ran out (a sorted set
        in Redis), so a grace outlives the node where the member dropped."""
        try:
            now = _now_ms()
            try:
                due = self.client.zrangebyscore(self.keys.room_graces, "-inf", now)
            except UNREACHABLE:
                return                              # logged by the lease thread; swept when Redis is back

            def change(state: RoomState | None) -> RoomState | None:
                if state is None:
                    return None
                over = {m["user_id"] for m in state["members"] if m["away"] and m.get("away_until", 0) <= now}
                if not over:
                    raise _Unchanged(state)
                log.info("users %s did not come back to room %s in time: removed", sorted(over), state["number"])
                return _without(state, over)

            for raw in due:
                number = raw.decode()
                before, after = self._change(number, change)
                if after is not before:
                    self._on_reactor(self._tell, before, after, number)
        finally:
            self._sweeping = False

    def _users_reaped(self, node: str, users: list[int]) -> None:
        """A dead node's users: away in their rooms (host handed over), removed after the
        grace; out of the waiting rooms."""
        self._queue(self._reaped, node, users)

    def _reaped(self, node: str, users: list[int]) -> None:
        by_room: dict[str, set[int]] = {}
        for user_id in users:
            self._stop_waiting(user_id)
            number = self._room_of_user(user_id)
            if number is not None:
                by_room.setdefault(number, set()).add(user_id)
        for number, members in by_room.items():
            log.info("room %s: members %s were on dead node %s", number, sorted(members), node)
            self._mark_away(number, members, True, node)

    def shutdown(self) -> None:
        """Reactor thread, the node stopping: its members are away (they reconnect to another
        node and take their place back); the rooms go on for the members of other nodes. The
        reactor serves nobody any more, so it makes these Redis calls itself (the room thread
        may be waiting for the reactor)."""
        mine = {room.number: {uid for uid, m in room.members.items() if m.node == self.cluster.name}  # type: ignore[attr-defined]
                for room in self.rooms.values()}
        waiting = list(self.waiting_for)
        node = self.cluster.name

        def away() -> list[tuple[RoomState | None, RoomState | None, str]]:
            changes = []
            for user_id in waiting:
                number = self._get(self.keys.user_waiting(user_id))
                if number is not None:
                    changes.append((*self._change(number, lambda s, u=user_id: _not_waiting(s, u)), number))
            until = _now_ms() + int(self.config.room_grace * 1000)
            for number, users in mine.items():
                if users:
                    changes.append((*self._change(number, lambda s, u=users: _away(s, u, until, True, node)), number))
            return changes

        try:
            changes = away()
        except ApiError as exc:
            log.warning("rooms not updated on shutdown (%s): the other nodes reap this one's members", exc.message)
            return
        for before, after, number in changes:
            self._tell(before, after, number)

    def _register_again(self) -> None:
        """Reactor thread: Redis lost the rooms (restarted empty): put back each room this node
        mirrors, as it last knew it (members, lock, host, waiting room), unless a node put back
        the same or a newer state."""
        self._queue(self._put_rooms_back, self._mirror_states())

    def _put_rooms_back(self, states: list[RoomState]) -> None:
        for state in states:
            number = state["number"]
            try:
                if not self._put_back(keys=[self.keys.room(number)],
                                      args=[json.dumps(state, separators=(",", ":")), state["version"]]):
                    continue
                pipe = self.client.pipeline(transaction=False)
                pipe.sadd(self.keys.rooms, number)
                for member in state["members"]:
                    pipe.set(self.keys.user_room(member["user_id"]), number)
                for waiter in state["waiting"]:
                    pipe.set(self.keys.user_waiting(waiter["user_id"]), number)
                graces = [m["away_until"] for m in state["members"] if m["away"]]
                if graces:
                    pipe.zadd(self.keys.room_graces, {number: min(graces)})
                pipe.execute()
            except UNREACHABLE as exc:
                log.warning("room %s not registered again (Redis unreachable: %s)", number, exc)
                return
            log.warning("room %s registered again with Redis (%d members, %d waiting)", number,
                        len(state["members"]), len(state["waiting"]))

    def _restore(self) -> None:
        """Nothing to read back from MySQL: Redis holds a cluster's rooms (and the nodes put
        them back from their mirrors after Redis lost them)."""

    def _touch(self) -> None:
        """Every ``room_keep / 4`` seconds (the rooms are not kept in MySQL in a cluster): forget
        the versions of rooms this node has had no users in for a while."""
        old = time.monotonic() - FORGET_AFTER
        for number in [n for n, since in self._dropped.items() if since < old]:
            del self._dropped[number]
            if number not in self.rooms and number not in self.waiting_for.values():
                self.versions.pop(number, None)

    def status(self) -> dict[str, Any]:
        return {"rooms": len(self.rooms), "room_members": len(self.by_user), "room_waiting": len(self.waiting_for)}


class _Unchanged(Exception):
    """A change that would change nothing (no write, no event)."""

    def __init__(self, state: RoomState) -> None:
        super().__init__()
        self.state = state


def _loaded(raw: bytes | None) -> RoomState | None:
    if not raw:
        return None
    state = json.loads(raw)
    state.setdefault("waiting", [])
    return state


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


def _away(state: RoomState | None, users: set[int], until_ms: int, hand_over: bool, node: str,
          conn_id: int = 0) -> RoomState | None:
    """Those of ``users`` the room shows on ``node`` (through connection ``conn_id``, if given) are
    away until ``until_ms`` (wall clock) unless they come back; ``hand_over``: the host among
    them passes the role on at once. Raises _Unchanged if none of them is."""
    if state is None:
        return None
    marked = {m["user_id"] for m in state["members"] if m["user_id"] in users and m["node"] == node
               and (not conn_id or m["conn_id"] == conn_id)}
    if not marked:
        raise _Unchanged(state)
    for m in state["members"]:
        if m["user_id"] in marked:
            m["away"], m["away_until"] = True, until_ms
    if hand_over and state["host_id"] in marked:
        state["host_id"] = _next_host(state)
    return state


def _now_ms() -> int:
    return int(time.time() * 1000)


def _not_waiting(state: RoomState | None, user_id: int) -> RoomState | None:
    if state is not None:
        state["waiting"] = [w for w in state["waiting"] if w["user_id"] != user_id]
    return state
