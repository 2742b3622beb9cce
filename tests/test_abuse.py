"""Abuse a logged-in user can try: making handlers fail on purpose, floods of cheap packets that
cost others (media state, typing, user search), hoarding the spool, lists too long for a frame,
and half-made rooms. Each is refused or bounded with a clear error, and nobody else notices."""
from __future__ import annotations

import logging
import socket

import pytest

from common import frame as wire
from common import limits
from common.errors import ApiError, ErrorCode
from common.packets import PacketType
from server.mediator import HandlerSpec
from server.storage.files import FileRecord
from tests.helpers import logged_in_friends, raw_login, raw_register, raw_request, read_until_closed, unique_phone
from tests.social import befriend, uid

KiB = 1024
MiB = 1024 * KiB


def logged_in_raw(port: int) -> socket.socket:
    phone = unique_phone()
    assert raw_register(port, phone).type == PacketType.RESULT
    sock, reply = raw_login(port, phone)
    assert reply.type == PacketType.RESULT
    return sock


def frames_until_closed(sock: socket.socket) -> list[wire.Frame]:
    return wire.FrameDecoder().feed(read_until_closed(sock, 10))


# -- item 2: a peer that makes handlers fail ----------------------------------------------------------

def test_a_peer_causing_internal_errors_is_dropped_and_tracebacks_are_rate_limited(server, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="server")

    def broken(phone: str):
        raise RuntimeError("storage bug")
    monkeypatch.setattr(server.server.storage, "get_user_by_phone", broken)
    search = b"".join(wire.encode_json(PacketType.USER_SEARCH, {"phone": "13800000000"}, i) for i in range(1, 11))
    for _ in range(2):
        sock = logged_in_raw(server.port)
        sock.sendall(search)
        frames = frames_until_closed(sock)
        sock.close()
        codes = [f.json()["code"] for f in frames if f.type == PacketType.ERROR]
        assert codes == [ErrorCode.INTERNAL] * 3, "dropped after three internal errors"
    tracebacks = [r for r in caplog.records if r.exc_info and "USER_SEARCH" in r.getMessage()]
    assert len(tracebacks) == 1, "the same cause is logged with its traceback once"
    repeats = [r for r in caplog.records if "failed again" in r.getMessage()]
    assert len(repeats) == 5 and all("RuntimeError: storage bug" in r.getMessage() for r in repeats)
    assert "3 requests failed with an internal error" in caplog.text


def test_a_reply_that_cannot_be_encoded_is_answered_with_an_error(server):
    """The reply is over the frame limit: the request gets INTERNAL, and the request queued
    behind it on the same connection is answered at once (the queue keeps moving)."""
    server.server.mediator.handlers[PacketType.FRIEND_LIST] = HandlerSpec(
        lambda req: {"friends": ["x" * 1000] * 100}, blocking=True, auth=True)
    sock = logged_in_raw(server.port)
    sock.sendall(wire.encode_json(PacketType.FRIEND_LIST, {}, 5) + wire.encode_json(PacketType.HEARTBEAT, {}, 6))
    decoder = wire.FrameDecoder()
    sock.settimeout(5)
    replies: dict[int, wire.Frame] = {}
    while 6 not in replies:
        for frame in decoder.feed(sock.recv(65536)):
            replies[frame.request_id] = frame
    assert replies[5].type == PacketType.ERROR and replies[5].json()["code"] == ErrorCode.INTERNAL
    assert replies[6].type == PacketType.RESULT
    sock.close()


# -- item 3: per-user limits on cheap packets that cost others ---------------------------------------

@pytest.mark.parametrize("ptype,body_of,key", [
    (PacketType.MEDIA_STATE, lambda i, peer: {"camera": i % 2 == 0, "microphone": False, "screen": False},
     "media_states_per_minute"),
    (PacketType.TYPING, lambda i, peer: {"to": uid(peer), "typing": i % 2 == 0}, "typing_per_minute"),
    (PacketType.USER_SEARCH, lambda i, peer: {"phone": peer.phone}, "user_searches_per_minute"),
    (PacketType.PROFILE_UPDATE, lambda i, peer: {"signature": f"mood {i}"}, "profile_updates_per_minute"),
    (PacketType.ROOM_LOCK, lambda i, peer: {"locked": i % 2 == 0}, "room_controls_per_minute"),
], ids=["media_state", "typing", "user_search", "profile_update", "room_lock"])
def test_cheap_packets_are_rate_limited_per_user(server_factory, client_factory, ptype, body_of, key):
    running = server_factory(**{key: 10})
    alice, bob = client_factory(running.port), client_factory(running.port)
    alice.register_and_login("alice")
    bob.register_and_login("bob")
    befriend(alice, bob)
    alice.kernel.rooms.create("limits")
    bob.kernel.rooms.join(alice.kernel.rooms.room["number"])
    for i in range(10):
        alice.kernel.request(ptype, body_of(i, bob))
    with pytest.raises(ApiError) as info:
        alice.kernel.request(ptype, body_of(10, bob))
    assert info.value.code == ErrorCode.RATE_LIMITED and info.value.details["limit"] == 10
    try:
        bob.kernel.request(ptype, body_of(1, alice))    # bob has his own allowance
    except ApiError as exc:
        assert exc.code == ErrorCode.NOT_HOST


def test_media_state_changes_reach_the_room_coalesced(server, client_factory):
    """Twenty toggles in a burst: the other members get a few ROOM_MEMBERS_EVENTs, not twenty,
    and the last one shows the final state."""
    alice, bob = client_factory(server.port), client_factory(server.port)
    alice.register_and_login("alice")
    bob.register_and_login("bob")
    number = alice.kernel.rooms.create("burst")["number"]
    bob.kernel.rooms.join(number)
    bob.events.wait_for("room_members", lambda e: len(e["room"]["members"]) == 2)
    mark = bob.events.mark()
    futures = [alice.kernel.request_async(PacketType.MEDIA_STATE, {"camera": i % 2 == 1, "microphone": True,
                                                                   "screen": False}) for i in range(20)]
    for future in futures:
        future.result(5)

    def alice_state(event) -> tuple:
        member = next(m for m in event["room"]["members"] if m["user_id"] == uid(alice))
        return member["camera"], member["microphone"]
    bob.events.wait_for("room_members", lambda e: alice_state(e) == (True, True), start=mark)
    bob.kernel.request(PacketType.HEARTBEAT, {})        # anything still coming was sent before this reply
    told = [e for e in bob.events.events[mark:] if e.kind == "room_members"]
    assert 1 <= len(told) <= 3, f"{len(told)} member events for 20 toggles"
    assert alice_state(told[-1]) == (True, True)


# -- item 5: the spool is shared fairly ---------------------------------------------------------------

def offer(client, to: int, size: int, name: str = "f.bin") -> dict:
    return client.kernel.request(PacketType.FILE_OFFER, {"to": to, "name": name, "size": size, "sha256": "ab" * 32})


def test_one_user_cannot_take_the_whole_spool(storage, server_factory, client_factory):
    running = server_factory(storage=storage, spool_quota=100 * MiB, spool_quota_per_user=MiB,
                             file_offers_per_minute=0)
    alice, bob = logged_in_friends(running, client_factory)
    carol = client_factory(running.port)
    carol.register_and_login("carol")
    storage.add_friendship(uid(carol), uid(bob), 0)
    bob_id = uid(bob)
    bob.kernel.logout()
    assert offer(alice, bob_id, 600 * KiB)["mode"] == "spool"
    with pytest.raises(ApiError) as info:
        offer(alice, bob_id, 600 * KiB)
    assert info.value.code == ErrorCode.SPOOL_FULL and info.value.details["limit"] == MiB
    assert "each user" in info.value.message
    assert offer(carol, bob_id, 600 * KiB)["mode"] == "spool"     # others still have room
    assert storage.spool_reserved_bytes(uid(alice)) == 600 * KiB


def test_a_spool_reservation_without_progress_expires_quickly(server_factory, client_factory):
    running = server_factory(spool_upload_idle_timeout=0.5, file_offers_per_minute=0)
    alice, bob = logged_in_friends(running, client_factory)
    bob_id = uid(bob)
    bob.kernel.logout()
    transfer_id = offer(alice, bob_id, 2 * MiB)["transfer_id"]       # and never a byte
    failed = alice.events.wait_for("file_failed", lambda e: e["transfer_id"] == transfer_id, timeout=5)
    assert failed["error"] == "TIMEOUT"
    assert running.server.storage.spool_reserved_bytes(uid(alice)) == 0
    assert running.server.storage.get_file(transfer_id).state == "failed"


# -- item 6: long lists are paged ---------------------------------------------------------------------

def test_file_pending_is_paged_to_fit_a_frame(storage, server_factory, client_factory):
    """200 spooled offers with long names are more than one frame: every page fits, and the
    client walks them all after a login."""
    server = server_factory(storage=storage)
    alice, bob = logged_in_friends(server, client_factory)
    alice_id, bob_id = uid(alice), uid(bob)
    bob.kernel.logout()
    name = "報告書-" * 28 + ".pdf"                       # about 200 bytes of UTF-8, the longest name kept
    offered = [f"{n:032x}" for n in range(200)]
    for n, transfer_id in enumerate(offered):
        server.server.storage.create_file(FileRecord(transfer_id, alice_id, bob_id, name, 1000, "ab" * 32,
                                                     "spooled", 1000, 1000 + n, 10 ** 13))
    seen, after, pages = [], "", 0
    while True:
        reply = alice.kernel.request(PacketType.FILE_PENDING, {"after": after} if after else {})
        assert len(wire.encode_json(PacketType.RESULT, reply)) - wire.HEADER.size <= limits.MAX_CONTROL_BODY
        seen += [t["transfer_id"] for t in reply["transfers"]]
        pages += 1
        if not reply["more"]:
            break
        after = reply["next"]
    assert seen == offered and pages >= 2
    again = client_factory(server.port)
    again.kernel.login(bob.phone, bob.password)
    for transfer_id in offered:
        again.events.wait_for("file_offer", lambda e, t=transfer_id: e["transfer_id"] == t)


# -- item 8: rooms are created and joined all or nothing ------------------------------------------------

def test_a_failed_create_or_join_leaves_no_ghost(server, client_factory):
    host, guest = client_factory(server.port), client_factory(server.port)
    host.register_and_login("host")
    guest.register_and_login("guest")
    rooms = server.server.rooms

    def broken_hook(room, member):
        raise RuntimeError("hook bug")
    rooms.on_connected.append(broken_hook)
    with pytest.raises(ApiError) as info:
        host.kernel.request(PacketType.ROOM_CREATE, {"title": "ghost"})
    assert info.value.code == ErrorCode.INTERNAL
    assert rooms.rooms == {} and rooms.by_user == {}
    rooms.on_connected.remove(broken_hook)
    number = host.kernel.rooms.create("real")["number"]            # not ALREADY_IN_ROOM
    rooms.on_connected.append(broken_hook)
    with pytest.raises(ApiError):
        guest.kernel.request(PacketType.ROOM_JOIN, {"number": number})
    rooms.on_connected.remove(broken_hook)
    assert list(rooms.rooms[number].members) == [uid(host)] and uid(guest) not in rooms.by_user
    assert guest.kernel.rooms.join(number)["number"] == number


def test_the_same_failure_logs_its_traceback_once_per_interval(caplog):
    from server.faults import FaultLog
    now = [100.0]
    faults = FaultLog(logging.getLogger("server.test_faults"), interval=60.0, clock=lambda: now[0])

    def fail(n: int) -> None:
        try:
            raise ValueError(f"bad {n}")
        except ValueError as exc:
            faults.failed("handler for X", "peer=p user=1", exc)
    caplog.set_level(logging.INFO, logger="server.test_faults")
    for n in range(4):
        fail(n)
    assert [bool(r.exc_info) for r in caplog.records] == [True, False, False, False]
    now[0] += 61
    fail(4)
    assert caplog.records[-1].exc_info and "3 more like it" in caplog.records[-1].getMessage()
    try:
        raise KeyError("elsewhere")
    except KeyError as exc:
        faults.failed("handler for X", "peer=p user=1", exc)
    assert caplog.records[-1].exc_info, "another cause has its own traceback"
