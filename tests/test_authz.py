"""Authorization: every handler acts as the session's own user. Each test tries a cross-user
access with a second account and expects a refusal with an error code (and nothing leaked
to or done for the other user)."""
from __future__ import annotations

import threading

import pytest

from common.errors import ApiError, ErrorCode
from common.media import Codec, MediaHeader, MediaKind, pack_media
from common.packets import PacketType
from tests.helpers import TestClient


@pytest.fixture
def people(client_factory):
    def make(n: int, port: int) -> list[TestClient]:
        clients = []
        for i in range(n):
            client = client_factory(port)
            client.register_and_login(f"person{i}")
            clients.append(client)
        return clients
    return make


def uid(client: TestClient) -> int:
    return int(client.kernel.user["id"])


def refused(client: TestClient, ptype: PacketType, body: dict | bytes) -> ErrorCode:
    """The error code the server answers ``body`` with (the test fails if it is accepted)."""
    with pytest.raises(ApiError) as info:
        client.kernel.request(ptype, body, timeout=5)
    return info.value.code


def quiet_for(client: TestClient, kind: str, mark: int, seconds: float = 0.5) -> bool:
    """True if ``client`` got no ``kind`` event after ``mark`` within ``seconds``; the
    other side is always synchronised by a request first, so this is a bounded safety net."""
    try:
        client.events.wait_for(kind, start=mark, timeout=seconds)
    except TimeoutError:
        return True
    return False


# -- rooms and media -------------------------------------------------------------------------------

def test_room_actions_need_membership_and_host_controls_need_the_host(server, people):
    host, member, outsider = people(3, server.port)
    room = host.kernel.rooms.create("private talk")
    member.kernel.rooms.join(room["number"])
    number = room["number"]

    # An outsider (not in the room) can do nothing to it.
    assert refused(outsider, PacketType.ROOM_KICK, {"user_id": uid(member)}) == ErrorCode.NOT_IN_ROOM
    assert refused(outsider, PacketType.ROOM_MUTE, {"user_id": uid(member)}) == ErrorCode.NOT_IN_ROOM
    assert refused(outsider, PacketType.ROOM_LOCK, {"locked": True}) == ErrorCode.NOT_IN_ROOM
    assert refused(outsider, PacketType.ROOM_CHAT, {"text": "hello, room"}) == ErrorCode.NOT_IN_ROOM
    assert refused(outsider, PacketType.MEDIA_STATE,
                   {"camera": True, "microphone": True, "screen": False}) == ErrorCode.NOT_IN_ROOM
    assert refused(outsider, PacketType.ROOM_LEAVE, {"number": number}) == ErrorCode.NOT_IN_ROOM

    # A member is not the host: no kick, no mute, no lock (naming the room or the host changes nothing).
    for body in ({"user_id": uid(host)}, {"user_id": uid(host), "host_id": uid(member), "number": number}):
        assert refused(member, PacketType.ROOM_KICK, body) == ErrorCode.NOT_HOST
        assert refused(member, PacketType.ROOM_MUTE, body) == ErrorCode.NOT_HOST
    assert refused(member, PacketType.ROOM_MUTE, {}) == ErrorCode.NOT_HOST
    assert refused(member, PacketType.ROOM_LOCK, {"locked": True}) == ErrorCode.NOT_HOST

    # Nothing happened: both are still there, unlocked, host unchanged.
    state = host.kernel.request(PacketType.MEDIA_STATE, {"camera": False, "microphone": True, "screen": False})
    assert {m["user_id"] for m in state["room"]["members"]} == {uid(host), uid(member)}
    assert state["room"]["host_id"] == uid(host) and not state["room"]["locked"]


def test_room_password_and_lock_keep_outsiders_out(server, people):
    host, outsider = people(2, server.port)
    room = host.kernel.rooms.create("locked", password="sesame-123")
    assert refused(outsider, PacketType.ROOM_JOIN, {"number": room["number"]}) == ErrorCode.WRONG_ROOM_PASSWORD
    assert refused(outsider, PacketType.ROOM_JOIN,
                   {"number": room["number"], "password": "guess"}) == ErrorCode.WRONG_ROOM_PASSWORD
    host.kernel.rooms.lock(True)
    assert refused(outsider, PacketType.ROOM_JOIN,
                   {"number": room["number"], "password": "sesame-123"}) == ErrorCode.ROOM_LOCKED


def test_outsider_sees_no_room_chat_and_no_media(server, people):
    host, member, outsider = people(3, server.port)
    room = host.kernel.rooms.create()
    member.kernel.rooms.join(room["number"])
    frames: list[MediaHeader] = []
    outsider.kernel.rooms.add_media_listener(lambda header, payload: frames.append(header))
    mark = outsider.events.mark()
    host.kernel.rooms.chat("members only")
    member.events.wait_for("room_chat", lambda e: e["text"] == "members only")
    header = MediaHeader(uid(host), MediaKind.MICROPHONE, Codec.OPUS, 0, 1, 0)
    host.kernel.send_binary(PacketType.MEDIA_FRAME, pack_media(header, b"\x01" * 40))
    host.kernel.request(PacketType.HEARTBEAT, {})  # the frame was handled before this reply
    assert quiet_for(outsider, "room_chat", mark)
    assert frames == []


def test_media_into_a_room_you_are_not_in_goes_nowhere(server, people):
    host, member, outsider = people(3, server.port)
    room = host.kernel.rooms.create()
    member.kernel.rooms.join(room["number"])
    received: list[MediaHeader] = []
    arrived = threading.Event()

    def got(header: MediaHeader, payload: bytes) -> None:
        received.append(header)
        arrived.set()
    host.kernel.rooms.add_media_listener(got)
    member.kernel.rooms.add_media_listener(got)
    relay = server.server.relay
    ignored = relay.ignored
    # The outsider forges a frame claiming to be the host's camera.
    forged = MediaHeader(uid(host), MediaKind.CAMERA, Codec.H264, 1, 1, 0)
    outsider.kernel.send_binary(PacketType.MEDIA_FRAME, pack_media(forged, b"\x00\x00\x00\x01" + b"x" * 100))
    outsider.kernel.request(PacketType.HEARTBEAT, {})
    assert relay.ignored == ignored + 1
    # Controls about other people's streams are refused with a code.
    assert refused(outsider, PacketType.KEYFRAME_REQUEST,
                   {"user_id": uid(host), "kind": int(MediaKind.CAMERA)}) == ErrorCode.NOT_IN_ROOM
    assert refused(outsider, PacketType.MEDIA_SUBSCRIBE,
                   {"user_id": uid(host), "kind": int(MediaKind.CAMERA), "paused": True}) == ErrorCode.NOT_IN_ROOM
    # A member who forges another member's id in the header is relayed under their own id.
    spoof = MediaHeader(uid(host), MediaKind.MICROPHONE, Codec.OPUS, 0, 7, 0)
    member.kernel.send_binary(PacketType.MEDIA_FRAME, pack_media(spoof, b"\x02" * 30))
    member.kernel.request(PacketType.HEARTBEAT, {})
    assert arrived.wait(5)
    member.kernel.request(PacketType.HEARTBEAT, {})
    host.kernel.request(PacketType.HEARTBEAT, {})
    assert [h.user_id for h in received] == [uid(member)], "only the host gets it, labelled as the member's"
