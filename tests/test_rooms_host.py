"""The host's new powers on a real server, SQLite and MySQL: end the meeting for everyone, hand
the host role over, and the waiting room of a locked meeting (admit, refuse, cancel, unlock)."""
from __future__ import annotations


import pytest

from common.errors import ApiError, ErrorCode
from common.packets import PacketType
from tests.helpers import cut_connection, wait_until
from tests.test_rooms import error_of, join_in_background, member_ids, people, uid, wait_members  # noqa: F401


@pytest.fixture
def srv(server_factory, storage):
    return server_factory(storage)


def wait_stored(srv, predicate, timeout: float = 10.0) -> None:
    """Wait until ``predicate(rooms)`` holds for the rooms in the database (the keeper writes on
    its own thread, so this polls)."""
    wait_until(lambda: predicate(srv.server.storage.stored_rooms()), timeout, "the stored rooms matching")


def waiting_ids(host, predicate=lambda ids: True, start: int = 0) -> list[int]:
    event = host.events.wait_for("room_waiting_list",
                                 lambda e: predicate([w["user_id"] for w in e["waiting"]]), start=start)
    return [w["user_id"] for w in event["waiting"]]


def test_the_host_ends_the_meeting_for_everyone(srv, people):
    a, b, c = people(3, srv)
    number = a.kernel.rooms.create("Done")["number"]
    b.kernel.rooms.join(number)
    c.kernel.rooms.join(number)
    wait_members(a, lambda r: len(r["members"]) == 3)
    assert error_of(b.kernel.rooms.end) == ErrorCode.NOT_HOST
    a.kernel.rooms.end()
    for person in (b, c):
        assert "host ended" in person.events.wait_for("room_closed")["message"]
        assert person.kernel.rooms.room is None
    assert a.kernel.rooms.room is None
    assert error_of(b.kernel.rooms.join, number) == ErrorCode.NO_SUCH_ROOM
    assert srv.server.status()["rooms"] == 0 and srv.server.status()["room_members"] == 0
    b.kernel.rooms.create("next one")           # nobody is left stuck in the old room
    wait_stored(srv, lambda rooms: [r.title for r in rooms] == ["next one"])


def test_the_host_hands_the_role_over(srv, people):
    a, b, c = people(3, srv)
    number = a.kernel.rooms.create()["number"]
    b.kernel.rooms.join(number)
    c.kernel.rooms.join(number)
    wait_members(a, lambda r: len(r["members"]) == 3)
    assert error_of(b.kernel.rooms.hand_over, uid(c)) == ErrorCode.NOT_HOST
    assert error_of(a.kernel.rooms.hand_over, uid(a)) == ErrorCode.BAD_REQUEST
    assert error_of(a.kernel.rooms.hand_over, 999999) == ErrorCode.NO_SUCH_MEMBER
    a.kernel.rooms.hand_over(uid(b))
    for person in (a, b, c):
        room = wait_members(person, lambda r: r["host_id"] == uid(b))
        assert [m["host"] for m in room["members"]] == [False, True, False]
    assert error_of(a.kernel.rooms.lock, True) == ErrorCode.NOT_HOST
    b.kernel.rooms.lock(True)
    b.kernel.rooms.mute(uid(a))
    a.events.wait_for("room_mute")
    # an away member cannot be made host
    c.kernel.reconnect_enabled = False
    cut_connection(c.kernel, "test: gone")
    wait_members(b, lambda r: any(m["away"] for m in r["members"]))
    assert error_of(b.kernel.rooms.hand_over, uid(c)) == ErrorCode.MEMBER_AWAY
    wait_stored(srv, lambda rooms: [r.host_id for r in rooms] == [uid(b)])


def test_a_locked_meeting_has_a_waiting_room(srv, people):
    a, b, c, d = people(4, srv)
    number = a.kernel.rooms.create("Board", password="pw")["number"]
    a.kernel.rooms.lock(True)
    # a wrong password is still refused at once, never queued
    assert error_of(b.kernel.rooms.join, number, "nope") == ErrorCode.WRONG_ROOM_PASSWORD
    b_join = join_in_background(b, number, "pw")
    b.events.wait_for("room_waiting", lambda e: e["number"] == number and e["title"] == "Board")
    c_join = join_in_background(c, number, "pw")
    assert waiting_ids(a, lambda ids: len(ids) == 2) == [uid(b), uid(c)]
    assert b.kernel.rooms.room is None and not b_join.done()
    # only the host answers, only for people who wait
    assert error_of(b.kernel.rooms.admit, uid(c)) == ErrorCode.NOT_IN_ROOM
    assert error_of(a.kernel.rooms.admit, uid(d)) == ErrorCode.NOT_WAITING
    mark = a.events.mark()
    a.kernel.rooms.admit(uid(b))
    room = b_join.result(5)
    assert member_ids(room) == [uid(a), uid(b)] and b.kernel.rooms.room["number"] == number
    assert waiting_ids(a, start=mark) == [uid(c)]
    a.kernel.rooms.admit(uid(c), False)
    assert error_of(c_join.result, 5) == ErrorCode.ROOM_LOCKED
    assert "did not let you in" in c.events.wait_for("room_refused")["message"]
    assert c.kernel.rooms.room is None and c.kernel.rooms.waiting is None

    # waiting can be given up; the host sees the list shrink
    mark = a.events.mark()
    d_join = join_in_background(d, number, "pw")
    waiting_ids(a, lambda ids: ids == [uid(d)], start=mark)
    d.events.wait_for("room_waiting")
    d.kernel.rooms.leave()
    assert error_of(d_join.result, 5) == ErrorCode.NOT_WAITING
    waiting_ids(a, lambda ids: ids == [], start=mark)

    # a new host sees the waiting room; unlocking lets everyone waiting in
    mark = b.events.mark()
    c_join = join_in_background(c, number, "pw")
    waiting_ids(a, lambda ids: ids == [uid(c)])
    a.kernel.rooms.hand_over(uid(b))
    assert waiting_ids(b, start=mark) == [uid(c)]
    b.kernel.rooms.lock(False)
    assert member_ids(c_join.result(5)) == [uid(a), uid(b), uid(c)]


def test_waiting_people_hear_when_the_meeting_ends_or_they_drop(srv, people):
    a, b, c = people(3, srv)
    number = a.kernel.rooms.create()["number"]
    a.kernel.rooms.lock(True)
    b_join = join_in_background(b, number)
    c_join = join_in_background(c, number)
    waiting_ids(a, lambda ids: sorted(ids) == sorted([uid(b), uid(c)]))
    c.events.wait_for("room_waiting")
    mark = a.events.mark()
    c.kernel.reconnect_enabled = False
    cut_connection(c.kernel, "test: gone")            # a waiting user who drops leaves the queue
    waiting_ids(a, lambda ids: ids == [uid(b)], start=mark)
    with pytest.raises(Exception):
        c_join.result(5)
    a.kernel.rooms.leave()                             # the last member leaves: the meeting ends
    assert error_of(b_join.result, 5) == ErrorCode.ROOM_LOCKED
    assert "ended" in b.events.wait_for("room_refused")["message"]
    assert srv.server.status()["room_waiting"] == 0


def test_a_waiting_user_resumed_after_a_blip_is_queued_again(srv, people):
    a, b = people(2, srv)
    number = a.kernel.rooms.create()["number"]
    a.kernel.rooms.lock(True)
    b_join = join_in_background(b, number)
    b.events.wait_for("room_waiting")
    mark, b_mark = a.events.mark(), b.events.mark()
    cut_connection(b.kernel, "test: network blip")
    b.events.wait_for("reconnected", start=b_mark)
    b.events.wait_for("room_waiting", start=b_mark)           # asked again after the resume
    waiting_ids(a, lambda ids: ids == [uid(b)], start=mark)
    a.kernel.rooms.admit(uid(b))
    assert member_ids(b_join.result(5)) == [uid(a), uid(b)]


def test_new_host_packets_refuse_bad_fields(srv, people):
    a, = people(1, srv)
    a.kernel.rooms.create()
    for packet, body in ((PacketType.ROOM_HOST, {"user_id": "x"}), (PacketType.ROOM_ADMIT, {"user_id": 1}),
                         (PacketType.ROOM_ADMIT, {"user_id": 1, "admit": "yes"})):
        assert error_of(a.kernel.request, packet, body) == ErrorCode.BAD_REQUEST


def test_an_answer_right_after_the_join_reply_is_not_lost(srv, people):
    """The host's answer can reach the joiner right behind the join's own reply (before the
    joining thread has seen it): it must still end the wait. In a loop: it is a race."""
    a, b = people(2, srv)
    number = a.kernel.rooms.create()["number"]
    a.kernel.rooms.lock(True)
    answer = {"admit": False}

    def answer_at_once(event) -> None:         # on a's network thread, no waiting
        if event.kind == "room_waiting_list" and event["waiting"]:
            a.kernel.send(PacketType.ROOM_ADMIT, {"user_id": event["waiting"][0]["user_id"], **answer})
    a.kernel.add_listener(answer_at_once)
    for _ in range(15):
        with pytest.raises(ApiError) as refused:
            b.kernel.rooms.join(number, "", 5.0)
        assert refused.value.code == ErrorCode.ROOM_LOCKED and "did not let you in" in refused.value.message
        assert b.kernel.rooms.waiting is None
    answer["admit"] = True
    assert member_ids(b.kernel.rooms.join(number, "", 10.0)) == [uid(a), uid(b)]
    assert b.kernel.rooms.waiting is None and b.kernel.rooms.room["number"] == number
