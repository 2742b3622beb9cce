"""One body per JSON request type, shared by the message-layer tests (each decodes and encodes
back to the same JSON) and the hostile-input tests (lone surrogates put in each, floods of each).

Each is what a logged-in client could send: valid on the wire and not refused as BAD_REQUEST by
the server, since a BAD_REQUEST counts as a protocol violation and a flood of them gets the
connection closed (a FILE_PENDING ``after`` naming no transfer is one).
"""
from __future__ import annotations

from common.packets import PacketType as P

TID = "9f2c" * 8

REQUEST_SAMPLES: dict[int, dict] = {
    P.HELLO: {"version": 1, "client": "test/1"},
    P.HEARTBEAT: {},
    P.REGISTER: {"phone": "5550001", "password": "password1", "nickname": "Ann"},
    P.LOGIN: {"phone": "5550001", "password": "password1"},
    P.RESUME: {"token": "abc"},
    P.LOGOUT: {},
    P.USER_SEARCH: {"phone": "5550001"},
    P.FRIEND_REQUEST: {"phone": "5550001", "greeting": "hi"},
    P.FRIEND_ANSWER: {"request_id": 4, "accept": True},
    P.FRIEND_LIST: {"after": 0},
    P.FRIEND_REMOVE: {"user_id": 3},
    P.PROFILE_UPDATE: {"nickname": "Bo", "signature": "sig", "avatar_builtin": 12},
    P.AVATAR_GET: {"user_id": 3},
    P.FRIEND_REQUESTS: {"direction": "outgoing", "after": 2},
    P.CHAT_SEND: {"to": 3, "text": "hello", "client_msg_id": "a-1:b.c_d"},
    P.CHAT_DELIVERED: {"ids": [1, 2, 3]},
    P.CHAT_READ: {"user_id": 3, "up_to": 9},
    P.CHAT_HISTORY: {"user_id": 3, "before": 10, "limit": 100},
    P.TYPING: {"to": 3, "typing": False},
    P.CHAT_UNREAD: {"after": 5},
    P.FILE_OFFER: {"to": 3, "name": "a.pdf", "size": 10, "sha256": "e3" * 32},
    P.FILE_ANSWER: {"transfer_id": TID, "accept": False},
    P.FILE_ACK: {"transfer_id": TID, "offset": 10, "complete": True},
    P.FILE_CANCEL: {"transfer_id": TID, "reason": "no", "error": "DISK_FULL"},
    P.FILE_RESUME: {"transfer_id": TID, "offset": 0},
    P.FILE_PENDING: {"after": ""},    # not a made-up id: the server refuses one as BAD_REQUEST
    P.ROOM_CREATE: {"title": "Weekly", "password": "pw"},
    P.ROOM_JOIN: {"number": "123 456 789", "password": "pw"},
    P.ROOM_LEAVE: {},
    P.ROOM_KICK: {"user_id": 3},
    P.ROOM_MUTE: {"user_id": 3},
    P.ROOM_LOCK: {"locked": True},
    P.ROOM_CHAT: {"text": "hi all"},
    P.MEDIA_STATE: {"camera": True, "microphone": False, "screen": False},
    P.ROOM_END: {},
    P.ROOM_HOST: {"user_id": 3},
    P.ROOM_ADMIT: {"user_id": 3, "admit": False},
    P.KEYFRAME_REQUEST: {"user_id": 3, "kind": 1},
    P.MEDIA_SUBSCRIBE: {"user_id": 3, "kind": 3, "paused": True},
    P.MEDIA_STATS: {},
}
