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
from tests.social import befriend, wait_session_ready


@pytest.fixture
def server(storage, server_factory):
    """Every test here runs on SQLite and on MySQL (the ``backend`` fixture)."""
    return server_factory(storage=storage)


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
    waiting = outsider.kernel.request(PacketType.ROOM_JOIN, {"number": room["number"], "password": "sesame-123"})
    assert waiting == {"waiting": True, "number": room["number"], "title": "locked"}   # the waiting room only
    assert refused(outsider, PacketType.ROOM_CHAT, {"text": "let me in"}) == ErrorCode.NOT_IN_ROOM


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
    host.kernel.send(PacketType.MEDIA_FRAME, pack_media(header, b"\x01" * 40))
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
    outsider.kernel.send(PacketType.MEDIA_FRAME, pack_media(forged, b"\x00\x00\x00\x01" + b"x" * 100))
    outsider.kernel.request(PacketType.HEARTBEAT, {})
    assert relay.ignored == ignored + 1
    # Controls about other people's streams are refused with a code.
    assert refused(outsider, PacketType.KEYFRAME_REQUEST,
                   {"user_id": uid(host), "kind": int(MediaKind.CAMERA)}) == ErrorCode.NOT_IN_ROOM
    assert refused(outsider, PacketType.MEDIA_SUBSCRIBE,
                   {"user_id": uid(host), "kind": int(MediaKind.CAMERA), "paused": True}) == ErrorCode.NOT_IN_ROOM
    # A member who forges another member's id in the header is relayed under their own id.
    spoof = MediaHeader(uid(host), MediaKind.MICROPHONE, Codec.OPUS, 0, 7, 0)
    member.kernel.send(PacketType.MEDIA_FRAME, pack_media(spoof, b"\x02" * 30))
    member.kernel.request(PacketType.HEARTBEAT, {})
    assert arrived.wait(5)
    member.kernel.request(PacketType.HEARTBEAT, {})
    host.kernel.request(PacketType.HEARTBEAT, {})
    assert [h.user_id for h in received] == [uid(member)], "only the host gets it, labelled as the member's"


# -- friends, chat and profiles --------------------------------------------------------------------

@pytest.fixture
def trio_plain(server, people):
    """A and B are friends; C is a stranger to both."""
    a, b, c = people(3, server.port)
    for client in (a, b, c):
        wait_session_ready(client)
    befriend(a, b)
    return a, b, c


def test_chat_to_a_stranger_is_refused(trio_plain):
    a, b, c = trio_plain
    mark = a.events.mark()
    assert refused(c, PacketType.CHAT_SEND, {"to": uid(a), "text": "hi", "client_msg_id": "c-1"}) == ErrorCode.NOT_FRIENDS
    assert refused(c, PacketType.TYPING, {"to": uid(a), "typing": True}) == ErrorCode.NOT_FRIENDS
    assert quiet_for(a, "chat_message", mark) and quiet_for(a, "typing", mark)
    assert a.kernel.chat.history(uid(c))["messages"] == []


def test_the_sender_is_the_session_never_the_body(trio_plain):
    a, b, c = trio_plain
    mark = b.events.mark()
    # A claims to be C (and names C as the sender in every way it could): B sees A.
    a.kernel.request(PacketType.CHAT_SEND, {"to": uid(b), "text": "who am I", "client_msg_id": "spoof-1",
                                            "from": uid(c), "sender_id": uid(c), "user_id": uid(c)})
    event = b.events.wait_for("chat_message", lambda e: e["message"]["text"] == "who am I", start=mark)
    assert event["message"]["from"] == uid(a)
    # C cannot send "as A" to B either: the friendship checked is C's own.
    assert refused(c, PacketType.CHAT_SEND, {"to": uid(b), "from": uid(a), "text": "x",
                                             "client_msg_id": "spoof-2"}) == ErrorCode.NOT_FRIENDS
    # A profile change names no user: C's "update of A" changes C.
    reply = c.kernel.request(PacketType.PROFILE_UPDATE, {"user_id": uid(a), "id": uid(a), "signature": "pwned"})
    assert reply["user"]["id"] == uid(c)
    assert a.kernel.request(PacketType.PROFILE_UPDATE, {"signature": "mine"})["user"]["signature"] == "mine"


def test_history_and_receipts_of_others_stay_private(trio_plain):
    a, b, c = trio_plain
    sent = a.kernel.chat.send_and_wait(uid(b), "between A and B only")
    b.events.wait_for("chat_message", lambda e: e["message"]["id"] == sent["id"])
    # B's client acknowledges delivery by itself; let that receipt reach A first.
    a.events.wait_for("chat_status", lambda e: e["status"] == "delivered" and sent["id"] in (e["ids"] or []))
    # C asks for A's history (naming A, or B, as the peer): only C's own conversations exist.
    for peer in (uid(a), uid(b)):
        page = c.kernel.request(PacketType.CHAT_HISTORY, {"user_id": peer, "limit": 100})
        assert page["messages"] == []
    assert c.kernel.request(PacketType.CHAT_UNREAD, {})["messages"] == []
    # C cannot mark A's message to B as delivered or read: nothing is marked, A hears nothing.
    mark = a.events.mark()
    assert c.kernel.request(PacketType.CHAT_DELIVERED, {"ids": [sent["id"]]})["delivered"] == 0
    assert c.kernel.request(PacketType.CHAT_READ, {"user_id": uid(a), "up_to": sent["id"] + 10})["read"] == 0
    assert quiet_for(a, "chat_status", mark)
    history = b.kernel.chat.history(uid(a))["messages"]
    assert [m["read_at"] for m in history if m["id"] == sent["id"]] == [None]


def test_friend_requests_of_others_cannot_be_seen_or_answered(server, people):
    a, b, c = people(3, server.port)
    reply = a.kernel.friends.add(user_id=uid(b), greeting="private greeting")
    request_id = reply["request"]["id"]
    # C sees neither direction of it.
    for direction in ("incoming", "outgoing"):
        listed = c.kernel.request(PacketType.FRIEND_REQUESTS, {"direction": direction})["requests"]
        assert listed == []
    # C cannot accept (or refuse) it on B's behalf, even naming B.
    for accept in (True, False):
        assert refused(c, PacketType.FRIEND_ANSWER, {"request_id": request_id, "accept": accept,
                                                     "user_id": uid(b)}) == ErrorCode.NO_SUCH_REQUEST
    # A cannot answer its own request either.
    assert refused(a, PacketType.FRIEND_ANSWER, {"request_id": request_id, "accept": True}) == ErrorCode.NO_SUCH_REQUEST
    incoming = b.kernel.request(PacketType.FRIEND_REQUESTS, {"direction": "incoming"})["requests"]
    assert [r["id"] for r in incoming] == [request_id], "still pending for B"
    assert not server.server.storage.are_friends(uid(a), uid(b))
    assert not server.server.storage.are_friends(uid(c), uid(b))


def test_removing_someone_elses_friendship_is_refused(trio_plain, server):
    a, b, c = trio_plain
    # C "removes" B (naming A as the owner): C has no such friend.
    assert refused(c, PacketType.FRIEND_REMOVE, {"user_id": uid(b), "owner": uid(a)}) == ErrorCode.NOT_FRIENDS
    assert server.server.storage.are_friends(uid(a), uid(b))


# -- files ----------------------------------------------------------------------------------------

def offer(client: TestClient, to: int, name: str = "plan.txt") -> dict:
    return client.kernel.request(PacketType.FILE_OFFER, {"to": to, "name": name, "size": 1000, "sha256": "ab" * 32})


def test_files_only_between_friends_and_only_for_the_two_of_them(trio_plain, server):
    a, b, c = trio_plain
    assert refused(c, PacketType.FILE_OFFER, {"to": uid(a), "name": "x.txt", "size": 10,
                                              "sha256": "ab" * 32}) == ErrorCode.NOT_FRIENDS
    transfer = offer(a, uid(b))["transfer_id"]
    b.kernel.request(PacketType.HEARTBEAT, {})
    # C knows the transfer id and still cannot touch it or see it.
    for ptype, body in ((PacketType.FILE_ANSWER, {"transfer_id": transfer, "accept": True}),
                        (PacketType.FILE_CANCEL, {"transfer_id": transfer}),
                        (PacketType.FILE_RESUME, {"transfer_id": transfer, "offset": 0})):
        assert refused(c, ptype, body) == ErrorCode.NO_SUCH_TRANSFER, ptype.name
    assert c.kernel.request(PacketType.FILE_PENDING, {})["transfers"] == []
    # The sender cannot answer its own offer for the recipient.
    assert refused(a, PacketType.FILE_ANSWER, {"transfer_id": transfer, "accept": True}) == ErrorCode.NO_SUCH_TRANSFER
    # The offer is intact for B, who accepts it.
    pending = b.kernel.request(PacketType.FILE_PENDING, {})["transfers"]
    assert [t["transfer_id"] for t in pending] == [transfer]
    assert b.kernel.request(PacketType.FILE_ANSWER, {"transfer_id": transfer, "accept": True})["accepted"]
    # C injects a chunk into the accepted transfer: it is dropped, not relayed.
    dropped = server.server.status()["file_chunks_dropped"]
    c.kernel.send(PacketType.FILE_CHUNK, bytes.fromhex(transfer) + (0).to_bytes(8, "big") + b"evil" * 10)
    c.kernel.request(PacketType.HEARTBEAT, {})
    assert server.server.status()["file_chunks_dropped"] == dropped + 1
    a.kernel.request(PacketType.FILE_CANCEL, {"transfer_id": transfer})
