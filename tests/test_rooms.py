"""Meeting rooms end to end on a real server: create, join, leave, host controls, chat, media
state, errors, host hand-over, the grace period for dropped members, and replaced sessions."""
from __future__ import annotations

import queue
from concurrent.futures import Future, ThreadPoolExecutor

import pytest

from common import frame as wire
from common.errors import ApiError, ErrorCode
from common.media import Codec, MediaKind
from common.packets import PacketType
from tests.helpers import TestClient, cut_connection

@pytest.fixture
def people(client_factory):
    """make(n, running_server) -> n logged-in clients of that server, named A, B, C..."""
    def make(n: int, srv) -> list[TestClient]:
        port = srv.port
        out = []
        for i in range(n):
            client = client_factory(port)
            client.register_and_login(chr(ord("A") + i))
            out.append(client)
        return out
    return make


def uid(client: TestClient) -> int:
    return client.kernel.user["id"]


def wait_members(client: TestClient, predicate, timeout: float = 5.0) -> dict:
    """The first room_members event whose room satisfies predicate(room)."""
    return client.events.wait_for("room_members", lambda e: predicate(e["room"]), timeout)["room"]


def member_ids(room: dict) -> list[int]:
    return [m["user_id"] for m in room["members"]]


def join_in_background(client: TestClient, number: str, password: str = "") -> Future:
    """``join`` blocks while waiting to be let in: run it on its own thread."""
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(client.kernel.rooms.join, number, password, 10.0)
    pool.shutdown(wait=False)
    return future


def error_of(call, *args) -> ErrorCode:
    with pytest.raises(ApiError) as err:
        call(*args)
    return err.value.code


def test_create_join_leave_and_member_lists(server, people):
    a, b, c = people(3, server)
    room = a.kernel.rooms.create("Weekly sync")
    number = room["number"]
    assert len(number) == 9 and number.isdigit() and number[0] != "0"
    assert room["title"] == "Weekly sync" and room["host_id"] == uid(a) and not room["locked"]
    assert member_ids(room) == [uid(a)] and room["members"][0]["host"]
    joined = b.kernel.rooms.join(number)
    assert member_ids(joined) == [uid(a), uid(b)]
    c.kernel.rooms.join(number)
    everyone = [uid(a), uid(b), uid(c)]
    for person in (a, b, c):
        seen = wait_members(person, lambda r: member_ids(r) == everyone)
        assert [m["nickname"] for m in seen["members"]] == ["A", "B", "C"]
        assert all(not m["camera"] and not m["microphone"] and not m["screen"] for m in seen["members"])
    mark = a.events.mark()
    b.kernel.rooms.leave()
    assert b.kernel.rooms.room is None
    room_a = a.events.wait_for("room_members", lambda e: member_ids(e["room"]) == [uid(a), uid(c)], start=mark)
    assert a.kernel.rooms.room == room_a["room"]
    assert error_of(b.kernel.request, PacketType.ROOM_LEAVE, {}) == ErrorCode.NOT_IN_ROOM
    b.kernel.rooms.leave()               # leaving twice is harmless for the client


def test_numbers_are_random_and_distinct(server, people):
    clients = people(4, server)
    numbers = [client.kernel.rooms.create()["number"] for client in clients]
    assert len(set(numbers)) == 4
    assert all(len(n) == 9 and n.isdigit() for n in numbers)
    assert sorted(numbers) != [str(int(numbers[0]) + i) for i in range(4)]


def test_media_state_reaches_everyone(server, people):
    a, b = people(2, server)
    number = a.kernel.rooms.create()["number"]
    b.kernel.rooms.join(number)
    b.kernel.rooms.set_media_state(camera=True, microphone=True, screen=False)
    room = wait_members(a, lambda r: any(m["user_id"] == uid(b) and m["camera"] and m["microphone"]
                                         for m in r["members"]))
    me = next(m for m in room["members"] if m["user_id"] == uid(b))
    assert not me["screen"]
    assert b.kernel.rooms.room["members"][1]["camera"]


def test_join_errors(server_factory, people):
    srv = server_factory(room_max_members=3)
    a, b, c, d, e = people(5, srv)
    secret = a.kernel.rooms.create("private", password="open sesame")["number"]
    assert error_of(b.kernel.rooms.join, "123") == ErrorCode.NO_SUCH_ROOM
    missing = "1" + secret[1:] if secret[0] != "1" else "2" + secret[1:]
    assert error_of(b.kernel.rooms.join, missing) == ErrorCode.NO_SUCH_ROOM
    assert error_of(b.kernel.rooms.join, secret) == ErrorCode.WRONG_ROOM_PASSWORD
    assert error_of(b.kernel.rooms.join, secret, "open sesame?") == ErrorCode.WRONG_ROOM_PASSWORD
    b.kernel.rooms.join(secret, "open sesame")
    assert error_of(b.kernel.rooms.join, secret, "open sesame") == ErrorCode.ALREADY_IN_ROOM
    assert error_of(b.kernel.rooms.create) == ErrorCode.ALREADY_IN_ROOM
    c.kernel.rooms.join(secret, "open sesame")
    with pytest.raises(ApiError) as full:
        d.kernel.rooms.join(secret, "open sesame")
    assert full.value.code == ErrorCode.ROOM_FULL and full.value.details["limit"] == 3
    c.kernel.rooms.leave()
    assert error_of(b.kernel.rooms.lock, True) == ErrorCode.NOT_HOST
    a.kernel.rooms.lock(True)
    assert wait_members(b, lambda r: r["locked"])["locked"]
    waiting = join_in_background(d, secret, "open sesame")     # locked: the waiting room
    a.events.wait_for("room_waiting_list", lambda e: [w["user_id"] for w in e["waiting"]] == [uid(d)])
    a.kernel.rooms.admit(uid(d), False)
    assert error_of(waiting.result, 5) == ErrorCode.ROOM_LOCKED
    a.kernel.rooms.lock(False)
    d.kernel.rooms.join(secret, "open sesame")
    for call, args in ((e.kernel.rooms.chat, ("hi",)), (e.kernel.rooms.lock, (True,)),
                       (e.kernel.rooms.kick, (uid(a),)), (e.kernel.rooms.mute, ()),
                       (e.kernel.rooms.set_media_state, (True, True, False))):
        assert error_of(call, *args) == ErrorCode.NOT_IN_ROOM


def test_host_hand_over_and_empty_room_closes(server, people):
    a, b, c = people(3, server)
    number = a.kernel.rooms.create()["number"]
    b.kernel.rooms.join(number)
    c.kernel.rooms.join(number)
    a.kernel.rooms.leave()
    for person in (b, c):
        room = wait_members(person, lambda r: member_ids(r) == [uid(b), uid(c)])
        assert room["host_id"] == uid(b)
        assert [m["host"] for m in room["members"]] == [True, False]
    b.kernel.rooms.lock(True)           # the new host has the host's powers
    b.kernel.rooms.leave()
    assert wait_members(c, lambda r: member_ids(r) == [uid(c)])["host_id"] == uid(c)
    c.kernel.rooms.leave()
    assert error_of(a.kernel.rooms.join, number) == ErrorCode.NO_SUCH_ROOM
    assert server.server.status()["rooms"] == 0


def test_kick_mute_and_chat(server, people):
    a, b, c = people(3, server)
    number = a.kernel.rooms.create()["number"]
    b.kernel.rooms.join(number)
    c.kernel.rooms.join(number)
    assert error_of(b.kernel.rooms.kick, uid(c)) == ErrorCode.NOT_HOST
    assert error_of(b.kernel.rooms.mute, uid(c)) == ErrorCode.NOT_HOST
    assert error_of(a.kernel.rooms.kick, 999_999) == ErrorCode.NO_SUCH_MEMBER
    assert error_of(a.kernel.rooms.mute, 999_999) == ErrorCode.NO_SUCH_MEMBER

    a.kernel.rooms.mute(uid(b))
    muted = b.events.wait_for("room_mute")
    assert muted["by"] == uid(a) and not muted["all"]
    mark_c = c.events.mark()
    a.kernel.rooms.mute()
    assert c.events.wait_for("room_mute", start=mark_c)["all"]
    b.events.wait_for("room_mute", lambda e: e["all"])
    assert a.events.count("room_mute") == 0

    sent = b.kernel.rooms.chat("hello, room ✓")
    for person in (a, b, c):
        said = person.events.wait_for("room_chat")
        assert (said["user_id"], said["nickname"], said["text"], said["time"]) == (uid(b), "B", "hello, room ✓", sent)
    assert error_of(b.kernel.rooms.chat, "x" * 9000) == ErrorCode.MESSAGE_TOO_LONG
    assert error_of(b.kernel.rooms.chat, "   ") == ErrorCode.BAD_REQUEST

    a.kernel.rooms.kick(uid(c))
    removed = c.events.wait_for("room_removed")
    assert removed["reason"] == "kicked"
    assert c.kernel.rooms.room is None
    wait_members(b, lambda r: member_ids(r) == [uid(a), uid(b)])
    assert error_of(c.kernel.rooms.chat, "still here?") == ErrorCode.NOT_IN_ROOM
    c.kernel.rooms.join(number)          # removed, not banned
    wait_members(a, lambda r: member_ids(r) == [uid(a), uid(b), uid(c)])


def test_dropped_member_gets_the_place_back_within_the_grace_period(server, people):
    a, b = people(2, server)
    number = a.kernel.rooms.create()["number"]
    b.kernel.rooms.join(number)
    wait_members(a, lambda r: member_ids(r) == [uid(a), uid(b)])
    mark = a.events.mark()
    cut_connection(b.kernel, "test: network blip")
    away = a.events.wait_for("room_members", lambda e: any(m["away"] for m in e["room"]["members"]), start=mark)
    assert member_ids(away["room"]) == [uid(a), uid(b)]
    back = a.events.wait_for("room_members", lambda e: not any(m["away"] for m in e["room"]["members"])
                             and member_ids(e["room"]) == [uid(a), uid(b)], start=mark, timeout=10)
    assert back["room"]["number"] == number
    b.events.wait_for("reconnected", timeout=10)
    assert b.kernel.rooms.room["number"] == number
    b.kernel.rooms.chat("I am back")      # the server treats b as a member again
    a.events.wait_for("room_chat", lambda e: e["text"] == "I am back")


def test_member_gone_past_the_grace_period_is_removed_and_the_host_passes(server_factory, people):
    srv = server_factory(room_grace=0.5)
    a, b, c = people(3, srv)
    number = a.kernel.rooms.create()["number"]
    b.kernel.rooms.join(number)
    c.kernel.rooms.join(number)
    wait_members(c, lambda r: len(r["members"]) == 3)
    a.kernel.close()                     # the host vanishes without leaving
    room = wait_members(c, lambda r: member_ids(r) == [uid(b), uid(c)], timeout=5)
    assert room["host_id"] == uid(b)
    assert srv.server.status()["room_members"] == 2


def come_back_later(srv, retry_after: float) -> None:
    """Cut every connection with GOING_AWAY, so the clients reconnect after retry_after."""
    going_away = wire.encode_json(PacketType.GOING_AWAY, {"reason": "test", "reconnect": True,
                                                          "retry_after": retry_after})

    def cut() -> None:
        for conn in list(srv.server.connections.values()):
            conn.send(going_away)
            conn.close_after_flush("test: come back later")
    srv.server.reactor.call_soon_threadsafe(cut)


def test_rejoin_after_the_room_closed_reports_it(server_factory, people):
    srv = server_factory(room_grace=0.2)
    a, = people(1, srv)
    a.kernel.rooms.create()
    come_back_later(srv, retry_after=1.0)     # reconnects only after the grace period
    closed = a.events.wait_for("room_closed", timeout=10)
    assert "ended" in closed["message"]
    assert a.kernel.rooms.room is None


def test_login_elsewhere_takes_the_place_over(people, client_factory, server):
    a, b = people(2, server)
    number = a.kernel.rooms.create()["number"]
    b.kernel.rooms.join(number)
    wait_members(a, lambda r: len(r["members"]) == 2)
    mark = a.events.mark()
    other_device = client_factory(server.port)
    other_device.kernel.login(b.phone, b.password)
    b.events.wait_for("kicked")
    adopted = other_device.events.wait_for("room_members")["room"]
    assert adopted["number"] == number and member_ids(adopted) == [uid(a), uid(b)]
    assert other_device.kernel.rooms.room["number"] == number
    other_device.kernel.rooms.chat("new device")
    a.events.wait_for("room_chat", lambda e: e["text"] == "new device" and e["user_id"] == uid(b))
    # the place was handed over, never shown as away
    assert not [e for e in a.events.events[mark:]
                if e.kind == "room_members" and any(m["away"] for m in e["room"]["members"])]


def test_bad_fields_are_refused(server, people):
    a, = people(1, server)
    kernel = a.kernel
    assert error_of(kernel.request, PacketType.ROOM_CREATE, {"title": "x" * 65}) == ErrorCode.BAD_REQUEST
    assert error_of(kernel.request, PacketType.ROOM_CREATE, {"title": "bad\x07title"}) == ErrorCode.BAD_REQUEST
    assert error_of(kernel.request, PacketType.ROOM_JOIN, {"number": 123456789}) == ErrorCode.BAD_REQUEST
    assert error_of(kernel.request, PacketType.ROOM_LOCK, {"locked": "yes"}) == ErrorCode.BAD_REQUEST


def test_a_removed_media_listener_hears_nothing_more(server, people):
    """A closed meeting window's receiver stops hearing the room; the others still hear it."""
    a, b = people(2, server)
    number = a.kernel.rooms.create("t")["number"]
    b.kernel.rooms.join(number)
    wait_members(a, lambda r: len(r["members"]) == 2)
    kept: queue.Queue = queue.Queue()
    removed: list = []
    b.kernel.rooms.add_media_listener(lambda header, payload: kept.put(header.seq))
    b.kernel.rooms.add_media_listener(removed.append)
    b.kernel.rooms.remove_media_listener(removed.append)
    b.kernel.rooms.remove_media_listener(removed.append)   # removing twice is harmless
    assert a.kernel.rooms.publish(MediaKind.MICROPHONE, Codec.OPUS, b"x" * 40, False, 1)
    assert kept.get(timeout=5) == 0
    assert removed == []


def test_no_media_before_the_session_resumes_and_video_restarts_at_a_keyframe(server, people):
    a, b = people(2, server)
    number = a.kernel.rooms.create("t")["number"]
    b.kernel.rooms.join(number)
    requests: queue.Queue = queue.Queue()
    a.kernel.rooms.add_keyframe_listener(requests.put)
    a.kernel.state = "reconnecting"      # as between a dropped link and the resume reply
    assert not a.kernel.rooms.publish(MediaKind.CAMERA, Codec.H264, b"v" * 100_000, True, 1)
    assert not a.kernel.rooms.publish(MediaKind.MICROPHONE, Codec.OPUS, b"a" * 40, False, 1)
    a.kernel.state = "online"
    mark = a.events.mark()
    cut_connection(a.kernel, "test: link cut")
    a.events.wait_for("reconnected", start=mark, timeout=15)
    assert requests.get(timeout=10) == MediaKind.CAMERA   # our publishers restart with a keyframe
    assert a.kernel.rooms.room["number"] == number
