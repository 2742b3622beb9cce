"""Meeting room packets (types 80-99): create, join, leave, host controls (kick, mute, lock,
end, hand over, waiting room), room chat, media state.

All inline on the reactor thread: rooms live in memory (server/rooms.py); their durable copy is
written by the room keeper's own thread, so nothing here blocks.
Creating, joining and room chat spend the user's rate-limit tokens (server/ratelimit.py).
"""
from __future__ import annotations

import unicodedata
from typing import TYPE_CHECKING

from common import limits
from common.errors import ApiError, ErrorCode
from common.fields import get_bool, get_int, get_str
from common.packets import PacketType

from ..mediator import Request
from ..room_keeper import RoomKeeper
from ..rooms import NUMBER_DIGITS, RoomRegistry

if TYPE_CHECKING:
    from ..app import Server

TITLE_MAX = 64
ROOM_PASSWORD_MAX = 64
USER_ID_MAX = 2 ** 31 - 1


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" for ch in text)


def room_title(body: dict) -> str:
    title = get_str(body, "title", "", max_len=TITLE_MAX).strip()
    if _has_control(title):
        raise ApiError(ErrorCode.BAD_REQUEST, "the title must not contain control characters")
    return title


def room_number(body: dict) -> str:
    number = get_str(body, "number", max_len=32).replace(" ", "").replace("-", "")
    if not (number.isascii() and number.isdigit() and len(number) == NUMBER_DIGITS):
        raise ApiError(ErrorCode.NO_SUCH_ROOM, f"a meeting number has {NUMBER_DIGITS} digits")
    return number


def chat_text(body: dict) -> str:
    text = get_str(body, "text", max_len=limits.MAX_CHAT_BYTES * 4)
    if len(text.encode("utf-8")) > limits.MAX_CHAT_BYTES:
        raise ApiError(ErrorCode.MESSAGE_TOO_LONG)
    if not text.strip():
        raise ApiError(ErrorCode.BAD_REQUEST, "the message is empty")
    return text


def install(server: "Server") -> None:
    rooms = RoomRegistry(server, RoomKeeper(server.storage))
    server.rooms = rooms          # type: ignore[attr-defined]  # the media handlers and tests use it
    handler = server.mediator.handler

    @handler(PacketType.ROOM_CREATE)
    def create(req: Request) -> dict:
        server.rate_limits.room_create(req.user_id)
        title = room_title(req.body)
        password = get_str(req.body, "password", "", max_len=ROOM_PASSWORD_MAX)
        return {"room": rooms.create(req.conn, title, password).public()}

    @handler(PacketType.ROOM_JOIN)
    def join(req: Request) -> dict:
        server.rate_limits.room_join(req.user_id, req.conn.address)   # every attempt counts: slows guessing
        number = room_number(req.body)
        password = get_str(req.body, "password", "", max_len=ROOM_PASSWORD_MAX)
        room, waiting = rooms.join(req.conn, number, password)
        if waiting:
            return {"waiting": True, "number": room.number, "title": room.title}
        return {"room": room.public()}

    @handler(PacketType.ROOM_LEAVE)
    def leave(req: Request) -> dict:
        rooms.leave(req.user_id)
        return {}

    @handler(PacketType.ROOM_KICK)
    def kick(req: Request) -> dict:
        server.rate_limits.room_control(req.user_id)
        rooms.kick(req.user_id, get_int(req.body, "user_id", hi=USER_ID_MAX))
        return {}

    @handler(PacketType.ROOM_MUTE)
    def mute(req: Request) -> dict:
        server.rate_limits.room_control(req.user_id)
        rooms.mute(req.user_id, get_int(req.body, "user_id", None, hi=USER_ID_MAX))
        return {}

    @handler(PacketType.ROOM_LOCK)
    def lock(req: Request) -> dict:
        server.rate_limits.room_control(req.user_id)
        return {"room": rooms.lock(req.user_id, get_bool(req.body, "locked")).public()}

    @handler(PacketType.ROOM_END)
    def end(req: Request) -> dict:
        rooms.end(req.user_id)
        return {}

    @handler(PacketType.ROOM_HOST)
    def hand_over(req: Request) -> dict:
        return {"room": rooms.hand_over(req.user_id, get_int(req.body, "user_id", hi=USER_ID_MAX)).public()}

    @handler(PacketType.ROOM_ADMIT)
    def admit(req: Request) -> dict:
        rooms.admit(req.user_id, get_int(req.body, "user_id", hi=USER_ID_MAX), get_bool(req.body, "admit"))
        return {}

    @handler(PacketType.ROOM_CHAT)
    def chat(req: Request) -> dict:
        text = chat_text(req.body)
        server.rate_limits.message(req.user_id)
        return {"time": rooms.chat(req.conn, text)}

    @handler(PacketType.MEDIA_STATE)
    def media_state(req: Request) -> dict:
        server.rate_limits.media_state(req.user_id)
        body = req.body
        room = rooms.set_media_state(req.user_id, get_bool(body, "camera"), get_bool(body, "microphone"),
                                     get_bool(body, "screen"))
        return {"room": room.public()}
