"""Meeting rooms: live membership kept in memory on the reactor thread.

A room exists while somebody is in it and is gone when the last member leaves (or the host
ends it). Everything runs on the reactor thread (inline handlers and session hooks), which makes
the state free of locks. Each change is handed to the room keeper (server/room_keeper.py), which
writes it to the database on its own thread, so a meeting survives a restart or a crash: at
start the rooms seen less than ``room_keep`` seconds ago come back with every member away, and
each member has ``room_keep`` seconds to take the place back (by RESUME, login or ROOM_JOIN).

Rules worth knowing:

* The number is 9 random digits from ``secrets`` (not sequential), so rooms cannot be found by
  counting; a password can be added on top.
* Members are kept in join order; when the host leaves, the earliest remaining member who is
  connected becomes host (the earliest of all if nobody is connected).
* A member whose connection drops keeps the place for ``room_grace`` seconds (shown as
  ``away``); a session that comes back within that time (RESUME, or a login elsewhere that
  replaces the old session) takes the place back without asking. Places kept count toward
  ``room_max_members``.
* The relay (server/relay.py) follows membership through the hook lists ``on_connected``,
  ``on_gone``, ``on_media_state`` and ``on_closed``.
"""
from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from common import frame as wire
from common.errors import ApiError, ErrorCode
from common.packets import PacketType

from .clock import now_ms
from .passwords import ScryptParams, hash_password, verify_password
from .room_keeper import RoomKeeper
from .storage import StoredRoom

if TYPE_CHECKING:
    from .config import ServerConfig
    from .connection import Connection
    from .reactor import Reactor, Timer
    from .router import Router
    from .sessions import Sessions

log = logging.getLogger("server.rooms")

NUMBER_DIGITS = 9
MEDIA_STATE_COALESCE = 0.1   # seconds: media-state changes within this go to the room as one event
WAITING_MAX = 50                      # people in one waiting room at a time
ROOM_PASSWORD_PARAMS = ScryptParams(n=2 ** 11)


def new_room_number(taken: dict[str, Any]) -> str:
    """Nine random digits (no leading zero) that no live room uses."""
    while True:
        number = str(secrets.randbelow(9 * 10 ** (NUMBER_DIGITS - 1)) + 10 ** (NUMBER_DIGITS - 1))
        if number not in taken:
            return number


@dataclass(eq=False)
class Member:
    user_id: int
    nickname: str
    conn: "Connection | None"
    avatar: dict = field(default_factory=dict)      # {"builtin", "version"}
    camera: bool = False
    microphone: bool = False
    screen: bool = False
    grace: "Timer | None" = None

    def public(self, host_id: int) -> dict[str, Any]:
        return {"user_id": self.user_id, "nickname": self.nickname, "avatar": self.avatar, "camera": self.camera,
                "microphone": self.microphone, "screen": self.screen, "host": self.user_id == host_id,
                "away": self.conn is None}


@dataclass(eq=False)
class Waiting:
    user_id: int
    nickname: str

    def public(self) -> dict[str, Any]:
        return {"user_id": self.user_id, "nickname": self.nickname}


@dataclass(eq=False)
class Room:
    number: str
    title: str
    password_hash: str                # "" for no password
    host_id: int
    locked: bool = False
    created_at: int = field(default_factory=now_ms)
    members: dict[int, Member] = field(default_factory=dict)   # in join order
    waiting: dict[int, Waiting] = field(default_factory=dict)  # in arrival order

    @property
    def room_id(self) -> int:
        """The router's key for this room."""
        return int(self.number)

    def connected_ids(self) -> list[int]:
        return [m.user_id for m in self.members.values() if m.conn is not None]

    def public(self) -> dict[str, Any]:
        return {"number": self.number, "title": self.title, "host_id": self.host_id, "locked": self.locked,
                "has_password": bool(self.password_hash),
                "members": [m.public(self.host_id) for m in self.members.values()]}

    def stored(self) -> StoredRoom:
        return StoredRoom(self.number, self.title, self.password_hash, self.host_id, self.locked,
                          tuple((m.user_id, m.nickname) for m in self.members.values()), self.created_at, now_ms())


RoomHook = Callable[[Room], None]
MemberHook = Callable[[Room, Member], None]


class RoomRegistry:
    """Every live room. Reactor thread only."""

    blocking = False     # the room handlers run inline (a cluster's registry waits for Redis: True)

    def __init__(self, config: "ServerConfig", reactor: "Reactor", router: "Router", sessions: "Sessions",
                 keeper: RoomKeeper) -> None:
        self.config = config
        self.reactor = reactor
        self.router = router
        self.sessions = sessions
        self.keeper = keeper
        self.rooms: dict[str, Room] = {}
        self.by_user: dict[int, Room] = {}
        self.waiting_by_user: dict[int, Room] = {}
        self.on_connected: list[MemberHook] = []          # joined, or came back on a new connection
        self.on_gone: list[MemberHook] = []               # left, removed, or the grace period ran out
        self.on_media_state: list[MemberHook] = []        # camera/microphone/screen changed
        self.on_closed: list[RoomHook] = []               # the last member is gone
        self._members_event_due: set[str] = set()         # rooms with a coalesced event pending
        reactor.call_soon(self._restore)     # once serving: the schema has been checked
        reactor.call_every(config.room_keep / 4, self._touch)

    # -- lookups -----------------------------------------------------------------------------------
    def require_room(self, user_id: int) -> Room:
        room = self.by_user.get(user_id)
        if room is None:
            raise ApiError(ErrorCode.NOT_IN_ROOM)
        return room

    def require_host(self, user_id: int) -> Room:
        room = self.require_room(user_id)
        if room.host_id != user_id:
            raise ApiError(ErrorCode.NOT_HOST)
        return room

    def router_members(self, room_id: int) -> list[int]:
        room = self.rooms.get(str(room_id))
        return room.connected_ids() if room is not None else []

    def status(self) -> dict[str, Any]:
        return {"rooms": len(self.rooms), "room_members": len(self.by_user),
                "room_waiting": len(self.waiting_by_user)}

    # -- joining and leaving -----------------------------------------------------------------------
    def create(self, conn: "Connection", title: str, password: str) -> Room:
        user_id = self._user(conn)
        self._not_in_a_room(user_id)
        self._stop_waiting(user_id)
        password_hash = hash_password(password, ROOM_PASSWORD_PARAMS) if password else ""
        room = Room(new_room_number(self.rooms), title, password_hash, host_id=user_id)
        self.rooms[room.number] = room
        log.info("%s created room %s%s", conn.who, room.number, " with a password" if password else "")
        self._add(room, conn)
        return room

    def join(self, conn: "Connection", number: str, password: str) -> tuple[Room, bool]:
        """In the room, or (locked) in its waiting room: returns (room, waiting)."""
        user_id = self._user(conn)
        self._not_in_a_room(user_id)
        room = self.rooms.get(number)
        if room is None:
            raise ApiError(ErrorCode.NO_SUCH_ROOM)
        if room.password_hash and not verify_password(password, room.password_hash):
            raise ApiError(ErrorCode.WRONG_ROOM_PASSWORD)
        self._stop_waiting(user_id)
        if room.locked:
            self._wait(room, conn)
            return room, True
        self._check_space(room)
        log.info("%s joined room %s", conn.who, room.number)
        self._add(room, conn)
        return room, False

    def leave(self, user_id: int) -> None:
        """Leave the room, or stop waiting to be let in."""
        if self._stop_waiting(user_id):
            return
        room = self.require_room(user_id)
        log.info("user=%d left room %s", user_id, room.number)
        self._remove(room, user_id)

    def _check_space(self, room: Room) -> None:
        if len(room.members) >= self.config.room_max_members:
            raise ApiError(ErrorCode.ROOM_FULL, limit=self.config.room_max_members)

    def _user(self, conn: "Connection") -> int:
        assert conn.user_id is not None
        return conn.user_id

    def _not_in_a_room(self, user_id: int) -> None:
        room = self.by_user.get(user_id)
        if room is not None:
            raise ApiError(ErrorCode.ALREADY_IN_ROOM, number=room.number)

    def _add(self, room: Room, conn: "Connection") -> None:
        """All or nothing: if telling the room or a hook fails, the member is taken out again
        (and a room just created is closed), so nobody is left in a room nobody announced."""
        user_id = self._user(conn)
        member = Member(user_id, conn.nickname, conn, conn.avatar)
        room.members[user_id] = member
        self.by_user[user_id] = room
        self.keeper.save(room.stored())
        try:
            self.broadcast_members(room)
            for hook in self.on_connected:
                hook(room, member)
        except Exception:
            log.warning("%s could not be added to room %s: undone", conn.who, room.number)
            self._remove(room, user_id)
            raise

    def _remove(self, room: Room, user_id: int) -> None:
        member = room.members.pop(user_id)
        if member.grace is not None:
            member.grace.cancel()
        self.by_user.pop(user_id, None)
        for hook in self.on_gone:
            hook(room, member)
        if not room.members:
            self._close(room)
            return
        if room.host_id == user_id:
            connected = [m for m in room.members.values() if m.conn is not None]
            self._set_host(room, (connected or list(room.members.values()))[0].user_id)
        self.keeper.save(room.stored())
        self.broadcast_members(room)

    def _set_host(self, room: Room, user_id: int) -> None:
        log.info("room %s: host passed from user=%d to user=%d", room.number, room.host_id, user_id)
        room.host_id = user_id
        if room.waiting:
            self._send_waiting(room)

    def _close(self, room: Room) -> None:
        self.rooms.pop(room.number, None)
        self.keeper.forget(room.number)
        for waiting in list(room.waiting.values()):
            self._answer_waiting(room, waiting, False, "the meeting ended")
        log.info("room %s closed", room.number)
        for hook in self.on_closed:
            hook(room)

    # -- host controls -----------------------------------------------------------------------------
    def _target(self, room: Room, user_id: int) -> Member:
        member = room.members.get(user_id)
        if member is None:
            raise ApiError(ErrorCode.NO_SUCH_MEMBER)
        return member

    def kick(self, host_id: int, target_id: int) -> None:
        room = self.require_host(host_id)
        if target_id == host_id:
            raise ApiError(ErrorCode.BAD_REQUEST, "the host cannot remove themselves: leave instead")
        self._target(room, target_id)
        log.info("user=%d removed user=%d from room %s", host_id, target_id, room.number)
        self.router.event_to_user(target_id, PacketType.ROOM_REMOVED_EVENT, {
            "number": room.number, "reason": "kicked", "by": host_id,
            "message": "the host removed you from the meeting"})
        self._remove(room, target_id)

    def mute(self, host_id: int, target_id: int | None) -> None:
        room = self.require_host(host_id)
        event = {"number": room.number, "by": host_id, "all": target_id is None}
        if target_id is None:
            targets = [uid for uid in room.members if uid != host_id]
        else:
            targets = [self._target(room, target_id).user_id]
        self.router.event_to_users(targets, PacketType.ROOM_MUTE_EVENT, event)

    def lock(self, host_id: int, locked: bool) -> Room:
        room = self.require_host(host_id)
        if room.locked != locked:
            room.locked = locked
            log.info("user=%d %s room %s", host_id, "locked" if locked else "unlocked", room.number)
            self.keeper.save(room.stored())
            self.broadcast_members(room)
            if not locked:
                for waiting in list(room.waiting.values()):
                    self._answer_waiting(room, waiting, True, "the meeting was unlocked")
        return room

    def end(self, host_id: int) -> None:
        """The host ends the meeting for everyone."""
        room = self.require_host(host_id)
        log.info("user=%d ended room %s for all %d members", host_id, room.number, len(room.members))
        self.router.event_to_users([uid for uid in room.members if uid != host_id],
                                   PacketType.ROOM_REMOVED_EVENT, {
            "number": room.number, "reason": "ended", "by": host_id, "message": "the host ended the meeting"})
        self._clear(room)

    def hand_over(self, host_id: int, target_id: int) -> Room:
        """The host makes another (connected) member the host."""
        room = self.require_host(host_id)
        if target_id == host_id:
            raise ApiError(ErrorCode.BAD_REQUEST, "you are already the host")
        if self._target(room, target_id).conn is None:
            raise ApiError(ErrorCode.MEMBER_AWAY)
        self._set_host(room, target_id)
        self.keeper.save(room.stored())
        self.broadcast_members(room)
        return room

    def admit(self, host_id: int, target_id: int, admitted: bool) -> None:
        """The host lets somebody in from the waiting room, or refuses them."""
        room = self.require_host(host_id)
        waiting = room.waiting.get(target_id)
        if waiting is None:
            raise ApiError(ErrorCode.NOT_WAITING)
        if admitted:
            self._check_space(room)
        self._answer_waiting(room, waiting, admitted, "" if admitted else "the host did not let you in")

    # -- the waiting room ------------------------------------------------------------------------
    def _wait(self, room: Room, conn: "Connection") -> None:
        user_id = self._user(conn)
        if len(room.waiting) >= WAITING_MAX:
            raise ApiError(ErrorCode.ROOM_FULL, "too many people are waiting to join this meeting",
                           limit=WAITING_MAX)
        room.waiting[user_id] = Waiting(user_id, conn.nickname)
        self.waiting_by_user[user_id] = room
        log.info("%s is waiting to be let into locked room %s", conn.who, room.number)
        self._send_waiting(room)

    def _stop_waiting(self, user_id: int) -> bool:
        room = self.waiting_by_user.pop(user_id, None)
        if room is None:
            return False
        room.waiting.pop(user_id, None)
        self._send_waiting(room)
        return True

    def _answer_waiting(self, room: Room, waiting: Waiting, admitted: bool, message: str) -> None:
        user_id = waiting.user_id
        room.waiting.pop(user_id, None)
        self.waiting_by_user.pop(user_id, None)
        conn = self.sessions.get(user_id)
        event: dict[str, Any] = {"number": room.number, "admitted": False, "message": message}
        if admitted and conn is not None and user_id not in self.by_user and room.number in self.rooms:
            log.info("%s was let into room %s", conn.who, room.number)
            self._add(room, conn)
            event.update(admitted=True, room=room.public())
        else:
            log.info("user=%d was not let into room %s: %s", user_id, room.number, message or "gone")
        self.router.event_to_user(user_id, PacketType.ROOM_ADMIT_EVENT, event)
        if room.number in self.rooms:
            self._send_waiting(room)

    def _send_waiting(self, room: Room) -> None:
        """The host sees who is waiting (the list, whole, each time it changes)."""
        self.router.event_to_user(room.host_id, PacketType.ROOM_WAITING_EVENT, {
            "number": room.number, "waiting": [w.public() for w in room.waiting.values()]})

    # -- members' own actions --------------------------------------------------------------------
    def chat(self, conn: "Connection", text: str) -> int:
        user_id = self._user(conn)
        room = self.require_room(user_id)
        sent = now_ms()
        self.router.to_room(room.room_id, wire.encode_json(PacketType.ROOM_CHAT_EVENT, {
            "number": room.number, "user_id": user_id, "nickname": conn.nickname, "text": text, "time": sent}))
        return sent

    def set_media_state(self, user_id: int, camera: bool, microphone: bool, screen: bool) -> Room:
        room = self.require_room(user_id)
        member = room.members[user_id]
        if (member.camera, member.microphone, member.screen) != (camera, microphone, screen):
            member.camera, member.microphone, member.screen = camera, microphone, screen
            for hook in self.on_media_state:
                hook(room, member)
            self._broadcast_members_soon(room)
        return room

    def _broadcast_members_soon(self, room: Room) -> None:
        """One ROOM_MEMBERS_EVENT for every media-state change within MEDIA_STATE_COALESCE."""
        if room.number in self._members_event_due:
            return
        self._members_event_due.add(room.number)

        def due() -> None:
            self._members_event_due.discard(room.number)
            if self.rooms.get(room.number) is room:
                self.broadcast_members(room)
        self.reactor.call_later(MEDIA_STATE_COALESCE, due)

    def broadcast_members(self, room: Room) -> None:
        self.router.to_room(room.room_id, wire.encode_json(PacketType.ROOM_MEMBERS_EVENT,
                                                                  {"room": room.public()}))

    # -- sessions coming and going -----------------------------------------------------------------
    def session_started(self, conn: "Connection", replaced: bool) -> None:
        """A session of a member (re)started: RESUME within the grace period, or a login
        elsewhere that replaced the old session. The member gets the place back."""
        room = self.by_user.get(self._user(conn))
        if room is None:
            return
        member = room.members[conn.user_id]
        if member.grace is not None:
            member.grace.cancel()
            member.grace = None
        member.conn = conn
        member.nickname = conn.nickname
        member.avatar = conn.avatar
        log.info("%s is back in room %s%s", conn.who, room.number, " (session replaced)" if replaced else "")
        self.broadcast_members(room)
        if room.host_id == member.user_id and room.waiting:
            self._send_waiting(room)
        for hook in self.on_connected:
            hook(room, member)

    def session_ended(self, conn: "Connection", reason: str, went_offline: bool) -> None:
        user_id = self._user(conn)
        if went_offline:
            self._stop_waiting(user_id)     # a waiting user who comes back joins the queue again
        room = self.by_user.get(user_id)
        if room is None:
            return
        member = room.members[user_id]
        if member.conn is not conn:
            return                     # a newer session already holds the place
        if not went_offline:
            member.conn = self.sessions.get(user_id)   # replaced, not dropped
            return
        member.conn = None
        grace = self.config.room_grace
        member.grace = self.reactor.call_later(grace, self._grace_over, room, member)
        log.info("%s dropped out of room %s (%s); place kept for %g s", conn.who, room.number, reason, grace)
        self.broadcast_members(room)

    def _grace_over(self, room: Room, member: Member) -> None:
        member.grace = None
        if room.members.get(member.user_id) is member and member.conn is None:
            log.info("user=%d did not come back to room %s in time: removed", member.user_id, room.number)
            self._remove(room, member.user_id)

    def _clear(self, room: Room) -> None:
        """Everyone out, and the room closed (the members were told why)."""
        for member in list(room.members.values()):
            if member.grace is not None:
                member.grace.cancel()
            self.by_user.pop(member.user_id, None)
        gone = list(room.members.values())
        room.members.clear()
        for member in gone:
            for hook in self.on_gone:
                hook(room, member)
        self._close(room)

    # -- across restarts -----------------------------------------------------------------------------
    def _touch(self) -> None:
        self.keeper.touch(list(self.rooms), now_ms())

    def _restore(self) -> None:
        """At start: the rooms the previous run held (less than ``room_keep`` ago) come back
        with every member away; each member has ``room_keep`` seconds to take the place back."""
        keep = self.config.room_keep
        try:
            stored = self.keeper.take(now_ms() - int(keep * 1000))
        except Exception:
            log.exception("could not read the meetings kept from the last run")
            return
        for saved in stored:
            if saved.number in self.rooms or not saved.members:
                continue
            room = Room(saved.number, saved.title, saved.password_hash, saved.host_id, saved.locked,
                        saved.created_at)
            for user_id, nickname in saved.members:
                if user_id in self.by_user:
                    continue
                member = Member(user_id, nickname, None)
                member.grace = self.reactor.call_later(keep, self._grace_over, room, member)
                room.members[user_id] = member
                self.by_user[user_id] = room
            self.rooms[room.number] = room
        if stored:
            log.info("restored %d meeting rooms from the last run; members have %g s to come back",
                     len(self.rooms), keep)

    def shutdown(self) -> None:
        """The server is stopping: the rooms stay stored for the next run (the members come
        back after their reconnect); pending writes are flushed before the storage closes."""
        self.keeper.touch(list(self.rooms), now_ms())
        self.keeper.close()
