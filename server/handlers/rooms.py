"""Meeting room packets (types 80-99): create, join, leave, host controls (kick, mute, lock,
end, hand over, waiting room), room chat, media state.

Inline on the reactor thread for one process: rooms live in memory (server/rooms.py); their
durable copy is written by the room keeper's own thread, so nothing here blocks. In a cluster
the registry (server/cluster/rooms.py) waits for Redis, so every handler that changes a room or
spends a shared limit runs on the worker pool (``rooms.blocking``); room chat stays inline.
Creating, joining and room chat spend the user's rate-limit tokens (server/ratelimit.py).
"""
from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING

from common import limits, messages
from common.errors import ApiError, ErrorCode
from common.packets import PacketType

from ..mediator import Request, Routes
from ..rooms import NUMBER_DIGITS

if TYPE_CHECKING:
    from ..ratelimit import RateLimits
    from ..rooms import RoomRegistry


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" for ch in text)


def room_title(body: messages.RoomCreate) -> str:
    title = (body.title or "").strip()
    if _has_control(title):
        raise ApiError(ErrorCode.BAD_REQUEST, "the title must not contain control characters")
    return title


def room_number(body: messages.RoomJoin) -> str:
    number = body.number.replace(" ", "").replace("-", "")
    if not (number.isascii() and number.isdigit() and len(number) == NUMBER_DIGITS):
        raise ApiError(ErrorCode.NO_SUCH_ROOM, f"a meeting number has {NUMBER_DIGITS} digits")
    return number


def chat_text(body: messages.RoomChat) -> str:
    text = body.text
    if len(text.encode("utf-8")) > limits.MAX_CHAT_BYTES:
        raise ApiError(ErrorCode.MESSAGE_TOO_LONG)
    if not text.strip():
        raise ApiError(ErrorCode.BAD_REQUEST, "the message is empty")
    return text


class RoomsHandler:
    def __init__(self, rooms: "RoomRegistry", rate_limits: "RateLimits") -> None:
        self.rooms = rooms
        self.rate_limits = rate_limits

    def routes(self) -> Routes:
        return rooms_routes(self.rooms, self.rate_limits)


def rooms_routes(rooms: "RoomRegistry", rate_limits: "RateLimits") -> Routes:
    routes = Routes()
    handler = routes.handler

    @handler(PacketType.ROOM_CREATE, blocking=rooms.blocking)
    def create(req: Request) -> dict:
        rate_limits.room_create(req.user_id)
        title = room_title(req.body)
        return {"room": rooms.create(req.conn, title, req.body.password or "").public()}

    @handler(PacketType.ROOM_JOIN, blocking=rooms.blocking)
    def join(req: Request) -> dict:
        rate_limits.room_join(req.user_id, req.conn.address)   # every attempt counts: slows guessing
        number = room_number(req.body)
        room, waiting = rooms.join(req.conn, number, req.body.password or "")
        if waiting:
            return {"waiting": True, "number": room.number, "title": room.title}
        return {"room": room.public()}

    @handler(PacketType.ROOM_LEAVE, blocking=rooms.blocking)
    def leave(req: Request) -> dict:
        rooms.leave(req.user_id)
        return {}

    @handler(PacketType.ROOM_KICK, blocking=rooms.blocking)
    def kick(req: Request) -> dict:
        rate_limits.room_control(req.user_id)
        rooms.kick(req.user_id, req.body.user_id)
        return {}

    @handler(PacketType.ROOM_MUTE, blocking=rooms.blocking)
    def mute(req: Request) -> dict:
        rate_limits.room_control(req.user_id)
        rooms.mute(req.user_id, req.body.user_id)
        return {}

    @handler(PacketType.ROOM_LOCK, blocking=rooms.blocking)
    def lock(req: Request) -> dict:
        rate_limits.room_control(req.user_id)
        return {"room": rooms.lock(req.user_id, req.body.locked).public()}

    @handler(PacketType.ROOM_END, blocking=rooms.blocking)
    def end(req: Request) -> dict:
        rooms.end(req.user_id)
        return {}

    @handler(PacketType.ROOM_HOST, blocking=rooms.blocking)
    def hand_over(req: Request) -> dict:
        return {"room": rooms.hand_over(req.user_id, req.body.user_id).public()}

    @handler(PacketType.ROOM_ADMIT, blocking=rooms.blocking)
    def admit(req: Request) -> dict:
        rooms.admit(req.user_id, req.body.user_id, req.body.admit)
        return {}

    @handler(PacketType.ROOM_CHAT)
    def chat(req: Request) -> dict:
        text = chat_text(req.body)
        rate_limits.message(req.user_id)
        return {"time": rooms.chat(req.conn, text)}

    @handler(PacketType.MEDIA_STATE, blocking=rooms.blocking)
    def media_state(req: Request) -> dict:
        rate_limits.media_state(req.user_id)
        body: messages.MediaState = req.body
        room = rooms.set_media_state(req.user_id, body.camera, body.microphone, body.screen)
        return {"room": room.public()}

    return routes
