"""Meeting rooms across real server processes sharing MySQL and Redis: the waiting room of a
locked meeting whatever node the host and the people knocking are on, and what survives a
restart of a node or of Redis."""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from common.errors import ApiError, ErrorCode
from server.admin import query_status
from tests.test_cluster import (HEARTBEAT_TIMEOUT, cluster, members_of, nodes_on_own_redis, own_redis,  # noqa: F401
                                user_on)
from tests.helpers import cut_connection, wait_until
from tests.social import uid
from tests.test_rooms import error_of, join_in_background, member_ids
from tests.server_process import ServerProcess


def waiting_count(node: ServerProcess) -> int:
    """How many of the node's users wait in a waiting room (its admin status)."""
    return query_status(node.data_dir / "admin.sock")["room_waiting"]


def waiting_ids(host, predicate=lambda ids: True, start: int = 0, timeout: float = 10.0) -> list[int]:
    event = host.events.wait_for("room_waiting_list", lambda e: predicate([w["user_id"] for w in e["waiting"]]),
                                 timeout, start=start)
    return [w["user_id"] for w in event["waiting"]]


def test_knocking_admit_refuse_and_leaving_the_queue_across_nodes(cluster, client_factory):
    n1, n2 = cluster("n1"), cluster("n2")
    host = user_on(client_factory, n1, "Host")
    b, c, d = (user_on(client_factory, n2, name) for name in ("B", "C", "D"))
    same_node = user_on(client_factory, n1, "E")
    number = host.kernel.rooms.create("Board", password="pw")["number"]
    host.kernel.rooms.lock(True)
    assert error_of(b.kernel.rooms.join, number, "nope") == ErrorCode.WRONG_ROOM_PASSWORD   # never queued

    b_join = join_in_background(b, number, "pw")
    b.events.wait_for("room_waiting", lambda e: e["number"] == number and e["title"] == "Board")
    e_join = join_in_background(same_node, number, "pw")
    assert waiting_ids(host, lambda ids: len(ids) == 2) == [uid(b), uid(same_node)]
    assert not b_join.done() and b.kernel.rooms.room is None
    assert error_of(c.kernel.rooms.admit, uid(b)) == ErrorCode.NOT_IN_ROOM
    assert error_of(host.kernel.rooms.admit, uid(d)) == ErrorCode.NOT_WAITING

    mark = host.events.mark()
    host.kernel.rooms.admit(uid(b))                          # the host on n1 lets in a user of n2
    room = b_join.result(10)
    assert member_ids(room) == [uid(host), uid(b)] and b.kernel.rooms.room["number"] == number
    assert waiting_ids(host, start=mark) == [uid(same_node)]
    host.events.wait_for("room_members", lambda e: set(members_of(e)) == {uid(host), uid(b)}, start=mark)
    b.kernel.rooms.chat("let in from the other node")
    host.events.wait_for("room_chat", lambda e: e["text"] == "let in from the other node")

    host.kernel.rooms.admit(uid(same_node), False)
    assert error_of(e_join.result, 10) == ErrorCode.ROOM_LOCKED
    assert "did not let you in" in same_node.events.wait_for("room_refused")["message"]

    mark = host.events.mark()                                # giving up: the host sees the list shrink
    d_join = join_in_background(d, number, "pw")
    waiting_ids(host, lambda ids: ids == [uid(d)], start=mark)
    d.events.wait_for("room_waiting")
    d.kernel.rooms.leave()
    assert error_of(d_join.result, 10) == ErrorCode.NOT_WAITING
    waiting_ids(host, lambda ids: ids == [], start=mark)

    mark = b.events.mark()                                   # a new host on the other node sees the list
    c_join = join_in_background(c, number, "pw")
    waiting_ids(host, lambda ids: ids == [uid(c)])
    host.kernel.rooms.hand_over(uid(b))
    assert waiting_ids(b, start=mark) == [uid(c)]
    mark = host.events.mark()
    b.kernel.rooms.lock(False)                               # unlocking lets everyone waiting in
    assert member_ids(c_join.result(10)) == [uid(host), uid(b), uid(c)]
    host.events.wait_for("room_members", lambda e: not e["room"]["locked"] and len(e["room"]["members"]) == 3,
                         start=mark)
    assert waiting_count(n1) == 0 and waiting_count(n2) == 0


def test_waiting_users_who_drop_or_whose_meeting_ends_leave_the_queue(cluster, client_factory):
    n1, n2 = cluster("n1"), cluster("n2")
    host, b, c = user_on(client_factory, n2, "Host"), user_on(client_factory, n1, "B"), user_on(client_factory, n1, "C")
    number = host.kernel.rooms.create()["number"]
    host.kernel.rooms.lock(True)
    b_join, _ = join_in_background(b, number), join_in_background(c, number)
    waiting_ids(host, lambda ids: sorted(ids) == sorted([uid(b), uid(c)]))
    c.events.wait_for("room_waiting")
    assert waiting_count(n1) == 2
    mark = host.events.mark()
    c.kernel.reconnect_enabled = False
    cut_connection(c.kernel, "test: gone")                      # a waiting user of n1 drops
    waiting_ids(host, lambda ids: ids == [uid(b)], start=mark)
    host.kernel.rooms.leave()                                # the last member leaves: the meeting ends
    assert error_of(b_join.result, 10) == ErrorCode.ROOM_LOCKED
    assert "ended" in b.events.wait_for("room_refused")["message"]
    assert waiting_count(n1) == 0


def test_a_waiting_user_resumed_on_another_node_is_queued_again(cluster, client_factory):
    n1, n2 = cluster("n1"), cluster("n2")
    host, b = user_on(client_factory, n1, "Host"), user_on(client_factory, n2, "B")
    number = host.kernel.rooms.create()["number"]
    host.kernel.rooms.lock(True)
    b_join = join_in_background(b, number)
    b.events.wait_for("room_waiting")
    mark, b_mark = host.events.mark(), b.events.mark()
    b.kernel.servers[:] = [("127.0.0.1", n1.port)]           # the blip sends B to the host's node
    cut_connection(b.kernel, "test: network blip")
    b.events.wait_for("reconnected", start=b_mark, timeout=10)
    b.events.wait_for("room_waiting", start=b_mark)          # asked again after the resume
    waiting_ids(host, lambda ids: ids == [uid(b)], start=mark)
    host.kernel.rooms.admit(uid(b))
    assert member_ids(b_join.result(10)) == [uid(host), uid(b)]


def test_an_answer_right_after_a_knock_from_another_node_is_not_lost(cluster, client_factory):
    """The host answers as soon as the waiting list shows the knock: the answer crosses back
    to the knocker's node right behind the join's reply. In a loop: it is a race."""
    n1, n2 = cluster("n1"), cluster("n2")
    host, b = user_on(client_factory, n1, "Host"), user_on(client_factory, n2, "B")
    number = host.kernel.rooms.create()["number"]
    host.kernel.rooms.lock(True)
    answer = {"admit": False}

    def answer_at_once(event) -> None:                       # on the host's network thread
        if event.kind == "room_waiting_list" and event["waiting"]:
            from common.packets import PacketType
            host.kernel.send(PacketType.ROOM_ADMIT, {"user_id": event["waiting"][0]["user_id"], **answer})
    host.kernel.add_listener(answer_at_once)
    for _ in range(10):
        assert error_of(b.kernel.rooms.join, number, "", 10.0) == ErrorCode.ROOM_LOCKED
        assert b.kernel.rooms.waiting is None
    answer["admit"] = True
    assert member_ids(b.kernel.rooms.join(number, "", 10.0)) == [uid(host), uid(b)]


def test_a_knock_while_the_host_is_on_a_node_that_dies(cluster, client_factory):
    """The host's node is killed while somebody waits: the host passes to the member left on
    the other node, who sees the waiting room and answers."""
    n1, n2 = cluster("n1", MEETING_ROOM_GRACE="30"), cluster("n2", MEETING_ROOM_GRACE="30")
    host, member, knocker = (user_on(client_factory, node, name) for node, name in
                             ((n2, "Host"), (n1, "Member"), (n1, "Knocker")))
    number = host.kernel.rooms.create()["number"]
    member.kernel.rooms.join(number)
    host.kernel.rooms.lock(True)
    knock = join_in_background(knocker, number)
    waiting_ids(host, lambda ids: ids == [uid(knocker)])
    mark = member.events.mark()
    host.kernel.reconnect_enabled = False
    n2.kill()
    assert waiting_ids(member, start=mark, timeout=HEARTBEAT_TIMEOUT + 10) == [uid(knocker)]
    member.kernel.rooms.admit(uid(knocker))
    assert set(member_ids(knock.result(10))) == {uid(host), uid(member), uid(knocker)}


def test_rooms_with_lock_host_and_waiting_room_survive_a_redis_restart(own_redis, nodes_on_own_redis,  # noqa: F811
                                                                        client_factory):
    n1, n2 = nodes_on_own_redis
    host, guest, knocker = (user_on(client_factory, node, name) for node, name in
                            ((n1, "Host"), (n2, "Guest"), (n2, "Knocker")))
    number = host.kernel.rooms.create("kept", password="pw")["number"]
    guest.kernel.rooms.join(number, "pw")
    host.kernel.rooms.hand_over(uid(guest))
    guest.kernel.rooms.lock(True)
    knock = join_in_background(knocker, number, "pw")
    waiting_ids(guest, lambda ids: ids == [uid(knocker)])

    own_redis.stop()
    own_redis.start()                                    # empty: every key is gone
    n2.wait_for_log("registered again with Redis: 2 of 2 sessions kept", timeout=15)
    put_back = f"room {number} registered again with Redis .2 members, 1 waiting."
    wait_until(lambda: re.search(put_back, n1.log + n2.log), 15, "the room put back by a node")
    guest.kernel.rooms.admit(uid(knocker))               # the waiting room came back
    room = knock.result(15)
    assert member_ids(room) == [uid(host), uid(guest), uid(knocker)]
    assert room["host_id"] == uid(guest) and room["locked"] and room["has_password"]
    late = user_on(client_factory, n1, "Late")
    assert error_of(late.kernel.rooms.join, number, "wrong") == ErrorCode.WRONG_ROOM_PASSWORD


def test_a_grace_runs_out_even_when_the_node_where_the_member_dropped_dies(cluster, client_factory):
    n1, n2 = cluster("n1", MEETING_ROOM_GRACE="3"), cluster("n2", MEETING_ROOM_GRACE="3")
    host, guest = user_on(client_factory, n2, "Host"), user_on(client_factory, n1, "Guest")
    number = host.kernel.rooms.create()["number"]
    guest.kernel.rooms.join(number)
    mark = host.events.mark()
    guest.kernel.reconnect_enabled = False
    cut_connection(guest.kernel, "test: gone")                  # away, its grace counted on n1 ...
    host.events.wait_for("room_members", lambda e: members_of(e).get(uid(guest), {}).get("away") is True,
                         start=mark)
    n1.kill()                                                # ... which dies before the grace ends
    gone = host.events.wait_for("room_members", lambda e: uid(guest) not in members_of(e), start=mark, timeout=15)
    assert set(members_of(gone)) == {uid(host)}
    late = user_on(client_factory, n2, "Late")
    late.kernel.rooms.join(number)                           # the room goes on with the host


def test_joins_racing_on_two_nodes_for_the_last_places_never_overfill_the_room(cluster, client_factory):
    n1, n2 = cluster("n1", MEETING_ROOM_MAX_MEMBERS="3"), cluster("n2", MEETING_ROOM_MAX_MEMBERS="3")
    host = user_on(client_factory, n1, "Host")
    racers = [user_on(client_factory, node, f"R{i}") for i, node in enumerate((n1, n2, n1, n2))]
    for _ in range(4):
        number = host.kernel.rooms.create()["number"]
        mark, marks = host.events.mark(), {c: c.events.mark() for c in racers}
        with ThreadPoolExecutor(len(racers)) as pool:
            outcomes = list(pool.map(lambda c: _join_or_error(c, number), racers))
        inside = [c for c, outcome in zip(racers, outcomes) if outcome is None]
        assert sorted(o for o in outcomes if o is not None) == [ErrorCode.ROOM_FULL] * 2
        assert len(inside) == 2
        final = {uid(host), *(uid(c) for c in inside)}
        host.events.wait_for("room_members", lambda e: set(members_of(e)) == final, start=mark)
        for client in inside:                                 # everyone ends up seeing the same room
            client.events.wait_for("room_members", lambda e: e["room"]["number"] == number
                                   and set(members_of(e)) == final, start=marks[client])
            client.kernel.rooms.leave()
        host.kernel.rooms.leave()


def _join_or_error(client, number: str):
    try:
        client.kernel.rooms.join(number, "", 10.0)
    except ApiError as exc:
        return exc.code
    return None
