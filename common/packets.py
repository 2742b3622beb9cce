"""Packet types: the number on the wire, the body kind and the largest body accepted.

Types are grouped by domain in ranges of 20 so a domain can grow without renumbering.
docs/PROTOCOL.md describes each one's fields and direction.
"""
from __future__ import annotations

import enum

from . import limits


class PacketType(enum.IntEnum):
    # session (1-19)
    HELLO = 1
    HEARTBEAT = 2
    RESULT = 3
    ERROR = 4
    REGISTER = 5
    LOGIN = 6
    RESUME = 7
    LOGOUT = 8
    KICKED = 9
    GOING_AWAY = 10
    # friends and profiles (20-39)
    USER_SEARCH = 20
    FRIEND_REQUEST = 21
    FRIEND_REQUEST_EVENT = 22
    FRIEND_ANSWER = 23
    FRIEND_ANSWER_EVENT = 24
    FRIEND_LIST = 25
    FRIEND_REMOVE = 26
    FRIEND_REMOVED_EVENT = 27
    FRIEND_ADDED_EVENT = 28
    FRIEND_ONLINE = 29
    FRIEND_OFFLINE = 30
    PROFILE_UPDATE = 31
    AVATAR_UPLOAD = 32
    AVATAR_GET = 33
    PROFILE_CHANGED_EVENT = 34
    FRIEND_REQUESTS = 35
    # chat (40-59)
    CHAT_SEND = 40
    CHAT_MESSAGE_EVENT = 41
    CHAT_DELIVERED = 42
    CHAT_READ = 43
    CHAT_STATUS_EVENT = 44
    CHAT_HISTORY = 45
    TYPING = 46
    TYPING_EVENT = 47
    CHAT_UNREAD = 48
    # files (60-79)
    FILE_OFFER = 60
    FILE_OFFER_EVENT = 61
    FILE_ANSWER = 62
    FILE_ANSWER_EVENT = 63
    FILE_CHUNK = 64
    FILE_ACK = 65
    FILE_CANCEL = 66
    FILE_CANCEL_EVENT = 67
    FILE_DONE_EVENT = 68
    FILE_RESUME = 69
    FILE_PENDING = 70
    FILE_PULL_EVENT = 71
    # rooms (80-99)
    ROOM_CREATE = 80
    ROOM_JOIN = 81
    ROOM_LEAVE = 82
    ROOM_MEMBERS_EVENT = 83
    ROOM_KICK = 84
    ROOM_MUTE = 85
    ROOM_MUTE_EVENT = 86
    ROOM_LOCK = 87
    ROOM_CHAT = 88
    ROOM_CHAT_EVENT = 89
    ROOM_REMOVED_EVENT = 90
    MEDIA_STATE = 91
    ROOM_END = 92
    ROOM_HOST = 93
    ROOM_WAITING_EVENT = 94
    ROOM_ADMIT = 95
    ROOM_ADMIT_EVENT = 96
    # media (100-119)
    MEDIA_FRAME = 100
    KEYFRAME_REQUEST = 101
    KEYFRAME_REQUEST_EVENT = 102
    MEDIA_SUBSCRIBE = 103
    MEDIA_STATS = 104


BINARY_TYPES = frozenset({PacketType.AVATAR_UPLOAD, PacketType.FILE_CHUNK, PacketType.MEDIA_FRAME})

# Fixed binary sub-headers of the binary packets (see docs/PROTOCOL.md).
FILE_CHUNK_HEADER_SIZE = 16 + 8       # transfer id (16 bytes) + offset (u64)
MEDIA_HEADER_SIZE = 4 + 1 + 1 + 1 + 4 + 8  # user id, kind, codec, flags, seq, capture time

_MAX_BODY: dict[int, int] = {
    PacketType.AVATAR_UPLOAD: limits.MAX_AVATAR_FRAME,
    PacketType.FILE_CHUNK: FILE_CHUNK_HEADER_SIZE + limits.MAX_FILE_CHUNK,
    PacketType.MEDIA_FRAME: MEDIA_HEADER_SIZE + limits.MAX_MEDIA_PAYLOAD,
}


def max_body(packet_type: int) -> int:
    """Largest body accepted for a type; unknown types get the control limit."""
    return _MAX_BODY.get(packet_type, limits.MAX_CONTROL_BODY)


def type_name(packet_type: int) -> str:
    try:
        return PacketType(packet_type).name
    except ValueError:
        return f"UNKNOWN({packet_type})"
