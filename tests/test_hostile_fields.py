"""Hostile input, type by type: a lone surrogate in every string field of every packet type,
a flood of every packet type from a peer that does not read its replies, and many accounts
from one address.

``tests.samples.REQUEST_SAMPLES`` and the flood tables below must name every packet type the
server handles, so a new packet type fails here until a body for it is listed.
"""
from __future__ import annotations

import json
import socket
import time

import pytest

from common import frame as wire
from common.errors import ErrorCode
from common.media import MEDIA_HEADER
from common.packets import BINARY_TYPES, PacketType
from server.mediator import PRE_LOGIN_TYPES
from tests.helpers import HELLO, raw_connect, raw_login, raw_register, raw_request, unique_phone
from tests.samples import REQUEST_SAMPLES
from tests.social import befriend, uid
from tests.test_hostile import log_watch  # noqa: F401  (a fixture)

SURROGATE = "ok\ud800"

def handled_json_types(running) -> set[int]:
    return {t for t in running.server.mediator.handlers if t not in BINARY_TYPES}


def string_fields(body: dict) -> list[str]:
    return [key for key, value in body.items() if isinstance(value, str)]


def variants(ptype: int) -> list[tuple[str, bytes]]:
    """Bodies with one lone surrogate each: in every string field, in an unknown field, in a
    key, and deep inside a list."""
    body = REQUEST_SAMPLES[ptype]
    out = [(name, {**body, name: SURROGATE}) for name in string_fields(body)]
    out.append(("unknown field", {**body, "extra": SURROGATE}))
    out.append(("key", {**body, SURROGATE: 1}))
    out.append(("nested", {**body, "extra": [{"deep": ["x", SURROGATE]}]}))
    return [(where, json.dumps(value).encode("ascii")) for where, value in out]


def send_raw(sock: socket.socket, ptype: int, body: bytes, request_id: int) -> wire.Frame:
    sock.sendall(wire.encode_frame(ptype, body, request_id))
    decoder = wire.FrameDecoder()
    while True:
        data = sock.recv(65536)
        assert data, "the server closed the connection"
        for frame in decoder.feed(data):
            if frame.request_id == request_id:
                return frame


def test_the_tables_name_every_handled_type(server):
    assert handled_json_types(server) == set(REQUEST_SAMPLES)
    assert set(FLOOD_BODIES) | set(BINARY_FLOODS) == set(server.server.mediator.handlers)


def test_a_lone_surrogate_in_any_string_field_of_any_packet_is_bad_request(
        storage, server_factory, client_factory, log_watch):
    running = server_factory(storage=storage)
    owner = client_factory(running.port)
    owner.register_and_login("owner")
    checked = 0
    for ptype in sorted(REQUEST_SAMPLES):
        if ptype in PRE_LOGIN_TYPES:
            sock = raw_connect(running.port)
            if ptype != PacketType.HELLO:
                assert raw_request(sock, PacketType.HELLO, HELLO, 1).type == PacketType.RESULT
        else:
            sock, reply = raw_login(running.port, owner.phone, owner.password)
            assert reply.type == PacketType.RESULT, reply.json()
        for n, (where, body) in enumerate(variants(ptype), start=10):
            reply = send_raw(sock, ptype, body, n)
            assert reply.type == PacketType.ERROR, f"{PacketType(ptype).name}.{where}: {reply.json()}"
            error = reply.json()
            assert error["code"] == ErrorCode.BAD_REQUEST and "surrogate" in error["message"], \
                f"{PacketType(ptype).name}.{where}: {error}"
            checked += 1
        sock.close()
    assert checked >= 3 * len(REQUEST_SAMPLES)
    assert not log_watch.bad, log_watch.bad[:3]
    # Nothing was half done: no room, no profile change, the account works as before.
    assert running.server.rooms.rooms == {}
    fresh = client_factory(running.port)
    fresh.register_and_login("fresh")
    assert fresh.kernel.rooms.create("after")["number"]


# -- floods -----------------------------------------------------------------------------------------

FLOOD = 200
# Per type: a body (from the index and the friend's id and phone) that a real client could send.
FLOOD_BODIES = {
    **{t: (lambda i, f, p, body=body: body) for t, body in REQUEST_SAMPLES.items()},
    PacketType.USER_SEARCH: lambda i, f, p: {"phone": p},
    PacketType.FRIEND_REQUEST: lambda i, f, p: {"user_id": f, "greeting": "again"},
    PacketType.FRIEND_REMOVE: lambda i, f, p: {"user_id": f + 1000},
    PacketType.PROFILE_UPDATE: lambda i, f, p: {"signature": f"mood {i}"},
    PacketType.AVATAR_GET: lambda i, f, p: {"user_id": f},
    PacketType.CHAT_SEND: lambda i, f, p: {"to": f, "text": f"flood {i}", "client_msg_id": f"flood-{i}"},
    PacketType.CHAT_READ: lambda i, f, p: {"user_id": f, "up_to": 1},
    PacketType.CHAT_HISTORY: lambda i, f, p: {"user_id": f},
    PacketType.TYPING: lambda i, f, p: {"to": f, "typing": i % 2 == 0},
    PacketType.FILE_OFFER: lambda i, f, p: {"to": f, "name": f"{i}.txt", "size": 10, "sha256": "ab" * 32},
    PacketType.ROOM_KICK: lambda i, f, p: {"user_id": f},
    PacketType.ROOM_MUTE: lambda i, f, p: {"user_id": f},
    PacketType.ROOM_HOST: lambda i, f, p: {"user_id": f},
    PacketType.ROOM_ADMIT: lambda i, f, p: {"user_id": f, "admit": i % 2 == 0},
    PacketType.MEDIA_STATE: lambda i, f, p: {"camera": i % 2 == 0, "microphone": True, "screen": False},
    PacketType.KEYFRAME_REQUEST: lambda i, f, p: {"user_id": f, "kind": 1},
    PacketType.MEDIA_SUBSCRIBE: lambda i, f, p: {"user_id": f, "kind": 1, "paused": i % 2 == 0},
}
BINARY_FLOODS = {
    PacketType.AVATAR_UPLOAD: lambda i, f, p: b"\x89PNG\r\n\x1a\n" + bytes(100),
    PacketType.FILE_CHUNK: lambda i, f, p: bytes(16) + i.to_bytes(8, "big") + b"x" * 100,
    PacketType.MEDIA_FRAME: lambda i, f, p: MEDIA_HEADER.pack(f, 1, 1, 0, i, 0) + b"x" * 100,
}
# Where a flood must meet the per-user limit (the limit is below FLOOD).
MUST_BE_LIMITED = {PacketType.MEDIA_STATE, PacketType.TYPING, PacketType.USER_SEARCH, PacketType.FILE_OFFER,
                   PacketType.FRIEND_REQUEST, PacketType.PROFILE_UPDATE, PacketType.AVATAR_UPLOAD,
                   PacketType.ROOM_LOCK, PacketType.ROOM_MUTE, PacketType.ROOM_KICK, PacketType.ROOM_CREATE,
                   PacketType.ROOM_JOIN, PacketType.CHAT_SEND, PacketType.ROOM_CHAT}
SENTINEL = 0xFFFFFFF0


# Fire-and-forget by nature: their handlers never answer, whatever the request id.
NO_REPLY = {PacketType.FILE_CHUNK, PacketType.MEDIA_FRAME}


def flood(port: int, phone: str, password: str, ptype: int, make_body, friend: int, friend_phone: str) -> list[wire.Frame]:
    """Log in, send FLOOD packets and a heartbeat without reading anything, then read until
    every request was answered (the group-commit writer answers after the heartbeat) or the
    server closed."""
    sock, reply = raw_login(port, phone, password)
    assert reply.type == PacketType.RESULT, reply.json()
    data = bytearray()
    for i in range(1, FLOOD + 1):
        body = make_body(i, friend, friend_phone)
        data += (wire.encode_frame(ptype, body, i) if isinstance(body, bytes)
                 else wire.encode_json(ptype, body, i))
    data += wire.encode_json(PacketType.HEARTBEAT, {}, SENTINEL)
    try:
        sock.sendall(data)
    except OSError:
        pass
    waiting = {SENTINEL} | (set() if ptype in NO_REPLY else set(range(1, FLOOD + 1)))
    frames: list[wire.Frame] = []
    decoder = wire.FrameDecoder()
    sock.settimeout(30)
    try:
        while waiting:
            chunk = sock.recv(262144)
            if not chunk:
                break
            for frame in decoder.feed(chunk):
                frames.append(frame)
                if frame.type in (PacketType.RESULT, PacketType.ERROR):
                    waiting.discard(frame.request_id)
    except ConnectionResetError:
        pass
    sock.close()
    return frames


def test_a_flood_of_every_packet_type_from_a_peer_not_reading(storage, server_factory, client_factory, log_watch):
    running = server_factory(storage=storage, messages_per_minute=100)
    me, friend = client_factory(running.port), client_factory(running.port)
    me.register_and_login("flooder")
    friend.register_and_login("friend")
    befriend(me, friend)
    friend.kernel.rooms.create("flooded")
    friend_id = uid(friend)
    for ptype, make_body in sorted({**FLOOD_BODIES, **BINARY_FLOODS}.items()):
        name = PacketType(ptype).name
        frames = flood(running.port, me.phone, me.password, ptype, make_body, friend_id, friend.phone)
        errors = [f.json() for f in frames if f.type == PacketType.ERROR]
        assert not [e for e in errors if e["code"] == ErrorCode.INTERNAL], f"{name}: {errors[:3]}"
        answered = {f.request_id for f in frames if f.type in (PacketType.RESULT, PacketType.ERROR)}
        if ptype == PacketType.LOGOUT:
            assert [(f.type, f.request_id) for f in frames] == [(PacketType.RESULT, 1)], "answered, then closed"
        elif ptype in NO_REPLY:
            assert answered == {SENTINEL}, name
        else:
            assert answered == set(range(1, FLOOD + 1)) | {SENTINEL}, f"{name}: not every request was answered"
        if ptype in MUST_BE_LIMITED:
            assert any(e["code"] == ErrorCode.RATE_LIMITED for e in errors), f"{name} was not rate limited"
        assert not log_watch.bad, (name, log_watch.bad[:3])
    # The friend was not disconnected by the flood of events it received, and still works.
    assert friend.kernel.request(PacketType.HEARTBEAT, {})["time"] > 0


def test_a_peer_whose_requests_wait_for_a_slow_pool_is_not_timed_out_for_silence(server_factory, monkeypatch):
    """The heartbeat timeout measures the peer's silence, not the server's backlog: requests read
    in one go and then answered one by one from a slow pool (a loaded machine, a slow database)
    keep the connection open until the last is answered. Before the fix the server closed such
    a peer for "heartbeat timeout" with its own heartbeat still queued, unanswered."""
    running = server_factory(heartbeat_interval=0.2, heartbeat_timeout=0.5)
    phone = unique_phone()
    assert raw_register(running.port, phone).type == PacketType.RESULT
    storage = running.server.storage
    fast = storage.open_files_of

    def slow(*args):
        time.sleep(0.05)
        return fast(*args)

    monkeypatch.setattr(storage, "open_files_of", slow)
    sock, reply = raw_login(running.port, phone)
    assert reply.type == PacketType.RESULT
    count = 40                                  # 2 s of work, four times the heartbeat timeout
    data = b"".join(wire.encode_json(PacketType.FILE_PENDING, {}, i) for i in range(1, count + 1))
    sock.sendall(data + wire.encode_json(PacketType.HEARTBEAT, {}, SENTINEL))
    answered: set[int] = set()
    decoder = wire.FrameDecoder()
    sock.settimeout(10)
    while len(answered) < count + 1:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {len(answered)} of {count + 1} replies"
        answered |= {f.request_id for f in decoder.feed(chunk) if f.type == PacketType.RESULT}
    sock.close()
    assert answered == set(range(1, count + 1)) | {SENTINEL}


# -- many accounts from one address -------------------------------------------------------------------

def test_many_accounts_from_one_address_share_its_limits(server_factory, client_factory):
    running = server_factory(registrations_per_minute_per_address=5, room_joins_per_minute_per_address=6,
                             room_joins_per_minute=60)
    phones = [unique_phone() for _ in range(6)]
    replies = [raw_register(running.port, phone, source="127.0.3.1") for phone in phones]
    assert [r.type for r in replies] == [PacketType.RESULT] * 5 + [PacketType.ERROR]
    refused = replies[-1].json()
    assert refused["code"] == ErrorCode.RATE_LIMITED and refused["details"]["limit"] == 5
    assert "address" in refused["message"]
    assert raw_register(running.port, phones[-1], source="127.0.3.2").type == PacketType.RESULT
    # Room-number guessing with five accounts from one address: six attempts in all.
    host = client_factory(running.port)
    host.register_and_login("host")
    number = host.kernel.rooms.create("secret", password="sesame")["number"]
    codes = []
    for phone in phones[:5]:
        sock, reply = raw_login(running.port, phone, source="127.0.3.1")
        assert reply.type == PacketType.RESULT
        for guess in range(2):
            codes.append(raw_request(sock, PacketType.ROOM_JOIN, {"number": number, "password": f"g{guess}"},
                                     10 + guess).json()["code"])
        sock.close()
    assert codes == [ErrorCode.WRONG_ROOM_PASSWORD] * 6 + [ErrorCode.RATE_LIMITED] * 4
    sock, reply = raw_login(running.port, phones[-1], source="127.0.3.2")     # another address is not slowed
    assert raw_request(sock, PacketType.ROOM_JOIN, {"number": number, "password": "sesame"}, 10).type == PacketType.RESULT
    sock.close()
